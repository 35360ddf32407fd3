// `trainer eval --task preference --reward-model DIR`: held-out pair accuracy of a reward model.
import Foundation
import Model
import Datasets
import Tokenizers

extension PostEval {
    public struct RewardPreferenceResult: Sendable {
        /// Pairs with r_chosen > r_rejected (a tie counts as a miss).
        public var correct: Int
        public var pairs: Int
        /// correct / pairs (0 without pairs).
        public var accuracy: Double
        /// 95 % Wilson score interval of the accuracy (Wilson 1927), [0, 1] without pairs.
        public var interval: (low: Double, high: Double)
        /// Mean of r_chosen − r_rejected.
        public var meanMargin: Double
    }

    /// Scores both sides of every pair of a DPO-format jsonl with `rewardModel` (`RewardModel.scores`), each side
    /// rendered, encoded and truncated to `maxSeqLen` ids exactly as `trainer reward` trains on it
    /// (`RewardPairDataset`).
    /// - Throws: the jsonl's `JSONLError` (file and line), the tokenizer's and the model's errors.
    public static func rewardPreference(rewardModel rm: RewardModel, tokenizer tok: Tokenizer, dataPath: String,
                                        maxSeqLen: Int, batchPairs: Int = 8) throws -> RewardPreferenceResult {
        let ds = try RewardPairDataset(path: dataPath, tokenizer: tok, maxLength: maxSeqLen)
        var correct = 0, sumMargin = 0.0
        var start = 0
        while start < ds.count {
            let end = min(ds.count, start + batchPairs), n = end - start
            let seqs = try (start..<end).map { try ds.ids($0, rejected: false) } + (start..<end).map { try ds.ids($0, rejected: true) }
            let r = try rm.scores(sequences: seqs)
            for k in 0..<n {
                // Sides equal in the ids the model reads are a tie (margin 0), whatever rounding their rows' places
                // in the batch leave in the two scores.
                let m = seqs[k] == seqs[n + k] ? 0 : Double(r[k]) - Double(r[n + k])
                if m > 0 { correct += 1 }
                sumMargin += m
            }
            start = end
        }
        let n = ds.count
        return RewardPreferenceResult(correct: correct, pairs: n, accuracy: n > 0 ? Double(correct) / Double(n) : 0,
                                      interval: wilson(correct, n),
                                      meanMargin: n > 0 ? sumMargin / Double(n) : 0)
    }
}
