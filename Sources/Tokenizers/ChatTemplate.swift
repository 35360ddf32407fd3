import Foundation

/// The chat templates this module renders without a Jinja engine (none of the Swift packages this project can use
/// is one, and a hand-written Jinja interpreter is out of scope): templates recognised by their exact text.
/// - `miniMind`: MiniMind's template (jingyaogong/minimind `tokenizer_config.json`): a system turn (the first
///   message when it is a system message, else "You are a helpful assistant"), then for each user message
///   `<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n` and for each assistant message
///   `{content}<|im_end|>\n`; other roles are skipped. It never reads `add_generation_prompt`.
/// - `chatML`: the plain ChatML template: `<|im_start|>{role}\n{content}<|im_end|>\n` per message and
///   `<|im_start|>assistant\n` when `add_generation_prompt` is set.
/// - `miniMind3`: MiniMind-3's Qwen3-style template (see `renderMiniMind3`).
/// A template is recognised when its `canonical` form equals one of these; any other template — even one that
/// differs only in a default system prompt — is refused when rendering, with an error naming the file it came from.
struct ChatTemplate {
    enum Kind {
        case miniMind, chatML, miniMind3
        /// A template that is none of the above (its text).
        case unsupported(String)
        /// tokenizer_config.json exists but neither it nor chat_template.jinja holds a template.
        case missing
        /// The template entry cannot be used (e.g. a list of templates without "default").
        case unusable(String)
    }
    let kind: Kind
    /// The file the template came from (`chat_template.jinja` or `tokenizer_config.json`); nil = MiniMind's
    /// built-in default for a bare tokenizer.json, or a template set in code.
    let origin: String?

    /// MiniMind's `chat_template` string (used when no tokenizer_config.json is present, and written by the trainer).
    static let miniMindSource =
        "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}{{ '<|im_start|>system\\n' + system_message + '<|im_end|>\\n' }}{% else %}{{ '<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}{% endif %}{% for message in messages %}{% set content = message['content'] %}{% if message['role'] == 'user' %}{{ '<|im_start|>user\\n' + content + '<|im_end|>\\n<|im_start|>assistant\\n' }}{% elif message['role'] == 'assistant' %}{{ content + '<|im_end|>' + '\\n' }}{% endif %}{% endfor %}"

    static let chatMLSource =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

    /// The template as transformers' Jinja environment (`trim_blocks`, `lstrip_blocks`, no kept trailing newline)
    /// sees it: a list of parts, each the literal text that is output (whitespace control `-`/`+`, trim_blocks and
    /// lstrip_blocks applied, comments dropped) or a tag whose inside has its whitespace outside string literals
    /// removed and its string literals re-quoted with `'`. Two templates with the same canonical form render the
    /// same output. Returns nil for what this reader does not follow (`{% raw %}`, an unclosed tag), which is then
    /// recognised as nothing.
    static func canonical(_ s: String) -> String? {
        enum TagKind { case variable, block, comment }
        struct Tag { var kind: TagKind; var body: String; var leftDash = false, leftPlus = false, rightDash = false, rightPlus = false }
        enum Part { case text(String), tag(Tag) }
        let u = Array(s.unicodeScalars)
        var parts: [Part] = []
        var text = String.UnicodeScalarView()
        var i = 0
        while i < u.count {
            if u[i] == "{", i + 1 < u.count, u[i + 1] == "{" || u[i + 1] == "%" || u[i + 1] == "#" {
                let kind: TagKind = u[i + 1] == "{" ? .variable : (u[i + 1] == "%" ? .block : .comment)
                let close: Unicode.Scalar = kind == .variable ? "}" : (kind == .block ? "%" : "#")
                var tag = Tag(kind: kind, body: "")
                var j = i + 2
                if j < u.count && u[j] == "-" { tag.leftDash = true; j += 1 } else if j < u.count && u[j] == "+" { tag.leftPlus = true; j += 1 }
                var body = String.UnicodeScalarView()
                var quote: Unicode.Scalar? = nil, escaped = false, closed = false, space = false
                // Whitespace inside a tag only matters between two word characters (`not x`, `is defined`).
                func word(_ c: Unicode.Scalar?) -> Bool { c.map { $0 == "_" || $0.properties.isAlphabetic || ("0"..."9").contains($0) } ?? false }
                while j < u.count {
                    let c = u[j]
                    if let q = quote, kind != .comment {
                        if escaped { escaped = false; body.append(c) }
                        else if c == "\\" { escaped = true; body.append(c) }
                        else if c == q { quote = nil; body.append("'") }
                        else { if c == "'" { body.append("\\") }; body.append(c) }
                        j += 1; continue
                    }
                    if kind != .comment && (c == "'" || c == "\"") { quote = c; space = false; body.append("'"); j += 1; continue }
                    // The closer, possibly preceded by a whitespace-control sign.
                    if (c == "-" || c == "+"), j + 2 < u.count, u[j + 1] == close, u[j + 2] == "}" {
                        if c == "-" { tag.rightDash = true } else { tag.rightPlus = true }
                        j += 3; closed = true; break
                    }
                    if c == close, j + 1 < u.count, u[j + 1] == "}" { j += 2; closed = true; break }
                    if kind == .comment { body.append(c) }
                    else if c.properties.isWhitespace { space = true }
                    else {
                        if space && word(body.last) && word(c) { body.append(" ") }
                        space = false; body.append(c)
                    }
                    j += 1
                }
                if !closed { return nil }
                tag.body = String(body)
                if kind == .block && tag.body == "raw" { return nil }
                if !text.isEmpty { parts.append(.text(String(text))); text = String.UnicodeScalarView() }
                parts.append(.tag(tag))
                i = j
            } else {
                text.append(u[i]); i += 1
            }
        }
        if !text.isEmpty { parts.append(.text(String(text))) }
        // Whitespace control of the text between two tags.
        var out: [String] = []
        for (k, p) in parts.enumerated() {
            guard case var .text(t) = p else {
                if case let .tag(tag) = p, tag.kind != .comment {
                    out.append((tag.kind == .variable ? "{{" : "{%") + tag.body + (tag.kind == .variable ? "}}" : "%}"))
                }
                continue
            }
            let prev: Tag? = k > 0 ? { if case let .tag(g) = parts[k - 1] { return g } else { return nil } }() : nil
            let next: Tag? = k + 1 < parts.count ? { if case let .tag(g) = parts[k + 1] { return g } else { return nil } }() : nil
            var scalars = Array(t.unicodeScalars)
            // lstrip_blocks: spaces/tabs between a line start (or the template start) and a block/comment tag.
            if let n = next, n.kind != .variable, !n.leftPlus, !n.leftDash {
                var e = scalars.count
                while e > 0 && (scalars[e - 1] == " " || scalars[e - 1] == "\t") { e -= 1 }
                if e == 0 ? k == 0 || prev == nil : scalars[e - 1] == "\n" { scalars.removeSubrange(e...) }
            }
            if let n = next, n.leftDash { while let l = scalars.last, l.properties.isWhitespace { scalars.removeLast() } }
            if let p = prev, p.rightDash { while let f = scalars.first, f.properties.isWhitespace { scalars.removeFirst() } }
            else if let p = prev, p.kind != .variable, !p.rightPlus {   // trim_blocks: the first newline after a block tag
                if scalars.first == "\n" { scalars.removeFirst() }
                else if scalars.count >= 2 && scalars[0] == "\r" && scalars[1] == "\n" { scalars.removeFirst(2) }
            }
            if k == parts.count - 1 {   // keep_trailing_newline = False
                if scalars.last == "\n" { scalars.removeLast(); if scalars.last == "\r" { scalars.removeLast() } }
            }
            t = String(String.UnicodeScalarView(scalars))
            if t.isEmpty { continue }
            // Text split by a dropped comment joins its neighbour.
            if let last = out.last, last.hasPrefix("\u{1}") { out[out.count - 1] = last + t } else { out.append("\u{1}" + t) }
        }
        return out.joined(separator: "\u{0}")
    }

    /// 64-bit FNV-1a of a canonical template, to recognise long templates without storing their text.
    static func fingerprint(_ canonical: String) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in canonical.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return h
    }

    /// Fingerprint of the canonical form of MiniMind-3's chat template (jingyaogong/minimind
    /// `model/tokenizer_config.json` since 2026-03, Qwen3 style: optional system turn, `<think>` blocks in
    /// assistant turns, tool turns).
    static let miniMind3Fingerprint: UInt64 = 463_340_362_909_292_638

    init(kind: Kind, origin: String? = nil) { self.kind = kind; self.origin = origin }

    /// `source` nil: MiniMind's built-in template when `origin` is nil too (a bare tokenizer.json), else `missing`
    /// (or `unusable(problem)`).
    init(source: String?, origin: String? = nil, problem: String? = nil) {
        self.origin = origin
        guard let src = source else {
            if let problem { kind = .unusable(problem) } else { kind = origin == nil ? .miniMind : .missing }
            return
        }
        let c = ChatTemplate.canonical(src)
        if c != nil && c == ChatTemplate.canonical(ChatTemplate.miniMindSource) {
            kind = .miniMind
        } else if c != nil && c == ChatTemplate.canonical(ChatTemplate.chatMLSource) {
            kind = .chatML
        } else if let c, ChatTemplate.fingerprint(c) == ChatTemplate.miniMind3Fingerprint {
            kind = .miniMind3
        } else {
            kind = .unsupported(src)
        }
    }

    /// Whether `render` can render this template.
    var isRenderable: Bool {
        switch kind { case .miniMind, .chatML, .miniMind3: return true; default: return false }
    }

    /// - Throws: `TokenizerError.chatTemplate` naming the template's file when it cannot be rendered, or when
    ///   `messages` is empty (MiniMind's template).
    func render(_ messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String {
        let file = origin ?? "chat template"
        switch kind {
        case let .unsupported(src):
            let head = src.count > 80 ? String(src.prefix(80)) + "…" : src
            throw TokenizerError.chatTemplate(
                "\(file): unsupported chat_template: it cannot be rendered without a Jinja engine (SwiftMind has none; it renders only MiniMind's ChatML, plain ChatML and MiniMind-3's templates, recognised by their exact text); pass --chat-template minimind to render MiniMind's ChatML template instead: \(jsonQuote(head))")
        case .missing:
            throw TokenizerError.chatTemplate(
                "\(file): no chat_template (and no chat_template.jinja beside it): there is no template to render; pass --chat-template minimind to render MiniMind's ChatML template")
        case let .unusable(problem):
            throw TokenizerError.chatTemplate("\(file): \(problem); pass --chat-template minimind to render MiniMind's ChatML template")
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
