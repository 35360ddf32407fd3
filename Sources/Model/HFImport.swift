// Import of Hugging Face Llama-architecture directories (config.json + model.safetensors or sharded
// model-0000k-of-0000n.safetensors with model.safetensors.index.json), tied or untied lm_head.
// An untied `lm_head.weight` [V, C] is kept beside the flat parameter buffer and used by `forwardIncremental`
// (inference only: `forward`/`backward` always use the tied head, so training refuses untied checkpoints).
import Foundation

/// Untied output heads of loaded models, keyed by model identity (the owner is held weakly, so a freed model's
/// entry can never be picked up by a new model at the same address).
final class UntiedHeadRegistry: @unchecked Sendable {
    static let shared = UntiedHeadRegistry()
    private final class Entry {
        weak var owner: MiniMindModel?
        let weights: UnsafeMutableBufferPointer<Float>
        init(owner: MiniMindModel, weights: UnsafeMutableBufferPointer<Float>) { self.owner = owner; self.weights = weights }
        deinit { weights.deallocate() }
    }
    private var entries: [ObjectIdentifier: Entry] = [:]
    private let lock = NSLock()

    func set(_ m: MiniMindModel, _ w: UnsafeMutableBufferPointer<Float>) {
        lock.lock(); defer { lock.unlock() }
        entries = entries.filter { $0.value.owner != nil }
        entries[ObjectIdentifier(m)] = Entry(owner: m, weights: w)
    }
    func get(_ m: MiniMindModel) -> UnsafeMutableBufferPointer<Float>? {
        lock.lock(); defer { lock.unlock() }
        guard let e = entries[ObjectIdentifier(m)], e.owner === m else { return nil }
        return e.weights
    }
}

extension MiniMindModel {
    /// The separate `lm_head.weight` `[V, C]` of an untied Hugging Face checkpoint; nil when tied to `embed_tokens`.
    public var untiedLMHead: UnsafeMutableBufferPointer<Float>? { UntiedHeadRegistry.shared.get(self) }

    /// Pointer to the output projection `[V, C]` (the untied head, else `embed_tokens`).
    var outputHeadPointer: UnsafeMutablePointer<Float> { untiedLMHead?.baseAddress ?? (paramPtr + embedOffset) }

    /// Loads a Hugging Face Llama-architecture directory: `config.json` (read by `ModelConfig.parse`: `model_type`
    /// llama/mistral/minimind, silu, no attention/MLP bias, RoPE default/linear/llama3/yarn, any `head_dim`) and the
    /// weights in `model.safetensors` or shards listed by `model.safetensors.index.json` (F32/F16/BF16 → fp32).
    /// Tensor names are HF Llama's; `rotary_emb.inv_freq` buffers are ignored. With `tie_word_embeddings: false`
    /// the file's `lm_head.weight` is kept as `untiedLMHead` (only when `allowUntiedHead`, i.e. for inference). A MiniMind
    /// MoE directory (`use_moe: true`) is loaded with `load(directory:)`.
    /// - Throws: `ModelError` naming the file and field/tensor.
    public static func load(huggingFaceDirectory dir: String, allowUntiedHead: Bool = true) throws -> MiniMindModel {
        let cfgPath = (dir as NSString).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: cfgPath) else { throw ModelError("\(cfgPath): cannot read file") }
        var cfg = try ModelConfig.parse(data, source: cfgPath)
        // MiniMind's own MoE layout (use_moe, mlp.gate / mlp.experts.{e} / mlp.shared_experts.{s}) loads natively;
        // other MoE layouts (e.g. Mixtral's num_local_experts) are refused.
        if cfg.useMoe { return try MiniMindModel.load(directory: dir) }
        let tied = cfg.tieWordEmbeddings
        if !tied && !allowUntiedHead {
            throw ModelError("\(cfgPath): field tie_word_embeddings = false: an untied lm_head is supported for inference only") }
        cfg.tieWordEmbeddings = true
        try cfg.validate(source: cfgPath)

        // Weight files: name → file.
        var files: [String: SafeTensorsFile] = [:]
        var owner: [String: SafeTensorsFile] = [:]
        let single = (dir as NSString).appendingPathComponent("model.safetensors")
        let index = (dir as NSString).appendingPathComponent("model.safetensors.index.json")
        if FileManager.default.fileExists(atPath: single) {
            let f = try SafeTensorsFile(path: single)
            for n in f.entries.keys { owner[n] = f }
        } else if let idata = FileManager.default.contents(atPath: index) {
            guard let obj = (try? JSONSerialization.jsonObject(with: idata)) as? [String: Any],
                  let map = obj["weight_map"] as? [String: String] else {
                throw ModelError("\(index): field weight_map missing or not an object of strings") }
            for (name, file) in map {
                guard !file.contains("/") else { throw ModelError("\(index): weight_map[\(name)] = \(file) is not a file name") }
                if files[file] == nil { files[file] = try SafeTensorsFile(path: (dir as NSString).appendingPathComponent(file)) }
                guard files[file]!.entries[name] != nil else { throw ModelError("\(index): tensor \(name) is not in \(file)") }
                owner[name] = files[file]!
            }
        } else {
            throw ModelError("\(dir): neither model.safetensors nor model.safetensors.index.json found") }

        let m = MiniMindModel(layoutFor: cfg)
        for p in m.parameters {
            guard let f = owner[p.name] else { throw ModelError("\(dir): tensor \(p.name) is missing") }
            let e = try f.entry(p.name)
            guard e.shape == p.shape else { throw ModelError("\(f.path): tensor \(p.name) has shape \(e.shape), expected \(p.shape)") }
            try f.readFloats(p.name, into: UnsafeMutableBufferPointer(start: m.paramPtr + p.offset, count: p.count))
        }
        var known = Set(m.parameters.map(\.name))
        if !tied {
            guard let f = owner["lm_head.weight"] else {
                throw ModelError("\(dir): tensor lm_head.weight is missing (config says tie_word_embeddings = false)") }
            let e = try f.entry("lm_head.weight")
            let shape = [cfg.vocabSize, cfg.hiddenSize]
            guard e.shape == shape else { throw ModelError("\(f.path): tensor lm_head.weight has shape \(e.shape), expected \(shape)") }
            let w = UnsafeMutableBufferPointer<Float>.allocate(capacity: e.count)
            do { try f.readFloats("lm_head.weight", into: w) } catch { w.deallocate(); throw error }
            UntiedHeadRegistry.shared.set(m, w)
        }
        known.insert("lm_head.weight")
        for (n, f) in owner where !known.contains(n) && !n.hasSuffix("rotary_emb.inv_freq") {
            throw ModelError("\(f.path): unexpected tensor \(n) for this config")
        }
        return m
    }
}
