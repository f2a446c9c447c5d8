//! Object extension headers through the relay, on in-memory transports: a
//! draft-14 publisher's blocks reach a draft-14 subscriber byte for byte (and
//! a frame without them an empty block on the same stream), a draft-22
//! subscriber of the same track gets the payloads without them (the drafts'
//! layouts differ), and a block over the relay's bound stops that stream
//! alone, counted. Every wait has a deadline; no sleeps.

use bytes::{Bytes, BytesMut};

use super::bridge::MAX_OBJECT_EXTENSIONS;
use super::test_clients::{publish_namespace, reply22, subscribe, Client14, Client22, Incoming};
use crate::ietf::draft22::{self as d22, Decode as _, Encode as _, RequestMessage};
use crate::ietf::{
    ControlMessage, Decode, Encode, GroupOrder, Parameters, SubgroupHeader, SubgroupId,
    SubgroupObject, SubscribeOk, Version,
};
use crate::session::memory::MemoryTransport;
use crate::session::tests::{settings, shard, within};
use crate::session::transport::{SendStream, Transport};

const ALIAS: u64 = 5;

/// Draft-14 objects: (extension block, payload). An empty block is written
/// as a zero length, as the stream type requires of every object.
fn subgroup14(group: u64, objects: &[(&[u8], &[u8])]) -> Bytes {
    let mut data = BytesMut::new();
    SubgroupHeader {
        track_alias: ALIAS,
        group,
        subgroup: SubgroupId::Zero,
        publisher_priority: 0,
        extensions: true,
        end_of_group: true,
    }
    .encode(&mut data, Version::Draft14)
    .unwrap();
    for (extensions, payload) in objects {
        SubgroupObject {
            object_id_delta: 0,
            extensions: Some(extensions.to_vec()),
            payload_len: payload.len() as u64,
            status: None,
        }
        .encode(&mut data)
        .unwrap();
        data.extend_from_slice(payload);
    }
    data.freeze()
}

/// The next uni stream that is not the relay's draft-22 SETUP stream.
async fn data_stream(transport: &MemoryTransport) -> Incoming {
    loop {
        let (recv, leftover) = within("a uni stream", transport.accept_uni())
            .await
            .unwrap();
        let mut stream = Incoming {
            recv,
            buf: BytesMut::from(&leftover[..]),
        };
        // Peeked, not consumed (a draft-14 type reads as some other value).
        let ty = stream.decode(|b| d22::peek_type(b).map(|t| (t, 0))).await;
        if ty != d22::SETUP_TYPE {
            return stream;
        }
    }
}

async fn payload(stream: &mut Incoming, len: usize) -> Bytes {
    stream
        .decode(|b| match b.len() >= len {
            true => Ok((Bytes::copy_from_slice(&b[..len]), len)),
            false => Err(crate::ietf::DecodeError::Short),
        })
        .await
}

#[monoio::test(enable_timer = true)]
async fn draft14_extension_headers_pass_through_to_draft14_and_not_to_draft22() {
    let shard = shard(settings());
    let limits = settings().limits;
    let mut publisher = Client14::admitted(&shard, "", vec![]).await;
    publisher.send(publish_namespace(0, "ext")).await;
    assert!(matches!(
        publisher.reply().await,
        ControlMessage::PublishNamespaceOk(_)
    ));

    let mut sub14 = Client14::admitted(&shard, "", vec![]).await;
    sub14.send(subscribe(0, "ext")).await;
    let upstream = match publisher.reply().await {
        ControlMessage::Subscribe(s) => s,
        other => panic!("expected the relay's SUBSCRIBE, got {other:?}"),
    };
    assert!(matches!(
        sub14.reply().await,
        ControlMessage::SubscribeOk(_)
    ));
    let sub22 = Client22::dial(&shard, vec![]).await;
    let request = d22::Subscribe {
        request_id: 0,
        namespace: vec!["ext".into()],
        name: "video".into(),
        parameters: d22::MessageParameters::default(),
    };
    let (_request, mut replies) = sub22.request(request.to_vec().unwrap()).await;
    assert!(matches!(
        reply22(&mut replies).await,
        RequestMessage::SubscribeOk(_)
    ));
    publisher
        .send(
            SubscribeOk {
                request_id: upstream.request_id,
                track_alias: ALIAS,
                expires: 0,
                group_order: GroupOrder::Ascending,
                largest: None,
                parameters: Parameters::default(),
            }
            .into(),
        )
        .await;

    // Two key-value pairs (a varint and a byte string), then none, then one.
    let blocks: [&[u8]; 3] = [b"\x02\x05\x03\x02hi", b"", b"\x04\x3f"];
    let payloads: [&[u8]; 3] = [b"first", b"second", b"third"];
    let objects: Vec<(&[u8], &[u8])> = blocks.into_iter().zip(payloads).collect();
    let mut stream = publisher.transport.open_uni().await.unwrap();
    stream.write_chunk(subgroup14(0, &objects)).await.unwrap();
    stream.finish().unwrap();

    let mut got = data_stream(&sub14.transport).await;
    let header = got
        .decode(|b| SubgroupHeader::decode(b, Version::Draft14, &limits))
        .await;
    assert!(header.extensions, "the stream type carries extensions");
    for (block, sent) in &objects {
        let object = got
            .decode(|b| SubgroupObject::decode(b, true, &limits))
            .await;
        assert_eq!(object.extensions.as_deref(), Some(*block), "byte for byte");
        assert_eq!(payload(&mut got, object.payload_len as usize).await, sent);
    }

    // Draft 22 codes its properties otherwise: the payloads come bare.
    let mut got = data_stream(&sub22.transport).await;
    let header = got
        .decode(|b| d22::SubgroupHeader::decode(b, &limits))
        .await;
    assert!(!header.extensions, "no draft-14 block on a draft-22 stream");
    for (_, sent) in &objects {
        let object = got.decode(|b| d22::decode_object(b, false, &limits)).await;
        assert_eq!(object.extensions, None);
        assert_eq!(payload(&mut got, object.payload_len as usize).await, sent);
    }

    // A block over the bound stops its stream alone, counted.
    let big = vec![0x02; MAX_OBJECT_EXTENSIONS + 2];
    let mut stream = publisher.transport.open_uni().await.unwrap();
    stream
        .write_chunk(subgroup14(1, &[(&big, b"x")]))
        .await
        .unwrap();
    stream.finish().unwrap();
    within("the refusal", async {
        while shard.stats.ietf_extensions_too_large.get() == 0 {
            monoio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(publisher.transport.close_reason().is_none(), "kept open");
}

/// A draft-22 publisher's properties reach a draft-22 subscriber byte for
/// byte: PUBLISH_NAMESPACE on its stream, the relay's SUBSCRIBE on a stream
/// the relay opens, SUBSCRIBE_OK there, then one subgroup stream.
#[monoio::test(enable_timer = true)]
async fn draft22_extension_headers_pass_through_to_draft22() {
    let shard = shard(settings());
    let limits = settings().limits;
    let publisher = Client22::dial(&shard, vec![]).await;
    let announce = d22::PublishNamespace {
        request_id: 0,
        namespace: vec!["ext22".into()],
        parameters: d22::MessageParameters::default(),
    };
    let (_announce, mut announced) = publisher.request(announce.to_vec().unwrap()).await;
    assert!(matches!(
        reply22(&mut announced).await,
        RequestMessage::RequestOk(_)
    ));

    let subscriber = Client22::dial(&shard, vec![]).await;
    let request = d22::Subscribe {
        request_id: 0,
        namespace: vec!["ext22".into()],
        name: "video".into(),
        parameters: d22::MessageParameters::default(),
    };
    let (_request, mut replies) = subscriber.request(request.to_vec().unwrap()).await;

    // The relay's SUBSCRIBE, answered with our alias on its own stream.
    let (mut answer, recv, leftover) = within("relay SUBSCRIBE", publisher.transport.accept_bi())
        .await
        .unwrap();
    let mut upstream = Incoming {
        recv,
        buf: BytesMut::from(&leftover[..]),
    };
    assert!(matches!(
        reply22(&mut upstream).await,
        RequestMessage::Subscribe(_)
    ));
    let ok = d22::SubscribeOk {
        track_alias: ALIAS,
        parameters: d22::MessageParameters::default(),
        properties: Parameters::default(),
    };
    answer
        .write_chunk(Bytes::from(ok.to_vec().unwrap()))
        .await
        .unwrap();
    assert!(matches!(
        reply22(&mut replies).await,
        RequestMessage::SubscribeOk(_)
    ));

    let blocks: [&[u8]; 2] = [b"\x02\x05\x01\x02hi", b"\x06\x07"];
    let payloads: [&[u8]; 2] = [b"one", b"two"];
    let mut data = BytesMut::new();
    d22::SubgroupHeader {
        track_alias: ALIAS,
        group: 0,
        subgroup: SubgroupId::Zero,
        publisher_priority: Some(0),
        extensions: true,
        end_of_group: true,
        first_object: true,
    }
    .encode(&mut data)
    .unwrap();
    for (block, sent) in blocks.iter().zip(payloads) {
        d22::encode_object(
            &SubgroupObject {
                object_id_delta: 0,
                extensions: Some(block.to_vec()),
                payload_len: sent.len() as u64,
                status: None,
            },
            &mut data,
        )
        .unwrap();
        data.extend_from_slice(sent);
    }
    let mut stream = publisher.transport.open_uni().await.unwrap();
    stream.write_chunk(data.freeze()).await.unwrap();
    stream.finish().unwrap();

    let mut got = data_stream(&subscriber.transport).await;
    let header = got
        .decode(|b| d22::SubgroupHeader::decode(b, &limits))
        .await;
    assert!(header.extensions);
    for (block, sent) in blocks.iter().zip(payloads) {
        let object = got.decode(|b| d22::decode_object(b, true, &limits)).await;
        assert_eq!(object.extensions.as_deref(), Some(*block), "byte for byte");
        assert_eq!(payload(&mut got, object.payload_len as usize).await, sent);
    }
}

/// Towards lite the blocks are dropped: a lite-06 subscriber of a draft-14
/// publisher's track gets each payload exactly, nothing of the extensions.
#[monoio::test(enable_timer = true)]
async fn extension_headers_are_dropped_towards_a_lite_subscriber() {
    use crate::session::memory::MemoryLimits;
    use crate::session::tests::{Peer, ReceivedGroup, BROADCAST};

    let shard = shard(settings());
    let mut publisher = Client14::admitted(&shard, "", vec![]).await;
    publisher.send(publish_namespace(0, BROADCAST)).await;
    assert!(matches!(
        publisher.reply().await,
        ControlMessage::PublishNamespaceOk(_)
    ));
    let subscriber = Peer::connect(
        &shard,
        crate::lite::Version::Lite06,
        MemoryLimits::default(),
    )
    .await
    .0;
    let _announce = subscriber.wait_announced().await;
    let _subscription = subscriber.open_subscribe(7, "video").await;
    let upstream = match publisher.reply().await {
        ControlMessage::Subscribe(s) => s,
        other => panic!("expected the relay's SUBSCRIBE, got {other:?}"),
    };
    publisher
        .send(
            SubscribeOk {
                request_id: upstream.request_id,
                track_alias: ALIAS,
                expires: 0,
                group_order: GroupOrder::Ascending,
                largest: None,
                parameters: Parameters::default(),
            }
            .into(),
        )
        .await;
    let objects: [(&[u8], &[u8]); 2] = [(b"\x02\x05", b"alpha"), (b"\x04\x01", b"beta")];
    let mut stream = publisher.transport.open_uni().await.unwrap();
    stream.write_chunk(subgroup14(2, &objects)).await.unwrap();
    stream.finish().unwrap();

    let mut received = ReceivedGroup::accept(&subscriber).await;
    assert_eq!(received.header.sequence, 2);
    for (_, sent) in &objects {
        let (_, got) = received.frame().await.unwrap().expect("a frame");
        assert_eq!(&got[..], *sent, "the payload alone");
    }
    assert!(received.frame().await.unwrap().is_none(), "the group ends");
}
