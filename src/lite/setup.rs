//! SETUP (lite-05+): the only message on each endpoint's unidirectional Setup stream.
//!
//! Wire: `L, count i, { id i, len i, value[len] } x count`. Each endpoint sends one,
//! independently; neither waits for the other's.
//!
//! Parameters (moq-net 0.3.18 `lite/setup.rs`):
//! - 1 probe level (varint): 0 none, 1 report, anything higher saturates to increase;
//! - 2 path (UTF-8 bytes): the client's request path on raw QUIC (`?query` included);
//! - 3 role (varint): 1 publisher, 2 subscriber, anything else means both;
//! - 4 cost (varint) and 5 hop id (varint, 0 means none).
//!
//! PROTOCOL.md lists cost and hop as lite-06 additions; moq-net encodes and decodes
//! them on lite-05 too, with no version check, so this codec does the same. Unknown
//! ids are skipped; a repeated id, or more than [`MAX_SETUP_PARAMETERS`], is an error.
//! A varint parameter whose value has bytes after the varint is an error too.

use super::coding::{Framed, Reader, Writer};
use super::{DecodeError, EncodeError, Limits, Version};

/// The most parameters a SETUP may carry (moq-net's `MAX_PARAMS`).
pub const MAX_SETUP_PARAMETERS: u64 = 64;

const PARAM_PROBE: u64 = 1;
const PARAM_PATH: u64 = 2;
const PARAM_ROLE: u64 = 3;
const PARAM_COST: u64 = 4;
const PARAM_HOP: u64 = 5;

/// How much probing an endpoint supports. Monotonic: each level implies the lower ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum ProbeLevel {
    /// No probing (also what an absent parameter means).
    #[default]
    None,
    /// The publisher reports bitrate and/or RTT on PROBE streams.
    Report,
    /// The publisher can also pad the connection to probe upward.
    Increase,
}

impl ProbeLevel {
    fn from_code(code: u64) -> Self {
        match code {
            0 => ProbeLevel::None,
            1 => ProbeLevel::Report,
            // A future level implies every level we know.
            _ => ProbeLevel::Increase,
        }
    }

    fn code(self) -> u64 {
        match self {
            ProbeLevel::None => 0,
            ProbeLevel::Report => 1,
            ProbeLevel::Increase => 2,
        }
    }
}

/// The one direction a client intends to use the session for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// 1: the client publishes.
    Publisher,
    /// 2: the client subscribes.
    Subscriber,
}

impl Role {
    /// Unknown codes (and 0) mean "both directions": the draft requires that fallback
    /// so a newer client cannot break an older server.
    fn from_code(code: u64) -> Option<Self> {
        match code {
            1 => Some(Role::Publisher),
            2 => Some(Role::Subscriber),
            _ => None,
        }
    }

    fn code(self) -> u64 {
        match self {
            Role::Publisher => 1,
            Role::Subscriber => 2,
        }
    }
}

/// The SETUP message. Absent parameters are the defaults, and a default is sent as
/// an absent parameter, so decode-then-encode keeps meaning but not necessarily
/// bytes (parameter order, explicit defaults and unknown ids are not kept; moq-net
/// itself writes parameters in hash-map order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Setup {
    /// Probe capability.
    pub probe: ProbeLevel,
    /// The request path, sent only by a client on a transport without a URL (raw QUIC).
    /// `Some("")` and `None` both mean the root.
    pub path: Option<String>,
    /// The client's direction, `None` for both.
    pub role: Option<Role>,
    /// What subscribing through this endpoint costs; `None` means the default of 1.
    pub cost: Option<u64>,
    /// This endpoint's hop id, never 0 (a wire 0 decodes as `None`).
    pub hop: Option<u64>,
}

impl Framed for Setup {
    const WHAT: &'static str = "SETUP";

    fn exists_in(version: Version) -> bool {
        version.has_setup()
    }

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        if self.hop == Some(0) {
            return Err(EncodeError::InvalidValue {
                what: "SETUP hop id 0",
            });
        }
        let probe = (self.probe != ProbeLevel::None).then(|| self.probe.code());
        let role = self.role.map(Role::code);
        let present = [
            probe.is_some(),
            self.path.is_some(),
            role.is_some(),
            self.cost.is_some(),
            self.hop.is_some(),
        ];
        let count = present.iter().filter(|p| **p).count();
        w.varint("SETUP parameter count", count as u64)?;

        // Ascending ids, so the encoding is deterministic.
        let varint = |w: &mut Writer<'_>, id: u64, value: Option<u64>| match value {
            Some(value) => {
                w.varint("SETUP parameter id", id)?;
                w.sized(|w| w.varint("SETUP parameter", value))
            }
            None => Ok(()),
        };
        varint(w, PARAM_PROBE, probe)?;
        if let Some(path) = &self.path {
            w.varint("SETUP parameter id", PARAM_PATH)?;
            w.string("SETUP path", path)?;
        }
        varint(w, PARAM_ROLE, role)?;
        varint(w, PARAM_COST, self.cost)?;
        varint(w, PARAM_HOP, self.hop)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, limits: &Limits) -> Result<Self, DecodeError> {
        let count = r.varint()?;
        if count > MAX_SETUP_PARAMETERS {
            return Err(DecodeError::TooLong {
                what: "SETUP parameters",
                len: count,
                max: MAX_SETUP_PARAMETERS,
            });
        }
        let mut setup = Setup::default();
        let mut seen = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let id = r.varint()?;
            if seen.contains(&id) {
                return Err(DecodeError::Duplicate {
                    what: "SETUP parameter",
                    id,
                });
            }
            seen.push(id);
            match id {
                PARAM_PATH => setup.path = Some(r.string("SETUP path", limits.max_path)?),
                PARAM_PROBE => setup.probe = ProbeLevel::from_code(varint_param(r)?),
                PARAM_ROLE => setup.role = Role::from_code(varint_param(r)?),
                PARAM_COST => setup.cost = Some(varint_param(r)?),
                PARAM_HOP => setup.hop = Some(varint_param(r)?).filter(|&h| h != 0),
                // Unknown: skip the value. It lies inside the already-bounded body.
                _ => {
                    r.sized("SETUP parameter", usize::MAX)?;
                }
            }
        }
        Ok(setup)
    }
}

/// A parameter whose value is exactly one varint.
fn varint_param(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    let mut value = r.sized("SETUP parameter", usize::MAX)?;
    let v = value.varint()?;
    value.finish()?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Decode, Encode};
    use super::*;

    fn full() -> Setup {
        Setup {
            probe: ProbeLevel::Report,
            path: Some("/room/123?jwt=x".into()),
            role: Some(Role::Subscriber),
            cost: Some(7),
            hop: Some(1 << 40),
        }
    }

    #[test]
    fn setup_round_trips_in_every_version_that_has_it() {
        for v in [Version::Lite05, Version::Lite06] {
            round_trip(&Setup::default(), v);
            round_trip(&full(), v);
            for probe in [ProbeLevel::None, ProbeLevel::Report, ProbeLevel::Increase] {
                round_trip(
                    &Setup {
                        probe,
                        ..Default::default()
                    },
                    v,
                );
            }
            round_trip(
                &Setup {
                    path: Some(String::new()),
                    role: Some(Role::Publisher),
                    cost: Some(0),
                    ..Default::default()
                },
                v,
            );
        }
    }

    #[test]
    fn setup_does_not_exist_in_lite04() {
        assert!(matches!(
            Setup::default().to_vec(Version::Lite04),
            Err(EncodeError::NotInVersion { .. })
        ));
        assert!(matches!(
            decode_err::<Setup>(&[1, 0], Version::Lite04),
            DecodeError::NotInVersion { .. }
        ));
    }

    #[test]
    fn setup_defaults_and_unknowns_decode_leniently() {
        let v = Version::Lite05;
        // probe 99, role 9, hop 0, unknown 0xbeef -> saturated/ignored.
        let body = cat(&[
            &[4],
            &[1, 1, 99 & 0x3f],
            &[3, 1, 9],
            &[5, 1, 0],
            &varint(0xbeef),
            &[3, b'a', b'b', b'c'],
        ]);
        let (s, _) = Setup::decode(&sized(&body), v, &Limits::default()).unwrap();
        assert_eq!(
            s,
            Setup {
                probe: ProbeLevel::Increase,
                ..Default::default()
            }
        );
    }

    #[test]
    fn setup_rejects_malformed_parameters() {
        let v = Version::Lite06;
        // Duplicate id.
        let dup = sized(&[2, 4, 1, 1, 4, 1, 2]);
        assert_eq!(
            decode_err::<Setup>(&dup, v),
            DecodeError::Duplicate {
                what: "SETUP parameter",
                id: 4
            }
        );
        // Too many parameters, refused from the count alone.
        let many = sized(&varint(65));
        assert!(matches!(
            decode_err::<Setup>(&many, v),
            DecodeError::TooLong { len: 65, .. }
        ));
        // A varint parameter with a byte after the varint.
        let long = sized(&[1, 4, 2, 1, 0]);
        assert!(matches!(
            decode_err::<Setup>(&long, v),
            DecodeError::TrailingBytes { .. }
        ));
        // A parameter value longer than the body.
        let over = sized(&[1, 2, 9, b'a']);
        assert!(matches!(
            decode_err::<Setup>(&over, v),
            DecodeError::Truncated { .. }
        ));
        // An empty varint parameter.
        let empty = sized(&[1, 1, 0]);
        assert!(matches!(
            decode_err::<Setup>(&empty, v),
            DecodeError::Truncated { .. }
        ));
        // A path that is not UTF-8.
        let utf8 = sized(&[1, 2, 2, 0xc3, 0x28]);
        assert!(matches!(
            decode_err::<Setup>(&utf8, v),
            DecodeError::InvalidUtf8 { .. }
        ));
        // Bytes after the last parameter.
        let trailing = sized(&[0, 0]);
        assert!(matches!(
            decode_err::<Setup>(&trailing, v),
            DecodeError::TrailingBytes { extra: 1, .. }
        ));
    }

    #[test]
    fn setup_oversize_path_or_body_is_too_long_without_the_bytes() {
        let v = Version::Lite05;
        let limits = Limits::default();
        // Body length prefix over max_message, nothing else present.
        let huge = varint(limits.max_message as u64 + 1);
        assert!(matches!(
            decode_err::<Setup>(&huge, v),
            DecodeError::TooLong { what: "SETUP", .. }
        ));
        // A path parameter over max_path inside a complete body.
        let mut body = vec![1, 2];
        body.extend(varint(limits.max_path as u64 + 1));
        assert!(matches!(
            decode_err::<Setup>(&sized(&body), v),
            DecodeError::TooLong {
                what: "SETUP path",
                ..
            }
        ));
    }

    #[test]
    fn setup_refuses_to_send_hop_zero() {
        let s = Setup {
            hop: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            s.to_vec(Version::Lite06),
            Err(EncodeError::InvalidValue { .. })
        ));
    }
}
