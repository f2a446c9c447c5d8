//! moq-lite versions, their ALPN / WebTransport protocol names, and the per-version
//! wire features.
//!
//! moq-net 0.3.18 names them `Lite01..Lite07`; `Lite04` is ALPN `moq-lite-04`, and so
//! on (no off-by-one between enum and ALPN). Over WebTransport moq-net offers the very
//! same strings in `wt-available-protocols` (its client calls
//! `ConnectRequest::with_protocol(alpn)` for each of `Versions::alpns()`), and the
//! server answers one of them in `wt-protocol`. Those headers are HTTP structured
//! fields, so on the wire each name is a quoted sf-string (`"moq-lite-06"`).
//!
//! Lite-01/02 (`moql`, SETUP-negotiated), lite-03 and lite-07 (`moq-lite-07-wip`, not
//! advertised by default) are not implemented.

use std::fmt;

/// A moq-lite wire version qumo speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// `moq-lite-04`: no SETUP, ANNOUNCE with status byte, SUBSCRIBE_OK, untimed frames.
    Lite04,
    /// `moq-lite-05`: adds the SETUP and TRACK streams, ANNOUNCE_OK, SUBSCRIBE_START/END,
    /// zigzag timestamp deltas on frames, datagrams.
    Lite05,
    /// `moq-lite-06`: typed ANNOUNCE_START/END/RESTART with implicit ids and route
    /// costs, frame bounds, raw SUBSCRIBE start, no group-order byte.
    Lite06,
}

/// ALPNs (and WebTransport protocol names) in server preference order, newest first.
///
/// rustls picks the server's first ALPN the client also offers, so this order is the
/// negotiation policy.
pub const ALPNS: [&str; 3] = ["moq-lite-06", "moq-lite-05", "moq-lite-04"];

impl Version {
    /// Every version, newest first (the same order as [`ALPNS`]).
    pub const ALL: [Version; 3] = [Version::Lite06, Version::Lite05, Version::Lite04];

    /// The raw-QUIC ALPN, which is also the WebTransport protocol name.
    pub const fn alpn(self) -> &'static str {
        match self {
            Version::Lite04 => "moq-lite-04",
            Version::Lite05 => "moq-lite-05",
            Version::Lite06 => "moq-lite-06",
        }
    }

    /// The WebTransport sub-protocol name (`wt-protocol` / `wt-available-protocols`):
    /// identical to the ALPN in moq-net.
    pub const fn wt_protocol(self) -> &'static str {
        self.alpn()
    }

    /// Parse a negotiated ALPN as rustls/quinn report it (raw bytes).
    ///
    /// `moql` (lite-01/02, whose version is chosen by a SETUP exchange) and every
    /// unknown name give `None`.
    pub fn from_alpn(alpn: &[u8]) -> Option<Version> {
        Version::ALL
            .into_iter()
            .find(|v| v.alpn().as_bytes() == alpn)
    }

    /// Parse one WebTransport protocol name, either bare (`moq-lite-05`, as
    /// web-transport-proto hands it over after parsing the header) or as the quoted
    /// sf-string that travels in the header (`"moq-lite-05"`), with surrounding
    /// whitespace and sf parameters (`;a=b`) ignored.
    pub fn from_wt_protocol(name: &str) -> Option<Version> {
        let name = name.trim();
        let name = match name.strip_prefix('"') {
            // A quoted sf-string: take what is inside the quotes.
            Some(rest) => rest.split('"').next()?,
            // A bare token: parameters follow a `;`.
            None => name.split(';').next()?.trim(),
        };
        Version::from_alpn(name.as_bytes())
    }

    /// Choose a version from a raw `wt-available-protocols` header value (an sf-list of
    /// strings): the newest version qumo speaks that the client offered, whatever the
    /// client's order, mirroring ALPN selection. `None` if there is no overlap.
    pub fn select_wt_protocol(available: &str) -> Option<Version> {
        let offered: Vec<Version> = available
            .split(',')
            .filter_map(Version::from_wt_protocol)
            .collect();
        Version::ALL.into_iter().find(|v| offered.contains(v))
    }

    /// Whether the session has the lite-05 unidirectional SETUP stream.
    pub const fn has_setup(self) -> bool {
        !matches!(self, Version::Lite04)
    }

    /// Whether the TRACK stream, FETCH stream, SUBSCRIBE_START/END and per-frame
    /// timestamps exist (moq-net's `has_track_stream`, lite-05+).
    pub const fn has_track_stream(self) -> bool {
        !matches!(self, Version::Lite04)
    }

    /// Whether FRAME headers carry a zigzag timestamp delta (lite-05+).
    pub const fn has_frame_timestamps(self) -> bool {
        self.has_track_stream()
    }

    /// Whether QUIC datagrams carry groups (lite-05+).
    pub const fn has_datagrams(self) -> bool {
        self.has_track_stream()
    }

    /// Whether an announce stream starts with ANNOUNCE_OK (lite-05+).
    pub const fn has_announce_ok(self) -> bool {
        !matches!(self, Version::Lite04)
    }

    /// Whether announcements are typed START/END/RESTART with implicit ids (lite-06+).
    pub const fn has_announce_id(self) -> bool {
        matches!(self, Version::Lite06)
    }

    /// Whether ANNOUNCE_REQUEST carries `exclude_hop` (lite-04 and -05 only: lite-06
    /// removed it in favour of the SETUP hop parameter).
    pub const fn has_exclude_hop(self) -> bool {
        matches!(self, Version::Lite04 | Version::Lite05)
    }

    /// Whether SUBSCRIBE, SUBSCRIBE_UPDATE, FETCH and GROUP carry frame bounds, and
    /// SUBSCRIBE's start group is a raw floor instead of `opt` (lite-06+).
    pub const fn has_frame_bounds(self) -> bool {
        matches!(self, Version::Lite06)
    }

    /// Whether SUBSCRIBE, SUBSCRIBE_UPDATE, SUBSCRIBE_OK and TRACK_INFO still carry
    /// the retired group-order byte (lite-04 and -05).
    pub const fn has_group_order(self) -> bool {
        matches!(self, Version::Lite04 | Version::Lite05)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alpn())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_names_match_moq_net() {
        assert_eq!(Version::Lite04.alpn(), "moq-lite-04");
        assert_eq!(Version::Lite05.alpn(), "moq-lite-05");
        assert_eq!(Version::Lite06.alpn(), "moq-lite-06");
        assert_eq!(ALPNS, Version::ALL.map(Version::alpn));
    }

    #[test]
    fn alpn_parses_back_to_its_version_and_rejects_others() {
        for v in Version::ALL {
            assert_eq!(Version::from_alpn(v.alpn().as_bytes()), Some(v));
        }
        for other in [
            "moql",
            "moq-lite-03",
            "moq-lite-07-wip",
            "moqt-14",
            "h3",
            "",
        ] {
            assert_eq!(Version::from_alpn(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn wt_protocol_accepts_bare_and_quoted_names() {
        assert_eq!(
            Version::from_wt_protocol("moq-lite-05"),
            Some(Version::Lite05)
        );
        assert_eq!(
            Version::from_wt_protocol(" \"moq-lite-06\" "),
            Some(Version::Lite06)
        );
        assert_eq!(
            Version::from_wt_protocol("\"moq-lite-04\";q=1"),
            Some(Version::Lite04)
        );
        assert_eq!(Version::from_wt_protocol("\"moq-lite-0"), None);
        assert_eq!(Version::from_wt_protocol("\"moql\""), None);
    }

    #[test]
    fn wt_selection_prefers_the_newest_offered_version() {
        let header = "\"moq-lite-04\", \"moqt-22\", \"moq-lite-05\"";
        assert_eq!(Version::select_wt_protocol(header), Some(Version::Lite05));
        assert_eq!(Version::select_wt_protocol("\"moqt-14\""), None);
        assert_eq!(Version::select_wt_protocol(""), None);
    }

    #[test]
    fn feature_gates_follow_moq_net() {
        use Version::*;
        assert!(!Lite04.has_setup() && Lite05.has_setup() && Lite06.has_setup());
        assert!(Lite04.has_exclude_hop() && Lite05.has_exclude_hop() && !Lite06.has_exclude_hop());
        assert!(Lite04.has_group_order() && Lite05.has_group_order() && !Lite06.has_group_order());
        assert!(!Lite05.has_announce_id() && Lite06.has_announce_id());
        assert!(!Lite05.has_frame_bounds() && Lite06.has_frame_bounds());
        assert!(!Lite04.has_frame_timestamps() && Lite05.has_frame_timestamps());
    }
}
