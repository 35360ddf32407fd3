// The rewards of GRPO rollouts: MiniMind's rule rewards (trainer/train_grpo.py `calculate_rewards`, without its
// reward-model term), a verifiable answer reward, and an optional reward model.
import Foundation

/// A reward model: one scalar score per token sequence (prompt rendered with the chat template + the reply as the
/// assistant turn). Implemented by the reward model of `trainer reward` (`RewardModel(directory:)`).
public protocol SequenceScorer: AnyObject {
    /// Scores `[N]` of `sequences` (each a non-empty list of ids of the scorer's vocab).
    /// - Throws: the scorer's errors (ids out of range, …).
    func scores(sequences: [[Int32]]) throws -> [Float]
}

/// Loads the reward model of `--reward-model DIR` (`RewardModel`, the model `trainer reward` writes).
public enum RewardModelLoader {
    /// - Throws: `RewardModel(directory:)`'s errors (not a reward model, bad files).
    public static func load(_ directory: String) throws -> SequenceScorer { try RewardModel(directory: directory) }
}

extension RewardModel: SequenceScorer {}

/// Which rule rewards a run adds up (`--reward-rule`).
public enum RewardRule: String, Codable, Sendable, CaseIterable {
    /// MiniMind's rules: reply length, `</think>` count and thinking length, repetition penalty.
    case minimind
    /// 1 when the number in the reply's `<answer>…</answer>` equals the reference answer's, else 0
    /// (`GRPORewards.answerReward`, the rule of `trainer eval --task format`'s `answer_accuracy`).
    case answer
    /// Both: MiniMind's rules plus the answer reward.
    case both = "minimind+answer"
}

/// One rollout's reward and its parts (every part 0 when its rule is off).
public struct RewardParts: Sendable, Equatable {
    /// ±0.5: the stripped reply has 20…800 characters (MiniMind).
    public var length = 0.0
    /// Thinking length (+1 when 20…300 characters before the first `</think>`, else −0.5) plus the `</think>` count
    /// (+0.25 when exactly one, else −0.25); 0 when the reply has no `</think>` (MiniMind).
    public var think = 0.0
    /// −(repetition penalty of the answer part), in [−0.5, 0] (MiniMind's `rep_penalty`).
    public var repetition = 0.0
    /// 1 or 0 (`--reward-rule answer`).
    public var answer = 0.0
    /// The reward model's score (`--reward-model`).
    public var model = 0.0
    public var total: Double { length + think + repetition + answer + model }
    public init() {}
}

public enum GRPORewards {
    /// MiniMind's `rep_penalty(text, n=3, cap=0.5)`: the text lower-cased and split into words (runs of word
    /// characters: letters, digits, `_`) and single other non-space characters; over its 3-grams,
    /// min(cap, (grams − distinct grams) · cap · 2 / grams); 0 without a 3-gram.
    public static func repetitionPenalty(_ text: String, n: Int = 3, cap: Double = 0.5) -> Double {
        var toks: [String] = []
        var word = String.UnicodeScalarView()
        func flush() { if !word.isEmpty { toks.append(String(word)); word = String.UnicodeScalarView() } }
        for s in text.lowercased().unicodeScalars {
            if isWordScalar(s) { word.append(s); continue }
            flush()
            if !isSpaceScalar(s) { toks.append(String(s)) }
        }
        flush()
        guard toks.count >= n else { return 0 }
        let count = toks.count - n + 1
        var seen = Set<[String]>()
        for i in 0..<count { seen.insert(Array(toks[i..<i + n])) }
        return min(cap, Double(count - seen.count) * cap * 2 / Double(count))
    }

    /// Python's `\w` for one code point: letters (L*), numbers (N*) and `_`.
    static func isWordScalar(_ s: Unicode.Scalar) -> Bool {
        if s == "_" { return true }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter,
             .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    static func isSpaceScalar(_ s: Unicode.Scalar) -> Bool { s.properties.isWhitespace || (0x1C...0x1F).contains(s.value) }

    /// Python's `str.strip()` length in code points.
    static func strippedLength(_ s: Substring) -> Int {
        let u = Array(s.unicodeScalars)
        var a = 0, b = u.count
        while a < b && isSpaceScalar(u[a]) { a += 1 }
        while b > a && isSpaceScalar(u[b - 1]) { b -= 1 }
        return b - a
    }

    static func stripped(_ s: Substring) -> String {
        let u = Array(s.unicodeScalars)
        var a = 0, b = u.count
        while a < b && isSpaceScalar(u[a]) { a += 1 }
        while b > a && isSpaceScalar(u[b - 1]) { b -= 1 }
        var v = String.UnicodeScalarView(); v.append(contentsOf: u[a..<b])
        return String(v)
    }

    /// MiniMind's rule rewards of one reply (decoded without special tokens), as `calculate_rewards` adds them: the
    /// parts `length`, `think` and `repetition` (measured on the text after the first `</think>`, stripped, when
    /// there is one; else on the whole reply).
    public static func miniMindRules(reply: String) -> RewardParts {
        var p = RewardParts()
        let len = strippedLength(reply[...])
        p.length = (20...800).contains(len) ? 0.5 : -0.5
        var answer = reply
        if let r = reply.range(of: "</think>") {
            let thinking = reply[..<r.lowerBound], rest = reply[r.upperBound...]
            p.think += (20...300).contains(strippedLength(thinking)) ? 1.0 : -0.5
            p.think += reply.components(separatedBy: "</think>").count - 1 == 1 ? 0.25 : -0.25
            answer = stripped(rest)
        }
        p.repetition = -repetitionPenalty(answer)
        return p
    }

    /// The verifiable answer reward: 1 when the reply's answer number equals the reference's, else 0 — the rule of the
    /// `answer_accuracy` figure of `trainer eval --task format` (`PostEval.answerNumberMatches`: the first number in
    /// the `<answer>…</answer>` block, 《titles》 removed; the whole text when there is no block), so GRPO optimises
    /// exactly what the evaluation counts. `reference` is the reference answer text (its `<answer>` block when it has one).
    public static func answerReward(reply: String, reference: String) -> Double {
        PostEval.answerNumberMatches(reply, reference: reference) ? 1 : 0
    }
}
