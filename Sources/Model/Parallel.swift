// Threading and vectorisable math helpers for the kernels.
import Foundation
import Dispatch
import CBLAS

/// Worker count for the non-BLAS loops = OpenBLAS's thread count (so `--threads` governs both).
@inline(__always) func workerCount() -> Int { max(1, Int(openblas_get_num_threads())) }

/// Runs `body(range)` over `0..<n` split into `workers` contiguous chunks on `DispatchQueue.concurrentPerform`.
/// Inline (no dispatch) when one worker or small `n`.
@inline(__always)
func parallelRanges(_ n: Int, workers: Int, minPerWorker: Int = 1, _ body: (Range<Int>) -> Void) {
    let w = min(workers, max(1, n / max(minPerWorker, 1)))
    if w <= 1 { body(0..<n); return }
    DispatchQueue.concurrentPerform(iterations: w) { i in
        let lo = n * i / w, hi = n * (i + 1) / w
        if lo < hi { body(lo..<hi) }
    }
}

/// Runs `body` on `workers` threads, each taking tasks `0..<tasks` (dynamically), with OpenBLAS set to one thread
/// for the duration (BLAS calls inside tasks then run on the calling thread). `body(task, worker)`.
func parallelTasks(_ tasks: Int, workers: Int, _ body: (Int, Int) -> Void) {
    if workers <= 1 || tasks <= 1 { for t in 0..<tasks { body(t, 0) }; return }
    let saved = openblas_get_num_threads()
    openblas_set_num_threads(1)
    let counter = TaskCounter()
    DispatchQueue.concurrentPerform(iterations: workers) { w in
        while true {
            let t = counter.next()
            if t >= tasks { break }
            body(t, w)
        }
    }
    openblas_set_num_threads(saved)
}

final class TaskCounter: @unchecked Sendable {
    private var value = 0
    private var lock = pthread_mutex_t()
    init() { pthread_mutex_init(&lock, nil) }
    deinit { pthread_mutex_destroy(&lock) }
    func next() -> Int {
        pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }
        value += 1
        return value - 1
    }
}

/// e^x for x ≤ 88, branch-free so loops over it vectorise (Cephes expf polynomial, ~1 ulp on [−87, 88];
/// inputs below −87 are clamped, giving ≈ 1.6e-38 instead of a smaller number).
@inline(__always) func fastExp(_ x: Float) -> Float {
    let xc = x < -87 ? -87 : (x > 88 ? 88 : x)
    let t = xc * 1.442_695_04 + 12_582_912.0                   // 1.5·2²³: rounds k into the low mantissa bits
    let k = t - 12_582_912.0
    let r = xc - k * 0.693_359_375 + k * 2.121_944_4e-4         // x − k·ln2 (Cody–Waite split)
    var p: Float = 1.987_569_15e-4
    p = p * r + 1.398_199_95e-3
    p = p * r + 8.333_451_9e-3
    p = p * r + 4.166_579_59e-2
    p = p * r + 1.666_666_55e-1
    p = p * r + 5.000_000_12e-1
    let e = p * r * r + r + 1
    let ki = t.bitPattern &- 0x4B40_0000                          // k as a wrapped integer
    return e * Float(bitPattern: (ki &+ 127) << 23)
}

/// out[i] = e^(x[i] − shift) for i in 0..<n; returns Σ out (Float accumulation in 8 lanes).
@inline(__always) func expShiftSum(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Float {
    var acc = SIMD8<Float>()
    var i = 0
    while i + 8 <= n {
        var v = SIMD8<Float>()
        for j in 0..<8 { let e = fastExp(x[i + j] - shift); x[i + j] = e; v[j] = e }
        acc += v
        i += 8
    }
    var s = acc.sum()
    while i < n { let e = fastExp(x[i] - shift); x[i] = e; s += e; i += 1 }
    return s
}

/// max of x[0..<n] (n ≥ 1).
@inline(__always) func maxOf(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var m = SIMD8<Float>(repeating: -.infinity)
    var i = 0
    while i + 8 <= n {
        m = pointwiseMax(m, SIMD8<Float>(UnsafeBufferPointer(start: x + i, count: 8)))
        i += 8
    }
    var r = m.max()
    while i < n { r = Swift.max(r, x[i]); i += 1 }
    return r
}
