//! Golden vectors: bytes produced by moq-net 0.3.18's own draft-14 encoders.
//!
//! A throwaway program linking moq-net 0.3.18 (its private `ietf`, `coding` and
//! SETUP types made public, nothing else changed) encoded each message below and
//! printed the bytes. moq-net's control-message encoder writes `Length (16), body`
//! and leaves the `Type (i)` to the control stream's writer, so each control vector
//! here is the type byte followed by moq-net's output verbatim. Each vector is
//! checked both ways: qumo encodes to exactly these bytes and decodes them back.

use std::fmt::Debug;

use super::*;

const V: Version = Version::Draft14;

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// qumo encodes `msg` to exactly `hex` and decodes `hex` back to `msg`, both as
/// its own type and through [`ControlMessage`] when `any` wraps it.
fn golden<T: Encode + Decode + PartialEq + Debug>(msg: &T, hex: &str) {
    let wire = bytes(hex);
    assert_eq!(msg.to_vec(V).unwrap(), wire, "encode {msg:?}");
    let (back, used) = T::decode(&wire, V, &Limits::default()).unwrap();
    assert_eq!((&back, used), (msg, wire.len()), "decode {hex}");
}

/// As [`golden`], for a control message: `ty` is prepended to moq-net's bytes, and
/// the dispatching [`ControlMessage`] decoder must agree.
fn golden_control<T>(msg: T, ty: &str, moq_net: &str)
where
    T: Encode + Decode + PartialEq + Debug + Clone + Into<ControlMessage>,
{
    let hex = format!("{ty}{moq_net}");
    golden(&msg, &hex);
    golden(&msg.into(), &hex);
}

fn ns(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| f.to_string()).collect()
}

fn subscribe(filter: Filter) -> Subscribe {
    Subscribe {
        request_id: 2,
        namespace: ns(&["clock"]),
        name: "seconds".into(),
        subscriber_priority: 128,
        group_order: GroupOrder::Descending,
        forward: true,
        filter,
        parameters: Parameters::default(),
    }
}

#[test]
fn setup_matches_moq_net_bytes() {
    golden_control(
        ClientSetup {
            versions: vec![Version::Draft14.wire()],
            parameters: Parameters(vec![(PARAM_PATH, ParameterValue::Bytes(b"/live".to_vec()))]),
        },
        "20",
        "001101c0000000ff00000e0101052f6c697665",
    );
    golden_control(
        ServerSetup {
            version: Version::Draft14.wire(),
            parameters: Parameters(vec![(PARAM_MAX_REQUEST_ID, ParameterValue::Varint(100))]),
        },
        "21",
        "000cc0000000ff00000e01024064",
    );
}

#[test]
fn subscribe_filters_match_moq_net_bytes() {
    let start = Location {
        group: 5,
        object: 1,
    };
    let cases = [
        (
            Filter::LargestObject,
            "0015020105636c6f636b077365636f6e64738002010200",
        ),
        (
            Filter::NextGroupStart,
            "0015020105636c6f636b077365636f6e64738002010100",
        ),
        (
            Filter::AbsoluteStart(start),
            "0017020105636c6f636b077365636f6e647380020103050100",
        ),
        // moq-net writes End Group 9 as the delta 4 from the start group.
        (
            Filter::AbsoluteRange {
                start,
                end_group: 4,
            },
            "0018020105636c6f636b077365636f6e64738002010405010400",
        ),
    ];
    for (filter, hex) in cases {
        golden_control(subscribe(filter), "03", hex);
    }
    golden_control(
        Subscribe {
            request_id: 300,
            namespace: ns(&["a", "bc"]),
            name: "t".into(),
            subscriber_priority: 7,
            group_order: GroupOrder::Ascending,
            forward: false,
            filter: Filter::LargestObject,
            parameters: Parameters::default(),
        },
        "03",
        "000f412c02016102626301740701000200",
    );
}

#[test]
fn subscribe_replies_match_moq_net_bytes() {
    golden_control(
        SubscribeOk {
            request_id: 2,
            track_alias: 9,
            expires: 0,
            group_order: GroupOrder::Descending,
            largest: Some(Location {
                group: 70,
                object: 3,
            }),
            parameters: Parameters::default(),
        },
        "04",
        "0009020900020140460300",
    );
    golden_control(
        SubscribeOk {
            request_id: 2,
            track_alias: 9,
            expires: 0,
            group_order: GroupOrder::Ascending,
            largest: None,
            parameters: Parameters::default(),
        },
        "04",
        "0006020900010000",
    );
    golden_control(
        SubscribeError {
            request_id: 4,
            code: 4,
            reason: "not found".into(),
        },
        "05",
        "000c0404096e6f7420666f756e64",
    );
    golden_control(
        SubscribeUpdate {
            request_id: 6,
            subscription_request_id: 2,
            start: Location {
                group: 10,
                object: 0,
            },
            end_group: 0,
            subscriber_priority: 3,
            forward: true,
            parameters: Parameters::default(),
        },
        "02",
        "000806020a0000030100",
    );
    golden_control(Unsubscribe { request_id: 2 }, "0a", "000102");
    golden_control(
        PublishDone {
            request_id: 2,
            status: 2,
            stream_count: 17,
            reason: "ended".into(),
        },
        "0b",
        "000902021105656e646564",
    );
}

#[test]
fn namespace_messages_match_moq_net_bytes() {
    golden_control(
        PublishNamespace {
            request_id: 0,
            namespace: ns(&["clock"]),
            parameters: Parameters::default(),
        },
        "06",
        "0009000105636c6f636b00",
    );
    golden_control(PublishNamespaceOk { request_id: 0 }, "07", "000100");
    golden_control(
        PublishNamespaceError {
            request_id: 0,
            code: 1,
            reason: "no".into(),
        },
        "08",
        "00050001026e6f",
    );
    golden_control(
        PublishNamespaceDone {
            namespace: ns(&["clock"]),
        },
        "09",
        "00070105636c6f636b",
    );
    golden_control(
        PublishNamespaceCancel {
            namespace: ns(&["clock"]),
            code: 0,
            reason: "bye".into(),
        },
        "0c",
        "000c0105636c6f636b0003627965",
    );
    golden_control(
        SubscribeNamespace {
            request_id: 8,
            prefix: ns(&["live"]),
            parameters: Parameters::default(),
        },
        "11",
        "00080801046c69766500",
    );
    golden_control(SubscribeNamespaceOk { request_id: 8 }, "12", "000108");
    golden_control(
        SubscribeNamespaceError {
            request_id: 8,
            code: 3,
            reason: "x".into(),
        },
        "13",
        "000408030178",
    );
}

#[test]
fn session_messages_match_moq_net_bytes() {
    golden_control(
        Goaway {
            uri: "https://relay.example/moq".into(),
        },
        "10",
        "001a1968747470733a2f2f72656c61792e6578616d706c652f6d6f71",
    );
    golden_control(MaxRequestId { request_id: 1000 }, "15", "000243e8");
    golden_control(
        RequestsBlocked {
            maximum_request_id: 64,
        },
        "1a",
        "00024040",
    );
}

#[test]
fn fetch_messages_match_moq_net_bytes() {
    golden_control(
        Fetch {
            request_id: 10,
            subscriber_priority: 1,
            group_order: GroupOrder::Ascending,
            fetch_type: FetchType::Standalone {
                namespace: ns(&["clock"]),
                name: "seconds".into(),
                start: Location {
                    group: 1,
                    object: 0,
                },
                end: Location {
                    group: 3,
                    object: 0,
                },
            },
            parameters: Parameters::default(),
        },
        "16",
        "00180a0101010105636c6f636b077365636f6e64730100030000",
    );
    golden_control(
        Fetch {
            request_id: 12,
            subscriber_priority: 1,
            group_order: GroupOrder::Descending,
            fetch_type: FetchType::RelativeJoining {
                joining_request_id: 2,
                joining_start: 2,
            },
            parameters: Parameters::default(),
        },
        "16",
        "00070c010202020200",
    );
    golden_control(
        FetchOk {
            request_id: 10,
            group_order: GroupOrder::Ascending,
            end_of_track: false,
            end: Location {
                group: 3,
                object: 5,
            },
            parameters: Parameters::default(),
        },
        "18",
        "00060a0100030500",
    );
    golden_control(
        FetchError {
            request_id: 10,
            code: 4,
            reason: "gone".into(),
        },
        "19",
        "00070a0404676f6e65",
    );
    golden_control(FetchCancel { request_id: 10 }, "17", "00010a");
    golden(&FetchHeader { request_id: 10 }, "050a");
}

/// PUBLISH, PUBLISH_OK and PUBLISH_ERROR: moq-net 0.3.18 refuses PUBLISH on
/// draft 14, so these vectors are aiomoqt 0.13.3's draft-14 encoders' output
/// (`aiomoqt.messages.publish`, `profile_for(14)`), type byte included.
#[test]
fn publish_messages_match_aiomoqt_bytes() {
    golden(
        &ControlMessage::from(Publish {
            request_id: 2,
            namespace: ns(&["live", "test"]),
            name: "clock".into(),
            track_alias: 7,
            group_order: GroupOrder::Ascending,
            largest: Some(Location {
                group: 5,
                object: 3,
            }),
            forward: false,
            parameters: Parameters::default(),
        }),
        "1d00190202046c697665047465737405636c6f636b07010105030000",
    );
    golden(
        &ControlMessage::from(Publish {
            request_id: 0,
            namespace: ns(&["ns"]),
            name: "t".into(),
            track_alias: 0,
            group_order: GroupOrder::Ascending,
            largest: None,
            forward: true,
            parameters: Parameters::default(),
        }),
        "1d000c0001026e7301740001000100",
    );
    golden(
        &ControlMessage::from(PublishOk {
            request_id: 2,
            forward: true,
            subscriber_priority: 128,
            group_order: GroupOrder::Ascending,
            filter: Filter::LargestObject,
            parameters: Parameters::default(),
        }),
        "1e0006020180010200",
    );
    // aiomoqt writes a range's End Group as the absolute group (9), not
    // moq-net's `end - start`: the codec keeps the raw field either way.
    golden(
        &ControlMessage::from(PublishOk {
            request_id: 4,
            forward: true,
            subscriber_priority: 3,
            group_order: GroupOrder::Descending,
            filter: Filter::AbsoluteRange {
                start: Location {
                    group: 5,
                    object: 1,
                },
                end_group: 9,
            },
            parameters: Parameters::default(),
        }),
        "1e0009040103020405010900",
    );
    golden(
        &ControlMessage::from(PublishError {
            request_id: 2,
            code: 4,
            reason: "uninterested".into(),
        }),
        "1f000f02040c756e696e7465726573746564",
    );
}

/// Draft 14 section 9.13: a PUBLISH's group order is 1 or 2; 0 is malformed.
#[test]
fn publish_with_the_publishers_choice_of_order_is_refused() {
    let mut wire = bytes("1d000c0001026e7301740001000100");
    // The group order byte follows the alias (offset 11).
    assert_eq!(wire[11], 1);
    wire[11] = 0;
    assert!(matches!(
        ControlMessage::decode(&wire, V, &Limits::default()),
        Err(DecodeError::InvalidValue { .. })
    ));
}

#[test]
fn subgroup_headers_match_moq_net_bytes() {
    golden(
        &SubgroupHeader {
            track_alias: 9,
            group: 70,
            subgroup: SubgroupId::Zero,
            publisher_priority: 0,
            extensions: false,
            end_of_group: true,
        },
        "1809404600",
    );
    golden(
        &SubgroupHeader {
            track_alias: 9,
            group: 70,
            subgroup: SubgroupId::Explicit(3),
            publisher_priority: 0,
            extensions: true,
            end_of_group: false,
        },
        "150940460300",
    );
}

#[test]
fn datagrams_match_moq_net_bytes() {
    let cases = [
        (
            DatagramHeader {
                track_alias: 9,
                group: 70,
                object: Some(2),
                publisher_priority: 5,
                extensions: None,
                end_of_group: false,
                status: None,
            },
            "0009404602056869",
            b"hi".as_slice(),
        ),
        (
            DatagramHeader {
                track_alias: 9,
                group: 70,
                object: None,
                publisher_priority: 5,
                extensions: Some(vec![0x02, 0x07]),
                end_of_group: true,
                status: None,
            },
            "07094046050202076869",
            b"hi".as_slice(),
        ),
        (
            DatagramHeader {
                track_alias: 9,
                group: 70,
                object: Some(4),
                publisher_priority: 5,
                extensions: None,
                end_of_group: false,
                status: Some(ObjectStatus::EndOfGroup),
            },
            "20094046040503",
            b"".as_slice(),
        ),
    ];
    for (header, hex, payload) in cases {
        let wire = bytes(hex);
        let mut out = Vec::new();
        header.encode(&mut out).unwrap();
        out.extend_from_slice(payload);
        assert_eq!(out, wire, "encode {header:?}");
        let (back, offset) = DatagramHeader::decode(&wire, &Limits::default()).unwrap();
        assert_eq!(back, header);
        assert_eq!(&wire[offset..], payload);
    }
}
