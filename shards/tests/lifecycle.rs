//! Shutdown, client mode and panics.

mod common;

use std::time::{Duration, Instant};

use common::*;
use qumo_shards::{Runtime, RuntimeConfig, ShardContext, Steering};

#[tokio::test]
async fn shutdown_closes_clients_with_the_application_code_and_returns_promptly() {
    let id = identity();
    let mut config = server_config(&id, 2, Steering::Bpf);
    config.shutdown_close_code = 0x42;
    config.shutdown_timeout = Duration::from_secs(2);
    let runtime = start_echo(config);
    let client = quinn_client(&id);
    let conn = connect(&client, runtime.local_addr()).await;
    assert!(echo_once(&conn, b"hello").await == b"hello");

    let started = Instant::now();
    runtime.shutdown_handle().shutdown();
    let reason = conn.closed().await;
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(0x42));
            assert_eq!(&close.reason[..], b"server shutting down");
        }
        other => panic!("expected an application close, got {other:?}"),
    }
    tokio::task::spawn_blocking(move || runtime.wait())
        .await
        .unwrap();
    // The bound is the shutdown timeout; the slack is for a loaded 2-core
    // box. What this catches is a shutdown that misses its deadline.
    assert!(
        started.elapsed() < Duration::from_secs(2) + Duration::from_secs(3),
        "shutdown overran its bound: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn no_connection_is_accepted_once_shutdown_has_begun() {
    let id = identity();
    let runtime = start_echo(server_config(&id, 1, Steering::Bpf));
    let addr = runtime.local_addr();
    let client = quinn_client(&id);
    let held = connect(&client, addr).await;
    runtime.shutdown_handle().shutdown();
    // The held connection's close proves the shard has begun shutting down,
    // so the late Initial below cannot race ahead of it.
    held.closed().await;
    let late = quinn_client(&id);
    let attempt = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        late.connect(addr, "localhost").unwrap(),
    )
    .await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "a connection was accepted during shutdown"
    );
    let accepted: u64 = runtime.stats().iter().map(|s| s.connections_accepted).sum();
    assert_eq!(accepted, 1);
    tokio::task::spawn_blocking(move || runtime.wait())
        .await
        .unwrap();
}

/// The runtime doubles as a client (the load generator uses it this way).
#[tokio::test]
async fn a_client_runtime_echoes_through_a_server_runtime() {
    let id = identity();
    let server = start_echo(server_config(&id, 2, Steering::Bpf));
    let target = server.local_addr();
    let tls = client_tls(&id);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let client_config = RuntimeConfig::new("127.0.0.1:0".parse().unwrap(), 2);
    let client = Runtime::<()>::start(client_config, move |ctx: ShardContext<()>| {
        let tls = tls.clone();
        let done = done_tx.clone();
        async move {
            let conn = ctx
                .connect(target, "localhost", tls)
                .await
                .expect("connect");
            assert_eq!(conn.alpn().as_deref(), Some(ALPN));
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let payload = pattern(ctx.index() as u32, 200_000);
            send.write_all(&payload).await.unwrap();
            send.finish().unwrap();
            let echoed = recv.read_to_end(usize::MAX).await.unwrap();
            done.send(echoed == payload).unwrap();
        }
    })
    .unwrap();
    let results: Vec<bool> = tokio::task::spawn_blocking(move || {
        (0..2)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(20)).unwrap())
            .collect()
    })
    .await
    .unwrap();
    assert_eq!(results, vec![true, true]);
    let initiated: u64 = client.stats().iter().map(|s| s.connections_initiated).sum();
    assert_eq!(initiated, 2);
    client.shutdown_handle().shutdown();
    server.shutdown_handle().shutdown();
    tokio::task::spawn_blocking(move || {
        client.wait();
        server.wait();
    })
    .await
    .unwrap();
}

/// A connection's traffic stays readable after it closed and after its
/// QUIC state is gone, so a sampler that counts bytes on a link misses
/// nothing of its last moments.
#[tokio::test]
async fn a_connection_reports_its_traffic_after_it_is_gone() {
    let id = identity();
    let server = start_echo(server_config(&id, 1, Steering::Bpf));
    let target = server.local_addr();
    let tls = client_tls(&id);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let client_config = RuntimeConfig::new("127.0.0.1:0".parse().unwrap(), 1);
    let client = Runtime::<()>::start(client_config, move |ctx: ShardContext<()>| {
        let (tls, done) = (tls.clone(), done_tx.clone());
        async move {
            let conn = ctx
                .connect(target, "localhost", tls)
                .await
                .expect("connect");
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(&pattern(0, 100_000)).await.unwrap();
            send.finish().unwrap();
            recv.read_to_end(usize::MAX).await.unwrap();
            conn.close(0u32.into(), b"done");
            // Until the shard drops the connection's state.
            while ctx.stats().connections_open > 0 {
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
            done.send(conn.stats()).unwrap();
        }
    })
    .unwrap();
    let stats = tokio::task::spawn_blocking(move || done_rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the client finished")
        .expect("figures after the connection is gone");
    assert!(stats.bytes_sent > 100_000, "{stats:?}");
    assert!(stats.bytes_received > 100_000, "{stats:?}");
    client.shutdown_handle().shutdown();
    server.shutdown_handle().shutdown();
    tokio::task::spawn_blocking(move || {
        client.wait();
        server.wait();
    })
    .await
    .unwrap();
}

#[test]
fn mesh_messages_reach_the_shard_they_are_addressed_to() {
    let (tx, rx) = std::sync::mpsc::channel::<(usize, u32)>();
    let config = RuntimeConfig::new("127.0.0.1:0".parse().unwrap(), 2);
    let runtime = Runtime::<u32>::start(config, move |ctx: ShardContext<u32>| {
        let tx = tx.clone();
        async move {
            // Shard 0 relays every message it gets to shard 1, doubled.
            loop {
                let m = ctx.recv().await;
                if ctx.index() == 0 {
                    ctx.send(1, m * 2).unwrap();
                } else {
                    tx.send((ctx.index(), m)).unwrap();
                }
            }
        }
    })
    .unwrap();
    for m in 1..=1000 {
        runtime.send(0, m).unwrap();
    }
    let got: Vec<(usize, u32)> = (0..1000)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    assert!(got.iter().all(|&(shard, _)| shard == 1));
    assert_eq!(
        got.iter().map(|&(_, m)| m).collect::<Vec<_>>(),
        (1..=1000).map(|m| m * 2).collect::<Vec<_>>()
    );
    runtime.shutdown_handle().shutdown();
    runtime.wait();
}

const PANIC_CHILD: &str = "QUMO_TEST_PANIC_CHILD";

/// Runs itself as a child process whose shard 1 panics; the child must exit
/// with status 70 and say which shard died.
#[test]
fn a_panicking_shard_stops_the_process_with_a_clear_log_line() {
    if std::env::var_os(PANIC_CHILD).is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .init();
        let config = RuntimeConfig::new("127.0.0.1:0".parse().unwrap(), 2);
        let runtime = Runtime::<()>::start(config, |ctx: ShardContext<()>| async move {
            if ctx.index() == 1 {
                panic!("deliberate test panic");
            }
        })
        .unwrap();
        runtime.wait();
        unreachable!("the panicking shard should have ended the process");
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_panicking_shard_stops_the_process_with_a_clear_log_line",
            "--exact",
            "--nocapture",
        ])
        .env(PANIC_CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(70), "stderr: {stderr}");
    assert!(
        stderr.contains("shard-1 panicked: deliberate test panic"),
        "stderr: {stderr}"
    );
}
