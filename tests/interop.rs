//! Interop with a real third-party client: moq-dev's `moq-clock` 0.10.21
//! publishes a clock through `qumo-relay` and another `moq-clock` prints its
//! ticks. `scripts/install-clients.sh` installs the client (README's test
//! command runs it); set `QUMO_MOQ_CLOCK` to use another copy.
//!
//! With two shards the kernel spreads connections, so a test that needs the
//! publisher and subscriber on different shards (or on the same one) starts
//! subscribers until one lands where it wants, reading the relay's log.

mod support;

use std::time::Duration;

use support::{moq_clock, Relay};

/// Start a clock publisher and wait until the relay has its announcement.
fn publish(relay: &Relay, url: &str, broadcast: &str) -> (support::Client, usize) {
    let publisher = moq_clock(url, broadcast, "publish");
    let line = relay
        .wait_for(
            &format!("broadcast={broadcast} active=true"),
            Duration::from_secs(10),
        )
        .expect("the relay saw the clock's announcement");
    (publisher, support::shard_of(&line))
}

/// Start subscribers until one sits on a shard `wanted` accepts; return it
/// with its shard.
fn subscribe_where(
    relay: &Relay,
    url: &str,
    broadcast: &str,
    wanted: impl Fn(usize) -> bool,
) -> (support::Client, usize) {
    for attempt in 0..12 {
        let subscriber = moq_clock(url, broadcast, "subscribe");
        let needle = format!("track={broadcast}/seconds");
        let line = relay
            .wait_for_nth(&needle, attempt, Duration::from_secs(10))
            .expect("the relay saw the subscription");
        let shard = support::shard_of(&line);
        if wanted(shard) {
            return (subscriber, shard);
        }
        drop(subscriber);
    }
    panic!("no subscriber landed on a wanted shard in 12 tries");
}

#[test]
fn moq_clock_ticks_reach_a_subscriber_on_another_shard() {
    let relay = Relay::start(2);
    let url = format!("moql://{}", relay.addr);
    let (_publisher, pub_shard) = publish(&relay, &url, "cross");
    let (subscriber, sub_shard) = subscribe_where(&relay, &url, "cross", |s| s != pub_shard);
    assert_ne!(pub_shard, sub_shard);
    let ticks = subscriber.ticks(3, Duration::from_secs(10));
    assert!(
        ticks.len() >= 3,
        "got {ticks:?}; relay log:\n{}",
        relay.log()
    );
}

#[test]
fn moq_clock_ticks_reach_a_subscriber_on_the_same_shard() {
    let relay = Relay::start(2);
    let url = format!("moql://{}", relay.addr);
    let (_publisher, pub_shard) = publish(&relay, &url, "same");
    let (subscriber, _) = subscribe_where(&relay, &url, "same", |s| s == pub_shard);
    let ticks = subscriber.ticks(3, Duration::from_secs(10));
    assert!(
        ticks.len() >= 3,
        "got {ticks:?}; relay log:\n{}",
        relay.log()
    );
}

#[test]
fn many_subscribers_share_one_upstream_subscription() {
    let relay = Relay::start(2);
    let url = format!("moql://{}", relay.addr);
    let (_publisher, _) = publish(&relay, &url, "fan");
    let subscribers: Vec<_> = (0..4)
        .map(|_| moq_clock(&url, "fan", "subscribe"))
        .collect();
    for s in &subscribers {
        let ticks = s.ticks(2, Duration::from_secs(10));
        assert!(
            ticks.len() >= 2,
            "got {ticks:?}; relay log:\n{}",
            relay.log()
        );
    }
    assert_eq!(
        relay.count("subscribing upstream"),
        1,
        "one upstream subscription for four subscribers; log:\n{}",
        relay.log()
    );
}

#[test]
fn a_subscriber_gets_a_clean_end_when_the_publisher_leaves() {
    // A killed publisher says no goodbye: the relay notices by idle timeout.
    let relay = Relay::start_with(2, "quic:\n  idle_timeout: 2s\n  keep_alive: 500ms\n");
    let url = format!("moql://{}", relay.addr);
    let (publisher, _) = publish(&relay, &url, "leaving");
    let subscriber = moq_clock(&url, "leaving", "subscribe");
    assert!(!subscriber.ticks(1, Duration::from_secs(10)).is_empty());
    drop(publisher);
    // moq-clock hears the end one of three ways, whichever of the relay's
    // messages it handles first: the subscription finishing ("subscribe
    // complete"), the announcement ending ("broadcast is offline"), or the
    // broadcast closing under the subscription ("broadcast closed"). Never
    // "subscribe error": the relay ends a departed publisher's tracks
    // cleanly. (The minute's group was open, so it is reset with
    // SESSION_CLOSED; moq-clock exits on that, as it would behind moq-relay.)
    let heard = [
        "subscribe complete",
        "broadcast is offline",
        "broadcast closed",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let told = loop {
        let log = subscriber.stderr.snapshot();
        if let Some(line) = log.iter().find(|l| heard.iter().any(|h| l.contains(h))) {
            break Some(line.clone());
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = subscriber.stderr.snapshot();
    assert!(
        told.is_some() && !log.iter().any(|l| l.contains("subscribe error")),
        "the subscriber heard a clean end; its log:\n{}\nrelay log:\n{}",
        log.join("\n"),
        relay.log()
    );
    // That the announcement ends is asserted by the scripted peer in
    // relay_behaviour, where no race decides what is logged.
}

#[test]
fn a_subscriber_joining_late_gets_the_cached_group_at_once() {
    // moq-clock starts a group each minute: keep clear of the rollover so
    // the cached group has several frames.
    let second = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            % 60
    };
    while !(2..=40).contains(&second()) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let relay = Relay::start(1);
    let url = format!("moql://{}", relay.addr);
    let (_publisher, _) = publish(&relay, &url, "late");
    std::thread::sleep(Duration::from_secs(4));
    let subscriber = moq_clock(&url, "late", "subscribe");
    // The cached group's ticks come at once, faster than the clock makes
    // them (one a second).
    let ticks = subscriber.ticks(3, Duration::from_millis(1500));
    assert!(
        ticks.len() >= 3,
        "got {ticks:?}; relay log:\n{}",
        relay.log()
    );
}

#[test]
fn moq_clock_ticks_over_webtransport() {
    let relay = Relay::start(2);
    let url = format!("https://{}", relay.addr);
    let (_publisher, _) = publish(&relay, &url, "wt");
    let subscriber = moq_clock(&url, "wt", "subscribe");
    let ticks = subscriber.ticks(3, Duration::from_secs(10));
    assert!(
        ticks.len() >= 3,
        "got {ticks:?}; relay log:\n{}",
        relay.log()
    );
    assert!(
        relay.count("CONNECT request") >= 2,
        "both came over WebTransport"
    );
}

#[test]
fn moq_clock_pins_the_certificate_hash_it_fetches_over_http() {
    // http:// makes moq-clock GET /certificate.sha256 over TCP on the same
    // port number, then connect over WebTransport trusting only that hash;
    // no --tls-disable-verify is needed, but moq_clock() passes it, so a
    // raw-QUIC publisher shows the hash is what the subscriber relied on.
    let port = support::free_port();
    let relay = Relay::start_on(&format!("127.0.0.1:{port}"), 2, "");
    let (_publisher, _) = publish(&relay, &format!("moql://127.0.0.1:{port}"), "pinned");
    let subscriber = support::moq_clock_strict(&format!("http://127.0.0.1:{port}"), "pinned");
    let ticks = subscriber.ticks(3, Duration::from_secs(10));
    assert!(
        ticks.len() >= 3,
        "got {ticks:?}; client log:\n{}\nrelay log:\n{}",
        subscriber.stderr.snapshot().join("\n"),
        relay.log()
    );
}

#[test]
fn shutting_down_sends_goaway_to_moq_clock_before_closing() {
    let relay = Relay::start(2);
    let url = format!("moql://{}", relay.addr);
    let (publisher, _) = publish(&relay, &url, "bye");
    relay.terminate();
    assert!(
        publisher
            .wait_stderr("goaway", Duration::from_secs(5))
            .is_some(),
        "moq-clock saw the GOAWAY; its log:\n{}\nrelay log:\n{}",
        publisher.stderr.snapshot().join("\n"),
        relay.log()
    );
}

#[test]
fn moq_clock_connects_through_a_quic_retry_over_both_transports() {
    // With retry: always every new connection must first echo a Retry
    // token: moq-clock (quinn) over raw QUIC publishes, and over
    // WebTransport (web-transport-quinn) subscribes.
    let relay = Relay::start_with(2, "admission:\n  retry: always\n");
    let (_publisher, _) = publish(&relay, &format!("moql://{}", relay.addr), "retried");
    let subscriber = moq_clock(&format!("https://{}", relay.addr), "retried", "subscribe");
    let ticks = subscriber.ticks(3, Duration::from_secs(10));
    assert!(
        ticks.len() >= 3,
        "got {ticks:?}; relay log:\n{}",
        relay.log()
    );
    // Both connections were sent a Retry before they were accepted.
    assert!(relay.count("Retry sent") >= 2, "{}", relay.log());
    assert!(relay.count("CONNECT request") >= 1, "{}", relay.log());
}

#[test]
fn moq_clock_over_the_session_cap_is_refused_before_any_handshake() {
    // The issue: refused only after its TLS handshake, moq-clock retried
    // 2907 full handshakes in 5 s. Now each attempt is refused on its first
    // Initial, so however often it retries, no connection is accepted.
    let relay = Relay::start_with(2, "relay:\n  max_sessions: 1\n");
    let url = format!("moql://{}", relay.addr);
    let (_publisher, _) = publish(&relay, &url, "full");
    let _refused = moq_clock(&url, "full", "subscribe");
    // It retries: wait for a few refused attempts.
    assert!(
        relay
            .wait_for_nth("connection refused", 2, Duration::from_secs(10))
            .is_some(),
        "fewer than 3 refusals; relay log:\n{}",
        relay.log()
    );
    eprintln!(
        "moq-clock over the cap: {} attempts refused before TLS",
        relay.count("connection refused")
    );
    // Only the publisher's connection was ever accepted: no TLS handshake
    // for any of the refused attempts, and the relay's fallback never ran.
    assert_eq!(relay.count("connection accepted"), 1, "{}", relay.log());
    assert_eq!(relay.count("session refused"), 0, "{}", relay.log());
}
