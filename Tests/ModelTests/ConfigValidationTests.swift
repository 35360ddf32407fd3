import XCTest
@testable import Model

/// Model configs are validated up front (the loader's and every training stage's `validate`), overflow-checked.
final class ConfigValidationTests: XCTestCase {
    func testBadShapesAreRefusedNamingTheField() {
        let cases: [(ModelConfig, String)] = [
            (ModelConfig(hiddenSize: 30), "num_attention_heads"),                           // 30 % 8 heads ≠ 0
            (ModelConfig(hiddenSize: 0), "hidden_size"),
            (ModelConfig(hiddenSize: 24, numAttentionHeads: 8, numKeyValueHeads: 2), "head_dim"),  // head_dim 3 (odd)
            (ModelConfig(numHiddenLayers: 0), "num_hidden_layers"),
            (ModelConfig(hiddenSize: 1 << 40), "overflows"),                                 // default intermediate overflows
            (ModelConfig(hiddenSize: 1 << 20, numHiddenLayers: 1000), "parameters"),         // ~10^16 parameters
            (ModelConfig(maxPositionEmbeddings: 1 << 40), "max_position_embeddings"),
        ]
        for (c, needle) in cases {
            XCTAssertThrowsError(try c.validate(source: "opts")) { XCTAssertTrue("\($0)".contains(needle), "\(needle): \($0)") }
        }
        XCTAssertNoThrow(try ModelConfig().validate())
        XCTAssertEqual(ModelConfig(hiddenSize: 64, numHiddenLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 2,
                                   vocabSize: 100).checkedParameterCount,
                       MiniMindModel(config: ModelConfig(hiddenSize: 64, numHiddenLayers: 2, numAttentionHeads: 4,
                                                         numKeyValueHeads: 2, vocabSize: 100), seed: 1).numParameters)
    }
}
