import Foundation
import XCTest
@testable import Model

/// MiniMind2-MoE golden (`Tests/Fixtures/golden/moe/`): training-mode forward (logits, ce, aux_loss, loss = ce + aux) and
/// every gradient of loss, within the fp32 tolerances of Tests/Fixtures/README.md.
final class MoEGoldenTests: XCTestCase {
    func run(batchParallel: Bool) throws {
        let m = try MiniMindModel.load(directory: golden("moe"))
        XCTAssertTrue(m.config.useMoe)
        m.batchParallel = batchParallel
        let f = try SafeTensorsFile(path: golden("moe/train_step.safetensors"))
        let ids = try f.int32s("input_ids"), labels = try f.int32s("labels")
        let shape = try f.entry("input_ids").shape
        let B = shape[0], T = shape[1], V = m.config.vocabSize
        m.zeroGrad()
        let logits = ids.withUnsafeBufferPointer { m.forward(inputIds: $0, batchSize: B, seqLen: T) }
        let d = maxAbsDiff(UnsafeBufferPointer(logits), try f.floats("logits"))
        print("moe logits max |diff| = \(d)")
        XCTAssertLessThan(d, 1e-4)
        let mask = [Float](repeating: 1, count: B * T)
        let sum = labels.withUnsafeBufferPointer { l in mask.withUnsafeBufferPointer { mk in
            CrossEntropy.forwardBackward(logits: logits, labels: l, lossMask: mk, vocabSize: V, normalizer: Float(B * T)) } }
        let ce = Float(sum / Double(B * T)), aux = Float(m.lastAuxLoss)
        let (rce, raux, rloss) = (try f.floats("ce")[0], try f.floats("aux_loss")[0], try f.floats("loss")[0])
        print("moe ce \(ce) ref \(rce) |diff| \(abs(ce - rce)); aux \(aux) ref \(raux) |diff| \(abs(aux - raux)); loss |diff| \(abs(ce + aux - rloss))")
        XCTAssertLessThan(abs(ce - rce), 1e-4)
        XCTAssertLessThan(abs(aux - raux), 1e-4)
        XCTAssertLessThan(abs(ce + aux - rloss), 1e-4)
        var ready: [Range<Int>] = []
        m.auxLossScale = 1
        m.backward(dLogits: logits) { ready.append($0) }
        XCTAssertEqual(ready.map(\.count).reduce(0, +), m.numParameters)
        var worst = (name: "", ratio: Float(0), diff: Float(0))
        for p in m.parameters {
            let ref = try f.floats("grad." + p.name)
            var dd: Float = 0
            for i in 0..<p.count { dd = max(dd, abs(m.grads[p.offset + i] - ref[i])) }
            let tol = 1e-4 + 1e-3 * maxAbs(ref)
            XCTAssertLessThan(dd, tol, "grad.\(p.name)")
            if dd / tol > worst.ratio { worst = (p.name, dd / tol, dd) }
        }
        print("moe grads (batchParallel \(batchParallel)): worst |diff| = \(worst.diff) = \(worst.ratio) of its tolerance (\(worst.name))")
    }

    func testTrainStepMatchesGolden() throws { try run(batchParallel: true) }
    func testTrainStepMatchesGoldenSingleThreadedParts() throws { try run(batchParallel: false) }

    /// Cached incremental decoding of a MoE model gives the logits of the full forward at every position.
    func testIncrementalDecodingMatchesForward() throws {
        let m = try MiniMindModel.load(directory: golden("moe"), withGradients: false)
        let f = try SafeTensorsFile(path: golden("moe/train_step.safetensors"))
        let ids = Array(try f.int32s("input_ids").prefix(15)), V = m.config.vocabSize
        let full = Array(ids.withUnsafeBufferPointer { m.forward(inputIds: $0, batchSize: 1, seqLen: ids.count) })
        let cache = KVCache(config: m.config, maxLength: ids.count)
        var d: Float = 0
        _ = m.forwardIncremental(tokens: Array(ids.prefix(5)), cache: cache)
        for t in 5..<ids.count {
            let lg = m.forwardIncremental(tokens: [ids[t]], cache: cache)
            for j in 0..<V { d = max(d, abs(lg[j] - full[t * V + j])) }
        }
        print("moe cached vs full logits max |diff| = \(d)")
        XCTAssertLessThan(d, 1e-4)
    }

    func testConfigRoundTripAndDenseConfigUnchanged() throws {
        let dir = NSTemporaryDirectory() + "moe-cfg-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = ModelConfig(hiddenSize: 32, numHiddenLayers: 1, numAttentionHeads: 4, numKeyValueHeads: 2, vocabSize: 50)
        try c.write(directory: dir)
        let dense = try String(contentsOfFile: dir + "/config.json")
        XCTAssertFalse(dense.contains("use_moe"))
        XCTAssertTrue(dense.contains("LlamaForCausalLM"))
        XCTAssertFalse(try ModelConfig.load(directory: dir).useMoe)
        c.useMoe = true; c.nRoutedExperts = 3; c.numExpertsPerTok = 1; c.nSharedExperts = 0; c.auxLossAlpha = 0.05
        c.normTopkProb = false
        try c.write(directory: dir)
        XCTAssertEqual(try ModelConfig.load(directory: dir), c)
        let g = try ModelConfig.load(directory: golden("moe"))
        XCTAssertEqual([g.numExpertsPerTok, g.nRoutedExperts, g.nSharedExperts], [2, 4, 1])
        XCTAssertEqual(g.scoringFunc, "softmax"); XCTAssertEqual(g.auxLossAlpha, 0.1); XCTAssertTrue(g.seqAux && g.normTopkProb)
        c.numExpertsPerTok = 4
        XCTAssertThrowsError(try c.validate(source: "x")) { XCTAssertTrue("\($0)".contains("num_experts_per_tok")) }
    }
}

/// Finite differences of loss = CE + aux on MoE variants the golden does not cover (top-1 without normalisation and no
/// shared expert; top-3 of 4 with 2 shared experts). Samples whose ±h perturbation changes the routing are skipped.
final class MoEGradCheckTests: XCTestCase {
    func check(E: Int, k: Int, S: Int, norm: Bool) {
        var cfg = ModelConfig(hiddenSize: 16, numHiddenLayers: 2, numAttentionHeads: 2, numKeyValueHeads: 1, vocabSize: 29,
                              intermediateSize: 24, rmsNormEps: 1e-5, ropeTheta: 1e4, maxPositionEmbeddings: 64)
        cfg.useMoe = true; cfg.nRoutedExperts = E; cfg.numExpertsPerTok = k; cfg.nSharedExperts = S; cfg.normTopkProb = norm
        cfg.auxLossAlpha = 0.1
        let m = MiniMindModel(config: cfg, seed: 11)
        m.batchParallel = false
        let B = 2, T = 6, N = B * T
        var rng = SplitMix64(seed: 5)
        let ids = (0..<N).map { _ in Int32(rng.next() % 29) }, labels = (0..<N).map { _ in Int32(rng.next() % 29) }
        func loss(_ backward: Bool) -> (Double, [Int32]) {
            moeLossAndRouting(m, ids: ids, labels: labels, B: B, T: T, backward: backward)
        }
        let (_, r0) = loss(true)
        let g = Array(m.grads)
        let h: Float = 1e-3
        var worst = 0.0, checked = 0
        for p in m.parameters {
            let gmax = Double(g[p.range].map { abs($0) }.max()!)
            for _ in 0..<5 {
                let i = p.offset + Int(rng.next() % UInt64(p.count))
                let orig = m.params[i]
                m.params[i] = orig + h; let (lp, rp) = loss(false)
                m.params[i] = orig - h; let (lm, rm) = loss(false)
                m.params[i] = orig
                if rp != r0 || rm != r0 { continue }
                let fd = (lp - lm) / Double(2 * h), err = abs(fd - Double(g[i])), tol = 5e-4 + 1e-2 * gmax
                XCTAssertLessThan(err, tol, "\(p.name)[\(i - p.offset)] analytic \(g[i]) fd \(fd)")
                worst = max(worst, err / tol); checked += 1
            }
        }
        XCTAssertGreaterThan(checked, m.parameters.count * 3)
        print("moe E\(E) k\(k) S\(S) norm \(norm): \(checked) finite-difference samples, worst error \(worst) of tolerance")
    }
    func testTop1NoSharedNoNorm() { check(E: 3, k: 1, S: 0, norm: false) }
    func testTop3TwoShared() { check(E: 4, k: 3, S: 2, norm: true) }
}

/// LoRA on a MoE model: adapters only on square attention Linears (never the gate or experts, even when
/// intermediate_size == hidden_size), base frozen; adapter gradients of CE + aux match finite differences.
final class MoELoRATests: XCTestCase {
    func testAdaptersOnAttentionOnlyAndGradients() throws {
        var cfg = ModelConfig(hiddenSize: 16, numHiddenLayers: 2, numAttentionHeads: 2, numKeyValueHeads: 1, vocabSize: 29,
                              intermediateSize: 16, rmsNormEps: 1e-5, ropeTheta: 1e4, maxPositionEmbeddings: 64)
        cfg.useMoe = true
        let m = MiniMindModel(config: cfg, seed: 3)
        m.batchParallel = false
        let a = try LoRAAdapters(config: cfg, rank: 2, seed: 1)
        XCTAssertTrue(a.targets.allSatisfy { $0.module.contains("self_attn") })
        var rng = SplitMix64(seed: 9)
        for i in 0..<a.count { a.params[i] = 0.1 * (rng.nextUniform() - 0.5) }
        m.lora = a; m.frozenBase = true
        let B = 2, T = 5, N = B * T
        let ids = (0..<N).map { _ in Int32(rng.next() % 29) }, labels = (0..<N).map { _ in Int32(rng.next() % 29) }
        func loss(_ backward: Bool) -> (Double, [Int32]) {
            moeLossAndRouting(m, ids: ids, labels: labels, B: B, T: T, backward: backward)
        }
        let (_, r0) = loss(true)
        // frozenBase: no Linear gets a weight gradient (RMSNorm weights are still computed, as in the dense model).
        for p in m.parameters where p.name.contains(".mlp.") || p.name.contains("_proj") {
            XCTAssertTrue(m.grads[p.range].allSatisfy { $0 == 0 }, "\(p.name) is frozen")
        }
        let g = Array(a.grads), gmax = Double(g.map { abs($0) }.max()!)
        var checked = 0
        for _ in 0..<40 {
            let i = Int(rng.next() % UInt64(a.count)), orig = a.params[i], h: Float = 1e-3
            a.params[i] = orig + h; let (lp, rp) = loss(false)
            a.params[i] = orig - h; let (lm, rm) = loss(false)
            a.params[i] = orig
            if rp != r0 || rm != r0 { continue }
            let fd = (lp - lm) / Double(2 * h)
            XCTAssertLessThan(abs(fd - Double(g[i])), 5e-4 + 1e-2 * gmax, "adapter[\(i)] analytic \(g[i]) fd \(fd)")
            checked += 1
        }
        XCTAssertGreaterThan(checked, 20)
    }
}

/// loss = masked CE / N (mask all ones) + aux loss of `m` on one batch `[B, T]`, with the backward pass when
/// `backward`, and the expert ids the routing chose (to skip finite-difference samples whose ±h flips the routing).
func moeLossAndRouting(_ m: MiniMindModel, ids: [Int32], labels: [Int32], B: Int, T: Int, backward: Bool) -> (Double, [Int32]) {
    let N = B * T, cfg = m.config
    let mask = [Float](repeating: 1, count: N)
    let lg = ids.withUnsafeBufferPointer { m.forward(inputIds: $0, batchSize: B, seqLen: T) }
    let s = labels.withUnsafeBufferPointer { l in mask.withUnsafeBufferPointer { mk in
        CrossEntropy.forwardBackward(logits: lg, labels: l, lossMask: mk, vocabSize: cfg.vocabSize, normalizer: Float(N)) } }
    let moe = m.partActivations[0].moe!
    let routing = Array(UnsafeBufferPointer(start: moe.idx, count: moe.capN * cfg.numExpertsPerTok * cfg.numHiddenLayers))
    if backward { m.zeroGrad(); m.backward(dLogits: lg) }
    return (s / Double(N) + m.lastAuxLoss, routing)
}

/// A model none of whose Linears is square (num_attention_heads × head_dim ≠ hidden_size, as imported Hugging Face
/// models may be) has nothing for MiniMind's LoRA to adapt: refused, naming the shapes, instead of training nothing.
final class LoRANoSquareLinearTests: XCTestCase {
    func testRefusedNamingTheShapes() {
        let cfg = ModelConfig(hiddenSize: 64, numHiddenLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 2, vocabSize: 29,
                              intermediateSize: 128, rmsNormEps: 1e-5, ropeTheta: 1e4, maxPositionEmbeddings: 64, headDim: 24)
        XCTAssertThrowsError(try LoRAAdapters(config: cfg, rank: 2)) { e in
            XCTAssertTrue("\(e)".contains("no square Linear to adapt") && "\(e)".contains("num_attention_heads × head_dim = 96 ≠ hidden_size 64"), "\(e)")
        }
    }
}

/// Atomic writes name the file and the system's reason (a full disk: "No space left on device"), not a bare
/// "cannot write".
final class AtomicWriteErrorTests: XCTestCase {
    func testReasonIsNamed() {
        let path = NSTemporaryDirectory() + "swiftmind-missing-\(getpid())/model.safetensors"
        XCTAssertThrowsError(try writeAtomically(Data([1, 2, 3]), to: path)) { e in
            XCTAssertEqual("\(e)", "\(path): cannot write: No such file or directory")
        }
    }
}
