// `trainer pretrain`: data-parallel pretraining (run under mpirun for several ranks, or alone as one process).
import ArgumentParser
import CBLAS
import Foundation
import Logging
import SwiftMindDistributed
import Training

/// Logs go to stderr (stdout stays free for machine-readable output); bootstrapped once per process.
enum TrainerLogging {
    static let once: Void = {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = ProcessInfo.processInfo.environment["SWIFTMIND_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) } ?? .info
            return h
        }
    }()
    static func bootstrap() { _ = once }
}

/// Threads per rank: `$OPENBLAS_NUM_THREADS` when set, else the cores of this host divided among the ranks on it
/// (OpenMPI's local size).
func defaultThreadsPerRank() -> Int {
    let env = ProcessInfo.processInfo.environment
    if let t = env["OPENBLAS_NUM_THREADS"].flatMap({ Int($0) }), t > 0 { return t }
    let local = env["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap { Int($0) } ?? env["SLURM_NTASKS_PER_NODE"].flatMap { Int($0) } ?? 1
    return max(1, ProcessInfo.processInfo.activeProcessorCount / max(local, 1))
}

struct Pretrain: ParsableCommand, DeferredOptionChecks {
    static let configuration = CommandConfiguration(
        commandName: "pretrain",
        abstract: "Pretrain a MiniMind model on a {\"text\"} jsonl, data-parallel over MPI (mpirun -np N trainer pretrain …).",
        discussion: "Options take MiniMind's names and train_pretrain.py's defaults; its snake_case spellings (--batch_size …) and its whole command line (--use_moe True, --dtype bfloat16, --ddp …) are accepted too.")

    @OptionGroup var training: TrainingArguments

    /// The resolved options: `TrainingOptions.defaults(for: .pretrain)` with the command line applied.
    func options() -> PretrainOptions {
        var o = PretrainOptions()
        o.common = training.options(for: .pretrain)
        if let t = training.tokenizer { o.tokenizer = t }
        return o
    }

    func validate() throws {
        guard !CommandLineDiagnosis.optionChecksDeferred else { return }
        try TrainingArguments.commandLineError { try options().check() }
    }

    func checkOptions() throws {
        try training.checkGroups()
        try TrainingArguments.commandLineError { try options().check() }
    }

    func run() throws {
        let o = options()
        try training.run(.pretrain, options: o, label: "pretrain") { comm, logger in
            try TrainingRunner(options: o, communicator: comm, logger: logger).run()
        }
    }
}
