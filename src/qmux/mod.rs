//! QMux (draft-ietf-quic-qmux-00): QUIC's streams and flow control over an
//! ordered message transport, here WebSocket (`crate::websocket`).
//! `codec` is the pure frame codec; `conn` the connection as a session
//! transport; `wire` what it learns of the stream below.

pub mod codec;
mod conn;
#[cfg(test)]
mod tests;
mod wire;

pub use conn::{QmuxError, QmuxLimits, QmuxOrigin, QmuxRecv, QmuxSend, QmuxTransport};
pub use wire::Wire;
