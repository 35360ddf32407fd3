// The options every training command shares (pretrain, sft, lora train, dpo, reason, distill), declared once. Every
// option is unset unless given; unset ones take `TrainingOptions.defaults(for:)` (MiniMind's defaults for the
// command's script), which is also where the help texts and the README's options table take their defaults from.
import ArgumentParser
import Foundation
import Logging
import SwiftMindDistributed
import Model
import Training

private typealias D = TrainingOptionDocs

/// The options of every training command; see the file comment.
struct TrainingArguments: ParsableArguments {
    @Option(name: D.dataPath.names, help: D.dataPath.help) var dataPath: String?
    @Option(name: D.tokenizer.names, help: D.tokenizer.help) var tokenizer: String?
    @Option(name: D.outDir.names, help: D.outDir.help) var outDir: String?
    @Option(name: D.epochs.names, parsing: .unconditional, help: D.epochs.help) var epochs: Int?
    @Option(name: D.batchSize.names, parsing: .unconditional, help: D.batchSize.help) var batchSize: Int?
    @Option(name: D.accumulationSteps.names, parsing: .unconditional, help: D.accumulationSteps.help) var accumulationSteps: Int?
    @Option(name: D.learningRate.names, parsing: .unconditional, help: D.learningRate.help) var learningRate: Double?
    @Option(name: D.gradClip.names, parsing: .unconditional, help: D.gradClip.help) var gradClip: Double?
    @Option(name: D.maxSeqLen.names, parsing: .unconditional, help: D.maxSeqLen.help) var maxSeqLen: Int?
    @Option(name: D.hiddenSize.names, parsing: .unconditional, help: D.hiddenSize.help) var hiddenSize: Int?
    @Option(name: D.numHiddenLayers.names, parsing: .unconditional, help: D.numHiddenLayers.help) var numHiddenLayers: Int?
    @Option(name: D.logInterval.names, parsing: .unconditional, help: D.logInterval.help) var logInterval: Int?
    @Option(name: D.saveInterval.names, parsing: .unconditional, help: D.saveInterval.help) var saveInterval: Int?
    @Option(name: D.seed.names, parsing: .unconditional, help: D.seed.help) var seed: UInt64?
    @Option(name: D.maxSteps.names, parsing: .unconditional, help: D.maxSteps.help) var maxSteps: Int?
    @Flag(name: D.resume.names, help: D.resume.help) var resume = false
    @Option(name: D.keepCheckpoints.names, parsing: .unconditional, help: D.keepCheckpoints.help) var keepCheckpoints: Int?
    @Option(name: D.bucketCapMB.names, parsing: .unconditional, help: D.bucketCapMB.help) var bucketCapMB: Double?
    @Option(name: D.threads.names, parsing: .unconditional, help: D.threads.help) var threads: Int?
    @Option(name: D.weightDecay.names, parsing: .unconditional, help: D.weightDecay.help) var weightDecay: Double?
    @Option(name: D.stallWarning.names, parsing: .unconditional, help: D.stallWarning.help) var stallWarning: Double?
    @Option(name: D.stallTimeout.names, parsing: .unconditional, help: D.stallTimeout.help) var stallTimeout: Double?
    @Option(name: D.dtype.names, help: ArgumentHelp(D.dtype.help.abstract, valueName: "dtype")) var dtype: String?
    @Option(name: D.gradCommDType.names, help: ArgumentHelp(D.gradCommDType.help.abstract, valueName: "dtype")) var gradCommDType: String?
    @Option(name: StageOptionDocs.cacheDir.names, help: StageOptionDocs.cacheDir.help) var cacheDir: String?
    @Option(name: StageOptionDocs.timeline.names, help: StageOptionDocs.timeline.help) var timeline: String?
    @OptionGroup var moe: MoEArguments
    // MiniMind's flags without a counterpart here: accepted, with a note (MiniMindFlags.swift).
    @Option(name: .customLong("device"), help: ArgumentHelp(
        "MiniMind's torch device: only cpu (noted: SwiftMind always trains on CPUs); cuda… and mps are refused.", valueName: "device"))
    var device: String?
    @Flag(name: .customLong("ddp"), help: "Accepted and noted: SwiftMind is data-parallel whenever started by mpirun -np N.")
    var ddp = false
    @Option(name: spellings("num-workers"), parsing: .unconditional, help: "Accepted and noted: no DataLoader workers (the data is tokenized up front).")
    var numWorkers: Int?
    @Flag(name: spellings("use-wandb"), help: "Accepted and noted: no Weights & Biases; every log line is in OUT/metrics.jsonl.")
    var useWandb = false
    @Option(name: spellings("wandb-project"), help: "Accepted and noted (see --use-wandb).")
    var wandbProject: String?
    @Option(name: spellings("local-rank"), parsing: .unconditional,
            help: "Accepted and noted: ranks come from mpirun, not from this flag.")
    var localRank: Int?
    @Option(name: spellings("warmup-iters"), parsing: .unconditional,
            help: "Accepted and ignored, as in MiniMind (its get_lr has no warmup term); a value other than 0 is noted.")
    var warmupIters: Int?

    var miniMind: MiniMindFlags {
        MiniMindFlags(device: device, ddp: ddp, numWorkers: numWorkers, useWandb: useWandb,
                      wandbProject: wandbProject, localRank: localRank, warmupIters: warmupIters)
    }
    @Option(name: .customLong("dashboard-port"), parsing: .unconditional,
            help: "Rank 0 serves the live dashboard of OUT (as `trainer dashboard`) on 127.0.0.1:PORT during the run (0 = any free port, logged).")
    var dashboardPort: Int?
    @Flag(name: .customLong("print-options"), help: "Print the resolved options as JSON and exit (nothing is read or trained).")
    var printOptions = false

    func validate() throws {
        guard !CommandLineDiagnosis.optionChecksDeferred else { return }
        try miniMind.validate()
        _ = try ComputeDTypeOption.parse(dtype)
        if let g = gradCommDType { _ = try ComputeDTypeOption.parse(g, option: "--grad-comm-dtype") }
        if let dashboardPort, !(0...65535).contains(dashboardPort) {
            throw ValidationError("--dashboard-port must be in 0…65535 (got \(dashboardPort))")
        }
        if let threads, !(1...OpenBLASRuntime.maxThreads).contains(threads) {
            throw ValidationError("--threads must be in 1…\(OpenBLASRuntime.maxThreads) (got \(threads))")
        }
    }

    /// This group's checks and its groups' (what ArgumentParser runs while it parses, unless deferred).
    func checkGroups() throws {
        try moe.validate(); try validate()
    }

    /// BLAS/kernel threads of this rank: `--threads`, else `$OPENBLAS_NUM_THREADS`, else cores / ranks on this host.
    var threadsPerRank: Int { threads ?? defaultThreadsPerRank() }

    /// `TrainingOptions.defaults(for: command)` with every option given on the command line applied.
    func options(for command: TrainingCommand) -> TrainingOptions {
        var o = TrainingOptions.defaults(for: command)
        func set<T>(_ path: WritableKeyPath<TrainingOptions, T>, _ value: T?) { if let value { o[keyPath: path] = value } }
        set(\.dataPath, dataPath); set(\.outDir, outDir); set(\.epochs, epochs); set(\.batchSize, batchSize)
        set(\.accumulationSteps, accumulationSteps); set(\.learningRate, learningRate); set(\.gradClip, gradClip)
        set(\.maxSeqLen, maxSeqLen); set(\.hiddenSize, hiddenSize); set(\.numHiddenLayers, numHiddenLayers)
        set(\.logInterval, logInterval); set(\.saveInterval, saveInterval); set(\.seed, seed); set(\.maxSteps, maxSteps)
        set(\.keepCheckpoints, keepCheckpoints); set(\.bucketCapMB, bucketCapMB); set(\.weightDecay, weightDecay)
        set(\.stallWarning, stallWarning); set(\.stallTimeout, stallTimeout)
        o.resume = resume
        if let cacheDir { o.cacheDir = cacheDir }
        if let timeline { o.timeline = timeline }
        // Checked by validate(); nil = the platform default, resolved with the model (TrainingOptions.resolvedDType).
        o.dtype = dtype.flatMap { try? ComputeDTypeOption.parse($0) }
        o.gradCommDType = gradCommDType.flatMap { try? ComputeDTypeOption.parse($0, option: "--grad-comm-dtype") } ?? .float32
        o.moe = moe.settings
        // The data is tokenized on every core of the host, whatever the BLAS threads per rank.
        o.threads = max(threadsPerRank, ProcessInfo.processInfo.activeProcessorCount)
        return o
    }

    /// A failed option check of the Training module as a command-line error (message + the command's usage).
    static func commandLineError(_ check: () throws -> Void) throws {
        do { try check() } catch let e as TrainingError { throw ValidationError(e.description) }
    }

    /// Runs a training command: `--print-options` prints `options` as JSON and returns; otherwise the MiniMind notes
    /// (rank 0), BLAS threads, the communicator and a logger labelled `label`, then `train`. A failure on any rank
    /// of several aborts them all.
    func run<O: Encodable>(_ command: TrainingCommand, options: O, label: String,
                           _ train: (Communicator, Logger) throws -> Void) throws {
        let rank0 = LaunchEnvironment.rank() == 0
        if rank0 { for n in miniMind.notes { FileHandle.standardError.write(Data("note: \(n)\n".utf8)) } }
        if printOptions {
            if rank0 { print(try ResolvedOptions.json(command: command, options: options, notes: miniMind.notes)) }
            return
        }
        TrainerLogging.bootstrap()
        let comm = try makeCommunicator()
        OpenBLASRuntime.setThreads(threadsPerRank, log: false)
        var logger = Logger(label: label)
        logger[metadataKey: "rank"] = "\(comm.rank)"
        do {
            try RunDashboard.around(rank: comm.rank, outDir: self.options(for: command).outDir, port: dashboardPort, logger: logger) {
                try train(comm, logger)
            }
        } catch let p as Preempted {
            // Every rank stopped at the same step boundary, after rank 0's checkpoint: a clean exit with the code.
            if comm.rank == 0 { FileHandle.standardError.write(Data("\(p)\n".utf8)) }
            comm.finalize()
            Foundation.exit(Preempted.exitCode)
        } catch {
            if comm.size > 1 { comm.abort(message: "\(label) failed: \(error)", code: 1) }
            comm.finalize()
            throw error
        }
        comm.finalize()
    }
}

/// What `--print-options` prints: the command and its resolved options (one JSON object, sorted keys).
enum ResolvedOptions {
    struct Printed<O: Encodable>: Encodable { let command: String; let options: O; let notes: [String] }
    static func json<O: Encodable>(command: TrainingCommand, options: O, notes: [String]) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return String(decoding: try e.encode(Printed(command: command.rawValue, options: options, notes: notes)), as: UTF8.self)
    }
}
