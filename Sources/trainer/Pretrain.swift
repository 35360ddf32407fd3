// Placeholder — replaced by the helper that owns `trainer pretrain`.
import ArgumentParser
struct Pretrain: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pretrain", abstract: "(not yet implemented)")
    func run() throws { throw ValidationError("trainer pretrain is not implemented yet") }
}
