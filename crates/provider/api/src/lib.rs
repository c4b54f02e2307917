//! The provider interface of Phoenix: what the engine asks of any place that runs workloads
//! (local processes, Docker, Kubernetes, Proxmox), and the conformance suite that every
//! implementation must pass.
//!
//! The unit of work is a **unit**: one process (container, pod, VM) of one instance of one
//! service at one revision, identified by `<instance>@r<revision>` (see [`unit_id`]). Two
//! revisions of one instance are two units, so blue-green can run `web-0@r3` beside `web-0@r4`;
//! both share the instance's data directory.
//!
//! ```
//! use phoenix_provider_api::{unit_id, UnitSpec};
//! let spec = UnitSpec::new("demo", "web", "web-0", 3)
//!     .with_command(["python3", "-m", "http.server", "${port}"])
//!     .with_ports(["port"]);
//! assert_eq!(spec.unit_id(), "web-0@r3");
//! assert_eq!(unit_id("web-0", 4), "web-0@r4");
//! spec.validate().unwrap();
//! ```
//!
//! The interface is synchronous: the engine drives providers from worker threads.
//!
//! Besides the [`Provider`] trait and its types: [`probe`] (HTTP, TCP and command checks from
//! this host, each attempt bounded), [`backup`] (file-system snapshots confined to a data dir),
//! [`logs`] (which log files belong to a service; printing and following them),
//! [`conformance`] (the suite every provider passes) and [`fake`] (an in-memory provider for
//! engine tests).
//!
//! Architecture Invariant: nothing here decides *what* should run; providers do what they are
//! told and report what they observe. Deciding is the engine's job.

pub mod backup;
pub mod conformance;
mod error;
pub mod fake;
pub mod logs;
pub mod probe;
pub mod route;
pub mod secret;
mod serde_compat;
pub use serde_compat::health as health_serde;

pub use error::{ProviderError, Result};
pub use phoenix_model::{Health, HealthCheck, RestartPolicy};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The id of the unit that runs `instance` at `revision`: `web-0@r3`.
pub fn unit_id(instance: &str, revision: u64) -> String {
    format!("{instance}@r{revision}")
}

/// Splits a unit id into instance and revision; `None` if it is not of the form
/// `<instance>@r<revision>`.
pub fn parse_unit_id(id: &str) -> Option<(&str, u64)> {
    let (instance, rev) = id.rsplit_once("@r")?;
    if instance.is_empty() || rev.is_empty() || !rev.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((instance, rev.parse().ok()?))
}

/// Whether `name` can be used as one path component by every provider: ASCII letters, digits,
/// `.`, `_` and `-`, starting with a letter or digit.
pub fn is_safe_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Everything a provider needs to run one unit. Templates (`command`, `env`, `health`) still
/// contain `${...}` substitutions; the provider fills them in once it has allocated ports and
/// the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitSpec {
    /// Fleet name.
    pub fleet: String,
    /// Service name.
    pub service: String,
    /// Instance id (`web-0`).
    pub instance: String,
    /// Revision of the fleet this unit belongs to.
    pub revision: u64,
    /// Site the instance is placed on.
    #[serde(default)]
    pub site: String,
    /// Host index within the site.
    #[serde(default)]
    pub host: u32,
    /// Argv template.
    pub command: Vec<String>,
    /// Environment templates.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Named ports; the provider allocates one free port per name.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Readiness gate (probed by the caller through [`Provider::probe`]).
    #[serde(default, with = "serde_compat::option_health")]
    pub health: Option<Health>,
    /// When the supervisor restarts the process.
    #[serde(default, with = "serde_compat::RestartPolicyDef")]
    pub restart: RestartPolicy,
    /// Grace period between SIGTERM and SIGKILL when the supervisor itself stops the process.
    #[serde(default = "default_stop_grace_ms")]
    pub stop_grace_ms: u64,
    /// Paths (templates, under `${data_dir}`) that are backed up before a change.
    #[serde(default)]
    pub backup: Vec<String>,
    /// What runs the unit where that is not a command on a host: the container image or the
    /// build context of a Docker site, and its resource limits. `None` for local and SSH sites,
    /// and then left out of the serialised spec, so that their fingerprints do not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
    /// The secrets the unit uses (`${secret:NAME}`, `${secret_file:NAME}`) and the version of
    /// each value, so that a new value is a new fingerprint; never the values ([`secret`]).
    /// Left out of the serialised spec when empty, so that other fingerprints do not change.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, u64>,
    /// The user (and its primary group) the process runs as, and which owns the data dir
    /// (`user:`); `None`: the provider's own. Left out of the serialised spec when `None`, so
    /// that the fingerprints of units without it do not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// For each service whose addresses the templates use (`${address:S:PORT}`,
    /// `${addresses:S:PORT}`), the units they are filled in from, by instance number
    /// (`db-0@r3`; `@r0` is this unit's own revision). The engine fills in those addresses
    /// before it hands the unit to a provider, so providers never see these references.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bindings: BTreeMap<String, Vec<String>>,
    /// The service's `reload` argv (templates): run where the unit lives, as a command check
    /// is, when only the addresses it is bound to change. Empty: it is replaced then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reload: Vec<String>,
}

/// How a unit runs as a container (Docker sites).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The image to run, e.g. `phoenix-demo/busybox:1`; with [`ContainerSpec::build`], the tag
    /// the built image gets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A build context: an absolute path to a folder with a Dockerfile, built on each endpoint
    /// that needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<PathBuf>,
    /// CPU limit in millicores (the service's `resources.cpu` minimum); `None` for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    /// Memory limit in bytes (the service's `resources.memory` minimum); `None` for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// The image's resolved id (`sha256:...`), pinned before the apply so that the unit's
    /// fingerprint changes when a tag moves or a build context changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

fn default_stop_grace_ms() -> u64 {
    10_000
}

impl UnitSpec {
    /// A unit with an empty command, no ports, no health check, the default restart policy
    /// (`on-failure`) and a 10 s stop grace. Fill in the rest with the `with_*` methods or the
    /// public fields.
    pub fn new(fleet: &str, service: &str, instance: &str, revision: u64) -> Self {
        UnitSpec {
            fleet: fleet.into(),
            service: service.into(),
            instance: instance.into(),
            revision,
            site: String::new(),
            host: 0,
            command: Vec::new(),
            env: BTreeMap::new(),
            ports: Vec::new(),
            health: None,
            restart: RestartPolicy::default(),
            stop_grace_ms: default_stop_grace_ms(),
            backup: Vec::new(),
            container: None,
            secrets: BTreeMap::new(),
            user: None,
            bindings: BTreeMap::new(),
            reload: Vec::new(),
        }
    }

    /// Sets the argv template.
    pub fn with_command<S: Into<String>>(mut self, argv: impl IntoIterator<Item = S>) -> Self {
        self.command = argv.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the named ports.
    pub fn with_ports<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.ports = names.into_iter().map(Into::into).collect();
        self
    }

    /// Adds an environment variable template.
    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Sets the restart policy.
    pub fn with_restart(mut self, restart: RestartPolicy) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the stop grace period.
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Sets the health check.
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = Some(health);
        self
    }

    /// This unit's id, `<instance>@r<revision>`.
    pub fn unit_id(&self) -> String {
        unit_id(&self.instance, self.revision)
    }

    /// The stop grace period.
    pub fn stop_grace(&self) -> Duration {
        Duration::from_millis(self.stop_grace_ms)
    }

    /// Checks what every provider needs: names usable as path components, a non-empty command,
    /// distinct port names, and every `${...}` in `command`, `env` and `health` known.
    ///
    /// # Errors
    /// [`ProviderError::InvalidSpec`] listing every problem found.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        for (what, name) in [
            ("fleet", &self.fleet),
            ("service", &self.service),
            ("instance", &self.instance),
        ] {
            if !is_safe_name(name) {
                problems.push(format!(
                    "{what} name `{name}` is not [A-Za-z0-9][A-Za-z0-9._-]*"
                ));
            }
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            problems.push("empty command".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.ports {
            if !is_safe_name(p) || phoenix_model::subst::BUILTINS.contains(&p.as_str()) {
                problems.push(format!("bad port name `{p}`"));
            }
            if !seen.insert(p) {
                problems.push(format!("port `{p}` named twice"));
            }
        }
        secret::check_uses(self, &mut problems);
        let mut templates: Vec<&str> = self.command.iter().map(String::as_str).collect();
        templates.extend(self.env.values().map(String::as_str));
        if let Some(h) = &self.health {
            if h.checks.is_empty() {
                problems.push("health has no checks".into());
            }
            for check in &h.checks {
                templates.extend(check.templates());
            }
        }
        for t in templates {
            for r in phoenix_model::subst::references(t) {
                if phoenix_model::secret_ref::reference(&r.name).is_some() {
                    continue; // `secret::check_uses`
                }
                // Address references are the engine's to fill in (see `bindings`).
                let known = phoenix_model::subst::BUILTINS.contains(&r.name.as_str())
                    || self.ports.contains(&r.name)
                    || matches!(phoenix_model::subst::address_ref(&r.name), Some(Ok(_)));
                if !known {
                    problems.push(format!("unknown substitution `${{{}}}` in `{t}`", r.name));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ProviderError::InvalidSpec {
                unit: self.unit_id(),
                problem: problems.join("; "),
            })
        }
    }
}

/// The observed state of a unit's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    /// The process is running.
    Running,
    /// The unit is stopped or being stopped on request.
    Stopped,
    /// The process died without an exit code (killed by a signal, vanished, could not be
    /// started); [`UnitStatus::detail`] says how. A restart may be pending.
    Failed,
    /// The process exited with this code. A restart may be pending.
    Exited(i32),
}

impl UnitState {
    /// Whether the process is running.
    pub fn is_running(self) -> bool {
        self == UnitState::Running
    }
}

impl fmt::Display for UnitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitState::Running => f.write_str("running"),
            UnitState::Stopped => f.write_str("stopped"),
            UnitState::Failed => f.write_str("failed"),
            UnitState::Exited(code) => write!(f, "exited({code})"),
        }
    }
}

/// What a provider observes about one unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitStatus {
    /// `<instance>@r<revision>`.
    pub unit_id: String,
    /// Fleet.
    pub fleet: String,
    /// Service.
    pub service: String,
    /// Instance.
    pub instance: String,
    /// Revision.
    pub revision: u64,
    /// Site the unit was started for.
    #[serde(default)]
    pub site: String,
    /// Process state.
    pub state: UnitState,
    /// Operating-system process id, where there is one (local provider).
    #[serde(default)]
    pub pid: Option<u32>,
    /// Provider-specific handle (container id, pod name, VM id), where there is one.
    #[serde(default)]
    pub handle: Option<String>,
    /// Allocated port per port name.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// The instance's data directory (shared by every revision of the instance).
    pub data_dir: PathBuf,
    /// How many times the supervisor restarted the process.
    #[serde(default)]
    pub restarts: u32,
    /// Log files holding the process's stdout and stderr.
    #[serde(default)]
    pub logs: Vec<PathBuf>,
    /// How the last process ended, or why it could not be started.
    #[serde(default)]
    pub detail: Option<String>,
}

impl UnitStatus {
    /// The substitution variables of this unit (ports, `instance`, `service`, `site`,
    /// `data_dir`).
    pub fn vars(&self) -> Vars {
        Vars {
            instance: self.instance.clone(),
            service: self.service.clone(),
            site: self.site.clone(),
            data_dir: self.data_dir.clone(),
            ports: self.ports.clone(),
        }
    }
}

/// Values for `${...}` substitutions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vars {
    /// `${instance}`.
    pub instance: String,
    /// `${service}`.
    pub service: String,
    /// `${site}`.
    pub site: String,
    /// `${data_dir}`.
    pub data_dir: PathBuf,
    /// `${NAME}` for each named port.
    pub ports: BTreeMap<String, u16>,
}

impl Vars {
    /// The variables of `spec` once its data directory and ports are known.
    pub fn for_spec(spec: &UnitSpec, data_dir: &Path, ports: &BTreeMap<String, u16>) -> Self {
        Vars {
            instance: spec.instance.clone(),
            service: spec.service.clone(),
            site: spec.site.clone(),
            data_dir: data_dir.to_path_buf(),
            ports: ports.clone(),
        }
    }

    /// The value of one variable.
    pub fn lookup(&self, name: &str) -> Option<String> {
        match name {
            "instance" => Some(self.instance.clone()),
            "service" => Some(self.service.clone()),
            "site" => Some(self.site.clone()),
            "data_dir" => Some(self.data_dir.display().to_string()),
            var if phoenix_model::secret_ref::reference(var).is_some() => {
                secret::lookup(&self.data_dir, var)
            }
            port => self.ports.get(port).map(u16::to_string),
        }
    }

    /// Fills in every `${...}` of `template`.
    ///
    /// # Errors
    /// [`ProviderError::InvalidSpec`] naming the first unknown variable.
    pub fn apply(&self, template: &str) -> Result<String> {
        phoenix_model::subst::substitute(template, |n| self.lookup(n)).map_err(|name| {
            let problem = secret::missing(&self.data_dir, &name)
                .unwrap_or_else(|| format!("unknown substitution `${{{name}}}` in `{template}`"));
            ProviderError::InvalidSpec {
                unit: self.instance.clone(),
                problem,
            }
        })
    }
}

/// The result of one health probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeOutcome {
    /// Whether the check passed.
    pub healthy: bool,
    /// What was observed (status code, connection error, exit status), for reports.
    pub detail: String,
}

impl ProbeOutcome {
    /// A passing outcome.
    pub fn healthy(detail: impl Into<String>) -> Self {
        ProbeOutcome {
            healthy: true,
            detail: detail.into(),
        }
    }
    /// A failing outcome.
    pub fn unhealthy(detail: impl Into<String>) -> Self {
        ProbeOutcome {
            healthy: false,
            detail: detail.into(),
        }
    }
}

/// A stored backup of some paths of one instance's data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Fleet.
    pub fleet: String,
    /// Instance.
    pub instance: String,
    /// Tag given at creation (e.g. `pre-r4`).
    pub tag: String,
    /// Paths covered, relative to the data directory.
    pub paths: Vec<String>,
    /// Where the provider keeps it (a directory for the local provider).
    pub location: String,
}

/// A place that runs units. Every implementation must pass [`conformance`].
///
/// # Guarantees
/// - `start` is idempotent: starting a unit that is already running returns its status and never
///   creates a second process. Starting a unit that exists but is not running (exited, failed)
///   runs it again with the same ports.
/// - `stop` is idempotent: stopping a unit that is not there is `Ok`. When it returns `Ok`, no
///   process of the unit is left and the unit no longer appears in `list`. The instance's data
///   directory is kept.
/// - `list` reports what is observed, including units started by another client or a previous
///   run of the caller: this is how orphans are found after a crash.
/// - Ports stay allocated to a unit for its lifetime (across restarts by the supervisor) and are
///   distinct between the units one provider runs.
pub trait Provider: Send + Sync {
    /// Provider kind, as in spec files (`local`, `docker`, ...).
    fn kind(&self) -> &'static str;

    /// Which endpoint this provider reaches, as a URL-like name that is the same for every
    /// client of that endpoint and different for any other: `local://HOST/ABS/STATE/DIR` (one
    /// agent), a Docker engine, an SSH host. Instance records carry it, so that an operator
    /// sharing the state store with others can tell a unit that runs somewhere this provider
    /// cannot see from a unit that is gone.
    fn endpoint(&self) -> String;

    /// The endpoint that runs units placed on `site`'s host `host`; for a provider that is one
    /// endpoint, [`Provider::endpoint`]. What instance records and intents name.
    fn endpoint_of(&self, site: &str, host: u32) -> String {
        let _ = (site, host);
        self.endpoint()
    }

    /// Whether this provider observes the units of `endpoint` (for a [`route::Router`]: any of
    /// its providers does).
    fn reaches(&self, endpoint: &str) -> bool {
        endpoint == self.endpoint()
    }

    /// The id of the image `spec` would run (building a `build:` context first), for providers
    /// that run images; `None` for the others. The engine puts it into the unit's fingerprint,
    /// so that a tag that moved is a change.
    ///
    /// # Errors
    /// As [`Provider::start`] for the image part.
    fn resolve_image(&self, spec: &UnitSpec) -> Result<Option<String>> {
        let _ = spec;
        Ok(None)
    }

    /// Removes what outlives `fleet`'s units on this provider (`destroy --purge`: a Docker
    /// site's per-instance volumes) and names what it removed. The default keeps everything.
    ///
    /// # Errors
    /// As [`Provider::stop`].
    fn purge(&self, fleet: &str) -> Result<Vec<String>> {
        let _ = fleet;
        Ok(Vec::new())
    }

    /// Starts the unit (or returns it if already running).
    ///
    /// # Errors
    /// [`ProviderError::InvalidSpec`] for a spec that cannot run, [`ProviderError::Spawn`] when
    /// the process cannot be created, [`ProviderError::Unavailable`] when the backend cannot be
    /// reached, [`ProviderError::Busy`] while the unit is being stopped.
    fn start(&self, spec: &UnitSpec) -> Result<UnitStatus>;

    /// [`Provider::start`], handing the unit the values of the secrets it uses
    /// ([`UnitSpec::secrets`]; see [`secret`] for how). The values must not be kept anywhere
    /// but the unit's own secret files and environment. The default starts units that use no
    /// secret and refuses the others, naming the provider, before anything happens.
    ///
    /// # Errors
    /// As [`Provider::start`]; [`ProviderError::InvalidSpec`] when this provider cannot hand
    /// secrets to units.
    fn start_with_secrets(
        &self,
        spec: &UnitSpec,
        secrets: &secret::SecretValues,
    ) -> Result<UnitStatus> {
        if spec.secrets.is_empty() {
            return self.start(spec);
        }
        let _ = secrets;
        Err(ProviderError::InvalidSpec {
            unit: spec.unit_id(),
            problem: format!(
                "the {} provider cannot hand secrets to units yet (it uses {})",
                self.kind(),
                spec.secrets
                    .keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// Stops the unit: SIGTERM (or the backend's equivalent), then SIGKILL after `grace`.
    ///
    /// # Errors
    /// [`ProviderError::Stop`] when the process survives, [`ProviderError::Unavailable`] when the
    /// backend cannot be reached.
    fn stop(&self, fleet: &str, unit_id: &str, grace: Duration) -> Result<()>;

    /// Every unit of `fleet` the provider knows of, running or not, sorted by unit id.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when the backend cannot be reached.
    fn list(&self, fleet: &str) -> Result<Vec<UnitStatus>>;

    /// Runs one attempt of `health` against `unit`, bounded by
    /// [`probe::attempt_timeout`]. The default runs the check from this host
    /// ([`probe::probe`]); providers whose units live elsewhere override it.
    fn probe(&self, unit: &UnitStatus, health: &Health) -> ProbeOutcome {
        probe::probe(unit, health)
    }

    /// Copies `paths` (templates under `${data_dir}`; relative paths are taken relative to it)
    /// of `instance`'s data directory into a snapshot named `tag`, replacing any snapshot of
    /// that tag. A path that does not exist is recorded as absent (restore removes it).
    ///
    /// # Errors
    /// [`ProviderError::PathOutsideDataDir`], [`ProviderError::Io`].
    fn snapshot(
        &self,
        fleet: &str,
        instance: &str,
        paths: &[String],
        tag: &str,
    ) -> Result<Snapshot>;

    /// Puts the paths of snapshot `tag` back as they were. The caller stops the instance's units
    /// first.
    ///
    /// # Errors
    /// [`ProviderError::SnapshotNotFound`], [`ProviderError::Io`].
    fn restore(&self, fleet: &str, instance: &str, tag: &str) -> Result<Snapshot>;

    /// Log files of every unit (past or present) of the service or instance `selector` in
    /// `fleet`; an instance `web-0` belongs to service `web`. An empty selector means all.
    ///
    /// # Errors
    /// [`ProviderError::Io`] when the log directory cannot be read.
    fn log_paths(&self, fleet: &str, selector: &str) -> Result<Vec<PathBuf>>;

    /// The last `max_bytes` of what the unit wrote (stdout, then stderr, as its log files hold
    /// them), for a one-shot job's record once it has exited. Lossy UTF-8.
    ///
    /// The default reads the tails of the files the unit's status names (`UnitStatus::logs`)
    /// on this host, which is where the local provider keeps them; a provider whose log files
    /// live elsewhere overrides it (or reports nothing).
    ///
    /// # Errors
    /// [`ProviderError::Io`] when a named log file cannot be read.
    fn output_tail(&self, unit: &UnitStatus, max_bytes: usize) -> Result<String> {
        logs::tail_of_files(&unit.logs, max_bytes)
    }
}

/// Implements [`Provider`] for a pointer type by forwarding every method, defaults included,
/// to the provider it points to (written once for `Box` and `Arc`).
macro_rules! forward_provider {
    ($($ptr:ident),*) => {$(
        impl<P: Provider + ?Sized> Provider for $ptr<P> {
            fn kind(&self) -> &'static str {
                (**self).kind()
            }
            fn endpoint(&self) -> String {
                (**self).endpoint()
            }
            fn endpoint_of(&self, site: &str, host: u32) -> String {
                (**self).endpoint_of(site, host)
            }
            fn reaches(&self, endpoint: &str) -> bool {
                (**self).reaches(endpoint)
            }
            fn resolve_image(&self, spec: &UnitSpec) -> Result<Option<String>> {
                (**self).resolve_image(spec)
            }
            fn purge(&self, fleet: &str) -> Result<Vec<String>> {
                (**self).purge(fleet)
            }
            fn start(&self, spec: &UnitSpec) -> Result<UnitStatus> {
                (**self).start(spec)
            }
            fn start_with_secrets(
                &self,
                spec: &UnitSpec,
                secrets: &secret::SecretValues,
            ) -> Result<UnitStatus> {
                (**self).start_with_secrets(spec, secrets)
            }
            fn stop(&self, fleet: &str, unit_id: &str, grace: Duration) -> Result<()> {
                (**self).stop(fleet, unit_id, grace)
            }
            fn list(&self, fleet: &str) -> Result<Vec<UnitStatus>> {
                (**self).list(fleet)
            }
            fn probe(&self, unit: &UnitStatus, health: &Health) -> ProbeOutcome {
                (**self).probe(unit, health)
            }
            fn snapshot(
                &self,
                fleet: &str,
                instance: &str,
                paths: &[String],
                tag: &str,
            ) -> Result<Snapshot> {
                (**self).snapshot(fleet, instance, paths, tag)
            }
            fn restore(&self, fleet: &str, instance: &str, tag: &str) -> Result<Snapshot> {
                (**self).restore(fleet, instance, tag)
            }
            fn log_paths(&self, fleet: &str, selector: &str) -> Result<Vec<PathBuf>> {
                (**self).log_paths(fleet, selector)
            }
            fn output_tail(&self, unit: &UnitStatus, max_bytes: usize) -> Result<String> {
                (**self).output_tail(unit, max_bytes)
            }
        }
    )*};
}

use std::sync::Arc;
forward_provider!(Box, Arc);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_ids_round_trip() {
        assert_eq!(parse_unit_id("web-0@r3"), Some(("web-0", 3)));
        assert_eq!(parse_unit_id("a@b@r12"), Some(("a@b", 12)));
        assert_eq!(parse_unit_id("web-0"), None);
        assert_eq!(parse_unit_id("@r1"), None);
        assert_eq!(parse_unit_id("web@rx"), None);
    }

    #[test]
    fn validate_reports_every_problem() {
        let mut s = UnitSpec::new("de mo", "web", "web-0", 1).with_command(["x", "${nope}"]);
        s.ports = vec!["port".into(), "port".into()];
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("fleet name"), "{err}");
        assert!(err.contains("named twice"), "{err}");
        assert!(err.contains("${nope}"), "{err}");
    }

    #[test]
    fn unit_spec_serde_round_trip_keeps_health_and_restart() {
        let s = UnitSpec::new("f", "web", "web-0", 2)
            .with_command(["true"])
            .with_restart(RestartPolicy::Never)
            .with_health(Health {
                checks: vec![
                    HealthCheck::Http {
                        url: "http://x/".into(),
                        expect_status: 204,
                    },
                    HealthCheck::Command {
                        argv: vec!["true".into()],
                    },
                ],
                timeout_ms: 5,
                interval_ms: 6,
            });
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"restart\":\"never\""), "{json}");
        let back: UnitSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn vars_substitute_ports_and_builtins() {
        let mut ports = BTreeMap::new();
        ports.insert("http".to_string(), 8080u16);
        let spec = UnitSpec::new("f", "web", "web-0", 1);
        let v = Vars::for_spec(&spec, Path::new("/d"), &ports);
        assert_eq!(
            v.apply("${service}/${instance}:${http} ${data_dir}")
                .unwrap(),
            "web/web-0:8080 /d"
        );
        assert!(v.apply("${other}").is_err());
    }
}
