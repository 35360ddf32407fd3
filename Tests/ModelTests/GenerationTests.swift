import Foundation
import XCTest
@testable import Model

final class GenerationTests: XCTestCase {
    struct GenerateJSON: Decodable { let prompt_ids: [Int32]; let greedy_ids: [Int32]; let max_new_tokens: Int }

    func testGreedyIdsAndStepLogitsMatchGolden() throws {
        let model = try MiniMindModel.load(directory: golden("generate_model"))
        let g = try JSONDecoder().decode(GenerateJSON.self, from: Data(contentsOf: URL(fileURLWithPath: golden("generate_model/generate.json"))))
        let ref = try SafeTensorsFile(path: golden("generate_model/generate_logits.safetensors")).floats("step_logits")
        let V = model.config.vocabSize
        let gen = TokenGenerator(model: model, promptIds: g.prompt_ids,
                                 options: SamplingOptions(maxNewTokens: g.max_new_tokens, temperature: 0, eosTokenId: nil))
        var ids: [Int32] = []
        var worst: Float = 0
        while let id = gen.next() {
            let step = ids.count
            let d = gen.lastLogits.withUnsafeBufferPointer { maxAbsDiff($0, Array(ref[(step * V)..<((step + 1) * V)])) }
            XCTAssertLessThan(d, 1e-4, "step \(step)")
            worst = max(worst, d)
            ids.append(id)
        }
        print("generate: \(ids.count) ids, step logits max |diff| = \(worst)")
        XCTAssertEqual(ids, g.greedy_ids)
    }

    /// Every id of `stopTokenIds` (config.json's eos_token_id list) ends generation like `eosTokenId`, without being
    /// yielded.
    func testStopTokenIdsEndGenerationLikeEos() throws {
        let model = try MiniMindModel.load(directory: golden("generate_model"))
        let g = try JSONDecoder().decode(GenerateJSON.self, from: Data(contentsOf: URL(fileURLWithPath: golden("generate_model/generate.json"))))
        let k = g.greedy_ids.indices.first { i in i > 0 && !g.greedy_ids[..<i].contains(g.greedy_ids[i]) }!
        var o = SamplingOptions(maxNewTokens: g.max_new_tokens, temperature: 0, eosTokenId: nil)
        o.stopTokenIds = [g.greedy_ids[k]]
        XCTAssertEqual(Array(TokenGenerator(model: model, promptIds: g.prompt_ids, options: o)), Array(g.greedy_ids[..<k]))
        var cfg = model.config
        cfg.eosTokenIds = [2, Int(g.greedy_ids[k]), 5]
        XCTAssertEqual(cfg.extraStopTokenIds(besides: 2), [g.greedy_ids[k], 5])
        o.stopTokenIds = [Int32(cfg.vocabSize)]
        XCTAssertThrowsError(try o.validate(vocabSize: cfg.vocabSize))
    }

    /// Cached decoding equals a full uncached forward over the same sequence.
    func testCachedEqualsUncached() throws {
        let model = try MiniMindModel.load(directory: golden("generate_model"))
        let seq: [Int32] = [1, 85, 736, 201, 59, 292, 389, 260, 3836, 1861, 501]
        let cache = KVCache(config: model.config, maxLength: 32)
        _ = model.forwardIncremental(tokens: Array(seq[0..<4]), cache: cache)
        var last: [Float] = []
        for t in seq[4...] { last = model.forwardIncremental(tokens: [t], cache: cache) }
        let full = seq.withUnsafeBufferPointer { model.forward(inputIds: $0, batchSize: 1, seqLen: seq.count) }
        let V = model.config.vocabSize
        let d = last.withUnsafeBufferPointer { maxAbsDiff($0, Array(full[((seq.count - 1) * V)...])) }
        XCTAssertLessThan(d, 1e-4)
    }

    /// Prefill in chunks of several tokens after earlier positions (p0 > 0, M > 1, chunks longer than the attention
    /// query block) gives the full forward's logits at each chunk's last position, with 1 and 2 worker threads:
    /// dense models (golden and random weights) and MoE, through the one inference step (`forwardNewTokens`).
    func testChunkedPrefillEqualsFullForward() throws {
        let random = MiniMindModel(config: ModelConfig(hiddenSize: 128, numHiddenLayers: 2, numAttentionHeads: 4,
                                                       numKeyValueHeads: 2, vocabSize: 512), seed: 3)
        let models = [("generate_model", try MiniMindModel.load(directory: golden("generate_model"))),
                      ("random hidden 128", random),
                      ("moe", try MiniMindModel.load(directory: golden("moe"), withGradients: false))]
        let saved = ComputeThreads.count
        defer { ComputeThreads.count = saved }
        for (name, m) in models {
            let V = m.config.vocabSize
            var rng = SplitMix64(seed: 11)
            let seq = (0..<83).map { _ in Int32(3 + rng.next() % UInt64(min(V, 6000) - 3)) }
            let full = Array(seq.withUnsafeBufferPointer { m.forward(inputIds: $0, batchSize: 1, seqLen: seq.count) })
            for threads in [1, 2] {
                ComputeThreads.count = threads
                let cache = KVCache(config: m.config, maxLength: seq.count)
                var end = 0, worst: Float = 0
                for chunk in [37, 1, 40, 5] {
                    let lg = m.forwardIncremental(tokens: Array(seq[end..<(end + chunk)]), cache: cache)
                    end += chunk
                    XCTAssertEqual(cache.length, end)
                    for j in 0..<V { worst = max(worst, abs(lg[j] - full[(end - 1) * V + j])) }
                }
                XCTAssertLessThan(worst, 1e-4, "\(name), \(threads) threads")
                print("chunked prefill vs full forward (\(name), \(threads) threads): max |diff| = \(worst)")
            }
        }
    }

    func testSamplingIsSeededAndFilters() {
        let logits: [Float] = [1, 5, 3, 4.9, -2, 0]
        var o = SamplingOptions(temperature: 1, topP: 1, topK: 2, seed: 1)
        var r1 = SplitMix64(seed: 5), r2 = SplitMix64(seed: 5)
        var seen = Set<Int32>()
        for _ in 0..<200 {
            let a = Sampler.sample(logits: logits, history: [], options: o, rng: &r1)
            XCTAssertEqual(a, Sampler.sample(logits: logits, history: [], options: o, rng: &r2))
            seen.insert(a)
        }
        XCTAssertEqual(seen, [1, 3])
        o.topK = 0; o.topP = 0.3     // the top token alone holds > 30 % of the mass
        var r = SplitMix64(seed: 9)
        for _ in 0..<50 { XCTAssertEqual(Sampler.sample(logits: logits, history: [], options: o, rng: &r), 1) }
        o.temperature = 0; o.repetitionPenalty = 2   // 5/2 < 4.9 → greedy picks id 3
        XCTAssertEqual(Sampler.sample(logits: logits, history: [1], options: o, rng: &r), 3)
    }
}
