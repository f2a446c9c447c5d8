//! What publisher and subscriber sessions share: reading messages off a
//! stream, the SETUP exchange, and answering the relay's own requests.

use bytes::{Buf, Bytes, BytesMut};
use qumo::lite::{
    Announce, AnnounceOk, AnnounceRequest, BidiType, Decode, DecodeError, Encode, Limits, Role,
    Setup, UniType, Version,
};
use qumo::session::transport::TransportError;
use qumo_shards::{ReadStreamError, WriteError};

use crate::transport::{BenchConn, BenchRecv as RecvStream, BenchSend as SendStream};

/// moq-lite stream reset codes (moq-net's `StreamError`); each transport
/// puts them on the wire its own way (`crate::transport`).
pub const CODE_CANCEL: u32 = 0x1;
pub const CODE_NOT_FOUND: u32 = 0x33;

/// Session close code for a clean end (moq-net's `SessionError::Cancel`).
pub const CLOSE_DONE: u32 = 0x0;

/// Why a stream could not be read as moq-lite.
#[derive(Debug)]
pub enum StreamError {
    Read(ReadStreamError),
    Decode(DecodeError),
    /// The stream ended inside a message.
    Truncated,
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Read(e) => write!(f, "{e}"),
            StreamError::Decode(e) => write!(f, "{e}"),
            StreamError::Truncated => f.write_str("stream ended inside a message"),
        }
    }
}

impl From<ReadStreamError> for StreamError {
    fn from(e: ReadStreamError) -> Self {
        StreamError::Read(e)
    }
}

/// Reads whole messages off a stream: buffers until a decoder has enough.
pub struct MsgReader {
    pub recv: RecvStream,
    buf: BytesMut,
    eof: bool,
    version: Version,
    limits: Limits,
}

impl MsgReader {
    pub fn new(recv: RecvStream, version: Version) -> Self {
        Self {
            recv,
            buf: BytesMut::new(),
            eof: false,
            version,
            limits: Limits::default(),
        }
    }

    /// The next message, or `None` at a clean end of the stream.
    pub async fn next<T: Decode>(&mut self) -> Result<Option<T>, StreamError> {
        loop {
            if !self.buf.is_empty() {
                match T::decode(&self.buf, self.version, &self.limits) {
                    Ok((msg, n)) => {
                        self.buf.advance(n);
                        return Ok(Some(msg));
                    }
                    Err(DecodeError::Short) => {}
                    Err(e) => return Err(StreamError::Decode(e)),
                }
            }
            if self.eof {
                return match self.buf.is_empty() {
                    true => Ok(None),
                    false => Err(StreamError::Truncated),
                };
            }
            match self.recv.read_chunk(usize::MAX).await? {
                Some(chunk) => self.buf.extend_from_slice(&chunk),
                None => self.eof = true,
            }
        }
    }

    /// Like [`MsgReader::next`], but a clean end is an error too.
    pub async fn expect<T: Decode>(&mut self) -> Result<T, StreamError> {
        self.next().await?.ok_or(StreamError::Truncated)
    }

    /// Whatever is buffered past the last message, and whether the stream
    /// already ended; the reader is consumed.
    pub fn into_parts(self) -> (RecvStream, Bytes, bool) {
        (self.recv, self.buf.freeze(), self.eof)
    }

    /// Read and drop everything to the end of the stream.
    pub async fn drain(&mut self) -> Result<(), StreamError> {
        self.buf.clear();
        while !self.eof {
            match self.recv.read_chunk(usize::MAX).await? {
                Some(_) => {}
                None => self.eof = true,
            }
        }
        Ok(())
    }
}

/// Encode `msgs` into one buffer (these messages cannot fail to encode with
/// the values the bench gives them; a failure would be a bench bug).
pub fn encode_all(version: Version, f: impl FnOnce(&mut Vec<u8>, Version)) -> Bytes {
    let mut out = Vec::with_capacity(64);
    f(&mut out, version);
    Bytes::from(out)
}

pub fn enc<T: Encode>(out: &mut Vec<u8>, msg: &T, version: Version) {
    if let Err(e) = msg.encode(out, version) {
        panic!(
            "bench encodes an invalid message {}: {e}",
            std::any::type_name::<T>()
        );
    }
}

/// lite-05+: our SETUP on its own unidirectional stream, then FIN.
pub async fn send_setup(
    conn: &BenchConn,
    version: Version,
    role: Role,
    path: &str,
) -> Result<(), SetupError> {
    if !version.has_setup() {
        return Ok(());
    }
    let setup = Setup {
        role: Some(role),
        path: (!path.is_empty()).then(|| path.to_string()),
        ..Setup::default()
    };
    let bytes = encode_all(version, |out, v| {
        enc(out, &UniType::Setup, v);
        enc(out, &setup, v);
    });
    let mut send = conn.open_uni().await?;
    send.write_chunk(bytes).await?;
    Ok(send.finish()?)
}

/// Why our SETUP did not go out.
#[derive(Debug)]
pub enum SetupError {
    Open(TransportError),
    Write(WriteError),
}

impl From<TransportError> for SetupError {
    fn from(e: TransportError) -> Self {
        SetupError::Open(e)
    }
}

impl From<WriteError> for SetupError {
    fn from(e: WriteError) -> Self {
        SetupError::Write(e)
    }
}

/// The broadcasts (full paths) that fall under an announce `prefix`, as
/// the suffixes to announce. Paths match whole segments: prefix `a/b`
/// covers `a/b` and `a/b/c`, not `a/bc`.
pub fn suffixes_under<'a>(prefix: &str, paths: &'a [String]) -> Vec<&'a str> {
    let prefix = prefix.trim_matches('/');
    paths
        .iter()
        .filter_map(|p| {
            if prefix.is_empty() {
                return Some(p.as_str());
            }
            let rest = p.strip_prefix(prefix)?;
            match rest {
                "" => Some(""),
                r if r.starts_with('/') => Some(&r[1..]),
                _ => None,
            }
        })
        .collect()
}

/// The announce stream's opening: ANNOUNCE_OK (lite-05+) and one active
/// announcement per broadcast under the requested prefix.
pub fn announce_reply(version: Version, request: &AnnounceRequest, paths: &[String]) -> Bytes {
    let suffixes = suffixes_under(&request.prefix, paths);
    encode_all(version, |out, v| {
        if v.has_announce_ok() {
            enc(
                out,
                &AnnounceOk {
                    hop: 0,
                    active: suffixes.len() as u64,
                },
                v,
            );
        }
        for suffix in suffixes {
            enc(
                out,
                &Announce::available(suffix.to_string(), Vec::new(), v),
                v,
            );
        }
    })
}

/// Answer the relay's ANNOUNCE_REQUEST with `paths`, then hold the stream
/// open (closing it would tell the relay our broadcasts ended) until the
/// relay closes its side or the connection ends.
pub async fn serve_announce(
    mut send: SendStream,
    mut reader: MsgReader,
    version: Version,
    paths: &[String],
) {
    let Ok(Some(request)) = reader.next::<AnnounceRequest>().await else {
        let _ = send.reset(CODE_CANCEL);
        return;
    };
    if send
        .write_chunk(announce_reply(version, &request, paths))
        .await
        .is_err()
    {
        return;
    }
    let _ = reader.drain().await;
    let _ = send.finish();
}

/// Read a unidirectional stream's type; SETUP streams are read and
/// dropped here (nothing in the relay's SETUP changes what the bench does).
pub async fn read_uni_type(recv: RecvStream, version: Version) -> Option<(UniType, MsgReader)> {
    let mut reader = MsgReader::new(recv, version);
    let ty = reader.next::<UniType>().await.ok().flatten()?;
    if ty == UniType::Setup {
        let _ = reader.next::<Setup>().await;
        let _ = reader.drain().await;
        return None;
    }
    Some((ty, reader))
}

/// Read a bidirectional stream's type.
pub async fn read_bidi_type(recv: RecvStream, version: Version) -> Option<(BidiType, MsgReader)> {
    let mut reader = MsgReader::new(recv, version);
    let ty = reader.next::<BidiType>().await.ok().flatten()?;
    Some((ty, reader))
}

/// Refuse a stream the bench does not serve.
pub fn refuse(send: &mut SendStream, reader: &mut MsgReader) {
    let _ = send.reset(CODE_NOT_FOUND);
    let _ = reader.recv.stop(CODE_NOT_FOUND);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Vec<String> {
        ["bench/r1/p0b0", "bench/r1/p0b1", "bench/r10/p0b0"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn announce_suffixes_match_whole_path_segments() {
        let p = paths();
        assert_eq!(suffixes_under("", &p).len(), 3);
        assert_eq!(suffixes_under("bench/r1", &p), vec!["p0b0", "p0b1"]);
        assert_eq!(suffixes_under("bench/r1/", &p), vec!["p0b0", "p0b1"]);
        assert_eq!(suffixes_under("bench/r1/p0b1", &p), vec![""]);
        assert!(suffixes_under("bench/r", &p).is_empty());
    }

    #[test]
    fn the_announce_reply_decodes_as_ok_then_one_announcement_per_broadcast() {
        let p = paths();
        let req = AnnounceRequest {
            prefix: "bench/r1".into(),
            exclude_hop: 0,
        };
        for v in [Version::Lite04, Version::Lite05, Version::Lite06] {
            let wire = announce_reply(v, &req, &p);
            let limits = Limits::default();
            let mut at = 0;
            if v.has_announce_ok() {
                let (ok, n) = AnnounceOk::decode(&wire, v, &limits).unwrap();
                assert_eq!(ok.active, 2);
                at += n;
            }
            let mut suffixes = Vec::new();
            while at < wire.len() {
                let (a, n) = Announce::decode(&wire[at..], v, &limits).unwrap();
                at += n;
                match a {
                    Announce::Active { suffix, .. } | Announce::Start { suffix, .. } => {
                        suffixes.push(suffix)
                    }
                    other => panic!("{v}: {other:?}"),
                }
            }
            assert_eq!(suffixes, vec!["p0b0", "p0b1"], "{v}");
        }
    }
}
