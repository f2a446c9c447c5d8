//! The application's handle on one QUIC connection of its shard.
//!
//! Handles are cheap clones (`Rc`) and never leave their shard's thread. Each
//! operation borrows the shard core briefly, acts on quinn-proto, and queues
//! the connection for the driver to send whatever the action produced.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use quinn_proto::{ConnectionError, Dir, SendDatagramError, StreamId, VarInt};

use crate::core::{dir_index, ConnEntry, ConnShared, ShardCore};
use crate::stats::ConnectionStats;
use crate::stream::{RecvStream, SendStream};
use crate::wait::Waiter;

/// A QUIC connection owned by the current shard.
#[derive(Clone)]
pub struct Connection {
    pub(crate) core: Rc<ShardCore>,
    pub(crate) shared: Rc<ConnShared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("shard", &self.core.index)
            .field("id", &self.shared.id)
            .finish()
    }
}

impl Connection {
    pub(crate) fn new(core: Rc<ShardCore>, shared: Rc<ConnShared>) -> Self {
        Self { core, shared }
    }

    /// Run `f` on this connection's live entry; if `f` sets its flag, queue
    /// the connection so the driver sends what the action produced. Reads,
    /// lookups and operations that come back Pending leave the flag down, so
    /// waiting costs the driver nothing. Fails with the reason the connection
    /// ended, once it has.
    pub(crate) fn access<R>(
        &self,
        f: impl FnOnce(&mut ConnEntry, &mut bool) -> R,
    ) -> Result<R, ConnectionError> {
        if let Some(error) = self.shared.error() {
            return Err(error);
        }
        let mut guard = self.core.inner.borrow_mut();
        let inner = &mut *guard;
        let entry = inner
            .conns
            .get_mut(&self.shared.handle)
            .filter(|e| e.shared.id == self.shared.id)
            .ok_or(ConnectionError::LocallyClosed)?;
        let mut queue = false;
        let result = f(entry, &mut queue);
        if queue {
            self.core.touch(inner, self.shared.handle);
        }
        Ok(result)
    }

    /// An action that always has something to send (finish, reset, stop...).
    pub(crate) fn with_entry<R>(
        &self,
        f: impl FnOnce(&mut ConnEntry) -> R,
    ) -> Result<R, ConnectionError> {
        self.access(|e, queue| {
            *queue = true;
            f(e)
        })
    }

    /// A look at the connection that sends nothing.
    fn inspect<R>(&self, f: impl FnOnce(&mut ConnEntry) -> R) -> Result<R, ConnectionError> {
        self.access(|e, _| f(e))
    }

    /// Unique among this shard's connections for the life of the process.
    pub fn stable_id(&self) -> u64 {
        self.shared.id
    }

    /// Index of the shard that owns this connection.
    pub fn shard(&self) -> usize {
        self.core.index
    }

    /// The application protocol negotiated with ALPN.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.shared.alpn.borrow().clone()
    }

    /// The server name the client asked for (SNI), on accepted connections.
    pub fn server_name(&self) -> Option<String> {
        self.shared.server_name.borrow().clone()
    }

    /// The peer's current address; it changes when the peer migrates.
    pub fn remote_address(&self) -> Option<SocketAddr> {
        self.inspect(|e| e.conn.remote_address()).ok()
    }

    /// The reason the connection ended, if it has.
    pub fn close_reason(&self) -> Option<ConnectionError> {
        self.shared.error()
    }

    /// Wait for the handshake to complete (client connections).
    pub(crate) async fn established(&self) -> Result<(), ConnectionError> {
        let waiter = self.shared.state_waiters.waiter();
        poll_fn(|cx| {
            if let Some(error) = self.shared.error() {
                return Poll::Ready(Err(error));
            }
            if self.shared.connected.get() {
                return Poll::Ready(Ok(()));
            }
            waiter.register(cx);
            Poll::Pending
        })
        .await
    }

    fn poll_open(
        &self,
        cx: &mut Context<'_>,
        dir: Dir,
        waiter: &Waiter<'_>,
    ) -> Poll<Result<StreamId, ConnectionError>> {
        let opened = self.access(|e, queue| match e.conn.streams().open(dir) {
            Some(id) => {
                *queue = true;
                Some(id)
            }
            None => {
                waiter.register(cx);
                None
            }
        });
        match opened {
            Ok(Some(id)) => Poll::Ready(Ok(id)),
            Ok(None) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_accept(
        &self,
        cx: &mut Context<'_>,
        dir: Dir,
        waiter: &Waiter<'_>,
    ) -> Poll<Result<StreamId, ConnectionError>> {
        let accepted = self.access(|e, queue| match e.conn.streams().accept(dir) {
            Some(id) => {
                *queue = true;
                e.grow_stream_limit(dir);
                Some(id)
            }
            None => {
                waiter.register(cx);
                None
            }
        });
        match accepted {
            Ok(Some(id)) => Poll::Ready(Ok(id)),
            Ok(None) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Open a unidirectional stream, waiting while the peer's stream limit
    /// is reached.
    pub async fn open_uni(&self) -> Result<SendStream, ConnectionError> {
        let waiter = self.shared.openers[dir_index(Dir::Uni)].waiter();
        let id = poll_fn(|cx| self.poll_open(cx, Dir::Uni, &waiter)).await?;
        Ok(SendStream::new(self.clone(), id))
    }

    /// Open a bidirectional stream.
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        let waiter = self.shared.openers[dir_index(Dir::Bi)].waiter();
        let id = poll_fn(|cx| self.poll_open(cx, Dir::Bi, &waiter)).await?;
        Ok((
            SendStream::new(self.clone(), id),
            RecvStream::new(self.clone(), id),
        ))
    }

    /// Wait for the peer to open a unidirectional stream.
    pub async fn accept_uni(&self) -> Result<RecvStream, ConnectionError> {
        let waiter = self.shared.accepters[dir_index(Dir::Uni)].waiter();
        let id = poll_fn(|cx| self.poll_accept(cx, Dir::Uni, &waiter)).await?;
        Ok(RecvStream::new(self.clone(), id))
    }

    /// Wait for the peer to open a bidirectional stream.
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), ConnectionError> {
        let waiter = self.shared.accepters[dir_index(Dir::Bi)].waiter();
        let id = poll_fn(|cx| self.poll_accept(cx, Dir::Bi, &waiter)).await?;
        Ok((
            SendStream::new(self.clone(), id),
            RecvStream::new(self.clone(), id),
        ))
    }

    /// Send an unreliable datagram; the oldest queued one is dropped if the
    /// send buffer is full.
    pub fn send_datagram(&self, data: Bytes) -> Result<(), DatagramError> {
        self.with_entry(|e| e.conn.datagrams().send(data, true))?
            .map_err(DatagramError::Send)
    }

    /// Send an unreliable datagram unless the send buffer is full, in which
    /// case it is refused (`SendDatagramError::Blocked`) and nothing queued
    /// is dropped: the caller decides (and counts) what to lose.
    pub fn try_send_datagram(&self, data: Bytes) -> Result<(), DatagramError> {
        self.with_entry(|e| e.conn.datagrams().send(data, false))?
            .map_err(DatagramError::Send)
    }

    /// Let the peer open up to `count` streams of `dir` at once from now
    /// on, and no more as it uses them (a raise is sent as MAX_STREAMS; a
    /// cut takes effect as streams close). For peers that earn more than
    /// every connection's ceiling at once, such as relay links, which open
    /// many streams in a burst.
    pub fn set_max_concurrent_streams(&self, dir: Dir, count: u32) {
        let _ = self.with_entry(|e| e.set_stream_limit(dir, count));
    }

    /// Streams of `dir` the peer may have open at once now.
    pub fn max_concurrent_streams(&self, dir: Dir) -> Option<u64> {
        self.inspect(|e| e.conn.max_concurrent_streams(dir)).ok()
    }

    /// Largest datagram the peer and path accept now, if datagrams are on.
    pub fn max_datagram_size(&self) -> Option<usize> {
        self.with_entry(|e| e.conn.datagrams().max_size())
            .ok()
            .flatten()
    }

    /// Wait for the next datagram from the peer.
    pub async fn read_datagram(&self) -> Result<Bytes, ConnectionError> {
        let waiter = self.shared.datagram_readers.waiter();
        poll_fn(|cx| {
            let received = self.inspect(|e| match e.conn.datagrams().recv() {
                Some(data) => Some(data),
                None => {
                    waiter.register(cx);
                    None
                }
            });
            match received {
                Ok(Some(data)) => Poll::Ready(Ok(data)),
                Ok(None) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await
    }

    /// A count that moves whenever the figures of [`Connection::stats`]
    /// may have (a packet from the peer or a timer handled): figures
    /// sampled at one value still hold while it has not moved.
    pub fn estimate_epoch(&self) -> u64 {
        self.shared.estimate_epoch.get()
    }

    /// Wait until [`Connection::estimate_epoch`] is no longer `epoch`, or
    /// the connection has ended. Costs nothing while nobody waits: for
    /// samplers that would otherwise poll an idle connection.
    pub async fn estimate_changed(&self, epoch: u64) {
        let waiter = self.shared.estimate_waiters.waiter();
        poll_fn(|cx| {
            if self.shared.estimate_epoch.get() != epoch || self.shared.error().is_some() {
                return Poll::Ready(());
            }
            waiter.register(cx);
            Poll::Pending
        })
        .await
    }

    /// Close the connection with an application error code and reason.
    /// Pending stream data is abandoned; the peer sees the code.
    pub fn close(&self, code: VarInt, reason: &[u8]) {
        self.core
            .close(&self.shared, code, Bytes::copy_from_slice(reason));
    }

    /// Wait until the connection ends, for whatever reason.
    pub async fn closed(&self) -> ConnectionError {
        let waiter = self.shared.state_waiters.waiter();
        poll_fn(|cx| {
            if let Some(error) = self.shared.error() {
                return Poll::Ready(error);
            }
            waiter.register(cx);
            Poll::Pending
        })
        .await
    }

    /// Round-trip time, congestion window, losses and traffic so far; after
    /// the connection closed, while it drains and once it is gone, its last
    /// figures (so that traffic counted from them misses nothing). `None`
    /// only if called while the shard's state is borrowed.
    pub fn stats(&self) -> Option<ConnectionStats> {
        let inner = self.core.inner.try_borrow().ok()?;
        match inner.conns.get(&self.shared.handle) {
            Some(entry) if entry.shared.id == self.shared.id => Some(entry.conn.stats().into()),
            _ => self.shared.final_stats.get(),
        }
    }
}

/// Why a datagram was not sent.
#[derive(Debug, thiserror::Error)]
pub enum DatagramError {
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] ConnectionError),
    #[error(transparent)]
    Send(SendDatagramError),
}
