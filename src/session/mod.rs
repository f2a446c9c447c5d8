//! One moq-lite session: a peer that may publish, subscribe, or both.
//!
//! Tasks per session, all on the connection's shard:
//! - the bidi acceptor: the peer's ANNOUNCE_REQUEST, SUBSCRIBE, TRACK, PROBE,
//!   GOAWAY and FETCH streams, each served by its own task (`serve`);
//! - the uni acceptor: GROUP streams answering our upstream subscriptions
//!   (`consume`) and, on lite-05+, the peer's SETUP;
//! - the announce consumer: our ANNOUNCE_REQUEST (prefix "") to the peer,
//!   which learns what it publishes (`consume`).
//!
//! Malformed input on a control stream closes the session with
//! PROTOCOL_VIOLATION; a bad or unwanted data stream is reset alone.

mod budget;
pub mod codes;
mod consume;
pub mod reader;
mod serve;
mod tail;
pub mod transport;
pub use crate::task as util;
mod writer;

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use qumo_shards::{SendStream, VarInt};
use tracing::{debug, error, info, warn};

use crate::auth::{self, Grant, Refusal};
use crate::lite::{
    BidiType, Encode, Goaway, Limits, ProbeLevel, Role, SessionCode, Setup, StreamCode, UniType,
    Version,
};
use crate::message::{HubRef, SessionRef};
use crate::shard::Shard;
use reader::{ReadError, StreamReader};
use transport::Transport;
use util::{race, Either, Signal};

pub use consume::Upstream;

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("read: {0}")]
    Read(#[from] ReadError),
    #[error("transport: {0}")]
    Transport(#[from] transport::TransportError),
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

/// A live session and what it holds.
pub struct Session {
    pub id: SessionRef,
    pub transport: Transport,
    pub version: Version,
    /// Session root: every path the peer names is relative to it.
    pub root: RefCell<String>,
    pub shard: Rc<Shard>,
    /// Our subscriptions to the peer's tracks, by subscribe id.
    upstreams: RefCell<HashMap<u64, Rc<Upstream>>>,
    upstream_ids: RefCell<HashMap<HubRef, u64>>,
    next_subscribe_id: Cell<u64>,
    /// Broadcasts the peer announced to us (absolute paths).
    announced: RefCell<HashSet<String>>,
    /// The peer's subscriptions to us, for the per-session limit.
    subscriptions: Cell<usize>,
    /// The peer's open ANNOUNCE_REQUEST streams, for the per-session limit.
    announce_requests: Cell<usize>,
    /// Bytes of the peer's frames held partly received.
    frame_budget: budget::ByteBudget,
    /// Whether the peer has done anything yet (lite-04's SETUP deadline).
    spoke: Cell<bool>,
    /// What the peer may publish and subscribe, relative to the root; set
    /// once its credentials are checked, before the session registers.
    grant: OnceCell<Grant>,
    /// Raised when the session ends; every task of it stops.
    pub closed: Signal,
}

impl Session {
    pub fn limits(&self) -> Limits {
        self.shard.settings.limits
    }

    /// What the peer may do; nothing until its credentials are checked.
    pub fn grant(&self) -> &Grant {
        self.grant.get().unwrap_or(&auth::NOTHING)
    }

    /// Count and log (once, at debug) a request the grant does not allow.
    fn refused(&self, refusal: Refusal, path: &str) {
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

    fn reader(&self, stream: qumo_shards::RecvStream, leftover: Bytes) -> StreamReader {
        StreamReader::new(
            stream,
            leftover,
            self.version,
            self.limits(),
            self.shard.settings.frame_capacity,
        )
    }

    /// Encode `msg` after an optional stream type into one buffer.
    fn encode(&self, parts: &[&dyn EncodeDyn]) -> Bytes {
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
    fn reset(&self, stream: &mut SendStream, code: StreamCode) {
        let _ = stream.reset(self.transport.stream_code(code));
    }

    fn stop(&self, reader: &mut StreamReader, code: StreamCode) {
        reader.stop(self.transport.stream_code(code));
    }

    /// Run `task` as part of this session: a panic in it is contained to
    /// the session (logged, counted, the session closed), not the shard.
    fn spawn(self: &Rc<Self>, task: impl std::future::Future<Output = ()> + 'static) {
        let session = self.clone();
        monoio::spawn(async move {
            if let Err(panic) = util::catch_unwind(task).await {
                session.contain_panic(&panic);
            }
        });
    }

    /// A task of this session panicked (a relay bug): close the session so
    /// its state is released, and keep the shard going.
    fn contain_panic(&self, panic: &str) {
        error!(session = self.id.id, %panic, "session task panicked; closing the session");
        self.shard.stats.sessions_panicked.inc();
        let error = SessionError::Panicked(panic.to_string());
        self.close(error.code(), "internal error");
    }

    /// Close the connection with a session code and stop every task.
    fn close(&self, code: SessionCode, reason: &str) {
        self.transport.close(code, reason);
        self.closed.raise();
    }

    /// Close the whole session for a protocol violation.
    fn violation(&self, what: &str, error: &dyn std::fmt::Display) {
        // Debug, not warn: a flood of bad sessions must not flood the log;
        // the counter shows the rate.
        debug!(session = self.id.id, %what, %error, "closing session: protocol violation");
        self.shard.stats.sessions_protocol_violations.inc();
        let error = SessionError::Protocol(format!("{what}: {error}"));
        self.close(error.code(), &error.to_string());
    }
}

/// Counted so that a task outliving its session shows (see `session_states_alive`).
impl Drop for Session {
    fn drop(&mut self) {
        self.shard.stats.session_states_alive.dec();
    }
}

/// `Encode` as a trait object (its generic `BufMut` keeps it from being one).
trait EncodeDyn {
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

/// Run a session until the peer leaves or the relay shuts down.
pub async fn run(shard: Rc<Shard>, transport: Transport, version: Version, root: String) {
    let conn = transport.connection().clone();
    let session = Rc::new(Session {
        id: SessionRef {
            shard: shard.index(),
            id: conn.stable_id(),
        },
        transport,
        version,
        root: RefCell::new(crate::origin::normalize(&root)),
        shard: shard.clone(),
        upstreams: RefCell::new(HashMap::new()),
        upstream_ids: RefCell::new(HashMap::new()),
        next_subscribe_id: Cell::new(0),
        announced: RefCell::new(HashSet::new()),
        subscriptions: Cell::new(0),
        announce_requests: Cell::new(0),
        frame_budget: budget::ByteBudget::new(shard.settings.max_buffered_frame_bytes_per_session),
        spoke: Cell::new(false),
        grant: OnceCell::new(),
        closed: Signal::default(),
    });
    shard.stats.session_states_alive.inc();
    info!(session = session.id.id, remote = ?conn.remote_address(), %version, "session open");

    let peer_setup = match version.has_setup() {
        true => match exchange_setup(&session).await {
            Ok(setup) => Some(setup),
            Err(e) => return setup_failed(&session, e),
        },
        false => None,
    };

    // Checked before the session registers: a refused peer leaves no state.
    let setup_path = peer_setup.as_ref().and_then(|s| s.path.as_deref());
    let role = peer_setup.as_ref().and_then(|s| s.role);
    match authorize(&session, setup_path, role) {
        Ok(grant) => {
            let _ = session.grant.set(grant);
        }
        Err(refusal) => {
            debug!(session = session.id.id, reason = %refusal, "session refused");
            refusal.counter(&shard.stats).inc();
            session
                .transport
                .close(SessionCode::UNAUTHORIZED, "unauthorized");
            return;
        }
    }

    let inbox = shard.register_session(session.id);
    // Unregistered on every way out of here, a panic's unwinding included.
    let _registered = Registered(session.clone());
    session.spawn(consume::commands(session.clone(), inbox));
    session.spawn(accept_bi(session.clone()));
    session.spawn(accept_uni(session.clone()));
    session.spawn(consume::announcements(session.clone()));
    session.spawn(goaway_on_shutdown(session.clone()));
    if !version.has_setup() {
        session.spawn(lite04_deadline(session.clone()));
    }
    if let Some(expires) = session.grant().expires() {
        session.spawn(close_at_expiry(session.clone(), expires));
    }

    match race(session.transport.closed(), session.closed.raised()).await {
        Either::Left(()) => session.closed.raise(),
        Either::Right(()) => {}
    }
}

/// Count and log why a lite-05+ SETUP exchange failed, and close.
fn setup_failed(session: &Session, e: SessionError) {
    let stats = &session.shard.stats;
    match e {
        // The peer left: nothing wrong on our side.
        SessionError::Transport(_) | SessionError::Read(ReadError::Stream(_)) => {
            debug!(session = session.id.id, error = %e, "session ended before SETUP");
        }
        // Silence costs the relay a session slot: counted, not warned
        // about (a flood would multiply the warning).
        SessionError::SetupTimeout(_) => {
            debug!(session = session.id.id, error = %e, "session setup timed out");
            stats.sessions_setup_timeouts.inc();
        }
        _ => {
            debug!(session = session.id.id, error = %e, "session setup failed");
            stats.sessions_protocol_violations.inc();
        }
    }
    session.transport.close(e.code(), "setup failed");
}

/// A session registered with its shard: unregistered (its upstreams ended,
/// its tasks told to stop) when dropped.
struct Registered(Rc<Session>);

impl Drop for Registered {
    fn drop(&mut self) {
        let session = &self.0;
        session.closed.raise();
        session.shard.unregister_session(session.id);
        session.end_upstreams();
        info!(session = session.id.id, "session closed");
    }
}

/// Lite-05+: send our SETUP and read the peer's (its path and role are for
/// [`authorize`]).
async fn exchange_setup(session: &Rc<Session>) -> Result<Setup, SessionError> {
    let ours = Setup {
        probe: ProbeLevel::None,
        path: None,
        role: None,
        cost: None,
        hop: Some(session.shard.hop),
    };
    let mut send = session.transport.open_uni().await?;
    send.write_chunk(session.encode(&[&UniType::Setup, &ours]))
        .await?;
    send.finish()?;

    let read = async {
        loop {
            let (recv, leftover) = session.transport.accept_uni().await?;
            let mut reader = session.reader(recv, leftover);
            match reader.expect::<UniType>().await {
                Ok(UniType::Setup) => {
                    return Ok::<_, SessionError>(reader.expect::<Setup>().await?)
                }
                // Nothing legitimate comes before SETUP; refuse and wait on.
                Ok(_) | Err(ReadError::Decode(_)) => {
                    session.stop(&mut reader, codes::UNEXPECTED_STREAM)
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let limit = session.shard.settings.setup_timeout;
    let setup = match race(read, monoio::time::sleep(limit)).await {
        Either::Left(setup) => setup?,
        Either::Right(()) => return Err(SessionError::SetupTimeout(limit)),
    };
    // The path's query may hold a token: never logged.
    debug!(
        session = session.id.id,
        path = setup.path.as_deref().map(|p| auth::split_query(p).0),
        role = ?setup.role,
        hop = ?setup.hop,
        "peer setup"
    );
    Ok(setup)
}

/// The peer's root and grant, from the URL it dialled: the WebTransport
/// CONNECT URL (the session's root already), or on raw QUIC the SETUP path
/// (lite-04 has none: the root, with only public prefixes open). The grant
/// is checked against the very path that becomes the root, and a SETUP
/// path on WebTransport is ignored, so the two cannot disagree.
fn authorize(
    session: &Session,
    setup_path: Option<&str>,
    role: Option<Role>,
) -> Result<Grant, Refusal> {
    let (path, query) = match &session.transport {
        Transport::Web(wt) => (wt.path(), wt.query()),
        Transport::Quic(_) => auth::split_query(setup_path.unwrap_or("")),
    };
    session.root.replace(crate::origin::normalize(path));
    let Some(auth) = &session.shard.settings.auth else {
        return Ok(Grant::everything());
    };
    let grant = auth.verify(path, query)?;
    match grant.allows_role(role) {
        true => Ok(grant),
        false => Err(Refusal::Role),
    }
}

/// The token was checked at connect; the session lasts no longer than it
/// (moq-relay closes it the same way).
async fn close_at_expiry(session: Rc<Session>, expires: std::time::SystemTime) {
    // In steps of at most a day: a timer far out is not worth trusting.
    const STEP: Duration = Duration::from_secs(24 * 3600);
    loop {
        let left = expires
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        if left.is_zero() {
            break;
        }
        let wait = monoio::time::sleep(left.min(STEP));
        if let Either::Right(()) = race(wait, session.closed.raised()).await {
            return;
        }
    }
    debug!(
        session = session.id.id,
        "token expired; closing the session"
    );
    session.shard.stats.auth_sessions_expired.inc();
    session.close(SessionCode::UNAUTHORIZED, "token expired");
}

/// Lite-04 has no SETUP, so its deadline is the peer's first act: a stream
/// of its own, or an answer on the relay's ANNOUNCE_REQUEST. A session that
/// does neither holds a slot for nothing and is closed with TIMEOUT.
async fn lite04_deadline(session: Rc<Session>) {
    let limit = session.shard.settings.setup_timeout;
    let expired = race(monoio::time::sleep(limit), session.closed.raised()).await;
    if let (Either::Left(()), false) = (expired, session.spoke.get()) {
        debug!(
            session = session.id.id,
            ?limit,
            "lite-04 session silent past relay.setup_timeout"
        );
        session.shard.stats.sessions_setup_timeouts.inc();
        session.close(SessionError::SetupTimeout(limit).code(), "setup timeout");
    }
}

async fn accept_bi(session: Rc<Session>) {
    loop {
        let accepted = race(session.transport.accept_bi(), session.closed.raised()).await;
        let Either::Left(Ok((send, recv, leftover))) = accepted else {
            session.closed.raise();
            return;
        };
        session.spoke.set(true);
        let mut reader = session.reader(recv, leftover);
        session.spawn({
            let session = session.clone();
            async move {
                let kind = match reader.expect::<BidiType>().await {
                    Ok(kind) if kind.exists_in(session.version) => kind,
                    Ok(_) | Err(ReadError::Decode(_)) => {
                        // Unknown or not in this version: reset it, keep the session.
                        let mut send = send;
                        session.reset(&mut send, codes::UNEXPECTED_STREAM);
                        session.stop(&mut reader, codes::UNEXPECTED_STREAM);
                        return;
                    }
                    Err(_) => return,
                };
                serve::bidi(session, kind, send, reader).await;
            }
        });
    }
}

async fn accept_uni(session: Rc<Session>) {
    loop {
        let accepted = race(session.transport.accept_uni(), session.closed.raised()).await;
        let Either::Left(Ok((recv, leftover))) = accepted else {
            session.closed.raise();
            return;
        };
        session.spoke.set(true);
        let mut reader = session.reader(recv, leftover);
        session.spawn({
            let session = session.clone();
            async move {
                match reader.expect::<UniType>().await {
                    Ok(UniType::Group) => consume::group(session, reader).await,
                    // A second SETUP, or an unknown type: refuse this stream only.
                    Ok(UniType::Setup) | Err(ReadError::Decode(_)) => {
                        session.stop(&mut reader, codes::UNEXPECTED_STREAM)
                    }
                    Err(_) => {}
                }
            }
        });
    }
}

/// At shutdown, tell the peer to go away (GOAWAY with no new URI) before the
/// runtime closes the connection.
async fn goaway_on_shutdown(session: Rc<Session>) {
    let shard = session.shard.clone();
    if let Either::Right(()) = race(session.closed.raised(), shard.shutdown_started()).await {
        let Ok((mut send, _recv)) = session.transport.open_bi().await else {
            return;
        };
        let msg = session.encode(&[&BidiType::Goaway, &Goaway { uri: String::new() }]);
        if send.write_chunk(msg).await.is_ok() {
            let _ = send.finish();
        }
        debug!(session = session.id.id, "sent GOAWAY");
    }
}

/// Codes as QUIC varints, for the places that need one.
pub fn code(code: SessionCode) -> VarInt {
    VarInt::from_u32(code.0)
}
