// `--chat-template`: which chat template renders conversations (the tokenizer's own, or MiniMind's by explicit choice).
import ArgumentParser
import Tokenizers

struct ChatTemplateArgument: ParsableArguments {
    static let help = ArgumentHelp(
        "minimind: render conversations with MiniMind's ChatML template instead of the model's own (default: the model's own template, refused with a named error when it cannot be rendered without a Jinja engine).",
        valueName: "minimind")
    @Option(name: .customLong("chat-template"), help: help)
    var chatTemplate: String?

    /// Only `minimind` can be chosen.
    static func check(_ choice: String?) throws {
        if let c = choice, c != "minimind" { throw ValidationError("--chat-template: only \"minimind\" can be chosen (got \(c))") }
    }

    func validate() throws { try Self.check(chatTemplate) }

    /// Applies the choice to `tokenizer` and throws the template's error now (before a model is loaded) when it
    /// cannot be rendered.
    func apply(to tokenizer: Tokenizer) throws {
        if chatTemplate != nil { tokenizer.useMiniMindChatTemplate() }
        try tokenizer.checkChatTemplate()
    }
}
