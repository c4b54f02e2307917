//! `Engine::apply` and what surrounds a run: the lock, recovery of a dead apply's intents,
//! observation, the decision, the revision and its outcome. The run itself — waves, strategies,
//! health gates, intents, audit records and rollback — is the state machine in
//! [`crate::rollout`], carried out by [`crate::driver`].

use crate::clock::{Clock, ClockRef};
use crate::decide::{Decision, ObservedUnit, Resolution, decide, resolve_intent};
use crate::desired::{Desired, RevisionDoc, Scope, sha256_hex};
use crate::driver::Driver;
use crate::error::EngineError;
use crate::events::{Event, EventSink};
use crate::intent::IntentDetail;
use crate::lock::{Liveness, LockGuard};
use crate::rollout::{self, Rollout};
use phoenix_audit::{AuditEntry, AuditOutcome, Recorder};
use phoenix_provider_api::{ProbeOutcome, Provider, UnitSpec, UnitStatus};
use phoenix_state::{
    DesiredState, InstanceState, IntentOutcome, NewRevision, ObservedState, RevisionNumber,
    RevisionOutcome, StateStore, UnitId, Write,
};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What the engine works with: a provider, a state store and an audit recorder.
#[derive(Clone)]
pub struct Engine {
    /// Where units run.
    pub provider: Arc<dyn Provider>,
    /// Revisions, instance records, intents, the lock.
    pub store: Arc<dyn StateStore>,
    /// The operation log.
    pub recorder: Arc<dyn Recorder>,
    /// Who acts, `user@host`.
    pub actor: String,
}

/// How an apply runs.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Instance steps (start + gate, stop) in flight at once.
    pub parallelism: usize,
    /// Roll the changed instances back when a gate fails.
    pub rollback: bool,
    /// Services that may be touched.
    pub scope: Scope,
    /// Set to stop cleanly (Ctrl-C): no new step starts, the steps in flight finish (a health
    /// gate runs until it passes or times out, so no instance is left started and ungated),
    /// then the state is recorded and the lock released.
    pub cancel: Arc<AtomicBool>,
    /// Lease of the deploy lock (renewed every third).
    pub lock_ttl: Duration,
    /// `apply`, `rollback`, `destroy` (shown to whoever finds the lock held).
    pub operation: String,
    /// Endpoints known to be unreachable and left alone on purpose (`--allow-unreachable`):
    /// their units are not taken for another operator's, and their records are kept.
    pub unreachable: BTreeSet<String>,
    /// Whether a lease holder of this host is alive, so that the lease of an apply that was
    /// killed is taken over at once (by default every holder counts as alive).
    pub holder_liveness: Liveness,
    /// The clock the rollout's timers run on (gates, canary windows, job timeouts and
    /// backoffs): the real one by default, a [`crate::VirtualClock`] in tests.
    pub clock: ClockRef,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            parallelism: 16,
            rollback: true,
            scope: Scope::all(),
            cancel: Arc::new(AtomicBool::new(false)),
            lock_ttl: Duration::from_secs(15),
            operation: "apply".into(),
            unreachable: BTreeSet::new(),
            holder_liveness: Liveness::default(),
            clock: ClockRef::default(),
        }
    }
}

/// How an apply ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum ApplyOutcome {
    /// Everything already ran as desired; no revision was created.
    NoChanges,
    /// The caller declined the diff; nothing was done.
    Declined,
    /// Every change passed its gate.
    Applied,
    /// A gate failed and the changed instances were restored.
    RolledBack {
        /// The revision restored, if there was an applied one.
        to: Option<u64>,
    },
    /// A gate failed and nothing was restored (`--no-rollback`), or the rollback failed.
    Failed {
        /// Why.
        reason: String,
    },
    /// Stopped by the caller (Ctrl-C): no new steps, state recorded.
    Cancelled,
}

impl ApplyOutcome {
    /// A short name: `applied`, `rolled-back`, ...
    pub fn name(&self) -> &'static str {
        match self {
            ApplyOutcome::NoChanges => "no-changes",
            ApplyOutcome::Declined => "declined",
            ApplyOutcome::Applied => "applied",
            ApplyOutcome::RolledBack { .. } => "rolled-back",
            ApplyOutcome::Failed { .. } => "failed",
            ApplyOutcome::Cancelled => "cancelled",
        }
    }

    /// Whether the desired state was reached.
    pub fn is_success(&self) -> bool {
        matches!(self, ApplyOutcome::NoChanges | ApplyOutcome::Applied)
    }
}

/// Which instance failed and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// Instance.
    pub instance: String,
    /// Unit.
    pub unit: String,
    /// Why (with the probe's detail).
    pub reason: String,
}

/// What an apply did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    /// Fleet.
    pub fleet: String,
    /// The revision created, if any.
    pub revision: Option<u64>,
    /// How it ended.
    pub outcome: ApplyOutcome,
    /// The first failure, if any.
    pub failure: Option<Failure>,
    /// What the rollback did, one line per instance.
    pub restored: Vec<String>,
    /// What was decided.
    pub decision: Decision,
    /// How intents of a dead apply were resolved.
    pub recovered: Vec<String>,
    /// Whether the lock was taken over from a dead apply.
    pub took_over: bool,
}

/// A counting semaphore bounding the steps in flight.
struct Semaphore {
    free: Mutex<usize>,
    cv: Condvar,
}

struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    fn new(n: usize) -> Self {
        Semaphore {
            free: Mutex::new(n.max(1)),
            cv: Condvar::new(),
        }
    }
    fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.cv.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

impl Engine {
    // The audit context (fleet, revision, plan hash) differs between recovery and a run; a
    // struct for it would only be built to be taken apart here.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn audit(
        &self,
        fleet: &str,
        revision: Option<u64>,
        plan_hash: Option<&str>,
        step: &str,
        outcome: AuditOutcome,
        detail: serde_json::Value,
        events: EventSink<'_>,
    ) {
        let mut entry = AuditEntry::new(now(), &self.actor, fleet, step, outcome);
        entry.revision = revision;
        entry.plan_hash = plan_hash.map(str::to_owned);
        entry.detail = detail;
        if let Err(e) = self.recorder.record(entry) {
            events(&Event::Warning {
                message: format!("audit record `{step}` not written: {e}"),
            });
        }
    }

    /// Observes every unit of `fleet`: the provider's list, the spec each unit runs (from its
    /// revision's document), and up to `probe_attempts` probes of each running unit's health
    /// check (stopping at the first pass), `parallelism` probes at a time, pausing on `clock`
    /// for the check's interval between two probes of one unit.
    ///
    /// # Errors
    /// [`EngineError::Provider`] when the provider cannot list; [`EngineError::State`].
    pub fn observe(
        &self,
        fleet: &str,
        desired: Option<&Desired>,
        probe_attempts: u32,
        parallelism: usize,
        clock: &dyn Clock,
    ) -> Result<Vec<ObservedUnit>, EngineError> {
        let units = self.provider.list(fleet)?;
        let live = units.clone();
        let mut docs: BTreeMap<u64, Option<RevisionDoc>> = BTreeMap::new();
        for u in &units {
            if let std::collections::btree_map::Entry::Vacant(e) = docs.entry(u.revision) {
                let doc = self
                    .store
                    .get_revision(fleet, RevisionNumber(u.revision))?
                    .and_then(|r| RevisionDoc::parse(&r.spec_json));
                e.insert(doc);
            }
        }
        let mut observed: Vec<ObservedUnit> = units
            .into_iter()
            .map(|status| {
                let spec = docs
                    .get(&status.revision)
                    .and_then(Option::as_ref)
                    .and_then(|d| d.units.get(&status.instance))
                    .map(|s| {
                        let mut s = s.clone();
                        s.revision = status.revision;
                        s
                    });
                ObservedUnit {
                    status,
                    healthy: None,
                    health_detail: None,
                    spec,
                }
            })
            .collect();
        // A unit reloaded with new addresses keeps its id: what it is bound to now is in the
        // newest revision's document, not in its own.
        if observed.iter().any(|o| o.spec.is_some()) {
            let newest = self.store.list_revisions(fleet)?.into_iter().last();
            if let Some(rev) = newest
                && let Some(doc) = RevisionDoc::parse(&rev.spec_json)
            {
                for o in observed.iter_mut() {
                    if let (Some(spec), Some(b)) =
                        (o.spec.as_mut(), doc.rebound.get(&o.status.unit_id))
                        && rev.number.0 > o.status.revision
                    {
                        spec.bindings = crate::address::normalized(b, rev.number.0);
                    }
                }
            }
        }
        let sem = Semaphore::new(parallelism);
        std::thread::scope(|scope| {
            for o in observed.iter_mut() {
                if !o.status.state.is_running() {
                    continue;
                }
                let health = o.spec.as_ref().and_then(|s| s.health.clone()).or_else(|| {
                    desired
                        .and_then(|d| d.services.get(&o.status.service))
                        .and_then(|s| s.health.clone())
                });
                let Some(mut health) = health else { continue };
                if let Some(spec) = o.spec.as_ref().filter(|s| !s.bindings.is_empty()) {
                    let with = UnitSpec {
                        health: Some(health.clone()),
                        ..spec.clone()
                    };
                    if let Ok(Some(h)) = crate::address::render(&with, &live).map(|r| r.health) {
                        health = h;
                    }
                }
                let sem = &sem;
                let provider = &self.provider;
                scope.spawn(move || {
                    let _permit = sem.acquire();
                    let mut last = ProbeOutcome::unhealthy("not probed");
                    for attempt in 0..probe_attempts.max(1) {
                        if attempt > 0 {
                            clock.pause(Duration::from_millis(health.interval_ms.clamp(50, 500)));
                        }
                        last = provider.probe(&o.status, &health);
                        if last.healthy {
                            break;
                        }
                    }
                    o.healthy = Some(last.healthy);
                    o.health_detail = Some(last.detail);
                });
            }
        });
        Ok(observed)
    }

    /// The units of `fleet` that are recorded on, or have an open intent for, another endpoint
    /// than this engine's provider, grouped by endpoint. Records written before endpoints were
    /// kept (an empty endpoint) count as this provider's.
    ///
    /// # Errors
    /// [`EngineError::State`].
    pub fn units_elsewhere(&self, fleet: &str) -> Result<Vec<(String, Vec<String>)>, EngineError> {
        let mut elsewhere: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for record in self.store.list_instances(fleet)? {
            let e = record.state.endpoint;
            if !e.is_empty() && !self.provider.reaches(&e) {
                elsewhere
                    .entry(e)
                    .or_default()
                    .push(record.state.unit.to_string());
            }
        }
        for intent in self.store.open_intents(fleet)? {
            if let Some(e) = foreign_endpoint(&intent, &*self.provider) {
                let units = elsewhere.entry(e).or_default();
                if !units.contains(&intent.unit.to_string()) {
                    units.push(intent.unit.to_string());
                }
            }
        }
        Ok(elsewhere.into_iter().collect())
    }

    /// Resolves the open intents of `fleet` left by an apply that died (see
    /// [`resolve_intent`]), marks its pending revisions failed, and deletes instance records
    /// of units the provider no longer has. Returns one line per resolved intent.
    ///
    /// # Errors
    /// [`EngineError::State`], [`EngineError::Provider`].
    pub fn recover(
        &self,
        fleet: &str,
        lock: &LockGuard,
        events: EventSink<'_>,
    ) -> Result<Vec<String>, EngineError> {
        // Intents on another endpoint are not ours to resolve (`apply` refuses before this).
        let intents: Vec<_> = self
            .store
            .open_intents(fleet)?
            .into_iter()
            .filter(|i| foreign_endpoint(i, &*self.provider).is_none())
            .collect();
        let mut lines = Vec::new();
        let units: BTreeMap<String, UnitStatus> = self
            .provider
            .list(fleet)?
            .into_iter()
            .map(|u| (u.unit_id.clone(), u))
            .collect();
        for intent in &intents {
            let unit = units.get(intent.unit.as_str());
            let resolution = resolve_intent(intent, unit);
            let detail = IntentDetail::parse(&intent.detail);
            let grace = Duration::from_millis(detail.stop_grace_ms());
            let lease = lock.lease();
            let close = |outcome: IntentOutcome| Write::CloseIntent {
                id: intent.id,
                outcome,
            };
            let failed = |why: &str| {
                close(IntentOutcome::Failed {
                    reason: why.to_string(),
                })
            };
            let writes = match &resolution {
                // `resolve_intent` adopts only a unit it was given.
                Resolution::Adopt => match unit {
                    None => vec![failed("interrupted before the unit existed")],
                    Some(u) => vec![
                        Write::UpsertInstance(instance_state(
                            u,
                            detail.host.map(|h| h.to_string()).unwrap_or_default(),
                            detail
                                .endpoint
                                .clone()
                                .unwrap_or_else(|| self.provider.endpoint()),
                            DesiredState::Running,
                            ObservedState::Starting,
                        )),
                        close(IntentOutcome::Done),
                    ],
                },
                Resolution::StopAndFail => {
                    self.provider.stop(fleet, intent.unit.as_str(), grace)?;
                    vec![
                        Write::DeleteInstance(intent.unit.clone()),
                        failed("interrupted; the unit was not running and was stopped"),
                    ]
                }
                Resolution::Fail => vec![
                    Write::DeleteInstance(intent.unit.clone()),
                    failed("interrupted before the unit existed"),
                ],
                Resolution::StopAgain => {
                    self.provider.stop(fleet, intent.unit.as_str(), grace)?;
                    vec![
                        Write::DeleteInstance(intent.unit.clone()),
                        close(IntentOutcome::Done),
                    ]
                }
                Resolution::Discard => vec![failed("interrupted; snapshot discarded")],
                Resolution::RestoreAgain => {
                    let tag = detail.tag.as_deref().unwrap_or_default();
                    let instance = intent
                        .unit
                        .parts()
                        .map(|(i, _)| i.to_string())
                        .unwrap_or_default();
                    match self.provider.restore(fleet, &instance, tag) {
                        Ok(_) => vec![close(IntentOutcome::Done)],
                        Err(e) => vec![failed(&format!("restore again failed: {e}"))],
                    }
                }
            };
            self.store.write_atomically(&lease, writes)?;
            let text = serde_json::to_value(&resolution)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            events(&Event::Recovered {
                unit: intent.unit.to_string(),
                op: intent.op.as_str().into(),
                resolution: text.clone(),
            });
            self.audit(
                fleet,
                Some(intent.revision.0),
                None,
                &format!("recover.{} {}", intent.op, intent.unit),
                AuditOutcome::Ok,
                json!({ "resolution": text }),
                events,
            );
            lines.push(format!("{} {}: {text}", intent.op, intent.unit));
        }
        for rev in self.store.list_revisions(fleet)? {
            if rev.outcome == RevisionOutcome::Pending {
                self.store.set_revision_outcome(
                    &lock.lease(),
                    rev.number,
                    RevisionOutcome::Failed {
                        reason: "interrupted".into(),
                    },
                )?;
                lines.push(format!(
                    "revision {} marked failed (interrupted)",
                    rev.number
                ));
            }
        }
        let stale: Vec<Write> = self
            .store
            .list_instances(fleet)?
            .into_iter()
            .filter(|r| r.state.endpoint.is_empty() || self.provider.reaches(&r.state.endpoint))
            .filter(|r| !units.contains_key(r.state.unit.as_str()))
            .map(|r| Write::DeleteInstance(r.state.unit))
            .collect();
        if !stale.is_empty() {
            self.store.write_atomically(&lock.lease(), stale)?;
        }
        Ok(lines)
    }

    /// Applies `desired` (within `opts.scope`): lock, recover, observe, decide, ask `confirm`
    /// (with the decision; not asked when there is nothing to do), record a revision holding
    /// `doc`, execute, and on a failed gate roll back unless told not to.
    ///
    /// # Errors
    /// Only for what prevents the apply from being attempted or recorded: the lock is held
    /// by someone else, the store or the provider cannot be reached. A failed gate is an
    /// [`ApplyOutcome`].
    pub fn apply(
        &self,
        desired: &Desired,
        doc: &RevisionDoc,
        opts: &ApplyOptions,
        confirm: &dyn Fn(&Decision) -> bool,
        events: EventSink<'_>,
    ) -> Result<ApplyReport, EngineError> {
        let fleet = desired.fleet.clone();
        let lock = LockGuard::acquire(
            self.store.clone(),
            &fleet,
            &opts.operation,
            opts.lock_ttl,
            &*opts.holder_liveness.0,
            &*opts.clock.0,
        )?;
        let took_over = lock.took_over.is_some();
        // Before anything changes: units this provider cannot see must not be started again.
        let mut elsewhere = self.units_elsewhere(&fleet)?;
        elsewhere.retain(|(endpoint, _)| !opts.unreachable.contains(endpoint));
        if !elsewhere.is_empty() {
            lock.release();
            return Err(EngineError::UnitsElsewhere {
                fleet,
                here: self.provider.endpoint(),
                elsewhere,
            });
        }
        let recovered = self.recover(&fleet, &lock, events)?;
        let with_runs;
        let desired = if desired.jobs.is_empty() {
            desired
        } else {
            with_runs = self.with_job_runs(desired)?;
            &with_runs
        };
        let observed = self.observe(&fleet, Some(desired), 3, opts.parallelism, &*opts.clock.0)?;
        let decision = decide(desired, &observed, &opts.scope);
        let mut report = ApplyReport {
            fleet: fleet.clone(),
            revision: None,
            outcome: ApplyOutcome::NoChanges,
            failure: None,
            restored: Vec::new(),
            decision,
            recovered,
            took_over,
        };
        if report.decision.is_empty() {
            events(&Event::Finished {
                revision: None,
                outcome: "no-changes".into(),
                message: format!("fleet {fleet}: everything runs as desired"),
            });
            lock.release();
            return Ok(report);
        }
        if !confirm(&report.decision) {
            report.outcome = ApplyOutcome::Declined;
            lock.release();
            return Ok(report);
        }
        // The document records what each unit is bound to, so that the next apply can tell
        // whether those addresses moved (ADR 009).
        let mut doc = doc.clone();
        for (instance, b) in &report.decision.bindings {
            if let Some(u) = doc.units.get_mut(instance) {
                u.bindings = b.clone();
            }
        }
        doc.rebound = report.decision.rebound.clone();
        let spec_json = doc.to_json();
        let placement_json = serde_json::to_string(
            &desired
                .units
                .values()
                .map(|u| {
                    json!({"service": u.service, "instance": u.instance, "site": u.spec.site, "host": u.spec.host})
                })
                .collect::<Vec<_>>(),
        )
        .unwrap_or_default();
        let plan_hash = sha256_hex(format!("{spec_json}\n{placement_json}").as_bytes());
        let revision = self.store.create_revision(
            &lock.lease(),
            NewRevision {
                spec_json,
                placement_json,
                plan_hash: plan_hash.clone(),
                actor: self.actor.clone(),
            },
        )?;
        let rev = revision.number.0;
        report.revision = Some(rev);
        let (creates, replaces, removes) = report.decision.counts();
        events(&Event::ApplyStarted {
            fleet: fleet.clone(),
            revision: rev,
            creates,
            replaces,
            removes,
        });
        self.audit(
            &fleet,
            Some(rev),
            Some(&plan_hash),
            &format!("{}.start", opts.operation),
            AuditOutcome::Ok,
            json!({
                "kind": doc.kind,
                "creates": creates, "replaces": replaces, "removes": removes,
                "diff": report.decision.diff_lines().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "took_over": took_over,
            }),
            events,
        );

        let mut machine = Rollout::new(
            &report.decision,
            rollout::Options {
                revision: rev,
                parallelism: opts.parallelism.max(1),
                rollback: opts.rollback,
            },
        );
        let driver = Driver {
            engine: self,
            fleet: &fleet,
            revision: rev,
            plan_hash: &plan_hash,
            lock: &lock,
            events,
            cancel: &opts.cancel,
            clock: &*opts.clock.0,
            // One worker per step in flight, and a few for the probes of analysis windows.
            workers: opts.parallelism.clamp(1, 64) + 2,
        };
        let mut end = driver.run(&mut machine);
        // After a rollback, the rollback jobs of what this run touched (ADR 012).
        let mut rollback_job_failed = false;
        if opts.rollback
            && end.failure.is_some()
            && !end.cancelled
            && !end.lock_lost
            && !report.decision.rollback_jobs.is_empty()
        {
            let (lines, ok) = self.run_rollback_jobs(&report.decision, &end, &driver, rev, events);
            end.restored.extend(lines);
            rollback_job_failed = !ok;
        }

        let failure = end.failure.clone();
        let outcome = if lock.is_lost() || end.lock_lost {
            let reason = lock
                .lost_reason()
                .unwrap_or_else(|| "the lease was lost".into());
            drop(lock);
            return Err(EngineError::LockLost { fleet, reason });
        } else if end.cancelled {
            ApplyOutcome::Cancelled
        } else if let Some(f) = &failure {
            if opts.rollback {
                report.restored = end.restored;
                let previous = self
                    .store
                    .latest_applied_revision(&fleet)?
                    .map(|r| r.number.0);
                if rollback_job_failed {
                    // The instances are back, but what a rollback job should have undone is not.
                    ApplyOutcome::Failed {
                        reason: format!("{}: {}; then a rollback job failed", f.instance, f.reason),
                    }
                } else {
                    ApplyOutcome::RolledBack { to: previous }
                }
            } else {
                ApplyOutcome::Failed {
                    reason: format!("{}: {}", f.instance, f.reason),
                }
            }
        } else {
            ApplyOutcome::Applied
        };
        report.failure = failure;
        let stored = match &outcome {
            ApplyOutcome::Applied => RevisionOutcome::Applied,
            ApplyOutcome::RolledBack { to: Some(to) } => RevisionOutcome::RolledBack {
                to: RevisionNumber(*to),
            },
            ApplyOutcome::Cancelled => RevisionOutcome::Failed {
                reason: match &report.failure {
                    // A step that was in flight failed on its own while the run wound down.
                    Some(f) => format!("cancelled; {}: {}", f.instance, f.reason),
                    None => "cancelled".into(),
                },
            },
            _ => RevisionOutcome::Failed {
                reason: report
                    .failure
                    .as_ref()
                    .map(|f| format!("{}: {}", f.instance, f.reason))
                    .unwrap_or_default(),
            },
        };
        self.store
            .set_revision_outcome(&lock.lease(), revision.number, stored)?;
        let message = match (&outcome, &report.failure) {
            (ApplyOutcome::Applied, _) => format!(
                "revision r{rev} applied: {creates} created, {replaces} replaced, {removes} removed{}",
                match report.decision.jobs().count() {
                    0 => String::new(),
                    n => format!(", {n} job(s) run"),
                }
            ),
            (ApplyOutcome::Cancelled, None) => {
                format!("revision r{rev} cancelled; the next apply converges from here")
            }
            (ApplyOutcome::Cancelled, Some(f)) => format!(
                "revision r{rev} cancelled; a step in flight failed: {} ({}): {}; the next \
                 apply converges from here",
                f.instance, f.unit, f.reason
            ),
            (_, Some(f)) => format!(
                "revision r{rev} failed: {} ({}): {}",
                f.instance, f.unit, f.reason
            ),
            _ => format!("revision r{rev} failed"),
        };
        self.audit(
            &fleet,
            Some(rev),
            Some(&plan_hash),
            &format!("{}.finish", opts.operation),
            match &outcome {
                ApplyOutcome::Applied => AuditOutcome::Ok,
                ApplyOutcome::Cancelled => AuditOutcome::Cancelled {
                    reason: "interrupted by the operator".into(),
                },
                _ => AuditOutcome::Failed {
                    reason: message.clone(),
                },
            },
            json!({ "outcome": outcome.name(), "failure": report.failure, "restored": report.restored }),
            events,
        );
        report.outcome = outcome;
        events(&Event::Finished {
            revision: Some(rev),
            outcome: report.outcome.name().into(),
            message,
        });
        lock.release();
        Ok(report)
    }
}

impl Engine {
    /// `desired` with the latest recorded run of each of its jobs, so that [`decide`] runs a
    /// job only when its fingerprint changed, its last run failed, or it is asked for.
    ///
    /// # Errors
    /// The store's, reading the job runs.
    pub fn with_job_runs(&self, desired: &Desired) -> Result<Desired, EngineError> {
        let runs = self.store.job_runs(&desired.fleet)?;
        Ok(desired.clone().with_job_runs(&runs))
    }

    /// After a failed run's rollback: the decision's rollback jobs (`hook: {rollback: S}`)
    /// whose `S` the run touched (an instance of it started, stopped or restored, or job `S`
    /// made an attempt at this revision), one after another through the same machine and
    /// driver, without a rollback of their own; the first that fails stops the others. One
    /// line per job that ran, and whether all succeeded. The apply's failure stays the one
    /// that caused the rollback.
    fn run_rollback_jobs(
        &self,
        decision: &Decision,
        end: &rollout::RunEnd,
        driver: &Driver<'_>,
        revision: u64,
        events: EventSink<'_>,
    ) -> (Vec<String>, bool) {
        let ran: BTreeSet<String> = match self.store.job_runs(driver.fleet) {
            Ok(runs) => runs
                .into_iter()
                .filter(|r| r.run.revision.0 == revision)
                .map(|r| r.run.job)
                .collect(),
            Err(e) => {
                events(&Event::Warning {
                    message: format!(
                        "cannot read this apply's job runs, so its rollback jobs do not run: {}",
                        crate::error::chain_text(&e)
                    ),
                });
                return (Vec::new(), false);
            }
        };
        let jobs = decision.rollback_jobs_after(&|s| end.touched.contains(s) || ran.contains(s));
        if jobs.is_empty() {
            return (Vec::new(), true);
        }
        // Each job a phase of its own, so that they run in order and a failure stops the rest.
        let only_jobs = Decision {
            phases: jobs
                .iter()
                .enumerate()
                .map(|(i, ja)| crate::decide::PhaseActions {
                    phase: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    waves: vec![crate::decide::WaveActions {
                        wave: 1,
                        services: Vec::new(),
                        jobs: vec![(*ja).clone()],
                        reloads: Vec::new(),
                    }],
                })
                .collect(),
            ..Decision::default()
        };
        let mut machine = Rollout::new(
            &only_jobs,
            rollout::Options {
                revision,
                parallelism: 1,
                rollback: false,
            },
        );
        let jobs_end = driver.run(&mut machine);
        let failed = jobs_end.failure.as_ref().map(|f| f.instance.clone());
        let mut lines = Vec::new();
        for ja in &jobs {
            let ok = failed.as_deref() != Some(ja.instance.as_str());
            lines.push(format!(
                "{}: rollback job {}",
                ja.instance,
                if ok { "succeeded" } else { "failed" }
            ));
            if !ok {
                break;
            }
        }
        (
            lines,
            failed.is_none() && !jobs_end.cancelled && !jobs_end.lock_lost,
        )
    }
}

/// The endpoint an intent acts on, when `provider` does not reach it.
fn foreign_endpoint(intent: &phoenix_state::Intent, provider: &dyn Provider) -> Option<String> {
    IntentDetail::parse(&intent.detail)
        .endpoint
        .filter(|e| !e.is_empty() && !provider.reaches(e))
}

/// The instance record of an observed unit.
pub(crate) fn instance_state(
    u: &UnitStatus,
    host: String,
    endpoint: String,
    desired: DesiredState,
    observed: ObservedState,
) -> InstanceState {
    InstanceState {
        unit: UnitId::from_raw(u.unit_id.clone()),
        service: u.service.clone(),
        instance: u.instance.clone(),
        revision: RevisionNumber(u.revision),
        site: u.site.clone(),
        host,
        endpoint,
        desired,
        observed,
        handle: json!({ "pid": u.pid, "handle": u.handle }),
        ports: serde_json::to_value(&u.ports).unwrap_or_default(),
    }
}

pub(crate) fn spec_state(
    spec: &UnitSpec,
    endpoint: String,
    observed: ObservedState,
) -> InstanceState {
    InstanceState {
        unit: UnitId::from_raw(spec.unit_id()),
        service: spec.service.clone(),
        instance: spec.instance.clone(),
        revision: RevisionNumber(spec.revision),
        site: spec.site.clone(),
        host: spec.host.to_string(),
        endpoint,
        desired: DesiredState::Running,
        observed,
        handle: serde_json::Value::Null,
        ports: serde_json::Value::Null,
    }
}

/// Re-applies nothing but reports what it would do: lock-free, read-only.
///
/// # Errors
/// As [`Engine::observe`].
pub fn preview(
    engine: &Engine,
    desired: &Desired,
    scope: &Scope,
    parallelism: usize,
) -> Result<Decision, EngineError> {
    let with_runs;
    let desired = if desired.jobs.is_empty() {
        desired
    } else {
        with_runs = engine.with_job_runs(desired)?;
        &with_runs
    };
    let observed = engine.observe(
        &desired.fleet,
        Some(desired),
        1,
        parallelism,
        &crate::RealClock::new(),
    )?;
    Ok(decide(desired, &observed, scope))
}
