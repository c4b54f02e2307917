//! Where a Docker Engine listens: a Unix socket or a plain TCP address.

use crate::DockerError;
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// The socket Docker listens on by default.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// A Docker Engine's API address, normalised so that two spellings of one engine compare equal
/// (and so give one [`Provider::endpoint`](phoenix_provider_api::Provider::endpoint)).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `unix:///var/run/docker.sock`.
    Unix(PathBuf),
    /// `tcp://host:port` (plain HTTP; the default port is 2375).
    Tcp {
        /// Host name or address, lowercase (IPv6 in brackets).
        host: String,
        /// Port.
        port: u16,
    },
}

impl Endpoint {
    /// Parses `unix:///path`, an absolute socket path, `tcp://host[:port]` or
    /// `http://host[:port]`.
    ///
    /// # Errors
    /// [`DockerError::BadEndpoint`] for anything else, including TLS (`https://`, which needs
    /// client certificates this provider does not load yet), `ssh://` and named pipes.
    pub fn parse(s: &str) -> Result<Self, DockerError> {
        let bad = |reason: &str| DockerError::BadEndpoint {
            endpoint: s.into(),
            reason: reason.into(),
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(bad("empty"));
        }
        let unix_path = t
            .strip_prefix("unix://")
            .or(t.starts_with('/').then_some(t));
        if let Some(path) = unix_path {
            let path = Path::new(path);
            if !path.is_absolute() {
                return Err(bad("a unix socket path must be absolute (unix:///path)"));
            }
            // Lexically normal, so `/var/run//docker.sock/` names the same endpoint.
            let mut clean = PathBuf::from("/");
            for c in path.components() {
                match c {
                    Component::Normal(p) => clean.push(p),
                    Component::ParentDir => {
                        clean.pop();
                    }
                    Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                }
            }
            return Ok(Endpoint::Unix(clean));
        }
        let Some(rest) = t
            .strip_prefix("tcp://")
            .or_else(|| t.strip_prefix("http://"))
        else {
            return Err(match t.split_once("://") {
                Some(("https", _)) => bad(
                    "TLS endpoints are not supported yet (no client certificates are loaded); \
                     use a unix:// socket or tcp:// on a trusted network",
                ),
                Some((scheme, _)) => bad(&format!(
                    "scheme `{scheme}` is not supported; use unix:///path or tcp://host:port"
                )),
                None => bad("expected unix:///path or tcp://host:port"),
            });
        };
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') {
            return Err(bad("a tcp endpoint has no path"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && (!h.contains(':') || h.starts_with('[')) => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad(&format!("bad port `{p}`")))?;
                (h, port)
            }
            _ => (authority, 2375),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Endpoint::Tcp {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// `DOCKER_HOST` when set and not empty, else the local socket [`DEFAULT_SOCKET`].
    ///
    /// # Errors
    /// [`DockerError::BadEndpoint`] for a `DOCKER_HOST` that [`Endpoint::parse`] refuses.
    pub fn from_env() -> Result<Self, DockerError> {
        match std::env::var("DOCKER_HOST") {
            Ok(h) if !h.trim().is_empty() => Endpoint::parse(&h),
            _ => Ok(Endpoint::Unix(PathBuf::from(DEFAULT_SOCKET))),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        Endpoint::parse(s).unwrap().to_string()
    }

    #[test]
    fn spellings_of_one_engine_are_one_endpoint() {
        assert_eq!(
            p("unix:///var/run/docker.sock"),
            "unix:///var/run/docker.sock"
        );
        assert_eq!(p("/var/run//docker.sock/"), "unix:///var/run/docker.sock");
        assert_eq!(
            p("unix:///var/run/x/../docker.sock"),
            "unix:///var/run/docker.sock"
        );
        assert_eq!(p("tcp://Docker-1:2375"), "tcp://docker-1:2375");
        assert_eq!(p("tcp://docker-1"), "tcp://docker-1:2375");
        assert_eq!(p("http://10.0.0.2:2376/"), "tcp://10.0.0.2:2376");
        assert_eq!(p("tcp://[::1]:2375"), "tcp://[::1]:2375");
    }

    #[test]
    fn unsupported_endpoints_say_why() {
        for (bad, why) in [
            ("", "empty"),
            ("unix://relative.sock", "absolute"),
            ("https://h:2376", "TLS"),
            ("ssh://me@h", "ssh"),
            ("npipe:////./pipe/docker_engine", "npipe"),
            ("tcp://h:0", "port"),
            ("tcp://h:x", "port"),
            ("tcp://h/path", "path"),
            ("docker-1", "expected"),
        ] {
            let e = Endpoint::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
