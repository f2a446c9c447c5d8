//! Server TLS: a `rustls::ServerConfig` for QUIC, built from PEM files or
//! from a freshly generated self-signed certificate.
//!
//! QUIC requires TLS 1.3, so nothing older is offered. The crypto provider is
//! `ring`, the one quinn-proto is built with.
//!
//! A generated certificate exists for WebTransport clients: browsers accept a
//! self-signed certificate only when it is pinned by its SHA-256 hash
//! (`serverCertificateHashes`), and only if it is ECDSA and valid for at most
//! 14 days. So the certificate is ECDSA P-256, valid for just under 14 days
//! from start-up, and its fingerprint is returned for the relay to publish.
//!
//! A certificate from files can be replaced while the relay runs: the
//! server configuration resolves it through a [`RotatingCertificate`] on
//! every handshake, so a new pair applies to the next handshake on every
//! shard and open connections keep theirs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Where the server certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// A PEM certificate chain (leaf first) and a PEM private key (PKCS#8,
    /// PKCS#1 or SEC1). Relative paths are relative to the working directory.
    Files {
        /// The certificate chain.
        cert_file: PathBuf,
        /// The private key of the leaf certificate.
        key_file: PathBuf,
    },
    /// Generate a self-signed certificate for these names (DNS names or IP
    /// addresses) at start-up.
    Generate {
        /// Subject alternative names; at least one.
        names: Vec<String>,
    },
}

/// Which of the two PEM files an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemFile {
    /// The certificate chain.
    Certificate,
    /// The private key.
    PrivateKey,
}

impl std::fmt::Display for PemFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PemFile::Certificate => "certificate file",
            PemFile::PrivateKey => "private key file",
        })
    }
}

/// Why server TLS could not be set up. Every variant that is about a file
/// names it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file does not exist or cannot be read.
    #[error("cannot read {which} {}: {source}", path.display())]
    Read {
        which: PemFile,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but holds nothing usable.
    #[error("unusable {which} {}: {reason}", path.display())]
    Parse {
        which: PemFile,
        path: PathBuf,
        reason: String,
    },
    /// Both files parsed, but rustls refuses the pair (the key does not match
    /// the leaf certificate, or its algorithm is unsupported).
    #[error(
        "certificate {} and private key {} cannot be used together: {source}",
        cert_file.display(),
        key_file.display()
    )]
    Pair {
        cert_file: PathBuf,
        key_file: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// rcgen refused to generate the certificate (e.g. a name that is neither
    /// an IP address nor an ASCII DNS name).
    #[error("cannot generate a certificate for {names:?}: {source}")]
    Generate {
        names: Vec<String>,
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused the configuration for another reason.
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// SHA-256 of a certificate's DER encoding, the form in which browsers pin
/// certificates (`serverCertificateHashes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFingerprint {
    /// The raw digest.
    pub sha256: [u8; 32],
    /// The digest as 64 lowercase hex digits, no separators.
    pub hex: String,
}

impl CertificateFingerprint {
    /// Fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest.as_ref());
        let mut hex = String::with_capacity(64);
        for byte in sha256 {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{byte:02x}");
        }
        Self { sha256, hex }
    }
}

/// A client-side verifier for a relay's self-signed certificate: it accepts
/// the certificate whose [`CertificateFingerprint`] is pinned (or any, with
/// no pin, for `--tls-disable-verify` style testing), and still checks the
/// handshake signature against it, as a browser using
/// `serverCertificateHashes` does. For qumo's own clients: the load
/// generator and the tests.
#[derive(Debug)]
pub struct PinnedCertificate {
    pin: Option<[u8; 32]>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl PinnedCertificate {
    /// Accept only the certificate with this SHA-256.
    pub fn new(sha256: [u8; 32]) -> Self {
        Self::with(Some(sha256))
    }

    /// Accept any certificate (the signature is still checked).
    pub fn any() -> Self {
        Self::with(None)
    }

    fn with(pin: Option<[u8; 32]>) -> Self {
        Self {
            pin,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

/// A TLS-over-TCP client for tests of the TCP side: any certificate,
/// offering `alpn`.
#[cfg(test)]
pub(crate) fn any_certificate_client(alpn: &[&[u8]]) -> rustls::ClientConnection {
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(std::sync::Arc::new(PinnedCertificate::any()))
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap()
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let seen = CertificateFingerprint::of_der(end_entity);
        if seen.sha256 == pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate sha256 {} is not the pinned one",
                seen.hex
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used by QUIC".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The result of [`server_tls`].
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Ready for `quinn_proto::crypto::rustls::QuicServerConfig::try_from`.
    pub config: Arc<rustls::ServerConfig>,
    /// Fingerprint of the leaf certificate when it was generated here, so
    /// that clients can pin it; `None` for certificates loaded from files.
    pub fingerprint: Option<CertificateFingerprint>,
    /// For certificates loaded from files: the slot every handshake reads,
    /// to put a new pair into while the relay runs.
    pub rotating: Option<Arc<RotatingCertificate>>,
}

/// The server's certificate chain and key, replaceable while the relay
/// runs. Each handshake takes the current pair (a read lock held for an
/// `Arc` clone), so a replacement applies to the next handshake on every
/// shard without restarting anything.
#[derive(Debug)]
pub struct RotatingCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

impl RotatingCertificate {
    /// Start with `key`.
    pub fn new(key: CertifiedKey) -> Self {
        Self {
            current: RwLock::new(Arc::new(key)),
        }
    }

    /// The pair handshakes use now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        // A writer cannot panic while holding the lock (it only stores an
        // Arc), so a poisoned lock still holds a whole value.
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Make `key` the pair for every later handshake.
    pub fn replace(&self, key: CertifiedKey) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(key);
    }

    /// Fingerprint of the current leaf certificate.
    pub fn fingerprint(&self) -> Option<CertificateFingerprint> {
        self.current()
            .cert
            .first()
            .map(|leaf| CertificateFingerprint::of_der(leaf))
    }
}

impl ResolvesServerCert for RotatingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Read a PEM certificate chain and its private key and check that they
/// belong together, as [`server_tls`] does at start-up: what a reload puts
/// into a [`RotatingCertificate`].
pub fn load_certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_certificates(cert_file)?;
    let key = load_private_key(key_file)?;
    CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider()).map_err(
        |source| TlsError::Pair {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            source,
        },
    )
}

/// How long a generated certificate was valid before start-up, to tolerate
/// clients whose clocks run a little behind ours.
const BACKDATE: Duration = Duration::from_secs(60);

/// Total validity of a generated certificate. Browsers refuse hash-pinned
/// certificates valid for more than 14 days, so stay a couple of minutes
/// short of that.
pub const GENERATED_VALIDITY: Duration = Duration::from_secs(14 * 24 * 3600 - 120);

/// Build the server TLS configuration: TLS 1.3 only, no client
/// authentication, `alpn` offered in order (rustls picks the first protocol
/// in this list that the client also offers, so put the newest first).
///
/// A generated certificate's fingerprint is logged at info level.
pub fn server_tls(source: &CertificateSource, alpn: Vec<Vec<u8>>) -> Result<ServerTls, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth();
    let (mut config, fingerprint, rotating) = match source {
        CertificateSource::Files {
            cert_file,
            key_file,
        } => {
            let rotating = Arc::new(RotatingCertificate::new(load_certified_key(
                cert_file, key_file,
            )?));
            let config = builder.with_cert_resolver(rotating.clone());
            (config, None, Some(rotating))
        }
        CertificateSource::Generate { names } => {
            let (cert, key) = generate_self_signed(names, SystemTime::now())?;
            let fingerprint = CertificateFingerprint::of_der(&cert);
            tracing::info!(
                names = ?names,
                sha256 = %fingerprint.hex,
                valid_for = %humantime::format_duration(GENERATED_VALIDITY),
                "generated a self-signed certificate; clients must pin it by its SHA-256 fingerprint"
            );
            let config = builder.with_single_cert(vec![cert], key)?;
            (config, Some(fingerprint), None)
        }
    };
    config.alpn_protocols = alpn;
    Ok(ServerTls {
        config: Arc::new(config),
        fingerprint,
        rotating,
    })
}

/// The ALPN the TCP side offers: WebSocket upgrades and the certificate
/// hash are HTTP/1.1 (RFC 8441's WebSocket over HTTP/2 is not served).
pub const TCP_ALPN: &[u8] = b"http/1.1";

/// The TLS configuration for the TCP side of the port (`wss://`,
/// `https://`): the QUIC configuration's certificate (the same resolver, so
/// a reloaded pair applies to both), ALPN `http/1.1`, and TLS 1.2 beside
/// 1.3, since only QUIC requires 1.3 and some WebSocket clients still stop
/// at 1.2.
pub fn tcp_server_tls(quic: &rustls::ServerConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(quic.crypto_provider().clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(quic.cert_resolver.clone());
    config.alpn_protocols = vec![TCP_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file, in file order (leaf first). At least one.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let which = PemFile::Certificate;
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(which, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(which, path, e))?;
    if chain.is_empty() {
        return Err(TlsError::Parse {
            which,
            path: path.to_owned(),
            reason: "no \"BEGIN CERTIFICATE\" section found".into(),
        });
    }
    Ok(chain)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Parse {
            which: PemFile::PrivateKey,
            path: path.to_owned(),
            reason: "no PKCS#8, PKCS#1 or SEC1 private key section found".into(),
        },
        other => pem_error(PemFile::PrivateKey, path, other),
    })
}

fn pem_error(which: PemFile, path: &Path, error: pem::Error) -> TlsError {
    match error {
        pem::Error::Io(source) => TlsError::Read {
            which,
            path: path.to_owned(),
            source,
        },
        other => TlsError::Parse {
            which,
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// A self-signed ECDSA P-256 certificate for `names`, valid from `now - 1
/// minute` for [`GENERATED_VALIDITY`], and its PKCS#8 key.
pub fn generate_self_signed(
    names: &[String],
    now: SystemTime,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let generate_error = |source| TlsError::Generate {
        names: names.to_vec(),
        source,
    };
    let not_before = to_offset_date_time(now.checked_sub(BACKDATE).unwrap_or(now));
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(generate_error)?;
    params.not_before = not_before;
    let validity = i64::try_from(GENERATED_VALIDITY.as_secs()).unwrap_or(0);
    params.not_after = not_before
        .checked_add(time::Duration::seconds(validity))
        .unwrap_or(not_before);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "qumo self-signed");
    let key_pair =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate_error)?;
    let cert = params.self_signed(&key_pair).map_err(generate_error)?;
    let key = PrivatePkcs8KeyDer::from(key_pair.serialize_der());
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(key)))
}

/// Whole seconds are enough for certificate validity (X.509 stores seconds).
fn to_offset_date_time(t: SystemTime) -> time::OffsetDateTime {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Certificate files for tests of this module and of `tls_reload`.
#[cfg(test)]
pub(crate) mod test_pairs {
    use std::path::{Path, PathBuf};

    use super::CertificateFingerprint;

    /// Write a fresh self-signed certificate for `localhost` and a key (its
    /// own, or a stranger's when `mismatched`) as `dir`/cert.pem and
    /// key.pem, each by rename as an operator's tooling would; returns the
    /// files and the certificate's fingerprint.
    pub fn write(dir: &Path, mismatched: bool) -> (PathBuf, PathBuf, CertificateFingerprint) {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        let key = if mismatched {
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
        } else {
            key_pair
        };
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        for (path, text) in [(&cert_file, cert.pem()), (&key_file, key.serialize_pem())] {
            let temporary = path.with_extension("pem.new");
            std::fs::write(&temporary, text).unwrap();
            std::fs::rename(&temporary, path).unwrap();
        }
        (
            cert_file,
            key_file,
            CertificateFingerprint::of_der(cert.der()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alpn() -> Vec<Vec<u8>> {
        vec![b"moq-lite-06".to_vec(), b"h3".to_vec()]
    }

    fn localhost() -> Vec<String> {
        vec!["localhost".to_string()]
    }

    #[test]
    fn generated_certificate_is_p256_and_valid_for_at_most_14_days() {
        let now = SystemTime::now();
        let (cert, _key) = generate_self_signed(&localhost(), now).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).unwrap();

        let spki = &parsed.tbs_certificate.subject_pki;
        assert_eq!(
            spki.algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .unwrap();
        assert_eq!(curve, x509_parser::oid_registry::OID_EC_P256);

        let validity = parsed.validity();
        let not_before = validity.not_before.timestamp();
        let not_after = validity.not_after.timestamp();
        let now_secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(not_after - not_before <= 14 * 24 * 3600);
        assert!(not_before <= now_secs, "valid from start-up at the latest");
        assert!(
            not_after - now_secs < 14 * 24 * 3600,
            "under 14 days from now"
        );
        assert!(not_after - now_secs > 13 * 24 * 3600);
    }

    #[test]
    fn generated_configuration_reports_the_sha256_of_the_certificate_der() {
        let tls = server_tls(&CertificateSource::Generate { names: localhost() }, alpn()).unwrap();
        let fingerprint = tls.fingerprint.unwrap();
        assert_eq!(fingerprint.hex.len(), 64);
        assert_eq!(
            fingerprint.hex,
            fingerprint
                .sha256
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        assert_eq!(tls.config.alpn_protocols, alpn());
    }

    #[test]
    fn fingerprint_is_the_sha256_of_the_der() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let f = CertificateFingerprint::of_der(b"abc");
        assert_eq!(
            f.hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let (cert, _) = generate_self_signed(&localhost(), SystemTime::now()).unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
        assert_eq!(
            CertificateFingerprint::of_der(cert.as_ref()).sha256,
            digest.as_ref()
        );
    }

    #[test]
    fn certificate_and_key_load_from_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_file, key_file, _) = test_pairs::write(dir.path(), false);

        let tls = server_tls(
            &CertificateSource::Files {
                cert_file,
                key_file,
            },
            alpn(),
        )
        .unwrap();
        assert!(tls.fingerprint.is_none());
        assert_eq!(tls.config.alpn_protocols, alpn());
    }

    #[test]
    fn missing_certificate_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let cert_file = dir.path().join("nope-cert.pem");
        let key_file = dir.path().join("nope-key.pem");
        let err = server_tls(
            &CertificateSource::Files {
                cert_file: cert_file.clone(),
                key_file,
            },
            alpn(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, TlsError::Read { which: PemFile::Certificate, path, .. } if *path == cert_file),
            "{err:?}"
        );
        assert!(err.to_string().contains("nope-cert.pem"), "{err}");
    }

    #[test]
    fn missing_key_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(localhost())
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        let cert_file = dir.path().join("cert.pem");
        std::fs::write(&cert_file, cert.pem()).unwrap();
        let key_file = dir.path().join("nope-key.pem");
        let err = server_tls(
            &CertificateSource::Files {
                cert_file,
                key_file,
            },
            alpn(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::Read {
                    which: PemFile::PrivateKey,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("nope-key.pem"), "{err}");
    }

    #[test]
    fn file_without_pem_sections_is_unusable_not_missing() {
        let dir = tempfile::tempdir().unwrap();
        let cert_file = dir.path().join("cert.pem");
        std::fs::write(&cert_file, "hello\n").unwrap();
        let err = load_certificates(&cert_file).unwrap_err();
        assert!(matches!(err, TlsError::Parse { .. }), "{err:?}");
        let err = load_private_key(&cert_file).unwrap_err();
        assert!(matches!(err, TlsError::Parse { .. }), "{err:?}");
    }

    #[test]
    fn a_rotating_certificate_serves_the_pair_put_into_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_file, key_file, _) = test_pairs::write(dir.path(), false);
        let tls = server_tls(
            &CertificateSource::Files {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            },
            alpn(),
        )
        .unwrap();
        let rotating = tls.rotating.unwrap();
        let first = rotating.fingerprint().unwrap();
        assert_eq!(
            first,
            CertificateFingerprint::of_der(&load_certificates(&cert_file).unwrap()[0])
        );

        let dir_b = dir.path().join("b");
        std::fs::create_dir(&dir_b).unwrap();
        let (cert_b, key_b, _) = test_pairs::write(&dir_b, false);
        rotating.replace(load_certified_key(&cert_b, &key_b).unwrap());
        let second = rotating.fingerprint().unwrap();
        assert_ne!(second, first);
        assert_eq!(
            second,
            CertificateFingerprint::of_der(&load_certificates(&cert_b).unwrap()[0])
        );
    }

    #[test]
    fn a_pair_that_does_not_match_is_not_loaded_for_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_file, key_file, _) = test_pairs::write(dir.path(), true);
        let err = load_certified_key(&cert_file, &key_file).err().unwrap();
        assert!(matches!(err, TlsError::Pair { .. }), "{err:?}");
    }

    #[test]
    fn key_that_does_not_match_the_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_file, key_file, _) = test_pairs::write(dir.path(), true);
        let err = server_tls(
            &CertificateSource::Files {
                cert_file,
                key_file,
            },
            alpn(),
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::Pair { .. }), "{err:?}");
    }
}
