//! An upgraded WebSocket on its way from the HTTP listener's thread to a
//! shard (`ShardMessage::WebSocket`): plain data, so the mesh messages need
//! not know the transport that will run on it (`crate::websocket`).

use std::net::SocketAddr;

use bytes::Bytes;

use crate::lite::Version;

pub struct Handoff {
    pub socket: std::net::TcpStream,
    /// Bytes the HTTP server read past the request (the first frames).
    pub early: Bytes,
    /// For `wss://`: the TLS session the HTTP thread made on `socket`, to
    /// go on with on the shard (with any records it already holds, read
    /// or to be written); `None` for `ws://`.
    pub tls: Option<Box<rustls::ServerConnection>>,
    /// The moq-lite version the subprotocol named.
    pub version: Version,
    pub remote: Option<SocketAddr>,
    /// The URL's path and query: the session's root and credentials.
    pub path: String,
    pub query: Option<String>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("version", &self.version)
            .field("remote", &self.remote)
            .field("tls", &self.tls.is_some())
            .field("path", &self.path)
            .finish()
    }
}
