// OpenAI-compatible HTTP API on Hummingbird 2: POST /v1/chat/completions (JSON or SSE stream), GET /v1/models,
// GET /health, and the browser chat page at GET / (ChatPage.swift). Request/response shapes follow OpenAI's chat completion API (https://platform.openai.com/docs/api-reference/chat).
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import UnixSignals
import Model
import Tokenizers

/// An error answered with OpenAI's shape `{"error": {"message", "type", "param", "code"}}`.
public struct OpenAIError: HTTPResponseError, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?
    public init(_ status: HTTPResponse.Status, _ message: String, type: String = "invalid_request_error", param: String? = nil, code: String? = nil) {
        self.status = status; self.message = message; self.type = type; self.param = param; self.code = code
    }
    public var description: String { "\(status.code) \(type): \(message)" }
    public var jsonBody: [String: Any] {
        ["error": ["message": message, "type": type, "param": param ?? NSNull(), "code": code ?? NSNull()] as [String: Any]]
    }
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var r = jsonResponse(jsonBody, status: status)
        if status == .unauthorized { r.headers[.wwwAuthenticate] = "Bearer" }
        // The rest of an oversized body is never read: the connection closes after this answer (ConnectionGuard).
        if status == .contentTooLarge { r.headers[.connection] = "close" }
        return r
    }
}

/// JSONSerialization gives booleans as NSNumber with objCType "c" (macOS and swift-corelibs-foundation alike).
func isJSONBool(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }

func jsonData(_ obj: Any) -> Data {
    (try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
}

func jsonResponse(_ obj: Any, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(bytes: jsonData(obj))))
}

/// Server settings. `host` defaults to loopback; `apiKey` (when set) is required as `Authorization: Bearer KEY`
/// on every request except `GET /health` (liveness probes) and `GET /` (the static chat page).
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    /// 0 = any free port (reported through `onRunning`).
    public var port = 8998
    public var apiKey: String?
    /// Largest request body in bytes; larger bodies get 413.
    public var maxBodyBytes = 1 << 20
    /// Requests waiting for the generation worker beyond this get 503.
    public var maxQueued = 64
    /// Defaults when the request leaves them out.
    public var defaultTemperature: Float = 0.85
    public var defaultTopP: Float = 0.85
    public var defaultMaxTokens = 512
    /// Longest graceful shutdown (drain) in seconds: after it, connections still open (e.g. a client that never
    /// finishes sending its body) are cancelled and `run` returns. nil = wait for ever.
    public var shutdownTimeout: Double? = 10
    /// Seconds a client has to complete a request head, from its first byte (or from the end of the previous
    /// response when the next head had already begun); then 408 and the connection is closed (slow headers).
    public var headerTimeout: Double = 10
    /// Seconds from a request head to the end of its body (while the server waits for that body); then the
    /// connection is closed.
    public var bodyTimeout: Double = 30
    /// Seconds a keep-alive connection may stay idle (no request in progress, no byte received) before it is closed.
    public var idleTimeout: Double = 15
    /// Open connections allowed. At the limit a new connection displaces one without a request in progress — the
    /// longest still sending an unfinished head first, then the longest-idle keep-alive one, then the oldest that has
    /// sent nothing; when every connection has a request in progress, the new one gets 503.
    public var maxConnections = 512
    /// Depth of the listen (accept) queue asked of the kernel, which caps it at `net.core.somaxconn` (4096 on
    /// Linux ≥ 5.4). Sized for bursts of connects, independent of `maxConnections`.
    public static let listenBacklog = 4096
    public init() {}

    /// Hosts that accept connections only from this machine: 127.0.0.0/8, ::1 (also IPv4-mapped), `localhost`.
    public static func isLoopback(host: String) -> Bool {
        var h = host.trimmingCharacters(in: .whitespaces).lowercased()
        if h.hasPrefix("[") && h.hasSuffix("]") { h = String(h.dropFirst().dropLast()) }
        if h == "localhost" || h.hasSuffix(".localhost") { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, h, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, h, &v6) == 1 {
            let b = withUnsafeBytes(of: &v6) { Array($0) }
            if b[0..<15].allSatisfy({ $0 == 0 }) && b[15] == 1 { return true }                        // ::1
            if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xff && b[11] == 0xff && b[12] == 127 { return true }   // ::ffff:127.x
        }
        return false
    }

    /// A warning when the server listens beyond loopback without an API key (anyone who can reach the port can use
    /// it), else nil.
    public var exposureWarning: String? {
        guard apiKey == nil, !Self.isLoopback(host: host) else { return nil }
        return "serving on \(host) (not loopback) without --api-key: anyone who can reach this port can run generations; set --api-key or bind 127.0.0.1"
    }

    /// Checks values that cannot work. - Throws: `ServingError` naming the option.
    public func validate() throws {
        if let k = apiKey {
            if k.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                throw ServingError("--api-key must not be empty or blank (all whitespace): it would be no protection") }
            if k.first!.isWhitespace || k.last!.isWhitespace {
                throw ServingError("--api-key must not start or end with whitespace (HTTP drops it from the Authorization header, so no request could match)") }
            if k.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f || $0.value > 0x7e }) {
                throw ServingError("--api-key must be printable ASCII (it travels in an HTTP header)") }
        }
        for (name, v) in [("--header-timeout", headerTimeout), ("--body-timeout", bodyTimeout), ("--idle-timeout", idleTimeout)]
        where !(v.isFinite && v > 0 && v <= 86_400) {
            throw ServingError("\(name) must be a number of seconds in (0, 86400] (got \(v))")
        }
        if maxConnections < 1 { throw ServingError("--max-connections must be ≥ 1 (got \(maxConnections))") }
        if maxBodyBytes < 1 { throw ServingError("--max-body-bytes must be ≥ 1 (got \(maxBodyBytes))") }
    }
}

/// The request context of the server's routes: Hummingbird's basics plus the connection's channel (to learn when
/// the client goes away).
public struct ServerRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: any Channel
    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// A parsed, validated chat completion request.
public struct ChatCompletionRequest {
    public var messages: [ChatMessage]
    public var temperature: Float
    public var topP: Float
    public var maxTokens: Int?
    public var stream: Bool
    public var includeUsage: Bool
    public var seed: UInt64?
    public var model: String?

    /// Validates the JSON body of POST /v1/chat/completions (types, roles, ranges); errors name the field (`param`).
    public static func parse(_ body: Data, defaults: ServerConfiguration) throws -> ChatCompletionRequest {
        func bad(_ msg: String, _ param: String?) -> OpenAIError { OpenAIError(.badRequest, msg, param: param) }
        let obj: Any
        do { obj = try JSONSerialization.jsonObject(with: body) } catch {
            let why = "\((error as NSError).userInfo[NSDebugDescriptionErrorKey] ?? "malformed JSON")"
            throw bad("We could not parse the JSON body of your request (\(why.hasSuffix(".") ? String(why.dropLast()) : why)).", nil)
        }
        guard let d = obj as? [String: Any] else { throw bad("The request body must be a JSON object.", nil) }
        func number(_ key: String) throws -> Double? {
            guard let v = d[key], !(v is NSNull) else { return nil }
            guard let n = v as? NSNumber, !isJSONBool(n) else {
                throw bad("Invalid type for '\(key)': expected a number.", key) }
            return n.doubleValue
        }
        func integer(_ key: String) throws -> Int? {
            guard let x = try number(key) else { return nil }
            guard x == x.rounded(), abs(x) < 1e15 else { throw bad("Invalid type for '\(key)': expected an integer.", key) }
            return Int(x)
        }
        func bool(_ key: String) throws -> Bool? {
            guard let v = d[key], !(v is NSNull) else { return nil }
            guard let n = v as? NSNumber, isJSONBool(n) else {
                throw bad("Invalid type for '\(key)': expected a boolean.", key) }
            return n.boolValue
        }
        guard let rawMessages = d["messages"] else { throw bad("Missing required parameter: 'messages'.", "messages") }
        guard let arr = rawMessages as? [Any] else { throw bad("Invalid type for 'messages': expected an array.", "messages") }
        guard !arr.isEmpty else { throw bad("Invalid 'messages': empty array. Expected an array with at least one message.", "messages") }
        var messages: [ChatMessage] = []
        for (i, m) in arr.enumerated() {
            let p = "messages[\(i)]"
            guard let md = m as? [String: Any] else { throw bad("Invalid type for '\(p)': expected an object.", p) }
            guard let role = md["role"] as? String else { throw bad("Missing or invalid '\(p).role': expected a string.", "\(p).role") }
            let mapped: String
            switch role {
            case "system", "developer": mapped = "system"
            case "user", "assistant": mapped = role
            default:
                throw bad("Invalid value for '\(p).role': '\(role)'. Supported values are: 'system', 'developer', 'user' and 'assistant'.", "\(p).role")
            }
            var content = ""
            if let s = md["content"] as? String { content = s }
            else if let parts = md["content"] as? [Any] {
                for (j, part) in parts.enumerated() {
                    guard let pd = part as? [String: Any], (pd["type"] as? String) == "text", let t = pd["text"] as? String else {
                        throw bad("Invalid '\(p).content[\(j)]': only text parts are supported.", "\(p).content") }
                    content += t
                }
            } else { throw bad("Invalid type for '\(p).content': expected a string or an array of text parts.", "\(p).content") }
            messages.append(ChatMessage(role: mapped, content: content))
        }
        guard messages.contains(where: { $0.role == "user" }) else {
            throw bad("Invalid 'messages': at least one message must have the role 'user'.", "messages") }
        if let mv = d["model"], !(mv is NSNull), !(mv is String) { throw bad("Invalid type for 'model': expected a string.", "model") }
        let temperature = try number("temperature").map(Float.init) ?? defaults.defaultTemperature
        guard temperature >= 0 && temperature <= 2 else {
            throw bad("Invalid 'temperature': \(temperature). Expected a value between 0 and 2.", "temperature") }
        let topP = try number("top_p").map(Float.init) ?? defaults.defaultTopP
        guard topP > 0 && topP <= 1 else { throw bad("Invalid 'top_p': \(topP). Expected a value in (0, 1].", "top_p") }
        let maxTokensKey = d["max_completion_tokens"] != nil && !(d["max_completion_tokens"] is NSNull) ? "max_completion_tokens" : "max_tokens"
        let maxTokens = try integer(maxTokensKey)
        if let mt = maxTokens, mt <= 0 { throw bad("Invalid '\(maxTokensKey)': \(mt). Expected a value ≥ 1.", maxTokensKey) }
        if let n = try integer("n"), n != 1 { throw bad("Invalid 'n': \(n). Only n = 1 is supported.", "n") }
        let stream = try bool("stream") ?? false
        var includeUsage = false
        if let so = d["stream_options"], !(so is NSNull) {
            guard let sod = so as? [String: Any] else { throw bad("Invalid type for 'stream_options': expected an object.", "stream_options") }
            if let iu = sod["include_usage"] {
                guard let n = iu as? NSNumber, isJSONBool(n) else {
                    throw bad("Invalid type for 'stream_options.include_usage': expected a boolean.", "stream_options.include_usage") }
                includeUsage = n.boolValue
            }
        }
        let seed = try integer("seed")
        return ChatCompletionRequest(messages: messages, temperature: temperature, topP: topP, maxTokens: maxTokens, stream: stream,
                                     includeUsage: includeUsage, seed: seed.map { UInt64(bitPattern: Int64($0)) },
                                     model: d["model"] as? String)
    }
}

/// Rejects every request without `Authorization: Bearer KEY` (401, OpenAI's invalid_api_key shape) except exactly
/// `GET`/`HEAD /health` (liveness probes) and `GET`/`HEAD /` (the static chat page, whose API calls carry the key). Deny by default: the router also matches path variants such as `//v1/models`,
/// so the check must not depend on a path prefix.
struct APIKeyMiddleware<Context: RequestContext>: RouterMiddleware {
    let key: String
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if !((request.method == .get || request.method == .head) && (request.uri.path == "/health" || request.uri.path == "/")) {
            let given = request.headers[.authorization] ?? ""
            // The scheme is case-insensitive (RFC 9110 §11.1); the key is compared whole, in a length-independent way.
            let token = given.prefix(7).lowercased() == "bearer " ? Substring(given.dropFirst(7)) : ""
            var diff = token.utf8.count ^ key.utf8.count
            for (a, b) in zip(token.utf8, key.utf8) { diff |= Int(a ^ b) }
            if given.isEmpty || token.isEmpty { diff |= 1 }
            if diff != 0 {
                throw OpenAIError(.unauthorized, given.isEmpty ? "You didn't provide an API key. Provide it as 'Authorization: Bearer KEY'."
                                                               : "Incorrect API key provided.", code: "invalid_api_key")
            }
        }
        return try await next(request, context)
    }
}

/// Turns Hummingbird's own errors (404 route, 405, 413 …) and unexpected ones into OpenAI-shaped bodies.
struct OpenAIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do { return try await next(request, context) } catch let e as OpenAIError { throw e } catch let e as HTTPResponseError {
            let type = e.status.code >= 500 ? "server_error" : "invalid_request_error"
            var msg = e.status.reasonPhrase
            var code: String?
            if e.status == .notFound { msg = "Unknown request URL: \(request.method) \(request.uri.path)." }
            if e.status == .contentTooLarge { msg = "Request body is too large."; code = "request_too_large" }
            throw OpenAIError(e.status, msg, type: type, code: code)
        } catch {
            logger.error("request \(request.method) \(request.uri.path) failed: \(error)")
            throw OpenAIError(.internalServerError, "Internal error: \(error)", type: "server_error")
        }
    }
}

/// The OpenAI-compatible server: routes, validation, queueing onto the engine's generation worker, SSE streaming.
public final class OpenAIServer: @unchecked Sendable {
    public let engine: GenerationEngine
    public let configuration: ServerConfiguration
    public let logger: Logger
    let created = Int(Date().timeIntervalSince1970)
    /// Open connections (limit, displacement, client presence), shared by every connection's guard.
    let connections: ConnectionTable

    public init(engine: GenerationEngine, configuration: ServerConfiguration, logger: Logger? = nil) {
        self.engine = engine; self.configuration = configuration
        var l = logger ?? Logger(label: "swiftmind.serve")
        if logger == nil { l.logLevel = .info }
        self.logger = l
        connections = ConnectionTable(limit: configuration.maxConnections)
    }

    /// The router with every route and middleware.
    public func makeRouter() -> Router<ServerRequestContext> {
        let router = Router(context: ServerRequestContext.self)
        router.add(middleware: OpenAIErrorMiddleware(logger: logger))
        if let key = configuration.apiKey { router.add(middleware: APIKeyMiddleware(key: key)) }
        router.get("/health") { [self] _, _ -> Response in
            let s = engine.stats, c = connections.stats
            return jsonResponse(["status": "ok", "model": engine.modelName, "queued": s.queued, "active": s.active,
                                 "completed": s.completed, "cancelled": s.cancelled, "connections": c.open,
                                 "context_length": engine.contextLength])
        }
        router.get("/") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-cache",
                                            .contentSecurityPolicy: ChatPage.contentSecurityPolicy],
                     body: ResponseBody(byteBuffer: ByteBuffer(string: ChatPage.html)))
        }
        router.get("/v1/models") { [self] _, _ -> Response in
            jsonResponse(["object": "list", "data": [["id": engine.modelName, "object": "model", "created": created, "owned_by": "swiftmind"]]])
        }
        router.get("/v1/models/{id}") { [self] _, ctx -> Response in
            let id = ctx.parameters.get("id") ?? ""
            guard id == engine.modelName else {
                throw OpenAIError(.notFound, "The model '\(id)' does not exist.", param: "model", code: "model_not_found") }
            return jsonResponse(["id": engine.modelName, "object": "model", "created": created, "owned_by": "swiftmind"])
        }
        router.post("/v1/chat/completions") { [self] request, context -> Response in
            try await chatCompletions(request, presence: connections.presence(of: context.channel))
        }
        return router
    }

    /// `presence` tells when the client's connection goes away: its generation is then cancelled (queued or running).
    func chatCompletions(_ request: Request, presence: ClientPresence?) async throws -> Response {
        var request = request
        let buffer: ByteBuffer
        do { buffer = try await request.collectBody(upTo: configuration.maxBodyBytes) } catch let e as HTTPResponseError where e.status == .contentTooLarge {
            // Hummingbird throws NIOTooManyBytesError (an HTTPResponseError with status 413).
            throw OpenAIError(.contentTooLarge, "Request body exceeds the limit of \(configuration.maxBodyBytes) bytes.", code: "request_too_large")
        } catch {
            // The client closed (or the connection broke) before sending the whole body: its fault, not ours.
            logger.info("request body incomplete: \(error)")
            throw OpenAIError(.badRequest, "The request body is incomplete: \(error).", code: "incomplete_body")
        }
        let req = try ChatCompletionRequest.parse(Data(buffer.readableBytesView), defaults: configuration)
        let promptIds: [Int32]
        do { promptIds = try engine.chatPromptIds(req.messages) } catch {
            throw OpenAIError(.badRequest, "Cannot render the chat template: \(error)", param: "messages") }
        let ctx = engine.contextLength
        if let mt = req.maxTokens, mt > ctx {
            throw OpenAIError(.badRequest, "Invalid 'max_tokens': \(mt) is above the context window of \(ctx) tokens.",
                              param: "max_tokens", code: "context_length_exceeded") }
        let room = ctx - promptIds.count
        if room <= 0 || (req.maxTokens ?? 1) > room {
            throw OpenAIError(.badRequest, "This model's maximum context length is \(ctx) tokens. However, you requested \(promptIds.count + (req.maxTokens ?? 1)) tokens (\(promptIds.count) in the messages, \(req.maxTokens ?? 1) in the completion).",
                              param: "messages", code: "context_length_exceeded") }
        let maxTokens = req.maxTokens ?? min(configuration.defaultMaxTokens, room)
        let seed = req.seed ?? UInt64.random(in: 0...UInt64.max)
        var opts = SamplingOptions(maxNewTokens: maxTokens, temperature: req.temperature, topP: req.topP, seed: seed,
                                   eosTokenId: engine.tokenizer.eosTokenId)
        opts.stopTokenIds = engine.model.config.extraStopTokenIds(besides: opts.eosTokenId)
        let job = GenerationJob()
        let stream: AsyncThrowingStream<GenerationEvent, Error>
        do { stream = try engine.submit(promptIds: promptIds, options: opts, job: job, maxQueued: configuration.maxQueued) } catch {
            throw OpenAIError(.serviceUnavailable, "\(error)", type: "server_error", code: "server_busy") }
        let id = "chatcmpl-" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(24)
        let created = Int(Date().timeIntervalSince1970)
        let model = engine.modelName
        @Sendable func usage(_ r: GenerationResult) -> [String: Any] {
            ["prompt_tokens": r.promptTokens, "completion_tokens": r.completionTokens, "total_tokens": r.promptTokens + r.completionTokens]
        }
        // A client that goes away (its connection's read side ends) stops its generation at the next token.
        let goneToken = presence?.onGone { job.cancel() }
        if !req.stream {
            defer { job.cancel(); presence?.remove(goneToken) }
            var result: GenerationResult?
            for try await ev in stream { if case let .finished(r) = ev { result = r } }
            if let p = presence, p.isGone, result == nil || result?.finishReason == .cancelled {
                logger.info("request \(id): the client went away; generation stopped after \(result?.completionTokens ?? 0) tokens")
                // Nobody reads this answer; 499 is nginx's "client closed request".
                throw OpenAIError(HTTPResponse.Status(code: 499, reasonPhrase: "Client Closed Request"), "The client closed the connection.",
                                  code: "client_closed_request")
            }
            // Otherwise the only cancellation of a non-streaming job is the server's shutdown (the engine finishes the
            // stream without a result for jobs cancelled while queued): answer 503, never a "cancelled" finish_reason.
            guard let r = result, r.finishReason != .cancelled else {
                throw OpenAIError(.serviceUnavailable, "The server is shutting down; the request was not completed. Retry later.",
                                  type: "server_error", code: "server_shutting_down") }
            return jsonResponse([
                "id": id, "object": "chat.completion", "created": created, "model": model, "system_fingerprint": NSNull(),
                "choices": [["index": 0, "message": ["role": "assistant", "content": r.text], "logprobs": NSNull(),
                             "finish_reason": r.finishReason.rawValue] as [String: Any]],
                "usage": usage(r),
            ])
        }
        let log = logger
        let includeUsage = req.includeUsage
        let body = ResponseBody { writer in
            defer { job.cancel(); presence?.remove(goneToken) }
            func chunk(_ delta: [String: Any], finish: String?) -> ByteBuffer {
                let c: [String: Any] = ["id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                                        "system_fingerprint": NSNull(),
                                        "choices": [["index": 0, "delta": delta, "logprobs": NSNull(), "finish_reason": finish ?? NSNull()] as [String: Any]]]
                return sse(c)
            }
            func sse(_ obj: [String: Any]) -> ByteBuffer {
                var b = ByteBuffer(string: "data: "); b.writeBytes(jsonData(obj)); b.writeString("\n\n"); return b
            }
            var finished = false
            do {
                try await writer.write(chunk(["role": "assistant", "content": ""], finish: nil))
                for try await ev in stream {
                    switch ev {
                    case let .text(piece): try await writer.write(chunk(["content": piece], finish: nil))
                    case let .finished(r):
                        finished = true
                        try await writer.write(chunk([:], finish: r.finishReason == .cancelled ? "stop" : r.finishReason.rawValue))
                        if includeUsage {
                            try await writer.write(sse(["id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                                                        "choices": [Any](), "usage": usage(r)]))
                        }
                    }
                }
            } catch let e where !(e is CancellationError) {
                job.cancel()
                log.info("stream \(id) ended early: \(e)")
                if e is ServingError || e is TokenizerError {
                    finished = true   // the error event ends this stream
                    try? await writer.write(sse(OpenAIError(.internalServerError, "\(e)", type: "server_error").jsonBody))
                } else { throw e }
            }
            // A job cancelled (shutdown) while still queued ends its stream without a result: the client still gets a
            // last chunk with a finish_reason, as OpenAI's streams always end.
            if !finished { try await writer.write(chunk([:], finish: "stop")) }
            try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }

    /// Builds the Hummingbird application. `onRunning(port)` is called once the socket is bound.
    /// Every connection goes through the guard (`ConnectionGuard.swift`): timeouts, the connection limit, closing
    /// after `Connection: close`, and the client-gone notice.
    public func makeApplication(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        let table = connections, log = logger
        let timeouts = ConnectionTimeouts(header: configuration.headerTimeout, body: configuration.bodyTimeout, idle: configuration.idleTimeout)
        return Application(router: makeRouter(),
                           server: HTTPServerBuilder { responder in
                               GuardedHTTP1Channel(responder: responder, table: table, timeouts: timeouts, logger: log)
                           },
                           // A deep listen backlog (Hummingbird's default is 256; the kernel caps it at
                           // net.core.somaxconn): a burst of connects waits in the kernel's accept queue instead of
                           // having its SYNs dropped (each drop costs the client a 1 s retransmit). The queue's depth
                           // is about how fast connections arrive, not how many may stay open: past the connection
                           // limit the guard displaces idle ones after accepting.
                           configuration: ApplicationConfiguration(address: .hostname(configuration.host, port: configuration.port), serverName: "SwiftMind",
                                                                   backlog: ServerConfiguration.listenBacklog),
                           onServerRunning: { ch in await onRunning(ch.localAddress?.port ?? -1) },
                           logger: logger)
    }

    /// Serves until SIGINT/SIGTERM (graceful: open requests finish) or until the surrounding task is cancelled.
    /// - Throws: `ServingError` for a configuration that cannot work (`ServerConfiguration.validate`); logs
    ///   `exposureWarning` when there is one.
    public func run(gracefulShutdownSignals: [UnixSignal] = [.sigterm, .sigint], onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        try configuration.validate()
        if let w = configuration.exposureWarning { logger.warning("\(w)") }
        var gc = ServiceGroupConfiguration(services: [makeApplication(onRunning: onRunning), EngineShutdownService(engine: engine)],
                                           gracefulShutdownSignals: gracefulShutdownSignals, logger: logger)
        if let t = configuration.shutdownTimeout {
            // Drain for at most `t` seconds, then the group cancels the services (Hummingbird closes its channels).
            gc.maximumGracefulShutdownDuration = .milliseconds(Int64(max(0, t) * 1000))
        }
        let group = ServiceGroup(configuration: gc)
        groupLock.withLock { runningGroup = group }
        defer { groupLock.withLock { runningGroup = nil } }
        try await group.run()
    }

    private let groupLock = NSLock()
    private var runningGroup: ServiceGroup?

    /// Starts the same graceful shutdown as SIGTERM: running generations are cancelled (open streams get their
    /// final chunk and [DONE]), then the server stops accepting and drains; `run` returns.
    public func shutdownGracefully() async {
        let g = groupLock.withLock { runningGroup }
        await g?.triggerGracefulShutdown()
    }
}

/// On graceful shutdown (signal or cancellation) cancels queued and running generations, so open requests end at
/// their next token (streams get their final chunk and [DONE]) and the HTTP server can drain. Shut down before the
/// application (services stop in reverse order).
struct EngineShutdownService: Service {
    let engine: GenerationEngine
    func run() async throws {
        try? await gracefulShutdown()
        engine.shutdown()
    }
}

/// A plain message for an error from binding the listening socket (NIO's reads "bind(descriptor:ptr:bytes:): Address
/// already in use) (errno: 98)"), naming the address; nil for any other error.
public func listenErrorDescription(_ error: Error, host: String, port: Int) -> String? {
    guard let io = error as? IOError else { return nil }
    switch io.errnoCode {
    case EADDRINUSE: return "cannot listen on \(host):\(port): the address is already in use (another server on that port?); choose another --port"
    case EADDRNOTAVAIL: return "cannot listen on \(host):\(port): \(host) is not an address of this machine"
    case EACCES: return "cannot listen on \(host):\(port): permission denied (ports below 1024 need privileges)"
    default: return nil
    }
}
