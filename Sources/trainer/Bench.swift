// Placeholder — replaced by the helper that owns `trainer bench`.
import ArgumentParser
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "(not yet implemented)")
    func run() throws { throw ValidationError("trainer bench is not implemented yet") }
}
