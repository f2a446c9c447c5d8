//! Keys and tokens made by `moq-token-cli` (crates.io 0.5.48, binary
//! `moq-token`), as an operator makes them; installed by
//! `scripts/install-clients.sh`, or set `QUMO_MOQ_TOKEN`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECOND: Duration = Duration::from_secs(1);

/// `moq-token ARGS...`, its stdout trimmed; panics with its stderr.
pub fn moq_token(args: &[&str]) -> String {
    let binary = super::client_binary("moq-token", "QUMO_MOQ_TOKEN");
    let out = Command::new(binary)
        .args(args)
        .output()
        .expect("moq-token runs");
    assert!(
        out.status.success(),
        "moq-token {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A signing key made by `moq-token generate`, and the file the relay
/// verifies with (the same one for HS256, the public half otherwise).
pub struct Keys {
    _dir: tempfile::TempDir,
    pub signing: PathBuf,
    pub verifying: PathBuf,
}

impl Keys {
    pub fn generate(algorithm: &str) -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let signing = dir.path().join("key.jwk");
        let public = dir.path().join("public.jwk");
        let mut args = vec!["generate", "--algorithm", algorithm, "--out"];
        args.push(signing.to_str().unwrap());
        let symmetric = algorithm.starts_with("HS");
        if !symmetric {
            args.extend(["--public", public.to_str().unwrap()]);
        }
        moq_token(&args);
        let verifying = if symmetric { signing.clone() } else { public };
        Keys {
            _dir: dir,
            signing,
            verifying,
        }
    }

    /// `moq-token sign --root ROOT --publish P... --subscribe S...`, valid
    /// for an hour.
    pub fn sign(&self, root: &str, put: &[&str], get: &[&str]) -> String {
        self.sign_expiring(root, put, get, SystemTime::now() + 3600 * SECOND)
    }

    pub fn sign_expiring(&self, root: &str, put: &[&str], get: &[&str], at: SystemTime) -> String {
        let expires = at.duration_since(UNIX_EPOCH).unwrap().as_secs().to_string();
        let mut args = vec!["sign", "--key", self.signing.to_str().unwrap()];
        args.extend(["--root", root, "--expires", &expires]);
        for p in put {
            args.extend(["--publish", p]);
        }
        for g in get {
            args.extend(["--subscribe", g]);
        }
        moq_token(&args)
    }
}
