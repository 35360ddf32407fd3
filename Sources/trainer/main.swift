// The `trainer` executable: argument parsing and wiring, nothing else.
import ArgumentParser
import Foundation
import SwiftMindDistributed

struct Trainer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trainer",
        abstract: "SwiftMind: train MiniMind-style LLMs on CPUs, data-parallel over MPI.",
        subcommands: [TokenizerCommand.self, DebugStep.self, Generate.self, Bench.self, Pretrain.self, Eval.self,
                      SFT.self, LoRA.self, DPO.self, Reason.self, Distill.self, GRPOCommand.self, Reward.self,
                      DataCommand.self, Chat.self, Serve.self, Export.self, BenchDecode.self, OptionsTable.self,
                      DashboardCommand.self])
}

/// The commands that do work: the leaves of the subcommand tree.
let trainerLeafCommands: Set<ObjectIdentifier> = {
    func leaves(_ t: ParsableCommand.Type) -> [ParsableCommand.Type] {
        let subs = t.configuration.subcommands
        return subs.isEmpty ? [t] : subs.flatMap(leaves)
    }
    return Set(leaves(Trainer.self).map { ObjectIdentifier($0) })
}()

// Trainer.main() spelled out, so that the OpenBLAS line is logged only when a command actually runs (not for
// --help or a command-line mistake), and so that under mpirun only rank 0 prints usage and command-line errors.
// The re-exec that picks the fast kernel must still come first.
OpenBLASRuntime.ensureFastKernel()
let arguments = Array(CommandLine.arguments.dropFirst())
var command: ParsableCommand
do {
    command = try CommandLineDiagnosis.parse(arguments)
} catch {
    CommandLineDiagnosis.exit(withCommandLineError: error, arguments: arguments)
}
do {
    // Only for one of our leaf commands: `--help`/`help` parse to ArgumentParser's help command, a bare group prints help
    // (which, like usage and errors, only rank 0 prints under mpirun).
    let isLeaf = trainerLeafCommands.contains(ObjectIdentifier(type(of: command)))
    if !isLeaf && LaunchEnvironment.rank() != 0 { CommandLineDiagnosis.exitQuietly(.success) }
    if isLeaf { OpenBLASRuntime.logStartup() }
    try command.run()
} catch {
    Trainer.exit(withError: error)
}
