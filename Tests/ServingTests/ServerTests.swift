import Foundation
import XCTest
@testable import Serving
import Model
import Tokenizers

/// The OpenAI-compatible server over a real loopback socket, on the golden generate model + MiniMind's tokenizer.
final class ServerTests: XCTestCase {
    func makeEngine() throws -> GenerationEngine {
        try GenerationEngine.load(model: golden("generate_model"), tokenizer: minimindTokenizer())
    }

    func goldenText(_ engine: GenerationEngine) throws -> String {
        try engine.tokenizer.decode(try loadGoldenGenerate().greedy_ids, skipSpecialTokens: true)
    }

    func chatBody(_ extra: [String: Any] = [:], user: String = goldenUserMessage) -> Data {
        var d: [String: Any] = ["model": "generate_model", "messages": [["role": "user", "content": user]], "temperature": 0, "max_tokens": 24]
        for (k, v) in extra { d[k] = v }
        return try! JSONSerialization.data(withJSONObject: d)
    }

    /// Reads an SSE response to the end: the decoded chunk objects and whether `data: [DONE]` closed it.
    func readSSE(_ c: RawHTTP, _ h: [String: String]) throws -> ([[String: Any]], Bool) {
        var text = ""
        while let piece = try c.readChunk(h) { text += String(decoding: piece, as: UTF8.self) }
        var chunks: [[String: Any]] = []
        var done = false
        for event in text.components(separatedBy: "\n\n") where !event.isEmpty {
            XCTAssertTrue(event.hasPrefix("data: "), "SSE event without data: \(event)")
            let payload = String(event.dropFirst(6))
            if payload == "[DONE]" { done = true; continue }
            XCTAssertFalse(done, "event after [DONE]")
            chunks.append(try json(Data(payload.utf8)))
        }
        return (chunks, done)
    }

    func testHealthModelsAndGreedyCompletionMatchGolden() async throws {
        let engine = try makeEngine()
        let ts = try await TestServer(engine: engine)
        defer { Task { try? await ts.stopGracefully() } }
        let port = ts.port
        let expected = try goldenText(engine)
        let g = try loadGoldenGenerate()

        let (hs, hh, hb) = try await onThread { try RawHTTP.request(port: port, "GET", "/health") }
        XCTAssertEqual(hs, 200)
        XCTAssertEqual(hh["content-type"], "application/json")
        XCTAssertEqual(try json(hb)["status"] as? String, "ok")

        let (ms, _, mb) = try await onThread { try RawHTTP.request(port: port, "GET", "/v1/models") }
        XCTAssertEqual(ms, 200)
        let models = try json(mb)
        XCTAssertEqual(models["object"] as? String, "list")
        XCTAssertEqual(((models["data"] as? [[String: Any]])?.first)?["id"] as? String, "generate_model")

        let body = chatBody()
        let (cs, _, cb) = try await onThread { try RawHTTP.request(port: port, "POST", "/v1/chat/completions", body: body) }
        XCTAssertEqual(cs, 200)
        let r = try json(cb)
        XCTAssertEqual(r["object"] as? String, "chat.completion")
        XCTAssertTrue((r["id"] as? String)?.hasPrefix("chatcmpl-") ?? false)
        XCTAssertEqual(r["model"] as? String, "generate_model")
        XCTAssertNotNil(r["created"] as? Int)
        let choice = (r["choices"] as? [[String: Any]])?.first
        let message = choice?["message"] as? [String: Any]
        XCTAssertEqual(message?["role"] as? String, "assistant")
        XCTAssertEqual(message?["content"] as? String, expected, "greedy reply = golden greedy ids decoded")
        XCTAssertEqual(choice?["finish_reason"] as? String, "length")
        let usage = r["usage"] as? [String: Any]
        XCTAssertEqual(usage?["prompt_tokens"] as? Int, g.prompt_ids.count)
        XCTAssertEqual(usage?["completion_tokens"] as? Int, 24)
        XCTAssertEqual(usage?["total_tokens"] as? Int, g.prompt_ids.count + 24)
    }

    func testStreamingChunksConcatenateToGoldenReply() async throws {
        let engine = try makeEngine()
        let ts = try await TestServer(engine: engine)
        defer { Task { try? await ts.stopGracefully() } }
        let port = ts.port
        let expected = try goldenText(engine)
        let body = chatBody(["stream": true, "stream_options": ["include_usage": true]])
        let (status, headers, chunks, done) = try await onThread { () -> (Int, [String: String], [[String: Any]], Bool) in
            let c = try RawHTTP(port: port)
            try c.send("POST", "/v1/chat/completions", body: body)
            let (s, h) = try c.readHead()
            let (ch, d) = try self.readSSE(c, h)
            return (s, h, ch, d)
        }
        XCTAssertEqual(status, 200)
        XCTAssertEqual(headers["content-type"], "text/event-stream")
        XCTAssertTrue(done, "stream ends with data: [DONE]")
        XCTAssertGreaterThan(chunks.count, 3)
        let ids = Set(chunks.compactMap { $0["id"] as? String })
        XCTAssertEqual(ids.count, 1, "one id for every chunk")
        var text = ""
        var finish: [String] = []
        var usage: [String: Any]?
        for (i, c) in chunks.enumerated() {
            XCTAssertEqual(c["object"] as? String, "chat.completion.chunk")
            if let u = c["usage"] as? [String: Any] { usage = u; XCTAssertEqual((c["choices"] as? [Any])?.count, 0); continue }
            let choice = (c["choices"] as? [[String: Any]])?.first
            let delta = choice?["delta"] as? [String: Any]
            if i == 0 { XCTAssertEqual(delta?["role"] as? String, "assistant") }
            text += delta?["content"] as? String ?? ""
            if let f = choice?["finish_reason"] as? String { finish.append(f) }
        }
        XCTAssertEqual(text, expected)
        XCTAssertEqual(finish, ["length"])
        XCTAssertEqual(usage?["completion_tokens"] as? Int, 24)
    }

    func testValidationErrorsAreOpenAIShapedAndServerKeepsServing() async throws {
        let engine = try makeEngine()
        let ts = try await TestServer(engine: engine) { $0.maxBodyBytes = 4096 }
        defer { Task { try? await ts.stopGracefully() } }
        let port = ts.port
        func post(_ raw: String) async throws -> (Int, [String: Any]) {
            let (s, _, b) = try await onThread { try RawHTTP.request(port: port, "POST", "/v1/chat/completions", body: Data(raw.utf8)) }
            return (s, try json(b))
        }
        let cases: [(String, Int, String?)] = [
            ("{\"messages\": [", 400, nil),                                                   // malformed JSON
            ("[1, 2]", 400, nil),                                                              // not an object
            ("{}", 400, "messages"),                                                           // missing messages
            ("{\"messages\": []}", 400, "messages"),                                           // empty
            ("{\"messages\": \"hi\"}", 400, "messages"),                                       // wrong type
            ("{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}", 400, "messages[0].role"),
            ("{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", 400, "messages[0].content"),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"temperature\": \"hot\"}", 400, "temperature"),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"temperature\": 3}", 400, "temperature"),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"top_p\": 0}", 400, "top_p"),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": 0}", 400, "max_tokens"),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": -3}", 400, "max_tokens"),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": 1.5}", 400, "max_tokens"),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": 40000}", 400, "max_tokens"),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"stream\": \"yes\"}", 400, "stream"),
            ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"n\": 2}", 400, "n"),
        ]
        for (raw, status, param) in cases {
            let (s, b) = try await post(raw)
            XCTAssertEqual(s, status, raw)
            let err = b["error"] as? [String: Any]
            XCTAssertEqual(err?["type"] as? String, "invalid_request_error", raw)
            XCTAssertFalse((err?["message"] as? String ?? "").isEmpty, raw)
            if let param { XCTAssertEqual(err?["param"] as? String, param, raw) }
        }
        // Body over the limit → 413 with the same error shape.
        let big = "{\"messages\": [{\"role\": \"user\", \"content\": \"" + String(repeating: "a", count: 10_000) + "\"}]}"
        let (bs, bb) = try await post(big)
        XCTAssertEqual(bs, 413)
        XCTAssertNotNil((bb["error"] as? [String: Any])?["message"] as? String)
        // Unknown route → 404, OpenAI-shaped.
        let (ns, _, nb) = try await onThread { try RawHTTP.request(port: port, "GET", "/v1/nothing") }
        XCTAssertEqual(ns, 404)
        XCTAssertNotNil(try json(nb)["error"] as? [String: Any])
        // Still serving.
        let body = chatBody(["max_tokens": 3])
        let (ok, _, okb) = try await onThread { try RawHTTP.request(port: port, "POST", "/v1/chat/completions", body: body) }
        XCTAssertEqual(ok, 200)
        XCTAssertEqual(((try json(okb)["usage"]) as? [String: Any])?["completion_tokens"] as? Int, 3)
    }

    func testAPIKeyRequiredOnV1Routes() async throws {
        let engine = try makeEngine()
        let ts = try await TestServer(engine: engine) { $0.apiKey = "sk-swiftmind-test" }
        defer { Task { try? await ts.stopGracefully() } }
        let port = ts.port
        let body = chatBody(["max_tokens": 2])
        for headers in [[:], ["Authorization": "Bearer wrong"], ["Authorization": "sk-swiftmind-test"], ["Authorization": "Bearer "],
                        ["Authorization": "Bearer sk-swiftmind-tes"], ["Authorization": "Bearer sk-swiftmind-test2"]] {
            let (s, _, b) = try await onThread { try RawHTTP.request(port: port, "POST", "/v1/chat/completions", headers: headers, body: body) }
            XCTAssertEqual(s, 401, "\(headers)")
            XCTAssertEqual((try json(b)["error"] as? [String: Any])?["code"] as? String, "invalid_api_key")
            let (ms, _, _) = try await onThread { try RawHTTP.request(port: port, "GET", "/v1/models", headers: headers) }
            XCTAssertEqual(ms, 401)
        }
        // The scheme is case-insensitive (RFC 9110): "bearer" and "BEARER" work as "Bearer" does.
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let auth = ["Authorization": "\(scheme) sk-swiftmind-test"]
            let (s, _, _) = try await onThread { try RawHTTP.request(port: port, "POST", "/v1/chat/completions", headers: auth, body: body) }
            XCTAssertEqual(s, 200, scheme)
        }
        let (hs, _, _) = try await onThread { try RawHTTP.request(port: port, "GET", "/health") }
        XCTAssertEqual(hs, 200, "/health stays open for probes")
    }

    /// Three concurrent streams are all answered in full (same seed → same text); /health answers while they are
    /// queued or running.
    func testConcurrentStreamsAreQueuedAndHealthStaysResponsive() async throws {
        let engine = try makeEngine()
        let ts = try await TestServer(engine: engine)
        defer { Task { try? await ts.stopGracefully() } }
        let port = ts.port
        let body = chatBody(["stream": true, "max_tokens": 400, "temperature": 0.9, "seed": 7])
        let texts = try await withThrowingTaskGroup(of: String?.self) { group -> [String] in
            for _ in 0..<3 {
                group.addTask {
                    try await onThread { () -> String in
                        let c = try RawHTTP(port: port)
                        try c.send("POST", "/v1/chat/completions", body: body)
                        let (s, h) = try c.readHead()
                        XCTAssertEqual(s, 200)
                        let (chunks, done) = try self.readSSE(c, h)
                        XCTAssertTrue(done)
                        return chunks.map { (($0["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any])?["content"] as? String ?? "" }.joined()
                    }
                }
            }
            group.addTask {
                // Poll /health until it reports work in flight (it must answer during generation).
                for _ in 0..<400 {
                    let (s, _, b) = try await onThread { try RawHTTP.request(port: port, "GET", "/health") }
                    XCTAssertEqual(s, 200)
                    let h = try json(b)
                    if (h["active"] as? Int ?? 0) + (h["queued"] as? Int ?? 0) > 0 { return nil }
                    try await Task.sleep(nanoseconds: 5_000_000)
                }
                XCTFail("/health never saw a request in flight")
                return nil
            }
            var out: [String] = []
            for try await t in group { if let t { out.append(t) } }
            return out
        }
        XCTAssertEqual(texts.count, 3)
        XCTAssertFalse(texts[0].isEmpty)
        XCTAssertEqual(Set(texts).count, 1, "same seed and prompt → same text, whatever the interleaving")
        XCTAssertEqual(engine.stats.completed, 3)
    }

    /// A streaming client that disconnects stops its generation (long before max_tokens).
    func testDisconnectStopsGeneration() async throws {
        let engine = try makeEngine()
        let ts = try await TestServer(engine: engine)
        defer { Task { try? await ts.stopGracefully() } }
        let port = ts.port
        let body = chatBody(["stream": true, "max_tokens": 30000])
        try await onThread { () -> Void in
            let c = try RawHTTP(port: port)
            try c.send("POST", "/v1/chat/completions", body: body)
            let (s, h) = try c.readHead()
            XCTAssertEqual(s, 200)
            for _ in 0..<3 { _ = try c.readChunk(h) }
            c.closeNow()
        }
        var stats = engine.stats
        for _ in 0..<1000 where !(stats.active == 0 && stats.cancelled == 1) {
            try await Task.sleep(nanoseconds: 10_000_000)
            stats = engine.stats
        }
        XCTAssertEqual(stats.cancelled, 1, "the disconnected stream's generation was cancelled")
        XCTAssertEqual(stats.active, 0)
        // And the worker is free for the next request.
        let small = chatBody(["max_tokens": 2])
        let (s, _, _) = try await onThread { try RawHTTP.request(port: port, "POST", "/v1/chat/completions", body: small) }
        XCTAssertEqual(s, 200)
    }

    /// A stream whose job is still queued when the server shuts down (the engine ends it without a result) still
    /// ends as OpenAI's streams do: a last chunk with finish_reason "stop", then [DONE].
    func testShutdownEndsQueuedStreamsWithAFinishReason() async throws {
        let engine = try GenerationEngine.load(model: golden("generate_model"), tokenizer: minimindTokenizer(), maxBatch: 1)
        let ts = try await TestServer(engine: engine)
        let port = ts.port
        let body = chatBody(["stream": true, "max_tokens": 30000])
        let running = try RawHTTP(port: port), queued = try RawHTTP(port: port)
        let heads = try await onThread { () -> ([String: String], [String: String]) in
            try running.send("POST", "/v1/chat/completions", body: body)
            let (s1, h1) = try running.readHead()
            XCTAssertEqual(s1, 200)
            _ = try running.readChunk(h1)            // the role chunk
            _ = try running.readChunk(h1)            // a token: the first job holds the engine's only slot
            try queued.send("POST", "/v1/chat/completions", body: body)
            let (s2, h2) = try queued.readHead()
            XCTAssertEqual(s2, 200)
            return (h1, h2)
        }
        var stats = engine.stats
        for _ in 0..<1000 where stats.queued != 1 { try await Task.sleep(nanoseconds: 10_000_000); stats = engine.stats }
        XCTAssertEqual(stats.queued, 1, "the second request waits in the queue")
        let stopper = Task { try await ts.stopGracefully() }
        let (c1, d1) = try await onThread { try self.readSSE(running, heads.0) }
        let (c2, d2) = try await onThread { try self.readSSE(queued, heads.1) }
        try await stopper.value
        for (chunks, done) in [(c1, d1), (c2, d2)] {
            XCTAssertTrue(done, "stream closed with [DONE] on shutdown")
            let finish = chunks.compactMap { (($0["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String) }
            XCTAssertEqual(finish, ["stop"])
        }
    }

    /// Shutting the server down cancels a running generation: the open stream still gets its end and [DONE].
    func testShutdownEndsOpenStreams() async throws {
        let engine = try makeEngine()
        let ts = try await TestServer(engine: engine)
        let port = ts.port
        let body = chatBody(["stream": true, "max_tokens": 30000])
        let c = try RawHTTP(port: port)
        let head = try await onThread { () -> [String: String] in
            try c.send("POST", "/v1/chat/completions", body: body)
            let (s, h) = try c.readHead()
            XCTAssertEqual(s, 200)
            _ = try c.readChunk(h)
            return h
        }
        let stopper = Task { try await ts.stopGracefully() }
        let (chunks, done) = try await onThread { try self.readSSE(c, head) }
        try await stopper.value
        XCTAssertTrue(done, "stream closed with [DONE] on shutdown")
        XCTAssertLessThan(chunks.count, 30000)
        let finish = chunks.compactMap { (($0["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String) }
        XCTAssertEqual(finish, ["stop"])
        // The worker's bookkeeping may trail the stream's end by a moment (seen under a loaded machine): wait for it,
        // as testDisconnectStopsGeneration does.
        var stats = engine.stats
        for _ in 0..<1000 where !(stats.active == 0 && stats.cancelled == 1) {
            try await Task.sleep(nanoseconds: 10_000_000)
            stats = engine.stats
        }
        XCTAssertEqual(stats.active, 0)
        XCTAssertEqual(stats.cancelled, 1)
        // The listening socket is closed.
        XCTAssertThrowsError(try RawHTTP(port: port))
    }

    /// Auth is deny-by-default: path variants the router still matches (`//v1/models`, `/v1//models`, unknown
    /// routes) need the key too; only exactly `GET /health` and `GET /` (the static chat page, ChatPageTests) are open.
    func testAPIKeyAppliesToEveryPathVariant() async throws {
        let engine = try makeEngine()
        let ts = try await TestServer(engine: engine) { $0.apiKey = "sk-swiftmind-test" }
        defer { Task { try? await ts.stopGracefully() } }
        let port = ts.port
        let body = chatBody(["max_tokens": 2])
        for path in ["//v1/models", "///v1/models", "/v1//models", "//v1/models/generate_model", "/./v1/models",
                     "/v1/../v1/models", "/V1/models", "/nothing", "//health/../v1/models"] {
            let (s, _, b) = try await onThread { try RawHTTP.request(port: port, "GET", path) }
            XCTAssertEqual(s, 401, "GET \(path)")
            XCTAssertEqual((try? json(b))?["error"].flatMap { ($0 as? [String: Any])?["code"] as? String }, "invalid_api_key", path)
        }
        for path in ["//v1/chat/completions", "/v1//chat/completions", "/v1/chat/completions/"] {
            let (s, _, _) = try await onThread { try RawHTTP.request(port: port, "POST", path, body: body) }
            XCTAssertEqual(s, 401, "POST \(path)")
        }
        XCTAssertEqual(engine.stats.completed, 0, "no generation ran without the key")
        let (hs, _, _) = try await onThread { try RawHTTP.request(port: port, "GET", "/health") }
        XCTAssertEqual(hs, 200)
        let auth = ["Authorization": "Bearer sk-swiftmind-test"]
        let (ms, _, _) = try await onThread { try RawHTTP.request(port: port, "GET", "/v1/models", headers: auth) }
        XCTAssertEqual(ms, 200)
    }

    /// Keep-alive and HTTP/1.1 pipelining after non-streaming responses: three requests written at once on one
    /// connection (a completion first) are all answered in order, without `Connection: close`.
    func testPipelinedRequestsAfterNonStreamingCompletionAreAnswered() async throws {
        let engine = try makeEngine()
        let ts = try await TestServer(engine: engine)
        defer { Task { try? await ts.stopGracefully() } }
        let port = ts.port
        let body = String(decoding: chatBody(["max_tokens": 3]), as: UTF8.self)
        let post = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body
        let get = "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        try await onThread { () -> Void in
            let c = try RawHTTP(port: port, timeoutSeconds: 60)
            c.sendRaw(post + get + post)
            for i in 0..<3 {
                let (s, h) = try c.readHead()
                XCTAssertEqual(s, 200, "response \(i)")
                XCTAssertNotEqual(h["connection"]?.lowercased(), "close", "response \(i) keeps the connection")
                let b = try json(try c.readBody(h))
                XCTAssertEqual(b["object"] as? String, i == 1 ? "list" : "chat.completion", "response \(i) in order")
            }
            // Keep-alive: the same connection serves a later request too.
            c.sendRaw(get)
            let (s, h) = try c.readHead()
            XCTAssertEqual(s, 200)
            XCTAssertEqual(try json(try c.readBody(h))["object"] as? String, "list")
        }
    }

    /// A body over the limit gets our OpenAI-style error (code request_too_large), whether the limit is hit while
    /// reading a Content-Length body or a chunked one.
    func testBodyOverLimitIsRequestTooLarge() async throws {
        let engine = try makeEngine()
        let ts = try await TestServer(engine: engine) { $0.maxBodyBytes = 4096 }
        defer { Task { try? await ts.stopGracefully() } }
        let port = ts.port
        let big = Data(("{\"messages\": [{\"role\": \"user\", \"content\": \"" + String(repeating: "a", count: 10_000) + "\"}]}").utf8)
        let (s, _, b) = try await onThread { try RawHTTP.request(port: port, "POST", "/v1/chat/completions", body: big) }
        XCTAssertEqual(s, 413)
        let err = try json(b)["error"] as? [String: Any]
        XCTAssertEqual(err?["code"] as? String, "request_too_large")
        XCTAssertEqual(err?["type"] as? String, "invalid_request_error")
    }

    /// Awaits `task` for at most `seconds`; false (and the task cancelled) if it had not finished.
    func finishes(_ task: Task<Void, Error>, within seconds: Double) async -> Bool {
        final class Flag: @unchecked Sendable { var done = false; let lock = NSLock() }
        let flag = Flag()
        let watcher = Task { _ = try? await task.value; flag.lock.withLock { flag.done = true } }
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if flag.lock.withLock({ flag.done }) { return true }
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        task.cancel(); watcher.cancel()
        return false
    }

    /// Graceful shutdown with a client holding a half-sent body (Content-Length: 100, 10 bytes sent, socket left
    /// open) still ends: after `shutdownTimeout` the connection is dropped and `run` returns.
    func testShutdownWithHalfSentBodyEndsAfterTimeout() async throws {
        let engine = try makeEngine()
        let ts = try await TestServer(engine: engine) { $0.shutdownTimeout = 1 }
        let port = ts.port
        let c = try RawHTTP(port: port, timeoutSeconds: 60)
        c.sendRaw("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"messages")
        // Make sure the server has the request before shutting down.
        let (hs, _, _) = try await onThread { try RawHTTP.request(port: port, "GET", "/health") }
        XCTAssertEqual(hs, 200)
        let stopper = Task { try await ts.stopGracefully() }
        let ok = await finishes(stopper, within: 60)
        XCTAssertTrue(ok, "graceful shutdown finished despite the half-sent body")
        let closed = try await onThread { c.waitForClose() }
        XCTAssertTrue(closed, "the half-open connection was closed")
        XCTAssertThrowsError(try RawHTTP(port: port))
    }

    /// A non-streaming request still generating when the server shuts down gets 503 with an OpenAI-style error
    /// (never a 500, never finish_reason "cancelled").
    func testShutdownAnswersUnfinishedNonStreamingRequestWith503() async throws {
        let engine = try makeEngine()
        let ts = try await TestServer(engine: engine)
        let port = ts.port
        let long = chatBody(["max_tokens": 30000])
        let client = Task { try await onThread { try RawHTTP.request(port: port, "POST", "/v1/chat/completions", body: long) } }
        for _ in 0..<3000 where engine.stats.active == 0 { try await Task.sleep(nanoseconds: 10_000_000) }
        XCTAssertEqual(engine.stats.active, 1, "the generation is running")
        let stopper = Task { try await ts.stopGracefully() }
        let (s, _, b) = try await client.value
        XCTAssertEqual(s, 503)
        let err = try json(b)["error"] as? [String: Any]
        XCTAssertEqual(err?["type"] as? String, "server_error")
        XCTAssertEqual(err?["code"] as? String, "server_shutting_down")
        XCTAssertFalse(String(decoding: b, as: UTF8.self).contains("cancelled"))
        let ok = await finishes(stopper, within: 60)
        XCTAssertTrue(ok)
    }
}
