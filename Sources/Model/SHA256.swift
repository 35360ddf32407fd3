// SHA-256 digests of files (adapter identities in merge records), computed by swift-crypto.
import Crypto
import Foundation

/// Hex SHA-256 (FIPS 180-4) digests, from swift-crypto's `SHA256`.
public enum SHA256Digest {
    /// Lower-case hex of `bytes`.
    static func hex<D: Sequence>(_ bytes: D) -> String where D.Element == UInt8 {
        bytes.map { String(format: "%02x", $0) }.joined()
    }

    /// Hex SHA-256 of `data`.
    public static func hex(of data: Data) -> String { hex(SHA256.hash(data: data)) }

    /// Hex SHA-256 of a file's bytes, read in 1 MiB chunks (memory flat whatever the size).
    /// - Throws: `ModelError` naming the file when it cannot be opened or read.
    public static func hex(ofFile path: String) throws -> String {
        guard let fh = FileHandle(forReadingAtPath: path) else { throw ModelError("\(path): cannot open for reading") }
        defer { try? fh.close() }
        var h = SHA256()
        while true {
            let chunk: Data
            do { chunk = try fh.read(upToCount: 1 << 20) ?? Data() } catch { throw ModelError("\(path): read failed: \(error)") }
            if chunk.isEmpty { break }
            h.update(data: chunk)
        }
        return hex(h.finalize())
    }
}
