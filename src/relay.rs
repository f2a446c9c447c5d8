//! The relay process: starts the shards, serves connections on each, and
//! stops gracefully on SIGINT/SIGTERM.
//!
//! MoQ sessions are not wired in yet: a connection is accepted, logged and
//! held until the peer or shutdown closes it. Session handling plugs in at
//! [`serve_connection`].

use qumo_shards::{Connection, Runtime, RuntimeConfig, RuntimeError, ShardContext};
use tracing::{debug, info};

use crate::config::Config;

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Messages shards exchange about tracks. None yet: fan-out arrives with
/// the MoQ session layer.
#[derive(Debug)]
pub enum ShardMessage {}

/// Run the relay until a signal stops it.
pub fn run(_config: &Config, runtime_config: RuntimeConfig) -> Result<(), RelayError> {
    let runtime = Runtime::<ShardMessage>::start(runtime_config, serve_shard)?;
    runtime.shutdown_on_signals().map_err(RelayError::Signals)?;
    info!(
        address = %runtime.local_addr(),
        shards = runtime.shard_count(),
        steering = ?runtime.steering(),
        "qumo-relay listening"
    );
    runtime.wait();
    info!("qumo-relay stopped");
    Ok(())
}

async fn serve_shard(ctx: ShardContext<ShardMessage>) {
    while let Some(conn) = ctx.accept().await {
        monoio::spawn(serve_connection(conn));
    }
}

async fn serve_connection(conn: Connection) {
    let alpn = conn
        .alpn()
        .map(|p| String::from_utf8_lossy(&p).into_owned());
    debug!(shard = conn.shard(), id = conn.stable_id(), remote = ?conn.remote_address(), ?alpn, "connection open");
    let reason = conn.closed().await;
    debug!(shard = conn.shard(), id = conn.stable_id(), %reason, "connection closed");
}
