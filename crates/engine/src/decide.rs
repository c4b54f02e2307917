//! The pure decision core: desired units + observed units -> actions, as data.
//!
//! No I/O, no clock: [`decide`] and [`resolve_intent`] are functions of their inputs, which is
//! what lets every rollout decision be unit-tested without processes.

use crate::desired::{Desired, Scope, fingerprint};
use phoenix_provider_api::{Health, UnitSpec, UnitState, UnitStatus};
use phoenix_spec::Rollout;
use phoenix_state::{Intent, IntentOp};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A unit as observed: the provider's status, one health probe if it runs, and the spec it was
/// started with (from its revision's document) when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedUnit {
    /// What the provider reports.
    pub status: UnitStatus,
    /// Result of a probe of its health check, for running units with one; `None` when not
    /// probed (not running, or no check: then running counts as healthy).
    pub healthy: Option<bool>,
    /// The probe's detail.
    pub health_detail: Option<String>,
    /// The spec it runs (revision set), when its revision is known to the store.
    pub spec: Option<UnitSpec>,
}

impl ObservedUnit {
    /// An observation without probe or known spec.
    pub fn new(status: UnitStatus) -> Self {
        ObservedUnit {
            status,
            healthy: None,
            health_detail: None,
            spec: None,
        }
    }

    /// Running, and its check (if any) passed.
    pub fn is_up(&self) -> bool {
        self.status.state.is_running() && self.healthy != Some(false)
    }

    /// The fingerprint of the spec it runs, when known.
    pub fn fingerprint(&self) -> Option<String> {
        self.spec.as_ref().map(fingerprint)
    }
}

/// A unit that runs before a change: what a rollback would bring back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OldUnit {
    /// `web-0@r3`.
    pub unit_id: String,
    /// Its revision.
    pub revision: u64,
    /// Whether it was running.
    pub running: bool,
    /// Its spec, when known (needed to start it again).
    #[serde(skip)]
    pub spec: Option<UnitSpec>,
}

/// What happens to one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "change")]
pub enum Change {
    /// No unit runs it: start one.
    Create,
    /// A unit runs it, but not as desired (other spec, unhealthy, not running): start a new
    /// unit and stop the old one.
    Replace {
        /// The unit replaced.
        old: Box<OldUnit>,
        /// Why, for people.
        reason: String,
    },
}

/// A change to one instance, with the unit to start (revision 0: set when executed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceAction {
    /// Service.
    pub service: String,
    /// Instance.
    pub instance: String,
    /// What happens.
    #[serde(flatten)]
    pub change: Change,
    /// The unit to start.
    #[serde(skip)]
    pub spec: UnitSpec,
}

impl InstanceAction {
    /// The unit being replaced, if any.
    pub fn old(&self) -> Option<&OldUnit> {
        match &self.change {
            Change::Create => None,
            Change::Replace { old, .. } => Some(old),
        }
    }
}

/// The changes of one service, rolled out with its strategy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceActions {
    /// Service.
    pub service: String,
    /// Strategy.
    #[serde(skip)]
    pub rollout: Rollout,
    /// Gate.
    #[serde(skip)]
    pub health: Option<Health>,
    /// Stop grace.
    pub stop_grace_ms: u64,
    /// Changed instances, by instance index.
    pub actions: Vec<InstanceAction>,
}

/// A one-shot job's instance to run, in its wave beside the services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobAction {
    /// The job.
    pub job: String,
    /// Its instance.
    pub instance: String,
    /// Why it runs: first run, inputs changed, last run failed, asked.
    pub reason: String,
    /// The fingerprint recorded with its run.
    pub fingerprint: String,
    /// Timeout, retries, backoff.
    #[serde(skip)]
    pub settings: phoenix_spec::Job,
    /// Grace of the stop after a timeout.
    pub stop_grace_ms: u64,
    /// The unit to start (revision 0: set when executed).
    #[serde(skip)]
    pub spec: UnitSpec,
}

/// A job that runs when the apply rolls back after `after` changed (`hook: {rollback: S}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollbackJob {
    /// The service or job whose change it undoes.
    pub after: String,
    /// The run, as in a wave.
    #[serde(flatten)]
    pub job: JobAction,
}

/// A running unit that takes new addresses in place (its service's `reload:`), instead of
/// being replaced, because only what it is bound to changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadAction {
    /// Service.
    pub service: String,
    /// Instance.
    pub instance: String,
    /// The running unit, which keeps its id and ports.
    pub unit_id: String,
    /// Why, for people.
    pub reason: String,
    /// Its spec with the new bindings (`@r0`: the revision applied) and its own revision.
    #[serde(skip)]
    pub spec: UnitSpec,
}

/// One wave: services that may roll out in parallel, and jobs that run beside them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaveActions {
    /// Wave number within the phase, from 1.
    pub wave: usize,
    /// Services with changes.
    pub services: Vec<ServiceActions>,
    /// Jobs to run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobAction>,
    /// Running units to reload with new addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reloads: Vec<ReloadAction>,
}

/// One phase: its waves run in order, and the next phase starts only when this one is healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhaseActions {
    /// Phase number.
    pub phase: u32,
    /// Waves with changes.
    pub waves: Vec<WaveActions>,
}

/// A unit to stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    /// Service.
    pub service: String,
    /// Instance.
    pub instance: String,
    /// Unit id.
    pub unit_id: String,
    /// Why.
    pub reason: String,
    /// Grace period.
    pub stop_grace_ms: u64,
}

/// Everything an apply will do, in order: `cleanup` (stray units of desired instances), then
/// `phases`, then `removals` (instances no longer desired).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Decision {
    /// Duplicates and leftovers of instances that are desired: stopped first.
    pub cleanup: Vec<Removal>,
    /// Creates and replacements, phase by phase, wave by wave.
    pub phases: Vec<PhaseActions>,
    /// Units of instances that are not desired (scaled down, disabled, no longer in the spec):
    /// stopped once the rollout succeeded.
    pub removals: Vec<Removal>,
    /// Desired instances that already run as desired.
    pub unchanged: Vec<String>,
    /// Jobs that run only if this apply rolls back (`hook: {rollback: S}`), in wave order,
    /// each after the instances are restored and only when its `S` was touched before the
    /// failure (see [`Decision::rollback_jobs_after`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rollback_jobs: Vec<RollbackJob>,
    /// For every desired instance whose templates use other services' addresses, the units
    /// it is bound to once this decision is carried out (`@r0`: started by it); what the
    /// revision document records.
    #[serde(skip)]
    pub bindings: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// Units of earlier revisions that stay, by unit id, with what they are bound to after
    /// this decision (reloaded ones with their new bindings): what the revision document
    /// records for the next apply to compare with (ADR 009).
    #[serde(skip)]
    pub rebound: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// Blue-green services whose old units must outlive the waves that re-bind their users:
    /// retired once every wave succeeded, so that whoever reaches them by address (a load
    /// balancer) is never left with none.
    #[serde(skip)]
    pub retire_last: BTreeSet<String>,
}

impl Decision {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.cleanup.is_empty() && self.phases.is_empty() && self.removals.is_empty()
    }

    /// Every instance action, in execution order.
    pub fn actions(&self) -> impl Iterator<Item = &InstanceAction> {
        self.phases
            .iter()
            .flat_map(|p| &p.waves)
            .flat_map(|w| &w.services)
            .flat_map(|s| &s.actions)
    }

    /// Every job run, in execution order.
    pub fn jobs(&self) -> impl Iterator<Item = &JobAction> {
        self.phases
            .iter()
            .flat_map(|p| &p.waves)
            .flat_map(|w| &w.jobs)
    }

    /// The rollback jobs to run once a failed apply's instances are restored, in order:
    /// those whose service was touched before the failure (`touched(S)`: an instance of `S`
    /// was started, stopped or restored, or job `S` made at least one attempt).
    pub fn rollback_jobs_after(&self, touched: &dyn Fn(&str) -> bool) -> Vec<&JobAction> {
        self.rollback_jobs
            .iter()
            .filter(|r| touched(&r.after))
            .map(|r| &r.job)
            .collect()
    }

    /// `(creates, replaces, removes)`.
    pub fn counts(&self) -> (usize, usize, usize) {
        let creates = self
            .actions()
            .filter(|a| matches!(a.change, Change::Create))
            .count();
        let replaces = self.actions().count() - creates;
        (creates, replaces, self.cleanup.len() + self.removals.len())
    }

    /// The diff for people: `+` create, `~` replace, `-` remove, one line each.
    pub fn diff_lines(&self) -> Vec<DiffLine> {
        let mut out = Vec::new();
        for r in &self.cleanup {
            out.push(DiffLine::remove(r));
        }
        for p in &self.phases {
            for w in &p.waves {
                for j in &w.jobs {
                    out.push(DiffLine {
                        sign: '>',
                        service: j.job.clone(),
                        instance: j.instance.clone(),
                        unit: None,
                        detail: format!(
                            "run job (phase {}, wave {}): {}",
                            p.phase, w.wave, j.reason
                        ),
                    });
                }
                for r in &w.reloads {
                    out.push(DiffLine {
                        sign: '~',
                        service: r.service.clone(),
                        instance: r.instance.clone(),
                        unit: Some(r.unit_id.clone()),
                        detail: format!(
                            "reload {}: {} (phase {}, wave {})",
                            r.unit_id, r.reason, p.phase, w.wave
                        ),
                    });
                }
                for s in &w.services {
                    for a in &s.actions {
                        out.push(match &a.change {
                            Change::Create => DiffLine {
                                sign: '+',
                                service: a.service.clone(),
                                instance: a.instance.clone(),
                                unit: None,
                                detail: format!(
                                    "create (phase {}, wave {}, {})",
                                    p.phase,
                                    w.wave,
                                    strategy_name(&s.rollout)
                                ),
                            },
                            Change::Replace { old, reason } => DiffLine {
                                sign: '~',
                                service: a.service.clone(),
                                instance: a.instance.clone(),
                                unit: Some(old.unit_id.clone()),
                                detail: format!(
                                    "replace {}: {reason} (phase {}, wave {}, {})",
                                    old.unit_id,
                                    p.phase,
                                    w.wave,
                                    strategy_name(&s.rollout)
                                ),
                            },
                        });
                    }
                }
            }
        }
        for r in &self.removals {
            out.push(DiffLine::remove(r));
        }
        for r in &self.rollback_jobs {
            out.push(DiffLine {
                sign: '>',
                service: r.job.job.clone(),
                instance: r.job.instance.clone(),
                unit: None,
                detail: format!(
                    "run job if the apply rolls back after `{}` changed",
                    r.after
                ),
            });
        }
        out
    }
}

/// One line of the diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffLine {
    /// `+`, `~`, `-`, or `>` for a job to run.
    pub sign: char,
    /// Service.
    pub service: String,
    /// Instance.
    pub instance: String,
    /// The unit replaced or removed.
    pub unit: Option<String>,
    /// What and why.
    pub detail: String,
}

impl DiffLine {
    fn remove(r: &Removal) -> Self {
        DiffLine {
            sign: '-',
            service: r.service.clone(),
            instance: r.instance.clone(),
            unit: Some(r.unit_id.clone()),
            detail: format!("remove {}: {}", r.unit_id, r.reason),
        }
    }
}

impl std::fmt::Display for DiffLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:<20} {}", self.sign, self.instance, self.detail)
    }
}

/// The name of a strategy as written in specs.
pub fn strategy_name(r: &Rollout) -> &'static str {
    match r {
        Rollout::Rolling { .. } => "rolling",
        Rollout::BlueGreen => "blue-green",
        Rollout::Canary { .. } => "canary",
    }
}

/// The numeric index of an instance id (`web-12` -> 12), for ordering.
pub fn instance_index(instance: &str) -> u64 {
    instance
        .rsplit_once('-')
        .and_then(|(_, i)| i.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Picks the unit that stands for an instance among several: up first, then running the
/// desired spec, then running at all, then the newest revision.
pub fn keeper<'a>(
    units: &[&'a ObservedUnit],
    desired_fp: Option<&str>,
) -> Option<&'a ObservedUnit> {
    units.iter().copied().max_by_key(|u| {
        (
            u.is_up(),
            desired_fp.is_some() && u.fingerprint().as_deref() == desired_fp,
            u.status.state.is_running(),
            u.status.revision,
        )
    })
}

/// Why an observed unit does not run an instance as desired; `None` if it does.
pub fn mismatch(unit: &ObservedUnit, desired: &UnitSpec) -> Option<String> {
    if !unit.status.state.is_running() {
        return Some(match &unit.status.detail {
            Some(d) => format!("{} ({d})", unit.status.state),
            None => unit.status.state.to_string(),
        });
    }
    let Some(old) = &unit.spec else {
        return Some(format!(
            "revision r{} is unknown to the state store",
            unit.status.revision
        ));
    };
    if fingerprint(old) != fingerprint(desired) {
        return Some(spec_changes(old, desired));
    }
    if unit.healthy == Some(false) {
        return Some(format!(
            "unhealthy: {}",
            unit.health_detail.as_deref().unwrap_or("probe failed")
        ));
    }
    None
}

/// Which fields differ between two unit specs, for the diff.
pub fn spec_changes(old: &UnitSpec, new: &UnitSpec) -> String {
    let mut changed = Vec::new();
    if old.command != new.command {
        changed.push("command");
    }
    if old.env != new.env {
        changed.push("env");
    }
    if old.ports != new.ports {
        changed.push("ports");
    }
    if old.health != new.health {
        changed.push("health");
    }
    if old.restart != new.restart {
        changed.push("restart");
    }
    if old.stop_grace_ms != new.stop_grace_ms {
        changed.push("stop_grace");
    }
    if old.backup != new.backup {
        changed.push("backup");
    }
    if old.user != new.user {
        changed.push("user");
    }
    if old.site != new.site || old.host != new.host {
        changed.push("placement");
    }
    if changed.is_empty() {
        "spec changed".into()
    } else {
        format!("{} changed", changed.join(", "))
    }
}

/// Decides what an apply of `desired` does, given what runs (`observed`, every unit of the
/// fleet the provider lists) and which services may be touched.
///
/// # Guarantees
/// Pure. After the decision is carried out successfully, each desired instance in scope has
/// exactly one unit, running its desired spec and healthy, and no unit of an undesired
/// instance in scope is left; units out of scope are untouched.
pub fn decide(desired: &Desired, observed: &[ObservedUnit], scope: &Scope) -> Decision {
    let mut by_instance: BTreeMap<&str, Vec<&ObservedUnit>> = BTreeMap::new();
    // A `for_each` job's unit acts in another service's instance (`pg-replica-0`): one left
    // over (a crash mid-run) is not that instance's unit, and is removed like any job unit.
    let mut strays: Vec<&ObservedUnit> = Vec::new();
    for u in observed {
        let i = u.status.instance.as_str();
        if desired
            .units
            .get(i)
            .is_some_and(|d| d.service != u.status.service)
        {
            strays.push(u);
        } else {
            by_instance.entry(i).or_default().push(u);
        }
    }
    let grace = |service: &str| {
        desired
            .services
            .get(service)
            .map_or(10_000, |s| s.stop_grace_ms)
    };
    let mut decision = Decision::default();
    let mut actions: BTreeMap<&str, Vec<InstanceAction>> = BTreeMap::new();
    // The unit that stands for each desired instance now, in scope or not: what a dependent
    // stays bound to when that instance does not change.
    let keepers: BTreeMap<&str, &ObservedUnit> = desired
        .units
        .iter()
        .filter_map(|(i, u)| {
            let units = by_instance.get(i.as_str())?;
            Some((i.as_str(), keeper(units, Some(&u.fingerprint))?))
        })
        .collect();
    let mut kept: BTreeMap<&str, &ObservedUnit> = BTreeMap::new();

    for (instance, unit) in &desired.units {
        if !scope.contains(&unit.service) {
            continue;
        }
        let units = by_instance.remove(instance.as_str()).unwrap_or_default();
        let keep = keeper(&units, Some(&unit.fingerprint));
        for other in &units {
            if keep.is_some_and(|k| k.status.unit_id == other.status.unit_id) {
                continue;
            }
            let reason = match keep {
                Some(k) => format!("duplicate of {} ({})", k.status.unit_id, other.status.state),
                None => other.status.state.to_string(),
            };
            decision.cleanup.push(Removal {
                service: unit.service.clone(),
                instance: instance.clone(),
                unit_id: other.status.unit_id.clone(),
                reason,
                stop_grace_ms: grace(&unit.service),
            });
        }
        let change = match keep {
            None => Change::Create,
            Some(k) => match mismatch(k, &unit.spec) {
                None => {
                    kept.insert(instance.as_str(), k);
                    continue;
                }
                Some(reason) => Change::Replace {
                    old: Box::new(OldUnit {
                        unit_id: k.status.unit_id.clone(),
                        revision: k.status.revision,
                        running: k.status.state.is_running(),
                        spec: k.spec.clone(),
                    }),
                    reason,
                },
            },
        };
        actions
            .entry(&unit.service)
            .or_default()
            .push(InstanceAction {
                service: unit.service.clone(),
                instance: instance.clone(),
                change,
                spec: unit.spec.clone(),
            });
    }

    let mut reloads = bind_addresses(desired, &keepers, kept, &mut actions, &mut decision);

    // Whatever is left belongs to no desired instance in scope.
    let leftovers = by_instance.into_iter().chain(
        strays
            .into_iter()
            .map(|u| (u.status.instance.as_str(), vec![u])),
    );
    for (instance, units) in leftovers {
        for u in units {
            let service = u.status.service.as_str();
            let reason = match desired.services.get(service) {
                _ if !scope.contains(service) => continue,
                _ if desired.destroy => "fleet destroyed".to_string(),
                None if !scope.is_all() => continue,
                None => "service not in the spec".to_string(),
                Some(info) if !info.enabled => "service disabled".to_string(),
                Some(_)
                    if desired
                        .units
                        .get(instance)
                        .is_some_and(|d| d.service == service) =>
                {
                    continue;
                }
                Some(info) if info.job.is_some() => "job unit left over".to_string(),
                Some(_) => "instance not desired (replicas)".to_string(),
            };
            decision.removals.push(Removal {
                service: service.into(),
                instance: instance.into(),
                unit_id: u.status.unit_id.clone(),
                reason,
                stop_grace_ms: grace(service),
            });
        }
    }
    // Stop in reverse dependency order: later phases and waves first.
    let order = service_order(desired);
    decision.removals.sort_by_key(|r| {
        (
            std::cmp::Reverse(order.get(r.service.as_str()).copied()),
            r.unit_id.clone(),
        )
    });

    let changed_instances: BTreeSet<String> = actions
        .values()
        .flatten()
        .map(|a| a.instance.clone())
        .collect();
    let (keepers, changed_instances) = (&keepers, &changed_instances);
    let job_reasons = job_reasons(desired, scope, &actions);
    decision.rollback_jobs = rollback_jobs(desired, scope, &actions, &job_reasons)
        .into_iter()
        .filter_map(|(after, u, reason)| {
            Some(RollbackJob {
                after,
                job: job_action(desired, u, reason, keepers, changed_instances)?,
            })
        })
        .collect();
    for (phase, waves) in &desired.phases {
        let mut wave_actions = Vec::new();
        for (i, wave) in waves.iter().enumerate() {
            let services: Vec<ServiceActions> = wave
                .iter()
                .filter_map(|s| {
                    let mut acts = actions.remove(s.as_str())?;
                    acts.sort_by_key(|a| instance_index(&a.instance));
                    let info = &desired.services[s];
                    Some(ServiceActions {
                        service: s.clone(),
                        rollout: info.rollout.clone(),
                        health: info.health.clone(),
                        stop_grace_ms: info.stop_grace_ms,
                        actions: acts,
                    })
                })
                .collect();
            let jobs: Vec<JobAction> = desired
                .jobs
                .iter()
                .filter(|(_, u)| wave.contains(&u.service))
                .filter_map(|(instance, u)| {
                    let reason = job_reasons.get(instance)?.clone();
                    job_action(desired, u, reason, keepers, changed_instances)
                })
                .collect();
            for (instance, u) in &desired.jobs {
                if wave.contains(&u.service)
                    && scope.contains(&u.service)
                    && !jobs.iter().any(|j| j.instance == *instance)
                {
                    decision.unchanged.push(instance.clone());
                }
            }
            let (here, rest): (Vec<ReloadAction>, Vec<ReloadAction>) =
                reloads.into_iter().partition(|r| wave.contains(&r.service));
            reloads = rest;
            if !services.is_empty() || !jobs.is_empty() || !here.is_empty() {
                wave_actions.push(WaveActions {
                    wave: i + 1,
                    services,
                    jobs,
                    reloads: here,
                });
            }
        }
        if !wave_actions.is_empty() {
            decision.phases.push(PhaseActions {
                phase: *phase,
                waves: wave_actions,
            });
        }
    }
    debug_assert!(actions.is_empty(), "every enabled service is in a wave");
    decision
}

/// The units `spec` will be bound to (see [`crate::address`]): for each service whose
/// addresses it uses, its desired instances by number (only the first for `address:`), each
/// as the unit this decision starts (`@r0`) when `changed` names it, else the unit that runs
/// it now. Instances with neither are left out.
fn predicted_bindings(
    desired: &Desired,
    spec: &UnitSpec,
    keepers: &BTreeMap<&str, &ObservedUnit>,
    changed: &BTreeSet<String>,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (service, all) in crate::address::uses(spec) {
        let mut instances: Vec<&str> = desired
            .units
            .values()
            .filter(|u| u.service == service)
            .map(|u| u.instance.as_str())
            .collect();
        instances.sort_by_key(|i| instance_index(i));
        let ids: Vec<String> = instances
            .into_iter()
            .filter_map(|i| {
                if changed.contains(i) {
                    Some(phoenix_provider_api::unit_id(i, 0))
                } else {
                    keepers.get(i).map(|k| k.status.unit_id.clone())
                }
            })
            .take(if all { usize::MAX } else { 1 })
            .collect();
        out.insert(service, ids);
    }
    out
}

/// Binds every desired unit that uses other services' addresses to the units it will reach
/// (the decision's `bindings` and the actions' specs), and turns an unchanged instance into a
/// replacement when what it is bound to changes: a unit of a service it names is replaced or
/// created by this decision. Repeated until nothing more changes, since a replaced unit has
/// new addresses for whoever uses its own (bounded by the number of instances).
fn bind_addresses<'a>(
    desired: &'a Desired,
    keepers: &BTreeMap<&str, &ObservedUnit>,
    mut kept: BTreeMap<&'a str, &ObservedUnit>,
    actions: &mut BTreeMap<&'a str, Vec<InstanceAction>>,
    decision: &mut Decision,
) -> Vec<ReloadAction> {
    let mut changed: BTreeSet<String> = actions
        .values()
        .flatten()
        .map(|a| a.instance.clone())
        .collect();
    let mut reloads: Vec<ReloadAction> = Vec::new();
    for _ in 0..=desired.units.len() {
        let mut moved = Vec::new();
        for (&instance, k) in &kept {
            let unit = &desired.units[instance];
            let want = predicted_bindings(desired, &unit.spec, keepers, &changed);
            let have = k
                .spec
                .as_ref()
                .map(|s| crate::address::normalized(&s.bindings, k.status.revision))
                .unwrap_or_default();
            if want == have {
                continue;
            }
            for (s, ids) in &want {
                let blue_green = desired
                    .services
                    .get(s)
                    .is_some_and(|i| i.rollout == Rollout::BlueGreen);
                if have.get(s) != Some(ids) && blue_green {
                    decision.retire_last.insert(s.clone());
                }
            }
            let what: Vec<String> = want
                .iter()
                .filter(|(s, ids)| have.get(*s) != Some(*ids))
                .map(|(s, ids)| {
                    let new: Vec<String> = ids
                        .iter()
                        .map(|id| match phoenix_provider_api::parse_unit_id(id) {
                            Some((i, 0)) => format!("{i} (replaced now)"),
                            _ => id.clone(),
                        })
                        .collect();
                    format!("`{s}` now at {}", new.join(", "))
                })
                .collect();
            moved.push((
                instance,
                format!("address changed: {}", what.join("; ")),
                want,
            ));
        }
        if moved.is_empty() {
            break;
        }
        for (instance, reason, want) in moved {
            let k = kept.remove(instance).expect("listed as kept");
            let unit = &desired.units[instance];
            if !unit.spec.reload.is_empty() && k.status.state.is_running() {
                // Reloaded in place: same unit, same ports, so its own users stay bound.
                decision
                    .rebound
                    .insert(k.status.unit_id.clone(), want.clone());
                reloads.push(ReloadAction {
                    service: unit.service.clone(),
                    instance: instance.to_string(),
                    unit_id: k.status.unit_id.clone(),
                    reason,
                    spec: UnitSpec {
                        bindings: want,
                        revision: k.status.revision,
                        ..unit.spec.clone()
                    },
                });
                continue;
            }
            changed.insert(instance.to_string());
            actions
                .entry(unit.service.as_str())
                .or_default()
                .push(InstanceAction {
                    service: unit.service.clone(),
                    instance: instance.to_string(),
                    change: Change::Replace {
                        old: Box::new(OldUnit {
                            unit_id: k.status.unit_id.clone(),
                            revision: k.status.revision,
                            running: k.status.state.is_running(),
                            spec: k.spec.clone(),
                        }),
                        reason,
                    },
                    spec: unit.spec.clone(),
                });
        }
    }
    decision
        .unchanged
        .extend(kept.keys().map(|i| i.to_string()));
    for k in kept.values() {
        if let Some(b) = k
            .spec
            .as_ref()
            .map(|s| crate::address::normalized(&s.bindings, k.status.revision))
            .filter(|b| !b.is_empty())
        {
            decision.rebound.insert(k.status.unit_id.clone(), b);
        }
    }
    decision
        .unchanged
        .extend(reloads.iter().map(|r| r.instance.clone()));
    for acts in actions.values_mut() {
        for a in acts.iter_mut() {
            a.spec.bindings = predicted_bindings(desired, &a.spec, keepers, &changed);
        }
    }
    for (instance, unit) in &desired.units {
        let b = if changed.contains(instance) {
            predicted_bindings(desired, &unit.spec, keepers, &changed)
        } else {
            match kept.get(instance.as_str()) {
                Some(k) => k
                    .spec
                    .as_ref()
                    .map(|s| crate::address::normalized(&s.bindings, k.status.revision))
                    .unwrap_or_default(),
                None => continue,
            }
        };
        if !b.is_empty() {
            decision.bindings.insert(instance.clone(), b);
        }
    }
    reloads
}

/// The action of one job instance run for `reason`, bound to the units it will reach; `None`
/// for a service that is not a job.
fn job_action(
    desired: &Desired,
    u: &crate::desired::DesiredUnit,
    reason: String,
    keepers: &BTreeMap<&str, &ObservedUnit>,
    changed_instances: &BTreeSet<String>,
) -> Option<JobAction> {
    let info = desired.services.get(&u.service)?;
    Some(JobAction {
        job: u.service.clone(),
        instance: u.instance.clone(),
        reason,
        fingerprint: u.fingerprint.clone(),
        settings: info.job.clone()?,
        stop_grace_ms: info.stop_grace_ms,
        spec: UnitSpec {
            bindings: predicted_bindings(desired, &u.spec, keepers, changed_instances),
            ..u.spec.clone()
        },
    })
}

/// The hook of a job service, if it has one.
fn hook_of<'a>(desired: &'a Desired, service: &str) -> Option<&'a phoenix_spec::Hook> {
    desired
        .services
        .get(service)
        .and_then(|i| i.job.as_ref())
        .and_then(|j| j.hook.as_ref())
}

/// Why each job instance in scope runs in this apply's waves, by instance key. A job runs for
/// its own reasons ([`job_reason`]); a `for_each` job's run also when the instance it acts in
/// is created or replaced (so a new or failed replica is initialised before it starts); and a
/// `before`/`after` hook also whenever what it hooks changes (its instances are created or
/// replaced) or runs in this apply, so that a backup before a migration is taken before
/// every run of the migration, not only when its inputs change. Rollback jobs run here only
/// when asked (`phoenix run-job`).
fn job_reasons(
    desired: &Desired,
    scope: &Scope,
    actions: &BTreeMap<&str, Vec<InstanceAction>>,
) -> BTreeMap<String, String> {
    let in_scope = || {
        desired
            .jobs
            .iter()
            .filter(|(_, u)| scope.contains(&u.service))
    };
    let changes: BTreeMap<&str, &str> = actions
        .values()
        .flatten()
        .map(|a| {
            let what = match a.change {
                Change::Create => "created",
                Change::Replace { .. } => "replaced",
            };
            (a.instance.as_str(), what)
        })
        .collect();
    let mut out = BTreeMap::new();
    for (instance, u) in in_scope() {
        let for_each = desired
            .services
            .get(&u.service)
            .and_then(|i| i.job.as_ref())
            .is_some_and(|j| j.for_each.is_some());
        let reason = job_reason(desired, u).or_else(|| {
            let what = changes.get(u.spec.instance.as_str()).filter(|_| for_each)?;
            Some(format!("{} is {what} in this apply", u.spec.instance))
        });
        if let Some(r) = reason {
            out.insert(instance.clone(), r);
        }
    }
    // Hooks of hooks: each round adds at least one run, so at most one round per job.
    for _ in 0..=desired.jobs.len() {
        let running: BTreeSet<&str> = out
            .keys()
            .filter_map(|i| desired.jobs.get(i))
            .map(|u| u.service.as_str())
            .collect();
        let more: Vec<(String, String)> = in_scope()
            .filter(|(i, _)| !out.contains_key(*i))
            .filter_map(|(i, u)| {
                let hook = hook_of(desired, &u.service)?;
                if hook.when == phoenix_spec::HookWhen::Rollback {
                    return None;
                }
                let why = if actions.contains_key(hook.service.as_str()) {
                    format!("`{}` changes in this apply", hook.service)
                } else if running.contains(hook.service.as_str()) {
                    format!("`{}` runs in this apply", hook.service)
                } else {
                    return None;
                };
                Some((i.clone(), why))
            })
            .collect();
        if more.is_empty() {
            break;
        }
        out.extend(more);
    }
    out
}

/// The rollback jobs (`hook: {rollback: S}`) this apply carries, in wave order: those whose
/// `S` changes (instances created or replaced) or runs (a job) in this apply, as `(S, unit,
/// reason)`. The executor runs each only if the apply rolls back after `S` was touched.
fn rollback_jobs<'a>(
    desired: &'a Desired,
    scope: &Scope,
    actions: &BTreeMap<&str, Vec<InstanceAction>>,
    job_reasons: &BTreeMap<String, String>,
) -> Vec<(String, &'a crate::desired::DesiredUnit, String)> {
    let running: BTreeSet<&str> = job_reasons
        .keys()
        .filter_map(|i| desired.jobs.get(i))
        .map(|u| u.service.as_str())
        .collect();
    let order = service_order(desired);
    let mut out: Vec<(String, &crate::desired::DesiredUnit, String)> = desired
        .jobs
        .iter()
        .filter(|(i, u)| scope.contains(&u.service) && !job_reasons.contains_key(*i))
        .filter_map(|(_, u)| {
            let hook = hook_of(desired, &u.service)?;
            if hook.when != phoenix_spec::HookWhen::Rollback {
                return None;
            }
            let s = hook.service.as_str();
            if !actions.contains_key(s) && !running.contains(s) {
                return None;
            }
            Some((
                s.to_string(),
                u,
                format!("the apply rolls back after `{s}` changed"),
            ))
        })
        .collect();
    out.sort_by_key(|(_, u, _)| {
        (
            order.get(u.service.as_str()).copied(),
            instance_index(&u.instance),
            u.instance.clone(),
        )
    });
    out
}

/// Why a job instance runs now, or `None` when its last run succeeded with the same
/// fingerprint (and it was not asked for). A rollback job (`hook: {rollback: S}`) never runs
/// for these reasons, only when asked or when a rollback follows a change of `S`.
pub fn job_reason(desired: &Desired, unit: &crate::desired::DesiredUnit) -> Option<String> {
    if desired.force_jobs.contains(&unit.service) {
        return Some("asked for (phoenix run-job)".into());
    }
    if hook_of(desired, &unit.service).is_some_and(|h| h.when == phoenix_spec::HookWhen::Rollback) {
        return None;
    }
    match desired.job_runs.get(&unit.instance) {
        None => Some("never run".into()),
        Some(last) if !crate::desired::same_job_inputs(&last.fingerprint, &unit.fingerprint) => {
            Some(format!(
                "inputs changed since its run in r{}",
                last.revision
            ))
        }
        Some(last) if !last.succeeded => Some(format!(
            "its run in r{} {}",
            last.revision,
            match last.outcome.as_str() {
                "timed-out" => "timed out",
                _ => "failed",
            }
        )),
        Some(_) => None,
    }
}

fn service_order(desired: &Desired) -> BTreeMap<&str, (u32, usize)> {
    let mut order = BTreeMap::new();
    for (phase, waves) in &desired.phases {
        for (i, wave) in waves.iter().enumerate() {
            for s in wave {
                order.insert(s.as_str(), (*phase, i));
            }
        }
    }
    order
}

/// How recovery resolves one open intent left by an apply that died.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolution {
    /// The start happened and the unit runs: keep it (the plan decides whether it stays) and
    /// close the intent `Done`.
    Adopt,
    /// The start happened but the unit is not running: stop it, close `Failed`.
    StopAndFail,
    /// The action did not happen (no such unit): close `Failed`.
    Fail,
    /// A stop may not have finished: stop again (idempotent), delete the record, close `Done`.
    StopAgain,
    /// A snapshot may be partial: close `Failed` (the next change takes a new one).
    Discard,
    /// A restore may be partial: restore again from the same snapshot, close `Done`.
    RestoreAgain,
}

/// Resolves an open intent against the provider's view of its unit.
pub fn resolve_intent(intent: &Intent, unit: Option<&UnitStatus>) -> Resolution {
    match intent.op {
        IntentOp::Start => match unit {
            Some(u) if u.state == UnitState::Running => Resolution::Adopt,
            Some(_) => Resolution::StopAndFail,
            None => Resolution::Fail,
        },
        IntentOp::Stop => Resolution::StopAgain,
        IntentOp::Snapshot => Resolution::Discard,
        IntentOp::Restore => Resolution::RestoreAgain,
    }
}

/// Services named in `decision` (for progress display).
pub fn services_in(decision: &Decision) -> BTreeSet<String> {
    decision.actions().map(|a| a.service.clone()).collect()
}
