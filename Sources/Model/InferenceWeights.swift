// Low-precision copies of the weight matrices for inference (`--weight-dtype bf16|q8_0`), made on load from the fp32
// parameters, and the products `linear_forward` runs over them (schedule `.lowPrecision`).
// Formats (C target CQuant): bf16 = the upper half of fp32, rounded to nearest even; q8_0 = GGUF/GGML's Q8_0 (blocks
// of 32 weights: fp16 scale d = max|w|/127, then 32 int8 q = round(w/d); ggml/src/ggml-quants.c, quantize_row_q8_0_ref).
import Foundation
import CBLAS
import CQuant

/// Element type of the weight matrices inference multiplies with. Activations, norms, attention and the KV cache stay
/// fp32 whatever the choice; training always uses the fp32 parameters.
public enum WeightDType: String, CaseIterable, Sendable {
    /// The fp32 parameters themselves (no copy).
    case f32
    /// bfloat16: fp32 with the low 16 mantissa bits rounded away (relative error ≤ 2⁻⁹).
    case bf16
    /// GGUF Q8_0: per 32 weights one fp16 scale and 32 int8 (error ≤ d/2 = max|w|/254 per weight, plus d's fp16 rounding).
    case q8_0

    /// Bytes of one weight row of `ic` columns (`ic` % 32 == 0 for q8_0).
    public func rowBytes(_ ic: Int) -> Int {
        switch self {
        case .f32: return 4 * ic
        case .bf16: return 2 * ic
        case .q8_0: return ic / Int(SM_Q8_0_BLOCK) * Int(SM_Q8_0_BYTES)
        }
    }
}

/// The bf16 or Q8_0 copy of a model's weight matrices: every 2-D parameter whose row length is a multiple of 32
/// (q/k/v/o, gate/up/down, MoE experts and router, embed_tokens = the tied lm_head) and an untied lm_head, stored in
/// parameter order so matrices adjacent in the fp32 layout (q|k|v, gate|up) stay adjacent here and `linear_forward`'s
/// fused products find them as one matrix. Read-only after `init`; `linear_forward` looks a weight up by its fp32
/// address (`matrix(for:rows:ic:)`) and falls back to fp32 for any other matrix.
public final class InferenceWeights: @unchecked Sendable {
    public let dtype: WeightDType
    /// Bytes held (the low-precision copy; the fp32 parameters are kept too).
    public let byteCount: Int
    /// q8_0 only: how the activation rows meet the Q8_0 weights in the matrix-vector kernels (decode, ≤ `directRows`
    /// rows; prefill dequantizes tiles to fp32 whatever this is). Default: env `SWIFTMIND_Q8_ACTIVATIONS`, else
    /// `.int16` (see `Q8Activations`).
    public var q8Activations: Q8Activations

    struct Matrix {
        let bytes: UnsafeRawPointer
        let ic: Int
        /// Rows from this one to the end of its run of adjacent matrices with the same row length.
        let rows: Int
    }
    /// Matrices held in `dtype` (the others stay fp32: row length not a multiple of 32).
    public let matrixCount: Int
    /// Matrices offered to `init`.
    public let offeredCount: Int
    private let storage: UnsafeMutableRawPointer
    private var index: [UnsafeRawPointer: Matrix] = [:]

    /// Copies `matrices` (fp32 `[rows, ic]`, row-major; `ic` % 32 == 0) into `dtype` (bf16 or q8_0).
    init(dtype: WeightDType, matrices: [(pointer: UnsafePointer<Float>, rows: Int, ic: Int)]) {
        precondition(dtype != .f32, "InferenceWeights holds bf16 or q8_0 copies only")
        self.dtype = dtype
        q8Activations = Q8Activations.fromEnvironment
        let sorted = matrices.filter { $0.ic % 32 == 0 && $0.rows > 0 }.sorted { $0.pointer < $1.pointer }
        matrixCount = sorted.count
        offeredCount = matrices.count
        byteCount = sorted.reduce(0) { $0 + $1.rows * dtype.rowBytes($1.ic) }
        storage = .allocate(byteCount: max(byteCount, 1), alignment: 64)
        var at = 0
        var entries: [(UnsafeRawPointer, UnsafeRawPointer, Int, Int)] = []   // fp32 start, bytes, ic, rows
        for m in sorted {
            let dst = storage + at, count = m.rows * m.ic
            switch dtype {
            case .bf16: sm_f32_to_bf16(m.pointer, count, dst.assumingMemoryBound(to: UInt16.self))
            case .q8_0: sm_quantize_q8_0(m.pointer, count, dst.assumingMemoryBound(to: UInt8.self))
            case .f32: break
            }
            entries.append((UnsafeRawPointer(m.pointer), UnsafeRawPointer(dst), m.ic, m.rows))
            at += m.rows * dtype.rowBytes(m.ic)
        }
        // Rows available from each matrix: its own plus those of the following matrices that continue it exactly
        // (next fp32 start = this end, same ic), walking backwards.
        var following = 0
        for i in entries.indices.reversed() {
            let (p, b, ic, rows) = entries[i]
            if i + 1 < entries.count, entries[i + 1].0 == p + rows * ic * 4, entries[i + 1].2 == ic { following += rows }
            else { following = rows }
            index[p] = Matrix(bytes: b, ic: ic, rows: following)
        }
    }
    deinit { storage.deallocate() }

    /// The low-precision matrix whose fp32 copy starts at `w`, when it has `ic` columns and at least `rows` rows.
    func matrix(for w: UnsafePointer<Float>, rows: Int, ic: Int) -> Matrix? {
        guard let m = index[UnsafeRawPointer(w)], m.ic == ic, m.rows >= rows else { return nil }
        return m
    }

    /// Rows up to which a product reads the low-precision weights directly (matrix-vector kernels); more rows
    /// dequantize tiles of weights to fp32 and run sgemm.
    static let directRows = 16

    /// out[N, OC] (rows `ldo` apart; = or += when `accumulate`) = inp[N, IC] · Wᵀ for the low-precision W = `m`.
    /// N ≤ `directRows`: the CQuant matrix-vector kernels, output rows split over `workers`. Larger N: tiles of W
    /// dequantized to fp32 (≤ 256 Ki floats = 1 MB per worker) and one single-threaded sgemm per tile, tiles spread over workers.
    func forward(_ m: Matrix, _ out: FPtr, _ inp: CFPtr, _ n: Int, _ ic: Int, _ oc: Int, ldo: Int, accumulate: Bool, workers: Int) {
        let acc: Int32 = accumulate ? 1 : 0
        if n <= InferenceWeights.directRows {
            let minRows = 64
            switch dtype {
            case .bf16:
                let w = m.bytes.assumingMemoryBound(to: UInt16.self)
                withUnsafeTemporaryAllocation(of: Float.self, capacity: n * ic) { xp in
                    sm_bf16_prepare_act(inp, n, ic, xp.baseAddress!)
                    let x = UnsafePointer(xp.baseAddress!)
                    decodeRanges(oc, workers: workers, minPerWorker: minRows) { r in
                        sm_gemv_bf16(w, x, n, ic, r.lowerBound, r.upperBound, out, ldo, acc)
                    }
                }
            case .q8_0:
                let w = m.bytes.assumingMemoryBound(to: UInt8.self)
                // Integer activations: quantize the rows once, then the kernel over output-row ranges.
                func integer<T>(_: T.Type, _ quantize: (CFPtr, Int, Int, UnsafeMutablePointer<T>, FPtr) -> Void,
                                _ gemv: (UnsafePointer<UInt8>, UnsafePointer<T>, CFPtr, Int, Int, Int, Int, FPtr, Int, Int32) -> Void) {
                    withUnsafeTemporaryAllocation(of: T.self, capacity: n * ic) { xq in
                        withUnsafeTemporaryAllocation(of: Float.self, capacity: n * ic / 32) { xd in
                            quantize(inp, n, ic, xq.baseAddress!, xd.baseAddress!)
                            let q = UnsafePointer(xq.baseAddress!), d = UnsafePointer(xd.baseAddress!)
                            decodeRanges(oc, workers: workers, minPerWorker: minRows) { r in
                                gemv(w, q, d, n, ic, r.lowerBound, r.upperBound, out, ldo, acc)
                            }
                        }
                    }
                }
                switch q8Activations {
                case .int16: integer(Int16.self, { sm_quantize_act_q16($0, $1, $2, $3, $4) },
                                     { sm_gemv_q8_0_q16($0, $1, $2, $3, $4, $5, $6, $7, $8, $9) })
                case .int8: integer(Int8.self, { sm_quantize_act_q8($0, $1, $2, $3, $4) },
                                    { sm_gemv_q8_0_q8($0, $1, $2, $3, $4, $5, $6, $7, $8, $9) })
                case .f32:
                    decodeRanges(oc, workers: workers, minPerWorker: minRows) { r in
                        sm_gemv_q8_0_f32(w, inp, n, ic, r.lowerBound, r.upperBound, out, ldo, acc)
                    }
                }
            case .f32: preconditionFailure()
            }
            return
        }
        let tile = Swift.min(oc, Swift.max(16, 262_144 / ic / 16 * 16))
        let pieces = (oc + tile - 1) / tile, w = Swift.max(1, Swift.min(workers, pieces))
        let scratch = FPtr.allocate(capacity: w * tile * ic)
        defer { scratch.deallocate() }
        let rowBytes = dtype.rowBytes(ic), beta: Float = accumulate ? 1 : 0
        parallelTasks(pieces, workers: w) { p, worker in
            let n0 = p * tile, rows = Swift.min(tile, oc - n0), t = scratch + worker * tile * ic
            dequantize(m.bytes + n0 * rowBytes, count: rows * ic, into: t)
            sgemm(false, true, n, rows, ic, 1, inp, ic, t, ic, beta, out + n0, ldo)
        }
    }

    /// fp32 values of `count` weights (whole rows) starting at `bytes`.
    func dequantize(_ bytes: UnsafeRawPointer, count: Int, into dst: FPtr) {
        switch dtype {
        case .bf16: sm_bf16_to_f32(bytes.assumingMemoryBound(to: UInt16.self), count, dst)
        case .q8_0: sm_dequantize_q8_0(bytes.assumingMemoryBound(to: UInt8.self), count, dst)
        case .f32: preconditionFailure()
        }
    }

    /// The stored bytes of the matrix whose fp32 copy starts at `w` (`rows` × `rowBytes(ic)`), e.g. for export.
    public func bytes(of w: UnsafePointer<Float>, rows: Int, ic: Int) -> UnsafeRawBufferPointer? {
        guard let m = matrix(for: w, rows: rows, ic: ic) else { return nil }
        return UnsafeRawBufferPointer(start: m.bytes, count: rows * dtype.rowBytes(ic))
    }

    /// Where a decode step's products and attention run: "spin" (CQuant's spin-waiting pool, the default) or "gcd"
    /// (`SWIFTMIND_SPIN_POOL=0`).
    public static var decodePool: String { decodeUsesSpinPool ? "spin" : "gcd" }

    /// Whether SIMD kernels (AVX2+FMA+F16C, or AVX-512 F/BW/DQ/VL) run on this CPU, else the portable scalar ones
    /// (env `SWIFTMIND_QUANT_SCALAR=1` forces scalar).
    public static var simdKernels: Bool { sm_quant_simd_level() >= 1 }

    /// The kernels in use: 0 scalar, 1 AVX2+FMA+F16C, 2 AVX-512 (F, BW, DQ, VL). Env `SWIFTMIND_QUANT_LEVEL=N` caps it.
    public static var kernelLevel: Int { Int(sm_quant_simd_level()) }

    /// Name of `kernelLevel` for logs: "scalar", "avx2", "avx512".
    public static var kernelName: String { ["scalar", "avx2", "avx512"][min(max(kernelLevel, 0), 2)] }

    /// Every kernel level this CPU runs, lowest first (for tests that compare them on one machine).
    public static var availableKernelLevels: [Int] {
        let saved = sm_quant_simd_level()
        let best = Int(sm_quant_set_simd_level(99))
        sm_quant_set_simd_level(saved)
        return Array(0...best)
    }

    /// Selects kernel level `level` (capped at what the CPU runs); returns the level in effect. For tests.
    @discardableResult
    public static func useKernelLevel(_ level: Int) -> Int { Int(sm_quant_set_simd_level(Int32(level))) }

    /// Chooses the scalar kernels (false) or the best SIMD ones this CPU has (true); returns `simdKernels`. For
    /// tests that run both paths on one machine.
    @discardableResult
    public static func useSIMDKernels(_ on: Bool) -> Bool { sm_quant_set_simd_level(on ? 99 : 0) >= 1 }
}

/// Low-precision weights of loaded models, keyed by model identity (owner held weakly, as `UntiedHeadRegistry`).
final class InferenceWeightsRegistry: @unchecked Sendable {
    static let shared = InferenceWeightsRegistry()
    private final class Entry {
        weak var owner: MiniMindModel?
        let weights: InferenceWeights
        init(owner: MiniMindModel, weights: InferenceWeights) { self.owner = owner; self.weights = weights }
    }
    private var entries: [ObjectIdentifier: Entry] = [:]
    private let lock = NSLock()

    func set(_ m: MiniMindModel, _ w: InferenceWeights?) {
        lock.lock(); defer { lock.unlock() }
        entries = entries.filter { $0.value.owner != nil }
        entries[ObjectIdentifier(m)] = w.map { Entry(owner: m, weights: $0) }
    }
    func get(_ m: MiniMindModel) -> InferenceWeights? {
        lock.lock(); defer { lock.unlock() }
        guard let e = entries[ObjectIdentifier(m)], e.owner === m else { return nil }
        return e.weights
    }
}

extension MiniMindModel {
    /// The bf16/q8_0 weights inference runs on (`setWeightDType`); nil = fp32.
    public var inferenceWeights: InferenceWeights? { InferenceWeightsRegistry.shared.get(self) }

    /// The weight type of inference (`forwardIncremental`, `forwardDecodeBatch`, `forwardNewTokens`, and `forward`
    /// when used for evaluation): `.f32` drops any copy; `.bf16`/`.q8_0` convert the current fp32 matrices now (call it
    /// after loading and after merging LoRA — later changes to `params` are not seen). Never set it on a model being
    /// trained: its backward uses the fp32 weights.
    public func setWeightDType(_ dtype: WeightDType) {
        if dtype == .f32 { InferenceWeightsRegistry.shared.set(self, nil); return }
        var mats: [(pointer: UnsafePointer<Float>, rows: Int, ic: Int)] = parameters.filter { $0.shape.count == 2 }.map {
            (UnsafePointer(paramPtr + $0.offset), $0.shape[0], $0.shape[1])
        }
        if let head = untiedLMHead { mats.append((UnsafePointer(head.baseAddress!), config.vocabSize, config.hiddenSize)) }
        InferenceWeightsRegistry.shared.set(self, InferenceWeights(dtype: dtype, matrices: mats))
    }

    /// The schedule of inference products: `.lowPrecision` when `inferenceWeights` is set, else `.inference`.
    func inferenceSchedule(workers: Int) -> LinearSchedule {
        inferenceWeights.map { LinearSchedule.lowPrecision(workers: workers, weights: $0) } ?? .inference(workers: workers)
    }
}

/// GGUF Q8_0 blocks of `values` (count % 32 == 0): per 32 weights a little-endian fp16 d = max|w|/127 then 32 int8
/// round(w/d) — the bytes `--weight-dtype q8_0` multiplies with and `export --dtype q8_0` writes.
public func quantizeQ8_0(_ values: UnsafeBufferPointer<Float>) -> [UInt8] {
    precondition(values.count % 32 == 0, "Q8_0 needs a multiple of 32 values (got \(values.count))")
    var out = [UInt8](repeating: 0, count: WeightDType.q8_0.rowBytes(values.count))
    if let b = values.baseAddress { out.withUnsafeMutableBufferPointer { sm_quantize_q8_0(b, values.count, $0.baseAddress!) } }
    return out
}

/// fp32 values of GGUF Q8_0 blocks (`bytes.count` % 34 == 0).
public func dequantizeQ8_0(_ bytes: [UInt8]) -> [Float] {
    precondition(bytes.count % 34 == 0, "Q8_0 data is whole 34-byte blocks (got \(bytes.count) bytes)")
    let count = bytes.count / 34 * 32
    var out = [Float](repeating: 0, count: count)
    bytes.withUnsafeBufferPointer { b in out.withUnsafeMutableBufferPointer { sm_dequantize_q8_0(b.baseAddress!, count, $0.baseAddress!) } }
    return out
}

/// How `--weight-dtype q8_0`'s matrix-vector kernels (decode) take the fp32 activation rows.
/// - `int16` (the default): each row quantized per 32 values to int16 (d = max|x|/32767), integer block sums against the
///   int8 weights. Its rounding (≤ 2⁻¹⁶ of the block maximum) is about 1/256 of the weights' Q8_0 rounding (a
///   product's relative error about 2e-5 against the weights' 5e-3 on random data), so the outputs are those of int8
///   weight-only quantization up to that, at the speed of integer kernels.
/// - `int8`: GGML's Q8_0 × Q8_0 scheme (d = max|x|/127), as llama.cpp computes it: the activations' rounding equals the
///   weights', which doubles the deviation from fp32 (docs/LOW_PRECISION.md measures the cost in greedy agreement).
/// - `f32`: the weights dequantized and multiplied with the fp32 activations (exact weight-only products; on AVX2 the
///   slowest of the three).
public enum Q8Activations: String, CaseIterable, Sendable {
    case int16, int8, f32

    /// From env `SWIFTMIND_Q8_ACTIVATIONS` (`int16`, `int8`, `f32`; also `fp32`/`float32`, any case), else `.int16`;
    /// another value is ignored with a warning on stderr. Read at each conversion.
    public static var fromEnvironment: Q8Activations {
        guard let raw = ProcessInfo.processInfo.environment["SWIFTMIND_Q8_ACTIVATIONS"] else { return .int16 }
        let v = raw.trimmingCharacters(in: .whitespaces)
        if v.isEmpty { return .int16 }
        switch v.lowercased() {
        case "f32", "fp32", "float32": return .f32
        case "int8": return .int8
        case "int16": return .int16
        default:
            FileHandle.standardError.write(Data("warning: SWIFTMIND_Q8_ACTIVATIONS=\(v) ignored (use int16, int8 or f32); q8_0 uses int16 activations\n".utf8))
            return .int16
        }
    }
}
