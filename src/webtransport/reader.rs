//! A receive stream with the bytes read from it but not yet parsed, so that
//! parsing a prefix or a frame never loses what follows it.

use bytes::{Buf, Bytes, BytesMut};
use qumo_shards::{RecvStream, VarInt};

use super::{codec, WtError};

pub(crate) struct Reader {
    recv: RecvStream,
    /// Read from the stream, not yet consumed by a parser.
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            buf: Bytes::new(),
        }
    }

    /// Read one more chunk onto the buffer; false at the end of the stream.
    /// The first chunk is kept as is (no copy); only a parse that needs more
    /// than one chunk copies.
    async fn fill(&mut self) -> Result<bool, WtError> {
        let Some(chunk) = self.recv.read_chunk(usize::MAX).await? else {
            return Ok(false);
        };
        if self.buf.is_empty() {
            self.buf = chunk;
        } else {
            let mut joined = BytesMut::with_capacity(self.buf.len() + chunk.len());
            joined.extend_from_slice(&self.buf);
            joined.extend_from_slice(&chunk);
            self.buf = joined.freeze();
        }
        Ok(true)
    }

    /// Parse a value off the front of the stream with `parse`, which answers
    /// `Ok(None)` while it needs more bytes. Refuses to buffer `limit` bytes
    /// or more without a result.
    pub(crate) async fn decode<T, E: From<WtError>>(
        &mut self,
        limit: usize,
        what: &'static str,
        mut parse: impl FnMut(&[u8]) -> Result<Option<(T, usize)>, E>,
    ) -> Result<T, E> {
        loop {
            if !self.buf.is_empty() {
                if let Some((value, used)) = parse(&self.buf)? {
                    self.buf.advance(used);
                    return Ok(value);
                }
            }
            if self.buf.len() >= limit {
                return Err(WtError::TooLarge(what).into());
            }
            if !self.fill().await? {
                return Err(WtError::UnexpectedEnd.into());
            }
        }
    }

    /// A QUIC varint: a stream type or a session id.
    pub(crate) async fn varint(&mut self) -> Result<u64, WtError> {
        self.decode(8, "varint", codec::varint).await
    }

    /// Read and discard the rest of the stream (QPACK streams, the control
    /// stream after SETTINGS), until it ends or fails.
    pub(crate) async fn drain(mut self) {
        self.buf.clear();
        while let Ok(Some(_)) = self.recv.read_chunk(usize::MAX).await {}
    }

    /// Ask the peer to stop sending, with an HTTP/3 code.
    pub(crate) fn stop(mut self, code: u32) {
        let _ = self.recv.stop(VarInt::from_u32(code));
    }

    /// Next chunk: the buffered bytes first, then the stream's.
    pub(crate) async fn read_chunk(&mut self) -> Result<Option<Bytes>, WtError> {
        if !self.buf.is_empty() {
            return Ok(Some(std::mem::take(&mut self.buf)));
        }
        Ok(self.recv.read_chunk(usize::MAX).await?)
    }

    /// The stream and the bytes read past what was parsed.
    pub(crate) fn into_parts(self) -> (RecvStream, Bytes) {
        (self.recv, self.buf)
    }
}
