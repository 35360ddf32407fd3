// `trainer debug-step`: one forward/backward (and optionally one AdamW step) on a given batch, every tensor dumped.
import ArgumentParser
import Foundation
import Model

struct DebugStep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "debug-step",
        abstract: "One training step on a batch; writes logits, loss, every grad.<name>, grad_norm and after_step.<name>.",
        discussion: """
        Reads input_ids and labels (int32 or int64, [B, T]) and an optional float loss_mask [B, T] from --batch.
        Writes logits [B, T, V], loss [1] (= Σ CE·mask / Σ mask), grad.<name> for every parameter as the optimizer
        sees it (after clipping to --grad-clip, default 1.0 as MiniMind; 0 disables clipping), grad_norm [1] (before
        clipping) and, when --lr is given, after_step.<name> after clipping and one AdamW step.
        """)

    @Option(help: "Model directory (config.json + model.safetensors).") var model: String
    @Option(help: "Batch safetensors file.") var batch: String
    @Option(help: "Output safetensors file.") var out: String
    @Option(help: "AdamW learning rate; when given, one step is taken and after_step.<name> written.") var lr: Float?
    @Option var beta1: Float = 0.9
    @Option var beta2: Float = 0.999
    @Option var eps: Float = 1e-8
    @Option(name: .customLong("weight-decay")) var weightDecay: Float = 0.01
    @Option(name: .customLong("grad-clip"), help: "Max global gradient norm (0 = no clipping).") var gradClip: Float = 1.0
    @Option(help: "OpenBLAS threads.") var threads: Int?

    func run() throws {
        OpenBLASRuntime.setThreads(threads)
        let m = try MiniMindModel.load(directory: model)
        let f = try SafeTensorsFile(path: batch)
        let idsE = try f.entry("input_ids"), labE = try f.entry("labels")
        guard idsE.shape.count == 2 else { throw ValidationError("\(batch): input_ids has shape \(idsE.shape), expected [B, T]") }
        guard labE.shape == idsE.shape else { throw ValidationError("\(batch): labels shape \(labE.shape) != input_ids shape \(idsE.shape)") }
        let B = idsE.shape[0], T = idsE.shape[1], V = m.config.vocabSize
        let ids = try f.int32s("input_ids"), labels = try f.int32s("labels")
        var mask = [Float](repeating: 1, count: B * T)
        if let e = f.entries["loss_mask"] {
            guard e.shape == idsE.shape else { throw ValidationError("\(batch): loss_mask shape \(e.shape) != [\(B), \(T)]") }
            mask = try f.floats("loss_mask")
        }
        for (i, id) in ids.enumerated() where id < 0 || Int(id) >= V {
            throw ValidationError("\(batch): input_ids[\(i / T)][\(i % T)] = \(id) outside [0, \(V))") }
        for (i, l) in labels.enumerated() where mask[i] != 0 && (l < 0 || Int(l) >= V) {
            throw ValidationError("\(batch): labels[\(i / T)][\(i % T)] = \(l) outside [0, \(V)) where loss_mask is \(mask[i])") }
        let norm = mask.reduce(0, +)
        guard norm > 0 else { throw ValidationError("\(batch): loss_mask is all zero") }

        m.zeroGrad()
        let logits = ids.withUnsafeBufferPointer { m.forward(inputIds: $0, batchSize: B, seqLen: T) }
        var w = SafeTensorsWriter()
        w.add("logits", shape: [B, T, V], floats: UnsafeBufferPointer(logits))
        let sum = labels.withUnsafeBufferPointer { l in mask.withUnsafeBufferPointer { mk in
            CrossEntropy.forwardBackward(logits: logits, labels: l, lossMask: mk, vocabSize: V, normalizer: norm) } }
        let loss = Float(sum / Double(norm))
        m.backward(dLogits: logits)
        let gn = gradClip > 0 ? clipGradNorm(m.grads, maxNorm: gradClip) : gradNorm(UnsafeBufferPointer(m.grads))
        w.add("loss", shape: [1], floats: [loss])
        w.add("grad_norm", shape: [1], floats: [gn])
        for p in m.parameters { w.add("grad." + p.name, shape: p.shape, floats: UnsafeBufferPointer(rebasing: m.grads[p.range])) }
        if let lr {
            let opt = AdamW(count: m.numParameters, beta1: beta1, beta2: beta2, eps: eps, weightDecay: weightDecay)
            opt.step(params: m.params, grads: UnsafeBufferPointer(m.grads), lr: lr)
            for p in m.parameters { w.add("after_step." + p.name, shape: p.shape, floats: UnsafeBufferPointer(rebasing: m.params[p.range])) }
        }
        try w.write(to: out)
        print("debug-step: B=\(B) T=\(T) loss \(loss) grad_norm \(gn)\(lr.map { " (AdamW step lr \($0))" } ?? "") → \(out)")
    }
}
