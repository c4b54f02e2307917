//! The local hash-chained log: appends, verification against every kind of tampering, torn
//! tails, and concurrent appenders (threads and processes).

use std::path::Path;
use std::sync::Arc;

use phoenix_audit::{
    AuditEntry, AuditOutcome, ChainHead, LocalLog, MemoryRecorder, ProblemKind, Recorder,
    VerifyError,
};
use serde_json::{Value, json};

fn entry(i: u64) -> AuditEntry {
    let at = jiff::Timestamp::from_second(1_780_000_000 + i as i64).unwrap();
    let mut entry = AuditEntry::new(
        at,
        "alice@host-1",
        "demo",
        &format!("unit.start web-{i}@r3"),
        if i.is_multiple_of(2) {
            AuditOutcome::Ok
        } else {
            AuditOutcome::Failed {
                reason: "gate timed out".into(),
            }
        },
    );
    entry.revision = Some(3);
    entry.plan_hash = Some("9f86d081".into());
    entry.detail = json!({"port": 8000 + i, "tags": ["a", "b"], "nested": {"pid": 100 + i}});
    entry
}

fn log_with(dir: &Path, n: u64) -> LocalLog {
    let log = LocalLog::open_in(dir).unwrap();
    for i in 0..n {
        log.record(entry(i)).unwrap();
    }
    log
}

fn lines(log: &LocalLog) -> Vec<String> {
    std::fs::read_to_string(log.path())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(log: &LocalLog, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(log.path(), text).unwrap();
}

fn problems(log: &LocalLog, anchor: Option<&ChainHead>) -> Vec<phoenix_audit::ChainProblem> {
    let result = match anchor {
        Some(anchor) => log.verify_against(anchor),
        None => log.verify(),
    };
    match result {
        Err(VerifyError::Tampered { problems, .. }) => problems,
        other => panic!("expected tampering to be detected, got {other:?}"),
    }
}

#[test]
fn an_untouched_chain_verifies_and_reports_its_head() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 5);
    let report = log.verify().unwrap();
    assert_eq!(report.records, 5);
    let records = log.read_all().unwrap();
    assert_eq!(report.head, Some(records[4].head()));
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(records[0].prev_hash, phoenix_audit::GENESIS_HASH);
    for pair in records.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    assert_eq!(records[2].entry, entry(2));
    log.verify_against(&records[4].head()).unwrap();
    log.verify_against(&records[1].head()).unwrap();
}

#[test]
fn an_empty_or_missing_log_verifies_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let report = phoenix_audit::verify_file(&dir.path().join("absent.jsonl"), None).unwrap();
    assert_eq!((report.records, report.head), (0, None));
    let log = LocalLog::open_in(dir.path()).unwrap();
    assert_eq!(log.verify().unwrap().records, 0);
    assert!(log.read_all().unwrap().is_empty());
}

#[test]
fn records_are_one_canonical_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 2);
    for line in lines(&log) {
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(phoenix_audit::canonical_json(&value), line);
        for field in [
            "seq",
            "prev_hash",
            "hash",
            "at",
            "actor",
            "fleet",
            "revision",
            "plan_hash",
            "step",
            "outcome",
            "detail",
        ] {
            assert!(value.get(field).is_some(), "missing {field} in {line}");
        }
    }
}

#[test]
fn the_chain_continues_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    drop(log_with(dir.path(), 3));
    let log = LocalLog::open_in(dir.path()).unwrap();
    let record = log.record(entry(9)).unwrap();
    assert_eq!(record.seq, 4);
    assert_eq!(log.verify().unwrap().head, Some(record.head()));
}

/// Changes one JSON value so that it differs (keeping the line valid JSON).
fn tweak(value: &mut Value) {
    *value = match value.take() {
        Value::Null => json!("x"),
        Value::Bool(b) => json!(!b),
        Value::Number(n) => json!(n.as_u64().map_or(1, |n| n + 1)),
        Value::String(s) => json!(format!("{s}x")),
        Value::Array(mut items) => {
            items.push(json!(1));
            Value::Array(items)
        }
        Value::Object(mut map) => {
            map.insert("added".into(), json!(true));
            Value::Object(map)
        }
    }
}

#[test]
fn editing_any_field_of_any_record_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 4);
    let original = lines(&log);
    for (index, line) in original.iter().enumerate() {
        let value: Value = serde_json::from_str(line).unwrap();
        let keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        let mut edits: Vec<(String, Value)> = Vec::new();
        for key in &keys {
            let mut edited = value.clone();
            tweak(&mut edited[key.as_str()]);
            edits.push((format!("edit {key}"), edited));
            let mut removed = value.clone();
            removed.as_object_mut().unwrap().remove(key);
            edits.push((format!("remove {key}"), removed));
        }
        let mut nested = value.clone();
        tweak(&mut nested["detail"]["nested"]["pid"]);
        edits.push(("edit detail.nested.pid".into(), nested));
        let mut added = value.clone();
        added["extra"] = json!("sneaked in");
        edits.push(("add a field".into(), added));

        for (what, edited) in edits {
            let mut tampered = original.clone();
            tampered[index] = serde_json::to_string(&edited).unwrap();
            write_lines(&log, &tampered);
            let found = problems(&log, None);
            assert_eq!(
                found[0].line,
                index + 1,
                "{what} on line {}: {found:?}",
                index + 1
            );
        }
    }
    write_lines(&log, &original);
    log.verify().unwrap();
}

#[test]
fn an_edit_with_a_recomputed_hash_still_breaks_the_next_link() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 3);
    let mut tampered = lines(&log);
    let mut value: Value = serde_json::from_str(&tampered[1]).unwrap();
    value["actor"] = json!("mallory@host");
    value["hash"] = json!(phoenix_audit::record_hash(&value));
    tampered[1] = phoenix_audit::canonical_json(&value);
    write_lines(&log, &tampered);
    let found = problems(&log, None);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].line, found[0].seq), (3, Some(3)));
    assert!(matches!(found[0].kind, ProblemKind::BrokenLink { .. }));
}

#[test]
fn removing_a_middle_record_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 5);
    let mut tampered = lines(&log);
    tampered.remove(2);
    write_lines(&log, &tampered);
    let found = problems(&log, None);
    assert!(found.iter().all(|p| p.line == 3), "{found:?}");
    assert!(
        found.iter().any(|p| p.kind
            == ProblemKind::OutOfSequence {
                expected: 3,
                found: 4
            }),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| matches!(p.kind, ProblemKind::BrokenLink { .. })),
        "{found:?}"
    );
}

#[test]
fn removing_the_first_record_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 3);
    let mut tampered = lines(&log);
    tampered.remove(0);
    write_lines(&log, &tampered);
    let found = problems(&log, None);
    assert_eq!(found[0].line, 1);
    assert!(found.iter().any(|p| p.kind
        == ProblemKind::OutOfSequence {
            expected: 1,
            found: 2
        }));
}

#[test]
fn removing_the_last_record_is_detected_only_against_an_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 4);
    let anchor = log.verify().unwrap().head.unwrap();
    let mut tampered = lines(&log);
    tampered.pop();
    write_lines(&log, &tampered);
    // A shortened chain is still a valid chain...
    assert_eq!(log.verify().unwrap().records, 3);
    // ...but not against the head anchored before.
    let found = problems(&log, Some(&anchor));
    assert_eq!(
        found[0].kind,
        ProblemKind::MissingAnchoredRecord {
            anchored_seq: 4,
            last_seq: Some(3)
        },
        "{found:?}"
    );
}

#[test]
fn a_log_rewritten_with_fresh_hashes_is_detected_against_an_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 3);
    let anchor = log.verify().unwrap().head.unwrap();
    std::fs::remove_file(log.path()).unwrap();
    drop(log);
    let forged = LocalLog::open_in(dir.path()).unwrap();
    for i in 10..13 {
        forged.record(entry(i)).unwrap();
    }
    forged.verify().unwrap();
    let found = problems(&forged, Some(&anchor));
    assert!(
        matches!(found[0].kind, ProblemKind::AnchorMismatch { .. }),
        "{found:?}"
    );
    assert_eq!((found[0].line, found[0].seq), (3, Some(3)));
}

#[test]
fn reordering_records_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 4);
    let mut tampered = lines(&log);
    tampered.swap(1, 2);
    write_lines(&log, &tampered);
    let found = problems(&log, None);
    assert_eq!(found[0].line, 2);
    assert!(found.iter().any(|p| p.line == 2
        && p.kind
            == ProblemKind::OutOfSequence {
                expected: 2,
                found: 3
            }));
}

#[test]
fn inserting_a_record_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 3);
    let mut tampered = lines(&log);
    let copy = tampered[1].clone();
    tampered.insert(2, copy);
    write_lines(&log, &tampered);
    let found = problems(&log, None);
    assert_eq!(found[0].line, 3);
    assert!(found.iter().any(|p| p.kind
        == ProblemKind::OutOfSequence {
            expected: 3,
            found: 2
        }));
}

#[test]
fn a_garbage_line_is_reported_with_its_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 3);
    let mut tampered = lines(&log);
    tampered[1] = "not json".into();
    write_lines(&log, &tampered);
    let found = problems(&log, None);
    assert_eq!(
        found.len(),
        1,
        "the next record's link cannot be checked, so only line 2 is reported: {found:?}"
    );
    assert!(matches!(found[0].kind, ProblemKind::Unparseable { .. }));
    assert_eq!(found[0].line, 2);
    let message = VerifyError::Tampered {
        path: log.path().into(),
        lines: 3,
        problems: found,
    }
    .to_string();
    assert!(message.contains("line 2"), "{message}");
}

#[test]
fn a_blank_line_is_reported_at_its_file_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 3);
    let mut tampered = lines(&log);
    tampered.insert(1, String::new());
    write_lines(&log, &tampered);
    let found = problems(&log, None);
    assert_eq!(found[0].line, 2, "{found:?}");
    assert!(matches!(found[0].kind, ProblemKind::Unparseable { .. }));
}

#[test]
fn a_truncated_tail_is_detected_and_set_aside_by_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 3);
    let full = std::fs::read(log.path()).unwrap();
    // A crash in the middle of writing the fourth record.
    let fourth = {
        let other = tempfile::tempdir().unwrap();
        let l = log_with(other.path(), 4);
        lines(&l)[3].clone()
    };
    let mut torn = full.clone();
    torn.extend_from_slice(&fourth.as_bytes()[..40]);
    std::fs::write(log.path(), &torn).unwrap();

    let found = problems(&log, None);
    assert_eq!(
        found,
        [phoenix_audit::ChainProblem {
            line: 4,
            seq: None,
            kind: ProblemKind::TruncatedTail { bytes: 40 }
        }]
    );
    assert_eq!(
        log.read_all().unwrap().len(),
        3,
        "read_all skips the torn line"
    );

    // A fresh process (no cached head) appends: the torn bytes go aside, the chain goes on.
    let reopened = LocalLog::open_in(dir.path()).unwrap();
    let record = reopened.record(entry(3)).unwrap();
    assert_eq!(record.seq, 4);
    assert_eq!(reopened.verify().unwrap().records, 4);
    let aside = std::fs::read_to_string(dir.path().join("audit.jsonl.torn")).unwrap();
    assert!(
        aside.contains(&format!("\"offset\":{}", full.len())),
        "{aside}"
    );
}

#[test]
fn a_log_cut_in_the_middle_of_a_record_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 3);
    let full = std::fs::read(log.path()).unwrap();
    std::fs::write(log.path(), &full[..full.len() - 10]).unwrap();
    let found = problems(&log, None);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line, 3);
    assert!(matches!(found[0].kind, ProblemKind::TruncatedTail { .. }));
}

#[test]
fn appending_after_a_corrupt_last_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 2);
    let mut tampered = lines(&log);
    tampered[1] = "{}".into();
    write_lines(&log, &tampered);
    let reopened = LocalLog::open_in(dir.path()).unwrap();
    match reopened.record(entry(5)) {
        Err(phoenix_audit::AuditError::CorruptLog { line: 2, .. }) => {}
        other => panic!("must refuse to chain onto a corrupt record, got {other:?}"),
    }
}

#[test]
fn concurrent_appenders_in_one_process_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let shared = Arc::new(LocalLog::open_in(dir.path()).unwrap());
    std::thread::scope(|s| {
        for t in 0..3 {
            let log = Arc::clone(&shared);
            s.spawn(move || {
                for i in 0..25 {
                    log.record(entry(t * 100 + i)).unwrap();
                }
            });
        }
        // Separate instances on the same file: serialised by the file lock, not the mutex.
        for t in 3..5 {
            let path = dir.path().to_owned();
            s.spawn(move || {
                let log = LocalLog::open_in(&path).unwrap();
                for i in 0..25 {
                    log.record(entry(t * 100 + i)).unwrap();
                }
            });
        }
    });
    let report = shared.verify().unwrap();
    assert_eq!(report.records, 125);
    assert_eq!(report.head.unwrap().seq, 125);
}

const CHILD_ENV: &str = "PHOENIX_AUDIT_TEST_CHILD_STATE_DIR";

#[test]
fn concurrent_processes_keep_one_chain() {
    if let Ok(state_dir) = std::env::var(CHILD_ENV) {
        // We are a child: append and exit.
        let log = LocalLog::open_in(Path::new(&state_dir)).unwrap();
        for i in 0..30 {
            log.record(entry(i)).unwrap();
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "concurrent_processes_keep_one_chain",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let log = LocalLog::open_in(dir.path()).unwrap();
    assert_eq!(log.verify().unwrap().records, 90);
}

#[test]
fn memory_and_local_recorders_chain_identically() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 4);
    let memory = MemoryRecorder::new();
    for i in 0..4 {
        memory.record(entry(i)).unwrap();
    }
    assert_eq!(memory.records(), log.read_all().unwrap());
    assert_eq!(memory.steps()[1], "unit.start web-1@r3");
}
