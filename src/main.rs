//! `qumo-relay`: load the configuration, set up logging and TLS, run the relay.
//!
//! Exit codes (`sysexits.h`):
//!
//! | code | when |
//! |------|------|
//! | 0    | clean shutdown, `--help`, `--version` |
//! | 1    | the relay failed: a QUIC, certificate-hash HTTP or `admin.address` in use, or a failure while running |
//! | 64   | bad command line (`EX_USAGE`) |
//! | 66   | config, certificate or key file missing or unreadable (`EX_NOINPUT`) |
//! | 78   | invalid configuration, unusable certificate or key, bad `RUST_LOG` (`EX_CONFIG`) |

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use qumo::config::{Config, EX_CONFIG};

const DEFAULT_CONFIG: &str = "configs/config.yaml";
const EX_USAGE: u8 = 64;

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run { config: PathBuf },
    Help,
    Version,
}

fn usage() -> String {
    format!(
        "Usage: qumo-relay [--config|-c PATH]\n\
         \n\
         A thread-per-core Media over QUIC relay.\n\
         \n\
         Options:\n  \
           -c, --config PATH   configuration file (default: {DEFAULT_CONFIG})\n  \
           -h, --help          print this help\n  \
           -V, --version       print the version\n\
         \n\
         RUST_LOG, when set, overrides logging.level.\n\
         Exit codes: 0 ok, 1 relay failure, 64 bad usage, 66 missing input file, 78 bad configuration.\n"
    )
}

/// Hand-parsed: four options do not justify an argument-parsing crate.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut config = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-c" | "--config" => {
                let path = args.next().ok_or_else(|| format!("{arg} needs a path"))?;
                config = Some(PathBuf::from(path));
            }
            _ => match arg.strip_prefix("--config=") {
                Some(path) => config = Some(PathBuf::from(path)),
                None => return Err(format!("unexpected argument {arg:?}")),
            },
        }
    }
    Ok(Command::Run {
        config: config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)),
    })
}

fn fail(message: impl std::fmt::Display, code: i32) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn main() -> ExitCode {
    let config_path = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run { config }) => config,
        Ok(Command::Help) => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("qumo-relay {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprint!("error: {message}\n\n{}", usage());
            return ExitCode::from(EX_USAGE);
        }
    };
    let file = config_path.display().to_string();

    let config = match Config::load(&config_path) {
        Ok(config) => config,
        Err(e) => return fail(&e, e.exit_code()),
    };
    if let Err(e) = qumo::logging::init(&config.logging.level) {
        return fail(e, EX_CONFIG);
    }
    tracing::info!(config = %file, version = env!("CARGO_PKG_VERSION"), "qumo-relay starting");

    let alpn = qumo::ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    let tls = match config.server_tls(&file, alpn) {
        Ok(tls) => tls,
        Err(e) => return fail(&e, e.exit_code()),
    };
    let auth = match config.auth(&file) {
        Ok(auth) => auth,
        Err(e) => return fail(&e, e.exit_code()),
    };
    if auth.is_none() {
        tracing::warn!("no auth section: anyone may publish and subscribe anywhere");
    }
    let runtime_config = config.runtime_config(tls.config);
    tracing::debug!(?runtime_config, "runtime configuration");

    // A generated certificate is published for browsers to pin: plain HTTP
    // on TCP at the QUIC listener's address. With port 0 the TCP side gets an
    // ephemeral port of its own (logged), not the QUIC one.
    let http_limits = config.http.limits();
    let certificate_stats = Arc::new(qumo::http::HttpStats::default());
    let _certificate_server = match &tls.fingerprint {
        Some(fingerprint) => {
            let listen = runtime_config.listen;
            match qumo::http::serve_certificate_hash(
                listen,
                fingerprint.hex.clone(),
                http_limits,
                certificate_stats.clone(),
            ) {
                Ok(server) => Some(server),
                Err(e) => {
                    return fail(
                        format_args!(
                            "cannot serve {} on TCP {listen}: {e}",
                            qumo::http::CERTIFICATE_PATH
                        ),
                        1,
                    )
                }
            }
        }
        None => None,
    };

    let metrics = Arc::new(qumo::metrics::Metrics::default());
    // Bound before the shards start, so a taken address stops the relay
    // before it accepts anyone; it reads the shards' counters once they run.
    let _admin_server = match config.admin.address {
        Some(address) => {
            let listeners = vec![("certificate", certificate_stats)];
            // Set by the first SIGINT/SIGTERM, beside the runtime's own
            // handler (signal-hook chains them), so /healthz turns 503 for
            // load balancers while the relay drains.
            let stopping = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                if let Err(e) = signal_hook::flag::register(signal, stopping.clone()) {
                    return fail(format_args!("cannot install signal handlers: {e}"), 1);
                }
            }
            match qumo::admin::serve(address, http_limits, metrics.clone(), listeners, stopping) {
                Ok(server) => Some(server),
                Err(e) => {
                    return fail(
                        format_args!("cannot serve admin.address on TCP {address}: {e}"),
                        1,
                    )
                }
            }
        }
        None => None,
    };

    match qumo::relay::run(&config, runtime_config, metrics, auth) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_arguments_run_the_default_config() {
        assert_eq!(
            parse_args(args(&[])),
            Ok(Command::Run {
                config: PathBuf::from(DEFAULT_CONFIG)
            })
        );
    }

    #[test]
    fn config_path_is_taken_in_all_three_spellings() {
        for list in [
            &["-c", "x.yaml"][..],
            &["--config", "x.yaml"],
            &["--config=x.yaml"],
        ] {
            assert_eq!(
                parse_args(args(list)),
                Ok(Command::Run {
                    config: PathBuf::from("x.yaml")
                })
            );
        }
    }

    #[test]
    fn config_flag_without_a_path_is_a_usage_error() {
        assert!(parse_args(args(&["--config"])).is_err());
    }

    #[test]
    fn unknown_argument_is_a_usage_error() {
        assert!(parse_args(args(&["--frobnicate"])).is_err());
    }

    #[test]
    fn help_and_version_win_over_other_arguments() {
        assert_eq!(parse_args(args(&["-c", "x", "--help"])), Ok(Command::Help));
        assert_eq!(parse_args(args(&["-V"])), Ok(Command::Version));
    }
}
