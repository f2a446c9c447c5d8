//! What a bench client's session runs on: raw QUIC (the shards runtime's
//! connection) or QMux over a WebSocket (the relay's own QMux and WebSocket
//! driver, client end). An enum rather than generics: publisher and
//! subscriber code stays one copy, and a match per call costs nothing next
//! to the work behind it.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use qumo::lite::SessionCode;
use qumo::metrics::RelayStats;
use qumo::qmux::{QmuxLimits, QmuxRecv, QmuxSend, QmuxTransport};
use qumo::session::transport::{RecvStream as _, SendStream as _, Transport, TransportError};
use qumo::websocket::client;
use qumo_shards::{Connection, ConnectionError, ReadStreamError, ShardContext, VarInt, WriteError};

use crate::plan::Plan;

/// Which transport the bench dials (`--transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TransportKind {
    /// moq-lite on raw QUIC (`moql://`).
    #[default]
    Quic,
    /// moq-lite on QMux draft-00 over a WebSocket (`ws://`, the relay's
    /// TCP listener on the same port).
    Ws,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Quic => "quic",
            TransportKind::Ws => "ws",
        })
    }
}

/// One client connection; clones share it.
#[derive(Clone)]
pub enum BenchConn {
    Quic(Connection),
    Ws(QmuxTransport),
}

pub enum BenchSend {
    Quic(qumo_shards::SendStream),
    Ws(QmuxSend),
}

pub enum BenchRecv {
    Quic(qumo_shards::RecvStream),
    Ws(QmuxRecv),
}

impl BenchConn {
    /// Dial the relay at `addr` (session root `path`) over the plan's
    /// transport.
    pub async fn connect(
        plan: &Plan,
        ctx: &ShardContext<()>,
        addr: SocketAddr,
        path: &str,
    ) -> Result<Self, String> {
        match plan.cfg.transport {
            TransportKind::Quic => ctx
                .connect(addr, &plan.cfg.server_name, plan.tls.clone())
                .await
                .map(BenchConn::Quic)
                .map_err(|e| e.to_string()),
            TransportKind::Ws => client::connect(
                addr,
                &plan.cfg.server_name,
                path,
                plan.cfg.version,
                QmuxLimits::default(),
                // The relay's WebSocket errors, counted nowhere: a broken
                // server shows as closed subscribers.
                Arc::new(RelayStats::default()),
            )
            .await
            .map(BenchConn::Ws)
            .map_err(|e| e.to_string()),
        }
    }

    /// Dial the relay at `addr` over raw QUIC with `tls` (its ALPN picks
    /// the protocol: the IETF subscribers' `moq-00`).
    pub async fn connect_tls(
        plan: &Plan,
        ctx: &ShardContext<()>,
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self, String> {
        ctx.connect(addr, &plan.cfg.server_name, tls)
            .await
            .map(BenchConn::Quic)
            .map_err(|e| e.to_string())
    }

    pub fn close_reason(&self) -> Option<ConnectionError> {
        match self {
            BenchConn::Quic(c) => c.close_reason(),
            BenchConn::Ws(t) => t.close_reason(),
        }
    }

    /// Wait for the end, and say why.
    pub async fn closed(&self) -> ConnectionError {
        match self {
            BenchConn::Quic(c) => c.closed().await,
            BenchConn::Ws(t) => {
                Transport::closed(t).await;
                t.close_reason().unwrap_or(ConnectionError::LocallyClosed)
            }
        }
    }

    pub fn close(&self, code: u32, reason: &str) {
        match self {
            BenchConn::Quic(c) => Transport::close(c, SessionCode(code), reason),
            BenchConn::Ws(t) => Transport::close(t, SessionCode(code), reason),
        }
    }

    pub async fn open_uni(&self) -> Result<BenchSend, TransportError> {
        Ok(match self {
            BenchConn::Quic(c) => BenchSend::Quic(Transport::open_uni(c).await?),
            BenchConn::Ws(t) => BenchSend::Ws(Transport::open_uni(t).await?),
        })
    }

    pub async fn open_bi(&self) -> Result<(BenchSend, BenchRecv), TransportError> {
        Ok(match self {
            BenchConn::Quic(c) => {
                let (s, r) = Transport::open_bi(c).await?;
                (BenchSend::Quic(s), BenchRecv::Quic(r))
            }
            BenchConn::Ws(t) => {
                let (s, r) = Transport::open_bi(t).await?;
                (BenchSend::Ws(s), BenchRecv::Ws(r))
            }
        })
    }

    /// The next relay-opened unidirectional stream. Neither transport
    /// reads ahead of a raw stream, so nothing comes with it.
    pub async fn accept_uni(&self) -> Result<BenchRecv, TransportError> {
        Ok(match self {
            BenchConn::Quic(c) => BenchRecv::Quic(Transport::accept_uni(c).await?.0),
            BenchConn::Ws(t) => BenchRecv::Ws(Transport::accept_uni(t).await?.0),
        })
    }

    pub async fn accept_bi(&self) -> Result<(BenchSend, BenchRecv), TransportError> {
        Ok(match self {
            BenchConn::Quic(c) => {
                let (s, r, _) = Transport::accept_bi(c).await?;
                (BenchSend::Quic(s), BenchRecv::Quic(r))
            }
            BenchConn::Ws(t) => {
                let (s, r, _) = Transport::accept_bi(t).await?;
                (BenchSend::Ws(s), BenchRecv::Ws(r))
            }
        })
    }
}

/// A moq-lite stream code as each transport carries it: WebTransport's
/// HTTP/3 code space on raw QUIC (as moq-native does), bare on QMux (as
/// the relay and `@moq/qmux` expect).
fn quic_code(code: u32) -> VarInt {
    qumo::webtransport::error_code(code)
}

impl BenchSend {
    pub async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), WriteError> {
        match self {
            BenchSend::Quic(s) => s.write_chunk(chunk).await,
            BenchSend::Ws(s) => s.write_chunk(chunk).await,
        }
    }

    pub fn finish(&mut self) -> Result<(), WriteError> {
        match self {
            BenchSend::Quic(s) => s.finish(),
            BenchSend::Ws(s) => s.finish(),
        }
    }

    /// Abandon the stream with moq-lite code `code`.
    pub fn reset(&mut self, code: u32) -> Result<(), WriteError> {
        match self {
            BenchSend::Quic(s) => s.reset(quic_code(code)),
            BenchSend::Ws(s) => s.reset(VarInt::from_u32(code)),
        }
    }
}

impl BenchRecv {
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ReadStreamError> {
        match self {
            BenchRecv::Quic(r) => r.read_chunk(max).await,
            BenchRecv::Ws(r) => r.read_chunk(max).await,
        }
    }

    /// Ask the relay to stop sending, with moq-lite code `code`.
    pub fn stop(&mut self, code: u32) -> Result<(), ReadStreamError> {
        match self {
            BenchRecv::Quic(r) => r.stop(quic_code(code)),
            BenchRecv::Ws(r) => r.stop(VarInt::from_u32(code)),
        }
    }
}
