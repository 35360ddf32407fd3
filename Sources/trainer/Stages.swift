// `trainer sft | lora | dpo | reason | distill`: the post-training stages, data-parallel exactly like `pretrain`.
import ArgumentParser
import CBLAS
import Foundation
import Logging
import Model
import SwiftMindDistributed
import Training

/// Options shared by every stage (MiniMind's names; snake_case spellings accepted). Unset values take the stage's
/// MiniMind default (see `StageOptions.defaults(for:)`).
struct StageArguments: ParsableArguments {
    @Option(name: [.customLong("out-dir"), .customLong("out_dir")], help: "Output directory: checkpoints, final/, metrics.jsonl.")
    var outDir: String = "out"
    @Option(name: [.customLong("data-path"), .customLong("data_path")], help: "jsonl in the stage's MiniMind format.")
    var dataPath: String
    @Option(name: .customLong("init"), help: "Model directory to start from (policy / student / LoRA base).")
    var initDir: String?
    @Option(name: .customLong("tokenizer"), help: "tokenizer.json or its directory (default: the --init directory).")
    var tokenizer: String?
    @Option(name: .customLong("epochs")) var epochs: Int?
    @Option(name: [.customLong("batch-size"), .customLong("batch_size")], help: "Samples (DPO: pairs) per micro-batch per rank.")
    var batchSize: Int?
    @Option(name: [.customLong("learning-rate"), .customLong("learning_rate")], help: "Peak of MiniMind's cosine schedule.")
    var learningRate: Double?
    @Option(name: [.customLong("accumulation-steps"), .customLong("accumulation_steps")]) var accumulationSteps: Int = 1
    @Option(name: [.customLong("grad-clip"), .customLong("grad_clip")]) var gradClip: Double = 1.0
    @Option(name: [.customLong("max-seq-len"), .customLong("max_seq_len")]) var maxSeqLen: Int?
    @Option(name: [.customLong("hidden-size"), .customLong("hidden_size")], help: "Random init without --init.") var hiddenSize: Int = 512
    @Option(name: [.customLong("num-hidden-layers"), .customLong("num_hidden_layers")]) var numHiddenLayers: Int = 8
    @Option(name: [.customLong("log-interval"), .customLong("log_interval")]) var logInterval: Int = 100
    @Option(name: [.customLong("save-interval"), .customLong("save_interval")]) var saveInterval: Int = 100
    @Option(name: .customLong("seed")) var seed: UInt64 = 1337
    @Option(name: [.customLong("max-steps"), .customLong("max_steps")]) var maxSteps: Int?
    @Flag(name: [.customLong("resume"), .customLong("from-resume"), .customLong("from_resume")]) var resume = false
    @Option(name: [.customLong("keep-checkpoints"), .customLong("keep_checkpoints")]) var keepCheckpoints: Int = 2
    @Option(name: [.customLong("bucket-cap-mb"), .customLong("bucket_cap_mb")]) var bucketCapMB: Double = 25
    @Option(name: .customLong("threads"), help: "BLAS/kernel threads per rank (default: cores / ranks on this host).") var threads: Int?
    @Option(name: [.customLong("weight-decay"), .customLong("weight_decay")]) var weightDecay: Double = 0.01
    @OptionGroup var moe: MoEArguments
    @OptionGroup var chatTemplate: ChatTemplateArgument

    func options(_ stage: Stage) -> StageOptions {
        var o = StageOptions.defaults(for: stage)
        o.outDir = outDir; o.dataPath = dataPath; o.initDir = initDir; o.tokenizer = tokenizer
        if let v = epochs { o.epochs = v }
        if let v = batchSize { o.batchSize = v }
        if let v = learningRate { o.learningRate = v }
        if let v = maxSeqLen { o.maxSeqLen = v }
        o.accumulationSteps = accumulationSteps; o.gradClip = gradClip; o.hiddenSize = hiddenSize
        o.numHiddenLayers = numHiddenLayers; o.logInterval = logInterval; o.saveInterval = saveInterval; o.seed = seed
        o.maxSteps = maxSteps; o.resume = resume; o.keepCheckpoints = keepCheckpoints; o.bucketCapMB = bucketCapMB
        o.weightDecay = weightDecay; o.moe = moe.settings; o.chatTemplate = chatTemplate.chatTemplate
        return o
    }

    func run(_ o: StageOptions) throws {
        TrainerLogging.bootstrap()
        let comm = try makeCommunicator()
        let t = threads ?? defaultThreadsPerRank()
        openblas_set_num_threads(Int32(t))
        var o = o
        o.threads = ProcessInfo.processInfo.activeProcessorCount
        var logger = Logger(label: o.stage.rawValue)
        logger[metadataKey: "rank"] = "\(comm.rank)"
        do {
            try StageTrainer(options: o, communicator: comm, logger: logger).run()
        } catch {
            if comm.size > 1 { comm.abort(message: "\(o.stage) failed: \(error)", code: 1) }
            comm.finalize()
            throw error
        }
        comm.finalize()
    }
}

struct SFT: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sft",
        abstract: "Full SFT on {\"conversations\"} jsonl (MiniMind train_full_sft: lr 5e-7, 2 epochs, batch 16, seq 512).")
    @OptionGroup var args: StageArguments
    func run() throws { try args.run(args.options(.sft)) }
}

struct Reason: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "reason",
        abstract: "Reasoning distillation SFT (MiniMind train_distill_reason: lr 1e-6, seq 1024): <think>/<answer> tag tokens weighted.",
        discussion: "Weights the label positions where a tag's full token sequence occurs (inside the mask) by --tag-weight; MiniMind weights every position whose label id occurs in any tag, including stray '<'/'>' tokens. The loss is normalised by the plain mask sum, as MiniMind.")
    @OptionGroup var args: StageArguments
    @Option(name: [.customLong("tag-weight"), .customLong("tag_weight")]) var tagWeight: Double = 10
    func run() throws { var o = args.options(.reason); o.reasonWeight = tagWeight; try args.run(o) }
}

struct DPO: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dpo",
        abstract: "DPO on {\"chosen\",\"rejected\"} jsonl (MiniMind train_dpo: lr 1e-8, 2 epochs, batch 4, seq 1024, β 0.1).")
    @OptionGroup var args: StageArguments
    @Option(help: "Frozen reference model directory (default: --init).") var reference: String?
    @Option(help: "DPO β.") var beta: Double = 0.1
    func run() throws { var o = args.options(.dpo); o.reference = reference; o.beta = beta; try args.run(o) }
}

struct Distill: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "distill",
        abstract: "White-box distillation from --teacher (MiniMind train_distillation: lr 5e-6, seq 512, α 0.5, T 2).")
    @OptionGroup var args: StageArguments
    @Option(help: "Teacher model directory (same vocabulary, any size; forward only).") var teacher: String
    @Option(help: "Weight of the CE term.") var alpha: Double = 0.5
    @Option(help: "Softmax temperature.") var temperature: Double = 2.0
    func run() throws {
        var o = args.options(.distill); o.teacher = teacher; o.alpha = alpha; o.temperature = temperature; try args.run(o)
    }
}

struct LoRA: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "lora",
        abstract: "LoRA fine-tuning (MiniMind train_lora: lr 1e-4, 10 epochs, batch 32); `lora merge` folds an adapter into a model.",
        subcommands: [LoRATrain.self, LoRAMerge.self], defaultSubcommand: LoRATrain.self)
}

struct LoRATrain: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "train",
        abstract: "Train rank-r adapters on every square Linear of --init (frozen); writes OUT/lora.safetensors.")
    @OptionGroup var args: StageArguments
    @Option(name: [.customLong("lora-rank"), .customLong("lora_rank")]) var loraRank: Int = 8
    func run() throws { var o = args.options(.lora); o.loraRank = loraRank; try args.run(o) }
}

struct LoRAMerge: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "merge",
        abstract: "W += B·A for every adapter: writes a full model directory (config, weights, tokenizer files).")
    @Option(help: "Base model directory.") var model: String
    @Option(help: "Adapter safetensors (<module>.lora.A.weight / .B.weight).") var lora: String
    @Option(help: "Output model directory.") var out: String
    func run() throws {
        let m = try MiniMindModel.load(directory: model)
        let a = try LoRAAdapters(config: m.config, rank: try LoRAAdapters.rank(inFile: lora))
        try a.load(path: lora)
        try a.merge(into: m)
        let fm = FileManager.default
        let tmp = out + ".tmp-\(getpid())"
        try? fm.removeItem(atPath: tmp)
        try fm.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        try m.save(directory: tmp)
        for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] where fm.fileExists(atPath: model + "/" + f) {
            try fm.copyItem(atPath: model + "/" + f, toPath: tmp + "/" + f)
        }
        try? fm.removeItem(atPath: out)
        try fm.moveItem(atPath: tmp, toPath: out)
        print("lora merge: \(a.targets.count) adapters (rank \(a.rank)) merged into \(model) → \(out)")
    }
}
