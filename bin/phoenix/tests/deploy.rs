//! End-to-end tests of `phoenix apply/status/rollback/destroy/history/up` against real
//! `python3 -m http.server` processes under the local provider, each test in its own state dir.
//! Every test destroys what it started (also when it fails, through [`Fleet`]'s `Drop`).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_phoenix");

/// A fleet spec in a temp dir with its own state dir; destroyed on drop.
struct Fleet {
    dir: tempfile::TempDir,
    name: String,
    state_url: Option<String>,
}

fn http_service(name: &str, replicas: u32, extra: &str) -> String {
    format!(
        "  - name: {name}\n    replicas: {replicas}\n    command: [python3, -m, http.server, '${{port}}', --bind, 127.0.0.1, --directory, '${{data_dir}}']\n    ports: [port]\n    health: {{ http: 'http://127.0.0.1:${{port}}/', timeout: 15s, interval: 50ms }}\n    stop_grace: 2s\n{extra}"
    )
}

impl Fleet {
    fn new(name: &str, services: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("px").tempdir().unwrap();
        let f = Fleet {
            dir,
            name: name.into(),
            state_url: None,
        };
        f.write("fleet.yaml", services);
        f
    }

    fn write(&self, file: &str, services: &str) -> PathBuf {
        let yaml = format!(
            "phoenix: 1\nname: {}\nsites:\n  - name: local\n    tier: core\n    capacity: {{ cpu: 64, memory: 64Gi, storage: 100G }}\nservices:\n{services}",
            self.name
        );
        let p = self.dir.path().join(file);
        std::fs::write(&p, yaml).unwrap();
        p
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .arg("--state-dir")
            .arg(self.state())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env_remove("PHOENIX_STATE_URL")
            // Each test fleet signs with its own operator key, never the user's own.
            .env("PHOENIX_OPERATOR_KEY", self.dir.path().join("operator.key"));
        if let Some(url) = &self.state_url {
            c.arg("--state-url").arg(url);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "phoenix {args:?} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn status(&self, file: &str) -> Value {
        let out = self.ok(&["status", file, "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `(instance, state, healthy, revision, pid)` of every desired instance.
    fn instances(&self, file: &str) -> Vec<(String, String, bool, u64, u32)> {
        self.status(file)["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["instance"].as_str().unwrap().to_string(),
                    i["state"].as_str().unwrap().to_string(),
                    i["healthy"].as_bool().unwrap(),
                    i["revision"].as_u64().unwrap_or(0),
                    i["pid"].as_u64().unwrap_or(0) as u32,
                )
            })
            .collect()
    }

    fn all_up(&self, file: &str) -> bool {
        let st = self.status(file);
        st["extra"].as_array().unwrap().is_empty()
            && st["instances"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["state"] == "running" && i["healthy"] == true)
    }

    /// Pids of every process that carries this state dir's agent tag and runs a unit: what
    /// really runs, whatever any table says.
    fn unit_processes(&self) -> Vec<(u32, String)> {
        let tag = std::path::absolute(self.state()).unwrap();
        let mut found = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
            let has = |k: &str, v: Option<&str>| {
                vars.iter().any(|x| match v {
                    Some(v) => *x == format!("{k}={v}").as_bytes(),
                    None => x.starts_with(format!("{k}=").as_bytes()),
                })
            };
            if !has("PHOENIX_AGENT_STATE_DIR", Some(&tag.display().to_string())) {
                continue;
            }
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            {
                continue;
            }
            let unit = vars
                .iter()
                .find_map(|x| x.strip_prefix(b"PHOENIX_UNIT="))
                .map(|u| String::from_utf8_lossy(u).into_owned());
            if let Some(unit) = unit {
                found.push((pid, unit));
            }
        }
        found.sort();
        found
    }

    fn agent_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.state().join("agent/agent.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.run(&["destroy", "fleet.yaml", "--yes"]);
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn two_tier(extra_web: &str) -> String {
    format!(
        "{}{}",
        http_service("db", 1, ""),
        http_service("web", 2, &format!("    depends_on: [db]\n{extra_web}"))
    )
}

#[test]
fn apply_then_status_then_kill_one_then_reapply_repairs() {
    let f = Fleet::new("repair", &two_tier("    restart: never\n"));
    let out = f.ok(&["apply", "fleet.yaml", "--yes"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("revision r1 applied"));
    assert!(f.all_up("fleet.yaml"), "{}", f.status("fleet.yaml"));
    let inst = f.instances("fleet.yaml");
    assert_eq!(inst.len(), 3);
    assert_eq!(f.unit_processes().len(), 3);

    // Kill web-1's process: status shows it, apply repairs it.
    let web1 = inst.iter().find(|i| i.0 == "web-1").unwrap().4;
    Command::new("kill")
        .args(["-9", &web1.to_string()])
        .status()
        .unwrap();
    wait_for("status to show web-1 down", Duration::from_secs(10), || {
        let i = f.instances("fleet.yaml");
        let w = i.iter().find(|i| i.0 == "web-1").unwrap();
        w.1 != "running" && !w.2
    });
    let table = String::from_utf8_lossy(&f.ok(&["status", "fleet.yaml"]).stdout).into_owned();
    assert!(table.contains("drift found"), "{table}");
    let out = f.ok(&["apply", "fleet.yaml", "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("~ web-1"), "{err}");
    assert!(f.all_up("fleet.yaml"), "{}", f.status("fleet.yaml"));
    assert_eq!(f.unit_processes().len(), 3);
}

#[test]
fn a_revision_that_never_gets_healthy_is_rolled_back_and_the_previous_keeps_running() {
    let f = Fleet::new("rollback", &two_tier(""));
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    let before = f.instances("fleet.yaml");
    // r2: web's health check asks for a page that does not exist (404), for 5 s.
    let bad = format!(
        "{}{}",
        http_service("db", 1, ""),
        http_service("web", 2, "    depends_on: [db]\n    env: { V: '2' }\n")
            .replace("timeout: 15s", "timeout: 5s")
            .replace("/'", "/nope'")
    );
    f.write("bad.yaml", &bad);
    let started = Instant::now();
    let out = f.run(&["apply", "bad.yaml", "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("instance web-0"), "{err}");
    // The probe's detail: a 404 (or, on a loaded machine, a refused connection if Python took
    // more than the timeout to start).
    assert!(err.contains("/nope: "), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    assert!(err.contains("restarted web-0@r1 (healthy)"), "{err}");
    assert!(err.contains("runs revision r1 again"), "{err}");
    // Restored within the health timeout + 5 s.
    assert!(started.elapsed() < Duration::from_millis(5000 + 5000 + 5000));
    assert!(f.all_up("fleet.yaml"), "{}", f.status("fleet.yaml"));
    let after = f.instances("fleet.yaml");
    assert!(after.iter().all(|i| i.3 == 1), "{after:?}");
    // db was untouched; web-1 never started at r2.
    assert_eq!(before[0].4, after[0].4);
    let hist: Value =
        serde_json::from_slice(&f.ok(&["history", "fleet.yaml", "-o", "json"]).stdout).unwrap();
    assert_eq!(hist["revisions"][1]["outcome"], "rolled-back");
    assert_eq!(f.unit_processes().len(), 3);
}

#[test]
fn without_yes_and_without_a_terminal_apply_rollback_and_destroy_refuse_with_exit_2() {
    let f = Fleet::new("refuse", &http_service("web", 1, ""));
    let out = f.run(&["apply", "fleet.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("+ web-0"), "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert!(f.unit_processes().is_empty());
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    assert_eq!(f.run(&["destroy", "fleet.yaml"]).status.code(), Some(2));
    assert_eq!(f.unit_processes().len(), 1);
}

#[test]
fn destroy_leaves_no_process_behind() {
    let f = Fleet::new("destroy", &two_tier(""));
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    let pids: Vec<u32> = f.instances("fleet.yaml").iter().map(|i| i.4).collect();
    let agent = f.agent_pid().expect("agent pid");
    assert!(pids.iter().all(|p| alive(*p)) && alive(agent));
    f.ok(&["destroy", "fleet.yaml", "--yes"]);
    wait_for("processes to go", Duration::from_secs(10), || {
        !pids.iter().any(|p| alive(*p)) && !alive(agent)
    });
    assert!(f.unit_processes().is_empty());
    let st = f.status("fleet.yaml");
    assert!(
        st["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["state"] == "missing")
    );
}

#[test]
fn a_concurrent_apply_is_refused_and_names_the_holder() {
    // A service that takes a while to become healthy keeps the first apply busy.
    let slow = "  - name: slow\n    command: [sh, -c, 'sleep 2; exec python3 -m http.server ${port} --bind 127.0.0.1']\n    ports: [port]\n    health: { tcp: '127.0.0.1:${port}', timeout: 20s, interval: 50ms }\n    stop_grace: 1s\n";
    let f = Fleet::new("concurrent", slow);
    let mut first = f
        .cmd(&["apply", "fleet.yaml", "--yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        "the first apply to take the lock",
        Duration::from_secs(10),
        || {
            let h = f.run(&["history", "fleet.yaml", "-o", "json"]);
            serde_json::from_slice::<Value>(&h.stdout)
                .map(|v| !v["revisions"].as_array().unwrap().is_empty())
                .unwrap_or(false)
        },
    );
    let second = f.run(&["apply", "fleet.yaml", "--yes"]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("being changed by"), "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    assert!(first.wait().unwrap().success());
    assert!(f.all_up("fleet.yaml"));
}

#[test]
fn kill_9_of_apply_at_several_moments_then_apply_converges_to_exactly_the_declared_processes() {
    let heavy = std::env::var("PHOENIX_HEAVY_TESTS").is_ok_and(|v| v == "1");
    let delays: &[u64] = if heavy {
        &[0, 50, 150, 300, 500, 800, 1200, 1800]
    } else {
        &[100, 400, 900]
    };
    let f = Fleet::new("crash", &two_tier(""));
    for (round, delay) in delays.iter().enumerate() {
        // Alternate between two specs so that every round has replacements to interrupt.
        let file = if round % 2 == 0 { "a.yaml" } else { "b.yaml" };
        f.write(
            file,
            &two_tier(&format!("    env: {{ ROUND: '{round}' }}\n")),
        );
        let mut child = f
            .cmd(&["apply", file, "--yes"])
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(*delay));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let out = f.ok(&["apply", file, "--yes"]);
        let _ = out;
        assert!(
            f.all_up(file),
            "round {round} (kill after {delay} ms): {}",
            f.status(file)
        );
        let procs = f.unit_processes();
        assert_eq!(
            procs.len(),
            3,
            "round {round} (kill after {delay} ms): {procs:?}"
        );
        let mut instances: Vec<String> = procs
            .iter()
            .map(|(_, u)| u.split('@').next().unwrap().to_string())
            .collect();
        instances.sort();
        instances.dedup();
        assert_eq!(instances, ["db-0", "web-0", "web-1"], "{procs:?}");
    }
}

#[test]
fn history_lists_revisions_and_verify_detects_edited_and_removed_records() {
    let f = Fleet::new("audit", &http_service("web", 1, ""));
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    let out = f.ok(&["history", "fleet.yaml", "--verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("r1") && text.contains("applied"), "{text}");
    assert!(text.contains("gate web-0@r1"), "{text}");
    assert!(text.contains("verified"), "{text}");
    assert!(
        !f.state().join("audit.jsonl").exists(),
        "the chain lives in the state store"
    );

    // Edit a record in the state store.
    let db = rusqlite::Connection::open(f.state().join("state.db")).unwrap();
    let seq: i64 = db
        .query_row(
            "SELECT seq FROM audit_records WHERE fleet = 'audit' AND record_json LIKE '%unit.start web-0@r1%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let original: String = db
        .query_row(
            "SELECT record_json FROM audit_records WHERE fleet = 'audit' AND seq = ?1",
            [seq],
            |r| r.get(0),
        )
        .unwrap();
    let set = |json: &str| {
        db.execute(
            "UPDATE audit_records SET record_json = ?1 WHERE fleet = 'audit' AND seq = ?2",
            rusqlite::params![json, seq],
        )
        .unwrap();
    };
    set(&original.replacen("unit.start web-0@r1", "unit.start web-9@r1", 1));
    let out = f.run(&["history", "fleet.yaml", "--verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("record {seq}: edited")), "{text}");
    set(&original);
    f.ok(&["history", "fleet.yaml", "--verify"]);

    // Remove the last record: the anchor catches it.
    let last: i64 = db
        .query_row(
            "SELECT max(seq) FROM audit_records WHERE fleet = 'audit'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let kept: String = db
        .query_row(
            "SELECT record_json FROM audit_records WHERE fleet = 'audit' AND seq = ?1",
            [last],
            |r| r.get(0),
        )
        .unwrap();
    db.execute(
        "DELETE FROM audit_records WHERE fleet = 'audit' AND seq = ?1",
        [last],
    )
    .unwrap();
    let out = f.run(&["history", "fleet.yaml", "--verify", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verify"]["ok"], false, "{v}");
    assert!(
        v["verify"]["problems"]
            .to_string()
            .contains("removed from the end"),
        "{v}"
    );
    let _ = kept;
}

#[test]
fn json_output_is_one_event_per_line_and_rollback_to_returns_to_a_revision() {
    let f = Fleet::new("events", &http_service("web", 2, ""));
    let out = f.ok(&["apply", "fleet.yaml", "--yes", "-o", "json"]);
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"diff"));
    assert!(
        kinds.contains(&"wave_started") && kinds.contains(&"gate_passed"),
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"report"));
    assert_eq!(events.last().unwrap()["outcome"]["outcome"], "applied");

    f.write("v2.yaml", &http_service("web", 2, "    env: { V: '2' }\n"));
    f.ok(&["apply", "v2.yaml", "--yes"]);
    assert!(f.instances("v2.yaml").iter().all(|i| i.3 == 2));
    f.ok(&["rollback", "fleet.yaml", "--to", "r1", "--yes"]);
    // r3 runs r1's spec: in sync with fleet.yaml.
    assert!(f.all_up("fleet.yaml"), "{}", f.status("fleet.yaml"));
    assert!(f.instances("fleet.yaml").iter().all(|i| i.3 == 3));
}

#[test]
fn target_applies_part_of_a_fleet_with_its_dependencies() {
    let f = Fleet::new(
        "target",
        &format!("{}{}", two_tier(""), http_service("other", 1, "")),
    );
    f.ok(&["apply", "fleet.yaml", "--yes", "--target", "web"]);
    let inst = f.instances("fleet.yaml");
    let running: Vec<&str> = inst
        .iter()
        .filter(|i| i.1 == "running")
        .map(|i| i.0.as_str())
        .collect();
    assert_eq!(running, ["db-0", "web-0", "web-1"]);
}

#[test]
fn up_runs_the_bundled_demo_from_any_directory() {
    let dir = tempfile::Builder::new().prefix("pxup").tempdir().unwrap();
    let state = dir.path().join(".phoenix");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .env_remove("PHOENIX_STATE_DIR")
            .env_remove("PHOENIX_STATE_URL")
            .output()
            .unwrap()
    };
    struct Down<'a>(&'a dyn Fn(&[&str]) -> Output);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["destroy", ".phoenix/local-demo.yaml", "--yes"]);
        }
    }
    let _down = Down(&run);
    let out = run(&["up"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in [
        "db-0",
        "api-0",
        "api-1",
        "web-0",
        "http://127.0.0.1:",
        "phoenix status",
        "phoenix logs",
        "phoenix destroy",
    ] {
        assert!(text.contains(s), "`{s}` missing in:\n{text}");
    }
    assert!(state.join("local-demo.yaml").exists());
    let st = run(&["status", ".phoenix/local-demo.yaml", "-o", "json"]);
    let v: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["instances"].as_array().unwrap().len(), 4);
    assert!(
        v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["healthy"] == true)
    );
    let logs = run(&["logs", "api"]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("api-0@r1 |"));
    assert!(Path::new(&state).join("state.db").exists());
}

#[test]
fn postgres_state_store_end_to_end() {
    let Ok(url) = std::env::var("PHOENIX_TEST_POSTGRES_URL") else {
        eprintln!(
            "skipped: PHOENIX_TEST_POSTGRES_URL is not set (.ci/postgres.sh starts a server)"
        );
        return;
    };
    let name = format!("pg-{}", std::process::id());
    let mut f = Fleet::new(&name, &http_service("web", 2, ""));
    f.state_url = Some(url);
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    assert!(f.all_up("fleet.yaml"));
    let h: Value =
        serde_json::from_slice(&f.ok(&["history", "fleet.yaml", "-o", "json"]).stdout).unwrap();
    assert_eq!(h["revisions"][0]["outcome"], "applied");
    assert!(!f.state().join("state.db").exists());
    f.ok(&["destroy", "fleet.yaml", "--yes"]);
    assert!(f.unit_processes().is_empty());
}

#[test]
fn ctrl_c_stops_cleanly_with_exit_130_and_the_next_apply_converges() {
    let slow = "  - name: slow\n    replicas: 2\n    command: [sh, -c, 'sleep 1.5; exec python3 -m http.server ${port} --bind 127.0.0.1']\n    ports: [port]\n    health: { tcp: '127.0.0.1:${port}', timeout: 20s, interval: 50ms }\n    stop_grace: 1s\n    rollout: { strategy: canary, canary: 1, analysis: 200ms }\n";
    let f = Fleet::new("interrupt", slow);
    let first = f
        .cmd(&["apply", "fleet.yaml", "--yes"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the canary to start", Duration::from_secs(10), || {
        !f.unit_processes().is_empty()
    });
    Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    let out = first.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    // The second canary-phase instance was never launched, and the lock was released.
    let hist: Value =
        serde_json::from_slice(&f.ok(&["history", "fleet.yaml", "-o", "json"]).stdout).unwrap();
    assert_eq!(hist["revisions"][0]["outcome"], "failed");
    assert!(
        hist["revisions"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("cancelled")
    );
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    assert!(f.all_up("fleet.yaml"), "{}", f.status("fleet.yaml"));
    assert_eq!(f.unit_processes().len(), 2);
}

#[test]
fn backups_are_taken_before_a_change_and_restored_when_it_is_rolled_back() {
    // v1 seeds db/value once; v2 overwrites it, then never passes its gate.
    let service = |script: &str, health_path: &str, timeout: &str| {
        format!(
            "  - name: db\n    command: [sh, -c, '{script} exec python3 -m http.server ${{port}} --bind 127.0.0.1']\n    ports: [port]\n    health: {{ http: 'http://127.0.0.1:${{port}}/{health_path}', timeout: {timeout}, interval: 50ms }}\n    backup: ['${{data_dir}}/db']\n    stop_grace: 1s\n"
        )
    };
    let f = Fleet::new(
        "backup",
        &service(
            "test -f db/value || { mkdir -p db; echo V1 > db/value; };",
            "",
            "15s",
        ),
    );
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    let value = f.state().join("units/backup/db-0/data/db/value");
    assert_eq!(std::fs::read_to_string(&value).unwrap(), "V1\n");
    f.write(
        "v2.yaml",
        &service("mkdir -p db; echo V2 > db/value;", "nope", "3s"),
    );
    let out = f.run(&["apply", "v2.yaml", "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("restored backup pre-r2"), "{err}");
    assert_eq!(std::fs::read_to_string(&value).unwrap(), "V1\n");
    assert!(f.all_up("fleet.yaml"), "{}", f.status("fleet.yaml"));
}

// ---------------------------------------------------------------------------------------------
// The audit chain in the state store, signed (hardening issue, items 3 and 11)

fn sql_one(db: &rusqlite::Connection, sql: &str) -> String {
    db.query_row(sql, [], |r| r.get::<_, String>(0)).unwrap()
}

/// Regression (hardening issue, item 3): an audit record appended with a recomputed hash
/// passed `history --verify` ("verified: 22 records") although the anchor was at record 21.
#[test]
fn an_appended_audit_record_with_a_recomputed_hash_fails_verify_and_is_listed_unanchored() {
    let f = Fleet::new("forged", &http_service("web", 1, ""));
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    f.ok(&["destroy", "fleet.yaml", "--yes"]);
    let db = rusqlite::Connection::open(f.state().join("state.db")).unwrap();
    let (seq, hash): (u64, String) = db
        .query_row(
            "SELECT seq, hash FROM audit_records WHERE fleet = 'forged' ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
        )
        .unwrap();
    // The forger recomputes the hash so that the chain links; they have no allowed key.
    let mut entry = phoenix_audit::AuditEntry::new(
        jiff::Timestamp::now(),
        "mallory@host",
        "forged",
        "apply.start",
        phoenix_audit::AuditOutcome::Ok,
    );
    entry.revision = Some(99);
    let mut record =
        phoenix_audit::AuditRecord::unsigned(Some(&phoenix_audit::ChainHead { seq, hash }), entry);
    record.seal().unwrap();
    db.execute(
        "INSERT INTO audit_records (fleet, seq, prev_hash, hash, signer, record_json, stored_at_ms)
         VALUES ('forged', ?1, ?2, ?3, NULL, ?4, 0)",
        rusqlite::params![
            record.seq as i64,
            record.prev_hash,
            record.hash,
            record.to_json().unwrap().to_string()
        ],
    )
    .unwrap();
    let out = f.run(&["history", "fleet.yaml", "--verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("record {}: unsigned", seq + 1)),
        "{text}"
    );
    assert!(text.contains("unanchored"), "{text}");
    // Signed with a key of the forger's own: not allowed.
    let _ = sql_one;
}

/// An old state dir's audit.jsonl is imported into the state store by the next apply, its
/// records marked unsigned; until then `history --verify` says how to import it.
#[test]
fn an_old_audit_jsonl_is_imported_into_the_state_store() {
    let f = Fleet::new("legacy", &http_service("web", 1, ""));
    std::fs::create_dir_all(f.state()).unwrap();
    let log = phoenix_audit::LocalLog::open_in(&f.state()).unwrap();
    for step in ["apply.start", "apply.finish"] {
        use phoenix_audit::Recorder as _;
        log.record(phoenix_audit::AuditEntry::new(
            jiff::Timestamp::now(),
            "old@host",
            "legacy",
            step,
            phoenix_audit::AuditOutcome::Ok,
        ))
        .unwrap();
    }
    drop(log);
    let out = f.run(&["history", "fleet.yaml", "--verify"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("phoenix audit import"), "{err}");
    let out = f.ok(&["audit", "import"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("imported 2 record(s) of fleet legacy"),
        "{err}"
    );
    assert!(f.state().join("audit.jsonl.imported").exists());
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    let out = f.ok(&["history", "fleet.yaml", "--verify"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("verified"), "{text}");
    assert!(text.contains("records 1-2 are imported"), "{text}");
    f.ok(&["destroy", "fleet.yaml", "--yes"]);
}

/// Another operator's key signs a fleet's chain only once an allowed operator allows it.
#[test]
fn another_operators_key_is_refused_until_allowed() {
    let f = Fleet::new("keys", &http_service("web", 1, ""));
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    let bob_key = f.dir.path().join("bob.key");
    let bob = |args: &[&str]| {
        f.cmd(args)
            .env("PHOENIX_OPERATOR_KEY", &bob_key)
            .output()
            .unwrap()
    };
    let out = bob(&["destroy", "fleet.yaml", "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not allowed to sign"), "{err}");
    assert!(f.all_up("fleet.yaml"), "nothing changed");
    let shown = Command::new(BIN)
        .args(["audit", "show-key"])
        .env("PHOENIX_OPERATOR_KEY", &bob_key)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout).to_string();
    let public = shown
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .unwrap()
        .trim()
        .to_owned();
    f.ok(&[
        "audit",
        "allow-key",
        "fleet.yaml",
        "--public-key",
        &public,
        "--name",
        "bob",
    ]);
    let out = bob(&["destroy", "fleet.yaml", "--yes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    f.ok(&["history", "fleet.yaml", "--verify"]);
}

/// Regression (hardening issue, item 11): two operators sharing one PostgreSQL state store
/// with different state dirs deployed the fleet twice, each `status` said "in sync", and
/// `destroy` from one left the other's processes running; each kept its own audit log.
#[test]
fn two_operators_sharing_postgres_state_do_not_deploy_twice_and_share_one_history() {
    let Ok(url) = std::env::var("PHOENIX_TEST_POSTGRES_URL") else {
        eprintln!(
            "skipped: PHOENIX_TEST_POSTGRES_URL is not set (.ci/postgres.sh starts a server)"
        );
        return;
    };
    let name = format!("shared-{}", std::process::id());
    let mut a = Fleet::new(&name, &http_service("web", 3, ""));
    a.state_url = Some(url);
    a.ok(&["apply", "fleet.yaml", "--yes"]);
    let b_state = a.dir.path().join("b-state");
    let b = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(args)
            .arg("--state-dir")
            .arg(&b_state)
            .arg("--state-url")
            .arg(a.state_url.as_deref().unwrap())
            .current_dir(a.dir.path())
            .stdin(Stdio::null())
            .env("PHOENIX_OPERATOR_KEY", a.dir.path().join("operator.key"));
        c.output().unwrap()
    };
    let before = a.unit_processes().len();
    assert_eq!(before, 3);
    let out = b(&["apply", "fleet.yaml", "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot observe"), "{err}");
    assert!(
        err.contains(&a.state().canonicalize().unwrap().display().to_string()),
        "{err}"
    );
    assert_eq!(a.unit_processes().len(), 3, "no second copy");
    // B's status does not call A's units missing (or in sync): their state is unknown from B.
    let st: Value =
        serde_json::from_slice(&b(&["status", "fleet.yaml", "-o", "json"]).stdout).unwrap();
    let states: Vec<&str> = st["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["unknown", "unknown", "unknown"], "{st}");
    assert_eq!(st["in_sync"], false);
    let out = b(&["destroy", "fleet.yaml", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(a.unit_processes().len(), 3);
    // One history, verified from either state dir.
    let hb: Value =
        serde_json::from_slice(&b(&["history", "fleet.yaml", "--verify", "-o", "json"]).stdout)
            .unwrap();
    let ha: Value = serde_json::from_slice(
        &a.ok(&["history", "fleet.yaml", "--verify", "-o", "json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(ha["verify"], hb["verify"]);
    assert_eq!(ha["verify"]["ok"], true, "{ha}");
    a.ok(&["destroy", "fleet.yaml", "--yes"]);
    assert!(a.unit_processes().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Operator-facing defects of status, up, rollback, Ctrl-C and the agent (each test names the
// defect it pins).

/// Regression: Ctrl-C printed "finishing in-flight steps" but abandoned the health gate in
/// flight, leaving its instance started and never verified. The gate now runs to its end, the
/// message says so, and nothing after it starts.
#[test]
fn ctrl_c_during_a_health_gate_lets_the_gate_finish_and_starts_nothing_new() {
    let slow = "  - name: slow\n    command: [sh, -c, 'sleep 1; exec python3 -m http.server ${port} --bind 127.0.0.1']\n    ports: [port]\n    health: { tcp: '127.0.0.1:${port}', timeout: 20s, interval: 50ms }\n    stop_grace: 1s\n";
    let after = http_service("after", 1, "    depends_on: [slow]\n");
    let f = Fleet::new("gatefinish", &format!("{slow}{after}"));
    let first = f
        .cmd(&["apply", "fleet.yaml", "--yes"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("slow to start", Duration::from_secs(10), || {
        !f.unit_processes().is_empty()
    });
    Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    let out = first.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("a health gate runs until it passes or times out"),
        "{err}"
    );
    assert!(
        err.contains("ok slow-0@r1 healthy"),
        "the gate was abandoned:\n{err}"
    );
    let inst = f.instances("fleet.yaml");
    let slow0 = inst.iter().find(|i| i.0 == "slow-0").unwrap();
    assert!(slow0.1 == "running" && slow0.2, "{inst:?}");
    let after0 = inst.iter().find(|i| i.0 == "after-0").unwrap();
    assert_eq!(
        after0.1, "missing",
        "a new step started after Ctrl-C: {inst:?}"
    );
}

/// Regression: `phoenix agent --help` exited 2 with the usage as an error.
#[test]
fn agent_help_prints_help_and_exits_0() {
    let out = Command::new(BIN)
        .args(["agent", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("--state-dir DIR"), "{text}");
    assert!(text.contains("--idle-exit"), "{text}");
}

/// Copies the regular files under `from` to `to` (a backup's view of a state dir: no socket).
fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let kind = e.file_type().unwrap();
        if kind.is_dir() {
            copy_files(&src, &dst);
        } else if kind.is_file() {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// `chmod -R a-w` (`writable` false) or `u+w` back.
fn set_writable(dir: &Path, writable: bool) {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            set_writable(&e.path(), writable);
        }
    }
    let mode = std::fs::metadata(dir).unwrap().permissions().mode();
    let mode = if writable {
        mode | 0o200
    } else {
        mode & !0o222
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Regression: `status --state-dir /typo` created state.db there and advised `phoenix apply`,
/// which would deploy a second copy of a fleet that runs from the real state dir.
#[test]
fn status_and_logs_with_a_mistyped_state_dir_create_nothing_and_say_what_to_do() {
    let f = Fleet::new("typo", &http_service("web", 1, ""));
    let typo = f.dir.path().join("typo");
    for args in [
        vec!["status", "fleet.yaml", "--state-dir"],
        vec!["logs", "web", "--state-dir"],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .arg(&typo)
            .current_dir(f.dir.path())
            .env_remove("PHOENIX_STATE_URL")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("no Phoenix state in {}", typo.display())),
            "{err}"
        );
        assert!(err.contains("check --state-dir"), "{err}");
        assert!(!typo.exists(), "{args:?} created the state dir");
    }
}

/// Regression: a read-only copy of a state dir could not be read by `status` or `logs`
/// ("unable to open database file"), and reading started an agent in it.
#[test]
fn status_and_logs_read_a_read_only_copy_of_a_state_dir() {
    let f = Fleet::new("rocopy", &http_service("web", 1, ""));
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    let copy = f.dir.path().join("copy");
    copy_files(&f.state(), &copy);
    set_writable(&copy, false);
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .arg("--state-dir")
            .arg(&copy)
            .current_dir(f.dir.path())
            .env_remove("PHOENIX_STATE_URL")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let st = run(&["status", "fleet.yaml", "-o", "json"]);
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(st.status.success(), "{err}");
    let v: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["instances"][0]["state"], "running", "{v}");
    assert_eq!(v["instances"][0]["healthy"], true, "{v}");
    let logs = run(&["logs", "web"]);
    assert!(
        logs.status.success(),
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );
    assert!(String::from_utf8_lossy(&logs.stdout).contains("web-0@r1 |"));
    assert!(
        !copy.join("agent.sock").exists(),
        "an agent was started in the copy"
    );
    set_writable(&copy, true);
}

/// Regression (contract part 2): `status` had no `--detailed-exitcode`, and after `destroy`
/// it called the empty fleet drift ("missing" everywhere, "run `phoenix apply`").
#[test]
fn status_detailed_exitcode_is_0_in_sync_2_on_drift_and_0_for_a_destroyed_fleet() {
    let f = Fleet::new("exitcode", &http_service("web", 1, "    restart: never\n"));
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    let code = |args: &[&str]| f.run(args).status.code();
    assert_eq!(
        code(&["status", "fleet.yaml", "--detailed-exitcode"]),
        Some(0)
    );
    let pid = f.instances("fleet.yaml")[0].4;
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    wait_for("drift", Duration::from_secs(10), || {
        code(&["status", "fleet.yaml", "--detailed-exitcode"]) == Some(2)
    });
    // Without the flag drift is not an error.
    assert_eq!(code(&["status", "fleet.yaml"]), Some(0));
    f.ok(&["destroy", "fleet.yaml", "--yes"]);
    let out = f.run(&["status", "fleet.yaml", "--detailed-exitcode"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("destroyed at revision r2"), "{text}");
    assert!(text.contains("in sync"), "{text}");
    assert!(!text.contains("phoenix apply"), "{text}");
    assert_eq!(f.status("fleet.yaml")["destroyed"], true);
    // An error is 1, with or without the flag.
    let out = f.run(&[
        "status",
        "fleet.yaml",
        "--detailed-exitcode",
        "--state-url",
        "mysql://x",
    ]);
    assert_eq!(out.status.code(), Some(1));
}

/// Regression: `phoenix up` printed `phoenix status ...` hints that fail for a newcomer who ran
/// it with `cargo run` (no `phoenix` on the PATH), misaligned, without `history --verify`.
#[test]
fn up_hints_name_a_command_that_runs_here_aligned_and_with_verify() {
    let dir = tempfile::Builder::new().prefix("pxhint").tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .env("PATH", "/usr/bin:/bin")
            .env("PHOENIX_OPERATOR_KEY", dir.path().join("operator.key"))
            .env_remove("PHOENIX_STATE_DIR")
            .env_remove("PHOENIX_STATE_URL")
            .output()
            .unwrap()
    };
    struct Down<'a>(&'a dyn Fn(&[&str]) -> Output);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["destroy", ".phoenix/local-demo.yaml", "--yes"]);
        }
    }
    let _down = Down(&run);
    let out = run(&["up"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exe = std::fs::canonicalize(BIN).unwrap();
    let hints: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Look at it"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(hints.len(), 4, "{text}");
    for h in &hints {
        assert!(
            h.trim_start().starts_with(&exe.display().to_string()),
            "not runnable here (the test's PATH has no phoenix): {h}"
        );
    }
    assert!(
        text.contains("history .phoenix/local-demo.yaml --verify"),
        "{text}"
    );
    // The descriptions start in one column.
    let column = |l: &str| l.trim_end().rfind("  ").unwrap();
    let first = column(hints[0]);
    assert!(hints.iter().all(|h| column(h) == first), "{hints:#?}");
    // And the hinted command works as printed.
    let status = hints[0].trim_start();
    let status = status[..status.rfind("  ").unwrap()].trim_end();
    let argv: Vec<&str> = status.split_whitespace().skip(1).collect();
    assert!(run(&argv).status.success(), "`{status}` failed");
}

/// Regression: `rollback --to r2` where r2 had been rolled back retried it and failed again;
/// now it is refused first, naming r2's outcome and the revisions that were applied.
#[test]
fn rollback_to_a_revision_that_was_rolled_back_is_refused_unless_forced() {
    let f = Fleet::new("rbrefuse", &http_service("web", 1, ""));
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    let bad = http_service("web", 1, "    env: { V: '2' }\n")
        .replace("timeout: 15s", "timeout: 1s")
        .replace("/'", "/nope'");
    f.write("bad.yaml", &bad);
    assert_eq!(
        f.run(&["apply", "bad.yaml", "--yes"]).status.code(),
        Some(1)
    );
    let out = f.run(&["rollback", "fleet.yaml", "--to", "r2", "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("r2") && err.contains("rolled back to r1"),
        "{err}"
    );
    assert!(err.contains("applied revisions: r1"), "{err}");
    assert!(err.contains("--force"), "{err}");
    let hist: Value =
        serde_json::from_slice(&f.ok(&["history", "fleet.yaml", "-o", "json"]).stdout).unwrap();
    assert_eq!(
        hist["revisions"].as_array().unwrap().len(),
        2,
        "a revision was created"
    );
    // --force tries it anyway (and it fails again, rolled back).
    let out = f.run(&["rollback", "fleet.yaml", "--to", "r2", "--force", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(f.all_up("fleet.yaml"), "{}", f.status("fleet.yaml"));
}

/// Regression: a rollback to a revision applied with `--target` silently widened to the whole
/// fleet when those targets no longer resolved in its spec.
#[test]
fn rollback_to_a_targeted_revision_whose_targets_are_gone_is_refused_naming_them() {
    let f = Fleet::new(
        "rbtarget",
        &format!(
            "{}{}",
            http_service("web", 1, ""),
            http_service("other", 1, "")
        ),
    );
    f.ok(&["apply", "fleet.yaml", "--yes", "--target", "web"]);
    // The revision's document names a target its spec no longer has (as a spec read by a
    // later phoenix could).
    let db = rusqlite::Connection::open(f.state().join("state.db")).unwrap();
    db.execute(
        "UPDATE revisions SET spec_json = replace(spec_json, '\"targets\":[\"web\"]', '\"targets\":[\"web\",\"gone\"]') WHERE fleet = 'rbtarget' AND number = 1",
        [],
    )
    .unwrap();
    drop(db);
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    let before = f.unit_processes();
    let out = f.run(&["rollback", "fleet.yaml", "--to", "r1", "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`gone`") && err.contains("no longer resolve"),
        "{err}"
    );
    assert_eq!(f.unit_processes(), before, "something changed");
}

/// Regression: deleting `agent.sock` stranded the fleet: the agent ran on without it, and
/// `status` and `apply` failed after 10 s quoting "another agent (pid N) already runs". The
/// agent re-creates its socket; the next command talks to the same agent and nothing restarts.
#[test]
fn a_deleted_agent_socket_does_not_strand_the_fleet() {
    let f = Fleet::new("sockgone", &http_service("web", 1, ""));
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    let agent = f.agent_pid().expect("agent pid");
    let unit = f.instances("fleet.yaml")[0].4;
    std::fs::remove_file(f.state().join("agent.sock")).unwrap();
    let started = Instant::now();
    let out = f.ok(&["apply", "fleet.yaml", "--yes"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no changes"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(f.agent_pid(), Some(agent), "another agent took over");
    assert!(f.state().join("agent.sock").exists());
    assert_eq!(
        f.instances("fleet.yaml")[0].4,
        unit,
        "the unit was restarted"
    );
    assert!(f.all_up("fleet.yaml"));
}
