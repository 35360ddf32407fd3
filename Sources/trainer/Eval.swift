// `trainer eval`: held-out masked loss and perplexity, printed as one JSON line.
import ArgumentParser
import Foundation
import Model
import Tokenizers
import Training

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Evaluate a model, one JSON line: held-out loss/perplexity on a pretrain jsonl (default), or --task sft-loss | exact-match | preference | format.")

    @Option(name: .customLong("model"), help: "Model directory (config.json, model.safetensors, tokenizer files); not with --reward-model.")
    var model: String?
    @Option(name: [.customLong("data"), .customLong("data-path"), .customLong("data_path")],
            help: "jsonl: {\"text\"} lines (loss), {\"conversations\"} (sft-loss, exact-match, format) or {\"chosen\", \"rejected\"} (preference).")
    var data: String
    @Option(name: [.customLong("max-seq-len"), .customLong("max_seq_len")], parsing: .unconditional, help: "Tokens per sample (truncate/pad).")
    var maxSeqLen: Int = 512
    @Option(name: [.customLong("batch-size"), .customLong("batch_size")], parsing: .unconditional, help: "Samples per forward.")
    var batchSize: Int = 16
    @Option(name: .customLong("tokenizer"), help: "Tokenizer file or directory (default: the model directory).")
    var tokenizer: String?
    @Option(name: .customLong("threads"), parsing: .unconditional, help: "Tokenizer threads.")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @OptionGroup var post: PostEvalArguments

    func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be ≥ 1 (got \(batchSize))") }
        guard maxSeqLen >= 2 else { throw ValidationError("--max-seq-len must be ≥ 2 (got \(maxSeqLen))") }
        guard maxSeqLen <= 1 << 20 else { throw ValidationError("--max-seq-len \(maxSeqLen) is too large (at most \(1 << 20))") }
        guard threads >= 1 else { throw ValidationError("--threads must be ≥ 1 (got \(threads))") }
        try NumericOption.threads(threads)
        if post.rewardModel != nil {
            guard post.task == "preference" else { throw ValidationError("--reward-model is for --task preference (got --task \(post.task))") }
            guard model == nil else { throw ValidationError("--task preference takes --model (DPO policy) or --reward-model, not both") }
            guard post.reference == nil, post.lora == nil, post.baseline == nil, post.betaOption == nil else {
                throw ValidationError("--reference, --baseline, --lora and --beta are not used with --reward-model") }
        } else if model == nil {
            throw ValidationError("Missing expected argument '--model <model>'")
        }
    }

    func run() throws {
        if let rm = post.rewardModel {   // PostEvalRewardCommand.swift
            return try post.runRewardPreference(rewardModel: rm, data: data, tokenizer: tokenizer, maxSeqLen: maxSeqLen)
        }
        let model = model!   // validate() requires it without --reward-model
        if post.task != "loss" { return try post.run(model: model, data: data, tokenizer: tokenizer, maxSeqLen: maxSeqLen) }
        let m = try post.loadModel(model)
        let tok = try Tokenizer.load(tokenizer ?? model)
        try m.config.checkTokenizer(vocabSize: tok.vocabSize, source: model)
        let r = try Evaluator.evaluate(model: m, tokenizer: tok, dataPath: data, maxSeqLen: maxSeqLen,
                                       batchSize: batchSize, threads: threads)
        var line: [String: Any] = ["loss": r.loss, "ppl": r.ppl, "tokens": r.tokens]
        if let f = post.lora { line["lora"] = f }
        let d = try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys])
        print(String(decoding: d, as: UTF8.self))
    }
}
