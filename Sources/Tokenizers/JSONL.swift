import Foundation

/// Streaming reader for jsonl input (files or stdin), validating UTF-8 line by line.
public enum JSONLReader {
    /// Calls `body(line, lineNumber, byteCountIncludingNewline)` for each line of `handle` (1-based numbers; a
    /// trailing `\r` is dropped). Lines are checked to be valid UTF-8 first. Reads with read(2), so on a pipe
    /// each line is handled as soon as it arrives; `afterChunk` runs after the complete lines of each read
    /// (e.g. to flush answers to a co-process that waits for them).
    /// - Throws: `TokenizerError.invalidUTF8(source:line:byteOffset:)`, `.unreadable`, or whatever `body` throws.
    public static func forEachLine(handle: FileHandle, source: String,
                                   afterChunk: () throws -> Void = {},
                                   _ body: (Data, Int, Int) throws -> Void) throws {
        let fd = handle.fileDescriptor
        let cap = 8 << 20
        let chunk = UnsafeMutablePointer<UInt8>.allocate(capacity: cap)
        defer { chunk.deallocate() }
        var buffer = [UInt8]()
        var lineNumber = 0
        var eof = false
        while !eof {
            let got = read(fd, chunk, cap)
            if got < 0 {
                if errno == EINTR { continue }
                throw TokenizerError.unreadable(path: source, reason: String(cString: strerror(errno)))
            }
            if got == 0 { eof = true } else { buffer.append(contentsOf: UnsafeBufferPointer(start: chunk, count: got)) }
            let consumed: Int = try buffer.withUnsafeBufferPointer { bp in
                guard let base = bp.baseAddress else { return 0 }
                let n = bp.count
                var start = 0
                while start < n {
                    let found = memchr(base + start, 0x0A, n - start)
                    if found == nil && !eof { break }
                    let end = found.map { UnsafePointer<UInt8>($0.assumingMemoryBound(to: UInt8.self)) - base } ?? n
                    lineNumber += 1
                    var lineEnd = end
                    if lineEnd > start && base[lineEnd - 1] == 0x0D { lineEnd -= 1 }
                    let line = UnsafeBufferPointer(start: base + start, count: lineEnd - start)
                    if let bad = UTF8Lossy.firstInvalid(line) {
                        throw TokenizerError.invalidUTF8(source: source, line: lineNumber, byteOffset: bad)
                    }
                    try body(Data(buffer: line), lineNumber, end - start + (found == nil ? 0 : 1))
                    start = found == nil ? n : end + 1
                }
                return start
            }
            if consumed == buffer.count { buffer.removeAll(keepingCapacity: true) } else if consumed > 0 {
                buffer.removeFirst(consumed)
            }
            try afterChunk()
        }
    }

    /// Like `forEachLine(handle:…)` for a file path.
    public static func forEachLine(path: String, _ body: (Data, Int, Int) throws -> Void) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
            throw TokenizerError.unreadable(path: path, reason: "is a directory, expected a .jsonl file")
        }
        guard let h = FileHandle(forReadingAtPath: path) else {
            throw TokenizerError.unreadable(path: path, reason: "cannot open for reading")
        }
        defer { try? h.close() }
        try forEachLine(handle: h, source: path, body)
    }

    /// Parses one line as a JSON object.
    public static func object(of line: Data, source: String, line number: Int) throws -> [String: Any] {
        let v: Any
        do { v = try JSONSerialization.jsonObject(with: line, options: [.fragmentsAllowed]) } catch {
            if let f = JSONLocator.locate(line) {
                throw TokenizerError.badInputLine(source: source, line: number,
                    reason: "malformed JSON at \(f.path) (column \(f.column)): \(f.reason)")
            }
            let ns = error as NSError
            let detail = (ns.userInfo[NSDebugDescriptionErrorKey] as? String) ?? "\(error)"
            throw TokenizerError.badInputLine(source: source, line: number, reason: "malformed JSON: \(detail)")
        }
        guard let o = v as? [String: Any] else {
            throw TokenizerError.badInputLine(source: source, line: number, reason: "expected a JSON object")
        }
        return o
    }

    /// The `text` field of a `{"text": …}` line.
    public static func text(of line: Data, source: String, line number: Int) throws -> String {
        try string(field: "text", of: line, source: source, line: number)
    }

    /// The string member `field` of a JSON object line (fast path; the full parser only on unusual lines).
    public static func string(field: String, of line: Data, source: String, line number: Int) throws -> String {
        if let s = FastField.string(line, field: field) { return s }
        let o = try object(of: line, source: source, line: number)
        guard let t = o[field] as? String else {
            throw TokenizerError.badInputLine(source: source, line: number, reason: "$.\(field): expected a string field \"\(field)\"")
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

    /// Whether the line holds only whitespace.
    public static func isBlank(_ line: Data) -> Bool {
        line.allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }
    }
}
