// The training dashboard's HTTP server (Hummingbird 2): the page at GET /, the runs at GET /api/runs, a run's rows at
// GET /api/metrics?run=I&since=N. Serves `trainer dashboard` and, in the background on rank 0, `--dashboard-port`.
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import UnixSignals

/// One followed run: its legend name (the out-dir's name), its out-dir and the tail of its `metrics.jsonl`.
public struct DashboardRun: Sendable {
    public let name: String
    public let outDir: String
    public let tail: MetricsTail

    /// Legend names of `outDirs`: each directory's last path component; where two runs share it, enough parent
    /// components to tell them apart (`a/out`, `b/out`).
    public static func names(for outDirs: [String]) -> [String] {
        let parts = outDirs.map { URL(fileURLWithPath: $0).standardizedFileURL.pathComponents.filter { $0 != "/" } }
        var depth = [Int](repeating: 1, count: parts.count)
        func name(_ i: Int) -> String { parts[i].suffix(depth[i]).joined(separator: "/") }
        for _ in 0..<64 {
            var grew = false
            let names = parts.indices.map(name)
            for i in parts.indices where names.filter({ $0 == names[i] }).count > 1 && depth[i] < parts[i].count {
                depth[i] += 1; grew = true
            }
            if !grew { break }
        }
        return parts.indices.map { parts[$0].isEmpty ? "/" : name($0) }
    }

    public static func runs(outDirs: [String]) -> [DashboardRun] {
        zip(outDirs, names(for: outDirs)).map { dir, name in
            DashboardRun(name: name, outDir: dir, tail: MetricsTail(path: (dir as NSString).appendingPathComponent("metrics.jsonl")))
        }
    }
}

/// Serves the live dashboard of `runs`.
///
/// Routes: `GET /` the page (`DashboardPage.live`); `GET /api/runs` → `{"runs": [{"id", "name", "path", "rows",
/// "generation", "error"?}]}` (each run's metrics.jsonl is read up to its last complete line first);
/// `GET /api/metrics?run=I&since=N[&limit=L]` → `{"run", "generation", "since", "rows": [row objects as written]}`
/// (at most `limit`, default and cap 5000, rows from row N on; 400 on a missing or bad parameter, 404 on an unknown
/// run); `GET /health`.
public final class DashboardServer: @unchecked Sendable {
    public let runs: [DashboardRun]
    public let host: String
    /// 0 = any free port (reported through `onRunning`).
    public let port: Int
    let logger: Logger
    private let page: ByteBuffer
    public static let maxRowsPerRequest = 5000

    public init(outDirs: [String], host: String = "127.0.0.1", port: Int, logger: Logger? = nil) {
        runs = DashboardRun.runs(outDirs: outDirs)
        self.host = host; self.port = port
        var l = logger ?? Logger(label: "swiftmind.dashboard")
        if logger == nil { l.logLevel = .info }
        self.logger = l
        page = ByteBuffer(string: DashboardPage.live)
    }

    /// The router with every route.
    public func makeRouter() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        let page = self.page, runs = self.runs, log = logger
        router.get("/") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                     body: ResponseBody(byteBuffer: page))
        }
        router.get("/health") { _, _ -> Response in jsonResponse(["status": "ok", "runs": runs.count]) }
        router.get("/api/runs") { _, _ -> Response in
            var list: [[String: Any]] = []
            for (i, r) in runs.enumerated() {
                var item: [String: Any] = ["id": i, "name": r.name, "path": r.outDir]
                do { try r.tail.refresh() } catch {
                    item["error"] = "\(error)"
                    log.warning("\(error)")
                }
                item["rows"] = r.tail.count; item["generation"] = r.tail.generation
                list.append(item)
            }
            return jsonResponse(["runs": list])
        }
        router.get("/api/metrics") { request, _ -> Response in
            let q = request.uri.queryParameters
            func int(_ name: String) throws -> Int? {
                guard let s = q[name[...]] else { return nil }
                guard let v = Int(String(s)), v >= 0 else { throw DashboardError(.badRequest, "\(name) must be an integer ≥ 0 (got '\(s)')") }
                return v
            }
            guard let i = try int("run") else { throw DashboardError(.badRequest, "run is required (an index from /api/runs)") }
            guard i < runs.count else { throw DashboardError(.notFound, "no run \(i) (there are \(runs.count))") }
            let since = try int("since") ?? 0
            let limit = min(try int("limit") ?? Self.maxRowsPerRequest, Self.maxRowsPerRequest)
            let got: (generation: Int, rows: [Data])
            // Read what was appended first, so a client polling only this endpoint also sees new rows.
            do { try runs[i].tail.refresh(); got = try runs[i].tail.rows(since: since, limit: limit) } catch {
                throw DashboardError(.internalServerError, "\(error)")
            }
            // The rows go out as the file holds them (each already checked to be one JSON object).
            var body = Data("{\"generation\":\(got.generation),\"run\":\(i),\"since\":\(since),\"rows\":[".utf8)
            for (k, row) in got.rows.enumerated() {
                if k > 0 { body.append(0x2C) }
                body.append(row)
            }
            body.append(Data("]}".utf8))
            return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                            body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
        }
        return router
    }

    /// The Hummingbird application; `onRunning(port)` is called once the socket is bound.
    public func makeApplication(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) -> some ApplicationProtocol {
        Application(router: makeRouter(),
                    configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: "SwiftMind-dashboard"),
                    onServerRunning: { ch in await onRunning(ch.localAddress?.port ?? -1) },
                    logger: logger)
    }

    private let groupLock = NSLock()
    private var runningGroup: ServiceGroup?

    /// Serves until one of `gracefulShutdownSignals`, `shutdownGracefully()`, or cancellation of the calling task.
    /// - Throws: the bind error (port in use, unknown host) and other server errors.
    public func run(gracefulShutdownSignals: [UnixSignal] = [.sigterm, .sigint],
                    onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        var gc = ServiceGroupConfiguration(services: [makeApplication(onRunning: onRunning)],
                                           gracefulShutdownSignals: gracefulShutdownSignals, logger: logger)
        // A browser's keep-alive connections must not hold the end of a training run.
        gc.maximumGracefulShutdownDuration = .seconds(2)
        let group = ServiceGroup(configuration: gc)
        groupLock.withLock { runningGroup = group }
        defer { groupLock.withLock { runningGroup = nil } }
        try await group.run()
    }

    /// Stops accepting and closes the connections; `run` returns.
    public func shutdownGracefully() async {
        let g = groupLock.withLock { runningGroup }
        await g?.triggerGracefulShutdown()
    }
}

/// An error of the dashboard's API, answered as `{"error": message}` with its status.
struct DashboardError: HTTPResponseError {
    let status: HTTPResponse.Status
    let message: String
    init(_ status: HTTPResponse.Status, _ message: String) { self.status = status; self.message = message }
    func response(from request: Request, context: some RequestContext) throws -> Response {
        jsonResponse(["error": message], status: status)
    }
}

/// The dashboard served from a background task while the caller goes on (a training run's `--dashboard-port`).
public final class BackgroundDashboard: @unchecked Sendable {
    public let server: DashboardServer
    /// The bound port.
    public let port: Int

    private final class Box: @unchecked Sendable {
        let lock = NSLock()
        var port: Int?
        var error: Error?
    }

    private init(server: DashboardServer, port: Int) { self.server = server; self.port = port }

    /// Starts serving `server` (no signal handling: the caller's own handlers stay in charge) and returns once the
    /// socket is bound.
    /// - Throws: `ServingError` when the server could not bind within `timeout` seconds, or its bind error.
    public static func start(_ server: DashboardServer, timeout: Double = 20) throws -> BackgroundDashboard {
        let box = Box(), bound = DispatchSemaphore(value: 0), done = DispatchSemaphore(value: 0)
        Task.detached {
            do {
                try await server.run(gracefulShutdownSignals: []) { port in
                    box.lock.withLock { box.port = port }
                    bound.signal()
                }
            } catch {
                box.lock.withLock { box.error = error }
            }
            bound.signal()
            done.signal()
        }
        if bound.wait(timeout: .now() + timeout) == .timedOut {
            throw ServingError("dashboard on \(server.host):\(server.port): not listening after \(Int(timeout)) s")
        }
        let (port, error) = box.lock.withLock { (box.port, box.error) }
        guard let port else {
            throw ServingError("dashboard on \(server.host):\(server.port): \(error.map { "\($0)" } ?? "stopped before listening")")
        }
        let d = BackgroundDashboard(server: server, port: port)
        d.done = done
        return d
    }

    private var done: DispatchSemaphore?

    /// Stops the server and waits (at most `timeout` seconds) until it has closed.
    public func stop(timeout: Double = 5) {
        let s = server
        Task.detached { await s.shutdownGracefully() }
        _ = done?.wait(timeout: .now() + timeout)
    }
}
