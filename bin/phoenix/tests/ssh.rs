//! The ssh provider with the real `phoenix` binary on real sshd test hosts in network
//! namespaces (`phoenix_provider_ssh::testing`): `phoenix provider-remote` is what runs there,
//! installed by the provider; and `phoenix apply` of a fleet of `python3 -m http.server`
//! services over three ssh hosts, with one host's link cut (before an apply, and in the middle
//! of one) and healed, then destroyed. Skipped
//! with a printed reason unless root with `ip` and `sshd`, failing instead when
//! `PHOENIX_REQUIRE_SSH=1` (CI sets it).
//!
//! The debug binary is large (hundreds of megabytes): each test host receives it once, which
//! takes a few seconds.

use phoenix_provider_api::conformance::wait_for;
use phoenix_provider_api::{Health, HealthCheck, Provider, UnitSpec, UnitState};
use phoenix_provider_ssh::testing::{TestHost, skip};
use phoenix_provider_ssh::{SSH_COMMAND_ENV, SshProvider};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_phoenix");

fn host() -> TestHost {
    TestHost::start().unwrap_or_else(|e| panic!("test host: {e}"))
}

#[test]
fn provider_remote_is_a_hidden_subcommand_that_answers_help() {
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let help = run(&["provider-remote", "--help"]);
    assert!(help.status.success(), "{help:?}");
    assert!(String::from_utf8_lossy(&help.stdout).contains("--state-dir"));
    let bad = run(&["provider-remote"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let top = run(&["--help"]);
    assert!(
        !String::from_utf8_lossy(&top.stdout).contains("provider-remote"),
        "listed in the help"
    );
}

/// The provider itself, with the real binary: installed on `h`, it serves start, a probe on
/// the host, logs copied home and stop, and leaves nothing there.
fn the_phoenix_binary_is_installed_and_serves_the_ssh_provider(h: &TestHost) {
    let cache = tempfile::tempdir().unwrap();
    let p = SshProvider::new(h.config(cache.path(), Path::new(BIN))).unwrap();
    let t = Instant::now();
    p.prepare().unwrap();
    eprintln!("installed the phoenix binary in {:?}", t.elapsed());
    let health = Health {
        checks: vec![HealthCheck::Http {
            url: "http://127.0.0.1:${port}/".into(),
            expect_status: 200,
        }],
        timeout_ms: 20_000,
        interval_ms: 100,
    };
    let web = UnitSpec::new("e2e", "web", "web-0", 1)
        .with_command([
            "python3",
            "-m",
            "http.server",
            "${port}",
            "--bind",
            "127.0.0.1",
            "--directory",
            "${data_dir}",
        ])
        .with_ports(["port"])
        .with_health(health.clone());
    let st = p.start(&web).unwrap();
    assert_eq!(st.state, UnitState::Running);
    assert!(h.in_namespace(st.pid.unwrap()));
    // The check runs on the host: its 127.0.0.1 is the unit's, not this machine's.
    let up = phoenix_provider_api::probe::wait_until_healthy(&p, &st, &health);
    assert!(up.healthy, "{}", up.detail);
    let logs = p.log_paths("e2e", "web").unwrap();
    assert_eq!(logs.len(), 1);
    assert!(logs[0].starts_with(cache.path()), "{logs:?}");
    wait_for("the request in the log", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(p.log_paths("e2e", "web").ok()?.first()?).ok()?;
        text.contains("GET / HTTP").then_some(())
    });
    p.stop("e2e", &st.unit_id, Duration::from_secs(2)).unwrap();
    wait_for("nothing left on the host", Duration::from_secs(5), || {
        h.processes().is_empty().then_some(())
    });
}

/// A fleet spec over test hosts, applied with the CLI; destroyed when dropped.
struct SshFleet {
    dir: tempfile::TempDir,
    name: String,
    logins: Vec<String>,
}

impl SshFleet {
    fn new(hosts: &[TestHost]) -> Self {
        let dir = tempfile::Builder::new().prefix("pxs").tempdir().unwrap();
        // ssh as the operator would configure it: every host's key known, every test key
        // offered (each host accepts its own).
        let mut config = String::from(
            "Host *\n  IdentitiesOnly yes\n  GlobalKnownHostsFile /dev/null\n  \
             Ciphers aes128-gcm@openssh.com,chacha20-poly1305@openssh.com\n",
        );
        let mut known = String::new();
        for h in hosts {
            config.push_str(&format!("  IdentityFile {}\n", h.identity().display()));
            known.push_str(&std::fs::read_to_string(h.known_hosts()).unwrap());
        }
        let known_path = dir.path().join("known_hosts");
        std::fs::write(&known_path, known).unwrap();
        config.push_str(&format!("  UserKnownHostsFile {}\n", known_path.display()));
        std::fs::write(dir.path().join("ssh_config"), config).unwrap();
        let name = format!("sshf-{}", std::process::id());
        let f = SshFleet {
            dir,
            name,
            logins: hosts.iter().map(TestHost::login).collect(),
        };
        f.write(false);
        f
    }

    /// Writes fleet.yaml: one `python3 -m http.server` per host; with `slow`, a revision
    /// whose instances take two seconds to come up.
    fn write(&self, slow: bool) {
        let logins: Vec<String> = self.logins.iter().map(|l| format!("\"{l}\"")).collect();
        let command = if slow {
            "[sh, -c, 'sleep 2; exec python3 -m http.server \"$0\" --bind 127.0.0.1 --directory \"$1\"', '${port}', '${data_dir}']"
        } else {
            "[python3, -m, http.server, '${port}', --bind, 127.0.0.1, --directory, '${data_dir}']"
        };
        let spec = format!(
            "phoenix: 1\nname: {}\nsites:\n  - name: edge\n    tier: edge\n    provider: ssh\n    ssh:\n      hosts: [{}]\n    capacity: {{ cpu: 8, memory: 8Gi, storage: 10G }}\nservices:\n  - name: web\n    replicas: {}\n    placement: {{ spread: host }}\n    command: {command}\n    ports: [port]\n    health: {{ http: 'http://127.0.0.1:${{port}}/', timeout: 8s, interval: 100ms }}\n    stop_grace: 2s\njobs:\n  - name: stamp\n    depends_on: [web]\n    command: [sh, -c, 'echo stamped by ${{instance}} on ${{site}} > \"${{data_dir}}/stamp\"; cat \"${{data_dir}}/stamp\"']\n    timeout: 20s\n",
            self.name,
            logins.join(", "),
            self.logins.len()
        );
        std::fs::write(self.dir.path().join("fleet.yaml"), spec).unwrap();
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let ssh = format!("ssh -F {}", self.dir.path().join("ssh_config").display());
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env(SSH_COMMAND_ENV, ssh)
            .env_remove("PHOENIX_STATE_URL")
            .env("PHOENIX_OPERATOR_KEY", self.dir.path().join("operator.key"));
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "phoenix {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn status(&self) -> Value {
        let out = self.run(&["status", "fleet.yaml", "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "status: {e}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

impl Drop for SshFleet {
    fn drop(&mut self) {
        let _ = self.run(&["destroy", "fleet.yaml", "--yes"]);
    }
}

fn states(status: &Value) -> Vec<(String, String, bool)> {
    let mut v: Vec<_> = status["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("no instances: {status}"))
        .iter()
        .map(|i| {
            (
                i["instance"].as_str().unwrap_or_default().to_owned(),
                i["state"].as_str().unwrap_or_default().to_owned(),
                i["healthy"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn the_phoenix_binary_serves_the_provider_and_apply_spans_three_ssh_hosts_through_a_partition() {
    if skip() {
        return;
    }
    let t0 = Instant::now();
    let hosts = [host(), host(), host()];
    // One test, so that the big debug binary goes to each host once: the apply below finds
    // it installed on the first host.
    the_phoenix_binary_is_installed_and_serves_the_ssh_provider(&hosts[0]);
    eprintln!("provider checks done at {:?}", t0.elapsed());
    let f = SshFleet::new(&hosts);
    let t = Instant::now();
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    eprintln!(
        "first apply (installing phoenix on 3 hosts) took {:?}",
        t.elapsed()
    );
    let running: Vec<_> = hosts.iter().map(|h| h.unit_processes(None)).collect();
    assert!(
        running.iter().all(|p| p.len() == 1),
        "one instance per host: {running:?}"
    );
    let st = f.status();
    assert!(
        states(&st)
            .iter()
            .all(|(_, s, healthy)| s == "running" && *healthy),
        "{st}"
    );

    eprintln!("applied at {:?}", t0.elapsed());

    // The job ran once on an SSH host after `web`, and its outcome and output came back.
    let jobs = st["jobs"].as_array().expect("a jobs array");
    assert_eq!(jobs.len(), 1, "{st}");
    assert_eq!(jobs[0]["state"], "succeeded", "{st}");
    let job_logs = f.ok(&["logs", "stamp"]);
    let text = String::from_utf8_lossy(&job_logs.stdout);
    assert!(text.contains("stamped by stamp-0 on edge"), "{text}");

    // `phoenix logs` brings each host's log files here and reads them: every host's instance
    // answered its health probes.
    let logs = f.ok(&["logs", "web"]);
    let text = String::from_utf8_lossy(&logs.stdout);
    for i in 0..hosts.len() {
        assert!(text.contains(&format!("web-{i}")), "web-{i}'s log: {text}");
    }
    assert!(text.contains("\"GET / HTTP/1.1\" 200"), "{text}");

    // A host's link is cut: status names it and nothing is lost; apply refuses, naming it.
    hosts[1].cut();
    let st = f.status();
    let unknown: Vec<_> = states(&st)
        .into_iter()
        .filter(|(_, s, _)| s == "unknown")
        .collect();
    assert_eq!(unknown.len(), 1, "{st}");
    let out = f.run(&["apply", "fleet.yaml", "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("edge") && err.contains(&hosts[1].login()),
        "the unreachable site and host are not named: {err}"
    );
    assert_eq!(
        hosts[1].unit_processes(None),
        running[1],
        "the cut host's unit was touched"
    );

    // Healed: the next apply converges to exactly the declared processes.
    hosts[1].heal();
    wait_for("the host back", Duration::from_secs(30), || {
        f.run(&["apply", "fleet.yaml", "--yes"])
            .status
            .success()
            .then_some(())
    });
    let after: Vec<_> = hosts.iter().map(|h| h.unit_processes(None)).collect();
    assert_eq!(
        after, running,
        "processes replaced or duplicated after healing"
    );
    let st = f.status();
    assert!(
        states(&st)
            .iter()
            .all(|(_, s, healthy)| s == "running" && *healthy),
        "{st}"
    );

    eprintln!("refused and converged at {:?}", t0.elapsed());

    // The link is cut in the middle of an apply (a new revision): the apply fails naming the
    // host; healed, the next apply converges to one process per host, at the new revision.
    f.write(true);
    let apply = f
        .cmd(&["apply", "fleet.yaml", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        "a new unit on the second host",
        Duration::from_secs(60),
        || (hosts[1].unit_processes(None).len() > 1).then_some(()),
    );
    hosts[1].cut();
    let t = Instant::now();
    let out = apply.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("the apply cut off took {:?} more:\n{err}", t.elapsed());
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&hosts[1].login()),
        "the host is not named: {err}"
    );
    hosts[1].heal();
    wait_for("the host back", Duration::from_secs(30), || {
        f.run(&["apply", "fleet.yaml", "--yes"])
            .status
            .success()
            .then_some(())
    });
    let st = f.status();
    assert_eq!(st["in_sync"], true, "{st}");
    let revisions: Vec<u64> = st["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["revision"].as_u64().unwrap_or(0))
        .collect();
    for h in &hosts {
        let units = h.unit_processes(None);
        assert_eq!(units.len(), 1, "{}: {:?}", h.login(), h.processes());
        let env = std::fs::read(format!("/proc/{}/environ", units[0])).unwrap();
        let unit = env
            .split(|b| *b == 0)
            .find_map(|v| v.strip_prefix(b"PHOENIX_UNIT="))
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .unwrap();
        assert!(
            revisions.iter().any(|r| unit.ends_with(&format!("@r{r}"))),
            "{unit} is not of the applied revisions {revisions:?}"
        );
    }
    assert!(revisions.iter().all(|r| *r == revisions[0]), "{st}");

    eprintln!("healed and converged at {:?}", t0.elapsed());

    // Destroy leaves no process of any host's login user.
    f.ok(&["destroy", "fleet.yaml", "--yes"]);
    for h in &hosts {
        wait_for(
            &format!("no process of {} left", h.user()),
            Duration::from_secs(10),
            || (h.processes().is_empty() && h.sshd_sessions().is_empty()).then_some(()),
        );
    }
}
