//! The command line: profiles, options, the relay URL.
//!
//! Hand-parsed, like `qumo-relay`'s: `--name value` or `--name=value`, with
//! a profile filling every load parameter first and options overriding it.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use qumo::lite::Version;
use serde::Serialize;

/// A named load shape: who publishes what, who subscribes to how much.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Load {
    /// Publisher connections.
    pub publishers: usize,
    /// Broadcasts per publisher.
    pub broadcasts: usize,
    /// Tracks per broadcast.
    pub tracks: usize,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Tracks each subscriber subscribes to.
    pub tracks_per_subscriber: usize,
    /// Frames per second per track.
    pub fps: f64,
    /// Payload bytes per frame (at least 8: the send stamp).
    pub frame_size: usize,
    /// Frames per group; each group is one QUIC stream.
    pub frames_per_group: usize,
}

impl Load {
    /// Payload bit rate of one track, in Mbit/s.
    pub fn track_mbps(&self) -> f64 {
        self.fps * self.frame_size as f64 * 8.0 / 1e6
    }

    /// Payload bit rate every subscriber together should receive, in Mbit/s.
    pub fn expected_mbps(&self) -> f64 {
        self.track_mbps() * (self.subscribers * self.tracks_per_subscriber) as f64
    }

    /// Distinct tracks published.
    pub fn total_tracks(&self) -> usize {
        self.publishers * self.broadcasts * self.tracks
    }
}

/// A preset: a load plus its run timing.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    pub about: &'static str,
    pub load: Load,
    pub ramp_time: Duration,
    pub warmup: Duration,
    pub duration: Duration,
}

fn profile(
    name: &'static str,
    about: &'static str,
    (publishers, broadcasts, subscribers, tracks_per_subscriber): (usize, usize, usize, usize),
    (fps, frame_size, frames_per_group): (f64, usize, usize),
    (ramp, warmup, duration): (u64, u64, u64),
) -> Profile {
    Profile {
        name,
        about,
        load: Load {
            publishers,
            broadcasts,
            tracks: 1,
            subscribers,
            tracks_per_subscriber,
            fps,
            frame_size,
            frames_per_group,
        },
        ramp_time: Duration::from_secs(ramp),
        warmup: Duration::from_secs(warmup),
        duration: Duration::from_secs(duration),
    }
}

/// Every preset, the default first.
pub fn profiles() -> Vec<Profile> {
    vec![
        profile(
            "fanout",
            "1 publisher -> N subscribers of one ~1 Mbit/s track (30 fps x 4200 B, 1 s groups)",
            (1, 1, 100, 1),
            (30.0, 4200, 30),
            (5, 2, 10),
        ),
        profile(
            "audio",
            "10 publishers, 64 kbit/s tracks (50 fps x 160 B, 200 ms groups)",
            (10, 1, 200, 1),
            (50.0, 160, 10),
            (5, 2, 10),
        ),
        profile(
            "sd",
            "4 publishers, ~1 Mbit/s tracks (30 fps x 4000 B, 1 s groups)",
            (4, 1, 100, 1),
            (30.0, 4000, 30),
            (5, 2, 10),
        ),
        profile(
            "hd",
            "2 publishers, ~4 Mbit/s tracks (30 fps x 16000 B, 2 s groups)",
            (2, 1, 50, 1),
            (30.0, 16000, 60),
            (5, 2, 10),
        ),
        profile(
            "many-publishers",
            "100 publishers, 240 kbit/s tracks, one subscriber per track",
            (100, 1, 100, 1),
            (30.0, 1000, 30),
            (5, 2, 10),
        ),
        profile(
            "smoke",
            "CI check, ~10 s: 2x2 broadcasts, 50 subscribers of 2 tracks each; any loss fails",
            (2, 2, 50, 2),
            (30.0, 1000, 15),
            (2, 1, 5),
        ),
    ]
}

pub fn find_profile(name: &str) -> Option<Profile> {
    profiles().into_iter().find(|p| p.name == name)
}

/// Where the relay is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    pub host: String,
    pub port: u16,
    /// The URL path without its leading `/`; sent as the SETUP path on
    /// lite-05+ (the session root).
    pub path: String,
}

impl RelayUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("moql://").ok_or_else(|| {
            format!("{url:?}: only moql:// (moq-lite over raw QUIC) is supported")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i + 1..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6
                .find(']')
                .ok_or_else(|| format!("{url:?}: unclosed [ in host"))?;
            let port = v6[end + 1..].strip_prefix(':');
            (&v6[..end], port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port {p:?}"))?,
            None => 443,
        };
        Ok(Self {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    pub fn resolve(&self) -> Result<SocketAddr, String> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", self.host))
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "moql://[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "moql://{}:{}", self.host, self.port)?;
        }
        if !self.path.is_empty() {
            write!(f, "/{}", self.path)?;
        }
        Ok(())
    }
}

/// How the relay's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsCheck {
    /// Against the system's roots, or these PEM roots.
    Roots(Option<PathBuf>),
    /// The leaf certificate's SHA-256 must be this.
    Fingerprint([u8; 32]),
    /// Anything goes (loopback testing only).
    Disabled,
}

/// `--ramp`: step the subscriber count up until a step fails.
#[derive(Debug, Clone, PartialEq)]
pub struct RampPlan {
    /// A step fails when its p99 latency passes this.
    pub p99_budget_ms: f64,
    /// Never go past this many subscribers.
    pub max_subscribers: usize,
    /// At most this many steps in all.
    pub max_steps: usize,
}

impl Default for RampPlan {
    fn default() -> Self {
        Self {
            p99_budget_ms: 200.0,
            max_subscribers: 20_000,
            max_steps: 10,
        }
    }
}

/// One bench run, fully resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub url: RelayUrl,
    pub server_name: String,
    pub version: Version,
    pub tls: TlsCheck,
    pub profile: String,
    pub load: Load,
    pub ramp_time: Duration,
    pub warmup: Duration,
    pub duration: Duration,
    /// Client shards (threads); 0 = one per core.
    pub threads: usize,
    /// Broadcast path prefix, unique per run unless given.
    pub prefix: Option<String>,
    /// SUBSCRIBE max_latency in ms (0 = the relay's default).
    pub max_latency_ms: u64,
    pub json: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub relay_pid: Option<u32>,
    /// The relay's `/metrics` (admin listener): its CPU, RSS and UDP drops
    /// from there instead of `/proc` (a relay on another host).
    pub relay_metrics: Option<crate::scrape::MetricsUrl>,
    /// The relay's shard count, when the caller knows it (for the report).
    pub relay_shards: Option<usize>,
    pub ramp: Option<RampPlan>,
    /// Fail (exit 1) on any lost group, failed connection or unheld subscriber.
    pub strict: bool,
    pub progress: bool,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run(Box<Config>),
    Plot { input: PathBuf, output: PathBuf },
    Help,
}

pub fn usage() -> String {
    let mut s = String::from(
        "Usage: qumo-bench [OPTIONS]            run a load against a moq-lite relay\n       \
         qumo-bench plot IN.json OUT.svg    draw a report's steps as an SVG\n\
         \n\
         Relay:\n  \
           --url URL                  moql://HOST:PORT[/PATH] (default moql://127.0.0.1:4433)\n  \
           --version 04|05|06         moq-lite version, by ALPN (default 05)\n  \
           --server-name NAME         TLS server name (default: the URL's host)\n  \
           --fingerprint HEX          accept only the certificate with this SHA-256\n  \
           --tls-disable-verify       accept any certificate (loopback testing)\n  \
           --ca-file PEM              trust these roots instead of the system's\n\
         \n\
         Load (a profile sets them all; options override it):\n  \
           --profile NAME             see below (default fanout)\n  \
           --publishers P             publisher connections\n  \
           --broadcasts B             broadcasts per publisher\n  \
           --tracks T                 tracks per broadcast\n  \
           --subscribers S            subscriber connections\n  \
           --tracks-per-subscriber K  tracks each subscriber subscribes to\n  \
           --fps F                    frames per second per track\n  \
           --frame-size BYTES         payload per frame (>= 8)\n  \
           --frames-per-group G       frames per group (one stream per group)\n  \
           --max-latency-ms MS        SUBSCRIBE max latency (0 = relay default)\n  \
           --prefix PATH              broadcast path prefix (default unique per run)\n\
         \n\
         Timing:\n  \
           --ramp-time SECS           start subscribers over this window\n  \
           --warmup SECS              settle before measuring\n  \
           --duration SECS            measured (steady) window\n\
         \n\
         Ramp (step the subscriber count up from --subscribers):\n  \
           --ramp                     double until a step loses a group, fails a\n                             \
                                      connection, drops a subscriber or passes the\n                             \
                                      p99 budget; then bisect; report the highest held\n  \
           --p99-budget-ms MS         (default 200)\n  \
           --ramp-max S               (default 20000)\n\
         \n\
         Output:\n  \
           --json FILE                write the report as JSON\n  \
           --plot FILE                write latency and relay CPU against subscribers (SVG)\n  \
           --relay-pid PID            sample this process's CPU and RSS (same host)\n  \
           --relay-metrics URL        sample the relay's CPU, RSS and UDP drops from its\n                             \
                                      /metrics instead (http://HOST:PORT/metrics; any host)\n  \
           --relay-shards N           the relay's shard count, recorded in the report\n  \
           --strict                   exit 1 on any loss, failed connection or unheld subscriber\n  \
           --threads N                client threads (default: one per core)\n  \
           --quiet                    no progress line\n\
         \n\
         Profiles:\n",
    );
    for p in profiles() {
        s.push_str(&format!("  {:<16} {}\n", p.name, p.about));
    }
    s.push_str(
        "\nThe last line on stdout is machine-readable:\n\
         RESULT subscribers=S delivered_mbps=X expected_mbps=Y relay_cpu_s_per_gb=Z p50_ms=A \
         p99_ms=B lost_groups=L failed_connections=F rss_kb_per_sub=R\n\
         Exit: 0 ok, 1 strict check failed, 2 could not run, 64 bad usage.\n",
    );
    s
}

fn parse_hex32(s: &str) -> Result<[u8; 32], String> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 {
        return Err(format!(
            "--fingerprint wants 64 hex digits (a SHA-256), got {}",
            hex.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("--fingerprint: {s:?} is not hex"))?;
    }
    Ok(out)
}

pub fn parse_version(s: &str) -> Result<Version, String> {
    let digits = s
        .trim_start_matches("moq-lite-")
        .trim_start_matches("lite-")
        .trim_start_matches('0');
    match digits {
        "4" => Ok(Version::Lite04),
        "5" => Ok(Version::Lite05),
        "6" => Ok(Version::Lite06),
        _ => Err(format!("--version {s:?}: qumo-bench speaks 04, 05 and 06")),
    }
}

fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{name} {v:?}: not a valid number"))
}

fn secs(name: &str, v: &str) -> Result<Duration, String> {
    let s: f64 = num(name, v)?;
    if !(0.0..=86_400.0).contains(&s) {
        return Err(format!("{name} {v}: between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

/// Parse the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter().peekable();
    if args.peek().map(String::as_str) == Some("plot") {
        args.next();
        let rest: Vec<String> = args.collect();
        return match rest.as_slice() {
            [input, output] => Ok(Command::Plot {
                input: input.into(),
                output: output.into(),
            }),
            _ => Err("plot wants IN.json OUT.svg".into()),
        };
    }

    // Options are gathered first so a profile named anywhere applies under
    // the options that override it.
    let mut opts: Vec<(String, Option<String>)> = Vec::new();
    const FLAGS: [&str; 5] = [
        "--tls-disable-verify",
        "--ramp",
        "--strict",
        "--quiet",
        "--help",
    ];
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        if !arg.starts_with("--") {
            return Err(format!("unexpected argument {arg:?}"));
        }
        let (name, value) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None if FLAGS.contains(&arg.as_str()) => (arg, None),
            None => {
                let v = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
                (arg, Some(v))
            }
        };
        opts.push((name, value));
    }

    let profile_name = opts
        .iter()
        .rev()
        .find(|(n, _)| n == "--profile")
        .and_then(|(_, v)| v.clone())
        .unwrap_or_else(|| "fanout".into());
    let profile = find_profile(&profile_name).ok_or_else(|| {
        let names: Vec<_> = profiles().iter().map(|p| p.name).collect();
        format!("--profile {profile_name:?}: one of {}", names.join(", "))
    })?;

    let mut url = RelayUrl::parse("moql://127.0.0.1:4433")?;
    let mut server_name = None;
    let mut cfg = Config {
        url: url.clone(),
        server_name: String::new(),
        version: Version::Lite05,
        tls: TlsCheck::Roots(None),
        profile: profile.name.to_string(),
        load: profile.load.clone(),
        ramp_time: profile.ramp_time,
        warmup: profile.warmup,
        duration: profile.duration,
        threads: 0,
        prefix: None,
        max_latency_ms: 0,
        json: None,
        plot: None,
        relay_pid: None,
        relay_metrics: None,
        relay_shards: None,
        ramp: None,
        strict: profile.name == "smoke",
        progress: true,
    };
    let mut ramp = RampPlan::default();
    let mut fingerprint = None;
    let mut disable_verify = false;
    let mut ca_file = None;

    for (name, value) in opts {
        let v = value.as_deref().unwrap_or("");
        let n = name.as_str();
        match n {
            "--profile" => {}
            "--url" => url = RelayUrl::parse(v)?,
            "--version" => cfg.version = parse_version(v)?,
            "--server-name" => server_name = Some(v.to_string()),
            "--fingerprint" => fingerprint = Some(parse_hex32(v)?),
            "--tls-disable-verify" => disable_verify = true,
            "--ca-file" => ca_file = Some(PathBuf::from(v)),
            "--publishers" => cfg.load.publishers = num(n, v)?,
            "--broadcasts" => cfg.load.broadcasts = num(n, v)?,
            "--tracks" => cfg.load.tracks = num(n, v)?,
            "--subscribers" => cfg.load.subscribers = num(n, v)?,
            "--tracks-per-subscriber" => cfg.load.tracks_per_subscriber = num(n, v)?,
            "--fps" => cfg.load.fps = num(n, v)?,
            "--frame-size" => cfg.load.frame_size = num(n, v)?,
            "--frames-per-group" => cfg.load.frames_per_group = num(n, v)?,
            "--max-latency-ms" => cfg.max_latency_ms = num(n, v)?,
            "--prefix" => cfg.prefix = Some(v.trim_matches('/').to_string()),
            "--ramp-time" => cfg.ramp_time = secs(n, v)?,
            "--warmup" => cfg.warmup = secs(n, v)?,
            "--duration" => cfg.duration = secs(n, v)?,
            "--ramp" => cfg.ramp = Some(RampPlan::default()),
            "--p99-budget-ms" => ramp.p99_budget_ms = num(n, v)?,
            "--ramp-max" => ramp.max_subscribers = num(n, v)?,
            "--json" => cfg.json = Some(PathBuf::from(v)),
            "--plot" => cfg.plot = Some(PathBuf::from(v)),
            "--relay-pid" => cfg.relay_pid = Some(num(n, v)?),
            "--relay-metrics" => cfg.relay_metrics = Some(crate::scrape::MetricsUrl::parse(v)?),
            "--relay-shards" => cfg.relay_shards = Some(num(n, v)?),
            "--strict" => cfg.strict = true,
            "--threads" => cfg.threads = num(n, v)?,
            "--quiet" => cfg.progress = false,
            _ => return Err(format!("unknown option {name}")),
        }
        if FLAGS.contains(&n) && value.is_some() {
            return Err(format!("{n} takes no value"));
        }
    }
    if cfg.ramp.is_some() {
        cfg.ramp = Some(ramp);
    }
    cfg.tls = match (fingerprint, disable_verify, ca_file) {
        (Some(f), false, None) => TlsCheck::Fingerprint(f),
        (None, true, None) => TlsCheck::Disabled,
        (None, false, ca) => TlsCheck::Roots(ca),
        _ => {
            return Err(
                "--fingerprint, --tls-disable-verify and --ca-file exclude each other".into(),
            )
        }
    };
    cfg.server_name = server_name.unwrap_or_else(|| url.host.clone());
    cfg.url = url;
    validate(&cfg)?;
    Ok(Command::Run(Box::new(cfg)))
}

fn validate(cfg: &Config) -> Result<(), String> {
    let l = &cfg.load;
    let positive = [
        ("--publishers", l.publishers),
        ("--broadcasts", l.broadcasts),
        ("--tracks", l.tracks),
        ("--tracks-per-subscriber", l.tracks_per_subscriber),
        ("--frames-per-group", l.frames_per_group),
    ];
    for (name, v) in positive {
        if v == 0 {
            return Err(format!("{name} must be at least 1"));
        }
    }
    if !(l.fps > 0.0 && l.fps <= 10_000.0) {
        return Err("--fps must be above 0 and at most 10000".into());
    }
    if l.frame_size < crate::payload::STAMP_LEN || l.frame_size > 16 << 20 {
        return Err("--frame-size must be between 8 bytes (the send stamp) and 16 MiB".into());
    }
    if cfg.duration.is_zero() {
        return Err("--duration must be above 0".into());
    }
    if cfg.threads > 255 {
        return Err("--threads must be at most 255".into());
    }
    if let Some(r) = &cfg.ramp {
        if l.subscribers == 0 || r.max_subscribers < l.subscribers {
            return Err("--ramp needs 1 <= --subscribers <= --ramp-max".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Command::Run(c) => Ok(*c),
            other => panic!("not a run: {other:?}"),
        }
    }

    #[test]
    fn no_arguments_runs_the_fanout_profile_against_localhost() {
        let c = run(&[]).unwrap();
        assert_eq!(c.profile, "fanout");
        assert_eq!(c.load.publishers, 1);
        assert_eq!(c.url.to_string(), "moql://127.0.0.1:4433");
        assert_eq!(c.version, Version::Lite05);
        assert_eq!(c.server_name, "127.0.0.1");
        assert!(!c.strict && c.progress && c.ramp.is_none());
    }

    #[test]
    fn options_override_the_profile_wherever_the_profile_is_named() {
        let c = run(&["--subscribers", "7", "--profile", "hd", "--fps=25"]).unwrap();
        assert_eq!(c.profile, "hd");
        assert_eq!(c.load.subscribers, 7);
        assert_eq!(c.load.fps, 25.0);
        assert_eq!(c.load.frame_size, 16000);
    }

    #[test]
    fn the_smoke_profile_is_strict_and_about_ten_seconds() {
        let c = run(&["--profile", "smoke"]).unwrap();
        assert!(c.strict);
        assert_eq!(c.load.subscribers, 50);
        let total = c.ramp_time + c.warmup + c.duration;
        assert!(total <= Duration::from_secs(10), "{total:?}");
    }

    #[test]
    fn the_fanout_profile_is_about_one_megabit_per_subscriber() {
        let p = find_profile("fanout").unwrap();
        assert!(
            (p.load.track_mbps() - 1.0).abs() < 0.05,
            "{}",
            p.load.track_mbps()
        );
        assert_eq!(p.load.total_tracks(), 1);
    }

    #[test]
    fn expected_rate_counts_every_subscription() {
        let mut l = find_profile("smoke").unwrap().load;
        l.subscribers = 10;
        l.tracks_per_subscriber = 3;
        l.fps = 10.0;
        l.frame_size = 1000;
        assert!((l.expected_mbps() - 2.4).abs() < 1e-9);
    }

    #[test]
    fn urls_give_host_port_and_session_path() {
        let u = RelayUrl::parse("moql://relay.example:4443/room/a/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("relay.example", 4443, "room/a")
        );
        let u = RelayUrl::parse("moql://[::1]:5000").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 5000));
        assert_eq!(u.to_string(), "moql://[::1]:5000");
        assert_eq!(RelayUrl::parse("moql://localhost").unwrap().port, 443);
        assert!(RelayUrl::parse("https://localhost:443").is_err());
        assert!(RelayUrl::parse("moql://:4433").is_err());
        assert!(RelayUrl::parse("moql://h:99999").is_err());
    }

    #[test]
    fn versions_are_accepted_in_every_spelling() {
        for s in ["05", "5", "lite-05", "moq-lite-05"] {
            assert_eq!(parse_version(s), Ok(Version::Lite05), "{s}");
        }
        assert_eq!(parse_version("04"), Ok(Version::Lite04));
        assert_eq!(parse_version("06"), Ok(Version::Lite06));
        assert!(parse_version("07").is_err());
    }

    #[test]
    fn a_fingerprint_is_64_hex_digits_with_optional_colons() {
        let hex = "ab".repeat(32);
        let c = run(&["--fingerprint", &hex]).unwrap();
        assert_eq!(c.tls, TlsCheck::Fingerprint([0xab; 32]));
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(
            run(&["--fingerprint", &colons]).unwrap().tls,
            TlsCheck::Fingerprint([0xab; 32])
        );
        assert!(run(&["--fingerprint", "abc"]).is_err());
        assert!(run(&["--fingerprint", &"zz".repeat(32)]).is_err());
        assert!(run(&["--fingerprint", &hex, "--tls-disable-verify"]).is_err());
        assert_eq!(
            run(&["--tls-disable-verify"]).unwrap().tls,
            TlsCheck::Disabled
        );
    }

    #[test]
    fn bad_options_are_refused_with_their_name() {
        for (args, needle) in [
            (vec!["--nope"], "--nope"),
            (vec!["--subscribers"], "needs a value"),
            (vec!["--subscribers", "x"], "--subscribers"),
            (vec!["--profile", "huge"], "--profile"),
            (vec!["--frame-size", "4"], "--frame-size"),
            (vec!["--fps", "0"], "--fps"),
            (vec!["--duration", "0"], "--duration"),
            (vec!["--ramp=yes"], "--ramp"),
            (vec!["stray"], "stray"),
        ] {
            let err = run(&args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn ramp_options_apply_only_with_ramp() {
        let c = run(&["--ramp", "--p99-budget-ms", "50", "--ramp-max", "400"]).unwrap();
        let r = c.ramp.unwrap();
        assert_eq!((r.p99_budget_ms, r.max_subscribers), (50.0, 400));
        assert!(run(&["--ramp", "--subscribers", "500", "--ramp-max", "100"]).is_err());
    }

    #[test]
    fn help_and_plot_are_commands() {
        assert_eq!(parse(["--help".to_string()]), Ok(Command::Help));
        assert_eq!(
            parse(["plot", "a.json", "b.svg"].map(String::from)),
            Ok(Command::Plot {
                input: "a.json".into(),
                output: "b.svg".into()
            })
        );
        assert!(parse(["plot".to_string()]).is_err());
    }

    #[test]
    fn usage_names_every_option_the_parser_takes() {
        let u = usage();
        for opt in [
            "--url",
            "--version",
            "--server-name",
            "--fingerprint",
            "--tls-disable-verify",
            "--ca-file",
            "--profile",
            "--publishers",
            "--broadcasts",
            "--tracks ",
            "--subscribers",
            "--tracks-per-subscriber",
            "--fps",
            "--frame-size",
            "--frames-per-group",
            "--max-latency-ms",
            "--prefix",
            "--ramp-time",
            "--warmup",
            "--duration",
            "--ramp ",
            "--p99-budget-ms",
            "--ramp-max",
            "--json",
            "--plot",
            "--relay-pid",
            "--relay-metrics",
            "--strict",
            "--threads",
            "--quiet",
        ] {
            assert!(u.contains(opt), "{opt}");
        }
        for p in profiles() {
            assert!(u.contains(p.name));
        }
    }
}
