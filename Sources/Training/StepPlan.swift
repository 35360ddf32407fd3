// How a run is cut into optimizer steps: the sample counts of one step, the number of steps, and which samples each
// step of this rank reads (MiniMind's epochs over a DDP-style sampler, the incomplete tail step of an epoch dropped).
import Datasets

/// Where a run stands: optimizer steps done, the epoch and the global sample position in it of the next sample, and
/// the samples consumed so far (over all ranks). What trainer_state.json records and --resume restores.
struct RunPosition {
    var step = 0
    var epoch = 0
    var position = 0
    var seen = 0
}

/// The shape of one optimizer step and the run's number of steps.
struct StepPlan {
    /// Samples (DPO: pairs) per micro-batch per rank.
    let batchSize: Int
    /// Micro-batches per step.
    let accumulation: Int
    /// Positions per row.
    let seqLen: Int
    /// Rows of one micro-batch (`batchSize`, DPO `2 × batchSize`).
    let rowsPerBatch: Int
    let world: Int
    /// Optimizer steps of the whole run (the schedule spans them).
    let totalSteps: Int

    var perRankPerStep: Int { batchSize * accumulation }
    var globalPerStep: Int { perRankPerStep * world }
    /// Tokens one step reads over all ranks.
    var tokensPerStep: Double { Double(globalPerStep * rowsPerBatch / batchSize * seqLen) }

    /// The steps from `start` to the end of the epochs, capped at `maxSteps`.
    /// - Throws: `TrainingError.invalidOption` when a fresh run has fewer samples than one step needs.
    init(options o: TrainingOptions, dataset: BatchDataset, world: Int, from start: RunPosition) throws {
        batchSize = o.batchSize
        accumulation = o.accumulationSteps
        seqLen = dataset.seqLen
        rowsPerBatch = dataset.rows(forSamples: o.batchSize)
        self.world = world
        let perRankPerStep = o.batchSize * o.accumulationSteps
        let remaining = StepPlan.plannedSteps(datasetSize: dataset.count, epochs: o.epochs, fromEpoch: start.epoch,
                                              position: start.position, world: world, samplesPerRankPerStep: perRankPerStep)
        var total = start.step + remaining
        if let ms = o.maxSteps { total = min(total, ms) }
        if total <= start.step && start.step == 0 {
            throw TrainingError.invalidOption("\(o.dataPath): \(dataset.count) samples are fewer than one optimizer step needs (\(perRankPerStep * world) = batch \(o.batchSize) × accumulation \(o.accumulationSteps) × world \(world))")
        }
        totalSteps = total
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
}

/// This rank's samples step by step: the rest of each epoch's order from the global position (`DistributedSampler`),
/// `perRankPerStep` a step; an epoch with fewer left than a step is left (its tail dropped) for the next one.
struct SampleWalk {
    let sampler: DistributedSampler
    let perRankPerStep: Int
    let epochs: Int
    private var indices: [Int] = []
    private var loadedEpoch = -1
    private var start = 0

    init(sampler: DistributedSampler, perRankPerStep: Int, epochs: Int) {
        self.sampler = sampler
        self.perRankPerStep = perRankPerStep
        self.epochs = epochs
    }

    /// The sample indices of the next step, moving `at` to the start of the next epoch when this one is exhausted;
    /// nil when the last epoch is. `at.position` / `at.seen` are advanced by the caller once the step has run.
    mutating func next(_ at: inout RunPosition) -> ArraySlice<Int>? {
        while true {
            if loadedEpoch != at.epoch {   // the rest of this epoch, from the current global position
                indices = sampler.indices(epoch: at.epoch, startPosition: at.position)
                loadedEpoch = at.epoch; start = 0
            }
            if indices.count - start >= perRankPerStep {
                defer { start += perRankPerStep }
                return indices[start ..< start + perRankPerStep]
            }
            at.epoch += 1; at.position = 0; loadedEpoch = -1
            if at.epoch >= epochs { return nil }
        }
    }
}
