//! Who may publish and subscribe where: moq-relay's tokens, checked the way
//! moq-relay 0.14 (the last with `--auth-key`) checks them.
//!
//! A session's credentials are the path and query of the URL its client
//! dialled: the WebTransport CONNECT URL, or on raw QUIC the lite-05+ SETUP
//! path (`/room?jwt=...`) or an IETF SETUP's PATH parameter. An IETF session
//! may present the JWT in SETUP's AUTHORIZATION_TOKEN instead
//! ([`Auth::verify_presented`]). The `jwt` query parameter is a JWT signed with the
//! key in `auth.key_file` (a JWK, as `moq-token-cli generate` writes it),
//! verified by the `moq-token` crate itself, so a token minted for moq-relay
//! works here unchanged. Its claims:
//!
//! - `root`: the path the token is for. It must overlap the dialled path:
//!   the path is under the root, or the root under the path.
//! - `put` / `get`: prefixes the holder may publish / subscribe under,
//!   relative to `root` (`""` is everything under it).
//! - `exp` (checked at connect, and the session is closed when it passes),
//!   `iat`.
//!
//! [`moq_token::Claims::authorize`] turns the claims into prefixes relative
//! to the dialled path, which is the session's root: the [`Grant`] the
//! session consults for every announce, subscribe and announce request.
//!
//! Without a token, `auth.public` prefixes (moq-relay's `--auth-public`)
//! grant both directions to anyone whose path overlaps one of them. A token
//! that is present is never passed over for public access, even when it is
//! refused.
//!
//! **Cluster rights.** A token whose `root` is [`CLUSTER_ROOT`] (`.cluster`)
//! makes its holder a relay peer: its announcements keep their hop lists,
//! which steer routing and loop detection, and it is granted the relay's
//! whole namespace whatever path it dialled. moq-token 0.7 has no `cluster`
//! claim (moq-token-cli cannot write one), so the right rides the claim it
//! can: `moq-token sign --root .cluster --publish "" --subscribe ""`. Any
//! other session is a client: the hops it sends are dropped, so it cannot
//! pose as a route, nor end every route through a relay by naming it. An
//! open relay, and one with `auth.public` but no key (where no cluster
//! token could verify), treat every session as a peer, as before.

use std::path::Path;
use std::time::{Duration, SystemTime};

use moq_token::{Claims, Key, KeyOperation};

use crate::lite::Role;
use crate::metrics::{Figure, RelayStats};
use crate::origin::{normalize, strip_prefix};
use crate::task::{race, Either, Signal};

/// The token `root` that grants cluster rights; moq-relay marks its peer
/// dials with the same name (`/.cluster`).
pub const CLUSTER_ROOT: &str = ".cluster";

/// The `auth` section, loaded: the verifying key and the public prefixes.
#[derive(Debug)]
pub struct Auth {
    key: Option<Key>,
    /// Normalised; `""` makes everything public.
    public: Vec<String>,
}

/// Why `auth` could not be set up from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The key file is missing or unreadable.
    #[error("{0}")]
    Unreadable(#[source] std::io::Error),
    /// The key file holds no usable verifying key.
    #[error("{0}")]
    Invalid(String),
}

/// Why a session, or one request of it, was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `jwt`, and the path is under no `auth.public` prefix.
    #[error("no token, and the path is not public")]
    MissingToken,
    /// A `jwt` that does not decode or verify (bad signature, wrong
    /// algorithm, no `put` nor `get`, beyond the key's scope), or any `jwt`
    /// when the relay has no `auth.key_file`.
    #[error("invalid token")]
    InvalidToken,
    /// A valid token whose `exp` has passed.
    #[error("token expired")]
    Expired,
    /// A valid token that grants nothing at the dialled path.
    #[error("token root does not cover the path")]
    WrongRoot,
    /// The session's SETUP role (publisher or subscriber) is a direction
    /// the token does not grant.
    #[error("token does not grant the role the client named")]
    Role,
    /// An announced broadcast outside `put`.
    #[error("announce outside the token's put")]
    Publish,
    /// A SUBSCRIBE or TRACK request outside `get`.
    #[error("subscribe outside the token's get")]
    Subscribe,
    /// An ANNOUNCE_REQUEST prefix with nothing under `get`.
    #[error("announce request outside the token's get")]
    AnnounceRequest,
}

impl Refusal {
    /// The counter this refusal adds to.
    pub fn counter(self, stats: &RelayStats) -> &Figure {
        match self {
            Refusal::MissingToken => &stats.auth_refused_missing_token,
            Refusal::InvalidToken => &stats.auth_refused_invalid_token,
            Refusal::Expired => &stats.auth_refused_expired,
            Refusal::WrongRoot => &stats.auth_refused_wrong_root,
            Refusal::Role => &stats.auth_refused_role,
            Refusal::Publish => &stats.auth_refused_publish,
            Refusal::Subscribe => &stats.auth_refused_subscribe,
            Refusal::AnnounceRequest => &stats.auth_refused_announce_request,
        }
    }
}

impl Auth {
    /// Load the key (when there is one) and keep the public prefixes.
    pub fn load(key_file: Option<&Path>, public: &[String]) -> Result<Self, AuthSetupError> {
        let key = match key_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(AuthSetupError::Unreadable)?;
                Some(
                    Key::from_str(&text)
                        .map_err(|e| AuthSetupError::Invalid(format!("not a JWK key: {e}")))?,
                )
            }
            None => None,
        };
        Self::new(key, public)
    }

    /// As [`Auth::load`], with the key already parsed.
    pub fn new(key: Option<Key>, public: &[String]) -> Result<Self, AuthSetupError> {
        if let Some(key) = &key {
            check_key(key)?;
        }
        Ok(Auth {
            key,
            public: public.iter().map(|p| normalize(p)).collect(),
        })
    }

    /// The grant for a session that dialled `path` with `query` (without
    /// `?`): verified against the exact path that becomes its root.
    pub fn verify(&self, path: &str, query: Option<&str>) -> Result<Grant, Refusal> {
        self.verify_jwt(path, query.and_then(jwt_parameter))
    }

    /// As [`Auth::verify`], for an IETF session that may also present its
    /// JWT in SETUP's AUTHORIZATION_TOKEN, as `(token type, value)`. As in
    /// moq-relay 0.17.10 (moq-auth): a token of type 0 (out of band) is the
    /// JWT; the same JWT in the query too is one credential, a different one
    /// is refused, and so is a token of any other type.
    pub fn verify_presented(
        &self,
        path: &str,
        query: Option<&str>,
        setup_token: Option<(u64, &[u8])>,
    ) -> Result<Grant, Refusal> {
        let in_query = query.and_then(jwt_parameter);
        let jwt = match setup_token {
            None => in_query,
            Some((crate::ietf::token::TOKEN_TYPE_OUT_OF_BAND, value)) => {
                let jwt = std::str::from_utf8(value).map_err(|_| Refusal::InvalidToken)?;
                match in_query {
                    Some(other) if other != jwt => return Err(Refusal::InvalidToken),
                    _ => Some(jwt.to_owned()),
                }
            }
            Some(_) => return Err(Refusal::InvalidToken),
        };
        self.verify_jwt(path, jwt)
    }

    fn verify_jwt(&self, path: &str, jwt: Option<String>) -> Result<Grant, Refusal> {
        let (claims, cluster) = match jwt.filter(|t| !t.is_empty()) {
            Some(token) => {
                let key = self.key.as_ref().ok_or(Refusal::InvalidToken)?;
                let claims = key.verify(&token).map_err(|e| match e {
                    moq_token::Error::TokenExpired => Refusal::Expired,
                    _ => Refusal::InvalidToken,
                })?;
                if normalize(&claims.root) == CLUSTER_ROOT {
                    return Ok(Grant {
                        cluster: true,
                        expires: claims.expires,
                        ..Grant::everything()
                    });
                }
                (claims, false)
            }
            None => {
                // moq-relay: public access applies where a public prefix and
                // the path overlap, either way round.
                let root = normalize(path);
                let overlaps = |p: &String| {
                    strip_prefix(&root, p).is_some() || strip_prefix(p, &root).is_some()
                };
                if !self.public.iter().any(overlaps) {
                    return Err(Refusal::MissingToken);
                }
                let claims = Claims::default()
                    .with_subscribe(self.public.iter().cloned())
                    .with_publish(self.public.iter().cloned());
                // A peer's only where no cluster token could verify.
                (claims, self.key.is_none())
            }
        };
        let permissions = claims.authorize(path).map_err(|_| Refusal::WrongRoot)?;
        Ok(Grant {
            publish: permissions.publish,
            subscribe: permissions.subscribe,
            expires: claims.expires,
            cluster,
        })
    }
}

/// Refuse, at start-up, a key that cannot verify, rather than every token
/// later: `key_ops` must allow it, and its verifying half must build (the
/// crate builds it lazily, on the first token).
fn check_key(key: &Key) -> Result<(), AuthSetupError> {
    if !key.operations.contains(&KeyOperation::Verify) {
        return Err(AuthSetupError::Invalid(
            "the key's key_ops do not include \"verify\"".into(),
        ));
    }
    // Verifying builds the verifying half first, so any string shows
    // whether it builds; the string itself then fails as a token.
    match key.verify("") {
        Err(moq_token::Error::Key(e)) => Err(AuthSetupError::Invalid(e.to_string())),
        _ => Ok(()),
    }
}

/// The `jwt` query parameter, percent-decoded; an empty one is none. The
/// last wins, as in moq-relay.
fn jwt_parameter(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(name, value)| name == "jwt" && !value.is_empty())
        .map(|(_, value)| value.into_owned())
        .last()
}

/// Split a raw-QUIC SETUP path into its path and query (without `?`). A
/// fragment never travels, but is dropped should a client send one.
pub fn split_query(target: &str) -> (&str, Option<&str>) {
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// What a session may do, as prefixes relative to its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    publish: Vec<String>,
    subscribe: Vec<String>,
    expires: Option<SystemTime>,
    /// A relay peer: its announcements' hops are kept, and its root is the
    /// relay's whole namespace.
    cluster: bool,
}

/// Where an ANNOUNCE_REQUEST may look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnounceScope {
    /// Everything under the requested prefix.
    All,
    /// Only these suffixes of the requested prefix (and what is under them).
    Within(Vec<String>),
    /// Nothing: the request is answered with an empty set.
    Nothing,
}

impl AnnounceScope {
    /// Whether a broadcast at `suffix` (of the requested prefix) is in scope.
    pub fn covers(&self, suffix: &str) -> bool {
        match self {
            AnnounceScope::All => true,
            AnnounceScope::Within(prefixes) => prefixes
                .iter()
                .any(|p| strip_prefix(&normalize(suffix), p).is_some()),
            AnnounceScope::Nothing => false,
        }
    }
}

/// A grant with nothing in it: what a session holds until it is verified.
pub static NOTHING: Grant = Grant {
    publish: Vec::new(),
    subscribe: Vec::new(),
    expires: None,
    cluster: false,
};

impl Grant {
    /// Everything, for ever, as a peer: a relay without `auth`, or a relay
    /// we dialled.
    pub fn everything() -> Self {
        Grant {
            publish: vec![String::new()],
            subscribe: vec![String::new()],
            expires: None,
            cluster: true,
        }
    }

    /// Whether the holder is a relay peer (see the module's "Cluster
    /// rights"): its announcements' hop lists are believed.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// When the token behind this grant expires, if it does.
    pub fn expires(&self) -> Option<SystemTime> {
        self.expires
    }

    /// Whether the peer may announce a broadcast at `path` (relative to
    /// the root).
    pub fn may_publish(&self, path: &str) -> bool {
        covered(&self.publish, path)
    }

    /// Whether the peer may subscribe to a broadcast at `path`.
    pub fn may_subscribe(&self, path: &str) -> bool {
        covered(&self.subscribe, path)
    }

    /// Whether the token grants the direction a client named in SETUP; a
    /// client that names none may use whatever it was granted (moq-relay).
    pub fn allows_role(&self, role: Option<Role>) -> bool {
        match role {
            Some(Role::Publisher) => !self.publish.is_empty(),
            Some(Role::Subscriber) => !self.subscribe.is_empty(),
            None => !self.publish.is_empty() || !self.subscribe.is_empty(),
        }
    }

    /// What an ANNOUNCE_REQUEST for `prefix` may see: all of it when a
    /// `get` prefix covers it, the `get` prefixes under it, or nothing.
    pub fn announce_scope(&self, prefix: &str) -> AnnounceScope {
        let prefix = normalize(prefix);
        if covered(&self.subscribe, &prefix) {
            return AnnounceScope::All;
        }
        let within: Vec<String> = self
            .subscribe
            .iter()
            .filter_map(|granted| strip_prefix(&normalize(granted), &prefix).map(str::to_owned))
            .collect();
        match within.is_empty() {
            true => AnnounceScope::Nothing,
            false => AnnounceScope::Within(within),
        }
    }
}

/// Whether one of `prefixes` covers `path`, segment-wise.
fn covered(prefixes: &[String], path: &str) -> bool {
    let path = normalize(path);
    prefixes
        .iter()
        .any(|p| strip_prefix(&path, &normalize(p)).is_some())
}

#[cfg(test)]
mod tests;

/// Wait until a token's `expires` (true), or until `stop` is raised first
/// (false): a session lasts no longer than the token it was let in with
/// (moq-relay closes it the same way). Either protocol's session uses it.
pub async fn until_expired(expires: SystemTime, stop: &Signal) -> bool {
    // In steps of at most a day: a timer far out is not worth trusting.
    const STEP: Duration = Duration::from_secs(24 * 3600);
    loop {
        let left = expires
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        if left.is_zero() {
            return true;
        }
        let wait = monoio::time::sleep(left.min(STEP));
        if let Either::Right(()) = race(wait, stop.raised()).await {
            return false;
        }
    }
}
