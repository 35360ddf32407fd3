// Checkpoints: OUT/checkpoint-<step>/ = a loadable model directory + optimizer state + trainer state, written under a
// temporary name and renamed; the newest K are kept; OUT/final/ at the end.
import Foundation
import Model
#if canImport(Glibc)
import Glibc
#endif

/// Everything besides the weights that a resumed run needs (`trainer_state.json`).
public struct TrainerState: Codable, Equatable, Sendable {
    /// Optimizer steps completed.
    public var step: Int
    /// Epoch of the NEXT sample to read (0-based).
    public var epoch: Int
    /// Global position, within `epoch`'s sample order, of the next sample to read (a global sample index).
    public var samplePosition: Int
    /// Samples consumed since the start of training (over all ranks, padding repeats included).
    public var globalSamplesSeen: Int
    /// Total optimizer steps of the schedule the run was started with.
    public var totalSteps: Int
    /// RNG state: the sample order of an epoch is derived from `seed + epoch`, so (seed, epoch) is the whole state.
    public var rngSeed: UInt64
    public var worldSize: Int
    public var batchSize: Int
    public var accumulationSteps: Int
    public var learningRate: Double
    public var maxSeqLen: Int
    public var dataHash: String
    /// Loss of every completed step (global masked mean), for checks and plots.
    public var lastLoss: Double?
    /// `--dtype` of the run (`float32` / `bfloat16`) and how its products ran (`MiniMindModel.bf16Engine` or fp32);
    /// `--grad-comm-dtype`. Absent in checkpoints written before they were recorded.
    public var dtype: String?
    public var dtypeEngine: String?
    public var gradCommDType: String?
    /// What `data_hash` hashes, readable: the data, tokenizer, seed, stage and objective settings of the run, so a
    /// refused `--resume` can say what changed. Absent in checkpoints written before it was recorded.
    public var dataIdentity: String? = nil

    enum CodingKeys: String, CodingKey {
        case step, epoch
        case samplePosition = "sample_position"
        case globalSamplesSeen = "global_samples_seen"
        case totalSteps = "total_steps"
        case rngSeed = "rng_seed"
        case worldSize = "world_size"
        case batchSize = "batch_size"
        case accumulationSteps = "accumulation_steps"
        case learningRate = "learning_rate"
        case maxSeqLen = "max_seq_len"
        case dataHash = "data_hash"
        case lastLoss = "last_loss"
        case dtype
        case dtypeEngine = "dtype_engine"
        case gradCommDType = "grad_comm_dtype"
        case dataIdentity = "data_identity"
    }
}

/// Optimizer state as stored in `optimizer.safetensors`: `exp_avg` (m), `exp_avg_sq` (v), both `[numParameters]`
/// fp32, and the AdamW step count in the metadata (`step`).
public struct OptimizerSnapshot {
    public var m: [Float]
    public var v: [Float]
    public var step: Int
    public init(m: [Float], v: [Float], step: Int) { self.m = m; self.v = v; self.step = step }
}

public enum Checkpoints {
    public static let prefix = "checkpoint-"

    /// Writes `OUT/<name>/` atomically (temporary directory + rename). `tokenizerFiles` are copied beside the weights;
    /// `chatTemplate`, when given, is written as `chat_template.jinja` (replacing a copied one).
    public static func write(name: String, outDir: String, model: MiniMindModel, optimizer: OptimizerSnapshot?,
                             state: TrainerState?, tokenizerFiles: [String], chatTemplate: String? = nil) throws -> String {
        let final = (outDir as NSString).appendingPathComponent(name)
        do {
            return try writeUnchecked(name: name, outDir: outDir, model: model, optimizer: optimizer, state: state,
                                      tokenizerFiles: tokenizerFiles, chatTemplate: chatTemplate)
        } catch let e as TrainingError { throw e } catch let e as ModelError { throw e } catch {
            // Foundation's file errors (a full disk: "There isn't enough space." with a dump of userInfo) → the reason.
            let path = (error as NSError).userInfo[NSFilePathErrorKey] as? String ?? final
            throw TrainingError.io(path: path, reason: "cannot write the checkpoint: \(describeFileError(error, path: path))")
        }
    }

    private static func writeUnchecked(name: String, outDir: String, model: MiniMindModel, optimizer: OptimizerSnapshot?,
                                       state: TrainerState?, tokenizerFiles: [String], chatTemplate: String?) throws -> String {
        let fm = FileManager.default
        try fm.createDirectory(atPath: outDir, withIntermediateDirectories: true)
        let final = (outDir as NSString).appendingPathComponent(name)
        let tmp = (outDir as NSString).appendingPathComponent(".\(name).tmp-\(getpid())")
        try? fm.removeItem(atPath: tmp)
        try fm.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        var done = false
        defer { if !done { try? fm.removeItem(atPath: tmp) } }
        try model.save(directory: tmp)
        for f in tokenizerFiles {
            try fm.copyItem(atPath: f, toPath: (tmp as NSString).appendingPathComponent((f as NSString).lastPathComponent))
        }
        if let t = chatTemplate {
            let p = (tmp as NSString).appendingPathComponent("chat_template.jinja")
            try? fm.removeItem(atPath: p)
            do { try Data(t.utf8).write(to: URL(fileURLWithPath: p)) } catch {
                throw TrainingError.io(path: p, reason: "cannot write: \(describeFileError(error, path: p))") }
        }
        if let o = optimizer {
            try writeFloatTensors([("exp_avg", o.m), ("exp_avg_sq", o.v)], metadata: ["step": String(o.step)],
                                  to: tmp + "/optimizer.safetensors")
        }
        if let s = state {
            let enc = JSONEncoder(); enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try enc.encode(s).write(to: URL(fileURLWithPath: tmp + "/trainer_state.json"))
        }
        if fm.fileExists(atPath: final) {
            let old = (outDir as NSString).appendingPathComponent(".\(name).old-\(getpid())")
            try? fm.removeItem(atPath: old)
            try fm.moveItem(atPath: final, toPath: old)
            try? fm.removeItem(atPath: old)
        }
        guard rename(tmp, final) == 0 else { throw TrainingError.io(path: final, reason: "rename failed") }
        done = true
        return final
    }

    /// Prepares `outDir` for a run (rank 0, before anything is written): creates it (an existing non-directory is an
    /// error naming the path), removes leftovers of a killed run (`.checkpoint-N.tmp-PID`, `.final.tmp-PID`,
    /// `.NAME.old-PID`), and refuses a fresh (non-`--resume`) run into a directory that holds another run's
    /// checkpoints, which would otherwise be mixed with the new ones.
    /// Returns the directory's lock (`OutDirLock`), held until the returned object is released: a second run in
    /// the same directory is refused before it removes or writes anything there.
    public static func prepareOutDir(_ outDir: String, resume: Bool) throws -> OutDirLock {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        let existed = fm.fileExists(atPath: outDir, isDirectory: &isDir)
        if existed {
            guard isDir.boolValue else { throw TrainingError.io(path: outDir, reason: "--out-dir exists and is not a directory") }
        } else {
            do { try fm.createDirectory(atPath: outDir, withIntermediateDirectories: true) } catch {
                throw TrainingError.io(path: outDir, reason: "cannot create the --out-dir directory (\(describeFileError(error, path: outDir)))")
            }
        }
        let lock = try OutDirLock.acquire(outDir: outDir, created: !existed)
        for n in (try? fm.contentsOfDirectory(atPath: outDir)) ?? [] where n.hasPrefix(".") && (n.contains(".tmp-") || n.contains(".old-")) {
            try? fm.removeItem(atPath: (outDir as NSString).appendingPathComponent(n))
        }
        if !resume, let last = list(outDir: outDir).last {
            throw TrainingError.invalidOption("\(outDir) already holds checkpoints of another run (\((last.path as NSString).lastPathComponent)); pass --resume to continue it, or choose another --out-dir")
        }
        return lock
    }

    /// Complete checkpoints in `outDir` (those holding `trainer_state.json`), sorted by step, oldest first.
    public static func list(outDir: String) -> [(step: Int, path: String)] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: outDir) else { return [] }
        var out: [(Int, String)] = []
        for n in names where n.hasPrefix(prefix) {
            guard let s = Int(n.dropFirst(prefix.count)) else { continue }
            let p = (outDir as NSString).appendingPathComponent(n)
            if FileManager.default.fileExists(atPath: p + "/trainer_state.json") { out.append((s, p)) }
        }
        return out.sorted { $0.0 < $1.0 }
    }

    /// Deletes all but the newest `keep` checkpoints.
    public static func prune(outDir: String, keep: Int) {
        let all = list(outDir: outDir)
        guard keep >= 0, all.count > keep else { return }
        for c in all.prefix(all.count - keep) { try? FileManager.default.removeItem(atPath: c.path) }
    }

    public static func readState(_ dir: String) throws -> TrainerState {
        let p = dir + "/trainer_state.json"
        guard let d = FileManager.default.contents(atPath: p) else { throw TrainingError.badCheckpoint(path: p, reason: "missing") }
        do { return try JSONDecoder().decode(TrainerState.self, from: d) } catch {
            throw TrainingError.badCheckpoint(path: p, reason: "\(error)")
        }
    }

    /// Checks a resumed `trainer_state.json` against the run: 0 ≤ epoch < epochs, 0 ≤ sample_position ≤ samples,
    /// 0 ≤ step ≤ epochs × samples (each step takes at least one sample, whatever world size or batch earlier segments
    /// of the run used), positive geometry, non-negative counters.
    /// Throws `TrainingError.badCheckpoint` ("bad checkpoint DIR: field …").
    public static func validate(_ st: TrainerState, dir: String, datasetSize: Int, epochs: Int) throws {
        func bad(_ field: String, _ why: String) -> TrainingError {
            .badCheckpoint(path: dir, reason: "field \(field) (trainer_state.json) \(why)") }
        if st.worldSize < 1 { throw bad("world_size", "is \(st.worldSize), must be ≥ 1") }
        if st.batchSize < 1 { throw bad("batch_size", "is \(st.batchSize), must be ≥ 1") }
        if st.accumulationSteps < 1 { throw bad("accumulation_steps", "is \(st.accumulationSteps), must be ≥ 1") }
        if st.epoch < 0 || st.epoch >= epochs { throw bad("epoch", "is \(st.epoch), must be in [0, \(epochs)) for --epochs \(epochs)") }
        if st.samplePosition < 0 || st.samplePosition > datasetSize {
            throw bad("sample_position", "is \(st.samplePosition), must be in [0, \(datasetSize)] (the number of samples)") }
        if st.globalSamplesSeen < 0 { throw bad("global_samples_seen", "is \(st.globalSamplesSeen), must be ≥ 0") }
        let (_, o) = st.batchSize.multipliedReportingOverflow(by: st.accumulationSteps)
        if o { throw bad("batch_size", "× accumulation_steps overflows") }
        // The bound is the one every geometry shares (one sample per step), not the checkpoint's own geometry's plan:
        // a run resumed with a larger global batch (more ranks, a bigger --batch-size) has taken more steps than that
        // geometry plans, and its checkpoints must stay resumable.
        let (maxSteps, o2) = max(datasetSize, 1).multipliedReportingOverflow(by: epochs)
        let limit = o2 ? Int.max : maxSteps
        if st.step < 0 || st.step > limit {
            throw bad("step", "is \(st.step), must be in [0, \(limit)] (\(epochs) epochs of \(datasetSize) samples, at least one sample per step)") }
    }

    public static func readOptimizer(_ dir: String, numParameters: Int) throws -> OptimizerSnapshot {
        let p = dir + "/optimizer.safetensors"
        let (tensors, meta) = try readFloatTensors(p)
        guard let m = tensors["exp_avg"], let v = tensors["exp_avg_sq"], let s = meta["step"].flatMap({ Int($0) }) else {
            throw TrainingError.badCheckpoint(path: p, reason: "needs exp_avg, exp_avg_sq and metadata step")
        }
        guard m.count == numParameters, v.count == numParameters else {
            throw TrainingError.badCheckpoint(path: p, reason: "optimizer state has \(m.count) elements, the model \(numParameters)")
        }
        guard s >= 0 else {
            throw TrainingError.badCheckpoint(path: p, reason: "field step (optimizer metadata) is \(s), must be ≥ 0")
        }
        return OptimizerSnapshot(m: m, v: v, step: s)
    }
}

/// A short reason for a file-system error (the POSIX reason when there is one; never the NSCocoa wording).
func describeFileError(_ error: Error, path: String) -> String {
    let ns = error as NSError
    if let u = ns.userInfo[NSUnderlyingErrorKey] as? NSError, u.domain == NSPOSIXErrorDomain {
        return String(cString: strerror(Int32(u.code)))
    }
    if ns.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(ns.code))) }
    if ns.domain == NSCocoaErrorDomain && ns.code == NSFileWriteOutOfSpaceError { return String(cString: strerror(ENOSPC)) }
    var p = (path as NSString).deletingLastPathComponent
    let fm = FileManager.default
    while !p.isEmpty && p != "/" && !fm.fileExists(atPath: p) { p = (p as NSString).deletingLastPathComponent }
    var isDir: ObjCBool = false
    if !p.isEmpty, fm.fileExists(atPath: p, isDirectory: &isDir), !isDir.boolValue { return "\(p) is a file, not a directory" }
    return ns.localizedDescription
}

// MARK: - Minimal fp32 safetensors I/O for the optimizer state (format: u64 LE header size, JSON header, raw data).

func writeFloatTensors(_ tensors: [(String, [Float])], metadata: [String: String], to path: String) throws {
    var header: [String: Any] = ["__metadata__": metadata]
    var offset = 0
    for (name, values) in tensors {
        header[name] = ["dtype": "F32", "shape": [values.count], "data_offsets": [offset, offset + values.count * 4]]
        offset += values.count * 4
    }
    var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
    while json.count % 8 != 0 { json.append(0x20) }
    var out = Data()
    out.reserveCapacity(8 + json.count + offset)
    withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
    out.append(json)
    for (_, values) in tensors { values.withUnsafeBytes { out.append(contentsOf: $0) } }
    try out.write(to: URL(fileURLWithPath: path), options: .atomic)
}

/// Reads every float tensor of `path` through the Model module's validated `SafeTensorsFile` (header length, dtypes,
/// overflow-checked shapes, offsets inside the file, no overlaps); any problem → `TrainingError.badCheckpoint`.
func readFloatTensors(_ path: String) throws -> ([String: [Float]], [String: String]) {
    guard FileManager.default.fileExists(atPath: path) else {
        throw TrainingError.badCheckpoint(path: path, reason: "missing")
    }
    do {
        let f = try SafeTensorsFile(path: path)
        var tensors: [String: [Float]] = [:]
        for (k, e) in f.entries {
            guard e.dtype == .F32 else {
                throw TrainingError.badCheckpoint(path: path, reason: "tensor \(k) has dtype \(e.dtype.rawValue), expected F32")
            }
            tensors[k] = try f.floats(k)
        }
        return (tensors, f.metadata)
    } catch let e as ModelError {
        throw TrainingError.badCheckpoint(path: path, reason: "\(e)")
    }
}

/// The lock of an output directory, held by rank 0 for a whole run: `OUT/.swiftmind.lock`, an advisory `flock(2)`
/// lock (released by the kernel when the holding process ends, however it ends), whose text names the holder
/// (`host <name> pid <pid>`). A second run in the same directory is refused with that text; a lock file whose process
/// is gone is taken over (`previousHolder` says whose it was, for a warning).
public final class OutDirLock {
    public static let fileName = ".swiftmind.lock"
    private let fd: Int32
    /// The text of a lock file left by a process that is gone, nil when there was none.
    public let previousHolder: String?

    /// `created`: the run created `outDir`; when the lock is released with nothing else in it (a run that failed
    /// before writing anything), the directory is removed again instead of being left holding only the lock file.
    /// - Throws: `TrainingError.invalidOption` naming the holder when another process holds the lock;
    ///   `TrainingError.io` when the lock file cannot be opened or written.
    public static func acquire(outDir: String, created: Bool = false) throws -> OutDirLock {
        let path = (outDir as NSString).appendingPathComponent(fileName)
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw TrainingError.io(path: path, reason: "cannot open the run lock: \(String(cString: strerror(errno)))") }
        func text() -> String {
            var buf = [UInt8](repeating: 0, count: 512)
            let n = pread(fd, &buf, buf.count, 0)
            return n > 0 ? String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : ""
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let holder = text()
            close(fd)
            throw TrainingError.invalidOption("\(outDir) is in use by another run (\(holder.isEmpty ? "holder unknown" : holder)); wait for it to end or choose another --out-dir")
        }
        let previous = text()
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        let me = "host \(String(cString: host)) pid \(getpid())\n"
        let bytes = Array(me.utf8)
        guard ftruncate(fd, 0) == 0, pwrite(fd, bytes, bytes.count, 0) == bytes.count else {
            let e = String(cString: strerror(errno)); close(fd)
            throw TrainingError.io(path: path, reason: "cannot write the run lock: \(e)")
        }
        return OutDirLock(fd: fd, previousHolder: previous.isEmpty ? nil : previous, removable: created ? outDir : nil)
    }

    private let removable: String?
    private init(fd: Int32, previousHolder: String?, removable: String?) {
        self.fd = fd; self.previousHolder = previousHolder; self.removable = removable
    }

    deinit {
        _ = ftruncate(fd, 0)   // an ended run leaves an empty lock file: nothing to warn about next time
        // A directory this run created and left empty but for the lock goes again (removed while the lock is held).
        if let dir = removable, (try? FileManager.default.contentsOfDirectory(atPath: dir)) == [Self.fileName] {
            unlink((dir as NSString).appendingPathComponent(Self.fileName))
            rmdir(dir)
        }
        close(fd)
    }
}
