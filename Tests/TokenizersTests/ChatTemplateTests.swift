import Foundation
import XCTest
@testable import Tokenizers

/// Golden: the `prompt` of every row of `../shared/golden/sft_masks.jsonl` (MiniMind's SFTDataset rendering).
final class ChatTemplateTests: XCTestCase {
    func testSFTPromptsMatchGolden() throws {
        let tk = Fixtures.miniMind
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
        let tk = Fixtures.miniMind
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
