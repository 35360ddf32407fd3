import Foundation
import XCTest
@testable import Tokenizers
import TestSupport

/// Optional: compares with the real Hugging Face `tokenizers` when python has it (`pip install tokenizers`);
/// skipped with a message otherwise. Covers every 7th Unicode scalar in varied contexts and ill-formed UTF-8
/// decoding.
final class HuggingFaceCrossCheckTests: XCTestCase {
    /// Runs `script` under python3 with `input` on stdin; skips when python3 or `tokenizers` is missing, fails when
    /// the child fails (see `Python.run`: a child that stops reading never takes this process down).
    func runPython(_ script: String, input: Data) throws -> Data {
        guard Python.hasModules(["tokenizers"]) else {
            throw XCTSkip("python3 with Hugging Face tokenizers not installed (pip install tokenizers): cross-check skipped")
        }
        guard let r = try Python.run(["-c", script, Fixtures.miniMindDir + "/tokenizer.json"], input: input) else {
            throw XCTSkip("python3 not on PATH: cross-check skipped")
        }
        if r.text.hasPrefix("SKIP") { throw XCTSkip("python3 could not import tokenizers: cross-check skipped") }
        guard r.status == 0 else { throw CrossCheckFailure(description: "python3 exited with \(r.status):\n\(r.stderr.suffix(3000))") }
        return r.stdout
    }
    struct CrossCheckFailure: Error, CustomStringConvertible { let description: String }

    func testEncodeMatchesHuggingFaceOnAllScriptsAndDecodeOnIllFormedBytes() throws {
        let tk = try Fixtures.miniMind()
        let seps = [" ", "a", "1", ".", "\n", "  ", "'s", "\u{3000}", "", " ", "x ", "\t", " \n ", "'ll", "'", "\u{A0}", "\u{2028}", "\u{85}", "Ⅻ", "²"]
        var texts: [String] = []
        var line = ""
        var k = 0
        var v: UInt32 = 1
        while v < 0x110000 {
            if let u = Unicode.Scalar(v) {
                line += seps[k % seps.count]; line.unicodeScalars.append(u)
                if k % 3 == 0 { line.unicodeScalars.append(u) }
                k += 1
                if k % 400 == 0 { texts.append(line); line = "" }
            }
            v += 7
        }
        texts.append(line)
        texts += ["<|im_start|>user\n hi<|im_end|>", "a  b   c\n\n  d ", "   ", "x<|endoftext|><|endoftext|>y", "don't I'M 're 've 'd 'm",
                  "  'sx", "😀👍🏽 e\u{301}"]
        // Random id sequences (mostly partial-UTF-8 byte tokens) for decoding.
        var rng = SystemRandomNumberGenerator()
        let decodeCases: [[Int32]] = (0..<200).map { _ in (0..<Int.random(in: 1...8, using: &rng)).map { _ in Int32.random(in: 3..<6400, using: &rng) } }
        var input = Data()
        for t in texts { input.append(try JSONSerialization.data(withJSONObject: ["text": t])); input.append(0x0A) }
        for ids in decodeCases { input.append(try JSONSerialization.data(withJSONObject: ["ids": ids.map { Int($0) }])); input.append(0x0A) }
        // The child reads all its input before anything can make it stop (the parent never depends on that either).
        let script = """
        import sys, json
        lines = sys.stdin.readlines()
        try:
            from tokenizers import Tokenizer
        except ImportError:
            print("SKIP"); sys.exit(0)
        t = Tokenizer.from_file(sys.argv[1])
        for l in lines:
            r = json.loads(l)
            if "text" in r: print(json.dumps(t.encode(r["text"], add_special_tokens=False).ids))
            else: print(json.dumps(t.decode(r["ids"], skip_special_tokens=False)))
        """
        let out = try runPython(script, input: input)
        let lines = out.split(separator: 0x0A)
        // Whatever the child printed, a mismatch is a test failure, never a crash of this process.
        guard lines.count == texts.count + decodeCases.count else {
            return XCTFail("python3 printed \(lines.count) lines for \(texts.count + decodeCases.count) inputs")
        }
        var encodeOK = 0, decodeOK = 0
        for (i, t) in texts.enumerated() {
            let want = ((try? JSONSerialization.jsonObject(with: Data(lines[i]))) as? [NSNumber])?.map(\.int32Value)
            if tk.encode(t) == want { encodeOK += 1 } else { XCTFail("encode differs from HF on text #\(i)") }
        }
        for (j, ids) in decodeCases.enumerated() {
            let want = (try? JSONSerialization.jsonObject(with: Data(lines[texts.count + j]), options: .fragmentsAllowed)) as? String
            if try tk.decode(ids) == want { decodeOK += 1 } else { XCTFail("decode differs from HF on \(ids)") }
        }
        XCTAssertEqual(encodeOK, texts.count)
        XCTAssertEqual(decodeOK, decodeCases.count)
    }
}
