// `--timeline FILE`: a per-rank record of where each step's time goes, written by rank 0 as one Chrome trace (the
// JSON object form of the Trace Event Format, which Perfetto UI and chrome://tracing open). Each rank records spans
// into a buffer allocated once; at the end (or at a preemption stop) rank 0 gathers every rank's events and writes
// the merged file under a temporary name, then renames it.
import Foundation
import Model
import Tokenizers
import SwiftMindDistributed
#if canImport(Glibc)
import Glibc
#endif

/// What a recorded span is (its name in the trace comes from `TimelineRecorder.name`).
enum TimelineKind: UInt8 {
    /// Tokenizer, data and models loaded (the token cache built or awaited) before the first step.
    case prepare
    /// One optimizer step (a = step number, 1-based); the compute spans below nest inside it.
    case step
    /// The step's micro-batches read from the token cache.
    case data
    case forward
    /// a = layer.
    case forwardLayer
    case backward
    case backwardHead
    /// a = layer.
    case backwardLayer
    case backwardEmbedding
    /// The main thread waiting in `GradientReducer.finish()`: the communication backward did not hide.
    case allReduceWait
    /// Gradient clipping and the AdamW update.
    case optimizer
    /// a = step of the checkpoint, b = 1 for OUT/final.
    case checkpoint
    /// One bucket's all-reduce from launch to completion (a = bucket, b = bytes), on the communication track.
    case bucketAllReduce
}

/// One recorded span: 40 bytes of plain memory.
struct TimelineEvent {
    var kind: TimelineKind
    var startNs: UInt64
    var endNs: UInt64
    var a: Int64
    var b: Int64
}

/// Records this rank's timeline (see the file comment). `record` is called from the thread running the step (or, for
/// model spans, the thread running batch part 0 while the main thread waits for it); stall messages may come from the
/// stall inspector's thread and are kept under a lock.
final class TimelineRecorder {
    /// The merged trace's path (`--timeline`).
    let path: String
    let rank: Int
    let world: Int
    /// Events kept; beyond it events are counted in `dropped` (in the trace's `otherData`).
    let capacity: Int
    private let events: UnsafeMutablePointer<TimelineEvent>
    private(set) var count = 0
    private(set) var dropped = 0
    /// This rank's clock (`DispatchTime` uptime ns) at the moment all ranks left the synchronising barrier: trace
    /// time 0 on every rank.
    private(set) var originNs: UInt64 = DispatchTime.now().uptimeNanoseconds
    private let stallLock = NSLock()
    private var stalls: [(ns: UInt64, message: String)] = []
    /// The trace tracks (Chrome trace thread ids) of every rank's process. Complete events on one track must nest, but
    /// bucket all-reduces in flight together overlap without nesting, so the communication track has lanes: lane 0 is
    /// `communicationTrack`, lane k ≥ 1 is `communicationTrack + 100 + k` ("communication #k+1").
    static let computeTrack = 1, communicationTrack = 2, stallTrack = 3
    /// Default capacity: 1 Mi events (40 MiB of address space, touched only as it fills; about 100 events per step
    /// for a small model).
    static var defaultCapacity: Int { (try? capacityFromEnvironment()) ?? 1 << 20 }

    /// Accepted `SWIFTMIND_TIMELINE_EVENTS` (events per rank; 40 bytes each).
    static let capacityRange = 1024...(1 << 26)

    /// `SWIFTMIND_TIMELINE_EVENTS` when set, else 1 Mi.
    /// - Throws: `TrainingError.invalidOption` when it is set to anything but an integer in `capacityRange`.
    static func capacityFromEnvironment() throws -> Int {
        guard let s = ProcessInfo.processInfo.environment["SWIFTMIND_TIMELINE_EVENTS"] else { return 1 << 20 }
        guard let n = Int(s), capacityRange.contains(n) else {
            throw TrainingError.invalidOption("SWIFTMIND_TIMELINE_EVENTS must be an integer number of events in \(capacityRange.lowerBound)…\(capacityRange.upperBound) (got '\(s)')")
        }
        return n
    }

    /// Rank 0 at the start of a run (after the out-dir exists): creates FILE's directory when missing (as --out-dir's
    /// is), then fails now, not after training, when FILE cannot be created or written (a directory, a read-only
    /// place). A file the probe created is removed again.
    /// - Throws: `TrainingError.io` naming the file.
    func probeWritable() throws {
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty {
            do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
                throw TrainingError.io(path: path, reason: "cannot create the timeline's directory \(dir) (\(describeFileError(error, path: dir)))")
            }
        }
        let existed = FileManager.default.fileExists(atPath: path)
        let fd = open(path, O_WRONLY | O_CREAT, 0o644)
        guard fd >= 0 else {
            throw TrainingError.io(path: path, reason: "cannot write the timeline (\(String(cString: strerror(errno))))")
        }
        close(fd)
        if !existed { unlink(path) }
    }

    init(path: String, rank: Int, world: Int, capacity: Int = TimelineRecorder.defaultCapacity) {
        self.path = path
        self.rank = rank
        self.world = world
        self.capacity = capacity
        events = .allocate(capacity: capacity)
    }

    deinit { events.deallocate() }

    /// Every rank's trace time 0 at the same instant, as well as a barrier allows: two barriers (the first absorbs
    /// stragglers), then each rank reads its clock. Ranks leave a barrier within microseconds of each other on one host;
    /// across hosts the skew is the barrier's release latency. Collective.
    func synchronize(_ comm: Communicator) throws {
        try comm.barrier()
        try comm.barrier()
        originNs = DispatchTime.now().uptimeNanoseconds
    }

    @inline(__always) static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Records a span `[startNs, endNs]` of `kind`.
    @inline(__always) func record(_ kind: TimelineKind, _ startNs: UInt64, _ endNs: UInt64, a: Int = 0, b: Int = 0) {
        guard count < capacity else { dropped += 1; return }
        events[count] = TimelineEvent(kind: kind, startNs: startNs, endNs: max(endNs, startNs), a: Int64(a), b: Int64(b))
        count += 1
    }

    /// Runs `body` as a span of `kind`.
    @inline(__always) func span<T>(_ kind: TimelineKind, a: Int = 0, b: Int = 0, _ body: () throws -> T) rethrows -> T {
        let t0 = TimelineRecorder.now()
        defer { record(kind, t0, TimelineRecorder.now(), a: a, b: b) }
        return try body()
    }

    /// A stall warning (any thread).
    func stall(_ message: String) {
        let t = TimelineRecorder.now()
        stallLock.lock(); stalls.append((t, message)); stallLock.unlock()
    }

    /// The model's forward/backward spans go to this recorder.
    func attach(to model: MiniMindModel) {
        model.traceHook = { [unowned self] s, t0, t1 in
            switch s {
            case .forward: self.record(.forward, t0, t1)
            case .forwardLayer(let l): self.record(.forwardLayer, t0, t1, a: l)
            case .backward: self.record(.backward, t0, t1)
            case .backwardHead: self.record(.backwardHead, t0, t1)
            case .backwardLayer(let l): self.record(.backwardLayer, t0, t1, a: l)
            case .backwardEmbedding: self.record(.backwardEmbedding, t0, t1)
            }
        }
    }

    /// After `reducer.finish()`: every bucket's all-reduce of the round, on the communication track.
    func recordBuckets(_ reducer: GradientReducer) {
        for (i, r) in reducer.buckets.enumerated() {
            let (l, d) = reducer.bucketTimes(i)
            if l != 0 && d != 0 { record(.bucketAllReduce, l, d, a: i, b: r.count * MemoryLayout<Float>.stride) }
        }
    }

    static func name(_ e: TimelineEvent) -> String {
        switch e.kind {
        case .prepare: return "prepare (tokenizer, data, models)"
        case .step: return "step \(e.a)"
        case .data: return "data loading"
        case .forward: return "forward"
        case .forwardLayer: return "forward layer \(e.a)"
        case .backward: return "backward"
        case .backwardHead: return "backward lm_head + norm"
        case .backwardLayer: return "backward layer \(e.a)"
        case .backwardEmbedding: return "backward embed_tokens"
        case .allReduceWait: return "wait for all-reduce"
        case .optimizer: return "clip + optimizer"
        case .checkpoint: return e.b == 1 ? "save final" : "checkpoint \(e.a)"
        case .bucketAllReduce: return "all-reduce bucket \(e.a)"
        }
    }

    static func category(_ k: TimelineKind) -> String {
        switch k {
        case .prepare, .data: return "data"
        case .step: return "step"
        case .forward, .forwardLayer: return "forward"
        case .backward, .backwardHead, .backwardLayer, .backwardEmbedding: return "backward"
        case .allReduceWait, .bucketAllReduce: return "communication"
        case .optimizer: return "optimizer"
        case .checkpoint: return "checkpoint"
        }
    }

    /// Microseconds since the origin, with ns precision.
    private func micros(_ ns: UInt64) -> String {
        let d = ns >= originNs ? Double(ns - originNs) : -Double(originNs - ns)
        return String(format: "%.3f", d / 1000)
    }

    /// This rank's events as comma-separated JSON objects of the trace: the process and track names, then the spans
    /// (`X`) and the stall warnings (`i`, thread-scoped instants). The process id is rank + 1 (Perfetto treats pid 0,
    /// the Linux idle task, specially); its name is "rank N".
    func renderEvents() -> String {
        let pid = rank + 1
        var parts: [String] = [
            #"{"name":"process_name","ph":"M","pid":\#(pid),"tid":0,"args":{"name":"rank \#(rank)"}}"#,
            #"{"name":"process_sort_index","ph":"M","pid":\#(pid),"tid":0,"args":{"sort_index":\#(rank)}}"#,
        ]
        // Communication lanes: each bucket on the first lane whose last all-reduce ended before it started.
        var laneEnds: [UInt64] = []
        var lanes = [Int](repeating: 0, count: count)
        for i in 0 ..< count where events[i].kind == .bucketAllReduce {
            let e = events[i]
            if let k = laneEnds.firstIndex(where: { $0 <= e.startNs }) { lanes[i] = k; laneEnds[k] = e.endNs }
            else { lanes[i] = laneEnds.count; laneEnds.append(e.endNs) }
        }
        func laneTrack(_ k: Int) -> Int { k == 0 ? Self.communicationTrack : Self.communicationTrack + 100 + k }
        var tracks = [(Self.computeTrack, "compute", 1), (Self.communicationTrack, "communication", 2), (Self.stallTrack, "stalls", 1000)]
        for k in laneEnds.indices.dropFirst() { tracks.append((laneTrack(k), "communication #\(k + 1)", 2 + k)) }
        for (tid, name, order) in tracks {
            parts.append(#"{"name":"thread_name","ph":"M","pid":\#(pid),"tid":\#(tid),"args":{"name":"\#(name)"}}"#)
            parts.append(#"{"name":"thread_sort_index","ph":"M","pid":\#(pid),"tid":\#(tid),"args":{"sort_index":\#(order)}}"#)
        }
        parts.reserveCapacity(parts.count + count + stalls.count)
        for i in 0 ..< count {
            let e = events[i]
            let tid = e.kind == .bucketAllReduce ? laneTrack(lanes[i]) : Self.computeTrack
            var args = ""
            switch e.kind {
            case .bucketAllReduce: args = #","args":{"bucket":\#(e.a),"bytes":\#(e.b)}"#
            case .backwardLayer, .forwardLayer: args = #","args":{"layer":\#(e.a)}"#
            case .step: args = #","args":{"step":\#(e.a)}"#
            case .checkpoint: args = #","args":{"step":\#(e.a)}"#
            default: break
            }
            let dur = String(format: "%.3f", Double(e.endNs - e.startNs) / 1000)
            parts.append(#"{"name":"\#(Self.name(e))","cat":"\#(Self.category(e.kind))","ph":"X","ts":\#(micros(e.startNs)),"dur":\#(dur),"pid":\#(pid),"tid":\#(tid)\#(args)}"#)
        }
        stallLock.lock(); let st = stalls; stallLock.unlock()
        for s in st {
            parts.append(#"{"name":"stall warning","cat":"stall","ph":"i","s":"t","ts":\#(micros(s.ns)),"pid":\#(pid),"tid":\#(Self.stallTrack),"args":{"message":\#(jsonQuote(s.message))}}"#)
        }
        return parts.joined(separator: ",\n")
    }

    /// The whole trace from the ranks' rendered events (`ranks[r]` = rank r's `renderEvents()`).
    func document(ranks: [String], complete: Bool) -> String {
        let body = ranks.filter { !$0.isEmpty }.joined(separator: ",\n")
        return "{\"traceEvents\":[\n\(body)\n],\"displayTimeUnit\":\"ms\",\"otherData\":{\"producer\":\"SwiftMind trainer --timeline\",\"world_size\":\(world),\"ranks_included\":\(ranks.filter { !$0.isEmpty }.count),\"complete\":\(complete),\"events_dropped_rank0\":\(dropped),\"clock\":\"µs since a barrier all ranks left together (CLOCK_MONOTONIC per rank)\"}}\n"
    }

    /// Collective: every rank's events gathered to rank 0, which writes the merged trace atomically.
    /// - Throws: the communicator's errors, `TrainingError.io` (rank 0) when the file cannot be written.
    func writeMerged(_ comm: Communicator, complete: Bool = true) throws {
        let mine = Array(renderEvents().utf8)
        var drops = [Double](repeating: 0, count: world)
        drops[rank] = Double(dropped)
        try drops.withUnsafeMutableBufferPointer { try comm.allReduceSum($0) }
        if rank == 0, drops.contains(where: { $0 > 0 }) {
            let per = drops.enumerated().filter { $0.element > 0 }.map { "rank \($0.offset): \(Int($0.element))" }.joined(separator: ", ")
            FileHandle.standardError.write(Data("warning: the timeline's buffer of \(capacity) events per rank filled up; events dropped (\(per)): the trace ends early; raise SWIFTMIND_TIMELINE_EVENTS\n".utf8))
        }
        guard let all = try comm.gather(mine, root: 0) else { return }
        try write(document(ranks: all.map { String(decoding: $0, as: UTF8.self) }, complete: complete))
    }

    /// Rank 0 alone (an error or a stall abort: no collective is safe): only its own events. Errors are swallowed
    /// (the run is failing already); returns whether the file was written.
    @discardableResult
    func writeLocal() -> Bool {
        guard rank == 0 else { return false }
        do { try write(document(ranks: [renderEvents()], complete: false)); return true } catch { return false }
    }

    /// Writes `text` to `path` under a temporary name, then renames it.
    private func write(_ text: String) throws {
        let tmp = path + ".tmp-\(getpid())"
        do {
            try Data(text.utf8).write(to: URL(fileURLWithPath: tmp))
        } catch {
            try? FileManager.default.removeItem(atPath: tmp)
            throw TrainingError.io(path: path, reason: "cannot write the timeline (\(describeFileError(error, path: tmp)))")
        }
        if rename(tmp, path) != 0 {
            let e = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: tmp)
            throw TrainingError.io(path: path, reason: "cannot write the timeline (\(e))")
        }
    }
}
