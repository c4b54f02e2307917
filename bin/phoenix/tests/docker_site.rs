//! `phoenix apply` on a docker site against a real Docker Engine (fleet-spec part 2): a fleet of
//! busybox `httpd` containers built from this host's static busybox (nothing is pulled), status,
//! a container killed by hand and repaired, and destroy leaving none. Skips with a reason when
//! no engine answers, unless `PHOENIX_REQUIRE_DOCKER=1` (CI sets it).

use serde_json::Value;
use std::process::{Command, Output, Stdio};

mod common;

use common::BIN;

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs")
}

/// Containers carrying the fleet's label, running or not.
fn labelled(fleet: &str) -> Vec<String> {
    let out = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=phoenix.fleet={fleet}"),
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

struct Fleet {
    dir: tempfile::TempDir,
    name: String,
}

impl Fleet {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env("PHOENIX_OPERATOR_KEY", self.dir.path().join("operator.key"))
            .env_remove("PHOENIX_STATE_URL")
            .output()
            .unwrap()
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
        serde_json::from_slice(&self.run(&["status", "fleet.yaml", "-o", "json"]).stdout).unwrap()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.run(&["destroy", "fleet.yaml", "--yes", "--purge"]);
        let _ = self.run(&["destroy", "fleet.yaml", "--yes"]);
        for id in labelled(&self.name) {
            let _ = docker(&["rm", "-f", &id]);
        }
        // The image the fleet's `build:` made (tagged by the provider per fleet and service).
        let images = docker(&[
            "images",
            "-q",
            "--filter",
            &format!("reference=phoenix-build/{}-*", self.name),
        ]);
        for id in String::from_utf8_lossy(&images.stdout).lines() {
            let _ = docker(&["rmi", "-f", id]);
        }
    }
}

#[test]
fn a_fleet_of_busybox_httpd_containers_is_applied_repaired_and_destroyed() {
    if !common::docker_available() {
        return;
    }
    let dir = tempfile::Builder::new().prefix("pxd").tempdir().unwrap();
    let img = dir.path().join("img");
    common::busybox_image(&img);
    let name = format!("dock-{}", std::process::id());
    std::fs::write(
        dir.path().join("fleet.yaml"),
        format!(
            "phoenix: 1\nname: {name}\nsites:\n  - name: d1\n    tier: core\n    provider: docker\n    capacity: {{ cpu: 8, memory: 8Gi, storage: 10G }}\nservices:\n  - name: web\n    replicas: 2\n    build: ./img\n    resources: {{ cpu: 100m, memory: 32Mi }}\n    command: [sh, -c, 'echo hello from ${{instance}}; exec httpd -f -p ${{port}} -h ${{data_dir}}']\n    ports: [port]\n    health: {{ http: 'http://127.0.0.1:${{port}}/', expect_status: 404, timeout: 20s, interval: 100ms }}\n    stop_grace: 1s\n"
        ),
    )
    .unwrap();
    let f = Fleet {
        dir,
        name: name.clone(),
    };
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    assert_eq!(labelled(&name).len(), 2, "exactly the declared containers");
    let st = f.status();
    assert_eq!(st["in_sync"], true, "{st}");
    let instances = st["instances"].as_array().unwrap();
    assert!(
        instances
            .iter()
            .all(|i| i["state"] == "running" && i["healthy"] == true),
        "{st}"
    );

    // `phoenix logs` reads the containers' output through the Engine API.
    let logs = f.ok(&["logs", "web-1"]);
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(text.contains("hello from web-1"), "{text}");
    assert!(!text.contains("hello from web-0"), "only web-1's: {text}");

    // Idempotent: a second apply changes nothing.
    let out = f.ok(&["apply", "fleet.yaml", "--yes"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("everything runs as desired"), "{text}");

    // A container killed by hand is drift, and the next apply repairs it.
    let victim = labelled(&name).pop().unwrap();
    docker(&["rm", "-f", &victim]);
    let st = f.status();
    assert_eq!(st["in_sync"], false, "{st}");
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    assert_eq!(labelled(&name).len(), 2);
    assert_eq!(f.status()["in_sync"], true);

    f.ok(&["history", "fleet.yaml", "--verify"]);
    f.ok(&["destroy", "fleet.yaml", "--yes"]);
    assert!(labelled(&name).is_empty(), "destroy leaves no container");
}
