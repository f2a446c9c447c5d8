//! The Subscribe stream (bidi type 2): SUBSCRIBE, SUBSCRIBE_UPDATE, and the replies.
//!
//! Wire (moq-net 0.3.18 `lite/subscribe.rs`):
//! - SUBSCRIBE: `L, id i, broadcast s, track s, priority u8, [order u8], max_latency i,
//!   start, end opt, [frame_start i, frame_end opt]`.
//! - SUBSCRIBE_UPDATE: the same without `id, broadcast, track`.
//! - Replies, `type i, L, body`: lite-04 0 OK `{priority u8, order u8, max_latency i,
//!   start opt, end opt}`, 1 DROP `{start i, end i, error i}`; lite-05/06 0 START
//!   `{group i}`, 1 END `{group i}`, 2 DROP. Any other type is an error (moq-net does
//!   not skip unknown replies).
//!
//! `[order u8]` is the retired group-order byte of lite-04/05: moq-net writes 0 and
//! ignores it on read, and so does this codec (it is not a field here). `[frame_*]`
//! are lite-06 only. `max_latency` is milliseconds (moq-net's `max_age`).
//!
//! `start` is `opt` on lite-04/05 (none = start at the latest group). On lite-06 it is
//! a raw `i` floor (moq-net's `resolves_start`): 0 means "no floor", and the publisher
//! picks the start from `max_latency`. PROTOCOL.md reads that 0 as "latest"; the code
//! treats it as "no constraint". Decoding maps a lite-06 start of 0 with
//! `start_frame` 0 to `None`, as moq-net does, so `Some(0)` with `start_frame` 0
//! encodes identically to `None` there.

use bytes::BufMut;

use super::coding::{emit, Decode, Encode, Framed, Reader, Writer};
use super::{DecodeError, EncodeError, Limits, Version};

/// SUBSCRIBE: the subscriber asks for a track's groups, delivered under `id`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    /// Subscription id, echoed in every GROUP header and datagram.
    pub id: u64,
    /// Broadcast path.
    pub broadcast: String,
    /// Track name.
    pub track: String,
    /// Subscriber priority; higher wins.
    pub priority: u8,
    /// Oldest group age worth delivering, in milliseconds.
    pub max_latency: u64,
    /// First group wanted (see the module docs for its per-version meaning).
    pub start_group: Option<u64>,
    /// Last group wanted, inclusive; `None` for open-ended.
    pub end_group: Option<u64>,
    /// Lite-06: first frame within `start_group` (0 = whole group). Needs `start_group`.
    pub start_frame: u64,
    /// Lite-06: last frame within `end_group`, inclusive. Needs `end_group`.
    pub end_frame: Option<u64>,
}

/// SUBSCRIBE_UPDATE: new preferences for the subscription on this stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeUpdate {
    /// Subscriber priority; higher wins.
    pub priority: u8,
    /// Oldest group age worth delivering, in milliseconds.
    pub max_latency: u64,
    /// As [`Subscribe::start_group`].
    pub start_group: Option<u64>,
    /// As [`Subscribe::end_group`].
    pub end_group: Option<u64>,
    /// As [`Subscribe::start_frame`].
    pub start_frame: u64,
    /// As [`Subscribe::end_frame`].
    pub end_frame: Option<u64>,
}

/// The range part shared by SUBSCRIBE and SUBSCRIBE_UPDATE.
struct Range {
    max_latency: u64,
    start_group: Option<u64>,
    end_group: Option<u64>,
    start_frame: u64,
    end_frame: Option<u64>,
}

impl Range {
    /// `[order u8], max_latency i, start, end opt, [frame_start i, frame_end opt]`.
    fn write(&self, w: &mut Writer<'_>, v: Version) -> Result<(), EncodeError> {
        if (self.start_frame != 0 && self.start_group.is_none())
            || (self.end_frame.is_some() && self.end_group.is_none())
        {
            return Err(EncodeError::InvalidValue {
                what: "frame bound without its group",
            });
        }
        if !v.has_frame_bounds() && (self.start_frame != 0 || self.end_frame.is_some()) {
            // Dropping them would deliver frames the caller excluded.
            return Err(EncodeError::NotInVersion {
                what: "subscribe frame bounds",
                version: v,
            });
        }
        if v.has_group_order() {
            w.u8(0);
        }
        w.varint("max latency", self.max_latency)?;
        match v.has_frame_bounds() {
            true => w.varint("start group", self.start_group.unwrap_or(0))?,
            false => w.opt("start group", self.start_group)?,
        }
        w.opt("end group", self.end_group)?;
        if v.has_frame_bounds() {
            w.varint("start frame", self.start_frame)?;
            w.opt("end frame", self.end_frame)?;
        }
        Ok(())
    }

    fn read(r: &mut Reader<'_>, v: Version) -> Result<Self, DecodeError> {
        if v.has_group_order() {
            r.u8()?;
        }
        let max_latency = r.varint()?;
        let (mut start_group, end_group) = match v.has_frame_bounds() {
            true => (Some(r.varint()?), r.opt()?),
            false => (r.opt()?, r.opt()?),
        };
        let (start_frame, end_frame) = match v.has_frame_bounds() {
            true => (r.varint()?, r.opt()?),
            false => (0, None),
        };
        if end_frame.is_some() && end_group.is_none() {
            return Err(DecodeError::InvalidValue {
                what: "subscribe end frame without an end group",
            });
        }
        // A lite-06 floor of 0 at frame 0 constrains nothing (moq-net's
        // `canonical_start_group`).
        if v.has_frame_bounds() && start_group == Some(0) && start_frame == 0 {
            start_group = None;
        }
        Ok(Self {
            max_latency,
            start_group,
            end_group,
            start_frame,
            end_frame,
        })
    }
}

impl Framed for Subscribe {
    const WHAT: &'static str = "SUBSCRIBE";

    fn write_body(&self, w: &mut Writer<'_>, v: Version) -> Result<(), EncodeError> {
        w.varint("subscribe id", self.id)?;
        w.path("broadcast", &self.broadcast)?;
        w.string("track", &self.track)?;
        w.u8(self.priority);
        Range {
            max_latency: self.max_latency,
            start_group: self.start_group,
            end_group: self.end_group,
            start_frame: self.start_frame,
            end_frame: self.end_frame,
        }
        .write(w, v)
    }

    fn read_body(r: &mut Reader<'_>, v: Version, limits: &Limits) -> Result<Self, DecodeError> {
        let id = r.varint()?;
        let broadcast = r.path("broadcast", limits)?;
        let track = r.string("track", limits.max_name)?;
        let priority = r.u8()?;
        let range = Range::read(r, v)?;
        Ok(Self {
            id,
            broadcast,
            track,
            priority,
            max_latency: range.max_latency,
            start_group: range.start_group,
            end_group: range.end_group,
            start_frame: range.start_frame,
            end_frame: range.end_frame,
        })
    }
}

impl Framed for SubscribeUpdate {
    const WHAT: &'static str = "SUBSCRIBE_UPDATE";

    fn write_body(&self, w: &mut Writer<'_>, v: Version) -> Result<(), EncodeError> {
        w.u8(self.priority);
        Range {
            max_latency: self.max_latency,
            start_group: self.start_group,
            end_group: self.end_group,
            start_frame: self.start_frame,
            end_frame: self.end_frame,
        }
        .write(w, v)
    }

    fn read_body(r: &mut Reader<'_>, v: Version, _: &Limits) -> Result<Self, DecodeError> {
        let priority = r.u8()?;
        let range = Range::read(r, v)?;
        Ok(Self {
            priority,
            max_latency: range.max_latency,
            start_group: range.start_group,
            end_group: range.end_group,
            start_frame: range.start_frame,
            end_frame: range.end_frame,
        })
    }
}

/// SUBSCRIBE_OK (lite-04 only): the publisher accepts, with its own preferences.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeOk {
    /// Publisher priority.
    pub priority: u8,
    /// Publisher max latency, in milliseconds.
    pub max_latency: u64,
    /// Resolved first group, if known.
    pub start_group: Option<u64>,
    /// Resolved last group, if known.
    pub end_group: Option<u64>,
}

/// SUBSCRIBE_DROP: groups `start..=end` will not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscribeDrop {
    /// First dropped group.
    pub start: u64,
    /// Last dropped group, inclusive.
    pub end: u64,
    /// Application error code; 0 = simply unavailable.
    pub error: u64,
}

/// A publisher's message on the Subscribe stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeReply {
    /// Lite-04 type 0.
    Ok(SubscribeOk),
    /// Lite-05+ type 0: delivery starts at this group (later than asked = the groups
    /// before it are dropped).
    Start {
        /// The resolved first group.
        group: u64,
    },
    /// Lite-05+ type 1: no group at or after `group` will be produced (exclusive end;
    /// 0 = the track ended before any group).
    End {
        /// The exclusive end.
        group: u64,
    },
    /// Type 1 on lite-04, 2 on lite-05+.
    Drop(SubscribeDrop),
}

impl SubscribeReply {
    /// The wire type for `version`, or `None` if the reply does not exist there.
    fn code(&self, v: Version) -> Option<u64> {
        match (self, v.has_track_stream()) {
            (SubscribeReply::Ok(_), false) => Some(0),
            (SubscribeReply::Drop(_), false) => Some(1),
            (SubscribeReply::Start { .. }, true) => Some(0),
            (SubscribeReply::End { .. }, true) => Some(1),
            (SubscribeReply::Drop(_), true) => Some(2),
            _ => None,
        }
    }
}

impl Encode for SubscribeReply {
    fn encode<B: BufMut>(&self, out: &mut B, version: Version) -> Result<usize, EncodeError> {
        let ty = self.code(version).ok_or(EncodeError::NotInVersion {
            what: "subscribe reply",
            version,
        })?;
        emit(out, |w| {
            w.varint("subscribe reply type", ty)?;
            w.sized(|w| match self {
                SubscribeReply::Ok(ok) => {
                    w.u8(ok.priority);
                    w.u8(0); // The retired group-order byte.
                    w.varint("max latency", ok.max_latency)?;
                    w.opt("start group", ok.start_group)?;
                    w.opt("end group", ok.end_group)
                }
                SubscribeReply::Start { group } | SubscribeReply::End { group } => {
                    w.varint("group", *group)
                }
                SubscribeReply::Drop(drop) => {
                    w.varint("drop start", drop.start)?;
                    w.varint("drop end", drop.end)?;
                    w.varint("drop error", drop.error)
                }
            })
        })
    }
}

impl Decode for SubscribeReply {
    fn decode(buf: &[u8], version: Version, limits: &Limits) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let ty = r.varint()?;
        // Refuse an unknown type before waiting for its body.
        if !matches!((ty, version.has_track_stream()), (0 | 1, _) | (2, true)) {
            return Err(DecodeError::UnknownType {
                what: "subscribe reply",
                ty,
            });
        }
        let mut body = r.sized("subscribe reply", limits.max_message)?;
        let b = &mut body;
        let reply = match (ty, version.has_track_stream()) {
            (0, false) => {
                let priority = b.u8()?;
                b.u8()?; // The retired group-order byte, ignored.
                SubscribeReply::Ok(SubscribeOk {
                    priority,
                    max_latency: b.varint()?,
                    start_group: b.opt()?,
                    end_group: b.opt()?,
                })
            }
            (0, true) => SubscribeReply::Start { group: b.varint()? },
            (1, true) => SubscribeReply::End { group: b.varint()? },
            (1, false) | (2, true) => SubscribeReply::Drop(SubscribeDrop {
                start: b.varint()?,
                end: b.varint()?,
                error: b.varint()?,
            }),
            (ty, _) => {
                return Err(DecodeError::UnknownType {
                    what: "subscribe reply",
                    ty,
                });
            }
        };
        body.finish()?;
        Ok((reply, r.consumed()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn subscribe(v: Version) -> Subscribe {
        let bounds = v.has_frame_bounds();
        Subscribe {
            id: 1 << 20,
            broadcast: "room/alice".into(),
            track: "video/hd".into(),
            priority: 200,
            max_latency: 2500,
            start_group: Some(5),
            end_group: Some(u64::MAX >> 3),
            start_frame: if bounds { 3 } else { 0 },
            end_frame: if bounds { Some(9) } else { None },
        }
    }

    #[test]
    fn subscribe_round_trips_in_every_version() {
        for v in Version::ALL {
            round_trip(&subscribe(v), v);
            round_trip(&Subscribe::default(), v);
            // Group 0 stays named when a frame offset qualifies it.
            if v.has_frame_bounds() {
                round_trip(
                    &Subscribe {
                        start_group: Some(0),
                        start_frame: 4,
                        ..Default::default()
                    },
                    v,
                );
            } else {
                round_trip(
                    &Subscribe {
                        start_group: Some(0),
                        ..Default::default()
                    },
                    v,
                );
            }
        }
    }

    #[test]
    fn subscribe_update_round_trips_in_every_version() {
        for v in Version::ALL {
            let s = subscribe(v);
            round_trip(
                &SubscribeUpdate {
                    priority: s.priority,
                    max_latency: s.max_latency,
                    start_group: s.start_group,
                    end_group: s.end_group,
                    start_frame: s.start_frame,
                    end_frame: s.end_frame,
                },
                v,
            );
            round_trip(&SubscribeUpdate::default(), v);
        }
    }

    #[test]
    fn subscribe_reply_round_trips_in_every_version() {
        let drop = SubscribeReply::Drop(SubscribeDrop {
            start: 5,
            end: 7,
            error: 300,
        });
        let ok = SubscribeReply::Ok(SubscribeOk {
            priority: 3,
            max_latency: 1000,
            start_group: Some(0),
            end_group: None,
        });
        round_trip(&ok, Version::Lite04);
        round_trip(&drop, Version::Lite04);
        for v in [Version::Lite05, Version::Lite06] {
            round_trip(&SubscribeReply::Start { group: 42 }, v);
            round_trip(&SubscribeReply::End { group: 0 }, v);
            round_trip(&drop, v);
            assert!(matches!(
                ok.to_vec(v),
                Err(EncodeError::NotInVersion { .. })
            ));
        }
        assert!(SubscribeReply::Start { group: 1 }
            .to_vec(Version::Lite04)
            .is_err());
    }

    #[test]
    fn lite06_start_zero_means_no_floor() {
        let none = Subscribe::default();
        let zero = Subscribe {
            start_group: Some(0),
            ..Default::default()
        };
        let v = Version::Lite06;
        assert_eq!(none.to_vec(v), zero.to_vec(v));
        let (back, _) = Subscribe::decode(&zero.to_vec(v).unwrap(), v, &Limits::default()).unwrap();
        assert_eq!(back.start_group, None);
        // Pre-06 `opt`: none is 0, group 0 is 1.
        let v5 = Version::Lite05;
        assert_ne!(none.to_vec(v5), zero.to_vec(v5));
    }

    #[test]
    fn subscribe_frame_bounds_are_checked() {
        let no_group = Subscribe {
            start_frame: 2,
            ..Default::default()
        };
        let no_end = Subscribe {
            end_frame: Some(2),
            ..Default::default()
        };
        for v in Version::ALL {
            for s in [&no_group, &no_end] {
                assert!(matches!(s.to_vec(v), Err(EncodeError::InvalidValue { .. })));
            }
        }
        let bounded = subscribe(Version::Lite06);
        for v in [Version::Lite04, Version::Lite05] {
            assert!(matches!(
                bounded.to_vec(v),
                Err(EncodeError::NotInVersion { .. })
            ));
        }
        // id 0, "", "", priority 0, latency 0, start 0, end none, frame 0, end frame 1.
        let wire = sized(&[0, 0, 0, 0, 0, 0, 0, 0, 2]);
        assert!(matches!(
            decode_err::<Subscribe>(&wire, Version::Lite06),
            DecodeError::InvalidValue { .. }
        ));
    }

    #[test]
    fn subscribe_malformed_input_is_rejected() {
        let v = Version::Lite05;
        let good = subscribe(v).to_vec(v).unwrap();
        // Body one byte short of its fields: shrink the length prefix and drop a byte.
        let body = &good[1..good.len() - 1];
        assert!(matches!(
            decode_err::<Subscribe>(&sized(body), v),
            DecodeError::Truncated { .. }
        ));
        // One byte more than its fields.
        let mut long = good[1..].to_vec();
        long.push(0);
        assert!(matches!(
            decode_err::<Subscribe>(&sized(&long), v),
            DecodeError::TrailingBytes { extra: 1, .. }
        ));
        // Track name not UTF-8.
        let bad = sized(&[0, 0, 1, 0xfe, 0, 0, 0, 0, 0]);
        assert_eq!(
            decode_err::<Subscribe>(&bad, v),
            DecodeError::InvalidUtf8 { what: "track" }
        );
        // Track name over max_name, refused from its prefix.
        let mut huge = vec![0, 0];
        huge.extend(varint(Limits::default().max_name as u64 + 1));
        let wire = cat(&[&varint(huge.len() as u64 + 100_000), &huge]);
        assert!(matches!(
            decode_err::<Subscribe>(&wire, v),
            DecodeError::TooLong {
                what: "SUBSCRIBE",
                ..
            }
        ));
        assert!(matches!(
            decode_err::<Subscribe>(&sized(&huge), v),
            DecodeError::TooLong { what: "track", .. }
        ));
    }

    #[test]
    fn subscribe_update_malformed_input_is_rejected() {
        for v in Version::ALL {
            let good = SubscribeUpdate::default().to_vec(v).unwrap();
            let body = &good[1..];
            assert!(matches!(
                decode_err::<SubscribeUpdate>(&sized(&body[..body.len() - 1]), v),
                DecodeError::Truncated { .. }
            ));
            assert!(matches!(
                decode_err::<SubscribeUpdate>(&sized(&cat(&[body, &[0]])), v),
                DecodeError::TrailingBytes { extra: 1, .. }
            ));
            assert!(matches!(
                decode_err::<SubscribeUpdate>(&varint(1 << 20), v),
                DecodeError::TooLong { .. }
            ));
        }
        // Lite-06: priority, latency, start 0, end none, frame 0, end frame 1.
        assert!(matches!(
            decode_err::<SubscribeUpdate>(&sized(&[0, 0, 0, 0, 0, 2]), Version::Lite06),
            DecodeError::InvalidValue { .. }
        ));
    }

    #[test]
    fn subscribe_reply_rejects_unknown_types_and_bad_bodies() {
        assert_eq!(
            decode_err::<SubscribeReply>(&[2, 0], Version::Lite04),
            DecodeError::UnknownType {
                what: "subscribe reply",
                ty: 2
            }
        );
        assert_eq!(
            decode_err::<SubscribeReply>(&[3, 1, 0], Version::Lite06),
            DecodeError::UnknownType {
                what: "subscribe reply",
                ty: 3
            }
        );
        assert!(matches!(
            decode_err::<SubscribeReply>(&[0, 2, 1, 1], Version::Lite05),
            DecodeError::TrailingBytes { .. }
        ));
        assert!(matches!(
            decode_err::<SubscribeReply>(&[2, 2, 1, 1], Version::Lite05),
            DecodeError::Truncated { .. }
        ));
    }
}
