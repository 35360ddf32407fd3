import XCTest
import Foundation
import Model

/// `trainer debug-step --dtype bfloat16 --grad-clip 0` (the training objectives' micro-step with bf16 products) against
/// PyTorch's `autocast(bfloat16)` step of the golden model (`golden/bf16_step.*`, repacked losslessly by
/// scripts/repack_bf16_golden.py), within the tolerance its json suggests (`suggested_tolerance`: every compared tensor
/// max|got − want| ≤ relative · max|want|, the logits also ≤ logits_max_abs, the loss ≤ loss_abs). The batch is
/// model/train_step's (the golden repeats it).
final class BF16GoldenTests: XCTestCase {
    struct Tolerance { let relative: Float; let logitsAbs: Float; let lossAbs: Float }

    func tolerance() throws -> Tolerance {
        let d = try Data(contentsOf: URL(fileURLWithPath: golden("bf16_step.json")))
        let j = try XCTUnwrap(JSONSerialization.jsonObject(with: d) as? [String: Any])
        let t = try XCTUnwrap(j["suggested_tolerance"] as? [String: Any])
        func num(_ k: String) throws -> Float { Float(try XCTUnwrap(t[k] as? Double, k)) }
        return Tolerance(relative: try num("relative"), logitsAbs: try num("logits_max_abs"), lossAbs: try num("loss_abs"))
    }

    /// Golden tensor `name` as fp32: BF16 entries widened, plus the exact fp32 rows the repack kept aside.
    func want(_ g: SafeTensorsFile, _ name: String) throws -> [Float] {
        var v = try g.floats(name)
        if g.entries[name + ".fp32_rows"] != nil {
            let rows = try g.int32s(name + ".fp32_rows"), vals = try g.floats(name + ".fp32_values")
            let c = vals.count / max(rows.count, 1)
            for (i, r) in rows.enumerated() { for j in 0..<c { v[Int(r) * c + j] = vals[i * c + j] } }
        }
        return v
    }

    func step(_ dtype: String, _ work: String) throws -> SafeTensorsFile {
        let out = work + "/\(dtype).safetensors"
        let r = try TrainerRunner.run(["debug-step", "--model", golden("model"), "--batch", golden("model/train_step.safetensors"),
                                       "--out", out, "--grad-clip", "0", "--dtype", dtype])
        XCTAssertEqual(r.status, 0, r.stderr)
        return try SafeTensorsFile(path: out)
    }

    /// Max |a − b| and max |b|.
    func deviation(_ a: [Float], _ b: [Float]) -> (d: Float, scale: Float) {
        var d: Float = 0, mx: Float = 0
        for i in 0..<min(a.count, b.count) { d = max(d, abs(a[i] - b[i])); mx = max(mx, abs(b[i])) }
        return (d, mx)
    }

    /// Cosine similarity of two vectors (Double accumulation).
    func cosine(_ a: [Float], _ b: [Float]) -> Double {
        var ab = 0.0, aa = 0.0, bb = 0.0
        for i in 0..<min(a.count, b.count) { ab += Double(a[i]) * Double(b[i]); aa += Double(a[i]) * Double(a[i]); bb += Double(b[i]) * Double(b[i]) }
        return aa > 0 && bb > 0 ? ab / (aa * bb).squareRoot() : 0
    }

    func testBF16StepMatchesAutocastGolden() throws {
        let tol = try tolerance()
        XCTAssertEqual(tol.relative, 0.077); XCTAssertEqual(tol.logitsAbs, 0.095); XCTAssertEqual(tol.lossAbs, 0.0035)
        let work = TrainerRunner.tempDir("bf16-golden")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let o = try step("bfloat16", work), f = try step("float32", work)
        let g = try SafeTensorsFile(path: golden("bf16_step.safetensors"))
        let names = g.entries.keys.filter { !$0.hasSuffix(".fp32_rows") && !$0.hasSuffix(".fp32_values") }.sorted()
        XCTAssertEqual(names.filter { $0.hasPrefix("grad.") }.count, 20)
        var worstRel: Float = 0, report: [String] = []
        var bf16DiffersFromFP32 = false
        // Σ over tensors of the relative deviation from the golden, of the bf16 and of the fp32 step.
        var bf16Total: Float = 0, fp32Total: Float = 0
        for name in names {
            let w = try want(g, name)
            guard o.entries[name] != nil else { XCTFail("\(name) not written"); continue }
            let got = try o.floats(name), fp32 = try f.floats(name)
            XCTAssertEqual(got.count, w.count, name)
            let (d, scale) = deviation(got, w), rel = d / scale
            worstRel = max(worstRel, rel)
            report.append("\(name) max|Δ| \(d) rel \(rel)")
            XCTAssertLessThanOrEqual(rel, tol.relative, "\(name): max|Δ| \(d) > \(tol.relative) · max|want| \(scale)")
            if name == "logits" { XCTAssertLessThanOrEqual(d, tol.logitsAbs, "logits max|Δ| \(d)") }
            if name == "loss" { XCTAssertLessThanOrEqual(d, tol.lossAbs, "loss |Δ| \(d)") }
            // bf16 against our own fp32 step: inside the same tolerance, and not identical (the bf16 path ran).
            let (df, sf) = deviation(got, fp32)
            XCTAssertLessThanOrEqual(df / sf, tol.relative, "\(name) bf16 vs fp32: \(df / sf)")
            if df > 0 { bf16DiffersFromFP32 = true }
            // The direction of the bf16 perturbation: (ours bf16 − ours fp32) against (autocast − ours fp32). The
            // rounding of the weights and of the first operands is the same in both, so a faithful bf16 path
            // correlates (observed cosine 0.39–0.63 per tensor; an fp32 step or random noise gives ~0).
            if name != "loss" {
                let c = cosine(zip(got, fp32).map { $0 - $1 }, zip(w, fp32).map { $0 - $1 })
                report[report.count - 1] += " cos \(c)"
                XCTAssertGreaterThan(c, 0.25, "\(name): the bf16 step's deviation from fp32 does not follow autocast's")
            }
            let (dg, _) = deviation(fp32, w)
            fp32Total += dg / scale; bf16Total += rel
            report[report.count - 1] += " (fp32 step: rel \(dg / scale))"
        }
        XCTAssertTrue(bf16DiffersFromFP32, "--dtype bfloat16 gave the fp32 result bit for bit")
        print("Σ relative deviation from the golden: bf16 step \(bf16Total), fp32 step \(fp32Total)")
        print("bf16 golden: worst relative deviation \(worstRel) (tolerance \(tol.relative))\n" + report.joined(separator: "\n"))
    }

    func testFloat16IsRefusedPointingToBFloat16() throws {
        let r = try TrainerRunner.run(["debug-step", "--model", golden("model"), "--batch", golden("model/train_step.safetensors"),
                                       "--out", "/dev/null", "--dtype", "float16"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("bfloat16"), r.stderr)
    }
}
