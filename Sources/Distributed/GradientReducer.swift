// Bucketed gradient all-reduce that overlaps the backward pass (PyTorch DDP's Reducer, Li et al., VLDB 2020,
// "PyTorch Distributed: Experiences on Accelerating Data Parallel Training").
import CMPI
import CQuant
import Foundation

/// How a `GradientReducer` drives communication while backward computes.
public enum ReducerProgress: String, CaseIterable {
    /// A dedicated thread runs one blocking `MPI_Allreduce` per bucket, in bucket order, while the main thread
    /// keeps computing. Needs MPI_THREAD_SERIALIZED or better.
    case communicationThread = "thread"
    /// A dedicated thread starts `MPI_Iallreduce` per bucket as soon as it is ready and drives all outstanding ones
    /// with `MPI_Test`, sleeping `SWIFTMIND_REDUCER_POLL_US` (default 50) microseconds between polls, so it takes
    /// little CPU from backward. Falls back to `communicationThread` for non-MPI communicators.
    case pollingThread = "pollthread"
    /// The main thread starts `MPI_Iallreduce` per bucket and drives it with `MPI_Test` whenever backward reports
    /// gradients (`gradientsReady`) or calls `progress()`; no extra thread.
    case testPolling = "test"

    /// `SWIFTMIND_REDUCER_PROGRESS=thread|pollthread|test` if set, else `pollingThread`, the mode measured to overlap
    /// best (`mpi-selftest overlap`, OpenMPI 4.1.4, 2 ranks on 2 cores, vader and tcp): when backward ended, the
    /// polling thread had already completed 31-61% of the buckets while using ~10-20% of a core; `MPI_Test` from the
    /// main thread completed 0-13% (libnbc schedules advance only at the few `gradientsReady` calls); the blocking
    /// thread completed 3-47% but busy-polled inside MPI (up to a full core), slowing backward by 20-180%.
    public static var `default`: ReducerProgress {
        if let v = ProcessInfo.processInfo.environment["SWIFTMIND_REDUCER_PROGRESS"], let m = ReducerProgress(rawValue: v) {
            return m
        }
        return .pollingThread
    }
}

/// Bucketed gradient all-reduce overlapping backward (PyTorch DDP's Reducer, Li et al. VLDB 2020).
///
/// Use per optimizer step: `prepareForBackward()`, run the (last micro-step's) backward which reports each finished
/// flat range with `gradientsReady(_:)`, then `finish()`; afterwards `gradients` hold the element-wise SUM over ranks
/// (not the average). Gradient-accumulation micro-steps that must not be reduced simply do not call
/// `prepareForBackward()`: `gradientsReady` is ignored outside a prepare/finish round.
///
/// Buckets are launched strictly in bucket order on every rank (MPI requires the same collective order everywhere),
/// so a bucket whose gradients are ready waits for earlier buckets to be ready too. Summation order per element is
/// MPI's, identical to one plain `MPI_Allreduce` of the whole buffer for 2 ranks (a+b is exact-commutative).
public final class GradientReducer {
    public let communicator: Communicator
    /// The flat gradient buffer `[numParameters]` (fp32), reduced in place.
    public let gradients: UnsafeMutableBufferPointer<Float>
    /// Bucket capacity in elements (`bucketCapBytes / 4`, at least 1).
    public let bucketCapElements: Int
    /// Flat ranges of the buckets in launch order: `buckets[0]` is the END of the buffer.
    public let buckets: [Range<Int>]
    public let progressMode: ReducerProgress
    /// What the all-reduce sends (`--grad-comm-dtype`); with `.bfloat16` the buckets are all-gathered as bf16 and summed
    /// in fp32 (BF16GradientPayload.swift).
    public let payload: GradientPayload
    /// The bf16 buffers of `.bfloat16` with MPI and several ranks, else nil.
    private let bf16: BF16BucketBuffers?

    /// Seconds `finish()` spent waiting for communication in the last round: the communication backward did not hide.
    public private(set) var lastFinishWaitSeconds: Double = 0
    /// Buckets already launched when `finish()` was called in the last round (the rest started in `finish()`).
    public private(set) var lastBucketsLaunchedBeforeFinish: Int = 0
    /// Buckets whose all-reduce had already COMPLETED when `finish()` was called in the last round: the communication
    /// that backward fully hid.
    public private(set) var lastBucketsCompletedBeforeFinish: Int = 0
    private var workerCompletedAtStart = 0

    /// When true, every round stamps each bucket's launch and completion (`bucketTimes`), for the training timeline;
    /// false costs one branch per bucket. Set it before a round, not during one.
    public var recordsBucketTimes: Bool {
        get { stamps.enabled.pointee }
        set { stamps.enabled.pointee = newValue }
    }
    /// Bucket `i`'s all-reduce in the last round: when the reducer launched it (handed it to the communication thread
    /// or started it) and when its completion was observed, in `DispatchTime` uptime nanoseconds (CLOCK_MONOTONIC);
    /// 0 when not recorded. Valid after `finish()` when `recordsBucketTimes` is on.
    public func bucketTimes(_ i: Int) -> (launchNs: UInt64, doneNs: UInt64) { (stamps.launch[i], stamps.done[i]) }
    private let stamps: BucketStamps

    private var remaining: [Int]
    private var nextToLaunch = 0
    private var armed = false
    private var pendingError: Error?
    private let mpi: MPICommunicator?
    // testPolling state: requests in launch order, nil when complete.
    private var inflight: [MPI_Request?] = []
    private var firstIncomplete = 0
    /// Most non-blocking all-reduces kept in flight (tiny buckets): beyond it the oldest is waited for.
    static let maxInflight = 64
    // communicationThread state
    private var worker: CommunicationWorker?

    /// `gradients` is the flat gradient buffer; buckets are contiguous ranges of about `bucketCapBytes`, built from the END of
    /// the buffer (reverse layout order), so the first bucket is the first to become ready in backward.
    /// `progress` defaults to `ReducerProgress.default`; with a single rank nothing is communicated.
    /// `payload` `.bfloat16`: each bucket is rounded to bf16, all-gathered and summed in fp32 in rank order (without
    /// MPI: rounded in place and all-reduced in fp32, the same numbers).
    public init(communicator: Communicator, gradients: UnsafeMutableBufferPointer<Float>, bucketCapBytes: Int = 25 << 20,
                progress: ReducerProgress? = nil, payload: GradientPayload = .float32) {
        precondition(bucketCapBytes > 0, "bucketCapBytes must be positive")
        self.communicator = communicator
        self.gradients = gradients
        let cap = max(1, min(bucketCapBytes / MemoryLayout<Float>.stride, Int(Int32.max)))
        bucketCapElements = cap
        var b: [Range<Int>] = []
        var hi = gradients.count
        while hi > 0 { let lo = max(0, hi - cap); b.append(lo..<hi); hi = lo }
        buckets = b
        remaining = b.map(\.count)
        stamps = BucketStamps(count: b.count)
        mpi = communicator as? MPICommunicator
        var mode = progress ?? ReducerProgress.default
        if mode != .testPolling, let m = mpi, m.providedThreadLevel < cmpi_thread_serialized() { mode = .testPolling }
        if mpi == nil { mode = .communicationThread }
        progressMode = mode
        self.payload = payload
        let bf = payload == .bfloat16 && mpi != nil && communicator.size > 1
            ? BF16BucketBuffers(count: gradients.count, world: communicator.size) : nil
        bf16 = bf
        if communicator.size > 1 {
            let comm = communicator, grads = gradients, ranges = b
            switch mode {
            case .communicationThread:
                let m = mpi, roundOnly = payload == .bfloat16 && bf == nil
                worker = CommunicationWorker(ops: .blocking({ i in
                    let slice = UnsafeMutableBufferPointer(rebasing: grads[ranges[i]])
                    if let bf, let m {
                        bf.pack(grads, ranges[i])
                        try m.allGatherBF16Unwatched(bf.send + ranges[i].lowerBound, ranges[i].count, into: bf.received(rank: 0, ranges[i]))
                        bf.unpack(grads, ranges[i])
                        return
                    }
                    if roundOnly { sm_round_bf16_f32(slice.baseAddress!, slice.count, slice.baseAddress!) }
                    if let m { try m.allReduceSumUnwatched(slice) } else { try comm.allReduceSum(slice) }
                }))
            case .pollingThread:
                let m = mpi!
                worker = CommunicationWorker(ops: .nonBlocking(
                    start: { i in
                        if let bf {
                            bf.pack(grads, ranges[i])
                            return try m.startAllGatherBF16(bf.send + ranges[i].lowerBound, ranges[i].count, into: bf.received(rank: 0, ranges[i]))
                        }
                        return try m.startAllReduceSum(UnsafeMutableBufferPointer(rebasing: grads[ranges[i]]))
                    },
                    test: { r in try m.test(&r) }))
            case .testPolling:
                break
            }
            let st = stamps
            worker?.onComplete = { i in if st.enabled.pointee { st.done[i] = DispatchTime.now().uptimeNanoseconds } }
        }
    }

    deinit { worker?.stop() }

    /// Call before the backward whose gradients are to be reduced.
    public func prepareForBackward() {
        precondition(nextToLaunch == 0 || !armed, "GradientReducer.prepareForBackward() called again before finish()")
        for i in buckets.indices { remaining[i] = buckets[i].count }
        nextToLaunch = 0
        pendingError = nil
        armed = true
        workerCompletedAtStart = worker?.completedCount ?? 0
    }

    /// Backward reports that `range` (flat element range) holds final gradients; full buckets start their all-reduce.
    /// Each element must be reported at most once per round; ranges may have any size and order. Ignored outside a
    /// `prepareForBackward()` ... `finish()` round.
    public func gradientsReady(_ range: Range<Int>) {
        guard armed, !range.isEmpty else { return }
        precondition(range.lowerBound >= 0 && range.upperBound <= gradients.count,
                     "gradientsReady(\(range)) outside the gradient buffer 0..<\(gradients.count)")
        let n = gradients.count, cap = bucketCapElements
        let first = (n - range.upperBound) / cap      // bucket holding range.upperBound - 1
        let last = (n - 1 - range.lowerBound) / cap   // bucket holding range.lowerBound
        for i in first...last {
            let overlap = buckets[i].clamped(to: range).count
            remaining[i] -= overlap
            precondition(remaining[i] >= 0, "gradientsReady: elements of bucket \(buckets[i]) reported twice in one backward")
        }
        while nextToLaunch < buckets.count && remaining[nextToLaunch] == 0 { launch(nextToLaunch); nextToLaunch += 1 }
        progress()
    }

    /// Drives outstanding non-blocking all-reduces (testPolling mode; no-op otherwise). Backward may call this between
    /// long kernels for better overlap.
    public func progress() {
        guard let m = mpi, progressMode == .testPolling else { return }
        do {
            // One MPI_Test drives all outstanding operations; advance past those that completed, in order.
            while firstIncomplete < inflight.count {
                if inflight[firstIncomplete] != nil, !(try m.test(&inflight[firstIncomplete])) { break }
                stampDone(firstIncomplete)
                firstIncomplete += 1
            }
        } catch { if pendingError == nil { pendingError = error } }
    }

    /// Bucket `i` (= its index in `inflight`, which starts at bucket 0 every round) was seen complete.
    @inline(__always) private func stampDone(_ i: Int) {
        if stamps.enabled.pointee && i < buckets.count && stamps.done[i] == 0 { stamps.done[i] = DispatchTime.now().uptimeNanoseconds }
    }

    private func launch(_ i: Int) {
        guard communicator.size > 1 else { return }
        if stamps.enabled.pointee { stamps.launch[i] = DispatchTime.now().uptimeNanoseconds; stamps.done[i] = 0 }
        if let w = worker { w.enqueue(i); return }
        let slice = UnsafeMutableBufferPointer(rebasing: gradients[buckets[i]])
        do {
            if let m = mpi {
                if inflight.count - firstIncomplete >= GradientReducer.maxInflight {
                    try m.wait(&inflight[firstIncomplete]); stampDone(firstIncomplete); firstIncomplete += 1
                }
                if let bf = bf16 {
                    bf.pack(gradients, buckets[i])
                    inflight.append(try m.startAllGatherBF16(bf.send + buckets[i].lowerBound, buckets[i].count,
                                                             into: bf.received(rank: 0, buckets[i])))
                } else {
                    inflight.append(try m.startAllReduceSum(slice))
                }
            } else {
                try communicator.allReduceSum(slice)
            }
        } catch { if pendingError == nil { pendingError = error } }
    }

    /// Waits for every bucket; afterwards `gradients` hold the SUM over ranks. Buckets not reported ready are launched
    /// here (if `prepareForBackward()` was not called, the whole buffer is reduced without overlap).
    /// Throws the first MPI error of the round.
    public func finish() throws {
        if let s = mpi?.stallInspector {
            s.enter("the gradient all-reduce (\(buckets.count) bucket\(buckets.count == 1 ? "" : "s"))")
            defer { s.leave() }
            try finishUnwatched()
        } else {
            try finishUnwatched()
        }
    }

    private func finishUnwatched() throws {
        if !armed { prepareForBackward() }
        lastBucketsLaunchedBeforeFinish = nextToLaunch
        if communicator.size == 1 {
            lastBucketsCompletedBeforeFinish = nextToLaunch
        } else if let w = worker {
            lastBucketsCompletedBeforeFinish = w.completedCount - workerCompletedAtStart
        } else {
            lastBucketsCompletedBeforeFinish = inflight.isEmpty ? nextToLaunch : firstIncomplete
        }
        let t0 = DispatchTime.now().uptimeNanoseconds
        while nextToLaunch < buckets.count { launch(nextToLaunch); nextToLaunch += 1 }
        if let w = worker {
            if let e = w.waitAll() , pendingError == nil { pendingError = e }
        } else if let m = mpi {
            for i in firstIncomplete..<inflight.count {
                if inflight[i] != nil {
                    do { try m.wait(&inflight[i]) } catch { if pendingError == nil { pendingError = error } }
                }
                stampDone(i)
            }
            inflight.removeAll(keepingCapacity: true)
            firstIncomplete = 0
        }
        // Non-blocking bf16 gathers: every bucket's sum, once all arrived (the blocking thread sums as it goes).
        if let bf = bf16, progressMode != .communicationThread, pendingError == nil {
            for r in buckets { bf.unpack(gradients, r) }
        }
        lastFinishWaitSeconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        armed = false
        nextToLaunch = 0
        if let e = pendingError { pendingError = nil; throw e }
    }
}

/// The communication thread: runs queued bucket reductions in FIFO order, either one blocking all-reduce at a time or
/// as non-blocking all-reduces polled with MPI_Test between short sleeps.
final class CommunicationWorker {
    enum Ops {
        case blocking((Int) throws -> Void)
        case nonBlocking(start: (Int) throws -> MPI_Request?, test: (inout MPI_Request?) throws -> Bool)
    }
    private let cond = NSCondition()
    private var queue: [Int] = []
    private var queued = 0
    private var completed = 0
    private var error: Error?
    private var stopping = false
    private let exited = DispatchSemaphore(value: 0)
    /// Called on the worker thread with each bucket index as its reduction completes (before `waitAll` can return
    /// it); set before the first `enqueue`.
    var onComplete: ((Int) -> Void)?
    /// Seconds between MPI_Test polls in non-blocking mode.
    static let pollInterval: Double = {
        let us = ProcessInfo.processInfo.environment["SWIFTMIND_REDUCER_POLL_US"].flatMap(Double.init) ?? 50
        return max(0, us) / 1e6
    }()

    init(ops: Ops) {
        let thread = Thread { [cond = self.cond, unowned(unsafe) me = self] in
            var inflight: [MPI_Request?] = []   // oldest first
            var ids: [Int] = []                 // their bucket indices
            var first = 0
            cond.lock()
            while true {
                while me.queue.isEmpty && first == inflight.count && !me.stopping { cond.wait() }
                if me.queue.isEmpty && first == inflight.count { break }   // stopping, nothing left
                let take = me.queue
                me.queue.removeAll()
                let skip = me.error != nil
                cond.unlock()
                var err: Error?
                var done = 0
                switch ops {
                case .blocking(let reduce):
                    for i in take {
                        if !skip && err == nil { do { try reduce(i) } catch let e { err = e } }
                        me.onComplete?(i)
                        done += 1
                    }
                case .nonBlocking(let start, let test):
                    for i in take {
                        // At most `maxInflight` outstanding, as in testPolling mode: one MPI_Test progresses every
                        // outstanding operation, so with all buckets outstanding a step would cost O(buckets²).
                        while !skip && err == nil && inflight.count - first >= GradientReducer.maxInflight {
                            do {
                                if try inflight[first] == nil || test(&inflight[first]) { me.onComplete?(ids[first]); first += 1; done += 1 }
                                else { Thread.sleep(forTimeInterval: CommunicationWorker.pollInterval) }
                            } catch let e { err = e }
                        }
                        ids.append(i)
                        if skip || err != nil { inflight.append(nil); continue }
                        do { inflight.append(try start(i)) } catch let e { err = e; inflight.append(nil) }
                    }
                    // One MPI_Test progresses every outstanding operation; retire completed ones in order.
                    while first < inflight.count {
                        if inflight[first] != nil && err == nil {
                            do { if !(try test(&inflight[first])) { break } } catch let e { err = e }
                        }
                        me.onComplete?(ids[first])
                        first += 1; done += 1
                    }
                    if first == inflight.count { inflight.removeAll(keepingCapacity: true); ids.removeAll(keepingCapacity: true); first = 0 }
                }
                cond.lock()
                if let e = err, me.error == nil { me.error = e }
                me.completed += done
                if done > 0 { cond.broadcast() }
                if first < inflight.count && me.queue.isEmpty {
                    // Outstanding operations: poll again after a short sleep, or at once when a bucket is queued.
                    _ = cond.wait(until: Date(timeIntervalSinceNow: CommunicationWorker.pollInterval))
                }
            }
            cond.unlock()
            me.exited.signal()
        }
        thread.name = "swiftmind-allreduce"
        thread.start()
    }

    /// Buckets reduced since the worker started.
    var completedCount: Int { cond.lock(); defer { cond.unlock() }; return completed }

    func enqueue(_ i: Int) {
        cond.lock(); queue.append(i); queued += 1; cond.signal(); cond.unlock()
    }

    /// Waits until every queued bucket is reduced; returns (and clears) the first error.
    func waitAll() -> Error? {
        cond.lock()
        while completed < queued { cond.wait() }
        let e = error
        error = nil
        cond.unlock()
        return e
    }

    func stop() {
        cond.lock(); stopping = true; cond.broadcast(); cond.unlock()
        exited.wait()
    }
}

/// Per-bucket launch / completion stamps of one round (plain memory shared with the communication thread, which
/// writes `done`; `finish()` reads it after the worker's lock handed it over).
final class BucketStamps {
    let enabled: UnsafeMutablePointer<Bool>
    let launch: UnsafeMutableBufferPointer<UInt64>
    let done: UnsafeMutableBufferPointer<UInt64>
    init(count: Int) {
        enabled = .allocate(capacity: 1); enabled.initialize(to: false)
        launch = .allocate(capacity: max(count, 1)); launch.initialize(repeating: 0)
        done = .allocate(capacity: max(count, 1)); done.initialize(repeating: 0)
    }
    deinit { enabled.deallocate(); launch.deallocate(); done.deallocate() }
}
