/// One entry of `tokenizer.json`'s `added_tokens`.
public struct AddedToken: Equatable, Sendable {
    public var id: Int32
    public var content: String
    public var special: Bool
    public var normalized: Bool
    public init(id: Int32, content: String, special: Bool, normalized: Bool = false) {
        self.id = id; self.content = content; self.special = special; self.normalized = normalized
    }
}

/// Finds added tokens in raw bytes with leftmost-longest matching (Hugging Face `added_vocabulary.rs` uses
/// an Aho-Corasick automaton with `MatchKind::LeftmostLongest`).
struct AddedMatcher {
    private var tokens: [[UInt8]] = []
    private var ids: [Int32] = []
    /// Candidate indices per first byte, longest first.
    private var byFirst = [[Int]](repeating: [], count: 256)
    /// 1 where some token starts with that byte (a flat table keeps the scan loop free of array copies).
    private var startsToken = [UInt8](repeating: 0, count: 256)
    var isEmpty: Bool { tokens.isEmpty }

    init(_ list: [AddedToken]) {
        for t in list where !t.content.isEmpty {
            let b = Array(t.content.utf8)
            byFirst[Int(b[0])].append(tokens.count)
            startsToken[Int(b[0])] = 1
            tokens.append(b); ids.append(t.id)
        }
        for i in 0..<256 where byFirst[i].count > 1 {
            byFirst[i].sort { tokens[$0].count > tokens[$1].count }
        }
    }

    /// Splits `p[start..<end]` into text runs (`text(s, e)`) and matched tokens (`token(id)`), in order.
    @inline(__always)
    func split(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int,
               text: (Int, Int) -> Void, token: (Int32) -> Void) {
        if tokens.isEmpty { if start < end { text(start, end) }; return }
        var runStart = start
        var i = start
        while i < end {
            let first = startsToken.withUnsafeBufferPointer { t in
                var k = i
                while k < end && t[Int(p[k])] == 0 { k += 1 }
                return k
            }
            if first >= end { break }
            i = first
            var matched = -1
            do {
                for c in byFirst[Int(p[i])] {
                    let t = tokens[c]
                    if t.count <= end - i && t.withUnsafeBufferPointer({ memcmp($0.baseAddress!, p + i, t.count) }) == 0 {
                        matched = c; break
                    }
                }
            }
            if matched >= 0 {
                if runStart < i { text(runStart, i) }
                token(ids[matched])
                i += tokens[matched].count
                runStart = i
            } else {
                i += 1
            }
        }
        if runStart < end { text(runStart, end) }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
