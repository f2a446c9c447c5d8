//! The WebSocket transport (QMux draft-00 over `ws://`) against the real
//! binary: moq-clock 0.10.21 with `--websocket-enabled` and a `ws://` URL
//! publishes and subscribes through qumo beside raw-QUIC moq-clocks, and a
//! raw WebSocket client (tungstenite) that sends an oversized or malformed
//! message is closed with the protocol's error while the others go on.
//! Over `wss://` (TLS on the same TCP port) moq-clock publishes to a QUIC
//! subscriber and subscribes, while half and garbage TLS handshakes are
//! cut and counted.
//! The library's own client end (`qumo::websocket::client`, which
//! qumo-bench's `--transport ws` dials with) opens a session too.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qumo::lite::{
    BidiType, Decode, DecodeError, Encode, Limits, Probe, ProbeLevel, Role, Setup, UniType, Version,
};
use qumo::metrics::RelayStats;
use qumo::qmux::QmuxLimits;
use qumo::session::transport::{RecvStream as _, SendStream as _, Transport as _};
use qumo::websocket::client;

use support::http::{admin_addr, sections, total, wait_metrics};
use support::{moq_clock, Client, Relay};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// The TCP listener's address: with port 0 it is a port of its own.
fn ws_addr(relay: &Relay) -> SocketAddr {
    let line = relay
        .wait_for(
            "serving the certificate hash over HTTP",
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("no TCP listener:\n{}", relay.log()));
    assert!(line.contains("websocket=true"), "{line}");
    support::field(&line, "addr").parse().unwrap()
}

/// moq-clock over the WebSocket only (a `ws://` URL has no QUIC to race).
fn ws_clock(addr: SocketAddr, broadcast: &str, mode: &str) -> Client {
    support::spawn_moq_clock(&[
        "--url",
        &format!("ws://{addr}"),
        "--broadcast",
        broadcast,
        "--websocket-enabled",
        mode,
    ])
}

/// moq-clock over `wss://`: TLS on the TCP side, the relay's generated
/// certificate taken unverified (`--tls-disable-verify`; moq-native's
/// WebSocket uses the same TLS settings as its QUIC). moq-native's QUIC
/// refuses a `wss://` URL, so the WebSocket is its only way in. Given
/// `https://` it races QUIC against `wss://` on the same port number; here
/// the TCP listener has a port of its own, with no QUIC behind it, so the
/// WebSocket wins.
fn wss_clock(scheme: &str, addr: SocketAddr, broadcast: &str, mode: &str) -> Client {
    support::spawn_moq_clock(&[
        "--url",
        &format!("{scheme}://localhost:{}", addr.port()),
        "--broadcast",
        broadcast,
        "--websocket-enabled",
        "--tls-disable-verify=true",
        mode,
    ])
}

/// Wait for a `session open` line with `transport="..."`; the count of
/// such lines.
fn wait_sessions(relay: &Relay, transport: &str, n: usize) {
    let needle = format!("transport=\"{transport}\"");
    relay
        .wait_for_nth_all(&["session open", &needle], n - 1, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no {transport} session:\n{}", relay.log()));
}

fn assert_ticks(subscriber: &Client, relay: &Relay) {
    let ticks = subscriber.ticks(3, Duration::from_secs(15));
    assert!(
        ticks.len() >= 3,
        "got {ticks:?}; relay log:\n{}",
        relay.log()
    );
}

#[test]
fn moq_clock_over_websocket_publishes_to_a_quic_subscriber() {
    let relay = Relay::start(2);
    let ws = ws_addr(&relay);
    let _publisher = ws_clock(ws, "ws-pub", "publish");
    relay
        .wait_for("broadcast=ws-pub active=true", Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no announcement:\n{}", relay.log()));
    wait_sessions(&relay, "websocket", 1);
    let subscriber = moq_clock(&format!("moql://{}", relay.addr), "ws-pub", "subscribe");
    assert_ticks(&subscriber, &relay);
    wait_sessions(&relay, "quic", 1);
    assert_eq!(relay.count("transport=\"websocket\""), 1);
}

#[test]
fn a_quic_publisher_reaches_moq_clock_over_websocket() {
    let relay = Relay::start(2);
    let ws = ws_addr(&relay);
    let _publisher = moq_clock(&format!("moql://{}", relay.addr), "ws-sub", "publish");
    relay
        .wait_for("broadcast=ws-sub active=true", Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no announcement:\n{}", relay.log()));
    let subscriber = ws_clock(ws, "ws-sub", "subscribe");
    assert_ticks(&subscriber, &relay);
    wait_sessions(&relay, "websocket", 1);
    assert_eq!(relay.count("transport=\"quic\""), 1);
}

/// Read chunks from `recv` until `decode` takes what came so far (it
/// answers `Short` for a message not all there yet).
async fn read_message<T>(
    recv: &mut qumo::qmux::QmuxRecv,
    what: &str,
    decode: impl Fn(&[u8]) -> Result<T, DecodeError>,
) -> T {
    let mut bytes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = monoio::time::timeout(left, recv.read_chunk(1024))
            .await
            .unwrap_or_else(|_| panic!("no whole {what} from the relay within 10 s"))
            .unwrap()
            .unwrap_or_else(|| panic!("the relay's stream ended before a whole {what}"));
        bytes.extend_from_slice(&chunk);
        match decode(&bytes) {
            Ok(message) => return message,
            Err(DecodeError::Short) => continue,
            Err(e) => panic!("the relay's {what}: {e}"),
        }
    }
}

/// The client end masks its frames (a server end would not, and the relay
/// would close it), sends SETUP, and reads the relay's SETUP back: it
/// offers PROBE reports, and a PROBE stream reports the TCP socket's
/// figures.
#[test]
fn the_library_client_opens_a_session_over_websocket() {
    let relay = Relay::start(1);
    let ws = ws_addr(&relay);
    let mut runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    let version = Version::Lite05;
    let (setup, probe) = runtime.block_on(async move {
        let stats = Arc::new(RelayStats::default());
        let transport =
            client::connect(ws, "localhost", "/", version, QmuxLimits::default(), stats)
                .await
                .unwrap_or_else(|e| panic!("dial: {e}"));
        let limits = Limits::default();
        let mut setup = Vec::new();
        UniType::Setup.encode(&mut setup, version).unwrap();
        Setup {
            role: Some(Role::Subscriber),
            ..Setup::default()
        }
        .encode(&mut setup, version)
        .unwrap();
        let mut send = transport.open_uni().await.unwrap();
        send.write_all(&setup).await.unwrap();
        send.finish().unwrap();
        let (mut recv, _) = monoio::time::timeout(Duration::from_secs(10), transport.accept_uni())
            .await
            .expect("no stream from the relay within 10 s")
            .unwrap();
        let setup = read_message(&mut recv, "SETUP", |bytes| {
            let (ty, used) = UniType::decode(bytes, version, &limits)?;
            assert_eq!(ty, UniType::Setup);
            Setup::decode(&bytes[used..], version, &limits).map(|(setup, _)| setup)
        })
        .await;

        let (mut send, mut recv) = transport.open_bi().await.unwrap();
        let mut open = Vec::new();
        BidiType::Probe.encode(&mut open, version).unwrap();
        send.write_all(&open).await.unwrap();
        let probe = read_message(&mut recv, "PROBE", |bytes| {
            Probe::decode(bytes, version, &limits).map(|(probe, _)| probe)
        })
        .await;
        (setup, probe)
    });
    assert_eq!(setup.probe, ProbeLevel::Report);
    // cwnd x mss x 8 / rtt on loopback: known, and above nothing. The RTT
    // in whole milliseconds may be 0 on loopback, but it is there.
    assert!(probe.bitrate.is_some_and(|b| b > 0), "{probe:?}");
    assert!(probe.rtt.is_some(), "{probe:?}");
    wait_sessions(&relay, "websocket", 1);
}

type Raw = WebSocket<TcpStream>;

/// A raw WebSocket client that offers `qmux-00.moq-lite-04`.
fn raw_client(addr: SocketAddr) -> Raw {
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "qmux-00.moq-lite-04".parse().unwrap(),
    );
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (socket, response) = tungstenite::client(request, stream).unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "qmux-00.moq-lite-04"
    );
    socket
}

/// Read until the relay closes: the binary messages it sent, and its
/// close code.
fn read_to_close(socket: &mut Raw) -> (Vec<Vec<u8>>, Option<CloseCode>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut messages = Vec::new();
    while Instant::now() < deadline {
        match socket.read() {
            Ok(Message::Binary(bytes)) => messages.push(bytes.to_vec()),
            Ok(Message::Close(frame)) => return (messages, frame.map(|f| f.code)),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    (messages, None)
}

/// QMux CONNECTION_CLOSE (0x1c) with transport error `code`.
fn is_connection_close(message: &[u8], code: u8) -> bool {
    message.len() >= 2 && message[0] == 0x1c && message[1] == code
}

#[test]
fn oversized_and_malformed_messages_close_only_their_connection() {
    let relay = Relay::start_with(2, &sections("  max_connections: 64\n"));
    let admin = admin_addr(&relay);
    let ws = ws_addr(&relay);
    // Others: a QUIC publisher and a WebSocket subscriber, ticking.
    let _publisher = moq_clock(&format!("moql://{}", relay.addr), "steady", "publish");
    relay
        .wait_for("broadcast=steady active=true", Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no announcement:\n{}", relay.log()));
    let subscriber = ws_clock(ws, "steady", "subscribe");
    assert_ticks(&subscriber, &relay);

    // A message over max_frame_size (16384): refused from its header,
    // closed with 1009 after QMux's FRAME_ENCODING_ERROR (0x07).
    let mut big = raw_client(ws);
    big.send(Message::Binary(vec![0u8; 100_000].into()))
        .unwrap();
    let (messages, code) = read_to_close(&mut big);
    assert_eq!(code, Some(CloseCode::Size), "{messages:?}");
    assert!(
        messages.iter().any(|m| is_connection_close(m, 0x07)),
        "{messages:?}"
    );

    // An unknown QMux frame type: FRAME_ENCODING_ERROR, then 1002.
    let mut malformed = raw_client(ws);
    malformed
        .send(Message::Binary(vec![0x21, 0x00].into()))
        .unwrap();
    let (messages, code) = read_to_close(&mut malformed);
    assert_eq!(code, Some(CloseCode::Protocol), "{messages:?}");
    assert!(
        messages.iter().any(|m| is_connection_close(m, 0x07)),
        "{messages:?}"
    );

    // A STREAM frame before QX_TRANSPORT_PARAMETERS: PROTOCOL_VIOLATION.
    let mut early = raw_client(ws);
    early
        .send(Message::Binary(vec![0x0b, 0x02, 0x01, b'x'].into()))
        .unwrap();
    let (messages, code) = read_to_close(&mut early);
    assert_eq!(code, Some(CloseCode::Protocol), "{messages:?}");
    assert!(
        messages.iter().any(|m| is_connection_close(m, 0x0a)),
        "{messages:?}"
    );

    let samples = wait_metrics(
        admin,
        Duration::from_secs(10),
        "the refusals counted",
        |s| {
            total(s, "qumo_websocket_messages_too_large_total") >= 1.0
                && total(s, "qumo_websocket_protocol_errors_total") >= 2.0
        },
    );
    let websocket_sessions: f64 = samples
        .iter()
        .filter(|s| {
            s.name == "qumo_sessions_started_total" && s.label("transport") == Some("websocket")
        })
        .map(|s| s.value)
        .sum();
    // The subscriber and the three refused clients.
    assert!(websocket_sessions >= 4.0, "{samples:#?}");

    // The subscriber went on through all of it.
    let before = subscriber.ticks(0, Duration::ZERO).len();
    let after = subscriber.ticks(before + 2, Duration::from_secs(15));
    assert!(
        after.len() >= before + 2,
        "the subscriber stopped: {after:?}\n{}",
        relay.log()
    );
}

#[test]
fn an_upgrade_without_a_qmux_subprotocol_is_refused() {
    let relay = Relay::start(1);
    let ws = ws_addr(&relay);
    let mut request = format!("ws://{ws}/").into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "webtransport, qmux-01.moq-lite-04".parse().unwrap(),
    );
    let stream = TcpStream::connect(ws).unwrap();
    match tungstenite::client(request, stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 400)
        }
        other => panic!("expected a 400, got {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn moq_clock_over_wss_publishes_to_a_quic_subscriber_beside_bad_tls_clients() {
    let relay = Relay::start_with(2, &sections("  header_timeout: 1s\n"));
    let admin = admin_addr(&relay);
    let ws = ws_addr(&relay);
    let line = relay.log();
    assert!(line.contains("tls=true"), "{line}");
    let _publisher = wss_clock("wss", ws, "wss-pub", "publish");
    relay
        .wait_for("broadcast=wss-pub active=true", Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no announcement:\n{}", relay.log()));
    wait_sessions(&relay, "websocket", 1);
    let subscriber = moq_clock(&format!("moql://{}", relay.addr), "wss-pub", "subscribe");
    assert_ticks(&subscriber, &relay);

    // Half a TLS handshake (cut at http.header_timeout) and a handshake
    // record of garbage (refused at once): each closes only itself.
    let mut half = TcpStream::connect(ws).unwrap();
    half.write_all(&[0x16, 0x03, 0x01]).unwrap();
    let mut garbage = TcpStream::connect(ws).unwrap();
    let mut record = vec![0x16, 0x03, 0x03, 0x00, 0x20];
    record.extend([0x5a; 0x20]);
    garbage.write_all(&record).unwrap();
    for stream in [&mut half, &mut garbage] {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    }
    // Counted apart from QUIC's bytes: the publisher's session adds its
    // socket's bytes once a second.
    let websocket_bytes = |s: &[support::http::Sample], name: &str| -> f64 {
        s.iter()
            .filter(|s| s.name == name && s.label("transport") == Some("websocket"))
            .map(|s| s.value)
            .sum()
    };
    let samples = wait_metrics(
        admin,
        Duration::from_secs(10),
        "the failed handshakes and the WebSocket's bytes counted",
        |s| {
            total(s, "qumo_http_tls_handshake_failures_total") >= 2.0
                && websocket_bytes(s, "qumo_accepted_bytes_received_total") > 0.0
                && websocket_bytes(s, "qumo_accepted_bytes_sent_total") > 0.0
        },
    );
    assert!(
        total(&samples, "qumo_http_tls_handshakes_total") >= 1.0,
        "{samples:#?}"
    );
    // The wss:// publisher went on through all of it.
    let before = subscriber.ticks(0, Duration::ZERO).len();
    let after = subscriber.ticks(before + 2, Duration::from_secs(15));
    assert!(
        after.len() >= before + 2,
        "the subscriber stopped: {after:?}\n{}",
        relay.log()
    );
    // The relay's frames reach a subscriber over TLS too (from an
    // https:// URL), and ws:// still works on the same port.
    let wss_subscriber = wss_clock("https", ws, "wss-pub", "subscribe");
    assert_ticks(&wss_subscriber, &relay);
    let ws_subscriber = ws_clock(ws, "wss-pub", "subscribe");
    assert_ticks(&ws_subscriber, &relay);
    wait_sessions(&relay, "websocket", 3);
}
