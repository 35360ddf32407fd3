import XCTest
import TestSupport
import Foundation
@testable import Datasets
import Tokenizers

/// Building, keying and reusing token caches: abandoned builds, errors naming FILE:LINE, blank lines, keys.
final class CacheBuildTests: ScratchDirTestCase {
    var tok: Tokenizer!

    override func setUpWithError() throws {
        try super.setUpWithError()
        tok = try Tokenizer.load(Fixtures.tokenizer)
    }

    static let sftRow = #"{"conversations": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "<think>x</think>\n<answer>好</answer>"}]}"#
    static let dpoRow = #"{"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}]}"#
    static let textRow = #"{"text": "床前明月光"}"#

    /// A pid that no process has: a child that already exited.
    func deadPid() throws -> pid_t {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/true")
        try p.run()
        p.waitUntilExit()
        return p.processIdentifier
    }

    /// A complete-looking cache left under a temporary name (a build killed before its rename) is never opened; the
    /// next build replaces it, removing the temporary directories of dead builders on this host only.
    func testHalfBuiltCacheIsNotUsedAndAbandonedBuildsAreRemoved() throws {
        let path = try write(Self.sftRow + "\n" + Self.sftRow + "\n", "s.jsonl")
        let root = work + "/cache"
        let key = try TokenCacheKey(kind: .sft, tokenizer: tok)
        let dir = TokenCache.directory(for: path, key: key, cacheRoot: root)
        let fm = FileManager.default
        // A finished build, moved back under the temporary name of a process that died before renaming it.
        _ = try TokenCache.build(dataPath: path, kind: .sft, tokenizer: tok, cacheRoot: root, threads: 1)
        let host = TokenCache.hostName()
        let dead = dir + ".tmp-\(host)-\(try deadPid())-12345"
        try fm.moveItem(atPath: dir, toPath: dead)
        let live = dir + ".tmp-\(host)-\(getpid())-777"          // a build still running (this process)
        let other = dir + ".tmp-otherhost-\(try deadPid())-778"  // another host's build on a shared filesystem
        let partial = dir + ".tmp-\(host)-\(try deadPid())-779"  // killed mid-write: no meta.json
        for d in [live, other, partial] { try fm.createDirectory(atPath: d, withIntermediateDirectories: true) }
        _ = fm.createFile(atPath: partial + "/tokens.bin", contents: Data([1, 2, 3]))

        XCTAssertNil(try TokenCache.openIfValid(dataPath: path, key: key, cacheRoot: root), "a temporary directory is never used")
        let (c, built) = try TokenCache.openOrBuild(dataPath: path, kind: .sft, tokenizer: tok, cacheRoot: root, threads: 1)
        XCTAssertTrue(built)
        XCTAssertEqual(c.directory, dir)
        XCTAssertEqual(c.count, 2)
        XCTAssertFalse(fm.fileExists(atPath: dead), "a dead builder's directory is removed")
        XCTAssertFalse(fm.fileExists(atPath: partial))
        XCTAssertTrue(fm.fileExists(atPath: live), "a live builder's directory is left alone")
        XCTAssertTrue(fm.fileExists(atPath: other), "another host's directory is left alone")
        XCTAssertFalse(try TokenCache.openOrBuild(dataPath: path, kind: .sft, tokenizer: tok, cacheRoot: root, threads: 1).built)
    }

    func testTemporaryDirectoryNamesAreParsed() {
        XCTAssertEqual(TokenCache.abandonedBuildPid("a.jsonl-sft-0123.tmp-node-1-42-99", host: "node-1"), 42)
        XCTAssertEqual(TokenCache.abandonedBuildPid("a.jsonl-sft-0123.old-node-1-42-99", host: "node-1"), 42)
        XCTAssertNil(TokenCache.abandonedBuildPid("a.jsonl-sft-0123.tmp-node-2-42-99", host: "node-1"))
        XCTAssertNil(TokenCache.abandonedBuildPid("a.jsonl-sft-0123", host: "node-1"))
        XCTAssertNil(TokenCache.abandonedBuildPid("x.tmp-node-1-abc-99", host: "node-1"))
    }

    /// A malformed line stops the build with FILE:LINE (blank lines counted), whatever the chunk it falls in, and
    /// leaves nothing in the cache root.
    func testMalformedLinesNameFileAndLine() throws {
        let conversation = "an array of {role, content} objects"
        let cases: [(TokenCacheKind, String, String?)] = [
            (.sft, "{\"conversations\": [{\"role\": \"user\", \"content\": \"q\"}", nil),
            (.sft, "{\"conversations\": []}", "field \"conversations\" must be \(conversation), got an empty array"),
            (.sft, "{\"conversations\": \"hello\"}", "field \"conversations\" must be \(conversation), got a string"),
            (.sft, "{\"conversations\": [1, 2]}", "field \"conversations[0]\" must be a {role, content} object, got the number 1"),
            (.sft, "{\"conversations\": [{\"role\": \"user\", \"content\": 3}]}", "field \"conversations[0].content\" must be a string, got the number 3"),
            (.sft, "[1, 2]", "expected a JSON object {…}, got an array"),
            (.dpo, Self.dpoRow.replacingOccurrences(of: "\"rejected\"", with: "\"rej\""), "field \"rejected\" is missing (expected \(conversation))"),
            (.dpo, "{\"chosen\": [{\"content\": \"q\"}], \"rejected\": [{\"role\": \"user\", \"content\": \"q\"}]}",
             "field \"chosen[0].role\" is missing (expected a string)"),
            (.pretrain, "{\"text\": broken}", "malformed JSON at column 10 in $.text: unexpected character 'b', expected a value"),
            (.pretrain, "{\"txt\": \"a\"}", "field \"text\" is missing (expected a string)"),
        ]
        for (n, (kind, bad, expected)) in cases.enumerated() {
            let good = kind == .sft ? Self.sftRow : kind == .dpo ? Self.dpoRow : Self.textRow
            // Lines: good, blank, good × 40, bad (line 43), good.
            let content = [good, "  "] + [String](repeating: good, count: 40) + [bad, good]
            let path = try write(content.joined(separator: "\n") + "\n", "bad\(n).jsonl")
            let root = work + "/bad-cache-\(n)"
            for chunk in [512, 1 << 20] {
                XCTAssertThrowsError(try TokenCache.build(dataPath: path, kind: kind, field: "text", tokenizer: tok, cacheRoot: root,
                                                          threads: 2, idBytes: nil, chunkBytes: chunk, progress: nil)) { e in
                    XCTAssertTrue("\(e)".hasPrefix("\(path):43: "), "\(kind) chunk \(chunk): \(e)")
                    XCTAssertNotNil(e as? JSONLError, "\(e)")
                    if let r = expected { XCTAssertEqual(e as? JSONLError, JSONLError(path: path, line: 43, reason: r)) }
                }
                XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: root), [], "nothing half-written")
            }
            // The in-memory loader of the evaluation code reports the same line.
            if kind != .pretrain {
                XCTAssertThrowsError(try TokenCache.load(dataPath: path, kind: kind, tokenizer: tok, threads: 2)) { e in
                    XCTAssertTrue("\(e)".hasPrefix("\(path):43: "), "\(e)")
                }
            }
        }
    }

    /// Blank lines (empty, spaces, tabs, a lone `\r`) are skipped by every kind; a file of blank lines has no samples.
    func testBlankLinesAreSkippedEverywhere() throws {
        for kind in TokenCacheKind.allCases {
            let row = kind == .sft ? Self.sftRow : kind == .dpo ? Self.dpoRow : Self.textRow
            let path = try write("\n" + row + "\r\n\n   \n\t\n\r\n" + row + "\n \t \n", "blank-\(kind).jsonl")
            let c = try TokenCache.build(dataPath: path, kind: kind, tokenizer: tok, cacheRoot: work + "/blank", threads: 2)
            XCTAssertEqual(c.count, 2, "\(kind)")
            XCTAssertEqual(try c.sequence(0), try c.sequence(c.numSequences / 2), "\(kind)")
            let empty = try write("\n  \n\r\n", "empty-\(kind).jsonl")
            XCTAssertThrowsError(try TokenCache.build(dataPath: empty, kind: kind, tokenizer: tok, cacheRoot: work + "/blank", threads: 2)) {
                XCTAssertEqual($0 as? DataError, .empty(path: empty))
            }
        }
    }

    /// The key: one cache per kind, reused across `max_seq_len`, rebuilt when the chat template changes.
    /// A data file with a long (legal) name still gets a cache (the directory name keeps 96 bytes of it); a cache root
    /// that is a file, or under one, is a named error, not a Foundation dump.
    func testLongFileNamesAndBadCacheRoots() throws {
        let long = String(repeating: "名", count: 80) + String(repeating: "n", count: 5) + ".jsonl"   // 245 bytes
        let path = try write(Self.textRow + "\n", long)
        let c = try TokenCache.build(dataPath: path, kind: .pretrain, tokenizer: tok, cacheRoot: work + "/long", threads: 1)
        XCTAssertEqual(c.count, 1)
        XCTAssertLessThanOrEqual((c.directory as NSString).lastPathComponent.utf8.count, 96 + 40)
        XCTAssertFalse(try TokenCache.openOrBuild(dataPath: path, kind: .pretrain, tokenizer: tok, cacheRoot: work + "/long", threads: 1).built)
        let file = try write("", "not-a-dir")
        for root in [file, file + "/sub"] {
            XCTAssertThrowsError(try TokenCache.build(dataPath: path, kind: .pretrain, tokenizer: tok, cacheRoot: root, threads: 1)) {
                let m = "\($0)"
                XCTAssertTrue(m.hasPrefix(root + ": ") && m.contains("--cache-dir") && m.contains("ot a directory"), m)
            }
        }
    }

    func testKeysSeparateKindsAndTemplates() throws {
        let path = try write(Self.sftRow + "\n", "k.jsonl")
        let root = work + "/keys"
        let sft = try TokenCacheKey(kind: .sft, tokenizer: tok)
        let dpo = try TokenCacheKey(kind: .dpo, tokenizer: tok)
        let pre = try TokenCacheKey(kind: .pretrain, tokenizer: tok)
        let dirs = Set([sft, dpo, pre].map { TokenCache.directory(for: path, key: $0, cacheRoot: root) })
        XCTAssertEqual(dirs.count, 3)
        XCTAssertEqual(sft.roleRule, "parity")
        XCTAssertEqual(dpo.roleRule, "given")

        // Another chat template (plain ChatML) renders other ids: another key and directory.
        let dir = work + "/tok-chatml"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Fixtures.tokenizer + "/tokenizer.json", toPath: dir + "/tokenizer.json")
        var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.tokenizer + "/tokenizer_config.json"))) as! [String: Any]
        cfg["chat_template"] = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
        try JSONSerialization.data(withJSONObject: cfg).write(to: URL(fileURLWithPath: dir + "/tokenizer_config.json"))
        let chatml = try Tokenizer.load(dir)
        let k2 = try TokenCacheKey(kind: .sft, tokenizer: chatml)
        XCTAssertNotEqual(k2.chatTemplate, sft.chatTemplate)
        XCTAssertNotEqual(k2.probe, sft.probe)
        XCTAssertNotEqual(TokenCache.directory(for: path, key: k2, cacheRoot: root), TokenCache.directory(for: path, key: sft, cacheRoot: root))

        // One build serves every max_seq_len.
        let (c, built) = try TokenCache.openOrBuild(dataPath: path, kind: .sft, tokenizer: tok, cacheRoot: root, threads: 1)
        XCTAssertTrue(built)
        for maxLen in [2, 8, 1024] {
            let (again, rebuilt) = try TokenCache.openOrBuild(dataPath: path, kind: .sft, tokenizer: tok, cacheRoot: root, threads: 1)
            XCTAssertFalse(rebuilt)
            XCTAssertEqual(try SFTDataset(cache: again, tokenizer: tok, maxLength: maxLen).sample(0),
                           try SFTDataset(cache: c, tokenizer: tok, maxLength: maxLen).sample(0))
        }
        // A cache of an older format version (meta.json without the v2 fields) is rebuilt.
        let metaPath = c.directory + "/meta.json"
        var meta = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: metaPath))) as! [String: Any]
        meta["formatVersion"] = 1
        try JSONSerialization.data(withJSONObject: meta).write(to: URL(fileURLWithPath: metaPath))
        XCTAssertTrue(try TokenCache.openOrBuild(dataPath: path, kind: .sft, tokenizer: tok, cacheRoot: root, threads: 1).built)
    }

    /// Progress is reported after every chunk, with the bytes read up to the file size.
    func testBuildReportsProgress() throws {
        let path = try write(String(repeating: Self.textRow + "\n", count: 500), "p.jsonl")
        var reports: [TokenCacheBuildProgress] = []
        _ = try TokenCache.build(dataPath: path, kind: .pretrain, field: "text", tokenizer: tok, cacheRoot: work + "/p", threads: 2,
                                 idBytes: nil, chunkBytes: 2048) { reports.append($0) }
        XCTAssertGreaterThan(reports.count, 5)
        XCTAssertEqual(reports.last?.samples, 500)
        XCTAssertEqual(reports.last?.bytesRead, reports.last?.totalBytes)
        XCTAssertEqual(reports.map(\.samples), reports.map(\.samples).sorted())
    }

    /// A file cut mid-line while it is being tokenized reports the change, not a "malformed" line that is fine in
    /// the file as it was.
    func testFileCutDuringTheBuildIsReportedAsChanged() throws {
        let row = #"{"text": "床前明月光，疑是地上霜。举头望明月，低头思故乡。"}"#
        let path = try write(String(repeating: row + "\n", count: 400), "cut.jsonl")
        var cut = false
        XCTAssertThrowsError(try TokenCache.build(dataPath: path, kind: .pretrain, field: "text", tokenizer: tok,
                                                  cacheRoot: work + "/cut", threads: 1, idBytes: nil, chunkBytes: 4096) { _ in
            guard !cut else { return }
            cut = true
            XCTAssertEqual(truncate(path, off_t((row.utf8.count + 1) * 300 + 10)), 0)   // line 301 cut to `{"text": "`
        }) { e in
            XCTAssertTrue("\(e)".contains("the file changed while it was being tokenized") && "\(e)".contains("at line 301"), "\(e)")
        }
    }

    /// A whole-file JSON array (one enormous line starting with `[`) is refused from its first chunk, with a hint,
    /// instead of being read into memory and parsed.
    func testJSONArrayFileIsRefusedFromItsFirstChunk() throws {
        let body = String(repeating: Self.textRow + ", ", count: 40_000)   // ~1.3 MB on one line
        let path = try write("[" + body + Self.textRow + "]\n", "array.json")
        let reader = try JSONLReader(path: path, chunkBytes: 16 << 10)
        XCTAssertThrowsError(try reader.nextLines()) { e in
            XCTAssertEqual("\(e)", "\(path):1: expected a JSON object {…}, got an array (a JSON array file? jsonl has one object per line: `jq -c '.[]' FILE > FILE.jsonl` converts one)")
        }
        XCTAssertEqual(reader.bytesRead, 16 << 10, "one chunk read")
        // Through a cache build, the same message.
        XCTAssertThrowsError(try TokenCache.build(dataPath: path, kind: .pretrain, field: "text", tokenizer: tok,
                                                  cacheRoot: work + "/arr", threads: 1)) { e in
            XCTAssertTrue("\(e)".hasPrefix("\(path):1: expected a JSON object {…}, got an array (a JSON array file?"), "\(e)")
        }
    }
}
