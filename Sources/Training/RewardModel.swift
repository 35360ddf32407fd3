// A trained reward model for scoring: what `trainer reward score`, `trainer eval --task preference --reward-model`
// and GRPO's `--reward-model` read.
import Foundation
import Model
import Tokenizers

/// A reward model directory loaded for scoring: the MiniMind/Llama decoder with the scalar head `score.weight`
/// [1, hidden_size] of transformers' `LlamaForSequenceClassification` (num_labels 1, pad_token_id 0), as
/// `trainer reward` writes it. A sequence's score is `score · h`, h the final-norm hidden state at its last token.
///
/// Not thread-safe: one instance runs one forward at a time.
public final class RewardModel {
    /// The directory it was loaded from.
    public let directory: String
    /// The decoder and its head (forward-only, no gradient buffer).
    public let model: MiniMindModel
    /// The directory's tokenizer (`tokenizer.json`), nil when it has none; `scores(conversations:)` needs it.
    public let tokenizer: Tokenizer?
    /// Sequences per forward in `scores` (padded to the longest of them).
    public var batchSize = 8

    /// Loads `DIR/config.json`, `DIR/model.safetensors` and, when present, the tokenizer files.
    /// - Throws: `ModelError` naming the file when the directory is not a reward model (no
    ///   `LlamaForSequenceClassification` head with num_labels 1) or its files are bad; the tokenizer's error.
    public init(directory: String) throws {
        let m = try MiniMindModel.load(directory: directory, withGradients: false)
        guard m.scoreHead != nil else {
            throw ModelError("\((directory as NSString).appendingPathComponent("config.json")): not a reward model (architectures must be [\"LlamaForSequenceClassification\"] with num_labels 1, as `trainer reward` writes it)")
        }
        self.directory = directory
        model = m
        let tokFile = (directory as NSString).appendingPathComponent("tokenizer.json")
        if FileManager.default.fileExists(atPath: tokFile) {
            let tok = try Tokenizer.load(directory)
            try m.config.checkTokenizer(vocabSize: tok.vocabSize, source: directory)
            tokenizer = tok
        } else {
            tokenizer = nil
        }
    }

    /// One score per sequence: `score · h[last]`, h the final-norm hidden states of the sequence alone (right
    /// padding in a batch never changes them: attention is causal).
    /// - Parameter sequences: unpadded token ids, each non-empty, at most `max_position_embeddings` long.
    /// - Returns: the scores, in the order of `sequences`.
    /// - Throws: `ModelError` naming the sequence for an empty one, an id outside the vocabulary or one too long.
    public func scores(sequences: [[Int32]]) throws -> [Float] {
        let cfg = model.config
        for (i, s) in sequences.enumerated() {
            guard !s.isEmpty else { throw ModelError("reward model \(directory): sequence \(i) is empty") }
            guard s.count <= cfg.maxPositionEmbeddings else {
                throw ModelError("reward model \(directory): sequence \(i) has \(s.count) tokens, more than max_position_embeddings \(cfg.maxPositionEmbeddings)") }
            if let bad = s.firstIndex(where: { $0 < 0 || Int($0) >= cfg.vocabSize }) {
                throw ModelError("reward model \(directory): sequence \(i) token \(bad) is id \(s[bad]), outside [0, \(cfg.vocabSize))") }
        }
        let head = model.scoreHead!
        var out: [Float] = []
        out.reserveCapacity(sequences.count)
        var start = 0
        while start < sequences.count {
            let chunk = sequences[start ..< min(sequences.count, start + max(1, batchSize))]
            let T = chunk.map(\.count).max()!, B = chunk.count
            var ids = [Int32](repeating: Int32(cfg.padTokenId ?? 0), count: B * T)
            for (k, s) in chunk.enumerated() { ids.replaceSubrange(k * T ..< k * T + s.count, with: s) }
            let hidden = ids.withUnsafeBufferPointer { model.forwardHidden(inputIds: $0, batchSize: B, seqLen: T) }
            out += RewardLoss.rewards(hidden: UnsafeBufferPointer(hidden), lastIndex: chunk.map { $0.count - 1 },
                                      score: UnsafeBufferPointer(rebasing: model.params[head.range]),
                                      rows: B, seqLen: T, hiddenSize: cfg.hiddenSize)
            start += B
        }
        return out
    }

    /// Scores of whole conversations rendered as training renders them (the tokenizer's chat template, roles as
    /// given, no generation prompt — MiniMind's DPO rendering), each truncated to its first `maxLength` ids when
    /// given (as `trainer reward` truncates to `--max-seq-len`).
    /// - Throws: `ModelError` when the directory has no tokenizer; the template's and `scores(sequences:)`' errors.
    public func scores(conversations: [[ChatMessage]], maxLength: Int? = nil) throws -> [Float] {
        try scores(sequences: conversations.map { try encode($0, maxLength: maxLength) })
    }

    /// The ids `scores(conversations:)` scores for one conversation: rendered with the chat template (roles as given,
    /// no generation prompt), encoded, cut to its first `maxLength` ids when given.
    /// - Throws: `ModelError` when the directory has no tokenizer; the template's errors.
    public func encode(_ conversation: [ChatMessage], maxLength: Int? = nil) throws -> [Int32] {
        guard let tok = tokenizer else { throw ModelError("reward model \(directory): no tokenizer.json to render conversations with") }
        let ids = tok.encode(try tok.applyChatTemplate(conversation, addGenerationPrompt: false))
        return maxLength.map { Array(ids.prefix($0)) } ?? ids
    }
}
