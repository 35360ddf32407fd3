import Foundation
import XCTest
@testable import Serving
import TestSupport

/// The training dashboard's metrics tail, HTTP API and report page (no browser: DashboardBrowserTests drives one).
final class DashboardServerTests: ScratchDirTestCase {
    func append(_ text: String, to path: String) throws {
        if !FileManager.default.fileExists(atPath: path) { XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: nil)) }
        let h = try XCTUnwrap(FileHandle(forWritingAtPath: path))
        try h.seekToEnd()
        try h.write(contentsOf: Data(text.utf8))
        try h.close()
    }

    func steps(_ rows: [Data]) throws -> [Int] {
        try rows.map { try XCTUnwrap((try JSONSerialization.jsonObject(with: $0) as? [String: Any])?["step"] as? Int) }
    }

    /// Rows appear as whole lines are appended; a last line without its newline waits; a torn line is skipped; a
    /// replaced (resumed) file starts over with a new generation.
    func testTailReadsWholeLinesIncrementally() throws {
        let path = work + "/metrics.jsonl"
        let tail = MetricsTail(path: path)
        try tail.refresh()
        XCTAssertEqual(tail.count, 0, "no file yet: no rows, no error")
        try append("{\"step\":1,\"loss\":2.5}\n{\"step\":2,\"lo", to: path)
        try tail.refresh()
        XCTAssertEqual(tail.count, 1)
        XCTAssertEqual(try steps(tail.rows(since: 0).rows), [1])
        try append("ss\":2.4}\nnot json\n{\"step\":3,\"loss\":2.3}\n", to: path)
        try tail.refresh()
        XCTAssertEqual(try steps(tail.rows(since: 0).rows), [1, 2, 3])
        XCTAssertEqual(try steps(tail.rows(since: 1).rows), [2, 3])
        XCTAssertEqual(try steps(tail.rows(since: 1, limit: 1).rows), [2])
        XCTAssertEqual(try tail.rows(since: 9).rows.count, 0)
        XCTAssertEqual(tail.generation, 0)
        // --resume rewrites the file under a temporary name and renames it over the old one.
        try "{\"step\":1,\"loss\":2.5}\n".write(toFile: path + ".tmp", atomically: false, encoding: .utf8)
        XCTAssertEqual(rename(path + ".tmp", path), 0)
        try tail.refresh()
        XCTAssertEqual(tail.generation, 1)
        XCTAssertEqual(try steps(tail.rows(since: 0).rows), [1])
    }

    /// A file removed and written again (a recreated out-dir can get the same inode back), or rewritten in place with
    /// more bytes than were read, starts over with a new generation; rows served are always whole JSON objects.
    func testTailStartsOverWhenTheFileIsRemovedOrRewrittenInPlace() throws {
        let path = work + "/metrics.jsonl"
        let tail = MetricsTail(path: path)
        try append((0..<30).map { "{\"step\":\($0),\"loss\":\(1.0 + Double($0))}\n" }.joined(), to: path)
        try tail.refresh()
        XCTAssertEqual(tail.count, 30)
        // Removed: the rows go, a new generation.
        try FileManager.default.removeItem(atPath: path)
        try tail.refresh()
        XCTAssertEqual(tail.count, 0)
        XCTAssertEqual(tail.generation, 1)
        // Written again, larger, with other line lengths.
        try append((0..<40).map { "{\"step\":\($0),\"loss\":\(100.0 + 3 * Double($0)),\"extra\":\"abc\"}\n" }.joined(), to: path)
        try tail.refresh()
        XCTAssertEqual(try steps(tail.rows(since: 0).rows), Array(0..<40))
        // Rewritten in place (same inode: truncate, then more bytes than before).
        let h = try XCTUnwrap(FileHandle(forWritingAtPath: path))
        try h.truncate(atOffset: 0)
        try h.write(contentsOf: Data((0..<200).map { "{\"step\":\(1000 + $0)}\n" }.joined().utf8))
        try h.close()
        try tail.refresh()
        XCTAssertEqual(tail.generation, 2)
        let rows = try tail.rows(since: 0).rows
        XCTAssertEqual(try steps(rows), Array(1000..<1200))
    }

    func testLegendNamesTellRunsApart() {
        XCTAssertEqual(DashboardRun.names(for: ["/x/runs/a", "/x/runs/b/"]), ["a", "b"])
        XCTAssertEqual(DashboardRun.names(for: ["/x/a/out", "/x/b/out", "/y/c"]), ["a/out", "b/out", "c"])
    }

    func get(_ port: Int, _ path: String) async throws -> (Int, [String: String], Data) {
        try await onThread { try RawHTTP.request(port: port, "GET", path) }
    }

    /// /api/runs and /api/metrics over a real socket follow the files as they grow; bad parameters get 400/404.
    func testRunsAndMetricsEndpoints() async throws {
        let a = work + "/runA", b = work + "/runB"
        try FileManager.default.createDirectory(atPath: a, withIntermediateDirectories: true)
        try append("{\"step\":1,\"loss\":3.0,\"lr\":0.001}\n{\"step\":2,\"loss\":2.9,\"lr\":0.001}\n", to: a + "/metrics.jsonl")
        let server = DashboardServer(outDirs: [a, b], port: 0)
        let dash = try BackgroundDashboard.start(server)
        defer { dash.stop() }
        let port = dash.port

        let (ps, ph, pb) = try await get(port, "/")
        XCTAssertEqual(ps, 200)
        XCTAssertEqual(ph["content-type"], "text/html; charset=utf-8")
        let page = String(decoding: pb, as: UTF8.self)
        XCTAssertTrue(page.contains("Chart.js v\(ChartJS.version)"), "Chart.js is inline")
        XCTAssertFalse(page.contains("src=\"http"), "no external script")

        var (s, _, body) = try await get(port, "/api/runs")
        XCTAssertEqual(s, 200)
        var runs = try XCTUnwrap(try json(body)["runs"] as? [[String: Any]])
        XCTAssertEqual(runs.map { $0["name"] as? String }, ["runA", "runB"])
        XCTAssertEqual(runs.map { $0["rows"] as? Int }, [2, 0])

        (s, _, body) = try await get(port, "/api/metrics?run=0&since=1")
        XCTAssertEqual(s, 200)
        var m = try json(body)
        XCTAssertEqual(m["generation"] as? Int, 0)
        XCTAssertEqual((m["rows"] as? [[String: Any]])?.map { $0["step"] as? Int }, [2])

        try append("{\"step\":3,\"loss\":2.8,\"lr\":0.001,\"rank_step_time_s\":[0.1,0.2]}\n{\"step\":4", to: a + "/metrics.jsonl")
        try FileManager.default.createDirectory(atPath: b, withIntermediateDirectories: true)
        try append("{\"step\":1,\"loss\":3.1}\n", to: b + "/metrics.jsonl")
        (s, _, body) = try await get(port, "/api/runs")
        runs = try XCTUnwrap(try json(body)["runs"] as? [[String: Any]])
        XCTAssertEqual(runs.map { $0["rows"] as? Int }, [3, 1], "the partial line of step 4 waits")
        (s, _, body) = try await get(port, "/api/metrics?run=0&since=2")
        m = try json(body)
        let row = try XCTUnwrap((m["rows"] as? [[String: Any]])?.first)
        XCTAssertEqual(row["step"] as? Int, 3)
        XCTAssertEqual(row["rank_step_time_s"] as? [Double], [0.1, 0.2])

        for (path, status) in [("/api/metrics", 400), ("/api/metrics?run=x", 400), ("/api/metrics?run=0&since=-1", 400),
                               ("/api/metrics?run=2", 404)] {
            let (st, _, eb) = try await get(port, path)
            XCTAssertEqual(st, status, path)
            XCTAssertNotNil(try json(eb)["error"] as? String, path)
        }
    }

    /// report.html holds Chart.js, the drawing script and the rows inline (a `<` inside a value cannot end the script),
    /// and is written atomically next to metrics.jsonl.
    func testReportIsSelfContained() throws {
        try append("{\"step\":1,\"loss\":3.0,\"stage\":\"</script><b>\"}\n{\"step\":2,\"loss\":2.9}\n", to: work + "/metrics.jsonl")
        let path = try DashboardReport.write(outDir: work)
        XCTAssertEqual(path, work + "/report.html")
        let html = try String(contentsOfFile: path, encoding: .utf8)
        XCTAssertTrue(html.contains("Chart.js v\(ChartJS.version)"))
        XCTAssertTrue(html.contains("swiftmindCharts"))
        XCTAssertEqual(html.components(separatedBy: "</script>").count - 1, 3, "Chart.js, the data, the drawing script")
        XCTAssertFalse(html.contains("http://") && html.contains("src=\"http"), "no external resource")
        let start = try XCTUnwrap(html.range(of: "<script id=\"report-data\" type=\"application/json\">"))
        let end = try XCTUnwrap(html.range(of: "</script>", range: start.upperBound..<html.endIndex))
        let data = try json(Data(html[start.upperBound..<end.lowerBound].utf8))
        let runs = try XCTUnwrap(data["runs"] as? [[String: Any]])
        XCTAssertEqual(runs.count, 1)
        let rows = try XCTUnwrap(runs[0]["rows"] as? [[String: Any]])
        XCTAssertEqual(rows.map { $0["step"] as? Int }, [1, 2])
        XCTAssertEqual(rows[0]["stage"] as? String, "</script><b>")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: work).sorted(), ["metrics.jsonl", "report.html"])
    }

    /// Fields not every run writes: per-rank step time (one dataset per rank), eval loss only on the rows that hold
    /// it, `comm_unhidden_share` before its older name, null values skipped, a chart only for a field present — drawn
    /// by report.html in a browser (skipped without one).
    func testReportDrawsOptionalFieldsInABrowser() throws {
        let browser: Browser
        do { browser = try Browser.launch(windowWidth: 1200, height: 1500) } catch let e as BrowserUnavailable {
            throw XCTSkip("no browser: \(e.reason)")
        }
        defer { browser.quit() }
        let out = work + "/run"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try append("""
            {"step":1,"loss":3.0,"lr":0.001,"comm_unhidden_share":0.25,"unhidden_comm_fraction":0.9,"rank_step_time_s":[0.10,0.12]}
            {"step":2,"loss":2.8,"lr":0.001,"comm_unhidden_share":0.5,"rank_step_time_s":[0.11,0.13],"eval_loss":2.9}
            {"step":3,"loss":null,"lr":0.001,"comm_unhidden_share":0.75,"rank_step_time_s":[0.09,null]}
            {"step":4,"loss":2.6,"lr":0.001,"rank_step_time_s":[0.10,0.14],"eval_loss":2.7}

            """, to: out + "/metrics.jsonl")
        let path = try DashboardReport.write(outDir: out)
        try browser.open(URL(fileURLWithPath: path).absoluteString)
        try browser.wait(timeout: 30, "the report's charts") { (try browser.execute("return !!window.swiftmindCharts && !!swiftmindCharts.loss") as? Bool) == true }
        let got = try XCTUnwrap(try browser.execute("""
            const out = {};
            for (const [id, c] of Object.entries(swiftmindCharts))
              out[id] = c.data.datasets.map(d => ({ label: d.label, points: d.data.map(p => [p.x, p.y]) }));
            return out;
            """) as? [String: [[String: Any]]])
        func points(_ id: String) -> [[String]] {
            (got[id] ?? []).map { (($0["points"] as? [[NSNumber]]) ?? []).map { $0.map { "\($0)" }.joined(separator: ":") } }
        }
        func labels(_ id: String) -> [String] { (got[id] ?? []).map { $0["label"] as? String ?? "?" } }
        XCTAssertEqual(Set(got.keys), ["loss", "lr", "eval_loss", "comm_unhidden_share", "rank_step_time_s"], "no chart for absent fields")
        XCTAssertEqual(points("loss"), [["1:3", "2:2.8", "4:2.6"]], "a null value is no point")
        XCTAssertEqual(points("eval_loss"), [["2:2.9", "4:2.7"]])
        XCTAssertEqual(points("comm_unhidden_share"), [["1:0.25", "2:0.5", "3:0.75"]])
        XCTAssertEqual(labels("rank_step_time_s"), ["run rank 0", "run rank 1"])
        XCTAssertEqual(points("rank_step_time_s"), [["1:0.1", "2:0.11", "3:0.09", "4:0.1"], ["1:0.12", "2:0.13", "4:0.14"]])
        try browser.screenshot(to: TestArtifacts.path("report-optional-fields.png"))
    }
}
