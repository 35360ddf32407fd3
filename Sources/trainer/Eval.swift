// Placeholder — replaced by the helper that owns `trainer eval`.
import ArgumentParser
struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "eval", abstract: "(not yet implemented)")
    func run() throws { throw ValidationError("trainer eval is not implemented yet") }
}
