// The data-parallel post-training loop: a stage = dataset + loss head + which parameters train. Same sampler, reducer,
// checkpoints, --resume and metrics as `Pretrainer` (MiniMind train_full_sft / train_lora / train_dpo /
// train_distill_reason / train_distillation semantics).
import Foundation
import Logging
import Model
import Datasets
import Tokenizers
import SwiftMindDistributed

/// The post-training stages.
public enum Stage: String, Codable, Sendable, CaseIterable {
    case sft, lora, dpo, reason, distill
}

/// Options of `trainer sft|lora|dpo|reason|distill` (MiniMind's names; defaults per stage from `defaults(for:)`).
public struct StageOptions: Codable, Sendable {
    public var stage: Stage
    public var outDir = "out"
    public var dataPath = ""
    /// Tokenizer file or directory; nil = the --init directory.
    public var tokenizer: String? = nil
    /// Model directory to start from (the policy / student / LoRA base). nil = random init with hiddenSize/numHiddenLayers.
    public var initDir: String? = nil
    public var epochs = 2
    public var batchSize = 16
    public var learningRate = 5e-7
    public var accumulationSteps = 1
    public var gradClip = 1.0
    public var maxSeqLen = 512
    public var hiddenSize = 512
    public var numHiddenLayers = 8
    public var logInterval = 100
    public var saveInterval = 100
    public var seed: UInt64 = 1337
    public var maxSteps: Int? = nil
    public var resume = false
    public var keepCheckpoints = 2
    public var bucketCapMB = 25.0
    public var threads = ProcessInfo.processInfo.activeProcessorCount
    public var weightDecay = 0.01
    // dpo
    public var reference: String? = nil
    public var beta = 0.1
    // lora
    public var loraRank = 8
    // reason
    public var reasonWeight = 10.0
    // distill
    public var teacher: String? = nil
    public var alpha = 0.5
    public var temperature = 2.0
    /// MoE fields for a random init (`--use-moe` …); with --init the model's config.json decides (`--use-moe` then
    /// requires a MoE model). The aux loss is added to every stage's loss, as MiniMind.
    public var moe = MoESettings()

    /// MiniMind's defaults: SFT lr 5e-7, 2 epochs, batch 16, seq 512; LoRA lr 1e-4, 10 epochs, batch 32;
    /// DPO lr 1e-8, 2 epochs, batch 4, seq 1024, β 0.1; reason lr 1e-6, seq 1024; distill lr 5e-6, seq 512.
    public static func defaults(for stage: Stage) -> StageOptions {
        var o = StageOptions(stage: stage)
        switch stage {
        case .sft: o.learningRate = 5e-7; o.epochs = 2; o.batchSize = 16; o.maxSeqLen = 512
        case .lora: o.learningRate = 1e-4; o.epochs = 10; o.batchSize = 32; o.maxSeqLen = 512
        case .dpo: o.learningRate = 1e-8; o.epochs = 2; o.batchSize = 4; o.maxSeqLen = 1024
        case .reason: o.learningRate = 1e-6; o.epochs = 1; o.batchSize = 8; o.maxSeqLen = 1024
        case .distill: o.learningRate = 5e-6; o.epochs = 6; o.batchSize = 32; o.maxSeqLen = 512
        }
        return o
    }

    public init(stage: Stage) { self.stage = stage }

    func validate() throws {
        func check(_ ok: Bool, _ m: String) throws { if !ok { throw TrainingError.invalidOption(m) } }
        try check(!dataPath.isEmpty, "--data-path is required")
        try check(epochs >= 1, "--epochs must be ≥ 1")
        try check(batchSize >= 1, "--batch-size must be ≥ 1")
        try check(accumulationSteps >= 1, "--accumulation-steps must be ≥ 1")
        try check(maxSeqLen >= 2, "--max-seq-len must be ≥ 2")
        try check(maxSeqLen <= 1 << 20, "--max-seq-len \(maxSeqLen) is too large (at most \(1 << 20))")
        try check(learningRate > 0, "--learning-rate must be > 0")
        try check(logInterval >= 1 && saveInterval >= 1, "--log-interval and --save-interval must be ≥ 1")
        try check(maxSteps == nil || maxSteps! >= 1, "--max-steps must be ≥ 1")
        try check(tokenizer != nil || initDir != nil, "--tokenizer is required without --init")
        if stage == .lora { try check(initDir != nil, "lora needs --init DIR (the frozen base)"); try check(loraRank >= 1, "--lora-rank must be ≥ 1") }
        if stage == .dpo { try check(reference != nil || initDir != nil, "dpo needs --init DIR (and optionally --reference DIR)") }
        if stage == .distill {
            try check(teacher != nil, "distill needs --teacher DIR")
            try check(alpha >= 0 && alpha <= 1, "--alpha must be in [0, 1]")
            try check(temperature > 0, "--temperature must be > 0")
        }
    }
}

public final class StageTrainer {
    public let options: StageOptions
    public let comm: Communicator
    public var logger: Logger
    var rank: Int { comm.rank }
    var world: Int { comm.size }

    public init(options: StageOptions, communicator: Communicator, logger: Logger = Logger(label: "swiftmind.stage")) {
        self.options = options
        self.comm = communicator
        self.logger = logger
    }

    /// Name of the adapter file in an output / checkpoint directory.
    public static let adapterFile = "lora.safetensors"

    @discardableResult
    public func run() throws -> PretrainSummary {
        let o = options
        try o.validate()
        if rank == 0 { try Checkpoints.prepareOutDir(o.outDir, resume: o.resume) }
        let tokPath = o.tokenizer ?? o.initDir!
        let tok = try Tokenizer.load(tokPath)

        // Data.
        let dataset: BatchDataset
        switch o.stage {
        case .dpo: dataset = try DPODataset(path: o.dataPath, tokenizer: tok, maxLength: o.maxSeqLen, threads: o.threads)
        case .reason:
            dataset = try SFTDataset(path: o.dataPath, tokenizer: tok, maxLength: o.maxSeqLen, threads: o.threads,
                                     reasonWeighting: ReasonTagWeighting(tokenizer: tok, weight: Float(o.reasonWeight)))
        default: dataset = try SFTDataset(path: o.dataPath, tokenizer: tok, maxLength: o.maxSeqLen, threads: o.threads)
        }
        let T = dataset.seqLen, B = o.batchSize, acc = o.accumulationSteps
        let rowsPerBatch = dataset.rows(forSamples: B)
        let perRankPerStep = B * acc
        let globalPerStep = perRankPerStep * world

        // Models.
        let model: MiniMindModel
        if let d = o.initDir { model = try MiniMindModel.load(directory: d) } else {
            var c = ModelConfig(hiddenSize: o.hiddenSize, numHiddenLayers: o.numHiddenLayers, vocabSize: tok.vocabSize,
                                maxPositionEmbeddings: 32768)
            o.moe.apply(to: &c)
            try c.validate(source: "\(o.stage) options")
            model = MiniMindModel(config: c, seed: o.seed)
        }
        let config = model.config
        try checkForwardSize(rows: rowsPerBatch, seqLen: T, config: config)
        if o.moe.useMoe && !config.useMoe { throw TrainingError.mismatch("--use-moe: \(o.initDir!)/config.json is a dense model") }
        model.auxLossScale = Float(1.0 / Double(acc * world))   // MiniMind: (loss + aux) / accumulation, averaged over ranks
        let V = config.vocabSize
        try config.checkTokenizer(vocabSize: tok.vocabSize, source: o.initDir ?? "\(o.stage) options")
        var adapters: LoRAAdapters?
        if o.stage == .lora {
            let a = try LoRAAdapters(config: config, rank: o.loraRank, seed: o.seed)
            model.lora = a; model.frozenBase = true; adapters = a
        }
        let reference = o.stage == .dpo ? try MiniMindModel.load(directory: o.reference ?? o.initDir!, withGradients: false) : nil
        let teacher = o.stage == .distill ? try MiniMindModel.load(directory: o.teacher!, withGradients: false) : nil
        if let r = reference, r.config != config { throw TrainingError.mismatch("\(o.reference ?? o.initDir!): reference config differs from the policy's") }
        if let t = teacher, t.config.vocabSize != V { throw TrainingError.mismatch("\(o.teacher!): teacher vocab \(t.config.vocabSize) != student vocab \(V)") }

        // Trainable parameters: the whole model, or only the adapters.
        let trainP = adapters?.params ?? model.params
        let trainG = adapters?.grads ?? model.grads
        let N = trainP.count
        let adam = AdamW(count: N, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: Float(o.weightDecay))

        // The data identity a checkpoint must match to be resumed, and everything the ranks must agree on.
        let src = try SourceIdentity.of(path: o.dataPath)
        let dataCanonical = "stage \(o.stage) data size \(src.size) hash \(src.sampledHash) samples \(dataset.count); tokenizer \(tok.fingerprint); seed \(o.seed)"
        var h = FNV1a64()
        let canonical = "\(dataCanonical) config \(config); data \(o.dataPath); epochs \(o.epochs) batch \(B) accumulation \(acc) max_seq_len \(o.maxSeqLen) max_steps \(o.maxSteps ?? -1) lr \(o.learningRate) seed \(o.seed) resume \(o.resume) out \(o.outDir) trainable \(N)"
        h.add(dataCanonical)
        let dataHash = h.hex
        try comm.checkSameOnAllRanks(canonical, what: "\(o.stage) configuration and data")

        // Resume (rank 0 reads, everything broadcast).
        var stateFields = [Int64](repeating: 0, count: 6)   // found, step, epoch, position, seen, adamStep
        var resumedFrom: String?
        if o.resume && rank == 0, let latest = Checkpoints.list(outDir: o.outDir).last {
            let st = try Checkpoints.readState(latest.path)
            guard st.dataHash == dataHash else {
                throw TrainingError.badCheckpoint(path: latest.path, reason: "it was trained on other data, tokenizer, seed or stage (data hash \(st.dataHash), now \(dataHash)); use another --out-dir to start afresh")
            }
            try Checkpoints.validate(st, dir: latest.path, datasetSize: dataset.count, epochs: o.epochs)
            if let a = adapters { try a.load(path: latest.path + "/" + Self.adapterFile) } else {
                let loaded = try MiniMindModel.load(directory: latest.path)
                guard loaded.config == config else { throw TrainingError.badCheckpoint(path: latest.path, reason: "its config.json differs from the model") }
                _ = model.params.update(fromContentsOf: UnsafeBufferPointer(loaded.params))
            }
            let opt = try Checkpoints.readOptimizer(latest.path, numParameters: N)
            _ = adam.m.update(fromContentsOf: opt.m); _ = adam.v.update(fromContentsOf: opt.v)
            stateFields = [1, Int64(st.step), Int64(st.epoch), Int64(st.samplePosition), Int64(st.globalSamplesSeen), Int64(opt.step)]
            resumedFrom = latest.path
        } else if o.resume && rank == 0 {
            logger.warning("--resume: no complete checkpoint in \(o.outDir), starting from step 0")
        }
        try stateFields.withUnsafeMutableBytes { try comm.broadcast($0, root: 0) }
        try comm.broadcast(UnsafeMutableRawBufferPointer(trainP), root: 0)
        if stateFields[0] == 1 {
            try comm.broadcast(UnsafeMutableRawBufferPointer(adam.m), root: 0)
            try comm.broadcast(UnsafeMutableRawBufferPointer(adam.v), root: 0)
            adam.stepCount = Int(stateFields[5])
        }
        var step = Int(stateFields[1]), epoch = Int(stateFields[2]), position = Int(stateFields[3])
        var seen = Int(stateFields[4])
        let remaining = Pretrainer.plannedSteps(datasetSize: dataset.count, epochs: o.epochs, fromEpoch: epoch, position: position,
                                                world: world, samplesPerRankPerStep: perRankPerStep)
        var totalSteps = step + remaining
        if let ms = o.maxSteps { totalSteps = min(totalSteps, ms) }
        if totalSteps <= step && step == 0 {
            throw TrainingError.invalidOption("\(o.dataPath): \(dataset.count) samples are fewer than one optimizer step needs (\(globalPerStep) = batch \(B) × accumulation \(acc) × world \(world))")
        }
        if rank == 0 {
            logger.info("\(o.stage): world \(world), model \(model.numParameters) parameters (hidden \(config.hiddenSize), \(config.numHiddenLayers) layers), trainable \(N), \(dataset.count) samples, batch \(B)×\(acc) per rank, \(globalPerStep) samples / step, \(totalSteps) steps\(resumedFrom.map { ", resumed from \($0) at step \(step)" } ?? "")")
        }

        let reducer = world > 1 ? GradientReducer(communicator: comm, gradients: trainG, bucketCapBytes: Int(o.bucketCapMB * 1_048_576)) : nil
        let metrics = rank == 0 ? try MetricsWriter(path: (o.outDir as NSString).appendingPathComponent("metrics.jsonl")) : nil
        let tokFiles = Pretrainer.tokenizerFiles(tokPath)
        let bar = rank == 0 ? ProgressBar(total: totalSteps) : ProgressBar(total: 0)
        let sampler = DistributedSampler(datasetSize: dataset.count, worldSize: world, rank: rank, seed: o.seed)

        var losses: [Double] = []
        var commWait = 0.0, stepTime = 0.0, tokensDone = 0.0
        var winLoss = 0.0, winSteps = 0, winTime = 0.0, winTokens = 0.0, winExtra = 0.0
        let runStart = Date()
        let startStep = step
        var localIdx: [Int] = []
        var localEpoch = -1, localStart = 0
        func saveState(_ name: String, full: Bool) throws -> String {
            let st = TrainerState(step: step, epoch: epoch, samplePosition: position, globalSamplesSeen: seen, totalSteps: totalSteps,
                                  rngSeed: o.seed, worldSize: world, batchSize: B, accumulationSteps: acc,
                                  learningRate: o.learningRate, maxSeqLen: o.maxSeqLen, dataHash: dataHash, lastLoss: losses.last)
            // LoRA: the (unchanged) base is written too so a checkpoint stays a loadable model directory.
            let p = try Checkpoints.write(name: name, outDir: o.outDir, model: model,
                                          optimizer: full ? OptimizerSnapshot(m: Array(adam.m), v: Array(adam.v), step: adam.stepCount) : nil,
                                          state: full ? st : nil, tokenizerFiles: tokFiles)
            if let a = adapters { try a.save(path: p + "/" + Self.adapterFile) }
            return p
        }

        while step < totalSteps {
            if localEpoch != epoch {
                localIdx = sampler.indices(epoch: epoch, startPosition: position)
                localEpoch = epoch; localStart = 0
            }
            if localIdx.count - localStart < perRankPerStep {
                epoch += 1; position = 0; localEpoch = -1
                if epoch >= o.epochs { break }
                continue
            }
            let t0 = Date()
            var batches: [Batch] = []
            var localMask = 0
            for m in 0 ..< acc {
                let s = localStart + m * B
                let b = dataset.batch(indices: localIdx[s ..< s + B])
                localMask += b.maskCount
                batches.append(b)
            }
            // Global normalisers: Σ mask (CE terms) and pairs (DPO).
            var counts = [Double(localMask), Double(perRankPerStep)]
            try counts.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
            let maskNorm = max(counts[0], 1), pairNorm = max(counts[1], 1)

            model.zeroGrad()
            var lossPart = 0.0, extraPart = 0.0, auxPart = 0.0   // extra: DPO preferred pairs / distill CE part
            var waited = 0.0
            for (m, b) in batches.enumerated() {
                let rows = rowsPerBatch
                var refLP: [Double] = []
                var teacherLogits: UnsafeMutableBufferPointer<Float>?
                if let r = reference {
                    let rl = b.inputIds.withUnsafeBufferPointer { r.forward(inputIds: $0, batchSize: rows, seqLen: T) }
                    refLP = b.labels.withUnsafeBufferPointer { l in b.lossMask.withUnsafeBufferPointer { mk in
                        DPOLoss.sequenceLogProbs(logits: UnsafeBufferPointer(rl), labels: l, mask: mk, rows: rows, seqLen: T, vocabSize: V) } }
                }
                if let t = teacher { teacherLogits = b.inputIds.withUnsafeBufferPointer { t.forward(inputIds: $0, batchSize: rows, seqLen: T) } }
                let logits = b.inputIds.withUnsafeBufferPointer { model.forward(inputIds: $0, batchSize: rows, seqLen: T) }
                auxPart += model.lastAuxLoss / Double(acc)
                b.labels.withUnsafeBufferPointer { y in
                    b.lossMask.withUnsafeBufferPointer { mk in
                        switch o.stage {
                        case .dpo:
                            let r = DPOLoss.forwardBackward(logits: logits, labels: y, mask: mk, referenceLogProbs: refLP, rows: rows, seqLen: T,
                                                            vocabSize: V, beta: o.beta, normalizer: pairNorm)
                            lossPart += r.lossSum / pairNorm
                            extraPart += Double(r.preferred) / pairNorm
                        case .distill:
                            let r = DistillLoss.forwardBackward(student: logits, teacher: UnsafeBufferPointer(teacherLogits!), labels: y, mask: mk,
                                                                vocabSize: V, alpha: o.alpha, temperature: o.temperature,
                                                                ceNormalizer: maskNorm, klNormalizer: maskNorm)
                            lossPart += o.alpha * r.ceSum / maskNorm + (1 - o.alpha) * o.temperature * o.temperature * r.klSum / maskNorm
                            extraPart += r.ceSum / maskNorm
                        default:
                            lossPart += CrossEntropy.forwardBackward(logits: logits, labels: y, lossMask: mk, vocabSize: V,
                                                                     normalizer: Float(maskNorm)) / maskNorm
                        }
                    }
                }
                if m == acc - 1, let r = reducer {
                    r.prepareForBackward()
                    if adapters != nil {
                        model.backward(dLogits: logits)
                        r.gradientsReady(0 ..< N)
                    } else {
                        model.backward(dLogits: logits, onGradientsReady: { r.gradientsReady($0) })
                    }
                    let w0 = Date()
                    try r.finish()
                    waited = Date().timeIntervalSince(w0)
                } else {
                    model.backward(dLogits: logits)
                }
            }
            var lossBuf = [lossPart, extraPart, auxPart]
            try lossBuf.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
            let aux = lossBuf[2] / Double(world)
            let loss = lossBuf[0] + aux, extra = lossBuf[1]
            let gradNorm = o.gradClip > 0 ? clipGradNorm(trainG, maxNorm: Float(o.gradClip)) : Model.gradNorm(UnsafeBufferPointer(trainG))
            // Every rank holds the same reduced loss and gradient norm, so all stop together; the optimizer has not
            // applied the step, and no checkpoint of these weights is written.
            guard loss.isFinite, gradNorm.isFinite else {
                let bad = loss.isFinite ? Double(gradNorm) : loss
                throw TrainingError.diverged("\(loss.isFinite ? "gradient norm" : "loss") became \(bad.isNaN ? "NaN" : "\(bad)") at step \(step + 1) (last finite loss \(losses.last.map { String($0) } ?? "none")); lower --learning-rate or resume from an earlier checkpoint")
            }
            let lr = cosineLR(step: step, totalSteps: totalSteps, baseLR: o.learningRate)
            adam.step(params: trainP, grads: UnsafeBufferPointer(trainG), lr: Float(lr))

            step += 1
            localStart += perRankPerStep
            position += globalPerStep
            seen += globalPerStep
            losses.append(loss)
            let dt = Date().timeIntervalSince(t0)
            let stepTokens = Double(globalPerStep * rowsPerBatch / B * T)
            stepTime += dt; commWait += waited; tokensDone += stepTokens
            winLoss += loss; winSteps += 1; winTime += dt; winTokens += stepTokens; winExtra += extra

            if rank == 0 {
                let elapsed = Date().timeIntervalSince(runStart)
                let eta = elapsed / Double(step - startStep) * Double(totalSteps - step)
                if step % o.logInterval == 0 || step == totalSteps {
                    let tps = winTokens / max(winTime, 1e-9)
                    bar.clear()
                    let extraName = o.stage == .dpo ? "preference_acc" : o.stage == .distill ? "ce" : ""
                    let extraText = extraName.isEmpty ? "" : String(format: " %@ %.4f", extraName, winExtra / Double(winSteps))
                    logger.info("\(String(format: "%@ step %d/%d epoch %d loss %.4f%@ lr %.3e grad_norm %.3f tokens/s %.0f ETA %@", o.stage.rawValue, step, totalSteps, epoch + 1, loss, extraText, lr, gradNorm, tps, formatDuration(eta)))")
                    var rec: [String: Any] = ["stage": o.stage.rawValue, "step": step, "epoch": epoch, "loss": loss,
                                              "loss_window_mean": winLoss / Double(winSteps), "lr": lr, "grad_norm": Double(gradNorm),
                                              "tokens_per_s": tps, "elapsed_s": elapsed, "eta_s": eta,
                                              "step_time_s": winTime / Double(winSteps), "world_size": world, "global_samples": seen]
                    if !extraName.isEmpty { rec[extraName] = winExtra / Double(winSteps) }
                    if config.useMoe { rec["aux_loss"] = aux; logger.info("\(String(format: "  aux_loss %.4f", aux))") }
                    try metrics?.append(rec)
                    winLoss = 0; winSteps = 0; winTime = 0; winTokens = 0; winExtra = 0
                }
                bar.draw(step: step, suffix: String(format: "loss %.4f  ETA %@", loss, formatDuration(eta)))
                if step % o.saveInterval == 0 || step == totalSteps {
                    let p = try saveState("\(Checkpoints.prefix)\(step)", full: true)
                    Checkpoints.prune(outDir: o.outDir, keep: o.keepCheckpoints)
                    bar.clear()
                    logger.info("checkpoint \(p)")
                }
            }
        }
        var finalDir: String?
        if rank == 0 {
            bar.finish()
            finalDir = try saveState("final", full: false)
            if let a = adapters { try a.save(path: (o.outDir as NSString).appendingPathComponent(Self.adapterFile)) }
            logger.info("\(String(format: "done: %d steps, final loss %.4f, %.0f tokens/s → %@", step, losses.last ?? .nan, tokensDone / max(stepTime, 1e-9), finalDir!))")
        }
        try comm.barrier()
        return PretrainSummary(steps: step, losses: losses, finalDirectory: finalDir,
                               tokensPerSecond: tokensDone / max(stepTime, 1e-9), commWaitSeconds: commWait, stepSeconds: stepTime)
    }
}
