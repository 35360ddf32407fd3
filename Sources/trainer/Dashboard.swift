// `trainer dashboard`: live charts of one or more runs' OUT/metrics.jsonl in a browser (Serving/Dashboard).
import ArgumentParser
import Foundation
import Serving

struct DashboardCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dashboard",
        abstract: "Serve live charts of training runs' metrics.jsonl (loss, lr, grad norm, tokens/s, communication, per-rank step time, eval loss).",
        discussion: """
        Open http://HOST:PORT/ in a browser: one chart per metrics.jsonl field present (drawn once a row has it), every
        --out-dir overlaid in its own colour (legend: the out-dir's name), updated every second while the runs go;
        a run restarted with --resume is read again from its first row. Chart.js is embedded: no network is used.
        Routes: GET / (the page), GET /api/runs, GET /api/metrics?run=I&since=N, GET /health.
        A training command's --dashboard-port P serves the same page from rank 0 during the run; every run also writes
        OUT/report.html, the same charts in one file that opens without a server.
        SIGINT/SIGTERM stop the server. Binds 127.0.0.1 unless --host says otherwise.
        """)

    @Option(name: .customLong("out-dir"), help: "A run's output directory (the one holding metrics.jsonl); repeat to overlay runs.")
    var outDirs: [String] = []
    @Option(parsing: .unconditional, help: "Port (0 = any free port, printed at startup).") var port = 8999
    @Option(help: "Address to listen on.") var host = "127.0.0.1"

    func validate() throws {
        if outDirs.isEmpty { throw ValidationError("give at least one --out-dir (a run's output directory)") }
        if port < 0 || port > 65535 { throw ValidationError("--port must be in 0…65535 (got \(port))") }
        var seen = Set<String>()
        for d in outDirs {
            let key = URL(fileURLWithPath: d).standardizedFileURL.path
            if !seen.insert(key).inserted { throw ValidationError("--out-dir \(d) is given twice") }
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: d, isDirectory: &isDir), !isDir.boolValue {
                throw ValidationError("--out-dir \(d) is a file; give the run's output directory (the one holding metrics.jsonl)")
            }
        }
    }

    final class Box: @unchecked Sendable { var error: Error? }

    func run() throws {
        for d in outDirs where !FileManager.default.fileExists(atPath: d) {
            FileHandle.standardError.write(Data("[dashboard] note: \(d) does not exist yet; its charts appear once it has a metrics.jsonl\n".utf8))
        }
        let server = DashboardServer(outDirs: outDirs, host: host, port: port)
        let names = server.runs.map(\.name).joined(separator: ", "), h = host
        let done = DispatchSemaphore(value: 0), box = Box()
        Task {
            do {
                try await server.run { port in
                    FileHandle.standardError.write(Data("[dashboard] \(names) on http://\(h):\(port)/\n".utf8))
                }
            } catch { box.error = error }
            done.signal()
        }
        done.wait()
        if let e = box.error { throw ServingError("dashboard on \(host):\(port): \(e)") }
        FileHandle.standardError.write(Data("[dashboard] stopped\n".utf8))
    }
}
