// The MoE options shared by every command that builds or trains a model (MiniMind's names; snake_case accepted).
import ArgumentParser
import Model

struct MoEArguments: ParsableArguments {
    @Flag(name: [.customLong("use-moe"), .customLong("use_moe")], help: "Mixture-of-Experts MLP (MiniMind2-MoE).")
    var useMoe = false
    @Option(name: [.customLong("num-experts-per-tok"), .customLong("num_experts_per_tok")], help: "MoE: experts per token (top-k).")
    var numExpertsPerTok = 2
    @Option(name: [.customLong("n-routed-experts"), .customLong("n_routed_experts")], help: "MoE: routed experts.")
    var nRoutedExperts = 4
    @Option(name: [.customLong("n-shared-experts"), .customLong("n_shared_experts")], help: "MoE: shared experts.")
    var nSharedExperts = 1
    @Option(name: [.customLong("scoring-func"), .customLong("scoring_func")], help: "MoE: gate scoring (softmax).")
    var scoringFunc = "softmax"
    @Option(name: [.customLong("aux-loss-alpha"), .customLong("aux_loss_alpha")], help: "MoE: weight α of the load-balancing loss.")
    var auxLossAlpha: Float = 0.1
    @Flag(name: .customLong("seq-aux"), inversion: .prefixedNo, help: "MoE: sequence-level aux loss.")
    var seqAux = true
    @Flag(name: .customLong("norm-topk-prob"), inversion: .prefixedNo, help: "MoE: normalise the top-k weights.")
    var normTopkProb = true
    @Option(name: [.customLong("intermediate-size"), .customLong("intermediate_size")],
            help: "MLP (each expert's) intermediate size; default 64·⌈(8·hidden/3)/64⌉ as MiniMind.")
    var intermediateSize: Int?

    var settings: MoESettings {
        var s = MoESettings()
        s.useMoe = useMoe; s.numExpertsPerTok = numExpertsPerTok; s.nRoutedExperts = nRoutedExperts
        s.nSharedExperts = nSharedExperts; s.scoringFunc = scoringFunc; s.auxLossAlpha = auxLossAlpha
        s.seqAux = seqAux; s.normTopkProb = normTopkProb; s.intermediateSize = intermediateSize
        return s
    }
}
