import Foundation

/// The GPT-2 byte ↔ unicode mapping used by byte-level BPE (openai/gpt-2 `encoder.py` `bytes_to_unicode`, also
/// Hugging Face `tokenizers` `pre_tokenizers/byte_level.rs`): printable Latin-1 bytes map to themselves, the other
/// 68 bytes to U+0100… in byte order, so every byte has a visible, non-whitespace character.
public enum ByteLevel {
    /// `byteToScalar[b]` = the unicode scalar value that stands for byte `b`.
    public static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var n: UInt32 = 0
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable { table[b] = UInt32(b) } else { table[b] = 256 + n; n += 1 }
        }
        return table
    }()

    /// Inverse of `byteToScalar`: scalar value (< 0x144) → byte, or -1.
    public static let scalarToByte: [Int16] = {
        var table = [Int16](repeating: -1, count: 0x144)
        for b in 0..<256 { table[Int(byteToScalar[b])] = Int16(b) }
        return table
    }()

    /// The 256-character byte-level alphabet as one-character strings, indexed by byte.
    public static let byteStrings: [String] = byteToScalar.map { String(Character(Unicode.Scalar($0)!)) }

    /// Byte-level symbol string for raw bytes (each byte → its stand-in character).
    public static func encode<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(Unicode.Scalar(byteToScalar[Int(b)])!) }
        return String(s)
    }

    /// Raw bytes of a byte-level symbol string, or nil when a character is not in the byte-level alphabet.
    public static func decode(_ token: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(token.utf8.count)
        for u in token.unicodeScalars {
            guard u.value < 0x144 else { return nil }
            let b = scalarToByte[Int(u.value)]
            guard b >= 0 else { return nil }
            out.append(UInt8(b))
        }
        return out
    }

    /// Bytes a token contributes when decoded, as Hugging Face's ByteLevel decoder does: the mapped bytes when
    /// every character is in the alphabet, else the token's own UTF-8 bytes.
    static func decodedBytes(ofToken token: String) -> [UInt8] {
        decode(token) ?? Array(token.utf8)
    }
}

/// Character classes of the GPT-2 pre-tokenization pattern.
enum CharClass: UInt8 {
    case other = 0   // [^\s\p{L}\p{N}]
    case letter = 1  // \p{L}: Lu Ll Lt Lm Lo
    case number = 2  // \p{N}: Nd Nl No
    case space = 3   // \s: Unicode White_Space (Oniguruma's Space ctype for Unicode encodings)
}

/// Per-scalar class table for all of Unicode, built once from the standard library's Unicode data.
/// Hugging Face `tokenizers` 0.23 matches `\p{L}`/`\p{N}` with Oniguruma's Unicode 16.0 tables, while this
/// toolchain's data may be newer: scalars assigned after 16.0 are treated as unassigned (class other), which
/// makes the table agree with `tokenizers` on every code point (checked against its pre-tokenizer for all
/// 1,112,064 scalars).
enum UnicodeClasses {
    static let oniguruma = (major: 16, minor: 0)

    static let table: [UInt8] = {
        var t = [UInt8](repeating: CharClass.other.rawValue, count: 0x110000)
        t.withUnsafeMutableBufferPointer { buf in
            // Planes 4…16 hold no letters, numbers or spaces (unassigned, tags, variation selectors, private use).
            for v in 0..<0x40000 {
                guard let u = Unicode.Scalar(UInt32(v)) else { continue }
                let p = u.properties
                if let age = p.age, (age.major, age.minor) > oniguruma { continue }
                switch p.generalCategory {
                case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
                    buf[v] = CharClass.letter.rawValue
                case .decimalNumber, .letterNumber, .otherNumber:
                    buf[v] = CharClass.number.rawValue
                case .unassigned:
                    break
                default:
                    if p.isWhitespace { buf[v] = CharClass.space.rawValue }
                }
            }
        }
        return t
    }()
}
