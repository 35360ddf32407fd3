// What a finished run reports, whichever stage trained (pretrain, sft, lora, dpo, reason, distill).

/// What a finished run reports (`TrainingRunner.run()`).
public struct TrainingSummary: Sendable {
    /// Optimizer steps done (a resumed run: counted from step 0, the checkpoint's steps included).
    public var steps: Int
    /// Loss of every step this process ran (a resumed run: only the steps after the checkpoint).
    public var losses: [Double]
    /// OUT/final (rank 0); nil on the other ranks.
    public var finalDirectory: String?
    /// Tokens over all ranks per second of step time.
    public var tokensPerSecond: Double
    /// Σ seconds waiting in `GradientReducer.finish()`.
    public var commWaitSeconds: Double
    /// Σ seconds of the steps.
    public var stepSeconds: Double
    /// Σ time waiting in `GradientReducer.finish()` / Σ step time: communication that backward did not hide.
    public var unhiddenCommFraction: Double { stepSeconds > 0 ? commWaitSeconds / stepSeconds : 0 }
}
