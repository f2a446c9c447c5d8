//! The Announce stream (bidi type 1): ANNOUNCE_REQUEST, ANNOUNCE_OK, announcements.
//!
//! The subscriber opens the stream and sends one [`AnnounceRequest`]. On lite-05+ the
//! publisher answers [`AnnounceOk`] first, then streams [`Announce`] messages: the
//! currently active broadcasts (`AnnounceOk::active` of them), then changes.
//!
//! Wire (moq-net 0.3.18 `lite/announce.rs`):
//! - ANNOUNCE_REQUEST: `L, prefix s, exclude_hop i` (04/05); `L, prefix s` (06).
//! - ANNOUNCE_OK (05+): `L, hop i, active i`.
//! - Announcement, 04/05: `L, status u8, suffix s, n i, hop i x n`, status 1 active,
//!   0 ended, and on 05 only 2 restart (moq-net accepts it and treats it as active;
//!   it never sends it: its 05 restart is a second `active` for the same path).
//! - Announcement, 06: `type i, L, body`: 0 START `{suffix s, n i, hops, warm i,
//!   cold i}`, 1 END `{id i}`, 2 RESTART `{id i, n i, hops, warm i, cold i}`. An
//!   unknown type is skipped by its length (the stream stays up). Ids are implicit:
//!   each START takes the next per-stream ordinal from 0; END and RESTART name one.
//!
//! Hop chains hold at most [`MAX_HOPS`] ids and no non-zero id twice (a repeat is a
//! loop); id 0 means "unknown hop" and may repeat.

use bytes::BufMut;

use super::coding::{emit, Decode, Encode, Framed, Reader, Writer};
use super::{DecodeError, EncodeError, Limits, Version};

/// The longest hop chain accepted or sent (moq-net's `MAX_HOPS`).
pub const MAX_HOPS: usize = 32;

/// ANNOUNCE_REQUEST: which broadcasts the subscriber wants to hear about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnounceRequest {
    /// Announce broadcasts under this path prefix; suffixes come back relative to it.
    pub prefix: String,
    /// Lite-04/05 only: skip announcements whose hop chain contains this id (0 = none).
    /// Not on the lite-06 wire: ignored when encoding for it, 0 when decoded from it.
    pub exclude_hop: u64,
}

impl Framed for AnnounceRequest {
    const WHAT: &'static str = "ANNOUNCE_REQUEST";

    fn write_body(&self, w: &mut Writer<'_>, version: Version) -> Result<(), EncodeError> {
        w.path("announce prefix", &self.prefix)?;
        if version.has_exclude_hop() {
            w.varint("exclude hop", self.exclude_hop)?;
        }
        Ok(())
    }

    fn read_body(
        r: &mut Reader<'_>,
        version: Version,
        limits: &Limits,
    ) -> Result<Self, DecodeError> {
        let prefix = r.path("announce prefix", limits)?;
        let exclude_hop = match version.has_exclude_hop() {
            true => r.varint()?,
            false => 0,
        };
        Ok(Self {
            prefix,
            exclude_hop,
        })
    }
}

/// ANNOUNCE_OK (lite-05+): the publisher's first message on an announce stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnnounceOk {
    /// The publisher's hop id. Since lite-05 the publisher leaves itself off each
    /// announcement's hop chain and the receiver adds this id. 0 is legal (anonymous).
    pub hop: u64,
    /// How many announcements of currently active broadcasts follow right away, so the
    /// receiver knows when it holds the initial set.
    pub active: u64,
}

impl Framed for AnnounceOk {
    const WHAT: &'static str = "ANNOUNCE_OK";

    fn exists_in(version: Version) -> bool {
        version.has_announce_ok()
    }

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        w.varint("announce hop", self.hop)?;
        w.varint("announce active count", self.active)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, _: &Limits) -> Result<Self, DecodeError> {
        Ok(Self {
            hop: r.varint()?,
            active: r.varint()?,
        })
    }
}

/// Route cost carried by lite-06 announcements: lower `warm` wins, `cold` breaks ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    /// Cost of pulling via this route with today's caches.
    pub warm: u64,
    /// The same path priced as if nothing were cached.
    pub cold: u64,
}

/// One announcement. Which variants exist depends on the version; encoding one in a
/// version without it is [`EncodeError::NotInVersion`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announce {
    /// Lite-04/05 status 1: the broadcast at `suffix` (relative to the request prefix)
    /// is available via `hops`.
    Active {
        /// Path relative to the requested prefix.
        suffix: String,
        /// Hop chain, publisher side first.
        hops: Vec<u64>,
    },
    /// Lite-04/05 status 0: the broadcast at `suffix` is gone.
    Ended {
        /// Path relative to the requested prefix.
        suffix: String,
        /// Hop chain as sent.
        hops: Vec<u64>,
    },
    /// Lite-05 status 2: replace the route of an announced broadcast. moq-net decodes
    /// it as `Active` (and sends a repeated `Active` instead).
    Restarted {
        /// Path relative to the requested prefix.
        suffix: String,
        /// The new hop chain.
        hops: Vec<u64>,
    },
    /// Lite-06 type 0 (ANNOUNCE_START): available; takes the next announce id.
    Start {
        /// Path relative to the requested prefix.
        suffix: String,
        /// Hop chain.
        hops: Vec<u64>,
        /// Route cost.
        cost: Cost,
    },
    /// Lite-06 type 1 (ANNOUNCE_END): the broadcast with this announce id is gone; the
    /// id is retired.
    End {
        /// Announce id from an earlier START.
        id: u64,
    },
    /// Lite-06 type 2 (ANNOUNCE_RESTART): new route for a live announce id.
    Restart {
        /// Announce id from an earlier START.
        id: u64,
        /// The new hop chain.
        hops: Vec<u64>,
        /// The new route cost.
        cost: Cost,
    },
    /// Lite-06, any other type: skipped by its length. It takes no announce id.
    Unknown {
        /// The type received.
        ty: u64,
        /// Its body, kept so that re-encoding reproduces the input.
        body: Vec<u8>,
    },
}

const START: u64 = 0;
const END: u64 = 1;
const RESTART: u64 = 2;

const STATUS_ENDED: u8 = 0;
const STATUS_ACTIVE: u8 = 1;
const STATUS_RESTART: u8 = 2;

impl Announce {
    /// "Available at `suffix` via `hops`" as `version` says it: lite-06
    /// ANNOUNCE_START (no route cost), else the active status.
    pub fn available(suffix: String, hops: Vec<u64>, version: Version) -> Self {
        match version.has_announce_id() {
            true => Announce::Start {
                suffix,
                hops,
                cost: Cost::default(),
            },
            false => Announce::Active { suffix, hops },
        }
    }

    fn not_in(what: &'static str, version: Version) -> EncodeError {
        EncodeError::NotInVersion { what, version }
    }

    /// Lite-04/05: `L, status u8, suffix s, hops`.
    fn encode_status<B: BufMut>(&self, out: &mut B, v: Version) -> Result<usize, EncodeError> {
        let (status, suffix, hops) = match self {
            Announce::Active { suffix, hops } => (STATUS_ACTIVE, suffix, hops),
            Announce::Ended { suffix, hops } => (STATUS_ENDED, suffix, hops),
            Announce::Restarted { suffix, hops } if v == Version::Lite05 => {
                (STATUS_RESTART, suffix, hops)
            }
            Announce::Restarted { .. } => return Err(Self::not_in("ANNOUNCE restart status", v)),
            _ => return Err(Self::not_in("typed ANNOUNCE", v)),
        };
        emit(out, |w| {
            w.sized(|w| {
                w.u8(status);
                w.path("announce suffix", suffix)?;
                write_hops(w, hops)
            })
        })
    }

    /// Lite-06: `type i, L, body`.
    fn encode_typed<B: BufMut>(&self, out: &mut B, v: Version) -> Result<usize, EncodeError> {
        let ty = match self {
            Announce::Start { .. } => START,
            Announce::End { .. } => END,
            Announce::Restart { .. } => RESTART,
            Announce::Unknown { ty, .. } => *ty,
            _ => return Err(Self::not_in("ANNOUNCE with status byte", v)),
        };
        emit(out, |w| {
            w.varint("announce type", ty)?;
            w.sized(|w| match self {
                Announce::Start { suffix, hops, cost } => {
                    w.path("announce suffix", suffix)?;
                    write_hops(w, hops)?;
                    write_cost(w, cost)
                }
                Announce::End { id } => w.varint("announce id", *id),
                Announce::Restart { id, hops, cost } => {
                    w.varint("announce id", *id)?;
                    write_hops(w, hops)?;
                    write_cost(w, cost)
                }
                Announce::Unknown { body, .. } => {
                    w.bytes(body);
                    Ok(())
                }
                _ => Ok(()),
            })
        })
    }
}

impl Encode for Announce {
    fn encode<B: BufMut>(&self, out: &mut B, version: Version) -> Result<usize, EncodeError> {
        match version.has_announce_id() {
            true => self.encode_typed(out, version),
            false => self.encode_status(out, version),
        }
    }
}

impl Decode for Announce {
    fn decode(buf: &[u8], version: Version, limits: &Limits) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let msg = match version.has_announce_id() {
            true => {
                let ty = r.varint()?;
                let mut body = r.sized("ANNOUNCE", limits.max_message)?;
                let msg = read_typed(ty, &mut body, limits)?;
                body.finish()?;
                msg
            }
            false => {
                let mut body = r.sized("ANNOUNCE", limits.max_message)?;
                let msg = read_status(&mut body, version, limits)?;
                body.finish()?;
                msg
            }
        };
        Ok((msg, r.consumed()))
    }
}

fn read_status(r: &mut Reader<'_>, v: Version, limits: &Limits) -> Result<Announce, DecodeError> {
    let status = r.u8()?;
    let suffix = r.path("announce suffix", limits)?;
    let hops = read_hops(r)?;
    Ok(match status {
        STATUS_ACTIVE => Announce::Active { suffix, hops },
        STATUS_ENDED => Announce::Ended { suffix, hops },
        STATUS_RESTART if v == Version::Lite05 => Announce::Restarted { suffix, hops },
        _ => {
            return Err(DecodeError::InvalidValue {
                what: "announce status",
            });
        }
    })
}

fn read_typed(ty: u64, r: &mut Reader<'_>, limits: &Limits) -> Result<Announce, DecodeError> {
    Ok(match ty {
        START => Announce::Start {
            suffix: r.path("announce suffix", limits)?,
            hops: read_hops(r)?,
            cost: read_cost(r)?,
        },
        END => Announce::End { id: r.varint()? },
        RESTART => Announce::Restart {
            id: r.varint()?,
            hops: read_hops(r)?,
            cost: read_cost(r)?,
        },
        ty => Announce::Unknown {
            ty,
            body: r.rest().to_vec(),
        },
    })
}

fn read_cost(r: &mut Reader<'_>) -> Result<Cost, DecodeError> {
    Ok(Cost {
        warm: r.varint()?,
        cold: r.varint()?,
    })
}

fn write_cost(w: &mut Writer<'_>, cost: &Cost) -> Result<(), EncodeError> {
    w.varint("warm cost", cost.warm)?;
    w.varint("cold cost", cost.cold)
}

/// `n i, hop i x n`, at most [`MAX_HOPS`], no repeated non-zero id.
fn read_hops(r: &mut Reader<'_>) -> Result<Vec<u64>, DecodeError> {
    let n = r.varint()?;
    if n > MAX_HOPS as u64 {
        return Err(DecodeError::TooLong {
            what: "hops",
            len: n,
            max: MAX_HOPS as u64,
        });
    }
    let mut hops = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let hop = r.varint()?;
        if hop != 0 && hops.contains(&hop) {
            return Err(DecodeError::Duplicate {
                what: "hop",
                id: hop,
            });
        }
        hops.push(hop);
    }
    Ok(hops)
}

fn write_hops(w: &mut Writer<'_>, hops: &[u64]) -> Result<(), EncodeError> {
    if hops.len() > MAX_HOPS {
        return Err(EncodeError::TooLong {
            what: "hops",
            len: hops.len() as u64,
            max: MAX_HOPS as u64,
        });
    }
    for (i, hop) in hops.iter().enumerate() {
        if *hop != 0 && hops.get(i + 1..).is_some_and(|rest| rest.contains(hop)) {
            return Err(EncodeError::InvalidValue {
                what: "hop chain with a repeated hop",
            });
        }
    }
    w.varint("hop count", hops.len() as u64)?;
    for hop in hops {
        w.varint("hop", *hop)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn legacy(v: Version) -> Vec<Announce> {
        let mut all = vec![
            Announce::Active {
                suffix: "room/cam".into(),
                hops: vec![7, 0, 0, 1 << 50],
            },
            Announce::Ended {
                suffix: String::new(),
                hops: vec![],
            },
        ];
        if v == Version::Lite05 {
            all.push(Announce::Restarted {
                suffix: "x".into(),
                hops: vec![3],
            });
        }
        all
    }

    fn typed() -> Vec<Announce> {
        let cost = Cost { warm: 12, cold: 30 };
        vec![
            Announce::Start {
                suffix: "room/cam".into(),
                hops: vec![7, 9],
                cost,
            },
            Announce::End { id: 300 },
            Announce::Restart {
                id: 0,
                hops: vec![],
                cost,
            },
            Announce::Unknown {
                ty: 9,
                body: vec![1, 2, 3],
            },
        ]
    }

    #[test]
    fn announce_request_round_trips_in_every_version() {
        for v in Version::ALL {
            let exclude_hop = if v.has_exclude_hop() { 42 } else { 0 };
            round_trip(
                &AnnounceRequest {
                    prefix: "room/".into(),
                    exclude_hop,
                },
                v,
            );
            round_trip(&AnnounceRequest::default(), v);
        }
    }

    #[test]
    fn announce_request_drops_exclude_hop_on_lite06() {
        let req = AnnounceRequest {
            prefix: "a".into(),
            exclude_hop: 42,
        };
        assert_eq!(req.to_vec(Version::Lite06).unwrap(), [2, 1, b'a']);
        assert_eq!(req.to_vec(Version::Lite05).unwrap(), [3, 1, b'a', 42]);
    }

    #[test]
    fn announce_ok_round_trips_where_it_exists_and_not_in_lite04() {
        for v in [Version::Lite05, Version::Lite06] {
            round_trip(&AnnounceOk { hop: 0, active: 0 }, v);
            round_trip(
                &AnnounceOk {
                    hop: 1 << 53,
                    active: 3,
                },
                v,
            );
        }
        assert!(matches!(
            AnnounceOk::default().to_vec(Version::Lite04),
            Err(EncodeError::NotInVersion { .. })
        ));
        assert!(matches!(
            decode_err::<AnnounceOk>(&[2, 0, 0], Version::Lite04),
            DecodeError::NotInVersion { .. }
        ));
    }

    #[test]
    fn announce_round_trips_in_every_version() {
        for v in [Version::Lite04, Version::Lite05] {
            for msg in legacy(v) {
                round_trip(&msg, v);
            }
        }
        for msg in typed() {
            round_trip(&msg, Version::Lite06);
        }
    }

    #[test]
    fn announce_forms_are_refused_outside_their_versions() {
        for v in [Version::Lite04, Version::Lite05] {
            for msg in typed() {
                assert!(matches!(
                    msg.to_vec(v),
                    Err(EncodeError::NotInVersion { .. })
                ));
            }
        }
        for msg in legacy(Version::Lite05) {
            assert!(matches!(
                msg.to_vec(Version::Lite06),
                Err(EncodeError::NotInVersion { .. })
            ));
        }
        let restart = Announce::Restarted {
            suffix: "x".into(),
            hops: vec![],
        };
        assert!(restart.to_vec(Version::Lite04).is_err());
    }

    #[test]
    fn announce_status_2_is_a_restart_on_lite05_only() {
        let wire = sized(&[2, 1, b'x', 0]);
        let (msg, _) = Announce::decode(&wire, Version::Lite05, &Limits::default()).unwrap();
        assert!(matches!(msg, Announce::Restarted { .. }));
        assert_eq!(
            decode_err::<Announce>(&wire, Version::Lite04),
            DecodeError::InvalidValue {
                what: "announce status"
            }
        );
        assert!(matches!(
            decode_err::<Announce>(&sized(&[3, 0, 0]), Version::Lite05),
            DecodeError::InvalidValue { .. }
        ));
    }

    #[test]
    fn announce_hop_chains_are_bounded_and_loop_free() {
        for v in Version::ALL {
            let mk = |hops: Vec<u64>| Announce::available(String::new(), hops, v);
            round_trip(&mk(vec![1]), v);
            round_trip(&mk((1..=32).collect()), v);
            round_trip(&mk(vec![0; 32]), v);
            assert!(matches!(
                mk((1..=33).collect()).to_vec(v),
                Err(EncodeError::TooLong { .. })
            ));
            assert!(matches!(
                mk(vec![5, 6, 5]).to_vec(v),
                Err(EncodeError::InvalidValue { .. })
            ));

            // Hand-built: 33 hops, and a repeated hop.
            let prefix: &[u8] = if v == Version::Lite06 { &[] } else { &[1] };
            let ty: &[u8] = if v == Version::Lite06 { &[0] } else { &[] };
            let mut too_many = cat(&[prefix, &[0, 33]]);
            too_many.extend(std::iter::repeat_n(1u8, 33));
            assert!(matches!(
                decode_err::<Announce>(&cat(&[ty, &sized(&too_many)]), v),
                DecodeError::TooLong { what: "hops", .. }
            ));
            let mut looped = cat(&[prefix, &[0, 3, 5, 6, 5]]);
            if v == Version::Lite06 {
                looped.extend([0, 0]);
            }
            assert_eq!(
                decode_err::<Announce>(&cat(&[ty, &sized(&looped)]), v),
                DecodeError::Duplicate { what: "hop", id: 5 }
            );
        }
    }

    #[test]
    fn announce_malformed_bodies_are_rejected() {
        let v6 = Version::Lite06;
        // END with a byte after the id.
        assert!(matches!(
            decode_err::<Announce>(&[1, 2, 5, 5], v6),
            DecodeError::TrailingBytes { extra: 1, .. }
        ));
        // START whose body stops before the costs.
        assert!(matches!(
            decode_err::<Announce>(&[0, 2, 0, 0], v6),
            DecodeError::Truncated { .. }
        ));
        // Invalid UTF-8 suffix.
        assert!(matches!(
            decode_err::<Announce>(&sized(&[1, 1, 0xff, 0]), Version::Lite04),
            DecodeError::InvalidUtf8 { .. }
        ));
        // Body length over the limit, with only the prefix present.
        let huge = cat(&[&[0], &varint(1 << 40)]);
        assert!(matches!(
            decode_err::<Announce>(&huge, v6),
            DecodeError::TooLong { .. }
        ));
        // Suffix over max_path.
        let mut body = vec![1];
        body.extend(varint(Limits::default().max_path as u64 + 1));
        assert!(matches!(
            decode_err::<Announce>(&sized(&body), Version::Lite05),
            DecodeError::TooLong {
                what: "announce suffix",
                ..
            }
        ));
        // Request with a trailing byte.
        assert!(matches!(
            decode_err::<AnnounceRequest>(&[2, 0, 0], v6),
            DecodeError::TrailingBytes { .. }
        ));
        // ANNOUNCE_OK one field short, and one byte long.
        assert!(matches!(
            decode_err::<AnnounceOk>(&[1, 0], Version::Lite05),
            DecodeError::Truncated { .. }
        ));
        assert!(matches!(
            decode_err::<AnnounceOk>(&[3, 0, 0, 0], v6),
            DecodeError::TrailingBytes { extra: 1, .. }
        ));
        // Request missing its exclude_hop on lite-05.
        assert!(matches!(
            decode_err::<AnnounceRequest>(&[1, 0], Version::Lite05),
            DecodeError::Truncated { .. }
        ));
    }
}
