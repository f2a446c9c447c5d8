//! A client whose address changes (NAT rebinding) keeps its connection: its
//! packets reach the shard that owns the connection, by BPF steering or by
//! forwarding over the mesh, and are never answered by another shard.

mod common;

use common::*;
use qumo_shards::{Runtime, Steering};

fn forwarded(runtime: &Runtime<()>) -> u64 {
    runtime
        .stats()
        .iter()
        .map(|s| s.datagrams_forwarded_out)
        .sum()
}

fn rebind(client: &quinn::Endpoint) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.rebind(socket).expect("rebind");
}

#[tokio::test]
async fn a_rebinding_client_is_steered_to_its_shard_by_bpf() {
    let id = identity();
    let runtime = start_echo(server_config(&id, 2, Steering::Bpf));
    assert_eq!(
        runtime.steering(),
        Steering::Bpf,
        "the kernel refused the steering program"
    );
    let client = quinn_client(&id);
    let conn = connect(&client, runtime.local_addr()).await;
    for round in 0..16u32 {
        rebind(&client);
        let payload = pattern(round, 30_000);
        assert!(echo_once(&conn, &payload).await == payload, "round {round}");
    }
    // Sixteen new source ports: by hash, about half would land on the wrong
    // shard. None did, so the kernel steered every one by connection id.
    assert_eq!(forwarded(&runtime), 0);
    let received: Vec<u64> = runtime
        .stats()
        .iter()
        .map(|s| s.datagrams_received)
        .collect();
    assert!(
        received.iter().filter(|&&n| n > 0).count() == 1,
        "{received:?}"
    );
}

#[tokio::test]
async fn a_rebinding_client_is_forwarded_to_its_shard_without_bpf() {
    let id = identity();
    let runtime = start_echo(server_config(&id, 2, Steering::ForwardOnly));
    let client = quinn_client(&id);
    let conn = connect(&client, runtime.local_addr()).await;
    let mut round = 0u32;
    // Rebind until the kernel's hash puts the client on the other shard, then
    // prove the connection still carries data intact.
    while forwarded(&runtime) == 0 {
        assert!(round < 64, "64 rebinds never hashed to the other shard");
        rebind(&client);
        let payload = pattern(round, 30_000);
        assert!(echo_once(&conn, &payload).await == payload, "round {round}");
        round += 1;
    }
    let payload = pattern(999, 100_000);
    assert!(echo_once(&conn, &payload).await == payload);
    assert!(conn.close_reason().is_none());
}
