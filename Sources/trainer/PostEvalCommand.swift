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
    @Option(name: .customLong("reward-model"), help: "preference: score the pairs with this reward model (r_chosen − r_rejected) instead of a DPO policy's log-probs (then no --model).")
    var rewardModel: String?
    @Option(help: "LoRA adapter safetensors applied (merged) onto --model before evaluating.") var lora: String?
    @Option(help: "Write every answer as JSON lines to this file.") var answers: String?
    @Option(help: "exact-match: exact (whole answer), contains (the answer contains the reference), author (the answer names the author of a reference \"…的作者是X。\"), first-line (its first line is the reference's: the right poem) or name (the answer contains --name as a whole word).")
    var match: String = "exact"
    @Option(help: "exact-match --match name: the name the answer must contain exactly.") var name: String = "SwiftMind"
    @Option(help: "preference, exact-match, format: a second model scored on the same pairs or prompts (e.g. the model before DPO or GRPO); adds its figures and the paired difference (this model − baseline) with a 95% interval.") var baseline: String?
    @Option(name: .customLong("beta"), help: "preference: DPO β; the mean implicit-reward margin is β × the mean margin (default 0.1).") var betaOption: Double?
    /// `--beta`, default 0.1.
    var beta: Double { betaOption ?? 0.1 }
    @OptionGroup var template: ChatTemplateArgument
    @OptionGroup var weights: WeightDTypeArgument

    func validate() throws {
        if !["loss", "sft-loss", "exact-match", "preference", "format"].contains(task) {
            throw ValidationError("--task must be loss, sft-loss, exact-match, preference or format (got \(task))") }
        if !["exact", "contains", "author", "first-line", "name"].contains(match) {
            throw ValidationError("--match must be exact, contains, author, first-line or name (got \(match))") }
        if baseline != nil, task == "loss" || task == "sft-loss" {
            throw ValidationError("--baseline applies to --task preference, exact-match and format (got \(task))") }
        try NumericOption.check(limit, "--limit", in: 1...Int.max)
        try NumericOption.check(maxNewTokens, "--max-new-tokens", in: 1...NumericOption.maxTokens)
    }

    /// The model of `dir` with `--lora` merged into it when given (every task, the default `loss` included).
    func loadModel(_ dir: String, flag: String = "--model") throws -> MiniMindModel {
        let m = try MiniMindModel.loadCausalLM(directory: dir, withGradients: false, flag: flag)
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
            let check: (String, String) -> Bool = { ans, ref in
                if fmt { return PostEval.hasThinkAnswerFormat(ans) }
                if match == "author", let a = PostEval.author(inReference: ref) { return PostEval.author(inReference: ans) == a }
                if match == "contains" { return ans.contains(ref) }
                if match == "name" { return PostEval.namesExactly(ans, name) }
                if match == "first-line" { return PostEval.firstLineMatches(ans, reference: ref) }
                return ans == ref
            }
            let res = try PostEval.answers(model: m, tokenizer: tok, dataPath: data, filter: filter, limit: limit,
                                           maxNewTokens: maxNewTokens, check: check)
            line["n"] = res.count
            let hits = res.filter(\.ok).count
            let rateKey = fmt ? "format_rate" : (match == "author" ? "author_accuracy" : match == "contains" ? "contains_rate"
                                                 : match == "name" ? "name_rate" : match == "first-line" ? "first_line_rate" : "exact_match")
            line[rateKey] = Double(hits) / Double(max(res.count, 1))
            line["hits"] = hits
            line["ci95"] = Self.interval(PostEval.wilson(hits, res.count))
            if match == "name" { line["name"] = name }
            if fmt {
                // Reasoning answer correctness: the number in <answer> equals the reference's.
                let right = res.filter { PostEval.answerNumberMatches($0.answer, reference: $0.reference) }.count
                line["answer_accuracy"] = Double(right) / Double(max(res.count, 1))
                line["answer_hits"] = right
                line["answer_ci95"] = Self.interval(PostEval.wilson(right, res.count))
            }
            if let bp = baseline {
                // The same prompts answered greedily by the baseline: per-prompt hit after − before, for the rate
                // (and, for format, for answer correctness).
                let bm = try loadModel(bp, flag: "--baseline")
                try bm.config.checkTokenizer(vocabSize: tok.vocabSize, source: bp)
                let b = try PostEval.answers(model: bm, tokenizer: tok, dataPath: data, filter: filter, limit: limit,
                                             maxNewTokens: maxNewTokens, check: check)
                line["baseline"] = bp
                func paired(_ key: String, _ hit: (PostEval.Answer) -> Bool) {
                    let bh = b.filter(hit).count
                    line["baseline_\(key)"] = Double(bh) / Double(max(b.count, 1))
                    line["baseline_\(key)_hits"] = bh
                    line["baseline_\(key)_ci95"] = Self.interval(PostEval.wilson(bh, b.count))
                    let d = zip(res, b).map { Double(hit($0.0) ? 1 : 0) - Double(hit($0.1) ? 1 : 0) }
                    let di = PostEval.meanInterval(d)
                    line["\(key)_difference"] = di.mean
                    line["\(key)_difference_ci95"] = Self.interval((di.low, di.high))
                    line["\(key)_difference_excludes_no_change"] = di.low > 0 || di.high < 0
                }
                paired(rateKey, \.ok)
                if fmt { paired("answer_accuracy") { PostEval.answerNumberMatches($0.answer, reference: $0.reference) } }
            }
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
            let ref = try reference.map { try MiniMindModel.loadCausalLM(directory: $0, withGradients: false, flag: "--reference") }
            if let ref, let rp = reference { try ref.config.checkTokenizer(vocabSize: tok.vocabSize, source: rp) }
            let r = try PostEval.preference(model: m, reference: ref, tokenizer: tok, dataPath: data, maxSeqLen: maxSeqLen)
            line["preference_accuracy"] = r.accuracy; line["pairs"] = r.pairs; line["mean_margin"] = r.meanMargin
            let hits = r.margins.filter { $0 > 0 }.count
            line["hits"] = hits
            line["ci95"] = Self.interval(PostEval.wilson(hits, r.pairs))
            let mm = PostEval.meanInterval(r.margins)
            line["mean_margin_ci95"] = Self.interval((mm.low, mm.high))
            if let rp = reference {
                line["reference"] = rp
                line["beta"] = beta
                line["mean_implicit_reward_margin"] = beta * r.meanMargin
                line["mean_implicit_reward_margin_ci95"] = Self.interval((beta * mm.low, beta * mm.high))
            }
            if let bp = baseline {
                // The same pairs scored by the baseline (same reference): per-pair correct after − before.
                let bm = try loadModel(bp, flag: "--baseline")
                try bm.config.checkTokenizer(vocabSize: tok.vocabSize, source: bp)
                let b = try PostEval.preference(model: bm, reference: ref, tokenizer: tok, dataPath: data, maxSeqLen: maxSeqLen)
                let bh = b.margins.filter { $0 > 0 }.count
                line["baseline"] = bp
                line["baseline_preference_accuracy"] = b.accuracy
                line["baseline_hits"] = bh
                line["baseline_ci95"] = Self.interval(PostEval.wilson(bh, b.pairs))
                let d = zip(r.margins, b.margins).map { Double($0.0 > 0 ? 1 : 0) - Double($0.1 > 0 ? 1 : 0) }
                let di = PostEval.meanInterval(d)
                line["difference"] = di.mean
                line["difference_ci95"] = Self.interval((di.low, di.high))
                line["difference_excludes_no_change"] = di.low > 0 || di.high < 0
                let dm = PostEval.meanInterval(zip(r.margins, b.margins).map { $0.0 - $0.1 })
                line["margin_difference"] = dm.mean
                line["margin_difference_ci95"] = Self.interval((dm.low, dm.high))
            }
        default:
            throw ValidationError("--task must be loss, sft-loss, exact-match, preference or format (got \(task))")
        }
        let d = try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys, .withoutEscapingSlashes])
        print(String(decoding: d, as: UTF8.self))
    }

    /// An interval as a JSON pair [low, high].
    static func interval(_ i: (low: Double, high: Double)) -> [Double] { [i.low, i.high] }
}
