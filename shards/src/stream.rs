//! Send and receive halves of QUIC streams, with backpressure: a write waits
//! while flow control or the send window is full; a read waits for data.

use std::future::poll_fn;
use std::task::{Context, Poll};

use bytes::Bytes;
use quinn_proto::{ConnectionError, FinishError, ReadError, ReadableError, StreamId, VarInt};

use crate::connection::Connection;

/// Why a write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("stream stopped by peer with code {0}")]
    Stopped(VarInt),
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] ConnectionError),
    #[error("stream already finished or reset")]
    ClosedStream,
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadStreamError {
    #[error("stream reset by peer with code {0}")]
    Reset(VarInt),
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] ConnectionError),
    #[error("stream already read to the end or stopped")]
    ClosedStream,
    #[error("stream is longer than the {0}-byte limit")]
    TooLong(usize),
}

/// The sending half of a stream. Dropping it finishes the stream if it was
/// neither finished nor reset, so the peer sees a clean end.
pub struct SendStream {
    conn: Connection,
    id: StreamId,
    done: bool,
}

impl SendStream {
    pub(crate) fn new(conn: Connection, id: StreamId) -> Self {
        Self {
            conn,
            id,
            done: false,
        }
    }

    pub fn id(&self) -> StreamId {
        self.id
    }

    fn poll_write_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(&mut quinn_proto::SendStream<'_>) -> Result<T, quinn_proto::WriteError>,
    ) -> Poll<Result<T, WriteError>> {
        let id = self.id;
        let result = self.conn.access(|e, queue| {
            let written = write(&mut e.conn.send_stream(id));
            match written {
                Ok(_) => *queue = true,
                Err(quinn_proto::WriteError::Blocked) => {
                    e.writers.insert(id, cx.waker().clone());
                }
                Err(_) => {}
            }
            written
        });
        match result {
            Err(e) => Poll::Ready(Err(e.into())),
            Ok(Ok(n)) => Poll::Ready(Ok(n)),
            Ok(Err(quinn_proto::WriteError::Blocked)) => Poll::Pending,
            Ok(Err(quinn_proto::WriteError::Stopped(code))) => {
                Poll::Ready(Err(WriteError::Stopped(code)))
            }
            Ok(Err(quinn_proto::WriteError::ClosedStream)) => {
                Poll::Ready(Err(WriteError::ClosedStream))
            }
        }
    }

    /// Write some of `data`, waiting for room; returns how much was taken.
    pub async fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        poll_fn(|cx| self.poll_write_with(cx, |s| s.write(data))).await
    }

    /// Write all of `data`.
    pub async fn write_all(&mut self, mut data: &[u8]) -> Result<(), WriteError> {
        while !data.is_empty() {
            let n = self.write(data).await?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Write `chunk` without copying it: quinn-proto keeps the `Bytes` (a
    /// reference count) until the data is acknowledged.
    pub async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), WriteError> {
        let mut chunks = [chunk];
        while !chunks[0].is_empty() {
            poll_fn(|cx| self.poll_write_with(cx, |s| s.write_chunks(&mut chunks))).await?;
        }
        Ok(())
    }

    /// Write as much of `chunks` as there is room for, without copying;
    /// written bytes are split off the front of the chunks. `Pending` (with
    /// `cx` registered) only when nothing could be written. For callers that
    /// wait on other events at the same time as on room to write.
    pub fn poll_write_chunks(
        &mut self,
        cx: &mut Context<'_>,
        chunks: &mut [Bytes],
    ) -> Poll<Result<usize, WriteError>> {
        self.poll_write_with(cx, |s| s.write_chunks(chunks).map(|w| w.bytes))
    }

    /// Finish the stream: no more data; the peer reads to the end.
    pub fn finish(&mut self) -> Result<(), WriteError> {
        self.done = true;
        let id = self.id;
        match self.conn.with_entry(|e| e.conn.send_stream(id).finish())? {
            Ok(()) => Ok(()),
            Err(FinishError::Stopped(code)) => Err(WriteError::Stopped(code)),
            Err(FinishError::ClosedStream) => Err(WriteError::ClosedStream),
        }
    }

    /// Abandon the stream: unsent data is dropped, the peer sees `code`.
    pub fn reset(&mut self, code: VarInt) -> Result<(), WriteError> {
        self.done = true;
        let id = self.id;
        self.conn
            .with_entry(|e| e.conn.send_stream(id).reset(code))?
            .map_err(|_| WriteError::ClosedStream)
    }

    /// Relative priority among this connection's streams; higher goes first.
    pub fn set_priority(&mut self, priority: i32) -> Result<(), WriteError> {
        let id = self.id;
        self.conn
            .with_entry(|e| e.conn.send_stream(id).set_priority(priority))?
            .map_err(|_| WriteError::ClosedStream)
    }

    /// Wait until the peer has acknowledged everything after `finish`
    /// (`Ok(None)`), or has asked us to stop (`Ok(Some(code))`).
    pub async fn stopped(&mut self) -> Result<Option<VarInt>, WriteError> {
        let id = self.id;
        poll_fn(|cx| {
            let state = self.conn.access(|e, _| {
                let state = e.conn.send_stream(id).stopped();
                if matches!(state, Ok(None)) {
                    e.finishers.insert(id, cx.waker().clone());
                }
                state
            });
            match state {
                Err(e) => Poll::Ready(Err(e.into())),
                Ok(Ok(Some(code))) => Poll::Ready(Ok(Some(code))),
                Ok(Ok(None)) => Poll::Pending,
                // The stream state is gone: every byte was acknowledged.
                Ok(Err(_)) => Poll::Ready(Ok(None)),
            }
        })
        .await
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        if !self.done {
            let id = self.id;
            let _ = self.conn.with_entry(|e| e.conn.send_stream(id).finish());
        }
    }
}

/// The receiving half of a stream. Dropping it before the end asks the peer
/// to stop sending (code 0).
pub struct RecvStream {
    conn: Connection,
    id: StreamId,
    done: bool,
}

impl RecvStream {
    pub(crate) fn new(conn: Connection, id: StreamId) -> Self {
        Self {
            conn,
            id,
            done: false,
        }
    }

    pub fn id(&self) -> StreamId {
        self.id
    }

    /// [`read_chunk`](Self::read_chunk) for hand-written poll loops:
    /// `Pending` with `cx` registered while no data is there.
    pub fn poll_read_chunk(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<Result<Option<Bytes>, ReadStreamError>> {
        let id = self.id;
        let result = self.conn.access(|e, queue| {
            let mut stream = e.conn.recv_stream(id);
            let mut chunks = match stream.read(true) {
                Ok(chunks) => chunks,
                Err(ReadableError::ClosedStream) => return Err(ReadStreamError::ClosedStream),
                Err(ReadableError::IllegalOrderedRead) => {
                    return Err(ReadStreamError::ClosedStream)
                }
            };
            let next = chunks.next(max);
            // Reading may free flow-control credit worth announcing; only
            // then is there anything to send.
            *queue = chunks.finalize().should_transmit();
            match next {
                Ok(Some(chunk)) => Ok(Some(Some(chunk.bytes))),
                Ok(None) => Ok(Some(None)),
                Err(ReadError::Blocked) => {
                    e.readers.insert(id, cx.waker().clone());
                    Ok(None)
                }
                Err(ReadError::Reset(code)) => Err(ReadStreamError::Reset(code)),
            }
        });
        match result {
            Err(e) => Poll::Ready(Err(e.into())),
            Ok(Err(e)) => {
                self.done = true;
                Poll::Ready(Err(e))
            }
            Ok(Ok(Some(chunk))) => {
                if chunk.is_none() {
                    self.done = true;
                }
                Poll::Ready(Ok(chunk))
            }
            Ok(Ok(None)) => Poll::Pending,
        }
    }

    /// Next piece of the stream, in order, without copying; `None` at the end.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ReadStreamError> {
        poll_fn(|cx| self.poll_read_chunk(cx, max)).await
    }

    /// Read into `buf`; `None` at the end of the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ReadStreamError> {
        match self.read_chunk(buf.len()).await? {
            Some(chunk) => {
                buf[..chunk.len()].copy_from_slice(&chunk);
                Ok(Some(chunk.len()))
            }
            None => Ok(None),
        }
    }

    /// Read the whole stream, refusing more than `limit` bytes.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, ReadStreamError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.read_chunk(usize::MAX).await? {
            if out.len() + chunk.len() > limit {
                let _ = self.stop(VarInt::from_u32(0));
                return Err(ReadStreamError::TooLong(limit));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Ask the peer to stop sending; unread data is discarded.
    pub fn stop(&mut self, code: VarInt) -> Result<(), ReadStreamError> {
        self.done = true;
        let id = self.id;
        self.conn
            .with_entry(|e| e.conn.recv_stream(id).stop(code))?
            .map_err(|_| ReadStreamError::ClosedStream)
    }
}

impl From<WriteError> for std::io::Error {
    fn from(e: WriteError) -> Self {
        std::io::Error::other(e)
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        if !self.done {
            let id = self.id;
            let _ = self
                .conn
                .with_entry(|e| e.conn.recv_stream(id).stop(VarInt::from_u32(0)));
        }
    }
}
