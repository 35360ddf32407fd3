// bf16 mixed precision for training (`--dtype bfloat16`): the semantics of PyTorch's `torch.autocast(bfloat16)` as
// MiniMind trains under it. fp32 master weights, gradients, AdamW state and all-reduce; every matrix product of the
// decoder (q|k|v, o, gate|up, down, the tied lm_head, forward and both backward products, and the two attention
// products) takes operands rounded to bf16 (round to nearest even) and accumulates in fp32; RMSNorm, RoPE, softmax,
// SwiGLU's nonlinearity and the loss stay fp32.
// Engine here: the *converted* path. Operands are rounded to bf16 and kept in fp32 containers (low 16 bits zero), then
// OpenBLAS sgemm multiplies them: the products of a bf16 GEMM with fp32 accumulation, up to summation order.
import Foundation
import CQuant

/// Precision of the matrix products in training (MiniMind's `--dtype`).
public enum ComputeDType: String, Sendable, CaseIterable, Codable {
    /// fp32 operands (OpenBLAS sgemm).
    case float32
    /// bf16 operands, fp32 accumulation (torch.autocast(bfloat16)).
    case bfloat16

    /// The default of `--dtype`: `bfloat16` on a CPU with native bf16 instructions, else `float32`.
    public static var platformDefault: ComputeDType { CPUFeatures.hasNativeBF16 ? .bfloat16 : .float32 }
}

/// What the CPU offers for bf16 products, from /proc/cpuinfo's flags.
public enum CPUFeatures {
    /// The flags of the first processor in /proc/cpuinfo (empty when it cannot be read, e.g. not Linux).
    public static let flags: Set<String> = {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return [] }
        for line in info.split(separator: "\n") where line.hasPrefix("flags") {
            if let colon = line.firstIndex(of: ":") { return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init)) }
        }
        return []
    }()
    /// True when the CPU has bf16 dot-product instructions (`avx512_bf16`) or AMX tiles for bf16 (`amx_bf16`).
    public static var hasNativeBF16: Bool { flags.contains("avx512_bf16") || flags.contains("amx_bf16") }
}

/// Rounds `count` floats at `p` to bf16 in place (round to nearest even, NaN stays NaN; CQuant's conversion, AVX2
/// when the CPU has it). Large buffers are split over the compute workers.
@inline(__always)
func roundToBF16(_ p: FPtr, _ count: Int) {
    if count < 1 << 16 { sm_round_bf16_f32(p, count, p); return }
    parallelRanges(count, workers: workerCount(), minPerWorker: 1 << 15) { r in
        sm_round_bf16_f32(p + r.lowerBound, r.count, p + r.lowerBound)
    }
}

/// Rounds `count` floats of `src` to bf16 into `dst` (fp32 containers).
@inline(__always)
func roundToBF16(_ src: CFPtr, into dst: FPtr, _ count: Int) {
    if count < 1 << 16 { sm_round_bf16_f32(src, count, dst); return }
    parallelRanges(count, workers: workerCount(), minPerWorker: 1 << 15) { r in
        sm_round_bf16_f32(src + r.lowerBound, r.count, dst + r.lowerBound)
    }
}

extension MiniMindModel {
    /// How this model's bf16 products are computed (`--dtype bfloat16`), for the start-of-run message and
    /// trainer_state.json: "converted" = operands rounded to bf16 in fp32 containers, multiplied by OpenBLAS sgemm
    /// (emulated bf16: the same numbers as a bf16 GEMM with fp32 accumulation, not faster).
    public static var bf16Engine: String { "converted (bf16-rounded operands, OpenBLAS sgemm)" }

    /// The bf16-rounded copy of the parameters the products read under `--dtype bfloat16`, made again after
    /// `parametersDidChange()` (once per optimizer step), else nil.
    func productWeights() -> FPtr? {
        guard matmulDType == .bfloat16 else { return nil }
        if bf16Weights == nil {
            bf16Weights = .allocate(capacity: paramCount)
            bf16WeightsStale = true
        }
        let w = bf16Weights!
        if bf16WeightsStale {
            roundToBF16(UnsafePointer(paramPtr), into: w, paramCount)
            bf16WeightsStale = false
        }
        return w
    }

    /// Tells the model its parameters were changed in place (an optimizer step, a load): the bf16 copy of the
    /// weights (`--dtype bfloat16`) is made again before the next forward. Cheap; call after every update.
    public func parametersDidChange() { bf16WeightsStale = true }
}
