//! qumo-bench: the MoQ load generator (publishers, subscribers, latency) is
//! built on the shards runtime once the relay speaks moq-lite. Until then
//! this binary says so instead of pretending to measure anything.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "qumo-bench: the moq-lite load generator is not built yet; \
         for the runtime's own figures run `cargo bench -p qumo-shards`"
    );
    ExitCode::from(2)
}
