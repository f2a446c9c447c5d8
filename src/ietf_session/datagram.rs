//! OBJECT_DATAGRAMs, both ways, on either draft: the peer's datagrams in as
//! datagram events for the hub of the upstream subscription that names their
//! alias, and a subscription's datagrams out (see `docs/IETF.md`, "Datagrams").
//!
//! A datagram is relayed now or never: none is queued, none is cached in a
//! group (so FETCH does not serve them), and every one the relay does not
//! pass on is counted in `qumo_datagrams_dropped_total`.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use tracing::debug;

use super::bridge::{extensions_in, frame_extensions, ietf_priority, MAX_OBJECT_EXTENSIONS};
use super::state::{IetfSession, Subscription};
use crate::ietf::draft22::{self, PADDING_DATAGRAM_TYPE};
use crate::ietf::{DatagramHeader, DecodeError, ObjectStatus, SessionCode, Version};
use crate::message::MediaEvent;
use crate::model::arrival_ms;
use crate::model::Datagram;
use crate::session::transport::Transport;
use crate::task::{race, Either};

/// A datagram's header in the terms both drafts share.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header {
    track_alias: u64,
    group: u64,
    object: u64,
    extensions: Option<Vec<u8>>,
    end_of_group: bool,
    status: Option<ObjectStatus>,
}

/// The shared fields of either draft's datagram header (two types, one shape).
macro_rules! shared_header {
    ($h:expr) => {
        Header {
            track_alias: $h.track_alias,
            group: $h.group,
            object: $h.object.unwrap_or(0),
            extensions: $h.extensions,
            end_of_group: $h.end_of_group,
            status: $h.status,
        }
    };
}

/// Decode a datagram of `version`: its header and the payload's offset, or
/// `None` for a PADDING datagram (draft 22), which is discarded.
fn decode(
    datagram: &[u8],
    version: Version,
    limits: &crate::lite::Limits,
) -> Result<Option<(Header, usize)>, DecodeError> {
    match version {
        Version::Draft14 => {
            let (h, offset) = DatagramHeader::decode(datagram, limits)?;
            Ok(Some((shared_header!(h), offset)))
        }
        Version::Draft22 => {
            if matches!(
                draft22::decode_varint(datagram),
                Ok((PADDING_DATAGRAM_TYPE, _))
            ) {
                return Ok(None);
            }
            let (h, offset) = draft22::DatagramHeader::decode(datagram, limits)?;
            Ok(Some((shared_header!(h), offset)))
        }
    }
}

/// The peer's datagrams, for as long as the session lives. One that cannot
/// be decoded is the peer breaking the protocol: the session is closed with
/// PROTOCOL_VIOLATION (moq-net does the same). One the relay cannot use is
/// dropped and counted: an alias no upstream subscription of ours has
/// named (the draft lets a receiver drop rather than buffer), a status other
/// than Normal (the model has no lone status objects), extensions over
/// [`MAX_OBJECT_EXTENSIONS`], or a shard mesh too congested to take it.
pub(super) async fn receive<T: Transport>(session: Rc<IetfSession<T>>) {
    let stats = &session.shard.stats;
    let settings = &session.shard.settings;
    let mut limits = settings.limits;
    limits.max_frame = settings.max_frame_size;
    loop {
        let received = race(session.transport.recv_datagram(), session.closed.raised()).await;
        let Either::Left(Some(datagram)) = received else {
            return;
        };
        let (header, offset) = match decode(&datagram, session.version, &limits) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => continue,
            Err(e) => {
                debug!(session = session.id, error = %e, "malformed datagram");
                stats.sessions_protocol_violations.inc();
                session.close(SessionCode::PROTOCOL_VIOLATION, "malformed datagram");
                return;
            }
        };
        if !matches!(header.status, None | Some(ObjectStatus::Normal)) {
            stats.datagrams_dropped.inc();
            continue;
        }
        if header
            .extensions
            .as_ref()
            .is_some_and(|e| e.len() > MAX_OBJECT_EXTENSIONS)
        {
            stats.ietf_extensions_too_large.inc();
            stats.datagrams_dropped.inc();
            continue;
        }
        let Some(upstream) = session.publishing.upstream_for_alias(header.track_alias) else {
            stats.datagrams_dropped.inc();
            continue;
        };
        session.shard.datagram_to_hub(
            upstream.hub,
            MediaEvent::Datagram(Datagram {
                sequence: header.group,
                object: header.object,
                end_of_group: header.end_of_group,
                timestamp: arrival_ms(),
                payload: datagram.slice(offset..),
                extensions: frame_extensions(header.extensions, session.version),
            }),
        );
    }
}

/// Relay one of the track's datagrams to a subscription, if its window and
/// Forward state pass it, as an OBJECT_DATAGRAM under the subscription's
/// alias and priority; else, or when the path takes none now, it is dropped
/// (counted only when the path refused it).
pub(super) fn send<T: Transport>(
    session: &IetfSession<T>,
    sub: &Subscription,
    datagram: &Datagram,
) {
    let window = sub.window.get();
    if !sub.forward.get() || !window.passes(datagram.sequence) {
        return;
    }
    let (first, last) = window.objects(datagram.sequence);
    if datagram.object < first || last.is_some_and(|last| datagram.object > last) {
        return;
    }
    let stats = &session.shard.stats;
    let Some(body) = encode(session.version, sub, datagram) else {
        stats.datagrams_dropped.inc();
        return;
    };
    if body.len() > session.transport.max_datagram_size() {
        stats.datagrams_dropped.inc();
        return;
    }
    match session.transport.send_datagram(body) {
        Ok(()) => stats.media_datagrams_sent.inc(),
        Err(_) => stats.datagrams_dropped.inc(),
    }
}

/// The whole OBJECT_DATAGRAM: header, then the payload (one copy into the
/// datagram, which QUIC needs whole).
fn encode(version: Version, sub: &Subscription, datagram: &Datagram) -> Option<Bytes> {
    let object = (datagram.object != 0).then_some(datagram.object);
    let priority = ietf_priority(sub.priority.get());
    let extensions = extensions_in(&datagram.extensions, version).map(<[u8]>::to_vec);
    let mut body = BytesMut::with_capacity(32 + datagram.payload.len());
    let encoded = match version {
        Version::Draft14 => DatagramHeader {
            track_alias: sub.track_alias,
            group: datagram.sequence,
            object,
            publisher_priority: priority,
            extensions,
            end_of_group: datagram.end_of_group,
            status: None,
        }
        .encode(&mut body),
        Version::Draft22 => draft22::DatagramHeader {
            track_alias: sub.track_alias,
            group: datagram.sequence,
            object,
            publisher_priority: Some(priority),
            extensions,
            end_of_group: datagram.end_of_group,
            status: None,
        }
        .encode(&mut body),
    };
    encoded.ok()?;
    body.extend_from_slice(&datagram.payload);
    Some(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lite::Limits;

    #[test]
    fn both_drafts_decode_to_the_same_header() {
        let limits = Limits::default();
        let mut d14 = Vec::new();
        DatagramHeader {
            track_alias: 7,
            group: 300,
            object: Some(2),
            publisher_priority: 9,
            extensions: Some(vec![2, 5]),
            end_of_group: true,
            status: None,
        }
        .encode(&mut d14)
        .unwrap();
        let mut d22 = Vec::new();
        draft22::DatagramHeader {
            track_alias: 7,
            group: 300,
            object: Some(2),
            publisher_priority: None,
            extensions: Some(vec![2, 5]),
            end_of_group: true,
            status: None,
        }
        .encode(&mut d22)
        .unwrap();
        let want = Header {
            track_alias: 7,
            group: 300,
            object: 2,
            extensions: Some(vec![2, 5]),
            end_of_group: true,
            status: None,
        };
        for (wire, version) in [(d14, Version::Draft14), (d22, Version::Draft22)] {
            let mut with_payload = wire.clone();
            with_payload.extend_from_slice(b"abc");
            let (header, offset) = decode(&with_payload, version, &limits).unwrap().unwrap();
            assert_eq!(header, want, "{version}");
            assert_eq!(&with_payload[offset..], b"abc");
        }
    }

    #[test]
    fn draft22_padding_is_not_an_object_and_draft14_refuses_it() {
        let limits = Limits::default();
        let mut tmp = [0; 9];
        let mut padding = draft22::encode_varint(PADDING_DATAGRAM_TYPE, &mut tmp).to_vec();
        padding.extend_from_slice(&[0; 20]);
        assert_eq!(decode(&padding, Version::Draft22, &limits), Ok(None));
        assert!(decode(&padding, Version::Draft14, &limits).is_err());
    }
}
