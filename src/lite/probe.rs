//! The Probe stream (bidi type 4): PROBE reports.
//!
//! Wire (moq-net 0.3.18 `lite/probe.rs`): `L, bitrate i, rtt i` on lite-04+ (lite-03
//! had no rtt). Each field is independently 0 for "unknown". Bitrate is bits per
//! second; rtt is milliseconds.

use super::coding::{Framed, Reader, Writer};
use super::{DecodeError, EncodeError, Limits, Version};

/// PROBE: the publisher's estimate of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Probe {
    /// Estimated send bitrate in bits per second, `None` if unknown.
    pub bitrate: Option<u64>,
    /// Round-trip time in milliseconds, `None` if unknown.
    pub rtt: Option<u64>,
}

impl Framed for Probe {
    const WHAT: &'static str = "PROBE";

    /// A measured 0 would read as unknown, so it is sent as 1 (as moq-net does).
    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        w.varint("probe bitrate", self.bitrate.map_or(0, |b| b.max(1)))?;
        w.varint("probe rtt", self.rtt.map_or(0, |r| r.max(1)))
    }

    fn read_body(r: &mut Reader<'_>, _: Version, _: &Limits) -> Result<Self, DecodeError> {
        let known = |v: u64| (v != 0).then_some(v);
        Ok(Self {
            bitrate: known(r.varint()?),
            rtt: known(r.varint()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Encode;
    use super::*;

    #[test]
    fn probe_round_trips_in_every_version() {
        for v in Version::ALL {
            for (bitrate, rtt) in [
                (Some(5_000_000), Some(40)),
                (None, Some(1)),
                (Some(1 << 40), None),
                (None, None),
            ] {
                round_trip(&Probe { bitrate, rtt }, v);
            }
        }
    }

    #[test]
    fn probe_measured_zero_is_sent_as_one() {
        let p = Probe {
            bitrate: Some(0),
            rtt: Some(0),
        };
        assert_eq!(p.to_vec(Version::Lite04).unwrap(), [2, 1, 1]);
    }

    #[test]
    fn probe_malformed_input_is_rejected() {
        for v in Version::ALL {
            assert!(matches!(
                decode_err::<Probe>(&[1, 0], v),
                DecodeError::Truncated { .. }
            ));
            assert!(matches!(
                decode_err::<Probe>(&[3, 0, 0, 0], v),
                DecodeError::TrailingBytes { extra: 1, .. }
            ));
            assert!(matches!(
                decode_err::<Probe>(&varint(1 << 30), v),
                DecodeError::TooLong { .. }
            ));
        }
    }
}
