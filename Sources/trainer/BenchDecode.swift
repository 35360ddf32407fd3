// `trainer bench-decode`: KV-cache decoding speed at batch 1 (prefill time, then tokens/s of single-token steps).
import ArgumentParser
import Foundation
import Model
import CBLAS

struct BenchDecode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-decode",
        abstract: "Time prefill of a random prompt and greedy KV-cache decoding (batch 1) on a random or given model.",
        discussion: """
        Defaults: MiniMind2-small (hidden 512, 8 layers, 8/2 heads, vocab 6400), prompt 128 tokens, 256 new tokens,
        greedy (temperature 0, no eos). Prefill = one forwardIncremental over the prompt (logits of its last token);
        decode tokens/s = new tokens / time of the single-token steps (sampling included). Best of --repeats runs
        after one warm-up. --json prints one line.
        """)

    @Option(help: "Model directory (default: random weights with the options below).") var model: String?
    @Option(help: "LoRA adapter file (from `trainer lora`), merged into --model's weights at load.") var lora: String?
    @OptionGroup var shape: ModelShapeArguments
    @OptionGroup var weights: WeightDTypeArgument
    @Option(name: .customLong("prompt-tokens"), parsing: .unconditional) var promptTokens = 128
    @Option(name: .customLong("new-tokens"), parsing: .unconditional) var newTokens = 256
    @Option(parsing: .unconditional) var repeats = 3
    @Option(parsing: .unconditional, help: "Sampling temperature of the single-sequence decode (0 = greedy); top-p 0.85 when > 0.") var temperature: Float = 0
    @Option(parsing: .unconditional, help: "Also time batched decode steps (forwardDecodeBatch) of this many sequences, as the server's worker runs them.")
    var batch: Int = 0
    @Option(parsing: .unconditional, help: "OpenBLAS threads (default: OpenBLAS's own choice).") var threads: Int?
    @Option(parsing: .unconditional) var seed: UInt64 = 0
    @Flag var json = false

    func validate() throws {
        if model == nil { _ = try shape.config(source: "bench-decode options") }
        try NumericOption.check(promptTokens, "--prompt-tokens", in: 1...NumericOption.maxTokens)
        try NumericOption.check(newTokens, "--new-tokens", in: 1...NumericOption.maxTokens)
        try NumericOption.check(repeats, "--repeats", in: 0...1_000_000)
        try NumericOption.finite(temperature, "--temperature", "≥ 0", { $0 >= 0 })
        try NumericOption.check(batch, "--batch", in: 0...1024)
        try NumericOption.threads(threads)
    }

    func run() throws {
        OpenBLASRuntime.setThreads(threads)
        let m: MiniMindModel
        if lora != nil && model == nil { throw ValidationError("--lora needs --model DIR") }
        if let model {
            m = try MiniMindModel.load(huggingFaceDirectory: model)
            if let lora { try m.mergeLoRA(path: lora, modelDirectory: model) }
        } else {
            m = MiniMindModel(config: try shape.config(source: "bench-decode options"), seed: seed)
        }
        weights.apply(to: m)
        var rng = SplitMix64(seed: seed &+ 7)
        let V = m.config.vocabSize
        let prompt = (0..<promptTokens).map { _ in Int32(3 + rng.next() % UInt64(V - 3)) }
        var bestPrefill = Double.infinity, bestDecode = Double.infinity
        var cpuPrefill = Double.infinity, cpuDecode = Double.infinity
        var produced = 0
        for r in 0...max(1, repeats) {
            let gen = TokenGenerator(model: m, promptIds: prompt,
                                     options: SamplingOptions(maxNewTokens: newTokens, temperature: temperature, topP: 0.85, eosTokenId: nil))
            let t0 = nowSeconds(), c0 = Bench.cpuSeconds()
            guard gen.next() != nil else { break }          // prefill + first token
            let t1 = nowSeconds(), c1 = Bench.cpuSeconds()
            var n = 0
            while gen.next() != nil { n += 1 }
            let t2 = nowSeconds(), c2 = Bench.cpuSeconds()
            if r == 0 { continue }                         // warm-up
            bestPrefill = min(bestPrefill, t1 - t0)
            bestDecode = min(bestDecode, (t2 - t1) / Double(max(n, 1)))
            cpuPrefill = min(cpuPrefill, c1 - c0)
            cpuDecode = min(cpuDecode, (c2 - c1) / Double(max(n, 1)))
            produced = n + 1
        }
        let tps = 1 / bestDecode
        // Floor: one bare cblas_sgemv per weight matrix (every 2-D parameter; embed_tokens doubles as the head), the
        // memory traffic a decode step cannot avoid, timed (mean of 64 passes) in the same run, under the same load.
        var floorMs = 0.0
        do {
            let x = [Float](repeating: 0.01, count: 8192)
            var y = [Float](repeating: 0, count: max(V, 8192))
            let runs = 64
            let t0 = nowSeconds()
            for _ in 0..<runs {
                y.withUnsafeMutableBufferPointer { yb in
                    for p in m.parameters where p.shape.count == 2 {
                        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(p.shape[0]), Int32(p.shape[1]), 1, m.params.baseAddress! + p.offset,
                                    Int32(p.shape[1]), x, 1, 0, yb.baseAddress!, 1)
                    }
                }
            }
            floorMs = (nowSeconds() - t0) * 1e3 / Double(runs)
        }
        // Bytes of weights a decode step reads: every 2-D parameter (plus an untied head) in --weight-dtype; the floor
        // of a low-precision step is those bytes at the bandwidth the bare sgemv pass reached.
        let fp32Bytes = Double(m.parameters.filter { $0.shape.count == 2 }.reduce(0) { $0 + $1.count } * 4)
        let weightBytes = m.inferenceWeights.map { Double($0.byteCount) } ?? fp32Bytes
        let gbPerS = fp32Bytes / floorMs / 1e6
        let dtypeFloorMs = weightBytes / gbPerS / 1e6
        var batchTps = 0.0, batchCpu = 0.0
        if batch > 1 {
            let caches = (0..<batch).map { _ in KVCache(config: m.config, maxLength: promptTokens + newTokens + 1) }
            for c in caches { _ = m.forwardIncremental(tokens: prompt, cache: c) }
            var logits = [Float](repeating: 0, count: batch * V)
            var toks = [Int32](repeating: 5, count: batch)
            let t0 = nowSeconds(), c0 = Bench.cpuSeconds()
            for _ in 0..<newTokens {
                logits.withUnsafeMutableBufferPointer { m.forwardDecodeBatch(tokens: toks, caches: caches, logits: $0) }
                for b in 0..<batch {   // greedy
                    var best = 0
                    for j in 1..<V where logits[b * V + j] > logits[b * V + best] { best = j }
                    toks[b] = Int32(best)
                }
            }
            let dt = nowSeconds() - t0
            batchTps = Double(batch * newTokens) / dt
            batchCpu = (Bench.cpuSeconds() - c0) / Double(newTokens) * 1e3
        }
        if json {
            let d: [String: Any] = ["prefill_ms": bestPrefill * 1e3, "decode_tokens_per_s": tps, "prompt_tokens": promptTokens,
                                    "new_tokens": produced, "prefill_cpu_ms": cpuPrefill * 1e3, "decode_cpu_ms_per_token": cpuDecode * 1e3, "params": m.numParameters, "threads": OpenBLASRuntime.threads,
                                    "core": OpenBLASRuntime.coreName, "batch": batch, "sgemv_floor_ms": floorMs, "batch_tokens_per_s": batchTps, "batch_cpu_ms_per_step": batchCpu,
                                    "weight_dtype": weights.weightDType, "weight_bytes": weightBytes, "floor_ms": dtypeFloorMs,
                                    // No converted matrix (rows not a multiple of 32): no low-precision floor.
                                    "decode_over_floor": dtypeFloorMs > 0 ? bestDecode * 1e3 / dtypeFloorMs : NSNull(),
                                    "kernels": m.inferenceWeights == nil ? "openblas" : InferenceWeights.kernelName,
                                    "decode_pool": m.inferenceWeights == nil ? "openblas" : InferenceWeights.decodePool,
                                    "q8_activations": m.inferenceWeights?.dtype == .q8_0 ? m.inferenceWeights!.q8Activations.rawValue : "-"]
            print(String(data: try JSONSerialization.data(withJSONObject: d, options: [.sortedKeys]), encoding: .utf8)!)
        } else {
            print(String(format: "model: hidden %d, layers %d, vocab %d, params %.1f M; OpenBLAS %@ × %d threads",
                         m.config.hiddenSize, m.config.numHiddenLayers, V, Double(m.numParameters) / 1e6,
                         OpenBLASRuntime.coreName, OpenBLASRuntime.threads))
            print(String(format: "prefill %d tokens: %.2f ms (%.0f tokens/s)", promptTokens, bestPrefill * 1e3, Double(promptTokens) / bestPrefill))
            print(String(format: "decode: %.1f tokens/s (%.3f ms/token, %d new tokens, best of %d)", tps, bestDecode * 1e3, produced, repeats))
            print(String(format: "process CPU time: prefill %.2f ms, decode %.3f ms/token (all threads; wall ≫ CPU/threads means other processes share the cores)",
                         cpuPrefill * 1e3, cpuDecode * 1e3))
            print(String(format: "bare sgemv over all weights (the fp32 floor of a decode step, timed in this run): %.3f ms (%.1f GB/s); decode step / fp32 floor = %.2f",
                         floorMs, gbPerS, bestDecode * 1e3 / floorMs))
            if m.inferenceWeights != nil {
                let iw = m.inferenceWeights!
                print(String(format: "%@ weights: %.1f MB; their floor at that bandwidth: %.3f ms; decode step / %@ floor = %.2f (%@ kernels%@, %@ pool%@)",
                             weights.weightDType, weightBytes / 1e6, dtypeFloorMs, weights.weightDType, bestDecode * 1e3 / dtypeFloorMs,
                             InferenceWeights.kernelName, InferenceWeights.simdKernels ? "" : ": no AVX2+FMA+F16C",
                             InferenceWeights.decodePool, iw.dtype == .q8_0 ? ", \(iw.q8Activations.rawValue) activations" : ""))
            }
            if batch > 1 {
                print(String(format: "batched decode (%d sequences): %.1f tokens/s aggregate, %.2f ms/step wall, %.2f ms/step CPU",
                             batch, batchTps, Double(batch) / batchTps * 1e3, batchCpu))
            }
        }
    }

    func nowSeconds() -> Double {
        var ts = timespec(); clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }
}
