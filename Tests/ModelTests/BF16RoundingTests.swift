import Foundation
import XCTest
@testable import Model
import CQuant

/// The bf16 rounding of `--dtype bfloat16` and `--grad-comm-dtype bfloat16` (CQuant): round to nearest even, ties to
/// even, NaN stays a quiet NaN, overflow to ±inf; the AVX2 and scalar kernels give the same bits.
final class BF16RoundingTests: XCTestCase {
    override func tearDown() { _ = InferenceWeights.useSIMDKernels(true) }

    /// The reference: RNE on the fp32 bits (Double arithmetic would round twice).
    func reference(_ x: Float) -> Float {
        let u = x.bitPattern
        if x.isNaN { return Float(bitPattern: (u & 0xFFFF_0000) | 0x0040_0000) }
        let r = (u &+ 0x7FFF &+ ((u >> 16) & 1)) & 0xFFFF_0000
        return Float(bitPattern: r)
    }

    func inputs() -> [Float] {
        var v: [Float] = [0, -0, 1, -1, .infinity, -.infinity, .nan, Float.greatestFiniteMagnitude, -Float.greatestFiniteMagnitude,
                          Float.leastNonzeroMagnitude, Float.leastNormalMagnitude,
                          Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000),   // ties: to even down, to even up
                          Float(bitPattern: 0x3F80_8001), Float(bitPattern: 0x3F80_7FFF), Float(bitPattern: 0x7F7F_FFFF)]
        var rng = SplitMix64(seed: 7)
        for _ in 0..<1000 { v.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))) }
        return v
    }

    func testRoundingMatchesTheReferenceInBothKernels() {
        let x = inputs()
        for simd in [true, false] {
            XCTAssertEqual(InferenceWeights.useSIMDKernels(simd), simd)
            var inPlace = x
            inPlace.withUnsafeMutableBufferPointer { roundToBF16($0.baseAddress!, $0.count) }
            var bits = [UInt16](repeating: 0, count: x.count)
            sm_f32_to_bf16(x, x.count, &bits)
            var back = [Float](repeating: 0, count: x.count)
            var acc = [Float](repeating: 1, count: x.count)
            bits.withUnsafeBufferPointer { b in
                back.withUnsafeMutableBufferPointer { sm_bf16_to_f32(b.baseAddress!, b.count, $0.baseAddress!) }
                acc.withUnsafeMutableBufferPointer { sm_bf16_accumulate_f32(b.baseAddress!, b.count, $0.baseAddress!) }
            }
            for (i, v) in x.enumerated() {
                let want = reference(v)
                XCTAssertEqual(inPlace[i].bitPattern, want.bitPattern, "simd \(simd): round(\(v)) [\(String(v.bitPattern, radix: 16))]")
                XCTAssertEqual(back[i].bitPattern, want.bitPattern, "simd \(simd): sm_f32_to_bf16(\(v))")
                if want.isFinite { XCTAssertEqual(acc[i], 1 + want, "simd \(simd): accumulate(\(v))") }
            }
        }
        XCTAssertEqual(reference(Float(bitPattern: 0x3F80_8000)).bitPattern, 0x3F80_0000)
        XCTAssertEqual(reference(Float(bitPattern: 0x3F81_8000)).bitPattern, 0x3F82_0000)
        XCTAssertEqual(reference(Float(bitPattern: 0x7F7F_FFFF)), .infinity)
    }
}
