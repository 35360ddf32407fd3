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

    /// Scratch for `m` rows: x/ln/tmp [m,C] · rstd [m] · qkv [m, QD+2·KVD] · y [m,QD] · gu [m,2I] · h [m,I] ·
    /// scores `scoreFloats` (the attention's per-worker score blocks).
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

/// Query rows per task of `attention_prefill`.
let prefillAttentionBlock = 32

/// Causal attention of M new query rows at positions p0…p0+M−1 over the cached keys/values 0…p0+M−1 (GQA: head h
/// reads KV head h / (H/KVH)); k/v cache rows `ldkv` apart. Row layout (`columns == false`): q rows `ldq` apart (head h
/// at column h·hd), y rows `ldy` apart. Transposed layout (`columns == true`, `prefillTransposed`): q and y are
/// `[H·hd, M]` (head h = rows h·hd ..< (h+1)·hd, column i = position p0 + i); `ldq`/`ldy` are ignored.
/// Tasks (KV group, block of `prefillAttentionBlock` query rows; keys past the block's last row are skipped) run on
/// `workers` threads with OpenBLAS at one thread; `scratch` holds workers·min(M, block)·(p0+M) floats.
func attention_prefill(_ y: FPtr, _ q: CFPtr, _ k: CFPtr, _ v: CFPtr, _ scratch: FPtr, workers: Int,
                       _ M: Int, _ p0: Int, _ h: Int, _ kvh: Int, _ hd: Int, ldq: Int = 0, ldkv: Int, ldy: Int = 0,
                       columns: Bool = false) {
    let rep = h / kvh, blk = Swift.min(M, prefillAttentionBlock), blocks = (M + blk - 1) / blk
    let scale = 1 / Float(hd).squareRoot()
    let per = blk * (p0 + M)
    // Last blocks first: they have the most keys (better balance with dynamic scheduling).
    parallelTasks(kvh * blocks, workers: workers) { task, worker in
        let S = scratch + worker * per
        let g = task % kvh, bi = blocks - 1 - task / kvh
        let r0 = bi * blk, r1 = Swift.min(M, r0 + blk), rows = r1 - r0, keys = p0 + r1
        let kp = k + g * hd, vp = v + g * hd
        for hi in (g * rep)..<((g + 1) * rep) {
            // S[rows, keys] = scale · Q_blk · Kᵀ (transposed layout: Q_blkᵀ = q[hi·hd ..< (hi+1)·hd, r0 ..< r1])
            if columns {
                sgemm(true, true, rows, keys, hd, scale, q + hi * hd * M + r0, M, kp, ldkv, 0, S, keys)
            } else {
                sgemm(false, true, rows, keys, hd, scale, q + r0 * ldq + hi * hd, ldq, kp, ldkv, 0, S, keys)
            }
            for i in 0..<rows {
                let row = S + i * keys, valid = p0 + r0 + i + 1
                let mx = maxOf(row, valid)
                let inv = 1 / expShiftSum(row, valid, shift: mx)
                for j in 0..<valid { row[j] *= inv }
                for j in valid..<keys { row[j] = 0 }
            }
            if columns {   // y_blkᵀ[hd, rows] = Vᵀ · Sᵀ
                sgemm(true, true, hd, rows, keys, 1, vp, ldkv, S, keys, 0, y + hi * hd * M + r0, M)
            } else {
                sgemm(false, false, rows, hd, keys, 1, S, keys, vp, ldkv, 0, y + r0 * ldy + hi * hd, ldy)
            }
        }
    }
}

extension MiniMindModel {
    /// The MLP of one layer over `rows` row-major tokens (inference): out`[rows, C]` = down(SwiGLU(gate(x), up(x)))
    /// for a dense layer (Shazeer 2020, "GLU Variants Improve Transformer"; MiniMind's FeedForward), the routed and
    /// shared experts for a MoE one. `linear(o, inp, w, ic, oc)` must compute o`[rows, oc]` = inp`[rows, ic]` · w`[oc, ic]`ᵀ
    /// (the caller's threading of the projections); `gu` holds rows·2I floats and `hbuf` rows·I (scratch).
    func mlpRows(_ lo: LayerOffsets, x: CFPtr, out: FPtr, gu: FPtr, hbuf: FPtr, rows: Int,
                 linear: (FPtr, CFPtr, CFPtr, Int, Int) -> Void) {
        if config.useMoe { moeInfer(lo, x: x, out: out, M: rows); return }
        let C = config.hiddenSize, I = config.intermediateSize, P = paramPtr
        if lo.up == lo.gate + I * C {
            linear(gu, x, P + lo.gate, C, 2 * I)   // gate|up rows are contiguous: one [2I, C] product
            swiglu_forward_fused(hbuf, gu, rows, I)
        } else {
            matmul_forward(gu, x, P + lo.gate, rows, C, I)
            matmul_forward(gu + rows * I, x, P + lo.up, rows, C, I)
            swiglu_forward(hbuf, gu, gu + rows * I, rows * I)
        }
        linear(out, hbuf, P + lo.down, I, C)
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

    /// As `forwardIncremental(tokens:cache:)`, writing the logits `[V]` into `logits` (count V).
    /// One token (decode) runs on matrix-vector products (cblas_sgemv) with the fused q|k|v and gate|up weights;
    /// several tokens (prefill) on sgemm: `prefillTransposed` for dense models, the row-major path below (with
    /// `attention_prefill`) for MoE ones. Logits use the untied lm_head when the model has one.
    public func forwardIncremental(tokens: [Int32], cache: KVCache, logits out: UnsafeMutableBufferPointer<Float>) {
        let cfg = config, M = tokens.count, p0 = cache.length
        precondition(M > 0 && p0 + M <= cache.maxLength, "forwardIncremental: \(p0)+\(M) positions exceed the cache (\(cache.maxLength))")
        precondition(out.count == cfg.vocabSize, "forwardIncremental: logits buffer has \(out.count) floats, expected \(cfg.vocabSize)")
        for (i, id) in tokens.enumerated() { precondition(id >= 0 && Int(id) < cfg.vocabSize, "forwardIncremental: token[\(i)] = \(id) outside [0, \(cfg.vocabSize))") }
        let C = cfg.hiddenSize, QD = cfg.qDim, KVD = cfg.kvDim, V = cfg.vocabSize
        let QKV = QD + 2 * KVD
        let H = cfg.numAttentionHeads, KVH = cfg.numKeyValueHeads, hd = cfg.headDim, rep = H / KVH, eps = cfg.rmsNormEps
        let total = p0 + M
        ensureRope(total)
        let scale = 1 / Float(hd).squareRoot()
        if M > 1 && !cfg.useMoe { prefillTransposed(tokens: tokens, cache: cache, logits: out); return }
        let attnWorkers = M == 1 ? 1 : workerCount()
        let scoreFloats = M == 1 ? cache.maxLength : attnWorkers * Swift.min(M, prefillAttentionBlock) * total
        let sp = cache.scratchPointers(rows: M, config: cfg, scoreFloats: scoreFloats)
        let (x, ln, tmp, rstd, qkv, y, gu, hbuf, S) = (sp[0], sp[1], sp[2], sp[3], sp[4], sp[5], sp[6], sp[7], sp[8])
        let P = paramPtr, mx = cache.maxLength
        let cosT = rope.cos, sinT = rope.sin
        let head = outputHeadPointer
        /// out[M, OC] = inp[M, IC] · W[OC, IC]ᵀ
        @inline(__always) func linear(_ o: FPtr, _ inp: CFPtr, _ w: CFPtr, _ ic: Int, _ oc: Int) {
            if M == 1 {
                cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(oc), Int32(ic), 1, w, Int32(ic), inp, 1, 0, o, 1)
            } else {
                sgemm(false, true, M, oc, ic, 1, inp, ic, w, ic, 0, o, oc)
            }
        }
        tokens.withUnsafeBufferPointer { ids in
            embedding_forward(x, ids.baseAddress!, P + embedOffset, M, C)
            for l in 0..<cfg.numHiddenLayers {
                let lo = layerOffsets[l]
                let kl = cache.k + l * mx * KVD, vl = cache.v + l * mx * KVD
                rmsnorm_forward(ln, rstd, x, P + lo.ln1, M, C, eps)
                // q|k|v weights are contiguous in the layout: one [QKV, C] product.
                if lo.k == lo.q + QD * C && lo.v == lo.k + KVD * C {
                    linear(qkv, ln, P + lo.q, C, QKV)
                } else {
                    sgemm(false, true, M, QD, C, 1, ln, C, P + lo.q, C, 0, qkv, QKV)
                    sgemm(false, true, M, KVD, C, 1, ln, C, P + lo.k, C, 0, qkv + QD, QKV)
                    sgemm(false, true, M, KVD, C, 1, ln, C, P + lo.v, C, 0, qkv + QD + KVD, QKV)
                }
                rope_apply(qkv, cosT, sinT, 1, M, H, hd, pos0: p0, rowStride: QKV)
                rope_apply(qkv + QD, cosT, sinT, 1, M, KVH, hd, pos0: p0, rowStride: QKV)
                for i in 0..<M {
                    (kl + (p0 + i) * KVD).update(from: qkv + i * QKV + QD, count: KVD)
                    (vl + (p0 + i) * KVD).update(from: qkv + i * QKV + QD + KVD, count: KVD)
                }
                if M > 1 {
                    attention_prefill(y, qkv, kl, vl, S, workers: attnWorkers, M, p0, H, KVH, hd, ldq: QKV, ldkv: KVD, ldy: QD)
                } else {
                    for h in 0..<H {
                        let kp = kl + (h / rep) * hd, vp = vl + (h / rep) * hd
                        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(total), Int32(hd), scale, kp, Int32(KVD), qkv + h * hd, 1, 0, S, 1)
                        var rmax = -Float.infinity
                        for j in 0..<total where S[j] > rmax { rmax = S[j] }
                        var sum: Float = 0
                        for j in 0..<total { let e = expf(S[j] - rmax); S[j] = e; sum += e }
                        cblas_sgemv(CblasRowMajor, CblasTrans, Int32(total), Int32(hd), 1 / sum, vp, Int32(KVD), S, 1, 0, y + h * hd, 1)
                    }
                }
                linear(tmp, y, P + lo.o, QD, C)
                residual_forward(x, x, tmp, M * C)
                rmsnorm_forward(ln, rstd, x, P + lo.ln2, M, C, eps)
                mlpRows(lo, x: ln, out: tmp, gu: gu, hbuf: hbuf, rows: M) { linear($0, $1, $2, $3, $4) }
                residual_forward(x, x, tmp, M * C)
            }
            rmsnorm_forward(ln, rstd, x + (M - 1) * C, P + normOffset, 1, C, eps)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(V), Int32(C), 1, head, Int32(C), ln, 1, 0, out.baseAddress!, 1)
        }
        cache.length = total
    }
}

extension MiniMindModel {
    /// Prefill (M > 1 tokens, dense model) in the transposed activation layout: the residual stream and every
    /// activation are kept as `[features, M]` (column i = token i), so each projection is one sgemm
    /// `out[OC, M] = W[OC, IC] · in[IC, M]` with the weight matrix as the large left operand (OpenBLAS runs these
    /// ~15 % faster than `in · Wᵀ` at M ≈ 128), the o_proj/down_proj results accumulate into the residual stream in
    /// the sgemm itself (beta = 1), and SwiGLU reads gate and up as two contiguous blocks. The projections' output
    /// rows are split over the OpenBLAS threads (one single-threaded sgemm each), attention runs as tasks (KV group,
    /// query block) on the same threads. Same math as `forward`; writes the last token's logits `[V]` into `out`.
    func prefillTransposed(tokens: [Int32], cache: KVCache, logits out: UnsafeMutableBufferPointer<Float>) {
        let cfg = config, M = tokens.count, p0 = cache.length, total = p0 + M
        let C = cfg.hiddenSize, QD = cfg.qDim, KVD = cfg.kvDim, I = cfg.intermediateSize, V = cfg.vocabSize
        let H = cfg.numAttentionHeads, KVH = cfg.numKeyValueHeads, hd = cfg.headDim, half = hd / 2, eps = cfg.rmsNormEps
        let workers = workerCount(), blk = Swift.min(M, prefillAttentionBlock)
        let sp = cache.scratchPointers(rows: M, config: cfg, scoreFloats: workers * blk * total)
        // x/ln [C, M] · tmp: rope tables [half, M] ×2 · rstd [M] · qkv [QD+2KVD, M] · y [QD, M] · gu [2I, M] · h [I, M]
        let (x, ln, tmp, rstd, qkv, y, gu, hbuf, S) = (sp[0], sp[1], sp[2], sp[3], sp[4], sp[5], sp[6], sp[7], sp[8])
        let P = paramPtr, mx = cache.maxLength
        let ropeC = tmp, ropeS = tmp + half * M
        for t in 0..<M {
            let c = rope.cos + (p0 + t) * half, s = rope.sin + (p0 + t) * half
            for i in 0..<half { ropeC[i * M + t] = c[i]; ropeS[i * M + t] = s[i] }
        }
        /// o[OC, M] = W[OC, IC] · inp[IC, M] + beta · o
        func linear(_ o: FPtr, _ inp: CFPtr, _ w: CFPtr, _ ic: Int, _ oc: Int, beta: Float = 0) {
            if workers > 1 {
                parallelTasks(workers, workers: workers) { part, _ in
                    let r0 = oc * part / workers, r1 = oc * (part + 1) / workers
                    sgemm(false, false, r1 - r0, M, ic, 1, w + r0 * ic, ic, inp, M, beta, o + r0 * M, M)
                }
            } else {
                sgemm(false, false, oc, M, ic, 1, w, ic, inp, M, beta, o, M)
            }
        }
        tokens.withUnsafeBufferPointer { ids in
            embedding_forward(ln, ids.baseAddress!, P + embedOffset, M, C)
            cblas_somatcopy(CblasRowMajor, CblasTrans, Int32(M), Int32(C), 1, ln, Int32(C), x, Int32(M))
            for l in 0..<cfg.numHiddenLayers {
                let lo = layerOffsets[l]
                let kl = cache.k + l * mx * KVD, vl = cache.v + l * mx * KVD
                rmsnormColumns(ln, rstd, x, P + lo.ln1, M, C, eps)
                if lo.k == lo.q + QD * C && lo.v == lo.k + KVD * C {
                    linear(qkv, ln, P + lo.q, C, QD + 2 * KVD)
                } else {
                    linear(qkv, ln, P + lo.q, C, QD)
                    linear(qkv + QD * M, ln, P + lo.k, C, KVD)
                    linear(qkv + (QD + KVD) * M, ln, P + lo.v, C, KVD)
                }
                // RoPE on the H query heads and KVH key heads (rows 0 ..< QD+KVD), rotate-half pairs (i, i + hd/2).
                for hb in 0..<(H + KVH) {
                    for i in 0..<half {
                        let a = qkv + (hb * hd + i) * M, b = a + half * M, c = ropeC + i * M, s = ropeS + i * M
                        for t in 0..<M { let x1 = a[t], x2 = b[t]; a[t] = x1 * c[t] - x2 * s[t]; b[t] = x2 * c[t] + x1 * s[t] }
                    }
                }
                cblas_somatcopy(CblasRowMajor, CblasTrans, Int32(KVD), Int32(M), 1, qkv + QD * M, Int32(M), kl + p0 * KVD, Int32(KVD))
                cblas_somatcopy(CblasRowMajor, CblasTrans, Int32(KVD), Int32(M), 1, qkv + (QD + KVD) * M, Int32(M), vl + p0 * KVD, Int32(KVD))
                attention_prefill(y, qkv, kl, vl, S, workers: workers, M, p0, H, KVH, hd, ldkv: KVD, columns: true)
                linear(x, y, P + lo.o, QD, C, beta: 1)
                rmsnormColumns(ln, rstd, x, P + lo.ln2, M, C, eps)
                // gate_proj and up_proj rows j0 ..< j1 per worker, then SwiGLU of those rows while they are in cache:
                // h[I, M] = silu(gate) · up.
                let wg = P + lo.gate, wu = P + lo.up
                parallelTasks(workers, workers: workers) { part, _ in
                    let j0 = I * part / workers, j1 = I * (part + 1) / workers
                    let g = gu + j0 * M, u = gu + (I + j0) * M, h = hbuf + j0 * M
                    sgemm(false, false, j1 - j0, M, C, 1, wg + j0 * C, C, ln, M, 0, g, M)
                    sgemm(false, false, j1 - j0, M, C, 1, wu + j0 * C, C, ln, M, 0, u, M)
                    for e in 0..<((j1 - j0) * M) { let a = g[e]; h[e] = a / (1 + fastExp(-a)) * u[e] }
                }
                linear(x, hbuf, P + lo.down, I, C, beta: 1)
            }
            for c in 0..<C { ln[c] = x[c * M + M - 1] }
            rmsnorm_forward(ln + C, rstd, ln, P + normOffset, 1, C, eps)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(V), Int32(C), 1, outputHeadPointer, Int32(C), ln + C, 1, 0, out.baseAddress!, 1)
        }
        cache.length = total
    }
}

/// RMSNorm of the M columns of x[C, M]: out[c, i] = x[c, i] · rsqrt(mean_c x[·, i]² + eps) · w[c]; rstd[M] scratch.
func rmsnormColumns(_ out: FPtr, _ rstd: FPtr, _ x: CFPtr, _ w: CFPtr, _ m: Int, _ c: Int, _ eps: Float) {
    rstd.update(repeating: 0, count: m)
    for k in 0..<c { let row = x + k * m; for i in 0..<m { rstd[i] += row[i] * row[i] } }
    let invC = 1 / Float(c)
    for i in 0..<m { rstd[i] = 1 / (rstd[i] * invC + eps).squareRoot() }
    for k in 0..<c {
        let row = x + k * m, o = out + k * m, wk = w[k]
        for i in 0..<m { o[i] = row[i] * rstd[i] * wk }
    }
}

extension MiniMindModel {
    /// One decoding step for `B = tokens.count` independent sequences (continuous batching): token b runs at
    /// position `caches[b].length` of its own cache, which grows by one. The projections run as sgemms over the
    /// B rows (the weights are read once per step instead of once per sequence), their output columns split over the
    /// OpenBLAS threads; attention runs per sequence, the sequences spread over the same threads.
    /// Writes the logits `[B, V]` into `logits` (count B·V). B = 1 takes the matrix-vector path of
    /// `forwardIncremental`. Same math as `forward`.
    /// - Precondition: `caches.count == B ≥ 1`, distinct caches, each with room for one more position.
    public func forwardDecodeBatch(tokens: [Int32], caches: [KVCache], logits out: UnsafeMutableBufferPointer<Float>) {
        let cfg = config, B = tokens.count, V = cfg.vocabSize
        precondition(B > 0 && caches.count == B, "forwardDecodeBatch: \(B) tokens for \(caches.count) caches")
        precondition(out.count == B * V, "forwardDecodeBatch: logits buffer has \(out.count) floats, expected \(B * V)")
        if B == 1 { forwardIncremental(tokens: tokens, cache: caches[0], logits: out); return }
        for (b, id) in tokens.enumerated() {
            precondition(id >= 0 && Int(id) < V, "forwardDecodeBatch: token[\(b)] = \(id) outside [0, \(V))")
            precondition(caches[b].length < caches[b].maxLength, "forwardDecodeBatch: cache \(b) is full (\(caches[b].maxLength))")
        }
        let C = cfg.hiddenSize, QD = cfg.qDim, KVD = cfg.kvDim, I = cfg.intermediateSize, QKV = QD + 2 * KVD
        let H = cfg.numAttentionHeads, KVH = cfg.numKeyValueHeads, hd = cfg.headDim, rep = H / KVH, eps = cfg.rmsNormEps
        let maxTotal = caches.map { $0.length + 1 }.max()!
        ensureRope(maxTotal)
        let scale = 1 / Float(hd).squareRoot()
        let workers = workerCount()
        let sizes = [B * C, B * C, B * C, B, B * QKV, B * QD, B * 2 * I, B * I, workers * maxTotal]
        let arena = FPtr.allocate(capacity: sizes.reduce(0, +))
        defer { arena.deallocate() }
        var ptrs: [FPtr] = [], cur = arena
        for n in sizes { ptrs.append(cur); cur += n }
        let (x, ln, tmp, rstd, qkv, y, gu, hbuf, S) = (ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5], ptrs[6], ptrs[7], ptrs[8])
        let P = paramPtr, cosT = rope.cos, sinT = rope.sin
        /// out[B, OC] (row stride ldo) = inp[B, IC] · W[OC, IC]ᵀ. With a few rows, a plain sgemm spends most of its
        /// time packing (copying) the weights, and OpenBLAS's own threads slow it down further. The output columns are
        /// cut into pieces of ≤ 64 with B·n·IC ≤ 10⁶, sizes OpenBLAS (0.3.21, SkylakeX) serves with its small-matrix
        /// kernels that read the weights in place (measured: 2.2× faster per layer at B = 8); the pieces run as
        /// single-threaded sgemms spread over the workers. Other builds just pack piece by piece.
        func linear(_ o: FPtr, _ inp: CFPtr, _ w: CFPtr, _ ic: Int, _ oc: Int, ldo: Int? = nil) {
            let ld = ldo ?? oc
            let piece = B <= 16 ? Swift.max(16, Swift.min(64, 1_000_000 / (B * ic) / 16 * 16)) : (oc + workers - 1) / workers
            let pieces = (oc + piece - 1) / piece
            parallelTasks(pieces, workers: workers) { p, _ in
                let n0 = p * piece, n = Swift.min(piece, oc - n0)
                sgemm(false, true, B, n, ic, 1, inp, ic, w + n0 * ic, ic, 0, o + n0, ld)
            }
        }
        tokens.withUnsafeBufferPointer { ids in
            embedding_forward(x, ids.baseAddress!, P + embedOffset, B, C)
            for l in 0..<cfg.numHiddenLayers {
                let lo = layerOffsets[l]
                rmsnorm_forward(ln, rstd, x, P + lo.ln1, B, C, eps)
                if lo.k == lo.q + QD * C && lo.v == lo.k + KVD * C {
                    linear(qkv, ln, P + lo.q, C, QKV)
                } else {
                    linear(qkv, ln, P + lo.q, C, QD, ldo: QKV)
                    linear(qkv + QD, ln, P + lo.k, C, KVD, ldo: QKV)
                    linear(qkv + QD + KVD, ln, P + lo.v, C, KVD, ldo: QKV)
                }
                // Attention: one task per sequence (its own cache and length) on the workers.
                parallelTasks(B, workers: workers) { b, worker in
                    let cache = caches[b], pos = cache.length, total = pos + 1, mx = cache.maxLength
                    let row = qkv + b * QKV, Sw = S + worker * maxTotal
                    rope_apply(row, cosT, sinT, 1, 1, H, hd, pos0: pos, rowStride: QKV)
                    rope_apply(row + QD, cosT, sinT, 1, 1, KVH, hd, pos0: pos, rowStride: QKV)
                    let kl = cache.k + l * mx * KVD, vl = cache.v + l * mx * KVD
                    (kl + pos * KVD).update(from: row + QD, count: KVD)
                    (vl + pos * KVD).update(from: row + QD + KVD, count: KVD)
                    for h in 0..<H {
                        let kp = kl + (h / rep) * hd, vp = vl + (h / rep) * hd
                        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(total), Int32(hd), scale, kp, Int32(KVD), row + h * hd, 1, 0, Sw, 1)
                        let sum = expShiftSum(Sw, total, shift: maxOf(Sw, total))
                        cblas_sgemv(CblasRowMajor, CblasTrans, Int32(total), Int32(hd), 1 / sum, vp, Int32(KVD), Sw, 1, 0, y + b * QD + h * hd, 1)
                    }
                }
                linear(tmp, y, P + lo.o, QD, C)
                residual_forward(x, x, tmp, B * C)
                rmsnorm_forward(ln, rstd, x, P + lo.ln2, B, C, eps)
                mlpRows(lo, x: ln, out: tmp, gu: gu, hbuf: hbuf, rows: B) { linear($0, $1, $2, $3, $4) }
                residual_forward(x, x, tmp, B * C)
            }
            rmsnorm_forward(ln, rstd, x, P + normOffset, B, C, eps)
            linear(out.baseAddress!, ln, outputHeadPointer, C, V)
        }
        for c in caches { c.length += 1 }
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
