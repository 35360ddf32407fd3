import Foundation
import XCTest

/// `trainer chat` in piped multi-line mode, run as a process (the built executable beside the test bundle, or
/// `$SWIFTMIND_TRAINER_BIN`).
final class ChatCommandTests: XCTestCase {
    /// A message too long for the context window is reported and the session goes on: the next message is
    /// answered and the process exits 0 at end of input.
    func testTooLongMessageDoesNotEndPipedSession() throws {
        let input = NSTemporaryDirectory() + "swiftmind-chat-\(UUID().uuidString.prefix(8))"
        try Data(("hi\n" + String(repeating: "word ", count: 300) + "\nhello\n").utf8).write(to: URL(fileURLWithPath: input))
        defer { try? FileManager.default.removeItem(atPath: input) }
        let (status, stdout, stderr) = try runTrainer(
            ["chat", "--model", golden("generate_model"), "--tokenizer", minimindTokenizer(),
             "--context-length", "64", "--max-new-tokens", "4", "--temperature", "0", "--threads", "1"],
            timeout: 120, stdinFile: input)
        XCTAssertEqual(status, 0, stderr)
        XCTAssertTrue(stderr.contains("no room left in the context window"), stderr)
        XCTAssertTrue(stdout.contains("user: hello\nassistant: "), stdout)
        XCTAssertEqual(stdout.components(separatedBy: "assistant: ").count - 1, 3, "all three messages got a turn")
    }
}
