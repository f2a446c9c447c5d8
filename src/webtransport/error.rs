//! WebTransport's errors and error codes: why an operation failed, and the
//! mapping of application codes into HTTP/3's code space.

use qumo_shards::{ConnectionError, ReadStreamError, VarInt, WriteError};

/// HTTP/3 error codes (RFC 9114, section 8.1) used when closing a connection
/// or refusing a stream that is not part of the session.
pub mod h3 {
    /// No error: the connection closes because it has no further use.
    pub const NO_ERROR: u32 = 0x100;
    /// A stream type the endpoint does not accept here.
    pub const STREAM_CREATION_ERROR: u32 = 0x103;
    /// A frame that is not allowed where it arrived.
    pub const FRAME_UNEXPECTED: u32 = 0x105;
    /// The SETTINGS frame was malformed.
    pub const SETTINGS_ERROR: u32 = 0x109;
    /// The control stream did not start with SETTINGS.
    pub const MISSING_SETTINGS: u32 = 0x10a;
    /// A request the server did not process.
    pub const REQUEST_REJECTED: u32 = 0x10b;
    /// The request stream ended before the request was complete.
    pub const REQUEST_INCOMPLETE: u32 = 0x10d;
    /// A malformed request.
    pub const MESSAGE_ERROR: u32 = 0x10e;
    /// WebTransport: a stream for a session that does not exist here.
    pub const WT_BUFFERED_STREAM_REJECTED: u32 = 0x3994_bd84;
}

/// Why a WebTransport handshake, session or stream operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WtError {
    /// The QUIC connection ended.
    #[error("connection lost: {0}")]
    Connection(ConnectionError),
    /// The peer closed the session: a CLOSE_WEBTRANSPORT_SESSION capsule, the
    /// end of the CONNECT stream (code 0), or a connection close carrying a
    /// WebTransport error code.
    #[error("session closed by the peer with code {code}: {reason:?}")]
    Closed { code: u32, reason: String },
    /// [`WtSession::close`] was called.
    #[error("session closed locally")]
    LocallyClosed,
    /// Writing a stream prefix or an HTTP/3 message failed.
    #[error("write failed: {0}")]
    Write(WriteError),
    /// Reading a stream prefix or an HTTP/3 message failed.
    #[error("read failed: {0}")]
    Read(ReadStreamError),
    /// A stream ended before its prefix, frame or request was complete.
    #[error("stream ended early")]
    UnexpectedEnd,
    /// A frame or header block is larger than this server accepts.
    #[error("{0} too large")]
    TooLarge(&'static str),
    /// The peer's control stream or SETTINGS frame is malformed.
    #[error("bad HTTP/3 SETTINGS: {0}")]
    Settings(String),
    /// The peer's SETTINGS do not enable WebTransport.
    #[error("the peer's SETTINGS do not enable WebTransport")]
    Unsupported,
    /// The CONNECT request could not be decoded or is not a WebTransport
    /// CONNECT (the detail comes from `web-transport-proto`).
    #[error("bad CONNECT request: {0}")]
    Request(String),
    /// The session was refused with this HTTP status (the peer was told).
    #[error("session refused with HTTP status {status}: {reason}")]
    Refused { status: u16, reason: String },
}

impl From<ConnectionError> for WtError {
    /// A connection closed with a WebTransport application code is a session
    /// close; anything else is a lost connection.
    fn from(e: ConnectionError) -> Self {
        if let ConnectionError::ApplicationClosed(close) = &e {
            if let Some(code) = app_code(close.error_code) {
                return WtError::Closed {
                    code,
                    reason: String::from_utf8_lossy(&close.reason).into_owned(),
                };
            }
        }
        WtError::Connection(e)
    }
}

impl From<WriteError> for WtError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::ConnectionLost(e) => e.into(),
            other => WtError::Write(other),
        }
    }
}

impl From<ReadStreamError> for WtError {
    fn from(e: ReadStreamError) -> Self {
        match e {
            ReadStreamError::ConnectionLost(e) => e.into(),
            other => WtError::Read(other),
        }
    }
}

/// A WebTransport application error code (the `u32` an application passes
/// to a stream reset, a STOP_SENDING or a session close) in the HTTP/3 error
/// code space where QUIC carries it: `0x52e4a40fa8db + code + code / 0x1e`,
/// skipping the reserved GREASE code points.
pub fn error_code(app_code: u32) -> VarInt {
    let code = web_transport_proto::error_to_http3(app_code);
    // The largest result is below 2^47, far inside the varint range.
    VarInt::from_u64(code).unwrap_or(VarInt::MAX)
}

/// The inverse of [`error_code`]: the WebTransport application code carried
/// by an HTTP/3 error code, or `None` when it is outside the WebTransport
/// range (a plain HTTP/3 error) or a reserved GREASE code point.
pub fn app_code(http3_code: VarInt) -> Option<u32> {
    let code = http3_code.into_inner();
    let app = web_transport_proto::error_from_http3(code)?;
    (web_transport_proto::error_to_http3(app) == code).then_some(app)
}

pub(super) fn h3_code(code: u32) -> VarInt {
    VarInt::from_u32(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_codes_map_into_the_http3_range_and_back() {
        assert_eq!(error_code(0).into_inner(), 0x52e4a40fa8db);
        assert_eq!(error_code(1).into_inner(), 0x52e4a40fa8dc);
        // Every 0x1f-th code point is GREASE and skipped.
        assert_eq!(error_code(0x1e).into_inner(), 0x52e4a40fa8db + 0x1e + 1);
        assert_eq!(error_code(u32::MAX).into_inner(), 0x52e5ac983162);
        for code in [0, 1, 29, 30, 31, 1000, 0xffff_fffe, u32::MAX] {
            assert_eq!(app_code(error_code(code)), Some(code), "code {code}");
        }
    }

    #[test]
    fn http3_codes_outside_the_range_or_grease_have_no_application_code() {
        assert_eq!(app_code(VarInt::from_u32(0x100)), None);
        assert_eq!(
            app_code(VarInt::from_u64(0x52e4a40fa8db - 1).unwrap()),
            None
        );
        assert_eq!(app_code(VarInt::from_u64(0x52e5ac983163).unwrap()), None);
        // 0x52e4a40fa8db + 0x1e is a GREASE code point between codes 29 and 30.
        assert_eq!(
            app_code(VarInt::from_u64(0x52e4a40fa8db + 0x1e).unwrap()),
            None
        );
    }

    #[test]
    fn a_connection_closed_with_a_webtransport_code_is_a_session_close() {
        let close = qumo_shards::quinn_proto::ApplicationClose {
            error_code: error_code(7),
            reason: bytes::Bytes::from_static(b"bye"),
        };
        assert_eq!(
            WtError::from(ConnectionError::ApplicationClosed(close)),
            WtError::Closed {
                code: 7,
                reason: "bye".into()
            }
        );
        assert!(matches!(
            WtError::from(ConnectionError::TimedOut),
            WtError::Connection(ConnectionError::TimedOut)
        ));
    }
}
