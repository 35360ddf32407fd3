// Masked cross-entropy loss head over logits [B, T, V] (MiniMind: loss = Σ CE·loss_mask / Σ loss_mask).
import Foundation

public enum CrossEntropy {
    /// Masked cross-entropy with its gradient, in place.
    ///
    /// - Parameters:
    ///   - logits: `[N, V]` (N = B·T rows); OVERWRITTEN with dLogits = (softmax − onehot(label))·mask/`normalizer`.
    ///   - labels: `[N]` target ids; a row whose mask is 0 may hold any label (e.g. −100 or pad) and gets a zero gradient.
    ///   - lossMask: `[N]` per-token weights (MiniMind's loss_mask, usually 0/1).
    ///   - normalizer: the N of loss = Σ CE·mask / N — the global Σmask (data-parallel ranks pass the all-reduced
    ///     count). Must be > 0 unless every mask is 0.
    /// - Returns: Σ CE·mask over the rows (Double; divide by `normalizer` for the loss).
    /// - Precondition: a label with a non-zero mask lies in [0, V) (failure names the row).
    @discardableResult
    public static func forwardBackward(logits: UnsafeMutableBufferPointer<Float>, labels: UnsafeBufferPointer<Int32>,
                                       lossMask: UnsafeBufferPointer<Float>, vocabSize V: Int, normalizer: Float) -> Double {
        let n = labels.count
        precondition(logits.count == n * V && lossMask.count == n, "crossEntropy: logits \(logits.count) / labels \(n) / mask \(lossMask.count) disagree with V = \(V)")
        let base = logits.baseAddress!
        let workers = workerCount()
        var partial = [Double](repeating: 0, count: workers)
        partial.withUnsafeMutableBufferPointer { part in
            let part = part.baseAddress!
            parallelChunks(n, workers: workers) { chunk, rows in
                var total = 0.0
                for r in rows {
                    let row = base + r * V
                    let m = lossMask[r]
                    if m == 0 { row.update(repeating: 0, count: V); continue }
                    let label = Int(labels[r])
                    precondition(label >= 0 && label < V, "crossEntropy: labels[\(r)] = \(label) outside [0, \(V)) with loss_mask \(m)")
                    let mx = maxOf(row, V)
                    let xl = row[label]
                    let sum = expShiftSum(row, V, shift: mx)
                    let lse = mx + logf(sum)
                    total += Double(lse - xl) * Double(m)
                    let scale = m / normalizer / sum
                    for j in 0..<V { row[j] *= scale }
                    row[label] -= m / normalizer
                }
                part[chunk] = total
            }
        }
        let total = partial.reduce(0, +)
        return total
    }

    /// Per-token cross-entropy without gradient (for evaluation): `out[r]` = −log softmax(logits[r])[labels[r]]
    /// for every row (labels outside [0, V) give 0). `logits` `[N, V]` is left unchanged.
    public static func tokenLoss(logits: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Int32>, vocabSize V: Int,
                                 out: UnsafeMutableBufferPointer<Float>) {
        let n = labels.count
        precondition(logits.count == n * V && out.count == n, "tokenLoss: shapes disagree")
        let base = logits.baseAddress!
        for r in 0..<n {
            let label = Int(labels[r])
            if label < 0 || label >= V { out[r] = 0; continue }
            let row = base + r * V
            let mx = maxOf(row, V)
            var sum: Float = 0
            for j in 0..<V { sum += fastExp(row[j] - mx) }
            out[r] = mx + logf(sum) - row[label]
        }
    }

    /// Convenience: per-token log-probabilities of `labels` (= −tokenLoss), `[N]`.
    public static func tokenLogProbs(logits: UnsafeBufferPointer<Float>, labels: UnsafeBufferPointer<Int32>, vocabSize V: Int) -> [Float] {
        var out = [Float](repeating: 0, count: labels.count)
        out.withUnsafeMutableBufferPointer { tokenLoss(logits: logits, labels: labels, vocabSize: V, out: $0) }
        for i in out.indices { out[i] = -out[i] }
        return out
    }
}
