//! Bytes on a session's connection, counted where an operator (and a test)
//! can read them: a dialled session's on its link's figures (one per
//! configured relay), an accepted session's on its shard's figures by what
//! the peer is (client or relay).
//!
//! The figures are the QUIC stack's UDP byte counts (a WebSocket's: the
//! bytes its driver moved through the TCP socket), sampled: once a
//! second while the session runs and once more when it ends, each sample
//! adding what the connection carried since the last. One timer per
//! session, nothing per packet.

use std::rc::Rc;
use std::time::Duration;

use super::transport::Transport;
use super::Session;
use crate::metrics::{PeerKind, TrafficSink, TransportKind};
use crate::task::race;

/// How often a running session's bytes are added to the figures: fresh
/// enough for a scrape, cheap at any session count.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

impl<T: Transport> Session<T> {
    /// Add what the connection carried since the last count.
    pub(super) fn count_traffic(&self) {
        let Some(now) = self.transport.traffic() else {
            return;
        };
        let added = now.since(self.traffic_counted.replace(now));
        match &self.traffic_sink {
            TrafficSink::Link(link) => link.add(added),
            TrafficSink::Accepted => {
                let transport =
                    TransportKind::of_label(self.transport.kind()).unwrap_or(TransportKind::Quic);
                self.shard
                    .stats
                    .accepted_traffic
                    .add(self.peer_kind(), transport, added)
            }
        }
    }

    /// What the peer is: on a relay with keys, what its token says
    /// (cluster rights); on an open one, where every session may relay,
    /// what it has shown: a relay once it passed on an announcement that
    /// came to it through another node (a client announces only its own).
    pub fn peer_kind(&self) -> PeerKind {
        let keyed = self.shard.settings.auth.is_some();
        match self.relay_peer.get() || (keyed && self.grant().is_cluster()) {
            true => PeerKind::Relay,
            false => PeerKind::Client,
        }
    }
}

/// Count the session's bytes every [`SAMPLE_INTERVAL`] until it closes.
pub(super) async fn sample<T: Transport>(session: Rc<Session<T>>) {
    race(session.closed.raised(), async {
        loop {
            monoio::time::sleep(SAMPLE_INTERVAL).await;
            session.count_traffic();
        }
    })
    .await;
}

/// Counts the session's last bytes when dropped, on every way out of the
/// session (a refusal before it registered included).
pub(super) struct CountAtEnd<T: Transport>(pub Rc<Session<T>>);

impl<T: Transport> Drop for CountAtEnd<T> {
    fn drop(&mut self) {
        self.0.count_traffic();
    }
}
