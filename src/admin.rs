//! The operators' HTTP listener (`admin.address`): `GET /metrics` in the
//! Prometheus (OpenMetrics) text format and `GET /healthz` (200 while
//! serving, 503 once SIGTERM or SIGINT began a graceful shutdown).
//!
//! `/metrics` is rendered by `prometheus-client` from the counters the shards
//! already keep: each scrape reads every shard's [`RelayStats`] and the QUIC
//! runtime's `ShardStats` (relaxed atomic loads), labelled `shard="K"`, and
//! each HTTP listener's [`HttpStats`], labelled `listener="NAME"`. The shards
//! pay nothing for it: no lock, no allocation, no message.
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
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::http::{plain, Handler, HttpLimits, HttpResponse, HttpServer, HttpStats};
use crate::metrics::{Kind, Metrics, RelayStats};

/// Where `/metrics` is served.
pub const METRICS_PATH: &str = "/metrics";
/// 200 while the relay serves, 503 once a shutdown began, so that a load
/// balancer drains it (`/health` is the same, for those that expect that
/// spelling).
pub const HEALTH_PATHS: [&str; 2] = ["/healthz", "/health"];
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

/// One family: name, help, kind, and a value per label value.
struct Family {
    name: String,
    help: String,
    kind: Kind,
    label: &'static str,
    values: Vec<(String, u64)>,
}

impl Family {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let metric_type = match self.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
        };
        let mut metric = encoder.encode_descriptor(&self.name, &self.help, None, metric_type)?;
        for (label, value) in &self.values {
            let labels = [(self.label, label.as_str())];
            let mut sample = metric.encode_family(&labels)?;
            match self.kind {
                Kind::Counter => sample.encode_counter::<NoLabelSet, _, u64>(value, None)?,
                Kind::Gauge => sample.encode_gauge(value)?,
            }
        }
        Ok(())
    }
}

/// Help text on one line with single spaces (doc comments wrap).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl QumoCollector {
    /// Every family, in a stable order: relay figures, runtime counters,
    /// HTTP listeners.
    fn families(&self) -> Vec<Family> {
        let mut families = Vec::new();

        let relay = self.metrics.shards();
        RelayStats::default().visit(|name, help, kind, _| {
            families.push(Family {
                name: name.to_string(),
                help: one_line(help),
                kind,
                label: "shard",
                values: Vec::new(),
            })
        });
        let start = 0;
        for (shard, stats) in &relay {
            let mut i = start;
            stats.visit(|_, _, _, value| {
                families[i].values.push((shard.to_string(), value));
                i += 1;
            });
        }

        let start = families.len();
        qumo_shards::ShardStatsSnapshot::default().visit(|name, help, gauge, _| {
            let kind = if gauge { Kind::Gauge } else { Kind::Counter };
            families.push(Family {
                name: name.to_string(),
                help: one_line(help),
                kind,
                label: "shard",
                values: Vec::new(),
            })
        });
        for (shard, snapshot) in self.metrics.runtime().iter().enumerate() {
            let mut i = start;
            snapshot.visit(|_, _, _, value| {
                families[i].values.push((shard.to_string(), value));
                i += 1;
            });
        }

        let start = families.len();
        HttpStats::default().visit(|name, help, kind, _| {
            families.push(Family {
                name: format!("http_{name}"),
                help: one_line(help),
                kind,
                label: "listener",
                values: Vec::new(),
            })
        });
        for (listener, stats) in &self.http {
            let mut i = start;
            stats.visit(|_, _, _, value| {
                families[i].values.push((listener.to_string(), value));
                i += 1;
            });
        }
        families
    }
}

impl Collector for QumoCollector {
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

/// A registry holding `collector`, with the `qumo_` prefix.
pub fn registry(collector: QumoCollector) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    registry.register_collector(Box::new(collector));
    registry
}

/// The admin listener's answer to `request`.
fn answer(registry: &Registry, stopping: bool, method: &Method, path: &str) -> HttpResponse {
    if !matches!(*method, Method::GET | Method::HEAD) {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    if path == METRICS_PATH {
        let mut response = plain(StatusCode::OK, render(registry));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(METRICS_CONTENT_TYPE),
        );
        return response;
    }
    if HEALTH_PATHS.contains(&path) {
        return match stopping {
            false => plain(StatusCode::OK, "ok\n"),
            true => plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        };
    }
    plain(StatusCode::NOT_FOUND, "not found\n")
}

/// Serve `/metrics` and `/healthz` on TCP `addr`, reading `metrics` and the
/// named HTTP listeners' counters (this listener's own are added under
/// `admin`); `/healthz` answers 503 once `stopping` is set.
pub fn serve(
    addr: SocketAddr,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    mut http: Vec<(&'static str, Arc<HttpStats>)>,
    stopping: Arc<AtomicBool>,
) -> std::io::Result<HttpServer> {
    let stats = Arc::new(HttpStats::default());
    http.push(("admin", stats.clone()));
    let registry = registry(QumoCollector::new(metrics, http));
    let handler: Handler = Arc::new(move |request: &Request<Incoming>| {
        let stopping = stopping.load(Ordering::Relaxed);
        answer(&registry, stopping, request.method(), request.uri().path())
    });
    let server = HttpServer::start("admin", addr, limits, stats, handler)?;
    tracing::info!(address = %server.local_addr(), "admin HTTP listening (/metrics, /healthz)");
    Ok(server)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn collector() -> (Arc<Metrics>, Arc<HttpStats>, QumoCollector) {
        let metrics = Arc::new(Metrics::default());
        let http = Arc::new(HttpStats::default());
        let collector = QumoCollector::new(metrics.clone(), vec![("certificate", http.clone())]);
        (metrics, http, collector)
    }

    #[test]
    fn family_names_never_collide() {
        let (_, _, collector) = collector();
        let mut seen = HashSet::new();
        for family in collector.families() {
            assert!(seen.insert(family.name.clone()), "{} twice", family.name);
        }
    }

    #[test]
    fn every_figure_is_rendered_per_shard_with_its_type() {
        let (metrics, http, collector) = collector();
        metrics.register(0).sessions_open.add(2);
        metrics.register(1).frames_too_large.add(5);
        metrics.attach_runtime(vec![Arc::default(), Arc::default()]);
        http.requests
            .fetch_add(7, std::sync::atomic::Ordering::Relaxed);
        let text = render(&registry(collector));
        for line in [
            "# TYPE qumo_sessions_open gauge",
            "qumo_sessions_open{shard=\"0\"} 2",
            "qumo_sessions_open{shard=\"1\"} 0",
            "# TYPE qumo_frames_too_large counter",
            "qumo_frames_too_large_total{shard=\"1\"} 5",
            "# TYPE qumo_connections_open gauge",
            "qumo_connections_accepted_total{shard=\"1\"} 0",
            "qumo_http_requests_total{listener=\"certificate\"} 7",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn health_and_unknown_paths() {
        let (_, _, collector) = collector();
        let registry = registry(collector);
        for path in HEALTH_PATHS {
            assert_eq!(answer(&registry, false, &Method::GET, path).status(), 200);
            assert_eq!(answer(&registry, true, &Method::GET, path).status(), 503);
        }
        assert_eq!(answer(&registry, false, &Method::GET, "/").status(), 404);
        assert_eq!(
            answer(&registry, false, &Method::POST, "/metrics").status(),
            405
        );
        let metrics = answer(&registry, true, &Method::GET, "/metrics");
        assert_eq!(metrics.status(), 200, "metrics are served while stopping");
        assert_eq!(
            metrics.headers()[header::CONTENT_TYPE],
            METRICS_CONTENT_TYPE
        );
    }
}
