//! The track router of one shard, sans-IO: the announce table, the hubs of
//! the tracks this shard owns, the replicas its subscribers read, and the
//! hub attachments that feed them.
//!
//! Inputs are method calls ([`Router::handle`] for a mesh message, and the
//! session-facing calls), with the time passed in; outputs are
//! [`Output`]s queued for the caller to drain with [`Router::take_output`]:
//! messages for other shards (or this one) and commands for this shard's
//! sessions. The router does no I/O, reads no clock and spawns nothing, so
//! that N routers can run in one test, in a seeded order (see `sim.rs`).
//! Its output order depends on its inputs only (ordered maps where it
//! iterates), so a seed replays exactly.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, warn};

use crate::announced::{AnnouncedBroadcast, AnnouncedList, AnnouncedQuery};
use crate::lite::StreamCode;
use crate::message::{
    FetchEvent, FetchRef, GroupSnapshot, HubRef, MediaEvent, SessionRef, ShardMessage, TrackKey,
    UpstreamFetch,
};
use crate::metrics::RelayStats;
use crate::origin::{Listener, Origin, Page};
use crate::track::{GroupState, TrackProperties, TrackReplica, TrackState};

/// What a session of this shard must do for the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// Subscribe upstream to `key` and send its media to `hub`.
    SubscribeUpstream { key: TrackKey, hub: HubRef },
    /// Nobody wants `hub`'s track any more.
    CancelUpstream { hub: HubRef },
    /// Stop reading the group `sequence` of `hub`'s upstream (STOP_SENDING
    /// with `code`): the owner will not use the rest of it.
    StopGroup {
        hub: HubRef,
        sequence: u64,
        code: StreamCode,
    },
    /// FETCH a group from the peer for `fetch` (outside any hub) and send
    /// the answer to its shard as `ShardMessage::FetchReply`s.
    Fetch {
        fetch: FetchRef,
        request: UpstreamFetch,
    },
    /// Nobody waits for `fetch` any more.
    CancelFetch { fetch: FetchRef },
}

/// One thing the router asks its caller to do.
#[derive(Debug)]
pub enum Output {
    /// Put `message` on the mesh for shard `to` (possibly this one).
    Send { to: usize, message: ShardMessage },
    /// Hand `command` to this shard's session `session`.
    Session {
        session: SessionRef,
        command: SessionCommand,
    },
}

/// Where a router sits and the cache each of its replicas gets.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub index: usize,
    pub shard_count: usize,
    pub group_cache_size: usize,
    pub max_cached_bytes_per_track: u64,
    pub max_announce_backlog: usize,
}

/// Whether shard `n`'s inbox is so far behind that the owner should drop
/// whole groups for it rather than queue more (see [`Router::handle`]).
pub type LagProbe = Box<dyn Fn(usize) -> bool>;

/// The owner's side of a track: the upstream subscription and the shards
/// that receive its media.
struct Hub {
    key: TrackKey,
    /// The owner's cache, which is also its local subscribers' replica.
    replica: Rc<TrackReplica>,
    /// Other shards with subscribers, each with the token of its current
    /// replica; each gets every event once.
    shards: BTreeMap<usize, u64>,
    publisher: SessionRef,
    /// Groups not fanned out to one shard, by (shard, sequence): that
    /// shard lagged when the group started. Cleared by the group's end.
    dropped: BTreeSet<(usize, u64)>,
    /// Groups that outgrew the cache: their remaining frames go nowhere.
    oversized: BTreeSet<u64>,
}

/// A read-only view of a hub, for tests and checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubView {
    pub id: u64,
    pub key: TrackKey,
    pub shards: Vec<(usize, u64)>,
    pub publisher: SessionRef,
}

pub struct Router {
    config: RouterConfig,
    stats: Arc<RelayStats>,
    lagging: LagProbe,
    origin: Origin,
    hubs: BTreeMap<u64, Hub>,
    hub_ids: HashMap<TrackKey, u64>,
    next_hub: u64,
    next_token: Cell<u64>,
    replicas: HashMap<TrackKey, Rc<TrackReplica>>,
    attached: HashMap<HubRef, Rc<TrackReplica>>,
    sessions: HashSet<u64>,
    output: VecDeque<Output>,
}

impl Router {
    pub fn new(config: RouterConfig, stats: Arc<RelayStats>, lagging: LagProbe) -> Self {
        Self {
            config,
            stats,
            lagging,
            origin: Origin::default(),
            hubs: BTreeMap::new(),
            hub_ids: HashMap::new(),
            next_hub: 0,
            next_token: Cell::new(0),
            replicas: HashMap::new(),
            attached: HashMap::new(),
            sessions: HashSet::new(),
            output: VecDeque::new(),
        }
    }

    pub fn index(&self) -> usize {
        self.config.index
    }

    pub fn shard_count(&self) -> usize {
        self.config.shard_count
    }

    /// What the router asked for since the last call, in order.
    pub fn take_output(&mut self) -> VecDeque<Output> {
        std::mem::take(&mut self.output)
    }

    /// Hand the queued output over in `empty`, taking `empty`'s buffer in
    /// exchange: a caller that keeps swapping the same two buffers drains
    /// the router on every media event without allocating.
    pub fn swap_output(&mut self, empty: &mut VecDeque<Output>) {
        debug_assert!(empty.is_empty());
        std::mem::swap(&mut self.output, empty);
    }

    /// The shard that owns `key`'s hub. A fixed hash, so every shard agrees.
    pub fn owner(&self, key: &TrackKey) -> usize {
        owner_of(key, self.shard_count())
    }

    fn send(&mut self, to: usize, message: ShardMessage) {
        self.output.push_back(Output::Send { to, message });
    }

    fn command(&mut self, session: SessionRef, command: SessionCommand) {
        self.output.push_back(Output::Session { session, command });
    }

    // --- sessions -------------------------------------------------------

    pub fn register_session(&mut self, id: u64) {
        self.sessions.insert(id);
        self.count_state();
    }

    pub fn unregister_session(&mut self, id: u64) {
        self.sessions.remove(&id);
        self.count_state();
    }

    /// Mirror the size of every table into its gauge; called wherever one
    /// changes, so that state left behind by a departed peer shows.
    fn count_state(&self) {
        let stats = &self.stats;
        stats.sessions_open.set(self.sessions.len() as u64);
        stats
            .announce_listeners_open
            .set(self.origin.listener_count() as u64);
        stats
            .broadcasts_announced
            .set(self.origin.broadcast_count() as u64);
        stats.hubs_open.set(self.hubs.len() as u64);
        stats.track_replicas_open.set(self.replicas.len() as u64);
        stats.hub_attachments_open.set(self.attached.len() as u64);
    }

    // --- announcements --------------------------------------------------

    /// Tell every shard (this one included) that `path` is (in)active.
    pub fn announce(&mut self, path: &str, publisher: SessionRef, hops: Arc<[u64]>, active: bool) {
        let path: Arc<str> = Arc::from(path);
        for shard in 0..self.shard_count() {
            self.send(
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
        self.origin.publisher(broadcast)
    }

    /// The publisher of `broadcast` or of the longest announced path above
    /// it; see [`Origin::publisher_covering`]. Hubs route by it, so a lite
    /// session (which checks [`Self::publisher_of`] first) is unaffected.
    pub fn publisher_covering(&self, broadcast: &str) -> Option<SessionRef> {
        self.origin.publisher_covering(broadcast)
    }

    pub fn listen(&mut self, prefix: &str, session: SessionRef) -> (u64, Rc<Listener>) {
        let backlog = self.config.max_announce_backlog;
        let listening = self.origin.listen(prefix, session, backlog);
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
        self.origin.page(prefix, session, after, limit)
    }

    pub fn count_announced(&self, prefix: &str, session: SessionRef) -> usize {
        self.origin.count_active(prefix, session)
    }

    pub fn unlisten(&mut self, id: u64) {
        self.origin.unlisten(id);
        self.count_state();
    }

    // --- subscriber side ------------------------------------------------

    /// The local replica of `key`, asking the owner for the track if this
    /// shard has none yet.
    pub fn subscribe_local(&mut self, key: &TrackKey) -> Rc<TrackReplica> {
        if let Some(replica) = self.replicas.get(key) {
            if !matches!(replica.state(), TrackState::Ended(_)) {
                return replica.clone();
            }
        }
        let owner = self.owner(key);
        // On the owner, a live hub's cache is the replica.
        if owner == self.index() {
            if let Some(hub) = self.hub_ids.get(key).and_then(|id| self.hubs.get(id)) {
                let replica = hub.replica.clone();
                self.replicas.insert(key.clone(), replica.clone());
                self.count_state();
                return replica;
            }
        }
        let replica = self.new_replica(key);
        self.replicas.insert(key.clone(), replica.clone());
        self.count_state();
        self.send(
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
    pub fn release_local(&mut self, key: &TrackKey, replica: &Rc<TrackReplica>) {
        // Its attachment goes first, even when the replica was replaced: an
        // ended replica's entry would otherwise stay, with its groups, for
        // as long as the shard runs (found by tests/session_fuzz.rs).
        self.attached.retain(|_, r| !Rc::ptr_eq(r, replica));
        self.count_state();
        match self.replicas.get(key) {
            Some(current) if Rc::ptr_eq(current, replica) => {
                self.replicas.remove(key);
            }
            // Already replaced (the track ended and a new one started).
            _ => return,
        }
        self.count_state();
        let owner = self.owner(key);
        if owner == self.index() {
            self.hub_maybe_idle(key);
        } else {
            self.send(
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
    pub fn to_hub(&mut self, hub: HubRef, event: MediaEvent) {
        self.send(hub.owner, ShardMessage::Media { hub, event });
    }

    // --- messages -------------------------------------------------------

    /// One message from the mesh, handled at `now`.
    pub fn handle(&mut self, message: ShardMessage, now: Instant) {
        match message {
            ShardMessage::Announce {
                path,
                publisher,
                hops,
                active,
            } => {
                self.origin.update(&path, publisher, hops, active);
                self.count_state();
            }
            ShardMessage::Subscribe { key, from, token } => self.hub_subscribe(key, from, token),
            ShardMessage::Unsubscribe { key, from, token } => {
                if let Some(hub) = self.hub_ids.get(&key).and_then(|id| self.hubs.get_mut(id)) {
                    // Only the replica it names: that shard may have
                    // subscribed again since (defect 1 of the review).
                    if hub.shards.get(&from) == Some(&token) {
                        hub.shards.remove(&from);
                        hub.dropped.retain(|&(shard, _)| shard != from);
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
            } => self.attached(key, token, hub, properties, groups, ended, now),
            ShardMessage::Upstream {
                key,
                publisher,
                hub,
            } => {
                if self.sessions.contains(&publisher.id) {
                    self.command(publisher, SessionCommand::SubscribeUpstream { key, hub });
                } else {
                    self.to_hub(hub, MediaEvent::track_end(Some(StreamCode::NOT_FOUND)));
                }
            }
            ShardMessage::UpstreamCancel { publisher, hub } => {
                if self.sessions.contains(&publisher.id) {
                    self.command(publisher, SessionCommand::CancelUpstream { hub });
                }
            }
            ShardMessage::StopGroup {
                publisher,
                hub,
                sequence,
                code,
            } => {
                if self.sessions.contains(&publisher.id) {
                    let command = SessionCommand::StopGroup {
                        hub,
                        sequence,
                        code,
                    };
                    self.command(publisher, command);
                }
            }
            ShardMessage::Media { hub, event } => self.media(hub, event, now),
            ShardMessage::FetchUpstream {
                publisher,
                fetch,
                request,
            } => {
                if self.sessions.contains(&publisher.id) {
                    self.command(publisher, SessionCommand::Fetch { fetch, request });
                } else {
                    let event = FetchEvent::Reset(StreamCode::NOT_FOUND);
                    self.send(fetch.shard, ShardMessage::FetchReply { fetch, event });
                }
            }
            ShardMessage::FetchCancel { publisher, fetch } => {
                if self.sessions.contains(&publisher.id) {
                    self.command(publisher, SessionCommand::CancelFetch { fetch });
                }
            }
            // The shard delivers these to its waiting fetch before the
            // router; one that got here has nobody to go to.
            ShardMessage::FetchReply { .. } => {}
            ShardMessage::ListAnnounced(query) => self.answer_announced(query),
            // The relay takes these before the router; one that got here
            // is dropped, which closes its socket.
            ShardMessage::WebSocket(_) => {}
        }
    }

    /// Answer the admin listener's `/announced` from this shard's copy of
    /// the table. The reply is a one-slot in-memory channel and `try_send`
    /// never waits, so the router still does no I/O.
    fn answer_announced(&self, query: AnnouncedQuery) {
        let (listed, truncated) = self.origin.list(&query.prefix, query.limit);
        let broadcasts = listed
            .into_iter()
            .map(|listed| AnnouncedBroadcast {
                path: listed.path,
                publisher_shard: listed.publisher.shard,
                publisher_session: listed.publisher.id,
                hops: listed.hops.len(),
            })
            .collect();
        let _ = query.reply.try_send(AnnouncedList {
            prefix: query.prefix,
            broadcasts,
            truncated,
        });
    }

    fn new_replica(&self, key: &TrackKey) -> Rc<TrackReplica> {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        Rc::new(TrackReplica::new(
            key.clone(),
            token,
            self.config.group_cache_size,
            self.config.max_cached_bytes_per_track,
        ))
    }

    /// Owner: shard `from` wants `key`.
    fn hub_subscribe(&mut self, key: TrackKey, from: usize, token: u64) {
        let me = self.index();
        // Our own subscriber left (or its track ended) before this message
        // was handled: nobody here waits for it.
        let local_waits = self
            .replicas
            .get(&key)
            .is_some_and(|r| r.state() == TrackState::Pending);
        if from == me && !local_waits {
            return;
        }
        let id = match self.hub_ids.get(&key).copied() {
            Some(id) => id,
            None => {
                let Some(publisher) = self.publisher_covering(&key.broadcast) else {
                    return self.refuse(key, from, token, StreamCode::NOT_FOUND);
                };
                let id = self.next_hub;
                self.next_hub += 1;
                // A local replica still waiting becomes the hub's cache; an
                // ended one (its readers not gone yet) must not: it holds
                // the last hub's groups and takes no new ones (found by the
                // simulator).
                let replica = match self.replicas.get(&key) {
                    Some(replica) if local_waits => replica.clone(),
                    _ => self.new_replica(&key),
                };
                replica.attach(None);
                debug!(shard = me, track = %key, hub = id, ?publisher, "hub created");
                self.hubs.insert(
                    id,
                    Hub {
                        key: key.clone(),
                        replica,
                        shards: BTreeMap::new(),
                        publisher,
                        dropped: BTreeSet::new(),
                        oversized: BTreeSet::new(),
                    },
                );
                self.hub_ids.insert(key.clone(), id);
                self.count_state();
                self.send(
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
        let Some(hub) = self.hubs.get_mut(&id) else {
            warn!(track = %key, hub = id, "hub id without a hub; subscribe dropped (a relay bug)");
            return;
        };
        // A repeat for the same replica needs no second snapshot; a new
        // token (that shard subscribed again) gets one.
        if hub.shards.insert(from, token) == Some(token) {
            return;
        }
        // A new replica there starts from the snapshot: no group is
        // dropped for it yet.
        hub.dropped.retain(|&(shard, _)| shard != from);
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
        self.send(from, message);
    }

    fn refuse(&mut self, key: TrackKey, from: usize, token: u64, code: StreamCode) {
        if from == self.index() {
            if let Some(replica) = self.replicas.get(&key) {
                replica.end(Some(code), code);
            }
            return;
        }
        let owner = self.index();
        self.send(
            from,
            ShardMessage::Attached {
                key,
                token,
                hub: HubRef {
                    owner,
                    id: u64::MAX,
                },
                properties: None,
                groups: Vec::new(),
                ended: Some(Some(code)),
            },
        );
    }

    /// Owner: drop the hub and its upstream once nobody reads it.
    fn hub_maybe_idle(&mut self, key: &TrackKey) {
        let Some(id) = self.hub_ids.get(key).copied() else {
            return;
        };
        // Local readers count only if they read this hub: an ended
        // replica of an earlier one keeps nothing alive.
        let idle = self.hubs.get(&id).is_some_and(|hub| {
            let local = self.replicas.get(key);
            hub.shards.is_empty() && !local.is_some_and(|r| Rc::ptr_eq(r, &hub.replica))
        });
        if !idle {
            return;
        }
        if let Some(hub) = self.remove_hub(id) {
            debug!(track = %key, hub = id, "hub idle; cancelling upstream");
            let owner = self.index();
            self.send(
                hub.publisher.shard,
                ShardMessage::UpstreamCancel {
                    publisher: hub.publisher,
                    hub: HubRef { owner, id },
                },
            );
        }
    }

    fn remove_hub(&mut self, id: u64) -> Option<Hub> {
        let hub = self.hubs.remove(&id)?;
        self.hub_ids.remove(&hub.key);
        self.count_state();
        Some(hub)
    }

    /// Subscriber shard: the owner answered.
    #[allow(clippy::too_many_arguments)]
    fn attached(
        &mut self,
        key: TrackKey,
        token: u64,
        hub: HubRef,
        properties: Option<TrackProperties>,
        groups: Vec<GroupSnapshot>,
        ended: Option<Option<StreamCode>>,
        now: Instant,
    ) {
        let current = |r: &&Rc<TrackReplica>| r.token == token && r.state() == TrackState::Pending;
        let Some(replica) = self.replicas.get(&key).filter(current).cloned() else {
            // Everyone left before the answer came: let the owner know.
            if ended.is_none() {
                let from = self.index();
                self.send(hub.owner, ShardMessage::Unsubscribe { key, from, token });
            }
            return;
        };
        if let Some(code) = ended {
            replica.end(code, code.unwrap_or(StreamCode::CANCEL));
            return;
        }
        for group in groups {
            let sequence = group.sequence;
            replica.apply(MediaEvent::Group { sequence }, now);
            for frame in group.frames {
                replica.apply(
                    MediaEvent::Frame {
                        sequence,
                        timestamp: frame.timestamp,
                        payload: frame.payload,
                        extensions: frame.extensions,
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
        self.attached.insert(hub, replica);
        self.count_state();
    }

    /// A media event: on the owner, for a hub (cache it, fan it out); on a
    /// subscriber shard, for a replica.
    fn media(&mut self, hub_ref: HubRef, event: MediaEvent, now: Instant) {
        if hub_ref.owner != self.index() {
            if let Some(replica) = self.attached.get(&hub_ref) {
                replica.apply(event, now);
            }
            return;
        }
        let Some(hub) = self.hubs.get_mut(&hub_ref.id) else {
            return;
        };
        let sequence = event.sequence();
        let group_over = matches!(
            event,
            MediaEvent::GroupEnd { .. } | MediaEvent::GroupReset { .. }
        );
        // The rest of a group that outgrew the cache goes nowhere: the
        // shards were told when it did.
        let oversized = sequence.is_some_and(|s| hub.oversized.contains(&s));
        if oversized {
            if group_over {
                if let Some(s) = sequence {
                    hub.oversized.remove(&s);
                }
            }
            return;
        }
        let mut sends = Vec::with_capacity(hub.shards.len());
        let datagram = matches!(event, MediaEvent::Datagram(_));
        for &shard in hub.shards.keys() {
            // Best-effort by definition: a lagging shard gets none.
            if datagram && (self.lagging)(shard) {
                self.stats.datagrams_dropped.inc();
                continue;
            }
            if let Some(sequence) = sequence {
                if hub.dropped.contains(&(shard, sequence)) {
                    if group_over {
                        hub.dropped.remove(&(shard, sequence));
                    }
                    continue;
                }
                // A lagging shard gets no new group: its subscribers see it
                // reset at once and move on to the next one.
                if matches!(event, MediaEvent::Group { .. }) && (self.lagging)(shard) {
                    hub.dropped.insert((shard, sequence));
                    self.stats.mesh_groups_dropped.inc();
                    sends.push((shard, MediaEvent::Group { sequence }));
                    let code = StreamCode::TOO_FAR_BEHIND;
                    sends.push((shard, MediaEvent::GroupReset { sequence, code }));
                    continue;
                }
            }
            sends.push((shard, event.clone()));
        }
        let ended = matches!(event, MediaEvent::TrackEnd { .. });
        let too_large = hub.replica.apply(event, now);
        let (publisher, key, shards) = (hub.publisher, hub.key.clone(), hub.shards.clone());
        if let (Some(code), Some(sequence)) = (too_large, sequence) {
            // Only the remaining frames of this one group are refused: the
            // shards are told now, and the publisher's session stops the
            // group's stream instead of reading it to the end.
            debug!(track = %key, sequence, %code, "group outgrew the track cache; stopping it");
            self.stats.groups_stopped_too_large.inc();
            hub.oversized.insert(sequence);
            for &shard in shards.keys() {
                hub.dropped.remove(&(shard, sequence));
                sends.push((shard, MediaEvent::GroupReset { sequence, code }));
            }
        }
        for (to, event) in sends {
            self.send(
                to,
                ShardMessage::Media {
                    hub: hub_ref,
                    event,
                },
            );
        }
        if let (Some(code), Some(sequence)) = (too_large, sequence) {
            let stop = ShardMessage::StopGroup {
                publisher,
                hub: hub_ref,
                sequence,
                code,
            };
            self.send(publisher.shard, stop);
        }
        if ended && self.remove_hub(hub_ref.id).is_some() {
            debug!(track = %key, "track ended");
        }
    }

    /// Bytes cached by every track this shard holds: its hubs' caches and
    /// its replicas, each counted once (a hub's cache is also its owner's
    /// local replica). O(tracks): sampled on a timer, not per event.
    pub fn cache_bytes(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        self.hubs
            .values()
            .map(|hub| &hub.replica)
            .chain(self.replicas.values())
            .chain(self.attached.values())
            .filter(|replica| seen.insert(Rc::as_ptr(replica)))
            .map(|replica| replica.cached_bytes())
            .sum()
    }

    // --- inspection (tests, checks) -------------------------------------

    /// Every hub, by id.
    pub fn hubs(&self) -> Vec<HubView> {
        self.hubs
            .iter()
            .map(|(&id, hub)| HubView {
                id,
                key: hub.key.clone(),
                shards: hub.shards.iter().map(|(&s, &t)| (s, t)).collect(),
                publisher: hub.publisher,
            })
            .collect()
    }

    /// The hub's cache of the hub `id`, if it lives.
    pub fn hub_replica(&self, id: u64) -> Option<Rc<TrackReplica>> {
        self.hubs.get(&id).map(|hub| hub.replica.clone())
    }

    /// The current local replica of `key`.
    pub fn replica(&self, key: &TrackKey) -> Option<Rc<TrackReplica>> {
        self.replicas.get(key).cloned()
    }

    /// Every current local replica, sorted by track.
    pub fn replicas(&self) -> Vec<Rc<TrackReplica>> {
        let mut all: Vec<_> = self.replicas.values().cloned().collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// The hubs this shard's replicas are attached to, sorted.
    pub fn attachments(&self) -> Vec<(HubRef, Rc<TrackReplica>)> {
        let mut all: Vec<_> = self
            .attached
            .iter()
            .map(|(&hub, replica)| (hub, replica.clone()))
            .collect();
        all.sort_by_key(|(hub, _)| (hub.owner, hub.id));
        all
    }
}

/// The shard that owns `key`'s hub among `shards`.
pub fn owner_of(key: &TrackKey, shards: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
