// Inference: KV cache, incremental decoding and MiniMind-style sampling (temperature, top-k, top-p, repetition penalty).
import Foundation
import CBLAS

/// Keys and values of every layer for one sequence: k/v `[L, maxLength, kvDim]` (post-RoPE keys), plus the decoding
/// scratch (grown on demand, reused across steps so a decode step allocates nothing but its returned logits).
public final class KVCache {
    public let maxLength: Int
    /// Number of positions already stored.
    public internal(set) var length = 0
    let layers: Int, kvDim: Int
    let k: FPtr, v: FPtr
    var scratch: FPtr? = nil
    var scratchCapacity = 0
    public init(config: ModelConfig, maxLength: Int) {
        self.maxLength = maxLength; layers = config.numHiddenLayers; kvDim = config.kvDim
        let n = layers * maxLength * kvDim
        k = .allocate(capacity: n); k.initialize(repeating: 0, count: n)
        v = .allocate(capacity: n); v.initialize(repeating: 0, count: n)
    }
    deinit { k.deallocate(); v.deallocate(); scratch?.deallocate() }
    /// Forgets every position (keeps the memory).
    public func reset() { length = 0 }
    /// Drops positions `n…` (n ≤ length), e.g. to reuse a shared prompt prefix.
    public func truncate(to n: Int) { precondition(n >= 0 && n <= length, "KVCache.truncate: \(n) outside [0, \(length)]"); length = n }

    /// Scratch of `forwardNewTokens` for `m` rows: residual stream, norm output, sublayer output [m,C] · rstd [m] ·
    /// qkv [m, QD+2·KVD] · attention output [m,QD] · gate|up [m,2I] · hidden [m,I] · scores `scoreFloats` (the
    /// attention's per-worker score blocks).
    func scratchPointers(rows m: Int, config c: ModelConfig, scoreFloats: Int) -> [FPtr] {
        let sizes = [m * c.hiddenSize, m * c.hiddenSize, m * c.hiddenSize, m, m * (c.qDim + 2 * c.kvDim), m * c.qDim,
                     m * 2 * c.intermediateSize, m * c.intermediateSize, scoreFloats]
        let n = sizes.reduce(0, +)
        if n > scratchCapacity {
            scratch?.deallocate()
            scratch = .allocate(capacity: n); scratch!.initialize(repeating: 0, count: n)
            scratchCapacity = n
        }
        var out: [FPtr] = [], cur = scratch!
        for s in sizes { out.append(cur); cur += s }
        return out
    }
}

extension MiniMindModel {
    /// Runs `tokens` (≥ 1, each in [0, V)) at positions `cache.length …`, appends their keys/values to `cache` and
    /// returns the logits `[V]` of the last token. Same math as `forward`, one sequence, attention over the cache.
    /// - Precondition: `cache.length + tokens.count ≤ cache.maxLength`.
    public func forwardIncremental(tokens: [Int32], cache: KVCache) -> [Float] {
        var logits = [Float](repeating: 0, count: config.vocabSize)
        logits.withUnsafeMutableBufferPointer { forwardIncremental(tokens: tokens, cache: cache, logits: $0) }
        return logits
    }

    /// As `forwardIncremental(tokens:cache:)`, writing the logits `[V]` into `logits` (count V). Prefill (several
    /// tokens) and single-token decode are the same `forwardNewTokens` step with one sequence; the weight products'
    /// kernel follows the row count (`linear_forward`). Logits use the untied lm_head when the model has one.
    public func forwardIncremental(tokens: [Int32], cache: KVCache, logits out: UnsafeMutableBufferPointer<Float>) {
        let cfg = config, M = tokens.count, p0 = cache.length
        precondition(M > 0 && p0 + M <= cache.maxLength, "forwardIncremental: \(p0)+\(M) positions exceed the cache (\(cache.maxLength))")
        precondition(out.count == cfg.vocabSize, "forwardIncremental: logits buffer has \(out.count) floats, expected \(cfg.vocabSize)")
        for (i, id) in tokens.enumerated() { precondition(id >= 0 && Int(id) < cfg.vocabSize, "forwardIncremental: token[\(i)] = \(id) outside [0, \(cfg.vocabSize))") }
        tokens.withUnsafeBufferPointer { ids in
            forwardNewTokens(ids.baseAddress!, rowStart: [0, M], caches: [cache], logits: out.baseAddress!)
        }
    }

    /// One decoding step for `B = tokens.count` independent sequences (continuous batching): token b runs at
    /// position `caches[b].length` of its own cache, which grows by one. The B rows go through each layer together
    /// (`forwardNewTokens`: the weights are read once per step instead of once per sequence); attention runs per
    /// sequence, the sequences spread over the threads. Writes the logits `[B, V]` into `logits` (count B·V).
    /// Same math as `forward`.
    /// - Precondition: `caches.count == B ≥ 1`, distinct caches, each with room for one more position.
    public func forwardDecodeBatch(tokens: [Int32], caches: [KVCache], logits out: UnsafeMutableBufferPointer<Float>) {
        let cfg = config, B = tokens.count, V = cfg.vocabSize
        precondition(B > 0 && caches.count == B, "forwardDecodeBatch: \(B) tokens for \(caches.count) caches")
        precondition(out.count == B * V, "forwardDecodeBatch: logits buffer has \(out.count) floats, expected \(B * V)")
        precondition(Set(caches.map { ObjectIdentifier($0) }).count == B, "forwardDecodeBatch: the same cache is given twice")
        for (b, id) in tokens.enumerated() {
            precondition(id >= 0 && Int(id) < V, "forwardDecodeBatch: token[\(b)] = \(id) outside [0, \(V))")
            precondition(caches[b].length < caches[b].maxLength, "forwardDecodeBatch: cache \(b) is full (\(caches[b].maxLength))")
        }
        tokens.withUnsafeBufferPointer { ids in
            forwardNewTokens(ids.baseAddress!, rowStart: Array(0...B), caches: caches, logits: out.baseAddress!)
        }
    }
}


/// Sampling settings, as MiniMind's `generate` except for the repetition penalty, which follows Hugging Face's
/// `RepetitionPenaltyLogitsProcessor` (see `Sampler.applyRepetitionPenalty`; MiniMind divides every seen logit,
/// which makes a seen token with a negative logit *more* likely). Order: repetition penalty on every id already in
/// the sequence (prompt included), then logits /= temperature, then top-k and top-p (nucleus: keep the smallest
/// prefix of the sorted distribution whose mass reaches top_p, always ≥ 1 token) filter, then a multinomial draw.
/// `temperature == 0` is greedy (argmax after the repetition penalty).
public struct SamplingOptions: Sendable {
    public var maxNewTokens: Int = 512
    public var temperature: Float = 0.85
    /// 1.0 disables.
    public var topP: Float = 0.85
    /// 0 disables.
    public var topK: Int = 0
    /// 1.0 disables; > 1 discourages ids already in the sequence, < 1 encourages them (Hugging Face's rule).
    public var repetitionPenalty: Float = 1.0
    public var seed: UInt64 = 0
    /// Generation stops (without yielding it) when this id is produced; nil = never.
    public var eosTokenId: Int32? = 2
    /// Further ids that stop generation like `eosTokenId` (e.g. the model's `eos_token_id` list, as transformers stops
    /// at every id of it).
    public var stopTokenIds: [Int32] = []
    /// Whether `id` ends generation.
    @inline(__always) public func stops(at id: Int32) -> Bool { id == eosTokenId || (!stopTokenIds.isEmpty && stopTokenIds.contains(id)) }
    public init(maxNewTokens: Int = 512, temperature: Float = 0.85, topP: Float = 0.85, topK: Int = 0,
                repetitionPenalty: Float = 1.0, seed: UInt64 = 0, eosTokenId: Int32? = 2) {
        self.maxNewTokens = maxNewTokens; self.temperature = temperature; self.topP = topP; self.topK = topK
        self.repetitionPenalty = repetitionPenalty; self.seed = seed; self.eosTokenId = eosTokenId
    }
}

extension SamplingOptions {
    /// Validates the options shared by `generate`, `chat` and `serve`; errors (`ModelError`) name the command-line
    /// option. With `vocabSize`, the eos id must be an id of the model; with `maxPositions` and `promptLength`, the
    /// prompt must fit `max_position_embeddings` and so must prompt + `maxNewTokens` (bounds the KV-cache allocation).
    public func validate(vocabSize: Int? = nil, maxPositions: Int? = nil, promptLength: Int? = nil) throws {
        if !(temperature.isFinite && temperature >= 0) {
            throw ModelError("--temperature must be a finite number ≥ 0 (got \(temperature))") }
        if !(topP > 0 && topP <= 1) { throw ModelError("--top-p must be in (0, 1] (got \(topP))") }
        if topK < 0 { throw ModelError("--top-k must be ≥ 0 (got \(topK))") }
        if !(repetitionPenalty.isFinite && repetitionPenalty > 0) {
            throw ModelError("--repetition-penalty must be a finite number > 0 (got \(repetitionPenalty))") }
        if maxNewTokens <= 0 { throw ModelError("--max-new-tokens must be > 0 (got \(maxNewTokens))") }
        if let v = vocabSize, let e = eosTokenId, e < 0 || Int(e) >= v {
            throw ModelError("--eos-id \(e) is not an id of the model (vocab_size \(v))") }
        if let v = vocabSize, let e = stopTokenIds.first(where: { $0 < 0 || Int($0) >= v }) {
            throw ModelError("stop id \(e) is not an id of the model (vocab_size \(v))") }
        if let P = maxPositions, let n = promptLength {
            if n > P { throw ModelError("the prompt has \(n) tokens, more than the model's max_position_embeddings \(P)") }
            if maxNewTokens > P - n {
                throw ModelError("--max-new-tokens \(maxNewTokens) exceeds max_position_embeddings \(P) − prompt length \(n) = \(P - n)") }
        }
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
        if options.stops(at: id) { finished = true; return nil }
        sequence.append(id); generated.append(id); pending = [id]
        return id
    }
}

/// The sampling rule as a pure function (see `SamplingOptions`).
public enum Sampler {
    /// Hugging Face's repetition penalty (`transformers` `RepetitionPenaltyLogitsProcessor`, from Keskar et al. 2019,
    /// CTRL §4.1): for every distinct id in `history`, a logit `< 0` is multiplied by `penalty` and any other logit is
    /// divided by it, so with `penalty > 1` every seen id loses probability whatever the sign of its logit.
    /// Ids outside `[0, logits.count)` are ignored. `logits` is one row `[V]`, updated in place; `penalty == 1` is a no-op.
    public static func applyRepetitionPenalty(_ logits: UnsafeMutableBufferPointer<Float>, history: [Int32], penalty: Float) {
        guard penalty != 1 else { return }
        let V = logits.count
        var seen = [Bool](repeating: false, count: V)
        seen.withUnsafeMutableBufferPointer { seen in
            for id in history where id >= 0 && Int(id) < V && !seen[Int(id)] {
                let j = Int(id)
                seen[j] = true
                logits[j] = logits[j] < 0 ? logits[j] * penalty : logits[j] / penalty
            }
        }
    }

    public static func sample(logits raw: [Float], history: [Int32], options o: SamplingOptions, rng: inout SplitMix64) -> Int32 {
        var logits = raw
        let V = logits.count
        // A diverged model can produce NaN/±inf logits: clamp them (NaN → lowest) so sampling stays defined instead of
        // trapping on an empty candidate set.
        if !logits.allSatisfy({ $0.isFinite }) {
            for j in 0..<V where !logits[j].isFinite {
                logits[j] = logits[j] == .infinity ? Float.greatestFiniteMagnitude / 4 : -Float.greatestFiniteMagnitude / 4
            }
        }
        logits.withUnsafeMutableBufferPointer { applyRepetitionPenalty($0, history: history, penalty: o.repetitionPenalty) }
        if o.temperature <= 0 {
            var best = 0
            for j in 1..<V where logits[j] > logits[best] { best = j }
            return Int32(best)
        }
        let invT = 1 / (o.temperature + 1e-9)
        for j in 0..<V { logits[j] *= invT }
        if o.topK <= 0 && o.topP > 0 && o.topP < 1 && V > 64 {
            return sampleNucleus(logits, topP: Double(o.topP), rng: &rng)
        }
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

    /// Top-p without top-k, the same rule as the general path without sorting the whole vocabulary: the nucleus
    /// (sorted prefix whose mass first exceeds top_p) lies inside {j : p_j ≥ t} as soon as that set's mass exceeds
    /// top_p, so only that set is sorted; t starts at the largest probability and shrinks 16× per pass.
    static func sampleNucleus(_ logits: [Float], topP: Double, rng: inout SplitMix64) -> Int32 {
        let V = logits.count
        var mx = -Float.infinity
        for j in 0..<V where logits[j] > mx { mx = logits[j] }
        var p = [Double](repeating: 0, count: V)
        var total = 0.0
        for j in 0..<V { let e = exp(Double(logits[j] - mx)); p[j] = e; total += e }
        var t = 1.0
        var cand: [Int] = []
        while true {
            cand.removeAll(keepingCapacity: true)
            var mass = 0.0
            for j in 0..<V where p[j] >= t { cand.append(j); mass += p[j] }
            if mass / total > topP || cand.count == V || t == 0 { break }
            t = t < 1e-300 ? 0 : t / 16
        }
        cand.sort { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        var cum = 0.0, n = 0
        while n < cand.count {
            if n > 0 && cum > topP { break }
            cum += p[cand[n]] / total; n += 1
        }
        var sum = 0.0
        for i in 0..<n { sum += p[cand[i]] }
        let u = Double(rng.next() >> 11) * (1.0 / 9_007_199_254_740_992.0) * sum
        var acc = 0.0
        for i in 0..<n { acc += p[cand[i]]; if u < acc { return Int32(cand[i]) } }
        guard n > 0 else { return Int32(logits.indices.max { logits[$0] < logits[$1] } ?? 0) }
        return Int32(cand[n - 1])
    }
}
