//! The admin listener (`admin.address`) of the real binary: `/metrics`
//! parses as Prometheus text, lists every shard, and its counters move as
//! sessions open and close; `/healthz` answers while the relay runs.

mod support;

use std::time::Duration;

use qumo::lite::Version;
use support::http;
use support::lite::Peer;
use support::Relay;

const LIMIT: Duration = Duration::from_secs(10);

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
