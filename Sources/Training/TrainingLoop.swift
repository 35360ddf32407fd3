// The one data-parallel training loop of every stage (pretrain, sft, lora, dpo, reason, distill): DDP-style sampler,
// gradient accumulation, bucketed all-reduce, AdamW with MiniMind's cosine schedule, checkpoints, --resume, logs and
// metrics.jsonl. What a stage changes is a `TrainingObjective`: its data, its loss head (with any frozen reference or
// teacher model) and the parameter buffer that is optimised and all-reduced.
import Foundation
import Logging
import Model
import Datasets
import SwiftMindDistributed

/// Options every training stage has (MiniMind's names; the defaults are `trainer pretrain`'s, the post-training stages
/// override some in `TrainingOptions.defaults(for:)`, TrainingDefaults.swift).
public struct TrainingOptions: Codable, Sendable {
    public var outDir = "out"
    public var dataPath = "dataset/pretrain_hq.jsonl"
    public var epochs = 1
    /// Samples (DPO: pairs) per micro-batch per rank.
    public var batchSize = 32
    public var learningRate = 5e-4
    public var accumulationSteps = 8
    public var gradClip = 1.0
    public var maxSeqLen = 512
    /// Model shape of a random initialisation.
    public var hiddenSize = 512
    public var numHiddenLayers = 8
    public var logInterval = 100
    public var saveInterval = 100
    /// Seeds the initialisation and the per-epoch shuffle (seed + epoch).
    public var seed: UInt64 = 1337
    /// Stop after this many optimizer steps (the schedule spans them); nil = all epochs.
    public var maxSteps: Int? = nil
    public var resume = false
    public var keepCheckpoints = 2
    public var bucketCapMB = 25.0
    /// Tokenizer threads (rank 0 builds the cache).
    public var threads = ProcessInfo.processInfo.activeProcessorCount
    /// Token cache root; nil = `TokenCache.defaultCacheRoot`.
    public var cacheDir: String? = nil
    public var weightDecay = 0.01
    public var beta1 = 0.9
    public var beta2 = 0.999
    public var eps = 1e-8
    /// MoE fields of a randomly initialised model (`--use-moe` …); the aux loss is added to the loss, averaged like it.
    public var moe = MoESettings()
    public init() {}

    func validate() throws {
        func check(_ ok: Bool, _ m: String) throws { if !ok { throw TrainingError.invalidOption(m) } }
        try check(!dataPath.isEmpty, "--data-path is required")
        try check(epochs >= 1, "--epochs must be ≥ 1")
        try check(batchSize >= 1, "--batch-size must be ≥ 1")
        try check(accumulationSteps >= 1, "--accumulation-steps must be ≥ 1")
        try check(maxSeqLen >= 2, "--max-seq-len must be ≥ 2")
        try check(maxSeqLen <= 1 << 20, "--max-seq-len \(maxSeqLen) is too large (at most \(1 << 20))")
        try check(learningRate.isFinite && learningRate > 0, "--learning-rate must be a finite number > 0 (got \(learningRate))")
        try check(gradClip.isFinite && gradClip >= 0, "--grad-clip must be a finite number ≥ 0, 0 = no clipping (got \(gradClip))")
        try check(weightDecay.isFinite && weightDecay >= 0, "--weight-decay must be a finite number ≥ 0 (got \(weightDecay))")
        try check(hiddenSize >= 1, "--hidden-size must be ≥ 1 (got \(hiddenSize))")
        try check(numHiddenLayers >= 1, "--num-hidden-layers must be ≥ 1 (got \(numHiddenLayers))")
        try check(logInterval >= 1, "--log-interval must be ≥ 1")
        try check(saveInterval >= 1, "--save-interval must be ≥ 1")
        try check(maxSteps == nil || maxSteps! >= 1, "--max-steps must be ≥ 1")
        try check(keepCheckpoints >= 1, "--keep-checkpoints must be ≥ 1")
        try check(TrainingOptions.bucketCapRange.contains(bucketCapMB),
                  "--bucket-cap-mb must be in \(TrainingOptions.bucketCapRange.lowerBound)…\(Int(TrainingOptions.bucketCapRange.upperBound)) MB (got \(bucketCapMB))")
        try check(beta1.isFinite && beta1 >= 0 && beta1 < 1 && beta2.isFinite && beta2 >= 0 && beta2 < 1 && eps.isFinite && eps > 0,
                  "AdamW β1, β2 must be in [0, 1) and eps a finite number > 0 (got \(beta1), \(beta2), \(eps))")
        do { try moe.check() } catch { throw TrainingError.invalidOption("\(error)") }
    }

    /// Accepted `--bucket-cap-mb` (MB): below 0.01 MB a model of a few million parameters already needs thousands of
    /// all-reduces per step, each with a fixed cost; above 4096 MB a bucket would pass MPI's 2^31-element count limit.
    public static let bucketCapRange: ClosedRange<Double> = 0.01...4096
}

/// What a finished run reports.
public struct PretrainSummary: Sendable {
    public var steps: Int
    /// Loss of every step this process ran (a resumed run: only the steps after the checkpoint).
    public var losses: [Double]
    public var finalDirectory: String?
    public var tokensPerSecond: Double
    public var commWaitSeconds: Double
    public var stepSeconds: Double
    /// Σ time waiting in `GradientReducer.finish()` / Σ step time: communication that backward did not hide.
    public var unhiddenCommFraction: Double { stepSeconds > 0 ? commWaitSeconds / stepSeconds : 0 }
}

/// The global normalisers of one optimizer step (summed over its micro-batches and all ranks).
struct LossNormalisers {
    /// Σ loss_mask: token-level CE / KL terms are divided by it (MiniMind's masked mean over the global batch).
    var maskSum: Double
    /// Samples of the step (DPO: pairs): DPO's per-pair loss is divided by it.
    var samples: Double
}

/// How the loop reports a run: `pretrain`'s lines and metrics fields, or a post-training stage's (kept as they were
/// before the loops were merged, so logs and metrics.jsonl read the same).
enum RunReport {
    /// Adds comm_wait to the log lines and metrics, and the MoE CE / aux / tokens-per-expert details.
    case pretrain
    /// Prefixes the lines with the stage name, writes `"stage"` and the objective's extra metric.
    case stage(Stage)
}

/// A training objective: the model being trained, its data, the loss head and the parameters that are optimised.
/// Built before the loop starts (tokenizer, data and models loaded); the loop owns the schedule, the optimizer, the
/// all-reduce, checkpoints and reporting.
protocol TrainingObjective: AnyObject {
    var report: RunReport { get }
    /// The model the batches go through (the policy / student; for LoRA the frozen base carrying the adapters).
    var model: MiniMindModel { get }
    var dataset: BatchDataset { get }
    /// The optimised parameters and their gradients: `model.params`/`model.grads`, or only the LoRA adapters.
    var parameters: UnsafeMutableBufferPointer<Float> { get }
    var gradients: UnsafeMutableBufferPointer<Float> { get }
    /// True when `gradients` is `model.grads`, so all-reduce buckets start while backward still runs; otherwise the
    /// whole buffer is reduced after the last backward of the step.
    var overlapsBackward: Bool { get }
    /// The data identity a checkpoint must have been trained on to be resumed; its hash is trainer_state.json's
    /// `data_hash`, so the text must never change for a given stage, data, tokenizer and seed.
    var dataIdentity: String { get }
    /// Tokenizer file or directory copied into every checkpoint.
    var tokenizerPath: String { get }
    /// A chat template to write as chat_template.jinja into every checkpoint (the one the data was rendered with,
    /// when it is not the tokenizer's own); nil = the tokenizer's files as they are.
    var writtenChatTemplate: String? { get }
    /// The model part of the start line, e.g. `world 2, model 1234 parameters (…), `.
    func describe(world: Int) -> String
    /// Name and value of a stage-specific per-step figure (DPO `preference_acc`, distill `ce`), window-averaged.
    var extraMetric: String? { get }
    /// One micro-batch: runs the model (and any frozen reference / teacher) forward, computes this rank's share of the
    /// step's loss and writes dLoss/dlogits into the returned logits buffer (ready for `model.backward`).
    /// - Returns: `loss` (already divided by the global normaliser) and `extra` (the `extraMetric` share).
    func forwardLoss(_ batch: Batch, rows: Int, seqLen: Int, norms: LossNormalisers)
        -> (logits: UnsafeMutableBufferPointer<Float>, loss: Double, extra: Double)
    /// Rank 0 on --resume: loads the trainable weights of checkpoint `dir` into `parameters`.
    func loadWeights(checkpoint dir: String) throws
    /// After a checkpoint (or final/) directory was written: add the objective's own files (the LoRA adapter).
    func didWrite(directory: String) throws
    /// After the final directory was written: the objective's top-level outputs (OUT/lora.safetensors).
    func didFinish(outDir: String) throws
}

extension TrainingObjective {
    var overlapsBackward: Bool { true }
    var extraMetric: String? { nil }
    func didWrite(directory: String) throws {}
    func didFinish(outDir: String) throws {}
}

/// Runs a `TrainingObjective` data-parallel over `comm`: every rank a full replica, gradients averaged by the bucketed
/// all-reduce, loss = Σ over micro-batches of (loss + MoE aux) / accumulation (MiniMind's train_*.py semantics).
final class TrainingLoop {
    let options: TrainingOptions
    let comm: Communicator
    let logger: Logger
    var rank: Int { comm.rank }
    var world: Int { comm.size }

    init(options: TrainingOptions, communicator: Communicator, logger: Logger) {
        self.options = options
        self.comm = communicator
        self.logger = logger
    }

    /// Prepares the output directory (rank 0), builds the objective with `make` and trains it.
    func run(_ make: () throws -> TrainingObjective) throws -> PretrainSummary {
        let o = options
        var lock: OutDirLock?
        if rank == 0 {
            lock = try Checkpoints.prepareOutDir(o.outDir, resume: o.resume)
            if let was = lock?.previousHolder {
                logger.warning("\(o.outDir): taking over the run lock left by \(was), whose process is gone")
            }
        }
        defer { withExtendedLifetime(lock) {} }
        let objective = try make()
        return try train(objective)
    }

    private func train(_ obj: TrainingObjective) throws -> PretrainSummary {
        let o = options
        let model = obj.model, dataset = obj.dataset
        let config = model.config
        let name: String
        if case .stage(let s) = obj.report { name = s.rawValue } else { name = "pretrain" }
        let isPretrain = name == "pretrain"
        let T = dataset.seqLen, B = o.batchSize, acc = o.accumulationSteps
        let rowsPerBatch = dataset.rows(forSamples: B)
        let perRankPerStep = B * acc
        let globalPerStep = perRankPerStep * world
        // MiniMind: loss = (ce + aux) / accumulation_steps, gradients averaged over ranks.
        model.auxLossScale = Float(1.0 / Double(acc * world))
        let trainP = obj.parameters, trainG = obj.gradients
        let N = trainP.count
        let adam = AdamW(count: N, beta1: Float(o.beta1), beta2: Float(o.beta2), eps: Float(o.eps),
                         weightDecay: Float(o.weightDecay))

        // The data identity (what a checkpoint must have been trained on to be resumed), and everything the ranks
        // must agree on.
        var h = FNV1a64(); h.add(obj.dataIdentity)
        let dataHash = h.hex
        let canonical = "\(obj.dataIdentity) config \(config); data \(o.dataPath); epochs \(o.epochs) batch \(B) accumulation \(acc) max_seq_len \(o.maxSeqLen) max_steps \(o.maxSteps ?? -1) lr \(o.learningRate) clip \(o.gradClip) wd \(o.weightDecay) seed \(o.seed) resume \(o.resume) out \(o.outDir) trainable \(N)"
        try comm.checkSameOnAllRanks(canonical, what: "\(name) configuration and data")

        // Resume: rank 0 reads the newest complete checkpoint; everything is broadcast from rank 0.
        var stateFields = [Int64](repeating: 0, count: 6)   // found, step, epoch, position, seen, adamStep
        var resumedFrom: String?
        var resumedLoss: Double?   // the checkpoint's last loss (rank 0), reported when no step is left to run
        if o.resume && rank == 0, let latest = Checkpoints.list(outDir: o.outDir).last {
            let st = try Checkpoints.readState(latest.path)
            guard st.dataHash == dataHash else {
                throw TrainingError.badCheckpoint(path: latest.path, reason: "it was trained on other data, tokenizer\(isPretrain ? " or seed" : ", seed or stage") (data hash \(st.dataHash), now \(dataHash)); use another --out-dir to start afresh")
            }
            try Checkpoints.validate(st, dir: latest.path, datasetSize: dataset.count, epochs: o.epochs)
            try obj.loadWeights(checkpoint: latest.path)
            let opt = try Checkpoints.readOptimizer(latest.path, numParameters: N)
            _ = adam.m.update(fromContentsOf: opt.m); _ = adam.v.update(fromContentsOf: opt.v)
            stateFields = [1, Int64(st.step), Int64(st.epoch), Int64(st.samplePosition), Int64(st.globalSamplesSeen), Int64(opt.step)]
            if st.maxSeqLen != o.maxSeqLen || st.batchSize * st.worldSize * st.accumulationSteps != globalPerStep {
                logger.warning("resuming with a different geometry (world \(st.worldSize)→\(world), batch \(st.batchSize)→\(B), accumulation \(st.accumulationSteps)→\(acc), max_seq_len \(st.maxSeqLen)→\(o.maxSeqLen)): the continuation starts at the same global sample but the loss sequence will differ")
            }
            resumedFrom = latest.path
            resumedLoss = st.lastLoss
        } else if o.resume && rank == 0 {
            logger.warning("--resume: no complete checkpoint in \(o.outDir), starting from step 0")
        }
        let metricsPath = (o.outDir as NSString).appendingPathComponent("metrics.jsonl")
        if o.resume && rank == 0 {
            // The steps after the checkpoint are run again: drop their rows of the interrupted run.
            try MetricsWriter.truncate(path: metricsPath, keepingStepsThrough: Int(stateFields[1]))
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
            logger.info("\(obj.describe(world: world))\(dataset.count) samples, batch \(B)×\(acc) per rank, \(globalPerStep) samples / step, \(totalSteps) steps\(resumedFrom.map { ", resumed from \($0) at step \(step)" } ?? "")")
        }

        let reducer = world > 1 ? GradientReducer(communicator: comm, gradients: trainG,
                                                  bucketCapBytes: Int(o.bucketCapMB * 1_048_576)) : nil
        let metrics = rank == 0 ? try MetricsWriter(path: metricsPath) : nil
        let tokFiles = Pretrainer.tokenizerFiles(obj.tokenizerPath)
        let bar = rank == 0 ? ProgressBar(total: totalSteps) : ProgressBar(total: 0)
        let sampler = DistributedSampler(datasetSize: dataset.count, worldSize: world, rank: rank, seed: o.seed)

        var losses: [Double] = []
        var lastLoss: Double? { losses.last ?? resumedLoss }
        var commWait = 0.0, stepTime = 0.0, tokensDone = 0.0
        var winExperts = [[Int]](repeating: [Int](repeating: 0, count: config.nRoutedExperts), count: config.numHiddenLayers)
        var winAux = 0.0, winExtra = 0.0
        var winLoss = 0.0, winSteps = 0, winTime = 0.0, winTokens = 0.0, winWait = 0.0
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
                                          state: full ? st : nil, tokenizerFiles: tokFiles, chatTemplate: obj.writtenChatTemplate)
            try obj.didWrite(directory: p)
            return p
        }

        while step < totalSteps {
            // The rest of this epoch, from the current global position.
            if localEpoch != epoch {
                localIdx = sampler.indices(epoch: epoch, startPosition: position)
                localEpoch = epoch; localStart = 0
            }
            if localIdx.count - localStart < perRankPerStep {   // epoch exhausted (the incomplete tail step is dropped)
                epoch += 1; position = 0; localEpoch = -1
                if epoch >= o.epochs { break }
                continue
            }
            let t0 = Date()
            // All micro-batches of this step, and the global normalisers: Σ mask (CE / KL terms) and samples (DPO pairs).
            var batches: [Batch] = []
            var localMask = 0
            for m in 0 ..< acc {
                let s = localStart + m * B
                let b = try dataset.batch(indices: localIdx[s ..< s + B])
                localMask += b.maskCount
                batches.append(b)
            }
            var counts = [Double(localMask), Double(perRankPerStep)]
            try counts.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
            let norms = LossNormalisers(maskSum: max(counts[0], 1), samples: max(counts[1], 1))

            model.zeroGrad()
            var lossPart = 0.0, extraPart = 0.0, auxPart = 0.0
            var waited = 0.0
            for (m, b) in batches.enumerated() {
                let (logits, l, x) = obj.forwardLoss(b, rows: rowsPerBatch, seqLen: T, norms: norms)
                lossPart += l; extraPart += x
                auxPart += model.lastAuxLoss / Double(acc)   // 0 for a dense model
                if config.useMoe {
                    for (l, row) in model.lastExpertCounts.enumerated() { for (e, c) in row.enumerated() { winExperts[l][e] += c } }
                }
                if m == acc - 1, let r = reducer {
                    r.prepareForBackward()
                    if obj.overlapsBackward {
                        model.backward(dLogits: logits, onGradientsReady: { r.gradientsReady($0) })
                    } else {
                        model.backward(dLogits: logits)
                        r.gradientsReady(0 ..< N)
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
            let gradNorm = o.gradClip > 0 ? clipGradNorm(trainG, maxNorm: Float(o.gradClip))
                                           : Model.gradNorm(UnsafeBufferPointer(trainG))
            // Every rank holds the same reduced loss and gradient norm, so all stop together; the optimizer has not
            // applied the step, and no checkpoint of these weights is written.
            guard loss.isFinite, gradNorm.isFinite else {
                let bad = loss.isFinite ? Double(gradNorm) : loss
                throw TrainingError.diverged("\(loss.isFinite ? "gradient norm" : "loss") became \(bad.isNaN ? "NaN" : "\(bad)") at step \(step + 1) (last finite loss \(lastLoss.map { String($0) } ?? "none")); lower --learning-rate or resume from an earlier checkpoint")
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
            winAux += aux; winExtra += extra
            winLoss += loss; winSteps += 1; winTime += dt; winTokens += stepTokens; winWait += waited

            if rank == 0 {
                let elapsed = Date().timeIntervalSince(runStart)
                let eta = elapsed / Double(step - startStep) * Double(totalSteps - step)
                if step % o.logInterval == 0 || step == totalSteps {
                    let tps = winTokens / max(winTime, 1e-9)
                    let n = Double(winSteps)
                    bar.clear()
                    var rec: [String: Any] = ["step": step, "epoch": epoch, "loss": loss, "loss_window_mean": winLoss / n,
                                              "lr": lr, "grad_norm": Double(gradNorm), "tokens_per_s": tps,
                                              "elapsed_s": elapsed, "eta_s": eta, "step_time_s": winTime / n,
                                              "world_size": world, "global_samples": seen]
                    switch obj.report {
                    case .pretrain:
                        logger.info("\(String(format: "step %d/%d epoch %d loss %.4f lr %.3e grad_norm %.3f tokens/s %.0f comm_wait %.1f%% ETA %@", step, totalSteps, epoch + 1, loss, lr, gradNorm, tps, 100 * winWait / max(winTime, 1e-9), formatDuration(eta)))")
                        rec["comm_wait_s"] = winWait / n
                        rec["unhidden_comm_fraction"] = winWait / max(winTime, 1e-9)
                        if config.useMoe {
                            rec["ce"] = loss - aux; rec["aux_loss"] = aux; rec["aux_loss_window_mean"] = winAux / n
                            rec["tokens_per_expert"] = winExperts   // rank 0's routing over the window, [layers][E]
                            logger.info("\(String(format: "  ce %.4f aux_loss %.4f; rank-0 tokens per expert ", loss - aux, aux))\(formatExpertCounts(winExperts))")
                        }
                    case .stage(let stage):
                        let extraText = obj.extraMetric.map { String(format: " %@ %.4f", $0, winExtra / n) } ?? ""
                        logger.info("\(String(format: "%@ step %d/%d epoch %d loss %.4f%@ lr %.3e grad_norm %.3f tokens/s %.0f ETA %@", stage.rawValue, step, totalSteps, epoch + 1, loss, extraText, lr, gradNorm, tps, formatDuration(eta)))")
                        rec["stage"] = stage.rawValue
                        if let x = obj.extraMetric { rec[x] = winExtra / n }
                        if config.useMoe { rec["aux_loss"] = aux; logger.info("\(String(format: "  aux_loss %.4f", aux))") }
                    }
                    try metrics?.append(rec)
                    winExperts = winExperts.map { $0.map { _ in 0 } }
                    winAux = 0; winExtra = 0
                    winLoss = 0; winSteps = 0; winTime = 0; winTokens = 0; winWait = 0
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
            try obj.didFinish(outDir: o.outDir)
            let tps = tokensDone / max(stepTime, 1e-9)
            let commText = isPretrain ? String(format: ", unhidden communication %.1f%% of step time", 100 * commWait / max(stepTime, 1e-9)) : ""
            logger.info("\(String(format: "done: %d steps, final loss %.4f, %.0f tokens/s%@ → %@", step, lastLoss ?? .nan, tps, commText, finalDir!))")
        }
        try comm.barrier()
        return PretrainSummary(steps: step, losses: losses, finalDirectory: finalDir,
                               tokensPerSecond: tokensDone / max(stepTime, 1e-9), commWaitSeconds: commWait, stepSeconds: stepTime)
    }
}
