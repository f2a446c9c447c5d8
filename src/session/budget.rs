//! A byte budget shared by one session's group streams: how much frame
//! data the relay holds partly received for that publisher.
//!
//! Reading a frame from QUIC returns its flow-control credit, so without a
//! budget a peer could keep many streams each holding an unfinished frame
//! (60 streams x 4 MiB once cost 247 MB on one connection). A frame reserves
//! its whole declared size before its payload is read; if the budget is
//! spent it waits, its stream is not read, and QUIC flow control holds the
//! peer back. Since every frame reserves all it needs up front, and one
//! frame always fits (the config refuses a budget below `max_frame_size`),
//! a reserved frame can always finish: no deadlock between streams.

use std::cell::Cell;
use std::future::poll_fn;
use std::task::Poll;

use crate::task::WaitList;

pub struct ByteBudget {
    total: u64,
    available: Cell<u64>,
    waiters: WaitList,
}

impl ByteBudget {
    pub fn new(total: u64) -> Self {
        Self {
            total,
            available: Cell::new(total),
            waiters: WaitList::default(),
        }
    }

    /// Bytes not reserved now.
    #[cfg(test)]
    pub fn available(&self) -> u64 {
        self.available.get()
    }

    /// Whether reserving `bytes` now would have to wait.
    pub fn would_wait(&self, bytes: u64) -> bool {
        self.available.get() < bytes.min(self.total)
    }

    /// Reserve `bytes` (at most the whole budget), waiting until they are
    /// free.
    pub async fn reserve(&self, bytes: u64) -> Reservation<'_> {
        let bytes = bytes.min(self.total);
        let waiter = self.waiters.waiter();
        poll_fn(|cx| {
            let available = self.available.get();
            if available >= bytes {
                self.available.set(available - bytes);
                return Poll::Ready(());
            }
            waiter.register(cx);
            Poll::Pending
        })
        .await;
        Reservation {
            budget: self,
            bytes,
        }
    }
}

/// Bytes held from a [`ByteBudget`]; given back when dropped.
pub struct Reservation<'a> {
    budget: &'a ByteBudget,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let budget = self.budget;
        budget.available.set(budget.available.get() + self.bytes);
        budget.waiters.wake_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Waker};

    #[test]
    fn a_frame_waits_until_earlier_frames_give_their_bytes_back() {
        let budget = ByteBudget::new(100);
        let mut cx = Context::from_waker(Waker::noop());
        let mut first = pin!(budget.reserve(70));
        assert!(!budget.would_wait(70));
        let Poll::Ready(held) = first.as_mut().poll(&mut cx) else {
            panic!("the first frame fits");
        };
        assert_eq!(budget.available(), 30);
        assert!(budget.would_wait(50));
        let mut second = pin!(budget.reserve(50));
        assert!(second.as_mut().poll(&mut cx).is_pending());
        drop(held);
        let Poll::Ready(_held) = second.as_mut().poll(&mut cx) else {
            panic!("the bytes came back");
        };
        assert_eq!(budget.available(), 50);
    }

    #[test]
    fn a_request_beyond_the_whole_budget_takes_the_whole_budget() {
        let budget = ByteBudget::new(10);
        let mut cx = Context::from_waker(Waker::noop());
        let mut big = pin!(budget.reserve(1_000));
        let Poll::Ready(_held) = big.as_mut().poll(&mut cx) else {
            panic!("the whole budget is free");
        };
        assert_eq!(budget.available(), 0);
    }
}
