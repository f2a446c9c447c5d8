//! The Fetch stream (bidi type 3): FETCH, answered by bare FRAMEs up to FIN.
//!
//! Wire (moq-net 0.3.18 `lite/fetch.rs`): `L, broadcast s, track s, priority u8,
//! group i, [start_frame i, end_frame opt]` (frame bounds lite-06+). There is no
//! FETCH_OK: a publisher without the group resets the stream. The message exists
//! from lite-03 in moq-net, but its publisher accepts a Fetch stream only from
//! lite-05 (see [`BidiType::exists_in`](super::BidiType::exists_in)).

use super::coding::{Framed, Reader, Writer};
use super::{DecodeError, EncodeError, Limits, Version};

/// FETCH: one group (or part of one) of a track, outside any subscription.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fetch {
    /// Broadcast path.
    pub broadcast: String,
    /// Track name.
    pub track: String,
    /// Subscriber priority; higher wins.
    pub priority: u8,
    /// Group sequence.
    pub group: u64,
    /// Lite-06: first frame to return (0 = the start of the group).
    pub start_frame: u64,
    /// Lite-06: last frame to return, inclusive; `None` for the rest of the group.
    pub end_frame: Option<u64>,
}

impl Framed for Fetch {
    const WHAT: &'static str = "FETCH";

    fn write_body(&self, w: &mut Writer<'_>, v: Version) -> Result<(), EncodeError> {
        if self.end_frame.is_some_and(|end| end < self.start_frame) {
            return Err(EncodeError::InvalidValue {
                what: "fetch range ending before it starts",
            });
        }
        w.path("broadcast", &self.broadcast)?;
        w.string("track", &self.track)?;
        w.u8(self.priority);
        w.varint("group", self.group)?;
        if v.has_frame_bounds() {
            w.varint("start frame", self.start_frame)?;
            w.opt("end frame", self.end_frame)?;
        } else if self.start_frame != 0 || self.end_frame.is_some() {
            // The peer would serve the whole group, frames the caller excluded too.
            return Err(EncodeError::NotInVersion {
                what: "fetch frame bounds",
                version: v,
            });
        }
        Ok(())
    }

    fn read_body(r: &mut Reader<'_>, v: Version, limits: &Limits) -> Result<Self, DecodeError> {
        let broadcast = r.path("broadcast", limits)?;
        let track = r.string("track", limits.max_name)?;
        let priority = r.u8()?;
        let group = r.varint()?;
        let (start_frame, end_frame) = match v.has_frame_bounds() {
            true => (r.varint()?, r.opt()?),
            false => (0, None),
        };
        if end_frame.is_some_and(|end| end < start_frame) {
            return Err(DecodeError::InvalidValue {
                what: "fetch range ending before it starts",
            });
        }
        Ok(Self {
            broadcast,
            track,
            priority,
            group,
            start_frame,
            end_frame,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::Encode;
    use super::*;

    #[test]
    fn fetch_round_trips_in_every_version() {
        for v in Version::ALL {
            let bounds = v.has_frame_bounds();
            round_trip(
                &Fetch {
                    broadcast: "room".into(),
                    track: "video".into(),
                    priority: 3,
                    group: 7,
                    start_frame: if bounds { 2 } else { 0 },
                    end_frame: if bounds { Some(2) } else { None },
                },
                v,
            );
            round_trip(&Fetch::default(), v);
        }
    }

    #[test]
    fn fetch_frame_bounds_are_checked() {
        let backwards = Fetch {
            start_frame: 5,
            end_frame: Some(4),
            ..Default::default()
        };
        assert!(matches!(
            backwards.to_vec(Version::Lite06),
            Err(EncodeError::InvalidValue { .. })
        ));
        let bounded = Fetch {
            start_frame: 1,
            ..Default::default()
        };
        assert!(matches!(
            bounded.to_vec(Version::Lite05),
            Err(EncodeError::NotInVersion { .. })
        ));
        // "", "", priority 0, group 0, start 5, end opt 4+1.
        assert!(matches!(
            decode_err::<Fetch>(&sized(&[0, 0, 0, 0, 5, 5]), Version::Lite06),
            DecodeError::InvalidValue { .. }
        ));
    }

    #[test]
    fn fetch_malformed_input_is_rejected() {
        let v = Version::Lite05;
        assert!(matches!(
            decode_err::<Fetch>(&sized(&[0, 0, 0]), v),
            DecodeError::Truncated { .. }
        ));
        assert!(matches!(
            decode_err::<Fetch>(&sized(&[0, 0, 0, 0, 0]), v),
            DecodeError::TrailingBytes { .. }
        ));
        assert!(matches!(
            decode_err::<Fetch>(&sized(&[1, 0xff, 0, 0, 0]), v),
            DecodeError::InvalidUtf8 { .. }
        ));
        let mut body = vec![0];
        body.extend(varint(Limits::default().max_name as u64 + 1));
        assert!(matches!(
            decode_err::<Fetch>(&sized(&body), v),
            DecodeError::TooLong { what: "track", .. }
        ));
    }
}
