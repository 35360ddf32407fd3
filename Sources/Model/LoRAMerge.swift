import Foundation

extension MiniMindModel {
    /// Loads a LoRA adapter file (`<module>.lora.A.weight` `[r, in]`, `<module>.lora.B.weight` `[out, r]`, as written by
    /// `trainer lora`) and merges it into the weights: W ← W + B·A, so inference computes W x + B(A x) with no adapter
    /// cost (MiniMind `apply_lora` forward, no scaling). Used by `chat`, `serve` and `export --lora`.
    /// - Throws: `ModelError` when the file is unreadable, holds no adapter, or its shapes do not fit this model.
    public func mergeLoRA(path: String) throws {
        let rank = try LoRAAdapters.rank(inFile: path)
        let adapters = try LoRAAdapters(config: config, rank: rank)
        try adapters.load(path: path)
        try adapters.merge(into: self)
    }
}
