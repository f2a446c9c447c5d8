//! Sans-IO pieces: what goes on the wire and how buffered bytes are parsed.
//! Every parser takes the bytes buffered so far and answers `Ok(None)` when
//! it needs more, or the value and how many bytes it used; none of them
//! panics on any input.

use bytes::{Buf, BytesMut};
use web_transport_proto::http::StatusCode;
use web_transport_proto::{
    Capsule, CapsuleError, ConnectError, ConnectRequest, ConnectResponse, Frame, Setting, Settings,
    VarInt,
};

use super::{h3, WtError};

/// Stream type of an HTTP/3 control stream.
pub(crate) const STREAM_CONTROL: u64 = 0x00;
/// Stream types of the QPACK encoder and decoder streams.
pub(crate) const STREAM_QPACK_ENCODER: u64 = 0x02;
pub(crate) const STREAM_QPACK_DECODER: u64 = 0x03;
/// First byte(s) of a WebTransport unidirectional stream, then the session id.
pub(crate) const STREAM_WEBTRANSPORT: u64 = 0x54;
/// First byte(s) of a WebTransport bidirectional stream, then the session id.
pub(crate) const FRAME_WEBTRANSPORT: u64 = 0x41;

/// Largest frame payload accepted anywhere (web-transport-proto's limit).
pub(crate) const MAX_FRAME: usize = 64 * 1024;
/// Longest reason in a CLOSE_WEBTRANSPORT_SESSION capsule
/// (draft-ietf-webtrans-http3, section 5).
const MAX_CLOSE_REASON: usize = 1024;

/// A QUIC varint at the start of `buf`.
pub(crate) fn varint(buf: &[u8]) -> Result<Option<(u64, usize)>, WtError> {
    let mut rest = buf;
    Ok(VarInt::decode(&mut rest)
        .ok()
        .map(|v| (v.into_inner(), buf.len() - rest.len())))
}

/// The stream prefix of a WebTransport stream: `0x54` (uni) or `0x41` (bidi)
/// followed by the session id.
pub(crate) fn stream_header(kind: u64, session_id: u64) -> bytes::Bytes {
    let mut buf = Vec::with_capacity(16);
    for value in [kind, session_id] {
        // Stream ids and the two type codes are all below 2^62.
        if let Ok(v) = VarInt::from_u64(value) {
            v.encode(&mut buf);
        }
    }
    buf.into()
}

/// The server's control stream: stream type, then SETTINGS enabling
/// WebTransport exactly as web-transport-quinn sends them:
/// ENABLE_CONNECT_PROTOCOL, H3_DATAGRAM (0x33) and its pre-RFC code 0xffd277
/// (Chromium), WT_MAX_SESSIONS (0xc671706a) = 1, and the pre-draft-07 pair
/// ENABLE_WEBTRANSPORT (0x2b603742) = 1 and WT_MAX_SESSIONS (0x2b603743) = 1.
pub(crate) fn server_settings() -> Vec<u8> {
    let mut settings = Settings::default();
    settings.enable_webtransport(1);
    let mut buf = Vec::new();
    settings.encode(&mut buf);
    buf
}

/// The first frame of the peer's control stream (after the stream type),
/// which must be SETTINGS; GREASE frames before it are skipped.
pub(crate) fn settings_frame(buf: &[u8]) -> Result<Option<(Settings, usize)>, WtError> {
    let mut rest = buf;
    let Ok((frame, payload)) = Frame::read(&mut rest) else {
        return Ok(None);
    };
    if frame != Frame::SETTINGS {
        return Err(WtError::Settings(format!(
            "control stream starts with frame type {:#x}, not SETTINGS",
            frame.0.into_inner()
        )));
    }
    let settings = settings_payload(payload)?;
    Ok(Some((settings, buf.len() - rest.len())))
}

fn settings_payload(mut payload: impl Buf) -> Result<Settings, WtError> {
    let mut settings = Settings::default();
    while payload.has_remaining() {
        let pair = Setting::decode(&mut payload)
            .and_then(|id| VarInt::decode(&mut payload).map(|value| (id, value)));
        let Ok((id, value)) = pair else {
            return Err(WtError::Settings("truncated setting".into()));
        };
        if !id.is_grease() && settings.insert(id, value).is_some() {
            // RFC 9114, section 7.2.4: the same identifier twice is an error.
            return Err(WtError::Settings(format!("setting {id:?} repeated")));
        }
    }
    Ok(settings)
}

/// The HTTP/3 error code to close the connection with when the peer's
/// SETTINGS are unusable.
pub(crate) fn settings_error_code(error: &WtError) -> u32 {
    match error {
        WtError::Settings(m) if m.contains("not SETTINGS") => h3::MISSING_SETTINGS,
        _ => h3::SETTINGS_ERROR,
    }
}

/// The CONNECT request: a HEADERS frame, GREASE frames before it skipped.
pub(crate) fn connect_request(buf: &[u8]) -> Result<Option<(ConnectRequest, usize)>, ConnectError> {
    let mut rest = buf;
    match ConnectRequest::decode(&mut rest) {
        Ok(request) => Ok(Some((request, buf.len() - rest.len()))),
        Err(ConnectError::UnexpectedEnd) => Ok(None),
        Err(e) => Err(e),
    }
}

/// What to do about a CONNECT request that cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Answer with this HTTP status, then close.
    Status(u16),
    /// No answer is possible: close the connection with this HTTP/3 code.
    Close(u32),
}

/// How to reject a request that failed to decode.
pub(crate) fn rejection(error: &ConnectError) -> Rejection {
    match error {
        ConnectError::UnexpectedFrame(_) | ConnectError::FrameTooLarge => {
            Rejection::Close(h3::FRAME_UNEXPECTED)
        }
        ConnectError::UnexpectedEnd => Rejection::Close(h3::REQUEST_INCOMPLETE),
        ConnectError::WrongMethod(_) => Rejection::Status(405),
        ConnectError::FieldSectionTooLarge => Rejection::Status(431),
        // A bad pseudo-header, :protocol other than webtransport, a QPACK or
        // structured-field error: the request is malformed.
        _ => Rejection::Status(400),
    }
}

/// The HEADERS frame answering the CONNECT request, with `wt-protocol` when
/// a protocol was chosen.
pub(crate) fn response(status: u16, protocol: Option<&str>) -> Result<Vec<u8>, WtError> {
    let status = StatusCode::from_u16(status)
        .map_err(|_| WtError::Request(format!("invalid status {status}")))?;
    let mut response = ConnectResponse::new(status);
    if let Some(protocol) = protocol {
        response = response.with_protocol(protocol);
    }
    let mut buf = Vec::new();
    response
        .encode(&mut buf)
        .map_err(|e| WtError::Request(format!("cannot encode the response: {e}")))?;
    Ok(buf)
}

/// A CLOSE_WEBTRANSPORT_SESSION capsule (type 0x2843) inside an HTTP/3 DATA
/// frame, as it travels on the CONNECT stream. The reason is cut to 1024
/// bytes at a character boundary.
pub(crate) fn close_capsule(code: u32, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let capsule = Capsule::CloseWebTransportSession {
        code,
        reason: reason[..end].to_string(),
    };
    let mut body = Vec::new();
    capsule.encode(&mut body);
    let mut frame = Vec::with_capacity(body.len() + 4);
    Frame::DATA.encode(&mut frame);
    // At most 4 + 1024 + 2 bytes: always a valid varint.
    VarInt::from_u32(body.len() as u32).encode(&mut frame);
    frame.extend_from_slice(&body);
    frame
}

/// Reads capsules out of the DATA frames of the CONNECT stream (RFC 9297,
/// section 3.2), like web-transport-proto's `Http3CapsuleReader` but fed
/// with chunks: a capsule may span DATA frames and a frame may hold several
/// capsules; other frames are skipped; no frame or capsule over 64 KiB.
#[derive(Debug, Default)]
pub(crate) struct CapsuleParser {
    /// Bytes of the stream not yet framed.
    raw: BytesMut,
    /// What is left of the current frame: DATA payload to keep, or another
    /// frame's payload to skip.
    data_left: usize,
    skip_left: usize,
    /// DATA payload not yet decoded into capsules.
    capsules: BytesMut,
}

impl CapsuleParser {
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.raw.extend_from_slice(chunk);
    }

    /// The next complete capsule, or `None` until more bytes arrive.
    pub(crate) fn next(&mut self) -> Result<Option<Capsule>, WtError> {
        loop {
            if !self.capsules.is_empty() {
                let mut rest = &self.capsules[..];
                match Capsule::decode(&mut rest) {
                    Ok(capsule) => {
                        let used = self.capsules.len() - rest.len();
                        self.capsules.advance(used);
                        return Ok(Some(capsule));
                    }
                    Err(CapsuleError::UnexpectedEnd | CapsuleError::VarInt(_)) => {}
                    Err(CapsuleError::MessageTooLong) => return Err(WtError::TooLarge("capsule")),
                    Err(e) => return Err(WtError::Request(format!("bad capsule: {e}"))),
                }
            }
            if !self.advance()? {
                return Ok(None);
            }
        }
    }

    /// Move framed bytes along; false when nothing could be done.
    fn advance(&mut self) -> Result<bool, WtError> {
        if self.raw.is_empty() {
            return Ok(false);
        }
        if self.data_left > 0 {
            let n = self.data_left.min(self.raw.len());
            self.capsules.extend_from_slice(&self.raw.split_to(n));
            self.data_left -= n;
            return Ok(true);
        }
        if self.skip_left > 0 {
            let n = self.skip_left.min(self.raw.len());
            self.raw.advance(n);
            self.skip_left -= n;
            return Ok(true);
        }
        let mut rest = &self.raw[..];
        let header = VarInt::decode(&mut rest)
            .and_then(|typ| VarInt::decode(&mut rest).map(|len| (typ, len.into_inner())));
        let Ok((typ, len)) = header else {
            return Ok(false);
        };
        let len = usize::try_from(len)
            .ok()
            .filter(|&len| len <= MAX_FRAME)
            .ok_or(WtError::TooLarge("frame on the CONNECT stream"))?;
        let used = self.raw.len() - rest.len();
        self.raw.advance(used);
        if Frame(typ) == Frame::DATA {
            self.data_left = len;
        } else {
            self.skip_left = len;
        }
        Ok(true)
    }

    /// Whether the stream may end here: no partial frame or capsule.
    pub(crate) fn at_boundary(&self) -> bool {
        self.raw.is_empty()
            && self.capsules.is_empty()
            && self.data_left == 0
            && self.skip_left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_payload(pairs: &[(u64, u64)]) -> Vec<u8> {
        let mut payload = Vec::new();
        for &(id, value) in pairs {
            VarInt::from_u64(id).unwrap().encode(&mut payload);
            VarInt::from_u64(value).unwrap().encode(&mut payload);
        }
        let mut frame = Vec::new();
        Frame::SETTINGS.encode(&mut frame);
        VarInt::from_u32(payload.len() as u32).encode(&mut frame);
        frame.extend_from_slice(&payload);
        frame
    }

    #[test]
    fn server_settings_enable_webtransport_the_way_chromium_and_quinn_expect() {
        let wire = server_settings();
        assert_eq!(wire[0], 0x00, "control stream type");
        let (settings, used) = settings_frame(&wire[1..]).unwrap().unwrap();
        assert_eq!(used, wire.len() - 1);
        assert_eq!(settings.supports_webtransport(), 1);
        for (id, value) in [
            (0x08, 1),       // ENABLE_CONNECT_PROTOCOL
            (0x33, 1),       // H3_DATAGRAM
            (0xffd277, 1),   // H3_DATAGRAM, pre-RFC code
            (0xc671706a, 1), // WT_MAX_SESSIONS
            (0x2b603742, 1), // ENABLE_WEBTRANSPORT (deprecated)
            (0x2b603743, 1), // WT_MAX_SESSIONS (deprecated)
        ] {
            let id = Setting(VarInt::from_u64(id).unwrap());
            assert_eq!(
                settings.get(&id).map(|v| v.into_inner()),
                Some(value),
                "{id:?}"
            );
        }
    }

    #[test]
    fn settings_need_the_whole_frame_and_leave_what_follows() {
        let mut wire = settings_payload(&[(0x33, 1), (0x2b603742, 1)]);
        for cut in 0..wire.len() {
            assert!(settings_frame(&wire[..cut]).unwrap().is_none(), "cut {cut}");
        }
        let len = wire.len();
        wire.extend_from_slice(b"\x07\x00");
        let (settings, used) = settings_frame(&wire).unwrap().unwrap();
        assert_eq!(used, len);
        assert_eq!(settings.supports_webtransport(), 1);
    }

    #[test]
    fn settings_skip_grease_frames_and_settings() {
        let mut wire = vec![0x21, 0x02, 0xaa, 0xbb]; // a GREASE frame
        wire.extend(settings_payload(&[(0x21, 5), (0x33, 1), (0xc671706a, 4)]));
        let (settings, used) = settings_frame(&wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(settings.len(), 2);
        assert_eq!(settings.supports_webtransport(), 4);
    }

    #[test]
    fn a_control_stream_without_settings_first_is_refused() {
        let wire = [0x07, 0x01, 0x00]; // GOAWAY
        let error = settings_frame(&wire).unwrap_err();
        assert_eq!(settings_error_code(&error), h3::MISSING_SETTINGS);
    }

    #[test]
    fn malformed_or_repeated_settings_are_refused() {
        let mut truncated = Vec::new();
        Frame::SETTINGS.encode(&mut truncated);
        truncated.extend_from_slice(&[0x01, 0x33]); // an id without a value
        let error = settings_frame(&truncated).unwrap_err();
        assert_eq!(settings_error_code(&error), h3::SETTINGS_ERROR);
        let repeated = settings_payload(&[(0x33, 1), (0x33, 1)]);
        assert!(settings_frame(&repeated).is_err());
    }

    #[test]
    fn stream_headers_are_the_type_then_the_session_id() {
        assert_eq!(
            &stream_header(STREAM_WEBTRANSPORT, 0)[..],
            &[0x40, 0x54, 0x00]
        );
        assert_eq!(
            &stream_header(FRAME_WEBTRANSPORT, 4)[..],
            &[0x40, 0x41, 0x04]
        );
        assert_eq!(varint(&[0x40]).unwrap(), None);
        assert_eq!(varint(&[0x40, 0x54, 0x00]).unwrap(), Some((0x54, 2)));
    }

    fn request(url: &str, protocols: &[&str]) -> Vec<u8> {
        let url = url::Url::parse(url).unwrap();
        let request =
            ConnectRequest::new(url).with_protocols(protocols.iter().map(|p| p.to_string()));
        let mut buf = Vec::new();
        request.encode(&mut buf).unwrap();
        buf
    }

    #[test]
    fn a_connect_request_is_read_once_complete_and_keeps_what_follows() {
        let mut wire = request(
            "https://localhost:4433/anon?jwt=x",
            &["moq-lite-05", "moq-lite-04"],
        );
        for cut in 0..wire.len() {
            assert!(
                connect_request(&wire[..cut]).unwrap().is_none(),
                "cut {cut}"
            );
        }
        let len = wire.len();
        wire.extend_from_slice(&[0x00, 0x00]);
        let (request, used) = connect_request(&wire).unwrap().unwrap();
        assert_eq!(used, len);
        assert_eq!(request.url.path(), "/anon");
        assert_eq!(request.url.query(), Some("jwt=x"));
        assert_eq!(request.protocols, ["moq-lite-05", "moq-lite-04"]);
    }

    #[test]
    fn requests_that_are_not_webtransport_connects_get_an_http_status() {
        // A HEADERS frame with QPACK literals (RFC 9204, 4.5.6) for a GET.
        let mut headers = Vec::new();
        let mut fields = vec![0x00, 0x00];
        for (name, value) in [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "a"),
            (":path", "/"),
        ] {
            // 001NH + 3-bit prefixed name length (7 = prefix full, then 7-bit groups).
            let n = name.len();
            if n < 7 {
                fields.push(0x20 | n as u8);
            } else {
                fields.extend_from_slice(&[0x27, (n - 7) as u8]);
            }
            fields.extend_from_slice(name.as_bytes());
            fields.push(value.len() as u8);
            fields.extend_from_slice(value.as_bytes());
        }
        Frame::HEADERS.encode(&mut headers);
        VarInt::from_u32(fields.len() as u32).encode(&mut headers);
        headers.extend_from_slice(&fields);
        let error = connect_request(&headers).unwrap_err();
        assert_eq!(rejection(&error), Rejection::Status(405), "{error:?}");

        let mut data = Vec::new();
        Frame::DATA.encode(&mut data);
        data.push(0);
        let error = connect_request(&data).unwrap_err();
        assert_eq!(rejection(&error), Rejection::Close(h3::FRAME_UNEXPECTED));

        let garbage = [0x01, 0x03, 0xff, 0xff, 0xff];
        let error = connect_request(&garbage).unwrap_err();
        assert_eq!(rejection(&error), Rejection::Status(400), "{error:?}");
    }

    #[test]
    fn the_response_carries_the_chosen_protocol_as_a_structured_string() {
        let wire = response(200, Some("moq-lite-05")).unwrap();
        let decoded = ConnectResponse::decode(&mut &wire[..]).unwrap();
        assert_eq!(decoded.status, StatusCode::OK);
        assert_eq!(decoded.protocol.as_deref(), Some("moq-lite-05"));
        let text = String::from_utf8_lossy(&wire);
        assert!(text.contains("wt-protocol"), "{text:?}");
        assert!(text.contains("\"moq-lite-05\""), "{text:?}");
        assert!(response(200, Some("bad\u{7f}")).is_err());
    }

    #[test]
    fn a_close_capsule_in_a_data_frame_parses_back_from_any_split() {
        let wire = close_capsule(42, "bye");
        assert_eq!(&wire[..2], &[0x00, 0x0a], "DATA frame of 10 bytes");
        for cut in 0..=wire.len() {
            let mut parser = CapsuleParser::default();
            parser.push(&wire[..cut]);
            let early = parser.next().unwrap();
            parser.push(&wire[cut..]);
            let capsule = match early {
                Some(c) => c,
                None => parser.next().unwrap().expect("complete"),
            };
            assert_eq!(
                capsule,
                Capsule::CloseWebTransportSession {
                    code: 42,
                    reason: "bye".into()
                }
            );
            assert!(parser.at_boundary());
        }
    }

    #[test]
    fn close_reasons_are_cut_to_1024_bytes_on_a_character_boundary() {
        let reason = "é".repeat(600); // 1200 bytes
        let mut parser = CapsuleParser::default();
        parser.push(&close_capsule(1, &reason));
        match parser.next().unwrap() {
            Some(Capsule::CloseWebTransportSession { reason, .. }) => {
                assert_eq!(reason.len(), 1024);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn capsules_spanning_frames_and_other_frames_are_handled() {
        let mut body = Vec::new();
        Capsule::Grease { num: 3 }.encode(&mut body);
        Capsule::CloseWebTransportSession {
            code: 7,
            reason: "split".into(),
        }
        .encode(&mut body);
        let mut wire = vec![0x01, 0x02, 0xaa, 0xbb]; // a HEADERS frame, skipped
        let (a, b) = body.split_at(5);
        for part in [a, b] {
            wire.push(0x00);
            wire.push(part.len() as u8);
            wire.extend_from_slice(part);
        }
        let mut parser = CapsuleParser::default();
        parser.push(&wire);
        assert_eq!(parser.next().unwrap(), Some(Capsule::Grease { num: 3 }));
        assert_eq!(
            parser.next().unwrap(),
            Some(Capsule::CloseWebTransportSession {
                code: 7,
                reason: "split".into()
            })
        );
        assert_eq!(parser.next().unwrap(), None);
        assert!(parser.at_boundary());
    }

    #[test]
    fn oversized_frames_and_capsules_are_errors_and_partial_ones_are_not_boundaries() {
        let mut parser = CapsuleParser::default();
        parser.push(&[0x00, 0x80, 0x01, 0x00, 0x01]); // DATA of 65537 bytes
        assert_eq!(
            parser.next(),
            Err(WtError::TooLarge("frame on the CONNECT stream"))
        );

        let mut parser = CapsuleParser::default();
        parser.push(&[0x00, 0x06, 0x68, 0x43, 0x80, 0x01, 0x00, 0x01]);
        assert_eq!(parser.next(), Err(WtError::TooLarge("capsule")));

        let mut parser = CapsuleParser::default();
        parser.push(&[0x00, 0x05, 0x68, 0x43]);
        assert_eq!(parser.next(), Ok(None));
        assert!(!parser.at_boundary());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parsers() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let len = (seed % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = settings_frame(&bytes);
            let _ = connect_request(&bytes);
            let _ = varint(&bytes);
            let mut parser = CapsuleParser::default();
            parser.push(&bytes);
            while let Ok(Some(_)) = parser.next() {}
        }
    }
}
