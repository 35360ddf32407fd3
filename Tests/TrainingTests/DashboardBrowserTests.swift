import Foundation
import XCTest
import TestSupport

/// The training dashboard and report.html in a real browser (headless Chromium through `Browser`), on a finished
/// 2-rank pretrain: the loss chart has one point per logged step, a run added while the page is open is drawn beside
/// the first, and report.html opened from disk draws the same charts. Screenshots go to `TestArtifacts`.
final class DashboardBrowserTests: ScratchDirTestCase {
    /// Fields the page draws, by chart id (DashboardPage's CHARTS); `comm_unhidden_share` falls back to
    /// `unhidden_comm_fraction`.
    static let chartFields: [(id: String, fields: [String])] = [
        ("loss", ["loss"]), ("eval_loss", ["eval_loss"]), ("lr", ["lr"]), ("grad_norm", ["grad_norm"]),
        ("tokens_per_s", ["tokens_per_s"]), ("comm_unhidden_share", ["comm_unhidden_share", "unhidden_comm_fraction"]),
        ("rank_step_time_s", ["rank_step_time_s"]),
    ]

    func pretrain(out: String, seed: Int, steps: Int, extra: [String] = []) -> [String] {
        ["pretrain", "--data-path", TrainerRunner.corpus, "--tokenizer", TrainerRunner.tokenizer, "--cache-dir", work + "/cache",
         "--hidden-size", "32", "--num-hidden-layers", "2", "--max-seq-len", "33", "--batch-size", "2",
         "--accumulation-steps", "1", "--max-steps", "\(steps)", "--log-interval", "1", "--save-interval", "1000",
         "--threads", "1", "--seed", "\(seed)", "--out-dir", out] + extra
    }

    func rows(_ out: String) throws -> [[String: Any]] {
        try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").map {
            try XCTUnwrap(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    /// The chart ids the page must draw for these rows: those whose field some row holds.
    func expectedCharts(_ rows: [[String: Any]]) -> [String] {
        Self.chartFields.filter { c in rows.contains { r in c.fields.contains { r[$0] != nil && !(r[$0] is NSNull) } } }.map(\.id)
    }

    /// `trainer dashboard ARGS --port 0`, running until `stop`; `url` is read from its startup line.
    final class DashboardProcess {
        let process = Process()
        let url: String
        init(_ args: [String]) throws {
            guard let exe = TrainerRunner.trainer else { throw XCTSkip("no trainer binary") }
            process.executableURL = exe
            process.arguments = ["dashboard", "--port", "0"] + args
            let err = Pipe()
            process.standardError = err
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            var text = ""
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline {
                let d = err.fileHandleForReading.availableData
                if d.isEmpty { break }
                text += String(decoding: d, as: UTF8.self)
                if let r = text.range(of: #"http://127\.0\.0\.1:\d+/"#, options: .regularExpression) {
                    url = String(text[r])
                    return
                }
            }
            process.terminate()
            throw XCTSkip("trainer dashboard did not start: \(text)")
        }
        func stop() {
            if process.isRunning { process.interrupt(); process.waitUntilExit() }
        }
    }

    /// The chart ids drawn, and each chart's datasets as (label, [x]).
    func charts(_ b: Browser) throws -> [String: [(label: String, x: [Double])]] {
        let v = try b.execute("""
            const out = {};
            for (const [id, c] of Object.entries(window.swiftmindCharts || {}))
              out[id] = c.data.datasets.map(d => ({ label: d.label, x: d.data.map(p => p.x) }));
            return out;
            """) as? [String: Any] ?? [:]
        return v.mapValues { sets in
            ((sets as? [[String: Any]]) ?? []).map { ($0["label"] as? String ?? "", ($0["x"] as? [NSNumber] ?? []).map(\.doubleValue)) }
        }
    }

    /// A free loopback port (bound, then released).
    func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET); a.sin_addr.s_addr = inet_addr("127.0.0.1"); a.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw XCTSkip("no free port") }
        return Int(UInt16(bigEndian: a.sin_port))
    }

    /// `GET path` on 127.0.0.1:`port` with `Connection: close`: the status code, or nil when nothing listens.
    static func status(port: Int, _ path: String) -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET); a.sin_addr.s_addr = inet_addr("127.0.0.1"); a.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { return nil }
        let req = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        _ = req.withCString { send(fd, $0, strlen($0), 0) }
        var buf = [UInt8](repeating: 0, count: 64)
        let n = recv(fd, &buf, buf.count, 0)
        guard n > 12 else { return nil }
        return Int(String(decoding: buf[9..<12], as: UTF8.self))
    }

    /// Without a browser the run's own checks (--dashboard-port serves during the run and stops after it, report.html
    /// written) still run, then the test skips.
    func testDashboardAndReportOfATwoRankRun() throws {
        // A finished 2-rank run, with the dashboard served by rank 0 during it (polled while the run goes) and
        // stopped at its end.
        let a = work + "/runA", b = work + "/runB"
        let port = try freePort()
        final class Seen: @unchecked Sendable { var ok = false }
        let seen = Seen()
        let r = try TrainerRunner.run(pretrain(out: a, seed: 3, steps: 5, extra: ["--dashboard-port", "\(port)"]), np: 2,
                                      timeout: 300) { pid in
            while kill(pid, 0) == 0 && !seen.ok {
                if Self.status(port: port, "/api/runs") == 200 { seen.ok = true }
                usleep(20_000)
            }
        }
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("dashboard on http://127.0.0.1:\(port)/"), r.stderr)
        XCTAssertTrue(seen.ok, "GET /api/runs answered 200 during the run")
        XCTAssertNil(Self.status(port: port, "/api/runs"), "the dashboard stops with the run")
        XCTAssertTrue(r.stderr.contains("report \(a)/report.html"), r.stderr)
        let rowsA = try rows(a)
        let steps = rowsA.map { ($0["step"] as? NSNumber)?.doubleValue ?? -1 }
        XCTAssertEqual(steps, [1, 2, 3, 4, 5], "--log-interval 1: one row per step")
        let wanted = expectedCharts(rowsA)
        XCTAssertTrue(wanted.contains("loss") && wanted.contains("lr"), "\(wanted)")

        XCTAssertTrue(FileManager.default.fileExists(atPath: a + "/report.html"))

        // The pages in a browser (the checks above run without one).
        let browser: Browser
        do { browser = try Browser.launch(windowWidth: 1200, height: 1500) } catch let e as BrowserUnavailable {
            throw XCTSkip("no browser: \(e.reason)")
        }
        defer { browser.quit() }

        // Live page over both out-dirs, runB not started yet: only runA is drawn.
        let dash = try DashboardProcess(["--out-dir", a, "--out-dir", b])
        defer { dash.stop() }
        try browser.open(dash.url)
        try browser.wait(timeout: 30, "runA's loss chart") { (try charts(browser)["loss"]?.first?.x.count ?? 0) == steps.count }
        var drawn = try charts(browser)
        XCTAssertEqual(Set(drawn.keys), Set(wanted), "one chart per field present, none for absent fields")
        XCTAssertEqual(drawn["loss"]?.map(\.label), ["runA"])
        XCTAssertEqual(drawn["loss"]?.first?.x, steps, "one point per logged step")
        try browser.screenshot(to: TestArtifacts.path("dashboard-one-run.png"))

        // A second run, trained while the page is open, appears beside the first.
        let r2 = try TrainerRunner.run(pretrain(out: b, seed: 4, steps: 3), np: 1, timeout: 300)
        XCTAssertEqual(r2.status, 0, r2.stderr)
        try browser.wait(timeout: 30, "runB's loss dataset") { (try charts(browser)["loss"]?.count ?? 0) == 2 }
        drawn = try charts(browser)
        XCTAssertEqual(drawn["loss"]?.map(\.label), ["runA", "runB"])
        XCTAssertEqual(drawn["loss"]?.map { $0.x.count }, [5, 3])
        XCTAssertEqual(try browser.count("#runs tbody tr"), 2)
        try browser.screenshot(to: TestArtifacts.path("dashboard-two-runs.png"))
        dash.stop()

        // report.html from disk: the same charts, with no server.
        try browser.open(URL(fileURLWithPath: a + "/report.html").absoluteString)
        try browser.wait(timeout: 30, "the report's loss chart") { try charts(browser)["loss"] != nil }
        drawn = try charts(browser)
        XCTAssertEqual(Set(drawn.keys), Set(wanted))
        XCTAssertEqual(drawn["loss"]?.map(\.label), ["runA"])
        XCTAssertEqual(drawn["loss"]?.first?.x, steps)
        let status = try browser.text("#status")
        XCTAssertTrue(status.hasPrefix("report written"), status)
        try browser.screenshot(to: TestArtifacts.path("report.png"))
    }
}
