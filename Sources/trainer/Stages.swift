// `trainer sft | lora | dpo | reason | distill`: the post-training stages, data-parallel exactly like `pretrain`.
import ArgumentParser
import CBLAS
import Foundation
import Logging
import Model
import SwiftMindDistributed
import Training

/// A post-training stage command: the shared training options, `--init`, and the stage's own options (`configure`).
protocol StageCommand: ParsableCommand, DeferredOptionChecks {
    static var stage: Stage { get }
    var training: TrainingArguments { get }
    /// `--init`: declared on each stage rather than in a nested option group, which ArgumentParser's debug builds
    /// take seconds to check.
    var initDir: String? { get }
    /// `--chat-template minimind`: render conversations with MiniMind's template instead of the model's own
    /// (declared on each stage, like `--init`).
    var chatTemplate: String? { get }
    /// Sets the stage's own options.
    func configure(_ o: inout StageOptions)
}

extension StageCommand {
    /// The resolved options: `StageOptions.defaults(for:)` with the command line applied.
    func options() -> StageOptions {
        var o = StageOptions.defaults(for: Self.stage)
        o.common = training.options(for: TrainingCommand(Self.stage))
        o.initDir = initDir
        o.tokenizer = training.tokenizer
        o.chatTemplate = chatTemplate
        configure(&o)
        return o
    }

    func validate() throws {
        guard !CommandLineDiagnosis.optionChecksDeferred else { return }
        try ChatTemplateArgument.check(chatTemplate)
        try TrainingArguments.commandLineError { try options().check() }
    }

    func checkOptions() throws {
        try ChatTemplateArgument.check(chatTemplate)
        try training.checkGroups()
        try TrainingArguments.commandLineError { try options().check() }
    }

    func run() throws {
        let o = options()
        try training.run(TrainingCommand(Self.stage), options: o, label: Self.stage.rawValue) { comm, logger in
            try TrainingRunner(options: o, communicator: comm, logger: logger).run()
        }
    }
}

/// The defaults of a stage's own option, from `StageOptions.defaults(for:)`.
func stageDefault<T>(_ stage: Stage, _ path: KeyPath<StageOptions, T>) -> T { StageOptions.defaults(for: stage)[keyPath: path] }

struct SFT: StageCommand {
    static let configuration = CommandConfiguration(commandName: "sft",
        abstract: "Full SFT on {\"conversations\"} jsonl (MiniMind train_full_sft.py: its flags and defaults).")
    static let stage = Stage.sft
    @OptionGroup var training: TrainingArguments
    @Option(name: .customLong("init"), help: StageOptionDocs.initDir.help) var initDir: String?
    @Option(name: .customLong("chat-template"), help: ChatTemplateArgument.help) var chatTemplate: String?
    func configure(_ o: inout StageOptions) {}
}

struct Reason: StageCommand {
    static let configuration = CommandConfiguration(commandName: "reason",
        abstract: "Reasoning distillation SFT (MiniMind train_distill_reason.py): <think>/<answer> tag tokens weighted.",
        discussion: "Weights the label positions where a tag's full token sequence occurs (inside the mask) by --tag-weight; MiniMind weights every position whose label id occurs in any tag, including stray '<'/'>' tokens. The loss is normalised by the plain mask sum, as MiniMind.")
    static let stage = Stage.reason
    @OptionGroup var training: TrainingArguments
    @Option(name: .customLong("init"), help: StageOptionDocs.initDir.help) var initDir: String?
    @Option(name: .customLong("chat-template"), help: ChatTemplateArgument.help) var chatTemplate: String?
    @Option(name: spellings("tag-weight"), parsing: .unconditional, help: StageOptionDocs.tagWeight.plainHelp)
    var tagWeight = stageDefault(.reason, \.reasonWeight)
    func configure(_ o: inout StageOptions) { o.reasonWeight = tagWeight }
}

struct DPO: StageCommand {
    static let configuration = CommandConfiguration(commandName: "dpo",
        abstract: "DPO on {\"chosen\",\"rejected\"} jsonl (MiniMind train_dpo.py: its flags and defaults).")
    static let stage = Stage.dpo
    @OptionGroup var training: TrainingArguments
    @Option(name: .customLong("init"), help: StageOptionDocs.initDir.help) var initDir: String?
    @Option(name: .customLong("chat-template"), help: ChatTemplateArgument.help) var chatTemplate: String?
    @Option(help: StageOptionDocs.reference.help) var reference: String?
    @Option(parsing: .unconditional, help: StageOptionDocs.beta.plainHelp) var beta = stageDefault(.dpo, \.beta)
    func configure(_ o: inout StageOptions) { o.reference = reference; o.beta = beta }
}

struct Distill: StageCommand {
    static let configuration = CommandConfiguration(commandName: "distill",
        abstract: "White-box distillation from --teacher (MiniMind train_distillation.py: its flags and defaults).")
    static let stage = Stage.distill
    @OptionGroup var training: TrainingArguments
    @Option(name: .customLong("init"), help: StageOptionDocs.initDir.help) var initDir: String?
    @Option(name: .customLong("chat-template"), help: ChatTemplateArgument.help) var chatTemplate: String?
    @Option(help: StageOptionDocs.teacher.help) var teacher: String?
    @Option(parsing: .unconditional, help: StageOptionDocs.alpha.plainHelp) var alpha = stageDefault(.distill, \.alpha)
    @Option(parsing: .unconditional, help: StageOptionDocs.temperature.plainHelp) var temperature = stageDefault(.distill, \.temperature)
    func configure(_ o: inout StageOptions) { o.teacher = teacher; o.alpha = alpha; o.temperature = temperature }
}

struct LoRA: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "lora",
        abstract: "LoRA fine-tuning (MiniMind train_lora.py: its flags and defaults); `lora merge` folds an adapter into a model.",
        subcommands: [LoRATrain.self, LoRAMerge.self], defaultSubcommand: LoRATrain.self)
}

struct LoRATrain: StageCommand {
    static let configuration = CommandConfiguration(commandName: "train",
        abstract: "Train rank-r adapters on every square Linear of --init (frozen); writes OUT/<lora-name>.safetensors.")
    static let stage = Stage.lora
    @OptionGroup var training: TrainingArguments
    @Option(name: .customLong("init"), help: StageOptionDocs.initDir.help) var initDir: String?
    @Option(name: .customLong("chat-template"), help: ChatTemplateArgument.help) var chatTemplate: String?
    @Option(name: spellings("lora-rank"), parsing: .unconditional, help: StageOptionDocs.loraRank.plainHelp) var loraRank = stageDefault(.lora, \.loraRank)
    @Option(name: spellings("lora-name"), help: StageOptionDocs.loraName.plainHelp) var loraName = stageDefault(.lora, \.loraName)
    func configure(_ o: inout StageOptions) { o.loraRank = loraRank; o.loraName = loraName }
}

struct LoRAMerge: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "merge",
        abstract: "W += B·A for every adapter: writes a full model directory (config, weights, tokenizer files).",
        discussion: """
        OUT/merges.json lists every adapter merged into OUT (sha256 of each adapter file), the base model's merges
        first. Merging an adapter the base already lists is refused, and so is --out naming the --model directory
        (the base would be overwritten).
        """)
    @Option(help: "Base model directory.") var model: String
    @Option(help: "Adapter safetensors (<module>.lora.A.weight / .B.weight).") var lora: String
    @Option(help: "Output model directory (not the --model directory).") var out: String
    func validate() throws {
        let dirs = [model, out].map { URL(fileURLWithPath: $0).standardizedFileURL.resolvingSymlinksInPath().path }
        if dirs[0] == dirs[1] {
            throw ValidationError("--out \(out) is the --model directory: the merge would overwrite the base model; write it to another directory")
        }
    }
    func run() throws {
        let m = try MiniMindModel.load(directory: model)
        let previous = try LoRAMergeRecord.read(directory: model)
        let entry = try m.mergeLoRA(path: lora, modelDirectory: model)
        let fm = FileManager.default
        let tmp = out + ".tmp-\(getpid())"
        try? fm.removeItem(atPath: tmp)
        try fm.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        try m.save(directory: tmp)
        try LoRAMergeRecord.write(previous + [entry], directory: tmp)
        for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] where fm.fileExists(atPath: model + "/" + f) {
            try fm.copyItem(atPath: model + "/" + f, toPath: tmp + "/" + f)
        }
        try? fm.removeItem(atPath: out)
        try fm.moveItem(atPath: tmp, toPath: out)
        print("lora merge: \(entry.modules) adapters (rank \(entry.rank)) merged into \(model) → \(out) (\(LoRAMergeRecord.fileName): \(previous.count + 1) merge(s))")
    }
}
