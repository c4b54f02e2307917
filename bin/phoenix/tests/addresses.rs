//! `${address:S}` / `${addresses:S}` and `reload:` end to end: the real binary, the local
//! provider and real processes. A "load balancer" that lists its backends (`${addresses:api}`)
//! in a file it serves over HTTP, and a client bound to the first `api` instance. A blue-green
//! revision of `api` gives it new units and ports: the diff says that `lb` is reloaded and the
//! client replaced because an address changed, `lb` keeps its unit (and port) and now lists
//! the new backends, and a second apply has nothing to do. Every test destroys what it started.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_phoenix");

struct Fleet {
    dir: tempfile::TempDir,
}

impl Fleet {
    fn new() -> Self {
        Fleet {
            dir: tempfile::Builder::new().prefix("pxaddr").tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, version: &str) {
        let yaml = format!(
            r#"phoenix: 1
name: addr
sites:
  - name: local
    tier: core
    capacity: {{ cpu: 64, memory: 64Gi, storage: 100G }}
services:
  - name: api
    replicas: 2
    ports: [http]
    command: [python3, -m, http.server, "${{http}}", --bind, 127.0.0.1]
    env: {{ VERSION: "{version}" }}
    rollout: {{ strategy: blue-green }}
    health: {{ http: "http://127.0.0.1:${{http}}/", timeout: 10s, interval: 50ms }}
    stop_grace: 2s
  - name: lb
    ports: [http]
    depends_on: [api]
    command: [sh, -c, 'echo "$0" > backends && exec python3 -m http.server "$1" --bind 127.0.0.1', "${{addresses:api}}", "${{http}}"]
    reload:
      command: [sh, -c, 'echo "$0" > "$1/backends"', "${{addresses:api:http}}", "${{data_dir}}"]
    health: {{ http: "http://127.0.0.1:${{http}}/backends", timeout: 10s, interval: 50ms }}
    stop_grace: 2s
  - name: client
    depends_on: [api]
    command: [sh, -c, 'echo "$0" > target; exec sleep 600', "${{address:api}}"]
    stop_grace: 1s
"#
        );
        std::fs::write(self.path("fleet.yaml"), yaml).unwrap();
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

    /// `instance -> (unit, http port)` of every desired instance.
    fn units(&self) -> std::collections::BTreeMap<String, (String, u16)> {
        let out = self.run(&["status", "fleet.yaml", "-o", "json"]);
        let st: Value = serde_json::from_slice(&out.stdout).unwrap();
        st["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["instance"].as_str().unwrap().to_string(),
                    (
                        i["unit"].as_str().unwrap_or("").to_string(),
                        i["ports"]["http"].as_u64().unwrap_or(0) as u16,
                    ),
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

/// The body of `GET http://127.0.0.1:PORT/PATH`, over a plain socket (bounded by timeouts).
fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(s, "GET /{path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string()
}

#[test]
fn users_of_addresses_follow_a_blue_green_switch_reloaded_or_replaced() {
    let f = Fleet::new();
    f.write("1");
    f.expect(&["apply", "fleet.yaml", "--yes"], 0);
    let u = f.units();
    let backends = |u: &std::collections::BTreeMap<String, (String, u16)>| {
        format!("127.0.0.1:{},127.0.0.1:{}", u["api-0"].1, u["api-1"].1)
    };
    let lb = u["lb-0"].clone();
    assert_eq!(get(lb.1, "backends"), backends(&u));
    let target = || std::fs::read_to_string(f.path("s/units/addr/client-0/data/target")).unwrap();
    assert_eq!(target().trim(), format!("127.0.0.1:{}", u["api-0"].1));

    // A new api revision: the diff (printed, then refused without --yes and a terminal) says
    // who follows and why.
    f.write("2");
    let diff = f.expect(&["apply", "fleet.yaml"], 2);
    assert!(
        diff.contains("reload lb-0@r1: address changed: `api` now at api-0 (replaced now), api-1 (replaced now)"),
        "{diff}"
    );
    assert!(
        diff.contains("replace client-0@r1: address changed: `api` now at api-0 (replaced now)"),
        "{diff}"
    );
    f.expect(&["apply", "fleet.yaml", "--yes"], 0);
    let u2 = f.units();
    assert_eq!(u2["lb-0"], lb, "reloaded in place: same unit, same port");
    assert_ne!(u2["api-0"].0, u["api-0"].0);
    assert_eq!(get(lb.1, "backends"), backends(&u2));
    assert_eq!(u2["client-0"].0, "client-0@r2");
    assert_eq!(target().trim(), format!("127.0.0.1:{}", u2["api-0"].1));

    // Converged.
    let again = f.expect(&["apply", "fleet.yaml", "--yes"], 0);
    assert!(again.contains("everything runs as desired"), "{again}");
}

#[test]
fn an_address_without_its_dependency_and_a_missing_user_are_refused_before_any_change() {
    let f = Fleet::new();
    std::fs::write(
        f.path("fleet.yaml"),
        "phoenix: 1\nname: addr\nsites:\n  - name: local\n    tier: core\n    capacity: { cpu: 4, memory: 4Gi, storage: 10G }\nservices:\n  - name: api\n    ports: [http]\n    command: [sleep, '60']\n  - name: app\n    command: [echo, '${address:api}']\n",
    )
    .unwrap();
    let v = Command::new(BIN)
        .args(["validate", "fleet.yaml"])
        .current_dir(f.dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&v.stderr).to_string() + &String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(1), "{out}");
    assert!(out.contains("does not depend on `api`"), "{out}");
    assert!(out.contains("fleet.yaml:12:"), "{out}");

    std::fs::write(
        f.path("fleet.yaml"),
        "phoenix: 1\nname: addr\nsites:\n  - name: local\n    tier: core\n    capacity: { cpu: 4, memory: 4Gi, storage: 10G }\nservices:\n  - name: api\n    user: phoenix-no-such-user\n    command: [sleep, '60']\n",
    )
    .unwrap();
    let out = f.expect(&["apply", "fleet.yaml", "--yes"], 1);
    assert!(
        out.contains(
            "fleet.yaml:8: user `phoenix-no-such-user` of service `api` does not exist on this host"
        ),
        "{out}"
    );
    assert!(!f.path("s/units").exists(), "nothing was started");
}
