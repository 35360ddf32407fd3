// `--grad-comm-dtype bfloat16`: the gradient all-reduce sends bf16 instead of fp32 and sums in fp32.
// Each bucket is rounded to bf16 (round to nearest even, CQuant's conversion) into a send buffer, all-gathered
// (MPI_Allgather / MPI_Iallgather of the bf16 bytes), and the ranks' bf16 values are added in fp32, in rank order, into
// the fp32 bucket. The result is, on every rank and bit for bit, what an fp32 all-reduce of the bf16-rounded gradients
// gives with the ranks summed in order (for 2 ranks exactly MPI's fp32 sum, a + b being commutative).
// Bytes each rank receives per element: (world − 1)·2, against 8·(world − 1)/world for a ring all-reduce of fp32 (half
// at 2 ranks, equal at 4): this payload pays off on slow links between few ranks.
import CMPI
import CQuant
import Foundation

/// What the gradient all-reduce sends.
public enum GradientPayload: String, Sendable, CaseIterable {
    /// fp32 gradients, summed by MPI.
    case float32
    /// bf16-rounded gradients, all-gathered and summed in fp32 (see the file comment).
    case bfloat16
}

/// The bf16 send and receive buffers of a `GradientReducer`'s buckets, allocated once: send `[n]` and receive
/// `[world, n]` bf16 for the n gradient elements (bucket i uses the same element range in each).
final class BF16BucketBuffers {
    let world: Int
    let count: Int
    let send: UnsafeMutablePointer<UInt16>
    let recv: UnsafeMutablePointer<UInt16>

    init(count: Int, world: Int) {
        self.world = world; self.count = count
        send = .allocate(capacity: max(count, 1))
        recv = .allocate(capacity: max(count * world, 1))
    }
    deinit { send.deallocate(); recv.deallocate() }

    /// Rounds `gradients[range]` to bf16 into the send buffer.
    func pack(_ gradients: UnsafeMutableBufferPointer<Float>, _ range: Range<Int>) {
        sm_f32_to_bf16(gradients.baseAddress! + range.lowerBound, range.count, send + range.lowerBound)
    }

    /// Where rank r's copy of `range` lands in the receive buffer: the bucket's gather is laid out rank after rank.
    func received(rank r: Int, _ range: Range<Int>) -> UnsafeMutablePointer<UInt16> {
        recv + range.lowerBound * world + r * range.count
    }

    /// `gradients[range]` = Σ over ranks, in rank order, of the gathered bf16 values, added in fp32.
    func unpack(_ gradients: UnsafeMutableBufferPointer<Float>, _ range: Range<Int>) {
        let dst = gradients.baseAddress! + range.lowerBound
        sm_bf16_to_f32(received(rank: 0, range), range.count, dst)
        for r in 1..<max(world, 1) { sm_bf16_accumulate_f32(received(rank: r, range), range.count, dst) }
    }
}

extension MPICommunicator {
    /// `MPI_Allgather` of `count` bf16 values per rank from `send` into `recv` (`[world, count]`); blocking,
    /// unwatched (the reducer's finish() covers the wait). `count · 2` bytes must fit in Int32.
    func allGatherBF16Unwatched(_ send: UnsafePointer<UInt16>, _ count: Int, into recv: UnsafeMutablePointer<UInt16>) throws {
        precondition(count * 2 <= Int(Int32.max), "bf16 all-gather of \(count) elements exceeds Int32 bytes")
        try check(MPI_Allgather(send, Int32(count * 2), cmpi_byte(), recv, Int32(count * 2), cmpi_byte(), comm),
                  "MPI_Allgather(bf16, \(count))")
    }

    /// Starts `MPI_Iallgather` of `count` bf16 values per rank (as `allGatherBF16Unwatched`).
    func startAllGatherBF16(_ send: UnsafePointer<UInt16>, _ count: Int, into recv: UnsafeMutablePointer<UInt16>) throws -> MPI_Request? {
        precondition(count * 2 <= Int(Int32.max), "bf16 all-gather of \(count) elements exceeds Int32 bytes")
        var request: MPI_Request? = cmpi_request_null()
        try check(MPI_Iallgather(send, Int32(count * 2), cmpi_byte(), recv, Int32(count * 2), cmpi_byte(), comm, &request),
                  "MPI_Iallgather(bf16, \(count))")
        return request
    }
}
