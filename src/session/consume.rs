//! The peer as a publisher: we ask what it announces, subscribe upstream to
//! the tracks the owner shards ask for, and read its group streams, sending
//! every group and frame to the track's hub.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;

use tracing::{debug, warn};

use super::reader::{ReadError, StreamReader};
use super::state::{GroupStop, Session, Upstream};
use super::tail::{self, GroupTally};
use super::transport::{SendStream, Transport};
use crate::auth::Refusal;
use crate::lite::{
    Announce, AnnounceOk, AnnounceRequest, BidiType, DatagramHeader, DecodeError, Fetch,
    FrameHeader, GroupHeader, StreamCode, Subscribe, SubscribeReply, Timestamps, TrackInfo,
    TrackRequest, Version,
};
use crate::message::{FetchEvent, FetchRef, HubRef, MediaEvent, TrackKey, UpstreamFetch};
use crate::model::{arrival_ms, Datagram};
use crate::router::SessionCommand;
use crate::shard::SessionInbox;
use crate::shard::Shard;
use crate::task::{race, Either, Signal};
use crate::track::TrackProperties;

/// Carry out the router's commands for this session, in order.
pub async fn commands<T: Transport>(session: Rc<Session<T>>, inbox: Rc<SessionInbox>) {
    loop {
        let next = race(poll_fn(|cx| inbox.poll_next(cx)), session.closed.raised()).await;
        // Commands left when the session closes are answered by the shard.
        let Either::Left(command) = next else { return };
        match command {
            SessionCommand::SubscribeUpstream { key, hub } => session.subscribe_upstream(key, hub),
            SessionCommand::CancelUpstream { hub } => session.cancel_upstream(hub),
            SessionCommand::StopGroup {
                hub,
                sequence,
                code,
            } => session.stop_group(hub, sequence, code),
            SessionCommand::Fetch { fetch, request } => session.fetch_upstream(fetch, request),
            SessionCommand::CancelFetch { fetch } => session.cancel_fetch(fetch),
        }
    }
}

/// Ask the peer for its broadcasts (prefix "") and publish them relay-wide.
pub async fn announcements<T: Transport>(session: Rc<Session<T>>) {
    let result = race(read_announcements(&session), session.closed.raised()).await;
    if let Either::Left(Err(e)) = result {
        match e {
            ReadError::Decode(_) | ReadError::Truncated => session.violation("ANNOUNCE", &e),
            ReadError::Stream(_) => {
                debug!(session = session.id.id, error = %e, "announce stream ended")
            }
        }
    }
    // Whatever it announced is gone with the stream.
    for path in session.announced.borrow_mut().drain() {
        debug!(session = session.id.id, broadcast = %path, active = false, "announce ended with the stream");
        session
            .shard
            .announce(&path, session.id, Arc::from([]), false);
    }
}

async fn read_announcements<T: Transport>(session: &Rc<Session<T>>) -> Result<(), ReadError> {
    let Ok((mut send, recv)) = session.transport.open_bi().await else {
        return Ok(());
    };
    let request = AnnounceRequest {
        prefix: String::new(),
        exclude_hop: session.shard.hop,
    };
    if send
        .write_chunk(session.encode(&[&BidiType::Announce, &request]))
        .await
        .is_err()
    {
        return Ok(());
    }
    let mut reader = session.reader(recv, bytes::Bytes::new());
    let mut peer_hop = None;
    if session.version.has_announce_ok() {
        let ok: AnnounceOk = reader.expect().await?;
        peer_hop = (ok.hop != 0).then_some(ok.hop);
    }
    // Only a relay peer's hop lists are believed: a client's broadcasts
    // entered here, whatever hops it names (see auth, "Cluster rights").
    let peer = session.grant().is_cluster();
    if !peer {
        peer_hop = None;
    }
    let max_broadcasts = session.shard.settings.max_broadcasts_per_session;
    // Lite-06 names announcements by START order.
    let mut by_id: HashMap<u64, String> = HashMap::new();
    let mut next_id = 0u64;
    while let Some(announce) = reader.decode::<Announce>().await? {
        session.spoke.set(true);
        let (suffix, hops, active) = match announce {
            Announce::Active { suffix, hops } | Announce::Restarted { suffix, hops } => {
                (suffix, hops, true)
            }
            Announce::Ended { suffix, hops } => (suffix, hops, false),
            Announce::Start { suffix, hops, .. } => {
                // Every START takes an id, even one for a path already
                // live, so the table of ids is what the cap must bound.
                if by_id.len() >= max_broadcasts {
                    return Err(too_many_broadcasts(session, max_broadcasts));
                }
                by_id.insert(next_id, suffix.clone());
                next_id += 1;
                (suffix, hops, true)
            }
            Announce::Restart { id, hops, .. } => match by_id.get(&id) {
                Some(suffix) => (suffix.clone(), hops, true),
                None => return Err(unknown_announce(id)),
            },
            Announce::End { id } => match by_id.remove(&id) {
                Some(suffix) => (suffix, Vec::new(), false),
                None => return Err(unknown_announce(id)),
            },
            // Lite-06 skips types it does not know; so do we.
            Announce::Unknown { .. } => continue,
        };
        let path = session.absolute(&suffix);
        // Outside the token's put: not published, the session kept (the
        // peer may announce other broadcasts that are in scope).
        if active && !session.grant().may_publish(&suffix) {
            session.refused(Refusal::Publish, &suffix);
            continue;
        }
        // Only a relay passes on a broadcast that already went through
        // someone before it (lite-04 senders put themselves on the chain);
        // a client's hop list is not believed, so it shows nothing.
        let own = usize::from(!session.version.has_announce_ok());
        if peer && hops.len() > own && !session.relay_peer.replace(true) {
            session.raise_peer_stream_limits();
        }
        let hops = match peer {
            true => hops,
            false => Vec::new(),
        };
        if hops.contains(&session.shard.hop) {
            debug!(session = session.id.id, %path, "ignoring an announce that passed through us");
            continue;
        }
        let mut hops = hops;
        hops.extend(peer_hop);
        let over_cap = {
            let announced = session.announced.borrow();
            active && announced.len() >= max_broadcasts && !announced.contains(&path)
        };
        if over_cap {
            return Err(too_many_broadcasts(session, max_broadcasts));
        }
        let fresh = match active {
            true => session.announced.borrow_mut().insert(path.clone()),
            false => session.announced.borrow_mut().remove(&path),
        };
        if fresh {
            debug!(session = session.id.id, broadcast = %path, active, "announce");
            session
                .shard
                .announce(&path, session.id, Arc::from(hops), active);
        }
    }
    let _ = send.finish();
    Ok(())
}

fn too_many_broadcasts<T: Transport>(session: &Session<T>, limit: usize) -> ReadError {
    debug!(
        session = session.id.id,
        limit, "relay.max_broadcasts_per_session reached"
    );
    session.shard.stats.broadcasts_refused_limit.inc();
    ReadError::Decode(DecodeError::InvalidValue {
        what: "announce: more broadcasts than relay.max_broadcasts_per_session",
    })
}

fn unknown_announce(id: u64) -> ReadError {
    debug!(id, "announce names an id that was never started");
    ReadError::Decode(DecodeError::InvalidValue {
        what: "announce id (never started)",
    })
}

impl<T: Transport> Session<T> {
    /// Subscribe upstream to `key` for `hub` (asked by the owner shard).
    pub fn subscribe_upstream(self: &Rc<Self>, key: TrackKey, hub: HubRef) {
        if self.upstream_ids.borrow().contains_key(&hub) {
            return;
        }
        let id = self.next_subscribe_id.get();
        self.next_subscribe_id.set(id + 1);
        let upstream = Rc::new(Upstream {
            hub,
            key,
            cancelled: Signal::default(),
            groups: GroupTally::default(),
            stops: RefCell::default(),
        });
        self.upstreams.borrow_mut().insert(id, upstream.clone());
        self.shard.stats.upstream_subscriptions_open.inc();
        self.upstream_ids.borrow_mut().insert(hub, id);
        self.spawn(run_upstream(self.clone(), id, upstream));
    }

    /// The owner no longer wants `hub`'s track.
    pub fn cancel_upstream(&self, hub: HubRef) {
        let Some(id) = self.upstream_ids.borrow_mut().remove(&hub) else {
            return;
        };
        if let Some(upstream) = self.upstreams.borrow_mut().remove(&id) {
            self.shard.stats.upstream_subscriptions_open.dec();
            upstream.cancelled.raise();
        }
    }

    /// The owner will not use the rest of group `sequence` of `hub`'s
    /// upstream: stop reading its stream.
    pub fn stop_group(&self, hub: HubRef, sequence: u64, code: StreamCode) {
        let Some(id) = self.upstream_ids.borrow().get(&hub).copied() else {
            return;
        };
        let upstream = self.upstreams.borrow().get(&id).cloned();
        let stop = upstream.and_then(|u| u.stops.borrow().get(&sequence).cloned());
        if let Some(stop) = stop {
            stop.code.set(code);
            stop.signal.raise();
        }
    }

    /// Another shard forwarded a FETCH for a group it does not hold: ask
    /// the peer (lite-05+; lite-04 has no FETCH, so NOT_FOUND) and send
    /// the answer back, bounded by `relay.fetch_timeout`.
    pub fn fetch_upstream(self: &Rc<Self>, fetch: FetchRef, request: UpstreamFetch) {
        let answer = FetchAnswer {
            shard: self.shard.clone(),
            fetch,
            ended: false,
        };
        if !self.version.has_track_stream() {
            debug!(session = self.id.id, track = %request.key, "fetch: a lite-04 peer has no FETCH");
            return answer.end(FetchEvent::Reset(StreamCode::NOT_FOUND));
        }
        let cancel = Rc::new(Signal::default());
        // A repeated id (never, ids are not reused) would cancel the first.
        if let Some(old) = self.fetches.borrow_mut().insert(fetch, cancel.clone()) {
            old.raise();
        }
        self.spawn(run_fetch(self.clone(), request, answer, cancel));
    }

    /// The shard that forwarded `fetch` no longer waits for it.
    pub fn cancel_fetch(&self, fetch: FetchRef) {
        if let Some(cancel) = self.fetches.borrow_mut().remove(&fetch) {
            cancel.raise();
        }
    }

    /// Every upstream subscription ends with the session: clean ends for
    /// the hubs, so subscribers see the publisher leave.
    pub fn end_upstreams(&self) {
        let upstreams: Vec<_> = self.upstreams.borrow_mut().drain().collect();
        self.shard
            .stats
            .upstream_subscriptions_open
            .sub(upstreams.len() as u64);
        self.upstream_ids.borrow_mut().clear();
        for (_, upstream) in upstreams {
            upstream.cancelled.raise();
            self.shard.to_hub(upstream.hub, MediaEvent::vanished());
        }
    }
}

async fn run_upstream<T: Transport>(session: Rc<Session<T>>, id: u64, upstream: Rc<Upstream>) {
    let hub = upstream.hub;
    let Some(broadcast) = session.relative(&upstream.key.broadcast).map(str::to_owned) else {
        session
            .shard
            .to_hub(hub, MediaEvent::track_end(Some(StreamCode::NOT_FOUND)));
        return;
    };
    debug!(session = session.id.id, id, track = %upstream.key, "subscribing upstream");
    if session.version.has_track_stream() {
        session.spawn(fetch_properties(
            session.clone(),
            upstream.clone(),
            broadcast.clone(),
        ));
    } else {
        // Lite-04 frames carry no timestamps: the relay stamps arrival time
        // in milliseconds, so the properties are the defaults.
        session
            .shard
            .to_hub(hub, MediaEvent::Properties(TrackProperties::default()));
    }
    let request = Subscribe {
        id,
        broadcast,
        track: upstream.key.track.clone(),
        priority: 0,
        max_latency: 0,
        start_group: None,
        end_group: None,
        start_frame: 0,
        end_frame: None,
    };
    let end = race(
        subscribe_stream(&session, request),
        race(upstream.cancelled.raised(), session.closed.raised()),
    )
    .await;
    match end {
        Either::Left(Ended {
            code,
            mut send,
            end,
        }) => {
            if code.is_none() {
                // Only lite-06 ENDs are taken at their word (exclusive).
                let end = end.filter(|_| session.version >= Version::Lite06);
                let stop = race(upstream.cancelled.raised(), session.closed.raised());
                let groups = &upstream.groups;
                groups.touch();
                tail::wait_until(tail::UPSTREAM_LIMIT, stop, |now| groups.settled(end, now)).await;
            }
            // The publisher ended the subscription: tell the hub, unless it
            // was the hub that cancelled it meanwhile (or the session ended).
            if session.upstreams.borrow_mut().remove(&id).is_some() {
                session.shard.stats.upstream_subscriptions_open.dec();
                session.upstream_ids.borrow_mut().remove(&hub);
                session.shard.to_hub(hub, MediaEvent::track_end(code));
            }
            if let Some(send) = send.as_mut() {
                let _ = send.finish();
            }
        }
        // Cancelled: dropping the stream halves stops and finishes them.
        Either::Right(_) => {}
    }
}

/// How the publisher ended a SUBSCRIBE stream.
struct Ended<S> {
    /// `None` for a clean end, else the reset code.
    code: Option<StreamCode>,
    send: Option<S>,
    /// The sequence SUBSCRIBE_END named, if it sent one.
    end: Option<u64>,
}

/// Run one SUBSCRIBE stream until the publisher ends it.
async fn subscribe_stream<T: Transport>(
    session: &Rc<Session<T>>,
    request: Subscribe,
) -> Ended<T::Send> {
    let failed = |send| Ended {
        code: Some(StreamCode::CANCEL),
        send,
        end: None,
    };
    let Ok((mut send, recv)) = session.transport.open_bi().await else {
        return failed(None);
    };
    if send
        .write_chunk(session.encode(&[&BidiType::Subscribe, &request]))
        .await
        .is_err()
    {
        return failed(Some(send));
    }
    let mut reader = session.reader(recv, bytes::Bytes::new());
    let mut end = None;
    let code = loop {
        match reader.decode::<SubscribeReply>().await {
            Ok(Some(SubscribeReply::Drop(drop))) => {
                debug!(id = request.id, ?drop, "upstream dropped groups");
            }
            Ok(Some(reply)) => {
                debug!(id = request.id, ?reply, "upstream reply");
                if let SubscribeReply::End { group } = reply {
                    end = Some(group);
                }
            }
            Ok(None) => break None,
            Err(e @ ReadError::Stream(qumo_shards::ReadStreamError::Reset(_))) => {
                break Some(e.stream_code(&session.transport));
            }
            // The publisher went away: its tracks end cleanly (the session's
            // close ends them, see `end_upstreams`).
            Err(ReadError::Stream(qumo_shards::ReadStreamError::ConnectionLost(_))) => break None,
            Err(e) => {
                warn!(session = session.id.id, id = request.id, error = %e, "upstream subscribe failed");
                break Some(StreamCode::CANCEL);
            }
        }
    };
    Ended {
        code,
        send: Some(send),
        end,
    }
}

/// Lite-05+: ask the publisher for the track's properties (its timescale
/// above all) and pass them to the hub.
async fn fetch_properties<T: Transport>(
    session: Rc<Session<T>>,
    upstream: Rc<Upstream>,
    broadcast: String,
) {
    let fetch = async {
        let (mut send, recv) = session.transport.open_bi().await.ok()?;
        let request = TrackRequest {
            broadcast,
            track: upstream.key.track.clone(),
        };
        send.write_chunk(session.encode(&[&BidiType::Track, &request]))
            .await
            .ok()?;
        let _ = send.finish();
        let mut reader = session.reader(recv, bytes::Bytes::new());
        reader.expect::<TrackInfo>().await.ok()
    };
    let properties = match race(fetch, upstream.cancelled.raised()).await {
        Either::Left(Some(info)) => TrackProperties {
            priority: info.priority,
            max_latency: info.max_latency,
            timescale: info.timescale,
        },
        // No answer: frames keep the publisher's timestamps; say ms.
        Either::Left(None) => TrackProperties::default(),
        Either::Right(()) => return,
    };
    session
        .shard
        .to_hub(upstream.hub, MediaEvent::Properties(properties));
}

/// A GROUP stream from the peer: forward its frames to the hub.
pub async fn group<T: Transport>(session: Rc<Session<T>>, mut reader: StreamReader<T::Recv>) {
    let header: GroupHeader = match reader.expect().await {
        Ok(header) => header,
        Err(ReadError::Stream(_)) => return,
        Err(e) => return session.violation("GROUP", &e),
    };
    let Some(upstream) = session.upstreams.borrow().get(&header.subscribe).cloned() else {
        // A subscription we cancelled (or never made): not wanted.
        return session.stop(&mut reader, StreamCode::CANCEL);
    };
    let hub = upstream.hub;
    let sequence = header.sequence;
    let _open = upstream.groups.track(sequence);
    session.shard.to_hub(hub, MediaEvent::Group { sequence });
    reader.limits_mut().max_frame = session.shard.settings.max_frame_size;

    let stop = Rc::new(GroupStop {
        code: Cell::new(StreamCode::CANCEL),
        signal: Signal::default(),
    });
    upstream.stops.borrow_mut().insert(sequence, stop.clone());
    let frames = read_frames(&session, &mut reader, hub, sequence);
    let end = match race(
        frames,
        race(upstream.cancelled.raised(), stop.signal.raised()),
    )
    .await
    {
        Either::Left(end) => end,
        Either::Right(Either::Left(())) => Err(StreamCode::CANCEL),
        Either::Right(Either::Right(())) => Err(stop.code.get()),
    };
    {
        // A repeated sequence (a hostile peer) may have replaced our entry.
        let mut stops = upstream.stops.borrow_mut();
        if stops.get(&sequence).is_some_and(|s| Rc::ptr_eq(s, &stop)) {
            stops.remove(&sequence);
        }
    }
    match end {
        Ok(()) => session.shard.to_hub(hub, MediaEvent::GroupEnd { sequence }),
        Err(code) => {
            session.stop(&mut reader, code);
            session
                .shard
                .to_hub(hub, MediaEvent::GroupReset { sequence, code });
        }
    }
}

async fn read_frames<T: Transport>(
    session: &Rc<Session<T>>,
    reader: &mut StreamReader<T::Recv>,
    hub: HubRef,
    sequence: u64,
) -> Result<(), StreamCode> {
    let mut timestamps = Timestamps::default();
    let max_frames = session.shard.settings.max_frames_per_group;
    let mut frames = 0usize;
    loop {
        match reader.at_end().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return Err(e.stream_code(&session.transport)),
        }
        let header: FrameHeader = match reader.expect().await {
            Ok(header) => header,
            Err(ReadError::Decode(DecodeError::TooLong { .. })) => {
                debug!(session = session.id.id, "frame over relay.max_frame_size");
                session.shard.stats.frames_too_large.inc();
                return Err(StreamCode::FRAME_TOO_LARGE);
            }
            Err(ReadError::Decode(e)) => {
                session.violation("FRAME", &e);
                return Err(StreamCode::CANCEL);
            }
            Err(e) => return Err(e.stream_code(&session.transport)),
        };
        frames += 1;
        if frames > max_frames {
            debug!(
                session = session.id.id,
                max_frames, "group over relay.max_frames_per_group"
            );
            session.shard.stats.groups_too_many_frames.inc();
            return Err(StreamCode::GROUP_TOO_LARGE);
        }
        let timestamp = match header.timestamp_delta {
            Some(delta) => match timestamps.apply(delta) {
                Ok(ts) => ts,
                Err(e) => {
                    session.violation("FRAME timestamp", &e);
                    return Err(StreamCode::CANCEL);
                }
            },
            None => arrival_ms(),
        };
        if session.frame_budget.would_wait(header.size) {
            session.shard.stats.frames_waited_for_buffer.inc();
        }
        let _reserved = session.frame_budget.reserve(header.size).await;
        let payload = match reader.payload(header.size as usize).await {
            Ok(payload) => payload,
            Err(e) => return Err(e.stream_code(&session.transport)),
        };
        // An owner or subscriber shard that falls behind must slow the
        // publisher (its flow control then holds it back), not queue.
        session.shard.mesh_clear().await;
        session.shard.to_hub(
            hub,
            MediaEvent::Frame {
                sequence,
                timestamp,
                payload,
                extensions: None,
            },
        );
    }
}

/// The answer of a forwarded FETCH, on its way back to the requesting
/// shard. Dropped before its last word (a panic, say), it says CANCEL, so
/// the requester never waits out its deadline for nothing.
struct FetchAnswer {
    shard: Rc<Shard>,
    fetch: FetchRef,
    ended: bool,
}

impl FetchAnswer {
    fn frame(&self, timestamp: u64, payload: bytes::Bytes) {
        let event = FetchEvent::Frame { timestamp, payload };
        self.shard.fetch_reply(self.fetch, event);
    }

    fn end(mut self, event: FetchEvent) {
        self.ended = true;
        self.shard.fetch_reply(self.fetch, event);
    }
}

impl Drop for FetchAnswer {
    fn drop(&mut self) {
        if !self.ended {
            let event = FetchEvent::Reset(StreamCode::CANCEL);
            self.shard.fetch_reply(self.fetch, event);
        }
    }
}

async fn run_fetch<T: Transport>(
    session: Rc<Session<T>>,
    request: UpstreamFetch,
    answer: FetchAnswer,
    cancel: Rc<Signal>,
) {
    let fetch = answer.fetch;
    debug!(session = session.id.id, track = %request.key, group = request.group, "fetching upstream");
    let deadline = monoio::time::sleep(session.shard.settings.fetch_timeout);
    let stopped = async {
        match race(cancel.raised(), race(session.closed.raised(), deadline)).await {
            // The requester gave up: CANCEL, for nobody.
            Either::Left(()) => StreamCode::CANCEL,
            // As a group its publisher left open: cut short.
            Either::Right(Either::Left(())) => StreamCode::SESSION_CLOSED,
            Either::Right(Either::Right(())) => StreamCode::DELIVERY_TIMEOUT,
        }
    };
    let last = match fetch_from_peer(&session, &request, &answer, stopped).await {
        Ok(()) => FetchEvent::End,
        Err(code) => FetchEvent::Reset(code),
    };
    debug!(session = session.id.id, track = %request.key, group = request.group, ?last, "upstream fetch over");
    {
        let mut fetches = session.fetches.borrow_mut();
        if fetches.get(&fetch).is_some_and(|c| Rc::ptr_eq(c, &cancel)) {
            fetches.remove(&fetch);
        }
    }
    answer.end(last);
}

/// FETCH the whole group from the peer and pass its frames on as they
/// come until `stopped` says why not: `Ok` at its FIN, else the code the
/// answer ends with (the peer's own reset code passes through). The group
/// is bounded like a cached one (`relay.max_frame_size`,
/// `relay.max_frames_per_group`, `relay.max_cached_bytes_per_track`).
async fn fetch_from_peer<T: Transport>(
    session: &Rc<Session<T>>,
    request: &UpstreamFetch,
    answer: &FetchAnswer,
    stopped: impl std::future::Future<Output = StreamCode>,
) -> Result<(), StreamCode> {
    let mut stopped = std::pin::pin!(stopped);
    let Some(broadcast) = session.relative(&request.key.broadcast).map(str::to_owned) else {
        return Err(StreamCode::NOT_FOUND);
    };
    let (mut send, recv) = match race(session.transport.open_bi(), stopped.as_mut()).await {
        Either::Left(Ok(stream)) => stream,
        Either::Left(Err(_)) => return Err(StreamCode::SESSION_CLOSED),
        Either::Right(code) => return Err(code),
    };
    let fetch = Fetch {
        broadcast,
        track: request.key.track.clone(),
        priority: request.priority,
        group: request.group,
        start_frame: 0,
        end_frame: None,
    };
    let mut reader = session.reader(recv, bytes::Bytes::new());
    reader.limits_mut().max_frame = session.shard.settings.max_frame_size;
    let exchange = async {
        // A write refused (the peer stopped the stream, or left) shows in
        // the read, with the peer's code.
        let _ = send
            .write_chunk(session.encode(&[&BidiType::Fetch, &fetch]))
            .await;
        read_fetched(session, &mut reader, request, answer).await
    };
    let result = match race(exchange, stopped).await {
        Either::Left(result) => result,
        Either::Right(code) => Err(code),
    };
    match result {
        Ok(()) => {
            let _ = send.finish();
        }
        // Neither side of the stream is wanted any more.
        Err(code) => {
            session.stop(&mut reader, StreamCode::CANCEL);
            session.reset(&mut send, StreamCode::CANCEL);
            debug!(session = session.id.id, %code, "upstream fetch stream abandoned");
        }
    }
    result
}

/// How often a forwarded FETCH whose requester lags looks at its window
/// again. Only a requester that does not read makes it wait, so a short
/// poll is cheaper than a wake-up across shards for every frame.
const FETCH_WINDOW_POLL: std::time::Duration = std::time::Duration::from_millis(5);

async fn read_fetched<T: Transport>(
    session: &Rc<Session<T>>,
    reader: &mut StreamReader<T::Recv>,
    request: &UpstreamFetch,
    answer: &FetchAnswer,
) -> Result<(), StreamCode> {
    let settings = &session.shard.settings;
    let window = &request.window;
    let mut timestamps = Timestamps::default();
    let (mut frames, mut bytes) = (0usize, 0u64);
    loop {
        match reader.at_end().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return Err(e.stream_code(&session.transport)),
        }
        let header: FrameHeader = match reader.expect().await {
            Ok(header) => header,
            Err(ReadError::Decode(DecodeError::TooLong { .. })) => {
                session.shard.stats.frames_too_large.inc();
                return Err(StreamCode::FRAME_TOO_LARGE);
            }
            // A malformed answer fails this fetch, not the session: the
            // peer's FETCH answers are outside the session's protocol state.
            Err(ReadError::Decode(e)) => {
                debug!(session = session.id.id, error = %e, "malformed FETCH answer");
                return Err(StreamCode::CANCEL);
            }
            Err(e) => return Err(e.stream_code(&session.transport)),
        };
        frames += 1;
        bytes = bytes.saturating_add(header.size);
        if frames > settings.max_frames_per_group || bytes > settings.max_cached_bytes_per_track {
            debug!(
                session = session.id.id,
                frames, bytes, "fetched group over its bounds"
            );
            return Err(StreamCode::GROUP_TOO_LARGE);
        }
        let timestamp = match header.timestamp_delta {
            Some(delta) => timestamps.apply(delta).map_err(|_| StreamCode::CANCEL)?,
            None => arrival_ms(),
        };
        let _reserved = session.frame_budget.reserve(header.size).await;
        let payload = match reader.payload(header.size as usize).await {
            Ok(payload) => payload,
            Err(e) => return Err(e.stream_code(&session.transport)),
        };
        session.shard.mesh_clear().await;
        // A requester that does not read holds the peer back, not memory.
        while window.full() {
            monoio::time::sleep(FETCH_WINDOW_POLL).await;
        }
        window.sent(payload.len() as u64);
        answer.frame(timestamp, payload);
    }
}

/// The peer's QUIC datagrams (lite-05+): each a one-frame group of a
/// subscription of ours, forwarded to its hub as it comes. Never a
/// protocol error: one for no subscription of ours (cancelled, never made),
/// malformed, or arriving while the mesh is congested is dropped and
/// counted, as moq-net drops it.
pub async fn datagrams<T: Transport>(session: Rc<Session<T>>) {
    let stats = &session.shard.stats;
    loop {
        let received = race(session.transport.recv_datagram(), session.closed.raised()).await;
        let Either::Left(Some(datagram)) = received else {
            return;
        };
        let Ok((header, payload)) = DatagramHeader::decode(&datagram, session.version) else {
            stats.datagrams_dropped.inc();
            continue;
        };
        let hub = session
            .upstreams
            .borrow()
            .get(&header.subscribe)
            .map(|upstream| upstream.hub);
        let Some(hub) = hub else {
            stats.datagrams_dropped.inc();
            continue;
        };
        let payload = datagram.slice_ref(payload);
        session.shard.datagram_to_hub(
            hub,
            MediaEvent::Datagram(Datagram {
                sequence: header.sequence,
                object: 0,
                end_of_group: true,
                timestamp: header.timestamp,
                payload,
                extensions: None,
            }),
        );
    }
}
