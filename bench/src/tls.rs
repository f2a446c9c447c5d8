//! Client TLS: the relay's certificate checked by roots, by a pinned SHA-256,
//! or not at all; ALPN is the moq-lite version.

use std::sync::Arc;

use qumo::lite::Version;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::args::TlsCheck;

const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts a certificate whose DER hashes to `pin` (or any, with no pin),
/// and still checks the handshake signature against it.
#[derive(Debug)]
struct Pinned {
    pin: Option<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
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
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if digest.as_ref() == pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate sha256 {} is not the pinned one",
                hex(digest.as_ref())
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
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A client config speaking `version`'s ALPN, checking as `check` says.
pub fn client_config(
    check: &TlsCheck,
    version: Version,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?;
    let mut config = match check {
        TlsCheck::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pin: Some(*pin),
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        TlsCheck::Disabled => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pin: None,
                algorithms: provider.signature_verification_algorithms,
            }))
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
    config.alpn_protocols = vec![version.alpn().as_bytes().to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let algorithms = provider().signature_verification_algorithms;
        let ok = Pinned {
            pin: Some(pin),
            algorithms,
        };
        assert!(ok
            .verify_server_cert(&cert, &[], &name, &[], UnixTime::now())
            .is_ok());
        let wrong = Pinned {
            pin: Some([0; 32]),
            algorithms,
        };
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
