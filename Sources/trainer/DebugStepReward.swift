// `trainer debug-step --objective reward`: one reward-model step (the `.reward` loss head every `trainer reward` step
// runs) on a batch of input_ids and last_index, every gradient dumped.
import ArgumentParser
import Foundation
import Model
import Datasets
import Training

extension DebugStep {
    /// Reads `input_ids` [2P, T] (int32 or int64; rows [0, P) chosen, [P, 2P) rejected) and `last_index` [2P] from
    /// --batch, runs `ObjectiveStep` with the `.reward` head (a one-rank run, one micro-batch, P pairs) and writes
    /// rewards, loss, grad_norm and grad.<name> of every parameter (score.weight included), clipped to --grad-clip
    /// (0 = raw), and after_step.<name> with --lr.
    /// - Throws: `InputError` naming the batch file and tensor for a bad shape, id or index; `ModelError` when
    ///   --model has no reward head.
    func runReward(_ m: MiniMindModel) throws {
        guard m.scoreHead != nil else {
            throw InputError("\(model)/config.json: --objective reward needs a reward model (architectures [\"LlamaForSequenceClassification\"], num_labels 1)") }
        let f = try SafeTensorsFile(path: batch)
        let idsE = try f.entry("input_ids"), lastE = try f.entry("last_index")
        guard idsE.shape.count == 2 else { throw InputError("\(batch): input_ids has shape \(idsE.shape), expected [2P, T]") }
        let B = idsE.shape[0], T = idsE.shape[1], V = m.config.vocabSize
        guard B >= 2, B % 2 == 0, T >= 1 else {
            throw InputError("\(batch): input_ids has shape \(idsE.shape); reward needs an even number of rows ≥ 2 (chosen rows, then rejected rows) and T ≥ 1") }
        guard lastE.shape == [B] else { throw InputError("\(batch): last_index has shape \(lastE.shape), expected [\(B)]") }
        guard T <= m.config.maxPositionEmbeddings else {
            throw InputError("\(batch): T = \(T) is more than the model's max_position_embeddings \(m.config.maxPositionEmbeddings)") }
        let (cells, o1) = B.multipliedReportingOverflow(by: T)
        guard !o1, cells <= 1 << 28 else { throw InputError("\(batch): input_ids shape [\(B), \(T)] is too large; use a smaller batch") }
        let ids = try f.int32s("input_ids"), last = try f.int32s("last_index")
        for (i, id) in ids.enumerated() where id < 0 || Int(id) >= V {
            throw InputError("\(batch): input_ids[\(i / T)][\(i % T)] = \(id) outside [0, \(V))") }
        for (i, l) in last.enumerated() where l < 0 || Int(l) >= T {
            throw InputError("\(batch): last_index[\(i)] = \(l) outside [0, \(T))") }

        // The reward batch layout `RewardPairDataset` yields: loss_mask 1 at each row's last index.
        var b = Batch(batchSize: B, seqLen: T)
        b.inputIds = ids
        for (i, l) in last.enumerated() { b.lossMask[i * T + Int(l)] = 1 }
        b.maskCount = B

        let r = ObjectiveStep(model: m, head: .reward).runAlone(b)
        var w = SafeTensorsWriter()
        w.add("rewards", shape: [B], floats: r.rewards!)
        let loss = Float(r.loss) + Float(r.auxLoss)
        let gn = gradClip > 0 ? clipGradNorm(m.grads, maxNorm: gradClip) : gradNorm(UnsafeBufferPointer(m.grads))
        w.add("loss", shape: [1], floats: [loss])
        w.add("grad_norm", shape: [1], floats: [gn])
        if m.config.useMoe { w.add("aux_loss", shape: [1], floats: [Float(r.auxLoss)]) }
        for p in m.parameters { w.add("grad." + p.name, shape: p.shape, floats: UnsafeBufferPointer(rebasing: m.grads[p.range])) }
        if let lr {
            let opt = AdamW(count: m.numParameters, beta1: beta1, beta2: beta2, eps: eps, weightDecay: weightDecay)
            opt.step(params: m.params, grads: UnsafeBufferPointer(m.grads), lr: lr)
            for p in m.parameters { w.add("after_step." + p.name, shape: p.shape, floats: UnsafeBufferPointer(rebasing: m.params[p.range])) }
        }
        try w.write(to: out)
        print("debug-step: reward, \(B / 2) pairs, T=\(T) loss \(loss) pair_acc \(r.preferenceAcc ?? 0) grad_norm \(gn)\(lr.map { " (AdamW step lr \($0))" } ?? "") → \(out)")
    }
}
