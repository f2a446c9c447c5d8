//! Fuzz target bodies for the draft-14 and draft-22 codecs, shared by the cargo-fuzz targets in
//! `fuzz/` and by a stable `#[test]` that replays them over pseudo-random inputs.
//!
//! Whatever the input, a body checks that decoding never panics and never reports
//! more bytes than it was given; that a decoded message re-encodes, no longer than
//! its input, to bytes that decode to the same message (exactly the input's bytes
//! when the input used shortest varints); and that every proper prefix of a
//! decoded stream message is `Short`.

use std::fmt::Debug;

use super::*;

/// Small limits, so that the `TooLong` paths are reached too.
const LIMITS: Limits = Limits {
    max_message: 4096,
    max_path: 256,
    max_name: 256,
    max_frame: 1 << 20,
};

const V: Version = Version::Draft14;

/// Check one decode of `input` as `T`; returns what it decoded and the bytes used.
fn check<T: Decode + Encode + PartialEq + Debug>(input: &[u8]) -> Option<(T, usize)> {
    let (msg, used) = T::decode(input, V, &LIMITS).ok()?;
    assert!(
        used > 0 && used <= input.len(),
        "used {used} of {}",
        input.len()
    );
    let consumed = &input[..used];
    let wire = msg
        .to_vec(V)
        .unwrap_or_else(|e| panic!("{msg:?} decoded but does not re-encode: {e}"));
    assert!(wire.len() <= used, "re-encoding grew: {msg:?}");
    let (again, n) = T::decode(&wire, V, &LIMITS)
        .unwrap_or_else(|e| panic!("re-encoding of {msg:?} does not decode: {e}"));
    assert_eq!((&again, n), (&msg, wire.len()));
    if wire.len() == used {
        assert_eq!(wire, consumed, "{msg:?}");
    }
    if used <= 256 {
        for cut in 0..used {
            assert_eq!(
                T::decode(&consumed[..cut], V, &LIMITS).err(),
                Some(DecodeError::Short),
                "prefix {cut} of {consumed:02x?}"
            );
        }
    }
    Some((msg, used))
}

/// The control stream: any control message, back to back.
pub fn control(mut input: &[u8]) {
    while let Some((_, used)) = check::<ControlMessage>(input) {
        input = input.get(used..).unwrap_or_default();
    }
}

/// Data: byte 0 picks a subgroup stream, a fetch stream or a datagram.
pub fn data(data: &[u8]) {
    let Some((&kind, input)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => subgroup_stream(input),
        1 => fetch_stream(input),
        _ => datagram(input),
    }
}

/// Skip `len` payload bytes (or all that is left).
fn skip(rest: &[u8], used: usize, len: u64) -> &[u8] {
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    rest.get(used..)
        .and_then(|r| r.get(len.min(r.len())..))
        .unwrap_or_default()
}

fn subgroup_stream(input: &[u8]) {
    let Some((header, used)) = check::<SubgroupHeader>(input) else {
        return;
    };
    let mut rest = input.get(used..).unwrap_or_default();
    while let Ok((object, used)) = SubgroupObject::decode(rest, header.extensions, &LIMITS) {
        assert!(used > 0 && used <= rest.len());
        let mut wire = Vec::new();
        let n = object
            .encode(&mut wire)
            .unwrap_or_else(|e| panic!("{object:?} does not re-encode: {e}"));
        assert!(n <= used);
        assert_eq!(
            SubgroupObject::decode(&wire, header.extensions, &LIMITS),
            Ok((object.clone(), n))
        );
        rest = skip(rest, used, object.payload_len);
    }
}

fn fetch_stream(input: &[u8]) {
    let Some((_, used)) = check::<FetchHeader>(input) else {
        return;
    };
    let mut rest = input.get(used..).unwrap_or_default();
    while let Some((object, used)) = check::<FetchObject>(rest) {
        rest = skip(rest, used, object.payload_len);
    }
}

fn datagram(input: &[u8]) {
    let Ok((header, offset)) = DatagramHeader::decode(input, &LIMITS) else {
        return;
    };
    assert!(offset <= input.len());
    let mut wire = Vec::new();
    let n = header
        .encode(&mut wire)
        .unwrap_or_else(|e| panic!("{header:?} does not re-encode: {e}"));
    assert!(n <= offset);
    if n == offset {
        assert_eq!(wire, &input[..offset]);
    }
    wire.extend_from_slice(&input[offset..]);
    assert_eq!(DatagramHeader::decode(&wire, &LIMITS), Ok((header, n)));
}

/// Draft 22: byte 0 picks request/SETUP-stream messages back to back, a
/// subgroup stream, a fetch stream, or a datagram. Leading-ones varints have non-shortest forms (and the 7-byte
/// form re-encodes as 8 bytes), so only the round trip is checked, not the length.
pub fn draft22(data: &[u8]) {
    use super::draft22::{Decode as _, Encode as _, RequestMessage, SubgroupHeader};
    let Some((&kind, mut input)) = data.split_first() else {
        return;
    };
    if kind % 4 == 3 {
        return draft22_datagram(input);
    }
    if kind % 4 == 2 {
        return draft22_fetch_stream(input);
    }
    if kind % 4 == 0 {
        while let Ok((msg, used)) = RequestMessage::decode(input, &LIMITS) {
            assert!(used > 0 && used <= input.len());
            let wire = msg
                .to_vec()
                .unwrap_or_else(|e| panic!("{msg:?} decoded but does not re-encode: {e}"));
            assert_eq!(
                RequestMessage::decode(&wire, &LIMITS),
                Ok((msg, wire.len()))
            );
            if used <= 256 {
                for cut in 0..used {
                    assert_eq!(
                        RequestMessage::decode(&input[..cut], &LIMITS).err(),
                        Some(DecodeError::Short),
                        "prefix {cut}"
                    );
                }
            }
            input = input.get(used..).unwrap_or_default();
        }
        return;
    }
    let Ok((header, used)) = SubgroupHeader::decode(input, &LIMITS) else {
        return;
    };
    let wire = header.to_vec().unwrap();
    assert_eq!(
        SubgroupHeader::decode(&wire, &LIMITS),
        Ok((header.clone(), wire.len()))
    );
    let mut rest = input.get(used..).unwrap_or_default();
    while let Ok((object, used)) = super::draft22::decode_object(rest, header.extensions, &LIMITS) {
        assert!(used > 0 && used <= rest.len());
        let mut wire = Vec::new();
        let n = super::draft22::encode_object(&object, &mut wire)
            .unwrap_or_else(|e| panic!("{object:?} does not re-encode: {e}"));
        assert_eq!(
            super::draft22::decode_object(&wire, header.extensions, &LIMITS),
            Ok((object.clone(), n))
        );
        rest = skip(rest, used, object.payload_len);
    }
}

/// One draft-22 datagram: its header re-encodes to one that decodes the same.
fn draft22_datagram(input: &[u8]) {
    use super::draft22::DatagramHeader;
    let Ok((header, offset)) = DatagramHeader::decode(input, &LIMITS) else {
        return;
    };
    assert!(offset <= input.len());
    let mut wire = Vec::new();
    let n = header
        .encode(&mut wire)
        .unwrap_or_else(|e| panic!("{header:?} does not re-encode: {e}"));
    wire.extend_from_slice(&input[offset..]);
    assert_eq!(DatagramHeader::decode(&wire, &LIMITS), Ok((header, n)));
}

fn draft22_fetch_stream(input: &[u8]) {
    use super::draft22::{Decode as _, Encode as _, FetchHeader, FetchObject};
    let Ok((_, used)) = FetchHeader::decode(input, &LIMITS) else {
        return;
    };
    let mut rest = input.get(used..).unwrap_or_default();
    while let Ok((object, used)) = FetchObject::decode(rest, &LIMITS) {
        assert!(used > 0 && used <= rest.len());
        let wire = object
            .to_vec()
            .unwrap_or_else(|e| panic!("{object:?} does not re-encode: {e}"));
        assert_eq!(
            FetchObject::decode(&wire, &LIMITS),
            Ok((object.clone(), wire.len()))
        );
        let len = match object {
            FetchObject::Object { payload_len, .. } => payload_len,
            FetchObject::EndOfRange { .. } => 0,
        };
        rest = skip(rest, used, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lite::testutil::{mutate, Rng};

    fn control_seeds() -> Vec<Vec<u8>> {
        let ns = vec!["a".to_string(), "b".to_string()];
        let params = Parameters(vec![
            (PARAM_MAX_REQUEST_ID, ParameterValue::Varint(9)),
            (PARAM_PATH, ParameterValue::Bytes(b"/x".to_vec())),
        ]);
        let msgs: Vec<ControlMessage> = vec![
            ClientSetup {
                versions: vec![Version::Draft14.wire(), 7],
                parameters: params.clone(),
            }
            .into(),
            Subscribe {
                request_id: 4,
                namespace: ns.clone(),
                name: "t".into(),
                subscriber_priority: 1,
                group_order: GroupOrder::Publisher,
                forward: true,
                filter: Filter::AbsoluteRange {
                    start: Location {
                        group: 1,
                        object: 2,
                    },
                    end_group: 3,
                },
                parameters: params.clone(),
            }
            .into(),
            SubscribeOk {
                request_id: 4,
                track_alias: 1,
                expires: 0,
                group_order: GroupOrder::Descending,
                largest: Some(Location::default()),
                parameters: Parameters::default(),
            }
            .into(),
            Fetch {
                request_id: 6,
                subscriber_priority: 0,
                group_order: GroupOrder::Ascending,
                fetch_type: FetchType::Standalone {
                    namespace: ns,
                    name: "t".into(),
                    start: Location::default(),
                    end: Location::default(),
                },
                parameters: params,
            }
            .into(),
            PublishDone {
                request_id: 4,
                status: 0,
                stream_count: 3,
                reason: "r".into(),
            }
            .into(),
            Publish {
                request_id: 8,
                namespace: vec!["a".to_string()],
                name: "t".into(),
                track_alias: 2,
                group_order: GroupOrder::Ascending,
                largest: Some(Location::default()),
                forward: false,
                parameters: Parameters::default(),
            }
            .into(),
            SubscribeUpdate {
                request_id: 10,
                subscription_request_id: 4,
                start: Location {
                    group: 2,
                    object: 1,
                },
                end_group: 5,
                subscriber_priority: 9,
                forward: false,
                parameters: Parameters::default(),
            }
            .into(),
            UnsubscribeNamespace {
                interest: NamespaceInterest::Prefix(vec!["a".to_string()]),
            }
            .into(),
            UnsubscribeNamespace {
                interest: NamespaceInterest::RequestId(6),
            }
            .into(),
            PublishOk {
                request_id: 8,
                forward: true,
                subscriber_priority: 5,
                group_order: GroupOrder::Ascending,
                filter: Filter::AbsoluteStart(Location::default()),
                parameters: Parameters::default(),
            }
            .into(),
        ];
        msgs.iter().map(|m| m.to_vec(V).unwrap()).collect()
    }

    fn data_seeds() -> Vec<Vec<u8>> {
        let mut sub = vec![0u8];
        SubgroupHeader {
            track_alias: 1,
            group: 2,
            subgroup: SubgroupId::Explicit(1),
            publisher_priority: 0,
            extensions: true,
            end_of_group: true,
        }
        .encode(&mut sub, V)
        .unwrap();
        for (delta, len) in [(0u64, 3u64), (0, 0)] {
            SubgroupObject {
                object_id_delta: delta,
                extensions: Some(vec![2, 1]),
                payload_len: len,
                status: (len == 0).then_some(ObjectStatus::EndOfGroup),
            }
            .encode(&mut sub)
            .unwrap();
            sub.extend(std::iter::repeat_n(0xaa, len as usize));
        }
        let mut fetch = vec![1u8];
        FetchHeader { request_id: 3 }.encode(&mut fetch, V).unwrap();
        FetchObject {
            group: 1,
            subgroup: 0,
            object: 2,
            publisher_priority: 3,
            extensions: vec![],
            payload_len: 2,
            status: None,
        }
        .encode(&mut fetch, V)
        .unwrap();
        fetch.extend([1, 2]);
        let mut dgram = vec![2u8];
        DatagramHeader {
            track_alias: 1,
            group: 2,
            object: Some(3),
            publisher_priority: 4,
            extensions: Some(vec![2, 0]),
            end_of_group: true,
            status: None,
        }
        .encode(&mut dgram)
        .unwrap();
        dgram.extend(b"payload");
        vec![sub, fetch, dgram]
    }

    /// Mutate the seeds (flip, insert, delete, truncate) and run every body.
    fn replay(target: fn(&[u8]), seeds: &[Vec<u8>], rounds: usize) {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for seed in seeds {
            target(seed);
        }
        for _ in 0..rounds {
            let seed = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, seed);
            target(&input);
        }
    }

    #[test]
    fn control_body_survives_mutated_seeds() {
        let seeds = control_seeds();
        // The seeds themselves must decode, or the replay tests nothing.
        for seed in &seeds {
            assert!(ControlMessage::decode(seed, V, &LIMITS).is_ok());
        }
        replay(control, &seeds, 20_000);
    }

    #[test]
    fn data_body_survives_mutated_seeds() {
        let seeds = data_seeds();
        assert!(SubgroupHeader::decode(&seeds[0][1..], V, &LIMITS).is_ok());
        assert!(FetchHeader::decode(&seeds[1][1..], V, &LIMITS).is_ok());
        assert!(DatagramHeader::decode(&seeds[2][1..], &LIMITS).is_ok());
        replay(data, &seeds, 20_000);
    }

    fn draft22_seeds() -> Vec<Vec<u8>> {
        use crate::ietf::draft22::*;
        let ns = vec!["a".to_string(), "b".to_string()];
        let msgs: Vec<RequestMessage> = vec![
            RequestMessage::Setup(Setup {
                parameters: Parameters(vec![
                    (PARAM_PATH, ParameterValue::Bytes(b"/x".to_vec())),
                    (PARAM_MAX_REQUEST_ID, ParameterValue::Varint(9)),
                ]),
            }),
            RequestMessage::RequestUpdate(RequestUpdate {
                request_id: 6,
                parameters: MessageParameters(vec![
                    (param::FORWARD, ParamValue::Bool(false)),
                    (param::SUBSCRIBER_PRIORITY, ParamValue::Byte(3)),
                    (
                        param::LOCATION_FILTER,
                        ParamValue::Filter(LocationFilter::AbsoluteGroupEnd {
                            start: Location::default(),
                            end_group: 2,
                        }),
                    ),
                ]),
            }),
            RequestMessage::Subscribe(Subscribe {
                request_id: 4,
                namespace: ns.clone(),
                name: "t".into(),
                parameters: MessageParameters(vec![
                    (param::AUTHORIZATION_TOKEN, ParamValue::Bytes(vec![1])),
                    (param::FORWARD, ParamValue::Bool(true)),
                    (param::SUBSCRIBER_PRIORITY, ParamValue::Byte(7)),
                    (
                        param::LOCATION_FILTER,
                        ParamValue::Filter(LocationFilter::AbsoluteRange {
                            start: Location {
                                group: 1,
                                object: 2,
                            },
                            end_group: 3,
                            end_object: 4,
                        }),
                    ),
                    (param::GROUP_ORDER, ParamValue::Byte(1)),
                ]),
            }),
            RequestMessage::SubscribeOk(SubscribeOk {
                track_alias: 1,
                parameters: MessageParameters(vec![(
                    param::LARGEST_OBJECT,
                    ParamValue::Location(Location::default()),
                )]),
                properties: Parameters(vec![(0x22, ParameterValue::Varint(2))]),
            }),
            RequestMessage::RequestError(RequestError {
                code: 4,
                retry_interval: 300,
                reason: "r".into(),
            }),
            RequestMessage::PublishNamespace(PublishNamespace {
                request_id: 1,
                namespace: ns.clone(),
                parameters: MessageParameters::default(),
            }),
            RequestMessage::Publish(Publish {
                request_id: 6,
                namespace: ns.clone(),
                name: "t".into(),
                track_alias: 3,
                parameters: MessageParameters(vec![
                    (
                        param::LARGEST_OBJECT,
                        ParamValue::Location(Location {
                            group: 5,
                            object: 1,
                        }),
                    ),
                    (param::FORWARD, ParamValue::Bool(false)),
                ]),
                properties: Parameters(vec![(0x22, ParameterValue::Varint(2))]),
            }),
            RequestMessage::RequestUpdate(RequestUpdate {
                request_id: 9,
                parameters: MessageParameters(vec![(param::FORWARD, ParamValue::Bool(true))]),
            }),
            RequestMessage::Fetch(Fetch {
                request_id: 6,
                namespace: ns.clone(),
                name: "t".into(),
                parameters: MessageParameters(vec![
                    (param::SUBSCRIBER_PRIORITY, ParamValue::Byte(9)),
                    (
                        param::LOCATION_FILTER,
                        ParamValue::Filter(LocationFilter::AbsoluteGroupEnd {
                            start: Location {
                                group: 2,
                                object: 0,
                            },
                            end_group: 4,
                        }),
                    ),
                ]),
            }),
            RequestMessage::FetchOk(FetchOk {
                end_of_track: true,
                end: Location {
                    group: 4,
                    object: 1,
                },
                parameters: MessageParameters::default(),
                properties: Parameters::default(),
            }),
            RequestMessage::Namespace(Namespace { suffix: ns }),
        ];
        let mut control = vec![0u8];
        for m in &msgs {
            m.encode(&mut control).unwrap();
        }
        let mut sub = vec![1u8];
        SubgroupHeader {
            track_alias: 1,
            group: 300,
            subgroup: SubgroupId::Explicit(1),
            publisher_priority: None,
            extensions: true,
            end_of_group: true,
            first_object: true,
        }
        .encode(&mut sub)
        .unwrap();
        for (delta, len) in [(0u64, 3u64), (0, 0)] {
            let object = SubgroupObject {
                object_id_delta: delta,
                extensions: Some(vec![2, 1]),
                payload_len: len,
                status: (len == 0).then_some(ObjectStatus::EndOfGroup),
            };
            encode_object(&object, &mut sub).unwrap();
            sub.extend(std::iter::repeat_n(0xaa, len as usize));
        }
        let mut fetch = vec![2u8];
        FetchHeader { request_id: 6 }.encode(&mut fetch).unwrap();
        let objects = [
            FetchObject::Object {
                subgroup: FetchSubgroup::Zero,
                group: Some(2),
                object: Some(0),
                priority: Some(9),
                properties: None,
                payload_len: 2,
            },
            FetchObject::Object {
                subgroup: FetchSubgroup::Zero,
                group: None,
                object: None,
                priority: None,
                properties: Some(vec![]),
                payload_len: 2,
            },
            FetchObject::EndOfRange {
                reason: 0x8c,
                group: 1,
                object: 0,
            },
        ];
        for object in &objects {
            object.encode(&mut fetch).unwrap();
            if let FetchObject::Object { payload_len, .. } = object {
                fetch.extend(std::iter::repeat_n(0xbb, *payload_len as usize));
            }
        }
        let mut datagram = vec![3u8];
        DatagramHeader {
            track_alias: 2,
            group: 70_000,
            object: Some(3),
            publisher_priority: None,
            extensions: Some(vec![4, 2]),
            end_of_group: true,
            status: None,
        }
        .encode(&mut datagram)
        .unwrap();
        datagram.extend_from_slice(b"payload");
        vec![control, sub, fetch, datagram]
    }

    #[test]
    fn draft22_body_survives_mutated_seeds() {
        use crate::ietf::draft22::{Decode as _, RequestMessage, SubgroupHeader};
        let seeds = draft22_seeds();
        assert!(RequestMessage::decode(&seeds[0][1..], &LIMITS).is_ok());
        assert!(SubgroupHeader::decode(&seeds[1][1..], &LIMITS).is_ok());
        assert!(crate::ietf::draft22::FetchHeader::decode(&seeds[2][1..], &LIMITS).is_ok());
        assert!(crate::ietf::draft22::DatagramHeader::decode(&seeds[3][1..], &LIMITS).is_ok());
        replay(draft22, &seeds, 20_000);
    }
}
