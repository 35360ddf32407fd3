// `trainer tokenizer train|encode|decode|vocab|bench`: wiring over the Tokenizers module.
import ArgumentParser
import Foundation
import Tokenizers

struct TokenizerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer",
        abstract: "Byte-level BPE tokenizer (Hugging Face tokenizer.json compatible): train, encode, decode, vocab, bench.",
        subcommands: [TokenizerTrain.self, TokenizerEncode.self, TokenizerDecode.self, TokenizerVocab.self,
                      TokenizerChatTemplate.self, TokenizerBench.self])
}

/// Runs `body`, printing a `TokenizerError` (or any error) as one line `Error: <message>` on stderr (as every
/// trainer command reports a data error, see InputError.swift) and exiting with 1.
func runReportingErrors(_ body: () throws -> Void) throws {
    do { try body() } catch let e as ExitCode {
        throw e
    } catch {
        FileHandle.standardError.write(Data("Error: \(error)\n".utf8))
        throw ExitCode(1)
    }
}

/// Runs `body` for each `{…}` jsonl object on stdin with the loaded tokenizer and a buffered stdout; errors are
/// reported like every tokenizer command (`Error: stdin:N: …`, exit 1), after the lines before them are answered.
/// Blank lines are skipped, as by every jsonl reader.
func forEachStdinObject(tokenizer path: String, prepare: (Tokenizer) throws -> Void = { _ in },
                        _ body: (Tokenizer, [String: Any], Int, StdoutBuffer) throws -> Void) throws {
    try runReportingErrors {
        let tk = try Tokenizer.load(path)
        try prepare(tk)
        let out = StdoutBuffer()
        defer { out.flush() }
        try JSONLReader(fileDescriptor: FileHandle.standardInput.fileDescriptor, source: "stdin")
            .forEachLine(afterChunk: { out.flush() }) { line in
                try body(tk, try JSONLReader.object(of: line, path: "stdin"), line.number, out)
            }
    }
}

/// Buffered writer to stdout.
final class StdoutBuffer {
    var bytes: [UInt8] = []
    init() { bytes.reserveCapacity(1 << 20) }
    func append(_ s: String) { bytes.append(contentsOf: s.utf8) }
    /// Appends `{"ids": [a, b, …]}\n`.
    func appendIdsLine(_ ids: [Int32]) {
        let line = [UInt8](unsafeUninitializedCapacity: 16 + ids.count * 13) { buf, count in
            var k = 0
            for c in "{\"ids\": [".utf8 { buf[k] = c; k += 1 }
            for (i, v) in ids.enumerated() {
                if i > 0 { buf[k] = 0x2C; buf[k + 1] = 0x20; k += 2 }
                var x = Int64(v)
                if x < 0 { buf[k] = 0x2D; k += 1; x = -x }
                let first = k
                repeat { buf[k] = UInt8(0x30 + x % 10); x /= 10; k += 1 } while x > 0
                var a = first, b = k - 1
                while a < b { buf.swapAt(a, b); a += 1; b -= 1 }
            }
            for c in "]}\n".utf8 { buf[k] = c; k += 1 }
            count = k
        }
        bytes.append(contentsOf: line)
    }
    func flushIfLarge() { if bytes.count > (1 << 20) { flush() } }
    func flush() {
        if !bytes.isEmpty { FileHandle.standardOutput.write(Data(bytes)); bytes.removeAll(keepingCapacity: true) }
    }
}

struct TokenizerTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a byte-level BPE tokenizer (Hugging Face BpeTrainer semantics, MiniMind's specials) on {\"text\"} jsonl.")
    @Option(help: "Training data: jsonl with one {\"text\": …} object per line.") var data: String
    @Option(parsing: .unconditional, help: "Target vocabulary size (specials + 256 byte symbols + merges).") var vocabSize: Int
    @Option(help: "Output directory for tokenizer.json and tokenizer_config.json.") var out: String
    @Option(parsing: .unconditional, help: "Stop merging when the best pair occurs fewer times than this.") var minFrequency: Int = 0

    func validate() throws {
        // Below 259 the training itself says why (3 specials + 256 byte symbols).
        if vocabSize > 1 << 24 { throw ValidationError("--vocab-size must be at most \(1 << 24) (got \(vocabSize))") }
        try NumericOption.check(minFrequency, "--min-frequency", in: 0...Int.max)
    }

    func run() throws {
        try runReportingErrors {
            guard vocabSize >= 259 else {
                throw TokenizerError.training("--vocab-size must be at least 259 (3 specials + 256 byte symbols), got \(vocabSize)")
            }
            try TokenizerWriter.checkOutputDirectory(out)   // before the (long) training, not after
            let start = Date()
            var lastReport = Date.distantPast
            let progress: (String, Int, Int) -> Void = { stage, done, total in
                let now = Date()
                guard now.timeIntervalSince(lastReport) > 0.2 || done == total else { return }
                lastReport = now
                let pct = total > 0 ? String(format: " %5.1f%%", 100.0 * Double(done) / Double(total)) : ""
                FileHandle.standardError.write(Data(String(format: "\r[%6.2fs] %-26@ %d/%d%@",
                    now.timeIntervalSince(start), stage as NSString, done, total, pct as NSString).utf8))
                if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
            }
            var trainer = BPETrainer(vocabSize: vocabSize, minFrequency: minFrequency, progress: progress)
            try trainer.feedJSONL(path: data)
            let result = try trainer.train()
            try TokenizerWriter.write(result, to: out)
            FileHandle.standardError.write(Data(String(format: "wrote %@/tokenizer.json (vocab %d, %d merges) in %.2f s\n",
                out as NSString, result.vocab.count, result.merges.count, Date().timeIntervalSince(start)).utf8))
        }
    }
}

struct TokenizerEncode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "encode", abstract: "Read {\"text\": …} jsonl on stdin, write {\"ids\": […]} per line on stdout.")
    @Option(help: "tokenizer.json or a directory holding it.") var tokenizer: String
    @Option(parsing: .unconditional, help: "Encoding threads (output order is input order).") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Flag(name: .customLong("add-special-tokens"),
          help: "Add the special tokens of tokenizer.json's post-processor, as tokenizer(text, add_special_tokens=True).")
    var addSpecialTokens = false

    func validate() throws { try NumericOption.threads(threads) }

    func run() throws {
        try runReportingErrors {
            let tk = try Tokenizer.load(tokenizer)
            let out = StdoutBuffer()
            var pending: [String] = []
            func drain() {
                for ids in tk.encode(batch: pending, threads: threads) {
                    out.appendIdsLine(addSpecialTokens ? tk.applyPostProcessor(ids) : ids)
                }
                pending.removeAll(keepingCapacity: true)
                out.flushIfLarge()
            }
            defer { out.flush() }
            do {
                try JSONLReader(fileDescriptor: FileHandle.standardInput.fileDescriptor, source: "stdin")
                    .forEachLine(afterChunk: { drain(); out.flush() }) { line in
                        pending.append(try JSONLReader.string(field: "text", of: line, path: "stdin"))
                        if pending.count >= 2048 { drain() }
                    }
            } catch {
                drain()  // lines before the bad one are still answered, in order
                throw error
            }
            drain()
        }
    }
}

struct TokenizerDecode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode", abstract: "Read {\"ids\": […]} jsonl on stdin, write {\"text\": …} per line on stdout.")
    @Option(help: "tokenizer.json or a directory holding it.") var tokenizer: String
    @Flag(help: "Drop special tokens (e.g. <|im_start|>) from the text.") var skipSpecialTokens = false

    func run() throws {
        try forEachStdinObject(tokenizer: tokenizer) { tk, o, number, out in
            guard let arr = o["ids"] as? [Any] else {
                throw JSONLError.field("ids", expected: "an array of integers", got: o["ids"], path: "stdin", line: number)
            }
            var ids: [Int32] = []
            ids.reserveCapacity(arr.count)
            for (i, v) in arr.enumerated() {
                guard let x = JSONLReader.integer(v) else {
                    throw JSONLError.field("ids[\(i)]", expected: "an integer", got: v, path: "stdin", line: number)
                }
                guard x >= 0 && x < Int64(tk.vocabSize) else {
                    throw JSONLError(path: "stdin", line: number,
                        reason: "field \"ids[\(i)]\": " + TokenizerError.idOutOfRange(id: x, vocabSize: tk.vocabSize).description)
                }
                ids.append(Int32(x))
            }
            let text: String
            do { text = try tk.decode(ids, skipSpecialTokens: skipSpecialTokens) } catch let e as TokenizerError {
                throw JSONLError(path: "stdin", line: number, reason: e.description)
            }
            out.append("{\"text\": " + jsonQuote(text) + "}\n")
            out.flushIfLarge()
        }
    }
}

struct TokenizerVocab: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vocab",
        abstract: "List the vocabulary as jsonl: id, byte-level symbol (as in vocab.json) and the text it decodes to.",
        discussion: "Byte-level symbols such as 'Ġthe' or 'ä½ł' stand for raw bytes; \"text\" shows what they decode to. A token whose bytes are not complete UTF-8 on their own also gets \"bytes\" (hex).")
    @Option(help: "tokenizer.json or a directory holding it.") var tokenizer: String

    func run() throws {
        try runReportingErrors {
            let tk = try Tokenizer.load(tokenizer)
            let out = StdoutBuffer()
            defer { out.flush() }
            for id in 0..<Int32(tk.vocabSize) {
                guard let sym = tk.idToTokenString(id) else { continue }
                let bytes = tk.tokenBytes(id)
                let text = (try? tk.decode([id])) ?? ""
                out.append("{\"id\": \(id), \"token\": \(jsonQuote(sym)), \"text\": \(jsonQuote(text))")
                if String(validating: bytes, as: UTF8.self) == nil {
                    out.append(", \"bytes\": \"" + bytes.map { String(format: "%02x", $0) }.joined() + "\"")
                }
                if tk.isSpecial(id) { out.append(", \"special\": true") }
                out.append("}\n")
                out.flushIfLarge()
            }
        }
    }
}

struct TokenizerChatTemplate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat-template",
        abstract: "Render the chat template: {\"conversations\"|\"messages\": [{role, content}…]} jsonl on stdin → {\"text\": …}.")
    @Option(help: "tokenizer.json or a directory holding it (and tokenizer_config.json).") var tokenizer: String
    @Flag(help: "Append the assistant generation prompt.") var addGenerationPrompt = false
    @OptionGroup var template: ChatTemplateArgument

    func run() throws {
        try forEachStdinObject(tokenizer: tokenizer, prepare: template.apply) { tk, o, number, out in
            let key = o["conversations"] != nil ? "conversations" : "messages"
            guard let list = o[key] as? [Any] else {
                throw JSONLError.field(key, expected: "an array of {role, content} objects", got: o[key], path: "stdin", line: number)
            }
            var messages: [ChatMessage] = []
            for (i, m) in list.enumerated() {
                guard let d = m as? [String: Any] else {
                    throw JSONLError.field("\(key)[\(i)]", expected: "a {role, content} object", got: m, path: "stdin", line: number)
                }
                guard let role = d["role"] as? String else {
                    throw JSONLError.field("\(key)[\(i)].role", expected: "a string", got: d["role"], path: "stdin", line: number)
                }
                guard let content = d["content"] as? String else {
                    throw JSONLError.field("\(key)[\(i)].content", expected: "a string", got: d["content"], path: "stdin", line: number)
                }
                messages.append(ChatMessage(role: role, content: content))
            }
            out.append("{\"text\": " + jsonQuote(try tk.applyChatTemplate(messages, addGenerationPrompt: addGenerationPrompt)) + "}\n")
        }
    }
}

struct TokenizerBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Measure encode speed (one thread, many threads) and training speed.")
    @Option(help: "tokenizer.json or a directory holding it.") var tokenizer: String = "Tests/Fixtures/tokenizers/minimind"
    @Option(help: "{\"text\"} jsonl corpus.") var data: String = "Tests/Fixtures/corpus/pretrain.jsonl"
    @Option(parsing: .unconditional, help: "Threads for the batch path.") var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(parsing: .unconditional, help: "Vocab size for the training benchmark (0 = skip).") var trainVocab: Int = 6400
    @Option(parsing: .unconditional, help: "Repetitions (the best time is reported).") var repeats: Int = 3

    func validate() throws {
        try NumericOption.threads(threads)
        try NumericOption.check(trainVocab, "--train-vocab", in: 0...(1 << 24))
        try NumericOption.check(repeats, "--repeats", in: 1...1_000_000)
    }

    func run() throws {
        try runReportingErrors {
            var texts: [String] = []
            try JSONLReader.forEachLine(path: data) { line in
                texts.append(try JSONLReader.string(field: "text", of: line, path: data))
            }
            let bytes = texts.reduce(0) { $0 + $1.utf8.count }
            let mb = Double(bytes) / 1e6
            print(String(format: "corpus %@: %d texts, %.2f MB of UTF-8 text", data, texts.count, mb))
            // Wall time and this process's CPU time (other jobs on a shared machine inflate wall time only).
            func cpuNow() -> Double {
                var ts = timespec()
                clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
                return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
            }
            /// Runs `prepare` (untimed) then `f` (timed) `repeats` times; returns the best (wall, cpu) seconds.
            func best(prepare: () throws -> Void = {}, _ f: () throws -> Void) rethrows -> (Double, Double) {
                var bw = Double.infinity, bc = Double.infinity
                for _ in 0..<max(1, repeats) {
                    try prepare()
                    let w0 = Date(), c0 = cpuNow()
                    try f()
                    bw = min(bw, Date().timeIntervalSince(w0)); bc = min(bc, cpuNow() - c0)
                }
                return (bw, bc)
            }
            func report(_ label: String, _ t: (Double, Double), _ megabytes: Double, _ extra: String = "") {
                print(String(format: "%@ %.3f s wall (%.2f MB/s), %.3f s CPU (%.2f MB/s per CPU-second)%@",
                             label as NSString, t.0, megabytes / t.0, t.1, megabytes / t.1, extra as NSString))
            }
            var tokens = 0
            var tk = try Tokenizer.load(tokenizer)
            let fresh = { tk = try Tokenizer.load(tokenizer); _ = tk.encode("warm up the unicode table") }
            let t1 = try best(prepare: fresh) { var n = 0; for t in texts { n += tk.encode(t).count }; tokens = n }
            report("encode, 1 thread, cold word cache:", t1, mb, String(format: "  [%d tokens, %.2f bytes/token]", tokens, Double(bytes) / Double(tokens)))
            let warm = try best { for t in texts { _ = tk.encode(t) } }
            report("encode, 1 thread, warm word cache:", warm, mb)
            let tb = try best(prepare: fresh) { _ = tk.encode(batch: texts, threads: threads) }
            report("encode(batch:) \(threads) threads, cold:", tb, mb)
            let fileMB = Double((try? FileManager.default.attributesOfItem(atPath: data)[.size] as? Int) ?? 0) / 1e6
            var fileTokens = 0
            let tf = try best(prepare: fresh) {
                fileTokens = 0
                try tk.encodeJSONL(path: data, threads: threads) { chunk in for ids in chunk { fileTokens += ids.count } }
            }
            report("encodeJSONL(path:) \(threads) threads, cold, read+parse+encode (MB of file):", tf, fileMB)
            if fileTokens != tokens { print("warning: encodeJSONL produced \(fileTokens) tokens, encode produced \(tokens)") }
            if trainVocab > 0 {
                var merges = 0
                let tt = try best {
                    var trainer = BPETrainer(vocabSize: trainVocab)
                    try trainer.feedJSONL(path: data)
                    merges = try trainer.train().merges.count
                }
                print(String(format: "train vocab %d (%d merges), read + pre-tokenize + merge: %.3f s wall, %.3f s CPU",
                             trainVocab, merges, tt.0, tt.1))
            }
        }
    }
}
