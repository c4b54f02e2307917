//! The conformance suite: behaviour every [`Provider`] must show, run against real processes.
//!
//! A provider crate runs it from an integration test with one line:
//!
//! ```text
//! phoenix_provider_api::conformance_tests!(MyFixture::new());
//! ```
//!
//! which expands to one `#[test]` per check (so they run in parallel and fail by name), each
//! evaluating the fixture expression afresh. A [`Fixture`] hands out providers that all talk to
//! the same backend (for the check that a second client sees the first one's units) and cleans
//! the backend up when dropped. [`run_all`] runs every check in sequence instead.
//!
//! Test processes are POSIX `sh` scripts using `sleep`, `trap`, `test`, `grep`, `wc`, `mv` and
//! `busybox httpd` (the HTTP server), so the same checks run wherever units run: on this host
//! (the local provider needs `busybox` on `PATH`), in a container of a busybox image (docker),
//! or on a remote host. A fixture adapts each unit spec to its backend with
//! [`Fixture::prepare`] (e.g. the image to run) and says where a server must listen with
//! [`Fixture::listen_host`]. Every check uses its own fleet (`conf-<check>-<pid>-<n>`) and stops
//! every unit of it when it ends, pass or fail. Timing assumptions are loose (seconds), for slow
//! CI machines.

use crate::{
    Health, HealthCheck, Provider, ProviderError, RestartPolicy, UnitSpec, UnitState, UnitStatus,
};
use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Hands out providers on one backend, and cleans that backend up when dropped.
pub trait Fixture: Sync {
    /// A new client of the backend. Providers from one fixture must see each other's units.
    fn provider(&self) -> Box<dyn Provider>;

    /// The spec a check asks for, adapted to this backend: a docker fixture sets
    /// [`UnitSpec::container`] (the image to run). Every check passes every spec it starts
    /// through this. The default changes nothing.
    fn prepare(&self, spec: UnitSpec) -> UnitSpec {
        spec
    }

    /// The address a test server binds to so that this host reaches it on its allocated port:
    /// `127.0.0.1` (the default) for processes on this host, `0.0.0.0` inside a container whose
    /// ports are published on this host's loopback.
    fn listen_host(&self) -> &str {
        "127.0.0.1"
    }

    /// Why this backend cannot be tested here (no daemon to talk to, say), or `None` when it
    /// can. The tests of [`conformance_tests!`](crate::conformance_tests) print the reason once
    /// and pass without running; a fixture that must not be skipped (in CI) panics instead.
    fn unavailable(&self) -> Option<String> {
        None
    }
}

impl<F, P> Fixture for F
where
    F: Fn() -> P + Sync,
    P: Provider + 'static,
{
    fn provider(&self) -> Box<dyn Provider> {
        Box::new(self())
    }
}

/// How long a check waits for something that should happen "soon".
pub const WAIT: Duration = Duration::from_secs(15);

/// One conformance check.
pub type Check = fn(&dyn Fixture);

/// Every check, by name. Keep in step with [`conformance_tests!`](crate::conformance_tests).
pub const CHECKS: &[(&str, Check)] = &[
    ("start_list_stop", start_list_stop),
    ("start_is_idempotent", start_is_idempotent),
    ("stop_is_idempotent", stop_is_idempotent),
    (
        "list_sees_units_of_other_clients",
        list_sees_units_of_other_clients,
    ),
    ("ports_are_distinct", ports_are_distinct),
    (
        "substitutions_reach_the_process",
        substitutions_reach_the_process,
    ),
    ("data_dir_kept_across_restart", data_dir_kept_across_restart),
    ("restart_on_failure", restart_on_failure),
    ("restart_always", restart_always),
    ("no_restart_under_never", no_restart_under_never),
    ("graceful_stop", graceful_stop),
    ("kill_after_grace", kill_after_grace),
    ("health_probes", health_probes),
    ("snapshot_restore_round_trip", snapshot_restore_round_trip),
    ("logs_written", logs_written),
    ("bad_specs_rejected", bad_specs_rejected),
];

/// Runs every check in sequence, then panics listing the ones that failed. Runs nothing when
/// the fixture is [unavailable](Fixture::unavailable).
///
/// # Panics
/// If any check fails.
pub fn run_all(fixture: &dyn Fixture) {
    if skipped(fixture) {
        return;
    }
    let mut failed = Vec::new();
    for (name, check) in CHECKS {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(fixture)));
        if r.is_err() {
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "conformance checks failed: {failed:?}");
}

/// One `#[test]` per conformance check, each on a fresh fixture from `$fixture` (an expression
/// whose value implements [`Fixture`]). A test whose fixture is
/// [unavailable](Fixture::unavailable) prints why and passes without running.
#[macro_export]
macro_rules! conformance_tests {
    ($fixture:expr) => {
        $crate::conformance_tests!(@each $fixture;
            start_list_stop, start_is_idempotent, stop_is_idempotent,
            list_sees_units_of_other_clients, ports_are_distinct,
            substitutions_reach_the_process, data_dir_kept_across_restart, restart_on_failure,
            restart_always, no_restart_under_never, graceful_stop, kill_after_grace,
            health_probes, snapshot_restore_round_trip, logs_written, bad_specs_rejected);
    };
    (@each $fixture:expr; $($check:ident),*) => {
        $(
            #[test]
            fn $check() {
                let fixture = $fixture;
                if !$crate::conformance::skipped(&fixture) {
                    $crate::conformance::$check(&fixture);
                }
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Whether `fixture` is [unavailable](Fixture::unavailable); the first time in this process
/// that it is, says why on stderr (straight to the process's stderr: the test harness captures
/// `eprintln!` of passing tests, and a skip must be seen).
pub fn skipped(fixture: &dyn Fixture) -> bool {
    let Some(why) = fixture.unavailable() else {
        return false;
    };
    static SAY_ONCE: std::sync::Once = std::sync::Once::new();
    SAY_ONCE.call_once(|| {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the provider conformance checks pass without running: {why}"
        );
    });
    true
}

/// The Python interpreter on this host: `python3` resolved once to its real executable, so
/// version-manager shims do not slow every start. The suite itself no longer runs Python (its
/// test processes are POSIX `sh`); this stays for provider tests that run on this host.
pub fn python() -> String {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "python3".into())
    })
    .clone()
}

/// A fleet name no other check (or other run) uses.
pub fn fleet_name(check: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let check: String = check
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    format!(
        "conf-{check}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Stops every unit of a fleet when dropped (pass or fail), so no check leaves processes.
pub struct FleetGuard<'a> {
    provider: &'a dyn Provider,
    fleet: String,
}

impl<'a> FleetGuard<'a> {
    /// Guards `fleet` on `provider`.
    pub fn new(provider: &'a dyn Provider, fleet: &str) -> Self {
        FleetGuard {
            provider,
            fleet: fleet.into(),
        }
    }
}

impl Drop for FleetGuard<'_> {
    fn drop(&mut self) {
        if let Ok(units) = self.provider.list(&self.fleet) {
            for u in units {
                let _ = self.provider.stop(&self.fleet, &u.unit_id, Duration::ZERO);
            }
        }
    }
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `timeout`.
///
/// # Panics
/// On timeout, naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The unit `unit_id` of `fleet` as listed now.
pub fn find(p: &dyn Provider, fleet: &str, unit_id: &str) -> Option<UnitStatus> {
    p.list(fleet)
        .expect("list")
        .into_iter()
        .find(|u| u.unit_id == unit_id)
}

/// A unit running `argv`, restart `never` unless changed, stop grace 2 s.
pub fn unit(fleet: &str, instance: &str, revision: u64, argv: &[&str]) -> UnitSpec {
    let service = instance.rsplit_once('-').map_or(instance, |(s, _)| s);
    UnitSpec::new(fleet, service, instance, revision)
        .with_command(argv.iter().copied())
        .with_restart(RestartPolicy::Never)
        .with_stop_grace(Duration::from_secs(2))
}

/// A unit that sleeps for two minutes.
pub fn sleeper(fleet: &str, instance: &str, revision: u64) -> UnitSpec {
    unit(fleet, instance, revision, &["sleep", "120"])
}

/// A unit running `sh -c script`.
pub fn shell(fleet: &str, instance: &str, revision: u64, script: &str) -> UnitSpec {
    unit(fleet, instance, revision, &["sh", "-c", script])
}

fn command_check(argv: &[&str]) -> Health {
    Health {
        checks: vec![HealthCheck::Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
        }],
        timeout_ms: WAIT.as_millis() as u64,
        interval_ms: 50,
    }
}

/// Waits until a `sh -c script` command probe against `unit` passes.
///
/// # Panics
/// If it never does within [`WAIT`].
pub fn wait_for_shell_probe(p: &dyn Provider, unit: &UnitStatus, script: &str) {
    let h = command_check(&["sh", "-c", script]);
    let out = crate::probe::wait_until_healthy(p, unit, &h);
    assert!(
        out.healthy,
        "probe `{script}` on {}: {}",
        unit.unit_id, out.detail
    );
}

/// Starts `spec` as the fixture adapts it ([`Fixture::prepare`]).
fn started(fx: &dyn Fixture, p: &dyn Provider, spec: &UnitSpec) -> UnitStatus {
    let st = p
        .start(&fx.prepare(spec.clone()))
        .unwrap_or_else(|e| panic!("start {}: {e}", spec.unit_id()));
    assert_eq!(st.unit_id, spec.unit_id());
    st
}

fn stop(p: &dyn Provider, fleet: &str, unit_id: &str) {
    p.stop(fleet, unit_id, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("stop {unit_id}: {e}"));
}

// ---------------------------------------------------------------------------------------------
// Checks

/// A started unit is running, carries its identity, is listed in its fleet only, and is gone
/// from the list once stopped.
pub fn start_list_stop(fx: &dyn Fixture) {
    let p = fx.provider();
    let fleet = fleet_name("sls");
    let other = fleet_name("sls-other");
    let _g = FleetGuard::new(&*p, &fleet);
    let mut spec = sleeper(&fleet, "app-0", 1);
    spec.site = "core-1".into();
    let st = started(fx, &*p, &spec);
    assert_eq!(st.state, UnitState::Running, "{st:?}");
    assert_eq!(
        (
            &*st.fleet,
            &*st.service,
            &*st.instance,
            st.revision,
            &*st.site
        ),
        (&*fleet, "app", "app-0", 1, "core-1")
    );
    assert!(
        st.pid.is_some() || st.handle.is_some(),
        "no pid or handle: {st:?}"
    );
    let listed = p.list(&fleet).expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].unit_id, "app-0@r1");
    assert_eq!(listed[0].state, UnitState::Running);
    assert!(
        p.list(&other).expect("list other fleet").is_empty(),
        "fleets must not mix"
    );
    stop(&*p, &fleet, &st.unit_id);
    assert!(
        p.list(&fleet).expect("list").is_empty(),
        "stopped unit still listed"
    );
}

/// Starting a running unit again, sequentially or from several clients at once, returns the
/// same process and never creates a duplicate.
pub fn start_is_idempotent(fx: &dyn Fixture) {
    let p = fx.provider();
    let fleet = fleet_name("idem");
    let _g = FleetGuard::new(&*p, &fleet);
    let spec = sleeper(&fleet, "app-0", 1);
    let first = started(fx, &*p, &spec);
    let again = started(fx, &*p, &spec);
    assert_eq!(
        (first.pid, &first.handle),
        (again.pid, &again.handle),
        "second start made a new process"
    );
    let spec2 = fx.prepare(sleeper(&fleet, "app-1", 1));
    let results: Vec<UnitStatus> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let c = fx.provider();
                    c.start(&spec2).expect("concurrent start")
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("start thread"))
            .collect()
    });
    let ids: BTreeSet<_> = results.iter().map(|r| (r.pid, r.handle.clone())).collect();
    assert_eq!(
        ids.len(),
        1,
        "concurrent starts made several processes: {results:?}"
    );
    let listed = p.list(&fleet).expect("list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed
            .iter()
            .all(|u| u.state.is_running() && u.restarts == 0),
        "{listed:?}"
    );
}

/// Stopping twice, or stopping what never existed, is fine.
pub fn stop_is_idempotent(fx: &dyn Fixture) {
    let p = fx.provider();
    let fleet = fleet_name("stopidem");
    let _g = FleetGuard::new(&*p, &fleet);
    p.stop(&fleet, "nothing-0@r1", Duration::ZERO)
        .expect("stop of an unknown unit");
    p.stop(&fleet_name("nofleet"), "x-0@r9", Duration::ZERO)
        .expect("stop in an unknown fleet");
    let st = started(fx, &*p, &sleeper(&fleet, "app-0", 1));
    stop(&*p, &fleet, &st.unit_id);
    stop(&*p, &fleet, &st.unit_id);
    assert!(p.list(&fleet).expect("list").is_empty());
}

/// `list` is observed truth: a second client (or a restarted caller that forgot everything)
/// sees and can stop the units the first one started.
pub fn list_sees_units_of_other_clients(fx: &dyn Fixture) {
    let fleet = fleet_name("others");
    let b = fx.provider();
    let _g = FleetGuard::new(&*b, &fleet);
    let a = fx.provider();
    let st = started(fx, &*a, &sleeper(&fleet, "app-0", 3));
    let seen = find(&*b, &fleet, &st.unit_id).expect("second client does not see the unit");
    assert_eq!(
        (seen.pid, &seen.handle, seen.state),
        (st.pid, &st.handle, UnitState::Running)
    );
    drop(a);
    stop(&*b, &fleet, &st.unit_id);
    let c = fx.provider();
    assert!(c.list(&fleet).expect("list").is_empty());
}

/// Every named port of every unit gets its own port, also for two revisions of one instance
/// running side by side (blue-green).
pub fn ports_are_distinct(fx: &dyn Fixture) {
    let p = fx.provider();
    let fleet = fleet_name("ports");
    let _g = FleetGuard::new(&*p, &fleet);
    let mut units = Vec::new();
    for (inst, rev) in [("svc-0", 1), ("svc-1", 1), ("svc-2", 1), ("svc-0", 2)] {
        units.push(started(
            fx,
            &*p,
            &sleeper(&fleet, inst, rev).with_ports(["http", "admin"]),
        ));
    }
    let mut all = BTreeSet::new();
    for u in &units {
        assert_eq!(
            u.ports.keys().map(String::as_str).collect::<Vec<_>>(),
            ["admin", "http"]
        );
        for port in u.ports.values() {
            assert!(*port > 0);
            assert!(all.insert(*port), "port {port} given twice: {units:?}");
        }
    }
    let listed = p.list(&fleet).expect("list");
    assert_eq!(listed.len(), 4);
    let again = find(&*p, &fleet, "svc-0@r1").expect("svc-0@r1");
    assert_eq!(
        again.ports, units[0].ports,
        "ports changed between start and list"
    );
}

/// Ports, `${instance}`, `${service}`, `${site}` and `${data_dir}` are substituted in the
/// command and the environment.
pub fn substitutions_reach_the_process(fx: &dyn Fixture) {
    let p = fx.provider();
    let fleet = fleet_name("subst");
    let _g = FleetGuard::new(&*p, &fleet);
    let mut spec = shell(
        &fleet,
        "env-0",
        1,
        "echo \"$GREETING|${service}|${site}\" > \"${data_dir}/seen.tmp\" && mv \"${data_dir}/seen.tmp\" \"${data_dir}/seen\" && exec sleep 120",
    )
    .with_ports(["port"])
    .with_env("GREETING", "hello ${instance} on ${port}");
    spec.site = "edge-7".into();
    let st = started(fx, &*p, &spec);
    let port = st.ports["port"];
    wait_for_shell_probe(
        &*p,
        &st,
        &format!("grep -qx 'hello env-0 on {port}|env|edge-7' \"${{data_dir}}/seen\""),
    );
}

/// An instance's data directory survives its unit being stopped and started again, and is
/// shared by the next revision.
pub fn data_dir_kept_across_restart(fx: &dyn Fixture) {
    let p = fx.provider();
    let fleet = fleet_name("datadir");
    let _g = FleetGuard::new(&*p, &fleet);
    let writer = shell(
        &fleet,
        "db-0",
        1,
        "echo kept > \"${data_dir}/marker\"; exec sleep 120",
    );
    let r1 = started(fx, &*p, &writer);
    wait_for_shell_probe(&*p, &r1, "grep -qx kept \"${data_dir}/marker\"");
    stop(&*p, &fleet, &r1.unit_id);
    let reader_script = "if grep -qx kept \"${data_dir}/marker\"; then touch \"${data_dir}/saw-r$REV\"; fi; exec sleep 120";
    let again = started(
        fx,
        &*p,
        &shell(&fleet, "db-0", 1, reader_script).with_env("REV", "1"),
    );
    assert_eq!(again.data_dir, r1.data_dir);
    wait_for_shell_probe(&*p, &again, "test -f \"${data_dir}/saw-r1\"");
    stop(&*p, &fleet, &again.unit_id);
    let r2 = started(
        fx,
        &*p,
        &shell(&fleet, "db-0", 2, reader_script).with_env("REV", "2"),
    );
    assert_eq!(
        r2.data_dir, r1.data_dir,
        "revisions of one instance share the data dir"
    );
    wait_for_shell_probe(&*p, &r2, "test -f \"${data_dir}/saw-r2\"");
    let other = started(fx, &*p, &sleeper(&fleet, "db-1", 2));
    assert_ne!(
        other.data_dir, r1.data_dir,
        "instances have their own data dirs"
    );
}

/// Under `on-failure`, a process that exits non-zero is restarted (same ports, same data
/// dir), and one that exits 0 is not.
pub fn restart_on_failure(fx: &dyn Fixture) {
    let p = fx.provider();
    let fleet = fleet_name("onfail");
    let _g = FleetGuard::new(&*p, &fleet);
    let spec = shell(
        &fleet,
        "crash-0",
        1,
        "echo run >> \"${data_dir}/runs\"; sleep 0.1; exit 3",
    )
    .with_ports(["port"])
    .with_restart(RestartPolicy::OnFailure);
    let st = started(fx, &*p, &spec);
    let later = wait_for("two restarts under on-failure", WAIT, || {
        find(&*p, &fleet, &st.unit_id).filter(|u| u.restarts >= 2)
    });
    assert_eq!(later.ports, st.ports, "ports must survive restarts");
    // Read the runs from a second unit of the instance (sharing its data dir): the crashing one
    // is up for a tenth of a second at a time, too short to run a check inside it reliably.
    let checker = started(fx, &*p, &sleeper(&fleet, "crash-0", 2));
    wait_for_shell_probe(&*p, &checker, "test $(wc -l < \"${data_dir}/runs\") -ge 3");

    let clean = shell(&fleet, "clean-0", 1, "exit 0").with_restart(RestartPolicy::OnFailure);
    let c = started(fx, &*p, &clean);
    let done = wait_for("clean exit observed", WAIT, || {
        find(&*p, &fleet, &c.unit_id).filter(|u| u.state == UnitState::Exited(0))
    });
    std::thread::sleep(Duration::from_millis(700));
    let still = find(&*p, &fleet, &c.unit_id).expect("exited unit stays listed until stopped");
    assert_eq!(
        (still.state, still.restarts),
        (UnitState::Exited(0), 0),
        "{done:?} -> {still:?}"
    );
}

/// Under `always`, even a clean exit is restarted.
pub fn restart_always(fx: &dyn Fixture) {
    let p = fx.provider();
    let fleet = fleet_name("always");
    let _g = FleetGuard::new(&*p, &fleet);
    let spec = shell(&fleet, "job-0", 1, "sleep 0.1; exit 0").with_restart(RestartPolicy::Always);
    let st = started(fx, &*p, &spec);
    wait_for("a restart under always", WAIT, || {
        find(&*p, &fleet, &st.unit_id).filter(|u| u.restarts >= 1)
    });
}

/// Under `never`, a failed process stays down, reported as `exited(code)`; starting the unit
/// again runs it again.
pub fn no_restart_under_never(fx: &dyn Fixture) {
    let p = fx.provider();
    let fleet = fleet_name("never");
    let _g = FleetGuard::new(&*p, &fleet);
    let spec = shell(
        &fleet,
        "once-0",
        1,
        "if [ -f \"${data_dir}/ran\" ]; then exec sleep 120; fi; touch \"${data_dir}/ran\"; exit 4",
    );
    let st = started(fx, &*p, &spec);
    wait_for("exit 4 observed", WAIT, || {
        find(&*p, &fleet, &st.unit_id).filter(|u| u.state == UnitState::Exited(4))
    });
    std::thread::sleep(Duration::from_millis(700));
    let still = find(&*p, &fleet, &st.unit_id).expect("exited unit stays listed");
    assert_eq!(
        (still.state, still.restarts),
        (UnitState::Exited(4), 0),
        "restarted under never"
    );
    let again = started(fx, &*p, &spec);
    assert_eq!(
        again.state,
        UnitState::Running,
        "start of an exited unit runs it: {again:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let running = find(&*p, &fleet, &st.unit_id).expect("listed");
    assert_eq!(running.state, UnitState::Running, "{running:?}");
}

/// Stop sends SIGTERM first: a process that exits on it does so well before the grace period
/// ends, and has had the chance to clean up.
pub fn graceful_stop(fx: &dyn Fixture) {
    let p = fx.provider();
    let fleet = fleet_name("graceful");
    let _g = FleetGuard::new(&*p, &fleet);
    // `sleep & wait`: a trap runs only between commands, and `wait` is one that a trapped
    // signal interrupts.
    let script = "trap 'echo yes > \"${data_dir}/got-term\"; exit 0' TERM; \
        echo ready > \"${data_dir}/ready\"; sleep 120 & wait";
    let st = started(fx, &*p, &shell(&fleet, "polite-0", 1, script));
    wait_for_shell_probe(&*p, &st, "test -f \"${data_dir}/ready\"");
    let t = Instant::now();
    p.stop(&fleet, &st.unit_id, Duration::from_secs(10))
        .expect("stop");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "waited the whole grace: {:?}",
        t.elapsed()
    );
    assert!(find(&*p, &fleet, &st.unit_id).is_none());
    let checker = started(fx, &*p, &sleeper(&fleet, "polite-0", 2));
    wait_for_shell_probe(&*p, &checker, "grep -qx yes \"${data_dir}/got-term\"");
}

/// A process that ignores SIGTERM is killed once the grace period is over.
pub fn kill_after_grace(fx: &dyn Fixture) {
    let p = fx.provider();
    let fleet = fleet_name("stubborn");
    let _g = FleetGuard::new(&*p, &fleet);
    // An ignored signal stays ignored in the children (`sleep`) too.
    let script = "trap '' TERM; echo ready > \"${data_dir}/ready\"; sleep 120 & wait";
    let st = started(fx, &*p, &shell(&fleet, "stubborn-0", 1, script));
    wait_for_shell_probe(&*p, &st, "test -f \"${data_dir}/ready\"");
    let grace = Duration::from_millis(400);
    let t = Instant::now();
    p.stop(&fleet, &st.unit_id, grace).expect("stop");
    let took = t.elapsed();
    assert!(
        took >= grace,
        "killed before the grace period ended: {took:?}"
    );
    assert!(took < grace + Duration::from_secs(5), "stop took {took:?}");
    assert!(find(&*p, &fleet, &st.unit_id).is_none());
}

/// HTTP, TCP and command probes pass and fail as they should, with substitutions, and an
/// attempt never outlasts its bound.
pub fn health_probes(fx: &dyn Fixture) {
    let p = fx.provider();
    let fleet = fleet_name("health");
    let _g = FleetGuard::new(&*p, &fleet);
    // busybox httpd answers 404 for a directory without an index, so give it one.
    let server = format!(
        "echo ok > \"${{data_dir}}/index.html\" && \
         exec busybox httpd -f -p {}:${{port}} -h \"${{data_dir}}\"",
        fx.listen_host()
    );
    let web = shell(&fleet, "web-0", 1, &server).with_ports(["port"]);
    let st = started(fx, &*p, &web);
    let h = |check: HealthCheck| Health {
        checks: vec![check],
        timeout_ms: WAIT.as_millis() as u64,
        interval_ms: 50,
    };
    let http = |path: &str, expect_status: u16| {
        h(HealthCheck::Http {
            url: format!("http://127.0.0.1:${{port}}{path}"),
            expect_status,
        })
    };
    let up = crate::probe::wait_until_healthy(&*p, &st, &http("/", 200));
    assert!(
        up.healthy,
        "http server never became healthy: {}",
        up.detail
    );
    let wrong = p.probe(&st, &http("/missing", 200));
    assert!(!wrong.healthy && wrong.detail.contains("404"), "{wrong:?}");
    assert!(p.probe(&st, &http("/missing", 404)).healthy);
    assert!(
        p.probe(
            &st,
            &h(HealthCheck::Tcp {
                address: "127.0.0.1:${port}".into()
            })
        )
        .healthy
    );

    let idle = started(fx, &*p, &sleeper(&fleet, "idle-0", 1).with_ports(["port"]));
    let refused = p.probe(
        &idle,
        &h(HealthCheck::Tcp {
            address: "127.0.0.1:${port}".into(),
        }),
    );
    assert!(!refused.healthy, "nothing listens there: {refused:?}");
    assert!(!p.probe(&idle, &http("/", 200)).healthy);

    let cmd = |argv: &[&str]| {
        h(HealthCheck::Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
        })
    };
    assert!(p.probe(&st, &cmd(&["test", "-d", "${data_dir}"])).healthy);
    let failing = p.probe(&st, &cmd(&["sh", "-c", "exit 1"]));
    assert!(!failing.healthy, "{failing:?}");

    let slow = Health {
        timeout_ms: 300,
        ..cmd(&["sleep", "30"])
    };
    let t = Instant::now();
    let out = p.probe(&st, &slow);
    assert!(!out.healthy, "{out:?}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "probe attempt not bounded: {:?}",
        t.elapsed()
    );
    let gate = crate::probe::wait_until_healthy(
        &*p,
        &st,
        &Health {
            timeout_ms: 400,
            ..cmd(&["false"])
        },
    );
    assert!(!gate.healthy);
}

/// A snapshot of data-dir paths taken before a change restores them exactly (changed files back,
/// added files gone), and only paths under the data dir are accepted.
pub fn snapshot_restore_round_trip(fx: &dyn Fixture) {
    let p = fx.provider();
    let fleet = fleet_name("backup");
    let _g = FleetGuard::new(&*p, &fleet);
    let r1 = started(
        fx,
        &*p,
        &shell(
            &fleet,
            "db-0",
            1,
            "mkdir -p \"${data_dir}/db\" && echo v1 > \"${data_dir}/db/value\" && exec sleep 120",
        ),
    );
    wait_for_shell_probe(&*p, &r1, "grep -qx v1 \"${data_dir}/db/value\"");
    let snap = p
        .snapshot(
            &fleet,
            "db-0",
            &["${data_dir}/db".into(), "${data_dir}/absent".into()],
            "pre-r2",
        )
        .expect("snapshot");
    assert_eq!(snap.tag, "pre-r2");
    assert_eq!(snap.paths, ["db", "absent"]);
    stop(&*p, &fleet, &r1.unit_id);

    let r2 = started(
        fx,
        &*p,
        &shell(
            &fleet,
            "db-0",
            2,
            "echo v2 > \"${data_dir}/db/value\"; touch \"${data_dir}/db/extra\" \"${data_dir}/absent\"; exec sleep 120",
        ),
    );
    wait_for_shell_probe(
        &*p,
        &r2,
        "grep -qx v2 \"${data_dir}/db/value\" && test -f \"${data_dir}/absent\"",
    );
    stop(&*p, &fleet, &r2.unit_id);

    let restored = p.restore(&fleet, "db-0", "pre-r2").expect("restore");
    assert_eq!(restored.paths, snap.paths);
    let r3 = started(fx, &*p, &sleeper(&fleet, "db-0", 1));
    wait_for_shell_probe(
        &*p,
        &r3,
        "grep -qx v1 \"${data_dir}/db/value\" && ! test -e \"${data_dir}/db/extra\" && ! test -e \"${data_dir}/absent\"",
    );

    match p.restore(&fleet, "db-0", "no-such-tag") {
        Err(ProviderError::SnapshotNotFound { .. }) => {}
        other => panic!("restore of an unknown tag: {other:?}"),
    }
    for bad in ["${data_dir}/../escape", "/etc"] {
        match p.snapshot(&fleet, "db-0", &[bad.into()], "bad") {
            Err(ProviderError::PathOutsideDataDir { .. }) => {}
            other => panic!("snapshot of `{bad}`: {other:?}"),
        }
    }
}

/// Stdout and stderr go to the unit's log files, which are found by service and by instance
/// and kept after the unit stops.
pub fn logs_written(fx: &dyn Fixture) {
    let p = fx.provider();
    let fleet = fleet_name("logs");
    let _g = FleetGuard::new(&*p, &fleet);
    let st = started(
        fx,
        &*p,
        &shell(
            &fleet,
            "chatty-0",
            1,
            "echo \"out ${instance}\"; echo \"err ${instance}\" >&2; exec sleep 120",
        ),
    );
    assert!(!st.logs.is_empty(), "no log paths in the status");
    let read_all = |sel: &str| {
        let paths = p.log_paths(&fleet, sel).expect("log_paths");
        let text: String = paths
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect();
        (paths, text)
    };
    wait_for("both lines in the log", WAIT, || {
        let (_, text) = read_all("chatty");
        (text.contains("out chatty-0") && text.contains("err chatty-0")).then_some(())
    });
    let (by_service, _) = read_all("chatty");
    let (by_instance, _) = read_all("chatty-0");
    assert_eq!(by_service, by_instance);
    assert!(
        read_all("other").0.is_empty(),
        "logs of another service returned"
    );
    stop(&*p, &fleet, &st.unit_id);
    assert!(
        read_all("chatty").1.contains("out chatty-0"),
        "logs gone after stop"
    );
}

/// Specs that cannot run are refused, and leave nothing behind.
pub fn bad_specs_rejected(fx: &dyn Fixture) {
    let p = fx.provider();
    let fleet = fleet_name("bad");
    let _g = FleetGuard::new(&*p, &fleet);
    match p.start(&fx.prepare(unit(&fleet, "x-0", 1, &["sleep", "${nope}"]))) {
        Err(ProviderError::InvalidSpec { .. }) => {}
        other => panic!("unknown substitution accepted: {other:?}"),
    }
    match p.start(&fx.prepare(unit(&fleet, "../x", 1, &["sleep", "1"]))) {
        Err(ProviderError::InvalidSpec { .. }) => {}
        other => panic!("bad instance name accepted: {other:?}"),
    }
    match p.start(&fx.prepare(unit(
        &fleet,
        "x-0",
        1,
        &["/nonexistent/phoenix-conformance-binary"],
    ))) {
        Err(ProviderError::Spawn { .. }) => {}
        Ok(st) => {
            let u = wait_for("the missing binary to be reported", WAIT, || {
                find(&*p, &fleet, &st.unit_id).filter(|u| !u.state.is_running())
            });
            assert!(
                matches!(u.state, UnitState::Failed | UnitState::Exited(_)),
                "{u:?}"
            );
        }
        Err(e) => panic!("missing binary: unexpected error {e}"),
    }
}
