//! Engine tests against the in-memory FakeProvider, an in-memory SQLite store and a memory
//! recorder: decisions, waves, strategies, rollback, scope, recovery and drift.

use phoenix_audit::AuditOutcome;
use phoenix_audit::MemoryRecorder;
use phoenix_engine::decide::{Change, decide};
use phoenix_engine::{
    ApplyOptions, ApplyOutcome, ApplyReport, Clock, ClockRef, Desired, Engine, EngineError, Event,
    RealClock, RevisionDoc, RevisionKind, Scope, VirtualClock, status,
};
use phoenix_provider_api::fake::{Call, FakeProvider};
use phoenix_provider_api::{Provider, UnitState};
use phoenix_state::{
    IntentOp, LockOwner, LockRequest, NewIntent, NewRevision, ObservedState, RevisionNumber,
    RevisionOutcome, SqliteStore, StateStore, UnitId,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SITE: &str =
    "sites: [{name: local, tier: core, capacity: {cpu: 64, memory: 64Gi, storage: 100G}}]\n";
const HEALTH: &str = "health: {tcp: '127.0.0.1:${port}', timeout: 300ms, interval: 10ms}";

fn fleet(services: &str) -> phoenix_spec::Fleet {
    let yaml = format!("phoenix: 1\nname: demo\n{SITE}services:\n{services}");
    match phoenix_spec::parse_sources(&[("t.yaml".into(), yaml)], None) {
        Ok(f) => f,
        Err(d) => panic!("{}", d.render()),
    }
}

fn svc(name: &str, replicas: u32, extra: &str) -> String {
    format!(
        "  - {{name: {name}, replicas: {replicas}, command: [run, '{name}', '${{port}}'], ports: [port], {HEALTH}{extra}}}\n"
    )
}

fn desired(f: &phoenix_spec::Fleet) -> Desired {
    Desired::new(f, &phoenix_plan::plan(f)).unwrap()
}

struct World {
    fake: Arc<FakeProvider>,
    store: Arc<SqliteStore>,
    audit: Arc<MemoryRecorder>,
    engine: Engine,
    events: Mutex<Vec<Event>>,
}

impl World {
    fn new() -> Self {
        let fake = Arc::new(FakeProvider::new());
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let audit = Arc::new(MemoryRecorder::new());
        let engine = Engine {
            provider: fake.clone(),
            store: store.clone(),
            recorder: audit.clone(),
            actor: "test@host".into(),
        };
        World {
            fake,
            store,
            audit,
            engine,
            events: Mutex::new(Vec::new()),
        }
    }

    fn apply_with(&self, f: &phoenix_spec::Fleet, opts: &ApplyOptions) -> ApplyReport {
        let d = desired(f);
        let doc = RevisionDoc::new(RevisionKind::Apply, &d, vec![], None);
        self.engine
            .apply(&d, &doc, opts, &|_| true, &|e| {
                self.events.lock().unwrap().push(e.clone())
            })
            .unwrap()
    }

    fn apply(&self, f: &phoenix_spec::Fleet) -> ApplyReport {
        self.apply_with(f, &ApplyOptions::default())
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

    fn starts_and_stops(&self) -> Vec<String> {
        self.fake
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Start(u) => Some(format!("start {u}")),
                Call::Stop(u) => Some(format!("stop {u}")),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn first_apply_creates_everything_in_phase_and_wave_order() {
    let f = fleet(&format!(
        "{}{}{}",
        svc("web", 2, ", depends_on: [api]"),
        svc("api", 1, ", depends_on: [db]"),
        svc("db", 1, "")
    ));
    let d = desired(&f);
    let decision = decide(&d, &[], &Scope::all());
    let order: Vec<Vec<String>> = decision
        .phases
        .iter()
        .flat_map(|p| &p.waves)
        .map(|w| w.services.iter().map(|s| s.service.clone()).collect())
        .collect();
    assert_eq!(order, [["db"], ["api"], ["web"]]);
    assert_eq!(decision.counts(), (4, 0, 0));
    assert!(decision.diff_lines().iter().all(|l| l.sign == '+'));

    let w = World::new();
    let r = w.apply(&f);
    assert_eq!(r.outcome, ApplyOutcome::Applied);
    assert_eq!(r.revision, Some(1));
    let calls = w.starts_and_stops();
    assert_eq!(&calls[..2], ["start db-0@r1", "start api-0@r1"]);
    assert_eq!(calls.len(), 4);
    // Records, revision outcome and audit.
    assert_eq!(w.store.list_instances("demo").unwrap().len(), 4);
    assert!(w.store.open_intents("demo").unwrap().is_empty());
    assert_eq!(
        w.store
            .latest_applied_revision("demo")
            .unwrap()
            .unwrap()
            .number,
        RevisionNumber(1)
    );
    let steps = w.audit.steps();
    assert_eq!(steps.first().unwrap(), "apply.start");
    assert_eq!(steps.last().unwrap(), "apply.finish");
    assert!(steps.iter().any(|s| s == "gate web-1@r1"), "{steps:?}");

    // Nothing changed: no revision.
    let again = w.apply(&f);
    assert_eq!(again.outcome, ApplyOutcome::NoChanges);
    assert_eq!(again.revision, None);
}

#[test]
fn db_is_gated_before_its_dependents_start() {
    let f = fleet(&format!(
        "{}{}",
        svc("api", 1, ", depends_on: [db]"),
        svc("db", 1, "")
    ));
    let w = World::new();
    w.apply(&f);
    let events = w.events.lock().unwrap();
    let pos = |pred: &dyn Fn(&Event) -> bool| events.iter().position(pred).unwrap();
    let db_gate = pos(&|e| matches!(e, Event::GatePassed { instance, .. } if instance == "db-0"));
    let api_start =
        pos(&|e| matches!(e, Event::UnitStarting { instance, .. } if instance == "api-0"));
    assert!(db_gate < api_start);
}

#[test]
fn changed_command_replaces_rolling_stop_first_by_default() {
    let w = World::new();
    w.apply(&fleet(&svc("web", 2, "")));
    w.fake.clear_calls();
    let f2 = fleet(&svc("web", 2, ", env: {V: '2'}"));
    let r = w.apply(&f2);
    assert_eq!(r.outcome, ApplyOutcome::Applied);
    let lines = r.decision.diff_lines();
    assert!(lines.iter().all(|l| l.sign == '~'), "{lines:?}");
    assert!(lines[0].detail.contains("env changed"), "{}", lines[0]);
    assert_eq!(
        w.starts_and_stops(),
        [
            "stop web-0@r1",
            "start web-0@r2",
            "stop web-1@r1",
            "start web-1@r2"
        ]
    );
    assert_eq!(w.running(), ["web-0@r2", "web-1@r2"]);
}

#[test]
fn max_surge_starts_the_new_unit_before_stopping_the_old() {
    let w = World::new();
    let extra = ", rollout: {strategy: rolling, max_surge: 1, max_unavailable: 0}";
    w.apply(&fleet(&svc("web", 2, extra)));
    w.fake.clear_calls();
    let r = w.apply(&fleet(&svc("web", 2, &format!("{extra}, env: {{V: '2'}}"))));
    assert_eq!(r.outcome, ApplyOutcome::Applied);
    assert_eq!(
        w.starts_and_stops(),
        [
            "start web-0@r2",
            "stop web-0@r1",
            "start web-1@r2",
            "stop web-1@r1"
        ]
    );
}

#[test]
fn failed_gate_stops_the_phase_and_rolls_back_to_the_previous_revision() {
    let w = World::new();
    let v1 = fleet(&format!(
        "{}{}",
        svc("web", 2, ", depends_on: [db]"),
        svc("db", 1, "")
    ));
    w.apply(&v1);
    w.fake.clear_calls();
    // r2 changes both; db-0@r2 never becomes healthy.
    w.fake.set_healthy("demo", "db-0@r2", false);
    let v2 = fleet(&format!(
        "{}{}",
        svc("web", 2, ", depends_on: [db], env: {V: '2'}"),
        svc("db", 1, ", env: {V: '2'}")
    ));
    let r = w.apply(&v2);
    assert_eq!(r.outcome, ApplyOutcome::RolledBack { to: Some(1) });
    let failure = r.failure.unwrap();
    assert_eq!(failure.instance, "db-0");
    assert_eq!(failure.unit, "db-0@r2");
    assert!(
        failure.reason.contains("fake: set unhealthy"),
        "{}",
        failure.reason
    );
    assert_eq!(r.restored.len(), 1);
    assert!(
        r.restored[0].contains("restarted db-0@r1 (healthy)"),
        "{:?}",
        r.restored
    );
    // The web wave never started; the previous revision runs.
    assert!(!w.starts_and_stops().iter().any(|c| c.contains("web")));
    assert_eq!(w.running(), ["db-0@r1", "web-0@r1", "web-1@r1"]);
    let rev = w
        .store
        .get_revision("demo", RevisionNumber(2))
        .unwrap()
        .unwrap();
    assert_eq!(
        rev.outcome,
        RevisionOutcome::RolledBack {
            to: RevisionNumber(1)
        }
    );
    assert!(w.audit.steps().iter().any(|s| s == "rollback db-0"));
    // The restarted unit is recorded as running, not left `starting` (the bug: `phoenix
    // serve`, which reads health from the records, showed a rolled-back fleet unhealthy).
    let db = w
        .store
        .get_instance("demo", &UnitId::new("db-0", RevisionNumber(1)))
        .unwrap()
        .unwrap();
    assert_eq!(db.state.observed, ObservedState::Running);
    // The next apply of v1 has nothing to do.
    assert_eq!(w.apply(&v1).outcome, ApplyOutcome::NoChanges);
}

#[test]
fn no_rollback_leaves_the_failed_unit_and_reports_failure() {
    let w = World::new();
    w.apply(&fleet(&svc("web", 1, "")));
    w.fake.set_healthy("demo", "web-0@r2", false);
    let opts = ApplyOptions {
        rollback: false,
        ..ApplyOptions::default()
    };
    let r = w.apply_with(&fleet(&svc("web", 1, ", env: {V: '2'}")), &opts);
    assert!(
        matches!(r.outcome, ApplyOutcome::Failed { .. }),
        "{:?}",
        r.outcome
    );
    assert!(r.restored.is_empty());
    assert_eq!(w.running(), ["web-0@r2"]);
}

#[test]
fn failed_start_is_a_failed_gate() {
    let w = World::new();
    w.fake.fail_starts("web-0@r1", true);
    let r = w.apply(&fleet(&svc("web", 1, "")));
    assert!(
        matches!(r.outcome, ApplyOutcome::RolledBack { to: None }),
        "{:?}",
        r.outcome
    );
    assert!(r.failure.unwrap().reason.contains("cannot start"));
    assert!(w.running().is_empty());
}

#[test]
fn blue_green_starts_all_new_units_before_stopping_old_ones() {
    let w = World::new();
    let bg = ", rollout: {strategy: blue-green}";
    w.apply(&fleet(&svc("web", 3, bg)));
    w.fake.clear_calls();
    let r = w.apply(&fleet(&svc("web", 3, &format!("{bg}, env: {{V: '2'}}"))));
    assert_eq!(r.outcome, ApplyOutcome::Applied);
    let calls = w.starts_and_stops();
    let last_start = calls.iter().rposition(|c| c.starts_with("start")).unwrap();
    let first_stop = calls.iter().position(|c| c.starts_with("stop")).unwrap();
    assert!(last_start < first_stop, "{calls:?}");
    assert_eq!(w.running(), ["web-0@r2", "web-1@r2", "web-2@r2"]);
}

#[test]
fn blue_green_failure_keeps_blue_running() {
    let w = World::new();
    let bg = ", rollout: {strategy: blue-green}";
    w.apply(&fleet(&svc("web", 2, bg)));
    w.fake.clear_calls();
    w.fake.set_healthy("demo", "web-1@r2", false);
    let r = w.apply(&fleet(&svc("web", 2, &format!("{bg}, env: {{V: '2'}}"))));
    assert!(matches!(r.outcome, ApplyOutcome::RolledBack { .. }));
    assert_eq!(w.running(), ["web-0@r1", "web-1@r1"]);
    assert!(!w.starts_and_stops().contains(&"start web-0@r1".to_string()));
}

/// Options whose timers run on `clock`: canary windows pass without real time passing.
fn on_clock(clock: &Arc<VirtualClock>) -> ApplyOptions {
    ApplyOptions {
        clock: ClockRef(clock.clone()),
        ..ApplyOptions::default()
    }
}

#[test]
fn canary_goes_first_then_the_rest_or_back() {
    // A 20-second window, probed every 10 ms: on the virtual clock it takes no real time
    // beyond the probes', so the test would take 40 s and more if the executor slept.
    let canary = ", rollout: {strategy: canary, canary: 1, analysis: 20s}";
    let began = std::time::Instant::now();
    let clock = Arc::new(VirtualClock::new());
    let w = World::new();
    w.apply_with(&fleet(&svc("web", 3, canary)), &on_clock(&clock));
    w.fake.clear_calls();
    let r = w.apply_with(
        &fleet(&svc("web", 3, &format!("{canary}, env: {{V: '2'}}"))),
        &on_clock(&clock),
    );
    assert_eq!(r.outcome, ApplyOutcome::Applied);
    assert_eq!(
        &w.starts_and_stops()[..2],
        ["stop web-0@r1", "start web-0@r2"]
    );
    assert!(w.events.lock().unwrap().iter().any(
        |e| matches!(e, Event::CanaryAnalysis { service, ms: 20_000, .. } if service == "web")
    ));
    assert!(
        clock.now_ms() >= 2 * 20_000,
        "both windows ran to their end: {} ms",
        clock.now_ms()
    );
    assert!(
        w.audit
            .records()
            .iter()
            .any(|r| r.entry.step == "canary.analysis web" && r.entry.outcome == AuditOutcome::Ok)
    );

    // A canary that fails its gate: the rest is never touched.
    let clock = Arc::new(VirtualClock::new());
    let w = World::new();
    w.apply_with(&fleet(&svc("web", 3, canary)), &on_clock(&clock));
    w.fake.clear_calls();
    w.fake.set_healthy("demo", "web-0@r2", false);
    let r = w.apply_with(
        &fleet(&svc("web", 3, &format!("{canary}, env: {{V: '2'}}"))),
        &on_clock(&clock),
    );
    assert!(matches!(r.outcome, ApplyOutcome::RolledBack { .. }));
    assert!(!w.starts_and_stops().iter().any(|c| c.contains("web-1@r2")));
    assert_eq!(w.running(), ["web-0@r1", "web-1@r1", "web-2@r1"]);
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "no real time is spent in windows"
    );
}

#[test]
fn canary_analysis_catches_a_canary_that_turns_unhealthy() {
    let canary = ", rollout: {strategy: canary, canary: 1, analysis: 400ms}";
    let clock = Arc::new(VirtualClock::new());
    let w = World::new();
    w.apply_with(&fleet(&svc("web", 2, canary)), &on_clock(&clock));
    let f = fleet(&svc("web", 2, &format!("{canary}, env: {{V: '2'}}")));
    let d = desired(&f);
    let doc = RevisionDoc::new(RevisionKind::Apply, &d, vec![], None);
    let window_began = Mutex::new(None);
    // 100 ms (virtual) into the window of the new canary, it turns unhealthy.
    let sink = |e: &Event| {
        if let Event::CanaryAnalysis { instances, .. } = e
            && instances == &["web-0".to_string()]
        {
            *window_began.lock().unwrap() = Some(clock.now_ms());
            let fake = w.fake.clone();
            clock.after(Duration::from_millis(100), move || {
                fake.set_healthy("demo", "web-0@r2", false)
            });
        }
    };
    let r = w
        .engine
        .apply(&d, &doc, &on_clock(&clock), &|_| true, &sink)
        .unwrap();
    assert!(
        matches!(r.outcome, ApplyOutcome::RolledBack { .. }),
        "{:?}",
        r.outcome
    );
    assert!(r.failure.unwrap().reason.contains("canary analysis"));
    assert_eq!(w.running(), ["web-0@r1", "web-1@r1"]);
    // It failed at the first probe after the flip, not at the window's start or end.
    let began = window_began.lock().unwrap().expect("the window began");
    let failed = w
        .audit
        .records()
        .into_iter()
        .map(|r| r.entry)
        .find(|e| e.step == "canary.analysis web" && e.outcome != AuditOutcome::Ok)
        .expect("the analysis failure is audited");
    assert!(failed.revision == Some(2), "{failed:?}");
    assert!(clock.now_ms() >= began + 100 && clock.now_ms() < began + 400);
}

#[test]
fn target_pulls_in_dependencies_and_exclude_leaves_services_alone() {
    let f = fleet(&format!(
        "{}{}{}{}",
        svc("web", 1, ", depends_on: [api]"),
        svc("api", 1, ", depends_on: [db]"),
        svc("db", 1, ""),
        svc("batch", 1, "")
    ));
    let d = desired(&f);
    let scope = Scope::new(&d, &["api".into()], &[]).unwrap();
    let decision = decide(&d, &[], &scope);
    let mut services: Vec<_> = decision.actions().map(|a| a.service.clone()).collect();
    services.sort();
    assert_eq!(services, ["api", "db"]);
    let scope = Scope::new(&d, &[], &["batch".into()]).unwrap();
    assert_eq!(decide(&d, &[], &scope).counts(), (3, 0, 0));
    assert!(Scope::new(&d, &["nope".into()], &[]).is_err());

    // Units out of scope are not touched, not even when they are not desired.
    let w = World::new();
    w.apply(&f);
    let f2 = fleet(&format!(
        "{}{}{}",
        svc("web", 1, ", depends_on: [api], env: {V: '2'}"),
        svc("api", 1, ", depends_on: [db]"),
        svc("db", 1, "")
    ));
    let d2 = desired(&f2);
    let opts = ApplyOptions {
        scope: Scope::new(&d2, &["db".into()], &[]).unwrap(),
        ..ApplyOptions::default()
    };
    let r = w.apply_with(&f2, &opts);
    assert_eq!(r.outcome, ApplyOutcome::NoChanges);
    assert!(w.running().contains(&"batch-0@r1".to_string()));
}

#[test]
fn disabled_and_removed_services_are_stopped_and_scale_down_removes_extra_instances() {
    let w = World::new();
    w.apply(&fleet(&format!(
        "{}{}{}",
        svc("web", 3, ""),
        svc("old", 1, ""),
        svc("flag", 1, "")
    )));
    let f2 = fleet(&format!(
        "{}{}",
        svc("web", 1, ""),
        svc("flag", 1, ", enabled: false")
    ));
    let r = w.apply(&f2);
    assert_eq!(r.outcome, ApplyOutcome::Applied);
    let mut reasons: Vec<String> = r
        .decision
        .removals
        .iter()
        .map(|x| format!("{} {}", x.unit_id, x.reason))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "flag-0@r1 service disabled",
            "old-0@r1 service not in the spec",
            "web-1@r1 instance not desired (replicas)",
            "web-2@r1 instance not desired (replicas)"
        ]
    );
    assert_eq!(w.running(), ["web-0@r1"]);
}

#[test]
fn drift_is_reported_and_repaired() {
    let w = World::new();
    let f = fleet(&svc("web", 3, ""));
    w.apply(&f);
    // web-0 crashed, web-1 unhealthy, web-2 vanished, and a stray unit runs.
    w.fake.set_state("demo", "web-0@r1", UnitState::Exited(1));
    w.fake.set_healthy("demo", "web-1@r1", false);
    w.fake.remove("demo", "web-2@r1");
    let stray = phoenix_provider_api::UnitSpec::new("demo", "web", "web-7", 1).with_command(["x"]);
    w.fake.start(&stray).unwrap();
    let d = desired(&f);
    let observed = w
        .engine
        .observe("demo", Some(&d), 1, 4, &RealClock::new())
        .unwrap();
    let report = status::status(&d, &observed, Some(1));
    let states: Vec<(String, String, bool, Vec<String>)> = report
        .instances
        .iter()
        .map(|i| {
            (
                i.instance.clone(),
                i.state.clone(),
                i.healthy,
                i.drift.clone(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (
                "web-0".into(),
                "failed".into(),
                false,
                vec!["not-running".into()]
            ),
            (
                "web-1".into(),
                "running".into(),
                false,
                vec!["unhealthy".into()]
            ),
            (
                "web-2".into(),
                "missing".into(),
                false,
                vec!["missing".into()]
            ),
        ]
    );
    assert_eq!(report.extra.len(), 1);
    assert!(!report.in_sync);

    let r = w.apply(&f);
    assert_eq!(r.outcome, ApplyOutcome::Applied, "{:?}", r.failure);
    assert_eq!(w.running(), ["web-0@r2", "web-1@r2", "web-2@r2"]);
    let observed = w
        .engine
        .observe("demo", Some(&d), 1, 4, &RealClock::new())
        .unwrap();
    assert!(status::status(&d, &observed, Some(2)).in_sync);
}

#[test]
fn wrong_revision_is_drift() {
    let w = World::new();
    w.apply(&fleet(&svc("web", 1, "")));
    let f2 = fleet(&svc("web", 1, ", env: {V: '2'}"));
    let d2 = desired(&f2);
    let observed = w
        .engine
        .observe("demo", Some(&d2), 1, 4, &RealClock::new())
        .unwrap();
    let report = status::status(&d2, &observed, Some(1));
    assert_eq!(report.instances[0].drift, ["wrong-revision"]);
}

#[test]
fn duplicates_of_one_instance_are_cleaned_up_first() {
    let w = World::new();
    let f = fleet(&svc("web", 1, ""));
    w.apply(&f);
    // A second unit of web-0 from a later revision that never became healthy.
    let mut dup = desired(&f).units["web-0"].spec.clone();
    dup.revision = 5;
    w.fake.start(&dup).unwrap();
    w.fake.set_healthy("demo", "web-0@r5", false);
    let r = w.apply(&f);
    assert_eq!(r.outcome, ApplyOutcome::Applied);
    assert_eq!(r.decision.cleanup.len(), 1);
    assert_eq!(r.decision.cleanup[0].unit_id, "web-0@r5");
    assert_eq!(w.running(), ["web-0@r1"]);
}

#[test]
fn backups_are_snapshotted_before_a_change_and_restored_on_rollback() {
    let w = World::new();
    let b = ", backup: ['${data_dir}/db']";
    w.apply(&fleet(&svc("db", 1, b)));
    w.fake.clear_calls();
    w.fake.set_healthy("demo", "db-0@r2", false);
    let r = w.apply(&fleet(&svc("db", 1, &format!("{b}, env: {{V: '2'}}"))));
    assert!(matches!(r.outcome, ApplyOutcome::RolledBack { .. }));
    let calls = w.fake.calls();
    let snap = calls
        .iter()
        .position(|c| *c == Call::Snapshot("db-0".into(), "pre-r2".into()))
        .expect("snapshot");
    let stop = calls
        .iter()
        .position(|c| *c == Call::Stop("db-0@r1".into()))
        .unwrap();
    let restore = calls
        .iter()
        .position(|c| *c == Call::Restore("db-0".into(), "pre-r2".into()))
        .expect("restore");
    let restart = calls
        .iter()
        .rposition(|c| *c == Call::Start("db-0@r1".into()))
        .unwrap();
    assert!(
        snap < stop && stop < restore && restore < restart,
        "{calls:?}"
    );
    assert!(
        r.restored[0].contains("restored backup pre-r2"),
        "{:?}",
        r.restored
    );
}

#[test]
fn a_concurrent_apply_is_refused_with_the_holder() {
    let w = World::new();
    let mut owner = LockOwner::this_process("apply");
    owner.who = "bob@elsewhere".into();
    w.store
        .acquire_lock("demo", &LockRequest::new(owner, Duration::from_secs(30)))
        .unwrap();
    let f = fleet(&svc("web", 1, ""));
    let d = desired(&f);
    let doc = RevisionDoc::new(RevisionKind::Apply, &d, vec![], None);
    let err = w
        .engine
        .apply(&d, &doc, &ApplyOptions::default(), &|_| true, &|_| {})
        .unwrap_err();
    assert!(matches!(err, EngineError::Locked { .. }));
    assert!(err.to_string().contains("bob@elsewhere"), "{err}");
    assert!(w.running().is_empty());
}

#[test]
fn declined_diff_changes_nothing() {
    let w = World::new();
    let f = fleet(&svc("web", 1, ""));
    let d = desired(&f);
    let doc = RevisionDoc::new(RevisionKind::Apply, &d, vec![], None);
    let r = w
        .engine
        .apply(&d, &doc, &ApplyOptions::default(), &|_| false, &|_| {})
        .unwrap();
    assert_eq!(r.outcome, ApplyOutcome::Declined);
    assert!(w.running().is_empty());
    assert!(w.store.list_revisions("demo").unwrap().is_empty());
}

/// A dead apply left: a pending revision, a start intent whose unit runs, a start intent whose
/// unit never came up, and a stop intent whose unit still runs; its lease is held by a pid
/// that no longer exists.
#[test]
fn recovery_resolves_open_intents_of_a_dead_apply_and_converges() {
    let w = World::new();
    let f = fleet(&svc("web", 3, ""));
    w.apply(&f);
    let d = desired(&f);

    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let mut owner = LockOwner::this_process("apply");
    owner.pid = dead;
    let grant = w
        .store
        .acquire_lock("demo", &LockRequest::new(owner, Duration::from_secs(60)))
        .unwrap();
    let lease = grant.lease;
    let rev = w
        .store
        .create_revision(
            &lease,
            NewRevision {
                spec_json: RevisionDoc::new(RevisionKind::Apply, &d, vec![], None).to_json(),
                placement_json: "[]".into(),
                plan_hash: "x".into(),
                actor: "dead@host".into(),
            },
        )
        .unwrap();
    let intent = |op, unit: &str| NewIntent {
        op,
        unit: UnitId::from_raw(unit),
        revision: rev.number,
        detail: serde_json::json!({}),
    };
    // web-0@r2 was started; web-1@r2 was announced but never started; web-2@r1 was being
    // stopped and still runs.
    let mut spec = d.units["web-0"].spec.clone();
    spec.revision = 2;
    w.fake.start(&spec).unwrap();
    w.store
        .record_intent(&lease, intent(IntentOp::Start, "web-0@r2"))
        .unwrap();
    w.store
        .record_intent(&lease, intent(IntentOp::Start, "web-1@r2"))
        .unwrap();
    w.store
        .record_intent(&lease, intent(IntentOp::Stop, "web-2@r1"))
        .unwrap();

    // The test says which holder is dead: the engine reads no process table itself.
    let opts = ApplyOptions {
        holder_liveness: phoenix_engine::Liveness(Arc::new(move |pid: u32| pid != dead)),
        ..ApplyOptions::default()
    };
    let r = w.apply_with(&f, &opts);
    assert!(r.took_over);
    assert_eq!(r.recovered.len(), 4, "{:?}", r.recovered);
    assert!(r.recovered[0].contains("adopt"), "{:?}", r.recovered);
    assert!(r.recovered[1].contains("fail"), "{:?}", r.recovered);
    assert!(r.recovered[2].contains("stop-again"), "{:?}", r.recovered);
    assert_eq!(r.outcome, ApplyOutcome::Applied, "{:?}", r.failure);
    assert!(w.store.open_intents("demo").unwrap().is_empty());
    assert!(matches!(
        w.store
            .get_revision("demo", rev.number)
            .unwrap()
            .unwrap()
            .outcome,
        RevisionOutcome::Failed { .. }
    ));
    // Exactly one unit per instance.
    let running = w.running();
    assert_eq!(running.len(), 3, "{running:?}");
    let mut instances: Vec<_> = running
        .iter()
        .map(|u| u.split('@').next().unwrap().to_string())
        .collect();
    instances.dedup();
    assert_eq!(instances, ["web-0", "web-1", "web-2"]);
}

#[test]
fn destroy_is_an_apply_of_nothing() {
    let w = World::new();
    w.apply(&fleet(&svc("web", 2, "")));
    let empty = Desired::empty("demo");
    let doc = RevisionDoc::new(RevisionKind::Destroy, &empty, vec![], None);
    let r = w
        .engine
        .apply(&empty, &doc, &ApplyOptions::default(), &|_| true, &|_| {})
        .unwrap();
    assert_eq!(r.outcome, ApplyOutcome::Applied);
    assert!(w.running().is_empty());
    assert!(w.store.list_instances("demo").unwrap().is_empty());
}

#[test]
fn cancel_stops_launching_and_records_the_state() {
    let w = World::new();
    let opts = ApplyOptions::default();
    opts.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = w.apply_with(&fleet(&svc("web", 2, "")), &opts);
    assert_eq!(r.outcome, ApplyOutcome::Cancelled);
    assert!(w.running().is_empty());
    assert!(matches!(
        w.store
            .get_revision("demo", RevisionNumber(1))
            .unwrap()
            .unwrap()
            .outcome,
        RevisionOutcome::Failed { .. }
    ));
    // The lock was released.
    assert!(
        w.store
            .lock_holder("demo")
            .unwrap()
            .is_none_or(|h| h.owner.pid == 0)
    );
}

#[test]
fn parallelism_bounds_steps_in_flight() {
    // 6 services in one wave, parallelism 2: every service still comes up.
    let services: String = (0..6).map(|i| svc(&format!("s{i}"), 1, "")).collect();
    let w = World::new();
    let opts = ApplyOptions {
        parallelism: 2,
        ..ApplyOptions::default()
    };
    let r = w.apply_with(&fleet(&services), &opts);
    assert_eq!(r.outcome, ApplyOutcome::Applied);
    assert_eq!(w.running().len(), 6);
    assert!(matches!(
        r.decision.actions().next().unwrap().change,
        Change::Create
    ));
}

fn observed(
    spec: &phoenix_provider_api::UnitSpec,
    revision: u64,
    state: UnitState,
    healthy: Option<bool>,
) -> phoenix_engine::ObservedUnit {
    let mut s = spec.clone();
    s.revision = revision;
    let status = phoenix_provider_api::UnitStatus {
        unit_id: s.unit_id(),
        fleet: s.fleet.clone(),
        service: s.service.clone(),
        instance: s.instance.clone(),
        revision,
        site: s.site.clone(),
        state,
        pid: Some(1),
        handle: None,
        ports: Default::default(),
        data_dir: "/d".into(),
        restarts: 0,
        logs: vec![],
        detail: None,
    };
    phoenix_engine::ObservedUnit {
        status,
        healthy,
        health_detail: None,
        spec: Some(s),
    }
}

#[test]
fn decide_keeps_the_healthy_matching_unit_and_cleans_up_the_rest() {
    let f = fleet(&svc("web", 1, ""));
    let d = desired(&f);
    let spec = &d.units["web-0"].spec;
    let mut other = spec.clone();
    other.env.insert("OLD".into(), "1".into());
    let units = [
        observed(spec, 3, UnitState::Running, Some(true)),
        observed(&other, 4, UnitState::Running, Some(true)),
        observed(spec, 5, UnitState::Running, Some(false)),
        observed(spec, 6, UnitState::Exited(1), None),
    ];
    let decision = decide(&d, &units, &Scope::all());
    assert_eq!(decision.unchanged, ["web-0"]);
    let mut cleaned: Vec<_> = decision.cleanup.iter().map(|r| r.unit_id.clone()).collect();
    cleaned.sort();
    assert_eq!(cleaned, ["web-0@r4", "web-0@r5", "web-0@r6"]);
    assert!(decision.phases.is_empty());
}

#[test]
fn decide_replaces_a_unit_whose_revision_is_unknown() {
    let f = fleet(&svc("web", 1, ""));
    let d = desired(&f);
    let mut u = observed(&d.units["web-0"].spec, 2, UnitState::Running, Some(true));
    u.spec = None;
    let decision = decide(&d, &[u], &Scope::all());
    let a = decision.actions().next().unwrap();
    match &a.change {
        Change::Replace { reason, .. } => assert!(reason.contains("unknown"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn out_of_scope_units_are_never_touched_even_duplicates() {
    let f = fleet(&format!("{}{}", svc("a", 1, ""), svc("b", 1, "")));
    let d = desired(&f);
    let b = &d.units["b-0"].spec;
    let units = [
        observed(b, 1, UnitState::Running, Some(true)),
        observed(b, 2, UnitState::Exited(1), None),
    ];
    let scope = Scope::new(&d, &["a".into()], &[]).unwrap();
    let decision = decide(&d, &units, &scope);
    assert!(decision.cleanup.is_empty() && decision.removals.is_empty());
    assert_eq!(decision.counts(), (1, 0, 0));
}

#[test]
fn destroy_removes_in_reverse_dependency_order() {
    let f = fleet(&format!(
        "{}{}{}",
        svc("web", 1, ", depends_on: [api]"),
        svc("api", 1, ", depends_on: [db]"),
        svc("db", 1, "")
    ));
    let d = desired(&f);
    let units: Vec<_> = d
        .units
        .values()
        .map(|u| observed(&u.spec, 1, UnitState::Running, Some(true)))
        .collect();
    let gone = Desired::destroy(&f, &phoenix_plan::plan(&f));
    let decision = decide(&gone, &units, &Scope::all());
    let order: Vec<_> = decision
        .removals
        .iter()
        .map(|r| r.service.as_str())
        .collect();
    assert_eq!(order, ["web", "api", "db"]);
    assert!(
        decision
            .removals
            .iter()
            .all(|r| r.reason == "fleet destroyed")
    );
}

/// Regression (hardening issue, item 11): two operators sharing one state store deployed the
/// fleet twice. The second operator's provider (another agent, another host) cannot see the
/// units of the first; its apply and destroy must refuse, naming where they run, and change
/// nothing.
#[test]
fn a_second_operator_whose_provider_cannot_see_the_units_does_not_deploy_them_again() {
    let a = World::new();
    let f = fleet(&svc("web", 3, ""));
    assert_eq!(a.apply(&f).outcome, ApplyOutcome::Applied);
    let b_fake = Arc::new(FakeProvider::at("fake://operator-b"));
    let b = Engine {
        provider: b_fake.clone(),
        store: a.store.clone(),
        recorder: a.audit.clone(),
        actor: "bob@host-b".into(),
    };
    let d = desired(&f);
    let doc = RevisionDoc::new(RevisionKind::Apply, &d, vec![], None);
    let revisions_before = a.store.list_revisions("demo").unwrap().len();
    let err = b
        .apply(&d, &doc, &ApplyOptions::default(), &|_| true, &|_| {})
        .unwrap_err();
    let EngineError::UnitsElsewhere {
        here, elsewhere, ..
    } = &err
    else {
        panic!("expected UnitsElsewhere, got {err}");
    };
    assert_eq!(here, "fake://operator-b");
    assert_eq!(elsewhere.len(), 1);
    assert_eq!(elsewhere[0].0, "fake://default");
    assert_eq!(elsewhere[0].1.len(), 3);
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    assert!(
        b_fake.list("demo").unwrap().is_empty(),
        "nothing started on B"
    );
    assert_eq!(
        a.store.list_revisions("demo").unwrap().len(),
        revisions_before
    );
    assert_eq!(
        a.store.list_instances("demo").unwrap().len(),
        3,
        "A's records kept"
    );
    // Destroy from B is refused the same way; A's units keep running.
    let gone = Desired::destroy(&f, &phoenix_plan::plan(&f));
    let doc = RevisionDoc::new(RevisionKind::Destroy, &gone, vec![], None);
    assert!(matches!(
        b.apply(&gone, &doc, &ApplyOptions::default(), &|_| true, &|_| {}),
        Err(EngineError::UnitsElsewhere { .. })
    ));
    assert_eq!(a.running().len(), 3);
    // A itself still converges and destroys.
    assert_eq!(a.apply(&f).outcome, ApplyOutcome::NoChanges);
    let doc = RevisionDoc::new(RevisionKind::Destroy, &gone, vec![], None);
    a.engine
        .apply(&gone, &doc, &ApplyOptions::default(), &|_| true, &|_| {})
        .unwrap();
    assert!(a.running().is_empty());
    assert!(b.units_elsewhere("demo").unwrap().is_empty());
}

/// One apply over two sites through the router: a site that cannot be reached is named and
/// nothing changes; told to tolerate it, the other site is applied and the unreachable site's
/// records are kept; healed, the next apply converges with no duplicate.
#[test]
fn an_unreachable_site_is_named_before_anything_changes_and_tolerated_when_asked() {
    use phoenix_provider_api::route::Router;
    let yaml = "phoenix: 1\nname: demo\nsites:\n  - {name: a, tier: core, capacity: {cpu: 64, memory: 64Gi, storage: 100G}}\n  - {name: b, tier: core, capacity: {cpu: 64, memory: 64Gi, storage: 100G}}\nservices:\n".to_owned()
        + &svc("web", 2, ", placement: {spread: site}");
    let f = phoenix_spec::parse_sources(&[("t.yaml".into(), yaml)], None).unwrap();
    let fa = Arc::new(FakeProvider::at("fake://a"));
    let fb = Arc::new(FakeProvider::at("fake://b"));
    let mut router = Router::new();
    router.add("a", 0, fa.clone());
    router.add("b", 0, fb.clone());
    let router = Arc::new(router.tolerate_unreachable(true));
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let engine = Engine {
        provider: router.clone(),
        store: store.clone(),
        recorder: Arc::new(MemoryRecorder::new()),
        actor: "t@h".into(),
    };
    let d = desired(&f);
    let run = |d: &Desired, opts: &ApplyOptions| {
        let doc = RevisionDoc::new(RevisionKind::Apply, d, vec![], None);
        engine.apply(d, &doc, opts, &|_| true, &|_| {}).unwrap()
    };
    assert_eq!(
        run(&d, &ApplyOptions::default()).outcome,
        ApplyOutcome::Applied
    );
    assert_eq!(fa.list("demo").unwrap().len(), 1);
    assert_eq!(fb.list("demo").unwrap().len(), 1);

    // b is cut off; a change is made to both sites' instances.
    fb.set_unreachable(true);
    let f2 = phoenix_spec::parse_sources(
        &[(
            "t.yaml".into(),
            "phoenix: 1\nname: demo\nsites:\n  - {name: a, tier: core, capacity: {cpu: 64, memory: 64Gi, storage: 100G}}\n  - {name: b, tier: core, capacity: {cpu: 64, memory: 64Gi, storage: 100G}}\nservices:\n".to_owned()
                + &svc("web", 2, ", placement: {spread: site}, env: {V: '2'}"),
        )],
        None,
    )
    .unwrap();
    let mut d2 = desired(&f2);
    router.list("demo").unwrap();
    let down = router.unreachable();
    assert_eq!(down.len(), 1);
    assert_eq!(
        (down[0].site.as_str(), down[0].endpoint.as_str()),
        ("b", "fake://b")
    );
    d2.units.retain(|_, u| u.spec.site != "b");
    let opts = ApplyOptions {
        unreachable: ["fake://b".to_owned()].into_iter().collect(),
        ..ApplyOptions::default()
    };
    assert_eq!(run(&d2, &opts).outcome, ApplyOutcome::Applied);
    assert_eq!(
        store
            .list_instances("demo")
            .unwrap()
            .iter()
            .filter(|r| r.state.endpoint == "fake://b")
            .count(),
        1,
        "the unreachable site's record is kept"
    );

    // Healed: the next apply converges b too, with exactly one unit per instance.
    fb.set_unreachable(false);
    router.list("demo").unwrap();
    let d2 = desired(&f2);
    assert_eq!(
        run(&d2, &ApplyOptions::default()).outcome,
        ApplyOutcome::Applied
    );
    let running = |p: &FakeProvider| {
        p.list("demo")
            .unwrap()
            .into_iter()
            .filter(|u| u.state.is_running())
            .count()
    };
    assert_eq!((running(&fa), running(&fb)), (1, 1));
    assert_eq!(
        run(&d2, &ApplyOptions::default()).outcome,
        ApplyOutcome::NoChanges
    );
}
