import XCTest
import Foundation
@testable import Training

/// The token-cache builder's heartbeat (`BuildHeartbeat`): it beats while the process uses CPU (one enormous line
/// being encoded) and not while it is idle (a stopped or deadlocked builder), so the waiting ranks' stall clocks
/// restart only for a builder that works.
final class BuildHeartbeatTests: XCTestCase {
    func testBeatsWhileBusyAndNotWhileIdle() {
        let beats = Counter()
        let h = BuildHeartbeat(interval: 0.2, minimumCPU: 0.05) { beats.add() }
        let t0 = Date()
        var x = 0.0
        while Date().timeIntervalSince(t0) < 1.0 { x += sin(x + 1) }   // busy: ~1 s of CPU
        XCTAssertNotEqual(x, -1)
        let busy = beats.value
        XCTAssertGreaterThanOrEqual(busy, 2, "beats while busy")
        Thread.sleep(forTimeInterval: 0.5)   // settle the tick that straddles the boundary
        let settled = beats.value
        Thread.sleep(forTimeInterval: 1.0)   // idle
        XCTAssertEqual(beats.value, settled, "no beat while idle")
        h.stop()
    }

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var n = 0
        func add() { lock.lock(); n += 1; lock.unlock() }
        var value: Int { lock.lock(); defer { lock.unlock() }; return n }
    }
}
