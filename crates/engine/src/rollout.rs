//! The rollout as a pure state machine: what the executor does with a [`Decision`], written
//! like [`crate::decide`]. [`Rollout::step`] takes one [`Input`] (the run starts, a provider
//! or store call replied, a timer fired, the operator cancelled, the lock was lost) and the
//! current time, and returns [`Effect`]s as data: start, stop, snapshot, restore, probe,
//! write (intents and records), audit, emit an event, set a timer, finish. It performs no I/O,
//! reads no clock and spawns no thread; the driver ([`crate::driver`]) carries the effects out
//! and feeds the replies back, so every rollout can be tested step by step without a provider
//! and without sleeping.
//!
//! Shape of a run: stages in order (cleanup of duplicates, each wave of each phase, retiring
//! blue units kept for the last wave, removals, and — after a failure — rollback). A stage
//! has lanes that run side by side (a service's rollout, a job, a reload); a lane is a list of
//! batches run one after the other (a rolling batch, the canaries, the analysis window, the
//! rest); a batch is a set of tasks (one instance changed, one unit stopped, one job run, one
//! instance rolled back). At most `parallelism` tasks are in flight; the analysis window is
//! not a task of its own instance and takes no slot, as before.
//!
//! Architecture Invariant: every wait for health — the gate after a start, the canary
//! analysis window, the gate after a reload, the gate of a unit restarted by a rollback — is
//! one [`HealthWait`]: probe effects and a timer, never a loop that sleeps.

// Inputs, effects and task states carry unit specs by value: each is built once and moved
// once per step, a handful per instance, so boxing the large variants would add noise and no
// measurable gain.
#![allow(clippy::large_enum_variant)]

use crate::clock::Millis;
use crate::decide::{Decision, InstanceAction, JobAction, OldUnit, ReloadAction, Removal};
use crate::error::ExecError;
use crate::events::Event;
use crate::exec::Failure;
use crate::intent::IntentDetail;
use phoenix_audit::AuditOutcome;
use phoenix_provider_api::{Health, HealthCheck, ProbeOutcome, UnitSpec, UnitState, UnitStatus};
use phoenix_spec::Rollout as Strategy;
use phoenix_state::{
    IntentId, IntentOp, IntentOutcome, JobOutcome, JobRun, ObservedState, RevisionNumber, Written,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};

/// Names an effect that expects a reply.
pub type EffectId = u64;
/// Names a timer.
pub type TimerId = u64;

/// The delay before a unit without a health check is looked at: it passes once seen running.
pub const NO_CHECK_DELAY_MS: Millis = 100;
/// The budget of a `reload` command, run as one command-check attempt: the provider bounds an
/// attempt to `probe::MAX_ATTEMPT` (5 s) within it, so a reload must be quick (rewrite a file,
/// send a signal), not a restart.
pub const RELOAD_TIMEOUT_MS: u64 = 30_000;
/// The first and the longest pause between two looks at a running job.
const JOB_POLL_MS: (Millis, Millis) = (20, 250);

/// How a run is carried out.
#[derive(Debug, Clone)]
pub struct Options {
    /// The revision being applied.
    pub revision: u64,
    /// Tasks (instance steps) in flight at once.
    pub parallelism: usize,
    /// Roll the changed instances back when a step fails.
    pub rollback: bool,
}

/// A state write, as the rollout knows it; the driver fills in endpoints and handles.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A unit about to be started (observed `unknown`).
    Starting(UnitSpec),
    /// A unit the provider reported, placed on `site`/`host`.
    Unit {
        /// What the provider said.
        status: UnitStatus,
        /// Its site.
        site: String,
        /// Its host.
        host: u32,
        /// What is known of it.
        observed: ObservedState,
    },
    /// The record of a unit that is gone.
    Delete(String),
    /// An intent, before the operation.
    Intent {
        /// The operation.
        op: IntentOp,
        /// The unit.
        unit: String,
        /// What recovery needs.
        detail: IntentDetail,
    },
    /// An intent closed, after the operation.
    Close {
        /// The intent.
        id: IntentId,
        /// How it ended.
        outcome: IntentOutcome,
    },
}

/// What the machine asks the driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write `records` in one batch under the lease; reply [`Reply::Written`].
    Write {
        /// Reply to.
        id: EffectId,
        /// What to write.
        records: Vec<Record>,
    },
    /// Start a unit (its addresses filled in from the units that run now) and fill in the
    /// addresses of `gate`, its health check; reply [`Reply::UnitStarted`].
    Start {
        /// Reply to.
        id: EffectId,
        /// The unit.
        spec: UnitSpec,
        /// The check its gate uses.
        gate: Option<Health>,
    },
    /// Stop a unit; reply [`Reply::UnitStopped`].
    Stop {
        /// Reply to.
        id: EffectId,
        /// The unit.
        unit: String,
        /// Grace before it is killed.
        grace_ms: u64,
    },
    /// Snapshot an instance's backup paths; reply [`Reply::Snapshotted`].
    Snapshot {
        /// Reply to.
        id: EffectId,
        /// The instance.
        instance: String,
        /// Paths.
        paths: Vec<String>,
        /// Tag.
        tag: String,
    },
    /// Restore a snapshot; reply [`Reply::Restored`].
    Restore {
        /// Reply to.
        id: EffectId,
        /// The instance.
        instance: String,
        /// Tag.
        tag: String,
    },
    /// Probe a unit once: its check, or (none) whether it runs; reply [`Reply::Probed`].
    Probe {
        /// Reply to.
        id: EffectId,
        /// The unit.
        unit: UnitStatus,
        /// The check.
        health: Option<Health>,
    },
    /// Look a unit up in the provider's list; reply [`Reply::Inspected`].
    Inspect {
        /// Reply to.
        id: EffectId,
        /// The unit.
        unit: String,
    },
    /// Read the tail of a unit's output; reply [`Reply::Output`].
    OutputTail {
        /// Reply to.
        id: EffectId,
        /// The unit.
        unit: UnitStatus,
    },
    /// Fill in the addresses of a unit to reload and find it; reply [`Reply::Reloadable`].
    PrepareReload {
        /// Reply to.
        id: EffectId,
        /// The unit's spec with its new bindings.
        spec: UnitSpec,
        /// The running unit.
        unit: String,
    },
    /// Record the run of a job; reply [`Reply::JobRecorded`].
    RecordJobRun {
        /// Reply to.
        id: EffectId,
        /// The run.
        run: JobRun,
    },
    /// Write an audit record (no reply; a failure is a warning).
    Audit {
        /// Step name (`gate web-0@r2`, `wave 1.0`, ...).
        step: String,
        /// How it ended.
        outcome: AuditOutcome,
        /// Detail.
        detail: Value,
    },
    /// Report progress.
    Emit(Event),
    /// Fire [`Input::TimerFired`] at `at`.
    SetTimer {
        /// The timer.
        id: TimerId,
        /// When.
        at: Millis,
    },
    /// The run is over; nothing more will be asked.
    Finish(RunEnd),
}

/// How a run ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunEnd {
    /// The first failure.
    pub failure: Option<Failure>,
    /// What the rollback did, one line per instance (newest change first).
    pub restored: Vec<String>,
    /// Whether the run was cancelled.
    pub cancelled: bool,
    /// Whether the lock's lease was lost.
    pub lock_lost: bool,
}

/// A started unit and its gate's check with the addresses filled in.
#[derive(Debug)]
pub struct Started {
    /// The unit.
    pub status: UnitStatus,
    /// Its check.
    pub gate: Option<Health>,
}

/// A unit to reload: the running unit and its spec with the new addresses filled in.
#[derive(Debug)]
pub struct Reloadable {
    /// The unit.
    pub status: UnitStatus,
    /// Its filled-in spec.
    pub spec: UnitSpec,
}

/// The answer to an effect.
#[derive(Debug)]
pub enum Reply {
    /// To [`Effect::Write`].
    Written(Result<Vec<Written>, ExecError>),
    /// To [`Effect::Start`].
    UnitStarted(Result<Started, ExecError>),
    /// To [`Effect::Stop`].
    UnitStopped(Result<(), ExecError>),
    /// To [`Effect::Snapshot`].
    Snapshotted(Result<(), ExecError>),
    /// To [`Effect::Restore`].
    Restored(Result<(), ExecError>),
    /// To [`Effect::Probe`].
    Probed(ProbeOutcome),
    /// To [`Effect::Inspect`].
    Inspected(Result<Option<UnitStatus>, ExecError>),
    /// To [`Effect::OutputTail`].
    Output(String),
    /// To [`Effect::PrepareReload`].
    Reloadable(Result<Reloadable, ExecError>),
    /// To [`Effect::RecordJobRun`].
    JobRecorded(Result<(), ExecError>),
}

/// What the machine is told.
#[derive(Debug)]
pub enum Input {
    /// Begin.
    Started,
    /// An effect's reply.
    Reply(EffectId, Reply),
    /// A timer fired.
    TimerFired(TimerId),
    /// The operator cancelled: no new step starts, the steps in flight finish.
    Cancel,
    /// The deploy lock's lease was lost: stop as after a cancel, nothing is rolled back.
    LockLost,
}

/// One changed instance, as far as the run got: what a rollback must undo.
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
    /// Start and gate the new unit beside the old; a later batch stops the old ones.
    StartOnly,
}

/// What a task of a service needs of it.
#[derive(Debug, Clone)]
struct ServiceCtx {
    service: String,
    health: Option<Health>,
    stop_grace_ms: u64,
}

/// A task to launch.
#[derive(Debug, Clone)]
enum TaskSpec {
    Change {
        sa: ServiceCtx,
        action: InstanceAction,
        mode: Mode,
    },
    StopBlue {
        instance: String,
        unit: String,
        grace_ms: u64,
    },
    Remove(Removal),
    Job(JobAction),
    Reload(ReloadAction),
    Analysis {
        sa: ServiceCtx,
        instances: Vec<String>,
        ms: u64,
    },
    Rollback {
        index: usize,
        changed: Changed,
    },
}

impl TaskSpec {
    /// Whether the task takes one of the `parallelism` slots.
    fn pooled(&self) -> bool {
        !matches!(self, TaskSpec::Analysis { .. })
    }
}

/// One step of a lane.
#[derive(Debug, Clone)]
enum Batch {
    Tasks(Vec<TaskSpec>),
    /// Blue units kept until after the last wave: `(instance, unit, grace)`.
    Retire(Vec<(String, String, u64)>),
}

#[derive(Debug, Clone)]
enum StageKind {
    Cleanup,
    Wave {
        phase: u32,
        wave: usize,
        services: Vec<String>,
        jobs: Vec<String>,
        names: Vec<String>,
        instances: usize,
    },
    Retire,
    Removals,
    Rollback,
}

#[derive(Debug, Clone)]
struct Stage {
    kind: StageKind,
    lanes: Vec<VecDeque<Batch>>,
}

#[derive(Debug, Default)]
struct Lane {
    batches: VecDeque<Batch>,
    outstanding: usize,
}

type TaskId = u64;

/// What all tasks share: ids, the effects produced, the failure, the changed instances.
struct Core {
    revision: u64,
    now: Millis,
    next: u64,
    out: Vec<Effect>,
    waiting: BTreeMap<EffectId, TaskId>,
    timers: BTreeMap<TimerId, TaskId>,
    failure: Option<Failure>,
    failed: bool,
    cancelled: bool,
    lock_lost: bool,
    rolling_back: bool,
    changed: Vec<Changed>,
    retiring: Vec<(String, String, u64)>,
    restored: Vec<(usize, String)>,
}

impl Core {
    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Sends an effect that expects a reply for `task`.
    fn ask(&mut self, task: TaskId, make: impl FnOnce(EffectId) -> Effect) -> EffectId {
        let id = self.id();
        self.waiting.insert(id, task);
        self.out.push(make(id));
        id
    }

    fn timer(&mut self, task: TaskId, at: Millis) -> TimerId {
        let id = self.id();
        self.timers.insert(id, task);
        self.out.push(Effect::SetTimer { id, at });
        id
    }

    fn emit(&mut self, e: Event) {
        self.out.push(Effect::Emit(e));
    }

    fn audit(&mut self, step: String, outcome: AuditOutcome, detail: Value) {
        self.out.push(Effect::Audit {
            step,
            outcome,
            detail,
        });
    }

    fn warn(&mut self, message: String) {
        self.emit(Event::Warning { message });
    }

    /// Records the first failure; the run stops launching.
    fn fail(&mut self, instance: &str, unit: &str, reason: String) {
        // Also when cancelled: steps in flight run to their end, and one that fails then
        // failed for real.
        if self.failure.is_none() {
            self.failure = Some(Failure {
                instance: instance.into(),
                unit: unit.into(),
                reason,
            });
        }
        self.failed = true;
    }

    fn stopping(&self) -> bool {
        self.failed || self.cancelled || self.lock_lost
    }

    /// The text of a failed write; a lost lease stops the run.
    fn write_failed(&mut self, e: &ExecError) -> String {
        if e.is_lock_lost() {
            self.lock_lost = true;
            return e.to_string();
        }
        e.text()
    }
}

/// What a task is told.
enum Ev {
    Reply(Reply),
    Timer(TimerId),
    /// The run is stopping (sent after every input while it is).
    Stopping,
}

/// Whether a task is done.
enum Progress {
    Pending,
    Done,
}

// ---------------------------------------------------------------------------------------
// Guarded operations: intent, provider call, close.

#[derive(Debug, Clone)]
enum OpKind {
    Start {
        spec: UnitSpec,
        gate: Option<Health>,
    },
    Stop {
        instance: String,
        unit: String,
        grace_ms: u64,
        reason: String,
    },
    Snapshot {
        instance: String,
        unit: String,
        paths: Vec<String>,
        tag: String,
    },
    Restore {
        instance: String,
        unit: String,
        tag: String,
    },
}

/// How a guarded operation ended.
enum OpOut {
    Started(UnitStatus, Option<Health>),
    Done,
    Failed(String),
}

enum OpAt {
    Intent,
    Call(IntentId),
    /// The start failed: the unit is being stopped in case the provider created it.
    Cleanup(IntentId, String),
    Close(Box<OpOut>),
}

/// A provider operation announced by an intent before it happens and closed after.
struct Op {
    kind: OpKind,
    at: OpAt,
}

fn intent_id(written: &[Written]) -> Option<IntentId> {
    written.iter().find_map(|w| match w {
        Written::Intent(i) => Some(i.id),
        _ => None,
    })
}

/// The reason of a failed start: a spawn or spec error already says the unit cannot start
/// (naming the step again read "cannot start: cannot start unit `c-0@r3`: ...").
fn start_reason(e: &ExecError) -> String {
    use phoenix_provider_api::ProviderError;
    match e {
        ExecError::Provider(ProviderError::Spawn { .. } | ProviderError::InvalidSpec { .. }) => {
            e.to_string()
        }
        _ => format!("cannot start: {e}"),
    }
}

impl Op {
    fn begin(kind: OpKind, task: TaskId, cx: &mut Core) -> Op {
        let (op, unit, detail, pre) = match &kind {
            OpKind::Start { spec, .. } => {
                let unit = spec.unit_id();
                cx.emit(Event::UnitStarting {
                    instance: spec.instance.clone(),
                    unit: unit.clone(),
                });
                let detail = IntentDetail {
                    service: Some(spec.service.clone()),
                    site: Some(spec.site.clone()),
                    host: Some(spec.host),
                    stop_grace_ms: Some(spec.stop_grace_ms),
                    ..IntentDetail::default()
                };
                (
                    IntentOp::Start,
                    unit,
                    detail,
                    Some(Record::Starting(spec.clone())),
                )
            }
            OpKind::Stop {
                unit,
                grace_ms,
                reason,
                ..
            } => (
                IntentOp::Stop,
                unit.clone(),
                IntentDetail {
                    stop_grace_ms: Some(*grace_ms),
                    reason: Some(reason.clone()),
                    ..IntentDetail::default()
                },
                None,
            ),
            OpKind::Snapshot {
                unit, paths, tag, ..
            } => (
                IntentOp::Snapshot,
                unit.clone(),
                IntentDetail {
                    tag: Some(tag.clone()),
                    paths: paths.clone(),
                    ..IntentDetail::default()
                },
                None,
            ),
            OpKind::Restore { unit, tag, .. } => (
                IntentOp::Restore,
                unit.clone(),
                IntentDetail {
                    tag: Some(tag.clone()),
                    ..IntentDetail::default()
                },
                None,
            ),
        };
        let mut records: Vec<Record> = pre.into_iter().collect();
        records.push(Record::Intent { op, unit, detail });
        cx.ask(task, |id| Effect::Write { id, records });
        Op {
            kind,
            at: OpAt::Intent,
        }
    }

    fn unit(&self) -> String {
        match &self.kind {
            OpKind::Start { spec, .. } => spec.unit_id(),
            OpKind::Stop { unit, .. }
            | OpKind::Snapshot { unit, .. }
            | OpKind::Restore { unit, .. } => unit.clone(),
        }
    }

    /// Advances on a reply; `Some` when the operation is over.
    fn on(&mut self, reply: Reply, task: TaskId, cx: &mut Core) -> Option<OpOut> {
        let unit = self.unit();
        match (std::mem::replace(&mut self.at, OpAt::Intent), reply) {
            (OpAt::Intent, Reply::Written(Ok(w))) => {
                let Some(intent) = intent_id(&w) else {
                    return Some(OpOut::Failed(ExecError::NoIntentId { unit }.to_string()));
                };
                self.at = OpAt::Call(intent);
                match &self.kind {
                    OpKind::Start { spec, gate } => {
                        let (spec, gate) = (spec.clone(), gate.clone());
                        cx.ask(task, |id| Effect::Start { id, spec, gate })
                    }
                    OpKind::Stop { unit, grace_ms, .. } => {
                        let (unit, grace_ms) = (unit.clone(), *grace_ms);
                        cx.ask(task, |id| Effect::Stop { id, unit, grace_ms })
                    }
                    OpKind::Snapshot {
                        instance,
                        paths,
                        tag,
                        ..
                    } => {
                        let (instance, paths, tag) = (instance.clone(), paths.clone(), tag.clone());
                        cx.ask(task, |id| Effect::Snapshot {
                            id,
                            instance,
                            paths,
                            tag,
                        })
                    }
                    OpKind::Restore { instance, tag, .. } => {
                        let (instance, tag) = (instance.clone(), tag.clone());
                        cx.ask(task, |id| Effect::Restore { id, instance, tag })
                    }
                };
                None
            }
            (OpAt::Intent | OpAt::Close(_) | OpAt::Cleanup(..), Reply::Written(Err(e))) => {
                Some(OpOut::Failed(cx.write_failed(&e)))
            }
            (OpAt::Call(intent), Reply::UnitStarted(Ok(started))) => {
                let OpKind::Start { spec, .. } = &self.kind else {
                    return Some(OpOut::Failed("unexpected reply".into()));
                };
                let records = vec![
                    Record::Unit {
                        status: started.status.clone(),
                        site: spec.site.clone(),
                        host: spec.host,
                        observed: ObservedState::Starting,
                    },
                    Record::Close {
                        id: intent,
                        outcome: IntentOutcome::Done,
                    },
                ];
                cx.ask(task, |id| Effect::Write { id, records });
                self.at = OpAt::Close(Box::new(OpOut::Started(started.status, started.gate)));
                None
            }
            (OpAt::Call(intent), Reply::UnitStarted(Err(e))) => {
                let reason = start_reason(&e);
                let grace_ms = match &self.kind {
                    OpKind::Start { spec, .. } => spec.stop_grace_ms,
                    _ => 0,
                };
                // The provider may have created the unit before failing; make sure it is gone.
                let u = unit.clone();
                cx.ask(task, |id| Effect::Stop {
                    id,
                    unit: u,
                    grace_ms,
                });
                self.at = OpAt::Cleanup(intent, reason);
                None
            }
            (OpAt::Cleanup(intent, reason), Reply::UnitStopped(_)) => {
                let records = vec![
                    Record::Delete(unit.clone()),
                    Record::Close {
                        id: intent,
                        outcome: IntentOutcome::Failed {
                            reason: reason.clone(),
                        },
                    },
                ];
                cx.ask(task, |id| Effect::Write { id, records });
                self.at = OpAt::Close(Box::new(OpOut::Failed(reason)));
                None
            }
            (OpAt::Call(intent), Reply::UnitStopped(Ok(()))) => {
                let records = vec![
                    Record::Delete(unit.clone()),
                    Record::Close {
                        id: intent,
                        outcome: IntentOutcome::Done,
                    },
                ];
                cx.ask(task, |id| Effect::Write { id, records });
                self.at = OpAt::Close(Box::new(OpOut::Done));
                None
            }
            (OpAt::Call(_), Reply::UnitStopped(Err(e))) => {
                // Leave the intent open: the next apply stops again.
                let msg = match &e {
                    // Already "cannot stop unit `web-0@r1`: ...".
                    ExecError::Provider(phoenix_provider_api::ProviderError::Stop { .. }) => {
                        e.to_string()
                    }
                    _ => format!("cannot stop {unit}: {e}"),
                };
                cx.audit(
                    format!("unit.stop {unit}"),
                    AuditOutcome::Failed {
                        reason: msg.clone(),
                    },
                    Value::Null,
                );
                cx.warn(msg.clone());
                Some(OpOut::Failed(msg))
            }
            (OpAt::Call(intent), Reply::Snapshotted(r) | Reply::Restored(r)) => {
                let outcome = match &r {
                    Ok(()) => IntentOutcome::Done,
                    Err(e) => IntentOutcome::Failed {
                        reason: e.to_string(),
                    },
                };
                let records = vec![Record::Close {
                    id: intent,
                    outcome,
                }];
                cx.ask(task, |id| Effect::Write { id, records });
                self.at = OpAt::Close(Box::new(match r {
                    Ok(()) => OpOut::Done,
                    Err(e) => OpOut::Failed(e.to_string()),
                }));
                None
            }
            (OpAt::Close(out), Reply::Written(Ok(_))) => Some(self.closed(*out, cx)),
            (at, _) => {
                // A reply of another kind than asked for: the driver's bug; keep waiting.
                self.at = at;
                None
            }
        }
    }

    /// The audit records and events of a closed operation.
    fn closed(&self, out: OpOut, cx: &mut Core) -> OpOut {
        match (&self.kind, out) {
            (OpKind::Start { spec, .. }, OpOut::Started(status, gate)) => {
                let unit = spec.unit_id();
                cx.emit(Event::UnitStarted {
                    instance: spec.instance.clone(),
                    unit: unit.clone(),
                    pid: status.pid,
                    ports: status.ports.clone(),
                });
                cx.audit(
                    format!("unit.start {unit}"),
                    AuditOutcome::Ok,
                    json!({"pid": status.pid, "ports": status.ports}),
                );
                OpOut::Started(status, gate)
            }
            (OpKind::Start { spec, .. }, OpOut::Failed(reason)) => {
                cx.audit(
                    format!("unit.start {}", spec.unit_id()),
                    AuditOutcome::Failed {
                        reason: reason.clone(),
                    },
                    Value::Null,
                );
                OpOut::Failed(reason)
            }
            (
                OpKind::Stop {
                    instance,
                    unit,
                    reason,
                    ..
                },
                out,
            ) => {
                cx.emit(Event::UnitStopped {
                    instance: instance.clone(),
                    unit: unit.clone(),
                    reason: reason.clone(),
                });
                cx.audit(
                    format!("unit.stop {unit}"),
                    AuditOutcome::Ok,
                    json!({ "reason": reason }),
                );
                out
            }
            (
                OpKind::Snapshot {
                    instance,
                    paths,
                    tag,
                    ..
                },
                out,
            ) => {
                cx.audit(
                    format!("backup.snapshot {instance}"),
                    audit_outcome(&out),
                    json!({"tag": tag, "paths": paths}),
                );
                match out {
                    OpOut::Failed(e) => OpOut::Failed(format!("backup of {instance} failed: {e}")),
                    out => {
                        cx.emit(Event::Snapshot {
                            instance: instance.clone(),
                            tag: tag.clone(),
                        });
                        out
                    }
                }
            }
            (OpKind::Restore { instance, tag, .. }, out) => {
                cx.audit(
                    format!("backup.restore {instance}"),
                    audit_outcome(&out),
                    json!({"tag": tag}),
                );
                match out {
                    OpOut::Failed(e) => OpOut::Failed(format!("restore of {instance} failed: {e}")),
                    out => {
                        cx.emit(Event::Restored {
                            instance: instance.clone(),
                            tag: tag.clone(),
                        });
                        out
                    }
                }
            }
            (_, out) => out,
        }
    }
}

fn audit_outcome(out: &OpOut) -> AuditOutcome {
    match out {
        OpOut::Failed(reason) => AuditOutcome::Failed {
            reason: reason.clone(),
        },
        _ => AuditOutcome::Ok,
    }
}

// ---------------------------------------------------------------------------------------
// The one health-wait.

/// How long a [`HealthWait`] lasts.
#[derive(Debug, Clone, Copy)]
enum WaitKind {
    /// A gate: until a probe passes, at most until `deadline`.
    UntilHealthy { deadline: Millis },
    /// A window: every probe must pass until `end`.
    Throughout { end: Millis },
}

/// How a wait ended.
enum WaitOut {
    /// The gate passed with this probe.
    Healthy(ProbeOutcome),
    /// The window passed after `probes` probes.
    Passed { probes: u32 },
    /// Unit `unit` (an index) failed: `detail`.
    Unhealthy { unit: usize, detail: String },
    /// The window was cut short by the run stopping.
    Aborted,
}

/// Probes units every interval until healthy or the timeout (a gate), or throughout a window
/// (canary analysis). A unit without a check is looked at once after [`NO_CHECK_DELAY_MS`]
/// (gate) or each interval (window): it passes when it runs.
struct HealthWait {
    units: Vec<UnitStatus>,
    health: Option<Health>,
    kind: WaitKind,
    interval: Millis,
    round_at: Millis,
    pending: BTreeMap<EffectId, usize>,
    results: Vec<Option<ProbeOutcome>>,
    probes: u32,
    timer: Option<TimerId>,
}

impl HealthWait {
    /// A health gate of one unit.
    fn gate(unit: UnitStatus, health: Option<Health>, task: TaskId, cx: &mut Core) -> Self {
        let now = cx.now;
        let (deadline, interval) = match &health {
            Some(h) => (now.saturating_add(h.timeout_ms), h.interval_ms.max(10)),
            None => (now.saturating_add(NO_CHECK_DELAY_MS), NO_CHECK_DELAY_MS),
        };
        let mut w = HealthWait {
            units: vec![unit],
            health,
            kind: WaitKind::UntilHealthy { deadline },
            interval,
            round_at: now,
            pending: BTreeMap::new(),
            results: vec![None],
            probes: 0,
            timer: None,
        };
        if w.health.is_some() {
            w.round(task, cx);
        } else {
            w.timer = Some(cx.timer(task, deadline));
        }
        w
    }

    /// An analysis window of `ms` over `units`.
    fn window(
        units: Vec<UnitStatus>,
        health: Option<Health>,
        ms: u64,
        task: TaskId,
        cx: &mut Core,
    ) -> Self {
        let interval = health.as_ref().map_or(500, |h| h.interval_ms).max(10);
        let n = units.len();
        let mut w = HealthWait {
            units,
            health,
            kind: WaitKind::Throughout {
                end: cx.now.saturating_add(ms),
            },
            interval,
            round_at: cx.now,
            pending: BTreeMap::new(),
            results: vec![None; n],
            probes: 0,
            timer: None,
        };
        w.round(task, cx);
        w
    }

    /// Probes every unit once.
    fn round(&mut self, task: TaskId, cx: &mut Core) {
        self.round_at = cx.now;
        self.timer = None;
        for (i, u) in self.units.iter().enumerate() {
            self.results[i] = None;
            let (unit, health) = (u.clone(), self.health.clone());
            let id = cx.ask(task, |id| Effect::Probe { id, unit, health });
            self.pending.insert(id, i);
        }
    }

    fn on_timer(&mut self, timer: TimerId, task: TaskId, cx: &mut Core) -> Option<WaitOut> {
        if self.timer == Some(timer) {
            self.round(task, cx);
        }
        None
    }

    fn on_probe(
        &mut self,
        id: EffectId,
        outcome: ProbeOutcome,
        task: TaskId,
        cx: &mut Core,
    ) -> Option<WaitOut> {
        let i = self.pending.remove(&id)?;
        self.probes += 1;
        self.results[i] = Some(outcome);
        if !self.pending.is_empty() {
            return None;
        }
        let now = cx.now;
        match self.kind {
            WaitKind::UntilHealthy { deadline } => {
                let o = self.results[0].take()?;
                if o.healthy {
                    return Some(WaitOut::Healthy(o));
                }
                match &self.health {
                    None => Some(WaitOut::Unhealthy {
                        unit: 0,
                        detail: o.detail,
                    }),
                    Some(h) if now >= deadline => Some(WaitOut::Unhealthy {
                        unit: 0,
                        detail: format!("not healthy after {} ms: {}", h.timeout_ms, o.detail),
                    }),
                    Some(_) => {
                        let at = self.round_at.saturating_add(self.interval).min(deadline);
                        self.timer = Some(cx.timer(task, at.max(now)));
                        None
                    }
                }
            }
            WaitKind::Throughout { end } => {
                if let Some((unit, o)) = self
                    .results
                    .iter()
                    .enumerate()
                    .find_map(|(i, o)| o.as_ref().filter(|o| !o.healthy).map(|o| (i, o)))
                {
                    return Some(WaitOut::Unhealthy {
                        unit,
                        detail: o.detail.clone(),
                    });
                }
                if now >= end {
                    return Some(WaitOut::Passed {
                        probes: self.probes,
                    });
                }
                self.timer = Some(cx.timer(task, now.saturating_add(self.interval).min(end)));
                None
            }
        }
    }

    /// A gate runs to its end when the run stops (the unit has been started, and abandoning
    /// its gate left it running unverified while Ctrl-C promised to finish the steps in
    /// flight); a window is cut short.
    fn on_stopping(&mut self) -> Option<WaitOut> {
        match self.kind {
            WaitKind::UntilHealthy { .. } => None,
            WaitKind::Throughout { .. } => Some(WaitOut::Aborted),
        }
    }

    fn on(&mut self, ev: Ev, task: TaskId, cx: &mut Core, id: EffectId) -> Option<WaitOut> {
        match ev {
            Ev::Reply(Reply::Probed(o)) => self.on_probe(id, o, task, cx),
            Ev::Timer(t) => self.on_timer(t, task, cx),
            Ev::Stopping => self.on_stopping(),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tasks.

enum ChangeAt {
    Snapshot(Op),
    StopOld(Op, bool),
    Start(Op),
    Gate(HealthWait, UnitStatus, Millis),
    Record(ProbeOutcome, Millis),
    Done,
}

struct ChangeTask {
    sa: ServiceCtx,
    action: InstanceAction,
    mode: Mode,
    spec: UnitSpec,
    unit: String,
    idx: usize,
    at: ChangeAt,
}

struct StopTask {
    instance: String,
    unit: String,
    /// Blue units: mark the changed instance's old unit stopped.
    blue: bool,
    op: Op,
}

/// How one attempt of a job ended.
#[derive(Debug, Clone)]
struct Attempt {
    outcome: JobOutcome,
    exit_code: Option<i64>,
    detail: String,
    output: String,
}

enum JobAt {
    Backoff(TimerId, u32),
    Start(Op),
    Poll {
        status: UnitStatus,
        deadline: Millis,
        poll: Millis,
        last_error: Option<String>,
        timer: Option<TimerId>,
    },
    Output(UnitStatus, Attempt),
    Stop(Op, Attempt),
    Record(JobRun),
    Done,
}

struct JobTask {
    ja: JobAction,
    spec: UnitSpec,
    unit: String,
    total: u32,
    started_at: Millis,
    attempts: u32,
    last: Attempt,
    at: JobAt,
}

enum ReloadAt {
    Prepare,
    Command(Reloadable),
    Gate(HealthWait),
    Done,
}

struct ReloadTask {
    ra: ReloadAction,
    at: ReloadAt,
}

struct AnalysisTask {
    sa: ServiceCtx,
    ms: u64,
    wait: HealthWait,
}

enum RollbackAt {
    StopNew(Op),
    Restore(Op),
    Start(Op),
    Gate(HealthWait, UnitStatus, UnitSpec),
    Record(String),
    Done,
}

struct RollbackTask {
    index: usize,
    c: Changed,
    parts: Vec<String>,
    at: RollbackAt,
}

enum TaskKind {
    Change(Box<ChangeTask>),
    Stop(Box<StopTask>),
    Job(Box<JobTask>),
    Reload(Box<ReloadTask>),
    Analysis(Box<AnalysisTask>),
    Rollback(Box<RollbackTask>),
}

struct Task {
    lane: usize,
    pooled: bool,
    kind: TaskKind,
}

/// The rollout of one decision.
pub struct Rollout {
    opts: Options,
    core: Core,
    stages: VecDeque<Stage>,
    current: Option<StageKind>,
    lanes: Vec<Lane>,
    queue: VecDeque<(usize, TaskSpec)>,
    tasks: BTreeMap<TaskId, Task>,
    in_pool: usize,
    finished: bool,
}

impl Rollout {
    /// The rollout of `decision` for revision `opts.revision`. Nothing happens until
    /// [`Input::Started`].
    pub fn new(decision: &Decision, opts: Options) -> Self {
        let revision = opts.revision;
        let mut stages = VecDeque::new();
        stages.push_back(removal_stage(StageKind::Cleanup, &decision.cleanup));
        for phase in &decision.phases {
            for wave in &phase.waves {
                let mut lanes: Vec<VecDeque<Batch>> = wave
                    .services
                    .iter()
                    .map(|sa| service_batches(sa, decision.retire_last.contains(&sa.service)))
                    .collect();
                lanes.extend(
                    wave.jobs
                        .iter()
                        .map(|j| VecDeque::from([Batch::Tasks(vec![TaskSpec::Job(j.clone())])])),
                );
                lanes.extend(
                    wave.reloads
                        .iter()
                        .map(|r| VecDeque::from([Batch::Tasks(vec![TaskSpec::Reload(r.clone())])])),
                );
                stages.push_back(Stage {
                    kind: StageKind::Wave {
                        phase: phase.phase,
                        wave: wave.wave,
                        services: wave.services.iter().map(|s| s.service.clone()).collect(),
                        jobs: wave.jobs.iter().map(|j| j.instance.clone()).collect(),
                        names: wave
                            .services
                            .iter()
                            .map(|s| s.service.clone())
                            .chain(wave.jobs.iter().map(|j| j.job.clone()))
                            .chain(wave.reloads.iter().map(|r| r.service.clone()))
                            .collect(),
                        instances: wave.services.iter().map(|s| s.actions.len()).sum::<usize>()
                            + wave.jobs.len()
                            + wave.reloads.len(),
                    },
                    lanes,
                });
            }
        }
        stages.push_back(Stage {
            kind: StageKind::Retire,
            lanes: Vec::new(),
        });
        stages.push_back(removal_stage(StageKind::Removals, &decision.removals));
        Rollout {
            core: Core {
                revision,
                now: 0,
                next: 0,
                out: Vec::new(),
                waiting: BTreeMap::new(),
                timers: BTreeMap::new(),
                failure: None,
                failed: false,
                cancelled: false,
                lock_lost: false,
                rolling_back: false,
                changed: Vec::new(),
                retiring: Vec::new(),
                restored: Vec::new(),
            },
            opts,
            stages,
            current: None,
            lanes: Vec::new(),
            queue: VecDeque::new(),
            tasks: BTreeMap::new(),
            in_pool: 0,
            finished: false,
        }
    }

    /// Whether [`Effect::Finish`] was returned.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Tasks in flight that take a slot (at most `parallelism`).
    pub fn in_flight(&self) -> usize {
        self.in_pool
    }

    /// Advances the run by one input at time `now`; returns what to do.
    pub fn step(&mut self, input: Input, now: Millis) -> Vec<Effect> {
        if self.finished {
            return Vec::new();
        }
        self.core.now = self.core.now.max(now);
        match input {
            Input::Started => {}
            Input::Cancel => self.core.cancelled = true,
            Input::LockLost => self.core.lock_lost = true,
            Input::Reply(id, reply) => {
                if let Some(task) = self.core.waiting.remove(&id) {
                    self.deliver(task, Ev::Reply(reply), id);
                }
            }
            Input::TimerFired(t) => {
                if let Some(task) = self.core.timers.remove(&t) {
                    self.deliver(task, Ev::Timer(t), 0);
                }
            }
        }
        self.pump();
        std::mem::take(&mut self.core.out)
    }

    /// Ends the run as it stands (the driver found it waiting for nothing: a bug).
    pub fn abandon(&mut self, why: &str) -> RunEnd {
        self.finished = true;
        if self.core.failure.is_none() {
            self.core.failure = Some(Failure {
                instance: String::new(),
                unit: String::new(),
                reason: why.into(),
            });
        }
        self.end()
    }

    fn end(&mut self) -> RunEnd {
        let mut restored = std::mem::take(&mut self.core.restored);
        restored.sort();
        RunEnd {
            failure: self.core.failure.clone(),
            restored: restored.into_iter().map(|(_, l)| l).collect(),
            cancelled: self.core.cancelled,
            lock_lost: self.core.lock_lost,
        }
    }

    fn deliver(&mut self, id: TaskId, ev: Ev, effect: EffectId) {
        let Some(mut task) = self.tasks.remove(&id) else {
            return;
        };
        match task.kind.on(ev, id, &mut self.core, effect) {
            Progress::Pending => {
                self.tasks.insert(id, task);
            }
            Progress::Done => {
                if task.pooled {
                    self.in_pool = self.in_pool.saturating_sub(1);
                }
                if let Some(l) = self.lanes.get_mut(task.lane) {
                    l.outstanding = l.outstanding.saturating_sub(1);
                }
            }
        }
    }

    /// After every input: tell tasks the run stops, launch what may start, advance lanes and
    /// stages, finish.
    fn pump(&mut self) {
        // Bounded: each round launches a task, advances a lane or a stage, or returns.
        let bound = 4 + 4 * (self.stages.len() + self.queue.len() + self.lanes.len());
        let mut rounds = 0usize;
        loop {
            rounds += 1;
            if rounds > bound.saturating_mul(64).max(100_000) {
                return;
            }
            let halting = self.core.stopping() && !self.core.rolling_back;
            if halting {
                self.queue.clear();
                let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
                for id in ids {
                    self.deliver(id, Ev::Stopping, 0);
                }
                if self.tasks.is_empty() {
                    if self.start_rollback() {
                        continue;
                    }
                    return self.finish();
                }
                return;
            }
            // Launch queued tasks while slots are free.
            while self.in_pool < self.opts.parallelism.max(1) {
                let Some((lane, spec)) = self.queue.pop_front() else {
                    break;
                };
                self.launch(lane, spec);
            }
            if self.core.stopping() && !self.core.rolling_back {
                continue;
            }
            // Lanes whose batch is done take their next one.
            let mut advanced = false;
            for lane in 0..self.lanes.len() {
                if self.lanes[lane].outstanding > 0 {
                    continue;
                }
                let Some(batch) = self.lanes[lane].batches.pop_front() else {
                    continue;
                };
                advanced = true;
                match batch {
                    Batch::Tasks(specs) => {
                        self.lanes[lane].outstanding = specs.len();
                        for spec in specs {
                            if spec.pooled() {
                                self.queue.push_back((lane, spec));
                            } else {
                                self.launch(lane, spec);
                            }
                        }
                    }
                    Batch::Retire(units) => self.core.retiring.extend(units),
                }
            }
            if advanced {
                continue;
            }
            let busy = !self.tasks.is_empty()
                || !self.queue.is_empty()
                || self
                    .lanes
                    .iter()
                    .any(|l| l.outstanding > 0 || !l.batches.is_empty());
            if busy {
                return;
            }
            // The stage is complete.
            if let Some(kind) = self.current.take() {
                self.stage_done(&kind);
                if matches!(kind, StageKind::Rollback) {
                    return self.finish();
                }
            }
            match self.stages.pop_front() {
                Some(stage) => self.stage_begin(stage),
                None => return self.finish(),
            }
        }
    }

    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let end = self.end();
        self.core.out.push(Effect::Finish(end));
    }

    /// After a failure (not a cancel, not a lost lock): the rollback stage, once.
    fn start_rollback(&mut self) -> bool {
        if !self.opts.rollback
            || self.core.rolling_back
            || self.core.cancelled
            || self.core.lock_lost
            || self.core.failure.is_none()
        {
            return false;
        }
        self.core.rolling_back = true;
        self.stages.clear();
        self.lanes.clear();
        self.current = None;
        let reason = self
            .core
            .failure
            .as_ref()
            .map(|f| f.reason.clone())
            .unwrap_or_default();
        let changed: Vec<Changed> = self.core.changed.iter().rev().cloned().collect();
        self.core.emit(Event::RollbackStarted {
            reason: reason.clone(),
            instances: changed.len(),
        });
        self.core.audit(
            "rollback.start".into(),
            AuditOutcome::Ok,
            json!({"reason": reason, "instances": changed.iter().map(|c| &c.instance).collect::<Vec<_>>()}),
        );
        let tasks = changed
            .into_iter()
            .enumerate()
            .map(|(index, changed)| TaskSpec::Rollback { index, changed })
            .collect();
        self.stages.push_back(Stage {
            kind: StageKind::Rollback,
            lanes: vec![VecDeque::from([Batch::Tasks(tasks)])],
        });
        true
    }

    fn stage_begin(&mut self, stage: Stage) {
        let mut lanes = stage.lanes;
        match &stage.kind {
            StageKind::Wave {
                phase,
                wave,
                names,
                instances,
                ..
            } => self.core.emit(Event::WaveStarted {
                phase: *phase,
                wave: *wave,
                services: names.clone(),
                instances: *instances,
            }),
            StageKind::Retire => {
                let units = std::mem::take(&mut self.core.retiring);
                lanes = vec![VecDeque::from([Batch::Tasks(
                    units
                        .into_iter()
                        .map(|(instance, unit, grace_ms)| TaskSpec::StopBlue {
                            instance,
                            unit,
                            grace_ms,
                        })
                        .collect(),
                )])];
            }
            _ => {}
        }
        self.lanes = lanes
            .into_iter()
            .map(|batches| Lane {
                batches,
                outstanding: 0,
            })
            .collect();
        self.current = Some(stage.kind);
    }

    fn stage_done(&mut self, kind: &StageKind) {
        if let StageKind::Wave {
            phase,
            wave,
            services,
            jobs,
            ..
        } = kind
        {
            self.core.emit(Event::WaveFinished {
                phase: *phase,
                wave: *wave,
            });
            self.core.audit(
                format!("wave {phase}.{wave}"),
                AuditOutcome::Ok,
                json!({ "services": services, "jobs": jobs }),
            );
        }
    }

    fn launch(&mut self, lane: usize, spec: TaskSpec) {
        let id = self.core.id();
        let pooled = spec.pooled();
        let cx = &mut self.core;
        let kind = match spec {
            TaskSpec::Change { sa, action, mode } => TaskKind::change(sa, action, mode, id, cx),
            TaskSpec::StopBlue {
                instance,
                unit,
                grace_ms,
            } => {
                let reason = format!("blue-green switch to r{}", cx.revision);
                TaskKind::stop(instance, unit, grace_ms, reason, true, id, cx)
            }
            TaskSpec::Remove(r) => TaskKind::stop(
                r.instance,
                r.unit_id,
                r.stop_grace_ms,
                r.reason,
                false,
                id,
                cx,
            ),
            TaskSpec::Job(ja) => TaskKind::job(ja, id, cx),
            TaskSpec::Reload(ra) => TaskKind::reload(ra, id, cx),
            TaskSpec::Analysis { sa, instances, ms } => {
                TaskKind::analysis(sa, instances, ms, id, cx)
            }
            TaskSpec::Rollback { index, changed } => TaskKind::rollback(index, changed, id, cx),
        };
        match kind {
            Some(kind) => {
                if pooled {
                    self.in_pool += 1;
                }
                self.tasks.insert(id, Task { lane, pooled, kind });
            }
            None => {
                if let Some(l) = self.lanes.get_mut(lane) {
                    l.outstanding = l.outstanding.saturating_sub(1);
                }
            }
        }
    }
}

/// Stops, services one after another in the order given, the units of one side by side.
fn removal_stage(kind: StageKind, removals: &[Removal]) -> Stage {
    let mut batches: VecDeque<Batch> = VecDeque::new();
    let mut last: Option<&str> = None;
    for r in removals {
        match batches.back_mut() {
            Some(Batch::Tasks(g)) if last == Some(r.service.as_str()) => {
                g.push(TaskSpec::Remove(r.clone()))
            }
            _ => batches.push_back(Batch::Tasks(vec![TaskSpec::Remove(r.clone())])),
        }
        last = Some(&r.service);
    }
    Stage {
        kind,
        lanes: vec![batches],
    }
}

/// The batches of a service's rollout.
fn service_batches(sa: &crate::decide::ServiceActions, retire_last: bool) -> VecDeque<Batch> {
    let ctx = ServiceCtx {
        service: sa.service.clone(),
        health: sa.health.clone(),
        stop_grace_ms: sa.stop_grace_ms,
    };
    let change = |a: &InstanceAction, mode: Mode| TaskSpec::Change {
        sa: ctx.clone(),
        action: a.clone(),
        mode,
    };
    let mut out = VecDeque::new();
    match &sa.rollout {
        Strategy::Rolling {
            max_unavailable,
            max_surge,
        } => {
            let surge = *max_surge as usize;
            let batch = (surge + *max_unavailable as usize).max(1);
            // New instances take nothing down: start them all at once. Replacements go
            // `max_unavailable + max_surge` at a time, the first `max_surge` of each beside
            // their old unit.
            let (creates, replaces): (Vec<&InstanceAction>, Vec<&InstanceAction>) =
                sa.actions.iter().partition(|a| a.old().is_none());
            out.push_back(Batch::Tasks(
                creates.iter().map(|a| change(a, Mode::StopFirst)).collect(),
            ));
            for chunk in replaces.chunks(batch) {
                out.push_back(Batch::Tasks(
                    chunk
                        .iter()
                        .enumerate()
                        .map(|(i, a)| {
                            change(
                                a,
                                if i < surge {
                                    Mode::Surge
                                } else {
                                    Mode::StopFirst
                                },
                            )
                        })
                        .collect(),
                ));
            }
        }
        Strategy::BlueGreen => {
            out.push_back(Batch::Tasks(
                sa.actions
                    .iter()
                    .map(|a| change(a, Mode::StartOnly))
                    .collect(),
            ));
            // Green is healthy everywhere: retire blue, or once the users of its addresses
            // have moved to green (after the last wave).
            let blue: Vec<(String, String, u64)> = sa
                .actions
                .iter()
                .filter_map(|a| {
                    a.old()
                        .filter(|o| o.running)
                        .map(|o| (a.instance.clone(), o.unit_id.clone(), sa.stop_grace_ms))
                })
                .collect();
            if retire_last {
                out.push_back(Batch::Retire(blue));
            } else {
                out.push_back(Batch::Tasks(
                    blue.into_iter()
                        .map(|(instance, unit, grace_ms)| TaskSpec::StopBlue {
                            instance,
                            unit,
                            grace_ms,
                        })
                        .collect(),
                ));
            }
        }
        Strategy::Canary {
            canary,
            analysis_ms,
        } => {
            let n = (*canary as usize).clamp(1, sa.actions.len().max(1));
            let (first, rest) = sa.actions.split_at(n.min(sa.actions.len()));
            out.push_back(Batch::Tasks(
                first.iter().map(|a| change(a, Mode::StopFirst)).collect(),
            ));
            if *analysis_ms > 0 && !first.is_empty() {
                out.push_back(Batch::Tasks(vec![TaskSpec::Analysis {
                    sa: ctx.clone(),
                    instances: first.iter().map(|a| a.instance.clone()).collect(),
                    ms: *analysis_ms,
                }]));
            }
            out.push_back(Batch::Tasks(
                rest.iter().map(|a| change(a, Mode::StopFirst)).collect(),
            ));
        }
    }
    out
}

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

impl TaskKind {
    fn change(
        sa: ServiceCtx,
        action: InstanceAction,
        mode: Mode,
        id: TaskId,
        cx: &mut Core,
    ) -> Option<TaskKind> {
        let mut spec = action.spec.clone();
        spec.revision = cx.revision;
        let unit = spec.unit_id();
        cx.changed.push(Changed {
            service: action.service.clone(),
            instance: action.instance.clone(),
            old: action.old().cloned(),
            old_stopped: false,
            new_unit: None,
            new_unit_id: None,
            snapshot: None,
            stop_grace_ms: sa.stop_grace_ms,
        });
        let idx = cx.changed.len() - 1;
        let mut t = ChangeTask {
            sa,
            action,
            mode,
            spec,
            unit,
            idx,
            at: ChangeAt::Done,
        };
        if let Some(old) = t.action.old().cloned() {
            let paths = old
                .spec
                .as_ref()
                .map(|s| s.backup.clone())
                .filter(|b| !b.is_empty())
                .unwrap_or_else(|| t.spec.backup.clone());
            if !paths.is_empty() {
                let tag = format!("pre-r{}", cx.revision);
                t.at = ChangeAt::Snapshot(Op::begin(
                    OpKind::Snapshot {
                        instance: t.action.instance.clone(),
                        unit: old.unit_id.clone(),
                        paths,
                        tag,
                    },
                    id,
                    cx,
                ));
                return Some(TaskKind::Change(Box::new(t)));
            }
        }
        match t.after_snapshot(id, cx) {
            Progress::Pending => Some(TaskKind::Change(Box::new(t))),
            Progress::Done => None,
        }
    }

    fn stop(
        instance: String,
        unit: String,
        grace_ms: u64,
        reason: String,
        blue: bool,
        id: TaskId,
        cx: &mut Core,
    ) -> Option<TaskKind> {
        let op = Op::begin(
            OpKind::Stop {
                instance: instance.clone(),
                unit: unit.clone(),
                grace_ms,
                reason,
            },
            id,
            cx,
        );
        Some(TaskKind::Stop(Box::new(StopTask {
            instance,
            unit,
            blue,
            op,
        })))
    }

    fn job(ja: JobAction, id: TaskId, cx: &mut Core) -> Option<TaskKind> {
        let mut spec = ja.spec.clone();
        spec.revision = cx.revision;
        let unit = spec.unit_id();
        let mut t = JobTask {
            total: ja.settings.retries.saturating_add(1),
            ja,
            spec,
            unit,
            started_at: cx.now,
            attempts: 0,
            last: Attempt {
                outcome: JobOutcome::Failed,
                exit_code: None,
                detail: "not run: the apply is stopping".into(),
                output: String::new(),
            },
            at: JobAt::Done,
        };
        t.attempt(1, id, cx);
        Some(TaskKind::Job(Box::new(t)))
    }

    fn reload(ra: ReloadAction, id: TaskId, cx: &mut Core) -> Option<TaskKind> {
        let mut spec = ra.spec.clone();
        // `@r0` in the action means the revision applied, not the reloaded unit's own.
        spec.bindings = crate::address::normalized(&spec.bindings, cx.revision);
        let unit = ra.unit_id.clone();
        cx.ask(id, |id| Effect::PrepareReload { id, spec, unit });
        Some(TaskKind::Reload(Box::new(ReloadTask {
            ra,
            at: ReloadAt::Prepare,
        })))
    }

    fn analysis(
        sa: ServiceCtx,
        instances: Vec<String>,
        ms: u64,
        id: TaskId,
        cx: &mut Core,
    ) -> Option<TaskKind> {
        let units: Vec<UnitStatus> = instances
            .iter()
            .filter_map(|i| {
                cx.changed
                    .iter()
                    .rev()
                    .find(|c| &c.instance == i)
                    .and_then(|c| c.new_unit.clone())
            })
            .collect();
        cx.emit(Event::CanaryAnalysis {
            service: sa.service.clone(),
            instances,
            ms,
        });
        if units.is_empty() {
            return None;
        }
        let wait = HealthWait::window(units, sa.health.clone(), ms, id, cx);
        Some(TaskKind::Analysis(Box::new(AnalysisTask { sa, ms, wait })))
    }

    fn rollback(index: usize, c: Changed, id: TaskId, cx: &mut Core) -> Option<TaskKind> {
        let mut t = RollbackTask {
            index,
            c,
            parts: Vec::new(),
            at: RollbackAt::Done,
        };
        if let Some(unit) = t.c.new_unit_id.clone() {
            t.at = RollbackAt::StopNew(Op::begin(
                OpKind::Stop {
                    instance: t.c.instance.clone(),
                    unit,
                    grace_ms: t.c.stop_grace_ms,
                    reason: "rollback".into(),
                },
                id,
                cx,
            ));
            return Some(TaskKind::Rollback(Box::new(t)));
        }
        match t.after_stop(id, cx) {
            Progress::Pending => Some(TaskKind::Rollback(Box::new(t))),
            Progress::Done => None,
        }
    }

    fn on(&mut self, ev: Ev, id: TaskId, cx: &mut Core, effect: EffectId) -> Progress {
        match self {
            TaskKind::Change(t) => t.on(ev, id, cx, effect),
            TaskKind::Stop(t) => t.on(ev, id, cx),
            TaskKind::Job(t) => t.on(ev, id, cx),
            TaskKind::Reload(t) => t.on(ev, id, cx, effect),
            TaskKind::Analysis(t) => t.on(ev, id, cx, effect),
            TaskKind::Rollback(t) => t.on(ev, id, cx, effect),
        }
    }
}

impl ChangeTask {
    fn after_snapshot(&mut self, id: TaskId, cx: &mut Core) -> Progress {
        if let Some(old) = self.action.old().cloned()
            && (self.mode == Mode::StopFirst || !old.running)
        {
            self.at = ChangeAt::StopOld(self.stop_old(&old, id, cx), true);
            return Progress::Pending;
        }
        self.start(id, cx)
    }

    fn stop_old(&self, old: &OldUnit, id: TaskId, cx: &mut Core) -> Op {
        Op::begin(
            OpKind::Stop {
                instance: self.action.instance.clone(),
                unit: old.unit_id.clone(),
                grace_ms: self.sa.stop_grace_ms,
                reason: format!("replaced by {}", self.unit),
            },
            id,
            cx,
        )
    }

    fn start(&mut self, id: TaskId, cx: &mut Core) -> Progress {
        if let Some(c) = cx.changed.get_mut(self.idx) {
            c.new_unit_id = Some(self.unit.clone());
        }
        self.at = ChangeAt::Start(Op::begin(
            OpKind::Start {
                spec: self.spec.clone(),
                gate: self.sa.health.clone(),
            },
            id,
            cx,
        ));
        Progress::Pending
    }

    fn on(&mut self, ev: Ev, id: TaskId, cx: &mut Core, effect: EffectId) -> Progress {
        let instance = self.action.instance.clone();
        let at = std::mem::replace(&mut self.at, ChangeAt::Done);
        match (at, ev) {
            (ChangeAt::Snapshot(mut op), Ev::Reply(r)) => match op.on(r, id, cx) {
                None => {
                    self.at = ChangeAt::Snapshot(op);
                    Progress::Pending
                }
                Some(OpOut::Failed(e)) => {
                    cx.fail(&instance, &self.unit, e);
                    Progress::Done
                }
                Some(_) => {
                    if let Some(c) = cx.changed.get_mut(self.idx) {
                        c.snapshot = Some(format!("pre-r{}", cx.revision));
                    }
                    self.after_snapshot(id, cx)
                }
            },
            (ChangeAt::StopOld(mut op, before), Ev::Reply(r)) => {
                let old_unit = op.unit();
                match op.on(r, id, cx) {
                    None => {
                        self.at = ChangeAt::StopOld(op, before);
                        Progress::Pending
                    }
                    Some(OpOut::Failed(e)) => {
                        cx.fail(&instance, &old_unit, e);
                        Progress::Done
                    }
                    Some(_) => {
                        if let Some(c) = cx.changed.get_mut(self.idx) {
                            c.old_stopped = true;
                        }
                        if before {
                            self.start(id, cx)
                        } else {
                            Progress::Done
                        }
                    }
                }
            }
            (ChangeAt::Start(mut op), Ev::Reply(r)) => match op.on(r, id, cx) {
                None => {
                    self.at = ChangeAt::Start(op);
                    Progress::Pending
                }
                Some(OpOut::Started(status, gate)) => {
                    if let Some(c) = cx.changed.get_mut(self.idx) {
                        c.new_unit = Some(status.clone());
                    }
                    let since = cx.now;
                    let wait = HealthWait::gate(status.clone(), gate, id, cx);
                    self.at = ChangeAt::Gate(wait, status, since);
                    Progress::Pending
                }
                Some(out) => {
                    let e = match out {
                        OpOut::Failed(e) => e,
                        _ => "the start ended without a unit".to_string(),
                    };
                    cx.emit(Event::GateFailed {
                        instance: instance.clone(),
                        unit: self.unit.clone(),
                        reason: e.clone(),
                    });
                    cx.fail(&instance, &self.unit, e);
                    Progress::Done
                }
            },
            (ChangeAt::Gate(mut wait, status, since), ev) => match wait.on(ev, id, cx, effect) {
                None => {
                    self.at = ChangeAt::Gate(wait, status, since);
                    Progress::Pending
                }
                Some(WaitOut::Healthy(o)) => {
                    let ms = cx.now.saturating_sub(since);
                    let records = vec![Record::Unit {
                        status: status.clone(),
                        site: self.spec.site.clone(),
                        host: self.spec.host,
                        observed: ObservedState::Running,
                    }];
                    cx.ask(id, |id| Effect::Write { id, records });
                    self.at = ChangeAt::Record(o, ms);
                    Progress::Pending
                }
                Some(WaitOut::Unhealthy { detail, .. }) => {
                    cx.emit(Event::GateFailed {
                        instance: instance.clone(),
                        unit: self.unit.clone(),
                        reason: detail.clone(),
                    });
                    cx.audit(
                        format!("gate {}", self.unit),
                        AuditOutcome::Failed {
                            reason: detail.clone(),
                        },
                        Value::Null,
                    );
                    cx.fail(
                        &instance,
                        &self.unit,
                        format!("health gate failed: {detail}"),
                    );
                    Progress::Done
                }
                Some(WaitOut::Passed { .. } | WaitOut::Aborted) => Progress::Done,
            },
            (ChangeAt::Record(o, ms), Ev::Reply(Reply::Written(r))) => {
                // The record is best-effort, as a probe result is; a lost lease stops the run.
                if let Err(e) = &r {
                    cx.write_failed(e);
                }
                cx.emit(Event::GatePassed {
                    instance: instance.clone(),
                    unit: self.unit.clone(),
                    detail: o.detail.clone(),
                    ms,
                });
                cx.audit(
                    format!("gate {}", self.unit),
                    AuditOutcome::Ok,
                    json!({"detail": o.detail, "ms": ms}),
                );
                match self.action.old().cloned() {
                    Some(old) if self.mode == Mode::Surge && old.running => {
                        self.at = ChangeAt::StopOld(self.stop_old(&old, id, cx), false);
                        Progress::Pending
                    }
                    _ => Progress::Done,
                }
            }
            (at, _) => {
                self.at = at;
                Progress::Pending
            }
        }
    }
}

impl StopTask {
    fn on(&mut self, ev: Ev, id: TaskId, cx: &mut Core) -> Progress {
        let Ev::Reply(r) = ev else {
            return Progress::Pending;
        };
        match self.op.on(r, id, cx) {
            None => Progress::Pending,
            Some(OpOut::Failed(e)) => {
                cx.fail(&self.instance, &self.unit, e);
                Progress::Done
            }
            Some(_) => {
                if self.blue
                    && let Some(c) = cx.changed.iter_mut().find(|c| c.instance == self.instance)
                {
                    c.old_stopped = true;
                }
                Progress::Done
            }
        }
    }
}

impl JobTask {
    /// Begins attempt `n`: after the backoff when it is a retry.
    fn attempt(&mut self, n: u32, id: TaskId, cx: &mut Core) {
        if n > 1 {
            let at = cx.now.saturating_add(self.ja.settings.delay_before(n));
            self.at = JobAt::Backoff(cx.timer(id, at), n);
            return;
        }
        self.begin_attempt(n, id, cx);
    }

    fn begin_attempt(&mut self, n: u32, id: TaskId, cx: &mut Core) {
        self.attempts = n;
        cx.emit(Event::JobStarted {
            job: self.ja.job.clone(),
            instance: self.ja.instance.clone(),
            unit: self.unit.clone(),
            attempt: n,
            of: self.total,
        });
        self.at = JobAt::Start(Op::begin(
            OpKind::Start {
                spec: self.spec.clone(),
                gate: None,
            },
            id,
            cx,
        ));
    }

    fn inspect(status: &UnitStatus, id: TaskId, cx: &mut Core) {
        let unit = status.unit_id.clone();
        cx.ask(id, |id| Effect::Inspect { id, unit });
    }

    /// The attempt is over (`seen` is the unit as last seen): read its output.
    fn ended(&mut self, seen: UnitStatus, attempt: Attempt, id: TaskId, cx: &mut Core) {
        let unit = seen.clone();
        cx.ask(id, |id| Effect::OutputTail { id, unit });
        self.at = JobAt::Output(seen, attempt);
    }

    /// After an attempt: succeed, retry, or give up.
    fn after_attempt(&mut self, id: TaskId, cx: &mut Core) -> Progress {
        if self.last.outcome == JobOutcome::Succeeded {
            return self.finish(id, cx);
        }
        let n = self.attempts;
        let retry_in_ms =
            (n < self.total && !cx.stopping()).then(|| self.ja.settings.delay_before(n + 1));
        cx.emit(Event::JobAttemptFailed {
            job: self.ja.job.clone(),
            instance: self.ja.instance.clone(),
            attempt: n,
            reason: self.last.detail.clone(),
            retry_in_ms,
        });
        if retry_in_ms.is_none() {
            return self.finish(id, cx);
        }
        self.attempt(n + 1, id, cx);
        Progress::Pending
    }

    /// Records the run (if an attempt was made), then reports it.
    fn finish(&mut self, id: TaskId, cx: &mut Core) -> Progress {
        let run = JobRun {
            job: self.ja.job.clone(),
            instance: self.ja.instance.clone(),
            revision: RevisionNumber(cx.revision),
            fingerprint: self.ja.fingerprint.clone(),
            outcome: self.last.outcome,
            exit_code: self.last.exit_code,
            attempts: self.attempts,
            duration_ms: cx.now.saturating_sub(self.started_at),
            detail: self.last.detail.clone(),
            output: std::mem::take(&mut self.last.output),
        };
        if self.attempts > 0 {
            let r = run.clone();
            cx.ask(id, |id| Effect::RecordJobRun { id, run: r });
            self.at = JobAt::Record(run);
            return Progress::Pending;
        }
        self.report(&run, cx)
    }

    fn report(&mut self, run: &JobRun, cx: &mut Core) -> Progress {
        let (attempts, ms) = (self.attempts, run.duration_ms);
        cx.emit(Event::JobFinished {
            job: self.ja.job.clone(),
            instance: self.ja.instance.clone(),
            outcome: run.outcome.as_str().into(),
            exit_code: run.exit_code,
            attempts,
            ms,
            detail: run.detail.clone(),
        });
        let detail = json!({
            "attempts": attempts, "exit_code": run.exit_code, "fingerprint": run.fingerprint,
            "ms": ms, "reason": self.ja.reason,
        });
        if run.outcome == JobOutcome::Succeeded {
            cx.audit(format!("job {}", self.unit), AuditOutcome::Ok, detail);
            return Progress::Done;
        }
        let reason = if attempts > 1 {
            format!("job failed after {attempts} attempts: {}", run.detail)
        } else {
            format!("job failed: {}", run.detail)
        };
        cx.audit(
            format!("job {}", self.unit),
            AuditOutcome::Failed {
                reason: reason.clone(),
            },
            detail,
        );
        cx.emit(Event::GateFailed {
            instance: self.ja.instance.clone(),
            unit: self.unit.clone(),
            reason: reason.clone(),
        });
        cx.fail(&self.ja.instance, &self.unit, reason);
        Progress::Done
    }

    fn on(&mut self, ev: Ev, id: TaskId, cx: &mut Core) -> Progress {
        let at = std::mem::replace(&mut self.at, JobAt::Done);
        match (at, ev) {
            // A pause between attempts ends early when the run stops.
            (JobAt::Backoff(..), Ev::Stopping) => self.finish(id, cx),
            (JobAt::Backoff(t, n), Ev::Timer(fired)) if t == fired => {
                self.begin_attempt(n, id, cx);
                Progress::Pending
            }
            (JobAt::Start(mut op), Ev::Reply(r)) => match op.on(r, id, cx) {
                None => {
                    self.at = JobAt::Start(op);
                    Progress::Pending
                }
                Some(OpOut::Started(status, _)) => {
                    let deadline = cx.now.saturating_add(self.ja.settings.timeout_ms);
                    Self::inspect(&status, id, cx);
                    self.at = JobAt::Poll {
                        status,
                        deadline,
                        poll: JOB_POLL_MS.0,
                        last_error: None,
                        timer: None,
                    };
                    Progress::Pending
                }
                Some(out) => {
                    let detail = match out {
                        OpOut::Failed(e) => e,
                        _ => "the start ended without a unit".into(),
                    };
                    self.last = Attempt {
                        outcome: JobOutcome::Failed,
                        exit_code: None,
                        detail,
                        output: String::new(),
                    };
                    self.after_attempt(id, cx)
                }
            },
            (
                JobAt::Poll {
                    status,
                    deadline,
                    poll,
                    mut last_error,
                    ..
                },
                Ev::Reply(Reply::Inspected(r)),
            ) => {
                let ended = match r {
                    Ok(Some(u)) => match u.state {
                        UnitState::Running => None,
                        UnitState::Exited(0) => Some((
                            JobOutcome::Succeeded,
                            Some(0),
                            "exited with code 0".into(),
                            u,
                        )),
                        UnitState::Exited(c) => Some((
                            JobOutcome::Failed,
                            Some(i64::from(c)),
                            format!("exited with code {c}"),
                            u,
                        )),
                        UnitState::Failed | UnitState::Stopped => {
                            let d = u.detail.clone().unwrap_or_else(|| u.state.to_string());
                            Some((JobOutcome::Failed, None, d, u))
                        }
                    },
                    Ok(None) => Some((
                        JobOutcome::Failed,
                        None,
                        "its unit vanished".into(),
                        status.clone(),
                    )),
                    // Keep waiting through a provider that does not answer, up to the timeout.
                    Err(e) => {
                        last_error = Some(e.to_string());
                        None
                    }
                };
                let ended = ended.or_else(|| {
                    (cx.now >= deadline).then(|| {
                        let mut d =
                            format!("timed out after {}", human_ms(self.ja.settings.timeout_ms));
                        if let Some(e) = &last_error {
                            d.push_str(&format!(" (last error: {e})"));
                        }
                        (JobOutcome::TimedOut, None, d, status.clone())
                    })
                });
                match ended {
                    Some((outcome, exit_code, detail, seen)) => {
                        let attempt = Attempt {
                            outcome,
                            exit_code,
                            detail,
                            output: String::new(),
                        };
                        self.ended(seen, attempt, id, cx);
                    }
                    None => {
                        let at = cx.now.saturating_add(poll).min(deadline);
                        let timer = Some(cx.timer(id, at));
                        self.at = JobAt::Poll {
                            status,
                            deadline,
                            poll: poll.saturating_mul(2).min(JOB_POLL_MS.1),
                            last_error,
                            timer,
                        };
                    }
                }
                Progress::Pending
            }
            (
                JobAt::Poll {
                    status,
                    deadline,
                    poll,
                    last_error,
                    timer,
                },
                Ev::Timer(fired),
            ) => {
                if timer == Some(fired) {
                    Self::inspect(&status, id, cx);
                }
                self.at = JobAt::Poll {
                    status,
                    deadline,
                    poll,
                    last_error,
                    timer: None,
                };
                Progress::Pending
            }
            (JobAt::Output(seen, mut attempt), Ev::Reply(Reply::Output(text))) => {
                attempt.output = text;
                // Done or overdue: stop the unit, which also removes its record.
                let why = match attempt.outcome {
                    JobOutcome::TimedOut => "job timed out",
                    _ => "job ended",
                };
                let op = Op::begin(
                    OpKind::Stop {
                        instance: self.ja.instance.clone(),
                        unit: seen.unit_id.clone(),
                        grace_ms: self.ja.stop_grace_ms,
                        reason: why.into(),
                    },
                    id,
                    cx,
                );
                self.at = JobAt::Stop(op, attempt);
                Progress::Pending
            }
            (JobAt::Stop(mut op, attempt), Ev::Reply(r)) => match op.on(r, id, cx) {
                None => {
                    self.at = JobAt::Stop(op, attempt);
                    Progress::Pending
                }
                Some(out) => {
                    if let OpOut::Failed(e) = out {
                        cx.warn(e);
                    }
                    self.last = attempt;
                    self.after_attempt(id, cx)
                }
            },
            (JobAt::Record(run), Ev::Reply(Reply::JobRecorded(r))) => {
                if let Err(e) = r {
                    if e.is_lock_lost() {
                        cx.lock_lost = true;
                    } else {
                        cx.warn(format!(
                            "the run of job {} was not recorded: {}",
                            self.ja.instance,
                            e.text()
                        ));
                    }
                }
                self.report(&run, cx)
            }
            (at, _) => {
                self.at = at;
                Progress::Pending
            }
        }
    }
}

impl ReloadTask {
    fn on(&mut self, ev: Ev, id: TaskId, cx: &mut Core, effect: EffectId) -> Progress {
        let (instance, unit) = (self.ra.instance.clone(), self.ra.unit_id.clone());
        let at = std::mem::replace(&mut self.at, ReloadAt::Done);
        match (at, ev) {
            (ReloadAt::Prepare, Ev::Reply(Reply::Reloadable(r))) => match r {
                Err(e) => {
                    cx.fail(&instance, &unit, e.to_string());
                    Progress::Done
                }
                Ok(target) => {
                    let command = Health {
                        checks: vec![HealthCheck::Command {
                            argv: target.spec.reload.clone(),
                        }],
                        timeout_ms: RELOAD_TIMEOUT_MS,
                        interval_ms: RELOAD_TIMEOUT_MS,
                    };
                    let u = target.status.clone();
                    cx.ask(id, |id| Effect::Probe {
                        id,
                        unit: u,
                        health: Some(command),
                    });
                    self.at = ReloadAt::Command(target);
                    Progress::Pending
                }
            },
            (ReloadAt::Command(target), Ev::Reply(Reply::Probed(out))) => {
                cx.audit(
                    format!("unit.reload {unit}"),
                    if out.healthy {
                        AuditOutcome::Ok
                    } else {
                        AuditOutcome::Failed {
                            reason: out.detail.clone(),
                        }
                    },
                    json!({"reason": self.ra.reason, "detail": out.detail}),
                );
                if !out.healthy {
                    cx.fail(&instance, &unit, format!("reload failed: {}", out.detail));
                    return Progress::Done;
                }
                let wait = HealthWait::gate(target.status, target.spec.health, id, cx);
                self.at = ReloadAt::Gate(wait);
                Progress::Pending
            }
            (ReloadAt::Gate(mut wait), ev) => match wait.on(ev, id, cx, effect) {
                None => {
                    self.at = ReloadAt::Gate(wait);
                    Progress::Pending
                }
                Some(WaitOut::Healthy(o)) => {
                    cx.emit(Event::GatePassed {
                        instance,
                        unit,
                        detail: format!("reloaded: {}", o.detail),
                        ms: 0,
                    });
                    Progress::Done
                }
                Some(WaitOut::Unhealthy { detail, .. }) => {
                    cx.fail(
                        &instance,
                        &unit,
                        format!("health gate failed after reload: {detail}"),
                    );
                    Progress::Done
                }
                Some(_) => Progress::Done,
            },
            (at, _) => {
                self.at = at;
                Progress::Pending
            }
        }
    }
}

impl AnalysisTask {
    fn on(&mut self, ev: Ev, id: TaskId, cx: &mut Core, effect: EffectId) -> Progress {
        match self.wait.on(ev, id, cx, effect) {
            None => Progress::Pending,
            Some(WaitOut::Unhealthy { unit, detail }) => {
                let Some(u) = self.wait.units.get(unit).cloned() else {
                    return Progress::Done;
                };
                let reason = format!("canary analysis failed: {detail}");
                cx.emit(Event::GateFailed {
                    instance: u.instance.clone(),
                    unit: u.unit_id.clone(),
                    reason: reason.clone(),
                });
                cx.audit(
                    format!("canary.analysis {}", self.sa.service),
                    AuditOutcome::Failed {
                        reason: reason.clone(),
                    },
                    json!({"unit": u.unit_id}),
                );
                cx.fail(&u.instance, &u.unit_id, reason);
                Progress::Done
            }
            Some(WaitOut::Passed { probes }) => {
                cx.audit(
                    format!("canary.analysis {}", self.sa.service),
                    AuditOutcome::Ok,
                    json!({"ms": self.ms, "probes": probes}),
                );
                Progress::Done
            }
            Some(WaitOut::Healthy(_) | WaitOut::Aborted) => Progress::Done,
        }
    }
}

impl RollbackTask {
    /// After the new unit was stopped (or there was none): restore the backup.
    fn after_stop(&mut self, id: TaskId, cx: &mut Core) -> Progress {
        if let (Some(tag), Some(old)) = (&self.c.snapshot, &self.c.old) {
            self.at = RollbackAt::Restore(Op::begin(
                OpKind::Restore {
                    instance: self.c.instance.clone(),
                    unit: old.unit_id.clone(),
                    tag: tag.clone(),
                },
                id,
                cx,
            ));
            return Progress::Pending;
        }
        self.restart(id, cx)
    }

    /// Starts the replaced unit again, if it ran and was stopped.
    fn restart(&mut self, id: TaskId, cx: &mut Core) -> Progress {
        match &self.c.old {
            Some(old) if old.running && self.c.old_stopped => match &old.spec {
                Some(spec) => {
                    // The old unit is gated by its own check, not the new revision's.
                    self.at = RollbackAt::Start(Op::begin(
                        OpKind::Start {
                            spec: spec.clone(),
                            gate: spec.health.clone(),
                        },
                        id,
                        cx,
                    ));
                    return Progress::Pending;
                }
                None => self.parts.push(format!(
                    "cannot restart {}: its revision's spec is unknown",
                    old.unit_id
                )),
            },
            Some(old) if old.running => self.parts.push(format!("{} kept running", old.unit_id)),
            Some(old) => self
                .parts
                .push(format!("{} was not running before", old.unit_id)),
            None => self.parts.push("new instance removed".into()),
        }
        self.done(cx)
    }

    fn done(&mut self, cx: &mut Core) -> Progress {
        let detail = self.parts.join(", ");
        cx.emit(Event::InstanceRestored {
            instance: self.c.instance.clone(),
            detail: detail.clone(),
        });
        cx.audit(
            format!("rollback {}", self.c.instance),
            AuditOutcome::Ok,
            json!({"service": self.c.service, "detail": self.parts}),
        );
        cx.restored
            .push((self.index, format!("{}: {detail}", self.c.instance)));
        Progress::Done
    }

    fn old_unit(&self) -> String {
        self.c
            .old
            .as_ref()
            .map(|o| o.unit_id.clone())
            .unwrap_or_default()
    }

    fn on(&mut self, ev: Ev, id: TaskId, cx: &mut Core, effect: EffectId) -> Progress {
        let at = std::mem::replace(&mut self.at, RollbackAt::Done);
        match (at, ev) {
            (RollbackAt::StopNew(mut op), Ev::Reply(r)) => match op.on(r, id, cx) {
                None => {
                    self.at = RollbackAt::StopNew(op);
                    Progress::Pending
                }
                Some(out) => {
                    self.parts.push(match out {
                        OpOut::Failed(e) => e,
                        _ => format!("stopped {}", op.unit()),
                    });
                    self.after_stop(id, cx)
                }
            },
            (RollbackAt::Restore(mut op), Ev::Reply(r)) => match op.on(r, id, cx) {
                None => {
                    self.at = RollbackAt::Restore(op);
                    Progress::Pending
                }
                Some(out) => {
                    self.parts.push(match out {
                        OpOut::Failed(e) => e,
                        _ => format!(
                            "restored backup {}",
                            self.c.snapshot.clone().unwrap_or_default()
                        ),
                    });
                    self.restart(id, cx)
                }
            },
            (RollbackAt::Start(mut op), Ev::Reply(r)) => match op.on(r, id, cx) {
                None => {
                    self.at = RollbackAt::Start(op);
                    Progress::Pending
                }
                Some(OpOut::Started(status, gate)) => {
                    let spec = match &op.kind {
                        OpKind::Start { spec, .. } => spec.clone(),
                        _ => return self.done(cx),
                    };
                    let wait = HealthWait::gate(status.clone(), gate, id, cx);
                    self.at = RollbackAt::Gate(wait, status, spec);
                    Progress::Pending
                }
                Some(out) => {
                    let e = match out {
                        OpOut::Failed(e) => e,
                        _ => "the start ended without a unit".into(),
                    };
                    self.parts
                        .push(format!("could not restart {}: {e}", self.old_unit()));
                    self.done(cx)
                }
            },
            (RollbackAt::Gate(mut wait, status, spec), ev) => match wait.on(ev, id, cx, effect) {
                None => {
                    self.at = RollbackAt::Gate(wait, status, spec);
                    Progress::Pending
                }
                Some(WaitOut::Healthy(_)) => {
                    // Recorded as running again, as a passed gate is in a rollout: readers of
                    // the store (`phoenix serve`) take health from it.
                    let records = vec![Record::Unit {
                        status,
                        site: spec.site.clone(),
                        host: spec.host,
                        observed: ObservedState::Running,
                    }];
                    cx.ask(id, |id| Effect::Write { id, records });
                    self.at =
                        RollbackAt::Record(format!("restarted {} (healthy)", self.old_unit()));
                    Progress::Pending
                }
                Some(WaitOut::Unhealthy { detail, .. }) => {
                    self.parts.push(format!(
                        "restarted {} but it is not healthy: {detail}",
                        self.old_unit()
                    ));
                    self.done(cx)
                }
                Some(_) => self.done(cx),
            },
            (RollbackAt::Record(line), Ev::Reply(Reply::Written(r))) => {
                if let Err(e) = &r {
                    cx.write_failed(e);
                }
                self.parts.push(line);
                self.done(cx)
            }
            (at, _) => {
                self.at = at;
                Progress::Pending
            }
        }
    }
}

/// The machine fed by hand: no provider, no threads, no clock but a number.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{ObservedUnit, decide};
    use crate::{Desired, Scope};
    use phoenix_state::{Intent, UnitId};
    use std::collections::BTreeSet;

    const SITE: &str =
        "sites: [{name: local, tier: core, capacity: {cpu: 64, memory: 64Gi, storage: 100G}}]\n";
    const HEALTH: &str = "health: {tcp: '127.0.0.1:${port}', timeout: 300ms, interval: 10ms}";

    fn desired(services: &str) -> Desired {
        let yaml = format!("phoenix: 1\nname: demo\n{SITE}services:\n{services}");
        let fleet = match phoenix_spec::parse_sources(&[("t.yaml".into(), yaml)], None) {
            Ok(f) => f,
            Err(d) => panic!("{}", d.render()),
        };
        Desired::new(&fleet, &phoenix_plan::plan(&fleet)).unwrap()
    }

    fn svc(name: &str, replicas: u32, extra: &str) -> String {
        format!(
            "  - {{name: {name}, replicas: {replicas}, command: [run, '{name}', '${{port}}'], ports: [port], {HEALTH}{extra}}}\n"
        )
    }

    fn status_of(spec: &UnitSpec) -> UnitStatus {
        UnitStatus {
            unit_id: spec.unit_id(),
            fleet: spec.fleet.clone(),
            service: spec.service.clone(),
            instance: spec.instance.clone(),
            revision: spec.revision,
            site: spec.site.clone(),
            state: UnitState::Running,
            pid: Some(1),
            handle: None,
            ports: BTreeMap::new(),
            data_dir: Default::default(),
            restarts: 0,
            logs: Vec::new(),
            detail: None,
        }
    }

    /// Revision 1 of `services` as running units: what a second apply observes.
    fn running(d: &Desired) -> Vec<ObservedUnit> {
        d.units
            .values()
            .map(|u| {
                let mut spec = u.spec.clone();
                spec.revision = 1;
                ObservedUnit {
                    status: status_of(&spec),
                    healthy: Some(true),
                    health_detail: None,
                    spec: Some(spec),
                }
            })
            .collect()
    }

    /// The id of a call's reply.
    fn id_of(e: &Effect) -> EffectId {
        match e {
            Effect::Write { id, .. }
            | Effect::Start { id, .. }
            | Effect::Stop { id, .. }
            | Effect::Snapshot { id, .. }
            | Effect::Restore { id, .. }
            | Effect::Probe { id, .. }
            | Effect::Inspect { id, .. }
            | Effect::OutputTail { id, .. }
            | Effect::PrepareReload { id, .. }
            | Effect::RecordJobRun { id, .. } => *id,
            _ => 0,
        }
    }

    /// A provider and store that do everything asked, all units healthy.
    fn fine(e: &Effect, _now: Millis) -> Reply {
        match e {
            Effect::Write { id, records } => Reply::Written(Ok(records
                .iter()
                .filter_map(|r| match r {
                    Record::Intent { op, unit, .. } => Some(Written::Intent(Intent {
                        id: IntentId(*id),
                        fleet: "demo".into(),
                        op: *op,
                        unit: UnitId::from_raw(unit.clone()),
                        revision: RevisionNumber(2),
                        detail: Value::Null,
                        lease_token: 0,
                        created_at: jiff::Timestamp::UNIX_EPOCH,
                        outcome: None,
                        closed_at: None,
                    })),
                    _ => None,
                })
                .collect())),
            Effect::Start { spec, gate, .. } => Reply::UnitStarted(Ok(Started {
                status: status_of(spec),
                gate: gate.clone(),
            })),
            Effect::Stop { .. } => Reply::UnitStopped(Ok(())),
            Effect::Snapshot { .. } => Reply::Snapshotted(Ok(())),
            Effect::Restore { .. } => Reply::Restored(Ok(())),
            Effect::Probe { .. } => Reply::Probed(ProbeOutcome::healthy("ok")),
            Effect::Inspect { .. } => Reply::Inspected(Ok(None)),
            Effect::OutputTail { .. } => Reply::Output(String::new()),
            Effect::PrepareReload { unit, .. } => {
                Reply::Reloadable(Err(ExecError::UnitGone { unit: unit.clone() }))
            }
            Effect::RecordJobRun { .. } => Reply::JobRecorded(Ok(())),
            _ => Reply::Output(String::new()),
        }
    }

    /// Carries effects out by hand: calls answered in order, timers fired when no call is
    /// pending (simulated time jumps to them).
    struct Sim {
        m: Rollout,
        now: Millis,
        timers: BTreeSet<(Millis, TimerId)>,
        calls: VecDeque<Effect>,
        /// Every call made, `start web-0@r2`, `probe web-0@r2 @ 20`, ...
        log: Vec<String>,
        events: Vec<Event>,
        audits: Vec<(String, bool)>,
        end: Option<RunEnd>,
        most_in_flight: usize,
    }

    impl Sim {
        fn new(d: &Decision, parallelism: usize) -> Sim {
            let m = Rollout::new(
                d,
                Options {
                    revision: 2,
                    parallelism,
                    rollback: true,
                },
            );
            Sim {
                m,
                now: 0,
                timers: BTreeSet::new(),
                calls: VecDeque::new(),
                log: Vec::new(),
                events: Vec::new(),
                audits: Vec::new(),
                end: None,
                most_in_flight: 0,
            }
        }

        fn input(&mut self, input: Input) {
            let effects = self.m.step(input, self.now);
            self.most_in_flight = self.most_in_flight.max(self.m.in_flight());
            for e in effects {
                match e {
                    Effect::Emit(ev) => self.events.push(ev),
                    Effect::Audit { step, outcome, .. } => {
                        self.audits.push((step, outcome == AuditOutcome::Ok))
                    }
                    Effect::SetTimer { id, at } => {
                        assert!(at >= self.now, "a timer in the past");
                        self.timers.insert((at, id));
                    }
                    Effect::Finish(end) => {
                        assert!(self.end.is_none(), "finished twice");
                        self.end = Some(end);
                    }
                    call => {
                        self.log.push(match &call {
                            Effect::Start { spec, .. } => format!("start {}", spec.unit_id()),
                            Effect::Stop { unit, .. } => format!("stop {unit}"),
                            Effect::Probe { unit, .. } => {
                                format!("probe {} @ {}", unit.unit_id, self.now)
                            }
                            Effect::Write { .. } => "write".into(),
                            other => format!("{other:?}"),
                        });
                        self.calls.push_back(call);
                    }
                }
            }
        }

        /// Runs to the end, answering each call with `answer`.
        fn run(&mut self, answer: &mut dyn FnMut(&Effect, Millis) -> Reply) -> RunEnd {
            self.input(Input::Started);
            for _ in 0..1_000_000 {
                if let Some(end) = &self.end {
                    return end.clone();
                }
                if let Some(call) = self.calls.pop_front() {
                    let reply = answer(&call, self.now);
                    self.input(Input::Reply(id_of(&call), reply));
                    continue;
                }
                let Some((at, t)) = self.timers.pop_first() else {
                    panic!("the machine waits for nothing: {:#?}", self.log);
                };
                self.now = self.now.max(at);
                self.input(Input::TimerFired(t));
            }
            panic!("the run did not end");
        }

        fn starts(&self) -> Vec<&str> {
            self.log
                .iter()
                .filter(|l| l.starts_with("start ") || l.starts_with("stop "))
                .map(String::as_str)
                .collect()
        }
    }

    #[test]
    fn a_first_apply_starts_and_gates_every_unit_wave_by_wave() {
        let d = desired(&format!(
            "{}{}",
            svc("web", 2, ", depends_on: [db]"),
            svc("db", 1, "")
        ));
        let decision = decide(&d, &[], &Scope::all());
        let mut sim = Sim::new(&decision, 16);
        let end = sim.run(&mut fine);
        assert_eq!(end, RunEnd::default());
        assert_eq!(
            sim.starts(),
            ["start db-0@r2", "start web-0@r2", "start web-1@r2"]
        );
        let waves: Vec<&str> = sim
            .audits
            .iter()
            .filter(|(s, _)| s.starts_with("wave "))
            .map(|(s, _)| s.as_str())
            .collect();
        assert_eq!(waves.len(), 2, "{:?}", sim.audits);
        assert!(sim.audits.iter().any(|(s, ok)| s == "gate db-0@r2" && *ok));
    }

    #[test]
    fn parallelism_bounds_the_tasks_in_flight() {
        let services: String = (0..6).map(|i| svc(&format!("s{i}"), 1, "")).collect();
        let d = desired(&services);
        let decision = decide(&d, &[], &Scope::all());
        let mut sim = Sim::new(&decision, 2);
        sim.run(&mut fine);
        assert_eq!(sim.most_in_flight, 2);
        assert_eq!(sim.starts().len(), 6);
    }

    #[test]
    fn a_gate_probes_every_interval_until_its_timeout_then_the_change_is_rolled_back() {
        let d = desired(&svc("web", 1, ""));
        let observed = running(&d);
        let d2 = desired(&svc("web", 1, ", env: {V: '2'}"));
        let decision = decide(&d2, &observed, &Scope::all());
        let mut sim = Sim::new(&decision, 16);
        let end = sim.run(&mut |e, now| match e {
            Effect::Probe { unit, .. } if unit.revision == 2 => {
                Reply::Probed(ProbeOutcome::unhealthy(format!("closed at {now}")))
            }
            e => fine(e, now),
        });
        let failure = end.failure.expect("the gate failed");
        assert_eq!(failure.unit, "web-0@r2");
        assert!(
            failure
                .reason
                .starts_with("health gate failed: not healthy after 300 ms: closed at 300"),
            "{}",
            failure.reason
        );
        let probes: Vec<&String> = sim
            .log
            .iter()
            .filter(|l| l.starts_with("probe web-0@r2"))
            .collect();
        // At 0, 10, ..., 300 ms: the interval, then one last probe at the deadline.
        assert_eq!(probes.len(), 31, "{probes:?}");
        assert_eq!(probes[1], "probe web-0@r2 @ 10");
        // Rolled back: the new unit stopped, the old started again and gated.
        assert_eq!(
            sim.starts(),
            [
                "stop web-0@r1",
                "start web-0@r2",
                "stop web-0@r2",
                "start web-0@r1"
            ]
        );
        assert_eq!(
            end.restored,
            ["web-0: stopped web-0@r2, restarted web-0@r1 (healthy)"]
        );
        assert!(sim.audits.iter().any(|(s, _)| s == "rollback.start"));
    }

    #[test]
    fn cancel_lets_the_step_in_flight_finish_and_starts_nothing_new() {
        let d = desired(&format!("{}{}", svc("a", 1, ""), svc("b", 1, "")));
        let decision = decide(&d, &[], &Scope::all());
        let mut sim = Sim::new(&decision, 1);
        let mut cancelled = false;
        sim.input(Input::Started);
        // Bounded: a handful of calls per unit.
        for _ in 0..1000 {
            if sim.end.is_some() {
                break;
            }
            if let Some(call) = sim.calls.pop_front() {
                if !cancelled && matches!(call, Effect::Start { .. }) {
                    cancelled = true;
                    sim.input(Input::Cancel);
                }
                let reply = fine(&call, sim.now);
                sim.input(Input::Reply(id_of(&call), reply));
            } else if let Some((at, t)) = sim.timers.pop_first() {
                sim.now = at;
                sim.input(Input::TimerFired(t));
            }
        }
        let end = sim.end.clone().expect("ended");
        assert!(end.cancelled && end.failure.is_none(), "{end:?}");
        assert_eq!(sim.starts().len(), 1, "{:?}", sim.log);
        // The unit in flight was still gated: it is not left started and unverified.
        assert!(
            sim.audits
                .iter()
                .any(|(s, ok)| s.starts_with("gate ") && *ok)
        );
        assert!(
            !sim.events
                .iter()
                .any(|e| matches!(e, Event::WaveFinished { .. }))
        );
    }

    #[test]
    fn a_canary_window_probes_on_timers_and_fails_at_the_first_unhealthy_probe() {
        let canary = ", rollout: {strategy: canary, canary: 1, analysis: 1s}";
        let d = desired(&svc("web", 3, canary));
        let observed = running(&d);
        let d2 = desired(&svc("web", 3, &format!("{canary}, env: {{V: '2'}}")));
        let decision = decide(&d2, &observed, &Scope::all());
        let mut sim = Sim::new(&decision, 16);
        let mut window_probes = 0;
        let end = sim.run(&mut |e, now| match e {
            // The gate's probe at 0 passes; the window's probes fail from 250 ms on.
            Effect::Probe { unit, .. } if unit.revision == 2 => {
                window_probes += 1;
                if now >= 250 {
                    Reply::Probed(ProbeOutcome::unhealthy("turned bad"))
                } else {
                    Reply::Probed(ProbeOutcome::healthy("ok"))
                }
            }
            e => fine(e, now),
        });
        let failure = end.failure.expect("the window failed");
        assert_eq!(failure.reason, "canary analysis failed: turned bad");
        assert_eq!(sim.now, 250, "failed at the first probe from 250 ms on");
        assert!(window_probes > 20, "probed every 10 ms: {window_probes}");
        assert!(
            !sim.starts().iter().any(|s| s.contains("web-1@r2")),
            "the rest never started: {:?}",
            sim.starts()
        );
        assert!(
            sim.audits
                .iter()
                .any(|(s, ok)| s == "canary.analysis web" && !*ok)
        );
    }

    #[test]
    fn blue_green_starts_every_green_unit_before_stopping_blue() {
        let bg = ", rollout: {strategy: blue-green}";
        let d = desired(&svc("web", 2, bg));
        let observed = running(&d);
        let d2 = desired(&svc("web", 2, &format!("{bg}, env: {{V: '2'}}")));
        let decision = decide(&d2, &observed, &Scope::all());
        let mut sim = Sim::new(&decision, 16);
        let end = sim.run(&mut fine);
        assert_eq!(end, RunEnd::default());
        assert_eq!(
            sim.starts(),
            [
                "start web-0@r2",
                "start web-1@r2",
                "stop web-0@r1",
                "stop web-1@r1"
            ]
        );
    }

    #[test]
    fn a_failed_job_attempt_is_retried_after_its_backoff_timer() {
        let d = desired(&format!(
            "{}jobs:\n  - {{name: migrate, command: [m], retries: 2, backoff: 150ms}}\n",
            svc("web", 1, ", depends_on: [migrate]")
        ));
        let d = d.clone().with_job_runs(&[]);
        let decision = decide(&d, &[], &Scope::all());
        let mut sim = Sim::new(&decision, 16);
        let mut exits = vec![UnitState::Exited(0), UnitState::Exited(3)];
        let mut started_at = Vec::new();
        let end = sim.run(&mut |e, now| match e {
            Effect::Start { spec, .. } if spec.service == "migrate" => {
                started_at.push(now);
                fine(e, now)
            }
            Effect::Inspect { unit, .. } => {
                let spec = d.jobs.values().next().unwrap().spec.clone();
                let mut st = status_of(&UnitSpec {
                    revision: 2,
                    ..spec
                });
                st.unit_id = unit.clone();
                st.state = exits.pop().unwrap_or(UnitState::Exited(0));
                Reply::Inspected(Ok(Some(st)))
            }
            e => fine(e, now),
        });
        assert_eq!(end, RunEnd::default());
        assert_eq!(started_at, [0, 150], "the retry waited for the backoff");
        assert!(sim.events.iter().any(|e| matches!(
            e,
            Event::JobAttemptFailed {
                attempt: 1,
                retry_in_ms: Some(150),
                ..
            }
        )));
        assert!(matches!(
            sim.log.iter().find(|l| l.starts_with("RecordJobRun")),
            Some(l) if l.contains("attempts: 2")
        ));
        // The service waits for its job.
        assert_eq!(sim.starts().last().copied(), Some("start web-0@r2"));
    }

    #[test]
    fn surge_starts_the_new_unit_beside_the_old_and_a_rollback_restores_the_backup() {
        let extra = ", rollout: {strategy: rolling, max_unavailable: 0, max_surge: 1}, backup: ['${data_dir}/db']";
        let d = desired(&svc("db", 1, extra));
        let observed = running(&d);
        let d2 = desired(&svc("db", 1, &format!("{extra}, env: {{V: '2'}}")));
        let decision = decide(&d2, &observed, &Scope::all());
        let mut sim = Sim::new(&decision, 16);
        let end = sim.run(&mut fine);
        assert_eq!(end, RunEnd::default());
        assert_eq!(sim.starts(), ["start db-0@r2", "stop db-0@r1"]);
        assert!(
            sim.log[..2].iter().any(|l| l.starts_with("Snapshot")),
            "{:?}",
            sim.log
        );

        // The same change with a failing gate: the new unit is stopped, the backup restored,
        // and the old unit (never stopped under surge) keeps running.
        let mut sim = Sim::new(&decision, 16);
        let end = sim.run(&mut |e, now| match e {
            Effect::Probe { unit, .. } if unit.revision == 2 => {
                Reply::Probed(ProbeOutcome::unhealthy("no"))
            }
            e => fine(e, now),
        });
        assert_eq!(
            end.restored,
            ["db-0: stopped db-0@r2, restored backup pre-r2, db-0@r1 kept running"]
        );
        assert!(sim.log.iter().any(|l| l.starts_with("Restore")));
        assert_eq!(sim.starts(), ["start db-0@r2", "stop db-0@r2"]);
    }
}
