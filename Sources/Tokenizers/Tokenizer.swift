import Foundation

/// One chat turn, as in MiniMind's `{"role", "content"}` conversations.
public struct ChatMessage: Codable, Equatable, Sendable {
    public var role: String
    public var content: String
    public init(role: String, content: String) { self.role = role; self.content = content }
}

/// A Hugging Face byte-level BPE tokenizer (`tokenizer.json` + `tokenizer_config.json`).
///
/// Encoding reproduces Hugging Face `tokenizers` 0.23 with `add_special_tokens=False`: added tokens are matched
/// as whole strings first (leftmost-longest), the text between them is split with the GPT-2 byte-level pattern
/// (see `PreTokenizer`), each piece's bytes are mapped to the byte-level alphabet and merged by rank.
/// Decoding maps ids back to bytes and replaces ill-formed UTF-8 as Rust's `from_utf8_lossy` does.
/// All methods are thread-safe.
public final class Tokenizer: @unchecked Sendable {
    let model: BPEModel
    let specialMatcher: AddedMatcher      // added tokens with normalized = false (matched on the raw text)
    let normalizedMatcher: AddedMatcher   // added tokens with normalized = true (no normalizer: same text)
    /// Decoded bytes of every id (empty for ids no token has), flattened.
    let idByteStart: [Int32]
    let idByteArena: [UInt8]
    let idExists: [Bool]
    let idIsSpecial: [Bool]
    /// id → token string (byte-level symbols for model tokens, content for added tokens).
    let idToToken: [String?]
    let tokenIds: [String: Int32]
    /// The added tokens, in file order.
    public let addedTokens: [AddedToken]
    /// Number of ids (model vocab + added tokens) = 1 + the largest id.
    public let vocabSize: Int
    /// Special ids from tokenizer_config.json (MiniMind: pad 0 `<|endoftext|>`, bos 1 `<|im_start|>`, eos 2
    /// `<|im_end|>`). Without a config, MiniMind's conventions are used when those tokens exist, else -1.
    public let padTokenId: Int32
    public let bosTokenId: Int32
    public let eosTokenId: Int32
    public let unkTokenId: Int32
    /// A stable hash (128-bit hex) of the loaded files, for cache invalidation.
    public private(set) var fingerprint: String
    /// The raw chat template (chat_template.jinja, else tokenizer_config.json's `chat_template`), when there is one.
    public private(set) var chatTemplateSource: String?
    private(set) var chatTemplate: ChatTemplate
    /// tokenizer.json's `post_processor` (nil: none), applied by `encode(_:addSpecialTokens:)`.
    let postProcessor: PostProcessor?
    let fileName: String

    private let poolLock = NSLock()
    private var pool: [EncodeWorker] = []

    /// Loads `tokenizer.json` (a file, or a directory holding it) and, from the same directory when present,
    /// `tokenizer_config.json` and `chat_template.jinja` (which, as in transformers, takes priority over the config's
    /// `chat_template`).
    /// - Throws: `TokenizerError` naming the file and JSON path of any unreadable, malformed or unsupported field.
    public static func load(_ path: String) throws -> Tokenizer {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw TokenizerError.unreadable(path: path, reason: "no such file or directory")
        }
        let file = isDir.boolValue ? (path as NSString).appendingPathComponent("tokenizer.json") : path
        let dir = (file as NSString).deletingLastPathComponent
        let configFile = (dir.isEmpty ? "." : dir as NSString).appendingPathComponent("tokenizer_config.json")
        let jinjaFile = (dir.isEmpty ? "." : dir as NSString).appendingPathComponent("chat_template.jinja")
        let data = try readFile(file)
        let config: Data? = FileManager.default.fileExists(atPath: configFile) ? try readFile(configFile) : nil
        let jinja: Data? = FileManager.default.fileExists(atPath: jinjaFile) ? try readFile(jinjaFile) : nil
        return try Tokenizer(tokenizerJSON: data, config: config, fileName: file, configName: configFile,
                             chatTemplateJinja: jinja, chatTemplateName: jinjaFile)
    }

    static func readFile(_ path: String) throws -> Data {
        do { return try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw TokenizerError.unreadable(path: path, reason: (error as NSError).localizedDescription)
        }
    }

    /// Builds a tokenizer from the contents of `tokenizer.json` and (optionally) `tokenizer_config.json` and
    /// `chat_template.jinja` (`configName` / `chatTemplateName` name them in errors).
    public convenience init(tokenizerJSON: Data, config: Data?, fileName: String = "tokenizer.json",
                            configName: String = "tokenizer_config.json", chatTemplateJinja: Data? = nil,
                            chatTemplateName: String = "chat_template.jinja") throws {
        let parsed = try TokenizerFile.parse(tokenizerJSON, file: fileName)
        let cfg = try config.map { try TokenizerConfig.parse($0, file: configName) }
        var template = ChatTemplate(source: cfg?.chatTemplate, origin: cfg == nil ? nil : configName, problem: cfg?.chatTemplateProblem)
        var source = cfg?.chatTemplate
        if let j = chatTemplateJinja {
            guard let text = String(data: j, encoding: .utf8) else {
                throw TokenizerError.unreadable(path: chatTemplateName, reason: "not valid UTF-8") }
            template = ChatTemplate(source: text, origin: chatTemplateName)
            source = text
        }
        var parts = [tokenizerJSON, config ?? Data()]
        if let j = chatTemplateJinja { parts.append(j) }
        try self.init(parsed: parsed, config: cfg, fingerprint: Tokenizer.hash(parts), fileName: fileName,
                      chatTemplate: template, chatTemplateSource: source)
    }

    init(parsed: TokenizerFile, config: TokenizerConfig?, fingerprint: String, fileName: String = "tokenizer.json",
         chatTemplate template: ChatTemplate? = nil, chatTemplateSource source: String? = nil) throws {
        var maxId: Int32 = -1
        for (_, id) in parsed.vocab { maxId = max(maxId, id) }
        for t in parsed.added { maxId = max(maxId, t.id) }
        let n = Int(maxId) + 1
        vocabSize = n
        var toToken = [String?](repeating: nil, count: n)
        var special = [Bool](repeating: false, count: n)
        for (tok, id) in parsed.vocab { toToken[Int(id)] = tok }
        var ids = parsed.vocab
        for t in parsed.added {
            toToken[Int(t.id)] = t.content
            special[Int(t.id)] = t.special
            ids[t.content] = t.id
        }
        idToToken = toToken
        idIsSpecial = special
        tokenIds = ids
        var starts = [Int32](repeating: 0, count: n + 1)
        var arena: [UInt8] = []
        var exists = [Bool](repeating: false, count: n)
        for i in 0..<n {
            starts[i] = Int32(arena.count)
            if let t = toToken[i] { exists[i] = true; arena.append(contentsOf: ByteLevel.decodedBytes(ofToken: t)) }
        }
        starts[n] = Int32(arena.count)
        idByteStart = starts
        idByteArena = arena
        idExists = exists
        addedTokens = parsed.added
        specialMatcher = AddedMatcher(parsed.added.filter { !$0.normalized })
        normalizedMatcher = AddedMatcher(parsed.added.filter { $0.normalized })

        var byteToId = [Int32](repeating: -1, count: 256)
        for b in 0..<256 { if let id = parsed.vocab[ByteLevel.byteStrings[b]] { byteToId[b] = id } }
        var merges = MergeTable(capacity: parsed.merges.count)
        for (rank, m) in parsed.merges.enumerated() {
            merges.set(m.a, m.b, rank: UInt32(rank), newId: m.result)
        }
        var whole: [[UInt8]: Int32]? = nil
        if parsed.ignoreMerges {
            var w: [[UInt8]: Int32] = [:]
            for (tok, id) in parsed.vocab { if let b = ByteLevel.decode(tok) { w[b] = id } }
            whole = w
        }
        let unk = parsed.unkToken.flatMap { parsed.vocab[$0] }
        model = BPEModel(byteToId: byteToId, merges: merges, unkId: unk, fuseUnk: parsed.fuseUnk, wholeWordIds: whole)

        func idOf(_ s: String?, _ fallback: String) -> Int32 {
            if let s = s { return ids[s] ?? -1 }
            return config == nil ? (ids[fallback] ?? -1) : -1
        }
        padTokenId = idOf(config?.padToken, "<|endoftext|>")
        bosTokenId = idOf(config?.bosToken, "<|im_start|>")
        eosTokenId = idOf(config?.eosToken, "<|im_end|>")
        unkTokenId = idOf(config?.unkToken ?? parsed.unkToken, "<|endoftext|>")
        chatTemplateSource = template == nil ? config?.chatTemplate : source
        chatTemplate = template ?? ChatTemplate(source: config?.chatTemplate, problem: config?.chatTemplateProblem)
        self.fingerprint = fingerprint
        self.fileName = fileName
        postProcessor = parsed.postProcessor
        if let pp = parsed.postProcessor {
            for id in pp.specialIds where !(id >= 0 && Int(id) < n && exists[Int(id)]) {
                throw TokenizerError.invalidField(file: fileName, jsonPath: "$.post_processor", reason: "special token id \(id) is not a token of this tokenizer")
            }
        }
    }

    /// 128-bit FNV-1a style hash of the files' bytes, hex.
    static func hash(_ parts: [Data]) -> String {
        var h1: UInt64 = 0xCBF2_9CE4_8422_2325, h2: UInt64 = 0x8422_2325_CBF2_9CE4
        for d in parts {
            d.withUnsafeBytes { raw in
                for b in raw {
                    h1 = (h1 ^ UInt64(b)) &* 0x0000_0100_0000_01B3
                    h2 = (h2 ^ UInt64(b)) &* 0x9E37_79B9_7F4A_7C15
                    h2 ^= h2 >> 31
                }
            }
            h1 ^= UInt64(d.count); h2 ^= UInt64(d.count) &* 31
        }
        return String(format: "%016llx%016llx", h1, h2)
    }

    // MARK: - Encode

    func takeWorker() -> EncodeWorker {
        poolLock.lock(); defer { poolLock.unlock() }
        return pool.popLast() ?? EncodeWorker()
    }

    func returnWorker(_ w: EncodeWorker) {
        poolLock.lock(); pool.append(w); poolLock.unlock()
    }

    /// Encodes like `tokenizer(text, add_special_tokens=False)["input_ids"]` (special tokens in the text are
    /// matched). Returns ids in `0..<vocabSize`.
    public func encode(_ text: String) -> [Int32] {
        let w = takeWorker()
        defer { returnWorker(w) }
        var out: [Int32] = []
        w.encode(text, self, &out)
        return out
    }

    /// Encodes like `tokenizer(text, add_special_tokens=addSpecialTokens)["input_ids"]`: with special tokens, the
    /// post-processor of tokenizer.json (`TemplateProcessing`'s single template, …) adds its tokens.
    public func encode(_ text: String, addSpecialTokens: Bool) -> [Int32] {
        addSpecialTokens ? applyPostProcessor(encode(text)) : encode(text)
    }

    /// The ids of one sequence (encoded without special tokens) with the post-processor's special tokens added.
    public func applyPostProcessor(_ ids: [Int32]) -> [Int32] {
        guard let pp = postProcessor else { return ids }
        // A single sequence always has a template (`single` is required at load), so this cannot throw.
        return (try? pp.apply(ids, nil, file: fileName)) ?? ids
    }

    /// Encodes a pair like `tokenizer(a, b, add_special_tokens=addSpecialTokens)["input_ids"]`: A then B, with
    /// the post-processor's pair template when special tokens are requested.
    /// - Throws: `TokenizerError.unsupported` when the `TemplateProcessing` has no `pair` template.
    public func encode(_ a: String, pair b: String, addSpecialTokens: Bool) throws -> [Int32] {
        let ia = encode(a), ib = encode(b)
        guard addSpecialTokens, let pp = postProcessor else { return ia + ib }
        return try pp.apply(ia, ib, file: fileName)
    }

    /// Whether `encode(_:addSpecialTokens: true)` adds tokens to a single sequence (tokenizer.json's post-processor).
    public var addsSpecialTokens: Bool { postProcessor?.addsTokensToSingle ?? false }

    /// The ids the post-processor adds before and after a single sequence: what `tokenizer(text)` adds to raw text.
    /// This is the one BOS/EOS rule of raw text: `trainer generate --prompt` encodes with it, and the exports record
    /// it (`add_bos_token` / `add_eos_token` in tokenizer_config.json and the GGUF). MiniMind's tokenizer has no
    /// post-processor: nothing is added (its tokenizer_config.json says `add_bos_token: false`).
    public var singleSequenceSpecialTokens: (before: [Int32], after: [Int32]) {
        let sentinel: Int32 = -7
        let ids = applyPostProcessor([sentinel])
        guard let at = ids.firstIndex(of: sentinel) else { return ([], []) }
        return (Array(ids[..<at]), Array(ids[(at + 1)...]))
    }

    /// True when raw text gets the bos token first (`singleSequenceSpecialTokens.before == [bos]`).
    public var addsBosToken: Bool { bosTokenId >= 0 && singleSequenceSpecialTokens.before == [bosTokenId] }
    /// True when raw text gets the eos token last (`singleSequenceSpecialTokens.after == [eos]`).
    public var addsEosToken: Bool { eosTokenId >= 0 && singleSequenceSpecialTokens.after == [eosTokenId] }

    /// Encodes many texts on `threads` threads (each with its own word cache); result order = input order.
    public func encode(batch texts: [String], threads: Int) -> [[Int32]] {
        let count = texts.count
        var results = [[Int32]](repeating: [], count: count)
        let t = max(1, min(threads, count))
        if t == 1 {
            let w = takeWorker()
            for i in 0..<count { var o: [Int32] = []; w.encode(texts[i], self, &o); results[i] = o }
            returnWorker(w)
            return results
        }
        // Interleaved chunks so threads finish together even when text lengths vary.
        let chunk = 64
        let nChunks = (count + chunk - 1) / chunk
        let next = ManagedAtomicCounter()
        results.withUnsafeMutableBufferPointer { res in
            let resPtr = res.baseAddress!
            DispatchQueue.concurrentPerform(iterations: t) { _ in
                let w = self.takeWorker()
                while true {
                    let c = next.increment()
                    if c >= nChunks { break }
                    for i in (c * chunk)..<min(count, (c + 1) * chunk) {
                        var o: [Int32] = []
                        w.encode(texts[i], self, &o)
                        (resPtr + i).pointee = o
                    }
                }
                self.returnWorker(w)
            }
        }
        return results
    }

    // MARK: - Decode

    /// Appends the decoded bytes of `id` to `out`; throws when `id` has no token.
    @inline(__always)
    func appendBytes(_ id: Int32, skipSpecialTokens: Bool, _ out: inout [UInt8]) throws {
        guard id >= 0, Int(id) < vocabSize, idExists[Int(id)] else {
            throw TokenizerError.idOutOfRange(id: Int64(id), vocabSize: vocabSize)
        }
        if skipSpecialTokens && idIsSpecial[Int(id)] { return }
        let s = Int(idByteStart[Int(id)]), e = Int(idByteStart[Int(id) + 1])
        idByteArena.withUnsafeBufferPointer { out.append(contentsOf: UnsafeBufferPointer(rebasing: $0[s..<e])) }
    }

    /// Decodes like Hugging Face `decode` (ByteLevel decoder, ill-formed UTF-8 replaced by U+FFFD per maximal
    /// subpart, `skipSpecialTokens` drops added tokens marked special).
    /// - Throws: `TokenizerError.idOutOfRange` for an id outside `0..<vocabSize` (Hugging Face silently drops it).
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) throws -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids { try appendBytes(id, skipSpecialTokens: skipSpecialTokens, &bytes) }
        return UTF8Lossy.decode(bytes)
    }

    /// Id of a token string (vocab symbol string such as `Ġthe`, or added-token content), nil when absent.
    public func tokenToId(_ token: String) -> Int32? { tokenIds[token] }

    /// The token string of an id (byte-level symbols for model tokens), nil when no token has that id.
    public func idToTokenString(_ id: Int32) -> String? {
        guard id >= 0, Int(id) < vocabSize else { return nil }
        return idToToken[Int(id)]
    }

    /// Whether `id` is an added token marked special.
    public func isSpecial(_ id: Int32) -> Bool { id >= 0 && Int(id) < vocabSize && idIsSpecial[Int(id)] }

    /// The raw bytes `id` decodes to (empty for unknown ids).
    public func tokenBytes(_ id: Int32) -> [UInt8] {
        guard id >= 0, Int(id) < vocabSize else { return [] }
        return Array(idByteArena[Int(idByteStart[Int(id)])..<Int(idByteStart[Int(id) + 1])])
    }

    /// Renders the chat template (MiniMind's ChatML, plain ChatML or MiniMind-3's, recognised by their text; see
    /// `ChatTemplate`). With MiniMind's template every user turn is already followed by `<|im_start|>assistant\n`, so
    /// `addGenerationPrompt` changes nothing there (as in Hugging Face, whose Jinja rendering of that template ignores
    /// the flag).
    /// - Throws: `TokenizerError.chatTemplate` naming the template's file when it cannot be rendered without a Jinja
    ///   engine (any other template), when there is none, or when `messages` is empty.
    public func applyChatTemplate(_ messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String {
        try chatTemplate.render(messages, addGenerationPrompt: addGenerationPrompt)
    }

    /// Whether the chat template renders a turn with `role`: system, user and assistant always; any other role is
    /// tried (a lone turn of it before a user turn) and counts as rendered when its content appears in the text, or
    /// when the template refuses the probe. MiniMind's template drops every other role without a word.
    public func rendersRole(_ role: String) -> Bool {
        if role == "user" || role == "assistant" || role == "system" { return true }
        let marker = "\u{E000}swiftmind-role-probe\u{E000}"
        guard let text = try? applyChatTemplate([ChatMessage(role: role, content: marker), ChatMessage(role: "user", content: "a")],
                                                 addGenerationPrompt: false) else { return true }
        return text.contains(marker)
    }

    /// Throws `JSONLError` (`path`:`line`, naming `field[i].role`) for the first turn whose role the chat template
    /// does not render (`rendersRole`): the turn would vanish from the rendered text — a DPO pair could lose the very
    /// turns that differ, a prompt its question — so such a line is refused instead.
    public func checkRolesRendered(_ messages: [ChatMessage], path: String, line: Int, field: String) throws {
        for (i, m) in messages.enumerated() where !rendersRole(m.role) {
            throw JSONLError(path: path, line: line, reason: "field \"\(field)[\(i)].role\" is \"\(m.role)\", a role the chat template does not render (the turn would be dropped without a word); MiniMind's renders \"system\", \"user\" and \"assistant\" (ShareGPT's \"human\"/\"gpt\" are \"user\"/\"assistant\")")
        }
    }

    /// Throws the error `applyChatTemplate` would throw for this template (nil when it can be rendered), so a command
    /// refuses before loading a model or reading data.
    public func checkChatTemplate() throws {
        if !chatTemplate.isRenderable { _ = try chatTemplate.render([ChatMessage(role: "user", content: "")], addGenerationPrompt: true) }
    }

    /// Whether the chat template is MiniMind's own (the one SFT/DPO loss masks are defined for).
    public var hasMiniMindChatTemplate: Bool { if case .miniMind = chatTemplate.kind { return true } else { return false } }

    /// Replaces the model's chat template by MiniMind's ChatML template (`--chat-template minimind`: an explicit
    /// opt-in for a tokenizer whose own template cannot be rendered here). The fingerprint changes with it. Call
    /// before the tokenizer is shared between threads.
    public func useMiniMindChatTemplate() {
        chatTemplate = ChatTemplate(kind: .miniMind, origin: "--chat-template minimind")
        chatTemplateSource = ChatTemplate.miniMindSource
        fingerprint = Tokenizer.hash([Data(fingerprint.utf8), Data(ChatTemplate.miniMindSource.utf8)])
    }

    /// An incremental decoder for streaming generation.
    public func makeStreamDecoder(skipSpecialTokens: Bool = false) -> StreamDecoder {
        StreamDecoder(tokenizer: self, skipSpecialTokens: skipSpecialTokens)
    }
}

extension Tokenizer {
    /// Runs `body`, which decodes ids a model with `modelVocabSize` ids generated; an id this tokenizer lacks
    /// (possible only when `modelVocabSize > vocabSize`) becomes `TokenizerError.generatedIdOutOfRange`, which names
    /// both sizes. Other errors pass through.
    public func decodingGenerated<T>(modelVocabSize: Int, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let TokenizerError.idOutOfRange(id, n) where modelVocabSize > n {
            throw TokenizerError.generatedIdOutOfRange(id: id, tokenizerVocabSize: n, modelVocabSize: modelVocabSize)
        }
    }

    /// A note for a model whose `vocab_size` exceeds this tokenizer's ids (nil when it does not): those ids cannot be
    /// decoded, and generation stops with an error naming the id if the model samples one.
    public func vocabularyGapNote(modelVocabSize: Int, source: String) -> String? {
        guard modelVocabSize > vocabSize else { return nil }
        return "\(source): the model's vocab_size is \(modelVocabSize) but its tokenizer has \(vocabSize) ids: ids \(vocabSize)..<\(modelVocabSize) cannot be decoded (generation stops with an error if the model samples one)"
    }
}

/// Emits text only once a complete UTF-8 character is available. The concatenation of every `push` result and
/// the final `flush` equals `decode` of all pushed ids.
public final class StreamDecoder {
    let tokenizer: Tokenizer
    let skipSpecialTokens: Bool
    var pending: [UInt8] = []

    init(tokenizer: Tokenizer, skipSpecialTokens: Bool) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
    }

    /// Adds one id; returns the newly completed text (possibly empty).
    /// - Throws: `TokenizerError.idOutOfRange`.
    public func push(_ id: Int32) throws -> String {
        try tokenizer.appendBytes(id, skipSpecialTokens: skipSpecialTokens, &pending)
        let k = pending.withUnsafeBufferPointer { UTF8Lossy.emittablePrefix($0) }
        if k == 0 { return "" }
        let s = pending.withUnsafeBufferPointer { UTF8Lossy.decode(UnsafeBufferPointer(rebasing: $0[0..<k])) }
        pending.removeFirst(k)
        return s
    }

    /// Returns what remains (incomplete bytes replaced with U+FFFD) and resets.
    public func flush() -> String {
        defer { pending.removeAll() }
        return UTF8Lossy.decode(pending)
    }
}

/// A tiny lock-protected counter (the toolchain's Synchronization module is not assumed).
final class ManagedAtomicCounter: @unchecked Sendable {
    private var value = 0
    private let lock = NSLock()
    func increment() -> Int { lock.lock(); defer { lock.unlock() }; let v = value; value += 1; return v }
}

/// Per-thread encoding state: merge buffers and the word cache.
final class EncodeWorker {
    var scratch = MergeScratch()
    var cache = WordCache()
    static let classTable: UnsafePointer<UInt8> = {
        let t = UnicodeClasses.table
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: t.count)
        t.withUnsafeBufferPointer { p.initialize(from: $0.baseAddress!, count: t.count) }
        return UnsafePointer(p)
    }()

    func encode(_ text: String, _ tk: Tokenizer, _ out: inout [Int32]) {
        var t = text
        t.withUTF8 { buf in
            guard let p = buf.baseAddress, buf.count > 0 else { return }
            encode(p, buf.count, tk, &out)
        }
    }

    func encode(_ p: UnsafePointer<UInt8>, _ n: Int, _ tk: Tokenizer, _ out: inout [Int32]) {
        // Work on locals (moved out of the class, so still uniquely referenced): closures then capture local
        // variables, which needs no dynamic exclusivity checks.
        var scratch = MergeScratch()
        var cache = WordCache(maxEntries: 0)
        swap(&scratch, &self.scratch)
        swap(&cache, &self.cache)
        defer {
            swap(&scratch, &self.scratch)
            swap(&cache, &self.cache)
        }
        let table = EncodeWorker.classTable
        let model = tk.model
        tk.specialMatcher.split(p, 0, n, text: { s, e in
            tk.normalizedMatcher.split(p, s, e, text: { s2, e2 in
                PreTokenizer.split(p, s2, e2, table) { ws, we in
                    let len = we - ws
                    if len == 1 || len >= WordCache.maxWordBytes {
                        model.mergeWord(p + ws, len, &scratch, &out)
                        return
                    }
                    let h = WordCache.hash(p + ws, len)
                    if cache.lookup(p + ws, len, h, &out) { return }
                    let start = out.count
                    model.mergeWord(p + ws, len, &scratch, &out)
                    cache.insert(p + ws, len, h, out[start...])
                }
            }, token: { out.append($0) })
        }, token: { out.append($0) })
    }
}
