//! Scripted IETF clients for the session's in-memory tests: a draft-14
//! client on a control stream and a draft-22 client with its SETUP stream,
//! both on the far end of a `MemoryTransport` pair, using the relay's codec.

use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};

use super::control::ControlState;
use crate::ietf::draft22::{self as d22, Decode as _, Encode as _, RequestMessage};
use crate::ietf::{
    ControlMessage, Decode, Encode, Filter, GroupOrder, ParameterValue, Parameters,
    PublishNamespace, Subscribe, Version,
};
use crate::session::memory::{MemoryRecv, MemorySend, MemoryTransport};
use crate::session::tests::{settings, within};
use crate::session::transport::{RecvStream, SendStream, Transport};
use crate::shard::Shard;

/// One stream's bytes, decoded message by message.
pub(super) struct Incoming {
    pub(super) recv: MemoryRecv,
    pub(super) buf: BytesMut,
}

impl Incoming {
    pub(super) async fn decode<M>(
        &mut self,
        f: impl Fn(&[u8]) -> Result<(M, usize), crate::ietf::DecodeError>,
    ) -> M {
        loop {
            match f(&self.buf) {
                Ok((msg, used)) => {
                    self.buf.advance(used);
                    return msg;
                }
                Err(crate::ietf::DecodeError::Short) => {
                    match within("stream bytes", self.recv.read_chunk(usize::MAX)).await {
                        Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                        other => panic!("stream ended mid-message: {other:?}"),
                    }
                }
                Err(e) => panic!("undecodable: {e}"),
            }
        }
    }
}

pub(super) async fn closed_with(transport: &MemoryTransport) -> u32 {
    within("close", transport.closed()).await;
    transport.close_reason().expect("closed").code.0
}

/// A draft-14 client that sent CLIENT_SETUP with PATH `path` and `extra`
/// parameters.
pub(super) struct Client14 {
    pub(super) transport: MemoryTransport,
    control: MemorySend,
    pub(super) replies: Incoming,
}

impl Client14 {
    pub(super) async fn dial(
        shard: &Rc<Shard>,
        path: &str,
        extra: Vec<(u64, ParameterValue)>,
    ) -> Client14 {
        let (relay, transport) = MemoryTransport::pair();
        monoio::spawn(super::session::run(shard.clone(), relay, false));
        let (mut control, recv) = transport.open_bi().await.unwrap();
        let (_, mut setup) = ControlState::client(100, false, Some(path));
        setup.parameters.0.extend(extra);
        control
            .write_chunk(Bytes::from(setup.to_vec(Version::Draft14).unwrap()))
            .await
            .unwrap();
        Client14 {
            transport,
            control,
            replies: Incoming {
                recv,
                buf: BytesMut::new(),
            },
        }
    }

    /// Dialled and answered with SERVER_SETUP.
    pub(super) async fn admitted(
        shard: &Rc<Shard>,
        path: &str,
        extra: Vec<(u64, ParameterValue)>,
    ) -> Client14 {
        let mut client = Client14::dial(shard, path, extra).await;
        let reply = client.reply().await;
        assert!(matches!(reply, ControlMessage::ServerSetup(_)), "{reply:?}");
        client
    }

    pub(super) async fn send(&mut self, msg: ControlMessage) {
        self.control
            .write_chunk(Bytes::from(msg.to_vec(Version::Draft14).unwrap()))
            .await
            .unwrap();
    }

    /// The next control message that is not a MAX_REQUEST_ID top-up.
    pub(super) async fn reply(&mut self) -> ControlMessage {
        let limits = settings().limits;
        loop {
            let msg = self
                .replies
                .decode(|b| ControlMessage::decode(b, Version::Draft14, &limits))
                .await;
            if !matches!(msg, ControlMessage::MaxRequestId(_)) {
                return msg;
            }
        }
    }
}

pub(super) fn publish_namespace(request_id: u64, name: &str) -> ControlMessage {
    PublishNamespace {
        request_id,
        namespace: vec![name.into()],
        parameters: Parameters::default(),
    }
    .into()
}

pub(super) fn subscribe(request_id: u64, name: &str) -> ControlMessage {
    Subscribe {
        request_id,
        namespace: vec![name.into()],
        name: "video".into(),
        subscriber_priority: 0,
        group_order: GroupOrder::Ascending,
        forward: true,
        filter: Filter::LargestObject,
        parameters: Parameters::default(),
    }
    .into()
}

/// A draft-22 client whose SETUP carries `options`.
pub(super) struct Client22 {
    pub(super) transport: MemoryTransport,
    _setup: MemorySend,
}

impl Client22 {
    pub(super) async fn dial(shard: &Rc<Shard>, options: Vec<(u64, ParameterValue)>) -> Client22 {
        let (relay, transport) = MemoryTransport::pair();
        monoio::spawn(super::draft22::run(shard.clone(), relay));
        let mut setup = transport.open_uni().await.unwrap();
        let ours = d22::Setup {
            parameters: Parameters(options),
        };
        setup
            .write_chunk(Bytes::from(ours.to_vec().unwrap()))
            .await
            .unwrap();
        Client22 {
            transport,
            _setup: setup,
        }
    }

    /// A request stream: its send half (held open, as a live request's is)
    /// and the replies.
    pub(super) async fn request(&self, first: Vec<u8>) -> (MemorySend, Incoming) {
        let (mut send, recv) = self.transport.open_bi().await.unwrap();
        send.write_chunk(Bytes::from(first)).await.unwrap();
        let replies = Incoming {
            recv,
            buf: BytesMut::new(),
        };
        (send, replies)
    }
}

pub(super) async fn reply22(stream: &mut Incoming) -> RequestMessage {
    let limits = settings().limits;
    stream.decode(|b| RequestMessage::decode(b, &limits)).await
}
