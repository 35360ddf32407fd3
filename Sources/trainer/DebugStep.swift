// `trainer debug-step`: one forward/backward (and optionally one AdamW step) on a given batch, every tensor dumped.
import ArgumentParser
import Foundation
import Model
import Datasets
import Training

struct DebugStep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "debug-step",
        abstract: "One training step on a batch; writes logits, loss, every grad.<name>, grad_norm and after_step.<name>.",
        discussion: """
        Reads input_ids and labels (int32 or int64, [B, T]) and an optional float loss_mask [B, T] from --batch.
        The step runs through the training objectives' code (forward, loss head, backward: the micro-step every
        training stage runs), as a one-rank run with this batch as its only micro-batch.
        Writes logits [B, T, V], loss [1] (lm: Σ CE·mask / (positions with mask ≠ 0), the training normaliser, = Σ mask
        for a 0/1 mask), grad.<name> for every parameter as the optimizer
        sees it (after clipping to --grad-clip, default 1.0 as MiniMind; 0 disables clipping), grad_norm [1] (before
        clipping) and, when --lr is given, after_step.<name> after clipping and one AdamW step.
        --objective dpo: rows [0, B/2) chosen, [B/2, B) rejected, --reference DIR (frozen), --beta; loss = MiniMind's dpo_loss.
        --objective lora: rank --lora-rank adapters on every square Linear (starting from --lora FILE when given; names
        <module>.lora.A.weight, optionally prefixed "lora."), base frozen; writes grad.<module>.lora.{A,B}.weight.
        With another objective, --lora FILE is merged into --model first, as every command's --lora; an adapter that
        --model's merges.json lists as merged is refused either way.
        --objective distill: --teacher DIR, --alpha, --temperature; writes ce and kl (= T²·KL over the masked
        positions) beside loss.
        --objective grpo: --reference DIR (frozen), --beta, --epsilon, --num-generations; the batch holds input_ids
        [B, T] (prompt, R completion slots, right padding), prompt_lens [B], completion_mask [B, R], old_logps [B, R],
        rewards [B]; writes loss (MiniMind train_grpo.py's clipped-ratio loss), advantages, policy_logps, ref_logps,
        kl and the policy's grad.<name>.
        --objective reward: --model is a reward model (score.weight); --batch holds input_ids [2P, T] (rows [0, P)
        chosen, [P, 2P) rejected) and last_index [2P] (the position the head reads); writes rewards [2P], loss
        (−mean log σ(r_chosen − r_rejected)), grad.<name> (score.weight included) and grad_norm; no logits.
        On a MoE model (use_moe in config.json) the load-balancing loss (summed over layers) is added to the loss as
        MiniMind does, its gradient included; aux_loss is written, and ce (= the objective without aux) for lm/lora.
        """)

    @Option(help: "Model directory (config.json + model.safetensors).") var model: String
    @Option(help: "Batch safetensors file.") var batch: String
    @Option(help: "Output safetensors file.") var out: String
    @Option(parsing: .unconditional, help: "AdamW learning rate; when given, one step is taken and after_step.<name> written.") var lr: Float?
    @Option(parsing: .unconditional) var beta1: Float = 0.9
    @Option(parsing: .unconditional) var beta2: Float = 0.999
    @Option(parsing: .unconditional) var eps: Float = 1e-8
    @Option(name: .customLong("weight-decay"), parsing: .unconditional) var weightDecay: Float = 0.01
    @Option(name: .customLong("grad-clip"), parsing: .unconditional, help: "Max global gradient norm (0 = no clipping).") var gradClip: Float = 1.0
    @Option(parsing: .unconditional, help: "OpenBLAS threads.") var threads: Int?
    @Option(name: .customLong("dtype"), help: ArgumentHelp("bfloat16 or float32 (default float32 here on every CPU, so the fp32 goldens hold): the products' precision, as the training commands' --dtype.", valueName: "dtype")) var dtype: String = "float32"
    @Option(help: "Loss head: lm | dpo | lora | distill | grpo | reward.") var objective: String = "lm"
    @Option(help: "dpo, grpo: reference model directory.") var reference: String?
    @Option(parsing: .unconditional, help: "dpo: β; grpo: KL weight β.") var beta: Double = 0.1
    @Option(help: "lora: adapter safetensors to start from; other objectives: an adapter merged into --model.") var lora: String?
    @Option(name: .customLong("lora-rank"), parsing: .unconditional, help: "lora: adapter rank.") var loraRank: Int = 8
    @Option(help: "distill: teacher model directory.") var teacher: String?
    @Option(parsing: .unconditional, help: "distill: weight of the CE term.") var alpha: Double = 0.5
    @Option(parsing: .unconditional, help: "distill: softmax temperature.") var temperature: Double = 2.0
    @Option(parsing: .unconditional, help: "grpo: clip range ε of the ratio.") var epsilon: Double = 0.2
    @Option(name: .customLong("num-generations"), parsing: .unconditional, help: "grpo: rows per prompt group.") var numGenerations: Int = 1

    func validate() throws {
        func finite(_ v: Double, _ name: String, _ ok: (Double) -> Bool, _ range: String) throws {
            guard v.isFinite, ok(v) else { throw ValidationError("--\(name) must be \(range) (got \(v))") }
        }
        if let lr { try finite(Double(lr), "lr", { $0 >= 0 }, "a finite number ≥ 0") }
        try finite(Double(beta1), "beta1", { $0 >= 0 && $0 < 1 }, "in [0, 1)")
        try finite(Double(beta2), "beta2", { $0 >= 0 && $0 < 1 }, "in [0, 1)")
        try finite(Double(eps), "eps", { $0 > 0 }, "a finite number > 0")
        try finite(Double(weightDecay), "weight-decay", { $0 >= 0 }, "a finite number ≥ 0")
        try finite(Double(gradClip), "grad-clip", { $0 >= 0 }, "a finite number ≥ 0 (0 = no clipping)")
        try finite(beta, "beta", { $0 > 0 }, "a finite number > 0")
        try finite(alpha, "alpha", { $0 >= 0 && $0 <= 1 }, "in [0, 1]")
        try finite(temperature, "temperature", { $0 > 0 }, "a finite number > 0")
        if let threads, !(1...OpenBLASRuntime.maxThreads).contains(threads) {
            throw ValidationError("--threads must be in 1…\(OpenBLASRuntime.maxThreads) (got \(threads))") }
        if loraRank < 1 { throw ValidationError("--lora-rank must be ≥ 1 (got \(loraRank))") }
        _ = try ComputeDTypeOption.parse(dtype as String?)
        switch objective {
        case "lm", "lora", "reward": break
        case "dpo": if reference == nil { throw ValidationError("--objective dpo needs --reference DIR") }
        case "distill": if teacher == nil { throw ValidationError("--objective distill needs --teacher DIR") }
        case "grpo":
            if reference == nil { throw ValidationError("--objective grpo needs --reference DIR") }
            if lr != nil { throw ValidationError("--lr is not supported with --objective grpo (the golden holds raw gradients)") }
            try finite(epsilon, "epsilon", { $0 > 0 && $0 < 1 }, "in (0, 1)")
            if numGenerations < 1 { throw ValidationError("--num-generations must be ≥ 1 (got \(numGenerations))") }
        default: throw ValidationError("--objective must be lm, dpo, lora, distill, grpo or reward (got \(objective))")
        }
    }

    func run() throws {
        OpenBLASRuntime.setThreads(threads)
        let m = try MiniMindModel.load(directory: model)
        if let f = lora, objective != "lora" { try m.mergeLoRA(path: f, modelDirectory: model) }
        let dt = try ComputeDTypeOption.parse(dtype as String?)
        if dt == .bfloat16 && m.config.useMoe { throw InputError("\(model): --dtype bfloat16 is not implemented for MoE models; use --dtype float32") }
        m.matmulDType = dt
        if objective == "grpo" { return try runGRPO(model: m) }
        if objective == "reward" { return try runReward(m) }   // DebugStepReward.swift
        let f = try SafeTensorsFile(path: batch)
        let idsE = try f.entry("input_ids"), labE = try f.entry("labels")
        guard idsE.shape.count == 2 else { throw InputError("\(batch): input_ids has shape \(idsE.shape), expected [B, T]") }
        guard labE.shape == idsE.shape else { throw InputError("\(batch): labels shape \(labE.shape) != input_ids shape \(idsE.shape)") }
        let B = idsE.shape[0], T = idsE.shape[1], V = m.config.vocabSize
        guard B >= 1, T >= 1 else { throw InputError("\(batch): input_ids has shape \(idsE.shape); B and T must be ≥ 1") }
        // Logits [B, T, V] and the activations scale with B·T: an absurd shape is an error, not a huge allocation.
        let (cells, o1) = B.multipliedReportingOverflow(by: T), (logitCount, o2) = cells.multipliedReportingOverflow(by: V)
        guard !o1, !o2, logitCount <= 1 << 31 else {
            throw InputError("\(batch): input_ids shape [\(B), \(T)] × vocab \(V) gives more than 2^31 logits; use a smaller batch") }
        guard T <= m.config.maxPositionEmbeddings else {
            throw InputError("\(batch): T = \(T) is more than the model's max_position_embeddings \(m.config.maxPositionEmbeddings)") }
        let ids = try f.int32s("input_ids"), labels = try f.int32s("labels")
        var mask = [Float](repeating: 1, count: B * T)
        if let e = f.entries["loss_mask"] {
            guard e.shape == idsE.shape else { throw InputError("\(batch): loss_mask shape \(e.shape) != [\(B), \(T)]") }
            mask = try f.floats("loss_mask")
            for (i, v) in mask.enumerated() where !(v.isFinite && v >= 0) {
                throw InputError("\(batch): loss_mask[\(i / T)][\(i % T)] = \(v); mask values must be finite and ≥ 0") }
        }
        for (i, id) in ids.enumerated() where id < 0 || Int(id) >= V {
            throw InputError("\(batch): input_ids[\(i / T)][\(i % T)] = \(id) outside [0, \(V))") }
        for (i, l) in labels.enumerated() where mask[i] != 0 && (l < 0 || Int(l) >= V) {
            throw InputError("\(batch): labels[\(i / T)][\(i % T)] = \(l) outside [0, \(V)) where loss_mask is \(mask[i])") }
        let norm = mask.reduce(0, +)
        guard norm.isFinite else { throw InputError("\(batch): loss_mask sums to \(norm) (too large for Float)") }
        guard norm > 0 else { throw InputError("\(batch): loss_mask is all zero") }

        var batchIn = Batch(batchSize: B, seqLen: T)
        batchIn.inputIds = ids; batchIn.labels = labels; batchIn.lossMask = mask
        batchIn.maskCount = mask.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }

        // The model and the loss head, set up as the training stage sets them up; then one micro-step through the
        // training objectives' code (`ObjectiveStep`), as a one-rank run with one micro-batch of this batch.
        var adapters: LoRAAdapters?
        let head: LossHead
        switch objective {
        case "lm", "lora":
            head = .crossEntropy
            if objective == "lora" {
                let a: LoRAAdapters
                if let f = lora {
                    try LoRAMergeRecord.refuseMerged(adapter: f, directory: model)
                    a = try LoRAAdapters.read(path: f, config: m.config)
                } else {
                    a = try LoRAAdapters(config: m.config, rank: loraRank)
                }
                a.attachForTraining(to: m); adapters = a
            }
        case "dpo":
            let refDir = reference!   // validate() requires it
            guard B % 2 == 0 else { throw InputError("\(batch): dpo needs an even B (chosen rows then rejected rows), got \(B)") }
            let ref = try MiniMindModel.load(directory: refDir, withGradients: false)
            if ref.config != m.config { throw InputError("\(refDir): reference config differs from the policy's (\(model))") }
            head = .dpo(reference: ref, beta: beta)
        case "distill":
            let tDir = teacher!   // validate() requires it
            let t = try MiniMindModel.load(directory: tDir, withGradients: false)
            guard t.config.vocabSize == V else { throw InputError("\(tDir): teacher vocab \(t.config.vocabSize) != student vocab \(V)") }
            head = .distill(teacher: t, alpha: alpha, temperature: temperature)
        default:
            throw ValidationError("--objective must be lm, dpo, lora, distill or reward (got \(objective))")
        }
        var w = SafeTensorsWriter()
        let r = ObjectiveStep(model: m, head: head).runAlone(batchIn) { w.add("logits", shape: [B, T, V], floats: $0) }
        if case .distill = head {
            w.add("ce", shape: [1], floats: [Float(r.ce!)])
            w.add("kl", shape: [1], floats: [Float(r.kl!)])
        }
        if m.config.useMoe {
            if let ce = r.ce, case .crossEntropy = head { w.add("ce", shape: [1], floats: [Float(ce)]) }
            w.add("aux_loss", shape: [1], floats: [Float(r.auxLoss)])
        }
        let loss = Float(r.loss) + Float(r.auxLoss)
        let G = adapters?.grads ?? m.grads
        let gn = gradClip > 0 ? clipGradNorm(G, maxNorm: gradClip) : gradNorm(UnsafeBufferPointer(G))
        w.add("loss", shape: [1], floats: [loss])
        w.add("grad_norm", shape: [1], floats: [gn])
        if let a = adapters {
            for t in a.tensors { w.add("grad." + t.name, shape: t.shape, floats: UnsafeBufferPointer(rebasing: a.grads[t.range])) }
        } else {
            for p in m.parameters { w.add("grad." + p.name, shape: p.shape, floats: UnsafeBufferPointer(rebasing: m.grads[p.range])) }
        }
        if let lr, adapters == nil {
            let opt = AdamW(count: m.numParameters, beta1: beta1, beta2: beta2, eps: eps, weightDecay: weightDecay)
            opt.step(params: m.params, grads: UnsafeBufferPointer(m.grads), lr: lr)
            for p in m.parameters { w.add("after_step." + p.name, shape: p.shape, floats: UnsafeBufferPointer(rebasing: m.params[p.range])) }
        }
        try w.write(to: out)
        print("debug-step: B=\(B) T=\(T) loss \(loss) grad_norm \(gn)\(lr.map { " (AdamW step lr \($0))" } ?? "") → \(out)")
    }
}
