//! A draft-22 PUBLISH: the peer offers one track on a bidi stream of its own.
//!
//! The track goes on offer as on draft 14 ([`ingest::offer`]): its broadcast is
//! announced and the router may want it later. Draft 20 took Forward out of
//! PUBLISH_OK, so the answer is a bare REQUEST_OK and the relay says "send" or
//! "stop" with REQUEST_UPDATE (FORWARD 1 / 0) on the same stream, each with a
//! Request ID of its own and answered by the publisher with REQUEST_OK. A
//! PUBLISH that asked for Forward 1 (or left it out, which means 1) is set to 0
//! at once while nobody wants the track. The publisher ends the track with
//! PUBLISH_DONE on its half; its half ending, or being reset, ends it too.

use std::rc::Rc;

use tracing::debug;

use super::control::Violation;
use super::ingest::{self, Offer};
use super::reply22::{refuse, write};
use super::state::{IetfSession, Incoming, WantedForward};
use crate::ietf::draft22::{
    self, param, Decode, MessageParameters, ParamValue, Publish, RequestMessage, RequestOk,
    RequestUpdate,
};
use crate::ietf::{DecodeError, Limits, SessionCode};
use crate::session::transport::{SendStream, Transport};
use crate::task::{race, Either};

/// REQUEST_ERROR UNINTERESTED (draft 16 on; draft 14's PUBLISH_ERROR 0x4).
const UNINTERESTED: u64 = 0x20;

/// PUBLISH_STATE_NOTIFY (draft 20 on): the publisher tells of a change it made
/// itself (largest location, forward); nothing for a relay to act on.
const PUBLISH_STATE_NOTIFY: u64 = 0x22;

/// PUBLISH_DONE status INTERNAL_ERROR, for a track whose stream ended without
/// PUBLISH_DONE.
const DONE_INTERNAL_ERROR: u64 = 0x0;

/// Stream reset code CANCELLED.
const STREAM_CANCELLED: u32 = 0x1;

/// What the publisher sent on its half after PUBLISH.
enum FromPublisher {
    Message(RequestMessage),
    /// PUBLISH_STATE_NOTIFY, skipped.
    Notice,
}

fn from_publisher(buf: &[u8], limits: &Limits) -> Result<(FromPublisher, usize), DecodeError> {
    match draft22::peek_type(buf)? {
        PUBLISH_STATE_NOTIFY => {
            draft22::skip_message(buf, limits).map(|(_, n)| (FromPublisher::Notice, n))
        }
        _ => RequestMessage::decode(buf, limits).map(|(m, n)| (FromPublisher::Message(m), n)),
    }
}

/// How the PUBLISH ended.
enum End {
    /// PUBLISH_DONE with this status and Stream Count: our half is finished.
    Done(u64, u64),
    /// The publisher's half ended or failed, or an update was refused: our
    /// half is reset.
    Abandoned,
    /// The session is over (closed, or a violation closed it).
    Session,
}

pub(super) async fn serve<T: Transport>(
    session: Rc<IetfSession<T>>,
    request: Publish,
    mut send: T::Send,
    mut incoming: Incoming<T::Recv>,
) {
    let id = request.request_id;
    if session.publishing.forward22.borrow().contains_key(&id) {
        return session.violation(Violation {
            code: SessionCode::INVALID_REQUEST_ID,
            reason: "request id reused",
        });
    }
    match ingest::offer(
        &session,
        id,
        &request.namespace,
        &request.name,
        request.track_alias,
    ) {
        Offer::Accepted => {}
        Offer::Refused(reason) => return refuse(&mut send, UNINTERESTED, reason).await,
        Offer::Unauthorized => {
            return refuse(
                &mut send,
                super::authorize::REQUEST_UNAUTHORIZED,
                "unauthorized",
            )
            .await
        }
        Offer::Closed => return,
    }
    let wanted = Rc::new(WantedForward::default());
    session
        .publishing
        .forward22
        .borrow_mut()
        .insert(id, wanted.clone());
    let end = match write(&mut send, &RequestOk::default()).await {
        true => {
            let run = exchange(
                &session,
                request.parameters.forward(),
                &wanted,
                &mut send,
                &mut incoming,
            );
            match race(run, session.closed.raised()).await {
                Either::Left(end) => end,
                Either::Right(()) => End::Session,
            }
        }
        false => End::Abandoned,
    };
    session.publishing.forward22.borrow_mut().remove(&id);
    match end {
        End::Done(status, streams) => {
            debug!(session = session.id, id, status, "draft-22 PUBLISH_DONE");
            ingest::publish_ended(&session, id, status, ingest::stream_count(streams));
            let _ = send.finish();
        }
        End::Abandoned => {
            debug!(session = session.id, id, "draft-22 PUBLISH abandoned");
            ingest::publish_ended(&session, id, DONE_INTERNAL_ERROR, None);
            let _ = send.reset(session.stream_code(STREAM_CANCELLED));
        }
        // `ingest::end` clears what the session held.
        End::Session => {}
    }
}

/// After REQUEST_OK: send each change of the wanted Forward state, and read
/// the publisher's half until it ends the track.
async fn exchange<T: Transport>(
    session: &Rc<IetfSession<T>>,
    publisher_forward: bool,
    wanted: &WantedForward,
    send: &mut T::Send,
    incoming: &mut Incoming<T::Recv>,
) -> End {
    let limits = session.shard.settings.limits;
    // The Forward state the publisher is in: what its PUBLISH asked for, until
    // our first update.
    let mut forward = publisher_forward;
    loop {
        let next = race(
            incoming.decode(|b| from_publisher(b, &limits)),
            wanted.differs_from(forward),
        )
        .await;
        let message = match next {
            Either::Right(()) => {
                forward = wanted.get();
                let update = RequestUpdate {
                    request_id: session.publishing.next_request_id22(),
                    parameters: MessageParameters(vec![(
                        param::FORWARD,
                        ParamValue::Bool(forward),
                    )]),
                };
                debug!(
                    session = session.id,
                    id = update.request_id,
                    forward,
                    "draft-22 REQUEST_UPDATE"
                );
                if !write(send, &update).await {
                    return End::Abandoned;
                }
                continue;
            }
            Either::Left(Ok(message)) => message,
            Either::Left(Err(None)) => return End::Abandoned,
            Either::Left(Err(Some(e))) => {
                debug!(session = session.id, error = %e, "malformed message on a PUBLISH stream");
                session.violation(Violation::protocol("malformed message on a PUBLISH stream"));
                return End::Session;
            }
        };
        match message {
            FromPublisher::Notice => {}
            // The answer to one of our updates.
            FromPublisher::Message(RequestMessage::RequestOk(_)) => {}
            // A refused update ends the request it updated (draft 22 section 10.9.1).
            FromPublisher::Message(RequestMessage::RequestError(e)) => {
                debug!(
                    session = session.id,
                    code = e.code,
                    "draft-22 REQUEST_UPDATE refused"
                );
                return End::Abandoned;
            }
            FromPublisher::Message(RequestMessage::PublishDone(done)) => {
                return End::Done(done.status, done.stream_count)
            }
            // The publisher's own update (a priority, a timeout): nothing a
            // relay forwards, answered so that the publisher does not wait.
            FromPublisher::Message(RequestMessage::RequestUpdate(_)) => {
                if !write(send, &RequestOk::default()).await {
                    return End::Abandoned;
                }
            }
            FromPublisher::Message(_) => {
                session.violation(Violation::protocol(
                    "unexpected message on a PUBLISH stream",
                ));
                return End::Session;
            }
        }
    }
}
