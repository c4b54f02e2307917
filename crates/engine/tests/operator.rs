//! What an operator reads and sees: failure messages that state each cause once. Against the
//! in-memory FakeProvider, an in-memory SQLite store and a memory recorder.

use phoenix_audit::MemoryRecorder;
use phoenix_engine::{
    ApplyOptions, ApplyOutcome, ApplyReport, Desired, Engine, Event, RevisionDoc, RevisionKind,
};
use phoenix_provider_api::fake::FakeProvider;
use phoenix_state::SqliteStore;
use std::sync::{Arc, Mutex};

const SITE: &str =
    "sites: [{name: local, tier: core, capacity: {cpu: 64, memory: 64Gi, storage: 100G}}]\n";

fn fleet(services: &str) -> phoenix_spec::Fleet {
    let yaml = format!("phoenix: 1\nname: demo\n{SITE}services:\n{services}");
    match phoenix_spec::parse_sources(&[("t.yaml".into(), yaml)], None) {
        Ok(f) => f,
        Err(d) => panic!("{}", d.render()),
    }
}

fn svc(name: &str, replicas: u32, timeout: &str, extra: &str) -> String {
    format!(
        "  - {{name: {name}, replicas: {replicas}, command: [run, '{name}', '${{port}}'], ports: [port], health: {{tcp: '127.0.0.1:${{port}}', timeout: {timeout}, interval: 10ms}}{extra}}}\n"
    )
}

struct World {
    fake: Arc<FakeProvider>,
    engine: Engine,
    events: Arc<Mutex<Vec<Event>>>,
}

impl World {
    fn new() -> Self {
        let fake = Arc::new(FakeProvider::new());
        let engine = Engine {
            provider: fake.clone(),
            store: Arc::new(SqliteStore::open_in_memory().unwrap()),
            recorder: Arc::new(MemoryRecorder::new()),
            actor: "test@host".into(),
        };
        World {
            fake,
            engine,
            events: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn apply_with(&self, f: &phoenix_spec::Fleet, opts: &ApplyOptions) -> ApplyReport {
        let d = Desired::new(f, &phoenix_plan::plan(f)).unwrap();
        let doc = RevisionDoc::new(RevisionKind::Apply, &d, vec![], None);
        let events = self.events.clone();
        self.engine
            .apply(&d, &doc, opts, &|_| true, &move |e| {
                events.lock().unwrap().push(e.clone())
            })
            .unwrap()
    }
}

/// Regression: "cannot start: cannot start unit `c-0@r3`: cannot start unit `c-0@r3`": the
/// engine named the step the provider's error already names.
#[test]
fn a_failed_start_states_its_cause_once() {
    let w = World::new();
    w.fake.fail_starts("web-0@r1", true);
    let r = w.apply_with(&fleet(&svc("web", 1, "1s", "")), &ApplyOptions::default());
    let reason = r.failure.expect("a failure").reason;
    assert_eq!(reason.matches("cannot start").count(), 1, "{reason}");
    assert_eq!(reason.matches("web-0@r1").count(), 1, "{reason}");
}
