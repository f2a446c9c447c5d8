//! `Connection::estimate_changed`: a sampler of the congestion figures is
//! woken by the next packet from the peer, and only then.

mod common;

use common::*;
use qumo_shards::{Connection, Runtime, ShardContext, Steering};

/// On each stream: the epoch at once, then the epoch the wake-up saw
/// (the next packet from the peer: an ACK, or the bytes it sends next).
async fn epoch_shard(ctx: ShardContext<()>) {
    while let Some(conn) = ctx.accept().await {
        monoio::spawn(epochs(conn));
    }
}

async fn epochs(conn: Connection) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let conn = conn.clone();
        monoio::spawn(async move {
            if !matches!(recv.read_chunk(usize::MAX).await, Ok(Some(_))) {
                return;
            }
            let before = conn.estimate_epoch();
            let _ = send
                .write_chunk(bytes::Bytes::copy_from_slice(&before.to_be_bytes()))
                .await;
            conn.estimate_changed(before).await;
            let after = conn.estimate_epoch();
            let _ = send
                .write_chunk(bytes::Bytes::copy_from_slice(&after.to_be_bytes()))
                .await;
            let _ = send.finish();
            // Read to the peer's FIN: its later bytes are not refused.
            while let Ok(Some(_)) = recv.read_chunk(usize::MAX).await {}
        });
    }
}

#[tokio::test]
async fn the_next_packet_from_the_peer_wakes_an_estimate_sampler() {
    let id = identity();
    let runtime: Runtime<()> =
        Runtime::start(server_config(&id, 1, Steering::Bpf), epoch_shard).expect("runtime starts");
    let client = quinn_client(&id);
    let conn = connect(&client, runtime.local_addr()).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"first").await.unwrap();
    let mut before = [0u8; 8];
    recv.read_exact(&mut before).await.unwrap();
    // More from us: a packet the server handles, which must wake it (if
    // our ACK of its answer has not already).
    send.write_all(b"second").await.unwrap();
    send.finish().unwrap();
    let mut after = [0u8; 8];
    let woke = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        recv.read_exact(&mut after),
    );
    woke.await.expect("woken within 30 s").unwrap();
    assert!(u64::from_be_bytes(after) > u64::from_be_bytes(before));
}
