// Reading a Hugging Face Llama-family `config.json` (and MiniMind's own): every field that changes the math is read
// (or refused with an error naming it); an unknown field is an error, because it might change the math.
// RoPE scaling follows transformers 5.x `modeling_rope_utils.py` (`_compute_linear_scaling_rope_parameters`,
// `_compute_llama3_parameters`, `_compute_yarn_parameters`), re-derived here.
import Foundation

/// RoPE frequency scaling of `rope_parameters` / `rope_scaling`, as transformers computes it.
public enum RopeScaling: Equatable, Sendable {
    /// `rope_type` "default": θ_i = base^(−2i/d).
    case none
    /// `rope_type` "linear": θ_i / factor (position interpolation).
    case linear(factor: Double)
    /// `rope_type` "llama3" (Llama 3.1): low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    case llama3(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalMaxPositionEmbeddings: Int)
    /// `rope_type` "yarn" (Peng et al. 2023): a ramp between interpolated and extrapolated frequencies over the
    /// correction range of `beta_fast`/`beta_slow`, and cos/sin multiplied by the attention factor.
    case yarn(YaRNParameters)

    /// The YaRN fields as config.json gives them (nil = absent, transformers' default applies).
    public struct YaRNParameters: Equatable, Sendable {
        public var factor: Double
        public var originalMaxPositionEmbeddings: Int
        public var attentionFactor: Double?
        public var betaFast: Double?
        public var betaSlow: Double?
        public var mscale: Double?
        public var mscaleAllDim: Double?
        public var truncate: Bool
        public init(factor: Double, originalMaxPositionEmbeddings: Int, attentionFactor: Double? = nil, betaFast: Double? = nil,
                    betaSlow: Double? = nil, mscale: Double? = nil, mscaleAllDim: Double? = nil, truncate: Bool = true) {
            self.factor = factor; self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings
            self.attentionFactor = attentionFactor; self.betaFast = betaFast; self.betaSlow = betaSlow
            self.mscale = mscale; self.mscaleAllDim = mscaleAllDim; self.truncate = truncate
        }
    }

    /// `rope_type` as transformers names it.
    public var ropeType: String {
        switch self { case .none: return "default"; case .linear: return "linear"; case .llama3: return "llama3"; case .yarn: return "yarn" }
    }

    /// Throws a `ModelError` naming the field of a value the math cannot use.
    func validate(source: String) throws {
        func bad(_ f: String, _ why: String) -> ModelError { ModelError("\(source): field rope_parameters.\(f) \(why)") }
        switch self {
        case .none: return
        case let .linear(f): if !(f > 0) { throw bad("factor", "must be > 0 (got \(f))") }
        case let .llama3(f, lo, hi, orig):
            if !(f > 0) { throw bad("factor", "must be > 0 (got \(f))") }
            if !(lo > 0) { throw bad("low_freq_factor", "must be > 0 (got \(lo))") }
            if !(hi > lo) { throw bad("high_freq_factor", "must be > low_freq_factor \(lo) (got \(hi))") }
            if orig <= 0 { throw bad("original_max_position_embeddings", "must be > 0 (got \(orig))") }
        case let .yarn(y):
            if !(y.factor > 0) { throw bad("factor", "must be > 0 (got \(y.factor))") }
            if y.originalMaxPositionEmbeddings <= 0 { throw bad("original_max_position_embeddings", "must be > 0 (got \(y.originalMaxPositionEmbeddings))") }
            if let a = y.attentionFactor, !(a > 0) { throw bad("attention_factor", "must be > 0 (got \(a))") }
        }
    }

    /// The `rope_scaling` entry of a written config.json (nil for plain RoPE).
    var huggingFaceDictionary: [String: Any]? {
        switch self {
        case .none: return nil
        case let .linear(f): return ["rope_type": "linear", "factor": f]
        case let .llama3(f, lo, hi, orig):
            return ["rope_type": "llama3", "factor": f, "low_freq_factor": lo, "high_freq_factor": hi, "original_max_position_embeddings": orig]
        case let .yarn(y):
            var d: [String: Any] = ["rope_type": "yarn", "factor": y.factor, "original_max_position_embeddings": y.originalMaxPositionEmbeddings,
                                    "truncate": y.truncate]
            if let v = y.attentionFactor { d["attention_factor"] = v }
            if let v = y.betaFast { d["beta_fast"] = v }
            if let v = y.betaSlow { d["beta_slow"] = v }
            if let v = y.mscale { d["mscale"] = v }
            if let v = y.mscaleAllDim { d["mscale_all_dim"] = v }
            return d
        }
    }
}

extension ModelConfig {
    /// RoPE inverse frequencies `[head_dim / 2]` (radians per position) and the factor cos/sin are multiplied by
    /// (YaRN's attention factor; 1 otherwise). Plain RoPE: θ_i = base^(−2i/d) rounded to fp32, as MiniMind; the scaled
    /// types start from the same θ_i and follow transformers' formulas in double precision.
    public var ropeInverseFrequencies: (inverseFrequencies: [Float], attentionScaling: Float) {
        let d = headDim, half = d / 2
        let base = (0..<half).map { 1.0 / pow(ropeTheta, Double(2 * $0) / Double(d)) }
        switch ropeScaling {
        case .none:
            return (base.map { Float($0) }, 1)
        case let .linear(factor):
            return (base.map { Float($0 / factor) }, 1)
        case let .llama3(factor, lowFreqFactor, highFreqFactor, orig):
            let lowWavelen = Double(orig) / lowFreqFactor, highWavelen = Double(orig) / highFreqFactor
            let inv = base.map { f -> Float in
                let wavelen = 2 * Double.pi / f
                if wavelen < highWavelen { return Float(f) }               // high frequencies: kept
                if wavelen > lowWavelen { return Float(f / factor) }       // low frequencies: interpolated
                let smooth = (Double(orig) / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor)
                return Float((1 - smooth) * f / factor + smooth * f)
            }
            return (inv, 1)
        case let .yarn(y):
            func mscaleOf(_ scale: Double, _ m: Double) -> Double { scale <= 1 ? 1 : 0.1 * m * log(scale) + 1 }
            let attention: Double
            if let a = y.attentionFactor { attention = a }
            else if let m = y.mscale, let mAll = y.mscaleAllDim, m != 0, mAll != 0 {
                attention = mscaleOf(y.factor, m) / mscaleOf(y.factor, mAll)
            } else { attention = mscaleOf(y.factor, 1) }
            let betaFast = (y.betaFast ?? 0) != 0 ? y.betaFast! : 32, betaSlow = (y.betaSlow ?? 0) != 0 ? y.betaSlow! : 1
            // Dimension whose wavelength makes `rotations` turns over the original context.
            func correctionDim(_ rotations: Double) -> Double {
                Double(d) * log(Double(y.originalMaxPositionEmbeddings) / (rotations * 2 * Double.pi)) / (2 * log(ropeTheta))
            }
            var low = correctionDim(betaFast), high = correctionDim(betaSlow)
            if y.truncate { low = low.rounded(.down); high = high.rounded(.up) }
            low = max(low, 0); high = min(high, Double(d - 1))
            if low == high { high += 0.001 }
            let inv = base.enumerated().map { i, f -> Float in
                let ramp = min(max((Double(i) - low) / (high - low), 0), 1)
                let extrapolation = 1 - ramp
                return Float(f / y.factor * (1 - extrapolation) + f * extrapolation)
            }
            return (inv, Float(attention))
        }
    }

    /// Parses a `config.json` (Hugging Face Llama / Mistral, or MiniMind's `MiniMindConfig`). Every field that changes
    /// the math is read: the shapes, `head_dim` (may differ from hidden_size / num_attention_heads), `rms_norm_eps`,
    /// `rope_theta` at the top level or in `rope_parameters` / `rope_scaling` with `rope_type` default, linear, llama3
    /// or yarn, `max_position_embeddings`, `tie_word_embeddings`, bos/eos/pad ids (an int or a list), MiniMind's MoE
    /// fields. Refused with an error naming the field: `hidden_act` other than silu, `attention_bias` / `mlp_bias`
    /// true, dropout > 0, `partial_rotary_factor` ≠ 1, RoPE types dynamic/longrope/others, a Mistral sliding window
    /// shorter than the context, quantization, other MoE layouts, and any field this reader does not know (it might
    /// change the math). Missing fields take the defaults of the model type's config class: transformers'
    /// `LlamaConfig` / `MistralConfig` for llama / mistral (whose shape fields must be present), MiniMind's otherwise.
    /// Does not call `validate`.
    /// - Throws: `ModelError` naming `source` and the field.
    public static func parse(_ data: Data, source: String) throws -> ModelConfig {
        guard let raw = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw ModelError("\(source): not a JSON object") }
        let r = ConfigReader(raw: raw, source: source)
        let modelType = try r.string("model_type") ?? "minimind"
        guard ["llama", "mistral", "minimind"].contains(modelType) else {
            throw ModelError("\(source): field model_type \"\(modelType)\" is not a Llama-architecture model (llama, mistral or minimind)") }
        let hf = modelType != "minimind"
        for key in raw.keys.sorted() where !ConfigReader.knownKeys.contains(key) {
            throw ModelError("\(source): field \(key) is not known to SwiftMind and might change the model's math; remove it if it does not")
        }
        var c = ModelConfig()
        let d = ModelConfig()
        func shape(_ key: String, _ fallback: Int) throws -> Int {
            if let v = try r.int(key) { return v }
            if hf { throw ModelError("\(source): field \(key) is missing") }
            return fallback
        }
        c.hiddenSize = try shape("hidden_size", d.hiddenSize)
        c.numHiddenLayers = try shape("num_hidden_layers", d.numHiddenLayers)
        c.numAttentionHeads = try shape("num_attention_heads", d.numAttentionHeads)
        c.vocabSize = try shape("vocab_size", d.vocabSize)
        c.intermediateSize = try shape("intermediate_size", ModelConfig.defaultIntermediateSize(hiddenSize: c.hiddenSize))
        c.numKeyValueHeads = try r.int("num_key_value_heads") ?? c.numAttentionHeads
        if let hd = try r.int("head_dim"), hd != c.hiddenSize / max(c.numAttentionHeads, 1) { c.explicitHeadDim = hd }
        c.rmsNormEps = Float(try r.double("rms_norm_eps") ?? (hf ? 1e-6 : Double(d.rmsNormEps)))
        c.maxPositionEmbeddings = try r.int("max_position_embeddings") ?? (modelType == "llama" ? 2048 : modelType == "mistral" ? 4096 * 32 : d.maxPositionEmbeddings)
        c.tieWordEmbeddings = try r.bool("tie_word_embeddings") ?? !hf
        if let act = try r.string("hidden_act"), act != "silu" {
            throw ModelError("\(source): field hidden_act \"\(act)\" unsupported (only silu)") }
        for f in ["attention_bias", "mlp_bias"] where try r.bool(f) == true {
            throw ModelError("\(source): field \(f) = true unsupported (the projections of this model have no bias)") }
        for f in ["attention_dropout", "dropout"] {
            if let p = try r.double(f), p != 0 { throw ModelError("\(source): field \(f) = \(p) unsupported (no dropout is implemented)") }
        }
        if try r.bool("rope_interleaved") == true {
            throw ModelError("\(source): field rope_interleaved = true unsupported (RoPE rotates the two halves of a head, as transformers' Llama)") }
        if try r.bool("inference_rope_scaling") == true {
            throw ModelError("\(source): field inference_rope_scaling = true unsupported (MiniMind's own YaRN variant is not implemented)") }
        if let w = try r.int("sliding_window"), w < c.maxPositionEmbeddings {
            throw ModelError("\(source): field sliding_window = \(w) unsupported (sliding-window attention is not implemented; only a window ≥ max_position_embeddings)") }
        else if modelType == "mistral" && raw["sliding_window"] == nil {
            throw ModelError("\(source): field sliding_window is missing (MistralConfig's default 4096 window is not implemented)") }
        if let q = raw["quantization_config"], !(q is NSNull) {
            throw ModelError("\(source): field quantization_config unsupported (only unquantized F32/F16/BF16 weights)") }
        let experts = try r.int("num_experts") ?? 0, localExperts = try r.int("num_local_experts") ?? 0
        if experts > 0 || localExperts > 0 {
            throw ModelError("\(source): this MoE layout (num_experts / num_local_experts) is not supported (only MiniMind's use_moe layout)") }
        try parseRoPE(r, into: &c, defaultTheta: hf ? 10_000 : d.ropeTheta)
        // LlamaConfig, MistralConfig and MiniMindConfig all default to bos 1, eos 2, no pad; null means none.
        if raw.keys.contains("bos_token_id") { c.bosTokenId = try r.ids("bos_token_id", single: true).first }
        if raw.keys.contains("eos_token_id") { c.eosTokenIds = try r.ids("eos_token_id", single: false) }
        c.padTokenId = try r.ids("pad_token_id", single: true).first
        // MiniMind's MoE fields.
        c.useMoe = try r.bool("use_moe") ?? d.useMoe
        c.numExpertsPerTok = try r.int("num_experts_per_tok") ?? d.numExpertsPerTok
        c.nRoutedExperts = try r.int("n_routed_experts") ?? d.nRoutedExperts
        c.nSharedExperts = try r.int("n_shared_experts") ?? d.nSharedExperts
        c.scoringFunc = try r.string("scoring_func") ?? d.scoringFunc
        c.auxLossAlpha = Float(try r.double("aux_loss_alpha") ?? Double(d.auxLossAlpha))
        c.seqAux = try r.bool("seq_aux") ?? d.seqAux
        c.normTopkProb = try r.bool("norm_topk_prob") ?? d.normTopkProb
        // Sequence classification (a reward model): `architectures` decides, as for AutoModel; `num_labels` (else the
        // size of `id2label`, else PretrainedConfig's default 2) sizes the head, and `validate` accepts only 1. For a
        // causal LM both are metadata.
        if let archs = raw["architectures"] as? [Any], archs.contains(where: { ($0 as? String)?.hasSuffix("ForSequenceClassification") == true }) {
            c.numLabels = try r.int("num_labels") ?? (raw["id2label"] as? [String: Any])?.count ?? 2
        }
        return c
    }

    /// `rope_scaling` (transformers 4.x) or `rope_parameters` (5.x; `rope_scaling` wins when both are set, as in
    /// transformers), `rope_theta` inside it or at the top level, `partial_rotary_factor` (must be 1).
    private static func parseRoPE(_ r: ConfigReader, into c: inout ModelConfig, defaultTheta: Double) throws {
        let source = r.source
        var field = "rope_parameters"
        var dict: [String: Any]? = nil
        for key in ["rope_scaling", "rope_parameters"] {
            guard let v = r.raw[key], !(v is NSNull) else { continue }
            guard let d = v as? [String: Any] else { throw ModelError("\(source): field \(key) must be an object") }
            if d.isEmpty { continue }
            dict = d; field = key; break
        }
        let p = ConfigReader(raw: dict ?? [:], source: source, prefix: field + ".")
        for (k, v) in p.raw where v is [String: Any] {
            throw ModelError("\(source): field \(field).\(k) unsupported (per-layer-type RoPE parameters)") }
        c.ropeTheta = try p.double("rope_theta") ?? r.double("rope_theta") ?? defaultTheta
        if let prf = try p.double("partial_rotary_factor") ?? r.double("partial_rotary_factor"), prf != 1 {
            throw ModelError("\(source): field partial_rotary_factor = \(prf) unsupported (RoPE on the whole head only)") }
        let type = try p.string("rope_type") ?? p.string("type") ?? "default"
        let common: Set<String> = ["rope_type", "type", "rope_theta", "partial_rotary_factor"]
        func allow(_ keys: Set<String>) throws {
            for k in p.raw.keys.sorted() where !common.contains(k) && !keys.contains(k) {
                throw ModelError("\(source): field \(field).\(k) is not a parameter of rope_type \"\(type)\" known to SwiftMind") }
        }
        func required(_ key: String) throws -> Double {
            guard let v = try p.double(key) else { throw ModelError("\(source): field \(field).\(key) is missing (rope_type \"\(type)\")") }
            return v
        }
        // transformers: a top-level original_max_position_embeddings wins, else the dict's, else max_position_embeddings.
        func originalMax() throws -> Int {
            try r.int("original_max_position_embeddings") ?? p.int("original_max_position_embeddings") ?? c.maxPositionEmbeddings
        }
        switch type {
        case "default":
            try allow([])
            c.ropeScaling = .none
        case "linear":
            try allow(["factor"])
            c.ropeScaling = .linear(factor: try required("factor"))
        case "llama3":
            try allow(["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"])
            c.ropeScaling = .llama3(factor: try required("factor"), lowFreqFactor: try required("low_freq_factor"),
                                    highFreqFactor: try required("high_freq_factor"), originalMaxPositionEmbeddings: try originalMax())
        case "yarn":
            try allow(["factor", "original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow", "mscale",
                       "mscale_all_dim", "truncate"])
            let orig = try originalMax()
            let factor = try p.double("factor") ?? Double(c.maxPositionEmbeddings) / Double(orig)
            c.ropeScaling = .yarn(.init(factor: factor, originalMaxPositionEmbeddings: orig, attentionFactor: try p.double("attention_factor"),
                                        betaFast: try p.double("beta_fast"), betaSlow: try p.double("beta_slow"), mscale: try p.double("mscale"),
                                        mscaleAllDim: try p.double("mscale_all_dim"), truncate: try p.bool("truncate") ?? true))
        case "dynamic":
            throw ModelError("\(source): field \(field).rope_type \"dynamic\" unsupported (its frequencies change with the current sequence length)")
        default:
            throw ModelError("\(source): field \(field).rope_type \"\(type)\" unsupported (default, linear, llama3 and yarn are implemented)")
        }
    }
}

/// Typed access to a config.json object; null counts as absent; a wrong type is an error naming the field.
struct ConfigReader {
    let raw: [String: Any]
    let source: String
    var prefix = ""

    /// Fields read (or refused by name) by `ModelConfig.parse`, and metadata that never changes the math
    /// (`PretrainedConfig`'s bookkeeping and generation defaults, ids of tokens the forward never sees).
    static let knownKeys: Set<String> = [
        // math
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
        "vocab_size", "rms_norm_eps", "rope_theta", "rope_parameters", "rope_scaling", "partial_rotary_factor",
        "original_max_position_embeddings", "max_position_embeddings", "hidden_act", "tie_word_embeddings",
        "attention_bias", "mlp_bias", "attention_dropout", "dropout", "sliding_window", "quantization_config",
        "use_moe", "num_experts_per_tok", "n_routed_experts", "n_shared_experts", "scoring_func", "aux_loss_alpha",
        "seq_aux", "norm_topk_prob", "num_experts", "num_local_experts", "inference_rope_scaling", "rope_interleaved",
        "bos_token_id", "eos_token_id", "pad_token_id", "model_type", "num_labels",
        // metadata
        "architectures", "_name_or_path", "_model_name_or_path", "transformers_version", "torch_dtype", "dtype",
        "initializer_range", "use_cache", "pretraining_tp", "flash_attn", "unk_token_id", "sep_token_id",
        "decoder_start_token_id", "output_attentions", "output_hidden_states", "return_dict", "is_encoder_decoder",
        "is_decoder", "add_cross_attention", "tie_encoder_decoder", "chunk_size_feed_forward", "torchscript",
        "id2label", "label2id", "problem_type", "tokenizer_class", "prefix", "task_specific_params", "finetuning_task",
        "cross_attention_hidden_size", "_attn_implementation_autoset", "max_length", "min_length", "do_sample",
        "early_stopping", "num_beams", "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p",
        "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size",
        "bad_words_ids", "num_return_sequences", "output_scores", "return_dict_in_generate", "forced_bos_token_id",
        "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
        "begin_suppress_tokens", "use_bfloat16", "tf_legacy_loss", "pruned_heads", "forced_decoder_ids", "_commit_hash",
        "_attn_implementation", "is_llama_config", "transformers.js_config",
    ]

    private func value(_ key: String) -> Any? {
        guard let v = raw[key], !(v is NSNull) else { return nil }
        return v
    }
    private func fail(_ key: String, _ what: String) -> ModelError {
        ModelError("\(source): field \(prefix)\(key) must be \(what) (got \(String(describing: raw[key]!)))")
    }
    /// JSON true/false: Foundation bridges them to an NSNumber subclass, told apart by its class.
    private static func isBool(_ v: Any) -> Bool {
        guard let n = v as? NSNumber else { return false }
        return type(of: n) == booleanClass
    }
    private static let booleanClass: NSNumber.Type = type(of: NSNumber(value: true))

    func int(_ key: String) throws -> Int? {
        guard let v = value(key) else { return nil }
        guard let n = v as? NSNumber, !ConfigReader.isBool(v), let i = Int(exactly: n.doubleValue) else { throw fail(key, "an integer") }
        return i
    }
    func double(_ key: String) throws -> Double? {
        guard let v = value(key) else { return nil }
        guard let n = v as? NSNumber, !ConfigReader.isBool(v), n.doubleValue.isFinite else { throw fail(key, "a number") }
        return n.doubleValue
    }
    func bool(_ key: String) throws -> Bool? {
        guard let v = value(key) else { return nil }
        guard ConfigReader.isBool(v), let b = v as? Bool else { throw fail(key, "true or false") }
        return b
    }
    func string(_ key: String) throws -> String? {
        guard let v = value(key) else { return nil }
        guard let s = v as? String else { throw fail(key, "a string") }
        return s
    }
    /// An id or (unless `single`) a list of ids; [] when absent.
    func ids(_ key: String, single: Bool) throws -> [Int] {
        guard let v = value(key) else { return [] }
        if let list = v as? [Any] {
            if single && list.count != 1 { throw fail(key, "one token id") }
            return try list.map { e in
                guard let n = e as? NSNumber, !ConfigReader.isBool(e), let i = Int(exactly: n.doubleValue) else { throw fail(key, "an id or a list of ids") }
                return i
            }
        }
        guard let i = try int(key) else { return [] }
        return [i]
    }
}
