//! The IETF moq-transport drafts this codec speaks.

use std::fmt;

/// A negotiated moq-transport draft. Every encoder and decoder takes it, as the
/// moq-lite codec takes [`crate::lite::Version`], so a later draft is added as a
/// variant plus the branches where its wire differs.
///
/// Only draft 14 is coded so far. Draft 22 changes more than message fields: it
/// negotiates by ALPN alone (`moqt-22`, one SETUP message 0x2F00), carries each
/// request on its own bidirectional stream, and (from draft 17) uses a different
/// varint encoding; see `docs/IETF.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Version {
    /// draft-ietf-moq-transport-14: ALPN `moq-00`, version chosen in CLIENT_SETUP /
    /// SERVER_SETUP.
    Draft14,
}

impl Version {
    /// Every version, newest first.
    pub const ALL: [Version; 1] = [Version::Draft14];

    /// The version number carried in CLIENT_SETUP / SERVER_SETUP (`0xff000000 + draft`).
    pub const fn wire(self) -> u64 {
        match self {
            Version::Draft14 => 0xff00_000e,
        }
    }

    /// The version a SETUP version number names, if this codec speaks it.
    pub const fn from_wire(v: u64) -> Option<Self> {
        match v {
            0xff00_000e => Some(Version::Draft14),
            _ => None,
        }
    }

    /// The TLS ALPN (and WebTransport protocol) that selects this draft.
    ///
    /// Draft 14 shares `moq-00` with drafts 7..16; the SETUP exchange then picks the
    /// draft.
    pub const fn alpn(self) -> &'static str {
        match self {
            Version::Draft14 => ALPN_DRAFT14,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Draft14 => f.write_str("moq-transport-14"),
        }
    }
}

/// ALPN shared by the drafts that negotiate their version in SETUP (7..16).
pub const ALPN_DRAFT14: &str = "moq-00";

/// ALPN of draft 22 (one ALPN per draft from 15 on). Not spoken yet.
pub const ALPN_DRAFT22: &str = "moqt-22";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_numbers_round_trip_and_unknown_ones_are_refused() {
        for v in Version::ALL {
            assert_eq!(Version::from_wire(v.wire()), Some(v));
        }
        assert_eq!(Version::Draft14.wire(), 0xff00000e);
        assert_eq!(Version::from_wire(0xff00000f), None);
        assert_eq!(Version::from_wire(0xff0bad05), None);
    }
}
