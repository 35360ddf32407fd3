import Foundation

/// Writes a trained byte-level BPE tokenizer as Hugging Face files (`tokenizer.json` in the layout
/// `tokenizers` 0.23 serializes, and a MiniMind-style `tokenizer_config.json`).
public enum TokenizerWriter {
    /// `tokenizer.json` text for a trained model.
    public static func tokenizerJSON(_ r: BPETrainer.Result) -> String {
        var s = "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": ["
        for (i, t) in r.specialTokens.enumerated() {
            let id = r.vocab.firstIndex(of: t)!
            s += (i == 0 ? "\n" : ",\n")
            s += "    {\n      \"id\": \(id),\n      \"content\": \(jsonQuote(t)),\n      \"single_word\": false,\n"
            s += "      \"lstrip\": false,\n      \"rstrip\": false,\n      \"normalized\": false,\n      \"special\": true\n    }"
        }
        s += r.specialTokens.isEmpty ? "],\n" : "\n  ],\n"
        s += "  \"normalizer\": null,\n"
        s += "  \"pre_tokenizer\": {\n    \"type\": \"ByteLevel\",\n    \"add_prefix_space\": false,\n    \"trim_offsets\": true,\n    \"use_regex\": true\n  },\n"
        s += "  \"post_processor\": null,\n"
        s += "  \"decoder\": {\n    \"type\": \"ByteLevel\",\n    \"add_prefix_space\": true,\n    \"trim_offsets\": true,\n    \"use_regex\": true\n  },\n"
        s += "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
        s += "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n"
        s += "    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n    \"vocab\": {"
        for (i, t) in r.vocab.enumerated() {
            s += (i == 0 ? "\n" : ",\n") + "      " + jsonQuote(t) + ": \(i)"
        }
        s += r.vocab.isEmpty ? "},\n" : "\n    },\n"
        s += "    \"merges\": ["
        for (i, m) in r.merges.enumerated() {
            s += (i == 0 ? "\n" : ",\n") + "      [\n        " + jsonQuote(m.0) + ",\n        " + jsonQuote(m.1) + "\n      ]"
        }
        s += r.merges.isEmpty ? "]\n" : "\n    ]\n"
        s += "  }\n}"
        return s
    }

    /// MiniMind-style `tokenizer_config.json`: pad/unk = `<|endoftext|>`, bos = `<|im_start|>`, eos = `<|im_end|>`
    /// (or the first three special tokens), and MiniMind's ChatML `chat_template`.
    public static func configJSON(_ r: BPETrainer.Result) -> String {
        let sp = r.specialTokens
        let pad = sp.count > 0 ? sp[0] : "<|endoftext|>"
        let bos = sp.count > 1 ? sp[1] : pad
        let eos = sp.count > 2 ? sp[2] : bos
        var s = "{\n  \"add_bos_token\": false,\n  \"add_eos_token\": false,\n  \"add_prefix_space\": false,\n"
        s += "  \"added_tokens_decoder\": {"
        for (i, t) in sp.enumerated() {
            let id = r.vocab.firstIndex(of: t)!
            s += (i == 0 ? "\n" : ",\n")
            s += "    \"\(id)\": {\n      \"content\": \(jsonQuote(t)),\n      \"lstrip\": false,\n      \"normalized\": false,\n"
            s += "      \"rstrip\": false,\n      \"single_word\": false,\n      \"special\": true\n    }"
        }
        s += sp.isEmpty ? "},\n" : "\n  },\n"
        s += "  \"additional_special_tokens\": [],\n"
        s += "  \"bos_token\": \(jsonQuote(bos)),\n"
        s += "  \"clean_up_tokenization_spaces\": false,\n"
        s += "  \"eos_token\": \(jsonQuote(eos)),\n"
        s += "  \"legacy\": true,\n  \"model_max_length\": 32768,\n"
        s += "  \"pad_token\": \(jsonQuote(pad)),\n"
        s += "  \"sp_model_kwargs\": {},\n  \"spaces_between_special_tokens\": false,\n"
        s += "  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n"
        s += "  \"unk_token\": \(jsonQuote(pad)),\n"
        s += "  \"chat_template\": \(jsonQuote(ChatTemplate.miniMindSource))\n}"
        return s
    }

    /// Writes both files into `dir` atomically: everything is written under a temporary directory beside `dir`
    /// and renamed into place only once complete; on error nothing is left behind.
    /// - Throws: `TokenizerError.training` when `dir` exists and is not a directory, or a write fails.
    /// Checks that `dir` can become the output directory: it is a directory or does not exist, and its nearest
    /// existing ancestor is a writable directory. Throws `TokenizerError.training` naming the path and the problem.
    public static func checkOutputDirectory(_ dir: String) throws {
        let fm = FileManager.default
        let url = URL(fileURLWithPath: dir).standardizedFileURL
        var isDir: ObjCBool = false
        if fm.fileExists(atPath: url.path, isDirectory: &isDir) {
            if !isDir.boolValue { throw TokenizerError.training("--out \(dir) exists and is not a directory") }
            return
        }
        var p = url.deletingLastPathComponent()
        while !fm.fileExists(atPath: p.path, isDirectory: &isDir) && p.path != "/" { p = p.deletingLastPathComponent() }
        if !isDir.boolValue { throw TokenizerError.training("--out \(dir): \(p.path) is a file, not a directory") }
        if !fm.isWritableFile(atPath: p.path) { throw TokenizerError.training("--out \(dir): directory \(p.path) is not writable") }
    }

    public static func write(_ r: BPETrainer.Result, to dir: String) throws {
        try checkOutputDirectory(dir)
        let fm = FileManager.default
        let url = URL(fileURLWithPath: dir).standardizedFileURL
        let parent = url.deletingLastPathComponent()
        var isDir: ObjCBool = false
        let exists = fm.fileExists(atPath: url.path, isDirectory: &isDir)
        if exists && !isDir.boolValue { throw TokenizerError.training("--out \(dir) exists and is not a directory") }
        let tmp = parent.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        do {
            try? fm.removeItem(at: tmp)
            try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
            try Data(tokenizerJSON(r).utf8).write(to: tmp.appendingPathComponent("tokenizer.json"))
            try Data(configJSON(r).utf8).write(to: tmp.appendingPathComponent("tokenizer_config.json"))
            // Check what we wrote loads back before publishing it.
            _ = try Tokenizer.load(tmp.path)
            if !exists {
                try fm.moveItem(at: tmp, to: url)
            } else {
                for name in ["tokenizer_config.json", "tokenizer.json"] {
                    let dst = url.appendingPathComponent(name)
                    if rename(tmp.appendingPathComponent(name).path, dst.path) != 0 {
                        throw TokenizerError.training("cannot rename into \(dst.path): \(String(cString: strerror(errno)))")
                    }
                }
                try fm.removeItem(at: tmp)
            }
        } catch {
            try? fm.removeItem(at: tmp)
            if error is TokenizerError { throw error }
            throw TokenizerError.training("writing \(dir): \((error as NSError).localizedDescription)")
        }
    }
}
