//! One shard's relay state: the announce table, the hubs of the tracks it
//! owns, the replicas of the tracks its subscribers read, and its sessions.
//! Everything here is touched by this shard's thread only; other shards
//! reach it through [`ShardMessage`]s, handled in arrival order.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qumo_shards::ShardContext;
use tracing::{debug, warn};

use crate::config::Config;
use crate::lite::{Limits, StreamCode};
use crate::message::{
    GroupSnapshot, HubRef, MediaEvent, MeshBacklog, SessionRef, ShardMessage, TrackKey,
};
use crate::metrics::RelayStats;
use crate::origin::{Listener, Origin, Page};
use crate::session::Session;
use crate::task::Signal;
use crate::track::{GroupState, TrackReplica, TrackState};

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
        }
    }
}

/// The owner's side of a track: the upstream subscription and the shards
/// that receive its media.
struct Hub {
    key: TrackKey,
    /// The owner's cache, which is also its local subscribers' replica.
    replica: Rc<TrackReplica>,
    /// Other shards with subscribers; each gets every event once.
    /// Each with the token of its current replica.
    shards: BTreeMap<usize, u64>,
    publisher: SessionRef,
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
    origin: RefCell<Origin>,
    hubs: RefCell<HashMap<u64, Hub>>,
    hub_ids: RefCell<HashMap<TrackKey, u64>>,
    next_hub: Cell<u64>,
    next_token: Cell<u64>,
    replicas: RefCell<HashMap<TrackKey, Rc<TrackReplica>>>,
    attached: RefCell<HashMap<HubRef, Rc<TrackReplica>>>,
    sessions: RefCell<HashMap<u64, Rc<Session>>>,
}

impl Shard {
    pub fn new(
        mesh: Box<dyn Mesh>,
        settings: Settings,
        hop: u64,
        stats: Arc<RelayStats>,
        backlog: Arc<MeshBacklog>,
    ) -> Self {
        Self {
            mesh,
            shutdown: Signal::default(),
            settings,
            stats,
            backlog,
            hop,
            origin: RefCell::new(Origin::default()),
            hubs: RefCell::new(HashMap::new()),
            hub_ids: RefCell::new(HashMap::new()),
            next_hub: Cell::new(0),
            next_token: Cell::new(0),
            replicas: RefCell::new(HashMap::new()),
            attached: RefCell::new(HashMap::new()),
            sessions: RefCell::new(HashMap::new()),
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
                        Some(message) => std::task::Poll::Ready(message),
                        None => {
                            *loopback.waker.borrow_mut() = Some(cx.waker().clone());
                            std::task::Poll::Pending
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
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        (hasher.finish() % self.shard_count() as u64) as usize
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

    pub fn register_session(&self, session: Rc<Session>) {
        self.sessions.borrow_mut().insert(session.id.id, session);
        self.count_state();
    }

    pub fn unregister_session(&self, session: &Rc<Session>) {
        self.sessions.borrow_mut().remove(&session.id.id);
        self.count_state();
        session.end_upstreams();
    }

    /// Mirror the size of every table into its gauge; called wherever one
    /// changes, so that state left behind by a departed peer shows.
    fn count_state(&self) {
        let stats = &self.stats;
        let origin = self.origin.borrow();
        stats.sessions_open.set(self.sessions.borrow().len() as u64);
        stats
            .announce_listeners_open
            .set(origin.listener_count() as u64);
        stats
            .broadcasts_announced
            .set(origin.broadcast_count() as u64);
        stats.hubs_open.set(self.hubs.borrow().len() as u64);
        stats
            .track_replicas_open
            .set(self.replicas.borrow().len() as u64);
        stats
            .hub_attachments_open
            .set(self.attached.borrow().len() as u64);
    }

    // --- announcements --------------------------------------------------

    /// Tell every shard (this one included) that `path` is (in)active.
    pub fn announce(&self, path: &str, publisher: SessionRef, hops: Arc<[u64]>, active: bool) {
        let path: Arc<str> = Arc::from(path);
        for shard in 0..self.shard_count() {
            self.post(
                shard,
                ShardMessage::Announce {
                    path: path.clone(),
                    publisher,
                    hops: hops.clone(),
                    active,
                },
            );
        }
    }

    pub fn publisher_of(&self, broadcast: &str) -> Option<SessionRef> {
        self.origin.borrow().publisher(broadcast)
    }

    pub fn listen(&self, prefix: &str, session: SessionRef) -> (u64, Rc<Listener>) {
        let backlog = self.settings.max_announce_backlog;
        let listening = self.origin.borrow_mut().listen(prefix, session, backlog);
        self.count_state();
        listening
    }

    /// A page of the announce table; see [`Origin::page`].
    pub fn announced_page(
        &self,
        prefix: &str,
        session: SessionRef,
        after: Option<&str>,
        limit: usize,
    ) -> Page {
        self.origin.borrow().page(prefix, session, after, limit)
    }

    pub fn count_announced(&self, prefix: &str, session: SessionRef) -> usize {
        self.origin.borrow().count_active(prefix, session)
    }

    pub fn unlisten(&self, id: u64) {
        self.origin.borrow_mut().unlisten(id);
        self.count_state();
    }

    // --- subscriber side ------------------------------------------------

    /// The local replica of `key`, asking the owner for the track if this
    /// shard has none yet.
    pub fn subscribe_local(&self, key: &TrackKey) -> Rc<TrackReplica> {
        // Each borrow is its own statement: one held in an `if let`
        // condition lives through the body, where a nested borrow_mut of
        // the same cell would panic the shard.
        let existing = self.replicas.borrow().get(key).cloned();
        if let Some(replica) = existing {
            if !matches!(replica.state(), TrackState::Ended(_)) {
                return replica;
            }
        }
        let owner = self.owner(key);
        // On the owner, a live hub's cache is the replica.
        if owner == self.index() {
            let id = self.hub_ids.borrow().get(key).copied();
            let hub_replica = id.and_then(|id| Some(self.hubs.borrow().get(&id)?.replica.clone()));
            if let Some(replica) = hub_replica {
                self.replicas
                    .borrow_mut()
                    .insert(key.clone(), replica.clone());
                self.count_state();
                return replica;
            }
        }
        let replica = self.new_replica(key);
        self.replicas
            .borrow_mut()
            .insert(key.clone(), replica.clone());
        self.count_state();
        self.post(
            owner,
            ShardMessage::Subscribe {
                key: key.clone(),
                from: self.index(),
                token: replica.token,
            },
        );
        replica
    }

    /// The last local subscriber of `replica` left.
    pub fn release_local(&self, key: &TrackKey, replica: &Rc<TrackReplica>) {
        // Its attachment goes first, even when the replica was replaced: an
        // ended replica's entry would otherwise stay, with its groups, for
        // as long as the shard runs (found by tests/session_fuzz.rs).
        self.attached
            .borrow_mut()
            .retain(|_, r| !Rc::ptr_eq(r, replica));
        self.count_state();
        {
            let mut replicas = self.replicas.borrow_mut();
            match replicas.get(key) {
                Some(current) if Rc::ptr_eq(current, replica) => {
                    replicas.remove(key);
                }
                // Already replaced (the track ended and a new one started).
                _ => return,
            }
        }
        self.count_state();
        let owner = self.owner(key);
        if owner == self.index() {
            self.hub_maybe_idle(key);
        } else {
            self.post(
                owner,
                ShardMessage::Unsubscribe {
                    key: key.clone(),
                    from: self.index(),
                    token: replica.token,
                },
            );
        }
    }

    // --- publisher side -------------------------------------------------

    /// Send a media event to its hub (through the mesh, which keeps order).
    pub fn to_hub(&self, hub: HubRef, event: MediaEvent) {
        self.post(hub.owner, ShardMessage::Media { hub, event });
    }

    // --- messages -------------------------------------------------------

    pub fn handle(&self, message: ShardMessage) {
        self.backlog.sub(self.index(), message.weight());
        self.stats
            .mesh_backlog_bytes
            .set(self.backlog.get(self.index()));
        match message {
            ShardMessage::Announce {
                path,
                publisher,
                hops,
                active,
            } => {
                self.origin
                    .borrow_mut()
                    .update(&path, publisher, hops, active);
                self.count_state();
            }
            ShardMessage::Subscribe { key, from, token } => self.hub_subscribe(key, from, token),
            ShardMessage::Unsubscribe { key, from, token } => {
                let id = self.hub_ids.borrow().get(&key).copied();
                if let Some(id) = id {
                    if let Some(hub) = self.hubs.borrow_mut().get_mut(&id) {
                        // Only the replica it names: that shard may have
                        // subscribed again since.
                        if hub.shards.get(&from) == Some(&token) {
                            hub.shards.remove(&from);
                        }
                    }
                }
                self.hub_maybe_idle(&key);
            }
            ShardMessage::Attached {
                key,
                token,
                hub,
                properties,
                groups,
                ended,
            } => self.attached(key, token, hub, properties, groups, ended),
            ShardMessage::Upstream {
                key,
                publisher,
                hub,
            } => {
                let session = self.sessions.borrow().get(&publisher.id).cloned();
                match session {
                    Some(session) => session.subscribe_upstream(key, hub),
                    None => self.to_hub(hub, MediaEvent::track_end(Some(StreamCode::NOT_FOUND))),
                }
            }
            ShardMessage::UpstreamCancel { publisher, hub } => {
                let session = self.sessions.borrow().get(&publisher.id).cloned();
                if let Some(session) = session {
                    session.cancel_upstream(hub);
                }
            }
            ShardMessage::Media { hub, event } => self.media(hub, event),
        }
    }

    fn new_replica(&self, key: &TrackKey) -> Rc<TrackReplica> {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        Rc::new(TrackReplica::new(
            key.clone(),
            token,
            self.settings.group_cache_size,
            self.settings.max_cached_bytes_per_track,
        ))
    }

    /// Owner: shard `from` wants `key`.
    fn hub_subscribe(&self, key: TrackKey, from: usize, token: u64) {
        let me = self.index();
        // Our own subscriber left before this message was handled.
        if from == me && !self.replicas.borrow().contains_key(&key) {
            return;
        }
        let existing = self.hub_ids.borrow().get(&key).copied();
        let id = match existing {
            Some(id) => id,
            None => {
                let Some(publisher) = self.publisher_of(&key.broadcast) else {
                    return self.refuse(key, from, token, StreamCode::NOT_FOUND);
                };
                let id = self.next_hub.get();
                self.next_hub.set(id + 1);
                let replica = self.replicas.borrow().get(&key).cloned();
                let replica = replica.unwrap_or_else(|| self.new_replica(&key));
                replica.attach(None);
                debug!(shard = me, track = %key, hub = id, ?publisher, "hub created");
                self.hubs.borrow_mut().insert(
                    id,
                    Hub {
                        key: key.clone(),
                        replica,
                        shards: BTreeMap::new(),
                        publisher,
                    },
                );
                self.hub_ids.borrow_mut().insert(key.clone(), id);
                self.count_state();
                self.post(
                    publisher.shard,
                    ShardMessage::Upstream {
                        key: key.clone(),
                        publisher,
                        hub: HubRef { owner: me, id },
                    },
                );
                id
            }
        };
        if from == me {
            return;
        }
        let mut hubs = self.hubs.borrow_mut();
        let Some(hub) = hubs.get_mut(&id) else {
            warn!(track = %key, hub = id, "hub id without a hub; subscribe dropped (a relay bug)");
            return;
        };
        // A repeat for the same replica needs no second snapshot; a new
        // token (that shard subscribed again) gets one.
        if hub.shards.insert(from, token) == Some(token) {
            return;
        }
        let groups = hub
            .replica
            .groups()
            .iter()
            .map(|g| GroupSnapshot {
                sequence: g.sequence,
                frames: g.frames(),
                ended: (g.state() != GroupState::Open).then_some(g.state()),
            })
            .collect();
        let message = ShardMessage::Attached {
            key,
            token,
            hub: HubRef { owner: me, id },
            properties: hub.replica.properties(),
            groups,
            ended: None,
        };
        drop(hubs);
        self.post(from, message);
    }

    fn refuse(&self, key: TrackKey, from: usize, token: u64, code: StreamCode) {
        if from == self.index() {
            let replica = self.replicas.borrow().get(&key).cloned();
            if let Some(replica) = replica {
                replica.end(Some(code), code);
            }
            return;
        }
        self.post(
            from,
            ShardMessage::Attached {
                key,
                token,
                hub: HubRef {
                    owner: self.index(),
                    id: u64::MAX,
                },
                properties: None,
                groups: Vec::new(),
                ended: Some(Some(code)),
            },
        );
    }

    /// Owner: drop the hub and its upstream once nobody reads it.
    fn hub_maybe_idle(&self, key: &TrackKey) {
        let Some(id) = self.hub_ids.borrow().get(key).copied() else {
            return;
        };
        let idle = {
            let hubs = self.hubs.borrow();
            hubs.get(&id).is_some_and(|hub| hub.shards.is_empty())
                && !self.replicas.borrow().contains_key(key)
        };
        if let Some(hub) = idle.then(|| self.remove_hub(id)).flatten() {
            debug!(track = %key, hub = id, "hub idle; cancelling upstream");
            self.post(
                hub.publisher.shard,
                ShardMessage::UpstreamCancel {
                    publisher: hub.publisher,
                    hub: HubRef {
                        owner: self.index(),
                        id,
                    },
                },
            );
        }
    }

    fn remove_hub(&self, id: u64) -> Option<Hub> {
        let hub = self.hubs.borrow_mut().remove(&id)?;
        self.hub_ids.borrow_mut().remove(&hub.key);
        self.count_state();
        Some(hub)
    }

    /// Subscriber shard: the owner answered.
    fn attached(
        &self,
        key: TrackKey,
        token: u64,
        hub: HubRef,
        properties: Option<crate::track::TrackProperties>,
        groups: Vec<GroupSnapshot>,
        ended: Option<Option<StreamCode>>,
    ) {
        let replica = self.replicas.borrow().get(&key).cloned();
        let current = |r: &Rc<TrackReplica>| r.token == token && r.state() == TrackState::Pending;
        let Some(replica) = replica.filter(current) else {
            // Everyone left before the answer came: let the owner know.
            if ended.is_none() {
                self.post(
                    hub.owner,
                    ShardMessage::Unsubscribe {
                        key,
                        from: self.index(),
                        token,
                    },
                );
            }
            return;
        };
        if let Some(code) = ended {
            replica.end(code, code.unwrap_or(StreamCode::CANCEL));
            return;
        }
        let now = Instant::now();
        for group in groups {
            let sequence = group.sequence;
            replica.apply(MediaEvent::Group { sequence }, now);
            for frame in group.frames {
                replica.apply(
                    MediaEvent::Frame {
                        sequence,
                        timestamp: frame.timestamp,
                        payload: frame.payload,
                    },
                    now,
                );
            }
            match group.ended {
                Some(GroupState::Done) => replica.apply(MediaEvent::GroupEnd { sequence }, now),
                Some(GroupState::Reset(code)) => {
                    replica.apply(MediaEvent::GroupReset { sequence, code }, now)
                }
                _ => None,
            };
        }
        replica.attach(properties);
        self.attached.borrow_mut().insert(hub, replica);
        self.count_state();
    }

    /// A media event: on the owner, for a hub (cache it, fan it out); on a
    /// subscriber shard, for a replica.
    fn media(&self, hub_ref: HubRef, event: MediaEvent) {
        let now = Instant::now();
        if hub_ref.owner != self.index() {
            let replica = self.attached.borrow().get(&hub_ref).cloned();
            if let Some(replica) = replica {
                replica.apply(event, now);
            }
            return;
        }
        let ended = matches!(event, MediaEvent::TrackEnd { .. });
        {
            let hubs = self.hubs.borrow();
            let Some(hub) = hubs.get(&hub_ref.id) else {
                return;
            };
            for &shard in hub.shards.keys() {
                self.post(
                    shard,
                    ShardMessage::Media {
                        hub: hub_ref,
                        event: event.clone(),
                    },
                );
            }
            if let Some(code) = hub.replica.apply(event, now) {
                warn!(track = %hub.key, %code, "group outgrew the track cache; reset");
            }
        }
        if let Some(hub) = ended.then(|| self.remove_hub(hub_ref.id)).flatten() {
            debug!(track = %hub.key, "track ended");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::TrackName;

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
}
