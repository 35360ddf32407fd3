import XCTest
@testable import Datasets
import Tokenizers

final class SamplerTests: XCTestCase {
    func testTorchLayoutPaddingAndStriding() {
        let n = 5
        let s0 = DistributedSampler(datasetSize: n, worldSize: 2, rank: 0, seed: 7)
        let s1 = DistributedSampler(datasetSize: n, worldSize: 2, rank: 1, seed: 7)
        let order = s0.order(epoch: 3)
        XCTAssertEqual(order.sorted(), Array(0 ..< n))
        // torch: pad to 6 by repeating the head, then rank::world.
        XCTAssertEqual(s0.indices(epoch: 3), [order[0], order[2], order[4]])
        XCTAssertEqual(s1.indices(epoch: 3), [order[1], order[3], order[0]])
        XCTAssertEqual(s0.numSamples(), 3)
    }

    func testSeededPerEpochShuffle() {
        let a = DistributedSampler(datasetSize: 1000, worldSize: 1, rank: 0, seed: 42)
        let b = DistributedSampler(datasetSize: 1000, worldSize: 1, rank: 0, seed: 42)
        XCTAssertEqual(a.order(epoch: 0), b.order(epoch: 0))
        XCTAssertNotEqual(a.order(epoch: 0), a.order(epoch: 1))
        XCTAssertNotEqual(a.order(epoch: 0), Array(0 ..< 1000))
        XCTAssertEqual(a.order(epoch: 1).sorted(), Array(0 ..< 1000))
        // seed + epoch: (seed 42, epoch 1) is the same order as (seed 43, epoch 0), as torch's set_epoch.
        XCTAssertEqual(a.order(epoch: 1), DistributedSampler(datasetSize: 1000, worldSize: 1, rank: 0, seed: 43).order(epoch: 0))
    }

    func testShardsAreDisjointAndCoverTheData() {
        for world in 1 ... 4 {
            let n = 103
            let shards = (0 ..< world).map { DistributedSampler(datasetSize: n, worldSize: world, rank: $0, seed: 1).indices(epoch: 0) }
            XCTAssertTrue(shards.allSatisfy { $0.count == (n + world - 1) / world })
            XCTAssertEqual(Set(shards.flatMap { $0 }), Set(0 ..< n))
            XCTAssertEqual(shards.flatMap { $0 }.count - n, (world - n % world) % world)
        }
    }

    /// Step k of any geometry with the same global batch consumes the same global positions, so the np 2 / np 1 / accumulation
    /// set-ups see the same samples per optimizer step, and a resumed run (any world size) continues at the same sample.
    func testGlobalPositionsAreIndependentOfWorldSize() {
        let n = 64, B = 4
        let order = DistributedSampler(datasetSize: n, worldSize: 1, rank: 0, seed: 9).order(epoch: 0)
        let w2 = (0 ..< 2).map { DistributedSampler(datasetSize: n, worldSize: 2, rank: $0, seed: 9).indices(epoch: 0) }
        for k in 0 ..< n / (2 * B) {
            let np2 = Set(w2[0][k * B ..< (k + 1) * B] + w2[1][k * B ..< (k + 1) * B])
            XCTAssertEqual(np2, Set(order[k * 2 * B ..< (k + 1) * 2 * B]))
        }
        // Resume at global position 24 with world 3: ranks take 24+r, 27+r, ...
        let P = 24
        let w3 = (0 ..< 3).map { DistributedSampler(datasetSize: n, worldSize: 3, rank: $0, seed: 9).indices(epoch: 0, startPosition: P) }
        XCTAssertEqual(w3[0].first, order[P]); XCTAssertEqual(w3[1].first, order[P + 1]); XCTAssertEqual(w3[2].first, order[P + 2])
        // 40 remaining samples padded to 42 with the head of the epoch order, as torch pads.
        XCTAssertEqual(w3.flatMap { $0 }.count, 42)
        XCTAssertEqual(Set(w3.flatMap { $0 }), Set(order[P...]).union([order[0], order[1]]))
    }
}

final class JSONLReaderTests: XCTestCase {
    func tmpFile(_ content: String) throws -> String {
        let p = NSTemporaryDirectory() + "swiftmind-jsonl-\(UUID().uuidString).jsonl"
        try content.write(toFile: p, atomically: true, encoding: .utf8)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: p) }
        return p
    }

    func readAll(_ path: String, chunk: Int) throws -> [String] {
        let r = try JSONLReader(path: path, chunkBytes: chunk)
        var out: [String] = []
        while let lines = try r.nextLines() { out += try lines.map { try JSONLReader.string(field: "text", of: $0, path: path) } }
        return out
    }

    func testLinesAcrossChunkBoundariesAndCRLF() throws {
        let texts = (0 ..< 50).map { "第\($0)行 — line \($0) \"quoted\"\n\tnext" }
        var content = ""
        for (i, t) in texts.enumerated() {
            let d = try JSONSerialization.data(withJSONObject: ["text": t])
            content += String(decoding: d, as: UTF8.self) + (i % 3 == 0 ? "\r\n" : "\n")
        }
        content.removeLast()   // last line without newline
        let p = try tmpFile(content)
        for chunk in [7, 64, 1 << 20] { XCTAssertEqual(try readAll(p, chunk: chunk), texts, "chunk \(chunk)") }
    }

    func testMalformedLineNamesFileAndLine() throws {
        let p = try tmpFile("{\"text\": \"a\"}\n{\"text\": \"b\"}\n{\"text\": \"c\"\n{\"text\": \"d\"}\n")
        XCTAssertThrowsError(try readAll(p, chunk: 5)) { e in
            XCTAssertEqual(e as? JSONLError, JSONLError(path: p, line: 3, reason: "malformed JSON at column 13: unexpected end of the line inside an object"))
            XCTAssertTrue("\(e)".hasPrefix("\(p):3: "), "\(e)")
        }
        let q = try tmpFile("{\"text\": \"a\"}\n{\"txt\": \"b\"}\n")
        XCTAssertThrowsError(try readAll(q, chunk: 1 << 20)) { e in
            XCTAssertEqual(e as? JSONLError, JSONLError(path: q, line: 2, reason: "field \"text\" is missing (expected a string)"))
        }
        // A blank line is skipped (the one rule of every reader), and still counted in the numbers of the lines after it.
        let r = try tmpFile("{\"text\": \"a\"}\n\n{\"text\": \"b\"}\n{\"text\": 1}\n")
        XCTAssertThrowsError(try readAll(r, chunk: 1 << 20)) { e in
            XCTAssertEqual("\(e)", "\(r):4: field \"text\" must be a string, got the number 1")
        }
    }

    /// Lines the JSON parser refuses for reasons other than syntax get a located message too, and never crash the
    /// reader: nesting far past the parser's 512 levels (the locator once recursed until the stack overflowed), lone
    /// UTF-16 surrogates, and control bytes (shown as hex, never echoed raw to the terminal).
    func testDeepNestingSurrogatesAndControlBytesAreNamed() throws {
        let deep = "{\"text\": " + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}"
        let cases: [(String, String)] = [
            (deep, "malformed JSON at column 521 in $.text[0][0][0]…(512 levels)…[0][0]: arrays and objects nested deeper than 512 levels (the JSON parser's limit)"),
            ("{\"text\": \"he\\ud800llo\"}", "malformed JSON at column 13 in $.text: lone high surrogate \\uD800 (not followed by a low surrogate \\uDC00–\\uDFFF)"),
            ("{\"text\": \"\\udc00\"}", "malformed JSON at column 11 in $.text: lone low surrogate \\uDC00 (not preceded by a high surrogate)"),
            ("\u{0}{\"text\": \"a\"}", "malformed JSON at column 1: unexpected byte 0x00, expected a value"),
            ("{\"text\": \"a\u{1B}b\"}", "malformed JSON at column 12 in $.text: byte 0x1B (a control character) in a string; write it as a \\u escape"),
        ]
        for (line, reason) in cases {
            let p = try tmpFile("{\"text\": \"ok\"}\n" + line + "\n")
            XCTAssertThrowsError(try readAll(p, chunk: 1 << 20)) { e in XCTAssertEqual("\(e)", "\(p):2: \(reason)") }
        }
        // A surrogate pair is fine.
        let ok = try tmpFile("{\"text\": \"\\ud83d\\ude00\"}\n")
        XCTAssertEqual(try readAll(ok, chunk: 1 << 20), ["\u{1F600}"])
    }
}
