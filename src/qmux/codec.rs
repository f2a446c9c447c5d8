//! QMux draft-00 frames (draft-ietf-quic-qmux-00): QUIC v1 frame encodings
//! carried one frame per WebSocket message. Pure: no I/O, no state.
//!
//! Limits come before allocation: a message is at most [`MAX_FRAME_SIZE`]
//! bytes (draft-00's `max_frame_size`, checked by the caller before it is
//! buffered, and again here), every length is checked against what is left
//! of the message, and a STREAM frame's payload is a slice of the message,
//! never a copy.
//!
//! Two clients disagree on APPLICATION_CLOSE (0x1d): `@moq/qmux` writes RFC
//! 9000's form (code, reason), moq-native's `qmux` 0.0.7 adds a frame-type
//! field. A close is a close: only its code is read, the rest is ignored.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use web_transport_proto::VarInt;

/// draft-00 `max_frame_size`: the largest whole frame either side sends.
pub const MAX_FRAME_SIZE: usize = 16384;
/// The most STREAM payload we put in one frame: the header (type, id,
/// offset, length: at most 1 + 8 + 8 + 8) comes out of [`MAX_FRAME_SIZE`].
pub const MAX_STREAM_PAYLOAD: usize = MAX_FRAME_SIZE - 32;

const RESET_STREAM: u64 = 0x04;
const STOP_SENDING: u64 = 0x05;
const STREAM_MIN: u64 = 0x08;
const STREAM_MAX: u64 = 0x0f;
const STREAM_OFF: u64 = 0x04;
const STREAM_LEN: u64 = 0x02;
const STREAM_FIN: u64 = 0x01;
const MAX_DATA: u64 = 0x10;
const MAX_STREAM_DATA: u64 = 0x11;
const MAX_STREAMS_BIDI: u64 = 0x12;
const MAX_STREAMS_UNI: u64 = 0x13;
const DATA_BLOCKED: u64 = 0x14;
const STREAM_DATA_BLOCKED: u64 = 0x15;
const STREAMS_BLOCKED_BIDI: u64 = 0x16;
const STREAMS_BLOCKED_UNI: u64 = 0x17;
const CONNECTION_CLOSE: u64 = 0x1c;
const APPLICATION_CLOSE: u64 = 0x1d;
const DATAGRAM: u64 = 0x30;
const DATAGRAM_LEN: u64 = 0x31;
/// `QX_TRANSPORT_PARAMETERS`: "\xffQMX\r\n\r\n" as a varint.
const TRANSPORT_PARAMETERS: u64 = 0x3f51_5330_0d0a_0d0a;

/// QUIC transport error codes (RFC 9000 §20.1) a QMux endpoint closes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportCode(pub u64);

impl TransportCode {
    pub const FLOW_CONTROL_ERROR: Self = Self(0x03);
    pub const STREAM_LIMIT_ERROR: Self = Self(0x04);
    pub const STREAM_STATE_ERROR: Self = Self(0x05);
    pub const FINAL_SIZE_ERROR: Self = Self(0x06);
    pub const FRAME_ENCODING_ERROR: Self = Self(0x07);
    pub const TRANSPORT_PARAMETER_ERROR: Self = Self(0x08);
    pub const PROTOCOL_VIOLATION: Self = Self(0x0a);
}

/// Why a message is not a frame we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {0} bytes exceeds max_frame_size")]
    TooLarge(usize),
    #[error("frame ends early")]
    Short,
    #[error("{0} trailing bytes after the frame")]
    Trailing(usize),
    #[error("unknown frame type {0:#x}")]
    UnknownType(u64),
    #[error("transport parameter {0:#x} repeated or malformed")]
    BadParameter(u64),
    #[error("DATAGRAM frame, and datagrams were not offered")]
    Datagram,
}

impl CodecError {
    /// The transport error this closes the connection with.
    pub fn code(&self) -> TransportCode {
        match self {
            CodecError::BadParameter(_) => TransportCode::TRANSPORT_PARAMETER_ERROR,
            CodecError::Datagram => TransportCode::PROTOCOL_VIOLATION,
            _ => TransportCode::FRAME_ENCODING_ERROR,
        }
    }
}

/// The transport parameters draft-00 exchanges (RFC 9000 §18.2 ids);
/// others are skipped. Absent ones are 0, as in QUIC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportParams {
    pub max_idle_timeout_ms: u64,
    pub initial_max_data: u64,
    pub initial_max_stream_data_bidi_local: u64,
    pub initial_max_stream_data_bidi_remote: u64,
    pub initial_max_stream_data_uni: u64,
    pub initial_max_streams_bidi: u64,
    pub initial_max_streams_uni: u64,
}

const PARAM_IDS: [u64; 7] = [0x01, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09];

impl TransportParams {
    fn slot(&mut self, id: u64) -> Option<&mut u64> {
        Some(match id {
            0x01 => &mut self.max_idle_timeout_ms,
            0x04 => &mut self.initial_max_data,
            0x05 => &mut self.initial_max_stream_data_bidi_local,
            0x06 => &mut self.initial_max_stream_data_bidi_remote,
            0x07 => &mut self.initial_max_stream_data_uni,
            0x08 => &mut self.initial_max_streams_bidi,
            0x09 => &mut self.initial_max_streams_uni,
            _ => return None,
        })
    }

    fn decode(mut data: Bytes) -> Result<Self, CodecError> {
        let mut params = TransportParams::default();
        let mut seen = 0u8;
        while data.has_remaining() {
            let id = varint(&mut data)?;
            let len = length(&mut data)?;
            let mut value = data.split_to(len);
            let Some(index) = PARAM_IDS.iter().position(|p| *p == id) else {
                continue;
            };
            if seen & (1 << index) != 0 {
                return Err(CodecError::BadParameter(id));
            }
            seen |= 1 << index;
            let parsed = varint(&mut value).map_err(|_| CodecError::BadParameter(id))?;
            if value.has_remaining() {
                return Err(CodecError::BadParameter(id));
            }
            if let Some(slot) = params.slot(id) {
                *slot = parsed;
            }
        }
        Ok(params)
    }

    fn encode(&self, buf: &mut BytesMut) {
        let mut copy = *self;
        for id in PARAM_IDS {
            let value = copy.slot(id).map(|v| *v).unwrap_or(0);
            if value == 0 {
                continue;
            }
            put(buf, id);
            put(buf, vi(value).size() as u64);
            put(buf, value);
        }
    }
}

/// Stream ids as QUIC numbers them: bit 0 the initiator (1: server), bit 1
/// the direction (1: unidirectional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl StreamId {
    pub fn new(server: bool, uni: bool, index: u64) -> Self {
        Self(index << 2 | (uni as u64) << 1 | server as u64)
    }
    pub fn server_initiated(self) -> bool {
        self.0 & 1 == 1
    }
    pub fn uni(self) -> bool {
        self.0 & 2 == 2
    }
    /// Its number among the streams of its initiator and direction.
    pub fn index(self) -> u64 {
        self.0 >> 2
    }
}

/// One QMux frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Stream {
        id: StreamId,
        /// The offset, when the frame carries one (moq-native's qmux 0.0.7
        /// leaves it out; the transport is ordered, so data is in order).
        offset: Option<u64>,
        data: Bytes,
        fin: bool,
    },
    ResetStream {
        id: StreamId,
        code: u64,
        final_size: u64,
    },
    StopSending {
        id: StreamId,
        code: u64,
    },
    MaxData(u64),
    MaxStreamData {
        id: StreamId,
        max: u64,
    },
    MaxStreams {
        uni: bool,
        max: u64,
    },
    /// DATA_BLOCKED, STREAM_DATA_BLOCKED, STREAMS_BLOCKED: advice only.
    Blocked,
    /// CONNECTION_CLOSE (0x1c, `application: false`) or APPLICATION_CLOSE.
    Close {
        application: bool,
        code: u64,
        reason: Bytes,
    },
    TransportParameters(TransportParams),
}

fn vi(value: u64) -> VarInt {
    // Values we encode are lengths, ids and counts we produced, all far
    // below 2^62; saturate rather than panic if one ever were not.
    VarInt::from_u64(value)
        .unwrap_or(VarInt::from_u64((1 << 62) - 1).unwrap_or(VarInt::from_u32(0)))
}

fn put(buf: &mut BytesMut, value: u64) {
    vi(value).encode(buf);
}

fn varint(data: &mut Bytes) -> Result<u64, CodecError> {
    VarInt::decode(data)
        .map(VarInt::into_inner)
        .map_err(|_| CodecError::Short)
}

/// A length field, checked against what is left of the message.
fn length(data: &mut Bytes) -> Result<usize, CodecError> {
    let len = varint(data)?;
    match usize::try_from(len) {
        Ok(len) if len <= data.remaining() => Ok(len),
        _ => Err(CodecError::Short),
    }
}

impl Frame {
    /// One whole message as one frame.
    pub fn decode(mut data: Bytes) -> Result<Frame, CodecError> {
        if data.len() > MAX_FRAME_SIZE {
            return Err(CodecError::TooLarge(data.len()));
        }
        let kind = varint(&mut data)?;
        let frame = match kind {
            STREAM_MIN..=STREAM_MAX => {
                let id = StreamId(varint(&mut data)?);
                let offset = match kind & STREAM_OFF != 0 {
                    true => Some(varint(&mut data)?),
                    false => None,
                };
                let len = match kind & STREAM_LEN != 0 {
                    true => length(&mut data)?,
                    false => data.remaining(),
                };
                Frame::Stream {
                    id,
                    offset,
                    data: data.split_to(len),
                    fin: kind & STREAM_FIN != 0,
                }
            }
            RESET_STREAM => Frame::ResetStream {
                id: StreamId(varint(&mut data)?),
                code: varint(&mut data)?,
                final_size: varint(&mut data)?,
            },
            STOP_SENDING => Frame::StopSending {
                id: StreamId(varint(&mut data)?),
                code: varint(&mut data)?,
            },
            MAX_DATA => Frame::MaxData(varint(&mut data)?),
            MAX_STREAM_DATA => Frame::MaxStreamData {
                id: StreamId(varint(&mut data)?),
                max: varint(&mut data)?,
            },
            MAX_STREAMS_BIDI | MAX_STREAMS_UNI => Frame::MaxStreams {
                uni: kind == MAX_STREAMS_UNI,
                max: varint(&mut data)?,
            },
            DATA_BLOCKED | STREAMS_BLOCKED_BIDI | STREAMS_BLOCKED_UNI => {
                varint(&mut data)?;
                Frame::Blocked
            }
            STREAM_DATA_BLOCKED => {
                varint(&mut data)?;
                varint(&mut data)?;
                Frame::Blocked
            }
            CONNECTION_CLOSE => {
                let code = varint(&mut data)?;
                varint(&mut data)?;
                let len = length(&mut data)?;
                Frame::Close {
                    application: false,
                    code,
                    reason: data.split_to(len),
                }
            }
            APPLICATION_CLOSE => {
                let code = varint(&mut data)?;
                // See the module note: the rest is one of two layouts.
                let reason = std::mem::take(&mut data);
                Frame::Close {
                    application: true,
                    code,
                    reason,
                }
            }
            TRANSPORT_PARAMETERS => {
                let len = length(&mut data)?;
                Frame::TransportParameters(TransportParams::decode(data.split_to(len))?)
            }
            DATAGRAM | DATAGRAM_LEN => return Err(CodecError::Datagram),
            other => return Err(CodecError::UnknownType(other)),
        };
        match data.remaining() {
            0 => Ok(frame),
            n => Err(CodecError::Trailing(n)),
        }
    }

    /// The frame's bytes, one message.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            Frame::Stream {
                id,
                offset,
                data,
                fin,
            } => {
                buf.reserve(32 + data.len());
                let kind = STREAM_MIN
                    | STREAM_LEN
                    | offset.map_or(0, |_| STREAM_OFF)
                    | if *fin { STREAM_FIN } else { 0 };
                put(&mut buf, kind);
                put(&mut buf, id.0);
                if let Some(offset) = offset {
                    put(&mut buf, *offset);
                }
                put(&mut buf, data.len() as u64);
                buf.put_slice(data);
            }
            Frame::ResetStream {
                id,
                code,
                final_size,
            } => {
                put(&mut buf, RESET_STREAM);
                put(&mut buf, id.0);
                put(&mut buf, *code);
                put(&mut buf, *final_size);
            }
            Frame::StopSending { id, code } => {
                put(&mut buf, STOP_SENDING);
                put(&mut buf, id.0);
                put(&mut buf, *code);
            }
            Frame::MaxData(max) => {
                put(&mut buf, MAX_DATA);
                put(&mut buf, *max);
            }
            Frame::MaxStreamData { id, max } => {
                put(&mut buf, MAX_STREAM_DATA);
                put(&mut buf, id.0);
                put(&mut buf, *max);
            }
            Frame::MaxStreams { uni, max } => {
                put(
                    &mut buf,
                    if *uni {
                        MAX_STREAMS_UNI
                    } else {
                        MAX_STREAMS_BIDI
                    },
                );
                put(&mut buf, *max);
            }
            Frame::Blocked => put(&mut buf, DATA_BLOCKED),
            Frame::Close {
                application,
                code,
                reason,
            } => {
                let reason = &reason[..reason.len().min(MAX_FRAME_SIZE - 64)];
                if *application {
                    put(&mut buf, APPLICATION_CLOSE);
                    put(&mut buf, *code);
                } else {
                    put(&mut buf, CONNECTION_CLOSE);
                    put(&mut buf, *code);
                    put(&mut buf, 0);
                }
                put(&mut buf, reason.len() as u64);
                buf.put_slice(reason);
            }
            Frame::TransportParameters(params) => {
                let mut body = BytesMut::new();
                params.encode(&mut body);
                put(&mut buf, TRANSPORT_PARAMETERS);
                put(&mut buf, body.len() as u64);
                buf.put_slice(&body);
            }
        }
        buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        assert_eq!(Frame::decode(frame.encode()), Ok(frame));
    }

    #[test]
    fn frames_round_trip() {
        let id = StreamId::new(true, true, 5);
        round_trip(Frame::Stream {
            id,
            offset: Some(70_000),
            data: Bytes::from_static(b"hello"),
            fin: true,
        });
        round_trip(Frame::Stream {
            id,
            offset: None,
            data: Bytes::new(),
            fin: false,
        });
        round_trip(Frame::ResetStream {
            id,
            code: 0x52e4a40fa8,
            final_size: 9,
        });
        round_trip(Frame::StopSending { id, code: 3 });
        round_trip(Frame::MaxData(1 << 40));
        round_trip(Frame::MaxStreamData { id, max: 12 });
        round_trip(Frame::MaxStreams { uni: true, max: 7 });
        round_trip(Frame::MaxStreams { uni: false, max: 8 });
        round_trip(Frame::Close {
            application: false,
            code: 0x0a,
            reason: Bytes::from_static(b"bad"),
        });
        round_trip(Frame::TransportParameters(TransportParams {
            max_idle_timeout_ms: 0,
            initial_max_data: 1 << 20,
            initial_max_stream_data_bidi_local: 1,
            initial_max_stream_data_bidi_remote: 2,
            initial_max_stream_data_uni: 3,
            initial_max_streams_bidi: 100,
            initial_max_streams_uni: 0,
        }));
    }

    #[test]
    fn stream_ids_number_as_quic_does() {
        assert_eq!(StreamId::new(false, false, 0).0, 0);
        assert_eq!(StreamId::new(true, false, 1).0, 5);
        assert_eq!(StreamId::new(false, true, 2).0, 10);
        let id = StreamId(11);
        assert!(id.server_initiated() && id.uni() && id.index() == 2);
    }

    /// Golden bytes from moq-native's qmux 0.0.7 (STREAM without offset,
    /// APPLICATION_CLOSE with its frame-type field) and `@moq/qmux`
    /// (STREAM 0x0e with an offset, APPLICATION_CLOSE as RFC 9000 has it).
    #[test]
    fn both_clients_frames_decode() {
        let qmux_stream = Bytes::from_static(&[0x0a, 0x02, 0x03, b'a', b'b', b'c']);
        assert_eq!(
            Frame::decode(qmux_stream),
            Ok(Frame::Stream {
                id: StreamId(2),
                offset: None,
                data: Bytes::from_static(b"abc"),
                fin: false
            })
        );
        let js_stream = Bytes::from_static(&[0x0f, 0x00, 0x05, 0x01, b'x']);
        assert_eq!(
            Frame::decode(js_stream),
            Ok(Frame::Stream {
                id: StreamId(0),
                offset: Some(5),
                data: Bytes::from_static(b"x"),
                fin: true
            })
        );
        for close in [&[0x1d, 0x02, 0x00, 0x00][..], &[0x1d, 0x02, 0x00]] {
            assert!(matches!(
                Frame::decode(Bytes::copy_from_slice(close)),
                Ok(Frame::Close {
                    application: true,
                    code: 2,
                    ..
                })
            ));
        }
    }

    #[test]
    fn malformed_frames_are_refused_with_their_code() {
        let cases: [(&[u8], CodecError); 6] = [
            (&[], CodecError::Short),
            (&[0x0a, 0x02, 0x05, b'a'], CodecError::Short),
            (&[0x10, 0x01, 0x00], CodecError::Trailing(1)),
            (&[0x21], CodecError::UnknownType(0x21)),
            (&[0x30, 1, 2], CodecError::Datagram),
            (&[0x04, 0x01, 0x02], CodecError::Short),
        ];
        for (bytes, error) in cases {
            assert_eq!(Frame::decode(Bytes::copy_from_slice(bytes)), Err(error));
        }
        let big = Bytes::from(vec![0x0a; MAX_FRAME_SIZE + 1]);
        assert_eq!(
            Frame::decode(big),
            Err(CodecError::TooLarge(MAX_FRAME_SIZE + 1))
        );
        // A repeated parameter.
        let mut params = BytesMut::new();
        for _ in 0..2 {
            put(&mut params, 0x04);
            put(&mut params, 1);
            put(&mut params, 9);
        }
        let mut frame = BytesMut::new();
        put(&mut frame, TRANSPORT_PARAMETERS);
        put(&mut frame, params.len() as u64);
        frame.put_slice(&params);
        let error = Frame::decode(frame.freeze()).unwrap_err();
        assert_eq!(error, CodecError::BadParameter(0x04));
        assert_eq!(error.code(), TransportCode::TRANSPORT_PARAMETER_ERROR);
    }
}
