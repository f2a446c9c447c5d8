//! Control messages of draft 14 (section 9), each `Type (i), Length (16), body` on
//! the one bidirectional control stream.
//!
//! Field layouts follow moq-net 0.3.18 (the code of record); where it departs from
//! the draft text the type says so, and `docs/IETF.md` lists every such place.

use bytes::BufMut;

use crate::lite::coding::{Reader, Writer};
use crate::lite::{DecodeError, EncodeError, Limits};

use super::coding::{
    read_bool, read_namespace, read_u8, write_namespace, Control, Decode, Encode, GroupOrder,
    Location, Parameters,
};
use super::setup::{ClientSetup, ServerSetup};
use super::Version;

/// Longest reason phrase (draft 14 section 1.4.3: 1024 bytes).
pub const MAX_REASON: usize = 1024;

/// Longest GOAWAY URI (draft 14 section 9.4: 8192 bytes).
pub const MAX_GOAWAY_URI: usize = 8192;

fn read_reason(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    r.string("reason phrase", MAX_REASON)
}

fn write_reason(w: &mut Writer<'_>, reason: &str) -> Result<(), EncodeError> {
    if reason.len() > MAX_REASON {
        return Err(EncodeError::TooLong {
            what: "reason phrase",
            len: reason.len() as u64,
            max: MAX_REASON as u64,
        });
    }
    w.string("reason phrase", reason)
}

fn write_name(w: &mut Writer<'_>, name: &str) -> Result<(), EncodeError> {
    w.string("track name", name)
}

/// A message whose body is one varint.
macro_rules! one_varint {
    ($(#[$doc:meta])* $name:ident, $ty:expr, $what:expr, $field:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name {
            #[allow(missing_docs)]
            pub $field: u64,
        }

        impl Control for $name {
            const TYPE: u64 = $ty;
            const WHAT: &'static str = $what;

            fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
                w.varint(stringify!($field), self.$field)
            }

            fn read_body(r: &mut Reader<'_>, _: Version, _: &Limits) -> Result<Self, DecodeError> {
                Ok(Self { $field: r.varint()? })
            }
        }
    };
}

/// A refusal: `Request ID (i), Error Code (i), Reason Phrase`.
macro_rules! request_error {
    ($(#[$doc:meta])* $name:ident, $ty:expr, $what:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// The request refused.
            pub request_id: u64,
            /// Error code (the draft's table for this request kind).
            pub code: u64,
            /// Human-readable reason, at most [`MAX_REASON`] bytes.
            pub reason: String,
        }

        impl Control for $name {
            const TYPE: u64 = $ty;
            const WHAT: &'static str = $what;

            fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
                w.varint("request id", self.request_id)?;
                w.varint("error code", self.code)?;
                write_reason(w, &self.reason)
            }

            fn read_body(r: &mut Reader<'_>, _: Version, _: &Limits) -> Result<Self, DecodeError> {
                Ok(Self {
                    request_id: r.varint()?,
                    code: r.varint()?,
                    reason: read_reason(r)?,
                })
            }
        }
    };
}

one_varint!(
    /// PUBLISH_NAMESPACE_OK (0x07): the namespace was accepted.
    PublishNamespaceOk, 0x07, "PUBLISH_NAMESPACE_OK", request_id
);
one_varint!(
    /// UNSUBSCRIBE (0x0a): the subscriber ends a subscription.
    Unsubscribe, 0x0a, "UNSUBSCRIBE", request_id
);
one_varint!(
    /// SUBSCRIBE_NAMESPACE_OK (0x12).
    SubscribeNamespaceOk, 0x12, "SUBSCRIBE_NAMESPACE_OK", request_id
);
one_varint!(
    /// MAX_REQUEST_ID (0x15): the first Request ID the peer may not use yet.
    MaxRequestId, 0x15, "MAX_REQUEST_ID", request_id
);
one_varint!(
    /// FETCH_CANCEL (0x17).
    FetchCancel, 0x17, "FETCH_CANCEL", request_id
);
one_varint!(
    /// REQUESTS_BLOCKED (0x1a): the sender wants to open a request but has reached
    /// `maximum_request_id`.
    RequestsBlocked, 0x1a, "REQUESTS_BLOCKED", maximum_request_id
);

request_error!(
    /// SUBSCRIBE_ERROR (0x05).
    SubscribeError, 0x05, "SUBSCRIBE_ERROR"
);
request_error!(
    /// PUBLISH_NAMESPACE_ERROR (0x08).
    PublishNamespaceError, 0x08, "PUBLISH_NAMESPACE_ERROR"
);
request_error!(
    /// SUBSCRIBE_NAMESPACE_ERROR (0x13).
    SubscribeNamespaceError, 0x13, "SUBSCRIBE_NAMESPACE_ERROR"
);
request_error!(
    /// FETCH_ERROR (0x19).
    FetchError, 0x19, "FETCH_ERROR"
);
request_error!(
    /// PUBLISH_ERROR (0x1f): the receiver of a PUBLISH refuses it.
    PublishError, 0x1f, "PUBLISH_ERROR"
);

/// The Filter Type of a SUBSCRIBE (draft 14 section 9.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// 0x1 NextGroupStart: from the start of the next group.
    NextGroupStart,
    /// 0x2 LargestObject: from the object after the largest one published.
    LargestObject,
    /// 0x3 AbsoluteStart: from `start`, open ended.
    AbsoluteStart(Location),
    /// 0x4 AbsoluteRange: from `start` to the end of a group.
    AbsoluteRange {
        /// First location delivered.
        start: Location,
        /// The End Group field as sent. The draft 14 text makes it the absolute
        /// last group; moq-net 0.3.18 writes and reads `end - start.group`. Kept raw
        /// so the session decides (see `docs/IETF.md`).
        end_group: u64,
    },
}

impl Filter {
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.varint()? {
            0x1 => Ok(Filter::NextGroupStart),
            0x2 => Ok(Filter::LargestObject),
            0x3 => Ok(Filter::AbsoluteStart(Location::read(r)?)),
            0x4 => Ok(Filter::AbsoluteRange {
                start: Location::read(r)?,
                end_group: r.varint()?,
            }),
            ty => Err(DecodeError::UnknownType {
                what: "filter type",
                ty,
            }),
        }
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match self {
            Filter::NextGroupStart => w.varint("filter type", 0x1),
            Filter::LargestObject => w.varint("filter type", 0x2),
            Filter::AbsoluteStart(start) => {
                w.varint("filter type", 0x3)?;
                start.write(w)
            }
            Filter::AbsoluteRange { start, end_group } => {
                w.varint("filter type", 0x4)?;
                start.write(w)?;
                w.varint("end group", *end_group)
            }
        }
    }
}

/// SUBSCRIBE (0x03).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// This request's ID.
    pub request_id: u64,
    /// Track Namespace tuple.
    pub namespace: Vec<String>,
    /// Track Name (UTF-8, as moq-net reads it).
    pub name: String,
    /// Subscriber Priority (lower is more urgent).
    pub subscriber_priority: u8,
    /// Requested group order.
    pub group_order: GroupOrder,
    /// Whether objects are forwarded now.
    pub forward: bool,
    /// Which objects.
    pub filter: Filter,
    /// Parameters (AUTHORIZATION_TOKEN, DELIVERY_TIMEOUT, ...).
    pub parameters: Parameters,
}

impl Control for Subscribe {
    const TYPE: u64 = 0x03;
    const WHAT: &'static str = "SUBSCRIBE";

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        w.varint("request id", self.request_id)?;
        write_namespace(w, &self.namespace)?;
        write_name(w, &self.name)?;
        w.u8(self.subscriber_priority);
        w.u8(self.group_order.byte());
        w.u8(u8::from(self.forward));
        self.filter.write(w)?;
        self.parameters.write(w)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, limits: &Limits) -> Result<Self, DecodeError> {
        Ok(Subscribe {
            request_id: r.varint()?,
            namespace: read_namespace(r, limits)?,
            name: r.string("track name", limits.max_name)?,
            subscriber_priority: read_u8(r)?,
            group_order: GroupOrder::read(r)?,
            forward: read_bool(r, "forward")?,
            filter: Filter::read(r)?,
            parameters: Parameters::read(r)?,
        })
    }
}

/// SUBSCRIBE_OK (0x04).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOk {
    /// The SUBSCRIBE answered.
    pub request_id: u64,
    /// The alias objects of this subscription carry.
    pub track_alias: u64,
    /// Milliseconds until the subscription expires; 0 for never.
    pub expires: u64,
    /// The order the publisher will send groups in (1 or 2).
    pub group_order: GroupOrder,
    /// The largest location published so far, if any (Content Exists + Largest).
    pub largest: Option<Location>,
    /// Parameters.
    pub parameters: Parameters,
}

impl Control for SubscribeOk {
    const TYPE: u64 = 0x04;
    const WHAT: &'static str = "SUBSCRIBE_OK";

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        w.varint("request id", self.request_id)?;
        w.varint("track alias", self.track_alias)?;
        w.varint("expires", self.expires)?;
        w.u8(self.group_order.byte());
        w.u8(u8::from(self.largest.is_some()));
        if let Some(largest) = &self.largest {
            largest.write(w)?;
        }
        self.parameters.write(w)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, _: &Limits) -> Result<Self, DecodeError> {
        let request_id = r.varint()?;
        let track_alias = r.varint()?;
        let expires = r.varint()?;
        let group_order = GroupOrder::read(r)?;
        let largest = match read_bool(r, "content exists")? {
            true => Some(Location::read(r)?),
            false => None,
        };
        Ok(SubscribeOk {
            request_id,
            track_alias,
            expires,
            group_order,
            largest,
            parameters: Parameters::read(r)?,
        })
    }
}

/// SUBSCRIBE_UPDATE (0x02).
///
/// moq-net 0.3.18 writes a Request ID for the update itself and then the
/// subscription's; several other implementations send only the subscription's.
/// qumo follows moq-net (see `docs/IETF.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeUpdate {
    /// This update's own Request ID.
    pub request_id: u64,
    /// The SUBSCRIBE being updated.
    pub subscription_request_id: u64,
    /// New start (may only move forward).
    pub start: Location,
    /// End Group as sent (0: open ended, else last group + 1).
    pub end_group: u64,
    /// New subscriber priority.
    pub subscriber_priority: u8,
    /// Whether objects are forwarded.
    pub forward: bool,
    /// Parameters.
    pub parameters: Parameters,
}

impl Control for SubscribeUpdate {
    const TYPE: u64 = 0x02;
    const WHAT: &'static str = "SUBSCRIBE_UPDATE";

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        w.varint("request id", self.request_id)?;
        w.varint("subscription request id", self.subscription_request_id)?;
        self.start.write(w)?;
        w.varint("end group", self.end_group)?;
        w.u8(self.subscriber_priority);
        w.u8(u8::from(self.forward));
        self.parameters.write(w)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, _: &Limits) -> Result<Self, DecodeError> {
        Ok(SubscribeUpdate {
            request_id: r.varint()?,
            subscription_request_id: r.varint()?,
            start: Location::read(r)?,
            end_group: r.varint()?,
            subscriber_priority: read_u8(r)?,
            forward: read_bool(r, "forward")?,
            parameters: Parameters::read(r)?,
        })
    }
}

/// PUBLISH (0x1d): the publisher opens a subscription to one of its tracks on
/// the receiver's behalf (draft 14 section 9.13). Its objects carry
/// `track_alias`; with `forward` false none flow until the receiver's PUBLISH_OK
/// (or a SUBSCRIBE_UPDATE) sets Forward to 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// This request's ID.
    pub request_id: u64,
    /// Track Namespace tuple.
    pub namespace: Vec<String>,
    /// Track Name.
    pub name: String,
    /// The alias the track's objects carry.
    pub track_alias: u64,
    /// The order the publisher sends groups in (1 or 2; 0 is refused).
    pub group_order: GroupOrder,
    /// The largest location published so far (Content Exists + Largest).
    pub largest: Option<Location>,
    /// Whether objects flow before PUBLISH_OK.
    pub forward: bool,
    /// Parameters.
    pub parameters: Parameters,
}

impl Control for Publish {
    const TYPE: u64 = 0x1d;
    const WHAT: &'static str = "PUBLISH";

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        w.varint("request id", self.request_id)?;
        write_namespace(w, &self.namespace)?;
        write_name(w, &self.name)?;
        w.varint("track alias", self.track_alias)?;
        w.u8(self.group_order.byte());
        w.u8(u8::from(self.largest.is_some()));
        if let Some(largest) = &self.largest {
            largest.write(w)?;
        }
        w.u8(u8::from(self.forward));
        self.parameters.write(w)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, limits: &Limits) -> Result<Self, DecodeError> {
        let request_id = r.varint()?;
        let namespace = read_namespace(r, limits)?;
        let name = r.string("track name", limits.max_name)?;
        let track_alias = r.varint()?;
        // Draft 14 section 9.13: 0 (the publisher's choice) has no meaning
        // when the publisher itself speaks.
        let group_order = match GroupOrder::read(r)? {
            GroupOrder::Publisher => {
                return Err(DecodeError::InvalidValue {
                    what: "group order",
                })
            }
            order => order,
        };
        let largest = match read_bool(r, "content exists")? {
            true => Some(Location::read(r)?),
            false => None,
        };
        Ok(Publish {
            request_id,
            namespace,
            name,
            track_alias,
            group_order,
            largest,
            forward: read_bool(r, "forward")?,
            parameters: Parameters::read(r)?,
        })
    }
}

/// PUBLISH_OK (0x1e): the receiver of a PUBLISH accepts it, with the
/// subscription's terms (draft 14 section 9.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOk {
    /// The PUBLISH answered.
    pub request_id: u64,
    /// Whether objects are forwarded now.
    pub forward: bool,
    /// Subscriber Priority (lower is more urgent).
    pub subscriber_priority: u8,
    /// Requested group order; overrides the PUBLISH's.
    pub group_order: GroupOrder,
    /// Which objects.
    pub filter: Filter,
    /// Parameters.
    pub parameters: Parameters,
}

impl Control for PublishOk {
    const TYPE: u64 = 0x1e;
    const WHAT: &'static str = "PUBLISH_OK";

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        w.varint("request id", self.request_id)?;
        w.u8(u8::from(self.forward));
        w.u8(self.subscriber_priority);
        w.u8(self.group_order.byte());
        self.filter.write(w)?;
        self.parameters.write(w)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, _: &Limits) -> Result<Self, DecodeError> {
        Ok(PublishOk {
            request_id: r.varint()?,
            forward: read_bool(r, "forward")?,
            subscriber_priority: read_u8(r)?,
            group_order: GroupOrder::read(r)?,
            filter: Filter::read(r)?,
            parameters: Parameters::read(r)?,
        })
    }
}

/// PUBLISH_NAMESPACE (0x06): the sender publishes tracks under a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishNamespace {
    /// This request's ID.
    pub request_id: u64,
    /// The namespace published.
    pub namespace: Vec<String>,
    /// Parameters (AUTHORIZATION_TOKEN).
    pub parameters: Parameters,
}

impl Control for PublishNamespace {
    const TYPE: u64 = 0x06;
    const WHAT: &'static str = "PUBLISH_NAMESPACE";

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        w.varint("request id", self.request_id)?;
        write_namespace(w, &self.namespace)?;
        self.parameters.write(w)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, limits: &Limits) -> Result<Self, DecodeError> {
        Ok(PublishNamespace {
            request_id: r.varint()?,
            namespace: read_namespace(r, limits)?,
            parameters: Parameters::read(r)?,
        })
    }
}

/// PUBLISH_NAMESPACE_DONE (0x09): the publisher withdraws a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishNamespaceDone {
    /// The namespace withdrawn.
    pub namespace: Vec<String>,
}

impl Control for PublishNamespaceDone {
    const TYPE: u64 = 0x09;
    const WHAT: &'static str = "PUBLISH_NAMESPACE_DONE";

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        write_namespace(w, &self.namespace)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, limits: &Limits) -> Result<Self, DecodeError> {
        Ok(PublishNamespaceDone {
            namespace: read_namespace(r, limits)?,
        })
    }
}

/// PUBLISH_NAMESPACE_CANCEL (0x0c): the receiver of a namespace stops routing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishNamespaceCancel {
    /// The namespace cancelled.
    pub namespace: Vec<String>,
    /// Error code.
    pub code: u64,
    /// Reason.
    pub reason: String,
}

impl Control for PublishNamespaceCancel {
    const TYPE: u64 = 0x0c;
    const WHAT: &'static str = "PUBLISH_NAMESPACE_CANCEL";

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        write_namespace(w, &self.namespace)?;
        w.varint("error code", self.code)?;
        write_reason(w, &self.reason)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, limits: &Limits) -> Result<Self, DecodeError> {
        Ok(PublishNamespaceCancel {
            namespace: read_namespace(r, limits)?,
            code: r.varint()?,
            reason: read_reason(r)?,
        })
    }
}

/// PUBLISH_DONE (0x0b): the publisher ends a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishDone {
    /// The subscription ended.
    pub request_id: u64,
    /// Status code (draft 14 section 9.12).
    pub status: u64,
    /// Number of data streams opened for the subscription.
    pub stream_count: u64,
    /// Reason.
    pub reason: String,
}

impl Control for PublishDone {
    const TYPE: u64 = 0x0b;
    const WHAT: &'static str = "PUBLISH_DONE";

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        w.varint("request id", self.request_id)?;
        w.varint("status code", self.status)?;
        w.varint("stream count", self.stream_count)?;
        write_reason(w, &self.reason)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, _: &Limits) -> Result<Self, DecodeError> {
        Ok(PublishDone {
            request_id: r.varint()?,
            status: r.varint()?,
            stream_count: r.varint()?,
            reason: read_reason(r)?,
        })
    }
}

/// GOAWAY (0x10): migrate to `uri` (empty: reconnect to the same one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goaway {
    /// New session URI, at most [`MAX_GOAWAY_URI`] bytes.
    pub uri: String,
}

impl Control for Goaway {
    const TYPE: u64 = 0x10;
    const WHAT: &'static str = "GOAWAY";

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        if self.uri.len() > MAX_GOAWAY_URI {
            return Err(EncodeError::TooLong {
                what: "goaway uri",
                len: self.uri.len() as u64,
                max: MAX_GOAWAY_URI as u64,
            });
        }
        w.string("goaway uri", &self.uri)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, _: &Limits) -> Result<Self, DecodeError> {
        Ok(Goaway {
            uri: r.string("goaway uri", MAX_GOAWAY_URI)?,
        })
    }
}

/// SUBSCRIBE_NAMESPACE (0x11): ask for PUBLISH_NAMESPACE of everything under a
/// prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeNamespace {
    /// This request's ID.
    pub request_id: u64,
    /// The namespace prefix.
    pub prefix: Vec<String>,
    /// Parameters.
    pub parameters: Parameters,
}

impl Control for SubscribeNamespace {
    const TYPE: u64 = 0x11;
    const WHAT: &'static str = "SUBSCRIBE_NAMESPACE";

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        w.varint("request id", self.request_id)?;
        write_namespace(w, &self.prefix)?;
        self.parameters.write(w)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, limits: &Limits) -> Result<Self, DecodeError> {
        Ok(SubscribeNamespace {
            request_id: r.varint()?,
            prefix: read_namespace(r, limits)?,
            parameters: Parameters::read(r)?,
        })
    }
}

/// What an UNSUBSCRIBE_NAMESPACE names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceInterest {
    /// The Track Namespace Prefix, as the draft-14 text (and aiomoqt 0.13.3)
    /// writes it.
    Prefix(Vec<String>),
    /// The SUBSCRIBE_NAMESPACE's Request ID, as moq-net 0.3.18 writes it: read
    /// only when the body is one varint that is not a whole tuple.
    RequestId(u64),
}

/// UNSUBSCRIBE_NAMESPACE (0x14): the subscriber wants no more announcements
/// under a prefix (draft 14 section 9.22).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubscribeNamespace {
    /// Which namespace subscription ends.
    pub interest: NamespaceInterest,
}

impl Control for UnsubscribeNamespace {
    const TYPE: u64 = 0x14;
    const WHAT: &'static str = "UNSUBSCRIBE_NAMESPACE";

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        match &self.interest {
            NamespaceInterest::Prefix(prefix) => write_namespace(w, prefix),
            NamespaceInterest::RequestId(id) => w.varint("request id", *id),
        }
    }

    fn read_body(r: &mut Reader<'_>, _: Version, limits: &Limits) -> Result<Self, DecodeError> {
        let body = r.rest();
        let mut tuple = Reader::bounded(body, Self::WHAT);
        let prefix = read_namespace(&mut tuple, limits);
        if let (Ok(prefix), 0) = (&prefix, tuple.remaining()) {
            return Ok(Self {
                interest: NamespaceInterest::Prefix(prefix.clone()),
            });
        }
        let mut id = Reader::bounded(body, Self::WHAT);
        match (id.varint(), id.remaining()) {
            (Ok(request_id), 0) => Ok(Self {
                interest: NamespaceInterest::RequestId(request_id),
            }),
            // Neither spelling: report the tuple's error.
            _ => Err(prefix.err().unwrap_or(DecodeError::InvalidValue {
                what: "UNSUBSCRIBE_NAMESPACE body",
            })),
        }
    }
}

/// What a FETCH asks for (draft 14 section 9.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchType {
    /// 0x1: a range of a named track.
    Standalone {
        /// Track Namespace.
        namespace: Vec<String>,
        /// Track Name.
        name: String,
        /// First location.
        start: Location,
        /// Last location (object 0 meaning the whole group, per the draft).
        end: Location,
    },
    /// 0x2: `joining_start` groups before a SUBSCRIBE's first group.
    RelativeJoining {
        /// The SUBSCRIBE joined.
        joining_request_id: u64,
        /// Groups back from the subscription's start.
        joining_start: u64,
    },
    /// 0x3: from absolute group `joining_start` up to a SUBSCRIBE's first group.
    AbsoluteJoining {
        /// The SUBSCRIBE joined.
        joining_request_id: u64,
        /// First group.
        joining_start: u64,
    },
}

/// FETCH (0x16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    /// This request's ID.
    pub request_id: u64,
    /// Subscriber Priority.
    pub subscriber_priority: u8,
    /// Requested group order.
    pub group_order: GroupOrder,
    /// What to fetch.
    pub fetch_type: FetchType,
    /// Parameters.
    pub parameters: Parameters,
}

impl Control for Fetch {
    const TYPE: u64 = 0x16;
    const WHAT: &'static str = "FETCH";

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        w.varint("request id", self.request_id)?;
        w.u8(self.subscriber_priority);
        w.u8(self.group_order.byte());
        match &self.fetch_type {
            FetchType::Standalone {
                namespace,
                name,
                start,
                end,
            } => {
                w.varint("fetch type", 0x1)?;
                write_namespace(w, namespace)?;
                write_name(w, name)?;
                start.write(w)?;
                end.write(w)?;
            }
            FetchType::RelativeJoining {
                joining_request_id,
                joining_start,
            } => {
                w.varint("fetch type", 0x2)?;
                w.varint("joining request id", *joining_request_id)?;
                w.varint("joining start", *joining_start)?;
            }
            FetchType::AbsoluteJoining {
                joining_request_id,
                joining_start,
            } => {
                w.varint("fetch type", 0x3)?;
                w.varint("joining request id", *joining_request_id)?;
                w.varint("joining start", *joining_start)?;
            }
        }
        self.parameters.write(w)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, limits: &Limits) -> Result<Self, DecodeError> {
        let request_id = r.varint()?;
        let subscriber_priority = read_u8(r)?;
        let group_order = GroupOrder::read(r)?;
        let fetch_type = match r.varint()? {
            0x1 => FetchType::Standalone {
                namespace: read_namespace(r, limits)?,
                name: r.string("track name", limits.max_name)?,
                start: Location::read(r)?,
                end: Location::read(r)?,
            },
            0x2 => FetchType::RelativeJoining {
                joining_request_id: r.varint()?,
                joining_start: r.varint()?,
            },
            0x3 => FetchType::AbsoluteJoining {
                joining_request_id: r.varint()?,
                joining_start: r.varint()?,
            },
            ty => {
                return Err(DecodeError::UnknownType {
                    what: "fetch type",
                    ty,
                })
            }
        };
        Ok(Fetch {
            request_id,
            subscriber_priority,
            group_order,
            fetch_type,
            parameters: Parameters::read(r)?,
        })
    }
}

/// FETCH_OK (0x18).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOk {
    /// The FETCH answered.
    pub request_id: u64,
    /// The order objects will come in (1 or 2).
    pub group_order: GroupOrder,
    /// Whether the track has ended and `end` is its last object.
    pub end_of_track: bool,
    /// The largest location the fetch will deliver.
    pub end: Location,
    /// Parameters.
    pub parameters: Parameters,
}

impl Control for FetchOk {
    const TYPE: u64 = 0x18;
    const WHAT: &'static str = "FETCH_OK";

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        w.varint("request id", self.request_id)?;
        w.u8(self.group_order.byte());
        w.u8(u8::from(self.end_of_track));
        self.end.write(w)?;
        self.parameters.write(w)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, _: &Limits) -> Result<Self, DecodeError> {
        Ok(FetchOk {
            request_id: r.varint()?,
            group_order: GroupOrder::read(r)?,
            end_of_track: read_bool(r, "end of track")?,
            end: Location::read(r)?,
            parameters: Parameters::read(r)?,
        })
    }
}

/// Any control message, for the control stream's reader: decode dispatches on the
/// type, so an unknown type is one error path, not a guess.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ControlMessage {
    ClientSetup(ClientSetup),
    ServerSetup(ServerSetup),
    SubscribeUpdate(SubscribeUpdate),
    Subscribe(Subscribe),
    SubscribeOk(SubscribeOk),
    SubscribeError(SubscribeError),
    PublishNamespace(PublishNamespace),
    PublishNamespaceOk(PublishNamespaceOk),
    PublishNamespaceError(PublishNamespaceError),
    PublishNamespaceDone(PublishNamespaceDone),
    Unsubscribe(Unsubscribe),
    PublishDone(PublishDone),
    PublishNamespaceCancel(PublishNamespaceCancel),
    Goaway(Goaway),
    SubscribeNamespace(SubscribeNamespace),
    SubscribeNamespaceOk(SubscribeNamespaceOk),
    SubscribeNamespaceError(SubscribeNamespaceError),
    UnsubscribeNamespace(UnsubscribeNamespace),
    MaxRequestId(MaxRequestId),
    Fetch(Fetch),
    FetchCancel(FetchCancel),
    FetchOk(FetchOk),
    FetchError(FetchError),
    RequestsBlocked(RequestsBlocked),
    Publish(Publish),
    PublishOk(PublishOk),
    PublishError(PublishError),
}

impl Decode for ControlMessage {
    fn decode(buf: &[u8], v: Version, limits: &Limits) -> Result<(Self, usize), DecodeError> {
        fn wrap<T: Decode>(
            buf: &[u8],
            v: Version,
            limits: &Limits,
            f: fn(T) -> ControlMessage,
        ) -> Result<(ControlMessage, usize), DecodeError> {
            T::decode(buf, v, limits).map(|(m, n)| (f(m), n))
        }
        let ty = Reader::new(buf).varint()?;
        match ty {
            ClientSetup::TYPE => wrap(buf, v, limits, Self::ClientSetup),
            ServerSetup::TYPE => wrap(buf, v, limits, Self::ServerSetup),
            SubscribeUpdate::TYPE => wrap(buf, v, limits, Self::SubscribeUpdate),
            Subscribe::TYPE => wrap(buf, v, limits, Self::Subscribe),
            SubscribeOk::TYPE => wrap(buf, v, limits, Self::SubscribeOk),
            SubscribeError::TYPE => wrap(buf, v, limits, Self::SubscribeError),
            PublishNamespace::TYPE => wrap(buf, v, limits, Self::PublishNamespace),
            PublishNamespaceOk::TYPE => wrap(buf, v, limits, Self::PublishNamespaceOk),
            PublishNamespaceError::TYPE => wrap(buf, v, limits, Self::PublishNamespaceError),
            PublishNamespaceDone::TYPE => wrap(buf, v, limits, Self::PublishNamespaceDone),
            Unsubscribe::TYPE => wrap(buf, v, limits, Self::Unsubscribe),
            PublishDone::TYPE => wrap(buf, v, limits, Self::PublishDone),
            PublishNamespaceCancel::TYPE => wrap(buf, v, limits, Self::PublishNamespaceCancel),
            Goaway::TYPE => wrap(buf, v, limits, Self::Goaway),
            SubscribeNamespace::TYPE => wrap(buf, v, limits, Self::SubscribeNamespace),
            SubscribeNamespaceOk::TYPE => wrap(buf, v, limits, Self::SubscribeNamespaceOk),
            SubscribeNamespaceError::TYPE => wrap(buf, v, limits, Self::SubscribeNamespaceError),
            UnsubscribeNamespace::TYPE => wrap(buf, v, limits, Self::UnsubscribeNamespace),
            MaxRequestId::TYPE => wrap(buf, v, limits, Self::MaxRequestId),
            Fetch::TYPE => wrap(buf, v, limits, Self::Fetch),
            FetchCancel::TYPE => wrap(buf, v, limits, Self::FetchCancel),
            FetchOk::TYPE => wrap(buf, v, limits, Self::FetchOk),
            FetchError::TYPE => wrap(buf, v, limits, Self::FetchError),
            RequestsBlocked::TYPE => wrap(buf, v, limits, Self::RequestsBlocked),
            Publish::TYPE => wrap(buf, v, limits, Self::Publish),
            PublishOk::TYPE => wrap(buf, v, limits, Self::PublishOk),
            PublishError::TYPE => wrap(buf, v, limits, Self::PublishError),
            ty => Err(DecodeError::UnknownType {
                what: "control message",
                ty,
            }),
        }
    }
}

impl Encode for ControlMessage {
    fn encode<B: BufMut>(&self, out: &mut B, v: Version) -> Result<usize, EncodeError> {
        match self {
            Self::ClientSetup(m) => m.encode(out, v),
            Self::ServerSetup(m) => m.encode(out, v),
            Self::SubscribeUpdate(m) => m.encode(out, v),
            Self::Subscribe(m) => m.encode(out, v),
            Self::SubscribeOk(m) => m.encode(out, v),
            Self::SubscribeError(m) => m.encode(out, v),
            Self::PublishNamespace(m) => m.encode(out, v),
            Self::PublishNamespaceOk(m) => m.encode(out, v),
            Self::PublishNamespaceError(m) => m.encode(out, v),
            Self::PublishNamespaceDone(m) => m.encode(out, v),
            Self::Unsubscribe(m) => m.encode(out, v),
            Self::PublishDone(m) => m.encode(out, v),
            Self::PublishNamespaceCancel(m) => m.encode(out, v),
            Self::Goaway(m) => m.encode(out, v),
            Self::SubscribeNamespace(m) => m.encode(out, v),
            Self::SubscribeNamespaceOk(m) => m.encode(out, v),
            Self::SubscribeNamespaceError(m) => m.encode(out, v),
            Self::UnsubscribeNamespace(m) => m.encode(out, v),
            Self::MaxRequestId(m) => m.encode(out, v),
            Self::Fetch(m) => m.encode(out, v),
            Self::FetchCancel(m) => m.encode(out, v),
            Self::FetchOk(m) => m.encode(out, v),
            Self::FetchError(m) => m.encode(out, v),
            Self::RequestsBlocked(m) => m.encode(out, v),
            Self::Publish(m) => m.encode(out, v),
            Self::PublishOk(m) => m.encode(out, v),
            Self::PublishError(m) => m.encode(out, v),
        }
    }
}

macro_rules! into_control {
    ($($name:ident),* $(,)?) => {
        $(impl From<$name> for ControlMessage {
            fn from(m: $name) -> Self {
                ControlMessage::$name(m)
            }
        })*
    };
}

into_control!(
    ClientSetup,
    ServerSetup,
    SubscribeUpdate,
    Subscribe,
    SubscribeOk,
    SubscribeError,
    PublishNamespace,
    PublishNamespaceOk,
    PublishNamespaceError,
    PublishNamespaceDone,
    Unsubscribe,
    PublishDone,
    PublishNamespaceCancel,
    Goaway,
    SubscribeNamespace,
    SubscribeNamespaceOk,
    SubscribeNamespaceError,
    UnsubscribeNamespace,
    MaxRequestId,
    Fetch,
    FetchCancel,
    FetchOk,
    FetchError,
    RequestsBlocked,
    Publish,
    PublishOk,
    PublishError,
);
