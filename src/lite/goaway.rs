//! The Goaway stream (bidi type 5): GOAWAY.
//!
//! Wire (moq-net 0.3.18 `lite/goaway.rs`, lite-04+): `L, uri s`. The URI is where to
//! reconnect (empty: nowhere in particular) and is capped at [`MAX_GOAWAY_URI`]
//! bytes, checked on its length prefix.

use super::coding::{Framed, Reader, Writer};
use super::{DecodeError, EncodeError, Limits, Version};

/// The longest GOAWAY URI (moq-net's cap, matching the IETF New Session URI).
pub const MAX_GOAWAY_URI: usize = 8192;

/// GOAWAY: the sender is shutting the session down; reconnect to `uri`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Goaway {
    /// Where to reconnect; empty for the same place.
    pub uri: String,
}

impl Framed for Goaway {
    const WHAT: &'static str = "GOAWAY";

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        if self.uri.len() > MAX_GOAWAY_URI {
            return Err(EncodeError::TooLong {
                what: "GOAWAY uri",
                len: self.uri.len() as u64,
                max: MAX_GOAWAY_URI as u64,
            });
        }
        w.string("GOAWAY uri", &self.uri)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, _: &Limits) -> Result<Self, DecodeError> {
        Ok(Self {
            uri: r.string("GOAWAY uri", MAX_GOAWAY_URI)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Encode;
    use super::*;

    #[test]
    fn goaway_round_trips_in_every_version() {
        for v in Version::ALL {
            round_trip(&Goaway::default(), v);
            round_trip(
                &Goaway {
                    uri: "https://relay.example/new".into(),
                },
                v,
            );
            round_trip(
                &Goaway {
                    uri: "a".repeat(MAX_GOAWAY_URI),
                },
                v,
            );
        }
    }

    #[test]
    fn goaway_uri_over_the_cap_is_refused_both_ways() {
        let long = Goaway {
            uri: "a".repeat(MAX_GOAWAY_URI + 1),
        };
        assert!(matches!(
            long.to_vec(Version::Lite05),
            Err(EncodeError::TooLong { .. })
        ));
        // Body big enough, string prefix over the cap.
        let mut body = varint(MAX_GOAWAY_URI as u64 + 1);
        body.resize(MAX_GOAWAY_URI + 3, b'a');
        assert!(matches!(
            decode_err::<Goaway>(&sized(&body), Version::Lite05),
            DecodeError::TooLong {
                what: "GOAWAY uri",
                ..
            }
        ));
    }

    #[test]
    fn goaway_malformed_input_is_rejected() {
        let v = Version::Lite06;
        assert!(matches!(
            decode_err::<Goaway>(&[3, 2, 0xc3, 0x28], v),
            DecodeError::InvalidUtf8 { .. }
        ));
        assert!(matches!(
            decode_err::<Goaway>(&[2, 0, 0], v),
            DecodeError::TrailingBytes { .. }
        ));
        assert!(matches!(
            decode_err::<Goaway>(&[2, 5, b'a'], v),
            DecodeError::Truncated { .. }
        ));
    }
}
