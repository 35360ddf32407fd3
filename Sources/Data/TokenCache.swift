// The one on-disk token cache of every training stage: a jsonl file tokenized once into memory-mapped files
// (token ids + per-sequence offsets), keyed by the source file, the tokenizer and the stage's rendering.
import Foundation
import Tokenizers
#if canImport(Glibc)
import Glibc
#endif

/// Identity of a source file: size, modification time and a sampled content hash
/// (FNV-1a 64 over the first and last 4 MiB and 32 evenly spaced 64 KiB blocks — cheap even for a 1.6 GB file).
public struct SourceIdentity: Codable, Equatable, Sendable {
    public var size: UInt64
    public var mtimeNanoseconds: Int64
    public var sampledHash: String

    public static func of(path: String) throws -> SourceIdentity {
        var st = stat()
        guard stat(path, &st) == 0 else { throw DataError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        guard (st.st_mode & S_IFMT) != S_IFDIR else {
            throw DataError.cannotOpen(path: path, reason: "is a directory; the data path must be a .jsonl file") }
        let size = UInt64(st.st_size)
        let mtime = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        guard let h = FileHandle(forReadingAtPath: path) else { throw DataError.cannotOpen(path: path, reason: "not readable") }
        defer { try? h.close() }
        var hash = FNV1a64()
        hash.add(size)
        func block(_ offset: UInt64, _ count: Int) throws {
            try h.seek(toOffset: offset)
            let d = try h.read(upToCount: count) ?? Data()
            hash.add(d)
        }
        let edge = 4 << 20, blk = 64 << 10
        if size <= UInt64(2 * edge + 32 * blk) {
            try block(0, Int(size))
        } else {
            try block(0, edge)
            for k in 1 ... 32 { try block(size / 33 * UInt64(k), blk) }
            try block(size - UInt64(edge), edge)
        }
        return SourceIdentity(size: size, mtimeNanoseconds: mtime, sampledHash: hash.hex)
    }
}

/// 64-bit FNV-1a (Fowler–Noll–Vo), used only as a change detector, not for security.
public struct FNV1a64 {
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325
    public init() {}
    public mutating func add(_ bytes: UnsafeRawBufferPointer) {
        var v = value
        for b in bytes { v = (v ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        value = v
    }
    public mutating func add(_ data: Data) { data.withUnsafeBytes { add($0) } }
    public mutating func add(_ s: String) { add(Data(s.utf8)) }
    public mutating func add(_ x: UInt64) { withUnsafeBytes(of: x.littleEndian) { add($0) } }
    public var hex: String { String(format: "%016llx", value) }
}

/// What a cache holds per sample (one jsonl line), i.e. which stages read it.
public enum TokenCacheKind: String, Codable, Sendable, CaseIterable {
    /// pretrain: one sequence, the `{"text": …}` field encoded without special tokens (MiniMind `PretrainDataset`).
    case pretrain
    /// sft, lora, reason, distill: one sequence, `{"conversations": [turns]}` with roles by turn parity, rendered with
    /// the tokenizer's chat template and encoded, untruncated (MiniMind `SFTDataset`).
    case sft
    /// dpo: two sequences, `chosen` then `rejected` (roles as given), each rendered and encoded, untruncated
    /// (MiniMind `DPODataset`).
    case dpo

    /// Token sequences per sample.
    public var sequencesPerSample: Int { self == .dpo ? 2 : 1 }
}

/// Everything besides the source file that decides the ids of a cache: its kind, the jsonl field (pretrain), the
/// tokenizer files' fingerprint, and for the chat kinds the chat template and the role rule. `probe` hashes the ids
/// SwiftMind's own code gives a fixed probe sample (rendered and encoded), so a change of the rendering or
/// encoding code invalidates caches even when the tokenizer files did not change.
public struct TokenCacheKey: Codable, Equatable, Sendable {
    public var kind: TokenCacheKind
    public var field: String
    public var tokenizerFingerprint: String
    public var vocabSize: Int
    /// The chat template text (tokenizer_config.json's `chat_template`, or "builtin"); "" for pretrain.
    public var chatTemplate: String
    /// "parity" (sft: even turns user, odd assistant), "given" (dpo), "" (pretrain).
    public var roleRule: String
    public var probe: String

    /// - Throws: `TokenizerError.chatTemplate` when a chat kind's template cannot be rendered.
    public init(kind: TokenCacheKind, tokenizer: Tokenizer, field: String = "text") throws {
        self.kind = kind
        self.field = kind == .pretrain ? field : ""
        tokenizerFingerprint = tokenizer.fingerprint
        vocabSize = tokenizer.vocabSize
        var h = FNV1a64()
        switch kind {
        case .pretrain:
            chatTemplate = ""; roleRule = ""
            for id in tokenizer.encode(TokenCacheKey.probeText) { h.add(UInt64(UInt32(bitPattern: id))) }
        case .sft, .dpo:
            chatTemplate = tokenizer.chatTemplateSource ?? "builtin"
            roleRule = kind == .sft ? "parity" : "given"
            let turns = TokenCacheKey.probeTurns.enumerated().map { i, t in
                ChatMessage(role: kind == .sft ? (i % 2 == 0 ? "user" : "assistant") : t.role, content: t.content) }
            for id in tokenizer.encode(try tokenizer.applyChatTemplate(turns, addGenerationPrompt: false)) {
                h.add(UInt64(UInt32(bitPattern: id)))
            }
        }
        probe = h.hex
    }

    static let probeText = "Probe 探针: <|im_start|>x<|im_end|> <think>a</think>\n<answer> 1.5e3 </answer>  \t end"
    static let probeTurns = [ChatMessage(role: "system", content: "You are 测试."),
                             ChatMessage(role: "user", content: "床前明月光？ <think> hi"),
                             ChatMessage(role: "assistant", content: "<think>\n想</think>\n<answer>疑是地上霜。</answer>"),
                             ChatMessage(role: "user", content: "again\n\n"),
                             ChatMessage(role: "assistant", content: "ok <|im_end|> x")]

    /// One line of text naming every part (hashed into the directory name).
    var canonical: String {
        "kind=\(kind.rawValue)\u{0}field=\(field)\u{0}tokenizer=\(tokenizerFingerprint)\u{0}vocab=\(vocabSize)\u{0}template=\(chatTemplate)\u{0}roles=\(roleRule)\u{0}probe=\(probe)"
    }
}

/// `meta.json` of a cache directory; written last, so its presence marks a complete cache.
public struct TokenCacheMeta: Codable, Equatable, Sendable {
    public var formatVersion: Int
    public var sourcePath: String
    public var source: SourceIdentity
    public var key: TokenCacheKey
    /// Bytes per token id in `tokens.bin`: 2 (uint16, when the vocab has ≤ 65536 ids) or 4 (int32), little-endian.
    public var idBytes: Int
    public var numSamples: Int
    /// `numSamples × key.kind.sequencesPerSample`; `index.bin` holds `numSequences + 1` offsets.
    public var numSequences: Int
    public var numTokens: Int
    /// Longest sequence, in tokens.
    public var maxSequenceLength: Int
}

/// The tokenized form of one jsonl file for one stage kind: sequence `s` is `tokens[offsets[s] ..< offsets[s+1]]`;
/// sample `i` owns sequences `i·k ..< (i+1)·k` with `k = kind.sequencesPerSample` (DPO: chosen, then rejected).
/// Chat sequences are stored rendered and encoded but untruncated, so one cache serves every `max_seq_len`; batches
/// apply truncation, padding and masks when they are materialised.
///
/// Layout of a cache directory: `tokens.bin` (uint16 or int32 LE, see `TokenCacheMeta.idBytes`), `index.bin`
/// (`numSequences + 1` uint64 LE offsets), `meta.json` (written last). It is built under a temporary name
/// (`DIR.tmp-HOST-PID-RANDOM`) and renamed into place, so a reader never sees a half-written cache; temporary
/// directories of builds whose process is gone are removed by the next build. Ids are checked against the vocab when
/// the cache is built; on reuse the key (tokenizer fingerprint) is trusted and only `index.bin` is checked, while
/// `copyIds` still refuses an out-of-range id when it reads one (a file changed after it was built).
/// A cache can also be held in memory (`load(…)`, for small evaluation files) with the same reading code.
public final class TokenCache: @unchecked Sendable {
    public static let formatVersion = 2
    /// The cache directory, or `"<memory: PATH>"` for an in-memory cache.
    public let directory: String
    public let meta: TokenCacheMeta
    private let tokensRegion: ByteRegion
    private let indexRegion: ByteRegion
    private let offsets: UnsafePointer<UInt64>
    private let readLock = NSLock()
    private var bytesReadSinceRelease = 0

    public var kind: TokenCacheKind { meta.key.kind }
    /// Number of samples (a DPO sample is one pair).
    public var count: Int { meta.numSamples }
    public var numSequences: Int { meta.numSequences }
    public var numTokens: Int { meta.numTokens }
    public var idBytes: Int { meta.idBytes }
    public var vocabSize: Int { meta.key.vocabSize }

    /// Number of ids of sequence `s`.
    @inline(__always)
    public func sequenceLength(_ s: Int) -> Int {
        precondition(s >= 0 && s < meta.numSequences, "sequence \(s) out of range 0..<\(meta.numSequences)")
        return Int(UInt64(littleEndian: offsets[s + 1]) - UInt64(littleEndian: offsets[s]))
    }

    /// Copies the first `min(length, maxCount)` ids of sequence `s` into `dst` as int32 and returns that count.
    /// - Throws: `DataError.badCache` when an id lies outside `[0, vocabSize)` (the file changed after it was built).
    public func copyIds(sequence s: Int, maxCount: Int, into dst: UnsafeMutablePointer<Int32>) throws -> Int {
        precondition(s >= 0 && s < meta.numSequences, "sequence \(s) out of range 0..<\(meta.numSequences)")
        let a = Int(UInt64(littleEndian: offsets[s])), b = Int(UInt64(littleEndian: offsets[s + 1]))
        let n = max(0, min(b - a, maxCount))
        if n == 0 { return 0 }
        let ok: Bool
        if meta.idBytes == 2 {
            let src = tokensRegion.pointer.assumingMemoryBound(to: UInt16.self) + a
            var hi: UInt16 = 0
            for j in 0 ..< n { let v = UInt16(littleEndian: src[j]); dst[j] = Int32(v); hi = max(hi, v) }
            ok = Int(hi) < vocabSize
        } else {
            let src = tokensRegion.pointer.assumingMemoryBound(to: Int32.self) + a
            var lo = Int32.max, hi = Int32.min
            for j in 0 ..< n { let v = Int32(littleEndian: src[j]); dst[j] = v; lo = min(lo, v); hi = max(hi, v) }
            ok = lo >= 0 && Int(hi) < vocabSize
        }
        if !ok {
            throw DataError.badCache(path: directory, reason: "sequence \(s) holds a token id outside [0, \(vocabSize)): tokens.bin changed after it was built; delete the directory to rebuild it")
        }
        // What this read may have mapped: a page fault on a file mapping maps more than its page (64 KiB of
        // "fault-around", or a whole large folio of the page cache, up to 2 MiB on x86-64 — seen on Linux 6.18), once
        // for the offsets and once for the ids, plus the ids themselves.
        noteRead(bytes: 2 * TokenCache.mappedPerFault + n * meta.idBytes)
        return n
    }

    /// All ids of sequence `s` (a copy; for inspection and tests).
    public func sequence(_ s: Int) throws -> [Int32] {
        let n = sequenceLength(s)
        return try [Int32](unsafeUninitializedCapacity: n) { buf, count in
            count = try copyIds(sequence: s, maxCount: n, into: buf.baseAddress!)
        }
    }

    /// The most one page fault of a file mapping maps (a PMD-sized folio).
    static let mappedPerFault = 2 << 20

    /// Once reads may have mapped 64 MiB, the mapped pages are dropped from this process (they stay in the page cache),
    /// so the resident size of a rank does not grow with the file over an epoch of random reads.
    private func noteRead(bytes: Int) {
        readLock.lock()
        bytesReadSinceRelease += bytes
        let release = bytesReadSinceRelease >= 64 << 20
        if release { bytesReadSinceRelease = 0 }
        readLock.unlock()
        if release { releaseResidentPages() }
    }

    /// Drops this process's mapped pages of `tokens.bin` and `index.bin` (`MADV_DONTNEED`; the file stays in the
    /// page cache and later reads fault pages back in). No-op for an in-memory cache.
    public func releaseResidentPages() {
        tokensRegion.releaseResidentPages()
        indexRegion.releaseResidentPages()
    }

    // MARK: - Location

    /// The cache directory for `dataPath` under `cacheRoot`: `<basename>-<kind>-<hash of the absolute path and key>`.
    public static func directory(for dataPath: String, key: TokenCacheKey, cacheRoot: String) -> String {
        let abs = URL(fileURLWithPath: dataPath).standardizedFileURL.path
        var h = FNV1a64(); h.add(abs); h.add("\u{0}v\(formatVersion)\u{0}"); h.add(key.canonical)
        // The file's name, cut to 96 UTF-8 bytes (at a character boundary) so that the directory's name and its
        // `.tmp-HOST-PID-N` / `.old-…` siblings stay under the 255-byte name limit; the hash tells files apart.
        var base = Substring((abs as NSString).lastPathComponent)
        while base.utf8.count > 96 { base = base.dropLast() }
        return (cacheRoot as NSString).appendingPathComponent("\(base)-\(key.kind.rawValue)-\(h.hex)")
    }

    /// Default cache root: `$SWIFTMIND_CACHE`, else `$XDG_CACHE_HOME/swiftmind/tokens`, else `~/.cache/swiftmind/tokens`.
    public static var defaultCacheRoot: String {
        let env = ProcessInfo.processInfo.environment
        if let c = env["SWIFTMIND_CACHE"], !c.isEmpty { return c }
        if let x = env["XDG_CACHE_HOME"], !x.isEmpty { return x + "/swiftmind/tokens" }
        return NSHomeDirectory() + "/.cache/swiftmind/tokens"
    }

    /// Bytes per id for a vocab: 2 when every id fits uint16, else 4.
    public static func idBytes(forVocabSize v: Int) -> Int { v <= 1 << 16 ? 2 : 4 }

    // MARK: - Open / build

    /// Opens the cache of `dataPath` if it is complete and matches the source file (size, mtime, sampled hash) and
    /// `key`; nil otherwise (missing, stale, another format version, or inconsistent sizes / offsets). Reads
    /// `meta.json` and checks `index.bin`; `tokens.bin` is mapped, not read.
    public static func openIfValid(dataPath: String, key: TokenCacheKey, cacheRoot: String) throws -> TokenCache? {
        let dir = directory(for: dataPath, key: key, cacheRoot: cacheRoot)
        guard let data = FileManager.default.contents(atPath: dir + "/meta.json"),
              let meta = try? JSONDecoder().decode(TokenCacheMeta.self, from: data) else { return nil }
        let src = try SourceIdentity.of(path: dataPath)
        guard meta.formatVersion == formatVersion, meta.source == src, meta.key == key,
              meta.idBytes == idBytes(forVocabSize: key.vocabSize) || meta.idBytes == 4 else { return nil }
        return try? TokenCache(directory: dir, meta: meta)
    }

    /// Opens the cache, (re)building it first when it is missing or stale. Returns the cache and whether it was built.
    public static func openOrBuild(dataPath: String, kind: TokenCacheKind = .pretrain, field: String = "text",
                                   tokenizer: Tokenizer, cacheRoot: String, threads: Int,
                                   progress: ((TokenCacheBuildProgress) throws -> Void)? = nil) throws -> (TokenCache, built: Bool) {
        let key = try TokenCacheKey(kind: kind, tokenizer: tokenizer, field: field)
        if let c = try openIfValid(dataPath: dataPath, key: key, cacheRoot: cacheRoot) { return (c, false) }
        return (try build(dataPath: dataPath, kind: kind, field: field, tokenizer: tokenizer, cacheRoot: cacheRoot,
                          threads: threads, progress: progress), true)
    }

    /// Tokenizes `dataPath` into a new cache directory, streaming (chunks of lines, each parsed, rendered and encoded
    /// on `threads` threads; memory bounded by the chunk size, not the file). Blank lines are skipped.
    /// - Parameter idBytes: 2 or 4 to force the id width (tests); nil = 2 when the vocab fits uint16.
    /// - Throws: `JSONLError` naming the file and line of the first bad line (`FILE:LINE: reason`),
    ///   `DataError.empty` for a file without samples, `TokenizerError.chatTemplate` for a template that cannot be rendered.
    public static func build(dataPath: String, kind: TokenCacheKind = .pretrain, field: String = "text", tokenizer: Tokenizer,
                             cacheRoot: String, threads: Int, idBytes forcedWidth: Int? = nil,
                             progress: ((TokenCacheBuildProgress) throws -> Void)? = nil) throws -> TokenCache {
        try build(dataPath: dataPath, kind: kind, field: field, tokenizer: tokenizer, cacheRoot: cacheRoot, threads: threads,
                  idBytes: forcedWidth, chunkBytes: 16 << 20, progress: progress)
    }

    /// `build` reading `chunkBytes` per chunk (tests use small chunks to cross chunk boundaries).
    static func build(dataPath: String, kind: TokenCacheKind, field: String, tokenizer: Tokenizer, cacheRoot: String,
                      threads: Int, idBytes forcedWidth: Int?, chunkBytes: Int,
                      progress: ((TokenCacheBuildProgress) throws -> Void)?) throws -> TokenCache {
        let fm = FileManager.default
        let key = try TokenCacheKey(kind: kind, tokenizer: tokenizer, field: field)
        let dir = directory(for: dataPath, key: key, cacheRoot: cacheRoot)
        /// `mkdir -p`, failing with the system's reason (e.g. "Not a directory", "Permission denied") for the
        /// component that could not be made.
        func makeDirectory(_ path: String) throws {
            var prefix = path.hasPrefix("/") ? "" : "."
            for part in path.split(separator: "/") {
                prefix += "/" + part
                if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                    throw DataError.badCache(path: path, reason: "token cache root (--cache-dir / $SWIFTMIND_CACHE): cannot create \(prefix): \(String(cString: strerror(errno)))")
                }
            }
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else {
                throw DataError.badCache(path: path, reason: "token cache root (--cache-dir / $SWIFTMIND_CACHE): not a directory")
            }
        }
        try makeDirectory(cacheRoot)
        removeAbandonedBuilds(in: cacheRoot)
        let before = try SourceIdentity.of(path: dataPath)
        let tmp = dir + ".tmp-" + buildTag()
        try? fm.removeItem(atPath: tmp)
        try makeDirectory(tmp)
        var committed = false
        defer { if !committed { try? fm.removeItem(atPath: tmp) } }

        let width = forcedWidth ?? idBytes(forVocabSize: tokenizer.vocabSize)
        let sink = try FileTokenSink(directory: tmp, idBytes: width, vocabSize: tokenizer.vocabSize)
        let stats: TokenCacheBuilder.Stats
        do {
            stats = try TokenCacheBuilder(kind: kind, field: field, tokenizer: tokenizer, threads: threads, chunkBytes: chunkBytes)
                .run(dataPath: dataPath, sourceSize: before.size, sink: sink, progress: progress)
        } catch let e as JSONLError where e.line != nil {
            // A file cut or rewritten under the build shows as a "bad line" that is fine in the original: say so.
            if let now = try? SourceIdentity.of(path: dataPath), now != before {
                throw DataError.badCache(path: dataPath, reason: "the file changed while it was being tokenized (then: \(e.reason) at line \(e.line!))")
            }
            throw e
        }
        try sink.finish()
        let after = try SourceIdentity.of(path: dataPath)
        guard before == after else {
            throw DataError.badCache(path: dataPath, reason: "the file changed while it was being tokenized")
        }
        let meta = TokenCacheMeta(formatVersion: formatVersion, sourcePath: URL(fileURLWithPath: dataPath).standardizedFileURL.path,
                                  source: before, key: key, idBytes: width, numSamples: stats.samples,
                                  numSequences: sink.sequences, numTokens: sink.tokens, maxSequenceLength: sink.longest)
        let enc = JSONEncoder(); enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try enc.encode(meta).write(to: URL(fileURLWithPath: tmp + "/meta.json"), options: .atomic)
        // Replace any stale cache: move it aside, then rename the complete temporary directory into place.
        if fm.fileExists(atPath: dir) {
            let old = dir + ".old-" + buildTag()
            try? fm.removeItem(atPath: old)
            try? fm.moveItem(atPath: dir, toPath: old)
            try? fm.removeItem(atPath: old)
        }
        if rename(tmp, dir) != 0 {
            let reason = String(cString: strerror(errno))
            // Another process finished the same cache first: use it when it is valid.
            if let other = try openIfValid(dataPath: dataPath, key: key, cacheRoot: cacheRoot) { return other }
            throw DataError.badCache(path: dir, reason: "rename failed: \(reason)")
        }
        committed = true
        return try TokenCache(directory: dir, meta: meta)
    }

    /// Tokenizes `dataPath` into a cache held in memory (the same parsing, rendering and reading code as a built
    /// cache; for small evaluation files). With `keepConversations`, also returns every sample's parsed turns
    /// (chat kinds: one list per sequence, DPO chosen then rejected).
    public static func load(dataPath: String, kind: TokenCacheKind, field: String = "text", tokenizer: Tokenizer, threads: Int,
                            keepConversations: Bool = false) throws -> (cache: TokenCache, conversations: [[ChatMessage]]) {
        let key = try TokenCacheKey(kind: kind, tokenizer: tokenizer, field: field)
        let src = try SourceIdentity.of(path: dataPath)
        let width = idBytes(forVocabSize: tokenizer.vocabSize)
        let sink = MemoryTokenSink(idBytes: width, vocabSize: tokenizer.vocabSize, keepConversations: keepConversations)
        let stats = try TokenCacheBuilder(kind: kind, field: field, tokenizer: tokenizer, threads: threads)
            .run(dataPath: dataPath, sourceSize: src.size, sink: sink, progress: nil)
        let meta = TokenCacheMeta(formatVersion: formatVersion, sourcePath: URL(fileURLWithPath: dataPath).standardizedFileURL.path,
                                  source: src, key: key, idBytes: width, numSamples: stats.samples,
                                  numSequences: sink.sequences, numTokens: sink.tokens, maxSequenceLength: sink.longest)
        let cache = try TokenCache(directory: "<memory: \(dataPath)>", meta: meta,
                                   tokens: ByteRegion(copying: sink.tokenBytes), index: ByteRegion(copying: sink.offsetBytes))
        return (cache, sink.conversations)
    }

    /// Opens a complete cache directory (checking sizes and offsets against `meta`).
    convenience init(directory: String, meta: TokenCacheMeta) throws {
        try TokenCache.checkCounts(meta, directory)
        let tokens = try ByteRegion(mapping: directory + "/tokens.bin")
        let index = try ByteRegion(mapping: directory + "/index.bin")
        try self.init(directory: directory, meta: meta, tokens: tokens, index: index)
    }

    private init(directory: String, meta: TokenCacheMeta, tokens: ByteRegion, index: ByteRegion) throws {
        try TokenCache.checkCounts(meta, directory)
        self.directory = directory
        self.meta = meta
        tokensRegion = tokens
        indexRegion = index
        offsets = index.pointer.assumingMemoryBound(to: UInt64.self)
        guard index.count == (meta.numSequences + 1) * 8, tokens.count == meta.numTokens * meta.idBytes else {
            throw DataError.badCache(path: directory, reason: "file sizes do not match meta.json")
        }
        // Offsets: start at 0, never decrease, end at numTokens (so every sequence lies inside tokens.bin).
        var prev: UInt64 = 0
        for i in 0 ... meta.numSequences {
            let o = UInt64(littleEndian: offsets[i])
            if (i == 0 && o != 0) || o < prev || o > UInt64(meta.numTokens) {
                throw DataError.badCache(path: directory, reason: "index.bin offset \(i) = \(o) is not increasing within [0, \(meta.numTokens)]")
            }
            prev = o
        }
        if prev != UInt64(meta.numTokens) {
            throw DataError.badCache(path: directory, reason: "index.bin ends at \(prev), tokens.bin holds \(meta.numTokens)") }
        index.releaseResidentPages()
    }

    private static func checkCounts(_ meta: TokenCacheMeta, _ directory: String) throws {
        guard meta.idBytes == 2 || meta.idBytes == 4, meta.numSamples >= 0, meta.numSamples < Int.max / 32,
              meta.numSequences == meta.numSamples * meta.key.kind.sequencesPerSample,
              meta.numTokens >= 0, meta.numTokens < Int.max / 8 else {
            throw DataError.badCache(path: directory, reason: "meta.json counts out of range") }
    }

    // MARK: - Temporary directories

    /// `HOST-PID-RANDOM`: the suffix of a build's temporary directory, naming the process that owns it.
    static func buildTag() -> String { "\(hostName())-\(getpid())-\(UInt32.random(in: 0 ... .max))" }

    static func hostName() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        guard gethostname(&buf, buf.count - 1) == 0 else { return "host" }
        let s = String(cString: buf)
        return s.isEmpty ? "host" : s.replacingOccurrences(of: "/", with: "_")
    }

    /// Removes `*.tmp-HOST-PID-*` / `*.old-HOST-PID-*` directories under `root` left by builds on this host whose
    /// process no longer exists (a build killed with SIGKILL cannot clean up after itself). Directories of live
    /// processes, of other hosts (a shared filesystem) and unrecognised names are left alone.
    public static func removeAbandonedBuilds(in root: String) {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: root) else { return }
        let host = hostName()
        for name in names {
            guard let pid = abandonedBuildPid(name, host: host) else { continue }
            if kill(pid, 0) == 0 || errno == EPERM { continue }   // the builder is still running
            try? fm.removeItem(atPath: (root as NSString).appendingPathComponent(name))
        }
    }

    /// The pid in a temporary directory name of `host`, nil for any other name.
    static func abandonedBuildPid(_ name: String, host: String) -> pid_t? {
        for marker in [".tmp-", ".old-"] {
            guard let r = name.range(of: marker, options: .backwards) else { continue }
            let parts = name[r.upperBound...].split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count >= 3, parts.dropLast(2).joined(separator: "-") == host,
                  let pid = pid_t(parts[parts.count - 2]), pid > 0, UInt32(parts[parts.count - 1]) != nil else { continue }
            return pid
        }
        return nil
    }
}

/// Progress of a cache build, reported after every chunk.
public struct TokenCacheBuildProgress: Sendable {
    public var samples: Int
    public var bytesRead: UInt64
    public var totalBytes: UInt64
    public var seconds: Double
}

/// A read-only view of bytes: a whole file mapped (`mmap`, `MAP_SHARED`), or an owned in-memory copy.
final class ByteRegion {
    let pointer: UnsafeRawPointer
    let count: Int
    private let mapped: Bool
    private let owned: UnsafeMutableRawPointer?

    init(mapping path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw DataError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw DataError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        count = Int(st.st_size)
        if count == 0 {
            let p = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
            pointer = UnsafeRawPointer(p); owned = p; mapped = false; return
        }
        guard let p = mmap(nil, count, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw DataError.cannotOpen(path: path, reason: "mmap: \(String(cString: strerror(errno)))")
        }
        pointer = UnsafeRawPointer(p)
        mapped = true
        owned = nil
    }

    init(copying bytes: [UInt8]) {
        let p = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 8), alignment: 8)
        bytes.withUnsafeBytes { if let b = $0.baseAddress { p.copyMemory(from: b, byteCount: bytes.count) } }
        pointer = UnsafeRawPointer(p); owned = p; count = bytes.count; mapped = false
    }

    /// `MADV_DONTNEED` over a mapping: the process's pages go, the file's page cache stays.
    func releaseResidentPages() {
        if mapped { _ = madvise(UnsafeMutableRawPointer(mutating: pointer), count, Int32(MADV_DONTNEED)) }
    }

    deinit {
        if mapped { munmap(UnsafeMutableRawPointer(mutating: pointer), count) }
        owned?.deallocate()
    }
}
