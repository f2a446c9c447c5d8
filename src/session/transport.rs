//! The streams a session runs on: raw QUIC, or WebTransport over HTTP/3
//! where every stream carries a session prefix. The session code sees one
//! interface and never the difference.

use bytes::Bytes;
use qumo_shards::{Connection, ConnectionError, RecvStream, SendStream, VarInt};

use crate::lite::{SessionCode, StreamCode};
use crate::webtransport::{self, WtError, WtSession};

/// Why the transport failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("connection: {0}")]
    Connection(#[from] ConnectionError),
    #[error("webtransport: {0}")]
    WebTransport(#[from] WtError),
}

#[derive(Clone)]
pub enum Transport {
    Quic(Connection),
    Web(WtSession),
}

impl Transport {
    pub fn connection(&self) -> &Connection {
        match self {
            Transport::Quic(conn) => conn,
            Transport::Web(wt) => wt.connection(),
        }
    }

    pub async fn open_uni(&self) -> Result<SendStream, TransportError> {
        match self {
            Transport::Quic(conn) => Ok(conn.open_uni().await?),
            Transport::Web(wt) => Ok(wt.open_uni().await?),
        }
    }

    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), TransportError> {
        match self {
            Transport::Quic(conn) => Ok(conn.open_bi().await?),
            Transport::Web(wt) => Ok(wt.open_bi().await?),
        }
    }

    /// The next peer stream and any bytes already read past its prefix.
    pub async fn accept_uni(&self) -> Result<(RecvStream, Bytes), TransportError> {
        match self {
            Transport::Quic(conn) => Ok((conn.accept_uni().await?, Bytes::new())),
            Transport::Web(wt) => Ok(wt.accept_uni().await?),
        }
    }

    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream, Bytes), TransportError> {
        match self {
            Transport::Quic(conn) => {
                let (send, recv) = conn.accept_bi().await?;
                Ok((send, recv, Bytes::new()))
            }
            Transport::Web(wt) => Ok(wt.accept_bi().await?),
        }
    }

    /// A moq-lite stream error code as it goes on the wire.
    ///
    /// Both transports use WebTransport's HTTP/3 code space: moq-native
    /// clients (moq-clock, the `moq` CLI, moq-relay) run raw QUIC through
    /// web-transport-quinn's `Session::raw`, which decodes every stream reset
    /// and STOP_SENDING through it and fails the whole session on a code
    /// outside it ("invalid RESET_STREAM"). Session close codes stay raw on
    /// QUIC: web-transport-quinn passes those through.
    pub fn stream_code(&self, code: StreamCode) -> VarInt {
        webtransport::error_code(code.0)
    }

    /// A received stream error code back in moq-lite terms. A raw QUIC peer
    /// that sends a bare code outside the WebTransport range is taken at its
    /// word rather than refused.
    pub fn moq_code(&self, code: VarInt) -> Option<StreamCode> {
        let code = match self {
            Transport::Quic(_) => {
                webtransport::app_code(code).or_else(|| u32::try_from(code.into_inner()).ok())
            }
            Transport::Web(_) => webtransport::app_code(code),
        };
        code.map(StreamCode)
    }

    /// Close the session with a moq-lite session code.
    pub fn close(&self, code: SessionCode, reason: &str) {
        match self {
            Transport::Quic(conn) => conn.close(VarInt::from_u32(code.0), reason.as_bytes()),
            Transport::Web(wt) => wt.close(code.0, reason),
        }
    }

    pub async fn closed(&self) {
        match self {
            Transport::Quic(conn) => {
                conn.closed().await;
            }
            Transport::Web(wt) => {
                wt.closed().await;
            }
        }
    }
}
