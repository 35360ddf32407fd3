import XCTest
import Foundation
import Training
import TestSupport
@testable import trainer

/// MiniMind's command lines through `trainer`'s own parser: every `add_argument` of MiniMind's six training scripts
/// (2025-04-30 snapshot, commit 561979c), with its MiniMind default and a representative value, on the matching
/// subcommand; the resolved options, the notes and the refusals; the defaults against MiniMind's; the README's tables
/// against the code.
final class MiniMindFlagsTests: XCTestCase {
    /// One `add_argument`: the flag, MiniMind's default (nil: `store_true`, or a device chosen at run time) and the
    /// value a MiniMind command line would pass (nil: a `store_true` flag, given bare).
    struct Flag { let name: String; let miniMindDefault: String?; let value: String? }
    struct Script { let file: String; let command: [String]; let flags: [Flag]; let swiftMindExtras: [String] }

    /// The flags every script declares (train_distillation.py lacks the model-shape ones), in add_argument order.
    static func common(epochs: String, batch: String, lr: String, accumulation: String, log: String, save: String,
                       seq: String, data: String, project: String, shape: Bool = true) -> [Flag] {
        var f = [Flag(name: "--out_dir", miniMindDefault: "../out", value: "../out"),
                 Flag(name: "--epochs", miniMindDefault: epochs, value: "3"),
                 Flag(name: "--batch_size", miniMindDefault: batch, value: "6"),
                 Flag(name: "--learning_rate", miniMindDefault: lr, value: "2e-5"),
                 Flag(name: "--device", miniMindDefault: nil, value: "cpu"),
                 Flag(name: "--dtype", miniMindDefault: "bfloat16", value: "bfloat16"),
                 Flag(name: "--use_wandb", miniMindDefault: nil, value: nil),
                 Flag(name: "--wandb_project", miniMindDefault: project, value: project),
                 Flag(name: "--num_workers", miniMindDefault: "1", value: "1"),
                 Flag(name: "--ddp", miniMindDefault: nil, value: nil),
                 Flag(name: "--accumulation_steps", miniMindDefault: accumulation, value: "2"),
                 Flag(name: "--grad_clip", miniMindDefault: "1.0", value: "0.5"),
                 Flag(name: "--warmup_iters", miniMindDefault: "0", value: "0"),
                 Flag(name: "--log_interval", miniMindDefault: log, value: "10"),
                 Flag(name: "--save_interval", miniMindDefault: save, value: "20")]
        if shape {
            f += [Flag(name: "--local_rank", miniMindDefault: "-1", value: "-1"),
                  Flag(name: "--hidden_size", miniMindDefault: "512", value: "768"),
                  Flag(name: "--num_hidden_layers", miniMindDefault: "8", value: "16"),
                  Flag(name: "--max_seq_len", miniMindDefault: seq, value: "340"),
                  Flag(name: "--use_moe", miniMindDefault: "False", value: "True")]
        } else {
            f += [Flag(name: "--max_seq_len", miniMindDefault: seq, value: "340"),
                  Flag(name: "--local_rank", miniMindDefault: "-1", value: "-1")]
        }
        f.append(Flag(name: "--data_path", miniMindDefault: "../dataset/" + data, value: "../dataset/" + data))
        return f
    }

    static let scripts: [Script] = [
        Script(file: "train_pretrain.py", command: ["pretrain"],
               flags: common(epochs: "1", batch: "32", lr: "5e-4", accumulation: "8", log: "100", save: "100", seq: "512",
                             data: "pretrain_hq.jsonl", project: "MiniMind-Pretrain"),
               swiftMindExtras: ["--tokenizer", "../model"]),
        Script(file: "train_full_sft.py", command: ["sft"],
               flags: common(epochs: "2", batch: "16", lr: "5e-7", accumulation: "1", log: "100", save: "100", seq: "512",
                             data: "sft_mini_512.jsonl", project: "MiniMind-Full-SFT"),
               swiftMindExtras: ["--init", "out/pretrain/final"]),
        Script(file: "train_lora.py", command: ["lora", "train"],
               flags: common(epochs: "10", batch: "32", lr: "1e-4", accumulation: "1", log: "100", save: "100", seq: "512",
                             data: "lora_medical.jsonl", project: "MiniMind-LoRA-SFT")
                   + [Flag(name: "--lora_name", miniMindDefault: "lora_medical", value: "lora_identity")],
               swiftMindExtras: ["--init", "out/sft/final"]),
        Script(file: "train_dpo.py", command: ["dpo"],
               flags: common(epochs: "2", batch: "4", lr: "1e-8", accumulation: "1", log: "100", save: "100", seq: "1024",
                             data: "dpo.jsonl", project: "MiniMind-RLHF-SFT"),
               swiftMindExtras: ["--init", "out/sft/final"]),
        Script(file: "train_distill_reason.py", command: ["reason"],
               flags: common(epochs: "1", batch: "8", lr: "1e-6", accumulation: "1", log: "1", save: "50", seq: "1024",
                             data: "r1_mix_1024.jsonl", project: "MiniMind-Full-SFT"),
               swiftMindExtras: ["--init", "out/dpo/final"]),
        Script(file: "train_distillation.py", command: ["distill"],
               flags: common(epochs: "6", batch: "32", lr: "5e-6", accumulation: "1", log: "100", save: "100", seq: "512",
                             data: "sft_xxx.jsonl", project: "MiniMind-Full-SFT", shape: false),
               swiftMindExtras: ["--init", "out/sft/final", "--teacher", "out/sft_768/final"]),
    ]

    /// MiniMind defaults SwiftMind keeps different on purpose (the README says so).
    /// (`--dtype`: MiniMind's bfloat16 is the default only on a CPU with native bf16, float32 elsewhere.)
    static let keptDifferences: Set<String> = ["--out_dir", "--data_path", "--lora_name", "train_distill_reason.py --log_interval",
                                               "train_distill_reason.py --save_interval", "--dtype"]

    /// The flags without a counterpart: each given one must produce one note naming it.
    static let noted: Set<String> = ["--device", "--use_wandb", "--wandb_project", "--num_workers", "--ddp",
                                     "--local_rank"]

    struct Resolved { let common: TrainingOptions; let stage: StageOptions?; let tokenizer: String?; let notes: [String] }

    func resolve(_ args: [String]) throws -> Resolved {
        let c = try CommandLineDiagnosis.parse(args)
        switch c {
        case let p as Pretrain:
            return Resolved(common: p.options().common, stage: nil, tokenizer: p.options().tokenizer, notes: p.training.miniMind.notes)
        case let s as any StageCommand:
            let o = s.options()
            return Resolved(common: o.common, stage: o, tokenizer: o.tokenizer, notes: s.training.miniMind.notes)
        default: throw XCTSkip("\(args) parsed to \(type(of: c)), not a training command")
        }
    }

    /// The post-training stages have no default data file (MiniMind's `../dataset/…` is not kept): one to get past
    /// validation when a test looks at the other defaults.
    static func dataPath(_ s: Script) -> [String] { s.command == ["pretrain"] ? [] : ["--data-path", "d.jsonl"] }

    static func argv(_ flags: [Flag]) -> [String] { flags.flatMap { f in [f.name] + (f.value.map { [$0] } ?? []) } }

    /// What a flag with a meaning sets, read back from the resolved options (nil: the flag has no option to check).
    func applied(_ flag: String, in r: Resolved) -> String? {
        let o = r.common
        switch flag {
        case "--out_dir": return o.outDir
        case "--data_path": return o.dataPath
        case "--epochs": return "\(o.epochs)"
        case "--batch_size": return "\(o.batchSize)"
        case "--learning_rate": return "\(o.learningRate)"
        case "--accumulation_steps": return "\(o.accumulationSteps)"
        case "--grad_clip": return "\(o.gradClip)"
        case "--log_interval": return "\(o.logInterval)"
        case "--save_interval": return "\(o.saveInterval)"
        case "--hidden_size": return "\(o.hiddenSize)"
        case "--num_hidden_layers": return "\(o.numHiddenLayers)"
        case "--max_seq_len": return "\(o.maxSeqLen)"
        case "--use_moe": return o.moe.useMoe ? "True" : "False"
        case "--lora_name": return r.stage?.loraName
        case "--dtype": return o.dtype?.rawValue
        default: return nil
        }
    }

    /// A MiniMind value in the resolved options' spelling (`5e-4` → "0.0005", `1.0` → "1.0").
    func normalized(_ flag: String, _ value: String) -> String {
        switch flag {
        case "--learning_rate", "--grad_clip": return "\(Double(value)!)"
        default: return value
        }
    }

    /// Each script's whole flag set, with values other than its defaults, on the matching subcommand: every option
    /// with a meaning takes the value, every flag without one gives exactly one note naming it.
    func testEveryScriptsFlagSetParsesAndApplies() throws {
        for s in Self.scripts {
            let r = try resolve(s.command + Self.argv(s.flags) + s.swiftMindExtras)
            for f in s.flags {
                if let got = applied(f.name, in: r) {
                    XCTAssertEqual(got, normalized(f.name, f.value!), "\(s.file) \(f.name)")
                } else if Self.noted.contains(f.name) {
                    XCTAssertEqual(r.notes.filter { $0.contains(f.name + " ") || $0.hasSuffix(f.name) || $0.contains(f.name + ":") }.count, 1,
                                   "\(s.file) \(f.name): \(r.notes)")
                } else {
                    XCTAssertEqual(f.name, "--warmup_iters", "\(s.file): \(f.name) is neither applied nor noted")
                    XCTAssertFalse(r.notes.joined().contains("--warmup_iters"), "--warmup_iters 0 is MiniMind's behaviour: no note")
                }
            }
            // One note per noted flag (the two W&B flags share one line), nothing printed twice.
            XCTAssertEqual(r.notes.count, 5, "\(s.file): \(r.notes)")
            XCTAssertEqual(Set(r.notes).count, r.notes.count)
        }
    }

    /// The defaults of each command are MiniMind's for its script, except the documented differences.
    func testDefaultsAreMiniMindsPerScript() throws {
        for s in Self.scripts {
            let r = try resolve(s.command + s.swiftMindExtras + Self.dataPath(s))
            XCTAssertTrue(r.notes.isEmpty, "\(s.file): \(r.notes)")
            for f in s.flags {
                guard let miniMind = f.miniMindDefault, let got = applied(f.name, in: r),
                      !Self.keptDifferences.contains(f.name), !Self.keptDifferences.contains("\(s.file) \(f.name)") else { continue }
                XCTAssertEqual(got, normalized(f.name, miniMind), "\(s.file) \(f.name)")
            }
        }
    }

    /// The defaults as they were before the option group was shared (literal values), so the refactor changed none.
    func testDefaultsAreUnchanged() throws {
        struct D: Equatable { let lr: Double, epochs: Int, batch: Int, seq: Int, accumulation: Int, log: Int, save: Int }
        let expected: [TrainingCommand: D] = [
            .pretrain: D(lr: 5e-4, epochs: 1, batch: 32, seq: 512, accumulation: 8, log: 100, save: 100),
            .sft: D(lr: 5e-7, epochs: 2, batch: 16, seq: 512, accumulation: 1, log: 100, save: 100),
            .lora: D(lr: 1e-4, epochs: 10, batch: 32, seq: 512, accumulation: 1, log: 100, save: 100),
            .dpo: D(lr: 1e-8, epochs: 2, batch: 4, seq: 1024, accumulation: 1, log: 100, save: 100),
            .reason: D(lr: 1e-6, epochs: 1, batch: 8, seq: 1024, accumulation: 1, log: 100, save: 100),
            .distill: D(lr: 5e-6, epochs: 6, batch: 32, seq: 512, accumulation: 1, log: 100, save: 100)]
        for (command, script) in zip(TrainingCommand.allCases, Self.scripts) {
            let o = try resolve(script.command + script.swiftMindExtras + Self.dataPath(script)).common
            XCTAssertEqual(D(lr: o.learningRate, epochs: o.epochs, batch: o.batchSize, seq: o.maxSeqLen,
                             accumulation: o.accumulationSteps, log: o.logInterval, save: o.saveInterval), expected[command], "\(command)")
            XCTAssertEqual(o.outDir, "out"); XCTAssertEqual(o.gradClip, 1.0); XCTAssertEqual(o.hiddenSize, 512)
            XCTAssertEqual(o.numHiddenLayers, 8); XCTAssertEqual(o.seed, 1337); XCTAssertEqual(o.keepCheckpoints, 2)
            XCTAssertEqual(o.bucketCapMB, 25); XCTAssertEqual(o.weightDecay, 0.01); XCTAssertNil(o.maxSteps)
            XCTAssertFalse(o.resume); XCTAssertFalse(o.moe.useMoe)
            XCTAssertEqual(TrainingOptions.defaults(for: command).dataPath, command == .pretrain ? "dataset/pretrain_hq.jsonl" : "", "\(command)")
        }
        let p = try resolve(["pretrain"])
        XCTAssertEqual(p.tokenizer, "model")
        let st = try XCTUnwrap(try resolve(["sft", "--init", "m", "--data-path", "d"]).stage)
        XCTAssertNil(st.tokenizer)
        XCTAssertEqual(StageOptions.defaults(for: .lora).loraRank, 8); XCTAssertEqual(StageOptions.defaults(for: .lora).loraName, "lora")
        XCTAssertEqual(StageOptions.defaults(for: .dpo).beta, 0.1); XCTAssertEqual(StageOptions.defaults(for: .reason).reasonWeight, 10)
        XCTAssertEqual(StageOptions.defaults(for: .distill).alpha, 0.5); XCTAssertEqual(StageOptions.defaults(for: .distill).temperature, 2)
    }

    /// The kebab-case names and MiniMind's spellings set the same options; `--use_moe` reads as meant.
    func testSpellingsAndBooleans() throws {
        let kebab = try resolve(["sft", "--init", "m", "--data-path", "d.jsonl", "--batch-size", "3", "--max-seq-len", "64",
                                 "--learning-rate", "1e-3", "--use-moe", "--from-resume"])
        let snake = try resolve(["sft", "--init", "m", "--data_path=d.jsonl", "--batch_size=3", "--max_seq_len", "64",
                                 "--learning_rate", "1e-3", "--use_moe", "True", "--from_resume"])
        let e = JSONEncoder()
        e.outputFormatting = .sortedKeys
        XCTAssertEqual(String(decoding: try e.encode(kebab.stage), as: UTF8.self), String(decoding: try e.encode(snake.stage), as: UTF8.self))
        XCTAssertTrue(kebab.common.moe.useMoe); XCTAssertTrue(kebab.common.resume)
        for (word, moe) in [("True", true), ("true", true), ("1", true), ("yes", true), ("False", false), ("false", false), ("0", false), ("no", false)] {
            XCTAssertEqual(try resolve(["pretrain", "--use_moe", word]).common.moe.useMoe, moe, word)
        }
        XCTAssertEqual(try resolve(["pretrain", "--dtype", "float32"]).notes, [])
        XCTAssertEqual(try resolve(["pretrain", "--warmup_iters", "100"]).notes.count, 1)
    }

    /// Values SwiftMind cannot honour are command-line errors with a message saying what to use instead.
    func testImpossibleValuesAreRefused() throws {
        for (args, message) in [(["--device", "cuda:0"], "--device cuda:0 is not available: SwiftMind trains on CPUs only"),
                                (["--device", "mps"], "--device mps is not available"),
                                (["--dtype", "float16"], "--dtype float16 is not supported: fp16 needs loss scaling, which SwiftMind does not do; use --dtype bfloat16"),
                                (["--grad-comm-dtype", "float16"], "--grad-comm-dtype float16 is not supported"),
                                (["--dtype", "int8"], "--dtype must be bfloat16 or float32 (got int8)"),
                                (["--use_moe", "maybe"], "The value 'maybe' is invalid for '--use_moe <bool>'"),
                                (["--use-moe", "--use_moe", "False"], "--use-moe and --use_moe False contradict each other"),
                                (["--lora_name", "a/b"], "--lora-name must be a file name")] {
            XCTAssertThrowsError(try resolve(["lora", "--init", "m", "--data_path", "d"] + args), "\(args)") { error in
                XCTAssertTrue(Trainer.message(for: error).contains(message), "\(args): \(Trainer.message(for: error))")
                XCTAssertEqual(Trainer.exitCode(for: error), .validationFailure)
            }
        }
    }

    /// The README's options tables are exactly `trainer options-table`'s output (rendered from the defaults).
    func testReadmeOptionsTableIsGeneratedFromTheDefaults() throws {
        let readme = try String(contentsOf: URL(fileURLWithPath: Fixtures.packageRoot + "/README.md"), encoding: .utf8)
        let begin = try XCTUnwrap(readme.range(of: "<!-- BEGIN options-table"))
        let body = readme[begin.upperBound...].drop { $0 != "\n" }.dropFirst()
        let end = try XCTUnwrap(body.range(of: "<!-- END options-table -->"))
        XCTAssertEqual(String(body[..<end.lowerBound]), OptionsTable.markdown + "\n",
                       "README's options table is stale: replace it with the output of `trainer options-table`")
        // And the table holds the numbers of the one source of defaults.
        XCTAssertTrue(OptionsTable.markdown.contains("| `--learning-rate` / `--learning_rate` | 5e-4; sft 5e-7, lora 1e-4, dpo 1e-8, reason 1e-6, distill 5e-6, grpo 3e-7, reward 5e-5 |"))
        XCTAssertTrue(OptionsTable.markdown.contains("| `--accumulation-steps` / `--accumulation_steps` | 1; pretrain 8 |"))
    }

    /// The README's "MiniMind flag → SwiftMind" table lists every flag of the six scripts, and no other.
    func testReadmeMiniMindTableListsEveryFlag() throws {
        let readme = try String(contentsOf: URL(fileURLWithPath: Fixtures.packageRoot + "/README.md"), encoding: .utf8)
        let begin = try XCTUnwrap(readme.range(of: "<!-- BEGIN minimind-flags"))
        let end = try XCTUnwrap(readme.range(of: "<!-- END minimind-flags -->"))
        var listed = Set<String>()
        for line in readme[begin.upperBound..<end.lowerBound].split(separator: "\n") where line.hasPrefix("| `--") {
            let first = line.split(separator: "|")[0]
            for m in first.split(separator: "`") where m.hasPrefix("--") { listed.insert(String(m)) }
        }
        XCTAssertEqual(listed, Set(Self.scripts.flatMap { $0.flags.map(\.name) }))
    }
}

/// The same through the `trainer` binary: `--print-options`, the notes on stderr, rank 0 alone printing under
/// mpirun, mistakes named with their subcommand, and MiniMind's train_lora.py command line training for real.
final class MiniMindCommandLineRunTests: ScratchDirTestCase {
    func count(_ needle: String, in text: String) -> Int { text.components(separatedBy: needle).count - 1 }

    func testPrintOptionsShowsTheResolvedOptionsAndEachNoteOnce() throws {
        let s = MiniMindFlagsTests.scripts[0]
        let r = try TrainerRunner.run(s.command + MiniMindFlagsTests.argv(s.flags) + s.swiftMindExtras + ["--print-options"], timeout: 60)
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(obj["command"] as? String, "pretrain")
        let common = try XCTUnwrap((obj["options"] as? [String: Any])?["common"] as? [String: Any])
        XCTAssertEqual(common["batchSize"] as? Int, 6); XCTAssertEqual(common["hiddenSize"] as? Int, 768)
        XCTAssertEqual((common["moe"] as? [String: Any])?["useMoe"] as? Bool, true)
        XCTAssertEqual(count("note: ", in: r.stderr), 5, r.stderr)
        XCTAssertEqual(common["dtype"] as? String, "bfloat16")
        for flag in ["--device cpu", "--ddp", "--num_workers 1", "--use_wandb --wandb_project", "--local_rank -1"] {
            XCTAssertEqual(count("note: " + flag, in: r.stderr), 1, "\(flag): \(r.stderr)")
        }
    }

    func testMistakesNameTheSubcommand() throws {
        let sub = try TrainerRunner.run(["stf", "--data-path", "x.jsonl"], timeout: 60)
        XCTAssertEqual(sub.status, 64, sub.stderr)
        XCTAssertTrue(sub.stderr.contains("Error: Unknown subcommand 'stf'. Did you mean 'sft'?\n"), sub.stderr)
        let opt = try TrainerRunner.run(["sft", "--dat-path", "x.jsonl"], timeout: 60)
        XCTAssertEqual(opt.status, 64, opt.stderr)
        XCTAssertTrue(opt.stderr.contains("Error: Unknown option '--dat-path' for 'trainer sft'. Did you mean '--data-path'?\n"), opt.stderr)
        XCTAssertTrue(opt.stderr.contains("Usage: trainer sft"), opt.stderr)
        let nested = try TrainerRunner.run(["tokenizer", "encdoe"], timeout: 60)
        XCTAssertTrue(nested.stderr.contains("Error: Unknown subcommand 'encdoe' for 'trainer tokenizer'. Did you mean 'encode'?\n"), nested.stderr)
        XCTAssertTrue(nested.stderr.contains("Usage: trainer tokenizer <subcommand>"), nested.stderr)
        let cuda = try TrainerRunner.run(["pretrain", "--device", "cuda:0"], timeout: 60)
        XCTAssertEqual(cuda.status, 64, cuda.stderr)
        XCTAssertTrue(cuda.stderr.contains("Error: --device cuda:0 is not available"), cuda.stderr)
        XCTAssertFalse(cuda.stderr.contains("[openblas]"), cuda.stderr)
    }

    /// Under `mpirun -np 2` every rank parses the same command line; only rank 0 prints.
    func testUnderMPIOnlyRankZeroPrints() throws {
        let bad = try TrainerRunner.run(["sft", "--dat-path", "x.jsonl"], np: 2, timeout: 120)
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertEqual(count("Error: Unknown option '--dat-path' for 'trainer sft'", in: bad.stderr), 1, bad.stderr)
        XCTAssertEqual(count("Usage: trainer sft", in: bad.stderr), 1, bad.stderr)
        let help = try TrainerRunner.run(["dpo", "--help"], np: 2, timeout: 120)
        XCTAssertEqual(help.status, 0, help.stderr)
        XCTAssertEqual(count("USAGE: trainer dpo", in: help.stdout), 1, help.stdout)
        let noted = try TrainerRunner.run(["pretrain", "--ddp", "--device", "cpu", "--tokenizer", "m", "--print-options"], np: 2, timeout: 120)
        XCTAssertEqual(noted.status, 0, noted.stderr)
        XCTAssertEqual(count("\"command\":\"pretrain\"", in: noted.stdout), 1, noted.stdout)
        XCTAssertEqual(count("note: --ddp", in: noted.stderr), 1, noted.stderr)
        XCTAssertEqual(count("note: --device cpu", in: noted.stderr), 1, noted.stderr)
    }

    /// MiniMind's train_lora.py command line (all its flags) plus `--init`/`--tokenizer` trains; the adapter is
    /// named after `--lora_name`; the notes are printed once per flag, by rank 0 of 2.
    func testMiniMindLoRACommandLineTrains() throws {
        let out = work + "/out"
        let args = ["lora", "--out_dir", out, "--epochs", "1", "--batch_size", "2", "--learning_rate", "1e-3",
                    "--device", "cpu", "--dtype", "bfloat16", "--use_wandb", "--wandb_project", "MiniMind-LoRA-SFT",
                    "--num_workers", "1", "--ddp", "--accumulation_steps", "1", "--grad_clip", "1.0", "--warmup_iters", "0",
                    "--log_interval", "1", "--save_interval", "100", "--local_rank", "-1", "--hidden_size", "512",
                    "--num_hidden_layers", "8", "--max_seq_len", "48", "--use_moe", "False",
                    "--data_path", Fixtures.corpus("lora_identity.jsonl"), "--lora_name", "lora_identity",
                    "--init", Fixtures.golden("lora_base"), "--tokenizer", TrainerRunner.tokenizer,
                    "--max-steps", "2", "--threads", "1"]
        let r = try TrainerRunner.run(args, np: 2, timeout: 300)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(count("note: ", in: r.stderr), 5, r.stderr)
        let fm = FileManager.default
        XCTAssertTrue(fm.fileExists(atPath: out + "/lora_identity.safetensors"), "\((try? fm.contentsOfDirectory(atPath: out)) ?? [])")
        XCTAssertFalse(fm.fileExists(atPath: out + "/lora.safetensors"))
        XCTAssertTrue(fm.fileExists(atPath: out + "/final/lora.safetensors"))
        XCTAssertEqual(try TrainerRunner.losses(outDir: out).map(\.step), [1, 2])
    }
}
