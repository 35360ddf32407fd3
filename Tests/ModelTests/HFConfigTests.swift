import Foundation
import XCTest
@testable import Model

/// config.json of the Llama family: every field that changes the math is read or refused by name (issue 12).
final class HFConfigTests: XCTestCase {
    func parse(_ json: String) throws -> ModelConfig { try ModelConfig.parse(Data(json.utf8), source: "cfg.json") }
    let shape = #""model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100"#

    func testTransformers5LayoutAndEveryMathField() throws {
        let c = try parse("""
        {\(shape), "num_key_value_heads": 2, "head_dim": 24, "rms_norm_eps": 1e-05, "max_position_embeddings": 8192,
         "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}, "tie_word_embeddings": true,
         "attention_bias": false, "mlp_bias": false, "hidden_act": "silu", "bos_token_id": null, "eos_token_id": [2, 7],
         "pad_token_id": 3, "dtype": "float32", "transformers_version": "5.24.0", "_name_or_path": "x", "use_cache": true,
         "is_llama_config": true, "rope_interleaved": false, "transformers.js_config": {"kv_cache_dtype": {"q4f16": "float16"}}}
        """)
        XCTAssertEqual(c.ropeTheta, 1e5); XCTAssertEqual(c.ropeScaling, .none)
        XCTAssertEqual(c.headDim, 24); XCTAssertEqual(c.qDim, 96); XCTAssertEqual(c.kvDim, 48)
        XCTAssertEqual(c.rmsNormEps, 1e-5); XCTAssertEqual(c.maxPositionEmbeddings, 8192)
        XCTAssertNil(c.bosTokenId); XCTAssertEqual(c.eosTokenIds, [2, 7]); XCTAssertEqual(c.padTokenId, 3)
        XCTAssertNoThrow(try c.validate())
        // rope_theta at the top level (transformers 4.x), rope_scaling winning over rope_parameters as in transformers.
        XCTAssertEqual(try parse("{\(shape), \"rope_theta\": 5e5, \"tie_word_embeddings\": true}").ropeTheta, 5e5)
        let s = try parse("""
        {\(shape), "rope_theta": 1e4, "rope_scaling": {"type": "linear", "factor": 2.0}, "rope_parameters": {"rope_type": "default"}}
        """)
        XCTAssertEqual(s.ropeScaling, .linear(factor: 2))
        // llama3 / yarn: original_max_position_embeddings defaults to max_position_embeddings; a top-level one wins.
        let l3 = try parse("""
        {\(shape), "max_position_embeddings": 256, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8,
         "low_freq_factor": 1, "high_freq_factor": 4}}
        """)
        XCTAssertEqual(l3.ropeScaling, .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 256))
        let y = try parse("""
        {\(shape), "max_position_embeddings": 256, "original_max_position_embeddings": 64,
         "rope_scaling": {"rope_type": "yarn", "factor": 4, "original_max_position_embeddings": 32, "beta_fast": 16}}
        """)
        XCTAssertEqual(y.ropeScaling, .yarn(.init(factor: 4, originalMaxPositionEmbeddings: 64, betaFast: 16)))
    }

    func testDefaultsAreTheConfigClassDefaults() throws {
        // LlamaConfig: θ 1e4, eps 1e-6, untied, 2048 positions, bos 1 / eos 2.
        let l = try parse("{\(shape)}")
        XCTAssertEqual(l.ropeTheta, 1e4); XCTAssertEqual(l.rmsNormEps, 1e-6); XCTAssertFalse(l.tieWordEmbeddings)
        XCTAssertEqual(l.maxPositionEmbeddings, 2048); XCTAssertEqual(l.numKeyValueHeads, 4)
        XCTAssertEqual(l.bosTokenId, 1); XCTAssertEqual(l.eosTokenIds, [2])
        // MiniMind's own config (model_type minimind or none): MiniMind's defaults.
        let m = try parse(#"{"hidden_size": 64, "num_attention_heads": 4, "vocab_size": 100, "num_hidden_layers": 2}"#)
        XCTAssertEqual(m.ropeTheta, 1e6); XCTAssertEqual(m.rmsNormEps, 1e-5); XCTAssertTrue(m.tieWordEmbeddings)
        XCTAssertEqual(m, try parse(#"{"model_type": "minimind", "hidden_size": 64, "num_attention_heads": 4, "vocab_size": 100, "num_hidden_layers": 2, "dropout": 0.0, "flash_attn": true}"#))
    }

    func testRefusalsNameTheField() {
        let cases: [(String, String)] = [
            (#""hidden_act": "gelu""#, "hidden_act"),
            (#""attention_bias": true"#, "attention_bias"),
            (#""mlp_bias": true"#, "mlp_bias"),
            (#""attention_dropout": 0.1"#, "attention_dropout"),
            (#""rope_scaling": {"rope_type": "dynamic", "factor": 2.0}"#, "dynamic"),
            (#""rope_parameters": {"rope_type": "longrope", "short_factor": [1], "long_factor": [1]}"#, "longrope"),
            (#""rope_parameters": {"rope_type": "linear"}"#, "rope_parameters.factor"),
            (#""rope_parameters": {"rope_type": "default", "mrope_section": [1, 2]}"#, "rope_parameters.mrope_section"),
            (#""rope_parameters": {"rope_type": "linear", "factor": 0}"#, "factor"),
            (#""partial_rotary_factor": 0.5"#, "partial_rotary_factor"),
            (#""rope_interleaved": true"#, "rope_interleaved"),
            (#""quantization_config": {"quant_method": "gguf"}"#, "quantization_config"),
            (#""num_local_experts": 8"#, "num_local_experts"),
            (#""some_new_scale": 2.0"#, "some_new_scale"),
            (#""head_dim": 7"#, "head_dim"),
            (#""eos_token_id": [2, 100]"#, "eos_token_id"),
            (#""tie_word_embeddings": "yes""#, "tie_word_embeddings"),
        ]
        for (field, needle) in cases {
            XCTAssertThrowsError(try { let c = try parse("{\(shape), \(field)}"); try c.validate(source: "cfg.json") }()) { e in
                XCTAssertTrue("\(e)".contains(needle) && "\(e)".contains("cfg.json"), "\(needle): \(e)")
            }
        }
        XCTAssertThrowsError(try parse(#"{"model_type": "llama", "hidden_size": 64}"#)) { XCTAssertTrue("\($0)".contains("num_hidden_layers"), "\($0)") }
        XCTAssertThrowsError(try parse(#"{"model_type": "gpt2"}"#)) { XCTAssertTrue("\($0)".contains("model_type"), "\($0)") }
        XCTAssertThrowsError(try parse("{\(shape.replacingOccurrences(of: "llama", with: "mistral"))}")) { XCTAssertTrue("\($0)".contains("sliding_window"), "\($0)") }
        XCTAssertNoThrow(try parse("{\(shape.replacingOccurrences(of: "llama", with: "mistral")), \"sliding_window\": null}"))
    }

    func testWriteParseRoundTrip() throws {
        let dir = NSTemporaryDirectory() + "swiftmind-hfcfg-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for scaling in [RopeScaling.none, .linear(factor: 2), .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 32),
                        .yarn(.init(factor: 4, originalMaxPositionEmbeddings: 32, attentionFactor: nil, betaFast: 16, mscale: 1, mscaleAllDim: 0.5))] {
            var c = ModelConfig(hiddenSize: 64, numHiddenLayers: 1, numAttentionHeads: 4, numKeyValueHeads: 2, vocabSize: 100,
                                ropeTheta: 1e4, maxPositionEmbeddings: 128, headDim: 24, ropeScaling: scaling)
            c.eosTokenIds = [2, 5]; c.padTokenId = 0
            try c.write(directory: dir)
            XCTAssertEqual(try ModelConfig.load(directory: dir), c)
        }
    }

    /// Against transformers (skipped without torch): a random model with head_dim ≠ hidden/heads and each RoPE
    /// type, written by SwiftMind, loaded by transformers: the same inverse frequencies and attention scaling, logits
    /// within 1e-4 from `forward` and from the KV-cache path, and the config transformers saves back (its own
    /// layout) parses to the same config.
    func testMatchesTransformers() throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("python/llama_reference.py").path
        let dir = NSTemporaryDirectory() + "swiftmind-hfref-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let yarn = RopeScaling.yarn(.init(factor: 4, originalMaxPositionEmbeddings: 16))
        let yarnM = RopeScaling.yarn(.init(factor: 8, originalMaxPositionEmbeddings: 16, betaFast: 8, betaSlow: 2, mscale: 1, mscaleAllDim: 0.5, truncate: false))
        let cases: [(String, Int?, RopeScaling)] = [
            ("head_dim 24", 24, .none), ("linear", nil, .linear(factor: 2.5)),
            ("llama3", 24, .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 16)),
            ("yarn", nil, yarn), ("yarn mscale", 24, yarnM),
        ]
        let T = 40
        var models: [(name: String, dir: String, model: MiniMindModel, ids: [Int32])] = []
        for (k, (name, hd, scaling)) in cases.enumerated() {
            let c = ModelConfig(hiddenSize: 64, numHiddenLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 2, vocabSize: 100,
                                intermediateSize: 96, ropeTheta: 1e4, maxPositionEmbeddings: 64, headDim: hd, ropeScaling: scaling)
            let m = MiniMindModel(config: c, seed: 7)
            let d = dir + "/\(k)"
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
            try m.save(directory: d)
            var rng = SplitMix64(seed: 3)
            let ids = (0..<T).map { _ in Int32(rng.next() % 100) }
            try JSONSerialization.data(withJSONObject: ids.map(Int.init)).write(to: URL(fileURLWithPath: d + "/ids.json"))
            models.append((name, d, m, ids))
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", script] + models.map(\.dir)
        let pipe = Pipe(); p.standardOutput = pipe; p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { throw XCTSkip("python3 not available") }
        let printed = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        if String(decoding: printed.prefix(4), as: UTF8.self) == "SKIP" { throw XCTSkip("torch + transformers not installed: transformers cross-check skipped") }
        XCTAssertEqual(p.terminationStatus, 0)
        for (name, d, m, ids) in models {
            let c = m.config
            let ref = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: d + "/out.json"))) as! [String: Any]
            let (inv, scale) = c.ropeInverseFrequencies
            let wantInv = (ref["inv_freq"] as! [NSNumber]).map { $0.floatValue }
            XCTAssertEqual(inv.count, wantInv.count, name)
            for (a, b) in zip(inv, wantInv) { XCTAssertEqual(a, b, accuracy: 2e-6 * b, name) }
            XCTAssertEqual(scale, (ref["attention_scaling"] as! NSNumber).floatValue, accuracy: 1e-6, name)
            let want = (ref["logits"] as! [[NSNumber]]).flatMap { $0.map(\.floatValue) }
            let got = ids.withUnsafeBufferPointer { m.forward(inputIds: $0, batchSize: 1, seqLen: T) }
            XCTAssertLessThan(maxAbsDiff(UnsafeBufferPointer(got), want), 1e-4, name)
            let cache = KVCache(config: c, maxLength: T)
            _ = m.forwardIncremental(tokens: Array(ids.prefix(T - 8)), cache: cache)
            var last: [Float] = []
            for id in ids.suffix(8) { last = m.forwardIncremental(tokens: [id], cache: cache) }
            last.withUnsafeBufferPointer { XCTAssertLessThan(maxAbsDiff($0, Array(want.suffix(100))), 1e-4, name) }
            let resaved = try JSONSerialization.data(withJSONObject: ref["config"]!)
            XCTAssertEqual(try ModelConfig.parse(resaved, source: name), c, name)
        }
    }
}
