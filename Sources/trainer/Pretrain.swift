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

struct Pretrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pretrain",
        abstract: "Pretrain a MiniMind model on a {\"text\"} jsonl, data-parallel over MPI (mpirun -np N trainer pretrain …).",
        discussion: "Options take MiniMind's names; the snake_case spellings (--batch_size …) are accepted too.")

    @Option(name: [.customLong("out-dir"), .customLong("out_dir")], help: "Output directory: checkpoints, final/, metrics.jsonl.")
    var outDir: String = "out"
    @Option(name: [.customLong("data-path"), .customLong("data_path")], help: "Pretrain jsonl ({\"text\": …} per line).")
    var dataPath: String = "dataset/pretrain_hq.jsonl"
    @Option(name: .customLong("tokenizer"), help: "tokenizer.json, or a directory holding it (and tokenizer_config.json).")
    var tokenizer: String = "model"
    @Option(name: .customLong("epochs")) var epochs: Int = 1
    @Option(name: [.customLong("batch-size"), .customLong("batch_size")], help: "Samples per micro-batch per rank.")
    var batchSize: Int = 32
    @Option(name: [.customLong("learning-rate"), .customLong("learning_rate")], help: "Peak of MiniMind's cosine schedule.")
    var learningRate: Double = 5e-4
    @Option(name: [.customLong("accumulation-steps"), .customLong("accumulation_steps")], help: "Micro-batches per optimizer step.")
    var accumulationSteps: Int = 8
    @Option(name: [.customLong("grad-clip"), .customLong("grad_clip")], help: "Global gradient-norm clip.")
    var gradClip: Double = 1.0
    @Option(name: [.customLong("max-seq-len"), .customLong("max_seq_len")], help: "Tokens per sample (truncate/pad).")
    var maxSeqLen: Int = 512
    @Option(name: [.customLong("hidden-size"), .customLong("hidden_size")]) var hiddenSize: Int = 512
    @Option(name: [.customLong("num-hidden-layers"), .customLong("num_hidden_layers")]) var numHiddenLayers: Int = 8
    @Option(name: [.customLong("log-interval"), .customLong("log_interval")], help: "Log every N optimizer steps.")
    var logInterval: Int = 100
    @Option(name: [.customLong("save-interval"), .customLong("save_interval")], help: "Checkpoint every N optimizer steps.")
    var saveInterval: Int = 100
    @Option(name: .customLong("seed"), help: "Seeds the initialisation and the per-epoch shuffle (seed + epoch).")
    var seed: UInt64 = 1337
    @Option(name: [.customLong("max-steps"), .customLong("max_steps")], help: "Stop after N optimizer steps; the schedule spans them.")
    var maxSteps: Int?
    @Flag(name: .customLong("resume"),
          help: "Continue from the newest complete OUT/checkpoint-*/ (any world size).")
    var resume = false
    @Option(name: [.customLong("keep-checkpoints"), .customLong("keep_checkpoints")], help: "Checkpoints kept.")
    var keepCheckpoints: Int = 2
    @Option(name: [.customLong("bucket-cap-mb"), .customLong("bucket_cap_mb")], help: "Gradient all-reduce bucket size (MB).")
    var bucketCapMB: Double = 25
    @Option(name: .customLong("threads"), help: "BLAS/kernel threads per rank (default: $OPENBLAS_NUM_THREADS, else cores / ranks on this host); rank 0 tokenizes on all cores.")
    var threads: Int?
    @Option(name: [.customLong("cache-dir"), .customLong("cache_dir")], help: "Token cache root (default ~/.cache/swiftmind/tokens).")
    var cacheDir: String?
    @Option(name: [.customLong("weight-decay"), .customLong("weight_decay")], help: "AdamW decoupled weight decay.")
    var weightDecay: Double = 0.01
    @OptionGroup var moe: MoEArguments

    func run() throws {
        TrainerLogging.bootstrap()
        let comm = try makeCommunicator()
        let threadsPerRank = threads ?? defaultThreadsPerRank()
        openblas_set_num_threads(Int32(threadsPerRank))
        var o = PretrainOptions()
        o.outDir = outDir; o.dataPath = dataPath; o.tokenizer = tokenizer; o.epochs = epochs; o.batchSize = batchSize
        o.learningRate = learningRate; o.accumulationSteps = accumulationSteps; o.gradClip = gradClip; o.maxSeqLen = maxSeqLen
        o.hiddenSize = hiddenSize; o.numHiddenLayers = numHiddenLayers; o.logInterval = logInterval
        o.saveInterval = saveInterval; o.seed = seed; o.maxSteps = maxSteps; o.resume = resume
        o.keepCheckpoints = keepCheckpoints; o.bucketCapMB = bucketCapMB; o.threads = max(threadsPerRank, ProcessInfo.processInfo.activeProcessorCount)
        o.cacheDir = cacheDir; o.weightDecay = weightDecay; o.moe = moe.settings
        var logger = Logger(label: "pretrain")
        logger[metadataKey: "rank"] = "\(comm.rank)"
        do {
            try Pretrainer(options: o, communicator: comm, logger: logger).run()
        } catch {
            if comm.size > 1 { comm.abort(message: "pretrain failed: \(error)", code: 1) }
            comm.finalize()
            throw error
        }
        comm.finalize()
    }
}
