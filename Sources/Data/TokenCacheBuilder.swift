// Building a token cache: the jsonl streamed in chunks, every line parsed, rendered (chat kinds) and encoded on all
// threads, the ids appended to a sink (the cache files, or memory for small evaluation files).
import Foundation
import Tokenizers
#if canImport(Glibc)
import Glibc
#endif

/// Streams a jsonl file through the parse → render → encode pipeline of one cache kind.
struct TokenCacheBuilder {
    let kind: TokenCacheKind
    let field: String
    let tokenizer: Tokenizer
    let threads: Int
    /// Bytes read per chunk: memory use is a few times this, whatever the file size.
    var chunkBytes = 16 << 20

    struct Stats { var samples: Int }

    /// Feeds every non-blank line of `dataPath` to `sink` in file order; reports progress after every chunk;
    /// an error thrown by `progress` stops the build there and is rethrown (the caller discards the partial cache).
    /// - Throws: the error of the first bad line in file order (`JSONLError`, `FILE:LINE: reason`), `DataError.empty`
    ///   when the file holds no sample, or what the sink throws.
    func run(dataPath: String, sourceSize: UInt64, sink: TokenSink,
             progress: ((TokenCacheBuildProgress) throws -> Void)?) throws -> Stats {
        let reader = try JSONLReader(path: dataPath, chunkBytes: chunkBytes)
        let t0 = Date()
        var samples = 0
        let keep = sink.keepsConversations
        let k = kind.sequencesPerSample
        while let lines = try reader.nextLines() {
            let n = lines.count
            // Parse and render on all threads (texts of line i at i·k ..< (i+1)·k), then encode them on all threads
            // (`encode(batch:)` keeps one BPE worker and its word cache per thread for the whole chunk).
            var texts = [String](repeating: "", count: n * k)
            var turns = [[ChatMessage]](repeating: [], count: keep ? n * k : 0)
            var errors = [Error?](repeating: nil, count: n)
            let workers = max(1, min(threads, n))
            texts.withUnsafeMutableBufferPointer { textP in
                turns.withUnsafeMutableBufferPointer { turnP in
                    errors.withUnsafeMutableBufferPointer { errP in
                        let out = textP, convs = turnP, errs = errP
                        DispatchQueue.concurrentPerform(iterations: workers) { w in
                            var i = w
                            while i < n {
                                do {
                                    let (t, c) = try parse(lines[i], path: dataPath)
                                    for j in 0 ..< k { out[i * k + j] = t[j] }
                                    if keep { for j in 0 ..< k { convs[i * k + j] = c[j] } }
                                } catch { errs[i] = error }
                                i += workers
                            }
                        }
                    }
                }
            }
            if let e = errors.first(where: { $0 != nil }) { throw e! }
            let sequences = tokenizer.encode(batch: texts, threads: threads)
            texts = []
            try sink.append(sequences, conversations: keep ? turns : nil, path: dataPath)
            samples += n
            try progress?(TokenCacheBuildProgress(samples: samples, bytesRead: reader.bytesRead, totalBytes: sourceSize,
                                              seconds: Date().timeIntervalSince(t0)))
        }
        if samples == 0 { throw DataError.empty(path: dataPath) }
        return Stats(samples: samples)
    }

    /// The texts to encode of one line (one per sequence) and, for the chat kinds, their turns.
    func parse(_ line: JSONLLine, path: String) throws -> (texts: [String], turns: [[ChatMessage]]) {
        switch kind {
        case .pretrain:
            return ([try JSONLReader.string(field: field, of: line, path: path)], [])
        case .sft:
            let obj = try JSONLReader.object(of: line, path: path)
            let c = try parseConversation(obj["conversations"], path: path, line: line.number, field: "conversations", rolesByParity: true)
            return ([try tokenizer.applyChatTemplate(c, addGenerationPrompt: false)], [c])
        case .dpo:
            let obj = try JSONLReader.object(of: line, path: path)
            let c = try parseConversation(obj["chosen"], path: path, line: line.number, field: "chosen", rolesByParity: false)
            let r = try parseConversation(obj["rejected"], path: path, line: line.number, field: "rejected", rolesByParity: false)
            try tokenizer.checkRolesRendered(c, path: path, line: line.number, field: "chosen")
            try tokenizer.checkRolesRendered(r, path: path, line: line.number, field: "rejected")
            return ([try tokenizer.applyChatTemplate(c, addGenerationPrompt: false),
                     try tokenizer.applyChatTemplate(r, addGenerationPrompt: false)], [c, r])
        }
    }
}

/// Receives the encoded sequences of each chunk in file order and stores them as `idBytes`-wide ids plus uint64
/// offsets, checking every id against the vocab (the one validation of a cache's ids).
class TokenSink {
    let idBytes: Int
    let vocabSize: Int
    private(set) var sequences = 0
    private(set) var tokens = 0
    private(set) var longest = 0
    var keepsConversations: Bool { false }

    init(idBytes: Int, vocabSize: Int) {
        precondition(idBytes == 2 || idBytes == 4, "token ids are stored as 2 or 4 bytes")
        precondition(idBytes == 4 || vocabSize <= 1 << 16, "a vocab of \(vocabSize) ids does not fit uint16")
        self.idBytes = idBytes
        self.vocabSize = vocabSize
    }

    /// Appends the sequences of one chunk, in order (and, when kept, each sequence's turns).
    func append(_ seqs: [[Int32]], conversations: [[ChatMessage]]?, path: String) throws {
        var total = 0
        for s in seqs { total += s.count }
        var offsetBuf = [UInt64](repeating: 0, count: seqs.count)
        var tokenBuf = [UInt8](repeating: 0, count: total * idBytes)
        var lo: Int32 = 0, hi: Int32 = 0
        tokenBuf.withUnsafeMutableBytes { raw in
            var at = 0
            for (k, s) in seqs.enumerated() {
                s.withUnsafeBufferPointer { src in
                    if idBytes == 2 {
                        let dst = raw.baseAddress!.assumingMemoryBound(to: UInt16.self) + at
                        for j in 0 ..< src.count {
                            let v = src[j]; lo = min(lo, v); hi = max(hi, v)
                            dst[j] = UInt16(truncatingIfNeeded: v).littleEndian
                        }
                    } else {
                        let dst = raw.baseAddress!.assumingMemoryBound(to: Int32.self) + at
                        for j in 0 ..< src.count {
                            let v = src[j]; lo = min(lo, v); hi = max(hi, v)
                            dst[j] = v.littleEndian
                        }
                    }
                }
                at += s.count
                longest = max(longest, s.count)
                offsetBuf[k] = UInt64(tokens + at).littleEndian
            }
        }
        if lo < 0 || Int(hi) >= vocabSize {
            throw DataError.badCache(path: path, reason: "the tokenizer produced id \(lo < 0 ? lo : hi) outside [0, \(vocabSize))")
        }
        try tokenBuf.withUnsafeBytes { t in try offsetBuf.withUnsafeBytes { o in try write(tokens: t, offsets: o) } }
        if let c = conversations { appendConversations(c) }
        tokens += total
        sequences += seqs.count
    }

    func write(tokens: UnsafeRawBufferPointer, offsets: UnsafeRawBufferPointer) throws { fatalError("abstract") }
    func appendConversations(_ seqs: [[ChatMessage]]) {}
}

/// Writes `tokens.bin` and `index.bin` of a cache directory being built.
final class FileTokenSink: TokenSink {
    private var tokensFD: Int32 = -1, indexFD: Int32 = -1
    private let directory: String

    init(directory: String, idBytes: Int, vocabSize: Int) throws {
        self.directory = directory
        super.init(idBytes: idBytes, vocabSize: vocabSize)
        tokensFD = try FileTokenSink.create(directory + "/tokens.bin")
        indexFD = try FileTokenSink.create(directory + "/index.bin")
        var zero: UInt64 = 0
        try withUnsafeBytes(of: &zero) { try FileTokenSink.writeAll(indexFD, $0, directory + "/index.bin") }
    }

    static func create(_ path: String) throws -> Int32 {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw DataError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        return fd
    }

    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, _ path: String) throws {
        var off = 0
        while off < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + off, bytes.count - off)
            if n < 0 {
                if errno == EINTR { continue }
                throw DataError.badCache(path: path, reason: "write: \(String(cString: strerror(errno)))")
            }
            off += n
        }
    }

    override func write(tokens: UnsafeRawBufferPointer, offsets: UnsafeRawBufferPointer) throws {
        if tokens.count > 0 { try FileTokenSink.writeAll(tokensFD, tokens, directory + "/tokens.bin") }
        if offsets.count > 0 { try FileTokenSink.writeAll(indexFD, offsets, directory + "/index.bin") }
    }

    /// Flushes both files to disk and closes them (before meta.json is written and the directory renamed).
    func finish() throws {
        for (fd, name) in [(tokensFD, "tokens.bin"), (indexFD, "index.bin")] {
            if fsync(fd) != 0 { throw DataError.badCache(path: directory + "/" + name, reason: "fsync: \(String(cString: strerror(errno)))") }
            close(fd)
        }
        tokensFD = -1; indexFD = -1
    }

    deinit {
        if tokensFD >= 0 { close(tokensFD) }
        if indexFD >= 0 { close(indexFD) }
    }
}

/// Keeps the bytes of a cache in memory (and, when asked, every sequence's turns).
final class MemoryTokenSink: TokenSink {
    private(set) var tokenBytes: [UInt8] = []
    private(set) var offsetBytes: [UInt8] = [UInt8](repeating: 0, count: 8)
    private(set) var conversations: [[ChatMessage]] = []
    private let keep: Bool
    override var keepsConversations: Bool { keep }

    init(idBytes: Int, vocabSize: Int, keepConversations: Bool) {
        keep = keepConversations
        super.init(idBytes: idBytes, vocabSize: vocabSize)
    }

    override func write(tokens: UnsafeRawBufferPointer, offsets: UnsafeRawBufferPointer) throws {
        tokenBytes.append(contentsOf: tokens)
        offsetBytes.append(contentsOf: offsets)
    }

    override func appendConversations(_ seqs: [[ChatMessage]]) {
        conversations.append(contentsOf: seqs)
    }
}
