//! The real `qumo-relay` binary publishes its generated certificate's
//! SHA-256 at `http://host:port/certificate.sha256`, on TCP at the QUIC
//! port number, as browsers and moq-native clients expect.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A port free on both TCP and UDP at 127.0.0.1 (for now).
fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn spawn_relay(dir: &Path, port: u16, tls: &str) -> Child {
    spawn_relay_env(dir, port, tls, &[])
}

/// [`spawn_relay`] with environment overrides (`QUMO_SECTION__KEY`).
fn spawn_relay_env(dir: &Path, port: u16, tls: &str, env: &[(&str, &str)]) -> Child {
    let config = dir.join("relay.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  address: \"127.0.0.1:{port}\"\n  shards: 1\n  shutdown_timeout: 1s\ntls:\n{tls}logging:\n  level: info\n"
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_qumo-relay"))
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Wait (boundedly) until the relay listens; the logged fingerprint, if
/// any, and the QUIC address.
fn wait_listening(child: &mut Child) -> (Option<String>, SocketAddr) {
    let log = support::Lines::collect(child.stderr.take().unwrap());
    let listening = log
        .wait_for_nth("qumo-relay listening", 0, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("the relay did not start: {:#?}", log.snapshot()));
    // The certificate is made, and its hash logged, before the relay listens.
    let fingerprint = log
        .snapshot()
        .iter()
        .find(|l| l.contains("sha256="))
        .map(|l| support::field(l, "sha256"));
    let addr = support::field(&listening, "address").parse().unwrap();
    (fingerprint, addr)
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// One HTTP/1.1 exchange; the whole response as text.
fn http(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("the HTTP side listens");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the relay did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_relay_serves_its_logged_fingerprint_over_http_on_the_quic_port_number() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut relay = spawn_relay(dir.path(), port, "  generate: [localhost]\n");
    let (fingerprint, quic) = wait_listening(&mut relay);
    let fingerprint = fingerprint.expect("fingerprint logged");
    assert_eq!(quic.port(), port);
    assert_eq!(fingerprint.len(), 64);

    let response = http(
        quic,
        "GET /certificate.sha256 HTTP/1.1\r\nHost: localhost\r\nOrigin: https://example.com\r\n\r\n",
    );
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a complete response");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nAccess-Control-Allow-Origin: *"),
        "{head}"
    );
    assert_eq!(body, fingerprint, "the body is the bare hex digest");

    let missing = http(quic, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(missing.starts_with("HTTP/1.1 404 "), "{missing}");
    stop(relay);
}

#[test]
fn a_taken_tcp_port_stops_the_relay_at_start_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _taken = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mut relay = spawn_relay(dir.path(), port, "  generate: [localhost]\n");
    let status = wait_exit(&mut relay);
    let mut log = String::new();
    relay
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("cannot serve /certificate.sha256 on TCP"),
        "{log}"
    );
}

#[test]
fn a_certificate_from_files_is_not_published() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    let tls = format!(
        "  cert_file: {}\n  key_file: {}\n",
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display()
    );
    // TCP still takes WebSocket upgrades, but has no hash to give.
    let port = free_port();
    let mut relay = spawn_relay(dir.path(), port, &tls);
    let (fingerprint, quic) = wait_listening(&mut relay);
    assert_eq!(fingerprint, None);
    let answer = http(
        quic,
        "GET /certificate.sha256 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    stop(relay);

    // Without the WebSocket, nothing listens on TCP.
    let port = free_port();
    let mut relay = spawn_relay_env(
        dir.path(),
        port,
        &tls,
        &[("QUMO_SERVER__WEBSOCKET", "false")],
    );
    let (fingerprint, quic) = wait_listening(&mut relay);
    assert_eq!(fingerprint, None);
    assert!(
        TcpStream::connect(quic).is_err(),
        "nothing listens on TCP without a generated certificate or the WebSocket"
    );
    stop(relay);
}
