//! The AUTHORIZATION_TOKEN setup parameter's value: the Token structure
//! (draft 14 section 8.2.1.1; the same fields on draft 22 in its varints).
//!
//! `Alias Type (i), [Token Alias (i)], [Token Type (i), Token Value (..)]`,
//! the value running to the end of the parameter. The relay advertises no
//! MAX_AUTH_TOKEN_CACHE_SIZE, so its default of 0 holds: nothing is ever
//! registered, REGISTER is read as a value (its alias unused), and DELETE or
//! USE_ALIAS in SETUP name an alias that cannot exist. moq-net 0.3.18
//! (`src/ietf/token.rs`) reads it the same way.

use super::{DecodeError, SessionCode, Version};

/// Alias Type: retire a registered alias.
pub const ALIAS_DELETE: u64 = 0x0;
/// Alias Type: register an alias for this type and value, then use them.
pub const ALIAS_REGISTER: u64 = 0x1;
/// Alias Type: use a registered alias.
pub const ALIAS_USE_ALIAS: u64 = 0x2;
/// Alias Type: the type and value follow inline.
pub const ALIAS_USE_VALUE: u64 = 0x3;

/// Token Type 0: a format agreed out of band (for moq-relay and qumo, a JWT).
pub const TOKEN_TYPE_OUT_OF_BAND: u64 = 0x0;

/// A token presented by value: its type and its bytes (borrowed from the
/// parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthToken<'a> {
    /// Token Type.
    pub kind: u64,
    /// Token Value.
    pub value: &'a [u8],
}

/// Why a SETUP's AUTHORIZATION_TOKEN cannot be used; each closes the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The structure does not decode, or has an Alias Type the draft does not
    /// define: KEY_VALUE_FORMATTING_ERROR.
    #[error("malformed AUTHORIZATION_TOKEN")]
    Malformed,
    /// DELETE or USE_ALIAS in SETUP, where no alias can have been registered:
    /// PROTOCOL_VIOLATION.
    #[error("AUTHORIZATION_TOKEN names an alias in SETUP")]
    Alias,
}

impl TokenError {
    /// The session termination code to close with.
    pub fn code(self) -> SessionCode {
        match self {
            TokenError::Malformed => SessionCode::KEY_VALUE_FORMATTING_ERROR,
            TokenError::Alias => SessionCode::PROTOCOL_VIOLATION,
        }
    }
}

/// Decode the Token structure of a SETUP's AUTHORIZATION_TOKEN value.
pub fn decode_setup_token(value: &[u8], version: Version) -> Result<AuthToken<'_>, TokenError> {
    let varint = |buf: &[u8]| -> Result<(u64, usize), TokenError> {
        let decoded = match version {
            Version::Draft14 => crate::lite::decode_varint(buf),
            Version::Draft22 => super::draft22::decode_varint(buf),
        };
        decoded.map_err(|_: DecodeError| TokenError::Malformed)
    };
    let (alias_type, mut at) = varint(value)?;
    match alias_type {
        ALIAS_USE_VALUE => {}
        ALIAS_REGISTER => {
            let (_alias, used) = varint(&value[at..])?;
            at += used;
        }
        ALIAS_DELETE | ALIAS_USE_ALIAS => return Err(TokenError::Alias),
        _ => return Err(TokenError::Malformed),
    }
    let (kind, used) = varint(&value[at..])?;
    Ok(AuthToken {
        kind,
        value: &value[at + used..],
    })
}

/// Encode a token by value (USE_VALUE), as a client's SETUP carries it.
pub fn encode_setup_token(token: AuthToken<'_>, version: Version) -> Vec<u8> {
    let mut out = Vec::with_capacity(token.value.len() + 10);
    for v in [ALIAS_USE_VALUE, token.kind] {
        match version {
            Version::Draft14 => {
                // Both are small constants or a caller's type: always a varint.
                let _ = crate::lite::encode_varint(v, &mut out);
            }
            Version::Draft22 => {
                let mut tmp = [0u8; 9];
                out.extend_from_slice(super::draft22::encode_varint(v, &mut tmp));
            }
        }
    }
    out.extend_from_slice(token.value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &[u8] = b"eyJhbGciOiJIUzI1NiJ9.e30.sig";

    #[test]
    fn a_token_by_value_round_trips_on_both_drafts() {
        for version in [Version::Draft14, Version::Draft22] {
            // A type past one byte in either varint, so the layouts differ.
            let token = AuthToken {
                kind: 300,
                value: JWT,
            };
            let bytes = encode_setup_token(token, version);
            assert_eq!(decode_setup_token(&bytes, version), Ok(token), "{version}");
        }
        // Golden: USE_VALUE (3), type 0, then the value, on draft 14.
        let bytes = encode_setup_token(
            AuthToken {
                kind: TOKEN_TYPE_OUT_OF_BAND,
                value: b"jwt",
            },
            Version::Draft14,
        );
        assert_eq!(bytes, b"\x03\x00jwt");
    }

    #[test]
    fn a_registration_is_read_as_a_value_and_alias_uses_are_refused() {
        // REGISTER, alias 7, type 0, "jwt".
        assert_eq!(
            decode_setup_token(b"\x01\x07\x00jwt", Version::Draft14),
            Ok(AuthToken {
                kind: 0,
                value: b"jwt"
            })
        );
        for alias_type in [ALIAS_DELETE, ALIAS_USE_ALIAS] {
            let bytes = [alias_type as u8, 0x07];
            assert_eq!(
                decode_setup_token(&bytes, Version::Draft14),
                Err(TokenError::Alias)
            );
        }
        assert_eq!(TokenError::Alias.code(), SessionCode::PROTOCOL_VIOLATION);
    }

    #[test]
    fn truncated_or_unknown_structures_are_malformed() {
        for bytes in [
            &b""[..],
            b"\x03",
            b"\x01",
            b"\x01\x07",
            b"\x04\x00jwt",
            b"\x03\x40",
        ] {
            assert_eq!(
                decode_setup_token(bytes, Version::Draft14),
                Err(TokenError::Malformed),
                "{bytes:?}"
            );
        }
        assert_eq!(
            TokenError::Malformed.code(),
            SessionCode::KEY_VALUE_FORMATTING_ERROR
        );
    }
}
