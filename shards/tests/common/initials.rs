//! Hand-made connection attempts for admission tests: first Initials that
//! never go further, sent from distinct loopback addresses.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qumo_shards::quinn_proto;
use qumo_shards::{Runtime, ShardStatsSnapshot};

use super::{client_tls, Identity};

/// Crafts first Initials of new connections with a quinn-proto client driven
/// by hand: each is a fresh connection attempt with its own random ids, and
/// nothing after it is ever sent.
pub struct InitialFactory {
    config: quinn_proto::ClientConfig,
}

impl InitialFactory {
    pub fn new(id: &Identity) -> Self {
        let crypto =
            quinn_proto::crypto::rustls::QuicClientConfig::try_from(client_tls(id)).unwrap();
        Self {
            config: quinn_proto::ClientConfig::new(Arc::new(crypto)),
        }
    }

    pub fn initial(&self, server: SocketAddr) -> Vec<u8> {
        // A fresh endpoint per attempt, dropped at once, so the flood itself
        // holds no state and does not blur the memory figure.
        let mut endpoint = quinn_proto::Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            None,
            false,
            None,
        );
        let now = Instant::now();
        let (_, mut conn) = endpoint
            .connect(now, self.config.clone(), server, "localhost")
            .unwrap();
        let mut buf = Vec::new();
        let transmit = conn.poll_transmit(now, 1, &mut buf).expect("an Initial");
        buf.truncate(transmit.size);
        buf
    }
}

/// Sockets on distinct loopback addresses 127.0.0.2 ..= 127.0.0.(n+1).
pub fn sources(n: u8) -> Vec<UdpSocket> {
    (0..n)
        .map(|i| {
            let socket = UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 0, 2 + i), 0))
                .expect("loopback source address");
            socket.set_nonblocking(true).unwrap();
            socket
        })
        .collect()
}

pub fn total(runtime: &Runtime<()>) -> ShardStatsSnapshot {
    let mut sum = ShardStatsSnapshot::default();
    for s in runtime.stats() {
        sum.connections_accepted += s.connections_accepted;
        sum.connections_refused += s.connections_refused;
        sum.handshakes_in_progress += s.handshakes_in_progress;
        sum.retries_sent += s.retries_sent;
        sum.refused_connection_limit += s.refused_connection_limit;
        sum.ignored_handshake_limit += s.ignored_handshake_limit;
        sum.refused_source_connection_limit += s.refused_source_connection_limit;
        sum.ignored_source_rate += s.ignored_source_rate;
        sum.ignored_source_table_full += s.ignored_source_table_full;
        sum.handshakes_timed_out += s.handshakes_timed_out;
    }
    sum
}

/// Initials the runtime has decided on, one way or another.
pub fn decided(s: &ShardStatsSnapshot) -> u64 {
    s.connections_accepted
        + s.retries_sent
        + s.refused_connection_limit
        + s.ignored_handshake_limit
        + s.refused_source_connection_limit
        + s.ignored_source_rate
        + s.ignored_source_table_full
}

/// Poll `check` until it holds or `timeout` passes; the last snapshot.
pub async fn wait_until(
    runtime: &Runtime<()>,
    timeout: Duration,
    check: impl Fn(&ShardStatsSnapshot) -> bool,
) -> ShardStatsSnapshot {
    let deadline = Instant::now() + timeout;
    loop {
        let stats = total(runtime);
        if check(&stats) || Instant::now() >= deadline {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

pub fn is_refused(error: &quinn::ConnectionError) -> bool {
    matches!(error, quinn::ConnectionError::ConnectionClosed(close)
        if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED)
}

/// A quinn client bound to `ip`.
pub fn quinn_client_on(id: &Identity, ip: [u8; 4]) -> quinn::Endpoint {
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from((ip, 0))).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls(id)).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}
