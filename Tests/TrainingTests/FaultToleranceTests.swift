import XCTest
import Foundation
import Model
import TestSupport
import Logging
import Tokenizers
import Training
import SwiftMindDistributed

/// The stall inspector and graceful preemption, through the `trainer` binary under `mpirun -np 2` (issue 15, items 1
/// and 2). The long versions (the figures: `--stall-timeout 20`, bounded by 60 s; SIGTERM with a 2000-step run;
/// SIGUSR1) run with SWIFTMIND_LONG_TESTS=1.
final class FaultToleranceTests: XCTestCase {
    static var longTests: Bool { ProcessInfo.processInfo.environment["SWIFTMIND_LONG_TESTS"] == "1" }

    /// A tiny pretraining run that logs every step and would run far longer than any test.
    static func pretrain(out: String, cache: String, maxSteps: Int = 100_000) -> [String] {
        ["pretrain", "--data-path", TrainerRunner.corpus, "--tokenizer", TrainerRunner.tokenizer, "--cache-dir", cache,
         "--hidden-size", "32", "--num-hidden-layers", "2", "--max-seq-len", "33", "--batch-size", "2",
         "--accumulation-steps", "1", "--max-steps", "\(maxSteps)", "--epochs", "1000", "--log-interval", "1",
         "--save-interval", "1000", "--threads", "1", "--seed", "3", "--out-dir", out]
    }

    /// The highest step in OUT/metrics.jsonl (0 when none yet; a half-written last line is ignored).
    static func lastStep(_ out: String) -> Int {
        guard let text = try? String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8) else { return 0 }
        var best = 0
        for line in text.split(separator: "\n") {
            guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let s = (o["step"] as? NSNumber)?.intValue else { continue }
            best = max(best, s)
        }
        return best
    }

    /// Polls `condition` every 20 ms for up to `seconds`.
    static func waitUntil(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if condition() { return true }
            usleep(20_000)
        }
        return condition()
    }

    /// The ranks mpirun `parent` started on this machine: rank → pid (from /proc: parent pid and OMPI_COMM_WORLD_RANK).
    static func ranks(of parent: Int32) -> [Int: Int32] {
        var out: [Int: Int32] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry),
                  let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 2, Int32(fields[1]) == parent,
                  let env = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
            for v in env.split(separator: 0) where v.starts(with: Array("OMPI_COMM_WORLD_RANK=".utf8)) {
                if let r = Int(String(decoding: v.dropFirst("OMPI_COMM_WORLD_RANK=".utf8.count), as: UTF8.self)) { out[r] = pid }
            }
        }
        return out
    }

    static var hostName: String {
        var buf = [CChar](repeating: 0, count: 256)
        gethostname(&buf, buf.count)
        return String(cString: buf)
    }

    final class Marks: @unchecked Sendable {
        let lock = NSLock()
        var pid: Int32 = 0
        var at: Date?
        var note = ""
        func set(_ f: (Marks) -> Void) { lock.lock(); f(self); lock.unlock() }
    }

    // MARK: stall inspector

    /// Rank 1 stopped (SIGSTOP) after step 3: rank 0 names it and its host, and every process is gone within `within`
    /// seconds of the stop, mpirun with the stall exit code.
    func checkStoppedRank(stallTimeout: Int, stallWarning: Int, within: Double) throws {
        let dir = TrainerRunner.tempDir("stall")
        let out = dir + "/out"
        let marks = Marks()
        let r = try TrainerRunner.run(Self.pretrain(out: out, cache: dir + "/cache")
                                        + ["--stall-timeout", "\(stallTimeout)", "--stall-warning", "\(stallWarning)"],
                                      np: 2, timeout: within + 120) { mpirun in
            guard Self.waitUntil(90, { Self.lastStep(out) >= 3 }) else { marks.set { $0.note = "step 3 never logged" }; return }
            guard let pid = Self.ranks(of: mpirun)[1] else { marks.set { $0.note = "rank 1 not found among mpirun's children" }; return }
            kill(pid, SIGSTOP)
            marks.set { $0.pid = pid; $0.at = Date() }
        }
        let elapsed = marks.at.map { Date().timeIntervalSince($0) } ?? .infinity
        defer { if marks.pid != 0 && kill(marks.pid, 0) == 0 { kill(marks.pid, SIGKILL) } }
        XCTAssertNotEqual(marks.pid, 0, "rank 1 was not stopped: \(marks.note)\n\(r.stderr.suffix(3000))")
        XCTAssertFalse(r.timedOut, "the job hung with rank 1 stopped\n\(r.stderr.suffix(3000))")
        XCTAssertEqual(r.status, 76, "mpirun's exit status\n\(r.stderr.suffix(3000))")
        XCTAssertLessThan(elapsed, within, "seconds from SIGSTOP to the end of the job")
        let host = Self.hostName
        XCTAssertTrue(r.stderr.contains("stall: rank 0 (\(host)) has waited"), r.stderr.suffix(3000).description)
        XCTAssertTrue(r.stderr.contains("rank 1 (\(host)) last heard"), "the message names rank 1 and its host\n\(r.stderr.suffix(3000))")
        XCTAssertTrue(r.stderr.contains("--stall-timeout \(stallTimeout)"), r.stderr.suffix(3000).description)
        // The stopped rank was killed too (mpirun SIGKILLs the job's processes after MPI_Abort).
        XCTAssertTrue(Self.waitUntil(10) { kill(marks.pid, 0) != 0 }, "rank 1 (pid \(marks.pid)) is still alive")
    }

    func testStoppedRankIsNamedAndJobAborts() throws {
        try checkStoppedRank(stallTimeout: 4, stallWarning: 2, within: 35)
    }

    /// The figures: `--stall-timeout 20`, every process gone within 60 s.
    func testStoppedRankAbortsWithin60sAtStallTimeout20() throws {
        guard Self.longTests else { throw XCTSkip("opt-in long test: set SWIFTMIND_LONG_TESTS=1 to run it") }
        try checkStoppedRank(stallTimeout: 20, stallWarning: 60, within: 60)
    }

    func testStallOptionsAreValidated() throws {
        for bad in [["--stall-timeout", "-1"], ["--stall-timeout=nan"], ["--stall-timeout", "1e-300"], ["--stall-warning", "0"],
                    ["--stall-warning", "0.5"], ["--stall-warning", "inf"]] {
            let r = try TrainerRunner.run(["pretrain", "--tokenizer", "x", "--print-options"] + bad, timeout: 60)
            XCTAssertNotEqual(r.status, 0, "\(bad) accepted")
            XCTAssertTrue(r.stderr.contains(bad[0].hasPrefix("--stall-warning") ? "--stall-warning" : "--stall-timeout"), r.stderr)
        }
    }

    // MARK: preemption

    /// SIGTERM (or `signal`) to mpirun after step 3 with `--save-interval 1000`: every rank stops at the same step k,
    /// rank 0 writes checkpoint-k, and `--resume` gives the losses and final weights of an uninterrupted run.
    func checkPreemption(signal: Int32, steps: Int) throws {
        let dir = TrainerRunner.tempDir("preempt")
        let cache = dir + "/cache"
        // The signal reaches the ranks up to `grace` s after mpirun gets it (below), so the run must last well beyond
        // that after step 3. On a quiet machine `steps` can take 3 s (one fresh-clone run ended before the signal
        // arrived): when the uninterrupted run took under 16 s, it is run again with proportionally more steps.
        var steps = steps
        var started = Date()
        var whole = try TrainerRunner.run(Self.pretrain(out: dir + "/whole", cache: cache, maxSteps: steps), np: 2, timeout: 300)
        XCTAssertEqual(whole.status, 0, whole.stderr)
        let took = Date().timeIntervalSince(started)
        if took < 16 {
            steps = min(5000, Int(Double(steps) * 16 / max(took, 0.5)))
            try? FileManager.default.removeItem(atPath: dir + "/whole")
            started = Date()
            whole = try TrainerRunner.run(Self.pretrain(out: dir + "/whole", cache: cache, maxSteps: steps), np: 2, timeout: 300)
            XCTAssertEqual(whole.status, 0, whole.stderr)
            print("preemption test: \(took) s for the first run, now \(steps) steps (\(Date().timeIntervalSince(started)) s)")
        }

        let out = dir + "/cut"
        let marks = Marks()
        // On SIGTERM mpirun sends the ranks SIGCONT, SIGTERM 1 s later and SIGKILL 1 s after that (OpenMPI 4, the default
        // odls_base_sigkill_timeout): the run must last longer than that. A step plus the checkpoint take milliseconds,
        // but on a loaded VM the stop has taken over a second (one fresh-clone run saw SIGKILL before the
        // "preempted" line), so the grace is raised as the README advises for slow steps (OMPI_MCA_ environment);
        // the ranks then get SIGTERM 4 s after mpirun, well before the run's remaining steps (≥ 12 s, see above) are done.
        let grace = ["OMPI_MCA_odls_base_sigkill_timeout": "4"]
        let cut = try TrainerRunner.run(Self.pretrain(out: out, cache: cache, maxSteps: steps), np: 2, timeout: 300,
                                        environment: grace) { mpirun in
            guard Self.waitUntil(120, { Self.lastStep(out) >= 3 }) else { return }
            kill(mpirun, signal)
            marks.set { $0.at = Date() }
        }
        XCTAssertNotNil(marks.at, "step 3 never logged\n\(cut.stderr.suffix(2000))")
        let stopped = cut.stderr.components(separatedBy: "\n").first { $0.hasPrefix("preempted (SIG") }
        guard let line = stopped, let k = Int(line.split(separator: " ").drop { $0 != "step" }.dropFirst().first?
                                                    .trimmingCharacters(in: CharacterSet(charactersIn: ";")) ?? "") else {
            return XCTFail("no 'preempted … at step k' line (exit \(cut.status)); the run may have ended first\n\(cut.stderr.suffix(3000))")
        }
        XCTAssertTrue(line.hasSuffix("resume with --resume (checkpoint \(out)/checkpoint-\(k))"), line)
        XCTAssertGreaterThanOrEqual(k, 3)
        XCTAssertLessThan(k, steps, "the run ended before the signal; make it longer")
        if signal == SIGUSR1 { XCTAssertEqual(cut.status, 75, "a clean preemption exits with 75\n\(cut.stderr.suffix(2000))") }
        else { XCTAssertNotEqual(cut.status, 0) }
        XCTAssertTrue(FileManager.default.fileExists(atPath: "\(out)/checkpoint-\(k)/trainer_state.json"))
        XCTAssertEqual(cut.stderr.components(separatedBy: "preempted (").count - 1, 1, "one line, from rank 0")

        let resumed = try TrainerRunner.run(Self.pretrain(out: out, cache: cache, maxSteps: steps) + ["--resume"], np: 2, timeout: 300)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("resumed from \(out)/checkpoint-\(k) at step \(k)"), resumed.stderr.suffix(2000).description)
        let a = try TrainerRunner.losses(outDir: dir + "/whole"), b = try TrainerRunner.losses(outDir: out)
        XCTAssertEqual(a.map(\.step), Array(1 ... steps))
        XCTAssertEqual(b.map(\.step), a.map(\.step))
        XCTAssertEqual(b.map(\.loss), a.map(\.loss), "losses of the preempted + resumed run vs the uninterrupted one")
        XCTAssertEqual(try TrainerRunner.parameters(out + "/final"), try TrainerRunner.parameters(dir + "/whole/final"),
                       "final weights")
    }

    func testSIGTERMToMpirunCheckpointsAndResumeMatchesUninterrupted() throws {
        try checkPreemption(signal: SIGTERM, steps: Self.longTests ? 2000 : 300)
    }

    /// mpirun forwards SIGUSR1 at once: the clean path, where mpirun returns the ranks' 75 (long: the SIGTERM test
    /// covers the same path in the normal suite).
    func testSIGUSR1ToMpirunExitsWithPreemptedCode() throws {
        guard Self.longTests else { throw XCTSkip("opt-in long test: set SWIFTMIND_LONG_TESTS=1 to run it") }
        try checkPreemption(signal: SIGUSR1, steps: 300)
    }

    /// A single process: the first SIGINT (Ctrl-C) announces the stop; a second one exits at once with 128 + 2.
    func testSecondSignalExitsAtOnce() throws {
        let dir = TrainerRunner.tempDir("preempt2")
        let out = dir + "/out"
        let marks = Marks()
        let r = try TrainerRunner.run(Self.pretrain(out: out, cache: dir + "/cache") + ["--hidden-size", "256", "--max-seq-len", "512", "--batch-size", "16"],
                                      timeout: 200) { pid in
            guard Self.waitUntil(120, { Self.lastStep(out) >= 1 }) else { return }
            kill(pid, SIGINT); usleep(300_000); kill(pid, SIGINT)
            marks.set { $0.at = Date() }
        }
        XCTAssertNotNil(marks.at, r.stderr.suffix(2000).description)
        XCTAssertEqual(r.status, 128 + SIGINT, r.stderr.suffix(2000).description)
        XCTAssertTrue(r.stderr.contains("stop signal received"), r.stderr.suffix(2000).description)
        XCTAssertFalse(r.stderr.contains("preempted"), r.stderr.suffix(2000).description)
    }
}

/// A preemption signal during the token-cache build stops the build after the chunk in progress — the build of a
/// multi-GB file can outlast the scheduler's grace time — discards the partial cache and ends the run before its
/// first step with `Preempted` (exit code 75, nothing to resume). Through `SharedTokenCache.load`, the call the
/// trainers make, with the signal recorded as the handler records it.
final class CacheBuildPreemptionTests: ScratchDirTestCase {
    func testSignalDuringTheCacheBuildStopsItAndPreemptsBeforeTheFirstStep() throws {
        let tok = try Tokenizer.load(TrainerRunner.tokenizer)
        let root = work + "/cache"
        Preemption.request(SIGUSR1)
        defer { Preemption.request(0) }
        XCTAssertThrowsError(try SharedTokenCache.load(dataPath: TrainerRunner.corpus, kind: .pretrain, tokenizer: tok,
                                                       cacheRoot: root, threads: 2, comm: SingleProcessCommunicator(),
                                                       logger: Logger(label: "test"))) { e in
            guard let p = e as? Preempted else { return XCTFail("\(e)") }
            XCTAssertEqual(p.step, 0); XCTAssertNil(p.checkpoint); XCTAssertEqual(p.signal, "SIGUSR1")
            XCTAssertEqual("\(p)", "preempted (SIGUSR1) before the first step; nothing to resume: start the run again")
        }
        let left = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
        XCTAssertEqual(left, [], "a partial cache was left: \(left)")
        // Without a signal the same call builds the cache.
        Preemption.request(0)
        XCTAssertGreaterThan(try SharedTokenCache.load(dataPath: TrainerRunner.corpus, kind: .pretrain, tokenizer: tok,
                                                       cacheRoot: root, threads: 2, comm: SingleProcessCommunicator(),
                                                       logger: Logger(label: "test")).count, 0)
    }
}
