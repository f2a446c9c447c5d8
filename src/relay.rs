//! Placeholder: replaced by the relay owner when merging.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("runtime: {0}")]
    Runtime(String),
}
pub fn run(
    _config: &crate::config::Config,
    _rt: qumo_shards::RuntimeConfig,
) -> Result<(), RelayError> {
    Ok(())
}
