//! Subscription filters, updates, namespace unsubscription and prefix
//! routing, on both drafts, against a scripted moq-lite publisher. Groups
//! are sent one at a time and each is read before the next is sent, so
//! which groups reach the relay's cache first is never left to chance.

use super::draft22::{Client22, Request22};
use super::*;
use crate::ietf::draft22::{
    self as d22, Decode as _, Encode as _, LocationFilter, MessageParameters, ParamValue,
    RequestMessage,
};
use crate::ietf::{NamespaceInterest, SubscribeNamespace, SubscribeUpdate, UnsubscribeNamespace};
use crate::session::tests::eventually;

fn loc(group: u64, object: u64) -> Location {
    Location { group, object }
}

/// One draft-14 subgroup stream read to its end: its header and each
/// object's ID and payload.
async fn read_subgroup(transport: &MemoryTransport) -> (SubgroupHeader, Vec<(u64, Bytes)>) {
    let (recv, leftover) = within("a subgroup stream", transport.accept_uni())
        .await
        .unwrap();
    let mut stream = Incoming::new(recv, leftover);
    let limits = limits();
    let header = stream
        .decode(|b| SubgroupHeader::decode(b, V, &limits))
        .await;
    let mut objects = Vec::new();
    let mut next = 0;
    while !stream.at_end().await {
        let object = stream
            .decode(|b| SubgroupObject::decode(b, header.extensions, &limits))
            .await;
        let id = next + object.object_id_delta;
        objects.push((id, stream.payload(object.payload_len as usize).await));
        next = id + 1;
    }
    (header, objects)
}

/// The same for a draft-22 subgroup stream.
async fn read_subgroup22(transport: &MemoryTransport) -> (d22::SubgroupHeader, Vec<(u64, Bytes)>) {
    let (recv, leftover) = within("a subgroup stream", transport.accept_uni())
        .await
        .unwrap();
    let mut stream = Incoming::new(recv, leftover);
    let limits = limits();
    let header = stream
        .decode(|b| d22::SubgroupHeader::decode(b, &limits))
        .await;
    let mut objects = Vec::new();
    let mut next = 0;
    while !stream.at_end().await {
        let object = stream
            .decode(|b| d22::decode_object(b, header.extensions, &limits))
            .await;
        let id = next + object.object_id_delta;
        objects.push((id, stream.payload(object.payload_len as usize).await));
        next = id + 1;
    }
    (header, objects)
}

fn ids(objects: &[(u64, Bytes)]) -> Vec<u64> {
    objects.iter().map(|(id, _)| *id).collect()
}

/// Send group `sequence` of `frames` on `upstream` and finish it.
async fn send_group(publisher: &Publisher, upstream: u64, sequence: u64, frames: &[(u64, Bytes)]) {
    let mut group = publisher.send_group(upstream, sequence, frames).await;
    group.finish().unwrap();
}

fn update(request_id: u64, target: u64, start: Location, end_group: u64) -> ControlMessage {
    SubscribeUpdate {
        request_id,
        subscription_request_id: target,
        start,
        end_group,
        subscriber_priority: 128,
        forward: true,
        parameters: Parameters::default(),
    }
    .into()
}

async fn expect_close(client: &Client, code: SessionCode) {
    within("close", client.transport.closed()).await;
    assert_eq!(client.transport.close_reason().unwrap().code.0, code.0);
}

#[monoio::test(enable_timer = true)]
async fn an_absolute_range_is_served_from_the_cache_and_ends_with_subscription_ended() {
    let shard = shard(settings());
    let publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
    // A live subscriber brings groups 1..=3 into the shard's cache.
    let mut live = Client::connect(&shard).await;
    live.send(subscribe(0, BROADCAST, "video", Filter::LargestObject))
        .await;
    assert!(matches!(live.reply().await, ControlMessage::SubscribeOk(_)));
    let (upstream, _send, _reader) = within("upstream SUBSCRIBE", publisher.next_subscribe()).await;
    let sent = frames(3, 40);
    for sequence in 1..=3 {
        send_group(&publisher, upstream.id, sequence, &sent).await;
        assert_eq!(read_subgroup(&live.transport).await.0.group, sequence);
    }

    let mut client = Client::connect(&shard).await;
    // Over, and no longer cached: INVALID_RANGE for that request only.
    let gone = Filter::AbsoluteRange {
        start: loc(0, 0),
        end_group: 0,
    };
    client.send(subscribe(0, BROADCAST, "video", gone)).await;
    match client.reply().await {
        ControlMessage::SubscribeError(e) => assert_eq!((e.request_id, e.code), (0, 0x5)),
        other => panic!("expected SUBSCRIBE_ERROR, got {other:?}"),
    }
    // From object 1 of group 2 to the end of group 4, absolute End Group.
    let range = Filter::AbsoluteRange {
        start: loc(2, 1),
        end_group: 4,
    };
    client.send(subscribe(2, BROADCAST, "video", range)).await;
    match client.reply().await {
        ControlMessage::SubscribeOk(ok) => assert_eq!(ok.largest, Some(loc(3, 2))),
        other => panic!("expected SUBSCRIBE_OK, got {other:?}"),
    }
    let mut cached = [
        read_subgroup(&client.transport).await,
        read_subgroup(&client.transport).await,
    ];
    cached.sort_by_key(|(h, _)| h.group);
    assert_eq!(cached[0].0.group, 2);
    assert_eq!(ids(&cached[0].1), [1, 2], "group 2 from its object 1");
    assert_eq!(cached[0].1[0].1, sent[1].1);
    assert_eq!((cached[1].0.group, ids(&cached[1].1)), (3, vec![0, 1, 2]));
    // The last group of the range comes live: once its stream is open the
    // range is over, and PUBLISH_DONE counts it while it is still written.
    let mut last = publisher.send_group(upstream.id, 4, &sent).await;
    match client.reply().await {
        ControlMessage::PublishDone(done) => assert_eq!(
            (done.request_id, done.status, done.stream_count),
            (2, 0x3, 3),
            "SUBSCRIPTION_ENDED after three streams"
        ),
        other => panic!("expected PUBLISH_DONE, got {other:?}"),
    }
    // That stream is finished, not reset, when its group ends.
    last.finish().unwrap();
    let (header, objects) = read_subgroup(&client.transport).await;
    assert_eq!((header.group, ids(&objects)), (4, vec![0, 1, 2]));
}

#[monoio::test(enable_timer = true)]
async fn a_subscribe_update_narrows_the_end_and_may_not_widen() {
    let shard = shard(settings());
    let publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
    let mut client = Client::connect(&shard).await;
    let start = Filter::AbsoluteStart(loc(1, 0));
    client.send(subscribe(0, BROADCAST, "video", start)).await;
    assert!(matches!(
        client.reply().await,
        ControlMessage::SubscribeOk(_)
    ));
    let (upstream, _send, _reader) = within("upstream SUBSCRIBE", publisher.next_subscribe()).await;
    let sent = frames(2, 40);
    send_group(&publisher, upstream.id, 1, &sent).await;
    assert_eq!(read_subgroup(&client.transport).await.0.group, 1);
    // End Group 3 is "the last group is 2".
    client.send(update(2, 0, loc(2, 0), 3)).await;
    send_group(&publisher, upstream.id, 2, &sent).await;
    assert_eq!(read_subgroup(&client.transport).await.0.group, 2);
    match client.reply().await {
        ControlMessage::PublishDone(done) => {
            assert_eq!(
                (done.request_id, done.status, done.stream_count),
                (0, 0x3, 2)
            )
        }
        other => panic!("expected PUBLISH_DONE, got {other:?}"),
    }
    // The subscription has ended: a late update for it is ignored.
    client.send(update(4, 0, loc(2, 0), 3)).await;
    client
        .send(subscribe(6, BROADCAST, "video", Filter::LargestObject))
        .await;
    assert!(matches!(
        client.reply().await,
        ControlMessage::SubscribeOk(ok) if ok.request_id == 6
    ));

    // Widening the end, moving the start back, or naming a request the
    // peer never sent: PROTOCOL_VIOLATION, that session only.
    let range = Filter::AbsoluteRange {
        start: loc(3, 0),
        end_group: 5,
    };
    let cases = [
        update(2, 0, loc(3, 0), 7),
        update(2, 0, loc(3, 0), 0),
        update(2, 0, loc(2, 0), 6),
        update(2, 4, loc(3, 0), 6),
    ];
    for bad in cases {
        let mut client = Client::connect(&shard).await;
        client.send(subscribe(0, BROADCAST, "video", range)).await;
        assert!(matches!(
            client.reply().await,
            ControlMessage::SubscribeOk(_)
        ));
        client.send(bad).await;
        expect_close(&client, SessionCode::PROTOCOL_VIOLATION).await;
    }
    // The first client is untouched by the others' violations.
    assert!(client.transport.close_reason().is_none());
}

#[monoio::test(enable_timer = true)]
async fn a_subscription_with_forward_0_sends_no_streams() {
    let shard = shard(settings());
    let publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
    let mut client = Client::connect(&shard).await;
    let mut paused = match subscribe(0, BROADCAST, "video", Filter::LargestObject) {
        ControlMessage::Subscribe(s) => s,
        _ => unreachable!(),
    };
    paused.forward = false;
    client.send(paused.into()).await;
    assert!(matches!(
        client.reply().await,
        ControlMessage::SubscribeOk(_)
    ));
    let (upstream, _send, _reader) = within("upstream SUBSCRIBE", publisher.next_subscribe()).await;
    send_group(&publisher, upstream.id, 1, &frames(2, 40)).await;
    publisher
        .peer
        .transport
        .close(crate::lite::SessionCode::CANCEL, "gone");
    match client.reply().await {
        ControlMessage::PublishDone(done) => {
            assert_eq!(
                (done.status, done.stream_count),
                (0x2, 0),
                "no stream while paused"
            )
        }
        other => panic!("expected PUBLISH_DONE, got {other:?}"),
    }
}

#[monoio::test(enable_timer = true)]
async fn a_namespace_below_an_announced_one_routes_to_its_publisher() {
    let shard = shard(settings());
    let publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
    let mut client = Client::connect(&shard).await;
    let mut request = match subscribe(0, BROADCAST, "video", Filter::LargestObject) {
        ControlMessage::Subscribe(s) => s,
        _ => unreachable!(),
    };
    request.namespace = vec![BROADCAST.into(), "case".into(), "7".into()];
    client.send(request.clone().into()).await;
    assert!(matches!(
        client.reply().await,
        ControlMessage::SubscribeOk(_)
    ));
    // The upstream request names the full namespace, below the broadcast.
    let (upstream, _send, _reader) = within("upstream SUBSCRIBE", publisher.next_subscribe()).await;
    assert_eq!(
        (upstream.broadcast.as_str(), upstream.track.as_str()),
        ("live/case/7", "video")
    );
    // A namespace that only shares a prefix of a field is not below it.
    request.request_id = 2;
    request.namespace = vec![format!("{BROADCAST}x"), "case".into()];
    client.send(request.into()).await;
    match client.reply().await {
        ControlMessage::SubscribeError(e) => assert_eq!((e.request_id, e.code), (2, 0x4)),
        other => panic!("expected SUBSCRIBE_ERROR, got {other:?}"),
    }
}

#[monoio::test(enable_timer = true)]
async fn unsubscribe_namespace_frees_the_listener_by_prefix_or_request_id() {
    let shard = shard(settings());
    let _publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
    let mut client = Client::connect(&shard).await;
    let listeners = || shard.stats.announce_listeners_open.get();
    let before = listeners();
    let interests = [
        NamespaceInterest::Prefix(vec![BROADCAST.into()]),
        // moq-net 0.3.18 names the SUBSCRIBE_NAMESPACE's Request ID instead.
        NamespaceInterest::RequestId(2),
    ];
    for (i, interest) in interests.into_iter().enumerate() {
        let request_id = 2 * i as u64;
        client
            .send(
                SubscribeNamespace {
                    request_id,
                    prefix: vec![BROADCAST.into()],
                    parameters: Parameters::default(),
                }
                .into(),
            )
            .await;
        assert!(matches!(
            client.reply().await,
            ControlMessage::SubscribeNamespaceOk(ok) if ok.request_id == request_id
        ));
        assert!(matches!(
            client.reply().await,
            ControlMessage::PublishNamespace(_)
        ));
        eventually("the listener", || listeners() == before + 1).await;
        client.send(UnsubscribeNamespace { interest }.into()).await;
        eventually("the listener freed", || listeners() == before).await;
    }
    // One that names nothing open is no violation.
    let nothing = NamespaceInterest::Prefix(vec!["elsewhere".into()]);
    client
        .send(UnsubscribeNamespace { interest: nothing }.into())
        .await;
    client
        .send(subscribe(4, BROADCAST, "video", Filter::LargestObject))
        .await;
    assert!(matches!(
        client.reply().await,
        ControlMessage::SubscribeOk(_)
    ));
}

mod draft22 {
    use super::*;

    fn update(request_id: u64, parameters: Vec<(u64, ParamValue)>) -> Vec<u8> {
        d22::RequestUpdate {
            request_id,
            parameters: MessageParameters(parameters),
        }
        .to_vec()
        .unwrap()
    }

    async fn send(request: &mut Request22, bytes: Vec<u8>) {
        request.send.write_chunk(Bytes::from(bytes)).await.unwrap();
    }

    #[monoio::test(enable_timer = true)]
    async fn a_range_ends_inside_its_last_group_and_request_update_moves_it() {
        let shard = shard(settings());
        let publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
        let client = Client22::connect(&shard).await;
        let range = LocationFilter::AbsoluteRange {
            start: loc(1, 1),
            end_group: 2,
            end_object: 1,
        };
        let mut request = client.subscribe(0, BROADCAST, range).await;
        assert!(matches!(
            request.reply().await,
            RequestMessage::SubscribeOk(_)
        ));
        let (upstream, _send, _reader) =
            within("upstream SUBSCRIBE", publisher.next_subscribe()).await;
        let sent = frames(3, 40);
        send_group(&publisher, upstream.id, 1, &sent).await;
        let (header, objects) = read_subgroup22(&client.transport).await;
        assert_eq!((header.group, header.first_object), (1, false));
        assert_eq!(ids(&objects), [1, 2]);
        send_group(&publisher, upstream.id, 2, &sent).await;
        let (header, objects) = read_subgroup22(&client.transport).await;
        assert_eq!(
            (header.group, header.end_of_group, ids(&objects)),
            (2, false, vec![0, 1]),
            "FIN after object 1 does not end the group"
        );

        // Draft 22 keeps the subscription open past its range; an update
        // may move the end on, and is answered with the Largest Object.
        let later = LocationFilter::AbsoluteGroupEnd {
            start: loc(3, 0),
            end_group: 9,
        };
        let parameters = vec![
            (d22::param::SUBSCRIBER_PRIORITY, ParamValue::Byte(1)),
            (d22::param::LOCATION_FILTER, ParamValue::Filter(later)),
        ];
        send(&mut request, update(2, parameters)).await;
        match request.reply().await {
            RequestMessage::RequestOk(ok) => assert_eq!(ok.parameters.largest(), Some(loc(2, 2))),
            other => panic!("expected REQUEST_OK, got {other:?}"),
        }
        send_group(&publisher, upstream.id, 3, &sent).await;
        let (header, objects) = read_subgroup22(&client.transport).await;
        assert_eq!((header.group, ids(&objects)), (3, vec![0, 1, 2]));

        // An update this relay cannot apply: REQUEST_ERROR, then PUBLISH_DONE
        // UPDATE_FAILED with the stream count, then FIN.
        let timeout = vec![(d22::param::DELIVERY_TIMEOUT, ParamValue::Varint(100))];
        send(&mut request, update(4, timeout)).await;
        match request.reply().await {
            RequestMessage::RequestError(e) => assert_eq!(e.code, 0x3),
            other => panic!("expected REQUEST_ERROR, got {other:?}"),
        }
        match request.reply().await {
            RequestMessage::PublishDone(done) => {
                assert_eq!((done.status, done.stream_count), (0x8, 3))
            }
            other => panic!("expected PUBLISH_DONE, got {other:?}"),
        }
        assert!(request.replies.at_end().await);
    }

    #[monoio::test(enable_timer = true)]
    async fn a_bad_update_is_refused_and_another_message_is_a_violation() {
        let shard = shard(settings());
        let _publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
        let client = Client22::connect(&shard).await;
        let mut request = client
            .subscribe(0, BROADCAST, LocationFilter::NextObject)
            .await;
        assert!(matches!(
            request.reply().await,
            RequestMessage::SubscribeOk(_)
        ));
        let backwards = LocationFilter::AbsoluteRange {
            start: loc(4, 2),
            end_group: 4,
            end_object: 1,
        };
        send(
            &mut request,
            update(
                2,
                vec![(d22::param::LOCATION_FILTER, ParamValue::Filter(backwards))],
            ),
        )
        .await;
        match request.reply().await {
            RequestMessage::RequestError(e) => assert_eq!(e.code, 0x11),
            other => panic!("expected REQUEST_ERROR, got {other:?}"),
        }
        assert!(matches!(
            request.reply().await,
            RequestMessage::PublishDone(done) if done.status == 0x8
        ));

        // A second SUBSCRIBE on a subscription's stream closes the session.
        let mut request = client
            .subscribe(4, BROADCAST, LocationFilter::NextObject)
            .await;
        assert!(matches!(
            request.reply().await,
            RequestMessage::SubscribeOk(_)
        ));
        let again = d22::Subscribe {
            request_id: 6,
            namespace: vec![BROADCAST.into()],
            name: "video".into(),
            parameters: MessageParameters::default(),
        };
        send(&mut request, again.to_vec().unwrap()).await;
        assert_eq!(
            client.closed_with().await,
            SessionCode::PROTOCOL_VIOLATION.0
        );
    }

    #[monoio::test(enable_timer = true)]
    async fn cancelling_subscribe_namespace_frees_the_listener() {
        let shard = shard(settings());
        let _publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
        let client = Client22::connect(&shard).await;
        let listeners = || shard.stats.announce_listeners_open.get();
        let before = listeners();
        let request = d22::SubscribeNamespace {
            request_id: 0,
            prefix: vec![],
            parameters: MessageParameters::default(),
        };
        let mut listen = client.request(request.to_vec().unwrap()).await;
        assert!(matches!(listen.reply().await, RequestMessage::RequestOk(_)));
        eventually("the listener", || listeners() == before + 1).await;
        listen
            .send
            .reset(client.transport.stream_code(crate::lite::StreamCode(0x1)))
            .unwrap();
        eventually("the listener freed", || listeners() == before).await;
    }
}

/// PUBLISH_DONE travels on the control stream, apart from the subgroup
/// streams it counts, and can overtake the end of the last one (aiomoqt's
/// publisher sends it right after its last FIN): the relay ends the track
/// only once the counted streams have ended, so the last group arrives whole.
#[monoio::test(enable_timer = true)]
async fn publish_done_waits_for_the_streams_it_counts() {
    let shard = shard(settings());
    let (mut client, subscriber, _subscription, request) =
        ietf_publisher_with_lite_subscriber(&shard).await;
    client.send(subscribe_ok(&request, 9)).await;
    let sent = frames(3, 150);
    let object = |payload: &Bytes| {
        let mut data = Vec::new();
        crate::ietf_session::bridge::object_for_frame(payload.len() as u64)
            .encode(&mut data)
            .unwrap();
        data.extend_from_slice(payload);
        data
    };
    let mut head = Vec::new();
    crate::ietf_session::bridge::subgroup_for_group(9, 3, 0)
        .encode(&mut head, V)
        .unwrap();
    head.extend(object(&sent[0].1));
    let mut stream = client.transport.open_uni().await.unwrap();
    stream.write_chunk(Bytes::from(head)).await.unwrap();
    let mut received = ReceivedGroup::accept(&subscriber).await;
    let (_, first) = received.frame().await.unwrap().expect("the first frame");
    assert_eq!(first, sent[0].1);
    // The publisher is done, with one stream still being written.
    client
        .send(
            PublishDone {
                request_id: request.request_id,
                status: 0x2,
                stream_count: 1,
                reason: String::new(),
            }
            .into(),
        )
        .await;
    let rest: Vec<u8> = sent[1..].iter().flat_map(|(_, p)| object(p)).collect();
    stream.write_chunk(Bytes::from(rest)).await.unwrap();
    stream.finish().unwrap();
    for (_, payload) in &sent[1..] {
        let (_, got) = received.frame().await.unwrap().expect("a frame");
        assert_eq!(&got, payload);
    }
    assert!(received.frame().await.unwrap().is_none(), "the group ends");
}

/// SUBSCRIBE_UPDATE's priority reaches the streams the subscription opens
/// after it (and, before their next write, those already open): their send
/// priority is the subscription's first, then the group.
#[monoio::test(enable_timer = true)]
async fn a_priority_update_reaches_the_send_order() {
    let shard = shard(settings());
    let publisher = Publisher::connect(&shard, crate::lite::Version::Lite06).await;
    let mut client = Client::connect(&shard).await;
    let mut request = match subscribe(0, BROADCAST, "video", Filter::LargestObject) {
        ControlMessage::Subscribe(s) => s,
        _ => unreachable!(),
    };
    request.subscriber_priority = 200;
    client.send(request.into()).await;
    assert!(matches!(
        client.reply().await,
        ControlMessage::SubscribeOk(ok) if ok.largest.is_none()
    ));
    let (upstream, _send, _reader) = within("upstream SUBSCRIBE", publisher.next_subscribe()).await;
    let send_priority = |ietf: u8, group: i32| {
        (i32::from(crate::ietf_session::bridge::lite_priority(ietf)) << 23) | group
    };
    let sent = frames(2, 40);
    send_group(&publisher, upstream.id, 1, &sent).await;
    let (recv, _) = within("a subgroup stream", client.transport.accept_uni())
        .await
        .unwrap();
    eventually("the stream's priority", || recv.priority().is_some()).await;
    assert_eq!(recv.priority(), Some(send_priority(200, 1)));

    let mut more_urgent = match update(2, 0, loc(0, 0), 0) {
        ControlMessage::SubscribeUpdate(u) => u,
        _ => unreachable!(),
    };
    more_urgent.subscriber_priority = 10;
    client.send(more_urgent.into()).await;
    // Control messages are handled in order: once this is answered, the
    // update has been applied.
    client
        .send(subscribe(4, "nobody", "video", Filter::LargestObject))
        .await;
    assert!(matches!(
        client.reply().await,
        ControlMessage::SubscribeError(_)
    ));
    send_group(&publisher, upstream.id, 2, &sent).await;
    let (recv, _) = within("a subgroup stream", client.transport.accept_uni())
        .await
        .unwrap();
    eventually("the stream's priority", || recv.priority().is_some()).await;
    assert_eq!(recv.priority(), Some(send_priority(10, 2)));
    // IETF priorities rank lower first, QUIC send priorities higher first.
    assert!(send_priority(10, 2) > send_priority(200, 1));
}
