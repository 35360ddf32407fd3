// Mixture-of-Experts MLP (MiniMind2-MoE): a softmax gate routes every token to its top-k of E routed SwiGLU experts
// (weights normalised over the k), S shared experts see every token, and a sequence-level load-balancing loss
// (DeepSeekMoE, Dai et al. 2024, "sequence-wise auxiliary loss"; MiniMind's MoEGate with seq_aux) is added in training.
// Math source: MiniMind's model_minimind.py (MoEGate / MOEFeedForward, training mode); re-derived, not copied.
import Foundation
import CBLAS

extension ModelConfig {
    /// Throws a `ModelError` naming the first inconsistent MoE field.
    func validateMoE(source: String) throws {
        func bad(_ f: String, _ why: String) -> ModelError { ModelError("\(source): field \(f) \(why)") }
        if nRoutedExperts < 1 { throw bad("n_routed_experts", "must be ≥ 1 (got \(nRoutedExperts))") }
        if numExpertsPerTok < 1 || numExpertsPerTok > nRoutedExperts {
            throw bad("num_experts_per_tok", "must be in 1…n_routed_experts = \(nRoutedExperts) (got \(numExpertsPerTok))") }
        if nSharedExperts < 0 { throw bad("n_shared_experts", "must be ≥ 0 (got \(nSharedExperts))") }
        if scoringFunc != "softmax" { throw bad("scoring_func", "must be \"softmax\" (got \"\(scoringFunc)\")") }
        if !(auxLossAlpha.isFinite && auxLossAlpha >= 0) { throw bad("aux_loss_alpha", "must be a finite number ≥ 0 (got \(auxLossAlpha))") }
        if !seqAux && auxLossAlpha > 0 { throw bad("seq_aux", "false (batch-level aux loss) is not implemented") }
    }

    /// The MoE entries of `config.json` (MiniMind's names; the model is then a `MiniMindForCausalLM`, not a Llama).
    var moeDictionary: [String: Any] {
        [
            "architectures": ["MiniMindForCausalLM"], "model_type": "minimind",
            "use_moe": true, "num_experts_per_tok": numExpertsPerTok, "n_routed_experts": nRoutedExperts,
            "n_shared_experts": nSharedExperts, "scoring_func": scoringFunc, "aux_loss_alpha": Double("\(auxLossAlpha)") ?? Double(auxLossAlpha),
            "seq_aux": seqAux, "norm_topk_prob": normTopkProb,
        ]
    }

    /// Parameters one token uses: everything except the (E − k) routed experts it is not sent to.
    public var activeParameterCount: Int {
        let C = hiddenSize, I = intermediateSize
        let attn = C * (qDim + 2 * kvDim) + qDim * C + 2 * C
        let mlp = useMoe ? (numExpertsPerTok + nSharedExperts) * 3 * C * I + nRoutedExperts * C : 3 * C * I
        return vocabSize * C + numHiddenLayers * (attn + mlp) + C
    }
}

/// MoE state of one batch part, sized for `capN` rows and `layers` layers. Per layer l (stride = capacity):
/// scores [N, E] (softmax of the gate) · idx/w [N, k] (chosen experts, their normalised weights) · denom [N] ·
/// perm [N·k] (sorted position → slot t·k+j, slots grouped by expert in token order) · posOf [N·k] (slot → position) ·
/// offsets [E+1] · gu [N·(k+S), 2I] (gate | up of each routed row in sorted order, then of each shared expert) ·
/// eout [N·k, C] (routed expert outputs, sorted order). Scratch: xg/dE [N·k, C], dw [N·k], ds [N, E].
final class MoEArena {
    let capN: Int, layers: Int
    let E: Int, k: Int, S: Int, C: Int, I: Int
    let floats: FPtr, ints: UnsafeMutablePointer<Int32>
    let scores, w, denom, gu, eout, xg, dE, dw, ds: FPtr
    let idx, perm, posOf, offsets: UnsafeMutablePointer<Int32>
    /// Tokens routed to each expert in the last forward, `[layers, E]`.
    var counts: [Int]
    /// This part's share of the aux loss of the last forward (summed over layers).
    var aux = 0.0

    init(config cfg: ModelConfig, capN n: Int, layers L: Int) {
        capN = n; layers = L
        E = cfg.nRoutedExperts; k = cfg.numExpertsPerTok; S = cfg.nSharedExperts; C = cfg.hiddenSize; I = cfg.intermediateSize
        let fs = [L * n * E, L * n * k, L * n, L * n * (k + S) * 2 * I, L * n * k * C, n * k * C, n * k * C, n * k, n * E]
        floats = .allocate(capacity: fs.reduce(0, +)); floats.initialize(repeating: 0, count: fs.reduce(0, +))
        var p = floats
        var ptrs: [FPtr] = []
        for s in fs { ptrs.append(p); p += s }
        (scores, w, denom, gu, eout, xg, dE, dw, ds) = (ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5], ptrs[6], ptrs[7], ptrs[8])
        let iz = [L * n * k, L * n * k, L * n * k, L * (E + 1)]
        ints = .allocate(capacity: iz.reduce(0, +)); ints.initialize(repeating: 0, count: iz.reduce(0, +))
        idx = ints; perm = ints + iz[0]; posOf = perm + iz[1]; offsets = posOf + iz[2]
        counts = [Int](repeating: 0, count: L * E)
    }
    deinit { floats.deallocate(); ints.deallocate() }
}

extension MiniMindModel {
    /// MoE arena of an activation arena, (re)created for its row capacity. Call before running parts concurrently.
    func ensureMoE(_ a: Activations) {
        guard config.useMoe else { return }
        if let m = a.moe, m.capN >= a.capN { return }
        a.moe = MoEArena(config: config, capN: a.capN, layers: config.numHiddenLayers)
    }

    /// Forward of one layer's MoE MLP over rows x [N, C] (N = B·T, B sequences of length T) into out [N, C];
    /// keeps what backward needs in slot `l` of `m`. With `auxBatch` > 0 returns this part's aux loss
    /// α/auxBatch · Σ_b Σ_i ce_{b,i}·mean_t score_{t,i}, ce_{b,i} = (routing slots of sequence b on expert i)·E/(T·k).
    /// `h` is scratch [N, I].
    @discardableResult
    func moeForward(_ m: MoEArena, layer l: Int, _ lo: LayerOffsets, x: CFPtr, out: FPtr, h: FPtr, N: Int, T: Int, auxBatch: Int) -> Double {
        let cfg = config, E = m.E, k = m.k, S = m.S, C = m.C, I = m.I, n = m.capN
        let P = paramPtr
        let sc = m.scores + l * n * E, idx = m.idx + l * n * k, wt = m.w + l * n * k, den = m.denom + l * n
        let perm = m.perm + l * n * k, posOf = m.posOf + l * n * k, off = m.offsets + l * (E + 1)
        let gu = m.gu + l * n * (k + S) * 2 * I, eout = m.eout + l * n * k * C
        // Gate: scores = softmax(x·Wgᵀ).
        linear_forward(sc, x, P + lo.moeGate, N, C, E)
        for t in 0..<N {
            let r = sc + t * E
            var mx = r[0]
            for e in 1..<E where r[e] > mx { mx = r[e] }
            var s: Float = 0
            for e in 0..<E { r[e] = expf(r[e] - mx); s += r[e] }
            let inv = 1 / s
            for e in 0..<E { r[e] *= inv }
        }
        // Top-k (descending; ties go to the lower index) and normalised weights.
        let norm = k > 1 && cfg.normTopkProb
        for t in 0..<N {
            let r = sc + t * E
            var sum: Float = 0
            for j in 0..<k {
                var best = -1
                for e in 0..<E {
                    var taken = false
                    for jj in 0..<j where idx[t * k + jj] == Int32(e) { taken = true }
                    if !taken && (best < 0 || r[e] > r[best]) { best = e }
                }
                idx[t * k + j] = Int32(best); wt[t * k + j] = r[best]; sum += r[best]
            }
            if norm {
                let d = sum + 1e-20
                den[t] = d
                for j in 0..<k { wt[t * k + j] /= d }
            } else { den[t] = 1 }
        }
        // Group slots by expert (stable in token order).
        var cnt = [Int32](repeating: 0, count: E)
        for s in 0..<(N * k) { cnt[Int(idx[s])] += 1 }
        off[0] = 0
        for e in 0..<E { off[e + 1] = off[e] + cnt[e]; m.counts[l * E + e] = Int(cnt[e]) }
        var fill = (0..<E).map { off[$0] }
        for s in 0..<(N * k) {
            let e = Int(idx[s]), p = Int(fill[e]); fill[e] += 1
            perm[p] = Int32(s); posOf[s] = Int32(p)
        }
        for p in 0..<(N * k) { (m.xg + p * C).update(from: x + (Int(perm[p]) / k) * C, count: C) }
        // One product per expert over its rows.
        for e in 0..<E {
            let r0 = Int(off[e]), ne = Int(off[e + 1]) - r0
            if ne == 0 { continue }
            let W = P + lo.experts[e], g = gu + r0 * 2 * I
            linear_forward(g, m.xg + r0 * C, W, ne, C, 2 * I)
            swiglu_forward_fused(h, g, ne, I)
            linear_forward(eout + r0 * C, h, W + 2 * I * C, ne, I, C)
        }
        // out[t] = Σ_j w[t,j]·eout[slot (t,j)] + Σ_s shared_s(x[t]).
        for t in 0..<N {
            let o = out + t * C
            o.update(repeating: 0, count: C)
            for j in 0..<k {
                let wj = wt[t * k + j], src = eout + Int(posOf[t * k + j]) * C
                for c in 0..<C { o[c] += wj * src[c] }
            }
        }
        for s in 0..<S {
            let W = P + lo.experts[E + s], g = gu + (N * k + s * N) * 2 * I
            linear_forward(g, x, W, N, C, 2 * I)
            swiglu_forward_fused(h, g, N, I)
            linear_forward(out, h, W + 2 * I * C, N, I, C, accumulate: true)
        }
        guard auxBatch > 0, cfg.auxLossAlpha > 0 else { return 0 }
        let B = N / T
        var total = 0.0
        var c = [Double](repeating: 0, count: E), ms = [Double](repeating: 0, count: E)
        for b in 0..<B {
            for e in 0..<E { c[e] = 0; ms[e] = 0 }
            for t in (b * T)..<((b + 1) * T) {
                for j in 0..<k { c[Int(idx[t * k + j])] += 1 }
                for e in 0..<E { ms[e] += Double(sc[t * E + e]) }
            }
            for e in 0..<E { total += c[e] * Double(E) / Double(T * k) * ms[e] / Double(T) }
        }
        return Double(cfg.auxLossAlpha) * total / Double(auxBatch)
    }

    /// Backward of `moeForward` (slot `l`): from dout [N, C] WRITES dx [N, C]; adds weight gradients into `G` unless
    /// `frozenBase`. The aux loss enters with weight `auxScale` (∂objective/∂aux; 0 = none), normalised by `auxBatch`.
    /// Scratch: h [N, I], dgu [N, 2I].
    func moeBackward(_ m: MoEArena, layer l: Int, _ lo: LayerOffsets, x: CFPtr, dout: CFPtr, dx: FPtr, G: FPtr,
                     h: FPtr, dgu: FPtr, N: Int, T: Int, auxBatch: Int, auxScale: Float) {
        let cfg = config, E = m.E, k = m.k, S = m.S, C = m.C, I = m.I, n = m.capN
        let P = paramPtr, fz = frozenBase
        let sc = m.scores + l * n * E, idx = m.idx + l * n * k, wt = m.w + l * n * k, den = m.denom + l * n
        let perm = m.perm + l * n * k, posOf = m.posOf + l * n * k, off = m.offsets + l * (E + 1)
        let gu = m.gu + l * n * (k + S) * 2 * I, eout = m.eout + l * n * k * C
        // Shared experts (dx = Σ_s ∂shared_s).
        if S == 0 { dx.update(repeating: 0, count: N * C) }
        for s in 0..<S {
            let W = P + lo.experts[E + s], g = gu + (N * k + s * N) * 2 * I
            swiglu_forward_fused(h, g, N, I)
            if !fz { sgemm(true, false, C, I, N, 1, dout, C, h, I, 1, G + lo.experts[E + s] + 2 * I * C, I) }
            sgemm(false, false, N, I, C, 1, dout, C, W + 2 * I * C, I, 0, h, I)
            swiglu_backward_fused(dgu, h, g, N, I)
            matmul_backward(dx, G + lo.experts[E + s], dgu, x, W, N, C, 2 * I, accumulate: s > 0, weights: !fz)
        }
        // Routed: dw[slot] = dout[t]·eout[slot]; dE[pos] = w[slot]·dout[t].
        for s in 0..<(N * k) {
            let t = s / k, p = Int(posOf[s]), d = dout + t * C
            m.dw[s] = cblas_sdot(Int32(C), d, 1, eout + p * C, 1)
            let wj = wt[s], de = m.dE + p * C
            for c in 0..<C { de[c] = wj * d[c] }
        }
        for p in 0..<(N * k) { (m.xg + p * C).update(from: x + (Int(perm[p]) / k) * C, count: C) }
        for e in 0..<E {
            let r0 = Int(off[e]), ne = Int(off[e + 1]) - r0
            if ne == 0 { continue }
            let W = P + lo.experts[e], g = gu + r0 * 2 * I, de = m.dE + r0 * C
            swiglu_forward_fused(h, g, ne, I)
            if !fz { sgemm(true, false, C, I, ne, 1, de, C, h, I, 1, G + lo.experts[e] + 2 * I * C, I) }
            sgemm(false, false, ne, I, C, 1, de, C, W + 2 * I * C, I, 0, h, I)
            swiglu_backward_fused(dgu, h, g, ne, I)
            matmul_backward(de, G + lo.experts[e], dgu, m.xg + r0 * C, W, ne, C, 2 * I, weights: !fz)   // dE ← d xg
        }
        for p in 0..<(N * k) {
            let d = dx + (Int(perm[p]) / k) * C, src = m.dE + p * C
            for c in 0..<C { d[c] += src[c] }
        }
        // Gate: ∂scores from the weights (through the top-k normalisation) and from the aux loss, then softmax.
        let ds = m.ds
        ds.update(repeating: 0, count: N * E)
        let norm = k > 1 && cfg.normTopkProb
        for t in 0..<N {
            var dot: Float = 0
            if norm { for j in 0..<k { dot += m.dw[t * k + j] * wt[t * k + j] } }
            for j in 0..<k {
                let v = norm ? (m.dw[t * k + j] - dot) / den[t] : m.dw[t * k + j]
                ds[t * E + Int(idx[t * k + j])] += v
            }
        }
        if auxScale != 0 && cfg.auxLossAlpha > 0 && auxBatch > 0 {
            let B = N / T
            let base = auxScale * cfg.auxLossAlpha / Float(auxBatch) * Float(E) / Float(T * k) / Float(T)
            var c = [Float](repeating: 0, count: E)
            for b in 0..<B {
                for e in 0..<E { c[e] = 0 }
                for t in (b * T)..<((b + 1) * T) { for j in 0..<k { c[Int(idx[t * k + j])] += 1 } }
                for t in (b * T)..<((b + 1) * T) { for e in 0..<E { ds[t * E + e] += base * c[e] } }
            }
        }
        for t in 0..<N {
            let r = ds + t * E, s = sc + t * E
            var dot: Float = 0
            for e in 0..<E { dot += r[e] * s[e] }
            for e in 0..<E { r[e] = s[e] * (r[e] - dot) }
        }
        if !fz { sgemm(true, false, E, C, N, 1, ds, E, x, C, 1, G + lo.moeGate, C) }
        sgemm(false, false, N, C, E, 1, ds, E, P + lo.moeGate, C, 1, dx, C)
    }

    /// Tokens routed to each expert in the last `forward`, `[num_hidden_layers, n_routed_experts]` summed over the
    /// batch parts (each token counts once per chosen expert). Empty for a dense model.
    public var lastExpertCounts: [[Int]] {
        guard config.useMoe, !lastParts.isEmpty else { return [] }
        let E = config.nRoutedExperts
        var out = [[Int]](repeating: [Int](repeating: 0, count: E), count: config.numHiddenLayers)
        for a in partActivations.prefix(lastParts.count) {
            guard let m = a.moe else { continue }
            for l in 0..<config.numHiddenLayers { for e in 0..<E { out[l][e] += m.counts[l * E + e] } }
        }
        return out
    }
}

/// The MoE fields of a `ModelConfig` as training options carry them (MiniMind's names and defaults).
public struct MoESettings: Codable, Sendable, Equatable, CustomStringConvertible {
    public var useMoe = false
    public var numExpertsPerTok = 2
    public var nRoutedExperts = 4
    public var nSharedExperts = 1
    public var scoringFunc = "softmax"
    public var auxLossAlpha: Float = 0.1
    public var seqAux = true
    public var normTopkProb = true
    /// `intermediate_size` override (each expert's, or the dense MLP's); nil = MiniMind's rule from hidden_size.
    /// Lets a MoE model match a dense one in active parameters.
    public var intermediateSize: Int? = nil
    public init() {}
    /// Copies the fields into `config` (all of them, so a dense config keeps MiniMind's MoE defaults).
    public func apply(to c: inout ModelConfig) {
        c.useMoe = useMoe; c.numExpertsPerTok = numExpertsPerTok; c.nRoutedExperts = nRoutedExperts
        c.nSharedExperts = nSharedExperts; c.scoringFunc = scoringFunc; c.auxLossAlpha = auxLossAlpha
        c.seqAux = seqAux; c.normTopkProb = normTopkProb
        if let i = intermediateSize { c.intermediateSize = i }
    }
    /// Range checks of the command-line values (`--n-routed-experts` …), for a dense model too (the values are still
    /// copied into its config and size per-expert counters); top-k against the expert count only with `useMoe`.
    /// Throws `ModelError` naming the option.
    public func check() throws {
        func bad(_ m: String) -> ModelError { ModelError(m) }
        if !(1...1024).contains(nRoutedExperts) { throw bad("--n-routed-experts must be in 1…1024 (got \(nRoutedExperts))") }
        if useMoe && !(1...nRoutedExperts).contains(numExpertsPerTok) {
            throw bad("--num-experts-per-tok must be in 1…--n-routed-experts \(nRoutedExperts) (got \(numExpertsPerTok))") }
        if !(0...1024).contains(nSharedExperts) { throw bad("--n-shared-experts must be in 0…1024 (got \(nSharedExperts))") }
        if !(auxLossAlpha.isFinite && auxLossAlpha >= 0) { throw bad("--aux-loss-alpha must be a finite number ≥ 0 (got \(auxLossAlpha))") }
        if let i = intermediateSize, i < 1 { throw bad("--intermediate-size must be ≥ 1 (got \(i))") }
    }
    public var description: String {
        useMoe ? "moe: \(nRoutedExperts) routed experts, top-\(numExpertsPerTok), \(nSharedExperts) shared, \(scoringFunc), aux α \(auxLossAlpha)\(seqAux ? " (seq)" : ""), norm_topk_prob \(normTopkProb)" : "dense"
    }
}

/// Formats tokens per expert `[layers][E]` as "l0 [a b c d] l1 [...]" plus the max/mean imbalance over all layers.
public func formatExpertCounts(_ counts: [[Int]]) -> String {
    guard !counts.isEmpty else { return "" }
    var worst = 0.0
    for row in counts where !row.isEmpty {
        let mean = Double(row.reduce(0, +)) / Double(row.count)
        if mean > 0 { worst = max(worst, Double(row.max()!) / mean) }
    }
    return counts.enumerated().map { "l\($0.offset) [\($0.element.map(String.init).joined(separator: " "))]" }.joined(separator: " ")
        + String(format: " (max/mean %.2f)", worst)
}
