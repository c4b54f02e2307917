//! The local agent beyond the conformance suite: crashes of units and of the agent itself,
//! re-adoption, process-group cleanup, idle exit, the lock and detachment.

mod common;

use common::{
    LocalFixture, alive, group_members, kill, processes_of_unit, stat, unit_processes, wait_dead,
};
use phoenix_provider_api::conformance::{find, shell, sleeper, wait_for};
use phoenix_provider_api::{Provider, RestartPolicy, UnitState};
use phoenix_provider_local::protocol::Request;
use phoenix_provider_local::{LocalProvider, reap_spawned_agents};
use rustix::process::Signal;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn kill_9_of_a_unit_is_noticed_and_restarted() {
    let fx = LocalFixture::new();
    let p = fx.local();
    let spec = sleeper("f", "app-0", 1)
        .with_restart(RestartPolicy::OnFailure)
        .with_ports(["port"]);
    let st = p.start(&spec).unwrap();
    let old = st.pid.unwrap();
    kill(old, Signal::KILL);
    let again = wait_for("a restart after kill -9", WAIT, || {
        find(&p, "f", &st.unit_id).filter(|u| u.restarts >= 1 && u.state.is_running())
    });
    assert_ne!(again.pid, Some(old));
    assert_eq!(again.ports, st.ports);
    assert!(again.detail.unwrap().contains("signal 9"));
    assert!(!alive(old));

    let never = p.start(&sleeper("f", "once-0", 1)).unwrap();
    kill(never.pid.unwrap(), Signal::KILL);
    let down = wait_for("kill -9 reported", WAIT, || {
        find(&p, "f", &never.unit_id).filter(|u| !u.state.is_running())
    });
    assert_eq!(down.state, UnitState::Failed);
    assert_eq!(down.pid, None);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        find(&p, "f", &never.unit_id).unwrap().restarts,
        0,
        "restarted under never"
    );
}

#[test]
fn agent_restart_readopts_units_without_duplicates() {
    let fx = LocalFixture::new();
    let p = fx.local();
    let a = sleeper("f", "a-0", 1)
        .with_restart(RestartPolicy::OnFailure)
        .with_ports(["port"]);
    let b = sleeper("f", "b-0", 1);
    let sa = p.start(&a).unwrap();
    let sb = p.start(&b).unwrap();
    let units_json = std::fs::read_to_string(fx.state_dir().join("agent/units.json")).unwrap();
    assert!(
        units_json.contains("a-0") && units_json.contains("b-0"),
        "{units_json}"
    );

    let agent = fx.agent_pid().expect("agent running");
    kill(agent, Signal::KILL);
    assert!(wait_dead(agent, WAIT), "agent survived kill -9");
    assert!(
        alive(sa.pid.unwrap()) && alive(sb.pid.unwrap()),
        "units died with the agent"
    );

    // A new client (the CLI run again) sees the same processes through a new agent.
    let p2 = fx.local();
    let listed = p2.list("f").unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let new_agent = fx.agent_pid().expect("a new agent");
    assert_ne!(new_agent, agent);
    assert_eq!(find(&p2, "f", &sa.unit_id).unwrap().pid, sa.pid);
    assert_eq!(find(&p2, "f", &sb.unit_id).unwrap().ports, sb.ports);
    // Regression: the log said `(pid Some(31731))`.
    let log = std::fs::read_to_string(fx.state_dir().join("agent/agent.log")).unwrap();
    let adopted = format!("adopted f {} (pid {})", sa.unit_id, sa.pid.unwrap());
    assert!(log.contains(&adopted), "{log}");
    assert!(!log.contains("Some("), "{log}");
    let again = p2.start(&a).unwrap();
    assert_eq!(
        again.pid, sa.pid,
        "start after re-adoption made a new process"
    );
    assert_eq!(
        processes_of_unit(fx.state_dir(), &sa.unit_id),
        vec![sa.pid.unwrap()]
    );

    // An adopted unit is not our child, yet its death is still noticed and acted on.
    kill(sa.pid.unwrap(), Signal::KILL);
    let restarted = wait_for("adopted unit restarted", WAIT, || {
        find(&p2, "f", &sa.unit_id).filter(|u| u.restarts >= 1 && u.state.is_running())
    });
    assert_ne!(restarted.pid, sa.pid);
    p2.stop("f", &sb.unit_id, Duration::from_secs(1)).unwrap();
    assert!(
        wait_dead(sb.pid.unwrap(), WAIT),
        "adopted unit survived stop"
    );
}

#[test]
fn unit_lost_from_the_table_is_found_by_its_environment() {
    let fx = LocalFixture::new();
    let p = fx.local();
    let kept = p.start(&sleeper("f", "kept-0", 1)).unwrap();
    let lost = p.start(&sleeper("f", "lost-0", 1)).unwrap();
    let agent = fx.agent_pid().unwrap();
    kill(agent, Signal::KILL);
    assert!(wait_dead(agent, WAIT));
    // Simulate a crash between spawning and recording: `kept` has no pid on record, `lost` is
    // not recorded at all.
    let path = fx.state_dir().join("agent/units.json");
    let mut table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let units = table["units"].as_array_mut().unwrap();
    units.retain(|u| u["spec"]["instance"] != "lost-0");
    units[0]["pid"] = serde_json::Value::Null;
    std::fs::write(&path, serde_json::to_vec(&table).unwrap()).unwrap();

    let listed = fx.local().list("f").unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        listed[0].pid, kept.pid,
        "recorded unit re-adopted by environment"
    );
    assert!(
        wait_dead(lost.pid.unwrap(), WAIT),
        "unrecorded unit process left running"
    );
}

#[test]
fn stop_leaves_no_process_behind() {
    let fx = LocalFixture::new();
    let p = fx.local();
    // A unit with children that ignore SIGTERM: only SIGKILL to the group ends them.
    let st = p
        .start(&shell(
            "f",
            "tree-0",
            1,
            "trap '' TERM; sleep 120 & sleep 120 & touch \"${data_dir}/up\"; wait",
        ))
        .unwrap();
    let pid = st.pid.unwrap();
    wait_for("children started", WAIT, || {
        (group_members(pid).len() >= 3).then_some(())
    });
    assert_eq!(
        stat(pid).unwrap().1,
        pid,
        "a unit leads its own process group"
    );
    let t = Instant::now();
    p.stop("f", &st.unit_id, Duration::from_millis(200))
        .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert!(!alive(pid));
    assert_eq!(
        group_members(pid),
        Vec::<u32>::new(),
        "group members survived the stop"
    );
    assert!(unit_processes(fx.state_dir()).is_empty());
}

#[test]
fn leftovers_of_an_exited_unit_are_killed_before_a_restart() {
    let fx = LocalFixture::new();
    let p = fx.local();
    let spec = shell(
        "f",
        "leaky-0",
        1,
        "sleep 120 & echo $! > \"${data_dir}/child.$$\"; exit 3",
    )
    .with_restart(RestartPolicy::Never);
    let st = p.start(&spec).unwrap();
    let pid = st.pid.unwrap();
    wait_for("exit observed", WAIT, || {
        find(&p, "f", &st.unit_id).filter(|u| u.state == UnitState::Exited(3))
    });
    wait_for("group emptied", WAIT, || {
        group_members(pid).is_empty().then_some(())
    });
}

#[test]
fn agent_exits_when_idle_and_restarts_on_demand() {
    let fx = LocalFixture::with_idle_exit("700ms");
    let p = fx.local();
    let st = p.start(&sleeper("f", "a-0", 1)).unwrap();
    let agent = fx.agent_pid().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(alive(agent), "agent exited while it had a unit");
    p.stop("f", &st.unit_id, Duration::ZERO).unwrap();
    assert!(
        wait_dead(agent, Duration::from_secs(5)),
        "idle agent did not exit"
    );
    assert!(!fx.state_dir().join("agent.sock").exists());
    // Nothing runs and nothing is recorded: listing does not start an agent.
    assert!(p.list("f").unwrap().is_empty());
    assert_eq!(fx.agent_pid(), None);
    // Starting does.
    let again = p.start(&sleeper("f", "a-0", 2)).unwrap();
    assert!(again.state.is_running());
    assert_ne!(fx.agent_pid(), Some(agent));
}

#[test]
fn second_agent_on_the_same_state_dir_refuses() {
    let fx = LocalFixture::new();
    let p = fx.local();
    p.request(&Request::Ping).unwrap();
    let first = fx.agent_pid().unwrap();
    let out = std::process::Command::new(common::AGENT)
        .args(fx.agent_command().iter().skip(1))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already runs") && err.contains(&first.to_string()),
        "{err}"
    );
    assert_eq!(fx.agent_pid(), Some(first));
}

#[test]
fn concurrent_clients_share_one_agent() {
    let fx = LocalFixture::new();
    let statuses: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let fx = &fx;
                s.spawn(move || {
                    fx.local()
                        .start(&sleeper("f", &format!("w-{i}"), 1))
                        .unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(statuses.len(), 4);
    let listed = fx.local().list("f").unwrap();
    assert_eq!(listed.len(), 4, "{listed:?}");
    // Agents that lost the race for the lock have exited; exactly one serves.
    wait_for("a single agent", WAIT, || {
        reap_spawned_agents();
        (common::agent_processes(fx.state_dir()).len() == 1).then_some(())
    });
    let log = std::fs::read_to_string(fx.state_dir().join("agent/agent.log")).unwrap();
    assert_eq!(log.matches("serving").count(), 1, "{log}");
}

#[test]
fn agent_is_detached_from_its_client() {
    let fx = LocalFixture::new();
    let p = fx.local();
    let st = p.start(&sleeper("f", "a-0", 1)).unwrap();
    let agent = fx.agent_pid().unwrap();
    let (_, agent_pgrp, agent_sid) = stat(agent).unwrap();
    let (_, _, my_sid) = stat(std::process::id()).unwrap();
    assert_ne!(agent_sid, my_sid, "the agent shares our session");
    assert_eq!(agent_pgrp, agent, "the agent leads its own group");
    let (_, unit_pgrp, _) = stat(st.pid.unwrap()).unwrap();
    assert_eq!(unit_pgrp, st.pid.unwrap());
    let log = std::fs::read_to_string(fx.state_dir().join("agent/agent.log")).unwrap();
    assert!(log.contains("serving"), "{log}");
}

#[test]
fn unreachable_agent_command_is_reported() {
    let dir = tempfile::Builder::new().prefix("phx").tempdir().unwrap();
    let p = LocalProvider::with_agent_command(dir.path(), vec!["/nonexistent/phoenix".into()]);
    let err = p.start(&sleeper("f", "a-0", 1)).unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("cannot start the agent"), "{err}");
}

#[test]
fn logs_by_service_across_revisions() {
    let fx = LocalFixture::new();
    let p = fx.local();
    for (inst, rev) in [("web-0", 1), ("web-0", 2), ("web-1", 1), ("web-api-0", 1)] {
        let st = p
            .start(&shell("f", inst, rev, "echo hi; exec sleep 120"))
            .unwrap();
        assert_eq!(
            st.logs,
            vec![fx.state_dir().join(format!("logs/f/{inst}@r{rev}.log"))]
        );
    }
    let names = |sel: &str| -> Vec<String> {
        p.log_paths("f", sel)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        names("web"),
        ["web-0@r1.log", "web-0@r2.log", "web-1@r1.log"]
    );
    assert_eq!(names("web-0"), ["web-0@r1.log", "web-0@r2.log"]);
    assert_eq!(names("web-api"), ["web-api-0@r1.log"]);
    assert!(names("nope").is_empty());
}

/// Regression: deleting `agent.sock` stranded the fleet. The agent kept running without a
/// socket, every client started a second agent that could not take the lock, and `status` and
/// `apply` failed after 10 s with "another agent (pid N) already runs". The agent now notices
/// that its socket path is no longer its socket and binds it again; units keep running.
#[test]
fn deleted_agent_socket_is_recreated_and_units_keep_running() {
    let fx = LocalFixture::new();
    let p = fx.local();
    let st = p.start(&sleeper("f", "a-0", 1)).unwrap();
    let agent = fx.agent_pid().unwrap();
    let sock = fx.state_dir().join("agent.sock");
    std::fs::remove_file(&sock).unwrap();
    let started = Instant::now();
    let listed = p.list("f").unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].pid, st.pid, "the unit was restarted");
    assert_eq!(fx.agent_pid(), Some(agent), "a different agent answers");
    // A file put in its place is replaced as well.
    std::fs::remove_file(&sock).unwrap();
    std::fs::write(&sock, "not a socket").unwrap();
    wait_for("the socket to be re-created", WAIT, || {
        fx.agent_pid().filter(|p| *p == agent)
    });
    assert!(alive(st.pid.unwrap()));
    let log = std::fs::read_to_string(fx.state_dir().join("agent/agent.log")).unwrap();
    assert!(log.contains("re-created it"), "{log}");
    assert_eq!(
        log.matches("serving").count(),
        1,
        "a second agent served: {log}"
    );
}

/// Regression (same defect): when a live agent holds the state dir but does not answer, the
/// client's error names its pid and says what to do, instead of quoting a second agent's
/// "already runs".
#[test]
fn an_agent_that_holds_the_dir_but_does_not_answer_is_named_with_what_to_do() {
    let fx = LocalFixture::new();
    // Stand in for a stuck agent: hold its lock and pidfile, serve no socket.
    let agent_dir = fx.state_dir().join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let lock = std::fs::File::create(agent_dir.join("agent.lock")).unwrap();
    use std::os::fd::AsFd;
    rustix::fs::flock(lock.as_fd(), rustix::fs::FlockOperation::LockExclusive).unwrap();
    let me = std::process::id();
    std::fs::write(agent_dir.join("agent.pid"), format!("{me}\n")).unwrap();
    let p = fx.local().with_start_timeout(Duration::from_millis(700));
    let err = p.request(&Request::Ping).unwrap_err().to_string();
    assert!(err.contains(&format!("pid {me}")), "{err}");
    assert!(err.contains(&format!("kill {me}")), "{err}");
    assert!(err.contains("units keep running"), "{err}");
    assert!(!err.contains("already runs"), "{err}");
    // No second agent was started meanwhile.
    assert!(common::agent_processes(fx.state_dir()).is_empty());
    drop(lock);
    std::fs::remove_file(agent_dir.join("agent.pid")).unwrap();
}

/// Regression (a wrong or read-only state dir misleads): reading commands started an agent
/// (spawning into the state dir, restarting units) just to list. A provider that does not
/// start agents reads the unit table instead when none runs.
#[test]
fn a_provider_that_does_not_start_agents_lists_from_the_table() {
    let fx = LocalFixture::new();
    let p = fx.local();
    let st = p.start(&sleeper("f", "a-0", 1)).unwrap();
    let gone = p.start(&sleeper("f", "b-0", 1)).unwrap();
    let observer = fx.local().without_starting_agent();
    // With an agent: its answer.
    assert_eq!(observer.list("f").unwrap().len(), 2);
    let agent = fx.agent_pid().unwrap();
    kill(agent, Signal::KILL);
    assert!(wait_dead(agent, WAIT));
    kill(gone.pid.unwrap(), Signal::KILL);
    assert!(wait_dead(gone.pid.unwrap(), WAIT));
    // Without: the table, checked against /proc, and no agent started.
    let listed = observer.list("f").unwrap();
    let a = listed.iter().find(|u| u.unit_id == st.unit_id).unwrap();
    assert!(a.state.is_running() && a.pid == st.pid, "{a:?}");
    assert!(
        a.detail
            .as_deref()
            .unwrap()
            .contains("no agent supervises it")
    );
    let b = listed.iter().find(|u| u.unit_id == gone.unit_id).unwrap();
    assert_eq!(b.state, UnitState::Failed, "{b:?}");
    assert_eq!(fx.agent_pid(), None, "an agent was started");
    assert!(observer.request(&Request::Ping).is_err());
    assert_eq!(fx.agent_pid(), None, "an agent was started");
}

/// What a one-shot job needs of the provider: a unit under `restart: never` that exits is
/// listed as `exited(code)` (not restarted), its output tail can be read after the exit, and a
/// stop removes it.
#[test]
fn an_exited_unit_under_never_reports_its_code_and_output_until_stopped() {
    let fx = LocalFixture::new();
    let p = fx.local();
    let spec = shell("f", "job-0", 1, "echo line one; echo oops >&2; exit 3")
        .with_restart(RestartPolicy::Never);
    let st = p.start(&spec).unwrap();
    let done = wait_for("the exit reported", WAIT, || {
        find(&p, "f", &st.unit_id).filter(|u| !u.state.is_running())
    });
    assert_eq!(done.state, UnitState::Exited(3));
    std::thread::sleep(Duration::from_millis(300));
    let still = find(&p, "f", &st.unit_id).unwrap();
    assert_eq!((still.state, still.restarts), (UnitState::Exited(3), 0));
    let out = p.output_tail(&still, 64 * 1024).unwrap();
    assert!(out.contains("line one") && out.contains("oops"), "{out:?}");
    let tail = p.output_tail(&still, 8).unwrap();
    assert!(tail.len() <= 8, "{tail:?}");
    p.stop("f", &st.unit_id, Duration::from_secs(1)).unwrap();
    assert!(find(&p, "f", &st.unit_id).is_none());
}
