import ArgumentParser
import Model

/// The shape of a randomly initialised model (`bench`, `bench-decode`): MiniMind2-small's defaults, Hugging Face
/// config.json names as flags.
struct ModelShapeArguments: ParsableArguments {
    @Option(name: .customLong("hidden-size"), parsing: .unconditional) var hiddenSize = 512
    @Option(name: .customLong("num-hidden-layers"), parsing: .unconditional) var numHiddenLayers = 8
    @Option(name: .customLong("num-attention-heads"), parsing: .unconditional) var numAttentionHeads = 8
    @Option(name: .customLong("num-key-value-heads"), parsing: .unconditional) var numKeyValueHeads = 2
    @Option(name: .customLong("vocab-size"), parsing: .unconditional) var vocabSize = 6400

    /// The model these options describe, after `adjust` (e.g. the MoE options), validated with
    /// `ModelConfig.validate(source:)`.
    /// - Throws: `ValidationError` naming `source` for an impossible shape (a command-line error).
    func config(source: String, adjust: (inout ModelConfig) -> Void = { _ in }) throws -> ModelConfig {
        var cfg = ModelConfig(hiddenSize: hiddenSize, numHiddenLayers: numHiddenLayers, numAttentionHeads: numAttentionHeads,
                              numKeyValueHeads: numKeyValueHeads, vocabSize: vocabSize)
        adjust(&cfg)
        do { try cfg.validate(source: source) } catch { throw ValidationError("\(error)") }
        return cfg
    }
}
