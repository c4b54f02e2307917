//! `phoenix serve` end to end: the real binary serving a state dir where a small fleet was
//! applied with the local provider, read over plain HTTP (a `TcpStream` client) without a
//! token, with a viewer token and with a deployer token; writes refused to a viewer; bad
//! requests answered with JSON errors; tokens created, listed, revoked and stored hashed.
//!
//! Every process a test starts is stopped by its pid when the test ends, also when it fails
//! (the guards' `Drop`), and every wait is bounded.

use serde_json::Value;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_phoenix");

/// A temp dir with a state dir and an operator key of its own; its fleet (if one was applied)
/// is destroyed on drop.
struct Dir {
    dir: tempfile::TempDir,
    applied: bool,
}

impl Dir {
    fn new() -> Self {
        Dir {
            dir: tempfile::Builder::new()
                .prefix("pxserve")
                .tempdir()
                .unwrap(),
            applied: false,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn state(&self) -> PathBuf {
        self.path("s")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .arg("--state-dir")
            .arg(self.state())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env_remove("PHOENIX_STATE_URL")
            .env("PHOENIX_OPERATOR_KEY", self.path("operator.key"));
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

    /// Writes `fleet.yaml`: fleet `name` with `web` (`replicas`), whose metrics are served at
    /// `/` of its port (python's http.server answers any path of the directory).
    fn write_fleet(&self, name: &str, replicas: u32) {
        let yaml = format!(
            "phoenix: 1\nname: {name}\nsites:\n  - name: local\n    tier: core\n    capacity: {{ cpu: 64, memory: 64Gi, storage: 100G }}\nservices:\n\
             \x20 - name: web\n    replicas: {replicas}\n    command: [python3, -m, http.server, '${{port}}', --bind, 127.0.0.1, --directory, '${{data_dir}}']\n    ports: [port]\n    metrics: {{ port: port, path: / }}\n    health: {{ http: 'http://127.0.0.1:${{port}}/', timeout: 15s, interval: 50ms }}\n    stop_grace: 2s\n"
        );
        std::fs::write(self.path("fleet.yaml"), yaml).unwrap();
    }

    fn apply(&mut self) {
        self.applied = true;
        self.ok(&["apply", "fleet.yaml", "--yes"]);
    }

    /// Creates a token and returns it: the last line of the output, alone.
    fn token(&self, name: &str, role: &str) -> String {
        let out = self.ok(&["serve", "token", "create", name, "--role", role]);
        let text = String::from_utf8(out.stdout).unwrap();
        let last = text.lines().last().unwrap_or_default().to_string();
        assert!(
            last.starts_with("phx_") && !last.contains(' '),
            "the last line is not the bare token:\n{text}"
        );
        last
    }

    /// Starts `phoenix serve` on a free loopback port; stopped when the guard drops.
    fn serve(&self) -> Server {
        self.serve_with(&[])
    }

    /// [`Dir::serve`] with more arguments.
    fn serve_with(&self, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = self
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let server = Server { child, addr: None };
        let line = rx.recv_timeout(Duration::from_secs(30));
        let mut server = server;
        let line = match line {
            Ok(l) => l,
            Err(_) => {
                let _ = server.child.kill();
                let out = server.child.wait_with_output_stderr();
                panic!("phoenix serve printed no address within 30 s; stderr:\n{out}");
            }
        };
        let addr = line
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_string();
        server.addr = Some(addr);
        server
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if self.applied {
            let _ = self.run(&["destroy", "fleet.yaml", "--yes"]);
        }
    }
}

/// A running `phoenix serve`, killed by its pid on drop.
struct Server {
    child: Child,
    addr: Option<String>,
}

trait StderrText {
    fn wait_with_output_stderr(&mut self) -> String;
}

impl StderrText for Child {
    fn wait_with_output_stderr(&mut self) -> String {
        let _ = self.wait();
        let mut s = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A JSON error with this status and a non-empty message.
    fn assert_error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.body);
        let message = self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!message.is_empty(), "no error message: {}", self.body);
        message
    }
}

impl Server {
    fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Answer {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        self.raw(method, path, &auth, "application/yaml", body)
    }

    /// One request with `extra` header lines (each ending in CRLF).
    fn raw(
        &self,
        method: &str,
        path: &str,
        extra: &str,
        content_type: &str,
        body: Option<&str>,
    ) -> Answer {
        let addr = self.addr.as_deref().unwrap();
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}");
        let body = body.unwrap_or_default();
        if method == "POST" {
            req.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        stream.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.request("GET", path, token, None)
    }
}

/// Decodes a chunked body (the server streams some answers).
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    for _ in 0..100_000 {
        let Some((size, rest)) = s.split_once("\r\n") else {
            break;
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

fn file_contains(path: &Path, needle: &str) -> bool {
    std::fs::read(path)
        .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .unwrap_or(false)
}

#[test]
fn a_non_loopback_address_is_refused_without_tls_or_insecure() {
    let d = Dir::new();
    let out = d.run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    assert!(stderr.contains("--tls-cert"), "{stderr}");
    let out = d.run(&["serve", "--listen", "not an address"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!d.state().join("state.db").exists() || out.status.code() == Some(1));
}

#[test]
fn tokens_are_created_listed_revoked_and_stored_hashed() {
    let d = Dir::new();
    let viewer = d.token("alice", "viewer");
    // A second live token of the same name is refused.
    let again = d.run(&["serve", "token", "create", "alice", "--role", "deployer"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let expiring = d.ok(&[
        "serve",
        "token",
        "create",
        "ci",
        "--role",
        "deployer",
        "--expires",
        "30d",
    ]);
    assert!(String::from_utf8_lossy(&expiring.stdout).contains("expires 20"));
    let bad = d.run(&[
        "serve",
        "token",
        "create",
        "x",
        "--role",
        "viewer",
        "--expires",
        "soon",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    // The store has its hash, never the token.
    for file in ["state.db", "state.db-wal"] {
        assert!(
            !file_contains(&d.state().join(file), &viewer),
            "{file} holds the token itself"
        );
    }
    let list = String::from_utf8(d.ok(&["serve", "token", "list"]).stdout).unwrap();
    assert!(
        list.contains("alice\tviewer") && list.contains("ci\tdeployer"),
        "{list}"
    );
    assert!(!list.contains(&viewer), "the list shows a token:\n{list}");

    let server = d.serve();
    assert_eq!(
        server.get("/api/v1/whoami", Some(&viewer)).json()["name"],
        "alice"
    );
    d.ok(&["serve", "token", "revoke", "alice"]);
    let revoked = server.get("/api/v1/whoami", Some(&viewer));
    assert!(revoked.assert_error(401).contains("revoked"));
    assert_eq!(
        d.run(&["serve", "token", "revoke", "alice"]).status.code(),
        Some(1)
    );
    let list = String::from_utf8(d.ok(&["serve", "token", "list"]).stdout).unwrap();
    assert!(
        list.lines()
            .any(|l| l.starts_with("alice\t") && l.ends_with("revoked")),
        "{list}"
    );
}

#[test]
fn serve_reads_with_each_role_refuses_a_viewer_write_and_answers_bad_requests() {
    let mut d = Dir::new();
    d.write_fleet("servedemo", 1);
    d.apply();
    d.write_fleet("servedemo", 2);
    d.apply();
    let viewer = d.token("view", "viewer");
    let deployer = d.token("deploy", "deployer");
    let server = d.serve();

    // Without a token: health, metrics; nothing else.
    assert_eq!(server.get("/health/live", None).json()["status"], "live");
    let ready = server.get("/health/ready", None);
    assert_eq!(
        (ready.status, ready.json()["fleets"].as_u64()),
        (200, Some(1))
    );
    // The OpenAPI document, generated from the routes, answers without a token.
    let doc = server.get("/openapi.json", None).json();
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with('3')),
        "{doc}"
    );
    for path in [
        "/api/v1/fleets",
        "/api/v1/fleets/{fleet}/diff",
        "/api/v1/validate",
        "/health/ready",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing from {doc}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let refused = server.get("/api/v1/fleets", None);
    refused.assert_error(401);
    assert!(refused.header("www-authenticate").is_some());
    server
        .get("/api/v1/monitoring/targets", None)
        .assert_error(401);
    server
        .get("/api/v1/fleets", Some("phx_0000000000000000"))
        .assert_error(401);

    for token in [&viewer, &deployer] {
        let t = Some(token.as_str());
        let fleets = server.get("/api/v1/fleets", t).json();
        let f = &fleets["fleets"][0];
        assert_eq!(f["name"], "servedemo", "{fleets}");
        assert_eq!(
            (f["instances"].as_u64(), f["healthy"].as_u64()),
            (Some(2), Some(2)),
            "{f}"
        );
        assert_eq!(f["sites"]["local"]["healthy"], 2, "{f}");
        assert_eq!(f["applied_revision"], 2);

        let inst = server.get("/api/v1/fleets/servedemo/instances", t).json();
        let list = inst["instances"].as_array().unwrap();
        assert_eq!(list.len(), 2, "{inst}");
        assert!(
            list.iter()
                .all(|i| i["healthy"] == true && i["site"] == "local")
        );
        assert!(
            list.iter()
                .all(|i| i["age_seconds"].as_f64().is_some_and(|a| a >= 0.0))
        );
        assert_eq!(inst["total"], 2, "{inst}");
        assert!(inst["next_after"].is_null(), "one page: {inst}");
        // A page at a time, and one instance by name.
        let first = server
            .get("/api/v1/fleets/servedemo/instances?limit=1", t)
            .json();
        assert_eq!(
            first["instances"].as_array().map(Vec::len),
            Some(1),
            "{first}"
        );
        let after = first["next_after"]
            .as_str()
            .expect("a next page")
            .to_string();
        let second = server
            .get(
                &format!("/api/v1/fleets/servedemo/instances?limit=1&after={after}"),
                t,
            )
            .json();
        assert_eq!(
            second["instances"].as_array().map(Vec::len),
            Some(1),
            "{second}"
        );
        assert_ne!(second["instances"][0]["instance"], after, "{second}");
        assert!(second["next_after"].is_null(), "{second}");
        let one = server
            .get(&format!("/api/v1/fleets/servedemo/instances/{after}"), t)
            .json();
        assert_eq!(one["instance"], after.as_str(), "{one}");
        assert_eq!(one["healthy"], true, "{one}");
        for (path, status) in [
            ("/api/v1/fleets/servedemo/instances/nope-0", 404),
            ("/api/v1/fleets/servedemo/instances?limit=0", 400),
            ("/api/v1/fleets/servedemo/instances?limit=x", 400),
            ("/api/v1/fleets/servedemo/instances?after=nope-0", 400),
        ] {
            assert_eq!(server.get(path, t).status, status, "{path}");
        }

        let revs = server.get("/api/v1/fleets/servedemo/revisions", t).json();
        let numbers: Vec<u64> = revs["revisions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["number"].as_u64().unwrap())
            .collect();
        assert_eq!(numbers, [1, 2]);
    }
    let t = Some(viewer.as_str());
    let spec = server.get("/api/v1/fleets/servedemo/spec", t).json();
    assert!(
        spec["files"][0]["text"]
            .as_str()
            .unwrap()
            .contains("replicas: 2")
    );
    let one = server
        .get("/api/v1/fleets/servedemo/revisions/r1", t)
        .json();
    assert!(
        one["spec"]["files"][0]["text"]
            .as_str()
            .unwrap()
            .contains("replicas: 1")
    );
    let plan = server.get("/api/v1/fleets/servedemo/plan", t).json();
    assert!(plan["sites"]["local"].is_object(), "{plan}");
    let diff = server
        .get("/api/v1/fleets/servedemo/diff?from=1&to=2", t)
        .json();
    assert_eq!(diff["instances"]["added"][0]["instance"], "web-1", "{diff}");
    assert_eq!(diff["instances"]["unchanged"], 1, "{diff}");
    assert_eq!(diff["files"].as_array().unwrap().len(), 1, "{diff}");
    let audit = server.get("/api/v1/fleets/servedemo/audit", t).json();
    assert_eq!(audit["verified"], true, "{audit}");
    assert!(audit["records"].as_array().unwrap().len() > 2);

    // Prometheus HTTP service discovery: a target per unit, at its allocated port.
    let targets = server.get("/api/v1/monitoring/targets", t).json();
    let groups = targets.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{targets}");
    let ports: Vec<u64> = list_ports(&server.get("/api/v1/fleets/servedemo/instances", t).json());
    for g in groups {
        assert_eq!(g["labels"]["fleet"], "servedemo");
        assert_eq!(g["labels"]["__metrics_path__"], "/");
        let addr = g["targets"][0].as_str().unwrap();
        let port: u64 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
        assert!(
            addr.starts_with("127.0.0.1:") && ports.contains(&port),
            "{g} {ports:?}"
        );
    }

    // Posted specs: validated and planned, bad ones answered 422 with diagnostics.
    let good = std::fs::read_to_string(d.path("fleet.yaml")).unwrap();
    let v = server.request("POST", "/api/v1/validate", t, Some(&good));
    assert_eq!(
        (v.status, v.json()["valid"].clone()),
        (200, Value::Bool(true))
    );
    let p = server.request("POST", "/api/v1/plan", t, Some(&good));
    assert!(p.json()["projects"].is_object(), "{}", p.body);
    let broken = good.replace("replicas: 2", "replicaz: 2");
    let v = server.request("POST", "/api/v1/validate", t, Some(&broken));
    v.assert_error(422);
    assert!(
        v.json()["diagnostics"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
    );
    server
        .request("POST", "/api/v1/plan", t, Some("phoenix: [unclosed"))
        .assert_error(422);
    server
        .request("POST", "/api/v1/validate", t, Some(""))
        .assert_error(400);

    // Bad requests: clear JSON errors.
    server
        .get("/api/v1/fleets/NOT_A_NAME!", t)
        .assert_error(400);
    server
        .get("/api/v1/fleets/nosuchfleet", t)
        .assert_error(404);
    server
        .get("/api/v1/fleets/servedemo/revisions/r99", t)
        .assert_error(404);
    server
        .get("/api/v1/fleets/servedemo/revisions/latest", t)
        .assert_error(400);
    server
        .get("/api/v1/fleets/servedemo/diff", t)
        .assert_error(400);
    server
        .get("/api/v1/fleets/servedemo/diff?from=1&to=x", t)
        .assert_error(400);
    server.get("/no/such/route", t).assert_error(404);

    // Writes: refused to a viewer, and nothing changes.
    let w = server.request("POST", "/api/v1/fleets/servedemo/rollback", t, Some(""));
    assert!(w.assert_error(403).contains("deployer"));
    let w = server.request(
        "POST",
        "/api/v1/fleets/servedemo/rollback",
        Some(&deployer),
        Some(""),
    );
    // A bad revision is refused before anything changes.
    server
        .request(
            "POST",
            "/api/v1/fleets/servedemo/rollback?to=latest",
            Some(&deployer),
            Some(""),
        )
        .assert_error(400);
    // A deployer's rollback runs through the engine, recorded with the token's name as actor.
    assert_eq!(w.status, 200, "{}", w.body);
    let done = w.json();
    assert_eq!(done["outcome"]["outcome"], "applied", "{done}");
    let revs = server.get("/api/v1/fleets/servedemo/revisions", t).json();
    let revs = revs["revisions"].as_array().unwrap().clone();
    assert_eq!(revs.len(), 3, "{revs:?}");
    let newest = revs
        .iter()
        .max_by_key(|r| r["number"].as_u64().or(r["revision"].as_u64()))
        .unwrap();
    assert_eq!(newest["actor"], "deploy", "{newest}");
    assert_eq!(newest["kind"], "rollback", "{newest}");
    let audit = server.get("/api/v1/fleets/servedemo/audit", t).json();
    assert_eq!(audit["verified"], true, "{audit}");
    assert!(
        audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["actor"] == "deploy"),
        "no audit record names the token: {audit}"
    );

    // The server's own metrics count what it answered, by route pattern.
    let m = server.get("/metrics", None);
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain"))
    );
    assert!(
        m.body.contains(
            "phoenix_serve_requests_total{route=\"/api/v1/fleets/{fleet}\",code=\"404\"} 1"
        ),
        "{}",
        m.body
    );
    assert!(m.body.contains("phoenix_serve_auth_failures_total"));

    // Failed attempts are rate-limited: after the limit, 429 with Retry-After.
    let mut limited = None;
    for i in 0..30 {
        let a = server.get("/api/v1/fleets", Some(&format!("phx_wrong{i}")));
        if a.status == 429 {
            limited = Some(a);
            break;
        }
        a.assert_error(401);
    }
    let limited = limited.expect("failed attempts were never limited");
    limited.assert_error(429);
    assert!(limited.header("retry-after").is_some());
}

fn list_ports(instances: &Value) -> Vec<u64> {
    instances["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["ports"]["port"].as_u64())
        .collect()
}

/// Runs `program args`; `None` (after saying why, on the process's stderr) when it is missing.
fn tool(program: &str, args: &[&str]) -> Option<Output> {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => Some(out),
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: the TLS check needs `{program}` ({e}); apt-get install openssl curl"
            );
            None
        }
    }
}

#[test]
fn tls_serves_https_with_the_given_certificate_and_names_a_missing_one() {
    let d = Dir::new();
    let (cert, key) = (d.path("cert.pem"), d.path("key.pem"));
    let Some(made) = tool(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    ) else {
        return;
    };
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut child = d
        .cmd(&["serve", "--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server { child, addr: None };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("no address printed");
    let addr = line
        .strip_prefix("listening on https://")
        .expect(&line)
        .to_string();
    let Some(out) = tool(
        "curl",
        &[
            "-sS",
            "-m",
            "10",
            "--cacert",
            cert.to_str().unwrap(),
            &format!("https://{addr}/health/live"),
        ],
    ) else {
        return;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["status"], "live");
    // Plain HTTP on the TLS port gets no answer.
    let plain = tool(
        "curl",
        &["-s", "-m", "5", &format!("http://{addr}/health/live")],
    )
    .unwrap();
    assert!(!plain.status.success());
    drop(server);

    // A certificate that cannot be read is an error that names it.
    let out = d.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        "missing.pem",
        "--tls-key",
        "missing.key",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.pem"));
}

/// The value of `name="csrf" value="..."` in a page.
fn csrf_of(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn portal_sign_in_gives_an_httponly_session_and_writes_need_its_csrf_token() {
    let mut d = Dir::new();
    d.write_fleet("portaldemo", 1);
    d.apply();
    d.write_fleet("portaldemo", 2);
    d.apply();
    let viewer = d.token("alice", "viewer");
    let deployer = d.token("bob", "deployer");
    let server = d.serve();
    let form = "application/x-www-form-urlencoded";

    // Without a session: the sign-in page, nothing else.
    let r = server.get("/portal", None);
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/portal/sign-in"))
    );
    let r = server.get("/portal/fleets/portaldemo/audit", None);
    assert_eq!(r.status, 303);
    let r = server.get("/portal/sign-in", None);
    assert!(
        r.status == 200 && r.body.contains("name=\"token\""),
        "{}",
        r.body
    );
    let r = server.raw("POST", "/portal/sign-in", "", form, Some("token=phx_wrong"));
    assert_eq!(r.status, 401);

    let sign_in = |token: &str| {
        let r = server.raw(
            "POST",
            "/portal/sign-in",
            "",
            form,
            Some(&format!("token={token}")),
        );
        assert_eq!(r.status, 303, "{}", r.body);
        let cookie = r.header("set-cookie").unwrap().to_string();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        assert!(
            !cookie.contains(token),
            "the cookie carries the token itself"
        );
        format!("Cookie: {}\r\n", cookie.split(';').next().unwrap())
    };
    let alice = sign_in(&viewer);
    let overview = server.raw("GET", "/portal", &alice, form, None);
    assert_eq!(overview.status, 200);
    assert!(
        overview.body.contains("portaldemo") && overview.body.contains("2/2 healthy"),
        "{}",
        overview.body
    );
    let page = server.raw("GET", "/portal/fleets/portaldemo", &alice, form, None);
    assert!(
        page.body.contains("web-1") && page.body.contains("diff with r1"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("Roll back to"),
        "a viewer is offered a rollback"
    );
    // Health by site, clearly, on the fleet page.
    assert!(
        page.body.contains(
            "<tr data-site=\"local\"><td>local</td><td><span class=\"ok\">2/2 healthy</span>"
        ),
        "{}",
        page.body
    );
    // An instance's page: its log's tail, followed from where the tail ends; the plan page.
    // What the unit wrote is shown as text: web-0's http.server logs the path it is asked for
    // as it came, markup included.
    let port = server
        .get("/api/v1/fleets/portaldemo/instances/web-0", Some(&viewer))
        .json()["ports"]["port"]
        .as_u64()
        .unwrap();
    knock(port, "/<b>bold</b>");
    let logged = server
        .get(
            "/api/v1/fleets/portaldemo/instances/web-0/logs",
            Some(&viewer),
        )
        .json();
    assert!(logged.to_string().contains("GET /<b>bold</b>"), "{logged}");
    let inst = server.raw(
        "GET",
        "/portal/fleets/portaldemo/instances/web-0",
        &alice,
        form,
        None,
    );
    assert_eq!(inst.status, 200, "{}", inst.body);
    assert!(inst.body.contains("<ol id=\"log-lines\""), "{}", inst.body);
    assert!(
        inst.body.contains("GET /&lt;b&gt;bold&lt;/b&gt;") && !inst.body.contains("<b>bold"),
        "{}",
        inst.body
    );
    assert!(
        inst.body.contains(
            "/portal/fleets/portaldemo/instances/web-0/logs?follow=true&amp;after=web-0%40r1%3A"
        ),
        "{}",
        inst.body
    );
    let nosuch = server.raw(
        "GET",
        "/portal/fleets/portaldemo/instances/web-7",
        &alice,
        form,
        None,
    );
    assert_eq!(nosuch.status, 404);
    let logs = server.get("/portal/fleets/portaldemo/instances/web-0/logs", None);
    assert_eq!(logs.status, 401);
    let plan = server.raw("GET", "/portal/fleets/portaldemo/plan", &alice, form, None);
    assert!(
        plan.status == 200 && plan.body.contains("<svg id=\"tier-cpu\""),
        "{}",
        plan.body
    );
    let diff = server.raw(
        "GET",
        "/portal/fleets/portaldemo/diff?from=1&to=2",
        &alice,
        form,
        None,
    );
    assert!(
        diff.status == 200 && diff.body.contains("Added (1)"),
        "{}",
        diff.body
    );
    let audit = server.raw("GET", "/portal/fleets/portaldemo/audit", &alice, form, None);
    assert!(
        audit
            .body
            .contains("class=\"ok\" id=\"verification\">Verified"),
        "{}",
        audit.body
    );
    let missing = server.raw("GET", "/portal/fleets/nosuch", &alice, form, None);
    assert_eq!(missing.status, 404);

    // Writes need the session's CSRF token, then the deployer role.
    let csrf = csrf_of(&overview.body);
    assert!(!csrf.is_empty());
    let r = server.raw(
        "POST",
        "/portal/fleets/portaldemo/rollback",
        &alice,
        form,
        Some("to=1"),
    );
    assert_eq!(r.status, 403);
    assert!(r.body.contains("CSRF"));
    let r = server.raw(
        "POST",
        "/portal/fleets/portaldemo/rollback",
        &alice,
        form,
        Some(&format!("to=1&csrf={csrf}")),
    );
    assert!(r.status == 403 && r.body.contains("viewer"), "{}", r.body);
    let bob = sign_in(&deployer);
    let page = server.raw("GET", "/portal/fleets/portaldemo", &bob, form, None);
    assert!(page.body.contains("Roll back to r1"));
    let bob_csrf = csrf_of(&page.body);
    assert_ne!(bob_csrf, csrf, "sessions share a CSRF token");
    let r = server.raw(
        "POST",
        "/portal/fleets/portaldemo/rollback",
        &bob,
        form,
        Some(&format!("to=1&csrf={csrf}")),
    );
    assert_eq!(r.status, 403, "another session's CSRF token was accepted");
    let r = server.raw(
        "POST",
        "/portal/fleets/portaldemo/rollback",
        &bob,
        form,
        Some(&format!("to=1&csrf={bob_csrf}")),
    );
    // The rollback ran (through the engine) and the fleet's page is shown again.
    assert_eq!(r.status, 303, "{}", r.body);
    let revs = server
        .raw("GET", "/portal/fleets/portaldemo", &bob, form, None)
        .body;
    assert!(revs.contains("rollback"), "{revs}");

    // Revoking the token ends its sessions.
    d.ok(&["serve", "token", "revoke", "alice"]);
    let r = server.raw("GET", "/portal", &alice, form, None);
    assert_eq!(r.status, 303);
    // Signing out ends a session.
    let r = server.raw(
        "POST",
        "/portal/sign-out",
        &bob,
        form,
        Some(&format!("csrf={bob_csrf}")),
    );
    assert_eq!(r.status, 303);
    assert_eq!(server.raw("GET", "/portal", &bob, form, None).status, 303);
}

/// Regression: a server on PostgreSQL state panicked when stopped (the synchronous client was
/// dropped inside the server's runtime). Runs when `PHOENIX_TEST_POSTGRES_URL` is set.
#[test]
fn a_server_on_postgres_state_is_ready_and_stops_cleanly_on_sigterm() {
    let Ok(url) = std::env::var("PHOENIX_TEST_POSTGRES_URL") else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: PHOENIX_TEST_POSTGRES_URL is not set (eval \"$(bash .ci/postgres.sh)\")"
        );
        return;
    };
    let d = Dir::new();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--state-url", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir(d.path("."))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut server = Server { child, addr: None };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("no address printed");
    server.addr = Some(
        line.strip_prefix("listening on http://")
            .expect(&line)
            .to_string(),
    );
    assert_eq!(server.get("/health/ready", None).json()["status"], "ready");
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut status = None;
    for _ in 0..200 {
        if let Some(s) = server.child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = status.expect("phoenix serve did not stop within 10 s of SIGTERM");
    let mut stderr = String::new();
    if let Some(mut e) = server.child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(
        status.success() && !stderr.contains("panicked"),
        "{status:?}\n{stderr}"
    );
}

/// Reads a server-sent event stream from `path` until `until` appears or 20 s pass; returns
/// the status line and what arrived.
fn read_stream(server: &Server, path: &str, token: &str, extra: &str, until: &str) -> String {
    let addr = server.addr.as_deref().unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n{extra}\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 8192];
    while std::time::Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading the stream: {e}"),
        }
        if String::from_utf8_lossy(&got).contains(until) {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn events_stream_the_latest_operation_from_the_audit_chain_and_resume_after_an_id() {
    let mut d = Dir::new();
    d.write_fleet("eventsdemo", 1);
    d.apply();
    let viewer = d.token("view", "viewer");
    let server = d.serve();
    let path = "/api/v1/fleets/eventsdemo/events";

    server.get(path, None).assert_error(401);
    server
        .get("/api/v1/fleets/nosuch/events", Some(&viewer))
        .assert_error(404);
    server
        .get(&format!("{path}?after=soon"), Some(&viewer))
        .assert_error(400);
    let doc = server.get("/openapi.json", None).json();
    assert!(doc["paths"][path.replace("eventsdemo", "{fleet}")].is_object());

    // From the latest operation's start: the apply, step by step, to its end.
    let text = read_stream(&server, path, &viewer, "", "event: operation-finished");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("text/event-stream"), "{text}");
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(kinds.first(), Some(&"operation-started"), "{text}");
    for k in ["unit-started", "gate-passed", "wave-finished"] {
        assert!(kinds.contains(&k), "no {k} in {kinds:?}");
    }
    assert_eq!(kinds.last(), Some(&"operation-finished"), "{text}");
    let last_id: u64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .next_back()
        .and_then(|v| v.trim().parse().ok())
        .expect("events carry ids");

    // A reconnect with Last-Event-ID gets only what came after: here the next apply.
    d.write_fleet("eventsdemo", 2);
    d.apply();
    let text = read_stream(
        &server,
        path,
        &viewer,
        &format!("Last-Event-ID: {last_id}\r\n"),
        "event: operation-finished",
    );
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    assert_eq!(ids.first(), Some(&(last_id + 1)), "{text}");
    assert!(text.contains("\"step\":\"unit.start web-1@r2\""), "{text}");
}

#[test]
fn apply_and_destroy_through_the_api_need_a_deployer_and_run_as_the_cli_does() {
    let mut d = Dir::new();
    let viewer = d.token("view", "viewer");
    let deployer = d.token("ship", "deployer");
    let server = d.serve();
    d.write_fleet("apidemo", 1);
    // The Drop guard destroys the fleet through the CLI if the test stops half-way.
    d.applied = true;
    let spec = std::fs::read_to_string(d.path("fleet.yaml")).unwrap();
    let apply = "/api/v1/fleets/apidemo/apply";

    server
        .request("POST", apply, Some(&viewer), Some(&spec))
        .assert_error(403);
    assert!(
        server
            .request(
                "POST",
                "/api/v1/fleets/other/apply",
                Some(&deployer),
                Some(&spec)
            )
            .assert_error(400)
            .contains("not `other`")
    );
    let bad = server.request(
        "POST",
        apply,
        Some(&deployer),
        Some("phoenix: 1\nname: apidemo\nservices:\n  - name: web\n    replicas: many\n"),
    );
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.json()["diagnostics"].is_array());
    server
        .request("POST", apply, Some(&deployer), Some(""))
        .assert_error(400);
    // Nothing was changed by the refusals.
    server
        .get("/api/v1/fleets/apidemo", Some(&viewer))
        .assert_error(404);

    let done = server.request("POST", apply, Some(&deployer), Some(&spec));
    assert_eq!(done.status, 200, "{}", done.body);
    let v = done.json();
    assert_eq!(
        (v["operation"].as_str(), v["revision"].as_u64()),
        (Some("apply"), Some(1)),
        "{v}"
    );
    let fleet = server.get("/api/v1/fleets/apidemo", Some(&viewer)).json();
    assert_eq!(
        (fleet["instances"].as_u64(), fleet["healthy"].as_u64()),
        (Some(1), Some(1)),
        "{fleet}"
    );
    let revisions = server
        .get("/api/v1/fleets/apidemo/revisions", Some(&viewer))
        .json();
    assert_eq!(revisions["revisions"][0]["actor"], "ship", "{revisions}");
    let audit = server
        .get("/api/v1/fleets/apidemo/audit", Some(&viewer))
        .json();
    assert_eq!(audit["verified"], true, "{audit}");
    assert!(
        audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["actor"] == "ship")
    );

    let destroy = "/api/v1/fleets/apidemo/destroy";
    server
        .request("POST", destroy, Some(&viewer), None)
        .assert_error(403);
    server
        .request(
            "POST",
            "/api/v1/fleets/nosuch/destroy",
            Some(&deployer),
            None,
        )
        .assert_error(404);
    let gone = server.request("POST", destroy, Some(&deployer), None);
    assert_eq!(gone.status, 200, "{}", gone.body);
    assert_eq!(gone.json()["operation"], "destroy");
    let fleet = server.get("/api/v1/fleets/apidemo", Some(&viewer)).json();
    assert_eq!(fleet["instances"].as_u64(), Some(0), "{fleet}");
    d.applied = false;
}

#[test]
fn ledger_routes_without_a_ledger_are_404_and_bad_ledger_options_are_refused_at_start() {
    let d = Dir::new();
    let viewer = d.token("view", "viewer");
    let server = d.serve();
    for path in [
        "/api/v1/ledger",
        "/api/v1/ledger/blocks",
        "/api/v1/ledger/validators",
        "/api/v1/ledger/events",
    ] {
        assert!(
            server
                .get(path, Some(&viewer))
                .assert_error(404)
                .contains("--ledger"),
            "{path}"
        );
    }
    server.get("/api/v1/ledger", None).assert_error(401);
    // Bad input is refused before the ledger is asked.
    server
        .get("/api/v1/ledger/blocks/tip", Some(&viewer))
        .assert_error(400);
    server
        .get("/api/v1/ledger/tx/xyz", Some(&viewer))
        .assert_error(400);
    let out = d.run(&["serve", "--ledger-key", "k.key", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ledger-key needs --ledger"));
    let out = d.run(&["serve", "--ledger", "ftp://x", "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http://"));
}

/// An open server-sent event stream, read in bounded steps.
struct Stream {
    tcp: TcpStream,
    got: Vec<u8>,
}

impl Stream {
    /// Opens `path` with `token` and waits (at most 20 s) for the answer's head.
    fn open(server: &Server, path: &str, token: &str) -> Stream {
        let addr = server.addr.as_deref().unwrap();
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        write!(
            tcp,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        let mut s = Stream {
            tcp,
            got: Vec::new(),
        };
        s.read_until("\r\n\r\n");
        s
    }

    /// What arrived so far.
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.got).into_owned()
    }

    /// Reads until `needle` arrived, the stream ended or 20 s passed; whether it arrived.
    fn read_until(&mut self, needle: &str) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 8192];
        while std::time::Instant::now() < deadline {
            if self.text().contains(needle) {
                return true;
            }
            match self.tcp.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("reading the stream: {e}"),
            }
        }
        self.text().contains(needle)
    }
}

/// Asks the instance's http.server for `path`, which it logs (to stderr, into its log file).
fn knock(port: u64, path: &str) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(tcp, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
}

#[test]
fn an_instances_logs_tail_and_follow_see_a_line_written_after_the_request() {
    let mut d = Dir::new();
    d.write_fleet("logsdemo", 1);
    d.apply();
    let viewer = d.token("view", "viewer");
    let server = d.serve();
    let path = "/api/v1/fleets/logsdemo/instances/web-0/logs";
    let port = server
        .get("/api/v1/fleets/logsdemo/instances/web-0", Some(&viewer))
        .json()["ports"]["port"]
        .as_u64()
        .expect("web-0 has a port");

    server.get(path, None).assert_error(401);
    server
        .get(
            "/api/v1/fleets/logsdemo/instances/web-9/logs",
            Some(&viewer),
        )
        .assert_error(404);
    server
        .get(&format!("{path}?tail=5001"), Some(&viewer))
        .assert_error(400);
    server
        .get(&format!("{path}?follow=true&after=../x"), Some(&viewer))
        .assert_error(400);
    let doc = server.get("/openapi.json", None).json();
    let op = &doc["paths"]["/api/v1/fleets/{fleet}/instances/{instance}/logs"]["get"];
    assert!(
        op["responses"]["200"]["content"]["application/json"]["schema"].is_object(),
        "{op}"
    );

    // The tail: bounded, the unit's lines (http.server logs each health probe), a cursor.
    knock(port, "/before-the-tail");
    let tail = server.get(&format!("{path}?tail=3"), Some(&viewer)).json();
    assert_eq!(tail["units"], serde_json::json!(["web-0@r1"]), "{tail}");
    let lines = tail["lines"].as_array().unwrap();
    assert!(!lines.is_empty() && lines.len() <= 3, "{tail}");
    assert!(lines.iter().all(|l| l["unit"] == "web-0@r1"), "{tail}");
    assert!(
        lines
            .iter()
            .any(|l| l["text"].as_str().unwrap().contains("GET /before-the-tail")),
        "{tail}"
    );
    let cursor = tail["cursor"].as_str().unwrap().to_string();
    assert!(cursor.starts_with("web-0@r1:"), "{cursor}");

    // Followed: a line the unit writes after the stream opened arrives, with the cursor after
    // it as the event's id.
    let mut live = Stream::open(&server, &format!("{path}?follow=true&tail=0"), &viewer);
    assert!(live.text().starts_with("HTTP/1.1 200"), "{}", live.text());
    assert!(live.text().contains("text/event-stream"), "{}", live.text());
    assert!(!live.text().contains("before-the-tail"), "{}", live.text());
    knock(port, "/written-while-followed");
    assert!(
        live.read_until("GET /written-while-followed"),
        "the new line never came:\n{}",
        live.text()
    );
    assert!(live.text().contains("event: line"), "{}", live.text());
    assert!(live.text().contains("id: web-0@r1:"), "{}", live.text());

    // From the tail's cursor: what came after it, the line above included, and not the tail's
    // own lines again.
    let mut after = Stream::open(
        &server,
        &format!("{path}?follow=true&after={cursor}"),
        &viewer,
    );
    assert!(
        after.read_until("GET /written-while-followed"),
        "{}",
        after.text()
    );
    assert!(
        !after.text().contains("before-the-tail"),
        "{}",
        after.text()
    );

    // Bounded: once the instance has no unit desired running (the fleet destroyed), the
    // follow says so and ends.
    d.ok(&["destroy", "fleet.yaml", "--yes"]);
    d.applied = false;
    assert!(live.read_until("event: end"), "{}", live.text());
    assert!(
        live.text().contains("no unit desired running"),
        "{}",
        live.text()
    );
}

#[test]
fn monitoring_targets_list_every_ledger_node_once_beside_the_fleets_units() {
    let mut d = Dir::new();
    d.write_fleet("sddemo", 1);
    d.apply();
    let viewer = d.token("view", "viewer");
    // No ledger runs there: service discovery only names the nodes, it does not ask them.
    let server = d.serve_with(&[
        "--ledger",
        "http://127.0.0.1:1,http://127.0.0.1:2/node,http://127.0.0.1:1/",
    ]);
    let targets = server
        .get("/api/v1/monitoring/targets", Some(&viewer))
        .json();
    let groups = targets.as_array().unwrap();
    let ledger: Vec<&Value> = groups
        .iter()
        .filter(|g| g["labels"]["phoenix_job"] == "ledger")
        .collect();
    let units: Vec<&Value> = groups
        .iter()
        .filter(|g| g["labels"]["phoenix_job"] == "sddemo/web")
        .collect();
    assert_eq!(units.len(), 1, "{targets}");
    assert_eq!(units[0]["labels"]["fleet"], "sddemo", "{targets}");
    // Each node once (the same URL given twice is one target), with its scheme and path.
    assert_eq!(ledger.len(), 2, "{targets}");
    assert_eq!(ledger[0]["targets"], serde_json::json!(["127.0.0.1:1"]));
    assert_eq!(ledger[0]["labels"]["__scheme__"], "http");
    assert_eq!(ledger[0]["labels"]["__metrics_path__"], "/metrics");
    assert_eq!(ledger[0]["labels"]["service"], "ledger");
    assert_eq!(ledger[0]["labels"]["instance"], "127.0.0.1:1");
    assert_eq!(ledger[1]["targets"], serde_json::json!(["127.0.0.1:2"]));
    assert_eq!(ledger[1]["labels"]["__scheme__"], "http");
    assert_eq!(ledger[1]["labels"]["__metrics_path__"], "/node/metrics");
    // Every label value is a string, as Prometheus requires.
    for g in groups {
        assert!(
            g["labels"]
                .as_object()
                .unwrap()
                .values()
                .all(Value::is_string),
            "{g}"
        );
    }
    // The document describes the answer's shape.
    let doc = server.get("/openapi.json", None).json();
    let schema = &doc["paths"]["/api/v1/monitoring/targets"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"];
    assert_eq!(schema["type"], "array", "{schema}");
}
