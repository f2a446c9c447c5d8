//! The moq-lite wire codec: pure functions from bytes to messages and back, no I/O.
//!
//! Code of record: moq-net 0.3.18 (`src/lite/`). Every layout here was read from
//! that code and the golden tests in `golden.rs` were produced by running its own
//! encoder, so qumo is checked byte for byte against the reference.
//!
//! # How to use it
//!
//! Every message implements [`Decode`] and [`Encode`]:
//!
//! ```
//! use qumo::lite::{Decode, Encode, Limits, Probe, Version};
//!
//! let mut wire = Vec::new();
//! let probe = Probe { bitrate: Some(5_000_000), rtt: Some(40) };
//! probe.encode(&mut wire, Version::Lite05).unwrap();
//!
//! let (decoded, used) = Probe::decode(&wire, Version::Lite05, &Limits::default()).unwrap();
//! assert_eq!((decoded, used), (probe, wire.len()));
//! ```
//!
//! A decoder reads from a borrowed slice and returns the message with the number of
//! bytes it used; it never consumes anything itself. A stream reader therefore keeps
//! its receive buffer, calls `decode` on everything buffered so far, and:
//! - on `Ok((msg, n))` advances the buffer by `n`;
//! - on [`DecodeError::Short`] waits for more bytes and calls again (nothing was lost);
//! - on any other error closes the stream/session: the bytes are malformed and more
//!   data cannot fix them.
//!
//! # Stream layouts (moq-lite-04 .. 06)
//!
//! Bidirectional streams start with a [`BidiType`], unidirectional ones with a
//! [`UniType`]. Then:
//! - Announce (1): subscriber sends [`AnnounceRequest`]; publisher answers
//!   [`AnnounceOk`] (05+) then a sequence of [`Announce`].
//! - Subscribe (2): [`Subscribe`], then any number of [`SubscribeUpdate`]; publisher
//!   answers with [`SubscribeReply`] messages.
//! - Fetch (3, 05+ sessions): [`Fetch`]; publisher answers with bare FRAMEs
//!   ([`FrameHeader`] + payload) up to FIN.
//! - Probe (4): publisher sends [`Probe`] reports.
//! - Goaway (5): [`Goaway`].
//! - Track (6, 05+): [`TrackRequest`] -> [`TrackInfo`].
//! - Uni Group (0): [`GroupHeader`], then FRAMEs to FIN.
//! - Uni Setup (1, 05+): one [`Setup`], then FIN.
//! - QUIC datagrams (05+): [`DatagramHeader`] + payload.

mod announce;
mod code;
// Shared with `crate::ietf`, whose wire uses the same varints, cursor and sizing pass.
pub(crate) mod coding;
mod error;
mod fetch;
#[doc(hidden)]
pub mod fuzzing;
mod goaway;
#[cfg(test)]
mod golden;
mod group;
mod limits;
mod probe;
mod setup;
mod stream;
mod subscribe;
#[cfg(test)]
pub(crate) mod testutil;
mod track;
mod version;

pub use announce::{Announce, AnnounceOk, AnnounceRequest, Cost, MAX_HOPS};
pub use code::{SessionCode, StreamCode};
pub use coding::{
    decode_varint, encode_varint, varint_len, zigzag_decode, zigzag_encode, Decode, Encode,
    VARINT_MAX,
};
pub use error::{DecodeError, EncodeError};
pub use fetch::Fetch;
pub use goaway::{Goaway, MAX_GOAWAY_URI};
pub use group::{DatagramHeader, FrameHeader, GroupHeader, Timestamps};
pub use limits::{Limits, MAX_PATH_SEGMENTS};
pub use probe::Probe;
pub use setup::{ProbeLevel, Role, Setup, MAX_SETUP_PARAMETERS};
pub use stream::{BidiType, UniType};
pub use subscribe::{Subscribe, SubscribeDrop, SubscribeOk, SubscribeReply, SubscribeUpdate};
pub use track::{TrackInfo, TrackRequest};
pub use version::{Version, ALPNS};
