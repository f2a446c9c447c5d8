use std::time::{Duration, SystemTime};

use moq_token::{Algorithm, Claims, Key, KeyOperation};

use super::*;

fn key(algorithm: Algorithm) -> Key {
    Key::generate(algorithm, None).expect("a key generates")
}

fn token(key: &Key, root: &str, put: &[&str], get: &[&str]) -> String {
    let claims = Claims::default()
        .with_root(root)
        .with_publish(put.iter().copied())
        .with_subscribe(get.iter().copied())
        .with_expires(SystemTime::now() + Duration::from_secs(3600));
    key.sign(&claims).expect("signs")
}

fn query(token: &str) -> String {
    format!("jwt={token}")
}

fn relay(key: &Key, public: &[&str]) -> Auth {
    let public: Vec<String> = public.iter().map(|p| p.to_string()).collect();
    Auth::new(Some(key.clone()), &public).expect("a usable key")
}

#[test]
fn a_token_grants_its_put_and_get_relative_to_the_dialled_path() {
    let key = key(Algorithm::HS256);
    let auth = relay(&key, &[]);
    let jwt = token(&key, "demo", &["alice"], &[""]);

    let grant = auth.verify("/demo", Some(&query(&jwt))).unwrap();
    assert!(grant.may_publish("alice"));
    assert!(grant.may_publish("alice/cam"));
    assert!(!grant.may_publish("bob"));
    assert!(
        !grant.may_publish("alicex"),
        "prefixes match whole segments"
    );
    assert!(grant.may_subscribe("bob"));
    assert!(grant.expires().is_some());

    // Dialled deeper than the root: the grant is rebased onto that path.
    let grant = auth.verify("/demo/alice", Some(&query(&jwt))).unwrap();
    assert!(grant.may_publish(""));
    assert!(grant.may_publish("cam"));
    assert!(grant.may_subscribe("anything"));
}

#[test]
fn a_token_for_another_root_is_refused() {
    let key = key(Algorithm::HS256);
    let auth = relay(&key, &[]);
    let jwt = token(&key, "demo", &[""], &[""]);
    assert_eq!(
        auth.verify("/other", Some(&query(&jwt))),
        Err(Refusal::WrongRoot)
    );
    assert_eq!(
        auth.verify("/demonstration", Some(&query(&jwt))),
        Err(Refusal::WrongRoot)
    );
}

#[test]
fn a_token_signed_by_another_key_or_mangled_is_invalid() {
    let ours = key(Algorithm::HS256);
    let theirs = key(Algorithm::HS256);
    let auth = relay(&ours, &[]);
    let forged = token(&theirs, "", &[""], &[""]);
    assert_eq!(
        auth.verify("/", Some(&query(&forged))),
        Err(Refusal::InvalidToken)
    );
    let good = token(&ours, "", &[""], &[""]);
    let mangled = format!("{}x", &good[..good.len() - 1]);
    assert_eq!(
        auth.verify("/", Some(&query(&mangled))),
        Err(Refusal::InvalidToken)
    );
    assert_eq!(
        auth.verify("/", Some("jwt=not.a.token")),
        Err(Refusal::InvalidToken)
    );
}

#[test]
fn an_expired_token_is_refused_as_expired() {
    let key = key(Algorithm::HS256);
    let auth = relay(&key, &[]);
    let claims = Claims::default()
        .with_root("")
        .with_subscribe([""])
        .with_expires(SystemTime::now() - Duration::from_secs(60));
    let jwt = key.sign(&claims).unwrap();
    assert_eq!(auth.verify("/", Some(&query(&jwt))), Err(Refusal::Expired));
}

#[test]
fn without_a_token_only_public_prefixes_are_open() {
    let key = key(Algorithm::HS256);
    let auth = relay(&key, &["anon"]);
    assert_eq!(auth.verify("/demo", None), Err(Refusal::MissingToken));
    assert_eq!(
        auth.verify("/demo", Some("x=1")),
        Err(Refusal::MissingToken)
    );
    assert_eq!(
        auth.verify("/demo", Some("jwt=")),
        Err(Refusal::MissingToken)
    );

    let grant = auth.verify("/anon/room", None).unwrap();
    assert!(grant.may_publish("cam") && grant.may_subscribe("cam"));
    // The root overlaps the public prefix from above: only it is open.
    let grant = auth.verify("/", None).unwrap();
    assert!(grant.may_publish("anon/x"));
    assert!(!grant.may_publish("demo/x"));
    assert!(!grant.may_subscribe("demo/x"));
}

#[test]
fn a_present_token_is_never_passed_over_for_public_access() {
    let key = key(Algorithm::HS256);
    let auth = relay(&key, &["anon"]);
    assert_eq!(
        auth.verify("/anon", Some("jwt=garbage")),
        Err(Refusal::InvalidToken)
    );
}

#[test]
fn without_a_key_every_token_is_refused() {
    let auth = Auth::new(None, &["anon".to_string()]).unwrap();
    let other = key(Algorithm::HS256);
    let jwt = token(&other, "", &[""], &[""]);
    assert_eq!(
        auth.verify("/anon", Some(&query(&jwt))),
        Err(Refusal::InvalidToken)
    );
    assert!(auth.verify("/anon", None).is_ok());
}

#[test]
fn the_jwt_parameter_is_percent_decoded_and_the_last_one_wins() {
    let key = key(Algorithm::HS256);
    let auth = relay(&key, &[]);
    let jwt = token(&key, "", &[""], &[""]);
    let encoded = jwt.replace('.', "%2E");
    assert!(auth
        .verify("/", Some(&format!("a=1&jwt={encoded}&b=2")))
        .is_ok());
    assert!(auth
        .verify("/", Some(&format!("jwt=garbage&jwt={jwt}")))
        .is_ok());
    assert_eq!(
        auth.verify("/", Some(&format!("jwt={jwt}&jwt=garbage"))),
        Err(Refusal::InvalidToken)
    );
}

#[test]
fn an_asymmetric_public_key_verifies_what_its_private_half_signed() {
    for algorithm in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
        let private = key(algorithm);
        let public = private.to_public().unwrap();
        let auth = Auth::new(Some(public), &[]).expect("a public key verifies");
        let jwt = token(&private, "room", &["me"], &[]);
        let grant = auth.verify("/room", Some(&query(&jwt))).unwrap();
        assert!(grant.may_publish("me"), "{algorithm:?}");
        assert!(!grant.may_subscribe("me"), "{algorithm:?}");
    }
}

#[test]
fn a_key_that_cannot_verify_is_refused_at_load() {
    let sign_only = key(Algorithm::HS256).with_operations([KeyOperation::Sign]);
    let error = Auth::new(Some(sign_only), &[]).unwrap_err();
    assert!(error.to_string().contains("verify"), "{error}");
}

#[test]
fn a_key_file_is_read_and_its_errors_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("root.jwk");
    key(Algorithm::HS256).to_file(&path).unwrap();
    assert!(Auth::load(Some(&path), &[]).is_ok());

    let missing = dir.path().join("missing.jwk");
    assert!(matches!(
        Auth::load(Some(&missing), &[]),
        Err(AuthSetupError::Unreadable(_))
    ));

    let junk = dir.path().join("junk.jwk");
    std::fs::write(&junk, "not a key").unwrap();
    assert!(matches!(
        Auth::load(Some(&junk), &[]),
        Err(AuthSetupError::Invalid(_))
    ));
}

#[test]
fn the_setup_role_must_be_a_direction_the_token_grants() {
    let key = key(Algorithm::HS256);
    let auth = relay(&key, &[]);
    let put_only = auth
        .verify("/", Some(&query(&token(&key, "", &["a"], &[]))))
        .unwrap();
    assert!(put_only.allows_role(Some(Role::Publisher)));
    assert!(!put_only.allows_role(Some(Role::Subscriber)));
    assert!(put_only.allows_role(None));
    assert!(!NOTHING.allows_role(None));
    assert!(Grant::everything().allows_role(Some(Role::Subscriber)));
}

#[test]
fn an_announce_request_sees_only_what_get_covers() {
    let key = key(Algorithm::HS256);
    let auth = relay(&key, &[]);
    let grant = auth
        .verify(
            "/",
            Some(&query(&token(&key, "", &[], &["live/a", "live/b"]))),
        )
        .unwrap();
    assert_eq!(grant.announce_scope("live/a/x"), AnnounceScope::All);
    assert_eq!(grant.announce_scope("live/a"), AnnounceScope::All);
    let scope = grant.announce_scope("live");
    assert_eq!(
        scope,
        AnnounceScope::Within(vec!["a".to_string(), "b".to_string()])
    );
    assert!(scope.covers("a/cam") && scope.covers("b"));
    assert!(!scope.covers("c") && !scope.covers("ab"));
    assert_eq!(grant.announce_scope("other"), AnnounceScope::Nothing);
    assert_eq!(grant.announce_scope("live/ab"), AnnounceScope::Nothing);
    assert_eq!(
        Grant::everything().announce_scope("any/thing"),
        AnnounceScope::All
    );
}

#[test]
fn a_setup_path_splits_into_path_and_query() {
    assert_eq!(split_query("/room?jwt=abc"), ("/room", Some("jwt=abc")));
    assert_eq!(split_query("/room"), ("/room", None));
    assert_eq!(split_query("/room?jwt=a#frag"), ("/room", Some("jwt=a")));
    assert_eq!(split_query(""), ("", None));
}

#[test]
fn only_a_cluster_root_grants_cluster_rights() {
    let key = key(Algorithm::HS256);
    let auth = relay(&key, &["anon"]);

    let cluster = token(&key, CLUSTER_ROOT, &[""], &[""]);
    let grant = auth.verify("/", Some(&query(&cluster))).unwrap();
    assert!(grant.is_cluster());
    assert!(grant.may_publish("any/where") && grant.may_subscribe(""));
    assert!(
        grant.expires().is_some(),
        "its exp still closes the session"
    );
    // Whatever path the peer dialled (moq-relay names `/.cluster`).
    assert!(auth
        .verify("/.cluster", Some(&query(&cluster)))
        .unwrap()
        .is_cluster());

    // A token for everything is still a client's; so is public access on a
    // relay that has a key.
    let everything = token(&key, "", &[""], &[""]);
    assert!(!auth
        .verify("/", Some(&query(&everything)))
        .unwrap()
        .is_cluster());
    assert!(!auth.verify("/anon", None).unwrap().is_cluster());
    // A cluster root under another root is no cluster right.
    let nested = token(&key, "room/.cluster", &[""], &[""]);
    assert!(!auth
        .verify("/room/.cluster", Some(&query(&nested)))
        .unwrap()
        .is_cluster());

    // Without a key no cluster token can verify: public sessions stay peers.
    let keyless = Auth::new(None, &["".to_string()]).unwrap();
    assert!(keyless.verify("/", None).unwrap().is_cluster());
}

#[test]
fn an_ietf_setup_token_is_the_jwt_and_must_agree_with_the_query() {
    let key = key(Algorithm::HS256);
    let auth = relay(&key, &[]);
    let jwt = token(&key, "room", &["cam"], &[""]);
    let other = token(&key, "room", &[""], &[]);
    let out_of_band = |t: &str| Some((0u64, t.as_bytes().to_vec()));

    // Type 0 alone: the JWT, checked against the dialled path.
    let setup = out_of_band(&jwt);
    let as_setup = |q: Option<&str>, s: &Option<(u64, Vec<u8>)>| {
        auth.verify_presented("/room", q, s.as_ref().map(|(k, v)| (*k, v.as_slice())))
    };
    let grant = as_setup(None, &setup).unwrap();
    assert!(grant.may_publish("cam") && !grant.may_publish("other"));
    // The same JWT in the query too is one credential; another is refused.
    assert_eq!(as_setup(Some(&query(&jwt)), &setup), Ok(grant));
    assert_eq!(
        as_setup(Some(&query(&other)), &setup),
        Err(Refusal::InvalidToken)
    );
    // Another token type, or a value that is not UTF-8, is not a JWT.
    assert_eq!(
        as_setup(None, &Some((1, jwt.as_bytes().to_vec()))),
        Err(Refusal::InvalidToken)
    );
    assert_eq!(
        as_setup(None, &Some((0, vec![0xff, 0xfe]))),
        Err(Refusal::InvalidToken)
    );
    // No SETUP token: the query alone, as for lite.
    assert_eq!(
        as_setup(Some(&query(&jwt)), &None),
        auth.verify("/room", Some(&query(&jwt)))
    );
    assert_eq!(as_setup(None, &None), Err(Refusal::MissingToken));
}
