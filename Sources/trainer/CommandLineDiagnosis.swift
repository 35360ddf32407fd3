// Command-line mistakes as the user should read them: printed by rank 0 only (under mpirun every rank parses the same
// arguments), a mistyped subcommand named as such, and an unknown option named with the subcommand it was given to.
import ArgumentParser
import Foundation
import SwiftMindDistributed

/// A training command: `CommandLineDiagnosis.parse` runs its option checks (its `validate()` and its groups') itself
/// after the command line parsed, once.
protocol DeferredOptionChecks {
    func checkOptions() throws
}

enum CommandLineDiagnosis {
    /// True during `parse`'s first pass: the training commands and their option groups then skip their option
    /// checks, so that a mistyped option or a malformed value is reported rather than e.g. "--data-path is required"
    /// (ArgumentParser validates a command before it looks for unknown options).
    nonisolated(unsafe) static var optionChecksDeferred = false

    /// Parses `arguments` from the root: a mistyped subcommand first, then unknown options and malformed values, then
    /// the commands' option checks. Throws the first mistake found, as ArgumentParser reports it.
    static func parse(_ arguments: [String]) throws -> ParsableCommand {
        if let (message, group) = unknownSubcommand(arguments) { throw UnknownSubcommand(message: message, group: group) }
        optionChecksDeferred = true
        let command: ParsableCommand
        do { command = try Trainer.parseAsRoot(arguments) } catch { optionChecksDeferred = false; throw error }
        optionChecksDeferred = false
        // Another command may hold a deferred group (bench's MoE options): parse again with every check on.
        guard let checked = command as? DeferredOptionChecks else { return try Trainer.parseAsRoot(arguments) }
        do {
            try checked.checkOptions()
        } catch {
            _ = try Trainer.parseAsRoot(arguments)   // throws the same failure, with the command's usage
            throw error
        }
        return command
    }

    /// A word where a subcommand name was expected; `group` is the command path that expected it (`trainer tokenizer`).
    struct UnknownSubcommand: Error { let message: String; let group: String }

    /// The commands `arguments` select, from the root: `trainer lora --epochs 1` → [Trainer, LoRA, LoRATrain] (a group's
    /// default subcommand counts); `unknown` is a word where a group without a default expects a subcommand name.
    static func commandPath(_ arguments: [String]) -> (path: [ParsableCommand.Type], unknown: String?) {
        var path: [ParsableCommand.Type] = [Trainer.self]
        var rest = arguments[...]
        while let group = path.last, !group.configuration.subcommands.isEmpty {
            let subs = group.configuration.subcommands
            if let word = rest.first, !word.hasPrefix("-") {
                if let sub = subs.first(where: { names($0).contains(word) }) {
                    path.append(sub); rest = rest.dropFirst(); continue
                }
                if word == "help" { break }
                if group.configuration.defaultSubcommand == nil { return (path, word) }
            }
            guard let d = group.configuration.defaultSubcommand else { break }
            path.append(d)
        }
        return (path, nil)
    }

    static func names(_ c: ParsableCommand.Type) -> [String] {
        [c.configuration.commandName ?? String(describing: c).lowercased()] + c.configuration.aliases
    }

    /// `trainer stf --data-path x`: without this, ArgumentParser reports "Unknown option '--data-path'" for the root.
    /// Returns the message and the group's command line (`trainer tokenizer`).
    static func unknownSubcommand(_ arguments: [String]) -> (String, String)? {
        let (path, unknown) = commandPath(arguments)
        guard let word = unknown, let group = path.last else { return nil }
        let candidates = group.configuration.subcommands.flatMap(names)
        let groupLine = (["trainer"] + path.dropFirst().map { names($0)[0] }).joined(separator: " ")
        let what = path.count == 1 ? "Unknown subcommand '\(word)'" : "Unknown subcommand '\(word)' for '\(groupLine)'"
        if let near = candidates.min(by: { editDistance($0, word) < editDistance($1, word) }), editDistance(near, word) <= 2 {
            return ("\(what). Did you mean '\(near)'?", groupLine)
        }
        return ("\(what); the subcommands are \(candidates.joined(separator: ", "))", groupLine)
    }

    /// Prints a parse or validation error (or the help that was asked for) like ArgumentParser does — on rank 0
    /// only — with the subcommand named in an unknown-option / unexpected-argument message, and exits.
    static func exit(withCommandLineError error: Error, arguments: [String]) -> Never {
        if let e = error as? UnknownSubcommand {
            guard LaunchEnvironment.rank() == 0 else { exitQuietly(.validationFailure) }
            FileHandle.standardError.write(Data("""
                Error: \(e.message)
                Usage: \(e.group) <subcommand>
                  See '\(e.group) --help' for more information.

                """.utf8))
            Foundation.exit(ExitCode.validationFailure.rawValue)
        }
        let code = Trainer.exitCode(for: error)
        guard LaunchEnvironment.rank() == 0 else { exitQuietly(code) }
        var text = Trainer.fullMessage(for: error)
        if !code.isSuccess {
            let path = commandPath(arguments).path.dropFirst()
            if !path.isEmpty { text = namingSubcommand(text, "trainer " + path.map { names($0)[0] }.joined(separator: " ")) }
        }
        if !text.isEmpty {
            if code.isSuccess { print(text) } else { FileHandle.standardError.write(Data((text + "\n").utf8)) }
        }
        Foundation.exit(code.rawValue)
    }

    /// A rank other than 0 leaves the printing to rank 0. On a failure it waits a moment first: mpirun kills the
    /// whole job as soon as one rank fails, which could be before rank 0 has written the message.
    static func exitQuietly(_ code: ExitCode) -> Never {
        if !code.isSuccess { Thread.sleep(forTimeInterval: rankZeroGrace) }
        Foundation.exit(code.rawValue)
    }

    /// Seconds a failing rank other than 0 waits before it exits (see `exitQuietly`).
    static let rankZeroGrace = 3.0

    /// "Error: Unknown option '--x'. Did you mean …" → "Error: Unknown option '--x' for 'trainer sft'. Did you mean …".
    static func namingSubcommand(_ text: String, _ command: String) -> String {
        for lead in ["Error: Unknown option '", "Error: Unexpected argument '", "Error: Unexpected arguments '"] where text.hasPrefix(lead) {
            guard let close = text.dropFirst(lead.count).firstIndex(of: "'") else { return text }
            let end = text.index(after: close)
            return String(text[..<end]) + " for '\(command)'" + String(text[end...])
        }
        return text
    }

    /// Levenshtein distance (for "did you mean").
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var prev = row[0]; row[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                let cur = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1))
                prev = cur
            }
        }
        return a.isEmpty ? b.count : row[b.count]
    }
}
