import Foundation
import XCTest
@testable import Model

final class SafeTensorsTests: XCTestCase {
    /// Builds a raw safetensors file from a header dictionary and a body.
    func rawFile(_ header: [String: Any], _ body: [UInt8]) throws -> String {
        var h = try JSONSerialization.data(withJSONObject: header)
        while h.count % 8 != 0 { h.append(0x20) }
        var d = Data()
        var n = UInt64(h.count).littleEndian
        withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
        d.append(h); d.append(contentsOf: body)
        let path = NSTemporaryDirectory() + "st-\(getpid())-\(UUID().uuidString).safetensors"
        try d.write(to: URL(fileURLWithPath: path))
        return path
    }
    func bytes<T>(_ v: [T]) -> [UInt8] { v.withUnsafeBytes { Array($0) } }

    func testReadsF16BF16AndI64() throws {
        let f16: [Float16] = [1.5, -2.25, 0.0009765625]
        let bf16: [UInt16] = [Float(3.0), Float(-0.5)].map { UInt16($0.bitPattern >> 16) }
        let i64: [Int64] = [7, -1, 2_000_000_000]
        let body = bytes(f16) + bytes(bf16) + bytes(i64)
        let path = try rawFile([
            "a": ["dtype": "F16", "shape": [3], "data_offsets": [0, 6]],
            "b": ["dtype": "BF16", "shape": [2, 1], "data_offsets": [6, 10]],
            "c": ["dtype": "I64", "shape": [3], "data_offsets": [10, 34]],
        ], body)
        defer { unlink(path) }
        let f = try SafeTensorsFile(path: path)
        XCTAssertEqual(try f.floats("a"), [1.5, -2.25, 0.0009765625])
        XCTAssertEqual(try f.floats("b"), [3.0, -0.5])
        XCTAssertEqual(try f.int32s("c"), [7, -1, 2_000_000_000])
        XCTAssertEqual(f.names, ["a", "b", "c"])
        XCTAssertThrowsError(try f.int32s("a")) { XCTAssertTrue("\($0)".contains("a"), "\($0)") }
    }

    func testHeaderValidationNamesTheTensor() throws {
        let body = [UInt8](repeating: 0, count: 16)
        let cases: [([String: Any], String)] = [
            (["w": ["dtype": "F32", "shape": [3], "data_offsets": [0, 16]]], "w"),        // size ≠ shape × dtype
            (["w": ["dtype": "F32", "shape": [8], "data_offsets": [0, 32]]], "w"),        // past the end
            (["x": ["dtype": "F32", "shape": [2], "data_offsets": [0, 8]],
              "y": ["dtype": "F32", "shape": [2], "data_offsets": [4, 12]]], "overlaps"),  // overlap
            (["z": ["dtype": "Q4", "shape": [2], "data_offsets": [0, 8]]], "z"),          // unknown dtype
            (["big": ["dtype": "F32", "shape": [Int(1) << 40, Int(1) << 40], "data_offsets": [0, 0]]], "big"), // overflow
            (["big2": ["dtype": "F32", "shape": [Int.max / 2], "data_offsets": [0, 8]]], "big2"), // × dtype overflows
            (["neg": ["dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]]], "neg"),   // negative dims
            (["rev": ["dtype": "F32", "shape": [2], "data_offsets": [8, 0]]], "rev"),         // reversed offsets
        ]
        for (header, needle) in cases {
            let path = try rawFile(header, body)
            defer { unlink(path) }
            XCTAssertThrowsError(try SafeTensorsFile(path: path)) { XCTAssertTrue("\($0)".contains(needle), "\($0)") }
        }
    }

    func testWriterRoundTrip() throws {
        var w = SafeTensorsWriter()
        w.add("f", shape: [2, 2], floats: [1, 2, 3, 4])
        w.add("i", shape: [3], int32s: [5, 6, 7])
        let path = NSTemporaryDirectory() + "st-rt-\(getpid()).safetensors"
        defer { unlink(path) }
        try w.write(to: path)
        let f = try SafeTensorsFile(path: path)
        XCTAssertEqual(try f.floats("f"), [1, 2, 3, 4])
        XCTAssertEqual(try f.int32s("i"), [5, 6, 7])
        XCTAssertEqual(try f.entry("f").shape, [2, 2])
        XCTAssertEqual(f.metadata["format"], "pt")
    }
}
