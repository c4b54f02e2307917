//! One-shot jobs (`jobs:`) end to end: the real binary, the local provider and real processes.
//! A job that succeeds before the service that depends on it, one that fails (the wave fails,
//! the previous revision keeps running), one that times out, one that succeeds on retry, a job
//! not run again while its inputs are unchanged and run again when its command changes, and
//! `phoenix run-job` with and without `--yes`. Every test destroys what it started (also when
//! it fails, through [`Fleet`]'s `Drop`).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::BIN;

/// A fleet spec in a temp dir with its own state dir and operator key; destroyed on drop.
struct Fleet {
    dir: tempfile::TempDir,
}

/// An HTTP service `web` that serves only when `MARKER` (in the test's dir) exists, i.e. after
/// the job that writes it ran.
fn web(dir: &Path, version: &str) -> String {
    format!(
        "  - name: web\n    command: [sh, -c, 'test -f {m} && exec python3 -m http.server \"$0\" --bind 127.0.0.1', '${{port}}']\n    env: {{ VERSION: '{version}' }}\n    ports: [port]\n    depends_on: [migrate]\n    health: {{ http: 'http://127.0.0.1:${{port}}/', timeout: 10s, interval: 50ms }}\n    stop_grace: 2s\n",
        m = dir.join("MARKER").display()
    )
}

impl Fleet {
    fn new() -> Self {
        Fleet {
            dir: tempfile::Builder::new().prefix("pxjob").tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `fleet.yaml` with `services` and the jobs `jobs`.
    fn write(&self, services: &str, jobs: &str) {
        let yaml = format!(
            "phoenix: 1\nname: jobs\nsites:\n  - name: local\n    tier: core\n    capacity: {{ cpu: 64, memory: 64Gi, storage: 100G }}\nservices:\n{services}jobs:\n{jobs}"
        );
        std::fs::write(self.path("fleet.yaml"), yaml).unwrap();
    }

    /// A job `migrate` that appends a line to `RUNS` and writes `MARKER`, then runs `then`.
    fn migrate(&self, then: &str, extra: &str) -> String {
        format!(
            "  - name: migrate\n    command: [sh, -c, 'echo \"migrating $PHX_V\"; echo run >> {runs}; touch {marker}; {then}']\n    env: {{ PHX_V: v1 }}\n{extra}",
            runs = self.path("RUNS").display(),
            marker = self.path("MARKER").display()
        )
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.path("RUNS"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--state-dir")
            .arg(self.path("s"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env_remove("PHOENIX_STATE_URL")
            .env("PHOENIX_OPERATOR_KEY", self.path("operator.key"))
            .output()
            .unwrap()
    }

    fn expect(&self, args: &[&str], code: i32) -> Output {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "phoenix {args:?}:\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn status(&self) -> Value {
        let out = self.expect(&["status", "fleet.yaml", "-o", "json"], 0);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn job(&self) -> Value {
        let st = self.status();
        let jobs = st["jobs"].as_array().expect("a jobs array").clone();
        assert_eq!(jobs.len(), 1, "{st:#}");
        jobs[0].clone()
    }

    /// `(instance, state, healthy, revision)` of every desired instance.
    fn instances(&self) -> Vec<(String, String, bool, u64)> {
        self.status()["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["instance"].as_str().unwrap().to_string(),
                    i["state"].as_str().unwrap().to_string(),
                    i["healthy"].as_bool().unwrap(),
                    i["revision"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.run(&["destroy", "fleet.yaml", "--yes"]);
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_job_runs_before_its_service_once_per_change_and_on_request() {
    let f = Fleet::new();
    f.write(&web(f.dir.path(), "1"), &f.migrate("true", ""));
    f.expect(&["apply", "fleet.yaml", "--yes"], 0);
    assert_eq!(f.runs(), 1);
    assert_eq!(
        f.instances(),
        [("web-0".into(), "running".into(), true, 1)],
        "web started after the job wrote its marker"
    );
    let job = f.job();
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(job["exit_code"], 0);
    assert_eq!(job["revision"], 1);
    assert_eq!(job["current"], true);
    assert!(job["next_apply"].is_null());
    assert!(
        job["output"].as_str().unwrap().contains("migrating v1"),
        "{job:#}"
    );

    // Unchanged: nothing to do, and the job does not run again.
    let again = f.expect(&["apply", "fleet.yaml", "--yes"], 0);
    assert!(
        text(&again).contains("everything runs as desired"),
        "{}",
        text(&again)
    );
    assert_eq!(f.runs(), 1);
    f.expect(&["status", "fleet.yaml", "--detailed-exitcode"], 0);

    // A changed command runs it again (and only it: web is unchanged).
    f.write(&web(f.dir.path(), "1"), &f.migrate("echo v2", ""));
    f.expect(&["status", "fleet.yaml", "--detailed-exitcode"], 2);
    let out = f.expect(&["apply", "fleet.yaml", "--yes"], 0);
    assert!(
        text(&out).contains("run job"),
        "the diff names the job: {}",
        text(&out)
    );
    assert_eq!(f.runs(), 2);
    assert_eq!(f.instances()[0].3, 1, "web still runs revision 1");
    assert_eq!(f.job()["revision"], 2);

    // run-job asks first: without a terminal and without --yes it refuses with exit 2.
    let refused = f.expect(&["run-job", "fleet.yaml", "migrate"], 2);
    assert!(text(&refused).contains("--yes"), "{}", text(&refused));
    assert_eq!(f.runs(), 2);
    f.expect(&["run-job", "fleet.yaml", "migrate", "--yes"], 0);
    assert_eq!(f.runs(), 3, "run-job runs it although nothing changed");
    assert_eq!(f.job()["revision"], 3);
    let not_a_job = f.expect(&["run-job", "fleet.yaml", "web", "--yes"], 1);
    assert!(
        text(&not_a_job).contains("is a service, not a job"),
        "{}",
        text(&not_a_job)
    );

    // History and logs show the runs and their output.
    let history = f.expect(&["history", "fleet.yaml"], 0);
    assert!(text(&history).contains("migrate-0"), "{}", text(&history));
    let hj: Value =
        serde_json::from_slice(&f.expect(&["history", "fleet.yaml", "-o", "json"], 0).stdout)
            .unwrap();
    let revs = hj["revisions"].as_array().unwrap();
    assert_eq!(revs[0]["jobs"][0]["outcome"], "succeeded", "{hj:#}");
    let logs = f.expect(&["logs", "migrate"], 0);
    assert!(text(&logs).contains("migrating v1"), "{}", text(&logs));
}

#[test]
fn a_failed_job_fails_the_wave_and_the_previous_revision_keeps_running() {
    let f = Fleet::new();
    f.write(&web(f.dir.path(), "1"), &f.migrate("true", ""));
    f.expect(&["apply", "fleet.yaml", "--yes"], 0);
    // Revision 2 changes both; its migration fails, so web's new revision never starts.
    f.write(
        &web(f.dir.path(), "2"),
        &f.migrate("echo relation exists >&2; exit 3", ""),
    );
    let out = f.expect(&["apply", "fleet.yaml", "--yes"], 1);
    assert!(text(&out).contains("exited with code 3"), "{}", text(&out));
    assert_eq!(f.instances(), [("web-0".into(), "running".into(), true, 1)]);
    let job = f.job();
    assert_eq!(job["state"], "failed", "{job:#}");
    assert_eq!(job["exit_code"], 3);
    assert!(
        job["output"].as_str().unwrap().contains("relation exists"),
        "{job:#}"
    );
    assert!(
        job["next_apply"].as_str().unwrap().contains("failed"),
        "{job:#}"
    );
}

#[test]
fn a_job_past_its_timeout_is_stopped_and_fails() {
    let f = Fleet::new();
    f.write(
        &web(f.dir.path(), "1"),
        &f.migrate(
            "exec sleep 60",
            "    timeout: 700ms\n    stop_grace: 200ms\n",
        ),
    );
    let started = Instant::now();
    let out = f.expect(&["apply", "fleet.yaml", "--yes"], 1);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        text(&out).contains("timed out after 700ms"),
        "{}",
        text(&out)
    );
    let job = f.job();
    assert_eq!(job["state"], "timed-out", "{job:#}");
    assert_eq!(
        f.status()["extra"].as_array().unwrap().len(),
        0,
        "the job's unit is gone"
    );
}

#[test]
fn a_job_that_fails_once_succeeds_on_retry() {
    let f = Fleet::new();
    let flag = f.path("FIRST_DONE");
    let then = format!(
        "if [ -f {0} ]; then exit 0; else touch {0}; exit 1; fi",
        flag.display()
    );
    f.write(
        &web(f.dir.path(), "1"),
        &f.migrate(&then, "    retries: 2\n    backoff: 100ms\n"),
    );
    let out = f.expect(&["apply", "fleet.yaml", "--yes"], 0);
    assert!(text(&out).contains("retrying in 100 ms"), "{}", text(&out));
    assert_eq!(f.runs(), 2);
    let job = f.job();
    assert_eq!(
        (job["state"].as_str(), job["attempts"].as_u64()),
        (Some("succeeded"), Some(2))
    );
    assert_eq!(f.instances()[0].1, "running");
}

#[test]
fn a_backup_hook_runs_before_the_migration_and_again_when_it_changes() {
    let f = Fleet::new();
    let order = f.path("ORDER");
    let backup = format!(
        "  - name: backup\n    command: [sh, -c, 'echo backup >> {}']\n    hook: {{ before: migrate }}\n",
        order.display()
    );
    let migrate = |v: &str| {
        format!(
            "{}    depends_on: []\n",
            f.migrate(&format!("echo migrate-{v} >> {}", order.display()), "")
        )
    };
    f.write(
        &web(f.dir.path(), "1"),
        &format!("{}{backup}", migrate("1")),
    );
    let plan = Command::new(BIN)
        .args(["plan", "fleet.yaml"])
        .current_dir(f.dir.path())
        .output()
        .unwrap();
    assert!(
        text(&plan).contains("wave 1: backup (job)"),
        "{}",
        text(&plan)
    );
    f.expect(&["apply", "fleet.yaml", "--yes"], 0);
    f.expect(&["apply", "fleet.yaml", "--yes"], 0);
    f.write(
        &web(f.dir.path(), "1"),
        &format!("{}{backup}", migrate("2")),
    );
    f.expect(&["apply", "fleet.yaml", "--yes"], 0);
    let lines: Vec<String> = std::fs::read_to_string(&order)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines, ["backup", "migrate-1", "backup", "migrate-2"]);
}

#[test]
fn a_job_on_a_docker_site_runs_as_a_container_and_keeps_its_output() {
    if !common::docker_available() {
        return;
    }
    let f = Fleet::new();
    let img = f.path("img");
    common::busybox_image(&img);
    let name = format!("jobsd-{}", std::process::id());
    let spec = |code: u32| {
        format!(
            "phoenix: 1\nname: {name}\nsites:\n  - name: d1\n    tier: core\n    provider: docker\n    capacity: {{ cpu: 8, memory: 8Gi, storage: 10G }}\nservices: []\njobs:\n  - name: seed\n    build: ./img\n    command: [sh, -c, 'echo seeding in a container; exit {code}']\n    stop_grace: 1s\n"
        )
    };
    std::fs::write(f.path("fleet.yaml"), spec(0)).unwrap();
    let cleanup = |f: &Fleet| {
        let _ = f.run(&["destroy", "fleet.yaml", "--yes", "--purge"]);
        let images = Command::new("docker")
            .args([
                "images",
                "-q",
                "--filter",
                &format!("reference=phoenix-build/{name}-*"),
            ])
            .output()
            .unwrap();
        for id in String::from_utf8_lossy(&images.stdout).lines() {
            let _ = Command::new("docker").args(["rmi", "-f", id]).output();
        }
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        f.expect(&["apply", "fleet.yaml", "--yes"], 0);
        let job = f.job();
        assert_eq!(job["state"], "succeeded", "{job:#}");
        assert!(
            job["output"]
                .as_str()
                .unwrap()
                .contains("seeding in a container"),
            "{job:#}"
        );
        let left = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=phoenix.fleet={name}"),
            ])
            .output()
            .unwrap();
        assert!(left.stdout.is_empty(), "the job's container is removed");
        // Reading resolves no image, and still sees the job's inputs unchanged.
        f.expect(&["status", "fleet.yaml", "--detailed-exitcode"], 0);
        let again = f.expect(&["apply", "fleet.yaml", "--yes"], 0);
        assert!(
            text(&again).contains("everything runs as desired"),
            "{}",
            text(&again)
        );
        std::fs::write(f.path("fleet.yaml"), spec(4)).unwrap();
        let out = f.expect(&["apply", "fleet.yaml", "--yes"], 1);
        assert!(text(&out).contains("exited with code 4"), "{}", text(&out));
        assert_eq!(f.job()["exit_code"], 4);
    }));
    cleanup(&f);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// `for_each: web`: one run per instance of `web`, in that instance's data dir, before it
/// starts (web refuses to start without what the run wrote); and `hook: {rollback: mark}`: a
/// job run only when an apply that ran `mark` rolls back, after the instances are restored.
#[test]
fn a_for_each_job_prepares_each_instance_and_a_rollback_job_runs_on_rollback() {
    let f = Fleet::new();
    let log = f.path("LOG");
    let services = |gate_path: &str| {
        format!(
            "  - name: web\n    replicas: 2\n    command: [sh, -c, 'test -f \"$1/ready\" || {{ echo \"$1 not prepared\" >&2; exit 1; }}; exec python3 -m http.server \"$0\" --bind 127.0.0.1', '${{port}}', '${{data_dir}}']\n    ports: [port]\n    health: {{ http: 'http://127.0.0.1:${{port}}/', timeout: 10s, interval: 50ms }}\n    stop_grace: 2s\n  - name: gate\n    command: [python3, -m, http.server, '${{port}}', --bind, 127.0.0.1]\n    ports: [port]\n    depends_on: [mark]\n    health: {{ http: 'http://127.0.0.1:${{port}}/{gate_path}', timeout: 2s, interval: 50ms }}\n    stop_grace: 2s\n"
        )
    };
    let jobs = |v: &str| {
        format!(
            "  - name: init\n    for_each: web\n    command: [sh, -c, 'echo \"$0\" > \"$1/ready\"', '${{instance}}', '${{data_dir}}']\n  - name: mark\n    command: [sh, -c, 'echo mark-{v} >> {log}']\n  - name: undo\n    hook: {{ rollback: mark }}\n    command: [sh, -c, 'echo undo >> {log}']\n",
            log = log.display()
        )
    };
    f.write(&services(""), &jobs("1"));
    f.expect(&["apply", "fleet.yaml", "--yes"], 0);
    for i in 0..2 {
        let ready = f.path("s").join(format!("units/jobs/web-{i}/data/ready"));
        assert_eq!(
            std::fs::read_to_string(&ready).unwrap_or_default().trim(),
            format!("web-{i}"),
            "init ran in web-{i}'s data dir, with its ${{instance}}"
        );
    }
    let st = f.status();
    let state = |st: &Value, instance: &str| {
        st["jobs"]
            .as_array()
            .and_then(|j| j.iter().find(|j| j["instance"] == instance))
            .map(|j| j["state"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(state(&st, "init-0").as_deref(), Some("succeeded"), "{st:#}");
    assert_eq!(state(&st, "init-1").as_deref(), Some("succeeded"), "{st:#}");
    assert_eq!(state(&st, "undo-0").as_deref(), Some("never-run"), "{st:#}");
    let up = f
        .instances()
        .into_iter()
        .filter(|i| i.0.starts_with("web-") && i.1 == "running" && i.2)
        .count();
    assert_eq!(up, 2, "both instances started once prepared");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "mark-1\n");
    // Nothing to do: no run again, and the rollback job is no drift.
    f.expect(
        &["status", "fleet.yaml", "--detailed-exitcode", "-o", "json"],
        0,
    );

    // mark runs again (new inputs), then gate's new gate fails: the rollback runs undo.
    f.write(&services("no-such-page"), &jobs("2"));
    let out = f.expect(&["apply", "fleet.yaml", "--yes"], 1);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "mark-1\nmark-2\nundo\n",
        "{}",
        text(&out)
    );
    assert_eq!(state(&f.status(), "undo-0").as_deref(), Some("succeeded"));
}
