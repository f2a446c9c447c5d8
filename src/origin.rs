//! The announce table: which broadcasts exist and which session publishes
//! each, plus the local announce listeners (peers' ANNOUNCE_REQUEST streams).
//!
//! Every shard holds the whole table, fed by `ShardMessage::Announce` from
//! every shard; announcements are rare next to media, so replicating them
//! makes every subscribe a local lookup. Paths are normalised (no empty
//! segments, no leading or trailing `/`); a prefix matches a path equal to it
//! or continuing after a `/`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
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

/// A peer's interest in broadcasts under `prefix`.
#[derive(Debug)]
pub struct Listener {
    pub prefix: String,
    /// The listening session: its own broadcasts are not echoed back to it.
    pub session: SessionRef,
    queue: RefCell<VecDeque<AnnounceEvent>>,
    waker: RefCell<Option<Waker>>,
}

impl Listener {
    /// The next change, or `Pending` with `cx` registered.
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<AnnounceEvent> {
        if let Some(event) = self.queue.borrow_mut().pop_front() {
            return Poll::Ready(event);
        }
        *self.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }

    fn push(&self, event: AnnounceEvent) {
        self.queue.borrow_mut().push_back(event);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }
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
    /// The session to subscribe through for `path`.
    pub fn publisher(&self, path: &str) -> Option<SessionRef> {
        self.broadcasts
            .get(path)
            .and_then(|p| p.last())
            .map(|p| p.session)
    }

    /// Record an announcement and tell the listeners that care. A path
    /// stays active while any session publishes it.
    pub fn update(&mut self, path: &str, publisher: SessionRef, hops: Arc<[u64]>, active: bool) {
        let entry = self.broadcasts.entry(path.to_owned()).or_default();
        let was_active = !entry.is_empty();
        entry.retain(|p| p.session != publisher);
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

    /// Listen for broadcasts under `prefix`; returns the listener and the
    /// active broadcasts it starts with.
    pub fn listen(
        &mut self,
        prefix: &str,
        session: SessionRef,
    ) -> (u64, Rc<Listener>, Vec<AnnounceEvent>) {
        let id = self.next_listener;
        self.next_listener += 1;
        let listener = Rc::new(Listener {
            prefix: prefix.to_owned(),
            session,
            queue: RefCell::new(VecDeque::new()),
            waker: RefCell::new(None),
        });
        self.listeners.insert(id, listener.clone());
        let initial = self
            .broadcasts
            .range(prefix.to_owned()..)
            .take_while(|(path, _)| path.starts_with(prefix))
            .filter_map(|(path, publishers)| {
                let suffix = strip_prefix(path, prefix)?;
                let current = publishers.last()?;
                (current.session != session).then(|| AnnounceEvent {
                    suffix: suffix.to_owned(),
                    hops: current.hops.clone(),
                    active: true,
                })
            })
            .collect();
        (id, listener, initial)
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
    use std::task::Waker;

    fn session(id: u64) -> SessionRef {
        SessionRef { shard: 0, id }
    }

    fn drain(listener: &Listener) -> Vec<AnnounceEvent> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(e) = listener.poll_next(&mut cx) {
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
    fn a_listener_starts_with_active_broadcasts_under_its_prefix() {
        let mut origin = Origin::default();
        origin.update("live/a", session(1), Arc::from([]), true);
        origin.update("other/b", session(1), Arc::from([]), true);
        let (_, _, initial) = origin.listen("live", session(2));
        assert_eq!(initial.len(), 1);
        assert_eq!(initial[0].suffix, "a");
    }

    #[test]
    fn a_listener_hears_start_and_end_but_not_its_own_broadcasts() {
        let mut origin = Origin::default();
        let (_, listener, _) = origin.listen("", session(2));
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
    fn a_broadcast_stays_up_while_a_second_publisher_has_it() {
        let mut origin = Origin::default();
        origin.update("clock", session(1), Arc::from([]), true);
        origin.update("clock", session(3), Arc::from([]), true);
        let (_, listener, _) = origin.listen("", session(2));
        origin.update("clock", session(3), Arc::from([]), false);
        assert_eq!(origin.publisher("clock"), Some(session(1)));
        let events = drain(&listener);
        assert!(events.iter().all(|e| e.active), "{events:?}");
        origin.update("clock", session(1), Arc::from([]), false);
        assert_eq!(origin.publisher("clock"), None);
        assert!(!drain(&listener)[0].active);
    }
}
