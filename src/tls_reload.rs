//! Certificate rotation: re-read `tls.cert_file` and `tls.key_file` while
//! the relay runs, on SIGHUP and when the files change.
//!
//! A change is noticed by the files' size, modification time and inode,
//! looked at every [`WATCH_INTERVAL`] (two `stat` calls, no inotify
//! dependency). A new pair is checked as at start-up (both files parse, the
//! key matches the leaf); one that fails is refused with a warning and the
//! old pair stays in use. A pair in use goes into a [`RotatingCertificate`],
//! so the next handshake on every shard uses it and open connections keep
//! theirs.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use crate::tls::{load_certified_key, CertificateFingerprint, RotatingCertificate, TlsError};

/// How often the files are looked at for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// What asked for a reload, as the log line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP (`systemctl reload`).
    Signal,
    /// The files' size, modification time or inode changed.
    FilesChanged,
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FilesChanged => "files changed",
        })
    }
}

/// What identifies one version of a file: size, modification time, inode
/// (a file replaced by rename has a new one); `None` if it cannot be read.
type FileStamp = Option<(u64, SystemTime, u64)>;

fn stamp(path: &std::path::Path) -> FileStamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?, meta.ino()))
}

/// Puts the pair named by the configuration into a [`RotatingCertificate`].
#[derive(Debug)]
pub struct CertificateReloader {
    cert_file: PathBuf,
    key_file: PathBuf,
    target: Arc<RotatingCertificate>,
    /// The files as they were at the last load, tried or not.
    seen: [FileStamp; 2],
}

impl CertificateReloader {
    /// A reloader for `target`, whose pair was just loaded from these files.
    pub fn new(cert_file: PathBuf, key_file: PathBuf, target: Arc<RotatingCertificate>) -> Self {
        let seen = [stamp(&cert_file), stamp(&key_file)];
        Self {
            cert_file,
            key_file,
            target,
            seen,
        }
    }

    /// Load the pair and put it in use, or log why not and keep the old one.
    pub fn reload(&mut self, trigger: Trigger) -> Result<CertificateFingerprint, TlsError> {
        self.seen = [stamp(&self.cert_file), stamp(&self.key_file)];
        match load_certified_key(&self.cert_file, &self.key_file) {
            Ok(key) => {
                // load_certificates refuses an empty chain: there is a leaf.
                let leaf = key.cert.first().map_or(&[][..], |c| c.as_ref());
                let fingerprint = CertificateFingerprint::of_der(leaf);
                self.target.replace(key);
                info!(
                    %trigger,
                    cert_file = %self.cert_file.display(),
                    sha256 = %fingerprint.hex,
                    "reloaded the TLS certificate; new handshakes use it"
                );
                Ok(fingerprint)
            }
            Err(error) => {
                warn!(
                    %trigger,
                    %error,
                    "refused the new TLS certificate; the old one stays in use"
                );
                Err(error)
            }
        }
    }

    /// Reload if either file changed since the last load; `None` if not.
    pub fn reload_if_changed(&mut self) -> Option<Result<CertificateFingerprint, TlsError>> {
        let now = [stamp(&self.cert_file), stamp(&self.key_file)];
        (now != self.seen).then(|| self.reload(Trigger::FilesChanged))
    }
}

/// Handle SIGHUP from now on, on a thread of its own: reload the pair (when
/// there is a `reloader`; a generated certificate has no files to re-read,
/// and SIGHUP only logs that), and look for changed files every `interval`.
/// SIGHUP would otherwise end the process, and `systemctl reload` sends it.
pub fn watch(mut reloader: Option<CertificateReloader>, interval: Duration) -> std::io::Result<()> {
    let (mut wake, signal_end) = UnixStream::pair()?;
    signal_hook::low_level::pipe::register(signal_hook::consts::SIGHUP, signal_end)?;
    wake.set_read_timeout(Some(interval))?;
    std::thread::Builder::new()
        .name("tls-reload".into())
        .spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                match (wake.read(&mut buf), reloader.as_mut()) {
                    // Errors are logged by `reload`; the loop goes on.
                    (Ok(n), Some(reloader)) if n > 0 => {
                        let _ = reloader.reload(Trigger::Signal);
                    }
                    (Ok(n), None) if n > 0 => {
                        info!("SIGHUP: the certificate is generated (tls.generate); nothing to re-read");
                    }
                    (Ok(_), _) => return,
                    (Err(e), reloader) => match e.kind() {
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                            if let Some(reloader) = reloader {
                                let _ = reloader.reload_if_changed();
                            }
                        }
                        std::io::ErrorKind::Interrupted => {}
                        _ => {
                            warn!(error = %e, "certificate reload stopped: cannot wait for SIGHUP");
                            return;
                        }
                    },
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{server_tls, test_pairs, CertificateSource};

    /// A fresh pair in `dir` (see [`test_pairs::write`]); its fingerprint.
    fn write_pair(dir: &std::path::Path, mismatched: bool) -> CertificateFingerprint {
        test_pairs::write(dir, mismatched).2
    }

    fn start(dir: &std::path::Path) -> (Arc<RotatingCertificate>, CertificateReloader) {
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        let tls = server_tls(
            &CertificateSource::Files {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            },
            vec![b"h3".to_vec()],
        )
        .unwrap();
        let rotating = tls.rotating.unwrap();
        let reloader = CertificateReloader::new(cert_file, key_file, rotating.clone());
        (rotating, reloader)
    }

    #[test]
    fn a_good_new_pair_is_put_in_use_and_a_bad_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_pair(dir.path(), false);
        let (rotating, mut reloader) = start(dir.path());
        assert_eq!(rotating.fingerprint(), Some(a.clone()));

        let b = write_pair(dir.path(), false);
        assert_eq!(reloader.reload(Trigger::Signal).unwrap(), b);
        assert_eq!(rotating.fingerprint(), Some(b.clone()));

        write_pair(dir.path(), true);
        let err = reloader.reload(Trigger::Signal).unwrap_err();
        assert!(matches!(err, TlsError::Pair { .. }), "{err:?}");
        assert_eq!(
            rotating.fingerprint(),
            Some(b.clone()),
            "the old pair stays"
        );

        std::fs::remove_file(dir.path().join("key.pem")).unwrap();
        assert!(reloader.reload(Trigger::Signal).is_err());
        assert_eq!(rotating.fingerprint(), Some(b), "the old pair stays");
    }

    #[test]
    fn changed_files_are_reloaded_once_per_change() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), false);
        let (rotating, mut reloader) = start(dir.path());
        assert!(reloader.reload_if_changed().is_none(), "nothing changed");

        // Replaced by rename: a new inode, whatever the clock's resolution.
        let b = write_pair(dir.path(), false);
        assert_eq!(reloader.reload_if_changed().unwrap().unwrap(), b);
        assert_eq!(rotating.fingerprint(), Some(b.clone()));
        assert!(reloader.reload_if_changed().is_none(), "already loaded");

        // A refused pair is not retried until the files change again.
        write_pair(dir.path(), true);
        assert!(reloader.reload_if_changed().unwrap().is_err());
        assert!(reloader.reload_if_changed().is_none());
        assert_eq!(rotating.fingerprint(), Some(b));
    }
}
