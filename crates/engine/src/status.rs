//! Drift: desired against observed, per instance (`phoenix status`).

use crate::decide::{ObservedUnit, keeper, mismatch};
use crate::desired::Desired;
use phoenix_provider_api::UnitState;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The state of one desired instance, as `status -o json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceStatus {
    /// Service.
    pub service: String,
    /// Instance.
    pub instance: String,
    /// `running`, `stopped`, `failed`, `missing`, or `unknown` (recorded on a site or endpoint
    /// that cannot be reached from here).
    pub state: String,
    /// Whether it runs and its health check passes.
    pub healthy: bool,
    /// The unit standing for the instance, if any.
    pub unit: Option<String>,
    /// Its revision.
    pub revision: Option<u64>,
    /// Its pid.
    pub pid: Option<u32>,
    /// Its ports.
    pub ports: BTreeMap<String, u16>,
    /// Site it is placed on (desired).
    pub site: String,
    /// Restarts by the supervisor.
    pub restarts: u32,
    /// What differs from the desired state: `missing`, `not-running`, `unhealthy`,
    /// `wrong-revision`, `duplicate`; empty when in sync.
    pub drift: Vec<String>,
    /// Details (probe result, exit status, what changed).
    pub detail: Option<String>,
}

/// A unit that runs but is not desired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtraUnit {
    /// Service.
    pub service: String,
    /// Instance.
    pub instance: String,
    /// Unit.
    pub unit: String,
    /// Process state.
    pub state: String,
    /// Pid.
    pub pid: Option<u32>,
    /// Why it is extra.
    pub reason: String,
}

/// The whole drift report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// Fleet.
    pub fleet: String,
    /// The latest applied revision, if any.
    pub revision: Option<u64>,
    /// Every desired instance.
    pub instances: Vec<InstanceStatus>,
    /// Units that run but are not desired.
    pub extra: Vec<ExtraUnit>,
    /// Whether observed equals desired (no drift, nothing extra, every job's last run
    /// succeeded with its current inputs).
    pub in_sync: bool,
    /// Every job of the spec (enabled), with its latest run ([`add_jobs`]).
    pub jobs: Vec<JobStatus>,
}

/// The state word of a unit state: `running`, `stopped` or `failed`.
pub fn state_word(s: UnitState) -> &'static str {
    match s {
        UnitState::Running => "running",
        UnitState::Stopped => "stopped",
        UnitState::Failed | UnitState::Exited(_) => "failed",
    }
}

/// Marks the instances whose units are recorded on endpoints that could not be observed (see
/// [`crate::Engine::units_elsewhere`]) as `unknown` instead of `missing`: their state is not
/// known from here, and they must not be taken for gone. They stay drift.
pub fn mark_unobservable(report: &mut StatusReport, elsewhere: &[(String, Vec<String>)]) {
    for (endpoint, units) in elsewhere {
        for unit in units {
            let instance = unit.split_once('@').map_or(unit.as_str(), |(i, _)| i);
            if let Some(i) = report
                .instances
                .iter_mut()
                .find(|i| i.instance == instance && i.state == "missing")
            {
                i.state = "unknown".into();
                i.unit = Some(unit.clone());
                i.drift = vec!["unreachable".into()];
                i.detail = Some(format!(
                    "recorded on {endpoint}, which this phoenix cannot observe"
                ));
            }
        }
    }
}

/// Compares `desired` with `observed` (probed). Pure.
pub fn status(desired: &Desired, observed: &[ObservedUnit], revision: Option<u64>) -> StatusReport {
    let mut by_instance: BTreeMap<&str, Vec<&ObservedUnit>> = BTreeMap::new();
    for u in observed {
        by_instance.entry(&u.status.instance).or_default().push(u);
    }
    let mut instances = Vec::new();
    let mut extra = Vec::new();
    let mut desired_ids: Vec<&String> = desired.units.keys().collect();
    desired_ids.sort_by_key(|i| {
        (
            desired.units[*i].service.clone(),
            crate::decide::instance_index(i),
        )
    });
    let order: BTreeMap<&str, usize> = desired
        .phases
        .iter()
        .flat_map(|(_, w)| w.iter().flatten())
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    desired_ids.sort_by_key(|i| {
        let u = &desired.units[*i];
        (
            order.get(u.service.as_str()).copied().unwrap_or(usize::MAX),
            crate::decide::instance_index(i),
        )
    });
    let mut seen = BTreeSet::new();
    for id in desired_ids {
        let d = &desired.units[id];
        let units = by_instance.remove(id.as_str()).unwrap_or_default();
        let keep = keeper(&units, Some(&d.fingerprint));
        for u in &units {
            if keep.is_some_and(|k| k.status.unit_id == u.status.unit_id) {
                continue;
            }
            extra.push(ExtraUnit {
                service: u.status.service.clone(),
                instance: u.status.instance.clone(),
                unit: u.status.unit_id.clone(),
                state: state_word(u.status.state).into(),
                pid: u.status.pid,
                reason: "duplicate".into(),
            });
        }
        seen.insert(id.clone());
        let mut drift = Vec::new();
        let st = match keep {
            None => {
                drift.push("missing".to_string());
                InstanceStatus {
                    service: d.service.clone(),
                    instance: id.clone(),
                    state: "missing".into(),
                    healthy: false,
                    unit: None,
                    revision: None,
                    pid: None,
                    ports: BTreeMap::new(),
                    site: d.spec.site.clone(),
                    restarts: 0,
                    drift,
                    detail: None,
                }
            }
            Some(k) => {
                let running = k.status.state.is_running();
                let healthy = k.is_up();
                let why = mismatch(k, &d.spec);
                if !running {
                    drift.push("not-running".into());
                } else if !healthy {
                    drift.push("unhealthy".into());
                }
                if running && k.fingerprint().as_deref() != Some(d.fingerprint.as_str()) {
                    drift.push("wrong-revision".into());
                }
                if units.len() > 1 {
                    drift.push("duplicate".into());
                }
                let detail = match (&k.health_detail, &k.status.detail, why) {
                    (_, _, Some(w)) => Some(w),
                    (Some(h), _, None) => Some(h.clone()),
                    (None, Some(d), None) => Some(d.clone()),
                    _ => None,
                };
                InstanceStatus {
                    service: d.service.clone(),
                    instance: id.clone(),
                    state: state_word(k.status.state).into(),
                    healthy,
                    unit: Some(k.status.unit_id.clone()),
                    revision: Some(k.status.revision),
                    pid: k.status.pid,
                    ports: k.status.ports.clone(),
                    site: d.spec.site.clone(),
                    restarts: k.status.restarts,
                    drift,
                    detail,
                }
            }
        };
        instances.push(st);
    }
    for (_, units) in by_instance {
        for u in units {
            let reason = match desired.services.get(&u.status.service) {
                None => "service not in the spec",
                Some(s) if !s.enabled => "service disabled",
                Some(s) if s.job.is_some() => "job unit (a run in progress, or left over)",
                Some(_) => "instance not desired",
            };
            extra.push(ExtraUnit {
                service: u.status.service.clone(),
                instance: u.status.instance.clone(),
                unit: u.status.unit_id.clone(),
                state: state_word(u.status.state).into(),
                pid: u.status.pid,
                reason: reason.into(),
            });
        }
    }
    let in_sync = extra.is_empty() && instances.iter().all(|i| i.drift.is_empty());
    StatusReport {
        fleet: desired.fleet.clone(),
        revision,
        instances,
        extra,
        in_sync,
        jobs: Vec::new(),
    }
}

/// A one-shot job's latest run, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobStatus {
    /// The job.
    pub job: String,
    /// Its instance.
    pub instance: String,
    /// `succeeded`, `failed`, `timed-out`, or `never-run`.
    pub state: String,
    /// The revision of its latest run.
    pub revision: Option<u64>,
    /// Exit code of that run's last attempt.
    pub exit_code: Option<i64>,
    /// Attempts that run made.
    pub attempts: u32,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
    /// How it ended, for people.
    pub detail: Option<String>,
    /// When it was recorded (RFC 3339).
    pub finished_at: Option<String>,
    /// Whether its latest run ran the job's current inputs (its fingerprint).
    pub current: bool,
    /// Why the next apply runs it, if it does.
    pub next_apply: Option<String>,
    /// The tail of that run's output.
    pub output: String,
}

/// Adds every enabled job of `desired` with its latest run among `runs` (the store's job runs
/// of the fleet) to `report`; a job that the next apply would run is drift.
pub fn add_jobs(
    report: &mut StatusReport,
    desired: &Desired,
    runs: &[phoenix_state::JobRunRecord],
) {
    let desired = desired.clone().with_job_runs(runs);
    for (instance, unit) in &desired.jobs {
        let latest = runs
            .iter()
            .filter(|r| r.run.instance == *instance)
            .max_by_key(|r| r.run.revision.0);
        let next_apply = crate::decide::job_reason(&desired, unit);
        let st = match latest {
            Some(r) => JobStatus {
                job: unit.service.clone(),
                instance: instance.clone(),
                state: r.run.outcome.as_str().into(),
                revision: Some(r.run.revision.0),
                exit_code: r.run.exit_code,
                attempts: r.run.attempts,
                duration_ms: r.run.duration_ms,
                detail: Some(r.run.detail.clone()),
                finished_at: Some(r.recorded_at.to_string()),
                current: crate::desired::same_job_inputs(&r.run.fingerprint, &unit.fingerprint),
                next_apply,
                output: r.run.output.clone(),
            },
            None => JobStatus {
                job: unit.service.clone(),
                instance: instance.clone(),
                state: "never-run".into(),
                revision: None,
                exit_code: None,
                attempts: 0,
                duration_ms: 0,
                detail: None,
                finished_at: None,
                current: false,
                next_apply,
                output: String::new(),
            },
        };
        if st.next_apply.is_some() {
            report.in_sync = false;
        }
        report.jobs.push(st);
    }
}
