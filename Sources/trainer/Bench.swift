// `trainer bench`: training speed and memory of one process on random tokens (forward, loss, backward, clip, AdamW).
import ArgumentParser
import Foundation
import Datasets
import Model
import Training

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Train a few steps on random tokens; print tokens/s, GFLOP/s, peak RSS and a per-part breakdown.",
        discussion: """
        FLOPs per step = 6·params·tokens + attention (12·layers·T·hidden per token, forward + backward, as PaLM
        counts it; the causal half-skip is not credited). Timed steps exclude --warmup steps. --json prints one line
        {"tokens_per_s": …, "gflops": …, "peak_rss_mb": …, …}.
        """)

    @OptionGroup var shape: ModelShapeArguments
    @Option(name: .customLong("batch-size"), parsing: .unconditional) var batchSize = 4
    @Option(name: .customLong("max-seq-len"), parsing: .unconditional) var maxSeqLen = 512
    @Option(parsing: .unconditional) var steps = 5
    @Option(parsing: .unconditional) var warmup = 1
    @Option(parsing: .unconditional, help: "OpenBLAS threads (default: OpenBLAS's own choice).") var threads: Int?
    @Option(parsing: .unconditional) var seed: UInt64 = 0
    @Flag var json = false
    @Flag(name: .customLong("no-batch-parallel"), help: "Thread each sgemm with OpenBLAS instead of splitting the batch across threads.")
    var noBatchParallel = false
    @OptionGroup var moe: MoEArguments
    @Option(name: .customLong("dtype"), help: ArgumentHelp(ComputeDTypeOption.help, valueName: "dtype")) var dtype: String?

    func validate() throws {
        _ = try ComputeDTypeOption.parse(dtype)
        if steps < 1 || steps > Bench.maxSteps { throw ValidationError("--steps must be in 1…\(Bench.maxSteps) (got \(steps))") }
        if warmup < 0 || warmup > Bench.maxSteps { throw ValidationError("--warmup must be in 0…\(Bench.maxSteps) (got \(warmup))") }
        if batchSize < 1 || maxSeqLen < 1 { throw ValidationError("--batch-size and --max-seq-len must be ≥ 1") }
        let positions = ModelConfig().maxPositionEmbeddings
        if maxSeqLen > positions { throw ValidationError("--max-seq-len must be ≤ max_position_embeddings \(positions) (got \(maxSeqLen))") }
        if let threads, !(1...OpenBLASRuntime.maxThreads).contains(threads) {
            throw ValidationError("--threads must be in 1…\(OpenBLASRuntime.maxThreads) (got \(threads))") }
        // Logits [B, T, V] (and the activations with them) scale with B·T: too large is an error, not a trap or a
        // terabyte allocation. The model's own sizes are checked by ModelConfig.validate in run().
        _ = try config()
        let (cells, o1) = batchSize.multipliedReportingOverflow(by: maxSeqLen)
        let (logits, o2) = cells.multipliedReportingOverflow(by: max(shape.vocabSize, 1))
        guard !o1, !o2, logits <= 1 << 31 else {
            throw ValidationError("--batch-size × --max-seq-len × --vocab-size = \(batchSize) × \(maxSeqLen) × \(shape.vocabSize) logits per step is too large (limit 2^31); lower --batch-size or --max-seq-len") }
    }

    /// The model the options describe, validated (an impossible shape is a command-line error).
    func config() throws -> ModelConfig {
        try shape.config(source: "bench options") { moe.settings.apply(to: &$0) }
    }

    /// Largest --steps / --warmup (a benchmark, not a training run).
    static let maxSteps = 1_000_000

    static func cpuSeconds() -> Double {
        var ru = rusage(); getrusage(RUSAGE_SELF.rawValue, &ru)
        return Double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + Double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6
    }

    func run() throws {
        OpenBLASRuntime.setThreads(threads)
        let cfg = try config()
        let B = batchSize, T = maxSeqLen, N = B * T
        let m = MiniMindModel(config: cfg, seed: seed)
        m.batchParallel = !noBatchParallel
        // As the training commands: the default is bfloat16 on a native-bf16 CPU, float32 for MoE.
        let dt = dtype == nil && cfg.useMoe ? .float32 : try ComputeDTypeOption.parse(dtype)
        if dt == .bfloat16 && cfg.useMoe { throw ValidationError("--dtype bfloat16 is not implemented for MoE models; use --dtype float32") }
        m.matmulDType = dt
        if !json { print("dtype \(dt.rawValue): \(ComputeDTypeOption.engine(dt))") }
        let opt = AdamW(count: m.numParameters, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.01)
        var rng = SplitMix64(seed: seed &+ 1)
        let ids = (0..<(N + 1)).map { _ in Int32(rng.next() % UInt64(cfg.vocabSize)) }
        // Next-token cross-entropy over every position, through the training objectives' micro-step.
        var batch = Batch(batchSize: B, seqLen: T)
        batch.inputIds = Array(ids[0..<N]); batch.labels = Array(ids[1...])
        batch.lossMask = [Float](repeating: 1, count: N); batch.maskCount = N
        let objective = ObjectiveStep(model: m, head: .crossEntropy)
        var expertTokens = [[Int]](repeating: [Int](repeating: 0, count: cfg.nRoutedExperts), count: cfg.numHiddenLayers)
        var aux = 0.0
        var loss = 0.0, tLoss = 0.0, tOpt = 0.0, tTotal = 0.0, cpuStart = 0.0
        for s in 0..<(warmup + steps) {
            let timed = s >= warmup
            if s == warmup { m.profile = ModelProfile(); cpuStart = Bench.cpuSeconds() }
            m.profiling = true
            let t0 = Date()
            var t1 = t0, t2 = t0
            let r = objective.runAlone(batch, inspectLogits: { _ in t1 = Date() }, afterLoss: { t2 = Date() })
            let t3 = Date()
            if cfg.useMoe && timed {
                aux = r.auxLoss
                for (l, row) in m.lastExpertCounts.enumerated() { for (e, c) in row.enumerated() { expertTokens[l][e] += c } }
            }
            clipGradNorm(m.grads, maxNorm: 1.0)
            opt.step(params: m.params, grads: UnsafeBufferPointer(m.grads), lr: Float(cosineLR(step: s, totalSteps: warmup + steps, baseLR: 5e-4)))
            m.parametersDidChange()
            let t4 = Date()
            loss = r.loss
            if timed {
                tLoss += t2.timeIntervalSince(t1); tOpt += t4.timeIntervalSince(t3); tTotal += t4.timeIntervalSince(t0)
            }
            if !json {
                print(String(format: "step %d%@: loss %.4f, %.3f s (fwd %.3f, loss %.3f, bwd %.3f, opt %.3f)", s, timed ? "" : " (warmup)", loss,
                             t4.timeIntervalSince(t0), t1.timeIntervalSince(t0), t2.timeIntervalSince(t1), t3.timeIntervalSince(t2), t4.timeIntervalSince(t3)))
            }
        }
        let cpu = Bench.cpuSeconds() - cpuStart
        let p = m.profile
        let tokens = Double(N * steps)
        // MoE: only the active parameters (top-k routed + shared experts + gate) do work for a token.
        let flops = (6 * Double(cfg.useMoe ? cfg.activeParameterCount : m.numParameters) + 12 * Double(cfg.numHiddenLayers * T * cfg.hiddenSize)) * tokens
        let tps = tokens / tTotal, gflops = flops / tTotal / 1e9
        var ru = rusage(); getrusage(RUSAGE_SELF.rawValue, &ru)
        let rssMB = Double(ru.ru_maxrss) / 1024
        let other = tTotal - p.matmul - p.attention - p.elementwise - tLoss - tOpt
        if json {
            let d: [String: Any] = ["tokens_per_s": tps, "gflops": gflops, "peak_rss_mb": rssMB, "step_s": tTotal / Double(steps),
                                    "params": m.numParameters, "batch_size": B, "seq_len": T, "threads": OpenBLASRuntime.threads,
                                    "core": OpenBLASRuntime.coreName, "loss": loss, "dtype": dt.rawValue, "dtype_engine": ComputeDTypeOption.engine(dt), "cpu_s_per_step": cpu / Double(steps),
                                    "tokens_per_cpu_s": tokens / cpu, "use_moe": cfg.useMoe, "active_params": cfg.activeParameterCount,
                                    "tokens_per_expert": cfg.useMoe ? expertTokens : [], "aux_loss": aux,
                                    "breakdown_s": ["matmul": p.matmul / Double(steps), "attention": p.attention / Double(steps),
                                                    "norms_rope_swiglu": p.elementwise / Double(steps), "loss": tLoss / Double(steps),
                                                    "optimizer": tOpt / Double(steps), "other": other / Double(steps)]]
            let data = try JSONSerialization.data(withJSONObject: d, options: [.sortedKeys])
            print(String(data: data, encoding: .utf8)!)
        } else {
            print(String(format: "config: hidden %d, layers %d, heads %d/%d, vocab %d, params %d (%.1f M); B=%d T=%d; OpenBLAS %@ × %d threads",
                         cfg.hiddenSize, cfg.numHiddenLayers, cfg.numAttentionHeads, cfg.numKeyValueHeads, cfg.vocabSize, m.numParameters,
                         Double(m.numParameters) / 1e6, B, T, OpenBLASRuntime.coreName, OpenBLASRuntime.threads))
            if cfg.useMoe {
                print("MoE: \(cfg.nRoutedExperts) routed experts, top-\(cfg.numExpertsPerTok), \(cfg.nSharedExperts) shared; active params \(cfg.activeParameterCount); aux_loss \(String(format: "%.4f", aux)) (last step)")
                print("tokens per expert over the timed steps (each token counted once per chosen expert): \(formatExpertCounts(expertTokens))")
            }
            print(String(format: "%.1f tokens/s, %.1f GFLOP/s, %.3f s/step, peak RSS %.0f MB (activations %.0f MB)",
                         tps, gflops, tTotal / Double(steps), rssMB, Double(m.activationBytes) / 1048576))
            print(String(format: "process CPU time %.3f s/step (%.1f tokens per CPU-second; wall/CPU shows contention from other processes)",
                         cpu / Double(steps), tokens / cpu))
            let per = Double(steps)
            for (name, t) in [("matmuls (sgemm)", p.matmul), ("attention", p.attention), ("norms/RoPE/SwiGLU/residual/embedding", p.elementwise),
                              ("loss (softmax CE)", tLoss), ("optimizer (clip + AdamW)", tOpt), ("other", other)] {
                print("  " + name.padding(toLength: 38, withPad: " ", startingAt: 0) + String(format: " %7.3f s/step  %5.1f %%", t / per, 100 * t / tTotal))
            }
        }
    }
}
