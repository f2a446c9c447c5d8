//! Error codes on the wire, as moq-net 0.3.18 (`error.rs`) registers them.
//!
//! Two code spaces that share numbers: a [`SessionCode`] closes the whole
//! connection, a [`StreamCode`] resets or stops one stream and leaves the
//! session up. Separate types keep one from being sent where the other
//! belongs (0x3 is PROTOCOL_VIOLATION for a session but SESSION_CLOSED for
//! a stream).

use std::fmt;

/// A moq-lite stream error code (RESET_STREAM / STOP_SENDING).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamCode(pub u32);

impl StreamCode {
    /// Cancelled, nobody wants it any more.
    pub const CANCEL: Self = Self(0x1);
    /// Not delivered in time (a forwarded FETCH past `relay.fetch_timeout`).
    pub const DELIVERY_TIMEOUT: Self = Self(0x2);
    /// The session that fed this group closed before finishing it
    /// (moq-net's SESSION_CLOSED).
    pub const SESSION_CLOSED: Self = Self(0x3);
    /// A stream type this session does not accept (or a malformed one).
    /// moq-net sends its PROTOCOL_VIOLATION value, which is also 0x3.
    pub const UNEXPECTED_STREAM: Self = Self(0x3);
    /// A group that is no longer the newest outlived the subscriber's max
    /// latency, so it was dropped rather than delay newer ones.
    pub const TOO_FAR_BEHIND: Self = Self(0x5);
    /// A limit (subscriptions per session, prefix length) was hit.
    pub const NO_CAPACITY: Self = Self(0x30);
    /// One group outgrew `relay.max_cached_bytes_per_track`.
    pub const GROUP_TOO_LARGE: Self = Self(0x32);
    /// No such broadcast or track.
    pub const NOT_FOUND: Self = Self(0x33);
    /// The group was evicted from the cache before it was sent.
    pub const EVICTED: Self = Self(0x35);
    /// A frame ended before its announced size.
    pub const WRONG_SIZE: Self = Self(0x37);
    /// A frame over `relay.max_frame_size`.
    pub const FRAME_TOO_LARGE: Self = Self(0x38);

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::CANCEL => "cancel",
            Self::DELIVERY_TIMEOUT => "delivery timeout",
            // 0x3 carries both meanings; the wire cannot tell them apart.
            Self::SESSION_CLOSED => "session closed",
            Self::TOO_FAR_BEHIND => "too far behind",
            Self::NO_CAPACITY => "no capacity",
            Self::GROUP_TOO_LARGE => "group too large",
            Self::NOT_FOUND => "not found",
            Self::EVICTED => "evicted",
            Self::WRONG_SIZE => "wrong size",
            Self::FRAME_TOO_LARGE => "frame too large",
            _ => return None,
        })
    }
}

/// A moq-lite session error code (CONNECTION_CLOSE / WebTransport close).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionCode(pub u32);

impl SessionCode {
    /// A clean close.
    pub const CANCEL: Self = Self(0x0);
    /// The relay failed on its side (a contained bug).
    pub const INTERNAL_ERROR: Self = Self(0x1);
    /// The peer's token is missing, invalid, expired, or does not grant
    /// what it asked for (moq-net's UNAUTHORIZED; retrying with the same
    /// credentials fails again).
    pub const UNAUTHORIZED: Self = Self(0x2);
    /// The peer broke the protocol (malformed or unexpected message).
    pub const PROTOCOL_VIOLATION: Self = Self(0x3);
    /// The peer did not do what it must within a deadline (SETUP).
    pub const TIMEOUT: Self = Self(0x11);
    /// No shared version (e.g. WebTransport without a moq-lite protocol).
    pub const VERSION: Self = Self(0x15);
    /// The relay holds `relay.max_sessions` already.
    pub const TOO_MANY_SESSIONS: Self = Self(0x30);

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::CANCEL => "cancel",
            Self::INTERNAL_ERROR => "internal error",
            Self::UNAUTHORIZED => "unauthorized",
            Self::PROTOCOL_VIOLATION => "protocol violation",
            Self::TIMEOUT => "timeout",
            Self::VERSION => "version",
            Self::TOO_MANY_SESSIONS => "too many sessions",
            _ => return None,
        })
    }
}

impl fmt::Display for StreamCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({:#x})", self.0),
            None => write!(f, "{:#x}", self.0),
        }
    }
}

impl fmt::Display for SessionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({:#x})", self.0),
            None => write!(f, "{:#x}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values are moq-net 0.3.18's; a changed number breaks interop.
    #[test]
    fn codes_keep_the_reference_values() {
        assert_eq!(StreamCode::CANCEL.0, 0x1);
        assert_eq!(StreamCode::SESSION_CLOSED.0, 0x3);
        assert_eq!(StreamCode::TOO_FAR_BEHIND.0, 0x5);
        assert_eq!(StreamCode::NO_CAPACITY.0, 0x30);
        assert_eq!(StreamCode::GROUP_TOO_LARGE.0, 0x32);
        assert_eq!(StreamCode::NOT_FOUND.0, 0x33);
        assert_eq!(StreamCode::EVICTED.0, 0x35);
        assert_eq!(StreamCode::WRONG_SIZE.0, 0x37);
        assert_eq!(StreamCode::FRAME_TOO_LARGE.0, 0x38);
        assert_eq!(SessionCode::CANCEL.0, 0x0);
        assert_eq!(SessionCode::INTERNAL_ERROR.0, 0x1);
        assert_eq!(SessionCode::UNAUTHORIZED.0, 0x2);
        assert_eq!(SessionCode::PROTOCOL_VIOLATION.0, 0x3);
        assert_eq!(SessionCode::TIMEOUT.0, 0x11);
        assert_eq!(SessionCode::VERSION.0, 0x15);
        assert_eq!(SessionCode::TOO_MANY_SESSIONS.0, 0x30);
    }

    #[test]
    fn codes_display_their_name_and_value() {
        assert_eq!(StreamCode::NOT_FOUND.to_string(), "not found (0x33)");
        assert_eq!(SessionCode::TIMEOUT.to_string(), "timeout (0x11)");
        assert_eq!(StreamCode(0x99).to_string(), "0x99");
    }
}
