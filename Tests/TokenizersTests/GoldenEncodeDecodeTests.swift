import Foundation
import XCTest
@testable import Tokenizers
import TestSupport

/// Golden: `Tests/Fixtures/golden/tokenizer/tokenizer_cases.jsonl`, computed with Hugging Face `tokenizers` 0.23.
final class GoldenEncodeDecodeTests: XCTestCase {
    func testLoadsMiniMind() throws {
        let tk = try Fixtures.miniMind()
        XCTAssertEqual(tk.vocabSize, 6400)
        XCTAssertEqual(tk.padTokenId, 0)
        XCTAssertEqual(tk.bosTokenId, 1)
        XCTAssertEqual(tk.eosTokenId, 2)
        XCTAssertEqual(tk.tokenToId("<|im_end|>"), 2)
        XCTAssertEqual(tk.fingerprint.count, 32)
        XCTAssertEqual(tk.fingerprint, try Tokenizer.load(Fixtures.miniMindDir + "/tokenizer.json").fingerprint)
    }

    func testAllGoldenCasesEncodeAndDecode() throws {
        let tk = try Fixtures.miniMind()
        let rows = try Fixtures.jsonl("golden/tokenizer/tokenizer_cases.jsonl")
        XCTAssertEqual(rows.count, 320)
        var encodeOK = 0, decodeOK = 0
        for (i, r) in rows.enumerated() {
            let text = r["text"] as! String
            let ids = ints(r["ids"])
            let got = tk.encode(text)
            if got == ids { encodeOK += 1 } else {
                let firstDiff = (0..<min(got.count, ids.count)).first { got[$0] != ids[$0] } ?? min(got.count, ids.count)
                XCTFail("case \(i): encode differs at index \(firstDiff): got \(got.count) ids, want \(ids.count); text \(text.prefix(60).debugDescription)")
            }
            let dec = try tk.decode(ids)
            if dec == r["decoded"] as! String { decodeOK += 1 } else { XCTFail("case \(i): decode differs") }
        }
        XCTAssertEqual(encodeOK, 320)
        XCTAssertEqual(decodeOK, 320)
    }

    func testBatchEncodeMatchesSingle() throws {
        let tk = try Fixtures.miniMind()
        let texts = try Fixtures.jsonl("golden/tokenizer/tokenizer_cases.jsonl").map { $0["text"] as! String }
        let batch = tk.encode(batch: texts, threads: 4)
        XCTAssertEqual(batch.count, texts.count)
        for (t, ids) in zip(texts, batch) { XCTAssertEqual(ids, tk.encode(t)) }
    }

    func testSkipSpecialTokens() throws {
        let tk = try Fixtures.miniMind()
        let ids = tk.encode("<|im_start|>user\n你好<|im_end|>\n")
        XCTAssertEqual(ids.first, 1)
        XCTAssertEqual(try tk.decode(ids, skipSpecialTokens: true), "user\n你好\n")
        XCTAssertEqual(try tk.decode(ids), "<|im_start|>user\n你好<|im_end|>\n")
    }

    func testDecodeOutOfRangeThrows() throws {
        let tk = try Fixtures.miniMind()
        XCTAssertThrowsError(try tk.decode([5, 6400])) { e in
            XCTAssertEqual(e as? TokenizerError, .idOutOfRange(id: 6400, vocabSize: 6400))
        }
        XCTAssertThrowsError(try tk.decode([-1]))
    }

    /// An id a larger model generated (padded vocabulary, or another model's tokenizer) is named with both sizes;
    /// with a model no larger than the tokenizer the plain error passes through.
    func testGeneratedIdBeyondTheTokenizerNamesBothSizes() throws {
        let tk = try Fixtures.miniMind()
        XCTAssertThrowsError(try tk.decodingGenerated(modelVocabSize: 8192) { try tk.decode([5, 7000]) }) { e in
            XCTAssertEqual(e as? TokenizerError, .generatedIdOutOfRange(id: 7000, tokenizerVocabSize: 6400, modelVocabSize: 8192))
            XCTAssertTrue("\(e)".contains("the tokenizer has 6400 ids, the model's vocab_size is 8192"), "\(e)")
        }
        XCTAssertThrowsError(try tk.decodingGenerated(modelVocabSize: 6400) { try tk.decode([6400]) }) { e in
            XCTAssertEqual(e as? TokenizerError, .idOutOfRange(id: 6400, vocabSize: 6400))
        }
        XCTAssertEqual(try tk.decodingGenerated(modelVocabSize: 8192) { try tk.decode([5]) }, try tk.decode([5]))
        XCTAssertNil(tk.vocabularyGapNote(modelVocabSize: 6400, source: "m"))
        XCTAssertEqual(tk.vocabularyGapNote(modelVocabSize: 8192, source: "m")?.contains("ids 6400..<8192 cannot be decoded"), true)
    }

    /// Ill-formed UTF-8 is replaced per maximal subpart, like Rust's `from_utf8_lossy`.
    func testInvalidUTF8Replacement() throws {
        let tk = try Fixtures.miniMind()
        func byteId(_ b: UInt8) -> Int32 { tk.tokenToId(ByteLevel.byteStrings[Int(b)])! }
        XCTAssertEqual(try tk.decode([byteId(0xE4), byteId(0xBD), byteId(0x61)]), "\u{FFFD}a")
        XCTAssertEqual(try tk.decode([byteId(0xFF), byteId(0xE4), byteId(0xBD), byteId(0xA0)]), "\u{FFFD}你")
        XCTAssertEqual(try tk.decode([byteId(0xED), byteId(0xA0), byteId(0x80)]), "\u{FFFD}\u{FFFD}\u{FFFD}")
        XCTAssertEqual(try tk.decode([byteId(0xF0), byteId(0x9F), byteId(0x98)]), "\u{FFFD}")
    }

    func testStreamDecoderEmitsWholeCharacters() throws {
        let tk = try Fixtures.miniMind()
        let rows = try Fixtures.jsonl("golden/tokenizer/tokenizer_cases.jsonl")
        for r in rows.prefix(80) {
            let ids = ints(r["ids"])
            let sd = tk.makeStreamDecoder()
            var acc = ""
            for id in ids {
                let piece = try sd.push(id)
                XCTAssertFalse(piece.unicodeScalars.contains("\u{FFFD}"))
                acc += piece
            }
            acc += sd.flush()
            XCTAssertEqual(acc, r["decoded"] as! String)
        }
        let sd = tk.makeStreamDecoder()
        let e4 = tk.tokenToId(ByteLevel.byteStrings[0xE4])!
        XCTAssertEqual(try sd.push(e4), "")
        XCTAssertEqual(sd.flush(), "\u{FFFD}")
    }
}

final class EncodeFileTests: XCTestCase {
    func testEncodeJSONLMatchesPerTextEncode() throws {
        let tk = try Fixtures.miniMind()
        let path = Fixtures.path("golden/tokenizer/tokenizer_cases.jsonl")
        let rows = try Fixtures.jsonl("golden/tokenizer/tokenizer_cases.jsonl")
        var got: [[Int32]] = []
        try tk.encodeJSONL(path: path, threads: 3, chunkLines: 50) { got += $0 }
        XCTAssertEqual(got, rows.map { ints($0["ids"]) })
    }
}
