// ChatSession: multi-turn ChatML chat with a sliding history window (MiniMind's eval_model.py chat loop).
import Foundation
import Model
import Tokenizers

/// A terminal-style conversation: each `send` renders the system prompt (if any), the last `historyTurns`
/// (user, assistant) pairs and the new user message through the tokenizer's chat template, generates the reply
/// (streamed through `onText`) and appends the pair to the history. When the prompt plus `maxNewTokens` does not fit
/// the engine's context window, the oldest turns are dropped first, then `maxNewTokens` is reduced.
public final class ChatSession {
    public let engine: GenerationEngine
    /// Completed (user, assistant) pairs kept in the prompt; 0 = every message is answered without history.
    public var historyTurns: Int
    public var systemPrompt: String?
    public private(set) var turns: [(user: String, assistant: String)] = []

    public init(engine: GenerationEngine, historyTurns: Int = 3, systemPrompt: String? = nil) {
        self.engine = engine; self.historyTurns = max(0, historyTurns); self.systemPrompt = systemPrompt
    }

    /// Forgets the conversation (`/reset`).
    public func reset() { turns.removeAll() }

    /// The messages the next prompt is rendered from, with the `keep` most recent turns.
    public func messages(for user: String, keep: Int? = nil) -> [ChatMessage] {
        var ms: [ChatMessage] = []
        if let systemPrompt, !systemPrompt.isEmpty { ms.append(ChatMessage(role: "system", content: systemPrompt)) }
        let k = min(keep ?? historyTurns, historyTurns, turns.count)
        for t in turns.suffix(k) {
            ms.append(ChatMessage(role: "user", content: t.user))
            ms.append(ChatMessage(role: "assistant", content: t.assistant))
        }
        ms.append(ChatMessage(role: "user", content: user))
        return ms
    }

    /// Answers `user`, streaming the reply; the pair joins the history unless generation was cancelled.
    /// - Throws: `ServingError` when even the bare message does not fit the context window.
    @discardableResult
    public func send(_ user: String, options: SamplingOptions, isCancelled: () -> Bool = { false },
                     onText: (String) -> Void) throws -> GenerationResult {
        let ctx = engine.contextLength
        var keep = min(historyTurns, turns.count)
        var ids = try engine.chatPromptIds(messages(for: user, keep: keep))
        while keep > 0 && ids.count + options.maxNewTokens > ctx {
            keep -= 1
            ids = try engine.chatPromptIds(messages(for: user, keep: keep))
        }
        var opts = options
        if ids.count + opts.maxNewTokens > ctx { opts.maxNewTokens = ctx - ids.count }
        guard opts.maxNewTokens > 0 else {
            throw ServingError("the message is \(ids.count) tokens: no room left in the context window (\(ctx))") }
        let r = try engine.generate(promptIds: ids, options: opts, isCancelled: isCancelled, onText: onText)
        if r.finishReason != .cancelled { turns.append((user, r.text)) }
        return r
    }
}
