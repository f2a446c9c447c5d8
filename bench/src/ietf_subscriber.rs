//! A subscriber connection speaking IETF moq-transport draft 14 (ALPN
//! `moq-00`, `--protocol ietf-14`) through qumo's own codec (`qumo::ietf`):
//! one control stream, a SUBSCRIBE per wanted track (again after a refusal
//! or PUBLISH_DONE), and every subgroup stream read object by object. The
//! publishers stay moq-lite, so a run measures the relay's lite ⇒ IETF
//! path. Counting is the lite subscriber's ([`crate::subscriber`]): the
//! objects' payloads are the publishers' frames, send stamp first.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use qumo::ietf::{
    ClientSetup, ControlMessage, Decode, Encode, Filter, GroupOrder, Limits, ParameterValue,
    Parameters, SubgroupHeader, SubgroupObject, Subscribe, Version, PARAM_MAX_REQUEST_ID,
    PARAM_PATH,
};
use qumo_shards::{ReadStreamError, ShardContext};

use crate::loss::GroupTracker;
use crate::payload::decode_stamp;
use crate::plan::{Plan, Shard};
use crate::session::CODE_CANCEL;
use crate::subscriber::{apply, SubConn, Subscription, Wanted, LOSS_WINDOW};
use crate::transport::{BenchConn as Connection, BenchRecv as RecvStream, BenchSend};

const V: Version = Version::Draft14;

/// A draft-14 subscriber's session: the SubConn the run's accounting reads,
/// its subscriptions keyed by Request ID, and the aliases the relay gave.
struct IetfConn {
    sc: Rc<SubConn>,
    control: RefCell<Option<BenchSend>>,
    /// Our next Request ID (a client's are even) and the relay's limit.
    next_request: Cell<u64>,
    max_request: Cell<u64>,
    /// Request ID -> the wanted track it subscribes to.
    pending: RefCell<HashMap<u64, Rc<Wanted>>>,
    /// Track alias -> its subscription.
    aliases: RefCell<HashMap<u64, Rc<Subscription>>>,
    /// Tracks to subscribe (again), and the task that does it.
    resubscribe: RefCell<Vec<Rc<Wanted>>>,
    waiters: RefCell<Vec<Waker>>,
}

impl IetfConn {
    fn wake(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

pub async fn run_ietf_subscriber(shard: Rc<Shard>, ctx: ShardContext<()>, j: usize) {
    let plan = shard.plan.clone();
    monoio::time::sleep_until(monoio::time::Instant::from_std(plan.subscriber_start(j))).await;
    if shard.stopping() {
        return;
    }
    shard.c.borrow_mut().sub_attempted += 1;
    let (relay, path) = plan.subscriber_relay(j);
    let path = path.to_string();
    let conn = match Connection::connect_tls(&plan, &ctx, relay, plan.subscriber_tls.clone()).await
    {
        Ok(conn) => conn,
        Err(e) => {
            shard.c.borrow_mut().sub_failed += 1;
            shard.warn_once("subscriber connect failed", e);
            return;
        }
    };
    shard.c.borrow_mut().sub_connected += 1;
    shard.conns.borrow_mut().push(conn.clone());
    let wanted: Vec<Rc<Wanted>> = plan
        .subscriber_tracks(j)
        .into_iter()
        .map(|i| {
            let (p, b, t) = plan.track_of(i);
            Rc::new(Wanted {
                broadcast: plan.broadcast_path(p, b),
                track: Plan::track_name(t),
                last_frame: Cell::new(None),
            })
        })
        .collect();
    let sc = Rc::new(SubConn::new(conn.clone(), wanted.clone()));
    shard.subs.borrow_mut().push(sc.clone());
    let ic = Rc::new(IetfConn {
        sc,
        control: RefCell::new(None),
        next_request: Cell::new(0),
        max_request: Cell::new(0),
        pending: RefCell::new(HashMap::new()),
        aliases: RefCell::new(HashMap::new()),
        resubscribe: RefCell::new(wanted),
        waiters: RefCell::new(Vec::new()),
    });

    {
        let (shard, ic) = (shard.clone(), ic.clone());
        monoio::spawn(async move {
            while let Ok(recv) = ic.sc.conn.accept_uni().await {
                monoio::spawn(read_subgroup(shard.clone(), ic.clone(), recv));
            }
        });
    }
    {
        let (shard, ic) = (shard.clone(), ic.clone());
        let path = path.clone();
        monoio::spawn(async move { control(shard, ic, path).await });
    }
    let reason = conn.closed().await;
    ic.wake();
    if !shard.stopping() {
        shard.c.borrow_mut().sub_dropped += 1;
        shard.warn_once("subscriber connection closed", reason);
    }
}

/// The control stream: CLIENT_SETUP, then the relay's replies; a task of
/// its own sends the SUBSCRIBEs.
async fn control(shard: Rc<Shard>, ic: Rc<IetfConn>, path: String) {
    let Ok((mut send, mut recv)) = ic.sc.conn.open_bi().await else {
        return;
    };
    let mut parameters = vec![(PARAM_MAX_REQUEST_ID, ParameterValue::Varint(0))];
    if !path.is_empty() {
        parameters.push((PARAM_PATH, ParameterValue::Bytes(path.into_bytes())));
    }
    let setup = ClientSetup {
        versions: vec![V.wire()],
        parameters: Parameters(parameters),
    };
    if send.write_chunk(encode(&setup.into())).await.is_err() {
        return;
    }
    *ic.control.borrow_mut() = Some(send);
    let limits = Limits::default();
    let mut buf = BytesMut::new();
    let mut setup_done = false;
    loop {
        let msg = match ControlMessage::decode(&buf, V, &limits) {
            Ok((msg, used)) => {
                buf.advance(used);
                msg
            }
            Err(qumo::ietf::DecodeError::Short) => match recv.read_chunk(usize::MAX).await {
                Ok(Some(chunk)) => {
                    buf.extend_from_slice(&chunk);
                    continue;
                }
                _ => return,
            },
            Err(e) => {
                shard.warn_once("malformed control message", e);
                return;
            }
        };
        match msg {
            ControlMessage::ServerSetup(s) if !setup_done => {
                setup_done = true;
                if let Some(ParameterValue::Varint(max)) = s
                    .parameters
                    .0
                    .iter()
                    .find(|(k, _)| *k == PARAM_MAX_REQUEST_ID)
                    .map(|(_, v)| v)
                {
                    ic.max_request.set(*max);
                }
                monoio::spawn(subscriber_task(shard.clone(), ic.clone()));
            }
            ControlMessage::MaxRequestId(m) => {
                ic.max_request.set(ic.max_request.get().max(m.request_id));
                ic.wake();
            }
            ControlMessage::SubscribeOk(ok) => {
                if let Some(wanted) = ic.pending.borrow().get(&ok.request_id).cloned() {
                    let sub = Rc::new(Subscription::new(wanted, GroupTracker::new(LOSS_WINDOW)));
                    ic.aliases.borrow_mut().insert(ok.track_alias, sub);
                    ic.wake();
                }
            }
            ControlMessage::SubscribeError(e) => {
                if let Some(wanted) = ic.pending.borrow_mut().remove(&e.request_id) {
                    shard.c.borrow_mut().subscribe_retries += 1;
                    shard.warn_once("subscribe refused (retrying)", &wanted.broadcast);
                    retry_later(ic.clone(), wanted);
                }
            }
            ControlMessage::PublishDone(done) => {
                if let Some(wanted) = ic.pending.borrow_mut().remove(&done.request_id) {
                    shard.c.borrow_mut().subscriptions_ended += 1;
                    ic.aliases
                        .borrow_mut()
                        .retain(|_, s| !Rc::ptr_eq(&s.wanted, &wanted));
                    retry_later(ic.clone(), wanted);
                }
            }
            _ => {}
        }
    }
}

fn retry_later(ic: Rc<IetfConn>, wanted: Rc<Wanted>) {
    monoio::spawn(async move {
        monoio::time::sleep(Duration::from_millis(200)).await;
        ic.resubscribe.borrow_mut().push(wanted);
        ic.wake();
    });
}

/// Send a SUBSCRIBE for every track waiting for one, within the relay's
/// MAX_REQUEST_ID, until the run stops.
async fn subscriber_task(shard: Rc<Shard>, ic: Rc<IetfConn>) {
    loop {
        let next = poll_fn(|cx| {
            if shard.stopping() || ic.sc.conn.close_reason().is_some() {
                return Poll::Ready(None);
            }
            if ic.next_request.get() < ic.max_request.get() {
                if let Some(w) = ic.resubscribe.borrow_mut().pop() {
                    return Poll::Ready(Some(w));
                }
            }
            ic.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let Some(wanted) = next else { return };
        let request_id = ic.next_request.get();
        ic.next_request.set(request_id + 2);
        ic.pending.borrow_mut().insert(request_id, wanted.clone());
        shard.c.borrow_mut().subscribe_attempts += 1;
        let msg = Subscribe {
            request_id,
            namespace: qumo::ietf_session::bridge::path_to_namespace(&wanted.broadcast),
            name: wanted.track.clone(),
            subscriber_priority: 128,
            group_order: GroupOrder::Ascending,
            forward: true,
            filter: Filter::LargestObject,
            parameters: Parameters::default(),
        };
        let mut send = ic.control.borrow_mut().take();
        if let Some(s) = send.as_mut() {
            if s.write_chunk(encode(&msg.into())).await.is_err() {
                return;
            }
        }
        *ic.control.borrow_mut() = send;
    }
}

fn encode(msg: &ControlMessage) -> Bytes {
    let mut out = Vec::with_capacity(64);
    msg.encode(&mut out, V)
        .expect("the bench's control messages encode");
    Bytes::from(out)
}

/// One subgroup stream: its header, then objects whose payloads are the
/// publishers' frames.
async fn read_subgroup(shard: Rc<Shard>, ic: Rc<IetfConn>, mut recv: RecvStream) {
    let limits = Limits::default();
    let mut buf = BytesMut::new();
    let mut eof = false;
    // More bytes; false once the stream ended. A reset ends the task,
    // counted against `$sub`'s loss tracker once the group is known.
    macro_rules! fill {
        ($sub:expr) => {
            match recv.read_chunk(usize::MAX).await {
                Ok(Some(chunk)) => {
                    buf.extend_from_slice(&chunk);
                    true
                }
                Ok(None) => {
                    eof = true;
                    false
                }
                Err(ReadStreamError::Reset(_)) => return on_reset(&shard, $sub),
                Err(_) => return,
            }
        };
    }
    let header = loop {
        match SubgroupHeader::decode(&buf, V, &limits) {
            Ok((h, used)) => {
                buf.advance(used);
                break h;
            }
            Err(qumo::ietf::DecodeError::Short) => {
                if !fill!(None) {
                    return;
                }
            }
            Err(_) => {
                let _ = recv.stop(CODE_CANCEL);
                return;
            }
        }
    };
    // The SUBSCRIBE_OK naming the alias may still be on its way.
    let sub = poll_fn(|cx| {
        if let Some(sub) = ic.aliases.borrow().get(&header.track_alias) {
            return Poll::Ready(Some(sub.clone()));
        }
        if shard.stopping() || ic.sc.conn.close_reason().is_some() {
            return Poll::Ready(None);
        }
        ic.waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    });
    let sub = match monoio::time::timeout(Duration::from_secs(2), sub).await {
        Ok(Some(sub)) => sub,
        _ => {
            shard.c.borrow_mut().unknown_groups += 1;
            let _ = recv.stop(CODE_CANCEL);
            return;
        }
    };
    {
        let d = sub.tracker.borrow_mut().on_group(header.group);
        apply(&shard, d);
        let mut c = shard.c.borrow_mut();
        c.groups_started += 1;
        if !sub.delivered.replace(true) {
            c.subscriptions_started += 1;
        }
    }
    let expected = shard.plan.cfg.load.frames_per_group as u64;
    let mut frames = 0u64;
    let mut ok = true;
    loop {
        if buf.is_empty() && (eof || !fill!(Some(&sub))) {
            break;
        }
        let (object, used) = match SubgroupObject::decode(&buf, header.extensions, &limits) {
            Ok(decoded) => decoded,
            Err(qumo::ietf::DecodeError::Short) if !eof => {
                fill!(Some(&sub));
                continue;
            }
            Err(_) => {
                ok = false;
                break;
            }
        };
        let len = object.payload_len as usize;
        while buf.len() < used + len && !eof {
            fill!(Some(&sub));
        }
        if buf.len() < used + len {
            ok = false;
            break;
        }
        buf.advance(used);
        let payload = buf.split_to(len);
        if len == 0 {
            // A status object (end of group / track) carries no frame.
            continue;
        }
        let now = Instant::now();
        frames += 1;
        sub.wanted.last_frame.set(Some(now));
        shard.on_frame(now, len as u64, decode_stamp(&payload));
    }
    if shard.stopping() {
        return;
    }
    if ok && frames >= expected {
        shard.c.borrow_mut().groups_complete += 1;
    } else {
        if !ok {
            shard.warn_once(
                "malformed subgroup stream",
                format!("group {}", header.group),
            );
            let _ = recv.stop(CODE_CANCEL);
        }
        shard.c.borrow_mut().groups_incomplete += 1;
        let d = sub.tracker.borrow_mut().on_reset();
        apply(&shard, d);
    }
}

fn on_reset(shard: &Shard, sub: Option<&Subscription>) {
    if shard.stopping() {
        return;
    }
    shard.c.borrow_mut().groups_reset += 1;
    if let Some(sub) = sub {
        let d = sub.tracker.borrow_mut().on_reset();
        apply(shard, d);
    }
}
