// CONTRACT STUB — the Tokenizers helper replaces the bodies; the public signatures are what other modules use.
import Foundation

/// One chat turn, as in MiniMind's `{"role", "content"}` conversations.
public struct ChatMessage: Codable, Equatable, Sendable {
    public var role: String
    public var content: String
    public init(role: String, content: String) { self.role = role; self.content = content }
}

/// A Hugging Face byte-level BPE tokenizer (`tokenizer.json` + `tokenizer_config.json`).
public final class Tokenizer: @unchecked Sendable {
    /// Loads `tokenizer.json` (a file, or a directory holding it and optionally `tokenizer_config.json`).
    public static func load(_ path: String) throws -> Tokenizer { fatalError("unimplemented") }
    /// Number of ids (model vocab + added tokens).
    public var vocabSize: Int { fatalError("unimplemented") }
    /// Special ids from tokenizer_config.json (MiniMind: pad 0 `<|endoftext|>`, bos 1 `<|im_start|>`, eos 2 `<|im_end|>`).
    public var padTokenId: Int32 { fatalError("unimplemented") }
    public var bosTokenId: Int32 { fatalError("unimplemented") }
    public var eosTokenId: Int32 { fatalError("unimplemented") }
    /// A stable hash of the loaded files, for cache invalidation.
    public var fingerprint: String { fatalError("unimplemented") }
    /// Encodes like `tokenizer(text, add_special_tokens=False)["input_ids"]` (special tokens in the text are matched).
    public func encode(_ text: String) -> [Int32] { fatalError("unimplemented") }
    /// Encodes many texts on `threads` threads; result order = input order.
    public func encode(batch texts: [String], threads: Int) -> [[Int32]] { fatalError("unimplemented") }
    /// Decodes like Hugging Face `decode`; throws on an id out of range.
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) throws -> String { fatalError("unimplemented") }
    /// Id of a token string (vocab or added token), nil when absent.
    public func tokenToId(_ token: String) -> Int32? { fatalError("unimplemented") }
    /// Renders the chat template (MiniMind's ChatML).
    public func applyChatTemplate(_ messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String { fatalError("unimplemented") }
    /// An incremental decoder for streaming generation.
    public func makeStreamDecoder(skipSpecialTokens: Bool = false) -> StreamDecoder { fatalError("unimplemented") }
}

/// Emits text only once a complete UTF-8 character is available.
public final class StreamDecoder {
    /// Adds one id; returns the newly completed text (possibly empty).
    public func push(_ id: Int32) throws -> String { fatalError("unimplemented") }
    /// Returns what remains (incomplete bytes replaced with U+FFFD).
    public func flush() -> String { fatalError("unimplemented") }
}
