//! Starting, watching and stopping the shards.

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use quinn_proto::{Dir, EndpointConfig, IdleTimeout, ServerConfig, TransportConfig, VarInt};
use tracing::{error, info, warn};

use crate::admission::Admission;
use crate::cid::{DialKey, ShardCidGenerator};
use crate::config::{QuicLimits, RuntimeConfig, Steering};
use crate::context::ShardContext;
use crate::core::{CoreParams, ShardCore};
use crate::mesh::{mesh, MeshReceiver, MeshSender, MeshWakeups};
use crate::socket::{bind_group, socket_inode, UdpIo};
use crate::stats::{ShardStats, ShardStatsSnapshot};
use crate::tasks::{self, AppInbox, Envelope};

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("shard count must be between 1 and 255, got {0}")]
    ShardCount(usize),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server TLS config unusable for QUIC: {0}")]
    Tls(String),
    #[error("invalid transport limit: {0}")]
    Transport(String),
    #[error("cannot start shard thread: {0}")]
    Spawn(std::io::Error),
    #[error("shard {shard} failed to start: {reason}")]
    ShardStart { shard: usize, reason: String },
}

/// Stops a running runtime gracefully; cheap to clone, usable from any
/// thread (a signal handler thread, a test).
#[derive(Clone)]
pub struct ShutdownHandle(Arc<dyn Fn() + Send + Sync>);

impl ShutdownHandle {
    /// Ask every shard to stop accepting, close its connections with the
    /// runtime's close code, flush, and exit.
    pub fn shutdown(&self) {
        (self.0)()
    }
}

/// A set of running shards.
pub struct Runtime<M: Send + 'static> {
    local_addr: SocketAddr,
    steering: Steering,
    threads: Vec<JoinHandle<()>>,
    mesh: MeshSender<Envelope<M>>,
    stats: Vec<Arc<ShardStats>>,
    admission: Arc<Admission>,
    socket_inodes: Vec<Option<u64>>,
}

/// Posts application messages to the shards; see [`Runtime::poster`].
pub struct Poster<M>(MeshSender<Envelope<M>>);

impl<M: Send + 'static> Poster<M> {
    /// Post `message` to shard `to`; give it back if that shard is gone.
    pub fn post(&self, to: usize, message: M) -> Result<(), M> {
        crate::tasks::post(&self.0, to, message)
    }
}

/// What an exporter on another thread reads of a running runtime: every
/// shard's counters, its inbox's wake-ups, and its socket's inode (to find
/// the kernel's drop count for it in `/proc/net/udp`). Holds no sender and
/// no socket, so it keeps nothing of the runtime alive.
#[derive(Debug, Clone)]
pub struct RuntimeProbe {
    pub stats: Vec<Arc<ShardStats>>,
    pub mesh_wakeups: MeshWakeups,
    /// Shard K's UDP socket inode, `None` where it could not be read.
    pub socket_inodes: Vec<Option<u64>>,
}

/// What a shard thread needs from the starter.
struct ShardSeed<M> {
    index: usize,
    shard_count: usize,
    socket: std::net::UdpSocket,
    mesh_tx: MeshSender<Envelope<M>>,
    mesh_rx: MeshReceiver<Envelope<M>>,
    stats: Arc<ShardStats>,
    admission: Arc<Admission>,
    server_config: Option<Arc<ServerConfig>>,
    transport: Arc<TransportConfig>,
    config: RuntimeConfig,
    core_id: Option<core_affinity::CoreId>,
    dial_key: DialKey,
}

type Ready = std::sync::mpsc::Sender<Result<&'static str, String>>;

impl<M: Send + 'static> Runtime<M> {
    /// Bind the sockets, start one thread per shard, and call `shard_main` on
    /// each. Returns once every shard is serving.
    pub fn start<F, Fut>(config: RuntimeConfig, shard_main: F) -> Result<Self, RuntimeError>
    where
        F: Fn(ShardContext<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let n = config.shards;
        if !(1..=255).contains(&n) {
            return Err(RuntimeError::ShardCount(n));
        }
        let server = config.server_tls.is_some();
        let bind_err = |source| RuntimeError::Bind {
            addr: config.listen,
            source,
        };
        // A server shares one port across shards; a client runtime gives each
        // shard a port of its own, because replies to a client arrive as
        // Initial packets whose ids the kernel cannot steer.
        let sockets = if server {
            bind_group(config.listen, n, config.socket_buffer_bytes).map_err(bind_err)?
        } else {
            (0..n)
                .map(|_| {
                    bind_group(config.listen, 1, config.socket_buffer_bytes)
                        .map(|mut s| s.remove(0))
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(bind_err)?
        };
        let local_addr = sockets[0].local_addr().map_err(bind_err)?;
        let socket_inodes = sockets.iter().map(socket_inode).collect();

        let mut steering = config.steering;
        if !server || n == 1 {
            steering = Steering::ForwardOnly;
        } else if steering == Steering::Bpf {
            if let Err(e) = crate::steering::attach(&sockets[n - 1]) {
                warn!(error = %e, "BPF steering refused by the kernel; forwarding misrouted packets between shards instead");
                steering = Steering::ForwardOnly;
            }
        }

        let transport = Arc::new(transport_config(&config.quic)?);
        let server_config = match &config.server_tls {
            Some(tls) => {
                let crypto = quinn_proto::crypto::rustls::QuicServerConfig::try_from(tls.clone())
                    .map_err(|e| RuntimeError::Tls(e.to_string()))?;
                let mut server_config = ServerConfig::with_crypto(Arc::new(crypto));
                server_config.transport_config(transport.clone());
                Some(Arc::new(server_config))
            }
            None => None,
        };

        let admission = Arc::new(Admission::new(config.admission.clone()));
        let (mesh_tx, receivers) = mesh(n);
        let stats: Vec<_> = (0..n).map(|_| Arc::new(ShardStats::default())).collect();
        let core_ids = if config.pin_cores {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let shard_main = Arc::new(shard_main);
        let dial_key = DialKey::random();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::with_capacity(n);
        for (index, (socket, mesh_rx)) in sockets.into_iter().zip(receivers).enumerate() {
            let seed = ShardSeed {
                index,
                shard_count: n,
                socket,
                mesh_tx: mesh_tx.clone(),
                mesh_rx,
                stats: stats[index].clone(),
                admission: admission.clone(),
                server_config: server_config.clone(),
                transport: transport.clone(),
                config: config.clone(),
                core_id: (!core_ids.is_empty()).then(|| core_ids[index % core_ids.len()]),
                dial_key: dial_key.clone(),
            };
            let shard_main = shard_main.clone();
            let ready = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("shard-{index}"))
                .spawn(move || shard_thread(seed, shard_main, ready))
                .map_err(RuntimeError::Spawn)?;
            threads.push(thread);
        }
        drop(ready_tx);

        let runtime = Self {
            local_addr,
            steering,
            threads,
            mesh: mesh_tx,
            stats,
            admission,
            socket_inodes,
        };
        let mut driver = "";
        for _ in 0..n {
            match ready_rx.recv() {
                Ok(Ok(name)) => driver = name,
                Ok(Err(reason)) => {
                    runtime.shutdown_handle().shutdown();
                    return Err(RuntimeError::ShardStart { shard: 0, reason });
                }
                Err(_) => {
                    return Err(RuntimeError::ShardStart {
                        shard: 0,
                        reason: "shard thread exited during start".into(),
                    })
                }
            }
        }
        info!(shards = n, %local_addr, io = driver, ?steering, gso = config.gso, "runtime started");
        Ok(runtime)
    }

    /// The address every shard listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The steering in force (BPF falls back to forwarding if refused).
    pub fn steering(&self) -> Steering {
        self.steering
    }

    pub fn shard_count(&self) -> usize {
        self.stats.len()
    }

    /// Every shard's counters now.
    pub fn stats(&self) -> Vec<ShardStatsSnapshot> {
        self.stats.iter().map(|s| s.snapshot()).collect()
    }

    /// Every shard's live counters, for a reader on another thread (an
    /// exporter) that outlives this handle's borrow.
    pub fn shard_stats(&self) -> Vec<Arc<ShardStats>> {
        self.stats.clone()
    }

    /// Counters, wake-ups and socket inodes for an exporter.
    pub fn probe(&self) -> RuntimeProbe {
        RuntimeProbe {
            stats: self.stats.clone(),
            mesh_wakeups: self.mesh.wakeup_counts(),
            socket_inodes: self.socket_inodes.clone(),
        }
    }

    /// Server connections admitted and not yet gone (handshaking, open or
    /// closing), all shards together: what `max_connections` is checked
    /// against.
    pub fn admitted_connections(&self) -> usize {
        self.admission.connections()
    }

    /// Cross-thread wake-ups shard `shard`'s mailbox has needed so far; far
    /// fewer than messages when batching works.
    pub fn mesh_wakeups(&self, shard: usize) -> u64 {
        self.mesh.wakeups(shard)
    }

    /// Post an application message to shard `to` from outside the runtime.
    pub fn send(&self, to: usize, message: M) -> Result<(), M> {
        crate::tasks::post(&self.mesh, to, message)
    }

    /// A handle that posts application messages to the shards from any
    /// thread, for a part of the program that outlives this borrow (an
    /// admin listener asking a shard a question).
    pub fn poster(&self) -> Poster<M> {
        Poster(self.mesh.clone())
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        let mesh = self.mesh.clone();
        ShutdownHandle(Arc::new(move || {
            for shard in 0..mesh.len() {
                let _ = mesh.send(shard, Envelope::Shutdown);
            }
        }))
    }

    /// Shut down gracefully on SIGINT or SIGTERM; a second signal exits at
    /// once.
    pub fn shutdown_on_signals(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let handle = self.shutdown_handle();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut received = 0;
                for signal in signals.forever() {
                    received += 1;
                    if received == 1 {
                        info!(signal, "shutting down gracefully");
                        handle.shutdown();
                    } else {
                        warn!(signal, "second signal: exiting without waiting");
                        std::process::exit(1);
                    }
                }
            })?;
        Ok(())
    }

    /// Wait for every shard to finish (after a shutdown).
    pub fn wait(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn shard_thread<M, F, Fut>(seed: ShardSeed<M>, shard_main: Arc<F>, ready: Ready)
where
    M: Send + 'static,
    F: Fn(ShardContext<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let index = seed.index;
    if let Some(core) = seed.core_id {
        if !core_affinity::set_for_current(core) {
            warn!(
                shard = index,
                core = core.id,
                "could not pin shard to its core"
            );
        }
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let mut runtime = match monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send(Err(format!("event loop: {e}")));
                return;
            }
        };
        let driver = if monoio::utils::detect_uring() {
            "io_uring"
        } else {
            "epoll"
        };
        runtime.block_on(run_shard(seed, shard_main, ready, driver));
    }));
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        error!(
            shard = index,
            "shard-{index} panicked: {message}; stopping the process"
        );
        std::process::exit(70);
    }
}

async fn run_shard<M, F, Fut>(
    seed: ShardSeed<M>,
    shard_main: Arc<F>,
    ready: Ready,
    driver: &'static str,
) where
    M: Send + 'static,
    F: Fn(ShardContext<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let io = match UdpIo::new(seed.socket, seed.config.gso) {
        Ok(io) => io,
        Err(e) => {
            let _ = ready.send(Err(format!("socket: {e}")));
            return;
        }
    };
    let shard = seed.index as u8;
    let mut endpoint_config = EndpointConfig::default();
    let dialling = Arc::new(AtomicBool::new(false));
    let generator_dialling = dialling.clone();
    let dial_key = seed.dial_key.clone();
    endpoint_config.cid_generator(move || {
        Box::new(ShardCidGenerator::new(
            shard,
            dial_key.clone(),
            generator_dialling.clone(),
        ))
    });
    let allow_mtud = !io.may_fragment();
    let endpoint = quinn_proto::Endpoint::new(
        Arc::new(endpoint_config),
        seed.server_config.clone(),
        allow_mtud,
        None,
    );
    let core = Rc::new(ShardCore::new(CoreParams {
        index: seed.index,
        shard_count: seed.shard_count,
        endpoint,
        server_config: seed.server_config,
        stats: seed.stats,
        admission: seed.admission,
        io,
        transport: seed.transport,
        stream_ceilings: [
            stream_ceiling(&seed.config.quic, Dir::Bi),
            stream_ceiling(&seed.config.quic, Dir::Uni),
        ],
        close_code: VarInt::from_u32(seed.config.shutdown_close_code),
        close_reason: Bytes::from_static(b"server shutting down"),
        dial_key: seed.dial_key,
        dialling,
    }));
    let inbox = Rc::new(AppInbox::default());
    monoio::spawn(tasks::receive(core.clone(), seed.mesh_tx.clone()));
    monoio::spawn(tasks::mesh_inbox(
        core.clone(),
        seed.mesh_rx,
        inbox.clone(),
        seed.config.shutdown_timeout,
        seed.config.shutdown_grace.min(seed.config.shutdown_timeout),
    ));
    let context = ShardContext {
        core: core.clone(),
        mesh: seed.mesh_tx,
        inbox,
    };
    monoio::spawn(shard_main(context));
    let _ = ready.send(Ok(driver));
    tasks::driver(core).await;
}

/// The streams of `dir` a connection's peer may open at first: the
/// handshake's limit, raised as it is used (see `ConnEntry::grow_stream_limit`).
fn initial_streams(limits: &QuicLimits, dir: Dir) -> u32 {
    limits
        .initial_concurrent_streams
        .max(1)
        .min(stream_ceiling(limits, dir))
}

/// The most streams of `dir` a connection's peer may earn by using them.
pub(crate) fn stream_ceiling(limits: &QuicLimits, dir: Dir) -> u32 {
    match dir {
        Dir::Bi => limits.max_concurrent_bidi_streams,
        Dir::Uni => limits.max_concurrent_uni_streams,
    }
}

fn transport_config(limits: &QuicLimits) -> Result<TransportConfig, RuntimeError> {
    let idle = IdleTimeout::try_from(limits.idle_timeout).map_err(|_| {
        RuntimeError::Transport(format!("idle timeout {:?} too large", limits.idle_timeout))
    })?;
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Some(idle))
        .keep_alive_interval(limits.keep_alive)
        .max_concurrent_bidi_streams(initial_streams(limits, Dir::Bi).into())
        .max_concurrent_uni_streams(initial_streams(limits, Dir::Uni).into())
        .stream_receive_window(limits.stream_receive_window.into())
        .receive_window(limits.receive_window.into())
        .send_window(limits.send_window)
        .datagram_receive_buffer_size(limits.datagram_receive_buffer);
    Ok(t)
}
