//! The pure half of bridging IETF tracks onto the relay's group/frame model:
//! names, priorities, and the object sequence of one subgroup stream.
//! `docs/IETF.md` ("moq-lite and IETF on one model") gives the rules.

use crate::ietf::{ObjectStatus, SubgroupHeader, SubgroupId, SubgroupObject};
use crate::model::{Frame, ObjectExtensions};

/// A namespace tuple as a broadcast path: fields joined by `/`, with a `/` or
/// `\` inside a field escaped by `\` (moq-net's rule, so both relays name a
/// track alike). The empty tuple is the empty path.
pub fn namespace_to_path(fields: &[String]) -> String {
    let mut path = String::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            path.push('/');
        }
        for ch in field.chars() {
            if matches!(ch, '/' | '\\') {
                path.push('\\');
            }
            path.push(ch);
        }
    }
    path
}

/// The inverse of [`namespace_to_path`]. A `\` before anything but `/` or `\`
/// (which [`namespace_to_path`] never writes) is kept literally, as moq-net
/// keeps it.
pub fn path_to_namespace(path: &str) -> Vec<String> {
    if path.is_empty() {
        return Vec::new();
    }
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = path.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '/' => fields.push(std::mem::take(&mut field)),
            '\\' => match chars.next() {
                Some(next @ ('/' | '\\')) => field.push(next),
                Some(next) => {
                    field.push('\\');
                    field.push(next);
                }
                None => field.push('\\'),
            },
            _ => field.push(ch),
        }
    }
    fields.push(field);
    fields
}

/// moq-lite priorities rank higher first, IETF ones lower first: the same
/// order, mirrored.
pub const fn ietf_priority(lite: u8) -> u8 {
    u8::MAX - lite
}

/// The inverse of [`ietf_priority`].
pub const fn lite_priority(ietf: u8) -> u8 {
    u8::MAX - ietf
}

/// The header of the one subgroup stream that carries a relay group to an IETF
/// subscriber: Subgroup ID 0, FIN ends the group, no extension headers.
pub fn subgroup_for_group(track_alias: u64, group: u64, lite_priority: u8) -> SubgroupHeader {
    SubgroupHeader {
        track_alias,
        group,
        subgroup: SubgroupId::Zero,
        publisher_priority: ietf_priority(lite_priority),
        extensions: false,
        end_of_group: true,
    }
}

/// The same stream's header on draft 22: the relay always sends a group from its
/// first frame, so the FIRST_OBJECT bit (0x40) is set, and the priority byte is
/// kept (type 0x58).
pub fn draft22_subgroup(header: &SubgroupHeader) -> crate::ietf::draft22::SubgroupHeader {
    crate::ietf::draft22::SubgroupHeader {
        track_alias: header.track_alias,
        group: header.group,
        subgroup: header.subgroup,
        publisher_priority: Some(header.publisher_priority),
        extensions: header.extensions,
        end_of_group: header.end_of_group,
        first_object: true,
    }
}

/// The most extension-header bytes one object may bring into the relay: a
/// bound on what a publisher can make the cache hold beside each payload
/// (the codec's own bound is `Limits::max_message`). LOC headers and the
/// like are tens of bytes.
pub const MAX_OBJECT_EXTENSIONS: usize = 4096;

/// An IETF object's extension block as a frame keeps it: `None` when empty
/// (a frame then costs what a lite frame does). The bytes are taken as they
/// came, never parsed.
pub fn frame_extensions(
    block: Option<Vec<u8>>,
    draft: crate::ietf::Version,
) -> Option<Box<ObjectExtensions>> {
    block.filter(|b| !b.is_empty()).map(|b| {
        Box::new(ObjectExtensions {
            draft,
            bytes: b.into(),
        })
    })
}

/// The extension block to send with `frame` to a subscriber on `draft`: the
/// publisher's bytes when it wrote them in the same draft's layout, else none
/// (lite frames have none; draft 14's and draft 22's layouts differ).
pub fn extensions_for(frame: &Frame, draft: crate::ietf::Version) -> Option<&[u8]> {
    extensions_in(&frame.extensions, draft)
}

/// The same rule for any block a frame or datagram kept.
pub fn extensions_in(
    extensions: &Option<Box<ObjectExtensions>>,
    draft: crate::ietf::Version,
) -> Option<&[u8]> {
    extensions
        .as_deref()
        .filter(|e| e.draft == draft)
        .map(|e| &e.bytes[..])
}

/// The header before frame `index`'s payload on such a stream: frames are
/// objects 0, 1, 2..., so every delta is 0. An empty frame is a Normal-status
/// object.
pub fn object_for_frame(payload_len: u64) -> SubgroupObject {
    SubgroupObject {
        object_id_delta: 0,
        extensions: None,
        payload_len,
        status: (payload_len == 0).then_some(ObjectStatus::Normal),
    }
}

/// What one object on an incoming subgroup stream means for the relay's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Append the next frame (`payload_len` bytes follow; 0 for an empty one).
    Frame {
        /// The object's ID, equal to the frame's index in its group.
        object: u64,
        /// Payload bytes that follow the header.
        payload_len: u64,
    },
    /// The group is complete; nothing more may follow on this stream.
    EndOfGroup,
    /// The track is complete.
    EndOfTrack,
}

/// Why an incoming subgroup stream cannot be mapped onto a group; the stream
/// is reset, the session stays up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    /// Objects missing before this one: a group of frames has no holes.
    #[error("object {got} where {expected} was next")]
    Gap {
        /// The next object the group needs.
        expected: u64,
        /// The object that arrived.
        got: u64,
    },
    /// An object after END_OF_GROUP or END_OF_TRACK.
    #[error("object after the end of its group")]
    AfterEnd,
    /// A subgroup other than the group's first; one stream per group.
    #[error("subgroup {0} of a group: only one subgroup per group is relayed")]
    Subgroup(u64),
    /// Object IDs beyond u64.
    #[error("object id overflows")]
    Overflow,
}

/// The object sequence of one incoming subgroup stream.
#[derive(Debug)]
pub struct SubgroupIngest {
    next: u64,
    first: bool,
    ended: bool,
}

impl SubgroupIngest {
    /// Start reading a stream with `header`. Only Subgroup ID 0 (or "the first
    /// object's ID", checked against 0 at the first object) maps onto a group.
    pub fn new(header: &SubgroupHeader) -> Result<Self, BridgeError> {
        match header.subgroup {
            SubgroupId::Explicit(id) if id != 0 => Err(BridgeError::Subgroup(id)),
            _ => Ok(SubgroupIngest {
                next: 0,
                first: true,
                ended: false,
            }),
        }
    }

    /// Map the next object header.
    pub fn object(&mut self, object: &SubgroupObject) -> Result<Step, BridgeError> {
        if self.ended {
            return Err(BridgeError::AfterEnd);
        }
        let id = match self.first {
            true => object.object_id_delta,
            false => self
                .next
                .checked_add(object.object_id_delta)
                .ok_or(BridgeError::Overflow)?,
        };
        self.first = false;
        match object.status {
            Some(ObjectStatus::EndOfGroup) => {
                self.ended = true;
                return Ok(Step::EndOfGroup);
            }
            Some(ObjectStatus::EndOfTrack) => {
                self.ended = true;
                return Ok(Step::EndOfTrack);
            }
            // A missing object is a hole the frame model cannot hold.
            Some(ObjectStatus::DoesNotExist) | Some(ObjectStatus::Normal) | None => {}
        }
        if id != self.next {
            return Err(BridgeError::Gap {
                expected: self.next,
                got: id,
            });
        }
        if object.status == Some(ObjectStatus::DoesNotExist) {
            return Err(BridgeError::Gap {
                expected: id,
                got: id.saturating_add(1),
            });
        }
        self.next = id.checked_add(1).ok_or(BridgeError::Overflow)?;
        Ok(Step::Frame {
            object: id,
            payload_len: object.payload_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn namespaces_and_paths_round_trip_with_escapes() {
        let cases: [(&[&str], &str); 5] = [
            (&[], ""),
            (&["live"], "live"),
            (&["live", "cam"], "live/cam"),
            (&["a/b", "c\\d"], "a\\/b/c\\\\d"),
            (&["", ""], "/"),
        ];
        for (tuple, path) in cases {
            assert_eq!(namespace_to_path(&fields(tuple)), path, "{tuple:?}");
            assert_eq!(path_to_namespace(path), fields(tuple), "{path}");
        }
        // A stray escape is kept, as moq-net keeps it.
        assert_eq!(path_to_namespace("a\\x"), fields(&["a\\x"]));
        assert_eq!(path_to_namespace("a\\"), fields(&["a\\"]));
    }

    #[test]
    fn priorities_mirror() {
        assert_eq!(ietf_priority(255), 0);
        assert_eq!(ietf_priority(0), 255);
        for p in [0u8, 1, 127, 128, 254, 255] {
            assert_eq!(lite_priority(ietf_priority(p)), p);
        }
        // Order is kept: more urgent in lite is more urgent in IETF.
        assert!(ietf_priority(200) < ietf_priority(100));
    }

    #[test]
    fn a_relay_group_goes_out_as_one_end_of_group_subgroup_stream() {
        let header = subgroup_for_group(7, 42, 200);
        assert_eq!(header.stream_type(), 0x18);
        assert_eq!(header.publisher_priority, 55);
        assert_eq!(object_for_frame(5).status, None);
        assert_eq!(object_for_frame(0).status, Some(ObjectStatus::Normal));
        // What we send, we accept back.
        let mut ingest = SubgroupIngest::new(&header).unwrap();
        for (i, len) in [3u64, 0, 9].into_iter().enumerate() {
            assert_eq!(
                ingest.object(&object_for_frame(len)),
                Ok(Step::Frame {
                    object: i as u64,
                    payload_len: len
                })
            );
        }
    }

    fn obj(delta: u64, status: Option<ObjectStatus>) -> SubgroupObject {
        SubgroupObject {
            object_id_delta: delta,
            extensions: None,
            payload_len: if status.is_some() { 0 } else { 1 },
            status,
        }
    }

    #[test]
    fn gaps_and_objects_after_the_end_are_refused() {
        let header = subgroup_for_group(1, 1, 0);
        let mut ingest = SubgroupIngest::new(&header).unwrap();
        assert!(matches!(
            ingest.object(&obj(0, None)),
            Ok(Step::Frame { object: 0, .. })
        ));
        assert_eq!(
            ingest.object(&obj(2, None)),
            Err(BridgeError::Gap {
                expected: 1,
                got: 3
            })
        );

        // A first object other than 0 leaves a hole at the front.
        let mut ingest = SubgroupIngest::new(&header).unwrap();
        assert!(matches!(
            ingest.object(&obj(4, None)),
            Err(BridgeError::Gap {
                expected: 0,
                got: 4
            })
        ));

        let mut ingest = SubgroupIngest::new(&header).unwrap();
        assert!(ingest.object(&obj(0, None)).is_ok());
        assert!(matches!(
            ingest.object(&obj(0, Some(ObjectStatus::DoesNotExist))),
            Err(BridgeError::Gap { .. })
        ));

        // END_OF_GROUP may carry any id (it names no frame); nothing may follow.
        let mut ingest = SubgroupIngest::new(&header).unwrap();
        assert!(ingest.object(&obj(0, None)).is_ok());
        assert_eq!(
            ingest.object(&obj(5, Some(ObjectStatus::EndOfGroup))),
            Ok(Step::EndOfGroup)
        );
        assert_eq!(ingest.object(&obj(0, None)), Err(BridgeError::AfterEnd));

        let mut ingest = SubgroupIngest::new(&header).unwrap();
        assert_eq!(
            ingest.object(&obj(0, Some(ObjectStatus::EndOfTrack))),
            Ok(Step::EndOfTrack)
        );
    }

    #[test]
    fn only_the_first_subgroup_of_a_group_is_relayed() {
        let mut header = subgroup_for_group(1, 1, 0);
        header.subgroup = SubgroupId::Explicit(2);
        assert_eq!(
            SubgroupIngest::new(&header).err(),
            Some(BridgeError::Subgroup(2))
        );
        header.subgroup = SubgroupId::Explicit(0);
        assert!(SubgroupIngest::new(&header).is_ok());
        // "Subgroup = first object id" maps when that id is 0, else it is a gap.
        header.subgroup = SubgroupId::FirstObject;
        let mut ingest = SubgroupIngest::new(&header).unwrap();
        assert!(matches!(
            ingest.object(&obj(3, None)),
            Err(BridgeError::Gap { .. })
        ));
    }

    #[test]
    fn object_ids_near_the_top_do_not_wrap() {
        let header = subgroup_for_group(1, 1, 0);
        let mut ingest = SubgroupIngest::new(&header).unwrap();
        assert!(ingest.object(&obj(0, None)).is_ok());
        assert!(matches!(
            ingest.object(&obj(u64::MAX, None)),
            Err(BridgeError::Overflow)
        ));
    }
}
