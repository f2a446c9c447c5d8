//! The IETF moq-transport drafts this codec speaks.

use std::fmt;

/// A negotiated moq-transport draft. Every encoder and decoder takes it, as the
/// moq-lite codec takes [`crate::lite::Version`], so a later draft is added as a
/// variant plus the branches where its wire differs.
///
/// Draft 22 changes more than message fields: it negotiates by ALPN alone
/// (`moqt-22`, one SETUP message 0x2F00), carries each request on its own
/// bidirectional stream, and (from draft 17) uses a different varint encoding. Its
/// codec is [`crate::ietf::draft22`]; the draft-14 types refuse it. See
/// `docs/IETF.md` for every draft from 14 to 22.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Version {
    /// draft-ietf-moq-transport-14: ALPN `moq-00`, version chosen in CLIENT_SETUP /
    /// SERVER_SETUP.
    Draft14,
    /// draft-ietf-moq-transport-22: ALPN `moqt-22`, no version negotiation in SETUP.
    Draft22,
}

impl Version {
    /// Every version, newest first.
    pub const ALL: [Version; 2] = [Version::Draft22, Version::Draft14];

    /// The versions a CLIENT_SETUP version list can name (the ALPN `moq-00` family).
    /// Later drafts are chosen by their own ALPN and never appear in SETUP.
    pub const SETUP_NEGOTIATED: [Version; 1] = [Version::Draft14];

    /// The version number carried in CLIENT_SETUP / SERVER_SETUP (`0xff000000 + draft`).
    pub const fn wire(self) -> u64 {
        match self {
            Version::Draft14 => 0xff00_000e,
            Version::Draft22 => 0xff00_0016,
        }
    }

    /// The version a CLIENT_SETUP / SERVER_SETUP version number names, if it is one
    /// of [`Version::SETUP_NEGOTIATED`]: draft 22's number is never negotiated there.
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
            Version::Draft22 => ALPN_DRAFT22,
        }
    }

    /// The draft an ALPN (or WebTransport protocol) selects on its own, without a
    /// SETUP exchange: only the per-draft ALPNs (from draft 15 on) do.
    pub fn from_alpn(alpn: &[u8]) -> Option<Self> {
        match alpn {
            b"moqt-22" => Some(Version::Draft22),
            _ => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Draft14 => f.write_str("moq-transport-14"),
            Version::Draft22 => f.write_str("moq-transport-22"),
        }
    }
}

/// ALPN shared by the drafts that negotiate their version in SETUP (7..16).
pub const ALPN_DRAFT14: &str = "moq-00";

/// ALPN of draft 22 (one ALPN per draft from 15 on).
pub const ALPN_DRAFT22: &str = "moqt-22";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_numbers_round_trip_and_unknown_ones_are_refused() {
        for v in Version::SETUP_NEGOTIATED {
            assert_eq!(Version::from_wire(v.wire()), Some(v));
        }
        assert_eq!(Version::Draft14.wire(), 0xff00000e);
        assert_eq!(Version::from_wire(0xff00000f), None);
        // Draft 22 is chosen by ALPN; its number in a SETUP list names nothing.
        assert_eq!(Version::from_wire(Version::Draft22.wire()), None);
        assert_eq!(Version::from_alpn(b"moqt-22"), Some(Version::Draft22));
        assert_eq!(Version::from_alpn(ALPN_DRAFT14.as_bytes()), None);
        assert_eq!(Version::from_wire(0xff0bad05), None);
    }
}
