//! The draft-14 session on in-memory transports: the relay side is
//! [`session::run`](super::session::run) on one end of a `MemoryTransport`
//! pair; the other end is a scripted IETF subscriber using the relay's codec,
//! and tracks come from a scripted moq-lite publisher (the lite session tests'
//! own). Every wait has a deadline; no sleeps.

use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};

use super::control::ControlState;
use crate::ietf::{
    ControlMessage, Decode, Encode, Filter, GroupOrder, Limits, Location, Parameters, Publish,
    PublishDone, PublishNamespace, SessionCode, SubgroupHeader, SubgroupId, SubgroupObject,
    Subscribe, SubscribeOk, Unsubscribe, Version,
};
use crate::session::memory::{MemoryLimits, MemoryRecv, MemorySend, MemoryTransport};
use crate::session::tests::{
    frames, settings, shard, within, Peer, Publisher, Reader, ReceivedGroup, BROADCAST,
};
use crate::session::transport::{RecvStream, SendStream, Transport};
use crate::shard::Shard;

pub(super) const V: Version = Version::Draft14;

pub(super) fn limits() -> Limits {
    settings().limits
}

/// Bytes of one stream, decoded message by message.
pub(super) struct Incoming {
    recv: MemoryRecv,
    pub(super) buf: BytesMut,
}

impl Incoming {
    pub(super) fn new(recv: MemoryRecv, leftover: Bytes) -> Self {
        Incoming {
            recv,
            buf: BytesMut::from(&leftover[..]),
        }
    }

    /// More bytes; false at the stream's end.
    async fn fill(&mut self) -> bool {
        match within("stream bytes", self.recv.read_chunk(usize::MAX)).await {
            Ok(Some(chunk)) => {
                self.buf.extend_from_slice(&chunk);
                true
            }
            Ok(None) => false,
            Err(e) => panic!("stream failed: {e}"),
        }
    }

    pub(super) async fn decode<M>(
        &mut self,
        f: impl Fn(&[u8]) -> Result<(M, usize), crate::ietf::DecodeError>,
    ) -> M {
        loop {
            match f(&self.buf) {
                Ok((msg, used)) => {
                    self.buf.advance(used);
                    return msg;
                }
                Err(crate::ietf::DecodeError::Short) => {
                    assert!(self.fill().await, "stream ended mid-message");
                }
                Err(e) => panic!("undecodable: {e}"),
            }
        }
    }

    async fn control(&mut self) -> ControlMessage {
        let limits = limits();
        self.decode(|b| ControlMessage::decode(b, V, &limits)).await
    }

    pub(super) async fn payload(&mut self, len: usize) -> Bytes {
        while self.buf.len() < len {
            assert!(self.fill().await, "stream ended mid-payload");
        }
        self.buf.split_to(len).freeze()
    }

    pub(super) async fn at_end(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}

/// A scripted draft-14 client on the far end of a memory pair.
pub(super) struct Client {
    pub(super) transport: MemoryTransport,
    pub(super) control: MemorySend,
    replies: Incoming,
}

impl Client {
    /// Start a relay IETF session and do the SETUP exchange.
    pub(super) async fn connect(shard: &Rc<Shard>) -> Client {
        let (relay, transport) = MemoryTransport::pair();
        monoio::spawn(super::session::run(shard.clone(), relay, false));
        let (mut control, recv) = transport.open_bi().await.unwrap();
        let (_, setup) = ControlState::client(100, false, None);
        control
            .write_chunk(Bytes::from(setup.to_vec(V).unwrap()))
            .await
            .unwrap();
        let mut replies = Incoming::new(recv, Bytes::new());
        let reply = replies.control().await;
        assert!(
            matches!(&reply, ControlMessage::ServerSetup(s) if s.version == V.wire()),
            "{reply:?}"
        );
        Client {
            transport,
            control,
            replies,
        }
    }

    pub(super) async fn send(&mut self, msg: ControlMessage) {
        self.control
            .write_chunk(Bytes::from(msg.to_vec(V).unwrap()))
            .await
            .unwrap();
    }

    /// The next reply that is not a MAX_REQUEST_ID top-up.
    pub(super) async fn reply(&mut self) -> ControlMessage {
        loop {
            match self.replies.control().await {
                ControlMessage::MaxRequestId(_) => continue,
                msg => return msg,
            }
        }
    }
}

pub(super) fn subscribe(
    request_id: u64,
    namespace: &str,
    name: &str,
    filter: Filter,
) -> ControlMessage {
    Subscribe {
        request_id,
        namespace: vec![namespace.into()],
        name: name.into(),
        subscriber_priority: 128,
        group_order: GroupOrder::Ascending,
        forward: true,
        filter,
        parameters: Parameters::default(),
    }
    .into()
}

#[monoio::test(enable_timer = true)]
async fn a_lite_publishers_track_reaches_an_ietf_subscriber_as_subgroup_streams() {
    let shard = shard(settings());
    let publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
    let mut client = Client::connect(&shard).await;
    client
        .send(subscribe(0, BROADCAST, "video", Filter::LargestObject))
        .await;
    let ok = match client.reply().await {
        ControlMessage::SubscribeOk(ok) => ok,
        other => panic!("expected SUBSCRIBE_OK, got {other:?}"),
    };
    assert_eq!((ok.request_id, ok.largest), (0, None));
    let (upstream, _send, _reader) = within("upstream SUBSCRIBE", publisher.next_subscribe()).await;
    assert_eq!(
        (upstream.broadcast.as_str(), upstream.track.as_str()),
        (BROADCAST, "video")
    );

    let sent = frames(3, 200);
    let mut group = publisher.send_group(upstream.id, 4, &sent).await;
    group.finish().unwrap();

    let (recv, leftover) = within("a subgroup stream", client.transport.accept_uni())
        .await
        .unwrap();
    let mut stream = Incoming::new(recv, leftover);
    let limits = limits();
    let header = stream
        .decode(|b| SubgroupHeader::decode(b, V, &limits))
        .await;
    assert_eq!(
        (
            header.track_alias,
            header.group,
            header.subgroup,
            header.end_of_group
        ),
        (ok.track_alias, 4, SubgroupId::Zero, true)
    );
    for (_, payload) in &sent {
        let object = stream
            .decode(|b| SubgroupObject::decode(b, header.extensions, &limits))
            .await;
        assert_eq!(object.object_id_delta, 0, "frames are objects 0, 1, 2...");
        let got = stream.payload(object.payload_len as usize).await;
        assert_eq!(&got, payload);
    }
    assert!(stream.at_end().await, "FIN ends the group");

    // The publisher leaving ends the track: PUBLISH_DONE counts the one stream.
    publisher
        .peer
        .transport
        .close(crate::lite::SessionCode::CANCEL, "gone");
    match client.reply().await {
        ControlMessage::PublishDone(done) => {
            assert_eq!(
                (done.request_id, done.status, done.stream_count),
                (0, 0x2, 1)
            );
        }
        other => panic!("expected PUBLISH_DONE, got {other:?}"),
    }
}

#[monoio::test(enable_timer = true)]
async fn unsubscribe_releases_the_upstream_subscription() {
    let shard = shard(settings());
    let publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
    let mut client = Client::connect(&shard).await;
    client
        .send(subscribe(0, BROADCAST, "video", Filter::NextGroupStart))
        .await;
    assert!(matches!(
        client.reply().await,
        ControlMessage::SubscribeOk(_)
    ));
    let (_upstream, _send, mut reader) =
        within("upstream SUBSCRIBE", publisher.next_subscribe()).await;
    client.send(Unsubscribe { request_id: 0 }.into()).await;
    // The relay's last subscriber left: it ends its upstream SUBSCRIBE.
    let _ = within("upstream released", reader.discard_to_end()).await;
}

#[monoio::test(enable_timer = true)]
async fn unknown_tracks_and_bad_ranges_are_refused_alone() {
    let shard = shard(settings());
    let _publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
    let mut client = Client::connect(&shard).await;
    client
        .send(subscribe(0, "nobody", "video", Filter::LargestObject))
        .await;
    match client.reply().await {
        ControlMessage::SubscribeError(e) => assert_eq!((e.request_id, e.code), (0, 0x4)),
        other => panic!("expected SUBSCRIBE_ERROR, got {other:?}"),
    }
    let start = Location {
        group: 0,
        object: 0,
    };
    // A range that ends before it starts: INVALID_RANGE.
    let range = Filter::AbsoluteRange {
        start: Location { group: 5, ..start },
        end_group: 4,
    };
    client.send(subscribe(2, BROADCAST, "video", range)).await;
    match client.reply().await {
        ControlMessage::SubscribeError(e) => assert_eq!((e.request_id, e.code), (2, 0x5)),
        other => panic!("expected SUBSCRIBE_ERROR, got {other:?}"),
    }
    // The session is still up: a good request is still answered.
    client
        .send(subscribe(4, BROADCAST, "video", Filter::LargestObject))
        .await;
    assert!(matches!(
        client.reply().await,
        ControlMessage::SubscribeOk(_)
    ));
}

#[monoio::test(enable_timer = true)]
async fn malformed_or_out_of_order_control_closes_with_protocol_violation() {
    let shard = shard(settings());
    // An unknown message type after SETUP.
    let mut client = Client::connect(&shard).await;
    client
        .control
        .write_chunk(Bytes::from_static(&[0x3f, 0, 0]))
        .await
        .unwrap();
    within("close", client.transport.closed()).await;
    let close = client.transport.close_reason().unwrap();
    assert_eq!(close.code.0, SessionCode::PROTOCOL_VIOLATION.0);

    // A request ID out of sequence (the client's first is 0).
    let mut client = Client::connect(&shard).await;
    client
        .send(subscribe(6, BROADCAST, "video", Filter::LargestObject))
        .await;
    within("close", client.transport.closed()).await;
    let close = client.transport.close_reason().unwrap();
    assert_eq!(close.code.0, SessionCode::INVALID_REQUEST_ID.0);
}

/// An IETF publisher of BROADCAST with a lite subscriber to its "video"
/// track: returns once the relay has sent its upstream SUBSCRIBE, with the
/// lite subscription's stream (dropping it unsubscribes).
async fn ietf_publisher_with_lite_subscriber(
    shard: &Rc<Shard>,
) -> (Client, Peer, (MemorySend, Reader), Subscribe) {
    let mut client = Client::connect(shard).await;
    client
        .send(
            PublishNamespace {
                request_id: 0,
                namespace: vec![BROADCAST.into()],
                parameters: Parameters::default(),
            }
            .into(),
        )
        .await;
    assert!(matches!(
        client.reply().await,
        ControlMessage::PublishNamespaceOk(ok) if ok.request_id == 0
    ));

    let subscriber = Peer::connect(shard, crate::lite::Version::Lite06, MemoryLimits::default())
        .await
        .0;
    let _announce = subscriber.wait_announced().await;
    let subscription = subscriber.open_subscribe(7, "video").await;

    // The relay subscribes upstream over draft 14 (its Request IDs are odd).
    let request = match client.reply().await {
        ControlMessage::Subscribe(request) => request,
        other => panic!("expected SUBSCRIBE, got {other:?}"),
    };
    assert_eq!(
        (
            request.request_id,
            request.namespace.as_slice(),
            request.name.as_str()
        ),
        (1, &[BROADCAST.to_string()][..], "video")
    );
    (client, subscriber, subscription, request)
}

fn subscribe_ok(request: &Subscribe, track_alias: u64) -> ControlMessage {
    SubscribeOk {
        request_id: request.request_id,
        track_alias,
        expires: 0,
        group_order: GroupOrder::Ascending,
        largest: None,
        parameters: Parameters::default(),
    }
    .into()
}

/// Group `group` of `frames` on a subgroup stream for `alias`, FIN at the end.
async fn send_subgroup(client: &Client, alias: u64, group: u64, frames: &[(u64, Bytes)]) {
    let mut data = Vec::new();
    super::bridge::subgroup_for_group(alias, group, 0)
        .encode(&mut data, V)
        .unwrap();
    for (_, payload) in frames {
        super::bridge::object_for_frame(payload.len() as u64)
            .encode(&mut data)
            .unwrap();
        data.extend_from_slice(payload);
    }
    let mut stream = client.transport.open_uni().await.unwrap();
    stream.write_chunk(Bytes::from(data)).await.unwrap();
    stream.finish().unwrap();
}

/// As [`send_subgroup`], in draft 22's layout.
async fn send_subgroup22(
    transport: &MemoryTransport,
    alias: u64,
    group: u64,
    frames: &[(u64, Bytes)],
) {
    use crate::ietf::draft22::Encode as _;
    let mut data = Vec::new();
    super::bridge::draft22_subgroup(&super::bridge::subgroup_for_group(alias, group, 0))
        .encode(&mut data)
        .unwrap();
    for (_, payload) in frames {
        crate::ietf::draft22::encode_object(
            &super::bridge::object_for_frame(payload.len() as u64),
            &mut data,
        )
        .unwrap();
        data.extend_from_slice(payload);
    }
    let mut stream = transport.open_uni().await.unwrap();
    stream.write_chunk(Bytes::from(data)).await.unwrap();
    stream.finish().unwrap();
}

async fn receive_group(subscriber: &Peer, group: u64, sent: &[(u64, Bytes)]) {
    let mut received = ReceivedGroup::accept(subscriber).await;
    assert_eq!(
        (received.header.subscribe, received.header.sequence),
        (7, group)
    );
    for (_, payload) in sent {
        let (_, got) = received.frame().await.unwrap().expect("a frame");
        assert_eq!(&got, payload);
    }
    assert!(received.frame().await.unwrap().is_none(), "the group ends");
}

fn publish(request_id: u64, name: &str, track_alias: u64) -> ControlMessage {
    Publish {
        request_id,
        namespace: vec![BROADCAST.into()],
        name: name.into(),
        track_alias,
        group_order: GroupOrder::Ascending,
        largest: None,
        forward: false,
        parameters: Parameters::default(),
    }
    .into()
}

/// The relay's PUBLISH_OK, Forward 0, for PUBLISH `request_id`.
async fn expect_publish_ok(client: &mut Client, request_id: u64) {
    match client.reply().await {
        ControlMessage::PublishOk(ok) => {
            assert_eq!((ok.request_id, ok.forward), (request_id, false));
            assert_eq!(ok.filter, Filter::LargestObject);
        }
        other => panic!("expected PUBLISH_OK for {request_id}, got {other:?}"),
    }
}

/// The relay's SUBSCRIBE_UPDATE of PUBLISH `subscription`; its own Request
/// ID, from the relay's odd sequence, is returned.
async fn expect_forward(client: &mut Client, subscription: u64, forward: bool) -> u64 {
    match client.reply().await {
        ControlMessage::SubscribeUpdate(update) => {
            assert_eq!(
                (update.subscription_request_id, update.forward),
                (subscription, forward)
            );
            assert_eq!(update.request_id % 2, 1, "a server's Request ID");
            update.request_id
        }
        other => panic!("expected SUBSCRIBE_UPDATE, got {other:?}"),
    }
}

/// aiomoqt's publisher offers its track with a bare PUBLISH (Forward 0) and
/// no PUBLISH_NAMESPACE: the broadcast is announced and the PUBLISH accepted
/// with Forward 0 at once; a subscriber turns Forward on (SUBSCRIBE_UPDATE),
/// and the streams under the PUBLISH's alias reach it.
#[monoio::test(enable_timer = true)]
async fn a_publish_is_forwarded_when_a_subscriber_comes_and_its_alias_carries_the_track() {
    let shard = shard(settings());
    let mut client = Client::connect(&shard).await;
    client.send(publish(0, "video", 5)).await;
    expect_publish_ok(&mut client, 0).await;

    let subscriber = Peer::connect(
        &shard,
        crate::lite::Version::Lite06,
        MemoryLimits::default(),
    )
    .await
    .0;
    let _announce = subscriber.wait_announced().await;
    let _subscription = subscriber.open_subscribe(7, "video").await;
    expect_forward(&mut client, 0, true).await;

    let sent = frames(3, 150);
    send_subgroup(&client, 5, 4, &sent).await;
    let mut received = ReceivedGroup::accept(&subscriber).await;
    assert_eq!(
        (received.header.subscribe, received.header.sequence),
        (7, 4)
    );
    for (_, payload) in &sent {
        let (_, got) = received.frame().await.unwrap().expect("a frame");
        assert_eq!(&got, payload);
    }
    assert!(received.frame().await.unwrap().is_none(), "the group ends");
}

/// When the last subscriber leaves, a PUBLISH's subscription is paused
/// (Forward 0), not ended, and the next subscriber resumes the same one.
#[monoio::test(enable_timer = true)]
async fn a_publish_is_paused_when_its_subscribers_leave_and_resumed_for_the_next() {
    let shard = shard(settings());
    let mut client = Client::connect(&shard).await;
    client.send(publish(0, "video", 5)).await;
    expect_publish_ok(&mut client, 0).await;

    let subscriber = Peer::connect(
        &shard,
        crate::lite::Version::Lite06,
        MemoryLimits::default(),
    )
    .await
    .0;
    let _announce = subscriber.wait_announced().await;
    let subscription = subscriber.open_subscribe(7, "video").await;
    let first = expect_forward(&mut client, 0, true).await;
    drop(subscription);
    let second = expect_forward(&mut client, 0, false).await;
    let _again = subscriber.open_subscribe(9, "video").await;
    let third = expect_forward(&mut client, 0, true).await;
    assert!(first < second && second < third, "{first} {second} {third}");
}

/// Draft 14 section 9.13: a PUBLISH whose alias already names another track
/// closes the session with DUPLICATE_TRACK_ALIAS.
#[monoio::test(enable_timer = true)]
async fn a_publish_reusing_an_alias_closes_the_session() {
    let shard = shard(settings());
    let mut client = Client::connect(&shard).await;
    client.send(publish(0, "video", 5)).await;
    client.send(publish(2, "audio", 5)).await;
    within("close", client.transport.closed()).await;
    let close = client.transport.close_reason().unwrap();
    assert_eq!(close.code.0, SessionCode::DUPLICATE_TRACK_ALIAS.0);
}

/// A second PUBLISH of a track still on offer is refused alone, and
/// PUBLISH_DONE withdraws the offer: a later PUBLISH of the track is taken.
#[monoio::test(enable_timer = true)]
async fn a_track_is_on_offer_once_until_its_publish_done() {
    let shard = shard(settings());
    let mut client = Client::connect(&shard).await;
    client.send(publish(0, "video", 5)).await;
    expect_publish_ok(&mut client, 0).await;
    client.send(publish(2, "video", 6)).await;
    match client.reply().await {
        ControlMessage::PublishError(e) => assert_eq!((e.request_id, e.code), (2, 0x4)),
        other => panic!("expected PUBLISH_ERROR, got {other:?}"),
    }
    client
        .send(
            PublishDone {
                request_id: 0,
                status: 0x2,
                stream_count: 0,
                reason: String::new(),
            }
            .into(),
        )
        .await;
    client.send(publish(4, "video", 7)).await;
    expect_publish_ok(&mut client, 4).await;

    // The only offer left is request 4's: a subscriber turns it on.
    let subscriber = Peer::connect(
        &shard,
        crate::lite::Version::Lite06,
        MemoryLimits::default(),
    )
    .await
    .0;
    let _announce = subscriber.wait_announced().await;
    let _subscription = subscriber.open_subscribe(7, "video").await;
    expect_forward(&mut client, 4, true).await;
}

#[monoio::test(enable_timer = true)]
async fn an_ietf_publishers_subgroups_reach_a_lite_subscriber_as_groups() {
    let shard = shard(settings());
    let (mut client, subscriber, _subscription, request) =
        ietf_publisher_with_lite_subscriber(&shard).await;
    client.send(subscribe_ok(&request, 9)).await;
    // One subgroup stream: group 3, objects 0..3, FIN ends it.
    let sent = frames(3, 150);
    send_subgroup(&client, 9, 3, &sent).await;
    receive_group(&subscriber, 3, &sent).await;
}

/// Objects travel on other streams than SUBSCRIBE_OK, so a subgroup stream
/// may arrive before the answer that names its alias (moq-clock's publisher
/// opens them at once): it is held until the SUBSCRIBE_OK, not dropped.
#[monoio::test(enable_timer = true)]
async fn a_subgroup_that_overtakes_its_subscribe_ok_is_held_until_the_alias_is_known() {
    let shard = shard(settings());
    let (mut client, subscriber, _subscription, request) =
        ietf_publisher_with_lite_subscriber(&shard).await;
    let sent = frames(3, 150);
    send_subgroup(&client, 9, 3, &sent).await;
    // One thread runs both ends and nothing here waits on I/O: while this
    // task is parked, the relay's ready tasks accept the stream and read its
    // header, so it meets an alias no SUBSCRIBE_OK has named yet.
    monoio::time::sleep(std::time::Duration::from_millis(5)).await;
    client.send(subscribe_ok(&request, 9)).await;
    receive_group(&subscriber, 3, &sent).await;
    assert_eq!(shard.stats.ietf_streams_unknown_alias.get(), 0);
}

/// With every SUBSCRIBE answered, an unknown alias cannot become known: its
/// stream is stopped at once and counted, and the track goes on.
#[monoio::test(enable_timer = true)]
async fn a_subgroup_for_an_alias_never_named_is_stopped_alone() {
    let shard = shard(settings());
    let (mut client, subscriber, _subscription, request) =
        ietf_publisher_with_lite_subscriber(&shard).await;
    client.send(subscribe_ok(&request, 9)).await;
    let mut stray = Vec::new();
    super::bridge::subgroup_for_group(5, 1, 0)
        .encode(&mut stray, V)
        .unwrap();
    let mut stream = client.transport.open_uni().await.unwrap();
    stream.write_chunk(Bytes::from(stray)).await.unwrap();
    let stopped = within("the stray stream stopped", stream.stopped()).await;
    assert!(stopped.is_some(), "stopped, not a closed session");
    assert_eq!(shard.stats.ietf_streams_unknown_alias.get(), 1);

    let sent = frames(2, 100);
    send_subgroup(&client, 9, 4, &sent).await;
    receive_group(&subscriber, 4, &sent).await;
}

/// FETCH on both drafts.
mod fetch;

/// Draft 22 ([`super::draft22::run`]): a scripted client that opens its SETUP
/// stream, reads the relay's, and makes each request on a bidi stream of its own.
pub(super) mod draft22 {
    use super::*;
    use crate::ietf::draft22::{
        self as d22, Decode as _, Encode as _, LocationFilter, MessageParameters, ParamValue,
        RequestMessage,
    };

    pub(super) struct Client22 {
        pub(super) transport: MemoryTransport,
        _setup: MemorySend,
        /// The relay's SETUP stream, past its SETUP: where GOAWAY comes.
        pub(super) theirs: Incoming,
    }

    /// One request's stream pair.
    pub(super) struct Request22 {
        pub(super) send: MemorySend,
        pub(super) replies: Incoming,
    }

    impl Request22 {
        pub(super) async fn reply(&mut self) -> RequestMessage {
            let limits = limits();
            self.replies
                .decode(|b| RequestMessage::decode(b, &limits))
                .await
        }
    }

    impl Client22 {
        pub(super) async fn connect(shard: &Rc<Shard>) -> Client22 {
            let (relay, transport) = MemoryTransport::pair();
            monoio::spawn(super::super::draft22::run(shard.clone(), relay));
            let mut setup = transport.open_uni().await.unwrap();
            setup
                .write_chunk(Bytes::from(d22::Setup::default().to_vec().unwrap()))
                .await
                .unwrap();
            let (recv, leftover) = within("relay SETUP stream", transport.accept_uni())
                .await
                .unwrap();
            let mut theirs = Incoming::new(recv, leftover);
            let limits = limits();
            let _ = theirs.decode(|b| d22::Setup::decode(b, &limits)).await;
            Client22 {
                transport,
                _setup: setup,
                theirs,
            }
        }

        pub(super) async fn request(&self, first: Vec<u8>) -> Request22 {
            let (mut send, recv) = self.transport.open_bi().await.unwrap();
            send.write_chunk(Bytes::from(first)).await.unwrap();
            Request22 {
                send,
                replies: Incoming::new(recv, Bytes::new()),
            }
        }

        pub(in crate::ietf_session) async fn subscribe(
            &self,
            id: u64,
            broadcast: &str,
            filter: LocationFilter,
        ) -> Request22 {
            let request = d22::Subscribe {
                request_id: id,
                namespace: vec![broadcast.into()],
                name: "video".into(),
                parameters: MessageParameters(vec![
                    (d22::param::SUBSCRIBER_PRIORITY, ParamValue::Byte(10)),
                    (d22::param::LOCATION_FILTER, ParamValue::Filter(filter)),
                ]),
            };
            self.request(request.to_vec().unwrap()).await
        }

        pub(super) async fn closed_with(&self) -> u32 {
            within("close", self.transport.closed()).await;
            self.transport.close_reason().unwrap().code.0
        }
    }

    #[monoio::test(enable_timer = true)]
    async fn a_lite_publishers_track_reaches_a_draft22_subscriber() {
        let shard = shard(settings());
        let publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
        let client = Client22::connect(&shard).await;
        let mut request = client
            .subscribe(0, BROADCAST, LocationFilter::NextObject)
            .await;
        let ok = match request.reply().await {
            RequestMessage::SubscribeOk(ok) => ok,
            other => panic!("expected SUBSCRIBE_OK, got {other:?}"),
        };
        assert_eq!(ok.parameters.largest(), None, "nothing published yet");
        let (upstream, _send, _reader) =
            within("upstream SUBSCRIBE", publisher.next_subscribe()).await;
        assert_eq!(
            (upstream.broadcast.as_str(), upstream.track.as_str()),
            (BROADCAST, "video")
        );

        // Frames above 127 bytes: their lengths need two leading-ones bytes,
        // which a QUIC varint would spell differently.
        let sent = frames(3, 200);
        let mut group = publisher.send_group(upstream.id, 4, &sent).await;
        group.finish().unwrap();

        let (recv, leftover) = within("a subgroup stream", client.transport.accept_uni())
            .await
            .unwrap();
        let mut stream = Incoming::new(recv, leftover);
        let limits = limits();
        let header = stream
            .decode(|b| d22::SubgroupHeader::decode(b, &limits))
            .await;
        assert_eq!(
            (
                header.track_alias,
                header.group,
                header.subgroup,
                header.end_of_group,
                header.first_object
            ),
            (ok.track_alias, 4, SubgroupId::Zero, true, true)
        );
        for (_, payload) in &sent {
            let object = stream
                .decode(|b| d22::decode_object(b, header.extensions, &limits))
                .await;
            assert_eq!(object.object_id_delta, 0, "frames are objects 0, 1, 2...");
            let got = stream.payload(object.payload_len as usize).await;
            assert_eq!(&got, payload);
        }
        assert!(stream.at_end().await, "FIN ends the group");

        // The publisher leaving ends the track: PUBLISH_DONE on the request's
        // stream counts the one subgroup stream, then the stream ends.
        publisher
            .peer
            .transport
            .close(crate::lite::SessionCode::CANCEL, "gone");
        match request.reply().await {
            RequestMessage::PublishDone(done) => {
                assert_eq!((done.status, done.stream_count), (0x2, 1));
            }
            other => panic!("expected PUBLISH_DONE, got {other:?}"),
        }
        assert!(request.replies.at_end().await);
    }

    #[monoio::test(enable_timer = true)]
    async fn resetting_the_request_stream_releases_the_upstream() {
        let shard = shard(settings());
        let publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
        let client = Client22::connect(&shard).await;
        let mut request = client
            .subscribe(0, BROADCAST, LocationFilter::RelativeStart(0))
            .await;
        assert!(matches!(
            request.reply().await,
            RequestMessage::SubscribeOk(_)
        ));
        let (_upstream, _send, mut reader) =
            within("upstream SUBSCRIBE", publisher.next_subscribe()).await;
        request
            .send
            .reset(client.transport.stream_code(crate::lite::StreamCode(0x1)))
            .unwrap();
        let _ = within("upstream released", reader.discard_to_end()).await;
    }

    #[monoio::test(enable_timer = true)]
    async fn requests_not_served_are_refused_alone_and_malformed_ones_close() {
        let shard = shard(settings());
        let _publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
        let client = Client22::connect(&shard).await;
        let mut unknown = client
            .subscribe(0, "nobody", LocationFilter::NextObject)
            .await;
        // DOES_NOT_EXIST is 0x10 from draft 15 on (0x4 is MALFORMED_AUTH_TOKEN).
        match unknown.reply().await {
            RequestMessage::RequestError(e) => assert_eq!(e.code, 0x10),
            other => panic!("expected REQUEST_ERROR, got {other:?}"),
        }
        assert!(unknown.replies.at_end().await);
        // A range that ends before it starts: INVALID_RANGE (0x11).
        let backwards = LocationFilter::AbsoluteRange {
            start: Location {
                group: 5,
                object: 4,
            },
            end_group: 5,
            end_object: 3,
        };
        let mut absolute = client.subscribe(2, BROADCAST, backwards).await;
        match absolute.reply().await {
            RequestMessage::RequestError(e) => assert_eq!(e.code, 0x11),
            other => panic!("expected REQUEST_ERROR, got {other:?}"),
        }
        // A TRACK_STATUS (type 0x0d, its body skipped by length) is not served.
        let mut status = client.request(vec![0x0d, 0x00, 0x02, 0x04, 0x00]).await;
        match status.reply().await {
            RequestMessage::RequestError(e) => assert_eq!(e.code, 0x3),
            other => panic!("expected REQUEST_ERROR, got {other:?}"),
        }
        // The session survived all three; a request of unknown type ends it.
        let _junk = client.request(vec![0x3f, 0x00, 0x00]).await;
        assert_eq!(
            client.closed_with().await,
            SessionCode::PROTOCOL_VIOLATION.0
        );

        // So does a draft-14 CLIENT_SETUP on the SETUP stream.
        let client = Client22::connect(&shard).await;
        let mut uni = client.transport.open_uni().await.unwrap();
        uni.write_chunk(Bytes::from_static(&[0x20, 0x00, 0x01, 0x00]))
            .await
            .unwrap();
        assert_eq!(
            client.closed_with().await,
            SessionCode::PROTOCOL_VIOLATION.0
        );
    }

    /// The relay's REQUEST_UPDATE on a PUBLISH's stream: its FORWARD, and
    /// its own Request ID (odd: the relay is the server).
    async fn expect_update(request: &mut Request22, forward: bool) -> u64 {
        match request.reply().await {
            RequestMessage::RequestUpdate(update) => {
                assert_eq!(update.parameters.forward(), forward, "{update:?}");
                assert_eq!(update.request_id % 2, 1, "a server's Request ID");
                update.request_id
            }
            other => panic!("expected REQUEST_UPDATE, got {other:?}"),
        }
    }

    /// aiomoqt's draft-22 publisher: PUBLISH on its own stream, answered
    /// REQUEST_OK; Forward is then the relay's to set by REQUEST_UPDATE on
    /// that stream: off at once (the PUBLISH left it out, which means on,
    /// and nobody wants the track), on for a lite subscriber, whom the
    /// PUBLISH's alias then feeds, off when it leaves. PUBLISH_DONE ends it.
    #[monoio::test(enable_timer = true)]
    async fn a_draft22_publish_is_forwarded_while_a_subscriber_wants_it() {
        let shard = shard(settings());
        let client = Client22::connect(&shard).await;
        let publish = d22::Publish {
            request_id: 0,
            namespace: vec![BROADCAST.into()],
            name: "video".into(),
            track_alias: 5,
            parameters: MessageParameters::default(),
            properties: Parameters::default(),
        };
        let mut request = client.request(publish.to_vec().unwrap()).await;
        assert!(matches!(
            request.reply().await,
            RequestMessage::RequestOk(_)
        ));
        let off = expect_update(&mut request, false).await;

        let subscriber = Peer::connect(
            &shard,
            crate::lite::Version::Lite06,
            MemoryLimits::default(),
        )
        .await
        .0;
        let _announce = subscriber.wait_announced().await;
        let subscription = subscriber.open_subscribe(7, "video").await;
        let on = expect_update(&mut request, true).await;
        assert!(off < on, "{off} {on}");
        request
            .send
            .write_chunk(Bytes::from(d22::RequestOk::default().to_vec().unwrap()))
            .await
            .unwrap();

        let sent = frames(3, 150);
        send_subgroup22(&client.transport, 5, 4, &sent).await;
        receive_group(&subscriber, 4, &sent).await;

        drop(subscription);
        let off_again = expect_update(&mut request, false).await;
        assert!(on < off_again, "{on} {off_again}");

        let done = d22::PublishDone {
            status: 0x2,
            stream_count: 1,
            reason: String::new(),
        };
        request
            .send
            .write_chunk(Bytes::from(done.to_vec().unwrap()))
            .await
            .unwrap();
        assert!(
            within("the relay's half ends", request.replies.at_end()).await,
            "nothing after PUBLISH_DONE"
        );
    }

    /// A second PUBLISH of a track on offer is refused alone (REQUEST_ERROR
    /// UNINTERESTED, 0x20); garbage on a PUBLISH's stream closes the session
    /// with PROTOCOL_VIOLATION; a PUBLISH whose alias names another track
    /// closes it with DUPLICATE_TRACK_ALIAS.
    #[monoio::test(enable_timer = true)]
    async fn draft22_publish_refusals_and_violations() {
        let shard = shard(settings());
        let publish = |id: u64, name: &str, alias: u64| {
            d22::Publish {
                request_id: id,
                namespace: vec![BROADCAST.into()],
                name: name.into(),
                track_alias: alias,
                parameters: MessageParameters(vec![(d22::param::FORWARD, ParamValue::Bool(false))]),
                properties: Parameters::default(),
            }
            .to_vec()
            .unwrap()
        };
        let client = Client22::connect(&shard).await;
        let mut first = client.request(publish(0, "video", 5)).await;
        assert!(matches!(first.reply().await, RequestMessage::RequestOk(_)));
        let mut again = client.request(publish(2, "video", 6)).await;
        match again.reply().await {
            RequestMessage::RequestError(e) => assert_eq!(e.code, 0x20),
            other => panic!("expected REQUEST_ERROR, got {other:?}"),
        }
        // A SUBSCRIBE_NAMESPACE has no place on a PUBLISH's stream.
        let junk = d22::SubscribeNamespace {
            request_id: 4,
            prefix: vec![],
            parameters: MessageParameters::default(),
        };
        first
            .send
            .write_chunk(Bytes::from(junk.to_vec().unwrap()))
            .await
            .unwrap();
        assert_eq!(
            client.closed_with().await,
            SessionCode::PROTOCOL_VIOLATION.0
        );

        let client = Client22::connect(&shard).await;
        let mut video = client.request(publish(0, "video", 5)).await;
        assert!(matches!(video.reply().await, RequestMessage::RequestOk(_)));
        let _audio = client.request(publish(2, "audio", 5)).await;
        assert_eq!(
            client.closed_with().await,
            SessionCode::DUPLICATE_TRACK_ALIAS.0
        );
    }

    /// RENDEZVOUS_TIMEOUT (draft 18 on): a SUBSCRIBE for a broadcast nobody
    /// publishes yet waits that long for its publisher, and is served when
    /// one comes; without one in time it is refused with TIMEOUT (0x2).
    #[monoio::test(enable_timer = true)]
    async fn a_subscribe_waits_its_rendezvous_timeout_for_a_publisher() {
        let shard = shard(settings());
        let client = Client22::connect(&shard).await;
        let rendezvous = |id: u64, broadcast: &str, ms: u64| d22::Subscribe {
            request_id: id,
            namespace: vec![broadcast.into()],
            name: "video".into(),
            parameters: MessageParameters(vec![(
                d22::param::RENDEZVOUS_TIMEOUT,
                ParamValue::Varint(ms),
            )]),
        };
        let mut late = client
            .request(rendezvous(0, "nobody", 100).to_vec().unwrap())
            .await;
        match late.reply().await {
            RequestMessage::RequestError(e) => assert_eq!(e.code, 0x2),
            other => panic!("expected REQUEST_ERROR, got {other:?}"),
        }

        let mut waiting = client
            .request(rendezvous(2, BROADCAST, 60_000).to_vec().unwrap())
            .await;
        let _publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
        assert!(matches!(
            waiting.reply().await,
            RequestMessage::SubscribeOk(_)
        ));
    }

    /// A SUBSCRIBE waiting out its RENDEZVOUS_TIMEOUT holds a request slot:
    /// a peer cannot park more of them than `max_subscriptions_per_session`.
    #[monoio::test(enable_timer = true)]
    async fn subscribes_waiting_for_a_rendezvous_count_against_the_limit() {
        let mut settings = settings();
        settings.max_subscriptions_per_session = 1;
        let shard = shard(settings);
        let client = Client22::connect(&shard).await;
        let rendezvous = |id: u64| d22::Subscribe {
            request_id: id,
            namespace: vec!["nobody".into()],
            name: "video".into(),
            parameters: MessageParameters(vec![(
                d22::param::RENDEZVOUS_TIMEOUT,
                ParamValue::Varint(60_000),
            )]),
        };
        let _waiting = client.request(rendezvous(0).to_vec().unwrap()).await;
        // The first is parked once the shard listens for its broadcast.
        crate::session::tests::eventually("the first SUBSCRIBE waiting", || {
            shard.stats.announce_listeners_open.get() > 0
        })
        .await;
        let mut second = client.request(rendezvous(2).to_vec().unwrap()).await;
        match second.reply().await {
            RequestMessage::RequestError(e) => assert_eq!(e.code, 0x3),
            other => panic!("expected REQUEST_ERROR, got {other:?}"),
        }
        assert_eq!(shard.stats.subscriptions_refused_limit.get(), 1);
    }

    #[monoio::test(enable_timer = true)]
    async fn subscribe_namespace_lists_broadcasts_under_the_prefix() {
        let shard = shard(settings());
        let _publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
        let client = Client22::connect(&shard).await;
        let request = d22::SubscribeNamespace {
            request_id: 0,
            prefix: vec![],
            parameters: MessageParameters::default(),
        };
        let mut listen = client.request(request.to_vec().unwrap()).await;
        assert!(matches!(listen.reply().await, RequestMessage::RequestOk(_)));
        match listen.reply().await {
            RequestMessage::Namespace(ns) => assert_eq!(ns.suffix, [BROADCAST]),
            other => panic!("expected NAMESPACE, got {other:?}"),
        }
    }
}

mod draft22_publisher {
    use super::draft22::Client22;
    use super::*;
    use crate::ietf::draft22::{
        self as d22, Decode as _, Encode as _, MessageParameters, RequestMessage,
    };

    /// A draft-22 publisher of BROADCAST (PUBLISH_NAMESPACE on its own
    /// stream, answered REQUEST_OK) and a lite subscriber to its "video"
    /// track: returns once the relay's SUBSCRIBE has come on a bidi stream
    /// the relay opened, with the request and that stream's send half, on
    /// which the caller answers, and what must stay open.
    pub(super) async fn draft22_publisher_with_lite_subscriber(
        shard: &Rc<Shard>,
    ) -> (
        Client22,
        Peer,
        d22::Subscribe,
        MemorySend,
        Vec<Box<dyn std::any::Any>>,
    ) {
        let limits = limits();
        let publisher = super::draft22::Client22::connect(shard).await;
        let publish = d22::PublishNamespace {
            request_id: 0,
            namespace: vec![BROADCAST.into()],
            parameters: MessageParameters::default(),
        };
        let mut announced = publisher.request(publish.to_vec().unwrap()).await;
        assert!(matches!(
            announced.reply().await,
            RequestMessage::RequestOk(_)
        ));
        let subscriber =
            Peer::connect(shard, crate::lite::Version::Lite06, MemoryLimits::default())
                .await
                .0;
        let announce = subscriber.wait_announced().await;
        let subscription = subscriber.open_subscribe(7, "video").await;
        let (reply, recv, leftover) = within("relay SUBSCRIBE", publisher.transport.accept_bi())
            .await
            .unwrap();
        let mut request = Incoming::new(recv, leftover);
        let subscribe = match request.decode(|b| RequestMessage::decode(b, &limits)).await {
            RequestMessage::Subscribe(s) => s,
            other => panic!("expected SUBSCRIBE, got {other:?}"),
        };
        let keep: Vec<Box<dyn std::any::Any>> = vec![
            Box::new(announced),
            Box::new(announce),
            Box::new(subscription),
            Box::new(request),
        ];
        (publisher, subscriber, subscribe, reply, keep)
    }

    /// Answer the relay's SUBSCRIBE on its stream with SUBSCRIBE_OK naming `alias`.
    pub(super) async fn subscribe_ok22(reply: &mut MemorySend, alias: u64) {
        let ok = d22::SubscribeOk {
            track_alias: alias,
            parameters: MessageParameters::default(),
            properties: Parameters::default(),
        };
        reply
            .write_chunk(Bytes::from(ok.to_vec().unwrap()))
            .await
            .unwrap();
    }

    /// A draft-22 publisher: the relay's SUBSCRIBE comes on a bidi stream it
    /// opens (its Request IDs are odd), and the publisher's subgroup stream
    /// reaches a lite subscriber as a group.
    #[monoio::test(enable_timer = true)]
    async fn a_draft22_publishers_subgroups_reach_a_lite_subscriber() {
        let shard = shard(settings());
        let (publisher, subscriber, subscribe, mut reply, _keep) =
            draft22_publisher_with_lite_subscriber(&shard).await;
        assert_eq!(
            (
                subscribe.request_id,
                subscribe.namespace.as_slice(),
                subscribe.name.as_str()
            ),
            (1, &[BROADCAST.to_string()][..], "video")
        );
        subscribe_ok22(&mut reply, 9).await;

        // One subgroup stream in draft-22 layout: group 3, objects 0..3.
        let sent = frames(3, 150);
        send_subgroup22(&publisher.transport, 9, 3, &sent).await;
        receive_group(&subscriber, 3, &sent).await;
    }
}

/// A peer that opens the connection and never sends SETUP is closed
/// CONTROL_MESSAGE_TIMEOUT at `relay.setup_timeout`, on either draft, and
/// counted; it does not hold a session for as long as it stays connected.
#[monoio::test(enable_timer = true)]
async fn a_peer_that_sends_no_setup_is_closed_at_the_setup_deadline() {
    let mut hasty = settings();
    hasty.setup_timeout = std::time::Duration::from_millis(200);
    let shard = shard(hasty);
    for draft in [Version::Draft14, Version::Draft22] {
        let (relay, silent) = MemoryTransport::pair();
        match draft {
            Version::Draft14 => {
                monoio::spawn(super::session::run(shard.clone(), relay, false));
            }
            Version::Draft22 => {
                monoio::spawn(super::draft22::run(shard.clone(), relay));
            }
        }
        within("the silent peer closed", silent.closed()).await;
        let close = silent.close_reason().expect("closed");
        assert_eq!(
            close.code.0,
            SessionCode::CONTROL_MESSAGE_TIMEOUT.0,
            "{draft}: {close:?}"
        );
    }
    assert_eq!(shard.stats.sessions_setup_timeouts.get(), 2);
}

mod datagrams;
mod filters;

/// At the relay's shutdown each IETF session is told GOAWAY (no new URI)
/// before the connection closes: on draft 14's control stream, on draft
/// 22's SETUP stream.
#[monoio::test(enable_timer = true)]
async fn sessions_of_both_drafts_get_goaway_at_shutdown() {
    let shard = shard(settings());
    let mut client14 = Client::connect(&shard).await;
    let mut client22 = draft22::Client22::connect(&shard).await;
    shard.begin_shutdown();
    match client14.reply().await {
        ControlMessage::Goaway(goaway) => assert_eq!(goaway.uri, ""),
        other => panic!("expected GOAWAY, got {other:?}"),
    }
    let limits = limits();
    let goaway = client22
        .theirs
        .decode(|b| {
            <crate::ietf::draft22::Goaway as crate::ietf::draft22::Decode>::decode(b, &limits)
        })
        .await;
    assert_eq!(goaway.new_session_uri, "");
}
