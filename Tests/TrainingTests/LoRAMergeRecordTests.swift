import XCTest
import Foundation
@testable import Model
import TestSupport

/// `lora merge` records what it merged (OUT/merges.json, sha256 of each adapter file); merging the same adapter
/// again, `--lora` with an adapter the model already holds (eval, chat, serve, export) and `--out` = `--model` are
/// refused with a message, and nothing is written.
final class LoRAMergeRecordTests: ScratchDirTestCase {
    var base: String { Fixtures.golden("lora_base") }

    /// A rank-2 adapter for lora_base with every A and B entry non-zero (so a second merge would change the weights).
    func makeAdapter(_ name: String, seed: UInt64) throws -> String {
        let a = try LoRAAdapters(config: try ModelConfig.load(directory: base), rank: 2, seed: seed)
        var rng = SplitMix64(seed: seed)
        for i in 0..<a.count { a.params[i] = Float(Double(rng.next() >> 11) / 9_007_199_254_740_992.0 - 0.5) * 0.1 }
        let path = work + "/" + name
        try a.save(path: path)
        return path
    }

    func refused(_ r: TrainerRunner.Run, _ needles: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(r.timedOut, file: file, line: line)
        XCTAssertNotEqual(r.status, 0, r.stderr, file: file, line: line)
        for n in needles { XCTAssertTrue(r.stderr.contains(n), "expected \(n) in: \(r.stderr)", file: file, line: line) }
    }

    func testMergesAreRecordedAndARepeatIsRefused() throws {
        let a = try makeAdapter("a.safetensors", seed: 1), b = try makeAdapter("b.safetensors", seed: 2)
        let aCopy = work + "/renamed-a.safetensors"
        try FileManager.default.copyItem(atPath: a, toPath: aCopy)
        let shaA = try SHA256Digest.hex(ofFile: a), shaB = try SHA256Digest.hex(ofFile: b)

        // First merge: W + B·A once, recorded.
        let m1 = work + "/m1"
        let r1 = try TrainerRunner.run(["lora", "merge", "--model", base, "--lora", a, "--out", m1])
        XCTAssertEqual(r1.status, 0, r1.stderr)
        XCTAssertEqual(try LoRAMergeRecord.read(directory: m1).map(\.sha256), [shaA])
        XCTAssertEqual(try LoRAMergeRecord.read(directory: m1).first?.file, a)
        XCTAssertEqual(try LoRAMergeRecord.read(directory: base), [], "the base has no record")
        let once = try MiniMindModel.load(directory: base)
        try once.mergeLoRA(path: a, modelDirectory: base)
        XCTAssertEqual(try TrainerRunner.parameters(m1), Array(once.params))
        XCTAssertNotEqual(try TrainerRunner.parameters(m1), try TrainerRunner.parameters(base))

        // The same adapter again — under another file name too — is refused; nothing is written.
        for adapter in [a, aCopy] {
            let m2 = work + "/m2-again"
            let r = try TrainerRunner.run(["lora", "merge", "--model", m1, "--lora", adapter, "--out", m2])
            refused(r, ["already merged into \(m1)", shaA, adapter])
            XCTAssertFalse(FileManager.default.fileExists(atPath: m2))
        }

        // A different adapter stacks, and the record keeps both in order.
        let m2 = work + "/m2"
        let r2 = try TrainerRunner.run(["lora", "merge", "--model", m1, "--lora", b, "--out", m2])
        XCTAssertEqual(r2.status, 0, r2.stderr)
        XCTAssertEqual(try LoRAMergeRecord.read(directory: m2).map(\.sha256), [shaA, shaB])
        let r3 = try TrainerRunner.run(["lora", "merge", "--model", m2, "--lora", aCopy, "--out", work + "/m3"])
        refused(r3, ["already merged", shaA])

        // --out naming the base (however spelled) is refused before anything is loaded or written.
        let before = try TrainerRunner.parameters(m1)
        for out in [m1, m1 + "/", work + "/./m1"] {
            let r = try TrainerRunner.run(["lora", "merge", "--model", m1, "--lora", b, "--out", out])
            XCTAssertEqual(r.status, 64, r.stderr)
            XCTAssertTrue(r.stderr.contains("is the --model directory: the merge would overwrite the base model"), r.stderr)
        }
        XCTAssertEqual(try TrainerRunner.parameters(m1), before)
        XCTAssertEqual(try LoRAMergeRecord.read(directory: m1).map(\.sha256), [shaA])
    }

    /// `--lora` with an adapter the model already holds is refused by eval, chat, serve and export; a Hugging Face
    /// export carries the record (plus its own --lora).
    func testLoRAOptionRefusesAnAdapterAlreadyMerged() throws {
        let a = try makeAdapter("a.safetensors", seed: 1), b = try makeAdapter("b.safetensors", seed: 2)
        let shaA = try SHA256Digest.hex(ofFile: a), shaB = try SHA256Digest.hex(ofFile: b)
        let m1 = work + "/m1"
        XCTAssertEqual(try TrainerRunner.run(["lora", "merge", "--model", base, "--lora", a, "--out", m1]).status, 0)
        let data = work + "/eval.jsonl"
        try "{\"text\": \"床前明月光，疑是地上霜。\"}\n".write(toFile: data, atomically: true, encoding: .utf8)
        let tok = ["--tokenizer", TrainerRunner.tokenizer]
        let evalArgs = ["eval", "--model", m1, "--data-path", data, "--max-seq-len", "16"] + tok
        refused(try TrainerRunner.run(evalArgs + ["--lora", a], timeout: 120), ["already merged into \(m1)", shaA])
        let ok = try TrainerRunner.run(evalArgs + ["--lora", b], timeout: 120)
        XCTAssertEqual(ok.status, 0, ok.stderr)
        refused(try TrainerRunner.run(["chat", "--model", m1, "--lora", a] + tok, timeout: 60, stdin: "你好\n"), ["already merged", shaA])
        refused(try TrainerRunner.run(["serve", "--model", m1, "--lora", a, "--port", "0"] + tok, timeout: 60), ["already merged", shaA])
        refused(try TrainerRunner.run(["generate", "--model", m1, "--lora", a, "--prompt-ids", "1,2", "--ids", "--max-new-tokens", "2"], timeout: 60),
                ["already merged", shaA])
        let batch = Fixtures.golden("lora_step.safetensors")
        for objective in ["lm", "lora"] {   // lm: --lora merged into --model; lora: the adapter trained from --lora
            refused(try TrainerRunner.run(["debug-step", "--model", m1, "--batch", batch, "--out", work + "/step.safetensors",
                                           "--objective", objective, "--lora", a], timeout: 60), ["already merged", shaA])
        }
        let hf = work + "/hf"
        refused(try TrainerRunner.run(["export", "--model", m1, "--lora", a, "--format", "hf", "--out", hf] + tok, timeout: 60),
                ["already merged", shaA])
        XCTAssertFalse(FileManager.default.fileExists(atPath: hf + "/model.safetensors"))
        let e = try TrainerRunner.run(["export", "--model", m1, "--lora", b, "--format", "hf", "--out", hf] + tok, timeout: 60)
        XCTAssertEqual(e.status, 0, e.stderr)
        XCTAssertEqual(try LoRAMergeRecord.read(directory: hf).map(\.sha256), [shaA, shaB])
        refused(try TrainerRunner.run(["eval", "--model", hf, "--data-path", data, "--max-seq-len", "16", "--lora", b] + tok, timeout: 120),
                ["already merged", shaB])
        // Re-exporting an unmerged model into the same directory drops the stale record.
        XCTAssertEqual(try TrainerRunner.run(["export", "--model", base, "--format", "hf", "--out", hf] + tok, timeout: 60).status, 0)
        XCTAssertEqual(try LoRAMergeRecord.read(directory: hf), [])
    }

    /// `generate --lora A` on the base produces what `generate` produces from the model `lora merge` wrote (both go
    /// through `MiniMindModel.mergeLoRA`); sampling is seeded, so the ids are compared exactly.
    func testGenerateWithLoRAEqualsTheMergedModel() throws {
        let a = try makeAdapter("a.safetensors", seed: 3)
        let merged = work + "/merged"
        let m = try TrainerRunner.run(["lora", "merge", "--model", base, "--lora", a, "--out", merged])
        XCTAssertEqual(m.status, 0, m.stderr)
        let gen = ["generate", "--prompt-ids", "5,17,300,42", "--ids", "--max-new-tokens", "24", "--eos-id=-1", "--seed", "11"]
        let viaLoRA = try TrainerRunner.run(gen + ["--model", base, "--lora", a], timeout: 60)
        let viaMerged = try TrainerRunner.run(gen + ["--model", merged], timeout: 60)
        XCTAssertEqual(viaLoRA.status, 0, viaLoRA.stderr)
        XCTAssertEqual(viaMerged.status, 0, viaMerged.stderr)
        XCTAssertTrue(viaLoRA.stdout.hasPrefix("["), viaLoRA.stdout)
        XCTAssertEqual(viaLoRA.stdout, viaMerged.stdout)
    }

    /// `debug-step --objective lm --lora A` on the base (the adapter merged at load, as every command's --lora) gives
    /// the step of the model `lora merge` wrote: the same loss, logits and gradients, bit for bit.
    func testDebugStepWithLoRAEqualsTheMergedModel() throws {
        let a = try makeAdapter("a.safetensors", seed: 4)
        let merged = work + "/merged"
        XCTAssertEqual(try TrainerRunner.run(["lora", "merge", "--model", base, "--lora", a, "--out", merged]).status, 0)
        let step = ["debug-step", "--batch", Fixtures.golden("lora_step.safetensors"), "--objective", "lm"]
        let viaLoRA = try TrainerRunner.run(step + ["--model", base, "--lora", a, "--out", work + "/lora.safetensors"], timeout: 60)
        let viaMerged = try TrainerRunner.run(step + ["--model", merged, "--out", work + "/merged.safetensors"], timeout: 60)
        XCTAssertEqual(viaLoRA.status, 0, viaLoRA.stderr)
        XCTAssertEqual(viaMerged.status, 0, viaMerged.stderr)
        let x = try SafeTensorsFile(path: work + "/lora.safetensors"), y = try SafeTensorsFile(path: work + "/merged.safetensors")
        XCTAssertEqual(x.entries.keys.sorted(), y.entries.keys.sorted())
        for k in x.entries.keys.sorted() { XCTAssertEqual(try x.floats(k), try y.floats(k), k) }
    }

    /// A malformed merges.json is a named error, not silently "no merges".
    func testMalformedRecordIsANamedError() throws {
        let a = try makeAdapter("a.safetensors", seed: 1)
        let m = work + "/m"
        XCTAssertEqual(try TrainerRunner.run(["lora", "merge", "--model", base, "--lora", a, "--out", m]).status, 0)
        try "{\"format\": \"swiftmind-lora-merges\", \"merges\": [{\"adapter_sha256\": \"xyz\"}]}".write(
            toFile: m + "/merges.json", atomically: true, encoding: .utf8)
        refused(try TrainerRunner.run(["lora", "merge", "--model", m, "--lora", a, "--out", work + "/m2"]),
                [m + "/merges.json: merges[0] needs adapter_sha256"])
    }
}
