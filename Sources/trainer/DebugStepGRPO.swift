// `trainer debug-step --objective grpo`: one GRPO step on a rollout batch through the objective that trains
// (`GRPOLoss.batch` + `ObjectiveStep` with `LossHead.grpo`), every tensor the PyTorch golden holds written out.
import Foundation
import Model
import Datasets
import Training

extension DebugStep {
    /// Reads `input_ids` [B, T] (int32/int64), `prompt_lens` [B], `completion_mask` [B, R], `old_logps` [B, R] and
    /// `rewards` [B] from --batch; groups are --num-generations consecutive rows. Writes `loss` [1], `advantages` [B],
    /// `policy_logps`, `ref_logps` [B, R] (0 where completion_mask is 0), `grad_norm` [1] and every `grad.<name>`.
    /// - Throws: `InputError` naming the batch file and the offending tensor / element.
    func runGRPO(model m: MiniMindModel) throws {
        let f = try SafeTensorsFile(path: batch)
        let V = m.config.vocabSize
        let idsE = try f.entry("input_ids")
        guard idsE.shape.count == 2, idsE.shape[0] >= 1, idsE.shape[1] >= 2 else {
            throw InputError("\(batch): input_ids has shape \(idsE.shape), expected [B, T] with B ≥ 1, T ≥ 2") }
        let B = idsE.shape[0], T = idsE.shape[1]
        guard T <= m.config.maxPositionEmbeddings else {
            throw InputError("\(batch): T = \(T) is more than the model's max_position_embeddings \(m.config.maxPositionEmbeddings)") }
        let (cells, o1) = B.multipliedReportingOverflow(by: T), (logitCount, o2) = cells.multipliedReportingOverflow(by: V)
        guard !o1, !o2, logitCount <= 1 << 31 else {
            throw InputError("\(batch): input_ids shape [\(B), \(T)] × vocab \(V) gives more than 2^31 logits; use a smaller batch") }
        let maskE = try f.entry("completion_mask")
        guard maskE.shape.count == 2, maskE.shape[0] == B, maskE.shape[1] >= 1 else {
            throw InputError("\(batch): completion_mask has shape \(maskE.shape), expected [\(B), R]") }
        let R = maskE.shape[1]
        for (name, shape) in [("prompt_lens", [B]), ("old_logps", [B, R]), ("rewards", [B])] {
            let e = try f.entry(name)
            guard e.shape == shape else { throw InputError("\(batch): \(name) has shape \(e.shape), expected \(shape)") }
        }
        let G = numGenerations
        guard B % G == 0 else { throw InputError("\(batch): B = \(B) rows are not groups of --num-generations \(G)") }
        let ids = try f.int32s("input_ids"), promptLens = try f.int32s("prompt_lens").map(Int.init)
        let mask = try f.floats("completion_mask"), old = try f.floats("old_logps"), rewards = try f.floats("rewards")
        for (i, id) in ids.enumerated() where id < 0 || Int(id) >= V {
            throw InputError("\(batch): input_ids[\(i / T)][\(i % T)] = \(id) outside [0, \(V))") }
        for (b, p) in promptLens.enumerated() where p < 1 || p + R > T {
            throw InputError("\(batch): prompt_lens[\(b)] = \(p); needs 1 ≤ prompt_lens + R (\(R)) ≤ T (\(T))") }
        for (i, v) in mask.enumerated() where !(v == 0 || v == 1) {
            throw InputError("\(batch): completion_mask[\(i / R)][\(i % R)] = \(v); must be 0 or 1") }
        for (i, v) in old.enumerated() where !v.isFinite {
            throw InputError("\(batch): old_logps[\(i / R)][\(i % R)] = \(v) is not finite") }
        for (i, v) in rewards.enumerated() where !v.isFinite { throw InputError("\(batch): rewards[\(i)] = \(v) is not finite") }

        let refDir = reference!   // validate() requires it
        let ref = try MiniMindModel.load(directory: refDir, withGradients: false)
        if ref.config != m.config { throw InputError("\(refDir): reference config differs from the policy's (\(model))") }
        let adv = GRPOLoss.advantages(rewards: rewards, groupSize: G)
        let b = GRPOLoss.batch(inputIds: ids, rows: B, seqLen: T, promptLens: promptLens, completionSlots: R,
                               completionMask: mask, oldLogProbs: old, advantages: adv)
        let r = ObjectiveStep(model: m, head: .grpo(reference: ref, beta: beta, epsilon: epsilon)).runAlone(b)
        let terms = r.grpo!
        var w = SafeTensorsWriter()
        let loss = Float(r.loss) + Float(r.auxLoss)
        let gn = gradClip > 0 ? clipGradNorm(m.grads, maxNorm: gradClip) : gradNorm(UnsafeBufferPointer(m.grads))
        w.add("loss", shape: [1], floats: [loss])
        w.add("grad_norm", shape: [1], floats: [gn])
        w.add("advantages", shape: [B], floats: adv)
        w.add("policy_logps", shape: [B, R], floats: GRPOLoss.completionSlots(terms.policyLogProbs, rows: B, seqLen: T, promptLens: promptLens, completionSlots: R))
        w.add("ref_logps", shape: [B, R], floats: GRPOLoss.completionSlots(terms.refLogProbs, rows: B, seqLen: T, promptLens: promptLens, completionSlots: R))
        w.add("kl", shape: [1], floats: [Float(terms.kl)])
        if m.config.useMoe { w.add("aux_loss", shape: [1], floats: [Float(r.auxLoss)]) }
        for p in m.parameters { w.add("grad." + p.name, shape: p.shape, floats: UnsafeBufferPointer(rebasing: m.grads[p.range])) }
        try w.write(to: out)
        print("debug-step: grpo B=\(B) T=\(T) R=\(R) loss \(loss) grad_norm \(gn) clipped \(terms.clippedTokens)/\(terms.tokens) → \(out)")
    }
}
