// Makes sure OpenBLAS runs its fast kernel for this CPU, and exposes its thread count.
// OpenBLAS 0.3.21 (Debian) does not recognise some recent CPUs and falls back to the ~5× slower Prescott kernels; the
// kernel is chosen when the library loads, from OPENBLAS_CORETYPE, so it must be set before the process starts:
// when unset, pick it from /proc/cpuinfo, setenv and re-exec /proc/self/exe with the same argv (once).
import Foundation
import CBLAS
import Model

enum OpenBLASRuntime {
    static let guardVariable = "SWIFTMIND_OPENBLAS_REEXEC"

    /// Kernel name for this CPU from /proc/cpuinfo flags: SkylakeX (avx512f), Haswell (avx2), nil otherwise.
    static func preferredCoreType() -> String? {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return nil }
        guard let flagsLine = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        let flags = Set(flagsLine.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == ":" }).map(String.init))
        if flags.contains("avx512f") { return "SkylakeX" }
        if flags.contains("avx2") { return "Haswell" }
        return nil
    }

    /// Called first thing in main. Re-execs at most once (guarded by an environment variable); an explicit
    /// OPENBLAS_CORETYPE is kept. Logs nothing: main calls `logStartup()` once a command is about to run (not for
    /// `--help` or a command-line error).
    static func ensureFastKernel() {
        if getenv("OPENBLAS_CORETYPE") == nil, getenv(guardVariable) == nil, let core = preferredCoreType() {
            setenv("OPENBLAS_CORETYPE", core, 1)
            setenv(guardVariable, "1", 1)
            execv("/proc/self/exe", CommandLine.unsafeArgv)
            // execv only returns on failure: keep running with whatever kernel was loaded.
            FileHandle.standardError.write("[openblas] re-exec with OPENBLAS_CORETYPE=\(core) failed (errno \(errno))\n".data(using: .utf8)!)
        }
    }

    static var coreName: String { String(cString: openblas_get_corename()) }
    static var threads: Int { Int(openblas_get_num_threads()) }

    static func logStartup() {
        FileHandle.standardError.write("[openblas] core \(coreName), \(threads) threads\n".data(using: .utf8)!)
    }

    /// Largest `--threads` the commands accept (OpenBLAS caps the count at its build's MAX_CPU_NUMBER anyway).
    static let maxThreads = ComputeThreads.maxCount

    /// `--threads N` (N > 0) → `ComputeThreads.set(N)` (the one thread setter), logged when `log`.
    static func setThreads(_ n: Int?, log: Bool = true) {
        guard let n, n > 0 else { return }
        ComputeThreads.set(n)
        if log { FileHandle.standardError.write("[openblas] threads set to \(threads)\n".data(using: .utf8)!) }
    }
}
