//! An SVG of a report's steps: latency (p50, p99) and relay CPU per
//! delivered GB against subscribers. Written by hand so that no plotting
//! library is needed anywhere.

use serde_json::Value;

struct Point {
    subs: f64,
    p50: f64,
    p99: f64,
    cpu: Option<f64>,
    relay_cores: Option<f64>,
    bench_cores: Option<f64>,
    pass: bool,
}

fn points(report: &Value) -> Result<Vec<Point>, String> {
    let steps = report["steps"]
        .as_array()
        .ok_or("the report has no \"steps\" list")?;
    let mut out: Vec<Point> = steps
        .iter()
        .filter_map(|s| {
            Some(Point {
                subs: s["subscribers"].as_f64()?,
                p50: s["latency_ms"]["p50"].as_f64()?,
                p99: s["latency_ms"]["p99"].as_f64()?,
                cpu: s["relay"]["cpu_s_per_gb"].as_f64(),
                relay_cores: s["relay"]["cores"].as_f64(),
                bench_cores: s["bench_cpu_s"]
                    .as_f64()
                    .zip(s["measured_s"].as_f64())
                    .map(|(c, m)| c / m.max(1e-9)),
                pass: s["pass"].as_bool().unwrap_or(true),
            })
        })
        .collect();
    if out.is_empty() {
        return Err("the report has no usable steps".into());
    }
    out.sort_by(|a, b| a.subs.total_cmp(&b.subs));
    Ok(out)
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const W: f64 = 760.0;
const PANEL_H: f64 = 240.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;

struct Panel<'a> {
    top: f64,
    title: &'a str,
    y_label: &'a str,
    x_max: f64,
    y_max: f64,
    /// Log scale from `y_min` (a power of ten) to `y_max`.
    log_from: Option<f64>,
}

impl Panel<'_> {
    fn x(&self, v: f64) -> f64 {
        LEFT + v / self.x_max * (W - LEFT - RIGHT)
    }
    fn y(&self, v: f64) -> f64 {
        let frac = match self.log_from {
            Some(lo) => (v.max(lo).log10() - lo.log10()) / (self.y_max.log10() - lo.log10()),
            None => v / self.y_max,
        };
        self.top + 30.0 + (1.0 - frac) * (PANEL_H - 70.0)
    }

    fn y_bottom(&self) -> f64 {
        self.log_from.unwrap_or(0.0)
    }

    fn y_ticks(&self) -> Vec<f64> {
        match self.log_from {
            Some(lo) => {
                let mut t = vec![lo];
                while *t.last().unwrap_or(&lo) * 10.0 <= self.y_max * 1.0001 {
                    t.push(t[t.len() - 1] * 10.0);
                }
                t
            }
            None => (0..=4).map(|i| self.y_max * i as f64 / 4.0).collect(),
        }
    }

    /// A dashed horizontal line at `v`, labelled.
    fn limit(&self, out: &mut String, v: f64, label: &str) {
        let y = self.y(v.min(self.y_max));
        out.push_str(&format!(
            "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#d00\" stroke-dasharray=\"6,4\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" fill=\"#d00\">{}</text>\n",
            self.x(0.0),
            self.x(self.x_max),
            self.x(0.0) + 4.0,
            y - 4.0,
            esc(label)
        ));
    }

    fn frame(&self, out: &mut String) {
        let (x0, x1) = (self.x(0.0), self.x(self.x_max));
        let (y0, y1) = (self.y(self.y_bottom()), self.y(self.y_max));
        out.push_str(&format!(
            "<text x=\"{LEFT}\" y=\"{:.1}\" font-size=\"14\" font-weight=\"bold\">{}</text>\n",
            self.top + 18.0,
            esc(self.title)
        ));
        for i in 0..=4 {
            let fx = self.x_max * i as f64 / 4.0;
            let gx = self.x(fx);
            out.push_str(&format!(
                "<line x1=\"{gx:.1}\" y1=\"{y0:.1}\" x2=\"{gx:.1}\" y2=\"{y1:.1}\" stroke=\"#ddd\"/>\n\
                 <text x=\"{gx:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\n",
                y0 + 14.0,
                fmt_tick(fx),
            ));
        }
        for fy in self.y_ticks() {
            let gy = self.y(fy);
            out.push_str(&format!(
                "<line x1=\"{x0:.1}\" y1=\"{gy:.1}\" x2=\"{x1:.1}\" y2=\"{gy:.1}\" stroke=\"#ddd\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>\n",
                x0 - 6.0,
                gy + 4.0,
                fmt_tick(fy)
            ));
        }
        out.push_str(&format!(
            "<rect x=\"{x0:.1}\" y=\"{y1:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" stroke=\"#444\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\">subscribers</text>\n\
             <text x=\"16\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 16 {:.1})\">{}</text>\n",
            x1 - x0,
            y0 - y1,
            (x0 + x1) / 2.0,
            y0 + 30.0,
            (y0 + y1) / 2.0,
            (y0 + y1) / 2.0,
            esc(self.y_label)
        ));
    }

    fn series(
        &self,
        out: &mut String,
        pts: &[(f64, f64, bool)],
        color: &str,
        label: &str,
        slot: usize,
    ) {
        if pts.is_empty() {
            return;
        }
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y, _)| format!("{:.1},{:.1}", self.x(*x), self.y(y.min(self.y_max))))
            .collect();
        out.push_str(&format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>\n",
            path.join(" ")
        ));
        for (x, y, pass) in pts {
            let (cx, cy) = (self.x(*x), self.y(y.min(self.y_max)));
            if *pass {
                out.push_str(&format!(
                    "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"3.5\" fill=\"{color}\"/>\n"
                ));
            } else {
                out.push_str(&format!(
                    "<path d=\"M{:.1},{:.1}l8,8m0,-8l-8,8\" stroke=\"#d00\" stroke-width=\"2\"/>\n",
                    cx - 4.0,
                    cy - 4.0
                ));
            }
        }
        let lx = W - RIGHT - 225.0 + 75.0 * slot as f64;
        let ly = self.top + 18.0;
        out.push_str(&format!(
            "<line x1=\"{lx:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-width=\"2\"/>\n\
             <text x=\"{:.1}\" y=\"{ly:.1}\" font-size=\"11\">{}</text>\n",
            ly - 4.0,
            lx + 16.0,
            ly - 4.0,
            lx + 20.0,
            esc(label)
        ));
    }
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 || v.abs() >= 10.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The SVG for a report (the JSON `qumo-bench --json` writes).
pub fn svg(report: &Value) -> Result<String, String> {
    let pts = points(report)?;
    let x_max = nice_max(pts.iter().map(|p| p.subs).fold(0.0, f64::max));
    let lat_top = pts.iter().map(|p| p.p99).fold(0.0, f64::max);
    let lat_low = pts
        .iter()
        .map(|p| p.p50)
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    // Latency spans decades once a step fails: log scale then.
    let lat_log = (lat_low.is_finite() && lat_top / lat_low > 50.0)
        .then(|| 10f64.powf(lat_low.log10().floor()));
    let lat_max = match lat_log {
        Some(_) => 10f64.powf(lat_top.log10().ceil()),
        None => nice_max(lat_top),
    };
    let cpu_max = nice_max(pts.iter().filter_map(|p| p.cpu).fold(0.0, f64::max));
    let cores_max = nice_max(
        pts.iter()
            .flat_map(|p| [p.relay_cores, p.bench_cores])
            .flatten()
            .fold(0.0, f64::max)
            * 100.0,
    );
    let title = format!(
        "qumo-bench {} profile {} against {} ({}{})",
        report["mode"].as_str().unwrap_or("run"),
        report["profile"].as_str().unwrap_or("?"),
        report["url"].as_str().unwrap_or("?"),
        report["version"].as_str().unwrap_or("?"),
        report["relay_shards"]
            .as_u64()
            .map(|n| format!(", {n} relay shard{}", if n == 1 { "" } else { "s" }))
            .unwrap_or_default(),
    );
    let h = 40.0 + 3.0 * PANEL_H;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\" font-family=\"sans-serif\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"15\">{}</text>\n",
        esc(&title)
    );
    let lat = Panel {
        top: 40.0,
        title: "publish-to-receive latency",
        y_label: if lat_log.is_some() { "ms (log)" } else { "ms" },
        x_max,
        y_max: lat_max,
        log_from: lat_log,
    };
    lat.frame(&mut out);
    if let Some(budget) = report["p99_budget_ms"].as_f64() {
        lat.limit(&mut out, budget, &format!("p99 budget {budget} ms"));
    }
    let p50: Vec<_> = pts.iter().map(|p| (p.subs, p.p50, p.pass)).collect();
    let p99: Vec<_> = pts.iter().map(|p| (p.subs, p.p99, p.pass)).collect();
    lat.series(&mut out, &p50, "#1f77b4", "p50", 1);
    lat.series(&mut out, &p99, "#ff7f0e", "p99", 2);

    let cpu = Panel {
        top: 40.0 + PANEL_H,
        title: "relay CPU per delivered GB",
        y_label: "CPU s / GB",
        x_max,
        y_max: cpu_max,
        log_from: None,
    };
    cpu.frame(&mut out);
    let cpu_pts: Vec<_> = pts
        .iter()
        .filter_map(|p| Some((p.subs, p.cpu?, p.pass)))
        .collect();
    if cpu_pts.is_empty() {
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\" fill=\"#888\">relay not sampled</text>\n",
            cpu.x(x_max / 2.0),
            cpu.y(cpu_max / 2.0)
        ));
    }
    cpu.series(&mut out, &cpu_pts, "#2ca02c", "relay", 2);

    let busy = Panel {
        top: 40.0 + 2.0 * PANEL_H,
        title: "CPU busy (100 % = one core): is the relay or the bench the limit?",
        y_label: "% of a core",
        x_max,
        y_max: cores_max,
        log_from: None,
    };
    busy.frame(&mut out);
    let relay_pts: Vec<_> = pts
        .iter()
        .filter_map(|p| Some((p.subs, p.relay_cores? * 100.0, p.pass)))
        .collect();
    let bench_pts: Vec<_> = pts
        .iter()
        .filter_map(|p| Some((p.subs, p.bench_cores? * 100.0, p.pass)))
        .collect();
    busy.series(&mut out, &relay_pts, "#2ca02c", "relay", 1);
    busy.series(&mut out, &bench_pts, "#9467bd", "bench", 2);
    out.push_str("</svg>\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::step;
    use crate::report::Report;

    #[test]
    fn axes_round_up_to_one_two_or_five() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(17.0), 20.0);
        assert_eq!(nice_max(100.0), 100.0);
        assert_eq!(nice_max(0.03), 0.05);
    }

    #[test]
    fn a_ramp_report_draws_both_panels_and_marks_the_failed_step() {
        let steps = vec![
            step(50, 3.0, 0, true),
            step(100, 4.0, 0, true),
            step(200, 500.0, 3, true),
        ];
        let r = Report::new(
            "ramp",
            "fanout".into(),
            "moql://x".into(),
            "moq-lite-05".into(),
            2,
            Some(200.0),
            steps,
        );
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        let s = svg(&v).unwrap();
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 5);
        assert!(
            s.contains("ms (log)"),
            "latency spanning decades is drawn on a log scale"
        );
        assert!(s.contains("p99 budget 200 ms"));
        assert!(s.contains("stroke=\"#d00\""), "failed step marked");
        assert!(s.contains("relay CPU per delivered GB"));
    }

    #[test]
    fn a_report_without_steps_is_refused() {
        assert!(svg(&serde_json::json!({"steps": []})).is_err());
        assert!(svg(&serde_json::json!({})).is_err());
    }

    #[test]
    fn text_from_the_report_is_escaped() {
        let steps = vec![step(50, 3.0, 0, false)];
        let r = Report::new(
            "run",
            "<x&y>".into(),
            "u".into(),
            "v".into(),
            1,
            None,
            steps,
        );
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        let s = svg(&v).unwrap();
        assert!(s.contains("&lt;x&amp;y&gt;"));
        assert!(s.contains("relay not sampled"));
    }
}
