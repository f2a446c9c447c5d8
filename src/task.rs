//! Small single-threaded async helpers for a shard's tasks: race two
//! futures, contain a panic, wait on a one-way signal. Below sessions and
//! shards alike, so both use them without importing each other.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::task::{Context, Poll};

pub use qumo_shards::{WaitList, Waiter};

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

/// Run `fut`, turning a panic inside it into `Err` with the panic's
/// message, so that a bug hit by one session's input ends that session
/// rather than the shard and every session on it. Panics are still bugs:
/// this is the last line of defence, not the first.
pub async fn catch_unwind<F: Future>(fut: F) -> Result<F::Output, String> {
    let mut fut = pin!(fut);
    poll_fn(
        |cx| match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic_message(panic.as_ref()))),
        },
    )
    .await
}

/// The text of a panic payload.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// A one-way flag: once raised it stays raised, and raising wakes every
/// task waiting on it. A task that stops waiting before the raise leaves
/// nothing behind (see [`WaitList`]).
#[derive(Debug, Default)]
pub struct Signal {
    raised: Cell<bool>,
    waiters: WaitList,
}

impl Signal {
    pub fn raise(&self) {
        if !self.raised.replace(true) {
            self.waiters.wake_all();
        }
    }

    pub fn is_raised(&self) -> bool {
        self.raised.get()
    }

    /// A place to wait on this signal from a hand-written poll loop.
    pub fn waiter(&self) -> Waiter<'_> {
        self.waiters.waiter()
    }

    /// Ready once raised; otherwise registers `waiter` (one of ours).
    pub fn poll_raised(&self, waiter: &Waiter<'_>, cx: &Context<'_>) -> Poll<()> {
        debug_assert!(waiter.is_for(&self.waiters));
        if self.raised.get() {
            return Poll::Ready(());
        }
        waiter.register(cx);
        Poll::Pending
    }

    pub async fn raised(&self) {
        let waiter = self.waiter();
        poll_fn(|cx| self.poll_raised(&waiter, cx)).await
    }

    /// Tasks holding a place on this signal (for leak checks).
    pub fn waiters(&self) -> usize {
        self.waiters.waiters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn a_panicking_future_becomes_an_error_with_its_message() {
        let mut cx = Context::from_waker(Waker::noop());
        let mut fut = std::pin::pin!(catch_unwind(async {
            if std::hint::black_box(true) {
                panic!("boom {}", 7);
            }
        }));
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(Err(message)) => assert_eq!(message, "boom 7"),
            _ => panic!("the panic was not caught"),
        }
        let mut fine = std::pin::pin!(catch_unwind(async { 5 }));
        assert!(matches!(fine.as_mut().poll(&mut cx), Poll::Ready(Ok(5))));
    }

    /// A task that stops waiting before the raise (a finished group writer)
    /// must not leave its waker behind: before the wait-list, every group of
    /// a long subscription added one (+35 MB over 45k groups).
    #[test]
    fn waits_abandoned_before_the_raise_leave_nothing_behind() {
        let signal = Signal::default();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..10_000 {
            let mut wait = std::pin::pin!(signal.raised());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(signal.waiters(), 0);
        let mut kept = std::pin::pin!(signal.raised());
        assert!(kept.as_mut().poll(&mut cx).is_pending());
        assert_eq!(signal.waiters(), 1);
        signal.raise();
        assert!(kept.as_mut().poll(&mut cx).is_ready());
    }
}
