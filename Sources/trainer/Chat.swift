// `trainer chat`: interactive multi-turn ChatML chat in the terminal (or one-shot from an argument / stdin).
import ArgumentParser
import Foundation
import Model
import Serving
import Tokenizers

struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Chat with a model: ChatML multi-turn, tokens streamed as they are generated.",
        discussion: """
        Without PROMPT: interactive; each input line is a user turn, the reply streams after "assistant: ".
        Commands: /reset forgets the conversation, /exit (or /quit, or end of input) leaves. The prompt holds the
        last --history-turns (user, assistant) pairs (0 = no history, as MiniMind's eval_model.py default).
        With PROMPT: one-shot, prints the reply and exits; PROMPT "-" reads the whole of stdin as the message.
        Sampling flags as `trainer generate` (temperature 0 = greedy). The model directory may be a MiniMind
        checkpoint or a Hugging Face Llama directory (tied or untied lm_head).
        """)

    @Option(help: "Model directory (config.json + model.safetensors).") var model: String
    @Option(help: "LoRA adapter file (from `trainer lora`), merged into the weights at load.") var lora: String?
    @Option(help: "tokenizer.json or its directory (default: the model directory, else Tests/Fixtures/tokenizers/minimind).")
    var tokenizer: String?
    @Argument(help: "One-shot message (\"-\" = read stdin).") var prompt: String?
    @Option(name: .customLong("history-turns"), parsing: .unconditional, help: "Previous (user, assistant) pairs kept in the prompt.") var historyTurns = 3
    @Option(help: "System prompt (default: the chat template's).") var system: String?
    @OptionGroup var sampling: SamplingArguments
    @OptionGroup var weights: WeightDTypeArgument
    @Option(name: .customLong("context-length"), parsing: .unconditional, help: "Largest prompt + reply in tokens (default: max_position_embeddings).")
    var contextLength: Int?
    @Option(parsing: .unconditional, help: "OpenBLAS threads.") var threads: Int?
    @OptionGroup var template: ChatTemplateArgument

    func validate() throws {
        try NumericOption.check(historyTurns, "--history-turns", in: 0...1_000_000)
        try NumericOption.check(contextLength, "--context-length", in: 1...NumericOption.maxTokens)
        try NumericOption.threads(threads)
    }

    func run() throws {
        OpenBLASRuntime.setThreads(threads)
        let engine = try GenerationEngine.load(model: model, tokenizer: tokenizer, lora: lora, contextLength: contextLength,
                                               prepareTokenizer: template.apply)
        weights.apply(to: engine.model)
        let session = ChatSession(engine: engine, historyTurns: historyTurns, systemPrompt: system)
        var opts = sampling.options(eosTokenId: engine.tokenizer.eosTokenId)
        opts.stopTokenIds = engine.model.config.extraStopTokenIds(besides: opts.eosTokenId)
        let out = FileHandle.standardOutput
        func write(_ s: String) { out.write(s.data(using: .utf8)!) }

        if let prompt {
            var text = prompt
            if prompt == "-" {
                text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
                text = text.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            guard !text.isEmpty else { throw ValidationError("empty message") }
            try session.send(text, options: opts, onText: write)
            write("\n")
            return
        }

        let interactive = isatty(0) != 0
        if interactive { write("SwiftMind chat (\(engine.modelName)). /reset clears the history, /exit leaves.\n") }
        var turn: UInt64 = 0
        while true {
            write(interactive ? "\nuser: " : "user: ")
            guard let line = readLine(strippingNewline: true) else { write("\n"); break }
            let text = line.trimmingCharacters(in: .whitespaces)
            if !interactive { write(text + "\n") }
            if text.isEmpty { continue }
            if text == "/exit" || text == "/quit" { break }
            if text == "/reset" { session.reset(); write("(history cleared)\n"); continue }
            if text.hasPrefix("/") { write("unknown command \(text): /reset, /exit\n"); continue }
            write("assistant: ")
            opts.seed = sampling.seed &+ turn
            turn += 1
            let t0 = Date()
            let r: GenerationResult
            do { r = try session.send(text, options: opts, onText: write) } catch let e as ServingError {
                // e.g. a message too long for the context window: report it and keep the session going.
                write("\n")
                FileHandle.standardError.write("Error: \(e)\n".data(using: .utf8)!)
                continue
            }
            write("\n")
            if interactive {
                let dt = Date().timeIntervalSince(t0)
                FileHandle.standardError.write(String(format: "[%d prompt + %d new tokens, %.1f tokens/s, %@]\n", r.promptTokens,
                                                      r.completionTokens, Double(r.completionTokens) / max(dt, 1e-9),
                                                      r.finishReason.rawValue).data(using: .utf8)!)
            }
        }
    }
}
