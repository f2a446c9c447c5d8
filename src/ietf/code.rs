//! Draft-14 session termination codes (section 3.4), sent in CONNECTION_CLOSE or
//! the WebTransport session close.
//!
//! A separate type from [`crate::lite::SessionCode`]: the registries agree on
//! 0x0..=0x3, 0x11 and 0x15 but not beyond (0x5 is DUPLICATE_TRACK_ALIAS here;
//! 0x30 is moq-lite's TOO_MANY_SESSIONS), so a value means something only with its
//! protocol.

use std::fmt;

/// A draft-14 session termination code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionCode(pub u32);

impl SessionCode {
    /// A clean close.
    pub const NO_ERROR: Self = Self(0x0);
    /// The relay failed on its side.
    pub const INTERNAL_ERROR: Self = Self(0x1);
    /// The peer's credentials do not allow what it asked for.
    pub const UNAUTHORIZED: Self = Self(0x2);
    /// A malformed or out-of-order message.
    pub const PROTOCOL_VIOLATION: Self = Self(0x3);
    /// A Request ID that is not the next one the peer must use.
    pub const INVALID_REQUEST_ID: Self = Self(0x4);
    /// A Track Alias already in use.
    pub const DUPLICATE_TRACK_ALIAS: Self = Self(0x5);
    /// A Key-Value-Pair that does not parse.
    pub const KEY_VALUE_FORMATTING_ERROR: Self = Self(0x6);
    /// A Request ID at or above the MAX_REQUEST_ID the peer was given.
    pub const TOO_MANY_REQUESTS: Self = Self(0x7);
    /// A PATH setup parameter on a WebTransport session, or one the relay refuses.
    pub const INVALID_PATH: Self = Self(0x8);
    /// A PATH setup parameter that is not a valid path.
    pub const MALFORMED_PATH: Self = Self(0x9);
    /// The peer did not leave within the GOAWAY grace period.
    pub const GOAWAY_TIMEOUT: Self = Self(0x10);
    /// A control message (SETUP) did not arrive in time.
    pub const CONTROL_MESSAGE_TIMEOUT: Self = Self(0x11);
    /// A data stream stalled past its deadline.
    pub const DATA_STREAM_TIMEOUT: Self = Self(0x12);
    /// No version offered in CLIENT_SETUP is spoken here.
    pub const VERSION_NEGOTIATION_FAILED: Self = Self(0x15);

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::NO_ERROR => "no error",
            Self::INTERNAL_ERROR => "internal error",
            Self::UNAUTHORIZED => "unauthorized",
            Self::PROTOCOL_VIOLATION => "protocol violation",
            Self::INVALID_REQUEST_ID => "invalid request id",
            Self::DUPLICATE_TRACK_ALIAS => "duplicate track alias",
            Self::KEY_VALUE_FORMATTING_ERROR => "key-value formatting error",
            Self::TOO_MANY_REQUESTS => "too many requests",
            Self::INVALID_PATH => "invalid path",
            Self::MALFORMED_PATH => "malformed path",
            Self::GOAWAY_TIMEOUT => "goaway timeout",
            Self::CONTROL_MESSAGE_TIMEOUT => "control message timeout",
            Self::DATA_STREAM_TIMEOUT => "data stream timeout",
            Self::VERSION_NEGOTIATION_FAILED => "version negotiation failed",
            _ => return None,
        })
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

    #[test]
    fn codes_display_their_draft_name_and_value() {
        assert_eq!(
            SessionCode::PROTOCOL_VIOLATION.to_string(),
            "protocol violation (0x3)"
        );
        assert_eq!(
            SessionCode::TOO_MANY_REQUESTS.to_string(),
            "too many requests (0x7)"
        );
        assert_eq!(SessionCode(0x99).to_string(), "0x99");
    }
}
