//! The groups still in flight when a subscription ends.
//!
//! A moq-lite publisher ends a subscription (SUBSCRIBE_END, then FIN) once
//! it has *sent* every group, but QUIC delivers each group on its own
//! stream, so the last groups can still be in flight when the end arrives.
//! Ending the track at once would cut them. Both directions wait, boundedly:
//! - upstream, the relay keeps taking the subscription's group streams until
//!   the open ones finish and either the announced end is reached (lite-06:
//!   END names the exclusive final sequence) or no group has come or gone
//!   for [`QUIET`] (lite-04 sends no END, and lite-05 peers disagree on
//!   whether it is inclusive);
//! - downstream, the relay sends END at once but finishes the subscription
//!   stream only after its group writers are done.

use std::cell::Cell;
use std::future::Future;
use std::ops::Deref;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::task::{race, Either};

/// How long without a group opening or finishing counts as "no more are
/// coming" when the end sequence is unknown. Streams the publisher sent
/// before its FIN arrive within about a round trip of it.
pub const QUIET: Duration = Duration::from_millis(250);

/// The longest the relay waits for a tail, whatever is still open.
pub const UPSTREAM_LIMIT: Duration = Duration::from_secs(2);

/// How often a wait re-checks. Waits happen once per ended subscription, so
/// a short poll is cheaper than waking on every group event.
const POLL: Duration = Duration::from_millis(10);

/// Group streams of one subscription: how many are open, the next sequence
/// after the highest seen, and when one last opened or finished.
pub struct GroupTally {
    open: Cell<usize>,
    next: Cell<u64>,
    touched: Cell<Instant>,
}

impl Default for GroupTally {
    fn default() -> Self {
        GroupTally {
            open: Cell::new(0),
            next: Cell::new(0),
            touched: Cell::new(Instant::now()),
        }
    }
}

impl GroupTally {
    /// Count group `sequence` open until the guard drops.
    pub fn track(&self, sequence: u64) -> OpenGroup<&Self> {
        self.opened(sequence);
        OpenGroup { tally: self }
    }

    /// As [`GroupTally::track`], for a guard that moves into the task that
    /// handles the group: the group counts as open from this call, not from
    /// the task's first run, which may come after the end was checked.
    pub fn track_shared(self: &Rc<Self>, sequence: u64) -> OpenGroup<Rc<Self>> {
        self.opened(sequence);
        OpenGroup {
            tally: self.clone(),
        }
    }

    fn opened(&self, sequence: u64) {
        self.open.set(self.open.get() + 1);
        self.next
            .set(self.next.get().max(sequence.saturating_add(1)));
        self.touched.set(Instant::now());
    }

    pub fn open(&self) -> usize {
        self.open.get()
    }

    /// Start the quiet period now (the moment the end arrived).
    pub fn touch(&self) {
        self.touched.set(Instant::now());
    }

    /// Whether every group before `end` has arrived and finished or, with no
    /// trusted end, nothing has moved for [`QUIET`].
    pub fn settled(&self, end: Option<u64>, now: Instant) -> bool {
        self.open.get() == 0
            && match end {
                Some(end) => self.next.get() >= end,
                None => now.duration_since(self.touched.get()) >= QUIET,
            }
    }
}

/// An open group stream, counted in its [`GroupTally`] while it lives.
pub struct OpenGroup<T: Deref<Target = GroupTally>> {
    tally: T,
}

impl<T: Deref<Target = GroupTally>> Drop for OpenGroup<T> {
    fn drop(&mut self) {
        self.tally.open.set(self.tally.open.get() - 1);
        self.tally.touched.set(Instant::now());
    }
}

/// Wait until `done()` holds, `limit` passes, or `stop` completes; true
/// only when `done()` held.
pub async fn wait_until<T>(
    limit: Duration,
    stop: impl Future<Output = T>,
    done: impl Fn(Instant) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    let poll = async {
        loop {
            let now = Instant::now();
            if done(now) {
                return true;
            }
            if now >= deadline {
                return false;
            }
            monoio::time::sleep(POLL.min(deadline - now)).await;
        }
    };
    match race(poll, stop).await {
        Either::Left(done) => done,
        Either::Right(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_end_settles_once_every_group_before_it_finished() {
        let tally = GroupTally::default();
        let now = Instant::now();
        assert!(tally.settled(Some(0), now), "an empty track ends at once");
        assert!(!tally.settled(Some(2), now), "groups 0 and 1 still to come");
        let g1 = tally.track(1);
        assert!(!tally.settled(Some(2), now), "group 1 still open");
        drop(g1);
        assert!(tally.settled(Some(2), now));
        assert_eq!(tally.open(), 0);
    }

    #[test]
    fn a_shared_guard_counts_its_group_open_from_its_creation() {
        let tally = Rc::new(GroupTally::default());
        let guard = tally.track_shared(3);
        assert_eq!(tally.open(), 1);
        assert!(!tally.settled(Some(4), Instant::now()));
        drop(guard);
        assert!(tally.settled(Some(4), Instant::now()));
    }

    #[test]
    fn an_unknown_end_settles_after_a_quiet_period_with_nothing_open() {
        let tally = GroupTally::default();
        let start = Instant::now();
        let g = tally.track(7);
        assert!(!tally.settled(None, start + QUIET * 2), "a group is open");
        drop(g);
        let closed = Instant::now();
        assert!(!tally.settled(None, closed));
        assert!(tally.settled(None, closed + QUIET));
    }
}
