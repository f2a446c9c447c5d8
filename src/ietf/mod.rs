//! The IETF moq-transport wire codec (draft 14 here, draft 22 in [`draft22`]): pure functions from bytes to
//! messages and back, no I/O, in the style of [`crate::lite`].
//!
//! Code of record: moq-net 0.3.18 (`src/ietf/`); the golden tests in `golden.rs`
//! were produced by its own encoders. Where moq-net and the draft text disagree,
//! the type's docs say so and `docs/IETF.md` lists the choice.
//!
//! The primitives (varint cursor, sizing writer) and the error and limit types are
//! shared with the moq-lite codec: both wires use QUIC varints, and a caller treats
//! [`DecodeError::Short`] the same way (wait for bytes, call again; anything else
//! is malformed and closes the session with PROTOCOL_VIOLATION).
//!
//! # Stream layouts (draft 14)
//!
//! - One bidirectional control stream, opened by the client: CLIENT_SETUP, then
//!   SERVER_SETUP back, then any [`ControlMessage`] both ways, each
//!   `Type (i), Length (16), body`.
//! - Unidirectional subgroup streams: [`SubgroupHeader`], then objects
//!   ([`SubgroupObject`] + payload) up to FIN.
//! - Unidirectional fetch streams: [`FetchHeader`], then [`FetchObject`] + payload.
//! - QUIC datagrams: [`DatagramHeader`] + payload.

mod code;
mod coding;
mod control;
mod data;
pub mod draft22;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod golden;
mod setup;
#[cfg(test)]
mod tests;
pub mod token;
mod version;

pub use crate::lite::{DecodeError, EncodeError, Limits};
pub use code::SessionCode;
pub use coding::{
    Decode, Encode, GroupOrder, Location, ParameterValue, Parameters, MAX_NAMESPACE_FIELDS,
    MAX_PARAMETERS, MAX_PARAMETER_VALUE,
};
pub use control::{
    ControlMessage, Fetch, FetchCancel, FetchError, FetchOk, FetchType, Filter, Goaway,
    MaxRequestId, NamespaceInterest, Publish, PublishDone, PublishError, PublishNamespace,
    PublishNamespaceCancel, PublishNamespaceDone, PublishNamespaceError, PublishNamespaceOk,
    PublishOk, RequestsBlocked, Subscribe, SubscribeError, SubscribeNamespace,
    SubscribeNamespaceError, SubscribeNamespaceOk, SubscribeOk, SubscribeUpdate, Unsubscribe,
    UnsubscribeNamespace, MAX_GOAWAY_URI, MAX_REASON,
};
pub use data::{
    DatagramHeader, FetchHeader, FetchObject, ObjectStatus, SubgroupHeader, SubgroupId,
    SubgroupObject, FETCH_HEADER_TYPE,
};
pub use setup::{
    ClientSetup, ServerSetup, MAX_SETUP_VERSIONS, PARAM_AUTHORITY, PARAM_AUTHORIZATION_TOKEN,
    PARAM_IMPLEMENTATION, PARAM_MAX_AUTH_TOKEN_CACHE_SIZE, PARAM_MAX_REQUEST_ID, PARAM_PATH,
};
pub use version::{Version, ALPN_DRAFT14, ALPN_DRAFT22};
