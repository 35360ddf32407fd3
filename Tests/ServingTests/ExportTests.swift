import Foundation
import XCTest
@testable import Serving
@testable import Model
import Tokenizers
import TestSupport

/// Runs python3 with `args` (`Python.run`); nil when python3 is absent.
func runPython(_ args: [String]) throws -> (Int32, String, String)? {
    guard let r = try Python.run(args) else { return nil }
    return (r.status, r.text, r.stderr)
}

/// Whether python3 can import every module in `modules`.
func pythonHas(_ modules: [String]) -> Bool { Python.hasModules(modules) }

func scriptPath(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("python/" + name).path
}

final class ExportTests: XCTestCase {
    var tmp = ""
    override func setUpWithError() throws {
        tmp = NSTemporaryDirectory() + "swiftmind-export-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: tmp) }

    func tokenizer() throws -> (Tokenizer, String) {
        (try Tokenizer.load(minimindTokenizer()), minimindTokenizer() + "/tokenizer.json")
    }

    /// A Hugging Face directory with the golden generate model's weights and an untied lm_head = `headScale`·embed
    /// (+ `noise` so the head is not a multiple of the embedding when noise ≠ 0).
    func makeUntiedDirectory(headScale: Float, noise: Float) throws -> String {
        let src = try MiniMindModel.load(directory: golden("generate_model"))
        let dir = tmp + "/untied-src"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var w = SafeTensorsWriter()
        for p in src.parameters { w.add(p.name, shape: p.shape, floats: UnsafeBufferPointer(rebasing: src.params[p.range])) }
        let e = src.parameter(named: "model.embed_tokens.weight")!
        var rng = SplitMix64(seed: 3)
        let head = (0..<e.count).map { src.params[e.offset + $0] * headScale + (rng.nextUniform() - 0.5) * noise }
        w.add("lm_head.weight", shape: e.shape, floats: head)
        try w.write(to: dir + "/model.safetensors")
        var cfg = src.config.huggingFaceDictionary
        cfg["tie_word_embeddings"] = false
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: dir + "/config.json"))
        return dir
    }

    func testUntiedHeadIsUsedForLogitsAndRefusedForTraining() throws {
        let dir = try makeUntiedDirectory(headScale: 2, noise: 0)
        let untied = try MiniMindModel.load(huggingFaceDirectory: dir)
        let tied = try MiniMindModel.load(huggingFaceDirectory: golden("generate_model"))
        XCTAssertNotNil(untied.untiedLMHead)
        XCTAssertNil(tied.untiedLMHead)
        let seq: [Int32] = [1, 85, 736, 201, 59, 292]
        let a = untied.forwardIncremental(tokens: seq, cache: KVCache(config: untied.config, maxLength: 8))
        let b = tied.forwardIncremental(tokens: seq, cache: KVCache(config: tied.config, maxLength: 8))
        var worst: Float = 0
        for i in 0..<a.count { worst = max(worst, abs(a[i] - 2 * b[i])) }
        XCTAssertLessThan(worst, 1e-5, "untied head = 2·embed gives 2× the tied logits")
        XCTAssertThrowsError(try MiniMindModel.load(huggingFaceDirectory: dir, allowUntiedHead: false)) { e in
            XCTAssertTrue("\(e)".contains("inference only"), "\(e)")
        }
    }

    /// Every forward-only load (eval, a reference, a teacher) runs the untied head through the full forward, as the
    /// KV-cache path does; a load for training refuses it, naming the field.
    func testUntiedHeadRunsInTheFullForwardAndIsRefusedForTraining() throws {
        let dir = try makeUntiedDirectory(headScale: 2, noise: 0)
        let untied = try MiniMindModel.load(directory: dir, withGradients: false)
        let tied = try MiniMindModel.load(directory: golden("generate_model"), withGradients: false)
        let ids: [Int32] = [1, 85, 736, 201, 59, 292]
        let a = Array(ids.withUnsafeBufferPointer { untied.forward(inputIds: $0, batchSize: 1, seqLen: ids.count) })
        let b = Array(ids.withUnsafeBufferPointer { tied.forward(inputIds: $0, batchSize: 1, seqLen: ids.count) })
        var worst: Float = 0
        for i in 0..<a.count { worst = max(worst, abs(a[i] - 2 * b[i])) }
        XCTAssertLessThan(worst, 1e-5, "untied head = 2·embed gives 2× the tied logits in the full forward")
        XCTAssertThrowsError(try MiniMindModel.load(directory: dir)) { e in
            XCTAssertTrue("\(e)".contains("tie_word_embeddings = false") && "\(e)".contains("training needs tied embeddings"), "\(e)")
        }
    }

    /// A tied config whose file holds an `lm_head.weight` different from `embed_tokens`: transformers 5 does not tie
    /// them, so neither do we (forward-only); training refuses; an equal `lm_head.weight` is the tied head.
    func testTiedConfigWithADifferentHeadRunsUntiedLikeTransformers() throws {
        let dir = try makeUntiedDirectory(headScale: 2, noise: 0)
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/config.json"))) as! [String: Any]
        cfg["tie_word_embeddings"] = true
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: dir + "/config.json"))
        let m = try MiniMindModel.load(directory: dir, withGradients: false)
        XCTAssertNotNil(m.untiedLMHead)
        let e = m.parameter(named: "model.embed_tokens.weight")!
        XCTAssertEqual(m.untiedLMHead![7], 2 * m.params[e.offset + 7])
        XCTAssertThrowsError(try MiniMindModel.load(directory: dir)) { e in
            XCTAssertTrue("\(e)".contains("lm_head.weight differs from model.embed_tokens.weight"), "\(e)")
        }
        let same = try makeUntiedDirectory(headScale: 1, noise: 0)
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: same + "/config.json"))
        XCTAssertNil(try MiniMindModel.load(directory: same).untiedLMHead, "lm_head.weight equal to embed_tokens is the tied head")
    }

    /// Shards (model.safetensors.index.json) load wherever a model directory is taken, training included; a config
    /// that needs more tensors than the files hold is refused on the headers, before the model is allocated.
    func testShardedCheckpointsLoadForTrainingAndMissingTensorsFailBeforeAllocation() throws {
        let src = try MiniMindModel.load(directory: golden("generate_model"))
        let dir = tmp + "/sharded"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var map: [String: String] = [:]
        var shards = [SafeTensorsWriter(), SafeTensorsWriter()]
        for (i, p) in src.parameters.enumerated() {
            let k = i < src.parameters.count / 2 ? 0 : 1
            shards[k].add(p.name, shape: p.shape, floats: UnsafeBufferPointer(rebasing: src.params[p.range]))
            map[p.name] = "model-0000\(k + 1)-of-00002.safetensors"
        }
        for k in 0..<2 { try shards[k].write(to: dir + "/model-0000\(k + 1)-of-00002.safetensors") }
        try JSONSerialization.data(withJSONObject: ["metadata": [:], "weight_map": map]).write(to: URL(fileURLWithPath: dir + "/model.safetensors.index.json"))
        var cfg = src.config.huggingFaceDictionary
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: dir + "/config.json"))
        let back = try MiniMindModel.load(directory: dir)   // with gradients: the training load
        XCTAssertTrue(back.hasGradients)
        XCTAssertEqual(Array(back.params), Array(src.params))

        // 10 000 layers declared, 2 in the files: about 2 GB if it were allocated; the error comes from the headers.
        cfg["num_hidden_layers"] = 10_000
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: dir + "/config.json"))
        XCTAssertThrowsError(try MiniMindModel.load(directory: dir, withGradients: false)) { e in
            XCTAssertTrue("\(e)".contains("tensor model.layers.2.input_layernorm.weight is missing"), "\(e)")
        }
        // Neither weight file: a PyTorch pickle beside the config is named.
        let bin = tmp + "/bin"
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        try JSONSerialization.data(withJSONObject: src.config.huggingFaceDictionary).write(to: URL(fileURLWithPath: bin + "/config.json"))
        try Data([0]).write(to: URL(fileURLWithPath: bin + "/pytorch_model.bin"))
        XCTAssertThrowsError(try MiniMindModel.load(directory: bin)) { e in
            XCTAssertTrue("\(e)".contains("pytorch_model.bin is there"), "\(e)")
        }
    }

    /// `export --format hf` keeps the model's own special ids and its generation_config.json; f16 refuses a weight
    /// beyond its range instead of writing inf.
    func testExportKeepsTheModelsSpecialIdsAndGenerationConfig() throws {
        let (tok, tokFile) = try tokenizer()
        let src = tmp + "/ids-src"
        try FileManager.default.createDirectory(atPath: src, withIntermediateDirectories: true)
        for f in ["model.safetensors", "config.json"] {
            try FileManager.default.copyItem(atPath: golden("generate_model") + "/" + f, toPath: src + "/" + f) }
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: src + "/config.json"))) as! [String: Any]
        cfg["bos_token_id"] = 5; cfg["eos_token_id"] = [9, 4333]; cfg["pad_token_id"] = 3
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: src + "/config.json"))
        let gen = Data(#"{"bos_token_id": 5, "eos_token_id": [9, 4333], "pad_token_id": 3, "do_sample": false}"#.utf8)
        try gen.write(to: URL(fileURLWithPath: src + "/generation_config.json"))
        let m = try MiniMindModel.load(huggingFaceDirectory: src)
        let out = tmp + "/ids-out"
        try HuggingFaceExporter.export(model: m, tokenizer: tok, tokenizerFile: tokFile, to: out, dtype: .f32, sourceDirectory: src)
        let written = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))) as! [String: Any]
        XCTAssertEqual(written["bos_token_id"] as? Int, 5)
        XCTAssertEqual(written["eos_token_id"] as? [Int], [9, 4333])
        XCTAssertEqual(written["pad_token_id"] as? Int, 3)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out + "/generation_config.json")), gen)
        // Without a source generation_config.json: the model's ids and MiniMind's sampling defaults.
        try FileManager.default.removeItem(atPath: src + "/generation_config.json")
        try HuggingFaceExporter.export(model: m, tokenizer: tok, tokenizerFile: tokFile, to: out, dtype: .f32, sourceDirectory: src)
        let g = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/generation_config.json"))) as! [String: Any]
        XCTAssertEqual(g["eos_token_id"] as? [Int], [9, 4333])
        XCTAssertEqual(g["temperature"] as? Double, 0.85)

        m.params[m.parameter(named: "model.layers.0.mlp.up_proj.weight")!.offset] = 1e5
        for f in ["hf", "gguf"] {
            XCTAssertThrowsError(try f == "hf"
                ? HuggingFaceExporter.export(model: m, tokenizer: tok, tokenizerFile: tokFile, to: tmp + "/f16", dtype: .f16)
                : GGUFExporter.export(model: m, tokenizer: tok, tokenizerFile: tokFile, to: tmp + "/f16.gguf", dtype: .f16, name: "x")) { e in
                XCTAssertTrue("\(e)".contains("model.layers.0.mlp.up_proj.weight holds 100000.0, beyond f16's largest value"), "\(e)")
            }
        }
        XCTAssertNoThrow(try HuggingFaceExporter.export(model: m, tokenizer: tok, tokenizerFile: tokFile, to: tmp + "/bf16", dtype: .bf16))
    }

    func testImportErrorsNameFileAndField() throws {
        let dir = tmp + "/bad"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Data(#"{"hidden_size": 64, "num_attention_heads": 4, "hidden_act": "gelu"}"#.utf8).write(to: URL(fileURLWithPath: dir + "/config.json"))
        XCTAssertThrowsError(try MiniMindModel.load(huggingFaceDirectory: dir)) { XCTAssertTrue("\($0)".contains("hidden_act"), "\($0)") }
        try Data(#"{"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "intermediate_size": 192}"#.utf8)
            .write(to: URL(fileURLWithPath: dir + "/config.json"))
        XCTAssertThrowsError(try MiniMindModel.load(huggingFaceDirectory: dir)) { XCTAssertTrue("\($0)".contains("model.safetensors"), "\($0)") }
    }

    /// Export → re-import round trip: f32 exact, f16/bf16 within their rounding; sharded index accepted.
    func testHuggingFaceExportRoundTrip() throws {
        let (tok, tokFile) = try tokenizer()
        let m = try MiniMindModel.load(directory: golden("generate_model"))
        for (dt, tol) in [(ExportDType.f32, Float(0)), (.f16, 1e-3), (.bf16, 8e-3)] {
            let out = tmp + "/hf-\(dt.rawValue)"
            try HuggingFaceExporter.export(model: m, tokenizer: tok, tokenizerFile: tokFile, to: out, dtype: dt)
            for f in ["model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"] {
                XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/" + f), f)
            }
            let cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))) as! [String: Any]
            XCTAssertEqual(cfg["architectures"] as? [String], ["LlamaForCausalLM"])
            XCTAssertEqual(cfg["torch_dtype"] as? String, dt.torchName)
            let tc = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/tokenizer_config.json"))) as! [String: Any]
            XCTAssertNotNil(tc["chat_template"] as? String)
            let back = try MiniMindModel.load(huggingFaceDirectory: out)
            var worst: Float = 0
            for i in 0..<m.numParameters { worst = max(worst, abs(back.params[i] - m.params[i]) / max(1, abs(m.params[i]))) }
            XCTAssertLessThanOrEqual(worst, tol, dt.rawValue)
        }
    }

    func testRoPEPermutationMatchesLlamaCppConverter() {
        // 2 heads, head_dim 4, 1 column: rows [h0: a0 a1 b0 b1 | h1: ...] → [a0 b0 a1 b1 | ...].
        let w: [Float] = [0, 1, 2, 3, 10, 11, 12, 13]
        let p = w.withUnsafeBufferPointer { GGUFExporter.permuteRoPE($0, heads: 2, cols: 1) }
        XCTAssertEqual(p, [0, 2, 1, 3, 10, 12, 11, 13])
        XCTAssertEqual(GGUFExporter.ggufName("model.layers.3.self_attn.k_proj.weight"), "blk.3.attn_k.weight")
        XCTAssertEqual(GGUFExporter.ggufName("model.layers.0.mlp.down_proj.weight"), "blk.0.ffn_down.weight")
        XCTAssertEqual(GGUFExporter.ggufName("model.embed_tokens.weight"), "token_embd.weight")
    }

    /// transformers loads the exported directories (tied and untied head) and gives our logits.
    func testHuggingFaceExportMatchesTransformersLogits() throws {
        guard pythonHas(["torch", "transformers", "safetensors"]) else {
            throw XCTSkip("python3 with torch + transformers + safetensors not installed: transformers check skipped") }
        let (tok, tokFile) = try tokenizer()
        // Tied: the golden train-step model, full forward (the debug-step path) over its [2, 15] batch.
        let m = try MiniMindModel.load(directory: golden("model"))
        let ids = try SafeTensorsFile(path: golden("model/train_step.safetensors")).int32s("input_ids")
        let B = 2, T = ids.count / 2
        let logits = Array(ids.withUnsafeBufferPointer { m.forward(inputIds: $0, batchSize: B, seqLen: T) })
        var ref = SafeTensorsWriter()
        ref.add("input_ids", shape: [B, T], int32s: ids)
        ref.add("logits", shape: [B, T, m.config.vocabSize], floats: logits)
        try ref.write(to: tmp + "/tied_ref.safetensors")
        try HuggingFaceExporter.export(model: m, tokenizer: tok, tokenizerFile: tokFile, to: tmp + "/hf_tied", dtype: .f32)
        // Untied: imported HF directory with a separate head, KV-cache logits of the last token.
        let u = try MiniMindModel.load(huggingFaceDirectory: try makeUntiedDirectory(headScale: 1, noise: 0.2))
        let seq: [Int32] = [1, 85, 736, 201, 59, 292, 389, 260, 3836]
        let last = u.forwardIncremental(tokens: seq, cache: KVCache(config: u.config, maxLength: 16))
        var uref = SafeTensorsWriter()
        uref.add("input_ids", shape: [1, seq.count], int32s: seq)
        uref.add("logits", shape: [u.config.vocabSize], floats: last)
        try uref.write(to: tmp + "/untied_ref.safetensors")
        try HuggingFaceExporter.export(model: u, tokenizer: tok, tokenizerFile: tokFile, to: tmp + "/hf_untied", dtype: .f32)

        let r = try runPython([scriptPath("check_hf.py"), tmp + "/hf_tied:" + tmp + "/tied_ref.safetensors",
                               tmp + "/hf_untied:" + tmp + "/untied_ref.safetensors"])!
        print("check_hf.py:", r.1)
        XCTAssertEqual(r.0, 0, "check_hf.py failed:\n\(r.1)\n\(r.2.suffix(3000))")
    }

    /// The gguf package's reader sees llama metadata, the full tokenizer and every tensor with the permuted q/k.
    func testGGUFExportValidatesWithGGUFReader() throws {
        guard pythonHas(["gguf", "numpy", "safetensors"]) else { throw XCTSkip("python3 gguf package not installed (pip install gguf): GGUF check skipped") }
        let (tok, tokFile) = try tokenizer()
        let m = try MiniMindModel.load(directory: golden("generate_model"))
        for dt in [ExportDType.f32, .f16, .bf16, .q8_0] {
            let path = tmp + "/m-\(dt.rawValue).gguf"
            try GGUFExporter.export(model: m, tokenizer: tok, tokenizerFile: tokFile, to: path, dtype: dt, name: "generate_model")
            let r = try runPython([scriptPath("check_gguf.py"), path, golden("generate_model"), tokFile, dt.rawValue])!
            print("check_gguf.py (\(dt.rawValue)):", r.1)
            XCTAssertEqual(r.0, 0, "check_gguf.py failed:\n\(r.1)\n\(r.2.suffix(3000))")
        }
    }

    /// `trainer export --format gguf`: missing parent directories are created (as --format hf creates its
    /// directory), and an --out ending in "/" is a directory that receives model-<dtype>.gguf.
    func testGGUFExportCreatesMissingDirectories() throws {
        let model = ["export", "--model", golden("generate_model"), "--tokenizer", minimindTokenizer(), "--format", "gguf"]
        let file = tmp + "/new/parent/m.gguf"
        let (s1, o1, e1) = try runTrainer(model + ["--out", file])
        XCTAssertEqual(s1, 0, e1); XCTAssertTrue(o1.contains("wrote GGUF \(file)"), o1)
        XCTAssertTrue(FileManager.default.fileExists(atPath: file))
        let dir = tmp + "/newdir/"
        let (s2, _, e2) = try runTrainer(model + ["--out", dir, "--dtype", "q8_0"])
        XCTAssertEqual(s2, 0, e2)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "model-q8_0.gguf"))
    }

    /// llama.cpp (through llama-cpp-python) decodes the GGUF export greedily to the same ids as our KV-cache
    /// greedy decoding (= `trainer generate --temperature 0`, = the golden PyTorch ids).
    func testGGUFGreedyTokensMatchLlamaCpp() throws {
        guard pythonHas(["llama_cpp"]) else { throw XCTSkip("llama-cpp-python not installed: llama.cpp greedy comparison skipped") }
        let (tok, tokFile) = try tokenizer()
        let m = try MiniMindModel.load(directory: golden("generate_model"))
        let g = try loadGoldenGenerate()
        let path = tmp + "/m.gguf"
        try GGUFExporter.export(model: m, tokenizer: tok, tokenizerFile: tokFile, to: path, dtype: .f32, name: "generate_model")
        let ours = Array(TokenGenerator(model: m, promptIds: g.prompt_ids, options: SamplingOptions(maxNewTokens: g.max_new_tokens, temperature: 0, eosTokenId: nil)))
        XCTAssertEqual(ours, g.greedy_ids)
        let r = try runPython([scriptPath("check_llama_cpp.py"), path, "\(g.max_new_tokens)", g.prompt_ids.map(String.init).joined(separator: ",")])!
        XCTAssertEqual(r.0, 0, r.2.suffix(3000).description)
        let theirs = try JSONDecoder().decode([Int32].self, from: Data(r.1.utf8))
        print("llama.cpp greedy:", theirs)
        XCTAssertEqual(theirs, ours)
    }
}
