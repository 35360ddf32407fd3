import Foundation

/// A JSON value with the path that reached it (`$.model.merges[3]`), so every error names where it happened.
struct JSONNode {
    let value: Any
    let path: String
    let file: String

    static func parse(_ data: Data, file: String) throws -> JSONNode {
        do {
            let v = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
            return JSONNode(value: v, path: "$", file: file)
        } catch {
            if let f = JSONLocator.locate(data) {
                throw TokenizerError.malformedJSON(file: file, reason: "at \(f.path) (line \(f.line), column \(f.column)): \(f.reason)")
            }
            let ns = error as NSError
            let detail = (ns.userInfo[NSDebugDescriptionErrorKey] as? String) ?? "\(error)"
            throw TokenizerError.malformedJSON(file: file, reason: detail)
        }
    }

    var isNull: Bool { value is NSNull }

    func fail(_ reason: String) -> TokenizerError {
        .invalidField(file: file, jsonPath: path, reason: reason)
    }

    func object() throws -> [String: Any] {
        guard let o = value as? [String: Any] else { throw fail("expected an object, found \(JSONNode.kind(value))") }
        return o
    }

    /// The member `key`, or nil when absent or null.
    func field(_ key: String) throws -> JSONNode? {
        let o = try object()
        guard let v = o[key], !(v is NSNull) else { return nil }
        return JSONNode(value: v, path: path + "." + key, file: file)
    }

    func require(_ key: String) throws -> JSONNode {
        guard let n = try field(key) else {
            throw TokenizerError.invalidField(file: file, jsonPath: path + "." + key, reason: "missing required field")
        }
        return n
    }

    func string() throws -> String {
        guard let s = value as? String else { throw fail("expected a string, found \(JSONNode.kind(value))") }
        return s
    }

    func int() throws -> Int {
        if let n = value as? NSNumber, !JSONNode.isBoolean(value) {
            let d = n.doubleValue
            if d == d.rounded() && abs(d) < 9.0e15 { return Int(d) }
        }
        throw fail("expected an integer, found \(JSONNode.kind(value))")
    }

    func bool() throws -> Bool {
        if JSONNode.isBoolean(value), let b = value as? Bool { return b }
        throw fail("expected true or false, found \(JSONNode.kind(value))")
    }

    func array() throws -> [JSONNode] {
        guard let a = value as? [Any] else { throw fail("expected an array, found \(JSONNode.kind(value))") }
        return a.enumerated().map { JSONNode(value: $0.element, path: "\(path)[\($0.offset)]", file: file) }
    }

    /// Whether a `JSONSerialization` value is `true`/`false`. Foundation bridges JSON booleans to NSNumber
    /// (`true as? NSNumber` is 1 and `1 as? Bool` is true), so the boolean class is compared instead.
    static func isBoolean(_ v: Any) -> Bool {
        guard let n = v as? NSNumber else { return false }
        return type(of: n) == booleanClass
    }
    private static let booleanClass: NSNumber.Type = type(of: NSNumber(value: true))

    static func kind(_ v: Any) -> String {
        if isBoolean(v) { return "a boolean" }
        switch v {
        case is NSNull: return "null"
        case is String: return "a string"
        case is [Any]: return "an array"
        case is [String: Any]: return "an object"
        case let n as NSNumber: return "the number \(n)"
        default: return "\(type(of: v))"
        }
    }
}

extension JSONLReader {
    /// Whether a `JSONSerialization` value is a JSON `true`/`false` (Foundation bridges booleans to NSNumber, so
    /// `as? NSNumber` alone cannot tell them from numbers).
    public static func isBoolean(_ v: Any) -> Bool { JSONNode.isBoolean(v) }
}
