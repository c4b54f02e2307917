//! The error type of the ssh provider's own steps, and how it maps onto [`ProviderError`].

use phoenix_provider_api::ProviderError;
use std::time::Duration;

/// What went wrong reaching or preparing a remote host. Every variant names the login
/// (`user@host`) it concerns; [`ProviderError`]s made from it keep that name.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SshError {
    /// A `ssh.hosts` entry (or port) that cannot name a login.
    #[error("bad ssh host `{login}`: {problem}")]
    BadTarget {
        /// The entry as written.
        login: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The `ssh` program could not be run at all.
    #[error("cannot run `{program}`: {reason}")]
    NoClient {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },
    /// `ssh` could not reach or log in to the host (exit status 255), with its own words.
    #[error("{login}: {reason}")]
    Connect {
        /// `user@host`.
        login: String,
        /// ssh's error text, plus a hint where one helps.
        reason: String,
    },
    /// A call did not finish in time; the ssh client was killed.
    #[error(
        "{login}: no answer within {} s (ssh stopped; the host is down, partitioned or overloaded)",
        after.as_secs_f32()
    )]
    TimedOut {
        /// `user@host`.
        login: String,
        /// The time allowed.
        after: Duration,
    },
    /// The host runs another operating system or architecture than this binary is built for.
    #[error(
        "{login} runs `{remote}`, but this phoenix is built for {local}: a phoenix binary cannot \
         be installed there"
    )]
    Arch {
        /// `user@host`.
        login: String,
        /// `uname -sm` on the host.
        remote: String,
        /// This binary's `OS ARCH`.
        local: String,
    },
    /// A command on the host failed or answered something unexpected.
    #[error("{login}: {step}: {detail}")]
    Remote {
        /// `user@host`.
        login: String,
        /// What was being done (`check the installed binary`, `install the binary`, ...).
        step: &'static str,
        /// The exit status and what the command printed.
        detail: String,
    },
    /// A local file step (reading the binary, the log cache).
    #[error("{step} `{path}`: {cause}")]
    Local {
        /// What was being done.
        step: &'static str,
        /// The file concerned.
        path: String,
        /// The error's text.
        cause: String,
    },
}

impl SshError {
    /// Whether trying the same call again a little later may succeed (the host was briefly
    /// unreachable); fatal otherwise.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SshError::Connect { .. } | SshError::TimedOut { .. })
    }
}

impl From<SshError> for ProviderError {
    fn from(e: SshError) -> Self {
        match e {
            SshError::BadTarget { login, problem } => ProviderError::InvalidSpec {
                unit: login,
                problem,
            },
            SshError::Remote { .. } => ProviderError::Protocol {
                provider: "ssh".into(),
                detail: e.to_string(),
            },
            // Unreachable, unknown host key, no client, wrong architecture: the backend cannot
            // be used. (`Unavailable` is the one variant for that, retryable or not.)
            other => ProviderError::Unavailable {
                provider: "ssh".into(),
                reason: other.to_string(),
            },
        }
    }
}
