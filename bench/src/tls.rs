//! Client TLS: the relay's certificate checked by roots, by a pinned SHA-256,
//! or not at all; ALPN is the moq-lite version.

use std::sync::Arc;

use qumo::lite::Version;
use qumo::tls::PinnedCertificate;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::args::TlsCheck;

const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config speaking `version`'s ALPN, checking as `check` says.
pub fn client_config(
    check: &TlsCheck,
    version: Version,
) -> Result<Arc<rustls::ClientConfig>, String> {
    client_config_alpn(check, version.alpn().as_bytes())
}

/// A client config offering `alpn` only, checking as `check` says.
pub fn client_config_alpn(
    check: &TlsCheck,
    alpn: &[u8],
) -> Result<Arc<rustls::ClientConfig>, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?;
    let mut config = match check {
        TlsCheck::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate::new(*pin)))
            .with_no_client_auth(),
        TlsCheck::Disabled => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate::any()))
            .with_no_client_auth(),
        TlsCheck::Roots(file) => {
            let path = file
                .clone()
                .unwrap_or_else(|| std::path::PathBuf::from(SYSTEM_ROOTS));
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(format!(
                    "{}: no usable root certificates (use --fingerprint or --tls-disable-verify)",
                    path.display()
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{ServerName, UnixTime};

    #[test]
    fn the_client_offers_exactly_the_chosen_version() {
        let c = client_config(&TlsCheck::Disabled, Version::Lite06).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"moq-lite-06".to_vec()]);
    }

    #[test]
    fn a_pinned_verifier_accepts_only_its_certificate() {
        let cert = CertificateDer::from(vec![1u8, 2, 3]);
        let digest = ring::digest::digest(&ring::digest::SHA256, &[1, 2, 3]);
        let mut pin = [0u8; 32];
        pin.copy_from_slice(digest.as_ref());
        let name = ServerName::try_from("localhost").unwrap();
        let ok = PinnedCertificate::new(pin);
        assert!(ok
            .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
            .is_ok());
        let wrong = PinnedCertificate::new([0; 32]);
        assert!(wrong
            .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
            .is_err());
    }

    #[test]
    fn a_missing_root_file_is_reported_by_name() {
        let err = client_config(
            &TlsCheck::Roots(Some("/nonexistent/roots.pem".into())),
            Version::Lite05,
        )
        .unwrap_err();
        assert!(err.contains("/nonexistent/roots.pem"), "{err}");
    }
}
