//! A minimal moq-lite peer on quinn + tokio, for tests that need to drive
//! the relay precisely (misbehave, read slowly, time frames). It uses the
//! relay's own codec; the interop tests cover third-party encoders.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use qumo::lite::{
    Announce, AnnounceOk, AnnounceRequest, BidiType, Decode, DecodeError, Encode, FrameHeader,
    GroupHeader, Limits, Subscribe, SubscribeOk, SubscribeReply, UniType, Version,
};
use qumo::tls::PinnedCertificate;
use tokio::sync::mpsc;

/// A read error as text; a stream reset as moq-native reads it on raw QUIC:
/// web-transport-quinn decodes the code from WebTransport's HTTP/3 range,
/// and a code outside it fails the whole session ("invalid RESET_STREAM").
/// Tests assert on this text, so a relay that put bare codes on the wire
/// would fail them.
fn read_error(e: quinn::ReadError) -> String {
    match e {
        quinn::ReadError::Reset(code) => match qumo::webtransport::app_code(code) {
            Some(code) => format!("reset {code}"),
            None => format!("invalid RESET_STREAM: {code}"),
        },
        e => e.to_string(),
    }
}

/// The digest a fingerprint's 64 hex digits spell.
fn sha256(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex fingerprint");
    }
    out
}

/// A quinn client endpoint that pins the relay's certificate hash.
pub fn endpoint(
    fingerprint: &str,
    alpn: &str,
    transport: quinn::TransportConfig,
) -> quinn::Endpoint {
    endpoint_on("127.0.0.1:0".parse().unwrap(), fingerprint, alpn, transport)
}

/// As [`endpoint`], bound to `local` (another 127.0.0.N source address,
/// for tests that must not meet the per-address admission limits).
pub fn endpoint_on(
    local: std::net::SocketAddr,
    fingerprint: &str,
    alpn: &str,
    transport: quinn::TransportConfig,
) -> quinn::Endpoint {
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(PinnedCertificate::new(sha256(fingerprint))))
    .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client(local).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(config);
    endpoint
}

/// Reads moq-lite messages off a quinn stream.
pub struct Reader {
    pub stream: quinn::RecvStream,
    buf: BytesMut,
    version: Version,
}

impl Reader {
    pub fn new(stream: quinn::RecvStream, version: Version) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            version,
        }
    }

    /// The next message; `None` at a clean end; `Err` carries a reset code
    /// or a description.
    pub async fn decode<T: Decode>(&mut self) -> Result<Option<T>, String> {
        loop {
            if !self.buf.is_empty() {
                match T::decode(&self.buf, self.version, &Limits::default()) {
                    Ok((msg, n)) => {
                        self.buf.advance(n);
                        return Ok(Some(msg));
                    }
                    Err(DecodeError::Short) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            match self.stream.read_chunk(usize::MAX, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) if self.buf.is_empty() => return Ok(None),
                Ok(None) => return Err("truncated".into()),
                Err(e) => return Err(read_error(e)),
            }
        }
    }

    pub async fn payload(&mut self, len: usize) -> Result<Bytes, String> {
        while self.buf.len() < len {
            match self.stream.read_chunk(usize::MAX, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) => return Err("truncated".into()),
                Err(e) => return Err(read_error(e)),
            }
        }
        Ok(self.buf.split_to(len).freeze())
    }

    /// The next frame of a group stream; `None` at its clean end.
    pub async fn frame(&mut self) -> Result<Option<Bytes>, String> {
        if self.at_end().await? {
            return Ok(None);
        }
        let frame: FrameHeader = self.decode().await?.ok_or("no frame")?;
        self.payload(frame.size as usize).await.map(Some)
    }

    /// Whether the stream finished cleanly here; a reset is an error.
    pub async fn at_end(&mut self) -> Result<bool, String> {
        if !self.buf.is_empty() {
            return Ok(false);
        }
        match self.stream.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                self.buf.extend_from_slice(&chunk.bytes);
                Ok(false)
            }
            Ok(None) => Ok(true),
            Err(e) => Err(read_error(e)),
        }
    }
}

pub fn encode(version: Version, parts: &[&dyn EncodeDyn]) -> Bytes {
    let mut buf = BytesMut::new();
    for p in parts {
        p.encode_dyn(&mut buf, version);
    }
    buf.freeze()
}

pub trait EncodeDyn {
    fn encode_dyn(&self, out: &mut BytesMut, version: Version);
}

impl<T: Encode> EncodeDyn for T {
    fn encode_dyn(&self, out: &mut BytesMut, version: Version) {
        self.encode(out, version).expect("test messages encode");
    }
}

/// One moq-lite session to the relay.
#[derive(Clone)]
pub struct Peer {
    pub conn: quinn::Connection,
    pub version: Version,
    _endpoint: quinn::Endpoint,
}

impl Peer {
    pub async fn connect(addr: std::net::SocketAddr, fingerprint: &str, version: Version) -> Peer {
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_uni_streams(1024u32.into());
        Self::connect_with(addr, fingerprint, version, transport).await
    }

    /// A peer that can take in little before its application reads: a few
    /// streams, small windows.
    pub async fn connect_slow(
        addr: std::net::SocketAddr,
        fingerprint: &str,
        version: Version,
    ) -> Peer {
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_uni_streams(4u32.into());
        transport.stream_receive_window(64_000u32.into());
        transport.receive_window(256_000u32.into());
        Self::connect_with(addr, fingerprint, version, transport).await
    }

    pub async fn connect_with(
        addr: std::net::SocketAddr,
        fingerprint: &str,
        version: Version,
        transport: quinn::TransportConfig,
    ) -> Peer {
        Self::connect_setup(addr, fingerprint, version, transport, None, None).await
    }

    /// A lite-05+ peer whose SETUP names `path` (the raw-QUIC request
    /// target, `?jwt=...` included, as moq-native sends it) and `role`.
    pub async fn connect_to(
        addr: std::net::SocketAddr,
        fingerprint: &str,
        version: Version,
        path: &str,
        role: Option<qumo::lite::Role>,
    ) -> Peer {
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_uni_streams(1024u32.into());
        Self::connect_setup(addr, fingerprint, version, transport, Some(path), role).await
    }

    async fn connect_setup(
        addr: std::net::SocketAddr,
        fingerprint: &str,
        version: Version,
        transport: quinn::TransportConfig,
        path: Option<&str>,
        role: Option<qumo::lite::Role>,
    ) -> Peer {
        let endpoint = endpoint(fingerprint, version.alpn(), transport);
        let handshake = endpoint.connect(addr, "localhost").unwrap();
        let conn = within("handshake", STEP, handshake)
            .await
            .expect("connects to the relay");
        if version.has_setup() {
            let mut send = conn.open_uni().await.unwrap();
            let setup = qumo::lite::Setup {
                probe: qumo::lite::ProbeLevel::None,
                path: path.map(str::to_string),
                role,
                cost: None,
                hop: None,
            };
            send.write_all(&encode(version, &[&UniType::Setup, &setup]))
                .await
                .unwrap();
            let _ = send.finish();
        }
        Peer {
            conn,
            version,
            _endpoint: endpoint,
        }
    }

    /// The session code the relay closed the connection with, waiting up
    /// to `limit`; `None` if it is still open then (or closed otherwise).
    pub async fn closed_with(&self, limit: Duration) -> Option<u64> {
        match tokio::time::timeout(limit, self.conn.closed()).await {
            Ok(quinn::ConnectionError::ApplicationClosed(close)) => {
                Some(close.error_code.into_inner())
            }
            _ => None,
        }
    }

    /// Open a bidi stream that starts with `kind` and `msg`.
    pub async fn request(
        &self,
        kind: BidiType,
        msg: &dyn EncodeDyn,
    ) -> (quinn::SendStream, Reader) {
        let (mut send, recv) = self.conn.open_bi().await.unwrap();
        let bytes = encode(self.version, &[&kind, msg]);
        send.write_all(&bytes).await.unwrap();
        (send, Reader::new(recv, self.version))
    }

    /// Subscribe; returns the stream halves after the relay accepted (lite-04
    /// SUBSCRIBE_OK) or the error.
    pub async fn subscribe(
        &self,
        id: u64,
        broadcast: &str,
        track: &str,
        max_latency: u64,
    ) -> Result<(quinn::SendStream, Reader), String> {
        let request = Subscribe {
            id,
            broadcast: broadcast.into(),
            track: track.into(),
            max_latency,
            ..Subscribe::default()
        };
        let (send, mut reader) = self.request(BidiType::Subscribe, &request).await;
        if !self.version.has_track_stream() {
            match within("SUBSCRIBE_OK", STEP, reader.decode::<SubscribeReply>()).await? {
                Some(SubscribeReply::Ok(_)) => {}
                other => return Err(format!("unexpected reply {other:?}")),
            }
        }
        Ok((send, reader))
    }

    /// Publish `broadcast`: answer the relay's announce request and its
    /// subscriptions. Each SUBSCRIBE id the relay sends arrives on the
    /// returned channel; the subscription stays open.
    pub fn publish(&self, broadcast: &str) -> mpsc::UnboundedReceiver<u64> {
        self.publish_with_hops(broadcast, Vec::new())
    }

    /// [`Peer::publish`], announcing `hops` as the relays the broadcast
    /// passed through (as a relay peer would).
    pub fn publish_with_hops(
        &self,
        broadcast: &str,
        hops: Vec<u64>,
    ) -> mpsc::UnboundedReceiver<u64> {
        let mut upstreams = self.publish_upstreams_with_hops(broadcast, hops);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(upstream) = upstreams.recv().await {
                let _ = tx.send(upstream.id);
                // Held open, both halves, until the relay closes its side.
                // (Naming only `upstream.reader` in the task would move just
                // that field into it, and drop, so finish, the send half
                // here: the relay would take that as the track's end.)
                tokio::spawn(async move {
                    let Upstream {
                        mut reader, send, ..
                    } = upstream;
                    let _ = reader.decode::<qumo::lite::SubscribeUpdate>().await;
                    drop(send);
                });
            }
        });
        rx
    }

    /// Like [`Peer::publish`], but each subscription's streams are handed
    /// over, so a test can end it.
    pub fn publish_upstreams(&self, broadcast: &str) -> mpsc::UnboundedReceiver<Upstream> {
        self.publish_upstreams_with_hops(broadcast, Vec::new())
    }

    fn publish_upstreams_with_hops(
        &self,
        broadcast: &str,
        hops: Vec<u64>,
    ) -> mpsc::UnboundedReceiver<Upstream> {
        let (tx, rx) = mpsc::unbounded_channel();
        let peer = self.clone();
        let broadcast = broadcast.to_string();
        tokio::spawn(async move {
            while let Ok((mut send, recv)) = peer.conn.accept_bi().await {
                let mut reader = Reader::new(recv, peer.version);
                let Ok(Some(kind)) = reader.decode::<BidiType>().await else {
                    continue;
                };
                match kind {
                    BidiType::Announce => {
                        let _: AnnounceRequest = reader.decode().await.unwrap().unwrap();
                        let mut out = BytesMut::new();
                        if peer.version.has_announce_ok() {
                            AnnounceOk { hop: 0, active: 1 }.encode_dyn(&mut out, peer.version);
                        }
                        Announce::available(broadcast.clone(), hops.clone(), peer.version)
                            .encode_dyn(&mut out, peer.version);
                        send.write_all(&out).await.unwrap();
                        tokio::spawn(async move {
                            let _keep = (send, reader);
                            std::future::pending::<()>().await
                        });
                    }
                    BidiType::Subscribe => {
                        let sub: Subscribe = reader.decode().await.unwrap().unwrap();
                        if !peer.version.has_track_stream() {
                            let ok = SubscribeReply::Ok(SubscribeOk::default());
                            let ok = encode(peer.version, &[&ok]);
                            send.write_all(&ok).await.unwrap();
                        }
                        let _ = tx.send(Upstream {
                            id: sub.id,
                            send,
                            reader,
                            version: peer.version,
                        });
                    }
                    _ => {}
                }
            }
        });
        rx
    }

    /// Send one whole group of frames on its own stream.
    pub async fn send_group(&self, subscribe: u64, sequence: u64, frames: &[Bytes]) {
        let mut send = self.open_group(subscribe, sequence, frames).await;
        let _ = send.finish();
    }

    /// Start a group stream with `frames` and leave it open.
    pub async fn open_group(
        &self,
        subscribe: u64,
        sequence: u64,
        frames: &[Bytes],
    ) -> quinn::SendStream {
        let mut send = self.conn.open_uni().await.unwrap();
        let mut out = group_head(self.version, subscribe, sequence);
        for frame in frames {
            frame_head(&mut out, self.version, frame.len() as u64);
            out.extend_from_slice(frame);
        }
        send.write_all(&out).await.unwrap();
        send
    }

    /// Read one group stream: its header and frames, or the reset code.
    pub async fn read_group(&self) -> Result<(GroupHeader, Vec<Bytes>), String> {
        let (header, mut reader) = self.accept_group().await?;
        let mut frames = Vec::new();
        while let Some(frame) = reader.frame().await? {
            frames.push(frame);
        }
        Ok((header, frames))
    }

    /// The next group stream's header, and the stream to read its frames
    /// from ([`Reader::frame`]) as they come.
    pub async fn accept_group(&self) -> Result<(GroupHeader, Reader), String> {
        let mut reader = loop {
            let recv = self.conn.accept_uni().await.map_err(|e| e.to_string())?;
            let mut reader = Reader::new(recv, self.version);
            match reader.decode::<UniType>().await?.ok_or("empty stream")? {
                UniType::Group => break reader,
                // The relay's SETUP (lite-05+).
                UniType::Setup => continue,
            }
        };
        let header: GroupHeader = reader.decode().await?.ok_or("no header")?;
        Ok((header, reader))
    }
}

/// A subscription the relay made to a scripted publisher.
pub struct Upstream {
    pub id: u64,
    pub send: quinn::SendStream,
    pub reader: Reader,
    version: Version,
}

impl Upstream {
    /// End it cleanly: lite-05+ SUBSCRIBE_END naming the exclusive final
    /// sequence, then FIN (lite-04: FIN alone).
    pub async fn end(&mut self, end_group: u64) {
        if self.version.has_track_stream() {
            let end = SubscribeReply::End { group: end_group };
            self.send
                .write_all(&encode(self.version, &[&end]))
                .await
                .unwrap();
        }
        let _ = self.send.finish();
    }
}

/// How long one step of a peer (a handshake, a reply) may take before the
/// test fails rather than hangs: a bound for a hang, not a speed target.
pub const STEP: Duration = Duration::from_secs(30);

/// The start of a GROUP stream: its type and header.
pub fn group_head(version: Version, subscribe: u64, sequence: u64) -> BytesMut {
    let mut out = BytesMut::new();
    UniType::Group.encode_dyn(&mut out, version);
    GroupHeader {
        subscribe,
        sequence,
        frame_start: 0,
    }
    .encode_dyn(&mut out, version);
    out
}

/// A frame's header announcing `size` payload bytes (timestamp delta 0
/// where the version carries timestamps).
pub fn frame_head(out: &mut BytesMut, version: Version, size: u64) {
    FrameHeader {
        timestamp_delta: version.has_frame_timestamps().then_some(0),
        size,
    }
    .encode_dyn(out, version);
}

/// Wait for a future with a deadline, panicking with `what` on expiry.
pub async fn within<T>(what: &str, limit: Duration, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
