//! The state of one live session, shared by the tasks that run it (see
//! the module above), on any transport.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tracing::{debug, error, warn};

use super::reader::{ReadError, StreamReader};
use super::tail::GroupTally;
use super::transport::{SendStream, Transport, TransportError};
use crate::auth::{self, Grant, Refusal};
use crate::lite::{Encode, Limits, SessionCode, StreamCode, Version};
use crate::message::{FetchRef, HubRef, SessionRef, TrackKey};
use crate::shard::Shard;
use crate::task::{contain, Signal};

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("read: {0}")]
    Read(#[from] ReadError),
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    #[error("write: {0}")]
    Write(#[from] qumo_shards::WriteError),
    #[error("no SETUP within {0:?} (relay.setup_timeout)")]
    SetupTimeout(Duration),
    /// A task of the session panicked: a relay bug, contained.
    #[error("task panicked: {0}")]
    Panicked(String),
}

impl SessionError {
    /// The session code the peer is told when this error closes the
    /// session: the one place a session error becomes a code.
    pub fn code(&self) -> SessionCode {
        match self {
            SessionError::SetupTimeout(_) => SessionCode::TIMEOUT,
            SessionError::Panicked(_) => SessionCode::INTERNAL_ERROR,
            // A peer that left mid-setup hears nothing; one that sent
            // something wrong broke the protocol.
            SessionError::Protocol(_)
            | SessionError::Read(_)
            | SessionError::Transport(_)
            | SessionError::Write(_) => SessionCode::PROTOCOL_VIOLATION,
        }
    }
}

/// A live session and what it holds, on any transport (see `transport`).
pub struct Session<T: Transport> {
    pub id: SessionRef,
    pub transport: T,
    pub version: Version,
    /// Session root: every path the peer names is relative to it.
    pub root: RefCell<String>,
    pub shard: Rc<Shard>,
    /// Our subscriptions to the peer's tracks, by subscribe id.
    pub(super) upstreams: RefCell<HashMap<u64, Rc<Upstream>>>,
    pub(super) upstream_ids: RefCell<HashMap<HubRef, u64>>,
    pub(super) next_subscribe_id: Cell<u64>,
    /// FETCHes other shards forwarded to the peer, running, each with the
    /// signal that cancels it.
    pub(super) fetches: RefCell<HashMap<FetchRef, Rc<Signal>>>,
    /// Broadcasts the peer announced to us (absolute paths).
    pub(super) announced: RefCell<HashSet<String>>,
    /// The peer's subscriptions to us and its TRACK requests (each holds
    /// an upstream subscription too), for the per-session limit.
    pub(super) subscriptions: Cell<usize>,
    /// TRACK requests answered and holding their upstream subscription
    /// for the SUBSCRIBE that normally follows (see `serve::track`).
    pub(super) track_holds: RefCell<Vec<Rc<TrackHold>>>,
    /// The peer's open ANNOUNCE_REQUEST streams, for the per-session limit.
    pub(super) announce_requests: Cell<usize>,
    /// Whether a PROBE stream of the peer's is being answered (one at a time).
    pub(super) probing: Cell<bool>,
    /// Bytes of the peer's frames held partly received.
    pub(super) frame_budget: super::budget::ByteBudget,
    /// Whether the peer has done anything yet (lite-04's SETUP deadline).
    pub(super) spoke: Cell<bool>,
    /// What the peer may publish and subscribe, relative to the root; set
    /// once its credentials are checked, before the session registers.
    pub(super) grant: OnceCell<Grant>,
    /// Whether the peer showed itself a relay (see `peer_kind`).
    pub(super) relay_peer: Cell<bool>,
    /// Where the connection's bytes are counted.
    pub(super) traffic_sink: crate::metrics::TrafficSink,
    /// The connection's bytes at the last count.
    pub(super) traffic_counted: Cell<crate::metrics::Traffic>,
    /// Raised when the session ends; every task of it stops.
    pub closed: Signal,
}

impl<T: Transport> Session<T> {
    pub fn limits(&self) -> Limits {
        self.shard.settings.limits
    }

    /// What the peer may do; nothing until its credentials are checked.
    pub fn grant(&self) -> &Grant {
        self.grant.get().unwrap_or(&auth::NOTHING)
    }

    /// The peer is a relay: it may open the streams a relay link needs
    /// (`quic.peer_max_concurrent_*`), not only what every client gets.
    pub(super) fn raise_peer_stream_limits(&self) {
        let (bidi, uni) = self.shard.settings.peer_stream_limits;
        self.transport.raise_stream_limits(bidi, uni);
        debug!(
            session = self.id.id,
            bidi, uni, "relay peer: stream limits raised"
        );
    }

    /// Count one more of the peer's subscriptions (SUBSCRIBE, TRACK or
    /// FETCH), if `relay.max_subscriptions_per_session` allows.
    pub(super) fn take_subscription_slot(&self) -> bool {
        let open = self.subscriptions.get();
        if open >= self.shard.settings.max_subscriptions_per_session {
            debug!(session = self.id.id, "subscription limit reached");
            self.shard.stats.subscriptions_refused_limit.inc();
            return false;
        }
        self.subscriptions.set(open + 1);
        true
    }

    /// Count and log (once, at debug) a request the grant does not allow.
    pub(super) fn refused(&self, refusal: Refusal, path: &str) {
        debug!(session = self.id.id, %path, reason = %refusal, "request refused");
        refusal.counter(&self.shard.stats).inc();
    }

    /// An absolute path for a path the peer named.
    pub fn absolute(&self, path: &str) -> String {
        crate::origin::join(&self.root.borrow(), path)
    }

    /// The peer's name for an absolute path under our root.
    pub fn relative<'a>(&self, path: &'a str) -> Option<&'a str> {
        crate::origin::strip_prefix(path, &self.root.borrow())
    }

    pub(super) fn reader(&self, stream: T::Recv, leftover: Bytes) -> StreamReader<T::Recv> {
        StreamReader::new(
            stream,
            leftover,
            self.version,
            self.limits(),
            self.shard.settings.frame_capacity,
        )
    }

    /// Encode `msg` after an optional stream type into one buffer.
    pub(super) fn encode(&self, parts: &[&dyn EncodeDyn]) -> Bytes {
        let mut buf = BytesMut::new();
        for part in parts {
            if let Err(e) = part.encode_dyn(&mut buf, self.version) {
                // Our own messages only; a failure is a bug worth seeing.
                warn!(error = %e, "cannot encode an outgoing message");
            }
        }
        buf.freeze()
    }

    /// Reset a stream with a moq-lite stream code.
    pub(super) fn reset(&self, stream: &mut T::Send, code: StreamCode) {
        let _ = stream.reset(self.transport.stream_code(code));
    }

    pub(super) fn stop(&self, reader: &mut StreamReader<T::Recv>, code: StreamCode) {
        reader.stop(self.transport.stream_code(code));
    }

    /// Run `task` as part of this session: a panic in it is contained to
    /// the session (logged, counted, the session closed), not the shard.
    pub(super) fn spawn(self: &Rc<Self>, task: impl std::future::Future<Output = ()> + 'static) {
        let session = self.clone();
        monoio::spawn(contain(task, move |panic| session.contain_panic(&panic)));
    }

    /// A task of this session panicked (a relay bug): close the session so
    /// its state is released, and keep the shard going.
    pub(super) fn contain_panic(&self, panic: &str) {
        error!(session = self.id.id, %panic, "session task panicked; closing the session");
        self.shard.stats.sessions_panicked.inc();
        let error = SessionError::Panicked(panic.to_string());
        self.close(error.code(), "internal error");
    }

    /// Close the connection with a session code and stop every task.
    pub(super) fn close(&self, code: SessionCode, reason: &str) {
        self.transport.close(code, reason);
        self.closed.raise();
    }

    /// Close the whole session for a protocol violation.
    pub(super) fn violation(&self, what: &str, error: &dyn std::fmt::Display) {
        // Debug, not warn: a flood of bad sessions must not flood the log;
        // the counter shows the rate.
        debug!(session = self.id.id, %what, %error, "closing session: protocol violation");
        self.shard.stats.sessions_protocol_violations.inc();
        let error = SessionError::Protocol(format!("{what}: {error}"));
        self.close(error.code(), &error.to_string());
    }
}

/// Counted so that a task outliving its session shows (see `session_states_alive`).
impl<T: Transport> Drop for Session<T> {
    fn drop(&mut self) {
        self.shard.stats.session_states_alive.dec();
    }
}

/// `Encode` as a trait object (its generic `BufMut` keeps it from being one).
pub(super) trait EncodeDyn {
    fn encode_dyn(
        &self,
        out: &mut BytesMut,
        version: Version,
    ) -> Result<usize, crate::lite::EncodeError>;
}

impl<T: Encode> EncodeDyn for T {
    fn encode_dyn(
        &self,
        out: &mut BytesMut,
        version: Version,
    ) -> Result<usize, crate::lite::EncodeError> {
        self.encode(out, version)
    }
}

/// One upstream subscription: ours, to the peer, on behalf of a hub.
pub struct Upstream {
    pub hub: HubRef,
    pub key: TrackKey,
    /// Raised when the owner cancels it.
    pub cancelled: Signal,
    /// Its group streams, so that its end waits for the tail.
    pub groups: GroupTally,
    /// Its group streams being read, by sequence, so that the owner can
    /// stop one (`SessionCommand::StopGroup`).
    pub(super) stops: RefCell<HashMap<u64, Rc<GroupStop>>>,
}

/// Raised when the owner wants a group stream stopped, with the code.
pub(super) struct GroupStop {
    pub(super) code: Cell<StreamCode>,
    pub(super) signal: Signal,
}

/// A TRACK request's upstream subscription, kept a moment after its
/// answer; `taken` is raised when a SUBSCRIBE takes over its slot.
pub struct TrackHold {
    pub key: TrackKey,
    pub taken: Signal,
}
