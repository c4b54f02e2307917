//! The machine fed by hand: no provider, no threads, no clock but a number.

use super::*;
use crate::decide::{ObservedUnit, decide};
use crate::{Desired, Scope};
use phoenix_state::{Intent, UnitId};
use std::collections::BTreeSet;

const SITE: &str =
    "sites: [{name: local, tier: core, capacity: {cpu: 64, memory: 64Gi, storage: 100G}}]\n";
const HEALTH: &str = "health: {tcp: '127.0.0.1:${port}', timeout: 300ms, interval: 10ms}";

fn desired(services: &str) -> Desired {
    let yaml = format!("phoenix: 1\nname: demo\n{SITE}services:\n{services}");
    let fleet = match phoenix_spec::parse_sources(&[("t.yaml".into(), yaml)], None) {
        Ok(f) => f,
        Err(d) => panic!("{}", d.render()),
    };
    Desired::new(&fleet, &phoenix_plan::plan(&fleet)).unwrap()
}

fn svc(name: &str, replicas: u32, extra: &str) -> String {
    format!(
        "  - {{name: {name}, replicas: {replicas}, command: [run, '{name}', '${{port}}'], ports: [port], {HEALTH}{extra}}}\n"
    )
}

fn status_of(spec: &UnitSpec) -> UnitStatus {
    UnitStatus {
        unit_id: spec.unit_id(),
        fleet: spec.fleet.clone(),
        service: spec.service.clone(),
        instance: spec.instance.clone(),
        revision: spec.revision,
        site: spec.site.clone(),
        state: UnitState::Running,
        pid: Some(1),
        handle: None,
        ports: BTreeMap::new(),
        data_dir: Default::default(),
        restarts: 0,
        logs: Vec::new(),
        detail: None,
    }
}

/// Revision 1 of `services` as running units: what a second apply observes.
fn running(d: &Desired) -> Vec<ObservedUnit> {
    d.units
        .values()
        .map(|u| {
            let mut spec = u.spec.clone();
            spec.revision = 1;
            ObservedUnit {
                status: status_of(&spec),
                healthy: Some(true),
                health_detail: None,
                spec: Some(spec),
            }
        })
        .collect()
}

/// The id of a call's reply.
fn id_of(e: &Effect) -> EffectId {
    match e {
        Effect::Write { id, .. }
        | Effect::Start { id, .. }
        | Effect::Stop { id, .. }
        | Effect::Snapshot { id, .. }
        | Effect::Restore { id, .. }
        | Effect::Probe { id, .. }
        | Effect::Inspect { id, .. }
        | Effect::OutputTail { id, .. }
        | Effect::PrepareReload { id, .. }
        | Effect::RecordJobRun { id, .. } => *id,
        _ => 0,
    }
}

/// A provider and store that do everything asked, all units healthy.
fn fine(e: &Effect, _now: Millis) -> Reply {
    match e {
        Effect::Write { id, records } => Reply::Written(Ok(records
            .iter()
            .filter_map(|r| match r {
                Record::Intent { op, unit, .. } => Some(Written::Intent(Intent {
                    id: IntentId(*id),
                    fleet: "demo".into(),
                    op: *op,
                    unit: UnitId::from_raw(unit.clone()),
                    revision: RevisionNumber(2),
                    detail: Value::Null,
                    lease_token: 0,
                    created_at: jiff::Timestamp::UNIX_EPOCH,
                    outcome: None,
                    closed_at: None,
                })),
                _ => None,
            })
            .collect())),
        Effect::Start { spec, gate, .. } => Reply::UnitStarted(Ok(Started {
            status: status_of(spec),
            gate: gate.clone(),
        })),
        Effect::Stop { .. } => Reply::UnitStopped(Ok(())),
        Effect::Snapshot { .. } => Reply::Snapshotted(Ok(())),
        Effect::Restore { .. } => Reply::Restored(Ok(())),
        Effect::Probe { .. } => Reply::Probed(ProbeOutcome::healthy("ok")),
        Effect::Inspect { .. } => Reply::Inspected(Ok(None)),
        Effect::OutputTail { .. } => Reply::Output(String::new()),
        Effect::PrepareReload { unit, .. } => {
            Reply::Reloadable(Err(ExecError::UnitGone { unit: unit.clone() }))
        }
        Effect::RecordJobRun { .. } => Reply::JobRecorded(Ok(())),
        _ => Reply::Output(String::new()),
    }
}

/// Carries effects out by hand: calls answered in order, timers fired when no call is
/// pending (simulated time jumps to them).
struct Sim {
    m: Rollout,
    now: Millis,
    timers: BTreeSet<(Millis, TimerId)>,
    calls: VecDeque<Effect>,
    /// Every call made, `start web-0@r2`, `probe web-0@r2 @ 20`, ...
    log: Vec<String>,
    events: Vec<Event>,
    audits: Vec<(String, bool)>,
    end: Option<RunEnd>,
    most_in_flight: usize,
}

impl Sim {
    fn new(d: &Decision, parallelism: usize) -> Sim {
        let m = Rollout::new(
            d,
            Options {
                revision: 2,
                parallelism,
                rollback: true,
            },
        );
        Sim {
            m,
            now: 0,
            timers: BTreeSet::new(),
            calls: VecDeque::new(),
            log: Vec::new(),
            events: Vec::new(),
            audits: Vec::new(),
            end: None,
            most_in_flight: 0,
        }
    }

    fn input(&mut self, input: Input) {
        let effects = self.m.step(input, self.now);
        self.most_in_flight = self.most_in_flight.max(self.m.in_flight());
        for e in effects {
            match e {
                Effect::Emit(ev) => self.events.push(ev),
                Effect::Audit { step, outcome, .. } => {
                    self.audits.push((step, outcome == AuditOutcome::Ok))
                }
                Effect::SetTimer { id, at } => {
                    assert!(at >= self.now, "a timer in the past");
                    self.timers.insert((at, id));
                }
                Effect::Finish(end) => {
                    assert!(self.end.is_none(), "finished twice");
                    self.end = Some(end);
                }
                call => {
                    self.log.push(match &call {
                        Effect::Start { spec, .. } => format!("start {}", spec.unit_id()),
                        Effect::Stop { unit, .. } => format!("stop {unit}"),
                        Effect::Probe { unit, .. } => {
                            format!("probe {} @ {}", unit.unit_id, self.now)
                        }
                        Effect::Write { .. } => "write".into(),
                        other => format!("{other:?}"),
                    });
                    self.calls.push_back(call);
                }
            }
        }
    }

    /// Runs to the end, answering each call with `answer`.
    fn run(&mut self, answer: &mut dyn FnMut(&Effect, Millis) -> Reply) -> RunEnd {
        self.input(Input::Started);
        for _ in 0..1_000_000 {
            if let Some(end) = &self.end {
                return end.clone();
            }
            if let Some(call) = self.calls.pop_front() {
                let reply = answer(&call, self.now);
                self.input(Input::Reply(id_of(&call), reply));
                continue;
            }
            let Some((at, t)) = self.timers.pop_first() else {
                panic!("the machine waits for nothing: {:#?}", self.log);
            };
            self.now = self.now.max(at);
            self.input(Input::TimerFired(t));
        }
        panic!("the run did not end");
    }

    fn starts(&self) -> Vec<&str> {
        self.log
            .iter()
            .filter(|l| l.starts_with("start ") || l.starts_with("stop "))
            .map(String::as_str)
            .collect()
    }
}

#[test]
fn a_first_apply_starts_and_gates_every_unit_wave_by_wave() {
    let d = desired(&format!(
        "{}{}",
        svc("web", 2, ", depends_on: [db]"),
        svc("db", 1, "")
    ));
    let decision = decide(&d, &[], &Scope::all());
    let mut sim = Sim::new(&decision, 16);
    let end = sim.run(&mut fine);
    assert_eq!(end, ended_touching(&["db", "web"]));
    assert_eq!(
        sim.starts(),
        ["start db-0@r2", "start web-0@r2", "start web-1@r2"]
    );
    let waves: Vec<&str> = sim
        .audits
        .iter()
        .filter(|(s, _)| s.starts_with("wave "))
        .map(|(s, _)| s.as_str())
        .collect();
    assert_eq!(waves.len(), 2, "{:?}", sim.audits);
    assert!(sim.audits.iter().any(|(s, ok)| s == "gate db-0@r2" && *ok));
}

#[test]
fn parallelism_bounds_the_tasks_in_flight() {
    let services: String = (0..6).map(|i| svc(&format!("s{i}"), 1, "")).collect();
    let d = desired(&services);
    let decision = decide(&d, &[], &Scope::all());
    let mut sim = Sim::new(&decision, 2);
    sim.run(&mut fine);
    assert_eq!(sim.most_in_flight, 2);
    assert_eq!(sim.starts().len(), 6);
}

#[test]
fn a_gate_probes_every_interval_until_its_timeout_then_the_change_is_rolled_back() {
    let d = desired(&svc("web", 1, ""));
    let observed = running(&d);
    let d2 = desired(&svc("web", 1, ", env: {V: '2'}"));
    let decision = decide(&d2, &observed, &Scope::all());
    let mut sim = Sim::new(&decision, 16);
    let end = sim.run(&mut |e, now| match e {
        Effect::Probe { unit, .. } if unit.revision == 2 => {
            Reply::Probed(ProbeOutcome::unhealthy(format!("closed at {now}")))
        }
        e => fine(e, now),
    });
    let failure = end.failure.expect("the gate failed");
    assert_eq!(failure.unit, "web-0@r2");
    assert!(
        failure
            .reason
            .starts_with("health gate failed: not healthy after 300 ms: closed at 300"),
        "{}",
        failure.reason
    );
    let probes: Vec<&String> = sim
        .log
        .iter()
        .filter(|l| l.starts_with("probe web-0@r2"))
        .collect();
    // At 0, 10, ..., 300 ms: the interval, then one last probe at the deadline.
    assert_eq!(probes.len(), 31, "{probes:?}");
    assert_eq!(probes[1], "probe web-0@r2 @ 10");
    // Rolled back: the new unit stopped, the old started again and gated.
    assert_eq!(
        sim.starts(),
        [
            "stop web-0@r1",
            "start web-0@r2",
            "stop web-0@r2",
            "start web-0@r1"
        ]
    );
    assert_eq!(
        end.restored,
        ["web-0: stopped web-0@r2, restarted web-0@r1 (healthy)"]
    );
    assert!(sim.audits.iter().any(|(s, _)| s == "rollback.start"));
}

#[test]
fn cancel_lets_the_step_in_flight_finish_and_starts_nothing_new() {
    let d = desired(&format!("{}{}", svc("a", 1, ""), svc("b", 1, "")));
    let decision = decide(&d, &[], &Scope::all());
    let mut sim = Sim::new(&decision, 1);
    let mut cancelled = false;
    sim.input(Input::Started);
    // Bounded: a handful of calls per unit.
    for _ in 0..1000 {
        if sim.end.is_some() {
            break;
        }
        if let Some(call) = sim.calls.pop_front() {
            if !cancelled && matches!(call, Effect::Start { .. }) {
                cancelled = true;
                sim.input(Input::Cancel);
            }
            let reply = fine(&call, sim.now);
            sim.input(Input::Reply(id_of(&call), reply));
        } else if let Some((at, t)) = sim.timers.pop_first() {
            sim.now = at;
            sim.input(Input::TimerFired(t));
        }
    }
    let end = sim.end.clone().expect("ended");
    assert!(end.cancelled && end.failure.is_none(), "{end:?}");
    assert_eq!(sim.starts().len(), 1, "{:?}", sim.log);
    // The unit in flight was still gated: it is not left started and unverified.
    assert!(
        sim.audits
            .iter()
            .any(|(s, ok)| s.starts_with("gate ") && *ok)
    );
    assert!(
        !sim.events
            .iter()
            .any(|e| matches!(e, Event::WaveFinished { .. }))
    );
}

#[test]
fn a_canary_window_probes_on_timers_and_fails_at_the_first_unhealthy_probe() {
    let canary = ", rollout: {strategy: canary, canary: 1, analysis: 1s}";
    let d = desired(&svc("web", 3, canary));
    let observed = running(&d);
    let d2 = desired(&svc("web", 3, &format!("{canary}, env: {{V: '2'}}")));
    let decision = decide(&d2, &observed, &Scope::all());
    let mut sim = Sim::new(&decision, 16);
    let mut window_probes = 0;
    let end = sim.run(&mut |e, now| match e {
        // The gate's probe at 0 passes; the window's probes fail from 250 ms on.
        Effect::Probe { unit, .. } if unit.revision == 2 => {
            window_probes += 1;
            if now >= 250 {
                Reply::Probed(ProbeOutcome::unhealthy("turned bad"))
            } else {
                Reply::Probed(ProbeOutcome::healthy("ok"))
            }
        }
        e => fine(e, now),
    });
    let failure = end.failure.expect("the window failed");
    assert_eq!(failure.reason, "canary analysis failed: turned bad");
    assert_eq!(sim.now, 250, "failed at the first probe from 250 ms on");
    assert!(window_probes > 20, "probed every 10 ms: {window_probes}");
    assert!(
        !sim.starts().iter().any(|s| s.contains("web-1@r2")),
        "the rest never started: {:?}",
        sim.starts()
    );
    assert!(
        sim.audits
            .iter()
            .any(|(s, ok)| s == "canary.analysis web" && !*ok)
    );
}

#[test]
fn blue_green_starts_every_green_unit_before_stopping_blue() {
    let bg = ", rollout: {strategy: blue-green}";
    let d = desired(&svc("web", 2, bg));
    let observed = running(&d);
    let d2 = desired(&svc("web", 2, &format!("{bg}, env: {{V: '2'}}")));
    let decision = decide(&d2, &observed, &Scope::all());
    let mut sim = Sim::new(&decision, 16);
    let end = sim.run(&mut fine);
    assert_eq!(end, ended_touching(&["web"]));
    assert_eq!(
        sim.starts(),
        [
            "start web-0@r2",
            "start web-1@r2",
            "stop web-0@r1",
            "stop web-1@r1"
        ]
    );
}

#[test]
fn a_failed_job_attempt_is_retried_after_its_backoff_timer() {
    let d = desired(&format!(
        "{}jobs:\n  - {{name: migrate, command: [m], retries: 2, backoff: 150ms}}\n",
        svc("web", 1, ", depends_on: [migrate]")
    ));
    let d = d.clone().with_job_runs(&[]);
    let decision = decide(&d, &[], &Scope::all());
    let mut sim = Sim::new(&decision, 16);
    let mut exits = vec![UnitState::Exited(0), UnitState::Exited(3)];
    let mut started_at = Vec::new();
    let end = sim.run(&mut |e, now| match e {
        Effect::Start { spec, .. } if spec.service == "migrate" => {
            started_at.push(now);
            fine(e, now)
        }
        Effect::Inspect { unit, .. } => {
            let spec = d.jobs.values().next().unwrap().spec.clone();
            let mut st = status_of(&UnitSpec {
                revision: 2,
                ..spec
            });
            st.unit_id = unit.clone();
            st.state = exits.pop().unwrap_or(UnitState::Exited(0));
            Reply::Inspected(Ok(Some(st)))
        }
        e => fine(e, now),
    });
    assert_eq!(end, ended_touching(&["web"]));
    assert_eq!(started_at, [0, 150], "the retry waited for the backoff");
    assert!(sim.events.iter().any(|e| matches!(
        e,
        Event::JobAttemptFailed {
            attempt: 1,
            retry_in_ms: Some(150),
            ..
        }
    )));
    assert!(matches!(
        sim.log.iter().find(|l| l.starts_with("RecordJobRun")),
        Some(l) if l.contains("attempts: 2")
    ));
    // The service waits for its job.
    assert_eq!(sim.starts().last().copied(), Some("start web-0@r2"));
}

#[test]
fn surge_starts_the_new_unit_beside_the_old_and_a_rollback_restores_the_backup() {
    let extra = ", rollout: {strategy: rolling, max_unavailable: 0, max_surge: 1}, backup: ['${data_dir}/db']";
    let d = desired(&svc("db", 1, extra));
    let observed = running(&d);
    let d2 = desired(&svc("db", 1, &format!("{extra}, env: {{V: '2'}}")));
    let decision = decide(&d2, &observed, &Scope::all());
    let mut sim = Sim::new(&decision, 16);
    let end = sim.run(&mut fine);
    assert_eq!(end, ended_touching(&["db"]));
    assert_eq!(sim.starts(), ["start db-0@r2", "stop db-0@r1"]);
    assert!(
        sim.log[..2].iter().any(|l| l.starts_with("Snapshot")),
        "{:?}",
        sim.log
    );

    // The same change with a failing gate: the new unit is stopped, the backup restored,
    // and the old unit (never stopped under surge) keeps running.
    let mut sim = Sim::new(&decision, 16);
    let end = sim.run(&mut |e, now| match e {
        Effect::Probe { unit, .. } if unit.revision == 2 => {
            Reply::Probed(ProbeOutcome::unhealthy("no"))
        }
        e => fine(e, now),
    });
    assert_eq!(
        end.restored,
        ["db-0: stopped db-0@r2, restored backup pre-r2, db-0@r1 kept running"]
    );
    assert!(sim.log.iter().any(|l| l.starts_with("Restore")));
    assert_eq!(sim.starts(), ["start db-0@r2", "stop db-0@r2"]);
}

#[test]
fn a_lost_lease_stops_the_run_without_rolling_back() {
    let d = desired(&svc("web", 1, ""));
    let observed = running(&d);
    let d2 = desired(&svc("web", 1, ", env: {V: '2'}"));
    let decision = decide(&d2, &observed, &Scope::all());
    let mut sim = Sim::new(&decision, 16);
    sim.input(Input::Started);
    let mut told = false;
    // Bounded: a handful of calls.
    for _ in 0..1000 {
        if sim.end.is_some() {
            break;
        }
        if let Some(call) = sim.calls.pop_front() {
            if !told && matches!(call, Effect::Start { .. }) {
                told = true;
                sim.input(Input::LockLost);
            }
            let reply = fine(&call, sim.now);
            sim.input(Input::Reply(id_of(&call), reply));
        } else if let Some((at, t)) = sim.timers.pop_first() {
            sim.now = at;
            sim.input(Input::TimerFired(t));
        }
    }
    let end = sim.end.clone().expect("ended");
    assert!(end.lock_lost && !end.cancelled, "{end:?}");
    assert!(!sim.audits.iter().any(|(s, _)| s == "rollback.start"));
    assert_eq!(sim.starts(), ["stop web-0@r1", "start web-0@r2"]);
}

/// A run that ended well, having touched `services`.
fn ended_touching(services: &[&str]) -> RunEnd {
    RunEnd {
        touched: services.iter().map(|s| s.to_string()).collect(),
        ..RunEnd::default()
    }
}
