// Placeholder — replaced by the helper that owns `trainer debug-step`.
import ArgumentParser
struct DebugStep: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "debug-step", abstract: "(not yet implemented)")
    func run() throws { throw ValidationError("trainer debug-step is not implemented yet") }
}
