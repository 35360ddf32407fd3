import Foundation
import XCTest
@testable import Tokenizers

/// Locates `../shared` from this file's path: <package root>/Tests/TokenizersTests/Fixtures.swift.
enum Fixtures {
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let shared: URL = packageRoot.deletingLastPathComponent().appendingPathComponent("shared")
    static func path(_ rel: String) -> String { shared.appendingPathComponent(rel).path }
    static let miniMindDir = path("tokenizers/minimind")

    static func jsonl(_ rel: String) throws -> [[String: Any]] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path(rel)))
        return try data.split(separator: UInt8(ascii: "\n")).map {
            try JSONSerialization.jsonObject(with: Data($0)) as! [String: Any]
        }
    }

    static var miniMind: Tokenizer = try! Tokenizer.load(miniMindDir)
}

func ints(_ a: Any?) -> [Int32] { (a as! [Any]).map { Int32(($0 as! NSNumber).intValue) } }
