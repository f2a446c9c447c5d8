//! Draft-22 primitives: the leading-ones varint (draft 17 on, section 1.4.1) and
//! the fields built from it, on top of the moq-lite cursor.
//!
//! The varint's first byte says its length by its count of leading 1 bits: `0x`
//! 1 byte (7 bits), `10` 2 (14), `110` 3 (21), `1110` 4 (28), `11110` 5 (35),
//! `111110` 6 (42), `1111110` 7 (49), `11111110` 8 (56), `11111111` 9 (64).
//! The encoder writes the shortest form but skips the 7-byte one, as moq-net
//! does (draft 17 reserved it); the decoder accepts every form.

use crate::lite::coding::{Reader, Writer};
use crate::lite::{DecodeError, EncodeError, Limits};

use crate::ietf::{Location, MAX_NAMESPACE_FIELDS, MAX_PARAMETER_VALUE};

/// Encode `v` into `tmp`, returning the bytes used.
pub fn encode_varint(v: u64, tmp: &mut [u8; 9]) -> &[u8] {
    let (len, prefix): (usize, u8) = match v {
        _ if v < 1 << 7 => (1, 0x00),
        _ if v < 1 << 14 => (2, 0x80),
        _ if v < 1 << 21 => (3, 0xc0),
        _ if v < 1 << 28 => (4, 0xe0),
        _ if v < 1 << 35 => (5, 0xf0),
        _ if v < 1 << 42 => (6, 0xf8),
        _ if v < 1 << 56 => (8, 0xfe),
        _ => (9, 0xff),
    };
    let be = v.to_be_bytes();
    match len {
        9 => {
            tmp[0] = 0xff;
            tmp[1..].copy_from_slice(&be);
        }
        8 => {
            tmp[0] = 0xfe;
            tmp[1..8].copy_from_slice(&be[1..]);
        }
        _ => {
            tmp[..len].copy_from_slice(&be[8 - len..]);
            tmp[0] |= prefix;
        }
    }
    &tmp[..len]
}

/// Decode one varint from the front of `buf`: the value and the bytes used.
pub fn decode_varint(buf: &[u8]) -> Result<(u64, usize), DecodeError> {
    let mut r = Reader::new(buf);
    let v = read_varint(&mut r)?;
    Ok((v, r.consumed()))
}

/// A leading-ones varint.
pub(crate) fn read_varint(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    let first = r.u8()?;
    let ones = first.leading_ones() as usize;
    // Bits of the first byte that carry value: none once it is all prefix.
    let (len, head) = match ones {
        0..=6 => (ones + 1, u64::from(first) & (0x7f >> ones)),
        7 => (8, 0),
        _ => (9, 0),
    };
    let rest = r.take(len - 1)?;
    Ok(rest.iter().fold(head, |v, b| (v << 8) | u64::from(*b)))
}

/// Write a leading-ones varint.
pub(crate) fn write_varint(w: &mut Writer<'_>, v: u64) {
    let mut tmp = [0u8; 9];
    w.bytes(encode_varint(v, &mut tmp));
}

/// A varint byte length, refused above `max` before its bytes are needed.
pub(crate) fn read_length(
    r: &mut Reader<'_>,
    what: &'static str,
    max: usize,
) -> Result<usize, DecodeError> {
    let len = read_varint(r)?;
    match usize::try_from(len) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(DecodeError::TooLong {
            what,
            len,
            max: max as u64,
        }),
    }
}

/// Length-prefixed bytes of at most `max`.
pub(crate) fn read_bytes<'a>(
    r: &mut Reader<'a>,
    what: &'static str,
    max: usize,
) -> Result<&'a [u8], DecodeError> {
    let len = read_length(r, what, max)?;
    r.take(len)
}

/// A length-prefixed UTF-8 string of at most `max` bytes.
pub(crate) fn read_string(
    r: &mut Reader<'_>,
    what: &'static str,
    max: usize,
) -> Result<String, DecodeError> {
    let bytes = read_bytes(r, what, max)?;
    let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { what })?;
    Ok(s.to_owned())
}

/// Length-prefixed bytes.
pub(crate) fn write_bytes(w: &mut Writer<'_>, b: &[u8]) {
    write_varint(w, b.len() as u64);
    w.bytes(b);
}

/// A one-byte boolean (0 or 1).
pub(crate) fn read_bool(r: &mut Reader<'_>, what: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidValue { what }),
    }
}

/// A Location: two varints, no length.
pub(crate) fn read_location(r: &mut Reader<'_>) -> Result<Location, DecodeError> {
    Ok(Location {
        group: read_varint(r)?,
        object: read_varint(r)?,
    })
}

pub(crate) fn write_location(w: &mut Writer<'_>, l: Location) {
    write_varint(w, l.group);
    write_varint(w, l.object);
}

/// A Track Namespace tuple, bounded like draft 14's (32 fields, `max_path` bytes).
pub(crate) fn read_namespace(
    r: &mut Reader<'_>,
    limits: &Limits,
) -> Result<Vec<String>, DecodeError> {
    let count = read_varint(r)?;
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
        let field = read_string(r, "namespace", limits.max_path.saturating_sub(total))?;
        total += field.len();
        fields.push(field);
    }
    Ok(fields)
}

pub(crate) fn write_namespace(w: &mut Writer<'_>, fields: &[String]) -> Result<(), EncodeError> {
    if fields.len() > MAX_NAMESPACE_FIELDS {
        return Err(EncodeError::TooLong {
            what: "namespace fields",
            len: fields.len() as u64,
            max: MAX_NAMESPACE_FIELDS as u64,
        });
    }
    write_varint(w, fields.len() as u64);
    for field in fields {
        write_bytes(w, field.as_bytes());
    }
    Ok(())
}

/// A byte string that must fit a Key-Value-Pair value.
pub(crate) fn check_value(what: &'static str, b: &[u8]) -> Result<(), EncodeError> {
    if b.len() > MAX_PARAMETER_VALUE {
        return Err(EncodeError::TooLong {
            what,
            len: b.len() as u64,
            max: MAX_PARAMETER_VALUE as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length boundary, against moq-net 0.3.18's `encode_leading_ones` (the
    /// bytes were printed by its encoder on draft 22).
    #[test]
    fn varints_match_moq_net_at_every_length_boundary() {
        let cases: [(u64, &str); 20] = [
            (0, "00"),
            (1, "01"),
            (0x25, "25"),
            (0x7f, "7f"),
            (0x80, "8080"),
            (0x3fff, "bfff"),
            (0x4000, "c04000"),
            (0x1f_ffff, "dfffff"),
            (0x20_0000, "e0200000"),
            (0x0fff_ffff, "efffffff"),
            (0x1000_0000, "f010000000"),
            (0x7_ffff_ffff, "f7ffffffff"),
            (0x8_0000_0000, "f80800000000"),
            (0x3ff_ffff_ffff, "fbffffffffff"),
            (0x400_0000_0000, "fe00040000000000"),
            (0x1_ffff_ffff_ffff, "fe01ffffffffffff"),
            (0x2_0000_0000_0000, "fe02000000000000"),
            (0xff_ffff_ffff_ffff, "feffffffffffffff"),
            (0x100_0000_0000_0000, "ff0100000000000000"),
            (0x3fff_ffff_ffff_ffff, "ff3fffffffffffffff"),
        ];
        for (v, hex) in cases {
            let mut tmp = [0u8; 9];
            let wire = encode_varint(v, &mut tmp);
            let got: String = wire.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(got, hex, "encode {v:#x}");
            assert_eq!(decode_varint(wire), Ok((v, wire.len())), "decode {hex}");
            for cut in 0..wire.len() {
                assert_eq!(decode_varint(&wire[..cut]), Err(DecodeError::Short));
            }
        }
    }

    #[test]
    fn the_seven_byte_form_and_full_64_bits_decode() {
        // 1111110x: 49 bits in 7 bytes; moq-net never writes it, but draft 22 allows it.
        let seven = [0xfd, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd];
        assert_eq!(decode_varint(&seven), Ok((0x1_2345_6789_abcd, 7)));
        assert_eq!(decode_varint(&[0xff; 9]), Ok((u64::MAX, 9)));
        let mut tmp = [0u8; 9];
        assert_eq!(encode_varint(u64::MAX, &mut tmp), &[0xff; 9]);
    }
}
