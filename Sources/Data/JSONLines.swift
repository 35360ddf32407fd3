// Streaming jsonl reading: a 1.6 GB pretrain file is read in fixed-size chunks, never whole.
import Foundation

/// Errors of the data pipeline; every message names the file and, where it applies, the 1-based line.
public enum DataError: Error, CustomStringConvertible, Equatable {
    case cannotOpen(path: String, reason: String)
    case malformedLine(path: String, line: Int, reason: String)
    case missingField(path: String, line: Int, field: String)
    /// A field that is present (or an element of one) but not of the type the format needs.
    case wrongType(path: String, line: Int, field: String, expected: String)
    case badCache(path: String, reason: String)
    case empty(path: String)

    public var description: String {
        switch self {
        case let .cannotOpen(path, reason): return "\(path): cannot open: \(reason)"
        case let .malformedLine(path, line, reason): return "\(path):\(line): malformed JSON line: \(reason)"
        case let .missingField(path, line, field): return "\(path):\(line): field \"\(field)\" missing or not a string"
        case let .wrongType(path, line, field, expected): return "\(path):\(line): field \"\(field)\" must be \(expected)"
        case let .badCache(path, reason): return "\(path): bad token cache: \(reason)"
        case let .empty(path): return "\(path): no samples"
        }
    }
}

extension DataError: LocalizedError { public var errorDescription: String? { description } }

/// Reads a jsonl file chunk by chunk and hands out complete lines (without the trailing `\n` / `\r\n`).
/// Memory use is bounded by `chunkBytes` plus the longest line.
public struct JSONLChunkReader {
    public let path: String
    private let handle: FileHandle
    private var carry: [UInt8] = []
    private var nextLine = 1
    private var atEOF = false
    public let chunkBytes: Int
    /// Bytes read from the file so far.
    public private(set) var bytesRead: UInt64 = 0

    public init(path: String, chunkBytes: Int = 8 << 20) throws {
        self.path = path
        self.chunkBytes = chunkBytes
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue {
            throw DataError.cannotOpen(path: path, reason: "is a directory; the data path must be a .jsonl file")
        }
        guard let h = FileHandle(forReadingAtPath: path) else {
            throw DataError.cannotOpen(path: path, reason: "no such file or not readable")
        }
        handle = h
    }

    /// The next group of lines, as (1-based line number, bytes); nil at the end of the file.
    /// Blank lines are returned too (the caller decides); the final line may lack a newline.
    public mutating func nextLines() throws -> [(line: Int, bytes: Data)]? {
        if atEOF && carry.isEmpty { return nil }
        var out: [(Int, Data)] = []
        while out.isEmpty {
            var chunk = Data()
            if !atEOF {
                chunk = try handle.read(upToCount: chunkBytes) ?? Data()
                if chunk.isEmpty { atEOF = true }
                bytesRead += UInt64(chunk.count)
            }
            var buf = carry
            buf.append(contentsOf: chunk)
            carry = []
            // Split on '\n'; everything after the last newline is carried (unless at EOF).
            var start = 0
            buf.withUnsafeBufferPointer { p in
                for i in 0 ..< p.count where p[i] == 0x0A {
                    var end = i
                    if end > start && p[end - 1] == 0x0D { end -= 1 }
                    out.append((nextLine, Data(p[start ..< end])))
                    nextLine += 1
                    start = i + 1
                }
            }
            if atEOF {
                if start < buf.count {
                    var end = buf.count
                    if buf[end - 1] == 0x0D { end -= 1 }
                    out.append((nextLine, Data(buf[start ..< end]))); nextLine += 1
                }
                if out.isEmpty { return nil }
            } else {
                carry = Array(buf[start...])
            }
        }
        return out
    }

    /// Parses one line as a JSON object. Throws `malformedLine` naming `path` and `line`.
    public static func object(of bytes: Data, path: String, line: Int) throws -> [String: Any] {
        let obj: Any
        do { obj = try JSONSerialization.jsonObject(with: bytes, options: []) } catch {
            let reason = bytes.isEmpty ? "empty line" : "not valid JSON"
            throw DataError.malformedLine(path: path, line: line, reason: reason)
        }
        guard let dict = obj as? [String: Any] else {
            throw DataError.malformedLine(path: path, line: line, reason: "not a JSON object")
        }
        return dict
    }

    /// Parses `{"text": …}` from one line. Throws `malformedLine` / `missingField` naming `path` and `line`.
    public static func text(of bytes: Data, field: String = "text", path: String, line: Int) throws -> String {
        guard let t = try object(of: bytes, path: path, line: line)[field] as? String else {
            throw DataError.missingField(path: path, line: line, field: field) }
        return t
    }

    /// Parses many lines on `threads` threads; throws the error of the FIRST bad line (in file order).
    public static func texts(of lines: [(line: Int, bytes: Data)], field: String = "text", path: String,
                             threads: Int) throws -> [String] {
        var results = [String](repeating: "", count: lines.count)
        var errors = [Error?](repeating: nil, count: lines.count)
        let workers = max(1, min(threads, lines.count))
        results.withUnsafeMutableBufferPointer { res in
            errors.withUnsafeMutableBufferPointer { errs in
                let resP = res, errP = errs
                DispatchQueue.concurrentPerform(iterations: workers) { w in
                    var i = w
                    while i < lines.count {
                        do { resP[i] = try text(of: lines[i].bytes, field: field, path: path, line: lines[i].line) }
                        catch { errP[i] = error }
                        i += workers
                    }
                }
            }
        }
        if let e = errors.first(where: { $0 != nil }) { throw e! }
        return results
    }
}
