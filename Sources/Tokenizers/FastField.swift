import Foundation

/// Fast extraction of one top-level string member (e.g. `"text"`) from a JSON object line, without building
/// the whole object (Foundation's JSONSerialization is the slow part of reading jsonl). Returns nil when the
/// line is not an object with that string member or is malformed; callers then fall back to the full parser
/// for the error message.
enum FastField {
    static func string(_ data: Data, field: String) -> String? {
        data.withUnsafeBytes { raw -> String? in
            let b = raw.bindMemory(to: UInt8.self)
            let key = Array(field.utf8)
            var i = 0
            let n = b.count
            @inline(__always) func ws() { while i < n, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 } }
            // Skips a string starting at b[i] == '"'; returns the raw range of its contents.
            func skipString() -> Range<Int>? {
                i += 1
                let s = i
                while i < n {
                    let c = b[i]
                    if c == 0x22 { let r = s..<i; i += 1; return r }
                    if c == 0x5C { i += 2; continue }
                    if c < 0x20 { return nil }
                    i += 1
                }
                return nil
            }
            func skipValue() -> Bool {
                guard i < n else { return false }
                switch b[i] {
                case 0x22: return skipString() != nil
                case 0x7B, 0x5B:  // nested: skip by depth, honouring strings
                    var depth = 0
                    while i < n {
                        let c = b[i]
                        if c == 0x22 { if skipString() == nil { return false }; continue }
                        if c == 0x7B || c == 0x5B { depth += 1 } else if c == 0x7D || c == 0x5D {
                            depth -= 1
                            if depth == 0 { i += 1; return true }
                        }
                        i += 1
                    }
                    return false
                default:
                    while i < n, b[i] != 0x2C, b[i] != 0x7D, b[i] != 0x20, b[i] != 0x0A, b[i] != 0x0D, b[i] != 0x09 { i += 1 }
                    return true
                }
            }
            ws()
            guard i < n, b[i] == 0x7B else { return nil }
            i += 1
            var found: Range<Int>? = nil
            while true {
                ws()
                guard i < n else { return nil }
                if b[i] == 0x7D { break }
                guard b[i] == 0x22, let k = skipString() else { return nil }
                ws()
                guard i < n, b[i] == 0x3A else { return nil }
                i += 1
                ws()
                let isKey = k.count == key.count && key.withUnsafeBufferPointer { kp in
                    memcmp(kp.baseAddress!, b.baseAddress! + k.lowerBound, key.count) == 0
                }
                if isKey {
                    guard i < n, b[i] == 0x22, let r = skipString() else { return nil }
                    found = r   // a later duplicate key wins, as in JSONSerialization
                } else if !skipValue() { return nil }
                ws()
                guard i < n else { return nil }
                if b[i] == 0x2C { i += 1; continue }
                if b[i] == 0x7D { break }
                return nil
            }
            i += 1
            ws()
            guard i == n, let r = found else { return nil }
            return unescape(UnsafeBufferPointer(rebasing: b[r]))
        }
    }

    /// Decodes JSON string contents (escapes, surrogate pairs); nil when malformed.
    static func unescape(_ s: UnsafeBufferPointer<UInt8>) -> String? {
        if !s.contains(0x5C) { return String(decoding: s, as: UTF8.self) }
        var out = [UInt8]()
        out.reserveCapacity(s.count)
        var i = 0
        func hex4(_ at: Int) -> UInt32? {
            guard at + 4 <= s.count else { return nil }
            var v: UInt32 = 0
            for k in at..<(at + 4) {
                let c = s[k]
                let d: UInt32
                switch c {
                case 0x30...0x39: d = UInt32(c - 0x30)
                case 0x41...0x46: d = UInt32(c - 0x41 + 10)
                case 0x61...0x66: d = UInt32(c - 0x61 + 10)
                default: return nil
                }
                v = v << 4 | d
            }
            return v
        }
        func put(_ v: UInt32) {
            let u = Unicode.Scalar(v) ?? "\u{FFFD}"
            out.append(contentsOf: String(Character(u)).utf8)
        }
        while i < s.count {
            let c = s[i]
            if c != 0x5C { out.append(c); i += 1; continue }
            guard i + 1 < s.count else { return nil }
            switch s[i + 1] {
            case 0x22: out.append(0x22)
            case 0x5C: out.append(0x5C)
            case 0x2F: out.append(0x2F)
            case 0x62: out.append(0x08)
            case 0x66: out.append(0x0C)
            case 0x6E: out.append(0x0A)
            case 0x72: out.append(0x0D)
            case 0x74: out.append(0x09)
            case 0x75:
                guard let v = hex4(i + 2) else { return nil }
                if (0xD800..<0xDC00).contains(v), i + 12 <= s.count, s[i + 6] == 0x5C, s[i + 7] == 0x75,
                   let lo = hex4(i + 8), (0xDC00..<0xE000).contains(lo) {
                    put(0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00))
                    i += 12
                    continue
                }
                if (0xD800..<0xE000).contains(v) { return nil }  // lone surrogate: let the full parser decide
                put(v)
                i += 6
                continue
            default: return nil
            }
            i += 2
        }
        return String(decoding: out, as: UTF8.self)
    }
}
