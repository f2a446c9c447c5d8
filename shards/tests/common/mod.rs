//! Shared fixtures: a self-signed certificate, an echo application on the
//! shards runtime, and a quinn client that trusts it.
#![allow(dead_code)]

pub mod initials;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use qumo_shards::{Connection, Runtime, RuntimeConfig, ShardContext, Steering};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub const ALPN: &[u8] = b"echo";

pub struct Identity {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
}

pub fn identity() -> Identity {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    Identity {
        cert: cert.cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()).into(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn server_tls(id: &Identity) -> Arc<rustls::ServerConfig> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![id.cert.clone()], id.key.clone_key())
        .unwrap();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    Arc::new(tls)
}

pub fn client_tls(id: &Identity) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(id.cert.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    Arc::new(tls)
}

pub fn server_config(id: &Identity, shards: usize, steering: Steering) -> RuntimeConfig {
    let mut config = RuntimeConfig::new("127.0.0.1:0".parse().unwrap(), shards);
    config.steering = steering;
    config.server_tls = Some(server_tls(id));
    config
}

/// Echo every bidirectional stream and every datagram back to the peer.
pub async fn echo_shard(ctx: ShardContext<()>) {
    while let Some(conn) = ctx.accept().await {
        monoio::spawn(echo_connection(conn));
    }
}

async fn echo_connection(conn: Connection) {
    let datagrams = conn.clone();
    monoio::spawn(async move {
        while let Ok(d) = datagrams.read_datagram().await {
            let _ = datagrams.send_datagram(d);
        }
    });
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        monoio::spawn(async move {
            while let Ok(Some(chunk)) = recv.read_chunk(usize::MAX).await {
                if send.write_chunk(chunk).await.is_err() {
                    return;
                }
            }
            let _ = send.finish();
        });
    }
}

pub fn start_echo(config: RuntimeConfig) -> Runtime<()> {
    Runtime::start(config, echo_shard).expect("runtime starts")
}

pub fn quinn_client(id: &Identity) -> quinn::Endpoint {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls(id)).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(Duration::from_secs(10).try_into().unwrap()));
    config.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(config);
    endpoint
}

/// How long one exchange may take before the test fails rather than hangs:
/// a bound for a hang, not a speed target, so generous for a loaded box.
const STEP: Duration = Duration::from_secs(30);

pub async fn connect(endpoint: &quinn::Endpoint, server: SocketAddr) -> quinn::Connection {
    let handshake = endpoint.connect(server, "localhost").unwrap();
    tokio::time::timeout(STEP, handshake)
        .await
        .expect("handshake within 30 s")
        .expect("handshake completes")
}

/// A payload whose bytes depend on `seed` and position, so any reordering,
/// truncation or cross-stream mix-up shows.
pub fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(2_654_435_761).wrapping_add(i as u32 * 31) >> 7) as u8)
        .collect()
}

pub async fn echo_once(conn: &quinn::Connection, payload: &[u8]) -> Vec<u8> {
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.expect("stream opens");
        send.write_all(payload).await.expect("write");
        send.finish().expect("finish");
        recv.read_to_end(usize::MAX).await.expect("echo read")
    };
    tokio::time::timeout(STEP, exchange)
        .await
        .expect("echo within 30 s")
}
