// The data-parallel pretraining loop (MiniMind train_pretrain.py semantics, DDP-style gradient reduction).
import Foundation
import Logging
import Model
import Datasets
import Tokenizers
import SwiftMindDistributed

/// Options of `trainer pretrain` (MiniMind's names and 2025-04 defaults, plus SwiftMind's own).
public struct PretrainOptions: Codable, Sendable {
    public var outDir = "out"
    public var dataPath = "dataset/pretrain_hq.jsonl"
    public var tokenizer = "model"
    public var epochs = 1
    public var batchSize = 32
    public var learningRate = 5e-4
    public var accumulationSteps = 8
    public var gradClip = 1.0
    public var maxSeqLen = 512
    public var hiddenSize = 512
    public var numHiddenLayers = 8
    public var logInterval = 100
    public var saveInterval = 100
    public var seed: UInt64 = 1337
    /// Stop after this many optimizer steps (the schedule spans them); nil = all epochs.
    public var maxSteps: Int? = nil
    public var resume = false
    public var keepCheckpoints = 2
    public var bucketCapMB = 25.0
    /// Tokenizer threads (rank 0 builds the cache).
    public var threads = ProcessInfo.processInfo.activeProcessorCount
    public var cacheDir: String? = nil
    public var weightDecay = 0.01
    public var beta1 = 0.9
    public var beta2 = 0.999
    public var eps = 1e-8
    /// MoE fields of the model (`--use-moe` …); the aux loss is added to the loss, averaged like it.
    public var moe = MoESettings()
    public init() {}

    func validate() throws {
        func check(_ ok: Bool, _ m: String) throws { if !ok { throw TrainingError.invalidOption(m) } }
        try check(epochs >= 1, "--epochs must be ≥ 1")
        try check(batchSize >= 1, "--batch-size must be ≥ 1")
        try check(accumulationSteps >= 1, "--accumulation-steps must be ≥ 1")
        try check(maxSeqLen >= 2, "--max-seq-len must be ≥ 2")
        try check(maxSeqLen <= 1 << 20, "--max-seq-len \(maxSeqLen) is too large (at most \(1 << 20))")
        try check(learningRate > 0, "--learning-rate must be > 0")
        try check(logInterval >= 1, "--log-interval must be ≥ 1")
        try check(saveInterval >= 1, "--save-interval must be ≥ 1")
        try check(maxSteps == nil || maxSteps! >= 1, "--max-steps must be ≥ 1")
        try check(keepCheckpoints >= 1, "--keep-checkpoints must be ≥ 1")
        try check(bucketCapMB > 0, "--bucket-cap-mb must be > 0")
    }
}

/// What a finished run reports.
public struct PretrainSummary: Sendable {
    public var steps: Int
    public var losses: [Double]
    public var finalDirectory: String?
    public var tokensPerSecond: Double
    public var commWaitSeconds: Double
    public var stepSeconds: Double
    /// Σ time waiting in `GradientReducer.finish()` / Σ step time: communication that backward did not hide.
    public var unhiddenCommFraction: Double { stepSeconds > 0 ? commWaitSeconds / stepSeconds : 0 }
}

public final class Pretrainer {
    public let options: PretrainOptions
    public let comm: Communicator
    public var logger: Logger
    var rank: Int { comm.rank }
    var world: Int { comm.size }

    public init(options: PretrainOptions, communicator: Communicator, logger: Logger = Logger(label: "swiftmind.pretrain")) {
        self.options = options
        self.comm = communicator
        self.logger = logger
    }

    /// Tokenizer files to copy into checkpoints: `tokenizer.json` and, if present, `tokenizer_config.json`.
    static func tokenizerFiles(_ path: String) -> [String] {
        var isDir: ObjCBool = false
        let fm = FileManager.default
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else { return [] }
        let dir = isDir.boolValue ? path : (path as NSString).deletingLastPathComponent
        let tj = isDir.boolValue ? dir + "/tokenizer.json" : path
        return [tj, dir + "/tokenizer_config.json"].filter { fm.fileExists(atPath: $0) }
    }

    /// Rank 0 builds (or reuses) the token cache; the others wait at a barrier and then open it (building their own only
    /// if it is not visible to them, e.g. on another host without a shared filesystem).
    public static func loadCache(dataPath: String, tokenizer: Tokenizer, cacheRoot: String, threads: Int,
                                 comm: Communicator, logger: Logger) throws -> TokenCache {
        var cache: TokenCache?
        if comm.rank == 0 {
            let t0 = Date()
            var lastReport = Date()
            let (c, built) = try TokenCache.openOrBuild(dataPath: dataPath, tokenizer: tokenizer, cacheRoot: cacheRoot,
                                                        threads: threads) { n, bytes in
                if Date().timeIntervalSince(lastReport) > 5 {
                    lastReport = Date()
                    logger.info("tokenizing \(dataPath): \(n) samples, \(bytes >> 20) MiB read")
                }
            }
            if built {
                logger.info("token cache built: \(c.count) samples, \(c.numTokens) tokens in \(String(format: "%.1f", Date().timeIntervalSince(t0)))s → \(c.directory)")
            } else {
                logger.info("token cache reused: \(c.count) samples, \(c.numTokens) tokens (\(c.directory))")
            }
            cache = c
        }
        try comm.barrier()
        if cache == nil {
            cache = try TokenCache.openIfValid(dataPath: dataPath, tokenizerFingerprint: tokenizer.fingerprint, cacheRoot: cacheRoot)
            if cache == nil {
                cache = try TokenCache.openOrBuild(dataPath: dataPath, tokenizer: tokenizer, cacheRoot: cacheRoot, threads: threads).0
            }
        }
        return cache!
    }

    /// Optimizer steps in the rest of the run from (epoch, position), capped so the total does not exceed `maxSteps`.
    static func plannedSteps(datasetSize n: Int, epochs: Int, fromEpoch: Int, position: Int, world: Int,
                             samplesPerRankPerStep: Int) -> Int {
        // Arithmetic, not a loop over epochs: `--epochs 1000000000000` must not hang. Saturates at Int.max.
        guard fromEpoch < epochs, n > 0, world > 0, samplesPerRankPerStep > 0 else { return 0 }
        func steps(from start: Int) -> Int {
            let perRank = n > start ? (n - start + world - 1) / world : 0
            return perRank / samplesPerRankPerStep
        }
        let first = steps(from: max(0, position))
        let (rest, o1) = (epochs - fromEpoch - 1).multipliedReportingOverflow(by: steps(from: 0))
        let (total, o2) = first.addingReportingOverflow(rest)
        return o1 || o2 ? Int.max : total
    }

    @discardableResult
    public func run() throws -> PretrainSummary {
        let o = options
        try o.validate()
        if rank == 0 { try Checkpoints.prepareOutDir(o.outDir, resume: o.resume) }

        // Tokenizer and data.
        let tok = try Tokenizer.load(o.tokenizer)
        // Model config: validated before anything slow (data cache) or large (parameters) happens.
        var config = ModelConfig(hiddenSize: o.hiddenSize, numHiddenLayers: o.numHiddenLayers, vocabSize: tok.vocabSize,
                                 maxPositionEmbeddings: 32768)
        o.moe.apply(to: &config)
        try config.validate(source: "pretrain options")
        let cacheRoot = o.cacheDir ?? TokenCache.defaultCacheRoot
        let cache = try Self.loadCache(dataPath: o.dataPath, tokenizer: tok, cacheRoot: cacheRoot, threads: o.threads,
                                       comm: comm, logger: logger)
        let dataset = PretrainDataset(cache: cache, maxSeqLen: o.maxSeqLen, padTokenId: tok.padTokenId)
        let T = dataset.seqLen, B = o.batchSize, acc = o.accumulationSteps
        let perRankPerStep = B * acc
        let globalPerStep = perRankPerStep * world

        try checkForwardSize(rows: B, seqLen: T, config: config)
        // Model (config validated above, before the data is read).
        let model = MiniMindModel(config: config, seed: o.seed)
        // MiniMind: loss = (ce + aux) / accumulation_steps, gradients averaged over ranks.
        model.auxLossScale = Float(1.0 / Double(acc * world))
        let N = model.numParameters
        let adam = AdamW(count: N, beta1: Float(o.beta1), beta2: Float(o.beta2), eps: Float(o.eps),
                         weightDecay: Float(o.weightDecay))

        // Every rank must run the same configuration on the same data.
        // The data identity (what a checkpoint must have been trained on to be resumed) …
        let dataCanonical = "data size \(cache.meta.source.size) hash \(cache.meta.source.sampledHash) samples \(cache.count) tokens \(cache.numTokens); tokenizer \(tok.fingerprint); seed \(o.seed)"
        // … and everything the ranks must agree on.
        let canonical = "config \(config); data \(cache.meta.sourcePath) \(dataCanonical); epochs \(o.epochs) batch \(o.batchSize) accumulation \(o.accumulationSteps) max_seq_len \(o.maxSeqLen) max_steps \(o.maxSteps ?? -1) lr \(o.learningRate) clip \(o.gradClip) wd \(o.weightDecay) seed \(o.seed) resume \(o.resume) out \(o.outDir)"
        var h = FNV1a64(); h.add(dataCanonical)
        let dataHash = h.hex
        try comm.checkSameOnAllRanks(canonical, what: "pretrain configuration and data")

        // Resume: rank 0 reads the newest complete checkpoint; everything is broadcast from rank 0.
        var stateFields = [Int64](repeating: 0, count: 7)   // found, step, epoch, position, seen, adamStep, totalSteps
        var resumedFrom: String?
        if o.resume && rank == 0, let latest = Checkpoints.list(outDir: o.outDir).last {
            let st = try Checkpoints.readState(latest.path)
            guard st.dataHash == dataHash else {
                throw TrainingError.badCheckpoint(path: latest.path, reason: "it was trained on other data, tokenizer or seed (data hash \(st.dataHash), now \(dataHash)); use another --out-dir to start afresh")
            }
            try Checkpoints.validate(st, dir: latest.path, datasetSize: dataset.count, epochs: o.epochs)
            let loaded = try MiniMindModel.load(directory: latest.path)
            guard loaded.config == config else {
                throw TrainingError.badCheckpoint(path: latest.path, reason: "its config.json differs from the options (hidden size, layers, vocab)")
            }
            _ = model.params.update(fromContentsOf: UnsafeBufferPointer(loaded.params))
            let opt = try Checkpoints.readOptimizer(latest.path, numParameters: N)
            _ = adam.m.update(fromContentsOf: opt.m); _ = adam.v.update(fromContentsOf: opt.v)
            stateFields = [1, Int64(st.step), Int64(st.epoch), Int64(st.samplePosition), Int64(st.globalSamplesSeen),
                           Int64(opt.step), Int64(st.totalSteps)]
            if st.maxSeqLen != o.maxSeqLen || st.batchSize * st.worldSize * st.accumulationSteps != globalPerStep {
                logger.warning("resuming with a different geometry (world \(st.worldSize)→\(world), batch \(st.batchSize)→\(B), accumulation \(st.accumulationSteps)→\(acc), max_seq_len \(st.maxSeqLen)→\(o.maxSeqLen)): the continuation starts at the same global sample but the loss sequence will differ")
            }
            resumedFrom = latest.path
        } else if o.resume && rank == 0 {
            logger.warning("--resume: no complete checkpoint in \(o.outDir), starting from step 0")
        }
        try stateFields.withUnsafeMutableBytes { try comm.broadcast($0, root: 0) }
        try comm.broadcast(UnsafeMutableRawBufferPointer(model.params), root: 0)
        if stateFields[0] == 1 {
            try comm.broadcast(UnsafeMutableRawBufferPointer(adam.m), root: 0)
            try comm.broadcast(UnsafeMutableRawBufferPointer(adam.v), root: 0)
            adam.stepCount = Int(stateFields[5])
        }
        var step = Int(stateFields[1]), epoch = Int(stateFields[2]), position = Int(stateFields[3])
        var seen = Int(stateFields[4])

        let remaining = Self.plannedSteps(datasetSize: dataset.count, epochs: o.epochs, fromEpoch: epoch, position: position,
                                          world: world, samplesPerRankPerStep: perRankPerStep)
        var totalSteps = step + remaining
        if let ms = o.maxSteps { totalSteps = min(totalSteps, ms) }
        if totalSteps <= step {
            if step == 0 {
                throw TrainingError.invalidOption("\(o.dataPath): \(dataset.count) samples are fewer than one optimizer step needs (\(globalPerStep) = batch \(B) × accumulation \(acc) × world \(world))")
            }
        }
        if rank == 0 {
            logger.info("world \(world), model \(N) parameters (\(config.activeParameterCount) active, \(o.moe)) (hidden \(config.hiddenSize), \(config.numHiddenLayers) layers, vocab \(config.vocabSize)), \(dataset.count) samples, batch \(B)×\(acc) per rank, \(globalPerStep) samples / step, \(totalSteps) steps\(resumedFrom.map { ", resumed from \($0) at step \(step)" } ?? "")")
        }

        let reducer = world > 1 ? GradientReducer(communicator: comm, gradients: model.grads,
                                                  bucketCapBytes: Int(o.bucketCapMB * 1_048_576)) : nil
        let metrics = rank == 0 ? try MetricsWriter(path: (o.outDir as NSString).appendingPathComponent("metrics.jsonl")) : nil
        let tokFiles = Self.tokenizerFiles(o.tokenizer)
        let bar = rank == 0 ? ProgressBar(total: totalSteps) : ProgressBar(total: 0)
        let sampler = DistributedSampler(datasetSize: dataset.count, worldSize: world, rank: rank, seed: o.seed)

        var losses: [Double] = []
        var commWait = 0.0, stepTime = 0.0, tokensDone = 0.0
        var winExperts = [[Int]](repeating: [Int](repeating: 0, count: config.nRoutedExperts), count: config.numHiddenLayers)
        var winAux = 0.0
        var winLoss = 0.0, winSteps = 0, winTime = 0.0, winTokens = 0.0, winWait = 0.0
        let runStart = Date()
        let startStep = step
        var localIdx: [Int] = []
        var localEpoch = -1, localStart = 0
        func saveState(_ name: String, full: Bool) throws -> String {
            let st = TrainerState(step: step, epoch: epoch, samplePosition: position, globalSamplesSeen: seen, totalSteps: totalSteps,
                                  rngSeed: o.seed, worldSize: world, batchSize: B, accumulationSteps: acc,
                                  learningRate: o.learningRate, maxSeqLen: o.maxSeqLen, dataHash: dataHash, lastLoss: losses.last)
            return try Checkpoints.write(name: name, outDir: o.outDir, model: model,
                                         optimizer: full ? OptimizerSnapshot(m: Array(adam.m), v: Array(adam.v), step: adam.stepCount) : nil,
                                         state: full ? st : nil, tokenizerFiles: tokFiles)
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
            // All micro-batches of this step, and the global number of target tokens.
            var batches: [Batch] = []
            var localMask = 0
            for m in 0 ..< acc {
                let s = localStart + m * B
                let b = dataset.batch(indices: localIdx[s ..< s + B])
                localMask += b.maskCount
                batches.append(b)
            }
            var counts = [Double(localMask)]
            try counts.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
            let normaliser = max(counts[0], 1)

            model.zeroGrad()
            var lossPart = 0.0, auxPart = 0.0
            var waited = 0.0
            for (m, b) in batches.enumerated() {
                let logits = b.inputIds.withUnsafeBufferPointer { model.forward(inputIds: $0, batchSize: B, seqLen: T) }
                if config.useMoe {
                    auxPart += model.lastAuxLoss / Double(acc)
                    for (l, row) in model.lastExpertCounts.enumerated() { for (e, c) in row.enumerated() { winExperts[l][e] += c } }
                }
                lossPart += b.labels.withUnsafeBufferPointer { y in
                    b.lossMask.withUnsafeBufferPointer { mk in
                        CrossEntropy.forwardBackward(logits: logits, labels: y, lossMask: mk, vocabSize: config.vocabSize,
                                                     normalizer: Float(normaliser)) / normaliser
                    }
                }
                if m == acc - 1, let r = reducer {
                    r.prepareForBackward()
                    model.backward(dLogits: logits, onGradientsReady: { r.gradientsReady($0) })
                    let w0 = Date()
                    try r.finish()
                    waited = Date().timeIntervalSince(w0)
                } else {
                    model.backward(dLogits: logits)
                }
            }
            var lossBuf = [lossPart, auxPart]
            try lossBuf.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
            let aux = lossBuf[1] / Double(world)
            let loss = lossBuf[0] + aux
            let gradNorm = o.gradClip > 0 ? clipGradNorm(model.grads, maxNorm: Float(o.gradClip))
                                           : Model.gradNorm(UnsafeBufferPointer(model.grads))
            // Every rank holds the same reduced loss and gradient norm, so all stop together; the optimizer has not
            // applied the step, and no checkpoint of these weights is written.
            guard loss.isFinite, gradNorm.isFinite else {
                let bad = loss.isFinite ? Double(gradNorm) : loss
                throw TrainingError.diverged("\(loss.isFinite ? "gradient norm" : "loss") became \(bad.isNaN ? "NaN" : "\(bad)") at step \(step + 1) (last finite loss \(losses.last.map { String($0) } ?? "none")); lower --learning-rate or resume from an earlier checkpoint")
            }
            let lr = cosineLR(step: step, totalSteps: totalSteps, baseLR: o.learningRate)
            adam.step(params: model.params, grads: UnsafeBufferPointer(model.grads), lr: Float(lr))

            step += 1
            localStart += perRankPerStep
            position += globalPerStep
            seen += globalPerStep
            losses.append(loss)
            let dt = Date().timeIntervalSince(t0)
            let stepTokens = Double(globalPerStep * T)
            stepTime += dt; commWait += waited; tokensDone += stepTokens
            winAux += aux
            winLoss += loss; winSteps += 1; winTime += dt; winTokens += stepTokens; winWait += waited

            if rank == 0 {
                let elapsed = Date().timeIntervalSince(runStart)
                let eta = elapsed / Double(step - startStep) * Double(totalSteps - step)
                if step % o.logInterval == 0 || step == totalSteps {
                    let tps = winTokens / max(winTime, 1e-9)
                    bar.clear()
                    logger.info("\(String(format: "step %d/%d epoch %d loss %.4f lr %.3e grad_norm %.3f tokens/s %.0f comm_wait %.1f%% ETA %@", step, totalSteps, epoch + 1, loss, lr, gradNorm, tps, 100 * winWait / max(winTime, 1e-9), formatDuration(eta)))")
                    var rec: [String: Any] = ["step": step, "epoch": epoch, "loss": loss, "loss_window_mean": winLoss / Double(winSteps),
                                         "lr": lr, "grad_norm": Double(gradNorm), "tokens_per_s": tps,
                                         "elapsed_s": elapsed, "eta_s": eta, "step_time_s": winTime / Double(winSteps),
                                         "comm_wait_s": winWait / Double(winSteps),
                                         "unhidden_comm_fraction": winWait / max(winTime, 1e-9), "world_size": world,
                                         "global_samples": seen]
                    if config.useMoe {
                        rec["ce"] = loss - aux; rec["aux_loss"] = aux; rec["aux_loss_window_mean"] = winAux / Double(winSteps)
                        rec["tokens_per_expert"] = winExperts   // rank 0's routing over the window, [layers][E]
                        logger.info("\(String(format: "  ce %.4f aux_loss %.4f; rank-0 tokens per expert ", loss - aux, aux))\(formatExpertCounts(winExperts))")
                        winExperts = winExperts.map { $0.map { _ in 0 } }
                    }
                    try metrics?.append(rec)
                    winAux = 0
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
            let tps = tokensDone / max(stepTime, 1e-9)
            logger.info("\(String(format: "done: %d steps, final loss %.4f, %.0f tokens/s, unhidden communication %.1f%% of step time → %@", step, losses.last ?? .nan, tps, 100 * commWait / max(stepTime, 1e-9), finalDir!))")
        }
        try comm.barrier()
        return PretrainSummary(steps: step, losses: losses, finalDirectory: finalDir,
                               tokensPerSecond: tokensDone / max(stepTime, 1e-9), commWaitSeconds: commWait, stepSeconds: stepTime)
    }
}
