import Foundation
import XCTest
@testable import Serving
import Model
import Tokenizers

final class ChatSessionTests: XCTestCase {
    func testFirstTurnIsGoldenGreedyAndHistoryWindow() throws {
        let engine = try GenerationEngine.load(model: golden("generate_model"), tokenizer: minimindTokenizer())
        let g = try loadGoldenGenerate()
        let session = ChatSession(engine: engine, historyTurns: 1)
        // The rendered first prompt is exactly the golden ChatML prompt.
        XCTAssertEqual(try engine.chatPromptIds(session.messages(for: goldenUserMessage)), g.prompt_ids)
        var streamed = ""
        let opts = SamplingOptions(maxNewTokens: 24, temperature: 0, eosTokenId: engine.tokenizer.eosTokenId)
        let r = try session.send(goldenUserMessage, options: opts) { streamed += $0 }
        XCTAssertEqual(r.text, try engine.tokenizer.decode(g.greedy_ids, skipSpecialTokens: true))
        XCTAssertEqual(streamed, r.text)
        XCTAssertEqual(r.completionTokens, 24)
        XCTAssertEqual(r.finishReason, .length)
        XCTAssertEqual(session.turns.count, 1)

        // History: the next prompt holds the previous pair (window 1), then only the latest one.
        let m2 = session.messages(for: "next")
        XCTAssertEqual(m2.map(\.role), ["user", "assistant", "user"])
        XCTAssertEqual(m2[0].content, goldenUserMessage)
        try session.send("next", options: SamplingOptions(maxNewTokens: 3, temperature: 0)) { _ in }
        let m3 = session.messages(for: "third")
        XCTAssertEqual(m3.map(\.content).first, "next")
        XCTAssertEqual(m3.count, 3)
        session.historyTurns = 0
        XCTAssertEqual(session.messages(for: "x").count, 1)
        session.historyTurns = 5
        session.reset()
        XCTAssertEqual(session.messages(for: "x").count, 1)
        XCTAssertTrue(session.turns.isEmpty)
    }

    func testContextWindowDropsOldestTurnsThenShortensReply() throws {
        let engine = try GenerationEngine.load(model: golden("generate_model"), tokenizer: minimindTokenizer(), contextLength: 64)
        let session = ChatSession(engine: engine, historyTurns: 4, systemPrompt: "S")
        let opts = SamplingOptions(maxNewTokens: 20, temperature: 0, eosTokenId: nil)
        for i in 0..<3 {
            let r = try session.send("question \(i)", options: opts) { _ in }
            XCTAssertLessThanOrEqual(r.promptTokens + r.completionTokens, 64)
            XCTAssertGreaterThan(r.completionTokens, 0)
        }
        XCTAssertEqual(session.turns.count, 3)
        // A message longer than the window is refused with a clear error.
        XCTAssertThrowsError(try session.send(String(repeating: "诗", count: 200), options: opts) { _ in }) { e in
            XCTAssertTrue("\(e)".contains("context window"), "\(e)")
        }
    }

    func testLoraIsRefusedClearly() {
        XCTAssertThrowsError(try GenerationEngine.load(model: golden("generate_model"), tokenizer: minimindTokenizer(), lora: "a.safetensors")) { e in
            XCTAssertTrue("\(e)".contains("not supported yet"))
        }
    }
}

final class BatchDecodeTests: XCTestCase {
    /// A batched decode step over sequences of different lengths gives each one's own incremental logits.
    func testBatchedStepEqualsPerSequenceDecoding() throws {
        let m = try MiniMindModel.load(directory: golden("generate_model"))
        let V = m.config.vocabSize
        let prompts: [[Int32]] = [[1, 85, 736], [1, 320, 275, 201, 5134, 270, 1055], [2988], [1, 85, 736, 201, 59]]
        let next: [Int32] = [501, 17, 3411, 6000]
        var single: [[Float]] = []
        for (p, t) in zip(prompts, next) {
            let c = KVCache(config: m.config, maxLength: 16)
            _ = m.forwardIncremental(tokens: p, cache: c)
            single.append(m.forwardIncremental(tokens: [t], cache: c))
        }
        let caches = prompts.map { p -> KVCache in
            let c = KVCache(config: m.config, maxLength: 16); _ = m.forwardIncremental(tokens: p, cache: c); return c
        }
        var out = [Float](repeating: 0, count: prompts.count * V)
        out.withUnsafeMutableBufferPointer { m.forwardDecodeBatch(tokens: next, caches: caches, logits: $0) }
        var worst: Float = 0
        for b in 0..<prompts.count { for j in 0..<V { worst = max(worst, abs(out[b * V + j] - single[b][j])) } }
        XCTAssertLessThan(worst, 1e-4)
        XCTAssertEqual(caches.map(\.length), prompts.map { $0.count + 1 })
        print("batched vs per-sequence decode: max |diff| = \(worst)")
    }
}
