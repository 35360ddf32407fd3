import XCTest
import Foundation
import Model
import TestSupport

/// End-to-end runs of `trainer sft|lora|dpo|reason|distill|reward` under `mpirun -np 2` with the tiny golden models, then a
/// single-rank `--resume` from checkpoint-2 that must continue with the same losses (same global batch).
final class StageRunTests: XCTestCase {
    var work = ""
    func corpus(_ f: String) -> String { Fixtures.corpus(f) }

    override func setUpWithError() throws {
        work = TrainerRunner.tempDir("stages")
        let d = work
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
    }

    func head(_ f: String, _ n: Int) throws -> String {
        let lines = try String(contentsOfFile: corpus(f), encoding: .utf8).split(separator: "\n")
        let p = work + "/" + f
        try (lines.prefix(n).joined(separator: "\n") + "\n").write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    /// Trains 4 steps on 2 ranks (batch 2 each), then resumes checkpoint-2 on 1 rank (batch 4): steps 3…4 must match.
    func runAndResume(_ stage: [String], data: String, extra: [String], lr: String = "1e-3") throws -> String {
        let out = work + "/" + stage.joined(separator: "-")
        func args(_ o: String, batch: Int) -> [String] {
            stage + ["--data-path", data, "--tokenizer", TrainerRunner.tokenizer, "--max-seq-len", "48", "--batch-size", "\(batch)",
                     "--learning-rate", lr, "--max-steps", "4", "--epochs", "4", "--log-interval", "1", "--save-interval", "2",
                     "--threads", "1", "--out-dir", o, "--cache-dir", work + "/cache"] + extra
        }
        let r = try TrainerRunner.run(args(out, batch: 2), np: 2)
        XCTAssertEqual(r.status, 0, "\(stage) failed:\n\(r.stderr)")
        XCTAssertTrue(r.stderr.contains("token cache built") || r.stderr.contains("token cache reused"), r.stderr)
        let ref = try TrainerRunner.losses(outDir: out)
        XCTAssertEqual(ref.map(\.step), [1, 2, 3, 4], "\(stage)")
        XCTAssertTrue(ref.allSatisfy { $0.loss.isFinite })
        let res = out + "-resumed"
        try FileManager.default.createDirectory(atPath: res, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: out + "/checkpoint-2", toPath: res + "/checkpoint-2")
        let r2 = try TrainerRunner.run(args(res, batch: 4) + ["--resume"], np: 1)
        XCTAssertEqual(r2.status, 0, "\(stage) resume failed:\n\(r2.stderr)")
        XCTAssertTrue(r2.stderr.contains("token cache reused"), "the second launch reuses the cache:\n\(r2.stderr)")
        let l = try TrainerRunner.losses(outDir: res)
        XCTAssertEqual(l.map(\.step), [3, 4])
        let d = zip(l, ref.suffix(2)).map { abs($0.loss - $1.loss) }.max() ?? 1
        XCTAssertLessThan(d, 1e-4, "\(stage): resumed losses differ by \(d)")
        return out
    }

    func testSFT() throws {
        let out = try runAndResume(["sft"], data: try head("sft.jsonl", 40), extra: ["--init", golden("distill_student")])
        let l = try TrainerRunner.losses(outDir: out)
        XCTAssertLessThan(l.last!.loss, l.first!.loss)
    }

    func testReason() throws {
        _ = try runAndResume(["reason"], data: try head("reason.jsonl", 24), extra: ["--init", golden("distill_student")])
    }

    func testDPO() throws {
        let data = try head("dpo.jsonl", 24)
        let out = try runAndResume(["dpo"], data: data, extra: ["--init", golden("dpo_policy"), "--reference", golden("dpo_reference")],
                                   lr: "1e-4")
        // Resuming with another objective (here β) is refused, naming what changed.
        let r = try TrainerRunner.run(["dpo", "--data-path", data, "--tokenizer", TrainerRunner.tokenizer, "--max-seq-len", "48",
                                       "--batch-size", "4", "--learning-rate", "1e-4", "--max-steps", "6", "--epochs", "4", "--threads", "1",
                                       "--out-dir", out, "--cache-dir", work + "/cache", "--init", golden("dpo_policy"),
                                       "--reference", golden("dpo_reference"), "--beta", "0.5", "--resume"])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("what changed: \"beta 0.1 reference \(golden("dpo_reference"))\" → \"beta 0.5 reference \(golden("dpo_reference"))\""), r.stderr)
    }

    /// The reward model from a causal LM: the head is added, trained with the backbone (pair accuracy logged), and
    /// final/ is a LlamaForSequenceClassification directory with score.weight.
    func testReward() throws {
        let out = try runAndResume(["reward"], data: try head("dpo.jsonl", 24), extra: ["--init", golden("dpo_policy")])
        let rows = try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        XCTAssertEqual(rows.map { $0["stage"] as? String }, [String?](repeating: "reward", count: 4))
        for r in rows { let a = try XCTUnwrap(r["pair_acc"] as? Double); XCTAssertTrue((0...1).contains(a), "\(a)") }
        let cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/final/config.json"))) as! [String: Any]
        XCTAssertEqual(cfg["architectures"] as? [String], ["LlamaForSequenceClassification"])
        XCTAssertEqual(cfg["num_labels"] as? Int, 1)
        XCTAssertEqual(cfg["pad_token_id"] as? Int, 0)
        let m = try MiniMindModel.load(directory: out + "/final")
        let start = try MiniMindModel.load(directory: golden("dpo_policy"))
        XCTAssertEqual(m.scoreHead?.shape, [1, m.config.hiddenSize])
        XCTAssertNotEqual(Array(m.params.prefix(start.numParameters)), Array(start.params), "the backbone trains too")
    }

    func testDistill() throws {
        _ = try runAndResume(["distill"], data: try head("sft.jsonl", 40), extra: ["--init", golden("distill_student"), "--teacher", golden("distill_teacher")])
    }

    /// Only the adapters train (the base in final/ is unchanged); the adapter is saved alone; `lora merge` folds it in.
    func testLoRA() throws {
        let out = try runAndResume(["lora"], data: corpus("lora_identity.jsonl"), extra: ["--init", golden("lora_base"), "--lora-rank", "4"])
        XCTAssertEqual(try TrainerRunner.parameters(out + "/final"), try TrainerRunner.parameters(golden("lora_base")))
        let f = try SafeTensorsFile(path: out + "/lora.safetensors")
        XCTAssertEqual(Set(f.entries.keys), Set((0..<2).flatMap { l in ["q_proj", "o_proj"].flatMap { m in
            ["A", "B"].map { "model.layers.\(l).self_attn.\(m).lora.\($0).weight" } } }))
        XCTAssertGreaterThan(try f.floats("model.layers.0.self_attn.q_proj.lora.B.weight").map(abs).max()!, 0)
        let merged = work + "/merged"
        let r = try TrainerRunner.run(["lora", "merge", "--model", golden("lora_base"), "--lora", out + "/lora.safetensors", "--out", merged])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertNotEqual(try TrainerRunner.parameters(merged), try TrainerRunner.parameters(golden("lora_base")))
    }

    /// Every stage reads the shared token cache: a malformed line stops both ranks with FILE:LINE (rank 0 builds,
    /// rank 1 waits in the idle barrier and is brought down with it).
    func testMalformedChatLineStopsAllRanksWithFileAndLine() throws {
        for (stage, file, model) in [("sft", "sft.jsonl", "distill_student"), ("dpo", "dpo.jsonl", "dpo_policy")] {
            let p = try head(file, 6)
            var lines = try String(contentsOfFile: p, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            lines[4] = String(lines[4].dropLast(3))   // line 5: cut JSON
            try lines.joined(separator: "\n").write(toFile: p, atomically: true, encoding: .utf8)
            let r = try TrainerRunner.run([stage, "--data-path", p, "--tokenizer", TrainerRunner.tokenizer, "--init", golden(model),
                                           "--max-seq-len", "32", "--batch-size", "1", "--max-steps", "1", "--threads", "1",
                                           "--out-dir", work + "/bad-" + stage, "--cache-dir", work + "/bad-cache"], np: 2, timeout: 60)
            XCTAssertFalse(r.timedOut, "\(stage) hung:\n\(r.stderr)")
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains("\(p):5: malformed JSON at column "), r.stderr)
        }
    }
}
