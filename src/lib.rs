//! qumo: a thread-per-core Media over QUIC relay.

pub mod admin;
pub mod allocator;
pub mod announced;
pub mod auth;
pub mod config;
pub mod fetch_sink;
pub mod handoff;
pub mod http;
pub mod ietf;
pub mod ietf_session;
pub mod lite;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod model;
pub mod origin;
pub mod peer_url;
pub mod process;
pub mod qmux;
pub mod relay;
pub mod router;
pub mod session;
pub mod shard;
pub mod task;
pub mod tls;
pub mod tls_reload;
pub mod track;
pub mod upstream;
pub mod websocket;
pub mod webtransport;

/// ALPN protocols the relay offers, newest first: rustls picks the first
/// protocol in the server's list that the client also offers, so this order
/// makes a client that speaks several versions get the newest. `h3` is for
/// WebTransport (HTTP/3) clients. `moqt-22` and `moq-00` are IETF
/// moq-transport drafts 22 and 14 on raw QUIC, after the lite versions: a
/// client offering both gets lite, and one offering both drafts gets 22.
pub const ALPN_PROTOCOLS: &[&[u8]] = &[
    b"moq-lite-06",
    b"moq-lite-05",
    b"moq-lite-04",
    b"moqt-22",
    b"moq-00",
    b"h3",
];
