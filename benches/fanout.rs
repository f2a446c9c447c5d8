//! Fan-out cost: frames of one track pushed to S in-memory subscribers on
//! one standalone shard, for S = 1000, 4000 and 16000. Prints
//! `subscribers=S ns_per_delivery=X`; the cost per delivery should stay
//! flat as S grows (the 16000 figure within 2x the 1000 one).
//!
//! Every subscriber and the publisher is a full relay session (`run`) on a
//! `MemoryTransport`, the far end a scripted moq-lite peer; one delivery is
//! one frame read by one subscriber peer. Groups go one at a time: the
//! publisher sends the next once every subscriber has read the last, so
//! no subscriber falls behind and nothing is dropped. Each size runs three
//! timed rounds and reports the fastest.
//!
//! Run: `cargo bench -p qumo --bench fanout` (`FANOUT_SUBSCRIBERS=S` for
//! one size alone, `FANOUT_SUBSCRIBERS=100,1000,10000` for sizes of your
//! choice in one run).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use qumo::config::Config;
use qumo::lite::{
    Announce, AnnounceOk, AnnounceRequest, BidiType, Cost, Encode, FrameHeader, GroupHeader,
    Limits, ProbeLevel, Setup, Subscribe, TrackInfo, TrackRequest, UniType, Version,
};
use qumo::metrics::RelayStats;
use qumo::session::memory::{MemoryRecv, MemoryTransport};
use qumo::session::reader::StreamReader;
use qumo::session::transport::{SendStream, Transport};
use qumo::shard::{Settings, Shard};

/// The relay's allocator, so the cost per delivery is the relay's.
#[global_allocator]
static ALLOCATOR: qumo::allocator::Allocator = qumo::allocator::Allocator {};

const VERSION: Version = Version::Lite06;
const BROADCAST: &str = "bench";
const FRAMES_PER_GROUP: usize = 10;
const FRAME_SIZE: usize = 100;
/// Deliveries timed per round, whatever S.
const DELIVERIES: usize = 2_000_000;
/// Timed rounds per size; the fastest is reported, so that a busy machine
/// (CI, other builds) does not pass for a cost of fan-out.
const ROUNDS: usize = 3;

fn main() {
    // As the relay does at start-up (see `qumo::allocator`).
    qumo::allocator::disable_transparent_huge_pages();
    // FANOUT_SUBSCRIBERS=S runs one size alone (for a profiler); S,S,...
    // several, so that their ratios come from one run on one machine.
    let sizes: Vec<usize> = match std::env::var("FANOUT_SUBSCRIBERS") {
        Ok(s) => s
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("FANOUT_SUBSCRIBERS: numbers separated by commas")
            })
            .collect(),
        Err(_) => vec![1000, 4000, 16000],
    };
    for subscribers in sizes {
        let ns = run(subscribers);
        println!("subscribers={subscribers} ns_per_delivery={ns:.1}");
    }
}

fn encode(parts: &[&dyn Fn(&mut BytesMut)]) -> Bytes {
    let mut buf = BytesMut::new();
    for part in parts {
        part(&mut buf);
    }
    buf.freeze()
}

fn msg<'a, M: Encode>(m: &'a M) -> impl Fn(&mut BytesMut) + 'a {
    move |buf| {
        m.encode(buf, VERSION).expect("encodable");
    }
}

fn reader(recv: MemoryRecv) -> StreamReader<MemoryRecv> {
    StreamReader::new(recv, Bytes::new(), VERSION, Limits::default(), 64 << 10)
}

/// Frames read by every subscriber peer; wakes the publisher at `target`.
#[derive(Default)]
struct Progress {
    delivered: Cell<u64>,
    target: Cell<u64>,
    waker: Cell<Option<Waker>>,
}

impl Progress {
    fn add(&self, n: u64) {
        self.delivered.set(self.delivered.get() + n);
        if self.delivered.get() >= self.target.get() {
            if let Some(waker) = self.waker.take() {
                waker.wake();
            }
        }
    }

    async fn reach(&self, target: u64) {
        self.target.set(target);
        std::future::poll_fn(|cx| {
            if self.delivered.get() >= target {
                return Poll::Ready(());
            }
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

/// A relay session on a fresh pair, SETUPs exchanged; the peer's end.
async fn connect(shard: &Rc<Shard>) -> MemoryTransport {
    let (relay, peer) = MemoryTransport::pair();
    monoio::spawn(qumo::session::run(
        shard.clone(),
        relay,
        VERSION,
        String::new(),
    ));
    let setup = Setup {
        probe: ProbeLevel::None,
        path: None,
        role: None,
        cost: None,
        hop: None,
    };
    let mut send = peer.open_uni().await.unwrap();
    send.write_chunk(encode(&[&msg(&UniType::Setup), &msg(&setup)]))
        .await
        .unwrap();
    send.finish().unwrap();
    let (recv, _) = peer.accept_uni().await.unwrap();
    let mut theirs = reader(recv);
    theirs.expect::<UniType>().await.unwrap();
    theirs.expect::<Setup>().await.unwrap();
    peer
}

/// The publisher peer: announces the broadcast, answers TRACK, and
/// returns the upstream subscription id once the relay subscribes.
async fn publisher(shard: &Rc<Shard>) -> (MemoryTransport, Rc<Cell<Option<u64>>>) {
    let peer = connect(shard).await;
    let (mut send, recv, _) = peer.accept_bi().await.unwrap();
    let mut request = reader(recv);
    request.expect::<BidiType>().await.unwrap();
    request.expect::<AnnounceRequest>().await.unwrap();
    let start = Announce::Start {
        suffix: BROADCAST.into(),
        hops: Vec::new(),
        cost: Cost::default(),
    };
    let ok = AnnounceOk { hop: 0, active: 1 };
    send.write_chunk(encode(&[&msg(&ok), &msg(&start)]))
        .await
        .unwrap();
    let upstream = Rc::new(Cell::new(None));
    monoio::spawn({
        let peer = peer.clone();
        let upstream = upstream.clone();
        async move {
            let _announce = (send, request);
            let mut held = Vec::new();
            while let Ok((mut send, recv, _)) = peer.accept_bi().await {
                let mut r = reader(recv);
                match r.expect::<BidiType>().await {
                    Ok(BidiType::Track) => {
                        let _ = r.expect::<TrackRequest>().await;
                        let info = TrackInfo {
                            priority: 0,
                            max_latency: 0,
                            timescale: 1000,
                        };
                        let _ = send.write_chunk(encode(&[&msg(&info)])).await;
                        let _ = send.finish();
                    }
                    Ok(BidiType::Subscribe) => {
                        if let Ok(request) = r.expect::<Subscribe>().await {
                            upstream.set(Some(request.id));
                        }
                        held.push((send, r));
                    }
                    _ => {}
                }
            }
        }
    });
    (peer, upstream)
}

/// A subscriber peer: subscribes, then reads every group stream.
async fn subscriber(shard: &Rc<Shard>, progress: Rc<Progress>) {
    let peer = connect(shard).await;
    let subscribe = Subscribe {
        id: 0,
        broadcast: BROADCAST.into(),
        track: "video".into(),
        priority: 0,
        max_latency: 0,
        start_group: None,
        end_group: None,
        start_frame: 0,
        end_frame: None,
    };
    let (mut send, recv) = peer.open_bi().await.unwrap();
    send.write_chunk(encode(&[&msg(&BidiType::Subscribe), &msg(&subscribe)]))
        .await
        .unwrap();
    monoio::spawn(async move {
        let _subscription = (send, recv);
        while let Ok((recv, _)) = peer.accept_uni().await {
            let mut group = reader(recv);
            if !matches!(group.expect::<UniType>().await, Ok(UniType::Group)) {
                continue;
            }
            let _ = group.expect::<GroupHeader>().await;
            let mut frames = 0;
            while let Ok(false) = group.at_end().await {
                let Ok(head) = group.expect::<FrameHeader>().await else {
                    break;
                };
                if group.payload(head.size as usize).await.is_err() {
                    break;
                }
                frames += 1;
            }
            progress.add(frames);
        }
    });
}

async fn push_group(publisher: &MemoryTransport, subscribe: u64, sequence: u64) {
    let mut send = publisher.open_uni().await.unwrap();
    let header = GroupHeader {
        subscribe,
        sequence,
        frame_start: 0,
    };
    send.write_chunk(encode(&[&msg(&UniType::Group), &msg(&header)]))
        .await
        .unwrap();
    let payload = Bytes::from(vec![0xab; FRAME_SIZE]);
    for _ in 0..FRAMES_PER_GROUP {
        let head = FrameHeader {
            timestamp_delta: Some(1),
            size: FRAME_SIZE as u64,
        };
        send.write_chunk(encode(&[&msg(&head)])).await.unwrap();
        send.write_chunk(payload.clone()).await.unwrap();
    }
    send.finish().unwrap();
}

/// Wait until `ready`, yielding to the shard's other tasks meanwhile.
async fn until(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "fanout: {what} never happened");
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn run(subscribers: usize) -> f64 {
    let mut runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime");
    runtime.block_on(async move {
        let mut settings = Settings::from_config(&Config::default());
        settings.max_subscriptions_per_session = 4;
        // Groups are paced, so none is ever too old; never drop one.
        settings.default_max_latency = Duration::from_secs(3600);
        settings.max_latency_ceiling = Duration::from_secs(3600);
        let shard = Shard::standalone(settings, Arc::new(RelayStats::default()));
        let (publisher, upstream) = publisher(&shard).await;
        until("the announce", || shard.publisher_of(BROADCAST).is_some()).await;

        let progress = Rc::new(Progress::default());
        for _ in 0..subscribers {
            subscriber(&shard, progress.clone()).await;
        }
        until("every subscription", || {
            shard.stats.subscriptions_open.get() == subscribers as u64
        })
        .await;
        until("the upstream subscription", || upstream.get().is_some()).await;
        let id = upstream.get().unwrap_or_default();

        // One group untimed: every writer path warm.
        let per_group = (subscribers * FRAMES_PER_GROUP) as u64;
        push_group(&publisher, id, 0).await;
        progress.reach(per_group).await;

        let groups = (DELIVERIES / (subscribers * FRAMES_PER_GROUP)).max(2) as u64;
        let mut sequence = 0;
        let mut best = f64::INFINITY;
        for _ in 0..ROUNDS {
            let started = Instant::now();
            for _ in 0..groups {
                sequence += 1;
                push_group(&publisher, id, sequence).await;
                progress.reach(per_group * (sequence + 1)).await;
            }
            let ns = started.elapsed().as_nanos() as f64 / (per_group * groups) as f64;
            best = best.min(ns);
        }
        best
    })
}
