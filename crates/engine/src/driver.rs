//! The driver of a rollout: carries out the [`Effect`]s of a [`Rollout`] through the engine's
//! provider, state store and recorder, and feeds the replies back. Provider and store calls
//! block, so they run on a bounded pool of worker threads: the provider is a router over many
//! sites, and calls for different sites (or units) run at once. Events, audit records and
//! timers are handled on the driver's own thread, in the order the machine returned them.
//! Time comes from an injected [`Clock`]; nothing here decides what to do next.

use crate::clock::{Clock, Millis};
use crate::error::ExecError;
use crate::events::EventSink;
use crate::exec::{Engine, instance_state, spec_state};
use crate::lock::LockGuard;
use crate::rollout::{
    Effect, EffectId, Input, Record, Reloadable, Reply, Rollout, RunEnd, Started, TimerId,
};
use phoenix_audit::AuditOutcome;
use phoenix_provider_api::{Health, ProbeOutcome, ProviderError, UnitSpec, UnitStatus};
use phoenix_state::{
    DesiredState, MAX_JOB_OUTPUT, NewIntent, ObservedState, RevisionNumber, UnitId, Write, Written,
};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

/// The one retry policy of the executor: a provider or store call that failed with a
/// retryable error ([`ExecError::is_retryable`]) is tried again, at most `attempts` times in
/// all, pausing `backoff` times the attempt number in between. Calls that are not idempotent
/// (a start, a snapshot, a restore) are not retried: a second start could run a unit twice.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all.
    pub attempts: u32,
    /// Pause after the first failed attempt.
    pub backoff: Duration,
}

/// The policy the executor uses.
pub const RETRY: RetryPolicy = RetryPolicy {
    attempts: 5,
    backoff: Duration::from_millis(50),
};

impl RetryPolicy {
    /// Runs `call` until it succeeds, fails fatally, or the attempts are used up.
    ///
    /// # Errors
    /// The last error of `call`.
    pub fn run<T>(
        &self,
        clock: &dyn Clock,
        mut call: impl FnMut() -> Result<T, ExecError>,
    ) -> Result<T, ExecError> {
        let mut attempt = 1;
        loop {
            match call() {
                Err(e) if e.is_retryable() && attempt < self.attempts.max(1) => {
                    clock.pause(self.backoff.saturating_mul(attempt));
                    attempt += 1;
                }
                r => return r,
            }
        }
    }
}

/// How often the driver looks at the cancel flag and the lock while it waits.
const POLL: Duration = Duration::from_millis(50);
/// More inputs than any rollout has: the driver's loop is bounded by it.
const MAX_TURNS: u64 = 100_000_000;

/// Carries out one run.
pub(crate) struct Driver<'a> {
    pub engine: &'a Engine,
    pub fleet: &'a str,
    pub revision: u64,
    pub plan_hash: &'a str,
    pub lock: &'a LockGuard,
    pub events: EventSink<'a>,
    pub cancel: &'a AtomicBool,
    pub clock: &'a dyn Clock,
    /// Worker threads for provider and store calls.
    pub workers: usize,
}

impl Driver<'_> {
    /// Runs `machine` to its end.
    pub(crate) fn run(&self, machine: &mut Rollout) -> RunEnd {
        let (reply_tx, reply_rx) = mpsc::channel::<(EffectId, Reply)>();
        let (work_tx, work_rx) = mpsc::channel::<Effect>();
        let work_rx = Mutex::new(work_rx);
        let closing = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for _ in 0..self.workers.max(1) {
                let tx = reply_tx.clone();
                let (work_rx, closing) = (&work_rx, &closing);
                scope.spawn(move || {
                    // Bounded by the work sent: the loop ends when the driver drops its sender.
                    loop {
                        let next = work_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok(effect) = next else { break };
                        // The run is over: what is still queued is no longer wanted.
                        if closing.load(Ordering::SeqCst) {
                            continue;
                        }
                        if let Some(reply) = self.execute(effect)
                            && tx.send(reply).is_err()
                        {
                            break;
                        }
                    }
                });
            }
            drop(reply_tx);
            let end = self.drive(machine, &work_tx, &reply_rx);
            closing.store(true, Ordering::SeqCst);
            drop(work_tx);
            end
        })
    }

    fn drive(
        &self,
        machine: &mut Rollout,
        work: &mpsc::Sender<Effect>,
        replies: &mpsc::Receiver<(EffectId, Reply)>,
    ) -> RunEnd {
        let mut timers: BTreeSet<(Millis, TimerId)> = BTreeSet::new();
        let mut in_flight = 0usize;
        let (mut told_cancel, mut told_lost) = (false, false);
        // Cancelled before it began: the machine stops before launching anything.
        let first = if self.cancel.load(Ordering::SeqCst) {
            told_cancel = true;
            Input::Cancel
        } else {
            Input::Started
        };
        let mut effects = machine.step(first, self.clock.now_ms());
        for _ in 0..MAX_TURNS {
            for effect in effects.drain(..) {
                match effect {
                    Effect::Emit(e) => (self.events)(&e),
                    Effect::Audit {
                        step,
                        outcome,
                        detail,
                    } => self.audit(&step, outcome, detail),
                    Effect::SetTimer { id, at } => {
                        timers.insert((at, id));
                    }
                    Effect::Finish(end) => return end,
                    call => {
                        in_flight += 1;
                        if work.send(call).is_err() {
                            return machine.abandon("the executor's workers are gone");
                        }
                    }
                }
            }
            let now = self.clock.now_ms();
            let input = if !told_cancel && self.cancel.load(Ordering::SeqCst) {
                told_cancel = true;
                Some(Input::Cancel)
            } else if !told_lost && self.lock.is_lost() {
                told_lost = true;
                Some(Input::LockLost)
            } else if let Some(&(at, id)) = timers.first()
                && at <= now
            {
                timers.pop_first();
                Some(Input::TimerFired(id))
            } else {
                if in_flight == 0 && timers.is_empty() {
                    return machine.abandon("internal error: the rollout waits for nothing");
                }
                let next = timers.first().map(|(at, _)| *at);
                let wait = self
                    .clock
                    .wait_for(next, in_flight > 0)
                    .map_or(POLL, |d| d.min(POLL));
                match replies.recv_timeout(wait) {
                    Ok((id, reply)) => {
                        in_flight = in_flight.saturating_sub(1);
                        Some(Input::Reply(id, reply))
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        return machine.abandon("the executor's workers are gone");
                    }
                }
            };
            if let Some(input) = input {
                effects = machine.step(input, self.clock.now_ms());
            }
        }
        machine.abandon("internal error: the rollout did not end")
    }

    fn audit(&self, step: &str, outcome: AuditOutcome, detail: serde_json::Value) {
        self.engine.audit(
            self.fleet,
            Some(self.revision),
            Some(self.plan_hash),
            step,
            outcome,
            detail,
            self.events,
        );
    }

    /// Carries out one call on a worker; `None` for effects that are not calls.
    fn execute(&self, effect: Effect) -> Option<(EffectId, Reply)> {
        let provider = &self.engine.provider;
        let fleet = self.fleet;
        Some(match effect {
            Effect::Write { id, records } => (id, Reply::Written(self.write(records))),
            Effect::Start { id, spec, gate } => (id, Reply::UnitStarted(self.start(&spec, gate))),
            Effect::Stop { id, unit, grace_ms } => {
                let grace = Duration::from_millis(grace_ms);
                let r = RETRY.run(self.clock, || {
                    provider.stop(fleet, &unit, grace).map_err(ExecError::from)
                });
                (id, Reply::UnitStopped(r))
            }
            Effect::Snapshot {
                id,
                instance,
                paths,
                tag,
            } => {
                let r = provider
                    .snapshot(fleet, &instance, &paths, &tag)
                    .map(|_| ())
                    .map_err(ExecError::from);
                (id, Reply::Snapshotted(r))
            }
            Effect::Restore { id, instance, tag } => {
                let r = provider
                    .restore(fleet, &instance, &tag)
                    .map(|_| ())
                    .map_err(ExecError::from);
                (id, Reply::Restored(r))
            }
            Effect::Probe { id, unit, health } => {
                let outcome = match &health {
                    Some(h) => provider.probe(&unit, h),
                    None => self.runs(&unit),
                };
                (id, Reply::Probed(outcome))
            }
            Effect::Inspect { id, unit } => {
                let r = provider
                    .list(fleet)
                    .map(|l| l.into_iter().find(|u| u.unit_id == unit))
                    .map_err(|source| ExecError::List { source });
                (id, Reply::Inspected(r))
            }
            Effect::OutputTail { id, unit } => (
                id,
                Reply::Output(
                    provider
                        .output_tail(&unit, MAX_JOB_OUTPUT)
                        .unwrap_or_default(),
                ),
            ),
            Effect::PrepareReload { id, spec, unit } => {
                (id, Reply::Reloadable(self.prepare_reload(&spec, &unit)))
            }
            Effect::RecordJobRun { id, run } => {
                let r = self
                    .engine
                    .store
                    .record_job_run(&self.lock.lease(), &run)
                    .map(|_| ())
                    .map_err(ExecError::from);
                if let Err(e) = &r
                    && e.is_lock_lost()
                {
                    self.lock.mark_lost(e.to_string());
                }
                (id, Reply::JobRecorded(r))
            }
            Effect::Audit { .. }
            | Effect::Emit(_)
            | Effect::SetTimer { .. }
            | Effect::Finish(_) => return None,
        })
    }

    /// The probe of a unit without a health check: it passes once seen running.
    fn runs(&self, unit: &UnitStatus) -> ProbeOutcome {
        let listed = RETRY.run(self.clock, || {
            self.engine
                .provider
                .list(self.fleet)
                .map_err(ExecError::from)
        });
        match listed {
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
        }
    }

    /// The units that run now, when `spec` refers to other units' addresses.
    fn live_for(&self, spec: &UnitSpec) -> Option<Result<Vec<UnitStatus>, ExecError>> {
        (!spec.bindings.is_empty()).then(|| {
            self.engine
                .provider
                .list(self.fleet)
                .map_err(|source| ExecError::ListForAddresses { source })
        })
    }

    /// `spec` with its addresses filled in from the units that run now.
    fn render(&self, spec: &UnitSpec) -> Result<UnitSpec, ExecError> {
        match self.live_for(spec) {
            None => Ok(spec.clone()),
            Some(live) => Ok(crate::address::render(spec, &live?)?),
        }
    }

    /// Starts a unit, its addresses filled in from the units that run at this moment (those
    /// of earlier waves included), not when the apply was decided; and fills in its gate's.
    fn start(&self, spec: &UnitSpec, gate: Option<Health>) -> Result<Started, ExecError> {
        let rendered = self.render(spec).map_err(|e| {
            ExecError::Provider(ProviderError::InvalidSpec {
                unit: spec.unit_id(),
                problem: e.to_string(),
            })
        })?;
        let status = self.engine.provider.start(&rendered)?;
        // As given when the check cannot be filled in, so that the probe reports the
        // reference it cannot fill in.
        let with = UnitSpec {
            health: gate.clone(),
            ..spec.clone()
        };
        let gate = match self.render(&with) {
            Ok(r) => r.health,
            Err(_) => gate,
        };
        Ok(Started { status, gate })
    }

    fn prepare_reload(&self, spec: &UnitSpec, unit: &str) -> Result<Reloadable, ExecError> {
        let spec = self.render(spec)?;
        let status = self
            .engine
            .provider
            .list(self.fleet)
            .map_err(|source| ExecError::List { source })?
            .into_iter()
            .find(|u| u.unit_id == unit)
            .ok_or_else(|| ExecError::UnitGone { unit: unit.into() })?;
        Ok(Reloadable { status, spec })
    }

    /// One batch of state writes under the lease; a lost lease stops the run.
    fn write(&self, records: Vec<Record>) -> Result<Vec<Written>, ExecError> {
        let provider = &self.engine.provider;
        let writes: Vec<Write> = records
            .into_iter()
            .map(|r| match r {
                Record::Starting(spec) => Write::UpsertInstance(spec_state(
                    &spec,
                    provider.endpoint_of(&spec.site, spec.host),
                    ObservedState::Unknown,
                )),
                Record::Unit {
                    status,
                    site,
                    host,
                    observed,
                } => Write::UpsertInstance(instance_state(
                    &status,
                    host.to_string(),
                    provider.endpoint_of(&site, host),
                    DesiredState::Running,
                    observed,
                )),
                Record::Delete(unit) => Write::DeleteInstance(UnitId::from_raw(unit)),
                Record::Intent {
                    op,
                    unit,
                    mut detail,
                } => {
                    detail.endpoint = Some(self.intent_endpoint(&unit, &detail));
                    Write::RecordIntent(NewIntent {
                        op,
                        unit: UnitId::from_raw(unit),
                        revision: RevisionNumber(self.revision),
                        detail: detail.to_value(),
                    })
                }
                Record::Close { id, outcome } => Write::CloseIntent { id, outcome },
            })
            .collect();
        let r = RETRY.run(self.clock, || {
            self.engine
                .store
                .write_atomically(&self.lock.lease(), writes.clone())
                .map_err(ExecError::from)
        });
        if let Err(e) = &r
            && e.is_lock_lost()
        {
            self.lock.mark_lost(e.to_string());
        }
        r
    }

    /// Every intent names the endpoint it acts on, so that recovery by another operator's
    /// phoenix (which cannot see that endpoint) knows not to resolve it: the endpoint of the
    /// site and host placed (a start), else the one recorded for the unit.
    fn intent_endpoint(&self, unit: &str, detail: &crate::intent::IntentDetail) -> String {
        let provider = &self.engine.provider;
        detail
            .site
            .as_deref()
            .map(|site| provider.endpoint_of(site, detail.host.unwrap_or(0)))
            .or_else(|| {
                self.engine
                    .store
                    .get_instance(self.fleet, &UnitId::from_raw(unit))
                    .ok()
                    .flatten()
                    .map(|r| r.state.endpoint)
                    .filter(|e| !e.is_empty())
            })
            .unwrap_or_else(|| provider.endpoint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::VirtualClock;

    #[test]
    fn the_retry_policy_retries_only_retryable_errors_and_only_so_often() {
        let clock = VirtualClock::new();
        let mut calls = 0;
        let r: Result<(), ExecError> = RETRY.run(&clock, || {
            calls += 1;
            Err(ExecError::Provider(ProviderError::Unavailable {
                provider: "fake".into(),
                reason: "down".into(),
            }))
        });
        assert!(r.is_err_and(|e| e.is_retryable()));
        assert_eq!(calls, RETRY.attempts);

        let mut calls = 0;
        let r: Result<(), ExecError> = RETRY.run(&clock, || {
            calls += 1;
            Err(ExecError::UnitGone { unit: "w".into() })
        });
        assert!(r.is_err_and(|e| e.is_fatal()));
        assert_eq!(calls, 1, "a fatal error is not retried");

        let mut calls = 0;
        let r = RETRY.run(&clock, || {
            calls += 1;
            if calls < 3 {
                Err(ExecError::Provider(ProviderError::Unavailable {
                    provider: "fake".into(),
                    reason: "down".into(),
                }))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r.ok(), Some(3));
    }
}
