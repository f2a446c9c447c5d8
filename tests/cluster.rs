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

/// Bytes of one group's frame in the byte test: large enough that QUIC's
/// headers and acknowledgements are a small part of what a link carries.
const FRAME_BYTES: usize = 32 * 1024;
/// Groups sent per phase of the byte test.
const GROUPS_PER_PHASE: u64 = 8;

/// The figure `name` summed over its series, with `kind="client"` only
/// where the family has a kind.
fn bytes(samples: &[http::Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && s.label("kind").is_none_or(|k| k == "client"))
        .map(|s| s.value)
        .sum()
}

/// Scrape `relay` until `name` has grown to `at_least`; its value then.
async fn bytes_reach(relay: &Relay, name: &'static str, at_least: f64) -> f64 {
    let admin = http::admin_addr(relay);
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + 30 * SECOND;
        loop {
            let text = http::get_ok(admin, "/metrics", 10 * SECOND);
            let now = bytes(&http::parse_metrics(&text), name);
            if now >= at_least {
                return now;
            }
            let rows: Vec<&str> = text.lines().filter(|l| l.contains("_bytes_")).collect();
            assert!(
                std::time::Instant::now() < deadline,
                "{name} stayed at {now}, below {at_least}:\n{}",
                rows.join("\n")
            );
            std::thread::sleep(SECOND / 20);
        }
    })
    .await
    .unwrap()
}

async fn bytes_now(relay: &Relay, name: &'static str) -> f64 {
    bytes_reach(relay, name, 0.0).await
}

/// Groups `first..first + GROUPS_PER_PHASE`, each one frame of
/// [`FRAME_BYTES`], read whole by every subscriber.
async fn send_phase(
    publisher: &Peer,
    upstream: u64,
    first: u64,
    subscribers: &[(Peer, quinn::SendStream, Reader)],
    relay: &Relay,
) {
    // One group at a time: a newer group would let the relays skip an
    // older one still queued, and every byte must cross every link.
    for sequence in first..first + GROUPS_PER_PHASE {
        let frame = Bytes::from(vec![sequence as u8; FRAME_BYTES]);
        publisher.send_group(upstream, sequence, &[frame]).await;
        for (peer, _, _) in subscribers {
            loop {
                let (header, frames) = within("a group", 20 * SECOND, peer.read_group())
                    .await
                    .unwrap_or_else(|e| panic!("{e}; log:\n{}", relay.log()));
                assert_eq!(frames.concat().len(), FRAME_BYTES);
                if header.sequence >= sequence {
                    break;
                }
            }
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_line_carries_one_copy_of_the_bytes_per_link_whatever_the_subscriber_count() {
    let (port_a, port_b) = (support::free_port(), support::free_port());
    let a = node("a", port_a, &[]);
    let b = node("b", port_b, &[port_a]);
    let c = node("c", support::free_port(), &[port_b]);
    let publisher = Peer::connect(a.addr, &a.fingerprint, Version::Lite06).await;
    let mut upstreams = publisher.publish_upstreams("live");
    announced(&c, "live", 0).await;

    let mut subs = subscribers(&c, 1).await;
    let upstream = within("A's subscription", 10 * SECOND, upstreams.recv())
        .await
        .expect("subscribed through B");
    let phase = (GROUPS_PER_PHASE as usize * FRAME_BYTES) as f64;
    // B hears A on its link to A; C hears B on its link to B; C's clients
    // hear C. Each phase's bytes are measured from the figures before it.
    const A_TO_B: (&str, usize) = ("qumo_peer_bytes_received_total", 0);
    const B_TO_C: (&str, usize) = ("qumo_peer_bytes_received_total", 1);
    const C_TO_CLIENTS: (&str, usize) = ("qumo_accepted_bytes_sent_total", 2);
    let relays = [&b, &c, &c];
    let mut first = 0;
    for count in [1, 4] {
        if count > subs.len() {
            let more = count - subs.len();
            let mut joined = subscribers(&c, more as u64).await;
            // The ids restart at 0 per peer; each new peer is its own session.
            subs.append(&mut joined);
            http::wait_metrics_async(
                http::admin_addr(&c),
                20 * SECOND,
                "C's subscribers",
                move |s| http::total(s, "qumo_subscriptions_open") >= count as f64,
            )
            .await;
        }
        let mut before = [0.0; 3];
        for (name, i) in [A_TO_B, B_TO_C, C_TO_CLIENTS] {
            before[i] = bytes_now(relays[i], name).await;
        }
        send_phase(&publisher, upstream.id, first, &subs, &c).await;
        first += GROUPS_PER_PHASE;
        // Each subscriber read every byte: at least that much went by.
        let to_clients =
            bytes_reach(&c, C_TO_CLIENTS.0, before[2] + phase * count as f64).await - before[2];
        eprintln!("{count} subscribers, {phase} bytes published: {to_clients} to clients");
        for (name, i) in [A_TO_B, B_TO_C] {
            let carried = bytes_reach(relays[i], name, before[i] + phase).await - before[i];
            eprintln!("  link {i}: {carried}");
            assert!(
                carried < 1.5 * phase,
                "{count} subscribers: link {i} carried {carried} bytes for {phase} published"
            );
        }
        // And the clients' share grows with their number, the links' does not.
        assert!(
            to_clients < 1.5 * phase * count as f64,
            "{count} subscribers: {to_clients} bytes to clients for {phase} published"
        );
    }
    assert!(upstreams.try_recv().is_err(), "a second subscription at A");

    // A broadcast published on C reaches A through B, which shows B to A
    // as a relay (it passes on what came through C): from then on A counts
    // that session's bytes as a relay's, not a client's.
    let far = Peer::connect(c.addr, &c.fingerprint, Version::Lite06).await;
    let _far_upstreams = far.publish_upstreams("far");
    announced(&a, "far", 0).await;
    let relay_bytes = |s: &[http::Sample]| {
        s.iter()
            .filter(|s| s.name == "qumo_accepted_bytes_received_total")
            .filter(|s| s.label("kind") == Some("relay"))
            .map(|s| s.value)
            .sum::<f64>()
    };
    http::wait_metrics_async(
        http::admin_addr(&a),
        30 * SECOND,
        "relay bytes at A",
        move |s| relay_bytes(s) > 0.0,
    )
    .await;
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

    // A counts B's bytes as a relay's (its token says so, though the
    // announcement it passed on names no hop) and C's as a client's.
    let by_kind = |s: &[http::Sample], kind: &str| -> f64 {
        s.iter()
            .filter(|s| s.name == "qumo_accepted_bytes_received_total")
            .filter(|s| s.label("kind") == Some(kind))
            .map(|s| s.value)
            .sum()
    };
    http::wait_metrics_async(
        admin,
        30 * SECOND,
        "relay and client bytes at A",
        move |s| by_kind(s, "relay") > 0.0 && by_kind(s, "client") > 0.0,
    )
    .await;
}
