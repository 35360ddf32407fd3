// Inference: KV cache, incremental decoding and MiniMind-style sampling (temperature, top-k, top-p, repetition penalty).
import Foundation
import CBLAS

/// Keys and values of every layer for one sequence: k/v `[L, maxLength, kvDim]` (post-RoPE keys).
public final class KVCache {
    public let maxLength: Int
    /// Number of positions already stored.
    public internal(set) var length = 0
    let layers: Int, kvDim: Int
    let k: FPtr, v: FPtr
    public init(config: ModelConfig, maxLength: Int) {
        self.maxLength = maxLength; layers = config.numHiddenLayers; kvDim = config.kvDim
        let n = layers * maxLength * kvDim
        k = .allocate(capacity: n); k.initialize(repeating: 0, count: n)
        v = .allocate(capacity: n); v.initialize(repeating: 0, count: n)
    }
    deinit { k.deallocate(); v.deallocate() }
    /// Forgets every position (keeps the memory).
    public func reset() { length = 0 }
}

extension MiniMindModel {
    /// Runs `tokens` (≥ 1, each in [0, V)) at positions `cache.length …`, appends their keys/values to `cache` and
    /// returns the logits `[V]` of the last token. Same math as `forward`, one sequence, attention over the cache.
    /// - Precondition: `cache.length + tokens.count ≤ cache.maxLength`.
    public func forwardIncremental(tokens: [Int32], cache: KVCache) -> [Float] {
        let cfg = config, M = tokens.count, p0 = cache.length
        precondition(M > 0 && p0 + M <= cache.maxLength, "forwardIncremental: \(p0)+\(M) positions exceed the cache (\(cache.maxLength))")
        for (i, id) in tokens.enumerated() { precondition(id >= 0 && Int(id) < cfg.vocabSize, "forwardIncremental: token[\(i)] = \(id) outside [0, \(cfg.vocabSize))") }
        let C = cfg.hiddenSize, QD = cfg.qDim, KVD = cfg.kvDim, I = cfg.intermediateSize, V = cfg.vocabSize
        let H = cfg.numAttentionHeads, KVH = cfg.numKeyValueHeads, hd = cfg.headDim, rep = H / KVH, eps = cfg.rmsNormEps
        let total = p0 + M
        ensureRope(total)
        let scale = 1 / Float(hd).squareRoot()
        // Scratch: x/ln/tmp [M,C], rstd [M], q/y [M,QD], g/u [M,I], scores [M, total].
        let sizes = [M * C, M * C, M * C, M, M * QD, M * QD, M * I, M * I, M * total]
        let arena = FPtr.allocate(capacity: sizes.reduce(0, +))
        defer { arena.deallocate() }
        var ptrs: [FPtr] = []
        var cur = arena
        for n in sizes { ptrs.append(cur); cur += n }
        let (x, ln, tmp, rstd, q, y, g, u, S) = (ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5], ptrs[6], ptrs[7], ptrs[8])
        var logits = [Float](repeating: 0, count: V)
        let P = paramPtr, mx = cache.maxLength
        let cosT = rope.cos, sinT = rope.sin
        tokens.withUnsafeBufferPointer { ids in
            embedding_forward(x, ids.baseAddress!, P + embedOffset, M, C)
            for l in 0..<cfg.numHiddenLayers {
                let lo = layerOffsets[l]
                let kl = cache.k + l * mx * KVD, vl = cache.v + l * mx * KVD
                rmsnorm_forward(ln, rstd, x, P + lo.ln1, M, C, eps)
                matmul_forward(q, ln, P + lo.q, M, C, QD)
                matmul_forward(kl + p0 * KVD, ln, P + lo.k, M, C, KVD)
                matmul_forward(vl + p0 * KVD, ln, P + lo.v, M, C, KVD)
                rope_apply(q, cosT, sinT, 1, M, H, hd, pos0: p0)
                rope_apply(kl + p0 * KVD, cosT, sinT, 1, M, KVH, hd, pos0: p0)
                for h in 0..<H {
                    let kp = kl + (h / rep) * hd, vp = vl + (h / rep) * hd
                    sgemm(false, true, M, total, hd, scale, q + h * hd, QD, kp, KVD, 0, S, total)
                    for i in 0..<M {
                        let row = S + i * total, valid = p0 + i + 1
                        var rmax = -Float.infinity
                        for j in 0..<valid where row[j] > rmax { rmax = row[j] }
                        var sum: Float = 0
                        for j in 0..<valid { let e = expf(row[j] - rmax); row[j] = e; sum += e }
                        let inv = 1 / sum
                        for j in 0..<valid { row[j] *= inv }
                        for j in valid..<total { row[j] = 0 }
                    }
                    sgemm(false, false, M, hd, total, 1, S, total, vp, KVD, 0, y + h * hd, QD)
                }
                matmul_forward(tmp, y, P + lo.o, M, QD, C)
                residual_forward(x, x, tmp, M * C)
                rmsnorm_forward(ln, rstd, x, P + lo.ln2, M, C, eps)
                if cfg.useMoe { moeInfer(lo, x: ln, out: tmp, M: M) } else {
                matmul_forward(g, ln, P + lo.gate, M, C, I)
                matmul_forward(u, ln, P + lo.up, M, C, I)
                swiglu_forward(g, g, u, M * I)
                matmul_forward(tmp, g, P + lo.down, M, I, C)
                }
                residual_forward(x, x, tmp, M * C)
            }
            rmsnorm_forward(ln, rstd, x + (M - 1) * C, P + normOffset, 1, C, eps)
            logits.withUnsafeMutableBufferPointer { lb in matmul_forward(lb.baseAddress!, ln, P + embedOffset, 1, C, V) }
        }
        cache.length = total
        return logits
    }
}

/// Sampling settings, as MiniMind's `generate`: repetition penalty divides the logits of every id already in the
/// sequence (prompt included), then logits /= temperature, then top-k and top-p (nucleus: keep the smallest
/// prefix of the sorted distribution whose mass reaches top_p, always ≥ 1 token) filter, then a multinomial draw.
/// `temperature == 0` is greedy (argmax after the repetition penalty).
public struct SamplingOptions: Sendable {
    public var maxNewTokens: Int = 512
    public var temperature: Float = 0.85
    /// 1.0 disables.
    public var topP: Float = 0.85
    /// 0 disables.
    public var topK: Int = 0
    /// 1.0 disables.
    public var repetitionPenalty: Float = 1.0
    public var seed: UInt64 = 0
    /// Generation stops (without yielding it) when this id is produced; nil = never.
    public var eosTokenId: Int32? = 2
    public init(maxNewTokens: Int = 512, temperature: Float = 0.85, topP: Float = 0.85, topK: Int = 0,
                repetitionPenalty: Float = 1.0, seed: UInt64 = 0, eosTokenId: Int32? = 2) {
        self.maxNewTokens = maxNewTokens; self.temperature = temperature; self.topP = topP; self.topK = topK
        self.repetitionPenalty = repetitionPenalty; self.seed = seed; self.eosTokenId = eosTokenId
    }
}

/// Yields generated ids one at a time (a `Sequence`), decoding incrementally with a KV cache: the prompt is run
/// once, then one token per step. `lastLogits` holds the raw logits `[V]` the last id was chosen from.
public final class TokenGenerator: Sequence, IteratorProtocol {
    public let model: MiniMindModel
    public let options: SamplingOptions
    public let cache: KVCache
    public private(set) var generated: [Int32] = []
    public private(set) var lastLogits: [Float] = []
    public private(set) var finished = false
    private var sequence: [Int32]
    private var pending: [Int32]
    private var rng: SplitMix64

    /// - Precondition: `promptIds` non-empty, ids in [0, V).
    public init(model: MiniMindModel, promptIds: [Int32], options: SamplingOptions) {
        precondition(!promptIds.isEmpty, "TokenGenerator: empty prompt")
        self.model = model; self.options = options
        cache = KVCache(config: model.config, maxLength: promptIds.count + Swift.max(options.maxNewTokens, 0))
        sequence = promptIds; pending = promptIds
        rng = SplitMix64(seed: options.seed)
    }

    public func next() -> Int32? {
        if finished || generated.count >= options.maxNewTokens { finished = true; return nil }
        lastLogits = model.forwardIncremental(tokens: pending, cache: cache)
        let id = Sampler.sample(logits: lastLogits, history: sequence, options: options, rng: &rng)
        if let eos = options.eosTokenId, id == eos { finished = true; return nil }
        sequence.append(id); generated.append(id); pending = [id]
        return id
    }
}

/// MiniMind's sampling rule as a pure function (see `SamplingOptions`).
public enum Sampler {
    public static func sample(logits raw: [Float], history: [Int32], options o: SamplingOptions, rng: inout SplitMix64) -> Int32 {
        var logits = raw
        let V = logits.count
        if o.repetitionPenalty != 1 {
            var seen = [Bool](repeating: false, count: V)
            for id in history where id >= 0 && Int(id) < V && !seen[Int(id)] { seen[Int(id)] = true; logits[Int(id)] /= o.repetitionPenalty }
        }
        if o.temperature <= 0 {
            var best = 0
            for j in 1..<V where logits[j] > logits[best] { best = j }
            return Int32(best)
        }
        let invT = 1 / (o.temperature + 1e-9)
        for j in 0..<V { logits[j] *= invT }
        var order = Array(0..<V)
        order.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        var keep = V
        if o.topK > 0 && o.topK < V {
            let kth = logits[order[o.topK - 1]]
            keep = o.topK
            while keep < V && logits[order[keep]] == kth { keep += 1 }   // ties with the k-th value stay (HF)
        }
        let mx = logits[order[0]]
        var probs = [Double](repeating: 0, count: keep)
        var sum = 0.0
        for i in 0..<keep { probs[i] = exp(Double(logits[order[i]] - mx)); sum += probs[i] }
        if o.topP > 0 && o.topP < 1 {
            var cum = 0.0, n = 0
            while n < keep {
                if n > 0 && cum > Double(o.topP) { break }
                cum += probs[n] / sum; n += 1
            }
            keep = n
            sum = probs[0..<keep].reduce(0, +)
        }
        let u = Double(rng.next() >> 11) * (1.0 / 9_007_199_254_740_992.0) * sum
        var acc = 0.0
        for i in 0..<keep { acc += probs[i]; if u < acc { return Int32(order[i]) } }
        return Int32(order[keep - 1])
    }
}
