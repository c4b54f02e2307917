//! The `docker` provider: each unit is one container on a Docker Engine, driven through the
//! Engine's HTTP API (`bollard`), so the engine can be this host's socket or another host's
//! `tcp://` address.
//!
//! ```no_run
//! use phoenix_provider_api::{ContainerSpec, Provider, UnitSpec};
//! use phoenix_provider_docker::DockerProvider;
//! use std::time::Duration;
//!
//! // DOCKER_HOST, else unix:///var/run/docker.sock; snapshots and log copies under .phoenix/docker.
//! let p = DockerProvider::from_env(std::path::Path::new(".phoenix/docker"))?;
//! let mut web = UnitSpec::new("demo", "web", "web-0", 1)
//!     .with_command(["httpd", "-f", "-p", "${port}", "-h", "${data_dir}"])
//!     .with_ports(["port"]);
//! web.container = Some(ContainerSpec {
//!     image: Some("phoenix-demo/busybox:1".into()),
//!     build: None,
//!     cpu_millis: Some(500),
//!     memory_bytes: Some(256 << 20),
//!     image_id: None,
//! });
//! // What the engine pins in the spec (`image_id`) and so in the unit's fingerprint.
//! let image_id = p.resolve_image(&web)?;
//! let status = p.start(&web)?;
//! println!("{} ({image_id}) on 127.0.0.1:{}", status.unit_id, status.ports["port"]);
//! p.stop("demo", &status.unit_id, Duration::from_secs(10))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! How the contract of `fleet-spec.md` (part 2, **docker**) is met:
//!
//! - **One container per unit**, named from fleet and unit ([`names::container_name`]): the
//!   engine refuses a second container of one name, so a retried or concurrent start, or a
//!   start after a crash between create and start, adopts the container that exists instead of
//!   making another. Unit containers carry [`names::LABEL_FLEET`] and the other `phoenix.*`
//!   labels (unit, instance, service, revision, site, ports, image id), and `list` reads
//!   everything back from the labels: there is no local state to lose. Helper containers
//!   (snapshots, restores) carry [`names::LABEL_HELPER`] instead, never `phoenix.fleet`.
//! - **Images**: `container.image` is run as its resolved id, pulled if the engine lacks it;
//!   `container.build` is tarred and built on the engine, tagged
//!   `phoenix-build/<fleet>-<service>:<context hash>` (or `container.image` when both are
//!   given) and rebuilt only when the context changes. [`DockerProvider::resolve_image`] gives
//!   the image id, which the engine puts in the unit's fingerprint (a tag that moved is a
//!   change); the container records it in [`names::LABEL_IMAGE`].
//! - **Command and environment** are substituted (`${port}`, `${data_dir}`, ...) and replace
//!   the image's `CMD` (its `ENTRYPOINT`, if any, still runs, as with `docker run IMAGE CMD`).
//! - **Ports**: each named port gets a free port of this host (remembered across the units of
//!   the provider and skipping ports any Phoenix container has), published on `127.0.0.1` with
//!   the same number inside the container, so `${port}` means the same everywhere. A port
//!   taken between allocation and start makes the start retry with fresh ports.
//! - **`${data_dir}`** is `/phoenix/data/<instance>` ([`names::data_dir`]), the per-instance
//!   named volume `phoenix-<fleet>.<instance>`, shared by the instance's revisions and kept
//!   when containers go; [`DockerProvider::remove_volumes`] removes a fleet's volumes (for
//!   `destroy --purge`). Snapshots and restores go through the engine's archive API (module
//!   `archive`); the archives live on this host under the provider's state dir.
//! - **Resources** become `NanoCpus` and `Memory`; the **restart policy** becomes Docker's
//!   (`always`, `on-failure`, `no`); containers run with Docker's init, so a signal reaches
//!   the command even when it does not handle it as PID 1 would.
//! - **Stop** is Docker's stop with the grace period (SIGTERM, SIGKILL after it, rounded up to
//!   whole seconds, the API's unit), then removal; stopping what is not there is fine.
//! - **Logs** stay in Docker; [`log_paths`](phoenix_provider_api::Provider::log_paths) copies what is new into
//!   `<state dir>/logs/<fleet>/<unit>.log` each time it is called (and `stop` once more before
//!   removing the container), so `phoenix logs -f`, which polls `log_paths`, follows them
//!   unchanged. This needs no change to the trait and keeps a unit's logs after it is gone.
//! - **Probes**: `http` and `tcp` run from this host against the published ports; `command`
//!   runs inside the container (exec API). A `tcp` check also waits a moment for the peer to
//!   close: Docker's userland proxy accepts on a published port even when nothing in the
//!   container listens, and closes at once.
//! - **Errors** are [`DockerError`] inside and [`ProviderError`](phoenix_provider_api::ProviderError)
//!   at the trait: an engine that cannot be reached is `Unavailable`, naming the endpoint and
//!   saying to start dockerd.
//!
//! Architecture Invariant: what runs is what the engine's labels say; this crate keeps no
//! record of units of its own (the state dir holds snapshots and log copies only).

mod archive;
mod endpoint;
mod error;
mod image;
mod logs;
pub mod names;
mod probe;
mod provider;

pub use endpoint::{DEFAULT_SOCKET, Endpoint};
pub use error::DockerError;
pub use provider::DockerProvider;
