import XCTest
import TestSupport
import Foundation
@testable import Training

/// What a `--resume` reports: the final loss of a run that had already finished, and one metrics.jsonl row per step
/// when steps after the checkpoint are run again.
final class ResumeReportTests: ScratchDirTestCase {
    var data = ""

    override func setUpWithError() throws {
        try super.setUpWithError()
        data = work + "/train.jsonl"
        let lines = try String(contentsOfFile: TrainerRunner.corpus, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        try (lines.prefix(100).joined(separator: "\n") + "\n").write(toFile: data, atomically: true, encoding: .utf8)
    }

    func args(out: String, extra: [String] = []) -> [String] {
        ["pretrain", "--data-path", data, "--tokenizer", TrainerRunner.tokenizer, "--cache-dir", work + "/cache",
         "--hidden-size", "32", "--num-hidden-layers", "2", "--max-seq-len", "33", "--batch-size", "4",
         "--accumulation-steps", "1", "--learning-rate", "1e-3", "--max-steps", "4", "--log-interval", "1",
         "--save-interval", "2", "--keep-checkpoints", "5", "--seed", "5", "--threads", "1", "--out-dir", out] + extra
    }

    /// `--resume` of a run whose newest checkpoint is its last step trains nothing and reports the checkpoint's loss
    /// (it printed "final loss nan").
    func testResumeOfAFinishedRunReportsTheCheckpointLoss() throws {
        let out = work + "/done"
        let r = try TrainerRunner.run(args(out: out))
        XCTAssertEqual(r.status, 0, r.stderr)
        let last = try XCTUnwrap(try TrainerRunner.losses(outDir: out).last)
        XCTAssertEqual(last.step, 4)
        let r2 = try TrainerRunner.run(args(out: out, extra: ["--resume"]))
        XCTAssertEqual(r2.status, 0, r2.stderr)
        XCTAssertFalse(r2.stderr.contains("final loss nan"), r2.stderr)
        XCTAssertTrue(r2.stderr.contains(String(format: "done: 4 steps, final loss %.4f,", last.loss)), r2.stderr)
        XCTAssertEqual(try TrainerRunner.losses(outDir: out).map(\.step), [1, 2, 3, 4])
    }

    /// A run interrupted after step 3 (its rows for steps 3 and 4 written, only checkpoint-2 complete) and resumed
    /// redoes steps 3…4: metrics.jsonl then holds each step once, with the resumed run's values.
    func testResumeKeepsOneMetricsRowPerStep() throws {
        let out = work + "/interrupted"
        let r = try TrainerRunner.run(args(out: out))
        XCTAssertEqual(r.status, 0, r.stderr)
        let ref = try TrainerRunner.losses(outDir: out)
        XCTAssertEqual(ref.map(\.step), [1, 2, 3, 4])
        let fm = FileManager.default
        try fm.removeItem(atPath: out + "/checkpoint-4")
        try fm.removeItem(atPath: out + "/final")
        // A row torn by the kill at the end of the file.
        let h = try XCTUnwrap(FileHandle(forWritingAtPath: out + "/metrics.jsonl"))
        try h.seekToEnd(); try h.write(contentsOf: Data("{\"step\": 5, \"lo".utf8)); try h.close()
        let r2 = try TrainerRunner.run(args(out: out, extra: ["--resume"]))
        XCTAssertEqual(r2.status, 0, r2.stderr)
        let l = try TrainerRunner.losses(outDir: out)
        XCTAssertEqual(l.map(\.step), [1, 2, 3, 4])
        XCTAssertEqual(l.map(\.loss), ref.map(\.loss), "same geometry, same process count: the redone steps repeat exactly")
    }

    /// The truncation itself: rows with step ≤ N kept in order, later and unparsable rows dropped, file replaced whole.
    func testMetricsTruncationKeepsRowsThroughTheCheckpointStep() throws {
        let p = work + "/metrics.jsonl"
        let rows = (1 ... 6).map { "{\"loss\":\(Double($0) / 10),\"step\":\($0)}" }
        try (rows.joined(separator: "\n") + "\n{\"step\":7,").write(toFile: p, atomically: true, encoding: .utf8)
        try MetricsWriter.truncate(path: p, keepingStepsThrough: 4)
        XCTAssertEqual(try String(contentsOfFile: p, encoding: .utf8), rows.prefix(4).joined(separator: "\n") + "\n")
        try MetricsWriter.truncate(path: p, keepingStepsThrough: 0)
        XCTAssertEqual(try String(contentsOfFile: p, encoding: .utf8), "")
        XCTAssertNoThrow(try MetricsWriter.truncate(path: work + "/absent.jsonl", keepingStepsThrough: 3))
        XCTAssertFalse(FileManager.default.fileExists(atPath: work + "/absent.jsonl"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: work).filter { $0.contains(".tmp-") }, [])
    }
}
