// AdamW (Loshchilov & Hutter 2019) with torch.optim.AdamW semantics, global-norm clipping, MiniMind's cosine lr.
import Foundation

/// AdamW over a flat fp32 parameter buffer, as `torch.optim.AdamW` (single-tensor path) computes it:
/// p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
/// p ← p − (lr / (1−β1ᵗ)) · m / (√v / √(1−β2ᵗ) + eps). Weight decay applies to every parameter.
/// `m`/`v` and `stepCount` are public so checkpoints can save and restore them.
public final class AdamW {
    public var beta1: Float, beta2: Float, eps: Float, weightDecay: Float
    /// Number of completed steps t (the next `step` uses t+1).
    public var stepCount: Int = 0
    public let count: Int
    public let m: UnsafeMutableBufferPointer<Float>
    public let v: UnsafeMutableBufferPointer<Float>

    public init(count: Int, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0.01) {
        self.count = count; self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
        m = .allocate(capacity: count); m.initialize(repeating: 0)
        v = .allocate(capacity: count); v.initialize(repeating: 0)
    }
    deinit { m.deallocate(); v.deallocate() }

    /// One full step over all `count` elements: increments `stepCount`, then updates.
    public func step(params: UnsafeMutableBufferPointer<Float>, grads: UnsafeBufferPointer<Float>, lr: Float) {
        precondition(params.count == count && grads.count == count, "AdamW: buffer sizes differ from \(count)")
        stepCount += 1
        update(range: 0..<count, params: params, grads: grads, lr: lr, step: stepCount)
    }

    /// Updates only `range` of the flat buffers with step number `step` (≥ 1; does not touch `stepCount`), so ranges
    /// can be stepped as soon as their gradients are reduced. Call with the same `step` for every range of one step,
    /// then set `stepCount = step`.
    public func update(range: Range<Int>, params: UnsafeMutableBufferPointer<Float>, grads: UnsafeBufferPointer<Float>,
                       lr: Float, step: Int) {
        precondition(step >= 1 && range.lowerBound >= 0 && range.upperBound <= count, "AdamW.update: bad range/step")
        let b1 = beta1, b2 = beta2, e = eps
        let bc1 = 1 - Float(pow(Double(b1), Double(step)))
        let bc2 = 1 - Float(pow(Double(b2), Double(step)))
        let stepSize = lr / bc1
        let bc2Sqrt = bc2.squareRoot()
        let decay = 1 - lr * weightDecay
        let p = params.baseAddress!, g = grads.baseAddress!, mp = m.baseAddress!, vp = v.baseAddress!
        parallelRanges(range.count, workers: workerCount(), minPerWorker: 65536) { sub in
        for i in (range.lowerBound + sub.lowerBound)..<(range.lowerBound + sub.upperBound) {
            let gi = g[i]
            p[i] *= decay
            let mi = mp[i] + (gi - mp[i]) * (1 - b1)          // torch: exp_avg.lerp_(grad, 1 − β1)
            let vi = vp[i] * b2 + (1 - b2) * gi * gi
            mp[i] = mi; vp[i] = vi
            let denom = vi.squareRoot() / bc2Sqrt + e
            p[i] -= stepSize * (mi / denom)
        }
        }
    }
}

extension AdamW {
    /// Adds the state as tensors `<prefix>exp_avg` [count], `<prefix>exp_avg_sq` [count] (F32) and `<prefix>step` [1] (I32).
    public func addState(to writer: inout SafeTensorsWriter, prefix: String = "optimizer.") {
        writer.add(prefix + "exp_avg", shape: [count], floats: UnsafeBufferPointer(m))
        writer.add(prefix + "exp_avg_sq", shape: [count], floats: UnsafeBufferPointer(v))
        writer.add(prefix + "step", shape: [1], int32s: [Int32(stepCount)])
    }
    /// Restores the state written by `addState`; throws `ModelError` naming the tensor when missing or mis-sized.
    public func loadState(from file: SafeTensorsFile, prefix: String = "optimizer.") throws {
        try file.readFloats(prefix + "exp_avg", into: m)
        try file.readFloats(prefix + "exp_avg_sq", into: v)
        let s = try file.int32s(prefix + "step")
        guard s.count == 1, s[0] >= 0 else { throw ModelError("\(file.path): tensor \(prefix)step must hold one step count ≥ 0") }
        stepCount = Int(s[0])
    }
}

/// Global L2 norm of `grads` (accumulated in Double).
public func gradNorm(_ grads: UnsafeBufferPointer<Float>) -> Float {
    let n = grads.count, workers = workerCount()
    guard n > 0 else { return 0 }
    var partial = [Double](repeating: 0, count: workers)
    partial.withUnsafeMutableBufferPointer { part in
        let part = part.baseAddress!, g = grads.baseAddress!
        parallelChunks(n, workers: workers, minPerWorker: 65536) { chunk, r in
            var s = 0.0
            for j in r { let x = Double(g[j]); s += x * x }
            part[chunk] = s
        }
    }
    return Float(partial.reduce(0, +).squareRoot())
}

/// `torch.nn.utils.clip_grad_norm_`: returns the pre-clip global L2 norm; when norm > maxNorm scales every gradient
/// by maxNorm / (norm + 1e-6).
@discardableResult
public func clipGradNorm(_ grads: UnsafeMutableBufferPointer<Float>, maxNorm: Float) -> Float {
    let norm = gradNorm(UnsafeBufferPointer(grads))
    let coef = maxNorm / (norm + 1e-6)
    if coef < 1 {
        let g = grads.baseAddress!
        parallelRanges(grads.count, workers: workerCount(), minPerWorker: 65536) { r in for i in r { g[i] *= coef } }
    }
    return norm
}

/// MiniMind's cosine schedule: lr(s) = lr/10 + lr/2·(1 + cos(π·s/S)), s = current step, S = total steps.
public func cosineLR(step: Int, totalSteps: Int, baseLR: Double) -> Double {
    baseLR / 10 + 0.5 * baseLR * (1 + cos(Double.pi * Double(step) / Double(max(totalSteps, 1))))
}
