import XCTest
import Foundation
import TestSupport
@testable import Training

/// Counts, 95 % intervals and the stage measures of `trainer eval` (issue 17): Wilson intervals, mean / paired
/// difference intervals, the reasoning answer number, the exact-name rule, and the JSON the command prints for them on
/// tiny models (through the `trainer` binary, the code the pipeline runs).
final class PostEvalStatsTests: ScratchDirTestCase {
    func testWilsonIntervalMatchesTextbookValues() {
        // 0/10 and 10/10: the bounds are z²/(n + z²) from 0 and 1; 5/10 is the symmetric textbook [0.2366, 0.7634].
        let a = PostEval.wilson(0, 10), b = PostEval.wilson(10, 10), c = PostEval.wilson(5, 10)
        XCTAssertEqual(a.low, 0, "exactly 0, no rounding residue")
        XCTAssertEqual(a.high, 0.27753, accuracy: 1e-5)
        XCTAssertEqual(b.low, 0.72247, accuracy: 1e-5)
        XCTAssertEqual(b.high, 1, "exactly 1")
        XCTAssertEqual(c.low, 0.23659, accuracy: 1e-5)
        XCTAssertEqual(c.high, 0.76341, accuracy: 1e-5)
        // 46/82 (the old reasoning answer count): p 0.561, interval [0.453, 0.663].
        let d = PostEval.wilson(46, 82)
        XCTAssertEqual(d.low, 0.45322, accuracy: 1e-4)
        XCTAssertEqual(d.high, 0.66326, accuracy: 1e-4)
        XCTAssertEqual(PostEval.wilson(0, 0).high, 1)
    }

    func testMeanIntervalIsMeanPlusMinusZSOverRootN() {
        let r = PostEval.meanInterval([1, 2, 3, 4])
        let half = 1.959963984540054 * (5.0 / 3.0).squareRoot() / 2
        XCTAssertEqual(r.mean, 2.5, accuracy: 1e-12)
        XCTAssertEqual(r.low, 2.5 - half, accuracy: 1e-12)
        XCTAssertEqual(r.high, 2.5 + half, accuracy: 1e-12)
        // Paired differences with no change at all: a zero-width interval at 0.
        let z = PostEval.meanInterval([0, 0, 0])
        XCTAssertEqual([z.mean, z.low, z.high], [0, 0, 0])
    }

    func testReasoningAnswerNumber() {
        let ref = "<think>\n逐行数一下：\n第1行：寒雨连江夜入吴，平明送客楚山孤。\n一共2行。\n</think>\n<answer>\n《芙蓉楼送辛渐》一共有2行。\n</answer>"
        XCTAssertEqual(PostEval.answerNumber(ref), 2)
        XCTAssertEqual(PostEval.answerNumber("<think>x</think>\n<answer>\n共56个汉字。\n</answer>"), 56)
        XCTAssertEqual(PostEval.answerNumber("<answer>《1984》一共有12行。</answer>"), 12)   // digits of a title are not the answer
        XCTAssertNil(PostEval.answerNumber("<think>第1行</think>\n<answer>不知道</answer>"))   // numbers of the think block do not count
        XCTAssertTrue(PostEval.answerNumberMatches("<think>…</think><answer>一共有2行</answer>", reference: ref))
        XCTAssertFalse(PostEval.answerNumberMatches("<think>…</think><answer>一共有3行</answer>", reference: ref))
        XCTAssertFalse(PostEval.answerNumberMatches("<think>一共2行</think><answer>", reference: ref))   // unclosed, no number
        XCTAssertFalse(PostEval.answerNumberMatches("2", reference: "<answer>没有数字</answer>"))
    }

    func testRecitationFirstLine() {
        let ref = "静夜四无邻，荒居旧业贫。\n雨中黄叶树，灯下白头人。"
        XCTAssertTrue(PostEval.firstLineMatches("\n 静夜四无邻，荒居旧业贫。\n别的", reference: ref))
        XCTAssertFalse(PostEval.firstLineMatches("静夜四无邻，荒居旧业", reference: ref))
        XCTAssertFalse(PostEval.firstLineMatches("雨中黄叶树，灯下白头人。", reference: ref))
        XCTAssertFalse(PostEval.firstLineMatches("  \n", reference: ref))
    }

    func testExactName() {
        XCTAssertTrue(PostEval.namesExactly("我是 SwiftMind，一个小模型。", "SwiftMind"))
        XCTAssertTrue(PostEval.namesExactly("I am SwiftMind.", "SwiftMind"))
        XCTAssertTrue(PostEval.namesExactly("我是SwiftMind。", "SwiftMind"))
        XCTAssertTrue(PostEval.namesExactly("SwiftMinds SwiftMind", "SwiftMind"))
        XCTAssertFalse(PostEval.namesExactly("我是 iftMind。", "SwiftMind"))
        XCTAssertFalse(PostEval.namesExactly("I am SwiftMinds.", "SwiftMind"))
        XCTAssertFalse(PostEval.namesExactly("I am swiftmind.", "SwiftMind"))
        XCTAssertFalse(PostEval.namesExactly("I am MySwiftMind.", "SwiftMind"))
    }

    /// Runs `trainer eval` and returns its JSON line.
    func eval(_ args: [String]) throws -> [String: Any] {
        let r = try TrainerRunner.run(["eval", "--tokenizer", TrainerRunner.tokenizer] + args, timeout: 300)
        XCTAssertEqual(r.status, 0, r.stderr)
        let line = try XCTUnwrap(r.stdout.split(separator: "\n").last.map(String.init), r.stderr)
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], line)
    }

    func lines(_ file: String, _ n: Int) throws -> String {
        try String(contentsOfFile: Fixtures.packageRoot + "/data/splits/" + file, encoding: .utf8)
            .split(separator: "\n").prefix(n).joined(separator: "\n") + "\n"
    }

    func assertCounts(_ j: [String: Any], rate: String, hits: String = "hits", ci: String = "ci95", file: StaticString = #filePath, line: UInt = #line) throws {
        let n = try XCTUnwrap(j["n"] as? Int ?? j["pairs"] as? Int, file: file, line: line)
        let k = try XCTUnwrap(j[hits] as? Int, file: file, line: line)
        XCTAssertEqual(try XCTUnwrap(j[rate] as? Double, file: file, line: line), Double(k) / Double(n), accuracy: 1e-12, file: file, line: line)
        let w = PostEval.wilson(k, n)
        let c = try XCTUnwrap(j[ci] as? [Double], file: file, line: line)
        XCTAssertEqual(c.count, 2, file: file, line: line)
        XCTAssertEqual(c[0], w.low, accuracy: 1e-4, file: file, line: line)
        XCTAssertEqual(c[1], w.high, accuracy: 1e-4, file: file, line: line)
    }

    /// format: k/n and Wilson interval for the format rate and for answer correctness, which the --answers file
    /// recomputes; exact-match --match name: the exact-name rate over identity paraphrases.
    func testFormatAndNameRatesCarryCountsAndIntervals() throws {
        let model = Fixtures.golden("generate_model")
        let reason = try write(try lines("reason_test.jsonl", 3), "reason.jsonl")
        let j = try eval(["--model", model, "--task", "format", "--data", reason, "--max-new-tokens", "6", "--answers", work + "/a.jsonl"])
        XCTAssertEqual(j["n"] as? Int, 3)
        try assertCounts(j, rate: "format_rate")
        try assertCounts(j, rate: "answer_accuracy", hits: "answer_hits", ci: "answer_ci95")
        let answers = try String(contentsOfFile: work + "/a.jsonl", encoding: .utf8).split(separator: "\n").map {
            try JSONDecoder().decode(PostEval.Answer.self, from: Data($0.utf8)) }
        XCTAssertEqual(answers.filter { PostEval.answerNumberMatches($0.answer, reference: $0.reference) }.count, j["answer_hits"] as? Int)

        let who = try write(try lines("lora_identity_test.jsonl", 4), "who.jsonl")
        let w = try eval(["--model", model, "--task", "exact-match", "--match", "name", "--data", who, "--max-new-tokens", "6"])
        XCTAssertEqual(w["name"] as? String, "SwiftMind")
        XCTAssertEqual(w["n"] as? Int, 4)
        try assertCounts(w, rate: "name_rate")

        let sft = try write(try lines("sft_test.jsonl", 40), "sft.jsonl")
        let f = try eval(["--model", model, "--task", "exact-match", "--match", "first-line", "--filter", "请背诵", "--data", sft, "--max-new-tokens", "6"])
        XCTAssertGreaterThan(try XCTUnwrap(f["n"] as? Int), 0)
        try assertCounts(f, rate: "first_line_rate")
    }

    /// preference: counts and interval of the accuracy, the mean margin's interval, the implicit reward margin
    /// (β × mean margin) against a reference, and the paired difference against --baseline.
    func testPreferenceIntervalsAndPairedDifference() throws {
        let pol = Fixtures.golden("dpo_policy"), ref = Fixtures.golden("dpo_reference")
        let pairs = try write(try lines("dpo_test.jsonl", 6), "pairs.jsonl")
        let common = ["--task", "preference", "--data", pairs, "--max-seq-len", "48"]
        // The model scored against itself as reference: every margin is 0, no pair is preferred.
        let same = try eval(["--model", pol, "--reference", pol] + common)
        XCTAssertEqual(same["hits"] as? Int, 0)
        XCTAssertEqual(same["mean_implicit_reward_margin"] as? Double, 0)
        try assertCounts(same, rate: "preference_accuracy")

        let j = try eval(["--model", pol, "--reference", ref, "--beta", "0.5"] + common)
        try assertCounts(j, rate: "preference_accuracy")
        let mean = try XCTUnwrap(j["mean_margin"] as? Double)
        XCTAssertEqual(try XCTUnwrap(j["mean_implicit_reward_margin"] as? Double), 0.5 * mean, accuracy: 1e-12)
        let mc = try XCTUnwrap(j["mean_margin_ci95"] as? [Double])
        XCTAssertLessThanOrEqual(mc[0], mean + 1e-4); XCTAssertGreaterThanOrEqual(mc[1], mean - 1e-4)

        // Against itself as baseline: difference 0 with a zero-width interval, which does not exclude no change.
        let self_ = try eval(["--model", pol, "--baseline", pol] + common)
        XCTAssertEqual(self_["difference"] as? Double, 0)
        XCTAssertEqual(self_["difference_ci95"] as? [Double], [0, 0])
        XCTAssertEqual(self_["difference_excludes_no_change"] as? Bool, false)
        // Policy vs reference model as baseline (no reference): the difference is after − before of the two accuracies.
        let d = try eval(["--model", pol, "--baseline", ref] + common)
        let after = try XCTUnwrap(d["preference_accuracy"] as? Double), before = try XCTUnwrap(d["baseline_preference_accuracy"] as? Double)
        XCTAssertEqual(try XCTUnwrap(d["difference"] as? Double), after - before, accuracy: 1e-12)
        try assertCounts(d, rate: "baseline_preference_accuracy", hits: "baseline_hits", ci: "baseline_ci95")
        let alone = try eval(["--model", ref] + common)
        XCTAssertEqual(alone["preference_accuracy"] as? Double, before)
    }

    /// format / exact-match --baseline: the baseline's answers to the same prompts give its rates (equal to scoring it
    /// alone) and the paired difference (this model − baseline) with its interval, for the format rate and for answer
    /// correctness; against itself the difference is 0 with a zero-width interval.
    func testFormatPairedDifferenceAgainstBaseline() throws {
        let model = Fixtures.golden("generate_model"), other = Fixtures.golden("dpo_policy")
        let reason = try write(try lines("reason_test.jsonl", 3), "reason.jsonl")
        let common = ["--task", "format", "--data", reason, "--max-new-tokens", "6"]
        let self_ = try eval(["--model", model, "--baseline", model] + common)
        for key in ["format_rate", "answer_accuracy"] {
            XCTAssertEqual(self_["\(key)_difference"] as? Double, 0)
            XCTAssertEqual(self_["\(key)_difference_ci95"] as? [Double], [0, 0])
            XCTAssertEqual(self_["\(key)_difference_excludes_no_change"] as? Bool, false)
        }
        let d = try eval(["--model", model, "--baseline", other] + common)
        let alone = try eval(["--model", other] + common)
        for key in ["format_rate", "answer_accuracy"] {
            let after = try XCTUnwrap(d[key] as? Double), before = try XCTUnwrap(d["baseline_\(key)"] as? Double)
            XCTAssertEqual(before, try XCTUnwrap(alone[key] as? Double))
            XCTAssertEqual(try XCTUnwrap(d["\(key)_difference"] as? Double), after - before, accuracy: 1e-12)
            try assertCounts(d, rate: "baseline_\(key)", hits: "baseline_\(key)_hits", ci: "baseline_\(key)_ci95")
        }
        let r = try TrainerRunner.run(["eval", "--task", "sft-loss", "--baseline", model, "--model", model, "--data", reason], timeout: 60)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--baseline applies to --task preference, exact-match and format (got sft-loss)"), r.stderr)
    }

    func testUnknownMatchIsAUsageError() throws {
        let r = try TrainerRunner.run(["eval", "--task", "exact-match", "--match", "x", "--model", Fixtures.golden("model"), "--data", work + "/d.jsonl"], timeout: 60)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--match must be exact, contains, author, first-line or name (got x)"), r.stderr)
    }
}
