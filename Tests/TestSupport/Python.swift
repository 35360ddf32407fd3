import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Optional cross-checks against Python libraries (Hugging Face `tokenizers` / `transformers`, `gguf`, …) run
/// `python3` as a child process through here. A test first asks `hasModules(_:)` and skips when the answer is no;
/// whatever the child then does (exit early, crash, print nothing), this process never dies of it: the test gets
/// the child's status and output and fails or skips with a message.
public enum Python {
    /// One finished child: exit status (or the signal number when it was killed), standard output and error.
    public struct Run {
        public let status: Int32
        public let stdout: Data
        public let stderr: String
        /// The standard output as UTF-8 text.
        public var text: String { String(decoding: stdout, as: UTF8.self) }
    }

    /// `python3` found on `PATH`, or nil.
    public static var executable: URL? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let u = URL(fileURLWithPath: String(dir)).appendingPathComponent("python3")
            if FileManager.default.isExecutableFile(atPath: u.path) { return u }
        }
        return nil
    }

    /// True when `python3` exists and imports every module in `modules` (e.g. `["tokenizers"]`).
    ///
    /// Remembered for the life of the test process: only modules no earlier call has imported are tried (importing
    /// torch and transformers costs a child several seconds, and the tests ask for them many times); a set that
    /// failed is not tried again.
    public static func hasModules(_ modules: [String]) -> Bool {
        moduleLock.lock(); defer { moduleLock.unlock() }
        let untried = modules.filter { !importedModules.contains($0) }
        if untried.isEmpty { return true }
        let key = untried.sorted().joined(separator: ",")
        if failedModuleSets.contains(key) { return false }
        guard let r = try? run(["-c", "import " + untried.joined(separator: ", ")]), r.status == 0 else {
            failedModuleSets.insert(key)
            return false
        }
        importedModules.formUnion(untried)
        return true
    }
    private static let moduleLock = NSLock()
    nonisolated(unsafe) private static var importedModules: Set<String> = []
    nonisolated(unsafe) private static var failedModuleSets: Set<String> = []

    /// Runs `python3 arguments`; `input`, when given, is written to the child's standard input, which is then closed.
    ///
    /// Standard output and error are read to the end while the input is written, so no pipe fills up and blocks
    /// either side. SIGPIPE is ignored in this process and the input is written with a throwing write: a child that
    /// exits without reading all of it ends the write with EPIPE, which is not an error here — the child's status
    /// and output say what happened.
    /// - Returns: nil when there is no `python3` on `PATH`.
    /// - Throws: the error of `Process.run()` when the child cannot be started.
    public static func run(_ arguments: [String], input: Data? = nil) throws -> Run? {
        guard let exe = executable else { return nil }
        _ = ignoreSIGPIPE
        let p = Process()
        p.executableURL = exe
        p.arguments = arguments
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let inPipe: Pipe? = input == nil ? nil : Pipe()
        p.standardInput = inPipe ?? FileHandle.nullDevice
        try p.run()

        final class Box: @unchecked Sendable { var data = Data() }
        let o = Box(), e = Box()
        let group = DispatchGroup()
        group.enter(); DispatchQueue.global().async { o.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter(); DispatchQueue.global().async { e.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        if let inPipe, let input {
            let w = inPipe.fileHandleForWriting
            do { try w.write(contentsOf: input) } catch {}   // EPIPE: the child stopped reading; its status tells why
            try? w.close()
        }
        group.wait()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, stdout: o.data, stderr: String(decoding: e.data, as: UTF8.self))
    }

    /// Set once per process: a write to a pipe whose reader is gone returns EPIPE instead of killing the process.
    private static let ignoreSIGPIPE: Void = { _ = signal(SIGPIPE, SIG_IGN) }()
}
