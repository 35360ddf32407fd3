/// The GPT-2 byte-level pre-tokenization pattern, written by hand over UTF-8 bytes:
///
///     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
///
/// (openai/gpt-2 `encoder.py`; Hugging Face `tokenizers` applies it with Oniguruma and `Isolated` splitting).
/// Every character belongs to exactly one of the classes letter / number / space / other, so the matches tile
/// the text; `(?!\S)` makes a whitespace run that is followed by a non-space give its last character to the
/// next word.
enum PreTokenizer {
    /// Decodes the scalar starting at `p[i]` (valid UTF-8 assumed): (value, byte length).
    @inline(__always)
    static func scalar(_ p: UnsafePointer<UInt8>, _ i: Int) -> (UInt32, Int) {
        let b0 = UInt32(p[i])
        if b0 < 0x80 { return (b0, 1) }
        if b0 < 0xE0 { return ((b0 & 0x1F) << 6 | UInt32(p[i + 1] & 0x3F), 2) }
        if b0 < 0xF0 {
            return ((b0 & 0x0F) << 12 | UInt32(p[i + 1] & 0x3F) << 6 | UInt32(p[i + 2] & 0x3F), 3)
        }
        return ((b0 & 0x07) << 18 | UInt32(p[i + 1] & 0x3F) << 12 | UInt32(p[i + 2] & 0x3F) << 6
                    | UInt32(p[i + 3] & 0x3F), 4)
    }

    /// Calls `body(start, end)` for each pre-token of the valid UTF-8 bytes `p[start..<end]`, in order.
    @inline(__always)
    static func split(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int, _ table: UnsafePointer<UInt8>,
                      _ body: (Int, Int) -> Void) {
        let space = CharClass.space.rawValue
        var i = start
        while i < end {
            let b = p[i]
            if b == 0x27, i + 1 < end {  // contractions
                let n1 = p[i + 1]
                if n1 == 0x73 || n1 == 0x74 || n1 == 0x6D || n1 == 0x64 { body(i, i + 2); i += 2; continue }  // s t m d
                if i + 2 < end {
                    let n2 = p[i + 2]
                    if (n1 == 0x72 && n2 == 0x65) || (n1 == 0x76 && n2 == 0x65) || (n1 == 0x6C && n2 == 0x6C) {
                        body(i, i + 3); i += 3; continue  // re ve ll
                    }
                }
            }
            if b == 0x20, i + 1 < end {  // " ?X+" with X = letter, number or other
                let (c1, l1) = scalar(p, i + 1)
                let k = table[Int(c1)]
                if k != space {
                    var j = i + 1 + l1
                    while j < end {
                        let (c, l) = scalar(p, j)
                        if table[Int(c)] != k { break }
                        j += l
                    }
                    body(i, j); i = j; continue
                }
            }
            let (c0, l0) = scalar(p, i)
            let k = table[Int(c0)]
            var j = i + l0
            if k != space {
                while j < end {
                    let (c, l) = scalar(p, j)
                    if table[Int(c)] != k { break }
                    j += l
                }
                body(i, j); i = j
            } else {
                var lastStart = i
                while j < end {
                    let (c, l) = scalar(p, j)
                    if table[Int(c)] != space { break }
                    lastStart = j
                    j += l
                }
                if j == end || lastStart == i {
                    body(i, j); i = j           // \s+(?!\S) at the end, or a single \s before a non-space
                } else {
                    body(i, lastStart); i = lastStart  // leave the last whitespace for the next word
                }
            }
        }
    }
}
