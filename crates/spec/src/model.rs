//! The validated fleet model. Everything here has passed validation: names are unique,
//! references resolve, dependency graphs are acyclic, ranges are ordered. The planner relies on
//! that and does not re-check it.

use crate::quantity::Range;
use serde::Serialize;
use std::collections::BTreeMap;

/// A place in a spec file, for diagnostics that point back at the source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Location {
    /// Index of the file in [`Fleet::files`].
    pub file: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// Offset of the start in the file, in characters (as the YAML parser counts them).
    pub offset: usize,
    /// Length of the marked text in characters (at least 1 when displayed).
    pub len: usize,
}

/// A whole fleet: the merge of every file given, with one environment overlay applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fleet {
    /// Format version (`phoenix: 1`).
    pub format: u32,
    /// Fleet name.
    pub name: String,
    /// Free-text description.
    pub description: Option<String>,
    /// The environment overlay applied, if any.
    pub environment: Option<String>,
    /// Names of every environment the files define.
    pub environments: Vec<String>,
    /// Planning policy.
    pub policy: Policy,
    /// Totals the source document states for the whole fleet; compared with the computed demand.
    pub budget: Option<Budget>,
    /// Sites in file order.
    pub sites: Vec<Site>,
    /// Projects in file order.
    pub projects: Vec<Project>,
    /// Services in file order, then jobs (`jobs:`, [`Service::job`]) in file order: the two
    /// share one namespace and one dependency graph.
    pub services: Vec<Service>,
    /// Secrets (`secrets:`): where each value comes from, never the value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::secrets::Secret>,
    /// The files the fleet was read from, in order, for diagnostics.
    #[serde(skip)]
    pub files: Vec<String>,
}

/// Fleet-wide planning policy (`policy:`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Policy {
    /// How far CPU demand may exceed CPU capacity, as a ratio (`1.0` = not at all). Demand above
    /// capacity but within the ratio is a warning; above the ratio, an error. Memory and storage
    /// are never overcommitted.
    pub cpu_overcommit: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            cpu_overcommit: 1.0,
        }
    }
}

/// Site tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Core datacenter.
    Core,
    /// Regional datacenter.
    Regional,
    /// Edge site.
    Edge,
}

impl Tier {
    /// The spelling used in spec files.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Core => "core",
            Tier::Regional => "regional",
            Tier::Edge => "edge",
        }
    }
}

/// Which provider runs a site's workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// Processes on this host (the embedded default).
    #[default]
    Local,
    /// Docker containers.
    Docker,
    /// A Kubernetes cluster.
    Kubernetes,
    /// A Proxmox VE cluster.
    Proxmox,
    /// Remote hosts over OpenSSH, running Phoenix's own agent.
    Ssh,
}

impl ProviderKind {
    /// The spelling used in spec files.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Docker => "docker",
            ProviderKind::Kubernetes => "kubernetes",
            ProviderKind::Proxmox => "proxmox",
            ProviderKind::Ssh => "ssh",
        }
    }
}

/// CPU (millicores), memory (bytes) and storage (bytes), each a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Resources {
    /// Millicores.
    pub cpu: Range,
    /// Bytes.
    pub memory: Range,
    /// Bytes.
    pub storage: Range,
}

impl Resources {
    /// No resources.
    pub const ZERO: Resources = Resources {
        cpu: Range::ZERO,
        memory: Range::ZERO,
        storage: Range::ZERO,
    };

    /// Multiplies every quantity by a count range.
    pub fn times(self, count: Range) -> Resources {
        Resources {
            cpu: self.cpu.times(count),
            memory: self.memory.times(count),
            storage: self.storage.times(count),
        }
    }
}

impl std::ops::Add for Resources {
    type Output = Resources;
    fn add(self, r: Resources) -> Resources {
        Resources {
            cpu: self.cpu + r.cpu,
            memory: self.memory + r.memory,
            storage: self.storage + r.storage,
        }
    }
}

impl std::ops::AddAssign for Resources {
    fn add_assign(&mut self, r: Resources) {
        *self = *self + r;
    }
}

impl std::iter::Sum for Resources {
    fn sum<I: Iterator<Item = Resources>>(iter: I) -> Resources {
        iter.fold(Resources::ZERO, std::ops::Add::add)
    }
}

/// Totals a source document states; any of the three may be absent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Budget {
    /// Millicores.
    pub cpu: Option<Range>,
    /// Bytes.
    pub memory: Option<Range>,
    /// Bytes.
    pub storage: Option<Range>,
    /// Where the budget was written.
    #[serde(skip)]
    pub location: Location,
}

/// A site: capacity in a tier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Site {
    /// Unique name.
    pub name: String,
    /// Tier.
    pub tier: Tier,
    /// Free-text region.
    pub region: Option<String>,
    /// Provider.
    pub provider: ProviderKind,
    /// Number of identical hosts (default 1; for `docker` and `ssh` sites, the number of
    /// endpoints or hosts listed).
    pub hosts: u32,
    /// How a `docker` site's engines are reached (fleet-spec part 2).
    pub docker: Option<DockerSite>,
    /// How an `ssh` site's hosts are reached (fleet-spec part 2).
    pub ssh: Option<SshSite>,
    /// Capacity of each host.
    pub capacity: Resources,
    /// Phase in which the site comes online (default 1): a service of phase p is only placed
    /// on sites whose phase is at most p.
    pub phase: u32,
    /// The site group this site was expanded from (`count:`), if any.
    pub group: Option<String>,
    /// Free-text description.
    pub description: Option<String>,
    /// Where the site is declared.
    #[serde(skip)]
    pub location: Location,
}

/// A `docker` site's engines: one per host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DockerSite {
    /// Docker Engine endpoints (`unix:///var/run/docker.sock`, `tcp://10.0.0.2:2375`), one per
    /// host; empty means `DOCKER_HOST`, else the local socket (one host).
    pub endpoints: Vec<String>,
}

/// An `ssh` site's hosts: one login per host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SshSite {
    /// `user@host` (or `host`), one per host.
    pub hosts: Vec<String>,
    /// SSH port (default: the user's ssh config, else 22).
    pub port: Option<u16>,
    /// Identity file (default: the user's ssh config and agent).
    pub identity: Option<String>,
}

/// A service's container image on `docker` sites: an image reference or a build context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ContainerImage {
    /// An image to run, e.g. `phoenix-demo/busybox:1`.
    Image(String),
    /// A folder with a Dockerfile, as written (relative to the spec file it is written in).
    Build {
        /// The path as written.
        path: String,
        /// Index of the spec file it was written in, in [`Fleet::files`].
        file: usize,
    },
}

/// A project: grouping, ordering, attribution and budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Project {
    /// Unique name.
    pub name: String,
    /// Projects whose services must all be healthy before any service of this one starts.
    pub depends_on: Vec<String>,
    /// Project whose demand this one's is attributed to (counted once, there).
    pub hosted_on: Option<String>,
    /// Duration for the timeline, in hours.
    pub duration: Option<Range>,
    /// Totals the source document states for this project.
    pub budget: Option<Budget>,
    /// Free-text description.
    pub description: Option<String>,
    /// Where the project is declared.
    #[serde(skip)]
    pub location: Location,
}

/// What a service's instances are for the ledger checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// An ordinary application (default).
    #[default]
    App,
    /// A BFT validator; the validators of one service form one validator set.
    Validator,
    /// A read replica (non-voting follower).
    Replica,
    /// A light client.
    Light,
}

/// Spread of a service's instances across failure domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Spread {
    /// No spreading constraint (default).
    #[default]
    None,
    /// Instances spread as evenly as possible across sites.
    Site,
    /// Instances spread as evenly as possible across hosts.
    Host,
}

/// Where a service may run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Placement {
    /// Only sites of this tier.
    pub tier: Option<Tier>,
    /// Only these sites (empty = any).
    pub sites: Vec<String>,
    /// Spread across failure domains.
    pub spread: Spread,
}

// Health gates and the restart policy are shared with the providers, which must not depend on
// the parser: they live in `phoenix-model` and are re-exported here.
pub use phoenix_model::{Health, HealthCheck, RestartPolicy};

/// Rollout strategy (`rollout:`, an extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "strategy")]
pub enum Rollout {
    /// Replace instances a few at a time.
    Rolling {
        /// Instances that may be down at once during the rollout.
        max_unavailable: u32,
        /// Extra instances that may be started above the declared count.
        max_surge: u32,
    },
    /// Start a full new set beside the old, gate it, then stop the old.
    BlueGreen,
    /// Start a few new instances, gate and watch them, then the rest, or roll back.
    Canary {
        /// How many instances go first.
        canary: u32,
        /// How long to watch the canaries after their gate passed, in milliseconds.
        analysis_ms: u64,
    },
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout::Rolling {
            max_unavailable: 1,
            max_surge: 0,
        }
    }
}

/// Where a service's instances serve Prometheus metrics (`metrics:`, an extension): what
/// `phoenix monitoring` scrapes, at the port the deploy allocated to each instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metrics {
    /// One of the service's named ports (`ports:`).
    pub port: String,
    /// The HTTP path, starting with `/` (default `/metrics`).
    pub path: String,
}

/// The default `metrics.path`.
pub const DEFAULT_METRICS_PATH: &str = "/metrics";

/// A service: demand, placement, and how to run and check it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    /// Unique name.
    pub name: String,
    /// Owning project.
    pub project: Option<String>,
    /// Rollout phase (default 1).
    pub phase: u32,
    /// Role for the ledger checks.
    pub role: Role,
    /// The BFT validator set a validator service belongs to (`validator_set:`, an extension).
    /// `None`: the service's validators form a set of their own, named after the service.
    /// Services that name the same set form one set, which grows phase by phase.
    pub validator_set: Option<String>,
    /// Instance count; apply uses the minimum.
    pub replicas: Range,
    /// Where it may run.
    pub placement: Placement,
    /// Per-instance resources.
    pub resources: Resources,
    /// Argv with substitutions still in place.
    pub command: Vec<String>,
    /// Environment with substitutions still in place.
    pub env: BTreeMap<String, String>,
    /// Named ports, allocated per instance by the provider.
    pub ports: Vec<String>,
    /// Readiness gate.
    pub health: Option<Health>,
    /// Services started (and healthy) first.
    pub depends_on: Vec<String>,
    /// Feature flag: false = planned but not deployed.
    pub enabled: bool,
    /// Rollout strategy.
    pub rollout: Rollout,
    /// Restart policy of the supervisor.
    pub restart: RestartPolicy,
    /// Grace period between SIGTERM and SIGKILL, in milliseconds (default 10 s).
    pub stop_grace_ms: u64,
    /// Paths under `${data_dir}` snapshotted before a change and restored on rollback.
    pub backup: Vec<String>,
    /// The user (and its primary group) the instance's process runs as (`user:`, an
    /// extension); `None`: the provider's own user. Its data dir is owned by that user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `reload: {command: [...]}` (an extension): how a running instance takes new addresses
    /// of the services it uses (`${address:S}`) without being replaced, e.g. rewrite a config
    /// file and signal the process. Empty: such an instance is replaced instead.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reload: Vec<String>,
    /// What an instance placed on a `docker` site runs (`image:` or `build:`).
    pub container: Option<ContainerImage>,
    /// Where each instance serves Prometheus metrics (`metrics:`, an extension); `None`: it
    /// serves none that Phoenix knows of.
    pub metrics: Option<Metrics>,
    /// `Some` for a one-shot job (written under `jobs:`, an extension): one instance that runs
    /// its command to the end instead of staying up. Jobs share the services' namespace, their
    /// dependencies, phases and waves, so they live in [`Fleet::services`] beside them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
    /// Free-text description.
    pub description: Option<String>,
    /// Where the service is declared.
    #[serde(skip)]
    pub location: Location,
}

/// How a one-shot job runs (`jobs:`, an extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    /// Each attempt is stopped and counted as failed after this many milliseconds.
    pub timeout_ms: u64,
    /// Attempts after the first one fails (default 0).
    pub retries: u32,
    /// Wait before the first retry, in milliseconds; it doubles with each further retry, up to
    /// [`MAX_JOB_BACKOFF_MS`].
    pub backoff_ms: u64,
    /// `hook: {before: SERVICE}` or `{after: SERVICE}`: the job runs around that service's
    /// rollout (and again whenever that service changes); `{rollback: SERVICE}`: it runs only
    /// when an apply that changed that service (or ran that job) rolls back.
    pub hook: Option<Hook>,
    /// `for_each: SERVICE` (an extension): one run per instance of that service (or job), in
    /// that instance's data dir and place, instead of one instance of its own; e.g. a replica
    /// initialised before it first starts. `None`: the job has one instance, `JOB-0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
}

/// The default `timeout` of a job: 5 minutes, as Helm waits for a hook.
pub const DEFAULT_JOB_TIMEOUT_MS: u64 = 300_000;
/// The default `backoff` of a job: 1 s.
pub const DEFAULT_JOB_BACKOFF_MS: u64 = 1_000;
/// The most `retries` a job may have.
pub const MAX_JOB_RETRIES: u32 = 100;
/// The longest wait between two attempts of a job, however many retries: 10 minutes.
pub const MAX_JOB_BACKOFF_MS: u64 = 600_000;

impl Job {
    /// The wait before attempt `attempt` (1-based; 0 and 1 have none): `backoff` doubled for
    /// each retry after the first, at most [`MAX_JOB_BACKOFF_MS`].
    pub fn delay_before(&self, attempt: u32) -> u64 {
        if attempt <= 1 {
            return 0;
        }
        let doublings = (attempt - 2).min(32);
        self.backoff_ms
            .saturating_mul(1u64 << doublings)
            .min(MAX_JOB_BACKOFF_MS.max(self.backoff_ms))
    }
}

/// When a hook job runs relative to its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookWhen {
    /// Before the service's rollout (the service depends on the job).
    Before,
    /// After the service's rollout (the job depends on the service).
    After,
    /// Only when an apply rolls back after it changed the service (or ran the job): after the
    /// instances are restored. Adds no dependency: the job is in no wave of its own.
    Rollback,
}

/// A hook: a job bound to a service's rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hook {
    /// Before or after.
    pub when: HookWhen,
    /// The service.
    pub service: String,
}

impl Service {
    /// Whether this is a one-shot job (`jobs:`) rather than a long-running service.
    pub fn is_job(&self) -> bool {
        self.job.is_some()
    }

    /// Whether this is a job that runs only on rollback (`hook: {rollback: S}`).
    pub fn is_rollback_job(&self) -> bool {
        self.job
            .as_ref()
            .and_then(|j| j.hook.as_ref())
            .is_some_and(|h| h.when == HookWhen::Rollback)
    }

    /// `job` or `service`, for messages.
    pub fn kind(&self) -> &'static str {
        if self.is_job() { "job" } else { "service" }
    }

    /// Every template of the service in which `${...}` is filled in: `command`, `env` values,
    /// `reload`, and its health checks' URLs, addresses and argv.
    pub fn templates(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.command.iter().map(String::as_str).collect();
        out.extend(self.env.values().map(String::as_str));
        out.extend(self.reload.iter().map(String::as_str));
        for c in self.health.iter().flat_map(|h| &h.checks) {
            out.extend(c.templates());
        }
        out
    }

    /// The validator set of a validator service: its `validator_set`, else its own name.
    /// `None` for any other role.
    pub fn bft_set(&self) -> Option<&str> {
        if self.job.is_some() {
            return None;
        }
        (self.role == Role::Validator).then(|| self.validator_set.as_deref().unwrap_or(&self.name))
    }
}

impl Fleet {
    /// The site with this name.
    pub fn site(&self, name: &str) -> Option<&Site> {
        self.sites.iter().find(|s| s.name == name)
    }
    /// The project with this name.
    pub fn project(&self, name: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.name == name)
    }
    /// The service (or job) with this name.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
    /// The secret with this name.
    pub fn secret(&self, name: &str) -> Option<&crate::secrets::Secret> {
        self.secrets.iter().find(|s| s.name == name)
    }
    /// The jobs (`jobs:`), in file order.
    pub fn jobs(&self) -> impl Iterator<Item = &Service> {
        self.services.iter().filter(|s| s.is_job())
    }
}
