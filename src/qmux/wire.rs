//! What the byte stream under a QMux connection can tell of itself: the
//! figures a QUIC connection has of its own (bytes carried, the path's
//! estimate), which QMux, having no congestion controller, must take from
//! below (a WebSocket's TCP socket, `crate::websocket::SocketWire`).

use crate::metrics::Traffic;
use crate::session::transport::Estimate;

pub trait Wire {
    /// Bytes carried each way so far, framing and encryption included.
    fn traffic(&self) -> Traffic;
    /// The path's send rate and round trip, as far as known now.
    fn estimate(&self) -> Estimate;
}
