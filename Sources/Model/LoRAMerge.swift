import Foundation

/// One LoRA adapter folded into a model's weights, as listed in the model directory's `merges.json`.
/// `sha256` (hex of the adapter file's bytes) identifies the adapter whatever its file name.
public struct LoRAMergeEntry: Equatable, Sendable {
    public var sha256: String
    /// The adapter path as given when it was merged (for people; matching uses `sha256`).
    public var file: String
    public var rank: Int
    /// Number of adapted Linear modules.
    public var modules: Int
    public init(sha256: String, file: String, rank: Int, modules: Int) {
        self.sha256 = sha256; self.file = file; self.rank = rank; self.modules = modules
    }
}

/// The merge record of a model directory: `DIR/merges.json`, a SwiftMind file beside `config.json` that Hugging Face
/// loaders never read: `{"format": "swiftmind-lora-merges", "version": 1, "merges": [{"adapter_sha256", "adapter_file",
/// "rank", "modules"}, …]}`, oldest merge first. A directory without the file has had no adapter merged.
public enum LoRAMergeRecord {
    public static let fileName = "merges.json"
    static let format = "swiftmind-lora-merges"

    /// The adapters merged into the model of `directory` ([] when it has no `merges.json`).
    /// - Throws: `ModelError` naming the file when it is unreadable or malformed.
    public static func read(directory: String) throws -> [LoRAMergeEntry] {
        let path = (directory as NSString).appendingPathComponent(fileName)
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        func bad(_ why: String) -> ModelError { ModelError("\(path): \(why)") }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch { throw bad("cannot read: \(error.localizedDescription)") }
        guard let obj = try? JSONSerialization.jsonObject(with: data), let d = obj as? [String: Any] else {
            throw bad("not a JSON object") }
        guard d["format"] as? String == format else { throw bad("\"format\" must be \"\(format)\"") }
        guard let list = d["merges"] as? [Any] else { throw bad("\"merges\" must be an array") }
        return try list.enumerated().map { i, item in
            guard let e = item as? [String: Any], let sha = e["adapter_sha256"] as? String, sha.count == 64,
                  sha.allSatisfy({ $0.isHexDigit }), let file = e["adapter_file"] as? String,
                  let rank = e["rank"] as? Int, let modules = e["modules"] as? Int else {
                throw bad("merges[\(i)] needs adapter_sha256 (64 hex digits), adapter_file, rank and modules")
            }
            return LoRAMergeEntry(sha256: sha.lowercased(), file: file, rank: rank, modules: modules)
        }
    }

    /// Writes `DIR/merges.json` atomically (temporary name + rename).
    public static func write(_ entries: [LoRAMergeEntry], directory: String) throws {
        let obj: [String: Any] = ["format": format, "version": 1, "merges": entries.map {
            ["adapter_sha256": $0.sha256, "adapter_file": $0.file, "rank": $0.rank, "modules": $0.modules] as [String: Any]
        }]
        let data = try JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        try data.write(to: URL(fileURLWithPath: (directory as NSString).appendingPathComponent(fileName)), options: .atomic)
    }

    /// Refuses the adapter file `path` when the model directory `directory` already has it merged (its `merges.json`
    /// lists the file's sha256), so B·A is never added twice: every command's `--lora`, `lora merge`, and
    /// `debug-step --objective lora --lora` (training an adapter on top of a model that holds it) go through here.
    /// - Returns: the sha256 (hex) of the adapter file.
    /// - Throws: `ModelError` when the adapter is already merged, or a file is unreadable or malformed.
    @discardableResult
    public static func refuseMerged(adapter path: String, directory: String?) throws -> String {
        let sha = try SHA256Digest.hex(ofFile: path)
        if let dir = directory {
            try refuseRepeat(sha256: sha, adapter: path, entries: try read(directory: dir), directory: dir)
        }
        return sha
    }

    /// Throws when the adapter whose file hashes to `sha256` is already listed in `entries` of `directory`.
    public static func refuseRepeat(sha256: String, adapter path: String, entries: [LoRAMergeEntry], directory: String) throws {
        if let e = entries.first(where: { $0.sha256 == sha256 }) {
            throw ModelError("the LoRA adapter \(path) (sha256 \(sha256)) is already merged into \(directory) (listed in \(fileName) as \(e.file)); applying it again would add B·A twice. Use the base model with this adapter, or the merged model without it")
        }
    }
}

extension MiniMindModel {
    /// Loads a LoRA adapter file (`<module>.lora.A.weight` `[r, in]`, `<module>.lora.B.weight` `[out, r]`, as written by
    /// `trainer lora`) and merges it into the weights: W ← W + B·A, so inference computes W x + B(A x) with no adapter
    /// cost (MiniMind `apply_lora` forward, no scaling). Used by `chat`, `serve`, `eval`, `export --lora` and
    /// `lora merge`. `modelDirectory` is the directory this model was loaded from: an adapter its `merges.json` already
    /// lists is refused before anything is changed. Returns the entry to record for this merge.
    /// - Throws: `ModelError` when the file is unreadable, holds no adapter, its shapes do not fit this model, or it is
    ///   already merged into `modelDirectory`.
    @discardableResult
    public func mergeLoRA(path: String, modelDirectory: String?) throws -> LoRAMergeEntry {
        let sha = try LoRAMergeRecord.refuseMerged(adapter: path, directory: modelDirectory)
        let adapters = try LoRAAdapters.read(path: path, config: config)
        try adapters.merge(into: self)
        return LoRAMergeEntry(sha256: sha, file: path, rank: adapters.rank, modules: adapters.targets.count)
    }
}

extension LoRAAdapters {
    /// Reads an adapter file for a model of `config`: the rank from its first `<module>.lora.A.weight` (`[r, in]`),
    /// every `<module>.lora.A.weight` / `.B.weight` (`[out, r]`) of this model's targets. A file with tensors named
    /// `lora.…` (a golden step file, its adapter beside its batch and gradients) is read with that prefix and its other
    /// tensors ignored; otherwise a tensor that is not part of the adapter is an error.
    /// - Throws: `ModelError` naming the file when it holds no adapter, a tensor is missing or its shape does not fit.
    public static func read(path: String, config: ModelConfig) throws -> LoRAAdapters {
        let a = try LoRAAdapters(config: config, rank: try rank(inFile: path))
        let names = try SafeTensorsFile(path: path).entries.keys
        try a.load(path: path, prefix: names.contains { $0.hasPrefix("lora.") } ? "lora." : "")
        return a
    }
}
