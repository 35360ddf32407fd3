// The defaults of every training command in one place: `TrainingOptions`' property initialisers are MiniMind's
// `train_pretrain.py` (2025-04-30 seed era), and `TrainingOptions.defaults(for:)` applies each other script's
// differences. `PretrainOptions`, `StageOptions`, the `trainer` option group, its help and the README's options table
// all read them from here.

/// The commands that train: `trainer pretrain` and the post-training stages, each the counterpart of one MiniMind script.
public enum TrainingCommand: String, Codable, Sendable, CaseIterable {
    case pretrain, sft, lora, dpo, reason, distill, grpo, reward

    public init(_ stage: Stage) {
        switch stage {
        case .sft: self = .sft
        case .lora: self = .lora
        case .dpo: self = .dpo
        case .reason: self = .reason
        case .distill: self = .distill
        case .reward: self = .reward
        }
    }

    /// The post-training stage; nil for `pretrain`.
    public var stage: Stage? { Stage(rawValue: rawValue) }

    /// The MiniMind script whose command line (and defaults) this command takes. `reward` has no MiniMind
    /// counterpart: it takes `train_dpo.py`'s command line, on the same data, with its own learning rate.
    public var miniMindScript: String {
        switch self {
        case .pretrain: return "train_pretrain.py"
        case .sft: return "train_full_sft.py"
        case .lora: return "train_lora.py"
        case .dpo: return "train_dpo.py"
        case .reason: return "train_distill_reason.py"
        case .distill: return "train_distillation.py"
        case .grpo: return "train_grpo.py"
        case .reward: return "train_dpo.py"
        }
    }
}

extension TrainingOptions {
    /// The options of `command` before any flag is applied: MiniMind's defaults for its script.
    ///
    /// Differences from MiniMind, kept on purpose: the post-training stages have no default `--data-path` (empty here,
    /// so validation asks for one; MiniMind points at `../dataset/<file>.jsonl`), and `reason` logs and checkpoints
    /// every 100 steps like the other stages (MiniMind's `train_distill_reason.py` uses 1 and 50).
    public static func defaults(for command: TrainingCommand) -> TrainingOptions {
        var o = TrainingOptions()
        guard command != .pretrain else { return o }
        o.dataPath = ""
        o.accumulationSteps = 1
        switch command {
        case .pretrain: break
        case .sft: o.learningRate = 5e-7; o.epochs = 2; o.batchSize = 16; o.maxSeqLen = 512
        case .lora: o.learningRate = 1e-4; o.epochs = 10; o.batchSize = 32; o.maxSeqLen = 512
        case .dpo: o.learningRate = 1e-8; o.epochs = 2; o.batchSize = 4; o.maxSeqLen = 1024
        case .reason: o.learningRate = 1e-6; o.epochs = 1; o.batchSize = 8; o.maxSeqLen = 1024
        case .distill: o.learningRate = 5e-6; o.epochs = 6; o.batchSize = 32; o.maxSeqLen = 512
        // --max-seq-len is the prompt's limit here (MiniMind's train_grpo.py), --max-gen-len the reply's.
        case .grpo: o.learningRate = 3e-7; o.epochs = 1; o.batchSize = 2; o.maxSeqLen = 768; o.logInterval = 1; o.saveInterval = 10
        // dpo's batch and length; one epoch (reward models overfit their pairs quickly), and a learning rate that
        // moves a freshly drawn head (DPO's 1e-8 would leave it where it is).
        case .reward: o.learningRate = 5e-5; o.epochs = 1; o.batchSize = 4; o.maxSeqLen = 1024
        }
        return o
    }

    /// Throws `TrainingError.invalidOption` naming the first option out of range (what the trainers check before
    /// they start; the `trainer` commands call it while parsing, so a bad value is a command-line error).
    public func check() throws { try validate() }
}

extension PretrainOptions {
    /// See `TrainingOptions.check()`.
    public func check() throws { try validate() }
}

extension StageOptions {
    /// See `TrainingOptions.check()`; also the stage's own requirements (`--init`, `--teacher`, ranges).
    public func check() throws { try validate() }
}
