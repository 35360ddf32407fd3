import Foundation
import XCTest
@testable import Model
import CDNNL
import CQuant

/// oneDNN's bf16 matmul (CDNNL, the engine of `--dtype bfloat16` on CPUs with native bf16) against the converted path
/// (the same bf16-rounded operands on OpenBLAS sgemm) on small shapes, every transpose, alpha, beta and a strided C.
/// Runs on any CPU where oneDNN accepts bf16 (without native bf16 through its reference kernels); skips, with
/// oneDNN's reason, where it does not.
final class OneDNNBF16Tests: XCTestCase {
    func testOneDNNMatchesTheConvertedPath() throws {
        let probe = BF16Engine.oneDNNProbe
        guard probe.available else { throw XCTSkip("oneDNN has no bf16 matmul on this CPU: \(probe.info)") }
        print("oneDNN bf16 matmul: \(probe.info); engine of --dtype bfloat16 here: \(BF16Engine.current.rawValue)")
        try compare(sm_dnnl_gemm_bf16)
    }

    /// The shim's descriptors, transposes, alpha/beta and strided C through oneDNN's fp32 matmul (runs on every CPU,
    /// also where oneDNN refuses bf16), against sgemm on the same (bf16-valued) operands.
    func testShimMatchesSGEMMWithFP32Operands() throws {
        try compare(sm_dnnl_gemm_f32_check)
    }

    typealias Shim = (Int32, Int32, Int, Int, Int, Float, UnsafePointer<Float>?, Int, UnsafePointer<Float>?, Int, Float,
                      UnsafeMutablePointer<Float>?, Int) -> Int32

    func compare(_ shim: Shim) throws {
        var rng = SplitMix64(seed: 3)
        func matrix(_ count: Int) -> [Float] {
            var v = (0..<count).map { _ in rng.nextUniform() * 2 - 1 }
            v.withUnsafeMutableBufferPointer { sm_round_bf16_f32($0.baseAddress!, $0.count, $0.baseAddress!) }
            return v
        }
        for (m, n, k) in [(1, 1, 1), (7, 5, 3), (33, 17, 64), (64, 96, 130)] {
            for ta in [false, true] {
                for tb in [false, true] {
                    for (alpha, beta) in [(Float(1), Float(0)), (0.25, 1), (1.5, 0.5)] {
                        let lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2
                        let a = matrix((ta ? k : m) * lda), b = matrix((tb ? n : k) * ldb), c0 = matrix(m * ldc)
                        var want = c0, got = c0
                        sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, &want, ldc)
                        let st = shim(ta ? 1 : 0, tb ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, &got, ldc)
                        XCTAssertEqual(st, 0, "oneDNN status")
                        // fp32 accumulation in both, in different orders: |Δ| ≤ k·2⁻²³·Σ|a||b| (+ the beta term).
                        for i in 0..<m {
                            for j in 0..<n {
                                var mag: Float = abs(beta * c0[i * ldc + j])
                                for p in 0..<k {
                                    mag += abs(alpha * a[ta ? p * lda + i : i * lda + p] * b[tb ? j * ldb + p : p * ldb + j])
                                }
                                let tol = Float(k + 2) * Float.ulpOfOne * mag + 1e-30
                                XCTAssertLessThanOrEqual(abs(got[i * ldc + j] - want[i * ldc + j]), tol,
                                                         "m\(m) n\(n) k\(k) ta\(ta) tb\(tb) α\(alpha) β\(beta) [\(i), \(j)]")
                            }
                            // The padding between rows of C is untouched.
                            for j in n..<ldc { XCTAssertEqual(got[i * ldc + j], c0[i * ldc + j]) }
                        }
                    }
                }
            }
        }
    }
}
