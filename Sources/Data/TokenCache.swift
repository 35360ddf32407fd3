// On-disk token cache for a pretrain jsonl: a flat int32 token file plus an offset index, memory-mapped for reading.
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

/// `meta.json` of a cache directory; written last, so its presence marks a complete cache.
public struct TokenCacheMeta: Codable, Equatable, Sendable {
    public var formatVersion: Int
    public var sourcePath: String
    public var source: SourceIdentity
    public var tokenizerFingerprint: String
    public var field: String
    public var numSamples: Int
    public var numTokens: Int
}

/// The tokenized form of one jsonl file: sample `i` is `tokens[offsets[i] ..< offsets[i+1]]`, encoded without special
/// tokens (MiniMind's `PretrainDataset`: `tokenizer(text)` with a tokenizer that adds none).
///
/// Layout of a cache directory: `tokens.bin` (int32 LE), `index.bin` (`numSamples+1` uint64 LE offsets), `meta.json`.
/// It is built under a temporary name and renamed into place, so readers never see a half-written cache.
public final class TokenCache: @unchecked Sendable {
    public static let formatVersion = 1
    public let directory: String
    public let meta: TokenCacheMeta
    private let tokensMap: MappedFile
    private let indexMap: MappedFile

    public var count: Int { meta.numSamples }
    public var numTokens: Int { meta.numTokens }
    /// The tokens of sample `i` (valid while the cache lives).
    public func tokens(_ i: Int) -> UnsafeBufferPointer<Int32> {
        precondition(i >= 0 && i < meta.numSamples, "sample \(i) out of range 0..<\(meta.numSamples)")
        let off = indexMap.pointer.assumingMemoryBound(to: UInt64.self)
        let a = Int(UInt64(littleEndian: off[i])), b = Int(UInt64(littleEndian: off[i + 1]))
        let base = tokensMap.pointer.assumingMemoryBound(to: Int32.self)
        return UnsafeBufferPointer(start: base + a, count: b - a)
    }

    /// The cache directory for `dataPath` + tokenizer under `cacheRoot`: `<basename>-<hash of absolute path, field, fingerprint>`.
    public static func directory(for dataPath: String, field: String = "text", tokenizerFingerprint: String, cacheRoot: String) -> String {
        let abs = URL(fileURLWithPath: dataPath).standardizedFileURL.path
        var h = FNV1a64(); h.add(abs); h.add("\u{0}" + field + "\u{0}"); h.add(tokenizerFingerprint)
        let base = (abs as NSString).lastPathComponent
        return (cacheRoot as NSString).appendingPathComponent("\(base)-\(h.hex)")
    }

    /// Default cache root: `$SWIFTMIND_CACHE`, else `$XDG_CACHE_HOME/swiftmind/tokens`, else `~/.cache/swiftmind/tokens`.
    public static var defaultCacheRoot: String {
        let env = ProcessInfo.processInfo.environment
        if let c = env["SWIFTMIND_CACHE"], !c.isEmpty { return c }
        if let x = env["XDG_CACHE_HOME"], !x.isEmpty { return x + "/swiftmind/tokens" }
        return NSHomeDirectory() + "/.cache/swiftmind/tokens"
    }

    /// Opens an existing cache if it is complete and matches the current source file and tokenizer; nil otherwise.
    /// An inconsistent cache (sizes, offsets not increasing or outside `tokens.bin`, with `vocabSize` ids outside
    /// [0, vocabSize)) is treated as stale: nil, so `openOrBuild` rebuilds it.
    public static func openIfValid(dataPath: String, field: String = "text", tokenizerFingerprint: String,
                                   cacheRoot: String, vocabSize: Int? = nil) throws -> TokenCache? {
        let dir = directory(for: dataPath, field: field, tokenizerFingerprint: tokenizerFingerprint, cacheRoot: cacheRoot)
        let metaPath = dir + "/meta.json"
        guard let data = FileManager.default.contents(atPath: metaPath),
              let meta = try? JSONDecoder().decode(TokenCacheMeta.self, from: data) else { return nil }
        let src = try SourceIdentity.of(path: dataPath)
        guard meta.formatVersion == formatVersion, meta.source == src, meta.tokenizerFingerprint == tokenizerFingerprint,
              meta.field == field else { return nil }
        guard let cache = try? TokenCache(directory: dir, meta: meta) else { return nil }
        if let v = vocabSize, cache.firstIdOutside(0 ..< v) != nil { return nil }
        return cache
    }

    /// Index of the first token id outside `range`, nil if all are inside (one linear pass over `tokens.bin`).
    func firstIdOutside(_ range: Range<Int>) -> Int? {
        let lo = Int32(clamping: range.lowerBound), hi = Int32(clamping: range.upperBound)
        let ids = UnsafeBufferPointer(start: tokensMap.pointer.assumingMemoryBound(to: Int32.self), count: meta.numTokens)
        for i in 0 ..< ids.count {
            let v = Int32(littleEndian: ids[i])
            if v < lo || v >= hi { return i }
        }
        return nil
    }

    /// Opens the cache, (re)building it first when it is missing or stale. Returns the cache and whether it was built.
    public static func openOrBuild(dataPath: String, field: String = "text", tokenizer: Tokenizer, cacheRoot: String,
                                   threads: Int, progress: ((Int, UInt64) -> Void)? = nil) throws -> (TokenCache, built: Bool) {
        if let c = try openIfValid(dataPath: dataPath, field: field, tokenizerFingerprint: tokenizer.fingerprint, cacheRoot: cacheRoot,
                                   vocabSize: tokenizer.vocabSize) {
            return (c, false)
        }
        return (try build(dataPath: dataPath, field: field, tokenizer: tokenizer, cacheRoot: cacheRoot,
                          threads: threads, progress: progress), true)
    }

    /// Tokenizes `dataPath` streaming (chunks of lines, parsed and encoded on `threads` threads) into a new cache.
    /// Throws `DataError.malformedLine` / `.missingField` naming the file and line of the first bad line.
    /// `progress(samples, bytesRead)` is called after every chunk.
    public static func build(dataPath: String, field: String = "text", tokenizer: Tokenizer, cacheRoot: String,
                             threads: Int, progress: ((Int, UInt64) -> Void)? = nil) throws -> TokenCache {
        let fm = FileManager.default
        let dir = directory(for: dataPath, field: field, tokenizerFingerprint: tokenizer.fingerprint, cacheRoot: cacheRoot)
        try fm.createDirectory(atPath: cacheRoot, withIntermediateDirectories: true)
        let before = try SourceIdentity.of(path: dataPath)
        let tmp = dir + ".tmp-\(getpid())-\(UInt32.random(in: 0 ... .max))"
        try? fm.removeItem(atPath: tmp)
        try fm.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        var committed = false
        defer { if !committed { try? fm.removeItem(atPath: tmp) } }

        _ = fm.createFile(atPath: tmp + "/tokens.bin", contents: nil)
        _ = fm.createFile(atPath: tmp + "/index.bin", contents: nil)
        let tokOut = try FileHandle(forWritingTo: URL(fileURLWithPath: tmp + "/tokens.bin"))
        let idxOut = try FileHandle(forWritingTo: URL(fileURLWithPath: tmp + "/index.bin"))
        var reader = try JSONLChunkReader(path: dataPath, chunkBytes: 16 << 20)
        var total: UInt64 = 0
        var samples = 0
        var bytesRead: UInt64 = 0
        var offsets: [UInt64] = [0]
        while let lines = try reader.nextLines() {
            for l in lines { bytesRead += UInt64(l.bytes.count + 1) }
            let texts = try JSONLChunkReader.texts(of: lines, field: field, path: dataPath, threads: threads)
            let encoded = tokenizer.encode(batch: texts, threads: threads)
            var flat: [Int32] = []
            flat.reserveCapacity(encoded.reduce(0) { $0 + $1.count })
            offsets.removeAll(keepingCapacity: true)
            for ids in encoded {
                flat.append(contentsOf: ids.map { $0.littleEndian })
                total += UInt64(ids.count)
                offsets.append(total.littleEndian)
            }
            if samples == 0 { try idxOut.write(contentsOf: withUnsafeBytes(of: UInt64(0)) { Data($0) }) }
            try flat.withUnsafeBytes { try tokOut.write(contentsOf: Data($0)) }
            try offsets.withUnsafeBytes { try idxOut.write(contentsOf: Data($0)) }
            samples += encoded.count
            progress?(samples, bytesRead)
        }
        try tokOut.synchronize(); try tokOut.close()
        try idxOut.synchronize(); try idxOut.close()
        if samples == 0 { throw DataError.empty(path: dataPath) }
        let after = try SourceIdentity.of(path: dataPath)
        guard before == after else {
            throw DataError.badCache(path: dataPath, reason: "the file changed while it was being tokenized")
        }
        let meta = TokenCacheMeta(formatVersion: formatVersion, sourcePath: URL(fileURLWithPath: dataPath).standardizedFileURL.path,
                                  source: before, tokenizerFingerprint: tokenizer.fingerprint, field: field,
                                  numSamples: samples, numTokens: Int(total))
        let enc = JSONEncoder(); enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try enc.encode(meta).write(to: URL(fileURLWithPath: tmp + "/meta.json"), options: .atomic)
        // Replace any stale cache: remove it, then rename the complete temporary directory into place.
        if fm.fileExists(atPath: dir) {
            let old = dir + ".old-\(getpid())"
            try? fm.removeItem(atPath: old)
            try fm.moveItem(atPath: dir, toPath: old)
            try? fm.removeItem(atPath: old)
        }
        guard rename(tmp, dir) == 0 else {
            throw DataError.badCache(path: dir, reason: "rename failed: \(String(cString: strerror(errno)))")
        }
        committed = true
        return try TokenCache(directory: dir, meta: meta)
    }

    init(directory: String, meta: TokenCacheMeta) throws {
        self.directory = directory
        self.meta = meta
        guard meta.numSamples >= 0, meta.numSamples < Int.max / 16, meta.numTokens >= 0, meta.numTokens < Int.max / 8 else {
            throw DataError.badCache(path: directory, reason: "meta.json counts out of range") }
        tokensMap = try MappedFile(path: directory + "/tokens.bin")
        indexMap = try MappedFile(path: directory + "/index.bin")
        guard indexMap.count == (meta.numSamples + 1) * 8, tokensMap.count == meta.numTokens * 4 else {
            throw DataError.badCache(path: directory, reason: "file sizes do not match meta.json")
        }
        // Offsets: start at 0, never decrease, end at numTokens (so every sample lies inside tokens.bin).
        let off = UnsafeBufferPointer(start: indexMap.pointer.assumingMemoryBound(to: UInt64.self), count: meta.numSamples + 1)
        var prev: UInt64 = 0
        for i in 0 ..< off.count {
            let o = UInt64(littleEndian: off[i])
            if (i == 0 && o != 0) || o < prev || o > UInt64(meta.numTokens) {
                throw DataError.badCache(path: directory, reason: "index.bin offset \(i) = \(o) is not increasing within [0, \(meta.numTokens)]")
            }
            prev = o
        }
        if prev != UInt64(meta.numTokens) {
            throw DataError.badCache(path: directory, reason: "index.bin ends at \(prev), tokens.bin holds \(meta.numTokens)") }
    }
}

/// A read-only memory mapping of a whole file (an empty file maps to a dummy pointer).
final class MappedFile {
    let pointer: UnsafeRawPointer
    let count: Int
    private let mapped: Bool
    private static let dummy = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)

    init(path: String) throws {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw DataError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw DataError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        count = Int(st.st_size)
        if count == 0 { pointer = UnsafeRawPointer(MappedFile.dummy); mapped = false; return }
        guard let p = mmap(nil, count, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw DataError.cannotOpen(path: path, reason: "mmap: \(String(cString: strerror(errno)))")
        }
        pointer = UnsafeRawPointer(p)
        mapped = true
    }
    deinit { if mapped { munmap(UnsafeMutableRawPointer(mutating: pointer), count) } }
}
