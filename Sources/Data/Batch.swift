// The micro-batch every dataset yields and every training objective reads.

/// One micro-batch: `inputIds`, `labels` `[B, T]` int32 and `lossMask` `[B, T]` (0 / 1 as Float).
public struct Batch: Sendable {
    public var batchSize: Int
    public var seqLen: Int
    public var inputIds: [Int32]
    public var labels: [Int32]
    public var lossMask: [Float]
    /// Σ lossMask.
    public var maskCount: Int = 0
    /// GRPO only (empty otherwise): the rollout policy's log-prob of `labels[b, t]` at every position, `[B, T]`
    /// (read where `lossMask` ≠ 0; empty = on-policy, see `GRPOLoss`), and each row's group-normalised advantage `[B]`.
    public var oldLogProbs: [Float] = []
    public var advantages: [Float] = []

    public init(batchSize: Int, seqLen: Int) {
        self.batchSize = batchSize
        self.seqLen = seqLen
        inputIds = [Int32](repeating: 0, count: batchSize * seqLen)
        labels = [Int32](repeating: 0, count: batchSize * seqLen)
        lossMask = [Float](repeating: 0, count: batchSize * seqLen)
    }
}
