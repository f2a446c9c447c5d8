//! The admin listener (`admin.address`) of the real binary: `/metrics`
//! parses as Prometheus text, lists every shard, and its counters move as
//! sessions open and close and as media fans out; `/health` answers while
//! the relay runs and turns 503 at SIGTERM while it drains; `/announced`
//! lists live broadcasts.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use qumo::lite::Version;
use support::http;
use support::lite::{within, Peer};
use support::Relay;

const LIMIT: Duration = Duration::from_secs(10);

/// `/announced[/prefix]` as JSON, polled (from a blocking thread) until
/// `done` holds for its broadcast paths; panics after `LIMIT`.
async fn wait_announced(
    admin: SocketAddr,
    path: &'static str,
    what: &'static str,
    done: impl Fn(&[String]) -> bool + Send + 'static,
) -> serde_json::Value {
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + LIMIT;
        loop {
            let json: serde_json::Value =
                serde_json::from_str(&http::get_ok(admin, path, LIMIT)).expect("JSON");
            let paths: Vec<String> = json["broadcasts"]
                .as_array()
                .expect("a broadcasts list")
                .iter()
                .map(|b| b["path"].as_str().expect("a path").to_string())
                .collect();
            if done(&paths) {
                return json;
            }
            assert!(Instant::now() < deadline, "timed out: {what}; last {json}");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap()
}

/// The value of `name` for the series with exactly these labels.
fn series(samples: &[http::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| labels.iter().all(|(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
        .sum()
}

#[tokio::test]
async fn counters_follow_a_fan_out_and_announced_lists_its_broadcast() {
    const GROUPS: u64 = 4;
    const FRAME: usize = 3000;
    let relay = Relay::start_with(2, &http::sections("  max_connections: 8\n"));
    let admin = http::admin_addr(&relay);
    let before = tokio::task::spawn_blocking(move || {
        http::wait_metrics(admin, LIMIT, "both shards registered", |s| {
            s.iter().filter(|s| s.name == "qumo_sessions_open").count() == 2
        })
    })
    .await
    .unwrap();

    let publisher = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite06).await;
    let mut upstreams = publisher.publish_upstreams("fan/out");
    let listed = wait_announced(admin, "/announced", "the broadcast listed", |p| {
        p == ["fan/out"]
    })
    .await;
    assert_eq!(listed["truncated"], false);
    assert_eq!(listed["broadcasts"][0]["hops"], 0);
    // A prefix narrows the list, by whole path segments.
    wait_announced(admin, "/announced/fan", "listed under its prefix", |p| {
        p == ["fan/out"]
    })
    .await;
    wait_announced(
        admin,
        "/announced/fa",
        "a partial segment matches nothing",
        |p| p.is_empty(),
    )
    .await;

    let subscribers = [
        Peer::connect(relay.addr, &relay.fingerprint, Version::Lite05).await,
        Peer::connect(relay.addr, &relay.fingerprint, Version::Lite05).await,
        Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await,
    ];
    let mut requests = Vec::new();
    for subscriber in &subscribers {
        requests.push(
            subscriber
                .subscribe(1, "fan/out", "video", 0)
                .await
                .unwrap(),
        );
    }
    let upstream = within("the relay subscribes upstream", LIMIT, upstreams.recv())
        .await
        .unwrap();
    // One group at a time, each read by every subscriber before the next
    // is sent: no group is superseded, so none may be dropped as late.
    let frame = Bytes::from(vec![7u8; FRAME]);
    for sequence in 0..GROUPS {
        publisher
            .send_group(upstream.id, sequence, &[frame.clone(), frame.clone()])
            .await;
        for subscriber in &subscribers {
            let (header, frames) = within("a group", LIMIT, subscriber.read_group())
                .await
                .unwrap();
            assert_eq!((header.sequence, frames.len()), (sequence, 2));
        }
    }

    let fanned = (GROUPS * subscribers.len() as u64) as f64;
    let payload = (GROUPS as usize * 2 * FRAME) as f64;
    let after = tokio::task::spawn_blocking(move || {
        http::wait_metrics(admin, LIMIT, "the groups counted as delivered", |s| {
            http::total(s, "qumo_groups_delivered_total") >= fanned
        })
    })
    .await
    .unwrap();
    let moved = |name: &str| http::total(&after, name) - http::total(&before, name);
    assert!(moved("qumo_bytes_received_total") >= payload);
    assert!(moved("qumo_bytes_sent_total") >= payload * subscribers.len() as f64);
    assert!(moved("qumo_datagrams_received_total") > 0.0);
    assert!(moved("qumo_datagrams_sent_total") > 0.0);
    assert_eq!(moved("qumo_groups_too_far_behind_total"), 0.0);
    assert_eq!(moved("qumo_connections_accepted_total"), 4.0);
    assert_eq!(http::total(&after, "qumo_subscriptions_open"), 3.0);
    // Every shard holds the whole announce table.
    for shard in ["0", "1"] {
        let announced = http::value(&after, "qumo_broadcasts_announced", "shard", shard);
        assert_eq!(announced, Some(1.0), "shard {shard}");
    }
    assert!(http::total(&after, "qumo_hubs_open") >= 1.0);
    // The caches hold at least the newest group (sampled once a second).
    let group_bytes = (2 * FRAME) as f64;
    tokio::task::spawn_blocking(move || {
        http::wait_metrics(admin, LIMIT, "the cached group counted", |s| {
            http::total(s, "qumo_cache_bytes") >= group_bytes
        })
    })
    .await
    .unwrap();
    // Sessions by version and transport: exactly the four peers.
    for (version, count) in [
        ("moq-lite-06", 1.0),
        ("moq-lite-05", 2.0),
        ("moq-lite-04", 1.0),
    ] {
        let quic = [("version", version), ("transport", "quic")];
        let started = series(&after, "qumo_sessions_started_total", &quic)
            - series(&before, "qumo_sessions_started_total", &quic);
        assert_eq!(started, count, "{version} started");
        assert_eq!(
            series(&after, "qumo_sessions_by_version", &quic),
            count,
            "{version} open"
        );
    }
    let web = [("transport", "webtransport")];
    assert_eq!(series(&after, "qumo_sessions_started_total", &web), 0.0);
    // The GSO histogram counts every send call; the kernel's drops are read
    // for each shard's socket; the process figures are there.
    assert_eq!(
        http::total(&after, "qumo_send_batch_datagrams_count"),
        http::total(&after, "qumo_send_calls_total")
    );
    assert_eq!(
        http::total(&after, "qumo_send_batch_datagrams_sum"),
        http::total(&after, "qumo_datagrams_sent_total")
    );
    let inf = series(
        &after,
        "qumo_send_batch_datagrams_bucket",
        &[("le", "+Inf")],
    );
    assert_eq!(inf, http::total(&after, "qumo_send_calls_total"));
    for shard in ["0", "1"] {
        let drops = http::value(&after, "qumo_udp_receive_drops_total", "shard", shard);
        assert!(drops.is_some(), "shard {shard} socket drops");
    }
    assert!(http::total(&after, "process_resident_memory_bytes") > 0.0);
    assert!(http::total(&after, "process_open_fds") > 0.0);
    assert!(http::total(&after, "process_start_time_seconds") > 1.7e9);
    assert!(after.iter().any(|s| s.name == "process_cpu_seconds_total"));

    // The publisher leaves: its broadcast leaves the list.
    publisher.conn.close(0u32.into(), b"bye");
    wait_announced(admin, "/announced", "the broadcast gone", |p| p.is_empty()).await;
    drop(requests);
}

#[tokio::test]
async fn health_turns_503_at_sigterm_while_the_relay_drains() {
    // A long drain, held open by a peer that ignores GOAWAY: the relay
    // stays up, answering 503, until the peer leaves.
    let relay = Relay::start_draining(
        "127.0.0.1:0",
        1,
        &http::sections("  max_connections: 8\n"),
        "info,qumo=debug",
        "60s",
    );
    let admin = http::admin_addr(&relay);
    assert_eq!(http::get_ok(admin, "/health", LIMIT), "ok\n");
    let peer = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite05).await;
    tokio::task::spawn_blocking(move || {
        http::wait_metrics(admin, LIMIT, "the session open", |s| {
            http::total(s, "qumo_sessions_open") == 1.0
        })
    })
    .await
    .unwrap();

    relay.terminate();
    let status = |path: &str| match http::get(admin, path, LIMIT) {
        http::Outcome::Answer(text) => text.split(' ').nth(1).unwrap_or("").to_string(),
        other => panic!("{path}: {other:?}"),
    };
    let deadline = Instant::now() + LIMIT;
    while status("/health") != "503" {
        assert!(Instant::now() < deadline, "/health still 200 after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status("/healthz"), "503");
    assert_eq!(
        status("/metrics"),
        "200",
        "metrics are served while draining"
    );

    peer.conn.close(0u32.into(), b"bye");
    let exit = relay.wait_exit(Duration::from_secs(30));
    assert_eq!(exit.and_then(|e| e.code()), Some(0));
}

#[tokio::test]
async fn metrics_parse_label_every_shard_and_move_with_connections() {
    let relay = Relay::start_with(2, &http::sections("  max_connections: 8\n"));
    let admin = http::admin_addr(&relay);

    let before = http::wait_metrics(admin, LIMIT, "both shards registered", |s| {
        s.iter().filter(|s| s.name == "qumo_sessions_open").count() == 2
    });
    for name in [
        "qumo_sessions_open",
        "qumo_connections_accepted_total",
        "qumo_connections_open",
        "qumo_datagrams_received_total",
        "qumo_frames_too_large_total",
    ] {
        let mut shards: Vec<&str> = before
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.label("shard"))
            .collect();
        shards.sort();
        assert_eq!(shards, ["0", "1"], "{name} per shard");
    }
    assert_eq!(http::total(&before, "qumo_connections_accepted_total"), 0.0);
    assert_eq!(http::total(&before, "qumo_datagrams_received_total"), 0.0);

    let peers = [
        Peer::connect(relay.addr, &relay.fingerprint, Version::Lite05).await,
        Peer::connect(relay.addr, &relay.fingerprint, Version::Lite05).await,
    ];
    // Scraped from a blocking thread: the peers' connections keep running
    // on this runtime meanwhile.
    let during = tokio::task::spawn_blocking(move || {
        http::wait_metrics(admin, LIMIT, "two connections open", |s| {
            http::total(s, "qumo_connections_accepted_total") == 2.0
                && http::total(s, "qumo_connections_open") == 2.0
        })
    })
    .await
    .unwrap();
    assert!(http::total(&during, "qumo_datagrams_received_total") > 0.0);
    assert!(http::total(&during, "qumo_bytes_sent_total") > 0.0);

    for peer in &peers {
        peer.conn.close(0u32.into(), b"bye");
    }
    tokio::task::spawn_blocking(move || {
        http::wait_metrics(admin, LIMIT, "the connections closed", |s| {
            http::total(s, "qumo_connections_open") == 0.0
                && http::total(s, "qumo_connections_accepted_total") == 2.0
        })
    })
    .await
    .unwrap();
    drop(peers);

    // The admin listener counts its own scrapes.
    let after = http::parse_metrics(&http::get_ok(admin, "/metrics", LIMIT));
    assert!(http::value(&after, "qumo_http_requests_total", "listener", "admin").unwrap() >= 3.0);
}

#[tokio::test]
async fn a_relay_limit_hit_shows_in_its_shards_counter() {
    // One shard, so the first session is running before the second
    // connection's Initial arrives: the second is the one refused, before
    // any TLS work (the runtime's connection cap is relay.max_sessions).
    let relay = Relay::start_with(
        1,
        &format!(
            "relay:\n  max_sessions: 1\n{}",
            http::sections("  max_connections: 8\n")
        ),
    );
    let admin = http::admin_addr(&relay);
    let _first = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite05).await;
    let endpoint = support::lite::endpoint(
        &relay.fingerprint,
        Version::Lite04.alpn(),
        quinn::TransportConfig::default(),
    );
    let refused = endpoint
        .connect(relay.addr, "localhost")
        .unwrap()
        .await
        .expect_err("the second connection is refused");
    assert!(
        matches!(refused, quinn::ConnectionError::ConnectionClosed(_)),
        "{refused}"
    );
    tokio::task::spawn_blocking(move || {
        http::wait_metrics(admin, LIMIT, "one connection refused", |s| {
            http::value(s, "qumo_refused_connection_limit_total", "shard", "0") == Some(1.0)
                && http::value(s, "qumo_connections_accepted_total", "shard", "0") == Some(1.0)
        })
    })
    .await
    .unwrap();
}

#[test]
fn healthz_answers_and_unknown_paths_are_404() {
    let relay = Relay::start_with(1, &http::sections("  max_connections: 8\n"));
    let admin = http::admin_addr(&relay);
    assert_eq!(http::get_ok(admin, "/healthz", LIMIT), "ok\n");
    match http::get(admin, "/nope", LIMIT) {
        http::Outcome::Answer(text) => assert!(text.starts_with("HTTP/1.1 404 "), "{text}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_taken_admin_address_stops_the_relay_at_start_with_exit_code_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  address: \"127.0.0.1:0\"\n  shards: 1\nadmin:\n  address: \"{address}\"\n"
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_qumo-relay"))
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{log}");
    assert!(log.contains("cannot serve admin.address on TCP"), "{log}");
}
