// Export to a Hugging Face transformers directory (LlamaForCausalLM, safetensors) and to a GGUF file for llama.cpp.
import Foundation
import Model
import Tokenizers

/// Element type of exported weights. GGUF keeps 1-D norm weights in f32 whatever the choice (llama.cpp's converter
/// does the same); Hugging Face exports store every tensor in the chosen type. `q8_0` (GGUF's Q8_0 blocks, the
/// layout of `--weight-dtype q8_0`) is GGUF only; matrices whose rows are not a multiple of 32 stay f32 there.
public enum ExportDType: String, CaseIterable, Sendable {
    case f32, f16, bf16, q8_0
    var safetensorsName: String { ["f32": "F32", "f16": "F16", "bf16": "BF16"][rawValue]! }
    var torchName: String { ["f32": "float32", "f16": "float16", "bf16": "bfloat16"][rawValue]! }
    /// Bytes per element (q8_0: not per element, see `appendConverted`).
    var size: Int { self == .f32 ? 4 : 2 }
}

/// fp32 → bf16 with round-to-nearest-even (NaN stays a quiet NaN).
@inline(__always) func bf16Bits(_ x: Float) -> UInt16 {
    let b = x.bitPattern
    if x.isNaN { return UInt16(b >> 16) | 0x40 }
    return UInt16((b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16)
}

/// Appends `values` to `out` as little-endian `dtype` (q8_0: `values.count` / 32 blocks of 34 bytes, count % 32 == 0).
func appendConverted(_ values: UnsafeBufferPointer<Float>, as dtype: ExportDType, to out: inout Data) {
    if dtype == .q8_0 { out.append(contentsOf: quantizeQ8_0(values)); return }
    #if _endian(little)
    // fp32 on a little-endian host is already the file's byte order: one copy.
    if dtype == .f32 { out.append(contentsOf: UnsafeRawBufferPointer(values)); return }
    #endif
    let n = values.count
    var bytes = [UInt8](repeating: 0, count: n * dtype.size)
    bytes.withUnsafeMutableBytes { raw in
        switch dtype {
        case .f32: for i in 0..<n { raw.storeBytes(of: values[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
        case .f16: for i in 0..<n { raw.storeBytes(of: Float16(values[i]).bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
        case .bf16: for i in 0..<n { raw.storeBytes(of: bf16Bits(values[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
        case .q8_0: break
        }
    }
    out.append(contentsOf: bytes)
}

/// Throws when `dtype` is f16 and a finite weight lies outside its range (|w| > 65504 would be written as inf);
/// bf16 has fp32's range and q8_0 scales per block, so only f16 is checked.
func checkRepresentable(_ tensors: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)], as dtype: ExportDType) throws {
    guard dtype == .f16 else { return }
    let limit = Float(Float16.greatestFiniteMagnitude)
    for t in tensors {
        var worst: Float = 0
        for v in t.values where v.isFinite && abs(v) > worst { worst = abs(v) }
        if worst > limit {
            throw ServingError("--dtype f16: tensor \(t.name) holds \(worst), beyond f16's largest value 65504 (it would be written as inf); export bf16 or f32 instead")
        }
    }
}

/// Writes `data` to `path` through a temporary file in the same directory and a rename.
func writeFileAtomically(_ data: Data, to path: String) throws {
    let tmp = path + ".tmp-\(getpid())"
    guard FileManager.default.createFile(atPath: tmp, contents: data) else { throw ServingError("\(path): cannot write \(tmp)") }
    if rename(tmp, path) != 0 { unlink(tmp); throw ServingError("\(path): rename failed (errno \(errno))") }
}

/// The path of `tokenizer.json` for a model, among `tokenizerCandidates(model:explicit:)` (as `locateTokenizer`).
/// - Throws: `ServingError` naming every place tried when none holds a `tokenizer.json`.
public func locateTokenizerFile(model: String, explicit: String?) throws -> String {
    let c = try locateTokenizerSource(model: model, explicit: explicit)
    return c.hasSuffix(".json") ? c : (c as NSString).appendingPathComponent("tokenizer.json")
}

/// MiniMind's ChatML chat template (jingyaogong/minimind tokenizer_config.json), used when the source tokenizer has none.
public let miniMindChatTemplate =
    "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}{{ '<|im_start|>system\\n' + system_message + '<|im_end|>\\n' }}{% else %}{{ '<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}{% endif %}{% for message in messages %}{% set content = message['content'] %}{% if message['role'] == 'user' %}{{ '<|im_start|>user\\n' + content + '<|im_end|>\\n<|im_start|>assistant\\n' }}{% elif message['role'] == 'assistant' %}{{ content + '<|im_end|>' + '\\n' }}{% endif %}{% endfor %}"

/// Named tensors of a model in Hugging Face Llama naming, with the untied head when there is one.
func exportTensors(_ m: MiniMindModel) -> [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)] {
    var out: [(String, [Int], UnsafeBufferPointer<Float>)] = m.parameters.map { p in
        (p.name, p.shape, UnsafeBufferPointer(rebasing: m.params[p.range]))
    }
    if let head = m.untiedLMHead { out.append(("lm_head.weight", [m.config.vocabSize, m.config.hiddenSize], UnsafeBufferPointer(head))) }
    return out
}

// MARK: - Hugging Face

public enum HuggingFaceExporter {
    /// Writes `out/` (created if needed): `model.safetensors` (HF Llama names; `lm_head.weight` only when untied),
    /// `config.json` (LlamaForCausalLM), `generation_config.json`, `tokenizer.json` (copied) and
    /// `tokenizer_config.json` (the source's, with MiniMind's chat template added when it has none, and
    /// `add_bos_token` / `add_eos_token` set to the raw-text rule, `Tokenizer.singleSequenceSpecialTokens`). Each file
    /// is written atomically.
    /// - Throws: `ServingError`/`ModelError` naming the file.
    /// `sourceDirectory`, the model's own directory: its `generation_config.json`, when it has one, is copied as it is
    /// (as `save_pretrained` keeps a model's generation settings).
    public static func export(model m: MiniMindModel, tokenizer: Tokenizer, tokenizerFile: String, to out: String, dtype: ExportDType,
                              sourceDirectory: String? = nil) throws {
        if dtype == .q8_0 { throw ServingError("Hugging Face export: q8_0 is a GGUF type (use --format gguf, or f32/f16/bf16)") }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        func path(_ f: String) -> String { (out as NSString).appendingPathComponent(f) }

        // safetensors: u64 header length, JSON header (padded with spaces to 8 bytes), data.
        let tensors = exportTensors(m)
        try checkRepresentable(tensors, as: dtype)
        var header: [String: Any] = ["__metadata__": ["format": "pt"]]
        var offset = 0
        for t in tensors {
            let n = t.values.count * dtype.size
            header[t.name] = ["dtype": dtype.safetensorsName, "shape": t.shape, "data_offsets": [offset, offset + n]] as [String: Any]
            offset += n
        }
        var hjson = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while hjson.count % 8 != 0 { hjson.append(0x20) }
        var file = Data(capacity: 8 + hjson.count + offset)
        var hlen = UInt64(hjson.count).littleEndian
        withUnsafeBytes(of: &hlen) { file.append(contentsOf: $0) }
        file.append(hjson)
        for t in tensors { appendConverted(t.values, as: dtype, to: &file) }
        try writeFileAtomically(file, to: path("model.safetensors"))

        var cfg = m.config.huggingFaceDictionary
        cfg["torch_dtype"] = dtype.torchName
        cfg["dtype"] = dtype.torchName
        cfg["tie_word_embeddings"] = m.untiedLMHead == nil
        // The model's own special ids (config.json's, kept on load); the tokenizer's only where the model has none.
        if cfg["bos_token_id"] == nil { cfg["bos_token_id"] = Int(tokenizer.bosTokenId) }
        if cfg["eos_token_id"] == nil { cfg["eos_token_id"] = Int(tokenizer.eosTokenId) }
        if cfg["pad_token_id"] == nil { cfg["pad_token_id"] = Int(tokenizer.padTokenId) }
        try writeFileAtomically(try JSONSerialization.data(withJSONObject: cfg, options: [.prettyPrinted, .sortedKeys]), to: path("config.json"))

        // generation_config.json: the source's as it is; else the ids above with MiniMind's sampling defaults
        // (eval_llm.py: temperature 0.85, top_p 0.85).
        let sourceGen = sourceDirectory.map { ($0 as NSString).appendingPathComponent("generation_config.json") }
        if let sg = sourceGen, let d = FileManager.default.contents(atPath: sg) {
            guard (try? JSONSerialization.jsonObject(with: d)) is [String: Any] else { throw ServingError("\(sg): not a JSON object") }
            try writeFileAtomically(d, to: path("generation_config.json"))
        } else {
            var gen: [String: Any] = ["do_sample": true, "temperature": 0.85, "top_p": 0.85]
            for k in ["bos_token_id", "eos_token_id", "pad_token_id"] { gen[k] = cfg[k] }
            try writeFileAtomically(try JSONSerialization.data(withJSONObject: gen, options: [.prettyPrinted, .sortedKeys]), to: path("generation_config.json"))
        }

        guard let tokData = FileManager.default.contents(atPath: tokenizerFile) else { throw ServingError("\(tokenizerFile): cannot read") }
        try writeFileAtomically(tokData, to: path("tokenizer.json"))
        let srcConfig = ((tokenizerFile as NSString).deletingLastPathComponent as NSString).appendingPathComponent("tokenizer_config.json")
        var tc: [String: Any] = [:]
        if let d = FileManager.default.contents(atPath: srcConfig) {
            guard let o = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any] else { throw ServingError("\(srcConfig): not a JSON object") }
            tc = o
        }
        func tokenString(_ id: Int32) -> String? { id >= 0 ? tokenizer.idToTokenString(id) : nil }
        if tc["chat_template"] == nil { tc["chat_template"] = tokenizer.chatTemplateSource ?? miniMindChatTemplate }
        if tc["tokenizer_class"] == nil { tc["tokenizer_class"] = "PreTrainedTokenizerFast" }
        for (key, id) in [("bos_token", tokenizer.bosTokenId), ("eos_token", tokenizer.eosTokenId), ("pad_token", tokenizer.padTokenId)]
            where tc[key] == nil { if let s = tokenString(id) { tc[key] = s } }
        if tc["model_max_length"] == nil { tc["model_max_length"] = m.config.maxPositionEmbeddings }
        // The raw-text rule (tokenizer.json's post-processor, which transformers applies and `trainer generate`
        // follows), recorded as the GGUF records it; a copied value that says otherwise is replaced.
        tc["add_bos_token"] = tokenizer.addsBosToken
        tc["add_eos_token"] = tokenizer.addsEosToken
        try writeFileAtomically(try JSONSerialization.data(withJSONObject: tc, options: [.prettyPrinted, .sortedKeys]), to: path("tokenizer_config.json"))
    }
}

// MARK: - GGUF

/// A GGUF v3 writer (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): little-endian header, key/value
/// metadata, tensor infos (dims innermost first), data aligned to `general.alignment` (32).
struct GGUFWriter {
    enum Value {
        case u32(UInt32), i32(Int32), f32(Float), bool(Bool), string(String), strings([String]), i32s([Int32])
    }
    var kv: [(String, Value)] = []
    var tensors: [(name: String, dims: [Int], type: UInt32, bytes: Data)] = []
    let alignment = 32

    mutating func add(_ key: String, _ v: Value) { kv.append((key, v)) }

    static let typeF32: UInt32 = 0, typeF16: UInt32 = 1, typeQ8_0: UInt32 = 8, typeBF16: UInt32 = 30

    /// `shape` in PyTorch order ([rows, cols]); stored reversed as GGUF dims.
    mutating func addTensor(_ name: String, shape: [Int], values: UnsafeBufferPointer<Float>, dtype: ExportDType) {
        var d = Data()
        appendConverted(values, as: dtype, to: &d)
        let t: UInt32 = [ExportDType.f32: GGUFWriter.typeF32, .f16: GGUFWriter.typeF16, .bf16: GGUFWriter.typeBF16, .q8_0: GGUFWriter.typeQ8_0][dtype]!
        tensors.append((name, shape.reversed(), t, d))
    }

    func serialized() -> Data {
        var out = Data()
        func u32(_ v: UInt32) { var x = v.littleEndian; withUnsafeBytes(of: &x) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { var x = v.littleEndian; withUnsafeBytes(of: &x) { out.append(contentsOf: $0) } }
        func str(_ s: String) { let b = Array(s.utf8); u64(UInt64(b.count)); out.append(contentsOf: b) }
        out.append(contentsOf: Array("GGUF".utf8))
        u32(3)
        u64(UInt64(tensors.count))
        u64(UInt64(kv.count))
        for (k, v) in kv {
            str(k)
            switch v {
            case let .u32(x): u32(4); u32(x)
            case let .i32(x): u32(5); u32(UInt32(bitPattern: x))
            case let .f32(x): u32(6); u32(x.bitPattern)
            case let .bool(x): u32(7); out.append(x ? 1 : 0)
            case let .string(s): u32(8); str(s)
            case let .strings(a): u32(9); u32(8); u64(UInt64(a.count)); for s in a { str(s) }
            case let .i32s(a): u32(9); u32(5); u64(UInt64(a.count)); for x in a { u32(UInt32(bitPattern: x)) }
            }
        }
        var offset = 0
        var offsets: [Int] = []
        for t in tensors {
            offsets.append(offset)
            offset += (t.bytes.count + alignment - 1) / alignment * alignment
        }
        for (t, off) in zip(tensors, offsets) {
            str(t.name)
            u32(UInt32(t.dims.count))
            for d in t.dims { u64(UInt64(d)) }
            u32(t.type)
            u64(UInt64(off))
        }
        while out.count % alignment != 0 { out.append(0) }
        for t in tensors {
            out.append(t.bytes)
            while (out.count) % alignment != 0 { out.append(0) }
        }
        return out
    }
}

public enum GGUFExporter {
    /// Rows of a q/k projection `[heads·hd, C]` reordered from Hugging Face's rotate-half RoPE layout (pairs
    /// (i, i + hd/2)) to llama.cpp's interleaved layout (pairs (2i, 2i+1)): out row h·hd + 2i + j = in row
    /// h·hd + j·hd/2 + i — the permutation llama.cpp's convert_hf_to_gguf.py applies to q_proj/k_proj.
    public static func permuteRoPE(_ w: UnsafeBufferPointer<Float>, heads: Int, cols: Int) -> [Float] {
        let rows = w.count / cols, hd = rows / heads, half = hd / 2
        var out = [Float](repeating: 0, count: w.count)
        out.withUnsafeMutableBufferPointer { o in
            for h in 0..<heads { for i in 0..<half { for j in 0..<2 {
                let src = (h * hd + j * half + i) * cols, dst = (h * hd + 2 * i + j) * cols
                (o.baseAddress! + dst).update(from: w.baseAddress! + src, count: cols)
            } } }
        }
        return out
    }

    /// llama.cpp's name for a Hugging Face Llama tensor name.
    public static func ggufName(_ hf: String) -> String? {
        if hf == "model.embed_tokens.weight" { return "token_embd.weight" }
        if hf == "model.norm.weight" { return "output_norm.weight" }
        if hf == "lm_head.weight" { return "output.weight" }
        let parts = hf.split(separator: ".")
        guard parts.count >= 5, parts[0] == "model", parts[1] == "layers", let l = Int(parts[2]) else { return nil }
        let rest = parts[3...].joined(separator: ".")
        let map = ["input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
                   "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
                   "self_attn.o_proj.weight": "attn_output.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
                   "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight"]
        return map[rest].map { "blk.\(l).\($0)" }
    }

    /// Merges of `tokenizer.json` (`model.merges` as "a b" strings or [a, b] pairs).
    static func merges(tokenizerFile: String) throws -> [String] {
        guard let d = FileManager.default.contents(atPath: tokenizerFile),
              let o = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any],
              let model = o["model"] as? [String: Any] else { throw ServingError("\(tokenizerFile): no model object") }
        guard (model["type"] as? String) == "BPE" else { throw ServingError("\(tokenizerFile): model.type is not BPE") }
        guard let ms = model["merges"] as? [Any] else { throw ServingError("\(tokenizerFile): model.merges missing") }
        return try ms.enumerated().map { i, m in
            if let s = m as? String { return s }
            if let p = m as? [String], p.count == 2 { return p[0] + " " + p[1] }
            throw ServingError("\(tokenizerFile): model.merges[\(i)] is neither \"a b\" nor [a, b]")
        }
    }

    /// Writes a GGUF file (llama architecture, llama.cpp tensor names, q/k permuted for interleaved RoPE, key/value
    /// length when `head_dim` ≠ hidden/heads, GPT-2 BPE tokenizer metadata with tokens, token types, merges,
    /// bos/eos/pad ids, add_bos/add_eos as tokenizer.json's post-processor adds them, and the chat template). Atomic.
    /// - Throws: `ServingError` for RoPE scaling (not written to GGUF here) and a post-processor GGUF cannot express.
    public static func export(model m: MiniMindModel, tokenizer: Tokenizer, tokenizerFile: String, to path: String,
                              dtype: ExportDType, name: String) throws {
        let c = m.config
        try checkRepresentable(exportTensors(m), as: dtype)
        if c.ropeScaling != .none {
            throw ServingError("GGUF export: rope_type \(c.ropeScaling.ropeType) is not written to GGUF by this exporter (plain RoPE only)") }
        // llama.cpp adds at most a bos before and an eos after a sequence (tokenizer.ggml.add_bos_token / add_eos_token):
        // the flags record the tokenizer's rule for raw text, the one `trainer generate` and transformers follow.
        let (head, tail) = tokenizer.singleSequenceSpecialTokens
        guard head.isEmpty || head == [tokenizer.bosTokenId], tail.isEmpty || tail == [tokenizer.eosTokenId] else {
            throw ServingError("GGUF export: \(tokenizerFile): its post-processor adds \(head) before and \(tail) after a sequence; GGUF can only say add bos / add eos") }
        var w = GGUFWriter()
        // general.file_type: llama_ftype ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7, MOSTLY_BF16 32.
        let ftype: UInt32 = [ExportDType.f32: 0, .f16: 1, .q8_0: 7, .bf16: 32][dtype]!
        w.add("general.architecture", .string("llama"))
        w.add("general.name", .string(name))
        w.add("general.file_type", .u32(ftype))
        w.add("general.alignment", .u32(32))
        w.add("llama.vocab_size", .u32(UInt32(c.vocabSize)))
        w.add("llama.context_length", .u32(UInt32(c.maxPositionEmbeddings)))
        w.add("llama.embedding_length", .u32(UInt32(c.hiddenSize)))
        w.add("llama.block_count", .u32(UInt32(c.numHiddenLayers)))
        w.add("llama.feed_forward_length", .u32(UInt32(c.intermediateSize)))
        w.add("llama.rope.dimension_count", .u32(UInt32(c.headDim)))
        if c.headDim != c.hiddenSize / c.numAttentionHeads {
            w.add("llama.attention.key_length", .u32(UInt32(c.headDim)))
            w.add("llama.attention.value_length", .u32(UInt32(c.headDim)))
        }
        w.add("llama.attention.head_count", .u32(UInt32(c.numAttentionHeads)))
        w.add("llama.attention.head_count_kv", .u32(UInt32(c.numKeyValueHeads)))
        w.add("llama.attention.layer_norm_rms_epsilon", .f32(c.rmsNormEps))
        w.add("llama.rope.freq_base", .f32(Float(c.ropeTheta)))

        // Tokenizer: one entry per id in [0, vocab_size); ids without a token become unused [PAD{id}] entries.
        var tokens: [String] = [], types: [Int32] = []
        let added = Dictionary(tokenizer.addedTokens.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for id in 0..<Int32(c.vocabSize) {
            if let a = added[id] { tokens.append(a.content); types.append(a.special ? 3 : 4) }
            else if Int(id) < tokenizer.vocabSize, let s = tokenizer.idToTokenString(id) { tokens.append(s); types.append(1) }
            else { tokens.append("[PAD\(id)]"); types.append(5) }
        }
        w.add("tokenizer.ggml.model", .string("gpt2"))
        w.add("tokenizer.ggml.pre", .string("gpt-2"))
        w.add("tokenizer.ggml.tokens", .strings(tokens))
        w.add("tokenizer.ggml.token_type", .i32s(types))
        w.add("tokenizer.ggml.merges", .strings(try merges(tokenizerFile: tokenizerFile)))
        if tokenizer.bosTokenId >= 0 { w.add("tokenizer.ggml.bos_token_id", .u32(UInt32(tokenizer.bosTokenId))) }
        if tokenizer.eosTokenId >= 0 { w.add("tokenizer.ggml.eos_token_id", .u32(UInt32(tokenizer.eosTokenId))) }
        if tokenizer.padTokenId >= 0 { w.add("tokenizer.ggml.padding_token_id", .u32(UInt32(tokenizer.padTokenId))) }
        w.add("tokenizer.ggml.add_bos_token", .bool(!head.isEmpty))
        w.add("tokenizer.ggml.add_eos_token", .bool(!tail.isEmpty))
        w.add("tokenizer.chat_template", .string(tokenizer.chatTemplateSource ?? miniMindChatTemplate))

        for t in exportTensors(m) {
            guard let gname = ggufName(t.name) else { throw ServingError("GGUF export: no llama.cpp name for tensor \(t.name)") }
            let dt: ExportDType = t.shape.count == 1 || (dtype == .q8_0 && t.shape[1] % 32 != 0) ? .f32 : dtype
            if t.name.hasSuffix("self_attn.q_proj.weight") || t.name.hasSuffix("self_attn.k_proj.weight") {
                let heads = t.name.hasSuffix("q_proj.weight") ? c.numAttentionHeads : c.numKeyValueHeads
                let p = permuteRoPE(t.values, heads: heads, cols: t.shape[1])
                p.withUnsafeBufferPointer { w.addTensor(gname, shape: t.shape, values: $0, dtype: dt) }
            } else {
                w.addTensor(gname, shape: t.shape, values: t.values, dtype: dt)
            }
        }
        try writeFileAtomically(w.serialized(), to: path)
    }
}
