//! The relay's own counters, one set per shard. Each shard's thread is the
//! only writer of its set (relaxed atomics, no contention); any thread may
//! read them, e.g. to render `/metrics`. The QUIC runtime keeps its own
//! per-shard counters (`qumo_shards::ShardStats`) beside these.
//!
//! Every bound a peer can hit has a counter here, so an operator can see
//! which limit refused what.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use qumo_shards::{RuntimeProbe, ShardStatsSnapshot};

use crate::lite::Version;

/// Whether a figure only grows (a Prometheus counter) or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One figure. A single writer (its shard), so a load and a store are
/// enough; readers on other threads see a recent value.
#[derive(Debug, Default)]
pub struct Figure(AtomicU64);

impl Figure {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    pub fn dec(&self) {
        self.sub(1);
    }

    pub fn sub(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).saturating_sub(n),
            Ordering::Relaxed,
        );
    }

    /// A gauge that mirrors a collection's size, set where it changes.
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

macro_rules! relay_stats {
    ($($(#[doc = $doc:literal])* $name:ident: $kind:ident,)*) => {
        /// One shard's relay counters.
        #[derive(Debug, Default)]
        pub struct RelayStats {
            $($(#[doc = $doc])* pub $name: Figure,)*
            /// Sessions by protocol version and transport.
            pub sessions_by_kind: SessionKinds,
            /// Bytes on the connections of sessions peers opened to this
            /// shard, by what the peer is.
            pub accepted_traffic: AcceptedTraffic,
        }

        impl RelayStats {
            /// Every figure: its name (without the `qumo_` prefix), help
            /// text, kind and value.
            pub fn visit(&self, mut f: impl FnMut(&'static str, &'static str, Kind, u64)) {
                $(f(stringify!($name), concat!($($doc),*).trim(), Kind::$kind, self.$name.get());)*
            }
        }
    };
}

relay_stats! {
    /// Sessions open on this shard.
    sessions_open: Gauge,
    /// Sessions refused because relay.max_sessions was reached.
    sessions_refused_max_sessions: Counter,
    /// Sessions closed for a protocol violation.
    sessions_protocol_violations: Counter,
    /// WebSocket connections closed for a message or frame over the QMux max_frame_size (16384 bytes), refused from its header.
    websocket_messages_too_large: Counter,
    /// WebSocket connections closed for a malformed WebSocket or QMux frame, a text message, or a QMux stream or flow-control violation.
    websocket_protocol_errors: Counter,
    /// Sessions that sent no SETUP (or, lite-04, opened nothing) in time.
    sessions_setup_timeouts: Counter,
    /// Session tasks that panicked and were contained (a relay bug).
    sessions_panicked: Counter,
    /// Sessions this shard dialled (relay.upstream_url, cluster.peers) open now; counted by kind too, exempt from relay.max_sessions.
    dialled_sessions_open: Gauge,
    /// Dials of relay.upstream_url that opened a session.
    upstream_dials_succeeded: Counter,
    /// Dials of relay.upstream_url that failed (lookup, certificate, handshake).
    upstream_dials_failed: Counter,
    /// Sessions refused (auth): no token, and the path is under no auth.public prefix.
    auth_refused_missing_token: Counter,
    /// Sessions refused (auth): a token that does not decode or verify, or any token without auth.key_file.
    auth_refused_invalid_token: Counter,
    /// Sessions refused (auth): a token past its exp.
    auth_refused_expired: Counter,
    /// Sessions refused (auth): a token whose root grants nothing at the dialled path.
    auth_refused_wrong_root: Counter,
    /// Sessions refused (auth): the SETUP role names a direction the token does not grant.
    auth_refused_role: Counter,
    /// Announcements ignored (auth): the broadcast is outside the token's put.
    auth_refused_publish: Counter,
    /// SUBSCRIBE and TRACK requests refused (auth): outside the token's get.
    auth_refused_subscribe: Counter,
    /// ANNOUNCE_REQUESTs answered with nothing (auth): no part of the prefix is in the token's get.
    auth_refused_announce_request: Counter,
    /// Sessions closed because their token's exp passed.
    auth_sessions_expired: Counter,
    /// Subscriptions open on this shard.
    subscriptions_open: Gauge,
    /// Media datagrams received from publishers for a subscription of ours.
    media_datagrams_received: Counter,
    /// Media datagrams sent to subscribers.
    media_datagrams_sent: Counter,
    /// Media datagrams dropped: for no subscription of ours, to a shard that
    /// lags, or to a subscriber whose path had no room (send buffer full,
    /// too large, fell DATAGRAM_RING behind).
    datagrams_dropped: Counter,
    /// PROBE streams being answered with bandwidth reports on this shard.
    probes_open: Gauge,
    /// PROBE streams reset NO_CAPACITY: the session already had one.
    probes_refused: Counter,
    /// FETCH streams being served on this shard.
    fetches_open: Gauge,
    /// FETCHes answered with every frame asked for.
    fetches_served: Counter,
    /// FETCHes answered NOT_FOUND: no such broadcast, or a group neither cached nor next.
    fetches_not_found: Counter,
    /// FETCHes of uncached groups forwarded to the track's publisher.
    upstream_fetches_opened: Counter,
    /// Forwarded FETCHes whose every frame asked for was served.
    upstream_fetches_served: Counter,
    /// Forwarded FETCHes that ended otherwise: refused by the publisher,
    /// its session gone, past `relay.fetch_timeout` or over the byte
    /// bound, or cancelled by the requester.
    upstream_fetches_failed: Counter,
    /// Subscriptions, TRACK requests or FETCHes refused by max_subscriptions_per_session.
    subscriptions_refused_limit: Counter,
    /// Announce prefixes refused as too long.
    announce_prefix_refused: Counter,
    /// Groups reset because a frame exceeded relay.max_frame_size.
    frames_too_large: Counter,
    /// Groups reset because they exceeded relay.max_frames_per_group.
    groups_too_many_frames: Counter,
    /// IETF subgroup streams stopped because no SUBSCRIBE_OK named their
    /// track alias within the wait for one.
    ietf_streams_unknown_alias: Counter,
    /// IETF subgroup streams stopped because an object's extension headers exceeded the relay's bound (4 KiB).
    ietf_extensions_too_large: Counter,
    /// Sessions closed for announcing more than relay.max_broadcasts_per_session.
    broadcasts_refused_limit: Counter,
    /// ANNOUNCE_REQUESTs refused by relay.max_announce_requests_per_session.
    announce_requests_refused_limit: Counter,
    /// ANNOUNCE_REQUEST streams reset because their peer fell
    /// relay.max_announce_backlog changes behind.
    announce_backlog_overflows: Counter,
    /// Frames that waited for relay.max_buffered_frame_bytes_per_session.
    frames_waited_for_buffer: Counter,
    /// Subscriptions whose max_latency was cut to relay.max_latency_ceiling.
    latency_requests_capped: Counter,
    /// Times a publisher's group stream paused because a shard's inbox held
    /// more than relay.max_mesh_backlog.
    media_paused_for_mesh: Counter,
    /// Bytes of messages waiting in this shard's inbox (frames by payload).
    mesh_backlog_bytes: Gauge,
    /// Messages waiting in this shard's inbox (its depth).
    mesh_inbox_messages: Gauge,
    /// Groups this owner did not send to a shard whose inbox held more than
    /// half of relay.max_mesh_backlog (reset TOO_FAR_BEHIND there instead).
    mesh_groups_dropped: Counter,
    /// Groups this owner stopped for outgrowing relay.max_cached_bytes_per_track.
    groups_stopped_too_large: Counter,
    /// Session states in memory: open, or ended with tasks still finishing. Staying above sessions_open after peers left means a task outlived its session.
    session_states_alive: Gauge,
    /// Announce listeners (peers' ANNOUNCE_REQUEST streams) open on this shard.
    announce_listeners_open: Gauge,
    /// Broadcasts in this shard's announce table (every shard holds the whole table).
    broadcasts_announced: Gauge,
    /// Track hubs (upstream fan-out points) this shard owns.
    hubs_open: Gauge,
    /// Track replicas this shard's subscribers read.
    track_replicas_open: Gauge,
    /// This shard's replicas attached to a hub on another shard.
    hub_attachments_open: Gauge,
    /// Bytes the group caches of this shard's tracks hold (payload plus per-frame overhead), sampled once a second.
    cache_bytes: Gauge,
    /// Upstream subscriptions this shard's sessions hold to their publishers.
    upstream_subscriptions_open: Gauge,
    /// Groups written whole to a subscriber (one per group and subscriber).
    groups_delivered: Counter,
    /// Groups a subscriber fell behind on: reset TOO_FAR_BEHIND because a
    /// newer group had waited longer than its max latency.
    groups_too_far_behind: Counter,
}

/// How a session reached the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Raw QUIC (`moql://`, an ALPN per version).
    Quic,
    /// WebTransport over HTTP/3 (browsers).
    WebTransport,
    /// QMux over WebSocket (browsers without WebTransport).
    WebSocket,
}

impl TransportKind {
    pub const ALL: [TransportKind; 3] = [
        TransportKind::Quic,
        TransportKind::WebTransport,
        TransportKind::WebSocket,
    ];

    /// The `transport` label value.
    pub fn label(self) -> &'static str {
        match self {
            TransportKind::Quic => "quic",
            TransportKind::WebTransport => "webtransport",
            TransportKind::WebSocket => "websocket",
        }
    }

    /// The kind whose label is `label` (a session transport's `kind()`).
    pub fn of_label(label: &str) -> Option<TransportKind> {
        TransportKind::ALL.into_iter().find(|t| t.label() == label)
    }
}

const VERSIONS: usize = Version::ALL.len();
const TRANSPORTS: usize = TransportKind::ALL.len();

/// Sessions by version and transport, counted from the moment the
/// transport is up (QUIC handshake done, or WebTransport CONNECT accepted)
/// until the session's task ends: a fixed table of figures, so counting
/// one is an index, not a lookup or an allocation.
#[derive(Debug, Default)]
pub struct SessionKinds {
    started: [[Figure; TRANSPORTS]; VERSIONS],
    open: [[Figure; TRANSPORTS]; VERSIONS],
}

/// One row of [`SessionKinds::visit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKindCount {
    pub version: Version,
    pub transport: TransportKind,
    /// Sessions of this kind started since the shard began.
    pub started: u64,
    /// Sessions of this kind open now.
    pub open: u64,
}

impl SessionKinds {
    fn slot(version: Version, transport: TransportKind) -> (usize, usize) {
        let v = Version::ALL.iter().position(|v| *v == version).unwrap_or(0);
        let t = TransportKind::ALL
            .iter()
            .position(|t| *t == transport)
            .unwrap_or(0);
        (v, t)
    }

    /// A session of this kind began.
    pub fn opened(&self, version: Version, transport: TransportKind) {
        let (v, t) = Self::slot(version, transport);
        self.started[v][t].inc();
        self.open[v][t].inc();
    }

    /// A session of this kind ended.
    pub fn closed(&self, version: Version, transport: TransportKind) {
        let (v, t) = Self::slot(version, transport);
        self.open[v][t].dec();
    }

    /// Every kind, newest version first.
    pub fn visit(&self, mut f: impl FnMut(SessionKindCount)) {
        for (v, version) in Version::ALL.into_iter().enumerate() {
            for (t, transport) in TransportKind::ALL.into_iter().enumerate() {
                f(SessionKindCount {
                    version,
                    transport,
                    started: self.started[v][t].get(),
                    open: self.open[v][t].get(),
                });
            }
        }
    }
}

/// A session counted among its shard's sessions of its version and
/// transport while it lives (dropped on every way out, a panic's unwinding
/// included).
pub struct KindCount {
    stats: Arc<RelayStats>,
    version: Version,
    transport: TransportKind,
}

impl KindCount {
    pub fn new(stats: Arc<RelayStats>, version: Version, transport: TransportKind) -> Self {
        stats.sessions_by_kind.opened(version, transport);
        Self {
            stats,
            version,
            transport,
        }
    }
}

impl Drop for KindCount {
    fn drop(&mut self) {
        self.stats
            .sessions_by_kind
            .closed(self.version, self.transport);
    }
}

/// UDP bytes one way and the other on a session's connection: what the
/// QUIC stack sent and received, headers, acknowledgements and
/// retransmissions included (what the link carries, not only media).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub sent: u64,
    pub received: u64,
}

impl Traffic {
    /// What was added since `earlier` (nothing where a figure went back).
    pub fn since(self, earlier: Traffic) -> Traffic {
        Traffic {
            sent: self.sent.saturating_sub(earlier.sent),
            received: self.received.saturating_sub(earlier.received),
        }
    }
}

/// Bytes on the link to one relay this one dials (`relay.upstream_url`, a
/// `cluster.peers` entry), over all its sessions so far. Written only by
/// the shard that dials it.
#[derive(Debug, Default)]
pub struct LinkTraffic {
    pub sent: Figure,
    pub received: Figure,
}

impl LinkTraffic {
    pub fn add(&self, traffic: Traffic) {
        self.sent.add(traffic.sent);
        self.received.add(traffic.received);
    }
}

/// Where a session's bytes are counted.
#[derive(Debug, Clone)]
pub enum TrafficSink {
    /// A session a peer opened: its shard's figures, by peer kind.
    Accepted,
    /// A session this relay dialled: that relay's link.
    Link(Arc<LinkTraffic>),
}

/// What a peer that dialled this relay is, for counting its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// A publisher or subscriber.
    Client,
    /// Another relay: its token grants cluster rights (a relay with
    /// keys), or it passed on an announcement that came through another
    /// node (an open relay).
    Relay,
}

impl PeerKind {
    pub const ALL: [PeerKind; 2] = [PeerKind::Client, PeerKind::Relay];

    /// The `kind` label value.
    pub fn label(self) -> &'static str {
        match self {
            PeerKind::Client => "client",
            PeerKind::Relay => "relay",
        }
    }
}

/// Bytes on accepted sessions' connections by [`PeerKind`] and
/// [`TransportKind`]: bounded labels, however many peers come and go.
#[derive(Debug, Default)]
pub struct AcceptedTraffic {
    by_kind: [[LinkTraffic; TRANSPORTS]; PeerKind::ALL.len()],
}

impl AcceptedTraffic {
    pub fn add(&self, kind: PeerKind, transport: TransportKind, traffic: Traffic) {
        self.by_kind[kind as usize][transport as usize].add(traffic);
    }

    /// Each kind's and transport's bytes sent and received.
    pub fn visit(&self, mut f: impl FnMut(PeerKind, TransportKind, Traffic)) {
        for kind in PeerKind::ALL {
            for transport in TransportKind::ALL {
                let figures = &self.by_kind[kind as usize][transport as usize];
                f(
                    kind,
                    transport,
                    Traffic {
                        sent: figures.sent.get(),
                        received: figures.received.get(),
                    },
                );
            }
        }
    }
}

/// A dialled relay's link figures and the labels they are shown with.
#[derive(Debug, Clone)]
pub struct Link {
    /// The peer's URL without its path or token (`http://10.0.0.2:4443`).
    pub peer: String,
    /// `upstream` or `cluster`.
    pub role: &'static str,
    pub traffic: Arc<LinkTraffic>,
}

/// Every shard's [`RelayStats`], registered as the shards start, the
/// links to dialled relays, and the QUIC runtime's own per-shard figures
/// once it runs.
#[derive(Debug, Default)]
pub struct Metrics {
    shards: Mutex<Vec<(usize, Arc<RelayStats>)>>,
    links: Mutex<Vec<Link>>,
    runtime: Mutex<Option<RuntimeProbe>>,
}

impl Metrics {
    /// A fresh set of counters for shard `index`.
    pub fn register(&self, index: usize) -> Arc<RelayStats> {
        let stats = Arc::new(RelayStats::default());
        let mut shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        shards.push((index, stats.clone()));
        shards.sort_by_key(|(i, _)| *i);
        stats
    }

    /// Each shard's counters, by shard index.
    pub fn shards(&self) -> Vec<(usize, Arc<RelayStats>)> {
        self.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Show `link`'s figures from now on (once per dialled relay, at start).
    pub fn register_link(&self, link: Link) {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(link);
    }

    /// The dialled relays' links, in configuration order.
    pub fn links(&self) -> Vec<Link> {
        self.links.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keep the runtime's figures (`Runtime::probe`, shard K at index K)
    /// for readers such as `/metrics`.
    pub fn attach_runtime(&self, probe: RuntimeProbe) {
        *self.runtime.lock().unwrap_or_else(|e| e.into_inner()) = Some(probe);
    }

    /// The runtime's counters now, by shard index; empty before the runtime
    /// started.
    pub fn runtime(&self) -> Vec<ShardStatsSnapshot> {
        self.probe()
            .map(|p| p.stats.iter().map(|s| s.snapshot()).collect())
            .unwrap_or_default()
    }

    /// The runtime's probe (counters, mesh wake-ups, socket inodes), once
    /// it runs.
    pub fn probe(&self) -> Option<RuntimeProbe> {
        self.runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_visited_with_their_help_and_kind() {
        let stats = RelayStats::default();
        stats.sessions_open.inc();
        stats.sessions_open.inc();
        stats.sessions_open.dec();
        stats.frames_too_large.add(3);
        let mut seen = Vec::new();
        stats.visit(|name, help, kind, value| seen.push((name, help, kind, value)));
        assert!(seen.contains(&(
            "sessions_open",
            "Sessions open on this shard.",
            Kind::Gauge,
            1
        )));
        assert!(seen
            .iter()
            .any(|s| s.0 == "frames_too_large" && s.3 == 3 && s.2 == Kind::Counter));
    }

    #[test]
    fn a_gauge_set_from_a_table_size_replaces_its_value() {
        let stats = RelayStats::default();
        stats.hubs_open.inc();
        stats.hubs_open.set(5);
        stats.hubs_open.set(2);
        assert_eq!(stats.hubs_open.get(), 2);
    }

    #[test]
    fn sessions_are_counted_by_version_and_transport() {
        let kinds = SessionKinds::default();
        kinds.opened(Version::Lite05, TransportKind::WebTransport);
        kinds.opened(Version::Lite05, TransportKind::WebTransport);
        kinds.opened(Version::Lite04, TransportKind::Quic);
        kinds.closed(Version::Lite05, TransportKind::WebTransport);
        let mut rows = Vec::new();
        kinds.visit(|row| rows.push(row));
        assert_eq!(rows.len(), Version::ALL.len() * TransportKind::ALL.len());
        let find = |version, transport| {
            *rows
                .iter()
                .find(|r| r.version == version && r.transport == transport)
                .unwrap()
        };
        let wt05 = find(Version::Lite05, TransportKind::WebTransport);
        assert_eq!((wt05.started, wt05.open), (2, 1));
        let quic04 = find(Version::Lite04, TransportKind::Quic);
        assert_eq!((quic04.started, quic04.open), (1, 1));
        let quic05 = find(Version::Lite05, TransportKind::Quic);
        assert_eq!((quic05.started, quic05.open), (0, 0));
    }

    #[test]
    fn accepted_traffic_is_kept_apart_by_kind_and_transport() {
        use TransportKind::{Quic, WebSocket, WebTransport};
        let traffic = AcceptedTraffic::default();
        let bytes = |sent, received| Traffic { sent, received };
        traffic.add(PeerKind::Client, Quic, bytes(10, 1));
        traffic.add(PeerKind::Relay, Quic, bytes(100, 7));
        traffic.add(PeerKind::Client, Quic, bytes(5, 2));
        traffic.add(PeerKind::Client, WebSocket, bytes(40, 4));
        let mut rows = Vec::new();
        traffic.visit(|kind, transport, t| rows.push((kind, transport, t)));
        assert_eq!(
            rows,
            [
                (PeerKind::Client, Quic, bytes(15, 3)),
                (PeerKind::Client, WebTransport, bytes(0, 0)),
                (PeerKind::Client, WebSocket, bytes(40, 4)),
                (PeerKind::Relay, Quic, bytes(100, 7)),
                (PeerKind::Relay, WebTransport, bytes(0, 0)),
                (PeerKind::Relay, WebSocket, bytes(0, 0)),
            ]
        );
        assert_eq!(TransportKind::of_label("websocket"), Some(WebSocket));
        assert_eq!(TransportKind::of_label("tcp"), None);
    }

    #[test]
    fn traffic_since_never_goes_back() {
        let now = Traffic {
            sent: 10,
            received: 3,
        };
        let earlier = Traffic {
            sent: 4,
            received: 5,
        };
        assert_eq!(
            now.since(earlier),
            Traffic {
                sent: 6,
                received: 0
            }
        );
    }

    #[test]
    fn shards_are_listed_in_index_order() {
        let metrics = Metrics::default();
        metrics.register(1).sessions_open.inc();
        metrics.register(0);
        let shards = metrics.shards();
        assert_eq!(shards.iter().map(|s| s.0).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(shards[1].1.sessions_open.get(), 1);
    }
}
