//! The real `qumo-relay` binary: it serves QUIC with its generated
//! certificate, and SIGTERM closes every connection with the shutdown code
//! and exits 0 within its bound.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

struct Relay {
    child: Child,
    addr: SocketAddr,
    fingerprint: String,
    _dir: tempfile::TempDir,
}

/// Start the relay on an ephemeral port; read its log until it says where it
/// listens, noting the certificate fingerprint on the way.
fn start_relay() -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.yaml");
    std::fs::write(
        &config,
        "server:\n  address: \"127.0.0.1:0\"\n  shards: 2\n  shutdown_timeout: 2s\ntls:\n  generate: [localhost]\nlogging:\n  level: info\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_qumo-relay"))
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut fingerprint = None;
    let mut seen = Vec::new();
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("relay exited early: {seen:#?}"))
            .unwrap();
        if let Some(rest) = line.split("sha256=").nth(1) {
            fingerprint = rest.split_whitespace().next().map(str::to_string);
        }
        if line.contains("qumo-relay listening") {
            let rest = line.split("address=").nth(1).expect("address logged");
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
        seen.push(line);
    };
    // Keep draining the log so the relay never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Relay {
        child,
        addr,
        fingerprint: fingerprint.expect("fingerprint logged"),
        _dir: dir,
    }
}

/// Accepts exactly the certificate whose SHA-256 the relay logged, as a
/// browser pinning `serverCertificateHashes` would.
#[derive(Debug)]
struct PinnedHash(String);

impl ServerCertVerifier for PinnedHash {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        if hex == self.0 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "certificate hash {hex} not pinned"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used by QUIC".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn client(fingerprint: &str, alpn: &[u8]) -> quinn::Endpoint {
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(PinnedHash(fingerprint.to_string())))
    .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

#[tokio::test]
async fn sigterm_closes_clients_with_the_shutdown_code_and_exits_zero() {
    let mut relay = start_relay();
    let endpoint = client(&relay.fingerprint, b"moq-lite-04");
    let conn = endpoint
        .connect(relay.addr, "localhost")
        .unwrap()
        .await
        .expect("handshake with the pinned certificate");
    assert_eq!(
        conn.handshake_data()
            .unwrap()
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .unwrap()
            .protocol
            .as_deref(),
        Some(&b"moq-lite-04"[..])
    );

    // Until the client has confirmed the handshake, a close also travels
    // in Handshake packets, which can only carry a transport APPLICATION_ERROR
    // without the code (RFC 9000 10.2.3). Get 1-RTT data acknowledged first.
    let mut probe = conn.open_uni().await.unwrap();
    probe.write_all(b"ping").await.unwrap();
    probe.finish().unwrap();
    assert_eq!(probe.stopped().await.unwrap(), None);

    let started = Instant::now();
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(relay.child.id() as i32, libc::SIGTERM) },
        0
    );
    match conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(0));
        }
        other => panic!("expected an application close, got {other:?}"),
    }
    let status = tokio::task::spawn_blocking(move || relay.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_client_offering_no_relay_protocol_is_refused_in_the_handshake() {
    let mut relay = start_relay();
    let endpoint = client(&relay.fingerprint, b"not-moq");
    let attempt = endpoint.connect(relay.addr, "localhost").unwrap().await;
    assert!(
        attempt.is_err(),
        "handshake without a common ALPN succeeded"
    );
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
}
