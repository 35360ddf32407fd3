// The in-memory SFT / DPO datasets as they were before the token cache served every stage (Sources/Data/SFTDataset.swift
// at c2f422c), renamed with a `Ref` prefix and kept verbatim otherwise: the reference the cache-backed datasets
// must reproduce batch for batch (issue 11 asks for exactly this copy). Do not "fix" or share code with it.
import Foundation
import Datasets
import Tokenizers

/// MiniMind's assistant-span loss mask over ids already truncated/padded to `maxLength`.
///
/// For every occurrence of `bos` (the ids of `<|im_start|>assistant`) it finds the next `eos` (`<|im_end|>`) and sets
/// mask[j] = 1 for j in [start + 1, min(end + |eos| + 1, maxLength)), start = end of `bos` — i.e. the assistant
/// content after the `\n`, the `<|im_end|>` and the token after it — exactly as `_generate_loss_mask`.
func refChatLossMask(_ ids: [Int32], bos: [Int32], eos: [Int32], maxLength: Int) -> [Int8] {
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
struct RefChatSample: Sendable, Equatable {
    var inputIds: [Int32]
    var labels: [Int32]
    var lossMask: [Float]
    /// The rendered prompt text (for inspection).
    var prompt: String
}

/// The line errors the reference threw (`DataError`'s line cases before the one jsonl error type replaced them).
enum RefLineError: Error {
    case malformedLine(path: String, line: Int, reason: String)
    case missingField(path: String, line: Int, field: String)
}

/// Reads a jsonl file's lines as JSON objects; errors name the file and the 1-based line.
func refReadJSONObjects(_ path: String) throws -> [(line: Int, object: [String: Any])] {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw DataError.cannotOpen(path: path, reason: "no such file or not readable")
    }
    var out: [(Int, [String: Any])] = []
    var lineNo = 0
    for raw in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
        lineNo += 1
        if raw.allSatisfy({ $0 == 32 || $0 == 13 || $0 == 9 }) { continue }
        let obj: Any
        do { obj = try JSONSerialization.jsonObject(with: Data(raw)) } catch {
            throw RefLineError.malformedLine(path: path, line: lineNo, reason: "\(error.localizedDescription)")
        }
        guard let d = obj as? [String: Any] else {
            throw RefLineError.malformedLine(path: path, line: lineNo, reason: "not a JSON object")
        }
        out.append((lineNo, d))
    }
    if out.isEmpty { throw DataError.empty(path: path) }
    return out
}

/// Parses a conversation array `[{"role", "content"}, …]` of `field` on `line`.
func refParseConversation(_ value: Any?, path: String, line: Int, field: String, rolesByParity: Bool) throws -> [ChatMessage] {
    guard let turns = value as? [Any], !turns.isEmpty else { throw RefLineError.missingField(path: path, line: line, field: field) }
    var msgs: [ChatMessage] = []
    for (i, t) in turns.enumerated() {
        guard let d = t as? [String: Any], let content = d["content"] as? String else {
            throw RefLineError.missingField(path: path, line: line, field: "\(field)[\(i)].content")
        }
        let role: String
        if rolesByParity {
            role = i % 2 == 0 ? "user" : "assistant"
        } else {
            guard let r = d["role"] as? String else { throw RefLineError.missingField(path: path, line: line, field: "\(field)[\(i)].role") }
            role = r
        }
        msgs.append(ChatMessage(role: role, content: content))
    }
    return msgs
}

/// Renders + tokenizes + truncates/pads to `maxLength` + masks (shared by SFT and DPO).
struct RefChatRenderer {
    let tokenizer: Tokenizer
    let maxLength: Int
    let bos: [Int32], eos: [Int32]
    init(tokenizer: Tokenizer, maxLength: Int) {
        self.tokenizer = tokenizer; self.maxLength = maxLength
        bos = tokenizer.encode("<|im_start|>assistant")
        eos = tokenizer.encode("<|im_end|>")
    }
    /// X/Y/mask from the full (untruncated) ids.
    func sample(ids full: [Int32], prompt: String) -> RefChatSample {
        var ids = Array(full.prefix(maxLength))
        if ids.count < maxLength { ids += [Int32](repeating: tokenizer.padTokenId, count: maxLength - ids.count) }
        let m = refChatLossMask(ids, bos: bos, eos: eos, maxLength: maxLength)
        return RefChatSample(inputIds: Array(ids[0..<(maxLength - 1)]), labels: Array(ids[1...]),
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
struct RefReasonTagWeighting: Sendable {
    var tags: [[Int32]]
    var weight: Float
    init(tokenizer: Tokenizer, weight: Float = 10,
                tags: [String] = ["<think>", "</think>", "<answer>", "</answer>"]) {
        self.tags = tags.map { tokenizer.encode($0) }.filter { !$0.isEmpty }
        self.weight = weight
    }
    /// Multiplies `mask` by `weight` at the positions covered by a tag sequence in `labels` (mask ≠ 0 only).
    func apply(labels: [Int32], mask: inout [Float]) {
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

/// SFT samples (MiniMind `SFTDataset`): `{"conversations": [{"role","content"}, …]}` per line; roles are assigned by turn
/// parity (even = user, odd = assistant), rendered with the tokenizer's chat template, encoded, truncated / right-padded
/// with pad (0) to `maxLength`; X = ids[:-1], Y = ids[1:], loss_mask = refChatLossMask(ids)[1:].
/// With `reasonWeighting`, tag positions get extra weight while `Batch.maskCount` stays the plain mask sum.
final class RefSFTDataset {
    let path: String
    let maxLength: Int
    var seqLen: Int { maxLength - 1 }
    var count: Int { tokens.count }
    /// Full token ids of every rendered conversation (untruncated).
    let tokens: [[Int32]]
    let conversations: [[ChatMessage]]
    let renderer: RefChatRenderer
    var reasonWeighting: RefReasonTagWeighting?

    /// - Throws: `DataError` naming the file and line of a malformed row; `TokenizerError` for an unsupported template.
    init(path: String, tokenizer: Tokenizer, maxLength: Int, threads: Int = ProcessInfo.processInfo.activeProcessorCount,
                reasonWeighting: RefReasonTagWeighting? = nil) throws {
        precondition(maxLength >= 2, "max_length must be at least 2")
        self.path = path; self.maxLength = maxLength
        renderer = RefChatRenderer(tokenizer: tokenizer, maxLength: maxLength)
        self.reasonWeighting = reasonWeighting
        var convs: [[ChatMessage]] = []
        var texts: [String] = []
        for (line, obj) in try refReadJSONObjects(path) {
            let c = try refParseConversation(obj["conversations"], path: path, line: line, field: "conversations", rolesByParity: true)
            convs.append(c)
            texts.append(try tokenizer.applyChatTemplate(c, addGenerationPrompt: false))
        }
        conversations = convs
        tokens = tokenizer.encode(batch: texts, threads: threads)
    }

    func rows(forSamples n: Int) -> Int { n }

    func sample(_ i: Int) -> RefChatSample {
        var s = renderer.sample(ids: tokens[i], prompt: "")
        if let w = reasonWeighting { w.apply(labels: s.labels, mask: &s.lossMask) }
        return s
    }

    func batch(indices: ArraySlice<Int>) -> Batch {
        var b = Batch(batchSize: indices.count, seqLen: seqLen)
        let T = seqLen
        for (row, idx) in indices.enumerated() {
            let s = sample(idx)
            b.inputIds.replaceSubrange(row * T ..< (row + 1) * T, with: s.inputIds)
            b.labels.replaceSubrange(row * T ..< (row + 1) * T, with: s.labels)
            b.lossMask.replaceSubrange(row * T ..< (row + 1) * T, with: s.lossMask)
            b.maskCount += s.lossMask.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
        }
        return b
    }
}

/// DPO pairs (MiniMind `DPODataset`): `{"chosen": [turns], "rejected": [turns]}` per line (roles as given), each side
/// rendered, truncated/padded to `maxLength` and masked like SFT. A batch of n pairs has 2n rows: rows [0, n) chosen,
/// [n, 2n) rejected (the order `train_dpo.py` concatenates them in).
final class RefDPODataset {
    let path: String
    let maxLength: Int
    var seqLen: Int { maxLength - 1 }
    var count: Int { chosen.count }
    let chosen: [[Int32]], rejected: [[Int32]]
    let chosenConversations: [[ChatMessage]], rejectedConversations: [[ChatMessage]]
    let renderer: RefChatRenderer

    init(path: String, tokenizer: Tokenizer, maxLength: Int, threads: Int = ProcessInfo.processInfo.activeProcessorCount) throws {
        precondition(maxLength >= 2, "max_length must be at least 2")
        self.path = path; self.maxLength = maxLength
        renderer = RefChatRenderer(tokenizer: tokenizer, maxLength: maxLength)
        var cs: [[ChatMessage]] = [], rs: [[ChatMessage]] = []
        var ct: [String] = [], rt: [String] = []
        for (line, obj) in try refReadJSONObjects(path) {
            let c = try refParseConversation(obj["chosen"], path: path, line: line, field: "chosen", rolesByParity: false)
            let r = try refParseConversation(obj["rejected"], path: path, line: line, field: "rejected", rolesByParity: false)
            cs.append(c); rs.append(r)
            ct.append(try tokenizer.applyChatTemplate(c, addGenerationPrompt: false))
            rt.append(try tokenizer.applyChatTemplate(r, addGenerationPrompt: false))
        }
        chosenConversations = cs; rejectedConversations = rs
        chosen = tokenizer.encode(batch: ct, threads: threads)
        rejected = tokenizer.encode(batch: rt, threads: threads)
    }

    func rows(forSamples n: Int) -> Int { 2 * n }

    func sample(_ i: Int, rejected rej: Bool) -> RefChatSample {
        renderer.sample(ids: rej ? rejected[i] : chosen[i], prompt: "")
    }

    func batch(indices: ArraySlice<Int>) -> Batch {
        let n = indices.count, T = seqLen
        var b = Batch(batchSize: 2 * n, seqLen: T)
        for (k, idx) in indices.enumerated() {
            for (side, row) in [(false, k), (true, n + k)] {
                let s = sample(idx, rejected: side)
                b.inputIds.replaceSubrange(row * T ..< (row + 1) * T, with: s.inputIds)
                b.labels.replaceSubrange(row * T ..< (row + 1) * T, with: s.labels)
                b.lossMask.replaceSubrange(row * T ..< (row + 1) * T, with: s.lossMask)
                b.maskCount += s.lossMask.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
            }
        }
        return b
    }
}

/// Pretraining samples as they were read before (MiniMind `PretrainDataset`): `tokenizer.encode(text)` held in memory,
/// truncated / padded with `pad` to `maxSeqLen`; X = ids[:-1], Y = ids[1:], loss_mask = (Y != pad).
final class RefPretrainDataset {
    let tokens: [[Int32]]
    let maxSeqLen: Int
    let pad: Int32
    var seqLen: Int { maxSeqLen - 1 }
    init(texts: [String], tokenizer: Tokenizer, maxSeqLen: Int) {
        tokens = texts.map { tokenizer.encode($0) }
        self.maxSeqLen = maxSeqLen
        pad = tokenizer.padTokenId
    }
    func batch(indices: ArraySlice<Int>) -> Batch {
        var b = Batch(batchSize: indices.count, seqLen: seqLen)
        for (row, idx) in indices.enumerated() {
            var ids = Array(tokens[idx].prefix(maxSeqLen))
            ids += [Int32](repeating: pad, count: maxSeqLen - ids.count)
            for t in 0 ..< seqLen {
                b.inputIds[row * seqLen + t] = ids[t]
                b.labels[row * seqLen + t] = ids[t + 1]
                b.lossMask[row * seqLen + t] = ids[t + 1] != pad ? 1 : 0
                b.maskCount += ids[t + 1] != pad ? 1 : 0
            }
        }
        return b
    }
}
