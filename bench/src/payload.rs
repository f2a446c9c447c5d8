//! What a frame carries, and reading frames off a group stream.
//!
//! Every payload starts with its send time: 8 bytes, big-endian microseconds
//! since the process's clock epoch ([`now_us`]). Publishers and subscribers
//! run in one process, so one monotonic clock stamps and measures. The rest
//! of the payload is zero padding up to the frame size.

use std::sync::OnceLock;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use qumo::lite::{Decode, DecodeError, Encode, FrameHeader, Limits, Version};

/// Bytes of send time at the front of every payload.
pub const STAMP_LEN: usize = 8;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The clock's origin; fixed by the first call.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since [`epoch`].
pub fn now_us() -> u64 {
    us_since_epoch(Instant::now())
}

/// Microseconds from [`epoch`] to `t` (0 if `t` is earlier).
pub fn us_since_epoch(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_micros() as u64
}

/// The send-time prefix of a payload.
pub fn encode_stamp(send_us: u64) -> [u8; STAMP_LEN] {
    send_us.to_be_bytes()
}

/// The send time in a payload's first bytes, if it has that many.
pub fn decode_stamp(payload: &[u8]) -> Option<u64> {
    let bytes: [u8; STAMP_LEN] = payload.get(..STAMP_LEN)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Shared zero padding, sliced (not copied) into every frame.
pub fn padding(len: usize) -> Bytes {
    static ZEROS: OnceLock<Bytes> = OnceLock::new();
    let zeros = ZEROS.get_or_init(|| Bytes::from(vec![0u8; 1 << 20]));
    if len <= zeros.len() {
        zeros.slice(..len)
    } else {
        Bytes::from(vec![0u8; len])
    }
}

/// The FRAME header and the send stamp of one frame of `size` payload bytes
/// (`size` >= [`STAMP_LEN`]); the caller follows it with
/// `padding(size - STAMP_LEN)`. `timestamp_delta` is required on lite-05+
/// and must be `None` on lite-04.
pub fn frame_head(
    version: Version,
    timestamp_delta: Option<i64>,
    size: usize,
    send_us: u64,
) -> Bytes {
    let mut out = BytesMut::with_capacity(24);
    let header = FrameHeader {
        timestamp_delta: timestamp_delta.filter(|_| version.has_frame_timestamps()),
        size: size as u64,
    };
    // Only fails on values far past anything a bench frame holds.
    let _ = header.encode(&mut out, version);
    out.put_slice(&encode_stamp(send_us));
    out.freeze()
}

/// One frame read off a group stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Payload bytes.
    pub size: u64,
    /// The send time in its payload; `None` when the payload is too short.
    pub sent_us: Option<u64>,
    /// The FRAME header's timestamp delta (lite-05+).
    pub timestamp_delta: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Header,
    Payload {
        header: FrameHeader,
        remaining: u64,
        stamp: [u8; STAMP_LEN],
        stamp_len: usize,
    },
}

/// Reads FRAMEs from the bytes of a group stream after its GROUP header, as
/// they arrive in chunks of any size. Only header bytes that straddle two
/// chunks and the 8-byte stamp are copied; the padding is skipped.
#[derive(Debug)]
pub struct FrameParser {
    version: Version,
    limits: Limits,
    head: Vec<u8>,
    state: State,
}

/// The longest FRAME header: two 8-byte varints.
const MAX_HEADER: usize = 16;

impl FrameParser {
    pub fn new(version: Version) -> Self {
        Self {
            version,
            limits: Limits::default(),
            head: Vec::with_capacity(MAX_HEADER),
            state: State::Header,
        }
    }

    /// Consume `data`, calling `on_frame` for every frame it completes.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        mut on_frame: impl FnMut(Frame),
    ) -> Result<(), DecodeError> {
        while !data.is_empty() {
            match &mut self.state {
                State::Header => {
                    let header = if self.head.is_empty() {
                        match FrameHeader::decode(data, self.version, &self.limits) {
                            Ok((h, n)) => {
                                data = &data[n..];
                                h
                            }
                            Err(DecodeError::Short) => {
                                self.head.extend_from_slice(data);
                                return Ok(());
                            }
                            Err(e) => return Err(e),
                        }
                    } else {
                        let had = self.head.len();
                        let take = data.len().min(MAX_HEADER.saturating_sub(had).max(1));
                        self.head.extend_from_slice(&data[..take]);
                        match FrameHeader::decode(&self.head, self.version, &self.limits) {
                            Ok((h, n)) => {
                                data = &data[n - had..];
                                self.head.clear();
                                h
                            }
                            Err(DecodeError::Short) => {
                                data = &data[take..];
                                continue;
                            }
                            Err(e) => return Err(e),
                        }
                    };
                    if header.size == 0 {
                        on_frame(Frame {
                            size: 0,
                            sent_us: None,
                            timestamp_delta: header.timestamp_delta,
                        });
                    } else {
                        self.state = State::Payload {
                            header,
                            remaining: header.size,
                            stamp: [0; STAMP_LEN],
                            stamp_len: 0,
                        };
                    }
                }
                State::Payload {
                    header,
                    remaining,
                    stamp,
                    stamp_len,
                } => {
                    let take = (*remaining).min(data.len() as u64) as usize;
                    let offset = (header.size - *remaining) as usize;
                    if offset < STAMP_LEN {
                        let n = take.min(STAMP_LEN - offset);
                        stamp[offset..offset + n].copy_from_slice(&data[..n]);
                        *stamp_len += n;
                    }
                    *remaining -= take as u64;
                    data = &data[take..];
                    if *remaining == 0 {
                        let sent_us = (*stamp_len == STAMP_LEN).then(|| u64::from_be_bytes(*stamp));
                        on_frame(Frame {
                            size: header.size,
                            sent_us,
                            timestamp_delta: header.timestamp_delta,
                        });
                        self.state = State::Header;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the stream may end here: between frames, not inside one.
    pub fn at_boundary(&self) -> bool {
        matches!(self.state, State::Header) && self.head.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group_bytes(version: Version, frames: &[(usize, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (size, sent)) in frames.iter().enumerate() {
            let delta = version.has_frame_timestamps().then_some(i as i64 * 33_000);
            out.extend_from_slice(&frame_head(version, delta, *size, *sent));
            out.extend_from_slice(&padding(size - STAMP_LEN));
        }
        out
    }

    #[test]
    fn a_stamp_decodes_to_the_time_it_encoded() {
        for t in [0, 1, 1_234_567_890, u64::MAX] {
            let mut payload = encode_stamp(t).to_vec();
            payload.extend_from_slice(&[0; 100]);
            assert_eq!(decode_stamp(&payload), Some(t));
        }
        assert_eq!(decode_stamp(&[1, 2, 3]), None);
    }

    #[test]
    fn the_clock_only_moves_forward() {
        let a = now_us();
        let b = now_us();
        assert!(b >= a);
        assert_eq!(us_since_epoch(epoch()), 0);
    }

    #[test]
    fn padding_has_the_asked_length_even_past_the_shared_buffer() {
        assert_eq!(padding(0).len(), 0);
        assert_eq!(padding(4000).len(), 4000);
        assert_eq!(padding(3 << 20).len(), 3 << 20);
        assert!(padding(5000).iter().all(|b| *b == 0));
    }

    #[test]
    fn frames_split_at_every_byte_boundary_parse_the_same() {
        for version in [Version::Lite04, Version::Lite05, Version::Lite06] {
            let frames = [(8usize, 11u64), (100, 22), (20_000, 1 << 40), (9, 44)];
            let wire = group_bytes(version, &frames);
            for cut in 0..wire.len() {
                let mut p = FrameParser::new(version);
                let mut got = Vec::new();
                p.feed(&wire[..cut], |f| got.push(f)).unwrap();
                p.feed(&wire[cut..], |f| got.push(f)).unwrap();
                assert!(p.at_boundary(), "{version} cut {cut}");
                let sizes: Vec<_> = got
                    .iter()
                    .map(|f| (f.size as usize, f.sent_us.unwrap()))
                    .collect();
                assert_eq!(sizes, frames, "{version} cut {cut}");
                if version.has_frame_timestamps() {
                    assert_eq!(got[2].timestamp_delta, Some(66_000));
                } else {
                    assert!(got.iter().all(|f| f.timestamp_delta.is_none()));
                }
            }
        }
    }

    #[test]
    fn frames_fed_one_byte_at_a_time_parse_the_same() {
        let version = Version::Lite05;
        let frames = [(64usize, 7u64), (300, 8)];
        let wire = group_bytes(version, &frames);
        let mut p = FrameParser::new(version);
        let mut got = Vec::new();
        for b in &wire {
            p.feed(std::slice::from_ref(b), |f| got.push(f)).unwrap();
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].sent_us, Some(8));
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_not_at_a_boundary() {
        let version = Version::Lite05;
        let wire = group_bytes(version, &[(100, 1)]);
        let mut p = FrameParser::new(version);
        p.feed(&wire[..wire.len() - 1], |_| {}).unwrap();
        assert!(!p.at_boundary());
        let mut p = FrameParser::new(version);
        p.feed(&wire[..1], |_| {}).unwrap();
        assert!(!p.at_boundary());
    }

    #[test]
    fn a_payload_shorter_than_a_stamp_has_no_send_time() {
        let version = Version::Lite04;
        let mut wire = Vec::new();
        FrameHeader {
            timestamp_delta: None,
            size: 3,
        }
        .encode(&mut wire, version)
        .unwrap();
        wire.extend_from_slice(&[1, 2, 3]);
        let mut got = Vec::new();
        FrameParser::new(version)
            .feed(&wire, |f| got.push(f))
            .unwrap();
        assert_eq!(got[0].sent_us, None);
        assert_eq!(got[0].size, 3);
    }
}
