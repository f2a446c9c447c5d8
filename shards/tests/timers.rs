//! The shard's timer heap stays bounded while a connection's deadlines churn.

mod common;

use std::time::{Duration, Instant};

use common::*;
use qumo_shards::Steering;

/// A connection that is sent something every few milliseconds arms its loss
/// timer, has it disarmed by the peer's ACK, and moves its keep-alive
/// deadline: every cycle leaves a dead heap entry behind (about one per
/// 30 ms here). The heap must be compacted to one live entry per connection
/// plus `TIMER_SLACK` (64): 66 for one connection, whatever the run's pace.
#[tokio::test]
async fn dead_timer_entries_are_compacted_while_a_connection_churns() {
    const BOUND: u64 = 2 + 64;
    let id = identity();
    let runtime = start_echo(server_config(&id, 1, Steering::Bpf));
    let client = quinn_client(&id);
    let conn = connect(&client, runtime.local_addr()).await;

    let started = Instant::now();
    let mut echoes = 0u32;
    let mut highest = 0;
    while started.elapsed() < Duration::from_secs(4) {
        let payload = pattern(echoes, 64);
        assert_eq!(echo_once(&conn, &payload).await, payload);
        echoes += 1;
        let queued = runtime.stats()[0].timers_queued;
        highest = highest.max(queued);
        assert!(
            queued <= BOUND,
            "timer heap held {queued} entries for one connection after {echoes} echoes"
        );
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    // The connection had a live deadline throughout (idle, keep-alive).
    assert!(highest >= 1, "the gauge never saw the connection's timer");
}
