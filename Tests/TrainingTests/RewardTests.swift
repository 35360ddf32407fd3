import XCTest
import Foundation
import Model
import Tokenizers
import Training
import TestSupport

/// The reward model outside training: `RewardModel` (the API GRPO scores with) against the PyTorch golden, the head's
/// initialisation, and a directory written by `trainer reward` read back by `trainer reward score`,
/// `trainer eval --task preference --reward-model` and transformers' `LlamaForSequenceClassification`.
/// (The training step itself: `PostTrainingGoldenTests.testRewardStep`; a 2-rank run and resume: `StageRunTests.testReward`.)
final class RewardTests: XCTestCase {
    var work = ""

    override func setUpWithError() throws {
        work = TrainerRunner.tempDir("reward")
        let d = work
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
    }

    /// The golden batch's rows, unpadded (`last_index` + 1 ids each), and its rewards.
    func goldenRows() throws -> (rows: [[Int32]], rewards: [Float]) {
        let g = try SafeTensorsFile(path: golden("reward_step.safetensors"))
        let ids = try g.int32s("input_ids"), last = try g.int32s("last_index"), T = try g.entry("input_ids").shape[1]
        let rows = last.enumerated().map { i, l in Array(ids[i * T ... i * T + Int(l)]) }
        return (rows, try g.floats("rewards"))
    }

    /// `RewardModel.scores(sequences:)` on unpadded rows gives the golden's rewards (computed on padded rows), in one
    /// batch and one sequence at a time.
    func testRewardModelScoresMatchGolden() throws {
        let (rows, want) = try goldenRows()
        let rm = try RewardModel(directory: golden("reward_model"))
        for bs in [8, 1] {
            rm.batchSize = bs
            let got = try rm.scores(sequences: rows)
            XCTAssertEqual(got.count, want.count)
            for (a, b) in zip(got, want) { XCTAssertEqual(a, b, accuracy: 1e-4, "batch size \(bs)") }
        }
        XCTAssertThrowsError(try rm.scores(sequences: [[]])) { XCTAssertTrue("\($0)".contains("sequence 0 is empty"), "\($0)") }
        XCTAssertThrowsError(try rm.scores(sequences: [[1, 6400]])) { XCTAssertTrue("\($0)".contains("outside [0, 6400)"), "\($0)") }
        XCTAssertThrowsError(try RewardModel(directory: golden("dpo_policy"))) { XCTAssertTrue("\($0)".contains("not a reward model"), "\($0)") }
    }

    /// A new head is N(0, 0.02²) (transformers' initializer_range), deterministic in the seed; the backbone is kept.
    func testScoreHeadInitialisation() throws {
        let base = try MiniMindModel.load(directory: golden("dpo_policy"))
        let a = try base.withScoreHead(seed: 7), b = try base.withScoreHead(seed: 7), c = try base.withScoreHead(seed: 8)
        let head = try XCTUnwrap(a.scoreHead)
        XCTAssertEqual(head.shape, [1, base.config.hiddenSize])
        XCTAssertEqual(a.config.numLabels, 1); XCTAssertEqual(a.config.padTokenId, 0)
        XCTAssertEqual(Array(a.params.prefix(base.numParameters)), Array(base.params))
        let w = Array(a.params[head.range])
        XCTAssertEqual(w, Array(b.params[head.range]))
        XCTAssertNotEqual(w, Array(c.params[head.range]))
        let mean = w.reduce(0, +) / Float(w.count)
        let std = (w.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(w.count)).squareRoot()
        XCTAssertLessThan(abs(mean), 0.01)
        XCTAssertTrue((0.014...0.026).contains(std), "std \(std) of 64 draws of N(0, 0.02²)")
    }

    /// `trainer reward` (3 steps from a causal LM) writes a directory that `reward score`, `eval --task preference
    /// --reward-model` and transformers read with the same scores.
    func testTrainedDirectoryScoreEvalAndTransformers() throws {
        let lines = try String(contentsOfFile: Fixtures.corpus("dpo.jsonl"), encoding: .utf8).split(separator: "\n").prefix(12)
        let data = work + "/pairs.jsonl"
        try (lines.joined(separator: "\n") + "\n").write(toFile: data, atomically: true, encoding: .utf8)
        let out = work + "/rm"
        let r = try TrainerRunner.run(["reward", "--data-path", data, "--init", golden("dpo_policy"), "--tokenizer", TrainerRunner.tokenizer,
                                       "--max-seq-len", "64", "--batch-size", "2", "--max-steps", "3", "--log-interval", "1",
                                       "--threads", "1", "--out-dir", out, "--cache-dir", work + "/cache"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let dir = out + "/final"
        let rm = try RewardModel(directory: dir)
        let tok = try XCTUnwrap(rm.tokenizer)

        // reward score: one number per line, the library's scores of the same conversations.
        var convs: [[ChatMessage]] = []
        var stdin = ""
        for l in lines.prefix(3) {
            let o = try JSONSerialization.jsonObject(with: Data(l.utf8)) as! [String: Any]
            for side in ["chosen", "rejected"] {
                let turns = o[side] as! [[String: String]]
                convs.append(turns.map { ChatMessage(role: $0["role"]!, content: $0["content"]!) })
                stdin += String(decoding: try JSONSerialization.data(withJSONObject: ["conversations": turns]), as: UTF8.self) + "\n"
            }
        }
        let s = try TrainerRunner.run(["reward", "score", "--model", dir, "--batch-size", "4"], stdin: stdin)
        XCTAssertEqual(s.status, 0, s.stderr)
        let printed = s.stdout.split(separator: "\n").map { Float($0)! }
        let want = try rm.scores(conversations: convs)
        XCTAssertEqual(printed.count, 6)
        for (a, b) in zip(printed, want) { XCTAssertEqual(a, b, accuracy: 1e-5) }
        let bad = try TrainerRunner.run(["reward", "score", "--model", dir], stdin: stdin + "{\"conversations\": 3}\n")
        XCTAssertEqual(bad.status, 1)
        XCTAssertEqual(bad.stdout.split(separator: "\n").count, 6, "the lines before the bad one are answered")
        XCTAssertTrue(bad.stderr.contains("stdin:7:"), bad.stderr)

        // eval --task preference --reward-model: the pairs of the file, scored as training renders them.
        let e = try TrainerRunner.run(["eval", "--task", "preference", "--reward-model", dir, "--data", data, "--max-seq-len", "64"])
        XCTAssertEqual(e.status, 0, e.stderr)
        let j = try JSONSerialization.jsonObject(with: Data(e.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(j["pairs"] as? Int, 12)
        var correct = 0, margin = 0.0
        let pairs = try lines.map { l -> (Float, Float) in
            let o = try JSONSerialization.jsonObject(with: Data(l.utf8)) as! [String: Any]
            let sides = try ["chosen", "rejected"].map { side in
                Array(tok.encode(try tok.applyChatTemplate((o[side] as! [[String: String]]).map { ChatMessage(role: $0["role"]!, content: $0["content"]!) },
                                                           addGenerationPrompt: false)).prefix(64))
            }
            let sc = try rm.scores(sequences: sides)
            return (sc[0], sc[1])
        }
        for (c, rj) in pairs { if c > rj { correct += 1 }; margin += Double(c) - Double(rj) }
        XCTAssertEqual(j["correct"] as? Int, correct)
        XCTAssertEqual(j["pair_accuracy"] as? Double ?? -1, Double(correct) / 12, accuracy: 1e-12)
        XCTAssertEqual(j["mean_margin"] as? Double ?? .nan, margin / 12, accuracy: 1e-5)
        let ci = try XCTUnwrap(j["pair_accuracy_wilson95"] as? [Double])
        let w = PostEval.wilson(correct, 12)
        XCTAssertEqual(ci.count, 2)
        for (a, b) in zip(ci, [w.low, w.high]) { XCTAssertEqual(a, b, accuracy: 1e-12, "JSON keeps ~16 digits") }
        XCTAssertTrue(w.low <= Double(correct) / 12 && Double(correct) / 12 <= w.high)

        // transformers: the directory loads as LlamaForSequenceClassification and scores the padded rows the same.
        guard Python.hasModules(["torch", "transformers", "safetensors", "numpy"]) else {
            throw XCTSkip("python3 with torch, transformers, safetensors and numpy not available: transformers cross-check skipped")
        }
        let seqs = try convs.map { Array(tok.encode(try tok.applyChatTemplate($0, addGenerationPrompt: false))) }
        let T = seqs.map(\.count).max()!
        var ids = [Int32](repeating: 0, count: seqs.count * T)
        for (i, q) in seqs.enumerated() { ids.replaceSubrange(i * T ..< i * T + q.count, with: q) }
        var ref = SafeTensorsWriter()
        ref.add("input_ids", shape: [seqs.count, T], int32s: ids)
        ref.add("rewards", shape: [seqs.count], floats: try rm.scores(sequences: seqs))
        try ref.write(to: work + "/ref.safetensors")
        let p = try XCTUnwrap(try Python.run(["-c", Self.checkRewardHF, dir, work + "/ref.safetensors"]))
        print("check_reward_hf:", p.text)
        XCTAssertEqual(p.status, 0, "check_reward_hf failed:\n\(p.text)\n\(p.stderr.suffix(3000))")
    }

    /// python3 -c: argv DIR REFERENCE.safetensors. REFERENCE holds `input_ids` [B, T] (int32, right-padded with the
    /// config's pad_token_id) and `rewards` [B] (SwiftMind's scores of the unpadded rows). The directory must load with
    /// AutoModelForSequenceClassification as LlamaForSequenceClassification with num_labels 1; its logits [B, 1] are
    /// the scores at each row's last non-pad token. Prints one JSON line; exits 1 when the class differs or
    /// max |diff| > 1e-4.
    static let checkRewardHF = """
    import json, sys
    import numpy as np
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModelForSequenceClassification

    d, ref_path = sys.argv[1], sys.argv[2]
    ref = load_file(ref_path)
    ids = torch.tensor(ref["input_ids"].astype(np.int64))
    model = AutoModelForSequenceClassification.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
    pad = model.config.pad_token_id
    with torch.no_grad():
        scores = model(input_ids=ids, attention_mask=(ids != pad).long()).logits.numpy()
    diff = float(np.abs(scores[:, 0] - ref["rewards"]).max())
    ok = (type(model).__name__ == "LlamaForSequenceClassification" and model.config.num_labels == 1
          and scores.shape == (ids.shape[0], 1) and diff <= 1e-4)
    print(json.dumps({"dir": d, "class": type(model).__name__, "num_labels": model.config.num_labels, "pad_token_id": pad,
                      "max_abs_score_diff": diff, "ok": ok}))
    sys.exit(0 if ok else 1)
    """

    /// The golden reward model with MiniMind's tokenizer beside it (a directory `reward score` can read).
    func rewardDirWithTokenizer() throws -> String {
        let dir = work + "/rm-tok"
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for f in ["config.json", "model.safetensors"] { try fm.copyItem(atPath: golden("reward_model") + "/" + f, toPath: dir + "/" + f) }
        for f in ["tokenizer.json", "tokenizer_config.json"] {
            try fm.copyItem(atPath: TrainerRunner.tokenizer + "/" + f, toPath: dir + "/" + f) }
        return dir
    }

    /// Bad input to `reward score` loses nothing: the lines before a bad one are answered whatever makes it bad (bad
    /// JSON, invalid UTF-8, a conversation too long for the model, a role the chat template would drop), and the error
    /// names its line.
    func testRewardScoreBadLinesAreNamedAfterTheScoresBefore() throws {
        let dir = try rewardDirWithTokenizer()
        let ok = #"{"conversations":[{"role":"user","content":"你好"},{"role":"assistant","content":"你好！"}]}"#
        let long = String(decoding: try JSONSerialization.data(withJSONObject: ["conversations": [["role": "user", "content": String(repeating: "长", count: 40000)]]]), as: UTF8.self)
        let cases: [(bad: Data, message: String)] = [
            (Data(#"{"conversations": ["#.utf8), "stdin:4: malformed JSON"),
            (Data("[1]".utf8), "stdin:4:"),
            (Data(#"{"conversations":[{"role":"user","content":""#.utf8) + Data([0xFF]) + Data(#""}]}"#.utf8), "stdin:4: invalid UTF-8"),
            (Data(long.utf8), "stdin:4: the conversation has 40024 tokens, more than the model's max_position_embeddings"),
            (Data(#"{"conversations":[{"role":"human","content":"hi"}]}"#.utf8), #"stdin:4: field "conversations[0].role" is "human", a role the chat template does not render"#),
        ]
        for (bad, message) in cases {
            let input = Data(([ok, ok, ok].joined(separator: "\n") + "\n").utf8) + bad + Data(("\n" + ok + "\n").utf8)
            let r = try TrainerRunner.run(["reward", "score", "--model", dir, "--batch-size", "8", "--threads", "1"], stdinData: input)
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertEqual(r.stdout.split(separator: "\n").count, 3, "the three lines before the bad one are answered (\(message)): \(r.stdout)")
            XCTAssertTrue(r.stderr.contains(message), "\(message) | \(r.stderr)")
        }
    }

    /// Pairs the model cannot tell apart (both sides equal in the first --max-seq-len ids) are ties in
    /// `eval --task preference`, never counted right however the two rows' scores round; a run whose every pair is
    /// such a tie is refused before training.
    func testPairsEqualAfterTruncation() throws {
        let lines = try String(contentsOfFile: Fixtures.corpus("dpo.jsonl"), encoding: .utf8).split(separator: "\n").prefix(6)
        let data = work + "/pairs.jsonl"
        try (lines.joined(separator: "\n") + "\n").write(toFile: data, atomically: true, encoding: .utf8)
        let dir = try rewardDirWithTokenizer()
        let e = try TrainerRunner.run(["eval", "--task", "preference", "--reward-model", dir, "--data", data, "--max-seq-len", "2"])
        XCTAssertEqual(e.status, 0, e.stderr)
        let j = try JSONSerialization.jsonObject(with: Data(e.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(j["correct"] as? Int, 0); XCTAssertEqual(j["mean_margin"] as? Double, 0)
        let d = try TrainerRunner.run(["eval", "--task", "preference", "--model", golden("dpo_policy"), "--tokenizer", TrainerRunner.tokenizer,
                                       "--data", data, "--max-seq-len", "2"])
        XCTAssertEqual(d.status, 0, d.stderr)
        let k = try JSONSerialization.jsonObject(with: Data(d.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(k["hits"] as? Int, 0); XCTAssertEqual(k["mean_margin"] as? Double, 0)
        for stage in ["reward", "dpo"] {
            let r = try TrainerRunner.run([stage, "--data-path", data, "--init", golden("dpo_policy"), "--tokenizer", TrainerRunner.tokenizer,
                                           "--max-seq-len", "16", "--batch-size", "2", "--max-steps", "1", "--threads", "1",
                                           "--out-dir", work + "/short-\(stage)", "--cache-dir", work + "/cache"])
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains("every pair checked (6) is the same on both sides in its first --max-seq-len 16 tokens"), r.stderr)
        }
    }

    /// A reward model is refused where a causal language model is needed (a DPO --init, an evaluated --model), and a
    /// MoE reward model's directory reads back as a reward model (its config names the head).
    func testRewardAndCausalDirectoriesAreNotMixedUp() throws {
        let lines = try String(contentsOfFile: Fixtures.corpus("dpo.jsonl"), encoding: .utf8).split(separator: "\n").prefix(4)
        let data = work + "/pairs.jsonl"
        try (lines.joined(separator: "\n") + "\n").write(toFile: data, atomically: true, encoding: .utf8)
        let d = try TrainerRunner.run(["dpo", "--data-path", data, "--init", golden("reward_model"), "--tokenizer", TrainerRunner.tokenizer,
                                       "--max-seq-len", "64", "--batch-size", "2", "--max-steps", "1", "--threads", "1",
                                       "--out-dir", work + "/dpo-from-rm", "--cache-dir", work + "/cache"])
        XCTAssertEqual(d.status, 1, d.stderr)
        XCTAssertTrue(d.stderr.contains("--init \(golden("reward_model")): a reward model"), d.stderr)
        let e = try TrainerRunner.run(["eval", "--task", "preference", "--model", golden("reward_model"), "--tokenizer", TrainerRunner.tokenizer,
                                       "--data", data, "--max-seq-len", "64"])
        XCTAssertEqual(e.status, 1, e.stderr)
        XCTAssertTrue(e.stderr.contains("--model \(golden("reward_model")): a reward model"), e.stderr)

        let out = work + "/rm-moe"
        let r = try TrainerRunner.run(["reward", "--use-moe", "--hidden-size", "64", "--num-hidden-layers", "1", "--data-path", data,
                                       "--tokenizer", TrainerRunner.tokenizer, "--max-seq-len", "64", "--batch-size", "2", "--max-steps", "1",
                                       "--threads", "1", "--out-dir", out, "--cache-dir", work + "/cache"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/final/config.json"))) as! [String: Any]
        XCTAssertEqual(cfg["architectures"] as? [String], ["MiniMindForSequenceClassification"])
        XCTAssertEqual(cfg["use_moe"] as? Bool, true)
        let rm = try RewardModel(directory: out + "/final")
        XCTAssertTrue(rm.model.config.useMoe)
        let resumed = try TrainerRunner.run(["reward", "--use-moe", "--hidden-size", "64", "--num-hidden-layers", "1", "--data-path", data,
                                             "--tokenizer", TrainerRunner.tokenizer, "--max-seq-len", "64", "--batch-size", "2", "--max-steps", "2",
                                             "--threads", "1", "--out-dir", out, "--cache-dir", work + "/cache", "--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
    }

    /// Command-line and input errors name what is wrong.
    func testErrors() throws {
        let e1 = try TrainerRunner.run(["eval", "--task", "preference", "--reward-model", golden("reward_model"), "--model", golden("dpo_policy"), "--data", "x"])
        XCTAssertNotEqual(e1.status, 0); XCTAssertTrue(e1.stderr.contains("not both"), e1.stderr)
        let e2 = try TrainerRunner.run(["eval", "--task", "format", "--reward-model", golden("reward_model"), "--data", "x"])
        XCTAssertNotEqual(e2.status, 0); XCTAssertTrue(e2.stderr.contains("--reward-model is for --task preference"), e2.stderr)
        let e3 = try TrainerRunner.run(["reward", "score", "--model", golden("dpo_policy")], stdin: "")
        XCTAssertEqual(e3.status, 1); XCTAssertTrue(e3.stderr.contains("not a reward model"), e3.stderr)
        let e4 = try TrainerRunner.run(["debug-step", "--objective", "reward", "--model", golden("dpo_policy"),
                                        "--batch", golden("reward_step.safetensors"), "--out", work + "/o.safetensors"])
        XCTAssertEqual(e4.status, 1); XCTAssertTrue(e4.stderr.contains("needs a reward model"), e4.stderr)
        let e5 = try TrainerRunner.run(["eval", "--task", "preference", "--reward-model", golden("reward_model"), "--baseline", "/nonexistent", "--data", "x"])
        XCTAssertEqual(e5.status, 64); XCTAssertTrue(e5.stderr.contains("--baseline"), e5.stderr)
    }
}
