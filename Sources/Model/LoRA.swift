// LoRA (Hu et al. 2021) as MiniMind's `model/model_lora.py` applies it: a rank-r adapter on every nn.Linear whose weight
// is square, forward W x + B(A x) with no scaling; A [r, in] ~ N(0, 0.02²), B [out, r] = 0.
import Foundation

/// Where an adapted Linear sits in `MiniMindModel`'s forward: the fused q|k|v projection or o_proj.
public enum LoRASite: Sendable { case qkv, o }

/// One adapted Linear.
public struct LoRATarget: Sendable, Equatable {
    /// Module name, e.g. `model.layers.0.self_attn.q_proj` (adapter tensors are `<module>.lora.A.weight` / `.B.weight`).
    public var module: String
    public var layer: Int
    /// In / out features of the base weight `[out, in]` (equal: only square weights are adapted).
    public var inFeatures: Int, outFeatures: Int
    /// Offsets (elements) of A `[r, in]` and B `[out, r]` in `LoRAAdapters.params` / `grads`.
    public var aOffset: Int, bOffset: Int
    var site: LoRASite
    /// Column offset of this projection's output inside the site's output rows (q: 0, k: qDim, v: qDim + kvDim).
    var column: Int
}

/// The adapters of one model: parameters and gradients each one flat fp32 buffer (A then B per target, in layer order).
/// Attach with `model.lora = adapters`; set `model.frozenBase = true` so backward computes no base weight gradients.
public final class LoRAAdapters {
    public let rank: Int
    public let targets: [LoRATarget]
    public let count: Int
    public var params: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: paramPtr, count: count) }
    /// Gradients of the last backward(s) (accumulated like the model's; `zeroGrad` clears them).
    public var grads: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: partGrads[0], count: count) }
    let paramPtr: FPtr
    /// Gradient buffer of each batch part (part 0 = `grads`); parts ≥ 1 are summed into part 0 after backward.
    var partGrads: [FPtr]
    let qkvStride: Int, hidden: Int

    /// Adapters on every square Linear of `config` (q_proj, o_proj, and k_proj / v_proj when kv_dim == hidden), A drawn
    /// from N(0, 0.02²) with a SplitMix64/Box–Muller stream seeded by `seed`, B zero.
    /// - Throws: `ModelError` when an MLP projection is square (intermediate_size == hidden_size): not supported; when no
    ///   Linear is square (num_attention_heads × head_dim ≠ hidden_size): nothing to adapt.
    public init(config cfg: ModelConfig, rank: Int, seed: UInt64 = 42) throws {
        guard rank >= 1 else { throw ModelError("LoRA rank must be ≥ 1 (got \(rank))") }
        // Adapter floats: 2·rank·hidden per adapted projection, at most 4 per layer; a huge rank is an error, not a trap.
        let (perRank, o1) = (8 * cfg.hiddenSize).multipliedReportingOverflow(by: cfg.numHiddenLayers)
        let (total, o2) = perRank.multipliedReportingOverflow(by: rank)
        guard !o1, !o2, total <= ModelConfig.maxParameters else {
            throw ModelError("LoRA rank \(rank) is too large: the adapters would exceed \(ModelConfig.maxParameters) parameters (hidden_size \(cfg.hiddenSize), \(cfg.numHiddenLayers) layers)")
        }
        if cfg.intermediateSize == cfg.hiddenSize && !cfg.useMoe {   // MoE: the gate and the experts are never adapted (issue 7)
            throw ModelError("LoRA: square MLP projections (intermediate_size == hidden_size) are not supported")
        }
        self.rank = rank
        let C = cfg.hiddenSize, QD = cfg.qDim, KVD = cfg.kvDim
        var ts: [LoRATarget] = []
        var off = 0
        func add(_ l: Int, _ name: String, _ n: Int, _ site: LoRASite, _ col: Int) {
            ts.append(LoRATarget(module: "model.layers.\(l).self_attn.\(name)", layer: l, inFeatures: n, outFeatures: n,
                                 aOffset: off, bOffset: off + rank * n, site: site, column: col))
            off += 2 * rank * n
        }
        for l in 0..<cfg.numHiddenLayers {
            if QD == C { add(l, "q_proj", C, .qkv, 0) }
            if KVD == C { add(l, "k_proj", C, .qkv, QD); add(l, "v_proj", C, .qkv, QD + KVD) }
            if QD == C { add(l, "o_proj", C, .o, 0) }
        }
        // MiniMind adapts square Linears only; with heads × head_dim ≠ hidden_size none is square and nothing would train.
        guard !ts.isEmpty || cfg.numHiddenLayers == 0 else {
            throw ModelError("LoRA: no square Linear to adapt: q_proj/o_proj are [\(QD), \(C)]/[\(C), \(QD)] (num_attention_heads × head_dim = \(QD) ≠ hidden_size \(C)) and k_proj/v_proj [\(KVD), \(C)]; MiniMind's LoRA adapts square Linears only")
        }
        targets = ts
        count = off
        qkvStride = QD + 2 * KVD
        hidden = C
        paramPtr = .allocate(capacity: max(off, 1)); paramPtr.initialize(repeating: 0, count: max(off, 1))
        let g = FPtr.allocate(capacity: max(off, 1)); g.initialize(repeating: 0, count: max(off, 1))
        partGrads = [g]
        var rng = SplitMix64(seed: seed)
        for t in ts {
            for i in 0..<(rank * t.inFeatures) { paramPtr[t.aOffset + i] = 0.02 * gaussian(&rng) }
        }
    }

    deinit { paramPtr.deallocate(); for g in partGrads { g.deallocate() } }

    public func zeroGrad() { for g in partGrads { g.update(repeating: 0, count: max(count, 1)) } }

    func ensureParts(_ n: Int) {
        while partGrads.count < n {
            let g = FPtr.allocate(capacity: max(count, 1)); g.initialize(repeating: 0, count: max(count, 1))
            partGrads.append(g)
        }
    }

    /// grads += Σ part buffers 1…n−1, which are zeroed.
    func reduceParts(_ n: Int) {
        guard n > 1 else { return }
        let g0 = partGrads[0]
        for w in 1..<min(n, partGrads.count) {
            let g = partGrads[w]
            for i in 0..<count { g0[i] += g[i] }
            g.update(repeating: 0, count: count)
        }
    }

    /// out[n, column ..< column+out] += B(A x) for every target of (layer, site). x `[n, in]` (row stride in),
    /// out rows have stride `qkvStride` (qkv) or hidden (o).
    func forward(layer: Int, site: LoRASite, x: FPtr, out: FPtr, n: Int) {
        let r = rank, ldo = site == .qkv ? qkvStride : hidden
        for t in targets where t.layer == layer && t.site == site {
            let u = FPtr.allocate(capacity: n * r); defer { u.deallocate() }
            let A = paramPtr + t.aOffset, B = paramPtr + t.bOffset
            sgemm(false, true, n, r, t.inFeatures, 1, x, t.inFeatures, A, t.inFeatures, 0, u, r)           // u = x Aᵀ
            sgemm(false, true, n, t.outFeatures, r, 1, u, r, B, r, 1, out + t.column, ldo)                  // out += u Bᵀ
        }
    }

    /// Backward of `forward` for part `part`: dA, dB into that part's buffer; dx[n, in] += (dout B) A.
    func backward(layer: Int, site: LoRASite, part: Int, x: FPtr, dout: FPtr, dx: FPtr, n: Int) {
        let r = rank, ldo = site == .qkv ? qkvStride : hidden
        let G = partGrads[part]
        for t in targets where t.layer == layer && t.site == site {
            let u = FPtr.allocate(capacity: 2 * n * r); defer { u.deallocate() }
            let du = u + n * r
            let I = t.inFeatures, O = t.outFeatures
            let A = paramPtr + t.aOffset, B = paramPtr + t.bOffset
            sgemm(false, true, n, r, I, 1, x, I, A, I, 0, u, r)                                 // u = x Aᵀ (recomputed)
            sgemm(true, false, O, r, n, 1, dout + t.column, ldo, u, r, 1, G + t.bOffset, r)     // dB += doutᵀ u
            sgemm(false, false, n, r, O, 1, dout + t.column, ldo, B, r, 0, du, r)               // du = dout B
            sgemm(true, false, r, I, n, 1, du, r, x, I, 1, G + t.aOffset, I)                    // dA += duᵀ x
            sgemm(false, false, n, I, r, 1, du, r, A, I, 1, dx, I)                              // dx += du A
        }
    }

    /// (name, shape, range in `params`) of every adapter tensor: `<module>.lora.A.weight` `[r, in]`, `.B.weight` `[out, r]`.
    public var tensors: [(name: String, shape: [Int], range: Range<Int>)] {
        targets.flatMap { t in [
            (t.module + ".lora.A.weight", [rank, t.inFeatures], t.aOffset ..< t.aOffset + rank * t.inFeatures),
            (t.module + ".lora.B.weight", [t.outFeatures, rank], t.bOffset ..< t.bOffset + rank * t.outFeatures),
        ] }
    }

    /// Writes the adapter alone as safetensors (`<module>.lora.A.weight` / `.B.weight`), atomically.
    public func save(path: String) throws {
        var w = SafeTensorsWriter()
        for t in tensors { w.add(t.name, shape: t.shape, floats: UnsafeBufferPointer(rebasing: params[t.range])) }
        try w.write(to: path)
    }

    /// Reads every adapter tensor from `path` (names `prefix + <module>.lora.A.weight` …; all must be present with
    /// their shapes). Other tensors in the file are ignored only when `prefix` is non-empty.
    public func load(path: String, prefix: String = "") throws {
        let f = try SafeTensorsFile(path: path)
        for t in tensors {
            let e = try f.entry(prefix + t.name)
            guard e.shape == t.shape else {
                throw ModelError("\(path): tensor \(prefix + t.name) has shape \(e.shape), expected \(t.shape) (LoRA rank \(rank))")
            }
            try f.readFloats(prefix + t.name, into: UnsafeMutableBufferPointer(rebasing: params[t.range]))
        }
        if prefix.isEmpty {
            let known = Set(tensors.map(\.name))
            for n in f.entries.keys where !known.contains(n) { throw ModelError("\(path): unexpected tensor \(n) for this LoRA layout") }
        }
    }

    /// The rank stored in an adapter file (rows of its first `.lora.A.weight`).
    public static func rank(inFile path: String) throws -> Int {
        let f = try SafeTensorsFile(path: path)
        guard let e = f.entries.first(where: { $0.key.hasSuffix(".lora.A.weight") })?.value, e.shape.count == 2 else {
            throw ModelError("\(path): no <module>.lora.A.weight tensor")
        }
        return e.shape[0]
    }

    /// W += B·A for every target: the merged model computes W x + B(A x) without adapters.
    public func merge(into model: MiniMindModel) throws {
        for t in targets {
            guard let p = model.parameter(named: t.module + ".weight"), p.shape == [t.outFeatures, t.inFeatures] else {
                throw ModelError("LoRA merge: the model has no \(t.module).weight of shape [\(t.outFeatures), \(t.inFeatures)]")
            }
            sgemm(false, false, t.outFeatures, t.inFeatures, rank, 1, paramPtr + t.bOffset, rank, paramPtr + t.aOffset,
                  t.inFeatures, 1, model.paramPtr + p.offset, t.inFeatures)
        }
    }
}

/// Standard normal by Box–Muller from two uniforms.
func gaussian(_ rng: inout SplitMix64) -> Float {
    let u1 = max(Double(rng.next() >> 11) * (1.0 / 9_007_199_254_740_992.0), 1e-300)
    let u2 = Double(rng.next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
    return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
}
