// ModelConfig: MiniMind2 / Hugging Face Llama configuration (config.json with HF snake_case keys).
import Foundation

/// Errors raised while reading or validating model files. Each message names the file and the field/tensor.
public struct ModelError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// MiniMind2 / Hugging Face Llama configuration. Field names are HF's `config.json` keys (`hidden_size`, …), read by
/// `ModelConfig.parse` (every key that changes the math is read or refused; see there).
/// Defaults are MiniMind2-small's: hidden 512, 8 layers, 8 heads, 2 KV heads, vocab 6400, RMSNorm eps 1e-5,
/// RoPE θ 1e6, tied embeddings, no dropout, bos 1, eos 2.
public struct ModelConfig: Equatable, Sendable {
    public var hiddenSize: Int = 512
    public var numHiddenLayers: Int = 8
    public var numAttentionHeads: Int = 8
    public var numKeyValueHeads: Int = 2
    public var vocabSize: Int = 6400
    public var intermediateSize: Int = 1408
    public var rmsNormEps: Float = 1e-5
    /// `rope_theta` (top level, or inside `rope_parameters` / `rope_scaling`).
    public var ropeTheta: Double = 1e6
    /// RoPE frequency scaling (`rope_parameters` / `rope_scaling` with a `rope_type` other than "default").
    public var ropeScaling: RopeScaling = .none
    public var maxPositionEmbeddings: Int = 32768
    public var tieWordEmbeddings: Bool = true
    /// `head_dim` when config.json gives one (it may differ from hidden_size / num_attention_heads); nil = that ratio.
    public var explicitHeadDim: Int? = nil
    /// `bos_token_id` (nil when config.json sets none).
    public var bosTokenId: Int? = 1
    /// `eos_token_id`, a single id or a list (empty when config.json sets none).
    public var eosTokenIds: [Int] = [2]
    /// The ids of `eos_token_id` other than `eos` (where transformers' generate also stops).
    public func extraStopTokenIds(besides eos: Int32?) -> [Int32] { eosTokenIds.map(Int32.init).filter { $0 != eos } }
    /// `pad_token_id` (nil when config.json sets none; never used by the forward, so not range-checked).
    public var padTokenId: Int? = nil
    // Mixture-of-Experts (MiniMind2-MoE, see MoE.swift); HF keys as MiniMind's MiniMindConfig.
    /// `use_moe`: each block's MLP becomes `n_routed_experts` routed SwiGLU experts + `n_shared_experts` shared ones.
    public var useMoe: Bool = false
    /// `num_experts_per_tok` (top-k).
    public var numExpertsPerTok: Int = 2
    /// `n_routed_experts` (E).
    public var nRoutedExperts: Int = 4
    /// `n_shared_experts` (every token passes through each).
    public var nSharedExperts: Int = 1
    /// `scoring_func` (only "softmax").
    public var scoringFunc: String = "softmax"
    /// `aux_loss_alpha` (α of the load-balancing loss).
    public var auxLossAlpha: Float = 0.1
    /// `seq_aux` (sequence-level aux loss; the batch-level variant is not implemented).
    public var seqAux: Bool = true
    /// `norm_topk_prob`: top-k weights divided by their sum when k > 1.
    public var normTopkProb: Bool = true
    /// Sequence classification (transformers' `LlamaForSequenceClassification`, read from `architectures`): the
    /// number of labels of the head `score.weight` [num_labels, hidden_size] applied to the final-norm hidden state of
    /// each sequence's last non-pad token. nil = a causal LM (`LlamaForCausalLM`); only 1 (a scalar reward model,
    /// `RewardModel`) is supported.
    public var numLabels: Int? = nil

    /// `intermediateSize` nil → 64·⌈(8·hidden/3)/64⌉ as MiniMind; `headDim` nil → hidden / heads.
    public init(hiddenSize: Int = 512, numHiddenLayers: Int = 8, numAttentionHeads: Int = 8, numKeyValueHeads: Int = 2,
                vocabSize: Int = 6400, intermediateSize: Int? = nil, rmsNormEps: Float = 1e-5, ropeTheta: Double = 1e6,
                maxPositionEmbeddings: Int = 32768, headDim: Int? = nil, ropeScaling: RopeScaling = .none) {
        self.hiddenSize = hiddenSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.vocabSize = vocabSize
        self.intermediateSize = intermediateSize ?? ModelConfig.defaultIntermediateSize(hiddenSize: hiddenSize)
        self.rmsNormEps = rmsNormEps
        self.ropeTheta = ropeTheta
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.explicitHeadDim = headDim
        self.ropeScaling = ropeScaling
    }

    /// MiniMind's rule: 64·⌈(8·hidden/3)/64⌉ (512 → 1408).
    public static func defaultIntermediateSize(hiddenSize: Int) -> Int {
        // Double and clamped: an absurd --hidden-size must reach `validate` (which names it), not trap here.
        let raw = Int(min(Double(hiddenSize) * 8 / 3.0, Double(1 << 56)))
        return 64 * ((raw + 63) / 64)
    }

    /// Per-head dimension: `head_dim` when given, else `hidden_size / num_attention_heads`.
    public var headDim: Int { explicitHeadDim ?? (numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0) }
    /// Width of the q projection output (`num_attention_heads · head_dim`).
    public var qDim: Int { numAttentionHeads * headDim }
    /// Width of the k/v projection outputs (`num_key_value_heads · head_dim`).
    public var kvDim: Int { numKeyValueHeads * headDim }

    /// Throws a `ModelError` naming the first inconsistent field.
    public func validate(source: String = "config") throws {
        func bad(_ f: String, _ why: String) -> ModelError { ModelError("\(source): field \(f) \(why)") }
        if hiddenSize <= 0 { throw bad("hidden_size", "must be > 0 (got \(hiddenSize))") }
        if numHiddenLayers <= 0 { throw bad("num_hidden_layers", "must be > 0 (got \(numHiddenLayers))") }
        if numAttentionHeads <= 0 || hiddenSize % numAttentionHeads != 0 {
            throw bad("num_attention_heads", "must divide hidden_size \(hiddenSize) (got \(numAttentionHeads))") }
        if numKeyValueHeads <= 0 || numAttentionHeads % numKeyValueHeads != 0 {
            throw bad("num_key_value_heads", "must divide num_attention_heads \(numAttentionHeads) (got \(numKeyValueHeads))") }
        if let hd = explicitHeadDim {
            if hd <= 0 || hd % 2 != 0 { throw bad("head_dim", "must be even and > 0 for RoPE (got \(hd))") }
        } else if headDim % 2 != 0 { throw bad("hidden_size", "gives an odd head_dim \(headDim); RoPE needs an even one") }
        if vocabSize <= 0 { throw bad("vocab_size", "must be > 0 (got \(vocabSize))") }
        if intermediateSize <= 0 { throw bad("intermediate_size", "must be > 0 (got \(intermediateSize))") }
        if !(rmsNormEps > 0) { throw bad("rms_norm_eps", "must be > 0") }
        if !(ropeTheta > 0) { throw bad("rope_theta", "must be > 0") }
        try ropeScaling.validate(source: source)
        if let b = bosTokenId, b < 0 || b >= vocabSize { throw bad("bos_token_id", "\(b) is not an id in [0, \(vocabSize))") }
        for e in eosTokenIds where e < 0 || e >= vocabSize { throw bad("eos_token_id", "\(e) is not an id in [0, \(vocabSize))") }
        if maxPositionEmbeddings <= 0 { throw bad("max_position_embeddings", "must be > 0") }
        if !tieWordEmbeddings { throw bad("tie_word_embeddings", "must be true (MiniMind ties lm_head to embed_tokens)") }
        if maxPositionEmbeddings > ModelConfig.maxPositionsLimit {
            throw bad("max_position_embeddings", "is \(maxPositionEmbeddings), at most \(ModelConfig.maxPositionsLimit) supported") }
        if useMoe { try validateMoE(source: source) }
        if let n = numLabels, n != 1 {
            throw bad("num_labels", "= \(n) unsupported for LlamaForSequenceClassification (only a scalar reward head, num_labels 1)") }
        guard let n = checkedParameterCount else {
            throw bad("hidden_size", "× intermediate_size × layers × vocab_size overflows Int (hidden \(hiddenSize), intermediate \(intermediateSize), layers \(numHiddenLayers), vocab \(vocabSize))") }
        if n > ModelConfig.maxParameters {
            throw ModelError("\(source): the model would have \(n) parameters (\(n / 1_000_000) M, \(Int(Double(n) * 16 / Double(1 << 30))) GiB for weights, gradients and AdamW state), more than the supported \(ModelConfig.maxParameters)") }
    }

    /// Upper bound on the parameter count a config may ask for (fp32 weights + gradients + AdamW m, v = 16 bytes each).
    public static let maxParameters = 1 << 33
    /// Upper bound on `max_position_embeddings` (RoPE tables and KV caches are sized from it).
    public static let maxPositionsLimit = 1 << 24

    /// Total parameter count (every expert included), computed with overflow checking; nil if it overflows `Int`.
    public var checkedParameterCount: Int? {
        func mul(_ xs: Int...) -> Int? {
            var p = 1
            for x in xs { let (r, o) = p.multipliedReportingOverflow(by: x); if o || x < 0 { return nil }; p = r }
            return p
        }
        func add(_ xs: Int?...) -> Int? {
            var s = 0
            for x in xs { guard let x else { return nil }; let (r, o) = s.addingReportingOverflow(x); if o { return nil }; s = r }
            return s
        }
        let C = hiddenSize, I = intermediateSize
        guard numAttentionHeads > 0 else { return nil }
        guard let qd = mul(numAttentionHeads, headDim), let kvd = mul(numKeyValueHeads, headDim),
              let attn = add(mul(C, qd), mul(2, C, kvd), mul(qd, C), mul(2, C)) else { return nil }
        let experts = useMoe ? add(nRoutedExperts, nSharedExperts) : 1
        guard let e = experts, let mlp = add(mul(e, 3, C, I), useMoe ? mul(nRoutedExperts, C) : 0),
              let layer = add(attn, mlp), let layers = mul(numHiddenLayers, layer) else { return nil }
        return add(mul(vocabSize, C), layers, C, mul(numLabels ?? 0, C))
    }

    /// Throws unless every id of a tokenizer with `tokenizerVocabSize` ids has a row in the embedding
    /// (`tokenizerVocabSize ≤ vocab_size`). Every command that pairs a tokenizer with a model calls this at load time,
    /// before any forward. `source` names the model (directory).
    /// A new model's special ids from its tokenizer (MiniMind's tokenizer: bos 1, eos 2, the defaults): an id < 0 (the
    /// tokenizer has no such token) or outside the vocabulary keeps the default.
    public mutating func adoptSpecialTokens(bos: Int32, eos: Int32) {
        if bos >= 0 && Int(bos) < vocabSize { bosTokenId = Int(bos) }
        if eos >= 0 && Int(eos) < vocabSize { eosTokenIds = [Int(eos)] }
    }

    public func checkTokenizer(vocabSize tokenizerVocabSize: Int, source: String) throws {
        guard tokenizerVocabSize <= vocabSize else {
            throw ModelError("\(source): tokenizer has \(tokenizerVocabSize) ids but the model's vocab_size is \(vocabSize)") }
    }

    /// Reads and validates `DIR/config.json` (see `parse`). Throws `ModelError` naming the file and field on bad input.
    public static func load(directory: String) throws -> ModelConfig {
        let path = (directory as NSString).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: path) else { throw ModelError("\(path): cannot read file") }
        let cfg = try parse(data, source: path)
        try cfg.validate(source: path)
        return cfg
    }

    /// The Hugging Face `config.json` dictionary (LlamaForCausalLM, tied embeddings, silu, fp32): every field that
    /// changes the math, `rope_scaling` (transformers 4.x spelling, which 5.x still reads) when RoPE is scaled.
    /// With `numLabels` set: `LlamaForSequenceClassification` with `num_labels` and `pad_token_id` (0 when unset; the
    /// head reads the last token that is not `pad_token_id`).
    public var huggingFaceDictionary: [String: Any] {
        var d: [String: Any] = [
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": hiddenSize, "intermediate_size": intermediateSize, "num_hidden_layers": numHiddenLayers,
            "num_attention_heads": numAttentionHeads, "num_key_value_heads": numKeyValueHeads, "head_dim": headDim,
            "vocab_size": vocabSize, "rms_norm_eps": Double(rmsNormEps), "rope_theta": ropeTheta,
            "max_position_embeddings": maxPositionEmbeddings, "hidden_act": "silu", "tie_word_embeddings": true,
            "attention_bias": false, "mlp_bias": false, "attention_dropout": 0.0, "torch_dtype": "float32",
        ]
        if let b = bosTokenId { d["bos_token_id"] = b }
        if eosTokenIds.count == 1 { d["eos_token_id"] = eosTokenIds[0] } else if !eosTokenIds.isEmpty { d["eos_token_id"] = eosTokenIds }
        if let p = padTokenId { d["pad_token_id"] = p }
        if let rs = ropeScaling.huggingFaceDictionary { d["rope_scaling"] = rs }
        if let n = numLabels {
            d["architectures"] = ["LlamaForSequenceClassification"]
            d["num_labels"] = n
            d["pad_token_id"] = padTokenId ?? 0
        }
        return d
    }

    /// Writes `DIR/config.json` (LlamaForCausalLM, or LlamaForSequenceClassification with `numLabels`; for MoE,
    /// MiniMindForCausalLM or MiniMindForSequenceClassification) atomically.
    public func write(directory: String) throws {
        let path = (directory as NSString).appendingPathComponent("config.json")
        var dict = huggingFaceDictionary
        if useMoe {
            dict.merge(moeDictionary) { _, new in new }
            // MiniMind's MoE class name, with the head's suffix for a reward model (loaders decide by the suffix).
            if numLabels != nil { dict["architectures"] = ["MiniMindForSequenceClassification"] }
        }
        let data = try JSONSerialization.data(withJSONObject: dict, options: [.prettyPrinted, .sortedKeys])
        try writeAtomically(data, to: path)
    }
}

/// Writes `data` to `path` via a temporary file in the same directory + rename (never a half-written file).
/// - Throws: `ModelError` "PATH: cannot write: REASON" with the system's reason (e.g. "No space left on device");
///   the temporary file is removed.
func writeAtomically(_ data: Data, to path: String) throws {
    let tmp = path + ".tmp-\(getpid())"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw ModelError("\(path): cannot write: \(String(cString: strerror(errno)))") }
    var failure: Int32 = 0
    data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
        var done = 0
        while done < raw.count {
            let n = write(fd, raw.baseAddress! + done, raw.count - done)
            if n < 0 { if errno == EINTR { continue }; failure = errno; return }
            done += n
        }
    }
    if close(fd) != 0 && failure == 0 { failure = errno }
    if failure != 0 {
        unlink(tmp)
        throw ModelError("\(path): cannot write: \(String(cString: strerror(failure)))")
    }
    if rename(tmp, path) != 0 {
        let e = errno
        unlink(tmp)
        throw ModelError("\(path): cannot rename the written file into place: \(String(cString: strerror(e)))")
    }
}
