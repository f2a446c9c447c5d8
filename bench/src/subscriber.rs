//! A subscriber connection: listens for the run's announcements, subscribes
//! to its tracks (again after a refusal, until the publisher is there), and
//! reads every group stream, counting frames, bytes, latency and loss.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use qumo::lite::{
    Announce, AnnounceOk, AnnounceRequest, BidiType, GroupHeader, Role, Subscribe, SubscribeReply,
    UniType,
};
use qumo_shards::{ReadStreamError, ShardContext};

use crate::transport::{BenchConn as Connection, BenchRecv as RecvStream, BenchSend as SendStream};

use crate::loss::{Delta, GroupTracker};
use crate::payload::{Frame, FrameParser};
use crate::plan::{Plan, Shard};
use crate::session::{
    enc, encode_all, read_bidi_type, read_uni_type, refuse, send_setup, serve_announce, MsgReader,
    CODE_CANCEL,
};

/// How many newer groups may start before a missing one counts as lost.
pub(crate) const LOSS_WINDOW: usize = 4;
/// How long a subscription waits for its broadcast's announcement before
/// it subscribes anyway (a relay need not announce to subscribers).
const ANNOUNCE_WAIT: Duration = Duration::from_secs(2);

/// One of the tracks a subscriber wants, across its subscribe attempts.
pub struct Wanted {
    pub broadcast: String,
    pub track: String,
    /// When its last frame arrived.
    pub last_frame: Cell<Option<Instant>>,
}

/// One SUBSCRIBE attempt.
pub(crate) struct Subscription {
    pub(crate) wanted: Rc<Wanted>,
    pub(crate) tracker: RefCell<GroupTracker>,
    pub(crate) delivered: Cell<bool>,
}

impl Subscription {
    pub(crate) fn new(wanted: Rc<Wanted>, tracker: GroupTracker) -> Self {
        Subscription {
            wanted,
            tracker: RefCell::new(tracker),
            delivered: Cell::new(false),
        }
    }
}

pub struct SubConn {
    pub conn: Connection,
    pub wanted: Vec<Rc<Wanted>>,
    subs: RefCell<HashMap<u64, Rc<Subscription>>>,
    next_id: Cell<u64>,
    announced: RefCell<HashSet<String>>,
    announce_waiters: RefCell<Vec<Waker>>,
}

impl SubConn {
    /// A subscriber connection wanting `wanted`, nothing subscribed yet.
    pub(crate) fn new(conn: Connection, wanted: Vec<Rc<Wanted>>) -> Self {
        SubConn {
            conn,
            wanted,
            subs: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            announced: RefCell::new(HashSet::new()),
            announce_waiters: RefCell::new(Vec::new()),
        }
    }

    /// Open, with every wanted track delivering within `stale`.
    pub fn held(&self, now: Instant, stale: Duration) -> bool {
        self.conn.close_reason().is_none()
            && self.wanted.iter().all(|w| {
                w.last_frame
                    .get()
                    .is_some_and(|t| now.saturating_duration_since(t) <= stale)
            })
    }

    fn set_announced(&self, path: String, active: bool) {
        match active {
            true => self.announced.borrow_mut().insert(path),
            false => self.announced.borrow_mut().remove(&path),
        };
        for w in self.announce_waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    async fn wait_announced(&self, path: &str) {
        poll_fn(|cx| {
            if self.announced.borrow().contains(path) {
                return Poll::Ready(());
            }
            self.announce_waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

pub(crate) fn apply(shard: &Shard, d: Delta) {
    let mut c = shard.c.borrow_mut();
    c.add_lost(d.lost);
    c.late_groups += d.late;
    c.groups_skipped_at_start = (c.groups_skipped_at_start as i64 + d.skipped).max(0) as u64;
}

// The measuring part every subscriber shares, whatever protocol it speaks
// (this module's moq-lite one, `crate::ietf_subscriber`'s IETF ones).

/// The tracks subscriber `j` wants, none delivered yet.
pub(crate) fn wanted_tracks(plan: &Plan, j: usize) -> Vec<Rc<Wanted>> {
    plan.subscriber_tracks(j)
        .into_iter()
        .map(|i| {
            let (p, b, t) = plan.track_of(i);
            Rc::new(Wanted {
                broadcast: plan.broadcast_path(p, b),
                track: Plan::track_name(t),
                last_frame: Cell::new(None),
            })
        })
        .collect()
}

/// Wait for subscriber `j`'s start, then dial with `connect`, counting the
/// attempt and its outcome; `None` when the run stopped first or the dial
/// failed.
pub(crate) async fn dial<F, E>(shard: &Rc<Shard>, j: usize, connect: F) -> Option<Connection>
where
    F: std::future::Future<Output = Result<Connection, E>>,
    E: std::fmt::Display,
{
    let start = shard.plan.subscriber_start(j);
    monoio::time::sleep_until(monoio::time::Instant::from_std(start)).await;
    if shard.stopping() {
        return None;
    }
    shard.c.borrow_mut().sub_attempted += 1;
    match connect.await {
        Ok(conn) => {
            shard.c.borrow_mut().sub_connected += 1;
            shard.conns.borrow_mut().push(conn.clone());
            Some(conn)
        }
        Err(e) => {
            shard.c.borrow_mut().sub_failed += 1;
            shard.warn_once("subscriber connect failed", e);
            None
        }
    }
}

/// Wait for the connection to close; a close before the run stops is a
/// dropped subscriber.
pub(crate) async fn until_closed(shard: &Shard, conn: &Connection) {
    let reason = conn.closed().await;
    if !shard.stopping() {
        shard.c.borrow_mut().sub_dropped += 1;
        shard.warn_once("subscriber connection closed", reason);
    }
}

/// A group stream of `sub` began with group `sequence`: tracked for loss,
/// and the subscription's first counts it as started.
pub(crate) fn group_started(shard: &Shard, sub: &Subscription, sequence: u64) {
    let d = sub.tracker.borrow_mut().on_group(sequence);
    apply(shard, d);
    let mut c = shard.c.borrow_mut();
    c.groups_started += 1;
    if !sub.delivered.replace(true) {
        c.subscriptions_started += 1;
    }
}

/// A frame of `wanted` arrived: `size` payload bytes, stamped `sent_us`.
pub(crate) fn frame_arrived(shard: &Shard, wanted: &Wanted, size: u64, sent_us: Option<u64>) {
    let now = Instant::now();
    wanted.last_frame.set(Some(now));
    shard.on_frame(now, size, sent_us);
}

/// The relay reset a group stream of `sub` (`None`: before its header
/// named the subscription).
pub(crate) fn group_reset(shard: &Shard, sub: Option<&Subscription>) {
    if shard.stopping() {
        return;
    }
    shard.c.borrow_mut().groups_reset += 1;
    if let Some(sub) = sub {
        let d = sub.tracker.borrow_mut().on_reset();
        apply(shard, d);
    }
}

/// A group stream of `sub` ended: `whole` (every expected frame, nothing
/// malformed) or incomplete, which counts against its loss tracker.
pub(crate) fn group_ended(shard: &Shard, sub: &Subscription, whole: bool) {
    if shard.stopping() {
        return;
    }
    if whole {
        shard.c.borrow_mut().groups_complete += 1;
        return;
    }
    shard.c.borrow_mut().groups_incomplete += 1;
    let d = sub.tracker.borrow_mut().on_reset();
    apply(shard, d);
}

pub async fn run_subscriber(shard: Rc<Shard>, ctx: ShardContext<()>, j: usize) {
    let plan = shard.plan.clone();
    let (relay, path) = plan.subscriber_relay(j);
    let path = path.to_string();
    let Some(conn) = dial(&shard, j, Connection::connect(&plan, &ctx, relay, &path)).await else {
        return;
    };
    let version = plan.cfg.version;
    let wanted = wanted_tracks(&plan, j);
    let sc = Rc::new(SubConn::new(conn.clone(), wanted));
    shard.subs.borrow_mut().push(sc.clone());

    {
        let conn = conn.clone();
        monoio::spawn(async move {
            let _ = send_setup(&conn, version, Role::Subscriber, &path).await;
        });
    }
    {
        let (shard, sc) = (shard.clone(), sc.clone());
        monoio::spawn(async move {
            while let Ok(recv) = sc.conn.accept_uni().await {
                monoio::spawn(read_group(shard.clone(), sc.clone(), recv));
            }
        });
    }
    {
        // The relay asks what we publish: nothing.
        let conn = conn.clone();
        monoio::spawn(async move {
            while let Ok((mut send, recv)) = conn.accept_bi().await {
                monoio::spawn(async move {
                    match read_bidi_type(recv, version).await {
                        Some((BidiType::Announce, reader)) => {
                            serve_announce(send, reader, version, &[]).await
                        }
                        Some((_, mut reader)) => refuse(&mut send, &mut reader),
                        None => {}
                    }
                });
            }
        });
    }
    monoio::spawn(watch_announcements(shard.clone(), sc.clone()));
    for w in sc.wanted.clone() {
        monoio::spawn(subscribe_loop(shard.clone(), sc.clone(), w));
    }

    until_closed(&shard, &conn).await;
}

/// Keep the set of announced broadcasts under the run's prefix.
async fn watch_announcements(shard: Rc<Shard>, sc: Rc<SubConn>) {
    let plan = &shard.plan;
    let version = plan.cfg.version;
    let Ok((mut send, recv)) = sc.conn.open_bi().await else {
        return;
    };
    let request = AnnounceRequest {
        prefix: plan.prefix.clone(),
        exclude_hop: 0,
    };
    let bytes = encode_all(version, |out, v| {
        enc(out, &BidiType::Announce, v);
        enc(out, &request, v);
    });
    if send.write_chunk(bytes).await.is_err() {
        return;
    }
    let mut reader = MsgReader::new(recv, version);
    if version.has_announce_ok() && reader.expect::<AnnounceOk>().await.is_err() {
        return;
    }
    let full = |suffix: &str| match suffix.trim_matches('/') {
        "" => plan.prefix.clone(),
        s => format!("{}/{s}", plan.prefix),
    };
    // lite-06 names ended broadcasts by the id their START took.
    let mut ids: Vec<String> = Vec::new();
    while let Ok(Some(a)) = reader.next::<Announce>().await {
        match a {
            Announce::Active { suffix, .. } | Announce::Restarted { suffix, .. } => {
                sc.set_announced(full(&suffix), true)
            }
            Announce::Ended { suffix, .. } => sc.set_announced(full(&suffix), false),
            Announce::Start { suffix, .. } => {
                ids.push(full(&suffix));
                sc.set_announced(full(&suffix), true);
            }
            Announce::End { id } => {
                if let Some(path) = ids.get(id as usize) {
                    sc.set_announced(path.clone(), false);
                }
            }
            Announce::Restart { .. } | Announce::Unknown { .. } => {}
        }
    }
    let _ = send.finish();
}

/// Subscribe to one track, and again whenever the relay refuses or ends
/// the subscription, until the run stops.
async fn subscribe_loop(shard: Rc<Shard>, sc: Rc<SubConn>, wanted: Rc<Wanted>) {
    let plan = shard.plan.clone();
    let version = plan.cfg.version;
    let mut backoff = Duration::from_millis(100);
    loop {
        if shard.stopping() || sc.conn.close_reason().is_some() {
            return;
        }
        let _ = monoio::time::timeout(ANNOUNCE_WAIT, sc.wait_announced(&wanted.broadcast)).await;

        let id = sc.next_id.get();
        sc.next_id.set(id + 1);
        let sub = Rc::new(Subscription::new(
            wanted.clone(),
            GroupTracker::new(LOSS_WINDOW),
        ));
        sc.subs.borrow_mut().insert(id, sub.clone());
        shard.c.borrow_mut().subscribe_attempts += 1;

        let Ok((mut send, recv)) = sc.conn.open_bi().await else {
            return;
        };
        let msg = Subscribe {
            id,
            broadcast: wanted.broadcast.clone(),
            track: wanted.track.clone(),
            priority: 0,
            max_latency: plan.cfg.max_latency_ms,
            start_group: None,
            end_group: None,
            start_frame: 0,
            end_frame: None,
        };
        let bytes = encode_all(version, |out, v| {
            enc(out, &BidiType::Subscribe, v);
            enc(out, &msg, v);
        });
        if send.write_chunk(bytes).await.is_err() {
            continue;
        }
        let accepted = read_replies(&shard, &sub, MsgReader::new(recv, version), &mut send).await;
        if shard.stopping() {
            return;
        }
        if sub.delivered.get() {
            shard.c.borrow_mut().subscriptions_ended += 1;
            backoff = Duration::from_millis(100);
        } else {
            shard.c.borrow_mut().subscribe_retries += 1;
            if !accepted {
                shard.warn_once("subscribe refused (retrying)", &wanted.broadcast);
            }
            monoio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

/// Read the publisher's replies until the stream ends; whether it accepted.
async fn read_replies(
    shard: &Shard,
    sub: &Subscription,
    mut reader: MsgReader,
    send: &mut SendStream,
) -> bool {
    let mut accepted = false;
    loop {
        match reader.next::<SubscribeReply>().await {
            Ok(Some(SubscribeReply::Ok(ok))) => {
                accepted = true;
                if let Some(g) = ok.start_group {
                    let d = sub.tracker.borrow_mut().start_at(g);
                    apply(shard, d);
                }
            }
            Ok(Some(SubscribeReply::Start { group })) => {
                accepted = true;
                let d = sub.tracker.borrow_mut().start_at(group);
                apply(shard, d);
            }
            Ok(Some(SubscribeReply::End { .. })) => {}
            Ok(Some(SubscribeReply::Drop(drop))) => {
                if !accepted && !sub.delivered.get() {
                    let _ = send.reset(CODE_CANCEL);
                    return false;
                }
                // Announced gaps count as lost groups.
                let n = drop.end.saturating_sub(drop.start) + 1;
                shard.c.borrow_mut().add_lost(n.min(1 << 20) as i64);
            }
            Ok(None) | Err(_) => return accepted,
        }
    }
}

/// One group stream from the relay.
async fn read_group(shard: Rc<Shard>, sc: Rc<SubConn>, recv: RecvStream) {
    let plan = shard.plan.clone();
    let version = plan.cfg.version;
    let Some((ty, mut reader)) = read_uni_type(recv, version).await else {
        return;
    };
    if ty != UniType::Group {
        let _ = reader.recv.stop(CODE_CANCEL);
        return;
    }
    let header = match reader.next::<GroupHeader>().await {
        Ok(Some(h)) => h,
        _ => return,
    };
    let sub = sc.subs.borrow().get(&header.subscribe).cloned();
    let Some(sub) = sub else {
        shard.c.borrow_mut().unknown_groups += 1;
        let _ = reader.recv.stop(CODE_CANCEL);
        return;
    };
    group_started(&shard, &sub, header.sequence);

    let expected = (plan.cfg.load.frames_per_group as u64).saturating_sub(header.frame_start);
    let (mut recv, rest, mut eof) = reader.into_parts();
    let mut parser = FrameParser::new(version);
    let mut frames = 0u64;
    let wanted = sub.wanted.clone();
    let mut on_frame = |f: Frame| {
        frames += 1;
        frame_arrived(&shard, &wanted, f.size, f.sent_us);
    };
    let mut ok = parser.feed(&rest, &mut on_frame).is_ok();
    while ok && !eof {
        match recv.read_chunk(usize::MAX).await {
            Ok(Some(chunk)) => ok = parser.feed(&chunk, &mut on_frame).is_ok(),
            Ok(None) => eof = true,
            Err(ReadStreamError::Reset(_)) => return group_reset(&shard, Some(&sub)),
            // The connection ended; the session counts that.
            Err(_) => return,
        }
    }
    if !ok && !shard.stopping() {
        shard.warn_once(
            "malformed group stream",
            format!("group {}", header.sequence),
        );
        let _ = recv.stop(CODE_CANCEL);
    }
    group_ended(
        &shard,
        &sub,
        ok && parser.at_boundary() && frames >= expected,
    );
}
