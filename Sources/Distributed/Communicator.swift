// CONTRACT STUB — the Distributed helper replaces the bodies; the public signatures are what Training uses.
import CMPI

/// Collective operations among the ranks of one job. `MPICommunicator` under mpirun, `SingleProcessCommunicator` otherwise.
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// In-place sum over all ranks.
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws
    /// Broadcasts `buffer` from `root` to every rank.
    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws
    func barrier() throws
    /// Prints `message` (prefixed with the rank) to stderr and brings every rank down. Never returns.
    func abort(message: String, code: Int32) -> Never
    func finalize()
}

/// MPI when the process was started by mpirun/srun (or `SWIFTMIND_FORCE_MPI=1`), a single-process communicator otherwise.
public func makeCommunicator() throws -> Communicator { fatalError("unimplemented") }

/// Bucketed gradient all-reduce overlapping backward (PyTorch DDP's Reducer, Li et al. VLDB 2020).
public final class GradientReducer {
    /// `gradients` is the flat gradient buffer; buckets are contiguous ranges of about `bucketCapBytes`, built from the END of
    /// the buffer (reverse layout order), so the first bucket is the first to become ready in backward.
    public init(communicator: Communicator, gradients: UnsafeMutableBufferPointer<Float>, bucketCapBytes: Int = 25 << 20) { fatalError("unimplemented") }
    /// Call before the backward whose gradients are to be reduced.
    public func prepareForBackward() { fatalError("unimplemented") }
    /// Backward reports that `range` (flat element range) holds final gradients; full buckets start their all-reduce.
    public func gradientsReady(_ range: Range<Int>) { fatalError("unimplemented") }
    /// Waits for every bucket; afterwards `gradients` hold the SUM over ranks.
    public func finish() throws { fatalError("unimplemented") }
}
func _shimCheck() -> Int32 { var f: Int32 = 0; MPI_Initialized(&f); _ = cmpi_comm_world(); return f }
