// Errors of the data pipeline. A bad jsonl line is a `JSONLError` (`FILE:LINE: reason`, module Tokenizers), thrown by
// the one jsonl reader (`JSONLReader`) every stage's token cache is built with.
import Foundation

/// Errors of the data pipeline about files and caches; every message names the file.
public enum DataError: Error, CustomStringConvertible, Equatable {
    case cannotOpen(path: String, reason: String)
    case badCache(path: String, reason: String)
    case empty(path: String)

    public var description: String {
        switch self {
        case let .cannotOpen(path, reason): return "\(path): cannot open: \(reason)"
        case let .badCache(path, reason): return "\(path): bad token cache: \(reason)"
        case let .empty(path): return "\(path): no samples"
        }
    }
}

extension DataError: LocalizedError { public var errorDescription: String? { description } }
