import XCTest
import TestSupport
import Foundation
@testable import Datasets
import Tokenizers

/// Opt-in (`SWIFTMIND_LONG_TESTS=1`, ~20 s): random reads over a cache much larger than the 64 MiB budget keep the
/// file-backed resident set of the process bounded (the mapped pages are dropped as reads accumulate).
final class ResidentPagesTests: XCTestCase {
    /// Resident file-backed (+ shared memory) pages of this process, in bytes (`/proc/self/statm` field 3).
    func residentFileBytes() throws -> Int {
        let f = try String(contentsOfFile: "/proc/self/statm", encoding: .utf8).split(separator: " ")
        return Int(f[2])! * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    func testRandomReadsKeepMappedPagesBounded() throws {
        guard ProcessInfo.processInfo.environment["SWIFTMIND_LONG_TESTS"] == "1" else {
            throw XCTSkip("set SWIFTMIND_LONG_TESTS=1 to run (builds a ~200 MB cache)")
        }
        let work = Fixtures.tempDir("resident")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let tok = try Tokenizer.load(Fixtures.tokenizer)
        // ~50 M ids as int32: a 200 MB tokens.bin (written by this process, so its page cache may hold large folios
        // that one fault maps whole), rows of ~2500 ids.
        var g = RowGenerator(seed: 5)
        let path = work + "/big.jsonl"
        FileManager.default.createFile(atPath: path, contents: nil)
        let h = try XCTUnwrap(FileHandle(forWritingAtPath: path))
        let words = (0 ..< 500).map { _ in g.text(maxPieces: 6) }
        for _ in 0 ..< 20_000 {
            var t = ""
            for _ in 0 ..< 400 { t += words[g.int(words.count)] }
            try h.write(contentsOf: Data((g.json(["text": t]) + "\n").utf8))
        }
        try h.close()
        let c = try TokenCache.build(dataPath: path, kind: .pretrain, tokenizer: tok, cacheRoot: work + "/cache",
                                     threads: ProcessInfo.processInfo.activeProcessorCount, idBytes: 4)
        XCTAssertGreaterThan(c.numTokens * 4, 150 << 20)
        let ds = PretrainDataset(cache: c, maxSeqLen: 512)
        let start = try residentFileBytes()
        var peak = start
        for _ in 0 ..< 2000 {
            let idx = (0 ..< 1 + g.int(40)).map { _ in g.int(ds.count) }   // peaks sampled at every phase of the budget
            _ = try ds.batch(indices: idx[...])
            peak = max(peak, try residentFileBytes())
        }
        XCTAssertLessThanOrEqual(peak - start, 64 << 20, "mapped pages of tokens.bin (\(c.numTokens * 4 >> 20) MiB) stay within the 64 MiB budget")
    }
}
