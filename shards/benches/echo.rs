//! Echo throughput over loopback: a 1-shard client runtime sends through a
//! 1-shard server runtime that echoes every stream back, with 1 and with 64
//! connections, GSO on and off. Reports goodput (bytes echoed back per second)
//! and how many datagrams each send call carried.
//!
//! `cargo bench -p qumo-shards --bench echo [-- MIB_TOTAL]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use bytes::Bytes;
use common::*;
use qumo_shards::{Runtime, RuntimeConfig, ShardContext, Steering};

async fn echo_one(
    ctx: ShardContext<()>,
    target: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    bytes: usize,
) -> usize {
    let conn = ctx
        .connect(target, "localhost", tls)
        .await
        .expect("connect");
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let chunk = Bytes::from(pattern(1, 64 * 1024));
    let writer = monoio::spawn(async move {
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            send.write_chunk(chunk.slice(..n)).await.unwrap();
            left -= n;
        }
        send.finish().unwrap();
    });
    let mut got = 0;
    while let Some(c) = recv.read_chunk(usize::MAX).await.unwrap() {
        got += c.len();
    }
    writer.await;
    conn.close(0u32.into(), b"done");
    got
}

fn run(connections: usize, gso: bool, total: usize) {
    let id = identity();
    let mut server_cfg = server_config(&id, 1, Steering::Bpf);
    server_cfg.gso = gso;
    server_cfg.pin_cores = true;
    let server = start_echo(server_cfg);
    let target = server.local_addr();
    let tls = client_tls(&id);
    let (tx, rx) = mpsc::channel();
    let mut client_cfg = RuntimeConfig::new("127.0.0.1:0".parse().unwrap(), 1);
    client_cfg.gso = gso;
    let per_conn = total / connections;
    let client = Runtime::<()>::start(client_cfg, move |ctx: ShardContext<()>| {
        let tls = tls.clone();
        let tx = tx.clone();
        async move {
            let start = Instant::now();
            let tasks: Vec<_> = (0..connections)
                .map(|_| monoio::spawn(echo_one(ctx.clone(), target, tls.clone(), per_conn)))
                .collect();
            let mut echoed = 0;
            for t in tasks {
                echoed += t.await;
            }
            tx.send((echoed, start.elapsed())).unwrap();
        }
    })
    .unwrap();
    let (echoed, elapsed) = rx.recv().unwrap();
    assert_eq!(echoed, per_conn * connections, "echo lost data");
    let s = server.stats()[0];
    println!(
        "echo conns={connections:>2} gso={:<3}: {:>7.1} Mbit/s echoed ({} MiB each way in {:.2} s); server sent {:.1} datagrams per send call",
        if gso { "on" } else { "off" },
        echoed as f64 * 8.0 / elapsed.as_secs_f64() / 1e6,
        echoed >> 20,
        elapsed.as_secs_f64(),
        s.datagrams_sent as f64 / s.send_calls.max(1) as f64,
    );
    client.shutdown_handle().shutdown();
    server.shutdown_handle().shutdown();
    client.wait();
    server.wait();
}

fn main() {
    let mib: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(256);
    for connections in [1, 64] {
        for gso in [true, false] {
            run(connections, gso, mib << 20);
        }
    }
}
