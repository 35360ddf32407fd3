// Fault handling of a training run: graceful preemption (SIGTERM, SIGINT or SIGUSR1 → a checkpoint at the next step
// boundary, then a distinct exit code) and the stall inspector's start. The step loop calls one hook per step
// boundary (`TrainingLoop.stepBoundary`) and wraps its run in `withFaultHandling`.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import SwiftMindDistributed

/// A run stopped by a preemption signal at a step boundary, every rank at the same step. Thrown by the training loop;
/// the `trainer` commands print `description` (rank 0) and exit with `Preempted.exitCode`.
public struct Preempted: Error, CustomStringConvertible, Sendable {
    /// The exit code of every rank of a preempted run (sysexits' EX_TEMPFAIL: try again later, with `--resume`).
    public static let exitCode: Int32 = 75
    /// Optimizer steps done.
    public let step: Int
    /// The checkpoint to resume from (`OUT/checkpoint-<step>`); nil when no step was done yet.
    public let checkpoint: String?
    /// The signal this rank received ("SIGTERM"), or nil when only another rank received one.
    public let signal: String?

    public var description: String {
        let by = signal.map { " (\($0))" } ?? ""
        guard let checkpoint else { return "preempted\(by) before the first step; nothing to resume: start the run again" }
        return "preempted\(by) at step \(step); resume with --resume (checkpoint \(checkpoint))"
    }
}

/// The preemption signals: the handler only records the signal (a second one exits at once with 128 + signal);
/// the ranks act on it together at the next step boundary.
public enum Preemption {
    /// The signals that request a graceful stop: SIGTERM (Slurm at preemption and at the time limit, mpirun forwarding
    /// it), SIGINT (Ctrl-C) and SIGUSR1 (Slurm's `--signal=USR1@120`; mpirun forwards it to every rank).
    public static let signals: [Int32] = [SIGTERM, SIGINT, SIGUSR1]

    private static let lock = NSLock()
    private static var installs = 0
    private static var previous: [Int32: sigaction] = [:]

    /// Installs the handlers (nested calls are counted; `uninstall` restores the previous handlers after the last).
    /// `announce`: print one line to stderr when the first signal arrives (rank 0 only, so mpirun shows it once).
    public static func install(announce: Bool) {
        lock.lock(); defer { lock.unlock() }
        installs += 1
        guard installs == 1 else { return }
        received.pointee = 0
        announceLine.pointee = announce ? 1 : 0
        for s in signals {
            var sa = sigaction()
            sa.__sigaction_handler.sa_handler = preemptionSignalHandler
            sa.sa_flags = SA_RESTART
            sigemptyset(&sa.sa_mask)
            var old = sigaction()
            sigaction(s, &sa, &old)
            previous[s] = old
        }
    }

    public static func uninstall() {
        lock.lock(); defer { lock.unlock() }
        guard installs > 0 else { return }
        installs -= 1
        guard installs == 0 else { return }
        for (s, old) in previous { var o = old; sigaction(s, &o, nil) }
        previous = [:]
    }

    /// The signal received since `install` (0 = none).
    public static var receivedSignal: Int32 { received.pointee }

    /// Records `signal` as if it had been received (tests; a single-process caller that wants to stop gracefully).
    public static func request(_ signal: Int32 = SIGTERM) { received.pointee = signal }

    static func name(_ s: Int32) -> String {
        switch s {
        case SIGTERM: return "SIGTERM"
        case SIGINT: return "SIGINT"
        case SIGUSR1: return "SIGUSR1"
        default: return "signal \(s)"
        }
    }

    /// Collective: whether any rank received a preemption signal (one all-reduce of a scalar).
    static func agreed(_ comm: Communicator) throws -> Bool {
        let mine = receivedSignal != 0 ? 1.0 : 0.0
        comm.stallInspector?.nameNextWait("the step-boundary all-reduce (preemption flag)")
        return (comm.size > 1 ? try comm.allReduceSum(mine) : mine) > 0
    }
}

// Signal-handler state: plain memory allocated once (touched before any handler is installed), so the handler does
// nothing but loads, stores, write(2) and _exit(2), which are async-signal-safe.
private let received: UnsafeMutablePointer<Int32> = {
    let p = UnsafeMutablePointer<Int32>.allocate(capacity: 1); p.initialize(to: 0); return p
}()
private let announceLine: UnsafeMutablePointer<Int32> = {
    let p = UnsafeMutablePointer<Int32>.allocate(capacity: 1); p.initialize(to: 0); return p
}()
private let announcement: (UnsafeMutablePointer<UInt8>, Int) = {
    let text = Array("SwiftMind: stop signal received: stopping at the next step boundary with a checkpoint (a second signal stops at once)\n".utf8)
    let p = UnsafeMutablePointer<UInt8>.allocate(capacity: text.count)
    p.initialize(from: text, count: text.count)
    return (p, text.count)
}()

private func preemptionSignalHandler(_ signal: Int32) {
    if received.pointee != 0 { _exit(128 + signal) }
    received.pointee = signal
    if announceLine.pointee != 0 { _ = write(2, announcement.0, announcement.1) }
}

extension TrainingLoop {
    /// Runs `body` with the preemption handlers installed and, under MPI with several ranks, the stall inspector
    /// watching every collective (collective: every rank calls it at the same point).
    func withFaultHandling<T>(_ body: () throws -> T) throws -> T {
        _ = (received, announceLine, announcement)   // allocate before a handler can run
        Preemption.install(announce: comm.rank == 0)
        defer { Preemption.uninstall() }
        guard let mpi = comm as? MPICommunicator, mpi.size > 1 else { return try body() }
        let logger = self.logger, timeline = self.timeline
        let inspector = try StallInspector(communicator: mpi,
                                           settings: .init(warning: options.stallWarning, timeout: options.stallTimeout),
                                           warn: { logger.warning("\($0)"); timeline?.stall($0) })
        mpi.stallInspector = inspector
        defer { mpi.stallInspector = nil; inspector.stop() }
        return try body()
    }

    /// The step boundary (`stepsDone` optimizer steps done, the next not started): tells the stall inspector, then the
    /// ranks agree whether any received a preemption signal. If one did, rank 0 writes `checkpoint-<stepsDone>` with
    /// `save` (which also prunes; skipped when it is the newest checkpoint already), every rank waits for it, and `Preempted` is thrown on every
    /// rank. Collective.
    func stepBoundary(_ stepsDone: Int, save: () throws -> String) throws {
        comm.stallInspector?.setStepsDone(stepsDone)
        guard try Preemption.agreed(comm) else { return }
        var checkpoint: String?
        if stepsDone > 0 {
            let name = "\(Checkpoints.prefix)\(stepsDone)"
            checkpoint = (options.outDir as NSString).appendingPathComponent(name)
            if rank == 0 {
                if let last = Checkpoints.list(outDir: options.outDir).last, last.step == stepsDone {
                    checkpoint = last.path
                } else {
                    checkpoint = try save()
                    logger.info("checkpoint \(checkpoint!)")
                }
            }
        }
        try comm.barrier()   // nobody exits before rank 0's checkpoint is complete
        let s = Preemption.receivedSignal
        throw Preempted(step: stepsDone, checkpoint: checkpoint, signal: s != 0 ? Preemption.name(s) : nil)
    }
}
