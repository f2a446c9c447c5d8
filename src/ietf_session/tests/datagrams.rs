//! OBJECT_DATAGRAMs through the relay on in-memory transports, each
//! direction: an IETF publisher's datagrams (either draft) reach lite,
//! draft-14 and draft-22 subscribers, a lite publisher's reach IETF ones, and
//! a malformed datagram closes only its session. A subscription takes
//! datagrams once it is served, so each test first sends a group and waits
//! for every subscriber to get it; after that the memory transport keeps
//! datagrams in order and loses none. Every wait has a deadline; no sleeps.

use super::draft22::{Client22, Request22};
use super::draft22_publisher::{draft22_publisher_with_lite_subscriber, subscribe_ok22};
use super::*;
use crate::ietf::draft22::{self as d22, LocationFilter, RequestMessage};
use crate::ietf::{DatagramHeader, ObjectStatus};
use crate::session::tests::eventually;

const ALIAS: u64 = 5;

/// A draft-14 OBJECT_DATAGRAM for `ALIAS`.
fn datagram14(group: u64, object: u64, extensions: Option<&[u8]>, payload: &[u8]) -> Bytes {
    let mut body = Vec::new();
    DatagramHeader {
        track_alias: ALIAS,
        group,
        object: (object != 0).then_some(object),
        publisher_priority: 0,
        extensions: extensions.map(<[u8]>::to_vec),
        end_of_group: object == 0,
        status: None,
    }
    .encode(&mut body)
    .unwrap();
    body.extend_from_slice(payload);
    Bytes::from(body)
}

/// A draft-22 OBJECT_DATAGRAM for `ALIAS`.
fn datagram22(group: u64, object: u64, extensions: Option<&[u8]>, payload: &[u8]) -> Bytes {
    let mut body = Vec::new();
    d22::DatagramHeader {
        track_alias: ALIAS,
        group,
        object: (object != 0).then_some(object),
        publisher_priority: None,
        extensions: extensions.map(<[u8]>::to_vec),
        end_of_group: object == 0,
        status: None,
    }
    .encode(&mut body)
    .unwrap();
    body.extend_from_slice(payload);
    Bytes::from(body)
}

/// The next datagram `to` receives.
async fn next_datagram(to: &MemoryTransport) -> Bytes {
    within("a datagram", to.recv_datagram()).await.unwrap()
}

/// Until each subscriber has a group stream open: its subscription is
/// being served, so datagrams from now on reach it.
async fn served(lite: &Peer, ietf: &[&MemoryTransport]) {
    let _ = ReceivedGroup::accept(lite).await;
    for transport in ietf {
        within("a subgroup stream", transport.accept_uni())
            .await
            .unwrap();
    }
}

fn decode14(datagram: &[u8]) -> (DatagramHeader, &[u8]) {
    let (header, offset) = DatagramHeader::decode(datagram, &limits()).unwrap();
    (header, &datagram[offset..])
}

fn decode22(datagram: &[u8]) -> (d22::DatagramHeader, &[u8]) {
    let (header, offset) = d22::DatagramHeader::decode(datagram, &limits()).unwrap();
    (header, &datagram[offset..])
}

/// What an IETF subscriber got, in terms both drafts share: alias, group,
/// Object ID (`None` for 0), end of group, publisher priority, extension
/// block, payload.
type Got = (
    u64,
    u64,
    Option<u64>,
    bool,
    Option<u8>,
    Option<Vec<u8>>,
    Vec<u8>,
);

/// A decoded header and payload of either draft as [`Got`] (draft 14's
/// priority is a byte, draft 22's an optional one).
macro_rules! got {
    ($decoded:expr) => {{
        let (h, payload) = $decoded;
        let priority: Option<u8> = h.publisher_priority.into();
        let block: Option<Vec<u8>> = h.extensions;
        let fields = (h.track_alias, h.group, h.object, h.end_of_group);
        let (alias, group, object, end_of_group) = fields;
        (
            alias,
            group,
            object,
            end_of_group,
            priority,
            block,
            payload.to_vec(),
        )
    }};
}

/// The next datagram of a subscriber on `draft`, decoded.
async fn next_ietf(to: &MemoryTransport, draft: Version) -> Got {
    let got = next_datagram(to).await;
    match draft {
        Version::Draft14 => got!(decode14(&got)),
        Version::Draft22 => got!(decode22(&got)),
    }
}

fn decode_lite(datagram: &[u8]) -> (crate::lite::DatagramHeader, &[u8]) {
    crate::lite::DatagramHeader::decode(datagram, crate::lite::Version::Lite06).unwrap()
}

/// One Normal object as a one-frame group, to learn that subscriptions are
/// being served.
fn one_frame() -> Vec<(u64, Bytes)> {
    vec![(0, Bytes::from_static(b"group"))]
}

/// Subscribers of BROADCAST/video on draft 14 (subscriber priority 128)
/// and draft 22 (priority 10), each answered with SUBSCRIBE_OK.
struct IetfSubscribers {
    sub14: Client,
    alias14: u64,
    sub22: Client22,
    alias22: u64,
    /// The draft-22 request's stream, held open.
    _request22: Request22,
}

impl IetfSubscribers {
    async fn subscribe(shard: &Rc<Shard>) -> IetfSubscribers {
        let mut sub14 = Client::connect(shard).await;
        sub14
            .send(subscribe(0, BROADCAST, "video", Filter::LargestObject))
            .await;
        let alias14 = match sub14.reply().await {
            ControlMessage::SubscribeOk(ok) => ok.track_alias,
            other => panic!("expected SUBSCRIBE_OK, got {other:?}"),
        };
        let sub22 = Client22::connect(shard).await;
        let mut request = sub22
            .subscribe(0, BROADCAST, LocationFilter::NextObject)
            .await;
        let alias22 = match request.reply().await {
            RequestMessage::SubscribeOk(ok) => ok.track_alias,
            other => panic!("expected SUBSCRIBE_OK, got {other:?}"),
        };
        IetfSubscribers {
            sub14,
            alias14,
            sub22,
            alias22,
            _request22: request,
        }
    }

    fn transports(&self) -> [&MemoryTransport; 2] {
        [&self.sub14.transport, &self.sub22.transport]
    }

    /// Each receives `sent` in order, as (group, object, payload), each
    /// object 0 ending its group, under its own alias and its own priority
    /// mirrored back (as its subgroup streams carry it); the publisher's
    /// extension block, if any, reaches only the subscriber on the block's
    /// draft, with the object of the given group.
    async fn each_get(
        &self,
        sent: &[(u64, Option<u64>, &[u8])],
        block: Option<(&[u8], u64, Version)>,
    ) {
        let subscribers = [
            (&self.sub14.transport, self.alias14, Version::Draft14, 128),
            (&self.sub22.transport, self.alias22, Version::Draft22, 10),
        ];
        for &(group, object, payload) in sent {
            for (transport, alias, draft, priority) in subscribers {
                let got = next_ietf(transport, draft).await;
                let block = block
                    .filter(|&(_, g, d)| g == group && d == draft)
                    .map(|(bytes, ..)| bytes.to_vec());
                let end_of_group = object.is_none();
                let want = (
                    alias,
                    group,
                    object,
                    end_of_group,
                    Some(priority),
                    block,
                    payload.to_vec(),
                );
                assert_eq!(got, want, "{draft}");
            }
        }
    }
}

/// Object 0 with a draft-14 extension block, then object 3 of another group,
/// then object 0 of a third, from a draft-14 publisher: the lite subscriber
/// gets the two objects 0 (object 3 has no lite spelling), the draft-14
/// subscriber all three with the block byte for byte, the draft-22 one all
/// three without it.
#[monoio::test(enable_timer = true)]
async fn draft14_datagrams_reach_lite_draft14_and_draft22_subscribers() {
    let shard = shard(settings());
    let (mut publisher, lite, _subscription, request) =
        ietf_publisher_with_lite_subscriber(&shard).await;
    publisher.send(subscribe_ok(&request, ALIAS)).await;
    let ietf = IetfSubscribers::subscribe(&shard).await;
    send_subgroup(&publisher, ALIAS, 1, &one_frame()).await;
    served(&lite, &ietf.transports()).await;
    let dropped = shard.stats.datagrams_dropped.get();

    let block: &[u8] = b"\x02\x05";
    let from = &publisher.transport;
    from.send_datagram(datagram14(4, 0, Some(block), b"zero"))
        .unwrap();
    from.send_datagram(datagram14(5, 3, None, b"three"))
        .unwrap();
    from.send_datagram(datagram14(6, 0, None, b"six")).unwrap();

    for (sequence, payload) in [(4, &b"zero"[..]), (6, b"six")] {
        let got = next_datagram(&lite.transport).await;
        let (header, got) = decode_lite(&got);
        assert_eq!(
            (header.subscribe, header.sequence, got),
            (7, sequence, payload),
            "object 3 never reaches lite"
        );
    }
    let sent: [(u64, Option<u64>, &[u8]); 3] = [
        (4, None, b"zero"),
        (5, Some(3), b"three"),
        (6, None, b"six"),
    ];
    ietf.each_get(&sent, Some((block, 4, Version::Draft14)))
        .await;
    assert_eq!(
        shard.stats.datagrams_dropped.get(),
        dropped + 1,
        "the lite drop is counted"
    );
    assert_eq!(shard.stats.media_datagrams_received.get(), 3);
}

/// A draft-22 publisher (PUBLISH_NAMESPACE, then the relay's SUBSCRIBE on a
/// stream it opens): its datagrams reach a lite subscriber, and a draft-22
/// subscriber with the properties byte for byte, a draft-14 one without.
#[monoio::test(enable_timer = true)]
async fn draft22_datagrams_reach_lite_draft14_and_draft22_subscribers() {
    let shard = shard(settings());
    let (publisher, lite, _subscribe, mut reply, _keep_publisher) =
        draft22_publisher_with_lite_subscriber(&shard).await;
    subscribe_ok22(&mut reply, ALIAS).await;
    let ietf = IetfSubscribers::subscribe(&shard).await;
    send_subgroup22(&publisher.transport, ALIAS, 1, &one_frame()).await;
    served(&lite, &ietf.transports()).await;

    let block: &[u8] = b"\x04\x3f";
    let from = &publisher.transport;
    from.send_datagram(datagram22(8, 0, Some(block), b"zero"))
        .unwrap();
    from.send_datagram(datagram22(9, 2, None, b"two")).unwrap();

    let got = next_datagram(&lite.transport).await;
    let (header, payload) = decode_lite(&got);
    assert_eq!(
        (header.subscribe, header.sequence, payload),
        (7, 8, &b"zero"[..])
    );
    let sent: [(u64, Option<u64>, &[u8]); 2] = [(8, None, b"zero"), (9, Some(2), b"two")];
    ietf.each_get(&sent, Some((block, 8, Version::Draft22)))
        .await;
}

/// A lite publisher's datagram (a one-frame group) reaches IETF subscribers
/// of both drafts as object 0 that ends its group, at the subscription's
/// priority.
#[monoio::test(enable_timer = true)]
async fn a_lite_publishers_datagrams_reach_ietf_subscribers() {
    let shard = shard(settings());
    let publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
    let ietf = IetfSubscribers::subscribe(&shard).await;
    let (upstream, _send, _reader) = within("upstream SUBSCRIBE", publisher.next_subscribe()).await;
    let mut group = publisher.send_group(upstream.id, 1, &one_frame()).await;
    group.finish().unwrap();
    for transport in ietf.transports() {
        within("a subgroup stream", transport.accept_uni())
            .await
            .unwrap();
    }

    let mut lite = BytesMut::new();
    crate::lite::DatagramHeader {
        subscribe: upstream.id,
        sequence: 12,
        timestamp: 99,
    }
    .encode(&mut lite, crate::lite::Version::Lite06)
    .unwrap();
    lite.extend_from_slice(b"lite");
    publisher
        .peer
        .transport
        .send_datagram(lite.freeze())
        .unwrap();

    ietf.each_get(&[(12, None, b"lite")], None).await;
}

/// What the relay cannot use is dropped and counted, and the session stays:
/// an alias no SUBSCRIBE_OK named, a status other than Normal. A datagram
/// that does not decode closes the session with PROTOCOL_VIOLATION, on
/// either draft.
#[monoio::test(enable_timer = true)]
async fn unusable_datagrams_are_dropped_and_malformed_ones_close_the_session() {
    let shard = shard(settings());
    let stats = &shard.stats;
    let publisher = Client::connect(&shard).await;
    let before = stats.datagrams_dropped.get();
    let mut status = Vec::new();
    DatagramHeader {
        track_alias: ALIAS,
        group: 1,
        object: Some(0),
        publisher_priority: 0,
        extensions: None,
        end_of_group: false,
        status: Some(ObjectStatus::EndOfTrack),
    }
    .encode(&mut status)
    .unwrap();
    publisher
        .transport
        .send_datagram(Bytes::from(status))
        .unwrap();
    publisher
        .transport
        .send_datagram(datagram14(1, 0, None, b"nobody"))
        .unwrap();
    eventually("both dropped", || {
        stats.datagrams_dropped.get() == before + 2
    })
    .await;
    assert!(publisher.transport.close_reason().is_none(), "still open");

    // Draft 14 has no type 0x08; draft 22 has no 0x10; neither a cut header.
    publisher
        .transport
        .send_datagram(Bytes::from_static(&[0x08, 0x01, 0x02, 0x00]))
        .unwrap();
    within("close", publisher.transport.closed()).await;
    assert_eq!(
        publisher.transport.close_reason().unwrap().code.0,
        SessionCode::PROTOCOL_VIOLATION.0
    );
    let draft22 = Client22::connect(&shard).await;
    draft22
        .transport
        .send_datagram(Bytes::from_static(&[0x00, 0x05]))
        .unwrap();
    assert_eq!(
        draft22.closed_with().await,
        SessionCode::PROTOCOL_VIOLATION.0
    );
    // A PADDING datagram is discarded, not an error: the datagram after it
    // (for no alias) is counted, and the session stays.
    let padded = Client22::connect(&shard).await;
    let mut tmp = [0; 9];
    let mut padding = d22::encode_varint(d22::PADDING_DATAGRAM_TYPE, &mut tmp).to_vec();
    padding.extend_from_slice(&[0; 32]);
    let before = stats.datagrams_dropped.get();
    padded
        .transport
        .send_datagram(Bytes::from(padding))
        .unwrap();
    padded
        .transport
        .send_datagram(datagram22(1, 0, None, b"nobody"))
        .unwrap();
    eventually("dropped", || stats.datagrams_dropped.get() == before + 1).await;
    assert!(padded.transport.close_reason().is_none(), "still open");
}

/// A flood of datagrams for an alias no SUBSCRIBE_OK named keeps nothing:
/// each is dropped as it comes and counted, and the session stays.
#[monoio::test(enable_timer = true)]
async fn a_flood_of_datagrams_for_no_alias_is_dropped_as_it_comes() {
    const FLOOD: u64 = 5000;
    let shard = shard(settings());
    let publisher = Client::connect(&shard).await;
    let before = shard.stats.datagrams_dropped.get();
    let datagram = datagram14(1, 0, None, &[0xab; 1000]);
    let mut sent = 0;
    while sent < FLOOD {
        match publisher.transport.send_datagram(datagram.clone()) {
            Ok(()) => sent += 1,
            // The memory transport's queue is full: let the relay read.
            Err(crate::session::transport::DatagramDrop::Full) => {
                monoio::time::sleep(std::time::Duration::from_millis(1)).await
            }
            Err(other) => panic!("after {sent} datagrams: {other:?}"),
        }
    }
    let stats = &shard.stats;
    eventually("all dropped", || {
        stats.datagrams_dropped.get() == before + FLOOD
    })
    .await;
    assert_eq!(stats.media_datagrams_received.get(), 0);
    assert!(publisher.transport.close_reason().is_none(), "still open");
}
