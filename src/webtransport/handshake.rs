//! The server's half of the handshake: SETTINGS both ways, then the CONNECT
//! request and its answer.

use std::rc::Rc;

use qumo_shards::{Connection, SendStream};
use tracing::debug;
use web_transport_proto::ConnectError;

use super::codec::{self, Rejection};
use super::reader::Reader;
use super::session::{serve_peer_uni, Established, Shared, WtSession};
use super::{h3, h3_code, WtError};

/// Largest CONNECT request buffered: the 16 KiB field section
/// web-transport-proto accepts, and room for frames skipped before it.
const MAX_REQUEST: usize = codec::MAX_FRAME + 1024;

/// A request that failed to decode, or the stream that carried it failed.
enum RequestError {
    Decode(ConnectError),
    Io(WtError),
}

impl From<ConnectError> for RequestError {
    fn from(e: ConnectError) -> Self {
        RequestError::Decode(e)
    }
}

impl From<WtError> for RequestError {
    fn from(e: WtError) -> Self {
        RequestError::Io(e)
    }
}

impl WtSession {
    /// Run the HTTP/3 and extended CONNECT handshake on a connection that
    /// negotiated ALPN `h3`.
    ///
    /// `choose` gets the protocols the client offered in
    /// `wt-available-protocols`, in its order of preference, and returns the
    /// one to answer in `wt-protocol`; it must be one of them. When the
    /// client offered some and `choose` returns `None`, the session is
    /// refused with status 400. When the client offered none, `None` answers
    /// 200 without `wt-protocol` (an older client; the caller picks a default).
    ///
    /// A request that is not a WebTransport CONNECT is answered 4xx (405 for
    /// another method, 400 for a malformed request or another `:protocol`).
    /// On any failure the connection is closed: after a refusal once the
    /// answer had a chance to arrive, otherwise at once with an HTTP/3 error
    /// code. Waits as long as the client takes; bound it with a timeout.
    pub async fn accept(
        conn: Connection,
        choose: impl Fn(&[String]) -> Option<String>,
    ) -> Result<WtSession, WtError> {
        let shared = Rc::new(Shared::new(conn));
        monoio::spawn(serve_peer_uni(shared.clone()));
        let established = run(&shared, &choose).await?;
        Ok(Self::start(shared, established))
    }
}

pub(crate) async fn run(
    shared: &Shared,
    choose: &impl Fn(&[String]) -> Option<String>,
) -> Result<Established, WtError> {
    let conn = &shared.conn;

    // Our control stream goes first: clients wait for it before they send
    // CONNECT, and web-transport-quinn takes the server's first uni stream
    // to be it.
    let mut control = conn.open_uni().await?;
    control.write_all(&codec::server_settings()).await?;
    shared.keep_control(control);

    let (send, recv) = conn.accept_bi().await?;
    let mut reader = Reader::new(recv);
    let request = match reader
        .decode(MAX_REQUEST, "CONNECT request", |buf| {
            codec::connect_request(buf).map_err(RequestError::from)
        })
        .await
    {
        Ok(request) => request,
        Err(RequestError::Decode(e)) => {
            let reason = e.to_string();
            return Err(match codec::rejection(&e) {
                Rejection::Status(status) => refuse(shared, send, status, reason).await,
                Rejection::Close(code) => fail(shared, code, WtError::Request(reason)),
            });
        }
        Err(RequestError::Io(WtError::UnexpectedEnd)) => {
            return Err(fail(shared, h3::REQUEST_INCOMPLETE, WtError::UnexpectedEnd));
        }
        Err(RequestError::Io(e @ WtError::TooLarge(_))) => {
            return Err(fail(shared, h3::MESSAGE_ERROR, e));
        }
        Err(RequestError::Io(e)) => return Err(e),
    };
    // Not the whole URL: its query may carry a token.
    debug!(
        authority = %request.url.authority(),
        path = %request.url.path(),
        protocols = ?request.protocols,
        "CONNECT request"
    );

    // The peer's SETTINGS must have enabled WebTransport before we answer.
    if let Err(e) = shared.peer_settings().await {
        return Err(match e {
            WtError::Connection(_) | WtError::Closed { .. } => e,
            e => fail(shared, codec::settings_error_code(&e), e),
        });
    }

    let offered = &request.protocols;
    let protocol = choose(offered);
    match &protocol {
        Some(p) if !offered.contains(p) => {
            let reason = format!("chose {p:?}, which the client did not offer");
            return Err(refuse(shared, send, 500, reason).await);
        }
        None if !offered.is_empty() => {
            let reason = format!("no acceptable protocol among {offered:?}");
            return Err(refuse(shared, send, 400, reason).await);
        }
        _ => {}
    }

    let response = match codec::response(200, protocol.as_deref()) {
        Ok(response) => response,
        Err(e) => return Err(refuse(shared, send, 500, e.to_string()).await),
    };
    let mut send = send;
    send.write_all(&response).await?;

    let url = &request.url;
    Ok(Established {
        session_id: u64::from(send.id()),
        path: url.path().to_string(),
        query: url.query().map(str::to_string),
        authority: url.authority().to_string(),
        protocol,
        connect_send: send,
        connect_recv: reader,
    })
}

/// Close the connection at once with an HTTP/3 error code.
fn fail(shared: &Shared, code: u32, error: WtError) -> WtError {
    debug!(code, %error, "WebTransport handshake failed");
    shared
        .conn
        .close(h3_code(code), error.to_string().as_bytes());
    error
}

/// Answer the CONNECT with an error status, give the answer time to arrive
/// (until the client closes, or a few round trips), then close.
async fn refuse(shared: &Shared, mut send: SendStream, status: u16, reason: String) -> WtError {
    debug!(status, %reason, "refusing the WebTransport session");
    let conn = &shared.conn;
    if let Ok(response) = codec::response(status, None) {
        let answered = async {
            if send.write_all(&response).await.is_ok() && send.finish().is_ok() {
                let _ = send.stopped().await;
                conn.closed().await;
            }
        };
        let _ = monoio::time::timeout(shared.grace(), answered).await;
    }
    if conn.close_reason().is_none() {
        conn.close(h3_code(h3::NO_ERROR), b"webtransport session refused");
    }
    WtError::Refused { status, reason }
}
