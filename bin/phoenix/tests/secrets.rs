//! Secrets (`secrets:`) end to end: the real binary, the local provider, real processes and a
//! real SQLite state store. A generated secret, one read from a file and one from an
//! environment variable reach a running unit through its environment and its data dir's 0600
//! files, and are found nowhere else: not in any output of apply, plan, status, history, logs
//! or the diff (table and `-o json`), not in the raw bytes of any file of the state dir (the
//! SQLite database and its WAL, so every row of every table, the audit chain included, the
//! agent's unit table, the unit logs), not in the unit's argv. A missing key, a wrong key and a
//! key file inside the state dir are refused before anything changes; `phoenix secret rotate`
//! follows the `--yes` rule and restarts the unit with a new value; `rekey` re-encrypts.
//! Every test destroys what it started (also when it fails, through [`Fleet`]'s `Drop`).

use serde_json::Value;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_phoenix");
const API_TOKEN: &str = "api-token-Zq8vLw3nT6yR1pKx";
const TLS_VALUE: &str = "tls-key-Hc4mWn9sBv2jXe7Q";

/// A fleet spec in a temp dir with its own state dir, operator key and secrets key; destroyed
/// on drop.
struct Fleet {
    dir: tempfile::TempDir,
    /// The fleet's name (unique per test run: a PostgreSQL store is shared).
    name: String,
    /// `--state-url` when the store is PostgreSQL; SQLite in the state dir otherwise.
    state_url: Option<String>,
    /// A passphrase given as `PHOENIX_SECRETS_KEY` to every command once set (instead of a
    /// key file); a `--secrets-key` flag still wins.
    env_key: std::cell::RefCell<Option<String>>,
    /// Everything every command printed, to search for values.
    seen: std::cell::RefCell<Vec<u8>>,
}

impl Fleet {
    fn new(state_url: Option<String>) -> Self {
        let dir = tempfile::Builder::new().prefix("pxsec").tempdir().unwrap();
        let suffix: String = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        let f = Fleet {
            name: format!("sec-{suffix}"),
            dir,
            state_url,
            seen: Default::default(),
            env_key: Default::default(),
        };
        std::fs::write(f.path("tls.txt"), format!("{TLS_VALUE}\n")).unwrap();
        f.write("v1");
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, version: &str) {
        let yaml = format!(
            r#"phoenix: 1
name: {name}
sites:
  - name: local
    tier: core
    capacity: {{ cpu: 64, memory: 64Gi, storage: 100G }}
secrets:
  - name: db
    generate: {{ length: 40, alphabet: base64url }}
  - name: api
    from_env: PX_TEST_API_TOKEN
  - name: tls
    from_file: tls.txt
jobs:
  - name: check
    command: [sh, -c, 'test -s "$0" && test "$(stat -c %a "$0")" = 600', '${{secret_file:db}}']
services:
  - name: web
    command: [python3, -m, http.server, '${{port}}', --bind, 127.0.0.1]
    env: {{ DB_PASSWORD: '${{secret:db}}', API_TOKEN: 'token=${{secret:api}}', TLS_FILE: '${{secret_file:tls}}', VERSION: '{version}' }}
    ports: [port]
    depends_on: [check]
    health: {{ http: 'http://127.0.0.1:${{port}}/{health_path}', timeout: {timeout}, interval: 50ms }}
    stop_grace: 2s
"#,
            name = self.name,
            // Revision "broken" fails its gate: http.server answers 404 there.
            health_path = if version == "broken" { "missing/" } else { "" },
            timeout = if version == "broken" { "2s" } else { "10s" },
        );
        std::fs::write(self.path("fleet.yaml"), yaml).unwrap();
    }

    /// `phoenix ARGS` in the test dir, with its state, its operator key and the test's API
    /// token variable, and none of the user's state or secrets settings.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env_remove("PHOENIX_STATE_URL")
            .env_remove("PHOENIX_SECRETS_KEY")
            .env("PHOENIX_STATE_DIR", self.path("s"))
            .env("PX_TEST_API_TOKEN", API_TOKEN)
            .env("PHOENIX_OPERATOR_KEY", self.path("operator.key"));
        cmd
    }

    fn run_with(&self, args: &[&str], key: Option<&str>) -> Output {
        let mut cmd = self.command(args);
        if let Some(k) = key {
            cmd.env("PHOENIX_SECRETS_KEY", k);
        }
        if let Some(url) = &self.state_url {
            cmd.env("PHOENIX_STATE_URL", url);
        }
        let out = cmd.output().unwrap();
        let mut seen = self.seen.borrow_mut();
        seen.extend_from_slice(&out.stdout);
        seen.extend_from_slice(&out.stderr);
        out
    }

    fn run(&self, args: &[&str]) -> Output {
        let key = self.env_key.borrow().clone();
        self.run_with(args, key.as_deref())
    }

    fn expect(&self, args: &[&str], code: i32) -> Output {
        let out = self.run(args);
        check(args, &out, code);
        out
    }

    fn status(&self) -> Value {
        let out = self.expect(&["status", "fleet.yaml", "-o", "json"], 0);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `(pid, revision)` of `web-0`.
    fn web(&self) -> (u32, u64) {
        let st = self.status();
        let i = st["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["instance"] == "web-0")
            .unwrap_or_else(|| panic!("no web-0 in {st:#}"));
        assert_eq!(i["state"], "running", "{st:#}");
        (
            u32::try_from(i["pid"].as_u64().unwrap()).unwrap(),
            i["revision"].as_u64().unwrap(),
        )
    }

    fn data_dir(&self, instance: &str) -> PathBuf {
        self.path("s/units")
            .join(&self.name)
            .join(instance)
            .join("data")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.run(&["destroy", "fleet.yaml", "--yes"]);
    }
}

fn check(args: &[&str], out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "phoenix {args:?}:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The variables of a running process.
fn environ(pid: u32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn var(env: &[(String, String)], name: &str) -> String {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {name} in the unit's environment"))
}

/// Every file under `dir` but the data dirs' secret files (which hold the values by design),
/// as (path, bytes).
fn files_outside_secret_dirs(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            if p.file_name().is_some_and(|n| n == ".secrets") {
                continue;
            }
            files_outside_secret_dirs(&p, out);
        } else if ft.is_file() {
            // A socket or a vanished file is not content.
            if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
}

/// Every row of every table of the state store, as text.
fn all_rows(f: &Fleet) -> String {
    match &f.state_url {
        None => sqlite_rows(&f.path("s/state.db")),
        Some(url) => postgres_rows(url),
    }
}

/// Every row of every table of the PostgreSQL store (all fleets'), through `psql`.
fn postgres_rows(url: &str) -> String {
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .args([url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql (Debian's postgresql-client) runs");
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let tables = psql(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    );
    let tables: Vec<&str> = tables.lines().filter(|l| !l.is_empty()).collect();
    assert!(tables.contains(&"secrets"), "{tables:?}");
    let mut text = String::new();
    for t in tables {
        text.push_str(&psql(&format!("SELECT '{t}', * FROM \"{t}\"")));
    }
    text
}

/// Every row of every table of the SQLite state, as text.
fn sqlite_rows(db: &Path) -> String {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(tables.iter().any(|t| t == "secrets"), "{tables:?}");
    let mut text = String::new();
    for t in &tables {
        let mut stmt = c.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
        let n = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..n {
                let v: rusqlite::types::Value = row.get(i).unwrap();
                text.push_str(&format!("{t}: {v:?}\n"));
            }
        }
    }
    text
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Asserts that none of `values` is anywhere but in the secret files: every output so far,
/// every file of the state dir (raw bytes), every row of every table, and the unit's argv.
fn assert_nowhere(f: &Fleet, values: &[&str], pid: u32) {
    let seen = f.seen.borrow();
    let mut files = Vec::new();
    files_outside_secret_dirs(&f.path("s"), &mut files);
    if f.state_url.is_none() {
        assert!(
            files.iter().any(|(p, _)| p.ends_with("state.db")),
            "the state dir has its database"
        );
    }
    let rows = all_rows(f);
    assert!(
        rows.contains("audit_records"),
        "the audit chain is among the rows"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    for v in values {
        assert!(v.len() >= 16, "a value long enough not to occur by chance");
        assert!(
            !contains(&seen, v),
            "a secret value was printed by a command"
        );
        for (p, bytes) in &files {
            assert!(!contains(bytes, v), "a secret value is in {}", p.display());
        }
        assert!(!rows.contains(v), "a secret value is in a state row");
        assert!(
            !contains(&cmdline, v),
            "a secret value is in the unit's argv"
        );
    }
}

#[test]
fn secret_values_reach_the_unit_and_nothing_else_sqlite() {
    scenario(&Fleet::new(None));
}

#[test]
fn secret_values_reach_the_unit_and_nothing_else_postgres() {
    let Ok(url) = std::env::var("PHOENIX_TEST_POSTGRES_URL") else {
        eprintln!(
            "skipped: PHOENIX_TEST_POSTGRES_URL is not set (eval \"$(bash .ci/postgres.sh)\"; CI does)"
        );
        return;
    };
    // This one takes its key as a passphrase in the environment (Argon2id).
    scenario(&Fleet::new(Some(url)).with_passphrase());
}

impl Fleet {
    fn with_passphrase(self) -> Self {
        self.env_key
            .replace(Some("a passphrase long enough for the test".into()));
        self
    }
}

fn scenario(f: &Fleet) {
    // A key: made by phoenix, outside the state dir, mode 0600.
    f.expect(&["secret", "keygen", "key"], 0);
    assert_eq!(
        std::fs::metadata(f.path("key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let key = f.path("key").display().to_string();
    let key_file = ["--secrets-key", key.as_str()];
    // With a passphrase in the environment, no flag.
    let with_key: &[&str] = if f.env_key.borrow().is_some() {
        &[]
    } else {
        &key_file
    };

    // No key: refused before anything changes.
    let out = f.run_with(&["apply", "fleet.yaml", "--yes"], None);
    check(&["apply"], &out, 1);
    assert!(stderr(&out).contains("no secrets key"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("PHOENIX_SECRETS_KEY"),
        "{}",
        stderr(&out)
    );
    // A key file inside the state dir: refused.
    std::fs::create_dir_all(f.path("s")).unwrap();
    std::fs::copy(f.path("key"), f.path("s/key")).unwrap();
    let inside = f.path("s/key").display().to_string();
    let out = f.expect(
        &["apply", "fleet.yaml", "--yes", "--secrets-key", &inside],
        1,
    );
    assert!(
        stderr(&out).contains("inside the state dir"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(f.path("s/key")).unwrap();
    // A key file other users can read: refused.
    std::fs::copy(f.path("key"), f.path("open.key")).unwrap();
    std::fs::set_permissions(f.path("open.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let open = f.path("open.key").display().to_string();
    let out = f.expect(&["apply", "fleet.yaml", "--yes", "--secrets-key", &open], 1);
    assert!(
        stderr(&out).contains("other users can read it"),
        "{}",
        stderr(&out)
    );
    // Refused before the state store was even created.
    assert!(
        !f.path("s/state.db").exists(),
        "a refused command creates no state"
    );

    // Without --yes and no terminal: exit 2, and no value is stored.
    f.expect(&[&["apply", "fleet.yaml"][..], with_key].concat(), 2);
    let out = f.expect(&["secret", "list", "fleet.yaml", "-o", "json"], 0);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        list["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["stored"] == false),
        "{list:#}"
    );

    // The deploy, with every kind of output.
    f.expect(&["plan", "fleet.yaml"], 0);
    f.expect(&["plan", "fleet.yaml", "-o", "json"], 0);
    f.expect(
        &[
            &["apply", "fleet.yaml", "--yes", "-o", "json"][..],
            with_key,
        ]
        .concat(),
        0,
    );
    let (pid, rev) = f.web();

    // The unit has the values: in its environment and its 0600 files.
    let data = f.data_dir("web-0");
    let db_file = data.join(".secrets/db");
    let db = std::fs::read_to_string(&db_file).unwrap();
    assert_eq!(db.len(), 40);
    assert_eq!(
        std::fs::metadata(&db_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(data.join(".secrets"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let env = environ(pid);
    assert_eq!(var(&env, "DB_PASSWORD"), db);
    assert_eq!(var(&env, "API_TOKEN"), format!("token={API_TOKEN}"));
    let tls_file = var(&env, "TLS_FILE");
    assert_eq!(std::fs::read_to_string(&tls_file).unwrap(), TLS_VALUE);
    // The job found its file (it checks the mode too).
    let st = f.status();
    assert_eq!(st["jobs"][0]["state"], "succeeded", "{st:#}");

    // Every reading command, in every format.
    f.expect(&["status", "fleet.yaml"], 0);
    f.expect(
        &["status", "fleet.yaml", "-o", "json", "--detailed-exitcode"],
        0,
    );
    f.expect(&["history", "fleet.yaml"], 0);
    f.expect(&["history", "fleet.yaml", "-o", "json"], 0);
    f.expect(&["history", "fleet.yaml", "--verify"], 0);
    f.expect(&["logs", "web"], 0);
    f.expect(&["logs", "check"], 0);
    f.expect(&["secret", "list", "fleet.yaml"], 0);
    // Applying again changes nothing (the fingerprint is stable) and prints a diff.
    let out = f.expect(
        &[&["apply", "fleet.yaml", "--yes"][..], with_key].concat(),
        0,
    );
    assert_eq!(f.web(), (pid, rev), "{}", stderr(&out));
    // A change that shows a diff with the units that use secrets.
    f.write("v2");
    f.expect(
        &[&["apply", "fleet.yaml", "--yes"][..], with_key].concat(),
        0,
    );
    f.write("v1");
    f.expect(
        &[
            &["apply", "fleet.yaml", "--yes", "-o", "json"][..],
            with_key,
        ]
        .concat(),
        0,
    );
    let (pid, _) = f.web();
    assert_eq!(
        var(&environ(pid), "DB_PASSWORD"),
        db,
        "the value is kept across applies"
    );

    // The unit killed: its supervisor starts it again with the same value, read from the
    // unit's file (the agent was not sent it again, and its unit table holds none).
    let killed = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut restarted = None;
    for _ in 0..200 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let st = f.status();
        let web = st["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["instance"] == "web-0")
            .cloned();
        if let Some(p) = web
            .filter(|i| i["state"] == "running")
            .and_then(|i| i["pid"].as_u64())
            .filter(|p| *p != u64::from(pid))
        {
            restarted = Some(u32::try_from(p).unwrap());
            break;
        }
    }
    let pid = restarted.expect("the supervisor restarts a killed unit within 10 s");
    assert_eq!(var(&environ(pid), "DB_PASSWORD"), db);

    // A wrong key: refused, naming the secret, before anything changes.
    let other = phoenix_key(f, "other");
    let out = f.expect(
        &["apply", "fleet.yaml", "--yes", "--secrets-key", &other],
        1,
    );
    assert!(
        stderr(&out).contains("does not decrypt"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("nothing was changed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(f.web().0, pid);

    assert_nowhere(f, &[&db, API_TOKEN, TLS_VALUE], pid);

    // Rotation: exit 2 without --yes (and nothing changes), then a new value reaches a new unit.
    f.expect(
        &[&["secret", "rotate", "fleet.yaml", "db"][..], with_key].concat(),
        2,
    );
    assert_eq!(std::fs::read_to_string(&db_file).unwrap(), db);
    assert_eq!(f.web().0, pid);
    f.expect(
        &[
            &["secret", "rotate", "fleet.yaml", "db", "--yes"][..],
            with_key,
        ]
        .concat(),
        0,
    );
    let (new_pid, new_rev) = f.web();
    assert_ne!(new_pid, pid, "the unit was restarted");
    let rotated = std::fs::read_to_string(&db_file).unwrap();
    assert_ne!(rotated, db);
    assert_eq!(var(&environ(new_pid), "DB_PASSWORD"), rotated);
    // In sync afterwards: the rotation is what the spec and the store say.
    f.expect(&["status", "fleet.yaml", "--detailed-exitcode"], 0);
    // A file-sourced secret: rotating without changing the file is refused; changing it
    // rotates it on the next apply.
    let out = f.expect(
        &[
            &["secret", "rotate", "fleet.yaml", "tls", "--yes"][..],
            with_key,
        ]
        .concat(),
        1,
    );
    assert!(
        stderr(&out).contains("put the new value there first"),
        "{}",
        stderr(&out)
    );

    // A new key: re-encrypted, the old key no longer opens the values, nothing restarts.
    let new_key = phoenix_key(f, "new");
    f.expect(
        &[
            &["secret", "rekey", "fleet.yaml", "--new-key", &new_key][..],
            with_key,
        ]
        .concat(),
        0,
    );
    f.expect(
        &[&["apply", "fleet.yaml", "--yes"][..], with_key].concat(),
        1,
    );
    f.expect(
        &["apply", "fleet.yaml", "--yes", "--secrets-key", &new_key],
        0,
    );
    assert_eq!(f.web(), (new_pid, new_rev));
    // A passphrase too short to be a key is refused.
    assert!(
        f.run_with(&["apply", "fleet.yaml", "--yes"], Some("too short"))
            .status
            .code()
            == Some(1)
    );

    // A file-sourced secret whose file changed: a new version on the next apply, the unit
    // replaced, its file rewritten.
    const TLS_NEW: &str = "tls-key-second-Rk2pVq8zLm5w";
    std::fs::write(f.path("tls.txt"), TLS_NEW).unwrap();
    f.expect(
        &["apply", "fleet.yaml", "--yes", "--secrets-key", &new_key],
        0,
    );
    let (tls_pid, _) = f.web();
    assert_ne!(tls_pid, new_pid, "the unit was restarted");
    assert_eq!(
        std::fs::read_to_string(var(&environ(tls_pid), "TLS_FILE")).unwrap(),
        TLS_NEW
    );
    assert_eq!(var(&environ(tls_pid), "DB_PASSWORD"), rotated);

    // A new file value in a revision whose gate fails: the rollback starts the replaced unit
    // again with the value it ran with (version 2 of `tls`), not the new one (version 3).
    const TLS_THIRD: &str = "tls-key-third-Wd6nJq3xPv8s";
    std::fs::write(f.path("tls.txt"), TLS_THIRD).unwrap();
    f.write("broken");
    f.expect(
        &["apply", "fleet.yaml", "--yes", "--secrets-key", &new_key],
        1,
    );
    let (back_pid, _) = f.web();
    let env = environ(back_pid);
    assert_ne!(var(&env, "VERSION"), "broken");
    assert_eq!(
        std::fs::read_to_string(var(&env, "TLS_FILE")).unwrap(),
        TLS_NEW,
        "the restarted unit has its own revision's value"
    );

    // A rollback to the revision with VERSION v2: the old spec's units, with today's values.
    f.write("v1");
    let history = f.expect(&["history", "fleet.yaml", "-o", "json"], 0);
    let history: Value = serde_json::from_slice(&history.stdout).unwrap();
    let v2 = history["revisions"]
        .as_array()
        .unwrap_or_else(|| panic!("{history:#}"))
        .iter()
        .find(|r| r["revision"].as_u64() == Some(2))
        .unwrap_or_else(|| panic!("revision 2 (VERSION v2) in {history:#}"));
    assert_eq!(v2["outcome"], "applied", "{history:#}");
    f.expect(
        &[
            "rollback",
            "fleet.yaml",
            "--to",
            "2",
            "--yes",
            "--secrets-key",
            &new_key,
        ],
        0,
    );
    let (tls_pid, _) = f.web();
    let env = environ(tls_pid);
    assert_eq!(var(&env, "VERSION"), "v2");
    assert_eq!(var(&env, "DB_PASSWORD"), rotated);

    f.expect(&["history", "fleet.yaml", "-o", "json"], 0);
    f.expect(&["logs", "web"], 0);
    f.expect(&["status", "fleet.yaml", "-o", "json"], 0);
    assert_nowhere(
        f,
        &[&db, &rotated, API_TOKEN, TLS_VALUE, TLS_NEW, TLS_THIRD],
        tls_pid,
    );
}

/// A new key file `name` in the test dir.
fn phoenix_key(f: &Fleet, name: &str) -> String {
    f.expect(&["secret", "keygen", name], 0);
    f.path(name).display().to_string()
}

#[test]
fn secrets_are_checked_where_they_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("f.yaml");
    std::fs::write(
        &spec,
        "phoenix: 1\nname: s\nsites:\n  - name: l\n    tier: core\n    capacity: { cpu: 4, memory: 4Gi, storage: 1G }\nsecrets:\n  - name: db\n    generate: { length: 4 }\n  - name: x\n    from_env: 1BAD\n  - name: y\nservices:\n  - name: web\n    command: [echo, '${secret:db}']\n    env: { A: '${secret:nope}' }\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["validate"])
        .arg(&spec)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for want in [
        "`length` 4",
        "not an environment variable name",
        "secret `y` says neither",
        "may only be put in `env`",
        "unknown secret `nope`",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

/// `phoenix serve` started by a test, killed (by its pid) when dropped.
struct Served {
    child: std::process::Child,
    addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// The server over `f`'s state dir, with `extra` arguments; waits for its address line.
    fn start(f: &Fleet, extra: &[&str]) -> Served {
        use std::io::BufRead as _;
        let mut child = f
            .command(&[&["serve", "--listen", "127.0.0.1:0"][..], extra].concat())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        // The first line is `listening on http://ADDR`; the server is killed if it never comes.
        let mut reader = std::io::BufReader::new(stdout);
        let read = reader.read_line(&mut line);
        let served = Served {
            child,
            addr: line
                .trim()
                .strip_prefix("listening on http://")
                .unwrap_or_default()
                .to_string(),
        };
        assert!(
            read.is_ok() && !served.addr.is_empty(),
            "phoenix serve printed {line:?}"
        );
        served
    }

    /// `POST path` with `body` and a bearer token: (status, body).
    fn post(&self, path: &str, token: &str, body: &str) -> (u16, String) {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(120)))
            .unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/yaml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, out)
    }
}

#[test]
fn a_server_given_the_key_applies_a_fleet_with_secrets_and_one_without_refuses_it() {
    let f = Fleet::new(None);
    let key = phoenix_key(&f, "key");
    let out = f.expect(
        &["serve", "token", "create", "ship", "--role", "deployer"],
        0,
    );
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    let spec = std::fs::read_to_string(f.path("fleet.yaml")).unwrap();
    let path = format!("/api/v1/fleets/{}/apply", f.name);

    // Without a key: refused, saying how to give one, and nothing was stored or started.
    {
        let server = Served::start(&f, &[]);
        let (status, body) = server.post(&path, &token, &spec);
        assert_eq!(status, 409, "{body}");
        assert!(body.contains("without a secrets key"), "{body}");
        assert!(body.contains("--secrets-key"), "{body}");
    }
    let out = f.expect(&["secret", "list", "fleet.yaml", "-o", "json"], 0);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        list["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["stored"] == false),
        "{list:#}"
    );

    // With the key: applied through the engine, the unit has its values, the answer has none.
    let server = Served::start(&f, &["--secrets-key", &key]);
    let (status, body) = server.post(&path, &token, &spec);
    assert_eq!(status, 200, "{body}");
    let (pid, _) = f.web();
    let db = std::fs::read_to_string(f.data_dir("web-0").join(".secrets/db")).unwrap();
    assert_eq!(db.len(), 40);
    let env = environ(pid);
    assert_eq!(var(&env, "DB_PASSWORD"), db);
    assert_eq!(var(&env, "API_TOKEN"), format!("token={API_TOKEN}"));
    assert!(!body.contains(&db) && !body.contains(API_TOKEN), "{body}");
    drop(server);
    f.seen.borrow_mut().extend_from_slice(body.as_bytes());
    assert_nowhere(&f, &[&db, API_TOKEN, TLS_VALUE], pid);
}
