//! HTTP/1.1 listeners on hyper: the certificate hash for browsers and
//! `http://` clients, and WebSocket upgrades (this module), and the
//! operators' admin listener ([`crate::admin`]).
//!
//! # Plain and TLS on one port
//!
//! The certificate listener may also take TLS (`https://`, `wss://`,
//! [`HttpServer::start_with_tls`]): each connection's first byte is peeked
//! at; 0x16 (a TLS handshake record, which no HTTP method starts with) is
//! served inside TLS, anything else as plain HTTP. The handshake shares
//! the head's deadline and the connection's slots, and a failed one is
//! counted (`tls_handshake_failures`) and closes only its connection.
//!
//! # `GET /certificate.sha256`
//!
//! Browsers only accept a self-signed certificate for WebTransport when the
//! page pins its SHA-256 (`serverCertificateHashes`). MoQ clients given an
//! `http://host:port/` URL (moq-native, the moq-dev web player) first fetch
//! `http://host:port/certificate.sha256`, read the body as hex (they trim
//! whitespace), then connect to `https://host:port/` pinning that hash. The
//! body here is exactly what moq-relay serves: 64 lowercase hex digits, no
//! newline, `text/plain; charset=utf-8`, with `Access-Control-Allow-Origin: *`
//! so that pages from other origins may read it. It is served on TCP at the
//! QUIC listener's port number.
//!
//! # Bounds
//!
//! Every listener runs on its own thread (a tokio current-thread runtime),
//! so nothing here ever runs on a shard. Each connection carries one request
//! (every answer says `Connection: close`) and is bounded by [`HttpLimits`];
//! a WebSocket upgrade's socket leaves the listener (and these bounds) at
//! its `101`, for a shard ([`Upgrader`]):
//!
//! - the request head must arrive within `header_timeout` (hyper's
//!   `header_read_timeout`, a deadline for the whole head, not per byte: a
//!   client sending a byte a second does not extend it);
//! - the whole connection, head, answer and close, within `request_timeout`;
//! - at most `max_connections_per_source` from one source (an IPv4
//!   address, or an IPv6 /64, the least a subscriber is given), so that one
//!   host cannot take every slot;
//! - at most `max_connections` are served at once. One more is refused:
//!   answered `503 Service Unavailable` by a refusal of its own, which reads
//!   the request first so that closing does not reset the connection. At most
//!   `max_connections` refusals run at once too (each within a second); past
//!   that a connection is closed at once.
//!
//! Request heads are parsed by hyper (at most 8 KiB, 100 header lines;
//! larger is a 431); bodies are never read.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::metrics::Kind;

/// The certificate hash's path.
pub const CERTIFICATE_PATH: &str = "/certificate.sha256";
/// Largest request head read (hyper's smallest buffer limit).
pub const MAX_HEAD: usize = 8 * 1024;
/// Longest a refusal (the 503) may take: it must stay cheap under a flood.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after an accept error such as `EMFILE`, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// A response: always a complete, small body.
pub type HttpResponse = Response<Full<Bytes>>;

/// Turns a request into its answer. Called on the listener's thread; it must
/// not block. Mutable so that it may take the connection over after a
/// `101` answer (`hyper::upgrade::on`, see [`crate::websocket`]).
pub type Handler = Arc<dyn Fn(&mut Request<Incoming>) -> HttpResponse + Send + Sync>;

/// A listener's hook for requests it does not answer itself (a WebSocket
/// upgrade): `Some` answer, or `None` to let the listener answer.
pub type Upgrader = Arc<dyn Fn(&mut Request<Incoming>) -> Option<HttpResponse> + Send + Sync>;

/// The client's address, in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// How much one listener lets its peers hold (`http.*` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once; more are refused with a 503.
    pub max_connections: usize,
    /// Of those, how many one source may hold (an IPv4 address, or an IPv6
    /// /64); more are refused with a 503. At most `max_connections`.
    pub max_connections_per_source: usize,
    /// Time for the client to send its whole request head.
    pub header_timeout: Duration,
    /// Time for the whole connection: head, answer and close.
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            max_connections_per_source: 8,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

macro_rules! http_stats {
    ($($(#[doc = $doc:literal])* $name:ident: $kind:ident,)*) => {
        /// One listener's counters; written by its thread, read by
        /// `/metrics`.
        #[derive(Debug, Default)]
        pub struct HttpStats { $($(#[doc = $doc])* pub $name: AtomicU64,)* }

        impl HttpStats {
            /// Every figure: its name (without the `qumo_http_` prefix),
            /// help text, kind and value.
            pub fn visit(&self, mut f: impl FnMut(&'static str, &'static str, Kind, u64)) {
                $(f(stringify!($name), concat!($($doc),*).trim(), Kind::$kind,
                    self.$name.load(Ordering::Relaxed));)*
            }
        }
    };
}

http_stats! {
    /// Connections accepted and served (within http.max_connections).
    connections_accepted: Counter,
    /// Connections open now (served, not counting refusals).
    connections_open: Gauge,
    /// Connections refused because http.max_connections were open: answered 503, or closed when refusals were also at the cap.
    connections_refused: Counter,
    /// Connections closed because the request head (http.header_timeout) or the whole exchange (http.request_timeout) took too long.
    connections_timed_out: Counter,
    /// Connections closed for a malformed or oversized request, or an I/O error.
    connections_failed: Counter,
    /// Requests answered.
    requests: Counter,
    /// Refusals (503 answers) in progress; at most http.max_connections.
    refusals_open: Gauge,
    /// Connections refused because their source already held http.max_connections_per_source.
    connections_refused_per_source: Counter,
    /// TLS handshakes completed (https:// and wss:// on a listener that takes TLS).
    tls_handshakes: Counter,
    /// TLS handshakes that failed (not TLS after its first byte, a refused or malformed handshake) or were not done within http.header_timeout.
    tls_handshake_failures: Counter,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A running listener; stops when dropped.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl HttpServer {
    /// Bind TCP `addr` (dual-stack when it is `[::]`) and serve `handler` on
    /// a thread named `http-{name}`. Binding happens before this returns, so
    /// an address in use is reported here.
    pub fn start(
        name: &str,
        addr: SocketAddr,
        limits: HttpLimits,
        stats: Arc<HttpStats>,
        handler: Handler,
    ) -> std::io::Result<HttpServer> {
        Self::start_with_tls(name, addr, limits, stats, handler, None)
    }

    /// As [`HttpServer::start`]; with `tls`, a connection whose first byte
    /// is a TLS handshake record's is served over TLS with it, any other
    /// as plain HTTP (see [`serve_sniffed`]).
    pub fn start_with_tls(
        name: &str,
        addr: SocketAddr,
        limits: HttpLimits,
        stats: Arc<HttpStats>,
        handler: Handler,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<HttpServer> {
        let listener = bind(addr)?;
        let tls = tls.map(TlsAcceptor::from);
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("http-{name}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            tokio::select! {
                                () = accept_loop(listener, limits, stats, handler, tls) => {}
                                () = stopped.notified() => {}
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "HTTP listener unusable"),
                    }
                });
                // Dropping the runtime here cancels every connection task.
            })?;
        Ok(HttpServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the listener is bound to (its own port when asked for
    /// port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop listening and drop every connection.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.notify_one();
            let _ = thread.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // `[::]` also takes IPv4, as the QUIC socket does.
        socket.set_only_v6(false)?;
    }
    // A restart must not wait for the last run's TIME_WAIT connections.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// One of a bounded number of places, given back (its gauge decremented)
/// when the connection task ends, however it ends.
struct Slot {
    stats: Arc<HttpStats>,
    gauge: fn(&HttpStats) -> &AtomicU64,
}

impl Slot {
    /// A slot if fewer than `max` are taken. Only the accept loop takes
    /// slots, so the check and the increment need not be one atomic step.
    fn take(
        stats: &Arc<HttpStats>,
        gauge: fn(&HttpStats) -> &AtomicU64,
        max: usize,
    ) -> Option<Slot> {
        let count = gauge(stats);
        if count.load(Ordering::Relaxed) >= max as u64 {
            return None;
        }
        count.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            stats: stats.clone(),
            gauge,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        (self.gauge)(&self.stats).fetch_sub(1, Ordering::Relaxed);
    }
}

fn open_gauge(stats: &HttpStats) -> &AtomicU64 {
    &stats.connections_open
}

fn refusing_gauge(stats: &HttpStats) -> &AtomicU64 {
    &stats.refusals_open
}

/// Where a connection comes from, as far as the per-source cap goes: an
/// IPv4 address, or an IPv6 /64 (a host is given at least a /64, so single
/// addresses would let it multiply itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(Ipv4Addr),
    V6Prefix(u64),
}

impl Source {
    fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => Source::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Connections held per source; an entry lives while its count is above 0,
/// so the map never has more than `max_connections` entries.
type Sources = Arc<Mutex<HashMap<Source, usize>>>;

/// One connection's place in its source's count.
struct SourceSlot {
    sources: Sources,
    source: Source,
}

impl SourceSlot {
    fn take(sources: &Sources, source: Source, max: usize) -> Option<SourceSlot> {
        let mut map = sources.lock().unwrap_or_else(|e| e.into_inner());
        let held = map.entry(source).or_insert(0);
        if *held >= max {
            return None;
        }
        *held += 1;
        Some(SourceSlot {
            sources: sources.clone(),
            source,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = map.get_mut(&self.source) {
            *held -= 1;
            if *held == 0 {
                map.remove(&self.source);
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    handler: Handler,
    tls: Option<TlsAcceptor>,
) {
    let sources = Sources::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: a flood must not spin us.
                debug!(error = %e, "HTTP accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Some(slot) = Slot::take(&stats, open_gauge, limits.max_connections) else {
            bump(&stats.connections_refused);
            debug!(
                limit = limits.max_connections,
                "HTTP connection refused: http.max_connections open"
            );
            refuse_if_room(stream, limits, &stats);
            continue;
        };
        let source = Source::of(peer.ip());
        let Some(source_slot) =
            SourceSlot::take(&sources, source, limits.max_connections_per_source)
        else {
            drop(slot);
            bump(&stats.connections_refused_per_source);
            debug!(
                %peer,
                limit = limits.max_connections_per_source,
                "HTTP connection refused: http.max_connections_per_source held by its source"
            );
            refuse_if_room(stream, limits, &stats);
            continue;
        };
        bump(&stats.connections_accepted);
        let stats = stats.clone();
        let handler = handler.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let deadlines = Deadlines::from_now(limits);
            match tls {
                Some(tls) => serve_sniffed(stream, peer, &tls, deadlines, &stats, handler).await,
                None => serve(stream, peer, deadlines, &stats, handler).await,
            }
            drop((slot, source_slot));
        });
    }
}

/// Answer 503 in a task of its own if fewer than `max_connections` refusals
/// are under way; else drop the connection, which closes it at once.
fn refuse_if_room(stream: TcpStream, limits: HttpLimits, stats: &Arc<HttpStats>) {
    if let Some(slot) = Slot::take(stats, refusing_gauge, limits.max_connections) {
        tokio::spawn(async move {
            refuse(stream, limits).await;
            drop(slot);
        });
    }
}

/// hyper's HTTP/1.1 server, one request per connection: every answer but
/// a `101` carries `Connection: close` ([`plain`]), and hyper closes after
/// it. hyper's own keep-alive stays on because with it off hyper adds
/// `close` to a `101`'s `Connection: Upgrade` too, which WebSocket clients
/// (tungstenite) refuse.
fn builder(header_timeout: Duration) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD)
        // As the relay answered before hyper: `Content-Type`, not
        // `content-type`, and no `Date`.
        .title_case_headers(true)
        .auto_date_header(false);
    builder
}

/// When a connection's request head, and the whole connection, must be
/// done by: fixed at its accept, so that a TLS handshake (and the wait for
/// its first byte) comes out of the same time as the head.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    head: tokio::time::Instant,
    whole: tokio::time::Instant,
}

impl Deadlines {
    fn from_now(limits: HttpLimits) -> Deadlines {
        let now = tokio::time::Instant::now();
        Deadlines {
            head: now + limits.header_timeout,
            whole: now + limits.request_timeout,
        }
    }
}

/// The first byte of a TLS handshake record (RFC 8446 §5.1,
/// `ContentType.handshake`). An HTTP request starts with a method's
/// uppercase letter, so the two cannot be mistaken for each other.
const TLS_HANDSHAKE: u8 = 0x16;

/// Serve a connection on a listener that takes both plain HTTP and TLS on
/// one port: peek at its first byte (consuming nothing), then either hand
/// the socket to hyper as it is, or do the TLS handshake first and serve
/// HTTP inside it. The wait for that byte and the handshake come out of
/// the head's deadline; a failed or late handshake is counted and closes
/// only this connection.
async fn serve_sniffed(
    stream: TcpStream,
    peer: SocketAddr,
    tls: &TlsAcceptor,
    deadlines: Deadlines,
    stats: &Arc<HttpStats>,
    handler: Handler,
) {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadlines.head, stream.peek(&mut first)).await {
        Ok(Ok(1..)) => {}
        // Closed before saying anything: nothing to answer.
        Ok(Ok(0)) => return,
        Ok(Err(e)) => {
            bump(&stats.connections_failed);
            return debug!(error = %e, "HTTP connection failed before its first byte");
        }
        Err(_) => {
            bump(&stats.connections_timed_out);
            return debug!("no byte received within http.header_timeout");
        }
    }
    if first[0] != TLS_HANDSHAKE {
        return serve(stream, peer, deadlines, stats, handler).await;
    }
    match tokio::time::timeout_at(deadlines.head, tls.accept(stream)).await {
        Ok(Ok(stream)) => {
            bump(&stats.tls_handshakes);
            serve(stream, peer, deadlines, stats, handler).await;
        }
        Ok(Err(e)) => {
            bump(&stats.tls_handshake_failures);
            debug!(%peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            bump(&stats.tls_handshake_failures);
            debug!(%peer, "TLS handshake not done within http.header_timeout");
        }
    }
}

/// hyper on one connection, plain or inside TLS: the request head by
/// `deadlines.head`, the whole exchange by `deadlines.whole`.
async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    deadlines: Deadlines,
    stats: &Arc<HttpStats>,
    handler: Handler,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let counted = stats.clone();
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        bump(&counted.requests);
        request.extensions_mut().insert(PeerAddr(peer));
        let response = handler(&mut request);
        async move { Ok::<_, Infallible>(response) }
    });
    let head_time = deadlines
        .head
        .saturating_duration_since(tokio::time::Instant::now());
    // With upgrades: a WebSocket's connection leaves hyper after its 101.
    let connection = builder(head_time)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    finish(connection, deadlines.whole, stats).await;
}

/// Answer 503 to a connection over the cap. Reading its request before
/// answering means the close is a FIN, not a reset that could discard the
/// answer before the client reads it.
async fn refuse(stream: TcpStream, limits: HttpLimits) {
    let service = hyper::service::service_fn(|_: Request<Incoming>| async {
        Ok::<_, Infallible>(plain(StatusCode::SERVICE_UNAVAILABLE, "busy\n"))
    });
    let timeout = limits.header_timeout.min(REFUSAL_TIMEOUT);
    let connection = builder(timeout).serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(timeout, connection).await;
}

async fn finish(
    connection: impl Future<Output = hyper::Result<()>>,
    deadline: tokio::time::Instant,
    stats: &HttpStats,
) {
    match tokio::time::timeout_at(deadline, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_timeout() => {
            bump(&stats.connections_timed_out);
            debug!("HTTP request head not received within http.header_timeout");
        }
        Ok(Err(e)) => {
            bump(&stats.connections_failed);
            debug!(error = %e, "HTTP connection failed");
        }
        Err(_) => {
            bump(&stats.connections_timed_out);
            debug!("HTTP connection closed at http.request_timeout");
        }
    }
}

/// A `text/plain` answer that closes the connection, readable from any
/// origin.
pub fn plain(status: StatusCode, body: impl Into<Bytes>) -> HttpResponse {
    let body = body.into();
    let mut response = Response::new(Full::new(body.clone()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// What `GET /certificate.sha256` and its neighbours answer, given the hex
/// digest.
pub fn certificate_answer(method: &Method, path: &str, hex: &str) -> HttpResponse {
    const ALLOWED: &str = "GET, HEAD, OPTIONS";
    let found = path == CERTIFICATE_PATH;
    let mut response = match *method {
        Method::GET | Method::HEAD if found => {
            let mut response = plain(StatusCode::OK, Bytes::copy_from_slice(hex.as_bytes()));
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return response;
        }
        Method::GET | Method::HEAD => return plain(StatusCode::NOT_FOUND, "not found\n"),
        // A CORS preflight, for pages that fetch with extra headers.
        Method::OPTIONS => {
            let mut response = plain(StatusCode::NO_CONTENT, "");
            let headers = response.headers_mut();
            for (name, value) in [
                (header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, "*"),
                (header::ACCESS_CONTROL_MAX_AGE, "86400"),
            ] {
                headers.insert(name, HeaderValue::from_static(value));
            }
            response
        }
        _ => plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
    };
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(ALLOWED));
    response
}

/// Serve `hex` at `GET /certificate.sha256` (when there is one: a generated
/// certificate) and, with an `upgrader`, WebSocket upgrades on TCP `addr`;
/// with `tls`, over TLS as well as plain HTTP (`https://`, `wss://`). Port
/// 0 binds an ephemeral port of its own, which cannot be the QUIC
/// listener's: see [`HttpServer::local_addr`].
pub fn serve_certificate_hash(
    addr: SocketAddr,
    hex: Option<String>,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    upgrader: Option<Upgrader>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<HttpServer> {
    let with_hash = hex.is_some();
    let with_websocket = upgrader.is_some();
    let with_tls = tls.is_some();
    let handler: Handler = Arc::new(move |request: &mut Request<Incoming>| {
        if let Some(answer) = upgrader.as_ref().and_then(|upgrade| upgrade(request)) {
            return answer;
        }
        match &hex {
            Some(hex) => certificate_answer(request.method(), request.uri().path(), hex),
            None => plain(StatusCode::NOT_FOUND, "not found\n"),
        }
    });
    let server = HttpServer::start_with_tls("certificate", addr, limits, stats, handler, tls)?;
    tracing::info!(
        addr = %server.local_addr(),
        path = with_hash.then_some(CERTIFICATE_PATH),
        websocket = with_websocket,
        tls = with_tls,
        "serving the certificate hash over HTTP"
    );
    Ok(server)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    use super::*;

    const HEX: &str = "00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff";

    fn start(limits: HttpLimits) -> (HttpServer, Arc<HttpStats>) {
        let stats = Arc::new(HttpStats::default());
        let server = serve_certificate_hash(
            "127.0.0.1:0".parse().unwrap(),
            Some(HEX.into()),
            limits,
            stats.clone(),
            None,
            None,
        )
        .unwrap();
        (server, stats)
    }

    /// Send `request`, read until the server closes; the whole answer.
    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_certificate_hash_is_the_bare_hex_with_the_headers_clients_read() {
        let (server, stats) = start(HttpLimits::default());
        let text = exchange(
            server.local_addr(),
            b"GET /certificate.sha256?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        );
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        for line in [
            "Content-Type: text/plain; charset=utf-8",
            "Content-Length: 64",
            "Access-Control-Allow-Origin: *",
            "Connection: close",
            "Cache-Control: no-store",
        ] {
            assert!(head.contains(&format!("\r\n{line}")), "{line} in {head}");
        }
        assert_eq!(body, HEX);
        assert_eq!(stats.requests.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn head_answers_the_length_without_a_body() {
        let (server, _) = start(HttpLimits::default());
        let text = exchange(
            server.local_addr(),
            b"HEAD /certificate.sha256 HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 64\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }

    #[test]
    fn wrong_paths_methods_and_malformed_requests_get_their_status() {
        let (server, stats) = start(HttpLimits::default());
        let addr = server.local_addr();
        let status = |request: &[u8]| exchange(addr, request)[..12].to_string();
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "HTTP/1.1 404");
        for method in ["POST", "PUT", "DELETE"] {
            let text = exchange(
                addr,
                format!("{method} /certificate.sha256 HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            );
            assert!(text.starts_with("HTTP/1.1 405"), "{method}: {text}");
            assert!(text.contains("\r\nAllow: GET, HEAD, OPTIONS\r\n"), "{text}");
        }
        let preflight = exchange(
            addr,
            b"OPTIONS /certificate.sha256 HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert!(preflight.starts_with("HTTP/1.1 204"), "{preflight}");
        assert!(preflight.contains("Access-Control-Allow-Methods: GET, HEAD, OPTIONS"));
        assert_eq!(status(b"garbage\r\n\r\n"), "HTTP/1.1 400");
        let mut huge = b"GET / HTTP/1.1\r\n".to_vec();
        while huge.len() <= MAX_HEAD {
            huge.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        huge.extend_from_slice(b"\r\n");
        assert_eq!(status(&huge), "HTTP/1.1 431");
        wait_until("failures counted", || {
            stats.connections_failed.load(Ordering::Relaxed) >= 2
        });
    }

    #[test]
    fn a_silent_connection_is_closed_at_the_header_timeout() {
        let limits = HttpLimits {
            header_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_secs(120),
            ..HttpLimits::default()
        };
        let (server, stats) = start(limits);
        let mut idle = TcpStream::connect(server.local_addr()).unwrap();
        // Far shorter than request_timeout: only the head deadline can close
        // it before this read gives up.
        idle.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut rest = Vec::new();
        match idle.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
        // The count and the close are two steps of the connection's task:
        // wait for both rather than look once.
        wait_until("the timeout counted and the slot freed", || {
            stats.connections_timed_out.load(Ordering::Relaxed) == 1
                && stats.connections_open.load(Ordering::Relaxed) == 0
        });
    }

    #[test]
    fn a_client_that_never_reads_its_answer_is_cut_at_the_request_timeout() {
        // A large answer (as /metrics is with many shards) to a client that
        // does not read it: only the overall deadline frees the slot.
        let limits = HttpLimits {
            request_timeout: Duration::from_millis(500),
            ..HttpLimits::default()
        };
        let stats = Arc::new(HttpStats::default());
        let large = Bytes::from(vec![b'x'; 16 << 20]);
        let handler: Handler =
            Arc::new(move |_: &mut Request<Incoming>| plain(StatusCode::OK, large.clone()));
        let server = HttpServer::start(
            "large",
            "127.0.0.1:0".parse().unwrap(),
            limits,
            stats.clone(),
            handler,
        )
        .unwrap();
        let mut stream = TcpStream::connect(server.local_addr()).unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        wait_until("the deadline counted and the slot freed", || {
            stats.connections_timed_out.load(Ordering::Relaxed) == 1
                && stats.connections_open.load(Ordering::Relaxed) == 0
        });
        // What the server had sent is still readable, then the close: less
        // than the whole answer.
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut received = Vec::new();
        let _ = stream.read_to_end(&mut received);
        assert!(received.len() < 16 << 20, "{} bytes", received.len());
    }

    #[test]
    fn over_the_cap_a_client_is_answered_503_and_served_again_once_a_slot_frees() {
        let limits = HttpLimits {
            max_connections: 2,
            max_connections_per_source: 2,
            header_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
        };
        let (server, stats) = start(limits);
        let addr = server.local_addr();
        let holders: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        wait_until("both slots taken", || {
            stats.connections_open.load(Ordering::Relaxed) == 2
        });
        let busy = exchange(addr, b"GET /certificate.sha256 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            busy.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{busy}"
        );
        wait_until("the refusal counted", || {
            stats.connections_refused.load(Ordering::Relaxed) == 1
        });
        drop(holders);
        wait_until("slots freed", || {
            stats.connections_open.load(Ordering::Relaxed) == 0
        });
        let ok = exchange(addr, b"GET /certificate.sha256 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with(HEX),
            "{ok}"
        );
    }

    #[test]
    fn one_source_cannot_hold_more_than_its_share() {
        let limits = HttpLimits {
            max_connections: 8,
            max_connections_per_source: 2,
            header_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
        };
        let (server, stats) = start(limits);
        let addr = server.local_addr();
        let from = |ip: [u8; 4]| {
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            socket.bind(&SocketAddr::from((ip, 0)).into()).unwrap();
            socket.connect(&addr.into()).unwrap();
            TcpStream::from(socket)
        };
        let _held: Vec<TcpStream> = (0..2).map(|_| from([127, 0, 0, 2])).collect();
        wait_until("both held", || {
            stats.connections_open.load(Ordering::Relaxed) == 2
        });
        let mut third = from([127, 0, 0, 2]);
        third
            .write_all(b"GET /certificate.sha256 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        third
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut text = String::new();
        third.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert_eq!(
            stats.connections_refused_per_source.load(Ordering::Relaxed),
            1
        );
        // Another source still gets in.
        let ok = exchange(addr, b"GET /certificate.sha256 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    }

    #[test]
    fn ipv6_sources_are_counted_by_their_64_prefix() {
        let a = Source::of("2001:db8:1:2::1".parse().unwrap());
        let b = Source::of("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = Source::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            Source::of("::ffff:192.0.2.1".parse().unwrap()),
            Source::of("192.0.2.1".parse().unwrap())
        );
    }

    /// A listener that takes TLS with a generated certificate, beside
    /// plain HTTP on the same port.
    fn start_tls(limits: HttpLimits) -> (HttpServer, Arc<HttpStats>) {
        let source = crate::tls::CertificateSource::Generate {
            names: vec!["localhost".into()],
        };
        let quic = crate::tls::server_tls(&source, vec![b"moq-lite-05".to_vec()]).unwrap();
        let tcp = crate::tls::tcp_server_tls(&quic.config).unwrap();
        let stats = Arc::new(HttpStats::default());
        let server = serve_certificate_hash(
            "127.0.0.1:0".parse().unwrap(),
            Some(HEX.into()),
            limits,
            stats.clone(),
            None,
            Some(tcp),
        )
        .unwrap();
        (server, stats)
    }

    /// `request` over TLS (any certificate, offering `alpn`); the whole
    /// answer and the protocol the server chose.
    fn tls_exchange(addr: SocketAddr, alpn: &[&[u8]], request: &[u8]) -> (String, Option<Vec<u8>>) {
        let client = crate::tls::any_certificate_client(alpn);
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut tls = rustls::StreamOwned::new(client, stream);
        tls.write_all(request).unwrap();
        let mut answer = Vec::new();
        // The server closes without close_notify after hyper's answer is
        // out: an unexpected EOF after the whole answer.
        let _ = tls.read_to_end(&mut answer);
        let protocol = tls.conn.alpn_protocol().map(<[u8]>::to_vec);
        (String::from_utf8(answer).unwrap(), protocol)
    }

    #[test]
    fn one_port_serves_the_hash_over_tls_and_plain_http() {
        let (server, stats) = start_tls(HttpLimits::default());
        let addr = server.local_addr();
        let request = b"GET /certificate.sha256 HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let (text, protocol) = tls_exchange(addr, &[b"h2", b"http/1.1"], request);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with(HEX), "{text}");
        assert_eq!(protocol.as_deref(), Some(&b"http/1.1"[..]));
        // A client that offers no ALPN is served too (tungstenite's
        // rustls connector offers none).
        let (text, protocol) = tls_exchange(addr, &[], request);
        assert!(text.ends_with(HEX), "{text}");
        assert_eq!(protocol, None);
        let plain = exchange(addr, request);
        assert!(plain.starts_with("HTTP/1.1 200 OK\r\n"), "{plain}");
        wait_until("both handshakes counted", || {
            stats.tls_handshakes.load(Ordering::Relaxed) == 2
        });
        assert_eq!(stats.tls_handshake_failures.load(Ordering::Relaxed), 0);
        assert_eq!(stats.requests.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_bad_or_unfinished_tls_handshake_closes_only_its_own_connection() {
        let limits = HttpLimits {
            header_timeout: Duration::from_millis(500),
            ..HttpLimits::default()
        };
        let (server, stats) = start_tls(limits);
        let addr = server.local_addr();
        // Half a handshake: a record header, then nothing. Held open
        // while the others are served.
        let mut half = TcpStream::connect(addr).unwrap();
        half.write_all(&[0x16, 0x03, 0x01]).unwrap();
        // A handshake record full of garbage: refused with an alert.
        let mut garbage = TcpStream::connect(addr).unwrap();
        let mut record = vec![0x16, 0x03, 0x01, 0x00, 0x40];
        record.extend(std::iter::repeat_n(0xa5, 0x40));
        garbage.write_all(&record).unwrap();
        garbage
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = garbage.read_to_end(&mut rest);
        // A TLS alert record (0x15), if anything came back before the close.
        assert!(rest.is_empty() || rest[0] == 0x15, "{rest:?}");
        wait_until("the garbage counted", || {
            stats.tls_handshake_failures.load(Ordering::Relaxed) >= 1
        });
        let request = b"GET /certificate.sha256 HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let (text, _) = tls_exchange(addr, &[b"http/1.1"], request);
        assert!(text.ends_with(HEX), "{text}");
        assert!(exchange(addr, request).ends_with(HEX));
        // The half handshake is cut at the head's deadline.
        half.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = half.read_to_end(&mut rest);
        wait_until("both failures counted and the slots freed", || {
            stats.tls_handshake_failures.load(Ordering::Relaxed) == 2
                && stats.connections_open.load(Ordering::Relaxed) == 0
        });
        assert_eq!(stats.tls_handshakes.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn stopping_closes_the_listener() {
        let (server, _) = start(HttpLimits::default());
        let addr = server.local_addr();
        server.stop();
        assert!(TcpStream::connect(addr).is_err(), "still listening");
    }
}
