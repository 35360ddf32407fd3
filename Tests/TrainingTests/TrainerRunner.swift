import XCTest
import Foundation
import Model
import TestSupport

/// `Tests/Fixtures/golden/<p>` (see `Fixtures` in Tests/TestSupport).
func golden(_ p: String) -> String { Fixtures.golden(p) }

/// Runs the built `trainer` executable (alone or under `mpirun -np N`) for the end-to-end training tests.
enum TrainerRunner {
    struct Run { let status: Int32; let stdout: String; let stderr: String; let timedOut: Bool }

    /// `Tests/Fixtures/corpus/pretrain.jsonl`.
    static var corpus: String { Fixtures.corpus("pretrain.jsonl") }
    /// `Tests/Fixtures/tokenizers/minimind`.
    static var tokenizer: String { Fixtures.miniMindTokenizer }

    /// Writes the first `documents` lines of the corpus to `path` (400 documents: enough for 20 steps of 8 samples).
    static func writeCorpusHead(_ documents: Int = 400, to path: String) throws {
        let lines = try String(contentsOfFile: corpus, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        try (lines.prefix(documents).joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    static var mpirun: URL? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
            let u = URL(fileURLWithPath: String(dir)).appendingPathComponent("mpirun")
            if FileManager.default.isExecutableFile(atPath: u.path) { return u }
        }
        return nil
    }

    /// `trainer` in the build products directory (beside the test bundle), or `$SWIFTMIND_TRAINER_BIN`.
    static var trainer: URL? {
        if let p = ProcessInfo.processInfo.environment["SWIFTMIND_TRAINER_BIN"] { return URL(fileURLWithPath: p) }
        var candidates: [URL] = []
        for b in Bundle.allBundles + [Bundle.main] { candidates.append(b.bundleURL.deletingLastPathComponent()) }
        candidates.append(URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent())
        for dir in candidates {
            var d = dir
            for _ in 0 ..< 4 {
                let u = d.appendingPathComponent("trainer")
                if FileManager.default.isExecutableFile(atPath: u.path) { return u }
                d = d.deletingLastPathComponent()
            }
        }
        return nil
    }

    /// Runs `trainer args` (np 1: directly; np > 1: under mpirun with the TCP/shared-memory transports, as the
    /// Distributed tests do). Fails the test when the binary or mpirun is missing.
    /// `stdin` (text) or `stdinData` (bytes), when given, is written to the process's standard input (then closed);
    /// otherwise stdin is inherited.
    /// `whileRunning`, when given, runs on another thread once the process started, with its pid (mpirun's under np > 1).
    /// `environment` entries are added to the process's environment.
    static func run(_ args: [String], np: Int = 1, timeout: Double = 120, secondRankArgs: [String]? = nil,
                    stdin: String? = nil, stdinData: Data? = nil, environment: [String: String] = [:],
                    whileRunning: (@Sendable (Int32) -> Void)? = nil) throws -> Run {
        guard let exe = trainer else {
            XCTFail("trainer not found next to the test bundle; build it with `swift build` (or set SWIFTMIND_TRAINER_BIN)")
            throw XCTSkip("no trainer binary")
        }
        let p = Process()
        var env = ProcessInfo.processInfo.environment
        if getuid() == 0 { env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"; env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1" }
        env["OPENBLAS_NUM_THREADS"] = "1"
        env["SWIFTMIND_NO_PROGRESS"] = "1"
        // `--dtype`'s default is float32 for these runs on every CPU (on one with native bf16 it would be bfloat16,
        // whose rounding turns the fp32 summation-order differences the world-size and resume comparisons allow
        // into bf16-sized ones): tests of bf16 pass --dtype, BF16RunTests checks the native default.
        env["SWIFTMIND_ASSUME_NATIVE_BF16"] = "0"
        env.merge(environment) { $1 }
        if np > 1 {
            guard let m = mpirun else { XCTFail("mpirun not on PATH (install openmpi-bin)"); throw XCTSkip("no mpirun") }
            p.executableURL = m
            let flags = ["--oversubscribe", "--bind-to", "none",
                         "--mca", "btl", "self,vader,tcp", "--mca", "btl_vader_single_copy_mechanism", "none"]
            if let second = secondRankArgs {   // MPMD: rank 0 runs `args`, rank 1 `second`
                p.arguments = flags + ["-np", "1", exe.path] + args + [":", "-np", "1", exe.path] + second
            } else {
                p.arguments = ["-np", "\(np)"] + flags + [exe.path] + args
            }
        } else {
            p.executableURL = exe
            p.arguments = args
        }
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out; p.standardError = err
        if let input = stdinData ?? stdin.map({ Data($0.utf8) }) {   // from a file, so an early exit of the process cannot race a pipe write
            let file = NSTemporaryDirectory() + "swiftmind-stdin-\(UUID().uuidString.prefix(8))"
            try input.write(to: URL(fileURLWithPath: file))
            defer { try? FileManager.default.removeItem(atPath: file) }
            guard let h = FileHandle(forReadingAtPath: file) else { throw CocoaError(.fileReadUnknown) }
            p.standardInput = h
        }
        final class Box: @unchecked Sendable { var data = Data() }
        let o = Box(), e = Box()
        let group = DispatchGroup()
        group.enter(); DispatchQueue.global().async { o.data = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter(); DispatchQueue.global().async { e.data = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let done = DispatchSemaphore(value: 0)
        p.terminationHandler = { _ in done.signal() }
        try p.run()
        if let whileRunning {
            let pid = p.processIdentifier
            group.enter(); DispatchQueue.global().async { whileRunning(pid); group.leave() }
        }
        var timedOut = false
        if done.wait(timeout: .now() + timeout) == .timedOut {
            timedOut = true
            kill(p.processIdentifier, SIGTERM)
            if done.wait(timeout: .now() + 5) == .timedOut { kill(p.processIdentifier, SIGKILL); done.wait() }
        }
        group.wait()
        return Run(status: p.terminationStatus, stdout: String(decoding: o.data, as: UTF8.self),
                   stderr: String(decoding: e.data, as: UTF8.self), timedOut: timedOut)
    }

    /// `(step, loss)` of every line of `OUT/metrics.jsonl`.
    static func losses(outDir: String) throws -> [(step: Int, loss: Double)] {
        let text = try String(contentsOfFile: outDir + "/metrics.jsonl", encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            return ((obj["step"] as! NSNumber).intValue, (obj["loss"] as! NSNumber).doubleValue)
        }
    }

    static func parameters(_ dir: String) throws -> [Float] {
        let m = try MiniMindModel.load(directory: dir)
        return Array(m.params)
    }

    static func tempDir(_ name: String) -> String { Fixtures.tempDir(name) }
}
