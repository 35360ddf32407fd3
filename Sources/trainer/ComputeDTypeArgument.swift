// `--dtype bfloat16|float32` (MiniMind's flag and values): the precision of the training products (MixedPrecision.swift).
import ArgumentParser
import Model

enum ComputeDTypeOption {
    /// The help text of `--dtype` on the training commands, `bench` and `debug-step`.
    static let help = "Matrix products in bfloat16 (torch.autocast(bfloat16): bf16 operands, fp32 accumulation; weights, gradients, optimizer, all-reduce and checkpoints fp32) or float32. Default: bfloat16 on a CPU with native bf16 (avx512_bf16 / amx_bf16), else float32. float16 is refused."

    /// Parses `--dtype` (nil: `ComputeDType.platformDefault`).
    /// - Throws: `ValidationError` for float16 (pointing to bfloat16) and any other value.
    static func parse(_ value: String?, option: String = "--dtype") throws -> ComputeDType {
        guard let value else { return .platformDefault }
        if value == "float16" {
            throw ValidationError("\(option) float16 is not supported: fp16 needs loss scaling, which SwiftMind does not do; use \(option) bfloat16 (the same bytes, fp32's range) or \(option) float32")
        }
        guard let d = ComputeDType(rawValue: value) else { throw ValidationError("\(option) must be bfloat16 or float32 (got \(value))") }
        return d
    }

    /// How the products run under `d` on this CPU: the start-of-run line and trainer_state.json's `dtype_engine`.
    static func engine(_ d: ComputeDType) -> String {
        d == .float32 ? "fp32 (OpenBLAS sgemm)" : MiniMindModel.bf16Engine
    }
}
