//! The Track stream (bidi type 6, lite-05+): TRACK -> TRACK_INFO.
//!
//! Wire (moq-net 0.3.18 `lite/track.rs`):
//! - TRACK: `L, broadcast s, track s`.
//! - TRACK_INFO: `L, priority u8, [order u8], max_latency i, timescale i`, the order
//!   byte on lite-05 only (written 0, ignored on read, as in moq-net).
//!
//! The subscriber asks once per track; every field is fixed for the track's life.

use super::coding::{Framed, Reader, Writer};
use super::{DecodeError, EncodeError, Limits, Version};

/// TRACK: ask for a track's immutable properties, without subscribing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrackRequest {
    /// Broadcast path.
    pub broadcast: String,
    /// Track name.
    pub track: String,
}

impl Framed for TrackRequest {
    const WHAT: &'static str = "TRACK";

    fn exists_in(version: Version) -> bool {
        version.has_track_stream()
    }

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        w.path("broadcast", &self.broadcast)?;
        w.string("track", &self.track)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, limits: &Limits) -> Result<Self, DecodeError> {
        Ok(Self {
            broadcast: r.path("broadcast", limits)?,
            track: r.string("track", limits.max_name)?,
        })
    }
}

/// TRACK_INFO: the publisher's answer on a Track stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackInfo {
    /// Publisher tie-break priority.
    pub priority: u8,
    /// How long, in milliseconds, the publisher keeps a non-latest group cached.
    pub max_latency: u64,
    /// Frame timestamp units per second. Never 0 (moq-net rejects 0 on decode); a
    /// lite-04 bridge stamps arrival time at 1000.
    pub timescale: u64,
}

impl Framed for TrackInfo {
    const WHAT: &'static str = "TRACK_INFO";

    fn exists_in(version: Version) -> bool {
        version.has_track_stream()
    }

    fn write_body(&self, w: &mut Writer<'_>, v: Version) -> Result<(), EncodeError> {
        if self.timescale == 0 {
            return Err(EncodeError::InvalidValue {
                what: "timescale 0",
            });
        }
        w.u8(self.priority);
        if v.has_group_order() {
            w.u8(0);
        }
        w.varint("max latency", self.max_latency)?;
        w.varint("timescale", self.timescale)
    }

    fn read_body(r: &mut Reader<'_>, v: Version, _: &Limits) -> Result<Self, DecodeError> {
        let priority = r.u8()?;
        if v.has_group_order() {
            r.u8()?;
        }
        let max_latency = r.varint()?;
        let timescale = r.varint()?;
        if timescale == 0 {
            return Err(DecodeError::InvalidValue {
                what: "timescale 0",
            });
        }
        Ok(Self {
            priority,
            max_latency,
            timescale,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Encode;
    use super::*;

    #[test]
    fn track_request_round_trips_in_every_version_that_has_it() {
        for v in [Version::Lite05, Version::Lite06] {
            round_trip(
                &TrackRequest {
                    broadcast: "room/alice".into(),
                    track: "catalog.json".into(),
                },
                v,
            );
            round_trip(&TrackRequest::default(), v);
        }
    }

    #[test]
    fn track_info_round_trips_in_every_version_that_has_it() {
        for v in [Version::Lite05, Version::Lite06] {
            for info in [
                TrackInfo {
                    priority: 7,
                    max_latency: 2000,
                    timescale: 1_000_000,
                },
                TrackInfo {
                    priority: 255,
                    max_latency: 0,
                    timescale: 1,
                },
            ] {
                round_trip(&info, v);
            }
        }
    }

    #[test]
    fn track_stream_messages_do_not_exist_in_lite04() {
        let info = TrackInfo {
            priority: 0,
            max_latency: 0,
            timescale: 1000,
        };
        assert!(matches!(
            info.to_vec(Version::Lite04),
            Err(EncodeError::NotInVersion { .. })
        ));
        assert!(matches!(
            decode_err::<TrackRequest>(&[2, 0, 0], Version::Lite04),
            DecodeError::NotInVersion { .. }
        ));
    }

    #[test]
    fn track_info_order_byte_is_lite05_only() {
        let info = TrackInfo {
            priority: 1,
            max_latency: 2,
            timescale: 3,
        };
        assert_eq!(info.to_vec(Version::Lite05).unwrap(), [4, 1, 0, 2, 3]);
        assert_eq!(info.to_vec(Version::Lite06).unwrap(), [3, 1, 2, 3]);
    }

    #[test]
    fn track_malformed_input_is_rejected() {
        let v = Version::Lite06;
        assert!(matches!(
            decode_err::<TrackInfo>(&[3, 1, 2, 0], v),
            DecodeError::InvalidValue { .. }
        ));
        assert!(matches!(
            decode_err::<TrackInfo>(&[4, 1, 2, 3, 4], v),
            DecodeError::TrailingBytes { .. }
        ));
        assert!(matches!(
            decode_err::<TrackInfo>(&[2, 1, 2], v),
            DecodeError::Truncated { .. }
        ));
        assert!(matches!(
            decode_err::<TrackRequest>(&[3, 0, 1, 0x80], v),
            DecodeError::InvalidUtf8 { .. }
        ));
        let mut huge = vec![];
        huge.extend(varint(Limits::default().max_path as u64 + 1));
        assert!(matches!(
            decode_err::<TrackRequest>(&sized(&huge), v),
            DecodeError::TooLong {
                what: "broadcast",
                ..
            }
        ));
        assert!(TrackInfo {
            priority: 0,
            max_latency: 0,
            timescale: 0
        }
        .to_vec(v)
        .is_err());
    }
}
