import Foundation

/// Finds where a JSON text first goes wrong, as a JSON path plus line and column, for error messages
/// (Foundation's parser reports only a generic message). A small recursive-descent scanner over the bytes.
struct JSONLocator {
    private let b: [UInt8]
    private var i = 0
    private var path: [String] = []
    /// Arrays and objects open at `i`.
    private var depth = 0
    /// Foundation's JSONSerialization refuses deeper nesting; the scanner stops there too (and so never recurses
    /// further than this, whatever the input).
    static let maxDepth = 512
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
        // A path through hundreds of levels is shortened to its first and last steps.
        let shown = path.count <= 8 ? path.joined()
            : path.prefix(4).joined() + "…(\(path.count) levels)…" + path.suffix(2).joined()
        return Failure(path: "$" + shown, line: line, column: col, reason: reason)
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
        default: throw fail("unexpected \(Self.describeByte(b[i])), expected a value")
        }
    }

    /// A byte for a message: printable ASCII quoted, anything else (control characters, NUL, UTF-8 bytes) as hex, so
    /// that a message never carries raw control characters to a terminal.
    static func describeByte(_ c: UInt8) -> String {
        c >= 0x20 && c < 0x7F ? "character '\(Character(Unicode.Scalar(c)))'" : String(format: "byte 0x%02X", c)
    }

    /// Opens an array or object level; fails past `maxDepth`.
    private mutating func enter() throws {
        guard depth < Self.maxDepth else {
            throw fail("arrays and objects nested deeper than \(Self.maxDepth) levels (the JSON parser's limit)")
        }
        depth += 1
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
            if c < 0x20 { throw fail("\(Self.describeByte(c)) (a control character) in a string; write it as a \\u escape") }
            if c == UInt8(ascii: "\\") {
                i += 1
                guard i < b.count else { throw fail("unterminated escape") }
                switch b[i] {
                case UInt8(ascii: "u"):
                    guard let unit = hex4(at: i + 1) else { throw fail("invalid \\u escape") }
                    if (0xDC00...0xDFFF).contains(unit) {
                        i -= 1   // the column of the backslash
                        throw fail(String(format: "lone low surrogate \\u%04X (not preceded by a high surrogate)", unit))
                    }
                    if (0xD800...0xDBFF).contains(unit) {
                        guard i + 10 < b.count, b[i + 5] == UInt8(ascii: "\\"), b[i + 6] == UInt8(ascii: "u"),
                              let low = hex4(at: i + 7), (0xDC00...0xDFFF).contains(low) else {
                            i -= 1   // the column of the backslash
                            throw fail(String(format: "lone high surrogate \\u%04X (not followed by a low surrogate \\uDC00–\\uDFFF)", unit))
                        }
                        i += 6
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

    /// The value of the 4 hex digits at `k`, or nil.
    private func hex4(at k: Int) -> Int? {
        guard k + 3 < b.count else { return nil }
        var v = 0
        for c in b[k...(k + 3)] {
            guard let d = Character(Unicode.Scalar(c)).hexDigitValue else { return nil }
            v = v * 16 + d
        }
        return v
    }

    private mutating func object() throws {
        try enter(); defer { depth -= 1 }
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
        try enter(); defer { depth -= 1 }
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
