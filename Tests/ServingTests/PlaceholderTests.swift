import XCTest
@testable import Serving
final class PlaceholderTests: XCTestCase { func testNothing() {} }
