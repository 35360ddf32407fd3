// Counts and 95 % intervals for the post-training figures, and the stage measures of issue 17 (reasoning answer
// correctness, exact-name rate, paired before/after differences).
import Foundation

extension PostEval {
    /// z of a two-sided 95 % normal interval.
    public static let z95 = 1.959963984540054

    /// Wilson score interval of a binomial proportion k/n (Wilson 1927; Agresti & Coull 1998 recommend it over the
    /// Wald interval for small n or p near 0 / 1). Returns (low, high) in [0, 1]; (0, 1) when n = 0.
    /// - Parameters: k hits (0 ≤ k ≤ n), n trials, z the normal quantile (default 95 %).
    public static func wilson(_ k: Int, _ n: Int, z: Double = z95) -> (low: Double, high: Double) {
        guard n > 0 else { return (0, 1) }
        let nn = Double(n), p = Double(k) / nn, z2 = z * z
        let centre = (p + z2 / (2 * nn)) / (1 + z2 / nn)
        let half = z * ((p * (1 - p) / nn + z2 / (4 * nn * nn)).squareRoot()) / (1 + z2 / nn)
        // At k = 0 (k = n) the bound is exactly 0 (1); rounding would leave a 1e-17 residue.
        return (k == 0 ? 0 : max(0, centre - half), k == n ? 1 : min(1, centre + half))
    }

    /// Mean of `x` and its normal 95 % interval mean ± z·s/√n (s the sample standard deviation, n − 1 in the
    /// denominator). Used for a mean margin, and for paired before/after differences (x_i = after_i − before_i, the
    /// paired-difference interval). (mean, mean, mean) when n < 2.
    public static func meanInterval(_ x: [Double], z: Double = z95) -> (mean: Double, low: Double, high: Double) {
        guard !x.isEmpty else { return (0, 0, 0) }
        let n = Double(x.count), mean = x.reduce(0, +) / n
        guard x.count > 1 else { return (mean, mean, mean) }
        let s2 = x.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / (n - 1)
        let half = z * (s2 / n).squareRoot()
        return (mean, mean - half, mean + half)
    }

    /// The number an answer gives inside `<answer>…</answer>` (the whole text when the tags are absent): the first
    /// run of ASCII digits after removing every 《title》 (a title may hold digits), as an integer; nil when none.
    public static func answerNumber(_ s: String) -> Int? {
        var t = Substring(s)
        if let o = t.range(of: "<answer>") {
            t = t[o.upperBound...]
            if let c = t.range(of: "</answer>") { t = t[..<c.lowerBound] }
        }
        var plain = ""
        var depth = 0
        for ch in t {
            if ch == "《" { depth += 1 } else if ch == "》" { depth = max(0, depth - 1) } else if depth == 0 { plain.append(ch) }
        }
        func isDigit(_ c: Character) -> Bool { c >= "0" && c <= "9" }
        let digits = plain.drop { !isDigit($0) }.prefix(while: isDigit)
        return digits.isEmpty ? nil : Int(digits)
    }

    /// Reasoning answer correctness: `answer` has a number in its `<answer>` block and it equals the reference's.
    public static func answerNumberMatches(_ answer: String, reference: String) -> Bool {
        guard let r = answerNumber(reference), let a = answerNumber(answer) else { return false }
        return a == r
    }

    /// The recitation rule ("right poem"): the first non-blank line of `answer` equals the reference's (whitespace
    /// normalised); false when either has none.
    public static func firstLineMatches(_ answer: String, reference: String) -> Bool {
        func first(_ s: String) -> String? {
            s.split(whereSeparator: \.isNewline).lazy
                .map { $0.split(whereSeparator: { $0.isWhitespace }).joined(separator: " ") }.first { !$0.isEmpty }
        }
        guard let r = first(reference), let a = first(answer) else { return false }
        return a == r
    }

    /// Whether `answer` contains `name` as a whole word: exactly, case-sensitive, with no ASCII letter or digit
    /// touching it on either side ("我是 SwiftMind，" yes; "iftMind", "SwiftMinds", "swiftmind" no).
    public static func namesExactly(_ answer: String, _ name: String) -> Bool {
        guard !name.isEmpty else { return false }
        func wordChar(_ c: Character?) -> Bool { c.map { $0.isASCII && ($0.isLetter || $0.isNumber) } ?? false }
        var from = answer.startIndex
        while let r = answer.range(of: name, range: from..<answer.endIndex) {
            let before: Character? = r.lowerBound > answer.startIndex ? answer[answer.index(before: r.lowerBound)] : nil
            let after: Character? = r.upperBound < answer.endIndex ? answer[r.upperBound] : nil
            if !wordChar(before) && !wordChar(after) { return true }
            from = answer.index(after: r.lowerBound)
        }
        return false
    }
}
