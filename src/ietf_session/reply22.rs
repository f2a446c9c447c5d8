//! Writing a draft-22 request's replies on its stream, for every module that
//! serves a kind of request (`draft22`, `publish22`).

use bytes::Bytes;

use crate::ietf::draft22::{Encode, RequestError};
use crate::session::transport::SendStream;

/// Encode `msg` and write it; false if the stream is gone.
pub(super) async fn write<S: SendStream>(send: &mut S, msg: &impl Encode) -> bool {
    match msg.to_vec() {
        Ok(bytes) => send.write_chunk(Bytes::from(bytes)).await.is_ok(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode a draft-22 reply");
            false
        }
    }
}

/// REQUEST_ERROR, then the end of our half of the stream.
pub(super) async fn refuse<S: SendStream>(send: &mut S, code: u64, reason: &str) {
    let error = RequestError {
        code,
        retry_interval: 0,
        reason: reason.into(),
    };
    if write(send, &error).await {
        let _ = send.finish();
    }
}
