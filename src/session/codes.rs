//! Error codes on the wire, as moq-net 0.3.18 (`error.rs`) registers them.
//!
//! Session codes close the whole connection; stream codes reset or stop
//! one stream and leave the session up.

/// Session: a clean close.
pub const SESSION_CANCEL: u32 = 0x0;
/// Session: the relay failed on its side (a contained bug).
pub const INTERNAL_ERROR: u32 = 0x1;
/// Session: the peer did not do what it must within a deadline (SETUP).
pub const TIMEOUT: u32 = 0x11;
/// Session: the peer broke the protocol (malformed or unexpected message).
pub const PROTOCOL_VIOLATION: u32 = 0x3;
/// Session: no shared version (e.g. WebTransport without a moq-lite protocol).
pub const VERSION: u32 = 0x15;
/// Session: the relay holds `relay.max_sessions` already.
pub const TOO_MANY_SESSIONS: u32 = 0x30;

/// Stream: cancelled, nobody wants it any more.
pub const CANCEL: u32 = 0x1;
/// Stream: a group that is no longer the newest outlived the subscriber's
/// max latency, so it was dropped rather than delay newer ones.
pub const TOO_FAR_BEHIND: u32 = 0x5;
/// Stream: a limit (subscriptions per session, prefix length) was hit.
pub const NO_CAPACITY: u32 = 0x30;
/// Stream: one group outgrew `relay.max_cached_bytes_per_track`.
pub const GROUP_TOO_LARGE: u32 = 0x32;
/// Stream: no such broadcast or track.
pub const NOT_FOUND: u32 = 0x33;
/// Stream: the group was evicted from the cache before it was sent.
pub const EVICTED: u32 = 0x35;
/// Stream: a frame ended before its announced size.
pub const WRONG_SIZE: u32 = 0x37;
/// Stream: a frame over `relay.max_frame_size`.
pub const FRAME_TOO_LARGE: u32 = 0x38;
/// Stream: the session that fed this group closed before finishing it
/// (moq-net's SESSION_CLOSED).
pub const SESSION_CLOSED: u32 = 0x3;
/// Stream: a stream type this session does not accept (or a malformed one).
pub const UNEXPECTED_STREAM: u32 = 0x3;
