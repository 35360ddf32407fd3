import XCTest
import TestSupport
import Foundation
@testable import Training

/// One run per output directory: rank 0 holds `OUT/.swiftmind.lock` (flock) for the run; a second run is refused
/// naming the holder's host and pid before it removes or writes anything; a lock left by a process that is gone is
/// taken over with a warning.
final class OutDirLockTests: ScratchDirTestCase {
    func testSecondHolderIsRefusedNamingHostAndPid() throws {
        let first = try Checkpoints.prepareOutDir(work, resume: false)
        XCTAssertNil(first.previousHolder)
        XCTAssertThrowsError(try Checkpoints.prepareOutDir(work, resume: false)) { e in
            let m = "\(e)"
            var host = [CChar](repeating: 0, count: 256)
            gethostname(&host, host.count - 1)
            XCTAssertTrue(m.contains("\(work) is in use by another run (host \(String(cString: host)) pid \(getpid()))"), m)
        }
        withExtendedLifetime(first) {}
    }

    func testReleasedLockIsFreeAndAStaleOneIsTakenOver() throws {
        do { _ = try Checkpoints.prepareOutDir(work, resume: false) }   // released at the end of the scope
        XCTAssertNil(try OutDirLock.acquire(outDir: work).previousHolder, "an ended run leaves nothing to take over")
        // A run killed with -9 leaves its text but no flock (the kernel drops it with the process).
        try "host elsewhere pid 999999\n".write(toFile: work + "/" + OutDirLock.fileName, atomically: false, encoding: .utf8)
        let lock = try OutDirLock.acquire(outDir: work)
        XCTAssertEqual(lock.previousHolder, "host elsewhere pid 999999")
    }

    /// A directory the run created and left holding only the lock (a run that failed before writing anything) is
    /// removed when the lock is released; a directory that existed before, or that holds anything else, stays.
    func testAFailedRunLeavesNoEmptyDirectoryItCreated() throws {
        let fresh = work + "/fresh/out"
        do { _ = try Checkpoints.prepareOutDir(fresh, resume: false) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: fresh), "the directory the run created is gone")
        let kept = work + "/kept"
        do {
            let lock = try Checkpoints.prepareOutDir(kept, resume: false)
            try "{}\n".write(toFile: kept + "/metrics.jsonl", atomically: true, encoding: .utf8)
            withExtendedLifetime(lock) {}
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: kept + "/metrics.jsonl"))
        do { _ = try Checkpoints.prepareOutDir(work, resume: false) }
        XCTAssertTrue(FileManager.default.fileExists(atPath: work), "a directory that existed stays")
        // Through the binary: a missing --data-path leaves no --out-dir behind.
        let out = work + "/no-data-out"
        let r = try TrainerRunner.run(["sft", "--data-path", work + "/missing.jsonl", "--tokenizer", TrainerRunner.tokenizer,
                                       "--hidden-size", "64", "--num-hidden-layers", "1", "--max-steps", "1", "--out-dir", out])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), r.stderr)
    }

    /// Through the binary: a second `trainer pretrain` into the directory of a running one exits non-zero with the
    /// holder named, and the first run finishes untouched.
    func testSecondRunOfTheBinaryIsRefused() throws {
        let out = work + "/out"
        let args = ["pretrain", "--data-path", Fixtures.corpus("pretrain.jsonl"), "--tokenizer", TrainerRunner.tokenizer,
                    "--hidden-size", "64", "--num-hidden-layers", "2", "--max-seq-len", "64", "--batch-size", "4",
                    "--accumulation-steps", "1", "--max-steps", "400", "--log-interval", "100", "--save-interval", "1000",
                    "--out-dir", out, "--cache-dir", work + "/cache", "--threads", "1"]
        guard let exe = TrainerRunner.trainer else { throw XCTSkip("no trainer binary") }
        let p = Process()
        p.executableURL = exe
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["OPENBLAS_NUM_THREADS"] = "1"; env["SWIFTMIND_NO_PROGRESS"] = "1"
        p.environment = env
        p.standardOutput = FileHandle.nullDevice; p.standardError = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { p.terminate() } }
        let lockFile = out + "/" + OutDirLock.fileName
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, ((try? String(contentsOfFile: lockFile, encoding: .utf8)) ?? "").isEmpty { usleep(50_000) }
        XCTAssertTrue(p.isRunning, "the first run ended before the second could start; make it longer")
        let second = try TrainerRunner.run(args, timeout: 60)
        XCTAssertNotEqual(second.status, 0)
        XCTAssertTrue(second.stderr.contains("is in use by another run (host ") && second.stderr.contains("pid \(p.processIdentifier)"),
                      second.stderr)
        // The first run goes on undisturbed: stopped by SIGINT (rather than waited out), it ends cleanly as preempted.
        p.interrupt()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 75)
    }
}
