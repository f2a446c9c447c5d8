//! One IETF moq-transport draft-22 session (ALPN `moqt-22`), serving the
//! relay's tracks and announcements to an IETF subscriber.
//!
//! Draft 22 has no control stream. Each side opens a uni stream that starts
//! with SETUP (later GOAWAY rides it), and every request is a bidi stream of its
//! own, opened by the requester: the request first, then the replies on the
//! other half. So there is no Request ID bookkeeping beyond uniqueness, no
//! MAX_REQUEST_ID (QUIC's stream limit bounds requests), and cancelling a
//! request is resetting its stream.
//!
//! Tasks, all on the connection's shard: the SETUP writer, the uni acceptor
//! (the peer's SETUP stream, padding), the bidi acceptor, and one task per
//! request stream. A subscription follows the track replica exactly as on
//! draft 14 ([`serve_track`]), each group one subgroup stream in draft-22 layout.
//!
//! Served: SUBSCRIBE (every LOCATION_FILTER, FORWARD, and REQUEST_UPDATE on
//! its stream), SUBSCRIBE_NAMESPACE, and PUBLISH_NAMESPACE, whose tracks the
//! relay then subscribes to upstream on streams of its own
//! ([`super::ingest`]) and reads from the publisher's subgroup streams, and
//! FETCH and SUBSCRIBE's FILL ([`super::fetch`]), and PUBLISH
//! ([`super::publish22`]). Refused with REQUEST_ERROR NOT_SUPPORTED:
//! TRACK_STATUS and SUBSCRIBE_TRACKS. A malformed or
//! unexpected message closes this session
//! with PROTOCOL_VIOLATION.

use std::future::poll_fn;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tracing::debug;

use super::authorize::REQUEST_UNAUTHORIZED as UNAUTHORIZED;
use super::bridge::path_to_namespace;
use super::control::Violation;
use super::reply22::{refuse, write};
use super::session::{
    open_subscription, serve_track, subscribed_track, Opened, Served, TrackRefusal,
};
use super::state::{IetfSession, Incoming, Subscription};
use super::window::{InvalidRange, Window};
use crate::ietf::draft22::{
    self, request_type, Decode, Encode, MessageParameters, Namespace, NamespaceDone, Publish,
    PublishDone, PublishNamespace, RequestError, RequestOk, RequestUpdate, Setup, Subscribe,
    SubscribeNamespace, SubscribeOk, PADDING_STREAM_TYPE, SETUP_TYPE,
};
use crate::ietf::{DecodeError, Limits, Location, Parameters, SessionCode, Version};
use crate::origin::{AnnounceEvent, Heard};
use crate::session::transport::{RecvStream, SendStream, Transport};
use crate::shard::Shard;
use crate::task::{race, Either};
use crate::track::TrackReplica;

/// REQUEST_ERROR codes (draft 22's request error table; draft 15 moved
/// DOES_NOT_EXIST from 0x4, now MALFORMED_AUTH_TOKEN, to 0x10).
const TIMEOUT: u64 = 0x2;
const NOT_SUPPORTED: u64 = 0x3;
const DOES_NOT_EXIST: u64 = 0x10;
const INVALID_RANGE: u64 = 0x11;

/// The longest RENDEZVOUS_TIMEOUT honoured: a subscription waiting for its
/// publisher holds a request stream, which QUIC's stream limit bounds, but
/// not for longer than this.
const MAX_RENDEZVOUS: Duration = Duration::from_secs(30);

/// PUBLISH_DONE status codes.
const DONE_INTERNAL_ERROR: u64 = 0x0;
const DONE_TRACK_ENDED: u64 = 0x2;
const DONE_UPDATE_FAILED: u64 = 0x8;

/// Stream reset codes: CANCELLED, PROTOCOL_VIOLATION.
const STREAM_CANCELLED: u32 = 0x1;
const STREAM_PROTOCOL_VIOLATION: u32 = 0x3;

/// Run an accepted draft-22 session until the peer leaves or it is closed.
pub async fn run<T: Transport>(shard: Rc<Shard>, transport: T) {
    let Some((session, registered)) =
        super::session::open(shard, transport, Version::Draft22, false)
    else {
        return;
    };
    session.spawn(super::ingest::commands(
        session.clone(),
        registered.1.clone(),
    ));
    session.spawn(send_setup(session.clone()));
    session.spawn(accept_uni(session.clone()));
    session.spawn(accept_requests(session.clone()));
    session.spawn(super::datagram::receive(session.clone()));
    session.run_until_closed().await;
}

fn protocol_violation(reason: &'static str) -> Violation {
    Violation {
        code: SessionCode::PROTOCOL_VIOLATION,
        reason,
    }
}

/// Our SETUP stream: SETUP with no options, then held open for GOAWAY.
async fn send_setup<T: Transport>(session: Rc<IetfSession<T>>) {
    let opened = race(session.transport.open_uni(), session.closed.raised()).await;
    let Either::Left(Ok(mut stream)) = opened else {
        return;
    };
    let Ok(setup) = Setup::default().to_vec() else {
        return;
    };
    if stream.write_chunk(Bytes::from(setup)).await.is_err() {
        return session.closed.raise();
    }
    // At the relay's shutdown, GOAWAY with no new URI (reconnect to the
    // same one) before the runtime closes the connection; the timeout is
    // not promised (0).
    let shutdown = session.shard.clone();
    if let Either::Right(()) = race(session.closed.raised(), shutdown.shutdown_started()).await {
        let goaway = draft22::Goaway {
            new_session_uri: String::new(),
            timeout: 0,
        };
        if let Ok(bytes) = goaway.to_vec() {
            let _ = stream.write_chunk(Bytes::from(bytes)).await;
            debug!(session = session.id, "sent GOAWAY");
        }
        session.closed.raised().await;
    }
}

/// The peer's uni streams: its SETUP stream, padding, and the subgroup streams
/// of our upstream subscriptions.
async fn accept_uni<T: Transport>(session: Rc<IetfSession<T>>) {
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
            uni_stream(&session2, &mut stream).await;
        });
    }
}

async fn uni_stream<T: Transport>(session: &Rc<IetfSession<T>>, stream: &mut Incoming<T::Recv>) {
    let limits = session.shard.settings.limits;
    // Peeked, not consumed: the message decoders below read the type again.
    let ty = match stream
        .decode(|b| draft22::peek_type(b).map(|ty| (ty, 0)))
        .await
    {
        Ok(ty) => ty,
        Err(_) => return,
    };
    match ty {
        SETUP_TYPE => {
            let setup = match stream.decode(|b| Setup::decode(b, &limits)).await {
                Ok(setup) => setup,
                Err(Some(e)) => {
                    debug!(session = session.id, error = %e, "malformed SETUP");
                    return session.violation(protocol_violation("malformed SETUP"));
                }
                Err(None) => return,
            };
            if session.set_up.is_raised() {
                return session.violation(protocol_violation("second SETUP stream"));
            }
            // On WebTransport the CONNECT URL names the path; on raw QUIC the
            // PATH option (not UTF-8: no path, so only public prefixes).
            let path = setup
                .parameters
                .bytes(crate::ietf::PARAM_PATH)
                .and_then(|p| std::str::from_utf8(p).ok());
            if !super::authorize::admit(session, path, &setup.parameters) {
                return;
            }
            session.set_up.raise();
            debug!(
                session = session.id,
                options = setup.parameters.0.len(),
                "draft-22 setup received"
            );
            // Only GOAWAY may follow, and a client has no GOAWAY to send.
            match stream.decode(|b| draft22::skip_message(b, &limits)).await {
                Err(None) => {}
                Ok(_) | Err(Some(_)) => {
                    session.violation(protocol_violation("unexpected message on SETUP stream"))
                }
            }
        }
        PADDING_STREAM_TYPE => while let Ok(true) = stream.discard().await {},
        ty if draft22::SubgroupHeader::is_subgroup_type(ty) => {
            let header = match stream
                .decode(|b| draft22::SubgroupHeader::decode(b, &limits))
                .await
            {
                Ok(header) => header,
                Err(_) => return stream.stop(session, STREAM_PROTOCOL_VIOLATION),
            };
            // A subgroup that starts past its first object has a hole at the
            // front, which a relay group cannot hold: refused alone.
            if !header.first_object {
                debug!(
                    session = session.id,
                    "draft-22 subgroup without its first object"
                );
                return stream.stop(session, STREAM_CANCELLED);
            }
            let header = crate::ietf::SubgroupHeader {
                track_alias: header.track_alias,
                group: header.group,
                subgroup: header.subgroup,
                // Not relayed: lite groups take the subscription's priority.
                publisher_priority: header.publisher_priority.unwrap_or(128),
                extensions: header.extensions,
                end_of_group: header.end_of_group,
            };
            super::ingest::relay_subgroup(session, stream, header).await;
        }
        _ => session.violation(protocol_violation("unknown uni stream type")),
    }
}

async fn accept_requests<T: Transport>(session: Rc<IetfSession<T>>) {
    loop {
        let accepted = race(session.transport.accept_bi(), session.closed.raised()).await;
        let Either::Left(Ok((send, recv, leftover))) = accepted else {
            return;
        };
        let session2 = session.clone();
        session.spawn(async move {
            let incoming = Incoming {
                recv,
                buf: BytesMut::from(&leftover[..]),
            };
            request(session2, send, incoming).await;
        });
    }
}

/// The first message of a request stream, as far as this relay serves it.
enum Request {
    Subscribe(Subscribe),
    SubscribeNamespace(SubscribeNamespace),
    PublishNamespace(PublishNamespace),
    Publish(Publish),
    Fetch(draft22::Fetch),
    /// A request this relay does not serve yet; its body was skipped.
    NotServed(u64),
}

fn first_message(buf: &[u8], limits: &Limits) -> Result<(Request, usize), DecodeError> {
    match draft22::peek_type(buf)? {
        request_type::SUBSCRIBE => {
            Subscribe::decode(buf, limits).map(|(m, n)| (Request::Subscribe(m), n))
        }
        request_type::SUBSCRIBE_NAMESPACE => SubscribeNamespace::decode(buf, limits)
            .map(|(m, n)| (Request::SubscribeNamespace(m), n)),
        request_type::PUBLISH_NAMESPACE => {
            PublishNamespace::decode(buf, limits).map(|(m, n)| (Request::PublishNamespace(m), n))
        }
        request_type::PUBLISH => {
            Publish::decode(buf, limits).map(|(m, n)| (Request::Publish(m), n))
        }
        request_type::FETCH => {
            draft22::Fetch::decode(buf, limits).map(|(m, n)| (Request::Fetch(m), n))
        }
        request_type::TRACK_STATUS | request_type::SUBSCRIBE_TRACKS => {
            draft22::skip_message(buf, limits).map(|(ty, n)| (Request::NotServed(ty), n))
        }
        ty => Err(DecodeError::UnknownType {
            what: "draft-22 request",
            ty,
        }),
    }
}

async fn request<T: Transport>(
    session: Rc<IetfSession<T>>,
    mut send: T::Send,
    mut incoming: Incoming<T::Recv>,
) {
    // A request stream may overtake the SETUP stream: it waits for the
    // SETUP, whose authorisation decides what it may do.
    if let Either::Right(()) = race(session.set_up.raised(), session.closed.raised()).await {
        return;
    }
    let limits = session.shard.settings.limits;
    let first = match incoming.decode(|b| first_message(b, &limits)).await {
        Ok(first) => first,
        Err(Some(e)) => {
            debug!(session = session.id, error = %e, "malformed request");
            return session.violation(protocol_violation("malformed request"));
        }
        // The peer gave the request up before sending it.
        Err(None) => return,
    };
    match first {
        Request::Subscribe(m) => subscribe(session, m, send, incoming).await,
        Request::SubscribeNamespace(m) => subscribe_namespace(session, m, send, incoming).await,
        Request::PublishNamespace(m) => publish_namespace(session, m, send, incoming).await,
        Request::Publish(m) => super::publish22::serve(session, m, send, incoming).await,
        Request::Fetch(m) => {
            // The requester resetting its half cancels the fetch.
            let watch = async {
                if let Follow::Cancelled = follow(&session, &mut incoming).await {
                    return;
                }
                std::future::pending::<()>().await
            };
            super::fetch::fetch22(&session, m, &mut send, watch).await
        }
        Request::NotServed(ty) => {
            debug!(session = session.id, ty, "draft-22 request not served");
            refuse(&mut send, NOT_SUPPORTED, "not supported").await;
        }
    }
}

/// What the subscriber's half of a request stream did after the request.
enum Follow {
    /// It ended (FIN): on draft 22 that ends its updates, not the request.
    Finished,
    /// It was reset, or our session or request ended: stop.
    Cancelled,
}

/// Watch the requester's half after the request: REQUEST_UPDATE is read and
/// ignored (priorities and filters stay as subscribed), anything else is a
/// violation.
async fn follow<T: Transport>(
    session: &IetfSession<T>,
    incoming: &mut Incoming<T::Recv>,
) -> Follow {
    let limits = session.shard.settings.limits;
    loop {
        match draft22::skip_message(&incoming.buf, &limits) {
            Ok((request_type::REQUEST_UPDATE, used)) => {
                let _ = incoming.buf.split_to(used);
                debug!(session = session.id, "draft-22 REQUEST_UPDATE ignored");
            }
            Ok(_) | Err(DecodeError::UnknownType { .. } | DecodeError::TooLong { .. }) => {
                session.violation(protocol_violation("unexpected message on a request stream"));
                return Follow::Cancelled;
            }
            Err(_) => match incoming.fill().await {
                Ok(true) => {}
                Ok(false) => return Follow::Finished,
                Err(()) => return Follow::Cancelled,
            },
        }
    }
}

async fn subscribe<T: Transport>(
    session: Rc<IetfSession<T>>,
    request: Subscribe,
    mut send: T::Send,
    mut incoming: Incoming<T::Recv>,
) {
    let id = request.request_id;
    if session.subscriptions.borrow().contains_key(&id) {
        return session.violation(Violation {
            code: SessionCode::INVALID_REQUEST_ID,
            reason: "request id reused",
        });
    }
    if session.requests_open() >= session.shard.settings.max_subscriptions_per_session {
        session.shard.stats.subscriptions_refused_limit.inc();
        return refuse(&mut send, NOT_SUPPORTED, "subscription limit").await;
    }
    let key = match subscribed_track(&session, &request.namespace, &request.name) {
        Ok(key) => key,
        Err(TrackRefusal::Unauthorized) => {
            return refuse(&mut send, UNAUTHORIZED, "unauthorized").await
        }
        Err(TrackRefusal::DoesNotExist) => {
            // RENDEZVOUS_TIMEOUT (draft 18 on): wait that long for a publisher.
            let Some(wait) = request.parameters.rendezvous_timeout() else {
                return refuse(&mut send, DOES_NOT_EXIST, "track does not exist").await;
            };
            let (_, broadcast) = session.broadcast_of(&request.namespace);
            // Waiting, it counts against `max_subscriptions_per_session`
            // like a SUBSCRIBE waiting for its replica.
            let slot = session.hold_opening(id);
            let found = rendezvous(&session, &broadcast, wait).await;
            drop(slot);
            if !found {
                let reason = "no publisher within the rendezvous timeout";
                return refuse(&mut send, TIMEOUT, reason).await;
            }
            match subscribed_track(&session, &request.namespace, &request.name) {
                Ok(key) => key,
                Err(_) => return refuse(&mut send, DOES_NOT_EXIST, "track does not exist").await,
            }
        }
    };
    debug!(session = session.id, id, track = %key, "draft-22 subscribe");
    let filter = request.parameters.filter();
    let opened = open_subscription(
        &session,
        id,
        &key,
        request.parameters.subscriber_priority(),
        request.parameters.forward(),
        |largest| Window::draft22(filter, largest),
    )
    .await;
    let Opened {
        sub,
        replica,
        largest,
        first,
    } = match opened {
        Ok(opened) => opened,
        Err(InvalidRange(reason)) => return refuse(&mut send, INVALID_RANGE, reason).await,
    };
    let ok = SubscribeOk {
        track_alias: sub.track_alias,
        parameters: largest_parameter(largest),
        properties: Parameters::default(),
    };
    let served = match write(&mut send, &ok).await {
        false => Served::Cancelled,
        true => {
            match request.parameters.fill() {
                Some(Ok(fill)) => super::fetch::fill22(
                    &session,
                    &sub,
                    &replica,
                    &fill,
                    request.parameters.filter(),
                    request.parameters.subscriber_priority(),
                ),
                Some(Err(e)) => {
                    debug!(session = session.id, error = %e, "malformed FILL");
                    session.violation(protocol_violation("malformed FILL"));
                }
                None => {}
            }
            // The subscriber resetting its half cancels the subscription;
            // its REQUEST_UPDATEs change it in place.
            let watch = watch_subscription(&session, &mut incoming, &mut send, &sub, &replica);
            match race(serve_track(&session, &sub, &replica, first), watch).await {
                Either::Left(served) => served,
                Either::Right(watched) => watched,
            }
        }
    };
    let status = match served {
        // Draft 22 keeps a subscription open past its range, so only the
        // track's end (or a failed update) ends it from this side.
        Served::Ended(None) | Served::RangeOver => Some((DONE_TRACK_ENDED, "track ended")),
        Served::Ended(Some(_)) => Some((DONE_INTERNAL_ERROR, "track reset upstream")),
        Served::UpdateFailed => Some((DONE_UPDATE_FAILED, "update failed")),
        Served::Cancelled => None,
    };
    match status {
        Some((status, reason)) => {
            // Stream Count tells the subscriber how many streams to wait for.
            let done = PublishDone {
                status,
                stream_count: sub.streams.get(),
                reason: reason.into(),
            };
            if write(&mut send, &done).await {
                let _ = send.finish();
            }
        }
        None => {
            let _ = send.reset(session.stream_code(STREAM_CANCELLED));
        }
    }
    sub.cancelled.raise();
    session.subscriptions.borrow_mut().remove(&id);
    session.shard.stats.subscriptions_open.dec();
    if replica.remove_subscriber() == 0 {
        session.shard.release_local(&key, &replica);
    }
    debug!(session = session.id, id, "draft-22 subscription over");
}

/// Wait up to `wait` (at most [`MAX_RENDEZVOUS`]) for `broadcast` to be
/// announced; whether it was.
async fn rendezvous<T: Transport>(
    session: &IetfSession<T>,
    broadcast: &str,
    wait: Duration,
) -> bool {
    let shard = &session.shard;
    let (listener_id, listener) = shard.listen(broadcast, session.session_ref());
    // Every change from now on, none of the table as it was (checked below).
    listener.paged(None, true);
    let announced = async {
        while shard.publisher_of(broadcast).is_none() {
            poll_fn(|cx| listener.poll_ready(cx)).await;
            while let Some(heard) = listener.try_next() {
                if let Heard::Overflowed = heard {
                    // Changes were lost (and always will be now): look
                    // at the table itself now and then instead.
                    monoio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
            }
        }
    };
    let found = race(
        announced,
        race(
            monoio::time::sleep(wait.min(MAX_RENDEZVOUS)),
            session.closed.raised(),
        ),
    )
    .await;
    shard.unlisten(listener_id);
    matches!(found, Either::Left(()))
}

/// LARGEST_OBJECT, when the track has content.
fn largest_parameter(largest: Option<Location>) -> MessageParameters {
    MessageParameters(
        largest
            .map(|l| {
                (
                    draft22::param::LARGEST_OBJECT,
                    draft22::ParamValue::Location(l),
                )
            })
            .into_iter()
            .collect(),
    )
}

/// The subscriber's half of a subscription's stream after the SUBSCRIBE:
/// each REQUEST_UPDATE is applied in place and answered (REQUEST_OK with
/// LARGEST_OBJECT) before the next is read, so a peer's updates are held
/// back by the stream, not queued. Returns when the subscriber resets its
/// half ([`Served::Cancelled`]) or an update cannot be applied (REQUEST_ERROR
/// sent, [`Served::UpdateFailed`]); anything but REQUEST_UPDATE is a
/// violation. FIN ends the updates, not the subscription (draft 19 on).
async fn watch_subscription<T: Transport>(
    session: &IetfSession<T>,
    incoming: &mut Incoming<T::Recv>,
    send: &mut T::Send,
    sub: &Subscription,
    replica: &TrackReplica,
) -> Served {
    let limits = session.shard.settings.limits;
    loop {
        let update = match RequestUpdate::decode(&incoming.buf, &limits) {
            Ok((update, used)) => {
                let _ = incoming.buf.split_to(used);
                update
            }
            Err(DecodeError::Short) => match incoming.fill().await {
                Ok(true) => continue,
                Ok(false) => return std::future::pending().await,
                Err(()) => return Served::Cancelled,
            },
            Err(e) => {
                debug!(session = session.id, error = %e, "bad message on a subscription stream");
                session.violation(protocol_violation("unexpected message on a request stream"));
                return Served::Cancelled;
            }
        };
        match apply_update(sub, &update.parameters) {
            Ok(()) => {
                let largest = replica.group_after(None).map(|g| Location {
                    group: g.sequence,
                    object: (g.frame_count() as u64).saturating_sub(1),
                });
                let ok = RequestOk {
                    parameters: largest_parameter(largest),
                };
                if !write(send, &ok).await {
                    return Served::Cancelled;
                }
            }
            Err((code, reason)) => {
                debug!(
                    session = session.id,
                    id = sub.request_id,
                    reason,
                    "REQUEST_UPDATE refused"
                );
                let error = RequestError {
                    code,
                    retry_interval: 0,
                    reason: reason.into(),
                };
                if !write(send, &error).await {
                    return Served::Cancelled;
                }
                return Served::UpdateFailed;
            }
        }
    }
}

/// Apply a REQUEST_UPDATE's parameters to a subscription, all or none: the
/// FORWARD state, SUBSCRIBER_PRIORITY (which open streams take too) and
/// LOCATION_FILTER. Any other parameter is not served: NOT_SUPPORTED.
fn apply_update(
    sub: &Subscription,
    parameters: &MessageParameters,
) -> Result<(), (u64, &'static str)> {
    let mut window = sub.window.get();
    let mut forward = sub.forward.get();
    let mut priority = sub.priority.get();
    for (key, value) in &parameters.0 {
        match (*key, value) {
            (draft22::param::FORWARD, draft22::ParamValue::Bool(f)) => forward = *f,
            (draft22::param::SUBSCRIBER_PRIORITY, draft22::ParamValue::Byte(p)) => {
                priority = super::bridge::lite_priority(*p)
            }
            (draft22::param::LOCATION_FILTER, draft22::ParamValue::Filter(f)) => {
                window = window
                    .updated(*f)
                    .map_err(|InvalidRange(reason)| (INVALID_RANGE, reason))?;
            }
            _ => return Err((NOT_SUPPORTED, "REQUEST_UPDATE parameter not supported")),
        }
    }
    sub.window.set(window);
    sub.forward.set(forward);
    sub.priority.set(priority);
    sub.wake();
    Ok(())
}

/// PUBLISH_NAMESPACE: into the announce table with REQUEST_OK (REQUEST_ERROR
/// when refused), withdrawn when the publisher resets the stream or the
/// session ends; FIN only ends its updates.
async fn publish_namespace<T: Transport>(
    session: Rc<IetfSession<T>>,
    request: PublishNamespace,
    mut send: T::Send,
    mut incoming: Incoming<T::Recv>,
) {
    match super::ingest::announce(&session, &request.namespace) {
        Ok(()) => {}
        Err(super::ingest::Refused::Unauthorized) => {
            return refuse(&mut send, UNAUTHORIZED, "unauthorized").await
        }
        Err(super::ingest::Refused::Limit) => {
            return refuse(&mut send, NOT_SUPPORTED, "namespace refused").await
        }
    }
    if !write(&mut send, &RequestOk::default()).await {
        return super::ingest::withdraw(&session, &request.namespace);
    }
    let watch = async {
        if let Follow::Cancelled = follow(&session, &mut incoming).await {
            return;
        }
        std::future::pending::<()>().await
    };
    if let Either::Left(()) = race(watch, session.closed.raised()).await {
        super::ingest::withdraw(&session, &request.namespace);
        let _ = send.reset(session.stream_code(STREAM_CANCELLED));
    }
}

/// SUBSCRIBE_NAMESPACE: REQUEST_OK, then NAMESPACE for every active broadcast
/// under the prefix and every one that starts later, NAMESPACE_DONE for every
/// one that ends, until the subscriber resets the stream or the session ends.
async fn subscribe_namespace<T: Transport>(
    session: Rc<IetfSession<T>>,
    request: SubscribeNamespace,
    mut send: T::Send,
    mut incoming: Incoming<T::Recv>,
) {
    let settings = &session.shard.settings;
    let (relative, prefix) = session.broadcast_of(&request.prefix);
    let open = session.namespace_listeners.get();
    if prefix.len() > settings.max_announce_prefix_len
        || open >= settings.max_announce_requests_per_session
    {
        session.shard.stats.announce_requests_refused_limit.inc();
        return refuse(&mut send, NOT_SUPPORTED, "namespace subscription limit").await;
    }
    let Some(scope) = super::authorize::namespace_scope(&session, &relative) else {
        return refuse(&mut send, UNAUTHORIZED, "unauthorized").await;
    };
    if !write(&mut send, &RequestOk::default()).await {
        return;
    }
    session.namespace_listeners.set(open + 1);
    let me = session.session_ref();
    let (listener_id, listener) = session.shard.listen(&prefix, me);
    let serve = async {
        let tell = |event: &AnnounceEvent, out: &mut BytesMut| {
            if !scope.covers(&event.suffix) {
                return;
            }
            let suffix = path_to_namespace(&event.suffix);
            let written = match event.active {
                true => Namespace { suffix }.encode(out),
                false => NamespaceDone { suffix }.encode(out),
            };
            if let Err(e) = written {
                tracing::warn!(error = %e, "cannot encode NAMESPACE");
            }
        };
        let mut cursor: Option<String> = None;
        let mut paging = true;
        loop {
            let mut out = BytesMut::new();
            while let Some(heard) = listener.try_next() {
                match heard {
                    Heard::Overflowed => {
                        debug!(session = session.id, %prefix, "namespace backlog overflowed");
                        session.shard.stats.announce_backlog_overflows.inc();
                        return;
                    }
                    Heard::Change(event) => tell(&event, &mut out),
                }
            }
            if paging {
                let page = session
                    .shard
                    .announced_page(&prefix, me, cursor.as_deref(), 256);
                for event in &page.events {
                    tell(event, &mut out);
                }
                cursor = page.cursor.or(cursor);
                paging = !page.done;
                listener.paged(cursor.as_deref(), page.done);
            }
            if !out.is_empty() && send.write_chunk(out.freeze()).await.is_err() {
                return;
            }
            if paging {
                qumo_shards::yield_now().await;
                continue;
            }
            poll_fn(|cx| listener.poll_ready(cx)).await;
        }
    };
    let watch = async {
        if let Follow::Cancelled = follow(&session, &mut incoming).await {
            return;
        }
        std::future::pending::<()>().await
    };
    match race(race(serve, watch), session.closed.raised()).await {
        Either::Left(_) => {
            let _ = send.reset(session.stream_code(STREAM_CANCELLED));
        }
        Either::Right(()) => {}
    }
    session.shard.unlisten(listener_id);
    session
        .namespace_listeners
        .set(session.namespace_listeners.get() - 1);
}

impl<R: RecvStream> Incoming<R> {
    /// Drop what is buffered and read more; `Ok(false)` at the end.
    async fn discard(&mut self) -> Result<bool, ()> {
        self.buf.clear();
        self.fill().await
    }
}
