import Foundation
import XCTest
@testable import Model

/// The merge records' file digests: FIPS 180-4's example vectors, and a file read in 1 MiB chunks equals sha256sum.
final class SHA256Tests: XCTestCase {
    func testStandardVectors() {
        XCTAssertEqual(SHA256Digest.hex(of: Data()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256Digest.hex(of: Data("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256Digest.hex(of: Data("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(SHA256Digest.hex(of: Data(repeating: 0x61, count: 1_000_000)),
                       "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    func testFileDigestMatchesSha256sum() throws {
        let path = NSTemporaryDirectory() + "swiftmind-sha-\(getpid()).bin"
        defer { try? FileManager.default.removeItem(atPath: path) }
        var rng = SplitMix64(seed: 5)
        let data = Data((0..<(3 << 20) + 7).map { _ in UInt8(truncatingIfNeeded: rng.next() >> 17) })
        try data.write(to: URL(fileURLWithPath: path))
        let ours = try SHA256Digest.hex(ofFile: path)
        XCTAssertEqual(ours, SHA256Digest.hex(of: data))
        XCTAssertThrowsError(try SHA256Digest.hex(ofFile: path + ".missing")) { XCTAssertTrue("\($0)".contains(path + ".missing")) }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/sha256sum") else { return }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        p.arguments = [path]
        let out = Pipe(); p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(String(text.prefix(64)), ours)
    }
}
