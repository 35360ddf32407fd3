import XCTest
import TestSupport
import Foundation
@testable import Datasets
import Tokenizers

/// MiniMind pretrain sample semantics and the token cache, with MiniMind's real tokenizer.
final class DataCacheTests: ScratchDirTestCase {
    var tok: Tokenizer!

    override func setUpWithError() throws {
        try super.setUpWithError()
        tok = try Tokenizer.load(TrainerRunner.tokenizer)
    }

    func write(_ texts: [String], to name: String) throws -> String {
        let p = work + "/" + name
        let lines = try texts.map { String(decoding: try JSONSerialization.data(withJSONObject: ["text": $0]), as: UTF8.self) }
        try (lines.joined(separator: "\n") + "\n").write(toFile: p, atomically: false, encoding: .utf8)
        return p
    }

    /// X = ids[:-1], Y = ids[1:], loss_mask = (Y != pad), ids = encode(text) (no special tokens) truncated / padded with 0.
    func testSamplesMatchMiniMindPretrainDataset() throws {
        let texts = ["床前明月光，疑是地上霜。", String(repeating: "The error of youth is to believe. ", count: 20), "a",
                     "<|im_start|>literal special<|im_end|>"]
        let path = try write(texts, to: "s.jsonl")
        let cache = try TokenCache.build(dataPath: path, tokenizer: tok, cacheRoot: work + "/cache", threads: 2)
        XCTAssertEqual(cache.count, texts.count)
        let maxLen = 24
        let ds = PretrainDataset(cache: cache, maxSeqLen: maxLen, padTokenId: tok.padTokenId)
        XCTAssertEqual(ds.seqLen, maxLen - 1)
        for (i, t) in texts.enumerated() {
            let enc = tok.encode(t)
            XCTAssertEqual(try cache.sequence(i), enc, "cache holds encode(text) without special tokens")
            var ids = Array(enc.prefix(maxLen))
            ids += [Int32](repeating: 0, count: maxLen - ids.count)
            let b = try ds.batch(indices: [i][...])
            XCTAssertEqual(b.inputIds, Array(ids.dropLast()))
            XCTAssertEqual(b.labels, Array(ids.dropFirst()))
            XCTAssertEqual(b.lossMask, ids.dropFirst().map { $0 != 0 ? 1 : 0 })
            XCTAssertEqual(b.maskCount, ids.dropFirst().filter { $0 != 0 }.count)
        }
        // The short sample is mostly padding, the long one fully masked in.
        XCTAssertEqual(try ds.batch(indices: [1][...]).maskCount, maxLen - 1)
        XCTAssertEqual(try ds.batch(indices: [2][...]).maskCount, 0, "one token: Y is all padding")
        XCTAssertEqual(try cache.sequence(3).first, 1, "special tokens written in the text are matched (<|im_start|> = 1)")
    }

    func testCacheIsReusedAndRebuiltWhenTheSourceChanges() throws {
        let path = try write(["one", "two", "three"], to: "c.jsonl")
        let root = work + "/cache"
        let (c1, built1) = try TokenCache.openOrBuild(dataPath: path, tokenizer: tok, cacheRoot: root, threads: 2)
        XCTAssertTrue(built1)
        let (c2, built2) = try TokenCache.openOrBuild(dataPath: path, tokenizer: tok, cacheRoot: root, threads: 2)
        XCTAssertFalse(built2, "unchanged source and tokenizer: reused")
        XCTAssertEqual(c2.directory, c1.directory)
        XCTAssertEqual(c2.count, 3)
        // Changed content (same size!) → rebuilt.
        Thread.sleep(forTimeInterval: 0.01)
        _ = try write(["ONE", "two", "three"], to: "c.jsonl")
        let (c3, built3) = try TokenCache.openOrBuild(dataPath: path, tokenizer: tok, cacheRoot: root, threads: 2)
        XCTAssertTrue(built3)
        XCTAssertEqual(try c3.sequence(0), tok.encode("ONE"))
        // Appended line → rebuilt with 4 samples.
        _ = try write(["ONE", "two", "three", "four"], to: "c.jsonl")
        let (c4, built4) = try TokenCache.openOrBuild(dataPath: path, tokenizer: tok, cacheRoot: root, threads: 2)
        XCTAssertTrue(built4)
        XCTAssertEqual(c4.count, 4)
        // Another tokenizer → another cache directory.
        var otherKey = try TokenCacheKey(kind: .pretrain, tokenizer: tok)
        otherKey.tokenizerFingerprint += "x"
        let other = TokenCache.directory(for: path, key: otherKey, cacheRoot: root)
        XCTAssertNotEqual(other, c4.directory)
        // No temporary directories left behind.
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: root).filter { $0.contains(".tmp-") || $0.contains(".old-") }
        XCTAssertEqual(leftovers, [])
    }

    /// An inconsistent index (offsets not increasing / outside tokens.bin) is detected on open and rebuilt. Ids are
    /// validated when the cache is built and not re-read on reuse (the key is trusted), so an id changed in tokens.bin
    /// afterwards is refused when a batch reads it, with an error naming the cache directory.
    func testInconsistentCacheIsRebuiltAndACorruptIdIsRefusedWhenRead() throws {
        let path = try write(["one two", "three four five"], to: "inc.jsonl")
        let root = work + "/cache-inc"
        let dir = try TokenCache.openOrBuild(dataPath: path, tokenizer: tok, cacheRoot: root, threads: 1).0.directory
        func patch(_ file: String, at offset: UInt64, _ bytes: [UInt8]) throws {
            let h = try XCTUnwrap(FileHandle(forUpdatingAtPath: dir + "/" + file))
            try h.seek(toOffset: offset); try h.write(contentsOf: Data(bytes)); try h.close()
        }
        func meta() throws -> TokenCacheMeta {
            try JSONDecoder().decode(TokenCacheMeta.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/meta.json")))
        }
        try patch("index.bin", at: 8, withUnsafeBytes(of: UInt64(1_000_000).littleEndian) { Array($0) })
        XCTAssertThrowsError(try TokenCache(directory: dir, meta: try meta()))
        let (c, built) = try TokenCache.openOrBuild(dataPath: path, tokenizer: tok, cacheRoot: root, threads: 1)
        XCTAssertTrue(built, "index.bin: the corrupt cache must be rebuilt")
        XCTAssertEqual(try c.sequence(1), tok.encode("three four five"))

        XCTAssertEqual(try meta().idBytes, 2, "MiniMind's 6400-id vocab is stored as uint16")
        try patch("tokens.bin", at: 0, withUnsafeBytes(of: UInt16(60_000).littleEndian) { Array($0) })
        let (c2, built2) = try TokenCache.openOrBuild(dataPath: path, tokenizer: tok, cacheRoot: root, threads: 1)
        XCTAssertFalse(built2, "the key is trusted: tokens.bin is not read on reuse")
        let ds = PretrainDataset(cache: c2, maxSeqLen: 8)
        XCTAssertNoThrow(try ds.batch(indices: [1][...]), "sample 1 is intact")
        XCTAssertThrowsError(try ds.batch(indices: [0][...])) { e in
            guard case .badCache(let p, let reason)? = e as? DataError else { return XCTFail("\(e)") }
            XCTAssertEqual(p, dir)
            XCTAssertTrue(reason.contains("outside [0, \(tok.vocabSize))"), reason)
        }
    }

    func testMalformedLineErrorNamesFileAndLineAndLeavesNoCache() throws {
        let p = work + "/bad.jsonl"
        try "{\"text\": \"fine\"}\n{\"text\": \"fine\"}\n{\"text\": 3}\n".write(toFile: p, atomically: true, encoding: .utf8)
        let root = work + "/cache"
        XCTAssertThrowsError(try TokenCache.build(dataPath: p, tokenizer: tok, cacheRoot: root, threads: 2)) { e in
            XCTAssertEqual(e as? JSONLError, JSONLError(path: p, line: 3, reason: "field \"text\" must be a string, got the number 3"))
            XCTAssertTrue("\(e)".hasPrefix("\(p):3:"), "\(e)")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root), [], "nothing half-written")
    }
}
