//! The draft-22 wire codec (`moqt-22`): pure, no I/O, limits before allocation,
//! in the style of the draft-14 codec beside it.
//!
//! Code of record: moq-net 0.3.18 on `Version::Draft22`; `golden.rs` holds its
//! encoders' bytes. What differs from draft 14 (see `docs/IETF.md`):
//!
//! - Every varint is the leading-ones form ([`wire`]), not QUIC's.
//! - No CLIENT_SETUP / SERVER_SETUP: each side opens a uni stream with [`Setup`]
//!   (type 0x2F00, `u16` length, options with no count, keys delta-coded), which
//!   then carries GOAWAY.
//! - Each request runs on its own bidi stream, opened by the requester: the request
//!   message first (it carries the Request ID), then the replies, which carry none
//!   ([`RequestOk`], [`RequestError`], [`SubscribeOk`], [`PublishDone`],
//!   [`Namespace`], [`NamespaceDone`]). Every message is `Type (vi), Length (16),
//!   body`, as on draft 14's control stream.
//! - Message parameters are `count (vi)`, then delta-coded keys whose value layout
//!   the key defines ([`MessageParameters`]); an unknown key cannot be skipped and
//!   is refused. SUBSCRIBE's priority, group order, forward and filter live there.
//! - Subgroup stream types gain bit 0x40 (the stream starts at the subgroup's
//!   first object) and the 0x30 range without a priority byte.

mod wire;

#[cfg(test)]
mod golden;

use bytes::BufMut;

use crate::lite::coding::{emit, Reader, Writer};
use crate::lite::{DecodeError, EncodeError, Limits};

use super::{
    GroupOrder, Location, ObjectStatus, ParameterValue, Parameters, SubgroupId, SubgroupObject,
    MAX_GOAWAY_URI, MAX_PARAMETERS, MAX_PARAMETER_VALUE, MAX_REASON,
};

pub use wire::{decode_varint, encode_varint};
use wire::{read_varint, write_varint};

/// SETUP's message type (draft 17 on).
pub const SETUP_TYPE: u64 = 0x2f00;

/// A draft-22 message body, framed as `Type (vi), Length (16), body`.
pub(crate) trait Message: Sized {
    const TYPE: u64;
    const WHAT: &'static str;
    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError>;
    fn read_body(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError>;
}

/// Decode a draft-22 message from the front of a buffer, as [`super::Decode`] does
/// for draft 14: never consumes, `Short` until the whole message is there, nothing
/// allocated beyond `limits`.
pub trait Decode: Sized {
    /// The message and the bytes it took.
    fn decode(buf: &[u8], limits: &Limits) -> Result<(Self, usize), DecodeError>;
}

/// Encode a draft-22 message.
pub trait Encode {
    /// Append to `out`, returning the bytes written; nothing on error.
    fn encode<B: BufMut>(&self, out: &mut B) -> Result<usize, EncodeError>;

    /// Encode into a fresh vector.
    fn to_vec(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}

impl<T: Message> Decode for T {
    fn decode(buf: &[u8], limits: &Limits) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let ty = read_varint(&mut r)?;
        if ty != T::TYPE {
            return Err(DecodeError::UnknownType { what: T::WHAT, ty });
        }
        let mut body = super::coding::framed_body(&mut r, T::WHAT, limits)?;
        let msg = T::read_body(&mut body, limits)?;
        body.finish()?;
        Ok((msg, r.consumed()))
    }
}

impl<T: Message> Encode for T {
    fn encode<B: BufMut>(&self, out: &mut B) -> Result<usize, EncodeError> {
        emit(out, |w| {
            write_varint(w, T::TYPE);
            w.sized_u16(T::WHAT, |w| self.write_body(w))
        })
    }
}

/// Uni stream type of a PADDING stream (draft 18 on): bytes to discard.
pub const PADDING_STREAM_TYPE: u64 = 0x132b_3e28;

/// The first message of each kind of request stream (draft 22 section 9).
pub mod request_type {
    /// REQUEST_UPDATE, sent later on an open request's stream.
    pub const REQUEST_UPDATE: u64 = 0x02;
    /// SUBSCRIBE.
    pub const SUBSCRIBE: u64 = 0x03;
    /// PUBLISH_NAMESPACE.
    pub const PUBLISH_NAMESPACE: u64 = 0x06;
    /// TRACK_STATUS.
    pub const TRACK_STATUS: u64 = 0x0d;
    /// FETCH.
    pub const FETCH: u64 = 0x16;
    /// PUBLISH.
    pub const PUBLISH: u64 = 0x1d;
    /// SUBSCRIBE_NAMESPACE.
    pub const SUBSCRIBE_NAMESPACE: u64 = 0x50;
    /// SUBSCRIBE_TRACKS.
    pub const SUBSCRIBE_TRACKS: u64 = 0x51;
}

/// Step over one framed message whose body this codec does not read (a request
/// it does not serve, a REQUEST_UPDATE): its type and the bytes it took. The
/// Length is checked against `limits.max_message` before the body is needed.
pub fn skip_message(buf: &[u8], limits: &Limits) -> Result<(u64, usize), DecodeError> {
    let mut r = Reader::new(buf);
    let ty = read_varint(&mut r)?;
    super::coding::framed_body(&mut r, "message", limits)?;
    Ok((ty, r.consumed()))
}

/// The type of the message at the front of `buf`, without consuming it.
pub fn peek_type(buf: &[u8]) -> Result<u64, DecodeError> {
    decode_varint(buf).map(|(ty, _)| ty)
}

// ---------------------------------------------------------------------------
// Key-Value-Pairs

/// Delta-coded keys (draft 16 on): each key is written as its distance from the
/// one before, so keys must not decrease.
fn key_deltas(keys: impl Iterator<Item = u64>) -> Result<Vec<u64>, EncodeError> {
    let mut prev = 0;
    keys.enumerate()
        .map(|(i, key)| {
            let delta = if i == 0 {
                Some(key)
            } else {
                key.checked_sub(prev)
            };
            prev = key;
            delta.ok_or(EncodeError::InvalidValue {
                what: "parameter keys must not decrease",
            })
        })
        .collect()
}

/// The next delta-coded key.
fn next_key(r: &mut Reader<'_>, i: usize, prev: u64) -> Result<u64, DecodeError> {
    let delta = read_varint(r)?;
    if i == 0 {
        return Ok(delta);
    }
    prev.checked_add(delta).ok_or(DecodeError::InvalidValue {
        what: "parameter key overflows",
    })
}

/// SETUP options and Track Properties: parity-typed pairs (even key one varint,
/// odd key length-prefixed bytes), keys delta-coded, no count: they run to the end
/// of the message. Kept in wire order, unknown keys included.
fn read_pairs(r: &mut Reader<'_>) -> Result<Parameters, DecodeError> {
    let mut list = Vec::new();
    let mut key = 0;
    while r.remaining() > 0 {
        if list.len() == MAX_PARAMETERS {
            return Err(DecodeError::TooLong {
                what: "parameters",
                len: list.len() as u64 + 1,
                max: MAX_PARAMETERS as u64,
            });
        }
        key = next_key(r, list.len(), key)?;
        let value = match key % 2 {
            0 => ParameterValue::Varint(read_varint(r)?),
            _ => ParameterValue::Bytes(
                wire::read_bytes(r, "parameter value", MAX_PARAMETER_VALUE)?.to_vec(),
            ),
        };
        list.push((key, value));
    }
    Ok(Parameters(list))
}

fn write_pairs(w: &mut Writer<'_>, pairs: &Parameters) -> Result<(), EncodeError> {
    if pairs.0.len() > MAX_PARAMETERS {
        return Err(EncodeError::TooLong {
            what: "parameters",
            len: pairs.0.len() as u64,
            max: MAX_PARAMETERS as u64,
        });
    }
    let deltas = key_deltas(pairs.0.iter().map(|(k, _)| *k))?;
    for ((key, value), delta) in pairs.0.iter().zip(deltas) {
        write_varint(w, delta);
        match value {
            ParameterValue::Varint(n) if key % 2 == 0 => write_varint(w, *n),
            ParameterValue::Bytes(b) if key % 2 == 1 => {
                wire::check_value("parameter value", b)?;
                wire::write_bytes(w, b);
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

/// Message parameter keys this codec knows (draft 22 section 10.2; the set moq-net
/// 0.3.18 reads). Each key fixes its value's layout.
pub mod param {
    /// DELIVERY_TIMEOUT (varint, ms).
    pub const DELIVERY_TIMEOUT: u64 = 0x02;
    /// AUTHORIZATION_TOKEN (bytes; may repeat).
    pub const AUTHORIZATION_TOKEN: u64 = 0x03;
    /// RENDEZVOUS_TIMEOUT (varint, ms).
    pub const RENDEZVOUS_TIMEOUT: u64 = 0x04;
    /// SUBGROUP_DELIVERY_TIMEOUT (varint, ms).
    pub const SUBGROUP_DELIVERY_TIMEOUT: u64 = 0x06;
    /// EXPIRES (varint, ms).
    pub const EXPIRES: u64 = 0x08;
    /// FILL_TIMEOUT (varint, ms), a FETCH's budget for waiting on upstream
    /// (draft 18 on). Read so that a FETCH carrying it can be refused alone.
    pub const FILL_TIMEOUT: u64 = 0x0a;
    /// LARGEST_OBJECT (Location).
    pub const LARGEST_OBJECT: u64 = 0x09;
    /// FORWARD (one byte, 0 or 1; absent means 1).
    pub const FORWARD: u64 = 0x10;
    /// SUBSCRIBER_PRIORITY (one byte; absent means 128).
    pub const SUBSCRIBER_PRIORITY: u64 = 0x20;
    /// LOCATION_FILTER (a typed [`LocationFilter`](super::LocationFilter); absent means none).
    pub const LOCATION_FILTER: u64 = 0x21;
    /// GROUP_ORDER (one byte).
    pub const GROUP_ORDER: u64 = 0x22;
    /// FILL (draft 20 on): a nested parameter scope behind a length, kept raw.
    /// moq-net asks for one on every live join.
    pub const FILL: u64 = 0x23;
    /// First of the Range Filters (bytes; may repeat), 0x25..=0x29.
    pub const RANGE_FILTER_FIRST: u64 = 0x25;
    /// Last of the Range Filters.
    pub const RANGE_FILTER_LAST: u64 = 0x29;
    /// NEW_GROUP_REQUEST (varint).
    pub const NEW_GROUP_REQUEST: u64 = 0x32;
    /// INCLUDE_PROPERTIES (one byte, 0 or 1; absent means 1).
    pub const INCLUDE_PROPERTIES: u64 = 0x35;
}

/// A message parameter's value, in the layout its key defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamValue {
    /// A varint.
    Varint(u64),
    /// One byte (priorities, group order).
    Byte(u8),
    /// One byte, 0 or 1.
    Bool(bool),
    /// Two varints.
    Location(Location),
    /// Length-prefixed bytes.
    Bytes(Vec<u8>),
    /// LOCATION_FILTER.
    Filter(LocationFilter),
}

#[derive(Clone, Copy)]
enum Kind {
    Varint,
    Byte,
    Bool,
    Location,
    Bytes,
    Filter,
}

/// How `key`'s value is laid out, and whether it may repeat; `None` for a key this
/// codec does not know, which draft 22 gives no way to skip.
fn kind_of(key: u64) -> Option<(Kind, bool)> {
    use param::*;
    Some(match key {
        DELIVERY_TIMEOUT
        | RENDEZVOUS_TIMEOUT
        | SUBGROUP_DELIVERY_TIMEOUT
        | EXPIRES
        | FILL_TIMEOUT
        | NEW_GROUP_REQUEST => (Kind::Varint, false),
        AUTHORIZATION_TOKEN => (Kind::Bytes, true),
        FILL => (Kind::Bytes, false),
        RANGE_FILTER_FIRST..=RANGE_FILTER_LAST => (Kind::Bytes, true),
        LARGEST_OBJECT => (Kind::Location, false),
        FORWARD | INCLUDE_PROPERTIES => (Kind::Bool, false),
        SUBSCRIBER_PRIORITY | GROUP_ORDER => (Kind::Byte, false),
        LOCATION_FILTER => (Kind::Filter, false),
        _ => return None,
    })
}

/// A request's parameters: `Number of Parameters (vi)` then pairs with delta-coded
/// keys, in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageParameters(pub Vec<(u64, ParamValue)>);

impl MessageParameters {
    /// The value under `key`, if present.
    pub fn get(&self, key: u64) -> Option<&ParamValue> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// FORWARD, defaulting to true.
    pub fn forward(&self) -> bool {
        !matches!(self.get(param::FORWARD), Some(ParamValue::Bool(false)))
    }

    /// SUBSCRIBER_PRIORITY, defaulting to 128.
    pub fn subscriber_priority(&self) -> u8 {
        match self.get(param::SUBSCRIBER_PRIORITY) {
            Some(ParamValue::Byte(p)) => *p,
            _ => 128,
        }
    }

    /// GROUP_ORDER, if sent.
    pub fn group_order(&self) -> Option<GroupOrder> {
        match self.get(param::GROUP_ORDER) {
            Some(ParamValue::Byte(1)) => Some(GroupOrder::Ascending),
            Some(ParamValue::Byte(2)) => Some(GroupOrder::Descending),
            Some(ParamValue::Byte(_)) => Some(GroupOrder::Publisher),
            _ => None,
        }
    }

    /// LOCATION_FILTER, defaulting to none (every object).
    pub fn filter(&self) -> LocationFilter {
        match self.get(param::LOCATION_FILTER) {
            Some(ParamValue::Filter(f)) => *f,
            _ => LocationFilter::None,
        }
    }

    /// RENDEZVOUS_TIMEOUT, if sent: how long a SUBSCRIBE may wait for a
    /// publisher of its track.
    pub fn rendezvous_timeout(&self) -> Option<std::time::Duration> {
        match self.get(param::RENDEZVOUS_TIMEOUT) {
            Some(ParamValue::Varint(ms)) => Some(std::time::Duration::from_millis(*ms)),
            _ => None,
        }
    }

    /// LARGEST_OBJECT, if sent.
    pub fn largest(&self) -> Option<Location> {
        match self.get(param::LARGEST_OBJECT) {
            Some(ParamValue::Location(l)) => Some(*l),
            _ => None,
        }
    }

    /// FILL's nested parameters (count, then delta-coded keys, as a
    /// message's), if FILL was sent: kept raw by the decoder, read here.
    pub fn fill(&self) -> Option<Result<MessageParameters, DecodeError>> {
        let Some(ParamValue::Bytes(raw)) = self.get(param::FILL) else {
            return None;
        };
        let mut r = Reader::new(raw);
        Some(
            MessageParameters::read(&mut r).and_then(|scope| match r.remaining() {
                0 => Ok(scope),
                _ => Err(DecodeError::InvalidValue {
                    what: "bytes after FILL's parameters",
                }),
            }),
        )
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = read_varint(r)?;
        if count > MAX_PARAMETERS as u64 {
            return Err(DecodeError::TooLong {
                what: "parameters",
                len: count,
                max: MAX_PARAMETERS as u64,
            });
        }
        let mut list: Vec<(u64, ParamValue)> = Vec::with_capacity(count as usize);
        let mut key = 0;
        for i in 0..count as usize {
            key = next_key(r, i, key)?;
            let (kind, repeats) = kind_of(key).ok_or(DecodeError::UnknownType {
                what: "message parameter",
                ty: key,
            })?;
            if !repeats && list.iter().any(|(k, _)| *k == key) {
                return Err(DecodeError::InvalidValue {
                    what: "repeated message parameter",
                });
            }
            let value = match kind {
                Kind::Varint => ParamValue::Varint(read_varint(r)?),
                Kind::Byte => ParamValue::Byte(r.u8()?),
                Kind::Bool => ParamValue::Bool(wire::read_bool(r, "parameter flag")?),
                Kind::Location => ParamValue::Location(wire::read_location(r)?),
                Kind::Bytes => ParamValue::Bytes(
                    wire::read_bytes(r, "parameter value", MAX_PARAMETER_VALUE)?.to_vec(),
                ),
                Kind::Filter => ParamValue::Filter(LocationFilter::read(r)?),
            };
            list.push((key, value));
        }
        Ok(MessageParameters(list))
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        if self.0.len() > MAX_PARAMETERS {
            return Err(EncodeError::TooLong {
                what: "parameters",
                len: self.0.len() as u64,
                max: MAX_PARAMETERS as u64,
            });
        }
        write_varint(w, self.0.len() as u64);
        let deltas = key_deltas(self.0.iter().map(|(k, _)| *k))?;
        for ((key, value), delta) in self.0.iter().zip(deltas) {
            let kind = kind_of(*key).map(|(kind, _)| kind);
            write_varint(w, delta);
            match (kind, value) {
                (Some(Kind::Varint), ParamValue::Varint(n)) => write_varint(w, *n),
                (Some(Kind::Byte), ParamValue::Byte(b)) => w.u8(*b),
                (Some(Kind::Bool), ParamValue::Bool(b)) => w.u8(u8::from(*b)),
                (Some(Kind::Location), ParamValue::Location(l)) => wire::write_location(w, *l),
                (Some(Kind::Bytes), ParamValue::Bytes(b)) => {
                    wire::check_value("parameter value", b)?;
                    wire::write_bytes(w, b);
                }
                (Some(Kind::Filter), ParamValue::Filter(f)) => f.write(w)?,
                _ => {
                    return Err(EncodeError::InvalidValue {
                        what: "message parameter value does not fit its key",
                    })
                }
            }
        }
        Ok(())
    }
}

/// LOCATION_FILTER (draft 22): a Location Filter Type then the fields it names.
/// Draft 20 and 21 wrote the same fields behind a length instead of a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocationFilter {
    /// 0x0: no filter.
    None,
    /// 0x1: from the group `groups` before the latest (0 = the next group start).
    RelativeStart(u64),
    /// 0x2: from `start` on.
    AbsoluteStart(Location),
    /// 0x3: from `start` to the end of `end_group` (written as `end_group - start.group`).
    AbsoluteGroupEnd {
        /// First location.
        start: Location,
        /// Last group, inclusive.
        end_group: u64,
    },
    /// 0x4: from `start` to `end_object` in `end_group`.
    AbsoluteRange {
        /// First location.
        start: Location,
        /// Last group.
        end_group: u64,
        /// Last object in it, as sent.
        end_object: u64,
    },
    /// 0x5: from the next object (draft 14's LargestObject).
    NextObject,
}

impl LocationFilter {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let end_group = |r: &mut Reader<'_>, start: Location| {
            start
                .group
                .checked_add(read_varint(r)?)
                .ok_or(DecodeError::InvalidValue {
                    what: "filter end group overflows",
                })
        };
        Ok(match read_varint(r)? {
            0x0 => LocationFilter::None,
            0x1 => LocationFilter::RelativeStart(read_varint(r)?),
            0x2 => LocationFilter::AbsoluteStart(wire::read_location(r)?),
            0x3 => {
                let start = wire::read_location(r)?;
                let end_group = end_group(r, start)?;
                LocationFilter::AbsoluteGroupEnd { start, end_group }
            }
            0x4 => {
                let start = wire::read_location(r)?;
                let end_group = end_group(r, start)?;
                let end_object = read_varint(r)?;
                LocationFilter::AbsoluteRange {
                    start,
                    end_group,
                    end_object,
                }
            }
            0x5 => LocationFilter::NextObject,
            ty => {
                return Err(DecodeError::UnknownType {
                    what: "location filter",
                    ty,
                })
            }
        })
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let delta = |start: Location, end: u64| {
            end.checked_sub(start.group)
                .ok_or(EncodeError::InvalidValue {
                    what: "filter ends before it starts",
                })
        };
        match *self {
            LocationFilter::None => write_varint(w, 0x0),
            LocationFilter::RelativeStart(groups) => {
                write_varint(w, 0x1);
                write_varint(w, groups);
            }
            LocationFilter::AbsoluteStart(start) => {
                write_varint(w, 0x2);
                wire::write_location(w, start);
            }
            LocationFilter::AbsoluteGroupEnd { start, end_group } => {
                write_varint(w, 0x3);
                wire::write_location(w, start);
                write_varint(w, delta(start, end_group)?);
            }
            LocationFilter::AbsoluteRange {
                start,
                end_group,
                end_object,
            } => {
                write_varint(w, 0x4);
                wire::write_location(w, start);
                write_varint(w, delta(start, end_group)?);
                write_varint(w, end_object);
            }
            LocationFilter::NextObject => write_varint(w, 0x5),
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Messages

/// SETUP (0x2F00), the first message of each side's SETUP uni stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Setup {
    /// Setup options (PATH 0x1, MAX_REQUEST_ID 0x2, AUTHORIZATION_TOKEN 0x3, ...),
    /// keys in ascending order.
    pub parameters: Parameters,
}

impl Message for Setup {
    const TYPE: u64 = SETUP_TYPE;
    const WHAT: &'static str = "SETUP";
    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        write_pairs(w, &self.parameters)
    }
    fn read_body(r: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        Ok(Setup {
            parameters: read_pairs(r)?,
        })
    }
}

/// SUBSCRIBE (0x3), the first message of a subscription's bidi stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Request ID (even from the client, odd from the server).
    pub request_id: u64,
    /// Track Namespace tuple.
    pub namespace: Vec<String>,
    /// Track Name.
    pub name: String,
    /// FORWARD, SUBSCRIBER_PRIORITY, LOCATION_FILTER, GROUP_ORDER, ...
    pub parameters: MessageParameters,
}

impl Message for Subscribe {
    const TYPE: u64 = 0x3;
    const WHAT: &'static str = "SUBSCRIBE";
    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        write_varint(w, self.request_id);
        wire::write_namespace(w, &self.namespace)?;
        wire::write_bytes(w, self.name.as_bytes());
        self.parameters.write(w)
    }
    fn read_body(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        Ok(Subscribe {
            request_id: read_varint(r)?,
            namespace: wire::read_namespace(r, limits)?,
            name: wire::read_string(r, "track name", limits.max_name)?,
            parameters: MessageParameters::read(r)?,
        })
    }
}

/// SUBSCRIBE_OK (0x4) on the subscription's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOk {
    /// The alias the publisher's subgroup streams will carry.
    pub track_alias: u64,
    /// EXPIRES, LARGEST_OBJECT.
    pub parameters: MessageParameters,
    /// Track Properties (e.g. DEFAULT_PUBLISHER_GROUP_ORDER 0x22), to the end of
    /// the message.
    pub properties: Parameters,
}

impl Message for SubscribeOk {
    const TYPE: u64 = 0x4;
    const WHAT: &'static str = "SUBSCRIBE_OK";
    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        write_varint(w, self.track_alias);
        self.parameters.write(w)?;
        write_pairs(w, &self.properties)
    }
    fn read_body(r: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        Ok(SubscribeOk {
            track_alias: read_varint(r)?,
            parameters: MessageParameters::read(r)?,
            properties: read_pairs(r)?,
        })
    }
}

/// REQUEST_UPDATE (0x2), sent by a requester on its open request's stream to
/// change it: its own Request ID, then the parameters that change (absent ones
/// stay as they were).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestUpdate {
    /// This update's Request ID.
    pub request_id: u64,
    /// FORWARD, SUBSCRIBER_PRIORITY, LOCATION_FILTER, ...
    pub parameters: MessageParameters,
}

impl Message for RequestUpdate {
    const TYPE: u64 = request_type::REQUEST_UPDATE;
    const WHAT: &'static str = "REQUEST_UPDATE";
    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        write_varint(w, self.request_id);
        self.parameters.write(w)
    }
    fn read_body(r: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        Ok(RequestUpdate {
            request_id: read_varint(r)?,
            parameters: MessageParameters::read(r)?,
        })
    }
}

/// REQUEST_OK (0x7): a request other than SUBSCRIBE succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOk {
    /// Parameters (EXPIRES on an update).
    pub parameters: MessageParameters,
}

impl Message for RequestOk {
    const TYPE: u64 = 0x7;
    const WHAT: &'static str = "REQUEST_OK";
    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        self.parameters.write(w)
    }
    fn read_body(r: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        Ok(RequestOk {
            parameters: MessageParameters::read(r)?,
        })
    }
}

/// REQUEST_ERROR (0x5): the request on this stream failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// Error code.
    pub code: u64,
    /// How long to wait before retrying, in ms (0: do not retry).
    pub retry_interval: u64,
    /// Reason phrase.
    pub reason: String,
}

impl Message for RequestError {
    const TYPE: u64 = 0x5;
    const WHAT: &'static str = "REQUEST_ERROR";
    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        write_varint(w, self.code);
        write_varint(w, self.retry_interval);
        write_reason(w, &self.reason)
    }
    fn read_body(r: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        Ok(RequestError {
            code: read_varint(r)?,
            retry_interval: read_varint(r)?,
            reason: wire::read_string(r, "reason phrase", MAX_REASON)?,
        })
    }
}

fn write_reason(w: &mut Writer<'_>, reason: &str) -> Result<(), EncodeError> {
    if reason.len() > MAX_REASON {
        return Err(EncodeError::TooLong {
            what: "reason phrase",
            len: reason.len() as u64,
            max: MAX_REASON as u64,
        });
    }
    wire::write_bytes(w, reason.as_bytes());
    Ok(())
}

/// PUBLISH_DONE (0xb): the publisher ends the subscription on its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishDone {
    /// Status code (0x2 TRACK_ENDED, ...).
    pub status: u64,
    /// Subgroup streams the publisher opened for it.
    pub stream_count: u64,
    /// Reason phrase.
    pub reason: String,
}

impl Message for PublishDone {
    const TYPE: u64 = 0xb;
    const WHAT: &'static str = "PUBLISH_DONE";
    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        write_varint(w, self.status);
        write_varint(w, self.stream_count);
        write_reason(w, &self.reason)
    }
    fn read_body(r: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        Ok(PublishDone {
            status: read_varint(r)?,
            stream_count: read_varint(r)?,
            reason: wire::read_string(r, "reason phrase", MAX_REASON)?,
        })
    }
}

/// PUBLISH_NAMESPACE (0x6), the first message of an announcement's bidi stream;
/// closing the stream withdraws it (there is no PUBLISH_NAMESPACE_DONE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishNamespace {
    /// Request ID.
    pub request_id: u64,
    /// Track Namespace tuple.
    pub namespace: Vec<String>,
    /// Parameters (AUTHORIZATION_TOKEN).
    pub parameters: MessageParameters,
}

impl Message for PublishNamespace {
    const TYPE: u64 = 0x6;
    const WHAT: &'static str = "PUBLISH_NAMESPACE";
    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        write_varint(w, self.request_id);
        wire::write_namespace(w, &self.namespace)?;
        self.parameters.write(w)
    }
    fn read_body(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        Ok(PublishNamespace {
            request_id: read_varint(r)?,
            namespace: wire::read_namespace(r, limits)?,
            parameters: MessageParameters::read(r)?,
        })
    }
}

/// PUBLISH (0x1D), the first message of a track offer's bidi stream, opened by
/// the publisher. From draft 20 the answer is a REQUEST_OK carrying only
/// EXPIRES; the subscriber sets Forward later with [`RequestUpdate`] on the same
/// stream, and the publisher ends the track with PUBLISH_DONE there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Request ID (even from the client, odd from the server).
    pub request_id: u64,
    /// Track Namespace tuple.
    pub namespace: Vec<String>,
    /// Track Name.
    pub name: String,
    /// The alias the publisher's subgroup streams carry.
    pub track_alias: u64,
    /// FORWARD (absent means 1: objects may flow before the answer),
    /// LARGEST_OBJECT, delivery timeouts, ...
    pub parameters: MessageParameters,
    /// Track Properties (e.g. DEFAULT_PUBLISHER_GROUP_ORDER 0x22), to the end of
    /// the message.
    pub properties: Parameters,
}

impl Message for Publish {
    const TYPE: u64 = 0x1d;
    const WHAT: &'static str = "PUBLISH";
    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        write_varint(w, self.request_id);
        wire::write_namespace(w, &self.namespace)?;
        wire::write_bytes(w, self.name.as_bytes());
        write_varint(w, self.track_alias);
        self.parameters.write(w)?;
        write_pairs(w, &self.properties)
    }
    fn read_body(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        Ok(Publish {
            request_id: read_varint(r)?,
            namespace: wire::read_namespace(r, limits)?,
            name: wire::read_string(r, "track name", limits.max_name)?,
            track_alias: read_varint(r)?,
            parameters: MessageParameters::read(r)?,
            properties: read_pairs(r)?,
        })
    }
}

/// SUBSCRIBE_NAMESPACE (0x50), the first message of a namespace listener's bidi
/// stream; answered with REQUEST_OK, then NAMESPACE / NAMESPACE_DONE per match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeNamespace {
    /// Request ID.
    pub request_id: u64,
    /// Namespace prefix.
    pub prefix: Vec<String>,
    /// Parameters (AUTHORIZATION_TOKEN).
    pub parameters: MessageParameters,
}

impl Message for SubscribeNamespace {
    const TYPE: u64 = 0x50;
    const WHAT: &'static str = "SUBSCRIBE_NAMESPACE";
    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        write_varint(w, self.request_id);
        wire::write_namespace(w, &self.prefix)?;
        self.parameters.write(w)
    }
    fn read_body(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        Ok(SubscribeNamespace {
            request_id: read_varint(r)?,
            prefix: wire::read_namespace(r, limits)?,
            parameters: MessageParameters::read(r)?,
        })
    }
}

/// NAMESPACE (0x8): a namespace under the listener's prefix is published (the
/// suffix after the prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Fields after the prefix.
    pub suffix: Vec<String>,
}

/// NAMESPACE_DONE (0xe): that namespace is no longer published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceDone {
    /// Fields after the prefix.
    pub suffix: Vec<String>,
}

macro_rules! suffix_message {
    ($name:ident, $ty:expr, $what:expr) => {
        impl Message for $name {
            const TYPE: u64 = $ty;
            const WHAT: &'static str = $what;
            fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
                wire::write_namespace(w, &self.suffix)
            }
            fn read_body(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
                Ok($name {
                    suffix: wire::read_namespace(r, limits)?,
                })
            }
        }
    };
}

suffix_message!(Namespace, 0x8, "NAMESPACE");
suffix_message!(NamespaceDone, 0xe, "NAMESPACE_DONE");

/// GOAWAY (0x10), on the SETUP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goaway {
    /// Where to reconnect (empty: the same URI).
    pub new_session_uri: String,
    /// How long before the sender closes the session, in ms.
    pub timeout: u64,
}

impl Message for Goaway {
    const TYPE: u64 = 0x10;
    const WHAT: &'static str = "GOAWAY";
    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        if self.new_session_uri.len() > MAX_GOAWAY_URI {
            return Err(EncodeError::TooLong {
                what: "GOAWAY URI",
                len: self.new_session_uri.len() as u64,
                max: MAX_GOAWAY_URI as u64,
            });
        }
        wire::write_bytes(w, self.new_session_uri.as_bytes());
        write_varint(w, self.timeout);
        Ok(())
    }
    fn read_body(r: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        Ok(Goaway {
            new_session_uri: wire::read_string(r, "GOAWAY URI", MAX_GOAWAY_URI)?,
            timeout: read_varint(r)?,
        })
    }
}

// ---------------------------------------------------------------------------
// Subgroup streams

/// A draft-22 SUBGROUP_HEADER. Types 0x10..=0x1D (with a priority byte) and
/// 0x30..=0x3D (without: the subscription's priority applies), each optionally
/// with bit 0x40 (this stream starts at the subgroup's first object). The low bits
/// are draft 14's: 0x01 extensions, 0x02/0x04 subgroup id, 0x08 FIN ends the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubgroupHeader {
    /// Track alias from SUBSCRIBE_OK.
    pub track_alias: u64,
    /// Group ID.
    pub group: u64,
    /// Subgroup ID as the type names it.
    pub subgroup: SubgroupId,
    /// Publisher Priority, when the type carries one.
    pub publisher_priority: Option<u8>,
    /// Objects carry extension headers.
    pub extensions: bool,
    /// FIN ends the group.
    pub end_of_group: bool,
    /// The stream starts at the subgroup's first object (bit 0x40). Without it the
    /// front of the subgroup is missing, which moq-lite cannot represent.
    pub first_object: bool,
}

impl SubgroupHeader {
    /// The stream type this header is sent with.
    pub fn stream_type(&self) -> u64 {
        let mut ty = match self.publisher_priority {
            Some(_) => 0x10,
            None => 0x30,
        };
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
        if self.first_object {
            ty |= 0x40;
        }
        ty
    }

    /// Whether `ty` opens a draft-22 subgroup stream.
    pub fn is_subgroup_type(ty: u64) -> bool {
        let base = ty & !0x40;
        ((0x10..=0x1d).contains(&base) || (0x30..=0x3d).contains(&base)) && base & 0x06 != 0x06
    }
}

impl Decode for SubgroupHeader {
    fn decode(buf: &[u8], _: &Limits) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let ty = read_varint(&mut r)?;
        if !Self::is_subgroup_type(ty) {
            return Err(DecodeError::UnknownType {
                what: "subgroup stream",
                ty,
            });
        }
        let track_alias = read_varint(&mut r)?;
        let group = read_varint(&mut r)?;
        let subgroup = match ty & 0x06 {
            0x02 => SubgroupId::FirstObject,
            0x04 => SubgroupId::Explicit(read_varint(&mut r)?),
            _ => SubgroupId::Zero,
        };
        let publisher_priority = match ty & 0x20 {
            0 => Some(r.u8()?),
            _ => None,
        };
        let header = SubgroupHeader {
            track_alias,
            group,
            subgroup,
            publisher_priority,
            extensions: ty & 0x01 != 0,
            end_of_group: ty & 0x08 != 0,
            first_object: ty & 0x40 != 0,
        };
        Ok((header, r.consumed()))
    }
}

impl Encode for SubgroupHeader {
    fn encode<B: BufMut>(&self, out: &mut B) -> Result<usize, EncodeError> {
        emit(out, |w| {
            write_varint(w, self.stream_type());
            write_varint(w, self.track_alias);
            write_varint(w, self.group);
            if let SubgroupId::Explicit(id) = self.subgroup {
                write_varint(w, id);
            }
            if let Some(p) = self.publisher_priority {
                w.u8(p);
            }
            Ok(())
        })
    }
}

/// Decode one object header on a draft-22 subgroup stream (same fields as draft
/// 14's, in leading-ones varints); the payload is not read.
pub fn decode_object(
    buf: &[u8],
    extensions: bool,
    limits: &Limits,
) -> Result<(SubgroupObject, usize), DecodeError> {
    let mut r = Reader::new(buf);
    let object_id_delta = read_varint(&mut r)?;
    let extensions = match extensions {
        true => Some(wire::read_bytes(&mut r, "extension headers", limits.max_message)?.to_vec()),
        false => None,
    };
    let payload_len = read_varint(&mut r)?;
    if payload_len > limits.max_frame {
        return Err(DecodeError::TooLong {
            what: "object payload",
            len: payload_len,
            max: limits.max_frame,
        });
    }
    let status = match payload_len {
        0 => Some(read_status(&mut r)?),
        _ => None,
    };
    let object = SubgroupObject {
        object_id_delta,
        extensions,
        payload_len,
        status,
    };
    Ok((object, r.consumed()))
}

/// Encode one object header (not the payload) for a draft-22 subgroup stream.
pub fn encode_object<B: BufMut>(
    object: &SubgroupObject,
    out: &mut B,
) -> Result<usize, EncodeError> {
    emit(out, |w| {
        write_varint(w, object.object_id_delta);
        if let Some(ext) = &object.extensions {
            wire::write_bytes(w, ext);
        }
        write_varint(w, object.payload_len);
        match (object.payload_len, object.status) {
            (0, Some(status)) => write_varint(w, status.code()),
            (0, None) | (1.., Some(_)) => {
                return Err(EncodeError::InvalidValue {
                    what: "a status goes with an empty payload, and only there",
                })
            }
            (1.., None) => {}
        }
        Ok(())
    })
}

/// An Object Status in a leading-ones varint.
fn read_status(r: &mut Reader<'_>) -> Result<ObjectStatus, DecodeError> {
    match read_varint(r)? {
        0x0 => Ok(ObjectStatus::Normal),
        0x1 => Ok(ObjectStatus::DoesNotExist),
        0x3 => Ok(ObjectStatus::EndOfGroup),
        0x4 => Ok(ObjectStatus::EndOfTrack),
        _ => Err(DecodeError::InvalidValue {
            what: "object status",
        }),
    }
}

// ---------------------------------------------------------------------------
// Datagrams

/// Datagram type of a PADDING datagram (draft 18 on): bytes to discard.
pub const PADDING_DATAGRAM_TYPE: u64 = 0x132b_3e29;

/// The bits of a draft-22 OBJECT_DATAGRAM type (moq-net 0.3.18 `ietf/datagram.rs`).
mod datagram_flag {
    pub const EXTENSIONS: u64 = 0x01;
    pub const END_OF_GROUP: u64 = 0x02;
    pub const ZERO_OBJECT_ID: u64 = 0x04;
    pub const DEFAULT_PRIORITY: u64 = 0x08;
    pub const STATUS: u64 = 0x20;
    /// Every defined bit; anything else (the reserved 0x10 too) is invalid.
    pub const ALL: u64 = EXTENSIONS | END_OF_GROUP | ZERO_OBJECT_ID | DEFAULT_PRIORITY | STATUS;
}

/// A draft-22 OBJECT_DATAGRAM header. Unlike draft 14, the type is a set of
/// flags throughout: 0x01 extensions (properties), 0x02 end of group, 0x04
/// Object ID absent (it is 0), 0x08 no priority byte (the subscription's
/// applies), 0x20 a status instead of a payload (never with 0x02). Fields are
/// leading-ones varints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatagramHeader {
    pub track_alias: u64,
    pub group: u64,
    /// Object ID; `None` when the type omits it (the object is 0).
    pub object: Option<u64>,
    /// Publisher Priority; `None` when the subscription's applies.
    pub publisher_priority: Option<u8>,
    /// Raw properties, never empty when present (moq-net refuses empty).
    pub extensions: Option<Vec<u8>>,
    /// This object ends its group.
    pub end_of_group: bool,
    /// `Some` for a status datagram, which has no payload.
    pub status: Option<ObjectStatus>,
}

impl DatagramHeader {
    fn datagram_type(&self) -> Result<u64, EncodeError> {
        use datagram_flag::*;
        let mut ty = 0;
        if self.extensions.is_some() {
            ty |= EXTENSIONS;
        }
        if self.end_of_group {
            ty |= END_OF_GROUP;
        }
        if self.object.is_none() {
            ty |= ZERO_OBJECT_ID;
        }
        if self.publisher_priority.is_none() {
            ty |= DEFAULT_PRIORITY;
        }
        if let Some(status) = self.status {
            ty |= STATUS;
            check_status(ty, status, self.extensions.is_some())
                .map_err(|what| EncodeError::InvalidValue { what })?;
        }
        Ok(ty)
    }

    /// Decode a whole datagram's header. Returns it and the payload's offset: the
    /// payload is `datagram[offset..]` (empty for a status datagram).
    pub fn decode(datagram: &[u8], limits: &Limits) -> Result<(Self, usize), DecodeError> {
        use datagram_flag::*;
        let mut r = Reader::bounded(datagram, "datagram");
        let ty = read_varint(&mut r)?;
        if ty & !ALL != 0 {
            return Err(DecodeError::UnknownType {
                what: "datagram",
                ty,
            });
        }
        let track_alias = read_varint(&mut r)?;
        let group = read_varint(&mut r)?;
        let object = match ty & ZERO_OBJECT_ID {
            0 => Some(read_varint(&mut r)?),
            _ => None,
        };
        let publisher_priority = match ty & DEFAULT_PRIORITY {
            0 => Some(r.u8()?),
            _ => None,
        };
        let extensions = match ty & EXTENSIONS {
            0 => None,
            _ => {
                let block = wire::read_bytes(&mut r, "datagram properties", limits.max_message)?;
                if block.is_empty() {
                    return Err(DecodeError::InvalidValue {
                        what: "empty datagram properties",
                    });
                }
                Some(block.to_vec())
            }
        };
        let status = match ty & STATUS {
            0 => None,
            _ => {
                let status = read_status(&mut r)?;
                check_status(ty, status, extensions.is_some())
                    .map_err(|what| DecodeError::InvalidValue { what })?;
                r.finish()?;
                Some(status)
            }
        };
        let header = DatagramHeader {
            track_alias,
            group,
            object,
            publisher_priority,
            extensions,
            end_of_group: ty & END_OF_GROUP != 0,
            status,
        };
        Ok((header, r.consumed()))
    }

    /// Encode the header; the caller appends the payload.
    pub fn encode<B: BufMut>(&self, out: &mut B) -> Result<usize, EncodeError> {
        let ty = self.datagram_type()?;
        if matches!(&self.extensions, Some(block) if block.is_empty()) {
            return Err(EncodeError::InvalidValue {
                what: "empty datagram properties",
            });
        }
        emit(out, |w| {
            write_varint(w, ty);
            write_varint(w, self.track_alias);
            write_varint(w, self.group);
            if let Some(object) = self.object {
                write_varint(w, object);
            }
            if let Some(priority) = self.publisher_priority {
                w.u8(priority);
            }
            if let Some(block) = &self.extensions {
                wire::write_bytes(w, block);
            }
            if let Some(status) = self.status {
                write_varint(w, status.code());
            }
            Ok(())
        })
    }
}

/// A status datagram cannot end its group, and from draft 17 on only a Normal
/// one may carry properties (moq-net 0.3.18).
fn check_status(ty: u64, status: ObjectStatus, extensions: bool) -> Result<(), &'static str> {
    if ty & datagram_flag::END_OF_GROUP != 0 {
        return Err("a status datagram cannot end its group");
    }
    if extensions && status != ObjectStatus::Normal {
        return Err("only a Normal status datagram carries properties");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// FETCH

/// FETCH (0x16), the first message of a fetch's bidi stream. From draft 20 on
/// the track is named up front and the range is the LOCATION_FILTER
/// parameter; the Fetch Type and the joining forms are gone (moq-net 0.3.18).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// Request ID.
    pub request_id: u64,
    /// Track Namespace tuple.
    pub namespace: Vec<String>,
    /// Track Name.
    pub name: String,
    /// Parameters: SUBSCRIBER_PRIORITY, LOCATION_FILTER (absent: the whole
    /// track), GROUP_ORDER, FILL_TIMEOUT, range filters, ...
    pub parameters: MessageParameters,
}

impl Message for Fetch {
    const TYPE: u64 = request_type::FETCH;
    const WHAT: &'static str = "FETCH";
    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        write_varint(w, self.request_id);
        wire::write_namespace(w, &self.namespace)?;
        wire::write_bytes(w, self.name.as_bytes());
        self.parameters.write(w)
    }
    fn read_body(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        Ok(Fetch {
            request_id: read_varint(r)?,
            namespace: wire::read_namespace(r, limits)?,
            name: wire::read_string(r, "track name", limits.max_name)?,
            parameters: MessageParameters::read(r)?,
        })
    }
}

/// FETCH_OK (0x18), on the fetch's request stream; the objects follow on a
/// uni stream of their own ([`FetchHeader`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOk {
    /// The track ends with `end`.
    pub end_of_track: bool,
    /// The last Location the response covers, inclusive (draft 20 on).
    pub end: Location,
    /// Parameters (none sent; GROUP_ORDER is read from peers that send it).
    pub parameters: MessageParameters,
    /// Track Properties, to the end of the message.
    pub properties: Parameters,
}

impl Message for FetchOk {
    const TYPE: u64 = 0x18;
    const WHAT: &'static str = "FETCH_OK";
    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u8(u8::from(self.end_of_track));
        wire::write_location(w, self.end);
        self.parameters.write(w)?;
        write_pairs(w, &self.properties)
    }
    fn read_body(r: &mut Reader<'_>, _: &Limits) -> Result<Self, DecodeError> {
        Ok(FetchOk {
            end_of_track: wire::read_bool(r, "end of track")?,
            end: wire::read_location(r)?,
            parameters: MessageParameters::read(r)?,
            properties: read_pairs(r)?,
        })
    }
}

/// Uni stream type of a fetch response.
pub const FETCH_HEADER_TYPE: u64 = 0x05;

/// FETCH_HEADER: the start of a fetch response's uni stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchHeader {
    /// The FETCH this stream answers.
    pub request_id: u64,
}

impl Decode for FetchHeader {
    fn decode(buf: &[u8], _: &Limits) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let ty = read_varint(&mut r)?;
        if ty != FETCH_HEADER_TYPE {
            return Err(DecodeError::UnknownType {
                what: "fetch stream",
                ty,
            });
        }
        let request_id = read_varint(&mut r)?;
        Ok((FetchHeader { request_id }, r.consumed()))
    }
}

impl Encode for FetchHeader {
    fn encode<B: BufMut>(&self, out: &mut B) -> Result<usize, EncodeError> {
        emit(out, |w| {
            write_varint(w, FETCH_HEADER_TYPE);
            write_varint(w, self.request_id);
            Ok(())
        })
    }
}

/// The bits of a fetch object's Serialization Flags (draft 20 on).
mod fetch_flag {
    /// The two low bits spell the Subgroup ID.
    pub const SUBGROUP: u64 = 0x03;
    pub const OBJECT_ID: u64 = 0x04;
    pub const GROUP_ID: u64 = 0x08;
    pub const PRIORITY: u64 = 0x10;
    pub const PROPERTIES: u64 = 0x20;
    /// Published as a datagram: no Subgroup ID at all.
    pub const DATAGRAM: u64 = 0x40;
}

/// How a fetch object names its Subgroup ID (the flags' two low bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FetchSubgroup {
    /// Subgroup zero.
    #[default]
    Zero,
    /// The prior object's Subgroup ID.
    Prior,
    /// One past the prior object's.
    PriorPlusOne,
    /// Spelled out.
    Explicit(u64),
    /// A datagram object: no Subgroup ID.
    Datagram,
}

/// One entry on a draft-22 fetch stream: an object's header (its payload,
/// `payload_len` bytes, follows and is not read), or an End of Range marker.
/// Absent fields repeat the prior object's (the Object ID counts up by one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchObject {
    /// An object.
    Object {
        /// Subgroup ID spelling.
        subgroup: FetchSubgroup,
        /// Group ID: absolute on the first object, later a delta naming a
        /// different group.
        group: Option<u64>,
        /// Object ID: absolute with `group`, else a delta from the prior one.
        object: Option<u64>,
        /// Publisher Priority.
        priority: Option<u8>,
        /// Object Properties, raw.
        properties: Option<Vec<u8>>,
        /// Payload bytes that follow (no status field on draft 22).
        payload_len: u64,
    },
    /// Every location from the prior object to this one does not exist
    /// (0x8C), is unknown (0x10C) or timed out (0x20C).
    EndOfRange {
        /// The marker.
        reason: u64,
        /// Group ID delta.
        group: u64,
        /// Object ID delta.
        object: u64,
    },
}

/// The Serialization Flags values that mark an End of Range.
const END_OF_RANGE: [u64; 3] = [0x8c, 0x10c, 0x20c];

impl Decode for FetchObject {
    fn decode(buf: &[u8], limits: &Limits) -> Result<(Self, usize), DecodeError> {
        use fetch_flag::*;
        let mut r = Reader::new(buf);
        let flags = read_varint(&mut r)?;
        if flags >= 0x80 {
            if !END_OF_RANGE.contains(&flags) {
                return Err(DecodeError::InvalidValue {
                    what: "fetch object flags",
                });
            }
            let marker = FetchObject::EndOfRange {
                reason: flags,
                group: read_varint(&mut r)?,
                object: read_varint(&mut r)?,
            };
            return Ok((marker, r.consumed()));
        }
        let group = match flags & GROUP_ID {
            0 => None,
            _ => Some(read_varint(&mut r)?),
        };
        let subgroup = match (flags & DATAGRAM, flags & SUBGROUP) {
            (DATAGRAM, _) => FetchSubgroup::Datagram,
            (_, 0) => FetchSubgroup::Zero,
            (_, 1) => FetchSubgroup::Prior,
            (_, 2) => FetchSubgroup::PriorPlusOne,
            _ => FetchSubgroup::Explicit(read_varint(&mut r)?),
        };
        let object = match flags & OBJECT_ID {
            0 => None,
            _ => Some(read_varint(&mut r)?),
        };
        let priority = match flags & PRIORITY {
            0 => None,
            _ => Some(r.u8()?),
        };
        let properties = match flags & PROPERTIES {
            0 => None,
            _ => Some(wire::read_bytes(&mut r, "object properties", limits.max_message)?.to_vec()),
        };
        let payload_len = read_varint(&mut r)?;
        if payload_len > limits.max_frame {
            return Err(DecodeError::TooLong {
                what: "object payload",
                len: payload_len,
                max: limits.max_frame,
            });
        }
        let object = FetchObject::Object {
            subgroup,
            group,
            object,
            priority,
            properties,
            payload_len,
        };
        Ok((object, r.consumed()))
    }
}

impl Encode for FetchObject {
    fn encode<B: BufMut>(&self, out: &mut B) -> Result<usize, EncodeError> {
        use fetch_flag::*;
        emit(out, |w| match self {
            FetchObject::EndOfRange {
                reason,
                group,
                object,
            } => {
                if !END_OF_RANGE.contains(reason) {
                    return Err(EncodeError::InvalidValue {
                        what: "not an End of Range marker",
                    });
                }
                write_varint(w, *reason);
                write_varint(w, *group);
                write_varint(w, *object);
                Ok(())
            }
            FetchObject::Object {
                subgroup,
                group,
                object,
                priority,
                properties,
                payload_len,
            } => {
                let mut flags = match subgroup {
                    FetchSubgroup::Zero => 0,
                    FetchSubgroup::Prior => 1,
                    FetchSubgroup::PriorPlusOne => 2,
                    FetchSubgroup::Explicit(_) => SUBGROUP,
                    FetchSubgroup::Datagram => DATAGRAM,
                };
                for (present, bit) in [
                    (group.is_some(), GROUP_ID),
                    (object.is_some(), OBJECT_ID),
                    (priority.is_some(), PRIORITY),
                    (properties.is_some(), PROPERTIES),
                ] {
                    if present {
                        flags |= bit;
                    }
                }
                write_varint(w, flags);
                if let Some(group) = group {
                    write_varint(w, *group);
                }
                if let FetchSubgroup::Explicit(id) = subgroup {
                    write_varint(w, *id);
                }
                if let Some(object) = object {
                    write_varint(w, *object);
                }
                if let Some(priority) = priority {
                    w.u8(*priority);
                }
                if let Some(properties) = properties {
                    wire::check_value("object properties", properties)?;
                    wire::write_bytes(w, properties);
                }
                write_varint(w, *payload_len);
                Ok(())
            }
        })
    }
}

/// Any message a draft-22 request stream or SETUP stream carries, dispatched on
/// its type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum RequestMessage {
    Setup(Setup),
    Subscribe(Subscribe),
    RequestUpdate(RequestUpdate),
    SubscribeOk(SubscribeOk),
    RequestOk(RequestOk),
    RequestError(RequestError),
    PublishDone(PublishDone),
    PublishNamespace(PublishNamespace),
    Publish(Publish),
    SubscribeNamespace(SubscribeNamespace),
    Namespace(Namespace),
    NamespaceDone(NamespaceDone),
    Goaway(Goaway),
    Fetch(Fetch),
    FetchOk(FetchOk),
}

impl Decode for RequestMessage {
    fn decode(buf: &[u8], limits: &Limits) -> Result<(Self, usize), DecodeError> {
        fn wrap<T: Decode>(
            buf: &[u8],
            limits: &Limits,
            f: fn(T) -> RequestMessage,
        ) -> Result<(RequestMessage, usize), DecodeError> {
            T::decode(buf, limits).map(|(m, n)| (f(m), n))
        }
        match peek_type(buf)? {
            Setup::TYPE => wrap(buf, limits, Self::Setup),
            Subscribe::TYPE => wrap(buf, limits, Self::Subscribe),
            RequestUpdate::TYPE => wrap(buf, limits, Self::RequestUpdate),
            SubscribeOk::TYPE => wrap(buf, limits, Self::SubscribeOk),
            RequestOk::TYPE => wrap(buf, limits, Self::RequestOk),
            RequestError::TYPE => wrap(buf, limits, Self::RequestError),
            PublishDone::TYPE => wrap(buf, limits, Self::PublishDone),
            PublishNamespace::TYPE => wrap(buf, limits, Self::PublishNamespace),
            Publish::TYPE => wrap(buf, limits, Self::Publish),
            SubscribeNamespace::TYPE => wrap(buf, limits, Self::SubscribeNamespace),
            Namespace::TYPE => wrap(buf, limits, Self::Namespace),
            NamespaceDone::TYPE => wrap(buf, limits, Self::NamespaceDone),
            Goaway::TYPE => wrap(buf, limits, Self::Goaway),
            Fetch::TYPE => wrap(buf, limits, Self::Fetch),
            FetchOk::TYPE => wrap(buf, limits, Self::FetchOk),
            ty => Err(DecodeError::UnknownType {
                what: "draft-22 message",
                ty,
            }),
        }
    }
}

impl Encode for RequestMessage {
    fn encode<B: BufMut>(&self, out: &mut B) -> Result<usize, EncodeError> {
        match self {
            Self::Setup(m) => m.encode(out),
            Self::Subscribe(m) => m.encode(out),
            Self::RequestUpdate(m) => m.encode(out),
            Self::SubscribeOk(m) => m.encode(out),
            Self::RequestOk(m) => m.encode(out),
            Self::RequestError(m) => m.encode(out),
            Self::PublishDone(m) => m.encode(out),
            Self::PublishNamespace(m) => m.encode(out),
            Self::Publish(m) => m.encode(out),
            Self::SubscribeNamespace(m) => m.encode(out),
            Self::Namespace(m) => m.encode(out),
            Self::NamespaceDone(m) => m.encode(out),
            Self::Goaway(m) => m.encode(out),
            Self::Fetch(m) => m.encode(out),
            Self::FetchOk(m) => m.encode(out),
        }
    }
}
