// Kernels of the MiniMind dense decoder, llm.c style: each layer's `_forward` / `_backward` pair side by side.
// Layout is row-major; N = B·T rows. Matrix products go through cblas_sgemm, everything else runs on raw pointers.
// Math: Llama (Touvron et al. 2023) as implemented by MiniMind's model_minimind.py / HF LlamaForCausalLM.
import Foundation
import CBLAS
import CQuant

typealias FPtr = UnsafeMutablePointer<Float>
typealias CFPtr = UnsafePointer<Float>

/// Row-major C[M,N] = alpha·op(A)·op(B) + beta·C (cblas_sgemm).
@inline(__always)
func sgemm(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
           _ a: CFPtr, _ lda: Int, _ b: CFPtr, _ ldb: Int, _ beta: Float, _ c: FPtr, _ ldc: Int) {
    if m == 0 || n == 0 { return }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

// MARK: - embedding

/// out[N, C] = wte[ids[n], :]. `ids` must be in [0, V) (checked by the caller).
func embedding_forward(_ out: FPtr, _ ids: UnsafePointer<Int32>, _ wte: CFPtr, _ n: Int, _ c: Int) {
    for i in 0..<n { (out + i * c).update(from: wte + Int(ids[i]) * c, count: c) }
}
/// dwte[ids[n], :] += dout[N, C].
func embedding_backward(_ dwte: FPtr, _ dout: CFPtr, _ ids: UnsafePointer<Int32>, _ n: Int, _ c: Int) {
    for i in 0..<n {
        let d = dwte + Int(ids[i]) * c, g = dout + i * c
        for j in 0..<c { d[j] += g[j] }
    }
}

// MARK: - matmul (nn.Linear without bias)

/// How `linear_forward` spreads one product over threads.
enum LinearSchedule {
    /// One sgemm, threaded by OpenBLAS as configured (training, where the batch parts already run concurrently at one
    /// BLAS thread each, and the MoE experts' products).
    case blas
    /// Inference over few or many rows, on `workers` threads; the kernel is chosen from the row count (see
    /// `linear_forward`).
    case inference(workers: Int)
    /// As `inference`, reading the bf16/q8_0 copy of W from `weights` when it holds one (InferenceWeights.swift),
    /// else the fp32 W as `inference`.
    case lowPrecision(workers: Int, weights: InferenceWeights)
}

/// out[N, OC] (rows `ldo` floats apart, default OC) = inp[N, IC] · W[OC, IC]ᵀ, plus the previous out when
/// `accumulate`: nn.Linear without bias. The one place where a weight matrix multiplies activations, in training and
/// in inference (the bf16/q8_0 weights of `--weight-dtype` are read here, schedule `.lowPrecision`).
/// Inference schedule: N = 1 is one matrix-vector product (cblas_sgemv, threaded by OpenBLAS). For 2 ≤ N ≤ 16 a
/// plain sgemm spends most of its time packing (copying) the weights, and OpenBLAS's own threads slow it down
/// further: the output columns are cut into pieces of ≤ 64 with N·n·IC ≤ 10⁶, sizes OpenBLAS (0.3.21, SkylakeX)
/// serves with its small-matrix kernels that read the weights in place (measured: 2.2× faster per layer at N = 8),
/// run as single-threaded sgemms spread over the workers (other builds just pack piece by piece). Larger N: the
/// output columns are split into one single-threaded sgemm per worker.
/// `bf16` (schedule `.blas`, `--dtype bfloat16`): inp and w hold bf16 values; the product runs on `gemm16`.
func linear_forward(_ out: FPtr, _ inp: CFPtr, _ w: CFPtr, _ n: Int, _ ic: Int, _ oc: Int, ldo: Int? = nil,
                    accumulate: Bool = false, schedule: LinearSchedule = .blas, bf16: Bool = false) {
    let ld = ldo ?? oc, beta: Float = accumulate ? 1 : 0
    switch schedule {
    case .blas:
        gemm(bf16, false, true, n, oc, ic, 1, inp, ic, w, ic, beta, out, ld)
    case let .lowPrecision(workers, weights):
        if let m = weights.matrix(for: w, rows: oc, ic: ic) {
            weights.forward(m, out, inp, n, ic, oc, ldo: ld, accumulate: accumulate, workers: workers)
        } else {
            linear_forward(out, inp, w, n, ic, oc, ldo: ldo, accumulate: accumulate, schedule: .inference(workers: workers))
        }
    case .inference(let workers):
        if n == 1 {
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(oc), Int32(ic), 1, w, Int32(ic), inp, 1, beta, out, 1)
            return
        }
        let piece = n <= 16 ? Swift.max(16, Swift.min(64, 1_000_000 / (n * ic) / 16 * 16)) : (oc + workers - 1) / workers
        let pieces = (oc + piece - 1) / piece
        parallelTasks(pieces, workers: workers) { p, _ in
            let n0 = p * piece, m = Swift.min(piece, oc - n0)
            sgemm(false, true, n, m, ic, 1, inp, ic, w + n0 * ic, ic, beta, out + n0, ld)
        }
    }
}
/// dinp[N, IC] (= or += when `accumulate`) dout[N, OC] · W[OC, IC]; dW[OC, IC] += doutᵀ · inp. `bf16`: the operands
/// hold bf16 values (`--dtype bfloat16`) and both products run on `gemm16`.
func matmul_backward(_ dinp: FPtr?, _ dw: FPtr, _ dout: CFPtr, _ inp: CFPtr, _ w: CFPtr,
                     _ n: Int, _ ic: Int, _ oc: Int, accumulate: Bool = false, weights: Bool = true, bf16: Bool = false) {
    if let dinp { gemm(bf16, false, false, n, ic, oc, 1, dout, oc, w, ic, accumulate ? 1 : 0, dinp, ic) }
    if weights { gemm(bf16, true, false, oc, ic, n, 1, dout, oc, inp, ic, 1, dw, ic) }
}

// MARK: - RMSNorm

/// out[N, C] = x · rsqrt(mean(x²) + eps) · w; rstd[N] saved for backward. Rows split over workers.
func rmsnorm_forward(_ out: FPtr, _ rstd: FPtr, _ x: CFPtr, _ w: CFPtr, _ n: Int, _ c: Int, _ eps: Float) {
    parallelRanges(n, workers: workerCount(), minPerWorker: 16) { rows in
        for i in rows {
            let xi = x + i * c, oi = out + i * c
            let ss = cblas_sdot(Int32(c), xi, 1, xi, 1)
            let r = 1 / (ss / Float(c) + eps).squareRoot()
            rstd[i] = r
            for j in 0..<c { oi[j] = (xi[j] * r) * w[j] }
        }
    }
}
/// dx[N, C] += ∂L/∂x; dw[C] += Σₙ dout·x·rstd. With x̂ = x·r: dx = r·(w·dout) − r·x̂·mean(w·dout·x̂).
/// Rows split over workers; each worker sums its dw part in `scratch` [workers, C] first.
func rmsnorm_backward(_ dx: FPtr, _ dw: FPtr, _ dout: CFPtr, _ x: CFPtr, _ w: CFPtr, _ rstd: CFPtr, _ n: Int, _ c: Int,
                      scratch: FPtr, maxWorkers: Int) {
    let workers = chunkCount(n, workers: min(workerCount(), maxWorkers), minPerWorker: 16)
    scratch.update(repeating: 0, count: workers * c)
    parallelChunks(n, workers: workers) { chunk, rows in
        let part = scratch + chunk * c
        for i in rows {
            let xi = x + i * c, gi = dout + i * c, di = dx + i * c
            let r = rstd[i]
            let dot = dot3(gi, w, xi, c)
            let k = dot * r * r * r / Float(c)
            for j in 0..<c {
                part[j] += gi[j] * xi[j] * r
                di[j] += r * w[j] * gi[j] - k * xi[j]
            }
        }
    }
    for wi in 0..<workers { let p = scratch + wi * c; for j in 0..<c { dw[j] += p[j] } }
}

// MARK: - RoPE (rotate-half convention)

/// cos/sin tables [maxT, hd/2]: angle = t·θ_i in fp32 (θ_i = `inverseFrequencies[i]`, see
/// `ModelConfig.ropeInverseFrequencies`), cos/sin of it rounded to fp32 and multiplied by `attentionScaling`
/// (transformers' `attention_scaling`, 1 except for YaRN).
func rope_tables(maxT: Int, inverseFrequencies inv: [Float], attentionScaling: Float) -> (cos: [Float], sin: [Float]) {
    let half = inv.count
    var cs = [Float](repeating: 0, count: maxT * half), sn = cs
    for i in 0..<half {
        let f = inv[i]
        for t in 0..<maxT {
            let a = Float(t) * f
            cs[t * half + i] = Float(cos(Double(a)))
            sn[t * half + i] = Float(sin(Double(a)))
            if attentionScaling != 1 { cs[t * half + i] *= attentionScaling; sn[t * half + i] *= attentionScaling }
        }
    }
    return (cs, sn)
}
/// In place on x[B, T, H, hd] (token rows `rowStride` floats apart, default H·hd): (x1, x2) ← (x1·cos − x2·sin, x2·cos + x1·sin), position = t + pos0.
/// `inverse` applies the transpose (rotation by −angle): the backward pass.
func rope_apply(_ x: FPtr, _ cosT: CFPtr, _ sinT: CFPtr, _ b: Int, _ t: Int, _ h: Int, _ hd: Int, pos0: Int = 0, inverse: Bool = false,
                rowStride: Int? = nil) {
    let ld = rowStride ?? h * hd
    let half = hd / 2
    let sgn: Float = inverse ? -1 : 1
    parallelRanges(b * t, workers: workerCount(), minPerWorker: 16) { rows in
        for row in rows {
            let bi = row / t, ti = row % t
            let c = cosT + (ti + pos0) * half, s = sinT + (ti + pos0) * half
            for hi in 0..<h {
                let p = x + (bi * t + ti) * ld + hi * hd
                for i in 0..<half {
                    let x1 = p[i], x2 = p[i + half], si = sgn * s[i]
                    p[i] = x1 * c[i] - x2 * si
                    p[i + half] = x2 * c[i] + x1 * si
                }
            }
        }
    }
}

// MARK: - causal attention with grouped KV heads

/// Query rows processed per block: keys beyond the block's last row are never computed (causal).
let attentionBlock = 128

/// Floats of attention scratch one worker needs for sequence length T.
func attentionScratchPerWorker(_ t: Int) -> Int { 2 * attentionBlock * t + attentionBlock }

/// y[B,T,H,hd] = softmax(q·kᵀ/√hd + causal)·v with KV head g = h / (H/KVH); lse[B,H,T] (log-sum-exp of each row of
/// scaled scores) saved so backward recomputes P instead of storing [B,H,T,T].
/// q[B,T,H,hd], k/v[B,T,KVH,hd], rows (one per token) `ldq`/`ldkv`/`ldy` floats apart (q, k, v are column slices
/// of the fused qkv activation [N, H·hd + 2·KVH·hd]). Tasks (b, kv-group) run on `workers` threads, each with its own scratch slice of
/// `attentionScratchPerWorker(T)` floats. `bf16` (`--dtype bfloat16`; q, k, v already bf16-rounded by the caller):
/// the probabilities are rounded to bf16 before the product with v, as autocast casts softmax's fp32 output.
func attention_forward(_ y: FPtr, _ lse: FPtr, _ q: CFPtr, _ k: CFPtr, _ v: CFPtr, _ scratch: FPtr, workers: Int,
                       _ b: Int, _ t: Int, _ h: Int, _ kvh: Int, _ hd: Int, ldq: Int, ldkv: Int, ldy: Int, bf16: Bool = false) {
    let rep = h / kvh
    let scale = 1 / Float(hd).squareRoot()
    let per = attentionScratchPerWorker(t)
    parallelTasks(b * kvh, workers: workers) { task, worker in
        let S = scratch + worker * per
        let bi = task / kvh, g = task % kvh
        let kp = k + bi * t * ldkv + g * hd, vp = v + bi * t * ldkv + g * hd
        for hi in (g * rep)..<((g + 1) * rep) {
            let qp = q + bi * t * ldq + hi * hd, yp = y + bi * t * ldy + hi * hd
            let lp = lse + (bi * h + hi) * t
            var r0 = 0
            while r0 < t {
                let r1 = min(t, r0 + attentionBlock), rows = r1 - r0, keys = r1
                gemm(bf16, false, true, rows, keys, hd, scale, qp + r0 * ldq, ldq, kp, ldkv, 0, S, keys)
                for i in 0..<rows {
                    let row = S + i * keys, valid = r0 + i + 1
                    let mx = maxOf(row, valid)
                    let sum = expShiftSum(row, valid, shift: mx)
                    let inv = 1 / sum
                    for j in 0..<valid { row[j] *= inv }
                    for j in valid..<keys { row[j] = 0 }
                    lp[r0 + i] = mx + logf(sum)
                }
                if bf16 { sm_round_bf16_f32(S, rows * keys, S) }
                gemm(bf16, false, false, rows, hd, keys, 1, S, keys, vp, ldkv, 0, yp + r0 * ldy, ldy)
                r0 = r1
            }
        }
    }
}

/// Backward of `attention_forward`. Writes dq[B,T,H,hd]; writes dk/dv[B,T,KVH,hd] (zeroed here, summed over the
/// heads of each group). With P recomputed from lse: dP = dy·vᵀ, dv += Pᵀ·dy, dS = P⊙(dP − rowsum(dy⊙y)),
/// dq = dS·k/√hd, dk += dSᵀ·q/√hd (FlashAttention-2's D trick, Dao 2023). One task per (b, kv-group), so the
/// dk/dv slices written by concurrent tasks are disjoint. `bf16` (`--dtype bfloat16`; q, k, v, y and dy already
/// bf16-rounded by the caller): dP is rounded to bf16 (the gradient of autocast's bf16 product), dS is computed from the
/// fp32 P and rounded before dq and dk, and P is rounded before dv (the operands of the bf16 products).
func attention_backward(_ dq: FPtr, _ dk: FPtr, _ dv: FPtr, _ dy: CFPtr, _ y: CFPtr, _ lse: CFPtr,
                        _ q: CFPtr, _ k: CFPtr, _ v: CFPtr, _ scratch: FPtr, workers: Int,
                        _ b: Int, _ t: Int, _ h: Int, _ kvh: Int, _ hd: Int, ldq: Int, ldkv: Int, ldy: Int, bf16: Bool = false) {
    let rep = h / kvh
    let scale = 1 / Float(hd).squareRoot()
    let per = attentionScratchPerWorker(t)
    parallelTasks(b * kvh, workers: workers) { task, worker in
        let P = scratch + worker * per, dP = P + attentionBlock * t, D = P + 2 * attentionBlock * t
        let bi = task / kvh, g = task % kvh
        let kp = k + bi * t * ldkv + g * hd, vp = v + bi * t * ldkv + g * hd
        let dkp = dk + bi * t * ldkv + g * hd, dvp = dv + bi * t * ldkv + g * hd
        for ti in 0..<t { (dkp + ti * ldkv).update(repeating: 0, count: hd); (dvp + ti * ldkv).update(repeating: 0, count: hd) }
        for hi in (g * rep)..<((g + 1) * rep) {
            let qp = q + bi * t * ldq + hi * hd
            let yp = y + bi * t * ldy + hi * hd, dyp = dy + bi * t * ldy + hi * hd
            let dqp = dq + bi * t * ldq + hi * hd
            let lp = lse + (bi * h + hi) * t
            var r0 = 0
            while r0 < t {
                let r1 = min(t, r0 + attentionBlock), rows = r1 - r0, keys = r1
                gemm(bf16, false, true, rows, keys, hd, scale, qp + r0 * ldq, ldq, kp, ldkv, 0, P, keys)
                for i in 0..<rows {
                    let row = P + i * keys, valid = r0 + i + 1
                    _ = expShiftSum(row, valid, shift: lp[r0 + i])
                    for j in valid..<keys { row[j] = 0 }
                    D[i] = cblas_sdot(Int32(hd), dyp + (r0 + i) * ldy, 1, yp + (r0 + i) * ldy, 1)
                }
                gemm(bf16, false, true, rows, keys, hd, 1, dyp + r0 * ldy, ldy, vp, ldkv, 0, dP, keys)
                if bf16 { sm_round_bf16_f32(dP, rows * keys, dP) }
                else { sgemm(true, false, keys, hd, rows, 1, P, keys, dyp + r0 * ldy, ldy, 1, dvp, ldkv) }
                for i in 0..<rows {
                    let pr = P + i * keys, dr = dP + i * keys, di = D[i], valid = r0 + i + 1
                    for j in 0..<valid { dr[j] = pr[j] * (dr[j] - di) }
                    for j in valid..<keys { dr[j] = 0 }
                }
                if bf16 { sm_round_bf16_f32(dP, rows * keys, dP) }
                gemm(bf16, false, false, rows, hd, keys, scale, dP, keys, kp, ldkv, 0, dqp + r0 * ldq, ldq)
                gemm(bf16, true, false, keys, hd, rows, scale, dP, keys, qp + r0 * ldq, ldq, 1, dkp, ldkv)
                if bf16 {
                    sm_round_bf16_f32(P, rows * keys, P)
                    gemm16(true, false, keys, hd, rows, 1, P, keys, dyp + r0 * ldy, ldy, 1, dvp, ldkv)
                }
                r0 = r1
            }
        }
    }
}

// MARK: - SwiGLU

/// h[N·I] = silu(g)·u with silu(g) = g·σ(g).
func swiglu_forward(_ out: FPtr, _ g: CFPtr, _ u: CFPtr, _ count: Int) {
    parallelRanges(count, workers: workerCount(), minPerWorker: 4096) { r in
        for i in r { let x = g[i]; out[i] = x / (1 + fastExp(-x)) * u[i] }
    }
}
/// In place: on entry dg holds dh; on exit dg = dh·u·σ(g)(1 + g(1−σ(g))) and du = dh·g·σ(g).
func swiglu_backward(_ dg: FPtr, _ du: FPtr, _ g: CFPtr, _ u: CFPtr, _ count: Int) {
    parallelRanges(count, workers: workerCount(), minPerWorker: 4096) { r in
        for i in r {
            let x = g[i], s = 1 / (1 + fastExp(-x)), dh = dg[i]
            du[i] = dh * x * s
            dg[i] = dh * u[i] * s * (1 + x * (1 - s))
        }
    }
}

/// Row-fused variant: gu[N, 2I] holds gate in columns [0, I) and up in [I, 2I); out[N, I] = silu(gate)·up.
func swiglu_forward_fused(_ out: FPtr, _ gu: CFPtr, _ n: Int, _ inter: Int) {
    parallelRanges(n, workers: workerCount(), minPerWorker: 8) { rows in
        for r in rows {
            let g = gu + r * 2 * inter, u = g + inter, o = out + r * inter
            for i in 0..<inter { let x = g[i]; o[i] = x / (1 + fastExp(-x)) * u[i] }
        }
    }
}
/// Backward of `swiglu_forward_fused`: from dh[N, I] writes dgu[N, 2I] (d gate | d up).
func swiglu_backward_fused(_ dgu: FPtr, _ dh: CFPtr, _ gu: CFPtr, _ n: Int, _ inter: Int) {
    parallelRanges(n, workers: workerCount(), minPerWorker: 8) { rows in
        for r in rows {
            let g = gu + r * 2 * inter, u = g + inter, d = dh + r * inter
            let dg = dgu + r * 2 * inter, du = dg + inter
            for i in 0..<inter {
                let x = g[i], s = 1 / (1 + fastExp(-x)), dhi = d[i]
                du[i] = dhi * x * s
                dg[i] = dhi * u[i] * s * (1 + x * (1 - s))
            }
        }
    }
}

// MARK: - residual

/// out[n] = a[n] + b[n].
func residual_forward(_ out: FPtr, _ a: CFPtr, _ b: CFPtr, _ count: Int) {
    parallelRanges(count, workers: workerCount(), minPerWorker: 16384) { r in for i in r { out[i] = a[i] + b[i] } }
}
