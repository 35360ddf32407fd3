import XCTest
import Foundation
import Model
import Training
import TestSupport

/// Issue 15 item 6: every numeric option is checked before anything is read, trained or allocated, with an error
/// naming it; a negative value is read in the `--x -1` form (and accepted where it means something: `--eos-id -1`,
/// `--local-rank -1`); a config.json with `num_attention_heads: 0` is refused by every loader, naming the field.
/// Through the binary, so the checks are the ones the commands run.
final class NumericOptionTests: XCTestCase {
    var work = ""
    override func setUpWithError() throws {
        work = TrainerRunner.tempDir("numopt")
        let dir = work
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
    }

    /// A command-line mistake: status 64, the message, no trap.
    func assertRefused(_ args: [String], _ message: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try TrainerRunner.run(args, timeout: 60)
        XCTAssertFalse(r.timedOut, "\(args)", file: file, line: line)
        XCTAssertEqual(r.status, 64, "\(args): \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.contains("Error: " + message), "\(args): expected '\(message)' in\n\(r.stderr)", file: file, line: line)
    }

    var pretrain: [String] {
        ["pretrain", "--data-path", TrainerRunner.corpus, "--tokenizer", TrainerRunner.tokenizer, "--out-dir", work + "/out",
         "--hidden-size", "32", "--num-hidden-layers", "1", "--max-steps", "1"]
    }

    /// The traps of the issue: each now a named error (the `--x -1` form reaches the range check too).
    func testTrainingOptionTrapsAreNamedErrors() throws {
        for (opts, message) in [
            (["--bucket-cap-mb", "1e-12"], "--bucket-cap-mb must be in 0.01…4096 MB (got 1e-12)"),
            (["--bucket-cap-mb", "inf"], "--bucket-cap-mb must be in 0.01…4096 MB (got inf)"),
            (["--bucket-cap-mb", "nan"], "--bucket-cap-mb must be in 0.01…4096 MB (got nan)"),
            (["--grad-clip", "nan"], "--grad-clip must be a finite number ≥ 0, 0 = no clipping (got nan)"),
            (["--grad-clip", "-1"], "--grad-clip must be a finite number ≥ 0, 0 = no clipping (got -1.0)"),
            (["--weight-decay", "nan"], "--weight-decay must be a finite number ≥ 0 (got nan)"),
            (["--weight-decay", "inf"], "--weight-decay must be a finite number ≥ 0 (got inf)"),
            (["--weight-decay", "-5"], "--weight-decay must be a finite number ≥ 0 (got -5.0)"),
            (["--learning-rate", "inf"], "--learning-rate must be a finite number > 0 (got inf)"),
            (["--learning-rate", "-1e-3"], "--learning-rate must be a finite number > 0 (got -0.001)"),
            (["--hidden-size", "-1"], "--hidden-size must be ≥ 1 (got -1)"),
            (["--aux-loss-alpha", "inf"], "--aux-loss-alpha must be a finite number ≥ 0 (got inf)"),
            (["--n-routed-experts", "-1"], "--n-routed-experts must be in 1…1024 (got -1)"),
            (["--num_workers", "-2"], "--num-workers must be in 0…4096 (got -2)"),
        ] {
            try assertRefused(pretrain + opts, message)
        }
        let init_ = ["--data-path", Fixtures.corpus("sft.jsonl"), "--init", golden("model"), "--out-dir", work + "/s"]
        try assertRefused(["dpo"] + init_ + ["--beta", "nan"], "--beta must be a finite number > 0 (got nan)")
        try assertRefused(["reason"] + init_ + ["--tag-weight", "-1"], "--tag-weight must be a finite number ≥ 0 (got -1.0)")
        try assertRefused(["distill"] + init_ + ["--teacher", golden("model"), "--temperature", "inf"],
                          "--temperature must be a finite number > 0 (got inf)")
        // Meaningful negatives are read in the `--x -1` form.
        let ok = try TrainerRunner.run(pretrain + ["--local-rank", "-1", "--print-options"], timeout: 60)
        XCTAssertEqual(ok.status, 0, ok.stderr)
    }

    /// The same checks in-process: the bounds of `--bucket-cap-mb` and what each check names.
    func testBucketCapIsBounded() throws {
        var o = TrainingOptions()
        for bad in [0, 1e-12, 0.009, 4097, .infinity, .nan] {
            o.bucketCapMB = bad
            XCTAssertThrowsError(try o.check(), "\(bad)") { XCTAssertTrue("\($0)".contains("--bucket-cap-mb must be in 0.01…4096 MB"), "\($0)") }
        }
        for good in [0.01, 1, 25, 4096] { o.bucketCapMB = good; XCTAssertNoThrow(try o.check(), "\(good)") }
    }

    /// Sampling, serving, benchmark, evaluation, data and tokenizer options: named errors, and `--eos-id -1` works.
    func testOtherCommandsNameTheirBadNumbers() throws {
        let model = golden("generate_model"), tok = TrainerRunner.tokenizer
        let generate = ["generate", "--model", model, "--tokenizer", tok, "--prompt", "床前"]
        for (opts, message) in [
            (["--temperature", "-1"], "--temperature must be a finite number ≥ 0 (got -1.0)"),
            (["--top-p", "nan"], "--top-p must be in (0, 1] (got nan)"),
            (["--top-k", "-1"], "--top-k must be ≥ 0 (got -1)"),
            (["--repetition-penalty", "inf"], "--repetition-penalty must be a finite number > 0 (got inf)"),
            (["--max-new-tokens", "-5"], "--max-new-tokens must be > 0 (got -5)"),
            (["--eos-id", "-2"], "--eos-id must be -1 (never stop) or an id in [0, 2147483647] (got -2)"),
            (["--threads", "-1"], "--threads must be in 1…1024 (got -1)"),
        ] {
            try assertRefused(generate + opts, message)
        }
        let never = try TrainerRunner.run(generate + ["--eos-id", "-1", "--temperature", "0", "--max-new-tokens", "5", "--ids"], timeout: 60)
        XCTAssertEqual(never.status, 0, never.stderr)
        XCTAssertEqual(try JSONDecoder().decode([Int32].self, from: Data(never.stdout.utf8)).count, 5)

        try assertRefused(["chat", "--model", model, "x", "--context-length", "-1"], "--context-length must be in 1…16777216 (got -1)")
        try assertRefused(["chat", "--model", model, "x", "--history-turns", "-1"], "--history-turns must be in 0…1000000 (got -1)")
        let serve = ["serve", "--model", model]
        try assertRefused(serve + ["--shutdown-timeout", "inf"], "--shutdown-timeout must be a finite number of seconds ≥ 0 (got inf)")
        try assertRefused(serve + ["--max-queued", "-1"], "--max-queued must be in 0…1000000 (got -1)")
        try assertRefused(serve + ["--idle-timeout", "nan"], "--idle-timeout must be a number of seconds in (0, 86400] (got nan)")
        try assertRefused(serve + ["--max-batch", "100000"], "--max-batch must be in 1…1024 (got 100000)")
        try assertRefused(["bench", "--n-routed-experts", "-1"], "--n-routed-experts must be in 1…1024 (got -1)")
        try assertRefused(["bench", "--aux-loss-alpha", "nan"], "--aux-loss-alpha must be a finite number ≥ 0 (got nan)")
        try assertRefused(["bench-decode", "--new-tokens", "-1"], "--new-tokens must be in 1…16777216 (got -1)")
        try assertRefused(["bench-decode", "--temperature", "nan"], "--temperature must be a finite number ≥ 0 (got nan)")
        try assertRefused(["bench-decode", "--num-attention-heads", "0"], "bench-decode options: field num_attention_heads must divide hidden_size 512 (got 0)")
        for cmd in [["bench-decode"], ["generate", "--model", model, "--prompt-ids", "1"], ["chat", "--model", model, "x"], serve,
                    ["eval", "--model", model, "--data", TrainerRunner.corpus]] {
            try assertRefused(cmd + ["--weight-dtype", "q4_0"], "--weight-dtype must be f32, bf16 or q8_0 (got q4_0)")
        }
        try assertRefused(["export", "--model", model, "--out", work + "/hf", "--format", "hf", "--dtype", "q8_0"],
                          "--dtype q8_0 is for --format gguf (hf: f32, f16 or bf16)")
        try assertRefused(["eval", "--model", model, "--data", TrainerRunner.corpus, "--task", "exact-match", "--limit", "0"], "--limit must be ≥ 1 (got 0)")
        try assertRefused(["eval", "--model", model, "--data", TrainerRunner.corpus, "--max-new-tokens", "-1"], "--max-new-tokens must be in 1…16777216 (got -1)")
        try assertRefused(["data", "inspect", "--tokenizer", tok, "--data", TrainerRunner.corpus, "--limit", "-1"], "--limit must be ≥ 0 (got -1)")
        try assertRefused(["tokenizer", "encode", "--tokenizer", tok, "--threads", "-1"], "--threads must be in 1…1024 (got -1)")
        try assertRefused(["tokenizer", "train", "--data", TrainerRunner.corpus, "--out", work + "/t", "--vocab-size", "400", "--min-frequency", "-1"],
                          "--min-frequency must be ≥ 0 (got -1)")
    }

    /// `"num_attention_heads": 0` (with and without an explicit head_dim, Llama and MiniMind configs): every command
    /// that loads a model names the field; none traps.
    func testZeroAttentionHeadsIsNamedByEveryLoader() throws {
        let src = golden("generate_model")
        var base = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: src + "/config.json"))) as! [String: Any]
        base["num_attention_heads"] = 0
        var withHeadDim = base; withHeadDim["head_dim"] = 16
        var miniMind = base; miniMind.removeValue(forKey: "model_type"); miniMind.removeValue(forKey: "architectures")
        for (name, cfg) in [("llama", base), ("head_dim", withHeadDim), ("minimind", miniMind)] {
            let dir = work + "/" + name
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: src + "/model.safetensors", toPath: dir + "/model.safetensors")
            try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: dir + "/config.json"))
            let tok = TrainerRunner.tokenizer
            for args in [["generate", "--model", dir, "--tokenizer", tok, "--prompt", "x"],
                         ["serve", "--model", dir, "--tokenizer", tok, "--port", "0"],
                         ["export", "--model", dir, "--tokenizer", tok, "--out", work + "/e-" + name, "--format", "gguf"],
                         ["export", "--model", dir, "--tokenizer", tok, "--out", work + "/h-" + name, "--format", "hf"],
                         ["chat", "--model", dir, "--tokenizer", tok, "x"],
                         ["eval", "--model", dir, "--tokenizer", tok, "--data", TrainerRunner.corpus],
                         ["bench-decode", "--model", dir],
                         ["sft", "--init", dir, "--tokenizer", tok, "--data-path", Fixtures.corpus("sft.jsonl"), "--out-dir", work + "/sft-" + name]] {
                let r = try TrainerRunner.run(args, timeout: 60)
                XCTAssertFalse(r.timedOut, "\(args)")
                XCTAssertEqual(r.status, 1, "\(name) \(args[0]): \(r.stderr)")
                XCTAssertTrue(r.stderr.contains("\(dir)/config.json: field num_attention_heads must divide hidden_size 64 (got 0)"),
                              "\(name) \(args[0]): \(r.stderr)")
            }
        }
    }
}
