// The MoE options shared by every command that builds or trains a model (MiniMind's names; snake_case accepted).
import ArgumentParser
import Model

struct MoEArguments: ParsableArguments {
    @Flag(name: .customLong("use-moe"), help: "Mixture-of-Experts MLP (MiniMind2-MoE).")
    var useMoeFlag = false
    @Option(name: .customLong("use_moe"), help: ArgumentHelp(
        "MiniMind's spelling, with a value: --use_moe True = --use-moe. Unlike MiniMind's argparse (type=bool, where even 'False' is true), False/0/no means a dense model.",
        valueName: "bool"))
    var useMoeValue: MiniMindBool?
    @Option(name: spellings("num-experts-per-tok"), parsing: .unconditional, help: "MoE: experts per token (top-k).")
    var numExpertsPerTok = MoESettings().numExpertsPerTok
    @Option(name: spellings("n-routed-experts"), parsing: .unconditional, help: "MoE: routed experts.")
    var nRoutedExperts = MoESettings().nRoutedExperts
    @Option(name: spellings("n-shared-experts"), parsing: .unconditional, help: "MoE: shared experts.")
    var nSharedExperts = MoESettings().nSharedExperts
    @Option(name: spellings("scoring-func"), help: "MoE: gate scoring (softmax).")
    var scoringFunc = MoESettings().scoringFunc
    @Option(name: spellings("aux-loss-alpha"), parsing: .unconditional, help: "MoE: weight α of the load-balancing loss.")
    var auxLossAlpha = MoESettings().auxLossAlpha
    @Flag(name: .customLong("seq-aux"), inversion: .prefixedNo, help: "MoE: sequence-level aux loss.")
    var seqAux = MoESettings().seqAux
    @Flag(name: .customLong("norm-topk-prob"), inversion: .prefixedNo, help: "MoE: normalise the top-k weights.")
    var normTopkProb = MoESettings().normTopkProb
    @Option(name: spellings("intermediate-size"), parsing: .unconditional,
            help: "MLP (each expert's) intermediate size; default 64·⌈(8·hidden/3)/64⌉ as MiniMind.")
    var intermediateSize: Int?

    func validate() throws {
        guard !CommandLineDiagnosis.optionChecksDeferred else { return }
        if useMoeFlag, useMoeValue?.value == false {
            throw ValidationError("--use-moe and --use_moe False contradict each other")
        }
        do { try settings.check() } catch { throw ValidationError("\(error)") }
    }

    /// `--use-moe`, or `--use_moe True`.
    var useMoe: Bool { useMoeFlag || useMoeValue?.value == true }

    var settings: MoESettings {
        var s = MoESettings()
        s.useMoe = useMoe; s.numExpertsPerTok = numExpertsPerTok; s.nRoutedExperts = nRoutedExperts
        s.nSharedExperts = nSharedExperts; s.scoringFunc = scoringFunc; s.auxLossAlpha = auxLossAlpha
        s.seqAux = seqAux; s.normTopkProb = normTopkProb; s.intermediateSize = intermediateSize
        return s
    }
}
