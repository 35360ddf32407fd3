import XCTest
@testable import Model

/// `generate`/`chat`/`serve` sampling options are validated (naming the option) before any allocation or forward.
final class SamplingValidationTests: XCTestCase {
    func testBadSamplingOptionsNameTheOption() {
        let cases: [(SamplingOptions, String)] = [
            (SamplingOptions(topP: 0), "--top-p"), (SamplingOptions(topP: 1.5), "--top-p"), (SamplingOptions(topP: .nan), "--top-p"),
            (SamplingOptions(topK: -1), "--top-k"),
            (SamplingOptions(temperature: -1), "--temperature"), (SamplingOptions(temperature: .infinity), "--temperature"),
            (SamplingOptions(repetitionPenalty: 0), "--repetition-penalty"),
            (SamplingOptions(repetitionPenalty: .nan), "--repetition-penalty"),
            (SamplingOptions(maxNewTokens: 0), "--max-new-tokens"), (SamplingOptions(maxNewTokens: -5), "--max-new-tokens"),
        ]
        for (o, needle) in cases {
            XCTAssertThrowsError(try o.validate()) { XCTAssertTrue("\($0)".contains(needle), "\(needle): \($0)") }
        }
        XCTAssertNoThrow(try SamplingOptions().validate(vocabSize: 6400, maxPositions: 1024, promptLength: 10))
        XCTAssertThrowsError(try SamplingOptions(eosTokenId: 6400).validate(vocabSize: 6400)) {
            XCTAssertTrue("\($0)".contains("--eos-id 6400"), "\($0)") }
        XCTAssertThrowsError(try SamplingOptions(maxNewTokens: Int.max).validate(maxPositions: 1024, promptLength: 10)) {
            XCTAssertTrue("\($0)".contains("--max-new-tokens"), "\($0)") }
        XCTAssertThrowsError(try SamplingOptions(maxNewTokens: 1).validate(maxPositions: 1024, promptLength: 2000)) {
            XCTAssertTrue("\($0)".contains("prompt has 2000 tokens"), "\($0)") }
    }

    /// NaN/±inf logits (a diverged model) never trap the sampler, on any path.
    func testNonFiniteLogitsDoNotTrap() {
        var logits = [Float](repeating: .nan, count: 100)
        logits[7] = .infinity; logits[8] = -.infinity
        for o in [SamplingOptions(temperature: 0), SamplingOptions(topP: 0.9), SamplingOptions(topP: 1, topK: 5),
                  SamplingOptions(topP: 0.5, repetitionPenalty: 1.3)] {
            var rng = SplitMix64(seed: 1)
            let id = Sampler.sample(logits: logits, history: [1, 2], options: o, rng: &rng)
            XCTAssertTrue((0 ..< 100).contains(Int(id)))
        }
        var rng = SplitMix64(seed: 1)
        let all = [Float](repeating: .nan, count: 100)
        XCTAssertTrue((0 ..< 100).contains(Int(Sampler.sample(logits: all, history: [], options: SamplingOptions(topP: 0.9), rng: &rng))))
    }
}
