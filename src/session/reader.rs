//! A buffered reader of moq-lite messages from one QUIC stream.
//!
//! The codec decodes from a slice and never consumes on `Short`, so the
//! reader keeps what it has, reads more, and tries again. Frame payloads come
//! out as `Bytes` without a copy when one QUIC chunk holds the whole frame.

use bytes::{Buf, Bytes, BytesMut};
use qumo_shards::{ReadStreamError, VarInt};

use super::transport::{RecvStream, Transport};
use crate::lite::{Decode, DecodeError, Limits, StreamCode, Version};

/// Why reading a message failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("malformed: {0}")]
    Decode(#[from] DecodeError),
    #[error("stream ended in the middle of a message")]
    Truncated,
    #[error("stream: {0}")]
    Stream(#[from] ReadStreamError),
}

impl ReadError {
    /// The stream code that ends a group this error cut short, the one
    /// place a read failure becomes a code: the publisher's own reset code
    /// passes through (so subscribers see why), a frame cut short is
    /// WRONG_SIZE, a lost connection SESSION_CLOSED, anything else CANCEL.
    pub fn stream_code(&self, transport: &impl Transport) -> StreamCode {
        match self {
            ReadError::Stream(ReadStreamError::Reset(code)) => {
                transport.moq_code(*code).unwrap_or(StreamCode::CANCEL)
            }
            ReadError::Truncated => StreamCode::WRONG_SIZE,
            ReadError::Stream(ReadStreamError::ConnectionLost(_)) => StreamCode::SESSION_CLOSED,
            _ => StreamCode::CANCEL,
        }
    }
}

pub struct StreamReader<R> {
    stream: R,
    buf: BytesMut,
    version: Version,
    limits: Limits,
    /// Bytes reserved up front for a payload that arrives in pieces
    /// (`relay.frame_capacity`); beyond it the buffer grows as bytes come.
    frame_capacity: usize,
}

impl<R: RecvStream> StreamReader<R> {
    /// `leftover` is what was read past a stream prefix already.
    pub fn new(
        stream: R,
        leftover: Bytes,
        version: Version,
        limits: Limits,
        frame_capacity: usize,
    ) -> Self {
        Self {
            stream,
            buf: BytesMut::from(&leftover[..]),
            version,
            limits,
            frame_capacity,
        }
    }

    pub fn limits_mut(&mut self) -> &mut Limits {
        &mut self.limits
    }

    /// The next message, or `None` if the stream ended cleanly first.
    pub async fn decode<T: Decode>(&mut self) -> Result<Option<T>, ReadError> {
        loop {
            if !self.buf.is_empty() {
                match T::decode(&self.buf, self.version, &self.limits) {
                    Ok((msg, used)) => {
                        self.buf.advance(used);
                        return Ok(Some(msg));
                    }
                    Err(DecodeError::Short) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match self.stream.read_chunk(usize::MAX).await? {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None if self.buf.is_empty() => return Ok(None),
                None => return Err(ReadError::Truncated),
            }
        }
    }

    /// The next message; the stream ending first is an error.
    pub async fn expect<T: Decode>(&mut self) -> Result<T, ReadError> {
        self.decode().await?.ok_or(ReadError::Truncated)
    }

    /// Exactly `len` payload bytes.
    pub async fn payload(&mut self, len: usize) -> Result<Bytes, ReadError> {
        if self.buf.len() >= len {
            return Ok(self.buf.split_to(len).freeze());
        }
        if self.buf.is_empty() {
            // The common case: the frame starts a fresh chunk; take it as is.
            let Some(chunk) = self.stream.read_chunk(len).await? else {
                return Err(ReadError::Truncated);
            };
            if chunk.len() == len {
                return Ok(chunk);
            }
            self.buf.extend_from_slice(&chunk);
        }
        // Not the whole declared size: a peer that declares a large frame
        // and trickles it would otherwise pin that much at once.
        let initial = len.min(self.frame_capacity).max(self.buf.len());
        self.buf.reserve(initial - self.buf.len());
        while self.buf.len() < len {
            let want = len - self.buf.len();
            match self.stream.read_chunk(want).await? {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None => return Err(ReadError::Truncated),
            }
        }
        Ok(self.buf.split_to(len).freeze())
    }

    /// Whether the stream ended cleanly here (no partial message left).
    pub async fn at_end(&mut self) -> Result<bool, ReadError> {
        if !self.buf.is_empty() {
            return Ok(false);
        }
        match self.stream.read_chunk(usize::MAX).await? {
            Some(chunk) => {
                self.buf.extend_from_slice(&chunk);
                Ok(false)
            }
            None => Ok(true),
        }
    }

    /// Read and drop everything up to the end of the stream.
    pub async fn discard_to_end(&mut self) -> Result<(), ReadError> {
        self.buf.clear();
        while self.stream.read_chunk(usize::MAX).await?.is_some() {}
        Ok(())
    }

    pub fn stop(&mut self, code: VarInt) {
        let _ = self.stream.stop(code);
    }
}
