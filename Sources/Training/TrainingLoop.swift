// The one data-parallel training loop of every stage (pretrain, sft, lora, dpo, reason, distill): DDP-style sampler,
// gradient accumulation, bucketed all-reduce, AdamW with MiniMind's cosine schedule, checkpoints, --resume, logs and
// metrics.jsonl. What a stage changes is a `TrainingObjective`: its data, its loss head (with any frozen reference or
// teacher model) and the parameter buffer that is optimised and all-reduced. The loop's parts: `resume`
// (ResumeState.swift), `StepPlan` and `SampleWalk` (StepPlan.swift), `runStep` (here), `StepLog` (StepLog.swift) and
// `RunCheckpointer` (RunCheckpointer.swift).
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
    /// Seconds one collective may wait before rank 0 names the missing ranks, and before the job is aborted (0 = never);
    /// see `StallInspector`.
    public var stallWarning = 60.0
    public var stallTimeout = 600.0
    /// `--timeline FILE`: rank 0 writes a Chrome trace of every rank's steps there at the end (`TimelineRecorder`);
    /// nil = no timeline.
    public var timeline: String? = nil
    /// `--dtype`: the precision of the matrix products (MixedPrecision.swift); nil = `ComputeDType.platformDefault`
    /// (float32 for a MoE model, whose expert products have no bf16 path).
    public var dtype: ComputeDType? = nil
    /// `--grad-comm-dtype`: the payload of the gradient all-reduce (bfloat16: rounded to bf16, summed in fp32).
    public var gradCommDType: ComputeDType = .float32
    public init() {}

    /// The products' precision for `model` (`dtype`, else the platform default; float32 for MoE).
    public func resolvedDType(for model: MiniMindModel) -> ComputeDType {
        dtype ?? (model.config.useMoe ? .float32 : .platformDefault)
    }

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
        try check(stallWarning.isFinite && stallWarning >= 1, "--stall-warning must be a number of seconds ≥ 1 (got \(stallWarning))")
        try check(stallTimeout.isFinite && (stallTimeout == 0 || stallTimeout >= 1),
                  "--stall-timeout must be 0 (off) or a number of seconds ≥ 1 (got \(stallTimeout))")
        if let t = timeline {
            try check(!t.isEmpty && !t.hasSuffix("/"), "--timeline needs a file name (got '\(t)')")
            // Its directory is created by rank 0 at the start (as --out-dir is), and the file probed for writing then.
            _ = try TimelineRecorder.capacityFromEnvironment()
        }
    }

    /// Accepted `--bucket-cap-mb` (MB): below 0.01 MB a model of a few million parameters already needs thousands of
    /// all-reduces per step, each with a fixed cost; above 4096 MB a bucket would pass MPI's 2^31-element count limit.
    public static let bucketCapRange: ClosedRange<Double> = 0.01...4096
}

/// The global normalisers of one optimizer step (summed over its micro-batches and all ranks).
struct LossNormalisers {
    /// Σ loss_mask: token-level CE / KL terms are divided by it (MiniMind's masked mean over the global batch).
    var maskSum: Double
    /// Samples of the step (DPO: pairs): DPO's per-pair loss is divided by it.
    var samples: Double
    /// Rows of the step (GRPO: completions): GRPO's per-completion loss is divided by it.
    var rows: Double
}

/// How the loop reports a run: `pretrain`'s lines and metrics fields, or a post-training stage's (kept as they were
/// before the loops were merged, so logs and metrics.jsonl read the same).
enum RunReport {
    /// Adds comm_wait to the log lines and metrics, and the MoE CE / aux / tokens-per-expert details.
    case pretrain
    /// Prefixes the lines with the stage name, writes `"stage"` and the objective's extra metric.
    case stage(Stage)
    /// A stage outside `Stage` (`grpo`), reported like one.
    case named(String)

    var isPretrain: Bool { if case .pretrain = self { return true } else { return false } }
    /// `pretrain` or the stage's name.
    var name: String {
        switch self { case .stage(let s): return s.rawValue; case .named(let n): return n; case .pretrain: return "pretrain" }
    }
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
    /// Forward, loss and backward of one micro-batch (`ObjectiveStep.run`, the code `trainer debug-step` runs too).
    var step: ObjectiveStep { get }
    /// Rank 0 on --resume: loads the trainable weights of checkpoint `dir` into `parameters`.
    func loadWeights(checkpoint dir: String) throws
    /// After a checkpoint (or final/) directory was written: add the objective's own files (the LoRA adapter).
    func didWrite(directory: String) throws
    /// After the final directory was written: the objective's top-level outputs (OUT/lora.safetensors).
    func didFinish(outDir: String) throws
    /// Called at the start of optimizer step `step` (0-based), before its batches are read (GRPO keys its rollouts by it).
    func willRunStep(_ step: Int)
    /// Called after each micro-step with what it computed.
    func microStepDone(_ part: ObjectiveLoss)
    /// Number of the objective's own per-step figures (`takeStepFigures`).
    var stepFigureCount: Int { get }
    /// This rank's sums of the objective's own figures over the step just run (then cleared); the loop sums them over
    /// the ranks.
    func takeStepFigures() -> [Double]
    /// The named figures of a log line from those sums (summed over ranks and the window's steps).
    func reportFigures(_ sums: [Double]) -> [(String, Double)]
}

extension TrainingObjective {
    var overlapsBackward: Bool { true }
    /// Name of the stage-specific per-step figure (DPO `preference_acc`, distill `ce`), window-averaged.
    var extraMetric: String? { step.head.extraMetric }
    func didWrite(directory: String) throws {}
    func didFinish(outDir: String) throws {}
    func willRunStep(_ step: Int) {}
    func microStepDone(_ part: ObjectiveLoss) {}
    var stepFigureCount: Int { 0 }
    func takeStepFigures() -> [Double] { [] }
    func reportFigures(_ sums: [Double]) -> [(String, Double)] { [] }
}

/// Runs a `TrainingObjective` data-parallel over `comm`: every rank a full replica, gradients averaged by the bucketed
/// all-reduce, loss = Σ over micro-batches of (loss + MoE aux) / accumulation (MiniMind's train_*.py semantics).
final class TrainingLoop {
    let options: TrainingOptions
    let comm: Communicator
    let logger: Logger
    var rank: Int { comm.rank }
    var world: Int { comm.size }
    /// OUT/metrics.jsonl.
    var metricsPath: String { (options.outDir as NSString).appendingPathComponent("metrics.jsonl") }

    /// `--timeline`'s recorder (every rank records; rank 0 writes the file).
    let timeline: TimelineRecorder?

    init(options: TrainingOptions, communicator: Communicator, logger: Logger) {
        self.options = options
        self.comm = communicator
        self.logger = logger
        timeline = options.timeline.map { TimelineRecorder(path: $0, rank: communicator.rank, world: communicator.size) }
    }

    /// Prepares the output directory (rank 0), builds the objective with `make` and trains it.
    func run(_ make: () throws -> TrainingObjective) throws -> TrainingSummary {
        try timeline?.synchronize(comm)
        do {
            return try withFaultHandling { try runWatched(make) }
        } catch let p as Preempted {
            // Every rank stopped at the same step boundary: the ranks can still gather.
            if let t = timeline {
                do { try t.writeMerged(comm, complete: false); if rank == 0 { logger.info("timeline (to step \(p.step)) → \(t.path)") } }
                catch { if rank == 0 { logger.warning("timeline not written: \(error)") } }
            }
            throw p
        } catch {
            // Possibly on this rank only: no collective; rank 0 writes its own events.
            if let t = timeline, t.writeLocal() { logger.warning("timeline of rank 0 only (the run failed) → \(t.path)") }
            throw error
        }
    }

    private func runWatched(_ make: () throws -> TrainingObjective) throws -> TrainingSummary {
        let o = options
        var lock: OutDirLock?
        if rank == 0 {
            lock = try Checkpoints.prepareOutDir(o.outDir, resume: o.resume)
            try timeline?.probeWritable()
            if let was = lock?.previousHolder {
                logger.warning("\(o.outDir): taking over the run lock left by \(was), whose process is gone")
            }
        }
        defer { withExtendedLifetime(lock) {} }
        let t0 = TimelineRecorder.now()
        let objective = try make()
        timeline?.record(.prepare, t0, TimelineRecorder.now())
        return try train(objective)
    }

    /// The run: agreement of the ranks, the start (`resume`), the `StepPlan`, then `runStep` until the plan is done,
    /// each step reported by rank 0's `StepLog` and checkpointed by its `RunCheckpointer`; OUT/final at the end.
    private func train(_ obj: TrainingObjective) throws -> TrainingSummary {
        let o = options
        let model = obj.model, dataset = obj.dataset
        // MiniMind: loss = (ce + aux) / accumulation_steps, gradients averaged over ranks.
        model.auxLossScale = Float(1.0 / Double(o.accumulationSteps * world))
        let adam = AdamW(count: obj.parameters.count, beta1: Float(o.beta1), beta2: Float(o.beta2), eps: Float(o.eps),
                         weightDecay: Float(o.weightDecay))
        let dtype = o.resolvedDType(for: model)
        if dtype == .bfloat16 && model.config.useMoe {
            throw TrainingError.invalidOption("--dtype bfloat16 is not implemented for MoE models (their expert products are fp32 only); use --dtype float32")
        }
        model.matmulDType = dtype
        let dataHash = try agreeOnRun(obj)
        let start = try resume(obj, adam: adam, dataHash: dataHash)
        model.parametersDidChange()
        let plan = try StepPlan(options: o, dataset: dataset, world: world, from: start.position)
        if rank == 0 {
            logger.info("dtype \(dtype.rawValue): \(dtype == .float32 ? "fp32 (OpenBLAS sgemm)" : MiniMindModel.bf16Engine); gradient all-reduce \(o.gradCommDType.rawValue)")
            logger.info("\(obj.describe(world: world))\(dataset.count) samples, batch \(plan.batchSize)×\(plan.accumulation) per rank, \(plan.globalPerStep) samples / step, \(plan.totalSteps) steps\(start.checkpoint.map { ", resumed from \($0) at step \(start.position.step)" } ?? "")")
        }

        let reducer = world > 1 ? GradientReducer(communicator: comm, gradients: obj.gradients,
                                                  bucketCapBytes: Int(o.bucketCapMB * 1_048_576),
                                                  payload: o.gradCommDType == .bfloat16 ? .bfloat16 : .float32) : nil
        if let t = timeline {
            t.attach(to: model)
            reducer?.recordsBucketTimes = true
            comm.stallInspector?.setBeforeAbort { t.stall($0); t.writeLocal() }
        }
        defer { model.traceHook = nil; comm.stallInspector?.setBeforeAbort(nil) }
        let log = rank == 0 ? try StepLog(objective: obj, plan: plan, options: o, metricsPath: metricsPath,
                                          startStep: start.position.step, logger: logger) : nil
        let checkpointer = RunCheckpointer(options: o, objective: obj, adam: adam, plan: plan, dataHash: dataHash)
        var walk = SampleWalk(sampler: DistributedSampler(datasetSize: dataset.count, worldSize: world, rank: rank, seed: o.seed),
                              perRankPerStep: plan.perRankPerStep, epochs: o.epochs)

        var at = start.position
        var losses: [Double] = []
        var commWait = 0.0, stepTime = 0.0, tokensDone = 0.0
        // This rank's step seconds since the last log line (for metrics.jsonl's rank_step_time_s).
        var windowTime = 0.0, windowSteps = 0
        while at.step < plan.totalSteps {
            try stepBoundary(at.step) {   // Preemption.swift: the ranks agree on a signal; rank 0 saves checkpoint-<step>
                let t0 = TimelineRecorder.now()
                let p = try checkpointer.saveCheckpoint(at: at, lastLoss: losses.last)
                timeline?.record(.checkpoint, t0, TimelineRecorder.now(), a: at.step)
                return p
            }
            guard let indices = walk.next(&at) else { break }
            let t0 = Date(), s0 = TimelineRecorder.now()
            let r = try runStep(obj, indices: indices, plan: plan, step: at.step, adam: adam, reducer: reducer,
                                lastLoss: losses.last ?? start.lastLoss)
            at.step += 1
            timeline?.record(.step, s0, TimelineRecorder.now(), a: at.step)
            at.position += plan.globalPerStep
            at.seen += plan.globalPerStep
            losses.append(r.loss)
            let dt = Date().timeIntervalSince(t0)
            stepTime += dt; commWait += r.commWait; tokensDone += plan.tokensPerStep
            windowTime += dt; windowSteps += 1
            // Every rank's mean step time over the log window: one all-reduce of `world` doubles per log line.
            var rankStepTimes: [Double]?
            if StepLog.isDue(step: at.step, logInterval: o.logInterval, totalSteps: plan.totalSteps) {
                var v = [Double](repeating: 0, count: world)
                v[rank] = windowTime / Double(max(windowSteps, 1))
                rankStepTimes = try world > 1 ? comm.allReduceSum(v) : v
                windowTime = 0; windowSteps = 0
            }
            if let log {
                try log.stepDone(r, at: at, seconds: dt, rankStepTimes: rankStepTimes)
                let c0 = TimelineRecorder.now()
                if let p = try checkpointer.saveIfDue(at: at, lastLoss: losses.last) {
                    timeline?.record(.checkpoint, c0, TimelineRecorder.now(), a: at.step)
                    log.checkpointWritten(p)
                }
            }
        }
        var finalDir: String?
        if let log {
            log.finishBar()
            let c0 = TimelineRecorder.now()
            let p = try checkpointer.saveFinal(at: at, lastLoss: losses.last)
            timeline?.record(.checkpoint, c0, TimelineRecorder.now(), a: at.step, b: 1)
            finalDir = p
            log.done(steps: at.step, lastLoss: losses.last ?? start.lastLoss, tokens: tokensDone, stepSeconds: stepTime,
                     commWaitSeconds: commWait, finalDirectory: p)
        }
        if let t = timeline {
            try t.writeMerged(comm)
            if rank == 0 { logger.info("timeline → \(t.path) (open it in https://ui.perfetto.dev or chrome://tracing)") }
        }
        try comm.barrier()
        return TrainingSummary(steps: at.step, losses: losses, finalDirectory: finalDir,
                               tokensPerSecond: tokensDone / max(stepTime, 1e-9), commWaitSeconds: commWait, stepSeconds: stepTime)
    }

    /// The data identity's hash (trainer_state.json's `data_hash`, what a checkpoint must have been trained on to be
    /// resumed), after checking that every rank has the same configuration and data.
    /// - Throws: the communicator's error naming the ranks that differ.
    func agreeOnRun(_ obj: TrainingObjective) throws -> String {
        let o = options
        var h = FNV1a64(); h.add(obj.dataIdentity)
        let canonical = "\(obj.dataIdentity) config \(obj.model.config); data \(o.dataPath); epochs \(o.epochs) batch \(o.batchSize) accumulation \(o.accumulationSteps) max_seq_len \(o.maxSeqLen) max_steps \(o.maxSteps ?? -1) lr \(o.learningRate) clip \(o.gradClip) wd \(o.weightDecay) seed \(o.seed) resume \(o.resume) out \(o.outDir) trainable \(obj.parameters.count)"
        try comm.checkSameOnAllRanks(canonical, what: "\(obj.report.name) configuration and data")
        return h.hex
    }

    /// One optimizer step on this rank's `indices` (`plan.perRankPerStep` samples): the micro-batches and the global
    /// normalisers, forward + loss + backward of each (the gradients all-reduced while the last backward runs), the
    /// reduced loss, gradient clipping and AdamW at `cosineLR(step)`.
    /// - Throws: `TrainingError.diverged` (on every rank, before the optimizer applies the step) when the loss or the
    ///   gradient norm is not finite; data and communication errors.
    func runStep(_ obj: TrainingObjective, indices: ArraySlice<Int>, plan: StepPlan, step: Int, adam: AdamW,
                 reducer: GradientReducer?, lastLoss: Double?) throws -> StepResult {
        let o = options
        let model = obj.model, config = model.config
        let B = plan.batchSize, acc = plan.accumulation
        let trainP = obj.parameters, trainG = obj.gradients
        // All micro-batches of this step, and the global normalisers: Σ mask (CE / KL terms) and samples (DPO pairs).
        obj.willRunStep(step)
        var batches: [Batch] = []
        var localMask = 0
        let d0 = timeline == nil ? 0 : TimelineRecorder.now()
        for m in 0 ..< acc {
            let s = indices.startIndex + m * B
            let b = try obj.dataset.batch(indices: indices[s ..< s + B])
            localMask += b.maskCount
            batches.append(b)
        }
        timeline?.record(.data, d0, TimelineRecorder.now())
        var counts = [Double(localMask), Double(plan.perRankPerStep), Double(plan.rowsPerBatch * acc)]
        try counts.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
        let norms = LossNormalisers(maskSum: max(counts[0], 1), samples: max(counts[1], 1), rows: max(counts[2], 1))

        model.zeroGrad()
        var lossPart = 0.0, extraPart = 0.0, auxPart = 0.0
        var waited = 0.0
        var experts = config.useMoe ? [[Int]](repeating: [Int](repeating: 0, count: config.nRoutedExperts), count: config.numHiddenLayers) : []
        for (m, b) in batches.enumerated() {
            // The last micro-batch's backward feeds the all-reduce (overlapped when the gradients are model.grads).
            let r = m == acc - 1 ? reducer : nil
            r?.prepareForBackward()
            // A batch's own length (GRPO's rollouts are as long as their longest row); the datasets of fixed length
            // give plan.seqLen.
            let part = obj.step.run(b, rows: plan.rowsPerBatch, seqLen: b.seqLen, norms: norms,
                                    onGradientsReady: obj.overlapsBackward ? r.map { r in { r.gradientsReady($0) } } : nil)
            lossPart += part.loss; extraPart += part.extra
            obj.microStepDone(part)
            auxPart += part.auxLoss / Double(acc)   // 0 for a dense model
            if config.useMoe {
                for (l, row) in model.lastExpertCounts.enumerated() { for (e, c) in row.enumerated() { experts[l][e] += c } }
            }
            if let r {
                if !obj.overlapsBackward { r.gradientsReady(0 ..< trainG.count) }
                let w0 = Date(), n0 = TimelineRecorder.now()
                try r.finish()
                waited = Date().timeIntervalSince(w0)
                if let t = timeline {
                    t.record(.allReduceWait, n0, TimelineRecorder.now())
                    t.recordBuckets(r)
                }
            }
        }
        var lossBuf = [lossPart, extraPart, auxPart] + obj.takeStepFigures()
        try lossBuf.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
        let aux = lossBuf[2] / Double(world)
        let loss = lossBuf[0] + aux, extra = lossBuf[1]
        let o0 = timeline == nil ? 0 : TimelineRecorder.now()
        defer { if let t = timeline { t.record(.optimizer, o0, TimelineRecorder.now()) } }
        let gradNorm = o.gradClip > 0 ? clipGradNorm(trainG, maxNorm: Float(o.gradClip))
                                       : Model.gradNorm(UnsafeBufferPointer(trainG))
        // Every rank holds the same reduced loss and gradient norm, so all stop together; the optimizer has not
        // applied the step, and no checkpoint of these weights is written.
        guard loss.isFinite, gradNorm.isFinite else {
            let bad = loss.isFinite ? Double(gradNorm) : loss
            throw TrainingError.diverged("\(loss.isFinite ? "gradient norm" : "loss") became \(bad.isNaN ? "NaN" : "\(bad)") at step \(step + 1) (last finite loss \(lastLoss.map { String($0) } ?? "none")); lower --learning-rate or resume from an earlier checkpoint")
        }
        let lr = cosineLR(step: step, totalSteps: plan.totalSteps, baseLR: o.learningRate)
        adam.step(params: trainP, grads: UnsafeBufferPointer(trainG), lr: Float(lr))
        model.parametersDidChange()   // the bf16 copy of the weights (--dtype bfloat16) is made again
        return StepResult(loss: loss, aux: aux, extra: extra, gradNorm: gradNorm, lr: lr, commWait: waited, expertCounts: experts,
                          figures: Array(lossBuf[3...]))
    }
}

/// What one optimizer step produced; the figures are reduced over the ranks (the same on every rank) unless noted.
struct StepResult {
    /// `loss`: Σ over micro-batches and ranks of the objective's loss, plus `aux`, the MoE aux loss (averaged over
    /// ranks; 0 for a dense model); `extra`: the objective's `extraMetric` figure of the step.
    var loss: Double, aux: Double, extra: Double
    /// Gradient norm before clipping.
    var gradNorm: Float
    /// Learning rate the optimizer applied.
    var lr: Double
    /// This rank's seconds waiting in `GradientReducer.finish()`.
    var commWait: Double
    /// This rank's tokens routed to each expert, [layers][E] (empty for a dense model).
    var expertCounts: [[Int]]
    /// The objective's own figures of the step, summed over ranks (`TrainingObjective.takeStepFigures`).
    var figures: [Double] = []
}
