import Foundation

/// The chat templates this module renders without a Jinja engine: the ChatML family.
/// - `miniMind`: MiniMind's template (jingyaogong/minimind `tokenizer_config.json`): a system turn (the first
///   message when it is a system message, else "You are a helpful assistant"), then for each user message
///   `<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n` and for each assistant message
///   `{content}<|im_end|>\n`; other roles are skipped. It never reads `add_generation_prompt`.
/// - `chatML`: the plain ChatML template: `<|im_start|>{role}\n{content}<|im_end|>\n` per message and
///   `<|im_start|>assistant\n` when `add_generation_prompt` is set.
/// Any other template is refused when rendering, with an error quoting its start.
struct ChatTemplate {
    enum Kind { case miniMind, chatML, unsupported(String) }
    let kind: Kind

    /// MiniMind's `chat_template` string (used when no tokenizer_config.json is present, and written by the trainer).
    static let miniMindSource =
        "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}{{ '<|im_start|>system\\n' + system_message + '<|im_end|>\\n' }}{% else %}{{ '<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}{% endif %}{% for message in messages %}{% set content = message['content'] %}{% if message['role'] == 'user' %}{{ '<|im_start|>user\\n' + content + '<|im_end|>\\n<|im_start|>assistant\\n' }}{% elif message['role'] == 'assistant' %}{{ content + '<|im_end|>' + '\\n' }}{% endif %}{% endfor %}"

    static let chatMLSource =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

    /// Whitespace, Jinja whitespace-control dashes and quote style do not change what these templates render.
    static func normalize(_ s: String) -> String {
        var t = s.replacingOccurrences(of: "{%-", with: "{%").replacingOccurrences(of: "-%}", with: "%}")
        t = t.replacingOccurrences(of: "{{-", with: "{{").replacingOccurrences(of: "-}}", with: "}}")
        t = t.replacingOccurrences(of: "\"", with: "'")
        return String(t.unicodeScalars.filter { !$0.properties.isWhitespace }.map(Character.init))
    }

    init(source: String?) {
        guard let src = source else { kind = .miniMind; return }
        let n = ChatTemplate.normalize(src)
        if n == ChatTemplate.normalize(ChatTemplate.miniMindSource) {
            kind = .miniMind
        } else if n == ChatTemplate.normalize(ChatTemplate.chatMLSource) {
            kind = .chatML
        } else {
            kind = .unsupported(src)
        }
    }

    func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String {
        switch kind {
        case let .unsupported(src):
            let head = src.count > 80 ? String(src.prefix(80)) + "…" : src
            throw TokenizerError.chatTemplate(
                "unsupported chat_template (only MiniMind's ChatML and plain ChatML are implemented, there is no Jinja engine): \(jsonQuote(head))")
        case .miniMind:
            guard let first = messages.first else { throw TokenizerError.chatTemplate("no messages to render") }
            var out = ""
            if first.role == "system" {
                out += "<|im_start|>system\n" + first.content + "<|im_end|>\n"
            } else {
                out += "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
            }
            for m in messages {
                if m.role == "user" {
                    out += "<|im_start|>user\n" + m.content + "<|im_end|>\n<|im_start|>assistant\n"
                } else if m.role == "assistant" {
                    out += m.content + "<|im_end|>\n"
                }
            }
            return out
        case .chatML:
            var out = ""
            for m in messages { out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n" }
            if addGenerationPrompt { out += "<|im_start|>assistant\n" }
            return out
        }
    }
}
