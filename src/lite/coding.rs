//! Primitive wire encodings and the two traits every message implements.
//!
//! Notation (from PROTOCOL.md): `i` QUIC varint; `s` = `i` byte length then UTF-8;
//! `opt` = `i` where 0 is none, else value + 1; `L` = `i` byte length of the body
//! that follows; `u8` one raw byte.
//!
//! Decoding goes through [`Reader`], a cursor over a borrowed slice, so a decoder
//! cannot consume the caller's buffer: the public [`Decode::decode`] reports how many
//! bytes it used and the caller advances only on success. Encoding goes through
//! [`Writer`], which first runs a message's encoder against a byte counter, so that
//! every error is found and the output's capacity checked before anything is written.

use bytes::BufMut;

use super::{DecodeError, EncodeError, Limits, Version, MAX_PATH_SEGMENTS};

/// The largest value a QUIC varint holds, 2^62-1.
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// Bytes the QUIC varint encoding of `v` takes (1, 2, 4 or 8), or `None` above
/// [`VARINT_MAX`].
pub const fn varint_len(v: u64) -> Option<usize> {
    if v < 1 << 6 {
        Some(1)
    } else if v < 1 << 14 {
        Some(2)
    } else if v < 1 << 30 {
        Some(4)
    } else if v <= VARINT_MAX {
        Some(8)
    } else {
        None
    }
}

/// Write `v` as a QUIC varint in its shortest form.
///
/// Fails without writing if `v` exceeds [`VARINT_MAX`] or `out` cannot take it.
pub fn encode_varint<B: BufMut>(v: u64, out: &mut B) -> Result<usize, EncodeError> {
    let len = varint_len(v).ok_or(EncodeError::VarintOverflow {
        what: "varint",
        value: v,
    })?;
    if out.remaining_mut() < len {
        return Err(EncodeError::BufferFull {
            needed: len,
            available: out.remaining_mut(),
        });
    }
    let mut tmp = [0u8; 8];
    out.put_slice(varint_bytes(v, len, &mut tmp));
    Ok(len)
}

/// Fill `tmp` with the `len`-byte varint form of `v` (which must fit) and borrow it.
fn varint_bytes(v: u64, len: usize, tmp: &mut [u8; 8]) -> &[u8] {
    // The two-bit length tag goes in the top bits of the first byte.
    let tagged = match len {
        1 => v,
        2 => v | 0b01 << 14,
        4 => v | 0b10 << 30,
        _ => v | 0b11 << 62,
    };
    *tmp = tagged.to_be_bytes();
    // `len` is 1, 2, 4 or 8 (from `varint_len`), so the range is always in bounds.
    tmp.get(8usize.saturating_sub(len)..).unwrap_or_default()
}

/// Decode one QUIC varint from the front of `buf`: `(value, bytes used)`.
///
/// Non-shortest encodings are accepted, as QUIC and moq-net accept them.
pub fn decode_varint(buf: &[u8]) -> Result<(u64, usize), DecodeError> {
    let mut r = Reader::new(buf);
    let v = r.varint()?;
    Ok((v, r.consumed()))
}

/// Map a signed delta onto the unsigned varint space: 0, -1, 1, -2 ... -> 0, 1, 2, 3 ...
///
/// The result must fit a varint, so `n` must lie in -2^61 ..= 2^61-1 (moq-net's
/// `VarInt::from_zigzag` has the same bound).
pub fn zigzag_encode(n: i64) -> Result<u64, EncodeError> {
    const RANGE: i64 = 1 << 61;
    if !(-RANGE..RANGE).contains(&n) {
        return Err(EncodeError::VarintOverflow {
            what: "zigzag delta",
            value: n as u64,
        });
    }
    Ok(((n << 1) ^ (n >> 63)) as u64)
}

/// The inverse of [`zigzag_encode`]. Total: every varint maps to a delta.
pub const fn zigzag_decode(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Decode a message from the front of a buffer.
pub trait Decode: Sized {
    /// Decode one message from the front of `buf` for `version`, returning it and
    /// the number of bytes it took.
    ///
    /// Never consumes: on [`DecodeError::Short`] call again once more bytes arrived.
    /// Never panics and never allocates more than `limits` allow, whatever `buf` holds.
    fn decode(buf: &[u8], version: Version, limits: &Limits) -> Result<(Self, usize), DecodeError>;
}

/// Encode a message.
pub trait Encode {
    /// Append the message for `version` to `out`, returning the bytes written.
    ///
    /// On error nothing has been written.
    fn encode<B: BufMut>(&self, out: &mut B, version: Version) -> Result<usize, EncodeError>;

    /// Encode into a fresh vector.
    fn to_vec(&self, version: Version) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out, version)?;
        Ok(out)
    }
}

/// A message framed as `L, body`. Implementing this gives [`Decode`] and [`Encode`].
pub(crate) trait Framed: Sized {
    /// Name used in errors.
    const WHAT: &'static str;

    /// Whether the message exists in `version`.
    fn exists_in(_version: Version) -> bool {
        true
    }

    /// Write the body (without the `L` prefix).
    fn write_body(&self, w: &mut Writer<'_>, version: Version) -> Result<(), EncodeError>;

    /// Read the body from a reader bounded to exactly `L` bytes.
    fn read_body(
        r: &mut Reader<'_>,
        version: Version,
        limits: &Limits,
    ) -> Result<Self, DecodeError>;
}

impl<T: Framed> Decode for T {
    fn decode(buf: &[u8], version: Version, limits: &Limits) -> Result<(Self, usize), DecodeError> {
        if !T::exists_in(version) {
            return Err(DecodeError::NotInVersion {
                what: T::WHAT,
                version,
            });
        }
        let mut r = Reader::new(buf);
        let mut body = r.sized(T::WHAT, limits.max_message)?;
        let msg = T::read_body(&mut body, version, limits)?;
        body.finish()?;
        Ok((msg, r.consumed()))
    }
}

impl<T: Framed> Encode for T {
    fn encode<B: BufMut>(&self, out: &mut B, version: Version) -> Result<usize, EncodeError> {
        if !T::exists_in(version) {
            return Err(EncodeError::NotInVersion {
                what: T::WHAT,
                version,
            });
        }
        emit(out, |w| w.sized(|w| self.write_body(w, version)))
    }
}

/// A cursor over a borrowed buffer.
///
/// `body` is set for a reader confined to one `L` body: running out there is
/// [`DecodeError::Truncated`] rather than [`DecodeError::Short`].
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    body: Option<&'static str>,
}

impl<'a> Reader<'a> {
    /// A reader over a stream buffer (running out is `Short`).
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            body: None,
        }
    }

    /// A reader over a complete unit whose end is known, such as a QUIC datagram or
    /// a SETUP parameter value (running out is `Truncated`).
    pub fn bounded(buf: &'a [u8], what: &'static str) -> Self {
        Self {
            buf,
            pos: 0,
            body: Some(what),
        }
    }

    /// Bytes read so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The error for running out of input here.
    fn short(&self) -> DecodeError {
        match self.body {
            None => DecodeError::Short,
            Some(what) => DecodeError::Truncated { what },
        }
    }

    /// Take the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.short())?;
        let bytes = self.buf.get(self.pos..end).ok_or_else(|| self.short())?;
        self.pos = end;
        Ok(bytes)
    }

    /// Take everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let bytes = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        bytes
    }

    /// One raw byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = self.take(1)?;
        Ok(b.first().copied().unwrap_or_default())
    }

    /// A QUIC varint.
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let first = *self.buf.get(self.pos).ok_or_else(|| self.short())?;
        let len = 1usize << (first >> 6);
        let bytes = self.take(len)?;
        let mut v = u64::from(first & 0x3f);
        for b in bytes.iter().skip(1) {
            v = (v << 8) | u64::from(*b);
        }
        Ok(v)
    }

    /// `opt`: 0 is none, else value + 1.
    pub fn opt(&mut self) -> Result<Option<u64>, DecodeError> {
        Ok(self.varint()?.checked_sub(1))
    }

    /// A varint byte length, refused above `max` before any of its bytes are needed.
    pub fn length(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let len = self.varint()?;
        match usize::try_from(len) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(DecodeError::TooLong {
                what,
                len,
                max: max as u64,
            }),
        }
    }

    /// `s`: a length-prefixed UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, what: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = self.length(what, max)?;
        let bytes = self.take(len)?;
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { what })?;
        Ok(s.to_owned())
    }

    /// A broadcast path (`s`), also bounded to [`MAX_PATH_SEGMENTS`] segments.
    ///
    /// Kept verbatim: moq-net normalises paths on decode (trims and collapses `/`),
    /// which is a job for the relay's path type, not for the wire codec.
    pub fn path(&mut self, what: &'static str, limits: &Limits) -> Result<String, DecodeError> {
        let s = self.string(what, limits.max_path)?;
        let segments = path_segments(&s);
        if segments > MAX_PATH_SEGMENTS {
            return Err(DecodeError::TooLong {
                what: "path segments",
                len: segments as u64,
                max: MAX_PATH_SEGMENTS as u64,
            });
        }
        Ok(s)
    }

    /// `L`: a length-prefixed body of at most `max` bytes, as a reader confined to it.
    ///
    /// The limit is checked on the prefix alone; the whole body must be buffered
    /// before it can be read (`Short` until then).
    pub fn sized(&mut self, what: &'static str, max: usize) -> Result<Reader<'a>, DecodeError> {
        let len = self.length(what, max)?;
        let body = self.take(len)?;
        Ok(Reader::bounded(body, what))
    }

    /// Require the body to be used up exactly.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes {
                what: self.body.unwrap_or("message"),
                extra,
            }),
        }
    }
}

/// Non-empty `/`-separated segments, as moq-net's `Path::parts` counts them.
pub(crate) fn path_segments(path: &str) -> usize {
    path.split('/').filter(|p| !p.is_empty()).count()
}

/// Where a [`Writer`] puts bytes: a counter for the sizing pass, or real output.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

/// Counts bytes without storing them.
struct Counter(usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

/// Writes into a caller's buffer.
struct Out<'a, B: BufMut>(&'a mut B);

impl<B: BufMut> Sink for Out<'_, B> {
    fn put(&mut self, bytes: &[u8]) {
        self.0.put_slice(bytes);
    }
}

/// Writes primitives into a [`Sink`]. Every method validates before it writes, so
/// the sizing pass finds every error.
pub(crate) struct Writer<'a> {
    sink: &'a mut dyn Sink,
}

impl<'a> Writer<'a> {
    /// One raw byte.
    pub fn u8(&mut self, v: u8) {
        self.sink.put(&[v]);
    }

    /// Raw bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.sink.put(b);
    }

    /// A QUIC varint.
    pub fn varint(&mut self, what: &'static str, v: u64) -> Result<(), EncodeError> {
        let len = varint_len(v).ok_or(EncodeError::VarintOverflow { what, value: v })?;
        let mut tmp = [0u8; 8];
        self.sink.put(varint_bytes(v, len, &mut tmp));
        Ok(())
    }

    /// `opt`: none as 0, else value + 1.
    pub fn opt(&mut self, what: &'static str, v: Option<u64>) -> Result<(), EncodeError> {
        match v {
            None => self.varint(what, 0),
            Some(v) if v < VARINT_MAX => self.varint(what, v + 1),
            Some(v) => Err(EncodeError::VarintOverflow { what, value: v }),
        }
    }

    /// `s`: length then UTF-8 bytes.
    pub fn string(&mut self, what: &'static str, s: &str) -> Result<(), EncodeError> {
        self.varint(what, s.len() as u64)?;
        self.bytes(s.as_bytes());
        Ok(())
    }

    /// A broadcast path: a string of at most [`MAX_PATH_SEGMENTS`] segments.
    pub fn path(&mut self, what: &'static str, s: &str) -> Result<(), EncodeError> {
        let segments = path_segments(s);
        if segments > MAX_PATH_SEGMENTS {
            return Err(EncodeError::TooLong {
                what,
                len: segments as u64,
                max: MAX_PATH_SEGMENTS as u64,
            });
        }
        self.string(what, s)
    }

    /// `L, body`: runs `body` once to size it, then writes the length and the body.
    pub fn sized(
        &mut self,
        body: impl Fn(&mut Writer<'_>) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        let mut counter = Counter(0);
        body(&mut Writer { sink: &mut counter })?;
        self.varint("length", counter.0 as u64)?;
        body(self)
    }
}

impl Writer<'_> {
    /// `u16, body`: a body behind a 16-bit big-endian length (the IETF control
    /// message framing). Refuses a body over 65535 bytes.
    pub fn sized_u16(
        &mut self,
        what: &'static str,
        body: impl Fn(&mut Writer<'_>) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        let mut counter = Counter(0);
        body(&mut Writer { sink: &mut counter })?;
        let len = u16::try_from(counter.0).map_err(|_| EncodeError::TooLong {
            what,
            len: counter.0 as u64,
            max: u64::from(u16::MAX),
        })?;
        self.bytes(&len.to_be_bytes());
        body(self)
    }
}

/// Run `f` against a counter, check that `out` can take that many bytes, then run it
/// for real. Returns the bytes written; writes nothing on error.
pub(crate) fn emit<B: BufMut>(
    out: &mut B,
    f: impl Fn(&mut Writer<'_>) -> Result<(), EncodeError>,
) -> Result<usize, EncodeError> {
    let mut counter = Counter(0);
    f(&mut Writer { sink: &mut counter })?;
    let needed = counter.0;
    let available = out.remaining_mut();
    if available < needed {
        return Err(EncodeError::BufferFull { needed, available });
    }
    f(&mut Writer {
        sink: &mut Out(out),
    })?;
    Ok(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_use_the_shortest_of_four_sizes() {
        let cases: [(u64, &[u8]); 8] = [
            (0, &[0x00]),
            (63, &[0x3f]),
            (64, &[0x40, 0x40]),
            (16383, &[0x7f, 0xff]),
            (16384, &[0x80, 0x00, 0x40, 0x00]),
            ((1 << 30) - 1, &[0xbf, 0xff, 0xff, 0xff]),
            (1 << 30, &[0xc0, 0, 0, 0, 0x40, 0, 0, 0]),
            (VARINT_MAX, &[0xff; 8]),
        ];
        for (v, wire) in cases {
            let mut out = Vec::new();
            assert_eq!(encode_varint(v, &mut out), Ok(wire.len()));
            assert_eq!(out, wire, "{v}");
            assert_eq!(decode_varint(wire), Ok((v, wire.len())));
        }
    }

    #[test]
    fn varint_above_2_pow_62_is_refused_without_writing() {
        let mut out = Vec::new();
        assert!(matches!(
            encode_varint(VARINT_MAX + 1, &mut out),
            Err(EncodeError::VarintOverflow { .. })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn varint_truncated_at_every_prefix_is_short() {
        let wire = [0xc0, 0, 0, 0, 0x40, 0, 0, 0];
        for n in 0..wire.len() {
            assert_eq!(decode_varint(&wire[..n]), Err(DecodeError::Short), "{n}");
        }
    }

    #[test]
    fn non_shortest_varints_decode_like_moq_net() {
        assert_eq!(decode_varint(&[0x40, 0x05]), Ok((5, 2)));
    }

    #[test]
    fn varint_into_a_full_buffer_fails_cleanly() {
        let mut backing = [0u8; 1];
        let mut out: &mut [u8] = &mut backing;
        assert!(matches!(
            encode_varint(300, &mut out),
            Err(EncodeError::BufferFull {
                needed: 2,
                available: 1
            })
        ));
    }

    #[test]
    fn zigzag_maps_small_magnitudes_to_small_codes() {
        for (n, z) in [(0i64, 0u64), (-1, 1), (1, 2), (-2, 3), (2, 4)] {
            assert_eq!(zigzag_encode(n), Ok(z));
            assert_eq!(zigzag_decode(z), n);
        }
        let lo = -(1i64 << 61);
        let hi = (1i64 << 61) - 1;
        for n in [lo, hi] {
            let z = zigzag_encode(n).unwrap();
            assert!(z <= VARINT_MAX);
            assert_eq!(zigzag_decode(z), n);
        }
        assert!(zigzag_encode(lo - 1).is_err());
        assert!(zigzag_encode(hi + 1).is_err());
    }

    #[test]
    fn opt_is_value_plus_one_with_zero_for_none() {
        let mut out = Vec::new();
        emit(&mut out, |w| {
            w.opt("x", None)?;
            w.opt("x", Some(0))?;
            w.opt("x", Some(62))
        })
        .unwrap();
        assert_eq!(out, [0, 1, 63]);
        let mut r = Reader::new(&out);
        assert_eq!(r.opt(), Ok(None));
        assert_eq!(r.opt(), Ok(Some(0)));
        assert_eq!(r.opt(), Ok(Some(62)));
        assert!(matches!(
            emit(&mut Vec::new(), |w| w.opt("x", Some(VARINT_MAX))),
            Err(EncodeError::VarintOverflow { .. })
        ));
    }

    #[test]
    fn string_length_over_the_limit_is_too_long_before_the_bytes_arrive() {
        // A 2^30-byte string with only its prefix present.
        let wire = [0xc0, 0, 0, 0, 0x40, 0, 0, 0];
        let mut r = Reader::new(&wire);
        assert_eq!(
            r.string("name", 100),
            Err(DecodeError::TooLong {
                what: "name",
                len: 1 << 30,
                max: 100
            })
        );
    }

    #[test]
    fn string_rejects_invalid_utf8() {
        let wire = [2, 0xc3, 0x28];
        assert_eq!(
            Reader::new(&wire).string("name", 10),
            Err(DecodeError::InvalidUtf8 { what: "name" })
        );
    }

    #[test]
    fn running_out_inside_a_body_is_truncated_not_short() {
        let wire = [2, 0x40, 0x40];
        let mut body = Reader::new(&wire).sized("msg", 10).unwrap();
        assert_eq!(body.varint(), Ok(64));
        assert_eq!(body.varint(), Err(DecodeError::Truncated { what: "msg" }));
        let mut short = Reader::new(&wire[..2]);
        assert_eq!(short.sized("msg", 10).map(|_| ()), Err(DecodeError::Short));
    }

    #[test]
    fn path_deeper_than_32_segments_is_refused_both_ways() {
        let deep = vec!["a"; 33].join("/");
        let mut out = Vec::new();
        assert!(emit(&mut out, |w| w.path("path", &deep)).is_err());
        emit(&mut out, |w| w.string("path", &deep)).unwrap();
        assert!(matches!(
            Reader::new(&out).path("path", &Limits::default()),
            Err(DecodeError::TooLong { len: 33, .. })
        ));
        let ok = vec!["a"; 32].join("//");
        let mut out = Vec::new();
        emit(&mut out, |w| w.path("path", &ok)).unwrap();
        assert_eq!(Reader::new(&out).path("path", &Limits::default()), Ok(ok));
    }
}
