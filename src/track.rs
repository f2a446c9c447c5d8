//! A shard's local copy of one track: the newest groups, each a list of
//! frames as `Bytes`, and the wake-ups of the local subscribers reading it.
//!
//! Invariants:
//! - Groups are kept sorted by sequence; at most `cache_groups` of them and,
//!   beyond the newest group, at most `cache_bytes` of payload. An evicted or
//!   oversized group that is still open is marked reset, so a writer holding
//!   it stops instead of waiting for frames that will never be appended.
//! - Every state change wakes every waiter (track or group); waiters re-check.
//!   One shard thread owns a replica, so plain `Cell`/`RefCell` suffice.
//! - The replica never blocks on a subscriber: writers read it by cursor.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use qumo_shards::{WaitList, Waiter};

use crate::lite::{Encode, FrameHeader, StreamCode, Timestamps, Version};
use crate::model::MediaEvent;
use crate::model::TrackKey;
pub use crate::model::{Datagram, Frame, GroupState, TrackProperties};

/// What the cache charges a frame beyond its payload: its slot in the
/// group and its share of the messages that carried it. Without it, a
/// publisher of empty frames would fill memory under a cache counted in
/// payload bytes alone.
pub const FRAME_OVERHEAD: u64 = 64;

/// A frame's FRAME header as each version puts it on the wire, encoded
/// once when the frame is cached, so that a writer sends clones of it to
/// every subscriber instead of encoding it for each. Every writer starts
/// its group stream at frame 0, so the timestamp delta (against the
/// previous frame of the group) is the same for all of them.
#[derive(Debug, Clone)]
pub struct FrameHeads {
    /// The lite-04 header, then the lite-05+ one.
    both: Bytes,
    split: usize,
}

impl FrameHeads {
    fn new(timestamp_delta: i64, size: u64) -> Self {
        let mut both = BytesMut::with_capacity(24);
        let plain = FrameHeader {
            timestamp_delta: None,
            size,
        };
        // Neither can fail: `Timestamps::delta` made the delta, and it
        // refuses any that zigzag cannot carry.
        let _ = plain.encode(&mut both, Version::Lite04);
        let split = both.len();
        let timed = FrameHeader {
            timestamp_delta: Some(timestamp_delta),
            size,
        };
        let _ = timed.encode(&mut both, Version::Lite05);
        Self {
            both: both.freeze(),
            split,
        }
    }

    /// The header for a stream of `version`.
    pub fn for_version(&self, version: Version) -> Bytes {
        match version.has_frame_timestamps() {
            true => self.both.slice(self.split..),
            false => self.both.slice(..self.split),
        }
    }
}

/// What a writer finds at its cursor.
#[derive(Debug, Clone)]
pub enum NextFrame {
    Frame(Frame, FrameHeads),
    End,
    Reset(StreamCode),
}

/// A group: frames appended in order, read by any number of cursors.
#[derive(Debug)]
pub struct Group {
    pub sequence: u64,
    frames: RefCell<Vec<(Frame, FrameHeads)>>,
    /// The timestamp the next frame's delta is taken against.
    timestamps: Cell<Timestamps>,
    state: Cell<GroupState>,
    bytes: Cell<u64>,
    /// When a newer group arrived; a superseded group is what a lagging
    /// subscriber may skip.
    superseded_at: Cell<Option<Instant>>,
    waiters: WaitList,
}

impl Group {
    fn new(sequence: u64) -> Self {
        Self {
            sequence,
            frames: RefCell::new(Vec::new()),
            timestamps: Cell::new(Timestamps::default()),
            state: Cell::new(GroupState::Open),
            bytes: Cell::new(0),
            superseded_at: Cell::new(None),
            waiters: WaitList::default(),
        }
    }

    pub fn state(&self) -> GroupState {
        self.state.get()
    }

    pub fn superseded_at(&self) -> Option<Instant> {
        self.superseded_at.get()
    }

    pub fn frame_count(&self) -> usize {
        self.frames.borrow().len()
    }

    /// The frame at `index`, if it has arrived.
    pub fn frame(&self, index: usize) -> Option<Frame> {
        self.frames.borrow().get(index).map(|(f, _)| f.clone())
    }

    /// All frames so far (for a snapshot to another shard).
    pub fn frames(&self) -> Vec<Frame> {
        self.frames
            .borrow()
            .iter()
            .map(|(f, _)| f.clone())
            .collect()
    }

    /// The frame at `index`, the group's end, or `Pending` with `waiter`
    /// (one of this group's) registered for the next change.
    pub fn poll_frame(
        &self,
        waiter: &Waiter<'_>,
        cx: &mut Context<'_>,
        index: usize,
    ) -> Poll<NextFrame> {
        if let Some((frame, heads)) = self.frames.borrow().get(index) {
            return Poll::Ready(NextFrame::Frame(frame.clone(), heads.clone()));
        }
        match self.state.get() {
            GroupState::Done => Poll::Ready(NextFrame::End),
            GroupState::Reset(code) => Poll::Ready(NextFrame::Reset(code)),
            GroupState::Open => {
                waiter.register(cx);
                Poll::Pending
            }
        }
    }

    /// A place to be woken on the next change (frame, end, reset,
    /// superseded), registered with [`Waiter::register`].
    pub fn waiter(&self) -> Waiter<'_> {
        self.waiters.waiter()
    }

    fn push(&self, frame: Frame) {
        // An IETF object's extensions are held beside the payload: counted.
        let extensions = frame.extensions.as_ref().map_or(0, |e| e.bytes.len());
        self.bytes
            .set(self.bytes.get() + (frame.payload.len() + extensions) as u64 + FRAME_OVERHEAD);
        // A delta zigzag cannot carry is sent as 0, leaving the base as is.
        let mut timestamps = self.timestamps.get();
        let delta = timestamps.delta(frame.timestamp).unwrap_or(0);
        self.timestamps.set(timestamps);
        let heads = FrameHeads::new(delta, frame.payload.len() as u64);
        self.frames.borrow_mut().push((frame, heads));
        self.wake();
    }

    fn end(&self, state: GroupState) {
        if self.state.get() == GroupState::Open {
            self.state.set(state);
            self.wake();
        }
    }

    fn supersede(&self, now: Instant) {
        if self.superseded_at.get().is_none() {
            self.superseded_at.set(Some(now));
            self.wake();
        }
    }

    fn wake(&self) {
        self.waiters.wake_all();
    }
}

/// Datagrams a replica keeps for its local subscribers to pick up: the
/// newest few. A subscriber that falls further behind than this loses the
/// rest (counted), as a congested path would.
pub const DATAGRAM_RING: usize = 64;

/// Where the track stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackState {
    /// Waiting for the owner to attach this shard.
    Pending,
    Live,
    /// Over: `None` for a clean end, else the stream error code.
    Ended(Option<StreamCode>),
}

/// A shard's copy of a track's newest groups.
#[derive(Debug)]
pub struct TrackReplica {
    pub key: TrackKey,
    /// Names this replica in the subscribe handshake with the owner.
    pub token: u64,
    groups: RefCell<VecDeque<Rc<Group>>>,
    cache_groups: usize,
    cache_bytes: u64,
    state: Cell<TrackState>,
    properties: Cell<Option<TrackProperties>>,
    subscribers: Cell<usize>,
    /// The newest datagrams, and the number the next one will get.
    datagrams: RefCell<VecDeque<Datagram>>,
    next_datagram: Cell<u64>,
    waiters: WaitList,
}

impl TrackReplica {
    pub fn new(key: TrackKey, token: u64, cache_groups: usize, cache_bytes: u64) -> Self {
        Self {
            key,
            token,
            groups: RefCell::new(VecDeque::new()),
            cache_groups: cache_groups.max(1),
            cache_bytes,
            state: Cell::new(TrackState::Pending),
            properties: Cell::new(None),
            subscribers: Cell::new(0),
            datagrams: RefCell::new(VecDeque::new()),
            next_datagram: Cell::new(0),
            waiters: WaitList::default(),
        }
    }

    pub fn state(&self) -> TrackState {
        self.state.get()
    }

    pub fn properties(&self) -> Option<TrackProperties> {
        self.properties.get()
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers.get()
    }

    pub fn add_subscriber(&self) {
        self.subscribers.set(self.subscribers.get() + 1);
    }

    /// Returns how many remain.
    pub fn remove_subscriber(&self) -> usize {
        let left = self.subscribers.get().saturating_sub(1);
        self.subscribers.set(left);
        left
    }

    /// The cached groups, oldest first.
    /// Bytes its cached groups hold, as the byte cap counts them.
    pub fn cached_bytes(&self) -> u64 {
        self.groups.borrow().iter().map(|g| g.bytes.get()).sum()
    }

    pub fn groups(&self) -> Vec<Rc<Group>> {
        self.groups.borrow().iter().cloned().collect()
    }

    pub fn newest_sequence(&self) -> Option<u64> {
        self.groups.borrow().back().map(|g| g.sequence)
    }

    /// The first cached group with a sequence above `after` (any group when
    /// `after` is `None`, starting from the newest).
    pub fn group_after(&self, after: Option<u64>) -> Option<Rc<Group>> {
        let groups = self.groups.borrow();
        match after {
            None => groups.back().cloned(),
            Some(after) => groups.iter().find(|g| g.sequence > after).cloned(),
        }
    }

    /// The oldest cached group whose sequence is at least `from`.
    pub fn group_from(&self, from: u64) -> Option<Rc<Group>> {
        let groups = self.groups.borrow();
        groups.iter().find(|g| g.sequence >= from).cloned()
    }

    /// The newest cached group, if newer than `after`.
    pub fn newest_after(&self, after: Option<u64>) -> Option<Rc<Group>> {
        let groups = self.groups.borrow();
        let newest = groups.back()?;
        match after {
            Some(after) if newest.sequence <= after => None,
            _ => Some(newest.clone()),
        }
    }

    /// A place to be woken on the next track-level change (new group, end,
    /// properties), registered with [`Waiter::register`].
    pub fn waiter(&self) -> Waiter<'_> {
        self.waiters.waiter()
    }

    /// The number the next datagram will get: where a new subscriber's
    /// datagram cursor starts.
    pub fn next_datagram(&self) -> u64 {
        self.next_datagram.get()
    }

    /// The datagrams numbered `from` on, into `out`; returns how many of
    /// them the ring no longer holds and where the cursor goes next.
    pub fn datagrams_from(&self, from: u64, out: &mut Vec<Datagram>) -> (u64, u64) {
        let next = self.next_datagram.get();
        let ring = self.datagrams.borrow();
        let oldest = next - ring.len() as u64;
        let missed = oldest.saturating_sub(from);
        let skip = from.saturating_sub(oldest) as usize;
        out.extend(ring.iter().skip(skip).cloned());
        (missed, next)
    }

    fn push_datagram(&self, datagram: Datagram) {
        let mut ring = self.datagrams.borrow_mut();
        if ring.len() == DATAGRAM_RING {
            ring.pop_front();
        }
        ring.push_back(datagram);
        drop(ring);
        self.next_datagram.set(self.next_datagram.get() + 1);
        self.wake();
    }

    /// The cached group `sequence`, if any (what a FETCH asks for).
    pub fn group(&self, sequence: u64) -> Option<Rc<Group>> {
        self.find(sequence)
    }

    /// Until the owner has attached this replica (or ended the track): a
    /// replica on a shard that does not own the track starts empty.
    pub async fn attached(&self) {
        let waiter = self.waiter();
        std::future::poll_fn(|cx| match self.state() {
            TrackState::Pending => {
                waiter.register(cx);
                std::task::Poll::Pending
            }
            _ => std::task::Poll::Ready(()),
        })
        .await
    }

    /// The owner attached this shard: the track is live from here on.
    pub fn attach(&self, properties: Option<TrackProperties>) {
        if self.state.get() == TrackState::Pending {
            self.state.set(TrackState::Live);
        }
        if properties.is_some() {
            self.properties.set(properties);
        }
        self.wake();
    }

    /// Apply one media event from the owner (or, on the owner, from the
    /// publisher). Returns the reset code when the event made a group exceed
    /// the cache on its own, so the owner can stop the upstream group.
    pub fn apply(&self, event: MediaEvent, now: Instant) -> Option<StreamCode> {
        if matches!(self.state.get(), TrackState::Ended(_)) {
            return None;
        }
        match event {
            MediaEvent::Group { sequence } => self.open_group(sequence, now),
            MediaEvent::Frame {
                sequence,
                timestamp,
                payload,
                extensions,
            } => {
                let frame = Frame {
                    timestamp,
                    payload,
                    extensions,
                };
                return self.push_frame(sequence, frame);
            }
            MediaEvent::GroupEnd { sequence } => {
                if let Some(g) = self.find(sequence) {
                    g.end(GroupState::Done);
                }
            }
            MediaEvent::GroupReset { sequence, code } => {
                if let Some(g) = self.find(sequence) {
                    g.end(GroupState::Reset(code));
                }
            }
            MediaEvent::Properties(properties) => {
                self.properties.set(Some(properties));
                self.wake();
            }
            MediaEvent::Datagram(datagram) => self.push_datagram(datagram),
            MediaEvent::TrackEnd { code, open_groups } => self.end(code, open_groups),
        }
        None
    }

    /// End the track: open groups are reset with `open_groups`, waiters woken.
    pub fn end(&self, code: Option<StreamCode>, open_groups: StreamCode) {
        if matches!(self.state.get(), TrackState::Ended(_)) {
            return;
        }
        self.state.set(TrackState::Ended(code));
        for group in self.groups.borrow().iter() {
            group.end(GroupState::Reset(open_groups));
        }
        self.wake();
    }

    fn find(&self, sequence: u64) -> Option<Rc<Group>> {
        self.groups
            .borrow()
            .iter()
            .rev()
            .find(|g| g.sequence == sequence)
            .cloned()
    }

    fn open_group(&self, sequence: u64, now: Instant) {
        let mut groups = self.groups.borrow_mut();
        // Groups may arrive out of order (each is its own QUIC stream); keep
        // them sorted and ignore a repeat.
        let at = groups.partition_point(|g| g.sequence < sequence);
        if groups.get(at).is_some_and(|g| g.sequence == sequence) {
            return;
        }
        // A group older than everything kept, with the cache full, would be
        // evicted at once: drop it instead.
        if at == 0 && groups.len() >= self.cache_groups {
            return;
        }
        let group = Rc::new(Group::new(sequence));
        if at == groups.len() {
            if let Some(previous) = groups.back() {
                previous.supersede(now);
            }
        } else {
            group.supersede(now);
        }
        groups.insert(at, group);
        while groups.len() > self.cache_groups {
            if let Some(old) = groups.pop_front() {
                old.end(GroupState::Reset(StreamCode::EVICTED));
            }
        }
        drop(groups);
        self.wake();
    }

    fn push_frame(&self, sequence: u64, frame: Frame) -> Option<StreamCode> {
        let group = self.find(sequence)?;
        if group.state() != GroupState::Open {
            return None;
        }
        group.push(frame);
        // Enforce the byte cap: drop the oldest groups first; if the newest
        // group alone is over, it is reset (GROUP_TOO_LARGE).
        let mut groups = self.groups.borrow_mut();
        let mut total: u64 = groups.iter().map(|g| g.bytes.get()).sum();
        while total > self.cache_bytes && groups.len() > 1 {
            let Some(old) = groups.pop_front() else { break };
            total -= old.bytes.get();
            old.end(GroupState::Reset(StreamCode::EVICTED));
        }
        if total > self.cache_bytes {
            if let Some(only) = groups.pop_front() {
                only.end(GroupState::Reset(StreamCode::GROUP_TOO_LARGE));
                return Some(StreamCode::GROUP_TOO_LARGE);
            }
        }
        None
    }

    fn wake(&self) {
        self.waiters.wake_all();
    }
}

#[cfg(test)]
mod tests;
