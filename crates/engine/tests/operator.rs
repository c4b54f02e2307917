//! What an operator reads and sees: failure messages that state each cause once, and Ctrl-C
//! (the cancel flag) letting in-flight steps finish. Against the in-memory FakeProvider, an
//! in-memory SQLite store and a memory recorder.

use phoenix_audit::MemoryRecorder;
use phoenix_engine::{
    ApplyOptions, ApplyOutcome, ApplyReport, Desired, Engine, Event, RevisionDoc, RevisionKind,
};
use phoenix_provider_api::Provider;
use phoenix_provider_api::fake::FakeProvider;
use phoenix_state::SqliteStore;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

    fn saw(&self, f: impl Fn(&Event) -> bool) -> bool {
        self.events.lock().unwrap().iter().any(f)
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

/// Regression: Ctrl-C printed "finishing in-flight steps" but aborted a running health gate,
/// leaving its instance started and unhealthy. A gate in flight now runs to its end.
#[test]
fn cancel_lets_a_health_gate_in_flight_finish_and_starts_nothing_new() {
    let w = World::new();
    // One wave of `db`, then `web` after it: web must never start once cancelled.
    let spec = format!(
        "{}{}",
        svc("db", 1, "10s", ""),
        svc("web", 1, "10s", ", depends_on: [db]")
    );
    w.fake.set_healthy("demo", "db-0@r1", false);
    let opts = ApplyOptions::default();
    let cancel = opts.cancel.clone();
    let r = std::thread::scope(|s| {
        let h = s.spawn(|| w.apply_with(&fleet(&spec), &opts));
        let end = Instant::now() + Duration::from_secs(5);
        while !w.saw(|e| matches!(e, Event::UnitStarted { unit, .. } if unit == "db-0@r1")) {
            assert!(Instant::now() < end, "db never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Ctrl-C while db's gate waits, then db turns healthy.
        cancel.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        w.fake.set_healthy("demo", "db-0@r1", true);
        h.join().unwrap()
    });
    assert_eq!(r.outcome, ApplyOutcome::Cancelled);
    assert!(
        w.saw(|e| matches!(e, Event::GatePassed { unit, .. } if unit == "db-0@r1")),
        "db's gate was abandoned"
    );
    let running: Vec<String> = w
        .fake
        .list("demo")
        .unwrap()
        .into_iter()
        .filter(|u| u.state.is_running())
        .map(|u| u.unit_id)
        .collect();
    assert_eq!(running, ["db-0@r1"], "a new step started after the cancel");
    assert!(r.failure.is_none(), "{:?}", r.failure);
}

/// Same defect: a gate that fails while cancelling is reported as the failure it is, not
/// hidden behind "cancelled".
#[test]
fn a_gate_that_fails_while_cancelling_is_reported() {
    let w = World::new();
    w.fake.set_healthy("demo", "db-0@r1", false);
    let opts = ApplyOptions::default();
    let cancel = opts.cancel.clone();
    let r = std::thread::scope(|s| {
        let h = s.spawn(|| w.apply_with(&fleet(&svc("db", 1, "300ms", "")), &opts));
        let end = Instant::now() + Duration::from_secs(5);
        while !w.saw(|e| matches!(e, Event::UnitStarted { .. })) {
            assert!(Instant::now() < end, "db never started");
            std::thread::sleep(Duration::from_millis(5));
        }
        cancel.store(true, Ordering::SeqCst);
        h.join().unwrap()
    });
    assert_eq!(r.outcome, ApplyOutcome::Cancelled);
    let f = r.failure.expect("the failed gate is reported");
    assert!(
        f.reason.contains("not healthy after 300 ms"),
        "{}",
        f.reason
    );
    assert!(w.saw(|e| matches!(e, Event::GateFailed { .. })));
}
