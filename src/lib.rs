//! qumo: a thread-per-core Media over QUIC relay.

pub mod config;
pub mod logging;
pub mod tls;
