import Foundation
import XCTest
@testable import Model

final class GradCheckTests: XCTestCase {
    /// Tiny config with odd sizes: 3 heads of dim 6, 1 KV head, intermediate 40, vocab 37, T = 7.
    let cfg = ModelConfig(hiddenSize: 18, numHiddenLayers: 2, numAttentionHeads: 3, numKeyValueHeads: 1, vocabSize: 37,
                          intermediateSize: 40, rmsNormEps: 1e-5, ropeTheta: 1e4, maxPositionEmbeddings: 64)

    func batch(B: Int, T: Int, seed: UInt64) -> (ids: [Int32], labels: [Int32], mask: [Float]) {
        var rng = SplitMix64(seed: seed)
        let ids = (0..<(B * T)).map { _ in Int32(rng.next() % UInt64(cfg.vocabSize)) }
        let labels = (0..<(B * T)).map { _ in Int32(rng.next() % UInt64(cfg.vocabSize)) }
        let mask = (0..<(B * T)).map { i in i % 5 == 3 ? Float(0) : 1 }
        return (ids, labels, mask)
    }

    /// Loss = Σ CE·mask / Σ mask; when `backward`, also fills grads (zeroed first).
    func loss(_ m: MiniMindModel, _ b: (ids: [Int32], labels: [Int32], mask: [Float]), B: Int, T: Int, backward: Bool) -> Double {
        let logits = b.ids.withUnsafeBufferPointer { m.forward(inputIds: $0, batchSize: B, seqLen: T) }
        let norm = b.mask.reduce(0, +)
        let s = b.labels.withUnsafeBufferPointer { l in b.mask.withUnsafeBufferPointer { mk in
            CrossEntropy.forwardBackward(logits: logits, labels: l, lossMask: mk, vocabSize: m.config.vocabSize, normalizer: norm) } }
        if backward { m.zeroGrad(); m.backward(dLogits: logits) }
        return s / Double(norm)
    }

    func testFiniteDifferenceGradients() {
        let B = 2, T = 7
        let m = MiniMindModel(config: cfg, seed: 7)
        // Non-trivial norm weights so their gradients are exercised away from 1.
        var rng = SplitMix64(seed: 99)
        for p in m.parameters where p.shape.count == 1 { for i in p.range { m.params[i] = 0.5 + rng.nextUniform() } }
        let b = batch(B: B, T: T, seed: 3)
        _ = loss(m, b, B: B, T: T, backward: true)
        let analytic = Array(m.grads)
        let h: Float = 1e-2
        var worst: Double = 0
        for p in m.parameters {
            let gmax = Double(analytic[p.range].map { abs($0) }.max()!)
            for _ in 0..<6 {
                let i = p.offset + Int(rng.next() % UInt64(p.count))
                let orig = m.params[i]
                m.params[i] = orig + h; let lp = loss(m, b, B: B, T: T, backward: false)
                m.params[i] = orig - h; let lm = loss(m, b, B: B, T: T, backward: false)
                m.params[i] = orig
                let fd = (lp - lm) / Double(2 * h)
                let err = abs(fd - Double(analytic[i]))
                let tol = 2e-4 + 1e-2 * gmax
                XCTAssertLessThan(err, tol, "\(p.name)[\(i - p.offset)]: analytic \(analytic[i]) vs finite difference \(fd)")
                worst = max(worst, err / tol)
            }
        }
        print("finite-difference check: worst error = \(worst) of tolerance")
    }

    /// Activations are allocated for the largest shape; a smaller B/T afterwards (and a larger one later) must give
    /// exactly what a fresh model computes.
    func testSmallerShapeAfterLargerReusesBuffers() {
        let big = batch(B: 3, T: 11, seed: 5), small = batch(B: 1, T: 4, seed: 6), mid = batch(B: 2, T: 13, seed: 8)
        let m = MiniMindModel(config: cfg, seed: 11)
        _ = loss(m, big, B: 3, T: 11, backward: true)
        let l1 = loss(m, small, B: 1, T: 4, backward: true)
        let g1 = Array(m.grads)
        let l2 = loss(m, mid, B: 2, T: 13, backward: true)
        let g2 = Array(m.grads)
        let f1 = MiniMindModel(config: cfg, seed: 11)
        XCTAssertEqual(loss(f1, small, B: 1, T: 4, backward: true), l1)
        XCTAssertEqual(Array(f1.grads), g1)
        let f2 = MiniMindModel(config: cfg, seed: 11)
        XCTAssertEqual(loss(f2, mid, B: 2, T: 13, backward: true), l2)
        XCTAssertEqual(Array(f2.grads), g2)
    }

    func testSaveLoadRoundTripAndHeaderErrors() throws {
        let dir = NSTemporaryDirectory() + "swiftmind-model-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let m = MiniMindModel(config: cfg, seed: 1)
        try m.save(directory: dir)
        let r = try MiniMindModel.load(directory: dir)
        XCTAssertEqual(r.config, m.config)
        XCTAssertEqual(Array(r.params), Array(m.params))
        // A truncated file: the error names the tensor whose data falls outside.
        let path = dir + "/model.safetensors"
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        data.removeLast(8)
        try data.write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try MiniMindModel.load(directory: dir)) { e in
            XCTAssertTrue("\(e)".contains("model.norm.weight"), "\(e)")
        }
        // A missing tensor is named.
        var w = SafeTensorsWriter()
        for p in m.parameters where p.name != "model.layers.1.mlp.up_proj.weight" {
            w.add(p.name, shape: p.shape, floats: UnsafeBufferPointer(rebasing: m.params[p.range]))
        }
        try w.write(to: path)
        XCTAssertThrowsError(try MiniMindModel.load(directory: dir)) { e in
            XCTAssertTrue("\(e)".contains("model.layers.1.mlp.up_proj.weight"), "\(e)")
        }
    }

    func testConfigDefaultsAndSchedule() throws {
        let c = ModelConfig()
        XCTAssertEqual(c.intermediateSize, 1408)
        XCTAssertEqual(ModelConfig(hiddenSize: 768).intermediateSize, 2048)
        XCTAssertEqual(cosineLR(step: 0, totalSteps: 100, baseLR: 1e-3), 1.1e-3, accuracy: 1e-12)
        XCTAssertEqual(cosineLR(step: 100, totalSteps: 100, baseLR: 1e-3), 1e-4, accuracy: 1e-12)
        let g = try ModelConfig.load(directory: golden("model"))
        XCTAssertEqual(g.hiddenSize, 64); XCTAssertEqual(g.intermediateSize, 192); XCTAssertEqual(g.numKeyValueHeads, 2)
    }
}
