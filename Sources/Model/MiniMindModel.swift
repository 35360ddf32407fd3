// MiniMindModel: parameters/gradients as flat fp32 buffers, activation arena, forward and backward.
import Foundation
import CBLAS

/// One named parameter inside the flat buffer.
public struct ParameterInfo: Equatable, Sendable {
    public var name: String     // HF Llama name, e.g. "model.layers.0.self_attn.q_proj.weight"
    public var shape: [Int]
    public var offset: Int      // in elements, into `params` / `grads`
    public var count: Int
    public var range: Range<Int> { offset..<(offset + count) }
}

/// Offsets (in elements) of one decoder layer's parameters inside the flat buffer.
struct LayerOffsets {
    var ln1 = 0, q = 0, k = 0, v = 0, o = 0, ln2 = 0, gate = 0, up = 0, down = 0
    var range: Range<Int> = 0..<0
}

/// Activations kept from forward for backward, allocated for the largest `[B, T]` seen and reused.
/// Shapes (per layer l, for the current N = B·T rows, packed from each region's start):
/// res[L+1][N,C] residual stream · ln1/x2/ln2[L][N,C] · rstd1/rstd2[L][N] · q/y[L][N,qd] · k/v[L][N,kvd] ·
/// lse[L][B,H,T] · g/u[L][N,I] · xf[N,C], rstdf[N] · logits[N,V]; backward scratch: dres/dln[N,C], dy/dq[N,qd],
/// dk/dv[N,kvd], dG/dU[N,I], attention scratch [2·blk·T + blk].
final class Activations {
    let capN: Int, capT: Int
    /// Worker threads the per-worker scratch (attention, RMSNorm dw) is sized for.
    let maxWorkers: Int
    let L: Int, C: Int, QD: Int, KVD: Int, I: Int, H: Int, V: Int
    let storage: UnsafeMutablePointer<Float>
    let totalFloats: Int
    var res, ln1, x2, ln2, rstd1, rstd2, q, y, k, v, lse, g, u, xf, rstdf, logits: FPtr
    var dres, dln, dy, dq, dk, dv, dG, dU, attScratch, normScratch: FPtr

    init(config cfg: ModelConfig, capN: Int, capT: Int) {
        self.capN = capN; self.capT = capT
        maxWorkers = min(64, max(ProcessInfo.processInfo.activeProcessorCount, workerCount()))
        L = cfg.numHiddenLayers; C = cfg.hiddenSize; QD = cfg.qDim; KVD = cfg.kvDim; I = cfg.intermediateSize
        H = cfg.numAttentionHeads; V = cfg.vocabSize
        let n = capN
        let sizes: [Int] = [
            (L + 1) * n * C, L * n * C, L * n * C, L * n * C, L * n, L * n, L * n * QD, L * n * QD, L * n * KVD, L * n * KVD,
            L * n * H, L * n * I, L * n * I, n * C, n, n * V,
            n * C, n * C, n * QD, n * QD, n * KVD, n * KVD, n * I, n * I, maxWorkers * attentionScratchPerWorker(capT),
            maxWorkers * C,
        ]
        totalFloats = sizes.reduce(0, +)
        storage = .allocate(capacity: totalFloats)
        storage.initialize(repeating: 0, count: totalFloats)
        var p = storage
        var ptrs: [FPtr] = []
        for s in sizes { ptrs.append(p); p += s }
        (res, ln1, x2, ln2, rstd1, rstd2, q, y, k, v) = (ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5], ptrs[6], ptrs[7], ptrs[8], ptrs[9])
        (lse, g, u, xf, rstdf, logits) = (ptrs[10], ptrs[11], ptrs[12], ptrs[13], ptrs[14], ptrs[15])
        (dres, dln, dy, dq, dk, dv, dG, dU, attScratch, normScratch) = (ptrs[16], ptrs[17], ptrs[18], ptrs[19], ptrs[20], ptrs[21], ptrs[22], ptrs[23], ptrs[24], ptrs[25])
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

/// The MiniMind dense decoder (MiniMind2 = Llama with tied embeddings). Parameters and gradients are each one
/// contiguous fp32 buffer with the layout `parameters` (layout order: embed_tokens, layers.0 …, layers.N-1, norm;
/// inside a layer: input_layernorm, q/k/v/o_proj, post_attention_layernorm, gate/up/down_proj).
public final class MiniMindModel {
    public let config: ModelConfig
    public let parameters: [ParameterInfo]
    public var numParameters: Int { paramCount }
    public var params: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: paramPtr, count: paramCount) }
    public var grads: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: gradPtr, count: paramCount) }
    /// When true, forward/backward accumulate wall-clock time per part into `profile`.
    public var profiling = false
    public var profile = ModelProfile()

    let paramCount: Int
    let paramPtr: FPtr
    let gradPtr: FPtr
    let embedOffset = 0
    var layerOffsets: [LayerOffsets] = []
    var normOffset = 0
    var acts: Activations?
    /// RoPE cos/sin tables `[ropeLen, hd/2]`, grown on demand.
    var rope = RopeTable(maxT: 0, headDim: 2, theta: 1)
    var ropeLen: Int { rope.maxT }
    // Shape of the last forward (for backward).
    var lastB = 0, lastT = 0
    var lastIds: [Int32] = []

    /// Layout only; parameters zero. Use `init(config:seed:)` or `load(directory:)`.
    init(layoutFor cfg: ModelConfig) {
        config = cfg
        var infos: [ParameterInfo] = []
        var off = 0
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
            lo.gate = add(p + "mlp.gate_proj.weight", [I, C])
            lo.up = add(p + "mlp.up_proj.weight", [I, C])
            lo.down = add(p + "mlp.down_proj.weight", [C, I])
            lo.range = start..<off
            los.append(lo)
        }
        normOffset = add("model.norm.weight", [C])
        layerOffsets = los
        parameters = infos
        paramCount = off
        paramPtr = .allocate(capacity: off); paramPtr.initialize(repeating: 0, count: off)
        gradPtr = .allocate(capacity: off); gradPtr.initialize(repeating: 0, count: off)
    }

    deinit { paramPtr.deallocate(); gradPtr.deallocate() }

    /// Random initialisation, deterministic in `seed`. PyTorch defaults as MiniMind trains from them: every Linear
    /// weight (q/k/v/o, gate/up/down, and lm_head, which embed_tokens is tied to) ~ U(−1/√fan_in, 1/√fan_in)
    /// (kaiming_uniform with a = √5); RMSNorm weights = 1.
    public convenience init(config: ModelConfig, seed: UInt64) {
        self.init(layoutFor: config)
        var rng = SplitMix64(seed: seed)
        for p in parameters {
            let dst = paramPtr + p.offset
            if p.shape.count == 1 {
                dst.update(repeating: 1, count: p.count)
            } else {
                let bound = 1 / Float(p.shape[1]).squareRoot()
                for i in 0..<p.count { dst[i] = (rng.nextUniform() * 2 - 1) * bound }
            }
        }
    }

    /// Index of a parameter by name.
    public func parameter(named name: String) -> ParameterInfo? { parameters.first { $0.name == name } }

    /// Loads `DIR/config.json` + `DIR/model.safetensors` (F32/F16/BF16). Every parameter must be present with its
    /// shape; a tied `lm_head.weight` is accepted and ignored; any other tensor is an error naming it.
    public static func load(directory: String) throws -> MiniMindModel {
        let cfg = try ModelConfig.load(directory: directory)
        let m = MiniMindModel(layoutFor: cfg)
        let path = (directory as NSString).appendingPathComponent("model.safetensors")
        let f = try SafeTensorsFile(path: path)
        for p in m.parameters {
            let e = try f.entry(p.name)
            guard e.shape == p.shape else { throw ModelError("\(path): tensor \(p.name) has shape \(e.shape), expected \(p.shape)") }
            try f.readFloats(p.name, into: UnsafeMutableBufferPointer(start: m.paramPtr + p.offset, count: p.count))
        }
        let known = Set(m.parameters.map(\.name)).union(["lm_head.weight"])
        for n in f.entries.keys where !known.contains(n) && !n.hasSuffix("rotary_emb.inv_freq") {
            throw ModelError("\(path): unexpected tensor \(n) for this config")
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

    public func zeroGrad() { gradPtr.update(repeating: 0, count: paramCount) }

    /// Flat ranges of each gradient group in the order backward finalises them: norm, layers.N-1 … 0, embed_tokens.
    public var gradientReadyOrder: [Range<Int>] {
        [normOffset..<paramCount] + layerOffsets.reversed().map(\.range) + [0..<(config.vocabSize * config.hiddenSize)]
    }

    func ensureRope(_ t: Int) {
        if t <= ropeLen { return }
        let n = max(t, min(max(2 * ropeLen, 64), max(t, config.maxPositionEmbeddings)))
        rope = RopeTable(maxT: n, headDim: config.headDim, theta: config.ropeTheta)
    }

    func ensureActivations(n: Int, t: Int) -> Activations {
        if let a = acts, a.capN >= n, a.capT >= t { return a }
        let a = Activations(config: config, capN: max(n, acts?.capN ?? 0), capT: max(t, acts?.capT ?? 0))
        acts = nil
        acts = a
        return a
    }

    /// Bytes held by the activation arena (0 before the first forward).
    public var activationBytes: Int { (acts?.totalFloats ?? 0) * 4 }

    @inline(__always) private func timed<R>(_ part: WritableKeyPath<ModelProfile, Double>, _ body: () -> R) -> R {
        if !profiling { return body() }
        let t0 = nowSeconds()
        let r = body()
        profile[keyPath: part] += nowSeconds() - t0
        return r
    }

    /// Forward over `inputIds` `[B, T]` (each id in [0, vocab_size), else a precondition failure naming it);
    /// returns the logits `[B, T, V]`, valid until the next forward.
    public func forward(inputIds: UnsafeBufferPointer<Int32>, batchSize B: Int, seqLen T: Int) -> UnsafeMutableBufferPointer<Float> {
        precondition(B > 0 && T > 0 && inputIds.count == B * T, "forward: inputIds has \(inputIds.count) ids, expected B·T = \(B)·\(T)")
        let cfg = config
        for (i, id) in inputIds.enumerated() {
            precondition(id >= 0 && Int(id) < cfg.vocabSize, "forward: input_ids[\(i / T)][\(i % T)] = \(id) outside [0, \(cfg.vocabSize))")
        }
        let N = B * T, C = cfg.hiddenSize, QD = cfg.qDim, KVD = cfg.kvDim, I = cfg.intermediateSize, V = cfg.vocabSize
        let H = cfg.numAttentionHeads, KVH = cfg.numKeyValueHeads, hd = cfg.headDim, eps = cfg.rmsNormEps
        let a = ensureActivations(n: N, t: T)
        ensureRope(T)
        lastB = B; lastT = T
        lastIds = Array(inputIds)
        let P = paramPtr
        let ids = inputIds.baseAddress!
        timed(\.elementwise) { embedding_forward(a.res, ids, P + embedOffset, N, C) }
        do { let cosT = rope.cos, sinT = rope.sin
            for l in 0..<cfg.numHiddenLayers {
                let lo = layerOffsets[l]
                let xin = a.res + l * N * C, xout = a.res + (l + 1) * N * C
                let ln1 = a.ln1 + l * N * C, x2 = a.x2 + l * N * C, ln2 = a.ln2 + l * N * C
                let r1 = a.rstd1 + l * N, r2 = a.rstd2 + l * N
                let q = a.q + l * N * QD, y = a.y + l * N * QD, k = a.k + l * N * KVD, v = a.v + l * N * KVD
                let lse = a.lse + l * N * H, g = a.g + l * N * I, u = a.u + l * N * I
                timed(\.elementwise) { rmsnorm_forward(ln1, r1, xin, P + lo.ln1, N, C, eps) }
                timed(\.matmul) {
                    matmul_forward(q, ln1, P + lo.q, N, C, QD)
                    matmul_forward(k, ln1, P + lo.k, N, C, KVD)
                    matmul_forward(v, ln1, P + lo.v, N, C, KVD)
                }
                timed(\.elementwise) {
                    rope_apply(q, cosT, sinT, B, T, H, hd)
                    rope_apply(k, cosT, sinT, B, T, KVH, hd)
                }
                timed(\.attention) { attention_forward(y, lse, q, k, v, a.attScratch, workers: min(workerCount(), a.maxWorkers), B, T, H, KVH, hd) }
                timed(\.matmul) { matmul_forward(a.dres, y, P + lo.o, N, QD, C) }
                timed(\.elementwise) {
                    residual_forward(x2, xin, a.dres, N * C)
                    rmsnorm_forward(ln2, r2, x2, P + lo.ln2, N, C, eps)
                }
                timed(\.matmul) {
                    matmul_forward(g, ln2, P + lo.gate, N, C, I)
                    matmul_forward(u, ln2, P + lo.up, N, C, I)
                }
                timed(\.elementwise) { swiglu_forward(a.dG, g, u, N * I) }
                timed(\.matmul) { matmul_forward(a.dres, a.dG, P + lo.down, N, I, C) }
                timed(\.elementwise) { residual_forward(xout, x2, a.dres, N * C) }
            }
        }
        timed(\.elementwise) { rmsnorm_forward(a.xf, a.rstdf, a.res + cfg.numHiddenLayers * N * C, P + normOffset, N, C, eps) }
        timed(\.matmul) { matmul_forward(a.logits, a.xf, P + embedOffset, N, C, V) }
        return UnsafeMutableBufferPointer(start: a.logits, count: N * V)
    }

    /// Backward of the last forward from `dLogits` `[B, T, V]` (may be the buffer `forward` returned, overwritten by a
    /// loss head). ADDS into `grads` (so accumulation micro-steps sum). `onGradientsReady` is called with flat element
    /// ranges of `grads` as soon as they are final for this backward (reverse layout order: norm, layers.N-1 … layers.0,
    /// embed_tokens last, because it is tied with lm_head).
    public func backward(dLogits: UnsafeMutableBufferPointer<Float>, onGradientsReady: ((Range<Int>) -> Void)? = nil) {
        let cfg = config, B = lastB, T = lastT
        precondition(B > 0, "backward called before forward")
        let N = B * T, C = cfg.hiddenSize, QD = cfg.qDim, KVD = cfg.kvDim, I = cfg.intermediateSize, V = cfg.vocabSize
        let H = cfg.numAttentionHeads, KVH = cfg.numKeyValueHeads, hd = cfg.headDim, L = cfg.numHiddenLayers
        precondition(dLogits.count == N * V, "backward: dLogits has \(dLogits.count) elements, expected \(N * V)")
        let a = acts!
        let P = paramPtr, G = gradPtr
        let dl = UnsafePointer(dLogits.baseAddress!)
        // lm_head (tied): dxf = dlogits·E, dE += dlogitsᵀ·xf.
        timed(\.matmul) { matmul_backward(a.dln, G + embedOffset, dl, a.xf, P + embedOffset, N, C, V) }
        a.dres.update(repeating: 0, count: N * C)
        timed(\.elementwise) {
            rmsnorm_backward(a.dres, G + normOffset, a.dln, a.res + L * N * C, P + normOffset, a.rstdf, N, C, scratch: a.normScratch, maxWorkers: a.maxWorkers)
        }
        onGradientsReady?(normOffset..<paramCount)
        do { let cosT = rope.cos, sinT = rope.sin
            for l in stride(from: L - 1, through: 0, by: -1) {
                let lo = layerOffsets[l]
                let xin = a.res + l * N * C
                let ln1 = a.ln1 + l * N * C, x2 = a.x2 + l * N * C, ln2 = a.ln2 + l * N * C
                let r1 = a.rstd1 + l * N, r2 = a.rstd2 + l * N
                let q = a.q + l * N * QD, y = a.y + l * N * QD, k = a.k + l * N * KVD, v = a.v + l * N * KVD
                let lse = a.lse + l * N * H, g = a.g + l * N * I, u = a.u + l * N * I
                // MLP: d = down(swiglu(gate(ln2), up(ln2))).
                timed(\.elementwise) { swiglu_forward(a.dU, g, u, N * I) }  // recompute h
                timed(\.matmul) { matmul_backward(a.dG, G + lo.down, a.dres, a.dU, P + lo.down, N, I, C) }
                timed(\.elementwise) { swiglu_backward(a.dG, a.dU, g, u, N * I) }
                timed(\.matmul) {
                    matmul_backward(a.dln, G + lo.gate, a.dG, ln2, P + lo.gate, N, C, I)
                    matmul_backward(a.dln, G + lo.up, a.dU, ln2, P + lo.up, N, C, I, accumulate: true)
                }
                timed(\.elementwise) { rmsnorm_backward(a.dres, G + lo.ln2, a.dln, x2, P + lo.ln2, r2, N, C, scratch: a.normScratch, maxWorkers: a.maxWorkers) }
                // Attention.
                timed(\.matmul) { matmul_backward(a.dy, G + lo.o, a.dres, y, P + lo.o, N, QD, C) }
                timed(\.attention) {
                    attention_backward(a.dq, a.dk, a.dv, a.dy, y, lse, q, k, v, a.attScratch, workers: min(workerCount(), a.maxWorkers), B, T, H, KVH, hd)
                }
                timed(\.elementwise) {
                    rope_apply(a.dq, cosT, sinT, B, T, H, hd, inverse: true)
                    rope_apply(a.dk, cosT, sinT, B, T, KVH, hd, inverse: true)
                }
                timed(\.matmul) {
                    matmul_backward(a.dln, G + lo.q, a.dq, ln1, P + lo.q, N, C, QD)
                    matmul_backward(a.dln, G + lo.k, a.dk, ln1, P + lo.k, N, C, KVD, accumulate: true)
                    matmul_backward(a.dln, G + lo.v, a.dv, ln1, P + lo.v, N, C, KVD, accumulate: true)
                }
                timed(\.elementwise) { rmsnorm_backward(a.dres, G + lo.ln1, a.dln, xin, P + lo.ln1, r1, N, C, scratch: a.normScratch, maxWorkers: a.maxWorkers) }
                onGradientsReady?(lo.range)
            }
        }
        lastIds.withUnsafeBufferPointer { ids in
            timed(\.elementwise) { embedding_backward(G + embedOffset, a.dres, ids.baseAddress!, N, C) }
        }
        onGradientsReady?(embedOffset..<(embedOffset + V * C))
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
    init(maxT: Int, headDim: Int, theta: Double) {
        self.maxT = maxT
        let (c, s) = rope_tables(maxT: maxT, headDim: headDim, theta: theta)
        cos = .allocate(capacity: max(c.count, 1)); sin = .allocate(capacity: max(s.count, 1))
        cos.initialize(from: c, count: c.count); sin.initialize(from: s, count: s.count)
    }
    deinit { cos.deallocate(); sin.deallocate() }
}
