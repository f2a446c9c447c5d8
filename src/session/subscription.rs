//! One peer subscription as its cursor (`serve`) and its group writers
//! (`writer`) share it.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::tail::GroupTally;
use crate::task::Signal;
use crate::track::Group;

/// Per-subscription state shared by its cursor and its group writers.
pub struct Subscription {
    pub id: u64,
    pub priority: Cell<u8>,
    pub max_latency: Cell<Duration>,
    /// Raised when the subscriber cancels or the session ends.
    pub cancelled: Signal,
    /// Its group writers, so that a clean end waits for them.
    pub writers: Rc<GroupTally>,
}

impl Subscription {
    /// Whether `group` is too old to still send: superseded longer ago than
    /// the max latency.
    pub fn expired(&self, group: &Group, now: Instant) -> bool {
        group
            .superseded_at()
            .is_some_and(|at| now.saturating_duration_since(at) > self.max_latency.get())
    }
}
