import XCTest
import Foundation
@testable import Training

/// `trainer pretrain` on bad runs and bad paths: a clear error, nothing lost, no NaN checkpoint.
final class BadRunInputTests: XCTestCase {
    var work = ""
    var data = ""

    override func setUpWithError() throws {
        work = TrainerRunner.tempDir("runhard")
        data = work + "/train.jsonl"
        let lines = try String(contentsOfFile: TrainerRunner.corpus, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        try (lines.prefix(100).joined(separator: "\n") + "\n").write(toFile: data, atomically: true, encoding: .utf8)
        let dir = work
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
    }

    func args(out: String, data: String? = nil, lr: String = "1e-3", extra: [String] = []) -> [String] {
        ["pretrain", "--data-path", data ?? self.data, "--tokenizer", TrainerRunner.tokenizer, "--cache-dir", work + "/cache",
         "--hidden-size", "32", "--num-hidden-layers", "2", "--max-seq-len", "33", "--batch-size", "4",
         "--accumulation-steps", "1", "--learning-rate", lr, "--max-steps", "4", "--log-interval", "1",
         "--save-interval", "1", "--seed", "5", "--threads", "1", "--out-dir", out] + extra
    }

    /// A diverging run stops with "loss became NaN at step N"; metrics stay valid JSON; no checkpoint of NaN weights.
    func testNaNLossStopsTheRunWithoutACheckpoint() throws {
        let out = work + "/nan"
        let r = try TrainerRunner.run(args(out: out, lr: "1e38"), timeout: 60)
        XCTAssertFalse(r.timedOut)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("became NaN at step 2") || r.stderr.contains("became inf at step 2"), r.stderr)
        let names = try FileManager.default.contentsOfDirectory(atPath: out).sorted()
        XCTAssertEqual(names, [OutDirLock.fileName, "checkpoint-1", "metrics.jsonl"])   // the run lock stays, emptied
        XCTAssertEqual(try TrainerRunner.losses(outDir: out).map(\.step), [1])
        // Non-finite numbers in a metrics record are written as null, not an NSCocoa error.
        let m = try MetricsWriter(path: work + "/m.jsonl")
        try m.append(["loss": Double.nan, "grad_norm": Float.infinity, "xs": [1.0, -Double.infinity]])
        let line = try String(contentsOfFile: work + "/m.jsonl", encoding: .utf8)
        XCTAssertEqual(line, "{\"grad_norm\":null,\"loss\":null,\"xs\":[1,null]}\n")
    }

    /// A fresh run into an out dir holding another run's checkpoints is refused; leftovers of a killed run are removed;
    /// bad paths name the path.
    func testOutDirAndDataPathProblemsAreNamed() throws {
        let fm = FileManager.default
        let out = work + "/out"
        try fm.createDirectory(atPath: out + "/checkpoint-3", withIntermediateDirectories: true)
        try Data("{}".utf8).write(to: URL(fileURLWithPath: out + "/checkpoint-3/trainer_state.json"))
        try fm.createDirectory(atPath: out + "/.checkpoint-4.tmp-999", withIntermediateDirectories: true)
        var r = try TrainerRunner.run(args(out: out), timeout: 60)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("already holds checkpoints") && r.stderr.contains("--resume"), r.stderr)
        XCTAssertFalse(fm.fileExists(atPath: out + "/.checkpoint-4.tmp-999"))
        XCTAssertTrue(fm.fileExists(atPath: out + "/checkpoint-3/trainer_state.json"), "the old run must be kept")

        let file = work + "/afile"
        try Data("x".utf8).write(to: URL(fileURLWithPath: file))
        r = try TrainerRunner.run(args(out: file), timeout: 60)
        XCTAssertTrue(r.stderr.contains("\(file): --out-dir exists and is not a directory"), r.stderr)
        r = try TrainerRunner.run(args(out: file + "/sub"), timeout: 60)
        XCTAssertTrue(r.stderr.contains("\(file) is a file, not a directory"), r.stderr)
        r = try TrainerRunner.run(args(out: work + "/o2", data: work), timeout: 60)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("\(work): cannot open: is a directory"), r.stderr)
        XCTAssertFalse(r.stderr.contains("NSCocoaErrorDomain"), r.stderr)
    }
}
