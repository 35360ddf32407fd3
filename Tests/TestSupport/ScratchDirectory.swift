// Scratch directories for tests: one fresh directory per test, removed afterwards.
import Foundation
import XCTest

extension Fixtures {
    /// A new empty directory under the system temporary directory, named `swiftmind-<name>-<random>`.
    public static func tempDir(_ name: String) -> String {
        let d = NSTemporaryDirectory() + "swiftmind-\(name)-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }
}

/// A test case with a fresh scratch directory `work` (from `Fixtures.tempDir`), removed after each test.
open class ScratchDirTestCase: XCTestCase {
    public var work = ""

    open override func setUpWithError() throws {
        try super.setUpWithError()
        work = Fixtures.tempDir("test")
        let d = work
        addTeardownBlock { try? FileManager.default.removeItem(atPath: d) }
    }

    /// Writes `content` (UTF-8) to `work/name` and returns the path.
    public func write(_ content: String, _ name: String) throws -> String {
        let p = work + "/" + name
        try content.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }
}
