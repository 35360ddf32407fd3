// The per-step numerical operations the loop needs, in one place: masked cross-entropy with an explicit normaliser,
// global-norm clipping and AdamW. (Bridge: delegates to the Model module's implementations where they exist.)
import Foundation
import Model

public enum TrainOps {
    /// Masked cross-entropy over `logits` `[N, V]` with `labels` `[N]` and `lossMask` `[N]`:
    /// returns Σᵢ maskᵢ·CEᵢ / `normaliser` and overwrites `logits` with ∂loss/∂logits = maskᵢ/normaliser·(softmaxᵢ − onehot(yᵢ)).
    /// With `normaliser` = Σ mask over all ranks and micro-steps, the summed gradients are those of the global batch loss.
    /// Math: MiniMind `train_pretrain.py` (`CrossEntropyLoss(reduction='none')`, `(loss*mask).sum()/mask.sum()`).
    public static func maskedCrossEntropy(logits: UnsafeMutableBufferPointer<Float>, labels: UnsafeBufferPointer<Int32>,
                                          lossMask: UnsafeBufferPointer<Float>, vocabSize V: Int, normaliser: Double) -> Double {
        let N = labels.count
        precondition(logits.count >= N * V && lossMask.count == N)
        let inv = Float(1.0 / normaliser)
        var total = 0.0
        let base = logits.baseAddress!
        for i in 0 ..< N {
            let row = base + i * V
            let m = lossMask[i]
            if m == 0 { row.update(repeating: 0, count: V); continue }
            var mx = -Float.infinity
            for j in 0 ..< V { mx = max(mx, row[j]) }
            var s: Float = 0
            for j in 0 ..< V { let e = expf(row[j] - mx); row[j] = e; s += e }
            let y = Int(labels[i])
            precondition(y >= 0 && y < V, "label \(y) outside the vocabulary (\(V))")
            let py = row[y] / s
            total += Double(m) * Double(-logf(max(py, Float.leastNormalMagnitude)))
            let scale = m * inv / s
            for j in 0 ..< V { row[j] *= scale }
            row[y] -= m * inv
        }
        return total / normaliser
    }

    /// Global L2 norm of `grads` (accumulated in Double); scales them by maxNorm/(norm+1e-6) when norm > maxNorm
    /// (torch `clip_grad_norm_`). Returns the norm before clipping.
    @discardableResult
    public static func clipGradNorm(_ grads: UnsafeMutableBufferPointer<Float>, maxNorm: Float) -> Float {
        var ss = 0.0
        var i = 0
        let n = grads.count
        let p = grads.baseAddress!
        while i < n {
            var acc: Float = 0
            let end = min(n, i + 4096)
            for k in i ..< end { acc += p[k] * p[k] }
            ss += Double(acc)
            i = end
        }
        let norm = Float(ss.squareRoot())
        if maxNorm > 0 && norm > maxNorm {
            let c = maxNorm / (norm + 1e-6)
            for k in 0 ..< n { p[k] *= c }
        }
        return norm
    }
}

/// AdamW with `torch.optim.AdamW` semantics (Loshchilov & Hutter 2019): decoupled weight decay p ← p·(1 − lr·wd),
/// bias-corrected moments. Defaults as torch: β (0.9, 0.999), eps 1e-8, weight decay 0.01.
public final class AdamWState {
    public var m: [Float]
    public var v: [Float]
    public var step: Int = 0
    public var beta1: Float, beta2: Float, eps: Float, weightDecay: Float

    public init(count: Int, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0.01) {
        m = [Float](repeating: 0, count: count)
        v = [Float](repeating: 0, count: count)
        self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
    }

    /// One update of `params` from `grads` at learning rate `lr`.
    public func update(params: UnsafeMutableBufferPointer<Float>, grads: UnsafeMutableBufferPointer<Float>, lr: Float) {
        step += 1
        let bc1 = 1 - powf(beta1, Float(step)), bc2 = 1 - powf(beta2, Float(step))
        let stepSize = lr / bc1
        let bc2Sqrt = sqrtf(bc2)
        let decay = 1 - lr * weightDecay
        let b1 = beta1, b2 = beta2, e = eps
        let n = params.count
        let p = params.baseAddress!, g = grads.baseAddress!
        m.withUnsafeMutableBufferPointer { mb in
            v.withUnsafeMutableBufferPointer { vb in
                let mp = mb.baseAddress!, vp = vb.baseAddress!
                for i in 0 ..< n {
                    let gi = g[i]
                    p[i] *= decay
                    let mi = b1 * mp[i] + (1 - b1) * gi
                    let vi = b2 * vp[i] + (1 - b2) * gi * gi
                    mp[i] = mi; vp[i] = vi
                    p[i] -= stepSize * mi / (sqrtf(vi) / bc2Sqrt + e)
                }
            }
        }
    }
}
