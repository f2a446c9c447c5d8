//! One IETF session's shared state, which its tasks (`session`, `ingest`)
//! all hold: kept apart so neither task module imports the other.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::task::Waker;

use bytes::{Buf, Bytes, BytesMut};
use tracing::debug;

use super::bridge::{namespace_to_path, path_to_namespace};
use super::control::{ControlState, Violation};
use super::window::Window;
use crate::auth::{self, Grant};
use crate::ietf::{ControlMessage, DecodeError, SessionCode, Version};
use crate::lite::StreamCode;
use crate::message::{HubRef, SessionRef, TrackKey};
use crate::session::transport::{RecvStream, Transport};
use crate::shard::Shard;
use crate::task::{catch_unwind, race, Either, Signal};

/// Control messages queued for a peer that is not reading them.
const MAX_OUTBOX: usize = 1024;

pub(super) struct IetfSession<T: Transport> {
    pub(super) id: u64,
    /// The draft: 14 runs on one control stream, 22 on a stream per request.
    pub(super) version: Version,
    pub(super) transport: T,
    pub(super) shard: Rc<Shard>,
    pub(super) closed: Signal,
    /// Raised when the peer's SETUP (CLIENT_SETUP, or draft 22's SETUP
    /// stream) is accepted; until then `relay.setup_timeout` runs.
    pub(super) set_up: Signal,
    /// Control messages for the writer task, in order.
    pub(super) outbox: RefCell<VecDeque<ControlMessage>>,
    pub(super) outbox_waker: RefCell<Option<Waker>>,
    /// SUBSCRIBEs read but not yet answered, by Request ID, each waiting
    /// (bounded) for the shard's replica of its track to attach, so that
    /// SUBSCRIBE_OK's Largest is the track's and not an empty replica's, or
    /// (draft 22) for a publisher within RENDEZVOUS_TIMEOUT; the signal is
    /// raised when the wait is over. Counted in [`Self::requests_open`].
    pub(super) opening: RefCell<HashMap<u64, Rc<Signal>>>,
    /// Open subscriptions by Request ID.
    pub(super) subscriptions: RefCell<HashMap<u64, Rc<Subscription>>>,
    /// FETCHes being served, by Request ID: each one's cancel signal
    /// (FETCH_CANCEL on draft 14, a reset request stream on draft 22).
    pub(super) fetches: RefCell<HashMap<u64, Rc<Signal>>>,
    /// The control stream's rules; borrowed briefly, never across an await.
    pub(super) control: RefCell<ControlState>,
    /// SUBSCRIBE_NAMESPACE listeners open.
    pub(super) namespace_listeners: Cell<usize>,
    /// Draft 14: each open SUBSCRIBE_NAMESPACE by Request ID, with its
    /// normalised prefix and the signal UNSUBSCRIBE_NAMESPACE raises.
    pub(super) namespace_requests: RefCell<HashMap<u64, (String, Rc<Signal>)>>,
    /// The peer as a publisher: its namespaces and our upstream SUBSCRIBEs.
    pub(super) publishing: Publishing,
    /// The dialled path, normalised: the peer's namespaces are broadcast
    /// paths under it, as a lite session's names are under its root. Set
    /// when SETUP is authorised; `""` is the relay's whole namespace.
    pub(super) root: RefCell<String>,
    /// What the peer may publish and subscribe, relative to `root`; nothing
    /// until its SETUP is authorised.
    pub(super) grant: OnceCell<Grant>,
}

pub(super) struct Subscription {
    pub(super) request_id: u64,
    pub(super) track_alias: u64,
    /// The lite priority its streams are sent with; an update changes it,
    /// for open streams too.
    pub(super) priority: Cell<u8>,
    /// Whether groups are sent (FORWARD); while false, arriving groups are
    /// passed over.
    pub(super) forward: Cell<bool>,
    /// Which groups and objects it delivers.
    pub(super) window: Cell<Window>,
    /// The task serving it, woken when an update changes the above.
    pub(super) changed: RefCell<Option<Waker>>,
    pub(super) cancelled: Signal,
    /// Subgroup streams opened so far (PUBLISH_DONE's Stream Count).
    pub(super) streams: Cell<u64>,
    /// Of those, the ones still being written: a range that is over waits
    /// for them before it lets go of the track.
    pub(super) writing: Cell<u64>,
    /// The track, for a joining FETCH.
    pub(super) key: TrackKey,
    /// The newest group when the subscription opened (SUBSCRIBE_OK's
    /// Largest), from which a relative joining FETCH counts back.
    pub(super) largest_group: Option<u64>,
    /// The first group the subscription delivers, once it is chosen: a
    /// joining FETCH ends right before it, so the two neither overlap nor
    /// leave a gap. `joined` is raised when it is set.
    pub(super) join_group: Cell<Option<u64>>,
    pub(super) joined: Signal,
}

impl Subscription {
    /// An update changed it: the serving task looks again.
    pub(super) fn wake(&self) {
        if let Some(waker) = self.changed.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Record the first group this subscription delivers (once).
    pub(super) fn join_at(&self, group: u64) {
        if self.join_group.get().is_none() {
            self.join_group.set(Some(group));
            self.joined.raise();
        }
    }
}

impl<T: Transport> IetfSession<T> {
    pub(super) fn session_ref(&self) -> SessionRef {
        SessionRef {
            shard: self.shard.index(),
            id: self.id,
        }
    }

    /// The peer's grant: nothing until SETUP is authorised.
    pub(super) fn grant(&self) -> &Grant {
        self.grant.get().unwrap_or(&auth::NOTHING)
    }

    /// The broadcast a namespace tuple names for this peer: its path
    /// relative to the root (what the grant is checked against) and the
    /// relay's absolute path.
    pub(super) fn broadcast_of(&self, namespace: &[String]) -> (String, String) {
        let relative = crate::origin::normalize(&namespace_to_path(namespace));
        let absolute = crate::origin::join(&self.root.borrow(), &relative);
        (relative, absolute)
    }

    /// The namespace tuple this peer knows a relay broadcast by: the path
    /// under its root. The relay only names broadcasts under the root to it.
    pub(super) fn namespace_of(&self, broadcast: &str) -> Vec<String> {
        let root = self.root.borrow();
        path_to_namespace(crate::origin::strip_prefix(broadcast, &root).unwrap_or(broadcast))
    }

    /// Count request `id` in `opening` until the guard drops (its task
    /// ended or was dropped), raising its signal then.
    pub(super) fn hold_opening(self: &Rc<Self>, id: u64) -> OpeningSlot<T> {
        let settled = Rc::new(Signal::default());
        self.opening.borrow_mut().insert(id, settled.clone());
        OpeningSlot {
            session: self.clone(),
            id,
            settled,
        }
    }

    /// Subscriptions and FETCHes open: what `max_subscriptions_per_session`
    /// bounds.
    pub(super) fn requests_open(&self) -> usize {
        self.subscriptions.borrow().len()
            + self.opening.borrow().len()
            + self.fetches.borrow().len()
    }

    pub(super) fn send(&self, msg: ControlMessage) {
        // A peer that sends requests but never reads the answers would grow
        // the queue without end: it is closed instead.
        if self.outbox.borrow().len() >= MAX_OUTBOX {
            return self.close(SessionCode::TOO_MANY_REQUESTS, "control replies not read");
        }
        self.outbox.borrow_mut().push_back(msg);
        if let Some(waker) = self.outbox_waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Wait for the transport to close or the session to be closed.
    pub(super) async fn run_until_closed(&self) {
        match race(self.transport.closed(), self.closed.raised()).await {
            Either::Left(()) => self.closed.raise(),
            Either::Right(()) => {}
        }
    }

    pub(super) fn close(&self, code: SessionCode, reason: &str) {
        debug!(session = self.id, %code, reason, "closing ietf session");
        self.transport
            .close(crate::lite::SessionCode(code.0), reason);
        self.closed.raise();
    }

    pub(super) fn violation(&self, v: Violation) {
        self.shard.stats.sessions_protocol_violations.inc();
        self.close(v.code, v.reason);
    }

    pub(super) fn stream_code(&self, code: u32) -> qumo_shards::VarInt {
        self.transport.stream_code(StreamCode(code))
    }

    /// A task of this session: a panic in it closes the session, not the shard.
    pub(super) fn spawn(self: &Rc<Self>, task: impl std::future::Future<Output = ()> + 'static) {
        let session = self.clone();
        monoio::spawn(async move {
            if let Err(panic) = catch_unwind(task).await {
                tracing::error!(session = session.id, %panic, "ietf session task panicked");
                session.shard.stats.sessions_panicked.inc();
                session.close(SessionCode::INTERNAL_ERROR, "internal error");
            }
        });
    }
}

/// The publishing half's state.
#[derive(Default)]
pub(super) struct Publishing {
    /// Namespaces the peer published with PUBLISH_NAMESPACE.
    pub(super) announced: RefCell<HashSet<String>>,
    /// Why each broadcast path is in the announce table: one hold per
    /// PUBLISH_NAMESPACE and one per PUBLISH under it. Announced on the
    /// first hold, withdrawn when the last is released.
    pub(super) holds: RefCell<HashMap<String, usize>>,
    /// PUBLISHes not yet accepted, by track: answered with PUBLISH_OK when
    /// the router first wants the track.
    pub(super) offered: RefCell<HashMap<TrackKey, Offered>>,
    /// The broadcast path of each PUBLISH by Request ID, until PUBLISH_DONE.
    pub(super) published: RefCell<HashMap<u64, String>>,
    /// Our upstream SUBSCRIBEs by Request ID.
    pub(super) upstreams: RefCell<HashMap<u64, Rc<Upstream>>>,
    /// The Request ID of each hub's upstream.
    pub(super) by_hub: RefCell<HashMap<HubRef, u64>>,
    /// Track aliases from SUBSCRIBE_OK, to Request IDs.
    pub(super) aliases: RefCell<HashMap<u64, u64>>,
    /// Draft 22: upstream SUBSCRIBEs sent so far (ours are odd: 1, 3, 5...;
    /// draft 14 takes them from the control state instead).
    pub(super) sent_requests: Cell<u64>,
    /// Subgroup streams waiting for a SUBSCRIBE_OK to name their alias:
    /// woken whenever one is learnt.
    pub(super) alias_waiters: RefCell<Vec<Waker>>,
    /// Draft 22: the Forward state wanted for each open PUBLISH, by its
    /// Request ID; the task that owns the PUBLISH's stream sends it.
    pub(super) forward22: RefCell<HashMap<u64, Rc<WantedForward>>>,
}

impl Publishing {
    /// Draft 22: the next Request ID of ours (odd: 1, 3, 5...), for an
    /// upstream SUBSCRIBE or a REQUEST_UPDATE, which takes one too.
    pub(super) fn next_request_id22(&self) -> u64 {
        let sent = self.sent_requests.get();
        self.sent_requests.set(sent + 1);
        2 * sent + 1
    }

    /// The Request ID whose SUBSCRIBE_OK named `alias`, if it is open.
    pub(super) fn upstream_for_alias(&self, alias: u64) -> Option<Rc<Upstream>> {
        let id = *self.aliases.borrow().get(&alias)?;
        self.upstreams.borrow().get(&id).cloned()
    }

    /// Whether some upstream SUBSCRIBE still waits for its SUBSCRIBE_OK,
    /// so an unknown alias may yet become known.
    pub(super) fn awaiting_alias(&self) -> bool {
        let aliases = self.aliases.borrow();
        self.upstreams
            .borrow()
            .keys()
            .any(|id| !aliases.values().any(|v| v == id))
    }

    /// An alias was learnt (or an upstream ended): waiting streams look again.
    pub(super) fn wake_alias_waiters(&self) {
        for waker in self.alias_waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }
}

/// A PUBLISH waiting for a subscriber (draft 14 section 9.13).
pub(super) struct Offered {
    pub(super) request_id: u64,
    pub(super) track_alias: u64,
}

/// Draft 22: whether the router wants a PUBLISH's objects. Draft 20 took
/// Forward out of PUBLISH_OK; the subscriber sets it with REQUEST_UPDATE on
/// the PUBLISH's own stream, whose task waits here for a change.
#[derive(Default)]
pub(super) struct WantedForward {
    wanted: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl WantedForward {
    pub(super) fn get(&self) -> bool {
        self.wanted.get()
    }

    pub(super) fn set(&self, forward: bool) {
        self.wanted.set(forward);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Ready once the wanted state is not `sent`.
    pub(super) async fn differs_from(&self, sent: bool) {
        std::future::poll_fn(|cx| {
            if self.wanted.get() != sent {
                return std::task::Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }
}

pub(super) struct Upstream {
    pub(super) hub: HubRef,
    pub(super) key: TrackKey,
    pub(super) cancelled: Signal,
    /// Its subgroup streams that have ended here (read to the end, or
    /// given up), which a PUBLISH_DONE's Stream Count waits for.
    pub(super) streams_ended: Cell<u64>,
    /// The task waiting for that count, woken as each stream ends.
    pub(super) stream_ended: RefCell<Option<Waker>>,
}

/// One incoming stream, decoded message by message.
pub(super) struct Incoming<R> {
    pub(super) recv: R,
    pub(super) buf: BytesMut,
}

impl<R: RecvStream> Incoming<R> {
    /// More bytes; `Ok(false)` at the stream's end.
    pub(super) async fn fill(&mut self) -> Result<bool, ()> {
        match self.recv.read_chunk(usize::MAX).await {
            Ok(Some(chunk)) => {
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(_) => Err(()),
        }
    }

    /// The next message; `Err(Some)` malformed, `Err(None)` the stream ended
    /// or failed first.
    pub(super) async fn decode<M>(
        &mut self,
        f: impl Fn(&[u8]) -> Result<(M, usize), DecodeError>,
    ) -> Result<M, Option<DecodeError>> {
        loop {
            match f(&self.buf) {
                Ok((msg, used)) => {
                    self.buf.advance(used);
                    return Ok(msg);
                }
                Err(DecodeError::Short) => match self.fill().await {
                    Ok(true) => {}
                    Ok(false) | Err(()) => return Err(None),
                },
                Err(e) => return Err(Some(e)),
            }
        }
    }

    pub(super) async fn payload(&mut self, len: usize) -> Result<Bytes, ()> {
        while self.buf.len() < len {
            if !self.fill().await? {
                return Err(());
            }
        }
        Ok(self.buf.split_to(len).freeze())
    }

    pub(super) async fn at_end(&mut self) -> Result<bool, ()> {
        Ok(self.buf.is_empty() && !self.fill().await?)
    }

    pub(super) fn stop<T: Transport<Recv = R>>(&mut self, session: &IetfSession<T>, code: u32) {
        let _ = self.recv.stop(session.stream_code(code));
    }
}

/// A request counted in [`IetfSession::opening`]; see
/// [`IetfSession::hold_opening`].
pub(super) struct OpeningSlot<T: Transport> {
    session: Rc<IetfSession<T>>,
    id: u64,
    settled: Rc<Signal>,
}

impl<T: Transport> OpeningSlot<T> {
    pub(super) fn session(&self) -> &Rc<IetfSession<T>> {
        &self.session
    }
}

impl<T: Transport> Drop for OpeningSlot<T> {
    fn drop(&mut self) {
        self.session.opening.borrow_mut().remove(&self.id);
        self.settled.raise();
    }
}
