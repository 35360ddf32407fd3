import XCTest
@testable import SwiftMindDistributed

/// A 2-rank communicator faked in one process: every all-reduce doubles the buffer and is recorded.
final class RecordingCommunicator: Communicator {
    var rank: Int { 0 }
    var size: Int { 2 }
    let lock = NSLock()
    var reduced: [Range<Int>] = []
    let base: UnsafeMutablePointer<Float>?
    init(base: UnsafeMutablePointer<Float>?) { self.base = base }
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        for i in buffer.indices { buffer[i] *= 2 }
        let lo = base.map { buffer.baseAddress! - $0 } ?? 0
        lock.lock(); reduced.append(lo ..< lo + buffer.count); lock.unlock()
    }
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws { for i in buffer.indices { buffer[i] *= 2 } }
    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {}
    func barrier() throws {}
    func idleBarrier(pollInterval: Double, onPoll: ((Double) throws -> Void)?) throws {}
    func abort(message: String, code: Int32) -> Never { fatalError(message) }
    func finalize() {}
}

final class SingleProcessTests: XCTestCase {
    func testMakeCommunicatorWithoutMPIIsSingleProcess() throws {
        XCTAssertFalse(LaunchEnvironment.launchedByMPI(ProcessInfo.processInfo.environment),
                       "the test process itself must not look MPI-launched")
        let c = try makeCommunicator()
        XCTAssertTrue(c is SingleProcessCommunicator)
        XCTAssertEqual(c.rank, 0)
        XCTAssertEqual(c.size, 1)
        XCTAssertTrue(c.isRoot)
        XCTAssertTrue(try makeCommunicator() === c, "one communicator per process")
    }

    func testLaunchEnvironmentDetection() {
        XCTAssertFalse(LaunchEnvironment.launchedByMPI([:]))
        XCTAssertTrue(LaunchEnvironment.launchedByMPI(["OMPI_COMM_WORLD_SIZE": "2"]))
        XCTAssertTrue(LaunchEnvironment.launchedByMPI(["PMIX_RANK": "0"]))
        XCTAssertTrue(LaunchEnvironment.launchedByMPI(["PMI_SIZE": "4"]))
        XCTAssertFalse(LaunchEnvironment.launchedByMPI(["SLURM_PROCID": "0", "SLURM_NTASKS": "2"]),
                       "a Slurm batch script without srun is not an MPI launch")
        XCTAssertTrue(LaunchEnvironment.launchedByMPI(["SWIFTMIND_FORCE_MPI": "1"]))
        XCTAssertFalse(LaunchEnvironment.launchedByMPI(["SWIFTMIND_FORCE_MPI": "0", "OMPI_COMM_WORLD_SIZE": "2"]))
    }

    func testSingleProcessCollectivesLeaveBuffersUnchanged() throws {
        let c = SingleProcessCommunicator()
        var f: [Float] = [1.5, -2, 3]
        try f.withUnsafeMutableBufferPointer { try c.allReduceSum($0) }
        XCTAssertEqual(f, [1.5, -2, 3])
        XCTAssertEqual(try c.allReduceSum([4, 5]), [4, 5])
        XCTAssertEqual(try c.allReduceSum(7.25), 7.25)
        try f.withUnsafeMutableBufferPointer { try c.broadcastParameters($0) }
        XCTAssertEqual(f, [1.5, -2, 3])
        XCTAssertEqual(try c.broadcast("config"), "config")
        try c.barrier()
        try c.idleBarrier()
        try c.checkSameOnAllRanks("anything", what: "config")
        XCTAssertEqual(runOrAbort(c) { 42 }, 42)
        c.finalize()
    }

    func testBucketsAreBuiltFromTheEndOfTheBuffer() {
        let g = UnsafeMutableBufferPointer<Float>.allocate(capacity: 10)
        defer { g.deallocate() }
        let r = GradientReducer(communicator: SingleProcessCommunicator(), gradients: g, bucketCapBytes: 16)
        XCTAssertEqual(r.bucketCapElements, 4)
        XCTAssertEqual(r.buckets, [6..<10, 2..<6, 0..<2])
        let one = GradientReducer(communicator: SingleProcessCommunicator(), gradients: g)
        XCTAssertEqual(one.buckets, [0..<10], "default 25 MB cap: one bucket")
    }

    func testSingleRankReducerLeavesGradientsUnchanged() throws {
        var g: [Float] = (0..<100).map { Float($0) * 0.5 }
        let expect = g
        try g.withUnsafeMutableBufferPointer { p in
            let r = GradientReducer(communicator: SingleProcessCommunicator(), gradients: p, bucketCapBytes: 64)
            r.prepareForBackward()
            r.gradientsReady(50..<100)
            r.gradientsReady(0..<50)
            try r.finish()
            try r.finish() // without prepareForBackward: reduces everything, no-op for one rank
        }
        XCTAssertEqual(g, expect)
    }

    /// Buckets launch in bucket order as soon as they and all earlier buckets are ready; each element is reduced once;
    /// gradientsReady outside a round (an accumulation micro-step) reduces nothing.
    func testReducerLaunchOrderAndCoverage() throws {
        for mode in ReducerProgress.allCases {
            let n = 1000
            let g = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
            defer { g.deallocate() }
            for i in 0..<n { g[i] = Float(i) }
            let fake = RecordingCommunicator(base: g.baseAddress)
            let r = GradientReducer(communicator: fake, gradients: g, bucketCapBytes: 400, progress: mode) // 100 elements
            XCTAssertEqual(r.progressMode, .communicationThread, "a non-MPI communicator always uses the thread")
            XCTAssertEqual(r.buckets.count, 10)

            r.gradientsReady(0..<n)              // micro-step: not armed, ignored
            try r.finish()                       // ...but finish() without prepare reduces the whole buffer once
            XCTAssertEqual(fake.reduced.count, 10)
            XCTAssertEqual(r.lastBucketsLaunchedBeforeFinish, 0)
            fake.reduced.removeAll()

            r.prepareForBackward()
            r.gradientsReady(850..<1000)         // bucket 0 (900..<1000) complete, bucket 1 half
            r.gradientsReady(700..<800)          // bucket 2 complete but bucket 1 is not: must wait
            r.gradientsReady(800..<850)          // bucket 1 complete: 1 and 2 launch
            r.gradientsReady(0..<650)            // buckets 4...9 complete, bucket 3 (600..<700) not
            XCTAssertEqual(r.lastBucketsLaunchedBeforeFinish, 0)
            r.gradientsReady(650..<700)
            try r.finish()
            XCTAssertEqual(r.lastBucketsLaunchedBeforeFinish, 10, "all buckets launched by gradientsReady")
            XCTAssertEqual(fake.reduced, r.buckets, "launched in bucket order, each once")
            for i in 0..<n { XCTAssertEqual(g[i], Float(i) * 4, "element \(i) reduced twice in total (two rounds)") }
        }
    }
}
