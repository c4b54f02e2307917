//! The tasks of a run: change an instance, stop a unit, run a job, reload a unit, watch a
//! canary window, roll an instance back. Each is a small state machine fed the replies to its
//! own effects.

use super::*;

pub(super) enum ChangeAt {
    Snapshot(Op),
    StopOld(Op, bool),
    Start(Op),
    Gate(HealthWait, UnitStatus, Millis),
    Record(ProbeOutcome, Millis),
    Done,
}

pub(super) struct ChangeTask {
    pub(super) sa: ServiceCtx,
    pub(super) action: InstanceAction,
    pub(super) mode: Mode,
    pub(super) spec: UnitSpec,
    pub(super) unit: String,
    pub(super) idx: usize,
    pub(super) at: ChangeAt,
}

pub(super) struct StopTask {
    pub(super) instance: String,
    pub(super) unit: String,
    /// Blue units: mark the changed instance's old unit stopped.
    pub(super) blue: bool,
    pub(super) op: Op,
}

/// How one attempt of a job ended.
#[derive(Debug, Clone)]
pub(super) struct Attempt {
    pub(super) outcome: JobOutcome,
    pub(super) exit_code: Option<i64>,
    pub(super) detail: String,
    pub(super) output: String,
}

pub(super) enum JobAt {
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

pub(super) struct JobTask {
    pub(super) ja: JobAction,
    pub(super) spec: UnitSpec,
    pub(super) unit: String,
    pub(super) total: u32,
    pub(super) started_at: Millis,
    pub(super) attempts: u32,
    pub(super) last: Attempt,
    pub(super) at: JobAt,
}

pub(super) enum ReloadAt {
    Prepare,
    Command(Reloadable),
    Gate(HealthWait),
    Done,
}

pub(super) struct ReloadTask {
    pub(super) ra: ReloadAction,
    pub(super) at: ReloadAt,
}

pub(super) struct AnalysisTask {
    pub(super) sa: ServiceCtx,
    pub(super) ms: u64,
    pub(super) wait: HealthWait,
}

pub(super) enum RollbackAt {
    StopNew(Op),
    Restore(Op),
    Start(Op),
    Gate(HealthWait, UnitStatus, UnitSpec),
    Record(String),
    Done,
}

pub(super) struct RollbackTask {
    pub(super) index: usize,
    pub(super) c: Changed,
    pub(super) parts: Vec<String>,
    pub(super) at: RollbackAt,
}

/// `1500 ms`, `2s`, `5m` for messages.
pub(super) fn human_ms(ms: u64) -> String {
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) && ms > 0 {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

impl TaskKind {
    pub(super) fn change(
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

    pub(super) fn stop(
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

    pub(super) fn job(ja: JobAction, id: TaskId, cx: &mut Core) -> Option<TaskKind> {
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

    pub(super) fn reload(ra: ReloadAction, id: TaskId, cx: &mut Core) -> Option<TaskKind> {
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

    pub(super) fn analysis(
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

    pub(super) fn rollback(
        index: usize,
        c: Changed,
        id: TaskId,
        cx: &mut Core,
    ) -> Option<TaskKind> {
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

    pub(super) fn on(&mut self, ev: Ev, id: TaskId, cx: &mut Core, effect: EffectId) -> Progress {
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
    pub(super) fn after_snapshot(&mut self, id: TaskId, cx: &mut Core) -> Progress {
        if let Some(old) = self.action.old().cloned()
            && (self.mode == Mode::StopFirst || !old.running)
        {
            self.at = ChangeAt::StopOld(self.stop_old(&old, id, cx), true);
            return Progress::Pending;
        }
        self.start(id, cx)
    }

    pub(super) fn stop_old(&self, old: &OldUnit, id: TaskId, cx: &mut Core) -> Op {
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

    pub(super) fn start(&mut self, id: TaskId, cx: &mut Core) -> Progress {
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

    pub(super) fn on(&mut self, ev: Ev, id: TaskId, cx: &mut Core, effect: EffectId) -> Progress {
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
    pub(super) fn on(&mut self, ev: Ev, id: TaskId, cx: &mut Core) -> Progress {
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
    pub(super) fn attempt(&mut self, n: u32, id: TaskId, cx: &mut Core) {
        if n > 1 {
            let at = cx.now.saturating_add(self.ja.settings.delay_before(n));
            self.at = JobAt::Backoff(cx.timer(id, at), n);
            return;
        }
        self.begin_attempt(n, id, cx);
    }

    pub(super) fn begin_attempt(&mut self, n: u32, id: TaskId, cx: &mut Core) {
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

    pub(super) fn inspect(status: &UnitStatus, id: TaskId, cx: &mut Core) {
        let unit = status.unit_id.clone();
        cx.ask(id, |id| Effect::Inspect { id, unit });
    }

    /// The attempt is over (`seen` is the unit as last seen): read its output.
    pub(super) fn ended(&mut self, seen: UnitStatus, attempt: Attempt, id: TaskId, cx: &mut Core) {
        let unit = seen.clone();
        cx.ask(id, |id| Effect::OutputTail { id, unit });
        self.at = JobAt::Output(seen, attempt);
    }

    /// After an attempt: succeed, retry, or give up.
    pub(super) fn after_attempt(&mut self, id: TaskId, cx: &mut Core) -> Progress {
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
    pub(super) fn finish(&mut self, id: TaskId, cx: &mut Core) -> Progress {
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

    pub(super) fn report(&mut self, run: &JobRun, cx: &mut Core) -> Progress {
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

    pub(super) fn on(&mut self, ev: Ev, id: TaskId, cx: &mut Core) -> Progress {
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
                // A timer of an earlier look is stale; only the current one is consumed.
                let timer = if timer == Some(fired) { None } else { timer };
                self.at = JobAt::Poll {
                    status,
                    deadline,
                    poll,
                    last_error,
                    timer,
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
    pub(super) fn on(&mut self, ev: Ev, id: TaskId, cx: &mut Core, effect: EffectId) -> Progress {
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
    pub(super) fn on(&mut self, ev: Ev, id: TaskId, cx: &mut Core, effect: EffectId) -> Progress {
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
    pub(super) fn after_stop(&mut self, id: TaskId, cx: &mut Core) -> Progress {
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
    pub(super) fn restart(&mut self, id: TaskId, cx: &mut Core) -> Progress {
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

    pub(super) fn done(&mut self, cx: &mut Core) -> Progress {
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

    pub(super) fn old_unit(&self) -> String {
        self.c
            .old
            .as_ref()
            .map(|o| o.unit_id.clone())
            .unwrap_or_default()
    }

    pub(super) fn on(&mut self, ev: Ev, id: TaskId, cx: &mut Core, effect: EffectId) -> Progress {
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
