// Range checks of the numeric command-line options that are not training options (those are checked by
// `TrainingOptions.check()`): each failure is a `ValidationError` naming the option, what it accepts and the value
// given, so NaN, ±inf, negative and absurd values stop before anything is read or allocated.
//
// Every numeric option is declared with `parsing: .unconditional` (swift-argument-parser's documented way to read a
// value that starts with '-'): `--eos-id -1` is read as -1 (by default the parser takes "-1" for an option and
// reports "Missing value"), and a negative value where none is meaningful reaches these checks, which name it.
import ArgumentParser

enum NumericOption {
    /// Throws unless `value` (when given) is in `range` (a range up to `Int.max` is described as "≥ lower").
    static func check<T: BinaryInteger>(_ value: T?, _ name: String, in range: ClosedRange<T>) throws {
        guard let value, !range.contains(value) else { return }
        let accepted = Int(exactly: range.upperBound) == Int.max ? "≥ \(range.lowerBound)" : "in \(range.lowerBound)…\(range.upperBound)"
        throw ValidationError("\(name) must be \(accepted) (got \(value))")
    }

    /// Throws unless `value` (when given) is finite and `accepts` it; `what` says what is accepted ("> 0").
    static func finite<F: BinaryFloatingPoint>(_ value: F?, _ name: String, _ what: String, _ accepts: (F) -> Bool) throws {
        guard let value, !(value.isFinite && accepts(value)) else { return }
        throw ValidationError("\(name) must be a finite number \(what) (got \(value))")
    }

    /// `--threads`: 1…`OpenBLASRuntime.maxThreads`.
    static func threads(_ value: Int?) throws { try check(value, "--threads", in: 1...OpenBLASRuntime.maxThreads) }

    /// Largest token count an option may ask for (prompt, new tokens, context): positions beyond are refused by the
    /// model's `max_position_embeddings` anyway, which is at most this (`ModelConfig.maxPositionsLimit`).
    static let maxTokens = 1 << 24
}
