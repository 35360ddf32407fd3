// Rank 0's checkpoints of a run: OUT/checkpoint-<step>/ every --save-interval steps and at the last step (the newest
// --keep-checkpoints kept), OUT/final/ at the end.
import Foundation
import Model

/// Writes a run's checkpoint directories (rank 0): the weights (LoRA: the unchanged base too, so a checkpoint stays a
/// loadable model directory), the tokenizer files, the objective's own files and, in a checkpoint, the optimizer
/// moments and trainer_state.json.
struct RunCheckpointer {
    let options: TrainingOptions
    let objective: TrainingObjective
    let adam: AdamW
    let plan: StepPlan
    /// FNV-1a of the objective's data identity: trainer_state.json's `data_hash`.
    let dataHash: String
    let tokenizerFiles: [String]

    init(options: TrainingOptions, objective: TrainingObjective, adam: AdamW, plan: StepPlan, dataHash: String) {
        self.options = options
        self.objective = objective
        self.adam = adam
        self.plan = plan
        self.dataHash = dataHash
        tokenizerFiles = RunCheckpointer.tokenizerFiles(objective.tokenizerPath)
    }

    /// Tokenizer files to copy into checkpoints: `tokenizer.json` and, if present, `tokenizer_config.json` and
    /// `chat_template.jinja`.
    static func tokenizerFiles(_ path: String) -> [String] {
        var isDir: ObjCBool = false
        let fm = FileManager.default
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else { return [] }
        let dir = isDir.boolValue ? path : (path as NSString).deletingLastPathComponent
        let tj = isDir.boolValue ? dir + "/tokenizer.json" : path
        return [tj, dir + "/tokenizer_config.json", dir + "/chat_template.jinja"].filter { fm.fileExists(atPath: $0) }
    }

    /// Writes OUT/`name`; `full` adds the optimizer moments and the trainer state at `at` (for --resume).
    /// - Returns: the directory written.
    func save(_ name: String, full: Bool, at: RunPosition, lastLoss: Double?) throws -> String {
        let o = options
        let st = TrainerState(step: at.step, epoch: at.epoch, samplePosition: at.position, globalSamplesSeen: at.seen,
                              totalSteps: plan.totalSteps, rngSeed: o.seed, worldSize: plan.world, batchSize: plan.batchSize,
                              accumulationSteps: plan.accumulation, learningRate: o.learningRate, maxSeqLen: o.maxSeqLen,
                              dataHash: dataHash, lastLoss: lastLoss,
                              dtype: objective.model.matmulDType.rawValue,
                              dtypeEngine: objective.model.matmulDType == .float32 ? "fp32 (OpenBLAS sgemm)" : MiniMindModel.bf16Engine,
                              gradCommDType: o.gradCommDType.rawValue, dataIdentity: objective.dataIdentity)
        let p = try Checkpoints.write(name: name, outDir: o.outDir, model: objective.model,
                                      optimizer: full ? OptimizerSnapshot(m: Array(adam.m), v: Array(adam.v), step: adam.stepCount) : nil,
                                      state: full ? st : nil, tokenizerFiles: tokenizerFiles, chatTemplate: objective.writtenChatTemplate)
        try objective.didWrite(directory: p)
        return p
    }

    /// After step `at.step`: OUT/checkpoint-<step> when --save-interval (or the last step) asks for one, then the
    /// oldest pruned past --keep-checkpoints.
    /// - Returns: the checkpoint written, nil when none was due.
    func saveIfDue(at: RunPosition, lastLoss: Double?) throws -> String? {
        guard at.step % options.saveInterval == 0 || at.step == plan.totalSteps else { return nil }
        return try saveCheckpoint(at: at, lastLoss: lastLoss)
    }

    /// OUT/checkpoint-<step> (full, for --resume), then the oldest pruned past --keep-checkpoints.
    /// - Returns: the checkpoint written.
    func saveCheckpoint(at: RunPosition, lastLoss: Double?) throws -> String {
        let p = try save("\(Checkpoints.prefix)\(at.step)", full: true, at: at, lastLoss: lastLoss)
        Checkpoints.prune(outDir: options.outDir, keep: options.keepCheckpoints)
        return p
    }

    /// OUT/final (weights only), then the objective's top-level outputs (OUT/lora.safetensors).
    func saveFinal(at: RunPosition, lastLoss: Double?) throws -> String {
        let p = try save("final", full: false, at: at, lastLoss: lastLoss)
        try objective.didFinish(outDir: options.outDir)
        return p
    }
}
