//! Each fleet's signed audit chain in the state store, and what verification catches.

use std::sync::Arc;

use phoenix_audit::{
    AuditEntry, AuditError, AuditOutcome, AuditRecord, ChainHead, LocalLog, OperatorKey, Recorder,
    Standing, StoreChain, import_legacy_log, read_chain, verify_chain,
};
use phoenix_state::{AuditRow, SqliteStore, StateStore};

fn at() -> jiff::Timestamp {
    "2026-12-01T12:00:00Z".parse().unwrap()
}

fn entry(fleet: &str, step: &str) -> AuditEntry {
    AuditEntry::new(at(), "alice@host", fleet, step, AuditOutcome::Ok)
}

struct Fixture {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    store: Arc<dyn StateStore>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let store: Arc<dyn StateStore> = Arc::new(SqliteStore::open(&path).unwrap());
    Fixture {
        _dir: dir,
        dir: path,
        store,
    }
}

impl Fixture {
    fn key(&self, name: &str) -> OperatorKey {
        OperatorKey::load_or_create(&self.dir.join(format!("{name}.key")))
            .unwrap()
            .0
    }
    fn chain(&self, name: &str) -> StoreChain {
        StoreChain::new(self.store.clone(), self.key(name))
    }
    fn anchor_head(&self, fleet: &str) {
        let head = self.store.audit_head(fleet).unwrap().unwrap();
        self.store
            .anchor_audit_head(fleet, head.seq, &head.hash)
            .unwrap();
    }
    fn verify(&self, fleet: &str) -> phoenix_audit::ChainReport {
        let anchor = self.store.audit_anchor(fleet).unwrap().map(|a| ChainHead {
            seq: a.seq,
            hash: a.head_hash,
        });
        verify_chain(
            fleet,
            &self.store.audit_records(fleet).unwrap(),
            &self.store.audit_keys(fleet).unwrap(),
            anchor.as_ref(),
        )
    }
    /// Changes the database directly, as anyone with write access to the store could.
    fn sql(&self, sql: &str) {
        let conn = rusqlite::Connection::open(self.dir.join("state.db")).unwrap();
        conn.execute_batch(sql).unwrap();
    }
}

#[test]
fn a_fresh_chain_allows_its_first_signer_and_verifies() {
    let f = fixture();
    let chain = f.chain("alice");
    assert_eq!(chain.standing("demo").unwrap(), Standing::FirstSigner);
    let r = chain.record(entry("demo", "apply.start")).unwrap();
    assert_eq!(r.seq, 2, "record 1 allows the key");
    assert_eq!(chain.standing("demo").unwrap(), Standing::Allowed);
    chain.record(entry("demo", "apply.finish")).unwrap();
    f.anchor_head("demo");
    let report = f.verify("demo");
    assert!(report.verified(), "{:?}", report.problems);
    assert_eq!(report.records, 3);
    assert!(report.unanchored.is_empty());
    let records = read_chain(&*f.store, "demo").unwrap();
    assert!(
        records
            .iter()
            .all(|r| r.signer.is_some() && r.signature.is_some())
    );
    // Chains are per fleet.
    chain.record(entry("other", "apply.start")).unwrap();
    assert_eq!(f.store.audit_records("other").unwrap().len(), 2);
}

/// Regression (hardening issue, item 3): an audit record appended with a recomputed hash
/// passed `history --verify` although the anchor was at the record before it.
#[test]
fn an_appended_record_with_a_recomputed_hash_fails_and_is_unanchored() {
    let f = fixture();
    let chain = f.chain("alice");
    chain.record(entry("demo", "apply.start")).unwrap();
    f.anchor_head("demo");
    let head = read_chain(&*f.store, "demo").unwrap().pop().unwrap();

    // Forged without a key: unsigned, hash recomputed so the chain links.
    let mut forged = AuditRecord::unsigned(Some(&head.head()), entry("demo", "apply.finish"));
    forged.seal().unwrap();
    append_raw(&f, &forged);
    let report = f.verify("demo");
    assert!(!report.verified());
    assert_eq!(report.unanchored, vec![3]);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.seq == Some(3) && p.message.contains("unsigned")),
        "{:?}",
        report.problems
    );

    // Forged with a key of the forger's own: signed, but by a key no record allowed.
    let f = fixture();
    let chain = f.chain("alice");
    chain.record(entry("demo", "apply.start")).unwrap();
    f.anchor_head("demo");
    let head = read_chain(&*f.store, "demo").unwrap().pop().unwrap();
    let mallory = f.key("mallory");
    let mut forged = AuditRecord::unsigned(Some(&head.head()), entry("demo", "destroy.start"));
    forged.signer = Some(mallory.public_hex());
    forged.seal().unwrap();
    forged.signature = Some(mallory.sign_hash(&forged.hash));
    append_raw(&f, &forged);
    let report = f.verify("demo");
    assert!(!report.verified());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.seq == Some(3) && p.message.contains("not allowed")),
        "{:?}",
        report.problems
    );
}

fn append_raw(f: &Fixture, record: &AuditRecord) {
    f.store
        .append_audit_record(
            &record.entry.fleet,
            &AuditRow {
                seq: record.seq,
                prev_hash: record.prev_hash.clone(),
                hash: record.hash.clone(),
                signer: record.signer.clone(),
                record_json: record.to_json().unwrap().to_string(),
            },
            None,
        )
        .unwrap();
}

#[test]
fn an_edited_record_fails_on_its_hash() {
    let f = fixture();
    let chain = f.chain("alice");
    chain.record(entry("demo", "apply.start")).unwrap();
    chain.record(entry("demo", "apply.finish")).unwrap();
    f.anchor_head("demo");
    f.sql(
        "UPDATE audit_records SET record_json = replace(record_json, 'apply.start', 'apply.stort') WHERE seq = 2",
    );
    let report = f.verify("demo");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.seq == Some(2) && p.message.contains("edited")),
        "{:?}",
        report.problems
    );
}

#[test]
fn a_removed_tail_and_a_removed_middle_record_are_named() {
    let f = fixture();
    let chain = f.chain("alice");
    for step in ["a", "b", "c", "d"] {
        chain.record(entry("demo", step)).unwrap();
    }
    f.anchor_head("demo");
    f.sql("DELETE FROM audit_records WHERE seq = 5");
    let report = f.verify("demo");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.message.contains("removed from the end")),
        "{:?}",
        report.problems
    );
    f.sql("DELETE FROM audit_records WHERE seq = 3");
    let report = f.verify("demo");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.seq == Some(4) && p.message.contains("records 3-3")),
        "{:?}",
        report.problems
    );
}

#[test]
fn a_key_added_to_the_store_by_hand_is_caught() {
    let f = fixture();
    let chain = f.chain("alice");
    chain.record(entry("demo", "apply.start")).unwrap();
    let mallory = f.key("mallory");
    f.sql(&format!(
        "INSERT INTO audit_keys (fleet, public_key, name, allowed_seq) VALUES ('demo', '{}', 'mallory', 1)",
        mallory.public_hex()
    ));
    let report = f.verify("demo");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.message.contains("key list was edited")),
        "{:?}",
        report.problems
    );
}

#[test]
fn another_operator_signs_only_once_allowed_and_not_after_revocation() {
    let f = fixture();
    let alice = f.chain("alice");
    let bob = f.chain("bob");
    alice.record(entry("demo", "apply.start")).unwrap();
    let err = bob.record(entry("demo", "apply.start")).unwrap_err();
    assert!(matches!(err, AuditError::KeyNotAllowed { .. }), "{err}");
    assert!(err.to_string().contains("allow-key"), "{err}");
    alice
        .allow_key(at(), "alice@host", "demo", &bob.key().public_hex(), "bob")
        .unwrap();
    bob.record(entry("demo", "rollback.start")).unwrap();
    alice
        .revoke_key(at(), "alice@host", "demo", &bob.key().public_hex())
        .unwrap();
    assert!(matches!(
        bob.standing("demo").unwrap(),
        Standing::NotAllowed { .. }
    ));
    f.anchor_head("demo");
    let report = f.verify("demo");
    assert!(report.verified(), "{:?}", report.problems);
    assert_eq!(report.records, 5);
}

#[test]
fn two_writers_on_one_store_never_fork_the_chain() {
    let f = fixture();
    let chain = Arc::new(f.chain("alice"));
    chain.record(entry("demo", "first")).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let chain = chain.clone();
            s.spawn(move || {
                for i in 0..10 {
                    chain.record(entry("demo", &format!("t{t}-{i}"))).unwrap();
                }
            });
        }
    });
    f.anchor_head("demo");
    let report = f.verify("demo");
    assert!(report.verified(), "{:?}", report.problems);
    assert_eq!(report.records, 42);
}

#[test]
fn an_old_audit_jsonl_is_imported_as_unsigned_records_vouched_for_by_a_signed_one() {
    let f = fixture();
    let log = LocalLog::open_in(&f.dir).unwrap();
    log.record(entry("demo", "apply.start")).unwrap();
    log.record(entry("other", "apply.start")).unwrap();
    log.record(entry("demo", "apply.finish")).unwrap();
    drop(log);
    let chain = f.chain("alice");
    let report = import_legacy_log(&chain, &f.dir, at(), "alice@host").unwrap();
    assert_eq!(report.imported.get("demo"), Some(&2));
    assert_eq!(report.imported.get("other"), Some(&1));
    assert!(!f.dir.join("audit.jsonl").exists());
    assert!(f.dir.join("audit.jsonl.imported").exists());
    let verified = f.verify("demo");
    assert!(verified.verified(), "{:?}", verified.problems);
    assert_eq!(verified.unsigned_imported, vec![1, 2]);
    // A second run finds nothing to do.
    assert!(
        import_legacy_log(&chain, &f.dir, at(), "alice@host")
            .unwrap()
            .imported
            .is_empty()
    );
    // An imported record edited afterwards fails like any other.
    f.sql("UPDATE audit_records SET record_json = replace(record_json, 'apply.finish', 'apply.fin') WHERE fleet = 'demo' AND seq = 2");
    assert!(!f.verify("demo").verified());
}

#[test]
fn an_old_audit_jsonl_that_does_not_verify_is_refused_and_kept() {
    let f = fixture();
    let log = LocalLog::open_in(&f.dir).unwrap();
    log.record(entry("demo", "apply.start")).unwrap();
    drop(log);
    let path = f.dir.join("audit.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("apply.start", "apply.stort")).unwrap();
    let err = import_legacy_log(&f.chain("alice"), &f.dir, at(), "alice@host").unwrap_err();
    assert!(
        matches!(err, AuditError::LegacyLogDoesNotVerify { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("move it aside"), "{err}");
    assert!(path.exists());
    assert!(f.store.audit_records("demo").unwrap().is_empty());
}
