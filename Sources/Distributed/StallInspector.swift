// The stall inspector: no collective wait of a training run is unbounded. Each rank runs a watchdog thread that knows
// where its rank is (which collective it waits in, after which step, since when); the ranks exchange that position in
// small heartbeats on a duplicated communicator, so rank 0 can name the ranks that have not reached a collective
// without itself entering one. Horovod's stall inspector (warning after 60 s naming the ranks) is the model.
import CMPI
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Watches the collective waits of one rank of an MPI job and brings the job down when one lasts too long.
///
/// Every collective of `MPICommunicator` (and `GradientReducer.finish()`) is a *wait*: entering one increments a
/// sequence number that is the same on every rank for the same collective (MPI requires every rank to call collectives
/// in the same order). A watchdog thread per rank sends this rank's position (sequence number, waiting or not, steps
/// done, what it waits in) to rank 0 at least every `heartbeatInterval` seconds with `MPI_Isend` on a duplicated
/// communicator; rank 0 sends its own to every rank. Only the watchdog thread makes these MPI calls (MPI must grant
/// `MPI_THREAD_MULTIPLE`; otherwise the inspector only times this rank's own waits and cannot name the others).
///
/// When this rank has waited `warning` seconds in one collective, rank 0 logs the ranks that have not reached it (their
/// sequence number is behind, or nothing was heard from them for `silenceSeconds`), with their hosts and where they
/// were last heard, and where the others wait; it repeats every `warning` seconds. After `timeout` seconds (0 = never)
/// rank 0 prints that message and calls `MPI_Abort` with `exitCode`; every other rank does the same `grace` seconds
/// later, so that rank 0's message (which names the missing ranks) comes first, and a stopped rank 0 is still noticed.
///
/// Progress reported with `noteProgress()` (rank 0 building the token cache, another rank building its own copy)
/// restarts every waiting rank's clock: the cache barrier's allowance is `timeout` seconds *without build progress*,
/// so a long build never trips it, but a builder that stops does.
public final class StallInspector {
    /// The exit code of a job brought down by the stall timeout (`MPI_Abort`'s error code, which mpirun returns).
    public static let exitCode: Int32 = 76

    public struct Settings: Sendable {
        /// Seconds in one collective before a warning (repeated every `warning` seconds).
        public var warning: Double
        /// Seconds in one collective before the job is aborted; 0 = never.
        public var timeout: Double
        /// Seconds between watchdog polls.
        public var pollInterval: Double = 0.25
        /// Seconds between heartbeats (one is also sent whenever the position changes).
        public var heartbeatInterval: Double = 1
        public init(warning: Double, timeout: Double) { self.warning = warning; self.timeout = timeout }
        /// A rank not heard from for this long is reported as silent (stopped, hung or dead).
        var silenceSeconds: Double { max(5, 4 * heartbeatInterval) }
        /// Extra seconds a rank other than 0 waits before aborting on its own.
        var grace: Double { max(5, 0.1 * timeout) }
    }

    /// Where a rank is.
    struct Position: Equatable {
        /// Collectives entered so far (the current one included while `waiting`).
        var seq: Int64 = 0
        var waiting = false
        /// Optimizer steps done; -1 before the step loop.
        var stepsDone: Int64 = -1
        /// Progress reports (rank 0's heartbeats carry the whole job's sum).
        var progress: Int64 = 0
        /// The collective being waited in, or the last one.
        var label = "start-up"

        static let labelBytes = 96
        static let byteCount = 4 * 8 + labelBytes

        func encode(into p: UnsafeMutableRawPointer) {
            let ints = p.assumingMemoryBound(to: Int64.self)
            ints[0] = seq; ints[1] = waiting ? 1 : 0; ints[2] = stepsDone; ints[3] = progress
            let bytes = Array(label.utf8.prefix(Position.labelBytes))
            let dst = (p + 32).assumingMemoryBound(to: UInt8.self)
            for i in 0 ..< Position.labelBytes { dst[i] = i < bytes.count ? bytes[i] : 0 }
        }

        static func decode(_ p: UnsafeRawPointer) -> Position {
            let ints = p.assumingMemoryBound(to: Int64.self)
            let src = UnsafeBufferPointer(start: (p + 32).assumingMemoryBound(to: UInt8.self), count: labelBytes)
            let n = src.firstIndex(of: 0) ?? labelBytes
            return Position(seq: ints[0], waiting: ints[1] != 0, stepsDone: ints[2], progress: ints[3],
                            label: String(decoding: src[0 ..< n], as: UTF8.self))
        }

        /// "waiting in the all-reduce of 2 doubles (collective #31) after step 3".
        var describe: String {
            let when = stepsDone < 0 ? "before the first step" : "after step \(stepsDone)"
            return waiting ? "waiting in \(label) (collective #\(seq)) \(when)"
                           : "working \(when) (last collective #\(seq): \(label))"
        }
    }

    public let rank: Int
    public let size: Int
    public let settings: Settings
    /// Host of every rank (`MPI_Get_processor_name`).
    public let hosts: [String]
    private let communicator: MPICommunicator
    private let heartbeatComm: MPI_Comm?
    /// Prints a warning (rank 0's logger); called on the watchdog thread.
    private let warn: (String) -> Void

    private let lock = NSLock()
    private var mine = Position()
    private var waitStart = Date()
    private var lastProgressChange = Date()
    private var stopping = false
    private let exited = DispatchSemaphore(value: 0)

    // Watchdog-thread state.
    private var peers: [Position]
    private var lastHeard: [Date]
    private var warnings = 0
    private var warnedSeq: Int64 = -1

    /// Starts the inspector of `communicator`'s rank. Collective (it duplicates the communicator and gathers the host
    /// names): every rank must call it at the same point. `warn` receives the warnings (on the watchdog thread).
    /// - Throws: `DistributedError.mpi` if duplicating the communicator or gathering the names fails.
    public init(communicator: MPICommunicator, settings: Settings, warn: @escaping (String) -> Void) throws {
        self.communicator = communicator
        rank = communicator.rank; size = communicator.size
        self.settings = settings
        self.warn = warn
        // Host names of all ranks, fixed width.
        let w = Int(cmpi_max_processor_name()) + 1
        var mineName = [CChar](repeating: 0, count: w)
        for (i, c) in communicator.processorName.utf8CString.prefix(w - 1).enumerated() { mineName[i] = c }
        var all = [CChar](repeating: 0, count: w * communicator.size)
        try communicator.check(MPI_Allgather(&mineName, Int32(w), cmpi_byte(), &all, Int32(w), cmpi_byte(),
                                             communicator.comm), "MPI_Allgather(processor names)")
        hosts = (0 ..< communicator.size).map { r in
            all[(r * w) ..< ((r + 1) * w)].withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        }
        if communicator.providedThreadLevel >= cmpi_thread_multiple() {
            var dup: MPI_Comm? = cmpi_comm_null()
            try communicator.check(MPI_Comm_dup(communicator.comm, &dup), "MPI_Comm_dup")
            heartbeatComm = dup
        } else {
            heartbeatComm = nil
        }
        peers = [Position](repeating: Position(), count: communicator.size)
        lastHeard = [Date](repeating: Date(), count: communicator.size)
        let thread = Thread { [unowned(unsafe) self] in self.watch() }
        thread.name = "swiftmind-stall-inspector"
        thread.start()
    }

    // MARK: called by the rank's own threads

    /// This rank enters a collective wait described by `label` ("all-reduce of 2 doubles"), or by the name given
    /// with `nameNextWait`.
    public func enter(_ label: String) {
        lock.lock()
        mine.seq += 1; mine.waiting = true; mine.label = nextName ?? label; nextName = nil; waitStart = Date()
        lock.unlock()
    }

    /// Names the next collective this rank enters ("the step-boundary all-reduce of the preemption flag") in place of
    /// the communicator's generic description.
    public func nameNextWait(_ name: String) {
        lock.lock(); nextName = name; lock.unlock()
    }
    private var nextName: String?

    /// Runs on the watchdog thread just before the stall timeout aborts the job, with the stall message (the training
    /// timeline writes what this rank recorded). Must not call collectives.
    public func setBeforeAbort(_ body: ((String) -> Void)?) {
        lock.lock(); beforeAbort = body; lock.unlock()
    }
    private var beforeAbort: ((String) -> Void)?

    /// This rank left the collective it waited in.
    public func leave() {
        lock.lock(); mine.waiting = false; lock.unlock()
    }

    /// `stepsDone` optimizer steps are done (called at the step boundary).
    public func setStepsDone(_ stepsDone: Int) {
        lock.lock(); mine.stepsDone = Int64(stepsDone); lock.unlock()
    }

    /// Work that others may be waiting for advanced (a token-cache chunk was encoded): restarts the stall clocks.
    public func noteProgress() {
        lock.lock(); mine.progress += 1; lastProgressChange = Date(); lock.unlock()
    }

    /// Stops the watchdog thread (pending heartbeats are cancelled). Call before `MPI_Finalize`; idempotent.
    public func stop() {
        lock.lock()
        let first = !stopping
        stopping = true
        lock.unlock()
        if first { exited.wait() }
    }

    // MARK: the watchdog thread

    private func snapshot() -> (Position, Date, Date, Bool) {
        lock.lock(); defer { lock.unlock() }
        return (mine, waitStart, lastProgressChange, stopping)
    }

    private func watch() {
        var hb = heartbeatComm.map { Heartbeats(comm: $0, rank: rank, size: size) }
        var lastSent = Date.distantPast
        var lastSentPosition: Position?
        var lastTick = Date()
        while true {
            usleep(useconds_t(settings.pollInterval * 1e6))
            let tick = Date()
            let gap = tick.timeIntervalSince(lastTick) - settings.pollInterval
            lastTick = tick
            if gap > max(2, 10 * settings.pollInterval) {
                // This process itself was stopped (SIGSTOP, then SIGCONT, e.g. by MPI_Abort's cleanup) or starved: its
                // clocks ran while it could neither wait nor listen. The pause is not the others' doing, so their
                // silence and this rank's wait are timed from now on, and nothing is reported for this tick.
                lock.lock(); waitStart = waitStart.addingTimeInterval(gap); lock.unlock()
                for r in lastHeard.indices { lastHeard[r] = tick }
                continue
            }
            let (me, since, lastProgress, stop) = snapshot()
            if stop { break }
            var progressAt = lastProgress
            if var h = hb {
                // Receive whatever arrived; a change of anyone's progress restarts the clocks.
                let received = h.receive()
                let now = Date()
                var progressed = false
                for (r, p) in received {
                    if p.progress != peers[r].progress { progressed = true }
                    peers[r] = p; lastHeard[r] = now
                }
                if progressed {
                    lock.lock(); lastProgressChange = now; lock.unlock()
                    progressAt = now
                }
                // Rank 0 relays the job's progress (its own plus everyone's), so the others see any builder's.
                var out = me
                if rank == 0 { out.progress = me.progress + peers.enumerated().filter { $0.offset != 0 }.reduce(0) { $0 + $1.element.progress } }
                if out != lastSentPosition || now.timeIntervalSince(lastSent) >= settings.heartbeatInterval {
                    h.send(out)
                    lastSent = now; lastSentPosition = out
                }
                hb = h
            }
            check(me, waitStart: since, progressAt: progressAt)
        }
        hb?.shutDown()
        exited.signal()
    }

    private func check(_ me: Position, waitStart: Date, progressAt: Date) {
        guard me.waiting else { return }
        if warnedSeq != me.seq { warnedSeq = me.seq; warnings = 0 }
        let waited = Date().timeIntervalSince(max(waitStart, progressAt))
        let timeout = settings.timeout
        if timeout > 0 && waited >= timeout + (rank == 0 ? 0 : settings.grace) {
            let msg = report(me, waited: waited)
            lock.lock(); let last = beforeAbort; lock.unlock()
            last?("stall: \(msg)")
            communicator.abort(message: "stall: \(msg); aborting after --stall-timeout \(Self.seconds(timeout)) (exit code \(Self.exitCode))",
                               code: Self.exitCode)
        }
        let warning = timeout > 0 ? min(settings.warning, timeout) : settings.warning
        if waited >= warning * Double(warnings + 1) {
            warnings += 1
            // Rank 0 names the missing ranks; the others speak only when rank 0 itself is missing or unheard.
            if rank == 0 || heartbeatComm == nil || missing(me).contains(0) {
                warn("stall: \(report(me, waited: waited))\(timeout > 0 ? "; the job is aborted after --stall-timeout \(Self.seconds(timeout))" : "")")
            }
        }
    }

    /// Ranks that have not reached this rank's collective, or have not been heard from for `silenceSeconds`
    /// (rank 0 knows every rank; the others only rank 0).
    private func missing(_ me: Position) -> [Int] {
        guard heartbeatComm != nil else { return [] }
        let now = Date()
        let known = rank == 0 ? Array(1 ..< size) : [0]
        return known.filter { peers[$0].seq < me.seq || now.timeIntervalSince(lastHeard[$0]) >= settings.silenceSeconds }
    }

    /// "rank 0 (host-a) has waited 61 s in … ; ranks not there: rank 1 (host-b): last heard 58 s ago, working after step 3 (…);
    /// waiting there: ranks 0, 2".
    func report(_ me: Position, waited: Double) -> String {
        var s = "rank \(rank) (\(hosts[rank])) has waited \(Self.seconds(waited)) \(me.describe.replacingOccurrences(of: "waiting ", with: ""))"
        guard heartbeatComm != nil else {
            return s + " (MPI did not grant MPI_THREAD_MULTIPLE, so the other ranks' positions are unknown)"
        }
        let now = Date()
        let gone = missing(me)
        if gone.isEmpty {
            s += "; every rank \(rank == 0 ? "" : "(as far as rank 0 is known) ")has reached it, but it has not completed (a network problem?)"
        } else {
            s += "; \(gone.count == 1 ? "rank" : "ranks") \(gone.map(String.init).joined(separator: ", ")) not there: "
            s += gone.map { r in
                "rank \(r) (\(hosts[r])) last heard \(Self.seconds(now.timeIntervalSince(lastHeard[r]))) ago, \(peers[r].describe)"
            }.joined(separator: "; ")
        }
        if rank == 0 {
            let there = [0] + (1 ..< size).filter { !gone.contains($0) }
            s += "; waiting there: \(there.count == 1 ? "rank" : "ranks") \(there.map(String.init).joined(separator: ", "))"
        }
        return s
    }

    static func seconds(_ s: Double) -> String { s < 10 ? String(format: "%.1f s", s) : String(format: "%.0f s", s) }
}

/// The heartbeat messages of one rank (watchdog thread only): rank 0 receives from and sends to every rank, the others
/// to and from rank 0. One receive is kept posted per peer; a send is skipped while the previous one to that peer is
/// still pending, so a stopped peer never makes messages pile up.
private struct Heartbeats {
    let comm: MPI_Comm
    let peers: [Int]
    var recvBuffers: [UnsafeMutableRawPointer]
    var sendBuffers: [UnsafeMutableRawPointer]
    var recvRequests: [MPI_Request?]
    var sendRequests: [MPI_Request?]
    static let tag: Int32 = 7001

    init(comm: MPI_Comm, rank: Int, size: Int) {
        self.comm = comm
        peers = rank == 0 ? Array(1 ..< size) : [0]
        let n = StallInspector.Position.byteCount
        recvBuffers = peers.map { _ in UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 8) }
        sendBuffers = peers.map { _ in UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 8) }
        recvRequests = peers.map { _ in cmpi_request_null() }
        sendRequests = peers.map { _ in cmpi_request_null() }
        for i in peers.indices { post(i) }
    }

    private mutating func post(_ i: Int) {
        if MPI_Irecv(recvBuffers[i], Int32(StallInspector.Position.byteCount), cmpi_byte(), Int32(peers[i]), Heartbeats.tag,
                     comm, &recvRequests[i]) != cmpi_success() { recvRequests[i] = cmpi_request_null() }
    }

    /// The positions that arrived since the last call (the newest per peer).
    mutating func receive() -> [(Int, StallInspector.Position)] {
        var out: [(Int, StallInspector.Position)] = []
        for i in peers.indices {
            var newest: StallInspector.Position?
            while recvRequests[i] != cmpi_request_null() {
                var flag: Int32 = 0
                guard MPI_Test(&recvRequests[i], &flag, cmpi_status_ignore()) == cmpi_success(), flag != 0 else { break }
                newest = StallInspector.Position.decode(recvBuffers[i])
                post(i)
            }
            if let p = newest { out.append((peers[i], p)) }
        }
        return out
    }

    mutating func send(_ p: StallInspector.Position) {
        for i in peers.indices {
            if sendRequests[i] != cmpi_request_null() {
                var flag: Int32 = 0
                guard MPI_Test(&sendRequests[i], &flag, cmpi_status_ignore()) == cmpi_success(), flag != 0 else { continue }
            }
            p.encode(into: sendBuffers[i])
            if MPI_Isend(sendBuffers[i], Int32(StallInspector.Position.byteCount), cmpi_byte(), Int32(peers[i]), Heartbeats.tag,
                         comm, &sendRequests[i]) != cmpi_success() { sendRequests[i] = cmpi_request_null() }
        }
    }

    /// Cancels the posted receives, gives pending sends a second to complete and releases what is left.
    mutating func shutDown() {
        for i in peers.indices where recvRequests[i] != cmpi_request_null() {
            MPI_Cancel(&recvRequests[i])
            MPI_Wait(&recvRequests[i], cmpi_status_ignore())
        }
        let deadline = Date().addingTimeInterval(1)
        for i in peers.indices {
            while sendRequests[i] != cmpi_request_null() {
                var flag: Int32 = 0
                if MPI_Test(&sendRequests[i], &flag, cmpi_status_ignore()) != cmpi_success() || flag != 0 { break }
                if Date() > deadline { MPI_Request_free(&sendRequests[i]); break }
                usleep(1000)
            }
        }
        // A freed send still reads its buffer until it completes: those buffers are left allocated.
        for b in recvBuffers { b.deallocate() }
    }
}

extension Communicator {
    /// The stall inspector watching this communicator's collectives (MPI only; nil when none runs).
    public var stallInspector: StallInspector? { (self as? MPICommunicator)?.stallInspector }
}
