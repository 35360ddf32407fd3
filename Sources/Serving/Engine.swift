// GenerationEngine: a loaded model + tokenizer and one serial generation worker (off the caller's event loop).
import Foundation
import Model
import Tokenizers

/// Errors of the serving layer (bad options, missing files, unsupported features). The message names the input.
public struct ServingError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Why generation stopped: the eos id (`stop`), `maxNewTokens` (`length`), or the caller cancelled.
public enum FinishReason: String, Sendable { case stop, length, cancelled }

/// Outcome of one generation: token counts, the full decoded text and the finish reason.
public struct GenerationResult: Sendable {
    public var promptTokens: Int
    public var completionTokens: Int
    public var text: String
    public var finishReason: FinishReason
}

/// Streamed events: decoded text pieces (complete UTF-8 characters), then exactly one `finished`.
public enum GenerationEvent: Sendable {
    case text(String)
    case finished(GenerationResult)
}

/// A cancellation flag shared between a request and its queued/running generation (checked once per token).
public final class GenerationJob: @unchecked Sendable {
    private let lock = NSLock()
    private var cancelled = false
    public init() {}
    public func cancel() { lock.lock(); cancelled = true; lock.unlock() }
    public var isCancelled: Bool { lock.lock(); defer { lock.unlock() }; return cancelled }
}

/// Locates a tokenizer: `explicit` (file or directory), else the model directory, else `../shared/tokenizers/minimind`
/// beside the model directory or the working directory.
public func locateTokenizer(model: String, explicit: String?) throws -> Tokenizer {
    let candidates = explicit.map { [$0] } ?? [model, (model as NSString).appendingPathComponent("../shared/tokenizers/minimind"),
                                              "../shared/tokenizers/minimind"]
    for c in candidates {
        let file = c.hasSuffix(".json") ? c : (c as NSString).appendingPathComponent("tokenizer.json")
        if FileManager.default.fileExists(atPath: file) { return try Tokenizer.load(c) }
    }
    throw ServingError("no tokenizer.json found (tried \(candidates.joined(separator: ", "))); pass --tokenizer")
}

/// Model, tokenizer and a serial generation queue. `generate` runs on the calling thread (one caller at a time);
/// `submit` queues a job on the engine's own dispatch queue and streams its events, so an HTTP event loop never
/// runs model code. Jobs run one after another in arrival order (the model's KV scratch is per job, the weights
/// are shared read-only, the RoPE table is grown before use).
public final class GenerationEngine: @unchecked Sendable {
    public let model: MiniMindModel
    public let tokenizer: Tokenizer
    /// Name reported by `/v1/models` (the model directory's last component by default).
    public let modelName: String
    /// Largest prompt + completion length accepted (positions), ≤ `max_position_embeddings`.
    public let contextLength: Int
    private let queue = DispatchQueue(label: "swiftmind.generation", qos: .userInitiated)
    private let lock = NSLock()
    private var _queued = 0, _active = 0, _completed = 0, _cancelled = 0
    private var liveJobs: [ObjectIdentifier: GenerationJob] = [:]
    private var shuttingDown = false

    public init(model: MiniMindModel, tokenizer: Tokenizer, modelName: String, contextLength: Int? = nil) throws {
        guard tokenizer.vocabSize <= model.config.vocabSize else {
            throw ServingError("tokenizer has \(tokenizer.vocabSize) ids but the model's vocab_size is \(model.config.vocabSize)") }
        self.model = model; self.tokenizer = tokenizer; self.modelName = modelName
        self.contextLength = min(contextLength ?? model.config.maxPositionEmbeddings, model.config.maxPositionEmbeddings)
    }

    /// Loads a model directory (MiniMind or Hugging Face Llama layout, see `MiniMindModel.load(huggingFaceDirectory:)`)
    /// and its tokenizer. `lora` is refused: LoRA adapters do not exist in this code base yet.
    public static func load(model dir: String, tokenizer: String? = nil, lora: String? = nil, contextLength: Int? = nil) throws -> GenerationEngine {
        if let lora { throw ServingError("--lora \(lora): LoRA adapters are not supported yet") }
        let m = try MiniMindModel.load(huggingFaceDirectory: dir)
        let t = try locateTokenizer(model: dir, explicit: tokenizer)
        let name = URL(fileURLWithPath: dir).standardizedFileURL.lastPathComponent
        return try GenerationEngine(model: m, tokenizer: t, modelName: name.isEmpty ? "swiftmind" : name, contextLength: contextLength)
    }

    /// Queue statistics: jobs waiting, running (0/1), finished and cancelled since start.
    public var stats: (queued: Int, active: Int, completed: Int, cancelled: Int) {
        lock.lock(); defer { lock.unlock() }
        return (_queued, _active, _completed, _cancelled)
    }

    /// Refuses new jobs and cancels every queued or running one (graceful server shutdown).
    public func shutdown() {
        lock.lock(); shuttingDown = true; let jobs = Array(liveJobs.values); lock.unlock()
        for j in jobs { j.cancel() }
    }

    /// ChatML prompt ids for `messages` (tokenizer's chat template with the generation prompt).
    public func chatPromptIds(_ messages: [ChatMessage]) throws -> [Int32] {
        tokenizer.encode(try tokenizer.applyChatTemplate(messages, addGenerationPrompt: true))
    }

    /// Generates on the calling thread, passing each decoded piece to `onText`. Stops at eos, after
    /// `options.maxNewTokens`, or when `isCancelled()` turns true (checked before every token).
    /// - Throws: `ServingError` when the prompt is empty or prompt + maxNewTokens exceeds `contextLength`.
    public func generate(promptIds: [Int32], options: SamplingOptions, isCancelled: () -> Bool = { false },
                         onText: (String) -> Void) throws -> GenerationResult {
        guard !promptIds.isEmpty else { throw ServingError("empty prompt") }
        guard promptIds.count + options.maxNewTokens <= contextLength else {
            throw ServingError("prompt (\(promptIds.count) tokens) + max new tokens (\(options.maxNewTokens)) exceeds the context window (\(contextLength))") }
        let gen = TokenGenerator(model: model, promptIds: promptIds, options: options)
        let dec = tokenizer.makeStreamDecoder(skipSpecialTokens: true)
        var text = ""
        var cancelled = false
        while true {
            if isCancelled() { cancelled = true; break }
            guard let id = gen.next() else { break }
            let piece = try dec.push(id)
            if !piece.isEmpty { text += piece; onText(piece) }
        }
        let rest = dec.flush()
        if !rest.isEmpty && !cancelled { text += rest; onText(rest) }
        let n = gen.generated.count
        let reason: FinishReason = cancelled ? .cancelled : (n >= options.maxNewTokens ? .length : .stop)
        return GenerationResult(promptTokens: promptIds.count, completionTokens: n, text: text, finishReason: reason)
    }

    /// Queues a generation on the engine's serial worker. The stream yields text pieces then `.finished`; it ends
    /// early (generation stopped at the next token) when `job` is cancelled or the consumer stops iterating.
    /// - Throws: `ServingError` when more than `maxQueued` jobs are already waiting.
    public func submit(promptIds: [Int32], options: SamplingOptions, job: GenerationJob = GenerationJob(),
                       maxQueued: Int = 64) throws -> AsyncThrowingStream<GenerationEvent, Error> {
        lock.lock()
        if shuttingDown { lock.unlock(); throw ServingError("server shutting down") }
        if _queued >= maxQueued { lock.unlock(); throw ServingError("server busy: \(maxQueued) requests already queued") }
        _queued += 1
        liveJobs[ObjectIdentifier(job)] = job
        lock.unlock()
        let (stream, cont) = AsyncThrowingStream<GenerationEvent, Error>.makeStream()
        cont.onTermination = { _ in job.cancel() }
        queue.async { [self] in
            lock.lock(); _queued -= 1; _active += 1; lock.unlock()
            var wasCancelled = job.isCancelled
            if !wasCancelled {
                do {
                    let r = try generate(promptIds: promptIds, options: options, isCancelled: { job.isCancelled }) { cont.yield(.text($0)) }
                    wasCancelled = r.finishReason == .cancelled
                    cont.yield(.finished(r))
                    cont.finish()
                } catch { cont.finish(throwing: error) }
            } else { cont.finish() }
            lock.lock(); _active -= 1; if wasCancelled { _cancelled += 1 } else { _completed += 1 }
            liveJobs[ObjectIdentifier(job)] = nil; lock.unlock()
        }
        return stream
    }
}
