//! The peer's PROBE stream: reports of the bandwidth and round trip the
//! connection's congestion controller has measured, so that a player can
//! pick a rendition (moq-net 0.3.18 `ProbeServe`).
//!
//! The estimate is sampled at most every [`PROBE_INTERVAL`], and then only
//! once the connection has handled a packet or timer since the last sample
//! (`Transport::estimate_changed`: nothing else moves quinn-proto's figures)
//! or the figures last seen fall due; a report is sent when it moved enough
//! to matter ([`Cadence`], moq-net's rule): at once for the
//! first, for a 25% change in RTT, or for a bitrate change whose threshold
//! decays from 25% to nothing as the last report ages towards
//! [`PROBE_MAX_AGE`]. A transport with no figures reports nothing (and its
//! SETUP offers no probing). One PROBE stream per session is answered at a
//! time; another is reset NO_CAPACITY.

use std::future::pending;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::debug;

use super::reader::StreamReader;
use super::state::Session;
use super::transport::{Estimate, SendStream, Transport};
use crate::lite::{Probe, StreamCode};
use crate::task::race;

/// How often the estimate is sampled, and the shortest age from which the
/// bitrate threshold decays.
pub(super) const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// A report is repeated at least this often while the figures are known.
const PROBE_MAX_AGE: Duration = Duration::from_secs(10);
/// A bitrate change this large (relative) is reported at once.
const PROBE_MAX_DELTA: f64 = 0.25;
/// An RTT change this large (relative) is reported at once.
const PROBE_RTT_DELTA: f64 = 0.25;

pub(super) async fn probe<T: Transport>(
    session: Rc<Session<T>>,
    mut send: T::Send,
    mut reader: StreamReader<T::Recv>,
) {
    let stats = &session.shard.stats;
    if session.probing.get() {
        debug!(session = session.id.id, "second probe stream refused");
        stats.probes_refused.inc();
        session.reset(&mut send, StreamCode::NO_CAPACITY);
        return session.stop(&mut reader, StreamCode::NO_CAPACITY);
    }
    session.probing.set(true);
    stats.probes_open.inc();
    let reports = async {
        let transport = &session.transport;
        let mut cadence = Cadence::default();
        loop {
            let epoch = transport.estimate_epoch();
            let report = report_of(transport.estimate());
            let now = Instant::now();
            if cadence.take(report, now)
                && send.write_chunk(session.encode(&[&report])).await.is_err()
            {
                // The peer stopped the stream; nothing more to say.
                return pending::<()>().await;
            }
            // Sampled at most every PROBE_INTERVAL, and after that only
            // once the figures may have moved or these are due anyway (a
            // small change, or the repeat at PROBE_MAX_AGE): an idle
            // connection's probe sleeps.
            monoio::time::sleep(PROBE_INTERVAL).await;
            let changed = transport.estimate_changed(epoch);
            match cadence.due(report, now) {
                Some(due) => {
                    let wait = due.saturating_duration_since(Instant::now());
                    race(changed, monoio::time::sleep(wait)).await;
                }
                None => changed.await,
            }
        }
    };
    // The subscriber keeps its side open while it wants reports; its FIN
    // or reset ends them.
    let peer_done = async {
        let _ = reader.discard_to_end().await;
    };
    race(reports, race(peer_done, session.closed.raised())).await;
    let _ = send.finish();
    stats.probes_open.dec();
    session.probing.set(false);
}

/// The PROBE fields of an estimate: bits per second and milliseconds.
fn report_of(estimate: Estimate) -> Probe {
    Probe {
        bitrate: estimate.send_rate,
        rtt: estimate.rtt.map(|rtt| rtt.as_millis() as u64),
    }
}

/// When a new report is worth sending, given the last one sent.
#[derive(Debug, Default)]
pub(super) struct Cadence {
    last: Option<(Probe, Instant)>,
}

impl Cadence {
    /// Whether to send `report` at `now`; if so it becomes the last one.
    /// Both fields unknown is sent once, to retract figures the peer holds,
    /// never repeated.
    pub(super) fn take(&mut self, report: Probe, now: Instant) -> bool {
        if self.due(report, now).is_none_or(|due| now < due) {
            return false;
        }
        self.last = Some((report, now));
        true
    }

    /// When `report` is worth sending (`now` if it already is), given the
    /// last one sent; `None` if never.
    pub(super) fn due(&self, report: Probe, now: Instant) -> Option<Instant> {
        let unknown = report.bitrate.is_none() && report.rtt.is_none();
        match self.last {
            None if unknown => None,
            None => Some(now),
            Some((prev, _)) if unknown && prev.bitrate.is_none() && prev.rtt.is_none() => None,
            Some((prev, at)) => {
                let wait = match moved(prev.rtt, report.rtt, PROBE_RTT_DELTA) {
                    true => Duration::ZERO,
                    false => bitrate_due(prev.bitrate, report.bitrate),
                };
                Some(at + wait)
            }
        }
    }
}

/// Whether a figure moved by `threshold` (relative) or more. Gaining or
/// losing a value always counts.
fn moved(prev: Option<u64>, next: Option<u64>, threshold: f64) -> bool {
    match (prev, next) {
        (None, None) => false,
        (Some(0), Some(next)) => next != 0,
        (Some(prev), Some(next)) => (next as f64 - prev as f64).abs() / prev as f64 >= threshold,
        _ => true,
    }
}

/// How old the last report must be before this bitrate is worth another:
/// zero for a change of [`PROBE_MAX_DELTA`] or more, [`PROBE_MAX_AGE`] for
/// none, linear between (from [`PROBE_INTERVAL`]).
fn bitrate_due(prev: Option<u64>, next: Option<u64>) -> Duration {
    let (Some(prev), Some(next)) = (prev, next) else {
        return match prev == next {
            true => PROBE_MAX_AGE,
            false => Duration::ZERO,
        };
    };
    if prev == 0 {
        return match next {
            0 => PROBE_MAX_AGE,
            _ => Duration::ZERO,
        };
    }
    let delta = (next as f64 - prev as f64).abs() / prev as f64;
    if delta >= PROBE_MAX_DELTA {
        return Duration::ZERO;
    }
    let range = PROBE_MAX_AGE - PROBE_INTERVAL;
    PROBE_MAX_AGE - range.mul_f64(delta / PROBE_MAX_DELTA)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(bitrate: Option<u64>, rtt: Option<u64>) -> Probe {
        Probe { bitrate, rtt }
    }

    #[test]
    fn the_first_known_report_goes_at_once_and_unknown_never_alone() {
        let now = Instant::now();
        let mut cadence = Cadence::default();
        assert!(!cadence.take(probe(None, None), now));
        assert!(cadence.take(probe(Some(1_000_000), Some(40)), now));
    }

    #[test]
    fn a_small_change_waits_and_a_large_one_does_not() {
        let start = Instant::now();
        let mut cadence = Cadence::default();
        assert!(cadence.take(probe(Some(1_000_000), Some(40)), start));
        let soon = start + PROBE_INTERVAL;
        // The same figures: not again before the max age.
        assert!(!cadence.take(probe(Some(1_000_000), Some(40)), soon));
        assert!(cadence.take(probe(Some(1_000_000), Some(40)), start + PROBE_MAX_AGE));
        let start = start + PROBE_MAX_AGE;
        // 10% more bitrate: due after 10 s - 9.9 s x 0.4 = 6.04 s.
        assert!(!cadence.take(
            probe(Some(1_100_000), Some(40)),
            start + Duration::from_secs(6)
        ));
        assert!(cadence.take(
            probe(Some(1_100_000), Some(40)),
            start + Duration::from_millis(6100)
        ));
        let start = start + Duration::from_millis(6100);
        // 30% more bitrate, or an RTT 25% longer: at once.
        assert!(cadence.take(probe(Some(1_430_000), Some(40)), start + PROBE_INTERVAL));
        assert!(cadence.take(probe(Some(1_430_000), Some(50)), start + 2 * PROBE_INTERVAL));
    }

    #[test]
    fn unchanged_figures_fall_due_at_the_max_age_and_small_changes_sooner() {
        let start = Instant::now();
        let mut cadence = Cadence::default();
        let report = probe(Some(1_000_000), Some(40));
        assert_eq!(cadence.due(report, start), Some(start));
        assert!(cadence.take(report, start));
        let later = start + PROBE_INTERVAL;
        assert_eq!(cadence.due(report, later), Some(start + PROBE_MAX_AGE));
        // 10% more: 10 s - 9.9 s x 0.4.
        let small = probe(Some(1_100_000), Some(40));
        let due = cadence.due(small, later).unwrap();
        assert!(due > start + Duration::from_secs(6) && due < start + Duration::from_millis(6100));
        // A 25% longer RTT: now.
        assert_eq!(
            cadence.due(probe(Some(1_000_000), Some(50)), later),
            Some(start)
        );
        // Retracted once, then never due again.
        assert!(cadence.take(probe(None, None), later));
        assert_eq!(cadence.due(probe(None, None), later + PROBE_MAX_AGE), None);
    }

    #[test]
    fn losing_the_figures_is_said_once() {
        let start = Instant::now();
        let mut cadence = Cadence::default();
        assert!(cadence.take(probe(Some(1_000), None), start));
        assert!(cadence.take(probe(None, None), start + PROBE_INTERVAL));
        assert!(!cadence.take(probe(None, None), start + PROBE_MAX_AGE * 2));
        assert!(cadence.take(probe(None, Some(30)), start + PROBE_MAX_AGE * 2));
    }

    #[test]
    fn quic_figures_become_bits_per_second_and_milliseconds() {
        let stats = qumo_shards::ConnectionStats {
            rtt: Duration::from_millis(50),
            cwnd: 125_000,
            lost_packets: 0,
            sent_packets: 0,
            datagrams_sent: 0,
            bytes_sent: 0,
            datagrams_received: 0,
            bytes_received: 0,
            mtu: 1200,
        };
        let report = report_of(Estimate::from_quic(&stats));
        // 125 kB per 50 ms = 20 Mbit/s.
        assert_eq!(report, probe(Some(20_000_000), Some(50)));
        let idle = qumo_shards::ConnectionStats {
            rtt: Duration::ZERO,
            ..stats
        };
        assert!(!Estimate::from_quic(&idle).is_known());
    }
}
