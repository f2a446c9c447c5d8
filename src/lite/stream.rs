//! The type varint that opens every stream.
//!
//! moq-net also defines bidi type 0 (`Session`, the lite-01/02 setup stream); a
//! lite-04+ session rejects it like any unknown type, so here it simply is unknown.
//! The type values do not depend on the version, but which streams a session may open
//! does: see [`BidiType::exists_in`] and [`UniType::exists_in`]. A stream of unknown
//! or disallowed type is reset; the session stays up.

use bytes::BufMut;

use super::coding::{emit, Decode, Encode, Reader};
use super::{DecodeError, EncodeError, Limits, Version};

/// The first varint of a bidirectional stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BidiType {
    /// 1: ANNOUNCE_REQUEST, answered by announcements.
    Announce,
    /// 2: SUBSCRIBE, answered by subscribe replies.
    Subscribe,
    /// 3: FETCH, answered by bare frames (lite-05+ sessions only).
    Fetch,
    /// 4: PROBE reports.
    Probe,
    /// 5: GOAWAY.
    Goaway,
    /// 6: TRACK, answered by TRACK_INFO (lite-05+).
    Track,
}

impl BidiType {
    /// The wire value.
    pub const fn code(self) -> u64 {
        match self {
            BidiType::Announce => 1,
            BidiType::Subscribe => 2,
            BidiType::Fetch => 3,
            BidiType::Probe => 4,
            BidiType::Goaway => 5,
            BidiType::Track => 6,
        }
    }

    /// The type for a wire value, if known.
    pub const fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            1 => BidiType::Announce,
            2 => BidiType::Subscribe,
            3 => BidiType::Fetch,
            4 => BidiType::Probe,
            5 => BidiType::Goaway,
            6 => BidiType::Track,
            _ => return None,
        })
    }

    /// Whether a session of `version` accepts this stream. moq-net's publisher
    /// refuses FETCH and TRACK streams before lite-05 (`UnexpectedStream`).
    pub const fn exists_in(self, version: Version) -> bool {
        match self {
            BidiType::Fetch | BidiType::Track => version.has_track_stream(),
            _ => true,
        }
    }
}

/// The first varint of a unidirectional stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UniType {
    /// 0: a GROUP header, then frames to FIN.
    Group,
    /// 1: one SETUP, then FIN (lite-05+).
    Setup,
}

impl UniType {
    /// The wire value.
    pub const fn code(self) -> u64 {
        match self {
            UniType::Group => 0,
            UniType::Setup => 1,
        }
    }

    /// The type for a wire value, if known.
    pub const fn from_code(code: u64) -> Option<Self> {
        match code {
            0 => Some(UniType::Group),
            1 => Some(UniType::Setup),
            _ => None,
        }
    }

    /// Whether a session of `version` accepts this stream (SETUP is lite-05+; moq-net
    /// aborts a SETUP stream on older versions).
    pub const fn exists_in(self, version: Version) -> bool {
        match self {
            UniType::Group => true,
            UniType::Setup => version.has_setup(),
        }
    }
}

/// Decodes the type whatever the version; gate with `exists_in`. Unknown values are
/// [`DecodeError::UnknownType`].
impl Decode for BidiType {
    fn decode(buf: &[u8], _: Version, _: &Limits) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let ty = r.varint()?;
        let t = BidiType::from_code(ty).ok_or(DecodeError::UnknownType {
            what: "bidirectional stream",
            ty,
        })?;
        Ok((t, r.consumed()))
    }
}

impl Encode for BidiType {
    fn encode<B: BufMut>(&self, out: &mut B, _: Version) -> Result<usize, EncodeError> {
        emit(out, |w| w.varint("stream type", self.code()))
    }
}

/// Decodes the type whatever the version; gate with `exists_in`. Unknown values are
/// [`DecodeError::UnknownType`].
impl Decode for UniType {
    fn decode(buf: &[u8], _: Version, _: &Limits) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let ty = r.varint()?;
        let t = UniType::from_code(ty).ok_or(DecodeError::UnknownType {
            what: "unidirectional stream",
            ty,
        })?;
        Ok((t, r.consumed()))
    }
}

impl Encode for UniType {
    fn encode<B: BufMut>(&self, out: &mut B, _: Version) -> Result<usize, EncodeError> {
        emit(out, |w| w.varint("stream type", self.code()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    const BIDI: [BidiType; 6] = [
        BidiType::Announce,
        BidiType::Subscribe,
        BidiType::Fetch,
        BidiType::Probe,
        BidiType::Goaway,
        BidiType::Track,
    ];

    #[test]
    fn stream_types_round_trip_in_every_version() {
        for v in Version::ALL {
            for t in BIDI {
                round_trip(&t, v);
            }
            for t in [UniType::Group, UniType::Setup] {
                round_trip(&t, v);
            }
        }
    }

    #[test]
    fn stream_type_codes_match_protocol() {
        assert_eq!(BIDI.map(BidiType::code), [1, 2, 3, 4, 5, 6]);
        assert_eq!(UniType::Group.code(), 0);
        assert_eq!(UniType::Setup.code(), 1);
    }

    #[test]
    fn unknown_stream_types_are_reported_with_their_value() {
        for v in Version::ALL {
            for ty in [0u64, 7, 63, 1000] {
                let wire = varint(ty);
                assert_eq!(
                    BidiType::decode(&wire, v, &Limits::default()),
                    Err(DecodeError::UnknownType {
                        what: "bidirectional stream",
                        ty
                    })
                );
            }
            let wire = [2];
            assert!(matches!(
                UniType::decode(&wire, v, &Limits::default()),
                Err(DecodeError::UnknownType { ty: 2, .. })
            ));
        }
    }

    #[test]
    fn stream_type_decoders_return_short_on_empty_or_split_input() {
        for v in Version::ALL {
            assert_eq!(
                BidiType::decode(&[], v, &Limits::default()),
                Err(DecodeError::Short)
            );
            assert_eq!(
                UniType::decode(&[0x40], v, &Limits::default()),
                Err(DecodeError::Short)
            );
        }
    }

    #[test]
    fn track_fetch_and_setup_streams_need_lite05() {
        assert!(!BidiType::Track.exists_in(Version::Lite04));
        assert!(!BidiType::Fetch.exists_in(Version::Lite04));
        assert!(!UniType::Setup.exists_in(Version::Lite04));
        for v in [Version::Lite05, Version::Lite06] {
            assert!(BIDI.iter().all(|t| t.exists_in(v)));
            assert!(UniType::Setup.exists_in(v));
        }
    }
}
