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

/// MiniMind2's tokenizer in the repository, relative to the repository root (the working directory of the README's
/// commands): where `trainer generate|chat|serve|export` look last when neither `--tokenizer` nor the model
/// directory gives a `tokenizer.json`.
public let repositoryTokenizerDirectory = "Tests/Fixtures/tokenizers/minimind"

/// Where a tokenizer is looked for, in order: `explicit` alone when given (file or directory), else the model
/// directory, then `repositoryTokenizerDirectory`.
public func tokenizerCandidates(model: String, explicit: String?) -> [String] {
    explicit.map { [$0] } ?? [model, repositoryTokenizerDirectory]
}

/// Locates a tokenizer among `tokenizerCandidates(model:explicit:)`.
/// - Throws: `ServingError` naming every place tried when none holds a `tokenizer.json`; the tokenizer's own load
///   errors.
public func locateTokenizer(model: String, explicit: String?) throws -> Tokenizer {
    try Tokenizer.load(locateTokenizerSource(model: model, explicit: explicit))
}

/// The first of `tokenizerCandidates(model:explicit:)` that holds a `tokenizer.json` (the candidate itself: a file or
/// a directory). Falling back to `repositoryTokenizerDirectory` is said on stderr (once per process): the model
/// directory has no tokenizer of its own, and MiniMind's is used.
/// - Throws: `ServingError` naming every place tried when none holds one.
public func locateTokenizerSource(model: String, explicit: String?) throws -> String {
    let candidates = tokenizerCandidates(model: model, explicit: explicit)
    for c in candidates {
        let file = c.hasSuffix(".json") ? c : (c as NSString).appendingPathComponent("tokenizer.json")
        guard FileManager.default.fileExists(atPath: file) else { continue }
        if explicit == nil && c == repositoryTokenizerDirectory { TokenizerFallbackNote.say(model: model) }
        return c
    }
    throw ServingError("no tokenizer.json found (tried \(candidates.joined(separator: ", "))); pass --tokenizer")
}

enum TokenizerFallbackNote {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var said = false
    static func say(model: String) {
        lock.lock(); defer { lock.unlock() }
        guard !said else { return }
        said = true
        FileHandle.standardError.write(Data("note: \(model) has no tokenizer.json: using MiniMind's tokenizer from ./\(repositoryTokenizerDirectory) (pass --tokenizer to choose another)\n".utf8))
    }
}

/// Model, tokenizer and a generation worker. `generate` runs on the calling thread (one caller at a time, not
/// concurrently with `submit`); `submit` queues a job for the engine's own worker thread and streams its events,
/// so an HTTP event loop never runs model code. The worker admits jobs in arrival order, up to `maxBatch` at a
/// time, and decodes the running ones together (one batched step per token, `forwardDecodeBatch`); the rest wait.
public final class GenerationEngine: @unchecked Sendable {
    public let model: MiniMindModel
    public let tokenizer: Tokenizer
    /// Name reported by `/v1/models` (the model directory's last component by default).
    public let modelName: String
    /// Largest prompt + completion length accepted (positions), ≤ `max_position_embeddings`.
    public let contextLength: Int
    /// Largest number of sequences decoded together by the server's worker (continuous batching).
    public let maxBatch: Int
    private let lock = NSLock()
    private var _queued = 0, _active = 0, _completed = 0, _cancelled = 0
    private var liveJobs: [ObjectIdentifier: GenerationJob] = [:]
    private var shuttingDown = false

    public init(model: MiniMindModel, tokenizer: Tokenizer, modelName: String, contextLength: Int? = nil, maxBatch: Int = 8) throws {
        self.maxBatch = max(1, maxBatch)
        do { try model.config.checkTokenizer(vocabSize: tokenizer.vocabSize, source: modelName) } catch {
            throw ServingError("\(error)") }
        self.model = model; self.tokenizer = tokenizer; self.modelName = modelName
        self.contextLength = min(contextLength ?? model.config.maxPositionEmbeddings, model.config.maxPositionEmbeddings)
    }

    /// Loads a model directory (MiniMind or Hugging Face Llama layout, see `MiniMindModel.load(huggingFaceDirectory:)`)
    /// and its tokenizer; `lora`, when given, is an adapter file merged into the weights (`MiniMindModel.mergeLoRA`),
    /// refused when the directory's `merges.json` shows it is already merged. `prepareTokenizer` runs on the tokenizer
    /// before the model is loaded (e.g. the `--chat-template` choice and its check that the template can be rendered).
    public static func load(model dir: String, tokenizer: String? = nil, lora: String? = nil, contextLength: Int? = nil,
                            maxBatch: Int = 8, prepareTokenizer: (Tokenizer) throws -> Void = { _ in }) throws -> GenerationEngine {
        let t = try locateTokenizer(model: dir, explicit: tokenizer)
        try prepareTokenizer(t)
        let m = try MiniMindModel.load(huggingFaceDirectory: dir)
        if let lora { try m.mergeLoRA(path: lora, modelDirectory: dir) }
        let name = URL(fileURLWithPath: dir).standardizedFileURL.lastPathComponent
        if let note = t.vocabularyGapNote(modelVocabSize: m.config.vocabSize, source: dir) {
            FileHandle.standardError.write(Data("note: \(note)\n".utf8)) }
        return try GenerationEngine(model: m, tokenizer: t, modelName: name.isEmpty ? "swiftmind" : name, contextLength: contextLength,
                                    maxBatch: maxBatch)
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
            let piece = try tokenizer.decodingGenerated(modelVocabSize: model.config.vocabSize) { try dec.push(id) }
            if !piece.isEmpty { text += piece; onText(piece) }
        }
        let rest = dec.flush()
        if !rest.isEmpty && !cancelled { text += rest; onText(rest) }
        let n = gen.generated.count
        let reason: FinishReason = cancelled ? .cancelled : (n >= options.maxNewTokens ? .length : .stop)
        return GenerationResult(promptTokens: promptIds.count, completionTokens: n, text: text, finishReason: reason)
    }

    /// Queues a generation for the engine's batching worker. The stream yields text pieces then `.finished`; it ends
    /// early (generation stopped before the next token) when `job` is cancelled or the consumer stops iterating.
    /// - Throws: `ServingError` when more than `maxQueued` jobs are already waiting, or during shutdown.
    public func submit(promptIds: [Int32], options: SamplingOptions, job: GenerationJob = GenerationJob(),
                       maxQueued: Int = 64) throws -> AsyncThrowingStream<GenerationEvent, Error> {
        guard !promptIds.isEmpty else { throw ServingError("empty prompt") }
        guard promptIds.count + options.maxNewTokens <= contextLength else {
            throw ServingError("prompt (\(promptIds.count) tokens) + max new tokens (\(options.maxNewTokens)) exceeds the context window (\(contextLength))") }
        let (stream, cont) = AsyncThrowingStream<GenerationEvent, Error>.makeStream()
        cont.onTermination = { _ in job.cancel() }
        let req = PendingRequest(promptIds: promptIds, options: options, job: job, cont: cont)
        lock.lock()
        if shuttingDown { lock.unlock(); throw ServingError("server shutting down") }
        if _queued >= maxQueued { lock.unlock(); throw ServingError("server busy: \(maxQueued) requests already queued") }
        _queued += 1
        liveJobs[ObjectIdentifier(job)] = job
        pending.append(req)
        let start = !workerRunning
        workerRunning = true
        lock.unlock()
        if start {
            let t = Thread { [self] in workerLoop() }
            t.name = "swiftmind-generation"
            t.start()
        }
        return stream
    }

    // MARK: - continuous batching worker

    final class PendingRequest {
        let promptIds: [Int32], options: SamplingOptions, job: GenerationJob
        let cont: AsyncThrowingStream<GenerationEvent, Error>.Continuation
        init(promptIds: [Int32], options: SamplingOptions, job: GenerationJob, cont: AsyncThrowingStream<GenerationEvent, Error>.Continuation) {
            self.promptIds = promptIds; self.options = options; self.job = job; self.cont = cont
        }
    }

    /// One sequence in the running batch: its cache, token history (for the repetition penalty), RNG and decoder.
    final class ActiveSequence {
        let req: PendingRequest
        let cache: KVCache
        var sequence: [Int32]
        var rng: SplitMix64
        var generated = 0
        var lastToken: Int32 = 0
        let decoder: StreamDecoder
        var text = ""
        init(req: PendingRequest, cache: KVCache, decoder: StreamDecoder) {
            self.req = req; self.cache = cache; sequence = req.promptIds; rng = SplitMix64(seed: req.options.seed); self.decoder = decoder
        }
    }

    private var pending: [PendingRequest] = []
    private var workerRunning = false

    /// Admits queued requests up to `maxBatch` (prefill each, sample its first token), then runs one batched decode
    /// step over every running sequence, until nothing is queued or running. Per sequence the token rule is
    /// `TokenGenerator`'s: sample from the last logits with the sequence's own options and RNG, stop at eos (not
    /// emitted) or after `maxNewTokens`.
    private func workerLoop() {
        var active: [ActiveSequence] = []
        var logits: [Float] = []
        let V = model.config.vocabSize
        while true {
            lock.lock()
            if active.isEmpty && pending.isEmpty { workerRunning = false; lock.unlock(); return }
            var admitted: [PendingRequest] = []
            while active.count + admitted.count < maxBatch && !pending.isEmpty { admitted.append(pending.removeFirst()) }
            _queued -= admitted.count; _active += admitted.count
            lock.unlock()
            for r in admitted {
                if r.job.isCancelled { r.cont.finish(); finished(r.job, cancelled: true); continue }
                let cache = KVCache(config: model.config, maxLength: r.promptIds.count + r.options.maxNewTokens)
                let seq = ActiveSequence(req: r, cache: cache, decoder: tokenizer.makeStreamDecoder(skipSpecialTokens: true))
                let first = model.forwardIncremental(tokens: r.promptIds, cache: cache)
                if step(seq, first) { active.append(seq) }
            }
            active = active.filter { s in
                if s.req.job.isCancelled { finish(s, .cancelled); return false }
                return true
            }
            if active.isEmpty { continue }
            let B = active.count
            if logits.count < B * V { logits = [Float](repeating: 0, count: B * V) }
            logits.withUnsafeMutableBufferPointer { buf in
                model.forwardDecodeBatch(tokens: active.map(\.lastToken), caches: active.map(\.cache),
                                         logits: UnsafeMutableBufferPointer(rebasing: buf[0..<(B * V)]))
            }
            var still: [ActiveSequence] = []
            for (b, s) in active.enumerated() where step(s, Array(logits[(b * V)..<((b + 1) * V)])) { still.append(s) }
            active = still
        }
    }

    /// Samples the next id of `s` from `logits`; emits its text. Returns false when the sequence finished.
    private func step(_ s: ActiveSequence, _ logits: [Float]) -> Bool {
        let o = s.req.options
        let id = Sampler.sample(logits: logits, history: s.sequence, options: o, rng: &s.rng)
        if o.stops(at: id) { finish(s, .stop); return false }
        s.sequence.append(id); s.generated += 1; s.lastToken = id
        do {
            let piece = try tokenizer.decodingGenerated(modelVocabSize: model.config.vocabSize) { try s.decoder.push(id) }
            if !piece.isEmpty { s.text += piece; s.req.cont.yield(.text(piece)) }
        } catch {
            s.req.cont.finish(throwing: error); finished(s.req.job, cancelled: false); return false
        }
        if s.generated >= o.maxNewTokens { finish(s, .length); return false }
        return true
    }

    private func finish(_ s: ActiveSequence, _ reason: FinishReason) {
        if reason != .cancelled {
            let rest = s.decoder.flush()
            if !rest.isEmpty { s.text += rest; s.req.cont.yield(.text(rest)) }
        }
        s.req.cont.yield(.finished(GenerationResult(promptTokens: s.req.promptIds.count, completionTokens: s.generated, text: s.text, finishReason: reason)))
        s.req.cont.finish()
        finished(s.req.job, cancelled: reason == .cancelled)
    }

    private func finished(_ job: GenerationJob, cancelled: Bool) {
        lock.lock()
        _active -= 1
        if cancelled { _cancelled += 1 } else { _completed += 1 }
        liveJobs[ObjectIdentifier(job)] = nil
        lock.unlock()
    }
}
