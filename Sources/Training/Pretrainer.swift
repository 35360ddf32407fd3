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
public struct PretrainOptions: Codable, Sendable, ObjectiveOptions {
    public var common = TrainingOptions()
    /// tokenizer.json, or a directory holding it (and tokenizer_config.json).
    public var tokenizer = "model"
    public init() {}

    public subscript<T>(dynamicMember path: WritableKeyPath<TrainingOptions, T>) -> T {
        get { common[keyPath: path] }
        set { common[keyPath: path] = newValue }
    }

    func validate() throws { try common.validate() }

    func makeObjective(communicator: Communicator, logger: Logger) throws -> TrainingObjective {
        try LanguageModelObjective(options: self, communicator: communicator, logger: logger)
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
        config.adoptSpecialTokens(bos: tok.bosTokenId, eos: tok.eosTokenId)
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
