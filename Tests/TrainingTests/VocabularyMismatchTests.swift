import XCTest
import TestSupport
import Foundation
@testable import Training
import Model
import Tokenizers

/// Bad input → a clear error naming the file/field, never a runtime trap.
final class VocabularyMismatchTests: ScratchDirTestCase {

    /// A tokenizer with more ids than the model's embedding rows is refused before any forward.
    func testTokenizerLargerThanModelVocabIsRefused() throws {
        let tok = try Tokenizer.load(TrainerRunner.tokenizer)
        let cfg = ModelConfig(hiddenSize: 32, numHiddenLayers: 1, numAttentionHeads: 2, numKeyValueHeads: 1,
                              vocabSize: 300, intermediateSize: 64, maxPositionEmbeddings: 64)
        XCTAssertThrowsError(try cfg.checkTokenizer(vocabSize: tok.vocabSize, source: "m")) {
            XCTAssertTrue("\($0)".contains("tokenizer has \(tok.vocabSize) ids but the model's vocab_size is 300"), "\($0)")
        }
        let data = work + "/d.jsonl"
        try Data("{\"text\": \"hello world\"}\n".utf8).write(to: URL(fileURLWithPath: data))
        let m = MiniMindModel(config: cfg, seed: 1)
        XCTAssertThrowsError(try Evaluator.evaluate(model: m, tokenizer: tok, dataPath: data, maxSeqLen: 16, cacheRoot: work)) {
            XCTAssertTrue("\($0)".contains("vocab_size is 300"), "\($0)")
        }
    }

}
