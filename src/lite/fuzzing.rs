//! Fuzz target bodies, shared by the cargo-fuzz targets in `fuzz/` and by a stable
//! `#[test]` that replays them over pseudo-random inputs.
//!
//! Each body takes raw bytes; the first byte picks the version and the message kind.
//! Whatever the input, a body checks that:
//! - decoding never panics and never reports using more bytes than it was given;
//! - a decoded message re-encodes, and the re-encoding decodes to the same message
//!   and is no longer than the input it came from (qumo writes shortest varints);
//! - where the codec keeps every bit of the wire (all messages but those with the
//!   retired order byte, lenient SETUP parameters or lite-06's start canonicalisation),
//!   a shortest-form input re-encodes to exactly the bytes consumed;
//! - every proper prefix of a decoded message is `Short` (stream decoders only).

use std::fmt::Debug;

use super::*;

/// Small limits, so that the `TooLong` paths are reached too.
const LIMITS: Limits = Limits {
    max_message: 4096,
    max_path: 256,
    max_name: 256,
    max_frame: 1 << 20,
};

/// Split the selector byte into a version and a kind index below `kinds`.
fn select(data: &[u8], kinds: u8) -> Option<(Version, u8, &[u8])> {
    let (&first, rest) = data.split_first()?;
    let v = Version::ALL[usize::from(first % 3)];
    Some((v, (first / 3) % kinds, rest))
}

/// Decode `input` as a `T` and check the properties in the module docs. `exact`
/// says whether shortest-form input must re-encode to identical bytes. Returns the
/// bytes used on success.
fn check<T: Decode + Encode + PartialEq + Debug>(
    input: &[u8],
    v: Version,
    exact: bool,
) -> Option<(T, usize)> {
    let (msg, used) = match T::decode(input, v, &LIMITS) {
        Ok(ok) => ok,
        // Short or malformed: nothing to check beyond not panicking.
        Err(_) => return None,
    };
    assert!(
        used > 0 && used <= input.len(),
        "{v}: used {used} of {}",
        input.len()
    );
    let consumed = &input[..used];

    let wire = msg
        .to_vec(v)
        .unwrap_or_else(|e| panic!("{v}: {msg:?} decoded but does not re-encode: {e}"));
    assert!(wire.len() <= used, "{v}: re-encoding grew: {msg:?}");
    let (again, n) = T::decode(&wire, v, &LIMITS)
        .unwrap_or_else(|e| panic!("{v}: re-encoding of {msg:?} does not decode: {e}"));
    assert_eq!(again, msg, "{v}");
    assert_eq!(n, wire.len(), "{v}");
    if exact && wire.len() == used {
        assert_eq!(wire, consumed, "{v}: {msg:?}");
    }

    // A shorter buffer must ask for more, never misparse. Bounded to keep it linear-ish.
    if used <= 256 {
        for cut in 0..used {
            assert_eq!(
                T::decode(&consumed[..cut], v, &LIMITS).err(),
                Some(DecodeError::Short),
                "{v}: prefix {cut} of {consumed:02x?}"
            );
        }
    }
    Some((msg, used))
}

/// Decode messages of one type back to back, as a stream reader would.
fn check_stream<T: Decode + Encode + PartialEq + Debug>(mut input: &[u8], v: Version, exact: bool) {
    while let Some((_, used)) = check::<T>(input, v, exact) {
        input = input.get(used..).unwrap_or_default();
    }
}

/// Control-stream messages: every bidi stream's messages, in every version.
pub fn control(data: &[u8]) {
    let Some((v, kind, input)) = select(data, 12) else {
        return;
    };
    let old_order = v.has_group_order();
    match kind {
        0 => check_stream::<AnnounceRequest>(input, v, true),
        1 => check_stream::<AnnounceOk>(input, v, true),
        2 => check_stream::<Announce>(input, v, true),
        // The order byte is dropped; lite-06 folds a start of 0 into `None`.
        3 => check_stream::<Subscribe>(input, v, false),
        4 => check_stream::<SubscribeUpdate>(input, v, false),
        5 => check_stream::<SubscribeReply>(input, v, !old_order || v.has_track_stream()),
        6 => check_stream::<TrackRequest>(input, v, true),
        7 => check_stream::<TrackInfo>(input, v, !old_order),
        8 => check_stream::<Probe>(input, v, true),
        9 => check_stream::<Goaway>(input, v, true),
        10 => check_stream::<Fetch>(input, v, true),
        _ => check_stream::<BidiType>(input, v, true),
    }
}

/// Media data: uni stream type, GROUP header then frames (payloads skipped by their
/// size), and datagrams.
pub fn data(data: &[u8]) {
    let Some((v, kind, input)) = select(data, 3) else {
        return;
    };
    match kind {
        0 => group_stream(input, v),
        1 => datagram(input, v),
        _ => check_stream::<UniType>(input, v, true),
    }
}

/// A GROUP stream: header, then `FRAME header, payload` pairs up to the input's end.
fn group_stream(input: &[u8], v: Version) {
    let Some((_, used)) = check::<GroupHeader>(input, v, true) else {
        return;
    };
    let mut rest = input.get(used..).unwrap_or_default();
    let mut timestamps = Timestamps::default();
    while let Some((header, used)) = check::<FrameHeader>(rest, v, true) {
        if let Some(delta) = header.timestamp_delta {
            // Out-of-range timestamps are an error, never a panic or a wrap.
            let _ = timestamps.apply(delta);
        }
        let skip = usize::try_from(header.size).unwrap_or(usize::MAX);
        rest = rest
            .get(used..)
            .and_then(|r| r.get(skip.min(r.len())..))
            .unwrap_or_default();
    }
}

/// One datagram: header then payload; the header must re-encode exactly when shortest.
fn datagram(input: &[u8], v: Version) {
    let Ok((header, payload)) = DatagramHeader::decode(input, v) else {
        return;
    };
    let mut wire = Vec::new();
    let n = header
        .encode(&mut wire, v)
        .unwrap_or_else(|e| panic!("{v}: {header:?} does not re-encode: {e}"));
    let used = input.len() - payload.len();
    assert!(n <= used);
    if n == used {
        assert_eq!(wire, &input[..used]);
    }
    wire.extend_from_slice(payload);
    assert_eq!(DatagramHeader::decode(&wire, v), Ok((header, payload)));
}

/// SETUP, in every version (lite-04 must refuse it cleanly).
pub fn setup(data: &[u8]) {
    let Some((v, _, input)) = select(data, 1) else {
        return;
    };
    // Parameter order, explicit defaults and unknown ids are not kept.
    check_stream::<Setup>(input, v, false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lite::testutil::{mutate, Rng};

    /// A fuzz body and an input for it.
    type Seed = (fn(&[u8]), Vec<u8>);

    /// Valid encodings to mutate, each prefixed with a selector byte for `target`.
    fn seeds() -> Vec<Seed> {
        let mut out: Vec<Seed> = Vec::new();
        let mut add = |target: fn(&[u8]), v: Version, kind: u8, body: Vec<u8>| {
            let vi = Version::ALL.iter().position(|x| *x == v).unwrap_or(0) as u8;
            let mut seed = vec![kind * 3 + vi];
            seed.extend(body);
            out.push((target, seed));
        };
        for v in Version::ALL {
            let enc = |m: &dyn Fn(&mut Vec<u8>) -> Result<usize, EncodeError>| {
                let mut b = Vec::new();
                let _ = m(&mut b);
                b
            };
            let sub = Subscribe {
                id: 9,
                broadcast: "a/b".into(),
                track: "v".into(),
                priority: 1,
                max_latency: 300,
                start_group: Some(4),
                end_group: Some(8),
                ..Default::default()
            };
            let start = Announce::Start {
                suffix: "x".into(),
                hops: vec![1, 2],
                cost: Cost { warm: 1, cold: 2 },
            };
            let active = Announce::Active {
                suffix: "x".into(),
                hops: vec![1, 0, 0],
            };
            let ann = if v.has_announce_id() { start } else { active };
            add(
                control,
                v,
                0,
                enc(&|b| {
                    AnnounceRequest {
                        prefix: "p".into(),
                        exclude_hop: 3,
                    }
                    .encode(b, v)
                }),
            );
            add(
                control,
                v,
                1,
                enc(&|b| AnnounceOk { hop: 5, active: 1 }.encode(b, v)),
            );
            add(control, v, 2, enc(&|b| ann.encode(b, v)));
            add(control, v, 3, enc(&|b| sub.encode(b, v)));
            add(
                control,
                v,
                4,
                enc(&|b| SubscribeUpdate::default().encode(b, v)),
            );
            add(
                control,
                v,
                5,
                enc(&|b| SubscribeReply::Drop(SubscribeDrop::default()).encode(b, v)),
            );
            add(
                control,
                v,
                6,
                enc(&|b| {
                    TrackRequest {
                        broadcast: "b".into(),
                        track: "t".into(),
                    }
                    .encode(b, v)
                }),
            );
            let info = TrackInfo {
                priority: 1,
                max_latency: 2,
                timescale: 1000,
            };
            add(control, v, 7, enc(&|b| info.encode(b, v)));
            add(
                control,
                v,
                8,
                enc(&|b| {
                    Probe {
                        bitrate: Some(1),
                        rtt: Some(2),
                    }
                    .encode(b, v)
                }),
            );
            add(
                control,
                v,
                9,
                enc(&|b| Goaway { uri: "u".into() }.encode(b, v)),
            );
            add(
                control,
                v,
                10,
                enc(&|b| {
                    Fetch {
                        group: 3,
                        ..Default::default()
                    }
                    .encode(b, v)
                }),
            );
            add(control, v, 11, vec![1, 2, 6]);
            let mut group = enc(&|b| {
                GroupHeader {
                    subscribe: 1,
                    sequence: 2,
                    frame_start: 0,
                }
                .encode(b, v)
            });
            let frame = FrameHeader {
                timestamp_delta: v.has_frame_timestamps().then_some(-3),
                size: 2,
            };
            for _ in 0..3 {
                let _ = frame.encode(&mut group, v);
                group.extend_from_slice(b"ab");
            }
            add(data, v, 0, group);
            let mut dgram = Vec::new();
            let _ = DatagramHeader {
                subscribe: 1,
                sequence: 2,
                timestamp: 3,
            }
            .encode(&mut dgram, v);
            dgram.extend_from_slice(b"xyz");
            add(data, v, 1, dgram);
            add(data, v, 2, vec![0, 1, 2]);
            let full = Setup {
                probe: ProbeLevel::Report,
                path: Some("/p".into()),
                role: Some(Role::Publisher),
                cost: Some(3),
                hop: Some(4),
            };
            add(setup, v, 0, enc(&|b| full.encode(b, v)));
        }
        out
    }

    /// The fuzz bodies hold over 100k mutated and random inputs.
    #[test]
    fn fuzz_bodies_hold_over_100k_pseudo_random_inputs() {
        let seeds = seeds();
        let targets: [fn(&[u8]); 3] = [control, data, setup];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..100_000 {
            if i % 4 == 0 {
                let len = rng.below(48);
                let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                targets[i % 3](&input);
            } else {
                let (target, seed) = &seeds[rng.below(seeds.len())];
                target(&mutate(&mut rng, seed));
            }
        }
    }

    #[test]
    fn every_seed_and_edge_input_passes_the_bodies() {
        for (target, seed) in seeds() {
            target(&seed);
        }
        // And a few that once looked risky: empty, a lone selector, huge lengths.
        for input in [
            &[][..],
            &[0],
            &[3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ] {
            control(input);
            data(input);
            setup(input);
        }
    }
}
