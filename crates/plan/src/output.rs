//! The plan: everything the planner computed, as data. It serialises to the JSON contract of
//! `fleet-spec.md` (`projects`, `sites`, `findings`) plus the rest of the analysis.

use crate::amount::{Amount, BudgetAmount};
use crate::finding::Finding;
use phoenix_spec::quantity::Range;
use phoenix_spec::{ProviderKind, Role, Spread, Tier};
use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};
use std::collections::BTreeMap;

/// The name of the synthetic group of services that belong to no project.
pub const UNASSIGNED: &str = "(none)";

/// The whole plan of a fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Fleet name.
    pub fleet: String,
    /// The environment overlay the fleet was read with, if any.
    pub environment: Option<String>,
    /// The policy the plan was computed with.
    pub policy: PlanPolicy,
    /// Fleet-wide totals.
    pub totals: Totals,
    /// Projects by name, with demand attributed through `hosted_on`.
    pub projects: BTreeMap<String, ProjectPlan>,
    /// Services that belong to no project, as the synthetic group [`UNASSIGNED`]; absent when
    /// every service has a project.
    pub unassigned: Option<GroupPlan>,
    /// Services by name.
    pub services: BTreeMap<String, ServicePlan>,
    /// Tiers in order core, regional, edge (only tiers that have sites).
    pub tiers: Vec<TierPlan>,
    /// Rollout phases in increasing order, each with its parallel waves.
    pub phases: Vec<PhasePlan>,
    /// Sites by name, with capacity and placed demand.
    pub sites: BTreeMap<String, SitePlan>,
    /// Every instance (`replicas.min` per service), services in fleet order.
    pub instances: Vec<Instance>,
    /// One entry per validator set, by name.
    pub validator_sets: Vec<ValidatorSet>,
    /// Dependency edges, services and projects.
    pub dependencies: Vec<Dependency>,
    /// The project timeline, when any project has a duration.
    pub timeline: Option<Timeline>,
    /// Everything worth saying, most severe first.
    pub findings: Vec<Finding>,
}

/// The policy in force.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PlanPolicy {
    /// CPU overcommit ratio (1 = none).
    pub cpu_overcommit: f64,
}

/// Fleet-wide totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    /// Declared demand: per-instance resources times replicas, ranges times ranges.
    pub demand: Amount,
    /// Demand of what apply deploys: per-instance resources times `replicas.min`.
    pub deployed: Amount,
    /// Demand of the instances that were placed.
    pub placed: Amount,
    /// Capacity of every host of every site.
    pub capacity: Amount,
    /// Instances planned (`replicas.min` summed).
    pub instances: u64,
    /// Instances placed on a host.
    pub placed_instances: u64,
    /// Number of sites.
    pub sites: usize,
    /// Number of hosts.
    pub hosts: u64,
    /// Number of services.
    pub services: usize,
    /// Number of services with `enabled: false`.
    pub disabled_services: usize,
}

/// A project's demand and attribution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectPlan {
    /// Demand counted here: the project's own demand unless it is hosted on another project,
    /// plus the own demand of every project hosted on it, directly or transitively. Summed
    /// over all projects, every unit is counted exactly once.
    pub demand: Amount,
    /// The demand of the project's own services.
    pub own_demand: Amount,
    /// The project this one's demand is attributed to, as written.
    pub hosted_on: Option<String>,
    /// Where this project's own demand is counted: the end of its `hosted_on` chain.
    pub counted_under: String,
    /// Projects whose own demand is counted here (excluding this one).
    pub hosts: Vec<String>,
    /// The project's services, by name.
    pub services: Vec<String>,
    /// Projects this one waits for.
    pub depends_on: Vec<String>,
    /// Duration, in hours, if given.
    pub duration_hours: Option<Range>,
    /// Stated budget, if given.
    pub budget: Option<BudgetAmount>,
}

/// A group of services without a project.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupPlan {
    /// Always [`UNASSIGNED`].
    pub name: String,
    /// Their demand.
    pub demand: Amount,
    /// Their names.
    pub services: Vec<String>,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServicePlan {
    /// Owning project.
    pub project: Option<String>,
    /// Rollout phase.
    pub phase: u32,
    /// Wave within the phase, from 1.
    pub wave: usize,
    /// Role.
    pub role: Role,
    /// False when disabled: planned and counted, but not deployed.
    pub enabled: bool,
    /// Declared replicas.
    pub replicas: Range,
    /// Resources of one instance.
    pub per_instance: Amount,
    /// Declared demand: `per_instance` times `replicas`.
    pub demand: Amount,
    /// Tier constraint.
    pub tier: Option<Tier>,
    /// Site constraint (empty = any).
    pub allowed_sites: Vec<String>,
    /// Spread.
    pub spread: Spread,
    /// Instances planned (`replicas.min`).
    pub instances: u64,
    /// Instances placed.
    pub placed: u64,
    /// Placed instances per site.
    pub placement: BTreeMap<String, u64>,
    /// Services this one waits for.
    pub depends_on: Vec<String>,
    /// For a one-shot job (`jobs:`): its timeout, retries, backoff and hook; absent for a
    /// service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<phoenix_spec::Job>,
}

/// One tier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierPlan {
    /// The tier.
    pub tier: Tier,
    /// Sites of this tier.
    pub sites: usize,
    /// Hosts of this tier.
    pub hosts: u64,
    /// Their capacity.
    pub capacity: Amount,
    /// Demand placed on them.
    pub demand: Amount,
    /// Instances placed on them.
    pub instances: u64,
}

/// One rollout phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhasePlan {
    /// Phase number.
    pub phase: u32,
    /// Declared demand of the phase's services.
    pub demand: Amount,
    /// Sites online in this phase (site phase <= this phase).
    pub sites_online: usize,
    /// Parallel waves: every service of a wave depends only on earlier waves and phases.
    pub waves: Vec<Vec<String>>,
}

/// One site.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SitePlan {
    /// Position in the fleet's site list, for display in file order.
    pub index: usize,
    /// The site group it was expanded from (`count:`), if any.
    pub group: Option<String>,
    /// Tier.
    pub tier: Tier,
    /// Region, if given.
    pub region: Option<String>,
    /// Provider.
    pub provider: ProviderKind,
    /// Phase in which it comes online.
    pub phase: u32,
    /// Number of hosts.
    pub hosts: u32,
    /// Capacity of one host.
    pub capacity_per_host: Amount,
    /// Capacity of all hosts: per host times hosts.
    pub capacity: Amount,
    /// Demand of the instances placed here.
    pub demand: Amount,
    /// Instances placed here.
    pub instances: u64,
    /// Upper bound of demand over lower bound of capacity, in percent.
    pub utilisation: Utilisation,
    /// Per host: demand and instances.
    pub host_loads: Vec<HostLoad>,
}

/// Worst-case utilisation in percent: demand upper bound over capacity lower bound. `None`
/// when there is no capacity of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Utilisation {
    /// CPU percent.
    pub cpu: Option<f64>,
    /// Memory percent.
    pub memory: Option<f64>,
    /// Storage percent.
    pub storage: Option<f64>,
}

/// What one host carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostLoad {
    /// Host index within the site.
    pub host: u32,
    /// Demand placed on it.
    pub demand: Amount,
    /// Instances placed on it.
    pub instances: u64,
}

/// One instance and where it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// `SERVICE-i`, i from 0.
    pub id: String,
    /// Its service.
    pub service: String,
    /// Its site; `None` when unplaceable.
    pub site: Option<String>,
    /// Host index within the site; `None` when unplaceable.
    pub host: Option<u32>,
}

/// The BFT analysis of one validator set: the validators of one service, or of every service
/// that names the same `validator_set`. A set whose services roll out in several phases is
/// judged as it stands at each of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidatorSet {
    /// The set's name: its `validator_set`, or the name of its one service.
    pub name: String,
    /// Its services, in fleet order.
    pub services: Vec<String>,
    /// Validators placed, once every phase has rolled out.
    pub n: u64,
    /// Faults tolerated: floor((n-1)/3).
    pub f: u64,
    /// Votes needed to finalize: n - f (2f+1 when n = 3f+1).
    pub quorum: u64,
    /// Validators per site.
    pub by_site: BTreeMap<String, u64>,
    /// The site holding the most validators (ties: first by name), and how many.
    pub worst_site: Option<(String, u64)>,
    /// The host holding the most validators (`site/index`), and how many.
    pub worst_host: Option<(String, u64)>,
    /// The strictest spread among its services (host, then site, then none); by host, losing a
    /// host is checked too.
    pub spread: Spread,
    /// True when the set is safe at every phase (see [`ValidatorPhase::safe`]).
    pub safe: bool,
    /// The set as it stands at each phase in which it grows, in increasing order: the
    /// validators of its services of that phase or earlier.
    pub phases: Vec<ValidatorPhase>,
}

/// A validator set as it stands at one phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValidatorPhase {
    /// The phase.
    pub phase: u32,
    /// The set's services that join in this phase.
    pub joining: Vec<String>,
    /// Validators placed, this phase's and earlier phases'.
    pub n: u64,
    /// Faults tolerated: floor((n-1)/3).
    pub f: u64,
    /// Votes needed to finalize: n - f.
    pub quorum: u64,
    /// Validators per site.
    pub by_site: BTreeMap<String, u64>,
    /// The site holding the most validators, and how many.
    pub worst_site: Option<(String, u64)>,
    /// The host holding the most validators (`site/index`), and how many.
    pub worst_host: Option<(String, u64)>,
    /// True when n >= 4 and no single site (or host, when spread by host) holds more than f.
    pub safe: bool,
}

/// An edge of the dependency graph: `before` must be healthy before `after` starts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Dependency {
    /// The dependency.
    pub before: String,
    /// The dependent.
    pub after: String,
    /// Between services or between projects.
    pub kind: DependencyKind,
}

/// What a dependency edge connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DependencyKind {
    /// A service's `depends_on`.
    Service,
    /// A project's `depends_on`: every service of `after` waits for every service of `before`.
    Project,
}

/// The project timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    /// Per project: duration, earliest start and earliest finish (hours, min and max bounds
    /// computed separately). Projects without a duration take no time.
    pub projects: BTreeMap<String, TimelineEntry>,
    /// The chain of projects that decides the latest (max-bound) finish, first to last.
    pub critical_path: Vec<String>,
    /// Earliest completion of everything, in weeks.
    pub length_weeks: Weeks,
    /// Everything done one after another, in weeks.
    pub sequential_weeks: Weeks,
    /// `length_weeks` in hours.
    pub length_hours: Range,
    /// `sequential_weeks` in hours.
    pub sequential_hours: Range,
}

/// One project on the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEntry {
    /// Duration in hours (zero when not given).
    pub duration_hours: Range,
    /// Earliest start in hours.
    pub start_hours: Range,
    /// Earliest finish in hours.
    pub finish_hours: Range,
}

/// An hour range serialised as `{ "min": weeks, "max": weeks }`, to two decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weeks(pub Range);

impl Weeks {
    fn weeks(hours: u64) -> f64 {
        (hours as f64 / 168.0 * 100.0).round() / 100.0
    }
}

impl Serialize for Weeks {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Range", 2)?;
        m.serialize_field("min", &Weeks::weeks(self.0.min))?;
        m.serialize_field("max", &Weeks::weeks(self.0.max))?;
        m.end()
    }
}
