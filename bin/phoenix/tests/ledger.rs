//! `--ledger` against a real 4-validator testnet of the same binary (`fleet-spec.md` part 2,
//! "Operations on the ledger"): every record of the fleet's chain and every instance's
//! lifecycle recorded; refusals before any change; the ledger going away mid-apply, and the next
//! command catching up with nothing lost or doubled; `history --verify --ledger` naming a local
//! record that was edited.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, Started, free_ports};

/// A 4-validator testnet and a fleet beside it, in one temp dir.
struct World {
    dir: tempfile::TempDir,
    api: u16,
    nodes: Vec<Option<Started>>,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pxledger")
            .tempdir()
            .unwrap();
        let api = common::testnet(&dir.path().join("net"), None);
        let mut w = World {
            dir,
            api,
            nodes: Vec::new(),
        };
        for i in 0..4 {
            w.nodes.push(None);
            w.start(i);
        }
        w.wait_for_blocks();
        std::fs::write(
            w.path("fleet.yaml"),
            "phoenix: 1\nname: lfleet\nsites:\n  - name: local\n    tier: core\n    capacity: { cpu: 64, memory: 64Gi, storage: 100G }\nservices:\n\
             \x20 - name: web\n    replicas: 2\n    command: [python3, -m, http.server, '${http}', --bind, 127.0.0.1]\n    ports: [http]\n    health: { tcp: '127.0.0.1:${http}', timeout: 15s, interval: 50ms }\n    stop_grace: 2s\n",
        )
        .unwrap();
        w
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn start(&mut self, i: usize) {
        let mut cmd = Command::new(BIN);
        cmd.args(["ledger", "run", "--home"])
            .arg(self.path(&format!("net/node-{i}")));
        self.nodes[i] = Some(Started::spawn(cmd, &self.path(&format!("node-{i}.log"))));
    }

    fn stop(&mut self, i: usize) {
        if let Some(mut n) = self.nodes[i].take() {
            n.kill();
        }
    }

    fn url(&self, i: u16) -> String {
        format!("http://127.0.0.1:{}", self.api + i)
    }

    fn urls(&self) -> String {
        (0..4).map(|i| self.url(i)).collect::<Vec<_>>().join(",")
    }

    /// `GET path` on validator `i`: status and body (`None` if it cannot be reached).
    fn get(&self, i: u16, path: &str) -> Option<(u16, serde_json::Value)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.api + i)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        let status = raw.split_whitespace().nth(1)?.parse().ok()?;
        let body = raw.split_once("\r\n\r\n")?.1;
        Some((
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        ))
    }

    fn wait_for_blocks(&self) {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let height = self
                .get(0, "/v1/status")
                .and_then(|(_, v)| v["finalized_height"].as_u64())
                .unwrap_or(0);
            if height >= 2 {
                return;
            }
            assert!(
                Instant::now() < end,
                "the testnet finalized nothing within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn phoenix(&self, args: &[&str]) -> Output {
        common::phoenix(self.dir.path(), args).output().unwrap()
    }

    fn with_ledger(&self, args: &[&str], urls: &str, key: &str) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--ledger", urls, "--ledger-key", key]);
        self.phoenix(&all)
    }

    /// How many records the fleet's audit chain holds (0 before the first command).
    fn chain_len(&self) -> u64 {
        let out = self.phoenix(&["history", "fleet.yaml", "--verify", "-o", "json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["verify"]["records"].as_u64())
            .unwrap_or(0)
    }

    /// The ledger's audit record `seq` of the fleet, from validator `i`.
    fn record(&self, i: u16, seq: u64) -> Option<serde_json::Value> {
        match self.get(i, &format!("/v1/state/audit/lfleet/{seq}"))? {
            (200, v) => Some(v["value"]["record"].clone()),
            _ => None,
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.phoenix(&["destroy", "fleet.yaml", "--yes"]);
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn apply_with_ledger_records_every_step_and_lifecycle_and_catches_up_after_an_outage() {
    let mut w = World::new();
    let key = w.path("net/client.key");
    let key = key.to_str().unwrap();

    // Refusals before any change: a ledger that cannot be reached, an account without roles,
    // a paused module. No revision is written.
    let nowhere = format!("http://127.0.0.1:{}", free_ports(1));
    let o = w.with_ledger(&["apply", "fleet.yaml", "--yes"], &nowhere, key);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("cannot be reached"), "{}", text(&o));
    let stranger = w.path("stranger.key");
    let o = Command::new(BIN)
        .args(["ledger", "keygen", "--out"])
        .arg(&stranger)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = w.with_ledger(
        &["apply", "fleet.yaml", "--yes"],
        &w.urls(),
        stranger.to_str().unwrap(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("holds no roles"), "{}", text(&o));
    assert_eq!(w.chain_len(), 0, "a refused apply wrote audit records");

    // An apply recorded on the ledger: every record of the chain, and each instance
    // provisioned.
    let o = w.with_ledger(&["apply", "fleet.yaml", "--yes"], &w.urls(), key);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("ledger: "), "{}", text(&o));
    let o = w.phoenix(&["history", "fleet.yaml", "--verify", "--ledger", &w.url(2)]);
    assert!(o.status.success(), "{}", text(&o));
    let n = w.chain_len();
    assert!(n >= 6, "{n} records");
    for seq in 1..=n {
        assert!(
            w.record(3, seq).is_some(),
            "record {seq} not on validator 3"
        );
    }
    for instance in ["web-0", "web-1"] {
        let (status, v) = w
            .get(1, &format!("/v1/state/provisioning/lfleet/{instance}"))
            .unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["value"]["state"], "provisioned", "{v}");
    }

    // The ledger goes away: the apply goes on and says what it could not record.
    for i in 0..4 {
        w.stop(i);
    }
    std::fs::write(
        w.path("fleet.yaml"),
        std::fs::read_to_string(w.path("fleet.yaml"))
            .unwrap()
            .replace("replicas: 2", "replicas: 3"),
    )
    .unwrap();
    let o = w.with_ledger(&["apply", "fleet.yaml", "--yes"], &w.urls(), key);
    // Refused before any change: the ledger cannot be reached at the start.
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let before = w.chain_len();
    // Now unreachable after the start: the first validator answers the checks, then stops.
    for i in 0..4 {
        w.start(i);
    }
    w.wait_for_blocks();
    let mut apply = Command::new(BIN);
    apply
        .args([
            "apply",
            "fleet.yaml",
            "--yes",
            "--ledger",
            &w.urls(),
            "--ledger-key",
            key,
        ])
        .arg("--state-dir")
        .arg(w.path("s"))
        .current_dir(w.dir.path())
        .env_remove("PHOENIX_STATE_URL")
        .env("PHOENIX_OPERATOR_KEY", w.path("operator.key"));
    let log = w.path("apply.log");
    let mut running = Started::spawn(apply, &log);
    // Stop the ledger as soon as the apply has started its unit.
    let end = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("started web-2")
    {
        assert!(
            Instant::now() < end,
            "the apply did not start web-2:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..4 {
        w.stop(i);
    }
    let status = running.wait();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "the apply stopped with the ledger: {log_text}"
    );
    assert!(
        log_text.contains("not on the ledger yet"),
        "the apply did not say what it could not record:\n{log_text}"
    );
    let after = w.chain_len();
    assert!(after > before);

    // Back again: verify names what is missing; the next command catches up; nothing doubled.
    for i in 0..4 {
        w.start(i);
    }
    w.wait_for_blocks();
    let o = w.phoenix(&["history", "fleet.yaml", "--verify", "--ledger", &w.urls()]);
    let missing_before = w.record(0, after).is_none();
    if missing_before {
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("missing"), "{}", text(&o));
    }
    let o = w.with_ledger(&["history", "fleet.yaml", "--sync"], &w.urls(), key);
    assert!(o.status.success(), "{}", text(&o));
    let o = w.phoenix(&["history", "fleet.yaml", "--verify", "--ledger", &w.urls()]);
    assert!(o.status.success(), "{}", text(&o));
    let (_, log) = w.get(0, "/v1/state/audit/log").unwrap();
    assert_eq!(
        log["value"]["size"].as_u64(),
        Some(after),
        "the ledger's audit log holds each record once: {log}"
    );
    let (_, web2) = w.get(0, "/v1/state/provisioning/lfleet/web-2").unwrap();
    assert_eq!(web2["value"]["state"], "provisioned", "{web2}");

    // An identity's key records, an independent verifier marks the instances verified; once
    // the identity is revoked its key is refused before any change.
    let keygen = |name: &str| -> String {
        let o = Command::new(BIN)
            .args(["ledger", "keygen", "--out"])
            .arg(w.path(name))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    let tx = |args: &[&str]| {
        let o = Command::new(BIN)
            .args(["ledger", "tx", "--api", &w.url(0), "--key", key, "--wait"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    };
    let zero = "0".repeat(64);
    let operator = keygen("operator-ledger.key");
    tx(&[
        "identity-register",
        "--did",
        "did:phx:op2",
        "--key",
        &operator,
        "--doc-hash",
        &zero,
        "--roles",
        "auditor,provisioner",
    ]);
    let verifier = keygen("verifier.key");
    tx(&[
        "identity-register",
        "--did",
        "did:phx:ver",
        "--key",
        &verifier,
        "--doc-hash",
        &zero,
        "--roles",
        "verifier",
    ]);
    let op2 = w.path("operator-ledger.key");
    let ver = w.path("verifier.key");
    let o = w.phoenix(&[
        "apply",
        "fleet.yaml",
        "--yes",
        "--ledger",
        &w.urls(),
        "--ledger-key",
        op2.to_str().unwrap(),
        "--ledger-verifier-key",
        ver.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let (_, web0) = w.get(2, "/v1/state/provisioning/lfleet/web-0").unwrap();
    assert_eq!(web0["value"]["state"], "verified", "{web0}");
    tx(&["identity-revoke", "--did", "did:phx:op2"]);
    let chain_before_revoked = w.chain_len();
    let o = w.with_ledger(
        &["apply", "fleet.yaml", "--yes"],
        &w.urls(),
        op2.to_str().unwrap(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("revoked"), "{}", text(&o));
    assert_eq!(
        w.chain_len(),
        chain_before_revoked,
        "a refused apply wrote audit records"
    );
    let after = w.chain_len();

    // A paused audit module refuses the next apply before any change.
    let o = Command::new(BIN)
        .args([
            "ledger",
            "tx",
            "--api",
            &w.url(0),
            "--key",
            key,
            "--wait",
            "gov-pause",
            "--module",
            "audit",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = w.with_ledger(&["apply", "fleet.yaml", "--yes"], &w.urls(), key);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("paused"), "{}", text(&o));
    assert_eq!(w.chain_len(), after, "a refused apply wrote audit records");

    // A local record edited: verify against the ledger names it.
    let db = w.path("s/state.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let changed = conn
        .execute(
            "UPDATE audit_records SET record_json = replace(record_json, '\"apply.start\"', '\"apply.begin\"') WHERE fleet = 'lfleet' AND seq = (SELECT MIN(seq) FROM audit_records WHERE fleet = 'lfleet' AND record_json LIKE '%apply.start%')",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    let o = w.phoenix(&["history", "fleet.yaml", "--verify", "--ledger", &w.urls()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("different"), "{}", text(&o));
}
