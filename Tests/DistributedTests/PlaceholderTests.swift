import XCTest
final class DistributedTestsPlaceholder: XCTestCase { func testBuilds() {} }
