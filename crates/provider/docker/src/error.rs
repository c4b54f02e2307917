//! The one error type of the docker provider, and how it becomes a [`ProviderError`].

use phoenix_provider_api::ProviderError;
use std::path::PathBuf;

/// What went wrong talking to a Docker Engine. Variants are named after the step that failed
/// and carry the object it failed on. As with [`ProviderError`], each message is complete and no
/// variant also returns its cause from `source()`.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The endpoint string names nothing this provider can reach.
    #[error("bad Docker endpoint `{endpoint}`: {reason}")]
    BadEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The engine could not be reached, or stopped answering mid-call.
    #[error(
        "cannot reach the Docker Engine at {endpoint} ({cause}): is dockerd running? Start it \
         (`systemctl start docker`, or `dockerd &` as root), or point DOCKER_HOST or the \
         site's `docker.endpoints` at an engine that runs"
    )]
    Unreachable {
        /// The endpoint (`unix:///var/run/docker.sock`, `tcp://host:2375`).
        endpoint: String,
        /// Why, as the client saw it.
        cause: String,
    },
    /// The engine answered an API call with an error status.
    #[error("{step} `{object}`: the Docker Engine answered {status}: {message}")]
    Api {
        /// What was being done (`create container`, `stop container`, ...).
        step: &'static str,
        /// The container, image or volume concerned.
        object: String,
        /// The HTTP status.
        status: u16,
        /// The engine's message.
        message: String,
    },
    /// The client failed mid-call in a way that is not the engine being away (an answer it
    /// could not parse, a broken stream).
    #[error("{step} `{object}`: {cause}")]
    Client {
        /// What was being done.
        step: &'static str,
        /// The object concerned.
        object: String,
        /// The client's error, with its causes.
        cause: String,
    },
    /// The image is not on the engine and pulling it failed.
    #[error("image `{image}` is not on the Docker Engine and cannot be pulled: {cause}")]
    ImageUnavailable {
        /// The image reference.
        image: String,
        /// Why the pull failed.
        cause: String,
    },
    /// `docker build` of a context failed.
    #[error("docker build of `{}` failed: {detail}", context.display())]
    Build {
        /// The build context.
        context: PathBuf,
        /// The builder's error and its last lines of output.
        detail: String,
    },
    /// A file on this host (a build context, a snapshot, a log copy) could not be read or
    /// written.
    #[error("{step} `{}`: {cause}", path.display())]
    Io {
        /// What was being done.
        step: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error (in the message, deliberately not a `source()`).
        cause: std::io::Error,
    },
    /// The async runtime that drives the client could not be created.
    #[error("cannot create the Docker client's runtime: {0}")]
    Runtime(std::io::Error),
}

/// Which provider operation an error ends, so that it becomes the right [`ProviderError`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op<'a> {
    /// Starting (or creating) the unit with this id.
    Start(&'a str),
    /// Stopping the unit with this id.
    Stop(&'a str),
    /// Anything else (list, snapshot, restore, logs, images, volumes).
    Other,
}

impl DockerError {
    /// Whether the engine answered `status`.
    pub fn is_status(&self, status: u16) -> bool {
        matches!(self, DockerError::Api { status: s, .. } if *s == status)
    }

    /// Whether the object does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.is_status(404)
    }

    /// Whether the same call may succeed if simply tried again a little later: the engine was
    /// away, or the object was busy (409: being removed, restarting).
    pub fn is_retryable(&self) -> bool {
        matches!(self, DockerError::Unreachable { .. }) || self.is_status(409)
    }

    pub(crate) fn io(step: &'static str, path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        DockerError::Io {
            step,
            path: path.into(),
            cause,
        }
    }

    /// The [`ProviderError`] this becomes at the end of `op`.
    pub(crate) fn into_provider(self, op: Op<'_>) -> ProviderError {
        let provider = "docker".to_string();
        match self {
            DockerError::Unreachable { .. }
            | DockerError::BadEndpoint { .. }
            | DockerError::Runtime(_) => ProviderError::Unavailable {
                provider,
                reason: self.to_string(),
            },
            DockerError::Io { step, path, cause } => ProviderError::Io { step, path, cause },
            e => match op {
                Op::Start(unit) | Op::Stop(unit) if e.is_status(409) => ProviderError::Busy {
                    unit: unit.into(),
                    reason: e.to_string(),
                },
                Op::Start(unit) => ProviderError::Spawn {
                    unit: unit.into(),
                    reason: e.to_string(),
                },
                Op::Stop(unit) => ProviderError::Stop {
                    unit: unit.into(),
                    reason: e.to_string(),
                },
                Op::Other => ProviderError::Protocol {
                    provider,
                    detail: e.to_string(),
                },
            },
        }
    }

    /// Classifies a client error of `step` on `object` against `endpoint`.
    pub(crate) fn from_bollard(
        e: bollard::errors::Error,
        endpoint: &str,
        step: &'static str,
        object: &str,
    ) -> Self {
        use bollard::errors::Error as B;
        let unreachable = |cause: String| DockerError::Unreachable {
            endpoint: endpoint.into(),
            cause,
        };
        match e {
            B::DockerResponseServerError {
                status_code,
                message,
            } => DockerError::Api {
                step,
                object: object.into(),
                status: status_code,
                message: message.trim().to_string(),
            },
            B::SocketNotFoundError(path) => unreachable(format!("no socket at {path}")),
            B::RequestTimeoutError => unreachable(format!("no answer to `{step}` in time")),
            B::HyperLegacyError { ref err } if err.is_connect() => unreachable(chain(&e)),
            B::HyperResponseError { ref err }
                if err.is_closed() || err.is_incomplete_message() || err.is_canceled() =>
            {
                unreachable(chain(&e))
            }
            B::IOError { ref err }
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                unreachable(chain(&e))
            }
            other => DockerError::Client {
                step,
                object: object.into(),
                cause: chain(&other),
            },
        }
    }
}

/// An error and its causes, `a: b: c`, each stated once.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_names_the_endpoint_and_what_to_do() {
        let e = DockerError::Unreachable {
            endpoint: "unix:///run/x.sock".into(),
            cause: "connection refused".into(),
        };
        let p = e.into_provider(Op::Start("web-0@r1"));
        assert!(p.is_retryable());
        let msg = p.to_string();
        assert!(msg.contains("unix:///run/x.sock"), "{msg}");
        assert!(msg.contains("dockerd"), "{msg}");
    }

    #[test]
    fn api_errors_map_by_operation() {
        let api = |status| DockerError::Api {
            step: "start container",
            object: "c".into(),
            status,
            message: "m".into(),
        };
        assert!(matches!(
            api(500).into_provider(Op::Start("u@r1")),
            ProviderError::Spawn { .. }
        ));
        assert!(matches!(
            api(500).into_provider(Op::Stop("u@r1")),
            ProviderError::Stop { .. }
        ));
        assert!(matches!(
            api(409).into_provider(Op::Stop("u@r1")),
            ProviderError::Busy { .. }
        ));
        assert!(matches!(
            api(500).into_provider(Op::Other),
            ProviderError::Protocol { .. }
        ));
        assert!(api(404).is_not_found() && !api(404).is_retryable());
    }
}
