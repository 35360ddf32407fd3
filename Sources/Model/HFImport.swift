// Import of Hugging Face Llama-architecture directories (config.json + model.safetensors or sharded
// model-0000k-of-0000n.safetensors with model.safetensors.index.json), tied or untied lm_head.
// An untied `lm_head.weight` [V, C] is kept beside the flat parameter buffer and used by `forward` and
// `forwardIncremental` of forward-only models (training refuses untied checkpoints: backward assumes the tied head).
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

    /// Loads a Hugging Face Llama-architecture directory (or a MiniMind one) for inference: `load(directory:
    /// withGradients: false)` — `config.json` read by `ModelConfig.parse` (`model_type` llama/mistral/minimind, silu,
    /// no attention/MLP bias, RoPE default/linear/llama3/yarn, any `head_dim`, MiniMind's MoE), the weights in
    /// `model.safetensors` or shards, an untied `lm_head.weight` kept as `untiedLMHead` (refused unless
    /// `allowUntiedHead`).
    /// - Throws: `ModelError` naming the file and field/tensor.
    public static func load(huggingFaceDirectory dir: String, allowUntiedHead: Bool = true) throws -> MiniMindModel {
        let m = try load(directory: dir, withGradients: false)
        if !allowUntiedHead && m.untiedLMHead != nil {
            throw ModelError("\((dir as NSString).appendingPathComponent("config.json")): an untied lm_head is supported for inference only") }
        return m
    }
}

/// The safetensors files of a model directory: `model.safetensors`, or else the shards that
/// `model.safetensors.index.json`'s `weight_map` names (each tensor must be in the file the map gives).
struct CheckpointFiles {
    /// Tensor name → the file holding it.
    let owner: [String: SafeTensorsFile]

    /// - Throws: `ModelError` when neither file exists (naming a `pytorch_model.bin` that is there, which is not
    ///   read), or the index is malformed or points to a file or tensor that is not there.
    init(directory dir: String) throws {
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
            var files: [String: SafeTensorsFile] = [:]
            for (name, file) in map {
                guard !file.contains("/") else { throw ModelError("\(index): weight_map[\(name)] = \(file) is not a file name") }
                if files[file] == nil { files[file] = try SafeTensorsFile(path: (dir as NSString).appendingPathComponent(file)) }
                guard files[file]!.entries[name] != nil else { throw ModelError("\(index): tensor \(name) is not in \(file)") }
                owner[name] = files[file]!
            }
        } else {
            let bin = ["pytorch_model.bin", "pytorch_model.bin.index.json"].first {
                FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent($0)) }
            throw ModelError("\(dir): neither model.safetensors nor model.safetensors.index.json found" +
                             (bin.map { " (\($0) is there: PyTorch pickles are not read; save the model with safetensors, e.g. transformers' save_pretrained(dir, safe_serialization=True))" } ?? ""))
        }
        self.owner = owner
    }

    func find(_ name: String) -> (file: SafeTensorsFile, entry: SafeTensorsEntry)? {
        guard let f = owner[name], let e = f.entries[name] else { return nil }
        return (f, e)
    }

    /// - Throws: `ModelError` "tensor NAME is missing" naming the file (or the index for shards).
    func entry(_ name: String) throws -> (file: SafeTensorsFile, entry: SafeTensorsEntry) {
        if let r = find(name) { return r }
        let paths = Set(owner.values.map(\.path))
        let where_ = paths.count == 1 ? paths.first! : "the shards of \(paths.count) files"
        throw ModelError("\(where_): tensor \(name) is missing")
    }
}
