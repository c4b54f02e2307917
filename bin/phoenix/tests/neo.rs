//! The Neo fleet (`examples/neo.yaml`, seed 004) deployed for real on this machine with
//! `--env local`: its four phases in order, the `enabled: false` services planned but not
//! deployed, and every Neo service gated by the seed's `verify-service-readiness.sh` checks as
//! health gates (`/health` status, `/api/info` version, at least 10 metric families). A service
//! that reports the wrong version fails its gate, and the previous revision keeps running.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::{BIN, assert_ok};
const DISABLED: [&str; 5] = [
    "oracle",
    "storage",
    "voting",
    "compliance",
    "social-recovery",
];

struct Neo {
    dir: tempfile::TempDir,
}

impl Neo {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("pxneo").tempdir().unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/neo.yaml");
        std::fs::copy(example, dir.path().join("neo.yaml")).unwrap();
        Neo { dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("neo.yaml")
    }

    /// `phoenix ARGS neo.yaml --env local`.
    fn phoenix(&self, args: &[&str]) -> Output {
        let mut c = common::phoenix(self.dir.path(), args);
        c.arg(self.file()).args(["--env", "local"]);
        c.output().unwrap()
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> Output {
        assert_ok(self.phoenix(args), &format!("phoenix {args:?}"))
    }

    fn status(&self) -> Value {
        serde_json::from_slice(&self.ok(&["status", "-o", "json"]).stdout).unwrap()
    }
}

impl Drop for Neo {
    fn drop(&mut self) {
        let _ = self.phoenix(&["destroy", "--yes"]);
    }
}

/// `GET url` from this host: the body.
fn get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.split_once("\r\n\r\n").unwrap().1.to_string()
}

#[test]
fn the_neo_fleet_deploys_in_its_four_phases_behind_the_readiness_script_as_gates() {
    let neo = Neo::new();
    let out = neo.ok(&["apply", "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();

    // The phases in order, each after the one before.
    let at = |p: &str| {
        err.find(p)
            .unwrap_or_else(|| panic!("`{p}` not in the output:\n{err}"))
    };
    assert!(at("phase 1 wave 1") < at("phase 2 wave 1"));
    assert!(at("phase 2 wave 1") < at("phase 3 wave 1"));
    assert!(at("phase 3 wave 1") < at("phase 4 wave 1"));

    let status = neo.status();
    let instances = status["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 24, "{status:#}");
    for i in instances {
        assert!(
            i["state"] == "running" && i["healthy"] == true,
            "running and healthy: {i:#}"
        );
        let service = i["service"].as_str().unwrap();
        assert!(
            !DISABLED.contains(&service),
            "{service} is disabled, yet deployed"
        );
    }
    // The gates' own verdicts: the version the gate compared, and the families it counted.
    let gateway = instances
        .iter()
        .find(|i| i["service"] == "api-gateway")
        .unwrap();
    let detail = gateway["detail"].as_str().unwrap();
    assert!(
        detail.contains("version=1.0.0") && detail.contains("metric families"),
        "{detail}"
    );
    let metrics = get(&format!(
        "http://127.0.0.1:{}/metrics",
        gateway["ports"]["http"]
    ));
    assert!(
        metrics.lines().filter(|l| l.starts_with("# HELP")).count() >= 10,
        "{metrics}"
    );

    // The plan still counts the disabled services.
    let plan = Command::new(BIN)
        .args(["plan", "-o", "json", "--env", "local"])
        .arg(neo.file())
        .output()
        .unwrap();
    assert!(plan.status.success());
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let planned = plan.to_string();
    for s in DISABLED {
        assert!(planned.contains(s), "{s} is planned");
    }

    // One service reporting another version than the one rolled out: its gate fails on the
    // version, the wave fails, and the running revision stays.
    let text = std::fs::read_to_string(neo.file()).unwrap();
    let block = text.find("  - name: crosschain\n").unwrap();
    let env = "env: { NEO_VERSION: *neo-version }";
    let at = block + text[block..].find(env).unwrap();
    let wrong = format!(
        "{}env: {{ NEO_VERSION: \"0.9.0\" }}{}",
        &text[..at],
        &text[at + env.len()..]
    );
    assert_ne!(wrong, text, "the test edits the file");
    std::fs::write(neo.file(), wrong.replace("timeout: 60s", "timeout: 4s")).unwrap();
    let out = neo.phoenix(&["apply", "--yes"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "a wrong version must fail:\n{err}");
    assert!(
        err.contains("`version` is `0.9.0`, expected `1.0.0`"),
        "the gate says why:\n{err}"
    );
    let status = neo.status();
    let cross = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["service"] == "crosschain")
        .unwrap()
        .clone();
    assert!(
        cross["revision"] == 1 && cross["healthy"] == true,
        "the previous revision keeps running: {cross:#}"
    );
}
