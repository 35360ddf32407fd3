import Foundation

/// The `post_processor` of a `tokenizer.json`, as Hugging Face `tokenizers` applies it when special tokens are
/// requested (`add_special_tokens=True`); without them every processor only concatenates the pair's ids.
/// - `template`: `TemplateProcessing` — the `single` (one sequence) or `pair` template, whose pieces are either the
///   ids of a special token (its `special_tokens` entry's `ids`) or sequence A / B.
/// - `byteLevel`: `ByteLevel` — changes offsets only, never ids.
/// - `sequence`: `Sequence` — its processors in order (at most one of them a template).
/// Anything else (`BertProcessing`, `RobertaProcessing`, …) is refused by name when the file is loaded.
indirect enum PostProcessor: Equatable {
    enum Piece: Equatable { case special([Int32]), sequenceA, sequenceB }
    case template(single: [Piece], pair: [Piece]?)
    case byteLevel
    case sequence([PostProcessor])

    /// The ids of `a` (and `b`) with the special tokens this processor adds.
    /// - Throws: `TokenizerError.unsupported` for a pair when the template has no `pair` entry.
    func apply(_ a: [Int32], _ b: [Int32]?, file: String) throws -> [Int32] {
        switch self {
        case .byteLevel:
            return a + (b ?? [])
        case let .sequence(list):
            // At most one template (checked at load): it alone changes ids.
            for p in list { if case .template = p { return try p.apply(a, b, file: file) } }
            return a + (b ?? [])
        case let .template(single, pair):
            let pieces: [Piece]
            if b == nil { pieces = single } else {
                guard let pair else {
                    throw TokenizerError.unsupported(file: file, jsonPath: "$.post_processor.pair", feature: "encoding a pair without a pair template") }
                pieces = pair
            }
            var out: [Int32] = []
            for p in pieces {
                switch p {
                case let .special(ids): out += ids
                case .sequenceA: out += a
                case .sequenceB: out += b ?? []
                }
            }
            return out
        }
    }

    /// Every id the processor can add.
    var specialIds: [Int32] {
        switch self {
        case .byteLevel: return []
        case let .sequence(list): return list.flatMap(\.specialIds)
        case let .template(single, pair):
            return (single + (pair ?? [])).flatMap { p -> [Int32] in if case let .special(ids) = p { return ids } else { return [] } }
        }
    }

    /// Whether the processor adds any token to a single sequence.
    var addsTokensToSingle: Bool {
        switch self {
        case .byteLevel: return false
        case let .sequence(list): return list.contains { $0.addsTokensToSingle }
        case let .template(single, _): return single.contains { if case .special = $0 { return true } else { return false } }
        }
    }

    /// Parses a `post_processor` node.
    static func parse(_ n: JSONNode, file: String) throws -> PostProcessor {
        let type = try TokenizerFile.typeName(n)
        switch type {
        case "ByteLevel":
            return .byteLevel
        case "Sequence":
            let list = try n.require("processors").array().map { try parse($0, file: file) }
            let templates = list.filter { if case .template = $0 { return true } else { return false } }
            if templates.count > 1 {
                throw TokenizerError.unsupported(file: file, jsonPath: n.path + ".processors", feature: "post_processor Sequence with more than one TemplateProcessing") }
            if list.contains(where: { if case .sequence = $0 { return true } else { return false } }) {
                throw TokenizerError.unsupported(file: file, jsonPath: n.path + ".processors", feature: "post_processor Sequence nested in a Sequence") }
            return .sequence(list)
        case "TemplateProcessing":
            var specials: [String: [Int32]] = [:]
            if let st = try n.field("special_tokens") {
                for (key, v) in try st.object() {
                    let node = JSONNode(value: v, path: st.path + "[" + jsonQuote(key) + "]", file: file)
                    let ids = try node.require("ids").array().map { idn -> Int32 in
                        let id = try idn.int()
                        guard id >= 0 && id < Int(Int32.max) else { throw idn.fail("token id \(id) is negative or too large") }
                        return Int32(id)
                    }
                    specials[key] = ids
                }
            }
            func pieces(_ key: String, required: Bool) throws -> [Piece]? {
                guard let list = try n.field(key) else {
                    if required { throw TokenizerError.invalidField(file: file, jsonPath: n.path + "." + key, reason: "missing required field") }
                    return nil
                }
                return try list.array().map { p -> Piece in
                    if let s = try p.field("SpecialToken") {
                        let idNode = try s.require("id")
                        let id = try idNode.string()
                        guard let ids = specials[id] else { throw idNode.fail("special token \(jsonQuote(id)) is not in special_tokens") }
                        return .special(ids)
                    }
                    if let s = try p.field("Sequence") {
                        let idNode = try s.require("id")
                        switch try idNode.string() {
                        case "A": return .sequenceA
                        case "B": return .sequenceB
                        default: throw idNode.fail("expected \"A\" or \"B\"")
                        }
                    }
                    throw p.fail("expected {\"SpecialToken\": …} or {\"Sequence\": …}")
                }
            }
            return .template(single: try pieces("single", required: true)!, pair: try pieces("pair", required: false))
        default:
            throw TokenizerError.unsupported(file: file, jsonPath: n.path + ".type", feature: "post_processor \(type)")
        }
    }
}
