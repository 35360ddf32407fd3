// `trainer reward [train] | reward score`: a Bradley–Terry reward model on MiniMind's DPO jsonl, trained data-parallel
// like every stage, and scoring conversations with one.
import ArgumentParser
import Foundation
import Datasets
import Model
import Tokenizers
import Training

struct Reward: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "reward",
        abstract: "Reward model: `reward train` (the default) trains one on {\"chosen\",\"rejected\"} jsonl; `reward score` scores conversations.",
        subcommands: [RewardTrain.self, RewardScore.self], defaultSubcommand: RewardTrain.self)
}

struct RewardTrain: StageCommand {
    static let configuration = CommandConfiguration(commandName: "train",
        abstract: "Train a reward model (Bradley–Terry) on {\"chosen\",\"rejected\"} jsonl; dpo's flags and defaults, but 1 epoch and lr 5e-5.",
        discussion: """
        The model is --init's decoder (or a random init) with the scalar head of transformers'
        LlamaForSequenceClassification: score.weight [1, hidden_size] on the final-norm hidden state of each sequence's
        last non-pad token. A new head is drawn from N(0, 0.02²) (transformers' initializer_range) with --seed; an
        --init directory that has one (a reward model) continues from it. Each side of a pair is rendered and
        truncated as for dpo (the same token cache), padded with 0 to --max-seq-len; loss = −mean over the step's
        pairs of log σ(r_chosen − r_rejected). Logs and metrics.jsonl report pair_acc, the share of the step's pairs
        with r_chosen > r_rejected. Checkpoints and OUT/final are model directories with
        architectures ["LlamaForSequenceClassification"], num_labels 1, pad_token_id 0 and score.weight in
        model.safetensors; transformers loads them with AutoModelForSequenceClassification.
        """)
    static let stage = Stage.reward
    @OptionGroup var training: TrainingArguments
    @Option(name: .customLong("init"), help: StageOptionDocs.initDir.help) var initDir: String?
    @Option(name: .customLong("chat-template"), help: ChatTemplateArgument.help) var chatTemplate: String?
    func configure(_ o: inout StageOptions) {}
}

struct RewardScore: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "score",
        abstract: "Read {\"conversations\": [{role, content}, …]} jsonl on stdin, print each conversation's reward (one number per line).",
        discussion: """
        Each conversation is rendered with the chat template (roles as given, no generation prompt) and encoded as
        reward training renders each side of a pair; its score is score.weight · h at its last token. Scores are written
        as input arrives (after each read from stdin, at the latest every --batch-size lines). Blank lines are skipped
        and get no output line. A bad line stops with `Error: stdin:N: …` (exit 1) after the scores of the lines
        before it.
        """)
    @Option(help: "Reward model directory (written by `trainer reward`).") var model: String
    @Option(name: [.customLong("max-seq-len"), .customLong("max_seq_len")], parsing: .unconditional,
            help: "Truncate each conversation to its first N tokens, as training did with --max-seq-len (default: no truncation).")
    var maxSeqLen: Int?
    @Option(name: [.customLong("batch-size"), .customLong("batch_size")], parsing: .unconditional, help: "Conversations per forward.")
    var batchSize: Int = 8
    @Option(parsing: .unconditional, help: "OpenBLAS threads.") var threads: Int?
    @OptionGroup var template: ChatTemplateArgument

    func validate() throws {
        try NumericOption.check(maxSeqLen, "--max-seq-len", in: 1...(1 << 20))
        try NumericOption.check(batchSize, "--batch-size", in: 1...4096)
        if let threads, !(1...OpenBLASRuntime.maxThreads).contains(threads) {
            throw ValidationError("--threads must be in 1…\(OpenBLASRuntime.maxThreads) (got \(threads))") }
    }

    func run() throws {
        OpenBLASRuntime.setThreads(threads)
        try runReportingErrors {
            let rm = try RewardModel(directory: model)
            guard let tok = rm.tokenizer else { throw InputError("\(model): no tokenizer.json to render conversations with") }
            try template.apply(to: tok)
            rm.batchSize = batchSize
            let out = StdoutBuffer()
            defer { out.flush() }
            let limit = rm.model.config.maxPositionEmbeddings
            var pending: [[Int32]] = []
            func flush() throws {
                if pending.isEmpty { return }
                for s in try rm.scores(sequences: pending) { out.append("\(s)\n") }
                pending.removeAll(keepingCapacity: true)
                out.flush()
            }
            do {
                // Scores go out after each read from stdin (a co-process waiting for its answer gets it) and whenever
                // a batch is full; a bad line is reported after the scores of every line before it.
                try JSONLReader(fileDescriptor: FileHandle.standardInput.fileDescriptor, source: "stdin")
                    .forEachLine(afterChunk: { try flush() }) { line in
                    let obj = try JSONLReader.object(of: line, path: "stdin")
                    let conversation = try parseConversation(obj["conversations"], path: "stdin", line: line.number,
                                                             field: "conversations", rolesByParity: false)
                    try tok.checkRolesRendered(conversation, path: "stdin", line: line.number, field: "conversations")
                    let ids = try rm.encode(conversation, maxLength: maxSeqLen)
                    guard !ids.isEmpty else { throw InputError("stdin:\(line.number): the conversation renders to no tokens") }
                    guard ids.count <= limit else {
                        throw InputError("stdin:\(line.number): the conversation has \(ids.count) tokens, more than the model's max_position_embeddings \(limit); give --max-seq-len") }
                    pending.append(ids)
                    if pending.count >= batchSize { try flush() }
                }
                try flush()
            } catch {
                try flush()   // the lines before the bad one are answered first
                throw error
            }
        }
    }
}
