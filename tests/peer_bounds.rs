//! Each bound on what one peer controls inside a session, shown holding
//! under a short flood from a scripted moq-lite peer on loopback: the peer
//! is refused or cut where the limit says, the limit's counter moves on
//! `/metrics`, and the relay goes on serving others.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use qumo::lite::{Announce, AnnounceOk, AnnounceRequest, BidiType, Version};
use support::lite::{frame_head, group_head, within, EncodeDyn, Peer, Reader};
use support::{http, Relay};

const SECOND: Duration = Duration::from_secs(1);
const LIMIT: Duration = Duration::from_secs(15);

/// A relay with an admin listener and these `relay:` keys.
fn relay_with(shards: usize, relay_keys: &str) -> (Relay, SocketAddr) {
    let relay = Relay::start_with(
        shards,
        &format!(
            "relay:\n{relay_keys}{}",
            http::sections("  max_connections: 16\n")
        ),
    );
    let admin = http::admin_addr(&relay);
    (relay, admin)
}

/// The sum over shards of counter `name`, polled until it reaches
/// `at_least`; on time-out, a panic with the relay's log.
async fn wait_counter(relay: &Relay, admin: SocketAddr, name: &'static str, at_least: f64) -> f64 {
    let deadline = Instant::now() + LIMIT;
    loop {
        let text = tokio::task::spawn_blocking(move || http::get_ok(admin, "/metrics", LIMIT))
            .await
            .unwrap();
        let value = sum(&http::parse_metrics(&text), name);
        if value >= at_least {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed at {value} (< {at_least}); relay log:\n{}",
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sum(samples: &[http::Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

/// Answer the relay's ANNOUNCE_REQUEST with `paths`, sent in one go, and
/// keep the stream open.
fn announce_all(peer: &Peer, paths: Vec<String>) {
    let peer = peer.clone();
    tokio::spawn(async move {
        while let Ok((mut send, recv)) = peer.conn.accept_bi().await {
            let mut reader = Reader::new(recv, peer.version);
            if !matches!(
                reader.decode::<BidiType>().await,
                Ok(Some(BidiType::Announce))
            ) {
                continue;
            }
            let _: AnnounceRequest = reader.decode().await.unwrap().unwrap();
            let mut out = BytesMut::new();
            if peer.version.has_announce_ok() {
                AnnounceOk { hop: 0, active: 0 }.encode_dyn(&mut out, peer.version);
            }
            for path in &paths {
                Announce::available(path.clone(), vec![], peer.version)
                    .encode_dyn(&mut out, peer.version);
            }
            if send.write_all(&out).await.is_err() {
                return;
            }
            tokio::spawn(async move {
                let _keep = (send, reader);
                std::future::pending::<()>().await
            });
        }
    });
}

/// The application code the relay closed `peer`'s connection with.
async fn closed_with(peer: &Peer, within_: Duration) -> u64 {
    match tokio::time::timeout(within_, peer.conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => close.error_code.into_inner(),
        Ok(other) => panic!("closed otherwise: {other}"),
        Err(_) => panic!("the relay did not close the session within {within_:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_lite04_session_that_does_nothing_is_closed_at_the_setup_deadline() {
    let (relay, admin) = relay_with(1, "  setup_timeout: 1s\n");
    let silent = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let active = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let connected = Instant::now();
    // The active one does something (a subscribe, answered NOT_FOUND).
    let _ = active.subscribe(1, "nothing", "here", 0).await;

    assert_eq!(closed_with(&silent, 10 * SECOND).await, 0x11, "TIMEOUT");
    assert!(connected.elapsed() >= Duration::from_millis(900));
    wait_counter(&relay, admin, "qumo_sessions_setup_timeouts_total", 1.0).await;
    // Its own deadline passed too, and it is still open.
    let past_deadline = connected + 2 * SECOND;
    tokio::time::sleep_until(past_deadline.into()).await;
    assert!(
        active.conn.close_reason().is_none(),
        "a lite-04 session that spoke stays"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_session_announcing_past_its_broadcast_cap_is_closed() {
    let (relay, admin) = relay_with(1, "  max_broadcasts_per_session: 3\n");
    for version in [Version::Lite05, Version::Lite06] {
        let peer = Peer::connect(relay.addr, &relay.fingerprint, version).await;
        announce_all(&peer, (0..50).map(|i| format!("flood/{i}")).collect());
        assert_eq!(closed_with(&peer, 10 * SECOND).await, 0x3, "{version}");
    }
    assert_eq!(
        wait_counter(&relay, admin, "qumo_broadcasts_refused_limit_total", 2.0).await,
        2.0
    );
    // Within the cap all is well.
    let fine = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite06).await;
    announce_all(&fine, vec!["a".into(), "b".into(), "c".into()]);
    assert!(relay
        .wait_for_async("broadcast=c active=true", LIMIT)
        .await
        .is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn announce_requests_past_the_cap_are_refused_one_by_one() {
    let (relay, admin) = relay_with(1, "  max_announce_requests_per_session: 2\n");
    let peer = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite05).await;
    let request = AnnounceRequest {
        prefix: String::new(),
        exclude_hop: 0,
    };
    let mut open = Vec::new();
    for _ in 0..2 {
        let (send, mut reader) = peer.request(BidiType::Announce, &request).await;
        let ok = within("ANNOUNCE_OK", LIMIT, reader.decode::<AnnounceOk>()).await;
        assert!(matches!(ok, Ok(Some(_))), "{ok:?}");
        open.push((send, reader));
    }
    let (_send, mut third) = peer.request(BidiType::Announce, &request).await;
    let refused = within("the third request", LIMIT, third.decode::<AnnounceOk>()).await;
    assert_eq!(refused.err().as_deref(), Some("reset 48"), "NO_CAPACITY");
    wait_counter(
        &relay,
        admin,
        "qumo_announce_requests_refused_limit_total",
        1.0,
    )
    .await;
    assert!(peer.conn.close_reason().is_none(), "the session goes on");
}

/// 3000 broadcasts with long names (~600 KB of table); a peer opens 20
/// ANNOUNCE_REQUESTs and reads none. The table is paged to each only as it
/// reads, so the relay keeps serving: a reader gets the whole table, and
/// when 400 more broadcasts appear the non-readers' backlogs overflow and
/// their streams are reset instead of growing.
#[tokio::test(flavor = "current_thread")]
async fn listeners_that_do_not_read_are_bounded_and_do_not_stall_the_relay() {
    // One shard: with more, the table reaches the other shards a moment
    // after the publisher's, and a reader there could see the tail as a
    // burst of changes, which this small backlog is meant to cut off.
    let (relay, admin) = relay_with(
        1,
        "  max_broadcasts_per_session: 10000\n  max_announce_backlog: 64\n",
    );
    let long = "x".repeat(180);
    let publisher = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite05).await;
    announce_all(
        &publisher,
        (0..3000).map(|i| format!("table/{long}/{i:05}")).collect(),
    );
    // The whole table is in before anyone listens.
    assert!(relay
        .wait_for_async("/02999 active=true", LIMIT)
        .await
        .is_some());

    let idle = Peer::connect_slow(relay.addr, &relay.fingerprint, Version::Lite05).await;
    let request = AnnounceRequest {
        prefix: String::new(),
        exclude_hop: 0,
    };
    let mut unread = Vec::new();
    for _ in 0..20 {
        unread.push(idle.request(BidiType::Announce, &request).await);
    }

    // A reader still gets every broadcast, promptly.
    let reader_peer = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite05).await;
    let (_send, mut reader) = reader_peer.request(BidiType::Announce, &request).await;
    let read_all = async {
        let _: AnnounceOk = reader.decode().await.unwrap().unwrap();
        let mut seen = 0;
        while seen < 3000 {
            match reader.decode::<Announce>().await.unwrap().unwrap() {
                Announce::Active { suffix, .. } if suffix.starts_with("table/") => seen += 1,
                _ => {}
            }
        }
        seen
    };
    assert_eq!(within("the whole table", LIMIT, read_all).await, 3000);

    // 400 more: every non-reader falls more than 64 changes behind.
    let second = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite05).await;
    announce_all(&second, (0..400).map(|i| format!("more/{i}")).collect());
    wait_counter(&relay, admin, "qumo_announce_backlog_overflows_total", 20.0).await;
    for (_, reader) in unread.iter_mut().take(3) {
        let outcome = within("a reset non-reader", LIMIT, async {
            // What it reads before the reset arrives (a loaded host can let
            // some through) starts with ANNOUNCE_OK, whose random hop id
            // would not parse as an announcement.
            reader.decode::<AnnounceOk>().await?;
            loop {
                match reader.decode::<Announce>().await {
                    Ok(Some(_)) => continue,
                    other => return other.map(|_| ()),
                }
            }
        })
        .await;
        assert!(
            matches!(
                outcome.as_ref().err().map(String::as_str),
                Some("reset 48") | Some("truncated")
            ),
            "{outcome:?}"
        );
    }
    // And a brand-new session is served at once.
    let late = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite05).await;
    let (_s, mut late_reader) = late
        .request(
            BidiType::Announce,
            &AnnounceRequest {
                prefix: "more".into(),
                exclude_hop: 0,
            },
        )
        .await;
    let ok = within(
        "ANNOUNCE_OK for a late session",
        5 * SECOND,
        late_reader.decode::<AnnounceOk>(),
    )
    .await;
    assert!(matches!(ok, Ok(Some(_))), "{ok:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_group_with_more_frames_than_the_cap_is_reset_and_later_groups_flow() {
    let (relay, admin) = relay_with(1, "  max_frames_per_group: 10\n");
    let publisher = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let mut subscriptions = publisher.publish("many");
    assert!(relay
        .wait_for_async("broadcast=many active=true", LIMIT)
        .await
        .is_some());
    let viewer = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let _sub = viewer.subscribe(1, "many", "video", 0).await.unwrap();
    let upstream = within("upstream", LIMIT, subscriptions.recv())
        .await
        .unwrap();
    let empties: Vec<Bytes> = (0..500).map(|_| Bytes::new()).collect();
    publisher.send_group(upstream, 0, &empties).await;
    let first = within("the over-long group", LIMIT, viewer.read_group()).await;
    assert_eq!(
        first.err().as_deref(),
        Some("reset 50"),
        "GROUP_TOO_LARGE (0x32)"
    );
    wait_counter(&relay, admin, "qumo_groups_too_many_frames_total", 1.0).await;
    let ten: Vec<Bytes> = (0..10u8).map(|i| Bytes::from(vec![i])).collect();
    publisher.send_group(upstream, 1, &ten).await;
    let (header, frames) = within("the next group", LIMIT, viewer.read_group())
        .await
        .unwrap();
    assert_eq!((header.sequence, frames), (1, ten));
}

/// Eight group streams each start a 256 KiB frame and stop half-way. With a
/// 512 KiB budget only two frames may be in assembly; the rest wait unread
/// (their bytes stay in QUIC's flow control, not in the relay), and each
/// waits its turn as earlier frames complete.
#[tokio::test(flavor = "current_thread")]
async fn unfinished_frames_wait_for_the_sessions_frame_buffer() {
    let (relay, admin) = relay_with(
        1,
        "  max_frame_size: 256 KiB\n  max_buffered_frame_bytes_per_session: 512 KiB\n",
    );
    let publisher = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let mut subscriptions = publisher.publish("partial");
    assert!(relay
        .wait_for_async("broadcast=partial active=true", LIMIT)
        .await
        .is_some());
    let viewer = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let _sub = viewer.subscribe(1, "partial", "video", 0).await.unwrap();
    let upstream = within("upstream", LIMIT, subscriptions.recv())
        .await
        .unwrap();

    const FRAME: usize = 256 * 1024;
    let mut streams = Vec::new();
    for sequence in 0..8u64 {
        let mut send = publisher.conn.open_uni().await.unwrap();
        let mut head = group_head(Version::Lite04, upstream, sequence);
        frame_head(&mut head, Version::Lite04, FRAME as u64);
        send.write_all(&head).await.unwrap();
        send.write_all(&vec![7u8; FRAME / 2]).await.unwrap();
        streams.push(send);
    }
    // Six of the eight cannot reserve their frame.
    wait_counter(&relay, admin, "qumo_frames_waited_for_buffer_total", 6.0).await;
    // Finishing every frame lets all of them through, in turn.
    for send in &mut streams {
        send.write_all(&vec![7u8; FRAME / 2]).await.unwrap();
        let _ = send.finish();
    }
    // Groups the cache evicts may be skipped or arrive reset; the newest
    // must arrive whole once the budget frees.
    let newest_whole = async {
        loop {
            if let Ok((header, frames)) = viewer.read_group().await {
                if header.sequence == 7 {
                    return frames.len() == 1 && frames[0].len() == FRAME;
                }
            }
        }
    };
    assert!(within("the newest group", LIMIT, newest_whole).await);
}

#[tokio::test(flavor = "current_thread")]
async fn a_subscribers_max_latency_is_cut_to_the_ceiling() {
    let (relay, admin) = relay_with(1, "  max_latency_ceiling: 3s\n");
    let publisher = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite05).await;
    let _subscriptions = publisher.publish("slow");
    assert!(relay
        .wait_for_async("broadcast=slow active=true", LIMIT)
        .await
        .is_some());
    let viewer = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite05).await;
    // One hour, in milliseconds.
    let _hour = viewer
        .subscribe(1, "slow", "video", 3_600_000)
        .await
        .unwrap();
    let _ok = viewer.subscribe(2, "slow", "audio", 2_000).await.unwrap();
    assert_eq!(
        wait_counter(&relay, admin, "qumo_latency_requests_capped_total", 1.0).await,
        1.0,
        "only the request above the ceiling is cut"
    );
}

/// SIGTERM while a peer floods ANNOUNCEs: the relay still exits within its
/// shutdown timeout (2 s here), plus start-up slack for a loaded machine.
#[tokio::test(flavor = "current_thread")]
async fn shutdown_meets_its_deadline_during_an_announce_flood() {
    let (relay, _admin) = relay_with(2, "  max_broadcasts_per_session: 100000\n");
    let flooder = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite05).await;
    announce_all(
        &flooder,
        (0..60_000).map(|i| format!("storm/{i}")).collect(),
    );
    let listeners = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite05).await;
    let request = AnnounceRequest {
        prefix: String::new(),
        exclude_hop: 0,
    };
    let mut open = Vec::new();
    for _ in 0..30 {
        open.push(listeners.request(BidiType::Announce, &request).await);
    }
    assert!(relay
        .wait_for_async("broadcast=storm/", LIMIT)
        .await
        .is_some());
    let asked = Instant::now();
    relay.terminate();
    let waited = tokio::task::spawn_blocking(move || relay.wait_exit(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the relay exits");
    assert!(waited.success(), "{waited:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(6),
        "exit took {:?}",
        asked.elapsed()
    );
    drop(open);
}

/// A peer's datagrams are never queued by the relay: a flood of them for a
/// subscription that does not exist is dropped as it comes, counted, and
/// the session and its shard go on serving.
#[tokio::test(flavor = "current_thread")]
async fn a_datagram_flood_is_dropped_as_it_comes() {
    let (relay, admin) = relay_with(1, "  max_broadcasts_per_session: 8\n");
    let flooder = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite06).await;
    let mut body = BytesMut::new();
    qumo::lite::DatagramHeader {
        subscribe: 999,
        sequence: 0,
        timestamp: 0,
    }
    .encode(&mut body, Version::Lite06)
    .unwrap();
    body.extend_from_slice(&[0xab; 1000]);
    let datagram = body.freeze();
    for i in 0..20_000u32 {
        // quinn drops its oldest queued datagram when its buffer is full;
        // a yield now and then lets its driver put them on the wire.
        let _ = flooder.conn.send_datagram(datagram.clone());
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    wait_counter(&relay, admin, "qumo_datagrams_dropped_total", 1000.0).await;
    assert!(
        flooder.conn.close_reason().is_none(),
        "the flooder's session stays"
    );
    // The shard still serves: another peer's announcement goes through.
    let other = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite06).await;
    announce_all(&other, vec!["after-the-flood".into()]);
    assert!(relay
        .wait_for_async("broadcast=after-the-flood active=true", LIMIT)
        .await
        .is_some());
}
