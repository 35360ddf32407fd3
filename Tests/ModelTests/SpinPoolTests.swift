import Foundation
import XCTest
import CQuant
@testable import Model

/// CQuant's spin-waiting pool (`sm_pool_run`) and its Swift front (`spinParallelChunks`), which run a decode step's
/// products and attention: every part exactly once per job, nested and concurrent callers finish, chunks tile the range.
final class SpinPoolTests: XCTestCase {
    /// Counts of each (part, parts) seen, filled from the pool's threads.
    final class Tally: @unchecked Sendable {
        let lock = NSLock()
        var calls: [Int: Int] = [:]
        func add(_ key: Int) { lock.lock(); calls[key, default: 0] += 1; lock.unlock() }
    }

    func testEveryPartRunsOncePerJob() {
        let tally = Tally()
        var expected: [Int: Int] = [:]
        for job in 0..<20_000 {
            let want = 1 + job % 4
            let ctx = Unmanaged.passUnretained(tally).toOpaque()
            let parts = Int(sm_pool_run(Int32(want), { ctx, part, parts in
                Unmanaged<Tally>.fromOpaque(ctx!).takeUnretainedValue().add(Int(parts) * 100 + Int(part))
            }, ctx))
            // Capped at the CPUs this process may use, never more than asked.
            XCTAssertTrue((1...want).contains(parts), "asked \(want), ran \(parts)")
            for p in 0..<parts { expected[parts * 100 + p, default: 0] += 1 }
        }
        XCTAssertEqual(tally.calls, expected)
    }

    func testChunksTileTheRangeForEveryWorkerCount() {
        for n in [0, 1, 2, 3, 7, 64, 1000] {
            for workers in 1...5 {
                let hits = UnsafeMutableBufferPointer<Int>.allocate(capacity: max(n, 1))
                defer { hits.deallocate() }
                hits.initialize(repeating: 0)
                spinParallelChunks(n, workers: workers) { _, r in for i in r { hits[i] += 1 } }
                XCTAssertEqual(Array(hits.prefix(n)), [Int](repeating: 1, count: n), "n \(n) workers \(workers)")
            }
        }
    }

    /// A call from inside a part runs its parts inline on that thread (no deadlock on the busy pool).
    func testNestedCallRunsInline() {
        let total = UnsafeMutablePointer<Int>.allocate(capacity: 8)
        defer { total.deallocate() }
        total.initialize(repeating: 0, count: 8)
        spinParallelChunks(2, workers: 2) { outer, _ in
            spinParallelChunks(4, workers: 4) { _, r in total[outer * 4] += r.count }
        }
        XCTAssertEqual(total[0] + total[4], 8)
    }

    /// Threads calling at the same time (two sessions decoding at once) all finish with every chunk run once.
    func testConcurrentCallersAllFinish() {
        let sums = UnsafeMutableBufferPointer<Int>.allocate(capacity: 4)
        defer { sums.deallocate() }
        sums.initialize(repeating: 0)
        DispatchQueue.concurrentPerform(iterations: 4) { caller in
            for _ in 0..<2_000 {
                let part = UnsafeMutableBufferPointer<Int>.allocate(capacity: 2)
                part.initialize(repeating: 0)
                spinParallelChunks(100, workers: 2) { w, r in part[w] += r.count }
                sums[caller] += part[0] + part[1]
                part.deallocate()
            }
        }
        XCTAssertEqual(Array(sums), [Int](repeating: 200_000, count: 4))
    }
}
