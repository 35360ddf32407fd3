// The OpenMPI implementation of `Communicator` over MPI_COMM_WORLD.
import CMPI
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// `Communicator` over MPI_COMM_WORLD (OpenMPI; any MPI-3 library works).
///
/// MPI errors are returned, not fatal (`MPI_ERRORS_RETURN` on MPI_COMM_WORLD), and thrown as `DistributedError.mpi`.
/// Counts above `Int32.max` are split into several calls.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    /// The thread level MPI granted (`MPI_THREAD_SINGLE` ... `MPI_THREAD_MULTIPLE`, compare with `cmpi_thread_*()`).
    public let providedThreadLevel: Int32
    /// `MPI_Get_processor_name`: the host this rank runs on.
    public let processorName: String
    let comm: MPI_Comm
    public private(set) var isFinalized = false
    /// When set, every collective below is reported to it as a wait (`StallInspector.enter` / `leave`); set on the
    /// thread that calls the collectives.
    public var stallInspector: StallInspector?
    /// Largest element count passed to one MPI call.
    static let maxChunk = 1 << 30

    /// Calls `MPI_Init_thread` requesting `threadLevel` (default `MPI_THREAD_MULTIPLE`, which lets the gradient
    /// reducer's communication thread run beside collectives called from the main thread). Use `makeCommunicator()`
    /// rather than this initialiser: MPI can be initialised once per process.
    public init(threadLevel: Int32 = cmpi_thread_multiple()) throws {
        var initialized: Int32 = 0
        MPI_Initialized(&initialized)
        var provided: Int32 = 0
        if initialized == 0 {
            let rc = MPI_Init_thread(nil, nil, threadLevel, &provided)
            if rc != cmpi_success() { throw DistributedError.unavailable("MPI_Init_thread returned \(rc)") }
        } else {
            MPI_Query_thread(&provided)
        }
        comm = cmpi_comm_world()
        MPI_Comm_set_errhandler(comm, cmpi_errors_return())
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        rank = Int(r); size = Int(s)
        providedThreadLevel = provided
        var name = [CChar](repeating: 0, count: Int(cmpi_max_processor_name()) + 1)
        var len: Int32 = 0
        MPI_Get_processor_name(&name, &len)
        processorName = String(cString: name)
    }

    /// Converts an MPI return code into a thrown `DistributedError.mpi`.
    func check(_ rc: Int32, _ call: @autoclosure () -> String) throws {
        if rc == cmpi_success() { return }
        throw DistributedError.mpi(call: call(), code: rc, message: MPICommunicator.errorString(rc))
    }

    static func errorString(_ code: Int32) -> String {
        var buf = [CChar](repeating: 0, count: Int(cmpi_max_error_string()) + 1)
        var len: Int32 = 0
        if MPI_Error_string(code, &buf, &len) != cmpi_success() { return "unknown MPI error" }
        return String(cString: buf)
    }

    private func ensureLive() throws {
        if isFinalized { throw DistributedError.unavailable("communicator used after finalize()") }
    }

    /// Runs `body` as a collective wait described by `label` (reported to the stall inspector, if any).
    func waiting<T>(_ label: @autoclosure () -> String, _ body: () throws -> T) rethrows -> T {
        guard let s = stallInspector else { return try body() }
        s.enter(label())
        defer { s.leave() }
        return try body()
    }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        try waiting("the all-reduce of \(buffer.count) float\(buffer.count == 1 ? "" : "s")") { try allReduceSumUnwatched(buffer) }
    }

    /// `allReduceSum` without reporting the wait (the gradient reducer's communication thread, whose buckets are
    /// covered by `GradientReducer.finish()`'s wait).
    func allReduceSumUnwatched(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
        try ensureLive()
        guard let base = buffer.baseAddress else { return }
        var off = 0
        while off < buffer.count {
            let n = min(MPICommunicator.maxChunk, buffer.count - off)
            try check(MPI_Allreduce(cmpi_in_place(), base + off, Int32(n), cmpi_float(), cmpi_op_sum(), comm),
                      "MPI_Allreduce(float, \(n))")
            off += n
        }
    }

    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws {
        try waiting("the all-reduce of \(buffer.count) double\(buffer.count == 1 ? "" : "s")") { try allReduceSumDoubles(buffer) }
    }

    private func allReduceSumDoubles(_ buffer: UnsafeMutableBufferPointer<Double>) throws {
        try ensureLive()
        guard let base = buffer.baseAddress else { return }
        var off = 0
        while off < buffer.count {
            let n = min(MPICommunicator.maxChunk, buffer.count - off)
            try check(MPI_Allreduce(cmpi_in_place(), base + off, Int32(n), cmpi_double(), cmpi_op_sum(), comm),
                      "MPI_Allreduce(double, \(n))")
            off += n
        }
    }

    /// In-place element-wise minimum / maximum over ranks (used for consistency checks).
    public func allReduce(_ buffer: UnsafeMutableBufferPointer<Int64>, max useMax: Bool) throws {
        try waiting("the all-reduce (\(useMax ? "max" : "min")) of \(buffer.count) integers") { try allReduceInt64(buffer, max: useMax) }
    }

    private func allReduceInt64(_ buffer: UnsafeMutableBufferPointer<Int64>, max useMax: Bool) throws {
        try ensureLive()
        guard let base = buffer.baseAddress else { return }
        var off = 0
        while off < buffer.count {
            let n = min(MPICommunicator.maxChunk, buffer.count - off)
            try check(MPI_Allreduce(cmpi_in_place(), base + off, Int32(n), cmpi_int64(),
                                    useMax ? cmpi_op_max() : cmpi_op_min(), comm), "MPI_Allreduce(int64)")
            off += n
        }
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {
        try waiting("the broadcast of \(buffer.count) bytes from rank \(root)") { try broadcastBytes(buffer, root: root) }
    }

    private func broadcastBytes(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {
        try ensureLive()
        precondition(root >= 0 && root < size, "broadcast root \(root) out of range 0..<\(size)")
        guard let base = buffer.baseAddress else { return }
        var off = 0
        while off < buffer.count {
            let n = min(MPICommunicator.maxChunk, buffer.count - off)
            try check(MPI_Bcast(base + off, Int32(n), cmpi_byte(), Int32(root), comm), "MPI_Bcast(\(n) bytes)")
            off += n
        }
    }

    public func barrier() throws {
        try ensureLive()
        try waiting("a barrier") { try check(MPI_Barrier(comm), "MPI_Barrier") }
    }

    public func idleBarrier(pollInterval: Double, onPoll: ((Double) throws -> Void)?) throws {
        try ensureLive()
        try waiting("the idle barrier (the wait for rank 0's token cache)") {
            try idleBarrierUnwatched(pollInterval: pollInterval, onPoll: onPoll)
        }
    }

    private func idleBarrierUnwatched(pollInterval: Double, onPoll: ((Double) throws -> Void)?) throws {
        var request: MPI_Request? = cmpi_request_null()
        try check(MPI_Ibarrier(comm, &request), "MPI_Ibarrier")
        let start = Date()
        let sleep = useconds_t(max(0, min(pollInterval, 1)) * 1e6)
        while try !test(&request) {
            usleep(sleep)
            try onPoll?(Date().timeIntervalSince(start))
        }
    }

    /// Writes "rank R/N (host): message" to stderr, then `MPI_Abort`, which makes mpirun kill every rank.
    public func abort(message: String, code: Int32) -> Never {
        writeToStderr("SwiftMind rank \(rank)/\(size) (\(processorName)): error: \(message)\n")
        if !isFinalized { _ = MPI_Abort(comm, code == 0 ? 1 : code) }
        exit(code == 0 ? 1 : code)
    }

    public func finalize() {
        if isFinalized { return }
        isFinalized = true
        var finalized: Int32 = 0
        MPI_Finalized(&finalized)
        if finalized == 0 { MPI_Finalize() }
    }

    /// Every rank's `bytes` (lengths may differ), on rank `root` in rank order; nil on the other ranks. An
    /// `MPI_Allgather` of the lengths, then one `MPI_Gatherv`. Collective.
    /// - Throws: `DistributedError.mpi`; `DistributedError.unavailable` (on every rank) when the total exceeds
    ///   2^31 − 1 bytes, MPI's count limit.
    func gatherv(_ bytes: [UInt8], root: Int) throws -> [[UInt8]]? {
        try ensureLive()
        precondition(root >= 0 && root < size, "gather root \(root) out of range 0..<\(size)")
        var mine = Int64(bytes.count)
        var counts = [Int64](repeating: 0, count: size)
        try waiting("the gather of \(bytes.count) bytes to rank \(root) (lengths)") {
            try check(MPI_Allgather(&mine, 1, cmpi_int64(), &counts, 1, cmpi_int64(), comm), "MPI_Allgather(int64)")
        }
        let total = counts.reduce(0, +)
        guard total <= Int64(Int32.max) else {
            throw DistributedError.unavailable("a gather of \(total) bytes exceeds MPI's 2^31 − 1 count limit")
        }
        var recvCounts = counts.map { Int32($0) }
        var displs = [Int32](repeating: 0, count: size)
        for r in 1 ..< max(size, 1) { displs[r] = displs[r - 1] + recvCounts[r - 1] }
        var recv = [UInt8](repeating: 0, count: rank == root ? max(Int(total), 1) : 1)
        var send = bytes.isEmpty ? [0] : bytes
        try waiting("the gather of \(bytes.count) bytes to rank \(root)") {
            try check(MPI_Gatherv(&send, Int32(bytes.count), cmpi_byte(), &recv, &recvCounts, &displs, cmpi_byte(),
                                  Int32(root), comm), "MPI_Gatherv(\(bytes.count) bytes)")
        }
        guard rank == root else { return nil }
        return (0 ..< size).map { r in Array(recv[Int(displs[r]) ..< Int(displs[r]) + Int(recvCounts[r])]) }
    }

    // MARK: non-blocking all-reduce, used by GradientReducer

    /// Starts `MPI_Iallreduce(MPI_IN_PLACE, buffer, SUM)`; `buffer.count` must fit in Int32.
    func startAllReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws -> MPI_Request? {
        try ensureLive()
        precondition(buffer.count <= Int(Int32.max), "non-blocking all-reduce of \(buffer.count) elements exceeds Int32")
        var request: MPI_Request? = cmpi_request_null()
        try check(MPI_Iallreduce(cmpi_in_place(), buffer.baseAddress, Int32(buffer.count), cmpi_float(),
                                 cmpi_op_sum(), comm, &request), "MPI_Iallreduce(float, \(buffer.count))")
        return request
    }

    /// `MPI_Test`: drives progress; true when the request completed (it is then set to MPI_REQUEST_NULL).
    func test(_ request: inout MPI_Request?) throws -> Bool {
        var flag: Int32 = 0
        try check(MPI_Test(&request, &flag, cmpi_status_ignore()), "MPI_Test")
        return flag != 0
    }

    /// `MPI_Wait` on one request.
    func wait(_ request: inout MPI_Request?) throws {
        try check(MPI_Wait(&request, cmpi_status_ignore()), "MPI_Wait")
    }
}
