//! `GET /announced[/prefix]`: the live broadcasts, as JSON, for operators.
//!
//! The admin thread never reads a shard's state: it posts an
//! [`AnnouncedQuery`] to shard 0 over the mesh and waits, with a timeout,
//! for the answer on a one-slot channel. Every shard holds the whole
//! announce table (see [`crate::origin`]), so one shard is enough. Asking
//! costs the shards nothing until someone asks (no snapshot kept up to
//! date on every announcement), and a shard answers with `try_send`, so it
//! never waits for the admin thread.

use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// Most broadcasts one answer lists; `truncated` says when more exist.
pub const LIST_LIMIT: usize = 10_000;

/// A question for a shard: the broadcasts under `prefix`.
#[derive(Debug)]
pub struct AnnouncedQuery {
    pub prefix: String,
    pub limit: usize,
    pub reply: SyncSender<AnnouncedList>,
}

/// The answer, as `/announced` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnnouncedList {
    pub prefix: String,
    pub broadcasts: Vec<AnnouncedBroadcast>,
    /// More broadcasts matched than [`LIST_LIMIT`].
    pub truncated: bool,
}

/// One live broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnnouncedBroadcast {
    pub path: String,
    /// The shard and connection of the session publishing it (the one in
    /// use when several do).
    pub publisher_shard: usize,
    pub publisher_session: u64,
    /// Relays it passed through before this one.
    pub hops: usize,
}

/// Why no list came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnnouncedError {
    #[error("the relay is not running yet")]
    NotRunning,
    #[error("the shards have stopped")]
    Stopped,
    #[error("no answer from the shard within {0:?}")]
    TimedOut(Duration),
}

type Ask = Box<dyn Fn(AnnouncedQuery) -> bool + Send + Sync>;

/// Where `/announced` sends its questions: empty until the relay runs.
#[derive(Default)]
pub struct AnnouncedSource {
    ask: Mutex<Option<Ask>>,
}

impl std::fmt::Debug for AnnouncedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnnouncedSource").finish_non_exhaustive()
    }
}

impl AnnouncedSource {
    /// Send questions with `ask`, which posts one to a shard and says
    /// whether it was delivered.
    pub fn attach(&self, ask: impl Fn(AnnouncedQuery) -> bool + Send + Sync + 'static) {
        *self.ask.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(ask));
    }

    /// The broadcasts under `prefix` (a normalised path), waiting at most
    /// `wait`.
    pub fn list(&self, prefix: &str, wait: Duration) -> Result<AnnouncedList, AnnouncedError> {
        let (reply, answer) = sync_channel(1);
        let query = AnnouncedQuery {
            prefix: prefix.to_owned(),
            limit: LIST_LIMIT,
            reply,
        };
        {
            let ask = self.ask.lock().unwrap_or_else(|e| e.into_inner());
            let ask = ask.as_ref().ok_or(AnnouncedError::NotRunning)?;
            if !ask(query) {
                return Err(AnnouncedError::Stopped);
            }
        }
        answer.recv_timeout(wait).map_err(|e| match e {
            RecvTimeoutError::Timeout => AnnouncedError::TimedOut(wait),
            RecvTimeoutError::Disconnected => AnnouncedError::Stopped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn a_question_is_answered_by_whoever_is_attached() {
        let source = AnnouncedSource::default();
        assert_eq!(source.list("", WAIT), Err(AnnouncedError::NotRunning));
        source.attach(|query: AnnouncedQuery| {
            // Answered from another thread, as a shard would.
            std::thread::spawn(move || {
                let _ = query.reply.try_send(AnnouncedList {
                    prefix: query.prefix,
                    broadcasts: Vec::new(),
                    truncated: false,
                });
            });
            true
        });
        let list = source.list("room/1", WAIT).unwrap();
        assert_eq!(list.prefix, "room/1");
    }

    #[test]
    fn a_stopped_or_silent_shard_is_an_error_not_a_hang() {
        let source = AnnouncedSource::default();
        source.attach(|_| false);
        assert_eq!(source.list("", WAIT), Err(AnnouncedError::Stopped));
        // Delivered, then dropped unanswered (the shard stopped meanwhile).
        source.attach(|query| {
            drop(query);
            true
        });
        assert_eq!(source.list("", WAIT), Err(AnnouncedError::Stopped));
        let held = Mutex::new(Vec::new());
        source.attach(move |query| {
            held.lock().unwrap().push(query);
            true
        });
        let short = Duration::from_millis(20);
        assert_eq!(source.list("", short), Err(AnnouncedError::TimedOut(short)));
    }
}
