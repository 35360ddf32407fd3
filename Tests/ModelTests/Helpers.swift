import Foundation
import XCTest
@testable import Model
import TestSupport

/// `Tests/Fixtures/golden/<p>` (see `Fixtures` in Tests/TestSupport).
func golden(_ p: String) -> String { Fixtures.golden(p) }

/// max |a − b|.
func maxAbsDiff(_ a: UnsafeBufferPointer<Float>, _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    var m: Float = 0
    for i in 0..<a.count { m = max(m, abs(a[i] - b[i])) }
    return m
}
func maxAbs(_ a: [Float]) -> Float { a.reduce(0) { max($0, abs($1)) } }
