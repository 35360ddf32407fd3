// `trainer eval --task preference --reward-model DIR`: a reward model's held-out pair accuracy, one JSON line.
import ArgumentParser
import Foundation
import Tokenizers
import Training

extension PostEvalArguments {
    /// Prints `{"task": "preference", "reward_model": DIR, "pairs": n, "correct": k, "pair_accuracy": k/n,
    /// "pair_accuracy_wilson95": [low, high], "mean_margin": mean(r_chosen − r_rejected)}` for the pairs of `data`.
    func runRewardPreference(rewardModel dir: String, data: String, tokenizer: String?, maxSeqLen: Int) throws {
        let rm = try RewardModel(directory: dir)
        let tok = try tokenizer.map { try Tokenizer.load($0) } ?? rm.tokenizer
        guard let tok else { throw InputError("\(dir): no tokenizer.json; give --tokenizer") }
        try rm.model.config.checkTokenizer(vocabSize: tok.vocabSize, source: dir)
        try template.apply(to: tok)
        let r = try PostEval.rewardPreference(rewardModel: rm, tokenizer: tok, dataPath: data, maxSeqLen: maxSeqLen)
        let line: [String: Any] = ["task": "preference", "reward_model": dir, "pairs": r.pairs, "correct": r.correct,
                                   "pair_accuracy": r.accuracy, "pair_accuracy_wilson95": [r.interval.low, r.interval.high],
                                   "mean_margin": r.meanMargin]
        let d = try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys, .withoutEscapingSlashes])
        print(String(decoding: d, as: UTF8.self))
    }
}
