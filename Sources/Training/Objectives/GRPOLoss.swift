// GRPO loss head (Shao et al. 2024, DeepSeekMath §4.1) with the clipped probability ratio and the k3 KL estimator, as
// MiniMind's trainer/train_grpo.py computes it with `--loss_type grpo`:
//   ratio = exp(logp − old_logp), A = group-normalised advantage of the row,
//   per-token loss = −(min(ratio·A, clamp(ratio, 1−ε, 1+ε)·A) − β·KL),  KL = exp(ref − logp) − (ref − logp) − 1,
//   loss = mean over rows of Σ_t(per-token loss · mask) / max(Σ_t mask, 1).
// A completion token's log-prob sits at the position that predicts it: `labels[b, t]` = the token at t+1, and
// `loss_mask[b, t]` = the completion mask of that token (so the token-level layout is the one every other head reads).
import Foundation
import Datasets

public enum GRPOLoss {
    /// The training batch of a rollout batch, in the token-level layout the loss head reads: row b is
    /// `input_ids[b]` (prompt of `promptLens[b]` tokens, then `R` completion slots, then right padding), `labels[b, t]` =
    /// `input_ids[b, t+1]`, and completion token j (at `promptLens[b] + j`) is predicted at position
    /// t = `promptLens[b] − 1 + j`, where `loss_mask` = `completionMask[b, j]` and `oldLogProbs` = `oldLogProbs[b, j]`.
    /// - Parameters: `inputIds` `[rows, T]`; `promptLens` `[rows]` (each ≥ 1 with `promptLens[b] + R ≤ T`);
    ///   `completionMask`, `oldLogProbs` `[rows, R]` (nil: on-policy, see `forwardBackward`); `advantages` `[rows]`.
    /// - Precondition: the shapes and bounds above (callers validate their input first).
    public static func batch(inputIds: [Int32], rows B: Int, seqLen T: Int, promptLens: [Int], completionSlots R: Int,
                             completionMask: [Float], oldLogProbs: [Float]?, advantages: [Float]) -> Batch {
        precondition(inputIds.count == B * T && promptLens.count == B && completionMask.count == B * R
                     && (oldLogProbs?.count ?? B * R) == B * R && advantages.count == B, "GRPOLoss.batch: shapes disagree")
        var b = Batch(batchSize: B, seqLen: T)
        b.inputIds = inputIds
        if oldLogProbs != nil { b.oldLogProbs = [Float](repeating: 0, count: B * T) }
        b.advantages = advantages
        var count = 0
        for r in 0..<B {
            let P = promptLens[r]
            precondition(P >= 1 && P + R <= T, "GRPOLoss.batch: prompt length \(P) + \(R) slots outside [1, \(T)]")
            for t in 0..<T - 1 { b.labels[r * T + t] = inputIds[r * T + t + 1] }
            for j in 0..<R {
                let m = completionMask[r * R + j]
                b.lossMask[r * T + P - 1 + j] = m
                if let old = oldLogProbs { b.oldLogProbs[r * T + P - 1 + j] = old[r * R + j] }
                if m != 0 { count += 1 }
            }
        }
        b.maskCount = count
        return b
    }

    /// Gathers the completion slots `[rows, R]` of a per-position tensor `[rows, T]` laid out as `batch(…)` lays it.
    public static func completionSlots(_ x: [Float], rows B: Int, seqLen T: Int, promptLens: [Int], completionSlots R: Int) -> [Float] {
        var out = [Float](repeating: 0, count: B * R)
        for r in 0..<B { for j in 0..<R { out[r * R + j] = x[r * T + promptLens[r] - 1 + j] } }
        return out
    }

    /// MiniMind's completion mask: 1 for the slots up to and including the first `eos` among the non-pad slots, 0
    /// after it and on pads (`pad[b, j]` = slot j holds no generated token). `completion` and `pad` are `[rows, R]`.
    public static func completionMask(completion: [Int32], isPad: [Bool], rows B: Int, slots R: Int, eos: Int32) -> [Float] {
        var m = [Float](repeating: 0, count: B * R)
        for r in 0..<B {
            var last = R - 1
            for j in 0..<R where !isPad[r * R + j] && completion[r * R + j] == eos { last = j; break }
            for j in 0...last where !isPad[r * R + j] { m[r * R + j] = 1 }
        }
        return m
    }

    /// Group-normalised advantages `[rows]`: (r − group mean) / (group population std + 1e-4) over consecutive groups
    /// of `groupSize` rows (MiniMind: `grouped_rewards.std(unbiased=False)`).
    /// - Precondition: `rewards.count` is a multiple of `groupSize ≥ 1`.
    public static func advantages(rewards: [Float], groupSize G: Int) -> [Float] {
        precondition(G >= 1 && rewards.count % G == 0, "advantages: \(rewards.count) rewards are not groups of \(G)")
        var out = [Float](repeating: 0, count: rewards.count)
        for g in stride(from: 0, to: rewards.count, by: G) {
            var mean = 0.0
            for i in g..<g + G { mean += Double(rewards[i]) }
            mean /= Double(G)
            var v = 0.0
            for i in g..<g + G { v += (Double(rewards[i]) - mean) * (Double(rewards[i]) - mean) }
            let sd = (v / Double(G)).squareRoot()
            for i in g..<g + G { out[i] = Float((Double(rewards[i]) - mean) / (sd + 1e-4)) }
        }
        return out
    }

    /// Per-position log-probs `[rows, T]`: log softmax(logits[b, t])[labels[b, t]] where `mask` ≠ 0, 0 elsewhere.
    /// `logits` `[rows, T, V]` is not modified.
    public static func tokenLogProbs(logits: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Int32>,
                                     mask: UnsafeBufferPointer<Float>, rows: Int, seqLen T: Int, vocabSize V: Int) -> [Float] {
        precondition(logits.count == rows * T * V && labels.count == rows * T && mask.count == rows * T, "tokenLogProbs: shapes disagree")
        var out = [Float](repeating: 0, count: rows * T)
        let base = logits.baseAddress!
        out.withUnsafeMutableBufferPointer { o in
            let op = o.baseAddress!
            forRowChunks(rows * T) { ps in
                for p in ps where mask[p] != 0 {
                    let lab = Int(labels[p])
                    precondition(lab >= 0 && lab < V, "grpo: labels[\(p / T)][\(p % T)] = \(lab) outside [0, \(V))")
                    let row = base + p * V
                    op[p] = row[lab] - rowLogSumExp(row, V)
                }
            }
        }
        return out
    }

    public struct Result: Sendable {
        /// Σ over rows of the row's masked mean per-token loss (divide by the global row count for the loss).
        public var lossSum: Double
        /// Σ over rows of the row's masked mean of ref − logp (MiniMind's logged `kl_ref` is the token-weighted mean;
        /// this is the row mean, summed) and of the k3 KL estimate.
        public var klRefSum: Double, klSum: Double
        /// Counted tokens with A ≠ 0 whose clipped term was the one `min` took, the ratio outside [1−ε, 1+ε] (no
        /// surrogate gradient).
        public var clippedTokens: Int
        /// Counted tokens (Σ mask ≠ 0).
        public var tokens: Int
        /// The policy's per-position log-probs `[rows, T]` (0 where the mask is 0).
        public var policyLogProbs: [Float]
    }

    /// Loss and gradient: `logits` `[rows, T, V]` (policy) is OVERWRITTEN with dLoss/dlogits, where
    /// loss = Σ_rows (Σ_t per-token loss · mask / max(Σ_t mask, 1)) / `normalizer` (the global number of rows).
    /// - Parameters:
    ///   - labels, mask: `[rows, T]`; the target token and the completion mask at every position.
    ///   - oldLogProbs, refLogProbs: `[rows, T]`, read where the mask ≠ 0 (the rollout policy's, the frozen reference's).
    ///     An empty `oldLogProbs` means on-policy: old = this forward's logp, detached (ratio 1). With one update per
    ///     rollout batch that is what a separate no-grad forward of the unchanged policy gives (MiniMind's rollout
    ///     engine computes them so), bit for bit, without the extra forward.
    ///   - advantages: `[rows]`.
    /// Gradient: dLoss/dlogp = w·(−g + β·(1 − exp(ref − logp))) with w = mask / (Σ mask · normalizer) and g = ratio·A
    /// when `min` takes the unclipped term or the ratio is inside the clip range (clamp passes the gradient), else 0;
    /// dlogp/dlogits = onehot(label) − softmax.
    public static func forwardBackward(logits: UnsafeMutableBufferPointer<Float>, labels: UnsafeBufferPointer<Int32>,
                                       mask: UnsafeBufferPointer<Float>, oldLogProbs: UnsafeBufferPointer<Float>,
                                       refLogProbs: UnsafeBufferPointer<Float>, advantages: UnsafeBufferPointer<Float>,
                                       rows: Int, seqLen T: Int, vocabSize V: Int, beta: Double, epsilon: Double,
                                       normalizer: Double) -> Result {
        precondition(logits.count == rows * T * V && labels.count == rows * T && mask.count == rows * T
                     && (oldLogProbs.isEmpty || oldLogProbs.count == rows * T) && refLogProbs.count == rows * T && advantages.count == rows,
                     "grpo: shapes disagree")
        let base = logits.baseAddress!
        var rowLoss = [Double](repeating: 0, count: rows), rowKLRef = rowLoss, rowKL = rowLoss
        var rowClipped = [Int](repeating: 0, count: rows), rowTokens = rowClipped
        var lp = [Float](repeating: 0, count: rows * T)
        rowLoss.withUnsafeMutableBufferPointer { rl in rowKLRef.withUnsafeMutableBufferPointer { rk in
        rowKL.withUnsafeMutableBufferPointer { rq in rowClipped.withUnsafeMutableBufferPointer { rc in
        rowTokens.withUnsafeMutableBufferPointer { rt in lp.withUnsafeMutableBufferPointer { lpb in
            let rl = rl.baseAddress!, rk = rk.baseAddress!, rq = rq.baseAddress!, rc = rc.baseAddress!, rt = rt.baseAddress!
            let lpp = lpb.baseAddress!
            forRowChunks(rows) { rs in
                for r in rs {
                    var msum = 0.0
                    for t in 0..<T { msum += Double(mask[r * T + t]) }
                    let denom = max(msum, 1)
                    let A = Double(advantages[r])
                    var s = 0.0, kr = 0.0, kq = 0.0, clipped = 0, n = 0
                    for t in 0..<T {
                        let p = r * T + t
                        let row = base + p * V
                        let w = Double(mask[p])
                        if w == 0 { row.update(repeating: 0, count: V); continue }
                        let lab = Int(labels[p])
                        precondition(lab >= 0 && lab < V, "grpo: labels[\(r)][\(t)] = \(lab) outside [0, \(V))")
                        let lse = rowLogSumExp(row, V)
                        let logp = Double(row[lab] - lse)
                        lpp[p] = Float(logp)
                        let ratio = oldLogProbs.isEmpty ? 1 : exp(logp - Double(oldLogProbs[p]))
                        let clampR = min(max(ratio, 1 - epsilon), 1 + epsilon)
                        let inside = ratio >= 1 - epsilon && ratio <= 1 + epsilon
                        let unclippedTerm = ratio * A, clippedTerm = clampR * A
                        let surrogate = min(unclippedTerm, clippedTerm)
                        let x = Double(refLogProbs[p]) - logp
                        let kl = exp(x) - x - 1
                        s += -(surrogate - beta * kl) * w
                        kr += x * w; kq += kl * w
                        n += 1
                        let g: Double
                        if unclippedTerm < clippedTerm || inside { g = ratio * A } else { g = 0; if A != 0 { clipped += 1 } }
                        let dlogp = w / (denom * normalizer) * (-g + beta * (1 - exp(x)))
                        // dLoss/dlogits = dlogp · (onehot − softmax).
                        let d = Float(dlogp)
                        for j in 0..<V { row[j] = -d * expf(row[j] - lse) }
                        row[lab] += d
                    }
                    rl[r] = s / denom; rk[r] = kr / denom; rq[r] = kq / denom
                    rc[r] = clipped; rt[r] = n
                }
            }
        } } } } } }
        return Result(lossSum: rowLoss.reduce(0, +), klRefSum: rowKLRef.reduce(0, +), klSum: rowKL.reduce(0, +),
                      clippedTokens: rowClipped.reduce(0, +), tokens: rowTokens.reduce(0, +), policyLogProbs: lp)
    }
}
