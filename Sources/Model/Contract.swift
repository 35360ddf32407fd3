// CONTRACT STUB — the Model helper replaces the bodies (and may split this file); the public signatures are
// what Training, Serving and the trainer use. Extend freely; change a signature only with a good reason.
import Foundation
import CBLAS

/// MiniMind2 / Hugging Face Llama configuration. JSON keys are HF's snake_case names (`hidden_size`, …).
public struct ModelConfig: Codable, Equatable, Sendable {
    public var hiddenSize: Int = 512
    public var numHiddenLayers: Int = 8
    public var numAttentionHeads: Int = 8
    public var numKeyValueHeads: Int = 2
    public var vocabSize: Int = 6400
    public var intermediateSize: Int = 1408
    public var rmsNormEps: Float = 1e-5
    public var ropeTheta: Double = 1e6
    public var maxPositionEmbeddings: Int = 32768
    public var tieWordEmbeddings: Bool = true
    /// `intermediateSize` nil → 64·⌈(8·hidden/3)/64⌉ as MiniMind.
    public init(hiddenSize: Int = 512, numHiddenLayers: Int = 8, numAttentionHeads: Int = 8, numKeyValueHeads: Int = 2,
                vocabSize: Int = 6400, intermediateSize: Int? = nil, rmsNormEps: Float = 1e-5, ropeTheta: Double = 1e6,
                maxPositionEmbeddings: Int = 32768) { fatalError("unimplemented") }
    /// Reads `DIR/config.json`.
    public static func load(directory: String) throws -> ModelConfig { fatalError("unimplemented") }
    /// Writes `DIR/config.json` (LlamaForCausalLM).
    public func write(directory: String) throws { fatalError("unimplemented") }
}

/// One named parameter inside the flat buffer.
public struct ParameterInfo: Equatable, Sendable {
    public var name: String     // HF Llama name, e.g. "model.layers.0.self_attn.q_proj.weight"
    public var shape: [Int]
    public var offset: Int      // in elements, into `params` / `grads`
    public var count: Int
}

/// The MiniMind dense decoder. Parameters and gradients are each one contiguous fp32 buffer with the layout `parameters`
/// (layout order: embed_tokens, layers.0 …, layers.N-1, norm).
public final class MiniMindModel {
    public let config: ModelConfig
    public let parameters: [ParameterInfo]
    public var numParameters: Int { fatalError("unimplemented") }
    public var params: UnsafeMutableBufferPointer<Float> { fatalError("unimplemented") }
    public var grads: UnsafeMutableBufferPointer<Float> { fatalError("unimplemented") }

    /// Random initialisation, deterministic in `seed`.
    public init(config: ModelConfig, seed: UInt64) { fatalError("unimplemented") }
    /// Loads `DIR/config.json` + `DIR/model.safetensors`.
    public static func load(directory: String) throws -> MiniMindModel { fatalError("unimplemented") }
    /// Writes `DIR/config.json` + `DIR/model.safetensors` (the directory must exist).
    public func save(directory: String) throws { fatalError("unimplemented") }

    /// Forward over `inputIds` `[B, T]`; returns the logits `[B, T, V]`, valid until the next forward.
    public func forward(inputIds: UnsafeBufferPointer<Int32>, batchSize: Int, seqLen: Int) -> UnsafeMutableBufferPointer<Float> { fatalError("unimplemented") }
    /// Backward of the last forward from `dLogits` `[B, T, V]` (may be the buffer `forward` returned, overwritten by a loss head).
    /// ADDS into `grads` (so accumulation micro-steps sum). `onGradientsReady` is called with flat element ranges of `grads`
    /// as soon as they are final for this backward (reverse layout order: norm, layers.N-1 … layers.0, embed_tokens last).
    public func backward(dLogits: UnsafeMutableBufferPointer<Float>, onGradientsReady: ((Range<Int>) -> Void)? = nil) { fatalError("unimplemented") }
    public func zeroGrad() { fatalError("unimplemented") }
}
func _blasCheck() -> String { String(cString: openblas_get_corename()) }
