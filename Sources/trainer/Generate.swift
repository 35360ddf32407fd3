// `trainer generate`: KV-cache decoding with MiniMind's sampling, streamed as text (or ids with --ids).
import ArgumentParser
import Foundation
import Model
import Serving
import Tokenizers

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate from a model with a KV cache; streams text as it is produced (--ids: a JSON array of ids).",
        discussion: """
        --prompt TEXT is encoded as transformers' tokenizer(TEXT) encodes it: with the special tokens of tokenizer.json's
        post-processor (e.g. Llama 3's <|begin_of_text|>; none for SmolLM2 and MiniMind, whose tokenizer_config.json
        says add_bos_token false) — the rule the exports record (tokenizer_config.json's add_bos_token, the GGUF's
        tokenizer.ggml.add_bos_token), so transformers and llama.cpp continue raw text the same way. Special tokens
        written in TEXT are matched: --prompt '<|im_start|>TEXT' is MiniMind eval_model.py's pretrain-model prompt
        (bos_token + TEXT). With --chat it is rendered as one user turn through the tokenizer's chat
        template with the generation prompt (refused when that template cannot be rendered without a Jinja engine;
        --chat-template minimind renders MiniMind's instead). --prompt-ids 1,2,3 uses ids as given. Sampling as MiniMind's generate: repetition penalty (Hugging Face's rule: a seen id's logit is divided by it if ≥ 0, multiplied if < 0), temperature (0 = greedy), top-k (0 = off),
        top-p (1 = off), multinomial draw from a seeded RNG. Generation stops at --eos-id (default: the tokenizer's
        eos, else 2, and every id of config.json's eos_token_id; -1 = never) or after --max-new-tokens.
        """)

    @Option(help: "Model directory (config.json + model.safetensors).") var model: String
    @Option(help: "Prompt text.") var prompt: String?
    @Flag(help: "Render --prompt as a user turn with the chat template.") var chat = false
    @Flag(name: .customLong("add-special-tokens"), help: "Accepted for compatibility: --prompt is always encoded as tokenizer(TEXT) (the post-processor's special tokens).")
    var addSpecialTokens = false
    @OptionGroup var template: ChatTemplateArgument
    @Option(name: .customLong("prompt-ids"), help: "Comma-separated prompt ids.") var promptIds: String?
    @Option(help: "tokenizer.json or its directory (default: the model directory, else Tests/Fixtures/tokenizers/minimind).")
    var tokenizer: String?
    @OptionGroup var sampling: SamplingArguments
    @OptionGroup var weights: WeightDTypeArgument
    @Option(name: .customLong("eos-id"), parsing: .unconditional) var eosId: Int?
    @Flag(help: "Print the generated ids as a JSON array instead of text.") var ids = false
    @Option(parsing: .unconditional, help: "OpenBLAS threads.") var threads: Int?
    @Option(help: "LoRA adapter file (from `trainer lora`), merged into the weights at load.") var lora: String?

    func validate() throws {
        if (prompt == nil) == (promptIds == nil) { throw ValidationError("give exactly one of --prompt TEXT or --prompt-ids 1,2,3") }
        if chat && prompt == nil { throw ValidationError("--chat needs --prompt TEXT") }
        if chat && addSpecialTokens { throw ValidationError("--add-special-tokens encodes a raw --prompt; it does not combine with --chat") }
        if addSpecialTokens && prompt == nil { throw ValidationError("--add-special-tokens needs --prompt TEXT") }
        if let e = eosId, e != -1 && !(0 ... Int(Int32.max)).contains(e) {
            throw ValidationError("--eos-id must be -1 (never stop) or an id in [0, \(Int32.max)] (got \(e))") }
        try NumericOption.threads(threads)
    }

    func loadTokenizer(required: Bool) throws -> Tokenizer? {
        let candidates = tokenizerCandidates(model: model, explicit: tokenizer)
        for c in candidates {
            let file = c.hasSuffix(".json") ? c : (c as NSString).appendingPathComponent("tokenizer.json")
            if FileManager.default.fileExists(atPath: file) { return try Tokenizer.load(c) }
        }
        if required { throw InputError("no tokenizer.json found (tried \(candidates.joined(separator: ", "))); pass --tokenizer") }
        return nil
    }

    func run() throws {
        OpenBLASRuntime.setThreads(threads)
        // The tokenizer (and, with --chat, its template) is checked before the model is loaded.
        let early = prompt != nil ? try loadTokenizer(required: true) : nil
        if chat, let t = early { try template.apply(to: t) }
        let m = try MiniMindModel.load(huggingFaceDirectory: model)
        if let lora { try m.mergeLoRA(path: lora, modelDirectory: model) }
        weights.apply(to: m)
        var tok: Tokenizer? = nil
        var prompt: [Int32]
        if let promptIds {
            prompt = []
            for part in promptIds.split(separator: ",") {
                guard let v = Int32(part.trimmingCharacters(in: .whitespaces)), v >= 0, Int(v) < m.config.vocabSize else {
                    throw ValidationError("--prompt-ids: '\(part)' is not an id in [0, \(m.config.vocabSize))") }
                prompt.append(v)
            }
            if !ids { tok = try loadTokenizer(required: false) }
        } else {
            let t = early!
            tok = t
            if chat {
                prompt = t.encode(try t.applyChatTemplate([ChatMessage(role: "user", content: self.prompt!)], addGenerationPrompt: true))
            } else {
                // The tokenizer's raw-text rule (`Tokenizer.singleSequenceSpecialTokens`), as tokenizer(TEXT).
                prompt = t.encode(self.prompt!, addSpecialTokens: true)
            }
        }
        if let t = tok {
            try m.config.checkTokenizer(vocabSize: t.vocabSize, source: model)
            if let note = t.vocabularyGapNote(modelVocabSize: m.config.vocabSize, source: model) {
                FileHandle.standardError.write(Data("note: \(note)\n".utf8)) }
        }
        guard !prompt.isEmpty else { throw ValidationError("empty prompt") }
        let eos: Int32? = eosId.map { $0 < 0 ? nil : Int32($0) } ?? (tok?.eosTokenId ?? 2)
        var opts = sampling.options(eosTokenId: eos)
        // Without --eos-id, generation also stops at every id of config.json's eos_token_id (as transformers does).
        if eosId == nil { opts.stopTokenIds = m.config.extraStopTokenIds(besides: eos) }
        try opts.validate(vocabSize: m.config.vocabSize, maxPositions: m.config.maxPositionEmbeddings, promptLength: prompt.count)
        let gen = TokenGenerator(model: m, promptIds: prompt, options: opts)
        if ids {
            let out = Array(gen)
            print("[" + out.map(String.init).joined(separator: ",") + "]")
            return
        }
        let decoder = tok?.makeStreamDecoder(skipSpecialTokens: true)
        let stdout = FileHandle.standardOutput
        for id in gen {
            let piece = try decoder.map { d in try tok!.decodingGenerated(modelVocabSize: m.config.vocabSize) { try d.push(id) } } ?? "\(id) "
            if !piece.isEmpty { stdout.write(piece.data(using: .utf8)!) }
        }
        let rest = decoder?.flush() ?? ""
        stdout.write((rest + "\n").data(using: .utf8)!)
    }
}
