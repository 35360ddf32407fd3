import XCTest
import Foundation
import Model
import Training
import TestSupport

/// `trainer grpo` end to end with the tiny GRPO golden policy: `-np 2` equals `-np 1` with the same global rollouts,
/// `--resume` after kill -9 equals the uninterrupted run, and the rule rewards' pieces.
final class GRPORunTests: XCTestCase {
    var work = ""

    override func setUpWithError() throws {
        work = TrainerRunner.tempDir("grpo")
        let d = work
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
    }

    /// The first `n` rows of reason.jsonl (user question + reference answer as a trailing assistant turn).
    func prompts(_ n: Int) throws -> String {
        let lines = try String(contentsOfFile: Fixtures.corpus("reason.jsonl"), encoding: .utf8).split(separator: "\n")
        let p = work + "/prompts.jsonl"
        try (lines.prefix(n).joined(separator: "\n") + "\n").write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    func args(out: String, data: String, batch: Int, steps: Int, saveInterval: Int = 100) -> [String] {
        ["grpo", "--init", golden("grpo_policy"), "--tokenizer", TrainerRunner.tokenizer, "--data-path", data,
         "--batch-size", "\(batch)", "--num-generations", "3", "--max-gen-len", "6", "--max-seq-len", "64",
         "--learning-rate", "1e-3", "--max-steps", "\(steps)", "--epochs", "20", "--log-interval", "1",
         "--save-interval", "\(saveInterval)", "--threads", "1", "--reward-rule", "minimind+answer", "--out-dir", out]
    }

    /// 2 ranks × 1 prompt per step and 1 rank × 2 prompts read the same global prompts; the rollouts are keyed by
    /// (seed, step, prompt index, generation), so the runs see the same rollouts and end with the same weights (up to
    /// the float summation order of the all-reduce).
    func testTwoRanksEqualOneRank() throws {
        let data = try prompts(8)
        let one = work + "/np1", two = work + "/np2"
        let r1 = try TrainerRunner.run(args(out: one, data: data, batch: 2, steps: 3), np: 1)
        XCTAssertEqual(r1.status, 0, r1.stderr)
        let r2 = try TrainerRunner.run(args(out: two, data: data, batch: 1, steps: 3), np: 2)
        XCTAssertEqual(r2.status, 0, r2.stderr)
        let m1 = try metrics(one), m2 = try metrics(two)
        XCTAssertEqual(m1.count, 3); XCTAssertEqual(m2.count, 3)
        for (a, b) in zip(m1, m2) {
            for k in ["reward", "completion_len", "reward_length", "reward_answer"] {
                XCTAssertEqual(a[k] as? Double, b[k] as? Double, "step \(a["step"]!): \(k)")
            }
            XCTAssertEqual((a["loss"] as! Double), (b["loss"] as! Double), accuracy: 1e-6)
            XCTAssertEqual((a["kl"] as! Double), (b["kl"] as! Double), accuracy: 1e-6)
        }
        // The rollouts differ between prompts, so the advantages (and the update) are not all zero.
        XCTAssertTrue(m1.contains { ($0["grad_norm"] as! Double) > 0 }, "no gradient: every group had equal rewards")
        let p1 = try TrainerRunner.parameters(one + "/final"), p2 = try TrainerRunner.parameters(two + "/final")
        let p0 = try TrainerRunner.parameters(golden("grpo_policy"))
        // The two runs sum the same per-row gradients in another order (one micro-batch of 6 rows vs two ranks of 3 and
        // an all-reduce), so gradients agree to float rounding, not bit for bit. AdamW's first steps are ≈ lr·sign(g)
        // (m/√v) for |g| ≫ eps but lr·g/(|g| + 1e-8) for an element whose gradient is itself near eps, where a
        // rounding-size change of g moves the update by a visible fraction of lr: measured 4 such elements of 508k, the
        // largest 1.9e-5 for a movement of 2.3e-3. So: every element within 1e-6 except at most 1 in 10^4, and none
        // more than 2% of the largest movement away.
        var d: Float = 0, moved: Float = 0, off = 0
        for i in p1.indices {
            let e = abs(p1[i] - p2[i])
            d = max(d, e); moved = max(moved, abs(p1[i] - p0[i]))
            if e > 1e-6 { off += 1 }
        }
        XCTAssertGreaterThan(moved, 1e-4, "the policy did not move")
        XCTAssertLessThanOrEqual(off, p1.count / 10_000, "\(off) of \(p1.count) weights differ by more than 1e-6")
        XCTAssertLessThan(d, 0.02 * moved, "np 2 vs np 1 final weights differ by \(d) (moved \(moved))")
    }

    /// kill -9 once checkpoint-3 (or a later one) exists, then --resume: the same losses and bit-identical final weights as an uninterrupted
    /// run (weights, AdamW moments and the step restored; the rollouts are a function of them and the step).
    func testResumeAfterKill9MatchesUninterrupted() throws {
        let data = try prompts(8)
        let steps = 30
        let whole = work + "/whole", cut = work + "/cut"
        let w = try TrainerRunner.run(args(out: whole, data: data, batch: 2, steps: steps), np: 1, timeout: 300)
        XCTAssertEqual(w.status, 0, w.stderr)
        final class Killed: @unchecked Sendable { var done = false }
        let killed = Killed()
        let c = try TrainerRunner.run(args(out: cut, data: data, batch: 2, steps: steps, saveInterval: 1), np: 1, timeout: 300) { pid in
            let t0 = Date()
            while Date().timeIntervalSince(t0) < 120 {
                // checkpoint-3 or a later one (with --save-interval 1 and 2 checkpoints kept, checkpoint-3 lives for
                // two steps only and a fast run can prune it between two looks).
                let names = (try? FileManager.default.contentsOfDirectory(atPath: cut)) ?? []
                if names.contains(where: { $0.hasPrefix("checkpoint-") && (Int($0.dropFirst(11)) ?? 0) >= 3 }) {
                    kill(pid, SIGKILL); killed.done = true; return
                }
                usleep(5_000)
            }
        }
        XCTAssertTrue(killed.done, "no checkpoint-3 or later appeared\n\(c.stderr.suffix(2000))")
        XCTAssertFalse(FileManager.default.fileExists(atPath: cut + "/final"), "the run ended before kill -9; make it longer")
        let r = try TrainerRunner.run(args(out: cut, data: data, batch: 2, steps: steps, saveInterval: 1) + ["--resume"], np: 1, timeout: 300)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("resumed from \(cut)/checkpoint-"), r.stderr.suffix(2000).description)
        let a = try TrainerRunner.losses(outDir: whole), b = try TrainerRunner.losses(outDir: cut)
        XCTAssertEqual(b.map(\.step), a.map(\.step))
        XCTAssertEqual(b.map(\.loss), a.map(\.loss), "losses of the killed + resumed run vs the uninterrupted one")
        XCTAssertEqual(try TrainerRunner.parameters(cut + "/final"), try TrainerRunner.parameters(whole + "/final"), "final weights")
    }

    /// `--reward-model DIR`: the reward model's score is added to the rule rewards and logged as `reward_model`
    /// (a reward model made from the reference golden with a seeded score head, saved as `trainer reward` saves one).
    func testRewardModelScoreIsAdded() throws {
        let rmDir = work + "/rm"
        let rm = try MiniMindModel.load(directory: golden("grpo_reference"), withGradients: false).withScoreHead(seed: 7)
        try FileManager.default.createDirectory(atPath: rmDir, withIntermediateDirectories: true)
        try rm.save(directory: rmDir)
        let out = work + "/with-rm"
        let r = try TrainerRunner.run(args(out: out, data: try prompts(4), batch: 2, steps: 1) + ["--reward-model", rmDir], np: 1)
        XCTAssertEqual(r.status, 0, r.stderr)
        let m = try XCTUnwrap(try metrics(out).first)
        let parts = ["reward_length", "reward_think", "reward_repetition", "reward_answer", "reward_model"].map { m[$0] as! Double }
        XCTAssertNotEqual(parts[4], 0, "no reward-model score")
        XCTAssertEqual(m["reward"] as! Double, parts.reduce(0, +), accuracy: 1e-9)
        // Not a reward model: refused with the directory named.
        let bad = try TrainerRunner.run(args(out: work + "/bad", data: try prompts(4), batch: 2, steps: 1) + ["--reward-model", golden("grpo_reference")], np: 1)
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("not a reward model"), bad.stderr)
    }

    /// A prompt file the run could only waste steps on is refused at load, naming the line: a role MiniMind's chat
    /// template would drop, an answer reference with no number under `--reward-rule answer` (its reward could only be
    /// 0), a boolean "answer". A prompt far longer than the reward model's positions is cut for it, as for the policy.
    func testPromptFileErrorsAndLongPromptsWithARewardModel() throws {
        let rows: [(String, String)] = [
            (#"{"conversations":[{"role":"human","content":"有几行？"}],"answer":"4"}"#, #"field "conversations[0].role" is "human", a role the chat template does not render"#),
            (#"{"conversations":[{"role":"user","content":"有几行？"},{"role":"assistant","content":"<answer>四行</answer>"}]}"#, "needs a number in the reference answer"),
            (#"{"conversations":[{"role":"user","content":"有几行？"}],"answer":true}"#, #"field "answer" must be a string or a number, got a boolean"#),
        ]
        for (k, (row, message)) in rows.enumerated() {
            let data = work + "/bad\(k).jsonl"
            try (try String(contentsOfFile: try prompts(1), encoding: .utf8) + row + "\n").write(toFile: data, atomically: true, encoding: .utf8)
            let r = try TrainerRunner.run(args(out: work + "/bad-out\(k)", data: data, batch: 1, steps: 1), np: 1)
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains("bad\(k).jsonl:2: ") && r.stderr.contains(message), r.stderr)
        }
        let rmDir = work + "/rm"
        let rm = try MiniMindModel.load(directory: golden("grpo_reference"), withGradients: false).withScoreHead(seed: 7)
        try FileManager.default.createDirectory(atPath: rmDir, withIntermediateDirectories: true)
        try rm.save(directory: rmDir)
        let long = String(decoding: try JSONSerialization.data(withJSONObject: [
            "conversations": [["role": "user", "content": String(repeating: "长", count: 40000) + "有几行？"]], "answer": "4"]), as: UTF8.self)
        let data = work + "/long.jsonl"
        try (long + "\n").write(toFile: data, atomically: true, encoding: .utf8)
        let r = try TrainerRunner.run(args(out: work + "/long-out", data: data, batch: 1, steps: 1) + ["--reward-model", rmDir], np: 1)
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    func metrics(_ out: String) throws -> [[String: Any]] {
        try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }

    /// MiniMind's rule rewards and the answer reward on hand-made replies.
    func testRewardRules() {
        let think = "<think>\n" + String(repeating: "想", count: 25) + "\n</think>\n<answer>\n一共有6行。\n</answer>"
        let p = GRPORewards.miniMindRules(reply: think)
        XCTAssertEqual(p.length, 0.5)
        XCTAssertEqual(p.think, 1.25)
        XCTAssertEqual(p.repetition, 0)
        let twice = "<think>ab</think></think>" + String(repeating: "x", count: 900)
        let q = GRPORewards.miniMindRules(reply: twice)
        XCTAssertEqual(q.length, -0.5)
        XCTAssertEqual(q.think, -0.75)
        // "a b c a b c a b c": 7 trigrams, 3 distinct → min(0.5, 4·0.5·2/7).
        XCTAssertEqual(GRPORewards.repetitionPenalty("a b c a b c a b c"), 0.5)
        XCTAssertEqual(GRPORewards.repetitionPenalty("a b c d a b c"), min(0.5, 1 * 0.5 * 2 / 5), accuracy: 1e-12)
        XCTAssertEqual(GRPORewards.repetitionPenalty("Hello, world"), 0)
        XCTAssertEqual(GRPORewards.answerReward(reply: think, reference: "<think>…</think>\n<answer>\n《自责二首》一共有6行。\n</answer>"), 1)
        XCTAssertEqual(GRPORewards.answerReward(reply: think, reference: "7"), 0)
        // The rule of eval's answer_accuracy: the first number of the <answer> block with titles removed (a title may
        // hold digits), the whole reply when it has no block.
        XCTAssertEqual(GRPORewards.answerReward(reply: "<answer>《七律2首》一共有6行。</answer>", reference: "6"), 1)
        XCTAssertEqual(GRPORewards.answerReward(reply: "第1行：…\n<answer>共8行</answer>", reference: "<answer>8</answer>"), 1)
        XCTAssertEqual(GRPORewards.answerReward(reply: "第1行：…一共有6行。", reference: "6"), 0, "no block: the whole reply's first number (1)")
        XCTAssertEqual(GRPORewards.answerReward(reply: "<answer>没有数字</answer>", reference: "6"), 0)
    }

    /// The advantages and the completion mask, as the golden's json defines them.
    func testAdvantagesAndCompletionMask() {
        let a = GRPOLoss.advantages(rewards: [1, -0.5, 0, 0.5, 0.5, 0.5], groupSize: 3)
        let sd = (((1 - 1.0 / 6) * (1 - 1.0 / 6) + (-0.5 - 1.0 / 6) * (-0.5 - 1.0 / 6) + (1.0 / 6) * (1.0 / 6)) / 3).squareRoot()
        XCTAssertEqual(Double(a[0]), (1 - 1.0 / 6) / (sd + 1e-4), accuracy: 1e-6)
        XCTAssertEqual(Array(a[3...]), [0, 0, 0])
        // eos (2) then more tokens; two eos; no eos; pad slot.
        let comp: [Int32] = [5, 2, 7, 2, 2, 9, 5, 6, 7, 5, 6, 0]
        let pad = [false, false, false, false, false, false, false, false, false, false, false, true]
        XCTAssertEqual(GRPOLoss.completionMask(completion: comp, isPad: pad, rows: 4, slots: 3, eos: 2),
                       [1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 0])
    }
}
