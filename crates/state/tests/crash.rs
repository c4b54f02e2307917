//! `kill -9` of a process in the middle of an apply leaves a state from which the next apply can
//! recover: the lock names the dead holder, which can be taken over by token at once; every open
//! intent was recorded together with the instance record it concerns; nothing is half-written.
//!
//! The test re-runs its own binary as the child that gets killed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use phoenix_state::conformance::{POSTGRES_URL_VAR, unique_fleet};
use phoenix_state::{
    DesiredState, InstanceState, IntentOp, IntentOutcome, LockOwner, LockRequest, NewIntent,
    NewRevision, ObservedState, RevisionNumber, RevisionOutcome, StateError, StateStore, UnitId,
    Write,
};

const CHILD_STORE: &str = "PHOENIX_STATE_CRASH_CHILD_STORE";
const CHILD_FLEET: &str = "PHOENIX_STATE_CRASH_CHILD_FLEET";

fn open_store(spec: &str) -> Box<dyn StateStore> {
    match spec.split_once(':') {
        Some(("sqlite", dir)) => phoenix_state::open(std::path::Path::new(dir), None).unwrap(),
        Some(("postgres", url)) => {
            phoenix_state::open(std::path::Path::new("."), Some(url)).unwrap()
        }
        _ => panic!("bad store spec {spec}"),
    }
}

/// The child: an endless "apply" that starts units following the intent protocol.
fn run_child(spec: &str, fleet: &str) -> ! {
    let store = open_store(spec);
    let lease = store
        .acquire_lock(
            fleet,
            &LockRequest::new(LockOwner::this_process("apply"), Duration::from_secs(3600)),
        )
        .unwrap()
        .lease;
    let revision = store
        .create_revision(
            &lease,
            NewRevision {
                spec_json: "{}".into(),
                placement_json: "{}".into(),
                plan_hash: "h".into(),
                actor: "child".into(),
            },
        )
        .unwrap()
        .number;
    // Bounded, so that a parent that fails before killing us does not leave us running forever.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for i in 0.. {
        if std::time::Instant::now() > deadline {
            std::process::exit(3);
        }
        let instance = format!("web-{i}");
        let unit = UnitId::new(&instance, revision);
        let mut state = InstanceState {
            unit: unit.clone(),
            service: "web".into(),
            instance,
            revision,
            site: "local".into(),
            host: "local-0".into(),
            endpoint: "local://crash-test".into(),
            desired: DesiredState::Running,
            observed: ObservedState::Unknown,
            handle: serde_json::Value::Null,
            ports: serde_json::json!({"port": 8000 + i}),
        };
        let written = store
            .write_atomically(
                &lease,
                vec![
                    Write::UpsertInstance(state.clone()),
                    Write::RecordIntent(NewIntent {
                        op: IntentOp::Start,
                        unit,
                        revision,
                        detail: serde_json::Value::Null,
                    }),
                ],
            )
            .unwrap();
        let Some(phoenix_state::Written::Intent(intent)) = written.into_iter().nth(1) else {
            unreachable!()
        };
        if i == 0 {
            println!("CHILD-READY");
        }
        // "Start the process", then record what it produced and close the intent.
        state.observed = ObservedState::Starting;
        state.handle = serde_json::json!({"pid": 100_000 + i});
        store
            .write_atomically(
                &lease,
                vec![
                    Write::UpsertInstance(state),
                    Write::CloseIntent {
                        id: intent.id,
                        outcome: IntentOutcome::Done,
                    },
                ],
            )
            .unwrap();
    }
    unreachable!()
}

fn kill_nine_mid_apply(spec: &str, test_name: &str) {
    let fleet = unique_fleet("crash");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_STORE, spec)
        .env(CHILD_FLEET, &fleet)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.any(|l| l.is_ok_and(|l| l.contains("CHILD-READY")));
    if ready {
        std::thread::sleep(Duration::from_millis(300));
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no rollback code, nothing runs.
    let status = child.wait().unwrap();
    assert!(ready, "the child never got going ({status})");
    assert!(
        !status.success(),
        "the child must have been killed, not have finished"
    );
    let dead_pid = child.id();

    let store = open_store(spec);
    let request = LockRequest::new(LockOwner::this_process("apply"), Duration::from_secs(60));
    let holder = match store.acquire_lock(&fleet, &request) {
        Err(StateError::LockHeld { holder, .. }) => holder,
        other => panic!("the dead apply's lease must still be there, got {other:?}"),
    };
    assert_eq!(holder.owner.pid, dead_pid);
    assert_eq!(holder.owner.host(), phoenix_state::this_host());
    // The engine checks that pid is gone on this host, then takes over by token.
    let grant = store
        .acquire_lock(
            &fleet,
            &LockRequest {
                take_over_token: Some(holder.token),
                ..request
            },
        )
        .unwrap();
    assert_eq!(grant.took_over.map(|h| h.owner.pid), Some(dead_pid));

    let instances = store.list_instances(&fleet).unwrap();
    let open = store.open_intents(&fleet).unwrap();
    assert!(
        instances.len() > 1,
        "the child made progress before it was killed"
    );
    assert!(
        open.len() <= 1,
        "only the action in flight can be open: {open:?}"
    );
    for intent in &open {
        assert_eq!(intent.lease_token, holder.token, "left by the dead apply");
        let record = instances.iter().find(|r| r.state.unit == intent.unit);
        let record = record.expect("an open start intent always has its instance record");
        assert_eq!(record.state.desired, DesiredState::Running);
    }
    // Every unit without an open intent was fully recorded.
    for record in instances
        .iter()
        .filter(|r| !open.iter().any(|i| i.unit == r.state.unit))
    {
        assert_eq!(record.state.observed, ObservedState::Starting, "{record:?}");
        assert!(record.state.handle.get("pid").is_some(), "{record:?}");
    }
    // Recovery: resolve the open intents and mark the interrupted revision.
    for intent in open {
        store
            .close_intent(
                &grant.lease,
                intent.id,
                IntentOutcome::Failed {
                    reason: "interrupted".into(),
                },
            )
            .unwrap();
    }
    store
        .set_revision_outcome(
            &grant.lease,
            RevisionNumber(1),
            RevisionOutcome::Failed {
                reason: "interrupted".into(),
            },
        )
        .unwrap();
    assert!(store.open_intents(&fleet).unwrap().is_empty());
}

#[test]
fn kill_nine_mid_apply_sqlite() {
    if let (Ok(spec), Ok(fleet)) = (std::env::var(CHILD_STORE), std::env::var(CHILD_FLEET)) {
        run_child(&spec, &fleet);
    }
    let dir = tempfile::tempdir().unwrap();
    kill_nine_mid_apply(
        &format!("sqlite:{}", dir.path().display()),
        "kill_nine_mid_apply_sqlite",
    );
    let connection =
        rusqlite::Connection::open(dir.path().join(phoenix_state::DATABASE_FILE)).unwrap();
    let check: String = connection
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn kill_nine_mid_apply_postgres() {
    if let (Ok(spec), Ok(fleet)) = (std::env::var(CHILD_STORE), std::env::var(CHILD_FLEET)) {
        run_child(&spec, &fleet);
    }
    let Some(_) = phoenix_state::conformance::PostgresHarness::from_env() else {
        return;
    };
    let url = std::env::var(POSTGRES_URL_VAR).unwrap();
    kill_nine_mid_apply(&format!("postgres:{url}"), "kill_nine_mid_apply_postgres");
}
