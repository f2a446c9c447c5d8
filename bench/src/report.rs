//! What a run found: the per-step summary, the JSON report, the table, and
//! the one-line RESULT.

use std::fmt;

use serde::Serialize;

use crate::args::Load;
use crate::histogram::{Bucket, Histogram};
use crate::stats::Counters;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
    pub frames: u64,
}

impl Latency {
    pub fn of(h: &Histogram) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50: ms(h.percentile(0.50)),
            p90: ms(h.percentile(0.90)),
            p99: ms(h.percentile(0.99)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
            frames: h.count(),
        }
    }
}

/// The relay process, sampled over the measured window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Relay {
    /// The process sampled through `/proc` (same host)...
    pub pid: Option<u32>,
    /// ...or the `/metrics` scraped instead (any host).
    pub metrics_url: Option<String>,
    /// Datagrams dropped on the relay's own sockets in the measured window
    /// (from its metrics only).
    pub udp_drops: Option<u64>,
    /// CPU seconds (user + system) the relay used in the measured window.
    pub cpu_s: f64,
    /// Those seconds over the window's length (1.0 = one core busy).
    pub cores: f64,
    /// CPU seconds per GB (1e9 bytes) of payload delivered to subscribers.
    pub cpu_s_per_gb: Option<f64>,
    pub rss_kb_before: u64,
    pub rss_kb_steady: u64,
    pub rss_kb_max: u64,
    /// (steady RSS - RSS before the run) / subscriber connections.
    pub rss_kb_per_sub: Option<f64>,
}

/// One run at one subscriber count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    pub subscribers: usize,
    pub load: Load,
    pub measured_s: f64,
    pub expected_mbps: f64,
    pub delivered_mbps: f64,
    pub published_mbps: f64,
    pub subscribers_connected: u64,
    /// Subscriber connections open at the end with every track delivering.
    pub subscribers_held: u64,
    pub failed_connections: u64,
    pub lost_groups: u64,
    pub latency_ms: Latency,
    pub latency_histogram: Vec<Bucket>,
    pub relay: Option<Relay>,
    /// CPU seconds the bench itself used in the measured window.
    pub bench_cpu_s: Option<f64>,
    /// UDP datagrams this host dropped for full socket receive buffers in
    /// the measured window (all sockets: relay and bench). QUIC recovers
    /// them by retransmission, which shows up as latency.
    pub udp_rcvbuf_drops: Option<u64>,
    pub counters: Counters,
    pub pass: bool,
    /// Why the step failed, empty when it passed.
    pub failures: Vec<String>,
}

impl Step {
    /// Judge the step: loss, failed connections, subscribers not held, no
    /// delivery, or p99 over `p99_budget_ms` (when given) fail it.
    pub fn judge(&mut self, p99_budget_ms: Option<f64>) {
        let mut f = Vec::new();
        if self.lost_groups > 0 {
            f.push(format!("{} groups lost", self.lost_groups));
        }
        if self.failed_connections > 0 {
            f.push(format!("{} connections failed", self.failed_connections));
        }
        if (self.subscribers_held as usize) < self.subscribers {
            f.push(format!(
                "{} of {} subscribers held",
                self.subscribers_held, self.subscribers
            ));
        }
        if self.subscribers > 0 && self.counters.steady_frames == 0 {
            f.push("nothing delivered in the measured window".into());
        }
        if let Some(budget) = p99_budget_ms {
            if self.latency_ms.p99 > budget {
                f.push(format!(
                    "p99 {:.1} ms over the {budget} ms budget",
                    self.latency_ms.p99
                ));
            }
        }
        self.pass = f.is_empty();
        self.failures = f;
    }

    pub fn result(&self) -> ResultLine {
        ResultLine {
            subscribers: self.subscribers_held as usize,
            delivered_mbps: self.delivered_mbps,
            expected_mbps: self.expected_mbps,
            relay_cpu_s_per_gb: self.relay.as_ref().and_then(|r| r.cpu_s_per_gb),
            p50_ms: self.latency_ms.p50,
            p99_ms: self.latency_ms.p99,
            lost_groups: self.lost_groups,
            failed_connections: self.failed_connections,
            rss_kb_per_sub: self.relay.as_ref().and_then(|r| r.rss_kb_per_sub),
        }
    }
}

/// The machine-readable last line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResultLine {
    pub subscribers: usize,
    pub delivered_mbps: f64,
    pub expected_mbps: f64,
    pub relay_cpu_s_per_gb: Option<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub lost_groups: u64,
    pub failed_connections: u64,
    pub rss_kb_per_sub: Option<f64>,
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "na".into(),
    }
}

impl fmt::Display for ResultLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RESULT subscribers={} delivered_mbps={:.1} expected_mbps={:.1} relay_cpu_s_per_gb={} \
             p50_ms={:.2} p99_ms={:.2} lost_groups={} failed_connections={} rss_kb_per_sub={}",
            self.subscribers,
            self.delivered_mbps,
            self.expected_mbps,
            opt(self.relay_cpu_s_per_gb, 2),
            self.p50_ms,
            self.p99_ms,
            self.lost_groups,
            self.failed_connections,
            opt(self.rss_kb_per_sub, 1),
        )
    }
}

/// The whole report: one step for a plain run, several for a ramp.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub tool: &'static str,
    /// "run" or "ramp".
    pub mode: &'static str,
    pub profile: String,
    pub url: String,
    pub version: String,
    pub threads: usize,
    /// The relay's shard count, when given (`--relay-shards`).
    pub relay_shards: Option<usize>,
    pub p99_budget_ms: Option<f64>,
    /// Ramp: the most subscribers a passing step held (0 if none passed).
    pub highest_held: Option<usize>,
    pub steps: Vec<Step>,
    pub result: ResultLine,
    pub pass: bool,
}

impl Report {
    pub fn new(
        mode: &'static str,
        profile: String,
        url: String,
        version: String,
        threads: usize,
        p99_budget_ms: Option<f64>,
        steps: Vec<Step>,
    ) -> Self {
        let relay_shards = None;
        let best = match mode {
            "ramp" => steps
                .iter()
                .filter(|s| s.pass)
                .max_by_key(|s| s.subscribers)
                .or(steps.first()),
            _ => steps.last(),
        };
        let result = best.map(Step::result).unwrap_or(ResultLine {
            subscribers: 0,
            delivered_mbps: 0.0,
            expected_mbps: 0.0,
            relay_cpu_s_per_gb: None,
            p50_ms: 0.0,
            p99_ms: 0.0,
            lost_groups: 0,
            failed_connections: 0,
            rss_kb_per_sub: None,
        });
        let highest_held = (mode == "ramp").then(|| {
            steps
                .iter()
                .filter(|s| s.pass)
                .map(|s| s.subscribers)
                .max()
                .unwrap_or(0)
        });
        let pass = match mode {
            "ramp" => highest_held.unwrap_or(0) > 0,
            _ => steps.iter().all(|s| s.pass),
        };
        Self {
            tool: "qumo-bench",
            mode,
            profile,
            url,
            version,
            threads,
            relay_shards,
            p99_budget_ms,
            highest_held,
            steps,
            result,
            pass,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The summary table for people.
    pub fn table(&self) -> String {
        let mut s = String::new();
        if let Some(first) = self.steps.first() {
            let l = &first.load;
            s.push_str(&format!(
                "qumo-bench {} profile={} {} ({}{}), {} client threads\n  load: {} publishers x {} broadcasts x {} tracks, \
                 {:.0} fps x {} B frames, {} frames/group ({:.3} Mbit/s per track); {} track(s) per subscriber\n",
                self.mode, self.profile, self.url, self.version,
                self.relay_shards.map(|n| format!(", relay shards {n}")).unwrap_or_default(),
                self.threads,
                l.publishers, l.broadcasts, l.tracks, l.fps, l.frame_size, l.frames_per_group,
                l.track_mbps(), l.tracks_per_subscriber,
            ));
        }
        if self.steps.len() == 1 {
            let st = &self.steps[0];
            s.push_str(&single(st));
        } else {
            s.push_str(&format!(
                "\n{:>7} {:>7} {:>9} {:>9} {:>7} {:>7} {:>8} {:>5} {:>6} {:>9} {:>8} {:>8} {:>7} {:>9}  verdict\n",
                "subs", "held", "Mbit/s", "expected", "p50 ms", "p99 ms", "max ms", "lost",
                "failed", "CPU s/GB", "relay %", "bench %", "kB/sub", "UDP drops",
            ));
            for st in &self.steps {
                let r = st.relay.as_ref();
                s.push_str(&format!(
                    "{:>7} {:>7} {:>9.1} {:>9.1} {:>7.2} {:>7.2} {:>8.1} {:>5} {:>6} {:>9} {:>8} {:>8} {:>7} {:>9}  {}\n",
                    st.subscribers,
                    st.subscribers_held,
                    st.delivered_mbps,
                    st.expected_mbps,
                    st.latency_ms.p50,
                    st.latency_ms.p99,
                    st.latency_ms.max,
                    st.lost_groups,
                    st.failed_connections,
                    opt(r.and_then(|r| r.cpu_s_per_gb), 2),
                    opt(r.map(|r| r.cores * 100.0), 0),
                    opt(st.bench_cpu_s.map(|b| b / st.measured_s.max(1e-9) * 100.0), 0),
                    opt(r.and_then(|r| r.rss_kb_per_sub), 1),
                    st.udp_rcvbuf_drops
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "na".into()),
                    if st.pass { "held".to_string() } else { st.failures.join("; ") },
                ));
            }
            if let Some(h) = self.highest_held {
                s.push_str(&format!(
                    "\nhighest subscriber count held: {h}{}\n",
                    self.p99_budget_ms
                        .map(|b| format!(" (no loss, no failed connection, p99 <= {b} ms)"))
                        .unwrap_or_default()
                ));
            }
        }
        s
    }
}

fn single(st: &Step) -> String {
    let mut s = String::new();
    let c = &st.counters;
    s.push_str(&format!(
        "\n  subscribers   {} held of {} ({} connected, {} failed connections)\n",
        st.subscribers_held, st.subscribers, st.subscribers_connected, st.failed_connections
    ));
    s.push_str(&format!(
        "  delivered     {:.1} Mbit/s = {:.3} Gbit/s of {:.1} expected ({:.1} %), over {:.1} s\n",
        st.delivered_mbps,
        st.delivered_mbps / 1000.0,
        st.expected_mbps,
        if st.expected_mbps > 0.0 {
            st.delivered_mbps / st.expected_mbps * 100.0
        } else {
            0.0
        },
        st.measured_s,
    ));
    s.push_str(&format!(
        "  groups        {} lost, {} reset, {} cut short, {} late, {} skipped when joining; {} complete of {} started\n",
        st.lost_groups,
        c.groups_reset,
        c.groups_incomplete,
        c.late_groups,
        c.groups_skipped_at_start,
        c.groups_complete,
        c.groups_started
    ));
    s.push_str(&format!(
        "  latency       p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} frames)\n",
        st.latency_ms.p50,
        st.latency_ms.p90,
        st.latency_ms.p99,
        st.latency_ms.max,
        st.latency_ms.frames
    ));
    match &st.relay {
        Some(r) => {
            s.push_str(&format!(
                "  relay CPU     {:.2} s ({:.0} % of a core), {} s per delivered GB\n",
                r.cpu_s,
                r.cores * 100.0,
                opt(r.cpu_s_per_gb, 2)
            ));
            s.push_str(&format!(
                "  relay RSS     {} kB (before {} kB, max {} kB), {} kB per subscriber connection\n",
                r.rss_kb_steady,
                r.rss_kb_before,
                r.rss_kb_max,
                opt(r.rss_kb_per_sub, 1)
            ));
        }
        None => s.push_str("  relay         not sampled (no --relay-pid or --relay-metrics)\n"),
    }
    if let Some(d) = st.relay.as_ref().and_then(|r| r.udp_drops) {
        s.push_str(&format!(
            "  relay drops   {d} datagrams dropped on the relay's sockets (its metrics)\n"
        ));
    }
    if let Some(d) = st.udp_rcvbuf_drops {
        s.push_str(&format!(
            "  UDP drops     {d} datagrams dropped for full socket buffers (host-wide)\n"
        ));
    }
    if let Some(b) = st.bench_cpu_s {
        s.push_str(&format!(
            "  bench CPU     {:.2} s ({:.0} % of a core)\n",
            b,
            b / st.measured_s.max(1e-9) * 100.0
        ));
    }
    s.push_str(&format!(
        "  verdict       {}\n",
        if st.pass {
            "pass".to_string()
        } else {
            format!("FAIL: {}", st.failures.join("; "))
        }
    ));
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::args::find_profile;

    pub fn step(subscribers: usize, p99: f64, lost: u64, relay: bool) -> Step {
        let mut h = Histogram::new();
        h.record(1000);
        h.record((p99 * 1000.0) as u64);
        let mut s = Step {
            subscribers,
            load: find_profile("fanout").unwrap().load,
            measured_s: 10.0,
            expected_mbps: subscribers as f64,
            delivered_mbps: subscribers as f64,
            published_mbps: 1.0,
            subscribers_connected: subscribers as u64,
            subscribers_held: subscribers as u64,
            failed_connections: 0,
            lost_groups: lost,
            latency_ms: Latency {
                p50: 1.0,
                p90: p99,
                p99,
                max: p99,
                mean: 1.0,
                frames: 2,
            },
            latency_histogram: h.buckets(),
            relay: relay.then_some(Relay {
                pid: Some(1),
                metrics_url: None,
                udp_drops: None,
                cpu_s: 2.0,
                cores: 0.2,
                cpu_s_per_gb: Some(1.5),
                rss_kb_before: 1000,
                rss_kb_steady: 2000,
                rss_kb_max: 2100,
                rss_kb_per_sub: Some(10.0),
            }),
            bench_cpu_s: Some(1.0),
            udp_rcvbuf_drops: Some(0),
            counters: Counters {
                steady_frames: 100,
                ..Counters::default()
            },
            pass: true,
            failures: vec![],
        };
        s.judge(Some(200.0));
        s
    }

    #[test]
    fn the_result_line_has_exactly_the_documented_keys_in_order() {
        let line = step(100, 3.0, 0, true).result().to_string();
        let keys: Vec<&str> = line
            .split(' ')
            .skip(1)
            .map(|kv| kv.split('=').next().unwrap())
            .collect();
        assert!(line.starts_with("RESULT "));
        assert_eq!(
            keys,
            [
                "subscribers",
                "delivered_mbps",
                "expected_mbps",
                "relay_cpu_s_per_gb",
                "p50_ms",
                "p99_ms",
                "lost_groups",
                "failed_connections",
                "rss_kb_per_sub"
            ]
        );
        assert!(line.contains("relay_cpu_s_per_gb=1.50"), "{line}");
    }

    #[test]
    fn an_unsampled_relay_reads_na_in_the_result_line() {
        let line = step(10, 3.0, 0, false).result().to_string();
        assert!(line.contains("relay_cpu_s_per_gb=na"), "{line}");
        assert!(line.ends_with("rss_kb_per_sub=na"), "{line}");
    }

    #[test]
    fn loss_unheld_subscribers_and_a_blown_budget_fail_a_step() {
        assert!(step(10, 3.0, 0, true).pass);
        let s = step(10, 3.0, 2, true);
        assert!(!s.pass && s.failures[0].contains("2 groups lost"));
        assert!(!step(10, 300.0, 0, true).pass);
        let mut s = step(10, 3.0, 0, true);
        s.subscribers_held = 9;
        s.judge(None);
        assert!(!s.pass);
    }

    #[test]
    fn a_ramp_reports_its_highest_passing_step() {
        let steps = vec![
            step(50, 3.0, 0, true),
            step(100, 3.0, 0, true),
            step(200, 900.0, 0, true),
            step(150, 3.0, 0, true),
        ];
        let r = Report::new(
            "ramp",
            "fanout".into(),
            "u".into(),
            "v".into(),
            2,
            Some(200.0),
            steps,
        );
        assert_eq!(r.highest_held, Some(150));
        assert_eq!(r.result.subscribers, 150);
        assert!(r.pass);
        assert!(r.table().contains("highest subscriber count held: 150"));
    }

    #[test]
    fn the_json_report_has_the_fields_scripts_read() {
        let r = Report::new(
            "run",
            "smoke".into(),
            "u".into(),
            "v".into(),
            2,
            None,
            vec![step(50, 3.0, 0, true)],
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["tool"], "qumo-bench");
        assert_eq!(v["mode"], "run");
        assert_eq!(v["pass"], true);
        assert_eq!(v["result"]["subscribers"], 50);
        let s = &v["steps"][0];
        for key in [
            "subscribers",
            "expected_mbps",
            "delivered_mbps",
            "subscribers_held",
            "failed_connections",
            "lost_groups",
            "latency_ms",
            "latency_histogram",
            "relay",
            "counters",
            "pass",
        ] {
            assert!(!s[key].is_null(), "steps[0].{key}");
        }
        for key in ["p50", "p90", "p99", "max"] {
            assert!(s["latency_ms"][key].is_number(), "latency_ms.{key}");
        }
        assert!(s["relay"]["cpu_s_per_gb"].is_number());
        assert!(s["latency_histogram"][0]["le_us"].is_number());
        assert!(v["highest_held"].is_null());
    }
}
