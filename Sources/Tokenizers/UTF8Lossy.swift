/// UTF-8 decoding with replacement, as Rust's `String::from_utf8_lossy` (which Hugging Face's ByteLevel decoder
/// uses): each maximal subpart of an ill-formed sequence becomes one U+FFFD (Unicode 15 §3.9, "U+FFFD
/// Substitution of Maximal Subparts").
enum UTF8Lossy {
    /// Length of the well-formed sequence starting at `p[i]` (1…4), or the negated length (-1…-3) of the
    /// maximal ill-formed subpart there; `incomplete` is set when the subpart is cut short only by the end
    /// of the buffer (a valid prefix of a character).
    @inline(__always)
    static func step(_ p: UnsafeBufferPointer<UInt8>, _ i: Int, _ incomplete: inout Bool) -> Int {
        incomplete = false
        let n = p.count
        let b0 = p[i]
        if b0 < 0x80 { return 1 }
        var need = 0
        var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
        switch b0 {
        case 0xC2...0xDF: need = 1
        case 0xE0: need = 2; lo = 0xA0
        case 0xE1...0xEC, 0xEE, 0xEF: need = 2
        case 0xED: need = 2; hi = 0x9F
        case 0xF0: need = 3; lo = 0x90
        case 0xF1...0xF3: need = 3
        case 0xF4: need = 3; hi = 0x8F
        default: return -1
        }
        var k = 1
        while k <= need {
            if i + k >= n { incomplete = true; return -k }
            let b = p[i + k]
            let (l, h): (UInt8, UInt8) = k == 1 ? (lo, hi) : (0x80, 0xBF)
            if b < l || b > h { return -k }
            k += 1
        }
        return need + 1
    }

    /// Decodes `bytes`, replacing ill-formed subparts with U+FFFD.
    static func decode(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        if let s = String(validating: bytes, as: UTF8.self) { return s }
        var out = [UInt8]()
        out.reserveCapacity(bytes.count + 8)
        var i = 0
        var inc = false
        while i < bytes.count {
            let r = step(bytes, i, &inc)
            if r > 0 {
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[i..<(i + r)]))
                i += r
            } else {
                out.append(contentsOf: [0xEF, 0xBF, 0xBD])
                i += -r
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ bytes: [UInt8]) -> String {
        bytes.withUnsafeBufferPointer { decode($0) }
    }

    /// Length of the longest prefix of `bytes` after which only a valid-but-incomplete character remains
    /// (the part a streaming decoder may emit now).
    static func emittablePrefix(_ bytes: UnsafeBufferPointer<UInt8>) -> Int {
        var i = 0
        var inc = false
        while i < bytes.count {
            let r = step(bytes, i, &inc)
            if r < 0 && inc { return i }
            i += abs(r)
        }
        return i
    }

    /// First byte offset where `bytes` is not valid UTF-8, or nil.
    static func firstInvalid(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        var i = 0
        var inc = false
        while i < bytes.count {
            if bytes[i] < 0x80 { i += 1; continue }
            let r = step(bytes, i, &inc)
            if r < 0 { return i }
            i += r
        }
        return nil
    }
}
