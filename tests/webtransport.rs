//! WebTransport over HTTP/3 against a real third-party client: the
//! web-transport-quinn 0.11.9 client talks to `qumo::webtransport` served by
//! a `qumo_shards` runtime. The server behaves according to the CONNECT path.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use qumo::tls::{server_tls, CertificateSource};
use qumo::webtransport::{error_code, WtError, WtSession};
use qumo_shards::{Runtime, RuntimeConfig, SendStream, ShardContext};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use web_transport_quinn::proto::ConnectRequest;
use web_transport_quinn::{ClientError, SessionError, WebTransportError};

/// What the server can do; the client offers more.
const SERVER_PROTOCOLS: &[&str] = &["moq-lite-04"];
const CLIENT_PROTOCOLS: &[&str] = &["moq-lite-05", "moq-lite-04"];

/// What the server saw, sent to the test thread.
#[derive(Debug)]
enum Event {
    Accepted {
        path: String,
        query: Option<String>,
        protocol: Option<String>,
    },
    Failed(WtError),
    Uni {
        leftover: usize,
        data: Vec<u8>,
    },
    Ended(WtError),
}

struct Server {
    runtime: Runtime<()>,
    hash: Vec<u8>,
    events: tokio::sync::Mutex<UnboundedReceiver<Event>>,
}

impl Server {
    fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// As [`Server::start`], with the runtime's config adjusted first.
    fn start_with(adjust: impl FnOnce(&mut RuntimeConfig)) -> Self {
        let tls = server_tls(
            &CertificateSource::Generate {
                names: vec!["localhost".into()],
            },
            vec![b"h3".to_vec()],
        )
        .unwrap();
        let hash = tls.fingerprint.unwrap().sha256.to_vec();
        let mut config = RuntimeConfig::new("127.0.0.1:0".parse().unwrap(), 1);
        config.server_tls = Some(tls.config);
        adjust(&mut config);
        let (tx, events) = unbounded_channel();
        let runtime = Runtime::start(config, move |ctx| serve(ctx, tx.clone())).unwrap();
        Server {
            runtime,
            hash,
            events: tokio::sync::Mutex::new(events),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.runtime.local_addr()
    }

    async fn event(&self) -> Event {
        let mut events = self.events.lock().await;
        tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("the server reports within 10 s")
            .expect("the server is running")
    }

    fn client(&self) -> web_transport_quinn::Client {
        web_transport_quinn::ClientBuilder::new()
            .with_server_certificate_hashes(vec![self.hash.clone()])
            .unwrap()
    }

    async fn connect(
        &self,
        path: &str,
        protocols: &[&str],
    ) -> Result<web_transport_quinn::Session, ClientError> {
        let url = url::Url::parse(&format!("https://{}{path}", self.addr())).unwrap();
        let request =
            ConnectRequest::new(url).with_protocols(protocols.iter().map(|p| p.to_string()));
        self.client().connect(request).await
    }

    /// A session the server accepted, and the server's view of it.
    async fn session(&self, path: &str) -> (web_transport_quinn::Session, Event) {
        let session = self.connect(path, CLIENT_PROTOCOLS).await.expect("session");
        (session, self.event().await)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.runtime.shutdown_handle().shutdown();
    }
}

fn choose(offered: &[String]) -> Option<String> {
    offered
        .iter()
        .find(|p| SERVER_PROTOCOLS.contains(&p.as_str()))
        .cloned()
}

async fn serve(ctx: ShardContext<()>, events: UnboundedSender<Event>) {
    while let Some(conn) = ctx.accept().await {
        let events = events.clone();
        monoio::spawn(async move {
            match WtSession::accept(conn, choose).await {
                Ok(session) => {
                    let _ = events.send(Event::Accepted {
                        path: session.path().to_string(),
                        query: session.query().map(str::to_string),
                        protocol: session.protocol().map(str::to_string),
                    });
                    act(session, events).await;
                }
                Err(e) => {
                    let _ = events.send(Event::Failed(e));
                }
            }
        });
    }
}

async fn act(session: WtSession, events: UnboundedSender<Event>) {
    match session.path() {
        "/echo" => {
            while let Ok((send, recv, leftover)) = session.accept_bi().await {
                monoio::spawn(echo(send, recv, leftover));
            }
        }
        "/uni" => {
            if let Ok((mut recv, leftover)) = session.accept_uni().await {
                let mut data = leftover.to_vec();
                data.extend(recv.read_to_end(1 << 24).await.unwrap());
                let _ = events.send(Event::Uni {
                    leftover: leftover.len(),
                    data,
                });
            }
        }
        "/push" => {
            let mut send = session.open_uni().await.unwrap();
            send.write_all(b"pushed by the server").await.unwrap();
            send.finish().unwrap();
        }
        "/reset" => {
            if let Ok((mut send, _recv, _)) = session.accept_bi().await {
                send.write_all(b"partial").await.unwrap();
                send.reset(error_code(5)).unwrap();
            }
        }
        "/datagrams" => {
            while let Ok(datagram) = session.read_datagram().await {
                let _ = session.try_send_datagram(&datagram);
            }
        }
        "/close" => session.close(42, "bye"),
        _ => {}
    }
    let _ = events.send(Event::Ended(session.closed().await));
}

async fn echo(mut send: SendStream, mut recv: qumo_shards::RecvStream, leftover: Bytes) {
    if !leftover.is_empty() && send.write_chunk(leftover).await.is_err() {
        return;
    }
    while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX).await {
        if send.write_chunk(chunk).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("finishes within 10 s")
}

#[tokio::test]
async fn the_connect_path_and_the_protocol_the_server_chose_reach_both_sides() {
    within(async {
        let server = Server::start();
        let (session, accepted) = server.session("/echo?jwt=abc").await;
        match accepted {
            Event::Accepted {
                path,
                query,
                protocol,
            } => {
                assert_eq!(path, "/echo");
                assert_eq!(query.as_deref(), Some("jwt=abc"));
                assert_eq!(protocol.as_deref(), Some("moq-lite-04"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(session.response().protocol.as_deref(), Some("moq-lite-04"));
    })
    .await
}

#[tokio::test]
async fn a_web_transport_quinn_client_completes_its_handshake_through_a_quic_retry() {
    within(async {
        let server = Server::start_with(|config| {
            config.admission.retry = qumo_shards::RetryPolicy::Always;
        });
        let (session, _) = server.session("/echo").await;
        let (mut send, mut recv) = session.open_bi().await.unwrap();
        send.write_all(b"validated").await.unwrap();
        send.finish().unwrap();
        assert_eq!(recv.read_to_end(64).await.unwrap(), b"validated");
        let stats = server.runtime.stats();
        assert_eq!(stats.iter().map(|s| s.retries_sent).sum::<u64>(), 1);
        assert_eq!(stats.iter().map(|s| s.connections_accepted).sum::<u64>(), 1);
    })
    .await
}

#[tokio::test]
async fn a_bidirectional_stream_echoes_through_the_session() {
    within(async {
        let server = Server::start();
        let (session, _) = server.session("/echo").await;
        for len in [1, 5000, 300_000] {
            let payload = pattern(len);
            let (mut send, mut recv) = session.open_bi().await.unwrap();
            send.write_all(&payload).await.unwrap();
            send.finish().unwrap();
            let echoed = recv.read_to_end(1 << 24).await.unwrap();
            assert!(
                echoed == payload,
                "{len} bytes came back as {}",
                echoed.len()
            );
        }
    })
    .await
}

#[tokio::test]
async fn a_client_uni_stream_arrives_intact_including_the_bytes_right_after_its_prefix() {
    within(async {
        let server = Server::start();
        let (session, _) = server.session("/uni").await;
        let payload = pattern(200_000);
        let mut send = session.open_uni().await.unwrap();
        send.write_all(&payload).await.unwrap();
        send.finish().unwrap();
        match server.event().await {
            Event::Uni { leftover, data } => {
                assert!(
                    leftover > 0,
                    "the prefix and the first bytes share a packet"
                );
                assert!(data == payload, "got {} bytes", data.len());
            }
            other => panic!("{other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn a_server_opened_uni_stream_reaches_the_client() {
    within(async {
        let server = Server::start();
        let (session, _) = server.session("/push").await;
        let mut recv = session.accept_uni().await.unwrap();
        assert_eq!(
            recv.read_to_end(1024).await.unwrap(),
            b"pushed by the server"
        );
    })
    .await
}

#[tokio::test]
async fn a_stream_reset_with_an_application_code_reaches_the_client_as_that_code() {
    within(async {
        let server = Server::start();
        let (session, _) = server.session("/reset").await;
        let (mut send, mut recv) = session.open_bi().await.unwrap();
        send.write_all(b"go").await.unwrap();
        let mut buf = [0u8; 64];
        loop {
            match recv.read(&mut buf).await {
                Ok(Some(_)) => continue,
                Err(web_transport_quinn::ReadError::Reset(code)) => {
                    assert_eq!(code, 5);
                    break;
                }
                other => panic!("expected a reset, got {other:?}"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_client_offering_no_acceptable_protocol_is_refused_with_an_error() {
    within(async {
        let server = Server::start();
        let refused = server.connect("/echo", &["moq-lite-99"]).await;
        let error = refused.expect_err("the session is refused");
        assert!(
            error.to_string().contains("400"),
            "the client sees the status: {error}"
        );
        match server.event().await {
            Event::Failed(WtError::Refused { status: 400, .. }) => {}
            other => panic!("{other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn closing_the_session_delivers_its_code_and_reason_to_the_client() {
    within(async {
        let server = Server::start();
        let (session, _) = server.session("/close").await;
        match session.closed().await {
            SessionError::WebTransportError(WebTransportError::Closed(code, reason)) => {
                assert_eq!((code, reason.as_str()), (42, "bye"));
            }
            other => panic!("expected the close capsule, got {other:?}"),
        }
        match server.event().await {
            Event::Ended(WtError::LocallyClosed) => {}
            other => panic!("{other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn a_client_closing_the_session_is_seen_by_the_server_with_its_code() {
    within(async {
        let server = Server::start();
        let (session, _) = server.session("/wait").await;
        session.close(7, b"done");
        match server.event().await {
            Event::Ended(WtError::Closed { code, reason }) => {
                assert_eq!((code, reason.as_str()), (7, "done"));
            }
            other => panic!("{other:?}"),
        }
    })
    .await
}

/// A bare HTTP/3 client on quinn, for what no well-behaved client sends.
mod raw {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use web_transport_proto::{Frame, Settings, VarInt};

    /// A QUIC connection with ALPN h3 and the client's SETTINGS sent.
    pub async fn connect(server: SocketAddr) -> quinn::Connection {
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(qumo::tls::PinnedCertificate::any()))
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conn = endpoint
            .connect(server, "localhost")
            .unwrap()
            .await
            .unwrap();
        let mut settings = Settings::default();
        settings.enable_webtransport(1);
        let mut control = conn.open_uni().await.unwrap();
        let mut wire = Vec::new();
        settings.encode(&mut wire);
        control.write_all(&wire).await.unwrap();
        // HTTP/3 control streams stay open for the connection's life.
        std::mem::forget(control);
        conn
    }

    /// A HEADERS frame of literal fields (QPACK, static table unused).
    pub fn headers(fields: &[(&str, &str)]) -> Vec<u8> {
        fn prefixed(out: &mut Vec<u8>, bits: u32, flags: u8, value: usize) {
            let max = (1usize << bits) - 1;
            if value < max {
                out.push(flags | value as u8);
                return;
            }
            out.push(flags | max as u8);
            let mut rest = value - max;
            while rest >= 128 {
                out.push(0x80 | (rest % 128) as u8);
                rest /= 128;
            }
            out.push(rest as u8);
        }
        let mut block = vec![0x00, 0x00];
        for (name, value) in fields {
            prefixed(&mut block, 3, 0x20, name.len());
            block.extend_from_slice(name.as_bytes());
            prefixed(&mut block, 7, 0x00, value.len());
            block.extend_from_slice(value.as_bytes());
        }
        let mut frame = Vec::new();
        Frame::HEADERS.encode(&mut frame);
        VarInt::from_u32(block.len() as u32).encode(&mut frame);
        frame.extend_from_slice(&block);
        frame
    }

    /// Send a request on a new stream; the status of the answer, and the
    /// stream (finishing it would end a session).
    pub async fn request(
        conn: &quinn::Connection,
        frame: &[u8],
    ) -> (Option<u16>, quinn::SendStream) {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(frame).await.unwrap();
        let status = match web_transport_proto::ConnectResponse::read(&mut recv).await {
            Ok(response) => Some(response.status.as_u16()),
            Err(web_transport_proto::ConnectError::WrongStatus(status)) => {
                status.map(|s| s.as_u16())
            }
            Err(e) => panic!("no answer: {e}"),
        };
        (status, send)
    }
}

/// HTTP/3 NO_ERROR, which the server closes with after a refusal.
const H3_NO_ERROR: u32 = 0x100;

async fn closed_with(conn: &quinn::Connection) -> Option<u64> {
    match conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(close) => Some(close.error_code.into_inner()),
        _ => None,
    }
}

#[tokio::test]
async fn a_request_that_is_not_a_connect_is_answered_405_and_the_connection_closed() {
    within(async {
        let server = Server::start();
        let conn = raw::connect(server.addr()).await;
        let get = raw::headers(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "localhost"),
            (":path", "/"),
        ]);
        assert_eq!(raw::request(&conn, &get).await.0, Some(405));
        assert_eq!(closed_with(&conn).await, Some(H3_NO_ERROR.into()));
        match server.event().await {
            Event::Failed(WtError::Refused { status: 405, .. }) => {}
            other => panic!("{other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn a_connect_for_another_protocol_than_webtransport_is_answered_400() {
    within(async {
        let server = Server::start();
        let conn = raw::connect(server.addr()).await;
        let websocket = raw::headers(&[
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":authority", "localhost"),
            (":path", "/echo"),
        ]);
        assert_eq!(raw::request(&conn, &websocket).await.0, Some(400));
        match server.event().await {
            Event::Failed(WtError::Refused { status: 400, .. }) => {}
            other => panic!("{other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn qpack_and_unknown_uni_streams_are_kept_apart_from_the_session() {
    within(async {
        let server = Server::start();
        let conn = raw::connect(server.addr()).await;
        // A QPACK encoder stream with an instruction, kept open.
        let mut qpack = conn.open_uni().await.unwrap();
        qpack.write_all(&[0x02, 0x3f, 0x00]).await.unwrap();
        // A reserved (GREASE) stream type: the server stops it.
        let mut unknown = conn.open_uni().await.unwrap();
        unknown.write_all(&[0x21, 1, 2, 3]).await.unwrap();
        let stopped = unknown.stopped().await.unwrap();
        assert_eq!(stopped, Some(quinn::VarInt::from_u32(0x103)));

        let url = url::Url::parse("https://localhost/uni").unwrap();
        let mut connect = Vec::new();
        ConnectRequest::new(url).encode(&mut connect).unwrap();
        let (status, _connect_stream) = raw::request(&conn, &connect).await;
        assert_eq!(status, Some(200));
        match server.event().await {
            Event::Accepted { path, protocol, .. } => {
                assert_eq!(path, "/uni");
                assert_eq!(protocol, None, "nothing offered, nothing chosen");
            }
            other => panic!("{other:?}"),
        }

        // A WebTransport uni stream whose prefix arrives in pieces.
        let mut uni = conn.open_uni().await.unwrap();
        for piece in [&[0x40][..], &[0x54], &[0x00, b'a'], b"bc"] {
            uni.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        uni.finish().unwrap();
        match server.event().await {
            Event::Uni { data, .. } => assert_eq!(data, b"abc"),
            other => panic!("{other:?}"),
        }
    })
    .await
}

/// HTTP datagrams (RFC 9297) carry the session's quarter stream id, which
/// the server strips on the way in and puts back on the way out: a
/// web-transport-quinn client gets its payload back as it sent it.
#[tokio::test]
async fn a_datagram_echoes_through_the_session() {
    within(async {
        let server = Server::start();
        let (session, _) = server.session("/datagrams").await;
        let payload = Bytes::from(pattern(1000));
        // Datagrams may be lost even on loopback: send until one returns.
        loop {
            session.send_datagram(payload.clone()).unwrap();
            let echoed =
                tokio::time::timeout(Duration::from_millis(100), session.read_datagram()).await;
            if let Ok(Ok(echoed)) = echoed {
                assert_eq!(echoed, payload);
                break;
            }
        }
    })
    .await
}
