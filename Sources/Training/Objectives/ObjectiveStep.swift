// One micro-step of a training objective: the frozen model's forward (DPO reference / distillation teacher), the
// trained model's forward, the loss head (dLoss/dlogits) and the backward. `TrainingLoop` runs it for every
// micro-batch of every stage; `trainer debug-step` runs it once on a given batch, so the PyTorch goldens test the code
// that trains.
import Model
import Datasets

/// The loss of a micro-batch, with the frozen model it needs.
public enum LossHead {
    /// Masked next-token cross-entropy over the step's masked positions (pretrain, SFT, reason, LoRA; MiniMind's
    /// `(loss * loss_mask).sum() / loss_mask.sum()`).
    case crossEntropy
    /// DPO (`DPOLoss`, MiniMind train_dpo.py `dpo_loss`) against a frozen reference, over the step's pairs; rows
    /// `[0, B/2)` of a micro-batch are chosen, `[B/2, B)` rejected.
    case dpo(reference: MiniMindModel, beta: Double)
    /// α·CE + (1−α)·T²·KL(teacher_T ‖ student_T) (`DistillLoss`, MiniMind train_distillation.py), both terms over the
    /// step's masked positions.
    case distill(teacher: MiniMindModel, alpha: Double, temperature: Double)
    /// GRPO's clipped-ratio loss with a k3 KL penalty to a frozen reference (`GRPOLoss`, MiniMind train_grpo.py),
    /// over the completion tokens (`loss_mask`), each row's masked mean averaged over the step's rows; reads the
    /// batch's `oldLogProbs` and `advantages`.
    case grpo(reference: MiniMindModel, beta: Double, epsilon: Double)
    /// Bradley–Terry reward-model loss (`RewardLoss`) on the model's scalar head `score.weight` (the model must have
    /// one, `MiniMindModel.scoreHead`), read at each row's last non-pad token, marked by the row's last `loss_mask` ≠ 0
    /// (`RewardPairDataset`); rows `[0, B/2)` chosen, `[B/2, B)` rejected. No LM head: the forward stops at the final
    /// norm (`forwardHidden`), and `inspectLogits` sees the final hidden states `[rows, seqLen, C]`.
    case reward

    /// Name of the per-step figure a stage reports beside the loss (DPO `preference_acc`, distill `ce`, reward
    /// `pair_acc`).
    public var extraMetric: String? {
        switch self {
        case .crossEntropy: return nil; case .dpo: return "preference_acc"; case .distill: return "ce"; case .grpo: return "kl"
        case .reward: return "pair_acc"
        }
    }

    /// True for the heads whose samples are chosen/rejected pairs (two rows per sample).
    var isPairwise: Bool {
        switch self { case .dpo, .reward: return true; default: return false }
    }
}

/// What one micro-step computed. Every term is this micro-batch's share of the step's value: divided by the step's
/// global normaliser (masked positions, or DPO pairs), so the shares of the micro-batches and ranks sum to the step's.
public struct ObjectiveLoss: Sendable {
    /// The objective's loss share, without the MoE load-balancing loss.
    public var loss: Double
    /// The cross-entropy term: the whole loss for `.crossEntropy`, the CE part for `.distill`; nil for `.dpo`.
    public var ce: Double?
    /// `.distill`: the T²·KL term.
    public var kl: Double?
    /// `.dpo`: preferred pairs (policy-vs-reference margin > 0) over the step's pairs; `.reward`: pairs with
    /// r_chosen > r_rejected over the step's pairs.
    public var preferenceAcc: Double?
    /// `.reward`: this micro-batch's rewards `[rows]` (chosen rows, then rejected rows).
    public var rewards: [Float]?
    /// The MoE load-balancing loss of this forward (`MiniMindModel.lastAuxLoss`, summed over layers, unscaled; 0 for a
    /// dense model). Its gradient, scaled by `model.auxLossScale`, is in the backward.
    public var auxLoss: Double
    /// `.grpo`: the terms of this micro-batch.
    public var grpo: GRPOTerms? = nil

    /// The value of `LossHead.extraMetric` (0 when the head has none).
    var extra: Double {
        if let a = preferenceAcc { return a }
        if let g = grpo { return g.kl }
        if kl != nil, let ce { return ce }
        return 0
    }
}

/// What a GRPO micro-step computed beside its loss share.
public struct GRPOTerms: Sendable {
    /// Σ over rows of the row's masked mean k3 KL (exp(ref − logp) − (ref − logp) − 1) and of ref − logp, divided by
    /// the step's rows (this micro-batch's share of the step's mean).
    public var kl: Double, klRef: Double
    /// Counted tokens, and those of them whose ratio was clipped (A ≠ 0, `min` took the clamped term).
    public var tokens: Int, clippedTokens: Int
    /// Per-position log-probs `[rows, T]` of the policy and the reference (0 where `loss_mask` is 0).
    public var policyLogProbs: [Float], refLogProbs: [Float]
}

/// Forward, loss and backward of one micro-batch through a model and a `LossHead`: the code every training stage runs
/// for each micro-batch (`TrainingLoop`) and `trainer debug-step` runs on its batch.
public final class ObjectiveStep {
    /// The trained model (the policy / student; for LoRA the frozen base carrying the adapters).
    public let model: MiniMindModel
    public let head: LossHead

    public init(model: MiniMindModel, head: LossHead) {
        self.model = model
        self.head = head
    }

    /// One micro-batch of a step: the frozen model's forward first (the loss reads its output after the trained
    /// model's forward), then `model.forward`, the loss head writing dLoss/dlogits into the logits buffer, and
    /// `model.backward`, which ADDS to the gradients (the caller zeroes them once per optimizer step).
    /// - Parameters:
    ///   - b: `input_ids`, `labels`, `loss_mask`, each `[rows, seqLen]` (DPO: chosen rows then rejected rows).
    ///   - norms: the step's global normalisers (Σ over its micro-batches and ranks).
    ///   - inspectLogits: called with the logits `[rows, seqLen, V]` before the loss overwrites them.
    ///   - afterLoss: called between the loss head and the backward (`trainer bench` times the parts with it).
    ///   - onGradientsReady: forwarded to `model.backward` (bucketed all-reduce overlapping the backward).
    func run(_ b: Batch, rows: Int, seqLen T: Int, norms: LossNormalisers,
             inspectLogits: ((UnsafeBufferPointer<Float>) -> Void)? = nil, afterLoss: (() -> Void)? = nil,
             onGradientsReady: ((Range<Int>) -> Void)? = nil) -> ObjectiveLoss {
        let V = model.config.vocabSize
        var refLP: [Double] = []
        var teacherLogits: UnsafeMutableBufferPointer<Float>?
        var refTokenLP: [Float] = []
        switch head {
        case .grpo(let r, _, _):
            let rl = b.inputIds.withUnsafeBufferPointer { r.forward(inputIds: $0, batchSize: rows, seqLen: T) }
            refTokenLP = b.labels.withUnsafeBufferPointer { l in b.lossMask.withUnsafeBufferPointer { mk in
                GRPOLoss.tokenLogProbs(logits: UnsafeBufferPointer(rl), labels: l, mask: mk, rows: rows, seqLen: T, vocabSize: V) } }
        case .dpo(let r, _):
            let rl = b.inputIds.withUnsafeBufferPointer { r.forward(inputIds: $0, batchSize: rows, seqLen: T) }
            refLP = b.labels.withUnsafeBufferPointer { l in b.lossMask.withUnsafeBufferPointer { mk in
                DPOLoss.sequenceLogProbs(logits: UnsafeBufferPointer(rl), labels: l, mask: mk, rows: rows, seqLen: T, vocabSize: V) } }
        case .distill(let t, _, _):
            teacherLogits = b.inputIds.withUnsafeBufferPointer { t.forward(inputIds: $0, batchSize: rows, seqLen: T) }
        case .crossEntropy: break
        case .reward:
            return runReward(b, rows: rows, seqLen: T, pairs: norms.samples, inspectHidden: inspectLogits, afterLoss: afterLoss,
                             onGradientsReady: onGradientsReady)
        }
        let logits = b.inputIds.withUnsafeBufferPointer { model.forward(inputIds: $0, batchSize: rows, seqLen: T) }
        let aux = model.lastAuxLoss
        inspectLogits?(UnsafeBufferPointer(logits))
        let maskNorm = norms.maskSum, pairNorm = norms.samples, rowNorm = norms.rows
        let result: ObjectiveLoss = b.labels.withUnsafeBufferPointer { y in
            b.lossMask.withUnsafeBufferPointer { mk in
                switch head {
                case .grpo(_, let beta, let epsilon):
                    precondition((b.oldLogProbs.isEmpty || b.oldLogProbs.count == rows * T) && b.advantages.count == rows,
                                 "grpo: the batch needs advantages [rows] and oldLogProbs [rows, T] or none (on-policy)")
                    let r = b.oldLogProbs.withUnsafeBufferPointer { old in refTokenLP.withUnsafeBufferPointer { ref in
                        b.advantages.withUnsafeBufferPointer { adv in
                            GRPOLoss.forwardBackward(logits: logits, labels: y, mask: mk, oldLogProbs: old, refLogProbs: ref,
                                                     advantages: adv, rows: rows, seqLen: T, vocabSize: V, beta: beta,
                                                     epsilon: epsilon, normalizer: rowNorm) } } }
                    let terms = GRPOTerms(kl: r.klSum / rowNorm, klRef: r.klRefSum / rowNorm, tokens: r.tokens,
                                          clippedTokens: r.clippedTokens, policyLogProbs: r.policyLogProbs, refLogProbs: refTokenLP)
                    return ObjectiveLoss(loss: r.lossSum / rowNorm, auxLoss: aux, grpo: terms)
                case .dpo(_, let beta):
                    let r = DPOLoss.forwardBackward(logits: logits, labels: y, mask: mk, referenceLogProbs: refLP, rows: rows, seqLen: T,
                                                    vocabSize: V, beta: beta, normalizer: pairNorm)
                    return ObjectiveLoss(loss: r.lossSum / pairNorm, preferenceAcc: Double(r.preferred) / pairNorm, auxLoss: aux)
                case .distill(_, let alpha, let temperature):
                    // KL is summed over the masked positions (MiniMind: F.kl_div(…, reduction="batchmean") over the rows
                    // where loss_mask == 1), so it shares CE's normaliser, the count of masked positions.
                    let r = DistillLoss.forwardBackward(student: logits, teacher: UnsafeBufferPointer(teacherLogits!), labels: y, mask: mk,
                                                        vocabSize: V, alpha: alpha, temperature: temperature,
                                                        ceNormalizer: maskNorm, klNormalizer: maskNorm)
                    let loss = alpha * r.ceSum / maskNorm + (1 - alpha) * temperature * temperature * r.klSum / maskNorm
                    return ObjectiveLoss(loss: loss, ce: r.ceSum / maskNorm, kl: temperature * temperature * r.klSum / maskNorm, auxLoss: aux)
                case .reward:
                    preconditionFailure("reward runs in runReward")
                case .crossEntropy:
                    let ce = CrossEntropy.forwardBackward(logits: logits, labels: y, lossMask: mk, vocabSize: V,
                                                          normalizer: Float(maskNorm)) / maskNorm
                    return ObjectiveLoss(loss: ce, ce: ce, auxLoss: aux)
                }
            }
        }
        afterLoss?()
        model.backward(dLogits: logits, onGradientsReady: onGradientsReady)
        return result
    }

    /// `.reward`'s micro-step: `forwardHidden`, `RewardLoss` (dLoss/dhidden at each row's last token, dLoss/dscore
    /// added to the score head's gradient), `backward(dHidden:)`.
    private func runReward(_ b: Batch, rows: Int, seqLen T: Int, pairs: Double,
                           inspectHidden: ((UnsafeBufferPointer<Float>) -> Void)?, afterLoss: (() -> Void)?,
                           onGradientsReady: ((Range<Int>) -> Void)?) -> ObjectiveLoss {
        guard let head = model.scoreHead else { preconditionFailure("reward objective on a model without score.weight") }
        let C = model.config.hiddenSize
        let hidden = b.inputIds.withUnsafeBufferPointer { model.forwardHidden(inputIds: $0, batchSize: rows, seqLen: T) }
        let aux = model.lastAuxLoss
        inspectHidden?(UnsafeBufferPointer(hidden))
        let last = RewardLoss.lastIndices(lossMask: b.lossMask, rows: rows, seqLen: T)
        let r = RewardLoss.forwardBackward(hidden: hidden, lastIndex: last, score: UnsafeBufferPointer(rebasing: model.params[head.range]),
                                           scoreGrad: UnsafeMutableBufferPointer(rebasing: model.grads[head.range]),
                                           rows: rows, seqLen: T, hiddenSize: C, normalizer: pairs)
        afterLoss?()
        model.backward(dHidden: hidden, onGradientsReady: onGradientsReady)
        return ObjectiveLoss(loss: r.lossSum / pairs, preferenceAcc: Double(r.correct) / pairs, rewards: r.rewards, auxLoss: aux)
    }

    /// A whole optimizer step's forward, loss and backward on one batch, as a one-rank run with one micro-batch of it
    /// would compute them (`trainer debug-step`): gradients zeroed first, then `run` with this batch's normalisers —
    /// `loss_mask` positions ≠ 0 (`Batch.maskCount`) for CE / KL, the batch's samples (`rows / 2` pairs) for DPO and
    /// the reward model, and its rows for GRPO.
    /// The model's `auxLossScale` is left as it is (1 for a freshly loaded model, as one micro-batch on one rank).
    /// - Parameters:
    ///   - b: `input_ids`, `labels`, `loss_mask`, each `[rows, seqLen]`, `b.maskCount` = positions with mask ≠ 0.
    ///   - inspectLogits: called with the logits `[rows, seqLen, V]` before the loss overwrites them.
    ///   - afterLoss: called between the loss head and the backward.
    /// - Returns: the loss and its parts; the gradients are in `model.grads` (or the attached adapters' `grads`).
    public func runAlone(_ b: Batch, inspectLogits: ((UnsafeBufferPointer<Float>) -> Void)? = nil,
                         afterLoss: (() -> Void)? = nil) -> ObjectiveLoss {
        var samples = Double(b.batchSize)
        if head.isPairwise { samples = Double(b.batchSize / 2) }
        let norms = LossNormalisers(maskSum: max(Double(b.maskCount), 1), samples: max(samples, 1), rows: Double(max(b.batchSize, 1)))
        model.zeroGrad()
        return run(b, rows: b.batchSize, seqLen: b.seqLen, norms: norms, inspectLogits: inspectLogits, afterLoss: afterLoss)
    }
}

extension LoRAAdapters {
    /// Makes these adapters the trained parameters of `model`: attached (`model.lora`) with the base frozen (no base
    /// weight gradients), as `trainer lora` and `trainer debug-step --objective lora` train them.
    public func attachForTraining(to model: MiniMindModel) {
        model.lora = self
        model.frozenBase = true
    }
}
