//! Progress events: what the executor reports as it goes. The CLI renders them as progress
//! bars, plain lines, or one JSON object per line (`-o json`).

use serde::Serialize;
use std::collections::BTreeMap;

/// One thing that happened during an apply, rollback or destroy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// An intent left by an apply that died was resolved.
    Recovered {
        /// The unit.
        unit: String,
        /// The intent's operation.
        op: String,
        /// What was done.
        resolution: String,
    },
    /// The apply begins (revision created).
    ApplyStarted {
        /// Fleet.
        fleet: String,
        /// Revision number.
        revision: u64,
        /// Instances to create.
        creates: usize,
        /// Instances to replace.
        replaces: usize,
        /// Units to remove.
        removes: usize,
    },
    /// A wave begins.
    WaveStarted {
        /// Phase.
        phase: u32,
        /// Wave within the phase.
        wave: usize,
        /// Services rolled out in it.
        services: Vec<String>,
        /// Instances changed in it.
        instances: usize,
    },
    /// A unit is being started.
    UnitStarting {
        /// Instance.
        instance: String,
        /// Unit.
        unit: String,
    },
    /// A unit's process runs.
    UnitStarted {
        /// Instance.
        instance: String,
        /// Unit.
        unit: String,
        /// Process id, if any.
        pid: Option<u32>,
        /// Allocated ports.
        ports: BTreeMap<String, u16>,
    },
    /// A unit passed its health gate.
    GatePassed {
        /// Instance.
        instance: String,
        /// Unit.
        unit: String,
        /// What the probe saw.
        detail: String,
        /// How long the gate took.
        ms: u64,
    },
    /// A unit failed its health gate (or could not be started).
    GateFailed {
        /// Instance.
        instance: String,
        /// Unit.
        unit: String,
        /// Why.
        reason: String,
    },
    /// The canaries of a service are being watched.
    CanaryAnalysis {
        /// Service.
        service: String,
        /// Canary instances.
        instances: Vec<String>,
        /// Window length.
        ms: u64,
    },
    /// A unit was stopped.
    UnitStopped {
        /// Instance.
        instance: String,
        /// Unit.
        unit: String,
        /// Why.
        reason: String,
    },
    /// A snapshot of an instance's backup paths was taken.
    Snapshot {
        /// Instance.
        instance: String,
        /// Tag.
        tag: String,
    },
    /// A snapshot was restored.
    Restored {
        /// Instance.
        instance: String,
        /// Tag.
        tag: String,
    },
    /// A wave finished (all its instances healthy).
    WaveFinished {
        /// Phase.
        phase: u32,
        /// Wave.
        wave: usize,
    },
    /// Rolling back the instances changed so far.
    RollbackStarted {
        /// Why.
        reason: String,
        /// Instances to restore.
        instances: usize,
    },
    /// One instance was rolled back.
    InstanceRestored {
        /// Instance.
        instance: String,
        /// What was done.
        detail: String,
    },
    /// An attempt of a one-shot job started.
    JobStarted {
        /// The job.
        job: String,
        /// Its instance.
        instance: String,
        /// Its unit.
        unit: String,
        /// Attempt number, from 1.
        attempt: u32,
        /// Attempts it may make in all (1 + retries).
        of: u32,
    },
    /// An attempt of a one-shot job ended without success; another follows if `retry_in_ms`.
    JobAttemptFailed {
        /// The job.
        job: String,
        /// Its instance.
        instance: String,
        /// Attempt number, from 1.
        attempt: u32,
        /// Why.
        reason: String,
        /// Wait before the next attempt, if there is one.
        retry_in_ms: Option<u64>,
    },
    /// A one-shot job ended: `succeeded`, `failed` or `timed-out`.
    JobFinished {
        /// The job.
        job: String,
        /// Its instance.
        instance: String,
        /// How it ended.
        outcome: String,
        /// Exit code of the last attempt, when it exited.
        exit_code: Option<i64>,
        /// Attempts made.
        attempts: u32,
        /// How long it took in all, in milliseconds.
        ms: u64,
        /// Why, for people.
        detail: String,
    },
    /// A non-fatal problem (an audit record that could not be written, a stop that failed).
    Warning {
        /// What.
        message: String,
    },
    /// The operation ended.
    Finished {
        /// Revision, if one was created.
        revision: Option<u64>,
        /// `applied`, `rolled-back`, `failed`, `cancelled`, `no-changes`, `declined`.
        outcome: String,
        /// Details for people.
        message: String,
    },
}

/// Receives events; called from worker threads.
pub type EventSink<'a> = &'a (dyn Fn(&Event) + Sync);
