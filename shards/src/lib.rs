//! qumo-shards: a thread-per-core QUIC runtime. Knows nothing of MoQ.
pub mod config;
pub use config::{QuicLimits, RuntimeConfig, Steering};
pub use quinn_proto;
pub use rustls;
