//! The relay under precise control: a moq-lite peer of our own (quinn +
//! the relay's codec) misbehaves, reads slowly, or goes over limits, and
//! the relay must contain it.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use qumo::lite::{BidiType, Version};
use support::lite::{within, Peer};
use support::Relay;

const SECOND: Duration = Duration::from_secs(1);

/// A frame that carries its send time (ns since `epoch`) and `len` bytes.
fn stamped(epoch: Instant, len: usize) -> Bytes {
    let mut frame = vec![0u8; len.max(8)];
    let ns = epoch.elapsed().as_nanos() as u64;
    frame[..8].copy_from_slice(&ns.to_le_bytes());
    Bytes::from(frame)
}

fn age(epoch: Instant, frame: &[u8]) -> Duration {
    let sent = u64::from_le_bytes(frame[..8].try_into().unwrap());
    epoch.elapsed() - Duration::from_nanos(sent)
}

/// Connect a publisher of `broadcast` and wait for the relay to have it.
async fn publisher(
    relay: &Relay,
    version: Version,
    broadcast: &str,
) -> (Peer, tokio::sync::mpsc::UnboundedReceiver<u64>) {
    let peer = Peer::connect(relay.addr, &relay.fingerprint, version).await;
    let subscriptions = peer.publish(broadcast);
    let announced = format!("broadcast={broadcast} active=true");
    let relay_log = relay.wait_for_async(&announced, 10 * SECOND).await;
    assert!(
        relay_log.is_some(),
        "announce reached the relay:\n{}",
        relay.log()
    );
    (peer, subscriptions)
}

#[tokio::test(flavor = "current_thread")]
async fn a_subscriber_that_reads_nothing_does_not_delay_another() {
    let relay = Relay::start_with(
        2,
        "relay:\n  default_max_latency: 1s\n  group_cache_size: 3\n",
    );
    let (publisher, mut subscriptions) = publisher(&relay, Version::Lite05, "live").await;
    let fast = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite05).await;
    let slow = Peer::connect_slow(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let _fast_sub = fast.subscribe(1, "live", "video", 0).await.unwrap();
    let _slow_sub = slow.subscribe(1, "live", "video", 0).await.unwrap();
    let upstream = within("upstream subscribe", 5 * SECOND, subscriptions.recv())
        .await
        .unwrap();

    // 4 s of 10 groups/s, 10 frames of 8 KB each: 6.4 Mbit/s per subscriber.
    let epoch = Instant::now();
    let rss_before = relay.rss_kib();
    let sender = tokio::spawn(async move {
        for sequence in 0..40u64 {
            let frames: Vec<Bytes> = (0..10).map(|_| stamped(epoch, 8_000)).collect();
            publisher.send_group(upstream, sequence, &frames).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        publisher
    });

    let mut worst = Duration::ZERO;
    let mut groups = 0;
    let reader = async {
        while groups < 40 {
            let (_, frames) = fast
                .read_group()
                .await
                .expect("fast subscriber gets whole groups");
            for frame in &frames {
                worst = worst.max(age(epoch, frame));
            }
            groups += 1;
        }
    };
    if tokio::time::timeout(20 * SECOND, reader).await.is_err() {
        panic!(
            "the fast subscriber got {groups} of 40 groups; relay log:\n{}",
            relay.log()
        );
    }
    let _publisher = sender.await.unwrap();
    let rss_after = relay.rss_kib();

    assert_eq!(groups, 40);
    assert!(
        worst < Duration::from_millis(900),
        "publish-to-receive latency of the fast subscriber stayed low: worst {worst:?}"
    );
    // The slow subscriber's backlog is bounded: it can hold 4 streams, so
    // the relay reset or skipped the rest instead of queueing them.
    let mut complete = 0;
    let mut too_far_behind = 0;
    let drain = async {
        loop {
            match tokio::time::timeout(SECOND, slow.read_group()).await {
                Ok(Ok(_)) => complete += 1,
                Ok(Err(e)) if e == "reset 5" => too_far_behind += 1,
                Ok(Err(_)) => {}
                Err(_) => break,
            }
        }
    };
    drain.await;
    assert!(
        complete < 40,
        "the slow subscriber lost old groups ({complete} complete)"
    );
    assert!(
        too_far_behind > 0,
        "old groups were reset with TOO_FAR_BEHIND"
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "relay memory stayed bounded: {rss_before} KiB -> {rss_after} KiB"
    );
    eprintln!(
        "fast worst latency {worst:?}; slow: {complete} complete, {too_far_behind} reset; rss {rss_before} -> {rss_after} KiB"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn going_over_the_subscription_limit_refuses_that_subscribe_only() {
    let relay = Relay::start_with(1, "relay:\n  max_subscriptions_per_session: 2\n");
    let (publisher, mut subscriptions) = publisher(&relay, Version::Lite04, "cam").await;
    let viewer = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let _a = viewer.subscribe(1, "cam", "a", 0).await.unwrap();
    let _b = viewer.subscribe(2, "cam", "b", 0).await.unwrap();
    let refused = viewer.subscribe(3, "cam", "c", 0).await;
    assert_eq!(
        refused.err().as_deref(),
        Some("reset 48"),
        "NO_CAPACITY (0x30)"
    );
    // The accepted subscriptions still work.
    let first = within("upstream", 5 * SECOND, subscriptions.recv())
        .await
        .unwrap();
    publisher
        .send_group(first, 0, &[Bytes::from_static(b"hi")])
        .await;
    let (_, frames) = within("group", 5 * SECOND, viewer.read_group())
        .await
        .unwrap();
    assert_eq!(frames, [Bytes::from_static(b"hi")]);
}

#[tokio::test(flavor = "current_thread")]
async fn subscribing_to_an_unknown_broadcast_is_not_found() {
    let relay = Relay::start(2);
    let viewer = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let refused = viewer.subscribe(1, "nobody", "video", 0).await;
    assert_eq!(
        refused.err().as_deref(),
        Some("reset 51"),
        "NOT_FOUND (0x33)"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_malformed_message_closes_only_that_session() {
    let relay = Relay::start(2);
    let (publisher, mut subscriptions) = publisher(&relay, Version::Lite04, "news").await;
    let good = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let _sub = good.subscribe(1, "news", "video", 0).await.unwrap();
    let upstream = within("upstream", 5 * SECOND, subscriptions.recv())
        .await
        .unwrap();

    // A SUBSCRIBE whose body claims more fields than its length holds.
    let bad = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let (mut send, _recv) = bad.conn.open_bi().await.unwrap();
    send.write_all(&[BidiType::Subscribe.code() as u8, 2, 0x40, 0x01])
        .await
        .unwrap();
    let closed = within("bad session closed", 5 * SECOND, bad.conn.closed()).await;
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code,
                quinn::VarInt::from_u32(3),
                "PROTOCOL_VIOLATION"
            );
        }
        other => panic!("expected an application close, got {other}"),
    }

    publisher
        .send_group(upstream, 0, &[Bytes::from_static(b"still here")])
        .await;
    let (_, frames) = within("group after the bad session", 5 * SECOND, good.read_group())
        .await
        .unwrap();
    assert_eq!(frames, [Bytes::from_static(b"still here")]);
}

#[tokio::test(flavor = "current_thread")]
async fn an_unknown_stream_type_is_reset_and_the_session_goes_on() {
    let relay = Relay::start(1);
    let (_publisher, _subs) = publisher(&relay, Version::Lite04, "show").await;
    let peer = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let (mut send, mut recv) = peer.conn.open_bi().await.unwrap();
    send.write_all(&[0x3f]).await.unwrap();
    let read = within("reset", 5 * SECOND, recv.read_chunk(16, true)).await;
    // In the code space moq-native decodes on raw QUIC (WebTransport's).
    let code = match read {
        Err(quinn::ReadError::Reset(code)) => qumo::webtransport::app_code(code),
        other => panic!("expected a reset, got {other:?}"),
    };
    assert_eq!(code, Some(qumo::lite::StreamCode::UNEXPECTED_STREAM.0));
    assert!(peer.subscribe(1, "show", "video", 0).await.is_ok());
}

#[tokio::test(flavor = "current_thread")]
async fn a_frame_over_the_size_limit_resets_its_group_and_later_groups_flow() {
    let relay = Relay::start_with(1, "relay:\n  max_frame_size: 1 KiB\n");
    let (publisher, mut subscriptions) = publisher(&relay, Version::Lite04, "big").await;
    let viewer = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let _sub = viewer.subscribe(1, "big", "video", 0).await.unwrap();
    let upstream = within("upstream", 5 * SECOND, subscriptions.recv())
        .await
        .unwrap();
    publisher
        .send_group(upstream, 0, &[Bytes::from(vec![1u8; 4096])])
        .await;
    let first = within("oversized group", 5 * SECOND, viewer.read_group()).await;
    assert_eq!(
        first.err().as_deref(),
        Some("reset 56"),
        "FRAME_TOO_LARGE (0x38)"
    );
    publisher
        .send_group(upstream, 1, &[Bytes::from_static(b"small")])
        .await;
    let (header, frames) = within("next group", 5 * SECOND, viewer.read_group())
        .await
        .unwrap();
    assert_eq!(
        (header.sequence, frames),
        (1, vec![Bytes::from_static(b"small")])
    );
}

/// A group that outgrows the track cache is reset for its subscriber, and
/// the publisher is told to stop sending it (STOP_SENDING GROUP_TOO_LARGE)
/// rather than the relay reading the rest of it for nothing.
#[tokio::test(flavor = "current_thread")]
async fn a_group_over_the_track_cache_is_stopped_at_its_publisher() {
    let relay = Relay::start_with(
        2,
        "relay:\n  max_frame_size: 1 KiB\n  max_cached_bytes_per_track: 4 KiB\n",
    );
    let (publisher, mut subscriptions) = publisher(&relay, Version::Lite04, "huge").await;
    let viewer = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let _sub = viewer.subscribe(1, "huge", "video", 0).await.unwrap();
    let upstream = within("upstream", 5 * SECOND, subscriptions.recv())
        .await
        .unwrap();
    let frames = vec![Bytes::from(vec![7u8; 1000]); 6];
    let send = publisher.open_group(upstream, 0, &frames).await;
    let stopped = within("STOP_SENDING", 5 * SECOND, send.stopped()).await;
    assert_eq!(
        stopped
            .ok()
            .flatten()
            .and_then(qumo::webtransport::app_code),
        Some(0x32),
        "GROUP_TOO_LARGE"
    );
    // The subscriber may see group 0 reset (or not at all, if it was
    // dropped from the cache before its writer started); the next flows.
    publisher
        .send_group(upstream, 1, &[Bytes::from_static(b"small")])
        .await;
    let next = within("next group", 5 * SECOND, async {
        loop {
            match viewer.read_group().await {
                Err(reset) => assert_eq!(reset, "reset 50", "GROUP_TOO_LARGE (0x32)"),
                Ok(group) => return group,
            }
        }
    })
    .await;
    assert_eq!(
        (next.0.sequence, next.1),
        (1, vec![Bytes::from_static(b"small")])
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_lite05_publisher_reaches_lite04_and_lite06_subscribers() {
    let relay = Relay::start(2);
    let (publisher, mut subscriptions) = publisher(&relay, Version::Lite05, "mix").await;
    let old = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let new = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite06).await;
    let _a = old.subscribe(1, "mix", "audio", 0).await.unwrap();
    let _b = new.subscribe(7, "mix", "audio", 0).await.unwrap();
    let upstream = within("upstream", 5 * SECOND, subscriptions.recv())
        .await
        .unwrap();
    // Lite-06 has no SUBSCRIBE_OK to wait for: wait until the relay has
    // both subscriptions. From then on each gets the group, whether it comes
    // before its shard attached to the track (it is in the cache the owner
    // sends on attaching) or after.
    relay
        .wait_for_nth_all_async(&[": subscribe session=", "track=mix/audio"], 1, 5 * SECOND)
        .await
        .unwrap_or_else(|| panic!("the relay has both subscriptions:\n{}", relay.log()));
    publisher
        .send_group(
            upstream,
            0,
            &[Bytes::from_static(b"one"), Bytes::from_static(b"two")],
        )
        .await;
    let (h_old, f_old) = within("lite-04 group", 5 * SECOND, old.read_group())
        .await
        .unwrap();
    let (h_new, f_new) = within("lite-06 group", 5 * SECOND, new.read_group())
        .await
        .unwrap();
    assert_eq!(
        (h_old.subscribe, h_new.subscribe),
        (1, 7),
        "each subscriber's own id"
    );
    assert_eq!(f_old, f_new);
    assert_eq!(f_old.len(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn a_session_over_the_relay_limit_is_refused_before_its_handshake_and_the_first_goes_on() {
    let relay = Relay::start_with(1, "relay:\n  max_sessions: 1\n");
    let (publisher, _subs) = publisher(&relay, Version::Lite04, "only").await;
    let endpoint = support::lite::endpoint(
        &relay.fingerprint,
        Version::Lite04.alpn(),
        quinn::TransportConfig::default(),
    );
    let attempt = endpoint.connect(relay.addr, "localhost").unwrap();
    match within("refusal", 5 * SECOND, attempt).await {
        Err(quinn::ConnectionError::ConnectionClosed(close))
            if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED => {}
        Err(other) => panic!("expected CONNECTION_REFUSED, got {other}"),
        Ok(_) => panic!("a connection over relay.max_sessions was accepted"),
    }
    // Refused on its first Initial by the runtime: the relay never accepted
    // a connection for it, so no TLS handshake was made and the relay's own
    // TOO_MANY_SESSIONS close (the fallback) never ran.
    let refused = relay
        .wait_for_async("connection refused", 5 * SECOND)
        .await
        .unwrap_or_else(|| panic!("no refusal logged: {}", relay.log()));
    assert!(refused.contains("ConnectionLimit"), "{refused}");
    assert_eq!(relay.count("connection accepted"), 1, "{}", relay.log());
    assert_eq!(relay.count("session refused"), 0, "{}", relay.log());
    // The first session still answers: a request gets its reply.
    let reply = within(
        "reply",
        5 * SECOND,
        publisher.subscribe(1, "nobody", "video", 0),
    )
    .await;
    assert_eq!(reply.err().as_deref(), Some("reset 51"), "NOT_FOUND (0x33)");
}

#[tokio::test(flavor = "current_thread")]
async fn an_announce_prefix_over_the_limit_is_refused_on_that_stream_only() {
    let relay = Relay::start_with(1, "relay:\n  max_announce_prefix_len: 8\n");
    let peer = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let long = qumo::lite::AnnounceRequest {
        prefix: "a-very-long-prefix".into(),
        exclude_hop: 0,
    };
    let (_send, mut reader) = peer.request(BidiType::Announce, &long).await;
    let refused = within(
        "refusal",
        5 * SECOND,
        reader.decode::<qumo::lite::Announce>(),
    )
    .await;
    assert_eq!(
        refused.err().as_deref(),
        Some("reset 48"),
        "NO_CAPACITY (0x30)"
    );
    let short = qumo::lite::AnnounceRequest {
        prefix: "short".into(),
        exclude_hop: 0,
    };
    let (_send, _reader) = peer.request(BidiType::Announce, &short).await;
    // The session goes on: a request after the refusal gets its reply.
    let reply = within("reply", 5 * SECOND, peer.subscribe(1, "nobody", "video", 0)).await;
    assert_eq!(reply.err().as_deref(), Some("reset 51"), "NOT_FOUND (0x33)");
}

#[tokio::test(flavor = "current_thread")]
async fn a_publisher_that_vanishes_mid_group_ends_its_broadcast_and_cuts_the_open_group() {
    let relay = Relay::start(2);
    let (publisher, mut subscriptions) = publisher(&relay, Version::Lite05, "gone").await;
    let watcher = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let request = qumo::lite::AnnounceRequest {
        prefix: String::new(),
        exclude_hop: 0,
    };
    let (_send, mut announcements) = watcher.request(BidiType::Announce, &request).await;
    let first = within("announce", 5 * SECOND, announcements.decode()).await;
    assert!(
        matches!(&first, Ok(Some(qumo::lite::Announce::Active { suffix, .. })) if suffix == "gone"),
        "got {first:?}"
    );
    let (_sub_send, mut subscription) = watcher.subscribe(1, "gone", "video", 0).await.unwrap();
    let upstream = within("upstream subscribe", 5 * SECOND, subscriptions.recv())
        .await
        .unwrap();
    let _open = publisher
        .open_group(upstream, 0, &[Bytes::from_static(b"half")])
        .await;
    // The frame before the cut is delivered...
    let (header, mut cut) = within("group", 5 * SECOND, watcher.accept_group())
        .await
        .unwrap();
    assert_eq!(header.sequence, 0);
    let first = within("first frame", 5 * SECOND, cut.frame()).await;
    assert_eq!(first, Ok(Some(Bytes::from_static(b"half"))));
    publisher.conn.close(0u32.into(), b"vanish");

    // ... and then the cut group is reset, in the code space moq-native
    // decodes, with SESSION_CLOSED.
    let rest = within("group reset", 5 * SECOND, cut.frame()).await;
    assert_eq!(rest.err().as_deref(), Some("reset 3"));
    // The announcement ends ...
    let ended = within("announce ended", 5 * SECOND, announcements.decode()).await;
    assert!(
        matches!(&ended, Ok(Some(qumo::lite::Announce::Ended { suffix, .. })) if suffix == "gone"),
        "got {ended:?}"
    );
    // ... and the subscription ends cleanly: lite-04 finishes the stream.
    let end = within("subscription end", 5 * SECOND, subscription.at_end()).await;
    assert_eq!(end, Ok(true));
    assert!(
        watcher.conn.close_reason().is_none(),
        "the watcher stays up"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_group_still_in_flight_when_its_publisher_ends_the_track_reaches_the_subscriber() {
    // QUIC delivers each group on its own stream, so a publisher's end of a
    // subscription can overtake its last group; the relay must wait for it.
    for version in [Version::Lite04, Version::Lite06] {
        let relay = Relay::start(2);
        let publisher = Peer::connect(relay.addr, &relay.fingerprint, version).await;
        let mut upstreams = publisher.publish_upstreams("vod");
        relay
            .wait_for_async("broadcast=vod active=true", 10 * SECOND)
            .await
            .expect("announced");
        let subscriber = Peer::connect(relay.addr, &relay.fingerprint, version).await;
        let (_send, mut replies) = subscriber.subscribe(1, "vod", "video", 0).await.unwrap();
        let mut upstream = within("upstream subscribe", 5 * SECOND, upstreams.recv())
            .await
            .unwrap();
        publisher
            .send_group(upstream.id, 0, &[Bytes::from_static(b"first")])
            .await;
        let (first, _) = within("group 0", 5 * SECOND, subscriber.read_group())
            .await
            .unwrap();
        assert_eq!(first.sequence, 0);

        upstream.end(2).await;
        // Not a wait for anything: it lets the end overtake the group, the
        // case under test. Should the group still come first, the test only
        // shows less, it does not fail.
        tokio::time::sleep(SECOND / 10).await;
        publisher
            .send_group(upstream.id, 1, &[Bytes::from_static(b"last")])
            .await;
        let last = within("group 1", 5 * SECOND, subscriber.read_group()).await;
        let (header, frames) =
            last.unwrap_or_else(|e| panic!("{version:?}: {e}; relay log:\n{}", relay.log()));
        assert_eq!(
            (header.sequence, frames),
            (1, vec![Bytes::from_static(b"last")]),
            "{version:?}"
        );

        // Then the subscription ends cleanly (lite-06: START, END{2}, FIN).
        if version.has_track_stream() {
            let mut end = None;
            while let Ok(Some(reply)) = within("reply", 5 * SECOND, replies.decode()).await {
                if let qumo::lite::SubscribeReply::End { group } = reply {
                    end = Some(group);
                }
            }
            assert_eq!(end, Some(2), "{version:?}");
        } else {
            let fin = within("subscription end", 5 * SECOND, replies.at_end()).await;
            assert_eq!(fin, Ok(true), "{version:?}");
        }
    }
}

/// Subscribe, leave and subscribe again before the owner shard's answer to
/// the first subscribe comes back: the late answer must not cancel the new
/// subscription (it used to send a second UNSUBSCRIBE, and the owner then
/// dropped the shard while its newest replica was live: neither media nor
/// an end). Twelve tracks on three shards, so most are owned by a shard
/// other than the subscriber's.
#[tokio::test(flavor = "current_thread")]
async fn subscribing_again_before_the_owner_answers_keeps_the_new_subscription() {
    let relay = Relay::start(3);
    let (publisher, mut upstreams) = publisher(&relay, Version::Lite05, "re").await;
    let viewer = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite05).await;
    const TRACKS: u64 = 12;
    let mut kept = Vec::new();
    for track in 0..TRACKS {
        let name = format!("t{track}");
        let (mut first, _) = viewer.subscribe(2 * track, "re", &name, 0).await.unwrap();
        let _ = first.finish();
        // The window is between the relay releasing the first replica and
        // the owner's answer arriving: a spread of gaps lands in it.
        tokio::time::sleep(Duration::from_micros(300 * track)).await;
        kept.push(
            viewer
                .subscribe(2 * track + 1, "re", &name, 0)
                .await
                .unwrap(),
        );
    }
    let mut ids = Vec::new();
    let mut heard = std::collections::BTreeSet::new();
    let deadline = Instant::now() + 20 * SECOND;
    let mut sequence = 0;
    while heard.len() < TRACKS as usize {
        assert!(
            Instant::now() < deadline,
            "only the subscriptions {heard:?} of 1, 3, ..., 23 got media; relay log:\n{}",
            relay.log()
        );
        while let Ok(id) = upstreams.try_recv() {
            ids.push(id);
        }
        for &id in &ids {
            publisher
                .send_group(id, sequence, &[Bytes::from_static(b"x")])
                .await;
        }
        sequence += 1;
        let read = tokio::time::timeout(Duration::from_millis(200), async {
            loop {
                if let Ok((header, _)) = viewer.read_group().await {
                    heard.insert(header.subscribe);
                }
            }
        });
        let _ = read.await;
    }
    assert!(heard.iter().all(|id| id % 2 == 1), "{heard:?}");
}

/// Over raw QUIC the relay offers probing in its SETUP and answers a PROBE
/// stream with what quinn-proto measured: a bitrate (cwnd x 8 / rtt) and
/// the round trip (loopback: under a millisecond, sent as 1).
#[tokio::test(flavor = "current_thread")]
async fn a_probe_stream_gets_the_connections_bandwidth_estimate() {
    let relay = Relay::start(1);
    let version = Version::Lite06;
    let peer = Peer::connect(relay.addr, &relay.fingerprint, version).await;
    let setup = async {
        let recv = peer.conn.accept_uni().await.unwrap();
        let mut reader = support::lite::Reader::new(recv, version);
        let kind = reader.decode::<qumo::lite::UniType>().await.unwrap();
        assert_eq!(kind, Some(qumo::lite::UniType::Setup));
        reader.decode::<qumo::lite::Setup>().await.unwrap().unwrap()
    };
    let setup = within("the relay's SETUP", 5 * SECOND, setup).await;
    assert_eq!(setup.probe, qumo::lite::ProbeLevel::Report);

    let (mut send, recv) = peer.conn.open_bi().await.unwrap();
    let kind = support::lite::encode(version, &[&BidiType::Probe]);
    send.write_all(&kind).await.unwrap();
    let mut reports = support::lite::Reader::new(recv, version);
    let report = within("a PROBE", 5 * SECOND, reports.decode::<qumo::lite::Probe>())
        .await
        .unwrap()
        .expect("a report before the FIN");
    let bitrate = report.bitrate.expect("a bitrate");
    // quinn's initial window (about 12 kB) in under a millisecond is
    // already more than 100 Mbit/s; anything below 1 Mbit/s is not cwnd/rtt.
    assert!(bitrate > 1_000_000, "{report:?}");
    assert!(report.rtt.is_some_and(|rtt| rtt < 1_000), "{report:?}");
    // Our FIN ends the reports: the relay finishes its side.
    send.finish().unwrap();
    let end = async {
        while reports
            .decode::<qumo::lite::Probe>()
            .await
            .unwrap()
            .is_some()
        {}
    };
    within("the relay's FIN", 5 * SECOND, end).await;
}

/// A frame a lite-05 publisher sends as a QUIC datagram reaches a lite-06
/// subscriber as one, under the subscriber's own subscribe id, while
/// groups go on over streams.
#[tokio::test(flavor = "current_thread")]
async fn a_publishers_datagram_reaches_the_subscriber_as_a_datagram() {
    let relay = Relay::start(2);
    let (publisher, mut subscriptions) = publisher(&relay, Version::Lite05, "cam").await;
    let viewer = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite06).await;
    let _subscription = viewer.subscribe(9, "cam", "video", 0).await.unwrap();
    let upstream = within("upstream", 5 * SECOND, subscriptions.recv())
        .await
        .unwrap();
    // A group first, so the subscription is surely live at the relay.
    publisher
        .send_group(upstream, 0, &[Bytes::from_static(b"g")])
        .await;
    let (_, frames) = within("group", 5 * SECOND, viewer.read_group())
        .await
        .unwrap();
    assert_eq!(frames, [Bytes::from_static(b"g")]);

    let header = qumo::lite::DatagramHeader {
        subscribe: upstream,
        sequence: 1,
        timestamp: 4242,
    };
    let mut body = bytes::BytesMut::new();
    header.encode(&mut body, Version::Lite05).unwrap();
    body.extend_from_slice(b"over a datagram");
    let body = body.freeze();
    // Datagrams may be lost even on loopback: send until one arrives.
    let received = within("a datagram", 5 * SECOND, async {
        loop {
            publisher.conn.send_datagram(body.clone()).unwrap();
            let read = tokio::time::timeout(SECOND / 10, viewer.conn.read_datagram());
            if let Ok(Ok(datagram)) = read.await {
                return datagram;
            }
        }
    })
    .await;
    let (got, payload) = qumo::lite::DatagramHeader::decode(&received, Version::Lite06).unwrap();
    assert_eq!((got.subscribe, got.sequence, got.timestamp), (9, 1, 4242));
    assert_eq!(payload, b"over a datagram");
}
