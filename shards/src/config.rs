//! What a runtime needs to know before it starts. The relay's YAML config maps
//! onto these types; nothing here parses files.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How short-header packets find the shard that owns their connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steering {
    /// A classic BPF program on the `SO_REUSEPORT` group reads the shard index
    /// from the destination connection id; the mesh forwards the stragglers.
    Bpf,
    /// No BPF: the kernel spreads packets by 4-tuple hash and every packet that
    /// lands on the wrong shard crosses the mesh. Slower; useful where BPF is
    /// refused and for testing the forwarding path alone.
    ForwardOnly,
}

/// QUIC transport limits applied to every connection of the runtime.
#[derive(Debug, Clone)]
pub struct QuicLimits {
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Send a PING after this much silence; `None` disables keep-alive.
    pub keep_alive: Option<Duration>,
    /// Bidirectional streams the peer may have open at once. quinn-proto
    /// keeps table slots for every stream the peer may open, from the
    /// handshake on, in every connection (bidi: ~40 bytes, uni: ~24, in
    /// tables sized to a power of two): the two limits are memory per
    /// connection, subscribers' included, even when no stream is open.
    pub max_concurrent_bidi_streams: u32,
    /// Unidirectional streams the peer may have open at once (see above).
    pub max_concurrent_uni_streams: u32,
    /// Streams of each direction the peer may have open at first (capped
    /// by the two limits above). The limit doubles, up to them, whenever
    /// the application accepts a stream while the peer has more than half
    /// of it open: a connection pays for the slots its peer uses, not for
    /// the most it could ever use.
    pub initial_concurrent_streams: u32,
    /// Bytes the peer may send on one stream ahead of our reads.
    pub stream_receive_window: u32,
    /// Bytes the peer may send on all streams together ahead of our reads.
    pub receive_window: u32,
    /// Bytes we buffer for sending on all streams of one connection.
    pub send_window: u64,
    /// Largest number of queued incoming datagram bytes; `None` disables datagrams.
    pub datagram_receive_buffer: Option<usize>,
}

impl Default for QuicLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(10)),
            max_concurrent_bidi_streams: 128,
            max_concurrent_uni_streams: 256,
            initial_concurrent_streams: 16,
            stream_receive_window: 1024 * 1024,
            receive_window: 16 * 1024 * 1024,
            send_window: 16 * 1024 * 1024,
            datagram_receive_buffer: Some(1024 * 1024),
        }
    }
}

/// When a new connection must first prove it owns its address with a QUIC
/// Retry round trip (RFC 9000 8.1.2). A Retry costs the server no state and
/// the client one round trip; it keeps a spoofed flood from reaching TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Never send Retry.
    Never,
    /// Send Retry while a shard has at least
    /// [`AdmissionLimits::retry_above_handshakes`] handshakes in progress.
    Auto,
    /// Every new connection is sent a Retry first.
    Always,
}

/// Who may start a handshake, decided from the first Initial packet before
/// any TLS work, so that a flood of Initials costs bounded memory.
#[derive(Debug, Clone)]
pub struct AdmissionLimits {
    /// See [`RetryPolicy`].
    pub retry: RetryPolicy,
    /// Under [`RetryPolicy::Auto`], handshakes in progress on one shard at or
    /// above which unvalidated addresses are sent a Retry; a value above
    /// `max_handshakes_per_shard` acts as that cap.
    pub retry_above_handshakes: usize,
    /// Handshakes in progress one shard holds at most; a new Initial beyond
    /// it is dropped unanswered (the client retransmits it later). Per shard
    /// so the check needs no lock; the process holds at most
    /// `shards * max_handshakes_per_shard`.
    pub max_handshakes_per_shard: usize,
    /// A connection that has not finished its handshake this long after its
    /// first packet is closed.
    pub handshake_timeout: Duration,
    /// Connections (handshaking, open or closing) the whole runtime accepts;
    /// beyond it new ones are refused with CONNECTION_REFUSED.
    pub max_connections: usize,
    /// Connections one source may hold across every shard; beyond it new
    /// ones are refused. A source is an IPv4 address or an IPv6 /64.
    pub max_connections_per_source: usize,
    /// Handshakes one source may start per second, on average ...
    pub handshakes_per_source_per_second: u32,
    /// ... and in one burst; over the rate, Initials are dropped unanswered.
    pub handshake_burst_per_source: u32,
    /// Sources remembered at once. When full, sources that hold no
    /// connection are forgotten; if every one holds a connection, Initials
    /// from unknown sources are dropped until one leaves.
    pub max_tracked_sources: usize,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::Auto,
            retry_above_handshakes: 64,
            max_handshakes_per_shard: 512,
            handshake_timeout: Duration::from_secs(10),
            max_connections: usize::MAX,
            max_connections_per_source: 1000,
            handshakes_per_source_per_second: 100,
            handshake_burst_per_source: 200,
            max_tracked_sources: 65_536,
        }
    }
}

/// Everything a [`crate::Runtime`] needs to start.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// The one UDP address every shard binds with `SO_REUSEPORT`. Port 0 picks
    /// a free port once and binds every shard to it.
    pub listen: SocketAddr,
    /// Number of shards (threads). Must be between 1 and 255: the shard index
    /// rides in one byte of every connection id.
    pub shards: usize,
    /// Pin shard K to the K-th available core.
    pub pin_cores: bool,
    /// See [`Steering`].
    pub steering: Steering,
    /// Batch outgoing packets with UDP GSO where the kernel supports it.
    pub gso: bool,
    /// `SO_SNDBUF` / `SO_RCVBUF` asked of the kernel for each shard socket.
    pub socket_buffer_bytes: usize,
    /// How long graceful shutdown may take before connections are dropped.
    pub shutdown_timeout: Duration,
    /// At shutdown, how long the application has (after `shutdown_started`
    /// fires and new connections are refused) to say goodbye on its own
    /// protocol, e.g. a GOAWAY, before every connection is closed. Counts
    /// within `shutdown_timeout`.
    pub shutdown_grace: Duration,
    /// Application close code every connection gets at graceful shutdown.
    pub shutdown_close_code: u32,
    /// Transport limits.
    pub quic: QuicLimits,
    /// Admission control for new connections.
    pub admission: AdmissionLimits,
    /// Server TLS (certificate and ALPN list, newest protocol first). `None`
    /// runs a client-only runtime that accepts nothing.
    pub server_tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("listen", &self.listen)
            .field("shards", &self.shards)
            .field("pin_cores", &self.pin_cores)
            .field("steering", &self.steering)
            .field("gso", &self.gso)
            .field("socket_buffer_bytes", &self.socket_buffer_bytes)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("shutdown_close_code", &self.shutdown_close_code)
            .field("quic", &self.quic)
            .field("admission", &self.admission)
            .field("server_tls", &self.server_tls.is_some())
            .finish()
    }
}

impl RuntimeConfig {
    /// A config with defaults for everything but the address and TLS.
    pub fn new(listen: SocketAddr, shards: usize) -> Self {
        Self {
            listen,
            shards,
            pin_cores: false,
            steering: Steering::Bpf,
            gso: true,
            socket_buffer_bytes: 8 * 1024 * 1024,
            shutdown_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::ZERO,
            shutdown_close_code: 0,
            quic: QuicLimits::default(),
            admission: AdmissionLimits::default(),
            server_tls: None,
        }
    }
}
