//! qumo: a thread-per-core Media over QUIC relay.

pub mod tls;
