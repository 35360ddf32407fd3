// The one page of the training dashboard, used twice: served live by `trainer dashboard` / `--dashboard-port` (it
// polls /api/runs and /api/metrics every second), and written as OUT/report.html with the rows inline (it opens from
// disk with no server). Same template, same chart-drawing script; Chart.js is inlined in both (ChartJS.swift).
import Foundation

/// Builds the dashboard page (HTML with Chart.js and the drawing script inline).
public enum DashboardPage {
    /// A run as the page shows it: its legend name, its out-dir and its metrics rows (each one JSON object, the
    /// file's own text).
    public struct RunRows {
        public var name: String
        public var path: String
        public var rows: [Data]
        public init(name: String, path: String, rows: [Data]) { self.name = name; self.path = path; self.rows = rows }
    }

    /// The live page: fetches `api/runs` and `api/metrics?run=I&since=N` (relative to the page) every second.
    public static var live: String { page(title: "SwiftMind training dashboard", data: nil) }

    /// The self-contained report: `runs` inline as JSON; no request is made.
    public static func report(runs: [RunRows], generatedAt: Date = Date()) -> String {
        page(title: "SwiftMind training report — " + runs.map(\.name).joined(separator: ", "),
             data: reportJSON(runs: runs, generatedAt: generatedAt))
    }

    /// `{"generated": ISO-8601, "runs": [{"name", "path", "rows": [...]}]}` with every `<` written `\u003c`, so the
    /// text cannot end its `<script>` element early (`<` can only occur inside JSON strings, where the escape means
    /// the same character).
    static func reportJSON(runs: [RunRows], generatedAt: Date) -> String {
        var out = Data("{\"generated\":".utf8)
        out.append(jsonData(ISO8601DateFormatter().string(from: generatedAt), fragment: true))
        out.append(Data(",\"runs\":[".utf8))
        for (i, r) in runs.enumerated() {
            if i > 0 { out.append(0x2C) }
            out.append(Data("{\"name\":".utf8)); out.append(jsonData(r.name, fragment: true))
            out.append(Data(",\"path\":".utf8)); out.append(jsonData(r.path, fragment: true))
            out.append(Data(",\"rows\":[".utf8))
            for (j, row) in r.rows.enumerated() {
                if j > 0 { out.append(0x2C) }
                out.append(row)
            }
            out.append(Data("]}".utf8))
        }
        out.append(Data("]}".utf8))
        return String(decoding: out, as: UTF8.self).replacingOccurrences(of: "<", with: "\\u003c")
    }

    static func jsonData(_ s: String, fragment: Bool) -> Data {
        (try? JSONSerialization.data(withJSONObject: s, options: [.fragmentsAllowed, .withoutEscapingSlashes])) ?? Data("\"\"".utf8)
    }

    static func escapeHTML(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func page(title: String, data: String?) -> String {
        var html = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(escapeHTML(title))</title>
        <style>
        body { font-family: system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #222; }
        header { display: flex; align-items: baseline; gap: 1em; padding: 0.6em 1.2em; background: #fff; border-bottom: 1px solid #ddd; }
        header h1 { font-size: 1.2em; margin: 0; }
        #status { color: #666; font-size: 0.9em; }
        #runs { margin: 0.8em 1.2em; border-collapse: collapse; font-size: 0.9em; background: #fff; }
        #runs td, #runs th { padding: 0.25em 0.8em; border: 1px solid #ddd; text-align: left; }
        #runs .swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.4em; vertical-align: middle; }
        #charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 1em; padding: 0 1.2em 1.2em; }
        .chart { background: #fff; border: 1px solid #ddd; border-radius: 4px; padding: 0.5em 0.8em; }
        .chart h2 { font-size: 1em; margin: 0.2em 0 0.4em; }
        .chart .plot { position: relative; height: 280px; }
        #empty { margin: 1.2em; color: #666; }
        </style>
        <script>
        """
        html += ChartJS.source
        html += """
        </script>
        </head>
        <body>
        <header><h1>\(escapeHTML(title))</h1><span id="status">loading…</span></header>
        <table id="runs"><thead><tr><th>run</th><th>out-dir</th><th>rows</th><th>last step</th><th>last loss</th></tr></thead><tbody></tbody></table>
        <p id="empty">No metrics yet: the charts appear with the first row of metrics.jsonl.</p>
        <main id="charts"></main>

        """
        if let data {
            html += "<script id=\"report-data\" type=\"application/json\">" + data + "</script>\n"
        }
        html += "<script>\n" + drawingScript + "\n</script>\n</body>\n</html>\n"
        return html
    }

    /// The chart-drawing script of both pages. Globals for tests and the console: `swiftmindCharts` (chart id →
    /// Chart.js instance: loss, eval_loss, lr, grad_norm, tokens_per_s, comm_unhidden_share, rank_step_time_s),
    /// `swiftmindDashboard` (`runs`: name, path, rows), and `document.body.dataset.rendered` (renders so far).
    static let drawingScript = #"""
    (function () {
      "use strict";
      // Each chart: the metrics.jsonl field it plots against "step"; drawn only once some row of some run has it.
      const CHARTS = [
        { id: "loss", title: "Loss", field: "loss", y: "loss" },
        { id: "eval_loss", title: "Eval loss", field: "eval_loss", y: "loss" },
        { id: "lr", title: "Learning rate", field: "lr", y: "lr" },
        { id: "grad_norm", title: "Gradient norm (before clipping)", field: "grad_norm", y: "L2 norm" },
        { id: "tokens_per_s", title: "Throughput (tokens/s, all ranks)", field: "tokens_per_s", y: "tokens/s" },
        // The share of step time spent waiting for gradient communication that backward did not hide (0..1);
        // rows written before the field had its name carry it as unhidden_comm_fraction.
        { id: "comm_unhidden_share", title: "Unhidden communication (share of step time)", field: "comm_unhidden_share",
          fallback: "unhidden_comm_fraction", y: "share", min: 0, max: 1 },
        { id: "rank_step_time_s", title: "Step time per rank (s)", field: "rank_step_time_s", y: "seconds", perRank: true },
      ];
      const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
      const DASHES = [[], [6, 3], [2, 2], [10, 3, 2, 3], [4, 4], [1, 3]];
      const state = { runs: [], charts: {} };
      window.swiftmindDashboard = state;
      window.swiftmindCharts = state.charts;
      const isNum = (v) => typeof v === "number" && isFinite(v);

      function valueOf(row, spec) {
        let v = row[spec.field];
        if ((v === undefined || v === null) && spec.fallback) v = row[spec.fallback];
        return v;
      }

      function datasetsFor(spec) {
        const sets = [];
        state.runs.forEach((run, i) => {
          const color = COLORS[i % COLORS.length];
          const rows = run.rows.filter((r) => isNum(r.step));
          if (spec.perRank) {
            let ranks = 0;
            for (const r of rows) { const v = r[spec.field]; if (Array.isArray(v)) ranks = Math.max(ranks, v.length); }
            for (let k = 0; k < ranks; k++) {
              const data = [];
              for (const r of rows) { const v = r[spec.field]; if (Array.isArray(v) && isNum(v[k])) data.push({ x: r.step, y: v[k] }); }
              if (data.length) sets.push({ label: run.name + " rank " + k, data, borderColor: color, backgroundColor: color, borderDash: DASHES[k % DASHES.length] });
            }
          } else {
            const data = [];
            for (const r of rows) { const v = valueOf(r, spec); if (isNum(v)) data.push({ x: r.step, y: v }); }
            if (data.length) sets.push({ label: run.name, data, borderColor: color, backgroundColor: color });
          }
        });
        return sets;
      }

      function createChart(spec, sets) {
        const section = document.createElement("section");
        section.className = "chart";
        section.id = "chart-" + spec.id;
        const h = document.createElement("h2");
        h.textContent = spec.title;
        const plot = document.createElement("div");
        plot.className = "plot";
        const canvas = document.createElement("canvas");
        canvas.id = "canvas-" + spec.id;
        plot.appendChild(canvas);
        section.append(h, plot);
        // Keep the order of CHARTS whatever order the fields appear in.
        const container = document.getElementById("charts");
        const after = CHARTS.slice(CHARTS.indexOf(spec) + 1).map((s) => document.getElementById("chart-" + s.id)).find((e) => e);
        container.insertBefore(section, after || null);
        const y = { title: { display: true, text: spec.y } };
        if (spec.min !== undefined) y.min = spec.min;
        if (spec.max !== undefined) y.max = spec.max;
        return new Chart(canvas, {
          type: "line",
          data: { datasets: sets },
          options: {
            animation: false,
            maintainAspectRatio: false,
            normalized: true,
            interaction: { mode: "nearest", intersect: false },
            elements: { line: { borderWidth: 1.5, tension: 0 }, point: { radius: 2 } },
            scales: { x: { type: "linear", title: { display: true, text: "step" }, ticks: { precision: 0 } }, y },
            plugins: { legend: { position: "bottom" } },
          },
        });
      }

      function render() {
        for (const spec of CHARTS) {
          const sets = datasetsFor(spec);
          const chart = state.charts[spec.id];
          if (!chart) {
            if (sets.length) state.charts[spec.id] = createChart(spec, sets);
            continue;
          }
          // Update in place, so legend toggles survive; a run that lost its rows (restart) loses its dataset.
          const byLabel = new Map(chart.data.datasets.map((d) => [d.label, d]));
          chart.data.datasets = sets.map((s) => {
            const d = byLabel.get(s.label);
            if (!d) return s;
            d.data = s.data;
            return d;
          });
          const points = sets.reduce((n, s) => Math.max(n, s.data.length), 0);
          chart.options.elements.point.radius = points > 300 ? 0 : 2;
          chart.update("none");
        }
        renderRuns();
        document.getElementById("empty").style.display = Object.keys(state.charts).length ? "none" : "";
        document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
      }

      function renderRuns() {
        const body = document.querySelector("#runs tbody");
        body.textContent = "";
        state.runs.forEach((run, i) => {
          const tr = document.createElement("tr");
          const last = run.rows.length ? run.rows[run.rows.length - 1] : {};
          const cells = [run.name, run.path, String(run.rows.length), isNum(last.step) ? String(last.step) : "–",
                         isNum(last.loss) ? last.loss.toFixed(4) : "–"];
          cells.forEach((text, c) => {
            const td = document.createElement("td");
            if (c === 0) {
              const sw = document.createElement("span");
              sw.className = "swatch";
              sw.style.background = COLORS[i % COLORS.length];
              td.appendChild(sw);
            }
            td.appendChild(document.createTextNode(text));
            tr.appendChild(td);
          });
          body.appendChild(tr);
        });
      }

      function setStatus(text) { document.getElementById("status").textContent = text; }

      async function getJSON(url) {
        const r = await fetch(url, { cache: "no-store" });
        if (!r.ok) throw new Error(url + ": HTTP " + r.status);
        return r.json();
      }

      async function poll() {
        try {
          const list = await getJSON("api/runs");
          for (const info of list.runs) {
            let run = state.runs[info.id];
            if (!run || run.generation !== info.generation) {
              run = state.runs[info.id] = { name: info.name, path: info.path, rows: [], generation: info.generation };
            }
            while (run.rows.length < info.rows) {
              const m = await getJSON("api/metrics?run=" + info.id + "&since=" + run.rows.length);
              if (m.generation !== run.generation) { run.rows = []; run.generation = m.generation; break; }
              if (!m.rows.length) break;
              run.rows.push(...m.rows);
            }
          }
          render();
          setStatus("live · updated " + new Date().toLocaleTimeString());
        } catch (e) {
          setStatus("cannot reach the dashboard server (" + e.message + "); retrying");
        }
        setTimeout(poll, 1000);
      }

      const inline = document.getElementById("report-data");
      if (inline) {
        const data = JSON.parse(inline.textContent);
        state.runs = data.runs;
        render();
        setStatus("report written " + data.generated);
      } else {
        poll();
      }
    })();
    """#
}
