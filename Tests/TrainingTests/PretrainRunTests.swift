import XCTest
import Foundation

/// End-to-end runs of `trainer pretrain` with a tiny model on the first rows of Tests/Fixtures/corpus/pretrain.jsonl.
final class PretrainRunTests: XCTestCase {
    var work = ""
    var data = ""
    var cache = ""

    override func setUpWithError() throws {
        work = TrainerRunner.tempDir("pretrain")
        cache = work + "/cache"
        data = work + "/train.jsonl"
        try TrainerRunner.writeCorpusHead(400, to: data)
        let dir = work
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
    }

    func args(out: String, batch: Int, accumulation: Int, steps: Int = 20, extra: [String] = []) -> [String] {
        ["pretrain", "--data-path", data, "--tokenizer", TrainerRunner.tokenizer, "--cache-dir", cache,
         "--hidden-size", "32", "--num-hidden-layers", "2", "--max-seq-len", "33",
         "--batch-size", "\(batch)", "--accumulation-steps", "\(accumulation)", "--learning-rate", "1e-3",
         "--max-steps", "\(steps)", "--log-interval", "1", "--save-interval", "10", "--seed", "5", "--threads", "1",
         "--out-dir", out] + extra
    }

    func train(_ name: String, np: Int, batch: Int, accumulation: Int, extra: [String] = [], out: String? = nil) throws -> String {
        let o = out ?? work + "/" + name
        let r = try TrainerRunner.run(args(out: o, batch: batch, accumulation: accumulation, extra: extra), np: np)
        XCTAssertFalse(r.timedOut, "\(name) timed out:\n\(r.stderr)")
        XCTAssertEqual(r.status, 0, "\(name) failed:\n\(r.stdout)\n\(r.stderr)")
        return o
    }

    /// `-np 2` batch B, `-np 1` batch 2B and `-np 1` batch B × 2 accumulation steps optimise the same global loss
    /// Σ CE·mask / Σ mask, so they give the same loss sequence and the same parameters up to fp32 summation order.
    func testDataParallelBatchAndAccumulationAreEquivalent() throws {
        let np2 = try train("np2", np: 2, batch: 4, accumulation: 1)
        let big = try train("np1-b8", np: 1, batch: 8, accumulation: 1)
        let acc = try train("np1-b4x2", np: 1, batch: 4, accumulation: 2)
        let ref = try TrainerRunner.losses(outDir: big)
        XCTAssertEqual(ref.map(\.step), Array(1 ... 20))
        XCTAssertLessThan(ref.last!.loss, ref.first!.loss, "the loss should fall over 20 steps")
        let pRef = try TrainerRunner.parameters(big + "/final")
        for other in [np2, acc] {
            let l = try TrainerRunner.losses(outDir: other)
            XCTAssertEqual(l.map(\.step), ref.map(\.step))
            let dl = zip(l, ref).map { abs($0.loss - $1.loss) }.max()!
            XCTAssertLessThan(dl, 1e-5, "\(other): max loss difference \(dl)")
            let p = try TrainerRunner.parameters(other + "/final")
            XCTAssertEqual(p.count, pRef.count)
            let dp = zip(p, pRef).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(dp, 1e-5, "\(other): max parameter difference \(dp)")
            print("equivalence \((other as NSString).lastPathComponent) vs np1-b8: max |Δloss| \(dl), max |Δparam| \(dp)")
        }
    }

    /// Resuming from checkpoint-10 of a 20-step run gives exactly the losses of steps 11…20; resuming the same
    /// checkpoint with 2 ranks (same global batch) continues at the same global sample, equal up to fp32 rounding.
    func testResumeContinuesWithTheIdenticalLossSequence() throws {
        let full = try train("full", np: 1, batch: 8, accumulation: 1)
        let ref = try TrainerRunner.losses(outDir: full)
        let fm = FileManager.default
        XCTAssertTrue(fm.fileExists(atPath: full + "/checkpoint-10/trainer_state.json"))
        XCTAssertTrue(fm.fileExists(atPath: full + "/checkpoint-20/optimizer.safetensors"))
        for (name, np, batch) in [("resumed", 1, 8), ("resumed-np2", 2, 4)] {
            let out = work + "/" + name
            try fm.createDirectory(atPath: out, withIntermediateDirectories: true)
            try fm.copyItem(atPath: full + "/checkpoint-10", toPath: out + "/checkpoint-10")
            _ = try train(name, np: np, batch: batch, accumulation: 1, extra: ["--resume"], out: out)
            let l = try TrainerRunner.losses(outDir: out)
            XCTAssertEqual(l.map(\.step), Array(11 ... 20))
            if np == 1 {
                XCTAssertEqual(l.map(\.loss), Array(ref.suffix(10)).map(\.loss), "resumed losses differ")
                XCTAssertEqual(try TrainerRunner.parameters(out + "/final"), try TrainerRunner.parameters(full + "/final"))
            } else {
                let d = zip(l, ref.suffix(10)).map { abs($0.loss - $1.loss) }.max()!
                XCTAssertLessThan(d, 1e-5, "resume on 2 ranks: max loss difference \(d)")
            }
        }
        // A newest checkpoint whose files cannot be read (here a truncated optimizer state, as a node crash before
        // the page cache reached the disk can leave it) is skipped, with a warning, for the one before it.
        let damaged = work + "/damaged"
        try fm.createDirectory(atPath: damaged, withIntermediateDirectories: true)
        for c in ["checkpoint-10", "checkpoint-20"] { try fm.copyItem(atPath: full + "/" + c, toPath: damaged + "/" + c) }
        XCTAssertEqual(truncate(damaged + "/checkpoint-20/optimizer.safetensors", 100), 0)
        let dr = try TrainerRunner.run(args(out: damaged, batch: 8, accumulation: 1, extra: ["--resume"]))
        XCTAssertEqual(dr.status, 0, dr.stderr)
        XCTAssertTrue(dr.stderr.contains("--resume: skipped a checkpoint that cannot be read: \(damaged)/checkpoint-20"), dr.stderr)
        XCTAssertTrue(dr.stderr.contains("resumed from \(damaged)/checkpoint-10 at step 10"), dr.stderr)
        XCTAssertEqual(try TrainerRunner.losses(outDir: damaged).map(\.loss), Array(ref.suffix(10)).map(\.loss))
        XCTAssertEqual(try TrainerRunner.parameters(damaged + "/final"), try TrainerRunner.parameters(full + "/final"))
        // A checkpoint trained on other data (here: another shuffle seed) is refused, not silently continued.
        let other = work + "/other-seed"
        try fm.createDirectory(atPath: other, withIntermediateDirectories: true)
        try fm.copyItem(atPath: full + "/checkpoint-10", toPath: other + "/checkpoint-10")
        var a = args(out: other, batch: 8, accumulation: 1, extra: ["--resume"])
        a[a.firstIndex(of: "--seed")! + 1] = "6"
        let r = try TrainerRunner.run(a)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("trained on other data"), r.stderr)
        // keep-checkpoints 2: only the newest two remain.
        let names = try fm.contentsOfDirectory(atPath: full).filter { $0.hasPrefix("checkpoint-") }.sorted()
        XCTAssertEqual(names, ["checkpoint-10", "checkpoint-20"])
        XCTAssertTrue(fm.fileExists(atPath: full + "/final/model.safetensors"))
        XCTAssertTrue(fm.fileExists(atPath: full + "/final/tokenizer.json"))
    }

    /// A malformed line makes every rank stop with the file and line, instead of hanging.
    func testMalformedDataStopsAllRanksWithFileAndLine() throws {
        let bad = work + "/bad.jsonl"
        try "{\"text\": \"ok\"}\n{\"text\": broken}\n".write(toFile: bad, atomically: true, encoding: .utf8)
        var a = args(out: work + "/bad", batch: 1, accumulation: 1)
        a[a.firstIndex(of: data)!] = bad
        let r = try TrainerRunner.run(a, np: 2, timeout: 60)
        XCTAssertFalse(r.timedOut)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("\(bad):2"), r.stderr)
    }

    /// Ranks started with different options stop together with a message naming the disagreement.
    func testRanksWithDifferentOptionsRefuseToTrain() throws {
        let a = args(out: work + "/mismatch", batch: 4, accumulation: 1)
        var b = a
        b[b.firstIndex(of: "1e-3")!] = "2e-3"
        let r = try TrainerRunner.run(a, np: 2, timeout: 60, secondRankArgs: b)
        XCTAssertFalse(r.timedOut, "hung:\n\(r.stderr)")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("pretrain configuration and data"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: work + "/mismatch/final"))
    }
}
