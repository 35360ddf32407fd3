// Rank 0's account of a run's steps: a text line and a metrics.jsonl row every --log-interval steps, a progress bar
// between them, the checkpoint lines and the closing `done:` line.
import Foundation
import Logging
import Model

/// Rank 0's report of the steps. Every --log-interval steps (and at the last step) it writes a text line (`pretrain`'s
/// format, or a post-training stage's, see `RunReport`) and a metrics.jsonl row, averaged over the steps since the
/// previous one; the progress bar is redrawn after every step.
final class StepLog {
    let objective: TrainingObjective
    let plan: StepPlan
    let logInterval: Int
    let logger: Logger
    private let metrics: MetricsWriter
    private let bar: ProgressBar
    private let runStart = Date()
    private let startStep: Int

    /// Sums over the steps since the last line.
    private var loss = 0.0, aux = 0.0, extra = 0.0, steps = 0, time = 0.0, tokens = 0.0, wait = 0.0
    /// The objective's own figures, summed over the window.
    private var figures: [Double] = []
    /// Rank 0's tokens per expert since the last line, [layers][E].
    private var experts: [[Int]]

    /// Opens (appends to) `metricsPath`.
    init(objective: TrainingObjective, plan: StepPlan, options: TrainingOptions, metricsPath: String, startStep: Int,
         logger: Logger) throws {
        let config = objective.model.config
        self.objective = objective
        self.plan = plan
        logInterval = options.logInterval
        self.logger = logger
        metrics = try MetricsWriter(path: metricsPath)
        bar = ProgressBar(total: plan.totalSteps)
        self.startStep = startStep
        experts = [[Int]](repeating: [Int](repeating: 0, count: config.nRoutedExperts), count: config.numHiddenLayers)
    }

    /// True when the line and metrics row of step `step` (1-based) are due: every `logInterval` steps and at the last.
    /// Every rank evaluates it (the loop gathers the ranks' step times for the row).
    static func isDue(step: Int, logInterval: Int, totalSteps: Int) -> Bool {
        step % logInterval == 0 || step == totalSteps
    }

    /// After step `at.step` (`r`, which took `dt` seconds): adds it to the window, writes the line and the row when
    /// they are due, and redraws the bar. `rankStepTimes`: every rank's mean step seconds over the window, given
    /// when the row is due.
    func stepDone(_ r: StepResult, at: RunPosition, seconds dt: Double, rankStepTimes: [Double]? = nil) throws {
        let step = at.step, totalSteps = plan.totalSteps
        for (l, row) in r.expertCounts.enumerated() { for (e, c) in row.enumerated() { experts[l][e] += c } }
        aux += r.aux; extra += r.extra
        if figures.count != r.figures.count { figures = r.figures } else { for k in figures.indices { figures[k] += r.figures[k] } }
        loss += r.loss; steps += 1; time += dt; tokens += plan.tokensPerStep; wait += r.commWait

        let elapsed = Date().timeIntervalSince(runStart)
        let eta = elapsed / Double(step - startStep) * Double(totalSteps - step)
        if StepLog.isDue(step: step, logInterval: logInterval, totalSteps: totalSteps) {
            try writeWindow(r, at: at, elapsed: elapsed, eta: eta, rankStepTimes: rankStepTimes)
        }
        bar.draw(step: step, suffix: String(format: "loss %.4f  ETA %@", r.loss, formatDuration(eta)))
    }

    /// The text line and the metrics row of the window ending at `at.step`; then a new window.
    private func writeWindow(_ r: StepResult, at: RunPosition, elapsed: Double, eta: Double, rankStepTimes: [Double]?) throws {
        let step = at.step, totalSteps = plan.totalSteps, epoch = at.epoch
        let loss = r.loss, aux = r.aux, lr = r.lr, gradNorm = r.gradNorm
        let useMoe = objective.model.config.useMoe, extraMetric = objective.extraMetric
        let tps = tokens / max(time, 1e-9)
        let n = Double(steps)
        bar.clear()
        var rec: [String: Any] = ["step": step, "epoch": epoch, "loss": loss, "loss_window_mean": self.loss / n,
                                  "lr": lr, "grad_norm": Double(gradNorm), "tokens_per_s": tps,
                                  "elapsed_s": elapsed, "eta_s": eta, "step_time_s": time / n,
                                  "world_size": plan.world, "global_samples": at.seen,
                                  // Rank 0's seconds in GradientReducer.finish() (after its last backward) over its
                                  // step seconds, summed over the window; 0 with one rank (nothing to reduce).
                                  "comm_unhidden_share": plan.world > 1 ? min(1, max(0, wait / max(time, 1e-9))) : 0.0]
        if let v = rankStepTimes { rec["rank_step_time_s"] = v }
        switch objective.report {
        case .pretrain:
            logger.info("\(String(format: "step %d/%d epoch %d loss %.4f lr %.3e grad_norm %.3f tokens/s %.0f comm_wait %.1f%% ETA %@", step, totalSteps, epoch + 1, loss, lr, gradNorm, tps, 100 * wait / max(time, 1e-9), formatDuration(eta)))")
            rec["comm_wait_s"] = wait / n
            rec["unhidden_comm_fraction"] = wait / max(time, 1e-9)
            if useMoe {
                rec["ce"] = loss - aux; rec["aux_loss"] = aux; rec["aux_loss_window_mean"] = self.aux / n
                rec["tokens_per_expert"] = experts   // rank 0's routing over the window, [layers][E]
                logger.info("\(String(format: "  ce %.4f aux_loss %.4f; rank-0 tokens per expert ", loss - aux, aux))\(formatExpertCounts(experts))")
            }
        case .stage, .named:
            let stage = objective.report.name
            let extraText = extraMetric.map { String(format: " %@ %.4f", $0, extra / n) } ?? ""
            let own = objective.reportFigures(figures)
            let ownText = own.map { String(format: " %@ %.4g", $0.0, $0.1) }.joined()
            logger.info("\(String(format: "%@ step %d/%d epoch %d loss %.4f%@ lr %.3e grad_norm %.3f tokens/s %.0f ETA %@", stage, step, totalSteps, epoch + 1, loss, extraText, lr, gradNorm, tps, formatDuration(eta)))\(ownText)")
            rec["stage"] = stage
            if let x = extraMetric { rec[x] = extra / n }
            for (k, v) in own { rec[k] = v }
            if useMoe { rec["aux_loss"] = aux; logger.info("\(String(format: "  aux_loss %.4f", aux))") }
        }
        try metrics.append(rec)
        experts = experts.map { $0.map { _ in 0 } }
        self.aux = 0; extra = 0; figures = []
        self.loss = 0; steps = 0; time = 0; tokens = 0; wait = 0
    }

    /// The line of a checkpoint just written.
    func checkpointWritten(_ path: String) {
        bar.clear()
        logger.info("checkpoint \(path)")
    }

    /// Ends the bar's line (before OUT/final is written).
    func finishBar() { bar.finish() }

    /// The closing line: steps, final loss, throughput (pretrain: and the communication backward did not hide).
    func done(steps: Int, lastLoss: Double?, tokens: Double, stepSeconds: Double, commWaitSeconds: Double,
              finalDirectory: String) {
        let tps = tokens / max(stepSeconds, 1e-9)
        let commText = objective.report.isPretrain ? String(format: ", unhidden communication %.1f%% of step time", 100 * commWaitSeconds / max(stepSeconds, 1e-9)) : ""
        logger.info("\(String(format: "done: %d steps, final loss %.4f, %.0f tokens/s%@ → %@", steps, lastLoss ?? .nan, tps, commText, finalDirectory))")
    }
}
