//! The peer as a subscriber: its ANNOUNCE_REQUEST, SUBSCRIBE, TRACK, PROBE,
//! GOAWAY and FETCH streams, answered from the shard's announce table and
//! track replicas.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use tracing::debug;

use super::reader::StreamReader;
use super::state::{Session, TrackHold};
use super::subscription::Subscription;
use super::tail;
use super::transport::{SendStream, Transport};
use super::writer::write_group;
use crate::auth::{AnnounceScope, Refusal};
use crate::lite::{
    Announce, AnnounceOk, AnnounceRequest, BidiType, Cost, DatagramHeader, Encode, StreamCode,
    Subscribe, SubscribeOk, SubscribeReply, SubscribeUpdate, TrackInfo, TrackRequest, MAX_HOPS,
};
use crate::message::{TrackKey, TrackName};
use crate::origin::{AnnounceEvent, Heard, Listener};
use crate::task::{race, Either, Signal};
use crate::track::{Datagram, Group, TrackReplica, TrackState};

/// How long a TRACK request waits for the publisher's properties.
const TRACK_INFO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the upstream subscription a TRACK request made is kept for the
/// SUBSCRIBE that normally follows.
const TRACK_HOLD: Duration = Duration::from_secs(2);

pub async fn bidi<T: Transport>(
    session: Rc<Session<T>>,
    kind: BidiType,
    send: T::Send,
    reader: StreamReader<T::Recv>,
) {
    // Boxed: a stream's task lives as long as its subscription, and inline
    // it would be as large as the largest of these handlers whichever it
    // runs (~11 KB per stream, per subscriber, measured with heaptrack).
    match kind {
        BidiType::Announce => Box::pin(announce(session, send, reader)).await,
        BidiType::Subscribe => Box::pin(subscribe(session, send, reader)).await,
        BidiType::Track => Box::pin(track(session, send, reader)).await,
        BidiType::Probe => Box::pin(super::probe::probe(session, send, reader)).await,
        BidiType::Goaway => {
            let mut reader = reader;
            debug!(session = session.id.id, "peer sent GOAWAY");
            // Its message needs no answer from us: read to the end.
            let _ = race(reader.discard_to_end(), session.closed.raised()).await;
            drop(send);
        }
        BidiType::Fetch => Box::pin(super::fetch::fetch(session, send, reader)).await,
    }
}

/// Broadcasts per page of the initial announce table: one page is encoded
/// and written (waiting for the peer's flow control), then other tasks of
/// the shard get a turn.
const ANNOUNCE_PAGE: usize = 256;

/// The peer asks which broadcasts exist under a prefix.
async fn announce<T: Transport>(
    session: Rc<Session<T>>,
    mut send: T::Send,
    mut reader: StreamReader<T::Recv>,
) {
    let request = match reader.expect::<AnnounceRequest>().await {
        Ok(request) => request,
        Err(e) => return session.violation("ANNOUNCE_REQUEST", &e),
    };
    let settings = &session.shard.settings;
    if request.prefix.len() > settings.max_announce_prefix_len {
        debug!(
            session = session.id.id,
            len = request.prefix.len(),
            "announce prefix too long"
        );
        session.shard.stats.announce_prefix_refused.inc();
        session.reset(&mut send, StreamCode::NO_CAPACITY);
        return session.stop(&mut reader, StreamCode::NO_CAPACITY);
    }
    if session.announce_requests.get() >= settings.max_announce_requests_per_session {
        debug!(session = session.id.id, "announce request limit reached");
        session.shard.stats.announce_requests_refused_limit.inc();
        session.reset(&mut send, StreamCode::NO_CAPACITY);
        return session.stop(&mut reader, StreamCode::NO_CAPACITY);
    }
    session
        .announce_requests
        .set(session.announce_requests.get() + 1);
    let prefix = session.absolute(&request.prefix);
    let scope = session.grant().announce_scope(&request.prefix);
    if scope == AnnounceScope::Nothing {
        // An empty set, the stream held open, as moq-net answers a prefix
        // outside its scope: no listener, nothing queued.
        session.refused(Refusal::AnnounceRequest, &request.prefix);
        if session.version.has_announce_ok() {
            let ok = AnnounceOk {
                hop: session.shard.hop,
                active: 0,
            };
            let _ = send.write_chunk(session.encode(&[&ok])).await;
        }
        let _ = race(reader.discard_to_end(), session.closed.raised()).await;
        session
            .announce_requests
            .set(session.announce_requests.get() - 1);
        let _ = send.finish();
        return;
    }
    let (listener_id, listener) = session.shard.listen(&prefix, session.id);
    let outcome = race(
        serve_announcements(&session, &prefix, &scope, &listener, &mut send, &mut reader),
        session.closed.raised(),
    )
    .await;
    session.shard.unlisten(listener_id);
    session
        .announce_requests
        .set(session.announce_requests.get() - 1);
    match outcome {
        Either::Left(Ok(AnnounceEnd::Overflowed)) => {
            debug!(session = session.id.id, %prefix, "announce backlog overflowed; stream reset");
            session.shard.stats.announce_backlog_overflows.inc();
            session.reset(&mut send, StreamCode::NO_CAPACITY);
            session.stop(&mut reader, StreamCode::NO_CAPACITY);
        }
        _ => {
            let _ = send.finish();
        }
    }
}

enum AnnounceEnd {
    /// The peer closed its side (or sent junk after the request).
    PeerDone,
    /// The peer fell `max_announce_backlog` changes behind.
    Overflowed,
}

/// ANNOUNCE_OK (lite-05+), the active broadcasts page by page, then every
/// change as it happens. While the table is still being paged, the
/// listener queues only changes to suffixes already paged (see
/// `Listener::paged`): the rest are read from the table itself when their
/// page comes, so each broadcast is told once, in its state at that moment.
async fn serve_announcements<T: Transport>(
    session: &Rc<Session<T>>,
    prefix: &str,
    scope: &AnnounceScope,
    listener: &Listener,
    send: &mut T::Send,
    reader: &mut StreamReader<T::Recv>,
) -> Result<AnnounceEnd, qumo_shards::WriteError> {
    let version = session.version;
    let own_hop = session.shard.hop;
    // Lite-06 names an announcement by the order of its START.
    let mut ids: HashMap<String, u64> = HashMap::new();
    let mut next_id = 0u64;
    let mut to_wire = |event: &AnnounceEvent| -> Option<Announce> {
        if !scope.covers(&event.suffix) {
            return None;
        }
        let mut hops: Vec<u64> = event.hops.to_vec();
        if !version.has_announce_ok() {
            // Lite-04 receivers expect the sender on the chain; 05+ add it
            // themselves from ANNOUNCE_OK.
            hops.push(own_hop);
        }
        if hops.len() > MAX_HOPS {
            return None;
        }
        let suffix = event.suffix.clone();
        Some(match (version.has_announce_id(), event.active) {
            (false, true) => Announce::Active { suffix, hops },
            (false, false) => Announce::Ended { suffix, hops },
            (true, true) => {
                ids.insert(suffix.clone(), next_id);
                next_id += 1;
                Announce::Start {
                    suffix,
                    hops,
                    cost: Cost::default(),
                }
            }
            (true, false) => Announce::End {
                id: ids.remove(&suffix)?,
            },
        })
    };

    let mut out = Vec::new();
    if version.has_announce_ok() {
        // Where the initial set ends; moq-net reads and drops it. Changes
        // while paging can make the pages differ from it by a few.
        let active = match scope {
            AnnounceScope::Within(within) => within
                .iter()
                .map(|w| {
                    let under = crate::origin::join(prefix, w);
                    session.shard.count_announced(&under, session.id)
                })
                .sum(),
            _ => session.shard.count_announced(prefix, session.id),
        };
        AnnounceOk {
            hop: own_hop,
            active: active as u64,
        }
        .encode(&mut out, version)
        .ok();
    }
    let mut cursor: Option<String> = None;
    let mut paging = true;
    loop {
        // The queued changes (all to suffixes already paged), then the next
        // page and the listener told how far it reaches, with no await in
        // between, so no change falls between the two.
        while let Some(heard) = listener.try_next() {
            let event = match heard {
                Heard::Overflowed => return Ok(AnnounceEnd::Overflowed),
                Heard::Change(event) => event,
            };
            if let Some(msg) = to_wire(&event) {
                msg.encode(&mut out, version).ok();
            }
        }
        if paging {
            let page =
                session
                    .shard
                    .announced_page(prefix, session.id, cursor.as_deref(), ANNOUNCE_PAGE);
            for event in &page.events {
                if let Some(msg) = to_wire(event) {
                    msg.encode(&mut out, version).ok();
                }
            }
            cursor = page.cursor.or(cursor);
            paging = !page.done;
            listener.paged(cursor.as_deref(), page.done);
        }
        if !out.is_empty() {
            // A peer that stops reading blocks this write; its backlog
            // overflowing must still end the stream.
            let write = send.write_all(&out);
            let overflowed = poll_fn(|cx| listener.poll_overflowed(cx));
            match race(write, race(reader.at_end(), overflowed)).await {
                Either::Left(result) => result?,
                Either::Right(Either::Left(_)) => return Ok(AnnounceEnd::PeerDone),
                Either::Right(Either::Right(())) => return Ok(AnnounceEnd::Overflowed),
            }
            out.clear();
        }
        if paging {
            qumo_shards::yield_now().await;
            continue;
        }
        let next = race(poll_fn(|cx| listener.poll_ready(cx)), reader.at_end()).await;
        if let Either::Right(_) = next {
            return Ok(AnnounceEnd::PeerDone);
        }
    }
}

/// The peer subscribes to a track.
async fn subscribe<T: Transport>(
    session: Rc<Session<T>>,
    mut send: T::Send,
    mut reader: StreamReader<T::Recv>,
) {
    let request = match reader.expect::<Subscribe>().await {
        Ok(request) => request,
        Err(e) => return session.violation("SUBSCRIBE", &e),
    };
    // NOT_FOUND, as moq-relay answers outside a token's get: whether the
    // broadcast exists is not told.
    if !session.grant().may_subscribe(&request.broadcast) {
        session.refused(Refusal::Subscribe, &request.broadcast);
        session.reset(&mut send, StreamCode::NOT_FOUND);
        return session.stop(&mut reader, StreamCode::NOT_FOUND);
    }
    let key: TrackKey = Arc::new(TrackName {
        broadcast: session.absolute(&request.broadcast),
        track: request.track.clone(),
    });
    // The TRACK request this SUBSCRIBE follows passes on its slot.
    if !take_track_hold(&session, &key) && !session.take_subscription_slot() {
        session.reset(&mut send, StreamCode::NO_CAPACITY);
        return session.stop(&mut reader, StreamCode::NO_CAPACITY);
    }
    if session.shard.publisher_of(&key.broadcast).is_none() {
        debug!(session = session.id.id, track = %key, "subscribe: no such broadcast");
        session.subscriptions.set(session.subscriptions.get() - 1);
        session.reset(&mut send, StreamCode::NOT_FOUND);
        return session.stop(&mut reader, StreamCode::NOT_FOUND);
    }
    debug!(session = session.id.id, id = request.id, track = %key, "subscribe");
    session.shard.stats.subscriptions_open.inc();
    let replica = session.shard.subscribe_local(&key);
    replica.add_subscriber();

    let sub = Rc::new(Subscription {
        id: request.id,
        priority: Cell::new(request.priority),
        max_latency: Cell::new(effective_latency(&session, request.max_latency)),
        cancelled: Signal::default(),
        writers: Rc::default(),
    });

    let outcome = serve_track(&session, &sub, &replica, &request, &mut send, reader).await;
    match outcome {
        Ok(TrackEnd::Clean(next)) => {
            // END names the boundary at once; the FIN waits for the groups
            // still being written (see `tail`), as moq-net's does.
            if session.version.has_track_stream() {
                let end = SubscribeReply::End { group: next };
                let _ = send.write_chunk(session.encode(&[&end])).await;
            }
            let stop = race(sub.cancelled.raised(), session.closed.raised());
            let writers = &sub.writers;
            tail::wait_until(sub.max_latency.get(), stop, |_| writers.open() == 0).await;
            sub.cancelled.raise();
            let _ = send.finish();
        }
        Ok(TrackEnd::Reset(code)) => {
            sub.cancelled.raise();
            session.reset(&mut send, code);
        }
        Ok(TrackEnd::Cancelled) | Err(_) => {
            sub.cancelled.raise();
            let _ = send.finish();
        }
    }
    debug!(session = session.id.id, id = request.id, track = %key, "subscription over");
    session.subscriptions.set(session.subscriptions.get() - 1);
    session.shard.stats.subscriptions_open.dec();
    if replica.remove_subscriber() == 0 {
        session.shard.release_local(&key, &replica);
    }
}

/// A SUBSCRIBE for `key` takes over the slot of a TRACK request for it
/// still holding its upstream subscription, so that TRACK then SUBSCRIBE
/// costs one slot, not two.
fn take_track_hold<T: Transport>(session: &Session<T>, key: &TrackKey) -> bool {
    let mut holds = session.track_holds.borrow_mut();
    let Some(at) = holds.iter().position(|h| h.key == *key) else {
        return false;
    };
    holds.swap_remove(at).taken.raise();
    true
}

/// The latency a subscription gets: the relay's default for "no
/// preference" (0), else what it asked for, never above the ceiling (a
/// subscriber must not make the relay keep old groups for an hour).
fn effective_latency<T: Transport>(session: &Session<T>, requested_ms: u64) -> Duration {
    let settings = &session.shard.settings;
    let requested = Duration::from_millis(requested_ms);
    match requested_ms {
        0 => settings.default_max_latency,
        _ if requested > settings.max_latency_ceiling => {
            session.shard.stats.latency_requests_capped.inc();
            settings.max_latency_ceiling
        }
        _ => requested,
    }
}

enum TrackEnd {
    /// The track ended; the next group would have had this sequence.
    Clean(u64),
    Reset(StreamCode),
    Cancelled,
}

enum Step {
    Group(Rc<Group>),
    /// Datagrams arrived past the subscription's datagram cursor.
    Datagrams,
    Ended(Option<StreamCode>),
    Cancelled,
}

/// Follow the replica by cursor: each group goes to its own writer task.
async fn serve_track<T: Transport>(
    session: &Rc<Session<T>>,
    sub: &Rc<Subscription>,
    replica: &Rc<TrackReplica>,
    request: &Subscribe,
    send: &mut T::Send,
    reader: StreamReader<T::Recv>,
) -> Result<TrackEnd, qumo_shards::WriteError> {
    if !session.version.has_track_stream() {
        let ok = SubscribeReply::Ok(SubscribeOk {
            priority: request.priority,
            max_latency: 0,
            start_group: None,
            end_group: None,
        });
        send.write_chunk(session.encode(&[&ok])).await?;
    }
    session.spawn(read_updates(session.clone(), sub.clone(), reader));

    // Resume just before the requested start; none (or 0) starts at the
    // newest group.
    let mut last: Option<u64> = request.start_group.and_then(|s| s.checked_sub(1));
    let mut started = false;
    // Only datagrams that arrive from now on.
    let mut datagram_cursor = replica.next_datagram();
    let mut datagrams = Vec::new();
    let cancel_waiter = sub.cancelled.waiter();
    let closed_waiter = session.closed.waiter();
    let replica_waiter = replica.waiter();
    loop {
        let step = poll_fn(|cx| {
            if sub.cancelled.poll_raised(&cancel_waiter, cx).is_ready()
                || session.closed.poll_raised(&closed_waiter, cx).is_ready()
            {
                return Poll::Ready(Step::Cancelled);
            }
            // Ahead of groups: a datagram is sent now or never.
            if replica.next_datagram() > datagram_cursor {
                return Poll::Ready(Step::Datagrams);
            }
            let now = std::time::Instant::now();
            if let Some(group) = next_group(replica, last, sub, now) {
                return Poll::Ready(Step::Group(group));
            }
            if let TrackState::Ended(code) = replica.state() {
                return Poll::Ready(Step::Ended(code));
            }
            replica_waiter.register(cx);
            Poll::Pending
        })
        .await;
        match step {
            Step::Group(group) => {
                if !started && session.version.has_track_stream() {
                    let start = SubscribeReply::Start {
                        group: group.sequence,
                    };
                    send.write_chunk(session.encode(&[&start])).await?;
                }
                started = true;
                last = Some(group.sequence);
                // Counted now: the track can end before the writer first
                // runs, and its end waits only for counted writers.
                let open = sub.writers.track_shared(group.sequence);
                session.spawn(write_group(session.clone(), sub.clone(), group, open));
            }
            Step::Datagrams => {
                let (missed, next) = replica.datagrams_from(datagram_cursor, &mut datagrams);
                datagram_cursor = next;
                session.shard.stats.datagrams_dropped.add(missed);
                for datagram in datagrams.drain(..) {
                    send_datagram(session, sub.id, datagram);
                }
            }
            Step::Ended(None) => return Ok(TrackEnd::Clean(last.map_or(0, |l| l + 1))),
            Step::Ended(Some(code)) => return Ok(TrackEnd::Reset(code)),
            Step::Cancelled => return Ok(TrackEnd::Cancelled),
        }
    }
}

/// Relay one datagram to the subscriber, or drop it (counted) if its
/// version or path takes none now: datagrams are never queued. A lite
/// datagram is a one-frame group, so an IETF datagram past object 0 has no
/// lite spelling and is dropped too.
fn send_datagram<T: Transport>(session: &Session<T>, subscribe: u64, datagram: Datagram) {
    let stats = &session.shard.stats;
    if !session.version.has_datagrams() || datagram.object != 0 {
        stats.datagrams_dropped.inc();
        return;
    }
    let header = DatagramHeader {
        subscribe,
        sequence: datagram.sequence,
        timestamp: datagram.timestamp,
    };
    let mut body = BytesMut::with_capacity(16 + datagram.payload.len());
    if header.encode(&mut body, session.version).is_err() {
        stats.datagrams_dropped.inc();
        return;
    }
    body.extend_from_slice(&datagram.payload);
    if body.len() > session.transport.max_datagram_size() {
        stats.datagrams_dropped.inc();
        return;
    }
    match session.transport.send_datagram(body.freeze()) {
        Ok(()) => stats.media_datagrams_sent.inc(),
        Err(_) => stats.datagrams_dropped.inc(),
    }
}

/// The group to send after `last`: the next one in order, unless it and
/// its successors are too old, in which case skip ahead (never past the
/// newest).
fn next_group(
    replica: &TrackReplica,
    last: Option<u64>,
    sub: &Subscription,
    now: std::time::Instant,
) -> Option<Rc<Group>> {
    let Some(last) = last else {
        // A new subscription starts at the newest group.
        return replica.newest_after(None);
    };
    let mut candidate = replica.group_after(Some(last))?;
    while sub.expired(&candidate, now) {
        match replica.group_after(Some(candidate.sequence)) {
            Some(newer) => candidate = newer,
            None => break,
        }
    }
    Some(candidate)
}

/// SUBSCRIBE_UPDATEs until the subscriber closes its side.
async fn read_updates<T: Transport>(
    session: Rc<Session<T>>,
    sub: Rc<Subscription>,
    mut reader: StreamReader<T::Recv>,
) {
    loop {
        match race(reader.decode::<SubscribeUpdate>(), sub.cancelled.raised()).await {
            Either::Left(Ok(Some(update))) => {
                sub.priority.set(update.priority);
                sub.max_latency
                    .set(effective_latency(&session, update.max_latency));
            }
            Either::Left(Ok(None)) | Either::Left(Err(super::reader::ReadError::Stream(_))) => {
                break;
            }
            Either::Left(Err(e)) => {
                session.violation("SUBSCRIBE_UPDATE", &e);
                break;
            }
            Either::Right(()) => return,
        }
    }
    sub.cancelled.raise();
}

/// The peer asks for a track's properties (lite-05+).
async fn track<T: Transport>(
    session: Rc<Session<T>>,
    mut send: T::Send,
    mut reader: StreamReader<T::Recv>,
) {
    let request = match reader.expect::<TrackRequest>().await {
        Ok(request) => request,
        Err(e) => return session.violation("TRACK", &e),
    };
    if !session.grant().may_subscribe(&request.broadcast) {
        session.refused(Refusal::Subscribe, &request.broadcast);
        session.reset(&mut send, StreamCode::NOT_FOUND);
        return session.stop(&mut reader, StreamCode::NOT_FOUND);
    }
    let key: TrackKey = Arc::new(TrackName {
        broadcast: session.absolute(&request.broadcast),
        track: request.track,
    });
    if session.shard.publisher_of(&key.broadcast).is_none() {
        session.reset(&mut send, StreamCode::NOT_FOUND);
        return;
    }
    // It holds an upstream subscription like a SUBSCRIBE does, so it
    // counts like one: else TRACK requests would be an unbounded way to
    // make the relay subscribe upstream.
    if !session.take_subscription_slot() {
        session.reset(&mut send, StreamCode::NO_CAPACITY);
        return session.stop(&mut reader, StreamCode::NO_CAPACITY);
    }
    // Holding a subscriber makes the owner subscribe upstream, which is how
    // the publisher's properties reach this shard.
    let replica = session.shard.subscribe_local(&key);
    replica.add_subscriber();
    let waiter = replica.waiter();
    let wait = poll_fn(|cx| {
        if let Some(p) = replica.properties() {
            return Poll::Ready(Ok(p));
        }
        if let TrackState::Ended(code) = replica.state() {
            return Poll::Ready(Err(code.unwrap_or(StreamCode::NOT_FOUND)));
        }
        waiter.register(cx);
        Poll::Pending
    });
    let outcome = race(wait, monoio::time::sleep(TRACK_INFO_TIMEOUT)).await;
    match outcome {
        Either::Left(Ok(p)) => {
            let info = TrackInfo {
                priority: p.priority,
                max_latency: p.max_latency,
                timescale: p.timescale,
            };
            if send.write_chunk(session.encode(&[&info])).await.is_ok() {
                let _ = send.finish();
            }
        }
        Either::Left(Err(code)) => session.reset(&mut send, code),
        Either::Right(()) => session.reset(&mut send, StreamCode::NOT_FOUND),
    }
    // A TRACK request is usually followed at once by the SUBSCRIBE: keep
    // the upstream subscription a moment so that one does not start over.
    let hold = Rc::new(TrackHold {
        key: key.clone(),
        taken: Signal::default(),
    });
    session.track_holds.borrow_mut().push(hold.clone());
    race(monoio::time::sleep(TRACK_HOLD), hold.taken.raised()).await;
    session
        .track_holds
        .borrow_mut()
        .retain(|h| !Rc::ptr_eq(h, &hold));
    if !hold.taken.is_raised() {
        session.subscriptions.set(session.subscriptions.get() - 1);
    }
    if replica.remove_subscriber() == 0 {
        session.shard.release_local(&key, &replica);
    }
}
