import Foundation

/// Streaming reader for jsonl input (files or stdin), validating UTF-8 line by line.
public enum JSONLReader {
    /// Calls `body(line, lineNumber, byteCountIncludingNewline)` for each line of `handle` (1-based numbers; a
    /// trailing `\r` is dropped). Lines are checked to be valid UTF-8 first.
    /// - Throws: `TokenizerError.invalidUTF8(source:line:byteOffset:)`, or whatever `body` throws.
    public static func forEachLine(handle: FileHandle, source: String,
                                   _ body: (Data, Int, Int) throws -> Void) throws {
        var buffer = Data()
        var lineNumber = 0
        var eof = false
        while !eof {
            let chunk = handle.readData(ofLength: 8 << 20)
            if chunk.isEmpty { eof = true } else { buffer.append(chunk) }
            var start = buffer.startIndex
            while true {
                let nl = buffer[start...].firstIndex(of: UInt8(ascii: "\n"))
                if nl == nil && !eof { break }
                let end = nl ?? buffer.endIndex
                if nl == nil && start == end { break }
                lineNumber += 1
                var lineEnd = end
                if lineEnd > start && buffer[lineEnd - 1] == UInt8(ascii: "\r") { lineEnd -= 1 }
                let line = buffer[start..<lineEnd]
                if let bad = line.withUnsafeBytes({ UTF8Lossy.firstInvalid($0.bindMemory(to: UInt8.self)) }) {
                    throw TokenizerError.invalidUTF8(source: source, line: lineNumber, byteOffset: bad)
                }
                try body(Data(line), lineNumber, end - start + (nl == nil ? 0 : 1))
                if let nl = nl { start = nl + 1 } else { start = end; break }
            }
            buffer = Data(buffer[start...])
        }
    }

    /// Like `forEachLine(handle:…)` for a file path.
    public static func forEachLine(path: String, _ body: (Data, Int, Int) throws -> Void) throws {
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
        let o = try object(of: line, source: source, line: number)
        guard let t = o["text"] as? String else {
            throw TokenizerError.badInputLine(source: source, line: number, reason: "$.text: expected a string field \"text\"")
        }
        return t
    }

    /// Whether the line holds only whitespace.
    public static func isBlank(_ line: Data) -> Bool {
        line.allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }
    }
}
