// `trainer grpo`: GRPO (Shao et al. 2024) with MiniMind's trainer/train_grpo.py semantics, trained by the shared
// `TrainingLoop` like every stage. Its "dataset" rolls out: each rank's micro-batch of prompts (the DistributedSampler
// shard) is sampled `numGenerations` times from the current policy with the KV-cache batched decoder, rewarded, and
// turned into a GRPO batch (`GRPOLoss.batch`) that the `.grpo` loss head trains on.
import Foundation
import Logging
import Model
import Datasets
import Tokenizers
import SwiftMindDistributed

/// Options of `trainer grpo`: the shared `TrainingOptions` plus GRPO's own.
@dynamicMemberLookup
public struct GRPOOptions: Codable, Sendable, ObjectiveOptions {
    public var common = TrainingOptions.defaults(for: .grpo)
    /// Tokenizer file or directory; nil = the --init directory.
    public var tokenizer: String? = nil
    /// "minimind": render the prompts with MiniMind's ChatML template (as `StageOptions.chatTemplate`).
    public var chatTemplate: String? = nil
    /// The policy to start from (required).
    public var initDir: String? = nil
    /// The frozen KL reference; nil = the --init model.
    public var reference: String? = nil
    /// A reward model directory whose score is added to the rule rewards.
    public var rewardModel: String? = nil
    public var rewardRule = RewardRule.minimind
    /// Rollouts per prompt (G).
    public var numGenerations = 6
    /// Most tokens generated per rollout (eos included).
    public var maxGenLen = 1024
    /// Sampling temperature of the rollouts (MiniMind: 0.8, fixed); no top-k / top-p filter.
    public var temperature = 0.8
    /// KL weight β and clip range ε.
    public var beta = 0.02
    public var epsilon = 0.2

    public init() {}

    public subscript<T>(dynamicMember path: WritableKeyPath<TrainingOptions, T>) -> T {
        get { common[keyPath: path] }
        set { common[keyPath: path] = newValue }
    }

    /// - Throws: `TrainingError.invalidOption` naming the first option out of range.
    public func check() throws { try validate() }

    func validate() throws {
        func check(_ ok: Bool, _ m: String) throws { if !ok { throw TrainingError.invalidOption(m) } }
        try common.validate()
        try check(initDir != nil, "grpo needs --init DIR (the policy to start from)")
        try check(numGenerations >= 2, "--num-generations must be ≥ 2 (advantages compare the rollouts of a prompt; got \(numGenerations))")
        try check(maxGenLen >= 1 && maxGenLen <= 1 << 20, "--max-gen-len must be in 1…\(1 << 20) (got \(maxGenLen))")
        try check(temperature.isFinite && temperature > 0, "--temperature must be a finite number > 0 (got \(temperature))")
        try check(beta.isFinite && beta >= 0, "--beta must be a finite number ≥ 0 (got \(beta))")
        try check(epsilon.isFinite && epsilon > 0 && epsilon < 1, "--epsilon must be in (0, 1) (got \(epsilon))")
    }

    func makeObjective(communicator: Communicator, logger: Logger) throws -> TrainingObjective {
        try GRPOObjective(options: self, communicator: communicator, logger: logger)
    }
}

/// One prompt of an RLAIF jsonl: its token ids (chat template with the generation prompt) and the reference answer.
struct RLAIFPrompt {
    var ids: [Int32]
    /// The messages before the reply (what a reward model scores the reply after).
    var messages: [ChatMessage]
    /// A top-level "answer" field, else the trailing assistant turn's content; nil when the row has neither.
    var reference: String?
}

/// The prompts of an RLAIF jsonl (MiniMind's `{"conversations": [...]}` rows): a trailing assistant turn is dropped
/// from the prompt (MiniMind's current RLAIFDataset renders `conversations[:-1]`) and kept as the reference answer;
/// the prompt's last turn must be the user's. Prompts longer than `maxLength` keep their last `maxLength` tokens
/// (MiniMind: `input_ids[:, -max_seq_len:]`).
enum RLAIFPrompts {
    /// - Throws: `JSONLError` naming the file and line of a row that is not such a conversation; `TrainingError` when
    ///   the file has no prompt, or a row lacks the reference answer `--reward-rule answer` needs.
    static func load(path: String, tokenizer tok: Tokenizer, maxLength: Int, needReference: Bool) throws -> [RLAIFPrompt] {
        var out: [RLAIFPrompt] = []
        try JSONLReader.forEachLine(path: path) { line in
            let blank = line.bytes.withUnsafeBytes { JSONLReader.isBlank($0.bindMemory(to: UInt8.self)) }
            if blank { return }
            let o = try JSONLReader.object(of: line, path: path)
            guard let conv = o["conversations"] as? [Any], !conv.isEmpty else {
                throw JSONLError.field("conversations", expected: "a non-empty array of {\"role\", \"content\"}", got: o["conversations"],
                                       path: path, line: line.number) }
            var msgs: [ChatMessage] = []
            for (k, t) in conv.enumerated() {
                guard let d = t as? [String: Any], let role = d["role"] as? String, let content = d["content"] as? String else {
                    throw JSONLError(path: path, line: line.number, reason: "conversations[\(k)] must be {\"role\": string, \"content\": string}") }
                msgs.append(ChatMessage(role: role, content: content))
            }
            try tok.checkRolesRendered(msgs, path: path, line: line.number, field: "conversations")
            var reference: String?
            if msgs.last?.role == "assistant" { reference = msgs.removeLast().content }
            if let a = o["answer"] {
                if let s = a as? String { reference = s } else if let n = a as? NSNumber, !JSONLReader.isBoolean(a) { reference = n.stringValue } else {
                    throw JSONLError.field("answer", expected: "a string or a number", got: a, path: path, line: line.number) }
            }
            guard msgs.last?.role == "user" else {
                throw JSONLError(path: path, line: line.number, reason: "the prompt's last turn must be the user's (a trailing assistant turn is taken as the reference answer); got \(msgs.last.map { "'\($0.role)'" } ?? "no turn")") }
            if needReference && reference == nil {
                throw JSONLError(path: path, line: line.number, reason: "--reward-rule answer needs a reference answer: a top-level \"answer\" or a trailing assistant turn with <answer>…</answer>") }
            if needReference, let r = reference, PostEval.answerNumber(r) == nil {
                throw JSONLError(path: path, line: line.number, reason: "--reward-rule answer needs a number in the reference answer (in its <answer>…</answer> when it has one, 《titles》 aside), found none in \"\(r.prefix(80).replacingOccurrences(of: "\n", with: "\\n"))\"") }
            var ids = tok.encode(try tok.applyChatTemplate(msgs, addGenerationPrompt: true))
            if ids.count > maxLength { ids = Array(ids.suffix(maxLength)) }
            guard !ids.isEmpty else { throw JSONLError(path: path, line: line.number, reason: "the prompt renders to no token") }
            out.append(RLAIFPrompt(ids: ids, messages: msgs, reference: reference))
        }
        guard !out.isEmpty else { throw TrainingError.invalidOption("\(path): no prompt (every line is blank)") }
        return out
    }
}

/// The rollout seed of generation `g` of prompt `index` at optimizer step `step`: a function of the run's seed and
/// these three only, so a prompt's rollouts are the same on whichever rank and world size reads it, and a resumed run
/// draws what the uninterrupted one drew (no generator state to checkpoint).
func rolloutSeed(seed: UInt64, step: Int, index: Int, generation g: Int) -> UInt64 {
    var r = SplitMix64(seed: seed ^ 0x4752_504F_524F_4C4C)   // "GRPOROLL"
    var s = r.next()
    for v in [UInt64(step), UInt64(index), UInt64(g)] { r = SplitMix64(seed: s ^ v); s = r.next() }
    return s
}

/// The GRPO "dataset": `count` prompts; `batch(indices:)` rolls out each prompt `numGenerations` times from the
/// current policy and returns the GRPO batch (groups of G consecutive rows).
final class GRPORollouts: BatchDataset {
    let prompts: [RLAIFPrompt]
    let tokenizer: Tokenizer
    let policy: MiniMindModel
    let options: GRPOOptions
    let scorer: SequenceScorer?
    let eos: Int32
    /// The optimizer step whose batches are being read (set by `GRPOObjective.willRunStep`).
    var step = 0
    /// This rank's sums over the current step: rows, reward total, length, think, repetition, answer, model, completion
    /// tokens (counted), generated tokens, rollout seconds.
    var sums = [Double](repeating: 0, count: 10)
    /// The most tokens the reward model reads: the rendered prompt + reply keeps its last `scoreLength` tokens (the
    /// prompt cut from the left, as the policy's is by --max-seq-len).
    var scoreLength: Int

    init(prompts: [RLAIFPrompt], tokenizer: Tokenizer, policy: MiniMindModel, options: GRPOOptions, scorer: SequenceScorer?) {
        self.prompts = prompts; self.tokenizer = tokenizer; self.policy = policy; self.options = options; self.scorer = scorer
        eos = tokenizer.eosTokenId
        scoreLength = options.maxSeqLen + options.maxGenLen + Self.scoreEndRoom
    }

    /// Room past --max-seq-len + --max-gen-len for the end of the assistant turn the chat template writes after the
    /// reply (MiniMind's: `<|im_end|>` and a newline).
    static let scoreEndRoom = 16

    var count: Int { prompts.count }
    /// The longest row: the longest prompt plus `maxGenLen`.
    var seqLen: Int { (prompts.map(\.ids.count).max() ?? 1) + options.maxGenLen }
    func rows(forSamples n: Int) -> Int { n * options.numGenerations }

    /// G rollouts of one prompt, decoded together (`forwardDecodeBatch`, the finished rows leaving the batch). Each row
    /// samples with its own generator (`rolloutSeed`). A completion ends with eos when one was drawn (eos included),
    /// else after `maxGenLen` tokens.
    func rollout(_ prompt: [Int32], index: Int) -> [[Int32]] {
        let G = options.numGenerations, V = policy.config.vocabSize
        let sampling = SamplingOptions(maxNewTokens: options.maxGenLen, temperature: Float(options.temperature), topP: 1, topK: 0,
                                       repetitionPenalty: 1, seed: 0, eosTokenId: eos)
        var rngs = (0..<G).map { SplitMix64(seed: rolloutSeed(seed: options.seed, step: step, index: index, generation: $0)) }
        let caches = (0..<G).map { _ in KVCache(config: policy.config, maxLength: prompt.count + options.maxGenLen) }
        var out = [[Int32]](repeating: [], count: G)
        var history = [[Int32]](repeating: prompt, count: G)
        var logits = [Float](repeating: 0, count: G * V)
        // Prefill: the same prompt in every cache (the last position's logits are the same for every row).
        logits.withUnsafeMutableBufferPointer { l in
            for g in 0..<G { policy.forwardIncremental(tokens: prompt, cache: caches[g], logits: UnsafeMutableBufferPointer(rebasing: l[g * V ..< (g + 1) * V])) }
        }
        var active = Array(0..<G)
        while !active.isEmpty {
            var next: [Int32] = [], still: [Int] = []
            for (k, g) in active.enumerated() {
                let id = Sampler.sample(logits: Array(logits[k * V ..< (k + 1) * V]), history: history[g], options: sampling, rng: &rngs[g])
                out[g].append(id); history[g].append(id)
                if id != eos && out[g].count < options.maxGenLen { next.append(id); still.append(g) }
            }
            active = still
            if active.isEmpty { break }
            logits.withUnsafeMutableBufferPointer { l in
                policy.forwardDecodeBatch(tokens: next, caches: active.map { caches[$0] },
                                          logits: UnsafeMutableBufferPointer(rebasing: l[0 ..< active.count * V]))
            }
        }
        return out
    }

    /// Rolls out, rewards and lays out the prompts `indices` (B prompts → B·G rows).
    /// - Throws: the reward model's and the tokenizer's errors.
    func batch(indices: ArraySlice<Int>) throws -> Batch {
        let G = options.numGenerations
        let t0 = Date()
        var rowsPrompt: [[Int32]] = [], completions: [[Int32]] = [], owners: [Int] = []
        for i in indices {
            let p = prompts[i].ids
            for c in rollout(p, index: i) { rowsPrompt.append(p); completions.append(c); owners.append(i) }
        }
        let seconds = Date().timeIntervalSince(t0)
        let B = completions.count
        let R = max(1, completions.map(\.count).max() ?? 1)
        let T = max(2, (rowsPrompt.map(\.count).max() ?? 1) + R)
        var ids = [Int32](repeating: 0, count: B * T), comp = [Int32](repeating: 0, count: B * R)
        var isPad = [Bool](repeating: true, count: B * R)
        for r in 0..<B {
            let p = rowsPrompt[r], c = completions[r]
            for (k, v) in p.enumerated() { ids[r * T + k] = v }
            for (j, v) in c.enumerated() { ids[r * T + p.count + j] = v; comp[r * R + j] = v; isPad[r * R + j] = false }
        }
        let mask = GRPOLoss.completionMask(completion: comp, isPad: isPad, rows: B, slots: R, eos: eos)
        // Rewards on the decoded replies (special tokens skipped, as MiniMind's batch_decode).
        var parts: [RewardParts] = []
        for r in 0..<B {
            let reply = try tokenizer.decodingGenerated(modelVocabSize: policy.config.vocabSize) { try tokenizer.decode(completions[r], skipSpecialTokens: true) }
            var p = RewardParts()
            if options.rewardRule != .answer { p = GRPORewards.miniMindRules(reply: reply) }
            if options.rewardRule != .minimind, let ref = prompts[owners[r]].reference {
                p.answer = GRPORewards.answerReward(reply: reply, reference: ref)
            }
            parts.append(p)
        }
        if let scorer {
            var seqs: [[Int32]] = []
            for r in 0..<B {
                let reply = try tokenizer.decodingGenerated(modelVocabSize: policy.config.vocabSize) { try tokenizer.decode(completions[r], skipSpecialTokens: true) }
                let msgs = prompts[owners[r]].messages + [ChatMessage(role: "assistant", content: reply)]
                let full = tokenizer.encode(try tokenizer.applyChatTemplate(msgs, addGenerationPrompt: false))
                seqs.append(full.count > scoreLength ? Array(full.suffix(scoreLength)) : full)
            }
            for (r, s) in try scorer.scores(sequences: seqs).enumerated() { parts[r].model = Double(s) }
        }
        let rewards = parts.map { Float($0.total) }
        let adv = GRPOLoss.advantages(rewards: rewards, groupSize: G)
        var b = GRPOLoss.batch(inputIds: ids, rows: B, seqLen: T, promptLens: rowsPrompt.map(\.count), completionSlots: R,
                               completionMask: mask, oldLogProbs: nil, advantages: adv)
        b.batchSize = B
        let add: [Double] = [Double(B), parts.reduce(0) { $0 + $1.total }, parts.reduce(0) { $0 + $1.length },
                             parts.reduce(0) { $0 + $1.think }, parts.reduce(0) { $0 + $1.repetition },
                             parts.reduce(0) { $0 + $1.answer }, parts.reduce(0) { $0 + $1.model },
                             Double(mask.reduce(0, +)), Double(completions.reduce(0) { $0 + $1.count }), seconds]
        for k in sums.indices { sums[k] += add[k] }
        return b
    }
}

/// `trainer grpo` as a `TrainingObjective`: the policy trains, the reference is frozen, the batches are rollouts.
final class GRPOObjective: TrainingObjective {
    let report = RunReport.named("grpo")
    let model: MiniMindModel
    let rollouts: GRPORollouts
    var dataset: BatchDataset { rollouts }
    let step: ObjectiveStep
    let dataIdentity: String
    let tokenizerPath: String
    let writtenChatTemplate: String?
    var parameters: UnsafeMutableBufferPointer<Float> { model.params }
    var gradients: UnsafeMutableBufferPointer<Float> { model.grads }
    /// This rank's clipped and counted tokens of the current step.
    private var clipped = 0.0, counted = 0.0

    init(options o: GRPOOptions, communicator comm: Communicator, logger: Logger) throws {
        let tokPath = o.tokenizer ?? o.initDir!
        let tok = try Tokenizer.loadForChat(tokPath, chatTemplate: o.chatTemplate)
        let prompts = try RLAIFPrompts.load(path: o.dataPath, tokenizer: tok, maxLength: o.maxSeqLen, needReference: o.rewardRule != .minimind)
        let net = try MiniMindModel.loadCausalLM(directory: o.initDir!, flag: "--init")
        let config = net.config
        try config.checkTokenizer(vocabSize: tok.vocabSize, source: o.initDir!)
        if comm.rank == 0, let note = tok.vocabularyGapNote(modelVocabSize: config.vocabSize, source: o.initDir!) { logger.warning("\(note)") }
        let refDir = o.reference ?? o.initDir!
        let ref = try MiniMindModel.loadCausalLM(directory: refDir, withGradients: false, flag: o.reference == nil ? "--init" : "--reference")
        if ref.config != config { throw TrainingError.mismatch("\(refDir): reference config differs from the policy's (\(o.initDir!))") }
        let scorer = try o.rewardModel.map { try RewardModelLoader.load($0) }
        if let d = o.rewardModel, let rm = scorer as? RewardModel, rm.model.config.vocabSize != tok.vocabSize {
            throw TrainingError.mismatch("\(d): the reward model's vocab_size \(rm.model.config.vocabSize) differs from the tokenizer's \(tok.vocabSize) (it scores the prompt + reply rendered with the policy's tokenizer)") }
        rollouts = GRPORollouts(prompts: prompts, tokenizer: tok, policy: net, options: o, scorer: scorer)
        if let rm = scorer as? RewardModel { rollouts.scoreLength = min(rollouts.scoreLength, rm.model.config.maxPositionEmbeddings) }
        let longestPrompt = rollouts.seqLen - o.maxGenLen
        if rollouts.seqLen > config.maxPositionEmbeddings {
            throw TrainingError.invalidOption("--max-gen-len \(o.maxGenLen) after the longest prompt (\(longestPrompt) tokens, cut by --max-seq-len) gives \(rollouts.seqLen) positions, more than the model's max_position_embeddings \(config.maxPositionEmbeddings)")
        }
        try checkForwardSize(rows: rollouts.rows(forSamples: o.batchSize), seqLen: rollouts.seqLen, config: config,
                             rowsFrom: "--batch-size × --num-generations", positionsFrom: "the longest prompt (cut by --max-seq-len) + --max-gen-len")
        model = net
        step = ObjectiveStep(model: net, head: .grpo(reference: ref, beta: o.beta, epsilon: o.epsilon))
        tokenizerPath = tokPath
        writtenChatTemplate = o.chatTemplate == nil ? nil : tok.chatTemplateSource
        let src = try SourceIdentity.of(path: o.dataPath)
        dataIdentity = "stage grpo data size \(src.size) hash \(src.sampledHash) prompts \(prompts.count); tokenizer \(tok.fingerprint); seed \(o.seed); G \(o.numGenerations) max_gen_len \(o.maxGenLen) temperature \(o.temperature) beta \(o.beta) epsilon \(o.epsilon) reward \(o.rewardRule.rawValue) reward_model \(o.rewardModel ?? "-") reference \(o.reference ?? o.initDir!)"
    }

    func describe(world: Int) -> String {
        let c = model.config, o = rollouts.options
        return "grpo: world \(world), model \(model.numParameters) parameters (hidden \(c.hiddenSize), \(c.numHiddenLayers) layers), \(o.numGenerations) rollouts per prompt (max \(o.maxGenLen) tokens, temperature \(o.temperature)), reward \(o.rewardRule.rawValue)\(o.rewardModel.map { " + reward model \($0)" } ?? ""), β \(o.beta) ε \(o.epsilon), "
    }

    func loadWeights(checkpoint dir: String) throws {
        let loaded = try MiniMindModel.load(directory: dir)
        guard loaded.config == model.config else { throw TrainingError.badCheckpoint(path: dir, reason: "its config.json differs from the model") }
        _ = model.params.update(fromContentsOf: UnsafeBufferPointer(loaded.params))
    }

    func willRunStep(_ step: Int) { rollouts.step = step }

    func microStepDone(_ part: ObjectiveLoss) {
        if let g = part.grpo { clipped += Double(g.clippedTokens); counted += Double(g.tokens) }
    }

    /// rows, reward, length, think, repetition, answer, model, completion tokens, generated tokens, rollout seconds,
    /// clipped tokens, counted tokens, ranks.
    var stepFigureCount: Int { 13 }

    func takeStepFigures() -> [Double] {
        defer { rollouts.sums = rollouts.sums.map { _ in 0 }; clipped = 0; counted = 0 }
        return rollouts.sums + [clipped, counted, 1]
    }

    func reportFigures(_ s: [Double]) -> [(String, Double)] {
        let rows = max(s[0], 1), ranks = max(s[12], 1)
        var f: [(String, Double)] = [("reward", s[1] / rows), ("reward_length", s[2] / rows), ("reward_think", s[3] / rows),
                                     ("reward_repetition", s[4] / rows)]
        if rollouts.options.rewardRule != .minimind { f.append(("reward_answer", s[5] / rows)) }
        if rollouts.options.rewardModel != nil { f.append(("reward_model", s[6] / rows)) }
        f += [("completion_len", s[7] / rows), ("clip_fraction", s[10] / max(s[11], 1)),
              ("rollout_tokens_per_s", s[8] / max(s[9] / ranks, 1e-9))]
        return f
    }
}
