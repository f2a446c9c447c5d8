//! A subscriber connection speaking IETF moq-transport through qumo's own
//! codecs (`qumo::ietf`), draft 14 (ALPN `moq-00`, `--protocol ietf-14`) or
//! draft 22 (ALPN `moqt-22`, `--protocol ietf-22`): a SUBSCRIBE per wanted
//! track (again after a refusal or PUBLISH_DONE), and every subgroup stream
//! read object by object. Draft 14 sends its SUBSCRIBEs on one control
//! stream; draft 22 opens a SETUP uni stream and a bidi stream per
//! SUBSCRIBE, whose replies come back on it. The publishers stay moq-lite, so
//! a run measures the relay's lite ⇒ IETF path. Counting is the lite
//! subscriber's ([`crate::subscriber`]): the objects' payloads are the
//! publishers' frames, send stamp first.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use qumo::ietf::draft22;
use qumo::ietf::{
    ClientSetup, ControlMessage, Decode, DecodeError, Encode, Filter, GroupOrder, Limits,
    ParameterValue, Parameters, SubgroupHeader, SubgroupObject, Subscribe, Version,
    PARAM_MAX_REQUEST_ID, PARAM_PATH,
};
use qumo_shards::{ReadStreamError, ShardContext};

use crate::args::Protocol;
use crate::loss::GroupTracker;
use crate::payload::decode_stamp;
use crate::plan::Shard;
use crate::session::CODE_CANCEL;
use crate::subscriber::{
    dial, frame_arrived, group_ended, group_reset, group_started, until_closed, wanted_tracks,
    SubConn, Subscription, Wanted, LOSS_WINDOW,
};
use crate::transport::{BenchConn as Connection, BenchRecv as RecvStream, BenchSend};

const V: Version = Version::Draft14;

/// An IETF subscriber's session: the SubConn the run's accounting reads,
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

    /// The next track to subscribe (again) and the Request ID to use,
    /// counted as an attempt; `limited` waits for the relay's
    /// MAX_REQUEST_ID (draft 14) to allow it. `None` once the run stops.
    async fn next_subscribe(&self, shard: &Shard, limited: bool) -> Option<(u64, Rc<Wanted>)> {
        let wanted = poll_fn(|cx| {
            if shard.stopping() || self.sc.conn.close_reason().is_some() {
                return Poll::Ready(None);
            }
            if !limited || self.next_request.get() < self.max_request.get() {
                if let Some(w) = self.resubscribe.borrow_mut().pop() {
                    return Poll::Ready(Some(w));
                }
            }
            self.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        let request_id = self.next_request.get();
        self.next_request.set(request_id + 2);
        shard.c.borrow_mut().subscribe_attempts += 1;
        Some((request_id, wanted))
    }
}

pub async fn run_ietf_subscriber(shard: Rc<Shard>, ctx: ShardContext<()>, j: usize) {
    let plan = shard.plan.clone();
    let (relay, path) = plan.subscriber_relay(j);
    let path = path.to_string();
    let tls = plan.subscriber_tls.clone();
    let Some(conn) = dial(&shard, j, Connection::connect_tls(&plan, &ctx, relay, tls)).await else {
        return;
    };
    let wanted = wanted_tracks(&plan, j);
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
    let draft22 = plan.cfg.protocol == Protocol::Ietf22;
    {
        let (shard, ic) = (shard.clone(), ic.clone());
        monoio::spawn(async move {
            while let Ok(recv) = ic.sc.conn.accept_uni().await {
                monoio::spawn(read_subgroup(shard.clone(), ic.clone(), recv, draft22));
            }
        });
    }
    {
        let (shard, ic) = (shard.clone(), ic.clone());
        match draft22 {
            false => monoio::spawn(async move { control(shard, ic, path).await }),
            true => monoio::spawn(async move { setup22(shard, ic, path).await }),
        };
    }
    until_closed(&shard, &conn).await;
    ic.wake();
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
        let next = next_message(&mut recv, &mut buf, |b| {
            ControlMessage::decode(b, V, &limits)
        });
        let msg = match next.await {
            Ok(msg) => msg,
            Err(None) => return,
            Err(Some(e)) => {
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

/// The next message `decode` finds on `recv`, reading more as needed;
/// `Err(None)` once the stream ended or failed, `Err(Some)` if malformed.
async fn next_message<M>(
    recv: &mut RecvStream,
    buf: &mut BytesMut,
    decode: impl Fn(&[u8]) -> Result<(M, usize), DecodeError>,
) -> Result<M, Option<DecodeError>> {
    loop {
        match decode(buf) {
            Ok((msg, used)) => {
                buf.advance(used);
                return Ok(msg);
            }
            Err(DecodeError::Short) => match recv.read_chunk(usize::MAX).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                _ => return Err(None),
            },
            Err(e) => return Err(Some(e)),
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
    while let Some((request_id, wanted)) = ic.next_subscribe(&shard, true).await {
        ic.pending.borrow_mut().insert(request_id, wanted.clone());
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

/// Draft 22: our SETUP on a uni stream of its own (kept open: GOAWAY would
/// ride it), then a task per SUBSCRIBE. The relay's SETUP arrives on a uni
/// stream, which [`read_subgroup`] drains.
async fn setup22(shard: Rc<Shard>, ic: Rc<IetfConn>, path: String) {
    let Ok(mut send) = ic.sc.conn.open_uni().await else {
        return;
    };
    let mut options = Vec::new();
    if !path.is_empty() {
        options.push((PARAM_PATH, ParameterValue::Bytes(path.into_bytes())));
    }
    let setup = draft22::Setup {
        parameters: Parameters(options),
    };
    if send.write_chunk(encode22(&setup)).await.is_err() {
        return;
    }
    *ic.control.borrow_mut() = Some(send);
    // No MAX_REQUEST_ID on draft 22: QUIC's bidi stream limit bounds requests.
    while let Some((request_id, wanted)) = ic.next_subscribe(&shard, false).await {
        monoio::spawn(subscribe22(shard.clone(), ic.clone(), request_id, wanted));
    }
}

/// Draft 22: one SUBSCRIBE on its own bidi stream, its replies read there
/// until PUBLISH_DONE, a refusal or the stream's end, then tried again.
async fn subscribe22(shard: Rc<Shard>, ic: Rc<IetfConn>, request_id: u64, wanted: Rc<Wanted>) {
    let Ok((mut send, mut recv)) = ic.sc.conn.open_bi().await else {
        return;
    };
    let request = draft22::Subscribe {
        request_id,
        namespace: qumo::ietf_session::bridge::path_to_namespace(&wanted.broadcast),
        name: wanted.track.clone(),
        parameters: draft22::MessageParameters(vec![(
            draft22::param::LOCATION_FILTER,
            draft22::ParamValue::Filter(draft22::LocationFilter::NextObject),
        )]),
    };
    if send.write_chunk(encode22(&request)).await.is_err() {
        return;
    }
    let limits = Limits::default();
    let mut buf = BytesMut::new();
    let mut alias = None;
    loop {
        use draft22::Decode as _;
        let next = next_message(&mut recv, &mut buf, |b| {
            draft22::RequestMessage::decode(b, &limits)
        });
        let reply = match next.await {
            Ok(reply) => reply,
            Err(None) => break,
            Err(Some(e)) => {
                shard.warn_once("malformed draft-22 reply", e);
                break;
            }
        };
        match reply {
            draft22::RequestMessage::SubscribeOk(ok) => {
                let sub = Rc::new(Subscription::new(
                    wanted.clone(),
                    GroupTracker::new(LOSS_WINDOW),
                ));
                ic.aliases.borrow_mut().insert(ok.track_alias, sub);
                alias = Some(ok.track_alias);
                ic.wake();
            }
            draft22::RequestMessage::RequestError(_) => {
                shard.c.borrow_mut().subscribe_retries += 1;
                shard.warn_once("subscribe refused (retrying)", &wanted.broadcast);
                break;
            }
            draft22::RequestMessage::PublishDone(_) => {
                shard.c.borrow_mut().subscriptions_ended += 1;
                break;
            }
            _ => {}
        }
    }
    if let Some(alias) = alias {
        ic.aliases.borrow_mut().remove(&alias);
    }
    if !shard.stopping() {
        retry_later(ic, wanted);
    }
}

fn encode22(msg: &impl draft22::Encode) -> Bytes {
    Bytes::from(msg.to_vec().expect("the bench's draft-22 messages encode"))
}

fn encode(msg: &ControlMessage) -> Bytes {
    let mut out = Vec::with_capacity(64);
    msg.encode(&mut out, V)
        .expect("the bench's control messages encode");
    Bytes::from(out)
}

/// The header fields a subgroup stream's reader needs, in either draft.
struct Header {
    track_alias: u64,
    group: u64,
    extensions: bool,
}

/// What opens a uni stream from the relay.
enum Opening {
    Subgroup(Header),
    /// Draft 22: the relay's SETUP stream, or padding: drained unread.
    NotData,
}

fn decode_opening(
    buf: &[u8],
    draft22: bool,
    limits: &Limits,
) -> Result<(Opening, usize), DecodeError> {
    if !draft22 {
        return SubgroupHeader::decode(buf, V, limits).map(|(h, used)| {
            let header = Header {
                track_alias: h.track_alias,
                group: h.group,
                extensions: h.extensions,
            };
            (Opening::Subgroup(header), used)
        });
    }
    use draft22::Decode as _;
    match draft22::peek_type(buf)? {
        draft22::SETUP_TYPE | draft22::PADDING_STREAM_TYPE => Ok((Opening::NotData, 0)),
        _ => draft22::SubgroupHeader::decode(buf, limits).map(|(h, used)| {
            let header = Header {
                track_alias: h.track_alias,
                group: h.group,
                extensions: h.extensions,
            };
            (Opening::Subgroup(header), used)
        }),
    }
}

fn decode_object(
    buf: &[u8],
    extensions: bool,
    draft22: bool,
    limits: &Limits,
) -> Result<(SubgroupObject, usize), DecodeError> {
    match draft22 {
        false => SubgroupObject::decode(buf, extensions, limits),
        true => draft22::decode_object(buf, extensions, limits),
    }
}

/// One subgroup stream: its header, then objects whose payloads are the
/// publishers' frames.
async fn read_subgroup(shard: Rc<Shard>, ic: Rc<IetfConn>, mut recv: RecvStream, draft22: bool) {
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
                Err(ReadStreamError::Reset(_)) => return group_reset(&shard, $sub),
                Err(_) => return,
            }
        };
    }
    let header = loop {
        match decode_opening(&buf, draft22, &limits) {
            Ok((Opening::Subgroup(h), used)) => {
                buf.advance(used);
                break h;
            }
            Ok((Opening::NotData, _)) => {
                while let Ok(Some(_)) = recv.read_chunk(usize::MAX).await {}
                return;
            }
            Err(DecodeError::Short) => {
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
    group_started(&shard, &sub, header.group);
    let expected = shard.plan.cfg.load.frames_per_group as u64;
    let mut frames = 0u64;
    let mut ok = true;
    loop {
        if buf.is_empty() && (eof || !fill!(Some(&sub))) {
            break;
        }
        let (object, used) = match decode_object(&buf, header.extensions, draft22, &limits) {
            Ok(decoded) => decoded,
            Err(DecodeError::Short) if !eof => {
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
        frames += 1;
        frame_arrived(&shard, &sub.wanted, len as u64, decode_stamp(&payload));
    }
    if !ok && !shard.stopping() {
        shard.warn_once(
            "malformed subgroup stream",
            format!("group {}", header.group),
        );
        let _ = recv.stop(CODE_CANCEL);
    }
    group_ended(&shard, &sub, ok && frames >= expected);
}
