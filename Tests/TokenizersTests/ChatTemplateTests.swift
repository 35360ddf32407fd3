import Foundation
import XCTest
@testable import Tokenizers
import TestSupport

/// Golden: the `prompt` of every row of `Tests/Fixtures/golden/sft_masks.jsonl` (MiniMind's SFTDataset rendering).
final class ChatTemplateTests: XCTestCase {
    func testSFTPromptsMatchGolden() throws {
        let tk = try Fixtures.miniMind()
        let rows = try Fixtures.jsonl("golden/sft_masks.jsonl")
        XCTAssertEqual(rows.count, 26)
        for (i, r) in rows.enumerated() {
            let conv = (r["conversations"] as! [[String: String]]).map { ChatMessage(role: $0["role"]!, content: $0["content"]!) }
            let prompt = try tk.applyChatTemplate(conv, addGenerationPrompt: false)
            XCTAssertEqual(prompt, r["prompt"] as! String, "row \(i)")
            // The golden input_ids are the (truncated, padded) encoding of the prompt.
            let ids = ints(r["input_ids"])
            let enc = tk.encode(prompt)
            let n = min(enc.count, ids.count)
            XCTAssertEqual(Array(enc.prefix(n)), Array(ids.prefix(n)), "row \(i) ids")
        }
    }

    func testGenerationPromptAndSystemTurn() throws {
        let tk = try Fixtures.miniMind()
        let p = try tk.applyChatTemplate([ChatMessage(role: "user", content: "你好，请背诵一首诗。")], addGenerationPrompt: true)
        let golden = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.path("golden/generate_model/generate.json")))) as! [String: Any]
        XCTAssertEqual(p, golden["prompt"] as! String)
        XCTAssertEqual(tk.encode(p), ints(golden["prompt_ids"]))
        let s = try tk.applyChatTemplate([ChatMessage(role: "system", content: "Be brief."),
                                          ChatMessage(role: "user", content: "hi")], addGenerationPrompt: true)
        XCTAssertEqual(s, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
        XCTAssertThrowsError(try tk.applyChatTemplate([], addGenerationPrompt: true))
    }

    func testPlainChatMLAndRefusal() throws {
        let plain = ChatTemplate(source: ChatTemplate.chatMLSource)
        let out = try plain.render([ChatMessage(role: "user", content: "hi")], addGenerationPrompt: true)
        XCTAssertEqual(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
        let other = ChatTemplate(source: "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}")
        XCTAssertThrowsError(try other.render([ChatMessage(role: "user", content: "hi")], addGenerationPrompt: true)) { e in
            XCTAssertTrue("\(e)".contains("unsupported chat_template"))
        }
    }
}

/// MiniMind-3's Qwen3-style template (recognised by fingerprint); expectations written from the template's rules
/// and checked against transformers' Jinja rendering of 3254 conversations (see the report).
final class MiniMind3TemplateTests: XCTestCase {
    func testThinkBlocksToolTurnsAndGenerationPrompt() throws {
        let t = ChatTemplate(kind: .miniMind3)
        let msgs = [ChatMessage(role: "system", content: "S"), ChatMessage(role: "user", content: "q"),
                    ChatMessage(role: "assistant", content: "\n<think>\nr\n</think>\n\nans"),
                    ChatMessage(role: "tool", content: "t1"), ChatMessage(role: "tool", content: "t2"),
                    ChatMessage(role: "system", content: "S2"), ChatMessage(role: "user", content: "q2")]
        let want = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq<|im_end|>\n"
            + "<|im_start|>assistant\n<think>\nr\n</think>\n\nans<|im_end|>\n"
            + "<|im_start|>user\n<tool_response>\nt1\n</tool_response>\n<tool_response>\nt2\n</tool_response><|im_end|>\n"
            + "<|im_start|>system\nS2<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n"
            + "<|im_start|>assistant\n<think>\n\n</think>\n\n"
        XCTAssertEqual(try t.render(msgs, addGenerationPrompt: true), want)
        XCTAssertEqual(try t.render([ChatMessage(role: "user", content: "hi"), ChatMessage(role: "assistant", content: "yo")],
                                    addGenerationPrompt: false),
                       "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nyo<|im_end|>\n")
    }

    func testCanonicalFormKeepsWhatRendersAndDropsWhatDoesNot() {
        let c = ChatTemplate.canonical
        // Whitespace inside tags and the quote style render nothing.
        XCTAssertEqual(c("{% if x %}{{ 'a b' }}{% endif %}"), c("{%if x%}{{\"a b\"}}{%endif%}"))
        // String literals are kept as they are.
        XCTAssertNotEqual(c(ChatTemplate.miniMindSource),
                          c(ChatTemplate.miniMindSource.replacingOccurrences(of: "helpful assistant", with: "helpfulassistant")))
        // A newline and indentation between block tags: trim_blocks + lstrip_blocks remove them (transformers' Jinja set-up).
        XCTAssertEqual(c(ChatTemplate.miniMindSource.replacingOccurrences(of: "%}{%", with: "%}\n  {%")), c(ChatTemplate.miniMindSource))
        // … but text between variable tags, or spaces after a block tag on the same line, is output.
        XCTAssertNotEqual(c("{{ a }}\n{{ b }}"), c("{{ a }}{{ b }}"))
        XCTAssertNotEqual(c("{% if x %}  {% endif %}"), c("{% if x %}{% endif %}"))
        // Dashes strip the whitespace beside them; a comment renders nothing.
        XCTAssertEqual(c("{{ a }}  \n {{- b }}"), c("{{ a }}{{ b }}"))
        XCTAssertEqual(c("x{# note #}y"), c("xy"))
        // One trailing newline is dropped (keep_trailing_newline = False), a second one is output.
        XCTAssertEqual(c("{{ a }}\n"), c("{{ a }}"))
        XCTAssertNotEqual(c("{{ a }}\n\n"), c("{{ a }}"))
        // Whitespace between two words of a tag is kept (`not x` is not the variable `notx`).
        XCTAssertNotEqual(c("{% if not x %}y{% endif %}"), c("{% if notx %}y{% endif %}"))
        XCTAssertNil(c("{{ a "))
    }
}

/// Where the chat template comes from (chat_template.jinja before tokenizer_config.json, a string or a list of named
/// templates), and the named errors for templates that cannot be rendered without a Jinja engine.
final class ChatTemplateSourceTests: XCTestCase {
    /// A tokenizer directory: MiniMind's tokenizer.json and the given tokenizer_config.json / chat_template.jinja.
    func directory(config: [String: Any]?, jinja: String?) throws -> String {
        let dir = NSTemporaryDirectory() + "swiftmind-ct-\(getpid())-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.copyItem(atPath: Fixtures.miniMindDir + "/tokenizer.json", toPath: dir + "/tokenizer.json")
        if let config { try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: dir + "/tokenizer_config.json")) }
        if let jinja { try Data(jinja.utf8).write(to: URL(fileURLWithPath: dir + "/chat_template.jinja")) }
        return dir
    }
    /// ChatML with another default system prompt (SmolLM2's shape): renderable by hand, but not MiniMind's text.
    static let otherChatML = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are someone else<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    let hi = [ChatMessage(role: "user", content: "hi")]

    func testOtherTemplatesAreRefusedNamingTheirFile() throws {
        let dir = try directory(config: ["eos_token": "<|im_end|>"], jinja: ChatTemplateSourceTests.otherChatML)
        let t = try Tokenizer.load(dir)
        XCTAssertEqual(t.chatTemplateSource, ChatTemplateSourceTests.otherChatML)
        for e in [{ try t.applyChatTemplate(self.hi, addGenerationPrompt: true) } as () throws -> Any, { try t.checkChatTemplate() }] {
            XCTAssertThrowsError(try e()) { e in
                XCTAssertTrue("\(e)".contains(dir + "/chat_template.jinja") && "\(e)".contains("without a Jinja engine")
                              && "\(e)".contains("--chat-template minimind"), "\(e)")
            }
        }
        XCTAssertFalse(t.hasMiniMindChatTemplate)
        // The tokenizer itself still encodes; the explicit opt-in renders MiniMind's template.
        XCTAssertEqual(t.encode("hi"), try Fixtures.miniMind().encode("hi"))
        let before = t.fingerprint
        t.useMiniMindChatTemplate()
        XCTAssertNotEqual(t.fingerprint, before)
        XCTAssertEqual(try t.applyChatTemplate(hi, addGenerationPrompt: true), try Fixtures.miniMind().applyChatTemplate(hi, addGenerationPrompt: true))
        XCTAssertEqual(t.chatTemplateSource, ChatTemplate.miniMindSource)
    }

    func testJinjaFileWinsOverTheConfigAndListsUseDefault() throws {
        // chat_template.jinja holding MiniMind's template beats another template in tokenizer_config.json.
        let d1 = try directory(config: ["chat_template": ChatTemplateSourceTests.otherChatML], jinja: ChatTemplate.miniMindSource + "\n")
        XCTAssertEqual(try Tokenizer.load(d1).applyChatTemplate(hi, addGenerationPrompt: true),
                       "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
        // The list form: the template named "default".
        let d2 = try directory(config: ["chat_template": [["name": "tool_use", "template": ChatTemplateSourceTests.otherChatML],
                                                          ["name": "default", "template": ChatTemplate.miniMindSource]]], jinja: nil)
        XCTAssertTrue(try Tokenizer.load(d2).hasMiniMindChatTemplate)
        // A list without "default" loads (encoding works) but rendering names the problem.
        let d3 = try directory(config: ["chat_template": [["name": "tool_use", "template": ChatTemplate.miniMindSource]]], jinja: nil)
        let t3 = try Tokenizer.load(d3)
        XCTAssertThrowsError(try t3.applyChatTemplate(hi, addGenerationPrompt: true)) { e in
            XCTAssertTrue("\(e)".contains("tokenizer_config.json") && "\(e)".contains("\"default\""), "\(e)")
        }
        // A tokenizer_config.json without any template: nothing to render (transformers refuses too).
        let t4 = try Tokenizer.load(try directory(config: ["eos_token": "<|im_end|>"], jinja: nil))
        XCTAssertThrowsError(try t4.checkChatTemplate()) { XCTAssertTrue("\($0)".contains("no chat_template"), "\($0)") }
        // A bare tokenizer.json keeps MiniMind's template.
        XCTAssertTrue(try Tokenizer.load(try directory(config: nil, jinja: nil) + "/tokenizer.json").hasMiniMindChatTemplate)
    }
}

/// Recognition never renders wrong: seeded whitespace / comment / dash variants of MiniMind's and the plain ChatML
/// template, rendered by jinja2 with transformers' settings (python/chat_template_variants.py; skipped without
/// jinja2). Every variant SwiftMind recognises renders exactly jinja2's text; the others are refused.
final class ChatTemplateJinjaCrossCheckTests: XCTestCase {
    func testRecognisedVariantsRenderAsJinja() throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("python/chat_template_variants.py").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", script, Fixtures.miniMindDir + "/tokenizer_config.json", "12", "150"]
        let pipe = Pipe(); p.standardOutput = pipe; p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { throw XCTSkip("python3 not available") }
        let out = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        if String(decoding: out.prefix(4), as: UTF8.self) == "SKIP" { throw XCTSkip("python jinja2 not installed (pip install jinja2): skipped") }
        XCTAssertEqual(p.terminationStatus, 0)
        let variants = try JSONSerialization.jsonObject(with: out) as! [[String: Any]]
        var recognised = 0, refused = 0
        for v in variants {
            let t = ChatTemplate(source: v["template"] as? String, origin: "variant")
            guard t.isRenderable else { refused += 1; continue }
            recognised += 1
            for r in v["renders"] as! [[String: Any]] {
                let msgs = (r["messages"] as! [[String: String]]).map { ChatMessage(role: $0["role"]!, content: $0["content"]!) }
                XCTAssertEqual(try t.render(msgs, addGenerationPrompt: r["add_generation_prompt"] as! Bool), r["text"] as! String,
                               (v["template"] as! String).debugDescription)
            }
        }
        print("chat template variants: \(recognised) recognised (all rendered as jinja2), \(refused) refused")
        XCTAssertGreaterThan(recognised, variants.count / 4, "too few variants recognised for the check to mean anything")
        XCTAssertGreaterThan(refused, 0)
    }
}

