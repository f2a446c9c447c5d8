//! `relay.upstream_url`: one client session to another relay, kept open.
//!
//! The session runs on shard 0 and is an ordinary moq-lite session from
//! then on (`session::run_as` with `Side::Dialled`): it asks the upstream
//! for its announcements, which enter the announce table with the
//! upstream's hops, and serves the upstream's own ANNOUNCE_REQUEST and
//! SUBSCRIBEs from this relay's publishers. Media for any shard's
//! subscribers flows through the track hubs, so each track is subscribed
//! upstream once per relay whatever the subscriber and shard counts.
//! When the session ends it is dialled again after a capped exponential
//! backoff with jitter.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qumo_shards::ShardContext;
use rustls::RootCertStore;
use tracing::{debug, info, warn};

use crate::lite::Version;
use crate::message::ShardMessage;
use crate::metrics::{KindCount, Link, LinkTraffic, RelayStats, TransportKind};
use crate::peer_url::{PeerTrust, PeerUrl};
use crate::session::{self, Side};
use crate::shard::Shard;
use crate::task::{race, Either};
use crate::tls::PinnedCertificate;

/// The shard that owns the upstream session: one session means one shard,
/// and shard 0 exists whatever `server.shards` says.
pub const UPSTREAM_SHARD: usize = 0;

/// The first wait after a failed dial; doubled per failure up to
/// [`MAX_BACKOFF`], back to this after a session that was established.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Name lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole certificate-hash fetch: connect, request and response. A
/// deadline per read would let a peer dripping a byte at a time hold the
/// helper thread for hours, one more with every redial.
const PIN_FETCH_DEADLINE: Duration = Duration::from_secs(10);
/// The most of a `/certificate.sha256` response read.
const PIN_RESPONSE_LIMIT: usize = 16 * 1024;
/// The QUIC handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the upstream could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("relay.upstream_url: {0}")]
    Url(#[from] crate::peer_url::PeerUrlError),
    #[error("relay.upstream_ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("no system root certificates for relay.upstream_url; set relay.upstream_ca_file")]
    NoRoots,
}

/// Where to dial and how to trust it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// "upstream" or "cluster peer", for logs.
    pub role: &'static str,
    url: PeerUrl,
    /// For `Roots` URLs: the CA file's certificates or the system roots.
    roots: Option<Arc<RootCertStore>>,
    /// Bytes on the link over all its sessions.
    traffic: Arc<LinkTraffic>,
}

impl Upstream {
    /// `relay.upstream_url` and `relay.upstream_ca_file`; `None` when no
    /// upstream is set.
    pub fn from_config(
        url: &str,
        ca_file: Option<&Path>,
    ) -> Result<Option<Upstream>, UpstreamError> {
        if url.is_empty() {
            return Ok(None);
        }
        Upstream::new(url, ca_file, "upstream").map(Some)
    }

    /// A relay to dial, in `role` ("upstream", "cluster peer").
    pub fn new(
        url: &str,
        ca_file: Option<&Path>,
        role: &'static str,
    ) -> Result<Upstream, UpstreamError> {
        let url = PeerUrl::parse(url)?;
        let roots = match url.trust {
            PeerTrust::FetchedPin => None,
            PeerTrust::Roots => Some(Arc::new(load_roots(ca_file)?)),
        };
        Ok(Upstream {
            role,
            url,
            roots,
            traffic: Arc::default(),
        })
    }

    /// This link's byte figures and their labels, for `/metrics`.
    pub fn link(&self) -> Link {
        Link {
            peer: self.url.to_string(),
            role: match self.role {
                "upstream" => "upstream",
                _ => "cluster",
            },
            traffic: self.traffic.clone(),
        }
    }
}

fn load_roots(ca_file: Option<&Path>) -> Result<RootCertStore, UpstreamError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let ca_error = |reason: String| UpstreamError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            for cert in crate::tls::load_certificates(path).map_err(|e| ca_error(e.to_string()))? {
                roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            }
        }
        None => {
            // Unreadable individual certificates are skipped, as moq clients do.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(UpstreamError::NoRoots);
            }
        }
    }
    Ok(roots)
}

/// Dial the upstream from this shard until the relay shuts down; one
/// session at a time.
pub async fn maintain(ctx: ShardContext<ShardMessage>, shard: Rc<Shard>, upstream: Upstream) {
    let mut backoff = MIN_BACKOFF;
    loop {
        if ctx.is_shutting_down() {
            return;
        }
        match dial(&ctx, &upstream).await {
            Ok((conn, version)) => {
                info!(role = upstream.role, upstream = %upstream.url, %version, "upstream session open");
                shard.stats.upstream_dials_succeeded.inc();
                let side = Side::Dialled {
                    setup_path: upstream.url.setup_path.clone(),
                    link: upstream.traffic.clone(),
                };
                // Counted by kind like an accepted session, but outside
                // relay.max_sessions: a link this relay chose must not be
                // refused because its clients filled it.
                let _kind = KindCount::new(shard.stats.clone(), version, TransportKind::Quic);
                shard.stats.dialled_sessions_open.inc();
                let _dialled = DialledCount(shard.stats.clone());
                let ended = race(
                    session::run_as(shard.clone(), conn, version, String::new(), side),
                    ctx.shutdown_started(),
                )
                .await;
                if let Either::Right(()) = ended {
                    return;
                }
                info!(role = upstream.role, upstream = %upstream.url, "upstream session ended; dialling again");
                backoff = MIN_BACKOFF;
            }
            Err(reason) => {
                shard.stats.upstream_dials_failed.inc();
                // Repeats while the upstream is down: debug after the first.
                match backoff == MIN_BACKOFF {
                    true => {
                        warn!(role = upstream.role, upstream = %upstream.url, %reason, "cannot reach the upstream; retrying")
                    }
                    false => debug!(upstream = %upstream.url, %reason, "upstream dial failed"),
                }
            }
        }
        let wait = jittered(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
        if let Either::Right(()) = race(monoio::time::sleep(wait), ctx.shutdown_started()).await {
            return;
        }
    }
}

/// A dialled session counted open while it lives.
struct DialledCount(Arc<RelayStats>);

impl Drop for DialledCount {
    fn drop(&mut self) {
        self.0.dialled_sessions_open.dec();
    }
}

/// Between half and all of `backoff`, so edges that lost the same upstream
/// do not all dial it again in step.
fn jittered(backoff: Duration) -> Duration {
    let mut byte = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte);
    let fraction = f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX);
    backoff.mul_f64(0.5 + 0.5 * fraction)
}

async fn dial(
    ctx: &ShardContext<ShardMessage>,
    upstream: &Upstream,
) -> Result<(qumo_shards::Connection, Version), String> {
    let url = upstream.url.clone();
    let (addr, verifier) = off_shard(LOOKUP_TIMEOUT + PIN_FETCH_DEADLINE, move || {
        resolve_and_trust(&url)
    })
    .await
    .ok_or("name lookup or certificate fetch timed out")??;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| e.to_string())?;
    let mut tls = match (verifier, &upstream.roots) {
        (Some(pinned), _) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(pinned))
            .with_no_client_auth(),
        (None, Some(roots)) => builder
            .with_root_certificates(roots.clone())
            .with_no_client_auth(),
        (None, None) => return Err("no way to trust the upstream".into()),
    };
    tls.alpn_protocols = Version::ALL
        .iter()
        .map(|v| v.alpn().as_bytes().to_vec())
        .collect();
    let connect = ctx.connect(addr, &upstream.url.host, Arc::new(tls));
    let conn = match race(connect, monoio::time::sleep(CONNECT_TIMEOUT)).await {
        Either::Left(conn) => conn.map_err(|e| e.to_string())?,
        Either::Right(()) => return Err("QUIC handshake timed out".into()),
    };
    let alpn = conn.alpn().unwrap_or_default();
    match Version::from_alpn(&alpn) {
        Some(version) => Ok((conn, version)),
        None => {
            conn.close(session::code(crate::lite::SessionCode::VERSION), b"no ALPN");
            Err("the upstream chose no moq-lite version".into())
        }
    }
}

/// The upstream's address, and for an `http://` URL the pin of the
/// certificate it serves. Blocking: runs on a helper thread.
fn resolve_and_trust(url: &PeerUrl) -> Result<(SocketAddr, Option<PinnedCertificate>), String> {
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", url.host))?;
    let pin = match url.trust {
        PeerTrust::Roots => None,
        PeerTrust::FetchedPin => Some(PinnedCertificate::new(fetch_pin(addr, PIN_FETCH_DEADLINE)?)),
    };
    Ok((addr, pin))
}

/// `GET /certificate.sha256` over TCP at `addr`: 64 hex digits, all of it
/// done `within` that time or refused.
fn fetch_pin(addr: SocketAddr, within: Duration) -> Result<[u8; 32], String> {
    use std::io::{ErrorKind, Read, Write};
    let deadline = Instant::now() + within;
    let late = || format!("certificate hash from {addr}: no answer within {within:?}");
    // Each step may take only what is left of the whole.
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(late)
    };
    let fail = |e: std::io::Error| match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => late(),
        _ => format!("certificate hash from {addr}: {e}"),
    };
    let mut stream = TcpStream::connect_timeout(&addr, left()?).map_err(fail)?;
    stream.set_write_timeout(Some(left()?)).map_err(fail)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
        crate::http::CERTIFICATE_PATH
    );
    stream.write_all(request.as_bytes()).map_err(fail)?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 1024];
    // A hostile peer may send without end: read a bounded amount.
    while response.len() < PIN_RESPONSE_LIMIT {
        stream.set_read_timeout(Some(left()?)).map_err(fail)?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(e)),
        }
    }
    response.truncate(PIN_RESPONSE_LIMIT);
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("certificate hash from {addr}: no HTTP body"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "certificate hash from {addr}: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    parse_hex_pin(body.trim())
        .ok_or_else(|| format!("certificate hash from {addr}: not 64 hex digits"))
}

fn parse_hex_pin(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut pin = [0u8; 32];
    for (i, byte) in pin.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(pin)
}

/// Run blocking `work` on a helper thread and wait for it without blocking
/// the shard; `None` if it takes longer than `limit` (the thread is left
/// to finish on its own).
async fn off_shard<T: Send + 'static>(
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let slot = Arc::new(Mutex::new(None));
    let filled = slot.clone();
    let spawned = std::thread::Builder::new()
        .name("qumo-upstream-lookup".into())
        .spawn(move || {
            let result = work();
            *filled.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        });
    if spawned.is_err() {
        return None;
    }
    let deadline = Instant::now() + limit;
    loop {
        if let Some(result) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Some(result);
        }
        if Instant::now() >= deadline {
            return None;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_from_hex() {
        let hex = "00ff".repeat(16);
        let pin = parse_hex_pin(&hex).unwrap();
        assert_eq!((pin[0], pin[1], pin[31]), (0x00, 0xff, 0xff));
        assert_eq!(parse_hex_pin("abc"), None);
        assert_eq!(parse_hex_pin(&"zz".repeat(32)), None);
    }

    /// A TCP server on loopback that answers every connection with
    /// `response`, one byte per `pace`; returns its address.
    fn dripping_server(response: Vec<u8>, pace: Duration) -> SocketAddr {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let response = response.clone();
                std::thread::spawn(move || {
                    let mut request = [0u8; 512];
                    let _ = stream.read(&mut request);
                    for byte in response {
                        if stream.write_all(&[byte]).is_err() {
                            return;
                        }
                        std::thread::sleep(pace);
                    }
                });
            }
        });
        addr
    }

    /// `fetch_pin` on a helper thread; panics if it has not returned
    /// within `limit` (far beyond any deadline the test sets).
    fn fetch_within(
        addr: SocketAddr,
        deadline: Duration,
        limit: Duration,
    ) -> Result<[u8; 32], String> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(fetch_pin(addr, deadline));
        });
        rx.recv_timeout(limit)
            .expect("fetch_pin returned: its deadline bounds the whole fetch")
    }

    #[test]
    fn a_dripping_certificate_server_is_cut_off_at_the_deadline() {
        // An endless header, a byte every 20 ms: each read succeeds, so
        // only a deadline over the whole fetch ends it (a per-read timeout
        // would take 16 KiB x 20 ms = 5.5 minutes).
        let addr = dripping_server(vec![b'x'; 64 * 1024], Duration::from_millis(20));
        let error = fetch_within(addr, Duration::from_millis(300), Duration::from_secs(60))
            .expect_err("no hash from a dripping server");
        assert!(error.contains("no answer within"), "{error}");
    }

    #[test]
    fn a_prompt_certificate_server_is_read_within_the_deadline() {
        let hex = "ab".repeat(32);
        let response = format!("HTTP/1.1 200 OK\r\ncontent-length: 64\r\n\r\n{hex}");
        let addr = dripping_server(response.into_bytes(), Duration::ZERO);
        let pin = fetch_within(addr, Duration::from_secs(10), Duration::from_secs(60)).unwrap();
        assert_eq!(pin, [0xab; 32]);
    }

    #[test]
    fn jitter_stays_between_half_and_all() {
        for _ in 0..100 {
            let wait = jittered(Duration::from_secs(2));
            assert!(
                wait >= Duration::from_secs(1) && wait <= Duration::from_secs(2),
                "{wait:?}"
            );
        }
    }
}
