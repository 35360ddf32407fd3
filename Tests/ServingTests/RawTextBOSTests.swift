import Foundation
import XCTest
@testable import Serving
import Model
import Tokenizers
import TestSupport

/// One BOS rule for raw text (issue 15 item 9): `trainer generate --prompt TEXT` encodes TEXT as transformers'
/// `tokenizer(TEXT)` does (tokenizer.json's post-processor), and the exports record that rule — `add_bos_token` /
/// `add_eos_token` in tokenizer_config.json, `tokenizer.ggml.add_bos_token` / `add_eos_token` in the GGUF — so
/// transformers and llama.cpp continue raw text from the same ids to the same greedy tokens.
final class RawTextBOSTests: XCTestCase {
    var tmp = ""
    override func setUpWithError() throws {
        tmp = NSTemporaryDirectory() + "swiftmind-bos-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: tmp) }

    /// MiniMind's tokenizer directory with a `TemplateProcessing` post-processor that puts `<|im_start|>` (its bos)
    /// before a sequence; its tokenizer_config.json still says `add_bos_token: false` (copied unchanged).
    func bosTokenizerDirectory() throws -> String {
        let dir = tmp + "/bos-tokenizer"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let src = minimindTokenizer()
        var tj = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: src + "/tokenizer.json"))) as! [String: Any]
        let bos: [String: Any] = ["SpecialToken": ["id": "<|im_start|>", "type_id": 0]]
        tj["post_processor"] = [
            "type": "TemplateProcessing",
            "single": [bos, ["Sequence": ["id": "A", "type_id": 0]]],
            "pair": [bos, ["Sequence": ["id": "A", "type_id": 0]], bos, ["Sequence": ["id": "B", "type_id": 1]]],
            "special_tokens": ["<|im_start|>": ["id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]]],
        ] as [String: Any]
        try JSONSerialization.data(withJSONObject: tj).write(to: URL(fileURLWithPath: dir + "/tokenizer.json"))
        try FileManager.default.copyItem(atPath: src + "/tokenizer_config.json", toPath: dir + "/tokenizer_config.json")
        return dir
    }

    func exportedConfig(_ dir: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/tokenizer_config.json"))) as! [String: Any]
    }

    /// The rule is the post-processor's, and `trainer export --format hf` records it in tokenizer_config.json
    /// (replacing a copied value that says otherwise).
    func testTheRawTextRuleIsTheTokenizersAndTheExportRecordsIt() throws {
        let plain = try Tokenizer.load(minimindTokenizer())
        XCTAssertTrue(plain.singleSequenceSpecialTokens.before.isEmpty && plain.singleSequenceSpecialTokens.after.isEmpty)
        XCTAssertFalse(plain.addsBosToken)
        XCTAssertEqual(plain.encode("床前明月光", addSpecialTokens: true), plain.encode("床前明月光"))
        let bosDir = try bosTokenizerDirectory()
        let withBos = try Tokenizer.load(bosDir)
        XCTAssertEqual(withBos.singleSequenceSpecialTokens.before, [withBos.bosTokenId])
        XCTAssertTrue(withBos.addsBosToken)
        XCTAssertFalse(withBos.addsEosToken)
        XCTAssertEqual(withBos.encode("床前明月光", addSpecialTokens: true), [withBos.bosTokenId] + withBos.encode("床前明月光"))

        for (tokDir, addsBos) in [(minimindTokenizer(), false), (bosDir, true)] {
            let out = tmp + "/hf-\(addsBos)"
            let r = try runTrainer(["export", "--model", golden("generate_model"), "--tokenizer", tokDir, "--out", out, "--format", "hf"])
            XCTAssertEqual(r.0, 0, r.2)
            let tc = try exportedConfig(out)
            XCTAssertEqual(tc["add_bos_token"] as? Bool, addsBos, "\(tokDir)")
            XCTAssertEqual(tc["add_eos_token"] as? Bool, false, "\(tokDir)")
        }
    }

    /// `trainer generate` on raw text, transformers on the `export --format hf` directory and llama.cpp on the
    /// `export --format gguf` file: the same prompt ids and the same greedy continuation, for a tokenizer that adds
    /// no bos (MiniMind's) and one whose post-processor adds it.
    func testRawTextGreedyOutputIsEqualInGenerateTransformersAndLlamaCpp() throws {
        guard pythonHas(["torch", "transformers", "gguf", "llama_cpp"]) else {
            throw XCTSkip("python3 with torch, transformers, gguf and llama-cpp-python not installed: raw-text cross-check skipped") }
        let texts = ["The error of youth is to believe", "床前明月光，疑是"]
        let n = 12
        let cases = [(minimindTokenizer(), false), (try bosTokenizerDirectory(), true)]
        var paths: [String] = [], ours: [[[Int32]]] = []
        for (tokDir, addsBos) in cases {
            let hf = tmp + "/hf-\(addsBos)", gguf = tmp + "/m-\(addsBos).gguf"
            for (format, out) in [("hf", hf), ("gguf", gguf)] {
                let r = try runTrainer(["export", "--model", golden("generate_model"), "--tokenizer", tokDir, "--out", out, "--format", format])
                XCTAssertEqual(r.0, 0, r.2)
            }
            paths += [hf, gguf]
            var perText: [[Int32]] = []
            for text in texts {
                // `--eos-id -1`: never stop (the negative value in the `--x -1` form the help documents).
                let r = try runTrainer(["generate", "--model", golden("generate_model"), "--tokenizer", tokDir, "--prompt", text,
                                        "--temperature", "0", "--max-new-tokens", "\(n)", "--eos-id", "-1", "--ids"])
                XCTAssertEqual(r.0, 0, r.2)
                perText.append(try JSONDecoder().decode([Int32].self, from: Data(r.1.utf8)))
            }
            ours.append(perText)
        }
        // One Python process for both exports (its imports take seconds).
        let py = try runPython([scriptPath("check_raw_text.py"), "\(n)"] + paths + ["--"] + texts)!
        XCTAssertEqual(py.0, 0, py.2.suffix(3000).description)
        print("check_raw_text.py:", py.1)
        let results = try JSONSerialization.jsonObject(with: Data(py.1.utf8)) as! [[String: Any]]
        XCTAssertEqual(results.count, cases.count)
        for (c, res) in zip(cases.indices, results) {
            let (tokDir, addsBos) = cases[c]
            let tok = try Tokenizer.load(tokDir)
            XCTAssertEqual(res["config_add_bos_token"] as? Bool, addsBos)
            XCTAssertEqual(res["gguf_add_bos_token"] as? Bool, addsBos)
            XCTAssertEqual(res["config_add_eos_token"] as? Bool, false)
            XCTAssertEqual(res["gguf_add_eos_token"] as? Bool, false)
            let rows = res["texts"] as! [[String: Any]]
            XCTAssertEqual(rows.count, texts.count)
            for (i, row) in rows.enumerated() {
                let prompt = tok.encode(texts[i], addSpecialTokens: true).map(Int.init)
                XCTAssertEqual(prompt.first == Int(tok.bosTokenId), addsBos, texts[i])
                XCTAssertEqual(row["transformers_prompt"] as? [Int], prompt, "transformers' tokenizer(TEXT), \(texts[i])")
                XCTAssertEqual(row["llama_cpp_prompt"] as? [Int], prompt, "llama.cpp's tokenizer, \(texts[i])")
                XCTAssertEqual(row["transformers_new"] as? [Int], ours[c][i].map(Int.init), "transformers greedy, \(texts[i])")
                XCTAssertEqual(row["llama_cpp_new"] as? [Int], ours[c][i].map(Int.init), "llama.cpp greedy, \(texts[i])")
            }
        }
    }
}
