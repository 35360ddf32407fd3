import XCTest
import Foundation
import Model

/// `--timeline FILE` (a Chrome trace of every rank's steps), metrics.jsonl's `comm_unhidden_share` and
/// `rank_step_time_s`, and the progress bar under mpirun: end-to-end runs of `trainer pretrain` with a tiny model.
final class TimelineTests: XCTestCase {
    var work = ""
    var data = ""
    var cache = ""

    override func setUpWithError() throws {
        work = TrainerRunner.tempDir("timeline")
        cache = work + "/cache"
        data = work + "/train.jsonl"
        let lines = try String(contentsOfFile: TrainerRunner.corpus, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        try (lines.prefix(200).joined(separator: "\n") + "\n").write(toFile: data, atomically: true, encoding: .utf8)
        let dir = work
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
    }

    /// 5 steps of 4 samples per rank, 2 layers; buckets of 0.01 MB (2621 floats), so each decoder layer fills several
    /// buckets and the embedding many.
    func args(out: String, steps: Int = 5, extra: [String] = []) -> [String] {
        ["pretrain", "--data-path", data, "--tokenizer", TrainerRunner.tokenizer, "--cache-dir", cache,
         "--hidden-size", "32", "--num-hidden-layers", "2", "--max-seq-len", "33",
         "--batch-size", "4", "--accumulation-steps", "1", "--learning-rate", "1e-3",
         "--max-steps", "\(steps)", "--log-interval", "2", "--save-interval", "100", "--seed", "5", "--threads", "1",
         "--bucket-cap-mb", "0.01", "--out-dir", out] + extra
    }

    // MARK: the Chrome trace schema check

    /// One event of the trace, checked: the keys each phase requires, with their JSON types.
    struct Event {
        let name: String, ph: String, pid: Int, tid: Int
        let ts: Double?, dur: Double?
        let args: [String: Any]
        var end: Double { (ts ?? 0) + (dur ?? 0) }
    }

    /// Parses `path` as a Chrome trace in the JSON object format and checks its schema; returns the events.
    /// Checked: the top level (`traceEvents` array, `displayTimeUnit` "ms" or "ns"); every event's `name` (string),
    /// `ph` (one of X, i, M), `pid`, `tid` (integers); X: `ts` and `dur` numbers, `dur` ≥ 0, `ts` ≥ 0; i: `ts` and a
    /// scope `s` in g/p/t; M: a known metadata name with its `args` (`name` string or `sort_index` integer);
    /// optional `cat` a string and `args` an object; every (pid, tid) of an X or i event named by a `thread_name`,
    /// every pid by one `process_name` "rank <pid − 1>" (the trainer's pid is rank + 1: Perfetto treats pid 0 apart).
    func checkTrace(_ path: String, file: StaticString = #filePath, line: UInt = #line) throws -> [Event] {
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path)))
        guard let top = json as? [String: Any] else { XCTFail("trace is not a JSON object", file: file, line: line); return [] }
        guard let raw = top["traceEvents"] as? [Any] else { XCTFail("no traceEvents array", file: file, line: line); return [] }
        XCTAssertTrue(["ms", "ns"].contains(top["displayTimeUnit"] as? String ?? "?"), "displayTimeUnit", file: file, line: line)
        // A JSON number (NSNumber whose type is not a boolean's, `c`).
        func number(_ v: Any?) -> NSNumber? {
            guard let n = v as? NSNumber, String(cString: n.objCType) != "c" else { return nil }
            return n
        }
        func int(_ v: Any?) -> Int? {
            guard let n = number(v), n.doubleValue == n.doubleValue.rounded() else { return nil }
            return n.intValue
        }
        func num(_ v: Any?) -> Double? {
            guard let n = number(v), n.doubleValue.isFinite else { return nil }
            return n.doubleValue
        }
        var events: [Event] = []
        var problems: [String] = []
        for (i, r) in raw.enumerated() {
            guard let e = r as? [String: Any] else { problems.append("event \(i) is not an object"); continue }
            guard let name = e["name"] as? String, let ph = e["ph"] as? String, let pid = int(e["pid"]), let tid = int(e["tid"]) else {
                problems.append("event \(i) lacks a string name / ph or integer pid / tid: \(e)"); continue
            }
            if let c = e["cat"], !(c is String) { problems.append("event \(i): cat is not a string") }
            if let a = e["args"], !(a is [String: Any]) { problems.append("event \(i): args is not an object") }
            let args = e["args"] as? [String: Any] ?? [:]
            switch ph {
            case "X":
                guard let ts = num(e["ts"]), let dur = num(e["dur"]) else { problems.append("X event \(i) lacks numeric ts / dur"); continue }
                if dur < 0 { problems.append("X event \(i) (\(name)) has a negative duration \(dur)") }
                if ts < 0 { problems.append("X event \(i) (\(name)) starts before the origin: \(ts)") }
                events.append(Event(name: name, ph: ph, pid: pid, tid: tid, ts: ts, dur: dur, args: args))
            case "i":
                guard let ts = num(e["ts"]) else { problems.append("i event \(i) lacks a numeric ts"); continue }
                if let s = e["s"], !["g", "p", "t"].contains(s as? String ?? "?") { problems.append("i event \(i): scope \(s)") }
                events.append(Event(name: name, ph: ph, pid: pid, tid: tid, ts: ts, dur: nil, args: args))
            case "M":
                switch name {
                case "process_name", "thread_name":
                    if !(args["name"] is String) { problems.append("M event \(i) (\(name)) lacks args.name") }
                case "process_sort_index", "thread_sort_index":
                    if int(args["sort_index"]) == nil { problems.append("M event \(i) (\(name)) lacks an integer args.sort_index") }
                default: problems.append("M event \(i): unknown metadata \(name)")
                }
                events.append(Event(name: name, ph: ph, pid: pid, tid: tid, ts: nil, dur: nil, args: args))
            default:
                problems.append("event \(i): phase \(ph) not written by the trainer")
            }
        }
        let processNames = events.filter { $0.ph == "M" && $0.name == "process_name" }
        for pid in Set(events.map(\.pid)) {
            let names = processNames.filter { $0.pid == pid }.map { $0.args["name"] as? String ?? "" }
            if names != ["rank \(pid - 1)"] { problems.append("process \(pid) is named \(names), expected [rank \(pid - 1)]") }
        }
        let threads = Set(events.filter { $0.ph == "M" && $0.name == "thread_name" }.map { "\($0.pid)/\($0.tid)" })
        for e in events where e.ph != "M" && !threads.contains("\(e.pid)/\(e.tid)") {
            problems.append("\(e.name) on pid \(e.pid) tid \(e.tid), a track without a thread_name"); break
        }
        // Complete events of one track nest or are disjoint (the viewers draw a track as a stack of slices). Times are
        // whole nanoseconds written as µs with 3 decimals, so ts + dur is compared to half a nanosecond (the sum of two
        // decimals in binary floating point is not exact).
        let halfNs = 0.0005
        for (track, spans) in Dictionary(grouping: events.filter { $0.ph == "X" }, by: { "\($0.pid)/\($0.tid)" }) {
            var open: [Event] = []
            for e in spans.sorted(by: { ($0.ts!, -$0.dur!) < ($1.ts!, -$1.dur!) }) {
                while let top = open.last, top.end <= e.ts! + halfNs { open.removeLast() }
                if let top = open.last, e.end > top.end + halfNs {
                    problems.append("track \(track): \(e.name) [\(e.ts!), \(e.end)] overlaps \(top.name) [\(top.ts!), \(top.end)] without nesting")
                    break
                }
                open.append(e)
            }
        }
        XCTAssertEqual(problems, [], file: file, line: line)
        return events
    }

    func metricsRows(_ out: String) throws -> [[String: Any]] {
        try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }

    // MARK: tests

    /// 2 ranks, 5 steps: the trace passes the schema check, holds both ranks, backward per layer, every bucket's
    /// all-reduce once per step with its bytes (summing to the gradient buffer), and at least one bucket launched
    /// before its rank's last backward layer of that step ended (the reducer overlaps backward). metrics.jsonl has
    /// the new fields.
    func testTwoRankTimelineAndMetricsFields() throws {
        let out = work + "/np2", trace = work + "/trace.json"
        let r = try TrainerRunner.run(args(out: out, extra: ["--timeline", trace]), np: 2)
        XCTAssertFalse(r.timedOut, r.stderr)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("timeline → \(trace)"), r.stderr)
        let events = try checkTrace(trace)
        XCTAssertEqual(Set(events.map(\.pid)), [1, 2], "one process per rank")
        let paramBytes = try MiniMindModel.load(directory: out + "/final").numParameters * 4
        var overlapped = 0
        for pid in [1, 2] {
            let mine = events.filter { $0.pid == pid && $0.ph == "X" }
            let trackNames = Dictionary(uniqueKeysWithValues: events.filter { $0.pid == pid && $0.name == "thread_name" }
                .map { ($0.args["name"] as! String, $0.tid) })
            let compute = try XCTUnwrap(trackNames["compute"])
            XCTAssertNotNil(trackNames["communication"]); XCTAssertNotNil(trackNames["stalls"])
            // The communication track and its lanes (all-reduces in flight together).
            let comm = Set(trackNames.filter { $0.key.hasPrefix("communication") }.values)
            let steps = mine.filter { $0.tid == compute && $0.name.hasPrefix("step ") }.sorted { $0.ts! < $1.ts! }
            XCTAssertEqual(steps.map(\.name), (1...5).map { "step \($0)" }, "rank \(pid)")
            for name in ["data loading", "forward", "backward", "clip + optimizer", "wait for all-reduce"] {
                XCTAssertEqual(mine.filter { $0.tid == compute && $0.name == name }.count, 5, "rank \(pid) \(name)")
            }
            let buckets = mine.filter { comm.contains($0.tid) && $0.name.hasPrefix("all-reduce bucket ") }
            let bucketCount = Set(buckets.map { ($0.args["bucket"] as! NSNumber).intValue }).count
            XCTAssertGreaterThan(bucketCount, 5, "rank \(pid): 0.01 MB buckets of a \(paramBytes)-byte gradient")
            for s in steps {
                let inStep = { (e: Event) in e.ts! >= s.ts! && e.ts! <= s.end }
                let layers = mine.filter { $0.tid == compute && $0.name.hasPrefix("backward layer ") && inStep($0) }
                XCTAssertEqual(layers.map(\.name).sorted(), ["backward layer 0", "backward layer 1"], "rank \(pid) \(s.name)")
                XCTAssertEqual(mine.filter { $0.tid == compute && $0.name.hasPrefix("forward layer ") && inStep($0) }.map(\.name).sorted(),
                               ["forward layer 0", "forward layer 1"], "rank \(pid) \(s.name)")
                let launched = buckets.filter(inStep)
                XCTAssertEqual(launched.map { ($0.args["bucket"] as! NSNumber).intValue }.sorted(), Array(0 ..< bucketCount),
                               "rank \(pid) \(s.name): one all-reduce per bucket")
                XCTAssertEqual(launched.map { ($0.args["bytes"] as! NSNumber).intValue }.reduce(0, +), paramBytes, "rank \(pid) \(s.name)")
                for b in launched { XCTAssertLessThanOrEqual(b.end, s.end + 1, "rank \(pid) \(b.name) completes inside \(s.name)") }
                let lastLayerEnd = layers.map(\.end).max()!
                if launched.contains(where: { $0.ts! < lastLayerEnd }) { overlapped += 1 }
            }
        }
        XCTAssertGreaterThan(overlapped, 0, "no bucket's all-reduce started before its rank's last backward layer ended")
        print("timeline: \(events.count) events, \(overlapped) of 10 rank-steps launched a bucket during backward")

        let rows = try metricsRows(out)
        XCTAssertEqual(rows.map { ($0["step"] as! NSNumber).intValue }, [2, 4, 5])
        for row in rows {
            let share = try XCTUnwrap(row["comm_unhidden_share"] as? NSNumber, "\(row)").doubleValue
            XCTAssertTrue((0...1).contains(share), "comm_unhidden_share \(share)")
            let times = try XCTUnwrap(row["rank_step_time_s"] as? [NSNumber], "\(row)").map(\.doubleValue)
            XCTAssertEqual(times.count, 2)
            let stepTime = (row["step_time_s"] as! NSNumber).doubleValue
            XCTAssertEqual(times[0], stepTime, accuracy: 1e-9, "rank 0's entry is the row's step_time_s")
            for t in times { XCTAssertTrue(t > 0 && t < 60, "rank step time \(t)") }
        }
    }

    /// One process: the trace holds rank 0 alone with no communication events; the share is 0 and the per-rank array
    /// has one entry.
    func testSingleRankTimelineAndMetrics() throws {
        let out = work + "/np1", trace = work + "/one.json"
        let r = try TrainerRunner.run(args(out: out, steps: 2, extra: ["--timeline", trace]), np: 1)
        XCTAssertEqual(r.status, 0, r.stderr)
        let events = try checkTrace(trace)
        XCTAssertEqual(Set(events.map(\.pid)), [1])
        XCTAssertEqual(events.filter { $0.name.hasPrefix("all-reduce bucket") }.count, 0)
        XCTAssertEqual(events.filter { $0.name.hasPrefix("backward layer") }.count, 4)
        for row in try metricsRows(out) {
            XCTAssertEqual((row["comm_unhidden_share"] as? NSNumber)?.doubleValue, 0)
            XCTAssertEqual((row["rank_step_time_s"] as? [Any])?.count, 1)
        }
    }

    /// A missing directory of the timeline is created at the start, as --out-dir's is; a file where a directory must
    /// go is a named error before the first step.
    func testTimelineDirectoryIsCreatedAndABlockedOneIsANamedError() throws {
        let r = try TrainerRunner.run(args(out: work + "/made", steps: 1, extra: ["--timeline", work + "/no/such/dir/t.json"]))
        XCTAssertEqual(r.status, 0, r.stderr)
        _ = try checkTrace(work + "/no/such/dir/t.json")
        XCTAssertTrue(FileManager.default.createFile(atPath: work + "/plain", contents: Data("x".utf8)))
        let b = try TrainerRunner.run(args(out: work + "/blocked", steps: 1, extra: ["--timeline", work + "/plain/t.json"]))
        XCTAssertNotEqual(b.status, 0)
        XCTAssertTrue(b.stderr.contains("cannot create the timeline's directory"), b.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: work + "/blocked/metrics.jsonl"), "no step may run first")
    }

    /// A timeline path that cannot be written (a directory) fails before the first step, not after training; a
    /// timeline inside the out-dir the run creates is accepted; a bad SWIFTMIND_TIMELINE_EVENTS is a named error.
    func testUnwritableTimelineFailsAtTheStartAndOutDirTimelineWorks() throws {
        let dirAsFile = work + "/isdir.json"
        try FileManager.default.createDirectory(atPath: dirAsFile, withIntermediateDirectories: true)
        let bad = try TrainerRunner.run(args(out: work + "/unwritable", extra: ["--timeline", dirAsFile]))
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("cannot write the timeline"), bad.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: work + "/unwritable/metrics.jsonl"), "no step may run first")

        let out = work + "/fresh"
        let ok = try TrainerRunner.run(args(out: out, steps: 2, extra: ["--timeline", out + "/timeline.json"]), np: 1)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        _ = try checkTrace(out + "/timeline.json")

        let env = try TrainerRunner.run(args(out: work + "/env", steps: 1, extra: ["--timeline", work + "/env.json"]),
                                        environment: ["SWIFTMIND_TIMELINE_EVENTS": "12"])
        XCTAssertNotEqual(env.status, 0)
        XCTAssertTrue(env.stderr.contains("SWIFTMIND_TIMELINE_EVENTS must be an integer"), env.stderr)
    }

    /// A fresh run into an out-dir that holds an earlier run's metrics.jsonl (stopped before its first checkpoint)
    /// keeps those rows under another name instead of appending to them.
    func testFreshRunSetsAsideAnEarlierRunsMetrics() throws {
        let out = work + "/again"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try "{\"step\":7,\"loss\":9.0}\n".write(toFile: out + "/metrics.jsonl", atomically: true, encoding: .utf8)
        let r = try TrainerRunner.run(args(out: out, steps: 2), np: 1)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try metricsRows(out).compactMap { ($0["step"] as? NSNumber)?.intValue }, [2])
        let kept = try FileManager.default.contentsOfDirectory(atPath: out).filter { $0.hasPrefix("metrics.jsonl.replaced-") }
        XCTAssertEqual(kept.count, 1, "\(kept)")
        XCTAssertEqual(try String(contentsOfFile: out + "/" + kept[0], encoding: .utf8), "{\"step\":7,\"loss\":9.0}\n")
        XCTAssertTrue(r.stderr.contains("held rows of an earlier run"), r.stderr)
    }

    // MARK: progress bar under mpirun

    /// `trainer` under mpirun -np 2 with stderr on a pseudo-terminal (`script`) or a pipe; SWIFTMIND_NO_PROGRESS unset.
    func runUnderMpirun(onTerminal: Bool, out: String) throws -> String {
        let exe = try XCTUnwrap(TrainerRunner.trainer), mpirun = try XCTUnwrap(TrainerRunner.mpirun)
        let mpiCommand = [mpirun.path, "-np", "2", "--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,vader,tcp",
                          "--mca", "btl_vader_single_copy_mechanism", "none", exe.path] + args(out: out)
        let p = Process()
        var env = ProcessInfo.processInfo.environment
        env["SWIFTMIND_NO_PROGRESS"] = nil
        env["OPENBLAS_NUM_THREADS"] = "1"
        if getuid() == 0 { env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"; env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1" }
        p.environment = env
        if onTerminal {
            guard FileManager.default.isExecutableFile(atPath: "/usr/bin/script") else { throw XCTSkip("script(1) (bsdutils) not installed") }
            p.executableURL = URL(fileURLWithPath: "/usr/bin/script")
            let quoted = mpiCommand.map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
            p.arguments = ["-qec", quoted, "/dev/null"]
        } else {
            p.executableURL = mpirun
            p.arguments = Array(mpiCommand.dropFirst())
        }
        let pipe = Pipe()
        p.standardOutput = pipe; p.standardError = pipe
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, text)
        return text
    }

    /// On a terminal, rank 0 draws the bar under mpirun (once per step) and every log line starts on a line of its
    /// own (the bar is cleared first); into a pipe nothing but the lines.
    func testProgressBarUnderMpirunOnATerminalOnly() throws {
        let tty = try runUnderMpirun(onTerminal: true, out: work + "/tty")
        let bars = tty.components(separatedBy: "\r\u{1B}[2K[").count - 1
        XCTAssertGreaterThanOrEqual(bars, 5, "bar redraws on the terminal:\n\(tty.debugDescription)")
        XCTAssertTrue(tty.contains("] 5/5 loss"), tty.debugDescription)
        var logLines = 0
        // The pty turns "\n" into "\r\n" (one Character in Swift): back to "\n" before splitting.
        for line in tty.replacingOccurrences(of: "\r\n", with: "\n").components(separatedBy: "\n") where line.contains(" step ") && line.contains("/5 epoch") {
            // What the terminal shows of this line: the text after its last carriage return that precedes the log line,
            // which must begin with the erase-line sequence (the bar was cleared) and hold no bar.
            let shown = line.components(separatedBy: "\r").first { $0.contains("/5 epoch") } ?? ""
            XCTAssertTrue(shown.hasPrefix("\u{1B}[2K"), "log line not preceded by clearing the bar: \(line.debugDescription)")
            XCTAssertFalse(shown.contains("█") || shown.contains("·"), "a bar left on the log line: \(line.debugDescription)")
            logLines += 1
        }
        XCTAssertEqual(logLines, 3, tty.debugDescription)
        let piped = try runUnderMpirun(onTerminal: false, out: work + "/pipe")
        XCTAssertTrue(piped.contains("step 5/5"), piped)
        XCTAssertFalse(piped.contains("\u{1B}[2K"), "no bar into a pipe:\n\(piped.debugDescription)")
    }
}
