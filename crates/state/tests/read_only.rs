//! `open_read_only`: what the reading commands (`status`, `history`, `logs`) open. Regression
//! tests for "a wrong or read-only state dir misleads": `status --state-dir /typo` created
//! `state.db` and advised `phoenix apply` (which would deploy a second copy), and a read-only
//! copy of a state dir could not be read at all ("unable to open database file").

use phoenix_state::{
    DATABASE_FILE, LockOwner, LockRequest, NewRevision, SqliteStore, StateError, StateStore,
    open_read_only,
};
use std::path::Path;
use std::time::Duration;

/// A store in `dir` with one revision of fleet `demo`; returned open, so that its last commit
/// may still be in the `-wal` file only.
fn store_with_a_revision(dir: &Path) -> SqliteStore {
    let store = SqliteStore::open(dir).unwrap();
    let grant = store
        .acquire_lock(
            "demo",
            &LockRequest::new(LockOwner::this_process("apply"), Duration::from_secs(30)),
        )
        .unwrap();
    store
        .create_revision(
            &grant.lease,
            NewRevision {
                spec_json: "{}".into(),
                placement_json: "[]".into(),
                plan_hash: "abc".into(),
                actor: "alice@host".into(),
            },
        )
        .unwrap();
    store.release_lock(&grant.lease).unwrap();
    store
}

/// Serialises the tests that count snapshot directories (they are named by pid).
static SNAPSHOTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn snapshots_of_this_process() -> usize {
    let prefix = format!("phoenix-state-snapshot-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_mistyped_state_dir_is_not_created_and_the_error_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let typo = tmp.path().join("typo");
    let err = open_read_only(&typo, None).err().expect("must refuse");
    assert!(matches!(err, StateError::NoStateDir { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "no Phoenix state in {} (no state.db)",
            typo.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("check --state-dir") && text.contains("`phoenix apply`"),
        "{text}"
    );
    assert!(!typo.exists(), "the state dir was created");
    // An existing directory without state.db stays empty.
    let err = open_read_only(tmp.path(), Some(""))
        .err()
        .expect("must refuse");
    assert!(matches!(err, StateError::NoStateDir { .. }), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn a_read_only_store_reads_what_was_committed_and_refuses_to_write() {
    let tmp = tempfile::tempdir().unwrap();
    let writer = store_with_a_revision(tmp.path());
    let reader = open_read_only(tmp.path(), None).unwrap();
    assert_eq!(reader.list_fleets().unwrap(), ["demo"]);
    assert_eq!(reader.list_revisions("demo").unwrap().len(), 1);
    let request = LockRequest::new(LockOwner::this_process("apply"), Duration::from_secs(30));
    assert!(reader.acquire_lock("demo", &request).is_err(), "it wrote");
    drop(writer);
}

#[test]
fn a_read_only_copy_with_an_uncheckpointed_wal_and_no_shm_is_readable() {
    let _serial = SNAPSHOTS.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original");
    let writer = store_with_a_revision(&original);
    let wal = original.join(format!("{DATABASE_FILE}-wal"));
    assert!(
        std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0),
        "the commit is not in the WAL; the test would prove nothing"
    );
    // The copy a backup or `cp -r` makes while the writer runs: db and log, no -shm.
    let copy = tmp.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(original.join(DATABASE_FILE), copy.join(DATABASE_FILE)).unwrap();
    std::fs::copy(&wal, copy.join(format!("{DATABASE_FILE}-wal"))).unwrap();
    drop(writer);
    set_mode(&copy.join(DATABASE_FILE), 0o444);
    set_mode(&copy.join(format!("{DATABASE_FILE}-wal")), 0o444);
    set_mode(&copy, 0o555);
    let privileged = std::fs::write(copy.join("probe"), "").is_ok();
    if privileged {
        // Root ignores the mode: SQLite creates the -shm file and reads in place.
        eprintln!("note: privileges ignore directory modes; the copy is read in place");
        let _ = std::fs::remove_file(copy.join("probe"));
    }
    let reader = open_read_only(&copy, None).unwrap();
    assert_eq!(reader.list_revisions("demo").unwrap().len(), 1);
    if !privileged {
        assert_eq!(snapshots_of_this_process(), 1, "not read from a snapshot");
    }
    drop(reader);
    assert_eq!(snapshots_of_this_process(), 0, "a snapshot was left behind");
    set_mode(&copy, 0o755);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Regression (errors repeat their cause): "cannot open ... state.db: attempt to write a
/// readonly database: Error code 1544: attempt to write a readonly database" — the driver's
/// error was both printed and chained.
#[test]
fn a_database_error_states_its_cause_once() {
    let _serial = SNAPSHOTS.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join(DATABASE_FILE), "not a database, just text").unwrap();
    let err = open_read_only(tmp.path(), None).err().expect("must fail");
    let mut msgs = vec![err.to_string()];
    let mut next = std::error::Error::source(&err);
    while let Some(cause) = next {
        msgs.push(cause.to_string());
        next = cause.source();
    }
    // The store's step, then the driver's message; the driver error is not chained again
    // (its own source repeats the message with the code: "Error code 26: ...").
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    for pair in msgs.windows(2) {
        assert!(
            !pair[0].contains(&pair[1]) && !pair[1].contains(&pair[0]),
            "repeated: {msgs:?}"
        );
    }
    assert_eq!(snapshots_of_this_process(), 0, "a snapshot was left behind");
}
