// Collective communication among the ranks of one data-parallel job.
import CMPI
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Collective operations among the ranks of one job. `MPICommunicator` under mpirun, `SingleProcessCommunicator` otherwise.
///
/// All methods are collective: every rank must call them in the same order with buffers of the same length,
/// otherwise the job hangs or MPI reports an error. Errors from MPI are thrown as `DistributedError.mpi`.
public protocol Communicator: AnyObject {
    /// This process's rank in `0..<size`.
    var rank: Int { get }
    /// Number of ranks in the job (1 for a single process).
    var size: Int { get }
    /// In-place element-wise sum over all ranks; afterwards every rank holds the same sums.
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws
    /// Broadcasts `buffer` (raw bytes, same byte count on every rank) from `root` to every rank.
    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws
    func barrier() throws
    /// A barrier that waits without occupying a core (for ranks idle while rank 0 builds a token cache): a
    /// non-blocking barrier (`MPI_Ibarrier`) polled with `MPI_Test` every `pollInterval` seconds, sleeping in between.
    /// `onPoll(secondsWaited)` runs after every poll that found the barrier incomplete; if it throws (e.g. a stall
    /// timeout) the wait is abandoned and the error rethrown — the barrier is then still pending, so the caller must
    /// bring the job down (`abort`).
    func idleBarrier(pollInterval: Double, onPoll: ((Double) throws -> Void)?) throws
    /// Prints `message` (prefixed with the rank) to stderr and brings every rank down. Never returns.
    func abort(message: String, code: Int32) -> Never
    /// Ends MPI (no-op for a single process). Call once on every rank before the process exits; idempotent.
    func finalize()
}

/// Errors raised by the distributed layer.
public enum DistributedError: Error, CustomStringConvertible, Equatable {
    /// An MPI call returned `code`; `message` is MPI_Error_string's text.
    case mpi(call: String, code: Int32, message: String)
    /// `checkSameOnAllRanks` found ranks whose value differs from rank 0's.
    case mismatch(what: String, ranks: [Int], detail: String)
    /// The communicator was used after `finalize()`, or MPI could not be (re)initialised.
    case unavailable(String)

    public var description: String {
        switch self {
        case let .mpi(call, code, message): return "\(call) failed (MPI error \(code)): \(message)"
        case let .mismatch(what, ranks, detail):
            return "ranks \(ranks.map(String.init).joined(separator: ", ")) disagree with rank 0 on \(what)"
                + (detail.isEmpty ? "" : ": \(detail)")
        case let .unavailable(why): return "MPI unavailable: \(why)"
        }
    }
}

/// How the communicator was chosen, from the environment.
public enum LaunchEnvironment {
    /// True when the process was started by a process manager that expects MPI_Init: OpenMPI's mpirun/orterun
    /// (`OMPI_COMM_WORLD_SIZE`), a PMIx launcher such as `srun --mpi=pmix` (`PMIX_RANK`), or a PMI-1/2 launcher
    /// (`PMI_SIZE`). `SWIFTMIND_FORCE_MPI=1` forces MPI (a singleton job), `SWIFTMIND_FORCE_MPI=0` forbids it.
    /// `SLURM_*` variables alone do not count: they are also set inside a batch script that has not called srun.
    public static func launchedByMPI(_ env: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        if let force = env["SWIFTMIND_FORCE_MPI"], !force.isEmpty { return force != "0" }
        return env["OMPI_COMM_WORLD_SIZE"] != nil || env["PMIX_RANK"] != nil || env["PMI_SIZE"] != nil
    }

    /// This process's rank as its launcher set it (`OMPI_COMM_WORLD_RANK`, `PMIX_RANK`, `PMI_RANK`), 0 when none is
    /// set. Known before MPI_Init, so that only rank 0 prints command-line errors, usage and notes.
    public static func rank(_ env: [String: String] = ProcessInfo.processInfo.environment) -> Int {
        for key in ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"] {
            if let r = env[key].flatMap({ Int($0) }) { return r }
        }
        return 0
    }
}

private let sharedCommunicatorLock = NSLock()
private var sharedCommunicator: Communicator?

/// MPI when the process was started by mpirun/srun (or `SWIFTMIND_FORCE_MPI=1`), a single-process communicator otherwise.
///
/// MPI can be initialised only once per process, so repeated calls return the same communicator.
/// Throws `DistributedError.unavailable` after the MPI communicator was finalised.
public func makeCommunicator() throws -> Communicator {
    sharedCommunicatorLock.lock(); defer { sharedCommunicatorLock.unlock() }
    if let c = sharedCommunicator {
        if let m = c as? MPICommunicator, m.isFinalized { throw DistributedError.unavailable("MPI was already finalized in this process") }
        return c
    }
    let c: Communicator = LaunchEnvironment.launchedByMPI() ? try MPICommunicator() : SingleProcessCommunicator()
    sharedCommunicator = c
    return c
}

/// The communicator of a process that runs alone: rank 0 of 1; reductions and broadcasts leave buffers unchanged.
public final class SingleProcessCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {}
    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws {}
    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws {
        precondition(root == 0, "broadcast root \(root) out of range for a single process")
    }
    public func barrier() throws {}
    public func idleBarrier(pollInterval: Double, onPoll: ((Double) throws -> Void)?) throws {}
    public func abort(message: String, code: Int32) -> Never {
        writeToStderr("error: \(message)\n")
        exit(code)
    }
    public func finalize() {}
}

func writeToStderr(_ s: String) {
    var bytes = Array(s.utf8)
    bytes.withUnsafeMutableBytes { p in
        var off = 0
        while off < p.count {
            let n = write(2, p.baseAddress! + off, p.count - off)
            if n <= 0 { break }
            off += n
        }
    }
}
