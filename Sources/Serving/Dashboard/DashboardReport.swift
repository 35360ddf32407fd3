// OUT/report.html: the dashboard page with a run's metrics inline, written at the end of a run.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Writes the self-contained report page of finished runs (`DashboardPage.report`).
public enum DashboardReport {
    /// The report page of the runs in `outDirs` (their `metrics.jsonl` rows inline; a missing file gives a run with no
    /// rows).
    /// - Throws: `ServingError` naming a metrics file that exists but cannot be read.
    public static func html(outDirs: [String], generatedAt: Date = Date()) throws -> String {
        let runs = try DashboardRun.runs(outDirs: outDirs).map { r -> DashboardPage.RunRows in
            try r.tail.refresh()
            return DashboardPage.RunRows(name: r.name, path: r.outDir, rows: try r.tail.rows(since: 0).rows)
        }
        return DashboardPage.report(runs: runs, generatedAt: generatedAt)
    }

    /// Writes `OUT/report.html` for the run in `outDir`, atomically (a temporary name in the same directory, then
    /// rename), and returns its path.
    /// - Throws: `ServingError` naming the file that could not be read or written.
    @discardableResult
    public static func write(outDir: String) throws -> String {
        let path = (outDir as NSString).appendingPathComponent("report.html")
        let text = try html(outDirs: [outDir])
        let tmp = path + ".tmp-\(getpid())"
        do {
            try Data(text.utf8).write(to: URL(fileURLWithPath: tmp))
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw ServingError("\(tmp): cannot write (\(error.localizedDescription))")
        }
        if rename(tmp, path) != 0 {
            let why = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: tmp)
            throw ServingError("\(path): cannot replace (\(why))")
        }
        return path
    }
}
