// Chat datasets of the post-training stages: SFT / reasoning (MiniMind `SFTDataset`) and DPO (MiniMind `DPODataset`),
// both built on the same ChatML loss mask (jingyaogong/minimind `dataset/lm_dataset.py`, 2025-04). Their samples are
// read from a `TokenCache` (rendered, encoded, untruncated ids); truncation, padding and masks are applied per batch.
import Foundation
import Tokenizers

/// MiniMind's assistant-span loss mask over ids already truncated/padded to `maxLength`.
///
/// For every occurrence of `bos` (the ids of `<|im_start|>assistant`) it finds the next `eos` (`<|im_end|>`) and sets
/// mask[j] = 1 for j in [start + 1, min(end + |eos| + 1, maxLength)), start = end of `bos` — i.e. the assistant
/// content after the `\n`, the `<|im_end|>` and the token after it — exactly as `_generate_loss_mask`.
public func chatLossMask(_ ids: [Int32], bos: [Int32], eos: [Int32], maxLength: Int) -> [Int8] {
    var mask = [Int8](repeating: 0, count: ids.count)
    let n = ids.count
    func matches(_ pat: [Int32], at i: Int) -> Bool {
        if pat.isEmpty || i + pat.count > n { return false }
        for k in 0..<pat.count where ids[i + k] != pat[k] { return false }
        return true
    }
    var i = 0
    while i < n {
        if matches(bos, at: i) {
            let start = i + bos.count
            var end = start
            while end < n { if matches(eos, at: end) { break }; end += 1 }
            let stop = min(end + eos.count + 1, maxLength)
            if start + 1 < stop { for j in (start + 1)..<stop where j < n { mask[j] = 1 } }
            i = end < n ? end + eos.count : n
        } else {
            i += 1
        }
    }
    return mask
}

/// One rendered sample: `inputIds` (X), `labels` (Y) and `lossMask` each `maxLength − 1` long.
public struct ChatSample: Sendable, Equatable {
    public var inputIds: [Int32]
    public var labels: [Int32]
    public var lossMask: [Float]
    /// The rendered prompt text (for inspection).
    public var prompt: String
}

/// Parses a conversation array `[{"role", "content"}, …]` of `field` on `line`.
/// - Throws: `JSONLError` naming the field (`conversations`, `chosen[1].content`, …) and the type it must have.
public func parseConversation(_ value: Any?, path: String, line: Int, field: String, rolesByParity: Bool) throws -> [ChatMessage] {
    let conversation = "an array of {role, content} objects"
    guard let turns = value as? [Any], !turns.isEmpty else {
        throw JSONLError.field(field, expected: conversation, got: value, path: path, line: line)
    }
    var msgs: [ChatMessage] = []
    for (i, t) in turns.enumerated() {
        guard let d = t as? [String: Any] else {
            throw JSONLError.field("\(field)[\(i)]", expected: "a {role, content} object", got: t, path: path, line: line)
        }
        guard let content = d["content"] as? String else {
            throw JSONLError.field("\(field)[\(i)].content", expected: "a string", got: d["content"], path: path, line: line)
        }
        let role: String
        if rolesByParity {
            role = i % 2 == 0 ? "user" : "assistant"
        } else {
            guard let r = d["role"] as? String else {
                throw JSONLError.field("\(field)[\(i)].role", expected: "a string", got: d["role"], path: path, line: line)
            }
            role = r
        }
        msgs.append(ChatMessage(role: role, content: content))
    }
    return msgs
}

/// Renders + tokenizes + truncates/pads to `maxLength` + masks (shared by SFT and DPO).
struct ChatRenderer {
    let tokenizer: Tokenizer
    let maxLength: Int
    let bos: [Int32], eos: [Int32]
    init(tokenizer: Tokenizer, maxLength: Int) {
        self.tokenizer = tokenizer; self.maxLength = maxLength
        bos = tokenizer.encode("<|im_start|>assistant")
        eos = tokenizer.encode("<|im_end|>")
    }
    /// The first `maxLength` ids of cache sequence `s` (all that `sample(ids:)` reads).
    func leadingIds(_ cache: TokenCache, sequence s: Int) throws -> [Int32] {
        try [Int32](unsafeUninitializedCapacity: maxLength) { buf, n in
            n = try cache.copyIds(sequence: s, maxCount: maxLength, into: buf.baseAddress!)
        }
    }
    /// X/Y/mask from the full (untruncated) ids.
    func sample(ids full: [Int32], prompt: String) -> ChatSample {
        var ids = Array(full.prefix(maxLength))
        if ids.count < maxLength { ids += [Int32](repeating: tokenizer.padTokenId, count: maxLength - ids.count) }
        let m = chatLossMask(ids, bos: bos, eos: eos, maxLength: maxLength)
        return ChatSample(inputIds: Array(ids[0..<(maxLength - 1)]), labels: Array(ids[1...]),
                          lossMask: m[1...].map { Float($0) }, prompt: prompt)
    }
}

/// Token-sequence weights of reasoning distillation (MiniMind `train_distill_reason.py`).
///
/// MiniMind sets `loss_mask[isin(Y, ids(<think>) ∪ ids(</think>) ∪ ids(<answer>) ∪ ids(</answer>))] = 10`, i.e. every
/// position whose label is ANY token id that occurs in one of the four tags — which also hits stray `<`, `>`, `think`
/// tokens elsewhere in the text (and even unmasked prompt positions). SwiftMind weights only the label positions where
/// a tag's complete token sequence actually occurs, and only inside the loss mask. The loss is still normalised by the
/// plain (unweighted) mask sum, as MiniMind does.
public struct ReasonTagWeighting: Sendable {
    public var tags: [[Int32]]
    public var weight: Float
    public init(tokenizer: Tokenizer, weight: Float = 10,
                tags: [String] = ["<think>", "</think>", "<answer>", "</answer>"]) {
        self.tags = tags.map { tokenizer.encode($0) }.filter { !$0.isEmpty }
        self.weight = weight
    }
    /// Multiplies `mask` by `weight` at the positions covered by a tag sequence in `labels` (mask ≠ 0 only).
    public func apply(labels: [Int32], mask: inout [Float]) {
        let n = labels.count
        var i = 0
        while i < n {
            var hit = 0
            for t in tags where i + t.count <= n {
                var ok = true
                for k in 0..<t.count where labels[i + k] != t[k] { ok = false; break }
                if ok { hit = max(hit, t.count) }
            }
            if hit > 0 {
                for k in i..<(i + hit) where mask[k] != 0 { mask[k] = weight }
                i += hit
            } else { i += 1 }
        }
    }
}

/// What the SFT and DPO datasets share: a chat `TokenCache` (`.sft` or `.dpo`: rendered, encoded, untruncated ids)
/// whose sequences one `ChatRenderer` truncates / pads to `maxLength` ids and masks when a batch is asked for.
public class ChatCacheDataset: @unchecked Sendable {
    /// The jsonl file the cache was built from.
    public var path: String { cache.meta.sourcePath }
    public let maxLength: Int
    /// Positions per row, `maxLength - 1`.
    public var seqLen: Int { maxLength - 1 }
    /// Sequences of an `.sft` cache, pairs of a `.dpo` cache.
    public var count: Int { cache.count }
    public let cache: TokenCache
    let renderer: ChatRenderer

    /// Traps unless `maxLength ≥ 2` and `cache` is of `kind`.
    init(cache: TokenCache, kind: TokenCacheKind, tokenizer: Tokenizer, maxLength: Int) {
        precondition(maxLength >= 2, "max_length must be at least 2")
        precondition(cache.kind == kind, "\(type(of: self)) needs a \(kind) token cache, got \(cache.kind)")
        self.maxLength = maxLength; self.cache = cache
        renderer = ChatRenderer(tokenizer: tokenizer, maxLength: maxLength)
    }

    /// Reads, renders and encodes the whole jsonl file at `path` into memory, keeping every sequence's turns (small
    /// evaluation files; training uses a built cache).
    static func loadInMemory(path: String, kind: TokenCacheKind, tokenizer: Tokenizer, maxLength: Int,
                             threads: Int) throws -> (TokenCache, [[ChatMessage]]) {
        precondition(maxLength >= 2, "max_length must be at least 2")
        return try TokenCache.load(dataPath: path, kind: kind, tokenizer: tokenizer, threads: threads, keepConversations: true)
    }
}

/// SFT samples (MiniMind `SFTDataset`): `{"conversations": [{"role","content"}, …]}` per line; roles are assigned by turn
/// parity (even = user, odd = assistant), rendered with the tokenizer's chat template, encoded, truncated / right-padded
/// with pad (0) to `maxLength`; X = ids[:-1], Y = ids[1:], loss_mask = chatLossMask(ids)[1:].
/// With `reasonWeighting`, tag positions get extra weight while `Batch.maskCount` stays the plain mask sum.
///
/// The ids come from a `.sft` `TokenCache` (training: memory-mapped; `init(path:…)`: held in memory); a sample is
/// materialised from the first `maxLength` ids of its sequence when a batch is asked for.
public final class SFTDataset: ChatCacheDataset, BatchDataset, @unchecked Sendable {
    /// Every sample's turns (roles by parity) for a dataset loaded with `init(path:…)`; empty on a built cache.
    public let conversations: [[ChatMessage]]
    public var reasonWeighting: ReasonTagWeighting?

    /// Samples of a `.sft` cache (`TokenCache.openOrBuild(…, kind: .sft, …)`) built with `tokenizer`.
    public convenience init(cache: TokenCache, tokenizer: Tokenizer, maxLength: Int, reasonWeighting: ReasonTagWeighting? = nil) {
        self.init(cache: cache, conversations: [], tokenizer: tokenizer, maxLength: maxLength, reasonWeighting: reasonWeighting)
    }

    /// Reads, renders and encodes the whole file into memory (small evaluation files; training uses a built cache).
    /// - Throws: `JSONLError` naming the file and line of a malformed row; `TokenizerError` for an unsupported template.
    public convenience init(path: String, tokenizer: Tokenizer, maxLength: Int, threads: Int = ProcessInfo.processInfo.activeProcessorCount,
                            reasonWeighting: ReasonTagWeighting? = nil) throws {
        let (cache, convs) = try ChatCacheDataset.loadInMemory(path: path, kind: .sft, tokenizer: tokenizer, maxLength: maxLength, threads: threads)
        self.init(cache: cache, conversations: convs, tokenizer: tokenizer, maxLength: maxLength, reasonWeighting: reasonWeighting)
    }

    private init(cache: TokenCache, conversations: [[ChatMessage]], tokenizer: Tokenizer, maxLength: Int,
                 reasonWeighting: ReasonTagWeighting?) {
        self.conversations = conversations
        self.reasonWeighting = reasonWeighting
        super.init(cache: cache, kind: .sft, tokenizer: tokenizer, maxLength: maxLength)
    }

    public func rows(forSamples n: Int) -> Int { n }

    public func sample(_ i: Int) throws -> ChatSample {
        var s = renderer.sample(ids: try renderer.leadingIds(cache, sequence: i), prompt: "")
        if let w = reasonWeighting { w.apply(labels: s.labels, mask: &s.lossMask) }
        return s
    }

    public func batch(indices: ArraySlice<Int>) throws -> Batch {
        var b = Batch(batchSize: indices.count, seqLen: seqLen)
        for (row, idx) in indices.enumerated() { b.set(row: row, try sample(idx)) }
        return b
    }
}

/// Chosen/rejected pairs of a `.dpo` `TokenCache` (sequence 2i chosen, 2i + 1 rejected): what `DPODataset` and
/// `RewardPairDataset` share — loading, and the pairs' turns of a file read whole. The subclasses lay out the batches.
public class ChatPairDataset: ChatCacheDataset, @unchecked Sendable {
    /// The pairs' turns for a dataset loaded with `init(path:…)`; empty on a built cache.
    public let chosenConversations: [[ChatMessage]], rejectedConversations: [[ChatMessage]]

    /// Pairs of a `.dpo` cache built with `tokenizer`.
    public convenience init(cache: TokenCache, tokenizer: Tokenizer, maxLength: Int) {
        self.init(cache: cache, conversations: [], tokenizer: tokenizer, maxLength: maxLength)
    }

    /// Reads, renders and encodes the whole file into memory (evaluation files; training uses a built cache).
    /// - Throws: `JSONLError` naming the file and line of a malformed row; `TokenizerError` for an unsupported template.
    public convenience init(path: String, tokenizer: Tokenizer, maxLength: Int, threads: Int = ProcessInfo.processInfo.activeProcessorCount) throws {
        let (cache, convs) = try ChatCacheDataset.loadInMemory(path: path, kind: .dpo, tokenizer: tokenizer, maxLength: maxLength, threads: threads)
        self.init(cache: cache, conversations: convs, tokenizer: tokenizer, maxLength: maxLength)
    }

    /// How many of (at most `limit`) pairs, spread evenly over the dataset, have both sides equal in their first
    /// `maxLength` ids — pairs without a training signal, since DPO and the reward model only see those ids (a prompt
    /// longer than `--max-seq-len` hides both answers). `checked` = the pairs read.
    /// - Throws: the cache's read errors.
    public func pairsEqualAfterTruncation(limit: Int = 2000) throws -> (equal: Int, checked: Int) {
        let n = count, k = min(n, max(1, limit))
        var equal = 0
        for j in 0..<k {
            let i = n <= limit ? j : Int((Double(j) + 0.5) * Double(n) / Double(k))
            if try renderer.leadingIds(cache, sequence: 2 * i) == renderer.leadingIds(cache, sequence: 2 * i + 1) { equal += 1 }
        }
        return (equal, k)
    }

    init(cache: TokenCache, conversations: [[ChatMessage]], tokenizer: Tokenizer, maxLength: Int) {
        chosenConversations = stride(from: 0, to: conversations.count, by: 2).map { conversations[$0] }
        rejectedConversations = stride(from: 1, to: conversations.count, by: 2).map { conversations[$0] }
        super.init(cache: cache, kind: .dpo, tokenizer: tokenizer, maxLength: maxLength)
    }
}

/// DPO pairs (MiniMind `DPODataset`): `{"chosen": [turns], "rejected": [turns]}` per line (roles as given), each side
/// rendered, truncated/padded to `maxLength` and masked like SFT. A batch of n pairs has 2n rows: rows [0, n) chosen,
/// [n, 2n) rejected (the order `train_dpo.py` concatenates them in). The ids come from a `.dpo` `TokenCache`
/// (sequence 2i chosen, 2i + 1 rejected).
public final class DPODataset: ChatPairDataset, BatchDataset, @unchecked Sendable {

    public func rows(forSamples n: Int) -> Int { 2 * n }

    public func sample(_ i: Int, rejected rej: Bool) throws -> ChatSample {
        renderer.sample(ids: try renderer.leadingIds(cache, sequence: 2 * i + (rej ? 1 : 0)), prompt: "")
    }

    public func batch(indices: ArraySlice<Int>) throws -> Batch {
        let n = indices.count
        var b = Batch(batchSize: 2 * n, seqLen: seqLen)
        for (k, idx) in indices.enumerated() {
            b.set(row: k, try sample(idx, rejected: false))
            b.set(row: n + k, try sample(idx, rejected: true))
        }
        return b
    }
}

extension Batch {
    /// Writes one sample into row `row` and adds its nonzero mask positions to `maskCount`.
    mutating func set(row: Int, _ s: ChatSample) {
        let T = seqLen
        inputIds.replaceSubrange(row * T ..< (row + 1) * T, with: s.inputIds)
        labels.replaceSubrange(row * T ..< (row + 1) * T, with: s.labels)
        lossMask.replaceSubrange(row * T ..< (row + 1) * T, with: s.lossMask)
        maskCount += s.lossMask.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
    }
}
