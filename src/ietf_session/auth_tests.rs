//! Tokens on IETF sessions, both drafts, on in-memory transports (raw-QUIC
//! semantics: the path rides SETUP's PATH). A relay with `auth` admits a
//! session whose JWT (in the path's query or SETUP's AUTHORIZATION_TOKEN)
//! verifies, roots its namespaces at the dialled path, refuses requests
//! outside the grant alone, and closes a refused session UNAUTHORIZED before
//! it is served, counting each reason. Every wait has a deadline; no sleeps.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use moq_token::{Algorithm, Claims, Key};

use super::test_clients::{closed_with, publish_namespace, reply22, subscribe, Client14, Client22};
use crate::auth::Auth;
use crate::ietf::draft22::{self as d22, Encode as _, RequestMessage};
use crate::ietf::token::{encode_setup_token, AuthToken, TOKEN_TYPE_OUT_OF_BAND};
use crate::ietf::{
    ControlMessage, ParameterValue, Parameters, PublishNamespace, SessionCode, SubscribeNamespace,
    Version, PARAM_AUTHORIZATION_TOKEN, PARAM_PATH,
};
use crate::session::tests::{settings, shard};
use crate::session::transport::RecvStream;
use crate::shard::Shard;

/// The request error code for a request outside the grant.
const UNAUTHORIZED: u64 = 0x1;

fn keyed() -> (Rc<Shard>, Key) {
    let key = Key::generate(Algorithm::HS256, None).expect("a key generates");
    let mut settings = settings();
    settings.auth = Some(Arc::new(Auth::new(Some(key.clone()), &[]).unwrap()));
    (shard(settings), key)
}

fn sign(key: &Key, root: &str, put: &[&str], get: &[&str]) -> String {
    let claims = Claims::default()
        .with_root(root)
        .with_publish(put.iter().copied())
        .with_subscribe(get.iter().copied())
        .with_expires(SystemTime::now() + Duration::from_secs(3600));
    key.sign(&claims).expect("signs")
}

/// An AUTHORIZATION_TOKEN parameter carrying `jwt` by value.
fn token_param(jwt: &str, kind: u64, version: Version) -> (u64, ParameterValue) {
    let value = encode_setup_token(
        AuthToken {
            kind,
            value: jwt.as_bytes(),
        },
        version,
    );
    (PARAM_AUTHORIZATION_TOKEN, ParameterValue::Bytes(value))
}

/// What a refused dial says, its path, its extra SETUP parameters, and the
/// counter its refusal adds to.
type RefusalCase<'a> = (
    &'static str,
    String,
    Vec<(u64, ParameterValue)>,
    &'a crate::metrics::Figure,
);

#[monoio::test(enable_timer = true)]
async fn draft14_sessions_without_a_valid_token_are_closed_before_server_setup() {
    let (shard, key) = keyed();
    let stranger = Key::generate(Algorithm::HS256, None).unwrap();
    let good = sign(&key, "room", &[""], &[""]);
    let other = sign(&key, "room", &[], &[""]);
    let stats = shard.stats.clone();
    let cases: Vec<RefusalCase> = vec![
        (
            "no token",
            "/room".into(),
            vec![],
            &stats.auth_refused_missing_token,
        ),
        (
            "another key's token",
            format!("/room?jwt={}", sign(&stranger, "room", &[""], &[""])),
            vec![],
            &stats.auth_refused_invalid_token,
        ),
        (
            "a setup token for another root",
            "/room".into(),
            vec![token_param(
                &sign(&key, "elsewhere", &[""], &[""]),
                TOKEN_TYPE_OUT_OF_BAND,
                Version::Draft14,
            )],
            &stats.auth_refused_wrong_root,
        ),
        (
            "two different tokens",
            format!("/room?jwt={good}"),
            vec![token_param(
                &other,
                TOKEN_TYPE_OUT_OF_BAND,
                Version::Draft14,
            )],
            &stats.auth_refused_invalid_token,
        ),
        (
            "a token of another type",
            "/room".into(),
            vec![token_param(&good, 0x1, Version::Draft14)],
            &stats.auth_refused_invalid_token,
        ),
    ];
    for (what, path, extra, counter) in cases {
        let before = counter.get();
        let mut client = Client14::dial(&shard, &path, extra).await;
        assert_eq!(
            closed_with(&client.transport).await,
            SessionCode::UNAUTHORIZED.0,
            "{what}"
        );
        assert_eq!(counter.get(), before + 1, "{what} is counted");
        // Nothing was sent back: not even SERVER_SETUP.
        let nothing = client.replies.recv.read_chunk(usize::MAX).await;
        assert!(!matches!(nothing, Ok(Some(_))), "{what}: {nothing:?}");
    }

    // A token structure that does not decode is a formatting error, as in
    // moq-net.
    let client = Client14::dial(
        &shard,
        "/room",
        vec![(PARAM_AUTHORIZATION_TOKEN, ParameterValue::Bytes(vec![0x03]))],
    )
    .await;
    assert_eq!(
        closed_with(&client.transport).await,
        SessionCode::KEY_VALUE_FORMATTING_ERROR.0
    );

    // The same JWT in both places is one credential.
    let _both = Client14::admitted(
        &shard,
        &format!("/room?jwt={good}"),
        vec![token_param(&good, TOKEN_TYPE_OUT_OF_BAND, Version::Draft14)],
    )
    .await;
}

#[monoio::test(enable_timer = true)]
async fn draft14_tokens_scope_namespaces_under_the_dialled_path() {
    let (shard, key) = keyed();
    let stats = shard.stats.clone();
    // The publisher's token rides the PATH's query: put [cam], no get.
    let put = sign(&key, "room", &["cam"], &[]);
    let mut publisher = Client14::admitted(&shard, &format!("/room?jwt={put}"), vec![]).await;
    publisher.send(publish_namespace(0, "cam")).await;
    assert!(matches!(
        publisher.reply().await,
        ControlMessage::PublishNamespaceOk(ok) if ok.request_id == 0
    ));
    assert!(
        shard.publisher_of("room/cam").is_some(),
        "announced under the root"
    );
    publisher.send(publish_namespace(2, "other")).await;
    match publisher.reply().await {
        ControlMessage::PublishNamespaceError(e) => {
            assert_eq!((e.request_id, e.code), (2, UNAUTHORIZED))
        }
        other => panic!("expected PUBLISH_NAMESPACE_ERROR, got {other:?}"),
    }
    assert!(shard.publisher_of("room/other").is_none());
    assert_eq!(stats.auth_refused_publish.get(), 1);
    publisher.send(subscribe(4, "cam")).await;
    match publisher.reply().await {
        ControlMessage::SubscribeError(e) => assert_eq!((e.request_id, e.code), (4, UNAUTHORIZED)),
        other => panic!("expected SUBSCRIBE_ERROR, got {other:?}"),
    }
    assert_eq!(stats.auth_refused_subscribe.get(), 1);
    assert!(publisher.transport.close_reason().is_none(), "kept open");

    // The viewer's token rides AUTHORIZATION_TOKEN: get everything under
    // /room. Its SUBSCRIBE reaches the publisher by the name it published.
    let get = sign(&key, "room", &[], &[""]);
    let mut viewer = Client14::admitted(
        &shard,
        "/room",
        vec![token_param(&get, TOKEN_TYPE_OUT_OF_BAND, Version::Draft14)],
    )
    .await;
    viewer.send(subscribe(0, "cam")).await;
    match publisher.reply().await {
        ControlMessage::Subscribe(upstream) => {
            assert_eq!(upstream.namespace, ["cam"], "the root is not the peer's");
        }
        other => panic!("expected the relay's SUBSCRIBE, got {other:?}"),
    }
    assert!(matches!(
        viewer.reply().await,
        ControlMessage::SubscribeOk(ok) if ok.request_id == 0
    ));
    viewer.send(publish_namespace(2, "sneaky")).await;
    match viewer.reply().await {
        ControlMessage::PublishNamespaceError(e) => assert_eq!(e.code, UNAUTHORIZED),
        other => panic!("expected PUBLISH_NAMESPACE_ERROR, got {other:?}"),
    }
    // A namespace subscription with nothing granted under it is refused.
    let mut blind = Client14::admitted(&shard, &format!("/room?jwt={put}"), vec![]).await;
    blind
        .send(
            SubscribeNamespace {
                request_id: 0,
                prefix: vec![],
                parameters: Parameters::default(),
            }
            .into(),
        )
        .await;
    match blind.reply().await {
        ControlMessage::SubscribeNamespaceError(e) => assert_eq!(e.code, UNAUTHORIZED),
        other => panic!("expected SUBSCRIBE_NAMESPACE_ERROR, got {other:?}"),
    }
    assert_eq!(stats.auth_refused_announce_request.get(), 1);
}

#[monoio::test(enable_timer = true)]
async fn draft22_tokens_admit_scope_and_refuse_like_draft14() {
    let (shard, key) = keyed();
    let stats = shard.stats.clone();
    // No token at all: closed before any request is served.
    let refused = Client22::dial(
        &shard,
        vec![(PARAM_PATH, ParameterValue::Bytes(b"/room".to_vec()))],
    )
    .await;
    assert_eq!(
        closed_with(&refused.transport).await,
        SessionCode::UNAUTHORIZED.0
    );
    assert_eq!(stats.auth_refused_missing_token.get(), 1);

    // A draft-14 publisher of /room/hidden and /room/cam.
    let put = sign(&key, "room", &[""], &[]);
    let mut publisher = Client14::admitted(&shard, &format!("/room?jwt={put}"), vec![]).await;
    for (id, name) in [(0, "hidden"), (2, "cam")] {
        publisher.send(publish_namespace(id, name)).await;
        assert!(matches!(
            publisher.reply().await,
            ControlMessage::PublishNamespaceOk(_)
        ));
    }

    // A draft-22 viewer whose SETUP token (draft-22 varints) grants get [cam].
    let get = sign(&key, "room", &[], &["cam"]);
    let viewer = Client22::dial(
        &shard,
        vec![
            (PARAM_PATH, ParameterValue::Bytes(b"/room".to_vec())),
            token_param(&get, TOKEN_TYPE_OUT_OF_BAND, Version::Draft22),
        ],
    )
    .await;
    let outside = d22::Subscribe {
        request_id: 0,
        namespace: vec!["hidden".into()],
        name: "video".into(),
        parameters: d22::MessageParameters::default(),
    };
    let (_outside, mut stream) = viewer.request(outside.to_vec().unwrap()).await;
    match reply22(&mut stream).await {
        RequestMessage::RequestError(e) => assert_eq!(e.code, UNAUTHORIZED),
        other => panic!("expected REQUEST_ERROR, got {other:?}"),
    }
    assert_eq!(stats.auth_refused_subscribe.get(), 1);

    // SUBSCRIBE_NAMESPACE of everything sees only what get covers: cam, and
    // later broadcasts under it, never hidden.
    let listen = d22::SubscribeNamespace {
        request_id: 2,
        prefix: vec![],
        parameters: d22::MessageParameters::default(),
    };
    let (_listen, mut names) = viewer.request(listen.to_vec().unwrap()).await;
    assert!(matches!(
        reply22(&mut names).await,
        RequestMessage::RequestOk(_)
    ));
    match reply22(&mut names).await {
        RequestMessage::Namespace(ns) => assert_eq!(ns.suffix, ["cam"]),
        other => panic!("expected NAMESPACE cam, got {other:?}"),
    }
    publisher
        .send(
            PublishNamespace {
                request_id: 4,
                namespace: vec!["cam".into(), "late".into()],
                parameters: Parameters::default(),
            }
            .into(),
        )
        .await;
    match reply22(&mut names).await {
        RequestMessage::Namespace(ns) => assert_eq!(ns.suffix, ["cam", "late"]),
        other => panic!("expected NAMESPACE cam/late (hidden filtered), got {other:?}"),
    }

    // Its SUBSCRIBE inside the grant reaches the publisher by its own name.
    let inside = d22::Subscribe {
        request_id: 4,
        namespace: vec!["cam".into()],
        name: "video".into(),
        parameters: d22::MessageParameters::default(),
    };
    let _sub = viewer.request(inside.to_vec().unwrap()).await;
    loop {
        match publisher.reply().await {
            ControlMessage::Subscribe(upstream) => {
                assert_eq!(upstream.namespace, ["cam"]);
                break;
            }
            ControlMessage::PublishNamespaceOk(_) => continue,
            other => panic!("expected the relay's SUBSCRIBE, got {other:?}"),
        }
    }
    assert!(viewer.transport.close_reason().is_none());
}

/// A token valid at SETUP closes its session UNAUTHORIZED when its `exp`
/// passes, counted as expired, on draft 14 as on lite.
#[monoio::test(enable_timer = true)]
async fn an_ietf_session_is_closed_when_its_token_expires() {
    let (shard, key) = keyed();
    // Three seconds: well past the dial, well inside `within`'s deadline.
    let claims = Claims::default()
        .with_root("room")
        .with_subscribe([""])
        .with_expires(SystemTime::now() + Duration::from_secs(3));
    let jwt = key.sign(&claims).unwrap();
    let client = Client14::admitted(&shard, &format!("/room?jwt={jwt}"), vec![]).await;
    assert_eq!(
        closed_with(&client.transport).await,
        SessionCode::UNAUTHORIZED.0
    );
    assert_eq!(shard.stats.auth_sessions_expired.get(), 1);
}
