//! The peer's FETCH (lite-05+): one group of a track, or a range of its
//! frames, served from this shard's replica of the track and answered with
//! bare FRAMEs up to FIN (moq-net 0.3.18 `FetchServe`).
//!
//! A FETCH holds the replica like a subscriber while it runs, so the owner
//! attaches this shard with the hub's cached groups (the owner subscribes
//! upstream if nobody did): a past group still in the hub's cache, or the
//! rest of the group a subscriber joined late, is served from there; the
//! group right after the newest one is waited for (bounded), since the
//! publisher is about to send it. Anything else, a group older than the
//! cache or never published, is NOT_FOUND: moq-lite has no FETCH_OK, a
//! publisher without the group resets the stream. It counts against
//! `relay.max_subscriptions_per_session` like a SUBSCRIBE.

use std::future::{pending, poll_fn};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use tracing::debug;

use super::reader::StreamReader;
use super::state::Session;
use super::transport::{SendStream, Transport};
use crate::auth::Refusal;
use crate::lite::{Encode, Fetch, FrameHeader, StreamCode, Timestamps};
use crate::message::{TrackKey, TrackName};
use crate::task::{race, Either};
use crate::track::{Group, NextFrame, TrackReplica, TrackState};

/// How long a FETCH waits for its group to reach this shard: the owner's
/// answer with the cache, or the publisher's next group.
pub(super) const FETCH_WAIT: Duration = Duration::from_secs(5);

/// How a fetch ended, for the stream and the counters.
enum FetchEnd {
    /// Every frame asked for was written.
    Served,
    /// The stream is reset with this code.
    Reset(StreamCode),
    /// The peer cancelled, the stream failed or the session ended.
    Lost,
}

pub(super) async fn fetch<T: Transport>(
    session: Rc<Session<T>>,
    mut send: T::Send,
    mut reader: StreamReader<T::Recv>,
) {
    let request = match reader.expect::<Fetch>().await {
        Ok(request) => request,
        Err(e) => return session.violation("FETCH", &e),
    };
    let stats = &session.shard.stats;
    // NOT_FOUND outside the token's get, as for a SUBSCRIBE.
    if !session.grant().may_subscribe(&request.broadcast) {
        session.refused(Refusal::Subscribe, &request.broadcast);
        stats.fetches_not_found.inc();
        session.reset(&mut send, StreamCode::NOT_FOUND);
        return session.stop(&mut reader, StreamCode::NOT_FOUND);
    }
    let key: TrackKey = Arc::new(TrackName {
        broadcast: session.absolute(&request.broadcast),
        track: request.track.clone(),
    });
    if session.shard.publisher_of(&key.broadcast).is_none() {
        debug!(session = session.id.id, track = %key, "fetch: no such broadcast");
        stats.fetches_not_found.inc();
        session.reset(&mut send, StreamCode::NOT_FOUND);
        return session.stop(&mut reader, StreamCode::NOT_FOUND);
    }
    if !session.take_subscription_slot() {
        session.reset(&mut send, StreamCode::NO_CAPACITY);
        return session.stop(&mut reader, StreamCode::NO_CAPACITY);
    }
    debug!(session = session.id.id, track = %key, group = request.group, "fetch");
    stats.fetches_open.inc();
    let replica = session.shard.subscribe_local(&key);
    replica.add_subscriber();

    // The peer's FIN after its request is normal; a reset of its side
    // cancels the fetch.
    let cancelled = async {
        if reader.discard_to_end().await.is_ok() {
            pending::<()>().await;
        }
    };
    let serve = serve_fetch(&session, &replica, &request, &mut send);
    let end = match race(serve, race(cancelled, session.closed.raised())).await {
        Either::Left(end) => end,
        Either::Right(_) => FetchEnd::Lost,
    };
    match end {
        FetchEnd::Served => {
            debug!(session = session.id.id, track = %key, group = request.group, "fetch served");
            stats.fetches_served.inc();
            let _ = send.finish();
        }
        FetchEnd::Reset(code) => {
            debug!(session = session.id.id, track = %key, group = request.group, %code, "fetch refused");
            if code == StreamCode::NOT_FOUND {
                stats.fetches_not_found.inc();
            }
            session.reset(&mut send, code);
        }
        FetchEnd::Lost => session.reset(&mut send, StreamCode::CANCEL),
    }
    stats.fetches_open.dec();
    session.subscriptions.set(session.subscriptions.get() - 1);
    if replica.remove_subscriber() == 0 {
        session.shard.release_local(&key, &replica);
    }
}

async fn serve_fetch<T: Transport>(
    session: &Session<T>,
    replica: &TrackReplica,
    request: &Fetch,
    send: &mut T::Send,
) -> FetchEnd {
    let found = race(
        find_group(replica, request.group),
        monoio::time::sleep(FETCH_WAIT),
    )
    .await;
    let group = match found {
        Either::Left(Some(group)) => group,
        Either::Left(None) | Either::Right(()) => return FetchEnd::Reset(StreamCode::NOT_FOUND),
    };
    let _ = send.set_priority(i32::from(request.priority) << 23);
    // The first frame served is stamped against 0, whatever its index, as
    // the peer decodes it (moq-net resets the baseline per response).
    let mut timestamps = Timestamps::default();
    let mut index = request.start_frame;
    let waiter = group.waiter();
    loop {
        if request.end_frame.is_some_and(|end| index > end) {
            return FetchEnd::Served;
        }
        let at = usize::try_from(index).unwrap_or(usize::MAX);
        let next = poll_fn(|cx| group.poll_frame(&waiter, cx, at)).await;
        let frame = match next {
            NextFrame::Frame(frame, _) => frame,
            // A group that ended before the first frame asked for holds
            // nothing of the range: it was never published.
            NextFrame::End if index > request.start_frame || request.start_frame == 0 => {
                return FetchEnd::Served
            }
            NextFrame::End => return FetchEnd::Reset(StreamCode::NOT_FOUND),
            NextFrame::Reset(code) => return FetchEnd::Reset(code),
        };
        let head = FrameHeader {
            timestamp_delta: session
                .version
                .has_frame_timestamps()
                .then(|| timestamps.delta(frame.timestamp).unwrap_or(0)),
            size: frame.payload.len() as u64,
        };
        let mut buf = BytesMut::with_capacity(16);
        let _ = head.encode(&mut buf, session.version);
        if send.write_chunk(buf.freeze()).await.is_err() {
            return FetchEnd::Lost;
        }
        if !frame.payload.is_empty() && send.write_chunk(frame.payload).await.is_err() {
            return FetchEnd::Lost;
        }
        index += 1;
    }
}

/// The group `sequence` once this shard has it, or `None` when it will
/// not come: older than the cache, a gap in it, too far ahead, or the
/// track over.
async fn find_group(replica: &TrackReplica, sequence: u64) -> Option<Rc<Group>> {
    let waiter = replica.waiter();
    poll_fn(|cx| {
        let state = replica.state();
        if state != TrackState::Pending {
            if let Some(group) = replica.group(sequence) {
                return Poll::Ready(Some(group));
            }
            // Only the publisher's next group is worth waiting for.
            let next = replica.newest_sequence().map_or(0, |n| n.saturating_add(1));
            let awaited = replica.newest_sequence().is_none() || sequence == next;
            if matches!(state, TrackState::Ended(_)) || !awaited {
                return Poll::Ready(None);
            }
        }
        waiter.register(cx);
        Poll::Pending
    })
    .await
}
