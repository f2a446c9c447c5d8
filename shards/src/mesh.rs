//! The mesh: every shard can post a message to every other shard.
//!
//! Each shard has one inbox, an unbounded crossbeam queue. A shard never
//! blocks on its inbox and never polls it in a loop: when the queue is empty
//! it stores its waker and raises `armed`, then looks at the queue once more.
//! A sender pushes, then wakes the receiver only if `armed` was up, so a busy
//! receiver that drains in batches costs senders no wake-up at all.
//!
//! Why the second look is enough: sender does `push; swap(armed)`, receiver
//! does `store(armed); is_empty()`, all `SeqCst`. In any interleaving either
//! the sender's swap sees `armed` (and wakes) or the receiver's check sees the
//! message (and does not sleep).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

struct Inbox {
    armed: AtomicBool,
    /// One waker, not a list: only the shard's own driver task waits on
    /// its inbox.
    waker: Mutex<Option<Waker>>,
    /// Wake-ups actually delivered; a measure of how well batching works.
    wakeups: AtomicU64,
}

/// The sending side of every shard's inbox. Cheap to clone, `Send + Sync`.
pub struct MeshSender<T> {
    senders: Arc<[Sender<T>]>,
    inboxes: Arc<[Inbox]>,
}

impl<T> Clone for MeshSender<T> {
    fn clone(&self) -> Self {
        Self {
            senders: self.senders.clone(),
            inboxes: self.inboxes.clone(),
        }
    }
}

/// The receiving side of one shard's inbox.
pub struct MeshReceiver<T> {
    shard: usize,
    receiver: Receiver<T>,
    inboxes: Arc<[Inbox]>,
}

/// Build a mesh of `shards` inboxes: one sender for all, one receiver each.
pub fn mesh<T>(shards: usize) -> (MeshSender<T>, Vec<MeshReceiver<T>>) {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..shards).map(|_| crossbeam_channel::unbounded()).unzip();
    let inboxes: Arc<[Inbox]> = (0..shards)
        .map(|_| Inbox {
            armed: AtomicBool::new(false),
            waker: Mutex::new(None),
            wakeups: AtomicU64::new(0),
        })
        .collect();
    let receivers = receivers
        .into_iter()
        .enumerate()
        .map(|(shard, receiver)| MeshReceiver {
            shard,
            receiver,
            inboxes: inboxes.clone(),
        })
        .collect();
    (
        MeshSender {
            senders: senders.into(),
            inboxes,
        },
        receivers,
    )
}

impl<T> MeshSender<T> {
    /// Number of inboxes (shards).
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Post `message` to shard `to`. Returns the message back if that shard
    /// has stopped or does not exist.
    pub fn send(&self, to: usize, message: T) -> Result<(), T> {
        let Some(sender) = self.senders.get(to) else {
            return Err(message);
        };
        sender.send(message).map_err(|e| e.into_inner())?;
        let inbox = &self.inboxes[to];
        if inbox.armed.swap(false, Ordering::SeqCst) {
            let waker = inbox.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(waker) = waker {
                inbox.wakeups.fetch_add(1, Ordering::Relaxed);
                waker.wake();
            }
        }
        Ok(())
    }

    /// Wake-ups delivered to shard `shard` so far.
    pub fn wakeups(&self, shard: usize) -> u64 {
        self.wakeup_counts().get(shard)
    }

    /// A reader of the wake-up counters that holds no sender, so that it
    /// keeps no inbox open (an exporter may outlive the shards).
    pub fn wakeup_counts(&self) -> MeshWakeups {
        MeshWakeups(self.inboxes.clone())
    }
}

/// Every inbox's wake-up count, readable from any thread.
#[derive(Clone)]
pub struct MeshWakeups(Arc<[Inbox]>);

impl MeshWakeups {
    /// Wake-ups delivered to shard `shard` so far (0 for no such shard).
    pub fn get(&self, shard: usize) -> u64 {
        self.0
            .get(shard)
            .map_or(0, |i| i.wakeups.load(Ordering::Relaxed))
    }
}

impl std::fmt::Debug for MeshWakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries((0..self.0.len()).map(|i| self.get(i)))
            .finish()
    }
}

impl<T> MeshReceiver<T> {
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// Move every queued message into `batch`; if there were none, arrange to
    /// be woken by the next sender and return `Pending`.
    pub fn poll_drain(&self, cx: &mut Context<'_>, batch: &mut Vec<T>) -> Poll<()> {
        loop {
            self.drain_into(batch);
            if !batch.is_empty() {
                return Poll::Ready(());
            }
            let inbox = &self.inboxes[self.shard];
            {
                let mut slot = inbox.waker.lock().unwrap_or_else(|p| p.into_inner());
                match slot.as_ref() {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *slot = Some(cx.waker().clone()),
                }
            }
            inbox.armed.store(true, Ordering::SeqCst);
            if self.receiver.is_empty() {
                return Poll::Pending;
            }
            // A message slipped in between the drain and the arming: take it
            // now rather than wait for a wake-up that may never come.
            inbox.armed.store(false, Ordering::SeqCst);
        }
    }

    /// Wait for at least one message, then return all that are queued.
    pub async fn recv_batch(&self, batch: &mut Vec<T>) {
        std::future::poll_fn(|cx| self.poll_drain(cx, batch)).await
    }

    fn drain_into(&self, batch: &mut Vec<T>) {
        loop {
            match self.receiver.try_recv() {
                Ok(message) => batch.push(message),
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn an_idle_receiver_is_woken_once_and_gets_the_whole_batch() {
        let (tx, mut rxs) = mesh::<u32>(2);
        let rx = rxs.remove(1);
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut batch = Vec::new();
        assert!(rx.poll_drain(&mut cx, &mut batch).is_pending());
        for i in 0..10 {
            tx.send(1, i).unwrap();
        }
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "only the first send wakes"
        );
        assert!(rx.poll_drain(&mut cx, &mut batch).is_ready());
        assert_eq!(batch, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_busy_receiver_costs_senders_no_wakeups() {
        let (tx, rxs) = mesh::<u32>(1);
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        tx.send(0, 1).unwrap();
        let mut batch = Vec::new();
        assert!(rxs[0].poll_drain(&mut cx, &mut batch).is_ready());
        tx.send(0, 2).unwrap();
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        assert_eq!(tx.wakeups(0), 0);
    }

    #[test]
    fn sending_to_a_missing_shard_gives_the_message_back() {
        let (tx, _rxs) = mesh::<&str>(2);
        assert_eq!(tx.send(2, "lost"), Err("lost"));
    }

    #[test]
    fn messages_from_another_thread_all_arrive() {
        let (tx, rxs) = mesh::<u64>(1);
        let sender = std::thread::spawn(move || {
            for i in 0..100_000u64 {
                tx.send(0, i).unwrap();
            }
        });
        let mut got = Vec::new();
        // Block this thread on a real waker until everything has arrived.
        let thread = std::thread::current();
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(thread)));
        let mut cx = Context::from_waker(&waker);
        while got.len() < 100_000 {
            let mut batch = Vec::new();
            if rxs[0].poll_drain(&mut cx, &mut batch).is_pending() {
                std::thread::park();
            }
            got.extend(batch);
        }
        sender.join().unwrap();
        assert!(got.windows(2).all(|w| w[0] + 1 == w[1]));
    }
}
