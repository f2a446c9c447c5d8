//! Helpers shared by the per-message tests.

use std::fmt::Debug;

use super::{encode_varint, Decode, DecodeError, Encode, Limits, Version};

/// Encode, decode, and check: the message comes back equal, exactly the encoded bytes
/// are consumed (even with more bytes behind them), and every proper prefix of the
/// encoding is `Short`. Returns the encoding.
pub fn round_trip<T: Decode + Encode + PartialEq + Debug>(msg: &T, v: Version) -> Vec<u8> {
    let wire = msg
        .to_vec(v)
        .unwrap_or_else(|e| panic!("{v}: encode {msg:?}: {e}"));
    let limits = Limits::default();
    let (back, used) = T::decode(&wire, v, &limits).unwrap_or_else(|e| panic!("{v}: {e}"));
    assert_eq!(&back, msg, "{v}");
    assert_eq!(used, wire.len(), "{v}");

    let mut more = wire.clone();
    more.extend_from_slice(&[0x3f, 0xff, 0x00]);
    let (_, used) = T::decode(&more, v, &limits).unwrap();
    assert_eq!(used, wire.len(), "{v}: consumed past its own bytes");

    every_prefix_is_short::<T>(&wire, v);
    wire
}

/// Every proper prefix of `wire` decodes as `Short` (so a caller that retries loses
/// nothing: `decode` borrows and cannot consume).
pub fn every_prefix_is_short<T: Decode + Debug>(wire: &[u8], v: Version) {
    let limits = Limits::default();
    for n in 0..wire.len() {
        assert_eq!(
            T::decode(&wire[..n], v, &limits).err(),
            Some(DecodeError::Short),
            "{v}: prefix of {n} bytes of {wire:02x?}"
        );
    }
}

/// Decode with default limits and return the error.
pub fn decode_err<T: Decode + Debug>(wire: &[u8], v: Version) -> DecodeError {
    match T::decode(wire, v, &Limits::default()) {
        Ok(ok) => panic!("{v}: {wire:02x?} decoded as {ok:?}"),
        Err(e) => e,
    }
}

/// A varint's bytes.
pub fn varint(v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_varint(v, &mut out).unwrap();
    out
}

/// `L, body`.
pub fn sized(body: &[u8]) -> Vec<u8> {
    let mut out = varint(body.len() as u64);
    out.extend_from_slice(body);
    out
}

/// Concatenate byte pieces.
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}
