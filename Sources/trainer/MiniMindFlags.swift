// The flags of MiniMind's train_*.py (2025-04-30 seed era) that have no counterpart in SwiftMind: accepted in MiniMind's
// spelling and value syntax, so its command lines run unchanged, each with a one-line note of what SwiftMind does
// instead (printed once, by rank 0); a value SwiftMind cannot honour (`--device cuda:0`) is a command-line error.
// (`--dtype` has a counterpart: ComputeDTypeArgument.swift.) The flags are declared in `TrainingArguments` (a nested option group would make ArgumentParser's
// debug-build checks several times slower).
import ArgumentParser

/// `--name` and, when it differs, MiniMind's snake_case `--name_with_underscores`.
func spellings(_ kebab: String) -> NameSpecification { NameSpecification(longSpellings(kebab)) }

func longSpellings(_ kebab: String) -> [NameSpecification.Element] {
    let snake = kebab.replacingOccurrences(of: "-", with: "_")
    return snake == kebab ? [.customLong(kebab)] : [.customLong(kebab), .customLong(snake)]
}

/// A boolean in MiniMind's `type=bool` position (`--use_moe True`), read as a user means it: True/true/1/yes/on and
/// False/false/0/no/off. (argparse's `bool("False")` is True; here False turns the option off.)
struct MiniMindBool: ExpressibleByArgument {
    let value: Bool
    init?(argument: String) {
        switch argument.lowercased() {
        case "true", "1", "yes", "on": value = true
        case "false", "0", "no", "off": value = false
        default: return nil
        }
    }
    static var defaultValueDescription: String { "True|False" }
}

/// The values of those flags (declared in `TrainingArguments`, whose `miniMind` this is): their checks and notes.
struct MiniMindFlags {
    var device: String?
    var ddp = false
    var numWorkers: Int?
    var useWandb = false
    var wandbProject: String?
    var localRank: Int?
    var warmupIters: Int?

    func validate() throws {
        try NumericOption.check(numWorkers, "--num-workers", in: 0...4096)
        try NumericOption.check(localRank, "--local-rank", in: -1...65535)
        try NumericOption.check(warmupIters, "--warmup-iters", in: 0...Int(Int32.max))
        if let d = device, d != "cpu" {
            throw ValidationError("--device \(d) is not available: SwiftMind trains on CPUs only; use --device cpu or leave it out (several processes: mpirun -np N)")
        }
    }

    /// One line per MiniMind flag given that SwiftMind does not act on, saying what it does instead.
    var notes: [String] {
        var n: [String] = []
        if device == "cpu" { n.append("--device cpu: SwiftMind always trains on the CPU") }
        if ddp {
            n.append("--ddp: not needed; SwiftMind is data-parallel whenever started by mpirun -np N (MiniMind too decides from torchrun's RANK, not from this flag)")
        }
        if let w = numWorkers {
            n.append("--num_workers \(w): ignored; the data is tokenized up front with all cores, no loader workers")
        }
        if useWandb || wandbProject != nil {
            let given = [useWandb ? "--use_wandb" : nil, wandbProject.map { "--wandb_project \($0)" }].compactMap { $0 }
            n.append("\(given.joined(separator: " ")): no Weights & Biases here; every log line is appended to OUT/metrics.jsonl")
        }
        if let r = localRank { n.append("--local_rank \(r): ignored; ranks come from mpirun (one process per rank)") }
        if let w = warmupIters, w != 0 {
            n.append("--warmup_iters \(w): ignored, as in MiniMind (its get_lr has no warmup term); the cosine schedule starts at step 0")
        }
        return n
    }
}
