//! The server side of WebTransport over HTTP/3, without an HTTP/3 stack.
//!
//! A WebTransport session needs only a sliver of HTTP/3: each side opens a
//! control stream carrying SETTINGS, the client sends one extended CONNECT
//! request (`:protocol = webtransport`) on a bidirectional stream, and the
//! server answers it. After that, streams carry a short prefix naming the
//! session, and the CONNECT stream carries capsules (the close message).
//! The encoding of SETTINGS, the CONNECT request and response (QPACK with the
//! static table only) and the capsules comes from the sans-IO crate
//! `web-transport-proto`; this module drives it over `qumo_shards` streams.
//! It follows the server of `web-transport-quinn` 0.11.9, the implementation
//! the MoQ tools and browsers are tested against.
//!
//! Sub-protocol negotiation (draft-ietf-webtrans-http3-14, section 3.3): the
//! client lists what it speaks in the `wt-available-protocols` request header
//! as an RFC 8941 list of strings (`"moq-lite-05", "moq-lite-04"`); the server
//! answers the one it picked in `wt-protocol`, an RFC 8941 string
//! (`"moq-lite-05"`). See [`WtSession::accept`].
//!
//! One session per connection (`WT_MAX_SESSIONS = 1`); the session id is the
//! id of the CONNECT stream. Everything runs on the connection's shard.

mod codec;
mod error;
mod handshake;
mod reader;
mod session;

use error::h3_code;
pub use error::{app_code, error_code, h3, WtError};
pub use session::WtSession;
