// Per-row softmax helpers shared by the DPO and distillation loss heads (rows of logits [N, V], split over threads).
import Foundation
import Dispatch

/// Runs `body(rows)` over `n` rows split into contiguous chunks, concurrently.
func forRowChunks(_ n: Int, _ body: (Range<Int>) -> Void) {
    let w = max(1, min(n, ProcessInfo.processInfo.activeProcessorCount))
    if w == 1 { body(0..<n); return }
    DispatchQueue.concurrentPerform(iterations: w) { k in body((n * k / w)..<(n * (k + 1) / w)) }
}

/// log Σ exp(x[j] / temperature) over a row of `V` (max-shifted).
@inline(__always) func rowLogSumExp(_ x: UnsafePointer<Float>, _ V: Int, _ invT: Float = 1) -> Float {
    var mx = -Float.infinity
    for j in 0..<V { mx = max(mx, x[j]) }
    mx *= invT
    var s: Float = 0
    for j in 0..<V { s += expf(x[j] * invT - mx) }
    return mx + logf(s)
}
