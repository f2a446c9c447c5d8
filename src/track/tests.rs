use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;

use super::*;
use crate::model::TrackName;

fn replica(groups: usize, bytes: u64) -> TrackReplica {
    let key = Arc::new(TrackName {
        broadcast: "b".into(),
        track: "t".into(),
    });
    TrackReplica::new(key, 0, groups, bytes)
}

fn frame(sequence: u64, len: usize) -> MediaEvent {
    MediaEvent::Frame {
        sequence,
        timestamp: 0,
        payload: Bytes::from(vec![7u8; len]),
        extensions: None,
    }
}

fn poll(group: &Group, index: usize) -> Poll<NextFrame> {
    group.poll_frame(
        &group.waiter(),
        &mut Context::from_waker(Waker::noop()),
        index,
    )
}

fn sequences(r: &TrackReplica) -> Vec<u64> {
    r.groups().iter().map(|g| g.sequence).collect()
}

#[test]
fn groups_stay_sorted_when_they_arrive_out_of_order() {
    let r = replica(4, 1 << 20);
    let now = Instant::now();
    for s in [1, 3, 2] {
        r.apply(MediaEvent::Group { sequence: s }, now);
    }
    assert_eq!(sequences(&r), [1, 2, 3]);
    // Only the newest group is not superseded.
    let superseded: Vec<bool> = r
        .groups()
        .iter()
        .map(|g| g.superseded_at().is_some())
        .collect();
    assert_eq!(superseded, [true, true, false]);
}

#[test]
fn the_cache_keeps_the_newest_groups_and_resets_evicted_open_ones() {
    let r = replica(2, 1 << 20);
    let now = Instant::now();
    r.apply(MediaEvent::Group { sequence: 0 }, now);
    let first = r.group_after(None).unwrap();
    r.apply(MediaEvent::Group { sequence: 1 }, now);
    r.apply(MediaEvent::Group { sequence: 2 }, now);
    assert_eq!(sequences(&r), [1, 2]);
    assert_eq!(first.state(), GroupState::Reset(StreamCode::EVICTED));
    // A group older than everything in a full cache is not taken.
    r.apply(MediaEvent::Group { sequence: 0 }, now);
    assert_eq!(sequences(&r), [1, 2]);
}

#[test]
fn a_cursor_reads_frames_in_order_then_the_end() {
    let r = replica(2, 1 << 20);
    let now = Instant::now();
    r.apply(MediaEvent::Group { sequence: 5 }, now);
    r.apply(frame(5, 3), now);
    let g = r.group_after(None).unwrap();
    assert!(matches!(poll(&g, 0), Poll::Ready(NextFrame::Frame(f, _)) if f.payload.len() == 3));
    assert!(poll(&g, 1).is_pending());
    r.apply(frame(5, 4), now);
    r.apply(MediaEvent::GroupEnd { sequence: 5 }, now);
    assert!(matches!(poll(&g, 1), Poll::Ready(NextFrame::Frame(f, _)) if f.payload.len() == 4));
    assert!(matches!(poll(&g, 2), Poll::Ready(NextFrame::End)));
}

#[test]
fn the_byte_cap_drops_old_groups_first_and_resets_a_lone_giant() {
    // Each frame costs its payload plus FRAME_OVERHEAD.
    let frame_cost = 60 + FRAME_OVERHEAD;
    let r = replica(8, frame_cost + 40);
    let now = Instant::now();
    r.apply(MediaEvent::Group { sequence: 0 }, now);
    r.apply(frame(0, 60), now);
    r.apply(MediaEvent::Group { sequence: 1 }, now);
    assert_eq!(r.apply(frame(1, 60), now), None);
    assert_eq!(sequences(&r), [1], "the older group made room");
    assert_eq!(
        r.apply(frame(1, 60), now),
        Some(StreamCode::GROUP_TOO_LARGE)
    );
    assert!(sequences(&r).is_empty());
}

#[test]
fn empty_frames_are_charged_to_the_cache_too() {
    // 10 M empty frames once grew the relay by 2.86 GB: a cache counted in
    // payload bytes alone never filled.
    let r = replica(8, 100 * FRAME_OVERHEAD);
    let now = Instant::now();
    r.apply(MediaEvent::Group { sequence: 0 }, now);
    let mut reset_after = None;
    for i in 0..1000 {
        if r.apply(frame(0, 0), now).is_some() {
            reset_after = Some(i + 1);
            break;
        }
    }
    assert_eq!(reset_after, Some(101), "the 101st empty frame overflows");
}

#[test]
fn ending_the_track_resets_open_groups_and_ignores_later_media() {
    let r = replica(4, 1 << 20);
    let now = Instant::now();
    r.apply(MediaEvent::Group { sequence: 0 }, now);
    r.apply(MediaEvent::GroupEnd { sequence: 0 }, now);
    r.apply(MediaEvent::Group { sequence: 1 }, now);
    r.apply(MediaEvent::track_end(None), now);
    let groups = r.groups();
    assert_eq!(
        groups[0].state(),
        GroupState::Done,
        "finished groups stay readable"
    );
    assert_eq!(groups[1].state(), GroupState::Reset(StreamCode::CANCEL));
    assert_eq!(r.state(), TrackState::Ended(None));
    r.apply(MediaEvent::Group { sequence: 2 }, now);
    assert_eq!(sequences(&r), [0, 1]);
}

#[test]
fn a_vanished_publisher_ends_the_track_cleanly_and_marks_open_groups_cut() {
    let r = replica(4, 1 << 20);
    let now = Instant::now();
    r.apply(MediaEvent::Group { sequence: 0 }, now);
    r.apply(MediaEvent::GroupEnd { sequence: 0 }, now);
    r.apply(MediaEvent::Group { sequence: 1 }, now);
    r.apply(MediaEvent::vanished(), now);
    let groups = r.groups();
    assert_eq!(groups[0].state(), GroupState::Done);
    assert_eq!(
        groups[1].state(),
        GroupState::Reset(StreamCode::SESSION_CLOSED)
    );
    assert_eq!(r.state(), TrackState::Ended(None));
}

/// The headers a group encodes once must be what a writer encoding them
/// per stream would send, byte for byte, in every version; a timestamp
/// jump the wire cannot carry goes as delta 0 and leaves the base alone.
#[test]
fn cached_frame_heads_match_a_per_stream_encoding() {
    use crate::lite::{Encode, FrameHeader, Timestamps, Version};
    let r = replica(2, 1 << 20);
    let now = Instant::now();
    r.apply(MediaEvent::Group { sequence: 0 }, now);
    let stamps = [90_000u64, 3, u64::MAX, 1 << 40, 1 << 40];
    for (i, timestamp) in stamps.into_iter().enumerate() {
        r.apply(
            MediaEvent::Frame {
                sequence: 0,
                timestamp,
                payload: Bytes::from(vec![1u8; 200 * i]),
                extensions: None,
            },
            now,
        );
    }
    let g = r.group_after(None).unwrap();
    for version in Version::ALL {
        let mut timestamps = Timestamps::default();
        for (i, timestamp) in stamps.into_iter().enumerate() {
            let Poll::Ready(NextFrame::Frame(frame, heads)) = poll(&g, i) else {
                panic!("frame {i} missing");
            };
            let header = FrameHeader {
                timestamp_delta: version
                    .has_frame_timestamps()
                    .then(|| timestamps.delta(timestamp).unwrap_or(0)),
                size: frame.payload.len() as u64,
            };
            let mut expected = Vec::new();
            header.encode(&mut expected, version).unwrap();
            assert_eq!(heads.for_version(version), expected, "{version} frame {i}");
        }
    }
}

#[test]
fn datagrams_are_kept_in_a_ring_and_a_late_cursor_counts_what_it_missed() {
    let r = replica(4, 1 << 20);
    let now = Instant::now();
    let datagram = |n: u64| {
        MediaEvent::Datagram(Datagram {
            sequence: n,
            object: 0,
            end_of_group: true,
            timestamp: n * 10,
            payload: Bytes::from(vec![n as u8]),
            extensions: None,
        })
    };
    let start = r.next_datagram();
    r.apply(datagram(0), now);
    r.apply(datagram(1), now);
    let mut out = Vec::new();
    assert_eq!(r.datagrams_from(start, &mut out), (0, start + 2));
    assert_eq!(out.iter().map(|d| d.sequence).collect::<Vec<_>>(), [0, 1]);
    // None of them a group: the cache is untouched.
    assert!(r.groups().is_empty());

    let cursor = start + 2;
    let total = DATAGRAM_RING as u64 + 3;
    for n in 0..total {
        r.apply(datagram(100 + n), now);
    }
    out.clear();
    let (missed, next) = r.datagrams_from(cursor, &mut out);
    assert_eq!((missed, next), (3, cursor + total));
    assert_eq!(out.len(), DATAGRAM_RING);
    assert_eq!(out[0].sequence, 103);
}
