//! The URL of a relay this one dials (`relay.upstream_url`): parsed once at
//! config load, pure (no I/O), so the config can check it.

use std::fmt;

/// How the dialled relay's certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerTrust {
    /// `moql://` or `https://`: the system roots, or the CA file if set.
    Roots,
    /// `http://`: the certificate whose SHA-256 the peer serves at
    /// `/certificate.sha256` on TCP at the same host and port (a relay
    /// with a generated certificate).
    FetchedPin,
}

/// A parsed `moql://`, `https://` or `http://` relay URL.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerUrl {
    pub trust: PeerTrust,
    /// Host name or IP literal (brackets removed); also the TLS server name.
    pub host: String,
    pub port: u16,
    /// The path and query sent in the lite-05+ SETUP (`/` and a `?jwt=`
    /// token, say); `None` when the URL has neither.
    pub setup_path: Option<String>,
}

/// Never print the query: it may hold a token.
impl fmt::Debug for PeerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for PeerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.trust {
            PeerTrust::Roots => "moql",
            PeerTrust::FetchedPin => "http",
        };
        match self.host.contains(':') {
            true => write!(f, "{scheme}://[{}]:{}", self.host, self.port),
            false => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

/// Why a relay URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerUrlError {
    #[error("the scheme must be moql://, https:// or http://")]
    Scheme,
    #[error("no host")]
    NoHost,
    #[error("the port is not a number from 1 to 65535")]
    Port,
}

/// The port a URL without one means (moq-relay's default).
pub const DEFAULT_PORT: u16 = 443;

impl PeerUrl {
    pub fn parse(url: &str) -> Result<PeerUrl, PeerUrlError> {
        let (trust, rest) = if let Some(rest) = url.strip_prefix("moql://") {
            (PeerTrust::Roots, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (PeerTrust::Roots, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (PeerTrust::FetchedPin, rest)
        } else {
            return Err(PeerUrlError::Scheme);
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or(PeerUrlError::NoHost)?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(PeerUrlError::NoHost);
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(PeerUrlError::Port),
            },
        };
        let setup_path = match path {
            "" => None,
            p if p.starts_with('?') => Some(format!("/{p}")),
            p => Some(p.to_string()),
        };
        Ok(PeerUrl {
            trust,
            host: host.to_string(),
            port,
            setup_path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_ports_and_paths() {
        let u = PeerUrl::parse("http://127.0.0.1:4443").unwrap();
        assert_eq!(u.trust, PeerTrust::FetchedPin);
        assert_eq!(
            (u.host.as_str(), u.port, u.setup_path),
            ("127.0.0.1", 4443, None)
        );

        let u = PeerUrl::parse("moql://relay.example.com/?jwt=abc").unwrap();
        assert_eq!(u.trust, PeerTrust::Roots);
        assert_eq!(u.port, DEFAULT_PORT);
        assert_eq!(u.setup_path.as_deref(), Some("/?jwt=abc"));

        let u = PeerUrl::parse("https://[::1]:9000?jwt=t").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        assert_eq!(u.setup_path.as_deref(), Some("/?jwt=t"));
    }

    #[test]
    fn refusals() {
        assert_eq!(PeerUrl::parse("ftp://x:1"), Err(PeerUrlError::Scheme));
        assert_eq!(PeerUrl::parse("moql://:1"), Err(PeerUrlError::NoHost));
        assert_eq!(PeerUrl::parse("moql://x:0"), Err(PeerUrlError::Port));
        assert_eq!(PeerUrl::parse("moql://x:99999"), Err(PeerUrlError::Port));
        assert_eq!(PeerUrl::parse("moql://[::1"), Err(PeerUrlError::NoHost));
    }

    #[test]
    fn display_hides_the_token() {
        let u = PeerUrl::parse("http://h:1/?jwt=secret").unwrap();
        assert!(!format!("{u} {u:?}").contains("secret"));
    }
}
