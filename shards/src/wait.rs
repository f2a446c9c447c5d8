//! A list of tasks waiting on one thing, for the tasks of one shard.
//!
//! Registration, re-registration and removal are O(1): each waiting task
//! holds a [`Waiter`], which owns one slot of the list for as long as it
//! lives and frees it when dropped. So a task that stops waiting without the
//! event ever happening (a finished group writer, a cancelled read) leaves
//! nothing behind, and a task that re-registers on every poll does not scan
//! the list for its own waker. Waking is O(slots) and wakes each waiting
//! task once.

use std::cell::{Cell, RefCell};
use std::task::{Context, Waker};

enum Slot {
    /// Free; the index of the next free slot (or `usize::MAX`).
    Vacant(usize),
    /// Owned by a live [`Waiter`] that is not waiting now.
    Idle,
    Waiting(Waker),
}

const NO_SLOT: usize = usize::MAX;

struct Slots {
    slots: Vec<Slot>,
    free: usize,
    waiting: usize,
}

/// Tasks waiting for the same event. Not `Send`: one shard's thread owns it.
pub struct WaitList {
    inner: RefCell<Slots>,
    /// Wakers taken out by [`WaitList::wake_all`], kept for its capacity.
    scratch: RefCell<Vec<Waker>>,
}

impl Default for WaitList {
    fn default() -> Self {
        Self {
            inner: RefCell::new(Slots {
                slots: Vec::new(),
                free: NO_SLOT,
                waiting: 0,
            }),
            scratch: RefCell::new(Vec::new()),
        }
    }
}

impl std::fmt::Debug for WaitList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitList")
            .field("waiting", &self.waiting())
            .finish()
    }
}

impl WaitList {
    /// A handle for one task to wait on this list with.
    pub fn waiter(&self) -> Waiter<'_> {
        Waiter {
            list: self,
            key: Cell::new(None),
        }
    }

    /// Wake every waiting task; each must register again to be woken again.
    pub fn wake_all(&self) {
        if self.inner.borrow().waiting == 0 {
            return;
        }
        let mut batch = std::mem::take(&mut *self.scratch.borrow_mut());
        {
            let mut inner = self.inner.borrow_mut();
            inner.waiting = 0;
            for slot in inner.slots.iter_mut() {
                if let Slot::Waiting(_) = slot {
                    if let Slot::Waiting(waker) = std::mem::replace(slot, Slot::Idle) {
                        batch.push(waker);
                    }
                }
            }
        }
        // Woken outside the borrow, in case a waker re-enters the list.
        for waker in batch.drain(..) {
            waker.wake();
        }
        *self.scratch.borrow_mut() = batch;
    }

    /// Tasks registered and not yet woken.
    pub fn waiting(&self) -> usize {
        self.inner.borrow().waiting
    }

    /// Slots held by live waiters, waiting or not (for leak checks).
    pub fn waiters(&self) -> usize {
        let inner = self.inner.borrow();
        inner
            .slots
            .iter()
            .filter(|s| !matches!(s, Slot::Vacant(_)))
            .count()
    }
}

/// One task's place in a [`WaitList`]; freed when dropped.
pub struct Waiter<'a> {
    list: &'a WaitList,
    key: Cell<Option<usize>>,
}

impl Waiter<'_> {
    /// Be woken by the list's next [`WaitList::wake_all`].
    pub fn register(&self, cx: &Context<'_>) {
        let mut guard = self.list.inner.borrow_mut();
        let inner = &mut *guard;
        let key = match self.key.get() {
            Some(key) => key,
            None => {
                let key = match inner.free {
                    NO_SLOT => {
                        inner.slots.push(Slot::Idle);
                        inner.slots.len() - 1
                    }
                    key => {
                        if let Slot::Vacant(next) = inner.slots[key] {
                            inner.free = next;
                        }
                        inner.slots[key] = Slot::Idle;
                        key
                    }
                };
                self.key.set(Some(key));
                key
            }
        };
        match &mut inner.slots[key] {
            Slot::Waiting(waker) if waker.will_wake(cx.waker()) => {}
            Slot::Waiting(waker) => *waker = cx.waker().clone(),
            slot => {
                *slot = Slot::Waiting(cx.waker().clone());
                inner.waiting += 1;
            }
        }
    }

    /// Whether this waiter belongs to `list`.
    pub fn is_for(&self, list: &WaitList) -> bool {
        std::ptr::eq(self.list, list)
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let Some(key) = self.key.get() else { return };
        let mut inner = self.list.inner.borrow_mut();
        if let Slot::Waiting(_) = inner.slots[key] {
            inner.waiting -= 1;
        }
        inner.slots[key] = Slot::Vacant(inner.free);
        inner.free = key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn each_waiting_task_is_woken_once_and_must_register_again() {
        let list = WaitList::default();
        let (a_count, a) = waker();
        let (b_count, b) = waker();
        let wa = list.waiter();
        let wb = list.waiter();
        // Registering twice in a row keeps one slot.
        wa.register(&Context::from_waker(&a));
        wa.register(&Context::from_waker(&a));
        wb.register(&Context::from_waker(&b));
        assert_eq!(list.waiting(), 2);
        list.wake_all();
        assert_eq!(a_count.0.load(Ordering::Relaxed), 1);
        assert_eq!(b_count.0.load(Ordering::Relaxed), 1);
        assert_eq!(list.waiting(), 0);
        list.wake_all();
        assert_eq!(a_count.0.load(Ordering::Relaxed), 1);
        wa.register(&Context::from_waker(&a));
        list.wake_all();
        assert_eq!(a_count.0.load(Ordering::Relaxed), 2);
        assert_eq!(b_count.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_dropped_waiter_leaves_nothing_behind_and_its_slot_is_reused() {
        let list = WaitList::default();
        let (_, w) = waker();
        for _ in 0..1000 {
            let waiter = list.waiter();
            waiter.register(&Context::from_waker(&w));
        }
        assert_eq!(list.waiting(), 0);
        assert_eq!(list.waiters(), 0);
        assert_eq!(list.inner.borrow().slots.len(), 1);
        let kept = list.waiter();
        kept.register(&Context::from_waker(&w));
        let other = list.waiter();
        other.register(&Context::from_waker(&w));
        drop(kept);
        assert_eq!(list.waiters(), 1);
        assert_eq!(list.waiting(), 1);
    }

    #[test]
    fn a_waiter_may_change_its_waker() {
        let list = WaitList::default();
        let (first_count, first) = waker();
        let (second_count, second) = waker();
        let waiter = list.waiter();
        waiter.register(&Context::from_waker(&first));
        waiter.register(&Context::from_waker(&second));
        list.wake_all();
        assert_eq!(first_count.0.load(Ordering::Relaxed), 0);
        assert_eq!(second_count.0.load(Ordering::Relaxed), 1);
    }
}
