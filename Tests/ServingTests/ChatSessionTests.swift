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

    /// `--lora FILE` merges the adapter into the weights at load: the merged model's logits equal the PyTorch LoRA
    /// forward W x + B(A x) of Tests/Fixtures/golden/lora_step (lora_base + its rank-4 adapters), within 1e-4.
    func testLoraAdapterIsMergedAtLoad() throws {
        let g = try SafeTensorsFile(path: golden("lora_step.safetensors"))
        var w = SafeTensorsWriter()
        var bNorm: Float = 0
        for name in g.names where name.hasPrefix("lora.") {
            let v = try g.floats(name)
            if name.hasSuffix(".lora.B.weight") { bNorm += v.reduce(0) { $0 + $1 * $1 } }
            w.add(String(name.dropFirst("lora.".count)), shape: try g.entry(name).shape, floats: v)
        }
        XCTAssertGreaterThan(bNorm, 0, "the fixture's B matrices must be non-zero for this test to mean anything")
        let adapter = NSTemporaryDirectory() + "swiftmind-lora-\(getpid()).safetensors"
        defer { try? FileManager.default.removeItem(atPath: adapter) }
        try w.write(to: adapter)
        let engine = try GenerationEngine.load(model: golden("lora_base"), tokenizer: minimindTokenizer(), lora: adapter)
        let ids = try g.int32s("input_ids"), want = try g.floats("logits")
        let shape = try g.entry("input_ids").shape
        let logits = ids.withUnsafeBufferPointer { engine.model.forward(inputIds: $0, batchSize: shape[0], seqLen: shape[1]) }
        var maxDiff: Float = 0
        for i in 0..<want.count { maxDiff = max(maxDiff, abs(logits[i] - want[i])) }
        XCTAssertLessThanOrEqual(maxDiff, 1e-4, "merged-LoRA logits vs golden: max |diff| \(maxDiff)")
        // A file that holds no adapter is refused with a message naming it.
        XCTAssertThrowsError(try GenerationEngine.load(model: golden("lora_base"), tokenizer: minimindTokenizer(),
                                                       lora: golden("lora_base/model.safetensors"))) { e in
            XCTAssertTrue("\(e)".contains("lora.A.weight"), "\(e)")
        }
    }
}

final class BatchDecodeTests: XCTestCase {
    /// A batched decode step over sequences of different lengths gives each one's own incremental logits.
    func testBatchedStepEqualsPerSequenceDecoding() throws { try checkBatchedDecode(golden("generate_model")) }

    /// The same for MiniMind's MoE variant (the fused decode paths take the MoE MLP branch), and the incremental
    /// (KV-cache) logits of the last position equal the full training-mode forward's.
    func testMoEBatchedAndIncrementalDecoding() throws {
        try checkBatchedDecode(golden("moe"))
        let m = try MiniMindModel.load(huggingFaceDirectory: golden("moe"))
        XCTAssertTrue(m.config.useMoe)
        let ids: [Int32] = [1, 320, 275, 201, 5134, 270, 1055]
        let V = m.config.vocabSize, T = ids.count
        let full = Array(ids.withUnsafeBufferPointer { m.forward(inputIds: $0, batchSize: 1, seqLen: T) })
        let inc = m.forwardIncremental(tokens: ids, cache: KVCache(config: m.config, maxLength: 16))
        var worst: Float = 0
        for j in 0..<V { worst = max(worst, abs(inc[j] - full[(T - 1) * V + j])) }
        XCTAssertLessThan(worst, 1e-4, "MoE incremental vs full forward: max |diff| \(worst)")
    }

    func checkBatchedDecode(_ dir: String) throws {
        let m = try MiniMindModel.load(directory: dir)
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

final class SamplerTests: XCTestCase {
    /// The full-sort rule the nucleus fast path must reproduce (MiniMind's top-p over the sorted distribution).
    func referenceTopP(_ raw: [Float], temperature: Float, topP: Float, rng: inout SplitMix64) -> Int32 {
        let V = raw.count
        let invT = 1 / (temperature + 1e-9)
        let logits = raw.map { $0 * invT }
        let order = Array(0..<V).sorted { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        let mx = logits[order[0]]
        let probs = order.map { exp(Double(logits[$0] - mx)) }
        let sum = probs.reduce(0, +)
        var cum = 0.0, n = 0
        while n < V { if n > 0 && cum > Double(topP) { break }; cum += probs[n] / sum; n += 1 }
        let s = probs[0..<n].reduce(0, +)
        let u = Double(rng.next() >> 11) * (1.0 / 9_007_199_254_740_992.0) * s
        var acc = 0.0
        for i in 0..<n { acc += probs[i]; if u < acc { return Int32(order[i]) } }
        return Int32(order[n - 1])
    }

    func testNucleusFastPathEqualsFullSort() {
        var gen = SplitMix64(seed: 42)
        for trial in 0..<100 {
            let V = 6400
            let spread = Float(trial % 5 + 1) * 2
            var logits = (0..<V).map { _ in (gen.nextUniform() - 0.5) * spread }
            if trial % 7 == 0 { for j in stride(from: 0, to: V, by: 97) { logits[j] = 3 } }   // ties
            let topP: Float = [0.1, 0.5, 0.85, 0.95, 0.999][trial % 5]
            let temperature: Float = [0.3, 0.85, 1.0, 1.7][trial % 4]
            var r1 = SplitMix64(seed: UInt64(trial)), r2 = r1
            let fast = Sampler.sample(logits: logits, history: [], options: SamplingOptions(temperature: temperature, topP: topP), rng: &r1)
            let ref = referenceTopP(logits, temperature: temperature, topP: topP, rng: &r2)
            XCTAssertEqual(fast, ref, "trial \(trial)")
        }
    }
}
