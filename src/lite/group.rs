//! Media data: the GROUP stream header, FRAME headers, and the datagram header.
//!
//! Wire (moq-net 0.3.18 `lite/group.rs`, `lite/datagram.rs`, and the frame loops in
//! `lite/publisher.rs` / `lite/subscriber.rs`):
//! - GROUP (uni type 0): `L, subscribe_id i, sequence i, [frame_start i]` (06+), then
//!   FRAMEs until FIN.
//! - FRAME: lite-04 `size i, payload`; lite-05+ `timestamp_delta (zigzag i), size i,
//!   payload`. The delta is against the previous frame on the same stream, the first
//!   frame against 0 (see [`Timestamps`]). FETCH replies carry the same bare FRAMEs.
//! - Datagram (05+): `subscribe_id i, sequence i, timestamp i, payload` to the end of
//!   the datagram. The timestamp is absolute, not a delta, and there is no length.
//!
//! The codec never touches a payload: [`FrameHeader`] reports its size and the
//! caller moves that many bytes itself (as `Bytes`, without copying).

use bytes::BufMut;

use super::coding::{emit, zigzag_decode, zigzag_encode, Decode, Encode, Framed, Reader, Writer};
use super::{DecodeError, EncodeError, Limits, Version, VARINT_MAX};

/// The header that opens a GROUP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupHeader {
    /// The subscription this group answers.
    pub subscribe: u64,
    /// Group sequence number.
    pub sequence: u64,
    /// Lite-06: index of the first frame on this stream (0 = from the start). Earlier
    /// versions always start at 0, so a non-zero value cannot be sent to them.
    pub frame_start: u64,
}

impl Framed for GroupHeader {
    const WHAT: &'static str = "GROUP";

    fn write_body(&self, w: &mut Writer<'_>, v: Version) -> Result<(), EncodeError> {
        w.varint("subscribe id", self.subscribe)?;
        w.varint("group sequence", self.sequence)?;
        if v.has_frame_bounds() {
            w.varint("frame start", self.frame_start)?;
        } else if self.frame_start != 0 {
            // The peer would number the frames from 0 and misalign the group.
            return Err(EncodeError::NotInVersion {
                what: "GROUP frame start",
                version: v,
            });
        }
        Ok(())
    }

    fn read_body(r: &mut Reader<'_>, v: Version, _: &Limits) -> Result<Self, DecodeError> {
        Ok(Self {
            subscribe: r.varint()?,
            sequence: r.varint()?,
            frame_start: match v.has_frame_bounds() {
                true => r.varint()?,
                false => 0,
            },
        })
    }
}

/// The header in front of each frame payload on a GROUP or FETCH stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameHeader {
    /// Lite-05+: timestamp minus the previous frame's (in the track's timescale).
    /// Required there, absent on lite-04.
    pub timestamp_delta: Option<i64>,
    /// Payload bytes that follow the header.
    pub size: u64,
}

impl Decode for FrameHeader {
    /// `size` above [`Limits::max_frame`] is [`DecodeError::TooLong`]. A stream that
    /// ends cleanly where a header would start has no more frames; that is the
    /// caller's FIN check, not a decode.
    fn decode(buf: &[u8], version: Version, limits: &Limits) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let timestamp_delta = match version.has_frame_timestamps() {
            true => Some(zigzag_decode(r.varint()?)),
            false => None,
        };
        let size = r.varint()?;
        if size > limits.max_frame {
            return Err(DecodeError::TooLong {
                what: "frame",
                len: size,
                max: limits.max_frame,
            });
        }
        Ok((
            Self {
                timestamp_delta,
                size,
            },
            r.consumed(),
        ))
    }
}

impl Encode for FrameHeader {
    fn encode<B: BufMut>(&self, out: &mut B, version: Version) -> Result<usize, EncodeError> {
        let delta = match (version.has_frame_timestamps(), self.timestamp_delta) {
            (true, Some(delta)) => Some(zigzag_encode(delta)?),
            (false, None) => None,
            (true, None) => {
                return Err(EncodeError::InvalidValue {
                    what: "frame without the timestamp delta lite-05+ requires",
                });
            }
            (false, Some(_)) => {
                return Err(EncodeError::NotInVersion {
                    what: "frame timestamp",
                    version,
                });
            }
        };
        emit(out, |w| {
            if let Some(delta) = delta {
                w.varint("timestamp delta", delta)?;
            }
            w.varint("frame size", self.size)
        })
    }
}

/// The running timestamp of one GROUP or FETCH stream, turning absolute frame
/// timestamps into wire deltas and back. Start a fresh one per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamps {
    prev: u64,
}

impl Timestamps {
    /// The absolute timestamp of a received frame. It must stay within 0..=2^62-1
    /// (moq-net refuses the frame otherwise). On error the state is unchanged.
    pub fn apply(&mut self, delta: i64) -> Result<u64, DecodeError> {
        let next = i128::from(self.prev) + i128::from(delta);
        match u64::try_from(next) {
            Ok(next) if next <= VARINT_MAX => {
                self.prev = next;
                Ok(next)
            }
            _ => Err(DecodeError::VarintOverflow {
                what: "frame timestamp",
            }),
        }
    }

    /// The delta to send for a frame stamped `timestamp`. On error (a jump that zigzag
    /// cannot carry, or a timestamp past 2^62-1) the state is unchanged.
    pub fn delta(&mut self, timestamp: u64) -> Result<i64, EncodeError> {
        let overflow = EncodeError::VarintOverflow {
            what: "frame timestamp",
            value: timestamp,
        };
        if timestamp > VARINT_MAX {
            return Err(overflow);
        }
        let delta = i64::try_from(i128::from(timestamp) - i128::from(self.prev))
            .map_err(|_| overflow.clone())?;
        zigzag_encode(delta)?;
        self.prev = timestamp;
        Ok(delta)
    }
}

/// The header of a QUIC datagram carrying a one-frame group (lite-05+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DatagramHeader {
    /// The subscription this group answers.
    pub subscribe: u64,
    /// Group sequence number.
    pub sequence: u64,
    /// Absolute timestamp in the track's timescale.
    pub timestamp: u64,
}

impl DatagramHeader {
    /// Split one whole datagram into its header and payload.
    ///
    /// A datagram is complete or lost, never partial, so a header cut short is
    /// [`DecodeError::Truncated`], not `Short`.
    pub fn decode(datagram: &[u8], version: Version) -> Result<(Self, &[u8]), DecodeError> {
        if !version.has_datagrams() {
            return Err(DecodeError::NotInVersion {
                what: "datagram",
                version,
            });
        }
        let mut r = Reader::bounded(datagram, "datagram");
        let header = Self {
            subscribe: r.varint()?,
            sequence: r.varint()?,
            timestamp: r.varint()?,
        };
        Ok((header, r.rest()))
    }

    /// Write the header; the caller appends the payload (no length: it runs to the
    /// end of the datagram). Returns the header length.
    pub fn encode<B: BufMut>(&self, out: &mut B, version: Version) -> Result<usize, EncodeError> {
        if !version.has_datagrams() {
            return Err(EncodeError::NotInVersion {
                what: "datagram",
                version,
            });
        }
        emit(out, |w| {
            w.varint("subscribe id", self.subscribe)?;
            w.varint("group sequence", self.sequence)?;
            w.varint("timestamp", self.timestamp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn group_header_round_trips_in_every_version() {
        for v in Version::ALL {
            round_trip(&GroupHeader::default(), v);
            round_trip(
                &GroupHeader {
                    subscribe: 1 << 33,
                    sequence: 70_000,
                    frame_start: if v.has_frame_bounds() { 4 } else { 0 },
                },
                v,
            );
        }
    }

    #[test]
    fn group_frame_start_cannot_be_sent_before_lite06() {
        let g = GroupHeader {
            frame_start: 1,
            ..Default::default()
        };
        for v in [Version::Lite04, Version::Lite05] {
            assert!(matches!(g.to_vec(v), Err(EncodeError::NotInVersion { .. })));
        }
    }

    #[test]
    fn group_header_malformed_input_is_rejected() {
        assert!(matches!(
            decode_err::<GroupHeader>(&[2, 0, 0], Version::Lite06),
            DecodeError::Truncated { .. }
        ));
        assert!(matches!(
            decode_err::<GroupHeader>(&[3, 0, 0, 0], Version::Lite05),
            DecodeError::TrailingBytes { extra: 1, .. }
        ));
        assert!(matches!(
            decode_err::<GroupHeader>(&varint(1 << 20), Version::Lite04),
            DecodeError::TooLong { .. }
        ));
    }

    #[test]
    fn frame_header_round_trips_in_every_version() {
        round_trip(
            &FrameHeader {
                timestamp_delta: None,
                size: 1200,
            },
            Version::Lite04,
        );
        for v in [Version::Lite05, Version::Lite06] {
            for delta in [0, -1, 33_333, -(1 << 61), (1 << 61) - 1] {
                round_trip(
                    &FrameHeader {
                        timestamp_delta: Some(delta),
                        size: 0,
                    },
                    v,
                );
            }
        }
    }

    #[test]
    fn frame_header_timestamp_is_required_exactly_from_lite05() {
        let none = FrameHeader {
            timestamp_delta: None,
            size: 1,
        };
        let some = FrameHeader {
            timestamp_delta: Some(1),
            size: 1,
        };
        assert!(none.to_vec(Version::Lite05).is_err());
        assert!(some.to_vec(Version::Lite04).is_err());
        assert_eq!(some.to_vec(Version::Lite05).unwrap(), [2, 1]);
        assert_eq!(none.to_vec(Version::Lite04).unwrap(), [1]);
        let out_of_range = FrameHeader {
            timestamp_delta: Some(1 << 61),
            size: 1,
        };
        assert!(out_of_range.to_vec(Version::Lite06).is_err());
    }

    #[test]
    fn frame_size_over_the_limit_is_too_long() {
        let limits = Limits {
            max_frame: 100,
            ..Limits::default()
        };
        let wire = varint(101);
        assert!(matches!(
            FrameHeader::decode(&wire, Version::Lite04, &limits),
            Err(DecodeError::TooLong { what: "frame", .. })
        ));
    }

    #[test]
    fn timestamps_track_deltas_and_refuse_to_leave_the_varint_range() {
        let mut tx = Timestamps::default();
        let mut rx = Timestamps::default();
        for ts in [1000, 1033, 1020, 5_000_000, 0] {
            let d = tx.delta(ts).unwrap();
            assert_eq!(rx.apply(d), Ok(ts));
        }
        let before = rx;
        assert!(rx.apply(-1).is_err());
        assert_eq!(rx, before);
        let mut top = Timestamps::default();
        top.apply((1 << 61) - 1).unwrap();
        top.apply((1 << 61) - 1).unwrap();
        assert_eq!(top.apply(1), Ok(VARINT_MAX));
        assert!(top.apply(1).is_err());
        assert!(Timestamps::default().delta(1 << 61).is_err());
        assert!(Timestamps::default().delta(VARINT_MAX + 1).is_err());
    }

    #[test]
    fn datagram_header_round_trips_in_every_version_that_has_it() {
        for v in [Version::Lite05, Version::Lite06] {
            let h = DatagramHeader {
                subscribe: 7,
                sequence: 42,
                timestamp: 1 << 40,
            };
            let mut wire = Vec::new();
            let n = h.encode(&mut wire, v).unwrap();
            wire.extend_from_slice(b"payload");
            let (back, payload) = DatagramHeader::decode(&wire, v).unwrap();
            assert_eq!((back, payload), (h, &b"payload"[..]));
            assert_eq!(wire.len() - payload.len(), n);
            // Cut inside the header: truncated, never Short.
            for cut in 0..n {
                assert!(matches!(
                    DatagramHeader::decode(&wire[..cut], v),
                    Err(DecodeError::Truncated { .. })
                ));
            }
            // Empty payload.
            assert_eq!(DatagramHeader::decode(&wire[..n], v), Ok((h, &[][..])));
        }
        assert!(DatagramHeader::default()
            .encode(&mut Vec::new(), Version::Lite04)
            .is_err());
        assert!(matches!(
            DatagramHeader::decode(&[1, 2, 3], Version::Lite04),
            Err(DecodeError::NotInVersion { .. })
        ));
    }
}
