// Placeholder — replaced by the helper that owns `trainer tokenizer`.
import ArgumentParser
struct TokenizerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tokenizer", abstract: "(not yet implemented)")
    func run() throws { throw ValidationError("trainer tokenizer is not implemented yet") }
}
