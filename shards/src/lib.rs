//! qumo-shards: a thread-per-core QUIC runtime. It knows nothing of MoQ.
//!
//! Each shard is one pinned OS thread running a monoio (io_uring) loop with
//! its own `SO_REUSEPORT` UDP socket and its own quinn-proto endpoint.
//! Connection ids carry the shard index, a BPF program steers packets by it,
//! and the shards talk through a lock-free mesh. See `DESIGN.md`.
//!
//! The application hands [`Runtime::start`] a function that is called once
//! on every shard with a [`ShardContext`]; from there it accepts
//! [`Connection`]s, opens streams and posts messages to other shards.

mod admission;
pub mod cid;
pub mod config;
mod connection;
mod context;
mod core;
pub mod mesh;
mod notify;
pub use notify::yield_now;
mod runtime;
pub mod socket;
pub mod stats;
pub mod steering;
mod stream;
mod tasks;
mod wait;
pub use wait::{WaitList, Waiter};

pub use config::{AdmissionLimits, QuicLimits, RetryPolicy, RuntimeConfig, Steering};
pub use connection::{Connection, DatagramError};
pub use context::{ConnectError, ShardContext};
pub use runtime::{Poster, Runtime, RuntimeError, RuntimeProbe, ShutdownHandle};
pub use stats::{ConnectionStats, SendBatches, ShardStats, ShardStatsSnapshot, SEND_BATCH_BOUNDS};
pub use stream::{ReadStreamError, RecvStream, SendStream, WriteError};

pub use quinn_proto;
pub use quinn_proto::{ConnectionError, VarInt};
pub use rustls;
