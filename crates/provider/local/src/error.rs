//! Errors of the local agent itself (the provider side reports
//! [`phoenix_provider_api::ProviderError`]).

use std::path::PathBuf;

/// Why the agent could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Another agent holds the state directory's lock.
    #[error("another agent (pid {}) already runs on `{}`", pid.map_or("unknown".into(), |p| p.to_string()), state_dir.display())]
    AlreadyRunning {
        /// The state directory.
        state_dir: PathBuf,
        /// The other agent's pid, if its pidfile says.
        pid: Option<u32>,
    },
    /// The socket path does not fit in a Unix socket address (about 107 bytes).
    #[error("socket path `{}` is too long for a Unix socket; use a shorter --state-dir", path.display())]
    SocketPathTooLong {
        /// The socket path.
        path: PathBuf,
    },
    /// A file-system or socket step failed.
    #[error("{step} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        step: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The persisted unit table cannot be read.
    #[error("unit table `{}` is corrupt: {reason}", path.display())]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
    /// Bad command-line arguments for `agent`.
    #[error("{0}")]
    Usage(String),
}

impl AgentError {
    pub(crate) fn io(step: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AgentError::Io {
            step,
            path: path.into(),
            source,
        }
    }
}
