//! `relay.upstream_url`: an edge relay under an origin, two real processes
//! on loopback. The edge pins the origin's generated certificate from its
//! `http://` URL, learns its announcements, and serves any number of its
//! own subscribers through one upstream subscription per track.

mod support;

use std::time::Duration;

use bytes::Bytes;
use qumo::lite::Version;
use support::http;
use support::lite::{within, Peer};
use support::Relay;

const SECOND: Duration = Duration::from_secs(1);
const ADMIN: &str = "admin:\n  address: \"127.0.0.1:0\"\n";

fn origin_on(port: u16) -> Relay {
    Relay::start_on(&format!("127.0.0.1:{port}"), 1, ADMIN)
}

fn edge_under(origin_port: u16) -> Relay {
    Relay::start_with(
        2,
        &format!("{ADMIN}relay:\n  upstream_url: \"http://127.0.0.1:{origin_port}\"\n"),
    )
}

/// A publisher of `broadcast` on `relay`, once the relay has it.
async fn publish(
    relay: &Relay,
    broadcast: &str,
) -> (
    Peer,
    tokio::sync::mpsc::UnboundedReceiver<support::lite::Upstream>,
) {
    let peer = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite06).await;
    let upstreams = peer.publish_upstreams(broadcast);
    relay
        .wait_for_async(&format!("broadcast={broadcast} active=true"), 10 * SECOND)
        .await
        .unwrap_or_else(|| panic!("not announced:\n{}", relay.log()));
    (peer, upstreams)
}

#[tokio::test(flavor = "current_thread")]
async fn an_edge_serves_many_subscribers_through_one_upstream_subscription() {
    let port = support::free_port();
    let origin = origin_on(port);
    let (publisher, mut upstreams) = publish(&origin, "live").await;

    let edge = edge_under(port);
    // The origin's broadcast reaches the edge's table over the upstream session.
    edge.wait_for_nth_all_async(&["broadcast=live", "active=true"], 0, 20 * SECOND)
        .await
        .unwrap_or_else(|| panic!("edge never learned the broadcast:\n{}", edge.log()));

    let mut subscribers = Vec::new();
    for id in 0..3 {
        let peer = Peer::connect(edge.addr, &edge.fingerprint, Version::Lite06).await;
        let (send, reader) = peer.subscribe(id, "live", "video", 0).await.unwrap();
        subscribers.push((peer, send, reader));
    }
    let edge_admin = http::admin_addr(&edge);
    http::wait_metrics_async(
        edge_admin,
        20 * SECOND,
        "three subscriptions on the edge",
        |s| http::total(s, "qumo_subscriptions_open") == 3.0,
    )
    .await;

    let upstream = within("the edge's subscription", 10 * SECOND, upstreams.recv())
        .await
        .expect("the origin subscribed to the publisher");
    for sequence in 0..3 {
        let frame = Bytes::from(format!("frame {sequence}"));
        publisher.send_group(upstream.id, sequence, &[frame]).await;
    }
    for (peer, _, _) in &subscribers {
        // Each subscriber sees the newest group at least; all end at 2.
        let mut last = None;
        while last != Some(2) {
            let (header, frames) = within("a group on the edge", 10 * SECOND, peer.read_group())
                .await
                .unwrap_or_else(|e| panic!("{e}; edge log:\n{}", edge.log()));
            assert_eq!(
                frames,
                vec![Bytes::from(format!("frame {}", header.sequence))]
            );
            last = Some(header.sequence);
        }
    }

    // One subscription per track, edge-wide: the publisher was asked once,
    // the origin serves one subscription, the edge holds one upstream.
    assert!(
        upstreams.try_recv().is_err(),
        "a second upstream subscription"
    );
    let origin_admin = http::admin_addr(&origin);
    let at_origin =
        http::wait_metrics_async(origin_admin, 20 * SECOND, "the edge's subscription", |s| {
            http::total(s, "qumo_subscriptions_open") >= 1.0
        })
        .await;
    assert_eq!(http::total(&at_origin, "qumo_subscriptions_open"), 1.0);
    let at_edge = http::wait_metrics_async(edge_admin, 20 * SECOND, "the edge's upstream", |s| {
        http::total(s, "qumo_upstream_subscriptions_open") >= 1.0
    })
    .await;
    assert_eq!(
        http::total(&at_edge, "qumo_upstream_subscriptions_open"),
        1.0
    );
    assert_eq!(
        http::total(&at_edge, "qumo_upstream_dials_succeeded_total"),
        1.0
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_edge_dials_a_restarted_origin_again() {
    let port = support::free_port();
    let origin = origin_on(port);
    let (_publisher, _upstreams) = publish(&origin, "first").await;
    // A short idle timeout: a killed origin sends no CONNECTION_CLOSE.
    let edge = Relay::start_with(
        2,
        &format!(
            "quic:\n  idle_timeout: 3s\n  keep_alive: 1s\n\
             relay:\n  upstream_url: \"http://127.0.0.1:{port}\"\n"
        ),
    );
    edge.wait_for_nth_all_async(&["broadcast=first", "active=true"], 0, 20 * SECOND)
        .await
        .unwrap_or_else(|| panic!("edge never learned the broadcast:\n{}", edge.log()));

    drop(origin); // killed
                  // Its broadcasts end on the edge within the idle timeout.
    edge.wait_for_nth_all_async(&["broadcast=first", "active=false"], 0, 20 * SECOND)
        .await
        .unwrap_or_else(|| panic!("the edge kept a dead origin's broadcast:\n{}", edge.log()));

    // A new origin on the same port, with a new generated certificate: the
    // edge fetches the new hash and dials it.
    let origin = origin_on(port);
    let (publisher, mut upstreams) = publish(&origin, "again").await;
    edge.wait_for_nth_all_async(&["broadcast=again", "active=true"], 0, 30 * SECOND)
        .await
        .unwrap_or_else(|| panic!("edge never reconnected:\n{}", edge.log()));
    let subscriber = Peer::connect(edge.addr, &edge.fingerprint, Version::Lite05).await;
    let (_send, _reader) = subscriber.subscribe(1, "again", "audio", 0).await.unwrap();
    let upstream = within("the edge's subscription", 10 * SECOND, upstreams.recv())
        .await
        .expect("subscribed through the edge");
    publisher
        .send_group(upstream.id, 0, &[Bytes::from_static(b"back")])
        .await;
    let (_, frames) = within(
        "the group on the edge",
        10 * SECOND,
        subscriber.read_group(),
    )
    .await
    .unwrap();
    assert_eq!(frames, vec![Bytes::from_static(b"back")]);
}

/// A dialled link is exempt from `relay.max_sessions`: an edge whose one
/// client slot is taken still dials its origin, and the link is counted by
/// kind (and as dialled) beside the client.
#[tokio::test(flavor = "current_thread")]
async fn a_full_edge_still_dials_its_origin_and_counts_the_link() {
    let port = support::free_port();
    // The origin is not up yet: the edge keeps redialling.
    let edge = Relay::start_with(
        2,
        &format!("{ADMIN}relay:\n  max_sessions: 1\n  upstream_url: \"http://127.0.0.1:{port}\"\n"),
    );
    let client = Peer::connect(edge.addr, &edge.fingerprint, Version::Lite06).await;
    let edge_admin = http::admin_addr(&edge);
    http::wait_metrics_async(edge_admin, 20 * SECOND, "the client's session", |s| {
        http::total(s, "qumo_sessions_open") == 1.0
    })
    .await;

    let origin = origin_on(port);
    let (_publisher, _upstreams) = publish(&origin, "live").await;
    edge.wait_for_nth_all_async(&["broadcast=live", "active=true"], 0, 30 * SECOND)
        .await
        .unwrap_or_else(|| panic!("a full edge never dialled its origin:\n{}", edge.log()));
    let counted = http::wait_metrics_async(edge_admin, 20 * SECOND, "the link counted", |s| {
        http::total(s, "qumo_dialled_sessions_open") == 1.0
            && http::total(s, "qumo_sessions_by_version") == 2.0
    })
    .await;
    assert_eq!(
        http::total(&counted, "qumo_sessions_refused_max_sessions_total"),
        0.0
    );
    drop(client);
}
