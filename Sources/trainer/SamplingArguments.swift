// The sampling flags shared by `trainer generate` and `trainer chat` (MiniMind's generate: repetition penalty,
// temperature, top-k, top-p, seeded multinomial draw).
import ArgumentParser
import Model

struct SamplingArguments: ParsableArguments {
    @Option(name: .customLong("max-new-tokens"), parsing: .unconditional) var maxNewTokens: Int = 512
    @Option(parsing: .unconditional) var temperature: Float = 0.85
    @Option(name: .customLong("top-p"), parsing: .unconditional) var topP: Float = 0.85
    @Option(name: .customLong("top-k"), parsing: .unconditional) var topK: Int = 0
    @Option(name: .customLong("repetition-penalty"), parsing: .unconditional) var repetitionPenalty: Float = 1.0
    @Option(parsing: .unconditional) var seed: UInt64 = 0

    /// The flags as `SamplingOptions`, stopping at `eosTokenId` (nil = never).
    func options(eosTokenId: Int32?) -> SamplingOptions {
        SamplingOptions(maxNewTokens: maxNewTokens, temperature: temperature, topP: topP, topK: topK,
                        repetitionPenalty: repetitionPenalty, seed: seed, eosTokenId: eosTokenId)
    }

    func validate() throws {
        do { try options(eosTokenId: nil).validate() } catch { throw ValidationError("\(error)") }
    }
}
