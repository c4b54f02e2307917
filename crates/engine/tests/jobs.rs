//! One-shot jobs in the engine, against the FakeProvider: ordering with services, the
//! fingerprint decision, retries with backoff, timeouts, a failed job failing its wave with the
//! rollback of a failed gate, hooks, and `run-job`'s forced run.

use phoenix_audit::MemoryRecorder;
use phoenix_engine::decide::decide;
use phoenix_engine::{
    ApplyOptions, ApplyOutcome, ApplyReport, Desired, Engine, Event, RevisionDoc, RevisionKind,
    Scope,
};
use phoenix_provider_api::Provider;
use phoenix_provider_api::fake::{Call, FakeProvider};
use phoenix_state::{JobOutcome, SqliteStore, StateStore};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SITE: &str =
    "sites: [{name: local, tier: core, capacity: {cpu: 64, memory: 64Gi, storage: 100G}}]\n";

fn fleet(body: &str) -> phoenix_spec::Fleet {
    let yaml = format!("phoenix: 1\nname: demo\n{SITE}{body}");
    match phoenix_spec::parse_sources(&[("t.yaml".into(), yaml)], None) {
        Ok(f) => f,
        Err(d) => panic!("{}", d.render()),
    }
}

/// `web` (after the job `migrate`) and the job, with `job_extra` added to the job.
fn web_after_migrate(web_cmd: &str, job_cmd: &str, job_extra: &str) -> phoenix_spec::Fleet {
    fleet(&format!(
        "services:\n  - {{name: web, command: [{web_cmd}], depends_on: [migrate]}}\njobs:\n  - {{name: migrate, command: [{job_cmd}]{job_extra}}}\n"
    ))
}

struct World {
    fake: Arc<FakeProvider>,
    store: Arc<SqliteStore>,
    engine: Engine,
    events: Mutex<Vec<Event>>,
}

impl World {
    fn new() -> Self {
        let fake = Arc::new(FakeProvider::new());
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let engine = Engine {
            provider: fake.clone(),
            store: store.clone(),
            recorder: Arc::new(MemoryRecorder::new()),
            actor: "test@host".into(),
        };
        World {
            fake,
            store,
            engine,
            events: Mutex::new(Vec::new()),
        }
    }

    fn apply_desired(&self, d: &Desired) -> ApplyReport {
        let doc = RevisionDoc::new(RevisionKind::Apply, d, vec![], None);
        self.events.lock().unwrap().clear();
        self.engine
            .apply(d, &doc, &ApplyOptions::default(), &|_| true, &|e| {
                self.events.lock().unwrap().push(e.clone())
            })
            .unwrap()
    }

    fn apply(&self, f: &phoenix_spec::Fleet) -> ApplyReport {
        self.apply_desired(&desired(f))
    }

    fn starts(&self) -> Vec<String> {
        self.fake
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Start(u) => Some(u),
                _ => None,
            })
            .collect()
    }

    fn running(&self) -> Vec<String> {
        self.fake
            .list("demo")
            .unwrap()
            .into_iter()
            .filter(|u| u.state.is_running())
            .map(|u| u.unit_id)
            .collect()
    }
}

fn desired(f: &phoenix_spec::Fleet) -> Desired {
    Desired::new(f, &phoenix_plan::plan(f)).unwrap()
}

#[test]
fn a_job_runs_before_the_service_that_depends_on_it_and_its_unit_is_gone() {
    let w = World::new();
    w.fake.script_exits("migrate-0", [Some(0)]);
    w.fake.set_output("migrate-0", "applied 3 migrations\n");
    let f = web_after_migrate("web", "migrate", "");
    let r = w.apply(&f);
    assert_eq!(r.outcome, ApplyOutcome::Applied);
    assert_eq!(w.starts(), ["migrate-0@r1", "web-0@r1"]);
    assert_eq!(
        w.running(),
        ["web-0@r1"],
        "the job's unit is stopped once it exited"
    );
    let runs = w.store.job_runs("demo").unwrap();
    assert_eq!(runs.len(), 1);
    let run = &runs[0].run;
    assert_eq!(
        (run.outcome, run.exit_code, run.attempts),
        (JobOutcome::Succeeded, Some(0), 1)
    );
    assert_eq!(run.output, "applied 3 migrations\n");
    assert!(
        w.store
            .list_instances("demo")
            .unwrap()
            .iter()
            .all(|i| i.state.instance != "migrate-0"),
        "no instance record is left for the job"
    );
}

#[test]
fn an_unchanged_job_is_not_run_again_and_a_changed_one_is() {
    let w = World::new();
    w.fake.script_exits("migrate-0", [Some(0), Some(0)]);
    let f = web_after_migrate("web", "migrate", "");
    w.apply(&f);
    let again = w.apply(&f);
    assert_eq!(again.outcome, ApplyOutcome::NoChanges);
    // The decision, pure: the store's record makes the job unchanged.
    let d = w.engine.with_job_runs(&desired(&f)).unwrap();
    assert!(decide(&d, &[], &Scope::all()).jobs().next().is_none());
    w.fake.clear_calls();
    let changed = web_after_migrate("web", "migrate, '--v2'", "");
    let r = w.apply(&changed);
    assert_eq!(r.outcome, ApplyOutcome::Applied);
    let lines: Vec<String> = r
        .decision
        .diff_lines()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with('>') && l.contains("inputs changed since its run in r1")),
        "{lines:?}"
    );
    assert_eq!(
        w.starts(),
        ["migrate-0@r2"],
        "web is unchanged; only the job runs"
    );
}

#[test]
fn a_failed_job_fails_its_wave_and_the_previous_revision_keeps_running() {
    let w = World::new();
    w.fake.script_exits("migrate-0", [Some(0), Some(3)]);
    w.apply(&web_after_migrate("web", "web", ""));
    w.fake.set_output("migrate-0", "ERROR: relation exists\n");
    let r = w.apply(&web_after_migrate("web, '--v2'", "migrate, '--v2'", ""));
    assert!(
        matches!(r.outcome, ApplyOutcome::RolledBack { to: Some(1) }),
        "{:?}",
        r.outcome
    );
    let failure = r.failure.unwrap();
    assert_eq!(failure.instance, "migrate-0");
    assert!(
        failure.reason.contains("exited with code 3"),
        "{}",
        failure.reason
    );
    assert_eq!(
        w.running(),
        ["web-0@r1"],
        "web's new revision never started"
    );
    let runs = w.store.job_runs("demo").unwrap();
    let last = &runs.last().unwrap().run;
    assert_eq!(
        (last.outcome, last.exit_code),
        (JobOutcome::Failed, Some(3))
    );
    assert_eq!(last.output, "ERROR: relation exists\n");
    // Its last run failed: the next apply runs it again, with the same inputs.
    let d = w
        .engine
        .with_job_runs(&desired(&web_after_migrate(
            "web, '--v2'",
            "migrate, '--v2'",
            "",
        )))
        .unwrap();
    let decision = decide(&d, &[], &Scope::all());
    let job = decision.jobs().next().expect("runs again");
    assert_eq!(job.reason, "its run in r2 failed");
}

#[test]
fn a_job_that_fails_once_succeeds_on_retry_after_the_backoff() {
    let w = World::new();
    w.fake.script_exits("migrate-0", [Some(1), Some(0)]);
    let started = Instant::now();
    let r = w.apply(&web_after_migrate(
        "web",
        "migrate",
        ", retries: 2, backoff: 150ms",
    ));
    assert_eq!(r.outcome, ApplyOutcome::Applied);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "waited for the backoff"
    );
    assert_eq!(w.starts(), ["migrate-0@r1", "migrate-0@r1", "web-0@r1"]);
    let run = &w.store.job_runs("demo").unwrap()[0].run;
    assert_eq!((run.outcome, run.attempts), (JobOutcome::Succeeded, 2));
    let events = w.events.lock().unwrap();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::JobAttemptFailed {
            attempt: 1,
            retry_in_ms: Some(150),
            ..
        }
    )));
}

#[test]
fn a_job_past_its_timeout_is_stopped_and_counts_as_failed() {
    let w = World::new();
    // `None`: the unit runs on, as a job that hangs.
    w.fake.script_exits("migrate-0", [None, None]);
    let started = Instant::now();
    let r = w.apply(&web_after_migrate(
        "web",
        "migrate",
        ", timeout: 200ms, retries: 1, backoff: 10ms",
    ));
    assert!(
        matches!(r.outcome, ApplyOutcome::RolledBack { .. }),
        "{:?}",
        r.outcome
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let failure = r.failure.unwrap();
    assert!(
        failure
            .reason
            .contains("after 2 attempts: timed out after 200ms"),
        "{}",
        failure.reason
    );
    let run = &w.store.job_runs("demo").unwrap()[0].run;
    assert_eq!((run.outcome, run.attempts), (JobOutcome::TimedOut, 2));
    assert!(
        w.running().is_empty(),
        "the hanging unit was stopped, web never started"
    );
    let stops = w
        .fake
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::Stop(u) if u == "migrate-0@r1"))
        .count();
    assert_eq!(stops, 2);
}

#[test]
fn a_hook_runs_before_its_service_and_again_whenever_the_service_changes() {
    let w = World::new();
    let spec = |db: &str| {
        fleet(&format!(
            "services:\n  - {{name: db, command: [{db}]}}\njobs:\n  - {{name: backup, command: [dump], hook: {{before: db}}}}\n"
        ))
    };
    w.fake.script_exits("backup-0", [Some(0), Some(0)]);
    w.apply(&spec("db"));
    assert_eq!(w.starts(), ["backup-0@r1", "db-0@r1"]);
    assert_eq!(w.apply(&spec("db")).outcome, ApplyOutcome::NoChanges);
    w.fake.clear_calls();
    w.apply(&spec("db, '--v2'"));
    assert_eq!(
        w.starts(),
        ["backup-0@r2", "db-0@r2"],
        "the backup runs before db changes"
    );
}

#[test]
fn run_job_forces_one_job_and_touches_nothing_else() {
    let w = World::new();
    w.fake.script_exits("migrate-0", [Some(0), Some(0)]);
    let f = web_after_migrate("web", "migrate", "");
    w.apply(&f);
    w.fake.clear_calls();
    let mut d = desired(&f);
    d.force_jobs.insert("migrate".into());
    let doc = RevisionDoc::new(RevisionKind::Apply, &d, vec![], None);
    let opts = ApplyOptions {
        scope: Scope::new(&d, &[], &[])
            .unwrap()
            .only(["migrate".to_string()]),
        ..ApplyOptions::default()
    };
    let r = w.engine.apply(&d, &doc, &opts, &|_| true, &|_| {}).unwrap();
    assert_eq!(r.outcome, ApplyOutcome::Applied);
    assert_eq!(w.starts(), ["migrate-0@r2"]);
    assert_eq!(w.store.job_runs("demo").unwrap().len(), 2);
}
