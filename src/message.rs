//! What shards tell each other. Every message is `Send` and carries media as
//! `Bytes`, so a frame crosses a shard boundary by reference count, never by
//! copy. Messages between two shards arrive in the order they were sent;
//! the track protocol below relies on that.
//!
//! A track's life across shards (owner = `hash(track) % shards`):
//! 1. A subscriber's shard sends [`ShardMessage::Subscribe`] to the owner.
//! 2. The owner's hub answers [`ShardMessage::Attached`] with its cached
//!    groups and, the first time, asks the publisher's shard for one
//!    upstream subscription ([`ShardMessage::Upstream`]).
//! 3. The publisher's shard sends each group and frame to the owner
//!    ([`ShardMessage::Media`] to the hub), and the owner sends each one
//!    once to every subscribing shard ([`ShardMessage::Media`] to a replica).
//! 4. A shard whose last local subscriber left sends
//!    [`ShardMessage::Unsubscribe`]; when no shard is left the owner sends
//!    [`ShardMessage::UpstreamCancel`].
//!
//! `crate::router` implements this protocol, one router per shard.

use std::sync::Arc;

use crate::announced::AnnouncedQuery;
use crate::handoff::Handoff;
use crate::lite::StreamCode;
use crate::model::TrackProperties;
pub use crate::model::{
    Datagram, FetchEvent, FetchRef, FetchWindow, GroupSnapshot, HubRef, MediaEvent, SessionRef,
    TrackKey, TrackName, UpstreamFetch,
};

#[derive(Debug)]
pub enum ShardMessage {
    /// A broadcast became available (or not) through `publisher`. Sent to
    /// every shard: each keeps the whole announce table, since broadcasts
    /// change rarely and subscribes then resolve locally.
    Announce {
        path: Arc<str>,
        publisher: SessionRef,
        hops: Arc<[u64]>,
        active: bool,
    },
    /// To the owner: shard `from` has local subscribers for `key`. `token`
    /// names that shard's replica and comes back in `Attached`, so a late
    /// answer meant for an earlier replica is recognised.
    Subscribe {
        key: TrackKey,
        from: usize,
        token: u64,
    },
    /// To the owner: shard `from` has no local subscriber left for `key`
    /// in the replica `token` names. The owner ignores it when that shard
    /// has subscribed again since (a newer token), so a late UNSUBSCRIBE
    /// cannot cancel a newer subscription.
    Unsubscribe {
        key: TrackKey,
        from: usize,
        token: u64,
    },
    /// From the owner: `key` is served by `hub`; here are its cached groups.
    Attached {
        key: TrackKey,
        token: u64,
        hub: HubRef,
        properties: Option<TrackProperties>,
        groups: Vec<GroupSnapshot>,
        /// Set when the track cannot be served (e.g. no publisher): the
        /// subscribers get this stream error code.
        ended: Option<Option<StreamCode>>,
    },
    /// From the owner to the publisher's shard: subscribe upstream to `key`
    /// and send its media to `hub`.
    Upstream {
        key: TrackKey,
        publisher: SessionRef,
        hub: HubRef,
    },
    /// From the owner: nobody wants `hub`'s track any more.
    UpstreamCancel { publisher: SessionRef, hub: HubRef },
    /// From the owner to the publisher's shard: the group `sequence` outgrew
    /// the track cache; stop reading its stream (STOP_SENDING `code`).
    StopGroup {
        publisher: SessionRef,
        hub: HubRef,
        sequence: u64,
        code: StreamCode,
    },
    /// Media for a hub (publisher -> owner) or for a replica (owner -> shard).
    Media { hub: HubRef, event: MediaEvent },
    /// From a FETCH's shard to its publisher's: fetch this group from the
    /// peer, outside any hub, and answer `fetch` with [`ShardMessage::FetchReply`]s.
    FetchUpstream {
        publisher: SessionRef,
        fetch: FetchRef,
        request: UpstreamFetch,
    },
    /// From a FETCH's shard to its publisher's: nobody waits for `fetch` any more.
    FetchCancel {
        publisher: SessionRef,
        fetch: FetchRef,
    },
    /// From the publisher's shard: the next step of `fetch`'s answer.
    /// Handled by the shard, not the router (no hub is involved).
    FetchReply { fetch: FetchRef, event: FetchEvent },
    /// From the admin listener (not a shard): list the announce table.
    /// Posted from outside the backlog's accounting: never added to it, so
    /// never taken off it either.
    ListAnnounced(AnnouncedQuery),
    /// From the HTTP listener (not a shard): an upgraded WebSocket for this
    /// shard to run a session on. Outside the backlog's accounting, as
    /// `ListAnnounced`, and taken by the relay before the shard sees it.
    WebSocket(Box<Handoff>),
}

/// What a message in a shard's inbox stands for in memory beyond the frame
/// payloads it carries: its slot in the channel, in the inbox queue and in
/// the dispatch batch (the queues keep their peak capacity), measured as
/// about this much when a flood of empty frames filled them.
const MESSAGE_WEIGHT: u64 = 256;

impl ShardMessage {
    /// Bytes this message holds while it waits in an inbox; the sender adds
    /// it to the receiver's backlog and the receiver takes it off, both
    /// computing it from the message itself.
    pub fn weight(&self) -> u64 {
        match self {
            ShardMessage::Media {
                event:
                    MediaEvent::Frame { payload, .. } | MediaEvent::Datagram(Datagram { payload, .. }),
                ..
            }
            | ShardMessage::FetchReply {
                event: FetchEvent::Frame { payload, .. },
                ..
            } => MESSAGE_WEIGHT + payload.len() as u64,
            ShardMessage::Attached { groups, .. } => {
                MESSAGE_WEIGHT
                    + groups
                        .iter()
                        .flat_map(|g| &g.frames)
                        .map(|f| MESSAGE_WEIGHT + f.payload.len() as u64)
                        .sum::<u64>()
            }
            _ => MESSAGE_WEIGHT,
        }
    }
}

/// The bytes waiting in each shard's inbox (by [`ShardMessage::weight`]),
/// readable by every shard, so that a publisher's shard can stop reading
/// media while any inbox is over its bound: the mesh queues themselves are
/// unbounded, and a shard that falls behind must slow publishers down
/// (their QUIC flow control then holds them back) rather than queue without
/// limit.
///
/// It also counts the messages waiting, the inbox's depth.
#[derive(Debug)]
pub struct MeshBacklog {
    bytes: Vec<std::sync::atomic::AtomicU64>,
    messages: Vec<std::sync::atomic::AtomicU64>,
}

impl Default for MeshBacklog {
    fn default() -> Self {
        // One slot per possible shard (the index is one byte).
        Self {
            bytes: (0..256).map(|_| Default::default()).collect(),
            messages: (0..256).map(|_| Default::default()).collect(),
        }
    }
}

fn saturating_sub(slot: &std::sync::atomic::AtomicU64, n: u64) {
    let _ = slot.fetch_update(
        std::sync::atomic::Ordering::Relaxed,
        std::sync::atomic::Ordering::Relaxed,
        |v| Some(v.saturating_sub(n)),
    );
}

impl MeshBacklog {
    /// One message of `bytes` (its weight) entered `shard`'s inbox.
    pub fn add(&self, shard: usize, bytes: u64) {
        if let (Some(slot), Some(count)) = (self.bytes.get(shard), self.messages.get(shard)) {
            slot.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// One message of `bytes` left `shard`'s inbox.
    pub fn sub(&self, shard: usize, bytes: u64) {
        if let (Some(slot), Some(count)) = (self.bytes.get(shard), self.messages.get(shard)) {
            saturating_sub(slot, bytes);
            saturating_sub(count, 1);
        }
    }

    /// Messages waiting in `shard`'s inbox.
    pub fn messages(&self, shard: usize) -> u64 {
        self.messages
            .get(shard)
            .map_or(0, |slot| slot.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub fn get(&self, shard: usize) -> u64 {
        self.bytes
            .get(shard)
            .map_or(0, |slot| slot.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The largest backlog among the first `shards` shards.
    pub fn max(&self, shards: usize) -> u64 {
        (0..shards).map(|s| self.get(s)).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod backlog_tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_frame_weighs_its_payload_and_the_backlog_never_goes_negative() {
        let frame = ShardMessage::Media {
            hub: HubRef { owner: 0, id: 1 },
            event: MediaEvent::Frame {
                sequence: 0,
                timestamp: 0,
                payload: Bytes::from(vec![0u8; 1000]),
                extensions: None,
            },
        };
        assert_eq!(frame.weight(), 1000 + MESSAGE_WEIGHT);
        let backlog = MeshBacklog::default();
        backlog.add(1, frame.weight());
        backlog.add(0, 10);
        assert_eq!(backlog.max(2), 1000 + MESSAGE_WEIGHT);
        backlog.sub(1, 5000);
        assert_eq!(backlog.get(1), 0);
        assert_eq!(backlog.max(2), 10);
        backlog.add(999, 1);
        assert_eq!(backlog.get(999), 0, "out of range is ignored");
        assert_eq!(backlog.messages(0), 1);
        assert_eq!(backlog.messages(1), 0, "the depth never goes negative");
        backlog.sub(1, 1);
        assert_eq!(backlog.messages(1), 0);
    }
}
