import Foundation
import XCTest
@testable import Tokenizers
import TestSupport

/// What the tokenizer tests load from `Tests/Fixtures/` (paths from `Fixtures` in Tests/TestSupport).
extension Fixtures {
    /// `Tests/Fixtures/tokenizers/minimind`.
    static var miniMindDir: String { miniMindTokenizer }

    /// The rows of the jsonl file `Tests/Fixtures/<rel>`.
    static func jsonl(_ rel: String) throws -> [[String: Any]] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path(rel)))
        return try data.split(separator: UInt8(ascii: "\n")).map {
            try JSONSerialization.jsonObject(with: Data($0)) as! [String: Any]
        }
    }

    /// MiniMind2's tokenizer, loaded once; a missing or broken file fails each test that asks, not the whole run.
    static func miniMind() throws -> Tokenizer { try miniMindLoad.get() }
    private static let miniMindLoad = Result { try Tokenizer.load(miniMindTokenizer) }
}

func ints(_ a: Any?) -> [Int32] { (a as! [Any]).map { Int32(($0 as! NSNumber).intValue) } }
