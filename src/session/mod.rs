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
mod consume;
mod fetch;
pub mod memory;
mod probe;
pub mod reader;
mod serve;
mod state;
mod subscription;
mod tail;
#[cfg(test)]
pub(crate) mod tests;
pub mod traffic;
pub mod transport;
mod writer;

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use qumo_shards::VarInt;
use tracing::{debug, info};

use crate::auth::{self, Grant, Refusal};
use crate::lite::{
    BidiType, Goaway, ProbeLevel, Role, SessionCode, Setup, StreamCode, UniType, Version,
};
use crate::message::SessionRef;
use crate::metrics::{LinkTraffic, Traffic, TrafficSink};
use crate::shard::Shard;
use crate::task::{race, Either, Signal};
use reader::ReadError;
use transport::{SendStream, Transport};

pub use state::{Session, SessionError, Upstream};

/// Which end opened the connection.
#[derive(Debug, Clone)]
pub enum Side {
    /// A peer dialled us; its token decides what it may do.
    Accepted,
    /// We dialled the peer (an upstream or cluster link): the peer is
    /// trusted as far as our own publishers and subscribers go, and our
    /// lite-05+ SETUP carries `setup_path` (a path and `?jwt=` token the
    /// peer may require).
    /// Its bytes are counted on `link`.
    Dialled {
        setup_path: Option<String>,
        link: Arc<LinkTraffic>,
    },
}

/// Run a session until the peer leaves or the relay shuts down.
pub async fn run<T: Transport>(shard: Rc<Shard>, transport: T, version: Version, root: String) {
    run_as(shard, transport, version, root, Side::Accepted).await
}

/// [`run`] for either end of the connection.
pub async fn run_as<T: Transport>(
    shard: Rc<Shard>,
    transport: T,
    version: Version,
    root: String,
    side: Side,
) {
    let id = transport.id();
    let remote = transport.remote_address();
    let session = Rc::new(Session {
        id: SessionRef {
            shard: shard.index(),
            id,
        },
        transport,
        version,
        root: RefCell::new(crate::origin::normalize(&root)),
        shard: shard.clone(),
        upstreams: RefCell::new(HashMap::new()),
        upstream_ids: RefCell::new(HashMap::new()),
        next_subscribe_id: Cell::new(0),
        fetches: RefCell::default(),
        announced: RefCell::new(HashSet::new()),
        subscriptions: Cell::new(0),
        track_holds: RefCell::new(Vec::new()),
        announce_requests: Cell::new(0),
        probing: Cell::new(false),
        frame_budget: budget::ByteBudget::new(shard.settings.max_buffered_frame_bytes_per_session),
        spoke: Cell::new(false),
        grant: OnceCell::new(),
        relay_peer: Cell::new(false),
        traffic_sink: match &side {
            Side::Accepted => TrafficSink::Accepted,
            Side::Dialled { link, .. } => TrafficSink::Link(link.clone()),
        },
        traffic_counted: Cell::new(Traffic::default()),
        closed: Signal::default(),
    });
    // Dropped last: the session's final bytes are counted after all else.
    let _count_at_end = traffic::CountAtEnd(session.clone());
    shard.stats.session_states_alive.inc();
    let transport = session.transport.kind();
    info!(session = session.id.id, ?remote, %version, transport, "session open");

    // Boxed, so that the SETUP exchange's state is freed once done rather
    // than kept in this future for the whole life of the session.
    let peer_setup = match version.has_setup() {
        true => match Box::pin(exchange_setup(&session, &side)).await {
            Ok(setup) => Some(setup),
            Err(e) => return setup_failed(&session, e),
        },
        false => None,
    };

    // Checked before the session registers: a refused peer leaves no state.
    let setup_path = peer_setup.as_ref().and_then(|s| s.path.as_deref());
    let role = peer_setup.as_ref().and_then(|s| s.role);
    let authorized = match side {
        // We chose this peer; it may publish to us and subscribe from us.
        Side::Dialled { .. } => Ok(Grant::everything()),
        Side::Accepted => authorize(&session, setup_path, role),
    };
    match authorized {
        Ok(grant) => {
            let keyed = shard.settings.auth.is_some();
            let peer = matches!(side, Side::Dialled { .. }) || (keyed && grant.is_cluster());
            let _ = session.grant.set(grant);
            if peer {
                session.raise_peer_stream_limits();
            }
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
    if version.has_datagrams() {
        session.spawn(consume::datagrams(session.clone()));
    }
    session.spawn(goaway_on_shutdown(session.clone()));
    session.spawn(traffic::sample(session.clone()));
    // A dialled lite-04 peer with nothing to announce may stay silent.
    if !version.has_setup() && matches!(side, Side::Accepted) {
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
fn setup_failed<T: Transport>(session: &Session<T>, e: SessionError) {
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
struct Registered<T: Transport>(Rc<Session<T>>);

impl<T: Transport> Drop for Registered<T> {
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
async fn exchange_setup<T: Transport>(
    session: &Rc<Session<T>>,
    side: &Side,
) -> Result<Setup, SessionError> {
    let path = match side {
        Side::Dialled { setup_path, .. } => setup_path.clone(),
        Side::Accepted => None,
    };
    // Probing is offered only with figures to report: moq-net opens a
    // PROBE stream only to a peer that says Report or more.
    let probe = match session.transport.estimate().is_known() {
        true => ProbeLevel::Report,
        false => ProbeLevel::None,
    };
    let ours = Setup {
        probe,
        path,
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
                    session.stop(&mut reader, StreamCode::UNEXPECTED_STREAM)
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
fn authorize<T: Transport>(
    session: &Session<T>,
    setup_path: Option<&str>,
    role: Option<Role>,
) -> Result<Grant, Refusal> {
    let (path, query) = match session.transport.url() {
        Some(url) => url,
        None => auth::split_query(setup_path.unwrap_or("")),
    };
    session.root.replace(crate::origin::normalize(path));
    let Some(auth) = &session.shard.settings.auth else {
        return Ok(Grant::everything());
    };
    let grant = auth.verify(path, query)?;
    if grant.is_cluster() {
        // A relay peer shares the relay's whole namespace.
        session.root.replace(String::new());
    }
    match grant.allows_role(role) {
        true => Ok(grant),
        false => Err(Refusal::Role),
    }
}

/// The token was checked at connect; the session lasts no longer than it
/// (moq-relay closes it the same way).
async fn close_at_expiry<T: Transport>(session: Rc<Session<T>>, expires: std::time::SystemTime) {
    if !crate::auth::until_expired(expires, &session.closed).await {
        return;
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
async fn lite04_deadline<T: Transport>(session: Rc<Session<T>>) {
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

async fn accept_bi<T: Transport>(session: Rc<Session<T>>) {
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
                        session.reset(&mut send, StreamCode::UNEXPECTED_STREAM);
                        session.stop(&mut reader, StreamCode::UNEXPECTED_STREAM);
                        return;
                    }
                    Err(_) => return,
                };
                serve::bidi(session, kind, send, reader).await;
            }
        });
    }
}

async fn accept_uni<T: Transport>(session: Rc<Session<T>>) {
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
                        session.stop(&mut reader, StreamCode::UNEXPECTED_STREAM)
                    }
                    Err(_) => {}
                }
            }
        });
    }
}

/// At shutdown, tell the peer to go away (GOAWAY with no new URI) before the
/// runtime closes the connection.
async fn goaway_on_shutdown<T: Transport>(session: Rc<Session<T>>) {
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
