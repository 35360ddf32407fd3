// safetensors read/write (https://github.com/huggingface/safetensors format: u64-LE header length, JSON header,
// raw little-endian tensor bytes). Write: F32 and I32. Read: F32/F16/BF16 → Float, I32/I64 → Int32.
import Foundation

/// safetensors element types this module understands.
public enum SafeTensorsDType: String, Sendable {
    case F32, F16, BF16, I32, I64, F64, I8, U8, I16, BOOL
    public var size: Int {
        switch self {
        case .F32, .I32: return 4
        case .F16, .BF16, .I16: return 2
        case .I64, .F64: return 8
        case .I8, .U8, .BOOL: return 1
        }
    }
}

/// One tensor entry of a safetensors header. `byteRange` is relative to the start of the data section.
public struct SafeTensorsEntry: Sendable {
    public let name: String
    public let dtype: SafeTensorsDType
    public let shape: [Int]
    public let byteRange: Range<Int>
    public var count: Int { shape.reduce(1, *) }
}

/// Product of `shape` with overflow checking; nil if a dimension is negative or the product overflows `Int`.
public func checkedElementCount(_ shape: [Int]) -> Int? {
    var n = 1
    for d in shape {
        guard d >= 0 else { return nil }
        let (p, o) = n.multipliedReportingOverflow(by: d)
        if o { return nil }
        n = p
    }
    return n
}

/// A parsed, validated safetensors file (memory-mapped).
/// The header is validated on open: JSON object, known dtypes, non-negative shapes whose element count × dtype
/// size equals the byte range, offsets inside the file, ranges non-overlapping. Errors (`ModelError`) name the file
/// and the tensor.
public final class SafeTensorsFile {
    public let path: String
    public let entries: [String: SafeTensorsEntry]
    public let metadata: [String: String]
    private let data: Data
    private let dataStart: Int

    public init(path: String) throws {
        self.path = path
        let d: Data
        do { d = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            throw ModelError("\(path): cannot read safetensors file (\(error.localizedDescription))")
        }
        data = d
        guard d.count >= 8 else { throw ModelError("\(path): too short for a safetensors header (\(d.count) bytes)") }
        var hlen: UInt64 = 0
        for i in 0..<8 { hlen |= UInt64(d[d.startIndex + i]) << (8 * UInt64(i)) }
        guard hlen <= UInt64(d.count - 8), hlen < 100_000_000 else {
            throw ModelError("\(path): header length \(hlen) exceeds the file size \(d.count)") }
        dataStart = 8 + Int(hlen)
        let headerData = d.subdata(in: (d.startIndex + 8)..<(d.startIndex + dataStart))
        guard let obj = try? JSONSerialization.jsonObject(with: headerData), let dict = obj as? [String: Any] else {
            throw ModelError("\(path): header is not a JSON object") }
        let dataSize = d.count - dataStart
        var es: [String: SafeTensorsEntry] = [:]
        var meta: [String: String] = [:]
        for (name, value) in dict {
            if name == "__metadata__" {
                if let m = value as? [String: Any] { for (k, v) in m { meta[k] = "\(v)" } }
                continue
            }
            guard let t = value as? [String: Any] else { throw ModelError("\(path): tensor \(name): entry is not an object") }
            guard let ds = t["dtype"] as? String, let dt = SafeTensorsDType(rawValue: ds) else {
                throw ModelError("\(path): tensor \(name): unknown dtype \(t["dtype"] ?? "nil")") }
            guard let sh = t["shape"] as? [Any] else { throw ModelError("\(path): tensor \(name): missing shape") }
            var shape: [Int] = []
            for s in sh {
                guard let n = s as? Int, n >= 0 else { throw ModelError("\(path): tensor \(name): bad shape \(sh)") }
                shape.append(n)
            }
            guard let off = t["data_offsets"] as? [Any], off.count == 2, let b = off[0] as? Int, let e = off[1] as? Int,
                  b >= 0, e >= b else { throw ModelError("\(path): tensor \(name): bad data_offsets") }
            guard e <= dataSize else {
                throw ModelError("\(path): tensor \(name): data_offsets [\(b), \(e)] past the end of the data (\(dataSize) bytes)") }
            guard let n = checkedElementCount(shape), case let (bytes, o) = n.multipliedReportingOverflow(by: dt.size), !o else {
                throw ModelError("\(path): tensor \(name): shape \(shape) has too many elements (the byte size overflows Int)") }
            guard bytes == e - b else {
                throw ModelError("\(path): tensor \(name): shape \(shape) × \(dt.rawValue) needs \(bytes) bytes, offsets give \(e - b)") }
            es[name] = SafeTensorsEntry(name: name, dtype: dt, shape: shape, byteRange: b..<e)
        }
        let sorted = es.values.sorted { $0.byteRange.lowerBound < $1.byteRange.lowerBound }
        for i in 1..<max(1, sorted.count) where sorted[i].byteRange.lowerBound < sorted[i - 1].byteRange.upperBound {
            throw ModelError("\(path): tensor \(sorted[i].name) overlaps tensor \(sorted[i - 1].name)")
        }
        entries = es
        metadata = meta
    }

    /// Tensor names in file order.
    public var names: [String] { entries.values.sorted { $0.byteRange.lowerBound < $1.byteRange.lowerBound }.map(\.name) }

    public func entry(_ name: String) throws -> SafeTensorsEntry {
        guard let e = entries[name] else { throw ModelError("\(path): tensor \(name) is missing") }
        return e
    }

    /// Copies tensor `name` (F32, F16 or BF16) as Float into `out` (whose count must equal the tensor's).
    public func readFloats(_ name: String, into out: UnsafeMutableBufferPointer<Float>) throws {
        let e = try entry(name)
        guard out.count == e.count else {
            throw ModelError("\(path): tensor \(name) has \(e.count) elements (shape \(e.shape)), expected \(out.count)") }
        let n = e.count
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let base = raw.baseAddress!.advanced(by: dataStart + e.byteRange.lowerBound)
            switch e.dtype {
            case .F32:
                memcpy(out.baseAddress!, base, n * 4)
            case .F16:
                for i in 0..<n { out[i] = Float(Float16(bitPattern: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            case .BF16:
                for i in 0..<n {
                    out[i] = Float(bitPattern: UInt32(base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16) }
            case .F64:
                for i in 0..<n { out[i] = Float(base.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
            default:
                throw ModelError("\(path): tensor \(name) has dtype \(e.dtype.rawValue), expected a float type")
            }
        }
    }

    /// Tensor `name` as `[Float]` (F32/F16/BF16).
    public func floats(_ name: String) throws -> [Float] {
        let e = try entry(name)
        var a = [Float](repeating: 0, count: e.count)
        try a.withUnsafeMutableBufferPointer { try readFloats(name, into: $0) }
        return a
    }

    /// Tensor `name` (I32 or I64, values must fit Int32) as `[Int32]`.
    public func int32s(_ name: String) throws -> [Int32] {
        let e = try entry(name)
        let n = e.count
        var out = [Int32](repeating: 0, count: n)
        try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let base = raw.baseAddress!.advanced(by: dataStart + e.byteRange.lowerBound)
            switch e.dtype {
            case .I32:
                for i in 0..<n { out[i] = base.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self) }
            case .I64:
                for i in 0..<n {
                    let v = base.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)
                    guard let w = Int32(exactly: v) else { throw ModelError("\(path): tensor \(name)[\(i)] = \(v) does not fit int32") }
                    out[i] = w
                }
            default:
                throw ModelError("\(path): tensor \(name) has dtype \(e.dtype.rawValue), expected I32 or I64")
            }
        }
        return out
    }
}

/// Builds a safetensors file in memory and writes it atomically (temp name + rename).
/// Tensors are stored in insertion order; the header is padded with spaces to a multiple of 8 bytes.
public struct SafeTensorsWriter {
    private var header: [(String, SafeTensorsDType, [Int], Range<Int>)] = []
    private var body = Data()
    public var metadata: [String: String] = ["format": "pt"]

    public init() {}

    /// Adds an F32 tensor; `values.count` must equal the product of `shape`.
    public mutating func add(_ name: String, shape: [Int], floats values: UnsafeBufferPointer<Float>) {
        precondition(values.count == shape.reduce(1, *), "safetensors: tensor \(name) count \(values.count) != shape \(shape)")
        let b = body.count
        body.append(UnsafeBufferPointer(start: UnsafeRawPointer(values.baseAddress)?.assumingMemoryBound(to: UInt8.self),
                                        count: values.count * 4))
        header.append((name, .F32, shape, b..<body.count))
    }
    public mutating func add(_ name: String, shape: [Int], floats values: [Float]) {
        values.withUnsafeBufferPointer { add(name, shape: shape, floats: $0) }
    }
    /// Adds an I32 tensor.
    public mutating func add(_ name: String, shape: [Int], int32s values: [Int32]) {
        precondition(values.count == shape.reduce(1, *), "safetensors: tensor \(name) count \(values.count) != shape \(shape)")
        let b = body.count
        values.withUnsafeBytes { body.append(contentsOf: $0) }
        header.append((name, .I32, shape, b..<body.count))
    }

    /// The serialized bytes.
    public func serialized() throws -> Data {
        var dict: [String: Any] = [:]
        if !metadata.isEmpty { dict["__metadata__"] = metadata }
        for (n, dt, sh, r) in header {
            dict[n] = ["dtype": dt.rawValue, "shape": sh, "data_offsets": [r.lowerBound, r.upperBound]] as [String: Any]
        }
        var h = try JSONSerialization.data(withJSONObject: dict, options: [.sortedKeys])
        while h.count % 8 != 0 { h.append(0x20) }
        var out = Data(capacity: 8 + h.count + body.count)
        var len = UInt64(h.count).littleEndian
        withUnsafeBytes(of: &len) { out.append(contentsOf: $0) }
        out.append(h)
        out.append(body)
        return out
    }

    /// Writes to `path` atomically.
    public func write(to path: String) throws { try writeAtomically(try serialized(), to: path) }
}
