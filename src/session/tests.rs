//! Sessions on in-memory transports: the relay side is `run` on one end of
//! a `MemoryTransport` pair with a standalone shard; the other end is a
//! scripted moq-lite peer using the relay's codec (as tests/support/lite.rs
//! does over real QUIC). What the process tests prove about the binary, at
//! this level too: setup, media delivery, limits, bad input, slow
//! subscribers, a publisher leaving. Every wait has a deadline; no sleeps.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use qumo_shards::{ReadStreamError, VarInt};

use super::memory::{MemoryLimits, MemoryRecv, MemorySend, MemoryTransport, DATAGRAM_QUEUE};
use super::reader::{ReadError, StreamReader};
use super::run;
use super::state::EncodeDyn;
use super::transport::{Estimate, SendStream, Transport};
use crate::config::Config;
use crate::lite::{
    Announce, AnnounceOk, AnnounceRequest, BidiType, Cost, DatagramHeader, Decode, Fetch,
    FrameHeader, GroupHeader, Limits, Probe, ProbeLevel, SessionCode, Setup, StreamCode, Subscribe,
    SubscribeOk, SubscribeReply, Timestamps, TrackInfo, TrackRequest, UniType, Version,
};
use crate::metrics::RelayStats;
use crate::shard::{Settings, Shard};

/// Far above anything a step takes, even on a loaded CI box.
const DEADLINE: Duration = Duration::from_secs(10);

pub(crate) const BROADCAST: &str = "live";

pub(crate) fn settings() -> Settings {
    Settings::from_config(&Config::default())
}

pub(crate) fn shard(settings: Settings) -> Rc<Shard> {
    Shard::standalone(settings, Arc::new(RelayStats::default()))
}

pub(crate) async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match monoio::time::timeout(DEADLINE, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: nothing within {DEADLINE:?}"),
    }
}

fn encode(version: Version, parts: &[&dyn EncodeDyn]) -> Bytes {
    let mut buf = bytes::BytesMut::new();
    for part in parts {
        part.encode_dyn(&mut buf, version).expect("encodable");
    }
    buf.freeze()
}

/// The wire form of a moq-lite stream code, as the relay sends it.
fn wire(code: StreamCode) -> VarInt {
    crate::webtransport::error_code(code.0)
}

pub(crate) type Reader = StreamReader<MemoryRecv>;

/// A scripted moq-lite peer on the far end of a memory pair.
pub(crate) struct Peer {
    pub(crate) transport: MemoryTransport,
    version: Version,
}

impl Peer {
    /// Start a relay session for a new peer; lite-05+ peers exchange
    /// SETUPs, the relay's is returned.
    pub(crate) async fn connect(
        shard: &Rc<Shard>,
        version: Version,
        limits: MemoryLimits,
    ) -> (Peer, Option<Setup>) {
        let peer = Peer::silent(shard, version, limits);
        if !version.has_setup() {
            return (peer, None);
        }
        let setup = Setup {
            probe: ProbeLevel::None,
            path: None,
            role: None,
            cost: None,
            hop: None,
        };
        let mut send = peer.transport.open_uni().await.unwrap();
        send.write_chunk(encode(version, &[&UniType::Setup, &setup]))
            .await
            .unwrap();
        send.finish().unwrap();
        let (mut reader, kind) = peer.accept_uni().await;
        assert_eq!(kind, UniType::Setup);
        let theirs = reader.expect::<Setup>().await.unwrap();
        (peer, Some(theirs))
    }

    /// As [`Peer::connect`] (lite-05+), the relay's end reporting
    /// `estimate` as its congestion controller's; that end is returned to
    /// change it.
    async fn connect_estimating(
        shard: &Rc<Shard>,
        version: Version,
        estimate: Estimate,
    ) -> (Peer, Setup, MemoryTransport) {
        let (relay, transport) = MemoryTransport::pair();
        relay.set_estimate(estimate);
        monoio::spawn(run(shard.clone(), relay.clone(), version, String::new()));
        let peer = Peer { transport, version };
        let setup = Setup {
            probe: ProbeLevel::Report,
            path: None,
            role: None,
            cost: None,
            hop: None,
        };
        let mut send = peer.transport.open_uni().await.unwrap();
        send.write_chunk(encode(version, &[&UniType::Setup, &setup]))
            .await
            .unwrap();
        send.finish().unwrap();
        let (mut reader, _) = peer.accept_uni().await;
        let theirs = reader.expect::<Setup>().await.unwrap();
        (peer, theirs, relay)
    }

    /// A relay session whose peer has said nothing yet.
    fn silent(shard: &Rc<Shard>, version: Version, limits: MemoryLimits) -> Peer {
        let (relay, transport) = MemoryTransport::pair_with(limits);
        monoio::spawn(run(shard.clone(), relay, version, String::new()));
        Peer { transport, version }
    }

    fn reader(&self, recv: MemoryRecv) -> Reader {
        StreamReader::new(
            recv,
            Bytes::new(),
            self.version,
            Limits::default(),
            64 << 10,
        )
    }

    /// Open a control stream with its first message.
    /// A SUBSCRIBE stream for `track` of `BROADCAST` (for other modules'
    /// tests, which cannot name the codec's object-safe trait).
    pub(crate) async fn open_subscribe(&self, id: u64, track: &str) -> (MemorySend, Reader) {
        self.open(BidiType::Subscribe, &self.subscribe(id, track))
            .await
    }

    async fn open(&self, kind: BidiType, msg: &dyn EncodeDyn) -> (MemorySend, Reader) {
        let (mut send, recv) = self.transport.open_bi().await.unwrap();
        send.write_chunk(encode(self.version, &[&kind, msg]))
            .await
            .unwrap();
        (send, self.reader(recv))
    }

    /// The relay's next control stream to us and its type.
    async fn accept_bi(&self) -> (MemorySend, Reader, BidiType) {
        let (send, recv, _) = within("a stream from the relay", self.transport.accept_bi())
            .await
            .unwrap();
        let mut reader = self.reader(recv);
        let kind = reader.expect::<BidiType>().await.unwrap();
        (send, reader, kind)
    }

    async fn accept_uni(&self) -> (Reader, UniType) {
        let (recv, _) = within("a uni stream from the relay", self.transport.accept_uni())
            .await
            .unwrap();
        let mut reader = self.reader(recv);
        let kind = reader.expect::<UniType>().await.unwrap();
        (reader, kind)
    }

    async fn close_code(&self) -> SessionCode {
        within("the session's close", self.transport.closed()).await;
        self.transport.close_reason().unwrap().code
    }

    fn subscribe(&self, id: u64, track: &str) -> Subscribe {
        Subscribe {
            id,
            broadcast: BROADCAST.into(),
            track: track.into(),
            priority: 0,
            max_latency: 0,
            start_group: None,
            end_group: None,
            start_frame: 0,
            end_frame: None,
        }
    }

    /// Ask for announcements and wait until `BROADCAST` is active.
    pub(crate) async fn wait_announced(&self) -> (MemorySend, Reader) {
        let request = AnnounceRequest {
            prefix: String::new(),
            exclude_hop: 0,
        };
        let (send, mut reader) = self.open(BidiType::Announce, &request).await;
        if self.version.has_announce_ok() {
            within("ANNOUNCE_OK", reader.expect::<AnnounceOk>())
                .await
                .unwrap();
        }
        loop {
            match within("the announcement", reader.expect::<Announce>())
                .await
                .unwrap()
            {
                Announce::Active { suffix, .. } | Announce::Start { suffix, .. }
                    if suffix == BROADCAST =>
                {
                    return (send, reader)
                }
                _ => {}
            }
        }
    }
}

/// The relay's upstream SUBSCRIBEs as a publisher received them, with the
/// SUBSCRIBE stream's halves.
pub(crate) type Upstream = (Subscribe, MemorySend, Reader);

/// A peer that announces `BROADCAST` and, from a task of its own, answers
/// the relay's TRACK requests and queues its SUBSCRIBEs.
pub(crate) struct Publisher {
    pub(crate) peer: Rc<Peer>,
    subscribes: Rc<Inbox<Upstream>>,
    /// The relay's FETCHes, for the test to answer.
    fetches: Rc<Inbox<(Fetch, MemorySend, Reader)>>,
    /// Our answer to the relay's ANNOUNCE_REQUEST, kept open.
    _announce: MemorySend,
}

/// A queue one task fills and another waits on.
struct Inbox<T> {
    items: std::cell::RefCell<std::collections::VecDeque<T>>,
    waker: std::cell::RefCell<Option<std::task::Waker>>,
}

impl<T> Inbox<T> {
    fn push(&self, item: T) {
        self.items.borrow_mut().push_back(item);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    async fn next(&self) -> T {
        std::future::poll_fn(|cx| match self.items.borrow_mut().pop_front() {
            Some(item) => std::task::Poll::Ready(item),
            None => {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }
}

impl Publisher {
    pub(crate) async fn connect(shard: &Rc<Shard>, version: Version) -> Publisher {
        let peer = Peer::connect(shard, version, MemoryLimits::default())
            .await
            .0;
        let (mut send, mut reader, kind) = peer.accept_bi().await;
        assert_eq!(kind, BidiType::Announce);
        reader.expect::<AnnounceRequest>().await.unwrap();
        let suffix = BROADCAST.to_string();
        let announce = match version.has_announce_id() {
            true => Announce::Start {
                suffix,
                hops: Vec::new(),
                cost: Cost::default(),
            },
            false => Announce::Active {
                suffix,
                hops: Vec::new(),
            },
        };
        let ok = AnnounceOk { hop: 0, active: 1 };
        let reply = match version.has_announce_ok() {
            true => encode(version, &[&ok, &announce]),
            false => encode(version, &[&announce]),
        };
        send.write_chunk(reply).await.unwrap();
        let peer = Rc::new(peer);
        let subscribes = Rc::new(Inbox {
            items: Default::default(),
            waker: Default::default(),
        });
        let fetches = Rc::new(Inbox {
            items: Default::default(),
            waker: Default::default(),
        });
        monoio::spawn(answer_requests(
            peer.clone(),
            subscribes.clone(),
            fetches.clone(),
        ));
        Publisher {
            peer,
            subscribes,
            fetches,
            _announce: send,
        }
    }

    /// The relay's next upstream SUBSCRIBE.
    pub(crate) async fn next_subscribe(&self) -> Upstream {
        self.subscribes.next().await
    }

    /// The relay's next FETCH, with its stream's halves.
    async fn next_fetch(&self) -> (Fetch, MemorySend, Reader) {
        within("a FETCH from the relay", self.fetches.next()).await
    }

    /// Answer a FETCH with `frames`, as moq-net does: bare FRAMEs, the
    /// timestamps against 0 from the first.
    async fn answer_fetch(&self, send: &mut MemorySend, frames: &[(u64, Bytes)]) {
        let version = self.peer.version;
        let mut timestamps = Timestamps::default();
        for (timestamp, payload) in frames {
            let head = FrameHeader {
                timestamp_delta: Some(timestamps.delta(*timestamp).unwrap()),
                size: payload.len() as u64,
            };
            send.write_chunk(encode(version, &[&head])).await.unwrap();
            send.write_chunk(payload.clone()).await.unwrap();
        }
    }

    /// Open a GROUP stream and write `frames` (timestamp, payload); the
    /// stream is left open for the caller to finish or abandon.
    pub(crate) async fn send_group(
        &self,
        subscribe: u64,
        sequence: u64,
        frames: &[(u64, Bytes)],
    ) -> MemorySend {
        let version = self.peer.version;
        let mut send = self.peer.transport.open_uni().await.unwrap();
        let header = GroupHeader {
            subscribe,
            sequence,
            frame_start: 0,
        };
        send.write_chunk(encode(version, &[&UniType::Group, &header]))
            .await
            .unwrap();
        let mut timestamps = Timestamps::default();
        for (timestamp, payload) in frames {
            let head = FrameHeader {
                timestamp_delta: version
                    .has_frame_timestamps()
                    .then(|| timestamps.delta(*timestamp).unwrap()),
                size: payload.len() as u64,
            };
            send.write_chunk(encode(version, &[&head])).await.unwrap();
            send.write_chunk(payload.clone()).await.unwrap();
        }
        send
    }
}

/// Answer the relay's TRACK requests; queue its SUBSCRIBEs (lite-04 ones
/// answered with SUBSCRIBE_OK) and FETCHes.
async fn answer_requests(
    peer: Rc<Peer>,
    subscribes: Rc<Inbox<Upstream>>,
    fetches: Rc<Inbox<(Fetch, MemorySend, Reader)>>,
) {
    let version = peer.version;
    while let Ok((mut send, recv, _)) = peer.transport.accept_bi().await {
        let mut reader = peer.reader(recv);
        match reader.expect::<BidiType>().await {
            Ok(BidiType::Track) => {
                let _ = reader.expect::<TrackRequest>().await;
                let info = TrackInfo {
                    priority: 0,
                    max_latency: 0,
                    timescale: 90_000,
                };
                let _ = send.write_chunk(encode(version, &[&info])).await;
                let _ = send.finish();
            }
            Ok(BidiType::Subscribe) => {
                let Ok(request) = reader.expect::<Subscribe>().await else {
                    continue;
                };
                if !version.has_track_stream() {
                    let ok = SubscribeReply::Ok(SubscribeOk {
                        priority: 0,
                        max_latency: 0,
                        start_group: None,
                        end_group: None,
                    });
                    let _ = send.write_chunk(encode(version, &[&ok])).await;
                }
                subscribes.push((request, send, reader));
            }
            Ok(BidiType::Fetch) => {
                if let Ok(request) = reader.expect::<Fetch>().await {
                    fetches.push((request, send, reader));
                }
            }
            other => panic!("unexpected {other:?} from the relay"),
        }
    }
}

/// A GROUP stream as the subscriber reads it: header, then frames.
pub(crate) struct ReceivedGroup {
    pub(crate) header: GroupHeader,
    reader: Reader,
    timestamps: Timestamps,
}

impl ReceivedGroup {
    pub(crate) async fn accept(peer: &Peer) -> ReceivedGroup {
        let (mut reader, kind) = peer.accept_uni().await;
        assert_eq!(kind, UniType::Group);
        let header = within("GROUP header", reader.expect::<GroupHeader>())
            .await
            .unwrap();
        ReceivedGroup {
            header,
            reader,
            timestamps: Timestamps::default(),
        }
    }

    /// The next frame (timestamp where the version has one, payload), or
    /// `None` at the group's clean end.
    pub(crate) async fn frame(&mut self) -> Result<Option<(Option<u64>, Bytes)>, ReadError> {
        let reader = &mut self.reader;
        if within("a frame", reader.at_end()).await? {
            return Ok(None);
        }
        let head: FrameHeader = within("a frame header", reader.expect()).await?;
        let timestamp = head
            .timestamp_delta
            .map(|d| self.timestamps.apply(d).unwrap());
        let payload = within("a payload", reader.payload(head.size as usize)).await?;
        Ok(Some((timestamp, payload)))
    }
}

pub(crate) fn frames(count: usize, size: usize) -> Vec<(u64, Bytes)> {
    (0..count)
        .map(|i| (1000 + 3000 * i as u64, Bytes::from(vec![i as u8; size])))
        .collect()
}

fn is_reset(result: &Result<impl std::fmt::Debug, ReadError>, code: StreamCode) -> bool {
    matches!(result, Err(ReadError::Stream(ReadStreamError::Reset(c))) if *c == wire(code))
}

#[monoio::test(enable_timer = true)]
async fn setup_is_exchanged_in_every_version_and_silence_times_out() {
    let shard = crate::session::tests::shard(settings());
    let mut hasty = settings();
    hasty.setup_timeout = Duration::from_millis(200);
    let hasty = crate::session::tests::shard(hasty);
    for version in Version::ALL {
        let (peer, setup) = Peer::connect(&shard, version, MemoryLimits::default()).await;
        if version.has_setup() {
            assert_eq!(setup.unwrap().hop, Some(shard.hop), "{version}");
        }
        // The relay then asks what we publish, under the root.
        let (_send, mut reader, kind) = peer.accept_bi().await;
        assert_eq!(kind, BidiType::Announce, "{version}");
        let request = reader.expect::<AnnounceRequest>().await.unwrap();
        assert_eq!(request.prefix, "", "{version}");

        // A peer that never sends SETUP (nor, on lite-04, anything).
        let silent = Peer::silent(&hasty, version, MemoryLimits::default());
        assert_eq!(silent.close_code().await, SessionCode::TIMEOUT, "{version}");
        drop(peer);
    }
    assert_eq!(
        hasty.stats.sessions_setup_timeouts.get(),
        Version::ALL.len() as u64
    );
}

#[monoio::test(enable_timer = true)]
async fn media_reaches_the_subscriber_across_versions() {
    let pairs = [
        (Version::Lite05, Version::Lite06),
        (Version::Lite06, Version::Lite05),
        (Version::Lite04, Version::Lite06),
        (Version::Lite06, Version::Lite04),
    ];
    for (publishing, subscribing) in pairs {
        let shard = shard(settings());
        let publisher = Publisher::connect(&shard, publishing).await;
        let subscriber = Peer::connect(&shard, subscribing, MemoryLimits::default())
            .await
            .0;
        let _announce = subscriber.wait_announced().await;
        let _subscription = subscriber
            .open(BidiType::Subscribe, &subscriber.subscribe(7, "video"))
            .await;
        let (upstream, _send, _reader) =
            within("upstream SUBSCRIBE", publisher.next_subscribe()).await;
        assert_eq!(
            (upstream.broadcast.as_str(), upstream.track.as_str()),
            (BROADCAST, "video")
        );

        let sent = frames(5, 300);
        let mut group = publisher.send_group(upstream.id, 0, &sent).await;
        group.finish().unwrap();

        let mut received = ReceivedGroup::accept(&subscriber).await;
        assert_eq!(
            (received.header.subscribe, received.header.sequence),
            (7, 0)
        );
        for (timestamp, payload) in &sent {
            let (got_timestamp, got) = received.frame().await.unwrap().expect("a frame");
            assert_eq!(&got, payload, "{publishing} -> {subscribing}");
            // Timestamps pass through when both ends carry them.
            if publishing.has_frame_timestamps() && subscribing.has_frame_timestamps() {
                assert_eq!(got_timestamp, Some(*timestamp));
            }
            assert_eq!(got_timestamp.is_some(), subscribing.has_frame_timestamps());
        }
        assert!(received.frame().await.unwrap().is_none(), "the group ends");
    }
}

#[monoio::test(enable_timer = true)]
async fn subscriptions_and_track_requests_share_the_per_session_limit() {
    let mut settings = settings();
    settings.max_subscriptions_per_session = 2;
    let shard = shard(settings);
    let publisher = Publisher::connect(&shard, Version::Lite05).await;
    let subscriber = Peer::connect(&shard, Version::Lite05, MemoryLimits::default())
        .await
        .0;
    let _announce = subscriber.wait_announced().await;

    let (a_send, _a) = subscriber
        .open(BidiType::Subscribe, &subscriber.subscribe(1, "a"))
        .await;
    let (_b_send, _b) = subscriber
        .open(BidiType::Subscribe, &subscriber.subscribe(2, "b"))
        .await;
    let first = within("upstream 1", publisher.next_subscribe()).await;
    let second = within("upstream 2", publisher.next_subscribe()).await;
    // Each SUBSCRIBE is its own task: their upstreams come in either order.
    let (a_upstream, b_upstream) = match first.0.track == "a" {
        true => (first, second),
        false => (second, first),
    };
    assert_eq!(
        (a_upstream.0.track.as_str(), b_upstream.0.track.as_str()),
        ("a", "b")
    );
    let mut a_upstream = a_upstream.2;

    // Full: a third SUBSCRIBE and a TRACK request are both refused.
    let (_c_send, mut c) = subscriber
        .open(BidiType::Subscribe, &subscriber.subscribe(3, "c"))
        .await;
    assert!(is_reset(
        &within("refusal", c.decode::<SubscribeReply>()).await,
        StreamCode::NO_CAPACITY
    ));
    let track = |name: &str| TrackRequest {
        broadcast: BROADCAST.into(),
        track: name.into(),
    };
    let (_d_send, mut d) = subscriber.open(BidiType::Track, &track("d")).await;
    assert!(is_reset(
        &within("refusal", d.decode::<TrackInfo>()).await,
        StreamCode::NO_CAPACITY
    ));

    // Cancel "a"; once the relay has let go of it upstream, its slot is free.
    drop(a_send);
    let _ = within("upstream a ends", a_upstream.discard_to_end()).await;

    // TRACK then SUBSCRIBE for the same track costs one slot, not two.
    let (_e_send, mut e) = subscriber.open(BidiType::Track, &track("e")).await;
    let info = within("TRACK answer", e.expect::<TrackInfo>())
        .await
        .unwrap();
    assert_eq!(info.timescale, 90_000);
    let (_e_sub, _e) = subscriber
        .open(BidiType::Subscribe, &subscriber.subscribe(5, "e"))
        .await;
    let (upstream_e, _, _) = within("upstream e", publisher.next_subscribe()).await;
    assert_eq!(upstream_e.track, "e");
    // ... and the session is full again.
    let (_f_send, mut f) = subscriber.open(BidiType::Track, &track("f")).await;
    assert!(is_reset(
        &within("refusal", f.decode::<TrackInfo>()).await,
        StreamCode::NO_CAPACITY
    ));
    assert_eq!(shard.stats.subscriptions_refused_limit.get(), 3);
}

#[monoio::test(enable_timer = true)]
async fn a_malformed_control_message_closes_the_session() {
    let shard = shard(settings());
    let peer = Peer::connect(&shard, Version::Lite05, MemoryLimits::default())
        .await
        .0;
    let (mut send, _recv) = peer.transport.open_bi().await.unwrap();
    // A SUBSCRIBE whose one-byte body holds half of a two-byte varint.
    let junk = [
        &encode(Version::Lite05, &[&BidiType::Subscribe])[..],
        &[0x01, 0x40],
    ]
    .concat();
    assert!(!matches!(
        Subscribe::decode(&junk[1..], Version::Lite05, &Limits::default()),
        Ok(_) | Err(crate::lite::DecodeError::Short)
    ));
    send.write_chunk(Bytes::from(junk)).await.unwrap();
    assert_eq!(peer.close_code().await, SessionCode::PROTOCOL_VIOLATION);
    assert_eq!(shard.stats.sessions_protocol_violations.get(), 1);
}

#[monoio::test(enable_timer = true)]
async fn a_bad_data_stream_is_refused_alone() {
    let shard = shard(settings());
    let peer = Peer::connect(&shard, Version::Lite05, MemoryLimits::default())
        .await
        .0;
    // An unknown stream type, then a GROUP for a subscription never made.
    let mut unknown = peer.transport.open_uni().await.unwrap();
    unknown
        .write_chunk(Bytes::from_static(&[0x3f]))
        .await
        .unwrap();
    let header = GroupHeader {
        subscribe: 99,
        sequence: 0,
        frame_start: 0,
    };
    let mut stray = peer.transport.open_uni().await.unwrap();
    stray
        .write_chunk(encode(Version::Lite05, &[&UniType::Group, &header]))
        .await
        .unwrap();
    assert_eq!(
        within("stop", unknown.stopped()).await,
        Some(wire(StreamCode::UNEXPECTED_STREAM))
    );
    assert_eq!(
        within("stop", stray.stopped()).await,
        Some(wire(StreamCode::CANCEL))
    );
    // The session goes on: it still answers an ANNOUNCE_REQUEST.
    let request = AnnounceRequest {
        prefix: String::new(),
        exclude_hop: 0,
    };
    let (_send, mut reader) = peer.open(BidiType::Announce, &request).await;
    within("ANNOUNCE_OK", reader.expect::<AnnounceOk>())
        .await
        .unwrap();
    assert!(peer.transport.close_reason().is_none());
}

/// A publisher and a subscriber of `BROADCAST`/"video" on one shard, the
/// subscription made and seen upstream.
async fn subscribed(
    shard: &Rc<Shard>,
    versions: (Version, Version),
    limits: MemoryLimits,
) -> (Publisher, Peer, Subscribe, Vec<Box<dyn std::any::Any>>) {
    let publisher = Publisher::connect(shard, versions.0).await;
    let subscriber = Peer::connect(shard, versions.1, limits).await.0;
    let announce = subscriber.wait_announced().await;
    let subscription = subscriber
        .open(BidiType::Subscribe, &subscriber.subscribe(7, "video"))
        .await;
    let (upstream, send, reader) = within("upstream SUBSCRIBE", publisher.next_subscribe()).await;
    let keep: Vec<Box<dyn std::any::Any>> = vec![
        Box::new(announce),
        Box::new(subscription),
        Box::new((send, reader)),
    ];
    (publisher, subscriber, upstream, keep)
}

#[monoio::test(enable_timer = true)]
async fn an_oversized_frame_resets_its_group_for_everyone() {
    let mut settings = settings();
    settings.max_frame_size = 1000;
    let shard = shard(settings);
    let versions = (Version::Lite05, Version::Lite05);
    let (publisher, subscriber, upstream, _keep) =
        subscribed(&shard, versions, MemoryLimits::default()).await;
    let mut fits = frames(1, 1000);
    fits.push((9000, Bytes::from(vec![1u8; 1001])));
    let group = publisher.send_group(upstream.id, 0, &fits).await;
    assert_eq!(
        within("stop", group.stopped()).await,
        Some(wire(StreamCode::FRAME_TOO_LARGE))
    );
    // The subscriber's copy of the group is reset too. (Whether the frame
    // before the reset is read first depends on when the reader looks: a
    // reset discards what is unread, as on QUIC.)
    let (recv, _) = within("group 0", subscriber.transport.accept_uni())
        .await
        .unwrap();
    let mut reader = subscriber.reader(recv);
    let read = async {
        reader.expect::<UniType>().await?;
        reader.expect::<GroupHeader>().await?;
        loop {
            let head: FrameHeader = reader.expect().await?;
            assert_eq!(reader.payload(head.size as usize).await?.len(), 1000);
        }
    };
    let end: Result<(), ReadError> = within("the reset", read).await;
    assert!(is_reset(&end, StreamCode::FRAME_TOO_LARGE), "{end:?}");
    assert_eq!(shard.stats.frames_too_large.get(), 1);
}

#[monoio::test(enable_timer = true)]
async fn a_subscriber_that_stops_reading_loses_old_groups() {
    let mut settings = settings();
    settings.default_max_latency = Duration::from_millis(100);
    let shard = shard(settings);
    // Its streams hold 4 KB unread; a group is 10 KB.
    let limits = MemoryLimits {
        streams: 100,
        window: 4096,
    };
    let versions = (Version::Lite06, Version::Lite06);
    let (publisher, subscriber, upstream, _keep) = subscribed(&shard, versions, limits).await;
    let mut first = publisher
        .send_group(upstream.id, 0, &frames(10, 1000))
        .await;
    first.finish().unwrap();
    let (stalled, _) = within("group 0", subscriber.transport.accept_uni())
        .await
        .unwrap();
    // A newer group supersedes it: past the max latency, the relay gives up.
    let mut second = publisher.send_group(upstream.id, 1, &frames(1, 10)).await;
    second.finish().unwrap();
    assert_eq!(
        within("reset", stalled.reset_received()).await,
        Some(wire(StreamCode::TOO_FAR_BEHIND))
    );
    // The newer group still arrives whole.
    let mut received = ReceivedGroup::accept(&subscriber).await;
    assert_eq!(received.header.sequence, 1);
    assert!(received.frame().await.unwrap().is_some());
    assert!(received.frame().await.unwrap().is_none());
}

#[monoio::test(enable_timer = true)]
async fn subscribers_see_the_publisher_leave() {
    let shard = shard(settings());
    let publisher = Publisher::connect(&shard, Version::Lite06).await;
    let subscriber = Peer::connect(&shard, Version::Lite06, MemoryLimits::default())
        .await
        .0;
    let (_announce_send, mut announces) = subscriber.wait_announced().await;
    let (_sub_send, mut replies) = subscriber
        .open(BidiType::Subscribe, &subscriber.subscribe(7, "video"))
        .await;
    let (upstream, _send, _reader) = within("upstream SUBSCRIBE", publisher.next_subscribe()).await;
    let mut group = publisher.send_group(upstream.id, 0, &frames(2, 10)).await;
    group.finish().unwrap();
    let mut received = ReceivedGroup::accept(&subscriber).await;
    while received.frame().await.unwrap().is_some() {}
    assert!(matches!(
        within("START", replies.expect::<SubscribeReply>())
            .await
            .unwrap(),
        SubscribeReply::Start { group: 0 }
    ));

    publisher.peer.transport.close(SessionCode::CANCEL, "gone");
    // The subscription ends after group 0, then its stream finishes ...
    assert!(matches!(
        within("END", replies.expect::<SubscribeReply>())
            .await
            .unwrap(),
        SubscribeReply::End { group: 1 }
    ));
    assert!(within("FIN", replies.decode::<SubscribeReply>())
        .await
        .unwrap()
        .is_none());
    // ... and the broadcast is announced gone.
    assert!(matches!(
        within("announce END", announces.expect::<Announce>())
            .await
            .unwrap(),
        Announce::End { id: 0 }
    ));
}

fn fetch(group: u64, start_frame: u64, end_frame: Option<u64>) -> Fetch {
    Fetch {
        broadcast: BROADCAST.into(),
        track: "video".into(),
        priority: 0,
        group,
        start_frame,
        end_frame,
    }
}

/// A FETCH reply read to its end: (timestamp, payload) per frame, the
/// timestamps decoded against 0 from the first frame served.
async fn fetched(reader: &mut Reader) -> Result<Vec<(Option<u64>, Bytes)>, ReadError> {
    let mut timestamps = Timestamps::default();
    let mut frames = Vec::new();
    while !within("a fetched frame", reader.at_end()).await? {
        let head: FrameHeader = within("a frame header", reader.expect()).await?;
        let timestamp = head.timestamp_delta.map(|d| timestamps.apply(d).unwrap());
        let payload = within("a payload", reader.payload(head.size as usize)).await?;
        frames.push((timestamp, payload));
    }
    Ok(frames)
}

/// Poll `done` until it holds or the deadline passes.
pub(crate) async fn eventually(what: &str, done: impl Fn() -> bool) {
    within(what, async {
        while !done() {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

#[monoio::test(enable_timer = true)]
async fn a_fetch_is_served_from_the_cache_and_follows_an_open_group() {
    let shard = shard(settings());
    let versions = (Version::Lite06, Version::Lite06);
    let (publisher, subscriber, upstream, _keep) =
        subscribed(&shard, versions, MemoryLimits::default()).await;
    let past = frames(3, 100);
    publisher
        .send_group(upstream.id, 0, &past)
        .await
        .finish()
        .unwrap();
    // Each group reaches the subscriber, so it is in this shard's cache (a
    // new subscription starts at the newest group: one at a time).
    let mut received = ReceivedGroup::accept(&subscriber).await;
    within("a frame", received.frame()).await.unwrap();
    let open = frames(3, 50);
    let mut live = publisher.send_group(upstream.id, 1, &open[..2]).await;
    let mut received = ReceivedGroup::accept(&subscriber).await;
    assert_eq!(received.header.sequence, 1);
    while received
        .frame()
        .await
        .unwrap()
        .is_some_and(|f| f.1 != open[1].1)
    {}

    // A past group, whole, with its timestamps.
    let (_send, mut reply) = subscriber.open(BidiType::Fetch, &fetch(0, 0, None)).await;
    let got = fetched(&mut reply).await.unwrap();
    let want: Vec<_> = past.iter().map(|(t, p)| (Some(*t), p.clone())).collect();
    assert_eq!(got, want);

    // Frames 1..=1 of it only (lite-06 frame bounds): the first served
    // frame is stamped against 0, so its timestamp comes out whole.
    let (_send, mut reply) = subscriber
        .open(BidiType::Fetch, &fetch(0, 1, Some(1)))
        .await;
    let got = fetched(&mut reply).await.unwrap();
    assert_eq!(got, vec![(Some(past[1].0), past[1].1.clone())]);

    // The rest of the open group, from frame 1: what is cached, then what
    // the publisher sends after, then the FIN when the group ends.
    let (_send, mut reply) = subscriber.open(BidiType::Fetch, &fetch(1, 1, None)).await;
    let head: FrameHeader = within("frame 1", reply.expect()).await.unwrap();
    assert_eq!(head.timestamp_delta, Some(open[1].0 as i64));
    assert_eq!(reply.payload(head.size as usize).await.unwrap(), open[1].1);
    let head = FrameHeader {
        timestamp_delta: Some(open[2].0 as i64 - open[1].0 as i64),
        size: open[2].1.len() as u64,
    };
    live.write_chunk(encode(Version::Lite06, &[&head]))
        .await
        .unwrap();
    live.write_chunk(open[2].1.clone()).await.unwrap();
    live.finish().unwrap();
    // (Read alone, it decodes against 0: its delta from frame 1.)
    let rest = fetched(&mut reply).await.unwrap();
    assert_eq!(rest, vec![(Some(open[2].0 - open[1].0), open[2].1.clone())]);

    assert_eq!(shard.stats.fetches_served.get(), 3);
    eventually("the fetches to close", || {
        shard.stats.fetches_open.get() == 0
    })
    .await;
}

#[monoio::test(enable_timer = true)]
async fn a_fetch_alone_subscribes_upstream_for_the_next_group() {
    let shard = shard(settings());
    let publisher = Publisher::connect(&shard, Version::Lite05).await;
    let peer = Peer::connect(&shard, Version::Lite05, MemoryLimits::default())
        .await
        .0;
    let _announce = peer.wait_announced().await;
    let (_send, mut reply) = peer.open(BidiType::Fetch, &fetch(0, 0, None)).await;
    let (upstream, _up_send, mut up_reader) =
        within("upstream SUBSCRIBE", publisher.next_subscribe()).await;
    let sent = frames(2, 10);
    publisher
        .send_group(upstream.id, 0, &sent)
        .await
        .finish()
        .unwrap();
    let got = fetched(&mut reply).await.unwrap();
    let want: Vec<_> = sent.iter().map(|(t, p)| (Some(*t), p.clone())).collect();
    assert_eq!(got, want);
    // Served, the fetch lets go of the track: the upstream subscription ends.
    let _ = within("upstream ends", up_reader.discard_to_end()).await;
    assert_eq!(shard.stats.fetches_open.get(), 0);
    assert_eq!(shard.stats.subscriptions_open.get(), 0);
}

#[monoio::test(enable_timer = true)]
async fn a_fetch_for_what_was_never_published_is_not_found() {
    let mut settings = settings();
    settings.group_cache_size = 2;
    let shard = shard(settings);
    let versions = (Version::Lite06, Version::Lite06);
    let (publisher, subscriber, upstream, _keep) =
        subscribed(&shard, versions, MemoryLimits::default()).await;
    for sequence in 0..4 {
        publisher
            .send_group(upstream.id, sequence, &frames(2, 10))
            .await
            .finish()
            .unwrap();
    }
    // Groups 2 and 3 stay cached once group 3 is here.
    let mut newest = 0;
    while newest < 3 {
        newest = ReceivedGroup::accept(&subscriber).await.header.sequence;
    }
    let subscriber = &subscriber;
    let not_found = |f: Fetch| async move {
        let (_send, mut reply) = subscriber.open(BidiType::Fetch, &f).await;
        let end = fetched(&mut reply).await;
        assert!(is_reset(&end, StreamCode::NOT_FOUND), "{f:?}: {end:?}");
    };
    // Far ahead, past the end of a group, and no such broadcast. (An
    // evicted group is asked of the publisher: see the next tests.)
    not_found(fetch(1_000, 0, None)).await;
    not_found(fetch(3, 5, None)).await;
    not_found(Fetch {
        broadcast: "nobody".into(),
        ..fetch(3, 0, None)
    })
    .await;
    // Still cached: served.
    let (_send, mut reply) = subscriber.open(BidiType::Fetch, &fetch(2, 0, None)).await;
    assert_eq!(fetched(&mut reply).await.unwrap().len(), 2);
    assert_eq!(shard.stats.fetches_not_found.get(), 3);
    assert_eq!(shard.stats.upstream_fetches_opened.get(), 0);
    assert_eq!(shard.stats.fetches_served.get(), 1);
    // Bad requests cost the session nothing.
    assert!(subscriber.transport.close_reason().is_none());
}

#[monoio::test(enable_timer = true)]
async fn fetches_share_the_subscription_limit_and_end_with_the_session() {
    let mut settings = settings();
    settings.max_subscriptions_per_session = 1;
    let shard = shard(settings);
    let versions = (Version::Lite05, Version::Lite05);
    let (publisher, subscriber, upstream, _keep) =
        subscribed(&shard, versions, MemoryLimits::default()).await;
    // The SUBSCRIBE holds the one slot.
    let (_send, mut refused) = subscriber.open(BidiType::Fetch, &fetch(0, 0, None)).await;
    let end = fetched(&mut refused).await;
    assert!(is_reset(&end, StreamCode::NO_CAPACITY), "{end:?}");
    assert_eq!(shard.stats.subscriptions_refused_limit.get(), 1);

    // Another session fetches the open group and leaves mid-way.
    let fetcher = Peer::connect(&shard, Version::Lite05, MemoryLimits::default())
        .await
        .0;
    let _announce = fetcher.wait_announced().await;
    let _live = publisher.send_group(upstream.id, 0, &frames(1, 10)).await;
    let (_send, mut reply) = fetcher.open(BidiType::Fetch, &fetch(0, 0, None)).await;
    let head: FrameHeader = within("frame 0", reply.expect()).await.unwrap();
    assert_eq!(reply.payload(head.size as usize).await.unwrap().len(), 10);
    assert_eq!(shard.stats.fetches_open.get(), 1);
    fetcher.transport.close(SessionCode::CANCEL, "gone");
    eventually("the fetch to end", || shard.stats.fetches_open.get() == 0).await;
    // Only the subscriber's subscription is left.
    assert_eq!(shard.stats.subscriptions_open.get(), 1);
    assert_eq!(shard.stats.fetches_served.get(), 0);
}

/// A subscriber on `shard` whose cache (two groups) has lost groups 0 and
/// 1 of the four the publisher sent: a FETCH for them must go upstream.
async fn evicted(
    shard: &Rc<Shard>,
    versions: (Version, Version),
) -> (Publisher, Peer, Vec<Box<dyn std::any::Any>>) {
    let (publisher, subscriber, upstream, keep) =
        subscribed(shard, versions, MemoryLimits::default()).await;
    for sequence in 0..4 {
        publisher
            .send_group(upstream.id, sequence, &frames(2, 10))
            .await
            .finish()
            .unwrap();
    }
    let mut newest = 0;
    while newest < 3 {
        newest = ReceivedGroup::accept(&subscriber).await.header.sequence;
    }
    (publisher, subscriber, keep)
}

fn small_cache() -> Settings {
    let mut settings = settings();
    settings.group_cache_size = 2;
    settings
}

/// The forwarded fetches are over on both sides: nothing waits, nothing
/// holds a slot beyond the subscriber's SUBSCRIBE.
async fn fetches_settled(shard: &Shard) {
    eventually("the fetches to settle", || {
        shard.stats.fetches_open.get() == 0
            && shard.fetches_waiting() == 0
            && shard.stats.subscriptions_open.get() == 1
    })
    .await;
}

#[monoio::test(enable_timer = true)]
async fn an_evicted_group_is_fetched_from_the_publisher() {
    let shard = shard(small_cache());
    // A lite-05 publisher has no frame bounds: the relay asks for the
    // whole group and cuts the range its lite-06 subscriber asked for.
    let (publisher, subscriber, _keep) = evicted(&shard, (Version::Lite05, Version::Lite06)).await;
    let (_send, mut reply) = subscriber
        .open(BidiType::Fetch, &fetch(0, 1, Some(2)))
        .await;
    let (request, mut up_send, _up_reader) = publisher.next_fetch().await;
    assert_eq!(
        (request.broadcast.as_str(), request.track.as_str()),
        (BROADCAST, "video")
    );
    assert_eq!(
        (request.group, request.start_frame, request.end_frame),
        (0, 0, None)
    );
    let past = frames(4, 30);
    publisher.answer_fetch(&mut up_send, &past).await;
    up_send.finish().unwrap();
    // Frames 1..=2, the first stamped against 0 so it comes out whole.
    let got = fetched(&mut reply).await.unwrap();
    let want: Vec<_> = past[1..3]
        .iter()
        .map(|(t, p)| (Some(*t), p.clone()))
        .collect();
    assert_eq!(got, want);

    // A whole group, to its FIN.
    let (_send, mut reply) = subscriber.open(BidiType::Fetch, &fetch(1, 0, None)).await;
    let (request, mut up_send, _up_reader) = publisher.next_fetch().await;
    assert_eq!(request.group, 1);
    let past = frames(3, 20);
    publisher.answer_fetch(&mut up_send, &past).await;
    up_send.finish().unwrap();
    let got = fetched(&mut reply).await.unwrap();
    let want: Vec<_> = past.iter().map(|(t, p)| (Some(*t), p.clone())).collect();
    assert_eq!(got, want);

    fetches_settled(&shard).await;
    let stats = &shard.stats;
    assert_eq!(stats.upstream_fetches_opened.get(), 2);
    assert_eq!(stats.upstream_fetches_served.get(), 2);
    assert_eq!(stats.upstream_fetches_failed.get(), 0);
    assert_eq!(stats.fetches_served.get(), 2);
}

#[monoio::test(enable_timer = true)]
async fn a_publishers_refusal_of_a_forwarded_fetch_is_passed_back() {
    let shard = shard(small_cache());
    let (publisher, subscriber, _keep) = evicted(&shard, (Version::Lite06, Version::Lite06)).await;
    for code in [StreamCode::NOT_FOUND, StreamCode::EVICTED] {
        let (_send, mut reply) = subscriber.open(BidiType::Fetch, &fetch(0, 0, None)).await;
        let (_, mut up_send, _up_reader) = publisher.next_fetch().await;
        up_send.reset(wire(code)).unwrap();
        let end = fetched(&mut reply).await;
        assert!(is_reset(&end, code), "{code}: {end:?}");
    }
    fetches_settled(&shard).await;
    let stats = &shard.stats;
    assert_eq!(stats.upstream_fetches_opened.get(), 2);
    assert_eq!(stats.upstream_fetches_failed.get(), 2);
    assert_eq!(stats.fetches_not_found.get(), 1);
    // A refusal costs the sessions nothing.
    assert!(subscriber.transport.close_reason().is_none());
    assert!(publisher.peer.transport.close_reason().is_none());
}

#[monoio::test(enable_timer = true)]
async fn a_forwarded_fetch_ends_when_the_publisher_leaves_mid_way() {
    let shard = shard(small_cache());
    let (publisher, subscriber, keep) = evicted(&shard, (Version::Lite06, Version::Lite06)).await;
    let (_send, mut reply) = subscriber.open(BidiType::Fetch, &fetch(0, 0, None)).await;
    let (_, mut up_send, _up_reader) = publisher.next_fetch().await;
    let past = frames(2, 10);
    publisher.answer_fetch(&mut up_send, &past[..1]).await;
    let head: FrameHeader = within("frame 0", reply.expect()).await.unwrap();
    assert_eq!(reply.payload(head.size as usize).await.unwrap(), past[0].1);
    publisher.peer.transport.close(SessionCode::CANCEL, "gone");
    let end = fetched(&mut reply).await;
    assert!(is_reset(&end, StreamCode::SESSION_CLOSED), "{end:?}");
    drop(keep);
    eventually("the fetch to settle", || {
        shard.stats.fetches_open.get() == 0 && shard.fetches_waiting() == 0
    })
    .await;
    assert_eq!(shard.stats.upstream_fetches_failed.get(), 1);
    assert!(subscriber.transport.close_reason().is_none());
}

#[monoio::test(enable_timer = true)]
async fn a_forwarded_fetch_past_its_deadline_is_cancelled_upstream() {
    let mut settings = small_cache();
    settings.fetch_timeout = Duration::from_millis(300);
    let shard = shard(settings);
    let (publisher, subscriber, _keep) = evicted(&shard, (Version::Lite06, Version::Lite06)).await;
    let (_send, mut reply) = subscriber.open(BidiType::Fetch, &fetch(0, 0, None)).await;
    // The publisher takes the FETCH and never answers.
    let (_, up_send, _up_reader) = publisher.next_fetch().await;
    let end = fetched(&mut reply).await;
    assert!(is_reset(&end, StreamCode::DELIVERY_TIMEOUT), "{end:?}");
    // The relay lets go of the publisher's stream too.
    assert_eq!(
        within("the upstream stop", up_send.stopped()).await,
        Some(wire(StreamCode::CANCEL))
    );
    fetches_settled(&shard).await;
    assert_eq!(shard.stats.upstream_fetches_failed.get(), 1);
}

#[monoio::test(enable_timer = true)]
async fn a_forwarded_fetch_nobody_reads_holds_the_publisher_back() {
    let shard = shard(small_cache());
    let (publisher, subscriber, _keep) = evicted(&shard, (Version::Lite06, Version::Lite06)).await;
    let (_send, mut reply) = subscriber.open(BidiType::Fetch, &fetch(0, 0, None)).await;
    let (_, mut up_send, _up_reader) = publisher.next_fetch().await;
    // 4 MiB, far more than the window and the two streams' windows.
    let big = frames(64, 64 << 10);
    let peak = Rc::new(std::cell::Cell::new(0));
    let done = Rc::new(std::cell::Cell::new(false));
    let sampler = {
        let (shard, peak, done) = (shard.clone(), peak.clone(), done.clone());
        async move {
            while !done.get() {
                peak.set(peak.get().max(shard.fetch_bytes_in_flight()));
                monoio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    monoio::spawn(sampler);
    let writer = async {
        publisher.answer_fetch(&mut up_send, &big).await;
        up_send.finish().unwrap();
        std::future::pending::<()>().await
    };
    let reader = async {
        // The subscriber reads nothing until the window is full.
        eventually("the window to fill", || {
            shard.fetch_bytes_in_flight() > crate::model::FetchWindow::BYTES
        })
        .await;
        fetched(&mut reply).await.unwrap()
    };
    let got = match crate::task::race(writer, reader).await {
        crate::task::Either::Right(got) => got,
        crate::task::Either::Left(()) => unreachable!("the writer never ends"),
    };
    done.set(true);
    let want: Vec<_> = big.iter().map(|(t, p)| (Some(*t), p.clone())).collect();
    assert!(
        got == want,
        "{} of {} frames came back intact",
        got.len(),
        want.len()
    );
    // At most the window and the frame that crossed it.
    assert!(
        peak.get() <= crate::model::FetchWindow::BYTES + (64 << 10),
        "{} bytes in flight",
        peak.get()
    );
    fetches_settled(&shard).await;
}

#[monoio::test(enable_timer = true)]
async fn a_fetch_the_publisher_cannot_answer_is_not_found() {
    let shard = shard(small_cache());
    // Lite-04 has no FETCH.
    let (_publisher, subscriber, _keep) = evicted(&shard, (Version::Lite04, Version::Lite05)).await;
    let (_send, mut reply) = subscriber.open(BidiType::Fetch, &fetch(0, 0, None)).await;
    let end = fetched(&mut reply).await;
    assert!(is_reset(&end, StreamCode::NOT_FOUND), "{end:?}");
    fetches_settled(&shard).await;
    assert_eq!(shard.stats.upstream_fetches_opened.get(), 1);
    assert_eq!(shard.stats.upstream_fetches_failed.get(), 1);
}

#[monoio::test(enable_timer = true)]
async fn probe_streams_report_the_connections_estimate() {
    let shard = shard(settings());
    // Without figures, no probing is offered.
    let (_, setup) = Peer::connect(&shard, Version::Lite06, MemoryLimits::default()).await;
    assert_eq!(setup.unwrap().probe, ProbeLevel::None);

    let estimate = Estimate {
        send_rate: Some(20_000_000),
        rtt: Some(Duration::from_millis(40)),
    };
    let (peer, setup, relay) = Peer::connect_estimating(&shard, Version::Lite06, estimate).await;
    assert_eq!(setup.probe, ProbeLevel::Report);
    let (mut send, recv) = peer.transport.open_bi().await.unwrap();
    send.write_chunk(encode(Version::Lite06, &[&BidiType::Probe]))
        .await
        .unwrap();
    let mut reports = peer.reader(recv);
    let first = within("a PROBE", reports.expect::<Probe>()).await.unwrap();
    assert_eq!((first.bitrate, first.rtt), (Some(20_000_000), Some(40)));

    // Nothing moves: the probe samples no more until the estimate may
    // have changed (its repeat is 10 s away). Five sampling intervals
    // of nothing, which a probe sampling on a clock would fill.
    let sampled = relay.estimate_reads();
    monoio::time::sleep(5 * super::probe::PROBE_INTERVAL).await;
    assert_eq!(relay.estimate_reads(), sampled, "an idle probe sampled");

    // Half as much again: reported at the next sample, not after the max age.
    relay.set_estimate(Estimate {
        send_rate: Some(30_000_000),
        ..estimate
    });
    let next = within("the next PROBE", reports.expect::<Probe>())
        .await
        .unwrap();
    assert_eq!((next.bitrate, next.rtt), (Some(30_000_000), Some(40)));

    // One PROBE stream at a time.
    let (mut second_send, recv) = peer.transport.open_bi().await.unwrap();
    second_send
        .write_chunk(encode(Version::Lite06, &[&BidiType::Probe]))
        .await
        .unwrap();
    let mut second = peer.reader(recv);
    let refused = within("refusal", second.decode::<Probe>()).await;
    assert!(is_reset(&refused, StreamCode::NO_CAPACITY), "{refused:?}");
    assert_eq!(shard.stats.probes_refused.get(), 1);

    // The peer's FIN ends the reports, and frees the slot.
    assert_eq!(shard.stats.probes_open.get(), 1);
    send.finish().unwrap();
    eventually("the probe to end", || shard.stats.probes_open.get() == 0).await;
    // (A report may still come before the FIN.)
    while within("the FIN", reports.decode::<Probe>())
        .await
        .unwrap()
        .is_some()
    {}
}

fn datagram(subscribe: u64, sequence: u64, timestamp: u64, payload: &[u8]) -> Bytes {
    let mut body = bytes::BytesMut::new();
    let header = DatagramHeader {
        subscribe,
        sequence,
        timestamp,
    };
    header.encode(&mut body, Version::Lite05).unwrap();
    body.extend_from_slice(payload);
    body.freeze()
}

#[monoio::test(enable_timer = true)]
async fn datagrams_are_relayed_best_effort_and_never_block_groups() {
    let shard = shard(settings());
    let versions = (Version::Lite05, Version::Lite06);
    let (publisher, subscriber, upstream, _keep) =
        subscribed(&shard, versions, MemoryLimits::default()).await;
    let stats = &shard.stats;
    let send = |d: Bytes| publisher.peer.transport.send_datagram(d).unwrap();

    // One datagram: out under the subscriber's own id, stamp and all.
    send(datagram(upstream.id, 3, 1234, b"hi"));
    let got = within("a datagram", subscriber.transport.recv_datagram())
        .await
        .unwrap();
    let (header, payload) = DatagramHeader::decode(&got, Version::Lite06).unwrap();
    assert_eq!(
        (header.subscribe, header.sequence, header.timestamp),
        (7, 3, 1234)
    );
    assert_eq!(payload, b"hi");
    assert_eq!(
        (
            stats.media_datagrams_received.get(),
            stats.media_datagrams_sent.get()
        ),
        (1, 1)
    );

    // For no subscription of ours, or malformed: dropped, the session stays.
    send(datagram(upstream.id + 99, 4, 0, b"stray"));
    send(Bytes::from_static(&[0x40]));
    eventually("both dropped", || stats.datagrams_dropped.get() == 2).await;

    // A subscriber that reads none: its path holds DATAGRAM_QUEUE, the
    // rest are dropped and counted, never queued.
    let extra = 5;
    for n in 0..DATAGRAM_QUEUE + extra {
        send(datagram(upstream.id, 10 + n as u64, 0, &[n as u8]));
        let relayed = 2 + n as u64;
        eventually("relayed", || {
            stats.media_datagrams_received.get() == relayed
        })
        .await;
    }
    assert_eq!(stats.datagrams_dropped.get(), 2 + extra as u64);
    assert_eq!(stats.media_datagrams_sent.get(), 1 + DATAGRAM_QUEUE as u64);

    // Streams are not held up by any of it.
    publisher
        .send_group(upstream.id, 0, &frames(1, 10))
        .await
        .finish()
        .unwrap();
    let mut received = ReceivedGroup::accept(&subscriber).await;
    assert_eq!(received.header.sequence, 0);
    assert!(received.frame().await.unwrap().is_some());
    // The queued datagrams are the first ones, in order.
    for n in 0..DATAGRAM_QUEUE {
        let got = subscriber.transport.recv_datagram().await.unwrap();
        let (header, _) = DatagramHeader::decode(&got, Version::Lite06).unwrap();
        assert_eq!(header.sequence, 10 + n as u64);
    }
    assert!(subscriber.transport.close_reason().is_none());
}

#[monoio::test(enable_timer = true)]
async fn a_lite04_subscriber_gets_no_datagrams() {
    let shard = shard(settings());
    let versions = (Version::Lite05, Version::Lite04);
    let (publisher, subscriber, upstream, _keep) =
        subscribed(&shard, versions, MemoryLimits::default()).await;
    let stats = &shard.stats;
    publisher
        .peer
        .transport
        .send_datagram(datagram(upstream.id, 1, 0, b"x"))
        .unwrap();
    eventually("dropped", || stats.datagrams_dropped.get() == 1).await;
    assert_eq!(stats.media_datagrams_sent.get(), 0);
    // Groups still reach it.
    publisher
        .send_group(upstream.id, 2, &frames(1, 10))
        .await
        .finish()
        .unwrap();
    assert_eq!(ReceivedGroup::accept(&subscriber).await.header.sequence, 2);
}
