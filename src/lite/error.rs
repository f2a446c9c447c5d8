//! Decode and encode errors.
//!
//! The one distinction every caller must make is [`DecodeError::Short`] (wait for more
//! bytes and call again) versus everything else (malformed: close the stream or the
//! session). `Short` is only ever returned when the *stream* ran out; running out
//! inside a length-prefixed body is [`DecodeError::Truncated`], because the prefix
//! already said how long the body is and more bytes cannot fix it (moq-net maps that
//! case to `InvalidValue` for the same reason).

use super::Version;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The buffer ends before the message does. Nothing was consumed: call again with
    /// more bytes.
    #[error("need more bytes")]
    Short,

    /// A length-prefixed body ended in the middle of a field.
    #[error("{what}: body ends in the middle of a field")]
    Truncated {
        /// The message whose body was too short.
        what: &'static str,
    },

    /// A string field is not UTF-8.
    #[error("{what}: invalid UTF-8")]
    InvalidUtf8 {
        /// The field.
        what: &'static str,
    },

    /// A length or count exceeds the receiver's limit. Detected from the prefix alone,
    /// before buffering or allocating.
    #[error("{what}: length {len} exceeds the limit of {max}")]
    TooLong {
        /// The field or message.
        what: &'static str,
        /// The length the peer claimed.
        len: u64,
        /// The limit in force.
        max: u64,
    },

    /// A type discriminator (stream type, reply type) that this version does not define.
    #[error("{what}: unknown type {ty}")]
    UnknownType {
        /// Which discriminator.
        what: &'static str,
        /// The value received.
        ty: u64,
    },

    /// A field holds a value outside its permitted range.
    #[error("invalid {what}")]
    InvalidValue {
        /// The field, and what is wrong with it.
        what: &'static str,
    },

    /// A length-prefixed body has bytes left over after its last field. moq-net
    /// rejects this (`DecodeError::Long`), so qumo does too.
    #[error("{what}: {extra} trailing bytes in the body")]
    TrailingBytes {
        /// The message.
        what: &'static str,
        /// How many bytes were left.
        extra: usize,
    },

    /// A decoded value does not fit where it must go (a timestamp delta that takes
    /// the running timestamp below 0 or past 2^62-1, a length beyond `usize`).
    #[error("{what}: value out of range")]
    VarintOverflow {
        /// The field.
        what: &'static str,
    },

    /// An id that must be unique appeared twice (SETUP parameter, hop in a chain).
    #[error("duplicate {what} {id}")]
    Duplicate {
        /// What was repeated.
        what: &'static str,
        /// The repeated id.
        id: u64,
    },

    /// The message does not exist in the negotiated version.
    #[error("{what} does not exist in {version}")]
    NotInVersion {
        /// The message.
        what: &'static str,
        /// The negotiated version.
        version: Version,
    },
}

impl DecodeError {
    /// Whether the caller should wait for more bytes and retry (the only recoverable
    /// error).
    pub fn is_short(&self) -> bool {
        matches!(self, DecodeError::Short)
    }
}

/// Why a message could not be encoded. Nothing is written when encoding fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// An integer does not fit a QUIC varint (2^62-1), or a signed delta does not fit
    /// zigzag's range (-2^61 ..= 2^61-1).
    #[error("{what}: {value} does not fit a varint")]
    VarintOverflow {
        /// The field.
        what: &'static str,
        /// The value (for signed deltas, the raw bits).
        value: u64,
    },

    /// The message or field does not exist in the target version, and dropping it
    /// would change the meaning (moq-net refuses the same cases).
    #[error("{what} cannot be sent in {version}")]
    NotInVersion {
        /// The message or field.
        what: &'static str,
        /// The target version.
        version: Version,
    },

    /// The message is internally inconsistent (e.g. a frame bound without the group
    /// it qualifies) and a conforming receiver would reject it.
    #[error("invalid {what}")]
    InvalidValue {
        /// What is wrong.
        what: &'static str,
    },

    /// A list or string is longer than the wire format allows.
    #[error("{what}: length {len} exceeds the limit of {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The wire limit.
        max: u64,
    },

    /// The output buffer cannot grow to hold the message.
    #[error("output buffer full: need {needed} bytes, {available} available")]
    BufferFull {
        /// Bytes the message takes.
        needed: usize,
        /// Bytes the buffer can still take.
        available: usize,
    },
}
