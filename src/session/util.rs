//! Small single-threaded async helpers for session tasks.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Which of two futures finished first.
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Run `a` and `b` together; the first to finish wins and the other is
/// dropped. `a` is polled first, so it wins a tie.
pub async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(x) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(x));
        }
        if let Poll::Ready(y) = b.as_mut().poll(cx) {
            return Poll::Ready(Either::Right(y));
        }
        Poll::Pending
    })
    .await
}

/// A one-way flag: once raised it stays raised, and raising wakes every
/// task that polled it.
#[derive(Debug, Default)]
pub struct Signal {
    raised: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Signal {
    pub fn raise(&self) {
        if !self.raised.replace(true) {
            for waker in self.waiters.borrow_mut().drain(..) {
                waker.wake();
            }
        }
    }

    pub fn is_raised(&self) -> bool {
        self.raised.get()
    }

    /// Ready once raised; otherwise registers `cx`.
    pub fn poll_raised(&self, cx: &Context<'_>) -> Poll<()> {
        if self.raised.get() {
            return Poll::Ready(());
        }
        register(&mut self.waiters.borrow_mut(), cx);
        Poll::Pending
    }

    pub async fn raised(&self) {
        poll_fn(|cx| self.poll_raised(cx)).await
    }
}

/// Add `cx`'s waker to `wakers` unless an equivalent one is there already.
pub fn register(wakers: &mut Vec<Waker>, cx: &Context<'_>) {
    if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
        wakers.push(cx.waker().clone());
    }
}
