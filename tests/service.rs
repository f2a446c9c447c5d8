//! The real binary as a service manager runs it: it tells systemd it is
//! ready (`NOTIFY_SOCKET`) only once it serves, and SIGHUP re-reads its
//! certificate files without dropping a connection.

mod support;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qumo::tls::{CertificateFingerprint, PinnedCertificate};
use support::Lines;

/// Every wait ends here at the latest: a relay that never answers fails
/// the test instead of hanging it.
const DEADLINE: Duration = Duration::from_secs(30);

struct Service {
    child: Child,
    log: Lines,
}

impl Service {
    /// `qumo-relay --config <dir>/relay.yaml` with `yaml`, and `env`.
    fn start(dir: &Path, yaml: &str, env: &[(&str, &std::ffi::OsStr)]) -> Service {
        let config = dir.join("relay.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_qumo-relay"))
            .arg("--config")
            .arg(&config)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let log = Lines::collect(child.stderr.take().unwrap());
        Service { child, log }
    }

    /// The UDP address from the "listening" line.
    fn address(&self) -> SocketAddr {
        let line = self
            .log
            .wait_for_nth("qumo-relay listening", 0, DEADLINE)
            .unwrap_or_else(|| panic!("relay did not start: {:#?}", self.log.snapshot()));
        let start = line.find("address=").expect("address field") + "address=".len();
        line[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// The `nth` log line holding every one of `needles`.
    async fn wait_log(&self, needles: &[&str], nth: usize) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let found = self
                .log
                .snapshot()
                .into_iter()
                .filter(|l| needles.iter().all(|n| l.contains(n)))
                .nth(nth);
            if let Some(line) = found {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needles:?}: {:#?}",
                self.log.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that accepts any certificate (the test reads which one it got).
fn client() -> quinn::Endpoint {
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(PinnedCertificate::any()))
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"moq-lite-04".to_vec()];
    // Every handshake a full one: a resumed session shows the certificate
    // of the session that issued its ticket, not the one served now.
    tls.resumption = rustls::client::Resumption::disabled();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

async fn connect(endpoint: &quinn::Endpoint, addr: SocketAddr) -> quinn::Connection {
    tokio::time::timeout(DEADLINE, endpoint.connect(addr, "localhost").unwrap())
        .await
        .expect("handshake within the deadline")
        .expect("handshake")
}

/// The SHA-256 of the leaf certificate the relay showed in the handshake.
fn served(conn: &quinn::Connection) -> String {
    let chain = conn
        .peer_identity()
        .unwrap()
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .unwrap();
    CertificateFingerprint::of_der(&chain[0]).hex
}

/// Write a self-signed pair (or a certificate with a stranger's key) to
/// `dir`/cert.pem and key.pem, each by rename as certificate tooling does,
/// and return the certificate's fingerprint.
fn write_pair(dir: &Path, mismatched: bool) -> String {
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
    for (name, text) in [("cert.pem", cert.pem()), ("key.pem", key.serialize_pem())] {
        let temporary = dir.join(format!("{name}.new"));
        std::fs::write(&temporary, text).unwrap();
        std::fs::rename(&temporary, dir.join(name)).unwrap();
    }
    CertificateFingerprint::of_der(cert.der()).hex
}

/// New handshakes until one shows `want`.
async fn wait_served(endpoint: &quinn::Endpoint, addr: SocketAddr, want: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let conn = connect(endpoint, addr).await;
        let got = served(&conn);
        conn.close(0u32.into(), b"");
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "still served {got}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sighup_rotates_the_certificate_and_keeps_connections() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_pair(dir.path(), false);
    let relay = Service::start(
        dir.path(),
        &format!(
            "server: {{address: \"127.0.0.1:0\", shards: 2}}\n\
             tls: {{cert_file: {0}/cert.pem, key_file: {0}/key.pem}}\n\
             relay: {{setup_timeout: 10m}}\n\
             logging: {{level: \"info,qumo=debug\"}}\n",
            dir.path().display()
        ),
        &[],
    );
    let addr = relay.address();
    let endpoint = client();
    let old = connect(&endpoint, addr).await;
    assert_eq!(served(&old), a);

    let b = write_pair(dir.path(), false);
    relay.signal(libc::SIGHUP);
    relay
        .wait_log(&["reloaded the TLS certificate", "SIGHUP", &b], 0)
        .await;
    wait_served(&endpoint, addr, &b).await;
    alive(&old).await;

    // A key that does not match: refused with a line, B stays.
    write_pair(dir.path(), true);
    relay.signal(libc::SIGHUP);
    relay
        .wait_log(&["refused the new TLS certificate", "SIGHUP"], 0)
        .await;
    let conn = connect(&endpoint, addr).await;
    assert_eq!(served(&conn), b, "the good pair stays in use");
    alive(&old).await;
}

/// A round trip on `conn`: data sent and acknowledged, so the relay still
/// holds the connection (a closed one fails the wait).
async fn alive(conn: &quinn::Connection) {
    let mut probe = conn.open_uni().await.expect("the connection is open");
    probe
        .write_all(b"ping")
        .await
        .expect("the connection is open");
    probe.finish().unwrap();
    let stopped = tokio::time::timeout(DEADLINE, probe.stopped())
        .await
        .expect("acknowledged within the deadline");
    assert!(stopped.is_ok(), "the connection is open: {stopped:?}");
    assert!(conn.close_reason().is_none());
}

#[tokio::test]
async fn changed_certificate_files_are_picked_up_without_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), false);
    let relay = Service::start(
        dir.path(),
        &format!(
            "server: {{address: \"127.0.0.1:0\", shards: 1}}\n\
             tls: {{cert_file: {0}/cert.pem, key_file: {0}/key.pem}}\n",
            dir.path().display()
        ),
        &[],
    );
    let addr = relay.address();
    let b = write_pair(dir.path(), false);
    relay
        .wait_log(&["reloaded the TLS certificate", "files changed", &b], 0)
        .await;
    wait_served(&client(), addr, &b).await;
}

#[tokio::test]
async fn systemd_hears_ready_once_the_relay_serves() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let relay = Service::start(
        dir.path(),
        "server: {address: \"127.0.0.1:0\", shards: 2}\n",
        &[("NOTIFY_SOCKET", socket_path.as_os_str())],
    );
    let deadline = Instant::now() + DEADLINE;
    let mut buf = [0u8; 512];
    let message = loop {
        match socket.recv(&mut buf) {
            Ok(n) => break String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(_) => assert!(
                Instant::now() < deadline,
                "no readiness message: {:#?}",
                relay.log.snapshot()
            ),
        }
        tokio::task::yield_now().await;
    };
    assert!(message.lines().any(|l| l == "READY=1"), "{message:?}");
    // Ready means serving: the handshake right after it succeeds.
    let conn = connect(&client(), relay.address()).await;
    assert!(conn.close_reason().is_none());
}
