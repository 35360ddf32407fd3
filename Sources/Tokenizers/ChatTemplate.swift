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
    enum Kind { case miniMind, chatML, miniMind3, unsupported(String) }
    let kind: Kind

    /// MiniMind's `chat_template` string (used when no tokenizer_config.json is present, and written by the trainer).
    static let miniMindSource =
        "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}{{ '<|im_start|>system\\n' + system_message + '<|im_end|>\\n' }}{% else %}{{ '<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}{% endif %}{% for message in messages %}{% set content = message['content'] %}{% if message['role'] == 'user' %}{{ '<|im_start|>user\\n' + content + '<|im_end|>\\n<|im_start|>assistant\\n' }}{% elif message['role'] == 'assistant' %}{{ content + '<|im_end|>' + '\\n' }}{% endif %}{% endfor %}"

    static let chatMLSource =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

    /// Whitespace outside string literals, Jinja whitespace-control dashes and the quote style do not change what
    /// these templates render; everything inside string literals is kept as is.
    static func normalize(_ s: String) -> String {
        var t = s.replacingOccurrences(of: "{%-", with: "{%").replacingOccurrences(of: "-%}", with: "%}")
        t = t.replacingOccurrences(of: "{{-", with: "{{").replacingOccurrences(of: "-}}", with: "}}")
        var out = String.UnicodeScalarView()
        var quote: Unicode.Scalar? = nil
        var escaped = false
        for u in t.unicodeScalars {
            if let q = quote {
                if escaped { escaped = false; out.append(u); continue }
                if u == "\\" { escaped = true; out.append(u); continue }
                if u == q { quote = nil; out.append("'"); continue }
                out.append(u)
            } else if u == "'" || u == "\"" {
                quote = u; out.append("'")
            } else if !u.properties.isWhitespace {
                out.append(u)
            }
        }
        return String(out)
    }

    /// 64-bit FNV-1a of a normalized template, to recognise long templates without storing their text.
    static func fingerprint(_ normalized: String) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in normalized.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return h
    }

    /// Fingerprint of MiniMind-3's chat template (jingyaogong/minimind `model/tokenizer_config.json` since
    /// 2026-03, Qwen3 style: optional system turn, `<think>` blocks in assistant turns, tool turns).
    static let miniMind3Fingerprint: UInt64 = 17_478_132_701_076_741_878

    init(kind: Kind) { self.kind = kind }

    init(source: String?) {
        guard let src = source else { kind = .miniMind; return }
        let n = ChatTemplate.normalize(src)
        if n == ChatTemplate.normalize(ChatTemplate.miniMindSource) {
            kind = .miniMind
        } else if n == ChatTemplate.normalize(ChatTemplate.chatMLSource) {
            kind = .chatML
        } else if ChatTemplate.fingerprint(n) == ChatTemplate.miniMind3Fingerprint {
            kind = .miniMind3
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
        case .miniMind3:
            return try renderMiniMind3(messages, addGenerationPrompt: addGenerationPrompt)
        case .chatML:
            var out = ""
            for m in messages { out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n" }
            if addGenerationPrompt { out += "<|im_start|>assistant\n" }
            return out
        }
    }

    /// MiniMind-3's template without tools (no `tools` argument exists in this API): the first system message
    /// opens the prompt; user turns (and later system turns) are `<|im_start|>{role}\n{content}<|im_end|>\n`;
    /// an assistant turn is written as `<|im_start|>assistant\n<think>\n{reasoning}\n</think>\n\n{answer}<|im_end|>\n`
    /// where a `</think>` in the content separates reasoning from answer; consecutive tool turns are wrapped in
    /// one user turn as `<tool_response>` blocks; the generation prompt is `<|im_start|>assistant\n` followed by
    /// an empty think block (thinking off, the template's default).
    func renderMiniMind3(_ messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String {
        func trim(_ s: Substring, leading: Bool, trailing: Bool) -> Substring {
            var t = s
            if leading { while t.first == "\n" { t.removeFirst() } }
            if trailing { while t.last == "\n" { t.removeLast() } }
            return t
        }
        var out = ""
        if let first = messages.first, first.role == "system" {
            out += "<|im_start|>system\n" + first.content + "<|im_end|>\n"
        }
        for (i, m) in messages.enumerated() {
            var content = Substring(m.content)
            if m.role == "user" || (m.role == "system" && i > 0) {
                out += "<|im_start|>" + m.role + "\n" + content + "<|im_end|>\n"
            } else if m.role == "assistant" {
                var reasoning: Substring = ""
                if let close = content.range(of: "</think>") {
                    let before = trim(content[..<close.lowerBound], leading: false, trailing: true)
                    let afterOpen = before.range(of: "<think>", options: .backwards).map { before[$0.upperBound...] } ?? before
                    reasoning = trim(afterOpen, leading: true, trailing: false)
                    let lastClose = content.range(of: "</think>", options: .backwards)!
                    content = trim(content[lastClose.upperBound...], leading: true, trailing: false)
                }
                out += "<|im_start|>assistant\n<think>\n" + trim(reasoning, leading: true, trailing: true) + "\n</think>\n\n"
                out += trim(content, leading: true, trailing: false) + "<|im_end|>\n"
            } else if m.role == "tool" {
                if i == 0 || messages[i - 1].role != "tool" { out += "<|im_start|>user" }
                out += "\n<tool_response>\n" + content + "\n</tool_response>"
                if i == messages.count - 1 || messages[i + 1].role != "tool" { out += "<|im_end|>\n" }
            }
        }
        if addGenerationPrompt { out += "<|im_start|>assistant\n<think>\n\n</think>\n\n" }
        return out
    }
}
