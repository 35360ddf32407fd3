// `trainer pretrain`: its options and the language-model objective (MiniMind train_pretrain.py semantics) that the
// shared `TrainingLoop` trains.
import Foundation
import Logging
import Model
import Datasets
import Tokenizers
import SwiftMindDistributed

/// Options of `trainer pretrain`: the shared `TrainingOptions` (MiniMind's names and 2025-04 defaults, read and
/// written through as `o.batchSize` …) plus the tokenizer.
@dynamicMemberLookup
public struct PretrainOptions: Codable, Sendable {
    public var common = TrainingOptions()
    /// tokenizer.json, or a directory holding it (and tokenizer_config.json).
    public var tokenizer = "model"
    public init() {}

    public subscript<T>(dynamicMember path: WritableKeyPath<TrainingOptions, T>) -> T {
        get { common[keyPath: path] }
        set { common[keyPath: path] = newValue }
    }

    func validate() throws { try common.validate() }
}

public final class Pretrainer {
    public let options: PretrainOptions
    public let comm: Communicator
    public var logger: Logger

    public init(options: PretrainOptions, communicator: Communicator, logger: Logger = Logger(label: "swiftmind.pretrain")) {
        self.options = options
        self.comm = communicator
        self.logger = logger
    }

    /// Tokenizer files to copy into checkpoints: `tokenizer.json` and, if present, `tokenizer_config.json` and
    /// `chat_template.jinja`.
    static func tokenizerFiles(_ path: String) -> [String] {
        var isDir: ObjCBool = false
        let fm = FileManager.default
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else { return [] }
        let dir = isDir.boolValue ? path : (path as NSString).deletingLastPathComponent
        let tj = isDir.boolValue ? dir + "/tokenizer.json" : path
        return [tj, dir + "/tokenizer_config.json", dir + "/chat_template.jinja"].filter { fm.fileExists(atPath: $0) }
    }

    /// Optimizer steps in the rest of the run from (epoch, position), capped so the total does not exceed `maxSteps`.
    static func plannedSteps(datasetSize n: Int, epochs: Int, fromEpoch: Int, position: Int, world: Int,
                             samplesPerRankPerStep: Int) -> Int {
        // Arithmetic, not a loop over epochs: `--epochs 1000000000000` must not hang. Saturates at Int.max.
        guard fromEpoch < epochs, n > 0, world > 0, samplesPerRankPerStep > 0 else { return 0 }
        func steps(from start: Int) -> Int {
            let perRank = n > start ? (n - start + world - 1) / world : 0
            return perRank / samplesPerRankPerStep
        }
        let first = steps(from: max(0, position))
        let (rest, o1) = (epochs - fromEpoch - 1).multipliedReportingOverflow(by: steps(from: 0))
        let (total, o2) = first.addingReportingOverflow(rest)
        return o1 || o2 ? Int.max : total
    }

    /// Trains: the language-model objective in the shared `TrainingLoop`.
    @discardableResult
    public func run() throws -> PretrainSummary {
        try options.validate()
        return try TrainingLoop(options: options.common, communicator: comm, logger: logger).run {
            try LanguageModelObjective(options: options, communicator: comm, logger: logger)
        }
    }
}

/// Pretraining: next-token cross-entropy over the packed token cache (MiniMind train_pretrain.py), the whole model
/// trained.
final class LanguageModelObjective: TrainingObjective {
    let report = RunReport.pretrain
    let model: MiniMindModel
    let dataset: BatchDataset
    let dataIdentity: String
    let tokenizerPath: String
    let writtenChatTemplate: String? = nil
    var parameters: UnsafeMutableBufferPointer<Float> { model.params }
    var gradients: UnsafeMutableBufferPointer<Float> { model.grads }
    let moe: MoESettings
    /// Masked next-token cross-entropy (`LossHead.crossEntropy`).
    let step: ObjectiveStep

    /// Loads the tokenizer, validates the model config (before anything slow or large), builds or opens the token
    /// cache (rank 0 builds it) and initialises the model from `seed`.
    init(options o: PretrainOptions, communicator comm: Communicator, logger: Logger) throws {
        let tok = try Tokenizer.load(o.tokenizer)
        var config = ModelConfig(hiddenSize: o.hiddenSize, numHiddenLayers: o.numHiddenLayers, vocabSize: tok.vocabSize,
                                 maxPositionEmbeddings: 32768)
        o.moe.apply(to: &config)
        try config.validate(source: "pretrain options")
        let cache = try SharedTokenCache.load(dataPath: o.dataPath, kind: .pretrain, tokenizer: tok,
                                              cacheRoot: o.cacheDir ?? TokenCache.defaultCacheRoot, threads: o.threads,
                                              comm: comm, logger: logger)
        let dataset = PretrainDataset(cache: cache, maxSeqLen: o.maxSeqLen, padTokenId: tok.padTokenId)
        try checkForwardSize(rows: o.batchSize, seqLen: dataset.seqLen, config: config)
        self.dataset = dataset
        model = MiniMindModel(config: config, seed: o.seed)
        step = ObjectiveStep(model: model, head: .crossEntropy)
        dataIdentity = "data size \(cache.meta.source.size) hash \(cache.meta.source.sampledHash) samples \(cache.count) tokens \(cache.numTokens); tokenizer \(tok.fingerprint); seed \(o.seed)"
        tokenizerPath = o.tokenizer
        moe = o.moe
    }

    func describe(world: Int) -> String {
        let c = model.config
        return "world \(world), model \(model.numParameters) parameters (\(c.activeParameterCount) active, \(moe)) (hidden \(c.hiddenSize), \(c.numHiddenLayers) layers, vocab \(c.vocabSize)), "
    }

    func loadWeights(checkpoint dir: String) throws {
        let loaded = try MiniMindModel.load(directory: dir)
        guard loaded.config == model.config else {
            throw TrainingError.badCheckpoint(path: dir, reason: "its config.json differs from the options (hidden size, layers, vocab)")
        }
        _ = model.params.update(fromContentsOf: UnsafeBufferPointer(loaded.params))
    }
}
