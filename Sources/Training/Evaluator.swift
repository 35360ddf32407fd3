// Held-out masked loss and perplexity of a model directory on a pretrain-format jsonl.
import Foundation
import Model
import Datasets
import Tokenizers

public struct EvalResult: Sendable {
    /// Σ CE·mask / Σ mask over every sample (nats per target token).
    public var loss: Double
    /// exp(loss).
    public var ppl: Double { exp(loss) }
    /// Σ mask: the number of target tokens scored.
    public var tokens: Int
}

/// Throws `TrainingError.invalidOption` unless sequences of `seqLen` positions fit the model's
/// `max_position_embeddings` and the logits of one micro-batch (`rows × seqLen × vocab_size` floats, overflow-checked)
/// stay below 2^31 elements, so a huge `--max-seq-len`/`--batch-size` is an error rather than a terabyte allocation.
/// `rowsFrom` / `positionsFrom`: how the options give the rows and positions, for the message (GRPO's differ).
func checkForwardSize(rows: Int, seqLen: Int, config: ModelConfig,
                      rowsFrom: String = "--batch-size", positionsFrom: String = "--max-seq-len") throws {
    let P = config.maxPositionEmbeddings
    guard seqLen <= P else {
        throw TrainingError.invalidOption("\(positionsFrom) gives \(seqLen) positions, more than the model's max_position_embeddings \(P)") }
    let (cells, o1) = rows.multipliedReportingOverflow(by: seqLen)
    let (logits, o2) = cells.multipliedReportingOverflow(by: config.vocabSize)
    guard !o1, !o2, logits <= 1 << 31 else {
        throw TrainingError.invalidOption("rows × positions × vocab_size = \(rows) × \(seqLen) × \(config.vocabSize) logits per micro-batch is too large (limit 2^31; rows from \(rowsFrom), positions from \(positionsFrom)); lower them") }
}

public enum Evaluator {
    /// Scores `dataPath` with MiniMind's pretrain sample semantics (truncate/pad to `maxSeqLen`, X/Y shift, mask Y ≠ pad),
    /// `batchSize` samples per forward. The data is tokenized in memory, streaming the file in chunks.
    public static func evaluate(model: MiniMindModel, tokenizer: Tokenizer, dataPath: String, maxSeqLen: Int,
                                batchSize: Int = 16, threads: Int = ProcessInfo.processInfo.activeProcessorCount,
                                cacheRoot: String? = nil) throws -> EvalResult {
        // Options first: a zero batch never advances the loop, a sequence longer than the model's positions (or than
        // memory) cannot be scored, and a tokenizer with ids beyond the embedding would trap inside forward.
        guard batchSize >= 1 else { throw TrainingError.invalidOption("--batch-size must be ≥ 1 (got \(batchSize))") }
        guard maxSeqLen >= 2 else { throw TrainingError.invalidOption("--max-seq-len must be ≥ 2 (got \(maxSeqLen))") }
        let P = model.config.maxPositionEmbeddings
        guard maxSeqLen <= P else {
            throw TrainingError.invalidOption("--max-seq-len \(maxSeqLen) exceeds the model's max_position_embeddings \(P)") }
        let (cells, o1) = batchSize.multipliedReportingOverflow(by: maxSeqLen)
        let (logitCount, o2) = cells.multipliedReportingOverflow(by: model.config.vocabSize)
        guard !o1, !o2, logitCount <= 1 << 31 else {
            throw TrainingError.invalidOption("--batch-size \(batchSize) × --max-seq-len \(maxSeqLen) × vocab \(model.config.vocabSize) logits per forward is too large; lower --batch-size")
        }
        try model.config.checkTokenizer(vocabSize: tokenizer.vocabSize, source: "eval model")
        let root = cacheRoot ?? TokenCache.defaultCacheRoot
        let cache = try TokenCache.openOrBuild(dataPath: dataPath, tokenizer: tokenizer, cacheRoot: root, threads: threads).0
        let ds = PretrainDataset(cache: cache, maxSeqLen: maxSeqLen, padTokenId: tokenizer.padTokenId)
        let V = model.config.vocabSize
        var total = 0.0
        var tokens = 0
        var start = 0
        let all = Array(0 ..< ds.count)
        while start < ds.count {
            let end = min(ds.count, start + batchSize)
            let b = try ds.batch(indices: all[start ..< end])
            if b.maskCount > 0 {
                let logits = b.inputIds.withUnsafeBufferPointer { model.forward(inputIds: $0, batchSize: end - start, seqLen: ds.seqLen) }
                let rows = (end - start) * ds.seqLen
                var ce = [Float](repeating: 0, count: rows)
                b.labels.withUnsafeBufferPointer { y in
                    ce.withUnsafeMutableBufferPointer { out in
                        CrossEntropy.tokenLoss(logits: UnsafeBufferPointer(logits), labels: y, vocabSize: V, out: out)
                    }
                }
                for r in 0 ..< rows where b.lossMask[r] != 0 { total += Double(ce[r]) * Double(b.lossMask[r]) }
                tokens += b.maskCount
            }
            start = end
        }
        guard tokens > 0 else { throw DataError.empty(path: dataPath) }
        return EvalResult(loss: total / Double(tokens), tokens: tokens)
    }
}
