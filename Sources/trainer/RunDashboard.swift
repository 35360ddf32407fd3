// A training run's dashboard (--dashboard-port) and its OUT/report.html, both from rank 0.
import Foundation
import Logging
import Serving
import Training

/// What rank 0 does around a training run: serves the dashboard of its out-dir on `--dashboard-port` while the run
/// goes (other ranks ignore the option) and writes `OUT/report.html` at its end.
enum RunDashboard {
    /// Runs `body`. On rank 0: first starts the dashboard when `port` is given (a port that cannot be bound is a
    /// warning, not a failed run); after `body` stops it, and when `body` returned or stopped at a preemption
    /// boundary (`Preempted`), writes OUT/report.html (a failure to write it is a warning). A run that failed
    /// writes no report: its out-dir may be another run's (a refused lock) or hold nothing to plot.
    static func around(rank: Int, outDir: String, port: Int?, logger: Logger, _ body: () throws -> Void) throws {
        guard rank == 0 else { return try body() }
        var dashboard: BackgroundDashboard?
        if let port {
            do {
                let d = try BackgroundDashboard.start(DashboardServer(outDirs: [outDir], port: port))
                dashboard = d
                logger.info("dashboard on http://127.0.0.1:\(d.port)/ (until the run ends)")
            } catch {
                logger.warning("--dashboard-port \(port): \(error); training goes on without the dashboard")
            }
        }
        do {
            try body()
        } catch let p as Preempted {
            dashboard?.stop()
            writeReport(outDir: outDir, logger: logger)
            throw p
        } catch {
            dashboard?.stop()
            throw error
        }
        dashboard?.stop()
        writeReport(outDir: outDir, logger: logger)
    }

    static func writeReport(outDir: String, logger: Logger) {
        do {
            let path = try DashboardReport.write(outDir: outDir)
            logger.info("report \(path)")
        } catch {
            logger.warning("report.html not written: \(error)")
        }
    }
}
