import Foundation

/// Open-addressing map from a token pair `(left, right)` to its merge `(rank, newId)`.
struct MergeTable {
    private var keys: [UInt64]
    private var values: [UInt64]
    private let mask: Int
    private(set) var count = 0
    static let empty = UInt64.max

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        keys = [UInt64](repeating: MergeTable.empty, count: size)
        values = [UInt64](repeating: 0, count: size)
        mask = size - 1
    }

    @inline(__always) static func key(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }
    @inline(__always) private func slot(_ k: UInt64) -> Int {
        Int(truncatingIfNeeded: (k &* 0x9E37_79B9_7F4A_7C15) >> 40) & mask
    }

    /// Inserts or overwrites (Hugging Face builds its merge map the same way: a later duplicate wins).
    mutating func set(_ a: Int32, _ b: Int32, rank: UInt32, newId: Int32) {
        let k = MergeTable.key(a, b)
        var s = slot(k)
        while keys[s] != MergeTable.empty && keys[s] != k { s = (s + 1) & mask }
        if keys[s] == MergeTable.empty { count += 1 }
        keys[s] = k
        values[s] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: newId))
    }

    /// (rank, newId) packed as `rank << 32 | newId`, or nil.
    @inline(__always) func get(_ a: Int32, _ b: Int32) -> UInt64? {
        let k = MergeTable.key(a, b)
        return keys.withUnsafeBufferPointer { kp -> UInt64? in
            var s = slot(k)
            while true {
                let e = kp[s]
                if e == k { return values[s] }
                if e == MergeTable.empty { return nil }
                s = (s + 1) & mask
            }
        }
    }
}

/// Byte-level BPE model: the 256 byte symbols' ids and the ranked merges.
/// Merging follows Hugging Face `tokenizers` `models/bpe/word.rs` `merge_all`: a min-heap of candidate merges
/// ordered by (rank, position); stale entries (whose pair no longer yields the same new id) are skipped.
final class BPEModel {
    /// Id of each byte's symbol, -1 when the vocab lacks it.
    let byteToId: [Int32]
    let merges: MergeTable
    let unkId: Int32?
    let fuseUnk: Bool
    /// With `ignore_merges`, a word that is itself in the vocab maps directly to its id.
    let wholeWordIds: [[UInt8]: Int32]?

    init(byteToId: [Int32], merges: MergeTable, unkId: Int32?, fuseUnk: Bool, wholeWordIds: [[UInt8]: Int32]?) {
        self.byteToId = byteToId
        self.merges = merges
        self.unkId = unkId
        self.fuseUnk = fuseUnk
        self.wholeWordIds = wholeWordIds
    }
}

/// Reusable buffers for merging one word.
struct MergeScratch {
    var c: [Int32] = []
    var prev: [Int32] = []
    var next: [Int32] = []
    var len: [Int32] = []
    /// Heap entries: key = rank << 32 | pos (min first), plus the new id.
    var heapKey: [UInt64] = []
    var heapId: [Int32] = []

    mutating func push(_ key: UInt64, _ id: Int32) {
        heapKey.append(key); heapId.append(id)
        var i = heapKey.count - 1
        while i > 0 {
            let p = (i - 1) >> 1
            if heapKey[p] <= key { break }
            heapKey[i] = heapKey[p]; heapId[i] = heapId[p]
            i = p
        }
        heapKey[i] = key; heapId[i] = id
    }

    mutating func pop() -> (UInt64, Int32) {
        let top = (heapKey[0], heapId[0])
        let lastK = heapKey.removeLast(), lastI = heapId.removeLast()
        let n = heapKey.count
        if n > 0 {
            var i = 0
            while true {
                let l = 2 * i + 1
                if l >= n { break }
                var m = l
                if l + 1 < n && heapKey[l + 1] < heapKey[l] { m = l + 1 }
                if heapKey[m] >= lastK { break }
                heapKey[i] = heapKey[m]; heapId[i] = heapId[m]
                i = m
            }
            heapKey[i] = lastK; heapId[i] = lastI
        }
        return top
    }
}

extension BPEModel {
    /// Appends the ids of one pre-token (raw bytes `p[0..<n]`) to `out`.
    func mergeWord(_ p: UnsafePointer<UInt8>, _ n: Int, _ s: inout MergeScratch, _ out: inout [Int32]) {
        let merges = self.merges, byteToId = self.byteToId
        if let whole = wholeWordIds, let id = whole[Array(UnsafeBufferPointer(start: p, count: n))] {
            out.append(id); return
        }
        s.c.removeAll(keepingCapacity: true)
        s.len.removeAll(keepingCapacity: true)
        for i in 0..<n {
            let id = byteToId[Int(p[i])]
            if id >= 0 {
                s.c.append(id); s.len.append(1)
            } else if let unk = unkId {
                if fuseUnk, let last = s.c.last, last == unk { s.len[s.len.count - 1] += 1; continue }
                s.c.append(unk); s.len.append(1)
            }
            // else: dropped, as Hugging Face does for an unknown char without unk_token
        }
        let m = s.c.count
        if m == 1 { out.append(s.c[0]); return }
        if m == 0 { return }
        s.prev.removeAll(keepingCapacity: true)
        s.next.removeAll(keepingCapacity: true)
        for i in 0..<m { s.prev.append(Int32(i - 1)); s.next.append(i + 1 < m ? Int32(i + 1) : -1) }
        s.heapKey.removeAll(keepingCapacity: true)
        s.heapId.removeAll(keepingCapacity: true)
        for i in 0..<(m - 1) {
            if let v = merges.get(s.c[i], s.c[i + 1]) {
                s.push((v >> 32) << 32 | UInt64(i), Int32(truncatingIfNeeded: v))
            }
        }
        while !s.heapKey.isEmpty {
            let (key, newId) = s.pop()
            let pos = Int(key & 0xFFFF_FFFF)
            if s.len[pos] == 0 { continue }
            let nx = s.next[pos]
            if nx < 0 { continue }
            let nxi = Int(nx)
            guard let v = merges.get(s.c[pos], s.c[nxi]), Int32(truncatingIfNeeded: v) == newId else { continue }
            s.c[pos] = newId
            s.len[pos] += s.len[nxi]
            s.next[pos] = s.next[nxi]
            s.len[nxi] = 0
            let after = s.next[pos]
            if after >= 0 { s.prev[Int(after)] = Int32(pos) }
            let pv = s.prev[pos]
            if pv >= 0, let v2 = merges.get(s.c[Int(pv)], newId) {
                s.push((v2 >> 32) << 32 | UInt64(pv), Int32(truncatingIfNeeded: v2))
            }
            if after >= 0, let v3 = merges.get(newId, s.c[Int(after)]) {
                s.push((v3 >> 32) << 32 | UInt64(pos), Int32(truncatingIfNeeded: v3))
            }
        }
        for i in 0..<m where s.len[i] != 0 { out.append(s.c[i]) }
    }
}

/// Cache of merged words, keyed by the word's bytes, with no per-lookup allocation.
struct WordCache {
    private var slots: [Int32]
    private var hashes: [UInt64] = []
    private var keyStart: [Int32] = []
    private var keyLen: [Int32] = []
    private var valStart: [Int32] = []
    private var valLen: [Int32] = []
    private var keyArena: [UInt8] = []
    private var valArena: [Int32] = []
    private let mask: Int
    let maxEntries: Int
    static let maxWordBytes = 256

    init(maxEntries: Int = 1 << 17) {
        var size = 1
        while size < maxEntries * 2 { size <<= 1 }
        slots = [Int32](repeating: -1, count: size)
        mask = size - 1
        self.maxEntries = maxEntries
    }

    @inline(__always) static func hash(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ UInt64(n)
        let raw = UnsafeRawPointer(p)
        var i = 0
        while i + 8 <= n {
            h = (h ^ raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0x9E37_79B9_7F4A_7C15
            h ^= h >> 29
            i += 8
        }
        var tail: UInt64 = 0
        var shift: UInt64 = 0
        while i < n { tail |= UInt64(p[i]) << shift; shift += 8; i += 1 }
        h = (h ^ tail) &* 0x9E37_79B9_7F4A_7C15
        h ^= h >> 32
        return h
    }

    /// Appends the cached ids for the word to `out` and returns true, or returns false.
    /// (`mutating` only so that callers access the cache in place instead of copying it.)
    @inline(__always)
    mutating func lookup(_ p: UnsafePointer<UInt8>, _ n: Int, _ h: UInt64, _ out: inout [Int32]) -> Bool {
        var s = Int(truncatingIfNeeded: h) & mask
        while true {
            let e = Int(slots[s])
            if e < 0 { return false }
            if hashes[e] == h && Int(keyLen[e]) == n {
                let ks = Int(keyStart[e])
                let same = keyArena.withUnsafeBufferPointer { memcmp($0.baseAddress! + ks, p, n) == 0 }
                if same {
                    let vs = Int(valStart[e]), vl = Int(valLen[e])
                    valArena.withUnsafeBufferPointer { out.append(contentsOf: UnsafeBufferPointer(rebasing: $0[vs..<(vs + vl)])) }
                    return true
                }
            }
            s = (s + 1) & mask
        }
    }

    mutating func insert(_ p: UnsafePointer<UInt8>, _ n: Int, _ h: UInt64, _ ids: ArraySlice<Int32>) {
        guard hashes.count < maxEntries else { return }
        var s = Int(truncatingIfNeeded: h) & mask
        while slots[s] >= 0 { s = (s + 1) & mask }
        slots[s] = Int32(hashes.count)
        hashes.append(h)
        keyStart.append(Int32(keyArena.count)); keyLen.append(Int32(n))
        keyArena.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        valStart.append(Int32(valArena.count)); valLen.append(Int32(ids.count))
        valArena.append(contentsOf: ids)
    }
}
