//! Writes one cached group to one subscriber on its own uni stream.
//!
//! The writer is a cursor into the shared group: it never copies a payload
//! or encodes a frame header (frames and the headers the group encoded once
//! go to the stream as `Bytes`) and never makes anyone wait for it.
//! It gives up, resetting its stream, when:
//! - the subscriber cancels or the session ends (CANCEL);
//! - the group was superseded longer ago than the subscriber's max latency
//!   (TOO_FAR_BEHIND): a subscriber that cannot keep up loses old groups
//!   instead of queueing them;
//! - the group itself was reset or evicted upstream (that code).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use monoio::time::Sleep;

use super::state::Session;
use super::subscription::Subscription;
use super::tail::{GroupTally, OpenGroup};
use super::transport::{SendStream, Transport};
use crate::lite::{Encode, GroupHeader, StreamCode, UniType};
use crate::task::{race, Either, Waiter};
use crate::track::{Group, GroupState, NextFrame};

enum Outcome {
    Done,
    Reset(StreamCode),
    /// The stream itself failed (peer stopped it, connection gone).
    Lost,
}

/// Write `group` to the subscriber on its own stream; `_open` counts it
/// among the subscription's writers until this returns.
pub async fn write_group<T: Transport>(
    session: Rc<Session<T>>,
    sub: Rc<Subscription>,
    group: Rc<Group>,
    _open: OpenGroup<Rc<GroupTally>>,
) {
    let mut deadline = Deadline::default();
    let waiters = Waiters {
        cancel: sub.cancelled.waiter(),
        group: group.waiter(),
    };
    // Opening waits for the peer's stream credit; a group that expires
    // meanwhile is skipped without ever opening a stream.
    let gate = poll_fn(
        |cx| match give_up(&sub, &group, &waiters, &mut deadline, cx) {
            Some(code) => Poll::Ready(code),
            None => Poll::Pending,
        },
    );
    let mut stream = match race(session.transport.open_uni(), gate).await {
        Either::Left(Ok(stream)) => stream,
        Either::Right(StreamCode::TOO_FAR_BEHIND) => {
            session.shard.stats.groups_too_far_behind.inc();
            return;
        }
        Either::Left(Err(_)) | Either::Right(_) => return,
    };
    // Newer groups first: the live edge matters more than the backlog.
    let _ = stream.set_priority(priority(sub.priority.get(), group.sequence));

    let mut header = BytesMut::new();
    let group_header = GroupHeader {
        subscribe: sub.id,
        sequence: group.sequence,
        frame_start: 0,
    };
    let _ = UniType::Group.encode(&mut header, session.version);
    let _ = group_header.encode(&mut header, session.version);

    let mut pending: VecDeque<Bytes> = VecDeque::from([header.freeze()]);
    let mut cursor = 0usize;

    let outcome = poll_fn(|cx| loop {
        if let Some(code) = give_up(&sub, &group, &waiters, &mut deadline, cx) {
            return Poll::Ready(Outcome::Reset(code));
        }
        if !pending.is_empty() {
            match stream.poll_write_chunks(cx, pending.make_contiguous()) {
                Poll::Ready(Ok(_)) => {
                    while pending.front().is_some_and(Bytes::is_empty) {
                        pending.pop_front();
                    }
                    continue;
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Outcome::Lost),
                Poll::Pending => {
                    waiters.group.register(cx);
                    return Poll::Pending;
                }
            }
        }
        match group.poll_frame(&waiters.group, cx, cursor) {
            Poll::Ready(NextFrame::Frame(frame, heads)) => {
                cursor += 1;
                pending.push_back(heads.for_version(session.version));
                if !frame.payload.is_empty() {
                    pending.push_back(frame.payload);
                }
            }
            Poll::Ready(NextFrame::End) => return Poll::Ready(Outcome::Done),
            Poll::Ready(NextFrame::Reset(code)) => return Poll::Ready(Outcome::Reset(code)),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await;
    finish(&session, &mut stream, outcome);
}

fn finish<T: Transport>(session: &Session<T>, stream: &mut T::Send, outcome: Outcome) {
    match outcome {
        Outcome::Done => {
            session.shard.stats.groups_delivered.inc();
            let _ = stream.finish();
        }
        Outcome::Reset(code) => {
            if code == StreamCode::TOO_FAR_BEHIND {
                session.shard.stats.groups_too_far_behind.inc();
            }
            session.reset(stream, code)
        }
        Outcome::Lost => {}
    }
}

/// A writer's places on what can wake it.
struct Waiters<'a> {
    cancel: Waiter<'a>,
    group: Waiter<'a>,
}

/// Why to stop now, if at all; registers the wake-ups that could change
/// the answer (cancel, the group being superseded, the expiry timer).
fn give_up(
    sub: &Subscription,
    group: &Group,
    waiters: &Waiters<'_>,
    deadline: &mut Deadline,
    cx: &mut Context<'_>,
) -> Option<StreamCode> {
    if sub.cancelled.poll_raised(&waiters.cancel, cx).is_ready() {
        return Some(StreamCode::CANCEL);
    }
    // A group the cache let go of is dropped at once, even by a writer
    // still waiting for stream credit: holding it would keep its frames
    // alive for as long as the subscriber reads nothing. (Other resets
    // reach the subscriber after the frames before them.)
    if let GroupState::Reset(code @ (StreamCode::EVICTED | StreamCode::GROUP_TOO_LARGE)) =
        group.state()
    {
        return Some(code);
    }
    let Some(superseded) = group.superseded_at() else {
        waiters.group.register(cx);
        return None;
    };
    let due = superseded + sub.max_latency.get();
    if Instant::now() >= due {
        return Some(StreamCode::TOO_FAR_BEHIND);
    }
    deadline
        .poll(cx, due)
        .is_ready()
        .then_some(StreamCode::TOO_FAR_BEHIND)
}

/// A timer re-armed whenever the due time changes.
#[derive(Default)]
struct Deadline {
    due: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    fn poll(&mut self, cx: &mut Context<'_>, due: Instant) -> Poll<()> {
        if self.due != Some(due) {
            self.due = Some(due);
            self.sleep = Some(Box::pin(monoio::time::sleep_until(due.into())));
        }
        match self.sleep.as_mut() {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

/// quinn-proto sends higher priorities first. The subscriber's priority
/// ranks its tracks; within a track the newer group wins.
fn priority(track: u8, sequence: u64) -> i32 {
    (i32::from(track) << 23) | (sequence & 0x7f_ffff) as i32
}
