// `trainer data inspect`: which tokens each stage's loss covers.
import ArgumentParser
import Foundation
import Datasets
import Tokenizers
import Training

struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "data", abstract: "Dataset tools.",
                                                    subcommands: [DataInspect.self])
}

struct DataInspect: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect",
        abstract: "Show each sample's tokens with their loss mask (or, with --json, one {\"input_ids\",\"labels\",\"loss_mask\"} line per row).",
        discussion: "Text mode prints, per row, every label token as `[mask]text` runs: tokens the loss covers are marked with their weight. DPO rows: chosen then rejected.")
    @Option(help: "sft | reason | dpo | pretrain") var stage: String = "sft"
    @Option(help: "tokenizer.json or its directory.") var tokenizer: String
    @Option(name: [.customLong("max-seq-len"), .customLong("max_seq_len")], parsing: .unconditional) var maxSeqLen: Int = 512
    @Option(name: [.customLong("data"), .customLong("data-path"), .customLong("data_path")],
            help: "jsonl file in the stage's format.") var data: String
    @Option(name: StageOptionDocs.cacheDir.names, help: StageOptionDocs.cacheDir.help) var cacheDir: String?
    @Option(parsing: .unconditional, help: "Show at most N samples.") var limit: Int?
    @Flag(help: "One JSON line per row.") var json = false
    @OptionGroup var template: ChatTemplateArgument

    func validate() throws {
        if !["sft", "reason", "dpo", "pretrain"].contains(stage) {
            throw ValidationError("--stage must be sft, reason, dpo or pretrain (got \(stage))") }
        try NumericOption.check(maxSeqLen, "--max-seq-len", in: 2...(1 << 20))
        try NumericOption.check(limit, "--limit", in: 0...Int.max)
    }

    func run() throws {
        let tok = try Tokenizer.load(tokenizer)
        if stage != "pretrain" { try template.apply(to: tok) }
        var rows: [(ids: [Int32], labels: [Int32], mask: [Float])] = []
        // The stage's token cache, in the same root training uses: inspecting builds (or reuses) the cache the
        // training run reads.
        let root = cacheDir ?? TokenCache.defaultCacheRoot
        let threads = ProcessInfo.processInfo.activeProcessorCount
        switch stage {
        case "sft", "reason":
            let cache = try TokenCache.openOrBuild(dataPath: data, kind: .sft, tokenizer: tok, cacheRoot: root, threads: threads).0
            let ds = SFTDataset(cache: cache, tokenizer: tok, maxLength: maxSeqLen,
                                reasonWeighting: stage == "reason" ? ReasonTagWeighting(tokenizer: tok) : nil)
            for i in 0..<min(ds.count, limit ?? ds.count) { let s = try ds.sample(i); rows.append((s.inputIds, s.labels, s.lossMask)) }
        case "dpo":
            let cache = try TokenCache.openOrBuild(dataPath: data, kind: .dpo, tokenizer: tok, cacheRoot: root, threads: threads).0
            let ds = DPODataset(cache: cache, tokenizer: tok, maxLength: maxSeqLen)
            for i in 0..<min(ds.count, limit ?? ds.count) {
                for rej in [false, true] { let s = try ds.sample(i, rejected: rej); rows.append((s.inputIds, s.labels, s.lossMask)) }
            }
        case "pretrain":
            let cache = try TokenCache.openOrBuild(dataPath: data, tokenizer: tok, cacheRoot: root, threads: threads).0
            let ds = PretrainDataset(cache: cache, maxSeqLen: maxSeqLen, padTokenId: tok.padTokenId)
            for i in 0..<min(ds.count, limit ?? ds.count) {
                let b = try ds.batch(indices: [i][...])
                rows.append((b.inputIds, b.labels, b.lossMask))
            }
        default:
            throw ValidationError("--stage must be sft, reason, dpo or pretrain (got \(stage))")
        }
        for (k, r) in rows.enumerated() {
            if json {
                let obj: [String: Any] = ["input_ids": r.ids.map { Int($0) }, "labels": r.labels.map { Int($0) },
                                          "loss_mask": r.mask.map { $0 == $0.rounded() ? Int($0) as Any : Double($0) as Any }]
                print(String(decoding: try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]), as: UTF8.self))
                continue
            }
            let covered = r.mask.filter { $0 != 0 }.count
            print("── row \(k)\(stage == "dpo" ? (k % 2 == 0 ? " (chosen)" : " (rejected)") : ""): \(r.labels.count) positions, \(covered) in the loss")
            // Runs of equal mask value, label tokens decoded.
            var out = ""
            var i = 0
            while i < r.labels.count {
                var j = i
                while j < r.labels.count && r.mask[j] == r.mask[i] { j += 1 }
                let text = (try? tok.decode(Array(r.labels[i..<j]))) ?? "?"
                let tag = r.mask[i] == 0 ? "·" : (r.mask[i] == 1 ? "■" : "■×\(r.mask[i])")
                if r.mask[i] == 0 && r.labels[i..<j].allSatisfy({ $0 == tok.padTokenId }) {
                    out += "[· pad×\(j - i)]"
                } else {
                    out += "[\(tag) \(text.debugDescription.dropFirst().dropLast())]"
                }
                i = j
            }
            print(out)
        }
    }
}
