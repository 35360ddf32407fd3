import Foundation
import Logging
import XCTest
@testable import Serving

/// Collects the levels of every log message (thread-safe).
final class LevelRecorder: @unchecked Sendable {
    let lock = NSLock()
    var entries: [(Logger.Level, String)] = []
    func add(_ l: Logger.Level, _ m: String) { lock.withLock { entries.append((l, m)) } }
    var snapshot: [(Logger.Level, String)] { lock.withLock { entries } }
}
struct RecordingHandler: LogHandler {
    let recorder: LevelRecorder
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? { get { metadata[key] } set { metadata[key] = newValue } }
    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
        recorder.add(level, message.description)
    }
}

final class TruncatedBodyTests: XCTestCase {
    /// A client that announces Content-Length: 100, sends 10 bytes and half-closes gets a 400 (incomplete body),
    /// nothing is logged at error level, and the server keeps serving; a client that closes outright after a partial
    /// body is logged at info only.
    func testTruncatedBodyIsNotAnInternalError() async throws {
        let engine = try GenerationEngine.load(model: golden("generate_model"), tokenizer: minimindTokenizer())
        let recorder = LevelRecorder()
        var logger = Logger(label: "test.serve") { _ in RecordingHandler(recorder: recorder) }
        logger.logLevel = .trace
        var cfg = ServerConfiguration()
        cfg.port = 0
        let server = OpenAIServer(engine: engine, configuration: cfg, logger: logger)
        let (ports, cont) = AsyncStream<Int>.makeStream()
        let task = Task { try await server.run(gracefulShutdownSignals: []) { p in cont.yield(p) } }
        var port = 0
        for await p in ports { port = p; break }
        defer { Task { await server.shutdownGracefully(); _ = try? await task.value } }

        let status = try await onThread { () -> Int in
            let c = try RawHTTP(port: port)
            c.sendRaw("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"messages")
            shutdown(c.fd, Int32(SHUT_WR))
            guard let (s, h) = try? c.readHead() else { return -1 }   // the server may also just close
            if s == 400 {
                let err = try json(try c.readBody(h))["error"] as? [String: Any]
                XCTAssertEqual(err?["code"] as? String, "incomplete_body")
            }
            return s
        }
        XCTAssertEqual(status, 400, "truncated body (then half-close) → 400 incomplete_body")
        // Same, but the client closes outright (no response can reach it): logged at info, not as an internal error.
        try await onThread { () -> Void in
            let c = try RawHTTP(port: port)
            c.sendRaw("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"messages")
            c.closeNow()
        }
        for _ in 0..<3000 where recorder.snapshot.filter({ $0.1.contains("request body incomplete") }).count < 2 {
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        XCTAssertEqual(recorder.snapshot.filter { $0.1.contains("request body incomplete") }.count, 2)
        // Still serving.
        let (hs, _, _) = try await onThread { try RawHTTP.request(port: port, "GET", "/health") }
        XCTAssertEqual(hs, 200)
        let errors = recorder.snapshot.filter { $0.0 >= .error }
        XCTAssertTrue(errors.isEmpty, "logged at error level: \(errors)")
    }
}
