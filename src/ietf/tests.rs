//! Round trips, limits and malformed input for the draft-14 codec.

use super::*;

const V: Version = Version::Draft14;

fn limits() -> Limits {
    Limits::default()
}

fn ns(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| f.to_string()).collect()
}

/// One of each control message, with non-trivial fields.
fn every_control_message() -> Vec<ControlMessage> {
    let params = Parameters(vec![
        (0x2, ParameterValue::Varint(1 << 40)),
        (0x3, ParameterValue::Bytes(vec![0, 1, 2])),
        // An unknown key and a repeat are kept, in order.
        (0x3e, ParameterValue::Varint(0)),
        (0x3, ParameterValue::Bytes(vec![])),
    ]);
    let loc = Location {
        group: 1 << 20,
        object: 63,
    };
    vec![
        ClientSetup {
            versions: vec![Version::Draft14.wire(), 0xff00_0010],
            parameters: params.clone(),
        }
        .into(),
        ServerSetup {
            version: Version::Draft14.wire(),
            parameters: Parameters::default(),
        }
        .into(),
        SubscribeUpdate {
            request_id: 8,
            subscription_request_id: 2,
            start: loc,
            end_group: 0,
            subscriber_priority: 255,
            forward: false,
            parameters: params.clone(),
        }
        .into(),
        Subscribe {
            request_id: 2,
            namespace: ns(&["", "x/y", "ünï"]),
            name: String::new(),
            subscriber_priority: 0,
            group_order: GroupOrder::Publisher,
            forward: true,
            filter: Filter::AbsoluteStart(loc),
            parameters: params.clone(),
        }
        .into(),
        SubscribeOk {
            request_id: 2,
            track_alias: 1 << 61,
            expires: 1000,
            group_order: GroupOrder::Ascending,
            largest: Some(loc),
            parameters: params.clone(),
        }
        .into(),
        SubscribeError {
            request_id: 2,
            code: 0x10,
            reason: "r".repeat(MAX_REASON),
        }
        .into(),
        PublishNamespace {
            request_id: 0,
            namespace: ns(&[]),
            parameters: params.clone(),
        }
        .into(),
        PublishNamespaceOk { request_id: 0 }.into(),
        PublishNamespaceError {
            request_id: 0,
            code: 1,
            reason: String::new(),
        }
        .into(),
        PublishNamespaceDone {
            namespace: ns(&["a"]),
        }
        .into(),
        Unsubscribe { request_id: 2 }.into(),
        PublishDone {
            request_id: 2,
            status: 3,
            stream_count: 0,
            reason: "done".into(),
        }
        .into(),
        PublishNamespaceCancel {
            namespace: ns(&["a", "b"]),
            code: 4,
            reason: "c".into(),
        }
        .into(),
        Goaway { uri: String::new() }.into(),
        SubscribeNamespace {
            request_id: 4,
            prefix: ns(&["live"]),
            parameters: params.clone(),
        }
        .into(),
        SubscribeNamespaceOk { request_id: 4 }.into(),
        SubscribeNamespaceError {
            request_id: 4,
            code: 2,
            reason: "e".into(),
        }
        .into(),
        MaxRequestId { request_id: 100 }.into(),
        Fetch {
            request_id: 10,
            subscriber_priority: 9,
            group_order: GroupOrder::Descending,
            fetch_type: FetchType::AbsoluteJoining {
                joining_request_id: 2,
                joining_start: 7,
            },
            parameters: params,
        }
        .into(),
        FetchCancel { request_id: 10 }.into(),
        FetchOk {
            request_id: 10,
            group_order: GroupOrder::Descending,
            end_of_track: true,
            end: loc,
            parameters: Parameters::default(),
        }
        .into(),
        FetchError {
            request_id: 10,
            code: 1,
            reason: "f".into(),
        }
        .into(),
        RequestsBlocked {
            maximum_request_id: 100,
        }
        .into(),
    ]
}

#[test]
fn every_control_message_round_trips_and_every_prefix_is_short() {
    for msg in every_control_message() {
        let wire = msg.to_vec(V).unwrap();
        assert_eq!(
            ControlMessage::decode(&wire, V, &limits()),
            Ok((msg.clone(), wire.len()))
        );
        for cut in 0..wire.len() {
            assert_eq!(
                ControlMessage::decode(&wire[..cut], V, &limits()),
                Err(DecodeError::Short),
                "{msg:?} cut at {cut}"
            );
        }
        // Back to back, as on the control stream.
        let mut two = wire.clone();
        two.extend_from_slice(&wire);
        let (_, used) = ControlMessage::decode(&two, V, &limits()).unwrap();
        assert_eq!(used, wire.len());
    }
}

#[test]
fn a_length_over_the_limit_is_refused_before_the_body_arrives() {
    let small = Limits {
        max_message: 16,
        ..Limits::default()
    };
    // SUBSCRIBE with Length 17 and no body yet.
    assert_eq!(
        ControlMessage::decode(&[0x03, 0x00, 0x11], V, &small),
        Err(DecodeError::TooLong {
            what: "SUBSCRIBE",
            len: 17,
            max: 16
        })
    );
}

#[test]
fn a_body_with_bytes_left_over_or_cut_short_is_malformed() {
    let mut wire = Unsubscribe { request_id: 2 }.to_vec(V).unwrap();
    // Length 2 with a one-byte body field and one stray byte.
    wire[2] = 2;
    wire.push(0);
    assert!(matches!(
        ControlMessage::decode(&wire, V, &limits()),
        Err(DecodeError::TrailingBytes { .. })
    ));
    // Length 0: the request id is missing inside a complete body.
    assert_eq!(
        ControlMessage::decode(&[0x0a, 0, 0], V, &limits()),
        Err(DecodeError::Truncated {
            what: "UNSUBSCRIBE"
        })
    );
}

#[test]
fn unknown_control_types_and_mismatched_decoders_are_refused() {
    assert_eq!(
        ControlMessage::decode(&[0x0d, 0, 0], V, &limits()),
        Err(DecodeError::UnknownType {
            what: "control message",
            ty: 0x0d
        })
    );
    let wire = Unsubscribe { request_id: 2 }.to_vec(V).unwrap();
    assert!(matches!(
        Subscribe::decode(&wire, V, &limits()),
        Err(DecodeError::UnknownType { ty: 0x0a, .. })
    ));
}

#[test]
fn booleans_and_group_orders_outside_their_range_are_malformed() {
    let ok = SubscribeOk {
        request_id: 2,
        track_alias: 9,
        expires: 0,
        group_order: GroupOrder::Ascending,
        largest: None,
        parameters: Parameters::default(),
    };
    let wire = ok.to_vec(V).unwrap();
    // type, length(2), request, alias, expires, order, content exists, params
    let order_at = 6;
    let exists_at = 7;
    let mut bad = wire.clone();
    bad[order_at] = 3;
    assert!(matches!(
        SubscribeOk::decode(&bad, V, &limits()),
        Err(DecodeError::InvalidValue {
            what: "group order"
        })
    ));
    let mut bad = wire;
    bad[exists_at] = 2;
    assert!(matches!(
        SubscribeOk::decode(&bad, V, &limits()),
        Err(DecodeError::InvalidValue {
            what: "content exists"
        })
    ));
}

#[test]
fn namespaces_are_bounded_in_fields_and_bytes_both_ways() {
    let deep = PublishNamespaceDone {
        namespace: vec!["a".into(); MAX_NAMESPACE_FIELDS + 1],
    };
    assert!(matches!(
        deep.to_vec(V),
        Err(EncodeError::TooLong { len: 33, .. })
    ));
    // 33 fields on the wire, refused at the count.
    let mut wire = vec![0x09, 0, 1, 33];
    wire[2] = 1;
    assert!(matches!(
        ControlMessage::decode(&wire, V, &limits()),
        Err(DecodeError::TooLong {
            what: "namespace fields",
            len: 33,
            ..
        })
    ));
    let ok = PublishNamespaceDone {
        namespace: vec!["ab".into(); 3],
    };
    let wire = ok.to_vec(V).unwrap();
    let tight = Limits {
        max_path: 5,
        ..Limits::default()
    };
    assert!(matches!(
        ControlMessage::decode(&wire, V, &tight),
        Err(DecodeError::TooLong {
            what: "namespace",
            ..
        })
    ));
    let roomy = Limits {
        max_path: 6,
        ..Limits::default()
    };
    assert!(ControlMessage::decode(&wire, V, &roomy).is_ok());
}

#[test]
fn parameters_are_bounded_and_their_kind_follows_the_key() {
    let too_many = Parameters(vec![(2, ParameterValue::Varint(0)); MAX_PARAMETERS + 1]);
    let msg = PublishNamespace {
        request_id: 0,
        namespace: vec![],
        parameters: too_many,
    };
    assert!(matches!(msg.to_vec(V), Err(EncodeError::TooLong { .. })));
    // 65 parameters claimed on the wire.
    let wire = [0x06, 0x00, 0x04, 0x00, 0x00, 0x40, 0x41];
    assert!(matches!(
        ControlMessage::decode(&wire, V, &limits()),
        Err(DecodeError::TooLong {
            what: "parameters",
            len: 65,
            ..
        })
    ));
    for wrong in [
        (2, ParameterValue::Bytes(vec![1])),
        (3, ParameterValue::Varint(1)),
    ] {
        let msg = PublishNamespace {
            request_id: 0,
            namespace: vec![],
            parameters: Parameters(vec![wrong]),
        };
        assert!(matches!(
            msg.to_vec(V),
            Err(EncodeError::InvalidValue { .. })
        ));
    }
    let params = Parameters(vec![
        (PARAM_PATH, ParameterValue::Bytes(b"/p".to_vec())),
        (PARAM_MAX_REQUEST_ID, ParameterValue::Varint(5)),
    ]);
    assert_eq!(params.varint(PARAM_MAX_REQUEST_ID), Some(5));
    assert_eq!(params.bytes(PARAM_PATH), Some(b"/p".as_slice()));
    assert_eq!(params.varint(PARAM_PATH), None);
}

#[test]
fn a_body_over_65535_bytes_cannot_be_framed_and_nothing_is_written() {
    let msg = PublishNamespace {
        request_id: 0,
        namespace: vec![],
        parameters: Parameters(vec![
            (1, ParameterValue::Bytes(vec![0; MAX_PARAMETER_VALUE]));
            2
        ]),
    };
    let mut out = Vec::new();
    assert!(matches!(
        msg.encode(&mut out, V),
        Err(EncodeError::TooLong { .. })
    ));
    assert!(out.is_empty());
}

#[test]
fn every_subgroup_stream_type_round_trips_and_the_rest_are_refused() {
    let mut valid = 0;
    for ty in 0u64..0x40 {
        let wire = [ty as u8, 1, 2, 3, 4];
        match SubgroupHeader::decode(&wire, V, &limits()) {
            Ok((header, used)) => {
                valid += 1;
                assert!(SubgroupHeader::is_subgroup_type(ty));
                assert_eq!(header.stream_type(), ty);
                assert_eq!(header.to_vec(V).unwrap(), wire[..used]);
            }
            Err(e) => {
                assert!(!SubgroupHeader::is_subgroup_type(ty), "{ty:#x}: {e}");
                assert!(matches!(e, DecodeError::UnknownType { .. }));
            }
        }
    }
    // 0x10..=0x1D less 0x16 and 0x17 (first-object and explicit id together).
    assert_eq!(valid, 12);
}

#[test]
fn subgroup_objects_carry_extensions_raw_and_status_only_when_empty() {
    let object = SubgroupObject {
        object_id_delta: 0,
        extensions: Some(vec![0x02, 0x05, 0x0b, 0x01, 0xff]),
        payload_len: 4,
        status: None,
    };
    let mut wire = Vec::new();
    object.encode(&mut wire).unwrap();
    assert_eq!(wire, [0x00, 0x05, 0x02, 0x05, 0x0b, 0x01, 0xff, 0x04]);
    wire.extend_from_slice(b"data");
    let (back, used) = SubgroupObject::decode(&wire, true, &limits()).unwrap();
    assert_eq!(back, object);
    assert_eq!(&wire[used..], b"data");
    // The same bytes on a stream without extensions read differently: delta 0,
    // payload length 5.
    let (plain, _) = SubgroupObject::decode(&wire, false, &limits()).unwrap();
    assert_eq!((plain.extensions, plain.payload_len), (None, 5));

    let end = SubgroupObject {
        object_id_delta: 3,
        extensions: None,
        payload_len: 0,
        status: Some(ObjectStatus::EndOfGroup),
    };
    let mut wire = Vec::new();
    end.encode(&mut wire).unwrap();
    assert_eq!(wire, [0x03, 0x00, 0x03]);
    assert_eq!(
        SubgroupObject::decode(&wire, false, &limits()),
        Ok((end, 3))
    );
    for status in [2u8, 5] {
        assert!(matches!(
            SubgroupObject::decode(&[0, 0, status], false, &limits()),
            Err(DecodeError::InvalidValue {
                what: "object status"
            })
        ));
    }
    for bad in [
        SubgroupObject {
            object_id_delta: 0,
            extensions: None,
            payload_len: 0,
            status: None,
        },
        SubgroupObject {
            object_id_delta: 0,
            extensions: None,
            payload_len: 1,
            status: Some(ObjectStatus::Normal),
        },
    ] {
        assert!(bad.encode(&mut Vec::new()).is_err());
    }
}

#[test]
fn object_sizes_are_refused_from_their_prefix() {
    let tight = Limits {
        max_message: 8,
        max_frame: 100,
        ..Limits::default()
    };
    // Payload length 101.
    assert!(matches!(
        SubgroupObject::decode(&[0x00, 0x40, 0x65], false, &tight),
        Err(DecodeError::TooLong {
            what: "object payload",
            len: 101,
            ..
        })
    ));
    // Extension length 9, none of its bytes present yet.
    assert!(matches!(
        SubgroupObject::decode(&[0x00, 0x09], true, &tight),
        Err(DecodeError::TooLong {
            what: "extension headers",
            len: 9,
            ..
        })
    ));
}

#[test]
fn fetch_objects_round_trip() {
    let object = FetchObject {
        group: 5,
        subgroup: 1,
        object: 9,
        publisher_priority: 200,
        extensions: vec![],
        payload_len: 0,
        status: Some(ObjectStatus::DoesNotExist),
    };
    let wire = object.to_vec(V).unwrap();
    assert_eq!(wire, [5, 1, 9, 200, 0, 0, 1]);
    assert_eq!(FetchObject::decode(&wire, V, &limits()), Ok((object, 7)));
    for cut in 0..wire.len() {
        assert_eq!(
            FetchObject::decode(&wire[..cut], V, &limits()),
            Err(DecodeError::Short)
        );
    }
}

#[test]
fn malformed_datagrams_are_refused() {
    let limits = limits();
    // Types 0x08..=0x1f and 0x22+ do not exist in draft 14.
    for ty in [0x08u8, 0x1f, 0x22] {
        assert!(matches!(
            DatagramHeader::decode(&[ty, 1, 2, 3, 4, 5], &limits),
            Err(DecodeError::UnknownType { .. })
        ));
    }
    // A status datagram with a byte after the status.
    assert!(matches!(
        DatagramHeader::decode(&[0x20, 1, 2, 3, 4, 0, 9], &limits),
        Err(DecodeError::TrailingBytes { .. })
    ));
    // Extensions flagged but empty.
    assert!(matches!(
        DatagramHeader::decode(&[0x01, 1, 2, 3, 4, 0], &limits),
        Err(DecodeError::InvalidValue { .. })
    ));
    // A datagram cut inside its header is truncated (its end is known), not short.
    assert_eq!(
        DatagramHeader::decode(&[0x00, 1, 2], &limits),
        Err(DecodeError::Truncated { what: "datagram" })
    );
    let status_without_object = DatagramHeader {
        track_alias: 1,
        group: 2,
        object: None,
        publisher_priority: 0,
        extensions: None,
        end_of_group: false,
        status: Some(ObjectStatus::Normal),
    };
    assert!(status_without_object.encode(&mut Vec::new()).is_err());
}

#[test]
fn unsubscribe_namespace_reads_the_drafts_prefix_and_moq_nets_request_id() {
    // aiomoqt 0.13.3 writes the draft-14 text's Track Namespace Prefix.
    let prefix = [0x14, 0x00, 0x03, 0x01, 0x01, b'a'];
    let (msg, used) = ControlMessage::decode(&prefix, V, &limits()).unwrap();
    assert_eq!(used, prefix.len());
    assert_eq!(
        msg,
        UnsubscribeNamespace {
            interest: NamespaceInterest::Prefix(vec!["a".into()])
        }
        .into()
    );
    assert_eq!(msg.to_vec(V).unwrap(), prefix);
    // moq-net 0.3.18 writes the SUBSCRIBE_NAMESPACE's Request ID: a lone
    // varint that is not a whole tuple.
    let id = [0x14, 0x00, 0x01, 0x06];
    let (msg, _) = ControlMessage::decode(&id, V, &limits()).unwrap();
    assert_eq!(
        msg,
        UnsubscribeNamespace {
            interest: NamespaceInterest::RequestId(6)
        }
        .into()
    );
    assert_eq!(msg.to_vec(V).unwrap(), id);
    // Neither spelling: malformed.
    assert!(ControlMessage::decode(&[0x14, 0x00, 0x02, 0x03, 0x01], V, &limits()).is_err());
}
