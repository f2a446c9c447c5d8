//! The draft-14 wire primitives on top of the moq-lite cursor, and the two traits
//! every IETF message implements.
//!
//! Notation (draft 14 section 1.4): `i` QUIC varint; `8` one byte; `16` a 16-bit
//! big-endian integer; a Track Namespace is a tuple (`i` count, then `i`-length
//! fields); Parameters are `i` count then Key-Value-Pairs, where an even key takes
//! one `i` value and an odd key a length-prefixed byte string.

use bytes::BufMut;

use crate::lite::coding::{emit, Reader, Writer};
use crate::lite::{DecodeError, EncodeError, Limits};

use super::Version;

/// Most fields in a Track Namespace tuple (draft 14 section 2.4.1).
pub const MAX_NAMESPACE_FIELDS: usize = 32;

/// Most Key-Value-Pairs in one parameter list. The draft sets no number; moq-net
/// refuses more than 64, and so does qumo.
pub const MAX_PARAMETERS: usize = 64;

/// Longest byte value of one Key-Value-Pair (draft 14 section 1.4.2: 2^16-1).
pub const MAX_PARAMETER_VALUE: usize = (1 << 16) - 1;

/// Decode an IETF message from the front of a buffer.
pub trait Decode: Sized {
    /// Decode one message from the front of `buf`, returning it and the bytes used.
    ///
    /// Never consumes: on [`DecodeError::Short`] call again with more bytes. Never
    /// panics and allocates no more than `limits` allow, whatever `buf` holds.
    fn decode(buf: &[u8], version: Version, limits: &Limits) -> Result<(Self, usize), DecodeError>;
}

/// Encode an IETF message.
pub trait Encode {
    /// Append the message to `out`, returning the bytes written; nothing on error.
    fn encode<B: BufMut>(&self, out: &mut B, version: Version) -> Result<usize, EncodeError>;

    /// Encode into a fresh vector.
    fn to_vec(&self, version: Version) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out, version)?;
        Ok(out)
    }
}

/// A control message: `Type (i), Length (16), body`. Implementing this gives
/// [`Decode`] (which checks the type) and [`Encode`].
pub(crate) trait Control: Sized {
    /// The message type on the wire.
    const TYPE: u64;
    /// Name used in errors.
    const WHAT: &'static str;

    /// Write the body.
    fn write_body(&self, w: &mut Writer<'_>, version: Version) -> Result<(), EncodeError>;

    /// Read the body from a reader bounded to exactly Length bytes.
    fn read_body(
        r: &mut Reader<'_>,
        version: Version,
        limits: &Limits,
    ) -> Result<Self, DecodeError>;
}

/// The types in this module speak draft 14 only; draft 22 has its own codec
/// ([`super::draft22`]) because even its varints differ.
pub(crate) fn draft14_only(version: Version) -> Result<(), DecodeError> {
    match version {
        Version::Draft14 => Ok(()),
        Version::Draft22 => Err(DecodeError::InvalidValue {
            what: "draft-14 layout on draft 22",
        }),
    }
}

/// [`draft14_only`] for encoders.
pub(crate) fn draft14_only_encode(version: Version) -> Result<(), EncodeError> {
    draft14_only(version).map_err(|_| EncodeError::InvalidValue {
        what: "draft-14 layout on draft 22",
    })
}

impl<T: Control> Decode for T {
    fn decode(buf: &[u8], version: Version, limits: &Limits) -> Result<(Self, usize), DecodeError> {
        draft14_only(version)?;
        let mut r = Reader::new(buf);
        let ty = r.varint()?;
        if ty != T::TYPE {
            return Err(DecodeError::UnknownType { what: T::WHAT, ty });
        }
        let mut body = framed_body(&mut r, T::WHAT, limits)?;
        let msg = T::read_body(&mut body, version, limits)?;
        body.finish()?;
        Ok((msg, r.consumed()))
    }
}

impl<T: Control> Encode for T {
    fn encode<B: BufMut>(&self, out: &mut B, version: Version) -> Result<usize, EncodeError> {
        draft14_only_encode(version)?;
        emit(out, |w| {
            w.varint("message type", T::TYPE)?;
            w.sized_u16(T::WHAT, |w| self.write_body(w, version))
        })
    }
}

/// Read `Length (16)` and return a reader over exactly that many bytes, refusing a
/// length above `limits.max_message` before its bytes are needed.
pub(crate) fn framed_body<'a>(
    r: &mut Reader<'a>,
    what: &'static str,
    limits: &Limits,
) -> Result<Reader<'a>, DecodeError> {
    let len = r.take(2)?;
    let len = usize::from(u16::from_be_bytes([
        len.first().copied().unwrap_or_default(),
        len.get(1).copied().unwrap_or_default(),
    ]));
    if len > limits.max_message {
        return Err(DecodeError::TooLong {
            what,
            len: len as u64,
            max: limits.max_message as u64,
        });
    }
    Ok(Reader::bounded(r.take(len)?, what))
}

/// A one-byte field.
pub(crate) fn read_u8(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    r.u8()
}

/// A one-byte boolean: 0 or 1, anything else is malformed (draft 14 section 1.4).
pub(crate) fn read_bool(r: &mut Reader<'_>, what: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidValue { what }),
    }
}

/// A Track Namespace tuple, bounded to [`MAX_NAMESPACE_FIELDS`] fields and
/// `limits.max_path` bytes in all.
///
/// Fields are read as UTF-8, as moq-net reads them; the draft allows any bytes.
pub(crate) fn read_namespace(
    r: &mut Reader<'_>,
    limits: &Limits,
) -> Result<Vec<String>, DecodeError> {
    let count = r.varint()?;
    if count > MAX_NAMESPACE_FIELDS as u64 {
        return Err(DecodeError::TooLong {
            what: "namespace fields",
            len: count,
            max: MAX_NAMESPACE_FIELDS as u64,
        });
    }
    let mut fields = Vec::with_capacity(count as usize);
    let mut total = 0usize;
    for _ in 0..count {
        let left = limits.max_path.saturating_sub(total);
        let field = r.string("namespace", left)?;
        total += field.len();
        fields.push(field);
    }
    Ok(fields)
}

/// Write a Track Namespace tuple.
pub(crate) fn write_namespace(w: &mut Writer<'_>, fields: &[String]) -> Result<(), EncodeError> {
    if fields.len() > MAX_NAMESPACE_FIELDS {
        return Err(EncodeError::TooLong {
            what: "namespace fields",
            len: fields.len() as u64,
            max: MAX_NAMESPACE_FIELDS as u64,
        });
    }
    w.varint("namespace fields", fields.len() as u64)?;
    for field in fields {
        w.string("namespace", field)?;
    }
    Ok(())
}

/// The value of one Key-Value-Pair; its kind follows the key's parity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParameterValue {
    /// An even key's varint.
    Varint(u64),
    /// An odd key's byte string (at most [`MAX_PARAMETER_VALUE`] bytes).
    Bytes(Vec<u8>),
}

/// A parameter list, kept in wire order with unknown keys and repeats, so that a
/// relay forwards what it does not understand unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parameters(pub Vec<(u64, ParameterValue)>);

impl Parameters {
    /// The first varint under `key`.
    pub fn varint(&self, key: u64) -> Option<u64> {
        self.0.iter().find_map(|(k, v)| match v {
            ParameterValue::Varint(n) if *k == key => Some(*n),
            _ => None,
        })
    }

    /// The first byte string under `key`.
    pub fn bytes(&self, key: u64) -> Option<&[u8]> {
        self.0.iter().find_map(|(k, v)| match v {
            ParameterValue::Bytes(b) if *k == key => Some(b.as_slice()),
            _ => None,
        })
    }

    /// Read `Number of Parameters (i)` then that many Key-Value-Pairs.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = r.varint()?;
        if count > MAX_PARAMETERS as u64 {
            return Err(DecodeError::TooLong {
                what: "parameters",
                len: count,
                max: MAX_PARAMETERS as u64,
            });
        }
        let mut list = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let key = r.varint()?;
            let value = if key % 2 == 0 {
                ParameterValue::Varint(r.varint()?)
            } else {
                let len = r.length("parameter value", MAX_PARAMETER_VALUE)?;
                ParameterValue::Bytes(r.take(len)?.to_vec())
            };
            list.push((key, value));
        }
        Ok(Parameters(list))
    }

    /// Write the count and the pairs in order.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        if self.0.len() > MAX_PARAMETERS {
            return Err(EncodeError::TooLong {
                what: "parameters",
                len: self.0.len() as u64,
                max: MAX_PARAMETERS as u64,
            });
        }
        w.varint("parameters", self.0.len() as u64)?;
        for (key, value) in &self.0 {
            w.varint("parameter key", *key)?;
            match value {
                ParameterValue::Varint(n) if key % 2 == 0 => w.varint("parameter value", *n)?,
                ParameterValue::Bytes(b) if key % 2 == 1 => {
                    if b.len() > MAX_PARAMETER_VALUE {
                        return Err(EncodeError::TooLong {
                            what: "parameter value",
                            len: b.len() as u64,
                            max: MAX_PARAMETER_VALUE as u64,
                        });
                    }
                    w.varint("parameter value", b.len() as u64)?;
                    w.bytes(b);
                }
                _ => {
                    return Err(EncodeError::InvalidValue {
                        what: "parameter kind does not match its key's parity",
                    })
                }
            }
        }
        Ok(())
    }
}

/// A (Group, Object) pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Group ID.
    pub group: u64,
    /// Object ID within the group.
    pub object: u64,
}

impl Location {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Location {
            group: r.varint()?,
            object: r.varint()?,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.varint("group", self.group)?;
        w.varint("object", self.object)
    }
}

/// Group Order (draft 14 section 9.7): which groups a publisher sends first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupOrder {
    /// 0x0: the publisher's choice (only valid in requests).
    Publisher,
    /// 0x1: oldest first.
    Ascending,
    /// 0x2: newest first.
    Descending,
}

impl GroupOrder {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(GroupOrder::Publisher),
            1 => Ok(GroupOrder::Ascending),
            2 => Ok(GroupOrder::Descending),
            _ => Err(DecodeError::InvalidValue {
                what: "group order",
            }),
        }
    }

    pub(crate) fn byte(self) -> u8 {
        match self {
            GroupOrder::Publisher => 0,
            GroupOrder::Ascending => 1,
            GroupOrder::Descending => 2,
        }
    }
}
