// `trainer export`: Hugging Face directory or GGUF file.
import ArgumentParser
import Foundation
import Serving

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "export", abstract: "Export a model (not yet).")
    func run() throws { throw ValidationError("not implemented yet") }
}
