//! A peer's stream limit starts small and grows, up to its ceiling, as the
//! peer uses it: a connection pays for the stream slots its peer uses.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use qumo_shards::quinn_proto::Dir;
use qumo_shards::{Connection, Runtime, ShardContext, Steering};

const INITIAL: u32 = 4;
const CEILING: u32 = 40;

/// Echoes every bidirectional stream; after each accept, records the
/// connection's bidirectional limit (the largest seen).
fn start_recording(id: &Identity, limit_seen: Arc<AtomicU64>) -> Runtime<()> {
    let mut config = server_config(id, 1, Steering::ForwardOnly);
    config.quic.initial_concurrent_streams = INITIAL;
    config.quic.max_concurrent_bidi_streams = CEILING;
    Runtime::start(config, move |ctx: ShardContext<()>| {
        let limit_seen = limit_seen.clone();
        async move {
            while let Some(conn) = ctx.accept().await {
                monoio::spawn(echo_recording(conn, limit_seen.clone()));
            }
        }
    })
    .expect("runtime starts")
}

async fn echo_recording(conn: Connection, limit_seen: Arc<AtomicU64>) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        if let Some(limit) = conn.max_concurrent_streams(Dir::Bi) {
            limit_seen.fetch_max(limit, Ordering::Relaxed);
        }
        monoio::spawn(async move {
            while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX).await {
                if send.write_chunk(chunk).await.is_err() {
                    return;
                }
            }
            let _ = send.finish();
        });
    }
}

/// Open `count` bidirectional streams and keep them all open, each echoed
/// once; returns them so they stay open until the caller drops them.
async fn hold_open(
    conn: &quinn::Connection,
    count: u8,
) -> Vec<(quinn::SendStream, quinn::RecvStream)> {
    let mut held = Vec::new();
    for i in 0..count {
        let step = async {
            let (mut send, mut recv) = conn.open_bi().await.expect("stream opens");
            send.write_all(&[i]).await.expect("write");
            let mut byte = [0u8; 1];
            recv.read_exact(&mut byte).await.expect("echo read");
            assert_eq!(byte, [i], "stream {i} echoed something else");
            (send, recv)
        };
        // A bound for a hang (the limit never grew), not a speed target.
        held.push(
            tokio::time::timeout(Duration::from_secs(30), step)
                .await
                .unwrap_or_else(|_| panic!("stream {i} of {count} never opened or echoed")),
        );
    }
    held
}

#[tokio::test]
async fn a_peer_that_opens_few_streams_keeps_the_initial_limit() {
    let limit_seen = Arc::new(AtomicU64::new(0));
    let id = identity();
    let runtime = start_recording(&id, limit_seen.clone());
    let conn = connect(&quinn_client(&id), runtime.local_addr()).await;
    let held = hold_open(&conn, 2).await;
    assert_eq!(held.len(), 2);
    assert_eq!(limit_seen.load(Ordering::Relaxed), u64::from(INITIAL));
}

#[tokio::test]
async fn a_peer_that_holds_many_streams_open_earns_up_to_the_ceiling() {
    let limit_seen = Arc::new(AtomicU64::new(0));
    let id = identity();
    let runtime = start_recording(&id, limit_seen.clone());
    let conn = connect(&quinn_client(&id), runtime.local_addr()).await;
    // Far more than the initial limit, all open at once: each opens only
    // once the limit has grown past the ones before it.
    let held = hold_open(&conn, 30).await;
    assert_eq!(held.len(), 30);
    // Doubling from 4 would pass 40 (4, 8, 16, 32, 64): it stops there.
    assert_eq!(limit_seen.load(Ordering::Relaxed), u64::from(CEILING));
}
