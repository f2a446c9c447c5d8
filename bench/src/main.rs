//! `qumo-bench`: run a moq-lite load against a relay, or plot a report.
//!
//! Exit codes: 0 ok, 1 a strict run failed its checks, 2 the run could not
//! be made (relay unreachable, bad TLS, I/O), 64 bad command line.

use std::process::ExitCode;

use qumo_bench::args::{self, Command};

fn main() -> ExitCode {
    let command = match args::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            // clap's errors end with a usage hint; ours are one line.
            if e.starts_with("error:") {
                eprint!("{e}");
            } else {
                eprintln!("qumo-bench: {e}\n(see qumo-bench --help)");
            }
            return ExitCode::from(64);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    match command {
        Command::Help(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Command::Plot { input, output } => match plot(&input, &output) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("qumo-bench plot: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run(cfg) => {
            let report = match qumo_bench::run::run(&cfg) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("qumo-bench: {e}");
                    return ExitCode::from(2);
                }
            };
            print!("{}", report.table());
            let json = report.to_json();
            if let Some(path) = &cfg.json {
                if let Err(e) = std::fs::write(path, &json) {
                    eprintln!("qumo-bench: {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            if let Some(path) = &cfg.plot {
                let value: serde_json::Value =
                    serde_json::from_str(&json).unwrap_or(serde_json::Value::Null);
                let written = qumo_bench::plot::svg(&value)
                    .and_then(|svg| std::fs::write(path, svg).map_err(|e| e.to_string()));
                if let Err(e) = written {
                    eprintln!("qumo-bench: {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            println!("{}", report.result);
            if cfg.strict && !report.pass {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
    }
}

fn plot(input: &std::path::Path, output: &std::path::Path) -> Result<(), String> {
    let text = std::fs::read_to_string(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", input.display()))?;
    let svg = qumo_bench::plot::svg(&value)?;
    std::fs::write(output, svg).map_err(|e| format!("{}: {e}", output.display()))
}
