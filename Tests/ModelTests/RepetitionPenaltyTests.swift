import Foundation
import XCTest
@testable import Model

/// The repetition penalty follows Hugging Face's `RepetitionPenaltyLogitsProcessor`: a seen id's logit is divided by
/// the penalty when ≥ 0 and multiplied by it when < 0 (MiniMind's division made seen negative-logit ids likelier).
final class RepetitionPenaltyTests: XCTestCase {
    func penalized(_ logits: [Float], _ history: [Int32], _ penalty: Float) -> [Float] {
        var out = logits
        out.withUnsafeMutableBufferPointer { Sampler.applyRepetitionPenalty($0, history: history, penalty: penalty) }
        return out
    }

    /// The rule itself, on logits of both signs, zero, repeated ids and ids outside the vocabulary.
    func testRuleMultipliesNegativeAndDividesNonNegativeSeenLogits() {
        let logits: [Float] = [2, -2, 0, 1, -0.5, 3]
        // id 1 appears twice (penalised once), id 6 is outside the vocabulary (ignored), ids 3 and 5 are unseen.
        XCTAssertEqual(penalized(logits, [0, 1, 1, 2, 4, 6], 2), [1, -4, 0, 1, -1, 3])
        // penalty < 1 encourages the seen ids, symmetrically.
        XCTAssertEqual(penalized(logits, [0, 1], 0.5), [4, -1, 0, 1, -0.5, 3])
        XCTAssertEqual(penalized(logits, [0, 1, 2], 1), logits)
        XCTAssertEqual(penalized(logits, [], 1.7), logits)
    }

    /// Through the sampler: with penalty > 1 a seen id never gains. Greedy: id 1 (seen, logit −1.5) stays below id 0
    /// (unseen, −1.0) — dividing would have lifted it to −0.75 and picked it. Seeded draws: the seen negative-logit id
    /// is drawn at most as often as without the penalty.
    func testSamplerNeverFavoursASeenNegativeLogit() {
        var rng = SplitMix64(seed: 3)
        let greedy = SamplingOptions(temperature: 0, repetitionPenalty: 2)
        XCTAssertEqual(Sampler.sample(logits: [-1.0, -1.5], history: [1], options: greedy, rng: &rng), 0)

        let logits: [Float] = [-1.0, -1.2, -3.0, -2.5]
        func count(_ penalty: Float) -> Int {
            var rng = SplitMix64(seed: 11)
            let o = SamplingOptions(temperature: 1, topP: 1, repetitionPenalty: penalty)
            return (0..<4000).filter { _ in Sampler.sample(logits: logits, history: [1], options: o, rng: &rng) == 1 }.count
        }
        let plain = count(1), penalised = count(1.5)
        // Probability of id 1: softmax([-1, -1.2, -3, -2.5]) ≈ 0.376; with −1.2·1.5 = −1.8, ≈ 0.249 (dividing: −0.8, ≈ 0.476).
        XCTAssertGreaterThan(plain, 1400)
        XCTAssertLessThan(penalised, 1250)
        XCTAssertLessThan(penalised, plain)
    }

    /// Cross-check against `transformers`' own processor (float32 on both sides, so the results must be identical).
    /// Skipped when python3, torch or transformers is missing.
    func testMatchesTransformersRepetitionPenaltyProcessor() throws {
        var rng = SplitMix64(seed: 2024)
        func uniform() -> Float { Float(Double(rng.next() >> 11) / 9_007_199_254_740_992.0) }
        var cases: [(logits: [Float], history: [Int32], penalty: Float)] = []
        for (k, penalty) in [Float(1.3), 2.0, 0.7, 1.0, 1.05].enumerated() {
            let V = 40 + 7 * k
            var logits = (0..<V).map { _ in (uniform() - 0.5) * 12 }
            logits[0] = 0; logits[1] = -0.0; logits[2] = -Float.leastNonzeroMagnitude; logits[3] = 1e-30
            var history: [Int32] = [0, 1, 2, 3]
            for _ in 0..<25 { history.append(Int32(Int(uniform() * Float(V)) % V)) }
            history += [history[5], history[6], Int32(V + 3)]   // repeats, and an id past the vocabulary
            cases.append((logits, history, penalty))
        }
        let payload: [[String: Any]] = cases.map {
            // float32 values travel as their bit patterns (JSON would drop the sign of −0.0).
            ["logits": $0.logits.map { Int(Int32(bitPattern: $0.bitPattern)) }, "input_ids": $0.history.map { Int($0) },
             "penalty": Double($0.penalty)]
        }
        let input = try JSONSerialization.data(withJSONObject: payload)
        guard let (status, out, err) = try runPythonChild(script: Self.hfScript, stdin: input) else {
            throw XCTSkip("python3 not found: transformers cross-check skipped") }
        if status == 3 { throw XCTSkip("python3 lacks torch/transformers: transformers cross-check skipped (\(out.trimmingCharacters(in: .whitespacesAndNewlines)))") }
        XCTAssertEqual(status, 0, "python child failed: \(err)")
        guard status == 0 else { return }
        let rows = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[Int]])
        XCTAssertEqual(rows.count, cases.count)
        var negativeSeen = 0, positiveSeen = 0
        for (c, row) in zip(cases, rows) {
            let ours = penalized(c.logits, c.history, c.penalty)
            XCTAssertEqual(ours.count, row.count)
            for j in 0..<min(ours.count, row.count) {
                let theirs = Float(bitPattern: UInt32(bitPattern: Int32(truncatingIfNeeded: row[j])))
                XCTAssertEqual(ours[j].bitPattern, theirs.bitPattern,
                               "penalty \(c.penalty) id \(j): logit \(c.logits[j]) → ours \(ours[j]), transformers \(theirs)")
            }
            for id in Set(c.history) where Int(id) < c.logits.count {
                if c.logits[Int(id)] < 0 { negativeSeen += 1 } else if c.logits[Int(id)] > 0 { positiveSeen += 1 }
            }
        }
        XCTAssertGreaterThan(negativeSeen, 10, "the cases cover seen ids with negative logits")
        XCTAssertGreaterThan(positiveSeen, 10, "the cases cover seen ids with positive logits")
    }

    /// The child runner survives a child that exits without reading its stdin (EPIPE, not SIGPIPE, in the parent).
    func testPythonChildThatIgnoresStdinDoesNotKillTheParent() throws {
        guard let (status, out, _) = try runPythonChild(script: "import sys; print('early'); sys.exit(3)",
                                                         stdin: Data(repeating: 0x61, count: 4 << 20)) else {
            throw XCTSkip("python3 not found") }
        XCTAssertEqual(status, 3)
        XCTAssertEqual(out, "early\n")
    }

    /// Reads every case from stdin first (so the parent's write never meets a closed pipe), then exits 3 when torch or
    /// transformers cannot be imported; else prints one JSON row per case: the processed float32 logits' bit patterns.
    static let hfScript = """
    import json, sys
    cases = json.loads(sys.stdin.read())
    try:
        import torch
        from transformers import RepetitionPenaltyLogitsProcessor
    except Exception as e:
        print("missing: %s" % e)
        sys.exit(3)
    rows = []
    for c in cases:
        scores = torch.tensor([c["logits"]], dtype=torch.int32).view(torch.float32)
        ids = torch.tensor([c["input_ids"]], dtype=torch.long)
        out = RepetitionPenaltyLogitsProcessor(penalty=float(c["penalty"]))(ids, scores)
        rows.append(out[0].contiguous().view(torch.int32).tolist())
    print(json.dumps(rows))
    """
}

/// Runs `python3 -c script` with `stdin` written from a separate thread, SIGPIPE ignored (a child that exits early
/// gives EPIPE, never kills the test process). nil when python3 cannot be started.
func runPythonChild(script: String, stdin data: Data) throws -> (Int32, String, String)? {
    signal(SIGPIPE, SIG_IGN)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", "-c", script]
    let inp = Pipe(), out = Pipe(), err = Pipe()
    p.standardInput = inp; p.standardOutput = out; p.standardError = err
    do { try p.run() } catch { return nil }
    let writer = Thread {
        try? inp.fileHandleForWriting.write(contentsOf: data)
        try? inp.fileHandleForWriting.close()
    }
    writer.start()
    final class Box: @unchecked Sendable { var data = Data() }
    let e = Box(), errDone = DispatchSemaphore(value: 0)
    Thread { e.data = err.fileHandleForReading.readDataToEndOfFile(); errDone.signal() }.start()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    errDone.wait()
    p.waitUntilExit()
    if p.terminationReason == .exit && p.terminationStatus == 127 { return nil }   // env: python3 not found
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e.data, as: UTF8.self))
}
