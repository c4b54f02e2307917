//! The ssh provider against real sshd test hosts ([`phoenix_provider_ssh::testing`]): what the
//! conformance suite does not cover. Installing the binary once, the agent on the host and its
//! idle exit, refusing an unknown host key, a partition in the middle of a call, reading
//! commands that start no agent, logs copied home, and two hosts behind one router. Skipped
//! with a printed reason unless root with `ip` and `sshd` (failing instead when
//! `PHOENIX_REQUIRE_SSH=1`).

use phoenix_provider_api::conformance::{shell, sleeper, wait_for, wait_for_shell_probe};
use phoenix_provider_api::route::Router;
use phoenix_provider_api::{Provider, ProviderError, UnitState};
use phoenix_provider_ssh::testing::{TestHost, skip};
use phoenix_provider_ssh::{SshConfig, SshError, SshProvider, Timeouts};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_phoenix-ssh-remote");

fn host() -> TestHost {
    TestHost::start().unwrap_or_else(|e| panic!("test host: {e}"))
}

fn provider(config: SshConfig) -> SshProvider {
    SshProvider::new(config).expect("provider")
}

fn remote_binary(h: &TestHost) -> std::path::PathBuf {
    h.home().join(".phoenix/bin/phoenix")
}

fn modified(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// Stops every unit of `fleet` when dropped, so a failing test leaves none running.
struct Stopper<'a>(&'a dyn Provider, &'a str);

impl Drop for Stopper<'_> {
    fn drop(&mut self) {
        if let Ok(units) = self.0.list(self.1) {
            for u in units {
                let _ = self.0.stop(self.1, &u.unit_id, Duration::ZERO);
            }
        }
    }
}

#[test]
fn installs_once_runs_the_agent_on_the_host_and_it_exits_with_its_last_unit() {
    if skip() {
        return;
    }
    let h = host();
    let cache = tempfile::tempdir().unwrap();
    let config = h
        .config(cache.path(), Path::new(BIN))
        .agent_idle_exit(Duration::from_secs(1));
    let p = provider(config.clone());
    assert_eq!(p.endpoint(), format!("ssh://{}:22", h.login()));

    // Reading a host where phoenix never ran installs nothing and starts nothing.
    assert!(p.list("inst").unwrap().is_empty());
    assert!(p.log_paths("inst", "").unwrap().is_empty());
    p.stop("inst", "app-0@r1", Duration::ZERO).unwrap();
    assert!(!remote_binary(&h).exists(), "a read installed the binary");
    assert!(h.processes().is_empty(), "{:?}", h.processes());

    let _stop = Stopper(&p, "inst");
    let st = p.start(&sleeper("inst", "app-0", 1)).unwrap();
    assert_eq!(
        std::fs::read(remote_binary(&h)).unwrap(),
        std::fs::read(BIN).unwrap(),
        "the installed binary is not this one"
    );
    let pid = st.pid.expect("a pid");
    assert_eq!(h.unit_processes(Some("app-0@r1")), [pid]);
    assert!(h.in_namespace(pid), "the unit does not run on the host");
    let agents = h.agent_processes();
    assert_eq!(agents.len(), 1, "{:?}", h.processes());
    assert!(h.in_namespace(agents[0]));
    assert_eq!(
        p.remote_agent().unwrap().map(|a| (a.pid, a.units)),
        Some((agents[0], 1))
    );
    assert!(st.data_dir.starts_with(h.home().join(".phoenix")), "{st:?}");

    // A second client finds the same binary (no upload) and the same unit.
    let installed_at = modified(&remote_binary(&h));
    let p2 = provider(config.clone());
    p2.prepare().unwrap();
    assert_eq!(modified(&remote_binary(&h)), installed_at, "uploaded again");
    assert_eq!(p2.list("inst").unwrap()[0].pid, Some(pid));

    // A copy that differs is replaced; the running agent keeps its own.
    let mut other = std::fs::read(remote_binary(&h)).unwrap();
    other.extend_from_slice(b"changed");
    // Renamed over it: the running agent's executable cannot be written in place.
    let tampered = remote_binary(&h).with_extension("tampered");
    std::fs::write(&tampered, other).unwrap();
    std::fs::rename(&tampered, remote_binary(&h)).unwrap();
    provider(config.clone()).prepare().unwrap();
    assert_eq!(
        std::fs::read(remote_binary(&h)).unwrap(),
        std::fs::read(BIN).unwrap()
    );
    assert_eq!(h.agent_processes(), agents);

    // Its idle exit is the one configured (for an agent that is started with nothing to run).
    let (_, cmdline) = h
        .processes()
        .into_iter()
        .find(|(p, _)| *p == agents[0])
        .unwrap();
    assert!(cmdline.ends_with("--idle-exit 1000ms"), "{cmdline}");

    // Once its last unit is stopped, the agent exits: nothing of Phoenix's is left there.
    p.stop("inst", &st.unit_id, Duration::from_secs(2)).unwrap();
    assert!(h.unit_processes(None).is_empty());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !h.agent_processes().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the agent did not exit with its last unit: {:?}",
            h.processes()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(h.processes().is_empty(), "{:?}", h.processes());
}

#[test]
fn an_unknown_host_key_is_refused_and_never_accepted() {
    if skip() {
        return;
    }
    let h = host();
    let cache = tempfile::tempdir().unwrap();
    let empty = cache.path().join("known_hosts");
    std::fs::write(&empty, "").unwrap();
    let config = SshConfig::new(h.target(), cache.path())
        .ssh_options(h.ssh_options(&empty))
        .binary(Path::new(BIN));
    let p = provider(config);
    let err = p.start(&sleeper("key", "app-0", 1)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ProviderError::Unavailable { .. }), "{text}");
    assert!(text.contains(&h.login()), "{text}");
    assert!(text.contains("Host key verification failed"), "{text}");
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "", "key accepted");
    assert!(!remote_binary(&h).exists());
}

#[test]
fn a_partition_fails_calls_in_time_naming_the_host_and_heals_without_duplicates() {
    if skip() {
        return;
    }
    let h = host();
    let cache = tempfile::tempdir().unwrap();
    let config = h.config(cache.path(), Path::new(BIN));
    let p = provider(config.clone());
    let _stop = Stopper(&p, "part");
    let keep = p.start(&sleeper("part", "keep-0", 1)).unwrap();
    let script = "trap '' TERM; echo ready > \"${data_dir}/ready\"; sleep 120 & wait";
    let stubborn = p.start(&shell("part", "stubborn-0", 1, script)).unwrap();
    wait_for_shell_probe(&p, &stubborn, "test -f \"${data_dir}/ready\"");
    // A client whose only bound is its call timeout (keep-alives far apart).
    let slow_alive = provider(config.clone().timeouts(Timeouts {
        connect: Duration::from_secs(3),
        call: Duration::from_secs(3),
        alive_interval: Duration::from_secs(60),
        alive_count: 3,
    }));
    slow_alive.list("part").unwrap();

    // The link goes down while a stop (grace 4 s) is under way.
    let (stop_result, took) = std::thread::scope(|s| {
        let stopping = s.spawn(|| {
            let t = Instant::now();
            let r = p.stop("part", &stubborn.unit_id, Duration::from_secs(4));
            (r, t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(500));
        h.cut();
        stopping.join().unwrap()
    });
    let err = stop_result.expect_err("a stop across a cut link succeeded");
    assert!(matches!(err, ProviderError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains(&h.login()), "{err}");
    assert!(took < Duration::from_secs(10), "the stop hung for {took:?}");

    let bounded = |what: &str, provider: &SshProvider| {
        let t = Instant::now();
        let err = provider.list("part").expect_err(what);
        assert!(err.to_string().contains(&h.login()), "{what}: {err}");
        assert!(err.is_retryable(), "{what}: {err}");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{what}: {:?}",
            t.elapsed()
        );
        err
    };
    bounded("list on the broken connection", &p);
    bounded("list of a new client", &provider(config.clone()));
    let err = bounded("list with keep-alives far apart", &slow_alive);
    assert!(err.to_string().contains("no answer within 3"), "{err}");

    h.heal();
    let units = wait_for("the host back", Duration::from_secs(20), || {
        p.list("part").ok()
    });
    // The stop went on on the host; asked again, it is done.
    p.stop("part", &stubborn.unit_id, Duration::from_secs(4))
        .unwrap();
    let units_after = p.list("part").unwrap();
    assert_eq!(
        units_after
            .iter()
            .map(|u| (u.unit_id.as_str(), u.pid))
            .collect::<Vec<_>>(),
        [("keep-0@r1", keep.pid)],
        "before the second stop: {units:?}"
    );
    assert!(h.unit_processes(Some(&stubborn.unit_id)).is_empty());
    let again = p.start(&sleeper("part", "keep-0", 1)).unwrap();
    assert_eq!(again.pid, keep.pid, "a second process for keep-0");
    assert_eq!(h.unit_processes(None), [keep.pid.unwrap()]);
    assert_eq!(h.agent_processes().len(), 1, "{:?}", h.processes());
}

#[test]
fn reading_commands_start_no_agent() {
    if skip() {
        return;
    }
    let h = host();
    let cache = tempfile::tempdir().unwrap();
    let config = h.config(cache.path(), Path::new(BIN));
    let p = provider(config.clone());
    let _stop = Stopper(&p, "ro");
    let st = p.start(&sleeper("ro", "app-0", 1)).unwrap();
    let agent = h.agent_processes();
    assert_eq!(agent.len(), 1);
    // The agent dies (its units keep running); a reading client reports them as recorded.
    for pid in agent {
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    wait_for("the agent gone", Duration::from_secs(5), || {
        h.agent_processes().is_empty().then_some(())
    });
    let ro = provider(config.clone().read_only(true));
    let listed = ro.list("ro").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].state, listed[0].pid),
        (UnitState::Running, st.pid)
    );
    assert!(h.agent_processes().is_empty(), "a read started an agent");
    // A writing client starts one, which adopts the unit.
    assert_eq!(p.list("ro").unwrap()[0].pid, st.pid);
    assert_eq!(h.agent_processes().len(), 1);
}

#[test]
fn logs_are_copied_home_as_they_grow() {
    if skip() {
        return;
    }
    let h = host();
    let cache = tempfile::tempdir().unwrap();
    let p = provider(h.config(cache.path(), Path::new(BIN)));
    let _stop = Stopper(&p, "logs");
    let script = "i=0; while [ $i -lt 400 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.01; done; exec sleep 120";
    let st = p.start(&shell("logs", "talk-0", 1, script)).unwrap();
    assert_eq!(
        st.logs,
        [p.cache_dir().join("logs/logs/talk-0@r1.log")],
        "status log paths are the local copies"
    );
    let read = || {
        let paths = p.log_paths("logs", "talk").unwrap();
        assert_eq!(paths, st.logs);
        std::fs::read_to_string(&paths[0]).unwrap()
    };
    let output = |log: &str| -> String {
        // Without the agent's own line about starting the unit.
        log.lines()
            .filter(|l| !l.starts_with("--- phoenix agent"))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let first = wait_for("some lines", Duration::from_secs(10), || {
        let t = read();
        t.contains("line 1\n").then_some(t)
    });
    let full = wait_for("every line", Duration::from_secs(20), || {
        let t = read();
        t.contains("line 399\n").then_some(t)
    });
    assert!(full.starts_with(&first), "the copy is not the file grown");
    let want: String = (0..400).map(|i| format!("line {i}\n")).collect();
    assert_eq!(output(&full), want);
    assert!(p.log_paths("logs", "other").unwrap().is_empty());
}

#[test]
fn two_hosts_behind_one_router_each_with_its_own_home() {
    if skip() {
        return;
    }
    let (a, b) = (host(), host());
    let cache = tempfile::tempdir().unwrap();
    let pa = Arc::new(provider(a.config(cache.path(), Path::new(BIN))));
    let pb = Arc::new(provider(b.config(cache.path(), Path::new(BIN))));
    assert_ne!(pa.endpoint(), pb.endpoint());
    let mut router = Router::new();
    router.add("edge", 0, pa.clone());
    router.add("edge", 1, pb.clone());
    let _sa = Stopper(&*pa, "two");
    let _sb = Stopper(&*pb, "two");
    let mut on_a = sleeper("two", "app-0", 1);
    on_a.site = "edge".into();
    let mut on_b = sleeper("two", "app-1", 1);
    (on_b.site, on_b.host) = ("edge".into(), 1);
    let sa = router.start(&on_a).unwrap();
    let sb = router.start(&on_b).unwrap();
    assert!(sa.data_dir.starts_with(a.home()) && sb.data_dir.starts_with(b.home()));
    assert_eq!(a.unit_processes(None), [sa.pid.unwrap()]);
    assert_eq!(b.unit_processes(None), [sb.pid.unwrap()]);
    assert_eq!(router.list("two").unwrap().len(), 2);

    b.cut();
    let err = router.list("two").unwrap_err().to_string();
    assert!(err.contains(&pb.endpoint()), "{err}");
    let tolerant = {
        let mut r = Router::new().tolerate_unreachable(true);
        r.add("edge", 0, pa.clone());
        r.add("edge", 1, pb.clone());
        r
    };
    let seen = tolerant.list("two").unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(tolerant.unreachable()[0].host, 1);
    b.heal();
}

#[test]
fn a_host_that_is_down_is_named() {
    if skip() {
        return;
    }
    let h = host();
    let cache = tempfile::tempdir().unwrap();
    h.cut();
    let p = provider(h.config(cache.path(), Path::new(BIN)));
    let t = Instant::now();
    let err = p.prepare().unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("ssh provider unavailable: {}: ", h.login())),
        "{text}"
    );
    // The error's own type says so too.
    let e = SshError::Connect {
        login: h.login(),
        reason: "x".into(),
    };
    assert!(e.is_retryable());
    h.heal();
    // The neighbour entry of the cut address stays failed for a moment.
    wait_for("the host back", Duration::from_secs(20), || {
        p.prepare().ok()
    });
}

#[test]
fn a_host_of_another_architecture_is_refused_before_anything_is_installed() {
    if skip() {
        return;
    }
    let h = host();
    h.shadow_command("uname", "echo Linux riscv64");
    let cache = tempfile::tempdir().unwrap();
    let p = provider(h.config(cache.path(), Path::new(BIN)));
    let err = p.start(&sleeper("arch", "app-0", 1)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ProviderError::Unavailable { .. }), "{text}");
    assert!(
        text.contains(&h.login()) && text.contains("Linux riscv64"),
        "{text}"
    );
    assert!(text.contains(std::env::consts::ARCH), "{text}");
    assert!(
        !remote_binary(&h).exists(),
        "installed on the wrong architecture"
    );
    assert!(h.processes().is_empty(), "{:?}", h.processes());
}
