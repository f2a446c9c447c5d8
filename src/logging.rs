//! Log output: `tracing` events formatted to stderr.
//!
//! Each line carries the thread name, so that the shard a line came from
//! (`shard-K`) is visible without adding a field to every event.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `RUST_LOG` is set but is not a valid filter.
    #[error("RUST_LOG: {value:?} is not a valid tracing filter: {reason}")]
    BadEnvFilter { value: String, reason: String },
    /// The configured level is not a valid filter (configurations from
    /// [`crate::config::Config::load`] are already checked).
    #[error("logging.level: {value:?} is not a valid tracing filter: {reason}")]
    BadLevel { value: String, reason: String },
    /// A global subscriber was installed earlier in this process.
    #[error("logging was already initialised: {0}")]
    AlreadyInitialised(String),
}

/// The filter to use: `RUST_LOG` when it is set and not empty (so an
/// operator can raise verbosity without editing the file), else `level`.
pub fn filter(level: &str) -> Result<EnvFilter, LoggingError> {
    match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(value) if !value.trim().is_empty() => {
            EnvFilter::try_new(&value).map_err(|e| LoggingError::BadEnvFilter {
                value,
                reason: e.to_string(),
            })
        }
        _ => EnvFilter::try_new(level).map_err(|e| LoggingError::BadLevel {
            value: level.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Install the global subscriber: human-readable lines on stderr with
/// thread names, filtered by [`filter`]. Call once, before the runtime
/// starts its shard threads.
pub fn init(level: &str) -> Result<(), LoggingError> {
    tracing_subscriber::fmt()
        .with_env_filter(filter(level)?)
        .with_thread_names(true)
        // Colour codes only for a person watching, not for log files.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| LoggingError::AlreadyInitialised(e.to_string()))
}
