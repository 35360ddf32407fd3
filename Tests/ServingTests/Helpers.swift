import Foundation
import XCTest
@testable import Serving
import Model
import Tokenizers
import TestSupport

/// `Tests/Fixtures/golden/<p>` (see `Fixtures` in Tests/TestSupport).
func golden(_ p: String) -> String { Fixtures.golden(p) }
/// `Tests/Fixtures/tokenizers/minimind`.
func minimindTokenizer() -> String { Fixtures.miniMindTokenizer }

struct GoldenGenerate: Decodable { let prompt_ids: [Int32]; let greedy_ids: [Int32]; let max_new_tokens: Int }
func loadGoldenGenerate() throws -> GoldenGenerate {
    try JSONDecoder().decode(GoldenGenerate.self, from: Data(contentsOf: URL(fileURLWithPath: golden("generate_model/generate.json"))))
}
/// The user message the golden ChatML prompt was rendered from.
let goldenUserMessage = "你好，请背诵一首诗。"

/// Runs `body` on a dedicated thread (blocking socket I/O never occupies the concurrency pool the server uses).
func onThread<T>(_ body: @escaping () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
        let t = Thread { do { c.resume(returning: try body()) } catch { c.resume(throwing: error) } }
        t.start()
    }
}

struct HTTPFailure: Error, CustomStringConvertible { let description: String }

/// The built `trainer` executable beside the test bundle, or `$SWIFTMIND_TRAINER_BIN`.
func trainerBinary() throws -> URL {
    if let p = ProcessInfo.processInfo.environment["SWIFTMIND_TRAINER_BIN"] { return URL(fileURLWithPath: p) }
    var dirs = (Bundle.allBundles + [Bundle.main]).map { $0.bundleURL.deletingLastPathComponent() }
    dirs.append(URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent())
    for dir in dirs {
        var d = dir
        for _ in 0..<4 {
            let u = d.appendingPathComponent("trainer")
            if FileManager.default.isExecutableFile(atPath: u.path) { return u }
            d = d.deletingLastPathComponent()
        }
    }
    XCTFail("trainer not found next to the test bundle; build it with `swift build` (or set SWIFTMIND_TRAINER_BIN)")
    throw XCTSkip("no trainer binary")
}

/// Runs `trainer args` to its end (at most `timeout` seconds, then it is terminated): status, stdout, stderr.
/// Standard input is empty, or the file at `stdinFile`.
func runTrainer(_ args: [String], timeout: Double = 60, stdinFile: String? = nil) throws -> (Int32, String, String) {
    let p = Process()
    p.executableURL = try trainerBinary()
    p.arguments = args
    var env = ProcessInfo.processInfo.environment
    env["OPENBLAS_NUM_THREADS"] = "1"
    p.environment = env
    p.standardInput = stdinFile.flatMap { FileHandle(forReadingAtPath: $0) } ?? FileHandle.nullDevice
    let out = Pipe(), err = Pipe()
    p.standardOutput = out; p.standardError = err
    try p.run()
    final class Box: @unchecked Sendable { var data = Data() }
    let o = Box(), e = Box()
    let g = DispatchGroup()
    g.enter(); DispatchQueue.global().async { o.data = out.fileHandleForReading.readDataToEndOfFile(); g.leave() }
    g.enter(); DispatchQueue.global().async { e.data = err.fileHandleForReading.readDataToEndOfFile(); g.leave() }
    if g.wait(timeout: .now() + timeout) == .timedOut { p.terminate(); XCTFail("trainer \(args.first ?? "") did not finish in \(timeout) s") }
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o.data, as: UTF8.self), String(decoding: e.data, as: UTF8.self))
}

/// A minimal blocking HTTP/1.1 client over a loopback TCP socket (Connection: close; chunked bodies decoded).
final class RawHTTP {
    let fd: Int32
    var buffer: [UInt8] = []
    var eof = false

    init(port: Int, timeoutSeconds: Int = 30) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HTTPFailure(description: "socket() failed") }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { close(fd); throw HTTPFailure(description: "connect to port \(port) failed (errno \(errno))") }
    }
    deinit { close(fd) }
    func closeNow() { shutdown(fd, Int32(SHUT_RDWR)) }

    func send(_ method: String, _ path: String, headers: [String: String] = [:], body: Data? = nil) throws {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        head += "\r\n"
        var bytes = Array(head.utf8)
        if let body { bytes += Array(body) }
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBufferPointer { write(fd, $0.baseAddress!, $0.count) }
            if n <= 0 { return }   // the server may close early (e.g. 413) — the response is still readable
            off += n
        }
    }

    /// Writes raw bytes as given (pipelined requests, partial bodies…).
    func sendRaw(_ text: String) {
        let bytes = Array(text.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBufferPointer { write(fd, $0.baseAddress!, $0.count) }
            if n <= 0 { return }
            off += n
        }
    }

    /// Reads until the server closes the connection (true) or the receive timeout expires (false).
    func waitForClose() -> Bool {
        while true {
            do { if try !fill() { return true } } catch { return false }
        }
    }

    private func fill() throws -> Bool {
        if eof { return false }
        var tmp = [UInt8](repeating: 0, count: 65536)
        let n = tmp.withUnsafeMutableBufferPointer { read(fd, $0.baseAddress!, $0.count) }
        if n < 0 { throw HTTPFailure(description: "read failed (errno \(errno))") }
        if n == 0 { eof = true; return false }
        buffer += tmp[0..<n]
        return true
    }

    func readLine() throws -> String? {
        while true {
            if let i = buffer.firstIndex(of: 10) {
                var line = Array(buffer[0..<i]); buffer.removeFirst(i + 1)
                if line.last == 13 { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            if try !fill() { return buffer.isEmpty ? nil : String(decoding: buffer, as: UTF8.self) }
        }
    }

    func readBytes(_ n: Int) throws -> [UInt8] {
        while buffer.count < n { if try !fill() { break } }
        let k = min(n, buffer.count)
        defer { buffer.removeFirst(k) }
        return Array(buffer[0..<k])
    }

    /// Status line and headers (lower-cased names).
    func readHead() throws -> (Int, [String: String]) {
        guard let status = try readLine(), status.hasPrefix("HTTP/1.1 ") else { throw HTTPFailure(description: "no status line") }
        let code = Int(status.split(separator: " ")[1]) ?? -1
        var h: [String: String] = [:]
        while let l = try readLine(), !l.isEmpty {
            if let c = l.firstIndex(of: ":") { h[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharacters(in: .whitespaces) }
        }
        return (code, h)
    }

    /// Next piece of a chunked body (nil at the end), or the rest for a Content-Length / close-delimited body.
    func readChunk(_ headers: [String: String]) throws -> [UInt8]? {
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            guard let sizeLine = try readLine(), let n = Int(sizeLine.split(separator: ";")[0], radix: 16) else { return nil }
            if n == 0 { _ = try readLine(); return nil }
            let data = try readBytes(n)
            _ = try readLine()
            return data
        }
        if let cl = headers["content-length"].flatMap(Int.init) { return cl == 0 ? nil : try readBytes(cl) }
        var all: [UInt8] = []
        while try fill() {}
        all = buffer; buffer = []
        return all.isEmpty ? nil : all
    }

    func readBody(_ headers: [String: String]) throws -> Data {
        var out: [UInt8] = []
        while let c = try readChunk(headers) {
            out += c
            if headers["transfer-encoding"]?.lowercased() != "chunked" { break }
        }
        return Data(out)
    }

    static func request(port: Int, _ method: String, _ path: String, headers: [String: String] = [:], body: Data? = nil) throws -> (Int, [String: String], Data) {
        let c = try RawHTTP(port: port)
        try c.send(method, path, headers: headers, body: body)
        let (code, h) = try c.readHead()
        return (code, h, try c.readBody(h))
    }
}

func json(_ d: Data) throws -> [String: Any] {
    guard let o = try JSONSerialization.jsonObject(with: d) as? [String: Any] else { throw HTTPFailure(description: "not a JSON object: \(String(decoding: d, as: UTF8.self))") }
    return o
}

/// A running server on an ephemeral loopback port; `stop()` shuts it down (task cancellation → graceful stop).
final class TestServer: @unchecked Sendable {
    let server: OpenAIServer
    var port = 0
    var task: Task<Void, Error>?
    init(engine: GenerationEngine, configure: (inout ServerConfiguration) -> Void = { _ in }) async throws {
        var cfg = ServerConfiguration()
        cfg.port = 0
        configure(&cfg)
        server = OpenAIServer(engine: engine, configuration: cfg)
        let (ports, cont) = AsyncStream<Int>.makeStream()
        let s = server
        task = Task { try await s.run(gracefulShutdownSignals: []) { p in cont.yield(p) } }
        for await p in ports { port = p; break }
        XCTAssertGreaterThan(port, 0)
    }
    func stop() async {
        task?.cancel()
        _ = try? await task?.value
    }
    /// SIGTERM's path: graceful shutdown, then wait for `run` to return.
    func stopGracefully() async throws {
        await server.shutdownGracefully()
        try await task?.value
    }
}
