// Reward-model loss head: the scalar head of transformers' `LlamaForSequenceClassification` (num_labels 1) and the
// Bradley–Terry pairwise loss (Bradley & Terry 1952; as used for RLHF reward models by Ouyang et al. 2022,
// "InstructGPT", eq. 1): r = score · h[last], loss = −mean over pairs of log σ(r_chosen − r_rejected).
// Rows [0, P) of a batch are chosen, [P, 2P) rejected (the DPO layout, `DPODataset`); pair k = rows k and P + k.
import Foundation
import Model

public enum RewardLoss {
    /// Scalar rewards `[rows]`: r_i = Σ_c score[c] · hidden[i, last_i, c], accumulated in Double.
    /// - Parameters:
    ///   - hidden: final-norm hidden states `[rows, T, C]`.
    ///   - lastIndex: per row, the position read (its last non-pad token), each in `[0, T)`.
    ///   - score: `score.weight` `[1, C]`.
    public static func rewards(hidden: UnsafeBufferPointer<Float>, lastIndex: [Int], score: UnsafeBufferPointer<Float>,
                               rows: Int, seqLen T: Int, hiddenSize C: Int) -> [Float] {
        precondition(hidden.count == rows * T * C && lastIndex.count == rows && score.count == C, "reward: shapes disagree")
        return (0..<rows).map { i in
            precondition(lastIndex[i] >= 0 && lastIndex[i] < T, "reward: last index \(lastIndex[i]) of row \(i) outside [0, \(T))")
            let h = hidden.baseAddress! + (i * T + lastIndex[i]) * C, sp = score.baseAddress!
            var s = 0.0
            for c in 0..<C { s += Double(sp[c]) * Double(h[c]) }
            return Float(s)
        }
    }

    /// log σ(x), stable for every x (−softplus(−x)).
    @inline(__always) static func logSigmoid(_ x: Double) -> Double { x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)) }
    /// σ(x), stable for every x.
    @inline(__always) static func sigmoid(_ x: Double) -> Double { x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)) }

    public struct Result: Sendable {
        /// Σ over pairs of −log σ(r_c − r_r) (divide by the global pair count for the loss).
        public var lossSum: Double
        /// Pairs with r_c > r_r.
        public var correct: Int
        /// The rewards `[rows]` (chosen rows, then rejected rows).
        public var rewards: [Float]
    }

    /// Loss and gradient of one micro-batch. `hidden` `[rows, T, C]` (the final-norm hidden states) is OVERWRITTEN
    /// with dLoss/dhidden — zero except at each row's `lastIndex`, where it is dLoss/dr_i · score — and
    /// dLoss/dscore = Σ_i dLoss/dr_i · h[i, last_i] is ADDED to `scoreGrad` `[C]`, where
    /// loss = Σ_pairs −log σ(r_c − r_r) / `normalizer` (the global number of pairs).
    public static func forwardBackward(hidden: UnsafeMutableBufferPointer<Float>, lastIndex: [Int], score: UnsafeBufferPointer<Float>,
                                       scoreGrad: UnsafeMutableBufferPointer<Float>, rows: Int, seqLen T: Int, hiddenSize C: Int,
                                       normalizer: Double) -> Result {
        precondition(rows % 2 == 0, "reward: needs an even number of rows (chosen rows then rejected rows)")
        precondition(scoreGrad.count == C, "reward: score gradient has \(scoreGrad.count) elements, expected \(C)")
        let r = rewards(hidden: UnsafeBufferPointer(hidden), lastIndex: lastIndex, score: score, rows: rows, seqLen: T, hiddenSize: C)
        let P = rows / 2
        var dr = [Double](repeating: 0, count: rows)
        var lossSum = 0.0, correct = 0
        for k in 0..<P {
            let m = Double(r[k]) - Double(r[P + k])
            lossSum -= logSigmoid(m)
            if m > 0 { correct += 1 }
            // d(−log σ(m))/dm = −σ(−m); m = r_c − r_r.
            let g = -sigmoid(-m) / normalizer
            dr[k] = g; dr[P + k] = -g
        }
        // The hidden states read (copied before the buffer becomes the gradient), then dhidden.
        let base = hidden.baseAddress!
        var last = [Float](repeating: 0, count: rows * C)
        last.withUnsafeMutableBufferPointer { l in
            for i in 0..<rows { (l.baseAddress! + i * C).update(from: base + (i * T + lastIndex[i]) * C, count: C) }
        }
        hidden.update(repeating: 0)
        last.withUnsafeBufferPointer { l in
            let sp = score.baseAddress!, gp = scoreGrad.baseAddress!
            for i in 0..<rows {
                let d = Float(dr[i]), h = base + (i * T + lastIndex[i]) * C, hl = l.baseAddress! + i * C
                for c in 0..<C {
                    h[c] = d * sp[c]
                    gp[c] += d * hl[c]
                }
            }
        }
        return Result(lossSum: lossSum, correct: correct, rewards: r)
    }

    /// Per row, the position the head reads in a reward batch: the last position whose `loss_mask` ≠ 0
    /// (`RewardPairDataset` marks exactly one per row, its last non-pad token); 0 for an all-zero row.
    public static func lastIndices(lossMask: [Float], rows: Int, seqLen T: Int) -> [Int] {
        (0..<rows).map { i in (0..<T).last { lossMask[i * T + $0] != 0 } ?? 0 }
    }
}
