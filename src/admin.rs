//! The operators' HTTP listener (`admin.address`): `GET /metrics` in the
//! Prometheus (OpenMetrics) text format, `GET /health` (or `/healthz`: 200
//! while serving, 503 once SIGTERM or SIGINT began a graceful shutdown) and
//! `GET /announced[/prefix]` (live broadcasts as JSON, see
//! [`crate::announced`]).
//!
//! `/metrics` is rendered by `prometheus-client` from the counters the shards
//! already keep: each scrape reads every shard's [`RelayStats`] and the QUIC
//! runtime's `ShardStats` (relaxed atomic loads), labelled `shard="K"`, and
//! each HTTP listener's [`HttpStats`], labelled `listener="NAME"`. The shards
//! pay nothing for it: no lock, no allocation, no message. What only the
//! kernel knows (the `process_*` figures, each socket's receive drops) is
//! read from `/proc` at the scrape, on the listener's thread.
//!
//! The listener runs on its own thread with the same bounds as the
//! certificate endpoint (`http.*`, see [`crate::http`]).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use qumo_shards::{RuntimeProbe, ShardStatsSnapshot, SEND_BATCH_BOUNDS};

use crate::announced::{AnnouncedError, AnnouncedSource};
use crate::http::{plain, Handler, HttpLimits, HttpResponse, HttpServer, HttpStats};
use crate::metrics::{Kind, Link, Metrics, RelayStats, Traffic};

/// Where `/metrics` is served.
pub const METRICS_PATH: &str = "/metrics";
/// 200 while the relay serves, 503 once a shutdown began, so that a load
/// balancer drains it (`/health` is the same, for those that expect that
/// spelling).
pub const HEALTH_PATHS: [&str; 2] = ["/healthz", "/health"];
/// Live broadcasts as JSON: `/announced` for all, `/announced/PREFIX`
/// for those under a path prefix.
pub const ANNOUNCED_PATH: &str = "/announced";
/// How long `/announced` waits for a shard's answer. The listener's thread
/// waits meanwhile, so this stays short; a shard answers in microseconds
/// unless it is stuck.
const ANNOUNCED_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// The exposition format `prometheus-client` writes.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Prefix of every family: `qumo_sessions_open`, `qumo_http_requests_total`.
const PREFIX: &str = "qumo";

/// Reads the relay's counters at each scrape.
#[derive(Debug)]
pub struct QumoCollector {
    metrics: Arc<Metrics>,
    http: Vec<(&'static str, Arc<HttpStats>)>,
}

impl QumoCollector {
    /// Relay and runtime figures from `metrics`, and each named HTTP
    /// listener's.
    pub fn new(metrics: Arc<Metrics>, http: Vec<(&'static str, Arc<HttpStats>)>) -> Self {
        Self { metrics, http }
    }
}

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FamilyType {
    Counter,
    Gauge,
    Histogram,
}

impl From<Kind> for FamilyType {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Counter => FamilyType::Counter,
            Kind::Gauge => FamilyType::Gauge,
        }
    }
}

/// One sample's value.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(u64),
    Float(f64),
    /// Observations per bucket (not cumulative) by upper bound, the last
    /// `f64::MAX` for `+Inf`.
    Histogram {
        sum: f64,
        count: u64,
        buckets: Vec<(f64, u64)>,
    },
}

/// One sample: its labels and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    labels: Vec<(&'static str, String)>,
    value: Value,
}

/// One family: name, help, type, and its samples.
struct Family {
    name: String,
    help: String,
    kind: FamilyType,
    samples: Vec<Sample>,
}

impl Family {
    fn new(name: impl Into<String>, help: &str, kind: impl Into<FamilyType>) -> Self {
        Self {
            name: name.into(),
            help: one_line(help),
            kind: kind.into(),
            samples: Vec::new(),
        }
    }

    /// Add a sample labelled `key="label"`.
    fn push(&mut self, key: &'static str, label: impl ToString, value: Value) {
        self.samples.push(Sample {
            labels: vec![(key, label.to_string())],
            value,
        });
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let metric_type = match self.kind {
            FamilyType::Counter => MetricType::Counter,
            FamilyType::Gauge => MetricType::Gauge,
            FamilyType::Histogram => MetricType::Histogram,
        };
        let mut metric = encoder.encode_descriptor(&self.name, &self.help, None, metric_type)?;
        for sample in &self.samples {
            // Unlabelled samples are written bare: `name 1`, not `name{} 1`.
            if sample.labels.is_empty() {
                encode_value(&mut metric, &sample.value, self.kind)?;
                continue;
            }
            let labels: Vec<(&str, &str)> = sample
                .labels
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect();
            encode_value(
                &mut metric.encode_family(&labels)?,
                &sample.value,
                self.kind,
            )?;
        }
        Ok(())
    }
}

fn encode_value(encoder: &mut MetricEncoder, value: &Value, kind: FamilyType) -> fmt::Result {
    match (value, kind) {
        (Value::Int(v), FamilyType::Counter) => {
            encoder.encode_counter::<NoLabelSet, _, u64>(v, None)
        }
        (Value::Float(v), FamilyType::Counter) => {
            encoder.encode_counter::<NoLabelSet, _, f64>(v, None)
        }
        (Value::Int(v), _) => encoder.encode_gauge(v),
        (Value::Float(v), _) => encoder.encode_gauge(v),
        (
            Value::Histogram {
                sum,
                count,
                buckets,
            },
            _,
        ) => encoder.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None),
    }
}

/// Help text on one line with single spaces (doc comments wrap).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl QumoCollector {
    /// Every family, in a stable order: relay figures, sessions by kind,
    /// runtime counters and what the kernel says of the shards' sockets,
    /// HTTP listeners.
    fn families(&self) -> Vec<Family> {
        let mut families = Vec::new();
        let relay = self.metrics.shards();
        RelayStats::default()
            .visit(|name, help, kind, _| families.push(Family::new(name, help, kind)));
        for (shard, stats) in &relay {
            let mut i = 0;
            stats.visit(|_, _, _, value| {
                families[i].push("shard", shard, Value::Int(value));
                i += 1;
            });
        }
        families.extend(session_kind_families(&relay));
        families.extend(traffic_families(&relay, &self.metrics.links()));
        families.extend(runtime_families(self.metrics.probe().as_ref()));

        let start = families.len();
        HttpStats::default().visit(|name, help, kind, _| {
            families.push(Family::new(format!("http_{name}"), help, kind))
        });
        for (listener, stats) in &self.http {
            let mut i = start;
            stats.visit(|_, _, _, value| {
                families[i].push("listener", listener, Value::Int(value));
                i += 1;
            });
        }
        families
    }
}

/// Sessions started and open, by shard, protocol version and transport.
fn session_kind_families(relay: &[(usize, Arc<RelayStats>)]) -> [Family; 2] {
    let mut started = Family::new(
        "sessions_started",
        "Sessions begun (transport up; SETUP and token not yet checked), by protocol
         version and transport.",
        FamilyType::Counter,
    );
    let mut open = Family::new(
        "sessions_by_version",
        "Sessions running now by protocol version and transport (including
         those still in SETUP, which sessions_open leaves out).",
        FamilyType::Gauge,
    );
    for (shard, stats) in relay {
        stats.sessions_by_kind.visit(|row| {
            let labels = vec![
                ("shard", shard.to_string()),
                ("version", row.version.alpn().to_string()),
                ("transport", row.transport.label().to_string()),
            ];
            started.samples.push(Sample {
                labels: labels.clone(),
                value: Value::Int(row.started),
            });
            open.samples.push(Sample {
                labels,
                value: Value::Int(row.open),
            });
        });
    }
    [started, open]
}

/// UDP bytes on the links to dialled relays (by peer URL and role) and on
/// accepted sessions (by shard and peer kind).
fn traffic_families(relay: &[(usize, Arc<RelayStats>)], links: &[Link]) -> [Family; 4] {
    let mut peer_sent = Family::new(
        "peer_bytes_sent",
        "UDP bytes sent to a relay this one dials (relay.upstream_url, cluster.peers),
         over all its sessions.",
        FamilyType::Counter,
    );
    let mut peer_received = Family::new(
        "peer_bytes_received",
        "UDP bytes received from a relay this one dials, over all its sessions.",
        FamilyType::Counter,
    );
    // The same URL listed twice is one link to the operator.
    let mut by_peer: Vec<(&str, &str, Traffic)> = Vec::new();
    for link in links {
        let bytes = Traffic {
            sent: link.traffic.sent.get(),
            received: link.traffic.received.get(),
        };
        match by_peer
            .iter_mut()
            .find(|(peer, role, _)| *peer == link.peer && *role == link.role)
        {
            Some((_, _, total)) => {
                total.sent += bytes.sent;
                total.received += bytes.received;
            }
            None => by_peer.push((&link.peer, link.role, bytes)),
        }
    }
    for (peer, role, bytes) in by_peer {
        let labels = vec![("peer", peer.to_string()), ("role", role.to_string())];
        peer_sent.samples.push(Sample {
            labels: labels.clone(),
            value: Value::Int(bytes.sent),
        });
        peer_received.samples.push(Sample {
            labels,
            value: Value::Int(bytes.received),
        });
    }
    let mut accepted_sent = Family::new(
        "accepted_bytes_sent",
        "Bytes sent on sessions peers opened (UDP for quic and webtransport; TCP for
         websocket, its WebSocket framing and TLS included), by what the peer is
         (relay: a cluster token on a relay with keys; on an open relay, a peer that
         passed on an announcement that came through another node) and transport.",
        FamilyType::Counter,
    );
    let mut accepted_received = Family::new(
        "accepted_bytes_received",
        "Bytes received on sessions peers opened, by peer kind and transport.",
        FamilyType::Counter,
    );
    for (shard, stats) in relay {
        stats.accepted_traffic.visit(|kind, transport, bytes| {
            let labels = vec![
                ("shard", shard.to_string()),
                ("kind", kind.label().to_string()),
                ("transport", transport.label().to_string()),
            ];
            accepted_sent.samples.push(Sample {
                labels: labels.clone(),
                value: Value::Int(bytes.sent),
            });
            accepted_received.samples.push(Sample {
                labels,
                value: Value::Int(bytes.received),
            });
        });
    }
    [peer_sent, peer_received, accepted_sent, accepted_received]
}

/// The QUIC runtime's counters, its mesh wake-ups, its GSO batches and the
/// kernel's drops on each shard's socket; only the descriptors before the
/// runtime runs.
fn runtime_families(probe: Option<&RuntimeProbe>) -> Vec<Family> {
    let mut families = Vec::new();
    ShardStatsSnapshot::default().visit(|name, help, gauge, _| {
        let kind = if gauge { Kind::Gauge } else { Kind::Counter };
        families.push(Family::new(name, help, kind))
    });
    let mut wakeups = Family::new(
        "mesh_wakeups",
        "Times another thread had to wake this shard for messages in its
         inbox; far fewer than mesh_messages_received while batching works.",
        FamilyType::Counter,
    );
    let mut drops = Family::new(
        "udp_receive_drops",
        "Datagrams the kernel dropped on this shard's socket (full receive
         buffer), from /proc/net/udp at each scrape.",
        FamilyType::Counter,
    );
    let mut batches = Family::new(
        "send_batch_datagrams",
        "Datagrams per send call: the GSO batch size (sum = datagrams_sent,
         count = send_calls).",
        FamilyType::Histogram,
    );
    let Some(probe) = probe else {
        families.extend([wakeups, drops, batches]);
        return families;
    };
    let socket_drops = crate::process::udp_drops(&probe.socket_inodes);
    for (shard, stats) in probe.stats.iter().enumerate() {
        let snapshot = stats.snapshot();
        let mut i = 0;
        snapshot.visit(|_, _, _, value| {
            families[i].push("shard", shard, Value::Int(value));
            i += 1;
        });
        wakeups.push("shard", shard, Value::Int(probe.mesh_wakeups.get(shard)));
        if let Some(Some(dropped)) = socket_drops.get(shard) {
            drops.push("shard", shard, Value::Int(*dropped));
        }
        let counts = stats.send_batches.buckets();
        let bounds = SEND_BATCH_BOUNDS.iter().map(|b| *b as f64);
        let buckets = bounds.chain([f64::MAX]).zip(counts).collect();
        batches.push(
            "shard",
            shard,
            Value::Histogram {
                sum: snapshot.datagrams_sent as f64,
                count: counts.iter().sum(),
                buckets,
            },
        );
    }
    families.extend([wakeups, drops, batches]);
    families
}

impl Collector for QumoCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for family in self.families() {
            family.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// The standard `process_*` figures, unprefixed, as every Prometheus client
/// library names them (dashboards and the load test read them by name).
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl ProcessCollector {
    fn families(&self) -> Vec<Family> {
        let Some(process) = crate::process::read() else {
            return Vec::new();
        };
        let one = |name: &str, help: &str, kind: FamilyType, value: Value| {
            let mut family = Family::new(name, help, kind);
            family.samples.push(Sample {
                labels: Vec::new(),
                value,
            });
            family
        };
        use FamilyType::{Counter, Gauge};
        vec![
            one(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                Counter,
                Value::Float(process.cpu_seconds),
            ),
            one(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                Gauge,
                Value::Int(process.resident_memory_bytes),
            ),
            one(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                Gauge,
                Value::Int(process.virtual_memory_bytes),
            ),
            one(
                "process_open_fds",
                "Number of open file descriptors.",
                Gauge,
                Value::Int(process.open_fds),
            ),
            one(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                Gauge,
                Value::Int(process.max_fds),
            ),
            one(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                Gauge,
                Value::Float(process.start_time_seconds),
            ),
            one(
                "process_threads",
                "Number of OS threads in the process.",
                Gauge,
                Value::Int(process.threads),
            ),
        ]
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        for family in self.families() {
            family.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// The `/metrics` text for `collector`.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// A registry holding `collector` under the `qumo_` prefix and the
/// standard process figures without one.
pub fn registry(collector: QumoCollector) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector));
    registry
        .sub_registry_with_prefix(PREFIX)
        .register_collector(Box::new(collector));
    registry
}

/// What the admin listener answers from.
pub struct Admin {
    registry: Registry,
    announced: Arc<AnnouncedSource>,
}

impl Admin {
    pub fn new(registry: Registry, announced: Arc<AnnouncedSource>) -> Self {
        Self {
            registry,
            announced,
        }
    }

    /// The answer to `method path`; `stopping` once a shutdown began.
    fn answer(&self, stopping: bool, method: &Method, path: &str) -> HttpResponse {
        if !matches!(*method, Method::GET | Method::HEAD) {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        if path == METRICS_PATH {
            return with_type(
                plain(StatusCode::OK, render(&self.registry)),
                METRICS_CONTENT_TYPE,
            );
        }
        if HEALTH_PATHS.contains(&path) {
            return match stopping {
                false => plain(StatusCode::OK, "ok\n"),
                true => plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
            };
        }
        if let Some(prefix) = announced_prefix(path) {
            return self.announced(&prefix);
        }
        plain(StatusCode::NOT_FOUND, "not found\n")
    }

    fn announced(&self, prefix: &str) -> HttpResponse {
        match self.announced.list(prefix, ANNOUNCED_WAIT) {
            Ok(list) => match serde_json::to_string(&list) {
                Ok(json) => with_type(plain(StatusCode::OK, json + "\n"), "application/json"),
                Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            },
            Err(e @ (AnnouncedError::NotRunning | AnnouncedError::Stopped)) => {
                plain(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))
            }
            Err(e @ AnnouncedError::TimedOut(_)) => {
                tracing::debug!(error = %e, "/announced unanswered");
                plain(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))
            }
        }
    }
}

/// The prefix `/announced[/prefix]` asks for, normalised; `None` for any
/// other path. The path is taken as sent (no percent-decoding): broadcast
/// paths are plain text, and a listing of everything needs no prefix.
fn announced_prefix(path: &str) -> Option<String> {
    let rest = path.strip_prefix(ANNOUNCED_PATH)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None;
    }
    Some(crate::origin::normalize(rest))
}

fn with_type(mut response: HttpResponse, content_type: &'static str) -> HttpResponse {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Serve `/metrics`, `/health`, `/healthz` and `/announced` on TCP `addr`,
/// reading `metrics`, the named HTTP listeners' counters (this listener's
/// own are added under `admin`) and `announced`; the health paths answer
/// 503 once `stopping` is set.
pub fn serve(
    addr: SocketAddr,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    announced: Arc<AnnouncedSource>,
    mut http: Vec<(&'static str, Arc<HttpStats>)>,
    stopping: Arc<AtomicBool>,
) -> std::io::Result<HttpServer> {
    let stats = Arc::new(HttpStats::default());
    http.push(("admin", stats.clone()));
    let admin = Admin::new(registry(QumoCollector::new(metrics, http)), announced);
    let handler: Handler = Arc::new(move |request: &mut Request<Incoming>| {
        let stopping = stopping.load(Ordering::Relaxed);
        admin.answer(stopping, request.method(), request.uri().path())
    });
    let server = HttpServer::start("admin", addr, limits, stats, handler)?;
    tracing::info!(
        address = %server.local_addr(),
        "admin HTTP listening (/metrics, /health, /healthz, /announced)"
    );
    Ok(server)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::AtomicU64;

    use qumo_shards::ShardStats;

    use super::*;
    use crate::announced::{AnnouncedBroadcast, AnnouncedList};
    use crate::lite::Version;
    use crate::metrics::TransportKind;

    fn collector() -> (Arc<Metrics>, Arc<HttpStats>, QumoCollector) {
        let metrics = Arc::new(Metrics::default());
        let http = Arc::new(HttpStats::default());
        let collector = QumoCollector::new(metrics.clone(), vec![("certificate", http.clone())]);
        (metrics, http, collector)
    }

    /// A probe of `shards` shards with no socket to look up.
    fn probe(stats: Vec<Arc<ShardStats>>) -> RuntimeProbe {
        let (mesh, _receivers) = qumo_shards::mesh::mesh::<()>(stats.len());
        RuntimeProbe {
            socket_inodes: vec![None; stats.len()],
            mesh_wakeups: mesh.wakeup_counts(),
            stats,
        }
    }

    fn bump(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn assert_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(text.lines().any(|l| l == *line), "{line} in\n{text}");
        }
    }

    #[test]
    fn family_names_never_collide() {
        let (metrics, _, collector) = collector();
        metrics.attach_runtime(probe(vec![Arc::default()]));
        let mut seen = HashSet::new();
        let process = ProcessCollector.families();
        assert!(!process.is_empty());
        for family in collector.families().into_iter().chain(process) {
            assert!(seen.insert(family.name.clone()), "{} twice", family.name);
        }
    }

    #[test]
    fn every_figure_is_rendered_per_shard_with_its_type() {
        let (metrics, http, collector) = collector();
        metrics.register(0).sessions_open.add(2);
        metrics.register(1).frames_too_large.add(5);
        metrics.attach_runtime(probe(vec![Arc::default(), Arc::default()]));
        bump(&http.requests, 7);
        let text = render(&registry(collector));
        assert_lines(
            &text,
            &[
                "# TYPE qumo_sessions_open gauge",
                "qumo_sessions_open{shard=\"0\"} 2",
                "qumo_sessions_open{shard=\"1\"} 0",
                "# TYPE qumo_frames_too_large counter",
                "qumo_frames_too_large_total{shard=\"1\"} 5",
                "# TYPE qumo_connections_open gauge",
                "qumo_connections_accepted_total{shard=\"1\"} 0",
                "qumo_mesh_wakeups_total{shard=\"1\"} 0",
                "qumo_http_requests_total{listener=\"certificate\"} 7",
                "# EOF",
            ],
        );
    }

    #[test]
    fn link_and_accepted_bytes_carry_peer_role_kind_and_transport_labels() {
        use crate::metrics::{LinkTraffic, PeerKind, TransportKind};
        let (metrics, _, collector) = collector();
        let link = |peer: &str, role, sent, received| {
            let traffic = Arc::new(LinkTraffic::default());
            traffic.add(Traffic { sent, received });
            metrics.register_link(Link {
                peer: peer.into(),
                role,
                traffic,
            });
        };
        link("http://10.0.0.1:4443", "upstream", 10, 1000);
        link("http://10.0.0.2:4443", "cluster", 20, 2000);
        // Listed twice: one row, the sum.
        link("http://10.0.0.2:4443", "cluster", 1, 1);
        let stats = metrics.register(0);
        let bytes = |sent, received| Traffic { sent, received };
        stats
            .accepted_traffic
            .add(PeerKind::Client, TransportKind::Quic, bytes(5000, 50));
        stats
            .accepted_traffic
            .add(PeerKind::Client, TransportKind::WebSocket, bytes(70, 7));
        stats
            .accepted_traffic
            .add(PeerKind::Relay, TransportKind::Quic, bytes(300, 30));
        let text = render(&registry(collector));
        assert_lines(
            &text,
            &[
                "# TYPE qumo_peer_bytes_sent counter",
                "qumo_peer_bytes_sent_total{peer=\"http://10.0.0.1:4443\",role=\"upstream\"} 10",
                "qumo_peer_bytes_received_total{peer=\"http://10.0.0.1:4443\",role=\"upstream\"} 1000",
                "qumo_peer_bytes_sent_total{peer=\"http://10.0.0.2:4443\",role=\"cluster\"} 21",
                "qumo_peer_bytes_received_total{peer=\"http://10.0.0.2:4443\",role=\"cluster\"} 2001",
                "qumo_accepted_bytes_sent_total{shard=\"0\",kind=\"client\",transport=\"quic\"} 5000",
                "qumo_accepted_bytes_received_total{shard=\"0\",kind=\"client\",transport=\"quic\"} 50",
                "qumo_accepted_bytes_sent_total{shard=\"0\",kind=\"client\",transport=\"websocket\"} 70",
                "qumo_accepted_bytes_received_total{shard=\"0\",kind=\"client\",transport=\"websocket\"} 7",
                "qumo_accepted_bytes_sent_total{shard=\"0\",kind=\"relay\",transport=\"quic\"} 300",
            ],
        );
        assert_eq!(text.matches("peer=\"http://10.0.0.2:4443\"").count(), 2);
    }

    #[test]
    fn sessions_carry_version_and_transport_labels() {
        let (metrics, _, collector) = collector();
        let stats = metrics.register(0);
        stats
            .sessions_by_kind
            .opened(Version::Lite05, TransportKind::WebTransport);
        stats
            .sessions_by_kind
            .opened(Version::Lite04, TransportKind::Quic);
        stats
            .sessions_by_kind
            .closed(Version::Lite04, TransportKind::Quic);
        let text = render(&registry(collector));
        assert_lines(
            &text,
            &[
                "# TYPE qumo_sessions_started counter",
                "qumo_sessions_started_total{shard=\"0\",version=\"moq-lite-05\",transport=\"webtransport\"} 1",
                "qumo_sessions_started_total{shard=\"0\",version=\"moq-lite-04\",transport=\"quic\"} 1",
                "qumo_sessions_by_version{shard=\"0\",version=\"moq-lite-05\",transport=\"webtransport\"} 1",
                "qumo_sessions_by_version{shard=\"0\",version=\"moq-lite-04\",transport=\"quic\"} 0",
                "qumo_sessions_by_version{shard=\"0\",version=\"moq-lite-06\",transport=\"quic\"} 0",
            ],
        );
    }

    #[test]
    fn gso_batches_are_a_histogram_over_datagrams_sent() {
        let (metrics, _, collector) = collector();
        let stats = Arc::new(ShardStats::default());
        metrics.attach_runtime(probe(vec![stats.clone()]));
        // Filled through the runtime's send path in the process tests; here
        // the rendering: sum from datagrams_sent, cumulative buckets.
        bump(&stats.datagrams_sent, 11);
        let families = runtime_families(metrics.probe().as_ref());
        let batches = families
            .iter()
            .find(|f| f.name == "send_batch_datagrams")
            .unwrap();
        assert_eq!(batches.kind, FamilyType::Histogram);
        let Value::Histogram {
            sum,
            count,
            buckets,
        } = &batches.samples[0].value
        else {
            panic!("{:?}", batches.samples[0]);
        };
        assert_eq!((*sum, *count), (11.0, 0));
        assert_eq!(buckets.len(), SEND_BATCH_BOUNDS.len() + 1);
        assert_eq!(buckets.last().map(|b| b.0), Some(f64::MAX));
        let text = render(&registry(collector));
        assert_lines(
            &text,
            &[
                "# TYPE qumo_send_batch_datagrams histogram",
                "qumo_send_batch_datagrams_sum{shard=\"0\"} 11.0",
                "qumo_send_batch_datagrams_bucket{le=\"+Inf\",shard=\"0\"} 0",
            ],
        );
    }

    #[test]
    fn process_figures_carry_their_standard_unprefixed_names() {
        let (_, _, collector) = collector();
        let text = render(&registry(collector));
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(name)),
                "{name} in\n{text}"
            );
        }
    }

    fn admin() -> (Admin, Arc<AnnouncedSource>) {
        let (_, _, collector) = collector();
        let announced = Arc::new(AnnouncedSource::default());
        (
            Admin::new(registry(collector), announced.clone()),
            announced,
        )
    }

    fn body(response: HttpResponse) -> String {
        use http_body_util::BodyExt;
        // A `Full` body is ready at once and cannot fail.
        let collected = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(response.into_body().collect())
            .unwrap();
        String::from_utf8(collected.to_bytes().to_vec()).unwrap()
    }

    #[test]
    fn health_and_unknown_paths() {
        let (admin, _) = admin();
        for path in HEALTH_PATHS {
            assert_eq!(admin.answer(false, &Method::GET, path).status(), 200);
            assert_eq!(admin.answer(true, &Method::GET, path).status(), 503);
        }
        assert_eq!(admin.answer(false, &Method::GET, "/").status(), 404);
        assert_eq!(
            admin.answer(false, &Method::GET, "/announcedx").status(),
            404
        );
        assert_eq!(admin.answer(false, &Method::POST, "/metrics").status(), 405);
        let metrics = admin.answer(true, &Method::GET, "/metrics");
        assert_eq!(metrics.status(), 200, "metrics are served while stopping");
        assert_eq!(
            metrics.headers()[header::CONTENT_TYPE],
            METRICS_CONTENT_TYPE
        );
    }

    #[test]
    fn announced_asks_for_the_normalised_prefix_and_answers_json() {
        let (admin, announced) = admin();
        assert_eq!(
            admin.answer(false, &Method::GET, "/announced").status(),
            503
        );
        announced.attach(|query| {
            let broadcasts = match query.prefix.as_str() {
                "room/1" => vec![AnnouncedBroadcast {
                    path: "room/1/cam".into(),
                    publisher_shard: 1,
                    publisher_session: 42,
                    hops: 0,
                }],
                _ => Vec::new(),
            };
            let _ = query.reply.try_send(AnnouncedList {
                prefix: query.prefix,
                broadcasts,
                truncated: false,
            });
            true
        });
        let response = admin.answer(false, &Method::GET, "/announced/room//1/");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let json: serde_json::Value = serde_json::from_str(&body(response)).unwrap();
        assert_eq!(json["prefix"], "room/1");
        assert_eq!(json["broadcasts"][0]["path"], "room/1/cam");
        assert_eq!(json["broadcasts"][0]["publisher_shard"], 1);
        assert_eq!(json["truncated"], false);
        let all = body(admin.answer(false, &Method::GET, "/announced"));
        assert!(all.contains("\"prefix\":\"\""), "{all}");
    }
}
