//! QMux over WebSocket: the transport browsers without WebTransport (and
//! moq-native clients racing it) fall back to.
//!
//! # Where it runs
//!
//! The upgrade request arrives on the TCP listener at the QUIC port
//! ([`crate::http`], a hyper thread off the shards), plain (`ws://`) or
//! inside TLS (`wss://`; the TLS session then travels with the socket and
//! the shard goes on with it, sans-IO). [`upgrader`] answers
//! it: `101 Switching Protocols` with the subprotocol chosen by
//! [`negotiate`], or `400` when the client offers none we speak. The
//! upgraded socket then leaves the HTTP thread: it is handed, with any
//! bytes already read past the request, to one shard through the mesh
//! ([`WebSocketDoor`]), which runs the session on it like a QUIC one. The
//! shards take turns (round robin over upgrades), so TCP sessions spread
//! evenly, as QUIC connections spread by the kernel's hash.
//!
//! # Wire
//!
//! The subprotocol is `qmux-00.<alpn>` for a moq-lite ALPN we serve
//! (`qmux-00.moq-lite-05`): QMux draft-00 frames, one per binary message,
//! on QUIC's stream and flow-control model ([`crate::qmux`]). moq-native
//! 0.14 (`moq-clock --websocket-enabled`, the `moq` CLI) offers
//! `qmux-00.<alpn>`, and `@moq/net` 0.3 (`@moq/qmux`) offers it beside
//! `qmux-01`/`qmux-02`; both get draft-00. The legacy `webtransport`
//! framing and the record-framed drafts are not served.
//!
//! # Bounds
//!
//! WebSocket framing is tungstenite's, driven sans-IO over buffers: a
//! message or frame over [`MAX_FRAME_SIZE`] is refused from its header,
//! before its payload is buffered; the connection closes with WebSocket
//! code 1009 (and QMux FRAME_ENCODING_ERROR), a malformed frame with 1002
//! (and the QMux error that fits). Streams and buffers are bounded by
//! [`QmuxLimits`](crate::qmux::QmuxLimits). A peer that vanishes without a FIN is found by TCP
//! keep-alive (about 25 s).

use std::cell::RefCell;
use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use tracing::debug;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error as WsError, Message};

use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::handoff::Handoff;
use crate::http::{plain, HttpResponse, PeerAddr, Upgrader};
use crate::lite::Version;
use crate::metrics::RelayStats;
use crate::qmux::codec::{TransportCode, MAX_FRAME_SIZE};
use crate::qmux::{QmuxError, QmuxTransport};
use crate::session::transport::Transport;
use crate::task::race;

/// A `wss://` connection on the HTTP thread.
type TlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

pub mod client;
mod wire;

pub use wire::SocketWire;

/// The QMux draft this relay speaks, as a subprotocol prefix.
pub const QMUX_PREFIX: &str = "qmux-00.";

/// The subprotocol to accept from a client's `Sec-WebSocket-Protocol`
/// values, and the moq-lite version it names: our newest version the
/// client offers as `qmux-00.<alpn>`.
pub fn negotiate<'a>(offered: impl IntoIterator<Item = &'a str>) -> Option<(String, Version)> {
    let offered: Vec<&str> = offered
        .into_iter()
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    Version::ALL.into_iter().find_map(|version| {
        let name = format!("{QMUX_PREFIX}{}", version.alpn());
        offered.contains(&name.as_str()).then_some((name, version))
    })
}

/// Posts a handoff to a shard; false if that shard is gone.
type Deliver = Box<dyn Fn(usize, Handoff) -> bool + Send + Sync>;

/// Where the HTTP thread sends upgraded sockets: attached to the shards
/// once they run (the listener starts first); until then upgrades are
/// refused with 503.
#[derive(Default)]
pub struct WebSocketDoor {
    deliver: OnceLock<(usize, Deliver)>,
    next: AtomicUsize,
}

impl std::fmt::Debug for WebSocketDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketDoor")
            .field("attached", &self.deliver.get().is_some())
            .finish()
    }
}

impl WebSocketDoor {
    /// Deliver handoffs to `shards` shards through `deliver(shard, handoff)`.
    pub fn attach(
        &self,
        shards: usize,
        deliver: impl Fn(usize, Handoff) -> bool + Send + Sync + 'static,
    ) {
        let _ = self.deliver.set((shards.max(1), Box::new(deliver)));
    }

    pub fn is_open(&self) -> bool {
        self.deliver.get().is_some()
    }

    /// Send `handoff` to the next shard in turn; false if none took it.
    pub fn hand_off(&self, handoff: Handoff) -> bool {
        let Some((shards, deliver)) = self.deliver.get() else {
            return false;
        };
        let shard = self.next.fetch_add(1, Ordering::Relaxed) % shards;
        deliver(shard, handoff)
    }
}

/// How often TCP keep-alive probes a silent peer, and how many unanswered
/// probes end it: a peer that vanished is gone within about 25 s, as QUIC's
/// idle timeout would find.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

/// Ready an upgraded socket for its shard: keep-alive on, blocking mode
/// left to the shard's runtime.
pub fn prepare_socket(socket: &std::net::TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    if let Err(error) = socket2::SockRef::from(socket).set_tcp_keepalive(&keepalive) {
        debug!(%error, "cannot set TCP keep-alive on a WebSocket");
    }
    let _ = socket.set_nodelay(true);
}

/// The `Sec-WebSocket-Accept` value for a client's key.
pub fn accept_key(key: &[u8]) -> String {
    tungstenite::handshake::derive_accept_key(key)
}

/// The largest WebSocket message (and frame) read: one QMux frame.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_SIZE))
        .max_frame_size(Some(MAX_FRAME_SIZE))
        .read_buffer_size(MAX_FRAME_SIZE + 16)
}

/// tungstenite's stream, as buffers: reads take what the socket brought
/// (`WouldBlock` when empty), writes collect what goes to the socket.
#[derive(Default)]
struct Buffers {
    input: BytesMut,
    output: Vec<u8>,
}

impl Read for Buffers {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.input.is_empty() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input.split_to(n));
        Ok(n)
    }
}

impl Write for Buffers {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Socket {
    ws: WebSocketContext,
    /// For `wss://`: the TLS session between the socket and `io`.
    tls: Option<Box<rustls::ServerConnection>>,
    io: Buffers,
    /// The WebSocket close code to end with, once QMux has said its last.
    close: Option<CloseCode>,
    /// The writer, waiting for output.
    writer: Option<Waker>,
    read_done: bool,
}

impl Socket {
    fn wake_writer(&mut self) {
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }

    /// Take `bytes` from the socket: as they are, or through TLS (its
    /// records decrypted, and the plaintext appended to the input). Also
    /// called with nothing, for what the TLS session already held when it
    /// arrived. True once the peer has sent TLS `close_notify`.
    fn receive(&mut self, mut bytes: &[u8]) -> std::io::Result<bool> {
        let Some(tls) = self.tls.as_deref_mut() else {
            self.io.input.extend_from_slice(bytes);
            return Ok(false);
        };
        loop {
            // Takes what rustls' record buffer has room for; nothing only
            // after close_notify (reported by the reads below).
            let took_nothing = !bytes.is_empty() && tls.read_tls(&mut bytes)? == 0;
            tls.process_new_packets()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match tls.reader().read(&mut chunk) {
                    Ok(0) => return Ok(true),
                    Ok(n) => self.io.input.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if bytes.is_empty() {
                return Ok(false);
            }
            if took_nothing {
                // Never spin on bytes rustls will not take.
                return Ok(true);
            }
        }
    }

    /// What goes to the socket now: tungstenite's output as it is, or
    /// encrypted, with whatever else TLS has to send (its alerts, and
    /// `close_notify` when `last`).
    fn outgoing(&mut self, last: bool) -> Vec<u8> {
        let plain = std::mem::take(&mut self.io.output);
        let Some(tls) = self.tls.as_deref_mut() else {
            return plain;
        };
        if !plain.is_empty() {
            // Unbounded (see `drive_stream`), so rustls takes it all; it
            // refuses only after a fatal error, when nothing more is sent.
            let _ = tls.writer().write_all(&plain);
        }
        if last {
            tls.send_close_notify();
        }
        let mut out = Vec::with_capacity(plain.len() + 256);
        while tls.wants_write() {
            if tls.write_tls(&mut out).is_err() {
                break;
            }
        }
        out
    }
}

/// Counters for what a WebSocket peer did wrong.
fn count_error(stats: &RelayStats, error: &WsError) {
    match error {
        WsError::Capacity(_) => stats.websocket_messages_too_large.inc(),
        _ => stats.websocket_protocol_errors.inc(),
    }
}

/// How long a closed connection may take to send its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Run the socket under `transport` until the connection ends: the reader
/// feeds received messages to it, the writer sends its frames, then a
/// WebSocket close, then the socket is shut down. The transport takes its
/// byte counts and estimate from the socket ([`SocketWire`]) before this
/// returns, so that a session started next offers PROBE in its SETUP.
pub fn drive(
    transport: QmuxTransport,
    socket: std::net::TcpStream,
    early: Bytes,
    tls: Option<Box<rustls::ServerConnection>>,
    stats: Arc<RelayStats>,
) -> impl Future<Output = ()> {
    let driven = match monoio::net::TcpStream::from_std(socket) {
        Ok(stream) => Some(drive_stream(transport, stream, early, tls, stats)),
        Err(error) => {
            debug!(%error, "WebSocket socket unusable on the shard");
            transport.lost();
            None
        }
    };
    async move {
        if let Some(driven) = driven {
            driven.await
        }
    }
}

/// [`drive`] on a socket already in the shard's runtime (a client's, from
/// [`client::dial`]). The WebSocket's role is the transport's: a server
/// end reads masked frames, a client end masks what it writes. With `tls`
/// (`wss://`), every byte on the socket goes through that session, driven
/// sans-IO: `early` is plaintext hyper read past the request, and the
/// session may hold more, read but not yet taken.
pub fn drive_stream(
    transport: QmuxTransport,
    stream: monoio::net::TcpStream,
    early: Bytes,
    tls: Option<Box<rustls::ServerConnection>>,
    stats: Arc<RelayStats>,
) -> impl Future<Output = ()> {
    let wire = SocketWire::new(stream.as_raw_fd());
    transport.set_wire(wire.clone());
    run(transport, stream, early, tls, stats, wire)
}

async fn run(
    transport: QmuxTransport,
    stream: monoio::net::TcpStream,
    early: Bytes,
    mut tls: Option<Box<rustls::ServerConnection>>,
    stats: Arc<RelayStats>,
    wire: Rc<SocketWire>,
) {
    let role = match transport.is_server() {
        true => Role::Server,
        false => Role::Client,
    };
    let fd = stream.as_raw_fd();
    let (read, mut write) = stream.into_split();
    let mut io = Buffers::default();
    io.input.extend_from_slice(&early);
    if let Some(tls) = tls.as_deref_mut() {
        // The writer drains the session after every batch (at most
        // 64 KiB and a frame), so its own cap (64 KiB, which would make a
        // larger write short) is not needed to bound it.
        tls.set_buffer_limit(None);
    }
    let mut socket = Socket {
        ws: WebSocketContext::new(role, Some(ws_config())),
        tls,
        io,
        close: None,
        writer: None,
        read_done: false,
    };
    // What the TLS session read on the HTTP thread and hyper did not take.
    let peer_ended = match socket.receive(&[]) {
        Ok(ended) => ended,
        Err(error) => {
            stats.websocket_protocol_errors.inc();
            debug!(%error, "TLS failed on a WebSocket's first records");
            true
        }
    };
    let state = Rc::new(RefCell::new(socket));
    let reader = monoio::spawn(read_loop(
        read,
        state.clone(),
        transport.clone(),
        stats,
        peer_ended,
        wire.clone(),
    ));
    // Once the connection is closed, its last frames and the WebSocket
    // close get a grace period: a peer that stops reading cannot hold the
    // socket (and this task) for ever.
    let grace = async {
        transport.closed().await;
        monoio::time::sleep(CLOSE_GRACE).await;
    };
    race(write_loop(&mut write, &state, &transport, &wire), grace).await;
    // The descriptor may be another socket's once both halves are gone.
    wire.detach();
    // Ends the reader's pending read (it sees the end of the stream) even
    // if the peer never closes its side. The write half is still held
    // here (borrowed by the writer, not moved into it), so the descriptor
    // is still this socket's even if the reader has already ended.
    // SAFETY: shutdown(2) on a descriptor we own; no memory is involved.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
    reader.await;
    drop(write);
}

/// Feed what arrives on the socket to tungstenite, and each binary
/// message to QMux.
async fn read_loop(
    mut read: monoio::net::tcp::TcpOwnedReadHalf,
    state: Rc<RefCell<Socket>>,
    transport: QmuxTransport,
    stats: Arc<RelayStats>,
    mut peer_ended: bool,
    wire: Rc<SocketWire>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    'socket: loop {
        {
            let mut guard = state.borrow_mut();
            let socket = &mut *guard;
            loop {
                let error = match socket.ws.read(&mut socket.io) {
                    Ok(Message::Binary(message)) => match transport.receive(message) {
                        Ok(()) => continue,
                        Err(error) => {
                            stats.websocket_protocol_errors.inc();
                            debug!(%error, "QMux protocol error; closing the WebSocket");
                            socket.close = Some(CloseCode::Protocol);
                            break 'socket;
                        }
                    },
                    Ok(Message::Text(_)) => {
                        stats.websocket_protocol_errors.inc();
                        transport.fail(QmuxError {
                            code: TransportCode::PROTOCOL_VIOLATION,
                            reason: "text message",
                        });
                        socket.close = Some(CloseCode::Unsupported);
                        break 'socket;
                    }
                    Ok(Message::Close(_)) => {
                        // tungstenite has queued its answer; QMux is over.
                        transport.lost();
                        break 'socket;
                    }
                    Ok(_) => continue,
                    Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(error) => error,
                };
                match error {
                    WsError::ConnectionClosed | WsError::AlreadyClosed => {
                        transport.lost();
                    }
                    error => {
                        count_error(&stats, &error);
                        debug!(%error, "WebSocket error; closing it");
                        let (code, ws_code) = match error {
                            WsError::Capacity(_) => {
                                (TransportCode::FRAME_ENCODING_ERROR, CloseCode::Size)
                            }
                            _ => (TransportCode::PROTOCOL_VIOLATION, CloseCode::Protocol),
                        };
                        transport.fail(QmuxError {
                            code,
                            reason: "WebSocket message refused",
                        });
                        socket.close = Some(ws_code);
                    }
                }
                break 'socket;
            }
            socket.wake_writer();
        }
        // TLS close_notify (or a TLS failure): what came before it has
        // been read; nothing more will be.
        if peer_ended {
            transport.lost();
            break;
        }
        buf.clear();
        let (result, returned) = read.read(buf).await;
        buf = returned;
        match result {
            Ok(0) | Err(_) => {
                transport.lost();
                break;
            }
            Ok(n) => {
                wire.received(n);
                let received = state.borrow_mut().receive(&buf[..n]);
                match received {
                    Ok(ended) => peer_ended = ended,
                    Err(error) => {
                        stats.websocket_protocol_errors.inc();
                        debug!(%error, "TLS failed on a WebSocket; closing it");
                        peer_ended = true;
                    }
                }
            }
        }
    }
    let mut socket = state.borrow_mut();
    socket.read_done = true;
    socket.wake_writer();
}

/// What the writer does next.
enum Next {
    /// Bytes for the socket.
    Send(Vec<u8>),
    /// Nothing more: the connection is over.
    Done,
}

/// Move QMux's frames through tungstenite to the socket; after QMux's
/// last frame, a WebSocket close.
async fn write_loop(
    write: &mut monoio::net::tcp::TcpOwnedWriteHalf,
    state: &Rc<RefCell<Socket>>,
    transport: &QmuxTransport,
    wire: &SocketWire,
) {
    loop {
        let next = std::future::poll_fn(|cx| {
            let mut guard = state.borrow_mut();
            let socket = &mut *guard;
            let mut finished = false;
            // Up to a batch of frames per socket write.
            while socket.io.output.len() < 64 * 1024 {
                match transport.poll_outbound(cx) {
                    Poll::Ready(Some(frame)) => {
                        if socket
                            .ws
                            .write(&mut socket.io, Message::Binary(frame))
                            .is_err()
                        {
                            finished = true;
                            break;
                        }
                    }
                    Poll::Ready(None) => {
                        finished = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if finished {
                let code = socket.close.unwrap_or(CloseCode::Normal);
                let frame = CloseFrame {
                    code,
                    reason: "".into(),
                };
                let _ = socket.ws.close(&mut socket.io, Some(frame));
            }
            let _ = socket.ws.flush(&mut socket.io);
            let bytes = socket.outgoing(finished);
            if !bytes.is_empty() {
                return Poll::Ready(Next::Send(bytes));
            }
            if finished || (socket.read_done && transport.is_closed()) {
                return Poll::Ready(Next::Done);
            }
            socket.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        match next {
            Next::Send(bytes) => {
                let (result, _) = write.write_all(bytes).await;
                match result {
                    Ok(n) => wire.sent(n),
                    Err(_) => {
                        transport.lost();
                        return;
                    }
                }
            }
            Next::Done => return,
        }
    }
}

/// The certificate listener's hook: WebSocket upgrades answered by
/// [`answer_upgrade`], every other request left to the listener.
pub fn upgrader(door: Arc<WebSocketDoor>) -> Upgrader {
    Arc::new(move |request: &mut Request<Incoming>| {
        is_upgrade(request).then(|| answer_upgrade(request, &door))
    })
}

/// Whether a request asks for a WebSocket (`Upgrade: websocket`).
pub fn is_upgrade<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
}

/// Answer a WebSocket upgrade (RFC 6455 §4.2): `101` with our subprotocol,
/// the socket then handed to a shard; or the error that says why not.
pub fn answer_upgrade(request: &mut Request<Incoming>, door: &Arc<WebSocketDoor>) -> HttpResponse {
    let headers = request.headers();
    let has_token = |name, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case(token))
    };
    if request.method() != Method::GET || !has_token(header::CONNECTION, "upgrade") {
        return plain(StatusCode::BAD_REQUEST, "not a WebSocket upgrade\n");
    }
    if !has_token(header::SEC_WEBSOCKET_VERSION, "13") {
        let mut response = plain(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only\n");
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return plain(StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key\n");
    };
    let accept = accept_key(key.as_bytes());
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let Some((protocol, version)) = negotiate(offered) else {
        debug!("WebSocket upgrade refused: no qmux-00 moq-lite subprotocol offered");
        return plain(StatusCode::BAD_REQUEST, "no supported subprotocol\n");
    };
    if !door.is_open() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "starting\n");
    }
    let (Ok(accept), Ok(protocol_value)) = (
        HeaderValue::from_str(&accept),
        HeaderValue::from_str(&protocol),
    ) else {
        return plain(StatusCode::BAD_REQUEST, "bad WebSocket key\n");
    };
    let remote = request.extensions().get::<PeerAddr>().map(|p| p.0);
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    let upgrade = hyper::upgrade::on(request);
    let door = door.clone();
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => return debug!(%error, "WebSocket upgrade failed"),
        };
        // `ws://` on the bare socket, or `wss://`: then the TLS session
        // leaves with it.
        let (stream, tls, early) = match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
            Ok(parts) => (parts.io.into_inner(), None, parts.read_buf),
            Err(upgraded) => match upgraded.downcast::<TokioIo<TlsStream>>() {
                Ok(parts) => {
                    let (stream, tls) = parts.io.into_inner().into_inner();
                    (stream, Some(Box::new(tls)), parts.read_buf)
                }
                Err(_) => return debug!("upgraded connection is neither TCP nor TLS on TCP"),
            },
        };
        let socket = match stream.into_std() {
            Ok(socket) => socket,
            Err(error) => return debug!(%error, "cannot take the upgraded socket"),
        };
        prepare_socket(&socket);
        let handoff = Handoff {
            socket,
            early,
            tls,
            version,
            remote,
            path,
            query,
        };
        // Dropped (closed) if no shard takes it: the relay is stopping.
        if !door.hand_off(handoff) {
            debug!("no shard took the WebSocket");
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol_value);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLS client and a [`Socket`] holding the server's end, with the
    /// handshake done in memory.
    fn tls_pair() -> (rustls::ClientConnection, Socket) {
        let source = crate::tls::CertificateSource::Generate {
            names: vec!["localhost".into()],
        };
        let quic = crate::tls::server_tls(&source, Vec::new()).unwrap();
        let server_config = crate::tls::tcp_server_tls(&quic.config).unwrap();
        let mut server = rustls::ServerConnection::new(server_config).unwrap();
        let mut client = crate::tls::any_certificate_client(&[]);
        while client.is_handshaking() || server.is_handshaking() {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            server.read_tls(&mut &wire[..]).unwrap();
            server.process_new_packets().unwrap();
            let mut wire = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            client.read_tls(&mut &wire[..]).unwrap();
            client.process_new_packets().unwrap();
        }
        let socket = Socket {
            ws: WebSocketContext::new(Role::Server, Some(ws_config())),
            tls: Some(Box::new(server)),
            io: Buffers::default(),
            close: None,
            writer: None,
            read_done: false,
        };
        (client, socket)
    }

    fn ciphertext(client: &mut rustls::ClientConnection) -> Vec<u8> {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        wire
    }

    #[test]
    fn tls_records_become_input_and_output_becomes_records() {
        let (mut client, mut socket) = tls_pair();
        // More than one record's worth (16 KiB), fed a few bytes at a time.
        let message: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        client.writer().write_all(&message).unwrap();
        let wire = ciphertext(&mut client);
        for piece in wire.chunks(1000) {
            assert!(!socket.receive(piece).unwrap(), "ended early");
        }
        assert_eq!(&socket.io.input[..], &message[..]);

        socket.io.output.extend_from_slice(b"answer");
        let out = socket.outgoing(true);
        client.read_tls(&mut &out[..]).unwrap();
        let state = client.process_new_packets().unwrap();
        assert!(state.peer_has_closed(), "close_notify sent last");
        let mut answer = Vec::new();
        client.reader().read_to_end(&mut answer).unwrap();
        assert_eq!(answer, b"answer");
    }

    #[test]
    fn close_notify_ends_the_input_and_garbage_is_an_error() {
        let (mut client, mut socket) = tls_pair();
        client.writer().write_all(b"last words").unwrap();
        client.send_close_notify();
        let mut wire = ciphertext(&mut client);
        // Bytes after the close: rustls takes none of them, and the
        // socket must not spin on them.
        wire.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x01, 0x00]);
        assert!(socket.receive(&wire).unwrap(), "close_notify seen");
        assert_eq!(&socket.io.input[..], b"last words");
        assert!(socket.receive(&wire[..3]).unwrap(), "still closed");

        let (_, mut socket) = tls_pair();
        let garbage = [0x17, 0x03, 0x03, 0x00, 0x20].iter().chain(&[0x5a; 0x20]);
        let garbage: Vec<u8> = garbage.copied().collect();
        let error = socket.receive(&garbage).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
    }

    #[test]
    fn the_newest_offered_qmux_00_version_is_chosen() {
        // moq-native 0.14's qmux 0.0.7 offer.
        let native =
            "qmux-00, qmux-00.moq-lite-04, qmux-00.moql, webtransport, webtransport.moq-lite-04";
        assert_eq!(
            negotiate([native]),
            Some(("qmux-00.moq-lite-04".to_string(), Version::Lite04))
        );
        // @moq/qmux 0.3: every draft for each ALPN, across header lines.
        let js = [
            "qmux-02.moq-lite-05, qmux-01.moq-lite-05, qmux-00.moq-lite-05",
            "qmux-00.moq-lite-04, qmux-02, qmux-01, qmux-00, webtransport",
        ];
        assert_eq!(
            negotiate(js),
            Some(("qmux-00.moq-lite-05".to_string(), Version::Lite05))
        );
    }

    #[test]
    fn nothing_we_speak_is_refused() {
        assert_eq!(
            negotiate(["webtransport, qmux-00, qmux-01.moq-lite-05"]),
            None
        );
        assert_eq!(negotiate(Vec::<&str>::new()), None);
        assert_eq!(negotiate(["qmux-00.moq-lite-99"]), None);
    }
}
