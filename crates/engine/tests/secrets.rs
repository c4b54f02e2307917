//! The engine never sees a secret's value: a fleet with secrets applied, replaced on a new
//! version and rolled back after a failed gate, through a `WithSecrets` provider over the
//! FakeProvider, a file-backed SQLite store and a MemoryRecorder. Every event, every audit
//! record and the raw bytes of the store are searched for the value.

use phoenix_audit::MemoryRecorder;
use phoenix_engine::{
    ApplyOptions, ApplyOutcome, Desired, Engine, Event, RevisionDoc, RevisionKind,
};
use phoenix_provider_api::Provider as _;
use phoenix_provider_api::fake::FakeProvider;
use phoenix_provider_api::secret::{SecretValue, SecretVersions, WithSecrets};
use phoenix_state::SqliteStore;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const VALUE: &str = "engine-secret-Hq7Lm2Vx9Pz4";

fn fleet(version: &str) -> phoenix_spec::Fleet {
    let yaml = format!(
        "phoenix: 1\nname: demo\nsites: [{{name: local, tier: core, capacity: {{cpu: 8, memory: 8Gi, storage: 8G}}}}]\nsecrets:\n  - {{name: db, generate: true}}\nservices:\n  - {{name: web, replicas: 2, command: [web, '{version}'], env: {{P: '${{secret:db}}'}}, health: {{command: [check, '${{secret_file:db}}'], timeout: 1s, interval: 10ms}}}}\n"
    );
    phoenix_spec::parse_sources(&[("t.yaml".into(), yaml)], None)
        .unwrap_or_else(|d| panic!("{}", d.render()))
}

#[test]
fn no_event_record_or_row_holds_a_secret_value() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeProvider::new());
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let recorder = Arc::new(MemoryRecorder::new());
    // Both versions the test pins hold the value (a new version here stands for a rotation's
    // restart, not a new value).
    let mut values = SecretVersions::default();
    values.insert("db", 1, SecretValue::new(VALUE.into()));
    values.insert("db", 2, SecretValue::new(VALUE.into()));
    let engine = Engine {
        provider: Arc::new(WithSecrets::new(fake.clone(), values)),
        store: store.clone(),
        recorder: recorder.clone(),
        actor: "test@host".into(),
    };
    let events = Mutex::new(Vec::<Event>::new());
    let apply = |f: &phoenix_spec::Fleet, version: u64| {
        let mut d = Desired::new(f, &phoenix_plan::plan(f)).unwrap();
        d.pin_secrets(f, &BTreeMap::from([("db".to_string(), version)]));
        let doc = RevisionDoc::new(RevisionKind::Apply, &d, vec![], None);
        engine
            .apply(&d, &doc, &ApplyOptions::default(), &|_| true, &|e| {
                events.lock().unwrap().push(e.clone())
            })
            .unwrap()
    };
    assert_eq!(apply(&fleet("v1"), 1).outcome, ApplyOutcome::Applied);
    // A new version replaces both units.
    let report = apply(&fleet("v1"), 2);
    assert_eq!(report.outcome, ApplyOutcome::Applied);
    assert_eq!(fake.list("demo").unwrap().len(), 2);
    // A failed start: rolled back, the old units started again (with the value handed over).
    fake.fail_starts("web-0@r3", true);
    fake.fail_starts("web-1@r3", true);
    let report = apply(&fleet("v2"), 2);
    assert!(
        matches!(report.outcome, ApplyOutcome::RolledBack { .. }),
        "{:?}",
        report.outcome
    );
    let seen = format!(
        "{:?}\n{:?}\n{:?}",
        events.lock().unwrap(),
        recorder.records(),
        report
    );
    assert!(seen.contains("web-0"), "the events name the units");
    assert!(
        !seen.contains(VALUE),
        "a value in an event, audit record or report"
    );
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()),
            "a value in the state store's files"
        );
    }
}
