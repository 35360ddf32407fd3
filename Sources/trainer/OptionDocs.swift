// The documentation of the training options, with their defaults rendered from `TrainingOptions.defaults(for:)` and
// `StageOptions.defaults(for:)`: the help texts use it, and `trainer options-table` prints it as the README's tables
// (a test checks that the README holds exactly that output).
import ArgumentParser
import Foundation
import SwiftMindDistributed
import Training

/// One documented option: its spellings (kebab-case and MiniMind's snake_case), what it means and its defaults.
struct OptionDoc {
    let name: String
    let meaning: String
    /// The default, per command where they differ (`1; sft 2, dpo 2`).
    let defaults: String
    /// Further spellings (`from-resume` for `resume`).
    var aliases: [String] = []
    var names: NameSpecification { NameSpecification(([name] + aliases).flatMap(longSpellings)) }
    /// For an option without a default of its own (the shared options, resolved per command).
    var help: ArgumentHelp { ArgumentHelp(Self.plain("\(meaning) (default: \(defaults))")) }
    /// For an option whose default ArgumentParser shows itself.
    var plainHelp: ArgumentHelp { ArgumentHelp(Self.plain(meaning)) }
    /// The Markdown text without its `code` and **bold** marks, for the terminal.
    static func plain(_ markdown: String) -> String {
        markdown.replacingOccurrences(of: "`", with: "").replacingOccurrences(of: "**", with: "")
    }
    /// `--batch-size` / `--batch_size`, every spelling.
    var spelled: String {
        ([name] + aliases).flatMap { n -> [String] in
            let snake = n.replacingOccurrences(of: "-", with: "_")
            return snake == n ? [n] : [n, snake]
        }.map { "`--\($0)`" }.joined(separator: " / ")
    }
}

/// The shared options' documentation. Defaults are rendered from `TrainingOptions.defaults(for:)`.
enum TrainingOptionDocs {
    /// `v` for every command where the most common value applies, then the exceptions: `1; sft 2, lora 10`.
    static func perCommand<T: Equatable>(_ path: KeyPath<TrainingOptions, T>, _ show: (T) -> String) -> String {
        let values = TrainingCommand.allCases.map { (command: $0, value: TrainingOptions.defaults(for: $0)[keyPath: path]) }
        var common = values[0].value, best = 0
        for v in values {
            let n = values.filter { $0.value == v.value }.count
            if n > best { best = n; common = v.value }
        }
        let exceptions = values.filter { $0.value != common }.map { "\($0.command.rawValue) \(show($0.value))" }
        return exceptions.isEmpty ? show(common) : show(common) + "; " + exceptions.joined(separator: ", ")
    }
    static func number(_ v: Int) -> String { "\(v)" }
    /// `5e-4`, `0.01`, `1.0`, `25`: learning rates in MiniMind's notation.
    static func number(_ v: Double) -> String {
        if v != 0, abs(v) < 1e-3 {
            let e = Int((log10(abs(v))).rounded(.down))
            let m = v / pow(10, Double(e))
            let ms = (m - m.rounded()).magnitude < 1e-9 ? "\(Int(m.rounded()))" : "\(m)"
            return "\(ms)e\(e)"
        }
        if v == v.rounded(), abs(v) >= 10 { return "\(Int(v))" }
        return "\(v)"
    }

    static let dataPath = OptionDoc(name: "data-path", meaning: "jsonl in the command's MiniMind format",
        defaults: "`\(TrainingOptions.defaults(for: .pretrain).dataPath)` for pretrain; required for the other commands")
    static let tokenizer = OptionDoc(name: "tokenizer", meaning: "`tokenizer.json` or its directory",
        defaults: "`\(PretrainOptions().tokenizer)` for pretrain; the other commands: the `--init` directory")
    static let outDir = OptionDoc(name: "out-dir", meaning: "checkpoints, `final/`, `metrics.jsonl`",
        defaults: perCommand(\.outDir) { "`\($0)`" })
    static let epochs = OptionDoc(name: "epochs", meaning: "passes over the data", defaults: perCommand(\.epochs, number))
    static let batchSize = OptionDoc(name: "batch-size", meaning: "samples (DPO, reward: pairs) per micro-batch **per rank**",
        defaults: perCommand(\.batchSize, number))
    static let accumulationSteps = OptionDoc(name: "accumulation-steps", meaning: "micro-batches per optimizer step",
        defaults: perCommand(\.accumulationSteps, number))
    static let learningRate = OptionDoc(name: "learning-rate",
        meaning: "`lr` in MiniMind's schedule lr/10 + lr/2·(1 + cos(π·s/S)), which starts at 1.1·lr and ends at lr/10",
        defaults: perCommand(\.learningRate, number))
    static let gradClip = OptionDoc(name: "grad-clip", meaning: "global gradient-norm clip (0 = off)",
        defaults: perCommand(\.gradClip, number))
    static let maxSeqLen = OptionDoc(name: "max-seq-len", meaning: "tokens per sample (truncated / padded with id 0)",
        defaults: perCommand(\.maxSeqLen, number))
    static let hiddenSize = OptionDoc(name: "hidden-size",
        meaning: "model width of a random init (8 heads, 2 KV heads, vocab = the tokenizer's); with `--init` the model's config decides",
        defaults: perCommand(\.hiddenSize, number))
    static let numHiddenLayers = OptionDoc(name: "num-hidden-layers", meaning: "decoder layers of a random init",
        defaults: perCommand(\.numHiddenLayers, number))
    static let logInterval = OptionDoc(name: "log-interval", meaning: "log every N optimizer steps",
        defaults: perCommand(\.logInterval, number))
    static let saveInterval = OptionDoc(name: "save-interval", meaning: "checkpoint every N optimizer steps",
        defaults: perCommand(\.saveInterval, number))
    static let seed = OptionDoc(name: "seed", meaning: "initialisation, and the per-epoch shuffle (seed + epoch)",
        defaults: perCommand(\.seed) { "\($0)" })
    static let maxSteps = OptionDoc(name: "max-steps", meaning: "stop after N optimizer steps; the schedule spans them",
        defaults: "all epochs")
    static let resume = OptionDoc(name: "resume",
        meaning: "continue from the newest complete `OUT/checkpoint-*/` (any world size)",
        defaults: "off", aliases: ["from-resume"])
    static let keepCheckpoints = OptionDoc(name: "keep-checkpoints", meaning: "checkpoints kept",
        defaults: perCommand(\.keepCheckpoints, number))
    static let bucketCapMB = OptionDoc(name: "bucket-cap-mb", meaning: "gradient all-reduce bucket size (MB, 0.01–4096)",
        defaults: perCommand(\.bucketCapMB, number))
    static let threads = OptionDoc(name: "threads", meaning: "BLAS and kernel threads per rank (the data is tokenized on all cores)",
        defaults: "`$OPENBLAS_NUM_THREADS`, else cores / ranks on the host")
    static let weightDecay = OptionDoc(name: "weight-decay", meaning: "AdamW decoupled weight decay (β 0.9 / 0.999, eps 1e-8, as torch)",
        defaults: perCommand(\.weightDecay, number))

    static let stallWarning = OptionDoc(name: "stall-warning",
        meaning: "seconds a rank may wait in one collective before rank 0 logs which ranks (and hosts) have not reached it and where the others wait",
        defaults: perCommand(\.stallWarning, number))
    static let stallTimeout = OptionDoc(name: "stall-timeout",
        meaning: "seconds in one collective before every rank aborts with that message, exit code \(StallInspector.exitCode) (0 = off); the token-cache barrier counts from the builder's last progress",
        defaults: perCommand(\.stallTimeout, number))

    static let dtype = OptionDoc(name: "dtype",
        meaning: "matrix products: `bfloat16` = MiniMind's `torch.autocast(bfloat16)` (bf16 operands, fp32 accumulation; RMSNorm, RoPE, softmax, SwiGLU, loss, weights, gradients, AdamW and checkpoints fp32; native bf16 CPUs: oneDNN, elsewhere converted operands on OpenBLAS, not faster) or `float32`; `float16` is refused; dense models only",
        defaults: "`bfloat16` on a CPU with `avx512_bf16` or `amx_bf16`, else `float32` (MoE: `float32`)")
    static let gradCommDType = OptionDoc(name: "grad-comm-dtype",
        meaning: "gradient all-reduce payload: `bfloat16` rounds each rank's gradients to bf16 (half the bytes) and sums them in fp32, or `float32`",
        defaults: "`float32`")

    /// In the order of the README table.
    static let all: [OptionDoc] = [dataPath, tokenizer, outDir, epochs, batchSize, accumulationSteps, learningRate, gradClip,
                                   maxSeqLen, hiddenSize, numHiddenLayers, logInterval, saveInterval, seed, maxSteps, resume,
                                   keepCheckpoints, bucketCapMB, threads, weightDecay, stallWarning, stallTimeout, dtype,
                                   gradCommDType]
}


/// The options a single command (or the post-training stages) adds to the shared ones.
enum StageOptionDocs {
    static func show(_ v: Double) -> String { TrainingOptionDocs.number(v) }
    static let cacheDir = OptionDoc(name: "cache-dir", meaning: "token cache root",
        defaults: "`$SWIFTMIND_CACHE`, else `$XDG_CACHE_HOME/swiftmind/tokens`, else `~/.cache/swiftmind/tokens`")
    static let timeline = OptionDoc(name: "timeline",
        meaning: "write a Chrome trace of every rank's steps to FILE at the end (data loading, forward, backward per layer, each gradient bucket's all-reduce, clip + optimizer, checkpoints, stalls); open it in Perfetto UI or `chrome://tracing`",
        defaults: "none")
    static let initDir = OptionDoc(name: "init", meaning: "model directory to start from (policy / student / LoRA base / reward backbone; reward adds `score.weight` ~ N(0, 0.02²) from `--seed` when it has none)",
        defaults: "a random init of `--hidden-size` × `--num-hidden-layers`")
    static let loraRank = OptionDoc(name: "lora-rank", meaning: "adapter rank r",
        defaults: "\(stageDefault(.lora, \.loraRank))")
    static let loraName = OptionDoc(name: "lora-name",
        meaning: "the adapter is saved as `OUT/<lora-name>.safetensors` (MiniMind: `out/lora/<lora_name>_<hidden>.pth`)",
        defaults: "`\(stageDefault(.lora, \.loraName))`")
    static let reference = OptionDoc(name: "reference", meaning: "frozen reference model directory", defaults: "the `--init` model")
    static let beta = OptionDoc(name: "beta", meaning: "DPO β", defaults: show(stageDefault(.dpo, \.beta)))
    static let tagWeight = OptionDoc(name: "tag-weight", meaning: "loss weight of the `<think>`/`<answer>` tag tokens",
        defaults: show(stageDefault(.reason, \.reasonWeight)))
    static let teacher = OptionDoc(name: "teacher", meaning: "teacher model directory (same vocabulary, any size; forward only)",
        defaults: "required")
    static let alpha = OptionDoc(name: "alpha", meaning: "weight of the CE term: α·CE + (1−α)·T²·KL",
        defaults: show(stageDefault(.distill, \.alpha)))
    static let temperature = OptionDoc(name: "temperature", meaning: "softmax temperature T of the KL term",
        defaults: show(stageDefault(.distill, \.temperature)))

    /// (commands, option), in the order of the README table.
    static let all: [(String, OptionDoc)] = [
        ("every training command", cacheDir), ("every training command", timeline), ("sft, lora, dpo, reason, distill, grpo, reward", initDir), ("lora", loraRank), ("lora", loraName),
        ("dpo", reference), ("dpo", beta), ("reason", tagWeight), ("distill", teacher), ("distill", alpha),
        ("distill", temperature)]
}

/// `trainer options-table`: the README's two tables of training options, generated from the defaults.
struct OptionsTable: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "options-table",
        abstract: "Print the README's tables of the training options (Markdown), with the defaults of this build.",
        shouldDisplay: false)

    static var markdown: String {
        var lines = ["| option | default | meaning |", "| --- | --- | --- |"]
        lines += TrainingOptionDocs.all.map { "| \($0.spelled) | \($0.defaults) | \($0.meaning) |" }
        lines += ["", "| command | option | default | meaning |", "| --- | --- | --- | --- |"]
        lines += StageOptionDocs.all.map { "| \($0.0) | \($0.1.spelled) | \($0.1.defaults) | \($0.1.meaning) |" }
        return lines.joined(separator: "\n")
    }

    func run() { print(Self.markdown) }
}
