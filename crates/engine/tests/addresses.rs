//! `${address:S}` and `${addresses:S}` in the engine, against the FakeProvider: filled in from
//! the units that run when a unit starts, dependents replaced (with the reason in the diff)
//! when what they are bound to is replaced, and nothing to do once converged.

use phoenix_audit::MemoryRecorder;
use phoenix_engine::{
    ApplyOptions, ApplyOutcome, ApplyReport, Desired, Engine, Event, RevisionDoc, RevisionKind,
};
use phoenix_provider_api::Provider;
use phoenix_provider_api::fake::FakeProvider;
use phoenix_state::SqliteStore;
use std::sync::Arc;

const SITE: &str =
    "sites: [{name: local, tier: core, capacity: {cpu: 64, memory: 64Gi, storage: 100G}}]\n";

fn fleet(db_cmd: &str, db_replicas: u32) -> phoenix_spec::Fleet {
    let yaml = format!(
        "phoenix: 1\nname: demo\n{SITE}services:\n  \
         - {{name: db, command: [{db_cmd}], ports: [pg], replicas: {db_replicas}, rollout: {{strategy: blue-green}}}}\n  \
         - {{name: app, command: [app, \"--db=${{address:db}}\"], depends_on: [db], ports: [http]}}\n  \
         - {{name: lb, command: [lb, \"--backends=${{addresses:app:http}}\", \"--all-db=${{addresses:db}}\"], depends_on: [app, db], ports: [http],\n     \
            health: {{command: [check, \"${{address:app}}\"]}}}}\n  \
         - {{name: other, command: [other], ports: [p]}}\n"
    );
    match phoenix_spec::parse_sources(&[("t.yaml".into(), yaml)], None) {
        Ok(f) => f,
        Err(d) => panic!("{}", d.render()),
    }
}

struct World {
    fake: Arc<FakeProvider>,
    engine: Engine,
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
        World { fake, engine }
    }

    fn apply(&self, f: &phoenix_spec::Fleet) -> ApplyReport {
        let d = Desired::new(f, &phoenix_plan::plan(f)).unwrap();
        let doc = RevisionDoc::new(RevisionKind::Apply, &d, vec![], None);
        self.engine
            .apply(&d, &doc, &ApplyOptions::default(), &|_| true, &|_| {})
            .unwrap()
    }

    fn port(&self, unit: &str, name: &str) -> u16 {
        let u = self.fake.list("demo").unwrap();
        u.iter().find(|u| u.unit_id == unit).unwrap().ports[name]
    }

    fn command(&self, unit: &str) -> Vec<String> {
        self.fake.started_spec(unit).expect("started").command
    }
}

#[test]
fn addresses_are_filled_in_from_the_units_that_run() {
    let w = World::new();
    let r = w.apply(&fleet("pg", 2));
    assert_eq!(r.outcome, ApplyOutcome::Applied);
    let db0 = w.port("db-0@r1", "pg");
    let db1 = w.port("db-1@r1", "pg");
    assert_eq!(w.command("app-0@r1")[1], format!("--db=127.0.0.1:{db0}"));
    let app = w.port("app-0@r1", "http");
    assert_eq!(
        w.command("lb-0@r1"),
        [
            "lb".to_string(),
            format!("--backends=127.0.0.1:{app}"),
            format!("--all-db=127.0.0.1:{db0},127.0.0.1:{db1}"),
        ]
    );
    // Converged: the same files again change nothing.
    let again = w.apply(&fleet("pg", 2));
    assert_eq!(
        again.outcome,
        ApplyOutcome::NoChanges,
        "{:#?}",
        again.decision
    );
}

#[test]
fn a_replaced_dependency_replaces_its_users_with_the_reason_in_the_diff() {
    let w = World::new();
    w.apply(&fleet("pg", 2));
    // A new db revision (blue-green): new units, new ports; app and lb must follow, `other`
    // (no addresses) must not.
    let r = w.apply(&fleet("pg, --new", 2));
    assert_eq!(r.outcome, ApplyOutcome::Applied);
    let diff: Vec<String> = r
        .decision
        .diff_lines()
        .iter()
        .map(|l| l.to_string())
        .collect();
    let app_line = diff
        .iter()
        .find(|l| l.contains("app-0"))
        .expect("app in the diff");
    assert!(
        app_line.contains("address changed")
            && app_line.contains("`db` now at db-0 (replaced now)"),
        "{diff:#?}"
    );
    let lb_line = diff
        .iter()
        .find(|l| l.contains("lb-0"))
        .expect("lb in the diff");
    assert!(lb_line.contains("address changed"), "{diff:#?}");
    assert!(!diff.iter().any(|l| l.contains("other")), "{diff:#?}");
    let db0 = w.port("db-0@r2", "pg");
    assert_eq!(w.command("app-0@r2")[1], format!("--db=127.0.0.1:{db0}"));
    let app = w.port("app-0@r2", "http");
    assert_eq!(
        w.command("lb-0@r2")[1],
        format!("--backends=127.0.0.1:{app}")
    );
    // The health check of lb was filled in too (the fake passes any check it can run).
    let again = w.apply(&fleet("pg, --new", 2));
    assert_eq!(
        again.outcome,
        ApplyOutcome::NoChanges,
        "{:#?}",
        again.decision
    );
}

#[test]
fn a_second_instance_changing_leaves_users_of_the_first_address_alone() {
    let w = World::new();
    w.apply(&fleet("pg", 1));
    // Scaling db to 2 adds db-1: `${address:db}` (db-0) is unchanged, `${addresses:db}` is not.
    let r = w.apply(&fleet("pg", 2));
    let diff: Vec<String> = r
        .decision
        .diff_lines()
        .iter()
        .map(|l| l.to_string())
        .collect();
    assert!(!diff.iter().any(|l| l.contains("app-0")), "{diff:#?}");
    assert!(
        diff.iter()
            .any(|l| l.contains("lb-0") && l.contains("address changed")),
        "{diff:#?}"
    );
}

/// `api` rolled out blue-green behind `lb`, which reloads in place.
fn reloading(version: &str) -> phoenix_spec::Fleet {
    let yaml = format!(
        "phoenix: 1\nname: demo\n{SITE}services:\n  \
         - {{name: api, command: [api, {version}], ports: [http], replicas: 2, rollout: {{strategy: blue-green}}}}\n  \
         - {{name: lb, command: [lb, \"${{addresses:api}}\"], depends_on: [api], ports: [http],\n     \
            reload: {{command: [reload, \"${{addresses:api}}\"]}}}}\n"
    );
    phoenix_spec::parse_sources(&[("t.yaml".into(), yaml)], None).unwrap()
}

#[test]
fn a_service_with_reload_keeps_its_unit_and_blue_retires_after_it_reloaded() {
    let w = World::new();
    w.apply(&reloading("v1"));
    let events = std::sync::Mutex::new(Vec::new());
    let f = reloading("v2");
    let d = Desired::new(&f, &phoenix_plan::plan(&f)).unwrap();
    let doc = RevisionDoc::new(RevisionKind::Apply, &d, vec![], None);
    let r = w
        .engine
        .apply(&d, &doc, &ApplyOptions::default(), &|_| true, &|e| {
            events.lock().unwrap().push(e.clone())
        })
        .unwrap();
    assert_eq!(r.outcome, ApplyOutcome::Applied);
    let diff: Vec<String> = r
        .decision
        .diff_lines()
        .iter()
        .map(|l| l.to_string())
        .collect();
    assert!(
        diff.iter()
            .any(|l| l.contains("reload lb-0@r1: address changed")),
        "{diff:#?}"
    );
    assert!(!w.fake.calls().iter().any(
        |c| matches!(c, phoenix_provider_api::fake::Call::Start(u) if u.starts_with("lb-0@r2"))
    ));
    // The reload happened while blue still ran: api-0@r1 stops only after lb-0 reloaded.
    let events = events.into_inner().unwrap();
    let pos = |pred: &dyn Fn(&Event) -> bool| events.iter().position(pred).unwrap();
    let reloaded = pos(
        &|e| matches!(e, Event::GatePassed { unit, detail, .. } if unit == "lb-0@r1" && detail.starts_with("reloaded")),
    );
    let blue_stopped = pos(&|e| matches!(e, Event::UnitStopped { unit, .. } if unit == "api-0@r1"));
    assert!(reloaded < blue_stopped, "{events:#?}");
    // The reload is remembered: nothing to do now, and the next switch reloads again.
    let again = w.apply(&reloading("v2"));
    assert_eq!(
        again.outcome,
        ApplyOutcome::NoChanges,
        "{:#?}",
        again.decision
    );
    let third = w.apply(&reloading("v3"));
    let diff: Vec<String> = third
        .decision
        .diff_lines()
        .iter()
        .map(|l| l.to_string())
        .collect();
    assert!(
        diff.iter().any(|l| l.contains("reload lb-0@r1")),
        "{diff:#?}"
    );
    assert_eq!(w.apply(&reloading("v3")).outcome, ApplyOutcome::NoChanges);
}
