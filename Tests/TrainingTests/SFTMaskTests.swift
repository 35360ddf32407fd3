import XCTest
import Foundation
@testable import Datasets
import Tokenizers

/// MiniMind's SFTDataset masks: identical input_ids, labels and loss_mask to `golden/sft_masks.jsonl` (both max lengths).
final class SFTMaskTests: XCTestCase {
    func testGoldenSFTMasks() throws {
        let tok = try Tokenizer.load(TrainerRunner.tokenizer)
        let golden = golden("sft_masks.jsonl")
        let work = TrainerRunner.tempDir("sftmask")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let lines = try String(contentsOfFile: golden, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 26)
        var checked = 0
        for line in lines {
            let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let maxLen = o["max_length"] as! Int
            let conv = try JSONSerialization.data(withJSONObject: ["conversations": o["conversations"]!])
            let p = work + "/one.jsonl"
            try conv.write(to: URL(fileURLWithPath: p))
            let ds = try SFTDataset(path: p, tokenizer: tok, maxLength: maxLen, threads: 1)
            let msgs = ds.conversations[0]
            XCTAssertEqual(try tok.applyChatTemplate(msgs, addGenerationPrompt: false), o["prompt"] as? String)
            // In memory (evaluation) and from the memory-mapped cache training reads: the same sample.
            let built = try TokenCache.build(dataPath: p, kind: .sft, tokenizer: tok, cacheRoot: work + "/cache", threads: 1)
            for s in [try ds.sample(0), try SFTDataset(cache: built, tokenizer: tok, maxLength: maxLen).sample(0)] {
                XCTAssertEqual(s.inputIds, (o["input_ids"] as! [Int]).map { Int32($0) }, "input_ids, max_length \(maxLen)")
                XCTAssertEqual(s.labels, (o["labels"] as! [Int]).map { Int32($0) }, "labels, max_length \(maxLen)")
                XCTAssertEqual(s.lossMask, (o["loss_mask"] as! [Int]).map { Float($0) }, "loss_mask, max_length \(maxLen)")
            }
            checked += 1
        }
        XCTAssertEqual(checked, 26)
    }

    func testReasonWeightsOnlyWholeTags() throws {
        let tok = try Tokenizer.load(TrainerRunner.tokenizer)
        let w = ReasonTagWeighting(tokenizer: tok)
        let text = "<think>a < b > c</think>\n<answer>x</answer>"
        let ids = tok.encode(text)
        var mask = [Float](repeating: 1, count: ids.count)
        w.apply(labels: ids, mask: &mask)
        let tagTokens = w.tags.reduce(0) { $0 + $1.count }
        XCTAssertEqual(mask.filter { $0 == 10 }.count, tagTokens)
        // The stray "<" and ">" between the tags keep weight 1.
        let strayLt = tok.encode(" <")
        XCTAssertFalse(strayLt.isEmpty)
    }
}
