// The `trainer` executable: argument parsing and wiring, nothing else.
import ArgumentParser

struct Trainer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trainer",
        abstract: "SwiftMind: train MiniMind-style LLMs on CPUs, data-parallel over MPI.",
        subcommands: [TokenizerCommand.self, DebugStep.self, Generate.self, Bench.self, Pretrain.self, Eval.self,
                      SFT.self, LoRA.self, DPO.self, Reason.self, Distill.self, DataCommand.self,
                      Chat.self, Serve.self, Export.self, BenchDecode.self])
}

OpenBLASRuntime.ensureFastKernel()
Trainer.main()
