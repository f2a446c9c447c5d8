//! The IETF moq-transport sessions (drafts 14 and 22), beside the moq-lite one
//! in [`crate::session`].
//!
//! [`control`] holds draft 14's control stream rules as a pure state machine
//! ([`control::ControlState`]): SETUP and version negotiation, which messages may
//! come when, Request ID parity, order and MAX_REQUEST_ID limits, and which
//! replies match which requests. It decides; it does no I/O. The task that reads
//! the control stream feeds it every decoded message and closes the session with
//! the [`Violation`](control::Violation)'s code on the first error.
//!
//! [`bridge`] holds the pure rules for meeting the relay's model: namespace
//! tuples as broadcast paths, mirrored priorities, a relay group as one subgroup
//! stream, and an incoming subgroup stream's objects as frames. The tasks that
//! run a session over a `Transport` and bridge it into the router (announce
//! table, replicas, group cache) are `session` (draft 14) and `draft22`, with
//! `ingest` for the peer as a publisher, `fetch`, and `datagram`;
//! `docs/IETF.md` describes the mapping they follow.
//!
//! `authorize` decides, once SETUP is in, the session's root and grant from
//! its path and token, as a lite session's are decided, and checks each
//! request against the grant.

#[cfg(test)]
mod auth_tests;
mod authorize;
pub mod bridge;
pub mod control;
mod datagram;
pub mod draft22;
#[cfg(test)]
mod extension_tests;
mod fetch;
mod ingest;
mod publish22;
mod reply22;
pub mod session;
mod state;
#[cfg(test)]
mod test_clients;
#[cfg(test)]
mod tests;
mod window;
