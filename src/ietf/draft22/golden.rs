//! Golden vectors for draft 22: bytes printed by moq-net 0.3.18's own encoders on
//! `Version::Draft22` (the same throwaway program as `../golden.rs`, its private
//! `Setup` made public). moq-net's message encoder writes `Length (16), body`
//! and leaves the type to the stream writer, so each vector here is the type
//! varint followed by moq-net's output verbatim. Each is checked both ways.

use std::fmt::Debug;

use super::*;
use crate::ietf::{ParameterValue, Parameters, PARAM_MAX_REQUEST_ID, PARAM_PATH};

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// qumo encodes `msg` to exactly `ty` + `moq_net` and decodes that back, as its
/// own type and through [`RequestMessage`]; every shorter prefix is `Short`.
fn golden<T>(msg: T, ty: &str, moq_net: &str)
where
    T: Encode + Decode + PartialEq + Debug + Clone + Into<RequestMessage>,
{
    let wire = bytes(&format!("{ty}{moq_net}"));
    let limits = Limits::default();
    assert_eq!(msg.to_vec().unwrap(), wire, "encode {msg:?}");
    assert_eq!(
        T::decode(&wire, &limits).unwrap(),
        (msg.clone(), wire.len())
    );
    let any: RequestMessage = msg.into();
    assert_eq!(
        RequestMessage::decode(&wire, &limits).unwrap(),
        (any, wire.len())
    );
    for cut in 0..wire.len() {
        assert_eq!(
            RequestMessage::decode(&wire[..cut], &limits),
            Err(DecodeError::Short),
            "prefix of {cut} bytes"
        );
    }
}

macro_rules! into_message {
    ($($name:ident),*) => {
        $(impl From<$name> for RequestMessage {
            fn from(m: $name) -> Self {
                RequestMessage::$name(m)
            }
        })*
    };
}

into_message!(
    Setup,
    Subscribe,
    RequestUpdate,
    SubscribeOk,
    RequestOk,
    RequestError,
    PublishDone,
    PublishNamespace,
    Publish,
    SubscribeNamespace,
    Namespace,
    NamespaceDone,
    Goaway,
    Fetch,
    FetchOk
);

fn ns(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| f.to_string()).collect()
}

/// moq-net's SUBSCRIBE for `clock`/`seconds`, priority 128, descending, forward.
fn subscribe(filter: Option<LocationFilter>) -> Subscribe {
    let mut parameters = vec![
        (param::FORWARD, ParamValue::Bool(true)),
        (param::SUBSCRIBER_PRIORITY, ParamValue::Byte(128)),
    ];
    if let Some(filter) = filter {
        parameters.push((param::LOCATION_FILTER, ParamValue::Filter(filter)));
    }
    parameters.push((param::GROUP_ORDER, ParamValue::Byte(2)));
    Subscribe {
        request_id: 2,
        namespace: ns(&["clock"]),
        name: "seconds".into(),
        parameters: MessageParameters(parameters),
    }
}

#[test]
fn setup_matches_moq_net_bytes() {
    golden(
        Setup {
            parameters: Parameters(vec![
                (PARAM_PATH, ParameterValue::Bytes(b"/live".to_vec())),
                (PARAM_MAX_REQUEST_ID, ParameterValue::Varint(100)),
            ]),
        },
        "af00",
        "000901052f6c6976650164",
    );
}

#[test]
fn subscribe_with_every_location_filter_matches_moq_net_bytes() {
    let start = Location {
        group: 5,
        object: 1,
    };
    let cases = [
        (
            Some(LocationFilter::NextObject),
            "0019020105636c6f636b077365636f6e6473041001108001050102",
        ),
        (
            Some(LocationFilter::RelativeStart(0)),
            "001a020105636c6f636b077365636f6e647304100110800101000102",
        ),
        // moq-net leaves out an unfiltered LOCATION_FILTER.
        (None, "0017020105636c6f636b077365636f6e647303100110800202"),
        (
            Some(LocationFilter::AbsoluteStart(start)),
            "001b020105636c6f636b077365636f6e64730410011080010205010102",
        ),
        (
            Some(LocationFilter::AbsoluteGroupEnd {
                start,
                end_group: 9,
            }),
            "001c020105636c6f636b077365636f6e6473041001108001030501040102",
        ),
        (
            Some(LocationFilter::AbsoluteRange {
                start,
                end_group: 9,
                end_object: 4,
            }),
            "001d020105636c6f636b077365636f6e647304100110800104050104040102",
        ),
    ];
    for (filter, hex) in cases {
        golden(subscribe(filter), "03", hex);
    }
    let s = subscribe(Some(LocationFilter::NextObject));
    assert!(s.parameters.forward());
    assert_eq!(s.parameters.subscriber_priority(), 128);
    assert_eq!(s.parameters.group_order(), Some(GroupOrder::Descending));
    assert_eq!(s.parameters.filter(), LocationFilter::NextObject);
}

/// What moq-net sends on a live join: a FILL scope (kept raw) and
/// INCLUDE_PROPERTIES 0.
#[test]
fn subscribe_with_fill_and_include_properties_matches_moq_net_bytes() {
    let mut s = subscribe(Some(LocationFilter::NextObject));
    s.parameters.0.extend([
        // count 1, LOCATION_FILTER (0x21) RELATIVE_START 0.
        (param::FILL, ParamValue::Bytes(vec![0x01, 0x21, 0x01, 0x00])),
        (param::INCLUDE_PROPERTIES, ParamValue::Bool(false)),
    ]);
    assert_eq!(
        s.parameters.fill(),
        Some(Ok(MessageParameters(vec![(
            param::LOCATION_FILTER,
            ParamValue::Filter(LocationFilter::RelativeStart(0))
        )])))
    );
    golden(
        s,
        "03",
        "0021020105636c6f636b077365636f6e64730610011080010501020104012101001200",
    );
}

#[test]
fn replies_match_moq_net_bytes() {
    golden(
        SubscribeOk {
            track_alias: 9,
            parameters: MessageParameters(vec![(
                param::LARGEST_OBJECT,
                ParamValue::Location(Location {
                    group: 70,
                    object: 3,
                }),
            )]),
            // DEFAULT_PUBLISHER_GROUP_ORDER: descending.
            properties: Parameters(vec![(0x22, ParameterValue::Varint(2))]),
        },
        "04",
        "000709010946032202",
    );
    golden(
        SubscribeOk {
            track_alias: 9,
            parameters: MessageParameters::default(),
            properties: Parameters::default(),
        },
        "04",
        "00020900",
    );
    golden(RequestOk::default(), "07", "000100");
    golden(
        RequestError {
            code: 0x4,
            retry_interval: 0,
            reason: "not found".into(),
        },
        "05",
        "000c0400096e6f7420666f756e64",
    );
    golden(
        RequestError {
            code: 0x5,
            retry_interval: 1500,
            reason: String::new(),
        },
        "05",
        "00040585dc00",
    );
    golden(
        PublishDone {
            status: 0x2,
            stream_count: 17,
            reason: "ended".into(),
        },
        "0b",
        "0008021105656e646564",
    );
}

/// PUBLISH and REQUEST_UPDATE as aiomoqt 0.13.3 writes them on draft 22
/// (`Publish.serialize` / `RequestUpdate.serialize` with `profile_for(22)`):
/// moq-net 0.3.18 refuses PUBLISH, so the publishing stack is the reference.
#[test]
fn publish_and_request_update_match_aiomoqt_bytes() {
    let publish = |parameters, properties| Publish {
        request_id: 2,
        namespace: ns(&["live", "aio"]),
        name: "counted".into(),
        track_alias: 7,
        parameters: MessageParameters(parameters),
        properties: Parameters(properties),
    };
    // Forward 0, ascending (aiomoqt leaves the default group order out).
    golden(
        publish(vec![(param::FORWARD, ParamValue::Bool(false))], vec![]),
        "1d",
        "00170202046c6976650361696f07636f756e74656407011000",
    );
    // Forward 1 with the largest location, descending as a Track Property.
    golden(
        publish(
            vec![
                (
                    param::LARGEST_OBJECT,
                    ParamValue::Location(Location {
                        group: 5,
                        object: 3,
                    }),
                ),
                (param::FORWARD, ParamValue::Bool(true)),
            ],
            vec![(0x22, ParameterValue::Varint(2))],
        ),
        "1d",
        "001c0202046c6976650361696f07636f756e746564070209050307012202",
    );
    let update = |request_id, forward| RequestUpdate {
        request_id,
        parameters: MessageParameters(vec![(param::FORWARD, ParamValue::Bool(forward))]),
    };
    golden(update(3, true), "02", "000403011001");
    golden(update(5, false), "02", "000405011000");
}

#[test]
fn namespace_messages_and_goaway_match_moq_net_bytes() {
    golden(
        PublishNamespace {
            request_id: 1,
            namespace: ns(&["live", "cam"]),
            parameters: MessageParameters::default(),
        },
        "06",
        "000c0102046c6976650363616d00",
    );
    golden(
        SubscribeNamespace {
            request_id: 4,
            prefix: ns(&["live"]),
            parameters: MessageParameters::default(),
        },
        "50",
        "00080401046c69766500",
    );
    golden(
        Namespace {
            suffix: ns(&["cam"]),
        },
        "08",
        "0005010363616d",
    );
    golden(
        NamespaceDone {
            suffix: ns(&["cam"]),
        },
        "0e",
        "0005010363616d",
    );
    golden(
        Goaway {
            new_session_uri: "https://relay.example/moq".into(),
            timeout: 0,
        },
        "10",
        "001b1968747470733a2f2f72656c61792e6578616d706c652f6d6f7100",
    );
}

#[test]
fn subgroup_headers_match_moq_net_bytes() {
    let limits = Limits::default();
    let cases = [
        (
            SubgroupHeader {
                track_alias: 9,
                group: 70,
                subgroup: SubgroupId::Zero,
                publisher_priority: Some(0),
                extensions: false,
                end_of_group: true,
                first_object: true,
            },
            "58094600",
        ),
        (
            SubgroupHeader {
                track_alias: 9,
                group: 70,
                subgroup: SubgroupId::Explicit(3),
                publisher_priority: Some(0),
                extensions: true,
                end_of_group: false,
                first_object: true,
            },
            "5509460300",
        ),
    ];
    for (header, hex) in cases {
        let wire = bytes(hex);
        assert_eq!(header.to_vec().unwrap(), wire);
        assert_eq!(
            SubgroupHeader::decode(&wire, &limits).unwrap(),
            (header, wire.len())
        );
    }
}

#[test]
fn objects_round_trip_with_extensions_and_status() {
    let limits = Limits::default();
    let cases = [
        SubgroupObject {
            object_id_delta: 0,
            extensions: Some(vec![0x02, 0x07]),
            payload_len: 300,
            status: None,
        },
        SubgroupObject {
            object_id_delta: 2,
            extensions: None,
            payload_len: 0,
            status: Some(ObjectStatus::EndOfGroup),
        },
    ];
    for object in cases {
        let mut wire = Vec::new();
        encode_object(&object, &mut wire).unwrap();
        let has_ext = object.extensions.is_some();
        assert_eq!(
            decode_object(&wire, has_ext, &limits).unwrap(),
            (object, wire.len())
        );
    }
    // Payload length 300 is two leading-ones bytes (0x81 0x2c), not QUIC's 0x41 0x2c.
    let mut wire = Vec::new();
    encode_object(&cases_len(300), &mut wire).unwrap();
    assert_eq!(wire, [0x00, 0x81, 0x2c]);
}

fn cases_len(len: u64) -> SubgroupObject {
    SubgroupObject {
        object_id_delta: 0,
        extensions: None,
        payload_len: len,
        status: None,
    }
}

#[test]
fn unread_messages_are_skipped_by_their_length() {
    let limits = Limits::default();
    // A FETCH (0x16) with a 3-byte body, then the next message.
    let wire = bytes("160003aabbcc07000100");
    assert_eq!(skip_message(&wire, &limits), Ok((0x16, 6)));
    assert_eq!(skip_message(&wire[..5], &limits), Err(DecodeError::Short));
    assert_eq!(
        RequestMessage::decode(&wire[6..], &limits),
        Ok((RequestMessage::RequestOk(RequestOk::default()), 4))
    );
}

#[test]
fn hostile_input_is_refused_without_panic_or_allocation() {
    let limits = Limits::default();
    // An unknown message parameter cannot be skipped on draft 22.
    let mut unknown = subscribe(None);
    unknown.parameters.0.clear();
    let mut wire = unknown.to_vec().unwrap();
    let n = wire.len();
    wire[n - 1] = 1; // one parameter...
    wire.extend_from_slice(&[0x7f, 0x00]); // ...with key 0x7f
    let len = (wire.len() - 3) as u16;
    wire[1..3].copy_from_slice(&len.to_be_bytes());
    assert!(matches!(
        Subscribe::decode(&wire, &limits),
        Err(DecodeError::UnknownType {
            what: "message parameter",
            ty: 0x7f
        })
    ));
    // A repeated FORWARD.
    let twice = MessageParameters(vec![
        (param::FORWARD, ParamValue::Bool(true)),
        (param::FORWARD, ParamValue::Bool(true)),
    ]);
    let wire = RequestOk { parameters: twice }.to_vec().unwrap();
    assert!(matches!(
        RequestOk::decode(&wire, &limits),
        Err(DecodeError::InvalidValue { .. })
    ));
    // Keys that decrease cannot be delta-coded.
    let backwards = MessageParameters(vec![
        (param::GROUP_ORDER, ParamValue::Byte(1)),
        (param::FORWARD, ParamValue::Bool(true)),
    ]);
    assert!(RequestOk {
        parameters: backwards
    }
    .to_vec()
    .is_err());
    // A length above the limit is refused from its prefix alone.
    let small = Limits {
        max_message: 1024,
        ..Limits::default()
    };
    let mut huge = bytes("03ffff");
    huge.extend_from_slice(&[0u8; 4]);
    assert!(matches!(
        Subscribe::decode(&huge, &small),
        Err(DecodeError::TooLong { .. })
    ));
    // A body that ends inside a field is Truncated, not Short.
    let cut = bytes("07000101");
    assert!(matches!(
        RequestOk::decode(&cut, &limits),
        Err(DecodeError::Truncated { .. })
    ));
    // A draft-14 subgroup type without the priority range or with both subgroup bits.
    for ty in [0x16u8, 0x1e, 0x20, 0x56] {
        assert!(
            SubgroupHeader::decode(&[ty, 9, 70, 0], &limits).is_err(),
            "{ty:#x}"
        );
    }
    // An object announcing more than max_frame.
    let mut wire = Vec::new();
    encode_object(&cases_len(limits.max_frame + 1), &mut wire).unwrap();
    assert!(matches!(
        decode_object(&wire, false, &limits),
        Err(DecodeError::TooLong { .. })
    ));
}

#[test]
fn request_update_matches_moq_nets_bytes() {
    // moq-net 0.3.18's publisher tests script this REQUEST_UPDATE (Forward 0)
    // on draft 22: Request ID 2, one parameter, key delta 0x10, value 0.
    golden(
        RequestUpdate {
            request_id: 2,
            parameters: MessageParameters(vec![(param::FORWARD, ParamValue::Bool(false))]),
        },
        "02",
        "000402011000",
    );
}

/// `live`/`video`, Request ID 1: the head of moq-net 0.3.18's draft-20+ FETCH
/// test vectors (`ietf/fetch.rs`, `FETCH_HEAD`), up to the parameter count.
const FETCH_HEAD: &str = "0101046c6976650576696465 6f";

fn fetch_body(params: &str) -> String {
    format!("{FETCH_HEAD}{params}").replace(' ', "")
}

#[test]
fn fetch_matches_moq_net_bytes() {
    // moq-net `test_fetch_v20_wire`: unfiltered, priority 128, descending.
    golden(
        Fetch {
            request_id: 1,
            namespace: ns(&["live"]),
            name: "video".into(),
            parameters: MessageParameters(vec![
                (param::SUBSCRIBER_PRIORITY, ParamValue::Byte(128)),
                (param::GROUP_ORDER, ParamValue::Byte(2)),
            ]),
        },
        "16",
        &format!("0012{}", fetch_body("0220800202")),
    );
    // moq-net `test_fetch_v20_decodes_every_parameter`, its draft-22 case:
    // token, FILL_TIMEOUT 100, priority 64, groups 128..=130, ascending, an
    // OBJECTID range filter, INCLUDE_PROPERTIES 0.
    let body = fetch_body("07 0303030 0aa 0764 1640 01038080 0002 0101 0402 0005 0f00");
    golden(
        Fetch {
            request_id: 1,
            namespace: ns(&["live"]),
            name: "video".into(),
            parameters: MessageParameters(vec![
                (
                    param::AUTHORIZATION_TOKEN,
                    ParamValue::Bytes(vec![0x03, 0x00, 0xaa]),
                ),
                (param::FILL_TIMEOUT, ParamValue::Varint(100)),
                (param::SUBSCRIBER_PRIORITY, ParamValue::Byte(64)),
                (
                    param::LOCATION_FILTER,
                    ParamValue::Filter(LocationFilter::AbsoluteGroupEnd {
                        start: Location {
                            group: 128,
                            object: 0,
                        },
                        end_group: 130,
                    }),
                ),
                (param::GROUP_ORDER, ParamValue::Byte(1)),
                (0x26, ParamValue::Bytes(vec![0x00, 0x05])),
                (param::INCLUDE_PROPERTIES, ParamValue::Bool(false)),
            ]),
        },
        "16",
        &format!("{:04x}{body}", body.len() / 2),
    );
}

#[test]
fn fetch_ok_matches_moq_net_bytes() {
    // moq-net `test_fetch_ok_v18_omits_group_order` (draft 18 on, same layout
    // on 22): not the end of the track, ends at {5, 3}, no parameters.
    golden(
        FetchOk {
            end_of_track: false,
            end: Location {
                group: 5,
                object: 3,
            },
            parameters: MessageParameters::default(),
            properties: Parameters::default(),
        },
        "18",
        "000400050300",
    );
}

#[test]
fn fetch_stream_matches_moq_net_bytes() {
    let limits = Limits::default();
    let header = FetchHeader { request_id: 300 };
    let wire = header.to_vec().unwrap();
    assert_eq!(wire, bytes("05812c"), "type 0x5, Request ID 300");
    assert_eq!(FetchHeader::decode(&wire, &limits).unwrap(), (header, 3));
    // moq-net `the_first_object_spells_everything_out` and
    // `a_later_object_inherits`, each followed by a payload length.
    let cases = [
        (
            FetchObject::Object {
                subgroup: FetchSubgroup::Zero,
                group: Some(4),
                object: Some(0),
                priority: Some(0),
                properties: Some(vec![0x02, 0x40]),
                payload_len: 5,
            },
            "3c040000020240 05",
        ),
        (
            FetchObject::Object {
                subgroup: FetchSubgroup::Zero,
                group: None,
                object: None,
                priority: None,
                properties: Some(vec![]),
                payload_len: 0,
            },
            "2000 00",
        ),
        (
            FetchObject::EndOfRange {
                reason: 0x8c,
                group: 3,
                object: 7,
            },
            "808c 03 07",
        ),
        (
            FetchObject::Object {
                subgroup: FetchSubgroup::Explicit(9),
                group: Some(2),
                object: None,
                priority: None,
                properties: None,
                payload_len: 1,
            },
            "0b 02 09 01",
        ),
    ];
    for (object, hex) in cases {
        let wire = bytes(&hex.replace(' ', ""));
        assert_eq!(object.to_vec().unwrap(), wire, "{object:?}");
        assert_eq!(
            FetchObject::decode(&wire, &limits).unwrap(),
            (object, wire.len())
        );
        for cut in 0..wire.len() {
            assert_eq!(
                FetchObject::decode(&wire[..cut], &limits),
                Err(DecodeError::Short)
            );
        }
    }
    // One past the markers is no set of flags; a payload over the limit is
    // refused on its length.
    assert!(FetchObject::decode(&bytes("808d0000"), &limits).is_err());
    let small = Limits {
        max_frame: 4,
        ..limits
    };
    assert!(matches!(
        FetchObject::decode(&bytes("0c000005"), &small),
        Err(DecodeError::TooLong { .. })
    ));
}

/// moq-net 0.3.18's `ObjectDatagram` on `Version::Draft22`, header then payload.
#[test]
fn datagrams_match_moq_net_bytes() {
    let limits = Limits::default();
    let header =
        |object, priority, extensions: Option<&[u8]>, end_of_group, status| DatagramHeader {
            track_alias: 0,
            group: 0,
            object,
            publisher_priority: priority,
            extensions: extensions.map(<[u8]>::to_vec),
            end_of_group,
            status,
        };
    let cases = [
        (
            DatagramHeader {
                track_alias: 3,
                group: 42,
                ..header(None, Some(7), Some(&[0x10, 0x05]), true, None)
            },
            "07032a0702100568656c6c6f",
            b"hello".as_slice(),
        ),
        (
            DatagramHeader {
                track_alias: 300,
                group: 70000,
                ..header(Some(9000), Some(128), None, false, None)
            },
            "00812cc11170a3288078797a",
            b"xyz".as_slice(),
        ),
        (
            DatagramHeader {
                track_alias: 1,
                group: 2,
                ..header(Some(0), Some(128), None, false, Some(ObjectStatus::Normal))
            },
            "200102008000",
            b"".as_slice(),
        ),
        (
            DatagramHeader {
                track_alias: 1,
                group: 200,
                ..header(
                    Some(5),
                    Some(0),
                    None,
                    false,
                    Some(ObjectStatus::EndOfTrack),
                )
            },
            "200180c8050004",
            b"".as_slice(),
        ),
        (
            DatagramHeader {
                track_alias: 5,
                group: 6,
                ..header(Some(1), None, None, true, None)
            },
            "0a05060170",
            b"p".as_slice(),
        ),
    ];
    for (header, hex, payload) in cases {
        let wire = bytes(hex);
        let mut out = Vec::new();
        header.encode(&mut out).unwrap();
        out.extend_from_slice(payload);
        assert_eq!(out, wire, "encode {header:?}");
        let (back, offset) = DatagramHeader::decode(&wire, &limits).unwrap();
        assert_eq!(back, header);
        assert_eq!(&wire[offset..], payload);
        // A datagram is whole: one cut inside the header is malformed, not short.
        assert!(matches!(
            DatagramHeader::decode(&wire[..offset - 1], &limits),
            Err(DecodeError::Truncated { .. })
        ));
    }
    // The reserved bit, a bit past the defined ones, a status that ends its
    // group, an empty properties block, bytes after a status.
    for hex in [
        "1001020300",
        "4001020300",
        "220102008000",
        "050102000078",
        "20010200800000",
    ] {
        assert!(
            DatagramHeader::decode(&bytes(hex), &limits).is_err(),
            "{hex} decoded"
        );
    }
    // Properties go with a Normal status only.
    let mut bad = header(
        Some(1),
        Some(0),
        Some(&[1, 2]),
        false,
        Some(ObjectStatus::DoesNotExist),
    );
    assert!(bad.encode(&mut Vec::new()).is_err());
    bad.status = Some(ObjectStatus::Normal);
    assert!(bad.encode(&mut Vec::new()).is_ok());
}
