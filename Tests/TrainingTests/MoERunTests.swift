import XCTest
import Foundation

/// `trainer pretrain --use-moe`: the aux loss is averaged like the CE (MiniMind's (ce + aux)/accumulation with DDP
/// averaging), so `-np 2` batch B, `-np 1` batch 2B and `-np 1` batch B × 2 accumulation give the same losses and
/// parameters; metrics carry ce / aux_loss / tokens_per_expert; the final config.json is a MoE one.
final class MoERunTests: XCTestCase {
    func testMoEPretrainEquivalenceAndMetrics() throws {
        let work = TrainerRunner.tempDir("moe-pretrain")
        addTeardownBlock { try? FileManager.default.removeItem(atPath: work) }
        let data = work + "/train.jsonl"
        let lines = try String(contentsOfFile: TrainerRunner.corpus, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        try (lines.prefix(200).joined(separator: "\n") + "\n").write(toFile: data, atomically: true, encoding: .utf8)
        func train(_ name: String, np: Int, batch: Int, acc: Int) throws -> String {
            let o = work + "/" + name
            let a = ["pretrain", "--data-path", data, "--tokenizer", TrainerRunner.tokenizer, "--cache-dir", work + "/cache",
                     "--hidden-size", "32", "--num-hidden-layers", "2", "--max-seq-len", "33", "--batch-size", "\(batch)",
                     "--accumulation-steps", "\(acc)", "--learning-rate", "1e-3", "--max-steps", "10", "--log-interval", "1",
                     "--save-interval", "100", "--seed", "5", "--threads", "1", "--out-dir", o,
                     "--use-moe", "--n-routed-experts", "3", "--num-experts-per-tok", "2", "--intermediate-size", "32"]
            let r = try TrainerRunner.run(a, np: np)
            XCTAssertFalse(r.timedOut, "\(name) timed out:\n\(r.stderr)")
            XCTAssertEqual(r.status, 0, "\(name) failed:\n\(r.stdout)\n\(r.stderr)")
            return o
        }
        let big = try train("np1-b8", np: 1, batch: 8, acc: 1)
        let ref = try TrainerRunner.losses(outDir: big)
        XCTAssertEqual(ref.map(\.step), Array(1 ... 10))
        let pRef = try TrainerRunner.parameters(big + "/final")
        for other in [try train("np2", np: 2, batch: 4, acc: 1), try train("np1-b4x2", np: 1, batch: 4, acc: 2)] {
            let l = try TrainerRunner.losses(outDir: other)
            let dl = zip(l, ref).map { abs($0.loss - $1.loss) }.max()!
            XCTAssertLessThan(dl, 1e-5, "\(other): max loss difference \(dl)")
            let p = try TrainerRunner.parameters(other + "/final")
            let dp = zip(p, pRef).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(dp, 1e-5, "\(other): max parameter difference \(dp)")
            print("moe equivalence \((other as NSString).lastPathComponent) vs np1-b8: max |Δloss| \(dl), max |Δparam| \(dp)")
        }
        let rec = try String(contentsOfFile: big + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").last!
        let j = try JSONSerialization.jsonObject(with: Data(rec.utf8)) as! [String: Any]
        let loss = j["loss"] as! Double, ce = j["ce"] as! Double, aux = j["aux_loss"] as! Double
        XCTAssertEqual(loss, ce + aux, accuracy: 1e-9)
        XCTAssertGreaterThan(aux, 0)
        let counts = j["tokens_per_expert"] as! [[Int]]
        XCTAssertEqual(counts.count, 2); XCTAssertEqual(counts[0].count, 3)
        let cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: big + "/final/config.json"))) as! [String: Any]
        XCTAssertEqual(cfg["use_moe"] as? Bool, true); XCTAssertEqual(cfg["n_routed_experts"] as? Int, 3)
    }
}
