import Foundation
import XCTest
@testable import Tokenizers
import TestSupport

/// Bad input gives errors that name the file, JSON path or line — never a crash or a silent mis-encoding.
final class BadInputTests: XCTestCase {
    /// MiniMind's tokenizer.json as a JSON object, read once (a missing file fails the tests that need it).
    static let original = Result {
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.miniMindDir + "/tokenizer.json"))) as! [String: Any]
    }

    func load(_ mutate: (inout [String: Any]) -> Void) throws -> Tokenizer {
        var j = try BadInputTests.original.get()
        mutate(&j)
        return try Tokenizer(tokenizerJSON: try JSONSerialization.data(withJSONObject: j), config: nil, fileName: "t.json")
    }

    func expectError(_ contains: String, _ mutate: (inout [String: Any]) -> Void, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try load(mutate), file: file, line: line) { e in
            XCTAssertTrue("\(e)".contains(contains), "\(e) does not mention \(contains)", file: file, line: line)
        }
    }

    func testUnsupportedFeaturesNameTheField() {
        expectError("$.normalizer") { $0["normalizer"] = ["type": "NFC"] }
        expectError("$.model.type") { j in var m = j["model"] as! [String: Any]; m["type"] = "Unigram"; j["model"] = m }
        expectError("$.model.byte_fallback") { j in var m = j["model"] as! [String: Any]; m["byte_fallback"] = true; j["model"] = m }
        expectError("$.model.dropout") { j in var m = j["model"] as! [String: Any]; m["dropout"] = 0.1; j["model"] = m }
        expectError("$.pre_tokenizer.type") { $0["pre_tokenizer"] = ["type": "Whitespace"] }
        expectError("$.pre_tokenizer.add_prefix_space") { j in
            var p = j["pre_tokenizer"] as! [String: Any]; p["add_prefix_space"] = true; j["pre_tokenizer"] = p
        }
        expectError("$.decoder.type") { $0["decoder"] = ["type": "WordPiece"] }
        expectError("$.added_tokens[1].lstrip") { j in
            var a = j["added_tokens"] as! [[String: Any]]; a[1]["lstrip"] = true; j["added_tokens"] = a
        }
    }

    func testMalformedFieldsNameTheJSONPath() {
        expectError("$.model.merges[7]") { j in
            var m = j["model"] as! [String: Any]; var ms = m["merges"] as! [Any]; ms[7] = ["Ġt", "nosuchsymbol"]; m["merges"] = ms; j["model"] = m
        }
        expectError("$.model.merges[3]") { j in
            var m = j["model"] as! [String: Any]; var ms = m["merges"] as! [Any]; ms[3] = 5; m["merges"] = ms; j["model"] = m
        }
        expectError("$.model.vocab[\"a\"]") { j in
            var m = j["model"] as! [String: Any]; var v = m["vocab"] as! [String: Any]; v["a"] = "x"; m["vocab"] = v; j["model"] = m
        }
        expectError("$.model.vocab") { j in var m = j["model"] as! [String: Any]; m["vocab"] = nil; j["model"] = m }
        XCTAssertThrowsError(try Tokenizer(tokenizerJSON: Data("{\"model\": {\"vocab\": {\"a\": 1,, }}}".utf8), config: nil)) { e in
            XCTAssertTrue("\(e)".contains("$.model.vocab"), "\(e)")
            XCTAssertTrue("\(e)".contains("line 1"), "\(e)")
        }
        XCTAssertThrowsError(try Tokenizer.load("/nonexistent/tokenizer.json")) { e in
            XCTAssertTrue("\(e)".contains("/nonexistent"))
        }
    }

    /// HF `tokenizers` 0.23 loads a vocab with a repeated id silently (and decodes it to one of the tokens); we reject
    /// it naming the file, the id and both tokens. Also an added token that takes another token's id, and a boolean id.
    func testRepeatedIdsAreRejected() throws {
        func vocab(_ j: inout [String: Any], _ f: (inout [String: Any]) -> Void) {
            var m = j["model"] as! [String: Any]; var v = m["vocab"] as! [String: Any]; f(&v); m["vocab"] = v; j["model"] = m
        }
        let byteA = "a"   // a byte-level symbol of the real vocab
        let idA = (try Fixtures.miniMind().tokenToId(byteA)).map(Int.init)!
        XCTAssertThrowsError(try load { j in vocab(&j) { $0["zzz"] = idA } }) { e in
            XCTAssertEqual("\(e)", "t.json: $.model.vocab: id \(idA) is given to two tokens, \"a\" and \"zzz\"")
        }
        XCTAssertThrowsError(try load { j in
            var a = j["added_tokens"] as! [[String: Any]]
            var t = a[0]; t["id"] = idA; t["content"] = "<x>"; a.append(t); j["added_tokens"] = a
        }) { e in
            XCTAssertEqual("\(e)", "t.json: $.added_tokens[3].id: id \(idA) is given to two tokens, \"a\" and added token \"<x>\"")
        }
        XCTAssertThrowsError(try load { j in
            var a = j["added_tokens"] as! [[String: Any]]
            var t = a[0]; t["id"] = 7000; t["content"] = "<x>"; a.append(t); t["content"] = "<y>"; a.append(t); j["added_tokens"] = a
        }) { e in
            XCTAssertEqual("\(e)", "t.json: $.added_tokens[4].id: id 7000 is given to two tokens, \"<x>\" and added token \"<y>\"")
        }
        expectError("$.model.vocab[\"a\"]: expected an integer, found a boolean") { j in vocab(&j) { $0["a"] = true } }
        expectError("$.added_tokens[0].special: expected true or false, found the number 1") { j in
            var a = j["added_tokens"] as! [[String: Any]]; a[0]["special"] = 1; j["added_tokens"] = a
        }
        // The real file (added tokens repeating their vocab entries) still loads.
        XCTAssertEqual(try load { _ in }.vocabSize, 6400)
    }

    /// JSON booleans bridge to NSNumber 1/0 in Foundation: `JSONLReader.integer` must not take them for ids.
    func testJSONIntegerRejectsBooleansAndFractions() throws {
        let values = try JSONSerialization.jsonObject(with: Data("[true, false, 1, 0, -3, 2.0, 1.5, 1e300, \"4\", null]".utf8)) as! [Any]
        XCTAssertEqual(values.map { JSONLReader.integer($0) }, [nil, nil, 1, 0, -3, 2, nil, nil, nil, nil])
        XCTAssertEqual(JSONLReader.kind(values[0]), "a boolean")
        XCTAssertEqual(JSONLReader.kind(values[6]), "the number 1.5")
    }

    /// Training on a file with no text (empty, blank lines only, or only empty "text") fails naming the file.
    func testTrainingOnAFileWithoutTextFails() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("notext-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (name, content, lines) in [("empty", "", "0 lines"), ("blank", "\n  \n\n", "3 lines"), ("notext", "{\"text\": \"\"}\n", "1 line")] {
            let path = dir + "/\(name).jsonl"
            try content.write(toFile: path, atomically: true, encoding: .utf8)
            var trainer = BPETrainer(vocabSize: 300)
            XCTAssertThrowsError(try trainer.feedJSONL(path: path)) { e in
                XCTAssertEqual("\(e)", "tokenizer training: \(path) holds no text to train on (\(lines), none with a non-empty \"text\")")
            }
        }
        // Blank lines between texts are skipped, as the other jsonl readers do.
        let path = dir + "/ok.jsonl"
        try "{\"text\": \"hello world\"}\n\n{\"text\": \"hello\"}\n".write(toFile: path, atomically: true, encoding: .utf8)
        var trainer = BPETrainer(vocabSize: 300)
        try trainer.feedJSONL(path: path)
        XCTAssertGreaterThan(try trainer.train().merges.count, 0)
    }

    func testStringFormMergesEncodeTheSame() throws {
        let tk = try load { j in
            var m = j["model"] as! [String: Any]
            m["merges"] = (m["merges"] as! [[String]]).map { $0.joined(separator: " ") }
            j["model"] = m
        }
        let rows = try Fixtures.jsonl("golden/tokenizer/tokenizer_cases.jsonl")
        for r in rows.prefix(60) { XCTAssertEqual(tk.encode(r["text"] as! String), ints(r["ids"])) }
    }

    func testJSONLInvalidUTF8NamesTheLine() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(getpid()).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        var d = Data("{\"text\": \"ok\"}\n{\"text\": \"fine\"}\n{\"text\": \"x".utf8)
        d.append(contentsOf: [0xE4, 0xBD, 0x22, 0x7D, 0x0A])
        try d.write(to: URL(fileURLWithPath: path))
        var seen = 0
        XCTAssertThrowsError(try JSONLReader.forEachLine(path: path) { _ in seen += 1 }) { e in
            XCTAssertEqual(e as? JSONLError, .invalidUTF8(path: path, line: 3, byteOffset: 11, column: 12))
            XCTAssertEqual("\(e)", "\(path):3: invalid UTF-8 at column 12 of the line (byte 12)")
        }
        XCTAssertEqual(seen, 2)
        var trainer = BPETrainer(vocabSize: 300)
        XCTAssertThrowsError(try trainer.feedJSONL(path: path))
    }
}
