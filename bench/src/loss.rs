//! Lost-group accounting for one subscription.
//!
//! Groups travel on separate QUIC streams, so they may start in any order.
//! A group counts as lost when it has not started by the time a group
//! `window` sequences newer has; a group whose stream was reset, or ended
//! short of its frames, is lost at once. A group that turns up after it was
//! written off is taken back off the lost count and counted as late. Groups
//! still inside the window when the run ends are judged by nobody: they may
//! be in flight.
//!
//! Counting starts at the first group delivered. When the publisher's
//! SUBSCRIBE_START named an earlier group (a relay may name where its
//! source's feed starts, then serve only groups young enough for the
//! subscriber), the groups between are reported as skipped at the start,
//! not as lost: they are a joining cost, not a delivery failure.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Missing,
    Started,
}

/// What one subscription has seen of its group sequence.
#[derive(Debug, Clone)]
pub struct GroupTracker {
    window: usize,
    /// Lowest sequence not yet judged; `None` before the first group.
    base: Option<u64>,
    /// The lowest `base` ever held: groups below it were never expected.
    origin: Option<u64>,
    slots: VecDeque<Slot>,
    /// Where the publisher said delivery starts.
    promised: Option<u64>,
    /// The skipped-at-start count last reported through a [`Delta`].
    skipped_reported: u64,
    /// Groups judged lost (never started, reset, or cut short) minus late ones.
    pub lost: u64,
    /// Groups that started after they had been counted lost.
    pub late: u64,
    /// Group streams the relay reset, or that ended before their last frame.
    pub reset: u64,
    /// Groups that started.
    pub started: u64,
    /// The same sequence started twice.
    pub duplicate: u64,
}

/// What a call changed, for the caller's running totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delta {
    pub lost: i64,
    pub late: u64,
    pub skipped: i64,
}

impl GroupTracker {
    /// `window`: how many newer groups may start before an older one that
    /// has not is written off (at least 1).
    pub fn new(window: usize) -> Self {
        Self {
            window: window.max(1),
            base: None,
            origin: None,
            slots: VecDeque::new(),
            promised: None,
            skipped_reported: 0,
            lost: 0,
            late: 0,
            reset: 0,
            started: 0,
            duplicate: 0,
        }
    }

    /// Groups between the announced start and the first group delivered.
    pub fn skipped_at_start(&self) -> u64 {
        match (self.promised, self.origin) {
            (Some(p), Some(first)) if p < first => first - p,
            _ => 0,
        }
    }

    fn skip_delta(&mut self) -> i64 {
        let now = self.skipped_at_start();
        let d = now as i64 - self.skipped_reported as i64;
        self.skipped_reported = now;
        d
    }

    /// The publisher said delivery starts at `group` (SUBSCRIBE_START or
    /// SUBSCRIBE_OK's start).
    pub fn start_at(&mut self, group: u64) -> Delta {
        self.promised = Some(group);
        Delta {
            skipped: self.skip_delta(),
            ..Delta::default()
        }
    }

    /// A group stream with this sequence opened.
    pub fn on_group(&mut self, seq: u64) -> Delta {
        let base = *self.base.get_or_insert(seq);
        let origin = *self.origin.get_or_insert(seq);
        self.started += 1;
        if seq < base {
            if base == origin && self.slots.len() + ((base - seq) as usize) <= 2 * self.window {
                // An early group overtaken by a later one before anything
                // was judged: counting starts here instead.
                for _ in 0..(base - seq) {
                    self.slots.push_front(Slot::Missing);
                }
                self.slots[0] = Slot::Started;
                self.base = Some(seq);
                self.origin = Some(seq);
                let mut d = self.judge();
                d.skipped = self.skip_delta();
                return d;
            }
            if seq >= origin && self.lost > 0 {
                // Judged already: lost then, here now.
                self.lost -= 1;
                self.late += 1;
                return Delta {
                    lost: -1,
                    late: 1,
                    skipped: 0,
                };
            }
            self.duplicate += 1;
            return Delta::default();
        }
        let i = (seq - base) as usize;
        if i >= self.slots.len() {
            self.slots.resize(i + 1, Slot::Missing);
        }
        if self.slots[i] == Slot::Started {
            self.started -= 1;
            self.duplicate += 1;
            return Delta::default();
        }
        self.slots[i] = Slot::Started;
        let mut d = self.judge();
        d.skipped = self.skip_delta();
        d
    }

    /// A group stream was reset, or ended before all its frames.
    pub fn on_reset(&mut self) -> Delta {
        self.reset += 1;
        self.lost += 1;
        Delta {
            lost: 1,
            ..Delta::default()
        }
    }

    /// Write off what has fallen more than `window` behind the newest group.
    fn judge(&mut self) -> Delta {
        let mut delta = Delta::default();
        while self.slots.len() > self.window {
            if self.slots.pop_front() == Some(Slot::Missing) {
                self.lost += 1;
                delta.lost += 1;
            }
            if let Some(base) = self.base.as_mut() {
                *base += 1;
            }
        }
        delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_in_order_lose_nothing() {
        let mut t = GroupTracker::new(4);
        for seq in 10..100 {
            t.on_group(seq);
        }
        assert_eq!((t.lost, t.started, t.late), (0, 90, 0));
    }

    #[test]
    fn a_gap_counts_once_the_window_has_passed_it() {
        let mut t = GroupTracker::new(3);
        t.on_group(0);
        t.on_group(2); // 1 missing, within the window
        assert_eq!(t.lost, 0);
        t.on_group(3);
        assert_eq!(t.lost, 0);
        let d = t.on_group(4); // 1 has not started, and 1 + 3 has
        assert_eq!(d.lost, 1);
        assert_eq!(t.lost, 1);
        t.on_group(5);
        assert_eq!(t.lost, 1);
    }

    #[test]
    fn reordering_inside_the_window_is_not_loss() {
        let mut t = GroupTracker::new(3);
        for seq in [0, 2, 1, 4, 3, 5, 7, 6, 8, 9, 10] {
            t.on_group(seq);
        }
        assert_eq!((t.lost, t.duplicate), (0, 0));
    }

    #[test]
    fn a_group_arriving_after_it_was_written_off_is_late_not_lost() {
        let mut t = GroupTracker::new(2);
        for seq in [0, 2, 3, 4] {
            t.on_group(seq);
        }
        assert_eq!(t.lost, 1);
        let d = t.on_group(1);
        assert_eq!((d.lost, d.late), (-1, 1));
        assert_eq!((t.lost, t.late), (0, 1));
    }

    #[test]
    fn a_reset_group_is_lost_at_once() {
        let mut t = GroupTracker::new(8);
        t.on_group(0);
        t.on_group(1);
        assert_eq!(t.on_reset().lost, 1);
        assert_eq!((t.lost, t.reset), (1, 1));
    }

    #[test]
    fn groups_after_the_last_one_seen_are_not_judged() {
        let mut t = GroupTracker::new(3);
        t.on_group(0);
        t.on_group(3); // 1 and 2 may still be in flight when the run ends
        assert_eq!(t.lost, 0);
    }

    #[test]
    fn groups_between_the_announced_start_and_the_first_delivered_are_skipped_not_lost() {
        let mut t = GroupTracker::new(2);
        assert_eq!(t.start_at(5).skipped, 0);
        let mut skipped = 0;
        for seq in [7, 8, 9, 10] {
            skipped += t.on_group(seq).skipped;
        }
        assert_eq!((t.lost, t.skipped_at_start(), skipped), (0, 2, 2));

        // The same when START arrives after the first group.
        let mut t = GroupTracker::new(2);
        t.on_group(7);
        assert_eq!(t.start_at(5).skipped, 2);
        assert_eq!(t.lost, 0);
    }

    #[test]
    fn an_early_group_overtaken_at_the_start_is_neither_lost_nor_duplicate() {
        let mut t = GroupTracker::new(3);
        t.start_at(4);
        let mut skipped = t.on_group(5).skipped;
        skipped += t.on_group(4).skipped;
        for seq in 6..12 {
            t.on_group(seq);
        }
        assert_eq!((t.lost, t.duplicate, t.started), (0, 0, 8));
        assert_eq!((t.skipped_at_start(), skipped), (0, 0));
    }

    #[test]
    fn a_gap_after_the_first_group_is_lost_whatever_the_start_said() {
        let mut t = GroupTracker::new(2);
        t.start_at(3);
        for seq in [3, 5, 6, 7] {
            t.on_group(seq);
        }
        assert_eq!(t.lost, 1);
    }

    #[test]
    fn the_same_group_twice_is_a_duplicate() {
        let mut t = GroupTracker::new(4);
        t.on_group(1);
        t.on_group(1);
        assert_eq!((t.duplicate, t.started, t.lost), (1, 1, 0));
    }
}
