//! The router's protocol steps one at a time, outputs read directly.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::*;
use crate::message::TrackName;

fn router(index: usize, shards: usize, cache_bytes: u64, lagging: LagProbe) -> Router {
    let config = RouterConfig {
        index,
        shard_count: shards,
        group_cache_size: 3,
        max_cached_bytes_per_track: cache_bytes,
        max_announce_backlog: 16,
    };
    Router::new(config, Arc::new(RelayStats::default()), lagging)
}

fn never() -> LagProbe {
    Box::new(|_| false)
}

/// A track of `shards` whose owner is `owner`.
fn key_owned_by(owner: usize, shards: usize) -> TrackKey {
    (0..)
        .map(|i| {
            Arc::new(TrackName {
                broadcast: format!("b{i}"),
                track: "video".into(),
            })
        })
        .find(|k| owner_of(k, shards) == owner)
        .expect("some name hashes to every shard")
}

fn sends(router: &mut Router) -> Vec<(usize, ShardMessage)> {
    router
        .take_output()
        .into_iter()
        .map(|o| match o {
            Output::Send { to, message } => (to, message),
            other => panic!("expected a message, got {other:?}"),
        })
        .collect()
}

/// Owner 0 of 2 shards, publisher session 7 on shard 1, and shard 1 with
/// a replica attached: returns (owner, key, hub, shard 1's token).
fn attached_pair(owner: &mut Router, key: &TrackKey) -> (HubRef, u64) {
    let publisher = SessionRef { shard: 1, id: 7 };
    owner.handle(
        ShardMessage::Announce {
            path: Arc::from(key.broadcast.as_str()),
            publisher,
            hops: Arc::from([]),
            active: true,
        },
        Instant::now(),
    );
    owner.handle(
        ShardMessage::Subscribe {
            key: key.clone(),
            from: 1,
            token: 4,
        },
        Instant::now(),
    );
    let out = sends(owner);
    let hub = match &out[..] {
        [(1, ShardMessage::Upstream { hub, .. }), (1, ShardMessage::Attached { token: 4, .. })] => {
            *hub
        }
        other => panic!("expected Upstream then Attached, got {other:?}"),
    };
    (hub, 4)
}

fn media(hub: HubRef, event: MediaEvent) -> ShardMessage {
    ShardMessage::Media { hub, event }
}

fn frame(sequence: u64, len: usize) -> MediaEvent {
    MediaEvent::Frame {
        sequence,
        timestamp: 0,
        payload: Bytes::from(vec![0u8; len]),
        extensions: None,
    }
}

#[test]
fn a_subscribe_makes_one_hub_one_upstream_request_and_a_snapshot() {
    let key = key_owned_by(0, 2);
    let mut owner = router(0, 2, 1 << 20, never());
    let (hub, _) = attached_pair(&mut owner, &key);
    assert_eq!(hub.owner, 0);
    // A repeat for the same replica asks for nothing more.
    owner.handle(
        ShardMessage::Subscribe {
            key: key.clone(),
            from: 1,
            token: 4,
        },
        Instant::now(),
    );
    assert!(owner.take_output().is_empty());
    assert_eq!(owner.hubs().len(), 1);
}

#[test]
fn the_publishers_shard_turns_upstream_requests_into_session_commands() {
    let key = key_owned_by(0, 2);
    let mut shard1 = router(1, 2, 1 << 20, never());
    let publisher = SessionRef { shard: 1, id: 7 };
    let hub = HubRef { owner: 0, id: 0 };
    let upstream = ShardMessage::Upstream {
        key: key.clone(),
        publisher,
        hub,
    };
    // No such session: the hub hears NOT_FOUND at once.
    shard1.handle(upstream, Instant::now());
    match &sends(&mut shard1)[..] {
        [(
            0,
            ShardMessage::Media {
                event: MediaEvent::TrackEnd { code, .. },
                ..
            },
        )] => assert_eq!(*code, Some(StreamCode::NOT_FOUND)),
        other => panic!("expected a track end, got {other:?}"),
    }
    shard1.register_session(7);
    let upstream = ShardMessage::Upstream {
        key: key.clone(),
        publisher,
        hub,
    };
    shard1.handle(upstream, Instant::now());
    shard1.handle(
        ShardMessage::UpstreamCancel { publisher, hub },
        Instant::now(),
    );
    let commands: Vec<_> = shard1
        .take_output()
        .into_iter()
        .map(|o| match o {
            Output::Session { session, command } => {
                assert_eq!(session, publisher);
                command
            }
            other => panic!("expected a command, got {other:?}"),
        })
        .collect();
    assert_eq!(
        commands,
        vec![
            SessionCommand::SubscribeUpstream { key, hub },
            SessionCommand::CancelUpstream { hub }
        ]
    );
}

#[test]
fn an_unsubscribe_naming_an_old_replica_is_ignored() {
    let key = key_owned_by(0, 2);
    let mut owner = router(0, 2, 1 << 20, never());
    let (_, token) = attached_pair(&mut owner, &key);
    let stale = ShardMessage::Unsubscribe {
        key: key.clone(),
        from: 1,
        token: token - 1,
    };
    owner.handle(stale, Instant::now());
    assert!(
        owner.take_output().is_empty(),
        "no cancel for a stale token"
    );
    assert_eq!(owner.hubs()[0].shards, vec![(1, token)]);
    let current = ShardMessage::Unsubscribe {
        key: key.clone(),
        from: 1,
        token,
    };
    owner.handle(current, Instant::now());
    match &sends(&mut owner)[..] {
        [(1, ShardMessage::UpstreamCancel { .. })] => {}
        other => panic!("expected the upstream cancelled, got {other:?}"),
    }
    assert!(owner.hubs().is_empty());
}

#[test]
fn a_lagging_shard_gets_whole_groups_reset_and_none_of_their_frames() {
    let key = key_owned_by(0, 2);
    let lagging = Rc::new(Cell::new(true));
    let probe = {
        let lagging = lagging.clone();
        Box::new(move |shard: usize| shard == 1 && lagging.get())
    };
    let mut owner = router(0, 2, 1 << 20, probe);
    let (hub, _) = attached_pair(&mut owner, &key);
    let now = Instant::now();
    owner.handle(media(hub, MediaEvent::Group { sequence: 0 }), now);
    lagging.set(false);
    // The shard caught up mid-group: the rest of that group still stays away.
    owner.handle(media(hub, frame(0, 10)), now);
    owner.handle(media(hub, MediaEvent::GroupEnd { sequence: 0 }), now);
    owner.handle(media(hub, MediaEvent::Group { sequence: 1 }), now);
    let events: Vec<_> = sends(&mut owner)
        .into_iter()
        .map(|(to, m)| match m {
            ShardMessage::Media { event, .. } => (to, event),
            other => panic!("expected media, got {other:?}"),
        })
        .collect();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(matches!(events[0], (1, MediaEvent::Group { sequence: 0 })));
    assert!(
        matches!(events[1], (1, MediaEvent::GroupReset { sequence: 0, code }) if code == StreamCode::TOO_FAR_BEHIND),
        "{events:?}"
    );
    assert!(matches!(events[2], (1, MediaEvent::Group { sequence: 1 })));
    assert_eq!(owner.stats.mesh_groups_dropped.get(), 1);
    // The owner's own cache keeps the dropped group whole.
    let cache = owner.hub_replica(hub.id).expect("live hub");
    assert_eq!(cache.groups()[0].frame_count(), 1);
}

#[test]
fn an_oversized_group_is_reset_everywhere_and_its_publisher_told_to_stop_it() {
    let key = key_owned_by(0, 2);
    let mut owner = router(0, 2, 500, never());
    let (hub, _) = attached_pair(&mut owner, &key);
    let now = Instant::now();
    owner.handle(media(hub, MediaEvent::Group { sequence: 3 }), now);
    owner.handle(media(hub, frame(3, 1000)), now);
    // What the publisher still sends of it before the stop lands.
    owner.handle(media(hub, frame(3, 10)), now);
    let out = sends(&mut owner);
    let tail: Vec<String> = out[1..]
        .iter()
        .map(|(to, m)| format!("{to} {m:?}"))
        .collect();
    assert_eq!(out.len(), 4, "{tail:?}");
    assert!(matches!(
        out[1],
        (
            1,
            ShardMessage::Media {
                event: MediaEvent::Frame { .. },
                ..
            }
        )
    ));
    assert!(
        matches!(
            out[2],
            (1, ShardMessage::Media { event: MediaEvent::GroupReset { sequence: 3, code }, .. })
                if code == StreamCode::GROUP_TOO_LARGE
        ),
        "{tail:?}"
    );
    assert!(
        matches!(
            out[3],
            (1, ShardMessage::StopGroup { sequence: 3, code, publisher, .. })
                if code == StreamCode::GROUP_TOO_LARGE && publisher.id == 7
        ),
        "{tail:?}"
    );
    assert_eq!(owner.stats.groups_stopped_too_large.get(), 1);
    // The publisher's reset closes the matter; the next group flows.
    owner.handle(
        media(
            hub,
            MediaEvent::GroupReset {
                sequence: 3,
                code: StreamCode::GROUP_TOO_LARGE,
            },
        ),
        now,
    );
    owner.handle(media(hub, MediaEvent::Group { sequence: 4 }), now);
    match &sends(&mut owner)[..] {
        [(
            1,
            ShardMessage::Media {
                event: MediaEvent::Group { sequence: 4 },
                ..
            },
        )] => {}
        other => panic!("expected only the next group, got {other:?}"),
    }
}

#[test]
fn a_stop_for_a_live_session_becomes_its_command() {
    let mut shard1 = router(1, 2, 1 << 20, never());
    shard1.register_session(7);
    let hub = HubRef { owner: 0, id: 2 };
    let publisher = SessionRef { shard: 1, id: 7 };
    let stop = |publisher| ShardMessage::StopGroup {
        publisher,
        hub,
        sequence: 9,
        code: StreamCode::GROUP_TOO_LARGE,
    };
    shard1.handle(stop(publisher), Instant::now());
    shard1.handle(stop(SessionRef { shard: 1, id: 8 }), Instant::now());
    let out: Vec<_> = shard1.take_output().into_iter().collect();
    assert_eq!(out.len(), 1, "a gone session gets nothing: {out:?}");
    assert!(matches!(
        &out[0],
        Output::Session {
            command: SessionCommand::StopGroup { sequence: 9, .. },
            ..
        }
    ));
}
