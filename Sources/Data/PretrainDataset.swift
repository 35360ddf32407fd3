// MiniMind's PretrainDataset semantics over a token cache, and its batch assembly.
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
