//! Plain HTTP/1.1 from the tests' side: one-shot requests, slowloris
//! clients, and `/metrics` scrapes of the relay's admin listener.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How a one-shot request ended.
#[derive(Debug)]
pub enum Outcome {
    /// The whole answer, up to the server's close.
    Answer(String),
    /// Closed (EOF or reset) without a byte of answer.
    Closed,
    /// Nothing within the read timeout: the server hung us.
    Hung,
}

/// `GET path` over a fresh connection, reading until the server closes or
/// `limit` passes.
pub fn get(addr: SocketAddr, path: &str, limit: Duration) -> Outcome {
    let Ok(stream) = TcpStream::connect_timeout(&addr, limit) else {
        return Outcome::Closed;
    };
    exchange(stream, path, limit)
}

/// As [`get`], from `from`.
pub fn get_from(from: Ipv4Addr, addr: SocketAddr, path: &str, limit: Duration) -> Outcome {
    exchange(connect_from(from, addr), path, limit)
}

fn exchange(mut stream: TcpStream, path: &str, limit: Duration) -> Outcome {
    stream.set_read_timeout(Some(limit)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return Outcome::Closed;
    }
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Outcome::Hung
            }
            Err(_) => break,
        }
    }
    if answer.is_empty() {
        Outcome::Closed
    } else {
        Outcome::Answer(String::from_utf8_lossy(&answer).into_owned())
    }
}

/// The body of a `200 OK` to `GET path`, or a panic naming what came back.
pub fn get_ok(addr: SocketAddr, path: &str, limit: Duration) -> String {
    match get(addr, path, limit) {
        Outcome::Answer(text) if text.starts_with("HTTP/1.1 200 OK\r\n") => text
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default(),
        other => panic!("GET {path} from {addr}: {other:?}"),
    }
}

/// How a slowloris connection behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slowness {
    /// Sends the request line, then one header byte a second, forever.
    Trickle,
    /// Connects and sends nothing.
    Idle,
}

/// One slow connection, watched by its own thread, which notes when the
/// server closes it.
pub struct Slowloris {
    closed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Slowloris {
    pub fn open(addr: SocketAddr, slowness: Slowness) -> Slowloris {
        Self::open_from(SOURCE, addr, slowness)
    }

    /// As [`Slowloris::open`], from loopback address `from` (any 127.x
    /// works on Linux), to stand for another host.
    pub fn open_from(from: Ipv4Addr, addr: SocketAddr, slowness: Slowness) -> Slowloris {
        let mut stream = connect_from(from, addr);
        // A read that waits a second paces the trickle and notices a close.
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        if slowness == Slowness::Trickle {
            stream
                .write_all(b"GET /certificate.sha256 HTTP/1.1\r\nX-Slow: ")
                .unwrap();
        }
        let closed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (closed, stop) = (closed.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut byte = [0u8; 1];
                while !stop.load(Ordering::Relaxed) {
                    if slowness == Slowness::Trickle && stream.write_all(b"a").is_err() {
                        break;
                    }
                    match stream.read(&mut byte) {
                        Ok(0) => break,
                        Ok(_) => {} // an answer would be a bug the tests see elsewhere
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => break,
                    }
                }
                if !stop.load(Ordering::Relaxed) {
                    closed.store(true, Ordering::Relaxed);
                }
            })
        };
        Slowloris {
            closed,
            stop,
            thread: Some(thread),
        }
    }

    /// Whether the server closed this connection.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

impl Drop for Slowloris {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where the tests' ordinary clients connect from.
pub const SOURCE: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Another "host" on loopback, for attackers.
pub const OTHER_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A TCP connection to `addr` from `from`.
pub fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect(&addr.into()).expect("the HTTP side listens");
    socket.into()
}

/// `count` slow connections, alternating trickling and idle ones.
pub fn slowloris(addr: SocketAddr, count: usize) -> Vec<Slowloris> {
    slowloris_from(SOURCE, addr, count)
}

/// As [`slowloris`], from `from`.
pub fn slowloris_from(from: Ipv4Addr, addr: SocketAddr, count: usize) -> Vec<Slowloris> {
    (0..count)
        .map(|i| {
            let slowness = if i % 2 == 0 {
                Slowness::Trickle
            } else {
                Slowness::Idle
            };
            Slowloris::open_from(from, addr, slowness)
        })
        .collect()
}

/// One sample of a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A `/metrics` scrape, parsed by `prometheus-parse` after a strict check of
/// the text format: every sample under a `# TYPE` of its family (counters'
/// samples end in `_total`), families once each, names and labels well
/// formed, `# EOF` last. Panics naming the first bad line.
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    strict_check(text);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus-parse reads the scrape");
    assert!(!scrape.samples.is_empty(), "no samples in\n{text}");
    scrape
        .samples
        .into_iter()
        .flat_map(|s| {
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            let values: Vec<(String, Option<String>, f64)> = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => vec![(s.metric, None, v)],
                // One sample per bucket, `NAME_bucket{le="BOUND"}`, as written.
                prometheus_parse::Value::Histogram(buckets) => buckets
                    .into_iter()
                    .map(|b| {
                        let le = match b.less_than {
                            f if f.is_infinite() || f == f64::MAX => "+Inf".to_string(),
                            f => f.to_string(),
                        };
                        (format!("{}_bucket", s.metric), Some(le), b.count)
                    })
                    .collect(),
                other => panic!("{}: unexpected {other:?}", s.metric),
            };
            values.into_iter().map(move |(name, le, value)| {
                let mut labels = labels.clone();
                if let Some(le) = le {
                    labels.push(("le".to_string(), le));
                    labels.sort();
                }
                Sample {
                    name,
                    labels,
                    value,
                }
            })
        })
        .collect()
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn strict_check(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "the scrape ends with # EOF");
    let mut families = std::collections::HashSet::new();
    let mut current: Option<(String, String)> = None; // (name, type)
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(is_name(name), "bad family name: {line}");
            assert!(families.insert(name.to_string()), "family twice: {line}");
            current = None;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                matches!(kind, "counter" | "gauge" | "histogram"),
                "type: {line}"
            );
            current = Some((name.to_string(), kind.to_string()));
        } else {
            let (family, kind) = current
                .as_ref()
                .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
            let (series, value) = line.rsplit_once(' ').expect("sample value");
            assert!(value.parse::<f64>().is_ok(), "value: {line}");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.strip_suffix('}').expect("}")),
                None => (series, ""),
            };
            match kind.as_str() {
                "counter" => assert_eq!(name, format!("{family}_total"), "sample: {line}"),
                "histogram" => {
                    let suffix = name.strip_prefix(family.as_str());
                    assert!(
                        matches!(suffix, Some("_bucket" | "_sum" | "_count")),
                        "sample of its family: {line}"
                    );
                    if suffix == Some("_bucket") {
                        assert!(labels.contains("le=\""), "bucket without le: {line}");
                    }
                }
                _ => assert_eq!(name, family.as_str(), "sample of its family: {line}"),
            }
            for label in labels.split(',').filter(|l| !l.is_empty()) {
                let (key, value) = label.split_once('=').expect("label=value");
                assert!(is_name(key), "label name: {line}");
                assert!(
                    value.len() >= 2 && value.starts_with('"') && value.ends_with('"'),
                    "label value: {line}"
                );
            }
        }
    }
}

/// The sum over every series of `name` (e.g. over shards).
pub fn total(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

/// The value of `name` with label `key="value"`.
pub fn value(samples: &[Sample], name: &str, key: &str, label: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && s.label(key) == Some(label))
        .map(|s| s.value)
}

/// Scrape `/metrics` at `admin` until `done` holds for the samples, or
/// panic after `limit` with the last scrape.
/// [`wait_metrics`] on a blocking thread, so that the test's own peers
/// (tokio tasks) keep running while it polls.
pub async fn wait_metrics_async(
    admin: SocketAddr,
    limit: Duration,
    what: &'static str,
    done: impl Fn(&[Sample]) -> bool + Send + 'static,
) -> Vec<Sample> {
    tokio::task::spawn_blocking(move || wait_metrics(admin, limit, what, done))
        .await
        .unwrap()
}

pub fn wait_metrics(
    admin: SocketAddr,
    limit: Duration,
    what: &str,
    done: impl Fn(&[Sample]) -> bool,
) -> Vec<Sample> {
    let deadline = Instant::now() + limit;
    loop {
        let samples = parse_metrics(&get_ok(admin, "/metrics", Duration::from_secs(10)));
        if done(&samples) {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last scrape: {samples:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The admin listener's address, from the relay's start-up log (the tests
/// ask for port 0).
pub fn admin_addr(relay: &super::Relay) -> SocketAddr {
    let line = relay
        .wait_for("admin HTTP listening", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no admin listener:\n{}", relay.log()));
    super::field(&line, "address").parse().unwrap()
}

/// Config sections for a relay with an admin listener on a free loopback
/// port, and `http` as the `http:` section's body.
pub fn sections(http: &str) -> String {
    format!("admin:\n  address: \"127.0.0.1:0\"\nhttp:\n{http}")
}
