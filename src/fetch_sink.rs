//! Where a forwarded FETCH's answer waits for the task that asked for it:
//! the shard puts each [`FetchEvent`] that comes back over the mesh here,
//! and the one requesting task takes them in order (no I/O).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use crate::model::FetchEvent;

/// The answer so far of one forwarded FETCH, unread by the requesting
/// task. Bounded by the publisher's side, which sends no further frame
/// while the fetch's `FetchWindow` is full.
#[derive(Default)]
pub struct FetchSink {
    queue: RefCell<VecDeque<FetchEvent>>,
    /// One waker, not a list: only the requesting task waits.
    waker: RefCell<Option<Waker>>,
    /// Whether the End or Reset arrived: later events are dropped.
    finished: Cell<bool>,
}

impl FetchSink {
    /// The next step of the answer arrived.
    pub fn push(&self, event: FetchEvent) {
        if self.finished.get() {
            return;
        }
        if matches!(event, FetchEvent::End | FetchEvent::Reset(_)) {
            self.finished.set(true);
        }
        self.queue.borrow_mut().push_back(event);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// The next step, or `Pending` until one comes.
    pub fn poll_next(&self, cx: &mut Context<'_>) -> Poll<FetchEvent> {
        let next = self.queue.borrow_mut().pop_front();
        match next {
            Some(event) => Poll::Ready(event),
            None => {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Whether the publisher's side has said its last word.
    pub fn finished(&self) -> bool {
        self.finished.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lite::StreamCode;
    use std::task::Waker;

    #[test]
    fn events_come_out_in_order_and_nothing_after_the_last_word() {
        let sink = FetchSink::default();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(sink.poll_next(&mut cx).is_pending());
        sink.push(FetchEvent::Frame {
            timestamp: 1,
            payload: bytes::Bytes::from_static(b"a"),
        });
        sink.push(FetchEvent::Reset(StreamCode::NOT_FOUND));
        sink.push(FetchEvent::End);
        assert!(sink.finished());
        assert!(matches!(
            sink.poll_next(&mut cx),
            Poll::Ready(FetchEvent::Frame { timestamp: 1, .. })
        ));
        assert!(matches!(
            sink.poll_next(&mut cx),
            Poll::Ready(FetchEvent::Reset(StreamCode::NOT_FOUND))
        ));
        assert!(
            sink.poll_next(&mut cx).is_pending(),
            "the End after the Reset is dropped"
        );
    }
}
