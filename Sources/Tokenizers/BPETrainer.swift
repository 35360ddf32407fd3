import Foundation

/// Byte-level BPE training with the behaviour of Hugging Face `tokenizers`' `BpeTrainer`
/// (`models/bpe/trainer.rs`), as MiniMind's `train_tokenizer.py` configures it:
/// - words are the GPT-2 byte-level pre-tokens of each text, counted (`feed`);
/// - ids: the special tokens first, then the alphabet (every character seen plus the 256-symbol byte-level
///   initial alphabet) sorted by code point, then one new token per merge;
/// - pair counts are weighted by word counts; a max-heap pops the pair with the highest count, ties broken by
///   the smaller pair `(left id, right id)`; an entry whose count is stale is re-pushed with the current count;
/// - merging a pair in a word replaces non-overlapping occurrences left to right and reports the pair-count
///   changes with the neighbours; pairs that gained occurrences are pushed again with the words that gained them;
/// - training stops at `vocabSize` ids, when no pair is left, or when the best count is below `minFrequency`.
public struct BPETrainer {
    public var vocabSize: Int
    public var specialTokens: [String]
    public var minFrequency: Int
    /// Called with (stage, done, total) now and then; `total` is 0 when unknown.
    public var progress: ((String, Int, Int) -> Void)?

    /// MiniMind's settings: `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` as ids 0, 1, 2.
    public static let miniMindSpecialTokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

    public init(vocabSize: Int, specialTokens: [String] = BPETrainer.miniMindSpecialTokens, minFrequency: Int = 0,
                progress: ((String, Int, Int) -> Void)? = nil) {
        self.vocabSize = vocabSize
        self.specialTokens = specialTokens
        self.minFrequency = minFrequency
        self.progress = progress
    }

    /// Word counts accumulated by `feed`.
    var words = WordCounter()

    /// Pre-tokenizes `text` and counts its words (no added-token extraction: the trainer's tokenizer has none,
    /// exactly as in MiniMind's script).
    public mutating func feed(_ text: String) {
        var t = text
        t.withUTF8 { buf in
            guard let p = buf.baseAddress, buf.count > 0 else { return }
            let table = EncodeWorker.classTable
            PreTokenizer.split(p, 0, buf.count, table) { s, e in words.add(p + s, e - s) }
        }
    }

    /// Feeds every `{"text": …}` line of a jsonl file, streaming; blank lines are skipped.
    /// - Throws: `JSONLError` (`FILE:LINE: reason`) naming the bad line; `TokenizerError.training` naming the
    ///   file when it holds no non-empty text (an empty file would otherwise "train" a merge-less tokenizer).
    public mutating func feedJSONL(path: String) throws {
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        var texts = 0
        let reporter = progress
        let reader = try JSONLReader(path: path)
        try reader.forEachLine(afterChunk: {
            if Int(reader.bytesRead) < size { reporter?("Pre-processing sequences", Int(reader.bytesRead), size) }
        }) { line in
            let text = try JSONLReader.string(field: "text", of: line, path: path)
            if !text.isEmpty { texts += 1 }
            feed(text)
        }
        let lines = reader.lineCount
        guard texts > 0 else {
            throw TokenizerError.training("\(path) holds no text to train on (\(lines) line\(lines == 1 ? "" : "s"), none with a non-empty \"text\")")
        }
        progress?("Pre-processing sequences", size, size)
    }

    /// The trained model.
    public struct Result {
        /// Token strings in id order (byte-level symbols; the special tokens first).
        public var vocab: [String]
        /// Merges in rank order, as pairs of token strings.
        public var merges: [(String, String)]
        public var specialTokens: [String]
    }

    /// Runs the merges on the fed words.
    public func train() throws -> Result {
        guard vocabSize > 0 else { throw TokenizerError.training("vocab size must be positive") }
        var idToWord: [String] = []
        var wordToId: [String: Int32] = [:]
        func add(_ s: String) { if wordToId[s] == nil { wordToId[s] = Int32(idToWord.count); idToWord.append(s) } }
        for s in specialTokens { add(s) }
        // Alphabet: byte-level characters of all words plus the full initial alphabet, sorted by code point.
        let alphabet = (0..<256).map { ByteLevel.byteToScalar[$0] }.sorted()
        for v in alphabet { add(String(Character(Unicode.Scalar(v)!))) }
        var byteId = [Int32](repeating: 0, count: 256)
        for b in 0..<256 { byteId[b] = wordToId[ByteLevel.byteStrings[b]]! }

        // Words as symbol ids in one arena.
        let nWords = words.count
        var wStart = [Int](repeating: 0, count: nWords + 1)
        var wLen = [Int32](repeating: 0, count: nWords)
        var sym = [Int32]()
        sym.reserveCapacity(words.keyArena.count)
        for w in 0..<nWords {
            wStart[w] = sym.count
            let (s, l) = words.key(w)
            for k in s..<(s + l) { sym.append(byteId[Int(words.keyArena[k])]) }
            wLen[w] = Int32(l)
        }
        wStart[nWords] = sym.count
        let counts = words.counts

        // Initial pair counts and the words each pair occurs in.
        var pairCounts = PairCountMap(capacity: 1 << 16)
        var where0: [UInt64: [Int32]] = [:]
        progress?("Count pairs", 0, nWords)
        for w in 0..<nWords {
            let s = wStart[w], l = Int(wLen[w])
            if l < 2 { continue }
            let c = Int64(counts[w])
            for k in s..<(s + l - 1) {
                let p = MergeTable.key(sym[k], sym[k + 1])
                pairCounts.add(p, c)
                where0[p, default: []].appendUnique(Int32(w))
            }
        }
        var heap = MergeHeap()
        for (p, pos) in where0 {
            let c = pairCounts.get(p)
            if c > 0 { heap.push(count: c, pair: p, pos: pos) }
        }
        where0 = [:]

        var merges: [(UInt64, Int32)] = []
        var changes: [(UInt64, Int32, Int32)] = []  // (pair, delta, word)
        var whereToUpdate: [UInt64: [Int32]] = [:]
        while idToWord.count < vocabSize {
            guard var top = heap.pop() else { break }
            let current = pairCounts.get(top.pair)
            if top.count != current {
                top.count = current
                heap.push(top)
                continue
            }
            if top.count < 1 || Int64(minFrequency) > top.count { break }
            let a = Int32(truncatingIfNeeded: top.pair >> 32), b = Int32(truncatingIfNeeded: top.pair & 0xFFFF_FFFF)
            let newToken = idToWord[Int(a)] + idToWord[Int(b)]
            let newId: Int32
            if let existing = wordToId[newToken] { newId = existing } else {
                newId = Int32(idToWord.count); wordToId[newToken] = newId; idToWord.append(newToken)
            }
            merges.append((top.pair, newId))

            changes.removeAll(keepingCapacity: true)
            sym.withUnsafeMutableBufferPointer { sp in
                for w in top.pos {
                    let s = wStart[Int(w)]
                    let l = Int(wLen[Int(w)])
                    var r = 0, o = 0
                    while r < l {
                        if r + 1 < l && sp[s + r] == a && sp[s + r + 1] == b {
                            if o > 0 {
                                let prev = sp[s + o - 1]
                                changes.append((MergeTable.key(prev, a), -1, w))
                                changes.append((MergeTable.key(prev, newId), 1, w))
                            }
                            sp[s + o] = newId
                            o += 1; r += 2
                            if r < l {
                                let nx = sp[s + r]
                                changes.append((MergeTable.key(b, nx), -1, w))
                                changes.append((MergeTable.key(newId, nx), 1, w))
                            }
                        } else {
                            sp[s + o] = sp[s + r]
                            o += 1; r += 1
                        }
                    }
                    wLen[Int(w)] = Int32(o)
                }
            }
            for (p, delta, w) in changes {
                pairCounts.add(p, Int64(delta) * Int64(counts[Int(w)]))
                if delta > 0 { whereToUpdate[p, default: []].appendUnique(w) }
            }
            for (p, pos) in whereToUpdate {
                let c = pairCounts.get(p)
                if c > 0 { heap.push(count: c, pair: p, pos: pos) }
            }
            whereToUpdate.removeAll(keepingCapacity: true)
            if merges.count % 256 == 0 { progress?("Compute merges", idToWord.count, vocabSize) }
        }
        progress?("Compute merges", idToWord.count, vocabSize)

        // A pair merged twice keeps its last rank (Hugging Face collects merges into a map, later entries win).
        var lastRank: [UInt64: Int] = [:]
        for (i, m) in merges.enumerated() { lastRank[m.0] = i }
        var out: [(String, String)] = []
        for (i, m) in merges.enumerated() where lastRank[m.0] == i {
            out.append((idToWord[Int(m.0 >> 32)], idToWord[Int(m.0 & 0xFFFF_FFFF)]))
        }
        return Result(vocab: idToWord, merges: out, specialTokens: specialTokens)
    }
}

extension Array where Element == Int32 {
    /// Appends `w` unless it is already the last element (callers add each word's positions contiguously).
    @inline(__always) mutating func appendUnique(_ w: Int32) {
        if last != w { append(w) }
    }
}

/// Max-heap of merge candidates: higher count first, then the smaller pair.
struct MergeHeap {
    struct Entry { var count: Int64; var pair: UInt64; var pos: [Int32] }
    private var items: [Entry] = []

    @inline(__always) private static func before(_ x: Entry, _ y: Entry) -> Bool {
        x.count != y.count ? x.count > y.count : x.pair < y.pair
    }

    mutating func push(count: Int64, pair: UInt64, pos: [Int32]) { push(Entry(count: count, pair: pair, pos: pos)) }

    mutating func push(_ e: Entry) {
        items.append(e)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) >> 1
            if !MergeHeap.before(items[i], items[p]) { break }
            items.swapAt(i, p)
            i = p
        }
    }

    mutating func pop() -> Entry? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var i = 0
        let n = items.count
        while true {
            let l = 2 * i + 1
            if l >= n { break }
            var m = l
            if l + 1 < n && MergeHeap.before(items[l + 1], items[l]) { m = l + 1 }
            if !MergeHeap.before(items[m], items[i]) { break }
            items.swapAt(i, m)
            i = m
        }
        return top
    }
}

/// Open-addressing pair → count map.
struct PairCountMap {
    private var keys: [UInt64]
    private var vals: [Int64]
    private var mask: Int
    private var used = 0

    init(capacity: Int) {
        var size = 16
        while size < capacity { size <<= 1 }
        keys = [UInt64](repeating: UInt64.max, count: size)
        vals = [Int64](repeating: 0, count: size)
        mask = size - 1
    }

    @inline(__always) private func slot(_ k: UInt64) -> Int {
        Int(truncatingIfNeeded: (k &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    mutating func add(_ k: UInt64, _ d: Int64) {
        if used * 2 >= keys.count { grow() }
        var s = slot(k)
        while keys[s] != k {
            if keys[s] == UInt64.max { keys[s] = k; used += 1; break }
            s = (s + 1) & mask
        }
        vals[s] += d
    }

    func get(_ k: UInt64) -> Int64 {
        var s = slot(k)
        while true {
            if keys[s] == k { return vals[s] }
            if keys[s] == UInt64.max { return 0 }
            s = (s + 1) & mask
        }
    }

    private mutating func grow() {
        let oldK = keys, oldV = vals
        keys = [UInt64](repeating: UInt64.max, count: oldK.count * 2)
        vals = [Int64](repeating: 0, count: oldK.count * 2)
        mask = keys.count - 1
        used = 0
        for i in 0..<oldK.count where oldK[i] != UInt64.max {
            var s = slot(oldK[i])
            while keys[s] != UInt64.max { s = (s + 1) & mask }
            keys[s] = oldK[i]; vals[s] = oldV[i]; used += 1
        }
    }
}

/// Counts distinct byte strings (words) without allocating per word.
struct WordCounter {
    private var slots: [Int32] = [Int32](repeating: -1, count: 1 << 16)
    private var hashes: [UInt64] = []
    private var starts: [Int] = []
    private var lens: [Int32] = []
    private(set) var keyArena: [UInt8] = []
    private(set) var counts: [Int64] = []
    var count: Int { counts.count }

    func key(_ i: Int) -> (Int, Int) { (starts[i], Int(lens[i])) }

    mutating func add(_ p: UnsafePointer<UInt8>, _ n: Int) {
        let h = WordCache.hash(p, n)
        let mask = slots.count - 1
        var s = Int(truncatingIfNeeded: h) & mask
        while true {
            let e = Int(slots[s])
            if e < 0 { break }
            if hashes[e] == h && Int(lens[e]) == n {
                let st = starts[e]
                if keyArena.withUnsafeBufferPointer({ memcmp($0.baseAddress! + st, p, n) }) == 0 {
                    counts[e] += 1; return
                }
            }
            s = (s + 1) & mask
        }
        slots[s] = Int32(counts.count)
        hashes.append(h); starts.append(keyArena.count); lens.append(Int32(n))
        keyArena.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        counts.append(1)
        if counts.count * 2 > slots.count { rehash() }
    }

    private mutating func rehash() {
        slots = [Int32](repeating: -1, count: slots.count * 2)
        let mask = slots.count - 1
        for (i, h) in hashes.enumerated() {
            var s = Int(truncatingIfNeeded: h) & mask
            while slots[s] >= 0 { s = (s + 1) & mask }
            slots[s] = Int32(i)
        }
    }
}
