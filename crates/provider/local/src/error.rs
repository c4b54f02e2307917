//! Errors of the local agent itself (the provider side reports
//! [`phoenix_provider_api::ProviderError`]).

use crate::paths::StatePaths;
use std::path::{Path, PathBuf};

/// Why the agent could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Another agent holds the state directory's lock.
    #[error("{}", already_running(state_dir, *pid))]
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
    #[error("{step} `{}`: {cause}", path.display())]
    Io {
        /// What was being done.
        step: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error: in the message, deliberately not also a `source()`, so that
        /// a printed chain states it once.
        cause: std::io::Error,
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

/// The message of [`AgentError::AlreadyRunning`]: who runs, and what to do about it.
fn already_running(state_dir: &Path, pid: Option<u32>) -> String {
    let dir = state_dir.display();
    let (who, stop) = stop_advice(&StatePaths::new(state_dir), pid);
    format!(
        "another agent ({who}) already runs on `{dir}`: it serves `{dir}/agent.sock` (and \
         re-creates that socket within a second if it is deleted); to replace it, stop it with \
         {stop} (its units keep running and the next agent re-adopts them)"
    )
}

/// `("pid N", "`kill N`")` naming a running agent and how to stop it; without a pid, how to
/// find it. Stopping an agent is safe: units run in their own process groups and outlive it.
pub(crate) fn stop_advice(paths: &StatePaths, pid: Option<u32>) -> (String, String) {
    match pid {
        Some(p) => (format!("pid {p}"), format!("`kill {p}`")),
        None => (
            "pid unknown".to_string(),
            format!(
                "`kill` (`fuser {}` finds its pid)",
                paths.lock_file().display()
            ),
        ),
    }
}

impl AgentError {
    pub(crate) fn io(step: &'static str, path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        AgentError::Io {
            step,
            path: path.into(),
            cause,
        }
    }
}
