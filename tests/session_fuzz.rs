//! Session-level fuzzing: the real relay, in this process, driven by seeded
//! sequences of stream openings, valid and mangled moq-lite messages,
//! resets, stop-sendings, finishes and closes, over 1-3 concurrent sessions
//! that mix raw QUIC and WebTransport and lite-04/05/06, some publishing
//! broadcasts that others subscribe to. After every case:
//!
//! - no shard panicked (a shard panic exits this process with 70; the panic
//!   hook installed here names the case's seed first);
//! - every table a session fills is empty again on every shard (the relay's
//!   gauges, polled until a deadline) and every connection is gone;
//! - a fresh publisher and subscriber still get a group through.
//!
//! `cargo test --test session_fuzz` runs the fixed seeds 1..=24, so CI is
//! deterministic in what it sends. Environment, for longer runs
//! (`scripts/fuzz.sh`):
//!
//! - `QUMO_FUZZ_SEED=N`: replay case N alone (the same operations; the
//!   timing between the peers and the relay is the machine's);
//! - `QUMO_FUZZ_START=N`, `QUMO_FUZZ_CASES=C`: run seeds N..N+C;
//! - `QUMO_FUZZ_SECONDS=T`: go on past C cases until T seconds have passed.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use fastrand::Rng;
use qumo::config::Config;
use qumo::lite::{
    Announce, AnnounceOk, AnnounceRequest, BidiType, Decode, DecodeError, Encode, Fetch,
    FrameHeader, Goaway, GroupHeader, Limits, Probe, ProbeLevel, Setup, Subscribe, SubscribeOk,
    SubscribeReply, SubscribeUpdate, TrackInfo, TrackRequest, UniType, Version,
};
use qumo::metrics::{Kind, Metrics};
use qumo_shards::Runtime;
use support::lite::Peer;
use web_transport_quinn::proto::ConnectRequest;

/// The seed of the case running now, for the panic hook.
static CURRENT_SEED: AtomicU64 = AtomicU64::new(0);

/// What the peers saw, to show that cases reach deep into the relay: the
/// relay's SUBSCRIBEs to publishers (a subscription crossed the relay) and
/// the group streams subscribers received (media flowed through it).
static UPSTREAM_SUBSCRIBES: AtomicU64 = AtomicU64::new(0);
static GROUPS_RECEIVED: AtomicU64 = AtomicU64::new(0);

/// How long the relay may take to release a case's state: its longest
/// internal hold (a TRACK request keeps its upstream 2 s) plus slack for a
/// loaded 2-core box.
const SETTLE: Duration = Duration::from_secs(20);

/// Bounds one client operation, so that a stream the relay stopped reading
/// (on purpose) does not stall the case.
const OP_LIMIT: Duration = Duration::from_secs(2);

// --- the relay ------------------------------------------------------------

struct Relay {
    runtime: Runtime<qumo::relay::ShardMessage>,
    metrics: Arc<Metrics>,
    hex: String,
    sha256: Vec<u8>,
}

impl Relay {
    fn start() -> Relay {
        // Two shards, so tracks cross the mesh; small limits so that the
        // fuzzer reaches them. A short idle timeout: a client's
        // CONNECTION_CLOSE can be lost (UDP, a loaded box), and the relay
        // must then release the session within SETTLE by idleness.
        let yaml = "server:\n  address: \"127.0.0.1:0\"\n  shards: 2\n  pin_cores: false\n  \
                    shutdown_timeout: 2s\ntls:\n  generate: [localhost]\nquic:\n  idle_timeout: 5s\n  keep_alive: 2s\n\
                    relay:\n  max_subscriptions_per_session: 6\n  \
                    max_announce_prefix_len: 64\n  max_frame_size: 64 KiB\n  \
                    group_cache_size: 2\n  default_max_latency: 500ms\n";
        let file = "session_fuzz.yaml";
        let config = Config::from_yaml_str(yaml, file).expect("fuzz config is valid");
        let alpn = qumo::ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
        let tls = config.server_tls(file, alpn).expect("certificate");
        let fingerprint = tls.fingerprint.expect("generated certificate");
        let metrics = Arc::new(Metrics::default());
        let runtime = qumo::relay::start(
            &config,
            config.runtime_config(tls.config),
            metrics.clone(),
            None,
        )
        .expect("relay starts");
        Relay {
            runtime,
            metrics,
            hex: fingerprint.hex.clone(),
            sha256: fingerprint.sha256.to_vec(),
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.runtime.local_addr()
    }

    /// Every gauge that is not 0 and every connection still held, by shard.
    fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (shard, stats) in self.metrics.shards() {
            stats.visit(|name, _, kind, value| {
                if kind == Kind::Gauge && value != 0 {
                    out.push(format!("shard {shard}: {name} = {value}"));
                }
            });
        }
        for (shard, stats) in self.runtime.stats().iter().enumerate() {
            if stats.connections_open != 0 {
                out.push(format!(
                    "shard {shard}: connections_open = {}",
                    stats.connections_open
                ));
            }
        }
        out
    }

    /// Sessions whose task panicked and was contained, summed over shards.
    fn panicked(&self) -> u64 {
        self.metrics
            .shards()
            .iter()
            .map(|(_, s)| s.sessions_panicked.get())
            .sum()
    }

    fn gauge(&self, name: &str) -> u64 {
        let mut total = 0;
        for (_, stats) in self.metrics.shards() {
            stats.visit(|n, _, _, value| {
                if n == name {
                    total += value;
                }
            });
        }
        total
    }

    /// Wait until the relay holds nothing; the leftovers if it still does
    /// at the deadline.
    async fn settle(&self) -> Result<Duration, Vec<String>> {
        let start = Instant::now();
        let before = self.runtime.stats();
        loop {
            let mut left = self.leftovers();
            if left.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > SETTLE {
                // A shard that sent nothing in that time (not even the
                // keep-alive PINGs of a connection it holds) is hung, not
                // leaking: say which.
                for (shard, (a, b)) in before.iter().zip(self.runtime.stats()).enumerate() {
                    left.push(format!(
                        "shard {shard} while waiting: datagrams sent {} -> {}, received {} -> {}, \
                         mesh messages {} -> {}",
                        a.datagrams_sent,
                        b.datagrams_sent,
                        a.datagrams_received,
                        b.datagrams_received,
                        a.mesh_messages_received,
                        b.mesh_messages_received
                    ));
                }
                return Err(left);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.runtime.shutdown_handle().shutdown();
    }
}

// --- transport-neutral client halves ------------------------------------

#[derive(Clone)]
enum Conn {
    Quic(quinn::Connection),
    // Boxed: a WebTransport session is far larger than a quinn handle.
    Web(Box<web_transport_quinn::Session>),
}

enum Tx {
    Quic(quinn::SendStream),
    Web(web_transport_quinn::SendStream),
}

enum Rx {
    Quic(quinn::RecvStream),
    Web(web_transport_quinn::RecvStream),
}

impl Conn {
    async fn open_bi(&self) -> Option<(Tx, Rx)> {
        match self {
            Conn::Quic(c) => c
                .open_bi()
                .await
                .ok()
                .map(|(s, r)| (Tx::Quic(s), Rx::Quic(r))),
            Conn::Web(c) => c
                .open_bi()
                .await
                .ok()
                .map(|(s, r)| (Tx::Web(s), Rx::Web(r))),
        }
    }

    async fn open_uni(&self) -> Option<Tx> {
        match self {
            Conn::Quic(c) => c.open_uni().await.ok().map(Tx::Quic),
            Conn::Web(c) => c.open_uni().await.ok().map(Tx::Web),
        }
    }

    async fn accept_bi(&self) -> Option<(Tx, Rx)> {
        match self {
            Conn::Quic(c) => c
                .accept_bi()
                .await
                .ok()
                .map(|(s, r)| (Tx::Quic(s), Rx::Quic(r))),
            Conn::Web(c) => c
                .accept_bi()
                .await
                .ok()
                .map(|(s, r)| (Tx::Web(s), Rx::Web(r))),
        }
    }

    async fn accept_uni(&self) -> Option<Rx> {
        match self {
            Conn::Quic(c) => c.accept_uni().await.ok().map(Rx::Quic),
            Conn::Web(c) => c.accept_uni().await.ok().map(Rx::Web),
        }
    }

    /// Datagrams the relay does not read: they must stay within the
    /// runtime's receive buffer.
    fn send_datagram(&self, payload: Bytes) {
        let _ = match self {
            Conn::Quic(c) => c.send_datagram(payload).is_ok(),
            Conn::Web(c) => c.send_datagram(payload).is_ok(),
        };
    }

    fn close(&self, code: u32, reason: &[u8]) {
        match self {
            Conn::Quic(c) => c.close(code.into(), reason),
            Conn::Web(c) => c.close(code, reason),
        }
    }

    async fn closed(&self) {
        match self {
            Conn::Quic(c) => drop(c.closed().await),
            Conn::Web(c) => drop(c.closed().await),
        }
    }
}

impl Tx {
    async fn write(&mut self, bytes: &[u8]) -> bool {
        match self {
            Tx::Quic(s) => s.write_all(bytes).await.is_ok(),
            Tx::Web(s) => s.write_all(bytes).await.is_ok(),
        }
    }

    fn finish(&mut self) {
        let _ = match self {
            Tx::Quic(s) => s.finish().is_ok(),
            Tx::Web(s) => s.finish().is_ok(),
        };
    }

    fn reset(&mut self, code: u32) {
        let _ = match self {
            Tx::Quic(s) => s.reset(code.into()).is_ok(),
            Tx::Web(s) => s.reset(code).is_ok(),
        };
    }
}

impl Rx {
    /// The next chunk; `None` at the end, on a reset or a lost connection.
    async fn chunk(&mut self) -> Option<Bytes> {
        match self {
            Rx::Quic(r) => r.read_chunk(usize::MAX, true).await.ok()?.map(|c| c.bytes),
            Rx::Web(r) => r.read_chunk(usize::MAX, true).await.ok()?.map(|c| c.bytes),
        }
    }

    fn stop(&mut self, code: u32) {
        let _ = match self {
            Rx::Quic(r) => r.stop(code.into()).is_ok(),
            Rx::Web(r) => r.stop(code).is_ok(),
        };
    }

    async fn drain(mut self) {
        while self.chunk().await.is_some() {}
    }

    /// Hold the stream unread until the session ends.
    async fn keep_until(self, conn: &Conn) -> Self {
        conn.closed().await;
        self
    }
}

/// Decodes moq-lite messages off an [`Rx`]; any failure is `None`.
struct Messages {
    rx: Rx,
    buf: BytesMut,
    version: Version,
}

impl Messages {
    fn new(rx: Rx, version: Version) -> Self {
        Messages {
            rx,
            buf: BytesMut::new(),
            version,
        }
    }

    async fn next<T: Decode>(&mut self) -> Option<T> {
        loop {
            if !self.buf.is_empty() {
                match T::decode(&self.buf, self.version, &Limits::default()) {
                    Ok((msg, n)) => {
                        self.buf.advance(n);
                        return Some(msg);
                    }
                    Err(DecodeError::Short) => {}
                    Err(_) => return None,
                }
            }
            let chunk = self.rx.chunk().await?;
            self.buf.extend_from_slice(&chunk);
        }
    }
}

/// Encode `parts` one after the other; one that does not exist in
/// `version` is left out (the relay then sees what follows, or nothing).
fn encode(version: Version, parts: &[&(dyn EncodeDyn + Sync)]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for part in parts {
        part.encode_dyn(&mut out, version);
    }
    out.to_vec()
}

trait EncodeDyn {
    fn encode_dyn(&self, out: &mut BytesMut, version: Version);
}

impl<T: Encode> EncodeDyn for T {
    fn encode_dyn(&self, out: &mut BytesMut, version: Version) {
        let _ = self.encode(out, version);
    }
}

// --- what a case is made of -----------------------------------------------

/// Mangle `bytes` one way or another: truncate, flip, insert, append, or
/// replace with noise.
fn mutate(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    match rng.u8(0..5) {
        0 if !bytes.is_empty() => bytes.truncate(rng.usize(0..bytes.len())),
        1 if !bytes.is_empty() => {
            let i = rng.usize(0..bytes.len());
            bytes[i] ^= 1 << rng.u8(0..8);
        }
        2 => {
            let i = rng.usize(0..=bytes.len());
            let noise = noise(rng, 1..9);
            bytes.splice(i..i, noise);
        }
        3 => bytes.extend(noise(rng, 1..33)),
        _ => bytes = noise(rng, 0..65),
    }
    bytes
}

fn noise(rng: &mut Rng, len: std::ops::Range<usize>) -> Vec<u8> {
    let mut out = vec![0u8; rng.usize(len)];
    rng.fill(&mut out);
    out
}

/// A varint-ish number: usually small, sometimes huge.
fn number(rng: &mut Rng) -> u64 {
    match rng.u8(0..8) {
        0 => rng.u64(0..(1 << 62)),
        1 => rng.u64(0..100_000),
        _ => rng.u64(0..8),
    }
}

/// The names a case plays with: its broadcasts and a few strangers.
struct Names {
    broadcasts: Vec<String>,
}

impl Names {
    fn broadcast(&self, rng: &mut Rng) -> String {
        match rng.u8(0..12) {
            0 => String::new(),
            1 => String::from_utf8_lossy(&noise(rng, 0..40)).into_owned(),
            2 => "a/".repeat(rng.usize(1..60)),
            _ => rng
                .choice(&self.broadcasts)
                .cloned()
                .unwrap_or_else(|| "nobody".into()),
        }
    }

    fn track(rng: &mut Rng) -> String {
        match rng.u8(0..6) {
            0 => String::from_utf8_lossy(&noise(rng, 0..20)).into_owned(),
            1 => "audio".into(),
            _ => "video".into(),
        }
    }
}

/// A bidi request of some kind, well formed.
fn request(rng: &mut Rng, version: Version, names: &Names) -> Vec<u8> {
    let kinds = [
        BidiType::Announce,
        BidiType::Subscribe,
        BidiType::Subscribe,
        BidiType::Subscribe,
        BidiType::Subscribe,
        BidiType::Track,
        BidiType::Fetch,
        BidiType::Probe,
        BidiType::Goaway,
    ];
    let kind = *rng.choice(&kinds).expect("kinds");
    let optional = |rng: &mut Rng| rng.bool().then(|| number(rng));
    match kind {
        BidiType::Announce => {
            let prefix = match rng.u8(0..3) {
                0 => String::new(),
                1 => "fz".into(),
                _ => names.broadcast(rng),
            };
            let request = AnnounceRequest {
                prefix,
                exclude_hop: number(rng),
            };
            encode(version, &[&kind, &request])
        }
        BidiType::Subscribe => {
            let request = Subscribe {
                id: number(rng),
                broadcast: names.broadcast(rng),
                track: Names::track(rng),
                priority: rng.u8(..),
                max_latency: *rng.choice(&[0, 1, 100, 3_600_000]).expect("latencies"),
                start_group: optional(rng),
                end_group: optional(rng),
                start_frame: if rng.u8(0..8) == 0 { number(rng) } else { 0 },
                end_frame: if rng.u8(0..8) == 0 {
                    optional(rng)
                } else {
                    None
                },
            };
            encode(version, &[&kind, &request])
        }
        BidiType::Track => {
            let request = TrackRequest {
                broadcast: names.broadcast(rng),
                track: Names::track(rng),
            };
            encode(version, &[&kind, &request])
        }
        BidiType::Fetch => {
            let request = Fetch {
                broadcast: names.broadcast(rng),
                track: Names::track(rng),
                priority: rng.u8(..),
                group: number(rng),
                start_frame: 0,
                end_frame: optional(rng),
            };
            encode(version, &[&kind, &request])
        }
        BidiType::Probe => {
            let probe = Probe {
                bitrate: optional(rng),
                rtt: optional(rng),
            };
            encode(version, &[&kind, &probe])
        }
        BidiType::Goaway => encode(version, &[&kind, &Goaway { uri: String::new() }]),
    }
}

/// A GROUP stream's bytes: header and some frames, the last perhaps cut.
fn group(rng: &mut Rng, version: Version, subscribe: u64, sequence: u64) -> Vec<u8> {
    let header = GroupHeader {
        subscribe,
        sequence,
        frame_start: 0,
    };
    let mut out = encode(version, &[&UniType::Group, &header]);
    for _ in 0..rng.usize(0..6) {
        let payload = noise(rng, 0..1500);
        let size = match rng.u8(0..20) {
            0 => 1 << 20,                   // over relay.max_frame_size
            1 => payload.len() as u64 + 50, // promises more than it sends
            _ => payload.len() as u64,
        };
        let frame = FrameHeader {
            timestamp_delta: version.has_frame_timestamps().then(|| {
                if rng.u8(0..16) == 0 {
                    i64::MIN / 2
                } else {
                    rng.i64(0..40)
                }
            }),
            size,
        };
        out.extend(encode(version, &[&frame]));
        out.extend(payload);
    }
    out
}

// --- peers ------------------------------------------------------------

/// How one fuzzed session behaves when the relay talks to it.
#[derive(Clone)]
struct Behaviour {
    version: Version,
    /// The broadcast it announces, if any.
    publishes: Option<String>,
    /// Seed for its own choices (answers, group streams).
    seed: u64,
}

/// One fuzzed session and the streams it holds.
struct Live {
    conn: Conn,
    version: Version,
    /// Streams the case may still write, finish, reset or stop.
    streams: Vec<(Option<Tx>, Option<Rx>)>,
    /// Its quinn endpoint (raw QUIC), kept until the close went out.
    endpoint: Option<quinn::Endpoint>,
}

async fn connect(
    relay: &Relay,
    rng: &mut Rng,
    names: &mut Names,
    case: u64,
    n: usize,
) -> Option<Live> {
    let version = *rng.choice(&Version::ALL).expect("versions");
    let web = rng.bool();
    let (conn, endpoint) = if web {
        let path = *rng
            .choice(&["/", "/", "/", "/", "/", "/room", "/fz"])
            .expect("paths");
        let url = url::Url::parse(&format!("https://{}{path}", relay.addr())).ok()?;
        let mut request = ConnectRequest::new(url);
        if rng.u8(0..6) != 0 {
            request = request.with_protocols([version.wt_protocol().to_string()]);
        }
        let client = web_transport_quinn::ClientBuilder::new()
            .with_server_certificate_hashes(vec![relay.sha256.clone()])
            .ok()?;
        let session = tokio::time::timeout(Duration::from_secs(5), client.connect(request))
            .await
            .ok()?
            .ok()?;
        (Conn::Web(Box::new(session)), None)
    } else {
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_uni_streams(256u32.into());
        let endpoint = support::lite::endpoint(&relay.hex, version.alpn(), transport);
        let connecting = endpoint.connect(relay.addr(), "localhost").ok()?;
        let conn = tokio::time::timeout(Duration::from_secs(5), connecting)
            .await
            .ok()?
            .ok()?;
        (Conn::Quic(conn), Some(endpoint))
    };
    // What the relay chose for a WebTransport client that named no
    // protocol is lite-04; the client then speaks it too.
    let version = match &conn {
        Conn::Web(s) if s.response().protocol.is_none() => Version::Lite04,
        _ => version,
    };
    let mut live = Live {
        conn: conn.clone(),
        version,
        streams: Vec::new(),
        endpoint,
    };
    if version.has_setup() {
        let setup = Setup {
            probe: ProbeLevel::None,
            path: (!web && rng.u8(0..8) == 0).then(|| "fz".to_string()),
            role: None,
            cost: None,
            hop: rng.bool().then(|| number(rng)),
        };
        let bytes = encode(version, &[&UniType::Setup, &setup]);
        let bytes = match rng.u8(0..10) {
            0 => None,
            1 => Some(mutate(rng, bytes)),
            _ => Some(bytes),
        };
        if let Some(bytes) = bytes {
            if let Some(mut tx) = conn.open_uni().await {
                tx.write(&bytes).await;
                if rng.u8(0..4) != 0 {
                    tx.finish();
                }
                live.streams.push((Some(tx), None));
            }
        }
    }
    let publishes = (rng.u8(0..3) != 0).then(|| format!("fz/{case}/{n}"));
    if let Some(name) = &publishes {
        names.broadcasts.push(name.clone());
    }
    let behaviour = Behaviour {
        version,
        publishes,
        seed: rng.u64(..),
    };
    tokio::spawn(answer_bidi(conn.clone(), behaviour.clone()));
    tokio::spawn(answer_uni(conn.clone(), behaviour.seed));
    Some(live)
}

/// Answer the relay's requests: its ANNOUNCE_REQUEST with our broadcast,
/// its SUBSCRIBEs with groups, its TRACK requests with properties, each
/// now and then with junk, a reset or silence.
async fn answer_bidi(conn: Conn, behaviour: Behaviour) {
    let mut rng = Rng::with_seed(behaviour.seed);
    while let Some((tx, rx)) = conn.accept_bi().await {
        let seed = rng.u64(..);
        tokio::spawn(answer_request(
            conn.clone(),
            behaviour.clone(),
            seed,
            tx,
            rx,
        ));
    }
}

async fn answer_request(conn: Conn, behaviour: Behaviour, seed: u64, mut tx: Tx, rx: Rx) {
    let mut rng = Rng::with_seed(seed);
    let version = behaviour.version;
    let mut messages = Messages::new(rx, version);
    let Some(kind) = messages.next::<BidiType>().await else {
        return;
    };
    match kind {
        BidiType::Announce => {
            if messages.next::<AnnounceRequest>().await.is_none() {
                return;
            }
            let mut out = Vec::new();
            if version.has_announce_ok() {
                out.extend(encode(version, &[&AnnounceOk { hop: 0, active: 1 }]));
            }
            if let Some(name) = &behaviour.publishes {
                out.extend(encode(
                    version,
                    &[&Announce::available(name.clone(), vec![], version)],
                ));
            }
            if rng.u8(0..8) == 0 {
                out = mutate(&mut rng, out);
            }
            tx.write(&out).await;
            if rng.u8(0..10) == 0 {
                return tx.reset(rng.u32(0..20));
            }
            // Sometimes take it back, or restart it, a little later.
            if behaviour.publishes.is_some() && rng.u8(0..6) == 0 {
                tokio::time::sleep(Duration::from_millis(rng.u64(0..200))).await;
                let name = behaviour.publishes.clone().unwrap_or_default();
                let end = match version.has_announce_id() {
                    true => Announce::End {
                        id: number(&mut rng) % 2,
                    },
                    false => Announce::Ended {
                        suffix: name,
                        hops: vec![],
                    },
                };
                tx.write(&encode(version, &[&end])).await;
            }
            hold(&conn, tx, messages.rx).await;
        }
        BidiType::Subscribe => {
            let Some(subscribe) = messages.next::<Subscribe>().await else {
                return;
            };
            UPSTREAM_SUBSCRIBES.fetch_add(1, Ordering::Relaxed);
            if !version.has_track_stream() {
                let ok = SubscribeReply::Ok(SubscribeOk::default());
                tx.write(&encode(version, &[&ok])).await;
            }
            let groups = rng.u64(0..8);
            for sequence in 0..groups {
                let Some(mut stream) = conn.open_uni().await else {
                    return;
                };
                let id = if rng.u8(0..10) == 0 {
                    number(&mut rng)
                } else {
                    subscribe.id
                };
                let mut bytes = group(&mut rng, version, id, sequence);
                if rng.u8(0..10) == 0 {
                    bytes = mutate(&mut rng, bytes);
                }
                stream.write(&bytes).await;
                match rng.u8(0..8) {
                    0 => stream.reset(rng.u32(0..20)),
                    1 => {
                        tokio::spawn(async move {
                            let _keep = stream;
                            std::future::pending::<()>().await
                        });
                    }
                    _ => stream.finish(),
                }
                tokio::time::sleep(Duration::from_millis(rng.u64(0..80))).await;
            }
            match rng.u8(0..4) {
                0 => tx.reset(rng.u32(0..20)),
                1 => hold(&conn, tx, messages.rx).await,
                _ => {
                    if version.has_track_stream() {
                        let end = SubscribeReply::End { group: groups };
                        tx.write(&encode(version, &[&end])).await;
                    }
                    tx.finish();
                    while messages.next::<SubscribeUpdate>().await.is_some() {}
                }
            }
        }
        BidiType::Track => {
            if messages.next::<TrackRequest>().await.is_none() {
                return;
            }
            match rng.u8(0..5) {
                0 => tx.reset(rng.u32(0..20)),
                1 => hold(&conn, tx, messages.rx).await,
                _ => {
                    let info = TrackInfo {
                        priority: rng.u8(..),
                        max_latency: number(&mut rng),
                        timescale: number(&mut rng),
                    };
                    tx.write(&encode(version, &[&info])).await;
                    tx.finish();
                }
            }
        }
        _ => hold(&conn, tx, messages.rx).await,
    }
}

/// Keep a stream's halves until the peer ends its side or the session ends.
async fn hold(conn: &Conn, tx: Tx, rx: Rx) {
    tokio::select! {
        _ = rx.drain() => {}
        _ = conn.closed() => {}
    }
    drop(tx);
}

/// Read what the relay sends on its uni streams (SETUP, groups), now and
/// then refusing one; a slow session reads only the first bytes of each and
/// holds it, so the relay's group writers stay open until the session ends.
async fn answer_uni(conn: Conn, seed: u64) {
    let mut rng = Rng::with_seed(seed ^ 0x5eed);
    let slow = rng.u8(0..4) == 0;
    while let Some(mut rx) = conn.accept_uni().await {
        if rng.u8(0..8) == 0 {
            rx.stop(rng.u32(0..20));
            continue;
        }
        let conn = conn.clone();
        tokio::spawn(async move {
            let first = rx.chunk().await;
            // lite-04/05/06 all give GROUP the stream type 0.
            if first.is_some_and(|c| c.first() == Some(&0)) {
                GROUPS_RECEIVED.fetch_add(1, Ordering::Relaxed);
            }
            match slow {
                true => drop(rx.keep_until(&conn).await),
                false => rx.drain().await,
            }
        });
    }
}

// --- a case -------------------------------------------------------------

/// Run case `seed`: its operations, then the end of every session.
async fn run_case(relay: &Relay, seed: u64) -> usize {
    let mut rng = Rng::with_seed(seed);
    let mut names = Names {
        broadcasts: Vec::new(),
    };
    let mut sessions: Vec<Live> = Vec::new();
    let mut opened = 0;
    let concurrent = rng.usize(1..=3);
    let ops = rng.usize(16..80);
    for _ in 0..ops {
        if sessions.len() < concurrent && (sessions.is_empty() || rng.u8(0..4) == 0) {
            if let Some(live) = connect(relay, &mut rng, &mut names, seed, opened).await {
                sessions.push(live);
            }
            opened += 1;
            continue;
        }
        let i = rng.usize(0..sessions.len());
        let op = tokio::time::timeout(OP_LIMIT, operate(&mut rng, &mut sessions, i, &names));
        let _ = op.await;
    }
    for live in sessions.drain(..) {
        end(&mut rng, live).await;
    }
    opened
}

/// One operation on session `i`.
async fn operate(rng: &mut Rng, sessions: &mut Vec<Live>, i: usize, names: &Names) {
    let live = &mut sessions[i];
    let version = live.version;
    match rng.u8(0..100) {
        0..=34 => {
            let mut bytes = request(rng, version, names);
            if rng.u8(0..6) == 0 {
                bytes = mutate(rng, bytes);
            }
            // A third of these subscribe well to a published track, so that
            // media crosses the relay while the rest goes on around it.
            if let (0..=11, Some(broadcast)) = (rng.u8(0..35), rng.choice(&names.broadcasts)) {
                let subscribe = Subscribe {
                    id: number(rng),
                    broadcast: broadcast.clone(),
                    track: "video".into(),
                    ..Subscribe::default()
                };
                bytes = encode(version, &[&BidiType::Subscribe, &subscribe]);
            }
            let Some((mut tx, rx)) = live.conn.open_bi().await else {
                return;
            };
            tx.write(&bytes).await;
            // Mostly read what the relay answers; sometimes leave it unread.
            let rx = match rng.u8(0..3) {
                0 => Some(rx),
                _ => {
                    tokio::spawn(rx.drain());
                    None
                }
            };
            live.streams.push((Some(tx), rx));
        }
        35..=44 => {
            let Some(mut tx) = live.conn.open_uni().await else {
                return;
            };
            let bytes = match rng.u8(0..4) {
                0 => {
                    let setup = Setup {
                        probe: ProbeLevel::None,
                        path: None,
                        role: None,
                        cost: None,
                        hop: None,
                    };
                    encode(version, &[&UniType::Setup, &setup])
                }
                1 => noise(rng, 0..64),
                _ => {
                    let (subscribe, sequence) = (number(rng), number(rng));
                    group(rng, version, subscribe, sequence)
                }
            };
            tx.write(&bytes).await;
            live.streams.push((Some(tx), None));
        }
        45..=52 => {
            let Some((Some(tx), _)) = pick(rng, &mut live.streams) else {
                return;
            };
            let update = SubscribeUpdate {
                priority: rng.u8(..),
                max_latency: number(rng),
                start_group: rng.bool().then(|| number(rng)),
                end_group: None,
                start_frame: 0,
                end_frame: None,
            };
            let mut bytes = encode(version, &[&update]);
            if rng.u8(0..3) == 0 {
                bytes = mutate(rng, bytes);
            }
            tx.write(&bytes).await;
        }
        53..=59 => {
            if let Some((Some(tx), _)) = pick(rng, &mut live.streams) {
                tx.finish();
            }
        }
        60..=66 => {
            if let Some((Some(tx), _)) = pick(rng, &mut live.streams) {
                tx.reset(rng.u32(0..20));
            }
        }
        67..=72 => {
            if let Some((_, Some(rx))) = pick(rng, &mut live.streams) {
                rx.stop(rng.u32(0..20));
            }
        }
        73..=74 => {
            for _ in 0..rng.usize(1..20) {
                live.conn.send_datagram(noise(rng, 0..1200).into());
            }
        }
        75..=77 => {
            if !live.streams.is_empty() {
                let n = rng.usize(0..live.streams.len());
                live.streams.swap_remove(n);
            }
        }
        78..=97 => tokio::time::sleep(Duration::from_millis(rng.u64(0..40))).await,
        _ => {
            let live = sessions.swap_remove(i);
            end(rng, live).await;
        }
    }
}

fn pick<'a>(
    rng: &mut Rng,
    streams: &'a mut [(Option<Tx>, Option<Rx>)],
) -> Option<&'a mut (Option<Tx>, Option<Rx>)> {
    if streams.is_empty() {
        return None;
    }
    let n = rng.usize(0..streams.len());
    streams.get_mut(n)
}

/// End a session: cleanly (code 0, streams finished) or abruptly (an
/// error code with everything open), and wait for the close to go out.
async fn end(rng: &mut Rng, mut live: Live) {
    if rng.bool() {
        for (tx, _) in live.streams.iter_mut() {
            if let Some(tx) = tx {
                tx.finish();
            }
        }
        live.conn.close(0, b"done");
    } else {
        live.conn.close(rng.u32(1..1000), b"fuzz");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), live.conn.closed()).await;
    if let Some(endpoint) = live.endpoint.take() {
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    }
}

/// A fresh publisher and subscriber get a group through the relay.
async fn still_serves(relay: &Relay, seed: u64) -> Result<(), String> {
    let mut rng = Rng::with_seed(seed ^ 0xc0ffee);
    let broadcast = format!("health/{seed}");
    let publisher = Peer::connect(
        relay.addr(),
        &relay.hex,
        *rng.choice(&Version::ALL).unwrap(),
    )
    .await;
    let subscriber = Peer::connect(
        relay.addr(),
        &relay.hex,
        *rng.choice(&Version::ALL).unwrap(),
    )
    .await;
    let mut upstreams = publisher.publish(&broadcast);
    let deadline = Instant::now() + Duration::from_secs(15);
    // Every shard learns of the broadcast; then the subscription reaches the
    // publisher (retried: a SUBSCRIBE before the announce is refused).
    while relay.gauge("broadcasts_announced") < relay.metrics.shards().len() as u64 {
        if Instant::now() > deadline {
            return Err("the health broadcast was never announced".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut held = Vec::new();
    let mut id = 0;
    let upstream = loop {
        if Instant::now() > deadline {
            return Err("the health subscription never reached the publisher".into());
        }
        id += 1;
        if let Ok(sub) = subscriber.subscribe(id, &broadcast, "video", 0).await {
            held.push(sub);
        }
        if let Ok(Some(up)) =
            tokio::time::timeout(Duration::from_millis(500), upstreams.recv()).await
        {
            break up;
        }
    };
    let frame = Bytes::from_static(b"still alive");
    let read = async {
        loop {
            publisher
                .send_group(upstream, 0, std::slice::from_ref(&frame))
                .await;
            if let Ok(Ok((_, frames))) =
                tokio::time::timeout(Duration::from_millis(500), subscriber.read_group()).await
            {
                return frames;
            }
        }
    };
    let frames = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), read)
        .await
        .map_err(|_| "no group reached the health subscriber".to_string())?;
    if frames != [frame] {
        return Err(format!("the health subscriber got {frames:?}"));
    }
    drop(held);
    publisher.conn.close(0u32.into(), b"");
    subscriber.conn.close(0u32.into(), b"");
    publisher.conn.closed().await;
    subscriber.conn.closed().await;
    Ok(())
}

// --- the driver ---------------------------------------------------------

fn env(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("?");
        let seed = CURRENT_SEED.load(Ordering::Relaxed);
        if name.starts_with("shard-") {
            eprintln!(
                "\nsession fuzz: RELAY PANIC on {name} during case seed={seed}; the process \
                 exits 70.\nreplay: QUMO_FUZZ_SEED={seed} cargo test --test session_fuzz -- --nocapture\n"
            );
        }
        previous(info);
    }));
}

#[test]
fn fuzzed_sessions_never_panic_a_shard_and_leave_nothing_behind() {
    install_panic_hook();
    // The relay's own log, when asked for (RUST_LOG=qumo=debug).
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = qumo::logging::init("warn");
    }
    let (start, cases) = match env("QUMO_FUZZ_SEED") {
        Some(seed) => (seed, 1),
        None => (
            env("QUMO_FUZZ_START").unwrap_or(1),
            env("QUMO_FUZZ_CASES").unwrap_or(24),
        ),
    };
    let seconds = env("QUMO_FUZZ_SECONDS").map(Duration::from_secs);
    let relay = Relay::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let began = Instant::now();
    let mut sessions = 0;
    let mut slowest = Duration::ZERO;
    let mut seed = start;
    loop {
        let done = seed - start;
        let out_of_time = seconds.is_none_or(|limit| began.elapsed() >= limit);
        if done >= cases && out_of_time {
            break;
        }
        CURRENT_SEED.store(seed, Ordering::Relaxed);
        let panicked_before = relay.panicked();
        let outcome = runtime.block_on(async {
            sessions += run_case(&relay, seed).await;
            let settled = relay.settle().await.map_err(|left| {
                format!(
                    "state left after every session ended:\n  {}",
                    left.join("\n  ")
                )
            })?;
            slowest = slowest.max(settled);
            still_serves(&relay, seed).await?;
            relay.settle().await.map_err(|left| {
                format!(
                    "state left after the health check:\n  {}",
                    left.join("\n  ")
                )
            })?;
            Ok::<_, String>(())
        });
        if relay.panicked() != panicked_before {
            panic!("case seed={seed}: a session task panicked (contained)\nreplay: QUMO_FUZZ_SEED={seed}");
        }
        if let Err(e) = outcome {
            panic!("case seed={seed}: {e}\nreplay: QUMO_FUZZ_SEED={seed} cargo test --test session_fuzz -- --nocapture");
        }
        seed += 1;
        if seconds.is_some() && (seed - start) % 50 == 0 {
            println!(
                "session fuzz: {} cases, {sessions} sessions, {:.0?}",
                seed - start,
                began.elapsed()
            );
        }
    }
    println!(
        "session fuzz: {} cases (seeds {start}..{seed}), {sessions} sessions in {:.1?}; \
         {} upstream subscriptions, {} groups delivered to fuzzed subscribers; slowest settle {slowest:.1?}",
        seed - start,
        began.elapsed(),
        UPSTREAM_SUBSCRIBES.load(Ordering::Relaxed),
        GROUPS_RECEIVED.load(Ordering::Relaxed),
    );
}

/// The shard that owns a track's hub, as `Shard::owner` computes it.
fn owner(broadcast: &str, track: &str, shards: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let key = qumo::model::TrackName {
        broadcast: broadcast.into(),
        track: track.into(),
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % shards as u64) as usize
}

/// Poll `done` until it holds, or panic naming `what` after 10 s.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The leak the fuzzer found (seed 118), made deterministic: a track ends
/// while a subscription to it on another shard is still finishing (its
/// subscriber reads nothing, so a group writer stays open), the same
/// subscriber asks for the track again, then everyone leaves. The
/// subscriber shard's attachment to the first hub must go with them.
#[test]
fn a_track_subscribed_again_after_it_ended_leaves_no_attachment_behind() {
    let relay = Relay::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let version = Version::Lite06;
        // Small windows, and it never accepts a uni stream: the relay's
        // writer of a large group blocks.
        let subscriber = Peer::connect_slow(relay.addr(), &relay.hex, version).await;
        until("the subscriber's session", || {
            relay.gauge("sessions_open") == 1
        })
        .await;
        let shards = relay.metrics.shards();
        let at = shards
            .iter()
            .position(|(_, s)| s.sessions_open.get() == 1)
            .unwrap();
        let broadcast = (0..)
            .map(|n| format!("leak/{n}"))
            .find(|b| owner(b, "video", shards.len()) != at)
            .unwrap();

        let publisher = Peer::connect(relay.addr(), &relay.hex, version).await;
        let mut upstreams = publisher.publish_upstreams(&broadcast);
        let everywhere = shards.len() as u64;
        until("the announce", || {
            relay.gauge("broadcasts_announced") == everywhere
        })
        .await;

        let (_first_send, mut first) = subscriber
            .subscribe(1, &broadcast, "video", 10_000)
            .await
            .unwrap();
        let mut upstream = tokio::time::timeout(Duration::from_secs(10), upstreams.recv())
            .await
            .expect("the relay subscribes upstream")
            .unwrap();
        let frame = Bytes::from(vec![7u8; 60_000]);
        let frames = [frame.clone(), frame.clone(), frame];
        publisher.send_group(upstream.id, 0, &frames).await;
        upstream.end(1).await;
        // The subscriber's shard has the end once it says so on the stream.
        let ended = async {
            loop {
                match first.decode::<SubscribeReply>().await {
                    Ok(Some(SubscribeReply::End { .. })) => return,
                    Ok(Some(_)) => continue,
                    other => panic!("the first subscription ended with {other:?}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), ended)
            .await
            .expect("SUBSCRIBE_END for the first subscription");

        // The first subscription still waits for its writer; a second one
        // makes a new replica, a new hub and a new attachment.
        let _second = subscriber
            .subscribe(2, &broadcast, "video", 0)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), upstreams.recv())
            .await
            .expect("the second subscription reaches the publisher")
            .unwrap();

        subscriber.conn.close(0u32.into(), b"");
        publisher.conn.close(0u32.into(), b"");
        if let Err(left) = relay.settle().await {
            panic!("state left after both peers left:\n  {}", left.join("\n  "));
        }
    });
}
