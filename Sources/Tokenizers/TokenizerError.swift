import Foundation

/// Errors thrown by the Tokenizers module. Each case carries enough context (file, JSON path, line, id) to
/// locate the problem without a debugger.
public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    /// A file could not be read. `path` is the file system path.
    case unreadable(path: String, reason: String)
    /// A file is not valid JSON.
    case malformedJSON(file: String, reason: String)
    /// A JSON value has the wrong type or an invalid value. `jsonPath` is like `$.model.merges[12]`.
    case invalidField(file: String, jsonPath: String, reason: String)
    /// A feature this module does not implement; `jsonPath` names the field that asks for it.
    case unsupported(file: String, jsonPath: String, feature: String)
    /// A merge names a symbol that is not in the vocabulary.
    case unknownMergeSymbol(file: String, jsonPath: String, symbol: String)
    /// `decode` got an id outside `0..<vocabSize` (or an id no token has).
    case idOutOfRange(id: Int64, vocabSize: Int)
    /// A model generated an id its tokenizer has no token for: the model's `vocab_size` exceeds the tokenizer's ids
    /// (`Tokenizer.decodingGenerated`).
    case generatedIdOutOfRange(id: Int64, tokenizerVocabSize: Int, modelVocabSize: Int)
    /// The chat template is not one this module can render, or the messages cannot be rendered.
    case chatTemplate(String)
    /// Training failed (bad arguments or input).
    case training(String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "cannot read \(path): \(reason)"
        case let .malformedJSON(file, reason): return "\(file): malformed JSON: \(reason)"
        case let .invalidField(file, jsonPath, reason): return "\(file): \(jsonPath): \(reason)"
        case let .unsupported(file, jsonPath, feature):
            return "\(file): \(jsonPath): unsupported: \(feature) (this tokenizer implements byte-level BPE only)"
        case let .unknownMergeSymbol(file, jsonPath, symbol):
            return "\(file): \(jsonPath): merge names symbol \(jsonQuote(symbol)) which is not in model.vocab"
        case let .idOutOfRange(id, vocabSize): return "token id \(id) is out of range (vocab size \(vocabSize))"
        case let .generatedIdOutOfRange(id, t, m):
            return "the model generated token id \(id), which its tokenizer does not have: the tokenizer has \(t) ids, the model's vocab_size is \(m) (a tokenizer that is not the model's own, or a padded vocabulary whose spare ids the model sampled; transformers would decode such an id to nothing)"
        case let .chatTemplate(msg): return "chat template: \(msg)"
        case let .training(msg): return "tokenizer training: \(msg)"
        }
    }
}

/// JSON string literal for `s` (UTF-8 kept as is, control characters escaped), as serde_json writes it.
public func jsonQuote(_ s: String) -> String {
    var out = "\""
    out.reserveCapacity(s.utf8.count + 2)
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case "\u{08}": out += "\\b"
        case "\u{0C}": out += "\\f"
        default:
            if u.value < 0x20 {
                out += String(format: "\\u%04x", u.value)
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    out += "\""
    return out
}
