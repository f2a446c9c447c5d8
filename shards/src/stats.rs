//! Counters. Each shard writes its own with relaxed atomics (one writer, so
//! no contention); any thread may read a snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Whether a figure declared `name (gauge)` goes up and down.
macro_rules! is_gauge {
    () => {
        false
    };
    (gauge) => {
        true
    };
}

/// Figures of the runtime: `name` only grows; `name (gauge)` goes up and
/// down. Exporters learn both from [`ShardStatsSnapshot::visit`].
macro_rules! shard_counters {
    ($($(#[doc = $doc:literal])* $name:ident $(($kind:ident))?),* $(,)?) => {
        /// Live counters of one shard.
        #[derive(Debug, Default)]
        pub struct ShardStats {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
            /// Datagrams per send call (GSO batch size).
            pub send_batches: SendBatches,
        }

        /// A point-in-time copy of [`ShardStats`].
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct ShardStatsSnapshot { $($(#[doc = $doc])* pub $name: u64,)* }

        impl ShardStats {
            pub fn snapshot(&self) -> ShardStatsSnapshot {
                ShardStatsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl ShardStatsSnapshot {
            /// Every figure: its name, its doc text (one line, trimmed),
            /// whether it is a gauge, and its value, so that an exporter
            /// lists new figures without being taught their names or kinds.
            pub fn visit(&self, mut f: impl FnMut(&'static str, &'static str, bool, u64)) {
                $(f(
                    stringify!($name),
                    concat!($($doc, " "),*).trim(),
                    is_gauge!($($kind)?),
                    self.$name,
                );)*
            }
        }
    };
}

shard_counters! {
    /// Connections accepted from clients since start.
    connections_accepted,
    /// Connections this shard opened as a client since start.
    connections_initiated,
    /// Connections currently held (handshaking, open or draining).
    connections_open (gauge),
    /// Incoming connections refused (shutting down, or over a limit).
    connections_refused,
    /// UDP datagrams received on this shard's socket.
    datagrams_received,
    /// Bytes of those datagrams.
    bytes_received,
    /// UDP datagrams sent (GSO segments counted one by one).
    datagrams_sent,
    /// Bytes of those datagrams.
    bytes_sent,
    /// Send syscalls made (fewer than datagrams when GSO batches).
    send_calls,
    /// Datagrams that arrived here but belong to another shard's connection
    /// and were forwarded over the mesh.
    datagrams_forwarded_out,
    /// Datagrams that another shard forwarded here.
    datagrams_forwarded_in,
    /// Application mesh messages received.
    mesh_messages_received,
    /// Handshakes in progress on this shard (a gauge): accepted, not yet
    /// established, not yet drained. At most `max_handshakes_per_shard`.
    handshakes_in_progress (gauge),
    /// Retry packets sent to make a client prove its address.
    retries_sent,
    /// Initials refused because the runtime held `max_connections`.
    refused_connection_limit,
    /// Initials dropped because this shard held `max_handshakes_per_shard`
    /// handshakes in progress.
    ignored_handshake_limit,
    /// Initials refused because their source held
    /// `max_connections_per_source`.
    refused_source_connection_limit,
    /// Initials dropped because their source had used its handshake burst.
    ignored_source_rate,
    /// Initials dropped because the source table was full of sources that
    /// hold connections.
    ignored_source_table_full,
    /// Connections closed for not finishing their handshake within
    /// `handshake_timeout`.
    handshakes_timed_out,
    /// Handshakes that ended without a connection: bad TLS, wrong ALPN,
    /// the peer gone, or timed out (those are also in
    /// `handshakes_timed_out`).
    handshakes_failed,
    /// Entries in the shard's timer heap (a gauge): one live per
    /// connection with a deadline, plus dead ones, compacted whenever they
    /// pass one per connection plus 64.
    timers_queued (gauge),
}

/// Upper bounds of the GSO batch histogram's buckets: datagrams per send
/// call. quinn batches at most 40 (see `socket::MAX_GSO_SEGMENTS`).
pub const SEND_BATCH_BOUNDS: [u64; 6] = [1, 2, 4, 8, 16, 32];

/// Send calls by how many datagrams each carried (one GSO batch), in
/// buckets up to [`SEND_BATCH_BOUNDS`] and one above: a histogram whose
/// sum is `datagrams_sent` and whose count is `send_calls`.
#[derive(Debug, Default)]
pub struct SendBatches([AtomicU64; SEND_BATCH_BOUNDS.len() + 1]);

impl SendBatches {
    /// Count one send call of `segments` datagrams (single writer).
    pub(crate) fn record(&self, segments: u64) {
        ShardStats::add(&self.0[send_batch_bucket(segments)], 1);
    }

    /// Calls per bucket (not cumulative), the last bucket unbounded.
    pub fn buckets(&self) -> [u64; SEND_BATCH_BOUNDS.len() + 1] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

/// The bucket of a send of `segments` datagrams: the first bound at or
/// above it (powers of two: the bit length of `segments - 1`).
fn send_batch_bucket(segments: u64) -> usize {
    let bits = (u64::BITS - segments.saturating_sub(1).leading_zeros()) as usize;
    bits.min(SEND_BATCH_BOUNDS.len())
}

impl ShardStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        // One writer per counter: a load and a store are enough, and cheaper
        // than a locked read-modify-write.
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    pub(crate) fn set(gauge: &AtomicU64, n: u64) {
        gauge.store(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).saturating_sub(n),
            Ordering::Relaxed,
        );
    }
}

/// Per-connection figures from the QUIC stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Congestion window in bytes.
    pub cwnd: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// Packets sent.
    pub sent_packets: u64,
    /// UDP datagrams and bytes sent and received on this connection.
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub datagrams_received: u64,
    pub bytes_received: u64,
    /// Current path MTU.
    pub mtu: u16,
}

impl From<quinn_proto::ConnectionStats> for ConnectionStats {
    fn from(s: quinn_proto::ConnectionStats) -> Self {
        Self {
            rtt: s.path.rtt,
            cwnd: s.path.cwnd,
            lost_packets: s.path.lost_packets,
            sent_packets: s.path.sent_packets,
            datagrams_sent: s.udp_tx.datagrams,
            bytes_sent: s.udp_tx.bytes,
            datagrams_received: s.udp_rx.datagrams,
            bytes_received: s.udp_rx.bytes,
            mtu: s.path.current_mtu,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visit_names_the_gauges_declared_as_such() {
        let mut gauges = Vec::new();
        let mut all = 0;
        ShardStatsSnapshot::default().visit(|name, help, gauge, _| {
            all += 1;
            assert!(!help.is_empty(), "{name} has no help text");
            if gauge {
                gauges.push(name);
            }
        });
        assert_eq!(
            gauges,
            [
                "connections_open",
                "handshakes_in_progress",
                "timers_queued"
            ]
        );
        assert!(all > gauges.len());
    }

    #[test]
    fn a_send_lands_in_the_first_bucket_whose_bound_holds_it() {
        let batches = SendBatches::default();
        for segments in [1, 2, 3, 4, 5, 32, 33, 40] {
            batches.record(segments);
        }
        // Buckets: <=1, <=2, <=4, <=8, <=16, <=32, above.
        assert_eq!(batches.buckets(), [1, 1, 2, 1, 0, 1, 2]);
        for (i, bound) in SEND_BATCH_BOUNDS.into_iter().enumerate() {
            assert_eq!(send_batch_bucket(bound), i, "{bound}");
            assert_eq!(send_batch_bucket(bound + 1), i + 1, "{bound} + 1");
        }
        assert_eq!(send_batch_bucket(0), 0);
    }
}
