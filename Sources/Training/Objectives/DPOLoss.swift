// DPO loss head (Rafailov et al. 2023) exactly as MiniMind's `train_dpo.py` `dpo_loss`: sequence log-prob = MEAN of the
// token log-probs over the loss mask; rows [0, B/2) chosen, [B/2, B) rejected;
// loss = mean over pairs of −log σ(β·((π_c − π_r) − (ref_c − ref_r))).
import Foundation

public enum DPOLoss {
    /// Per-row sequence log-probs `[rows]` = Σ_t mask·log softmax(logits)[label] / Σ_t mask (0 for an all-masked row).
    /// `logits` `[rows, T, V]` is not modified.
    public static func sequenceLogProbs(logits: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Int32>,
                                        mask: UnsafeBufferPointer<Float>, rows: Int, seqLen T: Int, vocabSize V: Int) -> [Double] {
        precondition(logits.count == rows * T * V && labels.count == rows * T && mask.count == rows * T, "sequenceLogProbs: shapes disagree")
        var out = [Double](repeating: 0, count: rows)
        let base = logits.baseAddress!
        out.withUnsafeMutableBufferPointer { o in
            let op = o.baseAddress!
            forRowChunks(rows) { rs in
                for r in rs {
                    var s = 0.0, m = 0.0
                    for t in 0..<T where mask[r * T + t] != 0 {
                        let row = base + (r * T + t) * V
                        let lab = Int(labels[r * T + t])
                        precondition(lab >= 0 && lab < V, "dpo: labels[\(r)][\(t)] = \(lab) outside [0, \(V))")
                        s += Double(row[lab] - rowLogSumExp(row, V)) * Double(mask[r * T + t])
                        m += Double(mask[r * T + t])
                    }
                    op[r] = m > 0 ? s / m : 0
                }
            }
        }
        return out
    }

    public struct Result: Sendable {
        /// Σ over pairs of −log σ(β·margin) (divide by the global pair count for the loss).
        public var lossSum: Double
        /// Pairs whose policy-vs-reference margin is > 0.
        public var preferred: Int
        public var pairs: Int
        /// Per-pair margins (π_c − π_r) − (ref_c − ref_r).
        public var margins: [Double]
    }

    /// Loss and gradient: `logits` `[rows, T, V]` (policy) is OVERWRITTEN with dLoss/dlogits where
    /// loss = Σ_pairs −log σ(β·margin) / `normalizer` (`normalizer` = the global number of pairs).
    public static func forwardBackward(logits: UnsafeMutableBufferPointer<Float>, labels: UnsafeBufferPointer<Int32>,
                                       mask: UnsafeBufferPointer<Float>, referenceLogProbs ref: [Double], rows: Int,
                                       seqLen T: Int, vocabSize V: Int, beta: Double, normalizer: Double) -> Result {
        precondition(rows % 2 == 0 && ref.count == rows, "dpo: needs an even number of rows (chosen then rejected) and one reference log-prob per row")
        let base = logits.baseAddress!
        // Pass 1: token log-probs and, in place, d logp / d logits = onehot − softmax (masked rows only).
        var seq = [Double](repeating: 0, count: rows)
        var msum = [Double](repeating: 0, count: rows)
        seq.withUnsafeMutableBufferPointer { sp in
            msum.withUnsafeMutableBufferPointer { mp in
                let sp = sp.baseAddress!, mp = mp.baseAddress!
                forRowChunks(rows) { rs in
                    for r in rs {
                        var s = 0.0, m = 0.0
                        for t in 0..<T {
                            let row = base + (r * T + t) * V
                            let w = mask[r * T + t]
                            if w == 0 { row.update(repeating: 0, count: V); continue }
                            let lab = Int(labels[r * T + t])
                            precondition(lab >= 0 && lab < V, "dpo: labels[\(r)][\(t)] = \(lab) outside [0, \(V))")
                            let lse = rowLogSumExp(row, V)
                            s += Double(row[lab] - lse) * Double(w)
                            m += Double(w)
                            for j in 0..<V { row[j] = -expf(row[j] - lse) }
                            row[lab] += 1
                        }
                        sp[r] = m > 0 ? s / m : 0
                        mp[r] = m
                    }
                }
            }
        }
        // Pairs.
        let P = rows / 2
        var coef = [Double](repeating: 0, count: rows)   // dLoss / d seq_logp[r]
        var lossSum = 0.0, preferred = 0
        var margins: [Double] = []
        for k in 0..<P {
            let margin = (seq[k] - seq[k + P]) - (ref[k] - ref[k + P])
            margins.append(margin)
            let z = beta * margin
            // −log σ(z) = softplus(−z), computed stably.
            lossSum += z > 0 ? log1p(exp(-z)) : -z + log1p(exp(z))
            if margin > 0 { preferred += 1 }
            let sigNeg = 1 / (1 + exp(z))              // σ(−z)
            let dz = -sigNeg / normalizer
            coef[k] = beta * dz
            coef[k + P] = -beta * dz
        }
        // Pass 2: scale every masked position by coef[r]·mask / Σmask.
        coef.withUnsafeBufferPointer { cp in
            msum.withUnsafeBufferPointer { mp in
                forRowChunks(rows) { rs in
                    for r in rs where mp[r] > 0 {
                        for t in 0..<T {
                            let w = mask[r * T + t]
                            if w == 0 { continue }
                            let a = Float(cp[r] * Double(w) / mp[r])
                            let row = base + (r * T + t) * V
                            for j in 0..<V { row[j] *= a }
                        }
                    }
                }
            }
        }
        return Result(lossSum: lossSum, preferred: preferred, pairs: P, margins: margins)
    }
}
