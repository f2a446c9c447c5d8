//! The three tasks that run a shard: receive, mesh and driver.
//!
//! Receive and mesh only feed datagrams into the core and queue connections;
//! the driver alone sends. That way a burst of received packets is answered
//! by one flush (ACKs coalesce, GSO batches fill) instead of one per packet.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::IoSliceMut;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use bytes::BytesMut;
use quinn_udp::RecvMeta;
use tracing::{debug, error};

use crate::cid::owning_shard;
use crate::core::{ForwardedDatagram, ShardCore};
use crate::mesh::{MeshReceiver, MeshSender};
use crate::notify::yield_now;
use crate::socket::RECV_BATCH;
use crate::stats::ShardStats;
use crate::wait::WaitList;

/// What travels between shards.
pub enum Envelope<M> {
    /// A datagram for a connection this shard owns.
    Datagram(ForwardedDatagram),
    /// Begin graceful shutdown.
    Shutdown,
    /// An application message.
    App(M),
}

/// Post an application message; give it back if shard `to` is gone.
pub(crate) fn post<M>(mesh: &MeshSender<Envelope<M>>, to: usize, message: M) -> Result<(), M> {
    mesh.send(to, Envelope::App(message)).map_err(|e| match e {
        Envelope::App(m) => m,
        _ => unreachable!("send returns the envelope it was given"),
    })
}

/// Application messages that reached this shard, waiting for the app.
pub(crate) struct AppInbox<M> {
    pub queue: RefCell<VecDeque<M>>,
    pub waiters: WaitList,
}

impl<M> Default for AppInbox<M> {
    fn default() -> Self {
        Self {
            queue: RefCell::new(VecDeque::new()),
            waiters: WaitList::default(),
        }
    }
}

/// Room for one datagram: quinn-proto advertises a max UDP payload of 1472
/// bytes, so peers send no more. GRO packs up to `gro_segments` of them into
/// one buffer, and a buffer too small for that truncates the whole burst.
const DATAGRAM_ROOM: usize = 1500;
/// Receive batches handled before yielding to the driver, so sending (and
/// with it ACKs) keeps pace under a flood.
const RECV_BATCHES_PER_TURN: usize = 8;

pub(crate) async fn receive<M>(core: Rc<ShardCore>, mesh: MeshSender<Envelope<M>>) {
    let segment_room = DATAGRAM_ROOM * core.io.gro_segments();
    let mut storage = vec![0u8; segment_room * RECV_BATCH];
    let mut meta = vec![RecvMeta::default(); RECV_BATCH];
    let mut batches = 0;
    loop {
        let received = {
            let mut slices: Vec<IoSliceMut<'_>> = storage
                .chunks_mut(segment_room)
                .map(IoSliceMut::new)
                .collect();
            core.io.try_recv(&mut slices, &mut meta)
        };
        match received {
            Ok(count) => {
                let now = Instant::now();
                for (m, buf) in meta.iter().zip(storage.chunks(segment_room)).take(count) {
                    dispatch(&core, &mesh, now, m, &buf[..m.len]);
                }
                core.driver.notify();
                batches += 1;
                if batches >= RECV_BATCHES_PER_TURN {
                    batches = 0;
                    yield_now().await;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                batches = 0;
                if let Err(e) = core.io.readable().await {
                    error!(shard = core.index, error = %e, "socket wait failed");
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // ICMP errors surface here on some kernels; they concern one
                // peer, not the socket.
                debug!(shard = core.index, error = %e, "receive error");
            }
        }
    }
}

/// Split a (possibly GRO-coalesced) buffer into datagrams and route each.
fn dispatch<M>(
    core: &ShardCore,
    mesh: &MeshSender<Envelope<M>>,
    now: Instant,
    meta: &RecvMeta,
    buf: &[u8],
) {
    let stride = meta.stride.max(1);
    let ecn = meta
        .ecn
        .and_then(|e| quinn_proto::EcnCodepoint::from_bits(e as u8));
    for datagram in buf.chunks(stride) {
        ShardStats::add(&core.stats.datagrams_received, 1);
        ShardStats::add(&core.stats.bytes_received, datagram.len() as u64);
        let data = BytesMut::from(datagram);
        match owning_shard(datagram, &core.dial_key) {
            Some(owner) if owner as usize != core.index && (owner as usize) < core.shard_count => {
                let forwarded = ForwardedDatagram {
                    remote: meta.addr,
                    local_ip: meta.dst_ip,
                    ecn,
                    data,
                };
                if mesh
                    .send(owner as usize, Envelope::Datagram(forwarded))
                    .is_ok()
                {
                    ShardStats::add(&core.stats.datagrams_forwarded_out, 1);
                }
            }
            _ => core.handle_datagram(now, meta.addr, meta.dst_ip, ecn, data),
        }
    }
}

pub(crate) async fn mesh_inbox<M>(
    core: Rc<ShardCore>,
    inbox: MeshReceiver<Envelope<M>>,
    app: Rc<AppInbox<M>>,
    shutdown_timeout: std::time::Duration,
    shutdown_grace: std::time::Duration,
) {
    let mut batch = Vec::new();
    loop {
        inbox.recv_batch(&mut batch).await;
        let now = Instant::now();
        let mut app_messages = 0;
        for envelope in batch.drain(..) {
            match envelope {
                Envelope::Datagram(d) => {
                    ShardStats::add(&core.stats.datagrams_forwarded_in, 1);
                    core.handle_datagram(now, d.remote, d.local_ip, d.ecn, d.data);
                }
                Envelope::Shutdown => {
                    core.begin_shutdown(now + shutdown_timeout, now + shutdown_grace)
                }
                Envelope::App(message) => {
                    app.queue.borrow_mut().push_back(message);
                    app_messages += 1;
                }
            }
        }
        if app_messages > 0 {
            ShardStats::add(&core.stats.mesh_messages_received, app_messages);
            app.waiters.wake_all();
        }
        core.driver.notify();
    }
}

/// Drive timers and transmits until shutdown completes.
pub(crate) async fn driver(core: Rc<ShardCore>) {
    loop {
        if core.is_send_blocked() {
            if let Err(e) = core.io.writable().await {
                error!(shard = core.index, error = %e, "socket wait failed");
                return;
            }
            if !core.retry_blocked() {
                continue;
            }
        } else {
            wait_for_work(&core).await;
        }
        let now = Instant::now();
        core.close_all_when_due(now);
        core.fire_timers(now);
        let more = core.flush(now);
        if core.shutdown_complete(now) {
            // One last flush has sent every close; done.
            return;
        }
        if more {
            core.driver.notify();
            yield_now().await;
        }
    }
}

/// Wait until the driver is notified or the next deadline passes.
async fn wait_for_work(core: &ShardCore) {
    let deadline = core.next_deadline();
    let mut sleep = pin!(async move {
        match deadline {
            Some(at) => monoio::time::sleep_until(monoio::time::Instant::from_std(at)).await,
            None => std::future::pending::<()>().await,
        }
    });
    poll_fn(|cx| {
        if core.driver.poll_notified(cx).is_ready() {
            return Poll::Ready(());
        }
        sleep.as_mut().poll(cx)
    })
    .await
}
