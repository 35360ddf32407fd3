// Where a run starts: step 0, or on --resume the newest complete checkpoint of the output directory.
import Foundation
import Model
import SwiftMindDistributed

/// The start of a run, the same on every rank (rank 0 reads it, the others receive it).
struct ResumeState {
    var position = RunPosition()
    /// The checkpoint resumed from (rank 0); nil when the run starts at step 0.
    var checkpoint: String?
    /// The checkpoint's last loss (rank 0), reported when no step is left to run.
    var lastLoss: Double?
}

extension TrainingLoop {
    /// Rank 0 on --resume: checks the newest complete checkpoint of OUT against the run (`dataHash`, the dataset size
    /// and epochs), loads its trainable weights into the objective and its moments into `adam`, and drops the
    /// metrics.jsonl rows of the steps after it. Then rank 0's position, trainable weights and (resuming) optimizer
    /// state are broadcast, so every rank starts from the same state.
    /// - Throws: `TrainingError.badCheckpoint` when the checkpoint was trained on other data or does not fit;
    ///   `TrainingError.io` when metrics.jsonl cannot be rewritten.
    func resume(_ obj: TrainingObjective, adam: AdamW, dataHash: String) throws -> ResumeState {
        let o = options
        let dataset = obj.dataset
        let B = o.batchSize, acc = o.accumulationSteps, globalPerStep = B * acc * world
        var stateFields = [Int64](repeating: 0, count: 6)   // found, step, epoch, position, seen, adamStep
        var state = ResumeState()
        // Newest first: a checkpoint whose files cannot be read (a node that crashed before its page cache reached
        // the disk, a damaged file) is skipped with a warning for the one before it; a checkpoint of another run
        // (other data or settings) or one that does not fit this run stops the resume.
        var candidates = o.resume && rank == 0 ? Array(Checkpoints.list(outDir: o.outDir).reversed()) : []
        var damaged: [String] = []
        while let latest = candidates.first {
            candidates.removeFirst()
            let st: TrainerState
            do { st = try Checkpoints.readState(latest.path) } catch {
                damaged.append("\(latest.path): \(error)"); continue
            }
            guard st.dataHash == dataHash else {
                // Name what changed when the checkpoint recorded its identity (clauses of "stage … ; tokenizer …; …").
                var what = "it was trained on other data, tokenizer\(obj.report.isPretrain ? " or seed" : ", seed, stage or objective settings")"
                if let then = st.dataIdentity {
                    let a = then.components(separatedBy: "; "), b = obj.dataIdentity.components(separatedBy: "; ")
                    let changed = (0..<max(a.count, b.count)).compactMap { i -> String? in
                        let x = i < a.count ? a[i] : "-", y = i < b.count ? b[i] : "-"
                        return x == y ? nil : "\"\(x)\" → \"\(y)\""
                    }
                    if !changed.isEmpty { what += "; what changed: \(changed.joined(separator: ", "))" }
                }
                throw TrainingError.badCheckpoint(path: latest.path, reason: "\(what) (data hash \(st.dataHash), now \(dataHash)); use another --out-dir to start afresh")
            }
            try Checkpoints.validate(st, dir: latest.path, datasetSize: dataset.count, epochs: o.epochs)
            let opt: OptimizerSnapshot
            do {
                try obj.loadWeights(checkpoint: latest.path)
                opt = try Checkpoints.readOptimizer(latest.path, numParameters: obj.parameters.count)
            } catch {
                damaged.append("\(latest.path): \(error)"); continue
            }
            _ = adam.m.update(fromContentsOf: opt.m); _ = adam.v.update(fromContentsOf: opt.v)
            stateFields = [1, Int64(st.step), Int64(st.epoch), Int64(st.samplePosition), Int64(st.globalSamplesSeen), Int64(opt.step)]
            if st.maxSeqLen != o.maxSeqLen || st.batchSize * st.worldSize * st.accumulationSteps != globalPerStep {
                logger.warning("resuming with a different geometry (world \(st.worldSize)→\(world), batch \(st.batchSize)→\(B), accumulation \(st.accumulationSteps)→\(acc), max_seq_len \(st.maxSeqLen)→\(o.maxSeqLen)): the continuation starts at the same global sample but the loss sequence will differ")
            }
            for d in damaged { logger.warning("--resume: skipped a checkpoint that cannot be read: \(d)") }
            state.checkpoint = latest.path
            state.lastLoss = st.lastLoss
            break
        }
        if state.checkpoint == nil && !damaged.isEmpty {
            throw TrainingError.badCheckpoint(path: o.outDir, reason: "no checkpoint can be read: \(damaged.joined(separator: "; ")) (move them aside to start from step 0)")
        }
        if o.resume && rank == 0 && state.checkpoint == nil {
            logger.warning("--resume: no complete checkpoint in \(o.outDir), starting from step 0")
        }
        if o.resume && rank == 0 {
            // The steps after the checkpoint are run again: drop their rows of the interrupted run.
            try MetricsWriter.truncate(path: metricsPath, keepingStepsThrough: Int(stateFields[1]))
        } else if rank == 0, let kept = try MetricsWriter.setAside(path: metricsPath) {
            // A fresh run: rows left by an earlier run of this out-dir (one stopped before its first checkpoint, or
            // there would have been a refusal) are not this run's; keep them under another name.
            logger.warning("\(metricsPath) held rows of an earlier run; kept as \(kept), this run starts a new file")
        }
        try stateFields.withUnsafeMutableBytes { try comm.broadcast($0, root: 0) }
        try comm.broadcast(UnsafeMutableRawBufferPointer(obj.parameters), root: 0)
        if stateFields[0] == 1 {
            try comm.broadcast(UnsafeMutableRawBufferPointer(adam.m), root: 0)
            try comm.broadcast(UnsafeMutableRawBufferPointer(adam.v), root: 0)
            adam.stepCount = Int(stateFields[5])
        }
        state.position = RunPosition(step: Int(stateFields[1]), epoch: Int(stateFields[2]), position: Int(stateFields[3]),
                                     seen: Int(stateFields[4]))
        return state
    }
}
