//! Small single-threaded async helpers for a shard's tasks: race two
//! futures, contain a panic, wait on a one-way signal. Below sessions and
//! shards alike, so both use them without importing each other.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

pub use qumo_shards::{WaitList, Waiter};

/// Which of two futures finished first.
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Run `a` and `b` together; the first to finish wins and the other is
/// dropped. `a` is polled first, so it wins a tie.
pub fn race<A: Future, B: Future>(a: A, b: B) -> Race<A, B> {
    Race { a, b }
}

pin_project_lite::pin_project! {
    /// The future of [`race`]: named rather than an `async fn`, which would
    /// keep a second copy of `a` and `b` (its arguments and their pinned
    /// copies) in every future that awaits a race.
    pub struct Race<A, B> {
        #[pin]
        a: A,
        #[pin]
        b: B,
    }
}

impl<A: Future, B: Future> Future for Race<A, B> {
    type Output = Either<A::Output, B::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(x) = this.a.poll(cx) {
            return Poll::Ready(Either::Left(x));
        }
        if let Poll::Ready(y) = this.b.poll(cx) {
            return Poll::Ready(Either::Right(y));
        }
        Poll::Pending
    }
}

/// Run `fut`, turning a panic inside it into `Err` with the panic's
/// message, so that a bug hit by one session's input ends that session
/// rather than the shard and every session on it. Panics are still bugs:
/// this is the last line of defence, not the first.
pub fn catch_unwind<F: Future>(fut: F) -> CatchUnwind<F> {
    CatchUnwind { fut }
}

pin_project_lite::pin_project! {
    /// The future of [`catch_unwind`]: a named type rather than an `async
    /// fn`, because an `async fn` keeps its argument and the pinned future it
    /// polls as two fields, and a task wrapped that way held two or three
    /// copies of its future for its whole life (~4 KB per session task).
    pub struct CatchUnwind<F> {
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.project().fut;
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic_message(panic.as_ref()))),
        }
    }
}

/// Run `task` as a spawned task's whole body, handing a panic in it to
/// `on_panic` (with its message) instead of unwinding into the shard. The
/// same as `async move { if let Err(p) = catch_unwind(task).await {
/// on_panic(p) } }` without that block's second copy of `task`.
pub fn contain<F, P>(task: F, on_panic: P) -> Contain<F, P>
where
    F: Future<Output = ()>,
    P: FnOnce(String),
{
    Contain {
        task: catch_unwind(task),
        on_panic: Some(on_panic),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`contain`].
    pub struct Contain<F, P> {
        #[pin]
        task: CatchUnwind<F>,
        on_panic: Option<P>,
    }
}

impl<F: Future<Output = ()>, P: FnOnce(String)> Future for Contain<F, P> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        match this.task.poll(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Ready(Err(panic)) => {
                if let Some(on_panic) = this.on_panic.take() {
                    on_panic(panic);
                }
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
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

    #[test]
    fn a_contained_panic_reaches_its_handler_once() {
        let mut cx = Context::from_waker(Waker::noop());
        let caught = std::cell::RefCell::new(Vec::new());
        let mut task = std::pin::pin!(contain(
            async {
                if std::hint::black_box(true) {
                    panic!("bad input");
                }
            },
            |message| caught.borrow_mut().push(message),
        ));
        assert!(task.as_mut().poll(&mut cx).is_ready());
        assert_eq!(*caught.borrow(), ["bad input"]);
        let mut fine = std::pin::pin!(contain(async {}, |_| panic!("no panic to hand on")));
        assert!(fine.as_mut().poll(&mut cx).is_ready());
    }

    /// Every session task is wrapped: a wrapper that held its own copy of
    /// the future (an `async` block or fn around it) doubled or tripled
    /// the memory of every task for its whole life.
    #[test]
    fn wrapping_a_task_adds_no_copy_of_its_future() {
        async fn holds_a_kilobyte() {
            let buffer = [7u8; 1024];
            poll_fn(|_| Poll::<()>::Pending).await;
            std::hint::black_box(&buffer);
        }
        let alone = std::mem::size_of_val(&holds_a_kilobyte());
        assert!(alone >= 1024);
        let caught = catch_unwind(holds_a_kilobyte());
        assert!(std::mem::size_of_val(&caught) < alone + 64);
        let contained = contain(holds_a_kilobyte(), |_| {});
        assert!(std::mem::size_of_val(&contained) < alone + 64);
        let raced = race(holds_a_kilobyte(), holds_a_kilobyte());
        assert!(std::mem::size_of_val(&raced) < 2 * alone + 64);
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
