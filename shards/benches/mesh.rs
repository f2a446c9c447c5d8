//! Mesh throughput: messages per second from one shard to another, and how
//! many cross-thread wake-ups the receiver needed (fewer = better batching).
//!
//! `cargo bench -p qumo-shards --bench mesh [-- MESSAGES]`

use std::sync::mpsc;
use std::time::Instant;

use qumo_shards::{Runtime, RuntimeConfig, ShardContext};

/// Messages the sender posts between yields, so the receiver shard (on the
/// other core) drains while the sender works, as a relay's shards would.
const BURST: u64 = 256;

fn main() {
    let messages: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    for round in 0..3 {
        let (tx, rx) = mpsc::channel();
        let mut config = RuntimeConfig::new("127.0.0.1:0".parse().unwrap(), 2);
        config.pin_cores = true;
        let runtime = Runtime::<u64>::start(config, move |ctx: ShardContext<u64>| {
            let tx = tx.clone();
            async move {
                if ctx.index() == 0 {
                    // Wait for the go message, then stream to shard 1.
                    let _ = ctx.recv().await;
                    let mut sent = 0;
                    while sent < messages {
                        for _ in 0..BURST.min(messages - sent) {
                            ctx.send(1, sent).unwrap();
                            sent += 1;
                        }
                        qumo_shards::yield_now().await;
                    }
                } else {
                    let mut expected = 0u64;
                    let mut batch = Vec::new();
                    while expected < messages {
                        let first = ctx.recv().await;
                        batch.push(first);
                        ctx.drain_messages(&mut batch);
                        for m in batch.drain(..) {
                            assert_eq!(m, expected, "mesh reordered or lost a message");
                            expected += 1;
                        }
                    }
                    tx.send(Instant::now()).unwrap();
                }
            }
        })
        .unwrap();
        let start = Instant::now();
        runtime.send(0, 0).unwrap();
        let end = rx.recv().unwrap();
        let secs = (end - start).as_secs_f64();
        println!(
            "mesh round {round}: {messages} messages shard 0 -> 1 in {secs:.3} s = {:.2} M msg/s; receiver woken {} times",
            messages as f64 / secs / 1e6,
            runtime.mesh_wakeups(1),
        );
        runtime.shutdown_handle().shutdown();
        runtime.wait();
    }
}
