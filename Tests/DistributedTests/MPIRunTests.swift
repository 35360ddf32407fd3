import XCTest
import Foundation

/// Runs `mpi-selftest` (built next to the test bundle) under `mpirun -np 2` on this machine.
final class MPIRunTests: XCTestCase {
    struct Run { let status: Int32; let stdout: String; let stderr: String; let timedOut: Bool; let seconds: Double }

    static var mpirun: URL? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
            let u = URL(fileURLWithPath: String(dir)).appendingPathComponent("mpirun")
            if FileManager.default.isExecutableFile(atPath: u.path) { return u }
        }
        return nil
    }

    /// The build products directory: the test bundle's directory (`.build/<triple>/debug`).
    static var selftest: URL? {
        if let p = ProcessInfo.processInfo.environment["SWIFTMIND_SELFTEST_BIN"] { return URL(fileURLWithPath: p) }
        var candidates: [URL] = []
        for b in Bundle.allBundles + [Bundle.main] { candidates.append(b.bundleURL.deletingLastPathComponent()) }
        candidates.append(URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent())
        for dir in candidates {
            var d = dir
            for _ in 0..<4 {
                let u = d.appendingPathComponent("mpi-selftest")
                if FileManager.default.isExecutableFile(atPath: u.path) { return u }
                d = d.deletingLastPathComponent()
            }
        }
        return nil
    }

    func selftestURL() throws -> URL {
        guard let exe = Self.selftest else {
            XCTFail("mpi-selftest not found next to the test bundle; build it with `swift build` (or set SWIFTMIND_SELFTEST_BIN)")
            throw XCTSkip("no mpi-selftest")
        }
        return exe
    }

    func mpirun(_ args: [String], np: Int = 2, timeout: Double = 60) throws -> Run {
        guard let mpirun = Self.mpirun else { throw XCTSkip("mpirun not on PATH (install openmpi-bin)") }
        let exe = try selftestURL()
        // --oversubscribe: 2 ranks on a 1-2 core container; single-copy off: CMA/ptrace is often blocked in containers.
        return try run(mpirun, ["-np", "\(np)", "--oversubscribe", "--bind-to", "none",
                                "--mca", "btl", "self,vader,tcp", "--mca", "btl_vader_single_copy_mechanism", "none",
                                exe.path] + args, timeout: timeout)
    }

    func run(_ executable: URL, _ arguments: [String], timeout: Double, dropMPIEnvironment: Bool = false) throws -> Run {
        let p = Process()
        p.executableURL = executable
        p.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        if dropMPIEnvironment {
            for k in env.keys where k.hasPrefix("OMPI_") || k.hasPrefix("PMI") || k == "SWIFTMIND_FORCE_MPI" { env[k] = nil }
        }
        if getuid() == 0 { env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"; env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1" }
        env["OPENBLAS_NUM_THREADS"] = "1"
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out; p.standardError = err
        final class Box: @unchecked Sendable { var data = Data() }
        let outData = Box(), errData = Box()
        let group = DispatchGroup()
        group.enter(); DispatchQueue.global().async { outData.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter(); DispatchQueue.global().async { errData.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let done = DispatchSemaphore(value: 0)
        p.terminationHandler = { _ in done.signal() }
        let t0 = Date()
        try p.run()
        var timedOut = false
        if done.wait(timeout: .now() + timeout) == .timedOut {
            timedOut = true
            kill(p.processIdentifier, SIGTERM)           // mpirun forwards it to the ranks
            if done.wait(timeout: .now() + 5) == .timedOut { kill(p.processIdentifier, SIGKILL); done.wait() }
        }
        group.wait()
        return Run(status: p.terminationStatus, stdout: String(decoding: outData.data, as: UTF8.self),
                   stderr: String(decoding: errData.data, as: UTF8.self), timedOut: timedOut, seconds: Date().timeIntervalSince(t0))
    }

    /// Started without mpirun, the same executable runs alone (single-process communicator, no MPI_Init), and a
    /// failure prints its message and exits non-zero.
    func testWithoutMPIRunIsSingleProcess() throws {
        let exe = try selftestURL()
        let ok = try run(exe, ["info"], timeout: 30, dropMPIEnvironment: true)
        XCTAssertEqual(ok.status, 0, ok.stdout + ok.stderr)
        XCTAssertTrue(ok.stdout.contains("rank 0/1 (single process, no MPI)"), ok.stdout)
        let sum = try run(exe, ["consistency"], timeout: 30, dropMPIEnvironment: true)
        XCTAssertEqual(sum.status, 0, sum.stdout + sum.stderr)
        let bad = try run(exe, ["fail", "--rank", "0", "--message", "alone and failing"], timeout: 30, dropMPIEnvironment: true)
        XCTAssertFalse(bad.timedOut)
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("error: alone and failing"), bad.stderr)
    }

    func testTwoRanksStartAndAgree() throws {
        let r = try mpirun(["info"], timeout: 30)
        XCTAssertFalse(r.timedOut)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertTrue(r.stdout.contains("rank 0/2"), r.stdout)
        XCTAssertTrue(r.stdout.contains("rank 1/2"), r.stdout)
        XCTAssertTrue(r.stdout.contains("info: sum of ranks = 1 (expected 1)"), r.stdout)
    }

    /// GradientReducer with bucket caps 1 KB ... 100 MB and both progress modes gives exactly the bytes of one plain
    /// MPI_Allreduce of the whole buffer, on both ranks (mpi-selftest compares with memcmp and a hash check).
    func testBucketedAllReduceEqualsPlainAllReduceBitForBit() throws {
        let r = try mpirun(["allreduce"], timeout: 90)
        XCTAssertFalse(r.timedOut, "timed out:\n" + r.stdout + r.stderr)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        for cap in ["1KB", "64KB", "1MB", "25MB", "100MB"] {
            for mode in cap == "1MB" ? ["thread", "pollthread", "test"] : ["pollthread", "test"] {
                XCTAssertTrue(r.stdout.contains("bucket=\(cap) ") && r.stdout.range(
                    of: "bucket=\(cap) elements=\\d+ buckets=\\d+ mode=\(mode) .*: bit-identical on all ranks",
                    options: .regularExpression) != nil, "case \(cap)/\(mode) missing or different:\n\(r.stdout)")
            }
        }
        XCTAssertTrue(r.stdout.contains("allreduce: OK (2 ranks)"), r.stdout)
    }

    /// `--grad-comm-dtype bfloat16`: the reducer's bf16 payload (buckets rounded to bf16, all-gathered, summed in fp32)
    /// equals an fp32 MPI_Allreduce of the bf16-rounded gradients, bit for bit, in every progress mode.
    func testBF16PayloadEqualsFP32ReduceOfRoundedGradients() throws {
        let r = try mpirun(["bf16-allreduce"], timeout: 90)
        XCTAssertFalse(r.timedOut, "timed out:\n" + r.stdout + r.stderr)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        for cap in ["1KB", "64KB", "1024KB"] {
            for mode in ["thread", "pollthread", "test"] {
                XCTAssertTrue(r.stdout.range(of: "bucket=\(cap) elements=\\d+ buckets=\\d+ mode=\(mode): equals the fp32 all-reduce",
                                             options: .regularExpression) != nil, "case \(cap)/\(mode) missing or different:\n\(r.stdout)")
            }
        }
        XCTAssertTrue(r.stdout.contains("bf16-allreduce: OK (2 ranks)"), r.stdout)
    }

    func testConsistencyCheckBroadcastAndSmallReductions() throws {
        let r = try mpirun(["consistency"], timeout: 30)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertTrue(r.stdout.contains("consistency: OK (2 ranks)"), r.stdout)
        XCTAssertTrue(r.stdout.contains("ranks 1 disagree with rank 0 on config"), r.stdout)
    }

    /// A rank that throws prints its message with its rank and MPI_Abort ends the job; the other rank, blocked in a
    /// collective, must not hang.
    func testRankThatThrowsBringsAllRanksDown() throws {
        for bad in [1, 0] {
            let r = try mpirun(["fail", "--rank", "\(bad)", "--message", "injected failure on purpose"], timeout: 30)
            XCTAssertFalse(r.timedOut, "job hung after rank \(bad) threw:\n" + r.stdout + r.stderr)
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains("SwiftMind rank \(bad)/2") && r.stderr.contains("injected failure on purpose"),
                          "stderr lacks the failing rank's message:\n" + r.stderr)
            XCTAssertFalse(r.stdout.contains("unexpectedly passed"), r.stdout)
        }
    }

    /// Ranks waiting for rank 0 (a token-cache build) in `idleBarrier` use almost no CPU: ≤ 10 % of the builder's.
    func testIdleBarrierWaitsWithoutSpinning() throws {
        let r = try mpirun(["idle-barrier", "--seconds", "1"], timeout: 60)
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        let line = try XCTUnwrap(r.stdout.split(separator: "\n").first { $0.hasPrefix("idle-barrier:") }, r.stdout)
        let fields = line.split(separator: " ")
        let builder = try XCTUnwrap(Double(fields[fields.firstIndex(of: "builder")! + 2]), String(line))
        let waiting = try XCTUnwrap(Double(fields[fields.firstIndex(of: "waiting-rank")! + 2]), String(line))
        XCTAssertGreaterThanOrEqual(builder, 1, String(line))
        XCTAssertLessThanOrEqual(waiting, 0.1 * builder, String(line))
        let polls = try XCTUnwrap(fields.last).split(separator: ",").compactMap { Int($0) }
        XCTAssertGreaterThan(polls.count == 2 ? polls[1] : 0, 10, "rank 1 polled the barrier with sleeps: \(line)")
    }
}
