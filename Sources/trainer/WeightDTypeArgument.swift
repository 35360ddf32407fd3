// `--weight-dtype f32|bf16|q8_0`: the weight type inference runs on (generate, chat, serve, bench-decode, eval).
import ArgumentParser
import Foundation
import Model

struct WeightDTypeArgument: ParsableArguments {
    @Option(name: .customLong("weight-dtype"),
            help: "Inference weights: f32 (the checkpoint's), bf16 (rounded to nearest even) or q8_0 (GGUF Q8_0: int8 per 32 weights with an fp16 scale), converted on load. Activations stay f32, except that q8_0's decode kernels round each activation row to int16 per 32 values (about 1/256 of the weights' rounding: weight-only accuracy at integer-kernel speed); SWIFTMIND_Q8_ACTIVATIONS=int8 gives GGML's int8 scheme, =f32 dequantized weights × fp32 (docs/LOW_PRECISION.md).")
    var weightDType: String = "f32"

    var dtype: WeightDType { WeightDType(rawValue: weightDType)! }

    func validate() throws {
        if WeightDType(rawValue: weightDType) == nil {
            throw ValidationError("--weight-dtype must be f32, bf16 or q8_0 (got \(weightDType))")
        }
    }

    /// Converts `m`'s weight matrices (after any LoRA merge); says on stderr when some stay fp32.
    func apply(to m: MiniMindModel) {
        m.setWeightDType(dtype)
        if let w = m.inferenceWeights, w.matrixCount < w.offeredCount {
            FileHandle.standardError.write(Data("note: --weight-dtype \(weightDType) converted \(w.matrixCount) of \(w.offeredCount) weight matrices; the others stay f32 (their rows are not a multiple of 32 values)\n".utf8))
        }
    }
}
