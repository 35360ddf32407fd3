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
        m.releaseActivations()
        XCTAssertEqual(m.activationBytes, 0)
        XCTAssertEqual(loss(m, small, B: 1, T: 4, backward: true), l1)
        let f1 = MiniMindModel(config: cfg, seed: 11)
        XCTAssertEqual(loss(f1, small, B: 1, T: 4, backward: true), l1)
        XCTAssertEqual(Array(f1.grads), g1)
        let f2 = MiniMindModel(config: cfg, seed: 11)
        XCTAssertEqual(loss(f2, mid, B: 2, T: 13, backward: true), l2)
        XCTAssertEqual(Array(f2.grads), g2)
    }

    /// One thread (one batch part, per-layer gradient callbacks) and two threads (two concurrent batch parts with
    /// private gradient buffers) give the same loss and gradients up to fp32 summation order, and accumulate.
    func testBatchPartsMatchSingleThread() {
        // B=3 → two concurrent parts (1 + 2 items); B=1, T=37 → one part with the threaded kernels on odd row counts.
        for (B, T) in [(3, 9), (1, 37)] { checkThreadsAgree(B: B, T: T) }
    }

    func checkThreadsAgree(B: Int, T: Int) {
        let saved = ComputeThreads.count
        defer { ComputeThreads.count = saved }
        let b = batch(B: B, T: T, seed: 21)
        var results: [(Double, [Float])] = []
        for threads in [1, 2] {
            ComputeThreads.count = threads
            let m = MiniMindModel(config: cfg, seed: 5)
            _ = loss(m, b, B: B, T: T, backward: true)
            // A second backward without zeroGrad accumulates: grads double.
            let logits = b.ids.withUnsafeBufferPointer { m.forward(inputIds: $0, batchSize: B, seqLen: T) }
            let l = b.labels.withUnsafeBufferPointer { lb in b.mask.withUnsafeBufferPointer { mk in
                CrossEntropy.forwardBackward(logits: logits, labels: lb, lossMask: mk, vocabSize: cfg.vocabSize, normalizer: b.mask.reduce(0, +)) } }
            var ready: [Range<Int>] = []
            m.backward(dLogits: logits) { ready.append($0) }
            XCTAssertEqual(ready, m.gradientReadyOrder)
            results.append((l, Array(m.grads)))
        }
        XCTAssertEqual(results[0].0, results[1].0, accuracy: 1e-5 * abs(results[0].0), "B=\(B) T=\(T)")
        let gmax = results[0].1.map { abs($0) }.max()!
        var worst: Float = 0
        for i in results[0].1.indices { worst = max(worst, abs(results[0].1[i] - results[1].1[i])) }
        XCTAssertLessThan(worst, 1e-5 * gmax, "B=\(B) T=\(T)")
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

    func testAdamWStateRoundTripAndSubRanges() throws {
        let n = 1000
        var rng = SplitMix64(seed: 4)
        var p0 = (0..<n).map { _ in rng.nextUniform() - 0.5 }
        let g = (0..<n).map { _ in rng.nextUniform() - 0.5 }
        var p1 = p0
        let a = AdamW(count: n, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1)
        let b = AdamW(count: n, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1)
        for step in 1...3 {
            p0.withUnsafeMutableBufferPointer { pp in g.withUnsafeBufferPointer { a.step(params: pp, grads: $0, lr: 1e-3) } }
            // Same step taken as three sub-ranges.
            p1.withUnsafeMutableBufferPointer { pp in g.withUnsafeBufferPointer { gg in
                for r in [0..<10, 10..<700, 700..<n] { b.update(range: r, params: pp, grads: gg, lr: 1e-3, step: step) }
            } }
            b.stepCount = step
        }
        XCTAssertEqual(p0, p1)
        let path = NSTemporaryDirectory() + "adamw-\(getpid()).safetensors"
        defer { unlink(path) }
        var w = SafeTensorsWriter()
        a.addState(to: &w)
        try w.write(to: path)
        let c = AdamW(count: n, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1)
        try c.loadState(from: SafeTensorsFile(path: path))
        XCTAssertEqual(c.stepCount, 3)
        XCTAssertEqual(Array(c.m), Array(a.m)); XCTAssertEqual(Array(c.v), Array(a.v))
    }

    /// The loss head against a Double reference, on an odd row count with masked rows and threads.
    func testCrossEntropyAgainstReference() {
        let n = 37, V = 53
        var rng = SplitMix64(seed: 12)
        let logits0 = (0..<(n * V)).map { _ in (rng.nextUniform() - 0.5) * 8 }
        let labels = (0..<n).map { _ in Int32(rng.next() % UInt64(V)) }
        let mask = (0..<n).map { $0 % 4 == 1 ? Float(0) : Float(1 + $0 % 3) }
        let norm: Float = 11
        var logits = logits0
        let sum = logits.withUnsafeMutableBufferPointer { lg in labels.withUnsafeBufferPointer { lb in mask.withUnsafeBufferPointer { mk in
            CrossEntropy.forwardBackward(logits: lg, labels: lb, lossMask: mk, vocabSize: V, normalizer: norm) } } }
        var refSum = 0.0
        for r in 0..<n {
            let row = logits0[(r * V)..<((r + 1) * V)].map(Double.init)
            let mx = row.max()!
            let z = row.map { exp($0 - mx) }.reduce(0, +)
            refSum += (mx + log(z) - row[Int(labels[r])]) * Double(mask[r])
            for j in 0..<V {
                let g = (exp(row[j] - mx) / z - (j == Int(labels[r]) ? 1 : 0)) * Double(mask[r]) / Double(norm)
                XCTAssertEqual(Double(logits[r * V + j]), g, accuracy: 1e-6)
            }
        }
        XCTAssertEqual(sum, refSum, accuracy: 1e-4)
        var ce = [Float](repeating: 0, count: n)
        logits0.withUnsafeBufferPointer { lg in labels.withUnsafeBufferPointer { lb in ce.withUnsafeMutableBufferPointer {
            CrossEntropy.tokenLoss(logits: lg, labels: lb, vocabSize: V, out: $0) } } }
        let masked = zip(ce, mask).map { Double($0) * Double($1) }.reduce(0, +)
        XCTAssertEqual(masked, refSum, accuracy: 1e-4)
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
