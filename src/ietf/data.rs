//! Data streams and datagrams of draft 14 (section 10): the subgroup stream header,
//! the objects on it, the fetch stream header and its objects, and object
//! datagrams.
//!
//! Only headers are decoded. Payload bytes are never copied: a decoder returns the
//! payload's length (stream) or its offset (datagram), and the caller hands those
//! bytes to the frame model as they lie in its receive buffer. Extension headers
//! are kept as the raw bytes they arrived in, so a relay forwards them untouched.

use bytes::BufMut;

use crate::lite::coding::{emit, Reader, Writer};
use crate::lite::{DecodeError, EncodeError, Limits};

use super::Version;

/// Uni stream type of a FETCH response (draft 14 section 10.4.4).
pub const FETCH_HEADER_TYPE: u64 = 0x05;

/// Object Status (draft 14 section 10.2.1.1), sent instead of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectStatus {
    /// 0x0: an empty object.
    Normal,
    /// 0x1: the object does not exist.
    DoesNotExist,
    /// 0x3: no object in this group has a larger ID.
    EndOfGroup,
    /// 0x4: no object in this track has a larger location.
    EndOfTrack,
}

impl ObjectStatus {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.varint()? {
            0x0 => Ok(ObjectStatus::Normal),
            0x1 => Ok(ObjectStatus::DoesNotExist),
            0x3 => Ok(ObjectStatus::EndOfGroup),
            0x4 => Ok(ObjectStatus::EndOfTrack),
            _ => Err(DecodeError::InvalidValue {
                what: "object status",
            }),
        }
    }

    pub(crate) fn code(self) -> u64 {
        match self {
            ObjectStatus::Normal => 0x0,
            ObjectStatus::DoesNotExist => 0x1,
            ObjectStatus::EndOfGroup => 0x3,
            ObjectStatus::EndOfTrack => 0x4,
        }
    }
}

/// How a subgroup header names its Subgroup ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubgroupId {
    /// No field: the Subgroup ID is 0.
    Zero,
    /// No field: the Subgroup ID is the first object's ID.
    FirstObject,
    /// An explicit Subgroup ID field.
    Explicit(u64),
}

/// SUBGROUP_HEADER, stream types 0x10..=0x15 and 0x18..=0x1D. The type's bits:
/// 0x01 objects carry extension headers, 0x02 Subgroup ID is the first object's
/// ID, 0x04 explicit Subgroup ID field, 0x08 this subgroup ends its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubgroupHeader {
    /// The subscription's track alias.
    pub track_alias: u64,
    /// Group ID.
    pub group: u64,
    /// Subgroup ID, as the type and field name it.
    pub subgroup: SubgroupId,
    /// Publisher Priority (lower is more urgent).
    pub publisher_priority: u8,
    /// Every object on the stream has an Extension Headers Length field.
    pub extensions: bool,
    /// The stream's FIN ends the group.
    pub end_of_group: bool,
}

impl SubgroupHeader {
    /// The stream type this header is sent with.
    pub fn stream_type(&self) -> u64 {
        let mut ty = 0x10;
        if self.extensions {
            ty |= 0x01;
        }
        match self.subgroup {
            SubgroupId::Zero => {}
            SubgroupId::FirstObject => ty |= 0x02,
            SubgroupId::Explicit(_) => ty |= 0x04,
        }
        if self.end_of_group {
            ty |= 0x08;
        }
        ty
    }

    /// Whether `ty` opens a subgroup stream.
    pub fn is_subgroup_type(ty: u64) -> bool {
        (0x10..=0x1d).contains(&ty) && ty & 0x06 != 0x06
    }
}

impl super::Decode for SubgroupHeader {
    fn decode(buf: &[u8], version: Version, _: &Limits) -> Result<(Self, usize), DecodeError> {
        super::coding::draft14_only(version)?;
        let mut r = Reader::new(buf);
        let ty = r.varint()?;
        if !Self::is_subgroup_type(ty) {
            return Err(DecodeError::UnknownType {
                what: "subgroup stream",
                ty,
            });
        }
        let track_alias = r.varint()?;
        let group = r.varint()?;
        let subgroup = match ty & 0x06 {
            0x02 => SubgroupId::FirstObject,
            0x04 => SubgroupId::Explicit(r.varint()?),
            _ => SubgroupId::Zero,
        };
        let publisher_priority = r.u8()?;
        let header = SubgroupHeader {
            track_alias,
            group,
            subgroup,
            publisher_priority,
            extensions: ty & 0x01 != 0,
            end_of_group: ty & 0x08 != 0,
        };
        Ok((header, r.consumed()))
    }
}

impl super::Encode for SubgroupHeader {
    fn encode<B: BufMut>(&self, out: &mut B, version: Version) -> Result<usize, EncodeError> {
        super::coding::draft14_only_encode(version)?;
        emit(out, |w| {
            w.varint("stream type", self.stream_type())?;
            w.varint("track alias", self.track_alias)?;
            w.varint("group", self.group)?;
            if let SubgroupId::Explicit(id) = self.subgroup {
                w.varint("subgroup", id)?;
            }
            w.u8(self.publisher_priority);
            Ok(())
        })
    }
}

/// Read `Extension Headers Length (i)` and the bytes, refusing more than
/// `limits.max_message` before they arrive.
fn read_extensions(r: &mut Reader<'_>, limits: &Limits) -> Result<Vec<u8>, DecodeError> {
    let len = r.length("extension headers", limits.max_message)?;
    Ok(r.take(len)?.to_vec())
}

fn write_extensions(w: &mut Writer<'_>, ext: &[u8]) -> Result<(), EncodeError> {
    w.varint("extension headers", ext.len() as u64)?;
    w.bytes(ext);
    Ok(())
}

/// Payload length then, for an empty payload, the status.
fn read_payload(
    r: &mut Reader<'_>,
    limits: &Limits,
) -> Result<(u64, Option<ObjectStatus>), DecodeError> {
    let len = r.varint()?;
    if len > limits.max_frame {
        return Err(DecodeError::TooLong {
            what: "object payload",
            len,
            max: limits.max_frame,
        });
    }
    let status = match len {
        0 => Some(ObjectStatus::read(r)?),
        _ => None,
    };
    Ok((len, status))
}

fn write_payload(
    w: &mut Writer<'_>,
    len: u64,
    status: Option<ObjectStatus>,
) -> Result<(), EncodeError> {
    w.varint("payload length", len)?;
    match (len, status) {
        (0, Some(status)) => w.varint("object status", status.code()),
        (0, None) | (1.., Some(_)) => Err(EncodeError::InvalidValue {
            what: "a status goes with an empty payload, and only there",
        }),
        (1.., None) => Ok(()),
    }
}

/// One object's header on a subgroup stream; `payload_len` payload bytes follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubgroupObject {
    /// Object ID minus (previous Object ID + 1); the first object's ID itself.
    /// moq-net 0.3.18 sends this delta on draft 14 (see `docs/IETF.md`).
    pub object_id_delta: u64,
    /// Raw extension headers; `Some` exactly when the stream type says objects
    /// carry them (possibly empty).
    pub extensions: Option<Vec<u8>>,
    /// Payload bytes that follow this header.
    pub payload_len: u64,
    /// The status, present exactly when the payload is empty.
    pub status: Option<ObjectStatus>,
}

impl SubgroupObject {
    /// Decode an object header on a stream whose header had `extensions` set or not.
    /// Returns the header and the bytes it took; the payload is not read.
    pub fn decode(
        buf: &[u8],
        extensions: bool,
        limits: &Limits,
    ) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let object_id_delta = r.varint()?;
        let extensions = match extensions {
            true => Some(read_extensions(&mut r, limits)?),
            false => None,
        };
        let (payload_len, status) = read_payload(&mut r, limits)?;
        let object = SubgroupObject {
            object_id_delta,
            extensions,
            payload_len,
            status,
        };
        Ok((object, r.consumed()))
    }

    /// Encode the header (not the payload).
    pub fn encode<B: BufMut>(&self, out: &mut B) -> Result<usize, EncodeError> {
        emit(out, |w| {
            w.varint("object id delta", self.object_id_delta)?;
            if let Some(ext) = &self.extensions {
                write_extensions(w, ext)?;
            }
            write_payload(w, self.payload_len, self.status)
        })
    }
}

/// FETCH_HEADER: a fetch response stream's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchHeader {
    /// The FETCH this stream answers.
    pub request_id: u64,
}

impl super::Decode for FetchHeader {
    fn decode(buf: &[u8], version: Version, _: &Limits) -> Result<(Self, usize), DecodeError> {
        super::coding::draft14_only(version)?;
        let mut r = Reader::new(buf);
        let ty = r.varint()?;
        if ty != FETCH_HEADER_TYPE {
            return Err(DecodeError::UnknownType {
                what: "fetch stream",
                ty,
            });
        }
        let request_id = r.varint()?;
        Ok((FetchHeader { request_id }, r.consumed()))
    }
}

impl super::Encode for FetchHeader {
    fn encode<B: BufMut>(&self, out: &mut B, version: Version) -> Result<usize, EncodeError> {
        super::coding::draft14_only_encode(version)?;
        emit(out, |w| {
            w.varint("stream type", FETCH_HEADER_TYPE)?;
            w.varint("request id", self.request_id)
        })
    }
}

/// One object's header on a fetch stream; `payload_len` payload bytes follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchObject {
    /// Group ID.
    pub group: u64,
    /// Subgroup ID.
    pub subgroup: u64,
    /// Object ID.
    pub object: u64,
    /// Publisher Priority.
    pub publisher_priority: u8,
    /// Raw extension headers (always present on fetch streams, possibly empty).
    pub extensions: Vec<u8>,
    /// Payload bytes that follow.
    pub payload_len: u64,
    /// The status, present exactly when the payload is empty.
    pub status: Option<ObjectStatus>,
}

impl super::Decode for FetchObject {
    fn decode(buf: &[u8], version: Version, limits: &Limits) -> Result<(Self, usize), DecodeError> {
        super::coding::draft14_only(version)?;
        let mut r = Reader::new(buf);
        let group = r.varint()?;
        let subgroup = r.varint()?;
        let object = r.varint()?;
        let publisher_priority = r.u8()?;
        let extensions = read_extensions(&mut r, limits)?;
        let (payload_len, status) = read_payload(&mut r, limits)?;
        let object = FetchObject {
            group,
            subgroup,
            object,
            publisher_priority,
            extensions,
            payload_len,
            status,
        };
        Ok((object, r.consumed()))
    }
}

impl super::Encode for FetchObject {
    fn encode<B: BufMut>(&self, out: &mut B, version: Version) -> Result<usize, EncodeError> {
        super::coding::draft14_only_encode(version)?;
        emit(out, |w| {
            w.varint("group", self.group)?;
            w.varint("subgroup", self.subgroup)?;
            w.varint("object", self.object)?;
            w.u8(self.publisher_priority);
            write_extensions(w, &self.extensions)?;
            write_payload(w, self.payload_len, self.status)
        })
    }
}

/// An OBJECT_DATAGRAM (types 0x00..=0x07) or OBJECT_DATAGRAM_STATUS (0x20, 0x21)
/// header. Type bits: 0x01 extensions present, 0x02 end of group (payload
/// datagrams only), 0x04 Object ID absent (it is 0; payload datagrams only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatagramHeader {
    /// The subscription's track alias.
    pub track_alias: u64,
    /// Group ID.
    pub group: u64,
    /// Object ID; `None` when the type omits it (the object is 0).
    pub object: Option<u64>,
    /// Publisher Priority.
    pub publisher_priority: u8,
    /// Raw extension headers, never empty when present (moq-net refuses empty).
    pub extensions: Option<Vec<u8>>,
    /// This object ends its group.
    pub end_of_group: bool,
    /// `Some` for a status datagram, which has no payload.
    pub status: Option<ObjectStatus>,
}

impl DatagramHeader {
    fn datagram_type(&self) -> Result<u64, EncodeError> {
        let mut ty = u64::from(self.extensions.is_some());
        match self.status {
            Some(_) if self.end_of_group || self.object.is_none() => {
                return Err(EncodeError::InvalidValue {
                    what: "a status datagram has an Object ID and no end-of-group bit",
                })
            }
            Some(_) => ty |= 0x20,
            None => {
                if self.end_of_group {
                    ty |= 0x02;
                }
                if self.object.is_none() {
                    ty |= 0x04;
                }
            }
        }
        Ok(ty)
    }

    /// Decode a whole datagram's header. Returns it and the payload's offset: the
    /// payload is `datagram[offset..]` (empty for a status datagram).
    pub fn decode(datagram: &[u8], limits: &Limits) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::bounded(datagram, "datagram");
        let ty = r.varint()?;
        let status_type = matches!(ty, 0x20 | 0x21);
        if ty > 0x07 && !status_type {
            return Err(DecodeError::UnknownType {
                what: "datagram",
                ty,
            });
        }
        let track_alias = r.varint()?;
        let group = r.varint()?;
        let object = match ty & 0x04 != 0 && !status_type {
            true => None,
            false => Some(r.varint()?),
        };
        let publisher_priority = r.u8()?;
        let extensions = match ty & 0x01 != 0 {
            true => {
                let ext = read_extensions(&mut r, limits)?;
                if ext.is_empty() {
                    return Err(DecodeError::InvalidValue {
                        what: "empty datagram extensions",
                    });
                }
                Some(ext)
            }
            false => None,
        };
        let status = match status_type {
            true => {
                let status = ObjectStatus::read(&mut r)?;
                r.finish()?;
                Some(status)
            }
            false => None,
        };
        let header = DatagramHeader {
            track_alias,
            group,
            object,
            publisher_priority,
            extensions,
            end_of_group: !status_type && ty & 0x02 != 0,
            status,
        };
        Ok((header, r.consumed()))
    }

    /// Encode the header; the caller appends the payload.
    pub fn encode<B: BufMut>(&self, out: &mut B) -> Result<usize, EncodeError> {
        let ty = self.datagram_type()?;
        if matches!(&self.extensions, Some(ext) if ext.is_empty()) {
            return Err(EncodeError::InvalidValue {
                what: "empty datagram extensions",
            });
        }
        emit(out, |w| {
            w.varint("datagram type", ty)?;
            w.varint("track alias", self.track_alias)?;
            w.varint("group", self.group)?;
            if let Some(object) = self.object {
                w.varint("object", object)?;
            }
            w.u8(self.publisher_priority);
            if let Some(ext) = &self.extensions {
                write_extensions(w, ext)?;
            }
            if let Some(status) = self.status {
                w.varint("object status", status.code())?;
            }
            Ok(())
        })
    }
}
