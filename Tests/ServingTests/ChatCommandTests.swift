import Foundation
import XCTest

/// `trainer chat` in piped multi-line mode, run as a process (the built executable beside the test bundle, or
/// `$SWIFTMIND_TRAINER_BIN`).
final class ChatCommandTests: XCTestCase {
    /// A message too long for the context window is reported and the session goes on: the next message is
    /// answered and the process exits 0 at end of input.
    func testTooLongMessageDoesNotEndPipedSession() throws {
        let p = Process()
        p.executableURL = try trainerBinary()
        p.arguments = ["chat", "--model", golden("generate_model"), "--tokenizer", minimindTokenizer(),
                       "--context-length", "64", "--max-new-tokens", "4", "--temperature", "0", "--threads", "1"]
        let input = NSTemporaryDirectory() + "swiftmind-chat-\(UUID().uuidString.prefix(8))"
        try Data(("hi\n" + String(repeating: "word ", count: 300) + "\nhello\n").utf8).write(to: URL(fileURLWithPath: input))
        defer { try? FileManager.default.removeItem(atPath: input) }
        p.standardInput = FileHandle(forReadingAtPath: input)
        let out = Pipe(), err = Pipe()
        p.standardOutput = out; p.standardError = err
        try p.run()
        final class Box: @unchecked Sendable { var data = Data() }
        let o = Box(), e = Box()
        let g = DispatchGroup()
        g.enter(); DispatchQueue.global().async { o.data = out.fileHandleForReading.readDataToEndOfFile(); g.leave() }
        g.enter(); DispatchQueue.global().async { e.data = err.fileHandleForReading.readDataToEndOfFile(); g.leave() }
        if g.wait(timeout: .now() + 120) == .timedOut { p.terminate(); XCTFail("trainer chat did not finish") }
        p.waitUntilExit()
        let stdout = String(decoding: o.data, as: UTF8.self), stderr = String(decoding: e.data, as: UTF8.self)
        XCTAssertEqual(p.terminationStatus, 0, stderr)
        XCTAssertTrue(stderr.contains("no room left in the context window"), stderr)
        XCTAssertTrue(stdout.contains("user: hello\nassistant: "), stdout)
        XCTAssertEqual(stdout.components(separatedBy: "assistant: ").count - 1, 3, "all three messages got a turn")
    }
}
