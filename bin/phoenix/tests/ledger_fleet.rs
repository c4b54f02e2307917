//! Phoenix deploying and upgrading its own ledger: a 4-validator network run as a fleet of four
//! services on the local provider, each gated by a `ledger` health check (the finalized height
//! advances, enough live peers, a small lag behind the network). A node killed by hand is
//! brought back by the next apply only once it has caught up; a rolling upgrade goes one node at
//! a time, each synced before the next; a gate that cannot hold (more peers than the network
//! has) fails the apply and says why.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, assert_ok, stderr};

/// A testnet's homes and a state dir; the fleet's processes are destroyed when dropped.
struct World {
    dir: tempfile::TempDir,
    api: u16,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pxlfleet")
            .tempdir()
            .unwrap();
        // Idle blocks every 250 ms, so a probe sees the height move within its window.
        let api = common::testnet(&dir.path().join("net"), Some(250));
        World { dir, api }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The fleet: node-i runs validator i's home, gated on being synced and connected.
    fn write_fleet(&self, file: &str, rev: &str, min_peers: u32, timeout: &str) {
        let mut yaml = String::from(
            "phoenix: 1\nname: ledger\nsites:\n  - name: local\n    tier: core\n    capacity: { cpu: 64, memory: 64Gi, storage: 100G }\nservices:\n",
        );
        for i in 0..4u16 {
            yaml.push_str(&format!(
                "  - name: node-{i}\n    role: validator\n    command: [\"{BIN}\", ledger, run, --home, \"{home}\"]\n    env: {{ REV: \"{rev}\" }}\n    stop_grace: 5s\n    health:\n      ledger: {{ api: \"http://127.0.0.1:{port}\", min_peers: {min_peers}, max_lag: 5, advance_within: 3s }}\n      timeout: {timeout}\n      interval: 500ms\n",
                home = self.path(&format!("net/node-{i}")).display(),
                port = self.api + i,
            ));
        }
        std::fs::write(self.path(file), yaml).unwrap();
    }

    fn phoenix(&self, args: &[&str]) -> Output {
        common::phoenix(self.dir.path(), args).output().unwrap()
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> Output {
        assert_ok(self.phoenix(args), &format!("phoenix {args:?}"))
    }

    fn status(&self) -> Value {
        serde_json::from_slice(&self.ok(&["status", "fleet.yaml", "-o", "json"]).stdout).unwrap()
    }

    /// `(instance, pid, revision)` of each instance, all of them running and healthy.
    fn healthy_instances(&self) -> Vec<(String, u64, u64)> {
        let s = self.status();
        let all = s["instances"].as_array().unwrap();
        assert_eq!(all.len(), 4, "{s:#}");
        all.iter()
            .map(|i| {
                assert!(
                    i["state"] == "running" && i["healthy"] == true,
                    "not running and healthy: {i:#}"
                );
                (
                    i["instance"].as_str().unwrap().to_string(),
                    i["pid"].as_u64().unwrap(),
                    i["revision"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// Node `i`'s `/v1/status`.
    fn node_status(&self, i: u16) -> Option<Value> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.api + i)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        serde_json::from_str(raw.split_once("\r\n\r\n")?.1).ok()
    }

    fn finalized(&self, i: u16) -> u64 {
        self.node_status(i)
            .and_then(|v| v["finalized_height"].as_u64())
            .unwrap_or(0)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Every process of the fleet, whatever state the test left it in.
        let _ = self.phoenix(&["destroy", "fleet.yaml", "--yes"]);
    }
}

fn kill_9(pid: u64) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

/// Waits (bounded) until `pid` is gone.
fn wait_gone(pid: u64) {
    let end = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn phoenix_deploys_repairs_and_upgrades_its_own_ledger_behind_ledger_gates() {
    let w = World::new();
    w.write_fleet("fleet.yaml", "1", 2, "60s");
    w.ok(&["apply", "fleet.yaml", "--yes"]);
    let first = w.healthy_instances();
    for i in 0..4 {
        assert!(w.finalized(i) > 0, "node {i} finalizes");
    }

    // A validator killed by hand: the next apply restarts it and passes its gate only once it
    // has caught up with the three that kept finalizing.
    let (victim, pid, _) = first[2].clone();
    kill_9(pid);
    wait_gone(pid);
    let out = w.ok(&["apply", "fleet.yaml", "--yes"]);
    assert!(
        stderr(&out).contains(&victim),
        "the repair names {victim}: {}",
        stderr(&out)
    );
    let repaired = w.healthy_instances();
    let lag = w.finalized(0).abs_diff(w.finalized(2));
    assert!(lag <= 10, "node 2 caught up (lag {lag})");
    assert_ne!(repaired[2].1, pid, "a new process");

    // A rolling upgrade, one node at a time: each new node gated before the next is stopped, so
    // three of four validators (a quorum) run throughout and the network keeps finalizing.
    let before = w.finalized(0);
    w.write_fleet("fleet.yaml", "2", 2, "60s");
    let out = w.ok(&["apply", "fleet.yaml", "--yes", "--parallelism", "1"]);
    let upgraded = w.healthy_instances();
    for ((name, old_pid, old_rev), (_, new_pid, new_rev)) in repaired.iter().zip(&upgraded) {
        assert!(new_rev > old_rev, "{name} upgraded: {}", stderr(&out));
        assert_ne!(new_pid, old_pid, "{name} restarted");
    }
    let after = w.finalized(0);
    assert!(
        after > before,
        "the network kept finalizing ({before} -> {after})"
    );

    // A gate that cannot hold: five peers asked of a four-node network. The apply fails, says
    // why, and the previous revision keeps running.
    w.write_fleet("fleet.yaml", "3", 5, "6s");
    let out = w.phoenix(&[
        "apply",
        "fleet.yaml",
        "--yes",
        "--parallelism",
        "1",
        "--target",
        "node-0",
    ]);
    assert!(!out.status.success(), "an impossible gate must fail");
    let err = stderr(&out);
    assert!(err.contains("at least 5 needed"), "{err}");
    let kept: Vec<u64> = w.healthy_instances().iter().map(|i| i.2).collect();
    let want: Vec<u64> = upgraded.iter().map(|i| i.2).collect();
    assert_eq!(kept, want, "the previous revision keeps running");
}
