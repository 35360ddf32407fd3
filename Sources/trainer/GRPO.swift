// `trainer grpo`: GRPO from rollouts of the policy (MiniMind train_grpo.py, its clipped-ratio loss), data-parallel like
// every stage.
import ArgumentParser
import Foundation
import Training

struct GRPOCommand: ParsableCommand, DeferredOptionChecks {
    static let configuration = CommandConfiguration(commandName: "grpo",
        abstract: "GRPO on RLAIF prompts (MiniMind train_grpo.py with --loss_type grpo: its flags and defaults).",
        discussion: """
        --data-path: {"conversations": [...]} jsonl whose last turn is the user's; a trailing assistant turn is dropped
        from the prompt and kept as the reference answer (a top-level "answer" field takes precedence). The prompt is
        the chat template with the generation prompt, its last --max-seq-len tokens kept. Each rank rolls out its
        share of each step's prompts (--batch-size per micro-batch), --num-generations samples each at --temperature
        (no top-k/top-p), at most --max-gen-len tokens; the rollout of generation g of prompt i at step s is seeded by
        (--seed, s, i, g), so it is the same at any world size and after --resume.
        Rewards: --reward-rule minimind (MiniMind's rules: reply length ±0.5; with </think>, thinking length +1/−0.5
        and exactly one </think> ±0.25; minus the repetition penalty of the answer), answer (1 when the number in the
        reply's <answer>…</answer> equals the reference's: eval --task format's answer_accuracy rule), or minimind+answer; plus the score of --reward-model.
        Advantages (r − group mean)/(group std + 1e-4); loss −(min(ratio·A, clamp(ratio, 1−ε, 1+ε)·A) − β·KL) per
        completion token up to its first eos, averaged per completion then over completions; old log-probs are the
        policy's at rollout time (one update per rollout batch, so ratio 1).
        Logged beside the loss: kl (k3, mean per completion), reward and its parts, completion_len, clip_fraction,
        rollout_tokens_per_s.
        """)
    @OptionGroup var training: TrainingArguments
    @Option(name: .customLong("init"), help: "Policy model directory to start from (required).") var initDir: String?
    @Option(name: .customLong("chat-template"), help: ChatTemplateArgument.help) var chatTemplate: String?
    @Option(help: "Frozen KL reference model directory (default: the --init model).") var reference: String?
    @Option(name: NameSpecification(longSpellings("reward-model") + longSpellings("reward-model-path")),
            help: "Reward model directory whose score is added to the rule rewards. It scores the prompt + reply rendered with the chat template, at most its last --max-seq-len + --max-gen-len + 16 tokens (the prompt cut from the left, as the policy's is).") var rewardModel: String?
    @Option(name: spellings("reward-rule"), help: "Rule rewards: minimind | answer | minimind+answer.") var rewardRule = "minimind"
    @Option(name: spellings("num-generations"), parsing: .unconditional, help: "Rollouts per prompt (G ≥ 2).")
    var numGenerations = GRPOOptions().numGenerations
    @Option(name: spellings("max-gen-len"), parsing: .unconditional, help: "Most tokens per rollout (eos included).")
    var maxGenLen = GRPOOptions().maxGenLen
    @Option(parsing: .unconditional, help: "Rollout sampling temperature.") var temperature = GRPOOptions().temperature
    @Option(parsing: .unconditional, help: "KL weight β.") var beta = GRPOOptions().beta
    @Option(parsing: .unconditional, help: "Clip range ε of the probability ratio.") var epsilon = GRPOOptions().epsilon
    @Option(name: spellings("loss-type"), help: "MiniMind's loss variant: only grpo (the clipped ratio) is implemented; cispo is refused.")
    var lossType = "grpo"

    func options() -> GRPOOptions {
        var o = GRPOOptions()
        o.common = training.options(for: .grpo)
        o.initDir = initDir
        o.tokenizer = training.tokenizer
        o.chatTemplate = chatTemplate
        o.reference = reference
        o.rewardModel = rewardModel
        o.rewardRule = RewardRule(rawValue: rewardRule) ?? .minimind
        o.numGenerations = numGenerations
        o.maxGenLen = maxGenLen
        o.temperature = temperature
        o.beta = beta
        o.epsilon = epsilon
        return o
    }

    func ownChecks() throws {
        try ChatTemplateArgument.check(chatTemplate)
        guard RewardRule(rawValue: rewardRule) != nil else {
            throw ValidationError("--reward-rule must be \(RewardRule.allCases.map(\.rawValue).joined(separator: ", ")) (got \(rewardRule))") }
        guard lossType == "grpo" else {
            throw ValidationError("--loss-type \(lossType) is not implemented: only grpo (the clipped-ratio loss)") }
    }

    func validate() throws {
        guard !CommandLineDiagnosis.optionChecksDeferred else { return }
        try ownChecks()
        try TrainingArguments.commandLineError { try options().check() }
    }

    func checkOptions() throws {
        try ownChecks()
        try training.checkGroups()
        try TrainingArguments.commandLineError { try options().check() }
    }

    func run() throws {
        let o = options()
        try training.run(.grpo, options: o, label: "grpo") { comm, logger in
            try TrainingRunner(options: o, communicator: comm, logger: logger).run()
        }
    }
}
