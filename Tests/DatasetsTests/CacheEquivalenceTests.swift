import XCTest
import TestSupport
import Foundation
@testable import Datasets
import Tokenizers

/// What the data tests read from `Tests/Fixtures/` (paths from `Fixtures` in Tests/TestSupport), and scratch dirs.
extension Fixtures {
    static var tokenizer: String { miniMindTokenizer }

    static func tempDir(_ name: String) -> String {
        let d = NSTemporaryDirectory() + "swiftmind-\(name)-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }
}

/// Random jsonl rows of every stage's format: mixed scripts, JSON escapes, 4-byte UTF-8, literal special tokens,
/// reasoning tags (whole and broken), stray `<`/`>`, turns long enough to be truncated and empty ones.
struct RowGenerator {
    var rng: Xoshiro256StarStar
    init(seed: UInt64) { rng = Xoshiro256StarStar(seed: seed) }

    static let pieces = ["床前明月光", "疑是地上霜", "，", "。", "？", "the", " quick", " brown", " fox", "Hello", " world", "\n", "\n\n",
                         "\t", " ", "  ", "\"quoted\"", "back\\slash", "😀", "𝄞", "é", "<think>", "</think>", "<answer>",
                         "</answer>", "<", ">", "think", "answer", "<|im_start|>", "<|im_end|>", "<|endoftext|>",
                         "assistant", "user", "1.5e3", "42", "{", "}", "[", "]", ":", "/"]

    mutating func int(_ n: Int) -> Int { Int(rng.next(below: UInt64(n))) }

    mutating func text(maxPieces: Int) -> String {
        let n = int(maxPieces + 1)
        var s = ""
        for _ in 0 ..< n { s += RowGenerator.pieces[int(RowGenerator.pieces.count)] }
        return s
    }

    /// A reasoning-style answer some of the time, free text otherwise.
    mutating func answer() -> String {
        switch int(4) {
        case 0: return "<think>\(text(maxPieces: 12))</think>\n<answer>\(text(maxPieces: 6))</answer>"
        case 1: return "<think>\(text(maxPieces: 60))"   // long, unclosed
        default: return text(maxPieces: 30)
        }
    }

    mutating func json(_ o: Any) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: o), as: UTF8.self)
    }

    /// SFT: 1…6 turns; the `role` field is random because SFT assigns roles by parity.
    mutating func sftLine() -> String {
        let turns = (0 ..< 1 + int(6)).map { i in
            ["role": ["user", "assistant", "system", "tool"][int(4)], "content": i % 2 == 0 ? text(maxPieces: 20) : answer()] }
        return json(["conversations": turns])
    }

    /// DPO: roles as given (an optional system turn, user/assistant turns). A role the template does not render is
    /// refused (`testDPOTurnOfARoleTheTemplateDropsIsRefused`).
    mutating func dpoTurns() -> [[String: String]] {
        var t: [[String: String]] = []
        if int(3) == 0 { t.append(["role": "system", "content": text(maxPieces: 8)]) }
        for i in 0 ..< 1 + int(4) {
            t.append(["role": i % 2 == 0 ? "user" : "assistant", "content": i % 2 == 0 ? text(maxPieces: 15) : answer()])
        }
        return t
    }
    mutating func dpoLine() -> String { json(["chosen": dpoTurns(), "rejected": dpoTurns()]) }
    mutating func pretrainLine() -> String { json(["text": text(maxPieces: 80)]) }

    /// `rows` lines joined with a mix of `\n` and `\r\n`, with blank lines (empty, spaces, tabs, `\r`) between some.
    mutating func file(rows: Int, _ line: (inout RowGenerator) -> String) -> String {
        var out = ""
        for _ in 0 ..< rows {
            if int(6) == 0 { out += ["", "   ", "\t", " \t ", "\r"][int(5)] + "\n" }
            out += line(&self) + (int(4) == 0 ? "\r\n" : "\n")
        }
        if int(2) == 0 { out += "\n  \n" }
        return out
    }

    /// Random batches of sample indices (with repeats, like a padded DistributedSampler), covering every sample.
    mutating func batches(count n: Int) -> [[Int]] {
        var all = Array(0 ..< n)
        for i in stride(from: n - 1, to: 0, by: -1) { all.swapAt(i, int(i + 1)) }
        var out: [[Int]] = []
        var i = 0
        while i < n { let b = 1 + int(5); out.append(Array(all[i ..< min(n, i + b)]) + (int(3) == 0 ? [int(n)] : [])); i += b }
        return out
    }
}

/// Batches from the token cache (memory-mapped, the training path) are identical to the batches of the in-memory
/// datasets the stages used before (`ReferenceInMemoryDatasets.swift`), for ≥ 100 random rows per stage and several
/// `max_seq_len` from one cache. LoRA and distillation train on the SFT dataset (`StageObjective`), so the SFT cases
/// cover them.
final class CacheEquivalenceTests: ScratchDirTestCase {
    var tok: Tokenizer!

    override func setUpWithError() throws {
        try super.setUpWithError()
        tok = try Tokenizer.load(Fixtures.tokenizer)
    }

    func assertSame(_ a: Batch, _ b: Batch, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.batchSize, b.batchSize, what, file: file, line: line)
        XCTAssertEqual(a.seqLen, b.seqLen, what, file: file, line: line)
        XCTAssertEqual(a.inputIds, b.inputIds, "input_ids: " + what, file: file, line: line)
        XCTAssertEqual(a.labels, b.labels, "labels: " + what, file: file, line: line)
        XCTAssertEqual(a.lossMask, b.lossMask, "loss_mask: " + what, file: file, line: line)
        XCTAssertEqual(a.maskCount, b.maskCount, "maskCount: " + what, file: file, line: line)
    }

    static let maxLens = [2, 3, 17, 64, 300]

    /// Builds the cache (small chunks, so lines cross chunk boundaries) twice: uint16 and forced int32 ids.
    func caches(_ path: String, _ kind: TokenCacheKind) throws -> [TokenCache] {
        let c16 = try TokenCache.build(dataPath: path, kind: kind, field: "text", tokenizer: tok, cacheRoot: work + "/c16", threads: 3,
                                       idBytes: nil, chunkBytes: 4096, progress: nil)
        let c32 = try TokenCache.build(dataPath: path, kind: kind, field: "text", tokenizer: tok, cacheRoot: work + "/c32", threads: 2,
                                       idBytes: 4, chunkBytes: 1 << 20, progress: nil)
        XCTAssertEqual(c16.idBytes, 2)
        XCTAssertEqual(c32.idBytes, 4)
        for c in [c16, c32] {
            let size = try FileManager.default.attributesOfItem(atPath: c.directory + "/tokens.bin")[.size] as! NSNumber
            XCTAssertEqual(size.intValue, c.numTokens * c.idBytes)
        }
        return [c16, c32]
    }

    func testSFTAndReasonBatchesEqualTheInMemoryReference() throws {
        var g = RowGenerator(seed: 11)
        let path = try write(g.file(rows: 150) { $0.sftLine() }, "sft.jsonl")
        let cs = try caches(path, .sft)
        for maxLen in Self.maxLens {
            for reason in [false, true] {
                let w = reason ? ReasonTagWeighting(tokenizer: tok) : nil
                let ref = try RefSFTDataset(path: path, tokenizer: tok, maxLength: maxLen, threads: 2,
                                            reasonWeighting: reason ? RefReasonTagWeighting(tokenizer: tok) : nil)
                XCTAssertEqual(ref.count, 150)
                let mem = try SFTDataset(path: path, tokenizer: tok, maxLength: maxLen, threads: 2, reasonWeighting: w)
                XCTAssertEqual(mem.conversations.count, 150)
                XCTAssertEqual(mem.conversations, ref.conversations)
                let sets = [mem] + cs.map { SFTDataset(cache: $0, tokenizer: tok, maxLength: maxLen, reasonWeighting: w) }
                for ds in sets { XCTAssertEqual(ds.count, 150); XCTAssertEqual(ds.seqLen, maxLen - 1) }
                for idx in g.batches(count: 150) {
                    cs[0].releaseResidentPages()   // what every 64 MiB read does: the next reads fault the pages back in
                    let want = ref.batch(indices: idx[...])
                    for (k, ds) in sets.enumerated() {
                        assertSame(try ds.batch(indices: idx[...]), want, "sft reason=\(reason) max_len \(maxLen) set \(k) \(idx)")
                    }
                }
            }
        }
        // The reasoning weights really occur (the comparison covers weighted positions).
        let r = SFTDataset(cache: cs[0], tokenizer: tok, maxLength: 300, reasonWeighting: ReasonTagWeighting(tokenizer: tok))
        XCTAssertTrue(try r.batch(indices: Array(0 ..< 150)[...]).lossMask.contains(10))
    }

    func testDPOBatchesEqualTheInMemoryReference() throws {
        var g = RowGenerator(seed: 22)
        let path = try write(g.file(rows: 120) { $0.dpoLine() }, "dpo.jsonl")
        let cs = try caches(path, .dpo)
        XCTAssertEqual(cs[0].numSequences, 240, "two sequences per pair")
        for maxLen in Self.maxLens {
            let ref = try RefDPODataset(path: path, tokenizer: tok, maxLength: maxLen, threads: 2)
            let mem = try DPODataset(path: path, tokenizer: tok, maxLength: maxLen, threads: 2)
            XCTAssertEqual(mem.chosenConversations, ref.chosenConversations)
            XCTAssertEqual(mem.rejectedConversations, ref.rejectedConversations)
            let sets = [mem] + cs.map { DPODataset(cache: $0, tokenizer: tok, maxLength: maxLen) }
            for ds in sets { XCTAssertEqual(ds.count, 120); XCTAssertEqual(ds.rows(forSamples: 3), 6) }
            for idx in g.batches(count: 120) {
                let want = ref.batch(indices: idx[...])
                for (k, ds) in sets.enumerated() { assertSame(try ds.batch(indices: idx[...]), want, "dpo max_len \(maxLen) set \(k) \(idx)") }
            }
        }
    }

    /// A DPO turn whose role MiniMind's template drops (it would vanish from the rendered pair) is refused with the
    /// file, line and field, by the in-memory reader and the cache builder alike.
    func testDPOTurnOfARoleTheTemplateDropsIsRefused() throws {
        let line = #"{"chosen":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],"rejected":[{"role":"user","content":"q"},{"role":"tool","content":"b"}]}"#
        let path = try write(line + "\n", "dpo-tool.jsonl")
        let want = #"dpo-tool.jsonl:1: field "rejected[1].role" is "tool", a role the chat template does not render"#
        XCTAssertThrowsError(try DPODataset(path: path, tokenizer: tok, maxLength: 32, threads: 1)) { XCTAssertTrue("\($0)".contains(want), "\($0)") }
        XCTAssertThrowsError(try caches(path, .dpo)) { XCTAssertTrue("\($0)".contains(want), "\($0)") }
    }

    func testPretrainBatchesEqualTheInMemoryReference() throws {
        var g = RowGenerator(seed: 33)
        let content = g.file(rows: 200) { $0.pretrainLine() }
        let path = try write(content, "pretrain.jsonl")
        let texts = try content.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            .filter { !$0.allSatisfy { $0 == 32 || $0 == 9 || $0 == 13 } }
            .map { (try JSONSerialization.jsonObject(with: Data($0)) as! [String: String])["text"]! }
        XCTAssertEqual(texts.count, 200)
        let cs = try caches(path, .pretrain)
        for maxLen in Self.maxLens {
            let ref = RefPretrainDataset(texts: texts, tokenizer: tok, maxSeqLen: maxLen)
            let sets = cs.map { PretrainDataset(cache: $0, maxSeqLen: maxLen, padTokenId: tok.padTokenId) }
            for idx in g.batches(count: 200) {
                let want = ref.batch(indices: idx[...])
                for (k, ds) in sets.enumerated() { assertSame(try ds.batch(indices: idx[...]), want, "pretrain max_len \(maxLen) set \(k) \(idx)") }
            }
        }
    }
}
