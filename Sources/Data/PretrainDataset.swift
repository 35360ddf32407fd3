// MiniMind's PretrainDataset semantics over a token cache, torch's DistributedSampler semantics, and batch assembly.
import Foundation

/// Pretraining samples (MiniMind `dataset/lm_dataset.py`, `PretrainDataset`, 2025-04): the text encoded without special
/// tokens, truncated / right-padded with `padTokenId` (0) to `maxSeqLen` ids; `X = ids[:-1]`, `Y = ids[1:]`,
/// `loss_mask = (ids != pad)[1:]`, so every sample gives `T = maxSeqLen - 1` positions.
public final class PretrainDataset: @unchecked Sendable {
    public let cache: TokenCache
    public let maxSeqLen: Int
    public let padTokenId: Int32
    /// Positions per sample, `maxSeqLen - 1`.
    public var seqLen: Int { maxSeqLen - 1 }
    public var count: Int { cache.count }

    public init(cache: TokenCache, maxSeqLen: Int, padTokenId: Int32 = 0) {
        precondition(maxSeqLen >= 2, "max_seq_len must be at least 2")
        precondition(cache.kind == .pretrain, "PretrainDataset needs a pretrain token cache, got \(cache.kind)")
        self.cache = cache
        self.maxSeqLen = maxSeqLen
        self.padTokenId = padTokenId
    }

    /// Writes sample `index` into `inputIds`, `labels` and `lossMask` (each `seqLen` long). Returns the number of
    /// positions whose mask is 1.
    /// - Throws: `DataError.badCache` when the cache holds an id outside the vocab.
    @discardableResult
    public func fill(index: Int, inputIds: UnsafeMutablePointer<Int32>, labels: UnsafeMutablePointer<Int32>,
                     lossMask: UnsafeMutablePointer<Float>) throws -> Int {
        try withUnsafeTemporaryAllocation(of: Int32.self, capacity: maxSeqLen) { ids in
            let p = ids.baseAddress!
            let n = try cache.copyIds(sequence: index, maxCount: maxSeqLen, into: p)
            for j in n ..< maxSeqLen { p[j] = padTokenId }
            return fill(ids: UnsafePointer(p), inputIds: inputIds, labels: labels, lossMask: lossMask)
        }
    }

    /// X = ids[:-1], Y = ids[1:], mask = Y ≠ pad from `maxSeqLen` ids already truncated / padded.
    @inline(__always)
    func fill(ids: UnsafePointer<Int32>, inputIds: UnsafeMutablePointer<Int32>, labels: UnsafeMutablePointer<Int32>,
              lossMask: UnsafeMutablePointer<Float>) -> Int {
        let pad = padTokenId
        var masked = 0
        for t in 0 ..< seqLen {
            let x = ids[t], y = ids[t + 1]
            inputIds[t] = x
            labels[t] = y
            let m: Float = y != pad ? 1 : 0
            lossMask[t] = m
            masked += Int(m)
        }
        return masked
    }

    /// A batch `[B, T]` of the given sample indices.
    public func batch(indices: ArraySlice<Int>) throws -> Batch {
        var b = Batch(batchSize: indices.count, seqLen: seqLen)
        let T = seqLen
        var masked = 0
        try b.inputIds.withUnsafeMutableBufferPointer { x in
            try b.labels.withUnsafeMutableBufferPointer { y in
                try b.lossMask.withUnsafeMutableBufferPointer { m in
                    for (row, idx) in indices.enumerated() {
                        masked += try fill(index: idx, inputIds: x.baseAddress! + row * T, labels: y.baseAddress! + row * T,
                                           lossMask: m.baseAddress! + row * T)
                    }
                }
            }
        }
        b.maskCount = masked
        return b
    }
}

/// One micro-batch: `inputIds`, `labels` `[B, T]` int32 and `lossMask` `[B, T]` (0 / 1 as Float).
public struct Batch: Sendable {
    public var batchSize: Int
    public var seqLen: Int
    public var inputIds: [Int32]
    public var labels: [Int32]
    public var lossMask: [Float]
    /// Σ lossMask.
    public var maskCount: Int = 0

    public init(batchSize: Int, seqLen: Int) {
        self.batchSize = batchSize
        self.seqLen = seqLen
        inputIds = [Int32](repeating: 0, count: batchSize * seqLen)
        labels = [Int32](repeating: 0, count: batchSize * seqLen)
        lossMask = [Float](repeating: 0, count: batchSize * seqLen)
    }
}

/// torch `DistributedSampler` semantics (`shuffle=True`, `drop_last=False`): the epoch's order is a permutation seeded
/// with `seed + epoch`; it is padded by repeating its head to a multiple of `worldSize`; rank `r` takes positions
/// `r, r + W, r + 2W, …`. The permutation comes from our own generator (xoshiro256** seeded by SplitMix64), so it is
/// not torch's `randperm` sequence.
///
/// Resuming: `indices(epoch:startPosition:)` shards only the part of the order from global position `startPosition` on
/// (padded to a multiple of `worldSize`), so a run resumed with another world size continues at the same global sample.
/// With `startPosition == 0` it is exactly the torch layout.
public struct DistributedSampler: Sendable {
    public let datasetSize: Int
    public let worldSize: Int
    public let rank: Int
    public let seed: UInt64
    public let shuffle: Bool

    public init(datasetSize: Int, worldSize: Int, rank: Int, seed: UInt64, shuffle: Bool = true) {
        precondition(worldSize >= 1 && rank >= 0 && rank < worldSize)
        self.datasetSize = datasetSize
        self.worldSize = worldSize
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
    }

    /// The global order of epoch `epoch` (a permutation of `0..<datasetSize`).
    public func order(epoch: Int) -> [Int] {
        var idx = Array(0 ..< datasetSize)
        guard shuffle, datasetSize > 1 else { return idx }
        var rng = Xoshiro256StarStar(seed: seed &+ UInt64(epoch))
        for i in stride(from: datasetSize - 1, to: 0, by: -1) {   // Fisher–Yates
            let j = Int(rng.next(below: UInt64(i + 1)))
            idx.swapAt(i, j)
        }
        return idx
    }

    /// This rank's sample indices for `epoch`, from global position `startPosition` of the epoch's order.
    public func indices(epoch: Int, startPosition: Int = 0) -> [Int] {
        let order = order(epoch: epoch)
        precondition(startPosition >= 0 && startPosition <= order.count)
        var rest = Array(order[startPosition...])
        if rest.isEmpty { return [] }
        let padded = (rest.count + worldSize - 1) / worldSize * worldSize
        var k = 0
        while rest.count < padded { rest.append(order[k % order.count]); k += 1 }
        return Swift.stride(from: rank, to: padded, by: worldSize).map { rest[$0] }
    }

    /// Number of samples each rank gets from `startPosition` on.
    public func numSamples(startPosition: Int = 0) -> Int {
        let r = datasetSize - startPosition
        return r <= 0 ? 0 : (r + worldSize - 1) / worldSize
    }
}

/// xoshiro256** (Blackman & Vigna 2018), seeded through SplitMix64.
public struct Xoshiro256StarStar: RandomNumberGenerator, Sendable {
    public var state: (UInt64, UInt64, UInt64, UInt64)
    public init(seed: UInt64) {
        var z = seed
        func splitmix() -> UInt64 {
            z &+= 0x9E37_79B9_7F4A_7C15
            var x = z
            x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
            x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
            return x ^ (x >> 31)
        }
        state = (splitmix(), splitmix(), splitmix(), splitmix())
    }
    public mutating func next() -> UInt64 {
        let result = ((state.1 &* 5) << 7 | (state.1 &* 5) >> 57) &* 9
        let t = state.1 << 17
        state.2 ^= state.0; state.3 ^= state.1; state.1 ^= state.2; state.0 ^= state.3
        state.2 ^= t
        state.3 = (state.3 << 45) | (state.3 >> 19)
        return result
    }
    /// Uniform in `0..<n` (Lemire's nearly-divisionless rejection).
    public mutating func next(below n: UInt64) -> UInt64 {
        precondition(n > 0)
        var m = next().multipliedFullWidth(by: n)
        if m.low < n {
            let t = (0 &- n) % n
            while m.low < t { m = next().multipliedFullWidth(by: n) }
        }
        return m.high
    }
}
