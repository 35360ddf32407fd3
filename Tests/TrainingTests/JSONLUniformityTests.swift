import XCTest
import Foundation
import Logging
import TestSupport
import Datasets
import Tokenizers
import Training
import SwiftMindDistributed

/// Every jsonl reader — the token cache of pretrain and of each post-training stage (through `SharedTokenCache.load`,
/// the call the trainers make), the tokenizer trainer and `encodeJSONL` — reads lines through the one `JSONLReader`:
/// the same bad input gives the same `FILE:LINE: reason`, and blank lines (middle, trailing, CRLF) are skipped by all.
final class JSONLUniformityTests: ScratchDirTestCase {
    var tok: Tokenizer!

    override func setUpWithError() throws {
        try super.setUpWithError()
        tok = try Tokenizer.load(TrainerRunner.tokenizer)
    }

    /// A reader of a jsonl file, returning how many samples it read.
    typealias Reader = (String) throws -> Int

    /// name → (jsonl format, reader).
    func readers() -> [(name: String, format: TokenCacheKind, read: Reader)] {
        let logger = Logger(label: "test")
        var n = 0
        func cache(_ kind: TokenCacheKind) -> Reader {
            return { path in
                n += 1
                return try SharedTokenCache.load(dataPath: path, kind: kind, tokenizer: self.tok, cacheRoot: self.work + "/cache-\(n)",
                                                 threads: 2, comm: SingleProcessCommunicator(), logger: logger).count
            }
        }
        var out: [(String, TokenCacheKind, Reader)] = [("pretrain", .pretrain, cache(.pretrain))]
        for s in Stage.allCases { out.append((s.rawValue, s.cacheKind, cache(s.cacheKind))) }
        out.append(("tokenizer train", .pretrain, { path in
            var t = BPETrainer(vocabSize: 300)
            try t.feedJSONL(path: path)
            return -1   // the trainer keeps word counts, not a count of lines: -1 = read, not counted
        }))
        out.append(("encodeJSONL", .pretrain, { path in
            var count = 0
            try self.tok.encodeJSONL(path: path, threads: 2, chunkLines: 2) { count += $0.count }
            return count
        }))
        return out
    }

    static let good: [TokenCacheKind: String] = [
        .pretrain: #"{"text": "床前明月光，疑是地上霜。"}"#,
        .sft: #"{"conversations": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]}"#,
        .dpo: #"{"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]}"#,
    ]

    /// Bad lines that are bad whatever the format: fed to every reader as line 5 of the same file (blank lines before
    /// it, so the number counts blank lines), each must report exactly `FILE:5: reason`.
    func testSameBadLineSameMessageEverywhere() throws {
        let cases: [(String, [UInt8], String)] = [
            ("cut", Array(#"{"text": "abc"#.utf8), "malformed JSON at column 14 in $.text: unterminated string"),
            ("bracket", Array(#"{"a": [1, 2}"#.utf8), "malformed JSON at column 12 in $.a: expected ',' or ']' in an array"),
            ("open", Array(#"{"a": {"b": 1}"#.utf8), "malformed JSON at column 15: unexpected end of the line inside an object"),
            ("garbage", Array(#"{"a": 1} x"#.utf8), "malformed JSON at column 10: unexpected text after the top-level value"),
            ("array", Array("[1, 2]".utf8), "expected a JSON object {…}, got an array"),
            ("string", Array(#""text""#.utf8), "expected a JSON object {…}, got a string"),
            ("utf8", Array(#"{"text": "x"#.utf8) + [0xE4, 0xBD, 0x22, 0x7D], "invalid UTF-8 at column 12 of the line (byte 12)"),
        ]
        for (name, bad, reason) in cases {
            var content = Data("\n  \r\n\t\n\n".utf8)   // lines 1–4: blank (empty, spaces + CR, tab, empty)
            content.append(contentsOf: bad)
            content.append(contentsOf: Array("\n\n".utf8))
            let path = work + "/\(name).jsonl"
            try content.write(to: URL(fileURLWithPath: path))
            for r in readers() {
                XCTAssertThrowsError(try r.read(path), "\(r.name) \(name)") { e in
                    XCTAssertEqual("\(e)", "\(path):5: \(reason)", "\(r.name) \(name)")
                    XCTAssertEqual(e as? JSONLError, JSONLError(path: path, line: 5, reason: reason), "\(r.name) \(name)")
                }
            }
        }
    }

    /// The first bad line in file order is reported, whatever kind of error the later ones have (a line that is not
    /// UTF-8 after a malformed one in the same chunk).
    func testFirstBadLineInFileOrderWins() throws {
        var content = Data("\n[1]\n\n{\"text\": \"".utf8)
        content.append(contentsOf: [0xFF, 0x22, 0x7D, 0x0A])
        let path = work + "/order.jsonl"
        try content.write(to: URL(fileURLWithPath: path))
        for r in readers() {
            XCTAssertThrowsError(try r.read(path), r.name) { e in
                XCTAssertEqual("\(e)", "\(path):2: expected a JSON object {…}, got an array", r.name)
            }
        }
    }

    /// A field of the wrong type or missing names the field and the type it must have, the same for every reader of
    /// the format; the line number counts the blank lines before it.
    func testFieldErrorsNameFieldAndType() throws {
        let conv = "an array of {role, content} objects"
        let cases: [(TokenCacheKind, String, String)] = [
            (.pretrain, #"{"text": 5}"#, #"field "text" must be a string, got the number 5"#),
            (.pretrain, #"{"text": null}"#, #"field "text" must be a string, got null"#),
            (.pretrain, #"{"txt": "a"}"#, #"field "text" is missing (expected a string)"#),
            (.sft, #"{"conversations": "x"}"#, "field \"conversations\" must be \(conv), got a string"),
            (.sft, #"{"conversations": []}"#, "field \"conversations\" must be \(conv), got an empty array"),
            (.sft, #"{"conversations": [{"role": "user"}]}"#, #"field "conversations[0].content" is missing (expected a string)"#),
            (.sft, #"{"conversations": [{"role": "user", "content": "q"}, "a"]}"#, #"field "conversations[1]" must be a {role, content} object, got a string"#),
            (.sft, #"{"text": "q"}"#, "field \"conversations\" is missing (expected \(conv))"),
            (.dpo, #"{"chosen": 3, "rejected": []}"#, "field \"chosen\" must be \(conv), got the number 3"),
            (.dpo, #"{"chosen": [{"role": "user", "content": "q"}], "rejected": [{"content": "b"}]}"#, #"field "rejected[0].role" is missing (expected a string)"#),
            (.dpo, #"{"chosen": [{"role": "user", "content": "q"}], "rejected": [{"role": "user", "content": true}]}"#, #"field "rejected[0].content" must be a string, got a boolean"#),
        ]
        let all = readers()
        for (k, (format, bad, reason)) in cases.enumerated() {
            let path = try write([Self.good[format]!, "", Self.good[format]!, "   ", bad, Self.good[format]!].joined(separator: "\n") + "\n", "field\(k).jsonl")
            let mine = all.filter { $0.format == format }
            XCTAssertFalse(mine.isEmpty)
            for r in mine {
                XCTAssertThrowsError(try r.read(path), "\(r.name): \(bad)") { e in
                    XCTAssertEqual("\(e)", "\(path):5: \(reason)", r.name)
                }
            }
        }
    }

    /// Blank lines in the middle, at the end (several, with spaces), with CRLF endings and a last line without a newline
    /// are skipped by every reader: the samples are those of the file without them.
    func testBlankLinesAreSkippedEverywhere() throws {
        for r in readers() {
            let g = Self.good[r.format]!
            let variants = [
                [g, "", g, "  ", "\t", g].joined(separator: "\n") + "\n",     // middle
                [g, g, g].joined(separator: "\n") + "\n\n \n\n",               // trailing
                [g, "", g, "", g, ""].joined(separator: "\r\n") + "\r\n \r\n",  // CRLF
                "\n\n" + [g, g, g].joined(separator: "\n"),                     // leading, no final newline
            ]
            for (k, v) in variants.enumerated() {
                let path = try write(v, "\(r.name.replacingOccurrences(of: " ", with: "_"))-blank\(k).jsonl")
                let n = try r.read(path)
                if n >= 0 { XCTAssertEqual(n, 3, "\(r.name) variant \(k)") }
            }
        }
        // A file of blank lines only has no samples: the caches and the trainer refuse it (`encodeJSONL` yields nothing).
        let blank = try write("\n  \n\r\n", "blank.jsonl")
        for r in readers() {
            if r.name == "encodeJSONL" { XCTAssertEqual(try r.read(blank), 0); continue }
            XCTAssertThrowsError(try r.read(blank), r.name)
        }
    }
}
