//! What should run: the desired units of a fleet (from the spec and the planner's placement),
//! the services' rollout settings, the phase/wave order, and the revision document stored with
//! every apply.

use crate::error::EngineError;
use phoenix_provider_api::{ContainerSpec, Health, UnitSpec};
use phoenix_spec::{ContainerImage, Fleet, ProviderKind, Rollout};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// One instance that should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredUnit {
    /// Service name.
    pub service: String,
    /// Instance id, `web-0`.
    pub instance: String,
    /// The unit to run, with `revision` 0: the executor sets the revision being applied.
    pub spec: UnitSpec,
    /// [`fingerprint`] of `spec`: two units with the same fingerprint run the same thing.
    pub fingerprint: String,
}

/// How one service is rolled out and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Name.
    pub name: String,
    /// Rollout phase.
    pub phase: u32,
    /// Strategy.
    pub rollout: Rollout,
    /// Readiness gate (`None`: up once running).
    pub health: Option<Health>,
    /// Grace period of stops.
    pub stop_grace_ms: u64,
    /// Whether it is deployed (`enabled: true`).
    pub enabled: bool,
    /// Direct dependencies.
    pub depends_on: Vec<String>,
    /// For a one-shot job: how it runs (timeout, retries, backoff, hook).
    pub job: Option<phoenix_spec::Job>,
}

/// What the store says of a job instance's latest run, which decides whether it runs again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLast {
    /// The revision it ran for.
    pub revision: u64,
    /// The fingerprint of what ran.
    pub fingerprint: String,
    /// Whether it succeeded.
    pub succeeded: bool,
    /// How it ended, for people (`succeeded`, `failed`, `timed-out`).
    pub outcome: String,
}

/// Everything the decision core needs to know about what should run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Desired {
    /// Fleet name.
    pub fleet: String,
    /// Phases in order, each a list of waves, each a list of service names (enabled services
    /// only, in the planner's order).
    pub phases: Vec<(u32, Vec<Vec<String>>)>,
    /// Every service of the spec, enabled or not.
    pub services: BTreeMap<String, ServiceInfo>,
    /// Desired units by instance id (enabled services only, jobs apart).
    pub units: BTreeMap<String, DesiredUnit>,
    /// The unit of every enabled job's instance, by instance id. Its fingerprint covers, for a
    /// hook, the fingerprints of the hooked service's (or job's) units, so that the hook runs
    /// again whenever that rolls out.
    pub jobs: BTreeMap<String, DesiredUnit>,
    /// The latest recorded run of each job instance (filled from the state store by the
    /// engine before it decides; see [`Desired::with_job_runs`]).
    pub job_runs: BTreeMap<String, JobLast>,
    /// Jobs to run whatever their fingerprint says (`phoenix run-job`).
    pub force_jobs: BTreeSet<String>,
    /// Whether the fleet is being destroyed (nothing should run).
    pub destroy: bool,
}

/// The fingerprint of a unit spec: a short hash of everything that makes a unit run
/// differently (command, env, ports, health, restart, grace, backups, placement), ignoring its
/// revision.
pub fn fingerprint(spec: &UnitSpec) -> String {
    let mut s = spec.clone();
    s.revision = 0;
    // What a unit is bound to is compared on its own (`decide`): the ids of another
    // service's units say nothing about what this unit runs.
    s.bindings.clear();
    let json = serde_json::to_vec(&s).unwrap_or_default();
    let digest = Sha256::digest(&json);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// How a service's instance runs on a docker site: its image or build context (relative to the
/// spec file it was written in), with the service's minimum CPU and memory as limits.
fn container_of(fleet: &Fleet, service: &phoenix_spec::Service) -> Option<ContainerSpec> {
    let (image, build) = match service.container.as_ref()? {
        ContainerImage::Image(i) => (Some(i.clone()), None),
        ContainerImage::Build { path, file } => {
            let spec_dir = fleet
                .files
                .get(*file)
                .and_then(|f| {
                    std::path::Path::new(f)
                        .parent()
                        .map(std::path::Path::to_owned)
                })
                .unwrap_or_default();
            let dir = spec_dir.join(path);
            // Absolute, so that the provider finds it whatever its working directory.
            (None, Some(std::path::absolute(&dir).unwrap_or(dir)))
        }
    };
    let positive = |v: u64| (v > 0).then_some(v);
    Some(ContainerSpec {
        image,
        build,
        cpu_millis: positive(service.resources.cpu.min),
        memory_bytes: positive(service.resources.memory.min),
        image_id: None,
    })
}

/// The absolute folder of the spec file `service` is written in, for `${spec_dir}`: scripts and
/// SQL files kept beside the spec are found wherever Phoenix runs from (a unit's working
/// directory is its data dir).
fn spec_dir_of(fleet: &Fleet, service: &phoenix_spec::Service) -> String {
    let dir = fleet
        .files
        .get(service.location.file)
        .and_then(|f| {
            std::path::Path::new(f)
                .parent()
                .map(std::path::Path::to_owned)
        })
        .unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() {
        std::path::PathBuf::from(".")
    } else {
        dir
    };
    std::path::absolute(&dir)
        .unwrap_or(dir)
        .display()
        .to_string()
}

/// A hex SHA-256 of `bytes`, for plan hashes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Desired {
    /// Pins the image id of every container unit (asked of `resolve`, e.g. the Docker
    /// provider, which builds a `build:` context first) and recomputes fingerprints, so that a
    /// tag that moved or a build context that changed is a change.
    ///
    /// # Errors
    /// The first error of `resolve`.
    pub fn pin_images<E>(
        &mut self,
        mut resolve: impl FnMut(&UnitSpec) -> Result<Option<String>, E>,
    ) -> Result<(), E> {
        for unit in self.units.values_mut() {
            if unit.spec.container.is_none() {
                continue;
            }
            let id = resolve(&unit.spec)?;
            if let Some(c) = unit.spec.container.as_mut() {
                c.image_id = id;
            }
            unit.fingerprint = fingerprint(&unit.spec);
        }
        for unit in self.jobs.values_mut() {
            if unit.spec.container.is_none() {
                continue;
            }
            let Some(id) = resolve(&unit.spec)? else {
                continue;
            };
            // A job's fingerprint may fold in a hook's target: extend it rather than recompute,
            // as `<inputs>~<image>`, so that a reading command, which resolves no image, can
            // still compare the inputs (see `same_job_inputs`).
            let base = unit
                .fingerprint
                .split_once('~')
                .map_or(unit.fingerprint.as_str(), |(b, _)| b)
                .to_string();
            unit.fingerprint = format!("{base}~{}", &sha256_hex(id.as_bytes())[..8]);
            if let Some(c) = unit.spec.container.as_mut() {
                c.image_id = Some(id);
            }
        }
        Ok(())
    }

    /// Pins the version of every secret value the units use (`versions` by secret name, as
    /// the state store keeps them; a secret without one is version 0, i.e. not stored yet) and
    /// recomputes fingerprints, so that a new value restarts the units that use it while the
    /// fingerprint reveals nothing of the value. Call it before [`Desired::pin_images`].
    pub fn pin_secrets(&mut self, fleet: &Fleet, versions: &BTreeMap<String, u64>) {
        let pin = |unit: &mut DesiredUnit| {
            for (name, v) in unit.spec.secrets.iter_mut() {
                *v = versions.get(name).copied().unwrap_or(0);
            }
            unit.fingerprint = fingerprint(&unit.spec);
        };
        self.units.values_mut().for_each(pin);
        self.jobs.values_mut().for_each(pin);
        hook_fingerprints(fleet, &self.units, &mut self.jobs);
    }

    /// The desired state of `fleet` as placed by `plan`: `replicas.min` instances of every
    /// enabled service, each on the site and host the planner chose.
    ///
    /// # Errors
    /// [`EngineError::InvalidDesired`] listing every enabled service that cannot be deployed:
    /// an instance the planner could not place, or no `command`.
    pub fn new(fleet: &Fleet, plan: &phoenix_plan::Plan) -> Result<Self, EngineError> {
        let mut problems = Vec::new();
        let mut services = BTreeMap::new();
        for s in &fleet.services {
            services.insert(
                s.name.clone(),
                ServiceInfo {
                    name: s.name.clone(),
                    phase: s.phase,
                    rollout: s.rollout.clone(),
                    health: s.health.clone().map(|h| {
                        // The gate probes this health: written as the units' own (ports of
                        // addresses explicit, `${spec_dir}` filled in).
                        let mut u = UnitSpec::new(&fleet.name, &s.name, &s.name, 0);
                        u.health = Some(h);
                        crate::address::with_explicit_ports(&mut u, |t| {
                            fleet.service(t).and_then(|t| t.ports.first().cloned())
                        });
                        crate::address::with_spec_dir(&mut u, &spec_dir_of(fleet, s));
                        u.health.expect("kept")
                    }),
                    stop_grace_ms: s.stop_grace_ms,
                    enabled: s.enabled,
                    depends_on: s.depends_on.clone(),
                    job: s.job.clone(),
                },
            );
            // On docker sites the image's own command may run; elsewhere a command is needed.
            let placed_off_docker = plan.instances.iter().any(|i| {
                i.service == s.name
                    && i.site
                        .as_deref()
                        .and_then(|n| fleet.site(n))
                        .map(|x| x.provider)
                        != Some(ProviderKind::Docker)
            });
            if s.enabled && s.replicas.min > 0 && s.command.is_empty() && placed_off_docker {
                problems.push(format!("service `{}` has no `command` to run", s.name));
            }
        }
        let mut units = BTreeMap::new();
        let mut jobs = BTreeMap::new();
        for inst in &plan.instances {
            let Some(service) = fleet.service(&inst.service) else {
                continue;
            };
            if !service.enabled {
                continue;
            }
            // A `for_each` job runs in its target's instances, added once they are known.
            if service.job.as_ref().is_some_and(|j| j.for_each.is_some()) {
                continue;
            }
            let (Some(site), Some(host)) = (&inst.site, inst.host) else {
                problems.push(format!(
                    "instance `{}` could not be placed (see `phoenix plan`)",
                    inst.id
                ));
                continue;
            };
            let index: u32 = inst
                .id
                .rsplit_once('-')
                .and_then(|(_, i)| i.parse().ok())
                .unwrap_or(0);
            let mut spec = unit_of_service(&fleet.name, service, index, site, host);
            crate::address::with_explicit_ports(&mut spec, |s| {
                fleet.service(s).and_then(|t| t.ports.first().cloned())
            });
            crate::address::with_spec_dir(&mut spec, &spec_dir_of(fleet, service));
            if fleet.site(site).map(|s| s.provider) == Some(ProviderKind::Docker) {
                match container_of(fleet, service) {
                    Some(c) => spec.container = Some(c),
                    None => problems.push(format!(
                        "service `{}` has an instance on docker site `{site}` but neither `image:` nor `build:`",
                        service.name
                    )),
                }
            }
            if !service.command.is_empty()
                && let Err(e) = spec.validate()
            {
                problems.push(e.to_string());
            }
            let unit = DesiredUnit {
                service: service.name.clone(),
                instance: inst.id.clone(),
                fingerprint: fingerprint(&spec),
                spec,
            };
            if service.is_job() {
                jobs.insert(inst.id.clone(), unit);
            } else {
                units.insert(inst.id.clone(), unit);
            }
        }
        for_each_jobs(fleet, &units, &mut jobs, &mut problems);
        hook_fingerprints(fleet, &units, &mut jobs);
        if !problems.is_empty() {
            return Err(EngineError::InvalidDesired { problems });
        }
        let phases = plan
            .phases
            .iter()
            .map(|p| {
                let waves: Vec<Vec<String>> = p
                    .waves
                    .iter()
                    .map(|w| {
                        w.iter()
                            .filter(|s| services.get(*s).is_some_and(|i| i.enabled))
                            .cloned()
                            .collect::<Vec<_>>()
                    })
                    .filter(|w| !w.is_empty())
                    .collect();
                (p.phase, waves)
            })
            .filter(|(_, w)| !w.is_empty())
            .collect();
        Ok(Desired {
            fleet: fleet.name.clone(),
            phases,
            services,
            units,
            jobs,
            job_runs: BTreeMap::new(),
            force_jobs: BTreeSet::new(),
            destroy: false,
        })
    }

    /// Nothing should run (for `destroy`).
    pub fn empty(fleet: &str) -> Self {
        Desired {
            fleet: fleet.into(),
            destroy: true,
            ..Desired::default()
        }
    }

    /// Nothing of `fleet` should run, and what runs is stopped in reverse dependency order
    /// (for `destroy` with the spec at hand).
    pub fn destroy(fleet: &Fleet, plan: &phoenix_plan::Plan) -> Self {
        let mut services = BTreeMap::new();
        for s in &fleet.services {
            services.insert(
                s.name.clone(),
                ServiceInfo {
                    name: s.name.clone(),
                    phase: s.phase,
                    rollout: s.rollout.clone(),
                    health: s.health.clone(),
                    stop_grace_ms: s.stop_grace_ms,
                    enabled: false,
                    depends_on: s.depends_on.clone(),
                    job: s.job.clone(),
                },
            );
        }
        Desired {
            fleet: fleet.name.clone(),
            phases: plan
                .phases
                .iter()
                .map(|p| (p.phase, p.waves.clone()))
                .collect(),
            services,
            units: BTreeMap::new(),
            jobs: BTreeMap::new(),
            job_runs: BTreeMap::new(),
            force_jobs: BTreeSet::new(),
            destroy: true,
        }
    }

    /// This desired state with the latest recorded run of each job instance (`runs` as the
    /// store lists them: by instance, then revision), which [`crate::decide`] compares with
    /// each job's fingerprint.
    pub fn with_job_runs(mut self, runs: &[phoenix_state::JobRunRecord]) -> Self {
        self.job_runs = latest_job_runs(runs);
        self
    }
}

/// Whether a job run recorded with fingerprint `recorded` ran the inputs `desired` has: the
/// same fingerprint, or, when `desired` carries no pinned image (a reading command resolves
/// none), the same inputs apart from the image.
pub fn same_job_inputs(recorded: &str, desired: &str) -> bool {
    recorded == desired
        || (!desired.contains('~') && recorded.split_once('~').is_some_and(|(b, _)| b == desired))
}

/// The latest run of each job instance among `runs`: the highest revision.
pub fn latest_job_runs(runs: &[phoenix_state::JobRunRecord]) -> BTreeMap<String, JobLast> {
    let mut out: BTreeMap<String, JobLast> = BTreeMap::new();
    for r in runs {
        let run = &r.run;
        if out
            .get(&run.instance)
            .is_some_and(|l| l.revision > run.revision.0)
        {
            continue;
        }
        out.insert(
            run.instance.clone(),
            JobLast {
                revision: run.revision.0,
                fingerprint: run.fingerprint.clone(),
                succeeded: run.outcome == phoenix_state::JobOutcome::Succeeded,
                outcome: run.outcome.as_str().to_string(),
            },
        );
    }
    out
}

/// Adds the runs of every enabled `for_each` job: one per desired instance of its target (a
/// service's units, or a plain job's instances), keyed `JOB-N` after the target's instance
/// number (what the store records and `status` shows), whose unit *is* that instance
/// (`spec.instance`: the provider gives it that instance's data dir and `${instance}`) on its
/// site and host. The unit ids of the job and of the instance are then the same at one
/// revision; the job's unit is gone before the instance starts (it is ordered before it).
fn for_each_jobs(
    fleet: &Fleet,
    units: &BTreeMap<String, DesiredUnit>,
    jobs: &mut BTreeMap<String, DesiredUnit>,
    problems: &mut Vec<String>,
) {
    let mut added = Vec::new();
    for job in fleet.jobs().filter(|j| j.enabled) {
        let Some(target) = job.job.as_ref().and_then(|j| j.for_each.as_deref()) else {
            continue;
        };
        let targets = units
            .values()
            .chain(jobs.values())
            .filter(|u| u.service == target);
        for t in targets {
            let index = u32::try_from(crate::decide::instance_index(&t.instance)).unwrap_or(0);
            let mut spec = unit_of_service(&fleet.name, job, index, &t.spec.site, t.spec.host);
            spec.instance = t.spec.instance.clone();
            crate::address::with_explicit_ports(&mut spec, |s| {
                fleet.service(s).and_then(|x| x.ports.first().cloned())
            });
            crate::address::with_spec_dir(&mut spec, &spec_dir_of(fleet, job));
            if fleet.site(&t.spec.site).map(|s| s.provider) == Some(ProviderKind::Docker) {
                match container_of(fleet, job) {
                    Some(c) => spec.container = Some(c),
                    None => problems.push(format!(
                        "job `{}` runs on docker site `{}` but has neither `image:` nor `build:`",
                        job.name, t.spec.site
                    )),
                }
            }
            if let Err(e) = spec.validate() {
                problems.push(e.to_string());
            }
            added.push(DesiredUnit {
                service: job.name.clone(),
                instance: format!("{}-{index}", job.name),
                fingerprint: fingerprint(&spec),
                spec,
            });
        }
    }
    for u in added {
        jobs.insert(u.instance.clone(), u);
    }
}

/// Folds into each hook job's fingerprint the fingerprints of the units of what it hooks, so
/// that `hook: {before: db}` runs again whenever `db` changes. Hooks of hooks are not chained:
/// a hook sees its target's own inputs.
fn hook_fingerprints(
    fleet: &Fleet,
    units: &BTreeMap<String, DesiredUnit>,
    jobs: &mut BTreeMap<String, DesiredUnit>,
) {
    let own: BTreeMap<String, String> = jobs
        .iter()
        .map(|(k, u)| (k.clone(), u.fingerprint.clone()))
        .collect();
    for unit in jobs.values_mut() {
        let Some(hook) = fleet
            .service(&unit.service)
            .and_then(|s| s.job.as_ref())
            .and_then(|j| j.hook.as_ref())
        else {
            continue;
        };
        // A rollback job's runs are decided by the rollback, not by its fingerprint.
        if hook.when == phoenix_spec::HookWhen::Rollback {
            continue;
        }
        let mut text = unit.fingerprint.clone();
        for (instance, u) in units.iter().filter(|(_, u)| u.service == hook.service) {
            text.push_str(&format!(" {instance}={}", u.fingerprint));
        }
        for (instance, fp) in &own {
            if jobs_service(instance) == hook.service {
                text.push_str(&format!(" {instance}={fp}"));
            }
        }
        unit.fingerprint = sha256_hex(text.as_bytes())[..16].to_string();
    }
}

/// The service of an instance id: `migrate-0` -> `migrate`.
fn jobs_service(instance: &str) -> &str {
    instance.rsplit_once('-').map_or(instance, |(s, _)| s)
}

/// Which services an apply may touch (`--target`, `--exclude`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope {
    /// Services in scope; `None` = the whole fleet (and units of services no longer in the
    /// spec may be removed).
    pub services: Option<BTreeSet<String>>,
}

impl Scope {
    /// The whole fleet.
    pub fn all() -> Self {
        Scope { services: None }
    }

    /// `targets` and everything they depend on (transitively), minus `excludes`; with no
    /// targets, every service minus `excludes`.
    ///
    /// # Errors
    /// [`EngineError::InvalidDesired`] naming unknown services.
    pub fn new(
        desired: &Desired,
        targets: &[String],
        excludes: &[String],
    ) -> Result<Self, EngineError> {
        let unknown: Vec<String> = targets
            .iter()
            .chain(excludes)
            .filter(|s| !desired.services.contains_key(*s))
            .map(|s| format!("unknown service `{s}` in --target/--exclude"))
            .collect();
        if !unknown.is_empty() {
            return Err(EngineError::InvalidDesired { problems: unknown });
        }
        if targets.is_empty() && excludes.is_empty() {
            return Ok(Scope::all());
        }
        let mut set = BTreeSet::new();
        if targets.is_empty() {
            set.extend(desired.services.keys().cloned());
        } else {
            let mut stack: Vec<String> = targets.to_vec();
            while let Some(s) = stack.pop() {
                if set.insert(s.clone())
                    && let Some(info) = desired.services.get(&s)
                {
                    stack.extend(info.depends_on.iter().cloned());
                }
            }
        }
        for e in excludes {
            set.remove(e);
        }
        Ok(Scope {
            services: Some(set),
        })
    }

    /// Exactly these services (or jobs), without their dependencies: what `phoenix run-job`
    /// touches.
    pub fn only(self, services: impl IntoIterator<Item = String>) -> Self {
        Scope {
            services: Some(services.into_iter().collect()),
        }
    }

    /// Whether the service may be touched.
    pub fn contains(&self, service: &str) -> bool {
        self.services.as_ref().is_none_or(|s| s.contains(service))
    }

    /// Whether this is the whole fleet.
    pub fn is_all(&self) -> bool {
        self.services.is_none()
    }
}

/// What kind of operation a revision records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RevisionKind {
    /// `phoenix apply` (or `up`).
    #[default]
    Apply,
    /// `phoenix rollback`: the spec of an older revision applied again.
    Rollback,
    /// `phoenix destroy`: nothing should run.
    Destroy,
}

/// The document stored as a revision's `spec_json`: the spec sources (so an old revision can
/// be parsed and applied again by `rollback`), and the unit spec of every instance (so the
/// engine knows what a running unit of that revision runs, and can restart it on rollback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RevisionDoc {
    /// Document format, 1.
    pub format: u32,
    /// What the revision did.
    #[serde(default)]
    pub kind: RevisionKind,
    /// For a rollback: the revision whose spec was applied again.
    #[serde(default)]
    pub rollback_of: Option<u64>,
    /// Environment overlay the sources were read with.
    #[serde(default)]
    pub environment: Option<String>,
    /// `(file name, text)` of every spec file, in order.
    #[serde(default)]
    pub sources: Vec<(String, String)>,
    /// `--target` services, if any.
    #[serde(default)]
    pub targets: Vec<String>,
    /// `--exclude` services, if any.
    #[serde(default)]
    pub excludes: Vec<String>,
    /// Unit spec (revision 0) of every desired instance.
    #[serde(default)]
    pub units: BTreeMap<String, UnitSpec>,
    /// Running units of earlier revisions, by unit id, with what they are bound to from this
    /// revision on (`@r0`: this revision's units), so that a reload in place is remembered and
    /// the next apply compares with it (ADR 009).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rebound: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl RevisionDoc {
    /// A document for `desired`, read from `sources` with `environment`.
    pub fn new(
        kind: RevisionKind,
        desired: &Desired,
        sources: Vec<(String, String)>,
        environment: Option<String>,
    ) -> Self {
        RevisionDoc {
            format: 1,
            kind,
            rollback_of: None,
            environment,
            sources,
            targets: Vec::new(),
            excludes: Vec::new(),
            units: desired
                .units
                .iter()
                .map(|(k, u)| (k.clone(), u.spec.clone()))
                .collect(),
            rebound: BTreeMap::new(),
        }
    }

    /// Parses a stored document; `None` if it is not one (an older or foreign revision).
    pub fn parse(spec_json: &str) -> Option<Self> {
        serde_json::from_str(spec_json).ok()
    }

    /// The document as stored.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The unit of instance `index` (`<service>-<index>`) of a validated spec service, placed on
/// `site`/`host`, before any revision is given to it. It is built here, not in the provider
/// API, because providers must not depend on the spec parser.
fn unit_of_service(
    fleet: &str,
    service: &phoenix_spec::Service,
    index: u32,
    site: &str,
    host: u32,
) -> UnitSpec {
    let mut unit = UnitSpec::new(
        fleet,
        &service.name,
        &format!("{}-{index}", service.name),
        0,
    );
    unit.site = site.into();
    unit.host = host;
    unit.command = service.command.clone();
    unit.env = service.env.clone();
    unit.ports = service.ports.clone();
    unit.health = service.health.clone();
    unit.restart = service.restart;
    unit.stop_grace_ms = service.stop_grace_ms;
    unit.backup = service.backup.clone();
    unit.secrets = phoenix_spec::secrets::used_by(service)
        .into_iter()
        .map(|n| (n, 0))
        .collect();
    unit.user = service.user.clone();
    unit.reload = service.reload.clone();
    unit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(db: &str, backup: &str) -> Fleet {
        let yaml = format!(
            "phoenix: 1\nname: f\nsites: [{{name: l, tier: core, capacity: {{cpu: 8, memory: 8Gi, storage: 8G}}}}]\nservices:\n  - {{name: db, command: [{db}]}}\n  - {{name: web, command: [web]}}\njobs:\n  - {{name: backup, command: [{backup}], hook: {{before: db}}}}\n  - {{name: seed, command: [seed], depends_on: [db]}}\n"
        );
        phoenix_spec::parse_sources(&[("f.yaml".into(), yaml)], None).unwrap()
    }

    fn fps(f: &Fleet) -> (String, String) {
        let d = Desired::new(f, &phoenix_plan::plan(f)).unwrap();
        assert!(
            !d.units.contains_key("backup-0"),
            "jobs are apart from units"
        );
        (
            d.jobs["backup-0"].fingerprint.clone(),
            d.jobs["seed-0"].fingerprint.clone(),
        )
    }

    #[test]
    fn a_hook_fingerprint_follows_its_target_and_a_plain_job_only_itself() {
        let (backup, seed) = fps(&fleet("db", "dump"));
        assert_eq!(fps(&fleet("db", "dump")), (backup.clone(), seed.clone()));
        let (backup2, seed2) = fps(&fleet("db, '--v2'", "dump"));
        assert_ne!(backup2, backup, "db changed: the hook runs again");
        assert_eq!(
            seed2, seed,
            "a dependency is not a hook: seed's inputs did not change"
        );
        let (backup3, _) = fps(&fleet("db", "dump, '-Fc'"));
        assert_ne!(backup3, backup);
    }

    #[test]
    fn job_inputs_compare_without_the_image_only_when_none_is_pinned() {
        assert!(same_job_inputs("abc", "abc"));
        assert!(same_job_inputs("abc~1234", "abc~1234"));
        assert!(
            same_job_inputs("abc~1234", "abc"),
            "a reading command pins no image"
        );
        assert!(
            !same_job_inputs("abc~1234", "abc~9999"),
            "a moved tag is a change"
        );
        assert!(!same_job_inputs("abd~1234", "abc"));
        assert!(!same_job_inputs("abc", "abc~1234"));
    }

    /// A secret's new version replaces the units (and reruns the jobs, and the hooks around
    /// them) that use it, and only those; the unit spec holds the version, never a value.
    #[test]
    fn a_secret_version_is_in_the_fingerprints_of_its_users_only() {
        let yaml = "phoenix: 1\nname: f\nsites:\n  - name: s\n    tier: core\n    capacity: { cpu: 8, memory: 8Gi, storage: 8G }\nsecrets:\n  - name: db\n    generate: true\nservices:\n  - name: a\n    command: [a]\n    env: { P: '${secret:db}' }\n  - name: b\n    command: [b]\njobs:\n  - name: m\n    command: [m, '${secret_file:db}']\n";
        let f = phoenix_spec::parse_sources(&[("f.yaml".into(), yaml.into())], None)
            .unwrap_or_else(|d| panic!("{}", d.render()));
        let at = |v: u64| {
            let mut d = Desired::new(&f, &phoenix_plan::plan(&f)).unwrap();
            d.pin_secrets(&f, &BTreeMap::from([("db".to_string(), v)]));
            d
        };
        let (one, two) = (at(1), at(2));
        assert_eq!(
            one.units["a-0"].spec.secrets,
            BTreeMap::from([("db".into(), 1)])
        );
        assert_ne!(one.units["a-0"].fingerprint, two.units["a-0"].fingerprint);
        assert_ne!(one.jobs["m-0"].fingerprint, two.jobs["m-0"].fingerprint);
        assert_eq!(one.units["b-0"].fingerprint, two.units["b-0"].fingerprint);
        assert_eq!(at(1).units["a-0"].fingerprint, one.units["a-0"].fingerprint);
        assert!(one.units["b-0"].spec.secrets.is_empty());
    }

    #[test]
    fn fingerprint_ignores_revision_only() {
        let a = UnitSpec::new("f", "web", "web-0", 1).with_command(["x"]);
        let mut b = a.clone();
        b.revision = 7;
        assert_eq!(fingerprint(&a), fingerprint(&b));
        let c = a.clone().with_env("K", "v");
        assert_ne!(fingerprint(&a), fingerprint(&c));
    }
}
