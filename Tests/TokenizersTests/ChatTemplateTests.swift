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

    func testNormalizationKeepsStringLiterals() {
        XCTAssertEqual(ChatTemplate.normalize("{%- if x %}{{ 'a b' }}{% endif -%}"), "{%ifx%}{{'a b'}}{%endif%}")
        XCTAssertNotEqual(ChatTemplate.normalize(ChatTemplate.miniMindSource),
                          ChatTemplate.normalize(ChatTemplate.miniMindSource.replacingOccurrences(of: "helpful assistant", with: "helpfulassistant")))
        XCTAssertEqual(ChatTemplate.normalize(ChatTemplate.miniMindSource.replacingOccurrences(of: "%}{%", with: "%}\n  {%")),
                       ChatTemplate.normalize(ChatTemplate.miniMindSource))
    }
}
