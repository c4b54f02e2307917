//! dbis_core for real (`examples/dbis-core-local.yaml`): Debian's PostgreSQL, Redis and
//! HAProxy as real processes under the local provider. One fleet, deployed once, goes through
//! the issue's scenarios in order (one deploy keeps the run short):
//!
//! 1. a clean deploy: both replicas, made by the `replica-init` job (`for_each: pg-replica`),
//!    stream from the primary, the load balancer answers;
//! 2. a blue-green application revision with a client polling through the load balancer: no
//!    request fails;
//! 3. a migration that fails: the wave fails, the previous revision keeps serving, nothing of
//!    the failed migration is left in the schema (migrations run in a transaction); then a
//!    migration that succeeds followed by an application revision whose gate fails: the
//!    rollback job `restore` loads the pre-change `pg_dump` into the primary, the replicas
//!    (which replay its WAL) show the same, and stream again;
//! 4. `kill -9` of the primary's postmaster, then `phoenix apply`: the fleet is healthy again
//!    and every row committed before the kill is there.
//!
//! Needs root, the `postgres` user and the binaries (`initdb`, `postgres`, `pg_basebackup`,
//! `pg_dump`, `psql`, `redis-server`, `haproxy`); without them it skips with the reason, unless
//! `PHOENIX_REQUIRE_DBIS=1` (set by `.ci/run`), which makes a missing one a failure.

use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_phoenix");

fn pg_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.reverse();
    dirs
}

fn have(cmd: &str) -> bool {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false);
    on_path || pg_bin_dirs().iter().any(|d| d.join(cmd).is_file())
}

/// Why this machine cannot run the scenario, if it cannot.
fn missing() -> Option<String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    if String::from_utf8_lossy(&uid).trim() != "0" {
        return Some("not root (PostgreSQL runs as `postgres`, which needs a root agent)".into());
    }
    let absent: Vec<&str> = [
        "initdb",
        "postgres",
        "pg_basebackup",
        "pg_dump",
        "psql",
        "redis-server",
        "haproxy",
    ]
    .into_iter()
    .filter(|c| !have(c))
    .collect();
    if !absent.is_empty() {
        return Some(format!(
            "missing {} (Debian: postgresql redis-server haproxy)",
            absent.join(", ")
        ));
    }
    let user = Command::new("getent").args(["passwd", "postgres"]).output();
    if !user.is_ok_and(|o| o.status.success()) {
        return Some("no `postgres` user (Debian's postgresql package makes it)".into());
    }
    None
}

struct Fleet {
    dir: tempfile::TempDir,
}

impl Fleet {
    /// A copy of the example (spec, scripts, SQL) in a temp dir that `postgres` can enter.
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("pxdbis").tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let cp = Command::new("cp")
            .arg("-r")
            .arg(examples.join("dbis-core"))
            .arg(examples.join("dbis-core-local.yaml"))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(cp.success());
        Fleet { dir }
    }

    fn spec(&self) -> PathBuf {
        self.dir.path().join("dbis-core-local.yaml")
    }

    fn edit(&self, from: &str, to: &str) {
        let s = std::fs::read_to_string(self.spec()).unwrap();
        assert!(s.contains(from), "the example has no {from:?}");
        std::fs::write(self.spec(), s.replacen(from, to, 1)).unwrap();
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--state-dir")
            .arg(self.dir.path().join("s"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env_remove("PHOENIX_STATE_URL")
            .env("PHOENIX_OPERATOR_KEY", self.dir.path().join("operator.key"))
            .output()
            .unwrap()
    }

    fn expect(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "phoenix {args:?}:\n{text}");
        text
    }

    fn status(&self) -> Value {
        let out = self.run(&["status", "dbis-core-local.yaml", "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// `(unit, port of its first named port, pid)` of an instance.
    fn unit(&self, instance: &str) -> (String, u16, u32) {
        let st = self.status();
        let i = st["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["instance"] == instance)
            .unwrap_or_else(|| panic!("no {instance} in {st:#}"))
            .clone();
        let port = i["ports"]
            .as_object()
            .and_then(|p| p.values().next())
            .and_then(Value::as_u64)
            .unwrap_or(0) as u16;
        (
            i["unit"].as_str().unwrap_or("").to_string(),
            port,
            i["pid"].as_u64().unwrap_or(0) as u32,
        )
    }

    /// The cluster directory of replica `i`, as its replica-init run reported it.
    fn replica_data_dir(&self, i: usize) -> PathBuf {
        let st = self.status();
        let output = st["jobs"]
            .as_array()
            .and_then(|j| {
                j.iter()
                    .find(|j| j["instance"] == format!("replica-init-{i}"))
            })
            .and_then(|j| j["output"].as_str())
            .unwrap_or("")
            .to_string();
        let dir = output
            .lines()
            .find_map(|l| {
                let made = l
                    .strip_prefix("initialised ")
                    .and_then(|r| r.split(" from the primary").next());
                made.or_else(|| l.strip_suffix(" holds a cluster already: left alone"))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| panic!("no data dir in replica-init-{i}'s output: {output}"));
        PathBuf::from(dir)
    }

    fn sql(&self, port: u16, query: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-X",
                "-At",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .arg("-p")
            .arg(port.to_string())
            .arg("-c")
            .arg(query)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {query}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.run(&["destroy", "dbis-core-local.yaml", "--yes"]);
    }
}

/// One HTTP/1.0 request; `(status, body)`, or an error for anything short of a response.
fn http(port: u16, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: lb\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {out:?}"))?;
    let body = out
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    Ok((code, body))
}

#[test]
fn dbis_core_deploys_upgrades_survives_a_bad_migration_and_a_killed_primary() {
    if let Some(why) = missing() {
        if std::env::var("PHOENIX_REQUIRE_DBIS").as_deref() == Ok("1") {
            panic!("PHOENIX_REQUIRE_DBIS=1 but {why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    let started = Instant::now();
    let f = Fleet::new();

    // 1. A clean deploy.
    f.expect(&["apply", "dbis-core-local.yaml", "--yes"], 0);
    let (_, pg, _) = f.unit("pg-primary-0");
    assert_eq!(
        f.sql(
            pg,
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
        ),
        "2",
        "both replicas stream"
    );
    // The replicas were made by the replica-init job, one run per replica, in its data dir.
    let st = f.status();
    for i in 0..2 {
        let run = st["jobs"]
            .as_array()
            .and_then(|j| {
                j.iter()
                    .find(|j| j["instance"] == format!("replica-init-{i}"))
            })
            .unwrap_or_else(|| panic!("no run of replica-init-{i} in {st:#}"));
        assert_eq!(run["state"], "succeeded", "{run:#}");
        assert_eq!(run["revision"], 1, "{run:#}");
        let output = run["output"].as_str().unwrap_or("");
        assert!(
            output.contains(&format!("pg-replica-{i}/data/pg from the primary")),
            "{output}"
        );
        assert!(run["next_apply"].is_null(), "{run:#}");
    }
    let restore = st["jobs"]
        .as_array()
        .and_then(|j| j.iter().find(|j| j["job"] == "restore"))
        .unwrap_or_else(|| panic!("no restore in {st:#}"));
    assert_eq!(
        restore["state"], "never-run",
        "a rollback job waits for a rollback"
    );
    assert!(
        restore["next_apply"].is_null(),
        "and is no drift: {restore:#}"
    );
    let (_, lb, _) = f.unit("lb-0");
    let (code, body) = http(lb, "GET", "/accounts", "").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("accounts=0 version=1"), "{body}");
    for i in 0..20 {
        let (code, body) = http(lb, "POST", "/accounts", &format!("owner-{i}")).unwrap();
        assert_eq!(code, 200, "{body}");
    }
    let (_, replica, _) = f.unit("pg-replica-1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.sql(replica, "SELECT count(*) FROM accounts") != "20" {
        assert!(Instant::now() < deadline, "the replica never caught up");
        std::thread::sleep(Duration::from_millis(100));
    }

    // 2. A blue-green application revision under a client polling through the load balancer.
    f.edit("VERSION: \"1\"", "VERSION: \"2\"");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let client = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(180);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match http(lb, "GET", "/accounts", "") {
                    Ok((200, _)) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    other => failed.lock().unwrap().push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let out = f.expect(&["apply", "dbis-core-local.yaml", "--yes"], 0);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    let failed = failed.lock().unwrap().clone();
    assert!(
        failed.is_empty(),
        "{} failed requests: {failed:?}\n{out}",
        failed.len()
    );
    assert!(
        ok.load(Ordering::SeqCst) > 10,
        "the client made too few requests"
    );
    assert_eq!(
        f.unit("lb-0").1,
        lb,
        "the load balancer was reloaded in place"
    );
    let (_, body) = http(lb, "GET", "/accounts", "").unwrap();
    assert!(body.contains("version=2"), "{body}");

    // 3. A migration that fails half way: the wave fails, version 2 keeps serving, and nothing
    //    of the migration is left.
    f.edit(
        "      - \"${spec_dir}/dbis-core/migrations/002_transfers.sql\"\n",
        "      - \"${spec_dir}/dbis-core/migrations/002_transfers.sql\"\n      - \"${spec_dir}/dbis-core/broken/003_broken.sql\"\n",
    );
    let out = f.expect(&["apply", "dbis-core-local.yaml", "--yes"], 1);
    assert!(out.contains("migrate"), "{out}");
    let (code, body) = http(lb, "GET", "/accounts", "").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("accounts=20 version=2"), "{body}");
    assert_eq!(f.sql(pg, "SELECT to_regclass('ledger_notes') IS NULL"), "t");
    assert_eq!(f.sql(pg, "SELECT count(*) FROM schema_migrations"), "2");
    f.edit(
        "      - \"${spec_dir}/dbis-core/broken/003_broken.sql\"\n",
        "",
    );
    f.expect(&["apply", "dbis-core-local.yaml", "--yes"], 0);

    // 3b. A migration that succeeds (a new table, a new row), then an application revision
    //     whose gate fails: the apply rolls back, and the restore job loads the backup taken
    //     before the migration into the primary; the replicas, which replay the primary's WAL,
    //     show the same, and stream again with little lag.
    let before = f.sql(
        pg,
        "SELECT string_agg(owner, ',' ORDER BY id) FROM accounts",
    );
    std::fs::write(
        f.dir.path().join("dbis-core/migrations/003_notes.sql"),
        "CREATE TABLE ledger_notes (id bigserial PRIMARY KEY, note text);\n\
         INSERT INTO ledger_notes (note) VALUES ('from 003');\n\
         INSERT INTO accounts (owner) VALUES ('made-by-003');\n",
    )
    .unwrap();
    f.edit(
        "      - \"${spec_dir}/dbis-core/migrations/002_transfers.sql\"\n",
        "      - \"${spec_dir}/dbis-core/migrations/002_transfers.sql\"\n      - \"${spec_dir}/dbis-core/migrations/003_notes.sql\"\n",
    );
    // The application's gate (the first `/health` in the file) now asks for a page it lacks.
    f.edit(
        "health: { http: \"http://127.0.0.1:${http}/health\", timeout: 30s",
        "health: { http: \"http://127.0.0.1:${http}/no-such-page\", timeout: 3s",
    );
    let out = f.expect(&["apply", "dbis-core-local.yaml", "--yes"], 1);
    assert!(out.contains("app-"), "the app's gate failed: {out}");
    let st = f.status();
    let run = |job: &str| {
        st["jobs"]
            .as_array()
            .and_then(|j| j.iter().find(|j| j["job"] == job).cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(run("migrate")["state"], "succeeded", "{st:#}");
    let restore = run("restore");
    assert_eq!(restore["state"], "succeeded", "{restore:#}\n{out}");
    assert_eq!(restore["revision"], run("migrate")["revision"], "{st:#}");
    assert!(
        restore["output"]
            .as_str()
            .unwrap_or("")
            .contains("restored the primary"),
        "{restore:#}"
    );
    assert_eq!(f.sql(pg, "SELECT to_regclass('ledger_notes') IS NULL"), "t");
    assert_eq!(f.sql(pg, "SELECT count(*) FROM schema_migrations"), "2");
    assert_eq!(
        f.sql(
            pg,
            "SELECT string_agg(owner, ',' ORDER BY id) FROM accounts"
        ),
        before,
        "the rows are those before the change"
    );
    for r in ["pg-replica-0", "pg-replica-1"] {
        let (_, port, _) = f.unit(r);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let gone = f.sql(port, "SELECT to_regclass('ledger_notes') IS NULL");
            let rows = f.sql(
                port,
                "SELECT string_agg(owner, ',' ORDER BY id) FROM accounts",
            );
            if gone == "t" && rows == before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{r} does not show the restored primary: ledger_notes gone={gone}, rows={rows}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let streaming = f.sql(
            pg,
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' \
             AND pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) < 16777216",
        );
        if streaming == "2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas do not stream with lag under 16 MiB ({streaming} do)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, body) = http(lb, "GET", "/accounts", "").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("accounts=20 version=2"), "{body}");
    f.edit(
        "      - \"${spec_dir}/dbis-core/migrations/003_notes.sql\"\n",
        "",
    );
    f.edit(
        "health: { http: \"http://127.0.0.1:${http}/no-such-page\", timeout: 3s",
        "health: { http: \"http://127.0.0.1:${http}/health\", timeout: 30s",
    );

    // 4. kill -9 of the primary's postmaster, then apply: healthy again, no committed row lost.
    let (_, body) = http(lb, "POST", "/accounts", "last-before-kill").unwrap();
    let last: u64 = body.parse().unwrap_or_else(|_| panic!("{body}"));
    let (_, _, pid) = f.unit("pg-primary-0");
    assert!(pid > 0);
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let repaired = f.expect(&["apply", "dbis-core-local.yaml", "--yes"], 0);
    let (_, pg, _) = f.unit("pg-primary-0");
    assert_eq!(
        f.sql(pg, "SELECT count(*) FROM accounts"),
        "21",
        "{repaired}"
    );
    assert_eq!(
        f.sql(pg, &format!("SELECT owner FROM accounts WHERE id = {last}")),
        "last-before-kill"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.sql(
        pg,
        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
    ) != "2"
    {
        assert!(
            Instant::now() < deadline,
            "the replicas did not stream again"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The load balancer answers (on its port of now: it is replaced, not reloaded, if the
    // apply found it down).
    let lb_now = f.unit("lb-0").1;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answer = http(lb_now, "GET", "/accounts", "");
    while !matches!(answer, Ok((200, _))) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        answer = http(lb_now, "GET", "/accounts", "");
    }
    assert!(
        matches!(answer, Ok((200, _))),
        "{answer:?} from lb-0 (port {lb_now}, was {lb}) after:\n{repaired}"
    );

    // 5. A replica that lost its data dir (its postmaster killed, the cluster deleted): the
    //    next apply replaces it, and the replica-init job makes it again from the primary,
    //    with every row.
    let data = f.replica_data_dir(1);
    let (_, _, pid) = f.unit("pg-replica-1");
    assert!(pid > 0);
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    std::fs::remove_dir_all(&data).unwrap();
    let rebuilt = f.expect(&["apply", "dbis-core-local.yaml", "--yes"], 0);
    let st = f.status();
    let init = st["jobs"]
        .as_array()
        .and_then(|j| j.iter().find(|j| j["instance"] == "replica-init-1"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(init["state"], "succeeded", "{init:#}\n{rebuilt}");
    assert!(
        init["output"]
            .as_str()
            .unwrap_or("")
            .contains("from the primary"),
        "the run of this apply made the cluster again: {init:#}\n{rebuilt}"
    );
    assert!(data.join("PG_VERSION").is_file(), "{rebuilt}");
    let (_, replica, _) = f.unit("pg-replica-1");
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.sql(replica, "SELECT count(*) FROM accounts") != "21" {
        assert!(
            Instant::now() < deadline,
            "the rebuilt replica does not have every row:\n{rebuilt}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("dbis_core scenario took {:?}", started.elapsed());
}
