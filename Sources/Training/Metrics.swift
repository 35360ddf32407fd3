// Rank-0 logging: swift-log lines, metrics.jsonl, and a progress bar on a terminal.
import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Appends one JSON object per line to `OUT/metrics.jsonl` (opened in append mode, so a resumed run continues the file).
public final class MetricsWriter {
    public let path: String
    private let handle: FileHandle

    public init(path: String) throws {
        self.path = path
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        guard let h = FileHandle(forWritingAtPath: path) else {
            throw TrainingError.io(path: path, reason: "cannot open for appending")
        }
        handle = h
        try handle.seekToEnd()
    }

    /// Writes `record` as one line of JSON with sorted keys. Non-finite numbers (NaN, ±inf), which JSON cannot hold,
    /// are written as `null`.
    public func append(_ record: [String: Any]) throws {
        var data = try JSONSerialization.data(withJSONObject: MetricsWriter.finiteJSON(record), options: [.sortedKeys])
        data.append(0x0A)
        do { try handle.write(contentsOf: data) } catch {
            throw TrainingError.io(path: path, reason: "cannot append a row: \(describeFileError(error, path: path))")
        }
    }

    deinit { try? handle.close() }

    /// Renames a non-empty metrics file at `path` to `path.replaced-<UTC yyyyMMdd'T'HHmmss>` (a fresh run must not
    /// append to an earlier run's rows); returns the new name, or nil when there was nothing to set aside.
    /// - Throws: `TrainingError.io` naming the file when it cannot be renamed.
    public static func setAside(path: String) throws -> String? {
        var st = stat()
        guard stat(path, &st) == 0, st.st_size > 0 else { return nil }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX"); f.timeZone = TimeZone(identifier: "UTC"); f.dateFormat = "yyyyMMdd'T'HHmmss"
        var name = path + ".replaced-" + f.string(from: Date())
        var n = 1
        while FileManager.default.fileExists(atPath: name) { n += 1; name = path + ".replaced-" + f.string(from: Date()) + "-\(n)" }
        guard rename(path, name) == 0 else {
            throw TrainingError.io(path: path, reason: "cannot rename to \(name) (\(String(cString: strerror(errno))))")
        }
        return name
    }

    /// Keeps only the rows of the metrics file at `path` whose `"step"` is ≤ `step` — on `--resume` from checkpoint-N the
    /// steps after N are run again, and their rows from the interrupted run would otherwise appear twice. Lines that are
    /// not a JSON object with an integer `"step"` (a line torn by a kill) are dropped too. The file is rewritten under a
    /// temporary name and renamed (never half-written); a missing file, or one with nothing to drop, is left alone.
    /// - Throws: `TrainingError.io` naming the file when it cannot be read or replaced.
    public static func truncate(path: String, keepingStepsThrough step: Int) throws {
        let fm = FileManager.default
        guard fm.fileExists(atPath: path) else { return }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw TrainingError.io(path: path, reason: "cannot read (\(describeFileError(error, path: path)))")
        }
        let lines = data.split(separator: 0x0A, omittingEmptySubsequences: true)
        let kept = lines.filter { line in
            guard let obj = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                  let s = obj["step"] as? NSNumber, s.doubleValue == s.doubleValue.rounded() else { return false }
            return s.intValue <= step
        }
        guard kept.count != lines.count || data.last.map({ $0 != 0x0A }) == true else { return }
        var out = Data()
        for l in kept { out.append(contentsOf: l); out.append(0x0A) }
        let tmp = path + ".tmp-\(getpid())"
        do {
            try out.write(to: URL(fileURLWithPath: tmp))
            if rename(tmp, path) != 0 { throw TrainingError.io(path: path, reason: "cannot replace (\(String(cString: strerror(errno))))") }
        } catch {
            try? fm.removeItem(atPath: tmp)
            if let e = error as? TrainingError { throw e }
            throw TrainingError.io(path: tmp, reason: "cannot write (\(describeFileError(error, path: tmp)))")
        }
    }

    /// `value` with every non-finite Double/Float (also inside arrays and dictionaries) replaced by `NSNull`.
    public static func finiteJSON(_ value: Any) -> Any {
        switch value {
        case let d as Double: return d.isFinite ? d : NSNull()
        case let f as Float: return f.isFinite ? f : NSNull()
        case let a as [Any]: return a.map(finiteJSON)
        case let m as [String: Any]: return m.mapValues(finiteJSON)
        default: return value
        }
    }
}

/// A one-line progress bar redrawn in place on stderr, when stderr reaches a terminal (`ProgressBar.stderrIsTerminal`).
/// Log lines clear it first (`clear()`), so they stay whole. `SWIFTMIND_NO_PROGRESS` (any value) turns it off.
public struct ProgressBar {
    public let enabled: Bool
    public let total: Int
    public init(total: Int, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.total = total
        enabled = environment["SWIFTMIND_NO_PROGRESS"] == nil && ProgressBar.stderrIsTerminal(environment)
    }

    /// True when this process's stderr ends on a terminal. Alone: `isatty(2)`. Under OpenMPI's mpirun (4.1) a rank's
    /// stdout and stderr are pipes to the launcher, which copies what arrives (partial lines included, so `\r`
    /// redraws pass through) to its own stdout and stderr; `isatty` is then false in the rank whatever the user sees.
    /// So under mpirun the launcher's stderr is asked instead: the parent process's fd 2, opened through
    /// `/proc/<ppid>/fd/2` (a rank started on another host by `orted` has a parent whose stderr is not a terminal).
    public static func stderrIsTerminal(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        if isatty(2) != 0 { return true }
        guard environment["OMPI_COMM_WORLD_SIZE"] != nil else { return false }
        let fd = open("/proc/\(getppid())/fd/2", O_WRONLY | O_NOCTTY | O_NONBLOCK)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return isatty(fd) != 0
    }
    public func draw(step: Int, suffix: String) {
        guard enabled, total > 0 else { return }
        let width = 30
        let filled = min(width, width * step / total)
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        FileHandle.standardError.write(Data("\r\u{1B}[2K[\(bar)] \(step)/\(total) \(suffix)".utf8))
    }
    /// Clears the bar's line before a log line is printed.
    public func clear() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8))
    }
    public func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\n".utf8))
    }
}

/// Formats seconds as `1h02m03s` / `2m03s` / `3.4s`.
public func formatDuration(_ s: Double) -> String {
    if !s.isFinite || s < 0 { return "?" }
    if s < 60 { return String(format: "%.1fs", s) }
    let t = Int(s.rounded())
    if t < 3600 { return String(format: "%dm%02ds", t / 60, t % 60) }
    return String(format: "%dh%02dm%02ds", t / 3600, (t % 3600) / 60, t % 60)
}
