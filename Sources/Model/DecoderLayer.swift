// The decoder layer step (one MiniMind2/Llama block over row-major token rows), shared by training's `forward` and
// every inference path (prefill of one sequence, single-token decode, batched decode of many sequences).
// Math: Llama (Touvron et al. 2023) as MiniMind's model_minimind.py / HF LlamaForCausalLM implement it.
import Foundation
import CBLAS

/// Buffers of one `decoderLayer` step over n token rows, all row-major (C = hidden_size, QKV = H·hd + 2·KVH·hd,
/// I = intermediate_size). Training points them into its per-layer activation slices (kept for backward); inference
/// uses one scratch set for every layer, with `input`, `afterAttention` and `output` the same residual buffer.
struct LayerActivations {
    /// Residual stream entering the layer `[n, C]`.
    var input: FPtr
    /// `input` + o_proj(attention) `[n, C]` (may be `input`).
    var afterAttention: FPtr
    /// Residual stream leaving the layer `[n, C]` (may be `input`).
    var output: FPtr
    /// RMSNorm(input) `[n, C]` and its 1/rms `[n]`.
    var norm1: FPtr, rstd1: FPtr
    /// q | k | v `[n, QKV]`, q and k after RoPE.
    var qkv: FPtr
    /// Attention output before o_proj `[n, H·hd]`.
    var attention: FPtr
    /// RMSNorm(afterAttention) `[n, C]` and its 1/rms `[n]` (may share storage with norm1/rstd1).
    var norm2: FPtr, rstd2: FPtr
    /// gate | up `[n, 2I]` (dense MLP only).
    var gateUp: FPtr
    /// silu(gate)·up `[n, I]` (MoE: scratch of the experts).
    var hidden: FPtr
    /// Output of o_proj, then of the MLP, before each residual add `[n, C]`.
    var sublayerOutput: FPtr
}

/// What the rows of a `decoderLayer` step attend to.
enum LayerAttention {
    /// Training: `batch` sequences of `seqLen` rows each (positions 0 ..< seqLen) attending to their own keys and
    /// values (columns of qkv); `lse` `[batch, H, seqLen]` is saved for backward; `scratch` holds
    /// `attentionScratchPerWorker(seqLen)` floats per worker.
    case ownRows(batch: Int, seqLen: Int, lse: FPtr, scratch: FPtr, workers: Int)
    /// Inference: rows of sequences that each have a KV cache (see `CachedRows`); their keys and values are appended
    /// to the caches, then every row attends to its sequence's cached positions up to its own.
    case kvCache(CachedRows)
}

/// The rows of an inference step: sequence s owns rows `rowStart[s] ..< rowStart[s + 1]` (≥ 1), at positions
/// `caches[s].length …` (the caches' lengths are advanced by the caller after the last layer).
struct CachedRows {
    let caches: [KVCache]
    let rowStart: [Int]
    /// Attention score scratch: `workers` blocks of `scoreFloatsPerWorker` (see `attention_cached`).
    let scores: FPtr
    let scoreFloatsPerWorker: Int
    let workers: Int
}

/// MoE state of a `decoderLayer` step: routing kept in slot `slot` of `arena`; aux loss over sequences of `seqLen`
/// rows normalised by `auxBatch` (0 = no aux loss, inference).
struct MoERouting {
    let arena: MoEArena
    let slot: Int
    let seqLen: Int
    let auxBatch: Int
}

/// Query rows per task of `attention_cached`.
let cachedAttentionBlock = 32

/// Score floats one worker of `attention_cached` needs for a sequence of `rows` new rows after `position` cached ones.
func cachedAttentionScratch(rows: Int, position: Int) -> Int { Swift.min(rows, cachedAttentionBlock) * (position + rows) }

/// Causal attention of new query rows over KV caches, several sequences at once. Sequence s: query rows
/// `rowStart[s] ..< rowStart[s + 1]` of q (rows `ldq` apart, head h at column h·hd) at positions `positions[s]` …,
/// attending to rows 0 … its own position of `keys[s]` / `values[s]` (rows `ldkv` apart, already holding the new rows);
/// y rows `ldy` apart. GQA: head h reads KV head h / (H/KVH). y = softmax(q·kᵀ/√hd)·v.
/// Tasks (sequence, KV group, block of ≤ `cachedAttentionBlock` query rows; keys past the block's last row are skipped)
/// run on `workers` threads with OpenBLAS at one thread: a one-row sequence (decode) takes two matrix-vector products
/// per head, a block two sgemms. `scratch` holds `workers` blocks of `scratchPerWorker` floats
/// (≥ `cachedAttentionScratch` of every sequence).
func attention_cached(_ y: FPtr, _ q: CFPtr, keys: [CFPtr], values: [CFPtr], positions: [Int], rowStart: [Int],
                      scratch: FPtr, scratchPerWorker: Int, workers: Int,
                      _ h: Int, _ kvh: Int, _ hd: Int, ldq: Int, ldkv: Int, ldy: Int) {
    let rep = h / kvh
    let scale = 1 / Float(hd).squareRoot()
    // (sequence, first row of the block, KV group); in each sequence the last blocks first, since they have the most
    // keys (better balance with dynamic scheduling).
    var tasks: [(seq: Int, r0: Int, group: Int)] = []
    for s in 0..<positions.count {
        let m = rowStart[s + 1] - rowStart[s], blk = Swift.min(m, cachedAttentionBlock), blocks = (m + blk - 1) / blk
        for bi in stride(from: blocks - 1, through: 0, by: -1) { for g in 0..<kvh { tasks.append((s, bi * blk, g)) } }
    }
    // Decode rows only (every sequence adds one row): a few tiny tasks per layer, run on the spin-waiting pool like
    // the step's weight products rather than waking GCD workers.
    let decodeRowsOnly = (0..<positions.count).allSatisfy { rowStart[$0 + 1] - rowStart[$0] == 1 }
    tasks.withUnsafeBufferPointer { tasks in
        func task(_ t: Int, _ worker: Int) {
            let (s, r0, g) = tasks[t]
            let S = scratch + worker * scratchPerWorker
            let m = rowStart[s + 1] - rowStart[s], p0 = positions[s]
            let r1 = Swift.min(m, r0 + cachedAttentionBlock), rows = r1 - r0, nkeys = p0 + r1
            let kp = keys[s] + g * hd, vp = values[s] + g * hd
            let qs = q + rowStart[s] * ldq, ys = y + rowStart[s] * ldy
            for hi in (g * rep)..<((g + 1) * rep) {
                if m == 1 {
                    cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(nkeys), Int32(hd), scale, kp, Int32(ldkv), qs + hi * hd, 1, 0, S, 1)
                    let sum = expShiftSum(S, nkeys, shift: maxOf(S, nkeys))
                    cblas_sgemv(CblasRowMajor, CblasTrans, Int32(nkeys), Int32(hd), 1 / sum, vp, Int32(ldkv), S, 1, 0, ys + hi * hd, 1)
                    continue
                }
                // S[rows, nkeys] = scale · Q_blk · Kᵀ
                sgemm(false, true, rows, nkeys, hd, scale, qs + r0 * ldq + hi * hd, ldq, kp, ldkv, 0, S, nkeys)
                for i in 0..<rows {
                    let row = S + i * nkeys, valid = p0 + r0 + i + 1
                    let mx = maxOf(row, valid)
                    let inv = 1 / expShiftSum(row, valid, shift: mx)
                    for j in 0..<valid { row[j] *= inv }
                    for j in valid..<nkeys { row[j] = 0 }
                }
                sgemm(false, false, rows, hd, nkeys, 1, S, nkeys, vp, ldkv, 0, ys + r0 * ldy + hi * hd, ldy)
            }
        }
        if decodeRowsOnly && decodeUsesSpinPool && workers > 1 && tasks.count > 1 {
            ComputeThreads.withSingleThread {
                spinParallelChunks(tasks.count, workers: workers) { worker, range in for t in range { task(t, worker) } }
            }
        } else {
            parallelTasks(tasks.count, workers: workers, task)
        }
    }
}

extension MiniMindModel {
    /// One decoder layer `l` (MiniMind2/Llama block) over `n` row-major token rows, the step training's `forward` and
    /// every inference path run (buffers: `LayerActivations`):
    ///   norm1 = RMSNorm(input); qkv = norm1·[W_q | W_k | W_v]ᵀ (+ LoRA); RoPE on q and k; attention (`attention`);
    ///   afterAttention = input + attention·W_oᵀ (+ LoRA); norm2 = RMSNorm(afterAttention);
    ///   output = afterAttention + MLP(norm2), the MLP being down(silu(gate(x))·up(x)) (SwiGLU, Shazeer 2020) or, with
    ///   `moe`, the routed and shared experts (MoE.swift).
    /// Every weight product goes through `linear_forward` with `schedule`. Returns this layer's MoE aux loss (0 for a
    /// dense layer or without aux). `prof` accumulates the parts' wall-clock time into `profile` when `profiling`.
    /// `bf16Weights` (training under `--dtype bfloat16`, dense layers, `.ownRows`): the products read these
    /// bf16-rounded weights, and norm1, q|k|v after RoPE, the attention probabilities, the attention output, norm2 and
    /// the SwiGLU output are rounded to bf16 in place before the products that read them (MixedPrecision.swift).
    @discardableResult
    func decoderLayer(_ l: Int, rows n: Int, _ a: LayerActivations, attention: LayerAttention, moe: MoERouting?,
                      schedule: LinearSchedule, bf16Weights: FPtr? = nil, prof: Bool = false) -> Double {
        let cfg = config, lo = layerOffsets[l], P = paramPtr
        let bf16 = bf16Weights != nil, W = bf16Weights ?? P
        let C = cfg.hiddenSize, QD = cfg.qDim, KVD = cfg.kvDim, I = cfg.intermediateSize, QKV = QD + 2 * KVD
        let H = cfg.numAttentionHeads, KVH = cfg.numKeyValueHeads, hd = cfg.headDim, eps = cfg.rmsNormEps
        let cosT = rope.cos, sinT = rope.sin
        timed(prof, \.elementwise) {
            rmsnorm_forward(a.norm1, a.rstd1, a.input, P + lo.ln1, n, C, eps)
            if bf16 { roundToBF16(a.norm1, n * C) }
        }
        // q_proj | k_proj | v_proj are contiguous in the layout: one product gives qkv[n, QKV].
        timed(prof, \.matmul) { linear_forward(a.qkv, a.norm1, W + lo.q, n, C, QKV, schedule: schedule, bf16: bf16) }
        lora?.forward(layer: l, site: .qkv, x: a.norm1, out: a.qkv, n: n)
        switch attention {
        case let .ownRows(B, T, lse, scratch, workers):
            timed(prof, \.elementwise) {
                rope_apply(a.qkv, cosT, sinT, B, T, H, hd, rowStride: QKV)
                rope_apply(a.qkv + QD, cosT, sinT, B, T, KVH, hd, rowStride: QKV)
                if bf16 { roundToBF16(a.qkv, n * QKV) }
            }
            timed(prof, \.attention) {
                attention_forward(a.attention, lse, a.qkv, a.qkv + QD, a.qkv + QD + KVD, scratch, workers: workers,
                                  B, T, H, KVH, hd, ldq: QKV, ldkv: QKV, ldy: QD, bf16: bf16)
            }
            if bf16 { timed(prof, \.elementwise) { roundToBF16(a.attention, n * QD) } }
        case let .kvCache(rows):
            var keys: [CFPtr] = [], values: [CFPtr] = [], positions: [Int] = []
            for (s, cache) in rows.caches.enumerated() {
                let r0 = rows.rowStart[s], m = rows.rowStart[s + 1] - r0, p0 = cache.length
                let row = a.qkv + r0 * QKV
                rope_apply(row, cosT, sinT, 1, m, H, hd, pos0: p0, rowStride: QKV)
                rope_apply(row + QD, cosT, sinT, 1, m, KVH, hd, pos0: p0, rowStride: QKV)
                let kl = cache.k + l * cache.maxLength * KVD, vl = cache.v + l * cache.maxLength * KVD
                for i in 0..<m {
                    (kl + (p0 + i) * KVD).update(from: row + i * QKV + QD, count: KVD)
                    (vl + (p0 + i) * KVD).update(from: row + i * QKV + QD + KVD, count: KVD)
                }
                keys.append(kl); values.append(vl); positions.append(p0)
            }
            attention_cached(a.attention, a.qkv, keys: keys, values: values, positions: positions, rowStart: rows.rowStart,
                             scratch: rows.scores, scratchPerWorker: rows.scoreFloatsPerWorker, workers: rows.workers,
                             H, KVH, hd, ldq: QKV, ldkv: KVD, ldy: QD)
        }
        timed(prof, \.matmul) { linear_forward(a.sublayerOutput, a.attention, W + lo.o, n, QD, C, schedule: schedule, bf16: bf16) }
        lora?.forward(layer: l, site: .o, x: a.attention, out: a.sublayerOutput, n: n)
        timed(prof, \.elementwise) {
            residual_forward(a.afterAttention, a.input, a.sublayerOutput, n * C)
            rmsnorm_forward(a.norm2, a.rstd2, a.afterAttention, P + lo.ln2, n, C, eps)
            if bf16 { roundToBF16(a.norm2, n * C) }
        }
        var aux = 0.0
        if let r = moe {
            aux = timed(prof, \.matmul) {
                moeForward(r.arena, layer: r.slot, lo, x: a.norm2, out: a.sublayerOutput, h: a.hidden, N: n, T: r.seqLen,
                           auxBatch: r.auxBatch)
            }
        } else {
            // gate_proj | up_proj are contiguous: one product gives gateUp[n, 2I].
            timed(prof, \.matmul) { linear_forward(a.gateUp, a.norm2, W + lo.gate, n, C, 2 * I, schedule: schedule, bf16: bf16) }
            timed(prof, \.elementwise) {
                swiglu_forward_fused(a.hidden, a.gateUp, n, I)
                if bf16 { roundToBF16(a.hidden, n * I) }
            }
            timed(prof, \.matmul) { linear_forward(a.sublayerOutput, a.hidden, W + lo.down, n, I, C, schedule: schedule, bf16: bf16) }
        }
        timed(prof, \.elementwise) { residual_forward(a.output, a.afterAttention, a.sublayerOutput, n * C) }
        return aux
    }

    /// Inference over the new tokens of S sequences: sequence s runs `tokens[rowStart[s] ..< rowStart[s + 1]]` (≥ 1
    /// each, ids checked by the caller) at positions `caches[s].length …` through every `decoderLayer` (the S·mₛ
    /// rows together, so each weight matrix is read once per step), appends their keys/values to its cache (whose
    /// length grows by mₛ), and writes the logits of its last token into row s of `logits` `[S, V]` (the untied lm_head
    /// when the model has one). LoRA adapters, when attached (`lora`), apply as in `forward`. Caches must be distinct
    /// with room for the new positions (checked by the callers).
    func forwardNewTokens(_ tokens: UnsafePointer<Int32>, rowStart: [Int], caches: [KVCache], logits: FPtr) {
        let cfg = config, S = caches.count, n = rowStart[S]
        let C = cfg.hiddenSize, V = cfg.vocabSize, eps = cfg.rmsNormEps
        ensureRope(caches.indices.map { caches[$0].length + rowStart[$0 + 1] - rowStart[$0] }.max()!)
        let workers = workerCount()
        // Single-token decode splits its KV groups over the spin-waiting pool (GCD was too slow to wake for it).
        let attentionWorkers = n == 1 && !decodeUsesSpinPool ? 1 : workers
        let scorePerWorker = caches.indices.map {
            cachedAttentionScratch(rows: rowStart[$0 + 1] - rowStart[$0], position: caches[$0].length)
        }.max()!
        let sp = caches[0].scratchPointers(rows: n, config: cfg, scoreFloats: attentionWorkers * scorePerWorker)
        let (x, norm, sublayerOutput, rstd, qkv, y, gateUp, hidden, scores) = (sp[0], sp[1], sp[2], sp[3], sp[4], sp[5], sp[6], sp[7], sp[8])
        let acts = LayerActivations(input: x, afterAttention: x, output: x, norm1: norm, rstd1: rstd, qkv: qkv, attention: y,
                                    norm2: norm, rstd2: rstd, gateUp: gateUp, hidden: hidden, sublayerOutput: sublayerOutput)
        let rows = CachedRows(caches: caches, rowStart: rowStart, scores: scores, scoreFloatsPerWorker: scorePerWorker,
                              workers: attentionWorkers)
        let moeArena = cfg.useMoe ? MoEArena(config: cfg, capN: n, layers: 1) : nil
        let schedule = inferenceSchedule(workers: workers)
        embedding_forward(x, tokens, paramPtr + embedOffset, n, C)
        for l in 0..<cfg.numHiddenLayers {
            decoderLayer(l, rows: n, acts, attention: .kvCache(rows),
                         moe: moeArena.map { MoERouting(arena: $0, slot: 0, seqLen: n, auxBatch: 0) }, schedule: schedule)
        }
        // Final RMSNorm and lm_head on the last row of each sequence.
        var last = x
        if n > S {
            last = sublayerOutput
            for s in 0..<S { (last + s * C).update(from: x + (rowStart[s + 1] - 1) * C, count: C) }
        }
        rmsnorm_forward(norm, rstd, last, paramPtr + normOffset, S, C, eps)
        linear_forward(logits, norm, outputHeadPointer, S, C, V, schedule: schedule)
        for s in 0..<S { caches[s].length += rowStart[s + 1] - rowStart[s] }
    }
}
