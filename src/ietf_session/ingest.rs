//! The IETF peer as a publisher: PUBLISH_NAMESPACE into the announce table,
//! the router's SubscribeUpstream commands out as SUBSCRIBE, and its subgroup
//! streams in as groups of frames for the track's hub (the same commands and
//! media events a lite session's `consume` uses).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use tracing::debug;

use super::bridge::{frame_extensions, BridgeError, Step, SubgroupIngest, MAX_OBJECT_EXTENSIONS};
use super::control::RequestKind;
use super::state::{IetfSession, Incoming, Offered, Upstream};
use crate::ietf::{
    Decode, DecodeError, Filter, GroupOrder, Location, Parameters, Publish, PublishDone,
    PublishError, PublishNamespace, PublishNamespaceDone, PublishNamespaceError,
    PublishNamespaceOk, PublishOk, SessionCode, SubgroupHeader, SubgroupObject, Subscribe,
    SubscribeError, SubscribeOk, SubscribeUpdate, Unsubscribe, Version,
};
use crate::lite::StreamCode;
use crate::message::{FetchEvent, HubRef, MediaEvent, TrackKey, TrackName};
use crate::model::arrival_ms;
use crate::router::SessionCommand;
use crate::session::transport::{SendStream, Transport};
use crate::shard::SessionInbox;
use crate::task::{race, Either, Signal};
use crate::track::TrackProperties;

/// PUBLISH_NAMESPACE_ERROR code for a refused namespace (draft 14: 0x0
/// INTERNAL_ERROR .. ; "uninterested"/limits are reported as 0x0 by moq-net).
const NAMESPACE_REFUSED: u64 = 0x0;

/// The subscriber priority of the relay's own subscriptions upstream.
const UPSTREAM_PRIORITY: u8 = 128;

/// PUBLISH_ERROR UNINTERESTED (draft 14 section 9.15).
const PUBLISH_UNINTERESTED: u64 = 0x4;

pub(super) fn publish_namespace<T: Transport>(session: &Rc<IetfSession<T>>, m: PublishNamespace) {
    let (code, reason) = match announce(session, &m.namespace) {
        Ok(()) => {
            return session.send(
                PublishNamespaceOk {
                    request_id: m.request_id,
                }
                .into(),
            )
        }
        Err(Refused::Unauthorized) => (super::authorize::REQUEST_UNAUTHORIZED, "unauthorized"),
        Err(Refused::Limit) => (NAMESPACE_REFUSED, "namespace refused"),
    };
    session.send(
        PublishNamespaceError {
            request_id: m.request_id,
            code,
            reason: reason.into(),
        }
        .into(),
    );
}

/// Why a namespace the peer publishes is not announced.
pub(super) enum Refused {
    /// Empty, or over the session's broadcast limit.
    Limit,
    /// Outside the peer's grant.
    Unauthorized,
}

/// Put a namespace the peer publishes into the announce table, under the
/// session's root. Either draft.
pub(super) fn announce<T: Transport>(
    session: &Rc<IetfSession<T>>,
    namespace: &[String],
) -> Result<(), Refused> {
    let (relative, path) = session.broadcast_of(namespace);
    if !super::authorize::may_publish(session, &relative) {
        return Err(Refused::Unauthorized);
    }
    if !may_hold(session, &path) {
        session.shard.stats.broadcasts_refused_limit.inc();
        return Err(Refused::Limit);
    }
    if session
        .publishing
        .announced
        .borrow_mut()
        .insert(path.clone())
    {
        hold(session, &path);
    }
    Ok(())
}

pub(super) fn publish_namespace_done<T: Transport>(
    session: &Rc<IetfSession<T>>,
    m: PublishNamespaceDone,
) {
    withdraw(session, &m.namespace);
}

/// The peer no longer publishes `namespace`. Either draft.
pub(super) fn withdraw<T: Transport>(session: &Rc<IetfSession<T>>, namespace: &[String]) {
    let (_, path) = session.broadcast_of(namespace);
    if session.publishing.announced.borrow_mut().remove(&path) {
        release(session, &path);
    }
}

/// Whether the peer may hold `path` in the announce table: a path it holds
/// already, or a new one within the per-session broadcast cap.
fn may_hold<T: Transport>(session: &IetfSession<T>, path: &str) -> bool {
    let holds = session.publishing.holds.borrow();
    !path.is_empty()
        && (holds.contains_key(path)
            || holds.len() < session.shard.settings.max_broadcasts_per_session)
}

/// One more reason to keep `path` announced; the first announces it.
fn hold<T: Transport>(session: &IetfSession<T>, path: &str) {
    let first = {
        let mut holds = session.publishing.holds.borrow_mut();
        let count = holds.entry(path.to_owned()).or_insert(0);
        *count += 1;
        *count == 1
    };
    if first {
        debug!(session = session.id, broadcast = %path, active = true, "ietf announce");
        session
            .shard
            .announce(path, session.session_ref(), Arc::from([]), true);
    }
}

/// One reason fewer; the last withdraws the announcement.
fn release<T: Transport>(session: &IetfSession<T>, path: &str) {
    let last = {
        let mut holds = session.publishing.holds.borrow_mut();
        match holds.get_mut(path) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                holds.remove(path);
                true
            }
            None => false,
        }
    };
    if last {
        debug!(session = session.id, broadcast = %path, active = false, "ietf announce");
        session
            .shard
            .announce(path, session.session_ref(), Arc::from([]), false);
    }
}

/// What became of a track offered with PUBLISH (either draft).
pub(super) enum Offer {
    /// On offer: the broadcast is announced and the track waits for the
    /// router to want it.
    Accepted,
    /// Refused with this reason (already offered, or over the broadcast
    /// limit); the session goes on.
    Refused(&'static str),
    /// The alias names another track: the session was closed.
    Closed,
    /// Outside the session's grant (its token's publish paths).
    Unauthorized,
}

/// PUBLISH: the peer offers one track. Its broadcast is announced (as a
/// PUBLISH_NAMESPACE would) and the offer accepted at once with PUBLISH_OK
/// and Forward 0: no objects flow until the router wants the track, when a
/// SUBSCRIBE_UPDATE sets Forward 1 (see [`forward_publish`]).
pub(super) fn publish<T: Transport>(session: &Rc<IetfSession<T>>, m: Publish) {
    match offer(session, m.request_id, &m.namespace, &m.name, m.track_alias) {
        Offer::Accepted => session.send(
            PublishOk {
                request_id: m.request_id,
                forward: false,
                subscriber_priority: UPSTREAM_PRIORITY,
                group_order: GroupOrder::Ascending,
                filter: Filter::LargestObject,
                parameters: Parameters::default(),
            }
            .into(),
        ),
        Offer::Unauthorized => session.send(
            PublishError {
                request_id: m.request_id,
                code: super::authorize::REQUEST_UNAUTHORIZED,
                reason: "unauthorized".into(),
            }
            .into(),
        ),
        Offer::Refused(reason) => session.send(
            PublishError {
                request_id: m.request_id,
                code: PUBLISH_UNINTERESTED,
                reason: reason.into(),
            }
            .into(),
        ),
        Offer::Closed => {}
    }
}

/// Put the track a PUBLISH offers on offer; the caller answers it in its
/// draft's words.
pub(super) fn offer<T: Transport>(
    session: &Rc<IetfSession<T>>,
    request_id: u64,
    namespace: &[String],
    name: &str,
    track_alias: u64,
) -> Offer {
    let (relative, path) = session.broadcast_of(namespace);
    if !super::authorize::may_publish(session, &relative) {
        return Offer::Unauthorized;
    }
    let key: TrackKey = Arc::new(TrackName {
        broadcast: path.clone(),
        track: name.to_owned(),
    });
    let publishing = &session.publishing;
    // Draft 14 section 9.13 (and draft 22): an alias already naming another
    // track closes the session.
    let alias_taken = publishing.aliases.borrow().contains_key(&track_alias)
        || publishing
            .offered
            .borrow()
            .values()
            .any(|o| o.track_alias == track_alias);
    if alias_taken {
        session.shard.stats.sessions_protocol_violations.inc();
        session.close(SessionCode::DUPLICATE_TRACK_ALIAS, "track alias in use");
        return Offer::Closed;
    }
    if publishing.offered.borrow().contains_key(&key) {
        return Offer::Refused("track already offered");
    }
    if !may_hold(session, &path) {
        session.shard.stats.broadcasts_refused_limit.inc();
        return Offer::Refused("broadcast refused");
    }
    debug!(session = session.id, id = request_id, track = %key, alias = track_alias, "ietf publish offered");
    hold(session, &path);
    publishing.published.borrow_mut().insert(request_id, path);
    publishing.offered.borrow_mut().insert(
        key,
        Offered {
            request_id,
            track_alias,
        },
    );
    Offer::Accepted
}

/// Forward on or off for a PUBLISH's subscription. Draft 14: a
/// SUBSCRIBE_UPDATE with a Request ID of its own and no answer (moq-net and
/// aiomoqt agree); `None` when the peer's MAX_REQUEST_ID leaves no room.
/// Draft 22: the task that owns the PUBLISH's stream sends REQUEST_UPDATE.
fn update_forward<T: Transport>(
    session: &IetfSession<T>,
    subscription_request_id: u64,
    forward: bool,
) -> Option<()> {
    if session.version == Version::Draft22 {
        if let Some(wanted) = session
            .publishing
            .forward22
            .borrow()
            .get(&subscription_request_id)
        {
            wanted.set(forward);
        }
        return Some(());
    }
    let taken = session.control.borrow_mut().take_request_id();
    let request_id = match taken {
        Ok(id) => id,
        Err(blocked) => {
            session.send(blocked.into());
            return None;
        }
    };
    session.send(
        SubscribeUpdate {
            request_id,
            subscription_request_id,
            start: Location::default(),
            end_group: 0,
            subscriber_priority: UPSTREAM_PRIORITY,
            forward,
            parameters: Parameters::default(),
        }
        .into(),
    );
    Some(())
}

/// The session is over: its broadcasts end, its upstreams vanish.
pub(super) fn end<T: Transport>(session: &Rc<IetfSession<T>>) {
    let publishing = &session.publishing;
    publishing.announced.borrow_mut().clear();
    publishing.offered.borrow_mut().clear();
    publishing.published.borrow_mut().clear();
    publishing.forward22.borrow_mut().clear();
    let paths: Vec<String> = publishing
        .holds
        .borrow_mut()
        .drain()
        .map(|(p, _)| p)
        .collect();
    for path in paths {
        session
            .shard
            .announce(&path, session.session_ref(), Arc::from([]), false);
    }
    publishing.by_hub.borrow_mut().clear();
    publishing.aliases.borrow_mut().clear();
    publishing.wake_alias_waiters();
    let upstreams: Vec<_> = publishing.upstreams.borrow_mut().drain().collect();
    for (_, upstream) in upstreams {
        upstream.cancelled.raise();
        session.shard.stats.upstream_subscriptions_open.dec();
        session.shard.to_hub(upstream.hub, MediaEvent::vanished());
    }
}

/// Carry out the router's commands for this session, in order.
pub(super) async fn commands<T: Transport>(session: Rc<IetfSession<T>>, inbox: Rc<SessionInbox>) {
    loop {
        let next = race(poll_fn(|cx| inbox.poll_next(cx)), session.closed.raised()).await;
        let Either::Left(command) = next else { return };
        match command {
            SessionCommand::SubscribeUpstream { key, hub } => match session.version {
                Version::Draft14 => subscribe_upstream(&session, key, hub),
                Version::Draft22 => subscribe_upstream22(&session, key, hub),
            },
            SessionCommand::CancelUpstream { hub } => cancel_upstream(&session, hub),
            // Groups are read whole; a stop is honoured when the hub sees
            // the group end.
            SessionCommand::StopGroup { .. } => {}
            // Draft-14 FETCH upstream is not built: the group is not found.
            SessionCommand::Fetch { fetch, .. } => session
                .shard
                .fetch_reply(fetch, FetchEvent::Reset(StreamCode::NOT_FOUND)),
            SessionCommand::CancelFetch { .. } => {}
        }
    }
}

/// Either draft, before an upstream SUBSCRIBE: whether `hub` is fed by this
/// session already, or is now, by the PUBLISH the peer offered `key` with.
fn fed_already<T: Transport>(session: &Rc<IetfSession<T>>, key: &TrackKey, hub: HubRef) -> bool {
    let publishing = &session.publishing;
    if publishing.by_hub.borrow().contains_key(&hub) {
        return true;
    }
    let offered = publishing.offered.borrow_mut().remove(key);
    match offered {
        Some(offered) => {
            forward_publish(session, key.clone(), hub, offered);
            true
        }
        None => false,
    }
}

fn subscribe_upstream<T: Transport>(session: &Rc<IetfSession<T>>, key: TrackKey, hub: HubRef) {
    if fed_already(session, &key, hub) {
        return;
    }
    let opened = session
        .control
        .borrow_mut()
        .open_request(RequestKind::Subscribe);
    let request_id = match opened {
        Ok(id) => id,
        Err(blocked) => {
            debug!(session = session.id, track = %key, "upstream SUBSCRIBE blocked by MAX_REQUEST_ID");
            session.send(blocked.into());
            session
                .shard
                .to_hub(hub, MediaEvent::track_end(Some(StreamCode::NO_CAPACITY)));
            return;
        }
    };
    debug!(session = session.id, id = request_id, track = %key, "ietf subscribing upstream");
    session.send(
        Subscribe {
            request_id,
            namespace: session.namespace_of(&key.broadcast),
            name: key.track.clone(),
            subscriber_priority: UPSTREAM_PRIORITY,
            group_order: GroupOrder::Ascending,
            forward: true,
            filter: Filter::LargestObject,
            parameters: Parameters::default(),
        }
        .into(),
    );
    open_upstream(session, request_id, key, hub);
}

/// Our subscription `request_id` to the peer now feeds `hub`: counted,
/// and found by hub (to cancel it) and by Request ID (to route answers and
/// streams). Either draft, SUBSCRIBE or a forwarded PUBLISH.
fn open_upstream<T: Transport>(
    session: &IetfSession<T>,
    request_id: u64,
    key: TrackKey,
    hub: HubRef,
) -> Rc<Upstream> {
    // Objects carry no timestamps: frames are stamped on arrival in
    // milliseconds, as lite-04's are, so the properties are the defaults.
    session
        .shard
        .to_hub(hub, MediaEvent::Properties(TrackProperties::default()));
    session.shard.stats.upstream_subscriptions_open.inc();
    let publishing = &session.publishing;
    publishing.by_hub.borrow_mut().insert(hub, request_id);
    let upstream = Rc::new(Upstream {
        hub,
        key,
        cancelled: Signal::default(),
        streams_ended: Cell::new(0),
        stream_ended: RefCell::new(None),
    });
    publishing
        .upstreams
        .borrow_mut()
        .insert(request_id, upstream.clone());
    upstream
}

/// The router wants a track the peer offered with PUBLISH: Forward 1 by
/// SUBSCRIBE_UPDATE, and the PUBLISH's alias, bound now, routes the streams
/// that follow to `hub` (no SUBSCRIBE_OK comes for a PUBLISH).
fn forward_publish<T: Transport>(
    session: &Rc<IetfSession<T>>,
    key: TrackKey,
    hub: HubRef,
    offered: Offered,
) {
    let publishing = &session.publishing;
    let request_id = offered.request_id;
    if update_forward(session, request_id, true).is_none() {
        debug!(session = session.id, track = %key, "SUBSCRIBE_UPDATE blocked by MAX_REQUEST_ID");
        publishing.offered.borrow_mut().insert(key, offered);
        session
            .shard
            .to_hub(hub, MediaEvent::track_end(Some(StreamCode::NO_CAPACITY)));
        return;
    }
    debug!(session = session.id, id = request_id, track = %key, "ietf publish forwarded");
    open_upstream(session, request_id, key, hub);
    publishing
        .aliases
        .borrow_mut()
        .insert(offered.track_alias, request_id);
    publishing.wake_alias_waiters();
}

fn cancel_upstream<T: Transport>(session: &Rc<IetfSession<T>>, hub: HubRef) {
    let Some(request_id) = session.publishing.by_hub.borrow_mut().remove(&hub) else {
        return;
    };
    let alias = session
        .publishing
        .aliases
        .borrow()
        .iter()
        .find(|(_, id)| **id == request_id)
        .map(|(alias, _)| *alias);
    let Some(upstream) = remove_upstream(session, request_id) else {
        return;
    };
    upstream.cancelled.raise();
    let published = session
        .publishing
        .published
        .borrow()
        .contains_key(&request_id);
    match (published, alias) {
        // A PUBLISH's subscription is paused, not ended: the track goes back
        // on offer for the next subscriber.
        (true, Some(track_alias)) => {
            debug!(session = session.id, id = request_id, track = %upstream.key, "ietf publish paused");
            session.publishing.offered.borrow_mut().insert(
                upstream.key.clone(),
                Offered {
                    request_id,
                    track_alias,
                },
            );
            update_forward(session, request_id, false);
        }
        // Draft 22 has no UNSUBSCRIBE: the upstream's task resets its stream.
        _ if session.version == Version::Draft22 => {}
        _ => session.send(Unsubscribe { request_id }.into()),
    }
}

fn remove_upstream<T: Transport>(
    session: &IetfSession<T>,
    request_id: u64,
) -> Option<Rc<Upstream>> {
    let publishing = &session.publishing;
    let upstream = publishing.upstreams.borrow_mut().remove(&request_id)?;
    publishing.by_hub.borrow_mut().remove(&upstream.hub);
    publishing
        .aliases
        .borrow_mut()
        .retain(|_, id| *id != request_id);
    publishing.wake_alias_waiters();
    session.shard.stats.upstream_subscriptions_open.dec();
    Some(upstream)
}

pub(super) fn subscribe_ok<T: Transport>(session: &Rc<IetfSession<T>>, m: SubscribeOk) {
    bind_alias(session, m.request_id, m.track_alias);
}

/// SUBSCRIBE_OK for upstream `request_id`: its subgroup streams will carry
/// `track_alias`. An alias another upstream holds closes the session.
fn bind_alias<T: Transport>(session: &Rc<IetfSession<T>>, request_id: u64, track_alias: u64) {
    if !session
        .publishing
        .upstreams
        .borrow()
        .contains_key(&request_id)
    {
        // Cancelled while the answer was in flight.
        return;
    }
    let mut aliases = session.publishing.aliases.borrow_mut();
    match aliases.get(&track_alias) {
        Some(id) if *id != request_id => {
            drop(aliases);
            session.shard.stats.sessions_protocol_violations.inc();
            session.close(SessionCode::DUPLICATE_TRACK_ALIAS, "track alias in use");
        }
        _ => {
            aliases.insert(track_alias, request_id);
            drop(aliases);
            session.publishing.wake_alias_waiters();
        }
    }
}

pub(super) fn subscribe_error<T: Transport>(session: &Rc<IetfSession<T>>, m: SubscribeError) {
    refused(session, m.request_id, m.code);
}

/// The upstream SUBSCRIBE `request_id` was refused with `code`.
fn refused<T: Transport>(session: &Rc<IetfSession<T>>, request_id: u64, code: u64) {
    if let Some(upstream) = remove_upstream(session, request_id) {
        debug!(session = session.id, track = %upstream.key, code, "upstream SUBSCRIBE refused");
        session.shard.to_hub(
            upstream.hub,
            MediaEvent::track_end(Some(StreamCode::NOT_FOUND)),
        );
    }
}

pub(super) fn publish_done<T: Transport>(session: &Rc<IetfSession<T>>, m: PublishDone) {
    publish_ended(
        session,
        m.request_id,
        m.status,
        stream_count(m.stream_count),
    );
}

/// The publisher ended `request_id` (PUBLISH_DONE `status`, or on draft 22
/// its PUBLISH's stream ending). For a PUBLISH, its offer (if still
/// waiting) and its hold on the broadcast go too. Either draft.
pub(super) fn publish_ended<T: Transport>(
    session: &Rc<IetfSession<T>>,
    request_id: u64,
    status: u64,
    streams: Option<u64>,
) {
    let path = session
        .publishing
        .published
        .borrow_mut()
        .remove(&request_id);
    if let Some(path) = path {
        session
            .publishing
            .offered
            .borrow_mut()
            .retain(|_, o| o.request_id != request_id);
        release(session, &path);
    }
    done(session, request_id, status, streams);
}

/// The publisher ended upstream `request_id` with PUBLISH_DONE `status`,
/// having opened `streams` subgroup streams for it (`None`: unknown). The
/// PUBLISH_DONE travels apart from those streams and may overtake the end
/// of the last one, so the track ends once that many have ended here (or
/// after [`STREAMS_WAIT`]): ending it at once would cut the last group
/// short (aiomoqt's `data-subgroup-basic` sends PUBLISH_DONE right after
/// its last FIN).
fn done<T: Transport>(
    session: &Rc<IetfSession<T>>,
    request_id: u64,
    status: u64,
    streams: Option<u64>,
) {
    let finish = move |session: &IetfSession<T>| {
        if let Some(upstream) = remove_upstream(session, request_id) {
            debug!(session = session.id, track = %upstream.key, status, "upstream PUBLISH_DONE");
            // Track ended (0x2) is a clean end; anything else ends it with CANCEL.
            let code = (status != 0x2).then_some(StreamCode::CANCEL);
            session
                .shard
                .to_hub(upstream.hub, MediaEvent::track_end(code));
        }
    };
    let upstream = session
        .publishing
        .upstreams
        .borrow()
        .get(&request_id)
        .cloned();
    let waiting = match (&upstream, streams) {
        (Some(upstream), Some(count)) => upstream.streams_ended.get() < count,
        _ => false,
    };
    let (Some(upstream), Some(count), true) = (upstream, streams, waiting) else {
        return finish(session);
    };
    let session2 = session.clone();
    session.spawn(async move {
        let session = session2;
        let drained = poll_fn(|cx| {
            if upstream.streams_ended.get() >= count || upstream.cancelled.is_raised() {
                return Poll::Ready(());
            }
            *upstream.stream_ended.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        });
        let _ = race(
            drained,
            race(monoio::time::sleep(STREAMS_WAIT), session.closed.raised()),
        )
        .await;
        finish(&session);
    });
}

/// How long a PUBLISH_DONE waits for the subgroup streams it counts.
const STREAMS_WAIT: Duration = Duration::from_secs(2);

/// Draft 14's Stream Count for "unknown" (2^62 - 1) and anything above it.
const STREAM_COUNT_UNKNOWN: u64 = (1 << 62) - 1;

/// A PUBLISH_DONE's Stream Count, `None` when the publisher could not count.
pub(super) fn stream_count(count: u64) -> Option<u64> {
    (count < STREAM_COUNT_UNKNOWN).then_some(count)
}

/// Draft 22: a track the peer offered with PUBLISH is forwarded (see
/// `publish22`); otherwise an upstream SUBSCRIBE is a
/// bidi stream of its own, run by
/// [`upstream22`] until PUBLISH_DONE, a refusal, or our cancel (a reset).
fn subscribe_upstream22<T: Transport>(session: &Rc<IetfSession<T>>, key: TrackKey, hub: HubRef) {
    if fed_already(session, &key, hub) {
        return;
    }
    let publishing = &session.publishing;
    let request_id = publishing.next_request_id22();
    debug!(session = session.id, id = request_id, track = %key, "ietf subscribing upstream");
    let upstream = open_upstream(session, request_id, key, hub);
    session.spawn(upstream22(session.clone(), request_id, upstream));
}

async fn upstream22<T: Transport>(
    session: Rc<IetfSession<T>>,
    request_id: u64,
    upstream: Rc<Upstream>,
) {
    use crate::ietf::draft22::{
        self, Decode as _, Encode as _, LocationFilter, MessageParameters, ParamValue,
        RequestMessage,
    };
    let request = draft22::Subscribe {
        request_id,
        namespace: session.namespace_of(&upstream.key.broadcast),
        name: upstream.key.track.clone(),
        parameters: MessageParameters(vec![(
            draft22::param::LOCATION_FILTER,
            ParamValue::Filter(LocationFilter::NextObject),
        )]),
    };
    let limits = session.shard.settings.limits;
    let run = async {
        let (mut send, recv) = session.transport.open_bi().await.map_err(|_| ())?;
        let bytes = request.to_vec().map_err(|_| ())?;
        send.write_chunk(bytes::Bytes::from(bytes))
            .await
            .map_err(|_| ())?;
        let mut replies = Incoming {
            recv,
            buf: BytesMut::new(),
        };
        let outcome = async {
            loop {
                match replies.decode(|b| RequestMessage::decode(b, &limits)).await {
                    Ok(RequestMessage::SubscribeOk(ok)) => {
                        bind_alias(&session, request_id, ok.track_alias)
                    }
                    Ok(RequestMessage::RequestError(e)) => {
                        return refused(&session, request_id, e.code)
                    }
                    Ok(RequestMessage::PublishDone(d)) => {
                        return done(&session, request_id, d.status, stream_count(d.stream_count))
                    }
                    Ok(_) | Err(Some(_)) => {
                        session.shard.stats.sessions_protocol_violations.inc();
                        return session.close(
                            SessionCode::PROTOCOL_VIOLATION,
                            "unexpected reply to SUBSCRIBE",
                        );
                    }
                    // The stream ended without PUBLISH_DONE.
                    Err(None) => return done(&session, request_id, 0x0, None),
                }
            }
        };
        if let Either::Right(()) = race(outcome, upstream.cancelled.raised()).await {
            let _ = send.reset(session.stream_code(STREAM_CANCELLED));
        }
        Ok::<(), ()>(())
    };
    if let Either::Left(Err(())) = race(run, session.closed.raised()).await {
        done(&session, request_id, 0x0, None);
    }
}

/// The peer's uni streams: subgroup streams of our upstream subscriptions.
pub(super) async fn accept_uni<T: Transport>(session: Rc<IetfSession<T>>) {
    loop {
        let accepted = race(session.transport.accept_uni(), session.closed.raised()).await;
        let Either::Left(Ok((recv, leftover))) = accepted else {
            return;
        };
        let session2 = session.clone();
        session.spawn(async move {
            let mut stream = Incoming {
                recv,
                buf: BytesMut::from(&leftover[..]),
            };
            subgroup(&session2, &mut stream).await;
        });
    }
}

/// Read one subgroup stream into its hub's group.
async fn subgroup<T: Transport>(session: &Rc<IetfSession<T>>, stream: &mut Incoming<T::Recv>) {
    let limits = session.shard.settings.limits;
    let header = match stream
        .decode(|b| SubgroupHeader::decode(b, Version::Draft14, &limits))
        .await
    {
        Ok(header) => header,
        Err(Some(e)) => {
            // Not a subgroup stream (a fetch stream we never asked for, or
            // junk): refused alone.
            debug!(session = session.id, error = %e, "unreadable uni stream");
            return stream.stop(session, STREAM_PROTOCOL_VIOLATION);
        }
        Err(None) => return,
    };
    relay_subgroup(session, stream, header).await;
}

/// Relay one subgroup stream whose header was read (in either draft's
/// layout) into its upstream's hub.
pub(super) async fn relay_subgroup<T: Transport>(
    session: &Rc<IetfSession<T>>,
    stream: &mut Incoming<T::Recv>,
    header: SubgroupHeader,
) {
    let Some(upstream) = upstream_for(session, header.track_alias).await else {
        // An alias no SUBSCRIBE_OK named in time (or cancelled): stopped alone.
        session.shard.stats.ietf_streams_unknown_alias.inc();
        return stream.stop(session, STREAM_CANCELLED);
    };
    let mut ingest = match SubgroupIngest::new(&header) {
        Ok(ingest) => ingest,
        Err(e) => {
            debug!(session = session.id, error = %e, "subgroup not relayed");
            return stream.stop(session, STREAM_CANCELLED);
        }
    };
    let hub = upstream.hub;
    let sequence = header.group;
    session.shard.to_hub(hub, MediaEvent::Group { sequence });
    let read = read_objects(session, stream, &header, &mut ingest, hub, sequence);
    let end = match race(read, upstream.cancelled.raised()).await {
        Either::Left(end) => end,
        Either::Right(()) => Err(StreamCode::CANCEL),
    };
    match end {
        Ok(()) => session.shard.to_hub(hub, MediaEvent::GroupEnd { sequence }),
        Err(code) => {
            stream.stop(session, STREAM_CANCELLED);
            session
                .shard
                .to_hub(hub, MediaEvent::GroupReset { sequence, code });
        }
    }
    upstream.streams_ended.set(upstream.streams_ended.get() + 1);
    let waiting = upstream.stream_ended.borrow_mut().take();
    if let Some(waker) = waiting {
        waker.wake();
    }
}

/// How long a subgroup stream may wait for the SUBSCRIBE_OK that names its
/// track alias. Draft 14 lets objects overtake SUBSCRIBE_OK (they travel on
/// other streams; on draft 22 SUBSCRIBE_OK rides the request's own stream),
/// so a stream for an alias not yet known is held, unread,
/// while some SUBSCRIBE awaits its answer. Flow control keeps what it holds
/// to the header, and the peer's uni-stream limit bounds how many wait.
const ALIAS_WAIT: Duration = Duration::from_secs(2);

/// Wakers kept for streams waiting on an alias (see [`upstream_for`]).
const MAX_ALIAS_WAITERS: usize = 1024;

/// The upstream whose SUBSCRIBE_OK named `alias`, waiting up to
/// [`ALIAS_WAIT`] while an answer is outstanding.
async fn upstream_for<T: Transport>(
    session: &Rc<IetfSession<T>>,
    alias: u64,
) -> Option<Rc<Upstream>> {
    let publishing = &session.publishing;
    let learnt = poll_fn(|cx| {
        if let Some(upstream) = publishing.upstream_for_alias(alias) {
            return Poll::Ready(Some(upstream));
        }
        if !publishing.awaiting_alias() || session.closed.is_raised() {
            return Poll::Ready(None);
        }
        let mut waiters = publishing.alias_waiters.borrow_mut();
        // A stream that gave up leaves its waker until the next wake-up; a
        // peer opening streams for aliases it never names must not grow the
        // list without end, so past a bound all are woken and the live ones
        // (at most the uni-stream limit) register again.
        if waiters.len() >= MAX_ALIAS_WAITERS {
            waiters.drain(..).for_each(std::task::Waker::wake);
        }
        waiters.push(cx.waker().clone());
        Poll::Pending
    });
    let waited = race(
        learnt,
        race(monoio::time::sleep(ALIAS_WAIT), session.closed.raised()),
    )
    .await;
    match waited {
        Either::Left(upstream) => upstream,
        Either::Right(_) => None,
    }
}

async fn read_objects<T: Transport>(
    session: &Rc<IetfSession<T>>,
    stream: &mut Incoming<T::Recv>,
    header: &SubgroupHeader,
    ingest: &mut SubgroupIngest,
    hub: HubRef,
    sequence: u64,
) -> Result<(), StreamCode> {
    let settings = &session.shard.settings;
    let mut limits = settings.limits;
    limits.max_frame = settings.max_frame_size;
    let mut frames = 0usize;
    loop {
        match stream.at_end().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(()) => return Err(StreamCode::CANCEL),
        }
        let version = session.version;
        let object = match stream
            .decode(|b| match version {
                Version::Draft14 => SubgroupObject::decode(b, header.extensions, &limits),
                Version::Draft22 => {
                    crate::ietf::draft22::decode_object(b, header.extensions, &limits)
                }
            })
            .await
        {
            Ok(object) => object,
            Err(Some(DecodeError::TooLong { .. })) => {
                session.shard.stats.frames_too_large.inc();
                return Err(StreamCode::FRAME_TOO_LARGE);
            }
            Err(_) => return Err(StreamCode::CANCEL),
        };
        if object
            .extensions
            .as_ref()
            .is_some_and(|e| e.len() > MAX_OBJECT_EXTENSIONS)
        {
            debug!(
                session = session.id,
                "object extensions over the relay's bound"
            );
            session.shard.stats.ietf_extensions_too_large.inc();
            return Err(StreamCode::FRAME_TOO_LARGE);
        }
        match ingest.object(&object) {
            Ok(Step::Frame { payload_len, .. }) => {
                frames += 1;
                if frames > settings.max_frames_per_group {
                    session.shard.stats.groups_too_many_frames.inc();
                    return Err(StreamCode::GROUP_TOO_LARGE);
                }
                let payload = stream
                    .payload(payload_len as usize)
                    .await
                    .map_err(|()| StreamCode::CANCEL)?;
                // A shard that falls behind slows the publisher, not a queue.
                session.shard.mesh_clear().await;
                session.shard.to_hub(
                    hub,
                    MediaEvent::Frame {
                        sequence,
                        timestamp: arrival_ms(),
                        payload,
                        extensions: frame_extensions(object.extensions, version),
                    },
                );
            }
            Ok(Step::EndOfGroup) | Ok(Step::EndOfTrack) => return Ok(()),
            Err(BridgeError::Gap { .. }) | Err(_) => return Err(StreamCode::CANCEL),
        }
    }
}

/// Draft-14 data stream codes (reset / STOP_SENDING).
pub(super) const STREAM_CANCELLED: u32 = 0x1;
const STREAM_PROTOCOL_VIOLATION: u32 = 0x3;
