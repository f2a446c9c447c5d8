//! The seam between a session and the streams it runs on.
//!
//! A session sees one small `!Send` interface ([`Transport`], with its
//! [`SendStream`] and [`RecvStream`] halves) and is generic over it. Three
//! implementations:
//! - raw QUIC: the shards runtime's [`Connection`];
//! - WebTransport over HTTP/3: [`WtSession`], whose streams carry a session
//!   prefix the session never sees;
//! - in memory: [`MemoryTransport`](super::memory::MemoryTransport), two
//!   ends on one thread, so that sessions run under `#[monoio::test]` and in
//!   benchmarks with no socket.
//!
//! Generic rather than a boxed object: the writer's hot path (one
//! `poll_write_chunks` per frame per subscriber) stays a direct call, and
//! `async fn` in a trait needs no boxing when it is used generically. The
//! shard stays non-generic: it never holds a session, only its command
//! inbox (see `crate::shard::SessionInbox`).

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::Bytes;
use qumo_shards::quinn_proto::Dir;
use qumo_shards::{Connection, ConnectionError, ReadStreamError, VarInt, WriteError};

use crate::lite::{SessionCode, StreamCode};
use crate::metrics::Traffic;
use crate::webtransport::{self, WtError, WtSession};

/// Why the transport failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connection: {0}")]
    Connection(#[from] ConnectionError),
    #[error("webtransport: {0}")]
    WebTransport(#[from] WtError),
}

/// The sending half of a stream. Dropping it without `finish` or `reset`
/// finishes it.
pub trait SendStream: 'static {
    /// Write as much of `chunks` as there is room for, without copying;
    /// written bytes are split off the front of the chunks. `Pending` (with
    /// `cx` registered) only when nothing could be written.
    fn poll_write_chunks(
        &mut self,
        cx: &mut Context<'_>,
        chunks: &mut [Bytes],
    ) -> Poll<Result<usize, WriteError>>;

    /// No more data: the peer reads to the end.
    fn finish(&mut self) -> Result<(), WriteError>;

    /// Abandon the stream: unsent data is dropped, the peer sees `code`.
    fn reset(&mut self, code: VarInt) -> Result<(), WriteError>;

    /// Relative priority among the session's streams; higher goes first.
    /// A transport without priorities ignores it.
    fn set_priority(&mut self, priority: i32) -> Result<(), WriteError>;

    /// Write all of `chunk`, waiting for room.
    fn write_chunk(&mut self, chunk: Bytes) -> impl Future<Output = Result<(), WriteError>> {
        async move {
            let mut chunks = [chunk];
            while !chunks[0].is_empty() {
                poll_fn(|cx| self.poll_write_chunks(cx, &mut chunks)).await?;
            }
            Ok(())
        }
    }

    /// Write all of `data` (copied once into a chunk).
    fn write_all(&mut self, data: &[u8]) -> impl Future<Output = Result<(), WriteError>> {
        self.write_chunk(Bytes::copy_from_slice(data))
    }
}

/// The receiving half of a stream. Dropping it before the end asks the
/// peer to stop sending (code 0).
pub trait RecvStream: 'static {
    /// The next piece of the stream, at most `max` bytes, in order;
    /// `None` at its end.
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, ReadStreamError>>;

    /// Ask the peer to stop sending; unread data is discarded.
    fn stop(&mut self, code: VarInt) -> Result<(), ReadStreamError>;

    fn read_chunk(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Result<Option<Bytes>, ReadStreamError>> {
        poll_fn(move |cx| self.poll_read_chunk(cx, max))
    }
}

/// One peer's session transport: its streams, its close. Used from one
/// shard's thread only; its futures are `!Send`.
pub trait Transport: 'static {
    type Send: SendStream;
    type Recv: RecvStream;

    /// Unique among the shard's sessions for the life of the process.
    fn id(&self) -> u64;

    /// The peer's address, where there is one (for logs).
    fn remote_address(&self) -> Option<SocketAddr>;

    /// What carries the session, for its log line: `quic`,
    /// `webtransport`, `websocket`, `memory`.
    fn kind(&self) -> &'static str;

    /// The URL the peer dialled, as path and query, on a transport that
    /// has one (WebTransport's CONNECT). Without one, the session's root
    /// and credentials come from the SETUP path.
    fn url(&self) -> Option<(&str, Option<&str>)> {
        None
    }

    /// Open a unidirectional stream, waiting while the peer's stream limit
    /// is reached.
    fn open_uni(&self) -> impl Future<Output = Result<Self::Send, TransportError>>;

    fn open_bi(&self) -> impl Future<Output = Result<(Self::Send, Self::Recv), TransportError>>;

    /// The next peer stream and any bytes already read past its prefix.
    fn accept_uni(&self) -> impl Future<Output = Result<(Self::Recv, Bytes), TransportError>>;

    fn accept_bi(
        &self,
    ) -> impl Future<Output = Result<(Self::Send, Self::Recv, Bytes), TransportError>>;

    /// A moq-lite stream error code as it goes on the wire.
    ///
    /// Every transport uses WebTransport's HTTP/3 code space: moq-native
    /// clients (moq-clock, the `moq` CLI, moq-relay) run raw QUIC through
    /// web-transport-quinn's `Session::raw`, which decodes every stream reset
    /// and STOP_SENDING through it and fails the whole session on a code
    /// outside it ("invalid RESET_STREAM"). Session close codes stay raw on
    /// QUIC: web-transport-quinn passes those through.
    fn stream_code(&self, code: StreamCode) -> VarInt {
        webtransport::error_code(code.0)
    }

    /// A received stream error code back in moq-lite terms. By default a
    /// peer that sends a bare code outside the WebTransport range is taken
    /// at its word rather than refused.
    fn moq_code(&self, code: VarInt) -> Option<StreamCode> {
        let code = webtransport::app_code(code).or_else(|| u32::try_from(code.into_inner()).ok());
        code.map(StreamCode)
    }

    /// UDP bytes sent and received on the session's connection so far
    /// (its last figures once it ended); `None` on a transport without a
    /// wire, or while the figures cannot be read.
    fn traffic(&self) -> Option<Traffic> {
        None
    }

    /// Let the peer open this many streams at once from now on, where the
    /// transport has stream limits to raise (QUIC's MAX_STREAMS).
    fn raise_stream_limits(&self, _bidi: u32, _uni: u32) {}

    /// What the transport's congestion controller knows of the path, for
    /// PROBE reports. Unknown by default: a transport without figures
    /// advertises no probing in its SETUP.
    fn estimate(&self) -> Estimate {
        Estimate::default()
    }

    /// A count that moves whenever [`Transport::estimate`] may have: an
    /// estimate sampled at one value still holds while it has not moved.
    fn estimate_epoch(&self) -> u64 {
        0
    }

    /// Wait until [`Transport::estimate_epoch`] is no longer `epoch` (or
    /// the session ended). Never, on a transport without figures.
    fn estimate_changed(&self, _epoch: u64) -> impl Future<Output = ()> {
        std::future::pending()
    }

    /// The largest datagram the peer accepts now; 0 where the transport
    /// or the peer has none (then nothing is sent as one).
    fn max_datagram_size(&self) -> usize {
        0
    }

    /// Send one datagram now or not at all: never queued behind streams,
    /// never waiting for room.
    fn send_datagram(&self, _datagram: Bytes) -> Result<(), DatagramDrop> {
        Err(DatagramDrop::Unsupported)
    }

    /// The peer's next datagram; `None` once the session is over. Never
    /// resolves on a transport without datagrams.
    fn recv_datagram(&self) -> impl Future<Output = Option<Bytes>> {
        std::future::pending()
    }

    /// Close the session with a moq-lite session code.
    fn close(&self, code: SessionCode, reason: &str);

    /// Wait until the session has ended, for whatever reason.
    fn closed(&self) -> impl Future<Output = ()>;
}

impl SendStream for qumo_shards::SendStream {
    fn poll_write_chunks(
        &mut self,
        cx: &mut Context<'_>,
        chunks: &mut [Bytes],
    ) -> Poll<Result<usize, WriteError>> {
        qumo_shards::SendStream::poll_write_chunks(self, cx, chunks)
    }

    fn finish(&mut self) -> Result<(), WriteError> {
        qumo_shards::SendStream::finish(self)
    }

    fn reset(&mut self, code: VarInt) -> Result<(), WriteError> {
        qumo_shards::SendStream::reset(self, code)
    }

    fn set_priority(&mut self, priority: i32) -> Result<(), WriteError> {
        qumo_shards::SendStream::set_priority(self, priority)
    }
}

impl RecvStream for qumo_shards::RecvStream {
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, ReadStreamError>> {
        qumo_shards::RecvStream::poll_read_chunk(self, cx, max)
    }

    fn stop(&mut self, code: VarInt) -> Result<(), ReadStreamError> {
        qumo_shards::RecvStream::stop(self, code)
    }
}

fn connection_traffic(conn: &Connection) -> Option<Traffic> {
    conn.stats().map(|s| Traffic {
        sent: s.bytes_sent,
        received: s.bytes_received,
    })
}

/// Why a datagram was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramDrop {
    /// The transport or the peer takes no datagrams.
    Unsupported,
    /// Larger than the path allows.
    TooLarge,
    /// The send buffer is full: the subscriber's path is congested.
    Full,
    /// The connection is gone.
    Lost,
}

impl From<qumo_shards::DatagramError> for DatagramDrop {
    fn from(e: qumo_shards::DatagramError) -> Self {
        use qumo_shards::quinn_proto::SendDatagramError as E;
        match e {
            qumo_shards::DatagramError::ConnectionLost(_) => DatagramDrop::Lost,
            qumo_shards::DatagramError::Send(E::Blocked(_)) => DatagramDrop::Full,
            qumo_shards::DatagramError::Send(E::TooLarge) => DatagramDrop::TooLarge,
            qumo_shards::DatagramError::Send(_) => DatagramDrop::Unsupported,
        }
    }
}

/// The connection's send bandwidth and round trip, each `None` if unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Estimate {
    /// Bits per second the congestion controller lets through.
    pub send_rate: Option<u64>,
    /// Smoothed round-trip time.
    pub rtt: Option<std::time::Duration>,
}

impl Estimate {
    /// From QUIC's figures: the congestion window once per round trip
    /// (cwnd x 8 / rtt), as web-transport-quinn estimates it for moq-net.
    pub fn from_quic(stats: &qumo_shards::ConnectionStats) -> Self {
        let rtt = stats.rtt;
        let send_rate = (stats.cwnd > 0 && !rtt.is_zero())
            .then(|| (stats.cwnd as f64 * 8.0 / rtt.as_secs_f64()) as u64);
        Self {
            send_rate,
            rtt: (!rtt.is_zero()).then_some(rtt),
        }
    }

    pub fn is_known(&self) -> bool {
        self.send_rate.is_some() || self.rtt.is_some()
    }
}

/// Raw QUIC: moq-lite streams straight on the connection.
impl Transport for Connection {
    type Send = qumo_shards::SendStream;
    type Recv = qumo_shards::RecvStream;

    fn id(&self) -> u64 {
        self.stable_id()
    }

    fn remote_address(&self) -> Option<SocketAddr> {
        Connection::remote_address(self)
    }

    fn kind(&self) -> &'static str {
        "quic"
    }

    async fn open_uni(&self) -> Result<Self::Send, TransportError> {
        Ok(Connection::open_uni(self).await?)
    }

    async fn open_bi(&self) -> Result<(Self::Send, Self::Recv), TransportError> {
        Ok(Connection::open_bi(self).await?)
    }

    async fn accept_uni(&self) -> Result<(Self::Recv, Bytes), TransportError> {
        Ok((Connection::accept_uni(self).await?, Bytes::new()))
    }

    async fn accept_bi(&self) -> Result<(Self::Send, Self::Recv, Bytes), TransportError> {
        let (send, recv) = Connection::accept_bi(self).await?;
        Ok((send, recv, Bytes::new()))
    }

    fn traffic(&self) -> Option<Traffic> {
        connection_traffic(self)
    }

    fn raise_stream_limits(&self, bidi: u32, uni: u32) {
        self.set_max_concurrent_streams(Dir::Bi, bidi);
        self.set_max_concurrent_streams(Dir::Uni, uni);
    }

    fn estimate(&self) -> Estimate {
        self.stats()
            .map_or_else(Estimate::default, |s| Estimate::from_quic(&s))
    }

    fn estimate_epoch(&self) -> u64 {
        Connection::estimate_epoch(self)
    }

    async fn estimate_changed(&self, epoch: u64) {
        Connection::estimate_changed(self, epoch).await
    }

    fn max_datagram_size(&self) -> usize {
        Connection::max_datagram_size(self).unwrap_or(0)
    }

    fn send_datagram(&self, datagram: Bytes) -> Result<(), DatagramDrop> {
        Ok(self.try_send_datagram(datagram)?)
    }

    async fn recv_datagram(&self) -> Option<Bytes> {
        self.read_datagram().await.ok()
    }

    fn close(&self, code: SessionCode, reason: &str) {
        Connection::close(self, VarInt::from_u32(code.0), reason.as_bytes())
    }

    async fn closed(&self) {
        Connection::closed(self).await;
    }
}

/// WebTransport: the session's streams on an HTTP/3 connection.
impl Transport for WtSession {
    type Send = qumo_shards::SendStream;
    type Recv = qumo_shards::RecvStream;

    fn id(&self) -> u64 {
        self.connection().stable_id()
    }

    fn remote_address(&self) -> Option<SocketAddr> {
        self.connection().remote_address()
    }

    fn kind(&self) -> &'static str {
        "webtransport"
    }

    fn url(&self) -> Option<(&str, Option<&str>)> {
        Some((self.path(), self.query()))
    }

    async fn open_uni(&self) -> Result<Self::Send, TransportError> {
        Ok(WtSession::open_uni(self).await?)
    }

    async fn open_bi(&self) -> Result<(Self::Send, Self::Recv), TransportError> {
        Ok(WtSession::open_bi(self).await?)
    }

    async fn accept_uni(&self) -> Result<(Self::Recv, Bytes), TransportError> {
        Ok(WtSession::accept_uni(self).await?)
    }

    async fn accept_bi(&self) -> Result<(Self::Send, Self::Recv, Bytes), TransportError> {
        Ok(WtSession::accept_bi(self).await?)
    }

    /// Codes outside the WebTransport range cannot come from a
    /// WebTransport peer: they are not taken.
    fn moq_code(&self, code: VarInt) -> Option<StreamCode> {
        webtransport::app_code(code).map(StreamCode)
    }

    /// The whole connection's: it carries this one session.
    fn traffic(&self) -> Option<Traffic> {
        connection_traffic(self.connection())
    }

    /// The whole connection's limits: it carries this one session.
    fn raise_stream_limits(&self, bidi: u32, uni: u32) {
        self.connection().set_max_concurrent_streams(Dir::Bi, bidi);
        self.connection().set_max_concurrent_streams(Dir::Uni, uni);
    }

    /// The HTTP/3 connection's: one WebTransport session per connection
    /// is what browsers open.
    fn estimate(&self) -> Estimate {
        self.connection()
            .stats()
            .map_or_else(Estimate::default, |s| Estimate::from_quic(&s))
    }

    fn estimate_epoch(&self) -> u64 {
        self.connection().estimate_epoch()
    }

    async fn estimate_changed(&self, epoch: u64) {
        self.connection().estimate_changed(epoch).await
    }

    fn max_datagram_size(&self) -> usize {
        WtSession::max_datagram_size(self)
    }

    fn send_datagram(&self, datagram: Bytes) -> Result<(), DatagramDrop> {
        Ok(self.try_send_datagram(&datagram)?)
    }

    async fn recv_datagram(&self) -> Option<Bytes> {
        self.read_datagram().await.ok()
    }

    fn close(&self, code: SessionCode, reason: &str) {
        WtSession::close(self, code.0, reason)
    }

    async fn closed(&self) {
        WtSession::closed(self).await;
    }
}
