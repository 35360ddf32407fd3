// Threading and vectorisable math helpers for the kernels.
import Foundation
import Dispatch
import CBLAS
import CQuant

/// Threads used by the model: OpenBLAS's thread count, which also sets the worker count of the non-BLAS loops and
/// the number of batch parts `forward`/`backward` run concurrently. The one place the process sets it: every command's
/// `--threads N`, the training ranks' threads per rank and the model's single-threaded sections all come here.
public enum ComputeThreads {
    /// Largest count accepted (OpenBLAS caps it at its build's MAX_CPU_NUMBER anyway).
    public static let maxCount = 1024

    /// The current count; setting it calls `set(_:)`.
    public static var count: Int {
        get { Int(openblas_get_num_threads()) }
        set { set(newValue) }
    }

    /// Sets OpenBLAS's thread count (and so the model's worker count) to `n`, clamped to 1…`maxCount`.
    public static func set(_ n: Int) {
        openblas_set_num_threads(Int32(min(max(1, n), maxCount)))
    }

    /// Runs `body` with one thread (BLAS calls inside it then run on the calling thread, so `body` may run them
    /// concurrently itself), restoring the previous count afterwards.
    public static func withSingleThread<R>(_ body: () throws -> R) rethrows -> R {
        let saved = count
        set(1)
        defer { set(saved) }
        return try body()
    }
}

/// Worker count for the non-BLAS loops = OpenBLAS's thread count (so `--threads` governs both).
@inline(__always) func workerCount() -> Int { max(1, ComputeThreads.count) }

/// Runs `body(range)` over `0..<n` split into `workers` contiguous chunks on `DispatchQueue.concurrentPerform`.
/// Inline (no dispatch) when one worker or small `n`.
@inline(__always)
func parallelRanges(_ n: Int, workers: Int, minPerWorker: Int = 1, _ body: (Range<Int>) -> Void) {
    parallelChunks(n, workers: workers, minPerWorker: minPerWorker) { _, r in body(r) }
}

/// Whether the decode products run on the spin-waiting pool (`spinParallelRanges`); env `SWIFTMIND_SPIN_POOL=0` (or
/// false/off/gcd) runs them on GCD as before (for comparisons).
let decodeUsesSpinPool: Bool = {
    guard let v = ProcessInfo.processInfo.environment["SWIFTMIND_SPIN_POOL"]?.lowercased(), !v.isEmpty else { return true }
    if ["0", "false", "off", "gcd"].contains(v) { return false }
    if !["1", "true", "on", "spin"].contains(v) {
        FileHandle.standardError.write(Data("warning: SWIFTMIND_SPIN_POOL=\(v) ignored (use 0 for GCD, 1 for the spin pool)\n".utf8))
    }
    return true
}()

/// The split of a decode step's product over the workers: `spinParallelRanges` unless `SWIFTMIND_SPIN_POOL=0`.
@inline(__always)
func decodeRanges(_ n: Int, workers: Int, minPerWorker: Int = 1, _ body: (Range<Int>) -> Void) {
    if decodeUsesSpinPool { spinParallelRanges(n, workers: workers, minPerWorker: minPerWorker, body) }
    else { parallelRanges(n, workers: workers, minPerWorker: minPerWorker, body) }
}

/// As `parallelRanges`, on CQuant's spin-waiting pool (`sm_pool_run`) instead of `DispatchQueue.concurrentPerform`:
/// the chunks of a decode step's products, where a product takes tens of microseconds and waking a GCD worker for each
/// one costs a sizeable part of that. Chunk i covers `n·i/w ..< n·(i+1)/w` as in `parallelChunks`.
func spinParallelRanges(_ n: Int, workers: Int, minPerWorker: Int = 1, _ body: (Range<Int>) -> Void) {
    spinParallelChunks(n, workers: workers, minPerWorker: minPerWorker) { _, r in body(r) }
}

/// As `spinParallelRanges`, also passing the chunk index in 0..<chunkCount(n, workers:, minPerWorker:) (fewer when
/// the pool caps the threads at the CPU count; each index runs on one thread at a time).
func spinParallelChunks(_ n: Int, workers: Int, minPerWorker: Int = 1, _ body: (Int, Range<Int>) -> Void) {
    let w = chunkCount(n, workers: workers, minPerWorker: minPerWorker)
    if w <= 1 { body(0, 0..<n); return }
    withoutActuallyEscaping(body) { body in
        var job = SpinPoolJob(n: n, body: body)
        withUnsafeMutablePointer(to: &job) { p in
            _ = sm_pool_run(Int32(w), { ctx, part, parts in
                let job = ctx!.assumingMemoryBound(to: SpinPoolJob.self)
                let n = job.pointee.n, i = Int(part), w = Int(parts)
                let lo = n * i / w, hi = n * (i + 1) / w
                if lo < hi { job.pointee.body(i, lo..<hi) }
            }, p)
        }
    }
}

private struct SpinPoolJob {
    let n: Int
    let body: (Int, Range<Int>) -> Void
}

/// Number of chunks `parallelChunks` uses for these arguments.
@inline(__always) func chunkCount(_ n: Int, workers: Int, minPerWorker: Int = 1) -> Int {
    max(1, min(workers, n / max(minPerWorker, 1)))
}

/// As `parallelRanges`, also passing the chunk index in 0..<chunkCount(n, workers:, minPerWorker:).
@inline(__always)
func parallelChunks(_ n: Int, workers: Int, minPerWorker: Int = 1, _ body: (Int, Range<Int>) -> Void) {
    let w = chunkCount(n, workers: workers, minPerWorker: minPerWorker)
    if w <= 1 { body(0, 0..<n); return }
    DispatchQueue.concurrentPerform(iterations: w) { i in
        let lo = n * i / w, hi = n * (i + 1) / w
        if lo < hi { body(i, lo..<hi) }
    }
}

/// Runs `body` on `workers` threads, each taking tasks `0..<tasks` (dynamically), with OpenBLAS set to one thread
/// for the duration (BLAS calls inside tasks then run on the calling thread); a single task runs inline with OpenBLAS's
/// threads as they are. `body(task, worker)`.
func parallelTasks(_ tasks: Int, workers: Int, _ body: (Int, Int) -> Void) {
    if workers <= 1 || tasks <= 1 {
        // Inline. Several tasks on one worker still run with OpenBLAS at one thread: their small BLAS calls (a decode
        // step's attention at n = 1 without the spin pool: ~130 sgemv per token) would otherwise each wake OpenBLAS's
        // threads, which then spin on the cores the next products need. A single task keeps OpenBLAS's threads.
        if tasks > 1 && ComputeThreads.count > 1 { ComputeThreads.withSingleThread { for t in 0..<tasks { body(t, 0) } } }
        else { for t in 0..<tasks { body(t, 0) } }
        return
    }
    let counter = TaskCounter()
    ComputeThreads.withSingleThread {
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            while true {
                let t = counter.next()
                if t >= tasks { break }
                body(t, w)
            }
        }
    }
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

/// out[i] = e^(x[i] − shift) for i in 0..<n, in place; returns Σ out.
@inline(__always) func expShiftSum(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Float {
    for j in 0..<n { x[j] = fastExp(x[j] - shift) }
    return sumOf(x, n)
}

// Reductions written with 8 independent accumulators: LLVM vectorises these (a single running accumulator is a
// serial dependency chain it may not reorder), ~8× faster than the naive loop.

/// max of x[0..<n] (n ≥ 1).
@inline(__always) func maxOf(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var m0 = -Float.infinity, m1 = m0, m2 = m0, m3 = m0, m4 = m0, m5 = m0, m6 = m0, m7 = m0
    var i = 0
    while i + 8 <= n {
        m0 = x[i] > m0 ? x[i] : m0; m1 = x[i + 1] > m1 ? x[i + 1] : m1
        m2 = x[i + 2] > m2 ? x[i + 2] : m2; m3 = x[i + 3] > m3 ? x[i + 3] : m3
        m4 = x[i + 4] > m4 ? x[i + 4] : m4; m5 = x[i + 5] > m5 ? x[i + 5] : m5
        m6 = x[i + 6] > m6 ? x[i + 6] : m6; m7 = x[i + 7] > m7 ? x[i + 7] : m7
        i += 8
    }
    var r = Swift.max(Swift.max(Swift.max(m0, m1), Swift.max(m2, m3)), Swift.max(Swift.max(m4, m5), Swift.max(m6, m7)))
    while i < n { if x[i] > r { r = x[i] }; i += 1 }
    return r
}

/// Σ x[0..<n].
@inline(__always) func sumOf(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var s0: Float = 0, s1: Float = 0, s2: Float = 0, s3: Float = 0, s4: Float = 0, s5: Float = 0, s6: Float = 0, s7: Float = 0
    var i = 0
    while i + 8 <= n {
        s0 += x[i]; s1 += x[i + 1]; s2 += x[i + 2]; s3 += x[i + 3]
        s4 += x[i + 4]; s5 += x[i + 5]; s6 += x[i + 6]; s7 += x[i + 7]
        i += 8
    }
    var r = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    while i < n { r += x[i]; i += 1 }
    return r
}

/// Σ a·b·c over n elements.
@inline(__always) func dot3(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafePointer<Float>, _ n: Int) -> Float {
    var s0: Float = 0, s1: Float = 0, s2: Float = 0, s3: Float = 0, s4: Float = 0, s5: Float = 0, s6: Float = 0, s7: Float = 0
    var i = 0
    while i + 8 <= n {
        s0 += a[i] * b[i] * c[i]; s1 += a[i + 1] * b[i + 1] * c[i + 1]
        s2 += a[i + 2] * b[i + 2] * c[i + 2]; s3 += a[i + 3] * b[i + 3] * c[i + 3]
        s4 += a[i + 4] * b[i + 4] * c[i + 4]; s5 += a[i + 5] * b[i + 5] * c[i + 5]
        s6 += a[i + 6] * b[i + 6] * c[i + 6]; s7 += a[i + 7] * b[i + 7] * c[i + 7]
        i += 8
    }
    var r = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    while i < n { r += a[i] * b[i] * c[i]; i += 1 }
    return r
}
