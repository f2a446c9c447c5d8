//! Running the load: one client runtime per step, a reporting loop on the
//! main thread, relay sampling over the measured window, and the ramp.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use qumo_shards::{Runtime, RuntimeConfig, ShardContext};

use crate::args::Config;
use crate::args::Protocol;
use crate::histogram::Histogram;
use crate::ietf_subscriber::run_ietf_subscriber;
use crate::plan::{Plan, Shard};
use crate::procfs;
use crate::publisher::run_publisher;
use crate::report::{Latency, Relay, Report, Step};
use crate::scrape::{self, MetricsUrl, RelayFigures};
use crate::session::CLOSE_DONE;
use crate::stats::{Counters, Final, Report as ShardReport};
use crate::subscriber::run_subscriber;

const TICK: Duration = Duration::from_secs(1);

async fn sleep_until(t: Instant) {
    monoio::time::sleep_until(monoio::time::Instant::from_std(t)).await;
}

/// What every client shard runs: its share of publishers and subscribers,
/// a report each second, and at the end of the measured window a last
/// report and the close of every connection.
async fn shard_main(ctx: ShardContext<()>, plan: Arc<Plan>, tx: mpsc::Sender<ShardReport>) {
    let index = ctx.index();
    let n = ctx.shard_count();
    let shard = Rc::new(Shard::new(index, plan.clone()));
    for p in (0..plan.cfg.load.publishers).filter(|p| p % n == index) {
        monoio::spawn(run_publisher(shard.clone(), ctx.clone(), p));
    }
    for j in (0..plan.subscribers).filter(|j| j % n == index) {
        match plan.cfg.protocol {
            Protocol::Lite => monoio::spawn(run_subscriber(shard.clone(), ctx.clone(), j)),
            Protocol::Ietf14 | Protocol::Ietf22 => {
                monoio::spawn(run_ietf_subscriber(shard.clone(), ctx.clone(), j))
            }
        };
    }
    let report = |fin: Option<Final>| ShardReport {
        shard: index,
        counters: shard.c.borrow().clone(),
        interval: std::mem::take(&mut *shard.interval.borrow_mut()),
        fin,
    };
    let mut next = plan.t0 + TICK;
    while next < plan.steady_end {
        sleep_until(next).await;
        let _ = tx.send(report(None));
        next += TICK;
    }
    sleep_until(plan.steady_end).await;

    // Judge before closing anything: a subscriber is held if it is open and
    // every track delivered recently.
    let now = Instant::now();
    let stale = plan.stale_after();
    let subs = shard.subs.borrow().clone();
    let held = subs.iter().filter(|s| s.held(now, stale)).count() as u64;
    let alive = subs
        .iter()
        .filter(|s| s.conn.close_reason().is_none())
        .count() as u64;
    shard.stop();
    shard.c.borrow_mut().fail_pending_handshakes();
    for conn in shard.conns.borrow().iter() {
        conn.close(CLOSE_DONE, "bench done");
    }
    let fin = Final {
        steady: shard.steady.borrow().clone(),
        held,
        alive,
    };
    let _ = tx.send(report(Some(fin)));
    // Let the closes go out before the runtime is shut down.
    monoio::time::sleep(Duration::from_millis(200)).await;
}

fn threads(cfg: &Config) -> usize {
    match cfg.threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(255),
        n => n,
    }
}

/// Where the relay's figures come from: its `/proc` entry on this host, or
/// its `/metrics` on any host.
#[derive(Debug, Clone)]
enum RelaySource {
    Process(u32),
    Metrics(MetricsUrl),
}

impl RelaySource {
    fn of(cfg: &Config) -> Option<Self> {
        match (&cfg.relay_metrics, cfg.relay_pid) {
            (Some(url), _) => Some(RelaySource::Metrics(url.clone())),
            (None, Some(pid)) => Some(RelaySource::Process(pid)),
            (None, None) => None,
        }
    }

    /// CPU seconds, RSS and (from metrics only) the relay's UDP drops now.
    fn read(&self) -> RelayFigures {
        match self {
            RelaySource::Process(pid) => RelayFigures {
                cpu_seconds: procfs::cpu_seconds(*pid),
                rss_kb: procfs::rss_kb(*pid),
                udp_drops: None,
            },
            RelaySource::Metrics(url) => scrape::scrape(url).unwrap_or_else(|e| {
                eprintln!("qumo-bench: relay metrics: {e}");
                RelayFigures::default()
            }),
        }
    }
}

struct RelaySampler {
    source: RelaySource,
    rss_before: u64,
    start: RelayFigures,
    end: RelayFigures,
    rss_steady: u64,
    rss_max: u64,
}

impl RelaySampler {
    /// `baseline`: the relay's RSS before the first step of a ramp, so that
    /// memory the allocator kept from an earlier step is not mistaken for
    /// the idle size.
    fn new(source: RelaySource, baseline: Option<u64>) -> Result<Self, String> {
        let rss = source
            .read()
            .rss_kb
            .ok_or_else(|| format!("cannot read the relay's memory from {source:?}"))?;
        Ok(Self {
            source,
            rss_before: baseline.unwrap_or(rss),
            start: RelayFigures::default(),
            end: RelayFigures::default(),
            rss_steady: rss,
            rss_max: rss,
        })
    }

    /// Everything now; RSS also feeds the steady and peak figures.
    fn sample(&mut self) -> RelayFigures {
        let figures = self.source.read();
        if let Some(rss) = figures.rss_kb {
            self.rss_max = self.rss_max.max(rss);
            self.rss_steady = rss;
        }
        figures
    }
}

/// Run the load once with `subscribers` subscriber connections.
pub fn run_once(
    cfg: &Config,
    subscribers: usize,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    prefix: String,
    relay_baseline_kb: Option<u64>,
) -> Result<Step, String> {
    let n = threads(cfg);
    let mut relay = RelaySource::of(cfg)
        .map(|source| RelaySampler::new(source, relay_baseline_kb))
        .transpose()?;
    let mut plan = Plan::new(cfg.clone(), subscribers, addr, tls, prefix);
    if let Some(alpn) = cfg.protocol.ietf_alpn() {
        plan.subscriber_tls = crate::tls::client_config_alpn(&cfg.tls, alpn.as_bytes())?;
    }
    plan.subscriber_addrs = cfg
        .subscribe_urls
        .iter()
        .map(|url| url.resolve())
        .collect::<Result<_, _>>()?;
    let plan = Arc::new(plan);
    let listen: SocketAddr = match addr {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("address"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("address"),
    };
    let mut rc = RuntimeConfig::new(listen, n);
    rc.shutdown_timeout = Duration::from_secs(1);
    let (tx, rx) = mpsc::channel();
    let shard_plan = plan.clone();
    let runtime = Runtime::<()>::start(rc, move |ctx| {
        shard_main(ctx, shard_plan.clone(), tx.clone())
    })
    .map_err(|e| format!("client runtime: {e}"))?;

    let progress = cfg.progress && std::io::stderr().is_terminal();
    let mut latest = vec![Counters::default(); n];
    let mut finals: Vec<Option<Final>> = vec![None; n];
    let mut interval = Histogram::new();
    let mut bench_cpu = (None, None);
    let mut udp_drops = (None, None);
    let mut next_tick = Instant::now() + TICK;
    let mut prev_bytes = 0;
    let hard_deadline = plan.steady_end + Duration::from_secs(15);
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(r) => {
                interval.merge(&r.interval);
                latest[r.shard] = r.counters;
                if r.fin.is_some() {
                    finals[r.shard] = r.fin;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if bench_cpu.0.is_none() && now >= plan.steady_start {
            bench_cpu.0 = procfs::own_cpu_seconds();
            udp_drops.0 = procfs::udp_rcvbuf_errors();
            if let Some(r) = relay.as_mut() {
                r.start = r.sample();
            }
        }
        if bench_cpu.1.is_none() && now >= plan.steady_end {
            bench_cpu.1 = procfs::own_cpu_seconds();
            udp_drops.1 = procfs::udp_rcvbuf_errors();
            if let Some(r) = relay.as_mut() {
                r.end = r.sample();
            }
        }
        if now >= next_tick {
            next_tick += TICK;
            if now >= plan.steady_start && now < plan.steady_end {
                if let Some(r) = relay.as_mut() {
                    r.sample();
                }
            }
            let mut total = Counters::default();
            latest.iter().for_each(|c| total.add(c));
            if progress {
                let phase = if now < plan.subs_from + plan.subs_over {
                    "ramp"
                } else if now < plan.steady_start {
                    "warmup"
                } else {
                    "measure"
                };
                let mbps = (total.bytes_received - prev_bytes) as f64 * 8.0 / 1e6;
                eprint!(
                    "\r\x1b[K{:>5.1}s {phase:<7} subs {}/{} conn | {:.1} Mbit/s | p50 {:.2} p99 {:.2} ms | lost {} | failed {}",
                    now.saturating_duration_since(plan.t0).as_secs_f64(),
                    total.sub_connected,
                    subscribers,
                    mbps,
                    interval.percentile(0.5) as f64 / 1000.0,
                    interval.percentile(0.99) as f64 / 1000.0,
                    total.lost_groups,
                    total.failed_connections(),
                );
                let _ = std::io::stderr().flush();
            }
            prev_bytes = total.bytes_received;
            interval.clear();
        }
        if finals.iter().all(Option::is_some) || now > hard_deadline {
            break;
        }
    }
    if progress {
        eprintln!();
    }
    runtime.shutdown_handle().shutdown();
    runtime.wait();

    let missing = finals.iter().filter(|f| f.is_none()).count();
    if missing > 0 {
        eprintln!("qumo-bench: {missing} client shard(s) sent no final report");
    }
    let mut total = Counters::default();
    latest.iter().for_each(|c| total.add(c));
    let mut steady = Histogram::new();
    let (mut held, mut _alive) = (0, 0);
    for f in finals.iter().flatten() {
        steady.merge(&f.steady);
        held += f.held;
        _alive += f.alive;
    }
    let measured_s = cfg.duration.as_secs_f64();
    let delivered_mbps = total.steady_bytes as f64 * 8.0 / measured_s / 1e6;
    let run_s = plan
        .steady_end
        .saturating_duration_since(plan.t0)
        .as_secs_f64();
    let relay = relay.map(|r| {
        let cpu_s = match (r.start.cpu_seconds, r.end.cpu_seconds) {
            (Some(a), Some(b)) => b - a,
            _ => f64::NAN,
        };
        let (pid, metrics_url) = match &r.source {
            RelaySource::Process(pid) => (Some(*pid), None),
            RelaySource::Metrics(url) => {
                (None, Some(format!("http://{}{}", url.authority, url.path)))
            }
        };
        Relay {
            pid,
            metrics_url,
            udp_drops: match (r.start.udp_drops, r.end.udp_drops) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            },
            cpu_s,
            cores: cpu_s / measured_s,
            cpu_s_per_gb: (total.steady_bytes > 0 && cpu_s.is_finite())
                .then(|| cpu_s / (total.steady_bytes as f64 / 1e9)),
            rss_kb_before: r.rss_before,
            rss_kb_steady: r.rss_steady,
            rss_kb_max: r.rss_max,
            rss_kb_per_sub: (total.sub_connected > 0)
                .then(|| (r.rss_steady as f64 - r.rss_before as f64) / total.sub_connected as f64),
        }
    });
    let mut step = Step {
        subscribers,
        load: {
            let mut l = cfg.load.clone();
            l.subscribers = subscribers;
            l
        },
        measured_s,
        expected_mbps: {
            let mut l = cfg.load.clone();
            l.subscribers = subscribers;
            l.expected_mbps()
        },
        delivered_mbps,
        published_mbps: total.bytes_sent as f64 * 8.0 / run_s.max(1e-9) / 1e6,
        subscribers_connected: total.sub_connected,
        subscribers_held: held,
        failed_connections: total.failed_connections(),
        lost_groups: total.lost_groups,
        latency_ms: Latency::of(&steady),
        latency_histogram: steady.buckets(),
        relay,
        bench_cpu_s: match bench_cpu {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
        udp_rcvbuf_drops: match udp_drops {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
        counters: total,
        pass: false,
        failures: Vec::new(),
    };
    step.judge(cfg.ramp.as_ref().map(|r| r.p99_budget_ms));
    Ok(step)
}

/// The next subscriber count of a ramp, or `None` to stop: double while
/// every step passes, then bisect between the best pass and the first fail.
pub fn next_ramp_count(
    current: usize,
    best_pass: Option<usize>,
    first_fail: Option<usize>,
    max: usize,
) -> Option<usize> {
    match first_fail {
        None => {
            let next = (current * 2).min(max);
            (next > current).then_some(next)
        }
        Some(fail) => {
            let lo = best_pass.unwrap_or(0);
            let gap = fail.saturating_sub(lo);
            // Close enough: within 10 % of the passing count (or 1).
            if gap <= (lo / 10).max(1) {
                return None;
            }
            let mid = lo + gap / 2;
            (mid > 0 && mid != current).then_some(mid)
        }
    }
}

/// Run the whole command: one step, or a ramp of them.
pub fn run(cfg: &Config) -> Result<Report, String> {
    let addr = cfg.url.resolve()?;
    let tls = crate::tls::client_config(&cfg.tls, cfg.version)?;
    let base = cfg.prefix.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        format!("qumo-bench/{}-{secs}", std::process::id())
    });
    let mut steps = Vec::new();
    let baseline = RelaySource::of(cfg).and_then(|source| source.read().rss_kb);
    match &cfg.ramp {
        None => steps.push(run_once(
            cfg,
            cfg.load.subscribers,
            addr,
            tls,
            base,
            baseline,
        )?),
        Some(ramp) => {
            let mut s = cfg.load.subscribers;
            let (mut best, mut fail) = (None::<usize>, None::<usize>);
            for i in 0..ramp.max_steps {
                let mut step_cfg = cfg.clone();
                step_cfg.load.subscribers = s;
                // Connect at most ~250 new subscribers a second.
                step_cfg.ramp_time = cfg
                    .ramp_time
                    .max(Duration::from_secs_f64(s as f64 / 250.0))
                    .min(Duration::from_secs(60));
                eprintln!(
                    "qumo-bench: ramp step {}: {s} subscribers ({:.0} Mbit/s expected)",
                    i + 1,
                    step_cfg.load.expected_mbps()
                );
                let step = run_once(
                    &step_cfg,
                    s,
                    addr,
                    tls.clone(),
                    format!("{base}/s{i}"),
                    baseline,
                )?;
                eprintln!(
                    "qumo-bench: ramp step {}: {}",
                    i + 1,
                    if step.pass {
                        format!(
                            "held ({:.1} Mbit/s, p99 {:.2} ms)",
                            step.delivered_mbps, step.latency_ms.p99
                        )
                    } else {
                        step.failures.join("; ")
                    }
                );
                if step.pass {
                    best = best.max(Some(s));
                } else {
                    fail = Some(fail.map_or(s, |f| f.min(s)));
                }
                steps.push(step);
                match next_ramp_count(s, best, fail, ramp.max_subscribers) {
                    Some(next) => s = next,
                    None => break,
                }
                // Let the relay drop the last step's sessions.
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
    let mut report = Report::new(
        if cfg.ramp.is_some() { "ramp" } else { "run" },
        cfg.profile.clone(),
        cfg.url.dialled(cfg.transport),
        match cfg.protocol.ietf_alpn() {
            None => cfg.version.alpn().to_string(),
            Some(alpn) => format!("{} publishers, {alpn} subscribers", cfg.version.alpn()),
        },
        threads(cfg),
        cfg.ramp.as_ref().map(|r| r.p99_budget_ms),
        steps,
    );
    report.relay_shards = cfg.relay_shards;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ramp_doubles_until_the_first_failure() {
        assert_eq!(next_ramp_count(50, Some(50), None, 10_000), Some(100));
        assert_eq!(
            next_ramp_count(8_000, Some(8_000), None, 10_000),
            Some(10_000)
        );
        assert_eq!(next_ramp_count(10_000, Some(10_000), None, 10_000), None);
    }

    #[test]
    fn after_a_failure_the_ramp_bisects_and_stops_within_ten_percent() {
        assert_eq!(
            next_ramp_count(800, Some(400), Some(800), 10_000),
            Some(600)
        );
        assert_eq!(
            next_ramp_count(600, Some(600), Some(800), 10_000),
            Some(700)
        );
        assert_eq!(next_ramp_count(700, Some(700), Some(750), 10_000), None);
    }

    #[test]
    fn a_ramp_whose_first_step_fails_walks_down() {
        assert_eq!(next_ramp_count(100, None, Some(100), 10_000), Some(50));
        assert_eq!(next_ramp_count(1, None, Some(1), 10_000), None);
    }
}
