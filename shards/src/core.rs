//! One shard's QUIC state: the quinn-proto endpoint, its connections, their
//! timers and the wakers of the tasks waiting on them.
//!
//! Everything here is single-threaded (`Rc`, `RefCell`): a shard's state is
//! touched only by its own thread. No borrow is ever held across an `.await`.
//! Waking a waker while borrowed is fine: a local wake only schedules.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ConnectionError, ConnectionHandle, DatagramEvent, Dir, EcnCodepoint, Endpoint, Event,
    ServerConfig, StreamEvent, StreamId, VarInt,
};
use tracing::{debug, trace, warn};

use crate::admission::{Admission, Refusal, SourceKey, Verdict};
use crate::cid::DialKey;
use crate::notify::LocalNotify;
use crate::socket::{is_per_datagram_error, UdpIo};
use crate::stats::{ConnectionStats, ShardStats};
use crate::wait::WaitList;

/// Most datagrams one connection may send in one flush before others get a
/// turn; keeps one fast connection from starving the rest of the shard.
const TRANSMIT_BUDGET: usize = 64;

/// State that outlives a connection's entry in the shard: what its handles
/// need to answer after the QUIC state is gone.
pub(crate) struct ConnShared {
    /// Unique for the life of the shard; quinn-proto reuses handles.
    pub id: u64,
    pub handle: ConnectionHandle,
    pub connected: Cell<bool>,
    pub alpn: RefCell<Option<Vec<u8>>>,
    pub server_name: RefCell<Option<String>>,
    pub error: RefCell<Option<ConnectionError>>,
    /// Tasks waiting for the handshake or for the connection to end.
    pub state_waiters: WaitList,
    /// Tasks waiting for stream credit to open a stream, by direction. A
    /// task that gives up (a group writer whose group expired while the
    /// peer granted nothing) frees its place, so a peer that never grants
    /// credit does not make the list grow.
    pub openers: [WaitList; 2],
    /// Tasks waiting for the peer to open a stream, by direction.
    pub accepters: [WaitList; 2],
    /// Tasks waiting for a datagram.
    pub datagram_readers: WaitList,
    /// Counts the packets from the peer and the timers handled on this
    /// connection: the only times quinn-proto changes its RTT and
    /// congestion window, so figures sampled at one count still hold.
    pub estimate_epoch: Cell<u64>,
    /// Tasks waiting for `estimate_epoch` to move.
    pub estimate_waiters: WaitList,
    /// The connection's figures when its QUIC state was dropped, so that a
    /// reader that samples traffic still gets the final totals.
    pub final_stats: Cell<Option<ConnectionStats>>,
}

impl ConnShared {
    pub fn error(&self) -> Option<ConnectionError> {
        self.error.borrow().clone()
    }

    /// A packet or timer was handled: the congestion figures may differ.
    fn estimate_moved(&self) {
        self.estimate_epoch
            .set(self.estimate_epoch.get().wrapping_add(1));
        self.estimate_waiters.wake_all();
    }

    fn fail(&self, reason: ConnectionError) {
        let mut error = self.error.borrow_mut();
        if error.is_none() {
            *error = Some(reason);
        }
        drop(error);
        self.state_waiters.wake_all();
    }
}

/// A live connection in the shard.
pub(crate) struct ConnEntry {
    pub conn: quinn_proto::Connection,
    pub shared: Rc<ConnShared>,
    queued: bool,
    /// The deadline quinn-proto asked for.
    timer: Option<Instant>,
    /// The earliest deadline this connection has in the timer heap.
    timer_in_heap: Option<Instant>,
    /// The source this connection was admitted from; its slots are given
    /// back when the connection leaves the shard. `None` for connections
    /// this shard opened.
    source: Option<SourceKey>,
    /// Accepted and not yet established: counted in the shard's handshakes
    /// in progress.
    handshaking: bool,
    /// When an unfinished handshake is closed.
    handshake_deadline: Option<Instant>,
    /// One waker per stream, not a list: a stream has one handle of each
    /// side, so at most one task waits to read it (or write, or see it
    /// finished), and the map finds it by id.
    pub readers: HashMap<StreamId, Waker>,
    pub writers: HashMap<StreamId, Waker>,
    /// Waiting for a send stream to be finished (all acked) or stopped.
    pub finishers: HashMap<StreamId, Waker>,
    /// The most streams (bidi, uni) the peer may earn by using them (see
    /// `grow_stream_limit`).
    pub stream_ceilings: [u32; 2],
}

impl ConnEntry {
    fn new(
        conn: quinn_proto::Connection,
        shared: Rc<ConnShared>,
        stream_ceilings: [u32; 2],
    ) -> Self {
        Self {
            conn,
            shared,
            queued: false,
            timer: None,
            timer_in_heap: None,
            source: None,
            handshaking: false,
            handshake_deadline: None,
            readers: HashMap::new(),
            writers: HashMap::new(),
            finishers: HashMap::new(),
            stream_ceilings,
        }
    }

    /// The application took a stream the peer opened: if the peer has more
    /// than half of its limit of `dir` open, double the limit (up to the
    /// ceiling), so that a peer that uses its streams gets more before it
    /// is blocked, and one that does not never costs their slots.
    pub fn grow_stream_limit(&mut self, dir: Dir) {
        let limit = self.conn.max_concurrent_streams(dir);
        let ceiling = u64::from(self.stream_ceilings[dir_index(dir)]);
        if limit < ceiling && self.conn.streams().remote_open_streams(dir) * 2 > limit {
            let raised = limit.saturating_mul(2).clamp(1, ceiling);
            // The ceiling is a u32, so `raised` is a valid VarInt.
            self.conn
                .set_max_concurrent_streams(dir, VarInt::from_u32(raised as u32));
        }
    }

    /// Set the peer's limit of `dir` and its ceiling to `count`.
    pub fn set_stream_limit(&mut self, dir: Dir, count: u32) {
        self.stream_ceilings[dir_index(dir)] = count;
        self.conn.set_max_concurrent_streams(dir, count.into());
    }

    /// The earliest instant this connection needs the driver: quinn-proto's
    /// timer or the handshake deadline.
    fn next_wake(&self) -> Option<Instant> {
        match (self.timer, self.handshake_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn wake_everyone(&mut self) {
        for (_, w) in self.readers.drain() {
            w.wake();
        }
        for (_, w) in self.writers.drain() {
            w.wake();
        }
        for (_, w) in self.finishers.drain() {
            w.wake();
        }
        let shared = &self.shared;
        for list in shared.accepters.iter().chain(&shared.openers) {
            list.wake_all();
        }
        shared.datagram_readers.wake_all();
        shared.estimate_waiters.wake_all();
        shared.state_waiters.wake_all();
    }
}

pub(crate) fn dir_index(dir: Dir) -> usize {
    match dir {
        Dir::Bi => 0,
        Dir::Uni => 1,
    }
}

/// A datagram that arrived on one shard's socket for another's connection.
pub struct ForwardedDatagram {
    pub remote: SocketAddr,
    pub local_ip: Option<IpAddr>,
    pub ecn: Option<EcnCodepoint>,
    pub data: BytesMut,
}

/// A transmit the socket refused with `WouldBlock`, kept until it is writable.
struct BlockedTransmit {
    transmit: quinn_proto::Transmit,
    contents: Vec<u8>,
}

pub(crate) struct ShardInner {
    pub endpoint: Endpoint,
    /// Boxed: a quinn-proto `Connection` is ~6 KB, and inline every empty
    /// bucket of the table (up to half of them after it doubles) would
    /// cost as much as a connection.
    pub conns: HashMap<ConnectionHandle, Box<ConnEntry>>,
    queue: Vec<ConnectionHandle>,
    /// Connections' wake-ups, earliest first: (deadline, handle, id). A
    /// connection's live entry is the one at its `timer_in_heap`; the others
    /// are dead (see `compact_timers`).
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    pub accept_queue: VecDeque<Rc<ConnShared>>,
    pub shutting_down: bool,
    pub shutdown_deadline: Option<Instant>,
    /// When connections get closed during a graceful shutdown; `None` once
    /// they have been (or before shutdown).
    pub close_at: Option<Instant>,
    /// Server connections accepted and not yet established or drained.
    handshakes: usize,
    next_conn_id: u64,
    server_config: Option<Arc<ServerConfig>>,
    transmit_buf: Vec<u8>,
    blocked: Option<BlockedTransmit>,
}

/// Dead timer entries tolerated beyond one per connection before the heap
/// is compacted.
const TIMER_SLACK: usize = 64;

impl ShardInner {
    /// Drop the timer heap's dead entries once it holds more than two
    /// entries per connection plus `TIMER_SLACK`.
    ///
    /// A connection keeps one live entry, but leaves a dead one behind each
    /// time its deadline moves earlier, and each time that earlier entry
    /// fires to find a later deadline (pushed anew). A subscriber that is
    /// sent a frame every 20 ms does both every ACK cycle: its loss timer is
    /// armed, the ACK disarms it, and the keep-alive deadline is pushed
    /// again. Left to surface on their own (up to `keep_alive` later), dead
    /// entries were ~100 per connection (59,000 for 510 connections on a
    /// shard), deepening every push and pop.
    ///
    /// One entry per connection survives: a connection can hold several
    /// copies of its live entry (its deadline fired and the same later
    /// deadline was pushed again), and keeping them all could leave the
    /// heap above the threshold, compacting again on every turn. With at
    /// most one per connection left, the next compaction is at least
    /// `conns + TIMER_SLACK` pushes away, so its cost is spread over them.
    fn compact_timers(&mut self, stats: &ShardStats) {
        if self.timers.len() > 2 * self.conns.len() + TIMER_SLACK {
            let conns = &self.conns;
            let mut kept = HashSet::with_capacity(conns.len());
            self.timers.retain(|&Reverse((at, handle, id))| {
                let live = conns
                    .get(&ConnectionHandle(handle))
                    .is_some_and(|e| e.shared.id == id && e.timer_in_heap == Some(at));
                // A second copy of a live entry finds `timer_in_heap`
                // cleared by the first when it pops, so dropping it now
                // changes nothing.
                live && kept.insert(handle)
            });
        }
        ShardStats::set(&stats.timers_queued, self.timers.len() as u64);
    }
}

/// One shard's QUIC core, shared by its tasks and every handle it gives out.
pub(crate) struct ShardCore {
    pub index: usize,
    pub shard_count: usize,
    pub inner: RefCell<ShardInner>,
    pub stats: Arc<ShardStats>,
    /// Admission limits, some shared with every other shard.
    admission: Arc<Admission>,
    /// Wakes the driver: connections are queued or a timer moved earlier.
    pub driver: LocalNotify,
    /// Tasks waiting for an established connection (or shutdown).
    pub accept_waiters: WaitList,
    /// Tasks waiting for graceful shutdown to begin.
    pub shutdown_waiters: WaitList,
    pub io: UdpIo,
    pub transport: Arc<quinn_proto::TransportConfig>,
    /// The most streams (bidi, uni) a connection's peer may earn by using
    /// them; each connection starts with its own copy.
    stream_ceilings: [u32; 2],
    close_code: VarInt,
    close_reason: Bytes,
    /// Marks the ids of connections this runtime dials (see `cid`).
    pub dial_key: DialKey,
    /// Shared with this shard's id generator: set while it dials.
    dialling: Arc<AtomicBool>,
}

pub(crate) struct CoreParams {
    pub index: usize,
    pub shard_count: usize,
    pub endpoint: Endpoint,
    pub server_config: Option<Arc<ServerConfig>>,
    pub stats: Arc<ShardStats>,
    pub admission: Arc<Admission>,
    pub io: UdpIo,
    pub transport: Arc<quinn_proto::TransportConfig>,
    pub stream_ceilings: [u32; 2],
    pub close_code: VarInt,
    pub close_reason: Bytes,
    pub dial_key: DialKey,
    pub dialling: Arc<AtomicBool>,
}

impl ShardCore {
    pub fn new(p: CoreParams) -> Self {
        Self {
            index: p.index,
            shard_count: p.shard_count,
            inner: RefCell::new(ShardInner {
                endpoint: p.endpoint,
                conns: HashMap::new(),
                queue: Vec::new(),
                timers: BinaryHeap::new(),
                accept_queue: VecDeque::new(),
                shutting_down: false,
                shutdown_deadline: None,
                close_at: None,
                handshakes: 0,
                next_conn_id: 0,
                server_config: p.server_config,
                transmit_buf: Vec::new(),
                blocked: None,
            }),
            stats: p.stats,
            admission: p.admission,
            driver: LocalNotify::default(),
            accept_waiters: WaitList::default(),
            shutdown_waiters: WaitList::default(),
            io: p.io,
            transport: p.transport,
            stream_ceilings: p.stream_ceilings,
            close_code: p.close_code,
            close_reason: p.close_reason,
            dial_key: p.dial_key,
            dialling: p.dialling,
        }
    }

    /// Queue a connection for the driver's next flush.
    pub fn touch(&self, inner: &mut ShardInner, handle: ConnectionHandle) {
        if let Some(entry) = inner.conns.get_mut(&handle) {
            if !entry.queued {
                entry.queued = true;
                inner.queue.push(handle);
            }
            self.driver.notify();
        }
    }

    fn insert(
        &self,
        inner: &mut ShardInner,
        handle: ConnectionHandle,
        conn: quinn_proto::Connection,
        admitted: Option<(SourceKey, Instant)>,
    ) -> Rc<ConnShared> {
        inner.next_conn_id += 1;
        let shared = Rc::new(ConnShared {
            id: inner.next_conn_id,
            handle,
            connected: Cell::new(false),
            alpn: RefCell::new(None),
            server_name: RefCell::new(None),
            error: RefCell::new(None),
            state_waiters: WaitList::default(),
            openers: Default::default(),
            accepters: Default::default(),
            datagram_readers: WaitList::default(),
            estimate_epoch: Cell::new(0),
            estimate_waiters: WaitList::default(),
            final_stats: Cell::new(None),
        });
        let mut entry = Box::new(ConnEntry::new(conn, shared.clone(), self.stream_ceilings));
        if let Some((source, now)) = admitted {
            entry.source = Some(source);
            entry.handshaking = true;
            entry.handshake_deadline = Some(now + self.admission.limits().handshake_timeout);
            inner.handshakes += 1;
            self.publish_handshakes(inner.handshakes);
        }
        inner.conns.insert(handle, entry);
        ShardStats::add(&self.stats.connections_open, 1);
        self.touch(inner, handle);
        shared
    }

    /// Feed one datagram that belongs to this shard into the endpoint.
    pub fn handle_datagram(
        &self,
        now: Instant,
        remote: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
    ) {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let mut response = Vec::new();
        match inner
            .endpoint
            .handle(now, remote, local_ip, ecn, data, &mut response)
        {
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(entry) = inner.conns.get_mut(&handle) {
                    entry.conn.handle_event(event);
                    entry.shared.estimate_moved();
                    self.touch(inner, handle);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                if inner.shutting_down || inner.server_config.is_none() {
                    ShardStats::add(&self.stats.connections_refused, 1);
                    let transmit = inner.endpoint.refuse(incoming, &mut response);
                    self.send_now(&transmit, &response);
                    return;
                }
                let verdict = self.admission.admit(
                    remote.ip(),
                    incoming.remote_address_validated(),
                    inner.handshakes,
                    now,
                );
                let source = match verdict {
                    Verdict::Accept(source) => source,
                    Verdict::Retry => {
                        match inner.endpoint.retry(incoming, &mut response) {
                            Ok(transmit) => {
                                ShardStats::add(&self.stats.retries_sent, 1);
                                debug!(shard = self.index, %remote, "Retry sent");
                                self.send_now(&transmit, &response);
                            }
                            // Unreachable: unvalidated addresses may always
                            // be retried. Drop it rather than serve it.
                            Err(e) => inner.endpoint.ignore(e.into_incoming()),
                        }
                        return;
                    }
                    Verdict::Refuse(refusal) => {
                        self.count_refusal(refusal);
                        ShardStats::add(&self.stats.connections_refused, 1);
                        debug!(shard = self.index, %remote, ?refusal, "connection refused");
                        let transmit = inner.endpoint.refuse(incoming, &mut response);
                        self.send_now(&transmit, &response);
                        return;
                    }
                    Verdict::Ignore(refusal) => {
                        self.count_refusal(refusal);
                        trace!(shard = self.index, %remote, ?refusal, "initial dropped");
                        inner.endpoint.ignore(incoming);
                        return;
                    }
                };
                match inner.endpoint.accept(incoming, now, &mut response, None) {
                    Ok((handle, conn)) => {
                        ShardStats::add(&self.stats.connections_accepted, 1);
                        debug!(shard = self.index, %remote, "connection accepted");
                        self.insert(inner, handle, conn, Some((source, now)));
                    }
                    Err(e) => {
                        self.admission.release(source);
                        debug!(shard = self.index, %remote, error = %e.cause, "connection not accepted");
                        if let Some(transmit) = e.response {
                            self.send_now(&transmit, &response);
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(transmit)) => self.send_now(&transmit, &response),
            None => {}
        }
    }

    fn count_refusal(&self, refusal: Refusal) {
        let counter = match refusal {
            Refusal::ConnectionLimit => &self.stats.refused_connection_limit,
            Refusal::HandshakeLimit => &self.stats.ignored_handshake_limit,
            Refusal::SourceConnectionLimit => &self.stats.refused_source_connection_limit,
            Refusal::SourceRate => &self.stats.ignored_source_rate,
            Refusal::SourceTableFull => &self.stats.ignored_source_table_full,
        };
        ShardStats::add(counter, 1);
    }

    fn publish_handshakes(&self, handshakes: usize) {
        ShardStats::set(&self.stats.handshakes_in_progress, handshakes as u64);
    }

    /// A connection is gone while still handshaking (an established one
    /// stopped handshaking where it connected): a failed handshake.
    fn end_handshake(&self, inner: &mut ShardInner, handle: ConnectionHandle) {
        if let Some(entry) = inner.conns.get_mut(&handle) {
            if entry.handshaking {
                ShardStats::add(&self.stats.handshakes_failed, 1);
                entry.handshaking = false;
                entry.handshake_deadline = None;
                inner.handshakes = inner.handshakes.saturating_sub(1);
                self.publish_handshakes(inner.handshakes);
            }
        }
    }

    /// Send a stateless response at once. If the socket is full it is
    /// dropped: the peer retransmits, as for any lost packet.
    fn send_now(&self, transmit: &quinn_proto::Transmit, contents: &[u8]) {
        match self.io.try_send(&udp_transmit(transmit, contents)) {
            Ok(()) => self.count_sent(transmit),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => trace!(error = %e, "stateless response not sent"),
        }
    }

    fn count_sent(&self, transmit: &quinn_proto::Transmit) {
        let segments = transmit
            .segment_size
            .map_or(1, |s| transmit.size.div_ceil(s));
        ShardStats::add(&self.stats.datagrams_sent, segments as u64);
        ShardStats::add(&self.stats.bytes_sent, transmit.size as u64);
        ShardStats::add(&self.stats.send_calls, 1);
        self.stats.send_batches.record(segments as u64);
    }

    /// Run quinn-proto timers that are due.
    pub fn fire_timers(&self, now: Instant) {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        while let Some(&Reverse((at, handle, id))) = inner.timers.peek() {
            if at > now {
                break;
            }
            inner.timers.pop();
            let handle = ConnectionHandle(handle);
            let Some(entry) = inner.conns.get_mut(&handle) else {
                continue;
            };
            if entry.shared.id != id || entry.timer_in_heap != Some(at) {
                continue; // superseded by an earlier entry for this connection
            }
            entry.timer_in_heap = None;
            match entry.next_wake() {
                Some(deadline) if deadline <= now => {
                    if entry.handshake_deadline.is_some_and(|d| d <= now) {
                        // Still counted as handshaking until it drains: its
                        // state is held until then.
                        entry.handshake_deadline = None;
                        ShardStats::add(&self.stats.handshakes_timed_out, 1);
                        debug!(shard = self.index, id, "handshake timed out");
                        entry.conn.close(
                            now,
                            VarInt::from_u32(0),
                            Bytes::from_static(b"handshake timed out"),
                        );
                    }
                    if entry.timer.is_some_and(|t| t <= now) {
                        entry.conn.handle_timeout(now);
                        entry.shared.estimate_moved();
                    }
                    self.touch(inner, handle);
                }
                Some(deadline) => {
                    entry.timer_in_heap = Some(deadline);
                    inner.timers.push(Reverse((deadline, handle.0, id)));
                }
                None => {}
            }
        }
        inner.compact_timers(&self.stats);
    }

    /// The earliest instant the driver must wake for.
    pub fn next_deadline(&self) -> Option<Instant> {
        let inner = self.inner.borrow();
        let timer = inner.timers.peek().map(|Reverse((at, _, _))| *at);
        [timer, inner.shutdown_deadline, inner.close_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether a transmit is waiting for the socket to become writable.
    pub fn is_send_blocked(&self) -> bool {
        self.inner.borrow().blocked.is_some()
    }

    /// Retry the transmit the socket refused. Returns false if still blocked.
    pub fn retry_blocked(&self) -> bool {
        let mut inner = self.inner.borrow_mut();
        let Some(blocked) = inner.blocked.take() else {
            return true;
        };
        match self
            .io
            .try_send(&udp_transmit(&blocked.transmit, &blocked.contents))
        {
            Ok(()) => {
                self.count_sent(&blocked.transmit);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                inner.blocked = Some(blocked);
                false
            }
            Err(e) => {
                self.log_send_error(&e);
                true
            }
        }
    }

    fn log_send_error(&self, e: &std::io::Error) {
        if is_per_datagram_error(e) {
            trace!(shard = self.index, error = %e, "datagram not sent");
        } else {
            warn!(shard = self.index, error = %e, "send failed");
        }
    }

    /// Drive every queued connection: endpoint events, transmits, application
    /// events, timers. Returns true if work is left (budget or blocked socket).
    pub fn flush(&self, now: Instant) -> bool {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let queue = std::mem::take(&mut inner.queue);
        let max_segments = self.io.max_segments();
        let mut more = false;
        for (i, &handle) in queue.iter().enumerate() {
            if inner.blocked.is_some() {
                // Keep the rest queued for when the socket drains.
                for &h in &queue[i..] {
                    inner.queue.push(h);
                }
                return true;
            }
            more |= self.drive(inner, handle, now, max_segments);
        }
        inner.compact_timers(&self.stats);
        more || !inner.queue.is_empty()
    }

    fn drive(
        &self,
        inner: &mut ShardInner,
        handle: ConnectionHandle,
        now: Instant,
        max_segments: usize,
    ) -> bool {
        let Some(entry) = inner.conns.get_mut(&handle) else {
            return false;
        };
        entry.queued = false;
        let mut drained = false;
        while let Some(event) = entry.conn.poll_endpoint_events() {
            drained |= event.is_drained();
            if let Some(reply) = inner.endpoint.handle_event(handle, event) {
                entry.conn.handle_event(reply);
            }
        }

        let mut sent = 0;
        let mut again = false;
        let mut buf = std::mem::take(&mut inner.transmit_buf);
        while sent < TRANSMIT_BUDGET {
            buf.clear();
            let Some(transmit) = entry.conn.poll_transmit(now, max_segments, &mut buf) else {
                break;
            };
            sent += transmit
                .segment_size
                .map_or(1, |s| transmit.size.div_ceil(s));
            match self.io.try_send(&udp_transmit(&transmit, &buf)) {
                Ok(()) => self.count_sent(&transmit),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    inner.blocked = Some(BlockedTransmit {
                        transmit,
                        contents: std::mem::take(&mut buf),
                    });
                    again = true;
                    break;
                }
                Err(e) => self.log_send_error(&e),
            }
        }
        if sent >= TRANSMIT_BUDGET {
            again = true;
        }
        inner.transmit_buf = buf;

        while let Some(event) = entry.conn.poll() {
            self.on_event(&mut inner.accept_queue, entry, event);
        }

        entry.timer = entry.conn.poll_timeout();
        if entry.handshaking && entry.shared.connected.get() {
            entry.handshaking = false;
            entry.handshake_deadline = None;
            inner.handshakes = inner.handshakes.saturating_sub(1);
            self.publish_handshakes(inner.handshakes);
        }
        if let Some(deadline) = entry.next_wake() {
            if entry.timer_in_heap.is_none_or(|t| deadline < t) {
                entry.timer_in_heap = Some(deadline);
                inner
                    .timers
                    .push(Reverse((deadline, handle.0, entry.shared.id)));
            }
        }

        if drained || entry.conn.is_drained() {
            self.end_handshake(inner, handle);
            if let Some(mut entry) = inner.conns.remove(&handle) {
                entry
                    .shared
                    .final_stats
                    .set(Some(entry.conn.stats().into()));
                if let Some(source) = entry.source {
                    self.admission.release(source);
                }
                entry.shared.fail(ConnectionError::LocallyClosed);
                entry.wake_everyone();
                ShardStats::sub(&self.stats.connections_open, 1);
                debug!(
                    shard = self.index,
                    id = entry.shared.id,
                    "connection drained"
                );
            }
            return false;
        }
        if again && !entry.queued {
            entry.queued = true;
            inner.queue.push(handle);
        }
        again
    }

    fn on_event(
        &self,
        accept_queue: &mut VecDeque<Rc<ConnShared>>,
        entry: &mut ConnEntry,
        event: Event,
    ) {
        match event {
            Event::HandshakeDataReady | Event::DatagramsUnblocked => {}
            Event::Connected => {
                let shared = &entry.shared;
                if let Some(data) = entry.conn.crypto_session().handshake_data() {
                    if let Ok(data) = data.downcast::<quinn_proto::crypto::rustls::HandshakeData>()
                    {
                        *shared.alpn.borrow_mut() = data.protocol;
                        *shared.server_name.borrow_mut() = data.server_name;
                    }
                }
                shared.connected.set(true);
                shared.state_waiters.wake_all();
                if entry.conn.side().is_server() {
                    accept_queue.push_back(shared.clone());
                    self.accept_waiters.wake_all();
                }
            }
            Event::ConnectionLost { reason } => {
                debug!(shard = self.index, id = entry.shared.id, %reason, "connection lost");
                entry.shared.fail(reason);
                entry.wake_everyone();
            }
            Event::Stream(StreamEvent::Opened { dir }) => {
                entry.shared.accepters[dir_index(dir)].wake_all()
            }
            Event::Stream(StreamEvent::Available { dir }) => {
                entry.shared.openers[dir_index(dir)].wake_all()
            }
            Event::Stream(StreamEvent::Readable { id }) => {
                if let Some(w) = entry.readers.remove(&id) {
                    w.wake();
                }
            }
            Event::Stream(StreamEvent::Writable { id }) => {
                if let Some(w) = entry.writers.remove(&id) {
                    w.wake();
                }
            }
            Event::Stream(StreamEvent::Finished { id }) => {
                if let Some(w) = entry.finishers.remove(&id) {
                    w.wake();
                }
            }
            Event::Stream(StreamEvent::Stopped { id, .. }) => {
                // A blocked writer must learn of the stop, and so must a task
                // waiting for the stream to finish.
                if let Some(w) = entry.writers.remove(&id) {
                    w.wake();
                }
                if let Some(w) = entry.finishers.remove(&id) {
                    w.wake();
                }
            }
            Event::DatagramReceived => entry.shared.datagram_readers.wake_all(),
        }
    }

    /// Open a client connection.
    pub fn connect(
        &self,
        config: quinn_proto::ClientConfig,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<Rc<ConnShared>, quinn_proto::ConnectError> {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        // The id quinn picks for this connection now carries the dial mark,
        // so the server's Initials are steered back to this shard.
        self.dialling.store(true, Ordering::Relaxed);
        let connected = inner
            .endpoint
            .connect(Instant::now(), config, remote, server_name);
        self.dialling.store(false, Ordering::Relaxed);
        let (handle, conn) = connected?;
        ShardStats::add(&self.stats.connections_initiated, 1);
        Ok(self.insert(inner, handle, conn, None))
    }

    /// Close one connection from the application.
    pub fn close(&self, shared: &ConnShared, code: VarInt, reason: Bytes) {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        if let Some(entry) = inner.conns.get_mut(&shared.handle) {
            if entry.shared.id == shared.id {
                entry.conn.close(Instant::now(), code, reason);
                entry.shared.fail(ConnectionError::LocallyClosed);
                entry.wake_everyone();
                self.touch(inner, shared.handle);
            }
        }
    }

    /// Stop accepting, tell the application, and close every connection
    /// with the shutdown code at `close_at` (at once if it has passed).
    pub fn begin_shutdown(&self, deadline: Instant, close_at: Instant) {
        {
            let mut inner = self.inner.borrow_mut();
            if inner.shutting_down {
                return;
            }
            inner.shutting_down = true;
            inner.shutdown_deadline = Some(deadline);
            inner.close_at = Some(close_at);
            self.accept_waiters.wake_all();
            self.shutdown_waiters.wake_all();
        }
        self.close_all_when_due(Instant::now());
    }

    /// Close every connection if the shutdown grace has run out.
    pub fn close_all_when_due(&self, now: Instant) {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        match inner.close_at {
            Some(at) if at <= now => inner.close_at = None,
            _ => return,
        }
        let handles: Vec<_> = inner.conns.keys().copied().collect();
        for handle in handles {
            if let Some(entry) = inner.conns.get_mut(&handle) {
                entry
                    .conn
                    .close(now, self.close_code, self.close_reason.clone());
                entry.shared.fail(ConnectionError::LocallyClosed);
                entry.wake_everyone();
            }
            self.touch(inner, handle);
        }
        debug!(
            shard = self.index,
            connections = inner.conns.len(),
            "shutting down"
        );
    }

    /// Shutdown is complete: every connection has sent its close and drained,
    /// or the deadline has passed.
    pub fn shutdown_complete(&self, now: Instant) -> bool {
        let inner = self.inner.borrow();
        inner.shutting_down
            && (inner.conns.is_empty() || inner.shutdown_deadline.is_some_and(|d| now >= d))
    }
}

fn udp_transmit<'a>(t: &quinn_proto::Transmit, contents: &'a [u8]) -> quinn_udp::Transmit<'a> {
    quinn_udp::Transmit {
        destination: t.destination,
        ecn: t.ecn.map(|e| match e {
            EcnCodepoint::Ect0 => quinn_udp::EcnCodepoint::Ect0,
            EcnCodepoint::Ect1 => quinn_udp::EcnCodepoint::Ect1,
            EcnCodepoint::Ce => quinn_udp::EcnCodepoint::Ce,
        }),
        contents: &contents[..t.size],
        segment_size: t.segment_size,
        src_ip: t.src_ip,
    }
}
