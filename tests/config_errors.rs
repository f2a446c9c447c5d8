//! The real binary, started with bad configuration files: each class of
//! error exits with its documented code, and stderr names the file, the key
//! and the reason.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::Lines;

/// Longer than any of these runs takes on a loaded machine; a relay that
/// starts instead of refusing its configuration is stopped at it.
const DEADLINE: Duration = Duration::from_secs(30);

const EX_NOINPUT: i32 = 66;
const EX_CONFIG: i32 = 78;

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

fn run_with_config(path: &Path) -> Outcome {
    run_with_args(&["--config".as_ref(), path.as_os_str()], &[])
}

/// The relay with these arguments and extra environment variables.
fn run_with_args(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Outcome {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qumo-relay"))
        .args(args)
        .envs(env.iter().copied())
        // The file's logging.level must decide, not the developer's shell.
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the relay did not exit within {DEADLINE:?}; stderr:\n{}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        code: status.code(),
        stderr: reader.join().unwrap(),
    }
}

/// Write `text` as `config.yaml` in a fresh directory; keep the directory
/// alive for as long as the path is used.
fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// The single `error: ...` line, which must name the config file.
fn error_line(outcome: &Outcome, file: &Path) -> String {
    let line = outcome
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {:?}", outcome.stderr))
        .to_string();
    assert!(
        line.contains(&file.display().to_string()),
        "names the file: {line}"
    );
    line
}

#[test]
fn missing_config_file_exits_66_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.yaml");
    let outcome = run_with_config(&path);
    assert_eq!(outcome.code, Some(EX_NOINPUT), "{}", outcome.stderr);
    let line = error_line(&outcome, &path);
    assert!(line.contains("cannot read"), "{line}");
}

#[test]
fn yaml_syntax_error_exits_78_with_its_line() {
    let (_dir, path) = config_file("server:\n  address: \"[::]:4433\"\n   shards: 2\n");
    let outcome = run_with_config(&path);
    assert_eq!(outcome.code, Some(EX_CONFIG), "{}", outcome.stderr);
    let line = error_line(&outcome, &path);
    assert!(line.contains("YAML syntax error at line 3"), "{line}");
}

#[test]
fn unknown_key_exits_78_and_names_its_dotted_path() {
    let (_dir, path) = config_file("server:\n  adress: \"[::]:4433\"\n");
    let outcome = run_with_config(&path);
    assert_eq!(outcome.code, Some(EX_CONFIG), "{}", outcome.stderr);
    let line = error_line(&outcome, &path);
    assert!(line.contains("server.adress"), "{line}");
    assert!(line.contains("unknown key"), "{line}");
    assert!(line.contains("`address`"), "lists the known keys: {line}");
}

#[test]
fn unparsable_address_exits_78_and_names_server_address() {
    let (_dir, path) = config_file("server:\n  address: \"not an address\"\n");
    let outcome = run_with_config(&path);
    assert_eq!(outcome.code, Some(EX_CONFIG), "{}", outcome.stderr);
    let line = error_line(&outcome, &path);
    assert!(line.contains("server.address"), "{line}");
    assert!(line.contains("invalid socket address"), "{line}");
}

#[test]
fn out_of_range_shard_count_exits_78_and_gives_the_limit() {
    let (_dir, path) = config_file("server:\n  shards: 1000\n");
    let outcome = run_with_config(&path);
    assert_eq!(outcome.code, Some(EX_CONFIG), "{}", outcome.stderr);
    let line = error_line(&outcome, &path);
    assert!(line.contains("server.shards"), "{line}");
    assert!(line.contains("at most 255"), "{line}");
}

#[test]
fn missing_certificate_file_exits_66_and_names_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("absent-cert.pem");
    let key = dir.path().join("absent-key.pem");
    let (_config_dir, path) = config_file(&format!(
        "tls:\n  cert_file: {:?}\n  key_file: {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    ));
    let outcome = run_with_config(&path);
    assert_eq!(outcome.code, Some(EX_NOINPUT), "{}", outcome.stderr);
    let line = error_line(&outcome, &path);
    assert!(line.contains("tls.cert_file"), "{line}");
    assert!(line.contains(&cert.display().to_string()), "{line}");
}

#[test]
fn unparsable_certificate_file_exits_78_and_names_the_certificate() {
    let (dir, path) = config_file("");
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate\n").unwrap();
    std::fs::write(
        &path,
        format!(
            "tls:\n  cert_file: {:?}\n  key_file: {:?}\n",
            cert.display().to_string(),
            cert.display().to_string()
        ),
    )
    .unwrap();
    let outcome = run_with_config(&path);
    assert_eq!(outcome.code, Some(EX_CONFIG), "{}", outcome.stderr);
    let line = error_line(&outcome, &path);
    assert!(line.contains("tls.cert_file"), "{line}");
    assert!(line.contains(&cert.display().to_string()), "{line}");
}

#[test]
fn both_tls_forms_exit_78_and_name_tls() {
    let (_dir, path) =
        config_file("tls:\n  generate: [localhost]\n  cert_file: c.pem\n  key_file: k.pem\n");
    let outcome = run_with_config(&path);
    assert_eq!(outcome.code, Some(EX_CONFIG), "{}", outcome.stderr);
    let line = error_line(&outcome, &path);
    assert!(line.contains(": tls: "), "{line}");
    assert!(line.contains("not both"), "{line}");
}

#[test]
fn generated_certificate_fingerprint_is_logged_as_hex() {
    let (_dir, path) = config_file(
        "server:\n  address: \"127.0.0.1:0\"\n  shards: 1\n  pin_cores: false\n  steering: forward-only\n\
         tls:\n  generate: [localhost]\nlogging:\n  level: info\n",
    );
    // Once the relay runs for real the process does not exit by itself, so
    // read stderr only until the fingerprint line, then stop it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_qumo-relay"))
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let log = Lines::collect(child.stderr.take().expect("piped stderr"));
    let line = log.wait_for_nth("sha256=", 0, DEADLINE);
    let _ = child.kill();
    let _ = child.wait();
    let line = line.unwrap_or_else(|| panic!("no fingerprint logged: {:#?}", log.snapshot()));
    let hex = support::field(&line, "sha256");
    assert_eq!(hex.len(), 64, "{hex}");
    assert!(
        hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
        "{hex}"
    );
}

#[test]
fn go_spelling_minus_config_loads_the_go_layout() {
    // The Go layout names certs/server.crt relative to the working
    // directory; that it is the file asked for proves -config read it.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/go-relay-flat.yaml");
    let joined = std::ffi::OsString::from(format!("-config={}", path.display()));
    for args in [
        vec!["-config".as_ref(), path.as_os_str()],
        vec![joined.as_os_str()],
    ] {
        let outcome = run_with_args(&args, &[]);
        assert_eq!(outcome.code, Some(EX_NOINPUT), "{}", outcome.stderr);
        let line = error_line(&outcome, &path);
        assert!(line.contains("tls.cert_file"), "{line}");
        assert!(line.contains("certs/server.crt"), "{line}");
    }
}

#[test]
fn bad_environment_override_exits_78_and_names_the_variable() {
    let (_dir, path) = config_file("logging:\n  level: info\n");
    let outcome = run_with_args(
        &["--config".as_ref(), path.as_os_str()],
        &[("QUMO_RELAY__GROUP_CACHE_SIZE", "0")],
    );
    assert_eq!(outcome.code, Some(EX_CONFIG), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains(
            "error: environment variable QUMO_RELAY__GROUP_CACHE_SIZE: relay.group_cache_size: bad value: must be at least 1"
        ),
        "{}",
        outcome.stderr
    );
}

#[test]
fn bad_command_line_exits_64() {
    let outcome = run_with_args(&["--no-such-flag".as_ref()], &[]);
    assert_eq!(outcome.code, Some(64), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("--no-such-flag"),
        "{}",
        outcome.stderr
    );
}
