//! The relay's bottom layer: what a track is, what its media is made of,
//! and how shards and sessions are named relay-wide. Plain data, shared by
//! the shard, the track cache, the mesh messages and the sessions; it
//! imports nothing of theirs (only the codec's codes), so every one of
//! them can import it without a circle.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::lite::StreamCode;

/// A track: broadcast path and track name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackName {
    pub broadcast: String,
    pub track: String,
}

/// A track's name, shared: one allocation however many places hold it.
pub type TrackKey = Arc<TrackName>;

impl fmt::Display for TrackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.broadcast, self.track)
    }
}

/// A session, named relay-wide: its shard and its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionRef {
    pub shard: usize,
    pub id: u64,
}

/// A track hub, named relay-wide: its owner shard and its id there. Ids are
/// never reused on a shard, so a stale reference finds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HubRef {
    pub owner: usize,
    pub id: u64,
}

/// One frame: its timestamp in the track's timescale, and its payload.
#[derive(Debug, Clone)]
pub struct Frame {
    pub timestamp: u64,
    pub payload: Bytes,
    /// The IETF object's extension headers, when an IETF publisher sent
    /// some; lite has none. Boxed: a frame without them (every lite frame)
    /// pays one pointer in the cache.
    pub extensions: Option<Box<ObjectExtensions>>,
}

/// An IETF object's extension headers as its publisher wrote them: the raw
/// block, never parsed nor re-encoded, and the draft whose layout it is in.
/// Draft 14's key-value pairs and draft 22's properties are coded
/// differently, so a block is sent on its own draft only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectExtensions {
    pub draft: crate::ietf::Version,
    pub bytes: Bytes,
}

/// How a group ended, if it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Open,
    Done,
    /// Abandoned with this stream error code.
    Reset(StreamCode),
}

/// Track properties learned from the publisher (lite-05+ TRACK_INFO), or
/// the defaults used for a lite-04 publisher, whose frames the relay
/// stamps with arrival time in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackProperties {
    pub priority: u8,
    pub max_latency: u64,
    pub timescale: u64,
}

impl Default for TrackProperties {
    fn default() -> Self {
        Self {
            priority: 0,
            max_latency: 0,
            timescale: 1000,
        }
    }
}

/// Wall-clock milliseconds (the default timescale): the timestamp of a
/// frame whose publisher sends none (lite-04, IETF objects) on arrival.
pub fn arrival_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A frame the publisher sent as a QUIC datagram (lite-05+, or an IETF
/// OBJECT_DATAGRAM): relayed best-effort to subscribers, never cached in a
/// group; a replica keeps the newest few for its subscribers to pick up.
/// Its sequence is in the group namespace, but no group stream carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub sequence: u64,
    /// The IETF Object ID within the group; a lite datagram is a one-frame
    /// group, object 0, and only object 0 goes to lite.
    pub object: u64,
    /// The publisher said no object follows in the group (always so for a
    /// lite datagram).
    pub end_of_group: bool,
    pub timestamp: u64,
    pub payload: Bytes,
    /// An IETF object's extension headers (see [`Frame::extensions`]).
    pub extensions: Option<Box<ObjectExtensions>>,
}

/// One step of a track's media, in the order the publisher produced it.
#[derive(Debug, Clone)]
pub enum MediaEvent {
    Group {
        sequence: u64,
    },
    Frame {
        sequence: u64,
        timestamp: u64,
        payload: Bytes,
        /// An IETF object's extension headers (see [`Frame::extensions`]).
        extensions: Option<Box<ObjectExtensions>>,
    },
    GroupEnd {
        sequence: u64,
    },
    GroupReset {
        sequence: u64,
        code: StreamCode,
    },
    Properties(TrackProperties),
    /// A frame the publisher sent as a datagram.
    Datagram(Datagram),
    /// The publisher ended the track: `None` cleanly, else with this code.
    /// Groups still open are reset with `open_groups`: CANCEL when the
    /// track was ended, SESSION_CLOSED when its publisher vanished.
    TrackEnd {
        code: Option<StreamCode>,
        open_groups: StreamCode,
    },
}

impl MediaEvent {
    /// The group this event belongs to, if it belongs to one.
    pub fn sequence(&self) -> Option<u64> {
        match self {
            MediaEvent::Group { sequence }
            | MediaEvent::Frame { sequence, .. }
            | MediaEvent::GroupEnd { sequence }
            | MediaEvent::GroupReset { sequence, .. } => Some(*sequence),
            MediaEvent::Properties(_) | MediaEvent::TrackEnd { .. } | MediaEvent::Datagram(_) => {
                None
            }
        }
    }

    /// The publisher ended the track (`None` cleanly, else with a code);
    /// groups it left open are cancelled.
    pub fn track_end(code: Option<StreamCode>) -> Self {
        MediaEvent::TrackEnd {
            code,
            open_groups: code.unwrap_or(StreamCode::CANCEL),
        }
    }

    /// The publisher's session closed: the track ends cleanly, since a
    /// departed publisher is the normal end of a live broadcast, but groups
    /// it left open were cut short and say so.
    pub fn vanished() -> Self {
        MediaEvent::TrackEnd {
            code: None,
            open_groups: StreamCode::SESSION_CLOSED,
        }
    }
}

/// A cached group as it travels from a track's owner to another shard.
#[derive(Debug, Clone)]
pub struct GroupSnapshot {
    pub sequence: u64,
    pub frames: Vec<Frame>,
    /// `None` while the group is still open.
    pub ended: Option<GroupState>,
}

/// A FETCH forwarded to a track's publisher, named relay-wide: the shard
/// of the session that asked for it and its id there. Ids are never
/// reused on a shard, so a late reply for a fetch that gave up finds
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FetchRef {
    pub shard: usize,
    pub id: u64,
}

/// What a forwarded FETCH asks the publisher for: a whole group (the
/// requesting shard cuts the frame range itself, since a lite-05 peer
/// has no frame bounds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamFetch {
    pub key: TrackKey,
    pub group: u64,
    pub priority: u8,
    /// Shared with the requesting shard: its bytes not yet written on.
    pub window: FetchWindow,
}

/// The bytes of a forwarded FETCH's answer that the publisher's side has
/// sent and the requester has not yet written to its peer, shared by the
/// two shards. The publisher's side stops reading its peer while this is
/// over [`FetchWindow::BYTES`], so a requester that does not read holds
/// the publisher back (QUIC flow control), not the relay's memory.
#[derive(Debug, Clone, Default)]
pub struct FetchWindow(Arc<std::sync::atomic::AtomicU64>);

impl FetchWindow {
    /// Bytes in flight beyond which the next frame waits.
    pub const BYTES: u64 = 1 << 20;

    /// The publisher's side sent a frame of `n` bytes.
    pub fn sent(&self, n: u64) {
        self.0.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The requester is done with a frame of `n` bytes.
    pub fn written(&self, n: u64) {
        let _ = self.0.fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |v| Some(v.saturating_sub(n)),
        );
    }

    pub fn in_flight(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the next frame must wait.
    pub fn full(&self) -> bool {
        self.in_flight() > Self::BYTES
    }
}

/// The same window, not an equal count.
impl PartialEq for FetchWindow {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for FetchWindow {}

/// One step of a forwarded FETCH's answer, publisher's shard to requester's.
#[derive(Debug, Clone)]
pub enum FetchEvent {
    /// The next frame of the group, in order from its first.
    Frame { timestamp: u64, payload: Bytes },
    /// The group is complete.
    End,
    /// The fetch failed: the peer's reset code, or the relay's own
    /// (NOT_FOUND when the publisher cannot FETCH or is gone).
    Reset(StreamCode),
}
