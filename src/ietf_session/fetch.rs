//! FETCH on either draft, served from this shard's replica of the track.
//!
//! A FETCH names a range of a track (standalone; draft 22's LOCATION_FILTER)
//! or, on draft 14, the groups before one of this session's subscriptions
//! (joining, relative or absolute). It holds the track's replica like a
//! subscriber while it runs, so the shard attaches the hub's cached groups,
//! then takes a snapshot of what the cache holds of the range: the groups and
//! frame counts there are when FETCH_OK is sent, which is what FETCH_OK's End
//! Location promises. A group still growing is served up to the frames it had
//! then; the rest belongs to subscriptions. Nothing is forwarded upstream: a
//! range of which the cache holds nothing is refused DOES_NOT_EXIST.
//!
//! The objects go out on one uni stream (FETCH_HEADER, then each frame as an
//! object: group sequence, subgroup 0, object id = frame index), at the
//! request's priority. The stream is written frame by frame, each write
//! awaiting QUIC flow control, so the bytes in flight are the stream's window;
//! the payloads are the cache's `Bytes`, never copied.
//!
//! Each FETCH counts against `relay.max_subscriptions_per_session` beside the
//! session's subscriptions (`qumo_fetches_open` while it runs). FETCH_CANCEL
//! (draft 14), a reset of the request stream (draft 22) or the session ending
//! stops it: the data stream is reset CANCELLED and every hold released.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tracing::debug;

use super::bridge::{ietf_priority, lite_priority};
use super::state::{IetfSession, Subscription};
use crate::ietf::{
    draft22, Encode, Fetch, FetchError, FetchHeader, FetchObject, FetchOk, FetchType, GroupOrder,
    Location, ObjectStatus, Parameters, Version,
};
use crate::message::{TrackKey, TrackName};
use crate::session::transport::{SendStream, Transport};
use crate::task::{race, Either, Signal};
use crate::track::{Group, TrackReplica, TrackState};

/// How long a FETCH waits for the shard's replica to attach, or for the
/// joined subscription to pick its first group.
const FETCH_WAIT: Duration = Duration::from_secs(5);

/// Data stream reset code CANCELLED (both drafts).
const STREAM_CANCELLED: u32 = 0x1;

/// A range of a track: from `start` through `end_group`, whose objects up to
/// `end_object` (inclusive; `None`: the whole group) are included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Range {
    pub(super) start: Location,
    pub(super) end_group: u64,
    pub(super) end_object: Option<u64>,
}

impl Range {
    /// Whether the range holds at least one location.
    fn is_empty(&self) -> bool {
        let end = (self.end_group, self.end_object.unwrap_or(u64::MAX));
        (self.start.group, self.start.object) > end
    }

    /// Draft 14's standalone range: End Object is the last object plus one,
    /// 0 meaning the whole End Group (moq-net 0.3.18 reads it so).
    fn draft14(start: Location, end: Location) -> Range {
        Range {
            start,
            end_group: end.group,
            end_object: end.object.checked_sub(1),
        }
    }

    /// Draft 22's LOCATION_FILTER on a FETCH; `None` for the filters that
    /// count from the Largest Object (not served).
    fn draft22(filter: draft22::LocationFilter) -> Option<Range> {
        use draft22::LocationFilter as F;
        let open = |start| Range {
            start,
            end_group: u64::MAX,
            end_object: None,
        };
        Some(match filter {
            F::None => open(Location::default()),
            F::AbsoluteStart(start) => open(start),
            F::AbsoluteGroupEnd { start, end_group } => Range {
                start,
                end_group,
                end_object: None,
            },
            F::AbsoluteRange {
                start,
                end_group,
                end_object,
            } => Range {
                start,
                end_group,
                end_object: Some(end_object),
            },
            F::RelativeStart(_) | F::NextObject => return None,
        })
    }
}

/// Why a FETCH is refused, as each draft's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// No such track, or nothing of the range is cached.
    DoesNotExist,
    /// The range ends before it starts, or a joining start is past the
    /// subscription.
    InvalidRange,
    /// A form or parameter not served, or the request limit.
    NotSupported(&'static str),
    /// A joining FETCH names no subscription of this session.
    UnknownJoin,
    /// The track is outside the session's grant (`get`).
    Unauthorized,
}

impl Refusal {
    fn code(self, version: Version) -> u64 {
        // Draft 14 section 9.18 and draft 22's request error table, as
        // moq-net 0.3.18 numbers them.
        match (self, version) {
            (Refusal::NotSupported(_), _) => 0x3,
            (Refusal::DoesNotExist, Version::Draft14) => 0x4,
            (Refusal::DoesNotExist, _) => 0x10,
            (Refusal::InvalidRange, Version::Draft14) => 0x5,
            (Refusal::InvalidRange, _) => 0x11,
            (Refusal::UnknownJoin, Version::Draft14) => 0x7,
            (Refusal::UnknownJoin, _) => 0x32,
            (Refusal::Unauthorized, _) => super::authorize::REQUEST_UNAUTHORIZED,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Refusal::DoesNotExist => "no such track, or nothing of the range is cached",
            Refusal::InvalidRange => "invalid range",
            Refusal::NotSupported(reason) => reason,
            Refusal::UnknownJoin => "no such subscription to join",
            Refusal::Unauthorized => "unauthorized",
        }
    }
}

/// What a FETCH asks for.
enum Ask {
    /// A range of the named track.
    Range(TrackKey, Range),
    /// Whole groups before a subscription's first one, from `start`.
    Joining { subscription: u64, start: JoinStart },
}

enum JoinStart {
    /// This many groups before the subscription's Largest group.
    Relative(u64),
    /// From this group.
    Absolute(u64),
}

/// The part of one cached group a FETCH delivers: frames `from..to`.
struct Part {
    group: Rc<Group>,
    from: usize,
    to: usize,
}

/// What a FETCH delivers, fixed when FETCH_OK is sent.
struct Snapshot {
    parts: Vec<Part>,
    end_of_track: bool,
}

impl Snapshot {
    /// The cached frames of `range`, group by group. Bounded by the cache.
    fn take(replica: &TrackReplica, range: Range) -> Snapshot {
        let mut parts = Vec::new();
        let in_range = |g: &Rc<Group>| (range.start.group..=range.end_group).contains(&g.sequence);
        let mut groups: Vec<_> = replica.groups().into_iter().filter(in_range).collect();
        // Ascending, as FETCH_OK promises (draft 22's group deltas rely on it).
        groups.sort_by_key(|g| g.sequence);
        for group in groups {
            let count = group.frame_count();
            let from = match group.sequence == range.start.group {
                true => usize::try_from(range.start.object).unwrap_or(usize::MAX),
                false => 0,
            };
            let to = match (group.sequence == range.end_group, range.end_object) {
                (true, Some(last)) => usize::try_from(last)
                    .map_or(count, |last| last.saturating_add(1))
                    .min(count),
                _ => count,
            };
            if from < to {
                parts.push(Part { group, from, to });
            }
        }
        // The response reaches the end of the track when the track is over
        // and its newest group is delivered to its last frame.
        let end_of_track = matches!(replica.state(), TrackState::Ended(_))
            && parts.last().is_some_and(|last| {
                Some(last.group.sequence) == replica.newest_sequence()
                    && last.to == last.group.frame_count()
            });
        Snapshot {
            parts,
            end_of_track,
        }
    }

    /// The last location delivered.
    fn last(&self) -> Option<Location> {
        self.parts.last().map(|p| Location {
            group: p.group.sequence,
            object: p.to as u64 - 1,
        })
    }
}

/// A FETCH's holds on the session and the track, released however it ends
/// (its task finished, or dropped unpolled with the session).
struct Holds<T: Transport> {
    session: Rc<IetfSession<T>>,
    request_id: u64,
    /// FETCH_CANCEL, a reset request stream, or the session's end.
    cancel: Rc<Signal>,
    track: Option<(TrackKey, Rc<TrackReplica>)>,
}

impl<T: Transport> Holds<T> {
    /// Take a request slot for FETCH `request_id`, or the refusal when the
    /// session has as many requests open as it may.
    fn open(session: &Rc<IetfSession<T>>, request_id: u64) -> Result<Self, Refusal> {
        if session.requests_open() >= session.shard.settings.max_subscriptions_per_session {
            session.shard.stats.subscriptions_refused_limit.inc();
            return Err(Refusal::NotSupported("subscription limit"));
        }
        let cancel = Rc::new(Signal::default());
        session
            .fetches
            .borrow_mut()
            .insert(request_id, cancel.clone());
        session.shard.stats.fetches_open.inc();
        Ok(Holds {
            session: session.clone(),
            request_id,
            cancel,
            track: None,
        })
    }

    fn hold_track(&mut self, key: &TrackKey) -> Rc<TrackReplica> {
        let replica = self.session.shard.subscribe_local(key);
        replica.add_subscriber();
        self.track = Some((key.clone(), replica.clone()));
        replica
    }
}

impl<T: Transport> Drop for Holds<T> {
    fn drop(&mut self) {
        let session = &self.session;
        session.fetches.borrow_mut().remove(&self.request_id);
        session.shard.stats.fetches_open.dec();
        if let Some((key, replica)) = self.track.take() {
            if replica.remove_subscriber() == 0 {
                session.shard.release_local(&key, &replica);
            }
        }
    }
}

/// The track a standalone FETCH names, under the session's root, if the
/// session's grant lets it read it (a refusal is counted).
fn track_key<T: Transport>(
    session: &IetfSession<T>,
    namespace: &[String],
    name: &str,
) -> Result<TrackKey, Refusal> {
    let (relative, broadcast) = session.broadcast_of(namespace);
    if !super::authorize::may_subscribe(session, &relative) {
        return Err(Refusal::Unauthorized);
    }
    Ok(Arc::new(TrackName {
        broadcast,
        track: name.to_owned(),
    }))
}

/// Draft 14's FETCH, from the control stream: FETCH_OK / FETCH_ERROR on the
/// control stream, the objects on a fetch stream.
pub(super) fn fetch14<T: Transport>(session: &Rc<IetfSession<T>>, request: Fetch) {
    let id = request.request_id;
    let ask = match request.fetch_type {
        FetchType::Standalone {
            namespace,
            name,
            start,
            end,
        } => match track_key(session, &namespace, &name) {
            Ok(key) => Ask::Range(key, Range::draft14(start, end)),
            Err(refusal) => return refuse14(session, id, refusal),
        },
        FetchType::RelativeJoining {
            joining_request_id,
            joining_start,
        } => Ask::Joining {
            subscription: joining_request_id,
            start: JoinStart::Relative(joining_start),
        },
        FetchType::AbsoluteJoining {
            joining_request_id,
            joining_start,
        } => Ask::Joining {
            subscription: joining_request_id,
            start: JoinStart::Absolute(joining_start),
        },
    };
    let mut holds = match Holds::open(session, id) {
        Ok(holds) => holds,
        Err(refusal) => return refuse14(session, id, refusal),
    };
    let priority = request.subscriber_priority;
    let session = session.clone();
    session.clone().spawn(async move {
        let snapshot = match resolve(&mut holds, ask).await {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => return,
            Err(refusal) => return refuse14(&session, id, refusal),
        };
        // Draft 14's End Location is one past the last object, as moq-net
        // writes it; an empty joining answer (nothing precedes its
        // subscription) says {0, 0}.
        let end = snapshot
            .last()
            .map_or(Location::default(), |last| Location {
                group: last.group,
                object: last.object + 1,
            });
        session.send(
            FetchOk {
                request_id: id,
                group_order: GroupOrder::Ascending,
                end_of_track: snapshot.end_of_track,
                end,
                parameters: Parameters::default(),
            }
            .into(),
        );
        write_objects(&session, id, priority, snapshot, &holds.cancel).await;
    });
}

fn refuse14<T: Transport>(session: &IetfSession<T>, request_id: u64, refusal: Refusal) {
    debug!(session = session.id, request_id, ?refusal, "fetch refused");
    if refusal == Refusal::DoesNotExist {
        session.shard.stats.fetches_not_found.inc();
    }
    session.send(
        FetchError {
            request_id,
            code: refusal.code(Version::Draft14),
            reason: refusal.reason().into(),
        }
        .into(),
    );
}

/// Draft 22's FETCH, the first message of its request stream: FETCH_OK or
/// REQUEST_ERROR there, the objects on a fetch stream. Resetting the request
/// stream cancels it (`cancel`, raised by the caller's watch).
pub(super) async fn fetch22<T: Transport>(
    session: &Rc<IetfSession<T>>,
    request: draft22::Fetch,
    send: &mut T::Send,
    cancel_watch: impl std::future::Future<Output = ()>,
) {
    let id = request.request_id;
    let params = &request.parameters;
    let ask = if params.get(draft22::param::FILL_TIMEOUT).is_some() {
        Err(Refusal::NotSupported("FILL_TIMEOUT not supported"))
    } else if params.0.iter().any(|(k, _)| {
        (draft22::param::RANGE_FILTER_FIRST..=draft22::param::RANGE_FILTER_LAST).contains(k)
    }) {
        Err(Refusal::NotSupported("range filters not supported"))
    } else {
        Range::draft22(params.filter())
            .ok_or(Refusal::NotSupported(
                "a FETCH relative to the Largest Object is not supported",
            ))
            .and_then(|range| {
                let key = track_key(session, &request.namespace, &request.name)?;
                Ok(Ask::Range(key, range))
            })
    };
    if session.fetches.borrow().contains_key(&id) {
        return session.violation(super::control::Violation {
            code: crate::ietf::SessionCode::INVALID_REQUEST_ID,
            reason: "request id reused",
        });
    }
    let ask = ask.and_then(|ask| Holds::open(session, id).map(|holds| (ask, holds)));
    let (ask, mut holds) = match ask {
        Ok(opened) => opened,
        Err(refusal) => return refuse22(session, send, refusal).await,
    };
    let priority = params.subscriber_priority();
    let cancel = holds.cancel.clone();
    let serve = async {
        let snapshot = match resolve(&mut holds, ask).await {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => return,
            Err(refusal) => return refuse22(session, send, refusal).await,
        };
        // Draft 20 on: End Location is the last object, inclusive.
        let ok = draft22::FetchOk {
            end_of_track: snapshot.end_of_track,
            end: snapshot.last().unwrap_or_default(),
            parameters: draft22::MessageParameters::default(),
            properties: Parameters::default(),
        };
        let Ok(bytes) = draft22::Encode::to_vec(&ok) else {
            return;
        };
        if send.write_chunk(Bytes::from(bytes)).await.is_err() {
            return;
        }
        // Our half carries nothing more; the peer's reset still cancels.
        let _ = send.finish();
        write_objects(session, id, priority, snapshot, &cancel).await;
    };
    let watch = async {
        cancel_watch.await;
        cancel.raise();
        std::future::pending::<()>().await
    };
    race(serve, watch).await;
}

async fn refuse22<T: Transport>(session: &IetfSession<T>, send: &mut T::Send, refusal: Refusal) {
    debug!(session = session.id, ?refusal, "draft-22 fetch refused");
    if refusal == Refusal::DoesNotExist {
        session.shard.stats.fetches_not_found.inc();
    }
    let error = draft22::RequestError {
        code: refusal.code(session.version),
        retry_interval: 0,
        reason: refusal.reason().into(),
    };
    if let Ok(bytes) = draft22::Encode::to_vec(&error) {
        if send.write_chunk(Bytes::from(bytes)).await.is_ok() {
            let _ = send.finish();
        }
    }
}

/// Turn the request into a snapshot of the cache: `Ok(None)` when it was
/// cancelled (or the session ended) first.
async fn resolve<T: Transport>(
    holds: &mut Holds<T>,
    ask: Ask,
) -> Result<Option<Snapshot>, Refusal> {
    let session = holds.session.clone();
    let cancel = holds.cancel.clone();
    let stopped = || race(cancel.raised(), session.closed.raised());
    let (replica, range) = match ask {
        Ask::Range(key, range) => {
            if range.is_empty() {
                return Err(Refusal::InvalidRange);
            }
            if session.shard.publisher_of(&key.broadcast).is_none() {
                return Err(Refusal::DoesNotExist);
            }
            let replica = holds.hold_track(&key);
            // The shard's replica attaches with the hub's cached groups.
            let attached = replica.attached();
            match race(race(attached, monoio::time::sleep(FETCH_WAIT)), stopped()).await {
                Either::Left(Either::Left(())) => {}
                Either::Left(Either::Right(())) => return Err(Refusal::DoesNotExist),
                Either::Right(_) => return Ok(None),
            }
            (replica, range)
        }
        Ask::Joining {
            subscription,
            start,
        } => {
            // A SUBSCRIBE still waiting for its replica is answered first.
            let opening = session.opening.borrow().get(&subscription).cloned();
            if let Some(settled) = opening {
                if let Either::Right(_) = race(settled.raised(), stopped()).await {
                    return Ok(None);
                }
            }
            let Some(sub) = session.subscriptions.borrow().get(&subscription).cloned() else {
                return Err(Refusal::UnknownJoin);
            };
            let replica = holds.hold_track(&sub.key);
            // A SUBSCRIBE and its joining FETCH come back to back; the
            // subscription's task picks its first group right after.
            let joined = race(sub.joined.raised(), sub.cancelled.raised());
            match race(race(joined, monoio::time::sleep(FETCH_WAIT)), stopped()).await {
                Either::Left(Either::Left(Either::Left(()))) => {}
                Either::Left(Either::Left(Either::Right(()))) => return Err(Refusal::UnknownJoin),
                // No group arrived in that time: nothing precedes it but
                // what the subscription saw as Largest.
                Either::Left(Either::Right(())) => {}
                Either::Right(_) => return Ok(None),
            }
            let join = sub.join_group.get();
            // A replica not attached when SUBSCRIBE_OK went (its wait ran
            // out) knew no Largest; the group the subscription then started
            // with stands for it.
            let largest = sub.largest_group.or(join);
            let end = match join {
                Some(join) => join.checked_sub(1),
                None => largest,
            };
            let start = match (start, largest) {
                (JoinStart::Relative(back), Some(largest)) => largest.saturating_sub(back),
                (JoinStart::Relative(_), None) => 0,
                (JoinStart::Absolute(group), _) => group,
            };
            if largest.is_some_and(|largest| start > largest) {
                return Err(Refusal::InvalidRange);
            }
            let range = match end {
                Some(end_group) => Range {
                    start: Location {
                        group: start,
                        object: 0,
                    },
                    end_group,
                    end_object: None,
                },
                // Nothing before the subscription.
                None => {
                    return Ok(Some(Snapshot {
                        parts: Vec::new(),
                        end_of_track: false,
                    }))
                }
            };
            let snapshot = Snapshot::take(&replica, range);
            return Ok(Some(snapshot));
        }
    };
    let snapshot = Snapshot::take(&replica, range);
    if snapshot.parts.is_empty() {
        return Err(Refusal::DoesNotExist);
    }
    Ok(Some(snapshot))
}

/// A draft-22 SUBSCRIBE's FILL (draft 20 on, in place of joining FETCH):
/// the range its LOCATION_FILTER names (the subscription's own when absent),
/// read as for a FETCH against the subscription's Largest, up to the group
/// before the first one the subscription delivers, on a fetch stream named
/// by the SUBSCRIBE's Request ID and counted in its PUBLISH_DONE. An empty
/// range, or a FILL with range filters or FILL_TIMEOUT, opens no stream.
pub(super) fn fill22<T: Transport>(
    session: &Rc<IetfSession<T>>,
    sub: &Rc<Subscription>,
    replica: &Rc<TrackReplica>,
    fill: &draft22::MessageParameters,
    subscription_filter: draft22::LocationFilter,
    subscriber_priority: u8,
) {
    use draft22::{param, LocationFilter as F, ParamValue};
    let unsupported = fill.0.iter().any(|(k, _)| {
        *k == param::FILL_TIMEOUT
            || (param::RANGE_FILTER_FIRST..=param::RANGE_FILTER_LAST).contains(k)
    });
    if unsupported {
        debug!(
            session = session.id,
            id = sub.request_id,
            "draft-22 fill not served"
        );
        return;
    }
    let filter = match fill.get(param::LOCATION_FILTER) {
        Some(ParamValue::Filter(filter)) => *filter,
        _ => subscription_filter,
    };
    let (session, sub, replica) = (session.clone(), sub.clone(), replica.clone());
    session.clone().spawn(async move {
        let joined = race(sub.joined.raised(), sub.cancelled.raised());
        let stopped = race(joined, session.closed.raised());
        if let Either::Right(()) = race(stopped, monoio::time::sleep(FETCH_WAIT)).await {
            // No group yet: nothing to fill.
            return;
        }
        if sub.cancelled.is_raised() || session.closed.is_raised() {
            return;
        }
        let Some(join) = sub.join_group.get() else {
            return;
        };
        let largest = sub.largest_group.unwrap_or(join);
        let start = match filter {
            F::RelativeStart(groups) => Location {
                group: largest.saturating_add(1).saturating_sub(groups),
                object: 0,
            },
            F::NextObject => return,
            other => match Range::draft22(other) {
                Some(range) => range.start,
                None => return,
            },
        };
        let mut range = match filter {
            F::AbsoluteGroupEnd { .. } | F::AbsoluteRange { .. } => Range::draft22(filter)
                .unwrap_or(Range {
                    start,
                    end_group: 0,
                    end_object: None,
                }),
            _ => Range {
                start,
                end_group: u64::MAX,
                end_object: None,
            },
        };
        // The subscription delivers `join` whole: the fill stops before it.
        let Some(before_join) = join.checked_sub(1) else {
            return;
        };
        if range.end_group > before_join {
            range.end_group = before_join;
            range.end_object = None;
        }
        if range.is_empty() {
            return;
        }
        let snapshot = Snapshot::take(&replica, range);
        if snapshot.parts.is_empty() {
            return;
        }
        sub.streams.set(sub.streams.get() + 1);
        write_objects(
            &session,
            sub.request_id,
            subscriber_priority,
            snapshot,
            &sub.cancelled,
        )
        .await;
    });
}

/// The fetch stream: FETCH_HEADER, then every frame of the snapshot as an
/// object, FIN at the end; reset CANCELLED when cancelled.
async fn write_objects<T: Transport>(
    session: &IetfSession<T>,
    request_id: u64,
    subscriber_priority: u8,
    snapshot: Snapshot,
    cancel: &Signal,
) {
    let stopped = || race(cancel.raised(), session.closed.raised());
    let opened = race(session.transport.open_uni(), stopped()).await;
    let Either::Left(Ok(mut stream)) = opened else {
        return;
    };
    let _ = stream.set_priority(i32::from(lite_priority(subscriber_priority)) << 23);
    let version = session.version;
    let publisher_priority = ietf_priority(lite_priority(subscriber_priority));
    let write = async {
        let mut head = BytesMut::new();
        let encoded = match version {
            Version::Draft14 => FetchHeader { request_id }.encode(&mut head, version),
            _ => draft22::Encode::encode(&draft22::FetchHeader { request_id }, &mut head),
        };
        if encoded.is_err() {
            return Err(());
        }
        stream.write_chunk(head.freeze()).await.map_err(|_| ())?;
        let mut prior: Option<Location> = None;
        for part in &snapshot.parts {
            for index in part.from..part.to {
                // Cached frames are never removed from a group.
                let Some(frame) = part.group.frame(index) else {
                    return Err(());
                };
                let at = Location {
                    group: part.group.sequence,
                    object: index as u64,
                };
                let len = frame.payload.len() as u64;
                let mut head = BytesMut::new();
                let encoded = match version {
                    Version::Draft14 => FetchObject {
                        group: at.group,
                        subgroup: 0,
                        object: at.object,
                        publisher_priority,
                        extensions: Vec::new(),
                        payload_len: len,
                        status: (len == 0).then_some(ObjectStatus::Normal),
                    }
                    .encode(&mut head, version),
                    _ => draft22::Encode::encode(
                        &draft22_object(prior, at, publisher_priority, len),
                        &mut head,
                    ),
                };
                if encoded.is_err() {
                    return Err(());
                }
                stream.write_chunk(head.freeze()).await.map_err(|_| ())?;
                if len > 0 {
                    stream.write_chunk(frame.payload).await.map_err(|_| ())?;
                }
                prior = Some(at);
            }
        }
        Ok(())
    };
    let outcome = match race(write, stopped()).await {
        Either::Left(outcome) => outcome,
        Either::Right(_) => {
            let _ = stream.reset(session.stream_code(STREAM_CANCELLED));
            debug!(session = session.id, request_id, "fetch cancelled");
            return;
        }
    };
    if outcome.is_ok() {
        session.shard.stats.fetches_served.inc();
        let _ = stream.finish();
        debug!(session = session.id, request_id, "fetch served");
    }
}

/// One object's header on a draft-22 fetch stream: the first spells out its
/// group, object and priority; the next object of the same group inherits
/// everything; a later group is a delta from the prior one (ascending:
/// prior + delta + 1) with its object id absolute.
fn draft22_object(
    prior: Option<Location>,
    at: Location,
    priority: u8,
    payload_len: u64,
) -> draft22::FetchObject {
    let (group, object, priority) = match prior {
        None => (Some(at.group), Some(at.object), Some(priority)),
        Some(p) if p.group == at.group && p.object + 1 == at.object => (None, None, None),
        Some(p) if p.group == at.group => (None, Some(at.object - p.object - 1), None),
        Some(p) => (Some(at.group - p.group - 1), Some(at.object), None),
    };
    draft22::FetchObject::Object {
        subgroup: draft22::FetchSubgroup::Zero,
        group,
        object,
        priority,
        properties: None,
        payload_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(group: u64, object: u64) -> Location {
        Location { group, object }
    }

    #[test]
    fn draft14_end_object_zero_is_the_whole_group_and_others_are_exclusive() {
        let whole = Range::draft14(loc(2, 0), loc(4, 0));
        assert_eq!((whole.end_group, whole.end_object), (4, None));
        let part = Range::draft14(loc(2, 1), loc(2, 3));
        assert_eq!((part.end_group, part.end_object), (2, Some(2)));
        assert!(!part.is_empty());
        assert!(Range::draft14(loc(3, 0), loc(2, 0)).is_empty());
        assert!(Range::draft14(loc(2, 5), loc(2, 3)).is_empty());
    }

    #[test]
    fn draft22_filters_map_to_inclusive_ranges_and_relative_ones_are_not_served() {
        use draft22::LocationFilter as F;
        assert_eq!(
            Range::draft22(F::AbsoluteRange {
                start: loc(1, 2),
                end_group: 3,
                end_object: 4
            }),
            Some(Range {
                start: loc(1, 2),
                end_group: 3,
                end_object: Some(4)
            })
        );
        assert_eq!(
            Range::draft22(F::None).map(|r| (r.start, r.end_group, r.end_object)),
            Some((loc(0, 0), u64::MAX, None))
        );
        assert_eq!(Range::draft22(F::NextObject), None);
        assert_eq!(Range::draft22(F::RelativeStart(2)), None);
    }

    #[test]
    fn draft22_objects_inherit_within_a_group_and_delta_code_the_next() {
        let first = draft22_object(None, loc(4, 1), 7, 3);
        assert!(matches!(
            first,
            draft22::FetchObject::Object {
                group: Some(4),
                object: Some(1),
                priority: Some(7),
                ..
            }
        ));
        let next = draft22_object(Some(loc(4, 1)), loc(4, 2), 7, 3);
        assert!(matches!(
            next,
            draft22::FetchObject::Object {
                group: None,
                object: None,
                priority: None,
                ..
            }
        ));
        let later = draft22_object(Some(loc(4, 2)), loc(6, 0), 7, 3);
        assert!(matches!(
            later,
            draft22::FetchObject::Object {
                group: Some(1),
                object: Some(0),
                priority: None,
                ..
            }
        ));
    }
}
