import Foundation
import XCTest
@testable import Tokenizers
import TestSupport

/// Golden: `Tests/Fixtures/golden/tokenizer/bpe_trained_tokenizer.json`, trained by Hugging Face `BpeTrainer`
/// (byte-level, vocab 1000, the three MiniMind specials, full byte alphabet) on `bpe_train_input.jsonl`.
final class TrainerTests: XCTestCase {
    func trainGolden() throws -> BPETrainer.Result {
        var trainer = BPETrainer(vocabSize: 1000)
        try trainer.feedJSONL(path: Fixtures.path("golden/tokenizer/bpe_train_input.jsonl"))
        return try trainer.train()
    }

    func testTrainMatchesHuggingFaceVocabAndMerges() throws {
        let r = try trainGolden()
        let golden = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath:
            Fixtures.path("golden/tokenizer/bpe_trained_tokenizer.json")))) as! [String: Any]
        let model = golden["model"] as! [String: Any]
        let vocab = (model["vocab"] as! [String: Any]).mapValues { ($0 as! NSNumber).intValue }
        let merges = (model["merges"] as! [[String]]).map { ($0[0], $0[1]) }
        XCTAssertEqual(r.vocab.count, 1000)
        XCTAssertEqual(vocab.count, 1000)
        var vocabMismatch = 0
        for (i, t) in r.vocab.enumerated() where vocab[t] != i { vocabMismatch += 1 }
        XCTAssertEqual(vocabMismatch, 0)
        XCTAssertEqual(r.merges.count, merges.count)
        let firstBad = (0..<min(r.merges.count, merges.count)).first { r.merges[$0] != merges[$0] }
        XCTAssertNil(firstBad, "first differing merge: \(firstBad.map { "\($0): \(r.merges[$0]) vs \(merges[$0])" } ?? "")")
        // Our writer produces the same bytes as Hugging Face's serializer.
        let goldenText = try String(contentsOfFile: Fixtures.path("golden/tokenizer/bpe_trained_tokenizer.json"), encoding: .utf8)
        XCTAssertEqual(TokenizerWriter.tokenizerJSON(r), goldenText)
    }

    func testWriteIsAtomicAndLoadable() throws {
        let r = try trainGolden()
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("tok-train-\(getpid())")
        try? FileManager.default.removeItem(at: base)
        defer { try? FileManager.default.removeItem(at: base) }
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        let out = base.appendingPathComponent("out").path
        try TokenizerWriter.write(r, to: out)
        let tk = try Tokenizer.load(out)
        XCTAssertEqual(tk.vocabSize, 1000)
        XCTAssertEqual([tk.padTokenId, tk.bosTokenId, tk.eosTokenId], [0, 1, 2])
        let text = "床前明月光，疑是地上霜。 Hello world!"
        XCTAssertEqual(try tk.decode(tk.encode(text)), text)
        XCTAssertEqual(try tk.applyChatTemplate([ChatMessage(role: "user", content: "hi")], addGenerationPrompt: true),
                       "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: base.path), ["out"])
        // Output path that is a file: error, nothing written.
        let file = base.appendingPathComponent("afile").path
        XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))
        XCTAssertThrowsError(try TokenizerWriter.write(r, to: file))
        // Output below a file (`file/sub`): a message naming the file, not an NSCocoa error; nothing written.
        XCTAssertThrowsError(try TokenizerWriter.write(r, to: file + "/sub")) {
            XCTAssertTrue("\($0)".contains("\(file) is a file, not a directory"), "\($0)")
        }
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: base.path)), ["out", "afile"])
        // A directory given as jsonl input.
        XCTAssertThrowsError(try JSONLReader.forEachLine(path: base.path) { _ in }) {
            XCTAssertTrue("\($0)".contains("is a directory"), "\($0)")
        }
    }

    /// Optional cross-check with the real Hugging Face libraries when python has them.
    func testPythonTokenizersLoadsWrittenFiles() throws {
        guard Python.hasModules(["tokenizers"]) else {
            throw XCTSkip("python3 with Hugging Face tokenizers not installed (pip install tokenizers): cross-check skipped")
        }
        let r = try trainGolden()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tok-py-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        defer { try? FileManager.default.removeItem(at: dir) }
        try TokenizerWriter.write(r, to: dir.path)
        let script = """
        import sys
        try:
            from tokenizers import Tokenizer
        except ImportError:
            print("SKIP"); sys.exit(0)
        t = Tokenizer.from_file(sys.argv[1] + "/tokenizer.json")
        print(t.get_vocab_size(), t.encode("床前明月光 Hello").ids)
        try:
            from transformers import AutoTokenizer
            a = AutoTokenizer.from_pretrained(sys.argv[1])
            print("transformers", a.bos_token_id, a.eos_token_id, a.pad_token_id)
        except ImportError:
            print("no transformers")
        """
        guard let py = try Python.run(["-c", script, dir.path]) else { throw XCTSkip("python3 not on PATH: cross-check skipped") }
        let out = py.text
        if out.hasPrefix("SKIP") { throw XCTSkip("python3 could not import tokenizers: cross-check skipped") }
        guard py.status == 0 else { return XCTFail("python3 exited with \(py.status):\n\(py.stderr.suffix(3000))") }
        let tk = try Tokenizer.load(dir.path)
        let lines = out.split(separator: "\n")
        XCTAssertEqual(lines.first.map(String.init), "1000 \(tk.encode("床前明月光 Hello"))")
        if lines.count > 1 && lines[1].hasPrefix("transformers") { XCTAssertEqual(String(lines[1]), "transformers 1 2 0") }
    }
}
