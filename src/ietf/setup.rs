//! CLIENT_SETUP (0x20) and SERVER_SETUP (0x21), draft 14 section 9.3.

use crate::lite::coding::{Reader, Writer};
use crate::lite::{DecodeError, EncodeError, Limits};

use super::coding::{Control, Parameters};
use super::Version;

/// Setup parameter PATH (0x01): the path part of a raw-QUIC `moqt://` URL.
pub const PARAM_PATH: u64 = 0x01;
/// Setup parameter MAX_REQUEST_ID (0x02): the first Request ID the peer may not use.
pub const PARAM_MAX_REQUEST_ID: u64 = 0x02;
/// Parameter AUTHORIZATION_TOKEN (0x03).
pub const PARAM_AUTHORIZATION_TOKEN: u64 = 0x03;
/// Setup parameter MAX_AUTH_TOKEN_CACHE_SIZE (0x04).
pub const PARAM_MAX_AUTH_TOKEN_CACHE_SIZE: u64 = 0x04;
/// Setup parameter AUTHORITY (0x05), as moq-net sends it.
pub const PARAM_AUTHORITY: u64 = 0x05;
/// Setup parameter MOQT_IMPLEMENTATION (0x07), as moq-net sends it.
pub const PARAM_IMPLEMENTATION: u64 = 0x07;

/// Most versions a CLIENT_SETUP may offer. The draft sets no bound; this keeps the
/// list's allocation small whatever the count claims.
pub const MAX_SETUP_VERSIONS: usize = 64;

/// CLIENT_SETUP: the versions the client speaks, preferred first, and its
/// parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSetup {
    /// Offered version numbers (see [`Version::wire`]), unknown ones included.
    pub versions: Vec<u64>,
    /// Setup parameters (PATH, MAX_REQUEST_ID, ...).
    pub parameters: Parameters,
}

impl Control for ClientSetup {
    const TYPE: u64 = 0x20;
    const WHAT: &'static str = "CLIENT_SETUP";

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        if self.versions.len() > MAX_SETUP_VERSIONS {
            return Err(EncodeError::TooLong {
                what: "setup versions",
                len: self.versions.len() as u64,
                max: MAX_SETUP_VERSIONS as u64,
            });
        }
        w.varint("setup versions", self.versions.len() as u64)?;
        for v in &self.versions {
            w.varint("version", *v)?;
        }
        self.parameters.write(w)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, _: &Limits) -> Result<Self, DecodeError> {
        let count = r.varint()?;
        if count > MAX_SETUP_VERSIONS as u64 {
            return Err(DecodeError::TooLong {
                what: "setup versions",
                len: count,
                max: MAX_SETUP_VERSIONS as u64,
            });
        }
        let mut versions = Vec::with_capacity(count as usize);
        for _ in 0..count {
            versions.push(r.varint()?);
        }
        Ok(ClientSetup {
            versions,
            parameters: Parameters::read(r)?,
        })
    }
}

/// SERVER_SETUP: the version the server chose and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSetup {
    /// The selected version number.
    pub version: u64,
    /// Setup parameters (MAX_REQUEST_ID, ...).
    pub parameters: Parameters,
}

impl Control for ServerSetup {
    const TYPE: u64 = 0x21;
    const WHAT: &'static str = "SERVER_SETUP";

    fn write_body(&self, w: &mut Writer<'_>, _: Version) -> Result<(), EncodeError> {
        w.varint("version", self.version)?;
        self.parameters.write(w)
    }

    fn read_body(r: &mut Reader<'_>, _: Version, _: &Limits) -> Result<Self, DecodeError> {
        Ok(ServerSetup {
            version: r.varint()?,
            parameters: Parameters::read(r)?,
        })
    }
}
