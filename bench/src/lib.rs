//! qumo-bench: a thread-per-core moq-lite load generator.
//!
//! One process runs P publishers and S subscribers as QUIC clients on the
//! `qumo-shards` runtime, against any relay that speaks moq-lite over raw
//! QUIC, or (`--transport ws`) over QMux on a WebSocket; with `--protocol
//! ietf-14` or `ietf-22` the subscribers speak IETF moq-transport draft 14 or
//! 22 instead. Every frame carries its send time; subscribers measure
//! delivered bytes, lost groups and publish-to-receive latency. See `qumo-bench --help`
//! and `scripts/loadtest.sh`.

pub mod args;
pub mod histogram;
pub mod ietf_subscriber;
pub mod loss;
pub mod payload;
pub mod plan;
pub mod plot;
pub mod procfs;
pub mod publisher;
pub mod report;
pub mod run;
pub mod scrape;
pub mod session;
pub mod stats;
pub mod subscriber;
pub mod tls;
pub mod transport;
