//! The draft-14 control stream's rules: what may arrive when, and the Request ID
//! accounting both ways.

use std::collections::HashMap;

use tracing::debug;

use crate::ietf::{
    ClientSetup, ControlMessage, DecodeError, MaxRequestId, ParameterValue, Parameters,
    RequestsBlocked, ServerSetup, SessionCode, Version, PARAM_MAX_REQUEST_ID, PARAM_PATH,
};

/// Why the session must close: a code from the draft's registry and what broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct Violation {
    /// The termination code to close with.
    pub code: SessionCode,
    /// What the peer did.
    pub reason: &'static str,
}

impl Violation {
    pub(super) fn protocol(reason: &'static str) -> Self {
        Violation {
            code: SessionCode::PROTOCOL_VIOLATION,
            reason,
        }
    }

    /// The violation for a control stream whose bytes do not decode. Every decode
    /// error but `Short` is malformed input (draft 14 section 3.4).
    pub fn malformed(error: &DecodeError) -> Option<Self> {
        match error {
            DecodeError::Short => None,
            _ => Some(Violation::protocol("malformed control message")),
        }
    }
}

/// Which end of the session this is. Draft 14 section 9.1: the client's Request
/// IDs are even, the server's odd, each one 2 above the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We accepted the connection.
    Server,
    /// We dialled.
    Client,
}

impl Role {
    fn first_request_id(self) -> u64 {
        match self {
            Role::Client => 0,
            Role::Server => 1,
        }
    }

    fn peer(self) -> Role {
        match self {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        }
    }
}

/// What a request we opened expects as its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// SUBSCRIBE: SUBSCRIBE_OK or SUBSCRIBE_ERROR.
    Subscribe,
    /// PUBLISH_NAMESPACE: PUBLISH_NAMESPACE_OK or _ERROR.
    PublishNamespace,
    /// SUBSCRIBE_NAMESPACE: SUBSCRIBE_NAMESPACE_OK or _ERROR.
    SubscribeNamespace,
    /// FETCH: FETCH_OK or FETCH_ERROR.
    Fetch,
    /// PUBLISH: PUBLISH_OK or PUBLISH_ERROR.
    Publish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing but the SETUP exchange yet.
    Setup,
    /// SETUP done in `Version`.
    Ready(Version),
}

/// The control stream's state for one session.
#[derive(Debug)]
pub struct ControlState {
    role: Role,
    phase: Phase,
    webtransport: bool,
    /// Requests the peer may have open at once, restored as they are used.
    window: u64,
    /// The Request ID the peer must use next.
    peer_next: u64,
    /// The MAX_REQUEST_ID we last gave the peer: its IDs stay below it.
    peer_limit: u64,
    /// The Request ID we use next.
    own_next: u64,
    /// The MAX_REQUEST_ID the peer gave us.
    own_limit: u64,
    /// Our requests still waiting for their OK or ERROR.
    pending: HashMap<u64, RequestKind>,
    /// The PATH setup parameter, raw QUIC only.
    path: Option<String>,
}

impl ControlState {
    /// A session we accepted, letting the peer open `window` requests ahead.
    /// `webtransport` says whether it runs over WebTransport, where the URL
    /// carries the path and a PATH parameter is refused.
    pub fn server(window: u64, webtransport: bool) -> Self {
        Self::new(Role::Server, window, webtransport)
    }

    /// A session we dial, and the CLIENT_SETUP that opens it.
    pub fn client(window: u64, webtransport: bool, path: Option<&str>) -> (Self, ClientSetup) {
        let state = Self::new(Role::Client, window, webtransport);
        let mut parameters = vec![(
            PARAM_MAX_REQUEST_ID,
            ParameterValue::Varint(state.peer_limit),
        )];
        if let (Some(path), false) = (path, webtransport) {
            parameters.push((PARAM_PATH, ParameterValue::Bytes(path.as_bytes().to_vec())));
        }
        let setup = ClientSetup {
            versions: Version::SETUP_NEGOTIATED.iter().map(|v| v.wire()).collect(),
            parameters: Parameters(parameters),
        };
        (state, setup)
    }

    fn new(role: Role, window: u64, webtransport: bool) -> Self {
        let peer_next = role.peer().first_request_id();
        ControlState {
            role,
            phase: Phase::Setup,
            webtransport,
            window,
            peer_next,
            peer_limit: limit_for(peer_next, window),
            own_next: role.first_request_id(),
            own_limit: 0,
            pending: HashMap::new(),
            path: None,
        }
    }

    /// The negotiated version, once SETUP is done.
    pub fn version(&self) -> Option<Version> {
        match self.phase {
            Phase::Setup => None,
            Phase::Ready(v) => Some(v),
        }
    }

    /// The client's PATH setup parameter (raw QUIC only).
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// Check one message from the peer. `Ok(Some(reply))` is a message to send
    /// back at once (SERVER_SETUP, or MAX_REQUEST_ID when the peer's window runs
    /// low); `Err` closes the session with the violation's code.
    pub fn receive(&mut self, msg: &ControlMessage) -> Result<Option<ControlMessage>, Violation> {
        use ControlMessage as M;
        let version = match (self.phase, self.role, msg) {
            (Phase::Setup, Role::Server, M::ClientSetup(setup)) => {
                return self.accept_client_setup(setup).map(|s| Some(s.into()))
            }
            (Phase::Setup, Role::Client, M::ServerSetup(setup)) => {
                self.accept_server_setup(setup)?;
                return Ok(None);
            }
            (Phase::Setup, _, _) => return Err(Violation::protocol("message before SETUP")),
            (Phase::Ready(_), _, M::ClientSetup(_) | M::ServerSetup(_)) => {
                return Err(Violation::protocol("SETUP after SETUP"))
            }
            (Phase::Ready(v), _, _) => v,
        };
        debug_assert_eq!(version, Version::Draft14);
        match msg {
            M::Subscribe(m) => self.peer_request(m.request_id),
            // moq-net gives the update a Request ID of its own (see control.rs).
            M::SubscribeUpdate(m) => self.peer_request(m.request_id),
            M::PublishNamespace(m) => self.peer_request(m.request_id),
            M::SubscribeNamespace(m) => self.peer_request(m.request_id),
            M::Fetch(m) => self.peer_request(m.request_id),
            M::Publish(m) => self.peer_request(m.request_id),
            M::SubscribeOk(m) => self.answer(m.request_id, RequestKind::Subscribe),
            M::SubscribeError(m) => self.answer(m.request_id, RequestKind::Subscribe),
            M::PublishNamespaceOk(m) => self.answer(m.request_id, RequestKind::PublishNamespace),
            M::PublishNamespaceError(m) => self.answer(m.request_id, RequestKind::PublishNamespace),
            M::SubscribeNamespaceOk(m) => {
                self.answer(m.request_id, RequestKind::SubscribeNamespace)
            }
            M::SubscribeNamespaceError(m) => {
                self.answer(m.request_id, RequestKind::SubscribeNamespace)
            }
            M::FetchOk(m) => self.answer(m.request_id, RequestKind::Fetch),
            M::FetchError(m) => self.answer(m.request_id, RequestKind::Fetch),
            M::PublishOk(m) => self.answer(m.request_id, RequestKind::Publish),
            M::PublishError(m) => self.answer(m.request_id, RequestKind::Publish),
            M::MaxRequestId(m) => {
                if m.request_id <= self.own_limit {
                    return Err(Violation::protocol("MAX_REQUEST_ID did not increase"));
                }
                self.own_limit = m.request_id;
                Ok(None)
            }
            M::Goaway(_) if self.role == Role::Server => {
                Err(Violation::protocol("GOAWAY from a client"))
            }
            // The rest name a request the session looks up (UNSUBSCRIBE, FETCH_CANCEL,
            // PUBLISH_DONE, PUBLISH_NAMESPACE_DONE/_CANCEL) or carry no request
            // (GOAWAY, REQUESTS_BLOCKED): one that crossed our own end of the request
            // in flight is no violation, so they pass.
            _ => Ok(None),
        }
    }

    fn accept_client_setup(&mut self, setup: &ClientSetup) -> Result<ServerSetup, Violation> {
        let version = setup
            .versions
            .iter()
            .find_map(|v| Version::from_wire(*v))
            .ok_or(Violation {
                code: SessionCode::VERSION_NEGOTIATION_FAILED,
                reason: "no offered version is spoken here",
            })?;
        self.accept_parameters(&setup.parameters)?;
        if let Some(path) = setup.parameters.bytes(PARAM_PATH) {
            if self.webtransport {
                return Err(Violation {
                    code: SessionCode::INVALID_PATH,
                    reason: "PATH parameter on a WebTransport session",
                });
            }
            let path = std::str::from_utf8(path).map_err(|_| Violation {
                code: SessionCode::MALFORMED_PATH,
                reason: "PATH is not UTF-8",
            })?;
            self.path = Some(path.to_owned());
        }
        self.phase = Phase::Ready(version);
        // The path's query may hold a token: never logged.
        let path = self
            .path
            .as_deref()
            .and_then(|p| p.split(['?', '#']).next());
        debug!(%version, ?path, "ietf setup accepted");
        Ok(ServerSetup {
            version: version.wire(),
            parameters: Parameters(vec![(
                PARAM_MAX_REQUEST_ID,
                ParameterValue::Varint(self.peer_limit),
            )]),
        })
    }

    fn accept_server_setup(&mut self, setup: &ServerSetup) -> Result<(), Violation> {
        let version = Version::from_wire(setup.version).ok_or(Violation {
            code: SessionCode::VERSION_NEGOTIATION_FAILED,
            reason: "the server chose a version we did not offer",
        })?;
        self.accept_parameters(&setup.parameters)?;
        self.phase = Phase::Ready(version);
        Ok(())
    }

    /// MAX_REQUEST_ID, once at most (absent: we may open no requests yet).
    fn accept_parameters(&mut self, parameters: &Parameters) -> Result<(), Violation> {
        let mut seen = false;
        for (key, value) in &parameters.0 {
            if *key != PARAM_MAX_REQUEST_ID {
                continue;
            }
            let ParameterValue::Varint(limit) = value else {
                return Err(Violation {
                    code: SessionCode::KEY_VALUE_FORMATTING_ERROR,
                    reason: "MAX_REQUEST_ID is not a varint",
                });
            };
            if std::mem::replace(&mut seen, true) {
                return Err(Violation::protocol("MAX_REQUEST_ID twice in SETUP"));
            }
            self.own_limit = *limit;
        }
        Ok(())
    }

    /// A request the peer opens: the next ID in its sequence and below its limit.
    fn peer_request(&mut self, id: u64) -> Result<Option<ControlMessage>, Violation> {
        if id != self.peer_next {
            return Err(Violation {
                code: SessionCode::INVALID_REQUEST_ID,
                reason: "request id out of sequence",
            });
        }
        if id >= self.peer_limit {
            return Err(Violation {
                code: SessionCode::TOO_MANY_REQUESTS,
                reason: "request id at or above MAX_REQUEST_ID",
            });
        }
        self.peer_next = id.saturating_add(2);
        // Top the window up once half of it is used, so that a busy peer sees one
        // MAX_REQUEST_ID per `window / 2` requests rather than one per request.
        let left = (self.peer_limit - self.peer_next.min(self.peer_limit)).div_ceil(2);
        if left <= self.window / 2 {
            self.peer_limit = limit_for(self.peer_next, self.window);
            return Ok(Some(
                MaxRequestId {
                    request_id: self.peer_limit,
                }
                .into(),
            ));
        }
        Ok(None)
    }

    /// An answer to one of our requests: it must be pending and of the right kind.
    fn answer(&mut self, id: u64, kind: RequestKind) -> Result<Option<ControlMessage>, Violation> {
        match self.pending.get(&id) {
            Some(open) if *open == kind => {
                self.pending.remove(&id);
                Ok(None)
            }
            Some(_) => Err(Violation::protocol(
                "reply of the wrong kind for its request",
            )),
            None => Err(Violation::protocol("reply to no open request")),
        }
    }

    /// Take the next Request ID for a request of ours, or the REQUESTS_BLOCKED to
    /// send when the peer's MAX_REQUEST_ID does not allow one yet.
    pub fn open_request(&mut self, kind: RequestKind) -> Result<u64, RequestsBlocked> {
        if self.version().is_none() || self.own_next >= self.own_limit {
            return Err(RequestsBlocked {
                maximum_request_id: self.own_limit,
            });
        }
        let id = self.own_next;
        self.own_next = id.saturating_add(2);
        self.pending.insert(id, kind);
        Ok(id)
    }

    /// Take the next Request ID for a message of ours that has one but gets
    /// no answer (SUBSCRIBE_UPDATE, which moq-net and aiomoqt number on draft
    /// 14), or the REQUESTS_BLOCKED to send when the peer's limit is reached.
    pub fn take_request_id(&mut self) -> Result<u64, RequestsBlocked> {
        let id = self.open_request(RequestKind::Subscribe)?;
        self.pending.remove(&id);
        Ok(id)
    }

    /// Our requests still waiting for an answer.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }
}

/// The MAX_REQUEST_ID that lets a peer whose next ID is `next` open `window` more.
fn limit_for(next: u64, window: u64) -> u64 {
    next.saturating_add(window.saturating_mul(2))
        .saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ietf::{
        Filter, GroupOrder, PublishNamespace, PublishNamespaceOk, Subscribe, SubscribeError,
        SubscribeOk, Unsubscribe,
    };

    fn client_setup(versions: Vec<u64>, parameters: Vec<(u64, ParameterValue)>) -> ControlMessage {
        ClientSetup {
            versions,
            parameters: Parameters(parameters),
        }
        .into()
    }

    fn subscribe(request_id: u64) -> ControlMessage {
        Subscribe {
            request_id,
            namespace: vec!["clock".into()],
            name: "seconds".into(),
            subscriber_priority: 0,
            group_order: GroupOrder::Publisher,
            forward: true,
            filter: Filter::LargestObject,
            parameters: Parameters::default(),
        }
        .into()
    }

    /// A server after a draft-14 CLIENT_SETUP granting it `max` request IDs.
    fn ready_server(window: u64, max: u64) -> ControlState {
        let mut s = ControlState::server(window, false);
        let setup = client_setup(
            vec![0xff00_0010, Version::Draft14.wire()],
            vec![(PARAM_MAX_REQUEST_ID, ParameterValue::Varint(max))],
        );
        s.receive(&setup).unwrap();
        s
    }

    #[test]
    fn the_server_picks_draft_14_and_grants_its_window() {
        let mut s = ControlState::server(4, false);
        let setup = client_setup(
            vec![0xff00_0010, Version::Draft14.wire()],
            vec![(PARAM_PATH, ParameterValue::Bytes(b"/room".to_vec()))],
        );
        let reply = s.receive(&setup).unwrap();
        assert_eq!(
            reply,
            Some(
                ServerSetup {
                    version: Version::Draft14.wire(),
                    // Client IDs 0, 2, 4, 6 are below 7.
                    parameters: Parameters(vec![(PARAM_MAX_REQUEST_ID, ParameterValue::Varint(7))]),
                }
                .into()
            )
        );
        assert_eq!(s.version(), Some(Version::Draft14));
        assert_eq!(s.path(), Some("/room"));
    }

    #[test]
    fn setup_failures_carry_the_draft_codes() {
        let mut s = ControlState::server(4, false);
        let err = s
            .receive(&client_setup(vec![0xff00_0010], vec![]))
            .unwrap_err();
        assert_eq!(err.code, SessionCode::VERSION_NEGOTIATION_FAILED);

        let mut s = ControlState::server(4, true);
        let path = vec![(PARAM_PATH, ParameterValue::Bytes(b"/x".to_vec()))];
        let err = s
            .receive(&client_setup(vec![Version::Draft14.wire()], path))
            .unwrap_err();
        assert_eq!(err.code, SessionCode::INVALID_PATH);

        let mut s = ControlState::server(4, false);
        let twice = vec![
            (PARAM_MAX_REQUEST_ID, ParameterValue::Varint(1)),
            (PARAM_MAX_REQUEST_ID, ParameterValue::Varint(2)),
        ];
        let err = s
            .receive(&client_setup(vec![Version::Draft14.wire()], twice))
            .unwrap_err();
        assert_eq!(err.code, SessionCode::PROTOCOL_VIOLATION);
    }

    #[test]
    fn messages_out_of_order_are_protocol_violations() {
        let mut s = ControlState::server(4, false);
        let err = s.receive(&subscribe(0)).unwrap_err();
        assert_eq!(err.code, SessionCode::PROTOCOL_VIOLATION);
        // The server never accepts SERVER_SETUP, nor a second CLIENT_SETUP.
        let server_setup: ControlMessage = ServerSetup {
            version: Version::Draft14.wire(),
            parameters: Parameters::default(),
        }
        .into();
        assert!(ControlState::server(4, false)
            .receive(&server_setup)
            .is_err());
        let mut s = ready_server(4, 0);
        let again = client_setup(vec![Version::Draft14.wire()], vec![]);
        assert_eq!(s.receive(&again).unwrap_err().reason, "SETUP after SETUP");
        assert_eq!(
            Violation::malformed(&DecodeError::Short),
            None,
            "a short buffer only waits"
        );
        assert_eq!(
            Violation::malformed(&DecodeError::InvalidValue { what: "x" }).map(|v| v.code),
            Some(SessionCode::PROTOCOL_VIOLATION)
        );
    }

    #[test]
    fn peer_request_ids_must_be_in_sequence_and_under_the_limit() {
        let mut s = ready_server(2, 0);
        // Odd IDs are the server's; skipping one is out of sequence.
        assert_eq!(
            s.receive(&subscribe(1)).unwrap_err().code,
            SessionCode::INVALID_REQUEST_ID
        );
        let mut s = ready_server(2, 0);
        assert_eq!(
            s.receive(&subscribe(2)).unwrap_err().code,
            SessionCode::INVALID_REQUEST_ID
        );
        // Window 2: IDs 0 and 2 are allowed (limit 3); using the first leaves one,
        // which is half, so the limit is topped up to 2 + 2*2 - 1 = 5.
        let mut s = ready_server(2, 0);
        assert_eq!(
            s.receive(&subscribe(0)).unwrap(),
            Some(MaxRequestId { request_id: 5 }.into())
        );
        assert_eq!(
            s.receive(&subscribe(2)).unwrap(),
            Some(MaxRequestId { request_id: 7 }.into())
        );
        // A window of 0 grants nothing: the first request is too many.
        let mut s = ready_server(0, 0);
        assert_eq!(
            s.receive(&subscribe(0)).unwrap_err().code,
            SessionCode::TOO_MANY_REQUESTS
        );
    }

    #[test]
    fn a_large_window_is_topped_up_in_batches() {
        let mut s = ready_server(8, 0);
        let mut grants = Vec::new();
        for i in 0..12 {
            if let Some(ControlMessage::MaxRequestId(m)) = s.receive(&subscribe(i * 2)).unwrap() {
                grants.push((i, m.request_id));
            }
        }
        // Initial limit 15 (IDs 0..=14); topped up after the 4th and 8th... request.
        assert_eq!(grants, [(3, 23), (7, 31), (11, 39)]);
    }

    #[test]
    fn our_requests_wait_for_the_peer_limit_and_match_their_answers() {
        let mut s = ready_server(4, 0);
        // The client granted nothing: we are blocked at 0.
        assert_eq!(
            s.open_request(RequestKind::PublishNamespace),
            Err(RequestsBlocked {
                maximum_request_id: 0
            })
        );
        let raise: ControlMessage = MaxRequestId { request_id: 4 }.into();
        s.receive(&raise).unwrap();
        // A limit that does not grow is a violation.
        assert!(s.receive(&raise).is_err());
        assert_eq!(s.open_request(RequestKind::PublishNamespace), Ok(1));
        assert_eq!(s.open_request(RequestKind::Subscribe), Ok(3));
        assert!(s.open_request(RequestKind::Subscribe).is_err());
        assert_eq!(s.pending_requests(), 2);

        // The wrong kind of answer, or an answer to nothing, closes the session.
        let wrong: ControlMessage = SubscribeError {
            request_id: 1,
            code: 0,
            reason: String::new(),
        }
        .into();
        assert_eq!(
            s.receive(&wrong).unwrap_err().code,
            SessionCode::PROTOCOL_VIOLATION
        );
        let ok: ControlMessage = PublishNamespaceOk { request_id: 1 }.into();
        assert_eq!(s.receive(&ok), Ok(None));
        assert!(s.receive(&ok).is_err(), "answered twice");
        let sub_ok: ControlMessage = SubscribeOk {
            request_id: 3,
            track_alias: 0,
            expires: 0,
            group_order: GroupOrder::Ascending,
            largest: None,
            parameters: Parameters::default(),
        }
        .into();
        assert_eq!(s.receive(&sub_ok), Ok(None));
        assert_eq!(s.pending_requests(), 0);
        // Messages naming the peer's requests pass to the session to look up.
        let unsub: ControlMessage = Unsubscribe { request_id: 40 }.into();
        assert_eq!(s.receive(&unsub), Ok(None));
    }

    #[test]
    fn a_client_offers_draft_14_and_accepts_its_server_setup() {
        let (mut c, setup) = ControlState::client(4, false, Some("/live"));
        assert_eq!(setup.versions, [Version::Draft14.wire()]);
        // Server IDs 1, 3, 5, 7 are below 8.
        assert_eq!(setup.parameters.varint(PARAM_MAX_REQUEST_ID), Some(8));
        assert_eq!(
            setup.parameters.bytes(PARAM_PATH),
            Some(b"/live".as_slice())
        );
        let (_, wt) = ControlState::client(4, true, Some("/live"));
        assert_eq!(wt.parameters.bytes(PARAM_PATH), None);

        let publish: ControlMessage = PublishNamespace {
            request_id: 1,
            namespace: vec![],
            parameters: Parameters::default(),
        }
        .into();
        assert!(c.receive(&publish).is_err(), "before SERVER_SETUP");
        let (mut c, _) = ControlState::client(4, false, None);
        let bad: ControlMessage = ServerSetup {
            version: 0xff00_0010,
            parameters: Parameters::default(),
        }
        .into();
        assert_eq!(
            c.receive(&bad).unwrap_err().code,
            SessionCode::VERSION_NEGOTIATION_FAILED
        );
        let good: ControlMessage = ServerSetup {
            version: Version::Draft14.wire(),
            parameters: Parameters(vec![(PARAM_MAX_REQUEST_ID, ParameterValue::Varint(2))]),
        }
        .into();
        assert_eq!(c.receive(&good), Ok(None));
        assert_eq!(c.open_request(RequestKind::Subscribe), Ok(0));
        assert!(c.open_request(RequestKind::Subscribe).is_err());
        // After SETUP, the server opens its own requests with odd IDs from 1.
        assert_eq!(c.receive(&publish).unwrap(), None);
    }

    fn publish(request_id: u64) -> ControlMessage {
        crate::ietf::Publish {
            request_id,
            namespace: vec!["clock".into()],
            name: "seconds".into(),
            track_alias: request_id,
            group_order: GroupOrder::Ascending,
            largest: None,
            forward: false,
            parameters: Parameters::default(),
        }
        .into()
    }

    #[test]
    fn a_publish_is_a_request_of_the_peer_and_its_ok_is_ours_to_send() {
        let mut s = ready_server(100, 10);
        // PUBLISH takes the client's next Request ID like any request.
        assert_eq!(s.receive(&publish(0)), Ok(None));
        assert_eq!(s.receive(&subscribe(2)), Ok(None));
        assert_eq!(
            s.receive(&publish(2)).unwrap_err().code,
            SessionCode::INVALID_REQUEST_ID
        );
        // PUBLISH_OK / PUBLISH_ERROR answer a PUBLISH of ours; we sent none.
        let mut s = ready_server(100, 10);
        let ok: ControlMessage = crate::ietf::PublishOk {
            request_id: 1,
            forward: true,
            subscriber_priority: 0,
            group_order: GroupOrder::Ascending,
            filter: Filter::LargestObject,
            parameters: Parameters::default(),
        }
        .into();
        assert_eq!(
            s.receive(&ok).unwrap_err().code,
            SessionCode::PROTOCOL_VIOLATION
        );
        let error: ControlMessage = crate::ietf::PublishError {
            request_id: 1,
            code: 4,
            reason: String::new(),
        }
        .into();
        assert_eq!(
            s.receive(&error).unwrap_err().code,
            SessionCode::PROTOCOL_VIOLATION
        );
    }
}
