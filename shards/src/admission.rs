//! Admission control: whether a new connection's first Initial may start a
//! handshake, decided before any TLS work.
//!
//! Two kinds of limit:
//! - per shard, lock-free (the shard's own count of handshakes in progress):
//!   Retry above a threshold, and a hard cap;
//! - process-wide, shared by every shard: a connection cap, and per source
//!   (IPv4 address or IPv6 /64) a connection cap and a token bucket of new
//!   handshakes. Initials from one address spread over shards by the
//!   kernel's 4-tuple hash, so per-source limits must be shared to mean
//!   anything. The shared state is touched once per new connection (and once
//!   when it ends), never per packet; striped locks keep shards apart.
//!
//! Persistent limits (connection caps) refuse with CONNECTION_REFUSED so a
//! real client stops and reports it; transient ones (handshakes in progress,
//! rate) drop the Initial unanswered: the client retransmits it after its
//! own, growing, timeout, and nothing is sent to a possibly spoofed address.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::config::{AdmissionLimits, RetryPolicy};

/// Where connections come from, for per-source limits: an IPv4 address, or
/// the /64 of an IPv6 address (one host usually holds a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SourceKey(IpAddr);

impl SourceKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => SourceKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                SourceKey(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        }
    }
}

/// What to do with a new connection's first Initial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Start the handshake; the slots are reserved, and must be given back
    /// with [`Admission::release`] when the connection ends (or fails to
    /// start).
    Accept(SourceKey),
    /// Ask the client to prove its address first.
    Retry,
    /// Answer CONNECTION_REFUSED.
    Refuse(Refusal),
    /// Drop the Initial unanswered.
    Ignore(Refusal),
}

/// Which limit turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The runtime holds `max_connections`.
    ConnectionLimit,
    /// The shard holds `max_handshakes_per_shard` handshakes in progress.
    HandshakeLimit,
    /// The source holds `max_connections_per_source`.
    SourceConnectionLimit,
    /// The source has used its burst of new handshakes.
    SourceRate,
    /// The source table is full of sources that hold connections.
    SourceTableFull,
}

/// Limits shared by every shard of a runtime.
pub(crate) struct Admission {
    limits: AdmissionLimits,
    connections: AtomicUsize,
    sources: SourceTable,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Self {
        let sources = SourceTable::new(
            limits.max_tracked_sources,
            f64::from(limits.handshakes_per_source_per_second),
            f64::from(limits.handshake_burst_per_source),
        );
        Self {
            limits,
            connections: AtomicUsize::new(0),
            sources,
        }
    }

    pub fn limits(&self) -> &AdmissionLimits {
        &self.limits
    }

    /// Decide on a new connection from `remote` whose address is or is not
    /// validated (by a Retry token), on a shard with `handshakes` in progress.
    pub fn admit(
        &self,
        remote: IpAddr,
        validated: bool,
        handshakes: usize,
        now: Instant,
    ) -> Verdict {
        let l = &self.limits;
        if self.connections.load(Ordering::Relaxed) >= l.max_connections {
            return Verdict::Refuse(Refusal::ConnectionLimit);
        }
        let retry = match l.retry {
            RetryPolicy::Never => false,
            // Never later than the cap: a Retry holds nothing, a dropped
            // Initial costs the client a retransmission timeout.
            RetryPolicy::Auto => {
                handshakes >= l.retry_above_handshakes.min(l.max_handshakes_per_shard)
            }
            RetryPolicy::Always => true,
        };
        if retry && !validated {
            return Verdict::Retry;
        }
        if handshakes >= l.max_handshakes_per_shard {
            return Verdict::Ignore(Refusal::HandshakeLimit);
        }
        let key = SourceKey::of(remote);
        if let Err(refusal) = self.sources.admit(key, l.max_connections_per_source, now) {
            return match refusal {
                Refusal::SourceConnectionLimit => Verdict::Refuse(refusal),
                _ => Verdict::Ignore(refusal),
            };
        }
        // Reserve a slot; undo if another shard took the last one meanwhile.
        if self.connections.fetch_add(1, Ordering::Relaxed) >= l.max_connections {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            self.sources.release(key);
            return Verdict::Refuse(Refusal::ConnectionLimit);
        }
        Verdict::Accept(key)
    }

    /// A connection admitted from `source` has ended.
    pub fn release(&self, source: SourceKey) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        self.sources.release(source);
    }

    /// Connections admitted and not yet released, whole runtime.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Sources remembered now.
    #[cfg(test)]
    fn tracked_sources(&self) -> usize {
        self.sources.len()
    }
}

/// Lock stripes of the source table: enough that shards rarely meet on one.
const STRIPES: usize = 16;

/// One source's standing.
#[derive(Debug)]
struct Source {
    connections: usize,
    /// Handshakes it may start now (a token bucket).
    tokens: f64,
    refilled: Instant,
}

/// Per-source state, bounded by `capacity` entries in all.
struct SourceTable {
    stripes: Vec<Mutex<HashMap<SourceKey, Source>>>,
    hasher: RandomState,
    per_stripe: usize,
    rate: f64,
    burst: f64,
}

impl SourceTable {
    fn new(capacity: usize, rate: f64, burst: f64) -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            per_stripe: capacity.div_ceil(STRIPES).max(1),
            rate,
            burst,
        }
    }

    fn stripe(&self, key: SourceKey) -> std::sync::MutexGuard<'_, HashMap<SourceKey, Source>> {
        let index = self.hasher.hash_one(key) as usize % STRIPES;
        // A panic while holding the lock cannot leave a half-updated entry
        // worse than a stale count; keep serving.
        self.stripes[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Take one handshake token and one connection slot for `key`.
    fn admit(&self, key: SourceKey, max_connections: usize, now: Instant) -> Result<(), Refusal> {
        let mut stripe = self.stripe(key);
        if !stripe.contains_key(&key) && stripe.len() >= self.per_stripe {
            // Forget sources that hold nothing. Entries that hold a
            // connection are at most the connections open, so after a sweep
            // the table has room unless connections fill it; the sweep's
            // cost is paid back by the room it makes.
            stripe.retain(|_, s| s.connections > 0);
            if stripe.len() >= self.per_stripe {
                return Err(Refusal::SourceTableFull);
            }
        }
        let source = stripe.entry(key).or_insert(Source {
            connections: 0,
            tokens: self.burst,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(source.refilled).as_secs_f64();
        source.tokens = (source.tokens + elapsed * self.rate).min(self.burst);
        source.refilled = now;
        if source.connections >= max_connections {
            return Err(Refusal::SourceConnectionLimit);
        }
        if source.tokens < 1.0 {
            return Err(Refusal::SourceRate);
        }
        source.tokens -= 1.0;
        source.connections += 1;
        Ok(())
    }

    fn release(&self, key: SourceKey) {
        if let Some(source) = self.stripe(key).get_mut(&key) {
            source.connections = source.connections.saturating_sub(1);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.len()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            retry: RetryPolicy::Never,
            ..AdmissionLimits::default()
        }
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn ipv6_sources_are_their_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(SourceKey::of(a), SourceKey::of(b));
        assert_ne!(SourceKey::of(a), SourceKey::of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(SourceKey::of(mapped), SourceKey::of(ip(1)));
    }

    #[test]
    fn retry_policy_applies_only_to_unvalidated_addresses() {
        let now = Instant::now();
        let auto = Admission::new(AdmissionLimits {
            retry: RetryPolicy::Auto,
            retry_above_handshakes: 2,
            ..AdmissionLimits::default()
        });
        assert!(matches!(
            auto.admit(ip(1), false, 1, now),
            Verdict::Accept(_)
        ));
        assert_eq!(auto.admit(ip(1), false, 2, now), Verdict::Retry);
        assert!(matches!(
            auto.admit(ip(1), true, 2, now),
            Verdict::Accept(_)
        ));
        let always = Admission::new(AdmissionLimits {
            retry: RetryPolicy::Always,
            ..AdmissionLimits::default()
        });
        assert_eq!(always.admit(ip(1), false, 0, now), Verdict::Retry);
        let never = Admission::new(limits());
        assert!(matches!(
            never.admit(ip(1), false, 10_000, now),
            Verdict::Ignore(Refusal::HandshakeLimit)
        ));
    }

    #[test]
    fn connection_caps_refuse_and_release_gives_room_back() {
        let now = Instant::now();
        let a = Admission::new(AdmissionLimits {
            max_connections: 3,
            max_connections_per_source: 2,
            ..limits()
        });
        let Verdict::Accept(first) = a.admit(ip(1), false, 0, now) else {
            panic!()
        };
        assert!(matches!(a.admit(ip(1), false, 0, now), Verdict::Accept(_)));
        assert_eq!(
            a.admit(ip(1), false, 0, now),
            Verdict::Refuse(Refusal::SourceConnectionLimit)
        );
        assert!(matches!(a.admit(ip(2), false, 0, now), Verdict::Accept(_)));
        assert_eq!(
            a.admit(ip(3), false, 0, now),
            Verdict::Refuse(Refusal::ConnectionLimit)
        );
        assert_eq!(a.connections(), 3);
        a.release(first);
        assert!(matches!(a.admit(ip(1), false, 0, now), Verdict::Accept(_)));
    }

    #[test]
    fn the_rate_is_a_token_bucket_per_source() {
        let start = Instant::now();
        let a = Admission::new(AdmissionLimits {
            handshakes_per_source_per_second: 10,
            handshake_burst_per_source: 3,
            ..limits()
        });
        for _ in 0..3 {
            let Verdict::Accept(key) = a.admit(ip(1), false, 0, start) else {
                panic!()
            };
            a.release(key);
        }
        assert_eq!(
            a.admit(ip(1), false, 0, start),
            Verdict::Ignore(Refusal::SourceRate)
        );
        // Another source has its own bucket.
        assert!(matches!(
            a.admit(ip(2), false, 0, start),
            Verdict::Accept(_)
        ));
        // 10 per second: one token back after 100 ms, not two.
        let later = start + Duration::from_millis(150);
        assert!(matches!(
            a.admit(ip(1), false, 0, later),
            Verdict::Accept(_)
        ));
        assert_eq!(
            a.admit(ip(1), false, 0, later),
            Verdict::Ignore(Refusal::SourceRate)
        );
    }

    #[test]
    fn the_source_table_stays_bounded_under_many_addresses() {
        let now = Instant::now();
        let a = Admission::new(AdmissionLimits {
            max_tracked_sources: 64,
            ..limits()
        });
        // Sources that come and go are forgotten to make room.
        for n in 0..10_000 {
            match a.admit(ip(n), false, 0, now) {
                Verdict::Accept(key) => a.release(key),
                other => panic!("source {n}: {other:?}"),
            }
            assert!(a.tracked_sources() <= 64);
        }
        // Sources that hold connections are kept; once they fill the table,
        // new sources wait.
        let mut held = 0;
        let mut full = 0;
        for n in 10_000..10_200 {
            match a.admit(ip(n), false, 0, now) {
                Verdict::Accept(_) => held += 1,
                Verdict::Ignore(Refusal::SourceTableFull) => full += 1,
                other => panic!("source {n}: {other:?}"),
            }
        }
        // Each stripe holds 64 / 16 sources; which stripe a source lands in
        // is random, so only the bound is certain.
        assert!(held <= 64, "{held}");
        assert_eq!(held + full, 200);
        assert!(a.tracked_sources() <= 64);
    }
}
