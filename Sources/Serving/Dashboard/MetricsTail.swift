// Incremental reader of a run's OUT/metrics.jsonl for the training dashboard: remembers the byte offset it has read
// up to, so each poll reads only what the trainer appended since; a last line without its newline waits.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Follows one `metrics.jsonl` while a run appends to it (thread-safe).
///
/// Only the position of each row is kept in memory (16 bytes a row), not the row: `rows(since:)` reads them back
/// from the file. A line that is not a JSON object (a line torn by a kill, dropped on `--resume`) is skipped. When
/// the file is replaced (another inode, as `--resume` does when it drops the steps after its checkpoint), removed,
/// becomes shorter than what was read, or is rewritten in place (its first bytes, or the newline ending what was read,
/// are no longer what was read — a recreated out-dir can reuse the inode), the tail starts over from byte 0 and
/// `generation` goes up, so clients drop what they hold and read again from row 0. A row read back that no longer
/// parses as a JSON object (the file changed between two polls) is never served: the tail starts over instead.
public final class MetricsTail: @unchecked Sendable {
    /// The followed file.
    public let path: String
    private let lock = NSLock()
    /// Bytes read and split into lines so far (always just after a newline).
    private var consumed: UInt64 = 0
    /// Each valid row: its offset in the file and its length in bytes (without the newline).
    private var spans: [(offset: UInt64, length: Int)] = []
    private var inode: UInt64?
    private var _generation = 0
    /// The file's first bytes as read (up to 256), to notice a rewrite in place.
    private var head = Data()

    public init(path: String) { self.path = path }

    /// Counts up each time the file was replaced or shortened (the rows start over).
    public var generation: Int { lock.withLock { _generation } }
    /// Rows read so far.
    public var count: Int { lock.withLock { spans.count } }

    /// Reads what was appended since the last call (nothing when the file does not exist yet).
    /// - Throws: `ServingError` naming the file when it exists but cannot be read.
    public func refresh() throws {
        try lock.withLock { try refreshLocked() }
    }

    private func refreshLocked() throws {
        var st = stat()
        guard stat(path, &st) == 0 else {
            if errno == ENOENT {   // not started yet, between a --resume's rewrite and rename, or removed
                if consumed > 0 || !spans.isEmpty { restartLocked() }
                inode = nil
                return
            }
            throw ServingError("\(path): cannot stat (\(String(cString: strerror(errno))))")
        }
        let ino = UInt64(st.st_ino), size = UInt64(st.st_size)
        if (inode != nil && inode != ino) || size < consumed { restartLocked() }
        inode = ino
        guard let h = FileHandle(forReadingAtPath: path) else {
            throw ServingError("\(path): cannot open for reading")
        }
        defer { try? h.close() }
        do {
            if consumed > 0 {
                // Same inode, not shorter: still the file read so far only if its first bytes and the newline that
                // ended the last line read are unchanged.
                try h.seek(toOffset: 0)
                let first = try h.read(upToCount: head.count) ?? Data()
                try h.seek(toOffset: consumed - 1)
                let newline = try h.read(upToCount: 1) ?? Data()
                if first != head || newline != Data([0x0A]) { restartLocked() }
            }
            guard size > consumed else { return }
            if consumed == 0 {
                try h.seek(toOffset: 0)
                head = try h.read(upToCount: Int(min(size, 256))) ?? Data()
            }
            try h.seek(toOffset: consumed)
            // Read in slices, so a large file already written is not held whole in memory.
            var start = consumed
            var pending = Data()
            while true {
                guard let chunk = try h.read(upToCount: 1 << 20), !chunk.isEmpty else { break }
                pending.append(chunk)
                var lineStart = pending.startIndex
                while let nl = pending[lineStart...].firstIndex(of: 0x0A) {
                    let line = pending[lineStart..<nl]
                    if Self.isJSONObject(line) {
                        spans.append((start + UInt64(lineStart - pending.startIndex), line.count))
                    }
                    lineStart = nl + 1
                }
                let used = lineStart - pending.startIndex
                start += UInt64(used)
                pending = Data(pending[lineStart...])
            }
            consumed = start   // a last line without its newline is read again next time
        } catch {
            throw ServingError("\(path): cannot read (\(error.localizedDescription))")
        }
    }

    /// Forgets every row: the next read starts at byte 0, and clients see a new generation.
    private func restartLocked() {
        consumed = 0; spans.removeAll(keepingCapacity: true); head = Data(); _generation += 1
    }

    /// Whether `line` parses as one JSON object.
    static func isJSONObject(_ line: Data) -> Bool {
        guard line.first(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) == UInt8(ascii: "{") else { return false }
        return (try? JSONSerialization.jsonObject(with: line)) is [String: Any]
    }

    /// The rows from index `since` on (at most `limit`), as the file's JSON text of each row (one object each), and the
    /// generation they belong to. Rows past the end give an empty list.
    /// - Throws: `ServingError` naming the file when it cannot be read.
    public func rows(since: Int, limit: Int = .max) throws -> (generation: Int, rows: [Data]) {
        let (gen, picked): (Int, [(offset: UInt64, length: Int)]) = lock.withLock {
            let from = max(0, since)
            guard from < spans.count else { return (_generation, []) }
            let to = from + min(limit, spans.count - from)
            return (_generation, Array(spans[from..<to]))
        }
        guard let first = picked.first, let last = picked.last else { return (gen, []) }
        guard let h = FileHandle(forReadingAtPath: path) else { throw ServingError("\(path): cannot open for reading") }
        defer { try? h.close() }
        let data: Data
        do {
            try h.seek(toOffset: first.offset)
            data = try h.read(upToCount: Int(last.offset - first.offset) + last.length) ?? Data()
        } catch { throw ServingError("\(path): cannot read (\(error.localizedDescription))") }
        var out: [Data] = []
        out.reserveCapacity(picked.count)
        for s in picked {
            let a = Int(s.offset - first.offset)
            guard a + s.length <= data.count else { break }   // replaced meanwhile: the next refresh starts over
            let row = data.subdata(in: (data.startIndex + a) ..< (data.startIndex + a + s.length))
            guard Self.isJSONObject(row) else {
                // Rewritten between two polls: serve nothing of it, start over (clients see the new generation).
                let newGen: Int = lock.withLock {
                    if _generation == gen { restartLocked() }
                    return _generation
                }
                return (newGen, [])
            }
            out.append(row)
        }
        return (gen, out)
    }
}
