// bf16 mixed precision for training (`--dtype bfloat16`): the semantics of PyTorch's `torch.autocast(bfloat16)` as
// MiniMind trains under it. fp32 master weights, gradients, AdamW state and all-reduce; every matrix product of the
// decoder (q|k|v, o, gate|up, down, the tied lm_head, forward and both backward products, and the two attention
// products) takes operands rounded to bf16 (round to nearest even) and accumulates in fp32; RMSNorm, RoPE, softmax,
// SwiGLU's nonlinearity and the loss stay fp32.
// Operands are rounded to bf16 and kept in fp32 containers (low 16 bits zero). Engines: on a CPU with native bf16
// (avx512_bf16 / amx_bf16) oneDNN's bf16 matmul (CDNNL, packed to real bf16); elsewhere the *converted* path, OpenBLAS
// sgemm on the rounded operands: the products of a bf16 GEMM with fp32 accumulation, up to summation order, not faster.
import Foundation
import CQuant
import CDNNL

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
    /// `SWIFTMIND_ASSUME_NATIVE_BF16=1|0` overrides the flags (to run the suite with a native CPU's defaults elsewhere;
    /// the engine still needs oneDNN to accept bf16, else it is the converted path).
    public static var hasNativeBF16: Bool {
        if let v = ProcessInfo.processInfo.environment["SWIFTMIND_ASSUME_NATIVE_BF16"], !v.isEmpty { return v == "1" }
        return flags.contains("avx512_bf16") || flags.contains("amx_bf16")
    }
}

/// Which engine multiplies the bf16 operands (see the file comment), decided once per process.
public enum BF16Engine: String, Sendable {
    /// oneDNN bf16 matmul (native bf16 instructions).
    case oneDNN = "onednn"
    /// bf16-rounded operands in fp32 containers on OpenBLAS sgemm (emulated: same numbers, fp32 speed).
    case converted

    /// oneDNN when the CPU has native bf16 and oneDNN creates a bf16 matmul, else converted.
    /// `SWIFTMIND_BF16_ENGINE=onednn|converted` overrides (onednn only when oneDNN accepts bf16 here; tests).
    public static let current: BF16Engine = {
        let asked = ProcessInfo.processInfo.environment["SWIFTMIND_BF16_ENGINE"].flatMap(BF16Engine.init(rawValue:))
        if asked == .converted { return .converted }
        guard asked == .oneDNN || CPUFeatures.hasNativeBF16 else { return .converted }
        return oneDNNProbe.available ? .oneDNN : .converted
    }()

    /// Whether oneDNN creates a bf16 matmul on this CPU, and its implementation name or the reason it does not.
    public static let oneDNNProbe: (available: Bool, info: String) = {
        var buf = [CChar](repeating: 0, count: 256)
        let ok = sm_dnnl_bf16_probe(&buf, buf.count) != 0
        return (ok, String(cString: buf))
    }()

    /// For the start-of-run line and trainer_state.json.
    public var description: String {
        switch self {
        case .oneDNN: return "native (oneDNN bf16 matmul, \(BF16Engine.oneDNNProbe.info))"
        case .converted: return "converted (bf16-rounded operands on OpenBLAS sgemm; no native bf16 on this CPU)"
        }
    }
}

/// Row-major C[M,N] = alpha·op(A)·op(B) + beta·C for bf16 operands (A and B hold bf16 values in fp32 containers): the
/// engine of `BF16Engine.current` (a oneDNN failure falls back to sgemm, the same numbers).
@inline(__always)
func gemm16(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
            _ a: CFPtr, _ lda: Int, _ b: CFPtr, _ ldb: Int, _ beta: Float, _ c: FPtr, _ ldc: Int) {
    if m == 0 || n == 0 { return }
    if BF16Engine.current == .oneDNN,
       sm_dnnl_gemm_bf16(transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) == 0 { return }
    sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

/// `gemm16` when `bf16`, else `sgemm`.
@inline(__always)
func gemm(_ bf16: Bool, _ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
          _ a: CFPtr, _ lda: Int, _ b: CFPtr, _ ldb: Int, _ beta: Float, _ c: FPtr, _ ldc: Int) {
    if bf16 { gemm16(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) }
    else { sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) }
}

/// Rounds `count` floats at `p` to bf16 in place (round to nearest even, NaN stays NaN; CQuant's conversion, AVX2
/// when the CPU has it). Large buffers are split over the compute workers.
@inline(__always)
func roundToBF16(_ p: FPtr, _ count: Int) { roundToBF16(UnsafePointer(p), into: p, count) }

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
    /// trainer_state.json (`BF16Engine.current`).
    public static var bf16Engine: String { BF16Engine.current.description }

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
