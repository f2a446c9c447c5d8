//! One shard: its track router (`crate::router`, the announce table, hubs,
//! replicas), the mesh that carries the router's messages, and the inboxes
//! that carry its commands to this shard's sessions. Everything here is
//! touched by this shard's thread only; other shards reach it through
//! [`ShardMessage`]s, handled in arrival order.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use qumo_shards::ShardContext;
use tracing::debug;

use crate::config::Config;
use crate::fetch_sink::FetchSink;
use crate::lite::{Limits, StreamCode};
use crate::message::{
    FetchEvent, FetchRef, FetchWindow, HubRef, MediaEvent, MeshBacklog, SessionRef, ShardMessage,
    TrackKey, UpstreamFetch,
};
use crate::metrics::RelayStats;
use crate::origin::{Listener, Page};
use crate::router::{owner_of, Output, Router, RouterConfig, SessionCommand};
use crate::task::Signal;
use crate::track::TrackReplica;

/// How often a paused publisher looks at the mesh backlog again. Pauses
/// happen only under overload, so a short poll is cheaper than a wake-up
/// on every message handled.
const MESH_POLL: Duration = Duration::from_millis(1);

/// The relay limits and policies every session on a shard applies.
#[derive(Debug, Clone)]
pub struct Settings {
    pub limits: Limits,
    pub group_cache_size: usize,
    pub frame_capacity: usize,
    pub max_cached_bytes_per_track: u64,
    pub max_subscriptions_per_session: usize,
    pub max_announce_prefix_len: usize,
    pub max_frame_size: u64,
    pub default_max_latency: Duration,
    pub max_latency_ceiling: Duration,
    pub max_frames_per_group: usize,
    pub max_broadcasts_per_session: usize,
    pub max_announce_requests_per_session: usize,
    pub max_announce_backlog: usize,
    pub max_buffered_frame_bytes_per_session: u64,
    pub setup_timeout: Duration,
    pub max_mesh_backlog: u64,
    /// How long a FETCH forwarded to the publisher may take, end to end.
    pub fetch_timeout: Duration,
    /// Streams a relay peer may have open at once (bidi, uni), raised to
    /// once the session is known to be one (`quic.peer_max_concurrent_*`).
    pub peer_stream_limits: (u32, u32),
    /// Token checks (`auth`); `None` is an open relay.
    pub auth: Option<Arc<crate::auth::Auth>>,
}

impl Settings {
    /// The settings the relay's configuration asks for.
    pub fn from_config(config: &Config) -> Self {
        let r = &config.relay;
        Settings {
            limits: Limits {
                max_path: r.max_announce_prefix_len.max(4096),
                ..Limits::default()
            },
            group_cache_size: r.group_cache_size,
            frame_capacity: usize::try_from(r.frame_capacity).unwrap_or(usize::MAX),
            max_cached_bytes_per_track: r.max_cached_bytes_per_track,
            max_subscriptions_per_session: r.max_subscriptions_per_session,
            max_announce_prefix_len: r.max_announce_prefix_len,
            max_frame_size: r.max_frame_size,
            default_max_latency: r.default_max_latency,
            max_latency_ceiling: r.max_latency_ceiling,
            max_frames_per_group: r.max_frames_per_group,
            max_broadcasts_per_session: r.max_broadcasts_per_session,
            max_announce_requests_per_session: r.max_announce_requests_per_session,
            max_announce_backlog: r.max_announce_backlog,
            max_buffered_frame_bytes_per_session: r.max_buffered_frame_bytes_per_session,
            setup_timeout: r.setup_timeout,
            max_mesh_backlog: r.max_mesh_backlog,
            fetch_timeout: r.fetch_timeout,
            peer_stream_limits: (
                config.quic.peer_max_concurrent_bidi_streams,
                config.quic.peer_max_concurrent_uni_streams,
            ),
            // Loaded from its key file by the caller (`Config::auth`).
            auth: None,
        }
    }
}

/// How a shard reaches the others: the runtime's mesh, or in tests an
/// in-process loopback ([`Shard::standalone`]), so that the relay state
/// and the sessions above it run without sockets.
pub trait Mesh {
    /// This shard's index, `0..shard_count()`.
    fn index(&self) -> usize;
    fn shard_count(&self) -> usize;
    /// Queue `message` for shard `to`; it comes back if that shard stopped.
    fn send(&self, to: usize, message: ShardMessage) -> Result<(), ShardMessage>;
}

impl Mesh for ShardContext<ShardMessage> {
    fn index(&self) -> usize {
        ShardContext::index(self)
    }

    fn shard_count(&self) -> usize {
        ShardContext::shard_count(self)
    }

    fn send(&self, to: usize, message: ShardMessage) -> Result<(), ShardMessage> {
        ShardContext::send(self, to, message)
    }
}

/// A one-shard mesh within one thread: what a shard sends itself waits in
/// a queue that [`Shard::standalone`]'s dispatch task hands back to it.
#[derive(Default)]
struct Loopback {
    queue: RefCell<std::collections::VecDeque<ShardMessage>>,
    /// One waker, not a list: only the dispatch task waits on the queue.
    waker: RefCell<Option<std::task::Waker>>,
}

impl Mesh for Rc<Loopback> {
    fn index(&self) -> usize {
        0
    }

    fn shard_count(&self) -> usize {
        1
    }

    fn send(&self, to: usize, message: ShardMessage) -> Result<(), ShardMessage> {
        if to != 0 {
            return Err(message);
        }
        self.queue.borrow_mut().push_back(message);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
        Ok(())
    }
}

/// A session's side of the router's commands: a queue the shard fills and
/// the session's own task drains ([`SessionInbox::poll_next`]), so the
/// shard never calls into a session.
#[derive(Default)]
pub struct SessionInbox {
    queue: RefCell<VecDeque<SessionCommand>>,
    waker: RefCell<Option<Waker>>,
}

impl SessionInbox {
    fn push(&self, command: SessionCommand) {
        self.queue.borrow_mut().push_back(command);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// The next command, or `Pending` until one comes.
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<SessionCommand> {
        let next = self.queue.borrow_mut().pop_front();
        match next {
            Some(command) => Poll::Ready(command),
            None => {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn take_all(&self) -> Vec<SessionCommand> {
        self.queue.borrow_mut().drain(..).collect()
    }
}

/// One shard: its [`Router`] and what moves the router's output, onto the
/// mesh and into this shard's sessions.
pub struct Shard {
    mesh: Box<dyn Mesh>,
    /// Raised when the relay starts shutting down.
    shutdown: Signal,
    pub settings: Settings,
    /// This shard's relay counters (see `crate::metrics`).
    pub stats: Arc<RelayStats>,
    /// Bytes waiting in every shard's inbox, shared by all shards.
    backlog: Arc<MeshBacklog>,
    /// This relay's hop id in announce chains (the same on every shard).
    pub hop: u64,
    /// Borrowed for one router call at a time, never across a call that
    /// may come back here: its output is moved after the borrow ends.
    router: RefCell<Router>,
    /// The router's output being moved, kept between calls for its
    /// capacity (see [`Router::swap_output`]).
    draining: RefCell<VecDeque<Output>>,
    inboxes: RefCell<HashMap<u64, Rc<SessionInbox>>>,
    /// FETCHes of this shard's sessions forwarded to a publisher, waiting
    /// for their answer, by [`FetchRef::id`].
    fetches: RefCell<HashMap<u64, (Rc<FetchSink>, FetchWindow)>>,
    next_fetch: Cell<u64>,
}

impl Shard {
    pub fn new(
        mesh: Box<dyn Mesh>,
        settings: Settings,
        hop: u64,
        stats: Arc<RelayStats>,
        backlog: Arc<MeshBacklog>,
    ) -> Self {
        let config = RouterConfig {
            index: mesh.index(),
            shard_count: mesh.shard_count(),
            group_cache_size: settings.group_cache_size,
            max_cached_bytes_per_track: settings.max_cached_bytes_per_track,
            max_announce_backlog: settings.max_announce_backlog,
        };
        // Whole groups are dropped for a shard past half the bound; the
        // publisher pause (`mesh_clear`) stays the last resort at the bound.
        let lagging = {
            let (backlog, bound) = (backlog.clone(), settings.max_mesh_backlog / 2);
            Box::new(move |shard| backlog.get(shard) > bound)
        };
        let router = Router::new(config, stats.clone(), lagging);
        Self {
            mesh,
            shutdown: Signal::default(),
            settings,
            stats,
            backlog,
            hop,
            router: RefCell::new(router),
            draining: RefCell::default(),
            inboxes: RefCell::new(HashMap::new()),
            fetches: RefCell::default(),
            next_fetch: Cell::new(0),
        }
    }

    /// A shard alone on this thread, its messages to itself delivered by a
    /// task spawned here (so: inside a monoio runtime). For running
    /// sessions and the relay state in memory, in tests and benchmarks.
    pub fn standalone(settings: Settings, stats: Arc<RelayStats>) -> Rc<Self> {
        let loopback = Rc::new(Loopback::default());
        let shard = Rc::new(Self::new(
            Box::new(loopback.clone()),
            settings,
            1,
            stats,
            Arc::new(MeshBacklog::default()),
        ));
        let weak = Rc::downgrade(&shard);
        monoio::spawn(async move {
            loop {
                let message = std::future::poll_fn(|cx| {
                    let next = loopback.queue.borrow_mut().pop_front();
                    match next {
                        Some(message) => Poll::Ready(message),
                        None => {
                            *loopback.waker.borrow_mut() = Some(cx.waker().clone());
                            Poll::Pending
                        }
                    }
                })
                .await;
                let Some(shard) = weak.upgrade() else { return };
                shard.handle(message);
            }
        });
        shard
    }

    pub fn index(&self) -> usize {
        self.mesh.index()
    }

    pub fn shard_count(&self) -> usize {
        self.mesh.shard_count()
    }

    /// The relay is shutting down: sessions say GOAWAY.
    pub fn begin_shutdown(&self) {
        self.shutdown.raise();
    }

    pub async fn shutdown_started(&self) {
        self.shutdown.raised().await
    }

    /// The shard that owns `key`'s hub. A fixed hash, so every shard agrees.
    pub fn owner(&self, key: &TrackKey) -> usize {
        owner_of(key, self.shard_count())
    }

    /// Run one router call, then move what it asked for.
    fn route<R>(&self, call: impl FnOnce(&mut Router) -> R) -> R {
        let result = call(&mut self.router.borrow_mut());
        self.flush();
        result
    }

    /// Move the router's output onto the mesh and into the sessions' inboxes.
    fn flush(&self) {
        // Taken out of its cell for the loop: delivering may call the
        // router again (an undelivered command), never this shard's flush.
        let mut batch = self.draining.take();
        loop {
            self.router.borrow_mut().swap_output(&mut batch);
            if batch.is_empty() {
                break;
            }
            for output in batch.drain(..) {
                match output {
                    Output::Send { to, message } => self.post(to, message),
                    Output::Session { session, command } => self.deliver(session.id, command),
                }
            }
        }
        *self.draining.borrow_mut() = batch;
    }

    fn deliver(&self, session: u64, command: SessionCommand) {
        let inbox = self.inboxes.borrow().get(&session).cloned();
        match inbox {
            Some(inbox) => inbox.push(command),
            None => self.undelivered(command),
        }
    }

    /// A command for a session that is gone: an upstream it will never
    /// open ends as if its publisher left.
    fn undelivered(&self, command: SessionCommand) {
        match command {
            SessionCommand::SubscribeUpstream { hub, .. } => {
                self.router.borrow_mut().to_hub(hub, MediaEvent::vanished());
            }
            // A fetch it will never make is not found.
            SessionCommand::Fetch { fetch, .. } => {
                let event = FetchEvent::Reset(StreamCode::NOT_FOUND);
                self.post(fetch.shard, ShardMessage::FetchReply { fetch, event });
            }
            SessionCommand::CancelUpstream { .. }
            | SessionCommand::StopGroup { .. }
            | SessionCommand::CancelFetch { .. } => {}
        }
    }

    fn post(&self, to: usize, message: ShardMessage) {
        let weight = message.weight();
        self.backlog.add(to, weight);
        if self.mesh.send(to, message).is_err() {
            self.backlog.sub(to, weight);
            debug!(to, "shard stopped; message dropped");
        }
    }

    /// Whether some shard's inbox holds more than `relay.max_mesh_backlog`:
    /// then publishers' group streams stop being read until it drains.
    pub fn mesh_congested(&self) -> bool {
        self.backlog.max(self.shard_count()) > self.settings.max_mesh_backlog
    }

    /// Wait, if the mesh is congested, until it is not.
    pub async fn mesh_clear(&self) {
        if !self.mesh_congested() {
            return;
        }
        self.stats.media_paused_for_mesh.inc();
        while self.mesh_congested() {
            monoio::time::sleep(MESH_POLL).await;
        }
    }

    // --- sessions -------------------------------------------------------

    /// `session` opened: the router's commands for it queue in the inbox
    /// returned, which the session drains.
    pub fn register_session(&self, session: SessionRef) -> Rc<SessionInbox> {
        let inbox = Rc::new(SessionInbox::default());
        self.inboxes.borrow_mut().insert(session.id, inbox.clone());
        self.route(|router| router.register_session(session.id));
        inbox
    }

    /// `session` closed; commands it never read are answered for it.
    pub fn unregister_session(&self, session: SessionRef) {
        let inbox = self.inboxes.borrow_mut().remove(&session.id);
        self.router.borrow_mut().unregister_session(session.id);
        for command in inbox.map(|inbox| inbox.take_all()).unwrap_or_default() {
            self.undelivered(command);
        }
        self.flush();
    }

    // --- announcements --------------------------------------------------

    /// Tell every shard (this one included) that `path` is (in)active.
    pub fn announce(&self, path: &str, publisher: SessionRef, hops: Arc<[u64]>, active: bool) {
        self.route(|router| router.announce(path, publisher, hops, active))
    }

    pub fn publisher_of(&self, broadcast: &str) -> Option<SessionRef> {
        self.router.borrow().publisher_of(broadcast)
    }

    /// See [`crate::router::Router::publisher_covering`].
    pub fn publisher_covering(&self, broadcast: &str) -> Option<SessionRef> {
        self.router.borrow().publisher_covering(broadcast)
    }

    pub fn listen(&self, prefix: &str, session: SessionRef) -> (u64, Rc<Listener>) {
        self.route(|router| router.listen(prefix, session))
    }

    /// A page of the announce table; see [`crate::origin::Origin::page`].
    pub fn announced_page(
        &self,
        prefix: &str,
        session: SessionRef,
        after: Option<&str>,
        limit: usize,
    ) -> Page {
        self.router
            .borrow()
            .announced_page(prefix, session, after, limit)
    }

    /// Refresh the `cache_bytes` gauge from the router's tracks.
    pub fn sample_cache_bytes(&self) {
        let bytes = self.router.borrow().cache_bytes();
        self.stats.cache_bytes.set(bytes);
    }

    pub fn count_announced(&self, prefix: &str, session: SessionRef) -> usize {
        self.router.borrow().count_announced(prefix, session)
    }

    pub fn unlisten(&self, id: u64) {
        self.route(|router| router.unlisten(id))
    }

    // --- subscriber side ------------------------------------------------

    /// The local replica of `key`, asking the owner for the track if this
    /// shard has none yet.
    pub fn subscribe_local(&self, key: &TrackKey) -> Rc<TrackReplica> {
        self.route(|router| router.subscribe_local(key))
    }

    /// The last local subscriber of `replica` left.
    pub fn release_local(&self, key: &TrackKey, replica: &Rc<TrackReplica>) {
        self.route(|router| router.release_local(key, replica))
    }

    // --- publisher side -------------------------------------------------

    /// Send a media event to its hub (through the mesh, which keeps order).
    pub fn to_hub(&self, hub: HubRef, event: MediaEvent) {
        self.post(hub.owner, ShardMessage::Media { hub, event });
    }

    /// A publisher's datagram (either protocol) to its track's hub, counted;
    /// while the mesh is congested it is dropped (and counted) instead: a
    /// datagram is relayed now or never, and never slows its publisher.
    pub fn datagram_to_hub(&self, hub: HubRef, datagram: MediaEvent) {
        if self.mesh_congested() {
            self.stats.datagrams_dropped.inc();
            return;
        }
        self.stats.media_datagrams_received.inc();
        self.to_hub(hub, datagram);
    }

    // --- forwarded FETCH ------------------------------------------------

    /// Forward a FETCH to `publisher` (on any shard): its session fetches
    /// the group from its peer and the answer comes back to the returned
    /// handle. Dropping the handle before the answer ends cancels it.
    pub fn fetch_upstream(
        self: &Rc<Self>,
        publisher: SessionRef,
        request: UpstreamFetch,
    ) -> ForwardedFetch {
        let id = self.next_fetch.get();
        self.next_fetch.set(id + 1);
        let fetch = FetchRef {
            shard: self.index(),
            id,
        };
        let sink = Rc::new(FetchSink::default());
        let window = request.window.clone();
        self.fetches
            .borrow_mut()
            .insert(id, (sink.clone(), window.clone()));
        self.stats.upstream_fetches_opened.inc();
        let message = ShardMessage::FetchUpstream {
            publisher,
            fetch,
            request,
        };
        self.post(publisher.shard, message);
        ForwardedFetch {
            shard: self.clone(),
            publisher,
            fetch,
            sink,
            window,
            served: false,
        }
    }

    /// A forwarded FETCH's session answers it: to the requesting shard.
    pub fn fetch_reply(&self, fetch: FetchRef, event: FetchEvent) {
        self.post(fetch.shard, ShardMessage::FetchReply { fetch, event });
    }

    /// FETCHes of this shard's sessions waiting for their answer.
    pub fn fetches_waiting(&self) -> usize {
        self.fetches.borrow().len()
    }

    /// Bytes of their answers sent and not yet written on.
    pub fn fetch_bytes_in_flight(&self) -> u64 {
        let fetches = self.fetches.borrow();
        fetches.values().map(|(_, window)| window.in_flight()).sum()
    }

    // --- messages -------------------------------------------------------

    pub fn handle(&self, message: ShardMessage) {
        let me = self.index();
        // The admin listener's question came from outside the mesh's
        // accounting (`Shard::post` adds what this takes off).
        if !matches!(message, ShardMessage::ListAnnounced(_)) {
            self.backlog.sub(me, message.weight());
        }
        self.stats.mesh_backlog_bytes.set(self.backlog.get(me));
        self.stats
            .mesh_inbox_messages
            .set(self.backlog.messages(me));
        // A forwarded FETCH's answer goes to its waiting task; one that
        // gave up is gone from the table and the rest is dropped.
        if let ShardMessage::FetchReply { fetch, event } = message {
            let sink = self.fetches.borrow().get(&fetch.id).map(|f| f.0.clone());
            if let Some(sink) = sink {
                sink.push(event);
            }
            return;
        }
        let now = Instant::now();
        self.route(|router| router.handle(message, now))
    }
}

/// A FETCH this shard forwarded to a publisher (see
/// [`Shard::fetch_upstream`]): the answer as it comes. Dropped, it leaves
/// the shard's table, and if the answer had not ended, the publisher's
/// session is told to stop, so nothing outlives the requester.
pub struct ForwardedFetch {
    shard: Rc<Shard>,
    publisher: SessionRef,
    fetch: FetchRef,
    sink: Rc<FetchSink>,
    window: FetchWindow,
    served: bool,
}

impl ForwardedFetch {
    /// The next step of the answer, in order.
    pub async fn next(&self) -> FetchEvent {
        std::future::poll_fn(|cx| self.sink.poll_next(cx)).await
    }

    /// The answer's bytes in flight: take off each frame written on.
    pub fn window(&self) -> &FetchWindow {
        &self.window
    }

    /// Every frame asked for reached the requester (counted as served;
    /// any other end counts as failed).
    pub fn served(&mut self) {
        if !self.served {
            self.served = true;
            self.shard.stats.upstream_fetches_served.inc();
        }
    }
}

impl Drop for ForwardedFetch {
    fn drop(&mut self) {
        if !self.served {
            self.shard.stats.upstream_fetches_failed.inc();
        }
        self.shard.fetches.borrow_mut().remove(&self.fetch.id);
        if !self.sink.finished() {
            let message = ShardMessage::FetchCancel {
                publisher: self.publisher,
                fetch: self.fetch,
            };
            self.shard.post(self.publisher.shard, message);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::lite::StreamCode;
    use crate::message::TrackName;
    use crate::track::TrackState;

    #[monoio::test(enable_timer = true)]
    async fn a_standalone_shard_answers_its_own_subscribe() {
        let shard = Shard::standalone(
            Settings::from_config(&Config::default()),
            Arc::new(RelayStats::default()),
        );
        let key = Arc::new(TrackName {
            broadcast: "nobody".into(),
            track: "video".into(),
        });
        let replica = shard.subscribe_local(&key);
        assert_eq!(replica.state(), TrackState::Pending);
        // The Subscribe goes round the loopback: no publisher, NOT_FOUND.
        let deadline = Instant::now() + Duration::from_secs(5);
        while replica.state() == TrackState::Pending && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            replica.state(),
            TrackState::Ended(Some(StreamCode::NOT_FOUND))
        );
    }

    /// Wait until `done` holds, polling, for at most five seconds.
    async fn until(done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() && Instant::now() < deadline {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[monoio::test(enable_timer = true)]
    async fn commands_reach_the_sessions_inbox_and_unread_ones_are_answered_when_it_goes() {
        let shard = Shard::standalone(
            Settings::from_config(&Config::default()),
            Arc::new(RelayStats::default()),
        );
        let publisher = SessionRef { shard: 0, id: 5 };
        let inbox = shard.register_session(publisher);
        shard.announce("live", publisher, Arc::from([]), true);
        until(|| shard.publisher_of("live").is_some()).await;
        let key = Arc::new(TrackName {
            broadcast: "live".into(),
            track: "video".into(),
        });
        let replica = shard.subscribe_local(&key);
        until(|| !inbox.queue.borrow().is_empty()).await;
        let command = inbox.queue.borrow().front().cloned();
        assert!(
            matches!(command, Some(SessionCommand::SubscribeUpstream { ref key, .. }) if key.track == "video"),
            "{command:?}"
        );
        assert_eq!(replica.state(), TrackState::Live);
        // The session goes without reading it: the upstream it will never
        // open ends the track, as if its publisher left.
        shard.unregister_session(publisher);
        assert!(inbox.queue.borrow().is_empty());
        until(|| replica.state() != TrackState::Live).await;
        assert_eq!(replica.state(), TrackState::Ended(None));
        assert_eq!(shard.stats.sessions_open.get(), 0);
    }

    /// `f`'s output, or a panic naming `what` after five seconds.
    async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
        match monoio::time::timeout(Duration::from_secs(5), f).await {
            Ok(out) => out,
            Err(_) => panic!("{what}: nothing within 5 s"),
        }
    }

    /// Two shards on one thread, each message delivered by a task here in
    /// the order sent, as the runtime's mesh does between two threads.
    #[derive(Default)]
    struct TwoShards {
        queue: RefCell<VecDeque<(usize, ShardMessage)>>,
        waker: RefCell<Option<Waker>>,
    }

    struct Port(usize, Rc<TwoShards>);

    impl Mesh for Port {
        fn index(&self) -> usize {
            self.0
        }

        fn shard_count(&self) -> usize {
            2
        }

        fn send(&self, to: usize, message: ShardMessage) -> Result<(), ShardMessage> {
            self.1.queue.borrow_mut().push_back((to, message));
            if let Some(waker) = self.1.waker.borrow_mut().take() {
                waker.wake();
            }
            Ok(())
        }
    }

    /// Two shards whose mesh is an in-memory queue, pumped by a task: for
    /// tests of anything that crosses shards.
    pub(crate) fn two_shards() -> [Rc<Shard>; 2] {
        let net = Rc::new(TwoShards::default());
        let backlog = Arc::new(MeshBacklog::default());
        let shards = [0, 1].map(|index| {
            Rc::new(Shard::new(
                Box::new(Port(index, net.clone())),
                Settings::from_config(&Config::default()),
                1,
                Arc::new(RelayStats::default()),
                backlog.clone(),
            ))
        });
        let weak = shards.each_ref().map(Rc::downgrade);
        monoio::spawn(async move {
            loop {
                let (to, message) = std::future::poll_fn(|cx| {
                    let next = net.queue.borrow_mut().pop_front();
                    match next {
                        Some(next) => Poll::Ready(next),
                        None => {
                            *net.waker.borrow_mut() = Some(cx.waker().clone());
                            Poll::Pending
                        }
                    }
                })
                .await;
                let Some(shard) = weak[to].upgrade() else {
                    return;
                };
                shard.handle(message);
            }
        });
        shards
    }

    #[monoio::test(enable_timer = true)]
    async fn a_fetch_crosses_to_the_publishers_shard_and_its_answer_comes_back() {
        let [here, there] = two_shards();
        let publisher = SessionRef { shard: 1, id: 5 };
        let inbox = there.register_session(publisher);
        let request = |group| UpstreamFetch {
            key: Arc::new(TrackName {
                broadcast: "live".into(),
                track: "video".into(),
            }),
            group,
            priority: 0,
            window: FetchWindow::default(),
        };
        let next_command = || async {
            until(|| !inbox.queue.borrow().is_empty()).await;
            inbox.queue.borrow_mut().pop_front()
        };

        // Answered: the frame and the end come back to the handle.
        let mut forwarded = here.fetch_upstream(publisher, request(7));
        let Some(SessionCommand::Fetch {
            fetch,
            request: asked,
        }) = next_command().await
        else {
            panic!("no FETCH in the publisher's inbox");
        };
        assert_eq!((fetch.shard, asked.group), (0, 7));
        let payload = bytes::Bytes::from_static(b"frame");
        there.fetch_reply(
            fetch,
            FetchEvent::Frame {
                timestamp: 3,
                payload,
            },
        );
        there.fetch_reply(fetch, FetchEvent::End);
        let first = within("a frame", forwarded.next()).await;
        assert!(
            matches!(first, FetchEvent::Frame { timestamp: 3, .. }),
            "{first:?}"
        );
        let last = within("the end", forwarded.next()).await;
        assert!(matches!(last, FetchEvent::End), "{last:?}");
        forwarded.served();
        drop(forwarded);

        // A publisher that is gone: NOT_FOUND.
        let gone = SessionRef { shard: 1, id: 6 };
        let forwarded = here.fetch_upstream(gone, request(8));
        let end = within("the refusal", forwarded.next()).await;
        assert!(
            matches!(end, FetchEvent::Reset(StreamCode::NOT_FOUND)),
            "{end:?}"
        );
        drop(forwarded);

        // Given up before its answer: the publisher's session is told.
        let forwarded = here.fetch_upstream(publisher, request(9));
        let Some(SessionCommand::Fetch { fetch, .. }) = next_command().await else {
            panic!("no FETCH in the publisher's inbox");
        };
        drop(forwarded);
        let cancel = next_command().await;
        assert_eq!(cancel, Some(SessionCommand::CancelFetch { fetch }));
        // A late answer finds nobody and is dropped.
        there.fetch_reply(fetch, FetchEvent::End);
        assert_eq!(here.fetches_waiting(), 0);
        let stats = &here.stats;
        assert_eq!(stats.upstream_fetches_opened.get(), 3);
        assert_eq!(stats.upstream_fetches_served.get(), 1);
        assert_eq!(stats.upstream_fetches_failed.get(), 2);
    }
}
