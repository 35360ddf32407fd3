import Foundation
import XCTest
@testable import Tokenizers
import TestSupport

/// The fast `{"text"}` extractor agrees with Foundation's JSON parser.
final class FastFieldTests: XCTestCase {
    func testAgreesWithJSONSerialization() throws {
        var lines: [Data] = []
        for f in ["corpus/pretrain.jsonl", "golden/tokenizer/tokenizer_cases.jsonl", "golden/tokenizer/bpe_train_input.jsonl"] {
            let d = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path(f)))
            lines += d.split(separator: 0x0A).map { Data($0) }
        }
        lines += [
            #"{"text": "a\"b\\c\/d\n\t\u00e9\ud83d\ude00\u4f60", "x": [1, {"text": "no"}]}"#,
            #"  { "id" : 3 , "text":"plain" , "more": {"a": "}"} }  "#,
            #"{"text": "first", "text": "second"}"#,
            #"{"nested": {"text": "inner"}, "text": "outer"}"#,
            #"{"text": ""}"#,
        ].map { Data($0.utf8) }
        var checked = 0
        for l in lines {
            let o = try JSONSerialization.jsonObject(with: l) as! [String: Any]
            XCTAssertEqual(FastField.string(l, field: "text"), o["text"] as? String, String(decoding: l.prefix(80), as: UTF8.self))
            checked += 1
        }
        XCTAssertGreaterThan(checked, 12000)
        // Not handled by the fast path (nil → full parser gives the error).
        for bad in [#"{"text": 5}"#, #"{"text": "x""#, #"["text"]"#, #"{"text": "\ud800"}"#, #"{"text": "a"} x"#] {
            XCTAssertNil(FastField.string(Data(bad.utf8), field: "text"), bad)
        }
    }
}
