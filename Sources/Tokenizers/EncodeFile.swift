import Foundation

extension Tokenizer {
    /// The whole-file path for data pipelines: streams a `{"text": …}` jsonl file and encodes it on `threads`
    /// threads (JSON parsing included), handing each chunk of `chunkLines` lines' ids to `body` in file order.
    /// Blank lines are skipped (they get no entry).
    /// - Throws: `JSONLError` (`FILE:LINE: reason`) naming the first bad line, or what `body` throws.
    public func encodeJSONL(path: String, field: String = "text", threads: Int, chunkLines: Int = 16384,
                            _ body: ([[Int32]]) throws -> Void) throws {
        var lines: [JSONLLine] = []
        func flush() throws {
            if lines.isEmpty { return }
            let n = lines.count
            var results = [[Int32]](repeating: [], count: n)
            var errors = [Error?](repeating: nil, count: n)
            let t = max(1, min(threads, n))
            let per = (n + t - 1) / t
            results.withUnsafeMutableBufferPointer { res in
                errors.withUnsafeMutableBufferPointer { errs in
                    let r = res.baseAddress!, e = errs.baseAddress!
                    DispatchQueue.concurrentPerform(iterations: t) { k in
                        let w = self.takeWorker()
                        for i in (k * per)..<min(n, (k + 1) * per) {
                            do {
                                let text = try JSONLReader.string(field: field, of: lines[i], path: path)
                                var ids: [Int32] = []
                                w.encode(text, self, &ids)
                                (r + i).pointee = ids
                            } catch {
                                (e + i).pointee = error
                            }
                        }
                        self.returnWorker(w)
                    }
                }
            }
            if let first = errors.first(where: { $0 != nil }) { throw first! }
            lines.removeAll(keepingCapacity: true)
            try body(results)
        }
        do {
            try JSONLReader.forEachLine(path: path) { line in
                lines.append(line)
                if lines.count >= chunkLines { try flush() }
            }
        } catch let e as JSONLError {
            try flush()   // a bad line among the pending ones comes first in file order
            throw e
        }
        try flush()
    }
}
