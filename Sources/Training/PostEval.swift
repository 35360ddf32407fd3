// Evaluations of the post-training stages: greedy exact match, DPO preference accuracy, think/answer format.
import Foundation
import Model
import Datasets
import Tokenizers

public enum PostEval {
    /// Greedy answer (temperature 0, MiniMind template, stops at `<|im_end|>`) to `messages` (the prompt turns).
    public static func greedyAnswer(model: MiniMindModel, tokenizer tok: Tokenizer, messages: [ChatMessage], maxNewTokens: Int) throws -> String {
        let prompt = try tok.applyChatTemplate(messages, addGenerationPrompt: true)
        var ids = tok.encode(prompt)
        if ids.isEmpty { ids = [tok.bosTokenId] }
        let gen = TokenGenerator(model: model, promptIds: ids,
                                 options: SamplingOptions(maxNewTokens: maxNewTokens, temperature: 0, topP: 1, eosTokenId: tok.eosTokenId))
        var out: [Int32] = []
        for id in gen { out.append(id) }
        return try tok.decodingGenerated(modelVocabSize: model.config.vocabSize) { try tok.decode(out, skipSpecialTokens: true) }
    }

    public struct Answer: Codable, Sendable { public var prompt: String; public var reference: String; public var answer: String; public var ok: Bool }

    /// For each conversation (SFT format; roles by parity) whose last user turn contains `filter`: the greedy answer to
    /// the turns up to that last user turn, compared (whitespace-trimmed) with the reference assistant turn after it.
    /// `check` decides a hit (default: exact match).
    public static func answers(model: MiniMindModel, tokenizer tok: Tokenizer, dataPath: String, filter: String?, limit: Int?,
                               maxNewTokens: Int, check: (String, String) -> Bool) throws -> [Answer] {
        let ds = try SFTDataset(path: dataPath, tokenizer: tok, maxLength: 2, threads: 1)
        var out: [Answer] = []
        for conv in ds.conversations {
            guard let lastUser = conv.lastIndex(where: { $0.role == "user" }), lastUser + 1 < conv.count else { continue }
            if let f = filter, !conv[lastUser].content.contains(f) { continue }
            let ref = conv[lastUser + 1].content.trimmingCharacters(in: .whitespacesAndNewlines)
            let ans = try greedyAnswer(model: model, tokenizer: tok, messages: Array(conv[...lastUser]), maxNewTokens: maxNewTokens)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            out.append(Answer(prompt: conv[lastUser].content, reference: ref, answer: ans, ok: check(ans, ref)))
            if let l = limit, out.count >= l { break }
        }
        return out
    }

    /// Whether `s` has the reasoning structure `<think>…</think>` then `<answer>…</answer>` (whitespace around allowed).
    public static func hasThinkAnswerFormat(_ s: String) -> Bool {
        let t = s.trimmingCharacters(in: .whitespacesAndNewlines)
        guard t.hasPrefix("<think>"), t.hasSuffix("</answer>"),
              let close = t.range(of: "</think>"), let open = t.range(of: "<answer>"),
              close.upperBound <= open.lowerBound else { return false }
        return t[close.upperBound..<open.lowerBound].allSatisfy { $0.isWhitespace }
    }

    public struct PreferenceResult: Sendable {
        /// Share of pairs whose margin is > 0.
        public var accuracy: Double
        public var pairs: Int
        public var meanMargin: Double
        /// Each pair's margin, in file order (log-prob units; the implicit reward margin is β times it).
        public var margins: [Double] = []
    }

    /// Share of DPO pairs that `model` prefers: margin = (π_c − π_r) − (ref_c − ref_r) with MiniMind's mean-over-mask
    /// sequence log-probs; without a reference the margin is π_c − π_r.
    public static func preference(model: MiniMindModel, reference: MiniMindModel?, tokenizer tok: Tokenizer, dataPath: String,
                                  maxSeqLen: Int, batchPairs: Int = 4) throws -> PreferenceResult {
        let ds = try DPODataset(path: dataPath, tokenizer: tok, maxLength: maxSeqLen)
        let T = ds.seqLen, V = model.config.vocabSize
        var hits = 0, total = 0, sumMargin = 0.0, margins: [Double] = []
        var start = 0
        while start < ds.count {
            let end = min(ds.count, start + batchPairs), n = end - start
            let b = try ds.batch(indices: Array(start..<end)[...])
            func seqLP(_ m: MiniMindModel) -> [Double] {
                let l = b.inputIds.withUnsafeBufferPointer { m.forward(inputIds: $0, batchSize: 2 * n, seqLen: T) }
                return b.labels.withUnsafeBufferPointer { y in b.lossMask.withUnsafeBufferPointer { mk in
                    DPOLoss.sequenceLogProbs(logits: UnsafeBufferPointer(l), labels: y, mask: mk, rows: 2 * n, seqLen: T, vocabSize: V) } }
            }
            let p = seqLP(model)
            let r = reference.map(seqLP) ?? [Double](repeating: 0, count: 2 * n)
            for k in 0..<n {
                // Sides equal in what the model reads (ids, labels, mask) are a tie, whatever rounding their rows'
                // places in the batch leave in the two log-probs.
                let a = k * T ..< (k + 1) * T, z = (k + n) * T ..< (k + n + 1) * T
                let same = b.inputIds[a] == b.inputIds[z] && b.labels[a] == b.labels[z] && b.lossMask[a] == b.lossMask[z]
                let margin = same ? 0 : (p[k] - p[k + n]) - (r[k] - r[k + n])
                if margin > 0 { hits += 1 }
                sumMargin += margin; total += 1; margins.append(margin)
            }
            start = end
        }
        return PreferenceResult(accuracy: Double(hits) / Double(max(total, 1)), pairs: total, meanMargin: sumMargin / Double(max(total, 1)),
                                margins: margins)
    }
}

extension PostEval {
    /// Held-out masked loss of `model` on an SFT-format jsonl (MiniMind SFT samples and mask; Σ CE·mask / Σ mask).
    public static func sftLoss(model: MiniMindModel, tokenizer tok: Tokenizer, dataPath: String, maxSeqLen: Int,
                               batchSize: Int = 8) throws -> (loss: Double, tokens: Int) {
        let ds = try SFTDataset(path: dataPath, tokenizer: tok, maxLength: maxSeqLen)
        let T = ds.seqLen, V = model.config.vocabSize
        var total = 0.0, tokens = 0, start = 0
        while start < ds.count {
            let end = min(ds.count, start + batchSize)
            let b = try ds.batch(indices: Array(start..<end)[...])
            let logits = b.inputIds.withUnsafeBufferPointer { model.forward(inputIds: $0, batchSize: end - start, seqLen: T) }
            var ce = [Float](repeating: 0, count: (end - start) * T)
            b.labels.withUnsafeBufferPointer { y in ce.withUnsafeMutableBufferPointer { o in
                CrossEntropy.tokenLoss(logits: UnsafeBufferPointer(logits), labels: y, vocabSize: V, out: o) } }
            for r in ce.indices where b.lossMask[r] != 0 { total += Double(ce[r]); tokens += 1 }
            start = end
        }
        return (total / Double(max(tokens, 1)), tokens)
    }
}

extension PostEval {
    /// The author named by an answer of the form "…的作者是X。" (X up to the next "。" or the end), nil when absent.
    public static func author(inReference s: String) -> String? {
        guard let r = s.range(of: "作者是", options: .backwards) else { return nil }
        let tail = s[r.upperBound...]
        let name = tail.prefix { $0 != "。" && $0 != "，" && !$0.isNewline }
        return name.isEmpty ? nil : String(name)
    }
}
