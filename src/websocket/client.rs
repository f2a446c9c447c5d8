//! The client's end of QMux over WebSocket: dial `ws://host:port/path`
//! offering `qmux-00.<alpn>`, then run QMux on the socket with the relay's
//! own driver ([`super::drive_stream`]). For load generators and tests on a
//! shard's runtime; the relay itself only accepts.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

use super::{accept_key, drive_stream, QMUX_PREFIX};
use crate::lite::Version;
use crate::metrics::RelayStats;
use crate::qmux::{QmuxLimits, QmuxOrigin, QmuxTransport};

/// The most a handshake response may hold before its blank line.
const MAX_RESPONSE: usize = 16 * 1024;

/// Why a WebSocket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed during the handshake")]
    Closed,
    #[error("handshake response over {MAX_RESPONSE} bytes")]
    TooLong,
    #[error("upgrade refused: {0}")]
    Refused(String),
    #[error("bad Sec-WebSocket-Accept")]
    BadAccept,
    #[error("the server chose subprotocol {0:?}, not ours")]
    BadProtocol(String),
}

/// The upgrade request for `path` (with its query) offering `protocol`.
fn request(host: &str, path: &str, key: &str, protocol: &str) -> String {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
    )
}

/// Check a complete response head (up to its blank line) against the key
/// and subprotocol we sent (RFC 6455 §4.1).
fn check_response(head: &str, key: &str, protocol: &str) -> Result<(), DialError> {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split(' ').nth(1).unwrap_or_default();
    if !status.starts_with("HTTP/1.1 ") || code != "101" {
        return Err(DialError::Refused(status.to_string()));
    }
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    };
    if header("sec-websocket-accept") != Some(accept_key(key.as_bytes()).as_str()) {
        return Err(DialError::BadAccept);
    }
    match header("sec-websocket-protocol") {
        Some(chosen) if chosen == protocol => Ok(()),
        other => Err(DialError::BadProtocol(
            other.unwrap_or_default().to_string(),
        )),
    }
}

/// Open a WebSocket to `addr` for `path` offering `qmux-00.<version's
/// ALPN>`: the socket, and any bytes the server sent past its response
/// (its first frames).
pub async fn dial(
    addr: SocketAddr,
    host: &str,
    path: &str,
    version: Version,
) -> Result<(monoio::net::TcpStream, Bytes), DialError> {
    let mut stream = monoio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let key = tungstenite::handshake::client::generate_key();
    let protocol = format!("{QMUX_PREFIX}{}", version.alpn());
    let (result, _) = stream
        .write_all(request(host, path, &key, &protocol).into_bytes())
        .await;
    result?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = Vec::with_capacity(4096);
    let end = loop {
        buf.clear();
        let (result, returned) = stream.read(buf).await;
        buf = returned;
        match result? {
            0 => return Err(DialError::Closed),
            n => head.extend_from_slice(&buf[..n]),
        }
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if head.len() > MAX_RESPONSE {
            return Err(DialError::TooLong);
        }
    };
    let text = String::from_utf8_lossy(&head[..end]);
    check_response(&text, &key, &protocol)?;
    let early = Bytes::copy_from_slice(&head[end + 4..]);
    Ok((stream, early))
}

/// [`dial`], then QMux's client end on the socket, driven by a task on
/// this runtime until the connection ends. WebSocket errors the server
/// makes are counted in `stats`.
pub async fn connect(
    addr: SocketAddr,
    host: &str,
    path: &str,
    version: Version,
    limits: QmuxLimits,
    stats: Arc<RelayStats>,
) -> Result<QmuxTransport, DialError> {
    let (stream, early) = dial(addr, host, path, version).await?;
    let origin = QmuxOrigin {
        remote: Some(addr),
        path: path.to_string(),
        query: None,
    };
    let transport = QmuxTransport::new(false, limits, origin);
    monoio::spawn(drive_stream(transport.clone(), stream, early, None, stats));
    Ok(transport)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn head(status: &str, accept: &str, protocol: &str) -> String {
        format!(
            "{status}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nsec-websocket-protocol: {protocol}"
        )
    }

    #[test]
    fn a_response_must_switch_with_our_key_and_subprotocol() {
        // RFC 6455's sample key and answer.
        let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        let ok = head(
            "HTTP/1.1 101 Switching Protocols",
            accept,
            "qmux-00.moq-lite-05",
        );
        assert!(check_response(&ok, KEY, "qmux-00.moq-lite-05").is_ok());
        assert!(matches!(
            check_response(&ok, KEY, "qmux-00.moq-lite-04"),
            Err(DialError::BadProtocol(p)) if p == "qmux-00.moq-lite-05"
        ));
        let forged = head(
            "HTTP/1.1 101 Switching Protocols",
            "AAAA",
            "qmux-00.moq-lite-05",
        );
        assert!(matches!(
            check_response(&forged, KEY, "qmux-00.moq-lite-05"),
            Err(DialError::BadAccept)
        ));
        let refused = head("HTTP/1.1 400 Bad Request", accept, "qmux-00.moq-lite-05");
        assert!(matches!(
            check_response(&refused, KEY, "qmux-00.moq-lite-05"),
            Err(DialError::Refused(s)) if s.contains("400")
        ));
    }

    #[test]
    fn the_request_asks_for_the_path_and_subprotocol() {
        let r = request("localhost", "bench", KEY, "qmux-00.moq-lite-05");
        assert!(r.starts_with("GET /bench HTTP/1.1\r\n"), "{r}");
        assert!(r.contains("\r\nSec-WebSocket-Protocol: qmux-00.moq-lite-05\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
    }
}
