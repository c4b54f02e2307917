//! [`SshTarget`]: one login on one host, as an `ssh.hosts` entry of a site names it.

use crate::SshError;
use std::fmt;
use std::path::{Path, PathBuf};

/// A login on a remote host: `user@host` (or `host`, for the user the ssh config gives), an
/// optional port and identity file. What a site's `ssh:` section says about one of its hosts.
///
/// ```
/// use phoenix_provider_ssh::SshTarget;
/// let t = SshTarget::parse("deploy@10.0.0.2").unwrap().with_port(Some(2222));
/// assert_eq!((t.user(), t.host(), t.port()), (Some("deploy"), "10.0.0.2", Some(2222)));
/// assert!(SshTarget::parse("-oProxyCommand=x").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    user: Option<String>,
    host: String,
    port: Option<u16>,
    identity: Option<PathBuf>,
}

impl SshTarget {
    /// Parses `user@host`, `host`, or `user@[v6addr]`.
    ///
    /// # Errors
    /// [`SshError::BadTarget`] for an empty user or host, or one that ssh would read as an
    /// option or that holds characters no user or host name has.
    pub fn parse(login: &str) -> Result<Self, SshError> {
        let bad = |problem: &str| SshError::BadTarget {
            login: login.into(),
            problem: problem.into(),
        };
        let (user, host) = match login.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, login),
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Some(u) = user {
            let ok = !u.is_empty()
                && !u.starts_with('-')
                && u.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                return Err(bad(
                    "the user must be letters, digits, `.`, `_` and `-`, not starting with `-`",
                ));
            }
        }
        let ok = !host.is_empty()
            && !host.starts_with('-')
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'%')
            });
        if !ok {
            return Err(bad(
                "the host must be a name or an address (letters, digits, `.`, `-`, `:`), not \
                 starting with `-`",
            ));
        }
        Ok(SshTarget {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port: None,
            identity: None,
        })
    }

    /// Every host of a site's `ssh:` section (`hosts`, in order: host index 0 first), with the
    /// section's port and identity. It takes the section's parts rather than the spec's type so
    /// that the provider does not depend on the spec parser.
    ///
    /// # Errors
    /// [`SshError::BadTarget`] naming the first entry that does not parse.
    pub fn from_site<S: AsRef<str>>(
        hosts: &[S],
        port: Option<u16>,
        identity: Option<&Path>,
    ) -> Result<Vec<SshTarget>, SshError> {
        hosts
            .iter()
            .map(|h| {
                Ok(SshTarget::parse(h.as_ref())?
                    .with_port(port)
                    .with_identity(identity))
            })
            .collect()
    }

    /// Sets the port (`None`: the ssh config's, else 22).
    #[must_use]
    pub fn with_port(mut self, port: Option<u16>) -> Self {
        self.port = port;
        self
    }

    /// Sets the identity file (`None`: the ssh config's and the agent's keys). ssh expands a
    /// leading `~`.
    #[must_use]
    pub fn with_identity(mut self, identity: Option<&Path>) -> Self {
        self.identity = identity.map(Path::to_path_buf);
        self
    }

    /// The user, if given.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    /// The host as written (a name, an alias of the ssh config, or an address).
    pub fn host(&self) -> &str {
        &self.host
    }
    /// The port, if given.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
    /// The identity file, if given.
    pub fn identity(&self) -> Option<&Path> {
        self.identity.as_deref()
    }

    /// The destination argument of `ssh`: `user@host` or `host`.
    pub(crate) fn destination(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }
}

impl fmt::Display for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.destination())?;
        if let Some(p) = self.port {
            write!(f, " port {p}")?;
        }
        Ok(())
    }
}

/// A target with the user and port that ssh will use (from `ssh -G`: the command line, then
/// the ssh config, then the defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Login {
    pub(crate) user: String,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl Login {
    /// `ssh://user@host:port` (an IPv6 address in brackets).
    pub(crate) fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("ssh://{}@[{}]:{}", self.user, self.host, self.port)
        } else {
            format!("ssh://{}@{}:{}", self.user, self.host, self.port)
        }
    }

    /// A file name for this login's local cache: `user@host_port`.
    pub(crate) fn cache_name(&self) -> String {
        format!(
            "{}@{}_{}",
            self.user,
            self.host.replace(':', "_"),
            self.port
        )
    }
}

impl fmt::Display for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.host)?;
        if self.port != 22 {
            write!(f, " port {}", self.port)?;
        }
        Ok(())
    }
}

/// The user and port of `ssh -G` output for `target` (lines `user NAME`, `port N`); what
/// the target says itself wins, then this output, then `$USER` and 22.
pub(crate) fn resolve(target: &SshTarget, ssh_g: Option<&str>) -> Login {
    let field = |key: &str| {
        ssh_g.and_then(|out| {
            out.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k.eq_ignore_ascii_case(key)).then(|| v.trim().to_owned())
            })
        })
    };
    let user = target
        .user
        .clone()
        .or_else(|| field("user"))
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".into());
    let port = target
        .port
        .or_else(|| field("port").and_then(|p| p.parse().ok()))
        .unwrap_or(22);
    Login {
        user,
        host: target.host.clone(),
        port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_logins_and_refuses_options() {
        let t = SshTarget::parse("deploy@10.0.0.2").unwrap();
        assert_eq!((t.user(), t.host()), (Some("deploy"), "10.0.0.2"));
        let t = SshTarget::parse("edge-1.example").unwrap();
        assert_eq!((t.user(), t.host()), (None, "edge-1.example"));
        let t = SshTarget::parse("ops@[fd00::2]").unwrap();
        assert_eq!(t.host(), "fd00::2");
        for bad in [
            "",
            "@h",
            "u@",
            "-oProxyCommand=sh",
            "u@-oProxyCommand=sh",
            "u@h;rm",
            "u@h h",
            "u s@h",
        ] {
            assert!(SshTarget::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn resolution_prefers_the_target_then_ssh_config() {
        let g = "user alice\nhostname 10.0.0.9\nport 2200\n";
        let t = SshTarget::parse("edge").unwrap();
        let l = resolve(&t, Some(g));
        assert_eq!(l.endpoint(), "ssh://alice@edge:2200");
        assert_eq!(l.to_string(), "alice@edge port 2200");
        let t = SshTarget::parse("bob@edge").unwrap().with_port(Some(22));
        let l = resolve(&t, Some(g));
        assert_eq!(l.endpoint(), "ssh://bob@edge:22");
        assert_eq!(l.to_string(), "bob@edge");
        let t = SshTarget::parse("bob@fd00::2").unwrap();
        assert_eq!(resolve(&t, None).endpoint(), "ssh://bob@[fd00::2]:22");
        assert_eq!(resolve(&t, None).cache_name(), "bob@fd00__2_22");
    }

    #[test]
    fn from_site_keeps_order_port_and_identity() {
        let ts = SshTarget::from_site(
            &["a@h1", "b@h2"],
            Some(2222),
            Some(Path::new("~/.ssh/id_ed25519")),
        )
        .unwrap();
        assert_eq!(ts.len(), 2);
        assert_eq!(ts[1].destination(), "b@h2");
        assert_eq!(ts[1].port(), Some(2222));
        assert_eq!(ts[0].identity(), Some(Path::new("~/.ssh/id_ed25519")));
    }
}
