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

use clap::Parser;
use qumo::config::{Config, Override, EX_CONFIG};

const DEFAULT_CONFIG: &str = "configs/config.yaml";
const EX_USAGE: u8 = 64;

/// A thread-per-core Media over QUIC relay.
#[derive(Debug, Parser)]
#[command(
    name = "qumo-relay",
    version,
    after_help = "Every configuration key can also be set by an environment variable \
QUMO_<SECTION>__<KEY> (e.g. QUMO_RELAY__GROUP_CACHE_SIZE=5, QUMO_SERVER__ADDRESS=[::]:4433) \
or by --set; the order of precedence is --set, then environment, then the file.\n\
RUST_LOG, when set, overrides logging.level. SIGHUP re-reads tls.cert_file and tls.key_file.\n\
Exit codes: 0 ok, 1 relay failure, 64 bad usage, 66 missing input file, 78 bad configuration."
)]
struct Cli {
    /// Configuration file (YAML). The Go qumo-relay's `-config` spelling is
    /// accepted too.
    #[arg(
        short = 'c',
        long,
        value_name = "PATH",
        env = "QUMO_CONFIG",
        default_value = DEFAULT_CONFIG
    )]
    config: PathBuf,

    /// Set one configuration key, over the file and the environment:
    /// `--set relay.group_cache_size=5`. Repeatable.
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE", value_parser = Override::from_flag)]
    set: Vec<Override>,
}

/// The Go qumo-relay took `-config PATH` (Go's flag package allows one
/// dash); clap reads a single dash as short options (`-c onfig`), so that
/// spelling is rewritten to `--config` before parsing.
fn go_spellings(args: impl IntoIterator<Item = String>) -> impl Iterator<Item = String> {
    args.into_iter().map(|arg| {
        if arg == "-config" || arg.starts_with("-config=") {
            format!("-{arg}")
        } else {
            arg
        }
    })
}

/// The command line, or the exit code when there is nothing to run (help,
/// version: 0; a usage error: 64, after printing it).
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Cli, ExitCode> {
    Cli::try_parse_from(go_spellings(args)).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(EX_USAGE)
        } else {
            ExitCode::SUCCESS
        }
    })
}

fn fail(message: impl std::fmt::Display, code: i32) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[global_allocator]
static ALLOCATOR: qumo::allocator::Allocator = qumo::allocator::Allocator {};

fn main() -> ExitCode {
    // Before the shards and their heaps exist (see allocator.rs).
    let no_thp = qumo::allocator::disable_transparent_huge_pages();
    let cli = match parse_args(std::env::args()) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let config_path = cli.config;
    let file = config_path.display().to_string();

    let mut overrides = Override::from_env(std::env::vars());
    overrides.extend(cli.set);
    let config = match Config::load_with(&config_path, &overrides) {
        Ok(config) => config,
        Err(e) => return fail(&e, e.exit_code()),
    };
    if let Err(e) = qumo::logging::init(&config.logging.level) {
        return fail(e, EX_CONFIG);
    }
    tracing::info!(config = %file, version = env!("CARGO_PKG_VERSION"), "qumo-relay starting");
    if !no_thp {
        tracing::debug!("transparent huge pages stay as the host sets them");
    }

    let alpn = qumo::ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    let tls = match config.server_tls(&file, alpn) {
        Ok(tls) => tls,
        Err(e) => return fail(&e, e.exit_code()),
    };
    let reloader = match (&tls.rotating, &config.tls.cert_file, &config.tls.key_file) {
        (Some(rotating), Some(cert_file), Some(key_file)) => {
            Some(qumo::tls_reload::CertificateReloader::new(
                cert_file.clone(),
                key_file.clone(),
                rotating.clone(),
            ))
        }
        _ => None,
    };
    if let Err(e) = qumo::tls_reload::watch(reloader, qumo::tls_reload::WATCH_INTERVAL) {
        return fail(format_args!("cannot install the SIGHUP handler: {e}"), 1);
    }
    let auth = match config.auth(&file) {
        Ok(auth) => auth,
        Err(e) => return fail(&e, e.exit_code()),
    };
    if auth.is_none() {
        tracing::warn!("no auth section: anyone may publish and subscribe anywhere");
    }
    // The TCP side of the port takes TLS too (`wss://`, `https://`), with
    // the QUIC certificate: one port, told apart by the first byte.
    let tcp_tls = match qumo::tls::tcp_server_tls(&tls.config) {
        Ok(config) => config,
        Err(e) => return fail(format_args!("TLS for the TCP listener: {e}"), 1),
    };
    let runtime_config = config.runtime_config(tls.config);
    tracing::debug!(?runtime_config, "runtime configuration");

    // A generated certificate is published for browsers to pin: HTTP
    // on TCP at the QUIC listener's address (plain, or TLS when the first
    // byte is a handshake's). With port 0 the TCP side gets an
    // ephemeral port of its own (logged), not the QUIC one.
    let http_limits = config.http.limits();
    let certificate_stats = Arc::new(qumo::http::HttpStats::default());
    // The same listener takes WebSocket upgrades (QMux) when enabled.
    let websocket = config
        .server
        .websocket
        .then(|| Arc::new(qumo::websocket::WebSocketDoor::default()));
    let _certificate_server = match (&tls.fingerprint, &websocket) {
        (None, None) => None,
        (fingerprint, websocket) => {
            let listen = runtime_config.listen;
            match qumo::http::serve_certificate_hash(
                listen,
                fingerprint.as_ref().map(|f| f.hex.clone()),
                http_limits,
                certificate_stats.clone(),
                websocket.clone().map(qumo::websocket::upgrader),
                Some(tcp_tls),
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
    };

    let metrics = Arc::new(qumo::metrics::Metrics::default());
    let announced = Arc::new(qumo::announced::AnnouncedSource::default());
    // Bound before the shards start, so a taken address stops the relay
    // before it accepts anyone; it reads the shards' counters once they run.
    let _admin_server = match config.admin.address {
        Some(address) => {
            let listeners = vec![("certificate", certificate_stats)];
            // Set by the first SIGINT/SIGTERM, beside the runtime's own
            // handler (signal-hook chains them), so /health turns 503 for
            // load balancers while the relay drains.
            let stopping = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                if let Err(e) = signal_hook::flag::register(signal, stopping.clone()) {
                    return fail(format_args!("cannot install signal handlers: {e}"), 1);
                }
            }
            let served = qumo::admin::serve(
                address,
                http_limits,
                metrics.clone(),
                announced.clone(),
                listeners,
                stopping,
            );
            match served {
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

    match qumo::relay::run(&config, runtime_config, metrics, auth, announced, websocket) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &[&str]) -> Result<Cli, clap::Error> {
        let args = std::iter::once("qumo-relay")
            .chain(list.iter().copied())
            .map(String::from);
        Cli::try_parse_from(go_spellings(args))
    }

    fn config_of(list: &[&str]) -> PathBuf {
        parse(list).unwrap().config
    }

    #[test]
    fn config_path_is_taken_in_every_spelling_including_go_s() {
        for list in [
            &["-c", "x.yaml"][..],
            &["--config", "x.yaml"],
            &["--config=x.yaml"],
            &["-config", "x.yaml"],
            &["-config=x.yaml"],
        ] {
            assert_eq!(config_of(list), PathBuf::from("x.yaml"), "{list:?}");
        }
    }

    #[test]
    fn set_takes_key_value_pairs_in_order() {
        let cli = parse(&["--set", "relay.group_cache_size=5", "-s", "server.shards=2"]).unwrap();
        let keys: Vec<_> = cli
            .set
            .iter()
            .map(|o| (o.key.as_str(), o.value.as_str()))
            .collect();
        assert_eq!(
            keys,
            [("relay.group_cache_size", "5"), ("server.shards", "2")]
        );
        assert!(parse(&["--set", "no-equals-sign"]).is_err());
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for list in [&["--config"][..], &["--frobnicate"], &["stray"]] {
            let e = parse(list).unwrap_err();
            assert!(e.use_stderr(), "{list:?}: {e}");
        }
    }

    #[test]
    fn help_documents_the_environment_convention_and_exit_codes() {
        let e = parse(&["--help"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        let help = e.to_string();
        for needle in [
            "--config",
            "--set",
            "QUMO_CONFIG",
            "QUMO_<SECTION>__<KEY>",
            "78 bad configuration",
        ] {
            assert!(help.contains(needle), "{needle}: {help}");
        }
        let e = parse(&["-V"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
    }
}
