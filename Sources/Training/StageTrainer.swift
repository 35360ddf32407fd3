// `trainer sft | lora | dpo | reason | distill | reward`: the post-training stages' options and objective (MiniMind
// train_full_sft / train_lora / train_dpo / train_distill_reason / train_distillation semantics; `reward` a
// Bradley–Terry reward model on the DPO data, `RewardLoss`), trained by the shared
// `TrainingLoop` exactly like `pretrain`: a stage = dataset + loss head (with its frozen reference / teacher) + which
// parameters train.
import Foundation
import Logging
import Model
import Datasets
import Tokenizers
import SwiftMindDistributed

/// The post-training stages.
public enum Stage: String, Codable, Sendable, CaseIterable {
    case sft, lora, dpo, reason, distill, reward

    /// The token cache (jsonl format) the stage reads: `{"chosen","rejected"}` pairs for DPO and the reward model,
    /// `{"conversations"}` else.
    public var cacheKind: TokenCacheKind { self == .dpo || self == .reward ? .dpo : .sft }
}

/// Options of `trainer sft|lora|dpo|reason|distill`: the shared `TrainingOptions` (read and written through as
/// `o.batchSize` …) plus the stage's own; defaults per stage from `defaults(for:)`.
@dynamicMemberLookup
public struct StageOptions: Codable, Sendable, ObjectiveOptions {
    public var stage: Stage
    public var common = TrainingOptions()
    /// Tokenizer file or directory; nil = the --init directory.
    public var tokenizer: String? = nil
    /// "minimind": render the data with MiniMind's ChatML template instead of the tokenizer's own (an explicit
    /// opt-in for a model whose template cannot be rendered without a Jinja engine); the checkpoints then carry it
    /// as chat_template.jinja. nil = the tokenizer's own template.
    public var chatTemplate: String? = nil
    /// Model directory to start from (the policy / student / LoRA base). nil = random init with hiddenSize/numHiddenLayers
    /// (and `moe`). With --init the model's config.json decides (`--use-moe` then requires a MoE model).
    public var initDir: String? = nil
    // dpo
    public var reference: String? = nil
    public var beta = 0.1
    // lora
    public var loraRank = 8
    /// The adapter is saved as OUT/<loraName>.safetensors (MiniMind's `--lora_name`).
    public var loraName = "lora"
    // reason
    public var reasonWeight = 10.0
    // distill
    public var teacher: String? = nil
    public var alpha = 0.5
    public var temperature = 2.0

    /// The stage's defaults: `TrainingOptions.defaults(for:)` (MiniMind's script for the stage) and the stage's own.
    public static func defaults(for stage: Stage) -> StageOptions { StageOptions(stage: stage) }

    public init(stage: Stage) {
        self.stage = stage
        common = .defaults(for: TrainingCommand(stage))
    }

    public subscript<T>(dynamicMember path: WritableKeyPath<TrainingOptions, T>) -> T {
        get { common[keyPath: path] }
        set { common[keyPath: path] = newValue }
    }

    func validate() throws {
        func check(_ ok: Bool, _ m: String) throws { if !ok { throw TrainingError.invalidOption(m) } }
        try common.validate()
        try check(tokenizer != nil || initDir != nil, "--tokenizer is required without --init")
        if stage == .lora {
            try check(initDir != nil, "lora needs --init DIR (the frozen base)"); try check(loraRank >= 1, "--lora-rank must be ≥ 1")
            try check(!loraName.isEmpty && !loraName.contains("/") && !loraName.hasPrefix("."),
                      "--lora-name must be a file name without '/' or a leading '.' (got '\(loraName)')")
        }
        if stage == .dpo { try check(reference != nil || initDir != nil, "dpo needs --init DIR (and optionally --reference DIR)") }
        try check(beta.isFinite && beta > 0, "--beta must be a finite number > 0 (got \(beta))")
        try check(reasonWeight.isFinite && reasonWeight >= 0, "--tag-weight must be a finite number ≥ 0 (got \(reasonWeight))")
        try check(alpha >= 0 && alpha <= 1, "--alpha must be in [0, 1] (got \(alpha))")
        try check(temperature.isFinite && temperature > 0, "--temperature must be a finite number > 0 (got \(temperature))")
        if stage == .distill { try check(teacher != nil, "distill needs --teacher DIR") }
    }

    func makeObjective(communicator: Communicator, logger: Logger) throws -> TrainingObjective {
        try StageObjective(options: self, communicator: communicator, logger: logger)
    }
}

/// A post-training stage as a `TrainingObjective`: SFT / reason (masked CE, reason with tag weights in the mask), LoRA
/// (masked CE, only the adapters train), DPO (against a frozen reference), distill (CE + KL to a frozen teacher),
/// reward (Bradley–Terry on the model with a scalar head, `score.weight` added to --init's model when it has none).
final class StageObjective: TrainingObjective {
    /// Name of the adapter file in a checkpoint directory and in OUT/final/ (OUT/ itself gets `--lora-name`'s).
    static let adapterFile = "lora.safetensors"

    let stage: Stage
    let report: RunReport
    let model: MiniMindModel
    let dataset: BatchDataset
    /// Forward, loss head and backward of a micro-batch (also `trainer debug-step`'s).
    let step: ObjectiveStep
    /// LoRA: the adapters are the trained parameters (the base stays frozen).
    let adapters: LoRAAdapters?
    let dataIdentity: String
    let tokenizerPath: String
    /// LoRA: file name of the adapter written to OUT/ at the end (`--lora-name` + ".safetensors").
    let adapterOutputFile: String
    let writtenChatTemplate: String?
    var parameters: UnsafeMutableBufferPointer<Float> { adapters?.params ?? model.params }
    var gradients: UnsafeMutableBufferPointer<Float> { adapters?.grads ?? model.grads }
    /// The model's per-layer gradient ranges index `model.grads`, not the adapters.
    var overlapsBackward: Bool { adapters == nil }

    /// Loads the tokenizer, the stage's dataset (the shared token cache: `.dpo` for dpo, `.sft` for sft, lora, reason
    /// and distill), the model (--init or a random init) and any frozen reference / teacher, and checks that they fit
    /// each other.
    init(options o: StageOptions, communicator comm: Communicator, logger: Logger) throws {
        let tokPath = o.tokenizer ?? o.initDir!
        let tok = try Tokenizer.loadForChat(tokPath, chatTemplate: o.chatTemplate)

        // Data.
        let cache = try SharedTokenCache.load(dataPath: o.dataPath, kind: o.stage.cacheKind, tokenizer: tok,
                                              cacheRoot: o.cacheDir ?? TokenCache.defaultCacheRoot, threads: o.threads,
                                              comm: comm, logger: logger)
        let data: BatchDataset
        switch o.stage {
        case .dpo: data = DPODataset(cache: cache, tokenizer: tok, maxLength: o.maxSeqLen)
        case .reward: data = RewardPairDataset(cache: cache, tokenizer: tok, maxLength: o.maxSeqLen)
        case .reason:
            data = SFTDataset(cache: cache, tokenizer: tok, maxLength: o.maxSeqLen,
                              reasonWeighting: ReasonTagWeighting(tokenizer: tok, weight: Float(o.reasonWeight)))
        default: data = SFTDataset(cache: cache, tokenizer: tok, maxLength: o.maxSeqLen)
        }
        if let pairs = data as? ChatPairDataset {
            // A pair whose sides agree in the ids the model sees carries no gradient; all of them = nothing trains.
            let (equal, checked) = try pairs.pairsEqualAfterTruncation()
            if equal == checked {
                throw TrainingError.invalidOption("\(o.dataPath): every pair checked (\(checked)) is the same on both sides in its first --max-seq-len \(o.maxSeqLen) tokens (the answers start after the cut), so nothing would train; raise --max-seq-len (`trainer data inspect --stage dpo` shows the rendered rows)")
            } else if equal > 0, comm.rank == 0 {
                logger.warning("\(equal) of \(checked) pairs checked are the same on both sides in their first --max-seq-len \(o.maxSeqLen) tokens: they carry no training signal (raise --max-seq-len to include their answers)")
            }
        }

        // Models.
        var net: MiniMindModel
        if let d = o.initDir {
            net = o.stage == .reward ? try MiniMindModel.load(directory: d) : try MiniMindModel.loadCausalLM(directory: d, flag: "--init")
        } else {
            var c = ModelConfig(hiddenSize: o.hiddenSize, numHiddenLayers: o.numHiddenLayers, vocabSize: tok.vocabSize,
                                maxPositionEmbeddings: 32768)
            o.moe.apply(to: &c)
            c.adoptSpecialTokens(bos: tok.bosTokenId, eos: tok.eosTokenId)
            try c.validate(source: "\(o.stage) options")
            net = MiniMindModel(config: c, seed: o.seed)
        }
        // reward: the scalar head of LlamaForSequenceClassification, N(0, 0.02²) from --seed unless --init has one.
        if o.stage == .reward { net = try net.withScoreHead(seed: o.seed, padTokenId: Int(tok.padTokenId)) }
        let config = net.config
        try checkForwardSize(rows: data.rows(forSamples: o.batchSize), seqLen: data.seqLen, config: config)
        if o.moe.useMoe && !config.useMoe { throw TrainingError.mismatch("--use-moe: \(o.initDir!)/config.json is a dense model") }
        let V = config.vocabSize
        try config.checkTokenizer(vocabSize: tok.vocabSize, source: o.initDir ?? "\(o.stage) options")
        var lora: LoRAAdapters?
        if o.stage == .lora {
            let a = try LoRAAdapters(config: config, rank: o.loraRank, seed: o.seed)
            a.attachForTraining(to: net); lora = a
        }
        let lossHead: LossHead
        switch o.stage {
        case .dpo:
            let r = try MiniMindModel.loadCausalLM(directory: o.reference ?? o.initDir!, withGradients: false, flag: o.reference == nil ? "--init" : "--reference")
            if r.config != config { throw TrainingError.mismatch("\(o.reference ?? o.initDir!): reference config differs from the policy's") }
            lossHead = .dpo(reference: r, beta: o.beta)
        case .distill:
            let t = try MiniMindModel.loadCausalLM(directory: o.teacher!, withGradients: false, flag: "--teacher")
            if t.config.vocabSize != V { throw TrainingError.mismatch("\(o.teacher!): teacher vocab \(t.config.vocabSize) != student vocab \(V)") }
            lossHead = .distill(teacher: t, alpha: o.alpha, temperature: o.temperature)
        case .reward:
            lossHead = .reward
        default:
            lossHead = .crossEntropy
        }

        let src = cache.meta.source
        stage = o.stage
        report = .stage(o.stage)
        tokenizerPath = tokPath
        adapterOutputFile = o.loraName + ".safetensors"
        writtenChatTemplate = o.chatTemplate == nil ? nil : tok.chatTemplateSource
        dataset = data
        model = net
        adapters = lora
        step = ObjectiveStep(model: net, head: lossHead)
        // The objective's own settings too: a resumed run must optimise what the checkpoint's run optimised.
        let objectiveSettings: String
        switch o.stage {
        case .dpo: objectiveSettings = "; beta \(o.beta) reference \(o.reference ?? o.initDir!)"
        case .distill: objectiveSettings = "; teacher \(o.teacher!) alpha \(o.alpha) temperature \(o.temperature)"
        case .reason: objectiveSettings = "; reason_weight \(o.reasonWeight)"
        default: objectiveSettings = ""
        }
        dataIdentity = "stage \(o.stage) data size \(src.size) hash \(src.sampledHash) samples \(data.count); tokenizer \(tok.fingerprint); seed \(o.seed)" + objectiveSettings
    }

    func describe(world: Int) -> String {
        let c = model.config
        return "\(stage): world \(world), model \(model.numParameters) parameters (hidden \(c.hiddenSize), \(c.numHiddenLayers) layers), trainable \(parameters.count), "
    }

    func loadWeights(checkpoint dir: String) throws {
        if let a = adapters { try a.load(path: dir + "/" + StageObjective.adapterFile); return }
        let loaded = try MiniMindModel.load(directory: dir)
        guard loaded.config == model.config else { throw TrainingError.badCheckpoint(path: dir, reason: "its config.json differs from the model") }
        _ = model.params.update(fromContentsOf: UnsafeBufferPointer(loaded.params))
    }

    /// LoRA: the adapter beside the (unchanged) base in every checkpoint and in final/.
    func didWrite(directory: String) throws {
        if let a = adapters { try a.save(path: directory + "/" + StageObjective.adapterFile) }
    }

    /// LoRA: OUT/<lora-name>.safetensors (default OUT/lora.safetensors), the file `lora merge` and `--lora` take.
    func didFinish(outDir: String) throws {
        if let a = adapters { try a.save(path: (outDir as NSString).appendingPathComponent(adapterOutputFile)) }
    }
}

extension Tokenizer {
    /// The tokenizer of a chat stage: `path`'s, with MiniMind's ChatML template instead of its own when `chatTemplate`
    /// is "minimind" (the only name accepted), checked to be a template this project renders.
    /// - Throws: `TrainingError.invalidOption` for another template name; the tokenizer's load and template errors.
    static func loadForChat(_ path: String, chatTemplate: String?) throws -> Tokenizer {
        let tok = try Tokenizer.load(path)
        if let t = chatTemplate {
            guard t == "minimind" else { throw TrainingError.invalidOption("--chat-template \(t): only \"minimind\" can be chosen") }
            tok.useMiniMindChatTemplate()
        }
        try tok.checkChatTemplate()
        return tok
    }
}
