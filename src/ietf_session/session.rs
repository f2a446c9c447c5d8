//! One IETF moq-transport (draft 14) session over a [`Transport`], serving the
//! relay's tracks to an IETF subscriber.
//!
//! Tasks, all on the connection's shard:
//! - the control task: the peer's first bidi stream, read message by message
//!   through [`ControlState`]; the first violation closes this session only;
//! - the control writer: owns the control stream's send half and drains the
//!   queue every other task pushes replies onto;
//! - one task per subscription (following the track replica like a lite
//!   subscription) and one per group it sends (a subgroup stream).
//!
//! The peer as a publisher (PUBLISH_NAMESPACE, PUBLISH, its subgroup
//! streams) is `ingest`'s; FETCH is `fetch`'s. A subscription's filter and
//! its updates are [`super::window`]'s rules.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tracing::{debug, info};

use super::bridge::{object_for_frame, subgroup_for_group};
use super::control::{ControlState, RequestKind, Violation};
use super::state::{IetfSession, OpeningSlot, Subscription};
use super::window::{First, InvalidRange, Window};
use crate::ietf::{
    ControlMessage, Decode, Encode, Goaway, GroupOrder, Location, NamespaceInterest, Parameters,
    PublishDone, PublishNamespace, PublishNamespaceDone, SessionCode, Subscribe, SubscribeError,
    SubscribeNamespace, SubscribeNamespaceError, SubscribeNamespaceOk, SubscribeOk,
    SubscribeUpdate, UnsubscribeNamespace, Version,
};
use crate::lite::StreamCode;
use crate::message::{TrackKey, TrackName};
use crate::origin::{AnnounceEvent, Heard};
use crate::session::transport::{RecvStream, SendStream, Transport};
use crate::shard::Shard;
use crate::task::{race, Either, Signal};
use crate::track::{Group, NextFrame, TrackReplica, TrackState};

/// Requests the peer may have open ahead of our MAX_REQUEST_ID updates.
const REQUEST_WINDOW: u64 = 100;

/// SUBSCRIBE_ERROR codes (draft 14 section 9.8).
const SUBSCRIBE_NOT_SUPPORTED: u64 = 0x3;
const SUBSCRIBE_DOES_NOT_EXIST: u64 = 0x4;
const SUBSCRIBE_INVALID_RANGE: u64 = 0x5;
/// The generic NOT_SUPPORTED (0x3) of the namespace and fetch error tables.
const REQUEST_NOT_SUPPORTED: u64 = 0x3;

/// PUBLISH_DONE status codes (draft 14 section 9.12).
const DONE_INTERNAL_ERROR: u64 = 0x0;
const DONE_TRACK_ENDED: u64 = 0x2;
const DONE_SUBSCRIPTION_ENDED: u64 = 0x3;

/// Data stream reset codes (draft 14): INTERNAL_ERROR, CANCELLED.
const STREAM_INTERNAL_ERROR: u32 = 0x0;
const STREAM_CANCELLED: u32 = 0x1;

/// Run an accepted draft-14 session until the peer leaves or it is closed.
/// `webtransport` says whether the URL (not a PATH parameter) names the path.
pub async fn run<T: Transport>(shard: Rc<Shard>, transport: T, webtransport: bool) {
    let Some((session, _registered)) = open(shard, transport, Version::Draft14, webtransport)
    else {
        return;
    };
    session.spawn(control(session.clone()));
    session.spawn(super::ingest::commands(
        session.clone(),
        _registered.1.clone(),
    ));
    session.spawn(super::ingest::accept_uni(session.clone()));
    session.spawn(super::datagram::receive(session.clone()));
    session.run_until_closed().await;
}

/// The shared start of a session of either draft: its state, the auth check,
/// and its registration with the shard (undone when the guard drops).
pub(super) fn open<T: Transport>(
    shard: Rc<Shard>,
    transport: T,
    version: Version,
    webtransport: bool,
) -> Option<(Rc<IetfSession<T>>, Registered<T>)> {
    let session = Rc::new(IetfSession {
        id: transport.id(),
        version,
        transport,
        shard,
        closed: Signal::default(),
        set_up: Signal::default(),
        outbox: RefCell::new(VecDeque::new()),
        outbox_waker: RefCell::new(None),
        subscriptions: RefCell::new(HashMap::new()),
        opening: RefCell::new(HashMap::new()),
        fetches: RefCell::new(HashMap::new()),
        control: RefCell::new(ControlState::server(REQUEST_WINDOW, webtransport)),
        namespace_listeners: Cell::new(0),
        namespace_requests: RefCell::new(HashMap::new()),
        publishing: Default::default(),
        root: RefCell::new(String::new()),
        grant: std::cell::OnceCell::new(),
    });
    info!(
        session = session.id,
        transport = session.transport.kind(),
        %version,
        "ietf session open"
    );
    let inbox = session.shard.register_session(session.session_ref());
    // Unregistered on every way out, this future dropped at shutdown included.
    let registered = Registered(session.clone(), inbox);
    session.spawn(setup_deadline(session.clone()));
    session.spawn(goaway_on_shutdown(session.clone()));
    Some((session, registered))
}

/// A peer that sends no SETUP within `relay.setup_timeout` is closed
/// CONTROL_MESSAGE_TIMEOUT, as a silent lite session is closed TIMEOUT: it
/// would otherwise hold a registered session for as long as it keeps the
/// connection alive. Either draft.
async fn setup_deadline<T: Transport>(session: Rc<IetfSession<T>>) {
    let limit = session.shard.settings.setup_timeout;
    let waited = race(
        session.set_up.raised(),
        race(monoio::time::sleep(limit), session.closed.raised()),
    )
    .await;
    if let Either::Right(Either::Left(())) = waited {
        debug!(session = session.id, "no SETUP within relay.setup_timeout");
        session.shard.stats.sessions_setup_timeouts.inc();
        session.close(SessionCode::CONTROL_MESSAGE_TIMEOUT, "no SETUP in time");
    }
}

/// A session registered with its shard: on drop its tasks are told to stop,
/// its subscriptions cancelled, its broadcasts and upstreams ended.
pub(super) struct Registered<T: Transport>(
    Rc<IetfSession<T>>,
    pub(super) Rc<crate::shard::SessionInbox>,
);

impl<T: Transport> Drop for Registered<T> {
    fn drop(&mut self) {
        let session = &self.0;
        session.closed.raise();
        for sub in session.subscriptions.borrow().values() {
            sub.cancelled.raise();
        }
        for fetch in session.fetches.borrow().values() {
            fetch.raise();
        }
        session.shard.unregister_session(session.session_ref());
        super::ingest::end(session);
        info!(session = session.id, "ietf session closed");
    }
}

/// The control stream: the first bidi stream; any later one is refused.
async fn control<T: Transport>(session: Rc<IetfSession<T>>) {
    let accepted = race(session.transport.accept_bi(), session.closed.raised()).await;
    let Either::Left(Ok((send, recv, leftover))) = accepted else {
        session.closed.raise();
        return;
    };
    session.spawn(refuse_other_bidi(session.clone()));
    session.spawn(write_control(session.clone(), send));
    let mut recv = recv;
    let mut buf = BytesMut::from(&leftover[..]);
    let limits = session.shard.settings.limits;
    loop {
        let version = session
            .control
            .borrow()
            .version()
            .unwrap_or(Version::Draft14);
        let msg = match ControlMessage::decode(&buf, version, &limits) {
            Ok((msg, used)) => {
                buf.advance(used);
                msg
            }
            Err(e) => match Violation::malformed(&e) {
                Some(v) => {
                    debug!(session = session.id, error = %e, "malformed control message");
                    return session.violation(v);
                }
                None => {
                    match race(recv.read_chunk(usize::MAX), session.closed.raised()).await {
                        Either::Left(Ok(Some(chunk))) => buf.extend_from_slice(&chunk),
                        // The control stream ending ends the session (draft 14 3.3).
                        Either::Left(Ok(None)) => {
                            return session.violation(Violation {
                                code: SessionCode::PROTOCOL_VIOLATION,
                                reason: "control stream ended",
                            })
                        }
                        Either::Left(Err(_)) | Either::Right(()) => {
                            session.closed.raise();
                            return;
                        }
                    }
                    continue;
                }
            },
        };
        tracing::trace!(session = session.id, ?msg, "control message in");
        let checked = session.control.borrow_mut().receive(&msg);
        if let (Ok(_), ControlMessage::ClientSetup(setup)) = (&checked, &msg) {
            // Decided before SERVER_SETUP: a refused client is served nothing.
            let path = session.control.borrow().path().map(str::to_owned);
            if !super::authorize::admit(&session, path.as_deref(), &setup.parameters) {
                return;
            }
        }
        match checked {
            Ok(Some(reply)) => session.send(reply),
            Ok(None) => {}
            Err(v) => return session.violation(v),
        }
        if session.control.borrow().version().is_some() {
            session.set_up.raise();
        }
        handle(&session, msg);
    }
}

/// Bidi streams after the control stream have no meaning in draft 14.
async fn refuse_other_bidi<T: Transport>(session: Rc<IetfSession<T>>) {
    loop {
        let accepted = race(session.transport.accept_bi(), session.closed.raised()).await;
        let Either::Left(Ok((mut send, mut recv, _))) = accepted else {
            return;
        };
        let code = session.stream_code(STREAM_INTERNAL_ERROR);
        let _ = send.reset(code);
        let _ = recv.stop(code);
    }
}

async fn write_control<T: Transport>(session: Rc<IetfSession<T>>, mut send: T::Send) {
    loop {
        let next = poll_fn(|cx| {
            if session.closed.is_raised() {
                return Poll::Ready(None);
            }
            let mut out = BytesMut::new();
            for msg in session.outbox.borrow_mut().drain(..) {
                tracing::trace!(session = session.id, ?msg, "control message out");
                if let Err(e) = msg.encode(&mut out, Version::Draft14) {
                    tracing::warn!(error = %e, "cannot encode an outgoing control message");
                }
            }
            if !out.is_empty() {
                return Poll::Ready(Some(out.freeze()));
            }
            *session.outbox_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        });
        let Either::Left(Some(bytes)) = race(next, session.closed.raised()).await else {
            return;
        };
        if send.write_chunk(bytes).await.is_err() {
            session.closed.raise();
            return;
        }
    }
}

/// Act on one message the control state accepted.
fn handle<T: Transport>(session: &Rc<IetfSession<T>>, msg: ControlMessage) {
    use ControlMessage as M;
    match msg {
        M::Subscribe(request) => subscribe(session, request),
        M::SubscribeUpdate(m) => subscribe_update(session, m),
        M::UnsubscribeNamespace(m) => unsubscribe_namespace(session, m),
        M::Unsubscribe(m) => {
            if let Some(sub) = session.subscriptions.borrow().get(&m.request_id) {
                sub.cancelled.raise();
            }
        }
        M::PublishNamespace(m) => super::ingest::publish_namespace(session, m),
        M::Publish(m) => super::ingest::publish(session, m),
        M::PublishNamespaceDone(m) => super::ingest::publish_namespace_done(session, m),
        M::SubscribeOk(m) => super::ingest::subscribe_ok(session, m),
        M::SubscribeError(m) => super::ingest::subscribe_error(session, m),
        M::PublishDone(m) => super::ingest::publish_done(session, m),
        M::SubscribeNamespace(m) => subscribe_namespace(session, m),
        M::Fetch(m) => super::fetch::fetch14(session, m),
        M::FetchCancel(m) => {
            if let Some(cancel) = session.fetches.borrow().get(&m.request_id) {
                cancel.raise();
            }
        }
        // A client sending GOAWAY is refused by the control state; the rest
        // (REQUESTS_BLOCKED, ...) need no answer here.
        _ => {}
    }
}

/// At the relay's shutdown, once the session is set up, GOAWAY with no new
/// URI (reconnect to the same one) before the runtime closes the connection.
async fn goaway_on_shutdown<T: Transport>(session: Rc<IetfSession<T>>) {
    let shard = session.shard.clone();
    let set_up_and_shutdown = async {
        session.set_up.raised().await;
        shard.shutdown_started().await
    };
    if let Either::Right(()) = race(session.closed.raised(), set_up_and_shutdown).await {
        session.send(Goaway { uri: String::new() }.into());
        debug!(session = session.id, "sent GOAWAY");
    }
}

fn refuse(session: &IetfSession<impl Transport>, request_id: u64, code: u64, reason: &str) {
    session.send(
        SubscribeError {
            request_id,
            code,
            reason: reason.into(),
        }
        .into(),
    );
}

/// How long a SUBSCRIBE waits for the shard's replica of its track to attach
/// before it is answered without a Largest.
const ATTACH_WAIT: Duration = Duration::from_secs(2);

/// A subscription `id` of this session to `key`, following the shard's
/// replica of the track: registered, counted, with the newest object there
/// is now (SUBSCRIBE_OK's Largest) and the filter `window` resolved against
/// it, once the replica has attached (or [`ATTACH_WAIT`] has passed). A
/// range the relay cannot serve (it ends before it starts, or it is over and
/// no longer cached) is refused before anything is registered. Either draft.
pub(super) fn open_subscription<T: Transport>(
    session: &Rc<IetfSession<T>>,
    id: u64,
    key: &TrackKey,
    subscriber_priority: u8,
    forward: bool,
    window: impl FnOnce(Option<Location>) -> Result<(Window, First), InvalidRange>,
) -> impl std::future::Future<Output = Result<Opened, InvalidRange>> {
    // Reserved now, not when the future first runs: the session's request
    // limit counts the SUBSCRIBE from the moment it is read.
    let reservation = Reservation::new(session, id, key);
    let (session, key) = (session.clone(), key.clone());
    async move {
        let replica = reservation.replica.clone();
        if replica.state() == TrackState::Pending {
            // A replica this SUBSCRIBE created on a shard that does not own
            // the track is empty until the owner attaches it with its cached
            // groups (one hop between shards). Answering before that would
            // tell the subscriber the track has no content: no Largest, so a
            // FILL or a joining FETCH would cover nothing and NextGroupStart
            // would take the owner's current group as new.
            let waited = race(replica.attached(), monoio::time::sleep(ATTACH_WAIT));
            let _ = race(waited, session.closed.raised()).await;
        }
        let result = settle(
            &session,
            id,
            &key,
            &replica,
            subscriber_priority,
            forward,
            window,
        );
        reservation.settled(result.is_ok());
        result
    }
}

/// A SUBSCRIBE between being read and being answered: counted in the
/// session's `opening`, holding the shard's replica. Dropped unsettled (the
/// session's task gone), it gives both back.
struct Reservation<T: Transport> {
    slot: OpeningSlot<T>,
    key: TrackKey,
    replica: Rc<TrackReplica>,
    /// The hold on the replica passed to an open subscription.
    kept: Cell<bool>,
}

impl<T: Transport> Reservation<T> {
    fn new(session: &Rc<IetfSession<T>>, id: u64, key: &TrackKey) -> Self {
        let replica = session.shard.subscribe_local(key);
        // Held while it attaches, so that no other subscription's end
        // releases it.
        replica.add_subscriber();
        Reservation {
            slot: session.hold_opening(id),
            key: key.clone(),
            replica,
            kept: Cell::new(false),
        }
    }

    /// Answered: `opened` keeps the hold on the replica for the subscription.
    fn settled(self, opened: bool) {
        self.kept.set(opened);
    }
}

impl<T: Transport> Drop for Reservation<T> {
    fn drop(&mut self) {
        // The slot in `opening` goes with `slot`, after this.
        if !self.kept.get() && self.replica.remove_subscriber() == 0 {
            let shard = &self.slot.session().shard;
            shard.release_local(&self.key, &self.replica);
        }
    }
}

/// The rest of [`open_subscription`], once the replica is as attached as it
/// will be: Largest, the window, and the subscription registered.
fn settle<T: Transport>(
    session: &IetfSession<T>,
    id: u64,
    key: &TrackKey,
    replica: &Rc<TrackReplica>,
    subscriber_priority: u8,
    forward: bool,
    window: impl FnOnce(Option<Location>) -> Result<(Window, First), InvalidRange>,
) -> Result<Opened, InvalidRange> {
    let largest = replica.group_after(None).map(|g| Location {
        group: g.sequence,
        object: (g.frame_count() as u64).saturating_sub(1),
    });
    let resolved = window(largest).and_then(|(window, first)| {
        let passed = window
            .end
            .filter(|end| largest.is_some_and(|l| l.group > end.group));
        if let (Some(end), First::From(from)) = (passed, first) {
            if replica
                .group_from(from)
                .is_none_or(|g| g.sequence > end.group)
            {
                return Err(InvalidRange("the range is over and not cached"));
            }
        }
        Ok((window, first))
    });
    // A refusal gives the hold back as the reservation drops.
    let (window, first) = resolved?;
    session.shard.stats.subscriptions_open.inc();
    let sub = Rc::new(Subscription {
        request_id: id,
        // One alias per subscription: the Request ID is unique already.
        track_alias: id,
        priority: Cell::new(super::bridge::lite_priority(subscriber_priority)),
        forward: Cell::new(forward),
        window: Cell::new(window),
        changed: RefCell::new(None),
        cancelled: Signal::default(),
        streams: Cell::new(0),
        writing: Cell::new(0),
        key: key.clone(),
        largest_group: largest.map(|l| l.group),
        join_group: Cell::new(None),
        joined: Signal::default(),
    });
    session.subscriptions.borrow_mut().insert(id, sub.clone());
    Ok(Opened {
        sub,
        replica: replica.clone(),
        largest,
        first,
    })
}

/// A subscription [`open_subscription`] registered.
pub(super) struct Opened {
    pub(super) sub: Rc<Subscription>,
    pub(super) replica: Rc<TrackReplica>,
    /// The Largest Object when it opened, for SUBSCRIBE_OK.
    pub(super) largest: Option<Location>,
    /// Where [`serve_track`] starts.
    pub(super) first: First,
}

/// The track a SUBSCRIBE names, or `None` when nobody publishes it. A
/// namespace longer than an announced one is that publisher's (aiomoqt's
/// `data-subgroup-basic` names its test case below the namespace it
/// announced): the track keeps the full path, so the upstream SUBSCRIBE
/// names the same namespace. Either draft.
pub(super) fn subscribed_track(
    session: &IetfSession<impl Transport>,
    namespace: &[String],
    name: &str,
) -> Result<TrackKey, TrackRefusal> {
    let (relative, broadcast) = session.broadcast_of(namespace);
    if !super::authorize::may_subscribe(session, &relative) {
        return Err(TrackRefusal::Unauthorized);
    }
    let key: TrackKey = Arc::new(TrackName {
        broadcast,
        track: name.to_owned(),
    });
    if session.shard.publisher_covering(&key.broadcast).is_none() {
        debug!(session = session.id, track = %key, "ietf subscribe: no such broadcast");
        return Err(TrackRefusal::DoesNotExist);
    }
    Ok(key)
}

/// Why a SUBSCRIBE names no track this session may follow.
pub(super) enum TrackRefusal {
    /// Outside what the session's token grants (counted).
    Unauthorized,
    /// No publisher covers its broadcast.
    DoesNotExist,
}

fn subscribe<T: Transport>(session: &Rc<IetfSession<T>>, request: Subscribe) {
    let id = request.request_id;
    if session.requests_open() >= session.shard.settings.max_subscriptions_per_session {
        session.shard.stats.subscriptions_refused_limit.inc();
        return refuse(session, id, SUBSCRIBE_NOT_SUPPORTED, "subscription limit");
    }
    let key = match subscribed_track(session, &request.namespace, &request.name) {
        Ok(key) => key,
        Err(TrackRefusal::Unauthorized) => {
            return refuse(
                session,
                id,
                super::authorize::REQUEST_UNAUTHORIZED,
                "unauthorized",
            )
        }
        Err(TrackRefusal::DoesNotExist) => {
            return refuse(
                session,
                id,
                SUBSCRIBE_DOES_NOT_EXIST,
                "track does not exist",
            )
        }
    };
    debug!(session = session.id, id, track = %key, "ietf subscribe");
    let filter = request.filter;
    let opening = open_subscription(
        session,
        id,
        &key,
        request.subscriber_priority,
        request.forward,
        move |largest| Window::draft14(filter, largest),
    );
    let session2 = session.clone();
    session.spawn(async move {
        let session = session2;
        let opened = opening.await;
        let Opened {
            sub,
            replica,
            largest,
            first,
        } = match opened {
            Ok(opened) => opened,
            Err(InvalidRange(reason)) => {
                return refuse(&session, id, SUBSCRIBE_INVALID_RANGE, reason);
            }
        };
        session.send(
            SubscribeOk {
                request_id: id,
                track_alias: sub.track_alias,
                expires: 0,
                group_order: GroupOrder::Ascending,
                largest,
                parameters: Parameters::default(),
            }
            .into(),
        );
        let status = match serve_track(&session, &sub, &replica, first).await {
            Served::Ended(None) => Some((DONE_TRACK_ENDED, "track ended")),
            Served::Ended(Some(_)) => Some((DONE_INTERNAL_ERROR, "track reset upstream")),
            Served::RangeOver => Some((DONE_SUBSCRIPTION_ENDED, "subscription ended")),
            Served::Cancelled | Served::UpdateFailed => None,
        };
        if let Some((status, reason)) = status {
            // Stream Count tells the subscriber how many streams to wait for.
            session.send(
                PublishDone {
                    request_id: sub.request_id,
                    status,
                    stream_count: sub.streams.get(),
                    reason: reason.into(),
                }
                .into(),
            );
        }
        if status.is_some_and(|(status, _)| status == DONE_SUBSCRIPTION_ENDED) {
            // The range's last streams are still being written: they finish
            // (an UNSUBSCRIBE or the session's end still resets them), and
            // the subscription counts against the session until they do.
            streams_written(&session, &sub).await;
        }
        sub.cancelled.raise();
        session.subscriptions.borrow_mut().remove(&sub.request_id);
        session.shard.stats.subscriptions_open.dec();
        if replica.remove_subscriber() == 0 {
            session.shard.release_local(&key, &replica);
        }
        debug!(
            session = session.id,
            id = sub.request_id,
            "ietf subscription over"
        );
    });
}

/// SUBSCRIBE_UPDATE (draft 14 section 9.10): narrow the filter, change the
/// priority, pause or resume forwarding; no answer. It changes the
/// subscription in place, so updates allocate nothing. An update naming a
/// request the peer never sent, or widening the filter, closes the session
/// with PROTOCOL_VIOLATION; one for a subscription that has ended is ignored.
fn subscribe_update<T: Transport>(session: &Rc<IetfSession<T>>, m: SubscribeUpdate) {
    let target = m.subscription_request_id;
    // The control state took the update's own ID in sequence, so an earlier
    // ID of the same parity is one the peer used; anything else never was.
    if target >= m.request_id || target % 2 != m.request_id % 2 {
        return session.violation(Violation {
            code: SessionCode::PROTOCOL_VIOLATION,
            reason: "SUBSCRIBE_UPDATE names no request of the peer",
        });
    }
    let Some(sub) = session.subscriptions.borrow().get(&target).cloned() else {
        // Also one still waiting for its replica (`opening`): the update
        // crossed its start and is dropped, as for one that crossed its end.
        debug!(
            session = session.id,
            target, "SUBSCRIBE_UPDATE for a subscription not open"
        );
        return;
    };
    let window = match sub.window.get().narrowed(m.start, m.end_group) {
        Ok(window) => window,
        Err(reason) => {
            return session.violation(Violation {
                code: SessionCode::PROTOCOL_VIOLATION,
                reason,
            })
        }
    };
    debug!(
        session = session.id,
        target,
        ?window,
        forward = m.forward,
        "ietf subscribe update"
    );
    sub.window.set(window);
    sub.priority
        .set(super::bridge::lite_priority(m.subscriber_priority));
    sub.forward.set(m.forward);
    sub.wake();
}

/// Until `sub`'s open subgroup streams have been written (or it is
/// cancelled, or the session closes).
async fn streams_written<T: Transport>(session: &IetfSession<T>, sub: &Subscription) {
    let cancel = sub.cancelled.waiter();
    let closed = session.closed.waiter();
    poll_fn(|cx| {
        if sub.writing.get() == 0
            || sub.cancelled.poll_raised(&cancel, cx).is_ready()
            || session.closed.poll_raised(&closed, cx).is_ready()
        {
            return Poll::Ready(());
        }
        *sub.changed.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    })
    .await
}

/// Counts a subgroup stream as being written while it lives.
struct Writing(Rc<Subscription>);

impl Drop for Writing {
    fn drop(&mut self) {
        self.0.writing.set(self.0.writing.get().saturating_sub(1));
        self.0.wake();
    }
}

/// How [`serve_track`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Served {
    /// The subscription was cancelled or the session closed.
    Cancelled,
    /// The track ended (`None` cleanly).
    Ended(Option<StreamCode>),
    /// Draft 14 only: every group the filter names has been sent (draft 22
    /// keeps such a subscription open: its end may be moved).
    RangeOver,
    /// Draft 22: a REQUEST_UPDATE could not be applied.
    UpdateFailed,
}

/// Follow the replica from `first`: each group the subscription's window
/// passes, while it forwards, to its own subgroup stream.
pub(super) async fn serve_track<T: Transport>(
    session: &Rc<IetfSession<T>>,
    sub: &Rc<Subscription>,
    replica: &Rc<TrackReplica>,
    first: First,
) -> Served {
    let cancel = sub.cancelled.waiter();
    let closed = session.closed.waiter();
    let waiter = replica.waiter();
    // The lowest sequence still to consider; `None`: the newest cached.
    let mut next = match first {
        First::Newest => None,
        First::From(sequence) => Some(sequence),
    };
    // Starting at a group named against a known Largest, the subscription
    // joins there (a joining FETCH ends right before it); otherwise at the
    // first group it reaches.
    if let (Some(next), Some(_)) = (next, sub.largest_group) {
        sub.join_at(next);
    }
    let ends_at_range = session.version == Version::Draft14;
    // Only datagrams that arrive from now on; each is sent as it is seen.
    let mut datagram_cursor = replica.next_datagram();
    let mut datagrams = Vec::new();
    loop {
        let step = poll_fn(|cx| {
            if sub.cancelled.poll_raised(&cancel, cx).is_ready()
                || session.closed.poll_raised(&closed, cx).is_ready()
            {
                return Poll::Ready(Err(Served::Cancelled));
            }
            // Ahead of groups: a datagram is sent now or never.
            if replica.next_datagram() > datagram_cursor {
                let (missed, next) = replica.datagrams_from(datagram_cursor, &mut datagrams);
                datagram_cursor = next;
                session.shard.stats.datagrams_dropped.add(missed);
                for datagram in datagrams.drain(..) {
                    super::datagram::send(session, sub, &datagram);
                }
            }
            *sub.changed.borrow_mut() = Some(cx.waker().clone());
            let window = sub.window.get();
            if ends_at_range && next.is_some_and(|n| window.over_before(n)) {
                return Poll::Ready(Err(Served::RangeOver));
            }
            let group = match next {
                None => replica.newest_after(None),
                Some(next) => replica.group_from(next),
            };
            if let Some(group) = group {
                return Poll::Ready(Ok(group));
            }
            if let TrackState::Ended(code) = replica.state() {
                return Poll::Ready(Err(Served::Ended(code)));
            }
            waiter.register(cx);
            Poll::Pending
        })
        .await;
        let group = match step {
            Ok(group) => group,
            Err(served) => return served,
        };
        sub.join_at(group.sequence);
        // A group past u64::MAX cannot come: stay on it rather than wrap.
        next = Some(group.sequence.saturating_add(1));
        let window = sub.window.get();
        if !sub.forward.get() || !window.passes(group.sequence) {
            continue;
        }
        sub.streams.set(sub.streams.get() + 1);
        sub.writing.set(sub.writing.get() + 1);
        let objects = window.objects(group.sequence);
        let writing = Writing(sub.clone());
        session.spawn(write_subgroup(session.clone(), writing, group, objects));
    }
}

/// The QUIC send priority of a subscription's group stream: the priority
/// first, then the group sequence (newer groups first).
fn send_priority(priority: u8, sequence: u64) -> i32 {
    (i32::from(priority) << 23) | (sequence & 0x7f_ffff) as i32
}

/// One relay group as one subgroup stream: header, objects from `first` (to
/// `last` when the range ends inside the group) as frames arrive, FIN at
/// the group's end. A priority update reaches the stream before its next
/// write. The header waits for the first frame: its type says whether every
/// object carries extension headers, and so it does when the first frame
/// brought some in this session's draft (see
/// [`super::bridge::extensions_for`]).
async fn write_subgroup<T: Transport>(
    session: Rc<IetfSession<T>>,
    writing: Writing,
    group: Rc<Group>,
    (first, last): (u64, Option<u64>),
) {
    let sub = writing.0.clone();
    let opened = race(session.transport.open_uni(), sub.cancelled.raised()).await;
    let Either::Left(Ok(mut stream)) = opened else {
        return;
    };
    let mut priority = sub.priority.get();
    let _ = stream.set_priority(send_priority(priority, group.sequence));
    let version = session.version;
    let write = async {
        let waiter = group.waiter();
        let mut index = usize::try_from(first).unwrap_or(usize::MAX);
        // The first object's delta is its ID; each later one follows on.
        let mut delta = first;
        // Set once the header is out: whether objects carry extensions.
        let mut with_extensions = None;
        loop {
            let next = poll_fn(|cx| group.poll_frame(&waiter, cx, index)).await;
            let extended = match with_extensions {
                Some(extended) => extended,
                None => {
                    let extended = matches!(&next, NextFrame::Frame(frame, _)
                        if super::bridge::extensions_for(frame, version).is_some());
                    let mut header = subgroup_for_group(sub.track_alias, group.sequence, priority);
                    header.extensions = extended;
                    // Ending inside the group, FIN does not end the group.
                    header.end_of_group = last.is_none();
                    let mut head = BytesMut::new();
                    let encoded = match version {
                        Version::Draft14 => header.encode(&mut head, Version::Draft14),
                        Version::Draft22 => {
                            let mut header = super::bridge::draft22_subgroup(&header);
                            header.first_object = first == 0;
                            crate::ietf::draft22::Encode::encode(&header, &mut head)
                        }
                    };
                    encoded.map_err(|_| Some(STREAM_INTERNAL_ERROR))?;
                    stream.write_chunk(head.freeze()).await.map_err(|_| None)?;
                    with_extensions = Some(extended);
                    extended
                }
            };
            match next {
                NextFrame::Frame(frame, _) => {
                    if sub.priority.get() != priority {
                        priority = sub.priority.get();
                        let _ = stream.set_priority(send_priority(priority, group.sequence));
                    }
                    let mut object = BytesMut::new();
                    let mut header = object_for_frame(frame.payload.len() as u64);
                    header.object_id_delta = std::mem::take(&mut delta);
                    if extended {
                        // A frame without extensions (or with another
                        // draft's) says so with an empty block.
                        let block = super::bridge::extensions_for(&frame, version);
                        header.extensions = Some(block.map(<[u8]>::to_vec).unwrap_or_default());
                    }
                    let _ = match version {
                        Version::Draft14 => header.encode(&mut object),
                        Version::Draft22 => {
                            crate::ietf::draft22::encode_object(&header, &mut object)
                        }
                    };
                    stream
                        .write_chunk(object.freeze())
                        .await
                        .map_err(|_| None)?;
                    if !frame.payload.is_empty() {
                        stream.write_chunk(frame.payload).await.map_err(|_| None)?;
                    }
                    if last == Some(index as u64) {
                        return Ok::<(), Option<u32>>(());
                    }
                    index += 1;
                }
                NextFrame::End => return Ok(()),
                NextFrame::Reset(_) => return Err(Some(STREAM_INTERNAL_ERROR)),
            }
        }
    };
    let outcome = match race(write, sub.cancelled.raised()).await {
        Either::Left(outcome) => outcome,
        Either::Right(()) => Err(Some(STREAM_CANCELLED)),
    };
    match outcome {
        Ok(()) => {
            let _ = stream.finish();
        }
        Err(Some(code)) => {
            let _ = stream.reset(session.stream_code(code));
        }
        Err(None) => {}
    }
}

/// UNSUBSCRIBE_NAMESPACE (draft 14 section 9.22): the namespace
/// subscription on that prefix (or, as moq-net sends it, with that Request
/// ID) stops and its listener is freed. One that names nothing open is
/// ignored: it may have crossed the end of the session's interest.
fn unsubscribe_namespace<T: Transport>(session: &Rc<IetfSession<T>>, m: UnsubscribeNamespace) {
    let requests = session.namespace_requests.borrow();
    let by_prefix = |prefix: &str| {
        requests
            .iter()
            .find(|(_, (p, _))| p == prefix)
            .map(|(id, _)| *id)
    };
    let found = match &m.interest {
        NamespaceInterest::Prefix(prefix) => {
            let (relative, prefix) = session.broadcast_of(prefix);
            // An empty tuple is also how moq-net writes Request ID 0.
            by_prefix(&prefix)
                .or_else(|| (relative.is_empty() && requests.contains_key(&0)).then_some(0))
        }
        NamespaceInterest::RequestId(id) => requests.contains_key(id).then_some(*id),
    };
    match found.and_then(|id| requests.get(&id)) {
        Some((_, stop)) => stop.raise(),
        None => debug!(
            session = session.id,
            ?m,
            "UNSUBSCRIBE_NAMESPACE names nothing open"
        ),
    }
}

/// SUBSCRIBE_NAMESPACE: SUBSCRIBE_NAMESPACE_OK, then a PUBLISH_NAMESPACE for
/// every active broadcast under the prefix and every one that starts later,
/// PUBLISH_NAMESPACE_DONE for every one that ends, until the session ends.
fn subscribe_namespace<T: Transport>(session: &Rc<IetfSession<T>>, request: SubscribeNamespace) {
    let settings = &session.shard.settings;
    let (relative, prefix) = session.broadcast_of(&request.prefix);
    let open = session.namespace_listeners.get();
    if prefix.len() > settings.max_announce_prefix_len
        || open >= settings.max_announce_requests_per_session
    {
        session.shard.stats.announce_requests_refused_limit.inc();
        return session.send(
            SubscribeNamespaceError {
                request_id: request.request_id,
                code: REQUEST_NOT_SUPPORTED,
                reason: "namespace subscription limit".into(),
            }
            .into(),
        );
    }
    let Some(scope) = super::authorize::namespace_scope(session, &relative) else {
        return session.send(
            SubscribeNamespaceError {
                request_id: request.request_id,
                code: super::authorize::REQUEST_UNAUTHORIZED,
                reason: "unauthorized".into(),
            }
            .into(),
        );
    };
    session.namespace_listeners.set(open + 1);
    session.send(
        SubscribeNamespaceOk {
            request_id: request.request_id,
        }
        .into(),
    );
    let stop = Rc::new(Signal::default());
    session
        .namespace_requests
        .borrow_mut()
        .insert(request.request_id, (prefix.clone(), stop.clone()));
    let me = session.session_ref();
    let (listener_id, listener) = session.shard.listen(&prefix, me);
    let session2 = session.clone();
    session.spawn(async move {
        let session = session2;
        let tell = |event: &AnnounceEvent| {
            if !scope.covers(&event.suffix) {
                return;
            }
            let path = crate::origin::join(&prefix, &event.suffix);
            let namespace = session.namespace_of(&path);
            match event.active {
                true => {
                    let opened = session
                        .control
                        .borrow_mut()
                        .open_request(RequestKind::PublishNamespace);
                    match opened {
                        Ok(request_id) => session.send(
                            PublishNamespace {
                                request_id,
                                namespace,
                                parameters: Parameters::default(),
                            }
                            .into(),
                        ),
                        // The peer's MAX_REQUEST_ID leaves no room: say so
                        // rather than drop the announcement unseen.
                        Err(blocked) => {
                            debug!(session = session.id, %path, "announcement blocked by MAX_REQUEST_ID");
                            session.send(blocked.into());
                        }
                    }
                }
                false => session.send(PublishNamespaceDone { namespace }.into()),
            }
        };
        let mut cursor: Option<String> = None;
        let mut paging = true;
        let closed = session.closed.waiter();
        let stopped = stop.waiter();
        'serve: loop {
            if stop.is_raised() || session.closed.is_raised() {
                break;
            }
            while let Some(heard) = listener.try_next() {
                match heard {
                    Heard::Overflowed => {
                        debug!(session = session.id, %prefix, "namespace backlog overflowed");
                        session.shard.stats.announce_backlog_overflows.inc();
                        break 'serve;
                    }
                    Heard::Change(event) => tell(&event),
                }
            }
            if paging {
                let page = session.shard.announced_page(&prefix, me, cursor.as_deref(), 256);
                for event in &page.events {
                    tell(event);
                }
                cursor = page.cursor.or(cursor);
                paging = !page.done;
                listener.paged(cursor.as_deref(), page.done);
                qumo_shards::yield_now().await;
                continue;
            }
            let next = poll_fn(|cx| {
                if session.closed.poll_raised(&closed, cx).is_ready()
                    || stop.poll_raised(&stopped, cx).is_ready()
                {
                    return Poll::Ready(false);
                }
                listener.poll_ready(cx).map(|()| true)
            })
            .await;
            if !next {
                break;
            }
        }
        session
            .namespace_requests
            .borrow_mut()
            .remove(&request.request_id);
        session.shard.unlisten(listener_id);
        session
            .namespace_listeners
            .set(session.namespace_listeners.get() - 1);
    });
}
