//! The relay's configuration: a YAML file, every key optional.
//!
//! Parsing is strict: every section denies unknown keys, so a misspelt key is
//! an error rather than a silently ignored setting. After parsing,
//! validation checks ranges and the relations between keys, so a
//! [`Config`] returned by [`Config::load`] or [`Config::from_yaml_str`] is
//! always usable as it is.
//!
//! Durations are humantime strings (`"2s"`, `"500ms"`, `"1m 30s"`). Byte sizes
//! are integers or strings with a binary unit (`"8 MiB"`, `"64KiB"`, `"1GiB"`).
//!
//! # Exit codes
//!
//! [`ConfigError::exit_code`] maps each class of error to a `sysexits.h` code:
//!
//! | code | name          | when |
//! |------|---------------|------|
//! | 66   | `EX_NOINPUT`  | the config file, or the certificate, key or `auth.key_file` it names, is missing or unreadable |
//! | 78   | `EX_CONFIG`   | invalid content: YAML syntax, unknown key, bad or out-of-range value, a certificate or key (TLS or auth) that cannot be used, an invalid `RUST_LOG` |
//!
//! The binary adds 64 (`EX_USAGE`) for a bad command line and 1 for a relay
//! that fails after start-up.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::tls::{CertificateSource, PemFile, TlsError};

mod overrides;
pub use overrides::{Override, ENV_PREFIX, ENV_SEPARATOR};

/// `sysexits.h` `EX_NOINPUT`: an input file did not exist or was not readable.
pub const EX_NOINPUT: i32 = 66;
/// `sysexits.h` `EX_CONFIG`: something was found in an unconfigured or
/// misconfigured state.
pub const EX_CONFIG: i32 = 78;

/// Largest shard count: the shard index rides in one byte of every
/// connection id.
pub const MAX_SHARDS: usize = 255;

/// Largest value of a QUIC variable-length integer (RFC 9000, 16).
const VARINT_MAX: u64 = (1 << 62) - 1;

/// The whole configuration file. Every key has a default; an empty file is a
/// valid configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Sockets and threads.
    pub server: ServerConfig,
    /// The server certificate.
    pub tls: TlsConfig,
    /// QUIC transport limits, per connection.
    pub quic: QuicConfig,
    /// Who may start a QUIC handshake, decided before any TLS work.
    pub admission: AdmissionConfig,
    /// MoQ relay behaviour and limits.
    pub relay: RelayConfig,
    /// Log output.
    pub logging: LoggingConfig,
    /// Bounds of the HTTP listeners (certificate hash, admin).
    pub http: HttpConfig,
    /// The operators' HTTP listener (`/metrics`, `/healthz`).
    pub admin: AdminConfig,
    /// Other relays this one dials as peers of a cluster.
    pub cluster: ClusterConfig,
    /// Who may publish and subscribe where (moq-relay's tokens); `None`
    /// (no `auth` section) is an open relay.
    pub auth: Option<AuthConfig>,
}

/// `server.*`: sockets and threads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// UDP address every shard binds with `SO_REUSEPORT`.
    pub address: SocketAddr,
    /// Number of shards (threads); 0 means one per available core. At most
    /// [`MAX_SHARDS`].
    pub shards: usize,
    /// Pin shard K to the K-th available core.
    pub pin_cores: bool,
    /// How packets find the shard that owns their connection.
    pub steering: SteeringMode,
    /// Batch outgoing packets with UDP GSO where the kernel supports it.
    pub gso: bool,
    /// `SO_SNDBUF` / `SO_RCVBUF` asked for each shard socket. 1 ..= `i32::MAX`
    /// (the kernel takes an `int`).
    #[serde(deserialize_with = "de::bytes")]
    pub socket_buffer_bytes: u64,
    /// How long graceful shutdown may take before connections are dropped.
    #[serde(deserialize_with = "de::duration")]
    pub shutdown_timeout: Duration,
    /// Take WebSocket upgrades (QMux, for browsers without WebTransport) on
    /// TCP at `address`'s port, beside `/certificate.sha256`: `ws://`, and
    /// `wss://` with the `tls` certificate.
    pub websocket: bool,
    /// The Go qumo-relay's `server.tls.cert_file` / `server.tls.key_file`;
    /// moved to `tls.*` when the file is loaded, so always `None` after.
    #[serde(rename = "tls")]
    go_tls: Option<GoServerTls>,
    /// The Go qumo-relay's flat `server.cert_file`; moved like `go_tls`.
    cert_file: Option<PathBuf>,
    /// The Go qumo-relay's flat `server.key_file`; moved like `go_tls`.
    key_file: Option<PathBuf>,
}

/// `server.tls.*` in the Go qumo-relay's layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct GoServerTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 4433),
            shards: 0,
            pin_cores: true,
            steering: SteeringMode::Bpf,
            gso: true,
            socket_buffer_bytes: 8 * MIB,
            shutdown_timeout: Duration::from_secs(2),
            websocket: true,
            go_tls: None,
            cert_file: None,
            key_file: None,
        }
    }
}

/// `server.steering`, mirrored from [`qumo_shards::Steering`] so that the
/// runtime crate needs no serde.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SteeringMode {
    /// `bpf`: a BPF program steers packets by connection id.
    Bpf,
    /// `forward-only`: no BPF; misdelivered packets cross the mesh.
    ForwardOnly,
}

impl From<SteeringMode> for qumo_shards::Steering {
    fn from(mode: SteeringMode) -> Self {
        match mode {
            SteeringMode::Bpf => qumo_shards::Steering::Bpf,
            SteeringMode::ForwardOnly => qumo_shards::Steering::ForwardOnly,
        }
    }
}

/// `tls.*`: either PEM files or a generated certificate, never both.
///
/// Invariant (checked when the file is loaded): exactly one of the two forms
/// is set, so [`TlsConfig::source`] always has an answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the leaf certificate. Needs `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Names (DNS names or IP addresses) for a self-signed certificate
    /// generated at start-up.
    #[serde(default)]
    pub generate: Option<Vec<String>>,
}

/// The `tls` section when the file has none: a certificate for `localhost`,
/// so that the default configuration runs with no setup. A `tls` section that
/// is present starts from nothing, so setting `cert_file` does not collide
/// with this default.
impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            generate: Some(vec!["localhost".to_string()]),
        }
    }
}

impl TlsConfig {
    /// Where the certificate comes from. `None` only for a configuration that
    /// validation refuses.
    pub fn source(&self) -> Option<CertificateSource> {
        match (&self.cert_file, &self.key_file, &self.generate) {
            (Some(cert_file), Some(key_file), None) => Some(CertificateSource::Files {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            }),
            (None, None, Some(names)) => Some(CertificateSource::Generate {
                names: names.clone(),
            }),
            _ => None,
        }
    }
}

/// `quic.*`: transport limits applied to every connection.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuicConfig {
    /// Close a connection after this long without traffic. > 0.
    #[serde(deserialize_with = "de::duration")]
    pub idle_timeout: Duration,
    /// Send a PING after this much silence; `None` (YAML `null` or `"off"`)
    /// disables it. Shorter than `idle_timeout`.
    #[serde(deserialize_with = "de::optional_duration")]
    pub keep_alive: Option<Duration>,
    /// Bidirectional streams a peer may have open at once. 1 ..= `u32::MAX`.
    pub max_concurrent_bidi_streams: u32,
    /// Unidirectional streams a peer may have open at once. 1 ..= `u32::MAX`.
    pub max_concurrent_uni_streams: u32,
    /// Streams of each direction a peer may have open at first; the limit
    /// doubles, up to the two above, as the peer uses more than half of
    /// it. Each stream a peer may open costs ~40 bytes from then on, so
    /// a subscriber that opens few pays for few. 1 ..= `u32::MAX`.
    pub initial_concurrent_streams: u32,
    /// What a relay peer (a session with a cluster token on a keyed relay,
    /// one that relays others' broadcasts on an open one, or a link this
    /// relay dialled) may have open at once instead: every connection pays
    /// for the two limits above from its handshake on, so they stay sized
    /// for clients, and peers, which carry many tracks, earn these.
    pub peer_max_concurrent_bidi_streams: u32,
    pub peer_max_concurrent_uni_streams: u32,
    /// Bytes a peer may send on one stream ahead of our reads. 1 ..= `u32::MAX`.
    #[serde(deserialize_with = "de::bytes")]
    pub stream_receive_window: u64,
    /// Bytes a peer may send on all streams ahead of our reads. 1 ..= `u32::MAX`.
    #[serde(deserialize_with = "de::bytes")]
    pub receive_window: u64,
    /// Bytes buffered for sending per connection. 1 ..= 2^62 - 1.
    #[serde(deserialize_with = "de::bytes")]
    pub send_window: u64,
    /// Incoming datagram bytes queued per connection; 0 disables datagrams.
    #[serde(deserialize_with = "de::bytes")]
    pub datagram_receive_buffer: u64,
}

/// The runtime's defaults are the config's: one source of truth.
impl Default for QuicConfig {
    fn default() -> Self {
        let d = qumo_shards::QuicLimits::default();
        Self {
            idle_timeout: d.idle_timeout,
            keep_alive: d.keep_alive,
            max_concurrent_bidi_streams: d.max_concurrent_bidi_streams,
            max_concurrent_uni_streams: d.max_concurrent_uni_streams,
            initial_concurrent_streams: d.initial_concurrent_streams,
            peer_max_concurrent_bidi_streams: 1024,
            peer_max_concurrent_uni_streams: 1024,
            stream_receive_window: d.stream_receive_window.into(),
            receive_window: d.receive_window.into(),
            send_window: d.send_window,
            datagram_receive_buffer: d.datagram_receive_buffer.unwrap_or(0) as u64,
        }
    }
}

/// `admission.*`: limits on new connections, checked on a connection's first
/// Initial packet before any TLS work, so that a flood of handshakes costs
/// bounded memory. The relay-wide connection cap is `relay.max_sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// When a client must prove its address with a QUIC Retry first.
    pub retry: RetryMode,
    /// Under `retry: auto`, handshakes in progress on one shard at or above
    /// which Retry is sent. Any value; above `max_handshakes_per_shard` it
    /// acts as that cap (Retry is sent at the latest when the cap is reached,
    /// since a Retry holds nothing).
    pub retry_above_handshakes: usize,
    /// Handshakes in progress one shard holds at most; beyond it Initials
    /// are dropped (the client retransmits). >= 1.
    pub max_handshakes_per_shard: usize,
    /// A connection still handshaking this long after its first packet is
    /// closed. > 0.
    #[serde(deserialize_with = "de::duration")]
    pub handshake_timeout: Duration,
    /// Connections one IP address (IPv6: one /64) may hold; more are
    /// refused. >= 1.
    pub max_connections_per_ip: usize,
    /// New handshakes one IP address may start per second, on average. >= 1.
    pub handshakes_per_ip_per_second: u32,
    /// ... and at once. >= 1.
    pub handshake_burst_per_ip: u32,
    /// IP addresses remembered for the two limits above. >= 16.
    pub max_tracked_ips: usize,
}

/// `admission.retry`, mirrored from [`qumo_shards::RetryPolicy`] so that the
/// runtime crate needs no serde.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryMode {
    /// `auto`: Retry while a shard is busy with handshakes.
    Auto,
    /// `always`: every new connection is sent a Retry.
    Always,
    /// `never`.
    Never,
}

impl From<RetryMode> for qumo_shards::RetryPolicy {
    fn from(mode: RetryMode) -> Self {
        match mode {
            RetryMode::Auto => qumo_shards::RetryPolicy::Auto,
            RetryMode::Always => qumo_shards::RetryPolicy::Always,
            RetryMode::Never => qumo_shards::RetryPolicy::Never,
        }
    }
}

/// The runtime's defaults are the config's: one source of truth.
impl Default for AdmissionConfig {
    fn default() -> Self {
        let d = qumo_shards::AdmissionLimits::default();
        Self {
            retry: match d.retry {
                qumo_shards::RetryPolicy::Auto => RetryMode::Auto,
                qumo_shards::RetryPolicy::Always => RetryMode::Always,
                qumo_shards::RetryPolicy::Never => RetryMode::Never,
            },
            retry_above_handshakes: d.retry_above_handshakes,
            max_handshakes_per_shard: d.max_handshakes_per_shard,
            handshake_timeout: d.handshake_timeout,
            max_connections_per_ip: d.max_connections_per_source,
            handshakes_per_ip_per_second: d.handshakes_per_source_per_second,
            handshake_burst_per_ip: d.handshake_burst_per_source,
            max_tracked_ips: d.max_tracked_sources,
        }
    }
}

/// Fewest sources the source table may hold: one per lock stripe.
const MIN_TRACKED_IPS: usize = 16;

/// `relay.*`: MoQ relay behaviour and the limits that keep one client from
/// taking the whole relay.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Newest groups kept per track for late joiners. >= 1. The Go
    /// qumo-relay's `MaxGroupCache` is an alias.
    #[serde(alias = "MaxGroupCache")]
    pub group_cache_size: usize,
    /// Bytes reserved up front for a frame that arrives in several pieces; a
    /// larger frame's buffer grows as its bytes arrive, so memory follows
    /// what the peer has sent rather than what it declared. Any value; no
    /// frame is larger than `max_frame_size`, so more acts as that. The Go
    /// qumo-relay's `FrameCapacity` (its initial frame buffer size) is an
    /// alias.
    #[serde(alias = "FrameCapacity", deserialize_with = "de::bytes")]
    pub frame_capacity: u64,
    /// A relay to keep one session to (this one is then its edge; the Go
    /// qumo-relay's key): `moql://host:port` or `https://host:port`
    /// (trusting the system roots or `upstream_ca_file`), or
    /// `http://host:port` to pin the certificate whose hash that host
    /// serves at `/certificate.sha256`. A path and `?jwt=` token go in the
    /// SETUP (lite-05+). Empty or absent: no upstream.
    pub upstream_url: Option<String>,
    /// Sessions open at once, whole relay. >= 1.
    pub max_sessions: usize,
    /// Subscriptions one session may hold; a TRACK request counts as one
    /// until the SUBSCRIBE that follows it takes its place. >= 1.
    pub max_subscriptions_per_session: usize,
    /// Longest announce prefix accepted, in bytes. >= 1.
    pub max_announce_prefix_len: usize,
    /// Largest frame accepted, in bytes. 1 ..= `max_cached_bytes_per_track`.
    #[serde(deserialize_with = "de::bytes")]
    pub max_frame_size: u64,
    /// Cached bytes per track; the oldest groups are dropped beyond it. >= 1.
    #[serde(deserialize_with = "de::bytes")]
    pub max_cached_bytes_per_track: u64,
    /// How long a group that is no longer the newest may still be sent to a
    /// subscriber whose SUBSCRIBE says `max_latency` 0 (no preference). A
    /// subscriber that falls further behind has such groups reset.
    #[serde(deserialize_with = "de::duration")]
    pub default_max_latency: Duration,
    /// The most `max_latency` a subscriber may ask for; a larger request is
    /// cut to this. Bounds how long a lagging subscriber keeps old groups
    /// alive. >= `default_max_latency`.
    #[serde(deserialize_with = "de::duration")]
    pub max_latency_ceiling: Duration,
    /// Frames one group may carry; a group with more is reset
    /// (GROUP_TOO_LARGE). >= 1.
    pub max_frames_per_group: usize,
    /// Broadcasts one session may announce at once. >= 1.
    pub max_broadcasts_per_session: usize,
    /// ANNOUNCE_REQUEST streams one session may hold open at once. >= 1.
    pub max_announce_requests_per_session: usize,
    /// Announce changes queued for one ANNOUNCE_REQUEST whose peer does not
    /// read them; beyond it the stream is reset (NO_CAPACITY). >= 1.
    pub max_announce_backlog: usize,
    /// Bytes of frames a session's publisher may have partly received at
    /// once (a frame reserves its whole size when its header arrives);
    /// further frames wait, and QUIC flow control holds the peer back.
    /// >= `max_frame_size`.
    #[serde(deserialize_with = "de::bytes")]
    pub max_buffered_frame_bytes_per_session: u64,
    /// How long a new session has to start: lite-05+ must send SETUP,
    /// lite-04 (which has none) must open a stream or answer the relay's
    /// ANNOUNCE_REQUEST. > 0.
    #[serde(deserialize_with = "de::duration")]
    pub setup_timeout: Duration,
    /// Bytes of messages (frames by payload) one shard's inbox may hold
    /// before publishers' group streams pause. >= `max_frame_size`.
    #[serde(deserialize_with = "de::bytes")]
    pub max_mesh_backlog: u64,
    /// How long a FETCH for a group this relay does not hold may take when
    /// it is forwarded to the track's publisher, from the request to its
    /// last frame. > 0.
    #[serde(deserialize_with = "de::duration")]
    pub fetch_timeout: Duration,
    /// PEM CA certificates to trust for `upstream_url` instead of the
    /// system roots.
    pub upstream_ca_file: Option<PathBuf>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            group_cache_size: 3,
            frame_capacity: 64 * KIB,
            upstream_url: None,
            max_sessions: 10_000,
            max_subscriptions_per_session: 1024,
            max_announce_prefix_len: 1024,
            max_frame_size: 4 * MIB,
            max_cached_bytes_per_track: 64 * MIB,
            default_max_latency: Duration::from_secs(2),
            max_latency_ceiling: Duration::from_secs(10),
            max_frames_per_group: 16_384,
            max_broadcasts_per_session: 1024,
            max_announce_requests_per_session: 64,
            max_announce_backlog: 4096,
            max_buffered_frame_bytes_per_session: 16 * MIB,
            setup_timeout: Duration::from_secs(10),
            max_mesh_backlog: 32 * MIB,
            fetch_timeout: Duration::from_secs(10),
            upstream_ca_file: None,
        }
    }
}

/// `logging.*`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// A `tracing` filter (`info`, `debug`, `qumo=debug,info`, ...). The
    /// `RUST_LOG` environment variable, when set, replaces it.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".to_string(),
        }
    }
}

/// `http.*`: what one client may hold on each HTTP listener (the
/// certificate hash on the QUIC port number, and the admin listener).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Connections served at once per listener; more get a 503.
    /// 1 ..= [`MAX_HTTP_CONNECTIONS`].
    pub max_connections: usize,
    /// Of those, how many one source (an IPv4 address or an IPv6 /64) may
    /// hold. 1 ..= `max_connections`.
    pub max_connections_per_source: usize,
    /// Time a client has to send its whole request head. > 0, at most
    /// `request_timeout`.
    #[serde(deserialize_with = "de::duration")]
    pub header_timeout: Duration,
    /// Time for a whole connection: request, answer, close. > 0, at most
    /// [`MAX_HTTP_REQUEST_TIMEOUT`].
    #[serde(deserialize_with = "de::duration")]
    pub request_timeout: Duration,
}

/// Largest `http.max_connections`: each connection holds a descriptor.
pub const MAX_HTTP_CONNECTIONS: usize = 65_536;
/// Longest `http.request_timeout`: answers are a few bytes; anything longer
/// only lets slow clients hold their slots.
pub const MAX_HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for HttpConfig {
    fn default() -> Self {
        let d = crate::http::HttpLimits::default();
        Self {
            max_connections: d.max_connections,
            max_connections_per_source: d.max_connections_per_source,
            header_timeout: d.header_timeout,
            request_timeout: d.request_timeout,
        }
    }
}

impl HttpConfig {
    /// The listeners' view of these bounds.
    pub fn limits(&self) -> crate::http::HttpLimits {
        crate::http::HttpLimits {
            max_connections: self.max_connections,
            max_connections_per_source: self.max_connections_per_source,
            header_timeout: self.header_timeout,
            request_timeout: self.request_timeout,
        }
    }
}

/// `admin.*`: the operators' HTTP listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// TCP address for `/metrics` and `/healthz`; `None` (the default, YAML
    /// `null` or absent) runs no admin listener.
    pub address: Option<SocketAddr>,
}

/// `cluster.*`: relays this one dials and shares broadcasts with, each
/// link a moq-lite session whose announcements carry hop lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This relay's name; its hop id in announcements is derived from it,
    /// so it stays the same across restarts. Empty: a random hop id.
    pub node: String,
    /// Peer URLs, as `relay.upstream_url` takes them. List each link on
    /// one of its two ends only: both would make two sessions.
    pub peers: Vec<String>,
}

const KIB: u64 = 1024;
/// `auth.*`: tokens as moq-relay checks them (see [`crate::auth`]). At
/// least one of the two keys is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The JWK that verifies tokens (`moq-token-cli generate` writes one):
    /// a symmetric key, or the public half of an asymmetric one. Without
    /// it, every token is refused and only `public` prefixes are open.
    pub key_file: Option<PathBuf>,
    /// Path prefixes anyone may publish and subscribe under without a
    /// token (moq-relay's `--auth-public`); `""` opens everything.
    pub public: Vec<String>,
}

const MIB: u64 = 1024 * 1024;

/// Why a configuration was refused. Every message names the file and, where
/// there is one, the dotted key (`server.address`) and the reason.
///
/// See the [module documentation](self) for the exit code of each class.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file is missing or unreadable.
    #[error("{file}: cannot read the configuration file: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("{file}: YAML syntax error{}: {reason}", at(*location))]
    Syntax {
        file: String,
        reason: String,
        location: Option<(usize, usize)>,
    },
    /// A key that no section knows (usually a typo).
    #[error("{file}: {key}: unknown key{}: {reason}", at(*location))]
    UnknownKey {
        file: String,
        key: String,
        reason: String,
        location: Option<(usize, usize)>,
    },
    /// A value of the wrong type, out of range, or inconsistent with another.
    #[error("{file}: {key}: bad value{}: {reason}", at(*location))]
    BadValue {
        file: String,
        key: String,
        reason: String,
        location: Option<(usize, usize)>,
    },
    /// The certificate, key or auth key file named by `key` is missing or
    /// unreadable.
    #[error("{file}: {key}: cannot read {}: {source}", path.display())]
    CertificateUnreadable {
        file: String,
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The certificate, key or auth key file exists but cannot be used.
    #[error("{file}: {key}: {reason}")]
    CertificateInvalid {
        file: String,
        key: &'static str,
        reason: String,
    },
}

/// `" at line L column C"`, or nothing when the location is unknown.
fn at(location: Option<(usize, usize)>) -> String {
    match location {
        Some((line, column)) => format!(" at line {line} column {column}"),
        None => String::new(),
    }
}

impl ConfigError {
    /// The dotted key this error is about, if it is about one.
    fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. } | ConfigError::BadValue { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The same error, naming `source` (an environment variable, a flag)
    /// instead of the file.
    fn attributed_to(self, source: &str) -> Self {
        match self {
            ConfigError::UnknownKey { key, reason, .. } => ConfigError::UnknownKey {
                file: source.to_string(),
                key,
                reason,
                location: None,
            },
            ConfigError::BadValue { key, reason, .. } => ConfigError::BadValue {
                file: source.to_string(),
                key,
                reason,
                location: None,
            },
            other => other,
        }
    }

    /// The process exit code for this error: [`EX_NOINPUT`] (66) when an
    /// input file is missing or unreadable, [`EX_CONFIG`] (78) otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Io { .. } | ConfigError::CertificateUnreadable { .. } => EX_NOINPUT,
            ConfigError::Syntax { .. }
            | ConfigError::UnknownKey { .. }
            | ConfigError::BadValue { .. }
            | ConfigError::CertificateInvalid { .. } => EX_CONFIG,
        }
    }

    /// Attribute a TLS set-up failure to the configuration file and key that
    /// caused it.
    pub fn from_tls(file: impl fmt::Display, error: TlsError) -> Self {
        let file = file.to_string();
        let key_of = |which| match which {
            PemFile::Certificate => "tls.cert_file",
            PemFile::PrivateKey => "tls.key_file",
        };
        match error {
            TlsError::Read {
                which,
                path,
                source,
            } => ConfigError::CertificateUnreadable {
                file,
                key: key_of(which),
                path,
                source,
            },
            TlsError::Parse { which, .. } => ConfigError::CertificateInvalid {
                file,
                key: key_of(which),
                reason: error.to_string(),
            },
            TlsError::Pair { .. } => ConfigError::CertificateInvalid {
                file,
                key: "tls.key_file",
                reason: error.to_string(),
            },
            TlsError::Generate { .. } => ConfigError::CertificateInvalid {
                file,
                key: "tls.generate",
                reason: error.to_string(),
            },
            TlsError::Rustls(_) => ConfigError::CertificateInvalid {
                file,
                key: "tls",
                reason: error.to_string(),
            },
        }
    }
}

impl Config {
    /// Read, parse and validate the configuration file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        Self::load_with(path, &[])
    }

    /// As [`Config::load`], with `overrides` (environment variables, flags)
    /// laid over the file in order, the last one for a key winning.
    pub fn load_with(
        path: impl AsRef<Path>,
        overrides: &[Override],
    ) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: file.clone(),
            source,
        })?;
        Self::from_yaml_str_with(&text, &file, overrides)
    }

    /// Parse and validate YAML text; `file` only names the source in errors.
    pub fn from_yaml_str(text: &str, file: &str) -> Result<Config, ConfigError> {
        Self::from_yaml_str_with(text, file, &[])
    }

    /// As [`Config::from_yaml_str`], with `overrides` laid over the text. An
    /// error about an overridden key names the override, not `file`.
    pub fn from_yaml_str_with(
        text: &str,
        file: &str,
        overrides: &[Override],
    ) -> Result<Config, ConfigError> {
        // Parse as plain YAML first: a failure here is a syntax error, which
        // the typed pass below could not tell apart from a bad value.
        let mut value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
                file: file.to_string(),
                location: location(&e),
                reason: strip_location(e.to_string(), &e),
            })?;
        let attribute = |e: ConfigError| {
            let key = e.key().unwrap_or_default();
            // An unknown section names only itself; the override that
            // brought it in names a key inside it.
            let unknown = matches!(e, ConfigError::UnknownKey { .. });
            let found = overrides
                .iter()
                .rev()
                .find(|o| o.covers(key) || (unknown && o.lies_in(key)));
            match found {
                Some(o) => e.attributed_to(&o.source),
                None => e,
            }
        };
        let mut config: Config = if overrides.is_empty() {
            // An empty file (or one holding only comments) is all defaults.
            if value.is_null() {
                return Ok(Config::default());
            }
            // From the text, so that errors carry their line and column.
            serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
                .map_err(|e| classify(file, e))?
        } else {
            for o in overrides {
                o.apply(&mut value)
                    .map_err(|reason| ConfigError::UnknownKey {
                        file: o.source.clone(),
                        key: o.key.clone(),
                        reason,
                        location: None,
                    })?;
            }
            serde_path_to_error::deserialize(value.clone())
                .map_err(|e| attribute(classify(file, e)))?
        };
        let tls_section = value.get("tls").is_some_and(|t| !t.is_null());
        config
            .adopt_go_layout(tls_section)
            .and_then(|()| config.validate())
            .map_err(|(key, reason)| {
                attribute(ConfigError::BadValue {
                    file: file.to_string(),
                    key: key.to_string(),
                    reason,
                    location: None,
                })
            })?;
        Ok(config)
    }

    /// Read the Go qumo-relay's layout as qumo's own: its empty
    /// `relay.upstream_url` means none, and its certificate keys
    /// (`server.tls.cert_file`, or the flat `server.cert_file`, with their
    /// `key_file`) move to `tls.*`, where validation and TLS set-up read
    /// them. `tls_section` says whether the file has a `tls` section of its
    /// own, which would then set the certificate twice.
    fn adopt_go_layout(&mut self, tls_section: bool) -> Result<(), (&'static str, String)> {
        if self.relay.upstream_url.as_deref() == Some("") {
            self.relay.upstream_url = None;
        }
        let s = &mut self.server;
        let flat = (s.cert_file.take(), s.key_file.take());
        let (cert_file, key_file, written_as) = match (s.go_tls.take(), flat) {
            (None, (None, None)) => return Ok(()),
            (Some(_), (Some(_), _) | (_, Some(_))) => {
                return Err((
                    "server.cert_file",
                    "the certificate is set twice: use server.tls.cert_file/key_file or \
                     server.cert_file/key_file, not both"
                        .into(),
                ))
            }
            (Some(nested), _) => (nested.cert_file, nested.key_file, "server.tls"),
            (None, (cert_file, key_file)) => (cert_file, key_file, "server"),
        };
        if tls_section {
            return Err((
                "tls",
                format!(
                    "the certificate is set twice: {written_as}.cert_file/key_file (the Go \
                     qumo-relay layout) and the tls section; keep one"
                ),
            ));
        }
        self.tls = TlsConfig {
            cert_file,
            key_file,
            generate: None,
        };
        Ok(())
    }

    /// Check ranges and relations between keys. On failure, returns the dotted
    /// key and the reason.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        fn check(
            ok: bool,
            key: &'static str,
            reason: impl FnOnce() -> String,
        ) -> Result<(), (&'static str, String)> {
            if ok {
                Ok(())
            } else {
                Err((key, reason()))
            }
        }
        let u32_max = u64::from(u32::MAX);

        let s = &self.server;
        check(s.shards <= MAX_SHARDS, "server.shards", || {
            format!(
                "{} is too many: at most {MAX_SHARDS} (the shard index is one byte of the connection id); 0 means one per core",
                s.shards
            )
        })?;
        check(
            (1..=i32::MAX as u64).contains(&s.socket_buffer_bytes),
            "server.socket_buffer_bytes",
            || {
                format!(
                    "{} is out of range 1 ..= {}",
                    s.socket_buffer_bytes,
                    i32::MAX
                )
            },
        )?;

        self.validate_tls()?;
        self.validate_auth()?;

        let q = &self.quic;
        check(!q.idle_timeout.is_zero(), "quic.idle_timeout", || {
            "must be greater than zero".into()
        })?;
        check(
            q.idle_timeout.as_millis() <= u128::from(VARINT_MAX),
            "quic.idle_timeout",
            || "too long: QUIC carries it as a variable-length integer of milliseconds".into(),
        )?;
        if let Some(keep_alive) = q.keep_alive {
            check(!keep_alive.is_zero(), "quic.keep_alive", || {
                "must be greater than zero; use \"off\" or null to disable keep-alive".into()
            })?;
            check(keep_alive < q.idle_timeout, "quic.keep_alive", || {
                format!(
                    "{} must be shorter than quic.idle_timeout ({}), or the connection times out between PINGs",
                    humantime::format_duration(keep_alive),
                    humantime::format_duration(q.idle_timeout)
                )
            })?;
        }
        check(
            q.max_concurrent_bidi_streams >= 1,
            "quic.max_concurrent_bidi_streams",
            || {
                "must be at least 1: MoQ sessions and subscriptions use bidirectional streams"
                    .into()
            },
        )?;
        check(
            q.max_concurrent_uni_streams >= 1,
            "quic.max_concurrent_uni_streams",
            || "must be at least 1: MoQ groups travel on unidirectional streams".into(),
        )?;
        check(
            q.initial_concurrent_streams >= 1,
            "quic.initial_concurrent_streams",
            || "must be at least 1: a session begins with a stream".into(),
        )?;
        for (key, value, ordinary) in [
            (
                "quic.peer_max_concurrent_bidi_streams",
                q.peer_max_concurrent_bidi_streams,
                q.max_concurrent_bidi_streams,
            ),
            (
                "quic.peer_max_concurrent_uni_streams",
                q.peer_max_concurrent_uni_streams,
                q.max_concurrent_uni_streams,
            ),
        ] {
            check(value >= ordinary, key, || {
                format!("{value} is below the limit every peer gets ({ordinary}); a relay peer earns more, not less")
            })?;
        }
        for (key, value) in [
            ("quic.stream_receive_window", q.stream_receive_window),
            ("quic.receive_window", q.receive_window),
        ] {
            check((1..=u32_max).contains(&value), key, || {
                format!("{value} is out of range 1 ..= {u32_max}")
            })?;
        }
        check(
            (1..=VARINT_MAX).contains(&q.send_window),
            "quic.send_window",
            || format!("{} is out of range 1 ..= {VARINT_MAX}", q.send_window),
        )?;
        check(
            usize::try_from(q.datagram_receive_buffer).is_ok(),
            "quic.datagram_receive_buffer",
            || format!("{} does not fit in memory", q.datagram_receive_buffer),
        )?;

        let a = &self.admission;
        for (key, value) in [
            (
                "admission.max_handshakes_per_shard",
                a.max_handshakes_per_shard,
            ),
            ("admission.max_connections_per_ip", a.max_connections_per_ip),
            (
                "admission.handshakes_per_ip_per_second",
                a.handshakes_per_ip_per_second as usize,
            ),
            (
                "admission.handshake_burst_per_ip",
                a.handshake_burst_per_ip as usize,
            ),
        ] {
            check(value >= 1, key, || "must be at least 1".into())?;
        }
        check(
            !a.handshake_timeout.is_zero(),
            "admission.handshake_timeout",
            || "must be greater than zero".into(),
        )?;
        check(
            a.max_tracked_ips >= MIN_TRACKED_IPS,
            "admission.max_tracked_ips",
            || {
                format!(
                    "{} is too few: at least {MIN_TRACKED_IPS}",
                    a.max_tracked_ips
                )
            },
        )?;

        let r = &self.relay;
        for (key, value) in [
            ("relay.group_cache_size", r.group_cache_size),
            ("relay.max_sessions", r.max_sessions),
            (
                "relay.max_subscriptions_per_session",
                r.max_subscriptions_per_session,
            ),
            ("relay.max_announce_prefix_len", r.max_announce_prefix_len),
            ("relay.max_frames_per_group", r.max_frames_per_group),
            (
                "relay.max_broadcasts_per_session",
                r.max_broadcasts_per_session,
            ),
            (
                "relay.max_announce_requests_per_session",
                r.max_announce_requests_per_session,
            ),
            ("relay.max_announce_backlog", r.max_announce_backlog),
        ] {
            check(value >= 1, key, || "must be at least 1".into())?;
        }
        check(
            r.max_latency_ceiling >= r.default_max_latency,
            "relay.max_latency_ceiling",
            || {
                format!(
                    "{:?} is below relay.default_max_latency ({:?})",
                    r.max_latency_ceiling, r.default_max_latency
                )
            },
        )?;
        check(
            r.max_buffered_frame_bytes_per_session >= r.max_frame_size,
            "relay.max_buffered_frame_bytes_per_session",
            || {
                format!(
                    "{} is below relay.max_frame_size ({}): a whole frame must fit",
                    r.max_buffered_frame_bytes_per_session, r.max_frame_size
                )
            },
        )?;
        check(
            r.max_mesh_backlog >= r.max_frame_size,
            "relay.max_mesh_backlog",
            || {
                format!(
                    "{} is below relay.max_frame_size ({}): a whole frame must fit",
                    r.max_mesh_backlog, r.max_frame_size
                )
            },
        )?;
        check(!r.setup_timeout.is_zero(), "relay.setup_timeout", || {
            "must be greater than 0".into()
        })?;
        check(!r.fetch_timeout.is_zero(), "relay.fetch_timeout", || {
            "must be greater than 0".into()
        })?;
        for peer in &self.cluster.peers {
            if let Err(e) = crate::peer_url::PeerUrl::parse(peer) {
                // Not the URL itself: its query may hold a token.
                return Err(("cluster.peers", e.to_string()));
            }
        }
        if let Some(url) = r.upstream_url.as_deref().filter(|u| !u.is_empty()) {
            if let Err(e) = crate::peer_url::PeerUrl::parse(url) {
                return Err(("relay.upstream_url", e.to_string()));
            }
        }
        check(
            r.max_cached_bytes_per_track >= 1,
            "relay.max_cached_bytes_per_track",
            || "must be at least 1".into(),
        )?;
        check(
            (1..=r.max_cached_bytes_per_track).contains(&r.max_frame_size),
            "relay.max_frame_size",
            || {
                format!(
                    "{} is out of range 1 ..= relay.max_cached_bytes_per_track ({}): the cache must hold at least one frame",
                    r.max_frame_size, r.max_cached_bytes_per_track
                )
            },
        )?;
        for (key, value) in [
            (
                "relay.max_buffered_frame_bytes_per_session",
                r.max_buffered_frame_bytes_per_session,
            ),
            ("relay.max_frame_size", r.max_frame_size),
            (
                "relay.max_cached_bytes_per_track",
                r.max_cached_bytes_per_track,
            ),
        ] {
            check(usize::try_from(value).is_ok(), key, || {
                format!("{value} does not fit in memory")
            })?;
        }

        let h = &self.http;
        check(
            (1..=MAX_HTTP_CONNECTIONS).contains(&h.max_connections),
            "http.max_connections",
            || {
                format!(
                    "{} is out of range 1 ..= {MAX_HTTP_CONNECTIONS}",
                    h.max_connections
                )
            },
        )?;
        check(
            (1..=h.max_connections).contains(&h.max_connections_per_source),
            "http.max_connections_per_source",
            || {
                format!(
                    "{} is out of range 1 ..= http.max_connections ({})",
                    h.max_connections_per_source, h.max_connections
                )
            },
        )?;
        check(
            !h.request_timeout.is_zero() && h.request_timeout <= MAX_HTTP_REQUEST_TIMEOUT,
            "http.request_timeout",
            || {
                format!(
                    "{} is out of range: more than 0 and at most {}",
                    humantime::format_duration(h.request_timeout),
                    humantime::format_duration(MAX_HTTP_REQUEST_TIMEOUT)
                )
            },
        )?;
        check(
            !h.header_timeout.is_zero() && h.header_timeout <= h.request_timeout,
            "http.header_timeout",
            || {
                format!(
                    "{} is out of range: more than 0 and at most http.request_timeout ({})",
                    humantime::format_duration(h.header_timeout),
                    humantime::format_duration(h.request_timeout)
                )
            },
        )?;

        tracing_subscriber::EnvFilter::try_new(&self.logging.level)
            .map(|_| ())
            .map_err(|e| {
                (
                    "logging.level",
                    format!(
                        "{:?} is not a valid tracing filter: {e}",
                        self.logging.level
                    ),
                )
            })
    }

    fn validate_auth(&self) -> Result<(), (&'static str, String)> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        match &auth.key_file {
            None if auth.public.is_empty() => Err((
                "auth",
                "set auth.key_file, auth.public or both; remove the section for an open relay"
                    .into(),
            )),
            Some(path) if path.as_os_str().is_empty() => {
                Err(("auth.key_file", "empty; name a JWK key file".into()))
            }
            _ => Ok(()),
        }
    }

    /// Load the `auth` section's key, attributing failures to `file` and
    /// `auth.key_file`; `None` without an `auth` section (an open relay).
    pub fn auth(&self, file: &str) -> Result<Option<crate::auth::Auth>, ConfigError> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        let key_file = auth.key_file.as_deref();
        crate::auth::Auth::load(key_file, &auth.public)
            .map(Some)
            .map_err(|e| {
                let path = key_file.unwrap_or(Path::new("")).to_path_buf();
                match e {
                    crate::auth::AuthSetupError::Unreadable(source) => {
                        ConfigError::CertificateUnreadable {
                            file: file.to_string(),
                            key: "auth.key_file",
                            path,
                            source,
                        }
                    }
                    crate::auth::AuthSetupError::Invalid(reason) => {
                        ConfigError::CertificateInvalid {
                            file: file.to_string(),
                            key: "auth.key_file",
                            reason: format!("{}: {reason}", path.display()),
                        }
                    }
                }
            })
    }

    fn validate_tls(&self) -> Result<(), (&'static str, String)> {
        let t = &self.tls;
        let files = t.cert_file.is_some() || t.key_file.is_some();
        match (&t.generate, files) {
            (Some(_), true) => Err((
                "tls",
                "set either tls.generate or tls.cert_file and tls.key_file, not both".into(),
            )),
            (None, false) => Err((
                "tls",
                "set either tls.generate (a self-signed certificate) or tls.cert_file and tls.key_file"
                    .into(),
            )),
            (Some(names), false) => {
                if names.is_empty() {
                    return Err((
                        "tls.generate",
                        "must list at least one name (e.g. [localhost])".into(),
                    ));
                }
                match names.iter().find(|n| !is_certificate_name(n)) {
                    Some(bad) => Err((
                        "tls.generate",
                        format!("{bad:?} is neither an IP address nor a DNS name"),
                    )),
                    None => Ok(()),
                }
            }
            (None, true) => {
                let cert = t.cert_file.as_deref().unwrap_or(Path::new(""));
                let key = t.key_file.as_deref().unwrap_or(Path::new(""));
                if cert.as_os_str().is_empty() {
                    Err(("tls.cert_file", "missing or empty; tls.key_file needs it".into()))
                } else if key.as_os_str().is_empty() {
                    Err(("tls.key_file", "missing or empty; tls.cert_file needs it".into()))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The shard count to run: `server.shards`, or one per available core
    /// when it is 0, never more than [`MAX_SHARDS`] and never less than 1.
    pub fn effective_shards(&self) -> usize {
        let shards = match self.server.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        shards.clamp(1, MAX_SHARDS)
    }

    /// The certificate source. `None` only for a configuration that
    /// validation refuses, which `load` never returns.
    pub fn certificate_source(&self) -> Option<CertificateSource> {
        self.tls.source()
    }

    /// Build server TLS for this configuration, attributing failures to
    /// `file` and the `tls.*` key at fault.
    pub fn server_tls(
        &self,
        file: &str,
        alpn: Vec<Vec<u8>>,
    ) -> Result<crate::tls::ServerTls, ConfigError> {
        let source = self.tls.source().ok_or_else(|| {
            // Unreachable for a validated config; report it rather than panic.
            let (key, reason) = self
                .validate_tls()
                .err()
                .unwrap_or(("tls", "no certificate configured".into()));
            ConfigError::BadValue {
                file: file.to_string(),
                key: key.to_string(),
                reason,
                location: None,
            }
        })?;
        crate::tls::server_tls(&source, alpn).map_err(|e| ConfigError::from_tls(file, e))
    }

    /// The runtime's view of this configuration. Values were range-checked when
    /// the file was loaded; conversions saturate rather than panic should an
    /// unvalidated config get here.
    pub fn runtime_config(
        &self,
        server_tls: Arc<rustls::ServerConfig>,
    ) -> qumo_shards::RuntimeConfig {
        let s = &self.server;
        let q = &self.quic;
        let to_u32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let to_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        qumo_shards::RuntimeConfig {
            listen: s.address,
            shards: self.effective_shards(),
            pin_cores: s.pin_cores,
            steering: s.steering.into(),
            gso: s.gso,
            socket_buffer_bytes: to_usize(s.socket_buffer_bytes),
            shutdown_timeout: s.shutdown_timeout,
            // Time for every session's GOAWAY to go out before the close.
            shutdown_grace: (s.shutdown_timeout / 4).min(std::time::Duration::from_millis(500)),
            // QUIC's NO_ERROR: shutting down is not a fault of the peer's.
            shutdown_close_code: 0,
            quic: qumo_shards::QuicLimits {
                idle_timeout: q.idle_timeout,
                keep_alive: q.keep_alive,
                max_concurrent_bidi_streams: q.max_concurrent_bidi_streams,
                max_concurrent_uni_streams: q.max_concurrent_uni_streams,
                initial_concurrent_streams: q.initial_concurrent_streams,
                stream_receive_window: to_u32(q.stream_receive_window),
                receive_window: to_u32(q.receive_window),
                send_window: q.send_window,
                datagram_receive_buffer: match q.datagram_receive_buffer {
                    0 => None,
                    n => Some(to_usize(n)),
                },
            },
            admission: self.admission_limits(),
            server_tls: Some(server_tls),
        }
    }

    /// The runtime's admission limits. The runtime-wide connection cap is
    /// `relay.max_sessions`: a client over it is refused on its first
    /// Initial, before any TLS work; the relay's own TOO_MANY_SESSIONS close
    /// stays for the race at the boundary (a connection counts until it has
    /// drained, a session only until its task ends).
    pub fn admission_limits(&self) -> qumo_shards::AdmissionLimits {
        let a = &self.admission;
        qumo_shards::AdmissionLimits {
            retry: a.retry.into(),
            retry_above_handshakes: a.retry_above_handshakes.min(a.max_handshakes_per_shard),
            max_handshakes_per_shard: a.max_handshakes_per_shard,
            handshake_timeout: a.handshake_timeout,
            max_connections: self.relay.max_sessions,
            max_connections_per_source: a.max_connections_per_ip,
            handshakes_per_source_per_second: a.handshakes_per_ip_per_second,
            handshake_burst_per_source: a.handshake_burst_per_ip,
            max_tracked_sources: a.max_tracked_ips,
        }
    }
}

/// An IP address, or a DNS name made of letters, digits, `-`, `.` and a
/// leading `*.` wildcard. Checked here because rcgen accepts any ASCII, and a
/// certificate for a name no client can ask for would only fail later.
fn is_certificate_name(name: &str) -> bool {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let host = name.strip_prefix("*.").unwrap_or(name);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Line and column (1-based) of a YAML error.
fn location(e: &serde_yaml::Error) -> Option<(usize, usize)> {
    e.location().map(|l| (l.line(), l.column()))
}

/// serde_yaml and libyaml put `" at line L column C"` into their messages;
/// the location is reported separately, so drop it.
fn strip_location(message: String, e: &serde_yaml::Error) -> String {
    match e.location() {
        Some(l) => message.replacen(
            &format!(" at line {} column {}", l.line(), l.column()),
            "",
            1,
        ),
        None => message,
    }
}

/// Sort a typed-parse failure into unknown key or bad value, keyed by the
/// dotted path serde_path_to_error recorded.
fn classify(file: &str, e: serde_path_to_error::Error<serde_yaml::Error>) -> ConfigError {
    let path = e.path().to_string();
    let key = if path == "." {
        "(top level)".to_string()
    } else {
        path.clone()
    };
    let inner = e.into_inner();
    let location = location(&inner);
    let mut reason = strip_location(inner.to_string(), &inner);
    // serde_yaml prefixes its own path (for an unknown key, the parent's);
    // ours is already in `key`.
    if let Some((prefix, rest)) = reason.split_once(": ") {
        let parent_or_self = path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']));
        if parent_or_self {
            reason = rest.to_string();
        }
    }
    if let Some(rest) = reason.strip_prefix("unknown field ") {
        // "`adress`, expected one of `address`, ..." -> "expected one of ..."
        let expected = rest.split_once(", ").map_or("", |(_, e)| e);
        ConfigError::UnknownKey {
            file: file.to_string(),
            key,
            reason: if expected.is_empty() {
                "this section takes no keys".to_string()
            } else {
                expected.to_string()
            },
            location,
        }
    } else {
        ConfigError::BadValue {
            file: file.to_string(),
            key,
            reason,
            location,
        }
    }
}

/// Deserializers for the value syntaxes serde does not know.
mod de {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};

    /// A humantime duration string.
    pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_str(DurationVisitor)
    }

    /// A duration, or `null` / `"off"` for none.
    pub(super) fn optional_duration<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        d.deserialize_option(OptionalDurationVisitor)
    }

    /// A byte count: an integer, or a string such as `"8 MiB"`.
    pub(super) fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(BytesVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as \"10s\" or \"500ms\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v)
                .map_err(|e| E::custom(format!("{v:?} is not a duration such as \"10s\": {e}")))
        }
    }

    struct OptionalDurationVisitor;

    impl<'de> Visitor<'de> for OptionalDurationVisitor {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as \"10s\", or \"off\" or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if v == "off" {
                Ok(None)
            } else {
                DurationVisitor.visit_str(v).map(Some)
            }
        }
    }

    struct BytesVisitor;

    impl Visitor<'_> for BytesVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a byte count: an integer, or a string such as \"8 MiB\"")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse_bytes(v).ok_or_else(|| {
                E::custom(format!(
                    "{v:?} is not a byte count such as 1048576, \"64 KiB\", \"8 MiB\" or \"1 GiB\""
                ))
            })
        }
    }

    /// `"<integer> [B|KiB|MiB|GiB]"`, binary units only: decimal `MB` is a
    /// common mistake for `MiB`, so it is refused rather than guessed.
    pub(super) fn parse_bytes(text: &str) -> Option<u64> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let number: u64 = digits.parse().ok()?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return None,
        };
        number.checked_mul(multiplier)
    }
}

#[cfg(test)]
mod tests;
