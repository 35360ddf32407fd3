// The token cache of a training run, shared by the ranks: rank 0 builds it once, the others wait without spinning.
import Foundation
import Logging
import Datasets
import Tokenizers
import SwiftMindDistributed

public enum SharedTokenCache {
    /// Opens the `kind` cache of `dataPath` on every rank. Rank 0 reuses it when its key still matches, else builds it
    /// on `threads` threads, logging bytes, MB/s and the ETA every `progressInterval` seconds; meanwhile the other
    /// ranks wait in `idleBarrier` (a sleeping poll, so they leave the cores to the build), then map the same files —
    /// or build their own copy when the directory is not visible to them (another host without a shared filesystem).
    /// Collective: every rank must call it.
    /// A preemption signal (`Preemption`) stops rank 0's build after the chunk in progress (the partial cache is
    /// discarded); after the barrier the ranks agree on it and every rank throws `Preempted` (step 0, nothing to resume).
    /// - Throws: `JSONLError` naming FILE:LINE of a malformed line (rank 0; the job is then aborted), I/O errors,
    ///   `Preempted`.
    public static func load(dataPath: String, kind: TokenCacheKind, tokenizer: Tokenizer, cacheRoot: String, threads: Int,
                            comm: Communicator, logger: Logger, progressInterval: Double = 5) throws -> TokenCache {
        var cache: TokenCache?
        if comm.rank == 0 {
            let t0 = Date()
            var lastReport = Date()
            let name = (dataPath as NSString).lastPathComponent
            struct Interrupted: Error {}
            let opened: (TokenCache, built: Bool)
            // Progress is reported per chunk; one enormous line can take longer than --stall-timeout to parse and
            // encode. While the build consumes CPU it is working: `BuildHeartbeat` restarts the waiting ranks' stall
            // clocks then (a stopped or deadlocked builder uses none, and still trips them).
            let heartbeat = BuildHeartbeat { comm.stallInspector?.noteProgress() }
            defer { heartbeat.stop() }
            do {
                opened = try TokenCache.openOrBuild(dataPath: dataPath, kind: kind, tokenizer: tokenizer, cacheRoot: cacheRoot,
                                                    threads: threads) { p in
                    if Preemption.receivedSignal != 0 { throw Interrupted() }
                    comm.stallInspector?.noteProgress()   // the waiting ranks' stall clocks restart
                    guard Date().timeIntervalSince(lastReport) >= progressInterval else { return }
                    lastReport = Date()
                    let rate = Double(p.bytesRead) / max(p.seconds, 1e-9)
                    let left = p.totalBytes > p.bytesRead ? Double(p.totalBytes - p.bytesRead) / max(rate, 1) : 0
                    logger.info("\(String(format: "tokenizing %@ (%@ cache): %.1f / %.1f MB (%.0f%%), %.1f MB/s, %d samples, ETA %@", name, kind.rawValue, Double(p.bytesRead) / 1e6, Double(p.totalBytes) / 1e6, 100 * Double(p.bytesRead) / Double(max(p.totalBytes, 1)), rate / 1e6, p.samples, formatDuration(left)))")
                }
            } catch is Interrupted {
                logger.warning("token cache build of \(name) stopped by a preemption signal; the partial cache is discarded")
                try comm.idleBarrier()
                _ = try Preemption.agreed(comm)
                throw Preempted(step: 0, checkpoint: nil, signal: Preemption.name(Preemption.receivedSignal))
            }
            let (c, built) = opened
            let dt = Date().timeIntervalSince(t0)
            let what = "\(c.count) samples, \(c.numTokens) tokens (\(c.idBytes == 2 ? "uint16" : "int32") ids)"
            if built {
                logger.info("\(String(format: "token cache built: %@ in %.1fs, %.1f MB/s → %@", what, dt, Double(c.meta.source.size) / 1e6 / max(dt, 1e-9), c.directory))")
            } else {
                logger.info("\(String(format: "token cache reused: %@, opened in %.2fs (%@)", what, dt, c.directory))")
            }
            cache = c
        }
        try comm.idleBarrier()
        if try Preemption.agreed(comm) {   // a signal during the build or the wait: stop before the first step
            let s = Preemption.receivedSignal
            throw Preempted(step: 0, checkpoint: nil, signal: s != 0 ? Preemption.name(s) : nil)
        }
        if let c = cache { return c }
        let key = try TokenCacheKey(kind: kind, tokenizer: tokenizer)
        if let c = try TokenCache.openIfValid(dataPath: dataPath, key: key, cacheRoot: cacheRoot) { return c }
        return try TokenCache.openOrBuild(dataPath: dataPath, kind: kind, tokenizer: tokenizer, cacheRoot: cacheRoot, threads: threads,
                                          progress: { _ in comm.stallInspector?.noteProgress() }).0
    }
}

/// Calls `beat` every `interval` seconds while this process has used at least `minimumCPU` seconds of CPU time
/// (user + system, all threads) since the previous tick; stopped by `stop()`.
final class BuildHeartbeat: @unchecked Sendable {
    private let timer: DispatchSourceTimer
    private var lastCPU: Double

    init(interval: Double = 2, minimumCPU: Double = 0.2, beat: @escaping @Sendable () -> Void) {
        lastCPU = BuildHeartbeat.cpuSeconds()
        timer = DispatchSource.makeTimerSource(queue: DispatchQueue.global(qos: .utility))
        timer.schedule(deadline: .now() + interval, repeating: interval)
        timer.setEventHandler { [weak self] in
            guard let self else { return }
            let now = BuildHeartbeat.cpuSeconds()
            if now - self.lastCPU >= minimumCPU { beat() }
            self.lastCPU = now
        }
        timer.resume()
    }

    func stop() { timer.cancel() }

    static func cpuSeconds() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        func s(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return s(u.ru_utime) + s(u.ru_stime)
    }
}
