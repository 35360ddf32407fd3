// The errors of training: options, files, checkpoints, divergence.
import Foundation

/// Errors raised by the training loop; each names the file or option at fault.
public enum TrainingError: Error, CustomStringConvertible, LocalizedError {
    case io(path: String, reason: String)
    case badCheckpoint(path: String, reason: String)
    case invalidOption(String)
    case mismatch(String)
    /// The loss (or gradient norm) stopped being finite; the run stops before the optimizer applies it.
    case diverged(String)

    public var description: String {
        switch self {
        case let .invalidOption(m), let .mismatch(m), let .diverged(m): return m
        case let .io(path, reason): return "\(path): \(reason)"
        case let .badCheckpoint(path, reason): return "\(path): bad checkpoint: \(reason)"
        }
    }
    public var errorDescription: String? { description }
}
