//! A QMux draft-00 connection as a session [`Transport`]: QUIC's streams,
//! stream limits and flow control over an ordered message pipe (one frame
//! per message). Sans-IO: the socket driver (`crate::websocket`) hands in
//! each received message with [`QmuxTransport::receive`] and takes the
//! frames to send from [`QmuxTransport::poll_outbound`].
//!
//! Bounds: a peer may open at most `max_streams_{bidi,uni}` streams at a
//! time (MAX_STREAMS is raised as the session drops them), may send at most
//! `stream_window` unread bytes per stream and `connection_window` in all
//! (MAX_STREAM_DATA / MAX_DATA raised as the session reads); anything past
//! those is a FLOW_CONTROL_ERROR / STREAM_LIMIT_ERROR that closes the
//! connection. What we send waits for the peer's credit and for room in a
//! queue of `outbound_bytes`, so a peer that stops reading its socket
//! blocks our writers instead of growing the queue.
//!
//! Priorities are not applied: frames leave in the order they were written.
//! Everything is `!Send`, for one shard's thread.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use qumo_shards::quinn_proto::ApplicationClose;
use qumo_shards::{ConnectionError, ReadStreamError, VarInt, WriteError};

use super::codec::{Frame, StreamId, TransportCode, TransportParams, MAX_STREAM_PAYLOAD};
use super::wire::Wire;
use crate::lite::{SessionCode, StreamCode};
use crate::metrics::Traffic;
use crate::session::transport::{Estimate, RecvStream, SendStream, Transport, TransportError};

/// What one QMux connection lets its peer hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QmuxLimits {
    /// Peer-opened bidirectional streams open at once.
    pub max_streams_bidi: u64,
    /// Peer-opened unidirectional streams open at once.
    pub max_streams_uni: u64,
    /// Unread bytes one stream may hold.
    pub stream_window: u64,
    /// Unread bytes all streams together may hold.
    pub connection_window: u64,
    /// Encoded frames queued for the socket before writers wait.
    pub outbound_bytes: usize,
}

impl Default for QmuxLimits {
    fn default() -> Self {
        Self {
            max_streams_bidi: 100,
            max_streams_uni: 100,
            stream_window: 256 * 1024,
            connection_window: 4 * 1024 * 1024,
            outbound_bytes: 256 * 1024,
        }
    }
}

/// A protocol error the peer made: the connection closes with `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (transport error {:#x})", code.0)]
pub struct QmuxError {
    pub code: TransportCode,
    pub reason: &'static str,
}

fn violation(code: TransportCode, reason: &'static str) -> QmuxError {
    QmuxError { code, reason }
}

/// Ids for QMux connections: one counter for the process, apart from the
/// runtime's and the memory transport's, so ids never collide in a shard's
/// session table.
static NEXT_ID: AtomicU64 = AtomicU64::new(1 << 52);

const BI: usize = 0;

fn dir(uni: bool) -> usize {
    uni as usize
}

#[derive(Default)]
struct SendHalf {
    offset: u64,
    /// The peer's MAX_STREAM_DATA.
    max: u64,
    done: bool,
    stopped: Option<u64>,
    dropped: bool,
    waker: Option<Waker>,
}

#[derive(Default)]
struct RecvHalf {
    chunks: VecDeque<Bytes>,
    /// Bytes received (the next offset).
    received: u64,
    /// Bytes the session has read (or that were discarded).
    read: u64,
    /// The MAX_STREAM_DATA we gave.
    advertised: u64,
    fin: bool,
    reset: Option<u64>,
    /// Stopped or dropped by the session: data is counted and discarded.
    stopped: bool,
    dropped: bool,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Stream {
    send: Option<SendHalf>,
    recv: Option<RecvHalf>,
}

struct Conn {
    server: bool,
    limits: QmuxLimits,
    streams: HashMap<u64, Stream>,
    peer_params: Option<TransportParams>,
    // Streams we open.
    next_open: [u64; 2],
    peer_max_streams: [u64; 2],
    sent: u64,
    peer_max_data: u64,
    // Streams the peer opens.
    next_peer: [u64; 2],
    peer_done: [u64; 2],
    received: u64,
    consumed: u64,
    our_max_data: u64,
    incoming: [VecDeque<StreamId>; 2],
    outbound: VecDeque<Bytes>,
    outbound_bytes: usize,
    output: Option<Waker>,
    /// Writers waiting for connection credit or queue room, and openers
    /// and accepters: woken together, as such changes are rare.
    waiters: Vec<Waker>,
    closed: Option<ConnectionError>,
}

fn register(list: &mut Vec<Waker>, cx: &Context<'_>) {
    if !list.iter().any(|w| w.will_wake(cx.waker())) {
        list.push(cx.waker().clone());
    }
}

fn wake_one(waker: &mut Option<Waker>) {
    if let Some(waker) = waker.take() {
        waker.wake();
    }
}

impl Conn {
    fn our_params(&self) -> TransportParams {
        TransportParams {
            max_idle_timeout_ms: 0,
            initial_max_data: self.limits.connection_window,
            initial_max_stream_data_bidi_local: self.limits.stream_window,
            initial_max_stream_data_bidi_remote: self.limits.stream_window,
            initial_max_stream_data_uni: self.limits.stream_window,
            initial_max_streams_bidi: self.limits.max_streams_bidi,
            initial_max_streams_uni: self.limits.max_streams_uni,
        }
    }

    fn queue(&mut self, frame: Frame) {
        if self.closed.is_some() {
            return;
        }
        let bytes = frame.encode();
        self.outbound_bytes += bytes.len();
        self.outbound.push_back(bytes);
        wake_one(&mut self.output);
    }

    fn wake_all(&mut self) {
        for waker in self.waiters.drain(..) {
            waker.wake();
        }
    }

    fn shut(&mut self, error: ConnectionError, last: Option<Frame>) {
        if self.closed.is_some() {
            return;
        }
        // Data still queued is dropped, as a QUIC close drops it.
        self.outbound.clear();
        self.outbound_bytes = 0;
        if let Some(frame) = last {
            let bytes = frame.encode();
            self.outbound_bytes = bytes.len();
            self.outbound.push_back(bytes);
        }
        self.closed = Some(error);
        wake_one(&mut self.output);
        self.wake_all();
        for stream in self.streams.values_mut() {
            if let Some(send) = &mut stream.send {
                wake_one(&mut send.waker);
            }
            if let Some(recv) = &mut stream.recv {
                wake_one(&mut recv.waker);
            }
        }
    }

    fn ours(&self, id: StreamId) -> bool {
        id.server_initiated() == self.server
    }

    /// The peer's limit on what we send on a new stream.
    fn send_window(&self, id: StreamId) -> u64 {
        let Some(peer) = &self.peer_params else {
            return 0;
        };
        match (id.uni(), self.ours(id)) {
            (true, _) => peer.initial_max_stream_data_uni,
            (false, true) => peer.initial_max_stream_data_bidi_remote,
            (false, false) => peer.initial_max_stream_data_bidi_local,
        }
    }

    fn new_stream(&self, id: StreamId) -> Stream {
        let send = (!id.uni() || self.ours(id)).then(|| SendHalf {
            max: self.send_window(id),
            ..SendHalf::default()
        });
        let recv = (!id.uni() || !self.ours(id)).then(|| RecvHalf {
            advertised: self.limits.stream_window,
            ..RecvHalf::default()
        });
        Stream { send, recv }
    }

    /// The stream a received frame names, opening peer streams up to it.
    /// `None`: a stream already gone, whose frames are ignored.
    fn stream_for(&mut self, id: StreamId) -> Result<Option<&mut Stream>, QmuxError> {
        let d = dir(id.uni());
        if self.ours(id) {
            if id.index() >= self.next_open[d] {
                return Err(violation(
                    TransportCode::STREAM_STATE_ERROR,
                    "frame for a stream we did not open",
                ));
            }
        } else {
            if id.index() >= self.limits_max_streams(d) {
                return Err(violation(
                    TransportCode::STREAM_LIMIT_ERROR,
                    "stream beyond MAX_STREAMS",
                ));
            }
            while self.next_peer[d] <= id.index() {
                let opened = StreamId::new(!self.server, id.uni(), self.next_peer[d]);
                let stream = self.new_stream(opened);
                self.streams.insert(opened.0, stream);
                self.incoming[d].push_back(opened);
                self.next_peer[d] += 1;
                self.wake_all();
            }
        }
        Ok(self.streams.get_mut(&id.0))
    }

    /// The MAX_STREAMS we have given for direction `d`.
    fn limits_max_streams(&self, d: usize) -> u64 {
        let limit = match d {
            BI => self.limits.max_streams_bidi,
            _ => self.limits.max_streams_uni,
        };
        self.peer_done[d] + limit
    }

    /// Bytes read or discarded: give the connection credit back when half
    /// the window is used.
    fn consume(&mut self, len: u64) {
        self.consumed += len;
        if self.our_max_data - self.consumed < self.limits.connection_window / 2 {
            self.our_max_data = self.consumed + self.limits.connection_window;
            self.queue(Frame::MaxData(self.our_max_data));
        }
    }

    fn receive_data(&mut self, len: u64) -> Result<(), QmuxError> {
        if self.received + len > self.our_max_data {
            return Err(violation(
                TransportCode::FLOW_CONTROL_ERROR,
                "data beyond MAX_DATA",
            ));
        }
        self.received += len;
        Ok(())
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), QmuxError> {
        if self.peer_params.is_none() && !matches!(frame, Frame::TransportParameters(_)) {
            return Err(violation(
                TransportCode::PROTOCOL_VIOLATION,
                "first frame is not QX_TRANSPORT_PARAMETERS",
            ));
        }
        match frame {
            Frame::TransportParameters(params) => {
                if self.peer_params.is_some() {
                    return Err(violation(
                        TransportCode::PROTOCOL_VIOLATION,
                        "QX_TRANSPORT_PARAMETERS repeated",
                    ));
                }
                self.peer_params = Some(params);
                self.peer_max_data = params.initial_max_data;
                self.peer_max_streams = [
                    params.initial_max_streams_bidi,
                    params.initial_max_streams_uni,
                ];
                self.wake_all();
            }
            Frame::Stream {
                id,
                offset,
                data,
                fin,
            } => self.on_stream(id, offset, data, fin)?,
            Frame::ResetStream {
                id,
                code,
                final_size,
            } => self.on_reset(id, code, final_size)?,
            Frame::StopSending { id, code } => {
                if id.uni() && !self.ours(id) {
                    return Err(violation(
                        TransportCode::STREAM_STATE_ERROR,
                        "STOP_SENDING for a receive-only stream",
                    ));
                }
                let mut reset = None;
                if let Some(send) = self.stream_for(id)?.and_then(|s| s.send.as_mut()) {
                    if send.stopped.is_none() {
                        send.stopped = Some(code);
                        if !send.done {
                            send.done = true;
                            reset = Some(send.offset);
                        }
                        wake_one(&mut send.waker);
                    }
                }
                if let Some(final_size) = reset {
                    self.queue(Frame::ResetStream {
                        id,
                        code,
                        final_size,
                    });
                }
            }
            Frame::MaxData(max) => {
                if max > self.peer_max_data {
                    self.peer_max_data = max;
                    self.wake_all();
                }
            }
            Frame::MaxStreamData { id, max } => {
                if id.uni() && !self.ours(id) {
                    return Err(violation(
                        TransportCode::STREAM_STATE_ERROR,
                        "MAX_STREAM_DATA for a receive-only stream",
                    ));
                }
                if let Some(send) = self.stream_for(id)?.and_then(|s| s.send.as_mut()) {
                    if max > send.max {
                        send.max = max;
                        wake_one(&mut send.waker);
                    }
                }
            }
            Frame::MaxStreams { uni, max } => {
                if max > 1 << 60 {
                    return Err(violation(
                        TransportCode::FRAME_ENCODING_ERROR,
                        "MAX_STREAMS above 2^60",
                    ));
                }
                let d = dir(uni);
                if max > self.peer_max_streams[d] {
                    self.peer_max_streams[d] = max;
                    self.wake_all();
                }
            }
            Frame::Blocked => {}
            Frame::Close {
                application, code, ..
            } => {
                let error = match application {
                    true => ConnectionError::ApplicationClosed(ApplicationClose {
                        error_code: VarInt::from_u64(code).unwrap_or(VarInt::from_u32(0)),
                        reason: Bytes::new(),
                    }),
                    false => ConnectionError::Reset,
                };
                self.shut(error, None);
            }
        }
        Ok(())
    }

    fn on_stream(
        &mut self,
        id: StreamId,
        offset: Option<u64>,
        data: Bytes,
        fin: bool,
    ) -> Result<(), QmuxError> {
        if id.uni() && self.ours(id) {
            return Err(violation(
                TransportCode::STREAM_STATE_ERROR,
                "STREAM frame on our unidirectional stream",
            ));
        }
        let len = data.len() as u64;
        self.receive_data(len)?;
        let Some(recv) = self.stream_for(id)?.and_then(|s| s.recv.as_mut()) else {
            // A stream already gone: its data is counted, then dropped.
            self.consume(len);
            return Ok(());
        };
        if offset.is_some_and(|o| o != recv.received) {
            return Err(violation(
                TransportCode::PROTOCOL_VIOLATION,
                "STREAM offset out of order on an ordered transport",
            ));
        }
        if recv.fin && len > 0 {
            return Err(violation(
                TransportCode::FINAL_SIZE_ERROR,
                "data after the stream's end",
            ));
        }
        if recv.received + len > recv.advertised {
            return Err(violation(
                TransportCode::FLOW_CONTROL_ERROR,
                "data beyond MAX_STREAM_DATA",
            ));
        }
        recv.received += len;
        recv.fin |= fin;
        let discarded = match recv.stopped || recv.reset.is_some() {
            true => {
                recv.read += len;
                len
            }
            false => {
                if len > 0 {
                    recv.chunks.push_back(data);
                }
                0
            }
        };
        wake_one(&mut recv.waker);
        if discarded > 0 {
            self.consume(discarded);
        }
        Ok(())
    }

    fn on_reset(&mut self, id: StreamId, code: u64, final_size: u64) -> Result<(), QmuxError> {
        if id.uni() && self.ours(id) {
            return Err(violation(
                TransportCode::STREAM_STATE_ERROR,
                "RESET_STREAM on our unidirectional stream",
            ));
        }
        let window = self.our_max_data;
        let received_before = self.received;
        let Some(recv) = self.stream_for(id)?.and_then(|s| s.recv.as_mut()) else {
            return Ok(());
        };
        if final_size < recv.received || (recv.fin && final_size != recv.received) {
            return Err(violation(
                TransportCode::FINAL_SIZE_ERROR,
                "RESET_STREAM final size below what was received",
            ));
        }
        if final_size > recv.advertised {
            return Err(violation(
                TransportCode::FLOW_CONTROL_ERROR,
                "RESET_STREAM final size beyond MAX_STREAM_DATA",
            ));
        }
        let extra = final_size - recv.received;
        if received_before + extra > window {
            return Err(violation(
                TransportCode::FLOW_CONTROL_ERROR,
                "RESET_STREAM final size beyond MAX_DATA",
            ));
        }
        recv.received = final_size;
        // Unread data is discarded; the credit of all of it comes back.
        let discarded = final_size - recv.read;
        recv.read = final_size;
        recv.chunks.clear();
        recv.fin = true;
        recv.reset = Some(code);
        wake_one(&mut recv.waker);
        self.received += extra;
        self.consume(discarded);
        Ok(())
    }

    /// A half was dropped by the session: forget the stream once both are,
    /// and give a peer stream's slot back (MAX_STREAMS).
    fn release(&mut self, id: StreamId) {
        let Some(stream) = self.streams.get(&id.0) else {
            return;
        };
        let done = stream.send.as_ref().is_none_or(|s| s.dropped)
            && stream.recv.as_ref().is_none_or(|r| r.dropped);
        if !done {
            return;
        }
        self.streams.remove(&id.0);
        if !self.ours(id) {
            let d = dir(id.uni());
            self.peer_done[d] += 1;
            let max = self.limits_max_streams(d);
            self.queue(Frame::MaxStreams { uni: id.uni(), max });
        }
    }
}

/// One QMux connection; clones share it.
#[derive(Clone)]
pub struct QmuxTransport {
    conn: Rc<RefCell<Conn>>,
    id: u64,
    remote: Option<SocketAddr>,
    path: Rc<str>,
    query: Option<Rc<str>>,
    /// The stream below, once its driver said what it is: the source of
    /// the connection's byte counts and estimate.
    wire: Rc<RefCell<Option<Rc<dyn Wire>>>>,
}

impl std::fmt::Debug for QmuxTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmuxTransport")
            .field("id", &self.id)
            .field("remote", &self.remote)
            .finish()
    }
}

/// Where a QMux connection came from: the address, and the URL's path and
/// query (the session's root and credentials, as WebTransport's CONNECT).
#[derive(Debug, Clone, Default)]
pub struct QmuxOrigin {
    pub remote: Option<SocketAddr>,
    pub path: String,
    pub query: Option<String>,
}

impl QmuxTransport {
    /// A connection's end; `server` picks its half of the stream ids. Our
    /// QX_TRANSPORT_PARAMETERS is queued as the first frame.
    pub fn new(server: bool, limits: QmuxLimits, origin: QmuxOrigin) -> Self {
        let mut conn = Conn {
            server,
            limits,
            streams: HashMap::new(),
            peer_params: None,
            next_open: [0; 2],
            peer_max_streams: [0; 2],
            sent: 0,
            peer_max_data: 0,
            next_peer: [0; 2],
            peer_done: [0; 2],
            received: 0,
            consumed: 0,
            our_max_data: limits.connection_window,
            incoming: Default::default(),
            outbound: VecDeque::new(),
            outbound_bytes: 0,
            output: None,
            waiters: Vec::new(),
            closed: None,
        };
        let params = conn.our_params();
        conn.queue(Frame::TransportParameters(params));
        Self {
            conn: Rc::new(RefCell::new(conn)),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            remote: origin.remote,
            path: origin.path.into(),
            query: origin.query.map(Into::into),
            wire: Rc::default(),
        }
    }

    /// Take byte counts and the path's estimate from `wire` from now on
    /// (every clone of this transport).
    pub fn set_wire(&self, wire: Rc<dyn Wire>) {
        *self.wire.borrow_mut() = Some(wire);
    }

    /// One message from the peer. An error has already closed the
    /// connection (CONNECTION_CLOSE with its code is queued).
    pub fn receive(&self, message: Bytes) -> Result<(), QmuxError> {
        let mut conn = self.conn.borrow_mut();
        if conn.closed.is_some() {
            return Ok(());
        }
        let result = Frame::decode(message)
            .map_err(|e| QmuxError {
                code: e.code(),
                reason: "malformed frame",
            })
            .and_then(|frame| conn.on_frame(frame));
        if let Err(error) = &result {
            conn.shut(
                ConnectionError::LocallyClosed,
                Some(Frame::Close {
                    application: false,
                    code: error.code.0,
                    reason: Bytes::from_static(error.reason.as_bytes()),
                }),
            );
        }
        result
    }

    /// Close for a protocol error found outside a frame (in the WebSocket
    /// under it): CONNECTION_CLOSE with its code goes out last.
    pub fn fail(&self, error: QmuxError) {
        self.conn.borrow_mut().shut(
            ConnectionError::LocallyClosed,
            Some(Frame::Close {
                application: false,
                code: error.code.0,
                reason: Bytes::from_static(error.reason.as_bytes()),
            }),
        );
    }

    /// Close for a reason below QMux (the socket failed, a WebSocket
    /// protocol error): nothing more is sent or received.
    pub fn lost(&self) {
        let mut conn = self.conn.borrow_mut();
        conn.shut(ConnectionError::Reset, None);
        conn.outbound.clear();
        conn.outbound_bytes = 0;
    }

    /// The next frame to send; `None` once the connection is closed and
    /// its last frame (the close) has been taken.
    pub fn poll_outbound(&self, cx: &Context<'_>) -> Poll<Option<Bytes>> {
        let mut conn = self.conn.borrow_mut();
        if let Some(frame) = conn.outbound.pop_front() {
            let before = conn.outbound_bytes;
            conn.outbound_bytes -= frame.len();
            if before >= conn.limits.outbound_bytes
                && conn.outbound_bytes < conn.limits.outbound_bytes
            {
                conn.wake_all();
            }
            return Poll::Ready(Some(frame));
        }
        if conn.closed.is_some() {
            return Poll::Ready(None);
        }
        conn.output = Some(cx.waker().clone());
        Poll::Pending
    }

    pub fn is_closed(&self) -> bool {
        self.conn.borrow().closed.is_some()
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<ConnectionError> {
        self.conn.borrow().closed.clone()
    }

    /// Whether this is the server's end (the WebSocket under it then reads
    /// masked frames and writes unmasked ones).
    pub fn is_server(&self) -> bool {
        self.conn.borrow().server
    }

    fn poll_open(&self, cx: &Context<'_>, uni: bool) -> Poll<Result<StreamId, TransportError>> {
        let mut conn = self.conn.borrow_mut();
        if let Some(error) = &conn.closed {
            return Poll::Ready(Err(error.clone().into()));
        }
        let d = dir(uni);
        if conn.peer_params.is_none() || conn.next_open[d] >= conn.peer_max_streams[d] {
            register(&mut conn.waiters, cx);
            return Poll::Pending;
        }
        let id = StreamId::new(conn.server, uni, conn.next_open[d]);
        conn.next_open[d] += 1;
        let stream = conn.new_stream(id);
        conn.streams.insert(id.0, stream);
        Poll::Ready(Ok(id))
    }

    fn poll_accept(&self, cx: &Context<'_>, uni: bool) -> Poll<Result<StreamId, TransportError>> {
        let mut conn = self.conn.borrow_mut();
        if let Some(error) = &conn.closed {
            return Poll::Ready(Err(error.clone().into()));
        }
        match conn.incoming[dir(uni)].pop_front() {
            Some(id) => Poll::Ready(Ok(id)),
            None => {
                register(&mut conn.waiters, cx);
                Poll::Pending
            }
        }
    }

    fn send_half(&self, id: StreamId) -> QmuxSend {
        QmuxSend {
            conn: self.conn.clone(),
            id,
        }
    }

    fn recv_half(&self, id: StreamId) -> QmuxRecv {
        QmuxRecv {
            conn: self.conn.clone(),
            id,
        }
    }

    /// Streams the session holds now (for tests of release).
    pub fn streams_open(&self) -> usize {
        self.conn.borrow().streams.len()
    }
}

impl Transport for QmuxTransport {
    type Send = QmuxSend;
    type Recv = QmuxRecv;

    fn id(&self) -> u64 {
        self.id
    }

    fn remote_address(&self) -> Option<SocketAddr> {
        self.remote
    }

    fn kind(&self) -> &'static str {
        "websocket"
    }

    fn url(&self) -> Option<(&str, Option<&str>)> {
        Some((&self.path, self.query.as_deref()))
    }

    /// Stream codes travel bare: QMux clients (moq-native's `qmux`,
    /// `@moq/qmux`) put the application's code in RESET_STREAM and
    /// STOP_SENDING as it is, with no HTTP/3 mapping.
    fn stream_code(&self, code: StreamCode) -> VarInt {
        VarInt::from_u32(code.0)
    }

    fn moq_code(&self, code: VarInt) -> Option<StreamCode> {
        u32::try_from(code.into_inner()).ok().map(StreamCode)
    }

    fn traffic(&self) -> Option<Traffic> {
        self.wire.borrow().as_ref().map(|wire| wire.traffic())
    }

    fn estimate(&self) -> Estimate {
        self.wire
            .borrow()
            .as_ref()
            .map_or_else(Estimate::default, |wire| wire.estimate())
    }

    fn estimate_epoch(&self) -> u64 {
        self.wire
            .borrow()
            .as_ref()
            .map_or(0, |wire| wire.estimate_epoch())
    }

    async fn estimate_changed(&self, epoch: u64) {
        let wire = self.wire.borrow().clone();
        let Some(wire) = wire else {
            // No figures: nothing will move.
            return std::future::pending().await;
        };
        let waiter = wire.estimate_waiters().waiter();
        std::future::poll_fn(|cx| {
            if wire.estimate_epoch() != epoch {
                return Poll::Ready(());
            }
            waiter.register(cx);
            Poll::Pending
        })
        .await
    }

    async fn open_uni(&self) -> Result<QmuxSend, TransportError> {
        let id = std::future::poll_fn(|cx| self.poll_open(cx, true)).await?;
        Ok(self.send_half(id))
    }

    async fn open_bi(&self) -> Result<(QmuxSend, QmuxRecv), TransportError> {
        let id = std::future::poll_fn(|cx| self.poll_open(cx, false)).await?;
        Ok((self.send_half(id), self.recv_half(id)))
    }

    async fn accept_uni(&self) -> Result<(QmuxRecv, Bytes), TransportError> {
        let id = std::future::poll_fn(|cx| self.poll_accept(cx, true)).await?;
        Ok((self.recv_half(id), Bytes::new()))
    }

    async fn accept_bi(&self) -> Result<(QmuxSend, QmuxRecv, Bytes), TransportError> {
        let id = std::future::poll_fn(|cx| self.poll_accept(cx, false)).await?;
        Ok((self.send_half(id), self.recv_half(id), Bytes::new()))
    }

    fn close(&self, code: SessionCode, reason: &str) {
        self.conn.borrow_mut().shut(
            ConnectionError::LocallyClosed,
            Some(Frame::Close {
                application: true,
                code: code.0 as u64,
                reason: Bytes::copy_from_slice(reason.as_bytes()),
            }),
        );
    }

    async fn closed(&self) {
        std::future::poll_fn(|cx| {
            let mut conn = self.conn.borrow_mut();
            if conn.closed.is_some() {
                return Poll::Ready(());
            }
            register(&mut conn.waiters, cx);
            Poll::Pending
        })
        .await
    }
}

/// The sending half of a QMux stream.
pub struct QmuxSend {
    conn: Rc<RefCell<Conn>>,
    id: StreamId,
}

impl QmuxSend {
    fn with<R>(&self, f: impl FnOnce(&mut Conn, &mut SendHalf) -> R) -> Option<R> {
        let mut guard = self.conn.borrow_mut();
        let conn = &mut *guard;
        let mut half = conn.streams.get_mut(&self.id.0)?.send.take()?;
        let result = f(conn, &mut half);
        if let Some(stream) = conn.streams.get_mut(&self.id.0) {
            stream.send = Some(half);
        }
        Some(result)
    }
}

impl SendStream for QmuxSend {
    fn poll_write_chunks(
        &mut self,
        cx: &mut Context<'_>,
        chunks: &mut [Bytes],
    ) -> Poll<Result<usize, WriteError>> {
        let id = self.id;
        self.with(|conn, half| {
            if let Some(error) = &conn.closed {
                return Poll::Ready(Err(WriteError::ConnectionLost(error.clone())));
            }
            if let Some(code) = half.stopped {
                return Poll::Ready(Err(WriteError::Stopped(
                    VarInt::from_u64(code).unwrap_or(VarInt::from_u32(0)),
                )));
            }
            if half.done {
                return Poll::Ready(Err(WriteError::ClosedStream));
            }
            let wanted: usize = chunks.iter().map(Bytes::len).sum();
            if wanted == 0 {
                return Poll::Ready(Ok(0));
            }
            if conn.outbound_bytes >= conn.limits.outbound_bytes {
                register(&mut conn.waiters, cx);
                return Poll::Pending;
            }
            let stream_credit = half.max - half.offset;
            let conn_credit = conn.peer_max_data - conn.sent;
            let credit = stream_credit
                .min(conn_credit)
                .min(MAX_STREAM_PAYLOAD as u64) as usize;
            if credit == 0 {
                match stream_credit == 0 {
                    true => half.waker = Some(cx.waker().clone()),
                    false => register(&mut conn.waiters, cx),
                }
                return Poll::Pending;
            }
            let take = credit.min(wanted);
            let data = match chunks.iter().find(|c| !c.is_empty()) {
                Some(first) if first.len() >= take => {
                    let index = chunks.iter().position(|c| !c.is_empty()).unwrap_or(0);
                    chunks[index].split_to(take)
                }
                _ => {
                    let mut data = BytesMut::with_capacity(take);
                    for chunk in chunks.iter_mut() {
                        let n = chunk.len().min(take - data.len());
                        data.extend_from_slice(&chunk.split_to(n));
                    }
                    data.freeze()
                }
            };
            let offset = half.offset;
            half.offset += take as u64;
            conn.sent += take as u64;
            conn.queue(Frame::Stream {
                id,
                offset: Some(offset),
                data,
                fin: false,
            });
            Poll::Ready(Ok(take))
        })
        .unwrap_or(Poll::Ready(Err(WriteError::ClosedStream)))
    }

    fn finish(&mut self) -> Result<(), WriteError> {
        let id = self.id;
        self.with(|conn, half| {
            if let Some(error) = &conn.closed {
                return Err(WriteError::ConnectionLost(error.clone()));
            }
            if let Some(code) = half.stopped {
                return Err(WriteError::Stopped(
                    VarInt::from_u64(code).unwrap_or(VarInt::from_u32(0)),
                ));
            }
            if std::mem::replace(&mut half.done, true) {
                return Err(WriteError::ClosedStream);
            }
            conn.queue(Frame::Stream {
                id,
                offset: Some(half.offset),
                data: Bytes::new(),
                fin: true,
            });
            Ok(())
        })
        .unwrap_or(Err(WriteError::ClosedStream))
    }

    fn reset(&mut self, code: VarInt) -> Result<(), WriteError> {
        let id = self.id;
        self.with(|conn, half| {
            if let Some(error) = &conn.closed {
                return Err(WriteError::ConnectionLost(error.clone()));
            }
            if std::mem::replace(&mut half.done, true) {
                return Err(WriteError::ClosedStream);
            }
            conn.queue(Frame::ResetStream {
                id,
                code: code.into_inner(),
                final_size: half.offset,
            });
            Ok(())
        })
        .unwrap_or(Err(WriteError::ClosedStream))
    }

    fn set_priority(&mut self, _priority: i32) -> Result<(), WriteError> {
        Ok(())
    }
}

/// Dropped without `finish` or `reset`: finished, as QUIC's halves are.
impl Drop for QmuxSend {
    fn drop(&mut self) {
        let Ok(mut guard) = self.conn.try_borrow_mut() else {
            return;
        };
        let conn = &mut *guard;
        let mut finish = None;
        if let Some(half) = conn
            .streams
            .get_mut(&self.id.0)
            .and_then(|s| s.send.as_mut())
        {
            if !half.done {
                half.done = true;
                finish = Some(half.offset);
            }
            half.dropped = true;
        }
        if let Some(offset) = finish {
            conn.queue(Frame::Stream {
                id: self.id,
                offset: Some(offset),
                data: Bytes::new(),
                fin: true,
            });
        }
        conn.release(self.id);
    }
}

/// The receiving half of a QMux stream.
pub struct QmuxRecv {
    conn: Rc<RefCell<Conn>>,
    id: StreamId,
}

impl QmuxRecv {
    /// Stop the stream: unread data is discarded and its credit returned.
    fn stop_with(conn: &mut Conn, id: StreamId, code: u64) -> Result<(), ReadStreamError> {
        let Some(half) = conn.streams.get_mut(&id.0).and_then(|s| s.recv.as_mut()) else {
            return Err(ReadStreamError::ClosedStream);
        };
        if half.stopped {
            return Err(ReadStreamError::ClosedStream);
        }
        half.stopped = true;
        half.chunks.clear();
        let discarded = half.received - half.read;
        half.read = half.received;
        let ended = half.fin;
        conn.consume(discarded);
        if !ended {
            conn.queue(Frame::StopSending { id, code });
        }
        Ok(())
    }
}

impl RecvStream for QmuxRecv {
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, ReadStreamError>> {
        let mut guard = self.conn.borrow_mut();
        let conn = &mut *guard;
        let closed = conn.closed.clone();
        let window = conn.limits.stream_window;
        let Some(half) = conn
            .streams
            .get_mut(&self.id.0)
            .and_then(|s| s.recv.as_mut())
        else {
            return Poll::Ready(Err(ReadStreamError::ClosedStream));
        };
        if let Some(code) = half.reset {
            return Poll::Ready(Err(ReadStreamError::Reset(
                VarInt::from_u64(code).unwrap_or(VarInt::from_u32(0)),
            )));
        }
        if half.stopped {
            return Poll::Ready(Err(ReadStreamError::ClosedStream));
        }
        if let Some(front) = half.chunks.front_mut() {
            let chunk = match front.len() > max {
                true => front.split_to(max.max(1)),
                false => half.chunks.pop_front().unwrap_or_default(),
            };
            half.read += chunk.len() as u64;
            let mut raise = None;
            if !half.fin && half.advertised - half.read < window / 2 {
                half.advertised = half.read + window;
                raise = Some(half.advertised);
            }
            if let Some(max) = raise {
                conn.queue(Frame::MaxStreamData { id: self.id, max });
            }
            conn.consume(chunk.len() as u64);
            return Poll::Ready(Ok(Some(chunk)));
        }
        if half.fin {
            return Poll::Ready(Ok(None));
        }
        if let Some(error) = closed {
            return Poll::Ready(Err(ReadStreamError::ConnectionLost(error)));
        }
        half.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn stop(&mut self, code: VarInt) -> Result<(), ReadStreamError> {
        let mut conn = self.conn.borrow_mut();
        if let Some(error) = &conn.closed {
            return Err(ReadStreamError::ConnectionLost(error.clone()));
        }
        Self::stop_with(&mut conn, self.id, code.into_inner())
    }
}

/// Dropped before its end: stopped (code 0), as QUIC's halves are.
impl Drop for QmuxRecv {
    fn drop(&mut self) {
        let Ok(mut guard) = self.conn.try_borrow_mut() else {
            return;
        };
        let conn = &mut *guard;
        let open = conn
            .streams
            .get(&self.id.0)
            .and_then(|s| s.recv.as_ref())
            .is_some_and(|h| !(h.stopped || h.fin && h.chunks.is_empty()));
        if open && conn.closed.is_none() {
            let _ = Self::stop_with(conn, self.id, 0);
        }
        if let Some(half) = conn
            .streams
            .get_mut(&self.id.0)
            .and_then(|s| s.recv.as_mut())
        {
            half.dropped = true;
        }
        conn.release(self.id);
    }
}
