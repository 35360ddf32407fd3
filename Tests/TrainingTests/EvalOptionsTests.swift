import XCTest
import TestSupport
import Foundation
@testable import Training
import Model
import Tokenizers

/// Bad input → a clear error naming the file/field, never a runtime trap.
final class EvalOptionsTests: ScratchDirTestCase {

    /// `eval` options: a zero batch would never advance, tiny/huge sequence lengths would trap or over-allocate.
    func testEvaluatorRejectsBadOptions() throws {
        let tok = try Tokenizer.load(TrainerRunner.tokenizer)
        let cfg = ModelConfig(hiddenSize: 32, numHiddenLayers: 1, numAttentionHeads: 2, numKeyValueHeads: 1,
                              vocabSize: tok.vocabSize, intermediateSize: 64, maxPositionEmbeddings: 64)
        let m = MiniMindModel(config: cfg, seed: 1)
        let data = work + "/d.jsonl"
        try Data("{\"text\": \"hello world\"}\n".utf8).write(to: URL(fileURLWithPath: data))
        for (bs, T, needle) in [(0, 16, "--batch-size"), (-3, 16, "--batch-size"), (2, 0, "--max-seq-len"),
                                (2, 1, "--max-seq-len"), (2, 1 << 40, "--max-seq-len")] {
            XCTAssertThrowsError(try Evaluator.evaluate(model: m, tokenizer: tok, dataPath: data, maxSeqLen: T,
                                                        batchSize: bs, cacheRoot: work)) {
                XCTAssertTrue("\($0)".contains(needle), "\($0)")
            }
        }
        XCTAssertGreaterThan(try Evaluator.evaluate(model: m, tokenizer: tok, dataPath: data, maxSeqLen: 16,
                                                    batchSize: 2, cacheRoot: work).tokens, 0)
    }


    /// Training stages refuse sequence lengths past max_position_embeddings and micro-batches whose logits would not
    /// fit memory (instead of allocating terabytes); the options cap --max-seq-len before any data is read.
    func testHugeSequenceOrBatchIsRefused() throws {
        let cfg = ModelConfig(hiddenSize: 32, numHiddenLayers: 1, numAttentionHeads: 2, numKeyValueHeads: 1,
                              vocabSize: 6400, intermediateSize: 64, maxPositionEmbeddings: 1024)
        XCTAssertNoThrow(try checkForwardSize(rows: 4, seqLen: 1024, config: cfg))
        XCTAssertThrowsError(try checkForwardSize(rows: 4, seqLen: 1025, config: cfg)) {
            XCTAssertTrue("\($0)".contains("max_position_embeddings 1024"), "\($0)") }
        XCTAssertThrowsError(try checkForwardSize(rows: 1 << 20, seqLen: 1000, config: cfg)) {
            XCTAssertTrue("\($0)".contains("--batch-size"), "\($0)") }
        XCTAssertThrowsError(try checkForwardSize(rows: Int.max / 2, seqLen: 1000, config: cfg))
        var o = PretrainOptions()
        o.maxSeqLen = 1 << 40
        XCTAssertThrowsError(try o.validate()) { XCTAssertTrue("\($0)".contains("--max-seq-len"), "\($0)") }
    }
}
