//! Authentication with moq-relay's tokens, on the real binary: keys and
//! tokens are made by `moq-token-cli` (crates.io 0.5.48, binary
//! `moq-token`, installed by `scripts/install-clients.sh` under
//! `$HOME/.cache/qumo/bin`; set `QUMO_MOQ_TOKEN` to use another copy)
//! during the test, as an operator would make them.
//!
//! Over raw QUIC the token rides the lite-05+ SETUP path (`/room?jwt=...`,
//! as moq-native sends it); over WebTransport, the CONNECT URL, for lite and
//! IETF draft-14 sessions alike. A refused
//! session is closed with moq-lite's UNAUTHORIZED (0x2); a request outside
//! the token's scope is refused alone. Every refusal is counted on
//! `/metrics`.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use qumo::lite::{
    Announce, AnnounceOk, AnnounceRequest, BidiType, Decode, DecodeError, Limits, Role,
    SubscribeReply, UniType, Version,
};
use support::lite::{encode, within, Peer, STEP};
use support::token::Keys;
use support::{http, Relay};
use web_transport_quinn::proto::ConnectRequest;
use web_transport_quinn::{SessionError, WebTransportError};

const SECOND: Duration = Duration::from_secs(1);
/// moq-lite's session code for a refused token.
const UNAUTHORIZED: u64 = 0x2;
/// moq-lite's NOT_FOUND stream code, as the scripted peer prints a reset.
const NOT_FOUND: &str = "reset 51";

/// A relay checking tokens against `key`, `public` prefixes open, with an
/// admin listener for its counters.
fn relay(key: &Path, public: &str) -> (Relay, SocketAddr) {
    let sections = format!(
        "auth:\n  key_file: \"{}\"\n  public: {public}\nadmin:\n  address: \"127.0.0.1:0\"\n",
        key.display()
    );
    let relay = Relay::start_with(2, &sections);
    let admin = http::admin_addr(&relay);
    (relay, admin)
}

/// Wait (scraping `/metrics`) for `counter`, summed over shards, to reach
/// `at_least`.
async fn counted(admin: SocketAddr, counter: &str, at_least: f64) {
    let name = format!("qumo_{counter}_total");
    tokio::task::spawn_blocking(move || {
        http::wait_metrics(admin, 20 * SECOND, &name, |s| {
            http::total(s, &name) >= at_least
        });
    })
    .await
    .unwrap();
}

async fn scrape(admin: SocketAddr, counter: &str) -> f64 {
    let name = format!("qumo_{counter}_total");
    tokio::task::spawn_blocking(move || {
        let text = http::get_ok(admin, "/metrics", 10 * SECOND);
        http::total(&http::parse_metrics(&text), &name)
    })
    .await
    .unwrap()
}

/// A raw-QUIC peer dialling `path` (with its query) on `version`.
async fn dial(relay: &Relay, version: Version, path: &str, role: Option<Role>) -> Peer {
    Peer::connect_to(relay.addr, &relay.fingerprint, version, path, role).await
}

/// How a SUBSCRIBE ended: `Ok` once the relay accepted it (lite-04/05
/// SUBSCRIBE_OK, or lite-06 the first group), else the reset as text.
async fn subscribe_outcome(peer: &Peer, id: u64, broadcast: &str) -> Result<(), String> {
    let (_send, mut reader) = peer.subscribe(id, broadcast, "video", 0).await?;
    if !peer.version.has_track_stream() {
        return Ok(());
    }
    // Lite-05+: nothing comes back until a group or an end; a refusal is a
    // reset of the SUBSCRIBE stream.
    match tokio::time::timeout(5 * SECOND, reader.decode::<SubscribeReply>()).await {
        Ok(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn tokens_scope_publishing_and_subscribing_over_raw_quic() {
    let keys = Keys::generate("HS256");
    let (relay, admin) = relay(&keys.verifying, "[]");
    let publish = keys.sign("room", &["cam"], &[]);
    let watch = keys.sign("room", &[], &[""]);

    // A publisher with put [cam] under /room.
    let publisher = dial(
        &relay,
        Version::Lite06,
        &format!("/room?jwt={publish}"),
        None,
    )
    .await;
    let mut upstreams = publisher.publish("cam");
    let announced = relay
        .wait_for_async("broadcast=room/cam active=true", 10 * SECOND)
        .await;
    assert!(
        announced.is_some(),
        "the announce is in scope:\n{}",
        relay.log()
    );

    // A subscriber with get [""] under /room receives its groups.
    let viewer = dial(&relay, Version::Lite06, &format!("/room?jwt={watch}"), None).await;
    let _sub = viewer.subscribe(1, "cam", "video", 0).await.unwrap();
    let upstream = within("upstream subscribe", STEP, upstreams.recv())
        .await
        .unwrap();
    let frames = [Bytes::from_static(b"frame")];
    publisher.send_group(upstream, 0, &frames).await;
    let (_, got) = within("a group", STEP, viewer.read_group()).await.unwrap();
    assert_eq!(got, frames);

    // The publisher's token has no get: its SUBSCRIBE is refused, the
    // session kept.
    let refused = subscribe_outcome(&publisher, 7, "cam").await;
    assert_eq!(refused, Err(NOT_FOUND.to_string()));
    counted(admin, "auth_refused_subscribe", 1.0).await;

    // The viewer's token has no put: what it announces is not published.
    let _ignored = viewer.publish("sneaky");
    counted(admin, "auth_refused_publish", 1.0).await;
    assert_eq!(
        subscribe_outcome(&viewer, 2, "sneaky").await,
        Err(NOT_FOUND.to_string())
    );
    assert_eq!(relay.count("broadcast=room/sneaky active=true"), 0);
    assert!(publisher.closed_with(Duration::ZERO).await.is_none());
    assert!(!relay.log().contains(&publish), "a token was logged");
}

#[tokio::test(flavor = "current_thread")]
async fn bad_tokens_close_the_session_as_unauthorized_over_raw_quic() {
    let keys = Keys::generate("HS256");
    let stranger = Keys::generate("HS256");
    let (relay, admin) = relay(&keys.verifying, "[]");
    let past = SystemTime::now() - 60 * SECOND;
    let cases = [
        ("missing_token", "/room".to_string(), None),
        (
            "expired",
            format!(
                "/room?jwt={}",
                keys.sign_expiring("room", &[""], &[""], past)
            ),
            None,
        ),
        (
            "invalid_token",
            format!("/room?jwt={}", stranger.sign("room", &[""], &[""])),
            None,
        ),
        (
            "wrong_root",
            format!("/room?jwt={}", keys.sign("other", &[""], &[""])),
            None,
        ),
        (
            // Put only, but SETUP says it subscribes.
            "role",
            format!("/room?jwt={}", keys.sign("room", &[""], &[])),
            Some(Role::Subscriber),
        ),
    ];
    for (reason, path, role) in &cases {
        let counter = format!("auth_refused_{reason}");
        for version in [Version::Lite05, Version::Lite06] {
            let peer = dial(&relay, version, path, *role).await;
            assert_eq!(
                peer.closed_with(10 * SECOND).await,
                Some(UNAUTHORIZED),
                "{reason} on {version}:\n{}",
                relay.log()
            );
        }
        counted(admin, &counter, 2.0).await;
        assert!(
            !relay
                .log()
                .contains(path.split_once("jwt=").map_or("\u{0}", |t| t.1)),
            "a token was logged"
        );
    }
    // Each refusal counted once, under its own reason.
    for (reason, _, _) in &cases {
        assert_eq!(scrape(admin, &format!("auth_refused_{reason}")).await, 2.0);
    }
    let refused = relay.count("session refused");
    assert_eq!(refused, 2 * cases.len(), "one debug line per refusal");
    assert_eq!(relay.count("session open") - refused, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn public_prefixes_are_open_without_a_token() {
    let keys = Keys::generate("HS256");
    let (relay, admin) = relay(&keys.verifying, "[anon]");

    let publisher = dial(&relay, Version::Lite06, "/anon", Some(Role::Publisher)).await;
    let mut upstreams = publisher.publish("cam");
    let announced = relay
        .wait_for_async("broadcast=anon/cam active=true", 10 * SECOND)
        .await;
    assert!(announced.is_some(), "public publish:\n{}", relay.log());

    // Lite-04 on raw QUIC has no path: its root is the relay's, where only
    // the public prefixes are open.
    let viewer = Peer::connect(relay.addr, &relay.fingerprint, Version::Lite04).await;
    let _sub = viewer.subscribe(1, "anon/cam", "video", 0).await.unwrap();
    let upstream = within("upstream subscribe", STEP, upstreams.recv())
        .await
        .unwrap();
    let frames = [Bytes::from_static(b"public")];
    publisher.send_group(upstream, 0, &frames).await;
    let (_, got) = within("a group", STEP, viewer.read_group()).await.unwrap();
    assert_eq!(got, frames);
    assert_eq!(
        subscribe_outcome(&viewer, 2, "room/cam").await,
        Err(NOT_FOUND.to_string())
    );
    counted(admin, "auth_refused_subscribe", 1.0).await;

    // Outside the public prefixes a token is needed.
    let outsider = dial(&relay, Version::Lite06, "/room", None).await;
    assert_eq!(outsider.closed_with(10 * SECOND).await, Some(UNAUTHORIZED));
    counted(admin, "auth_refused_missing_token", 1.0).await;
}

/// Reads moq-lite messages off a WebTransport stream.
struct WtReader {
    stream: web_transport_quinn::RecvStream,
    buf: BytesMut,
    version: Version,
}

impl WtReader {
    async fn decode<T: Decode>(&mut self) -> Result<T, String> {
        loop {
            if !self.buf.is_empty() {
                match T::decode(&self.buf, self.version, &Limits::default()) {
                    Ok((msg, n)) => {
                        self.buf.advance(n);
                        return Ok(msg);
                    }
                    Err(DecodeError::Short) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            match self.stream.read_chunk(usize::MAX, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) => return Err("stream ended".into()),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// A WebTransport session on lite-06 to `path` (query included).
async fn web(relay: &Relay, path: &str) -> web_transport_quinn::Session {
    let url = url::Url::parse(&format!("https://{}{path}", relay.addr)).unwrap();
    let request =
        ConnectRequest::new(url).with_protocols([Version::Lite06.wt_protocol().to_string()]);
    let client = web_transport_quinn::ClientBuilder::new()
        .with_server_certificate_hashes(vec![digest(&relay.fingerprint)])
        .unwrap();
    let session = within("WebTransport CONNECT", STEP, client.connect(request))
        .await
        .expect("the CONNECT is answered");
    // Lite-05+: the relay checks the token once the peer's SETUP is in.
    let mut setup = session.open_uni().await.unwrap();
    let ours = qumo::lite::Setup::default();
    setup
        .write_all(&encode(Version::Lite06, &[&UniType::Setup, &ours]))
        .await
        .unwrap();
    let _ = setup.finish();
    session
}

/// The SHA-256 digest the relay's fingerprint (64 hex digits) spells.
fn digest(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

async fn closed_code(session: &web_transport_quinn::Session) -> Option<u32> {
    match tokio::time::timeout(10 * SECOND, session.closed()).await {
        Ok(SessionError::WebTransportError(WebTransportError::Closed(code, _))) => Some(code),
        _ => None,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn webtransport_sessions_take_their_token_from_the_connect_url() {
    // Asymmetric: the relay holds only the public half.
    let keys = Keys::generate("ES256");
    let (relay, admin) = relay(&keys.verifying, "[]");
    let publish = keys.sign("room", &["cam", "hidden"], &[]);
    let publisher = dial(
        &relay,
        Version::Lite06,
        &format!("/room?jwt={publish}"),
        None,
    )
    .await;
    let _upstreams = publisher.publish("cam");
    let other = dial(
        &relay,
        Version::Lite06,
        &format!("/room?jwt={publish}"),
        None,
    )
    .await;
    let _other_upstreams = other.publish("hidden");
    for broadcast in ["room/cam", "room/hidden"] {
        let line = format!("broadcast={broadcast} active=true");
        let seen = relay.wait_for_async(&line, 10 * SECOND).await;
        assert!(seen.is_some(), "{broadcast} published:\n{}", relay.log());
    }

    // Refused: no token, and a token from another key.
    let stranger = Keys::generate("ES256").sign("room", &[], &[""]);
    for path in ["/room".to_string(), format!("/room?jwt={stranger}")] {
        let session = web(&relay, &path).await;
        assert_eq!(closed_code(&session).await, Some(UNAUTHORIZED as u32));
    }
    counted(admin, "auth_refused_missing_token", 1.0).await;
    counted(admin, "auth_refused_invalid_token", 1.0).await;

    // Accepted with get [cam]: an ANNOUNCE_REQUEST for everything under
    // the root sees cam alone.
    let watch = keys.sign("room", &[], &["cam"]);
    let session = web(&relay, &format!("/room?jwt={watch}")).await;
    let (mut send, recv) = session.open_bi().await.unwrap();
    let request = AnnounceRequest {
        prefix: String::new(),
        exclude_hop: 0,
    };
    send.write_all(&encode(Version::Lite06, &[&BidiType::Announce, &request]))
        .await
        .unwrap();
    let mut reader = WtReader {
        stream: recv,
        buf: BytesMut::new(),
        version: Version::Lite06,
    };
    let ok: AnnounceOk = within("ANNOUNCE_OK", STEP, reader.decode()).await.unwrap();
    assert_eq!(ok.active, 1, "only the broadcast under get is counted");
    match within("an announce", STEP, reader.decode::<Announce>()).await {
        Ok(Announce::Start { suffix, .. }) => assert_eq!(suffix, "cam"),
        other => panic!("expected cam's START, got {other:?}"),
    }
    assert!(session.close_reason().is_none(), "the session stays open");
}

#[test]
fn a_moq_clock_over_webtransport_carries_its_token_in_the_url() {
    let keys = Keys::generate("HS256");
    let (relay, admin) = relay(&keys.verifying, "[]");
    let publish = keys.sign("clocks", &["tick"], &[]);
    let watch = keys.sign("clocks", &[], &[""]);
    let base = format!("https://{}/clocks", relay.addr);

    let _publisher = support::moq_clock(&format!("{base}?jwt={publish}"), "tick", "publish");
    let subscriber = support::moq_clock(&format!("{base}?jwt={watch}"), "tick", "subscribe");
    let ticks = subscriber.ticks(2, 30 * SECOND);
    assert!(
        ticks.len() >= 2,
        "ticks through an authorised session: {ticks:?}\nrelay:\n{}",
        relay.log()
    );

    // Without the token, the same subscriber is refused.
    let _refused = support::moq_clock(&base, "tick", "subscribe");
    http::wait_metrics(admin, 20 * SECOND, "a refused moq-clock", |s| {
        http::total(s, "qumo_auth_refused_missing_token_total") >= 1.0
    });
}

/// moq-clock 0.10.21 speaking IETF draft 14 over WebTransport
/// (`--client-version moq-transport-14`, protocol `moq-00`) carries its
/// token in the CONNECT URL like its lite self: the relay roots its
/// namespace at `/clocks`, where a lite subscriber with a token of its own
/// reads the ticks. A draft-14 clock without a token, or whose token does
/// not cover its broadcast, is refused and counted.
#[test]
fn a_draft_14_moq_clock_over_webtransport_carries_its_token_in_the_url() {
    let keys = Keys::generate("HS256");
    let (relay, admin) = relay(&keys.verifying, "[]");
    let publish = keys.sign("clocks", &["tick"], &[]);
    let watch = keys.sign("clocks", &[], &[""]);
    let base = format!("https://{}/clocks", relay.addr);
    let ietf_clock = |url: &str, broadcast: &str, mode: &str| {
        support::spawn_moq_clock(&[
            "--url",
            url,
            "--broadcast",
            broadcast,
            "--tls-disable-verify",
            "--client-version",
            "moq-transport-14",
            mode,
        ])
    };

    let publisher = ietf_clock(&format!("{base}?jwt={publish}"), "tick", "publish");
    relay
        .wait_for("broadcast=clocks/tick active=true", 10 * SECOND)
        .unwrap_or_else(|| {
            panic!(
                "no draft-14 PUBLISH_NAMESPACE under /clocks; clock:\n{:#?}\nrelay:\n{}",
                publisher.stderr.snapshot(),
                relay.log()
            )
        });
    let subscriber = support::moq_clock(&format!("{base}?jwt={watch}"), "tick", "subscribe");
    let ticks = subscriber.ticks(2, 30 * SECOND);
    assert!(
        ticks.len() >= 2,
        "ticks from an authorised draft-14 publisher: {ticks:?}\nrelay:\n{}",
        relay.log()
    );

    // Without a token: refused at SETUP.
    let _refused = ietf_clock(&base, "tock", "publish");
    http::wait_metrics(admin, 20 * SECOND, "a refused draft-14 clock", |s| {
        http::total(s, "qumo_auth_refused_missing_token_total") >= 1.0
    });
    // With a token whose put does not cover its broadcast: the session
    // stands, its PUBLISH_NAMESPACE is refused.
    let _outside = ietf_clock(&format!("{base}?jwt={publish}"), "tock", "publish");
    http::wait_metrics(admin, 20 * SECOND, "a draft-14 announce outside put", |s| {
        http::total(s, "qumo_auth_refused_publish_total") >= 1.0
    });
    assert_eq!(relay.count("broadcast=clocks/tock active=true"), 0);
    assert!(!relay.log().contains(&publish), "a token was logged");
}

#[tokio::test(flavor = "current_thread")]
async fn a_session_is_closed_as_unauthorized_when_its_token_expires() {
    let keys = Keys::generate("HS256");
    let (relay, admin) = relay(&keys.verifying, "[]");
    // Ten seconds: far more than a connect takes, short enough to wait for.
    let at = SystemTime::now() + 10 * SECOND;
    let jwt = keys.sign_expiring("room", &[], &[""], at);
    let peer = dial(&relay, Version::Lite06, &format!("/room?jwt={jwt}"), None).await;

    assert_eq!(peer.closed_with(30 * SECOND).await, Some(UNAUTHORIZED));
    assert!(
        SystemTime::now() + SECOND >= at,
        "closed at the token's exp, not before"
    );
    counted(admin, "auth_sessions_expired", 1.0).await;
    assert_eq!(scrape(admin, "auth_refused_expired").await, 0.0);
}

/// Only a token with cluster rights (root `.cluster`, minted by
/// moq-token-cli) makes a session a relay peer whose hop lists count; an
/// ordinary token, even one for everything, announces as a client: the hops
/// it names are dropped, so it cannot pose as a longer or shorter route.
#[tokio::test(flavor = "current_thread")]
async fn only_a_cluster_token_announces_with_hops() {
    let keys = Keys::generate("HS256");
    let (relay, admin) = relay(&keys.verifying, "[]");
    let client = keys.sign("", &[""], &[""]);
    let cluster = keys.sign(".cluster", &[""], &[""]);

    let as_client = dial(&relay, Version::Lite06, &format!("/?jwt={client}"), None).await;
    let _client_upstreams = as_client.publish_with_hops("from-client", vec![11, 12]);
    // moq-relay's peer dials name `/.cluster`: a cluster token's session
    // still shares the relay's whole namespace.
    let as_peer = dial(
        &relay,
        Version::Lite06,
        &format!("/.cluster?jwt={cluster}"),
        None,
    )
    .await;
    let _peer_upstreams = as_peer.publish_with_hops("from-peer", vec![11, 12]);

    let listed = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + 20 * SECOND;
        loop {
            let json: serde_json::Value =
                serde_json::from_str(&http::get_ok(admin, "/announced", 10 * SECOND))
                    .expect("JSON");
            let hops: Vec<(String, u64)> = json["broadcasts"]
                .as_array()
                .expect("a broadcasts list")
                .iter()
                .map(|b| {
                    (
                        b["path"].as_str().unwrap().to_string(),
                        b["hops"].as_u64().unwrap(),
                    )
                })
                .collect();
            if hops.len() >= 2 {
                return hops;
            }
            assert!(std::time::Instant::now() < deadline, "last {json}");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(
        listed.contains(&("from-client".to_string(), 0)),
        "a client's hops are dropped: {listed:?}"
    );
    assert!(
        listed.contains(&("from-peer".to_string(), 2)),
        "a peer's hops are kept, at the relay's root: {listed:?}"
    );
}

/// Every connection pays for the streams it may open from its handshake
/// on, so clients get few; a peer with a cluster token earns
/// `quic.peer_max_concurrent_*` once its token is checked, and an
/// ordinary client's limit stays where it was.
#[tokio::test(flavor = "current_thread")]
async fn a_cluster_token_earns_the_peer_stream_limits() {
    let keys = Keys::generate("HS256");
    let sections = format!(
        "auth:\n  key_file: \"{}\"\n  public: []\nquic:\n  max_concurrent_bidi_streams: 4\n  peer_max_concurrent_bidi_streams: 64\n",
        keys.verifying.display()
    );
    let relay = Relay::start_with(2, &sections);
    let client = keys.sign("", &[""], &[""]);
    let cluster = keys.sign(".cluster", &[""], &[""]);

    let as_peer = dial(&relay, Version::Lite06, &format!("/?jwt={cluster}"), None).await;
    let mut held = Vec::new();
    for n in 0..20 {
        // Past the fourth, each waits for the MAX_STREAMS the relay sends
        // once the token is checked.
        let opened = tokio::time::timeout(20 * SECOND, as_peer.conn.open_bi())
            .await
            .unwrap_or_else(|_| panic!("a cluster peer's stream {n} opens"));
        held.push(opened.expect("the connection stays up"));
    }

    let as_client = dial(&relay, Version::Lite06, &format!("/?jwt={client}"), None).await;
    let mut client_held = Vec::new();
    for _ in 0..4 {
        client_held.push(as_client.conn.open_bi().await.expect("within the limit"));
    }
    assert!(
        tokio::time::timeout(2 * SECOND, as_client.conn.open_bi())
            .await
            .is_err(),
        "a client's fifth stream waits: its limit was not raised"
    );
    assert!(
        as_client.conn.close_reason().is_none(),
        "the client's session is still up"
    );
}
