//! The one error type of the provider interface.

use std::path::PathBuf;

/// Shorthand for results of provider operations.
pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// What went wrong in a provider operation. Variants are named after the step that failed and
/// carry the object it failed on.
///
/// Each message is complete, cause included, and no variant also returns its cause from
/// [`std::error::Error::source`]: these errors travel as text (over a provider's wire protocol,
/// into failure reasons and audit records), and a cause both printed and chained is printed
/// twice by `anyhow`'s `{:#}`.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider's backend (the local agent, a Docker daemon, an API server) could not be
    /// reached or did not answer.
    #[error("{provider} provider unavailable: {reason}")]
    Unavailable {
        /// Provider kind (`local`, `docker`, ...).
        provider: String,
        /// Why, as precisely as known.
        reason: String,
    },
    /// The unit spec cannot be run as given (bad name, unknown substitution, empty command).
    #[error("invalid unit `{unit}`: {problem}")]
    InvalidSpec {
        /// Unit id (or instance) concerned.
        unit: String,
        /// What is wrong.
        problem: String,
    },
    /// The unit's process (container, pod, VM) could not be created.
    #[error("cannot start unit `{unit}`: {reason}")]
    Spawn {
        /// Unit id.
        unit: String,
        /// Why.
        reason: String,
    },
    /// The unit could not be stopped (it survived SIGKILL, or the backend refused).
    #[error("cannot stop unit `{unit}`: {reason}")]
    Stop {
        /// Unit id.
        unit: String,
        /// Why.
        reason: String,
    },
    /// Another operation on the same unit is in progress (e.g. start while it is being
    /// stopped); retrying later may succeed.
    #[error("unit `{unit}` is busy: {reason}")]
    Busy {
        /// Unit id.
        unit: String,
        /// What it is busy with.
        reason: String,
    },
    /// A backup path resolves outside the instance's data directory.
    #[error("backup path `{path}` of instance `{instance}` is not under its data directory `{}`", data_dir.display())]
    PathOutsideDataDir {
        /// Instance.
        instance: String,
        /// The path as given.
        path: String,
        /// The instance's data directory.
        data_dir: PathBuf,
    },
    /// No snapshot with this tag exists for the instance.
    #[error("no snapshot `{tag}` for instance `{instance}` of fleet `{fleet}`")]
    SnapshotNotFound {
        /// Fleet.
        fleet: String,
        /// Instance.
        instance: String,
        /// Tag.
        tag: String,
    },
    /// A file-system step failed.
    #[error("{step} `{}`: {cause}", path.display())]
    Io {
        /// What was being done (`create data dir`, `write snapshot`, ...).
        step: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error (in the message, deliberately not a `source()`).
        cause: std::io::Error,
    },
    /// The backend answered something this client does not understand.
    #[error("{provider} provider protocol error: {detail}")]
    Protocol {
        /// Provider kind.
        provider: String,
        /// What was wrong with the answer.
        detail: String,
    },
}

impl ProviderError {
    /// Whether the same call may succeed if simply tried again a little later (the backend was
    /// briefly unreachable or the unit busy). Everything else needs a change first.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Unavailable { .. } | ProviderError::Busy { .. }
        )
    }

    /// Builds an [`ProviderError::Io`] for `step` on `path`.
    pub fn io(step: &'static str, path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        ProviderError::Io {
            step,
            path: path.into(),
            cause,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: an I/O error printed its cause and also returned it from `source()`, so an
    /// `anyhow` chain read "create data dir `/d`: Permission denied: Permission denied".
    #[test]
    fn io_errors_state_their_cause_once() {
        let e = ProviderError::io(
            "create data dir",
            "/d",
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "Permission denied"),
        );
        assert_eq!(e.to_string(), "create data dir `/d`: Permission denied");
        assert!(std::error::Error::source(&e).is_none());
    }
}
