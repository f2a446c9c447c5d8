//! An in-memory session transport: two ends of one "connection" on one
//! thread, for running sessions under `#[monoio::test]` and in benchmarks
//! with no socket.
//!
//! Streams are byte queues with QUIC's shape where a session can tell:
//! - each stream direction holds at most `window` unread bytes, so a peer
//!   that stops reading blocks the writer (stream flow control);
//! - each end accepts at most `streams` concurrent peer streams of each
//!   direction type; a stream keeps its credit until the accepting end has
//!   dropped its halves (stream limits), so a peer that sits on its
//!   streams blocks `open_uni`/`open_bi`;
//! - reset, stop and close propagate with their codes; a close fails every
//!   stream of both ends (`ConnectionLost`), as a QUIC close does.
//!
//! Priorities are ignored. Everything is `!Send`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use qumo_shards::quinn_proto::ApplicationClose;
use qumo_shards::{ConnectionError, ReadStreamError, VarInt, WriteError};

use super::transport::{DatagramDrop, Estimate, RecvStream, SendStream, Transport, TransportError};
use crate::lite::SessionCode;

/// Bounds of a memory connection, the same for both ends.
#[derive(Debug, Clone, Copy)]
pub struct MemoryLimits {
    /// Concurrent streams of each type (uni, bidi) an end accepts from its
    /// peer.
    pub streams: usize,
    /// Unread bytes one stream direction holds before its writer waits.
    pub window: usize,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        Self {
            streams: 100,
            window: 256 * 1024,
        }
    }
}

/// How a memory connection ended, as seen from one end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryClose {
    pub code: SessionCode,
    pub reason: String,
    /// Whether the other end closed it.
    pub by_peer: bool,
}

const UNI: usize = 0;
const BI: usize = 1;

/// Datagrams an end holds unread before more are refused (as a full QUIC
/// send buffer refuses them), and the largest one: a lite datagram's
/// 1200 bytes.
pub const DATAGRAM_QUEUE: usize = 16;
pub const MAX_DATAGRAM: usize = 1200;

/// Session ids for memory ends: one counter for the process, so that two
/// ends never share an id in a shard's session table.
static NEXT_ID: AtomicU64 = AtomicU64::new(1 << 48);

/// One direction of one stream.
#[derive(Default)]
struct Pipe {
    chunks: VecDeque<Bytes>,
    buffered: usize,
    finished: bool,
    reset: Option<VarInt>,
    stopped: Option<VarInt>,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// The send priority the writer last set, for tests of send order.
    priority: Option<i32>,
}

impl Pipe {
    fn wake_reader(&mut self) {
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }
}

type PipeRef = Rc<RefCell<Pipe>>;

/// A stream the peer opened, waiting to be accepted.
struct Incoming {
    /// This end's sending direction (bidi only).
    send: Option<PipeRef>,
    recv: PipeRef,
    credit: Rc<Credit>,
}

#[derive(Default)]
struct End {
    incoming: [VecDeque<Incoming>; 2],
    /// Peer streams of each type this end still holds (credit taken).
    open: [usize; 2],
    accepters: [Vec<Waker>; 2],
    /// Tasks at the other end waiting for this end's credit.
    credit_waiters: [Vec<Waker>; 2],
    closed_waiters: Vec<Waker>,
    /// Datagrams from the peer, unread.
    datagrams: VecDeque<Bytes>,
    datagram_readers: Vec<Waker>,
}

struct Close {
    by: usize,
    code: SessionCode,
    reason: String,
}

struct Link {
    limits: MemoryLimits,
    closed: Option<Close>,
    ends: [End; 2],
    /// Every stream direction, to fail them all on close; pruned of dead
    /// ones as it doubles.
    pipes: Vec<Weak<RefCell<Pipe>>>,
    prune_at: usize,
}

impl Link {
    fn error(&self, side: usize) -> Option<ConnectionError> {
        let close = self.closed.as_ref()?;
        Some(match close.by == side {
            true => ConnectionError::LocallyClosed,
            false => ConnectionError::ApplicationClosed(ApplicationClose {
                error_code: VarInt::from_u32(close.code.0),
                reason: Bytes::copy_from_slice(close.reason.as_bytes()),
            }),
        })
    }

    fn new_pipe(&mut self) -> PipeRef {
        let pipe = PipeRef::default();
        if self.pipes.len() >= self.prune_at {
            self.pipes.retain(|p| p.strong_count() > 0);
            self.prune_at = (self.pipes.len() * 2).max(64);
        }
        self.pipes.push(Rc::downgrade(&pipe));
        pipe
    }
}

fn register(list: &mut Vec<Waker>, cx: &Context<'_>) {
    if !list.iter().any(|w| w.will_wake(cx.waker())) {
        list.push(cx.waker().clone());
    }
}

fn wake(list: &mut Vec<Waker>) {
    for waker in list.drain(..) {
        waker.wake();
    }
}

/// The accepting end's hold on a peer stream's slot; given back when the
/// last of its halves there is dropped.
struct Credit {
    link: Weak<RefCell<Link>>,
    side: usize,
    dir: usize,
}

impl Drop for Credit {
    fn drop(&mut self) {
        let Some(link) = self.link.upgrade() else {
            return;
        };
        // A credit is never dropped under a borrow of its link (queued
        // ones are taken out before they go), so this cannot fail; if a
        // change broke that, losing a credit beats a panic.
        let Ok(mut link) = link.try_borrow_mut() else {
            return;
        };
        let end = &mut link.ends[self.side];
        end.open[self.dir] -= 1;
        wake(&mut end.credit_waiters[self.dir]);
    }
}

struct Handle {
    link: Rc<RefCell<Link>>,
    side: usize,
    id: u64,
    /// What this end reports as its path estimate (set by a test).
    estimate: std::cell::Cell<Estimate>,
    /// Moves with each estimate set; its waiters are woken then.
    estimate_epoch: std::cell::Cell<u64>,
    /// How often the estimate was read (for tests of how often probes sample).
    estimate_reads: std::cell::Cell<u64>,
    estimate_waiters: qumo_shards::WaitList,
}

/// All handles of an end gone: the connection closes, as dropping every
/// handle of a QUIC connection does.
impl Drop for Handle {
    fn drop(&mut self) {
        close(&self.link, self.side, SessionCode::CANCEL, "");
    }
}

fn close(link: &Rc<RefCell<Link>>, side: usize, code: SessionCode, reason: &str) {
    let queued: Vec<VecDeque<Incoming>>;
    {
        let mut guard = link.borrow_mut();
        let link = &mut *guard;
        if link.closed.is_some() {
            return;
        }
        link.closed = Some(Close {
            by: side,
            code,
            reason: reason.to_string(),
        });
        for pipe in link.pipes.drain(..).filter_map(|p| p.upgrade()) {
            let mut pipe = pipe.borrow_mut();
            pipe.wake_reader();
            pipe.wake_writer();
        }
        let mut taken = Vec::new();
        for end in &mut link.ends {
            for list in end.accepters.iter_mut().chain(&mut end.credit_waiters) {
                wake(list);
            }
            wake(&mut end.closed_waiters);
            wake(&mut end.datagram_readers);
            taken.extend(end.incoming.iter_mut().map(std::mem::take));
        }
        queued = taken;
    }
    // Dropped outside the borrow: their credits go back to the link.
    drop(queued);
}

/// One end of an in-memory session connection.
#[derive(Clone)]
pub struct MemoryTransport {
    handle: Rc<Handle>,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("id", &self.handle.id)
            .field("side", &self.handle.side)
            .finish()
    }
}

impl MemoryTransport {
    /// Two connected ends with the default limits.
    pub fn pair() -> (Self, Self) {
        Self::pair_with(MemoryLimits::default())
    }

    pub fn pair_with(limits: MemoryLimits) -> (Self, Self) {
        let link = Rc::new(RefCell::new(Link {
            limits,
            closed: None,
            ends: Default::default(),
            pipes: Vec::new(),
            prune_at: 64,
        }));
        let end = |side| Self {
            handle: Rc::new(Handle {
                link: link.clone(),
                side,
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                estimate: Default::default(),
                estimate_epoch: Default::default(),
                estimate_reads: Default::default(),
                estimate_waiters: Default::default(),
            }),
        };
        (end(0), end(1))
    }

    fn link(&self) -> &Rc<RefCell<Link>> {
        &self.handle.link
    }

    fn side(&self) -> usize {
        self.handle.side
    }

    /// Make this end report `estimate`, as QUIC's congestion controller
    /// would (a memory link has none of its own).
    pub fn set_estimate(&self, estimate: Estimate) {
        let handle = &self.handle;
        handle.estimate.set(estimate);
        handle.estimate_epoch.set(handle.estimate_epoch.get() + 1);
        handle.estimate_waiters.wake_all();
    }

    /// How often this end's estimate has been read.
    pub fn estimate_reads(&self) -> u64 {
        self.handle.estimate_reads.get()
    }

    /// How the connection ended, if it has.
    pub fn close_reason(&self) -> Option<MemoryClose> {
        let link = self.link().borrow();
        let close = link.closed.as_ref()?;
        Some(MemoryClose {
            code: close.code,
            reason: close.reason.clone(),
            by_peer: close.by != self.side(),
        })
    }

    /// Peer streams of each type (uni, bidi) this end holds or has not yet
    /// accepted: what counts against its stream limit.
    pub fn peer_streams_open(&self) -> (usize, usize) {
        let link = self.link().borrow();
        let end = &link.ends[self.side()];
        (end.open[UNI], end.open[BI])
    }

    fn send_half(&self, pipe: PipeRef, credit: Option<Rc<Credit>>) -> MemorySend {
        MemorySend {
            link: self.link().clone(),
            side: self.side(),
            pipe,
            done: false,
            _credit: credit,
        }
    }

    fn recv_half(&self, pipe: PipeRef, credit: Option<Rc<Credit>>) -> MemoryRecv {
        MemoryRecv {
            link: self.link().clone(),
            side: self.side(),
            pipe,
            done: false,
            _credit: credit,
        }
    }

    /// Open a stream of type `dir` once the peer has credit for it: our
    /// sending pipe, and for bidi our receiving one.
    fn poll_open(
        &self,
        cx: &Context<'_>,
        dir: usize,
    ) -> Poll<Result<(PipeRef, Option<PipeRef>), TransportError>> {
        let mut guard = self.link().borrow_mut();
        let link = &mut *guard;
        if let Some(error) = link.error(self.side()) {
            return Poll::Ready(Err(error.into()));
        }
        let peer = 1 - self.side();
        if link.ends[peer].open[dir] >= link.limits.streams {
            register(&mut link.ends[peer].credit_waiters[dir], cx);
            return Poll::Pending;
        }
        let out = link.new_pipe();
        let back = (dir == BI).then(|| link.new_pipe());
        let credit = Rc::new(Credit {
            link: Rc::downgrade(self.link()),
            side: peer,
            dir,
        });
        let end = &mut link.ends[peer];
        end.open[dir] += 1;
        end.incoming[dir].push_back(Incoming {
            send: back.clone(),
            recv: out.clone(),
            credit,
        });
        wake(&mut end.accepters[dir]);
        Poll::Ready(Ok((out, back)))
    }

    fn poll_accept(&self, cx: &Context<'_>, dir: usize) -> Poll<Result<Incoming, TransportError>> {
        let mut guard = self.link().borrow_mut();
        let link = &mut *guard;
        if let Some(error) = link.error(self.side()) {
            return Poll::Ready(Err(error.into()));
        }
        let end = &mut link.ends[self.side()];
        match end.incoming[dir].pop_front() {
            Some(incoming) => Poll::Ready(Ok(incoming)),
            None => {
                register(&mut end.accepters[dir], cx);
                Poll::Pending
            }
        }
    }
}

impl Transport for MemoryTransport {
    type Send = MemorySend;
    type Recv = MemoryRecv;

    fn id(&self) -> u64 {
        self.handle.id
    }

    fn remote_address(&self) -> Option<SocketAddr> {
        None
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn open_uni(&self) -> Result<MemorySend, TransportError> {
        let (out, _) = std::future::poll_fn(|cx| self.poll_open(cx, UNI)).await?;
        Ok(self.send_half(out, None))
    }

    async fn open_bi(&self) -> Result<(MemorySend, MemoryRecv), TransportError> {
        let (out, back) = std::future::poll_fn(|cx| self.poll_open(cx, BI)).await?;
        let back = back.unwrap_or_default();
        Ok((self.send_half(out, None), self.recv_half(back, None)))
    }

    async fn accept_uni(&self) -> Result<(MemoryRecv, Bytes), TransportError> {
        let incoming = std::future::poll_fn(|cx| self.poll_accept(cx, UNI)).await?;
        Ok((
            self.recv_half(incoming.recv, Some(incoming.credit)),
            Bytes::new(),
        ))
    }

    async fn accept_bi(&self) -> Result<(MemorySend, MemoryRecv, Bytes), TransportError> {
        let incoming = std::future::poll_fn(|cx| self.poll_accept(cx, BI)).await?;
        let send = incoming.send.unwrap_or_default();
        Ok((
            self.send_half(send, Some(incoming.credit.clone())),
            self.recv_half(incoming.recv, Some(incoming.credit)),
            Bytes::new(),
        ))
    }

    fn estimate(&self) -> Estimate {
        let handle = &self.handle;
        handle.estimate_reads.set(handle.estimate_reads.get() + 1);
        handle.estimate.get()
    }

    fn estimate_epoch(&self) -> u64 {
        self.handle.estimate_epoch.get()
    }

    async fn estimate_changed(&self, epoch: u64) {
        let handle = &self.handle;
        let waiter = handle.estimate_waiters.waiter();
        std::future::poll_fn(|cx| {
            if handle.estimate_epoch.get() != epoch {
                return Poll::Ready(());
            }
            waiter.register(cx);
            Poll::Pending
        })
        .await
    }

    fn max_datagram_size(&self) -> usize {
        MAX_DATAGRAM
    }

    fn send_datagram(&self, datagram: Bytes) -> Result<(), DatagramDrop> {
        let mut link = self.link().borrow_mut();
        if link.closed.is_some() {
            return Err(DatagramDrop::Lost);
        }
        if datagram.len() > MAX_DATAGRAM {
            return Err(DatagramDrop::TooLarge);
        }
        let peer = &mut link.ends[1 - self.side()];
        if peer.datagrams.len() >= DATAGRAM_QUEUE {
            return Err(DatagramDrop::Full);
        }
        peer.datagrams.push_back(datagram);
        wake(&mut peer.datagram_readers);
        Ok(())
    }

    async fn recv_datagram(&self) -> Option<Bytes> {
        std::future::poll_fn(|cx| {
            let mut link = self.link().borrow_mut();
            if link.closed.is_some() {
                return Poll::Ready(None);
            }
            let end = &mut link.ends[self.side()];
            match end.datagrams.pop_front() {
                Some(datagram) => Poll::Ready(Some(datagram)),
                None => {
                    register(&mut end.datagram_readers, cx);
                    Poll::Pending
                }
            }
        })
        .await
    }

    fn close(&self, code: SessionCode, reason: &str) {
        close(self.link(), self.side(), code, reason);
    }

    async fn closed(&self) {
        std::future::poll_fn(|cx| {
            let mut link = self.link().borrow_mut();
            if link.closed.is_some() {
                return Poll::Ready(());
            }
            register(&mut link.ends[self.side()].closed_waiters, cx);
            Poll::Pending
        })
        .await
    }
}

/// The sending half of a memory stream.
pub struct MemorySend {
    link: Rc<RefCell<Link>>,
    side: usize,
    pipe: PipeRef,
    /// Finished or reset.
    done: bool,
    _credit: Option<Rc<Credit>>,
}

impl MemorySend {
    fn check(&self) -> Result<(), WriteError> {
        match self.link.borrow().error(self.side) {
            Some(error) => Err(WriteError::ConnectionLost(error)),
            None => Ok(()),
        }
    }
}

impl MemorySend {
    /// Wait, without writing, until the reader stops the stream (its
    /// code) or the connection ends (`None`). For tests of refusals.
    pub async fn stopped(&self) -> Option<VarInt> {
        std::future::poll_fn(|cx| {
            if self.check().is_err() {
                return Poll::Ready(None);
            }
            let mut pipe = self.pipe.borrow_mut();
            match pipe.stopped {
                Some(code) => Poll::Ready(Some(code)),
                None => {
                    pipe.writer = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl SendStream for MemorySend {
    fn poll_write_chunks(
        &mut self,
        cx: &mut Context<'_>,
        chunks: &mut [Bytes],
    ) -> Poll<Result<usize, WriteError>> {
        self.check()?;
        let window = self.link.borrow().limits.window;
        let mut pipe = self.pipe.borrow_mut();
        if let Some(code) = pipe.stopped {
            return Poll::Ready(Err(WriteError::Stopped(code)));
        }
        if self.done {
            return Poll::Ready(Err(WriteError::ClosedStream));
        }
        let mut room = window.saturating_sub(pipe.buffered);
        if room == 0 && chunks.iter().any(|c| !c.is_empty()) {
            pipe.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut written = 0;
        for chunk in chunks.iter_mut() {
            if room == 0 {
                break;
            }
            let take = chunk.len().min(room);
            if take == 0 {
                continue;
            }
            pipe.chunks.push_back(chunk.split_to(take));
            room -= take;
            written += take;
        }
        pipe.buffered += written;
        if written > 0 {
            pipe.wake_reader();
        }
        Poll::Ready(Ok(written))
    }

    fn finish(&mut self) -> Result<(), WriteError> {
        self.check()?;
        let mut pipe = self.pipe.borrow_mut();
        if let Some(code) = pipe.stopped {
            return Err(WriteError::Stopped(code));
        }
        if std::mem::replace(&mut self.done, true) {
            return Err(WriteError::ClosedStream);
        }
        pipe.finished = true;
        pipe.wake_reader();
        Ok(())
    }

    fn reset(&mut self, code: VarInt) -> Result<(), WriteError> {
        self.check()?;
        if std::mem::replace(&mut self.done, true) {
            return Err(WriteError::ClosedStream);
        }
        let mut pipe = self.pipe.borrow_mut();
        pipe.reset = Some(code);
        pipe.chunks.clear();
        pipe.buffered = 0;
        pipe.wake_reader();
        Ok(())
    }

    fn set_priority(&mut self, priority: i32) -> Result<(), WriteError> {
        self.check()?;
        self.pipe.borrow_mut().priority = Some(priority);
        Ok(())
    }
}

impl Drop for MemorySend {
    fn drop(&mut self) {
        if !self.done {
            let mut pipe = self.pipe.borrow_mut();
            pipe.finished = true;
            pipe.wake_reader();
        }
    }
}

/// The receiving half of a memory stream.
pub struct MemoryRecv {
    link: Rc<RefCell<Link>>,
    side: usize,
    pipe: PipeRef,
    /// Read to the end or reset, or stopped.
    done: bool,
    _credit: Option<Rc<Credit>>,
}

impl MemoryRecv {
    /// The send priority the writer last set on this stream, if any (a
    /// memory pair has no scheduler; tests read what a QUIC one would get).
    pub fn priority(&self) -> Option<i32> {
        self.pipe.borrow().priority
    }

    /// Wait, without reading, until the writer resets the stream (its
    /// code) or finishes it or the connection ends (`None`). For tests of
    /// readers that fall behind: reading would free the window.
    pub async fn reset_received(&self) -> Option<VarInt> {
        std::future::poll_fn(|cx| {
            if self.link.borrow().error(self.side).is_some() {
                return Poll::Ready(None);
            }
            let mut pipe = self.pipe.borrow_mut();
            match (pipe.reset, pipe.finished) {
                (Some(code), _) => Poll::Ready(Some(code)),
                (None, true) => Poll::Ready(None),
                (None, false) => {
                    pipe.reader = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl RecvStream for MemoryRecv {
    fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, ReadStreamError>> {
        if let Some(error) = self.link.borrow().error(self.side) {
            return Poll::Ready(Err(ReadStreamError::ConnectionLost(error)));
        }
        let mut pipe = self.pipe.borrow_mut();
        if let Some(code) = pipe.reset {
            self.done = true;
            return Poll::Ready(Err(ReadStreamError::Reset(code)));
        }
        if self.done {
            return Poll::Ready(Err(ReadStreamError::ClosedStream));
        }
        if let Some(front) = pipe.chunks.front_mut() {
            let chunk = match front.len() <= max {
                true => pipe.chunks.pop_front().unwrap_or_default(),
                false => front.split_to(max.max(1)),
            };
            pipe.buffered -= chunk.len();
            pipe.wake_writer();
            return Poll::Ready(Ok(Some(chunk)));
        }
        if pipe.finished {
            self.done = true;
            return Poll::Ready(Ok(None));
        }
        pipe.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn stop(&mut self, code: VarInt) -> Result<(), ReadStreamError> {
        if std::mem::replace(&mut self.done, true) {
            return Err(ReadStreamError::ClosedStream);
        }
        let mut pipe = self.pipe.borrow_mut();
        pipe.stopped = Some(code);
        pipe.chunks.clear();
        pipe.buffered = 0;
        pipe.wake_writer();
        Ok(())
    }
}

impl Drop for MemoryRecv {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.stop(VarInt::from_u32(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[monoio::test(enable_timer = true)]
    async fn bytes_flow_and_a_full_window_waits_for_the_reader() {
        let (a, b) = MemoryTransport::pair_with(MemoryLimits {
            streams: 1,
            window: 4,
        });
        let mut send = a.open_uni().await.unwrap();
        let mut chunks = [Bytes::from_static(b"abcdef")];
        let written = std::future::poll_fn(|cx| send.poll_write_chunks(cx, &mut chunks)).await;
        assert_eq!(written.unwrap(), 4, "the window bounds a write");
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(send.poll_write_chunks(&mut cx, &mut chunks).is_pending());
        let (mut recv, _) = b.accept_uni().await.unwrap();
        assert_eq!(recv.read_chunk(usize::MAX).await.unwrap().unwrap(), "abcd");
        send.write_chunk(chunks[0].clone()).await.unwrap();
        send.finish().unwrap();
        assert_eq!(recv.read_chunk(usize::MAX).await.unwrap().unwrap(), "ef");
        assert_eq!(recv.read_chunk(usize::MAX).await.unwrap(), None);
    }

    #[monoio::test(enable_timer = true)]
    async fn a_held_stream_keeps_its_credit_until_dropped() {
        let (a, b) = MemoryTransport::pair_with(MemoryLimits {
            streams: 1,
            window: 16,
        });
        let first = a.open_uni().await.unwrap();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut second = std::pin::pin!(a.open_uni());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        let (held, _) = b.accept_uni().await.unwrap();
        drop(first);
        assert!(second.as_mut().poll(&mut cx).is_pending(), "still held");
        assert_eq!(b.peer_streams_open(), (1, 0));
        drop(held);
        assert!(second.as_mut().poll(&mut cx).is_ready());
    }

    #[monoio::test(enable_timer = true)]
    async fn reset_stop_and_close_carry_their_codes() {
        let (a, b) = MemoryTransport::pair();
        let (mut send, mut recv) = a.open_bi().await.unwrap();
        let (mut peer_send, mut peer_recv, _) = b.accept_bi().await.unwrap();
        send.reset(VarInt::from_u32(7)).unwrap();
        assert!(matches!(
            peer_recv.read_chunk(10).await,
            Err(ReadStreamError::Reset(code)) if code == VarInt::from_u32(7)
        ));
        recv.stop(VarInt::from_u32(9)).unwrap();
        assert!(matches!(
            peer_send.write_chunk(Bytes::from_static(b"x")).await,
            Err(WriteError::Stopped(code)) if code == VarInt::from_u32(9)
        ));
        a.close(SessionCode(42), "bye");
        b.closed().await;
        let seen = b.close_reason().unwrap();
        assert_eq!((seen.code, seen.by_peer), (SessionCode(42), true));
        assert!(matches!(
            b.open_uni().await,
            Err(TransportError::Connection(
                ConnectionError::ApplicationClosed(_)
            ))
        ));
    }
}
