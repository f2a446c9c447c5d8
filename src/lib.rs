//! qumo: a thread-per-core Media over QUIC relay.

pub mod config;
pub mod tls;
