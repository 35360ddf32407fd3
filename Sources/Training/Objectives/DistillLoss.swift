// White-box distillation loss head (Hinton et al. 2015) as MiniMind's `train_distillation.py`:
// loss = α·(Σ CE·mask / Σ mask) + (1 − α)·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) averaged over masked rows
// (F.kl_div(..., reduction="batchmean") over the rows where loss_mask == 1).
import Foundation

public enum DistillLoss {
    public struct Result: Sendable {
        /// Σ CE·mask over the rows.
        public var ceSum: Double
        /// Σ over masked rows of KL(teacher_T ‖ student_T) (without the T² factor).
        public var klSum: Double
        /// Masked rows.
        public var rows: Int
    }

    /// `student` `[N, V]` is OVERWRITTEN with dLoss/dlogits for loss = α·ceSum/`ceNormalizer` +
    /// (1 − α)·T²·klSum/`klNormalizer`; `teacher` `[N, V]` is read only. Rows with mask 0 get a zero gradient.
    public static func forwardBackward(student: UnsafeMutableBufferPointer<Float>, teacher: UnsafeBufferPointer<Float>,
                                       labels: UnsafeBufferPointer<Int32>, mask: UnsafeBufferPointer<Float>, vocabSize V: Int,
                                       alpha: Double, temperature: Double, ceNormalizer: Double, klNormalizer: Double) -> Result {
        let n = labels.count
        precondition(student.count == n * V && teacher.count == n * V && mask.count == n, "distill: shapes disagree")
        let s0 = student.baseAddress!, t0 = teacher.baseAddress!
        let invT = Float(1 / temperature)
        let ceScale = Float(alpha / ceNormalizer)
        let klScale = Float((1 - alpha) * temperature / klNormalizer)   // d/ds of (1−α)T²·KL/norm = (1−α)T·(q − p)/norm
        let w = max(1, min(n, ProcessInfo.processInfo.activeProcessorCount))
        var parts = [(Double, Double, Int)](repeating: (0, 0, 0), count: w)
        parts.withUnsafeMutableBufferPointer { pp in
            let pp = pp.baseAddress!
            DispatchQueue.concurrentPerform(iterations: w) { k in
                var ce = 0.0, kl = 0.0, cnt = 0
                let q = UnsafeMutablePointer<Float>.allocate(capacity: V); defer { q.deallocate() }
                for r in (n * k / w)..<(n * (k + 1) / w) {
                    let s = s0 + r * V, t = t0 + r * V
                    let m = mask[r]
                    if m == 0 { s.update(repeating: 0, count: V); continue }
                    let lab = Int(labels[r])
                    precondition(lab >= 0 && lab < V, "distill: labels[\(r)] = \(lab) outside [0, \(V))")
                    let lse = rowLogSumExp(s, V)
                    ce += Double(lse - s[lab]) * Double(m)
                    let lseS = rowLogSumExp(s, V, invT), lseT = rowLogSumExp(t, V, invT)
                    var klr = 0.0
                    for j in 0..<V {
                        let logq = s[j] * invT - lseS, logp = t[j] * invT - lseT
                        let p = expf(logp)
                        if p > 0 { klr += Double(p * (logp - logq)) }
                        q[j] = expf(logq) - p                        // q − p
                    }
                    kl += klr; cnt += 1
                    let a = ceScale * m
                    for j in 0..<V { s[j] = a * expf(s[j] - lse) + klScale * q[j] }
                    s[lab] -= a
                }
                pp[k] = (ce, kl, cnt)
            }
        }
        return Result(ceSum: parts.reduce(0) { $0 + $1.0 }, klSum: parts.reduce(0) { $0 + $1.1 }, rows: parts.reduce(0) { $0 + $1.2 })
    }
}
