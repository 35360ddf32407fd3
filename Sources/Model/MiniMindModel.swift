// MiniMindModel: parameters/gradients as flat fp32 buffers, activation arena, forward and backward.
import Foundation
import Dispatch
import CBLAS

/// One named parameter inside the flat buffer.
public struct ParameterInfo: Equatable, Sendable {
    public var name: String     // HF Llama name, e.g. "model.layers.0.self_attn.q_proj.weight"
    public var shape: [Int]
    public var offset: Int      // in elements, into `params` / `grads`
    public var count: Int
    public var range: Range<Int> { offset..<(offset + count) }
}

/// Offsets (in elements) of one decoder layer's parameters inside the flat buffer. q|k|v and gate|up are contiguous
/// (the layout adds them in that order), so each pair/triple is one fused `[rows, C]` weight for `linear_forward`.
struct LayerOffsets {
    var ln1 = 0, q = 0, k = 0, v = 0, o = 0, ln2 = 0, gate = 0, up = 0, down = 0
    /// MoE (MoE.swift): `mlp.gate.weight` [E, C]; each expert (routed 0..<E, then shared) gate_proj | up_proj | down_proj.
    var moeGate = 0
    var experts: [Int] = []
    var range: Range<Int> = 0..<0
}

/// Activations kept from forward for backward, allocated for the largest `[B, T]` seen and reused.
/// Shapes (per layer l, for the current N = B·T rows, packed from each region's start; QKV = H·hd + 2·KVH·hd):
/// res[L+1][N,C] residual stream · ln1/x2/ln2[L][N,C] · rstd1/rstd2[L][N] · qkv[L][N,QKV] (q | k | v, post-RoPE) ·
/// y[L][N,H·hd] attention output · lse[L][B,H,T] · gu[L][N,2I] (gate | up) · xf[N,C], rstdf[N];
/// scratch: dres/dln[N,C], dy[N,H·hd], dqkv[N,QKV], dgu[N,2I], h[N,I], attention [workers, 2·blk·T + blk],
/// RMSNorm dw partials [workers, C].
final class Activations {
    let capN: Int, capT: Int
    /// Worker threads the per-worker scratch (attention, RMSNorm dw) is sized for.
    let maxWorkers: Int
    let storage: UnsafeMutablePointer<Float>
    let totalFloats: Int
    var res, ln1, x2, ln2, rstd1, rstd2, qkv, y, lse, gu, xf, rstdf: FPtr
    var dres, dln, dy, dqkv, dgu, h, attScratch, normScratch: FPtr
    /// MoE routing state (MoE.swift), nil for a dense model.
    var moe: MoEArena?

    init(config cfg: ModelConfig, capN: Int, capT: Int) {
        self.capN = capN; self.capT = capT
        maxWorkers = min(64, max(ProcessInfo.processInfo.activeProcessorCount, workerCount()))
        let L = cfg.numHiddenLayers, C = cfg.hiddenSize, QD = cfg.qDim, QKV = cfg.qDim + 2 * cfg.kvDim
        let I = cfg.intermediateSize, H = cfg.numAttentionHeads
        let n = capN
        let sizes: [Int] = [
            (L + 1) * n * C, L * n * C, L * n * C, L * n * C, L * n, L * n, L * n * QKV, L * n * QD, L * n * H, cfg.useMoe ? 0 : L * n * 2 * I,
            n * C, n,
            n * C, n * C, n * QD, n * QKV, n * 2 * I, n * I, maxWorkers * attentionScratchPerWorker(capT), maxWorkers * C,
        ]
        totalFloats = sizes.reduce(0, +)
        storage = .allocate(capacity: totalFloats)
        storage.initialize(repeating: 0, count: totalFloats)
        var p = storage
        var ptrs: [FPtr] = []
        for s in sizes { ptrs.append(p); p += s }
        (res, ln1, x2, ln2, rstd1, rstd2, qkv, y, lse, gu) = (ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5], ptrs[6], ptrs[7], ptrs[8], ptrs[9])
        (xf, rstdf) = (ptrs[10], ptrs[11])
        (dres, dln, dy, dqkv, dgu, h, attScratch, normScratch) = (ptrs[12], ptrs[13], ptrs[14], ptrs[15], ptrs[16], ptrs[17], ptrs[18], ptrs[19])
    }
    deinit { storage.deallocate() }
}

/// Per-part wall-clock accounting (seconds), filled when `MiniMindModel.profile` is on.
public struct ModelProfile: Sendable {
    public var matmul = 0.0, attention = 0.0, elementwise = 0.0
    public init() {}
}

@inline(__always) func nowSeconds() -> Double {
    var ts = timespec(); clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// A span of forward/backward reported to `MiniMindModel.traceHook`.
public enum ModelTraceSpan: Equatable, Sendable {
    /// One whole `forward` call (the layer spans nest inside it).
    case forward
    /// Forward of decoder layer `l`.
    case forwardLayer(Int)
    /// One whole `backward` call (the spans below nest inside it).
    case backward
    /// Backward of lm_head (tied embedding) and the final norm.
    case backwardHead
    /// Backward of decoder layer `l` (layers run from N-1 down to 0).
    case backwardLayer(Int)
    /// Backward of the embedding lookup (last).
    case backwardEmbedding
}

/// The MiniMind dense decoder (MiniMind2 = Llama with tied embeddings). Parameters and gradients are each one
/// contiguous fp32 buffer with the layout `parameters` (layout order: embed_tokens, layers.0 …, layers.N-1, norm, and
/// for a sequence-classification config (`ModelConfig.numLabels`) score.weight [num_labels, hidden_size] last;
/// inside a layer: input_layernorm, q/k/v/o_proj, post_attention_layernorm, gate/up/down_proj).
public final class MiniMindModel {
    public let config: ModelConfig
    public let parameters: [ParameterInfo]
    public var numParameters: Int { paramCount }
    public var params: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: paramPtr, count: paramCount) }
    public var grads: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: gradPtr, count: hasGradients ? paramCount : 0) }
    /// With ≥ 2 threads and B ≥ 2, split each batch into concurrent single-threaded parts (fastest, robust to a busy
    /// machine; gradient ranges are then all reported at the end of backward). When false, every sgemm is threaded by
    /// OpenBLAS instead and ranges are reported layer by layer as they become final (for overlapping a reduction).
    public var batchParallel = true
    /// When true, forward/backward accumulate wall-clock time per part into `profile`.
    public var profiling = false
    public var profile = ModelProfile()
    /// When set, forward and backward report their spans to it (the training timeline, `--timeline`): nil costs one
    /// branch per call and per layer. Times are `DispatchTime.now().uptimeNanoseconds` (CLOCK_MONOTONIC, ns). With
    /// several batch parts only part 0's layers are reported (the parts run concurrently).
    public var traceHook: ((ModelTraceSpan, _ startNs: UInt64, _ endNs: UInt64) -> Void)?
    /// LoRA adapters (see `LoRA.swift`): when set, forward adds `B(Ax)` to every adapted Linear and backward fills
    /// the adapters' gradients.
    public var lora: LoRAAdapters?
    /// When true, backward computes only what the input gradients need (no weight gradients of the Linears and the
    /// embedding; `grads` is then meaningless). Used with LoRA, whose base is frozen.
    public var frozenBase = false

    let paramCount: Int
    /// False for a forward-only model (`load(directory:withGradients: false)`): `grads` is empty, backward is refused.
    public let hasGradients: Bool
    let paramPtr: FPtr
    let gradPtr: FPtr
    let embedOffset = 0
    var layerOffsets: [LayerOffsets] = []
    var normOffset = 0
    /// Offset of `score.weight` (sequence-classification configs only).
    var scoreOffset: Int?
    /// Activation arenas (saved activations and per-worker scratch, not copies of the model), one per batch part (see
    /// `forward`): part w holds the rows of batch items `lastParts[w]`.
    var partActivations: [Activations] = []
    /// Logits / dLogits `[B, T, V]`, shared by the parts (each writes its rows).
    var logitsPtr: FPtr?
    var logitsCap = 0
    /// Private gradient buffers of parts 1…W−1 (part 0 adds straight into `grads`), summed after backward.
    var extraGrads: [FPtr] = []
    var lastParts: [Range<Int>] = []
    /// RoPE cos/sin tables `[ropeLen, hd/2]`, grown on demand.
    var rope = RopeTable(maxT: 0, inverseFrequencies: [1], attentionScaling: 1)
    var ropeLen: Int { rope.maxT }
    // Shape of the last forward (for backward).
    var lastB = 0, lastT = 0
    /// True when the last forward was `forwardHidden` (its backward takes dHidden [B, T, C], not dLogits).
    var lastForwardHidden = false
    /// Final-norm hidden states / their gradients `[B, T, C]` of `forwardHidden`.
    var hiddenPtr: FPtr?
    var hiddenCap = 0
    var lastIds: [Int32] = []
    /// MoE: aux (load-balancing) loss of the last `forward`, summed over layers (0 for a dense model).
    public internal(set) var lastAuxLoss: Double = 0
    /// MoE: ∂objective/∂aux_loss used by `backward` (1 = the aux loss added once; a trainer averaging over accumulation
    /// steps and ranks sets 1/(steps·world); 0 = no aux gradient).
    public var auxLossScale: Float = 1
    /// Precision of the matrix products of training's forward and backward (`--dtype`; MixedPrecision.swift).
    /// `.bfloat16` needs a dense model (the MoE experts' products are not covered) and fp32 inference weights.
    public var matmulDType: ComputeDType = .float32 { didSet { bf16WeightsStale = true } }
    /// bf16-rounded copy of `params` (fp32 containers) the products read under `.bfloat16`; see `productWeights()`.
    var bf16Weights: FPtr?
    var bf16WeightsStale = true
    /// True when the last forward ran its products in bf16 (its backward then does too, on the same weight copy).
    var lastForwardBF16 = false

    /// Names, shapes and offsets of every parameter of `cfg` in the flat buffer's order, without allocating it (a
    /// checkpoint is checked against this before a model is made for it).
    struct Layout {
        var parameters: [ParameterInfo] = []
        var layerOffsets: [LayerOffsets] = []
        var normOffset = 0
        var scoreOffset: Int?
        var count = 0

        init(_ cfg: ModelConfig) {
            var off = 0
            var infos: [ParameterInfo] = []
            func add(_ name: String, _ shape: [Int]) -> Int {
                let n = shape.reduce(1, *)
                infos.append(ParameterInfo(name: name, shape: shape, offset: off, count: n))
                off += n
                return off - n
            }
            let C = cfg.hiddenSize, I = cfg.intermediateSize
            _ = add("model.embed_tokens.weight", [cfg.vocabSize, C])
            var los: [LayerOffsets] = []
            for l in 0..<cfg.numHiddenLayers {
                let p = "model.layers.\(l)."
                var lo = LayerOffsets()
                let start = off
                lo.ln1 = add(p + "input_layernorm.weight", [C])
                lo.q = add(p + "self_attn.q_proj.weight", [cfg.qDim, C])
                lo.k = add(p + "self_attn.k_proj.weight", [cfg.kvDim, C])
                lo.v = add(p + "self_attn.v_proj.weight", [cfg.kvDim, C])
                lo.o = add(p + "self_attn.o_proj.weight", [C, cfg.qDim])
                lo.ln2 = add(p + "post_attention_layernorm.weight", [C])
                if cfg.useMoe {
                    lo.moeGate = add(p + "mlp.gate.weight", [cfg.nRoutedExperts, C])
                    for e in 0..<(cfg.nRoutedExperts + cfg.nSharedExperts) {
                        let q = e < cfg.nRoutedExperts ? p + "mlp.experts.\(e)." : p + "mlp.shared_experts.\(e - cfg.nRoutedExperts)."
                        lo.experts.append(add(q + "gate_proj.weight", [I, C]))
                        _ = add(q + "up_proj.weight", [I, C]); _ = add(q + "down_proj.weight", [C, I])
                    }
                } else {
                    lo.gate = add(p + "mlp.gate_proj.weight", [I, C])
                    lo.up = add(p + "mlp.up_proj.weight", [I, C])
                    lo.down = add(p + "mlp.down_proj.weight", [C, I])
                }
                lo.range = start..<off
                los.append(lo)
            }
            normOffset = add("model.norm.weight", [C])
            if let n = cfg.numLabels { scoreOffset = add("score.weight", [n, C]) }
            layerOffsets = los
            parameters = infos
            count = off
        }
    }

    /// Layout only; parameters zero. Use `init(config:seed:)` or `load(directory:)`.
    convenience init(layoutFor cfg: ModelConfig, withGradients: Bool = true) {
        self.init(layout: Layout(cfg), config: cfg, withGradients: withGradients)
    }

    /// `layout` is `Layout(cfg)`, already computed (`load(directory:)` checks the files against it first).
    init(layout: Layout, config cfg: ModelConfig, withGradients: Bool) {
        config = cfg
        let off = layout.count
        layerOffsets = layout.layerOffsets
        normOffset = layout.normOffset
        scoreOffset = layout.scoreOffset
        parameters = layout.parameters
        paramCount = off
        paramPtr = .allocate(capacity: off); paramPtr.initialize(repeating: 0, count: off)
        // A forward-only model (a frozen DPO reference, a distillation teacher) gets no gradient buffer.
        hasGradients = withGradients
        gradPtr = .allocate(capacity: withGradients ? off : 1); gradPtr.initialize(repeating: 0, count: withGradients ? off : 1)
    }

    deinit {
        paramPtr.deallocate(); gradPtr.deallocate()
        logitsPtr?.deallocate()
        hiddenPtr?.deallocate()
        for g in extraGrads { g.deallocate() }
        bf16Weights?.deallocate()
    }

    /// Random initialisation, deterministic in `seed`. PyTorch defaults as MiniMind trains from them: every Linear
    /// weight (q/k/v/o, gate/up/down, and lm_head, which embed_tokens is tied to) ~ U(−1/√fan_in, 1/√fan_in)
    /// (kaiming_uniform with a = √5); RMSNorm weights = 1. A sequence-classification head is initialised as
    /// `initialiseScoreHead(seed:)` does.
    public convenience init(config: ModelConfig, seed: UInt64) {
        self.init(layoutFor: config)
        var rng = SplitMix64(seed: seed)
        for p in parameters {
            let dst = paramPtr + p.offset
            if p.offset == scoreOffset {
                initialiseScoreHead(seed: seed)
            } else if p.shape.count == 1 {
                dst.update(repeating: 1, count: p.count)
            } else {
                let bound = 1 / Float(p.shape[1]).squareRoot()
                for i in 0..<p.count { dst[i] = (rng.nextUniform() * 2 - 1) * bound }
            }
        }
    }

    /// `score.weight` [num_labels, hidden_size] of a sequence-classification config (`ModelConfig.numLabels`), else nil.
    public var scoreHead: ParameterInfo? { scoreOffset.map { o in parameters.first { $0.offset == o }! } }

    /// Fills `score.weight` with N(0, std²) draws, as transformers' `_init_weights` initialises the head of a
    /// `LlamaForSequenceClassification` (normal, std = `initializer_range`, 0.02 by default); deterministic in `seed`
    /// (SplitMix64 uniforms through Box–Muller). Does nothing without a head.
    public func initialiseScoreHead(seed: UInt64, std: Float = 0.02) {
        guard let s = scoreHead else { return }
        var rng = SplitMix64(seed: seed ^ 0x5C0E_11EA_D000_0001)
        var i = 0
        while i < s.count {
            // Box–Muller: two standard normals from two uniforms in (0, 1].
            let u1 = Double(rng.next() >> 11 + 1) * 0x1p-53, u2 = Double(rng.next() >> 11) * 0x1p-53
            let r = (-2 * log(u1)).squareRoot()
            paramPtr[s.offset + i] = Float(r * cos(2 * .pi * u2)) * std
            if i + 1 < s.count { paramPtr[s.offset + i + 1] = Float(r * sin(2 * .pi * u2)) * std }
            i += 2
        }
    }

    /// This model with a scalar reward head (`LlamaForSequenceClassification`, num_labels 1; `pad_token_id` =
    /// `padTokenId` unless the config sets one): the same backbone weights and a new `score.weight` [1, hidden_size]
    /// from `initialiseScoreHead(seed:)`. A model that has a head already is returned as it is.
    /// - Throws: `ModelError` when the config with a head is invalid.
    public func withScoreHead(seed: UInt64, padTokenId: Int = 0) throws -> MiniMindModel {
        if scoreHead != nil { return self }
        var cfg = config
        cfg.numLabels = 1
        if cfg.padTokenId == nil { cfg.padTokenId = padTokenId }
        try cfg.validate(source: "reward head")
        let m = MiniMindModel(layoutFor: cfg, withGradients: hasGradients)
        // The layout of `cfg` is this one with score.weight appended.
        m.paramPtr.update(from: paramPtr, count: paramCount)
        m.initialiseScoreHead(seed: seed)
        return m
    }

    /// Index of a parameter by name.
    public func parameter(named name: String) -> ParameterInfo? { parameters.first { $0.name == name } }

    /// `load(directory:withGradients:)` for a role that needs a causal language model (`--init` of a stage other
    /// than `reward`, a DPO/GRPO reference, a distillation teacher, an evaluated policy).
    /// - Throws: `ModelError` naming `flag` and the directory when it holds a reward model (a
    ///   `…ForSequenceClassification` config with `score.weight`), besides `load`'s errors.
    public static func loadCausalLM(directory: String, withGradients: Bool = true, flag: String) throws -> MiniMindModel {
        let m = try load(directory: directory, withGradients: withGradients)
        guard m.scoreHead == nil else {
            throw ModelError("\(flag) \(directory): a reward model (config.json architectures ending in ForSequenceClassification, score.weight), where a causal language model is needed")
        }
        return m
    }

    /// Loads a model directory: `DIR/config.json` (MiniMind's or a Hugging Face Llama config, `ModelConfig.parse`) and
    /// the weights in `DIR/model.safetensors` or the shards `DIR/model.safetensors.index.json` lists (F32/F16/BF16/F64
    /// → fp32; `CheckpointFiles`). Every parameter must be present with its shape — checked on the files' headers
    /// before anything is allocated, so a config larger than its weights is an error, not an allocation; any other
    /// tensor is an error naming it (`rotary_emb.inv_freq` buffers are ignored).
    /// `lm_head.weight`: ignored when it equals `embed_tokens` (tied). An untied head (`tie_word_embeddings: false`, or
    /// a file whose `lm_head.weight` differs from `embed_tokens` — transformers then does not tie them either) is kept
    /// as `untiedLMHead` on a forward-only model (`withGradients: false`: inference, evaluation, a DPO/GRPO reference,
    /// a distillation teacher) and refused for training, whose backward assumes the tied head.
    /// - Throws: `ModelError` naming the file and field or tensor.
    public static func load(directory: String, withGradients: Bool = true) throws -> MiniMindModel {
        let cfgPath = (directory as NSString).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: cfgPath) else { throw ModelError("\(cfgPath): cannot read file") }
        var cfg = try ModelConfig.parse(data, source: cfgPath)
        let untied = !cfg.tieWordEmbeddings
        if untied && withGradients {
            throw ModelError("\(cfgPath): field tie_word_embeddings = false: a model with an untied lm_head runs forward-only (generate, chat, serve, eval, export, a --reference or --teacher); training needs tied embeddings (MiniMind ties lm_head to embed_tokens)") }
        cfg.tieWordEmbeddings = true
        try cfg.validate(source: cfgPath)
        let files = try CheckpointFiles(directory: directory)
        let layout = Layout(cfg)
        for p in layout.parameters {
            let (f, e) = try files.entry(p.name)
            guard e.shape == p.shape else { throw ModelError("\(f.path): tensor \(p.name) has shape \(e.shape), expected \(p.shape)") }
        }
        let headShape = [cfg.vocabSize, cfg.hiddenSize]
        if let (f, e) = files.find("lm_head.weight") {
            guard e.shape == headShape else { throw ModelError("\(f.path): tensor lm_head.weight has shape \(e.shape), expected \(headShape)") }
        } else if untied {
            throw ModelError("\(directory): tensor lm_head.weight is missing (config says tie_word_embeddings = false)")
        }
        let known = Set(layout.parameters.map(\.name)).union(["lm_head.weight"])
        for (n, f) in files.owner where !known.contains(n) && !n.hasSuffix("rotary_emb.inv_freq") {
            throw ModelError("\(f.path): unexpected tensor \(n) for this config")
        }

        let m = MiniMindModel(layout: layout, config: cfg, withGradients: withGradients)
        for p in m.parameters {
            try files.entry(p.name).file.readFloats(p.name, into: UnsafeMutableBufferPointer(start: m.paramPtr + p.offset, count: p.count))
        }
        if let (f, e) = files.find("lm_head.weight") {
            let w = UnsafeMutableBufferPointer<Float>.allocate(capacity: e.count)
            do { try f.readFloats("lm_head.weight", into: w) } catch { w.deallocate(); throw error }
            if !untied && memcmp(w.baseAddress!, m.paramPtr + m.embedOffset, e.count * MemoryLayout<Float>.size) == 0 {
                w.deallocate()   // tied: the same values as embed_tokens
            } else if withGradients {
                w.deallocate()
                throw ModelError("\(f.path): tensor lm_head.weight differs from model.embed_tokens.weight although config.json says tie_word_embeddings = true (transformers then uses it as an untied head): such a model runs forward-only; training needs tied embeddings")
            } else {
                if !untied {
                    FileHandle.standardError.write(Data("note: \(f.path): lm_head.weight differs from model.embed_tokens.weight although tie_word_embeddings = true; using it as an untied head, as transformers does\n".utf8))
                }
                UntiedHeadRegistry.shared.set(m, w)
            }
        }
        return m
    }

    /// Writes `DIR/config.json` + `DIR/model.safetensors` (the directory must exist); both written atomically.
    public func save(directory: String) throws {
        var w = SafeTensorsWriter()
        for p in parameters {
            w.add(p.name, shape: p.shape, floats: UnsafeBufferPointer(start: paramPtr + p.offset, count: p.count))
        }
        try w.write(to: (directory as NSString).appendingPathComponent("model.safetensors"))
        try config.write(directory: directory)
    }

    public func zeroGrad() { gradPtr.update(repeating: 0, count: hasGradients ? paramCount : 1); lora?.zeroGrad() }

    /// Flat ranges of each gradient group in the order backward finalises them: norm, layers.N-1 … 0, embed_tokens.
    public var gradientReadyOrder: [Range<Int>] {
        [normOffset..<paramCount] + layerOffsets.reversed().map(\.range) + [0..<(config.vocabSize * config.hiddenSize)]
    }

    func ensureRope(_ t: Int) {
        if t <= ropeLen { return }
        let n = max(t, min(max(2 * ropeLen, 64), max(t, config.maxPositionEmbeddings)))
        let (inv, scaling) = config.ropeInverseFrequencies
        rope = RopeTable(maxT: n, inverseFrequencies: inv, attentionScaling: scaling)
    }

    /// Arena of part `w`, grown (never shrunk) to hold `n` rows of length `t`.
    func ensureActivations(part w: Int, n: Int, t: Int) -> Activations {
        while partActivations.count <= w { partActivations.append(Activations(config: config, capN: n, capT: t)) }
        let a = partActivations[w]
        if a.capN >= n && a.capT >= t { return a }
        let b = Activations(config: config, capN: max(n, a.capN), capT: max(t, a.capT))
        partActivations[w] = b
        return b
    }

    /// Bytes held by the activation arenas, logits and extra gradient buffers (0 before the first forward).
    public var activationBytes: Int {
        (partActivations.map(\.totalFloats).reduce(0, +) + logitsCap + hiddenCap + extraGrads.count * paramCount) * 4
    }

    /// Frees the activation arenas, logits and private gradient buffers (they are re-allocated by the next forward),
    /// e.g. after an evaluation pass with a larger batch than training uses. Call only between steps.
    public func releaseActivations() {
        partActivations = []
        logitsPtr?.deallocate(); logitsPtr = nil; logitsCap = 0
        for g in extraGrads { g.deallocate() }
        extraGrads = []
        hiddenPtr?.deallocate(); hiddenPtr = nil; hiddenCap = 0
        lastB = 0; lastT = 0; lastParts = []
    }

    /// Batch parts for B items: with W = min(workers, B) ≥ 2 workers, the batch is split into W contiguous parts run
    /// concurrently, each single-threaded end to end (one join per forward and per backward instead of one per sgemm).
    func batchParts(_ b: Int) -> [Range<Int>] {
        let w = batchParallel ? min(workerCount(), b) : 1
        if w <= 1 { return [0..<b] }
        return (0..<w).map { (b * $0 / w)..<(b * ($0 + 1) / w) }
    }

    /// Runs `body(part)` for every part; with several parts, concurrently with OpenBLAS at one thread.
    func runParts(_ n: Int, _ body: (Int) -> Void) {
        if n == 1 { body(0); return }
        ComputeThreads.withSingleThread { DispatchQueue.concurrentPerform(iterations: n) { body($0) } }
    }

    @inline(__always) func timed<R>(_ on: Bool, _ part: WritableKeyPath<ModelProfile, Double>, _ body: () -> R) -> R {
        if !profiling || !on { return body() }
        let t0 = nowSeconds()
        let r = body()
        profile[keyPath: part] += nowSeconds() - t0
        return r
    }

    /// Forward over `inputIds` `[B, T]` (each id in [0, vocab_size), else a precondition failure naming it);
    /// returns the logits `[B, T, V]`, valid until the next forward.
    public func forward(inputIds: UnsafeBufferPointer<Int32>, batchSize B: Int, seqLen T: Int) -> UnsafeMutableBufferPointer<Float> {
        runForward(inputIds: inputIds, batchSize: B, seqLen: T, hiddenOnly: false, caller: "forward")
    }

    /// Forward over `inputIds` `[B, T]` up to the final RMSNorm (no LM head): returns the final-norm hidden states
    /// `[B, T, C]` (transformers' `last_hidden_state`, what `LlamaForSequenceClassification`'s `score` reads), valid
    /// until the next forward. Ids out of range are a precondition failure, as in `forward`. Its backward is
    /// `backward(dHidden:)`.
    public func forwardHidden(inputIds: UnsafeBufferPointer<Int32>, batchSize B: Int, seqLen T: Int) -> UnsafeMutableBufferPointer<Float> {
        runForward(inputIds: inputIds, batchSize: B, seqLen: T, hiddenOnly: true, caller: "forwardHidden")
    }

    /// The one forward of `forward` (logits `[B, T, V]`) and `forwardHidden` (final-norm hidden states `[B, T, C]`):
    /// checks the ids, sizes the arenas, runs the batch parts and records what backward needs.
    private func runForward(inputIds: UnsafeBufferPointer<Int32>, batchSize B: Int, seqLen T: Int, hiddenOnly: Bool,
                            caller: String) -> UnsafeMutableBufferPointer<Float> {
        precondition(B > 0 && T > 0 && inputIds.count == B * T, "\(caller): inputIds has \(inputIds.count) ids, expected B·T = \(B)·\(T)")
        let traceStart = traceHook == nil ? 0 : DispatchTime.now().uptimeNanoseconds
        defer { if let h = traceHook { h(.forward, traceStart, DispatchTime.now().uptimeNanoseconds) } }
        let cfg = config
        for (i, id) in inputIds.enumerated() {
            precondition(id >= 0 && Int(id) < cfg.vocabSize, "\(caller): input_ids[\(i / T)][\(i % T)] = \(id) outside [0, \(cfg.vocabSize))")
        }
        // Output row width: the vocabulary (logits) or the hidden size (hidden states).
        let W = hiddenOnly ? cfg.hiddenSize : cfg.vocabSize, N = B * T
        ensureRope(T)
        let parts = batchParts(B)
        let arenas = parts.enumerated().map { ensureActivations(part: $0.offset, n: $0.element.count * T, t: T) }
        if hiddenOnly {
            if hiddenCap < N * W { hiddenPtr?.deallocate(); hiddenPtr = .allocate(capacity: N * W); hiddenCap = N * W }
        } else {
            if logitsCap < N * W { logitsPtr?.deallocate(); logitsPtr = .allocate(capacity: N * W); logitsCap = N * W }
        }
        lastB = B; lastT = T
        lastIds = Array(inputIds)
        lastParts = parts
        lastForwardHidden = hiddenOnly
        for a in arenas { ensureMoE(a) }
        precondition(matmulDType == .float32 || (!cfg.useMoe && inferenceWeights == nil && 2 * cfg.intermediateSize >= cfg.hiddenSize),
                     "\(caller): bf16 products need a dense model with fp32 weights and 2·intermediate_size ≥ hidden_size")
        let productW = productWeights()
        lastForwardBF16 = productW != nil
        let out = hiddenOnly ? hiddenPtr! : logitsPtr!, ids = inputIds.baseAddress!
        runParts(parts.count) { w in
            let r = parts[w], rowOut = out + r.lowerBound * T * W
            forwardPart(arenas[w], ids + r.lowerBound * T, r.count, T, hiddenOnly ? nil : rowOut, bf16Weights: productW, prof: w == 0)
            if hiddenOnly { rowOut.update(from: arenas[w].xf, count: r.count * T * W) }
        }
        lastAuxLoss = cfg.useMoe ? arenas.map { $0.moe!.aux }.reduce(0, +) : 0
        return UnsafeMutableBufferPointer(start: out, count: N * W)
    }

    /// Forward of B items (ids [B, T]) through arena `a`, writing logits [B, T, V] (nil: stop at the final norm,
    /// `a.xf`). Buffer shapes: see `Activations`. With `bf16Weights` (the bf16-rounded parameters, `--dtype
    /// bfloat16`) every product takes bf16 operands: the activations it reads are rounded in place (they feed nothing
    /// else, and backward reads the rounded values as autocast's saved bf16 inputs).
    private func forwardPart(_ a: Activations, _ ids: UnsafePointer<Int32>, _ B: Int, _ T: Int, _ logits: FPtr?,
                             bf16Weights: FPtr? = nil, prof: Bool) {
        let cfg = config
        let N = B * T, C = cfg.hiddenSize, QD = cfg.qDim, KVD = cfg.kvDim, I = cfg.intermediateSize, V = cfg.vocabSize
        let H = cfg.numAttentionHeads, eps = cfg.rmsNormEps
        let QKV = QD + 2 * KVD
        let P = paramPtr
        timed(prof, \.elementwise) { embedding_forward(a.res, ids, P + embedOffset, N, C) }
        a.moe?.aux = 0
        let attentionWorkers = min(workerCount(), a.maxWorkers)
        let trace = prof ? traceHook : nil   // part 0's layers (see `traceHook`)
        // fp32 weights: OpenBLAS as configured; bf16/q8_0 inference weights (evaluation only): their products.
        let schedule: LinearSchedule = inferenceWeights.map { LinearSchedule.lowPrecision(workers: workerCount(), weights: $0) } ?? .blas
        for l in 0..<cfg.numHiddenLayers {
            let layerStart = trace == nil ? 0 : DispatchTime.now().uptimeNanoseconds
            defer { if let h = trace { h(.forwardLayer(l), layerStart, DispatchTime.now().uptimeNanoseconds) } }
            // This layer's slices of the arena (kept for backward); o_proj and MLP outputs go through `dres` (scratch).
            let acts = LayerActivations(
                input: a.res + l * N * C, afterAttention: a.x2 + l * N * C, output: a.res + (l + 1) * N * C,
                norm1: a.ln1 + l * N * C, rstd1: a.rstd1 + l * N, qkv: a.qkv + l * N * QKV, attention: a.y + l * N * QD,
                norm2: a.ln2 + l * N * C, rstd2: a.rstd2 + l * N, gateUp: a.gu + l * N * 2 * I, hidden: a.h,
                sublayerOutput: a.dres)
            let attention = LayerAttention.ownRows(batch: B, seqLen: T, lse: a.lse + l * N * H, scratch: a.attScratch,
                                                   workers: attentionWorkers)
            let routing = a.moe.map { MoERouting(arena: $0, slot: l, seqLen: T, auxBatch: lastB) }
            let aux = decoderLayer(l, rows: N, acts, attention: attention, moe: routing, schedule: schedule,
                                   bf16Weights: bf16Weights, prof: prof)
            a.moe?.aux += aux
        }
        timed(prof, \.elementwise) { rmsnorm_forward(a.xf, a.rstdf, a.res + cfg.numHiddenLayers * N * C, P + normOffset, N, C, eps) }
        if let logits {
            if bf16Weights != nil { timed(prof, \.elementwise) { roundToBF16(a.xf, N * C) } }
            // The output head: embed_tokens (tied), or a forward-only model's untied lm_head (never with bf16Weights,
            // which only training makes).
            let head = untiedLMHead.map { $0.baseAddress! } ?? ((bf16Weights ?? P) + embedOffset)
            timed(prof, \.matmul) { linear_forward(logits, a.xf, head, N, C, V, schedule: schedule,
                                                          bf16: bf16Weights != nil) }
        }
    }

    /// Backward of the last forward from `dLogits` `[B, T, V]` (may be the buffer `forward` returned, overwritten by a
    /// loss head). ADDS into `grads` (so accumulation micro-steps sum). `onGradientsReady` is called with flat element
    /// ranges of `grads` as soon as they are final for this backward (reverse layout order: norm, layers.N-1 … layers.0,
    /// embed_tokens last, because it is tied with lm_head).
    /// With several batch parts (see `batchParts`) the parts run concurrently into private buffers that are summed into
    /// `grads` at the end, and then every range is reported (still in that order).
    public func backward(dLogits: UnsafeMutableBufferPointer<Float>, onGradientsReady: ((Range<Int>) -> Void)? = nil) {
        let B = lastB, T = lastT, V = config.vocabSize
        precondition(B > 0, "backward called before forward")
        precondition(!lastForwardHidden, "backward(dLogits:) after forwardHidden; use backward(dHidden:)")
        precondition(dLogits.count == B * T * V, "backward: dLogits has \(dLogits.count) elements, expected \(B * T * V)")
        backwardParts(dLogits.baseAddress!, rowWidth: V, onGradientsReady: onGradientsReady)
    }

    /// Backward of the last `forwardHidden` from dHidden `[B, T, C]`, the gradient of the objective with respect to
    /// the final-norm hidden states (may be the buffer `forwardHidden` returned, overwritten by a loss head; zero rows
    /// where the objective does not read them). The LM head is not involved (a tied embedding gets only its input
    /// gradient). Otherwise as `backward(dLogits:)`: ADDS into `grads`, same `onGradientsReady` order; `score.weight`'s
    /// gradient is the loss head's to add (it is in the range reported first, with the norm).
    public func backward(dHidden: UnsafeMutableBufferPointer<Float>, onGradientsReady: ((Range<Int>) -> Void)? = nil) {
        let B = lastB, T = lastT, C = config.hiddenSize
        precondition(B > 0, "backward called before forward")
        precondition(lastForwardHidden, "backward(dHidden:) after forward; use backward(dLogits:)")
        precondition(dHidden.count == B * T * C, "backward: dHidden has \(dHidden.count) elements, expected \(B * T * C)")
        backwardParts(dHidden.baseAddress!, rowWidth: C, onGradientsReady: onGradientsReady)
    }

    /// The backward of every batch part from `dOut` `[B, T, rowWidth]` (dLogits, or dHidden after `forwardHidden`).
    private func backwardParts(_ dOut: FPtr, rowWidth W: Int, onGradientsReady: ((Range<Int>) -> Void)?) {
        let B = lastB, T = lastT
        let parts = lastParts
        precondition(hasGradients, "backward on a model loaded without gradient buffers")
        let traceStart = traceHook == nil ? 0 : DispatchTime.now().uptimeNanoseconds
        defer { if let h = traceHook { h(.backward, traceStart, DispatchTime.now().uptimeNanoseconds) } }
        lora?.ensureParts(parts.count)
        if parts.count == 1 {
            lastIds.withUnsafeBufferPointer { ids in
                backwardPart(partActivations[0], ids.baseAddress!, B, T, dOut, gradPtr, part: 0, prof: true, onGradientsReady)
            }
            return
        }
        while extraGrads.count < parts.count - 1 {
            let g = FPtr.allocate(capacity: paramCount)
            g.initialize(repeating: 0, count: paramCount)
            extraGrads.append(g)
        }
        let bufs = [gradPtr] + Array(extraGrads.prefix(parts.count - 1))
        lastIds.withUnsafeBufferPointer { ids in
            runParts(parts.count) { w in
                let r = parts[w]
                backwardPart(partActivations[w], ids.baseAddress! + r.lowerBound * T, r.count, T, dOut + r.lowerBound * T * W,
                             bufs[w], part: w, prof: w == 0, nil)
            }
        }
        // grads += Σ private buffers; the private buffers are left zeroed for the next backward.
        let t0 = nowSeconds()
        let G = gradPtr, extras = Array(bufs.dropFirst()), n = paramCount
        parallelRanges(n, workers: workerCount(), minPerWorker: 65536) { r in
            for e in extras {
                for i in r { G[i] += e[i] }
                (e + r.lowerBound).update(repeating: 0, count: r.count)
            }
        }
        if profiling { profile.elementwise += nowSeconds() - t0 }
        lora?.reduceParts(parts.count)
        if let cb = onGradientsReady { for r in gradientReadyOrder { cb(r) } }
    }

    /// Backward of B items through arena `a` from dLogits [B, T, V] (after `forwardHidden`: dHidden [B, T, C]),
    /// adding into the gradient buffer `G`.
    private func backwardPart(_ a: Activations, _ ids: UnsafePointer<Int32>, _ B: Int, _ T: Int, _ dLogitsPtr: FPtr, _ G: FPtr,
                              part: Int, prof: Bool, _ onGradientsReady: ((Range<Int>) -> Void)?) {
        let cfg = config
        let N = B * T, C = cfg.hiddenSize, QD = cfg.qDim, KVD = cfg.kvDim, I = cfg.intermediateSize, V = cfg.vocabSize
        let H = cfg.numAttentionHeads, KVH = cfg.numKeyValueHeads, hd = cfg.headDim, L = cfg.numHiddenLayers
        let QKV = QD + 2 * KVD
        let P = paramPtr
        // `--dtype bfloat16`: the products read the bf16 weight copy and bf16-rounded gradients; dLogits, dgu, dy and
        // dqkv feed only products and are rounded in place, dres (the fp32 residual gradient) is rounded into dgu
        // [N, 2I] while dgu is free (before the MLP's backward writes it, and after gate|up's products read it).
        let bf16 = lastForwardBF16, W = bf16 ? bf16Weights! : P
        if bf16 && !lastForwardHidden { timed(prof, \.elementwise) { roundToBF16(dLogitsPtr, N * V) } }
        let dl = UnsafePointer(dLogitsPtr)
        // The timeline's spans (part 0 only, see `traceHook`).
        let trace = part == 0 ? traceHook : nil
        var spanStart = trace == nil ? 0 : DispatchTime.now().uptimeNanoseconds
        @inline(__always) func span(_ s: ModelTraceSpan) {
            guard let h = trace else { return }
            let now = DispatchTime.now().uptimeNanoseconds
            h(s, spanStart, now)
            spanStart = now
        }
        // lm_head (tied): dxf = dlogits·E, dE += dlogitsᵀ·xf; after forwardHidden, dxf is given.
        let fz = frozenBase
        if lastForwardHidden {
            a.dln.update(from: dl, count: N * C)
        } else {
            timed(prof, \.matmul) { matmul_backward(a.dln, G + embedOffset, dl, a.xf, W + embedOffset, N, C, V, weights: !fz, bf16: bf16) }
        }
        a.dres.update(repeating: 0, count: N * C)
        timed(prof, \.elementwise) {
            rmsnorm_backward(a.dres, G + normOffset, a.dln, a.res + L * N * C, P + normOffset, a.rstdf, N, C, scratch: a.normScratch, maxWorkers: a.maxWorkers)
        }
        onGradientsReady?(normOffset..<paramCount)
        span(.backwardHead)
        do { let cosT = rope.cos, sinT = rope.sin
            for l in stride(from: L - 1, through: 0, by: -1) {
                let lo = layerOffsets[l]
                let xin = a.res + l * N * C
                let ln1 = a.ln1 + l * N * C, x2 = a.x2 + l * N * C, ln2 = a.ln2 + l * N * C
                let r1 = a.rstd1 + l * N, r2 = a.rstd2 + l * N
                let qkv = a.qkv + l * N * QKV, y = a.y + l * N * QD
                let lse = a.lse + l * N * H, gu = a.gu + l * N * 2 * I
                if let m = a.moe {
                    timed(prof, \.matmul) {
                        moeBackward(m, layer: l, lo, x: ln2, dout: a.dres, dx: a.dln, G: G, h: a.h, dgu: a.dgu, N: N, T: T,
                                    auxBatch: lastB, auxScale: auxLossScale)
                    }
                } else {
                // MLP: d = down_proj(silu(gate) · up), gate | up = gu.
                timed(prof, \.elementwise) { swiglu_forward_fused(a.h, gu, N, I) }   // recompute h
                var dd = UnsafePointer(a.dres)
                if bf16 { timed(prof, \.elementwise) { roundToBF16(a.h, N * I); roundToBF16(dd, into: a.dgu, N * C) }; dd = UnsafePointer(a.dgu) }
                if !fz { timed(prof, \.matmul) { gemm(bf16, true, false, C, I, N, 1, dd, C, a.h, I, 1, G + lo.down, I) } }     // dW_down += ddᵀ·h
                timed(prof, \.matmul) { gemm(bf16, false, false, N, I, C, 1, dd, C, W + lo.down, I, 0, a.h, I) }     // dh = dd·W_down
                timed(prof, \.elementwise) { swiglu_backward_fused(a.dgu, a.h, gu, N, I) }
                if bf16 { timed(prof, \.elementwise) { roundToBF16(a.dgu, N * 2 * I) } }
                timed(prof, \.matmul) { matmul_backward(a.dln, G + lo.gate, a.dgu, ln2, W + lo.gate, N, C, 2 * I, weights: !fz, bf16: bf16) }
                }
                timed(prof, \.elementwise) { rmsnorm_backward(a.dres, G + lo.ln2, a.dln, x2, P + lo.ln2, r2, N, C, scratch: a.normScratch, maxWorkers: a.maxWorkers) }
                // Attention.
                var dOut = UnsafePointer(a.dres)
                if bf16 { timed(prof, \.elementwise) { roundToBF16(dOut, into: a.dgu, N * C) }; dOut = UnsafePointer(a.dgu) }
                timed(prof, \.matmul) { matmul_backward(a.dy, G + lo.o, dOut, y, W + lo.o, N, QD, C, weights: !fz, bf16: bf16) }
                lora?.backward(layer: l, site: .o, part: part, x: y, dout: a.dres, dx: a.dy, n: N)
                if bf16 { timed(prof, \.elementwise) { roundToBF16(a.dy, N * QD) } }
                timed(prof, \.attention) {
                    attention_backward(a.dqkv, a.dqkv + QD, a.dqkv + QD + KVD, a.dy, y, lse, qkv, qkv + QD, qkv + QD + KVD,
                                       a.attScratch, workers: min(workerCount(), a.maxWorkers), B, T, H, KVH, hd,
                                       ldq: QKV, ldkv: QKV, ldy: QD, bf16: bf16)
                }
                timed(prof, \.elementwise) {
                    rope_apply(a.dqkv, cosT, sinT, B, T, H, hd, inverse: true, rowStride: QKV)
                    rope_apply(a.dqkv + QD, cosT, sinT, B, T, KVH, hd, inverse: true, rowStride: QKV)
                }
                if bf16 { timed(prof, \.elementwise) { roundToBF16(a.dqkv, N * QKV) } }
                timed(prof, \.matmul) { matmul_backward(a.dln, G + lo.q, a.dqkv, ln1, W + lo.q, N, C, QKV, weights: !fz, bf16: bf16) }
                lora?.backward(layer: l, site: .qkv, part: part, x: ln1, dout: a.dqkv, dx: a.dln, n: N)
                timed(prof, \.elementwise) { rmsnorm_backward(a.dres, G + lo.ln1, a.dln, xin, P + lo.ln1, r1, N, C, scratch: a.normScratch, maxWorkers: a.maxWorkers) }
                onGradientsReady?(lo.range)
                span(.backwardLayer(l))
            }
        }
        if !fz { timed(prof, \.elementwise) { embedding_backward(G + embedOffset, a.dres, ids, N, C) } }
        onGradientsReady?(embedOffset..<(embedOffset + V * C))
        span(.backwardEmbedding)
    }
}

/// SplitMix64 (Steele et al. 2014): small, fast, seedable; used for init and sampling.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 24 random bits.
    public mutating func nextUniform() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }
}

/// RoPE tables owned by the model: cos/sin `[maxT, hd/2]` (see `rope_tables`).
final class RopeTable {
    let maxT: Int
    let cos: FPtr, sin: FPtr
    init(maxT: Int, inverseFrequencies: [Float], attentionScaling: Float) {
        self.maxT = maxT
        let (c, s) = rope_tables(maxT: maxT, inverseFrequencies: inverseFrequencies, attentionScaling: attentionScaling)
        cos = .allocate(capacity: max(c.count, 1)); sin = .allocate(capacity: max(s.count, 1))
        cos.initialize(from: c, count: c.count); sin.initialize(from: s, count: s.count)
    }
    deinit { cos.deallocate(); sin.deallocate() }
}
