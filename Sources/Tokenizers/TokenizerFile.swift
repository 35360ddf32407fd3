import Foundation

/// The parts of a Hugging Face `tokenizer.json` this module uses, validated.
struct TokenizerFile {
    struct Merge { var a: Int32; var b: Int32; var result: Int32 }
    var vocab: [String: Int32] = [:]
    var merges: [Merge] = []
    var added: [AddedToken] = []
    var unkToken: String?
    var fuseUnk = false
    var ignoreMerges = false
    /// nil when tokenizer.json has no `post_processor` (or null).
    var postProcessor: PostProcessor?

    static func parse(_ data: Data, file: String) throws -> TokenizerFile {
        let root = try JSONNode.parse(data, file: file)
        _ = try root.object()
        var out = TokenizerFile()

        if let n = try root.field("normalizer") {
            throw TokenizerError.unsupported(file: file, jsonPath: n.path, feature: "a normalizer (\(try typeName(n)))")
        }
        if let n = try root.field("truncation") {
            throw TokenizerError.unsupported(file: file, jsonPath: n.path, feature: "truncation settings")
        }
        if let n = try root.field("padding") {
            throw TokenizerError.unsupported(file: file, jsonPath: n.path, feature: "padding settings")
        }
        // Pre-tokenizer: ByteLevel, add_prefix_space false, use_regex true.
        guard let pre = try root.field("pre_tokenizer") else {
            throw TokenizerError.unsupported(file: file, jsonPath: "$.pre_tokenizer",
                                             feature: "no pre-tokenizer (ByteLevel is required)")
        }
        try requireByteLevel(pre, file: file, what: "pre-tokenizer")
        if let a = try pre.field("add_prefix_space"), try a.bool() {
            throw TokenizerError.unsupported(file: file, jsonPath: a.path, feature: "add_prefix_space = true")
        }
        if let u = try pre.field("use_regex"), try !u.bool() {
            throw TokenizerError.unsupported(file: file, jsonPath: u.path, feature: "use_regex = false")
        }
        guard let dec = try root.field("decoder") else {
            throw TokenizerError.unsupported(file: file, jsonPath: "$.decoder", feature: "no decoder (ByteLevel is required)")
        }
        try requireByteLevel(dec, file: file, what: "decoder")
        if let pp = try root.field("post_processor") { out.postProcessor = try PostProcessor.parse(pp, file: file) }

        // Model.
        let model = try root.require("model")
        if let t = try model.field("type") {
            let name = try t.string()
            if name != "BPE" { throw TokenizerError.unsupported(file: file, jsonPath: t.path, feature: "model type \(name)") }
        }
        if let d = try model.field("dropout") {
            throw TokenizerError.unsupported(file: file, jsonPath: d.path, feature: "BPE dropout")
        }
        if let b = try model.field("byte_fallback"), try b.bool() {
            throw TokenizerError.unsupported(file: file, jsonPath: b.path, feature: "byte_fallback")
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let f = try model.field(key), !(try f.string()).isEmpty {
                throw TokenizerError.unsupported(file: file, jsonPath: f.path, feature: key)
            }
        }
        out.unkToken = try model.field("unk_token")?.string()
        out.fuseUnk = try model.field("fuse_unk")?.bool() ?? false
        out.ignoreMerges = try model.field("ignore_merges")?.bool() ?? false

        let vocabNode = try model.require("vocab")
        let vocabObj = try vocabNode.object()
        var vocab = [String: Int32](minimumCapacity: vocabObj.count)
        for (tok, v) in vocabObj {
            let node = JSONNode(value: v, path: vocabNode.path + "[" + jsonQuote(tok) + "]", file: file)
            let id = try node.int()
            guard id >= 0 && id < Int(Int32.max) else { throw node.fail("token id \(id) is negative or too large") }
            vocab[tok] = Int32(id)
        }
        // One token per id: Hugging Face `tokenizers` 0.23 loads a vocab with a repeated id silently and then
        // decodes that id to only one of the tokens, so encode → decode would not round-trip. Rejected here.
        var tokenOfId = [Int32: String](minimumCapacity: vocab.count)
        for (tok, id) in vocab {
            if let other = tokenOfId[id] {
                let (a, b) = other < tok ? (other, tok) : (tok, other)
                throw vocabNode.fail("id \(id) is given to two tokens, \(jsonQuote(a)) and \(jsonQuote(b))")
            }
            tokenOfId[id] = tok
        }
        out.vocab = vocab

        let mergesNode = try model.require("merges")
        let list = try mergesNode.array()
        out.merges.reserveCapacity(list.count)
        for m in list {
            let a: String, b: String
            if let s = m.value as? String {
                let parts = s.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw m.fail("a merge string must be two symbols separated by one space") }
                a = String(parts[0]); b = String(parts[1])
            } else if let arr = m.value as? [Any] {
                guard arr.count == 2 else { throw m.fail("a merge pair must have exactly two symbols") }
                let items = try m.array()
                a = try items[0].string(); b = try items[1].string()
            } else {
                throw m.fail("expected a merge as \"a b\" or [\"a\", \"b\"], found \(JSONNode.kind(m.value))")
            }
            guard let ia = vocab[a] else { throw TokenizerError.unknownMergeSymbol(file: file, jsonPath: m.path, symbol: a) }
            guard let ib = vocab[b] else { throw TokenizerError.unknownMergeSymbol(file: file, jsonPath: m.path, symbol: b) }
            guard let r = vocab[a + b] else {
                throw m.fail("merge result \(jsonQuote(a + b)) is not in model.vocab")
            }
            out.merges.append(Merge(a: ia, b: ib, result: r))
        }

        // Added tokens.
        if let addedNode = try root.field("added_tokens") {
            for t in try addedNode.array() {
                let idNode = try t.require("id")
                let id = try idNode.int()
                guard id >= 0 && id < Int(Int32.max) else { throw idNode.fail("token id \(id) is negative or too large") }
                let content = try t.require("content").string()
                if content.isEmpty { throw try t.require("content").fail("empty added token") }
                for flag in ["lstrip", "rstrip", "single_word"] {
                    if let f = try t.field(flag), try f.bool() {
                        throw TokenizerError.unsupported(file: file, jsonPath: f.path, feature: "added token \(flag) = true")
                    }
                }
                let special = try t.field("special")?.bool() ?? false
                let normalized = try t.field("normalized")?.bool() ?? !special
                // An added token may repeat a vocab entry (MiniMind's specials do), but not take another token's id.
                if let other = tokenOfId[Int32(id)], other != content {
                    throw idNode.fail("id \(id) is given to two tokens, \(jsonQuote(other)) and added token \(jsonQuote(content))")
                }
                tokenOfId[Int32(id)] = content
                out.added.append(AddedToken(id: Int32(id), content: content, special: special, normalized: normalized))
            }
        }
        return out
    }

    static func typeName(_ n: JSONNode) throws -> String {
        guard let t = try n.field("type") else { return "untyped" }
        return try t.string()
    }

    static func requireByteLevel(_ n: JSONNode, file: String, what: String) throws {
        let t = try typeName(n)
        guard t == "ByteLevel" else {
            throw TokenizerError.unsupported(file: file, jsonPath: n.path + ".type", feature: "\(what) \(t)")
        }
    }
}

/// The parts of `tokenizer_config.json` this module uses.
struct TokenizerConfig {
    var bosToken: String?
    var eosToken: String?
    var padToken: String?
    var unkToken: String?
    /// `chat_template` (a string, or the entry named "default" of the list form).
    var chatTemplate: String?
    /// Why `chat_template` cannot be used (a list without a "default" entry); reported when a template is rendered.
    var chatTemplateProblem: String?

    static func parse(_ data: Data, file: String) throws -> TokenizerConfig {
        let root = try JSONNode.parse(data, file: file)
        _ = try root.object()
        func token(_ key: String) throws -> String? {
            guard let n = try root.field(key) else { return nil }
            if n.value is String { return try n.string() }
            return try n.require("content").string()   // AddedToken object form
        }
        var c = TokenizerConfig()
        c.bosToken = try token("bos_token")
        c.eosToken = try token("eos_token")
        c.padToken = try token("pad_token")
        c.unkToken = try token("unk_token")
        if let t = try root.field("chat_template") {
            if t.value is String {
                c.chatTemplate = try t.string()
            } else {
                // List form: [{"name": ..., "template": ...}]; the "default" one is used (as transformers does
                // without a template name). Without one, only rendering fails (the tokenizer still encodes).
                var names: [String] = []
                for item in try t.array() {
                    let name = try item.require("name").string()
                    names.append(name)
                    if name == "default" { c.chatTemplate = try item.require("template").string() }
                }
                if c.chatTemplate == nil {
                    c.chatTemplateProblem = "\(t.path) lists templates \(names.map(jsonQuote).joined(separator: ", ")) but none named \"default\""
                }
            }
        }
        return c
    }
}
