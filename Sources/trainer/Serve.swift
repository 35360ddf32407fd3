// `trainer serve`: the OpenAI-compatible chat completions server (Hummingbird), loopback by default.
import ArgumentParser
import Foundation
import Logging
import Serving

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a model over an OpenAI-compatible HTTP API (chat completions with SSE streaming).",
        discussion: """
        Routes: POST /v1/chat/completions (messages, temperature, top_p, max_tokens | max_completion_tokens, stream,
        stream_options.include_usage, seed), GET /v1/models, GET /health (status, model, context_length, and the
        request counts queued, active, completed, cancelled, connections), and a chat page for a browser at GET /
        (streaming replies, system prompt, sampling sliders, tokens/s, <think> blocks, a stop button). Requests are queued for one generation
        worker that decodes up to --max-batch of them together (first come, first served); /health answers while a generation runs. With --api-key every request
        but GET /health and GET / (the page; it sends the key typed into its field) needs 'Authorization: Bearer KEY' (401 otherwise; a blank key is refused at startup). A client
        that disconnects (closes, or shuts down its sending side) stops its generation, streaming or not; keep-alive
        and pipelining are unaffected. Connections: a request head must be complete --header-timeout seconds after
        its first byte (else 408 and close), a body --body-timeout seconds after its head; idle keep-alive
        connections close after --idle-timeout; at --max-connections a new connection displaces one without a
        request in progress (slowest unfinished head first, then the longest idle), or gets 503 when all are busy;
        a 413 closes its connection.
        SIGINT/SIGTERM shut down gracefully: running generations stop (open streams get their final chunk and [DONE];
        unfinished non-streaming requests get 503), and connections still open after --shutdown-timeout seconds are
        dropped. Binds 127.0.0.1 unless --host says otherwise (a warning when it is not loopback and no --api-key).
        """)

    @Option(help: "Model directory (MiniMind checkpoint or Hugging Face Llama directory).") var model: String
    @Option(help: "LoRA adapter file (from `trainer lora`), merged into the weights at load.") var lora: String?
    @Option(help: "tokenizer.json or its directory (default: the model directory, else Tests/Fixtures/tokenizers/minimind).")
    var tokenizer: String?
    @Option var host = "127.0.0.1"
    @Option(parsing: .unconditional) var port = 8998
    @Option(name: .customLong("api-key"), help: "Require 'Authorization: Bearer KEY' on every request but GET /health and GET / (the chat page).") var apiKey: String?
    @Option(name: .customLong("max-body-bytes"), parsing: .unconditional) var maxBodyBytes = 1 << 20
    @Option(name: .customLong("max-queued"), parsing: .unconditional, help: "Queued requests beyond this get 503.") var maxQueued = 64
    @Option(name: .customLong("context-length"), parsing: .unconditional, help: "Largest prompt + completion in tokens (default: max_position_embeddings).")
    var contextLength: Int?
    @Option(name: .customLong("max-tokens"), parsing: .unconditional, help: "Default completion length when a request gives none.") var maxTokens = 512
    @Option(name: .customLong("max-batch"), parsing: .unconditional, help: "Sequences decoded together (continuous batching); 1 = one at a time.") var maxBatch = 8
    @Option(name: .customLong("shutdown-timeout"), parsing: .unconditional, help: "Seconds to drain open connections on SIGINT/SIGTERM before exiting anyway.")
    var shutdownTimeout: Double = 10
    @Option(name: .customLong("header-timeout"), parsing: .unconditional, help: "Seconds to complete a request head after its first byte (then 408, close).")
    var headerTimeout: Double = 10
    @Option(name: .customLong("body-timeout"), parsing: .unconditional, help: "Seconds to complete a request body after its head (then close).")
    var bodyTimeout: Double = 30
    @Option(name: .customLong("idle-timeout"), parsing: .unconditional, help: "Seconds an idle keep-alive connection stays open.") var idleTimeout: Double = 15
    @Option(name: .customLong("max-connections"), parsing: .unconditional, help: "Open connections allowed (beyond: an idle or slow-header one is displaced, or 503).")
    var maxConnections = 512
    @Option(parsing: .unconditional, help: "OpenBLAS threads.") var threads: Int?
    @OptionGroup var template: ChatTemplateArgument
    @OptionGroup var weights: WeightDTypeArgument

    var serverConfiguration: ServerConfiguration {
        var cfg = ServerConfiguration()
        cfg.host = host; cfg.port = port; cfg.apiKey = apiKey; cfg.maxBodyBytes = maxBodyBytes; cfg.maxQueued = maxQueued
        cfg.defaultMaxTokens = maxTokens; cfg.shutdownTimeout = shutdownTimeout
        cfg.headerTimeout = headerTimeout; cfg.bodyTimeout = bodyTimeout; cfg.idleTimeout = idleTimeout
        cfg.maxConnections = maxConnections
        return cfg
    }

    func validate() throws {
        if port < 0 || port > 65535 { throw ValidationError("--port must be in 0…65535") }
        if maxBodyBytes <= 0 { throw ValidationError("--max-body-bytes must be > 0") }
        if maxTokens <= 0 { throw ValidationError("--max-tokens must be > 0") }
        if maxBatch <= 0 { throw ValidationError("--max-batch must be > 0") }
        try NumericOption.finite(shutdownTimeout, "--shutdown-timeout", "of seconds ≥ 0", { $0 >= 0 })
        try NumericOption.check(maxQueued, "--max-queued", in: 0...1_000_000)
        try NumericOption.check(maxBatch, "--max-batch", in: 1...1024)
        try NumericOption.check(maxTokens, "--max-tokens", in: 1...NumericOption.maxTokens)
        try NumericOption.check(contextLength, "--context-length", in: 1...NumericOption.maxTokens)
        try NumericOption.threads(threads)
        do { try serverConfiguration.validate() } catch { throw ValidationError("\(error)") }
    }

    /// Each connection holds a file descriptor: raises the soft RLIMIT_NOFILE toward --max-connections + a margin
    /// (model files, the listening socket), warning when the hard limit does not allow it.
    func ensureFileDescriptors() {
        var r = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &r) == 0 else { return }
        let need = rlim_t(maxConnections + 64)
        if r.rlim_cur >= need { return }
        let target = min(need, r.rlim_max)
        var raised = r
        raised.rlim_cur = target
        if target > r.rlim_cur && setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { r.rlim_cur = target }
        if r.rlim_cur < need {
            FileHandle.standardError.write("[serve] warning: the open-file limit is \(r.rlim_cur), below --max-connections \(maxConnections) + 64; lower --max-connections or raise `ulimit -n`\n".data(using: .utf8)!)
        }
    }

    final class Box: @unchecked Sendable { var error: Error? }

    func run() throws {
        OpenBLASRuntime.setThreads(threads)
        let engine = try GenerationEngine.load(model: model, tokenizer: tokenizer, lora: lora, contextLength: contextLength, maxBatch: maxBatch,
                                               prepareTokenizer: template.apply)
        weights.apply(to: engine.model)
        ensureFileDescriptors()
        let server = OpenAIServer(engine: engine, configuration: serverConfiguration)
        let name = engine.modelName, h = host
        let done = DispatchSemaphore(value: 0)
        let box = Box()
        Task {
            do {
                try await server.run { port in
                    FileHandle.standardError.write("[serve] model \(name) on http://\(h):\(port) (POST /v1/chat/completions, GET /v1/models, GET /health; chat page at /)\n".data(using: .utf8)!)
                }
            } catch { box.error = error }
            done.signal()
        }
        done.wait()
        if let e = box.error {
            if let m = listenErrorDescription(e, host: host, port: port) { throw InputError(m) }
            throw e
        }
        FileHandle.standardError.write("[serve] stopped\n".data(using: .utf8)!)
    }
}
