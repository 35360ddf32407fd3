// mpi-selftest: MPI checks and measurements of SwiftMindDistributed, run under mpirun.
//   mpi-selftest info                        rank, size, host, thread level
//   mpi-selftest allreduce [--quick]         bucketed all-reduce == one plain all-reduce, bit for bit, 1 KB ... 100 MB
//   mpi-selftest bf16-allreduce            GradientReducer with the bf16 payload (--grad-comm-dtype bfloat16), every
//                                            progress mode == MPI_Allreduce (fp32) of the bf16-rounded gradients, bit for bit
//   mpi-selftest consistency                 checkSameOnAllRanks accepts equal values and rejects a differing rank
//   mpi-selftest fail --rank R [--message M] rank R throws inside runOrAbort while the others wait in a collective
//   mpi-selftest overlap [--params N] [--layers L] [--gemms G] [--dim D] [--bucket-mb X] [--steps S]
//                                            how much of the bucketed all-reduce each progress mode hides behind compute
//   mpi-selftest idle-barrier [--seconds S] [--blocking]
//                                            rank 0 computes S CPU-seconds while the others wait in idleBarrier (or, with
//                                            --blocking, MPI_Barrier); prints every rank's CPU seconds of the wait
import CBLAS
import CQuant
import Foundation
import SwiftMindDistributed

struct SelftestError: Error, CustomStringConvertible { let description: String }

var args = Array(CommandLine.arguments.dropFirst())
let command = args.isEmpty ? "info" : args.removeFirst()
func option(_ name: String, _ def: String) -> String {
    if let i = args.firstIndex(of: name), i + 1 < args.count { return args[i + 1] }
    return def
}
func flag(_ name: String) -> Bool { args.contains(name) }

/// SplitMix64: deterministic per-rank data and segmentations.
struct SplitMix64 {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [-1, 1) with a random binary exponent in [-20, 4]: sums then round, so order matters.
    mutating func nextFloat() -> Float {
        let u = Float(next() >> 40) / Float(1 << 24) * 2 - 1
        let e = Int(next() % 25) - 20
        return u * Float(sign: .plus, exponent: e, significand: 1)
    }
}

func fnv1a(_ p: UnsafeRawBufferPointer) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in p { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return h
}

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
func cpuTime(_ clock: clockid_t) -> Double {
    var ts = timespec()
    clock_gettime(clock, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

let comm: Communicator
do { comm = try makeCommunicator() } catch { FileHandle.standardError.write("mpi-selftest: \(error)\n".data(using: .utf8)!); exit(2) }
func say(_ s: String) { if comm.rank == 0 { print(s); fflush(stdout) } }

/// Reports `n/10..<n` to `reducer` as a backward would: "tensors" of random sizes from the end of the buffer towards
/// the start, with neighbouring tensors sometimes swapped.
func simulateBackward(_ reducer: GradientReducer, n: Int, rng: inout SplitMix64, meanTensor: Int) {
    var ranges: [Range<Int>] = []
    var hi = n
    while hi > 0 {
        let len = 1 + Int(rng.next() % UInt64(2 * meanTensor))
        let lo = max(0, hi - len)
        ranges.append(lo..<hi); hi = lo
    }
    var i = 0
    while i + 1 < ranges.count { if rng.next() % 4 == 0 { ranges.swapAt(i, i + 1) }; i += 2 }
    // The lowest tenth of the buffer is never reported: finish() must launch those buckets itself.
    for r in ranges where r.lowerBound >= n / 10 { reducer.gradientsReady(r) }
}

func runAllreduce() throws {
    let quick = flag("--quick")
    // (bucket bytes, elements): bucket sizes 1 KB ... 100 MB; element counts odd so the last bucket is partial.
    let cases: [(Int, Int)] = quick
        ? [(1 << 10, 100_003), (64 << 10, 1_000_003), (1 << 20, 3_000_001), (25 << 20, 7_000_001), (100 << 20, 27_000_001)]
        : [(1 << 10, 300_007), (64 << 10, 2_000_003), (1 << 20, 8_000_009), (25 << 20, 14_000_001), (100 << 20, 27_000_001)]
    var failures = 0
    for (capBytes, n) in cases {
        var rng = SplitMix64(state: UInt64(1000 + comm.rank))
        let original = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        let plain = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        let bucketed = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        defer { original.deallocate(); plain.deallocate(); bucketed.deallocate() }
        for i in 0..<n { original[i] = rng.nextFloat() }
        _ = plain.initialize(fromContentsOf: original)
        let t0 = now()
        try comm.allReduceSum(plain)
        let tPlain = now() - t0
        // The blocking-thread mode is slow with many buckets on an oversubscribed machine (see `overlap`): it is
        // checked on the 1 MB case only, to keep the run short.
        let modes: [ReducerProgress] = capBytes == 1 << 20 ? ReducerProgress.allCases : [.pollingThread, .testPolling]
        for mode in modes {
            _ = bucketed.initialize(fromContentsOf: original)
            let reducer = GradientReducer(communicator: comm, gradients: bucketed, bucketCapBytes: capBytes, progress: mode)
            var seg = SplitMix64(state: UInt64(77 + 13 * comm.rank))
            let t1 = now()
            reducer.prepareForBackward()
            simulateBackward(reducer, n: n, rng: &seg, meanTensor: max(1, n / 40))
            try reducer.finish()
            let tBucketed = now() - t1
            let same = memcmp(plain.baseAddress!, bucketed.baseAddress!, n * 4) == 0
            // Every rank must hold the same bytes (replicas stay identical).
            let h = bucketed.withMemoryRebound(to: UInt8.self) { fnv1a(UnsafeRawBufferPointer($0)) }
            var agree = true
            do { try comm.checkSameOnAllRanks(String(h, radix: 16), what: "reduced gradient hash") } catch { agree = false }
            // With 3+ ranks MPI's summation order depends on the message size (ring segments, recursive doubling),
            // so bucketing may change roundings: then the difference must stay within the fp32 summation bound
            // |bucketed - plain| <= 2 (size - 1) eps sum_r |g_r|.
            var withinBound = same
            var worstUlpRatio = 0.0
            if !same && comm.size > 2 {
                let absSum = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
                defer { absSum.deallocate() }
                for i in 0..<n { absSum[i] = abs(original[i]) }
                try comm.allReduceSum(absSum)
                let eps = Double(Float.ulpOfOne) / 2
                withinBound = true
                for i in 0..<n where plain[i] != bucketed[i] {
                    let bound = 2 * Double(comm.size - 1) * eps * Double(absSum[i]) * 1.0001
                    let d = abs(Double(plain[i]) - Double(bucketed[i]))
                    worstUlpRatio = max(worstUlpRatio, d / bound)
                    if d > bound { withinBound = false }
                }
            }
            let sameEverywhere = try comm.allReduceSum(same ? 0 : 1) == 0
            let boundEverywhere = try comm.allReduceSum(withinBound ? 0 : 1) == 0
            let ok = agree && (comm.size <= 2 ? sameEverywhere : boundEverywhere)
            if !ok { failures += 1 }
            let verdict: String
            if !agree { verdict = "MISMATCH: ranks hold different results" }
            else if sameEverywhere { verdict = "bit-identical on all ranks" }
            else if comm.size > 2 && boundEverywhere {
                verdict = String(format: "identical on all ranks; rounding differs from the plain all-reduce within the summation bound (worst %.2f of bound)", worstUlpRatio)
            } else { verdict = "MISMATCH with the plain all-reduce" }
            say(String(format: "allreduce bucket=%@ elements=%d buckets=%d mode=%@ plain=%.3fs bucketed=%.3fs: %@",
                       capBytes >= 1 << 20 ? "\(capBytes >> 20)MB" : "\(capBytes >> 10)KB", n, reducer.buckets.count,
                       mode.rawValue, tPlain, tBucketed, verdict))
        }
    }
    if failures > 0 { throw SelftestError(description: "\(failures) bucketed all-reduce case(s) differ from the plain all-reduce") }
    say("allreduce: OK (\(comm.size) ranks)")
}

func runConsistency() throws {
    try comm.checkSameOnAllRanks("{\"hidden_size\":128}", what: "config")
    var caught: DistributedError?
    do {
        try comm.checkSameOnAllRanks(comm.rank == comm.size - 1 && comm.size > 1 ? "{\"hidden_size\":256}" : "{\"hidden_size\":128}", what: "config")
    } catch let e as DistributedError { caught = e }
    if comm.size > 1 {
        guard case let .mismatch(_, ranks, _)? = caught, ranks == [comm.size - 1] else {
            throw SelftestError(description: "checkSameOnAllRanks did not report rank \(comm.size - 1): \(String(describing: caught))")
        }
        if comm.rank == comm.size - 1 { print("rank \(comm.rank) sees: \(caught!)") }
    }
    var v = [Double](repeating: Double(comm.rank + 1), count: 3)
    v = try comm.allReduceSum(v)
    let expect = Double(comm.size * (comm.size + 1) / 2)
    guard v == [expect, expect, expect] else { throw SelftestError(description: "allReduceSum([Double]) gave \(v)") }
    var p = [Float](repeating: Float(comm.rank), count: 5)
    if comm.rank == 0 { p = [1, 2, 3, 4, 5] }
    try p.withUnsafeMutableBufferPointer { try comm.broadcastParameters($0) }
    guard p == [1, 2, 3, 4, 5] else { throw SelftestError(description: "broadcastParameters gave \(p)") }
    try comm.barrier()
    say("consistency: OK (\(comm.size) ranks)")
}

func runFail() throws {
    let bad = Int(option("--rank", "1")) ?? 1
    let message = option("--message", "deliberate failure for the test")
    if comm.rank == bad {
        Thread.sleep(forTimeInterval: 0.3)
        throw SelftestError(description: message)
    }
    // The other ranks wait in a collective that the failing rank never joins.
    var x: [Double] = [1]
    x = try comm.allReduceSum(x)
    try comm.barrier()
    print("rank \(comm.rank): unexpectedly passed the collective")
}

/// Backward-like compute: `gemms` single-threaded SGEMMs of `dim`^3 per layer.
func runOverlap() throws {
    let n = Int(option("--params", "26000000"))!
    let layers = Int(option("--layers", "8"))!
    let gemms = Int(option("--gemms", "4"))!
    let dim = Int32(option("--dim", "384"))!
    let capMB = Double(option("--bucket-mb", "25"))!
    let steps = Int(option("--steps", "6"))!
    let a = [Float](repeating: 0.5, count: Int(dim * dim)), b = [Float](repeating: 0.25, count: Int(dim * dim))
    var c = [Float](repeating: 0, count: Int(dim * dim))
    func compute() {
        for _ in 0..<gemms {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, dim, dim, dim, 1, a, dim, b, dim, 0, &c, dim)
        }
    }
    let grads = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
    defer { grads.deallocate() }
    grads.initialize(repeating: 1e-3)
    // Layout: embedding first (1/5 of the parameters), then `layers` equal blocks; backward goes last layer → embedding.
    let emb = n / 5
    let per = (n - emb) / layers
    var blocks: [Range<Int>] = (0..<layers).map { emb + $0 * per ..< (($0 == layers - 1) ? n : emb + ($0 + 1) * per) }
    blocks.reverse(); blocks.append(0..<emb)
    func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

    // The machine may be shared: every configuration runs once per round, rounds repeat `steps` times, and the
    // least disturbed (minimum) time of each configuration is reported.
    let modes = ReducerProgress.allCases
    let reducers = modes.map { GradientReducer(communicator: comm, gradients: grads, bucketCapBytes: Int(capMB * 1048576), progress: $0) }
    var tc: [Double] = [], tm: [Double] = []
    var tb = [[Double]](repeating: [], count: modes.count)
    var ts = [[Double]](repeating: [], count: modes.count), tcs = ts, tw = ts, cpuOther = ts, doneBefore = ts
    for _ in 0..<steps {
        try comm.barrier(); var t = now(); for _ in blocks { compute() }; tc.append(now() - t)
        try comm.barrier(); t = now(); try comm.allReduceSum(grads); tm.append(now() - t)
        for (k, reducer) in reducers.enumerated() {
            // Communication alone through the reducer.
            try comm.barrier(); t = now()
            reducer.prepareForBackward(); for r in blocks { reducer.gradientsReady(r) }; try reducer.finish()
            tb[k].append(now() - t)
            // Overlapped: step = compute (maybe slowed by communication) + exposed communication (not computing).
            try comm.barrier(); t = now()
            var inCompute = 0.0
            let p0 = cpuTime(CLOCK_PROCESS_CPUTIME_ID), m0 = cpuTime(CLOCK_THREAD_CPUTIME_ID)
            reducer.prepareForBackward()
            for r in blocks { let c0 = now(); compute(); inCompute += now() - c0; reducer.gradientsReady(r) }
            try reducer.finish()
            ts[k].append(now() - t); tcs[k].append(inCompute); tw[k].append(reducer.lastFinishWaitSeconds)
            // CPU burnt by threads other than this one (the communication thread, MPI/OpenMPI helper threads).
            cpuOther[k].append((cpuTime(CLOCK_PROCESS_CPUTIME_ID) - p0) - (cpuTime(CLOCK_THREAD_CPUTIME_ID) - m0))
            doneBefore[k].append(Double(reducer.lastBucketsCompletedBeforeFinish))
        }
    }
    let cAlone = tc.min()!
    say(String(format: "overlap: %d ranks, %.1f MB gradients, %d blocks, %d rounds, compute alone %.1f ms/step, one plain all-reduce %.1f ms",
               comm.size, Double(n * 4) / 1e6, blocks.count, steps, cAlone * 1e3, tm.min()! * 1e3))
    for (k, mode) in modes.enumerated() {
        let i = ts[k].indices.min { ts[k][$0] < ts[k][$1] }!
        let m = tb[k].min()!, s = ts[k][i], exposed = s - tcs[k][i]
        let nb = Double(reducers[k].buckets.count)
        let meanDone = doneBefore[k].reduce(0, +) / Double(steps)
        let medianOtherCPU = cpuOther[k].sorted()[steps / 2]
        say(String(format: "  mode=%-10@ buckets=%d | comm alone %6.1f ms | best overlapped step %6.1f ms (serial %6.1f) = compute %6.1f (%+.0f%% vs alone) + exposed comm %5.1f (finish() wait %5.1f) = %2.0f%% of step | buckets already reduced when backward ended: %.0f%% (mean of %d) | CPU of other threads %.1f ms/step (median)",
                   mode.rawValue, reducers[k].buckets.count, m * 1e3, s * 1e3, (cAlone + m) * 1e3, tcs[k][i] * 1e3,
                   (tcs[k][i] / cAlone - 1) * 100, exposed * 1e3, tw[k][i] * 1e3, exposed / s * 100,
                   meanDone / nb * 100, steps, medianOtherCPU * 1e3))
    }
}

/// Rank 0 busy-computes for `--seconds` (a token-cache build), the others wait; CPU seconds per rank are gathered.
func runIdleBarrier() throws {
    let seconds = Double(option("--seconds", "1.5")) ?? 1.5
    let blocking = flag("--blocking")
    try comm.barrier()
    let c0 = cpuTime(CLOCK_PROCESS_CPUTIME_ID), t0 = now()
    var polls = 0
    if comm.rank == 0 {
        var x = 1.0
        // CPU seconds, not wall seconds: the builder's work is the same on a loaded machine.
        while cpuTime(CLOCK_PROCESS_CPUTIME_ID) - c0 < seconds { for _ in 0 ..< 10_000 { x = x * 1.000001 + 1e-9 } }
        if x == 0 { print("unreachable") }
    }
    if blocking { try comm.barrier() } else { try comm.idleBarrier(pollInterval: 0.01) { _ in polls += 1 } }
    var cpu = [Double](repeating: 0, count: comm.size)
    cpu[comm.rank] = cpuTime(CLOCK_PROCESS_CPUTIME_ID) - c0
    cpu = try comm.allReduceSum(cpu)
    var pollCounts = [Double](repeating: 0, count: comm.size)
    pollCounts[comm.rank] = Double(polls)
    pollCounts = try comm.allReduceSum(pollCounts)
    let waiting = cpu.dropFirst().max() ?? 0
    say(String(format: "idle-barrier%@: wall %.2f s, builder CPU %.3f s, max waiting-rank CPU %.3f s (%.1f%%), polls %@",
               blocking ? " (blocking)" : "", now() - t0, cpu[0], waiting, 100 * waiting / max(cpu[0], 1e-9),
               pollCounts.map { String(Int($0)) }.joined(separator: ",")))
}

func runInfo() throws {
    let level: String
    if let m = comm as? MPICommunicator {
        level = ["SINGLE", "FUNNELED", "SERIALIZED", "MULTIPLE"][Int(m.providedThreadLevel)]
        print("rank \(comm.rank)/\(comm.size) on \(m.processorName), thread level \(level)")
    } else {
        print("rank 0/1 (single process, no MPI)")
    }
    var x = try comm.allReduceSum([Double(comm.rank)])
    x[0] = x[0]
    say("info: sum of ranks = \(Int(x[0])) (expected \(comm.size * (comm.size - 1) / 2))")
    if Int(x[0]) != comm.size * (comm.size - 1) / 2 { throw SelftestError(description: "wrong sum of ranks \(x[0])") }
}

/// The bf16 payload of GradientReducer: for bucket caps 1 KB … 1 MB and every progress mode, the reduced buffer equals an
/// fp32 MPI_Allreduce of the same gradients rounded to bf16 (round to nearest even), bit for bit on every rank.
func runBF16Allreduce() throws {
    var failures = 0
    for (capBytes, n) in [(1 << 10, 20_011), (64 << 10, 300_007), (1 << 20, 1_000_003)] {
        var rng = SplitMix64(state: UInt64(5000 + comm.rank))
        let original = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        let expected = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        let reduced = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        defer { original.deallocate(); expected.deallocate(); reduced.deallocate() }
        for i in 0..<n { original[i] = rng.nextFloat() }
        sm_round_bf16_f32(original.baseAddress!, n, expected.baseAddress!)
        try comm.allReduceSum(expected)
        let plain = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        defer { plain.deallocate() }
        _ = plain.initialize(fromContentsOf: original)
        try comm.allReduceSum(plain)
        for mode in ReducerProgress.allCases {
            _ = reduced.initialize(fromContentsOf: original)
            let reducer = GradientReducer(communicator: comm, gradients: reduced, bucketCapBytes: capBytes, progress: mode,
                                          payload: .bfloat16)
            var seg = SplitMix64(state: UInt64(91 + 7 * comm.rank))
            reducer.prepareForBackward()
            simulateBackward(reducer, n: n, rng: &seg, meanTensor: max(1, n / 40))
            try reducer.finish()
            let same = memcmp(expected.baseAddress!, reduced.baseAddress!, n * 4) == 0
            let sameEverywhere = try comm.allReduceSum(same ? 0 : 1) == 0
            // And it differs from the fp32 payload's result (the rounding to bf16 really happened).
            let rounded = memcmp(plain.baseAddress!, reduced.baseAddress!, n * 4) != 0
            if !sameEverywhere || !rounded { failures += 1 }
            say("bf16-allreduce bucket=\(capBytes >> 10)KB elements=\(n) buckets=\(reducer.buckets.count) mode=\(mode.rawValue): \(!sameEverywhere ? "MISMATCH" : rounded ? "equals the fp32 all-reduce of the bf16-rounded gradients on all ranks" : "NOT ROUNDED (equals the fp32 payload)")")
        }
    }
    if failures > 0 { throw SelftestError(description: "bf16-allreduce: \(failures) case(s) failed") }
    say("bf16-allreduce: OK (\(comm.size) ranks)")
}

runOrAbort(comm) {
    switch command {
    case "info": try runInfo()
    case "allreduce": try runAllreduce()
    case "consistency": try runConsistency()
    case "bf16-allreduce": try runBF16Allreduce()
    case "fail": try runFail()
    case "overlap": try runOverlap()
    case "idle-barrier": try runIdleBarrier()
    default: throw SelftestError(description: "unknown command \(command); see the header of Sources/mpi-selftest/main.swift")
    }
}
comm.finalize()
