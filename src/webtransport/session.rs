//! An established session: its streams, its close, and the background tasks
//! that sort the peer's streams and watch the CONNECT stream.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use qumo_shards::{Connection, ConnectionError, RecvStream, SendStream, WaitList};
use tracing::{debug, warn};
use web_transport_proto::Capsule;

use super::codec::{self, CapsuleParser};
use super::reader::Reader;
use super::{error_code, h3, h3_code, WtError};

/// Largest SETTINGS frame accepted from the peer, with its GREASE frames.
const MAX_SETTINGS: usize = codec::MAX_FRAME + 16;

/// State shared by the session handles and the background tasks. Lives until
/// the connection ends and the last handle is gone.
pub(crate) struct Shared {
    pub(crate) conn: Connection,
    /// Everyone waiting for something below; woken together.
    waiters: WaitList,
    /// The outcome of the peer's SETTINGS, once its control stream said.
    peer_settings: RefCell<Option<Result<(), WtError>>>,
    seen_control: Cell<bool>,
    /// Our control stream: open for the life of the connection, as HTTP/3
    /// requires (closing it is a connection error for the peer).
    control: RefCell<Option<SendStream>>,
    /// Peer streams with a complete WebTransport prefix: the session id they
    /// name, the stream and the bytes read past the prefix.
    uni: RefCell<VecDeque<(u64, Reader)>>,
    bi: RefCell<VecDeque<(u64, SendStream, Reader)>>,
    /// Why the session ended, first reason wins.
    error: RefCell<Option<WtError>>,
}

impl Shared {
    pub(crate) fn new(conn: Connection) -> Self {
        Self {
            conn,
            waiters: WaitList::default(),
            peer_settings: RefCell::default(),
            seen_control: Cell::new(false),
            control: RefCell::default(),
            uni: RefCell::default(),
            bi: RefCell::default(),
            error: RefCell::default(),
        }
    }

    fn notify(&self) {
        self.waiters.wake_all();
    }

    /// Wait until `ready` yields, failing when the session or the connection
    /// ends first.
    async fn wait<T>(&self, mut ready: impl FnMut(&Self) -> Option<T>) -> Result<T, WtError> {
        let waiter = self.waiters.waiter();
        poll_fn(|cx: &mut Context<'_>| {
            if let Some(error) = self.error.borrow().clone() {
                return Poll::Ready(Err(error));
            }
            if let Some(value) = ready(self) {
                return Poll::Ready(Ok(value));
            }
            if let Some(error) = self.conn.close_reason() {
                return Poll::Ready(Err(self.failure(error)));
            }
            waiter.register(cx);
            Poll::Pending
        })
        .await
    }

    /// Record why the session ended; false if a reason was already recorded.
    fn set_error(&self, error: WtError) -> bool {
        let mut slot = self.error.borrow_mut();
        if slot.is_some() {
            return false;
        }
        *slot = Some(error);
        drop(slot);
        self.notify();
        true
    }

    /// The session's own reason replaces a connection-level failure, so that
    /// callers see "closed by the peer with code 7" rather than "locally
    /// closed" once the capsule handling has closed the connection.
    pub(crate) fn failure(&self, error: impl Into<WtError>) -> WtError {
        let error = error.into();
        match (&error, self.error.borrow().as_ref()) {
            (WtError::Connection(_) | WtError::Closed { .. }, Some(stored)) => stored.clone(),
            _ => error,
        }
    }

    pub(crate) fn keep_control(&self, control: SendStream) {
        *self.control.borrow_mut() = Some(control);
    }

    /// The peer's SETTINGS, once its control stream has delivered them.
    pub(crate) async fn peer_settings(&self) -> Result<(), WtError> {
        self.wait(|s| s.peer_settings.borrow_mut().take()).await?
    }

    /// Time to let a close or a refusal reach the peer before closing the
    /// connection: three round trips, at least 100 ms (web-transport-quinn).
    pub(crate) fn grace(&self) -> Duration {
        let rtt = self.conn.stats().map(|s| s.rtt).unwrap_or_default();
        (rtt * 3).max(Duration::from_millis(100))
    }
}

/// Sort the peer's unidirectional streams by type, for the connection's life.
pub(crate) async fn serve_peer_uni(shared: Rc<Shared>) {
    while let Ok(recv) = shared.conn.accept_uni().await {
        monoio::spawn(sort_uni(shared.clone(), Reader::new(recv)));
    }
    shared.notify();
}

async fn sort_uni(shared: Rc<Shared>, mut reader: Reader) {
    let Ok(kind) = reader.varint().await else {
        return; // reset or ended before its type: nothing to do
    };
    match kind {
        codec::STREAM_WEBTRANSPORT => {
            if let Ok(id) = reader.varint().await {
                shared.uni.borrow_mut().push_back((id, reader));
                shared.notify();
            }
        }
        codec::STREAM_CONTROL if !shared.seen_control.replace(true) => {
            let settings = reader
                .decode(MAX_SETTINGS, "SETTINGS frame", codec::settings_frame)
                .await;
            let outcome = match settings {
                Ok(s) if s.supports_webtransport() == 0 => Err(WtError::Unsupported),
                Ok(s) => {
                    debug!(settings = ?s, "peer SETTINGS");
                    Ok(())
                }
                Err(WtError::UnexpectedEnd) => Err(WtError::Settings(
                    "control stream ended before SETTINGS".into(),
                )),
                Err(e) => Err(e),
            };
            let ok = outcome.is_ok();
            *shared.peer_settings.borrow_mut() = Some(outcome);
            shared.notify();
            if ok {
                reader.drain().await;
            }
        }
        codec::STREAM_QPACK_ENCODER | codec::STREAM_QPACK_DECODER => reader.drain().await,
        // A second control stream, push streams (clients may not open them),
        // GREASE and unknown types (RFC 9114, sections 6.2 and 9).
        other => {
            debug!(stream_type = other, "refusing a unidirectional stream");
            reader.stop(h3::STREAM_CREATION_ERROR);
        }
    }
}

/// Sort the peer's bidirectional streams once the session is up.
async fn serve_peer_bi(shared: Rc<Shared>) {
    while let Ok((send, recv)) = shared.conn.accept_bi().await {
        monoio::spawn(sort_bi(shared.clone(), send, Reader::new(recv)));
    }
    shared.notify();
}

async fn sort_bi(shared: Rc<Shared>, mut send: SendStream, mut reader: Reader) {
    match reader.varint().await {
        Ok(codec::FRAME_WEBTRANSPORT) => {
            if let Ok(id) = reader.varint().await {
                shared.bi.borrow_mut().push_back((id, send, reader));
                shared.notify();
            }
        }
        Ok(other) => {
            // An HTTP/3 request: this server serves only the session.
            debug!(frame_type = other, "rejecting a request stream");
            let _ = send.reset(h3_code(h3::REQUEST_REJECTED));
            reader.stop(h3::REQUEST_REJECTED);
        }
        Err(_) => {}
    }
}

/// Watch the CONNECT stream for the peer's close: a CLOSE_WEBTRANSPORT_SESSION
/// capsule, or the stream's end (a close with code 0). Either way the
/// connection is closed with the code, as web-transport-quinn does.
async fn watch_connect_stream(shared: Rc<Shared>, mut reader: Reader) {
    let outcome = read_close_capsule(&mut reader).await;
    let conn = &shared.conn;
    let (code, reason) = match outcome {
        Ok(Some(close)) => close,
        Ok(None) => (0, String::new()),
        Err(error) => {
            if let Some(lost) = conn.close_reason() {
                shared.set_error(shared.failure(lost));
                return;
            }
            warn!(%error, "CONNECT stream failed; closing the session");
            (0, String::new())
        }
    };
    if shared.set_error(WtError::Closed {
        code,
        reason: reason.clone(),
    }) {
        debug!(code, %reason, "peer closed the session");
        conn.close(error_code(code), reason.as_bytes());
    }
}

async fn read_close_capsule(reader: &mut Reader) -> Result<Option<(u32, String)>, WtError> {
    let mut parser = CapsuleParser::default();
    loop {
        while let Some(capsule) = parser.next()? {
            match capsule {
                Capsule::CloseWebTransportSession { code, reason } => {
                    return Ok(Some((code, reason)))
                }
                Capsule::Grease { .. } => {}
                Capsule::Unknown { typ, payload } => {
                    debug!(%typ, size = payload.len(), "ignoring an unknown capsule");
                }
            }
        }
        match reader.read_chunk().await? {
            Some(chunk) => parser.push(&chunk),
            None if parser.at_boundary() => return Ok(None),
            None => return Err(WtError::UnexpectedEnd),
        }
    }
}

/// What the handshake hands over to the session.
pub(crate) struct Established {
    pub(crate) session_id: u64,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) authority: String,
    pub(crate) protocol: Option<String>,
    pub(crate) connect_send: SendStream,
    pub(crate) connect_recv: Reader,
}

/// A WebTransport session on one connection of this shard. Cheap to clone;
/// never leaves the shard's thread.
///
/// Dropping every handle without [`close`](Self::close) finishes the CONNECT
/// stream, which the peer takes as a close with code 0.
#[derive(Clone)]
pub struct WtSession {
    inner: Rc<Inner>,
}

struct Inner {
    shared: Rc<Shared>,
    session_id: u64,
    path: String,
    query: Option<String>,
    authority: String,
    protocol: Option<String>,
    header_uni: Bytes,
    header_bi: Bytes,
    /// Taken by `close` to send the capsule.
    connect_send: RefCell<Option<SendStream>>,
}

impl std::fmt::Debug for WtSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WtSession")
            .field("connection", &self.inner.shared.conn)
            .field("session_id", &self.inner.session_id)
            .field("path", &self.inner.path)
            .field("protocol", &self.inner.protocol)
            .finish()
    }
}

impl WtSession {
    /// A session over an established handshake (see `handshake`'s
    /// `WtSession::accept`).
    pub(super) fn start(shared: Rc<Shared>, e: Established) -> Self {
        monoio::spawn(serve_peer_bi(shared.clone()));
        monoio::spawn(watch_connect_stream(shared.clone(), e.connect_recv));
        let inner = Inner {
            header_uni: codec::stream_header(codec::STREAM_WEBTRANSPORT, e.session_id),
            header_bi: codec::stream_header(codec::FRAME_WEBTRANSPORT, e.session_id),
            shared,
            session_id: e.session_id,
            path: e.path,
            query: e.query,
            authority: e.authority,
            protocol: e.protocol,
            connect_send: RefCell::new(Some(e.connect_send)),
        };
        Self {
            inner: Rc::new(inner),
        }
    }

    /// The path of the CONNECT URL, without the query (e.g. `/anon`).
    pub fn path(&self) -> &str {
        &self.inner.path
    }

    /// The query of the CONNECT URL, without `?` (e.g. `jwt=...`).
    pub fn query(&self) -> Option<&str> {
        self.inner.query.as_deref()
    }

    /// The `:authority` of the CONNECT request (host and port).
    pub fn authority(&self) -> &str {
        &self.inner.authority
    }

    /// The protocol answered in `wt-protocol`, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.inner.protocol.as_deref()
    }

    /// The session id: the id of the CONNECT stream.
    pub fn session_id(&self) -> u64 {
        self.inner.session_id
    }

    pub fn connection(&self) -> &Connection {
        &self.inner.shared.conn
    }

    /// The HTTP datagram prefix (RFC 9297): the quarter stream id of the
    /// CONNECT stream, which names this session.
    fn datagram_prefix(&self) -> Vec<u8> {
        let mut prefix = Vec::with_capacity(8);
        // A stream id over 4 is below 2^60.
        if let Ok(q) = web_transport_proto::VarInt::from_u64(self.inner.session_id / 4) {
            q.encode(&mut prefix);
        }
        prefix
    }

    /// The largest datagram payload the path takes now, after the prefix;
    /// 0 when the peer takes none.
    pub fn max_datagram_size(&self) -> usize {
        self.connection()
            .max_datagram_size()
            .map_or(0, |max| max.saturating_sub(self.datagram_prefix().len()))
    }

    /// Send `payload` as this session's datagram now, or refuse it (send
    /// buffer full, too large): never queued.
    pub fn try_send_datagram(&self, payload: &[u8]) -> Result<(), qumo_shards::DatagramError> {
        let mut datagram = self.datagram_prefix();
        datagram.extend_from_slice(payload);
        self.connection().try_send_datagram(datagram.into())
    }

    /// The peer's next datagram for this session, prefix removed. One
    /// session per connection, so one for another id is malformed: skipped.
    pub async fn read_datagram(&self) -> Result<Bytes, ConnectionError> {
        let quarter = self.inner.session_id / 4;
        loop {
            let datagram = self.connection().read_datagram().await?;
            if let Ok(Some((id, len))) = codec::varint(&datagram) {
                if id == quarter {
                    return Ok(datagram.slice(len..));
                }
            }
        }
    }

    fn check_open(&self) -> Result<(), WtError> {
        match self.inner.shared.error.borrow().clone() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Write a stream prefix at top priority so that it never queues behind
    /// data of other streams, then drop back to the default (as
    /// web-transport-quinn does).
    async fn write_header(&self, send: &mut SendStream, header: &Bytes) -> Result<(), WtError> {
        let _ = send.set_priority(i32::MAX);
        send.write_chunk(header.clone())
            .await
            .map_err(|e| self.inner.shared.failure(e))?;
        let _ = send.set_priority(0);
        Ok(())
    }

    /// Open a unidirectional stream; its prefix (`0x54`, session id) is
    /// already written.
    pub async fn open_uni(&self) -> Result<SendStream, WtError> {
        self.check_open()?;
        let shared = &self.inner.shared;
        let mut send = shared
            .conn
            .open_uni()
            .await
            .map_err(|e| shared.failure(e))?;
        self.write_header(&mut send, &self.inner.header_uni).await?;
        Ok(send)
    }

    /// Open a bidirectional stream; its prefix (`0x41`, session id) is
    /// already written.
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), WtError> {
        self.check_open()?;
        let shared = &self.inner.shared;
        let (mut send, recv) = shared.conn.open_bi().await.map_err(|e| shared.failure(e))?;
        self.write_header(&mut send, &self.inner.header_bi).await?;
        Ok((send, recv))
    }

    /// The next unidirectional stream the peer opened for this session, and
    /// the bytes already read past its prefix, to be parsed first.
    pub async fn accept_uni(&self) -> Result<(RecvStream, Bytes), WtError> {
        loop {
            let (id, reader) = self
                .inner
                .shared
                .wait(|s| s.uni.borrow_mut().pop_front())
                .await?;
            if id == self.inner.session_id {
                return Ok(reader.into_parts());
            }
            debug!(id, "refusing a stream for another session");
            reader.stop(h3::WT_BUFFERED_STREAM_REJECTED);
        }
    }

    /// The next bidirectional stream the peer opened for this session, and
    /// the bytes already read past its prefix, to be parsed first.
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream, Bytes), WtError> {
        loop {
            let (id, mut send, reader) = self
                .inner
                .shared
                .wait(|s| s.bi.borrow_mut().pop_front())
                .await?;
            if id == self.inner.session_id {
                let (recv, rest) = reader.into_parts();
                return Ok((send, recv, rest));
            }
            debug!(id, "refusing a stream for another session");
            let _ = send.reset(h3_code(h3::WT_BUFFERED_STREAM_REJECTED));
            reader.stop(h3::WT_BUFFERED_STREAM_REJECTED);
        }
    }

    /// Close the session: a CLOSE_WEBTRANSPORT_SESSION capsule with `code`
    /// and `reason` (cut to 1024 bytes) on the CONNECT stream, which is then
    /// finished; the connection closes when the peer closes it, or after
    /// three round trips (at least 100 ms) with `error_code(code)`. Does
    /// nothing if the session already ended.
    pub fn close(&self, code: u32, reason: &str) {
        let shared = &self.inner.shared;
        if !shared.set_error(WtError::LocallyClosed) {
            return;
        }
        let conn = shared.conn.clone();
        match self.inner.connect_send.borrow_mut().take() {
            Some(send) => {
                let frame = codec::close_capsule(code, reason);
                monoio::spawn(close_gracefully(conn, send, frame, code, shared.grace()));
            }
            None => conn.close(error_code(code), reason.as_bytes()),
        }
    }

    /// Wait until the session has ended and the connection is closed; the
    /// reason is the session's (the peer's capsule, a local close) when
    /// there is one.
    pub async fn closed(&self) -> WtError {
        let error: ConnectionError = self.inner.shared.conn.closed().await;
        self.inner.shared.failure(error)
    }

    /// Why the session ended, if it has.
    pub fn close_reason(&self) -> Option<WtError> {
        let shared = &self.inner.shared;
        shared
            .error
            .borrow()
            .clone()
            .or_else(|| shared.conn.close_reason().map(|e| shared.failure(e)))
    }
}

async fn close_gracefully(
    conn: Connection,
    mut send: SendStream,
    frame: Vec<u8>,
    code: u32,
    grace: Duration,
) {
    let graceful = async {
        if send.write_all(&frame).await.is_err() || send.finish().is_err() {
            return;
        }
        conn.closed().await;
    };
    let _ = monoio::time::timeout(grace, graceful).await;
    if conn.close_reason().is_none() {
        conn.close(error_code(code), b"");
    }
}
