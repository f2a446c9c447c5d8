//! Who an IETF session is and what it may do, decided once its SETUP is in,
//! the way moq-relay 0.17.10 decides it and with the same tokens as a lite
//! session ([`crate::auth`]).
//!
//! The dialled path is the WebTransport CONNECT URL's, or on raw QUIC the
//! SETUP's PATH parameter (draft 14 and draft 22 both carry one; moq-native
//! puts the URL's path and query there). It becomes the session's root:
//! namespaces are broadcast paths under it. The JWT is the path's `jwt` query
//! parameter or SETUP's AUTHORIZATION_TOKEN of type 0 (by value); both at
//! once must be the same JWT. A refused session is closed with UNAUTHORIZED
//! (0x2) before any request is served, and counted under the same
//! `auth_refused_*` reasons as a lite one; a request outside the grant is
//! refused alone with the draft's UNAUTHORIZED request error (0x1).

use std::rc::Rc;
use std::time::SystemTime;

use tracing::debug;

use super::control::Violation;
use super::state::IetfSession;
use crate::auth::{self, AnnounceScope, Grant, Refusal};
use crate::ietf::token::decode_setup_token;
use crate::ietf::{Parameters, SessionCode, PARAM_AUTHORIZATION_TOKEN};
use crate::session::transport::Transport;

/// The request error code for a request outside the grant: UNAUTHORIZED in
/// draft 14's SUBSCRIBE_ERROR, PUBLISH_NAMESPACE_ERROR, SUBSCRIBE_NAMESPACE_ERROR
/// and PUBLISH_ERROR tables and in draft 22's REQUEST_ERROR.
pub(super) const REQUEST_UNAUTHORIZED: u64 = 0x1;

/// Set the session's root and grant from its SETUP (`setup_path` is the PATH
/// parameter, raw QUIC only; `parameters` the SETUP's). False when the session
/// was refused and closed.
pub(super) fn admit<T: Transport>(
    session: &Rc<IetfSession<T>>,
    setup_path: Option<&str>,
    parameters: &Parameters,
) -> bool {
    let (path, query) = match session.transport.url() {
        Some(url) => url,
        None => auth::split_query(setup_path.unwrap_or("")),
    };
    let Some(checker) = &session.shard.settings.auth else {
        session.root.replace(crate::origin::normalize(path));
        let _ = session.grant.set(Grant::everything());
        return true;
    };
    let token = match parameters.bytes(PARAM_AUTHORIZATION_TOKEN) {
        None => None,
        Some(value) => match decode_setup_token(value, session.version) {
            Ok(token) => Some((token.kind, token.value)),
            Err(e) => {
                debug!(session = session.id, error = %e, "ietf setup token refused");
                session.violation(Violation {
                    code: e.code(),
                    reason: "unusable AUTHORIZATION_TOKEN",
                });
                return false;
            }
        },
    };
    // IETF SETUP names no role: the grant must allow something (moq-relay).
    let verified = checker
        .verify_presented(path, query, token)
        .and_then(|grant| match grant.allows_role(None) {
            true => Ok(grant),
            false => Err(Refusal::Role),
        });
    match verified {
        Ok(grant) => {
            // A relay peer shares the relay's whole namespace.
            let root = match grant.is_cluster() {
                true => String::new(),
                false => crate::origin::normalize(path),
            };
            session.root.replace(root);
            if let Some(expires) = grant.expires() {
                session.spawn(close_at_expiry(session.clone(), expires));
            }
            let _ = session.grant.set(grant);
            true
        }
        Err(refusal) => {
            // Neither path nor token is logged: the query may hold the JWT.
            debug!(session = session.id, reason = %refusal, "ietf session refused");
            refusal.counter(&session.shard.stats).inc();
            session.close(SessionCode::UNAUTHORIZED, "unauthorized");
            false
        }
    }
}

/// Whether the peer may subscribe to the broadcast at `relative` (to its
/// root); a refusal is counted.
pub(super) fn may_subscribe<T: Transport>(session: &IetfSession<T>, relative: &str) -> bool {
    let allowed = session.grant().may_subscribe(relative);
    if !allowed {
        debug!(session = session.id, broadcast = %relative, "ietf subscribe outside the grant");
        Refusal::Subscribe.counter(&session.shard.stats).inc();
    }
    allowed
}

/// Whether the peer may publish the broadcast at `relative`; a refusal is
/// counted.
pub(super) fn may_publish<T: Transport>(session: &IetfSession<T>, relative: &str) -> bool {
    let allowed = session.grant().may_publish(relative);
    if !allowed {
        debug!(session = session.id, broadcast = %relative, "ietf publish outside the grant");
        Refusal::Publish.counter(&session.shard.stats).inc();
    }
    allowed
}

/// What a namespace subscription to `relative` may see; `None` (counted)
/// when nothing under it is granted, so the request is refused.
pub(super) fn namespace_scope<T: Transport>(
    session: &IetfSession<T>,
    relative: &str,
) -> Option<AnnounceScope> {
    match session.grant().announce_scope(relative) {
        AnnounceScope::Nothing => {
            debug!(session = session.id, prefix = %relative, "ietf namespace subscription outside the grant");
            Refusal::AnnounceRequest.counter(&session.shard.stats).inc();
            None
        }
        scope => Some(scope),
    }
}

/// The token was checked at SETUP; the session lasts no longer than it, as
/// a lite session does (closed UNAUTHORIZED, counted as expired).
async fn close_at_expiry<T: Transport>(session: Rc<IetfSession<T>>, expires: SystemTime) {
    if !crate::auth::until_expired(expires, &session.closed).await {
        return;
    }
    debug!(
        session = session.id,
        "token expired; closing the ietf session"
    );
    session.shard.stats.auth_sessions_expired.inc();
    session.close(SessionCode::UNAUTHORIZED, "token expired");
}
