//! Counters kept on each client shard and the reports it sends the main
//! thread.

use serde::Serialize;

use crate::histogram::Histogram;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Cumulative counts of one shard, or of all of them added up.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
        pub struct Counters {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            pub fn add(&mut self, other: &Counters) {
                $(self.$name += other.$name;)*
            }
        }
    };
}

counters! {
    /// Publisher connections started.
    pub_attempted,
    /// Publisher connections that completed their handshake.
    pub_connected,
    /// Publisher connections that failed, or ended before the run did.
    pub_failed,
    /// Subscriber connections started.
    sub_attempted,
    /// Subscriber connections that completed their handshake.
    sub_connected,
    /// Subscriber connections whose handshake failed.
    sub_failed,
    /// Subscriber connections the relay or the network closed before the end.
    sub_dropped,
    /// Frames, payload bytes and groups the publishers wrote.
    frames_sent,
    bytes_sent,
    groups_sent,
    /// SUBSCRIBE streams the relay opened to the publishers.
    upstream_subscriptions,
    /// SUBSCRIBEs sent, and those refused or ended before any group (retried).
    subscribe_attempts,
    subscribe_retries,
    /// Subscriptions that received at least one group.
    subscriptions_started,
    /// Subscriptions the relay ended while the run went on.
    subscriptions_ended,
    /// Frames and payload bytes received, over the whole run.
    frames_received,
    bytes_received,
    /// Frames and payload bytes received in the measured window.
    steady_frames,
    steady_bytes,
    /// Group streams that started, ended whole, were reset, or ended short.
    groups_started,
    groups_complete,
    groups_reset,
    groups_incomplete,
    /// Groups never delivered (gaps, resets, short ends), less late arrivals.
    lost_groups,
    /// Groups delivered after their loss was counted.
    late_groups,
    /// Groups between a SUBSCRIBE_START and the first group delivered:
    /// skipped when joining, not lost.
    groups_skipped_at_start,
    /// Group streams for a subscription id the subscriber did not know.
    unknown_groups,
    /// Frames whose payload held no send stamp.
    unstamped_frames,
}

impl Counters {
    /// Apply a change to the lost count (late groups take one back).
    pub fn add_lost(&mut self, delta: i64) {
        self.lost_groups = (self.lost_groups as i64 + delta).max(0) as u64;
    }

    /// Connections that failed: handshakes that did not complete, and
    /// connections that ended before the run did.
    pub fn failed_connections(&self) -> u64 {
        self.pub_failed + self.sub_failed + self.sub_dropped
    }

    /// At the end of a run, count handshakes still pending as failed.
    pub fn fail_pending_handshakes(&mut self) {
        let pending = |attempted: u64, connected: u64, failed: u64| {
            attempted.saturating_sub(connected + failed)
        };
        self.pub_failed += pending(self.pub_attempted, self.pub_connected, self.pub_failed);
        self.sub_failed += pending(self.sub_attempted, self.sub_connected, self.sub_failed);
    }
}

/// What a shard tells the main thread, once a second and at the end.
#[derive(Debug, Clone)]
pub struct Report {
    pub shard: usize,
    /// Cumulative.
    pub counters: Counters,
    /// Latencies since the previous report.
    pub interval: Histogram,
    /// Only in the last report.
    pub fin: Option<Final>,
}

#[derive(Debug, Clone)]
pub struct Final {
    /// Latencies in the measured window.
    pub steady: Histogram,
    /// Subscriber connections still open with every track delivering.
    pub held: u64,
    /// Subscriber connections still open.
    pub alive: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_counters_adds_every_field() {
        let mut a = Counters {
            frames_received: 2,
            lost_groups: 1,
            ..Counters::default()
        };
        let b = Counters {
            frames_received: 3,
            sub_failed: 4,
            ..Counters::default()
        };
        a.add(&b);
        assert_eq!((a.frames_received, a.sub_failed, a.lost_groups), (5, 4, 1));
    }

    #[test]
    fn the_lost_count_never_goes_below_zero() {
        let mut c = Counters::default();
        c.add_lost(2);
        c.add_lost(-1);
        assert_eq!(c.lost_groups, 1);
        c.add_lost(-5);
        assert_eq!(c.lost_groups, 0);
    }

    #[test]
    fn handshakes_still_pending_at_the_end_count_as_failed() {
        let mut c = Counters {
            sub_attempted: 10,
            sub_connected: 7,
            sub_failed: 1,
            pub_attempted: 1,
            ..Counters::default()
        };
        c.fail_pending_handshakes();
        assert_eq!((c.sub_failed, c.pub_failed), (3, 1));
        c.fail_pending_handshakes();
        assert_eq!((c.sub_failed, c.pub_failed), (3, 1));
    }

    #[test]
    fn failed_connections_count_both_sides_and_drops() {
        let c = Counters {
            pub_failed: 1,
            sub_failed: 2,
            sub_dropped: 3,
            ..Counters::default()
        };
        assert_eq!(c.failed_connections(), 6);
    }
}
