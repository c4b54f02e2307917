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
//! one `HealthWait` (`wait.rs`): probe effects and a timer, never a loop that sleeps.

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
use std::collections::{BTreeMap, BTreeSet, VecDeque};

mod op;
mod tasks;
#[cfg(test)]
mod tests;
mod wait;

use op::*;
use tasks::*;
use wait::*;

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
    /// The services with an instance this run started, stopped or restored (what rollback
    /// jobs, `hook: {rollback: S}`, are run after).
    pub touched: BTreeSet<String>,
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
            touched: self
                .core
                .changed
                .iter()
                .map(|c| c.service.clone())
                .collect(),
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
