// Conveniences over `Communicator`: small reductions, parameter broadcast, consistency checks, abort-on-error.
import Foundation

extension Communicator {
    /// True on rank 0 (the rank that logs and writes checkpoints).
    public var isRoot: Bool { rank == 0 }

    /// `idleBarrier` polled every 10 ms, with no stall hook.
    public func idleBarrier() throws { try idleBarrier(pollInterval: 0.01, onPoll: nil) }

    /// Sum of `values` over all ranks (e.g. `[lossSum, tokenCount]`); every rank gets the same array.
    public func allReduceSum(_ values: [Double]) throws -> [Double] {
        var v = values
        try v.withUnsafeMutableBufferPointer { try allReduceSum($0) }
        return v
    }

    /// Sum of one scalar over all ranks.
    public func allReduceSum(_ value: Double) throws -> Double { try allReduceSum([value])[0] }

    /// Copies rank `root`'s parameter buffer `[numParameters]` to every rank (call once at start, so every replica
    /// begins from identical weights whatever each rank initialised).
    public func broadcastParameters(_ parameters: UnsafeMutableBufferPointer<Float>, root: Int = 0) throws {
        try broadcast(UnsafeMutableRawBufferPointer(parameters), root: root)
    }

    /// Rank `root`'s bytes, on every rank (lengths may differ across ranks before the call).
    public func broadcast(_ bytes: [UInt8], root: Int = 0) throws -> [UInt8] {
        var count = Int64(bytes.count)
        try withUnsafeMutableBytes(of: &count) { try broadcast($0, root: root) }
        var out = rank == root ? bytes : [UInt8](repeating: 0, count: Int(count))
        try out.withUnsafeMutableBytes { try broadcast($0, root: root) }
        return out
    }

    /// Every rank's `bytes` (lengths may differ), on rank `root` in rank order; nil on the other ranks. Under MPI one
    /// gather of the lengths and one `MPI_Gatherv`; other communicators broadcast each rank's bytes in turn. Collective.
    /// - Throws: the communicator's errors; under MPI `DistributedError.unavailable` when the total exceeds 2^31 − 1 bytes.
    public func gather(_ bytes: [UInt8], root: Int = 0) throws -> [[UInt8]]? {
        if let m = self as? MPICommunicator { return try m.gatherv(bytes, root: root) }
        if size == 1 { return [bytes] }
        var all: [[UInt8]] = []
        for r in 0 ..< size { all.append(try broadcast(bytes, root: r)) }
        return rank == root ? all : nil
    }

    /// Rank `root`'s string, on every rank.
    public func broadcast(_ string: String, root: Int = 0) throws -> String {
        String(decoding: try broadcast(Array(string.utf8), root: root), as: UTF8.self)
    }

    /// Checks that every rank holds the same `value` (a configuration's canonical JSON, a data fingerprint, ...).
    /// Rank 0's value is broadcast and compared byte for byte on each rank; the set of disagreeing ranks is then
    /// all-reduced so that EVERY rank throws the same `DistributedError.mismatch(what:ranks:detail:)` (no rank is left
    /// waiting in a later collective). `detail` shows, on a disagreeing rank, its value next to rank 0's around the first
    /// difference. Collective; cost: two broadcasts and one all-reduce of `size` doubles.
    public func checkSameOnAllRanks(_ value: String, what: String) throws {
        guard size > 1 else { return }
        let mine = Array(value.utf8)
        let root = try broadcast(mine, root: 0)
        var flags = [Double](repeating: 0, count: size)
        if root != mine { flags[rank] = 1 }
        flags = try allReduceSum(flags)
        let bad = flags.indices.filter { flags[$0] != 0 }
        guard bad.isEmpty else {
            var detail = ""
            if root != mine {
                let i = zip(root, mine).prefix { $0 == $1 }.count
                func around(_ b: [UInt8]) -> String {
                    let lo = max(0, i - 40), hi = min(b.count, i + 40)
                    return String(decoding: b[lo..<hi], as: UTF8.self)
                }
                detail = "rank \(rank) has …\(around(mine))… where rank 0 has …\(around(root))… (first difference at byte \(i))"
            }
            throw DistributedError.mismatch(what: what, ranks: bad, detail: detail)
        }
    }
}

/// Runs `body` on this rank; if it throws, prints the error prefixed with the rank and brings EVERY rank down
/// (`MPI_Abort` under mpirun, `exit(1)` alone), so no other rank hangs in a collective waiting for this one.
/// On success returns `body`'s value; the caller still calls `communicator.finalize()` before exiting.
///
///     let comm = try makeCommunicator()
///     runOrAbort(comm) { try train(comm) }
///     comm.finalize()
public func runOrAbort<T>(_ communicator: Communicator, code: Int32 = 1, _ body: () throws -> T) -> T {
    do {
        return try body()
    } catch {
        communicator.abort(message: String(describing: error), code: code)
    }
}
