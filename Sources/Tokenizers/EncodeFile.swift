import Foundation

extension Tokenizer {
    /// The whole-file path for data pipelines: streams a `{"text": …}` jsonl file and encodes it on `threads`
    /// threads (JSON parsing included), handing each chunk of `chunkLines` lines' ids to `body` in file order.
    /// Blank lines are skipped (they get no entry).
    /// - Throws: `TokenizerError.invalidUTF8` / `.badInputLine` naming the first bad line, or what `body` throws.
    public func encodeJSONL(path: String, field: String = "text", threads: Int, chunkLines: Int = 16384,
                            _ body: ([[Int32]]) throws -> Void) throws {
        var lines: [Data] = []
        var numbers: [Int] = []
        func flush() throws {
            if lines.isEmpty { return }
            let n = lines.count
            var results = [[Int32]](repeating: [], count: n)
            var errors = [TokenizerError?](repeating: nil, count: n)
            let t = max(1, min(threads, n))
            let per = (n + t - 1) / t
            results.withUnsafeMutableBufferPointer { res in
                errors.withUnsafeMutableBufferPointer { errs in
                    let r = res.baseAddress!, e = errs.baseAddress!
                    DispatchQueue.concurrentPerform(iterations: t) { k in
                        let w = self.takeWorker()
                        for i in (k * per)..<min(n, (k + 1) * per) {
                            do {
                                let text = try JSONLReader.string(field: field, of: lines[i], source: path, line: numbers[i])
                                var ids: [Int32] = []
                                w.encode(text, self, &ids)
                                (r + i).pointee = ids
                            } catch {
                                (e + i).pointee = (error as? TokenizerError) ?? .badInputLine(source: path, line: numbers[i], reason: "\(error)")
                            }
                        }
                        self.returnWorker(w)
                    }
                }
            }
            if let first = errors.first(where: { $0 != nil }) { throw first! }
            lines.removeAll(keepingCapacity: true)
            numbers.removeAll(keepingCapacity: true)
            try body(results)
        }
        try JSONLReader.forEachLine(path: path) { line, number, _ in
            if JSONLReader.isBlank(line) { return }
            lines.append(line); numbers.append(number)
            if lines.count >= chunkLines { try flush() }
        }
        try flush()
    }
}
