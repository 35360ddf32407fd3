// Connection-level protection for the HTTP/1.1 server, as NIO channel handlers around Hummingbird's HTTP1Channel:
// header, body and keep-alive idle timeouts, a connection limit (503), closing after a response that says
// `Connection: close` (the 413), and the notice that a client went away (its socket's read side ended) so its running
// generation can be cancelled. Nothing here reads or consumes Hummingbird's request stream, so keep-alive and
// pipelining are untouched.
import Foundation
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes

/// Whether the client of one connection is still there. The connection's guard marks it gone when the socket's read
/// side ends (the client closed or shut down its sending side: a client waiting for an answer keeps it open) or
/// the channel closes; a request registers what to do then (cancel its generation). Thread-safe.
final class ClientPresence: @unchecked Sendable {
    private let lock = NSLock()
    private var gone = false
    private var nextToken = 0
    private var handlers: [Int: @Sendable () -> Void] = [:]

    /// Runs `handler` once when the client goes away — at once when it already has (then returns nil). The token
    /// unregisters it (`remove`).
    func onGone(_ handler: @escaping @Sendable () -> Void) -> Int? {
        lock.lock()
        if gone { lock.unlock(); handler(); return nil }
        nextToken += 1
        handlers[nextToken] = handler
        lock.unlock()
        return nextToken
    }

    func remove(_ token: Int?) {
        guard let token else { return }
        lock.lock(); handlers[token] = nil; lock.unlock()
    }

    var isGone: Bool { lock.lock(); defer { lock.unlock() }; return gone }

    func markGone() {
        lock.lock()
        if gone { lock.unlock(); return }
        gone = true
        let hs = Array(handlers.values)
        handlers = [:]
        lock.unlock()
        for h in hs { h() }
    }
}

/// The server's open connections (thread-safe; each connection lives on one event loop, the table is shared).
/// At the limit a new connection displaces one with no request in progress: first the one that has been sending an
/// unfinished request head the longest (a slow-header client), else the longest-idle keep-alive connection, else the
/// oldest connection that has sent nothing yet. When every connection is busy with a request, the new one is refused
/// (503).
///
/// The candidates for displacement are kept in a binary min-heap on (rank, since) with lazy deletion, so admitting a
/// connection at the limit costs O(log n) amortised instead of a scan of every open connection: under a flood of
/// new connections the scan was a tenth of the server's time.
final class ConnectionTable: @unchecked Sendable {
    /// Displacement order among waiting connections (lower goes first).
    enum WaitRank: Int, Comparable {
        case partialHead = 0, idleAfterResponse = 1, fresh = 2
        static func < (a: WaitRank, b: WaitRank) -> Bool { a.rawValue < b.rawValue }
    }
    struct Entry {
        let presence: ClientPresence
        /// Since when the connection has had no request in progress, and in what state; nil while one is.
        var waiting: (since: NIODeadline, rank: WaitRank)?
        var evicting = false
        /// Closes the connection on its own event loop if it is still waiting (else keeps it).
        let evict: @Sendable () -> Void
        /// The heap item that stands for the current `waiting` (0: none).
        var candidate: UInt64 = 0
    }
    /// A heap item; current only while its connection is open, not being displaced, and its `candidate` is `seq`.
    private struct Candidate {
        let rank: WaitRank, since: NIODeadline, seq: UInt64, id: ObjectIdentifier
        func goesBefore(_ o: Candidate) -> Bool {
            if rank != o.rank { return rank < o.rank }
            if since != o.since { return since < o.since }
            return seq < o.seq
        }
    }
    let limit: Int
    private let lock = NSLock()
    private var entries: [ObjectIdentifier: Entry] = [:]
    private var heap: [Candidate] = []
    private var lastSeq: UInt64 = 0
    private var evicting = 0
    private var _refused = 0, _evicted = 0

    init(limit: Int) { self.limit = max(1, limit) }

    /// Open connections (displaced ones still closing included), connections refused with 503, connections displaced.
    var stats: (open: Int, refused: Int, evicted: Int) {
        lock.lock(); defer { lock.unlock() }
        return (entries.count, _refused, _evicted)
    }

    /// Admits connection `id` (waiting since `now`), displacing the longest-waiting idle one at the limit.
    /// false = refused: every open connection has a request in progress.
    func admit(_ id: ObjectIdentifier, presence: ClientPresence, now: NIODeadline, evict: @escaping @Sendable () -> Void) -> Bool {
        var victim: (@Sendable () -> Void)?
        lock.lock()
        if entries.count - evicting >= limit {
            guard let key = popFirstCandidate() else { _refused += 1; lock.unlock(); return false }
            entries[key]!.evicting = true
            evicting += 1; _evicted += 1
            victim = entries[key]!.evict
        }
        entries[id] = Entry(presence: presence, waiting: (now, .fresh), evict: evict)
        pushCandidate(id)
        lock.unlock()
        victim?()
        return true
    }

    /// A displaced connection turned out busy (a request arrived meanwhile): it stays.
    func keep(_ id: ObjectIdentifier) {
        lock.lock()
        if entries[id]?.evicting == true {
            entries[id]!.evicting = false; evicting -= 1
            pushCandidate(id)
        }
        lock.unlock()
    }

    func setWaiting(_ id: ObjectIdentifier, _ waiting: (since: NIODeadline, rank: WaitRank)?) {
        lock.lock()
        if entries[id] != nil {
            entries[id]!.waiting = waiting
            entries[id]!.candidate = 0
            if !entries[id]!.evicting { pushCandidate(id) }
        }
        lock.unlock()
    }

    func remove(_ id: ObjectIdentifier) {
        lock.lock()
        if let e = entries.removeValue(forKey: id), e.evicting { evicting -= 1 }
        lock.unlock()
    }

    func presence(of channel: any Channel) -> ClientPresence? {
        lock.lock(); defer { lock.unlock() }
        return entries[ObjectIdentifier(channel)]?.presence
    }

    // MARK: heap (callers hold the lock)

    private func isCurrent(_ c: Candidate) -> Bool {
        guard let e = entries[c.id] else { return false }
        return !e.evicting && e.candidate == c.seq
    }

    /// Queues entry `id`'s current waiting state as a candidate (nothing while it has a request in progress).
    private func pushCandidate(_ id: ObjectIdentifier) {
        guard let w = entries[id]?.waiting else { return }
        lastSeq += 1
        entries[id]!.candidate = lastSeq
        heap.append(Candidate(rank: w.rank, since: w.since, seq: lastSeq, id: id))
        siftUp(heap.count - 1)
        // Stale items go when they reach the top; rebuild when they outnumber the live ones.
        if heap.count > 2 * entries.count + 64 {
            heap.removeAll { !isCurrent($0) }
            for i in stride(from: heap.count / 2 - 1, through: 0, by: -1) { siftDown(i) }
        }
    }

    /// Removes and returns the first current candidate, dropping stale items on the way.
    private func popFirstCandidate() -> ObjectIdentifier? {
        while let top = heap.first {
            let last = heap.removeLast()
            if !heap.isEmpty { heap[0] = last; siftDown(0) }
            if isCurrent(top) { entries[top.id]!.candidate = 0; return top.id }
        }
        return nil
    }

    private func siftUp(_ start: Int) {
        var i = start
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i].goesBefore(heap[parent]) else { return }
            heap.swapAt(i, parent); i = parent
        }
    }

    private func siftDown(_ start: Int) {
        var i = start
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < heap.count && heap[l].goesBefore(heap[m]) { m = l }
            if r < heap.count && heap[r].goesBefore(heap[m]) { m = r }
            if m == i { return }
            heap.swapAt(i, m); i = m
        }
    }
}

/// Timeouts of the connection guard, in seconds (see `ServerConfiguration`).
struct ConnectionTimeouts: Sendable {
    var header: Double, body: Double, idle: Double
    /// After a response that closes the connection (413, 503, 408), or a close while a request is partly received:
    /// how long input is drained before the socket is closed outright, so the client can read the response instead
    /// of getting a reset.
    var linger: Double = 2
    /// The same for a close at a request boundary (only bytes already in flight can arrive).
    var shortLinger: Double = 0.25
}

/// The state of one connection, shared by its two handlers and confined to its event loop.
final class ConnectionState {
    enum Wait { case header, body, idle }

    let id: ObjectIdentifier
    let table: ConnectionTable
    let timeouts: ConnectionTimeouts
    let logger: Logger
    let presence = ClientPresence()
    /// The context of the raw-bytes handler at the front of the pipeline (writes from it go straight to the socket).
    var context: ChannelHandlerContext?
    private var started = false
    private(set) var admitted = false
    /// A closing response was sent: input is discarded until the client closes or `linger` passes.
    private(set) var closing = false
    /// The client's sending side has ended (EOF).
    private var inputEnded = false
    /// Request heads read minus responses finished.
    private var requestsInProgress = 0
    /// A request head was read and its end not yet.
    private var readingBody = false
    /// When the first byte of a request head not yet complete arrived (nil: none pending).
    private var headStartedAt: NIODeadline?
    private var lastHeadAt = NIODeadline.now()
    /// The connection's start or the end of its last response.
    private var idleSince = NIODeadline.now()
    var closeAfterResponse = false
    /// The earliest wake-up scheduled. Timers are never cancelled (NIO's cancel searches its whole task heap, which
    /// would make every connection's state change cost O(open connections)); a timer that fires early or late
    /// re-evaluates and, if needed, schedules the next one.
    private var timerAt: NIODeadline?
    private var reportedWaiting: (since: NIODeadline, rank: ConnectionTable.WaitRank)?
    private var servedResponse = false

    init(channel: any Channel, table: ConnectionTable, timeouts: ConnectionTimeouts, logger: Logger) {
        id = ObjectIdentifier(channel); self.table = table; self.timeouts = timeouts; self.logger = logger
    }

    static func amount(_ seconds: Double) -> TimeAmount { .nanoseconds(Int64((seconds * 1e9).rounded())) }

    /// Admission on channel activation: admitted (timers start), or answered 503 and closed.
    func start() {
        guard !started, let ctx = context else { return }
        started = true
        let now = NIODeadline.now()
        idleSince = now
        let loop = ctx.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        let evict: @Sendable () -> Void = { loop.execute { bound.value.evictIfWaiting() } }
        if table.admit(id, presence: presence, now: now, evict: evict) {
            admitted = true
            update()
        } else {
            logger.warning("connection refused with 503: \(table.limit) connections open, all with a request in progress")
            respondAndClose(status: "503 Service Unavailable", extraHeaders: "Retry-After: 1\r\n",
                            message: "Too many open connections (limit \(table.limit)), every one with a request in progress. Retry later.",
                            type: "server_error", code: "server_busy")
        }
    }

    /// Displaced by a new connection at the limit: closes if still without a request in progress.
    private func evictIfWaiting() {
        guard let ctx = context, !closing else { return }
        if requestsInProgress == 0 && !readingBody {
            logger.debug("connection displaced by a new one at the limit of \(table.limit) (it had no request in progress)")
            closing = true
            ctx.close(promise: nil)
        } else {
            table.keep(id)
        }
    }

    // MARK: events

    func bytesArrived() {
        if !readingBody && headStartedAt == nil { headStartedAt = .now() }
    }

    func headArrived() {
        requestsInProgress += 1
        readingBody = true
        headStartedAt = nil
        lastHeadAt = .now()
        update()
    }

    func bodyEnded() {
        readingBody = false
        update()
    }

    func responseEnded() {
        requestsInProgress = max(0, requestsInProgress - 1)
        idleSince = .now()
        servedResponse = true
        update()
    }

    /// The client's sending side ended (it closed, or half-closed): it is treated as gone.
    func inputClosed() {
        inputEnded = true
        presence.markGone()
        if closing { context?.close(promise: nil) }
    }

    func channelClosed() {
        presence.markGone()
        if admitted { table.remove(id) }
        context = nil
    }

    /// Lingering close, after what was written and flushed: shut the sending side (the client reads everything, then
    /// EOF), discard input, and close outright when the client closes or after `linger` seconds. Closing with unread
    /// input would make the kernel answer with a reset, which can destroy a response still in flight (a 413, a 408,
    /// Hummingbird's 400). `promise`, from a close asked further down the pipeline, completes with the final close.
    /// `short`: the close comes at a request boundary (no request partly received), so only in-flight bytes matter.
    func lingeringClose(promise: EventLoopPromise<Void>? = nil, short: Bool = false) {
        guard let ctx = context else { promise?.succeed(()); return }
        if let promise { ctx.channel.closeFuture.cascade(to: promise) }
        guard !closing else { return }
        closing = true
        if admitted { table.setWaiting(id, nil) }
        ctx.flush()
        // Shutting the output down waits for the flushed writes; only then may the socket close.
        let outputShut = ctx.eventLoop.makePromise(of: Void.self)
        ctx.close(mode: .output, promise: outputShut)
        if inputEnded {   // nothing more can arrive: close as soon as the response is out
            outputShut.futureResult.assumeIsolated().whenComplete { [weak self] _ in self?.context?.close(promise: nil) }
            return
        }
        ctx.read()
        let seconds = short && headStartedAt == nil && !readingBody ? timeouts.shortLinger : timeouts.linger
        ctx.eventLoop.assumeIsolated().scheduleTask(in: Self.amount(seconds)) { [weak self] in
            self?.context?.close(promise: nil)
        }
    }

    /// Writes a whole HTTP/1.1 response with an OpenAI-shaped error body straight to the socket, then closes.
    /// Only used when no request is being answered on this connection (refusal, header timeout).
    private func respondAndClose(status: String, extraHeaders: String = "", message: String, type: String, code: String) {
        guard let ctx = context else { return }
        let body = jsonData(OpenAIError(.badRequest, message, type: type, code: code).jsonBody)
        var buf = ctx.channel.allocator.buffer(capacity: 256 + body.count)
        buf.writeString("HTTP/1.1 \(status)\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\(extraHeaders)\r\n")
        buf.writeBytes(body)
        ctx.writeAndFlush(NIOAny(buf), promise: nil)
        lingeringClose()
    }

    // MARK: deadlines

    /// What the connection waits for now and until when: the body of its front request, the head of the next one
    /// (first byte seen), or any next request (idle keep-alive); nil while the server is answering.
    private func currentWait() -> (Wait, NIODeadline, waiting: (since: NIODeadline, rank: ConnectionTable.WaitRank)?)? {
        if readingBody && requestsInProgress <= 1 {
            return (.body, max(lastHeadAt, idleSince) + Self.amount(timeouts.body), nil)
        }
        guard requestsInProgress == 0 else { return nil }
        if let h = headStartedAt {
            let since = max(h, idleSince)
            return (.header, since + Self.amount(timeouts.header), (since, .partialHead))
        }
        return (.idle, idleSince + Self.amount(timeouts.idle), (idleSince, servedResponse ? .idleAfterResponse : .fresh))
    }

    func update() {
        guard admitted, !closing, let ctx = context else { return }
        let wait = currentWait()
        let waiting = wait?.waiting
        if waiting?.since != reportedWaiting?.since || waiting?.rank != reportedWaiting?.rank {
            table.setWaiting(id, waiting)
            reportedWaiting = waiting
        }
        guard let (_, deadline, _) = wait else { return }
        if let at = timerAt, at <= deadline { return }   // a wake-up comes first; it re-evaluates
        timerAt = deadline
        ctx.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in self?.timerFired(at: deadline) }
    }

    private func timerFired(at: NIODeadline) {
        if timerAt == at { timerAt = nil }
        guard let ctx = context, !closing, let (kind, deadline, _) = currentWait() else { return }
        if NIODeadline.now() < deadline { update(); return }
        switch kind {
        case .header:
            logger.debug("closing a connection: its request head was not complete \(timeouts.header) s after its first byte")
            respondAndClose(status: "408 Request Timeout", message: "The request head was not received within \(timeouts.header) seconds.",
                            type: "invalid_request_error", code: "request_timeout")
        case .body:
            logger.info("closing a connection: its request body was not complete \(timeouts.body) s after the request head")
            closing = true
            ctx.close(promise: nil)
        case .idle:
            logger.debug("closing a keep-alive connection idle for \(timeouts.idle) s")
            closing = true
            ctx.close(promise: nil)
        }
    }
}

/// Front of the pipeline (raw bytes): admission, header/idle timing, the client's end of input; discards input
/// once the connection is closing; turns a full close asked by Hummingbird into a lingering close.
final class ConnectionGuardHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData
    let state: ConnectionState
    init(state: ConnectionState) { self.state = state }

    func handlerAdded(context: ChannelHandlerContext) {
        state.context = context
        if context.channel.isActive { state.start() }
    }

    func channelActive(context: ChannelHandlerContext) {
        state.start()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard state.admitted, !state.closing else { return }
        state.bytesArrived()
        context.fireChannelRead(data)
        state.update()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // While closing, input is drained here whatever the handlers behind do with their read demand.
        if state.closing || !state.admitted { context.read() } else { context.fireChannelReadComplete() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed { state.inputClosed() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        state.channelClosed()
        context.fireChannelInactive()
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .all && context.channel.isActive { state.lingeringClose(promise: promise, short: true) }
        else { context.close(mode: mode, promise: promise) }
    }
}

/// After HTTP decoding: request heads/ends and response ends drive the state; a response carrying
/// `Connection: close` closes the connection once written.
final class RequestTrackingHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart
    let state: ConnectionState
    init(state: ConnectionState) { self.state = state }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: state.headArrived()
        case .body: break
        case .end: state.bodyEnded()
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let response):
            if let c = response.headerFields[.connection], c.lowercased().contains("close") { state.closeAfterResponse = true }
            context.write(data, promise: promise)
        case .body:
            context.write(data, promise: promise)
        case .end:
            context.write(data, promise: promise)
            state.responseEnded()
            if state.closeAfterResponse {
                context.flush()
                state.lingeringClose()
            }
        }
    }
}

/// Hummingbird's HTTP/1.1 child channel with the guard's two handlers added for each connection.
struct GuardedHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value
    let responder: HTTPChannelHandler.Responder
    let table: ConnectionTable
    let timeouts: ConnectionTimeouts
    let logger: Logger

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        let state = ConnectionState(channel: channel, table: table, timeouts: timeouts, logger: self.logger)
        do {
            try channel.pipeline.syncOperations.addHandler(ConnectionGuardHandler(state: state), position: .first)
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        let tracker = RequestTrackingHandler(state: state)
        // Hummingbird places additional handlers after its HTTP/1 codec, before its own connection-state handler.
        return HTTP1Channel(responder: responder, configuration: .init(additionalChannelHandlers: [tracker]))
            .setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        await HTTP1Channel(responder: responder).handle(value: value, logger: logger)
    }
}
