// The one jsonl reader of SwiftMind: every training stage's token cache, the tokenizer trainer, `encodeJSONL` and the
// stdin tools read lines through `JSONLReader` and report bad lines with `JSONLError` (`FILE:LINE: reason`).
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A bad jsonl input: `FILE:LINE: reason` for a line (1-based, blank lines counted), `FILE: reason` for the file itself
/// (cannot be opened, is a directory). The reason names the field and the type it must have, or what is wrong with the
/// JSON and where.
public struct JSONLError: Error, CustomStringConvertible, Equatable, LocalizedError {
    /// The file path as given (or `stdin`).
    public let path: String
    /// 1-based line number; nil for an error of the whole file.
    public let line: Int?
    public let reason: String

    public init(path: String, line: Int?, reason: String) {
        self.path = path; self.line = line; self.reason = reason
    }

    public var description: String { line.map { "\(path):\($0): \(reason)" } ?? "\(path): \(reason)" }
    public var errorDescription: String? { description }

    /// `field "F" must be EXPECTED, got KIND` for a field of the wrong type, `field "F" is missing (expected EXPECTED)`
    /// for an absent one. `field` is a path below the line's object, e.g. `conversations[2].content`; `expected` a type
    /// phrase such as `a string` or `an array of {role, content} objects`; `value` the value found (nil when absent).
    public static func field(_ field: String, expected: String, got value: Any?, path: String, line: Int) -> JSONLError {
        guard let value else {
            return JSONLError(path: path, line: line, reason: "field \"\(field)\" is missing (expected \(expected))")
        }
        var kind = JSONNode.kind(value)
        if let a = value as? [Any], a.isEmpty { kind = "an empty array" }
        return JSONLError(path: path, line: line, reason: "field \"\(field)\" must be \(expected), got \(kind)")
    }

    /// The line is not valid UTF-8 from byte `byteOffset` (0-based within the line), which is character `column`
    /// (1-based, counted as the malformed-JSON messages count columns). The message gives both 1-based.
    public static func invalidUTF8(path: String, line: Int, byteOffset: Int, column: Int) -> JSONLError {
        JSONLError(path: path, line: line, reason: "invalid UTF-8 at column \(column) of the line (byte \(byteOffset + 1))")
    }

    /// A line whose value is not an object (`kind` in `JSONNode.kind`'s words); an array on line 1 gets a hint about
    /// JSON array files.
    public static func notAnObject(kind: String, path: String, line: Int) -> JSONLError {
        JSONLError(path: path, line: line, reason: "expected a JSON object {…}, got \(kind)" +
            (kind == "an array" && line == 1 ? " (a JSON array file? jsonl has one object per line: `jq -c '.[]' FILE > FILE.jsonl` converts one)" : ""))
    }

    /// The 1-based character column of byte `byteOffset` of `line` (characters = bytes that are not UTF-8
    /// continuation bytes, as `JSONLocator` counts them).
    static func column(of byteOffset: Int, in line: UnsafeBufferPointer<UInt8>) -> Int {
        var c = 1
        for k in 0..<min(byteOffset, line.count) where line[k] & 0xC0 != 0x80 { c += 1 }
        return c
    }

    /// What a JSON value starting with byte `b` is, in `JSONNode.kind`'s words; nil for `{` and bytes no value starts with.
    static func kindOfValue(startingWith b: UInt8) -> String? {
        switch b {
        case UInt8(ascii: "["): return "an array"
        case UInt8(ascii: "\""): return "a string"
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return "a number"
        case UInt8(ascii: "t"), UInt8(ascii: "f"): return "a boolean"
        case UInt8(ascii: "n"): return "null"
        default: return nil
        }
    }
}

/// One non-blank line of a jsonl input: its 1-based number in the file and its bytes (without `\n` / `\r\n`),
/// checked to be valid UTF-8.
public struct JSONLLine: Sendable {
    public let number: Int
    public let bytes: Data
}

/// Streaming reader of jsonl files and pipes: reads `chunkBytes` at a time with read(2) (memory is the chunk plus the
/// longest line, whatever the file size), splits lines on `\n` (a trailing `\r` is dropped), numbers them from 1
/// (blank lines counted), skips blank lines (only spaces, tabs, `\r`) wherever they are — the trailing ones included —
/// and checks every other line is valid UTF-8. On a pipe the lines of each read are handed out as soon as they arrive.
public final class JSONLReader {
    /// The name used in messages: the path, or e.g. `stdin`.
    public let path: String
    public let chunkBytes: Int
    /// Bytes read so far.
    public private(set) var bytesRead: UInt64 = 0
    /// Lines seen so far, blank ones included (after the end: the file's line count).
    public private(set) var lineCount = 0
    private let fd: Int32
    private let ownsDescriptor: Bool
    private var buffer: [UInt8] = []
    private var atEOF = false
    /// The buffer starts with a line that failed the UTF-8 check after good lines were handed out: the next call
    /// throws for it without reading.
    private var badLinePending = false

    /// Opens `path` for reading.
    /// - Throws: `JSONLError` (no line) when the path is a directory or cannot be opened.
    public init(path: String, chunkBytes: Int = 8 << 20) throws {
        var st = stat()
        if stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
            throw JSONLError(path: path, line: nil, reason: "cannot open: is a directory, expected a .jsonl file")
        }
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw JSONLError(path: path, line: nil, reason: "cannot open: \(String(cString: strerror(errno)))") }
        self.path = path; self.fd = fd; self.ownsDescriptor = true; self.chunkBytes = max(1, chunkBytes)
    }

    /// Reads an open descriptor (e.g. `FileHandle.standardInput.fileDescriptor`), named `source` in messages; the
    /// descriptor is not closed.
    public init(fileDescriptor: Int32, source: String, chunkBytes: Int = 8 << 20) {
        path = source; fd = fileDescriptor; ownsDescriptor = false; self.chunkBytes = max(1, chunkBytes)
    }

    deinit { if ownsDescriptor { close(fd) } }

    /// The non-blank lines completed by the next read(s), in file order (at least one); nil at the end of the input.
    /// The lines before a bad one are handed out first; the next call throws for it.
    /// - Throws: `JSONLError` for a line that is not valid UTF-8 or a read that fails.
    public func nextLines() throws -> [JSONLLine]? {
        var out: [JSONLLine] = []
        while out.isEmpty {
            if badLinePending {
                badLinePending = false
            } else {
                if atEOF { return nil }
                try readChunk()
            }
            try takeLines(into: &out)
        }
        return out
    }

    /// Appends up to `chunkBytes` read from the input to the buffer (sets `atEOF` on a read of 0 bytes).
    private func readChunk() throws {
        let kept = buffer.count
        // Exactly the carried partial line plus one chunk (appending alone would double the capacity).
        if buffer.capacity < kept + chunkBytes { buffer.reserveCapacity(kept + chunkBytes) }
        buffer.append(contentsOf: repeatElement(0, count: chunkBytes))
        var got = 0
        repeat {
            got = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + kept, chunkBytes) }
        } while got < 0 && errno == EINTR
        if got < 0 {
            buffer.removeLast(chunkBytes)
            throw JSONLError(path: path, line: nil, reason: "cannot read: \(String(cString: strerror(errno)))")
        }
        buffer.removeLast(chunkBytes - got)
        bytesRead += UInt64(got)
        if got == 0 { atEOF = true }
    }

    /// Moves the complete lines of the buffer (at the end of the input: all of it) to `out`, numbering every line and
    /// skipping blank ones. A line that is not valid UTF-8 throws when it is the first non-blank line taken; after
    /// good lines it is left at the start of the buffer for the next call.
    private func takeLines(into out: inout [JSONLLine]) throws {
        let consumed: Int = try buffer.withUnsafeBufferPointer { bp in
            guard let base = bp.baseAddress else { return 0 }
            let n = bp.count
            var start = 0
            while start < n {
                let found = memchr(base + start, 0x0A, n - start)
                if found == nil && !atEOF {
                    // An incomplete line that already cannot be a JSON object (a whole-file JSON array, a common
                    // mistake): refuse it now rather than read a multi-GB "line" into memory first.
                    if out.isEmpty, let kind = JSONLReader.nonObjectStart(UnsafeBufferPointer(start: base + start, count: n - start)) {
                        throw JSONLError.notAnObject(kind: kind, path: path, line: lineCount + 1)
                    }
                    break
                }
                let end = found.map { UnsafePointer<UInt8>($0.assumingMemoryBound(to: UInt8.self)) - base } ?? n
                var lineEnd = end
                if lineEnd > start && base[lineEnd - 1] == 0x0D { lineEnd -= 1 }
                let line = UnsafeBufferPointer(start: base + start, count: lineEnd - start)
                if !JSONLReader.isBlank(line) {
                    if let bad = UTF8Lossy.firstInvalid(line) {
                        if out.isEmpty {
                            throw JSONLError.invalidUTF8(path: path, line: lineCount + 1, byteOffset: bad,
                                                         column: JSONLError.column(of: bad, in: line)) }
                        badLinePending = true
                        return start
                    }
                    out.append(JSONLLine(number: lineCount + 1, bytes: Data(buffer: line)))
                }
                lineCount += 1
                start = found == nil ? n : end + 1
            }
            return start
        }
        if consumed == buffer.count { buffer.removeAll(keepingCapacity: true) } else if consumed > 0 {
            buffer.removeFirst(consumed)
        }
    }

    /// The kind of JSON value an (incomplete) line starts with when it is not an object: its first byte after
    /// blanks and a UTF-8 byte order mark; nil when it starts an object, is still blank, or starts with no value.
    static func nonObjectStart(_ line: UnsafeBufferPointer<UInt8>) -> String? {
        var i = 0
        if line.count >= 3 && line[0] == 0xEF && line[1] == 0xBB && line[2] == 0xBF { i = 3 }
        while i < line.count, line[i] == 0x20 || line[i] == 0x09 || line[i] == 0x0D { i += 1 }
        return i < line.count ? JSONLError.kindOfValue(startingWith: line[i]) : nil
    }

    /// Calls `body` for each non-blank line of the input in order; `afterChunk` runs after the lines of each read
    /// (e.g. to flush answers to a co-process that waits for them).
    /// - Throws: what `nextLines()` or `body` throws.
    public func forEachLine(afterChunk: () throws -> Void = {}, _ body: (JSONLLine) throws -> Void) throws {
        while let lines = try nextLines() {
            for l in lines { try body(l) }
            try afterChunk()
        }
    }

    /// `JSONLReader(path:).forEachLine(body)`.
    public static func forEachLine(path: String, _ body: (JSONLLine) throws -> Void) throws {
        try JSONLReader(path: path).forEachLine(body)
    }

    /// Parses one line as a JSON object.
    /// - Throws: `JSONLError` saying where the JSON goes wrong (column and JSON path), or that the line is not an object.
    public static func object(of line: JSONLLine, path: String) throws -> [String: Any] {
        // Not an object from its first byte: said without parsing (a long array line would cost many times its size).
        if let kind = line.bytes.withUnsafeBytes({ nonObjectStart($0.bindMemory(to: UInt8.self)) }) {
            throw JSONLError.notAnObject(kind: kind, path: path, line: line.number)
        }
        let v: Any
        do { v = try JSONSerialization.jsonObject(with: line.bytes, options: [.fragmentsAllowed]) } catch {
            if let f = JSONLocator.locate(line.bytes, end: "the line") {
                let at = f.path == "$" ? "" : " in \(f.path)"
                throw JSONLError(path: path, line: line.number, reason: "malformed JSON at column \(f.column)\(at): \(f.reason)")
            }
            let detail = ((error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String) ?? "rejected by the JSON parser"
            throw JSONLError(path: path, line: line.number, reason: "malformed JSON: \(detail)")
        }
        guard let o = v as? [String: Any] else {
            throw JSONLError.notAnObject(kind: JSONNode.kind(v), path: path, line: line.number)
        }
        return o
    }

    /// The string member `field` of a JSON object line (fast path; the full parser only on unusual lines).
    /// - Throws: `JSONLError` for malformed JSON or a missing / non-string field.
    public static func string(field: String, of line: JSONLLine, path: String) throws -> String {
        if let s = FastField.string(line.bytes, field: field) { return s }
        let o = try object(of: line, path: path)
        guard let t = o[field] as? String else {
            throw JSONLError.field(field, expected: "a string", got: o[field], path: path, line: line.number)
        }
        return t
    }

    /// The integer a `JSONSerialization` value holds: a JSON number with no fractional part and magnitude below
    /// 2⁵³ (exact in a double); nil for anything else, including `true`/`false` (which Foundation bridges to
    /// NSNumber 1/0) and numbers like `1.5` or `1e300`.
    public static func integer(_ v: Any) -> Int64? {
        guard let n = v as? NSNumber, !JSONNode.isBoolean(v) else { return nil }
        let d = n.doubleValue
        guard d == d.rounded(), abs(d) < 9.007_199_254_740_992e15 else { return nil }
        return Int64(d)
    }

    /// What kind of JSON value `v` is, for error messages: "a boolean", "a number", "a string", "null", …
    public static func kind(_ v: Any) -> String { JSONNode.kind(v) }

    /// Whether the line holds only spaces, tabs and `\r` (the blank lines every reader skips).
    public static func isBlank(_ line: UnsafeBufferPointer<UInt8>) -> Bool {
        for b in line where b != 0x20 && b != 0x09 && b != 0x0D { return false }
        return true
    }
}
