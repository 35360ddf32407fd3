import XCTest
import Foundation
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The committed splits (`data/splits/`, made by `scripts/make_splits.py`) hold no validation or test prompt or
/// answer in any training file of any stage (issue 17). This is a second implementation of the rule of the script's
/// docstring and `data/splits/README.md`, in Swift, so the suite checks the files without Python: after normalising
/// whitespace, no held-out user turn (except the follow-up "下一句呢？") or answer (assistant turns, DPO chosen and
/// rejected) equals a turn of a `_train` file; no held-out user turn, and no answer of ≥ 8 characters, occurs inside
/// one; validation and test share no turn. A violation names the held-out file and line, the training file and line,
/// and the text.
final class OverlapCheckTests: ScratchDirTestCase {
    static let splits = Fixtures.packageRoot + "/data/splits"
    static let stages = ["sft", "dpo", "reason", "lora_identity"]
    static let followUps: Set<String> = ["下一句呢？"]
    static let minAnswerSubstring = 8

    /// Whitespace runs → one space, ends stripped (Python's `" ".join(s.split())`).
    static func norm(_ s: String) -> String { s.split(whereSeparator: { $0.isWhitespace }).joined(separator: " ") }

    /// (role, text) of every turn of a row: SFT-format conversations, or a DPO pair's chosen turns and its rejected answer.
    static func turns(_ line: String, file: String, lineNumber: Int) throws -> [(role: String, text: String)] {
        guard let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw NSError(domain: "\(file):\(lineNumber): not a JSON object", code: 1)
        }
        func list(_ key: String) throws -> [(String, String)] {
            guard let a = obj[key] as? [[String: Any]] else { throw NSError(domain: "\(file):\(lineNumber): no \(key) list", code: 1) }
            return try a.map {
                guard let r = $0["role"] as? String, let c = $0["content"] as? String else {
                    throw NSError(domain: "\(file):\(lineNumber): a turn without role/content", code: 1) }
                return (r, c)
            }
        }
        if obj["conversations"] != nil { return try list("conversations").map { (role: $0.0, text: $0.1) } }
        let rejected = try list("rejected")
        guard let last = rejected.last else { throw NSError(domain: "\(file):\(lineNumber): empty rejected", code: 1) }
        return try (list("chosen") + [("assistant", last.1)]).map { (role: $0.0, text: $0.1) }
    }

    /// Every non-blank line of `dir/name` with its 1-based line number.
    static func lines(_ dir: String, _ name: String) throws -> [(Int, String)] {
        let text = try String(contentsOfFile: dir + "/" + name, encoding: .utf8)
        return text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
            .filter { !$0.element.allSatisfy(\.isWhitespace) }.map { ($0.offset + 1, String($0.element)) }
    }

    /// The overlap rule on the split files of `dir`: one message per violation, "HELD:LINE: …: TEXT".
    static func violations(in dir: String) throws -> [String] {
        var trainTurn: [String: String] = [:]       // normalised turn → "file:line"
        var trainBytes: [CChar] = []                // every training turn, separated by 0x01, NUL-terminated (for strstr)
        var trainStarts: [(Int, String)] = []       // byte offset of each turn → "file:line"
        for s in stages {
            let f = "\(s)_train.jsonl"
            for (n, l) in try lines(dir, f) {
                for t in try turns(l, file: f, lineNumber: n) {
                    let k = norm(t.text)
                    if trainTurn[k] == nil { trainTurn[k] = "\(f):\(n)" }
                    trainStarts.append((trainBytes.count, "\(f):\(n)"))
                    trainBytes += k.utf8.map { CChar(bitPattern: $0) }; trainBytes.append(1)
                }
            }
        }
        trainBytes.append(0)
        /// Where `k` occurs inside a training turn ("file:line"), or nil.
        func inside(_ k: String) -> String? {
            guard !k.isEmpty else { return nil }
            return trainBytes.withUnsafeBufferPointer { (hay: UnsafeBufferPointer<CChar>) -> String? in
                guard let p = strstr(hay.baseAddress!, k) else { return nil }
                let off = UnsafePointer(p) - hay.baseAddress!
                var lo = 0, hi = trainStarts.count - 1
                while lo < hi { let mid = (lo + hi + 1) / 2; if trainStarts[mid].0 <= off { lo = mid } else { hi = mid - 1 } }
                return trainStarts[lo].1
            }
        }
        var out: [String] = []
        var heldSeen: [String: (side: String, at: String)] = [:]
        for side in ["val", "test"] {
            for s in stages {
                let f = "\(s)_\(side).jsonl"
                for (n, l) in try lines(dir, f) {
                    for t in try turns(l, file: f, lineNumber: n) {
                        let k = norm(t.text)
                        if t.role == "user" && followUps.contains(k) { continue }
                        let short = String(k.prefix(80))
                        if let o = heldSeen[k], o.side != side { out.append("\(f):\(n): \(t.role) turn also in \(o.at): \(short)") }
                        if heldSeen[k] == nil { heldSeen[k] = (side, "\(f):\(n)") }
                        if let at = trainTurn[k] {
                            out.append("\(f):\(n): \(t.role) turn equals a turn of \(at): \(short)")
                        } else if t.role == "user" || k.count >= minAnswerSubstring, let at = inside(k) {
                            out.append("\(f):\(n): \(t.role) turn occurs inside \(at): \(short)")
                        }
                    }
                }
            }
        }
        return out
    }

    func testCommittedSplitsHaveNoOverlap() throws {
        for s in Self.stages { for side in ["train", "val", "test"] {
            XCTAssertFalse(try Self.lines(Self.splits, "\(s)_\(side).jsonl").isEmpty, "\(s)_\(side).jsonl is empty")
        } }
        let v = try Self.violations(in: Self.splits)
        XCTAssertEqual(v, [], "overlaps between held-out and training splits:\n" + v.prefix(20).joined(separator: "\n"))
        // The minimum: ≥ 10 held-out identity paraphrases, in Chinese and in English.
        let test = try Self.lines(Self.splits, "lora_identity_test.jsonl").map { try Self.turns($0.1, file: "", lineNumber: $0.0)[0].text }
        XCTAssertGreaterThanOrEqual(test.count, 10)
        XCTAssertTrue(test.contains { $0.unicodeScalars.contains { (0x4E00...0x9FFF).contains($0.value) } })
        XCTAssertTrue(test.contains { $0.hasPrefix("Who") || $0.hasPrefix("What") })
    }

    /// Split by poem: no title 《…》 named by a held-out SFT, DPO or reasoning row is named anywhere in a training file,
    /// so SFT's test questions are about poems none of whose conversations (pairs, traces) was trained on.
    func testHeldOutPoemsHaveNoTrainingRow() throws {
        func titles(_ line: String) -> [String] {
            line.split(separator: "《").dropFirst().compactMap { part in part.firstIndex(of: "》").map { String(part[..<$0]) } }
        }
        var train: [String: String] = [:]
        for s in Self.stages {
            for (n, l) in try Self.lines(Self.splits, "\(s)_train.jsonl") { for t in titles(l) where train[t] == nil { train[t] = "\(s)_train.jsonl:\(n)" } }
        }
        var bad: [String] = [], heldOut = Set<String>()
        for side in ["val", "test"] { for s in ["sft", "dpo", "reason"] {
            for (n, l) in try Self.lines(Self.splits, "\(s)_\(side).jsonl") {
                for t in titles(l) {
                    heldOut.insert(t)
                    if let at = train[t] { bad.append("\(s)_\(side).jsonl:\(n): 《\(t)》 is also in \(at)") }
                }
            }
        } }
        XCTAssertEqual(bad, [], bad.prefix(20).joined(separator: "\n"))
        XCTAssertGreaterThan(heldOut.count, 100)
    }

    /// The check finds each kind of overlap and names the held-out file and line, the training file and line, and the text.
    func testPlantedOverlapsAreNamed() throws {
        for f in try FileManager.default.contentsOfDirectory(atPath: Self.splits) where f.hasSuffix(".jsonl") {
            try FileManager.default.copyItem(atPath: Self.splits + "/" + f, toPath: work + "/" + f)
        }
        let testLines = try Self.lines(work, "sft_test.jsonl")
        let (n, first) = try XCTUnwrap(testLines.first { $0.1.contains("的作者是谁") })
        let turns = try Self.turns(first, file: "", lineNumber: n)
        let prompt = turns[0].text, answer = turns[1].text
        let trainCount = try Self.lines(work, "reason_train.jsonl").count
        // A training conversation holding the test prompt inside a longer turn, and the test answer with other spacing.
        let row: [String: Any] = ["conversations": [["role": "user", "content": "请问：" + prompt + "谢谢"],
                                                    ["role": "assistant", "content": "  " + answer + " \n"]]]
        let js = String(decoding: try JSONSerialization.data(withJSONObject: row), as: UTF8.self)
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: work + "/reason_train.jsonl"))
        h.seekToEndOfFile(); h.write(Data((js + "\n").utf8)); try h.close()
        let v = try Self.violations(in: work)
        let at = "reason_train.jsonl:\(trainCount + 1)"
        XCTAssertTrue(v.contains("sft_test.jsonl:\(n): user turn occurs inside \(at): \(prompt)"), v.joined(separator: "\n"))
        XCTAssertTrue(v.contains("sft_test.jsonl:\(n): assistant turn equals a turn of \(at): \(answer)"), v.joined(separator: "\n"))
        // The same prompt and answer are in dpo_test's author pair: found there too, and nothing else is.
        XCTAssertTrue(v.contains { $0.hasPrefix("dpo_test.jsonl:") && $0.hasSuffix(": \(prompt)") }, v.joined(separator: "\n"))
        XCTAssertTrue(v.allSatisfy { $0.contains(at) }, v.joined(separator: "\n"))

        // Validation and test sharing a row is found too.
        let val = try String(contentsOfFile: work + "/lora_identity_val.jsonl", encoding: .utf8)
        try (val + testLines[0].1 + "\n").write(toFile: work + "/lora_identity_val.jsonl", atomically: true, encoding: .utf8)
        let v2 = try Self.violations(in: work)
        XCTAssertTrue(v2.contains { $0.hasPrefix("sft_test.jsonl:\(testLines[0].0): ") && $0.contains("also in lora_identity_val.jsonl:") }, v2.joined(separator: "\n"))
    }

    /// The committed files are what `scripts/make_splits.py` writes (deterministic); skipped without python3.
    func testScriptReproducesCommittedFiles() throws {
        let out = work + "/regen"
        guard let r = try Python.run([Fixtures.packageRoot + "/scripts/make_splits.py", "--out", out]) else {
            throw XCTSkip("python3 not on PATH")
        }
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.text.contains("no overlap"), r.text + r.stderr)
        for f in try FileManager.default.contentsOfDirectory(atPath: Self.splits) where f.hasSuffix(".jsonl") || f == "manifest.json" {
            XCTAssertEqual(FileManager.default.contents(atPath: out + "/" + f), FileManager.default.contents(atPath: Self.splits + "/" + f), f)
        }
    }
}
