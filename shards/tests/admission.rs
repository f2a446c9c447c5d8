//! Admission control: Retry, the per-source caps and the runtime-wide
//! connection cap, each checked before any TLS work. Floods are bounded in
//! count and sent only to 127.0.0.0/8 (sources 127.0.0.2, 127.0.0.3, ...).
//! Every wait polls until a deadline.

mod common;

use std::time::{Duration, Instant};

use common::initials::*;
use common::*;
use qumo_shards::{RetryPolicy, RuntimeConfig, Steering};

const SHARDS: usize = 2;

#[tokio::test]
async fn retry_always_makes_every_client_prove_its_address_and_quinn_passes() {
    let id = identity();
    let mut config = server_config(&id, SHARDS, Steering::Bpf);
    config.admission.retry = RetryPolicy::Always;
    let runtime = start_echo(config);
    let server = runtime.local_addr();

    // A flood of unvalidated Initials is answered with Retry only: no
    // handshake starts, no connection state is held.
    let factory = InitialFactory::new(&id);
    let flooders = sources(4);
    for i in 0..200 {
        let _ = flooders[i % flooders.len()].send_to(&factory.initial(server), server);
    }
    let stats = wait_until(&runtime, Duration::from_secs(10), |s| decided(s) >= 150).await;
    assert!(stats.retries_sent >= 150, "{stats:?}");
    assert_eq!(stats.connections_accepted, 0, "{stats:?}");
    assert_eq!(stats.handshakes_in_progress, 0, "{stats:?}");

    // A real quinn client answers the Retry and connects.
    let client = quinn_client(&id);
    let conn = connect(&client, server).await;
    assert_eq!(echo_once(&conn, b"validated").await, b"validated");
    let stats = total(&runtime);
    assert_eq!(stats.connections_accepted, 1, "{stats:?}");
    assert!(stats.retries_sent >= 151, "{stats:?}");
}

#[tokio::test]
async fn retry_auto_starts_only_above_the_threshold() {
    let id = identity();
    let mut config = server_config(&id, 1, Steering::Bpf);
    config.admission.retry = RetryPolicy::Auto;
    config.admission.retry_above_handshakes = 8;
    config.admission.handshake_timeout = Duration::from_secs(30);
    config.quic.idle_timeout = Duration::from_secs(60);
    let runtime = start_echo(config);
    let server = runtime.local_addr();
    let factory = InitialFactory::new(&id);
    let flooders = sources(2);
    for i in 0..40 {
        let _ = flooders[i % 2].send_to(&factory.initial(server), server);
    }
    let stats = wait_until(&runtime, Duration::from_secs(10), |s| decided(s) >= 40).await;
    // The first 8 start handshakes (nobody answers, so they stay); from then
    // on every unvalidated Initial is sent a Retry.
    assert_eq!(stats.connections_accepted, 8, "{stats:?}");
    assert_eq!(stats.handshakes_in_progress, 8, "{stats:?}");
    assert_eq!(stats.retries_sent, 32, "{stats:?}");
    // A real client completes its handshake through the Retry.
    let conn = connect(&quinn_client(&id), server).await;
    assert_eq!(echo_once(&conn, b"auto").await, b"auto");
}

#[tokio::test]
async fn connections_per_source_are_capped_before_tls_and_other_sources_go_on() {
    let id = identity();
    let mut config = server_config(&id, SHARDS, Steering::Bpf);
    config.admission.max_connections_per_source = 2;
    let runtime = start_echo(config);
    let server = runtime.local_addr();
    let busy = quinn_client_on(&id, [127, 0, 0, 20]);
    let first = connect(&busy, server).await;
    let _second = connect(&busy, server).await;
    // A third from the same address, from a new port (the kernel may put it
    // on either shard): refused, not handshaken.
    let third = quinn_client_on(&id, [127, 0, 0, 20]);
    let error = third
        .connect(server, "localhost")
        .unwrap()
        .await
        .expect_err("over the per-source cap");
    assert!(is_refused(&error), "{error}");
    let stats = total(&runtime);
    assert_eq!(stats.connections_accepted, 2, "{stats:?}");
    assert!(stats.refused_source_connection_limit >= 1, "{stats:?}");

    // Another address is unaffected.
    let other = quinn_client_on(&id, [127, 0, 0, 21]);
    let conn = connect(&other, server).await;
    assert_eq!(echo_once(&conn, b"other").await, b"other");

    // When one of the first two has gone, the address may connect again.
    first.close(0u32.into(), b"bye");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match third.connect(server, "localhost").unwrap().await {
            Ok(conn) => {
                assert_eq!(echo_once(&conn, b"again").await, b"again");
                break;
            }
            Err(e) if is_refused(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the slot was not given back: {e}"),
        }
    }
}

#[tokio::test]
async fn new_handshakes_per_source_follow_the_token_bucket() {
    let id = identity();
    let mut config = server_config(&id, SHARDS, Steering::Bpf);
    config.admission.retry = RetryPolicy::Never;
    config.admission.handshakes_per_source_per_second = 2;
    config.admission.handshake_burst_per_source = 5;
    config.quic.idle_timeout = Duration::from_secs(60);
    let runtime = start_echo(config);
    let server = runtime.local_addr();
    let factory = InitialFactory::new(&id);
    let flooder = sources(1);
    let started = Instant::now();
    const SENT: u64 = 40;
    for _ in 0..SENT {
        let _ = flooder[0].send_to(&factory.initial(server), server);
    }
    let stats = wait_until(&runtime, Duration::from_secs(10), |s| decided(s) >= SENT).await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(decided(&stats), SENT, "{stats:?}");
    // Burst 5, then 2 per second: however slow the machine, no more.
    let allowed = 5 + (2.0 * elapsed).floor() as u64;
    assert!(
        stats.connections_accepted >= 5 && stats.connections_accepted <= allowed,
        "accepted {} in {elapsed:.2}s, allowed {allowed}: {stats:?}",
        stats.connections_accepted
    );
    assert_eq!(
        stats.ignored_source_rate,
        SENT - stats.connections_accepted,
        "{stats:?}"
    );
    // Another address has its own bucket.
    let conn = connect(&quinn_client_on(&id, [127, 0, 0, 30]), server).await;
    assert_eq!(echo_once(&conn, b"mine").await, b"mine");
}

#[tokio::test]
async fn over_the_connection_cap_a_client_is_refused_without_a_handshake() {
    let id = identity();
    let mut config: RuntimeConfig = server_config(&id, SHARDS, Steering::Bpf);
    config.admission.max_connections = 1;
    let runtime = start_echo(config);
    let server = runtime.local_addr();
    let client = quinn_client(&id);
    let held = connect(&client, server).await;
    let error = client
        .connect(server, "localhost")
        .unwrap()
        .await
        .expect_err("over the connection cap");
    assert!(is_refused(&error), "{error}");
    let stats = total(&runtime);
    // Refused from its first Initial: never accepted, so no TLS work.
    assert_eq!(stats.connections_accepted, 1, "{stats:?}");
    assert!(stats.refused_connection_limit >= 1, "{stats:?}");
    assert_eq!(runtime.admitted_connections(), 1);
    assert_eq!(echo_once(&held, b"held").await, b"held");
}
