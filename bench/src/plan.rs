//! Who does what when: the schedule and naming every shard works from, and
//! the per-shard state that publishers and subscribers update.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::transport::BenchConn;

use crate::args::Config;
use crate::histogram::Histogram;
use crate::payload::us_since_epoch;
use crate::stats::Counters;
use crate::subscriber::SubConn;

/// Publishers connect this long before the first subscriber.
pub const PUBLISHER_LEAD: Duration = Duration::from_millis(500);

/// One run (one ramp step), shared read-only by every shard.
#[derive(Debug)]
pub struct Plan {
    pub cfg: Config,
    /// Subscriber connections in this run.
    pub subscribers: usize,
    /// Where publishers connect (and subscribers, without `subscriber_addrs`).
    pub addr: SocketAddr,
    /// `cfg.subscribe_urls` resolved: subscriber j connects to entry
    /// `j % len`.
    pub subscriber_addrs: Vec<SocketAddr>,
    pub tls: Arc<rustls::ClientConfig>,
    /// What IETF subscribers (`--protocol ietf-14|ietf-22`) dial with: ALPN
    /// `moq-00` or `moqt-22`.
    pub subscriber_tls: Arc<rustls::ClientConfig>,
    /// Broadcast path prefix, unique to the run.
    pub prefix: String,
    pub t0: Instant,
    /// Subscriber j starts at `subs_from + subs_over * j / subscribers`.
    pub subs_from: Instant,
    pub subs_over: Duration,
    pub steady_start: Instant,
    pub steady_end: Instant,
}

impl Plan {
    /// Lay out a run starting now.
    pub fn new(
        cfg: Config,
        subscribers: usize,
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        prefix: String,
    ) -> Self {
        let t0 = Instant::now();
        let subs_from = t0 + PUBLISHER_LEAD;
        let subs_over = cfg.ramp_time;
        // Every subscriber needs its first group before measuring starts.
        let warmup = cfg
            .warmup
            .max(group_duration(&cfg) + Duration::from_millis(500));
        let steady_start = subs_from + subs_over + warmup;
        let steady_end = steady_start + cfg.duration;
        Self {
            cfg,
            subscribers,
            addr,
            subscriber_addrs: Vec::new(),
            subscriber_tls: tls.clone(),
            tls,
            prefix,
            t0,
            subs_from,
            subs_over,
            steady_start,
            steady_end,
        }
    }

    /// The relay subscriber `j` connects to, and its session path.
    pub fn subscriber_relay(&self, j: usize) -> (SocketAddr, &str) {
        match self.subscriber_addrs.len() {
            0 => (self.addr, &self.cfg.url.path),
            n => (
                self.subscriber_addrs[j % n],
                &self.cfg.subscribe_urls[j % n].path,
            ),
        }
    }

    pub fn broadcast_path(&self, publisher: usize, broadcast: usize) -> String {
        format!("{}/p{publisher}b{broadcast}", self.prefix)
    }

    pub fn track_name(track: usize) -> String {
        format!("t{track}")
    }

    /// The (publisher, broadcast, track) of global track index `i`.
    pub fn track_of(&self, i: usize) -> (usize, usize, usize) {
        let l = &self.cfg.load;
        let t = i % l.tracks;
        let b = (i / l.tracks) % l.broadcasts;
        let p = i / (l.tracks * l.broadcasts) % l.publishers;
        (p, b, t)
    }

    pub fn track_index(&self, p: usize, b: usize, t: usize) -> usize {
        let l = &self.cfg.load;
        (p * l.broadcasts + b) * l.tracks + t
    }

    /// The global track indexes subscriber `j` subscribes to: consecutive
    /// blocks, so subscribers spread evenly over every published track.
    pub fn subscriber_tracks(&self, j: usize) -> Vec<usize> {
        let l = &self.cfg.load;
        let total = l.total_tracks();
        let k = l.tracks_per_subscriber;
        let mut out: Vec<usize> = (0..k).map(|i| (j * k + i) % total).collect();
        out.dedup();
        out.sort_unstable();
        out.dedup();
        out
    }

    pub fn subscriber_start(&self, j: usize) -> Instant {
        if self.subscribers <= 1 {
            return self.subs_from;
        }
        self.subs_from + self.subs_over.mul_f64(j as f64 / self.subscribers as f64)
    }

    pub fn frame_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.cfg.load.fps)
    }

    /// Each track's timeline is offset by a fraction of a frame so that
    /// tracks do not all emit in the same instant.
    pub fn track_epoch(&self, i: usize) -> Instant {
        let interval = self.frame_interval().as_micros().max(1) as u64;
        let phase = (i as u64).wrapping_mul(7919) % interval;
        self.t0 + Duration::from_micros(phase)
    }

    /// When frame `f` of group `seq` of track `i` is due.
    pub fn frame_time(&self, i: usize, seq: u64, f: usize) -> Instant {
        let n = seq as f64 * self.cfg.load.frames_per_group as f64 + f as f64;
        self.track_epoch(i) + Duration::from_secs_f64(n / self.cfg.load.fps)
    }

    /// The first group of track `i` that starts at or after `now`.
    pub fn next_group(&self, i: usize, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.track_epoch(i));
        let g = group_duration(&self.cfg).as_secs_f64();
        (since.as_secs_f64() / g).ceil() as u64
    }

    /// A subscription is delivering if a frame came this recently.
    pub fn stale_after(&self) -> Duration {
        (self.frame_interval() * 3).max(Duration::from_millis(1500))
    }
}

/// How long one group lasts.
pub fn group_duration(cfg: &Config) -> Duration {
    Duration::from_secs_f64(cfg.load.frames_per_group as f64 / cfg.load.fps)
}

/// One client shard's state: its counters and histograms, its connections.
pub struct Shard {
    pub index: usize,
    pub plan: Arc<Plan>,
    pub c: RefCell<Counters>,
    pub interval: RefCell<Histogram>,
    pub steady: RefCell<Histogram>,
    stopping: Cell<bool>,
    pub conns: RefCell<Vec<BenchConn>>,
    pub subs: RefCell<Vec<Rc<SubConn>>>,
    /// The first error of each kind is printed; the rest only counted.
    pub reported: RefCell<Vec<&'static str>>,
}

impl Shard {
    pub fn new(index: usize, plan: Arc<Plan>) -> Self {
        Self {
            index,
            plan,
            c: RefCell::new(Counters::default()),
            interval: RefCell::new(Histogram::new()),
            steady: RefCell::new(Histogram::new()),
            stopping: Cell::new(false),
            conns: RefCell::new(Vec::new()),
            subs: RefCell::new(Vec::new()),
            reported: RefCell::new(Vec::new()),
        }
    }

    pub fn stopping(&self) -> bool {
        self.stopping.get()
    }

    pub fn stop(&self) {
        self.stopping.set(true);
    }

    /// Print the first occurrence of each kind of error.
    pub fn warn_once(&self, kind: &'static str, detail: impl std::fmt::Display) {
        let mut seen = self.reported.borrow_mut();
        if !seen.contains(&kind) {
            seen.push(kind);
            eprintln!("qumo-bench: shard {}: {kind}: {detail}", self.index);
        }
    }

    /// A frame arrived whole at `now`.
    pub fn on_frame(&self, now: Instant, size: u64, sent_us: Option<u64>) {
        let mut c = self.c.borrow_mut();
        c.frames_received += 1;
        c.bytes_received += size;
        let latency = sent_us.map(|s| us_since_epoch(now).saturating_sub(s));
        match latency {
            Some(l) => self.interval.borrow_mut().record(l),
            None => c.unstamped_frames += 1,
        }
        if now >= self.plan.steady_start && now < self.plan.steady_end {
            c.steady_frames += 1;
            c.steady_bytes += size;
            if let Some(l) = latency {
                self.steady.borrow_mut().record(l);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{parse, Command};

    fn plan(args: &[&str]) -> Plan {
        let Ok(Command::Run(cfg)) = parse(args.iter().map(|s| s.to_string())) else {
            panic!("args");
        };
        let tls = crate::tls::client_config(&crate::args::TlsCheck::Disabled, cfg.version).unwrap();
        let subs = cfg.load.subscribers;
        Plan::new(
            *cfg,
            subs,
            "127.0.0.1:1".parse().unwrap(),
            tls,
            "b/r".into(),
        )
    }

    #[test]
    fn track_indexes_and_their_owners_round_trip() {
        let p = plan(&["--publishers", "3", "--broadcasts", "2", "--tracks", "4"]);
        for i in 0..24 {
            let (a, b, t) = p.track_of(i);
            assert_eq!(p.track_index(a, b, t), i);
        }
    }

    #[test]
    fn subscribers_spread_evenly_over_the_tracks() {
        let p = plan(&[
            "--publishers",
            "2",
            "--broadcasts",
            "2",
            "--subscribers",
            "8",
            "--tracks-per-subscriber",
            "2",
        ]);
        let mut per_track = [0; 4];
        for j in 0..8 {
            let tracks = p.subscriber_tracks(j);
            assert_eq!(tracks.len(), 2);
            for t in tracks {
                per_track[t] += 1;
            }
        }
        assert_eq!(per_track, [4; 4]);
    }

    #[test]
    fn subscribers_go_round_robin_over_the_subscribe_urls() {
        let p = plan(&[]);
        assert_eq!(p.subscriber_relay(7), (p.addr, ""));
        let mut p2 = plan(&[
            "--subscribe-urls",
            "moql://127.0.0.1:2,moql://127.0.0.1:3/r",
        ]);
        p2.subscriber_addrs = vec![
            "127.0.0.1:2".parse().unwrap(),
            "127.0.0.1:3".parse().unwrap(),
        ];
        assert_eq!(p2.subscriber_relay(0), ("127.0.0.1:2".parse().unwrap(), ""));
        assert_eq!(
            p2.subscriber_relay(5),
            ("127.0.0.1:3".parse().unwrap(), "r")
        );
        assert_eq!(p2.subscriber_relay(4).0, p2.subscriber_addrs[0]);
    }

    #[test]
    fn a_subscriber_never_asks_for_the_same_track_twice() {
        let p = plan(&["--tracks-per-subscriber", "3"]);
        assert_eq!(p.subscriber_tracks(5), vec![0]);
    }

    #[test]
    fn subscribers_start_across_the_ramp_window_and_measuring_follows_it() {
        let p = plan(&[
            "--subscribers",
            "4",
            "--ramp-time",
            "2",
            "--warmup",
            "3",
            "--duration",
            "5",
        ]);
        assert_eq!(p.subscriber_start(0), p.subs_from);
        assert_eq!(p.subscriber_start(2), p.subs_from + Duration::from_secs(1));
        assert!(p.subscriber_start(3) < p.subs_from + Duration::from_secs(2));
        assert_eq!(p.steady_start, p.subs_from + Duration::from_secs(5));
        assert_eq!(p.steady_end - p.steady_start, Duration::from_secs(5));
    }

    #[test]
    fn the_warmup_covers_at_least_one_group() {
        // hd: 2 s groups; a 0 s warmup still waits for a group.
        let p = plan(&["--profile", "hd", "--warmup", "0", "--ramp-time", "0"]);
        assert!(p.steady_start - p.subs_from >= Duration::from_secs(2));
    }

    #[test]
    fn groups_and_frames_follow_the_track_timeline() {
        let p = plan(&["--fps", "10", "--frames-per-group", "5"]);
        let e = p.track_epoch(0);
        assert_eq!(p.frame_time(0, 0, 0), e);
        assert_eq!(p.frame_time(0, 2, 1), e + Duration::from_millis(1100));
        assert_eq!(p.next_group(0, e), 0);
        assert_eq!(p.next_group(0, e + Duration::from_millis(1)), 1);
        assert_eq!(p.next_group(0, e + Duration::from_millis(1000)), 2);
    }
}
