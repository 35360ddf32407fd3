import Foundation
import XCTest
@testable import Tokenizers
import TestSupport

/// tokenizer.json `post_processor`: TemplateProcessing (single and pair, its special tokens), ByteLevel and Sequence
/// applied when special tokens are requested, as Hugging Face `tokenizers` does; other processors refused by name.
final class PostProcessorTests: XCTestCase {
    /// MiniMind's tokenizer.json with `post_processor` replaced by `pp` (nil = removed).
    func tokenizer(postProcessor pp: Any?) throws -> (Tokenizer, Data) {
        var root = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.miniMindDir + "/tokenizer.json"))) as! [String: Any]
        root["post_processor"] = pp ?? NSNull()
        let data = try JSONSerialization.data(withJSONObject: root)
        return (try Tokenizer(tokenizerJSON: data, config: nil), data)
    }

    static let template: [String: Any] = [
        "type": "TemplateProcessing",
        "single": [["SpecialToken": ["id": "<|im_start|>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
        "pair": [["SpecialToken": ["id": "<|im_start|>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]],
                 ["SpecialToken": ["id": "<|im_end|>", "type_id": 0]], ["Sequence": ["id": "B", "type_id": 1]],
                 ["SpecialToken": ["id": "<|im_end|>", "type_id": 1]]],
        "special_tokens": ["<|im_start|>": ["id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]],
                           "<|im_end|>": ["id": "<|im_end|>", "ids": [2], "tokens": ["<|im_end|>"]]],
    ]
    static let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]

    func testTemplateSequenceAndByteLevel() throws {
        let (t, _) = try tokenizer(postProcessor: PostProcessorTests.template)
        let a = t.encode("Hello world"), b = t.encode("你好")
        XCTAssertEqual(t.encode("Hello world", addSpecialTokens: true), [1] + a)
        XCTAssertEqual(t.encode("Hello world", addSpecialTokens: false), a)
        XCTAssertEqual(try t.encode("Hello world", pair: "你好", addSpecialTokens: true), [1] + a + [2] + b + [2])
        XCTAssertEqual(try t.encode("Hello world", pair: "你好", addSpecialTokens: false), a + b)
        XCTAssertEqual(t.applyPostProcessor(a), [1] + a)
        XCTAssertTrue(t.addsSpecialTokens)

        let (s, _) = try tokenizer(postProcessor: ["type": "Sequence", "processors": [PostProcessorTests.byteLevel, PostProcessorTests.template]])
        XCTAssertEqual(s.encode("Hello world", addSpecialTokens: true), [1] + a)
        XCTAssertEqual(try s.encode("Hello world", pair: "你好", addSpecialTokens: true), [1] + a + [2] + b + [2])

        for pp in [PostProcessorTests.byteLevel as Any?, nil] {
            let (u, _) = try tokenizer(postProcessor: pp)
            XCTAssertEqual(u.encode("Hello world", addSpecialTokens: true), a)
            XCTAssertEqual(try u.encode("Hello world", pair: "你好", addSpecialTokens: true), a + b)
            XCTAssertFalse(u.addsSpecialTokens)
        }
        // A template without "pair": single sequences work, a pair is refused by name.
        var noPair = PostProcessorTests.template; noPair["pair"] = nil
        let (np, _) = try tokenizer(postProcessor: noPair)
        XCTAssertEqual(np.encode("x", addSpecialTokens: true), [1] + np.encode("x"))
        XCTAssertThrowsError(try np.encode("x", pair: "y", addSpecialTokens: true)) { XCTAssertTrue("\($0)".contains("pair"), "\($0)") }
    }

    func testUnsupportedAndBadProcessorsAreNamed() throws {
        XCTAssertThrowsError(try tokenizer(postProcessor: ["type": "BertProcessing", "sep": ["[SEP]", 2], "cls": ["[CLS]", 1]])) { e in
            XCTAssertTrue("\(e)".contains("post_processor BertProcessing") && "\(e)".contains("$.post_processor.type"), "\(e)")
        }
        XCTAssertThrowsError(try tokenizer(postProcessor: ["type": "Sequence", "processors": [PostProcessorTests.template, PostProcessorTests.template]])) { e in
            XCTAssertTrue("\(e)".contains("more than one TemplateProcessing"), "\(e)")
        }
        var unknownSpecial = PostProcessorTests.template
        unknownSpecial["special_tokens"] = [String: Any]()
        XCTAssertThrowsError(try tokenizer(postProcessor: unknownSpecial)) { e in
            XCTAssertTrue("\(e)".contains("is not in special_tokens") && "\(e)".contains("$.post_processor.single[0].SpecialToken.id"), "\(e)")
        }
        var badId = PostProcessorTests.template
        badId["special_tokens"] = ["<|im_start|>": ["id": "<|im_start|>", "ids": [99999], "tokens": ["x"]],
                                   "<|im_end|>": ["id": "<|im_end|>", "ids": [2], "tokens": ["<|im_end|>"]]]
        XCTAssertThrowsError(try tokenizer(postProcessor: badId)) { XCTAssertTrue("\($0)".contains("99999"), "\($0)") }
    }

    /// The same files through Hugging Face `tokenizers` (when python has it): identical ids with and without special
    /// tokens, for single sequences and pairs.
    func testMatchesHuggingFaceTokenizers() throws {
        let texts = ["Hello world", "你好，世界", "<|im_start|>user\nhi<|im_end|>", "  spaces  ", ""]
        for pp in [PostProcessorTests.template, ["type": "Sequence", "processors": [PostProcessorTests.byteLevel, PostProcessorTests.template]] as [String: Any],
                   PostProcessorTests.byteLevel] {
            let (t, data) = try tokenizer(postProcessor: pp)
            let file = NSTemporaryDirectory() + "swiftmind-pp-\(getpid()).json"
            try data.write(to: URL(fileURLWithPath: file))
            defer { try? FileManager.default.removeItem(atPath: file) }
            let script = """
            import sys, json
            try:
                from tokenizers import Tokenizer
            except ImportError:
                print("SKIP"); sys.exit(0)
            t = Tokenizer.from_file(sys.argv[1])
            texts = json.loads(sys.argv[2])
            out = []
            for a in texts:
                for b in [None, "second part"]:
                    for s in [False, True]:
                        out.append(t.encode(a, b, add_special_tokens=s).ids if b is not None else t.encode(a, add_special_tokens=s).ids)
            print(json.dumps(out))
            """
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = ["python3", "-c", script, file, String(decoding: try JSONSerialization.data(withJSONObject: texts), as: UTF8.self)]
            let pipe = Pipe(); p.standardOutput = pipe; p.standardError = FileHandle.nullDevice
            do { try p.run() } catch { throw XCTSkip("python3 not available") }
            let out = pipe.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            if String(decoding: out.prefix(4), as: UTF8.self) == "SKIP" || p.terminationStatus != 0 {
                throw XCTSkip("python tokenizers not installed (pip install tokenizers): skipped")
            }
            let want = (try JSONSerialization.jsonObject(with: out) as! [[Int]]).map { $0.map(Int32.init) }
            var k = 0
            for a in texts {
                for b in [nil, "second part"] as [String?] {
                    for s in [false, true] {
                        let got = try b.map { try t.encode(a, pair: $0, addSpecialTokens: s) } ?? t.encode(a, addSpecialTokens: s)
                        XCTAssertEqual(got, want[k], "\(pp["type"]!) \(a.debugDescription) pair \(b ?? "-") special \(s)")
                        k += 1
                    }
                }
            }
        }
    }
}
