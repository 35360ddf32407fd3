// `trainer eval --task exact-match | preference | format` (the post-training evaluations), one JSON line each.
import ArgumentParser
import Foundation
import Model
import Tokenizers
import Training

struct PostEvalArguments: ParsableArguments {
    @Option(help: "loss (held-out perplexity, pretrain jsonl) | sft-loss (held-out masked loss, SFT jsonl) | exact-match | preference | format.") var task: String = "loss"
    @Option(help: "exact-match/format: only conversations whose last user turn contains this text.") var filter: String?
    @Option(parsing: .unconditional, help: "exact-match/format: at most N conversations.") var limit: Int?
    @Option(name: [.customLong("max-new-tokens"), .customLong("max_new_tokens")], parsing: .unconditional) var maxNewTokens: Int = 128
    @Option(help: "preference: reference model directory (margin vs reference); without it, π_c − π_r.") var reference: String?
    @Option(help: "LoRA adapter safetensors applied (merged) onto --model before evaluating.") var lora: String?
    @Option(help: "Write every answer as JSON lines to this file.") var answers: String?
    @Option(help: "exact-match: exact (whole answer), contains (the answer contains the reference) or author (the answer names the author of a reference \"…的作者是X。\").")
    var match: String = "exact"
    @OptionGroup var template: ChatTemplateArgument
    @OptionGroup var weights: WeightDTypeArgument

    func validate() throws {
        if !["loss", "sft-loss", "exact-match", "preference", "format"].contains(task) {
            throw ValidationError("--task must be loss, sft-loss, exact-match, preference or format (got \(task))") }
        try NumericOption.check(limit, "--limit", in: 1...Int.max)
        try NumericOption.check(maxNewTokens, "--max-new-tokens", in: 1...NumericOption.maxTokens)
    }

    /// The model of `dir` with `--lora` merged into it when given (every task, the default `loss` included).
    func loadModel(_ dir: String) throws -> MiniMindModel {
        let m = try MiniMindModel.load(directory: dir)
        if let f = lora { try m.mergeLoRA(path: f, modelDirectory: dir) }
        weights.apply(to: m)
        return m
    }

    func run(model dir: String, data: String, tokenizer: String?, maxSeqLen: Int) throws {
        let tok = try Tokenizer.load(tokenizer ?? dir)
        if task != "loss" { try template.apply(to: tok) }
        let m = try loadModel(dir)
        try m.config.checkTokenizer(vocabSize: tok.vocabSize, source: dir)
        var line: [String: Any] = ["task": task, "model": dir]
        if let f = lora { line["lora"] = f }
        switch task {
        case "exact-match", "format":
            let fmt = task == "format"
            let res = try PostEval.answers(model: m, tokenizer: tok, dataPath: data, filter: filter, limit: limit,
                                           maxNewTokens: maxNewTokens) { ans, ref in
                if fmt { return PostEval.hasThinkAnswerFormat(ans) }
                if match == "author", let a = PostEval.author(inReference: ref) { return PostEval.author(inReference: ans) == a }
                if match == "contains" { return ans.contains(ref) }
                return ans == ref
            }
            line["n"] = res.count
            line[fmt ? "format_rate" : (match == "author" ? "author_accuracy" : match == "contains" ? "contains_rate" : "exact_match")] = Double(res.filter(\.ok).count) / Double(max(res.count, 1))
            line["examples"] = res.prefix(3).map { ["prompt": $0.prompt, "answer": $0.answer, "ok": $0.ok] as [String: Any] }
            if let p = answers {
                let enc = JSONEncoder()
                let text = try res.map { String(decoding: try enc.encode($0), as: UTF8.self) }.joined(separator: "\n") + "\n"
                try text.write(toFile: p, atomically: true, encoding: .utf8)
            }
        case "sft-loss":
            let r = try PostEval.sftLoss(model: m, tokenizer: tok, dataPath: data, maxSeqLen: maxSeqLen)
            line["loss"] = r.loss; line["tokens"] = r.tokens
        case "preference":
            let ref = try reference.map { try MiniMindModel.load(directory: $0, withGradients: false) }
            let r = try PostEval.preference(model: m, reference: ref, tokenizer: tok, dataPath: data, maxSeqLen: maxSeqLen)
            line["preference_accuracy"] = r.accuracy; line["pairs"] = r.pairs; line["mean_margin"] = r.meanMargin
            if let rp = reference { line["reference"] = rp }
        default:
            throw ValidationError("--task must be loss, sft-loss, exact-match, preference or format (got \(task))")
        }
        let d = try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys, .withoutEscapingSlashes])
        print(String(decoding: d, as: UTF8.self))
    }
}
