import Foundation

/// Finds where a JSON text first goes wrong, as a JSON path plus line and column, for error messages
/// (Foundation's parser reports only a generic message). A small recursive-descent scanner over the bytes.
struct JSONLocator {
    private let b: [UInt8]
    private var i = 0
    private var path: [String] = []
    /// What the text is, for "unexpected end of …" ("file", or "the line" for a jsonl line).
    private var end = "file"

    struct Failure: Error { let path: String; let line: Int; let column: Int; let reason: String }

    init(_ data: Data) { b = [UInt8](data) }

    /// Nil when the text is syntactically valid JSON. `end` names the text in "unexpected end of …".
    static func locate(_ data: Data, end: String = "file") -> Failure? {
        var l = JSONLocator(data)
        l.end = end
        do {
            l.skipWS()
            try l.value()
            l.skipWS()
            if l.i < l.b.count { throw l.fail("unexpected text after the top-level value") }
            return nil
        } catch let f as Failure { return f } catch { return nil }
    }

    private func fail(_ reason: String) -> Failure {
        var line = 1, col = 1
        for k in 0..<min(i, b.count) { if b[k] == 0x0A { line += 1; col = 1 } else if b[k] & 0xC0 != 0x80 { col += 1 } }
        return Failure(path: "$" + path.joined(), line: line, column: col, reason: reason)
    }

    private mutating func skipWS() {
        while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
    }

    private mutating func value() throws {
        guard i < b.count else { throw fail("unexpected end of \(end), expected a value") }
        switch b[i] {
        case UInt8(ascii: "{"): try object()
        case UInt8(ascii: "["): try array()
        case UInt8(ascii: "\""): _ = try string()
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try number()
        default: throw fail("unexpected character '\(Character(Unicode.Scalar(b[i])))', expected a value")
        }
    }

    private mutating func literal(_ s: String) throws {
        for c in s.utf8 {
            guard i < b.count, b[i] == c else { throw fail("invalid literal, expected \(s)") }
            i += 1
        }
    }

    private mutating func number() throws {
        let start = i
        if b[i] == UInt8(ascii: "-") { i += 1 }
        var digits = 0
        while i < b.count, (0x30...0x39).contains(b[i]) || b[i] == 0x2E || b[i] == 0x65 || b[i] == 0x45 || b[i] == 0x2B || b[i] == 0x2D {
            i += 1; digits += 1
        }
        if digits == 0 { i = start; throw fail("invalid number") }
    }

    private mutating func string() throws -> String {
        i += 1
        var out = [UInt8]()
        while true {
            guard i < b.count else { throw fail("unterminated string") }
            let c = b[i]
            if c == UInt8(ascii: "\"") { i += 1; break }
            if c < 0x20 { throw fail("control character in string") }
            if c == UInt8(ascii: "\\") {
                i += 1
                guard i < b.count else { throw fail("unterminated escape") }
                switch b[i] {
                case UInt8(ascii: "u"):
                    guard i + 4 < b.count, b[(i + 1)...(i + 4)].allSatisfy({ Character(Unicode.Scalar($0)).isHexDigit }) else {
                        throw fail("invalid \\u escape")
                    }
                    i += 5
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                     UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    out.append(b[i]); i += 1
                default: throw fail("invalid escape")
                }
                continue
            }
            out.append(c); i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    private mutating func object() throws {
        i += 1
        skipWS()
        if i < b.count, b[i] == UInt8(ascii: "}") { i += 1; return }
        while true {
            skipWS()
            guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("expected a member name") }
            let key = try string()
            skipWS()
            guard i < b.count, b[i] == UInt8(ascii: ":") else { throw fail("expected ':' after member name") }
            i += 1
            skipWS()
            path.append(key.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" } && !key.isEmpty ? "." + key : "[" + jsonQuote(key) + "]")
            try value()
            path.removeLast()
            skipWS()
            guard i < b.count else { throw fail("unexpected end of \(end) inside an object") }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            if b[i] == UInt8(ascii: "}") { i += 1; return }
            throw fail("expected ',' or '}' in an object")
        }
    }

    private mutating func array() throws {
        i += 1
        skipWS()
        if i < b.count, b[i] == UInt8(ascii: "]") { i += 1; return }
        var k = 0
        while true {
            skipWS()
            path.append("[\(k)]")
            try value()
            path.removeLast()
            skipWS()
            guard i < b.count else { throw fail("unexpected end of \(end) inside an array") }
            if b[i] == UInt8(ascii: ",") { i += 1; k += 1; continue }
            if b[i] == UInt8(ascii: "]") { i += 1; return }
            throw fail("expected ',' or ']' in an array")
        }
    }
}
