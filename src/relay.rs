//! The relay process: starts the shards, runs a moq-lite session on every
//! connection, and stops gracefully on SIGINT/SIGTERM (GOAWAY first).

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use qumo_shards::{Connection, Runtime, RuntimeConfig, RuntimeError, ShardContext};
use tracing::{debug, error, info, warn};

use crate::announced::AnnouncedSource;
use crate::auth::Auth;
use crate::config::Config;
use crate::handoff::Handoff;
use crate::lite::{SessionCode, Version};
use crate::message::MeshBacklog;
use crate::metrics::{KindCount, Metrics, TransportKind};
use crate::qmux::{QmuxLimits, QmuxOrigin, QmuxTransport};
use crate::session;
use crate::session::transport::Transport;
use crate::shard::{Settings, Shard};
use crate::task::{catch_unwind, contain, race, Either};
use crate::upstream::{self, Upstream};
use crate::websocket::{self, WebSocketDoor};
use crate::webtransport::WtSession;

pub use crate::message::ShardMessage;

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("{0}")]
    Upstream(#[from] crate::upstream::UpstreamError),
}

/// What every shard shares: the settings and the relay-wide session count.
#[derive(Clone)]
struct Shared {
    settings: Settings,
    hop: u64,
    max_sessions: usize,
    sessions: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    backlog: Arc<MeshBacklog>,
    /// A WebSocket's QMux bounds: the `quic.*` ones, so one set of keys
    /// bounds a peer whichever transport it takes.
    qmux_limits: QmuxLimits,
    /// `relay.upstream_url`, dialled from [`upstream::UPSTREAM_SHARD`],
    /// then `cluster.peers`, peer `i` dialled from shard `i % shards`.
    dials: Arc<Vec<Upstream>>,
}

/// Start the relay's shards; the caller waits on or stops the runtime.
/// `auth` is the loaded `auth` section (`Config::auth`), `None` for an open
/// relay.
pub fn start(
    config: &Config,
    runtime_config: RuntimeConfig,
    metrics: Arc<Metrics>,
    auth: Option<Auth>,
) -> Result<Runtime<ShardMessage>, RelayError> {
    let mut settings = Settings::from_config(config);
    settings.auth = auth.map(Arc::new);
    let shared = Shared {
        settings,
        hop: match config.cluster.node.as_str() {
            "" => random_hop(),
            node => named_hop(node),
        },
        max_sessions: config.relay.max_sessions,
        sessions: Arc::new(AtomicUsize::new(0)),
        metrics: metrics.clone(),
        backlog: Arc::new(MeshBacklog::default()),
        qmux_limits: qmux_limits(&config.quic),
        dials: Arc::new(dials(config)?),
    };
    for dial in shared.dials.iter() {
        metrics.register_link(dial.link());
    }
    let runtime = Runtime::<ShardMessage>::start(runtime_config, move |ctx| {
        serve_shard(ctx, shared.clone())
    })?;
    metrics.attach_runtime(runtime.probe());
    Ok(runtime)
}

/// Run the relay until a signal stops it; `announced` is answered by
/// shard 0 from then on.
pub fn run(
    config: &Config,
    runtime_config: RuntimeConfig,
    metrics: Arc<Metrics>,
    auth: Option<Auth>,
    announced: Arc<AnnouncedSource>,
    websocket: Option<Arc<WebSocketDoor>>,
) -> Result<(), RelayError> {
    let runtime = start(config, runtime_config, metrics, auth)?;
    let poster = runtime.poster();
    if let Some(door) = websocket {
        let poster = runtime.poster();
        door.attach(runtime.shard_count(), move |shard, handoff| {
            poster
                .post(shard, ShardMessage::WebSocket(Box::new(handoff)))
                .is_ok()
        });
    }
    announced.attach(move |query| poster.post(0, ShardMessage::ListAnnounced(query)).is_ok());
    runtime.shutdown_on_signals().map_err(RelayError::Signals)?;
    info!(
        address = %runtime.local_addr(),
        shards = runtime.shard_count(),
        steering = ?runtime.steering(),
        "qumo-relay listening"
    );
    // systemd (Type=notify): ready now, since Runtime::start returns only
    // once every shard listens. Without NOTIFY_SOCKET this does nothing.
    if let Err(error) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        warn!(%error, "cannot tell the service manager the relay is ready (NOTIFY_SOCKET)");
    }
    runtime.wait();
    info!("qumo-relay stopped");
    Ok(())
}

async fn serve_shard(ctx: ShardContext<ShardMessage>, shared: Shared) {
    let stats = shared.metrics.register(ctx.index());
    let shard = Rc::new(Shard::new(
        Box::new(ctx.clone()),
        shared.settings.clone(),
        shared.hop,
        stats,
        shared.backlog.clone(),
    ));
    monoio::spawn(dispatch(ctx.clone(), shard.clone(), shared.clone()));
    monoio::spawn(sample_cache_bytes(Rc::downgrade(&shard)));
    monoio::spawn({
        let (ctx, shard) = (ctx.clone(), shard.clone());
        async move {
            ctx.shutdown_started().await;
            shard.begin_shutdown();
        }
    });
    for (i, dial) in shared.dials.iter().enumerate() {
        if i % ctx.shard_count() == ctx.index() {
            monoio::spawn(upstream::maintain(ctx.clone(), shard.clone(), dial.clone()));
        }
    }
    while let Some(conn) = ctx.accept().await {
        let stats = shard.stats.clone();
        let conn_ = conn.clone();
        // A bug hit before the session's own tasks start (its handshake,
        // its SETUP) ends this connection, not the shard.
        let on_panic = move |panic: String| {
            error!(%panic, remote = ?conn_.remote_address(), "connection task panicked; closing it");
            stats.sessions_panicked.inc();
            conn_.close(
                session::code(SessionCode::INTERNAL_ERROR),
                b"internal error",
            );
        };
        monoio::spawn(contain(
            serve_connection(shard.clone(), shared.clone(), conn),
            on_panic,
        ));
    }
}

/// How often a shard sums its caches for the `cache_bytes` gauge: a sum
/// over its tracks, too dear per event and plenty fresh for a scrape.
const CACHE_SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

async fn sample_cache_bytes(shard: std::rc::Weak<Shard>) {
    loop {
        let Some(shard) = shard.upgrade() else { return };
        shard.sample_cache_bytes();
        drop(shard);
        monoio::time::sleep(CACHE_SAMPLE_INTERVAL).await;
    }
}

/// Handle messages from other shards (and this one) in batches.
async fn dispatch(ctx: ShardContext<ShardMessage>, shard: Rc<Shard>, shared: Shared) {
    let mut batch = Vec::new();
    let handle = |message| match message {
        // Sockets are the relay's business, not the router's.
        ShardMessage::WebSocket(handoff) => {
            monoio::spawn(serve_websocket(shard.clone(), shared.clone(), *handoff));
        }
        message => shard.handle(message),
    };
    loop {
        let first = ctx.recv().await;
        handle(first);
        ctx.drain_messages(&mut batch);
        for message in batch.drain(..) {
            handle(message);
        }
    }
}

/// A WebSocket the HTTP listener upgraded and handed to this shard: QMux
/// on it, a session on that, counted like any other.
async fn serve_websocket(shard: Rc<Shard>, shared: Shared, handoff: Handoff) {
    let Handoff {
        socket,
        early,
        tls,
        version,
        remote,
        path,
        query,
    } = handoff;
    // The session root is the URL path, as on WebTransport.
    let root = path.clone();
    let origin = QmuxOrigin {
        remote,
        path,
        query,
    };
    let transport = QmuxTransport::new(true, shared.qmux_limits, origin);
    let driver = monoio::spawn(websocket::drive(
        transport.clone(),
        socket,
        early,
        tls,
        shard.stats.clone(),
    ));
    let open = shared.sessions.fetch_add(1, Ordering::Relaxed) + 1;
    let guard = SessionCount(shared.sessions.clone());
    if open > shared.max_sessions {
        shard.stats.sessions_refused_max_sessions.inc();
        debug!(limit = shared.max_sessions, remote = ?transport.remote_address(), "WebSocket session refused: relay.max_sessions reached");
        transport.close(SessionCode::TOO_MANY_SESSIONS, "too many sessions");
    } else {
        let kind = KindCount::new(shard.stats.clone(), version, TransportKind::WebSocket);
        let stats = shard.stats.clone();
        let run = session::run(shard, transport.clone(), version, root);
        if let Err(panic) = catch_unwind(run).await {
            error!(%panic, remote = ?transport.remote_address(), "WebSocket session panicked; closing it");
            stats.sessions_panicked.inc();
            transport.close(SessionCode::INTERNAL_ERROR, "internal error");
        }
        drop(kind);
    }
    drop(guard);
    // The session has ended; the connection goes with it.
    transport.close(SessionCode::CANCEL, "");
    driver.await;
}

async fn serve_connection(shard: Rc<Shard>, shared: Shared, conn: Connection) {
    let open = shared.sessions.fetch_add(1, Ordering::Relaxed) + 1;
    let _guard = SessionCount(shared.sessions.clone());
    if open > shared.max_sessions {
        shard.stats.sessions_refused_max_sessions.inc();
        // Rare: the runtime refuses over the same limit before TLS (see
        // Config::admission_limits); this catches the race at the boundary.
        // Debug, not warn: a peer must not be able to multiply log lines.
        debug!(limit = shared.max_sessions, remote = ?conn.remote_address(), "session refused: relay.max_sessions reached");
        conn.close(
            session::code(SessionCode::TOO_MANY_SESSIONS),
            b"too many sessions",
        );
        return;
    }
    let alpn = conn.alpn().unwrap_or_default();
    if let Some(version) = Version::from_alpn(&alpn) {
        let _kind = KindCount::new(shard.stats.clone(), version, TransportKind::Quic);
        // Each branch boxed: this task lives as long as its connection, and
        // inline it would hold the largest of the three (the WebTransport
        // handshake's included) for every session, ~13 KB.
        return Box::pin(session::run(shard, conn, version, String::new())).await;
    }
    if alpn == crate::ietf::ALPN_DRAFT14.as_bytes() {
        // IETF moq-transport draft 14 on raw QUIC: its own session task,
        // meeting the lite sessions in the shard's router.
        return Box::pin(crate::ietf_session::session::run(shard, conn, false)).await;
    }
    if crate::ietf::Version::from_alpn(&alpn) == Some(crate::ietf::Version::Draft22) {
        // Draft 22 names itself in the ALPN; SETUP carries no version.
        return Box::pin(crate::ietf_session::draft22::run(shard, conn)).await;
    }
    if alpn != b"h3" {
        debug!(alpn = %String::from_utf8_lossy(&alpn), "no moq-lite version for this ALPN");
        return conn.close(session::code(SessionCode::VERSION), b"unsupported ALPN");
    }
    // WebTransport: the version is negotiated in the CONNECT request, the
    // session root is its URL path.
    // Lite first, as in the ALPN list; then the IETF drafts, newest first,
    // each offered under its ALPN as the WebTransport protocol (moq-native
    // sends `moq-00` for draft 14, which then negotiates in CLIENT_SETUP).
    let (draft22, draft14) = (crate::ietf::ALPN_DRAFT22, crate::ietf::ALPN_DRAFT14);
    let choose = |offered: &[String]| {
        Version::ALL
            .into_iter()
            .map(|v| v.wt_protocol())
            .chain([draft22, draft14])
            .find(|p| offered.iter().any(|o| o == p))
            .map(str::to_string)
    };
    let handshake = race(
        Box::pin(WtSession::accept(conn.clone(), choose)),
        monoio::time::sleep(WEBTRANSPORT_HANDSHAKE_TIMEOUT),
    )
    .await;
    let wt = match handshake {
        Either::Left(Ok(wt)) => wt,
        Either::Left(Err(e)) => return debug!(error = %e, "WebTransport handshake failed"),
        Either::Right(()) => {
            debug!("WebTransport handshake timed out");
            return conn.close(
                session::code(SessionCode::PROTOCOL_VIOLATION),
                b"handshake timeout",
            );
        }
    };
    if wt.protocol() == Some(draft22) {
        return Box::pin(crate::ietf_session::draft22::run(shard, wt)).await;
    }
    if wt.protocol() == Some(draft14) {
        // The CONNECT URL names the path; a PATH parameter is refused.
        return Box::pin(crate::ietf_session::session::run(shard, wt, true)).await;
    }
    // A client that names no protocol speaks the oldest we know (lite-04),
    // as moq-clock 0.10.21 does.
    let version = wt
        .protocol()
        .and_then(Version::from_wt_protocol)
        .unwrap_or(Version::Lite04);
    let root = wt.path().to_string();
    let _kind = KindCount::new(shard.stats.clone(), version, TransportKind::WebTransport);
    Box::pin(session::run(shard, wt, version, root)).await;
}

/// How long a WebTransport client has to send its CONNECT.
const WEBTRANSPORT_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

struct SessionCount(Arc<AtomicUsize>);

impl Drop for SessionCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The relays to dial: the upstream first (so on shard 0), then the
/// cluster's peers, spread over the shards.
fn qmux_limits(quic: &crate::config::QuicConfig) -> QmuxLimits {
    QmuxLimits {
        max_streams_bidi: quic.max_concurrent_bidi_streams.into(),
        max_streams_uni: quic.max_concurrent_uni_streams.into(),
        stream_window: quic.stream_receive_window,
        connection_window: quic.receive_window,
        outbound_bytes: usize::try_from(quic.send_window).unwrap_or(usize::MAX),
    }
}

fn dials(config: &Config) -> Result<Vec<Upstream>, upstream::UpstreamError> {
    let ca_file = config.relay.upstream_ca_file.as_deref();
    let mut dials: Vec<Upstream> =
        Upstream::from_config(config.relay.upstream_url.as_deref().unwrap_or(""), ca_file)?
            .into_iter()
            .collect();
    for peer in &config.cluster.peers {
        dials.push(Upstream::new(peer, ca_file, "cluster peer")?);
    }
    Ok(dials)
}

/// A cluster node's hop id, the same across restarts: its name's SHA-256,
/// cut to a QUIC varint, never 0.
fn named_hop(node: &str) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, node.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.as_ref()[..8]);
    (u64::from_le_bytes(bytes) & crate::lite::VARINT_MAX).max(1)
}

/// A relay id for announce hop chains: a QUIC varint, never 0 (0 means
/// "anonymous").
fn random_hop() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    (u64::from_le_bytes(bytes) & crate::lite::VARINT_MAX).max(1)
}
