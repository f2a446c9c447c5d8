//! What the application's per-shard code sees of its shard.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use quinn_proto::ConnectionError;

use crate::connection::Connection;
use crate::core::ShardCore;
use crate::mesh::MeshSender;
use crate::stats::ShardStatsSnapshot;
use crate::tasks::{AppInbox, Envelope};

/// The application's view of one shard: accept and open connections, talk
/// to other shards. Lives on its shard's thread only.
pub struct ShardContext<M> {
    pub(crate) core: Rc<ShardCore>,
    pub(crate) mesh: MeshSender<Envelope<M>>,
    pub(crate) inbox: Rc<AppInbox<M>>,
}

impl<M> Clone for ShardContext<M> {
    fn clone(&self) -> Self {
        Self {
            core: self.core.clone(),
            mesh: self.mesh.clone(),
            inbox: self.inbox.clone(),
        }
    }
}

/// Why an outgoing connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("client TLS config unusable for QUIC: {0}")]
    Tls(String),
    #[error("connection not started: {0}")]
    Start(#[from] quinn_proto::ConnectError),
    #[error("handshake failed: {0}")]
    Handshake(#[from] ConnectionError),
}

impl<M> ShardContext<M> {
    /// This shard's index, `0..shard_count()`.
    pub fn index(&self) -> usize {
        self.core.index
    }

    pub fn shard_count(&self) -> usize {
        self.core.shard_count
    }

    /// The address this shard's socket is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.core.io.local_addr()
    }

    /// The next connection that completed its handshake on this shard, or
    /// `None` once the runtime is shutting down.
    pub async fn accept(&self) -> Option<Connection> {
        let waiter = self.core.accept_waiters.waiter();
        poll_fn(|cx| {
            let mut inner = self.core.inner.borrow_mut();
            if let Some(shared) = inner.accept_queue.pop_front() {
                return Poll::Ready(Some(Connection::new(self.core.clone(), shared)));
            }
            if inner.shutting_down {
                return Poll::Ready(None);
            }
            waiter.register(cx);
            Poll::Pending
        })
        .await
    }

    /// Open a connection to `remote` from this shard and wait for the
    /// handshake. The runtime's transport limits apply.
    pub async fn connect(
        &self,
        remote: SocketAddr,
        server_name: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Connection, ConnectError> {
        let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
        let mut config = quinn_proto::ClientConfig::new(Arc::new(crypto));
        config.transport_config(self.core.transport.clone());
        let shared = self.core.connect(config, remote, server_name)?;
        let conn = Connection::new(self.core.clone(), shared);
        conn.established().await?;
        Ok(conn)
    }

    /// Post `message` to shard `to` (which may be this one). Gives the
    /// message back if that shard has stopped.
    pub fn send(&self, to: usize, message: M) -> Result<(), M> {
        crate::tasks::post(&self.mesh, to, message)
    }

    /// Wait for the next application message from any shard.
    pub async fn recv(&self) -> M {
        let waiter = self.inbox.waiters.waiter();
        poll_fn(|cx| {
            if let Some(message) = self.inbox.queue.borrow_mut().pop_front() {
                return Poll::Ready(message);
            }
            waiter.register(cx);
            Poll::Pending
        })
        .await
    }

    /// Take every queued application message without waiting.
    pub fn drain_messages(&self, into: &mut Vec<M>) {
        into.extend(self.inbox.queue.borrow_mut().drain(..));
    }

    /// Whether graceful shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.core.inner.borrow().shutting_down
    }

    /// Wait until graceful shutdown begins, e.g. to send a protocol GOAWAY.
    pub async fn shutdown_started(&self) {
        let waiter = self.core.shutdown_waiters.waiter();
        poll_fn(|cx| {
            if self.core.inner.borrow().shutting_down {
                return Poll::Ready(());
            }
            waiter.register(cx);
            Poll::Pending
        })
        .await
    }

    /// This shard's counters now.
    pub fn stats(&self) -> ShardStatsSnapshot {
        self.core.stats.snapshot()
    }
}
