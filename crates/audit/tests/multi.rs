//! `MultiRecorder` fans out to every recorder and reports every failure.

use std::sync::Arc;

use phoenix_audit::{
    AuditEntry, AuditError, AuditOutcome, AuditRecord, MemoryRecorder, MultiRecorder, Recorder,
};

struct Unreachable;

impl Recorder for Unreachable {
    fn record(&self, _entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        Err(AuditError::External {
            recorder: "ledger".into(),
            retryable: true,
            source: "connection refused".into(),
        })
    }
}

fn entry(step: &str) -> AuditEntry {
    AuditEntry::new(
        "2026-05-01T12:00:00Z".parse().unwrap(),
        "alice@host",
        "demo",
        step,
        AuditOutcome::Ok,
    )
}

#[test]
fn every_recorder_gets_every_entry() {
    let (a, b) = (
        Arc::new(MemoryRecorder::new()),
        Arc::new(MemoryRecorder::new()),
    );
    let multi = MultiRecorder::new()
        .with("local", Arc::clone(&a))
        .with("mirror", Arc::clone(&b));
    assert_eq!(multi.len(), 2);
    let first = multi.record(entry("apply.start")).unwrap();
    multi.record(entry("apply.done")).unwrap();
    assert_eq!(first, a.records()[0]);
    assert_eq!(a.steps(), ["apply.start", "apply.done"]);
    assert_eq!(b.steps(), ["apply.start", "apply.done"]);
}

#[test]
fn a_failing_recorder_does_not_stop_the_others_and_is_reported() {
    let local = Arc::new(MemoryRecorder::new());
    let multi = MultiRecorder::new()
        .with("ledger", Unreachable)
        .with("local", Arc::clone(&local));
    match multi.record(entry("gate.pass")) {
        Err(error @ AuditError::Recorders { .. }) => {
            assert!(error.is_retryable());
            let AuditError::Recorders { failures } = &error else {
                unreachable!()
            };
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].recorder, "ledger");
            assert!(error.to_string().contains("ledger"), "{error}");
        }
        other => panic!("the failure must be reported, got {other:?}"),
    }
    assert_eq!(
        local.steps(),
        ["gate.pass"],
        "the local log still recorded it"
    );
    let each = multi.record_each(&entry("rollback"));
    assert!(each[0].1.is_err() && each[1].1.is_ok());
}

#[test]
fn an_empty_multi_recorder_refuses() {
    assert!(matches!(
        MultiRecorder::new().record(entry("x")),
        Err(AuditError::NoRecorders)
    ));
}
