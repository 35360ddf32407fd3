// The entry point of every training command: its options checked, its objective built and trained in the shared
// `TrainingLoop`.
import Logging
import SwiftMindDistributed

/// A training command's options as the shared loop takes them (`PretrainOptions`, `StageOptions`): the common
/// options, the command's own checks, and the objective they describe.
protocol ObjectiveOptions {
    var common: TrainingOptions { get }
    /// - Throws: `TrainingError.invalidOption` naming the first option out of range.
    func validate() throws
    /// Builds the command's objective: tokenizer, data and models loaded.
    func makeObjective(communicator: Communicator, logger: Logger) throws -> TrainingObjective
}

/// Trains one command's objective over `comm`: `trainer pretrain` (the language-model objective) or a post-training
/// stage (`trainer sft|lora|dpo|reason|distill`). `run()` checks the options, then the shared `TrainingLoop` prepares
/// the output directory, builds the objective and trains it.
public final class TrainingRunner {
    public let comm: Communicator
    public var logger: Logger
    let options: ObjectiveOptions

    /// `trainer pretrain`.
    public convenience init(options: PretrainOptions, communicator: Communicator, logger: Logger = Logger(label: "swiftmind.pretrain")) {
        self.init(objectiveOptions: options, communicator: communicator, logger: logger)
    }

    /// `trainer sft|lora|dpo|reason|distill`.
    public convenience init(options: StageOptions, communicator: Communicator, logger: Logger = Logger(label: "swiftmind.stage")) {
        self.init(objectiveOptions: options, communicator: communicator, logger: logger)
    }

    /// `trainer grpo`.
    public convenience init(options: GRPOOptions, communicator: Communicator, logger: Logger = Logger(label: "swiftmind.grpo")) {
        self.init(objectiveOptions: options, communicator: communicator, logger: logger)
    }

    init(objectiveOptions: ObjectiveOptions, communicator: Communicator, logger: Logger) {
        options = objectiveOptions
        comm = communicator
        self.logger = logger
    }

    /// Trains; rank 0's summary has `finalDirectory` (OUT/final).
    /// - Throws: `TrainingError` (options, data, checkpoints, divergence) and the errors of loading the objective.
    @discardableResult
    public func run() throws -> TrainingSummary {
        try options.validate()
        return try TrainingLoop(options: options.common, communicator: comm, logger: logger).run {
            try options.makeObjective(communicator: comm, logger: logger)
        }
    }
}
