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
    // The subscriber's own SUBSCRIBE, not the lines of the hub and the
    // upstream subscription it starts, which name the same track.
    let track = format!("track={broadcast}/seconds");
    let subscribed = [": subscribe session=", track.as_str()];
    for attempt in 0..12 {
        let subscriber = moq_clock(url, broadcast, "subscribe");
        let line = relay
            .wait_for_nth_all(&subscribed, attempt, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("the relay saw no subscription:\n{}", relay.log()));
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
    // Logged before the first tick went out, but read by another thread.
    relay
        .wait_for("subscribing upstream", Duration::from_secs(10))
        .expect("the relay subscribed upstream");
    assert_eq!(
        relay.count("subscribing upstream"),
        1,
        "one upstream subscription for four subscribers; log:\n{}",
        relay.log()
    );
}

#[test]
fn a_subscriber_hears_the_end_when_the_publisher_leaves() {
    // A killed publisher says no goodbye: the relay notices by idle timeout.
    let relay = Relay::start_with(2, "quic:\n  idle_timeout: 2s\n  keep_alive: 500ms\n");
    let url = format!("moql://{}", relay.addr);
    let (publisher, _) = publish(&relay, &url, "leaving");
    let subscriber = moq_clock(&url, "leaving", "subscribe");
    assert!(!subscriber.ticks(1, Duration::from_secs(10)).is_empty());
    drop(publisher);
    // The relay then ends the announcement and the subscription cleanly and
    // resets the minute's open group with SESSION_CLOSED (3): it was cut, and
    // a FIN would tell the subscriber, or a cache behind it, that the group
    // is whole. Which of these moq-clock handles first is a race between
    // streams that nothing orders, and each ends it differently:
    // - the announcement's end: "broadcast is offline"; it drops its clock
    //   and waits for the broadcast to come back;
    // - the subscription's end: "subscribe complete" (or, from moq-net's
    //   side, "broadcast closed");
    // - the cut group: moq-clock 0.10.21 (moq-net 0.1.3) turns every stream
    //   reset into `Error::Remote(code)`, whatever the code, and its clock
    //   returns the error from `read_frame`, so it exits with "remote error:
    //   code=3". No reset code reads as clean to it, so the relay cannot end
    //   a cut group in a way it accepts without claiming the group complete.
    // All are the end the relay sent; an error on the subscription itself
    // ("subscribe error") or another reset code would not be.
    let heard = [
        "broadcast is offline",
        "subscribe complete",
        "broadcast closed",
        "remote error: code=3",
    ];
    let told = subscriber.wait_stderr_any(&heard, Duration::from_secs(10));
    eprintln!("moq-clock heard first: {told:?}");
    let log = subscriber.stderr.snapshot();
    let wrong = |l: &&String| {
        l.contains("subscribe error")
            || (l.contains("remote error: code=") && !l.contains("remote error: code=3"))
    };
    assert!(
        told.is_some() && !log.iter().any(|l| wrong(&l)),
        "the subscriber heard the end the relay sent; its log:\n{}\nrelay log:\n{}",
        log.join("\n"),
        relay.log()
    );
    // That the announcement ends, the subscription ends cleanly and the
    // group is reset with SESSION_CLOSED is asserted by the scripted peer in
    // relay_behaviour, where no race decides what it sees first.
}

/// moq-clock's `YYYY-MM-DD HH:MM` of a tick: the group it belongs to (it
/// starts one each minute).
fn minute(tick: &str) -> &str {
    &tick.trim()[..16]
}

#[test]
fn a_subscriber_joining_late_gets_the_cached_group_from_its_start() {
    let relay = Relay::start(1);
    let url = format!("moql://{}", relay.addr);
    // A minute's rollover starts a new group between the two subscribers
    // now and then; then the late one rightly starts at the new group, and
    // the test tries again (once the rollover has passed, one try is enough).
    for attempt in 0..3 {
        let broadcast = format!("late{attempt}");
        let (_publisher, _) = publish(&relay, &url, &broadcast);
        let early = moq_clock(&url, &broadcast, "subscribe");
        let before = early.ticks(3, Duration::from_secs(20));
        assert!(
            before.len() >= 3,
            "got {before:?}; relay log:\n{}",
            relay.log()
        );
        // Three ticks of the group were published before this subscriber
        // existed: it can only have them from the relay's cache.
        let late = moq_clock(&url, &broadcast, "subscribe");
        let after = late.ticks(3, Duration::from_secs(20));
        assert!(
            after.len() >= 3,
            "got {after:?}; relay log:\n{}",
            relay.log()
        );
        if minute(&after[0]) != minute(&before[0]) || minute(&before[2]) != minute(&before[0]) {
            continue;
        }
        assert_eq!(
            after[..3],
            before[..3],
            "the late subscriber starts at the cached group's first tick; relay log:\n{}",
            relay.log()
        );
        return;
    }
    panic!("a new minute began during each of 3 tries");
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
        relay
            .wait_for_nth("CONNECT request", 1, Duration::from_secs(10))
            .is_some(),
        "both came over WebTransport; relay log:\n{}",
        relay.log()
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

/// moq-dev's `moq-relay` 0.17.10 as the origin (installed by
/// `scripts/install-clients.sh`; `QUMO_MOQ_RELAY` names another copy): a
/// moq-clock publishes there, a qumo edge dials it (`http://`, pinning the
/// hash moq-relay serves), and a moq-clock on the edge prints the ticks.
#[test]
fn a_qumo_edge_under_moq_relay_serves_its_clock() {
    let moq_relay = MoqRelay::start(&[]);
    let origin = &moq_relay.addr;
    let _publisher = moq_clock(&format!("http://{origin}"), "clock", "publish");

    let edge = Relay::start_with(2, &format!("relay:\n  upstream_url: \"http://{origin}\"\n"));
    let learned = edge.wait_for_nth_all(
        &["broadcast=clock", "active=true"],
        0,
        Duration::from_secs(20),
    );
    assert!(
        learned.is_some(),
        "the edge never learned the clock:\n{}\nmoq-relay:\n{:#?}",
        edge.log(),
        moq_relay.log.snapshot()
    );
    let subscriber = moq_clock(
        &format!("moql://127.0.0.1:{}", edge.addr.port()),
        "clock",
        "subscribe",
    );
    let ticks = subscriber.ticks(3, Duration::from_secs(20));
    assert!(
        ticks.len() >= 3,
        "got {ticks:?}; client log:\n{:#?}\nedge log:\n{}",
        subscriber.stderr.snapshot(),
        edge.log()
    );
}

/// The other way round: moq-relay 0.17.10 joins qumo as a cluster node
/// (`--cluster-connect http://qumo/`, pinning the hash qumo serves, with
/// `--cluster-token`: a moq-token-cli token with cluster rights). Its dial
/// is a moq-lite session that both publishes (its origin, hops included)
/// and subscribes (ANNOUNCE_REQUEST for everything), so a clock published
/// on either relay is read on the other.
#[test]
fn moq_relay_dialling_qumo_as_a_cluster_peer_gets_and_gives_broadcasts() {
    let keys = support::token::Keys::generate("HS256");
    let token_dir = tempfile::tempdir().unwrap();
    let cluster_token = token_dir.path().join("cluster.jwt");
    std::fs::write(&cluster_token, keys.sign(".cluster", &[""], &[""])).unwrap();
    // A fixed port: the certificate hash is served over TCP on the same one.
    // Clients are public; only the cluster token makes a peer.
    let qumo = Relay::start_on(
        &format!("127.0.0.1:{}", support::free_port()),
        2,
        &format!(
            "auth:\n  key_file: \"{}\"\n  public: [\"\"]\nadmin:\n  address: \"127.0.0.1:0\"\n",
            keys.verifying.display()
        ),
    );
    let admin = support::http::admin_addr(&qumo);
    let moq_relay = MoqRelay::start(&[
        "--cluster-connect",
        &format!("http://127.0.0.1:{}/", qumo.addr.port()),
        "--cluster-token",
        cluster_token.to_str().unwrap(),
    ]);
    let _on_moq_relay = moq_clock(&format!("http://{}", moq_relay.addr), "theirs", "publish");
    let _on_qumo = moq_clock(&format!("moql://{}", qumo.addr), "ours", "publish");
    // moq-relay's announcement reaches qumo over its dialled session with
    // its hops kept: the token made it a peer, not a client.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let listed = support::http::get_ok(admin, "/announced/theirs", Duration::from_secs(10));
        let json: serde_json::Value = serde_json::from_str(&listed).expect("JSON");
        let hops = json["broadcasts"][0]["hops"].as_u64();
        if hops.is_some_and(|h| h >= 1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "qumo never learned moq-relay's clock as a peer's: {json}\n{}\nmoq-relay:\n{:#?}",
            qumo.log(),
            moq_relay.log.snapshot()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let on_qumo = moq_clock(&format!("moql://{}", qumo.addr), "theirs", "subscribe");
    let ticks = on_qumo.ticks(3, Duration::from_secs(20));
    assert!(
        ticks.len() >= 3,
        "moq-relay's clock on qumo: {ticks:?}; client log:\n{:#?}\nqumo log:\n{}",
        on_qumo.stderr.snapshot(),
        qumo.log()
    );

    let on_moq_relay = moq_clock(&format!("http://{}", moq_relay.addr), "ours", "subscribe");
    let ticks = on_moq_relay.ticks(3, Duration::from_secs(20));
    assert!(
        ticks.len() >= 3,
        "qumo's clock on moq-relay: {ticks:?}; client log:\n{:#?}\nmoq-relay:\n{:#?}\nqumo log:\n{}",
        on_moq_relay.stderr.snapshot(),
        moq_relay.log.snapshot(),
        qumo.log()
    );
}

/// moq-dev's `moq-relay` on a free loopback port with a generated
/// certificate, its hash served over HTTP on the same port, open to all;
/// `extra` adds flags. Killed when dropped.
struct MoqRelay {
    addr: String,
    log: support::Lines,
    _child: KillOnDrop,
}

impl MoqRelay {
    fn start(extra: &[&str]) -> MoqRelay {
        let addr = format!("127.0.0.1:{}", support::free_port());
        let mut child =
            std::process::Command::new(support::client_binary("moq-relay", "QUMO_MOQ_RELAY"))
                .args([
                    "--listen",
                    &addr,
                    "--listen-tls-generate",
                    "localhost",
                    "--web-http-listen",
                    &addr,
                    "--auth-public",
                    "**",
                ])
                .args(extra)
                .env("NO_COLOR", "1")
                .env("RUST_LOG", "info")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("moq-relay runs");
        let log = support::Lines::collect(child.stderr.take().unwrap());
        let child = KillOnDrop(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        // Up when its HTTP side (the certificate hash) accepts connections.
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "moq-relay did not start:\n{:#?}",
                log.snapshot()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        MoqRelay {
            addr,
            log,
            _child: child,
        }
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
