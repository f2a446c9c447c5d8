//! The peer's FETCH (lite-05+): one group of a track, or a range of its
//! frames, served from this shard's replica of the track and answered with
//! bare FRAMEs up to FIN (moq-net 0.3.18 `FetchServe`).
//!
//! A FETCH holds the replica like a subscriber while it runs, so the owner
//! attaches this shard with the hub's cached groups (the owner subscribes
//! upstream if nobody did): a past group still in the hub's cache, or the
//! rest of the group a subscriber joined late, is served from there; the
//! group right after the newest one is waited for (bounded), since the
//! publisher is about to send it. A group older than what the replica holds
//! (evicted, or from before the relay subscribed) is asked of the track's
//! publisher (`Shard::fetch_upstream`, see ARCHITECTURE.md) and passed on
//! as it comes back, within `relay.fetch_timeout`. Anything else, a group
//! too far ahead or past the track's end, is NOT_FOUND: moq-lite has no
//! FETCH_OK, a publisher without the group resets the stream. It counts
//! against `relay.max_subscriptions_per_session` like a SUBSCRIBE.

use std::future::{pending, poll_fn};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tracing::debug;

use super::reader::StreamReader;
use super::state::Session;
use super::transport::{SendStream, Transport};
use crate::auth::Refusal;
use crate::lite::{Encode, Fetch, FrameHeader, StreamCode, Timestamps};
use crate::message::{FetchEvent, FetchWindow, TrackKey, TrackName, UpstreamFetch};
use crate::shard::ForwardedFetch;
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
    let serve = serve_fetch(&session, &key, &replica, &request, &mut send);
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
    key: &TrackKey,
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
        Either::Left(Found::Cached(group)) => group,
        Either::Left(Found::Past) => return serve_upstream(session, key, request, send).await,
        // A live track that showed no group yet: its publisher may hold
        // older ones.
        Either::Right(())
            if replica.newest_sequence().is_none() && replica.state() == TrackState::Live =>
        {
            return serve_upstream(session, key, request, send).await
        }
        Either::Left(Found::Never) | Either::Right(()) => {
            return FetchEnd::Reset(StreamCode::NOT_FOUND)
        }
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
        if write_frame(
            session,
            send,
            &mut timestamps,
            frame.timestamp,
            frame.payload,
        )
        .await
        .is_err()
        {
            return FetchEnd::Lost;
        }
        index += 1;
    }
}

/// Serve a group this relay does not hold from the track's publisher:
/// the FETCH goes to its session (on whatever shard), which asks its peer
/// for the whole group; the frames asked for are passed on as they come
/// back, within `relay.fetch_timeout`. The publisher's refusal code is
/// passed back; a publisher that cannot FETCH (lite-04, IETF) answers
/// NOT_FOUND.
async fn serve_upstream<T: Transport>(
    session: &Session<T>,
    key: &TrackKey,
    request: &Fetch,
    send: &mut T::Send,
) -> FetchEnd {
    let Some(publisher) = session.shard.publisher_of(&key.broadcast) else {
        return FetchEnd::Reset(StreamCode::NOT_FOUND);
    };
    debug!(session = session.id.id, track = %key, group = request.group, "fetch: forwarded to the publisher");
    let upstream = UpstreamFetch {
        key: key.clone(),
        group: request.group,
        priority: request.priority,
        window: FetchWindow::default(),
    };
    let mut forwarded = session.shard.fetch_upstream(publisher, upstream);
    let timeout = monoio::time::sleep(session.shard.settings.fetch_timeout);
    let end = match race(relay_answer(session, &forwarded, request, send), timeout).await {
        Either::Left(end) => end,
        Either::Right(()) => FetchEnd::Reset(StreamCode::DELIVERY_TIMEOUT),
    };
    if matches!(end, FetchEnd::Served) {
        forwarded.served();
    }
    end
}

async fn relay_answer<T: Transport>(
    session: &Session<T>,
    forwarded: &ForwardedFetch,
    request: &Fetch,
    send: &mut T::Send,
) -> FetchEnd {
    let _ = send.set_priority(i32::from(request.priority) << 23);
    let mut timestamps = Timestamps::default();
    // The publisher sends the whole group; this is the next frame's index.
    let mut index = 0u64;
    loop {
        if request.end_frame.is_some_and(|end| index > end) {
            return FetchEnd::Served;
        }
        match forwarded.next().await {
            FetchEvent::Frame { timestamp, payload } => {
                let size = payload.len() as u64;
                if index >= request.start_frame
                    && write_frame(session, send, &mut timestamps, timestamp, payload)
                        .await
                        .is_err()
                {
                    return FetchEnd::Lost;
                }
                forwarded.window().written(size);
                index += 1;
            }
            FetchEvent::End if index > request.start_frame || request.start_frame == 0 => {
                return FetchEnd::Served
            }
            FetchEvent::End => return FetchEnd::Reset(StreamCode::NOT_FOUND),
            FetchEvent::Reset(code) => return FetchEnd::Reset(code),
        }
    }
}

/// Write one frame of a FETCH answer: a bare FRAME header, then the payload.
async fn write_frame<T: Transport>(
    session: &Session<T>,
    send: &mut T::Send,
    timestamps: &mut Timestamps,
    timestamp: u64,
    payload: Bytes,
) -> Result<(), ()> {
    let head = FrameHeader {
        timestamp_delta: session
            .version
            .has_frame_timestamps()
            .then(|| timestamps.delta(timestamp).unwrap_or(0)),
        size: payload.len() as u64,
    };
    let mut buf = BytesMut::with_capacity(16);
    let _ = head.encode(&mut buf, session.version);
    send.write_chunk(buf.freeze()).await.map_err(|_| ())?;
    if !payload.is_empty() {
        send.write_chunk(payload).await.map_err(|_| ())?;
    }
    Ok(())
}

/// Where a FETCH's group is.
enum Found {
    /// On this shard.
    Cached(Rc<Group>),
    /// Published before what this shard holds of the track (evicted, or
    /// before the relay subscribed): only the publisher may have it.
    Past,
    /// Not published and not about to be: too far ahead, or the track over.
    Never,
}

/// The group `sequence` once this shard has it, or where else it may be:
/// with the publisher when older than the cache or a gap in it, nowhere
/// when too far ahead or the track is over.
async fn find_group(replica: &TrackReplica, sequence: u64) -> Found {
    let waiter = replica.waiter();
    poll_fn(|cx| {
        let state = replica.state();
        if state != TrackState::Pending {
            if let Some(group) = replica.group(sequence) {
                return Poll::Ready(Found::Cached(group));
            }
            if matches!(state, TrackState::Ended(_)) {
                return Poll::Ready(Found::Never);
            }
            if replica
                .newest_sequence()
                .is_some_and(|newest| sequence <= newest)
            {
                return Poll::Ready(Found::Past);
            }
            // Only the publisher's next group is worth waiting for.
            let next = replica.newest_sequence().map_or(0, |n| n.saturating_add(1));
            let awaited = replica.newest_sequence().is_none() || sequence == next;
            if !awaited {
                return Poll::Ready(Found::Never);
            }
        }
        waiter.register(cx);
        Poll::Pending
    })
    .await
}
