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

/// xorshift64*: tiny, deterministic, good enough to drive the bodies.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Flip, insert, delete, or overwrite a few bytes, or cut the tail.
pub(crate) fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut input = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len());
        match rng.below(6) {
            0 if !input.is_empty() => input[at] ^= 1 << rng.below(8),
            1 => input.insert(at.min(input.len()), rng.next() as u8),
            2 if input.len() > 1 => {
                input.remove(at);
            }
            3 if !input.is_empty() => {
                input[at] = [0x00, 0x3f, 0x40, 0x7f, 0xc0, 0xff][rng.below(6)]
            }
            4 => input.truncate(at),
            _ => input.extend((0..rng.below(8)).map(|_| rng.next() as u8)),
        }
    }
    input
}
