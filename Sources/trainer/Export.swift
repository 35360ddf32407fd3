// `trainer export`: a Hugging Face transformers directory or a GGUF file for llama.cpp.
import ArgumentParser
import Foundation
import Model
import Serving

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Export a model as a Hugging Face directory (--format hf) or a GGUF file (--format gguf).",
        discussion: """
        hf: OUT/ gets model.safetensors, config.json (LlamaForCausalLM), generation_config.json, tokenizer.json and
        tokenizer_config.json with the chat template. gguf: OUT is the .gguf file (or a directory, existing or
        ending in "/", which receives model-<dtype>.gguf; missing parent directories are created): llama architecture, llama.cpp tensor names, q/k rows permuted for llama.cpp's
        interleaved RoPE, GPT-2 BPE tokenizer metadata; norm weights stay f32. --dtype f32|f16|bf16 (default f32), or
        q8_0 for gguf (GGUF Q8_0: per 32 weights an fp16 scale and 32 int8, the layout of --weight-dtype q8_0).
        """)

    @Option(help: "Model directory (MiniMind checkpoint or Hugging Face Llama directory).") var model: String
    @Option(help: "Output directory (hf) or file (gguf).") var out: String
    @Option(help: "hf or gguf.") var format: String
    @Option(help: "f32, f16, bf16, or q8_0 (gguf only).") var dtype: String = "f32"
    @Option(help: "LoRA adapter file (from `trainer lora`) merged into the exported weights.") var lora: String?
    @Option(help: "tokenizer.json or its directory (default: the model directory, else Tests/Fixtures/tokenizers/minimind).")
    var tokenizer: String?
    @Option(help: "Model name written to GGUF general.name (default: the model directory's name).") var name: String?

    func validate() throws {
        if !["hf", "gguf"].contains(format) { throw ValidationError("--format must be hf or gguf (got \(format))") }
        if ExportDType(rawValue: dtype) == nil { throw ValidationError("--dtype must be f32, f16, bf16 or q8_0 (got \(dtype))") }
        if dtype == "q8_0" && format != "gguf" { throw ValidationError("--dtype q8_0 is for --format gguf (hf: f32, f16 or bf16)") }
    }

    func run() throws {
        let dt = ExportDType(rawValue: dtype)!
        let m = try MiniMindModel.load(huggingFaceDirectory: model)
        let merged = try LoRAMergeRecord.read(directory: model)
        let entry = try lora.map { try m.mergeLoRA(path: $0, modelDirectory: model) }
        if m.config.useMoe {
            throw InputError("\(model) is a MoE model (use_moe): Llama/GGUF exports hold dense models only; export a dense model")
        }
        let tokFile = try locateTokenizerFile(model: model, explicit: tokenizer)
        let tok = try locateTokenizer(model: model, explicit: tokenizer)
        let modelName = name ?? URL(fileURLWithPath: model).standardizedFileURL.lastPathComponent
        if format == "hf" {
            try HuggingFaceExporter.export(model: m, tokenizer: tok, tokenizerFile: tokFile, to: out, dtype: dt, sourceDirectory: model)
            // The exported weights carry every merge: the source's record plus --lora.
            let record = merged + (entry.map { [$0] } ?? [])
            let recordPath = (out as NSString).appendingPathComponent(LoRAMergeRecord.fileName)
            if !record.isEmpty { try LoRAMergeRecord.write(record, directory: out) }
            else if FileManager.default.fileExists(atPath: recordPath) { try FileManager.default.removeItem(atPath: recordPath) }
            print("wrote Hugging Face directory \(out) (\(dt.rawValue))")
        } else {
            var isDir: ObjCBool = false
            var path = out
            let fm = FileManager.default
            if out.hasSuffix("/") || (fm.fileExists(atPath: out, isDirectory: &isDir) && isDir.boolValue) {
                // A directory (an existing one, or a path ending in "/"): it receives model-<dtype>.gguf.
                path = (out as NSString).appendingPathComponent("model-\(dt.rawValue).gguf")
            }
            // Missing parent directories are created, as --format hf creates its directory.
            let parent = (path as NSString).deletingLastPathComponent
            if !parent.isEmpty {
                do { try fm.createDirectory(atPath: parent, withIntermediateDirectories: true) } catch {
                    throw InputError("--out \(out): cannot create the directory \(parent): \(error.localizedDescription)") }
            }
            try GGUFExporter.export(model: m, tokenizer: tok, tokenizerFile: tokFile, to: path, dtype: dt, name: modelName)
            print("wrote GGUF \(path) (\(dt.rawValue))")
        }
    }
}
