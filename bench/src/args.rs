//! The command line: profiles, options, the relay URL.
//!
//! Parsed with clap (`--name value` or `--name=value`, `--help` generated),
//! a profile filling every load parameter first and options overriding it.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use qumo::lite::Version;
use serde::Serialize;

use crate::transport::TransportKind;

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

impl RelayUrl {
    /// The URL the clients dial over `transport`: `ws://` for a WebSocket.
    pub fn dialled(&self, transport: TransportKind) -> String {
        match transport {
            TransportKind::Quic => self.to_string(),
            TransportKind::Ws => self.to_string().replacen("moql://", "ws://", 1),
        }
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

/// What the subscribers speak (`--protocol`); publishers always speak
/// moq-lite, so `ietf-14` and `ietf-22` measure the relay's lite ⇒ IETF path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Protocol {
    /// moq-lite (`--version`).
    #[default]
    Lite,
    /// IETF moq-transport draft 14, ALPN `moq-00`, raw QUIC only.
    #[value(name = "ietf-14")]
    Ietf14,
    /// IETF moq-transport draft 22, ALPN `moqt-22`, raw QUIC only.
    #[value(name = "ietf-22")]
    Ietf22,
}

impl Protocol {
    /// The IETF ALPN the subscribers offer; `None` for moq-lite.
    pub fn ietf_alpn(self) -> Option<&'static str> {
        match self {
            Protocol::Lite => None,
            Protocol::Ietf14 => Some(qumo::ietf::ALPN_DRAFT14),
            Protocol::Ietf22 => Some(qumo::ietf::ALPN_DRAFT22),
        }
    }
}

/// One bench run, fully resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where publishers connect, and subscribers unless `subscribe_urls`.
    pub url: RelayUrl,
    /// What the clients dial the URL's host and port over.
    pub transport: TransportKind,
    /// Other relays (of a cluster) the subscribers spread over, round
    /// robin; empty: they use `url`.
    pub subscribe_urls: Vec<RelayUrl>,
    pub server_name: String,
    pub version: Version,
    pub protocol: Protocol,
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
    Plot {
        input: PathBuf,
        output: PathBuf,
    },
    /// `--help`: the text to print.
    Help(String),
}

/// The command line as clap reads it; [`parse`] resolves it into a
/// [`Config`] over the chosen profile.
#[derive(Debug, Parser)]
#[command(
    name = "qumo-bench",
    about = "Run a load against a moq-lite relay, or plot a report",
    // --version is the moq-lite version, as it always was.
    disable_version_flag = true,
    // A later option wins, so a script can append overrides.
    args_override_self = true,
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Draw a report's steps as an SVG.
    Plot {
        /// A report written by --json.
        #[arg(value_name = "IN.json")]
        input: PathBuf,
        /// The SVG to write.
        #[arg(value_name = "OUT.svg")]
        output: PathBuf,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// moql://HOST:PORT[/PATH]
    #[arg(long, value_name = "URL", default_value = "moql://127.0.0.1:4433",
          value_parser = RelayUrl::parse, help_heading = "Relay")]
    url: RelayUrl,
    /// quic: moq-lite on raw QUIC; ws: on QMux over a WebSocket
    /// (ws://HOST:PORT/PATH, the relay's TCP listener on the same port;
    /// TLS options then do not apply)
    #[arg(long, value_enum, default_value_t = TransportKind::Quic, help_heading = "Relay")]
    transport: TransportKind,
    /// Subscribers connect to these relays instead (URL,URL...; round robin),
    /// e.g. a cluster's edges while publishers use --url
    #[arg(long, value_name = "URLS", value_delimiter = ',',
          value_parser = RelayUrl::parse, help_heading = "Relay")]
    subscribe_urls: Vec<RelayUrl>,
    /// moq-lite version, by ALPN
    #[arg(long, value_name = "04|05|06", default_value = "05",
          value_parser = parse_version, help_heading = "Relay")]
    version: Version,
    /// What subscribers speak: lite (--version), ietf-14 or ietf-22 (IETF
    /// moq-transport draft 14 or 22 on raw QUIC; publishers stay moq-lite)
    #[arg(long, value_enum, default_value_t = Protocol::Lite, help_heading = "Relay")]
    protocol: Protocol,
    /// TLS server name (default: the URL's host)
    #[arg(long, value_name = "NAME", help_heading = "Relay")]
    server_name: Option<String>,
    /// Accept only the certificate with this SHA-256
    #[arg(long, value_name = "HEX", value_parser = parse_hex32, help_heading = "Relay")]
    fingerprint: Option<[u8; 32]>,
    /// Accept any certificate (loopback testing)
    #[arg(long, help_heading = "Relay")]
    tls_disable_verify: bool,
    /// Trust these roots instead of the system's
    #[arg(long, value_name = "PEM", help_heading = "Relay")]
    ca_file: Option<PathBuf>,

    /// A load preset (listed below); the options below override it
    #[arg(
        long,
        value_name = "NAME",
        default_value = "fanout",
        help_heading = "Load"
    )]
    profile: String,
    /// Publisher connections
    #[arg(long, value_name = "P", help_heading = "Load")]
    publishers: Option<usize>,
    /// Broadcasts per publisher
    #[arg(long, value_name = "B", help_heading = "Load")]
    broadcasts: Option<usize>,
    /// Tracks per broadcast
    #[arg(long, value_name = "T", help_heading = "Load")]
    tracks: Option<usize>,
    /// Subscriber connections
    #[arg(long, value_name = "S", help_heading = "Load")]
    subscribers: Option<usize>,
    /// Tracks each subscriber subscribes to
    #[arg(long, value_name = "K", help_heading = "Load")]
    tracks_per_subscriber: Option<usize>,
    /// Frames per second per track
    #[arg(long, value_name = "F", help_heading = "Load")]
    fps: Option<f64>,
    /// Payload per frame (>= 8)
    #[arg(long, value_name = "BYTES", help_heading = "Load")]
    frame_size: Option<usize>,
    /// Frames per group (one stream per group)
    #[arg(long, value_name = "G", help_heading = "Load")]
    frames_per_group: Option<usize>,
    /// SUBSCRIBE max latency (0 = relay default)
    #[arg(long, value_name = "MS", default_value_t = 0, help_heading = "Load")]
    max_latency_ms: u64,
    /// Broadcast path prefix (default unique per run)
    #[arg(long, value_name = "PATH", help_heading = "Load")]
    prefix: Option<String>,

    /// Start subscribers over this window
    #[arg(long, value_name = "SECS", value_parser = seconds, help_heading = "Timing")]
    ramp_time: Option<Duration>,
    /// Settle before measuring
    #[arg(long, value_name = "SECS", value_parser = seconds, help_heading = "Timing")]
    warmup: Option<Duration>,
    /// Measured (steady) window
    #[arg(long, value_name = "SECS", value_parser = seconds, help_heading = "Timing")]
    duration: Option<Duration>,

    /// Step the subscriber count up from --subscribers: double until a step
    /// loses a group, fails a connection, drops a subscriber or passes the
    /// p99 budget; then bisect; report the highest held
    #[arg(long, help_heading = "Ramp")]
    ramp: bool,
    /// p99 latency budget of a ramp step [default: 200]
    #[arg(long, value_name = "MS", help_heading = "Ramp")]
    p99_budget_ms: Option<f64>,
    /// Most subscribers a ramp tries [default: 20000]
    #[arg(long, value_name = "S", help_heading = "Ramp")]
    ramp_max: Option<usize>,

    /// Write the report as JSON
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    json: Option<PathBuf>,
    /// Write latency and relay CPU against subscribers (SVG)
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    plot: Option<PathBuf>,
    /// Sample this process's CPU and RSS (same host)
    #[arg(long, value_name = "PID", help_heading = "Output")]
    relay_pid: Option<u32>,
    /// Sample the relay's CPU, RSS and UDP drops from its /metrics instead
    /// (http://HOST:PORT/metrics; any host)
    #[arg(long, value_name = "URL", value_parser = crate::scrape::MetricsUrl::parse,
          help_heading = "Output")]
    relay_metrics: Option<crate::scrape::MetricsUrl>,
    /// The relay's shard count, recorded in the report
    #[arg(long, value_name = "N", help_heading = "Output")]
    relay_shards: Option<usize>,
    /// Exit 1 on any loss, failed connection or unheld subscriber
    #[arg(long, help_heading = "Output")]
    strict: bool,
    /// Client threads (default: one per core)
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = "Output")]
    threads: usize,
    /// No progress line
    #[arg(long, help_heading = "Output")]
    quiet: bool,
}

/// The help text after the options: the profiles, the RESULT line, exits.
fn after_help() -> String {
    let mut s = String::from("Profiles:\n");
    for p in profiles() {
        s.push_str(&format!("  {:<16} {}\n", p.name, p.about));
    }
    s.push_str(
        "\nThe last line on stdout is machine-readable:\n\
         RESULT subscribers=S delivered_mbps=X expected_mbps=Y relay_cpu_s_per_gb=Z p50_ms=A \
         p99_ms=B lost_groups=L failed_connections=F rss_kb_per_sub=R\n\
         Exit: 0 ok, 1 strict check failed, 2 could not run, 64 bad usage.",
    );
    s
}

fn command() -> clap::Command {
    Cli::command().after_help(after_help())
}

/// The full help text.
pub fn usage() -> String {
    command().render_help().to_string()
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

fn seconds(v: &str) -> Result<Duration, String> {
    let s: f64 = v
        .parse()
        .map_err(|_| format!("{v:?}: not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&s) {
        return Err(format!("{v}: between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

/// Parse the arguments after the program name. A usage error comes back
/// as the text to print (clap's, with the usage line).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let args = std::iter::once("qumo-bench".to_string()).chain(args);
    let cli = command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match cli {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => return Err(e.render().to_string()),
        Err(e) => return Ok(Command::Help(e.render().to_string())),
    };
    if let Some(Sub::Plot { input, output }) = cli.command {
        return Ok(Command::Plot { input, output });
    }
    let a = cli.run;
    let profile = find_profile(&a.profile).ok_or_else(|| {
        let names: Vec<_> = profiles().iter().map(|p| p.name).collect();
        format!("--profile {:?}: one of {}", a.profile, names.join(", "))
    })?;
    let mut load = profile.load.clone();
    let overrides = [
        (&mut load.publishers, a.publishers),
        (&mut load.broadcasts, a.broadcasts),
        (&mut load.tracks, a.tracks),
        (&mut load.subscribers, a.subscribers),
        (&mut load.tracks_per_subscriber, a.tracks_per_subscriber),
        (&mut load.frame_size, a.frame_size),
        (&mut load.frames_per_group, a.frames_per_group),
    ];
    for (field, value) in overrides {
        if let Some(value) = value {
            *field = value;
        }
    }
    if let Some(fps) = a.fps {
        load.fps = fps;
    }
    let defaults = RampPlan::default();
    let tls = match (a.fingerprint, a.tls_disable_verify, a.ca_file) {
        (Some(f), false, None) => TlsCheck::Fingerprint(f),
        (None, true, None) => TlsCheck::Disabled,
        (None, false, ca) => TlsCheck::Roots(ca),
        _ => {
            return Err(
                "--fingerprint, --tls-disable-verify and --ca-file exclude each other".into(),
            )
        }
    };
    if a.protocol != Protocol::Lite && a.transport != TransportKind::Quic {
        return Err("--protocol ietf-14 and ietf-22 run on --transport quic only".into());
    }
    let cfg = Config {
        server_name: a.server_name.unwrap_or_else(|| a.url.host.clone()),
        url: a.url,
        transport: a.transport,
        subscribe_urls: a.subscribe_urls,
        version: a.version,
        protocol: a.protocol,
        tls,
        profile: profile.name.to_string(),
        load,
        ramp_time: a.ramp_time.unwrap_or(profile.ramp_time),
        warmup: a.warmup.unwrap_or(profile.warmup),
        duration: a.duration.unwrap_or(profile.duration),
        threads: a.threads,
        prefix: a.prefix.map(|p| p.trim_matches('/').to_string()),
        max_latency_ms: a.max_latency_ms,
        json: a.json,
        plot: a.plot,
        relay_pid: a.relay_pid,
        relay_metrics: a.relay_metrics,
        relay_shards: a.relay_shards,
        ramp: a.ramp.then(|| RampPlan {
            p99_budget_ms: a.p99_budget_ms.unwrap_or(defaults.p99_budget_ms),
            max_subscribers: a.ramp_max.unwrap_or(defaults.max_subscribers),
            ..defaults
        }),
        strict: a.strict || profile.name == "smoke",
        progress: !a.quiet,
    };
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
        assert_eq!(c.transport, TransportKind::Quic);
        assert!(!c.strict && c.progress && c.ramp.is_none());
    }

    #[test]
    fn the_protocol_is_lite_or_ietf_14_or_22_on_quic() {
        assert_eq!(run(&[]).unwrap().protocol, Protocol::Lite);
        assert_eq!(
            run(&["--protocol", "ietf-14"]).unwrap().protocol,
            Protocol::Ietf14
        );
        assert_eq!(
            run(&["--protocol", "ietf-22"]).unwrap().protocol,
            Protocol::Ietf22
        );
        assert!(run(&["--protocol", "ietf-14", "--transport", "ws"]).is_err());
        assert!(run(&["--protocol", "ietf-22", "--transport", "ws"]).is_err());
        assert!(run(&["--protocol", "ietf-18"]).is_err());
    }

    #[test]
    fn the_transport_is_quic_or_ws() {
        assert_eq!(
            run(&["--transport", "ws"]).unwrap().transport,
            TransportKind::Ws
        );
        assert_eq!(
            run(&["--transport=quic"]).unwrap().transport,
            TransportKind::Quic
        );
        assert!(run(&["--transport", "webtransport"]).is_err());
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
        assert_eq!(
            u.dialled(TransportKind::Ws),
            "ws://relay.example:4443/room/a"
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
    fn subscribers_may_spread_over_other_relays() {
        assert!(run(&[]).unwrap().subscribe_urls.is_empty());
        let c = run(&[
            "--subscribe-urls",
            "moql://127.0.0.1:1,moql://127.0.0.1:2/room",
        ])
        .unwrap();
        let spread: Vec<String> = c.subscribe_urls.iter().map(|u| u.to_string()).collect();
        assert_eq!(spread, ["moql://127.0.0.1:1", "moql://127.0.0.1:2/room"]);
        assert!(run(&["--subscribe-urls", "https://x:1"]).is_err());
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
            (
                vec!["--subscribers"],
                "a value is required for '--subscribers",
            ),
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
    fn relay_metrics_takes_an_http_url() {
        let c = run(&["--relay-metrics", "http://relay.example:9090/metrics"]).unwrap();
        let url = c.relay_metrics.unwrap();
        assert_eq!(
            (url.authority.as_str(), url.path.as_str()),
            ("relay.example:9090", "/metrics")
        );
        let err = run(&["--relay-metrics", "https://relay.example/metrics"]).unwrap_err();
        assert!(err.contains("--relay-metrics"), "{err}");
    }

    #[test]
    fn a_later_option_overrides_an_earlier_one() {
        let c = run(&[
            "--subscribers",
            "5",
            "--duration",
            "3",
            "--subscribers",
            "9",
        ])
        .unwrap();
        assert_eq!(c.load.subscribers, 9);
        assert_eq!(c.duration, Duration::from_secs(3));
    }

    #[test]
    fn help_and_plot_are_commands() {
        assert!(matches!(
            parse(["--help".to_string()]),
            Ok(Command::Help(text)) if text.contains("--subscribers")
        ));
        assert_eq!(
            parse(["plot", "a.json", "b.svg"].map(String::from)),
            Ok(Command::Plot {
                input: "a.json".into(),
                output: "b.svg".into()
            })
        );
        assert!(parse(["plot".to_string()]).is_err());
        assert!(parse(["plot", "a.json", "b.svg", "--strict"].map(String::from)).is_err());
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
