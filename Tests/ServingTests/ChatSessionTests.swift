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
