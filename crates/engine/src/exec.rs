//! The executor: carries out a [`Decision`] through a [`Provider`], wave by wave, with bounded
//! parallelism, health gates, rollout strategies, write-ahead intents, audit records, and
//! rollback of the changed instances when a gate fails.

use crate::decide::{
    Decision, InstanceAction, JobAction, ObservedUnit, OldUnit, ReloadAction, Removal, Resolution,
    ServiceActions, decide, resolve_intent,
};
use crate::desired::{Desired, RevisionDoc, Scope, sha256_hex};
use crate::error::EngineError;
use crate::events::{Event, EventSink};
use crate::lock::{Liveness, LockGuard};
use phoenix_audit::{AuditEntry, AuditOutcome, Recorder};
use phoenix_provider_api::{
    Health, ProbeOutcome, Provider, ProviderError, UnitSpec, UnitState, UnitStatus,
};
use phoenix_spec::Rollout;
use phoenix_state::{
    DesiredState, InstanceState, IntentId, IntentOp, IntentOutcome, JobOutcome, JobRun,
    MAX_JOB_OUTPUT, NewIntent, NewRevision, ObservedState, RevisionNumber, RevisionOutcome,
    StateError, StateStore, UnitId, Write, Written,
};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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

/// Runs `f` on every item in parallel (scoped threads; the semaphore inside `f` bounds the
/// work); true when every call returned true.
fn parallel<T: Sync>(items: &[T], f: impl Fn(&T) -> bool + Sync) -> bool {
    if items.is_empty() {
        return true;
    }
    if items.len() == 1 {
        return f(&items[0]);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = items.iter().map(|i| scope.spawn(|| f(i))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(false))
            .collect::<Vec<bool>>()
            .into_iter()
            .all(|ok| ok)
    })
}

/// One changed instance, as far as the apply got: what a rollback must undo.
#[derive(Debug, Clone)]
struct Changed {
    service: String,
    instance: String,
    old: Option<OldUnit>,
    old_stopped: bool,
    new_unit: Option<UnitStatus>,
    new_unit_id: Option<String>,
    snapshot: Option<String>,
    stop_grace_ms: u64,
}

/// How a replacement orders its start and stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Stop the old unit, then start and gate the new one.
    StopFirst,
    /// Start and gate the new unit beside the old, then stop the old.
    Surge,
    /// Start and gate the new unit beside the old; the caller stops the old ones later.
    StartOnly,
}

struct Run<'a> {
    engine: &'a Engine,
    fleet: String,
    revision: u64,
    plan_hash: String,
    lock: &'a LockGuard,
    events: EventSink<'a>,
    cancel: &'a AtomicBool,
    failed: AtomicBool,
    failure: Mutex<Option<Failure>>,
    changed: Mutex<Vec<Changed>>,
    sem: Semaphore,
    /// Blue-green services whose old units are retired after the last wave (see
    /// `Decision::retire_last`), and those units: `(instance, unit, grace)`.
    retire_last: BTreeSet<String>,
    retiring: Mutex<Vec<(String, String, u64)>>,
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

impl Engine {
    // The audit context (fleet, revision, plan hash) differs between recovery and a run; a
    // struct for it would only be built to be taken apart here.
    #[allow(clippy::too_many_arguments)]
    fn audit(
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
    /// check (stopping at the first pass), `parallelism` probes at a time.
    ///
    /// # Errors
    /// [`EngineError::Provider`] when the provider cannot list; [`EngineError::State`].
    pub fn observe(
        &self,
        fleet: &str,
        desired: Option<&Desired>,
        probe_attempts: u32,
        parallelism: usize,
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
                            std::thread::sleep(Duration::from_millis(
                                health.interval_ms.clamp(50, 500),
                            ));
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
                let units = elsewhere.entry(e.to_owned()).or_default();
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
            let grace = Duration::from_millis(
                intent
                    .detail
                    .get("stop_grace_ms")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(10_000),
            );
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
                Resolution::Adopt => {
                    let u = unit.expect("adopt needs a unit");
                    vec![
                        Write::UpsertInstance(instance_state(
                            u,
                            intent.detail.get("host"),
                            intent
                                .detail
                                .get(INTENT_ENDPOINT)
                                .and_then(|v| v.as_str())
                                .map_or_else(|| self.provider.endpoint(), str::to_owned),
                            DesiredState::Running,
                            ObservedState::Starting,
                        )),
                        close(IntentOutcome::Done),
                    ]
                }
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
                    let tag = intent
                        .detail
                        .get("tag")
                        .and_then(|v| v.as_str())
                        .unwrap_or_default();
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
        let observed = self.observe(&fleet, Some(desired), 3, opts.parallelism)?;
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

        let run = Run {
            engine: self,
            fleet: fleet.clone(),
            revision: rev,
            plan_hash: plan_hash.clone(),
            lock: &lock,
            events,
            cancel: &opts.cancel,
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            changed: Mutex::new(Vec::new()),
            sem: Semaphore::new(opts.parallelism),
            retire_last: report.decision.retire_last.clone(),
            retiring: Mutex::new(Vec::new()),
        };
        run.execute(&report.decision);

        let failure = run
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let cancelled = opts.cancel.load(Ordering::SeqCst);
        let outcome = if lock.is_lost() {
            let reason = lock.lost_reason().unwrap_or_default();
            drop(run);
            drop(lock);
            return Err(EngineError::LockLost { fleet, reason });
        } else if cancelled {
            ApplyOutcome::Cancelled
        } else if let Some(f) = &failure {
            if opts.rollback {
                report.restored = run.rollback(&f.reason);
                let (lines, jobs_ok) = run.rollback_jobs(&report.decision);
                report.restored.extend(lines);
                let previous = self
                    .store
                    .latest_applied_revision(&fleet)?
                    .map(|r| r.number.0);
                if jobs_ok {
                    ApplyOutcome::RolledBack { to: previous }
                } else {
                    // The instances are back, but what a rollback job should have undone is not.
                    ApplyOutcome::Failed {
                        reason: format!("{}: {}; then a rollback job failed", f.instance, f.reason),
                    }
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
        drop(run);
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
}

/// How one attempt of a job ended.
struct Attempt {
    outcome: JobOutcome,
    exit_code: Option<i64>,
    detail: String,
    output: String,
}

/// A step of a wave: a service's rollout, a job's run, or a reload in place.
enum Step<'d> {
    Service(&'d ServiceActions),
    Job(&'d JobAction),
    Reload(&'d ReloadAction),
}

/// The budget of a `reload` command, run as one command-check attempt: the provider bounds an
/// attempt to `probe::MAX_ATTEMPT` (5 s) within it, so a reload must be quick (rewrite a file,
/// send a signal), not a restart.
const RELOAD_TIMEOUT_MS: u64 = 30_000;

/// `1500 ms`, `2s`, `5m` for messages.
fn human_ms(ms: u64) -> String {
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) && ms > 0 {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// The key of an intent's detail that names the provider endpoint it acts on.
const INTENT_ENDPOINT: &str = "endpoint";

/// The endpoint an intent acts on, when `provider` does not reach it.
fn foreign_endpoint<'a>(
    intent: &'a phoenix_state::Intent,
    provider: &dyn Provider,
) -> Option<&'a str> {
    intent
        .detail
        .get(INTENT_ENDPOINT)
        .and_then(|v| v.as_str())
        .filter(|e| !e.is_empty() && !provider.reaches(e))
}

/// The instance record of an observed unit.
fn instance_state(
    u: &UnitStatus,
    host: Option<&serde_json::Value>,
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
        host: host
            .map(|h| h.to_string().trim_matches('"').to_string())
            .unwrap_or_default(),
        endpoint,
        desired,
        observed,
        handle: json!({ "pid": u.pid, "handle": u.handle }),
        ports: serde_json::to_value(&u.ports).unwrap_or_default(),
    }
}

fn spec_state(spec: &UnitSpec, endpoint: String, observed: ObservedState) -> InstanceState {
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

impl Run<'_> {
    fn stopping(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
            || self.cancel.load(Ordering::SeqCst)
            || self.lock.is_lost()
    }

    fn emit(&self, e: Event) {
        (self.events)(&e);
    }

    fn audit(&self, step: String, outcome: AuditOutcome, detail: serde_json::Value) {
        self.engine.audit(
            &self.fleet,
            Some(self.revision),
            Some(&self.plan_hash),
            &step,
            outcome,
            detail,
            self.events,
        );
    }

    fn fail(&self, instance: &str, unit: &str, reason: String) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        // Also when cancelled: steps in flight run to their end, and one that fails then
        // failed for real.
        if f.is_none() {
            *f = Some(Failure {
                instance: instance.into(),
                unit: unit.into(),
                reason,
            });
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    /// One batch of state writes; a lost lock stops the run.
    fn write(&self, writes: Vec<Write>) -> Result<Vec<Written>, String> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self
                .engine
                .store
                .write_atomically(&self.lock.lease(), writes.clone())
            {
                Ok(w) => return Ok(w),
                Err(e @ StateError::LockLost { .. }) => {
                    self.lock.mark_lost(e.to_string());
                    return Err(e.to_string());
                }
                Err(e) if e.is_retryable() && attempts < 5 => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                // The store's message names the step and its source the cause: keep both.
                Err(e) => return Err(crate::error::chain_text(&e)),
            }
        }
    }

    /// Every intent names the endpoint it acts on, so that recovery by another operator's
    /// phoenix (which cannot see that endpoint) knows not to resolve it: the endpoint of the
    /// site and host in `detail` (a start), else the one recorded for the unit.
    fn intent(&self, op: IntentOp, unit: &str, mut detail: serde_json::Value) -> NewIntent {
        let provider = &self.engine.provider;
        let placed = detail.get("site").and_then(|s| s.as_str()).map(|site| {
            let host = detail
                .get("host")
                .and_then(serde_json::Value::as_u64)
                .and_then(|h| u32::try_from(h).ok())
                .unwrap_or(0);
            provider.endpoint_of(site, host)
        });
        let endpoint = placed
            .or_else(|| {
                self.engine
                    .store
                    .get_instance(&self.fleet, &UnitId::from_raw(unit))
                    .ok()
                    .flatten()
                    .map(|r| r.state.endpoint)
                    .filter(|e| !e.is_empty())
            })
            .unwrap_or_else(|| provider.endpoint());
        if let Some(map) = detail.as_object_mut() {
            map.insert(INTENT_ENDPOINT.to_owned(), json!(endpoint));
        }
        NewIntent {
            op,
            unit: UnitId::from_raw(unit),
            revision: RevisionNumber(self.revision),
            detail,
        }
    }

    fn intent_id(written: &[Written]) -> Option<IntentId> {
        written.iter().find_map(|w| match w {
            Written::Intent(i) => Some(i.id),
            _ => None,
        })
    }

    /// Starts a unit under a write-ahead intent.
    fn start_unit(&self, spec: &UnitSpec) -> Result<UnitStatus, String> {
        let unit = spec.unit_id();
        self.emit(Event::UnitStarting {
            instance: spec.instance.clone(),
            unit: unit.clone(),
        });
        let written = self.write(vec![
            Write::UpsertInstance(spec_state(
                spec,
                self.engine.provider.endpoint_of(&spec.site, spec.host),
                ObservedState::Unknown,
            )),
            Write::RecordIntent(self.intent(
                IntentOp::Start,
                &unit,
                json!({"service": spec.service, "site": spec.site, "host": spec.host, "stop_grace_ms": spec.stop_grace_ms}),
            )),
        ])?;
        let id = Self::intent_id(&written).ok_or("no intent id")?;
        // Other services' addresses are filled in now, from the units that run at this moment
        // (those of earlier waves included), not when the apply was decided.
        let rendered = self.render(spec);
        let started = match &rendered {
            Ok(r) => self.engine.provider.start(r),
            Err(e) => Err(ProviderError::InvalidSpec {
                unit: unit.clone(),
                problem: e.clone(),
            }),
        };
        match started {
            Ok(status) => {
                self.write(vec![
                    Write::UpsertInstance(instance_state(
                        &status,
                        Some(&json!(spec.host.to_string())),
                        self.engine.provider.endpoint_of(&spec.site, spec.host),
                        DesiredState::Running,
                        ObservedState::Starting,
                    )),
                    Write::CloseIntent {
                        id,
                        outcome: IntentOutcome::Done,
                    },
                ])?;
                self.emit(Event::UnitStarted {
                    instance: spec.instance.clone(),
                    unit: unit.clone(),
                    pid: status.pid,
                    ports: status.ports.clone(),
                });
                self.audit(
                    format!("unit.start {unit}"),
                    AuditOutcome::Ok,
                    json!({"pid": status.pid, "ports": status.ports}),
                );
                Ok(status)
            }
            Err(e) => {
                // A spawn or spec error already says that the unit cannot start; naming the
                // step again read "cannot start: cannot start unit `c-0@r3`: ...".
                let reason = match e {
                    ProviderError::Spawn { .. } | ProviderError::InvalidSpec { .. } => {
                        e.to_string()
                    }
                    _ => format!("cannot start: {e}"),
                };
                // The provider may have created the unit before failing; make sure it is gone.
                let _ = self
                    .engine
                    .provider
                    .stop(&self.fleet, &unit, spec.stop_grace());
                self.write(vec![
                    Write::DeleteInstance(UnitId::from_raw(unit.clone())),
                    Write::CloseIntent {
                        id,
                        outcome: IntentOutcome::Failed {
                            reason: reason.clone(),
                        },
                    },
                ])?;
                self.audit(
                    format!("unit.start {unit}"),
                    AuditOutcome::Failed {
                        reason: reason.clone(),
                    },
                    serde_json::Value::Null,
                );
                Err(reason)
            }
        }
    }

    /// Stops a unit under a write-ahead intent.
    fn stop_unit(
        &self,
        instance: &str,
        unit: &str,
        grace_ms: u64,
        reason: &str,
    ) -> Result<(), String> {
        let written = self.write(vec![Write::RecordIntent(self.intent(
            IntentOp::Stop,
            unit,
            json!({"stop_grace_ms": grace_ms, "reason": reason}),
        ))])?;
        let id = Self::intent_id(&written).ok_or("no intent id")?;
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match self
                .engine
                .provider
                .stop(&self.fleet, unit, Duration::from_millis(grace_ms))
            {
                Err(e) if e.is_retryable() && attempt < 5 => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                r => break r,
            }
        };
        match result {
            Ok(()) => {
                self.write(vec![
                    Write::DeleteInstance(UnitId::from_raw(unit)),
                    Write::CloseIntent {
                        id,
                        outcome: IntentOutcome::Done,
                    },
                ])?;
                self.emit(Event::UnitStopped {
                    instance: instance.into(),
                    unit: unit.into(),
                    reason: reason.into(),
                });
                self.audit(
                    format!("unit.stop {unit}"),
                    AuditOutcome::Ok,
                    json!({ "reason": reason }),
                );
                Ok(())
            }
            Err(e) => {
                // Leave the intent open: the next apply stops again.
                let msg = match e {
                    // Already "cannot stop unit `web-0@r1`: ...".
                    ProviderError::Stop { .. } => e.to_string(),
                    _ => format!("cannot stop {unit}: {e}"),
                };
                self.audit(
                    format!("unit.stop {unit}"),
                    AuditOutcome::Failed {
                        reason: msg.clone(),
                    },
                    serde_json::Value::Null,
                );
                self.emit(Event::Warning {
                    message: msg.clone(),
                });
                Err(msg)
            }
        }
    }

    fn snapshot(
        &self,
        instance: &str,
        unit: &str,
        paths: &[String],
        tag: &str,
    ) -> Result<(), String> {
        let written = self.write(vec![Write::RecordIntent(self.intent(
            IntentOp::Snapshot,
            unit,
            json!({"tag": tag, "paths": paths}),
        ))])?;
        let id = Self::intent_id(&written).ok_or("no intent id")?;
        let r = self
            .engine
            .provider
            .snapshot(&self.fleet, instance, paths, tag);
        let outcome = match &r {
            Ok(_) => IntentOutcome::Done,
            Err(e) => IntentOutcome::Failed {
                reason: e.to_string(),
            },
        };
        self.write(vec![Write::CloseIntent { id, outcome }])?;
        self.audit(
            format!("backup.snapshot {instance}"),
            match &r {
                Ok(_) => AuditOutcome::Ok,
                Err(e) => AuditOutcome::Failed {
                    reason: e.to_string(),
                },
            },
            json!({"tag": tag, "paths": paths}),
        );
        match r {
            Ok(_) => {
                self.emit(Event::Snapshot {
                    instance: instance.into(),
                    tag: tag.into(),
                });
                Ok(())
            }
            Err(e) => Err(format!("backup of {instance} failed: {e}")),
        }
    }

    fn restore(&self, instance: &str, unit: &str, tag: &str) -> Result<(), String> {
        let written = self.write(vec![Write::RecordIntent(self.intent(
            IntentOp::Restore,
            unit,
            json!({"tag": tag}),
        ))])?;
        let id = Self::intent_id(&written).ok_or("no intent id")?;
        let r = self.engine.provider.restore(&self.fleet, instance, tag);
        let outcome = match &r {
            Ok(_) => IntentOutcome::Done,
            Err(e) => IntentOutcome::Failed {
                reason: e.to_string(),
            },
        };
        self.write(vec![Write::CloseIntent { id, outcome }])?;
        self.audit(
            format!("backup.restore {instance}"),
            match &r {
                Ok(_) => AuditOutcome::Ok,
                Err(e) => AuditOutcome::Failed {
                    reason: e.to_string(),
                },
            },
            json!({"tag": tag}),
        );
        match r {
            Ok(_) => {
                self.emit(Event::Restored {
                    instance: instance.into(),
                    tag: tag.into(),
                });
                Ok(())
            }
            Err(e) => Err(format!("restore of {instance} failed: {e}")),
        }
    }

    /// The health gate: probes until healthy or the check's timeout, like
    /// [`phoenix_provider_api::probe::wait_until_healthy`]. A unit without a check passes once
    /// it is seen running.
    ///
    /// Cancelling does not cut a gate short: the unit has been started, and abandoning its
    /// gate left it running unverified while Ctrl-C promised to finish the steps in flight.
    /// (A second Ctrl-C exits at once.)
    /// `spec` with the addresses it is bound to filled in, from the provider's list now.
    fn render(&self, spec: &UnitSpec) -> Result<UnitSpec, String> {
        if spec.bindings.is_empty() {
            return Ok(spec.clone());
        }
        let live = self
            .engine
            .provider
            .list(&self.fleet)
            .map_err(|e| format!("cannot list units to fill in addresses: {e}"))?;
        crate::address::render(spec, &live)
    }

    /// The health check of `spec` (or `health`, a service's) with its addresses filled in; as
    /// given when that fails, so that the probe reports the reference it cannot fill in.
    fn rendered_health(&self, spec: &UnitSpec, health: Option<&Health>) -> Option<Health> {
        let with = UnitSpec {
            health: health.cloned(),
            ..spec.clone()
        };
        match self.render(&with) {
            Ok(r) => r.health,
            Err(_) => health.cloned(),
        }
    }

    fn gate(&self, unit: &UnitStatus, health: Option<&Health>) -> ProbeOutcome {
        let Some(health) = health else {
            std::thread::sleep(Duration::from_millis(100));
            return match self.engine.provider.list(&self.fleet) {
                Ok(list) => match list.iter().find(|u| u.unit_id == unit.unit_id) {
                    Some(u) if u.state.is_running() => {
                        ProbeOutcome::healthy("running (no health check)")
                    }
                    Some(u) => ProbeOutcome::unhealthy(format!(
                        "{}{}",
                        u.state,
                        u.detail
                            .as_ref()
                            .map(|d| format!(": {d}"))
                            .unwrap_or_default()
                    )),
                    None => ProbeOutcome::unhealthy("the unit vanished"),
                },
                Err(e) => ProbeOutcome::unhealthy(e.to_string()),
            };
        };
        let deadline = Instant::now() + Duration::from_millis(health.timeout_ms);
        let interval = Duration::from_millis(health.interval_ms.max(10));
        loop {
            let started = Instant::now();
            let outcome = self.engine.provider.probe(unit, health);
            if outcome.healthy {
                return outcome;
            }
            let now = Instant::now();
            if now >= deadline {
                return ProbeOutcome::unhealthy(format!(
                    "not healthy after {} ms: {}",
                    health.timeout_ms, outcome.detail
                ));
            }
            let next = (started + interval).min(deadline);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }

    fn push_changed(&self, c: Changed) -> usize {
        let mut v = self.changed.lock().unwrap_or_else(|p| p.into_inner());
        v.push(c);
        v.len() - 1
    }

    fn update_changed(&self, i: usize, f: impl FnOnce(&mut Changed)) {
        let mut v = self.changed.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut v[i]);
    }

    /// Carries out one instance action; false when it failed (the failure is recorded).
    fn change_instance(&self, sa: &ServiceActions, action: &InstanceAction, mode: Mode) -> bool {
        if self.stopping() {
            return false;
        }
        let _permit = self.sem.acquire();
        if self.stopping() {
            return false;
        }
        let mut spec = action.spec.clone();
        spec.revision = self.revision;
        let unit = spec.unit_id();
        let old = action.old().cloned();
        let idx = self.push_changed(Changed {
            service: action.service.clone(),
            instance: action.instance.clone(),
            old: old.clone(),
            old_stopped: false,
            new_unit: None,
            new_unit_id: None,
            snapshot: None,
            stop_grace_ms: sa.stop_grace_ms,
        });
        if let Some(old) = &old {
            let paths = old
                .spec
                .as_ref()
                .map(|s| s.backup.clone())
                .filter(|b| !b.is_empty())
                .unwrap_or_else(|| spec.backup.clone());
            if !paths.is_empty() {
                let tag = format!("pre-r{}", self.revision);
                if let Err(e) = self.snapshot(&action.instance, &old.unit_id, &paths, &tag) {
                    self.fail(&action.instance, &unit, e);
                    return false;
                }
                self.update_changed(idx, |c| c.snapshot = Some(tag));
            }
            if mode == Mode::StopFirst || !old.running {
                let why = format!("replaced by {unit}");
                if let Err(e) =
                    self.stop_unit(&action.instance, &old.unit_id, sa.stop_grace_ms, &why)
                {
                    self.fail(&action.instance, &old.unit_id, e);
                    return false;
                }
                self.update_changed(idx, |c| c.old_stopped = true);
            }
        }
        self.update_changed(idx, |c| c.new_unit_id = Some(unit.clone()));
        let status = match self.start_unit(&spec) {
            Ok(s) => s,
            Err(e) => {
                self.emit(Event::GateFailed {
                    instance: action.instance.clone(),
                    unit: unit.clone(),
                    reason: e.clone(),
                });
                self.fail(&action.instance, &unit, e);
                return false;
            }
        };
        self.update_changed(idx, |c| c.new_unit = Some(status.clone()));
        let started = Instant::now();
        let health = self.rendered_health(&spec, sa.health.as_ref());
        let outcome = self.gate(&status, health.as_ref());
        if !outcome.healthy {
            self.emit(Event::GateFailed {
                instance: action.instance.clone(),
                unit: unit.clone(),
                reason: outcome.detail.clone(),
            });
            self.audit(
                format!("gate {unit}"),
                AuditOutcome::Failed {
                    reason: outcome.detail.clone(),
                },
                serde_json::Value::Null,
            );
            self.fail(
                &action.instance,
                &unit,
                format!("health gate failed: {}", outcome.detail),
            );
            return false;
        }
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let _ = self.write(vec![Write::UpsertInstance(instance_state(
            &status,
            Some(&json!(spec.host.to_string())),
            self.engine.provider.endpoint_of(&spec.site, spec.host),
            DesiredState::Running,
            ObservedState::Running,
        ))]);
        self.emit(Event::GatePassed {
            instance: action.instance.clone(),
            unit: unit.clone(),
            detail: outcome.detail.clone(),
            ms,
        });
        self.audit(
            format!("gate {unit}"),
            AuditOutcome::Ok,
            json!({"detail": outcome.detail, "ms": ms}),
        );
        if mode == Mode::Surge
            && let Some(old) = &old
            && old.running
        {
            let why = format!("replaced by {unit}");
            if let Err(e) = self.stop_unit(&action.instance, &old.unit_id, sa.stop_grace_ms, &why) {
                self.fail(&action.instance, &old.unit_id, e);
                return false;
            }
            self.update_changed(idx, |c| c.old_stopped = true);
        }
        true
    }

    fn run_service(&self, sa: &ServiceActions) -> bool {
        match &sa.rollout {
            Rollout::Rolling {
                max_unavailable,
                max_surge,
            } => {
                let surge = *max_surge as usize;
                let batch = (surge + *max_unavailable as usize).max(1);
                // New instances take nothing down: start them all at once. Replacements go
                // `max_unavailable + max_surge` at a time.
                let (creates, replaces): (Vec<InstanceAction>, Vec<InstanceAction>) =
                    sa.actions.iter().cloned().partition(|a| a.old().is_none());
                if !parallel(&creates, |a| self.change_instance(sa, a, Mode::StopFirst)) {
                    return false;
                }
                for chunk in replaces.chunks(batch) {
                    let indexed: Vec<(usize, &InstanceAction)> = chunk.iter().enumerate().collect();
                    let ok = parallel(&indexed, |(i, a)| {
                        let mode = if *i < surge {
                            Mode::Surge
                        } else {
                            Mode::StopFirst
                        };
                        self.change_instance(sa, a, mode)
                    });
                    if !ok {
                        return false;
                    }
                }
                true
            }
            Rollout::BlueGreen => {
                if !parallel(&sa.actions, |a| {
                    self.change_instance(sa, a, Mode::StartOnly)
                }) {
                    return false;
                }
                // Green is healthy everywhere: retire blue, or once the users of its
                // addresses have moved to green (after the last wave).
                if self.retire_last.contains(&sa.service) {
                    let mut r = self.retiring.lock().unwrap_or_else(|p| p.into_inner());
                    for a in &sa.actions {
                        if let Some(old) = a.old().filter(|o| o.running) {
                            r.push((a.instance.clone(), old.unit_id.clone(), sa.stop_grace_ms));
                        }
                    }
                    return true;
                }
                parallel(&sa.actions, |a| {
                    let Some(old) = a.old().filter(|o| o.running) else {
                        return true;
                    };
                    let _permit = self.sem.acquire();
                    let why = format!("blue-green switch to r{}", self.revision);
                    match self.stop_unit(&a.instance, &old.unit_id, sa.stop_grace_ms, &why) {
                        Ok(()) => {
                            let mut v = self.changed.lock().unwrap_or_else(|p| p.into_inner());
                            if let Some(c) = v.iter_mut().find(|c| c.instance == a.instance) {
                                c.old_stopped = true;
                            }
                            true
                        }
                        Err(e) => {
                            self.fail(&a.instance, &old.unit_id, e);
                            false
                        }
                    }
                })
            }
            Rollout::Canary {
                canary,
                analysis_ms,
            } => {
                let n = (*canary as usize).clamp(1, sa.actions.len());
                let (first, rest) = sa.actions.split_at(n);
                if !parallel(first, |a| self.change_instance(sa, a, Mode::StopFirst)) {
                    return false;
                }
                if !self.analyse(sa, first, *analysis_ms) {
                    return false;
                }
                parallel(rest, |a| self.change_instance(sa, a, Mode::StopFirst))
            }
        }
    }

    /// The canary analysis window: re-probes the canaries' health predicate every interval
    /// for `ms`; any failed probe fails the rollout.
    fn analyse(&self, sa: &ServiceActions, canaries: &[InstanceAction], ms: u64) -> bool {
        if ms == 0 || self.stopping() {
            return !self.stopping();
        }
        let units: Vec<UnitStatus> = {
            let v = self.changed.lock().unwrap_or_else(|p| p.into_inner());
            canaries
                .iter()
                .filter_map(|a| {
                    v.iter()
                        .rev()
                        .find(|c| c.instance == a.instance)
                        .and_then(|c| c.new_unit.clone())
                })
                .collect()
        };
        self.emit(Event::CanaryAnalysis {
            service: sa.service.clone(),
            instances: canaries.iter().map(|a| a.instance.clone()).collect(),
            ms,
        });
        let interval =
            Duration::from_millis(sa.health.as_ref().map_or(500, |h| h.interval_ms).max(10));
        let end = Instant::now() + Duration::from_millis(ms);
        let mut probes = 0u32;
        loop {
            for u in &units {
                let outcome = match &sa.health {
                    Some(h) => self.engine.provider.probe(u, h),
                    None => match self.engine.provider.list(&self.fleet) {
                        Ok(l)
                            if l.iter()
                                .any(|x| x.unit_id == u.unit_id && x.state.is_running()) =>
                        {
                            ProbeOutcome::healthy("running")
                        }
                        Ok(_) => ProbeOutcome::unhealthy("not running"),
                        Err(e) => ProbeOutcome::unhealthy(e.to_string()),
                    },
                };
                probes += 1;
                if !outcome.healthy {
                    let reason = format!("canary analysis failed: {}", outcome.detail);
                    self.emit(Event::GateFailed {
                        instance: u.instance.clone(),
                        unit: u.unit_id.clone(),
                        reason: reason.clone(),
                    });
                    self.audit(
                        format!("canary.analysis {}", sa.service),
                        AuditOutcome::Failed {
                            reason: reason.clone(),
                        },
                        json!({"unit": u.unit_id}),
                    );
                    self.fail(&u.instance, &u.unit_id, reason);
                    return false;
                }
            }
            if Instant::now() >= end {
                break;
            }
            let next = (Instant::now() + interval).min(end);
            while Instant::now() < next {
                if self.stopping() {
                    return false;
                }
                std::thread::sleep(
                    next.saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(50)),
                );
            }
        }
        self.audit(
            format!("canary.analysis {}", sa.service),
            AuditOutcome::Ok,
            json!({"ms": ms, "probes": probes}),
        );
        true
    }

    fn remove_all(&self, removals: &[Removal]) -> bool {
        // Services one after another (in the order given), the units of one in parallel.
        let mut groups: Vec<Vec<&Removal>> = Vec::new();
        for r in removals {
            match groups.last_mut() {
                Some(g) if g[0].service == r.service => g.push(r),
                _ => groups.push(vec![r]),
            }
        }
        for g in groups {
            if self.stopping() {
                return false;
            }
            let ok = parallel(&g, |r| {
                let _permit = self.sem.acquire();
                match self.stop_unit(&r.instance, &r.unit_id, r.stop_grace_ms, &r.reason) {
                    Ok(()) => true,
                    Err(e) => {
                        self.fail(&r.instance, &r.unit_id, e);
                        false
                    }
                }
            });
            if !ok {
                return false;
            }
        }
        true
    }

    /// Sleeps `d` in short slices; false (early) when the run is stopping.
    fn pause(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.stopping() {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }

    /// Runs a one-shot job to its end: each attempt starts its unit, waits for it to exit (at
    /// most the timeout; then it is stopped and the attempt failed), keeps the output's tail,
    /// and stops the unit; failed attempts are retried after the backoff. The outcome is
    /// recorded in the store for this revision. False when it failed: the wave fails, as with
    /// a failed gate.
    fn run_job(&self, ja: &JobAction) -> bool {
        if self.stopping() {
            return false;
        }
        let _permit = self.sem.acquire();
        if self.stopping() {
            return false;
        }
        let mut spec = ja.spec.clone();
        spec.revision = self.revision;
        let unit = spec.unit_id();
        let total = ja.settings.retries.saturating_add(1);
        let started = Instant::now();
        let mut attempts = 0;
        let mut last = Attempt {
            outcome: JobOutcome::Failed,
            exit_code: None,
            detail: "not run: the apply is stopping".into(),
            output: String::new(),
        };
        for attempt in 1..=total {
            if attempt > 1 && !self.pause(Duration::from_millis(ja.settings.delay_before(attempt)))
            {
                break;
            }
            attempts = attempt;
            self.emit(Event::JobStarted {
                job: ja.job.clone(),
                instance: ja.instance.clone(),
                unit: unit.clone(),
                attempt,
                of: total,
            });
            last = self.job_attempt(ja, &spec);
            if last.outcome == JobOutcome::Succeeded {
                break;
            }
            let retry_in_ms = (attempt < total && !self.stopping())
                .then(|| ja.settings.delay_before(attempt + 1));
            self.emit(Event::JobAttemptFailed {
                job: ja.job.clone(),
                instance: ja.instance.clone(),
                attempt,
                reason: last.detail.clone(),
                retry_in_ms,
            });
            if retry_in_ms.is_none() {
                break;
            }
        }
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let run = JobRun {
            job: ja.job.clone(),
            instance: ja.instance.clone(),
            revision: RevisionNumber(self.revision),
            fingerprint: ja.fingerprint.clone(),
            outcome: last.outcome,
            exit_code: last.exit_code,
            attempts,
            duration_ms: ms,
            detail: last.detail.clone(),
            output: std::mem::take(&mut last.output),
        };
        if attempts > 0 {
            match self.engine.store.record_job_run(&self.lock.lease(), &run) {
                Ok(_) => {}
                Err(e @ StateError::LockLost { .. }) => self.lock.mark_lost(e.to_string()),
                Err(e) => self.emit(Event::Warning {
                    message: format!(
                        "the run of job {} was not recorded: {}",
                        ja.instance,
                        crate::error::chain_text(&e)
                    ),
                }),
            }
        }
        self.emit(Event::JobFinished {
            job: ja.job.clone(),
            instance: ja.instance.clone(),
            outcome: run.outcome.as_str().into(),
            exit_code: run.exit_code,
            attempts,
            ms,
            detail: run.detail.clone(),
        });
        let detail = json!({
            "attempts": attempts, "exit_code": run.exit_code, "fingerprint": run.fingerprint,
            "ms": ms, "reason": ja.reason,
        });
        if run.outcome == JobOutcome::Succeeded {
            self.audit(format!("job {unit}"), AuditOutcome::Ok, detail);
            return true;
        }
        let reason = if attempts > 1 {
            format!("job failed after {attempts} attempts: {}", run.detail)
        } else {
            format!("job failed: {}", run.detail)
        };
        self.audit(
            format!("job {unit}"),
            AuditOutcome::Failed {
                reason: reason.clone(),
            },
            detail,
        );
        self.emit(Event::GateFailed {
            instance: ja.instance.clone(),
            unit: unit.clone(),
            reason: reason.clone(),
        });
        self.fail(&ja.instance, &unit, reason);
        false
    }

    /// One attempt of a job: start, wait for the exit or the timeout, keep the output, stop.
    fn job_attempt(&self, ja: &JobAction, spec: &UnitSpec) -> Attempt {
        let failed = |detail: String| Attempt {
            outcome: JobOutcome::Failed,
            exit_code: None,
            detail,
            output: String::new(),
        };
        let status = match self.start_unit(spec) {
            Ok(s) => s,
            Err(e) => return failed(e),
        };
        let timeout = ja.settings.timeout_ms;
        let deadline = Instant::now() + Duration::from_millis(timeout);
        let mut poll = Duration::from_millis(20);
        let mut last_error = None;
        let (outcome, exit_code, detail, seen) = loop {
            match self.engine.provider.list(&self.fleet) {
                Ok(list) => match list.into_iter().find(|u| u.unit_id == status.unit_id) {
                    Some(u) => match u.state {
                        UnitState::Running => {}
                        UnitState::Exited(0) => {
                            break (
                                JobOutcome::Succeeded,
                                Some(0),
                                "exited with code 0".into(),
                                u,
                            );
                        }
                        UnitState::Exited(c) => {
                            break (
                                JobOutcome::Failed,
                                Some(i64::from(c)),
                                format!("exited with code {c}"),
                                u,
                            );
                        }
                        UnitState::Failed | UnitState::Stopped => {
                            let d = u.detail.clone().unwrap_or_else(|| u.state.to_string());
                            break (JobOutcome::Failed, None, d, u);
                        }
                    },
                    None => {
                        break (
                            JobOutcome::Failed,
                            None,
                            "its unit vanished".into(),
                            status.clone(),
                        );
                    }
                },
                // Keep waiting through a provider that does not answer, up to the timeout.
                Err(e) => last_error = Some(e.to_string()),
            }
            let now = Instant::now();
            if now >= deadline {
                let mut d = format!("timed out after {}", human_ms(timeout));
                if let Some(e) = &last_error {
                    d.push_str(&format!(" (last error: {e})"));
                }
                break (JobOutcome::TimedOut, None, d, status.clone());
            }
            std::thread::sleep(poll.min(deadline - now));
            poll = (poll * 2).min(Duration::from_millis(250));
        };
        let output = self
            .engine
            .provider
            .output_tail(&seen, MAX_JOB_OUTPUT)
            .unwrap_or_default();
        // Done or overdue: stop the unit, which also removes its record.
        let why = match outcome {
            JobOutcome::TimedOut => "job timed out",
            _ => "job ended",
        };
        if let Err(e) = self.stop_unit(&ja.instance, &status.unit_id, ja.stop_grace_ms, why) {
            self.emit(Event::Warning { message: e });
        }
        Attempt {
            outcome,
            exit_code,
            detail,
            output,
        }
    }

    fn execute(&self, decision: &Decision) {
        if !self.remove_all(&decision.cleanup) {
            return;
        }
        for phase in &decision.phases {
            for wave in &phase.waves {
                if self.stopping() {
                    return;
                }
                self.emit(Event::WaveStarted {
                    phase: phase.phase,
                    wave: wave.wave,
                    services: wave
                        .services
                        .iter()
                        .map(|s| s.service.clone())
                        .chain(wave.jobs.iter().map(|j| j.job.clone()))
                        .chain(wave.reloads.iter().map(|r| r.service.clone()))
                        .collect(),
                    instances: wave.services.iter().map(|s| s.actions.len()).sum::<usize>()
                        + wave.jobs.len()
                        + wave.reloads.len(),
                });
                let steps: Vec<Step<'_>> = wave
                    .services
                    .iter()
                    .map(Step::Service)
                    .chain(wave.jobs.iter().map(Step::Job))
                    .chain(wave.reloads.iter().map(Step::Reload))
                    .collect();
                let ok = parallel(&steps, |step| match step {
                    Step::Service(sa) => self.run_service(sa),
                    Step::Job(ja) => self.run_job(ja),
                    Step::Reload(ra) => self.run_reload(ra),
                });
                if !ok || self.stopping() {
                    return;
                }
                self.emit(Event::WaveFinished {
                    phase: phase.phase,
                    wave: wave.wave,
                });
                self.audit(
                    format!("wave {}.{}", phase.phase, wave.wave),
                    AuditOutcome::Ok,
                    json!({
                        "services": wave.services.iter().map(|s| &s.service).collect::<Vec<_>>(),
                        "jobs": wave.jobs.iter().map(|j| &j.instance).collect::<Vec<_>>(),
                    }),
                );
            }
        }
        if !self.retire_blue() {
            return;
        }
        self.remove_all(&decision.removals);
    }

    /// Stops the old units of blue-green services kept until their users were re-bound.
    fn retire_blue(&self) -> bool {
        let units = std::mem::take(&mut *self.retiring.lock().unwrap_or_else(|p| p.into_inner()));
        parallel(&units, |(instance, unit, grace)| {
            let _permit = self.sem.acquire();
            let why = format!("blue-green switch to r{}", self.revision);
            match self.stop_unit(instance, unit, *grace, &why) {
                Ok(()) => {
                    let mut v = self.changed.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(c) = v.iter_mut().find(|c| c.instance == *instance) {
                        c.old_stopped = true;
                    }
                    true
                }
                Err(e) => {
                    self.fail(instance, unit, e);
                    false
                }
            }
        })
    }

    /// Reloads a running unit with new addresses: its `reload` command, filled in like a
    /// command check and run where the unit lives (through `Provider::probe`), then its gate.
    fn run_reload(&self, ra: &ReloadAction) -> bool {
        if self.stopping() {
            return false;
        }
        let _permit = self.sem.acquire();
        let mut spec = ra.spec.clone();
        // `@r0` in the action means the revision applied, not the reloaded unit's own.
        spec.bindings = crate::address::normalized(&spec.bindings, self.revision);
        let rendered = match self.render(&spec) {
            Ok(r) => r,
            Err(e) => {
                self.fail(&ra.instance, &ra.unit_id, e);
                return false;
            }
        };
        let status = match self.engine.provider.list(&self.fleet) {
            Ok(list) => list.into_iter().find(|u| u.unit_id == ra.unit_id),
            Err(e) => {
                self.fail(&ra.instance, &ra.unit_id, format!("cannot list units: {e}"));
                return false;
            }
        };
        let Some(status) = status else {
            self.fail(
                &ra.instance,
                &ra.unit_id,
                "the unit to reload is gone".into(),
            );
            return false;
        };
        let command = Health {
            checks: vec![phoenix_provider_api::HealthCheck::Command {
                argv: rendered.reload.clone(),
            }],
            timeout_ms: RELOAD_TIMEOUT_MS,
            interval_ms: RELOAD_TIMEOUT_MS,
        };
        let out = self.engine.provider.probe(&status, &command);
        self.audit(
            format!("unit.reload {}", ra.unit_id),
            if out.healthy {
                AuditOutcome::Ok
            } else {
                AuditOutcome::Failed {
                    reason: out.detail.clone(),
                }
            },
            json!({"reason": ra.reason, "detail": out.detail}),
        );
        if !out.healthy {
            self.fail(
                &ra.instance,
                &ra.unit_id,
                format!("reload failed: {}", out.detail),
            );
            return false;
        }
        let outcome = self.gate(&status, rendered.health.as_ref());
        if !outcome.healthy {
            self.fail(
                &ra.instance,
                &ra.unit_id,
                format!("health gate failed after reload: {}", outcome.detail),
            );
            return false;
        }
        self.emit(Event::GatePassed {
            instance: ra.instance.clone(),
            unit: ra.unit_id.clone(),
            detail: format!("reloaded: {}", outcome.detail),
            ms: 0,
        });
        true
    }

    /// After [`Run::rollback`]: runs the decision's rollback jobs (`hook: {rollback: S}`)
    /// whose `S` this run touched (an instance of it changed, or job `S` made an attempt), in
    /// order, each as `run_job` runs a job; the first that fails stops the others. The
    /// apply's failure stays the one that caused the rollback. One line per job run, and
    /// whether every one succeeded.
    fn rollback_jobs(&self, decision: &Decision) -> (Vec<String>, bool) {
        let changed: BTreeSet<String> = self
            .changed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|c| c.service.clone())
            .collect();
        let ran: BTreeSet<String> = match self.engine.store.job_runs(&self.fleet) {
            Ok(runs) => runs
                .into_iter()
                .filter(|r| r.run.revision.0 == self.revision)
                .map(|r| r.run.job)
                .collect(),
            Err(e) => {
                self.emit(Event::Warning {
                    message: format!(
                        "cannot read this apply's job runs; its rollback jobs do not run: {}",
                        crate::error::chain_text(&e)
                    ),
                });
                return (Vec::new(), decision.rollback_jobs.is_empty());
            }
        };
        let jobs = decision.rollback_jobs_after(&|s| changed.contains(s) || ran.contains(s));
        // `run_job` does nothing once the run is failing: lift that for these jobs only.
        self.failed.store(false, Ordering::SeqCst);
        let (mut lines, mut all_ok) = (Vec::new(), true);
        for ja in jobs {
            let ok = self.run_job(ja);
            all_ok &= ok;
            lines.push(format!(
                "{}: rollback job {}",
                ja.instance,
                if ok { "succeeded" } else { "failed" }
            ));
            if !ok {
                break;
            }
        }
        self.failed.store(true, Ordering::SeqCst);
        (lines, all_ok)
    }

    /// Undoes the changes made so far, newest first: stops new units, restores backups, and
    /// starts the replaced units again (gated). Returns one line per instance.
    fn rollback(&self, reason: &str) -> Vec<String> {
        let changed: Vec<Changed> = {
            let v = self.changed.lock().unwrap_or_else(|p| p.into_inner());
            v.iter().rev().cloned().collect()
        };
        self.emit(Event::RollbackStarted {
            reason: reason.into(),
            instances: changed.len(),
        });
        self.audit(
            "rollback.start".into(),
            AuditOutcome::Ok,
            json!({"reason": reason, "instances": changed.iter().map(|c| &c.instance).collect::<Vec<_>>()}),
        );
        let lines: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
        let indexed: Vec<(usize, &Changed)> = changed.iter().enumerate().collect();
        parallel(&indexed, |(i, c)| {
            let _permit = self.sem.acquire();
            let mut parts = Vec::new();
            if let Some(unit) = &c.new_unit_id {
                match self.stop_unit(&c.instance, unit, c.stop_grace_ms, "rollback") {
                    Ok(()) => parts.push(format!("stopped {unit}")),
                    Err(e) => parts.push(e),
                }
            }
            if let (Some(tag), Some(old)) = (&c.snapshot, &c.old) {
                match self.restore(&c.instance, &old.unit_id, tag) {
                    Ok(()) => parts.push(format!("restored backup {tag}")),
                    Err(e) => parts.push(e),
                }
            }
            match &c.old {
                Some(old) if old.running && c.old_stopped => match &old.spec {
                    Some(spec) => match self.start_unit(spec) {
                        Ok(status) => {
                            // The old unit is gated by its own check, not the new revision's.
                            let health = self.rendered_health(spec, spec.health.as_ref());
                            let outcome = self.gate(&status, health.as_ref());
                            if outcome.healthy {
                                // Recorded as running again, as a passed gate is in a rollout:
                                // readers of the store (`phoenix serve`) take health from it.
                                let _ = self.write(vec![Write::UpsertInstance(instance_state(
                                    &status,
                                    Some(&json!(spec.host.to_string())),
                                    self.engine.provider.endpoint_of(&spec.site, spec.host),
                                    DesiredState::Running,
                                    ObservedState::Running,
                                ))]);
                                parts.push(format!("restarted {} (healthy)", old.unit_id));
                            } else {
                                parts.push(format!(
                                    "restarted {} but it is not healthy: {}",
                                    old.unit_id, outcome.detail
                                ));
                            }
                        }
                        Err(e) => parts.push(format!("could not restart {}: {e}", old.unit_id)),
                    },
                    None => parts.push(format!(
                        "cannot restart {}: its revision's spec is unknown",
                        old.unit_id
                    )),
                },
                Some(old) if old.running => parts.push(format!("{} kept running", old.unit_id)),
                Some(old) => parts.push(format!("{} was not running before", old.unit_id)),
                None => parts.push("new instance removed".into()),
            }
            let line = format!("{}: {}", c.instance, parts.join(", "));
            self.emit(Event::InstanceRestored {
                instance: c.instance.clone(),
                detail: parts.join(", "),
            });
            self.audit(
                format!("rollback {}", c.instance),
                AuditOutcome::Ok,
                json!({"service": c.service, "detail": parts}),
            );
            lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((*i, line));
            true
        });
        let mut lines = lines.into_inner().unwrap_or_else(|p| p.into_inner());
        lines.sort();
        lines.into_iter().map(|(_, l)| l).collect()
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
    let observed = engine.observe(&desired.fleet, Some(desired), 1, parallelism)?;
    Ok(decide(desired, &observed, scope))
}
