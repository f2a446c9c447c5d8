//! The session code's old names for the typed codes in [`crate::lite`]
//! ([`StreamCode`], [`SessionCode`]), kept so code written against them
//! still reads the same; new code names the typed constants directly.

use crate::lite::{SessionCode, StreamCode};

pub const SESSION_CANCEL: SessionCode = SessionCode::CANCEL;
pub const INTERNAL_ERROR: SessionCode = SessionCode::INTERNAL_ERROR;
pub const TIMEOUT: SessionCode = SessionCode::TIMEOUT;
pub const PROTOCOL_VIOLATION: SessionCode = SessionCode::PROTOCOL_VIOLATION;
pub const VERSION: SessionCode = SessionCode::VERSION;
pub const TOO_MANY_SESSIONS: SessionCode = SessionCode::TOO_MANY_SESSIONS;

pub const CANCEL: StreamCode = StreamCode::CANCEL;
pub const TOO_FAR_BEHIND: StreamCode = StreamCode::TOO_FAR_BEHIND;
pub const NO_CAPACITY: StreamCode = StreamCode::NO_CAPACITY;
pub const GROUP_TOO_LARGE: StreamCode = StreamCode::GROUP_TOO_LARGE;
pub const NOT_FOUND: StreamCode = StreamCode::NOT_FOUND;
pub const EVICTED: StreamCode = StreamCode::EVICTED;
pub const WRONG_SIZE: StreamCode = StreamCode::WRONG_SIZE;
pub const FRAME_TOO_LARGE: StreamCode = StreamCode::FRAME_TOO_LARGE;
pub const SESSION_CLOSED: StreamCode = StreamCode::SESSION_CLOSED;
pub const UNEXPECTED_STREAM: StreamCode = StreamCode::UNEXPECTED_STREAM;
