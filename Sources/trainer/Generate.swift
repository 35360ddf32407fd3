// Placeholder — replaced by the helper that owns `trainer generate`.
import ArgumentParser
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "generate", abstract: "(not yet implemented)")
    func run() throws { throw ValidationError("trainer generate is not implemented yet") }
}
