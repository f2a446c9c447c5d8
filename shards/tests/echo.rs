//! A real QUIC client (quinn) against a 2-shard runtime.

mod common;

use common::*;
use qumo_shards::Steering;

#[tokio::test]
async fn a_hundred_concurrent_streams_echo_intact_through_two_shards() {
    let id = identity();
    let runtime = start_echo(server_config(&id, 2, Steering::Bpf));
    let client = quinn_client(&id);
    let conn = connect(&client, runtime.local_addr()).await;

    let mut tasks = Vec::new();
    for seed in 0..100u32 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let payload = pattern(seed, 1_000 + seed as usize * 997);
            let echoed = echo_once(&conn, &payload).await;
            assert!(echoed == payload, "stream {seed} came back altered");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let total: u64 = runtime.stats().iter().map(|s| s.connections_accepted).sum();
    assert_eq!(total, 1);
}

#[tokio::test]
async fn datagrams_echo_through_the_runtime() {
    let id = identity();
    let runtime = start_echo(server_config(&id, 2, Steering::Bpf));
    let client = quinn_client(&id);
    let conn = connect(&client, runtime.local_addr()).await;
    // Datagrams may be lost; send until one comes back, bounded.
    let payload = bytes::Bytes::from(pattern(7, 900));
    let mut echoed = None;
    for _ in 0..50 {
        conn.send_datagram(payload.clone()).unwrap();
        if let Ok(Ok(d)) =
            tokio::time::timeout(std::time::Duration::from_millis(100), conn.read_datagram()).await
        {
            echoed = Some(d);
            break;
        }
    }
    assert_eq!(echoed, Some(payload));
}

#[tokio::test]
async fn sixty_four_clients_on_their_own_ports_all_work_and_use_both_shards() {
    let id = identity();
    let runtime = start_echo(server_config(&id, 2, Steering::Bpf));
    let server = runtime.local_addr();
    let mut tasks = Vec::new();
    for seed in 0..64u32 {
        let client = quinn_client(&id);
        tasks.push(tokio::spawn(async move {
            let conn = connect(&client, server).await;
            let payload = pattern(seed, 20_000);
            assert!(echo_once(&conn, &payload).await == payload);
            conn.close(0u32.into(), b"done");
            client.wait_idle().await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let stats = runtime.stats();
    let accepted: Vec<u64> = stats.iter().map(|s| s.connections_accepted).collect();
    assert_eq!(accepted.iter().sum::<u64>(), 64, "{accepted:?}");
    assert!(
        accepted.iter().all(|&n| n > 0),
        "a shard took no connection: {accepted:?}"
    );
}
