import XCTest
import Foundation
import Model
import TestSupport

/// How `trainer` reports bad input: data/file errors print just `Error: <message>` (file, line or tensor named) with
/// exit status 1; command-line mistakes print the message and the command's usage line; nothing traps. The OpenBLAS
/// line is logged only when a command runs.
final class CLIErrorTests: XCTestCase {
    var work = ""
    let golden = Fixtures.path("golden")

    override func setUpWithError() throws {
        work = TrainerRunner.tempDir("clierr")
        let dir = work
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
    }

    /// A data error: status 1, stderr has `Error: <message>` and no usage line.
    func assertDataError(_ r: TrainerRunner.Run, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(r.timedOut, file: file, line: line)
        XCTAssertEqual(r.status, 1, r.stderr, file: file, line: line)
        XCTAssertTrue(r.stderr.contains("Error: " + message + "\n"), r.stderr, file: file, line: line)
        XCTAssertFalse(r.stderr.contains("Usage:"), r.stderr, file: file, line: line)
    }

    /// A command-line mistake: the message, then the subcommand's usage line; no OpenBLAS line (nothing ran).
    func assertUsageError(_ r: TrainerRunner.Run, _ message: String, usage: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(r.timedOut, file: file, line: line)
        XCTAssertEqual(r.status, 64, r.stderr, file: file, line: line)
        XCTAssertTrue(r.stderr.contains("Error: " + message + "\n"), r.stderr, file: file, line: line)
        XCTAssertTrue(r.stderr.contains("Usage: trainer " + usage), r.stderr, file: file, line: line)
        XCTAssertFalse(r.stderr.contains("[openblas]"), r.stderr, file: file, line: line)
    }

    func testDecodeRejectsBooleansAndFractions() throws {
        for (line, message) in [("{\"ids\": [true]}", "stdin:2: field \"ids[0]\" must be an integer, got a boolean"),
                                ("{\"ids\": [1, false]}", "stdin:2: field \"ids[1]\" must be an integer, got a boolean"),
                                ("{\"ids\": [1.5]}", "stdin:2: field \"ids[0]\" must be an integer, got the number 1.5")] {
            let r = try TrainerRunner.run(["tokenizer", "decode", "--tokenizer", TrainerRunner.tokenizer],
                                          timeout: 60, stdin: "{\"ids\": [1]}\n" + line + "\n")
            assertDataError(r, message)
            XCTAssertEqual(r.stdout, "{\"text\": \"<|im_start|>\"}\n")   // the line before the bad one is answered
        }
    }

    /// `eval`'s default task (loss) used to ignore `--lora`: a missing adapter file must now fail, naming it.
    func testEvalLossAppliesTheLoRAAdapter() throws {
        let data = work + "/eval.jsonl"
        try "{\"text\": \"床前明月光，疑是地上霜。\"}\n".write(toFile: data, atomically: true, encoding: .utf8)
        let base = ["eval", "--model", golden + "/lora_base", "--tokenizer", TrainerRunner.tokenizer, "--data-path", data,
                    "--max-seq-len", "16"]
        let ok = try TrainerRunner.run(base, timeout: 120)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertTrue(ok.stdout.contains("\"loss\""), ok.stdout)
        let missing = work + "/no_such_adapter.safetensors"
        let r = try TrainerRunner.run(base + ["--lora", missing], timeout: 120)
        XCTAssertFalse(r.timedOut)
        XCTAssertNotEqual(r.status, 0, r.stdout)
        XCTAssertTrue(r.stderr.contains(missing), r.stderr)
    }

    func testTokenizerTrainOnAFileWithoutTextFails() throws {
        let data = work + "/blank.jsonl"
        try "\n \n".write(toFile: data, atomically: true, encoding: .utf8)
        let r = try TrainerRunner.run(["tokenizer", "train", "--data", data, "--vocab-size", "300", "--out", work + "/tok"], timeout: 60)
        assertDataError(r, "tokenizer training: \(data) holds no text to train on (2 lines, none with a non-empty \"text\")")
        XCTAssertFalse(FileManager.default.fileExists(atPath: work + "/tok/tokenizer.json"))
    }

    func testDebugStepValidatesTheMaskAndTheBatchShape() throws {
        let ids: [Int32] = [1, 2, 3, 4, 5, 6, 7, 8]
        func batch(_ name: String, shape: [Int] = [2, 4], ids: [Int32] = ids, mask: [Float]?) throws -> String {
            var w = SafeTensorsWriter()
            w.add("input_ids", shape: shape, int32s: ids)
            w.add("labels", shape: shape, int32s: ids)
            if let mask { w.add("loss_mask", shape: shape, floats: mask) }
            let path = work + "/" + name + ".safetensors"
            try w.write(to: path)
            return path
        }
        func step(_ path: String) throws -> TrainerRunner.Run {
            try TrainerRunner.run(["debug-step", "--model", golden + "/model", "--batch", path, "--out", work + "/out.safetensors"], timeout: 60)
        }
        let nan = try batch("nan", mask: [1, 1, .nan, 1, 1, 1, 1, 1])
        assertDataError(try step(nan), "\(nan): loss_mask[0][2] = nan; mask values must be finite and ≥ 0")
        let inf = try batch("inf", mask: [1, 1, 1, 1, 1, .infinity, 1, 1])
        assertDataError(try step(inf), "\(inf): loss_mask[1][1] = inf; mask values must be finite and ≥ 0")
        let neg = try batch("neg", mask: [1, 1, 1, -1, 1, 1, 1, 1])
        assertDataError(try step(neg), "\(neg): loss_mask[0][3] = -1.0; mask values must be finite and ≥ 0")
        let zero = try batch("zero", mask: [Float](repeating: 0, count: 8))
        assertDataError(try step(zero), "\(zero): loss_mask is all zero")
        let empty = try batch("empty", shape: [0, 4], ids: [], mask: nil)
        assertDataError(try step(empty), "\(empty): input_ids has shape [0, 4]; B and T must be ≥ 1")
        XCTAssertFalse(FileManager.default.fileExists(atPath: work + "/out.safetensors"))
        let ok = try step(try batch("ok", mask: nil))
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertTrue(ok.stderr.contains("[openblas] core "), ok.stderr)
    }

    func testDebugStepAndBenchRejectAbsurdOptions() throws {
        let base = ["debug-step", "--model", golden + "/model", "--batch", work + "/none.safetensors", "--out", work + "/o.safetensors"]
        let usage = "debug-step [<options>] --model <model> --batch <batch> --out <out>"
        for (opts, message) in [(["--lora-rank=0", "--objective", "lora"], "--lora-rank must be ≥ 1 (got 0)"),
                                (["--threads", "100000000000"], "--threads must be in 1…1024 (got 100000000000)"),
                                (["--lr", "nan"], "--lr must be a finite number ≥ 0 (got nan)"),
                                (["--temperature", "0"], "--temperature must be a finite number > 0 (got 0.0)"),
                                (["--objective", "dpo"], "--objective dpo needs --reference DIR")] {
            assertUsageError(try TrainerRunner.run(base + opts, timeout: 60), message, usage: usage)
        }
        // A rank too large to allocate is an error from the model (after the base model loads), not a trap.
        let lora = try TrainerRunner.run(["debug-step", "--model", golden + "/lora_base", "--batch", golden + "/lora_step.safetensors",
                                          "--out", work + "/o.safetensors", "--objective", "lora", "--lora-rank", "100000000000"], timeout: 60)
        assertDataError(lora, "LoRA rank 100000000000 is too large: the adapters would exceed 8589934592 parameters (hidden_size 64, 2 layers)")

        for (opts, message) in [(["--steps", "0"], "--steps must be in 1…1000000 (got 0)"),
                                (["--warmup", "100000000000000"], "--warmup must be in 0…1000000 (got 100000000000000)"),
                                (["--max-seq-len", "100000"], "--max-seq-len must be ≤ max_position_embeddings 32768 (got 100000)"),
                                (["--batch-size", "100000000000", "--max-seq-len", "1000"],
                                 "--batch-size × --max-seq-len × --vocab-size = 100000000000 × 1000 × 6400 logits per step is too large (limit 2^31); lower --batch-size or --max-seq-len"),
                                (["--hidden-size", "0"], "bench options: field hidden_size must be > 0 (got 0)")] {
            assertUsageError(try TrainerRunner.run(["bench"] + opts, timeout: 60), message, usage: "bench <options>")
        }
    }

    /// Bad choices of --stage / --task are command-line mistakes, checked before anything is read.
    func testBadChoicesShowTheSubcommandUsage() throws {
        assertUsageError(try TrainerRunner.run(["data", "inspect", "--stage", "x", "--tokenizer", TrainerRunner.tokenizer, "--data", work + "/d.jsonl"], timeout: 60),
                         "--stage must be sft, reason, dpo or pretrain (got x)", usage: "data inspect ")
        assertUsageError(try TrainerRunner.run(["eval", "--task", "x", "--model", golden + "/model", "--data", work + "/d.jsonl"], timeout: 60),
                         "--task must be loss, sft-loss, exact-match, preference or format (got x)", usage: "eval [<options>]")
    }

    /// Missing files are data errors: no usage line.
    func testMissingFilesPrintNoUsage() throws {
        let r = try TrainerRunner.run(["debug-step", "--model", work + "/nomodel", "--batch", work + "/b.safetensors", "--out", work + "/o"], timeout: 60)
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("Error: ") && r.stderr.contains(work + "/nomodel"), r.stderr)
        XCTAssertFalse(r.stderr.contains("Usage:"), r.stderr)
        let t = try TrainerRunner.run(["tokenizer", "encode", "--tokenizer", work + "/notok"], timeout: 60, stdin: "")
        XCTAssertEqual(t.status, 1, t.stderr)
        XCTAssertTrue(t.stderr.contains("Error: cannot read " + work + "/notok"), t.stderr)
        XCTAssertFalse(t.stderr.contains("Usage:"), t.stderr)
    }

    /// `--help`, `help`, a bare command group and a parse error run nothing, so they log no OpenBLAS line.
    func testHelpPrintsNoOpenBLASLine() throws {
        for args in [["--help"], ["debug-step", "--help"], ["help", "bench"], ["tokenizer"], ["tokenizer", "decode", "--help"], []] {
            let r = try TrainerRunner.run(args, timeout: 60)
            XCTAssertEqual(r.status, 0, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stdout.contains("USAGE:") || r.stdout.contains("Usage:"), "\(args): \(r.stdout)")
            XCTAssertFalse((r.stdout + r.stderr).contains("[openblas]"), "\(args): \(r.stderr)")
        }
        let bad = try TrainerRunner.run(["debug-step"], timeout: 60)
        XCTAssertEqual(bad.status, 64, bad.stderr)
        XCTAssertFalse(bad.stderr.contains("[openblas]"), bad.stderr)
    }
}
