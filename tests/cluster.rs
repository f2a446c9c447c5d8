//! `cluster.peers`: three qumo processes on loopback, linked in a line and
//! in a triangle by dialled moq-lite sessions. A broadcast published on A
//! reaches subscribers on C; each link carries one subscription per track
//! whatever the subscriber count; a node's death ends what only it carried
//! and its return brings it back.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use qumo::lite::{SubscribeReply, Version};
use support::http;
use support::lite::{within, Peer, Reader};
use support::Relay;

const SECOND: Duration = Duration::from_secs(1);

/// A node named `name` on `port`, dialling `peers` (ports); a short idle
/// timeout, since a killed node sends no CONNECTION_CLOSE.
fn node(name: &str, port: u16, peers: &[u16]) -> Relay {
    let peers: Vec<String> = peers
        .iter()
        .map(|p| format!("\"http://127.0.0.1:{p}\""))
        .collect();
    Relay::start_on(
        &format!("127.0.0.1:{port}"),
        2,
        &format!(
            "admin:\n  address: \"127.0.0.1:0\"\nquic:\n  idle_timeout: 3s\n  keep_alive: 1s\n\
             cluster:\n  node: {name}\n  peers: [{}]\n",
            peers.join(", ")
        ),
    )
}

async fn announced(relay: &Relay, broadcast: &str, nth: usize) {
    let active = format!("broadcast={broadcast}");
    relay
        .wait_for_nth_all_async(&[&active, "active=true"], nth, 30 * SECOND)
        .await
        .unwrap_or_else(|| panic!("{broadcast} not announced:\n{}", relay.log()));
}

/// `count` subscribers of `live/video` on `relay`.
async fn subscribers(relay: &Relay, count: u64) -> Vec<(Peer, quinn::SendStream, Reader)> {
    let mut out = Vec::new();
    for id in 0..count {
        let peer = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite06).await;
        let (send, reader) = peer.subscribe(id, "live", "video", 0).await.unwrap();
        out.push((peer, send, reader));
    }
    out
}

/// Every subscriber reads groups until it has seen `sequence`.
async fn all_see(subscribers: &[(Peer, quinn::SendStream, Reader)], sequence: u64, relay: &Relay) {
    for (peer, _, _) in subscribers {
        loop {
            let (header, frames) = within("a group", 10 * SECOND, peer.read_group())
                .await
                .unwrap_or_else(|e| panic!("{e}; log:\n{}", relay.log()));
            assert_eq!(frames, vec![Bytes::from(format!("g{}", header.sequence))]);
            if header.sequence >= sequence {
                break;
            }
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_line_carries_one_subscription_per_link_and_survives_a_restart() {
    let (port_a, port_b) = (support::free_port(), support::free_port());
    let a = node("a", port_a, &[]);
    let b = node("b", port_b, &[port_a]);
    let c = Relay::start_with(
        2,
        &format!(
            "admin:\n  address: \"127.0.0.1:0\"\nquic:\n  idle_timeout: 3s\n  keep_alive: 1s\n\
             cluster:\n  node: c\n  peers: [\"http://127.0.0.1:{port_b}\"]\n"
        ),
    );

    let publisher = Peer::connect(a.addr, &a.fingerprint, Version::Lite06).await;
    let mut upstreams = publisher.publish_upstreams("live");
    announced(&c, "live", 0).await;

    let subs = subscribers(&c, 3).await;
    let upstream = within("A's subscription", 10 * SECOND, upstreams.recv())
        .await
        .expect("subscribed through B");
    for sequence in 0..3 {
        let frame = Bytes::from(format!("g{sequence}"));
        publisher.send_group(upstream.id, sequence, &[frame]).await;
    }
    all_see(&subs, 2, &c).await;

    // One copy per link: A serves one subscription (to B), B one (to C),
    // and each of B and C holds one upstream subscription.
    assert!(upstreams.try_recv().is_err(), "a second subscription at A");
    for (relay, served, held) in [(&a, 1.0, 1.0), (&b, 1.0, 1.0), (&c, 3.0, 1.0)] {
        let admin = http::admin_addr(relay);
        let samples =
            http::wait_metrics_async(admin, 20 * SECOND, "subscriptions on the path", move |s| {
                http::total(s, "qumo_subscriptions_open") >= served
                    && http::total(s, "qumo_upstream_subscriptions_open") >= held
            })
            .await;
        assert_eq!(http::total(&samples, "qumo_subscriptions_open"), served);
        assert_eq!(
            http::total(&samples, "qumo_upstream_subscriptions_open"),
            held
        );
    }

    // B dies: C's subscriptions end (not hang), and the broadcast with them.
    drop(b);
    for (_, _, replies) in subs {
        let mut replies = replies;
        let ended = within("the subscription's end", 20 * SECOND, async {
            loop {
                match replies.decode::<SubscribeReply>().await {
                    Ok(Some(_)) => continue,
                    other => return other.map(|_| ()),
                }
            }
        })
        .await;
        assert_eq!(ended, Ok(()), "ended cleanly; log:\n{}", c.log());
    }
    c.wait_for_nth_all_async(&["broadcast=live", "active=false"], 0, 20 * SECOND)
        .await
        .unwrap_or_else(|| panic!("C kept the broadcast:\n{}", c.log()));

    // B returns on its port: C and B dial again, and subscribing works.
    let _b = node("b", port_b, &[port_a]);
    announced(&c, "live", 1).await;
    let again = subscribers(&c, 1).await;
    let upstream = within("A's new subscription", 10 * SECOND, upstreams.recv())
        .await
        .expect("subscribed through the new B");
    publisher
        .send_group(upstream.id, 3, &[Bytes::from_static(b"g3")])
        .await;
    all_see(&again, 3, &c).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_triangle_takes_the_shortest_path_and_keeps_it_when_the_third_node_dies() {
    let (port_a, port_b) = (support::free_port(), support::free_port());
    let a = node("a", port_a, &[]);
    let b = node("b", port_b, &[port_a]);
    let c = node("c", support::free_port(), &[port_a, port_b]);

    let publisher = Peer::connect(a.addr, &a.fingerprint, Version::Lite06).await;
    let mut upstreams = publisher.publish_upstreams("live");
    announced(&c, "live", 0).await;
    announced(&b, "live", 0).await;
    // C hears of it from A and through B; either way it subscribes to A
    // directly (one hop, not two).
    let subs = subscribers(&c, 2).await;
    let upstream = within("A's subscription", 10 * SECOND, upstreams.recv())
        .await
        .expect("subscribed from C");
    publisher
        .send_group(upstream.id, 0, &[Bytes::from_static(b"g0")])
        .await;
    all_see(&subs, 0, &c).await;
    let b_admin = http::admin_addr(&b);
    let at_b =
        http::wait_metrics_async(b_admin, 20 * SECOND, "B's figures", |s| !s.is_empty()).await;
    assert_eq!(
        http::total(&at_b, "qumo_subscriptions_open"),
        0.0,
        "routed through B"
    );
    assert_eq!(http::total(&at_b, "qumo_upstream_subscriptions_open"), 0.0);

    // B dies; C's subscribers go on over the direct link.
    drop(b);
    c.wait_for_async("upstream session ended", 20 * SECOND)
        .await
        .unwrap_or_else(|| panic!("C never saw B go:\n{}", c.log()));
    publisher
        .send_group(upstream.id, 1, &[Bytes::from_static(b"g1")])
        .await;
    all_see(&subs, 1, &c).await;
    assert!(upstreams.try_recv().is_err(), "a second subscription at A");

    // B returns and serves the broadcast again.
    let b = node("b", port_b, &[port_a]);
    announced(&b, "live", 0).await;
    let on_b = subscribers(&b, 1).await;
    // A already feeds that track (to C): B is served from A's hub, and
    // the publisher is still asked for it once.
    publisher
        .send_group(upstream.id, 2, &[Bytes::from_static(b"g2")])
        .await;
    all_see(&on_b, 2, &b).await;
    assert!(upstreams.try_recv().is_err(), "a second subscription at A");

    // A dies: B and C must not keep its broadcast alive through each other.
    drop(a);
    for relay in [&b, &c] {
        let admin = http::admin_addr(relay);
        tokio::task::spawn_blocking(move || nothing_announced(admin))
            .await
            .unwrap();
    }
}

/// Poll `/announced` until it lists nothing; panic after 20 s.
fn nothing_announced(admin: SocketAddr) {
    let deadline = std::time::Instant::now() + 20 * SECOND;
    loop {
        let body = http::get_ok(admin, "/announced", 10 * SECOND);
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        if json["broadcasts"].as_array().is_some_and(|b| b.is_empty()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still announced: {json}"
        );
        std::thread::sleep(SECOND / 20);
    }
}

/// On a relay with an auth key, a dialling qumo node is a peer only with a
/// cluster token (root `.cluster`) in its peer URL: B's broadcasts reach A
/// with their hops, while C, whose URL carries a token for everything but
/// no cluster right, links as a client and its hops are dropped.
#[tokio::test(flavor = "current_thread")]
async fn a_keyed_relay_takes_hops_only_from_a_peer_with_a_cluster_token() {
    let keys = support::token::Keys::generate("HS256");
    let cluster = keys.sign(".cluster", &[""], &[""]);
    let everything = keys.sign("", &[""], &[""]);
    let port_a = support::free_port();
    let a = Relay::start_on(
        &format!("127.0.0.1:{port_a}"),
        2,
        &format!(
            "admin:\n  address: \"127.0.0.1:0\"\nauth:\n  key_file: \"{}\"\n  public: []\n",
            keys.verifying.display()
        ),
    );
    let dialling_a = |name: &str, token: &str| {
        Relay::start_with(
            2,
            &format!(
                "cluster:\n  node: {name}\n  peers: [\"http://127.0.0.1:{port_a}/?jwt={token}\"]\n"
            ),
        )
    };
    let b = dialling_a("b", &cluster);
    let c = dialling_a("c", &everything);
    let on_b = Peer::connect(b.addr, &b.fingerprint, Version::Lite06).await;
    let _b_upstreams = on_b.publish("via-b");
    let on_c = Peer::connect(c.addr, &c.fingerprint, Version::Lite06).await;
    let _c_upstreams = on_c.publish("via-c");

    let admin = http::admin_addr(&a);
    let listed = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + 30 * SECOND;
        loop {
            let body = http::get_ok(admin, "/announced", 10 * SECOND);
            let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            let hops = |path: &str| {
                json["broadcasts"]
                    .as_array()?
                    .iter()
                    .find(|b| b["path"] == path)?["hops"]
                    .as_u64()
            };
            if let (Some(b), Some(c)) = (hops("via-b"), hops("via-c")) {
                return (b, c);
            }
            assert!(std::time::Instant::now() < deadline, "last {json}");
            std::thread::sleep(SECOND / 20);
        }
    })
    .await
    .unwrap();
    assert!(listed.0 >= 1, "B's hops kept: {listed:?}\n{}", a.log());
    assert_eq!(listed.1, 0, "C's hops dropped: {listed:?}\n{}", a.log());
}
