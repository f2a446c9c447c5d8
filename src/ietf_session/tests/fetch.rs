//! FETCH from the relay's group cache, on draft 14 and draft 22: a lite
//! publisher's groups are pulled into the cache by an IETF subscriber, then
//! fetched by another session (standalone), or beside a SUBSCRIBE of the
//! fetching session (joining). Cancel and session end release every hold.

use super::draft22::{Client22, Request22};
use super::*;
use crate::ietf::draft22::{
    self as d22, Decode as _, Encode as _, LocationFilter, MessageParameters, ParamValue,
    RequestMessage,
};
use crate::ietf::{Fetch, FetchCancel, FetchHeader, FetchObject, FetchType};
use crate::session::memory::MemoryTransport;
use crate::session::tests::{eventually, Upstream};

fn loc(group: u64, object: u64) -> Location {
    Location { group, object }
}

fn fetch14(request_id: u64, fetch_type: FetchType) -> ControlMessage {
    Fetch {
        request_id,
        subscriber_priority: 3,
        group_order: GroupOrder::Ascending,
        fetch_type,
        parameters: Parameters::default(),
    }
    .into()
}

fn standalone(broadcast: &str, start: Location, end: Location) -> FetchType {
    FetchType::Standalone {
        namespace: vec![broadcast.into()],
        name: "video".into(),
        start,
        end,
    }
}

/// A lite publisher of BROADCAST's "video" and a draft-14 subscriber that
/// has read `groups` (each of `frames`) whole, so the shard caches them.
struct Cached {
    publisher: Publisher,
    subscriber: Client,
    upstream: Upstream,
}

async fn cached(shard: &Rc<Shard>, groups: &[u64], frames: &[(u64, Bytes)]) -> Cached {
    let publisher = Publisher::connect(shard, crate::lite::Version::Lite06).await;
    let mut subscriber = Client::connect(shard).await;
    subscriber
        .send(subscribe(0, BROADCAST, "video", Filter::LargestObject))
        .await;
    assert!(matches!(
        subscriber.reply().await,
        ControlMessage::SubscribeOk(_)
    ));
    let upstream = within("upstream SUBSCRIBE", publisher.next_subscribe()).await;
    for &group in groups {
        let mut stream = publisher.send_group(upstream.0.id, group, frames).await;
        stream.finish().unwrap();
        let (recv, leftover) = within("a subgroup stream", subscriber.transport.accept_uni())
            .await
            .unwrap();
        let mut stream = Incoming::new(recv, leftover);
        let limits = limits();
        let header = stream
            .decode(|b| SubgroupHeader::decode(b, V, &limits))
            .await;
        assert_eq!(header.group, group);
        while !stream.at_end().await {
            let object = stream
                .decode(|b| SubgroupObject::decode(b, header.extensions, &limits))
                .await;
            stream.payload(object.payload_len as usize).await;
        }
    }
    Cached {
        publisher,
        subscriber,
        upstream,
    }
}

/// The next uni stream that starts with `FETCH_HEADER` (type 0x05); the
/// subgroup streams of a subscription before it are dropped.
async fn next_fetch_stream(transport: &MemoryTransport) -> Incoming {
    loop {
        let (recv, leftover) = within("a fetch stream", transport.accept_uni())
            .await
            .unwrap();
        let mut stream = Incoming::new(recv, leftover);
        if stream.buf.is_empty() {
            assert!(stream.fill().await, "an empty uni stream");
        }
        if stream.buf[0] == 0x05 {
            return stream;
        }
    }
}

/// A draft-14 fetch stream's objects up to its FIN: (group, object, payload).
async fn fetched14(stream: &mut Incoming, request_id: u64) -> Vec<(u64, u64, Bytes)> {
    let limits = limits();
    let header = stream.decode(|b| FetchHeader::decode(b, V, &limits)).await;
    assert_eq!(header.request_id, request_id);
    let mut objects = Vec::new();
    while !stream.at_end().await {
        let object = stream.decode(|b| FetchObject::decode(b, V, &limits)).await;
        assert_eq!(object.subgroup, 0, "one subgroup per group");
        let payload = stream.payload(object.payload_len as usize).await;
        objects.push((object.group, object.object, payload));
    }
    objects
}

/// What the fetch stream should carry: `(group, object)` of `frames`.
fn expected(locations: &[(u64, u64)], frames: &[(u64, Bytes)]) -> Vec<(u64, u64, Bytes)> {
    locations
        .iter()
        .map(|&(g, o)| (g, o, frames[o as usize].1.clone()))
        .collect()
}

async fn fetches_settled(shard: &Shard) {
    eventually("the fetches to end", || shard.stats.fetches_open.get() == 0).await;
}

#[monoio::test(enable_timer = true)]
async fn a_standalone_fetch_serves_the_cached_range_as_objects() {
    let shard = shard(settings());
    let sent = frames(3, 100);
    let _cached = cached(&shard, &[4, 5], &sent).await;
    let mut client = Client::connect(&shard).await;
    // From object 1 of group 4 to object 2 of group 5, exclusive.
    client
        .send(fetch14(0, standalone(BROADCAST, loc(4, 1), loc(5, 2))))
        .await;
    match client.reply().await {
        ControlMessage::FetchOk(ok) => {
            assert_eq!((ok.request_id, ok.end_of_track), (0, false));
            assert_eq!(ok.end, loc(5, 2), "one past the last object, as moq-net");
        }
        other => panic!("expected FETCH_OK, got {other:?}"),
    }
    let mut stream = next_fetch_stream(&client.transport).await;
    assert_eq!(
        fetched14(&mut stream, 0).await,
        expected(&[(4, 1), (4, 2), (5, 0), (5, 1)], &sent)
    );

    // End Object 0 is the whole end group.
    client
        .send(fetch14(2, standalone(BROADCAST, loc(5, 0), loc(5, 0))))
        .await;
    assert!(matches!(client.reply().await, ControlMessage::FetchOk(ok) if ok.end == loc(5, 3)));
    let mut stream = next_fetch_stream(&client.transport).await;
    assert_eq!(
        fetched14(&mut stream, 2).await,
        expected(&[(5, 0), (5, 1), (5, 2)], &sent)
    );
    fetches_settled(&shard).await;
    assert_eq!(shard.stats.fetches_served.get(), 2);
}

#[monoio::test(enable_timer = true)]
async fn fetches_of_what_is_not_there_are_refused_alone() {
    let shard = shard(settings());
    let _cached = cached(&shard, &[4], &frames(2, 10)).await;
    let mut client = Client::connect(&shard).await;
    let cases = [
        // Groups the cache never held.
        (standalone(BROADCAST, loc(0, 0), loc(2, 0)), 0x4),
        // A track nobody publishes.
        (standalone("nobody", loc(0, 0), loc(1, 0)), 0x4),
        // A range that ends before it starts.
        (standalone(BROADCAST, loc(4, 1), loc(4, 1)), 0x5),
        // A joining FETCH of no subscription.
        (
            FetchType::RelativeJoining {
                joining_request_id: 40,
                joining_start: 1,
            },
            0x7,
        ),
    ];
    for (i, (fetch_type, code)) in cases.into_iter().enumerate() {
        let id = 2 * i as u64;
        client.send(fetch14(id, fetch_type)).await;
        match client.reply().await {
            ControlMessage::FetchError(e) => assert_eq!((e.request_id, e.code), (id, code)),
            other => panic!("expected FETCH_ERROR, got {other:?}"),
        }
    }
    // The session is still up, and every refusal gave its slot back.
    client
        .send(fetch14(8, standalone(BROADCAST, loc(4, 0), loc(4, 0))))
        .await;
    assert!(matches!(client.reply().await, ControlMessage::FetchOk(_)));
    fetches_settled(&shard).await;
    assert_eq!(shard.stats.fetches_not_found.get(), 2);
}

#[monoio::test(enable_timer = true)]
async fn a_joining_fetch_serves_the_groups_before_its_subscription() {
    let shard = shard(settings());
    let sent = frames(2, 50);
    let _cached = cached(&shard, &[3, 4, 5], &sent).await;
    let mut client = Client::connect(&shard).await;
    // SUBSCRIBE and its joining FETCH back to back, as aiomoqt's join()
    // sends them: the subscription starts with group 5 whole, so the FETCH
    // two groups back from Largest (5) is groups 3 and 4.
    client
        .send(subscribe(0, BROADCAST, "video", Filter::LargestObject))
        .await;
    client
        .send(fetch14(
            2,
            FetchType::RelativeJoining {
                joining_request_id: 0,
                joining_start: 2,
            },
        ))
        .await;
    match client.reply().await {
        ControlMessage::SubscribeOk(ok) => assert_eq!(ok.largest, Some(loc(5, 1))),
        other => panic!("expected SUBSCRIBE_OK, got {other:?}"),
    }
    match client.reply().await {
        ControlMessage::FetchOk(ok) => assert_eq!((ok.request_id, ok.end), (2, loc(4, 2))),
        other => panic!("expected FETCH_OK, got {other:?}"),
    }
    let mut stream = next_fetch_stream(&client.transport).await;
    assert_eq!(
        fetched14(&mut stream, 2).await,
        expected(&[(3, 0), (3, 1), (4, 0), (4, 1)], &sent)
    );

    // Absolute joining from group 4: group 4 only.
    client
        .send(fetch14(
            4,
            FetchType::AbsoluteJoining {
                joining_request_id: 0,
                joining_start: 4,
            },
        ))
        .await;
    assert!(matches!(client.reply().await, ControlMessage::FetchOk(ok) if ok.request_id == 4));
    let mut stream = next_fetch_stream(&client.transport).await;
    assert_eq!(
        fetched14(&mut stream, 4).await,
        expected(&[(4, 0), (4, 1)], &sent)
    );
    fetches_settled(&shard).await;
}

/// Groups of 600 KB: more than a memory stream's 256 KiB window, so a fetch
/// stream the client does not read stalls with most of its group unsent.
fn big_frames() -> Vec<(u64, Bytes)> {
    frames(3, 200_000)
}

/// Read a stream until it ends; `true` if it was reset rather than finished.
async fn was_reset(stream: &mut Incoming) -> bool {
    loop {
        match within("the stream's end", stream.recv.read_chunk(usize::MAX)).await {
            Ok(Some(_)) => continue,
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

#[monoio::test(enable_timer = true)]
async fn fetch_cancel_resets_the_stream_and_frees_the_slot() {
    let shard = shard(settings());
    let _cached = cached(&shard, &[1], &big_frames()).await;
    let mut client = Client::connect(&shard).await;
    client
        .send(fetch14(0, standalone(BROADCAST, loc(1, 0), loc(1, 0))))
        .await;
    assert!(matches!(client.reply().await, ControlMessage::FetchOk(_)));
    let mut stream = next_fetch_stream(&client.transport).await;
    assert_eq!(shard.stats.fetches_open.get(), 1);
    client.send(FetchCancel { request_id: 0 }.into()).await;
    // Unread, the stream stalls until the cancel ends it.
    fetches_settled(&shard).await;
    assert!(
        was_reset(&mut stream).await,
        "FETCH_CANCEL resets the stream"
    );
    assert_eq!(shard.stats.fetches_served.get(), 0);
}

#[monoio::test(enable_timer = true)]
async fn a_session_that_ends_mid_fetch_releases_the_track() {
    let shard = shard(settings());
    let mut cached = cached(&shard, &[1], &big_frames()).await;
    let client = {
        let mut client = Client::connect(&shard).await;
        client
            .send(fetch14(0, standalone(BROADCAST, loc(1, 0), loc(1, 0))))
            .await;
        assert!(matches!(client.reply().await, ControlMessage::FetchOk(_)));
        client
    };
    let _stream = next_fetch_stream(&client.transport).await;
    // The cache's own subscriber leaves: only the stalled FETCH holds the
    // track now.
    cached
        .subscriber
        .send(Unsubscribe { request_id: 0 }.into())
        .await;
    eventually("the subscription to end", || {
        shard.stats.subscriptions_open.get() == 0
    })
    .await;
    assert_eq!(shard.stats.fetches_open.get(), 1);
    client
        .transport
        .close(crate::lite::SessionCode::CANCEL, "gone");
    fetches_settled(&shard).await;
    // The last hold on the track went with the fetch: the relay ends its
    // upstream SUBSCRIBE.
    let _ = within("upstream released", cached.upstream.2.discard_to_end()).await;
    drop(cached.publisher);
}

#[monoio::test(enable_timer = true)]
async fn a_malformed_fetch_closes_the_session_with_protocol_violation() {
    let shard = shard(settings());
    let mut client = Client::connect(&shard).await;
    // FETCH, Request ID 0, priority, ascending, Fetch Type 9.
    client
        .control
        .write_chunk(Bytes::from_static(&[
            0x16, 0x00, 0x04, 0x00, 0x80, 0x01, 0x09,
        ]))
        .await
        .unwrap();
    within("close", client.transport.closed()).await;
    let close = client.transport.close_reason().unwrap();
    assert_eq!(close.code.0, SessionCode::PROTOCOL_VIOLATION.0);
}

#[monoio::test(enable_timer = true)]
async fn fetches_and_subscriptions_share_the_request_limit() {
    let mut settings = settings();
    settings.max_subscriptions_per_session = 1;
    let shard = shard(settings);
    let _cached = cached(&shard, &[1], &big_frames()).await;
    let mut client = Client::connect(&shard).await;
    client
        .send(fetch14(0, standalone(BROADCAST, loc(1, 0), loc(1, 0))))
        .await;
    assert!(matches!(client.reply().await, ControlMessage::FetchOk(_)));
    let mut stream = next_fetch_stream(&client.transport).await;
    // The stalled fetch holds the session's one slot.
    client
        .send(fetch14(2, standalone(BROADCAST, loc(1, 0), loc(1, 0))))
        .await;
    match client.reply().await {
        ControlMessage::FetchError(e) => assert_eq!((e.request_id, e.code), (2, 0x3)),
        other => panic!("expected FETCH_ERROR, got {other:?}"),
    }
    // So does a SUBSCRIBE.
    client
        .send(subscribe(4, BROADCAST, "video", Filter::LargestObject))
        .await;
    match client.reply().await {
        ControlMessage::SubscribeError(e) => assert_eq!((e.request_id, e.code), (4, 0x3)),
        other => panic!("expected SUBSCRIBE_ERROR, got {other:?}"),
    }
    // Read to the end: the slot is free again.
    assert_eq!(fetched14(&mut stream, 0).await.len(), 3);
    fetches_settled(&shard).await;
    client
        .send(fetch14(6, standalone(BROADCAST, loc(1, 0), loc(1, 1))))
        .await;
    assert!(matches!(client.reply().await, ControlMessage::FetchOk(_)));
}

// ---------------------------------------------------------------------------
// Draft 22

async fn fetch22(client: &Client22, id: u64, broadcast: &str, filter: LocationFilter) -> Request22 {
    let request = d22::Fetch {
        request_id: id,
        namespace: vec![broadcast.into()],
        name: "video".into(),
        parameters: MessageParameters(vec![
            (d22::param::SUBSCRIBER_PRIORITY, ParamValue::Byte(10)),
            (d22::param::LOCATION_FILTER, ParamValue::Filter(filter)),
        ]),
    };
    client.request(request.to_vec().unwrap()).await
}

/// A draft-22 fetch stream's objects up to its FIN, their locations rebuilt
/// from the serialization flags.
async fn fetched22(stream: &mut Incoming, request_id: u64) -> Vec<(u64, u64, Bytes)> {
    let limits = limits();
    let header = stream
        .decode(|b| d22::FetchHeader::decode(b, &limits))
        .await;
    assert_eq!(header.request_id, request_id);
    let mut objects = Vec::new();
    let mut prior: Option<Location> = None;
    while !stream.at_end().await {
        let object = stream
            .decode(|b| d22::FetchObject::decode(b, &limits))
            .await;
        let d22::FetchObject::Object {
            subgroup,
            group,
            object,
            payload_len,
            ..
        } = object
        else {
            panic!("an End of Range from a cache that has every object");
        };
        assert_eq!(subgroup, d22::FetchSubgroup::Zero);
        let at = match (prior, group, object) {
            (None, Some(g), Some(o)) => loc(g, o),
            (Some(p), None, None) => loc(p.group, p.object + 1),
            (Some(p), None, Some(d)) => loc(p.group, p.object + d + 1),
            (Some(p), Some(d), Some(o)) => loc(p.group + d + 1, o),
            other => panic!("unexpected object fields {other:?}"),
        };
        let payload = stream.payload(payload_len as usize).await;
        objects.push((at.group, at.object, payload));
        prior = Some(at);
    }
    objects
}

#[monoio::test(enable_timer = true)]
async fn a_draft22_fetch_serves_its_location_filter_from_the_cache() {
    let shard = shard(settings());
    let sent = frames(3, 100);
    let _cached = cached(&shard, &[4, 5], &sent).await;
    let client = Client22::connect(&shard).await;
    let mut request = fetch22(
        &client,
        0,
        BROADCAST,
        LocationFilter::AbsoluteRange {
            start: loc(4, 1),
            end_group: 5,
            end_object: 0,
        },
    )
    .await;
    match request.reply().await {
        RequestMessage::FetchOk(ok) => {
            assert_eq!(
                (ok.end, ok.end_of_track),
                (loc(5, 0), false),
                "inclusive end"
            );
        }
        other => panic!("expected FETCH_OK, got {other:?}"),
    }
    assert!(request.replies.at_end().await, "FIN after FETCH_OK");
    let mut stream = next_fetch_stream(&client.transport).await;
    assert_eq!(
        fetched22(&mut stream, 0).await,
        expected(&[(4, 1), (4, 2), (5, 0)], &sent)
    );

    // No filter: everything cached.
    let mut request = fetch22(&client, 2, BROADCAST, LocationFilter::None).await;
    assert!(matches!(
        request.reply().await,
        RequestMessage::FetchOk(ok) if ok.end == loc(5, 2)
    ));
    let mut stream = next_fetch_stream(&client.transport).await;
    assert_eq!(fetched22(&mut stream, 2).await.len(), 6);

    // Refused alone: an unknown track, a filter relative to Largest.
    let mut unknown = fetch22(&client, 4, "nobody", LocationFilter::None).await;
    assert!(matches!(
        unknown.reply().await,
        RequestMessage::RequestError(e) if e.code == 0x10
    ));
    let mut relative = fetch22(&client, 6, BROADCAST, LocationFilter::NextObject).await;
    assert!(matches!(
        relative.reply().await,
        RequestMessage::RequestError(e) if e.code == 0x3
    ));
    fetches_settled(&shard).await;
    assert_eq!(shard.stats.fetches_served.get(), 2);

    // A FETCH whose body does not parse closes the session.
    let _junk = client.request(vec![0x16, 0x00, 0x02, 0x04, 0x00]).await;
    assert_eq!(
        client.closed_with().await,
        SessionCode::PROTOCOL_VIOLATION.0
    );
}

#[monoio::test(enable_timer = true)]
async fn resetting_a_draft22_fetch_request_resets_its_stream() {
    let shard = shard(settings());
    let _cached = cached(&shard, &[1], &big_frames()).await;
    let client = Client22::connect(&shard).await;
    let mut request = fetch22(&client, 0, BROADCAST, LocationFilter::None).await;
    assert!(matches!(request.reply().await, RequestMessage::FetchOk(_)));
    let mut stream = next_fetch_stream(&client.transport).await;
    request
        .send
        .reset(client.transport.stream_code(crate::lite::StreamCode(0x1)))
        .unwrap();
    fetches_settled(&shard).await;
    assert!(was_reset(&mut stream).await);
    assert_eq!(shard.stats.fetches_served.get(), 0);
}

#[monoio::test(enable_timer = true)]
async fn a_draft22_fill_serves_the_groups_before_its_subscription() {
    let shard = shard(settings());
    let sent = frames(2, 50);
    let _cached = cached(&shard, &[3, 4, 5], &sent).await;
    let client = Client22::connect(&shard).await;
    // FILL: count 1, LOCATION_FILTER (0x21) RELATIVE_START 2: the two
    // groups up to Largest (5), less group 5, which the subscription sends.
    let request = d22::Subscribe {
        request_id: 0,
        namespace: vec![BROADCAST.into()],
        name: "video".into(),
        parameters: MessageParameters(vec![
            (d22::param::SUBSCRIBER_PRIORITY, ParamValue::Byte(10)),
            (
                d22::param::LOCATION_FILTER,
                ParamValue::Filter(LocationFilter::NextObject),
            ),
            (
                d22::param::FILL,
                ParamValue::Bytes(vec![0x01, 0x21, 0x01, 0x02]),
            ),
        ]),
    };
    let mut request = client.request(request.to_vec().unwrap()).await;
    assert!(matches!(
        request.reply().await,
        RequestMessage::SubscribeOk(_)
    ));
    let mut stream = next_fetch_stream(&client.transport).await;
    assert_eq!(
        fetched22(&mut stream, 0).await,
        expected(&[(4, 0), (4, 1)], &sent)
    );
    // The subscription ends with the track: its Stream Count has the fill.
    _cached
        .publisher
        .peer
        .transport
        .close(crate::lite::SessionCode::CANCEL, "gone");
    match request.reply().await {
        RequestMessage::PublishDone(done) => assert_eq!(done.stream_count, 2),
        other => panic!("expected PUBLISH_DONE, got {other:?}"),
    }
}
