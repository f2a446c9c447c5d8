//! The announce table: which broadcasts exist and which session publishes
//! each, plus the local announce listeners (peers' ANNOUNCE_REQUEST streams).
//!
//! Every shard holds the whole table, fed by `ShardMessage::Announce` from
//! every shard; announcements are rare next to media, so replicating them
//! makes every subscribe a local lookup. Paths are normalised (no empty
//! segments, no leading or trailing `/`); a prefix matches a path equal to it
//! or continuing after a `/`.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::message::SessionRef;

/// A change a listener is told about; `suffix` is relative to its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceEvent {
    pub suffix: String,
    pub hops: Arc<[u64]>,
    pub active: bool,
}

/// A peer's interest in broadcasts under `prefix`: the changes since it
/// started listening, queued until its serving task takes them.
#[derive(Debug)]
pub struct Listener {
    pub prefix: String,
    /// The listening session: its own broadcasts are not echoed back to it.
    pub session: SessionRef,
    queue: RefCell<VecDeque<AnnounceEvent>>,
    /// Most changes queued; past it the listener is marked overflowed and
    /// its queue dropped, so a peer that does not read costs bounded memory.
    backlog: usize,
    overflowed: Cell<bool>,
    /// While its table is being paged: the last suffix paged so far. A
    /// change to a suffix beyond it is not queued, as its page will read
    /// the table as it is then.
    paging: RefCell<Option<Option<String>>>,
    /// One waker, not a list: one serving task reads a listener.
    waker: RefCell<Option<Waker>>,
}

/// What a listener's serving task finds next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    Change(AnnounceEvent),
    /// More than `backlog` changes piled up unread; the listener is done.
    Overflowed,
}

impl Listener {
    /// The next queued change, if any, without waiting.
    pub fn try_next(&self) -> Option<Heard> {
        if self.overflowed.get() {
            return Some(Heard::Overflowed);
        }
        self.queue.borrow_mut().pop_front().map(Heard::Change)
    }

    /// The table has been paged up to `cursor` (the last suffix paged);
    /// `done` once it is exhausted.
    pub fn paged(&self, cursor: Option<&str>, done: bool) {
        let mut paging = self.paging.borrow_mut();
        match done {
            true => *paging = None,
            false => *paging = Some(cursor.map(str::to_owned)),
        }
    }

    /// Whether a change to `suffix` is for a part of the table not paged yet.
    fn beyond_pages(&self, suffix: &str) -> bool {
        match &*self.paging.borrow() {
            None => false,
            Some(None) => true,
            Some(Some(cursor)) => suffix > cursor.as_str(),
        }
    }

    /// Ready when [`Listener::try_next`] has something; takes nothing.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.overflowed.get() || !self.queue.borrow().is_empty() {
            return Poll::Ready(());
        }
        *self.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Ready once the listener has overflowed; takes nothing.
    pub fn poll_overflowed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.overflowed.get() {
            return Poll::Ready(());
        }
        *self.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }

    fn push(&self, event: AnnounceEvent) {
        if self.overflowed.get() || self.beyond_pages(&event.suffix) {
            return;
        }
        let mut queue = self.queue.borrow_mut();
        if queue.len() >= self.backlog {
            queue.clear();
            queue.shrink_to_fit();
            self.overflowed.set(true);
        } else {
            queue.push_back(event);
        }
        drop(queue);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

/// One page of a listener's initial table.
#[derive(Debug, Default)]
pub struct Page {
    /// Active broadcasts under the prefix, in suffix order.
    pub events: Vec<AnnounceEvent>,
    /// The last suffix the page covered; the next page starts after it.
    pub cursor: Option<String>,
    /// Whether the table is exhausted.
    pub done: bool,
}

/// One live broadcast in [`Origin::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its full path.
    pub path: String,
    /// The session publishing it (the one in use when several do).
    pub publisher: SessionRef,
    /// Relays it passed through before this one.
    pub hops: Arc<[u64]>,
}

#[derive(Debug, Clone)]
struct Publisher {
    session: SessionRef,
    hops: Arc<[u64]>,
}

#[derive(Debug, Default)]
pub struct Origin {
    /// Per path, every session publishing it; the last is the one used.
    broadcasts: BTreeMap<String, Vec<Publisher>>,
    listeners: HashMap<u64, Rc<Listener>>,
    next_listener: u64,
}

impl Origin {
    /// The session to subscribe through for `path`: the one with the
    /// shortest hop list (a local publisher has none), the latest of equals.
    pub fn publisher(&self, path: &str) -> Option<SessionRef> {
        preferred(self.broadcasts.get(path)?).map(|p| p.session)
    }

    /// The session to subscribe through for `path` or, when nobody
    /// publishes `path` itself, for the longest announced path above it
    /// (whole segments): an IETF subscriber may name a track below the
    /// namespace its publisher announced (draft 14 section 8.4).
    pub fn publisher_covering(&self, path: &str) -> Option<SessionRef> {
        let mut candidate = path;
        loop {
            if let Some(publisher) = self.publisher(candidate) {
                return Some(publisher);
            }
            let cut = candidate.rfind('/')?;
            candidate = candidate.get(..cut)?;
        }
    }

    /// Record an announcement and tell the listeners that care. A path
    /// stays active while any session publishes it.
    pub fn update(&mut self, path: &str, publisher: SessionRef, hops: Arc<[u64]>, active: bool) {
        let entry = self.broadcasts.entry(path.to_owned()).or_default();
        let was_active = !entry.is_empty();
        let withdrawn = entry.iter().find(|p| p.session == publisher).cloned();
        entry.retain(|p| p.session != publisher);
        // The relay that publishes it (the only hop) withdrew it or is gone:
        // every other route to it passed through that relay and goes too,
        // or two neighbours would keep it alive through each other.
        if let (false, Some(Publisher { hops, .. })) = (active, withdrawn) {
            if let [origin] = hops[..] {
                entry.retain(|p| !p.hops.contains(&origin));
            }
        }
        if active {
            entry.push(Publisher {
                session: publisher,
                hops: hops.clone(),
            });
        }
        let now_active = !entry.is_empty();
        if !now_active {
            self.broadcasts.remove(path);
        }
        // Only transitions are announced: moq-lite peers treat a second
        // "active" for a live path as a protocol error, and a change of
        // publisher is invisible to them.
        if was_active == now_active {
            return;
        }
        for listener in self.listeners.values() {
            if listener.session == publisher {
                continue;
            }
            if let Some(suffix) = strip_prefix(path, &listener.prefix) {
                listener.push(AnnounceEvent {
                    suffix: suffix.to_owned(),
                    hops: hops.clone(),
                    active,
                });
            }
        }
    }

    /// Listen for changes under `prefix` from now on. The broadcasts
    /// already active are read page by page with [`Origin::page`], so a
    /// large table is never copied whole for one request.
    pub fn listen(
        &mut self,
        prefix: &str,
        session: SessionRef,
        backlog: usize,
    ) -> (u64, Rc<Listener>) {
        let id = self.next_listener;
        self.next_listener += 1;
        let listener = Rc::new(Listener {
            prefix: prefix.to_owned(),
            session,
            queue: RefCell::new(VecDeque::new()),
            backlog: backlog.max(1),
            overflowed: Cell::new(false),
            paging: RefCell::new(Some(None)),
            waker: RefCell::new(None),
        });
        self.listeners.insert(id, listener.clone());
        (id, listener)
    }

    /// Up to `limit` active broadcasts under `prefix` with a suffix after
    /// `after` (from the start when `None`), in suffix order, leaving out
    /// those `session` publishes itself.
    pub fn page(
        &self,
        prefix: &str,
        session: SessionRef,
        after: Option<&str>,
        limit: usize,
    ) -> Page {
        let mut page = Page::default();
        for (visited, (suffix, publishers)) in self.under(prefix, after).enumerate() {
            if visited == limit {
                return page;
            }
            page.cursor = Some(suffix.to_owned());
            if let Some(current) = publishers.last().filter(|p| p.session != session) {
                page.events.push(AnnounceEvent {
                    suffix: suffix.to_owned(),
                    hops: current.hops.clone(),
                    active: true,
                });
            }
        }
        page.done = true;
        page
    }

    /// How many broadcasts under `prefix` are active, not counting those
    /// `session` publishes itself.
    pub fn count_active(&self, prefix: &str, session: SessionRef) -> usize {
        self.under(prefix, None)
            .filter(|(_, publishers)| publishers.last().is_some_and(|p| p.session != session))
            .count()
    }

    /// The broadcasts `prefix` covers, as (suffix, publishers), in suffix
    /// order, after `after`. Only covered paths are visited (the path
    /// itself, then `prefix/...`), so suffix order is path order.
    fn under<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&str>,
    ) -> impl Iterator<Item = (&'a str, &'a Vec<Publisher>)> + 'a {
        let exact = match (prefix.is_empty(), after) {
            (false, None) => self.broadcasts.get_key_value(prefix),
            _ => None,
        };
        let base = match prefix.is_empty() {
            true => String::new(),
            false => format!("{prefix}/"),
        };
        let lower = match after {
            Some(after) if !after.is_empty() => Bound::Excluded(format!("{base}{after}")),
            _ => Bound::Included(base.clone()),
        };
        let rest = self
            .broadcasts
            .range::<String, _>((lower, Bound::Unbounded))
            .take_while(move |(path, _)| path.starts_with(&base))
            .filter(|(path, _)| !path.is_empty());
        exact
            .into_iter()
            .chain(rest)
            .filter_map(move |(path, publishers)| Some((strip_prefix(path, prefix)?, publishers)))
    }

    /// Up to `limit` active broadcasts under `prefix`, in path order, and
    /// whether more were left out. For operators (`/announced`), not for
    /// peers.
    pub fn list(&self, prefix: &str, limit: usize) -> (Vec<Listed>, bool) {
        let mut listed = Vec::new();
        for (suffix, publishers) in self.under(prefix, None) {
            let Some(current) = preferred(publishers) else {
                continue;
            };
            if listed.len() == limit {
                return (listed, true);
            }
            listed.push(Listed {
                path: join(prefix, suffix),
                publisher: current.session,
                hops: current.hops.clone(),
            });
        }
        (listed, false)
    }

    pub fn unlisten(&mut self, id: u64) {
        self.listeners.remove(&id);
    }

    /// Active broadcasts in the table.
    pub fn broadcast_count(&self) -> usize {
        self.broadcasts.len()
    }

    pub fn listener_count(&self) -> usize {
        self.listeners.len()
    }
}

/// The route in use: the shortest hop list, the latest of equals.
fn preferred(publishers: &[Publisher]) -> Option<&Publisher> {
    publishers.iter().rev().min_by_key(|p| p.hops.len())
}

/// `path` relative to `prefix`, if `prefix` covers it.
pub fn strip_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix.is_empty() {
        return Some(path);
    }
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some(rest)
    } else {
        rest.strip_prefix('/')
    }
}

/// Normalise a path: drop empty segments and outer slashes.
pub fn normalize(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(segment);
    }
    out
}

/// `base` joined with `rest`, normalised.
pub fn join(base: &str, rest: &str) -> String {
    match (base.is_empty(), rest.is_empty()) {
        (true, _) => normalize(rest),
        (_, true) => normalize(base),
        _ => normalize(&format!("{base}/{rest}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: u64) -> SessionRef {
        SessionRef { shard: 0, id }
    }

    fn drain(listener: &Listener) -> Vec<AnnounceEvent> {
        let mut out = Vec::new();
        while let Some(Heard::Change(e)) = listener.try_next() {
            out.push(e);
        }
        out
    }

    #[test]
    fn prefix_matches_whole_segments_only() {
        assert_eq!(strip_prefix("live/cam", "live"), Some("cam"));
        assert_eq!(strip_prefix("live", "live"), Some(""));
        assert_eq!(strip_prefix("liver/cam", "live"), None);
        assert_eq!(strip_prefix("a/b", ""), Some("a/b"));
    }

    #[test]
    fn paths_are_normalised_when_joined() {
        assert_eq!(join("", "/clock/"), "clock");
        assert_eq!(join("room//1", "cam"), "room/1/cam");
        assert_eq!(join("room", ""), "room");
    }

    #[test]
    fn the_operators_list_names_full_paths_under_a_prefix_up_to_a_limit() {
        let mut origin = Origin::default();
        for path in ["live/b", "live/a", "liver/c", "live", "other/d"] {
            origin.update(path, session(1), Arc::from([9u64]), true);
        }
        origin.update("live/a", session(4), Arc::from([]), true);
        let (listed, truncated) = origin.list("live", 10);
        let paths: Vec<&str> = listed.iter().map(|l| l.path.as_str()).collect();
        assert_eq!(paths, ["live", "live/a", "live/b"]);
        assert!(!truncated);
        assert_eq!(listed[1].publisher, session(4), "the publisher in use");
        assert_eq!(&*listed[2].hops, &[9]);
        let (listed, truncated) = origin.list("", 2);
        assert_eq!(listed.len(), 2);
        assert!(truncated);
        origin.update("live", session(1), Arc::from([]), false);
        assert_eq!(origin.list("live", 10).0.len(), 2, "an ended one is gone");
    }

    #[test]
    fn a_listener_starts_with_active_broadcasts_under_its_prefix() {
        let mut origin = Origin::default();
        origin.update("live/a", session(1), Arc::from([]), true);
        origin.update("other/b", session(1), Arc::from([]), true);
        let page = origin.page("live", session(2), None, 10);
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].suffix, "a");
        assert!(page.done);
    }

    #[test]
    fn a_listener_hears_start_and_end_but_not_its_own_broadcasts() {
        let mut origin = Origin::default();
        let (_, listener) = origin.listen("", session(2), 100);
        listener.paged(None, true);
        origin.update("clock", session(1), Arc::from([7u64]), true);
        origin.update("mine", session(2), Arc::from([]), true);
        origin.update("clock", session(1), Arc::from([]), false);
        let events = drain(&listener);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(events[0].active && events[0].suffix == "clock");
        assert_eq!(&*events[0].hops, &[7]);
        assert!(!events[1].active);
    }

    #[test]
    fn a_path_below_an_announced_one_is_covered_by_its_publisher() {
        let mut origin = Origin::default();
        origin.update("moq-test/run", session(1), Arc::from([]), true);
        origin.update("moq-test/run/a/b", session(2), Arc::from([]), true);
        assert_eq!(origin.publisher("moq-test/run/x"), None);
        assert_eq!(
            origin.publisher_covering("moq-test/run/x/y"),
            Some(session(1))
        );
        // The longest announced path wins; the path itself first of all.
        assert_eq!(
            origin.publisher_covering("moq-test/run/a/b/c"),
            Some(session(2))
        );
        assert_eq!(origin.publisher_covering("moq-test/run"), Some(session(1)));
        // Whole segments only.
        assert_eq!(origin.publisher_covering("moq-test/runner/x"), None);
        assert_eq!(origin.publisher_covering("moq-test"), None);
    }

    #[test]
    fn the_publisher_with_the_shortest_hop_list_is_used() {
        let mut origin = Origin::default();
        origin.update("b", session(1), Arc::from([1, 2]), true);
        origin.update("b", session(2), Arc::from([3]), true);
        origin.update("b", session(3), Arc::from([4, 5, 6]), true);
        assert_eq!(origin.publisher("b"), Some(session(2)));
        // Of equals, the latest.
        origin.update("b", session(4), Arc::from([7]), true);
        assert_eq!(origin.publisher("b"), Some(session(4)));
        origin.update("b", session(4), Arc::from([]), false);
        origin.update("b", session(2), Arc::from([]), false);
        assert_eq!(origin.publisher("b"), Some(session(1)));
    }

    #[test]
    fn routes_through_a_relay_that_withdrew_its_own_broadcast_go_with_it() {
        let mut origin = Origin::default();
        let (_, listener) = origin.listen("", session(9), 16);
        listener.paged(None, true);
        // Heard from relay 7 directly, and through neighbours 8 and 5.
        origin.update("b", session(1), Arc::from([7]), true);
        origin.update("b", session(2), Arc::from([7, 8]), true);
        origin.update("b", session(3), Arc::from([5]), true);
        origin.update("b", session(1), Arc::from([]), false);
        // Relay 5's own broadcast of that name is another publisher: kept.
        assert_eq!(origin.publisher("b"), Some(session(3)));
        origin.update("b", session(3), Arc::from([]), false);
        assert_eq!(origin.publisher("b"), None);
        let events = drain(&listener);
        assert_eq!(events.iter().filter(|e| !e.active).count(), 1, "{events:?}");
    }

    #[test]
    fn a_broadcast_stays_up_while_a_second_publisher_has_it() {
        let mut origin = Origin::default();
        origin.update("clock", session(1), Arc::from([]), true);
        origin.update("clock", session(3), Arc::from([]), true);
        let (_, listener) = origin.listen("", session(2), 100);
        listener.paged(None, true);
        origin.update("clock", session(3), Arc::from([]), false);
        assert_eq!(origin.publisher("clock"), Some(session(1)));
        let events = drain(&listener);
        assert!(events.iter().all(|e| e.active), "{events:?}");
        origin.update("clock", session(1), Arc::from([]), false);
        assert_eq!(origin.publisher("clock"), None);
        assert!(!drain(&listener)[0].active);
    }

    #[test]
    fn the_table_is_paged_in_suffix_order_covering_only_the_prefix() {
        let mut origin = Origin::default();
        for path in [
            "live", "live-x", "live/c", "live/a", "live/b", "live2", "other",
        ] {
            origin.update(path, session(1), Arc::from([]), true);
        }
        origin.update("live/mine", session(2), Arc::from([]), true);
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = origin.page("live", session(2), cursor.as_deref(), 2);
            seen.extend(page.events.iter().map(|e| e.suffix.clone()));
            cursor = page.cursor.or(cursor);
            if page.done {
                break;
            }
        }
        assert_eq!(seen, ["", "a", "b", "c"], "its own broadcast is left out");
        assert_eq!(origin.count_active("live", session(2)), 4);
        assert_eq!(origin.count_active("", session(2)), 7);
        let all = origin.page("", session(3), None, 100);
        assert_eq!(all.events.len(), 8);
    }

    #[test]
    fn a_listener_that_falls_too_far_behind_is_overflowed_and_keeps_nothing() {
        let mut origin = Origin::default();
        let (_, listener) = origin.listen("", session(2), 3);
        listener.paged(None, true);
        for i in 0..10 {
            origin.update(&format!("b{i}"), session(1), Arc::from([]), true);
        }
        assert_eq!(listener.queue.borrow().len(), 0);
        assert_eq!(listener.try_next(), Some(Heard::Overflowed));
    }

    #[test]
    fn while_paging_only_changes_to_paged_suffixes_are_queued() {
        let mut origin = Origin::default();
        let (_, listener) = origin.listen("", session(2), 100);
        origin.update("b", session(1), Arc::from([]), true);
        assert_eq!(
            listener.try_next(),
            None,
            "nothing paged yet: the page will read it"
        );
        listener.paged(Some("c"), false);
        origin.update("a", session(1), Arc::from([]), true);
        origin.update("d", session(1), Arc::from([]), true);
        let events = drain(&listener);
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].suffix, "a");
        listener.paged(Some("d"), true);
        origin.update("z", session(1), Arc::from([]), true);
        assert_eq!(drain(&listener)[0].suffix, "z");
    }
}
