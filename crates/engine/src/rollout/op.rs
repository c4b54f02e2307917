//! Guarded operations: an intent written before a provider call and closed after it.

use super::*;

#[derive(Debug, Clone)]
pub(super) enum OpKind {
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
pub(super) enum OpOut {
    Started(UnitStatus, Option<Health>),
    Done,
    Failed(String),
}

pub(super) enum OpAt {
    Intent,
    Call(IntentId),
    /// The start failed: the unit is being stopped in case the provider created it.
    Cleanup(IntentId, String),
    Close(Box<OpOut>),
}

/// A provider operation announced by an intent before it happens and closed after.
pub(super) struct Op {
    pub(super) kind: OpKind,
    pub(super) at: OpAt,
}

pub(super) fn intent_id(written: &[Written]) -> Option<IntentId> {
    written.iter().find_map(|w| match w {
        Written::Intent(i) => Some(i.id),
        _ => None,
    })
}

/// The reason of a failed start: a spawn or spec error already says the unit cannot start
/// (naming the step again read "cannot start: cannot start unit `c-0@r3`: ...").
pub(super) fn start_reason(e: &ExecError) -> String {
    use phoenix_provider_api::ProviderError;
    match e {
        ExecError::Provider(ProviderError::Spawn { .. } | ProviderError::InvalidSpec { .. }) => {
            e.to_string()
        }
        _ => format!("cannot start: {e}"),
    }
}

impl Op {
    pub(super) fn begin(kind: OpKind, task: TaskId, cx: &mut Core) -> Op {
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

    pub(super) fn unit(&self) -> String {
        match &self.kind {
            OpKind::Start { spec, .. } => spec.unit_id(),
            OpKind::Stop { unit, .. }
            | OpKind::Snapshot { unit, .. }
            | OpKind::Restore { unit, .. } => unit.clone(),
        }
    }

    /// Advances on a reply; `Some` when the operation is over.
    pub(super) fn on(&mut self, reply: Reply, task: TaskId, cx: &mut Core) -> Option<OpOut> {
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
    pub(super) fn closed(&self, out: OpOut, cx: &mut Core) -> OpOut {
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

pub(super) fn audit_outcome(out: &OpOut) -> AuditOutcome {
    match out {
        OpOut::Failed(reason) => AuditOutcome::Failed {
            reason: reason.clone(),
        },
        _ => AuditOutcome::Ok,
    }
}
