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

/// A primary, two replicas after it, and `init` (`for_each: replica`): the dbis_core shape.
fn replicas_with_init(replica_cmd: &str) -> phoenix_spec::Fleet {
    fleet(&format!(
        "services:\n  - {{name: primary, command: [pg]}}\n  - {{name: replica, replicas: 2, command: [{replica_cmd}], depends_on: [primary]}}\njobs:\n  - {{name: init, command: [basebackup, '${{instance}}'], depends_on: [primary], for_each: replica}}\n"
    ))
}

/// The `(phase, wave)` index of the first wave that runs `what` (a job or a service).
fn wave_of(d: &phoenix_engine::Decision, what: &str) -> Option<(u32, usize)> {
    d.phases.iter().find_map(|p| {
        p.waves
            .iter()
            .find(|w| {
                w.jobs.iter().any(|j| j.job == what) || w.services.iter().any(|s| s.service == what)
            })
            .map(|w| (p.phase, w.wave))
    })
}

/// Pure: a `for_each` job has one run per instance of its target, each acting in that
/// instance (its unit *is* `replica-N`, so the provider gives it that data dir), in a wave
/// before the target's.
#[test]
fn decide_runs_a_for_each_job_once_per_instance_before_its_target() {
    let d = desired(&replicas_with_init("replica"));
    assert_eq!(
        d.jobs.keys().collect::<Vec<_>>(),
        ["init-0", "init-1"],
        "one run per replica, keyed after it"
    );
    let decision = decide(&d, &[], &Scope::all());
    let runs: Vec<(&str, &str, &str)> = decision
        .jobs()
        .map(|j| {
            (
                j.instance.as_str(),
                j.spec.instance.as_str(),
                j.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        runs,
        [
            ("init-0", "replica-0", "never run"),
            ("init-1", "replica-1", "never run")
        ]
    );
    let (init, replica, primary) = (
        wave_of(&decision, "init").unwrap(),
        wave_of(&decision, "replica").unwrap(),
        wave_of(&decision, "primary").unwrap(),
    );
    assert!(
        primary < init && init < replica,
        "{primary:?} {init:?} {replica:?}"
    );
    assert_eq!(
        decision.jobs().next().unwrap().spec.site,
        d.units["replica-0"].spec.site,
        "placed where its instance is"
    );
}

/// Through the engine: the runs happen before each replica starts; an unchanged fleet runs
/// nothing; a replica that is gone (created again) has its own run again, and only it.
#[test]
fn a_for_each_job_runs_again_when_its_instance_is_created() {
    let w = World::new();
    w.fake.script_exits("replica-0", [Some(0)]);
    w.fake.script_exits("replica-1", [Some(0)]);
    let f = replicas_with_init("replica");
    let r = w.apply(&f);
    assert_eq!(r.outcome, ApplyOutcome::Applied, "{:?}", r.failure);
    let starts = w.starts();
    assert_eq!(starts[0], "primary-0@r1");
    assert_eq!(
        starts[1..3]
            .iter()
            .collect::<std::collections::BTreeSet<_>>(),
        ["replica-0@r1".to_string(), "replica-1@r1".to_string()]
            .iter()
            .collect(),
        "the two init runs, in the replicas' instances"
    );
    assert_eq!(
        starts.len(),
        5,
        "two runs, then the two replicas: {starts:?}"
    );
    let mut jobs: Vec<String> = w
        .store
        .job_runs("demo")
        .unwrap()
        .into_iter()
        .map(|r| format!("{} {:?}", r.run.instance, r.run.outcome))
        .collect();
    jobs.sort();
    assert_eq!(jobs, ["init-0 Succeeded", "init-1 Succeeded"]);
    assert_eq!(w.apply(&f).outcome, ApplyOutcome::NoChanges);

    // replica-1's unit is gone (a wiped host, a lost container): it is created again, after
    // its init run; replica-0 is left alone.
    w.fake.remove("demo", "replica-1@r1");
    w.fake.script_exits("replica-1", [Some(0)]);
    let r = w.apply(&f);
    assert_eq!(r.outcome, ApplyOutcome::Applied, "{:?}", r.failure);
    let runs: Vec<(&str, &str)> = r
        .decision
        .jobs()
        .map(|j| (j.instance.as_str(), j.reason.as_str()))
        .collect();
    assert_eq!(runs, [("init-1", "replica-1 is created in this apply")]);
    assert_eq!(w.starts().len(), 7);
}

/// backup before migrate, app after migrate, and `restore` (`hook: {rollback: migrate}`,
/// `for_each: backup`: it acts in the backup's instance, where the dumps are).
fn banking(migrate: &str, app: &str) -> phoenix_spec::Fleet {
    fleet(&format!(
        "services:\n  - {{name: db, command: [pg]}}\n  - {{name: app, command: [{app}], depends_on: [db, migrate], ports: [http], health: {{tcp: '127.0.0.1:${{http}}', timeout: 1s}}}}\njobs:\n  - {{name: backup, command: [dump], depends_on: [db], hook: {{before: migrate}}}}\n  - {{name: migrate, command: [{migrate}], depends_on: [db]}}\n  - {{name: restore, command: [load], depends_on: [db], for_each: backup, hook: {{rollback: migrate}}}}\n"
    ))
}

/// Pure: a rollback job is in no wave; the decision carries it, after `migrate`, only when
/// `migrate` runs in this apply; it never counts as drift.
#[test]
fn decide_carries_a_rollback_job_only_when_its_target_runs() {
    let d = desired(&banking("migrate", "app"));
    let decision = decide(&d, &[], &Scope::all());
    assert!(
        decision.jobs().all(|j| j.job != "restore"),
        "a rollback job is not run by a wave"
    );
    assert_eq!(decision.rollback_jobs.len(), 1);
    let r = &decision.rollback_jobs[0];
    assert_eq!(
        (
            r.after.as_str(),
            r.job.instance.as_str(),
            r.job.spec.instance.as_str()
        ),
        ("migrate", "restore-0", "backup-0"),
        "it runs in the backup's instance"
    );
    assert_eq!(
        decision
            .rollback_jobs_after(&|s| s == "migrate")
            .iter()
            .map(|j| j.instance.as_str())
            .collect::<Vec<_>>(),
        ["restore-0"]
    );
    assert!(
        decision.rollback_jobs_after(&|s| s == "app").is_empty(),
        "a failure before migrate ran restores nothing"
    );
    assert!(
        phoenix_engine::decide::job_reason(&d, &d.jobs["restore-0"]).is_none(),
        "never drift: it runs only on rollback"
    );
    assert!(
        decision.diff_lines().iter().any(|l| l
            .to_string()
            .contains("if the apply rolls back after `migrate` changed")),
        "the diff says so"
    );
}

/// Through the engine: a change whose migration succeeds but whose app gate fails rolls back
/// the app, then runs `restore` (in the backup's instance), recorded for the revision. A change
/// of the app alone carries no restore and runs none.
#[test]
fn a_rollback_after_a_migration_runs_the_restore_job_after_the_instances_are_restored() {
    let w = World::new();
    w.fake.script_exits("backup-0", [Some(0), Some(0), Some(0)]);
    w.fake.script_exits("migrate-0", [Some(0), Some(0)]);
    let r = w.apply(&banking("migrate", "app"));
    assert_eq!(r.outcome, ApplyOutcome::Applied, "{:?}", r.failure);
    assert!(
        w.store
            .job_runs("demo")
            .unwrap()
            .iter()
            .all(|r| r.run.job != "restore"),
        "a rollback job does not run on a successful apply"
    );

    w.fake.set_healthy("demo", "app-0@r2", false);
    let r = w.apply(&banking("migrate, '--to', '3'", "app, '--v2'"));
    assert!(
        matches!(r.outcome, ApplyOutcome::RolledBack { .. }),
        "{:?}",
        r.outcome
    );
    assert!(
        r.restored
            .iter()
            .any(|l| l == "restore-0: rollback job succeeded"),
        "{:?}",
        r.restored
    );
    let runs = w.store.job_runs("demo").unwrap();
    let restore = runs
        .iter()
        .find(|r| r.run.instance == "restore-0")
        .expect("restore ran");
    assert_eq!(restore.run.revision.0, 2);
    assert_eq!(restore.run.outcome, JobOutcome::Succeeded);
    // Order: the app's rollback first, then the job (its unit is the backup's instance).
    let events = w.events.lock().unwrap().clone();
    let restored_app = events
        .iter()
        .position(|e| matches!(e, Event::InstanceRestored { instance, .. } if instance == "app-0"))
        .expect("app-0 restored");
    let restore_started = events
        .iter()
        .position(|e| matches!(e, Event::JobStarted { instance, unit, .. } if instance == "restore-0" && unit == "backup-0@r2"))
        .expect("restore started in backup-0");
    assert!(restored_app < restore_started);
    assert!(
        w.running().contains(&"app-0@r1".to_string()),
        "{:?}",
        w.running()
    );

    // The app alone changes and fails: nothing migrated, nothing restored.
    w.fake.set_healthy("demo", "app-0@r3", false);
    let r = w.apply(&banking("migrate, '--to', '3'", "app, '--v3'"));
    assert!(
        matches!(r.outcome, ApplyOutcome::RolledBack { .. }),
        "{:?}",
        r.outcome
    );
    assert!(r.decision.rollback_jobs.is_empty());
    assert!(
        w.store
            .job_runs("demo")
            .unwrap()
            .iter()
            .all(|r| r.run.instance != "restore-0" || r.run.revision.0 == 2)
    );
}

/// A `before` hook runs whenever what it hooks runs: a migration run again because its last
/// run failed (same inputs) gets a fresh backup first, so a restore never loads an older one.
#[test]
fn a_before_hook_runs_again_when_its_job_runs_again_after_a_failure() {
    let w = World::new();
    // r1: backup, then restore after migrate failed (both in backup-0); r2: backup.
    w.fake.script_exits("backup-0", [Some(0), Some(0), Some(0)]);
    w.fake.script_exits("migrate-0", [Some(1), Some(0)]);
    let f = banking("migrate", "app");
    let r = w.apply(&f);
    assert!(!r.outcome.is_success());
    let r = w.apply(&f);
    assert_eq!(r.outcome, ApplyOutcome::Applied, "{:?}", r.failure);
    let runs: Vec<(&str, &str)> = r
        .decision
        .jobs()
        .map(|j| (j.instance.as_str(), j.reason.as_str()))
        .collect();
    assert_eq!(
        runs,
        [
            ("backup-0", "`migrate` runs in this apply"),
            ("migrate-0", "its run in r1 failed")
        ]
    );
}

/// A `for_each` run's unit left over (a crash mid-run) shares its instance with the service's
/// unit: it is removed as a job unit, never taken for the instance's own unit.
#[test]
fn a_leftover_for_each_unit_is_removed_and_not_taken_for_its_instance() {
    let w = World::new();
    w.fake.script_exits("replica-0", [Some(0)]);
    w.fake.script_exits("replica-1", [Some(0)]);
    let f = replicas_with_init("replica");
    assert_eq!(w.apply(&f).outcome, ApplyOutcome::Applied);
    let d = desired(&f);
    let mut stray = d.jobs["init-0"].spec.clone();
    stray.revision = 9;
    w.fake.start(&stray).unwrap();
    let r = w.apply(&f);
    assert_eq!(r.outcome, ApplyOutcome::Applied, "{:?}", r.failure);
    let removed: Vec<(&str, &str)> = r
        .decision
        .cleanup
        .iter()
        .chain(&r.decision.removals)
        .map(|x| (x.unit_id.as_str(), x.reason.as_str()))
        .collect();
    assert_eq!(removed, [("replica-0@r9", "job unit left over")]);
    assert_eq!(r.decision.actions().count(), 0, "replica-0 runs as desired");
    assert!(r.decision.jobs().next().is_none());
}

/// `phoenix run-job restore`: a rollback job runs in its wave when asked, and only then.
#[test]
fn run_job_runs_a_rollback_job_when_asked() {
    let w = World::new();
    w.fake.script_exits("backup-0", [Some(0), Some(0)]);
    w.fake.script_exits("migrate-0", [Some(0)]);
    let f = banking("migrate", "app");
    assert_eq!(w.apply(&f).outcome, ApplyOutcome::Applied);
    let mut d = desired(&f);
    d.force_jobs.insert("restore".into());
    let doc = RevisionDoc::new(RevisionKind::Apply, &d, vec![], None);
    let opts = ApplyOptions {
        scope: Scope::all().only(["restore".to_string()]),
        ..ApplyOptions::default()
    };
    let r = w.engine.apply(&d, &doc, &opts, &|_| true, &|_| {}).unwrap();
    assert_eq!(r.outcome, ApplyOutcome::Applied, "{:?}", r.failure);
    let runs: Vec<(&str, &str)> = r
        .decision
        .jobs()
        .map(|j| (j.instance.as_str(), j.spec.instance.as_str()))
        .collect();
    assert_eq!(runs, [("restore-0", "backup-0")]);
    assert!(r.decision.rollback_jobs.is_empty());
}
