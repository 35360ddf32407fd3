// What the training loop reads a stage's data through.

/// A set of samples that yields micro-batches `[B, T]` (pretrain, SFT, DPO pairs …).
public protocol BatchDataset: AnyObject {
    /// Number of samples (a DPO sample is one chosen/rejected pair).
    var count: Int { get }
    /// Positions per row.
    var seqLen: Int { get }
    /// Rows a batch of `n` samples has (`n`, or `2n` for DPO pairs).
    func rows(forSamples n: Int) -> Int
    /// The batch of the given sample indices, materialised from the token cache.
    /// - Throws: `DataError.badCache` when the cache holds an id outside the vocab (changed after it was built).
    func batch(indices: ArraySlice<Int>) throws -> Batch
}

extension PretrainDataset: BatchDataset {
    public func rows(forSamples n: Int) -> Int { n }
}
