//! What the byte stream under a QMux connection can tell of itself: the
//! figures a QUIC connection has of its own (bytes carried, the path's
//! estimate), which QMux, having no congestion controller, must take from
//! below (a WebSocket's TCP socket, `crate::websocket::SocketWire`).

use qumo_shards::WaitList;

use crate::metrics::Traffic;
use crate::session::transport::Estimate;

pub trait Wire {
    /// Bytes carried each way so far, framing and encryption included.
    fn traffic(&self) -> Traffic;
    /// The path's send rate and round trip, as far as known now.
    fn estimate(&self) -> Estimate;
    /// A count that moves whenever [`Wire::estimate`] may have (and when
    /// the wire ends), as `Transport::estimate_epoch`.
    fn estimate_epoch(&self) -> u64;
    /// The tasks to wake when [`Wire::estimate_epoch`] moves.
    fn estimate_waiters(&self) -> &WaitList;
}
