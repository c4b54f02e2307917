//! `phoenix monitoring` end to end: the files it writes for a fleet deployed under the local
//! provider, checked with Debian's `promtool` (config, rules, and the rules' behaviour on
//! synthetic series), then scraped by a real Prometheus together with a real ledger node.
//!
//! The promtool and Prometheus tests skip with a printed reason when the binaries are missing
//! (`apt-get install prometheus`), unless `PHOENIX_REQUIRE_PROMETHEUS=1`, which `.ci/run` sets.
//! Every process a test starts is stopped by its pid when the test ends, also when it fails
//! (the guards' `Drop`).

use serde_json::Value;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::BIN;

/// A fleet spec in a temp dir with its own state dir and operator key; destroyed on drop.
struct Fleet {
    dir: tempfile::TempDir,
}

impl Fleet {
    /// A fleet `name` with `app` (2 replicas) serving the Prometheus text in `METRICS` at
    /// `/metrics` on its port `http`, exposed with `metrics:`, and `plain` (1 replica), which
    /// exposes none.
    fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("pxmon").tempdir().unwrap();
        let www = dir.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("metrics"), METRICS).unwrap();
        let serve = |port: &str| {
            format!(
                "[python3, -m, http.server, '${{{port}}}', --bind, 127.0.0.1, --directory, '{}']",
                www.display()
            )
        };
        let yaml = format!(
            "phoenix: 1\nname: {name}\nsites:\n  - name: local\n    tier: core\n    capacity: {{ cpu: 64, memory: 64Gi, storage: 100G }}\nservices:\n\
             \x20 - name: app\n    replicas: 2\n    command: {app}\n    ports: [http, admin]\n    metrics: {{ port: http }}\n    health: {{ http: 'http://127.0.0.1:${{http}}/metrics', timeout: 15s, interval: 50ms }}\n    stop_grace: 2s\n\
             \x20 - name: plain\n    command: {plain}\n    ports: [port]\n    health: {{ tcp: '127.0.0.1:${{port}}', timeout: 15s, interval: 50ms }}\n    stop_grace: 2s\n",
            app = serve("http"),
            plain = serve("port"),
        );
        std::fs::write(dir.path().join("fleet.yaml"), yaml).unwrap();
        Fleet { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        common::phoenix(self.dir.path(), args)
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> Output {
        common::assert_ok(
            self.cmd(args).output().unwrap(),
            &format!("phoenix {args:?}"),
        )
    }

    /// `(instance, port)` of each instance of `service`, its port `port`, from `status`.
    fn ports(&self, service: &str, port: &str) -> Vec<(String, u64)> {
        let out = self.ok(&["status", "fleet.yaml", "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut found: Vec<(String, u64)> = v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["service"] == service)
            .map(|i| {
                let p = i["ports"][port].as_u64();
                (i["instance"].as_str().unwrap().to_string(), p.unwrap())
            })
            .collect();
        found.sort();
        found
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.cmd(&["destroy", "fleet.yaml", "--yes"]).output();
    }
}

/// What every `app` instance serves at `/metrics`.
const METRICS: &str = "# HELP http_requests_total HTTP requests served.\n\
# TYPE http_requests_total counter\n\
http_requests_total{code=\"200\"} 990\n\
http_requests_total{code=\"500\"} 10\n";

/// A process this test started, stopped by its pid (SIGTERM, then SIGKILL after 10 s) on drop.
struct Started {
    what: &'static str,
    child: Child,
    log: PathBuf,
}

impl Started {
    fn spawn(what: &'static str, mut cmd: Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        Started { what, child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log when the process has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.what, self.log());
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The Prometheus binary `name`, or `None` after printing why the test is skipped; with
/// `PHOENIX_REQUIRE_PROMETHEUS=1` a missing binary fails the test instead.
fn prometheus_tool(name: &str, test: &str) -> Option<PathBuf> {
    let found = on_path(name);
    if found.is_none() {
        let why = format!("`{name}` is not on PATH (Debian: apt-get install prometheus)");
        assert!(
            std::env::var("PHOENIX_REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
            "{test}: {why}, and PHOENIX_REQUIRE_PROMETHEUS=1"
        );
        eprintln!("skipped {test}: {why}");
    }
    found
}

fn run_ok(mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// A port free on 127.0.0.1 at the time of asking.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET http://127.0.0.1:PORT/PATH` as JSON (HTTP/1.0, so the body ends with the connection).
fn get_json(port: u16, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (_, body) = text.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn monitoring_writes_the_deployed_ports_and_checked_rules_and_touches_nothing_else() {
    let f = Fleet::new("monfiles");
    f.ok(&["apply", "fleet.yaml", "--yes"]);
    let out = f.path("out");
    std::fs::create_dir_all(out.join("dashboards")).unwrap();
    std::fs::write(out.join("mine.yml"), "keep me\n").unwrap();
    std::fs::write(out.join("dashboards/mine.json"), "{}\n").unwrap();
    std::fs::write(out.join("prometheus.yml"), "old\n").unwrap();
    let printed = f.ok(&[
        "monitoring",
        "fleet.yaml",
        "--out",
        "out",
        "--ledger",
        "http://127.0.0.1:8700,http://127.0.0.1:8701",
    ]);
    let printed = String::from_utf8_lossy(&printed.stdout).to_string();
    assert!(
        printed.contains("4 targets (monfiles/app 2, ledger 2)"),
        "{printed}"
    );
    assert!(printed.contains("10 alert rules"), "{printed}");

    // Each app instance at the port its deploy allocated, with its labels; `plain` is not
    // scraped.
    let config = read(&out.join("prometheus.yml"));
    let app = f.ports("app", "http");
    assert_eq!(app.len(), 2);
    for (instance, port) in &app {
        let entry = format!(
            "      - targets:\n          - '127.0.0.1:{port}'\n        labels:\n          fleet: monfiles\n          service: app\n          instance: {instance}\n          site: local\n"
        );
        assert!(config.contains(&entry), "{entry}\nnot in:\n{config}");
    }
    for (_, port) in f.ports("plain", "port") {
        assert!(!config.contains(&format!(":{port}'")), "{config}");
    }
    assert!(config.contains("  - job_name: ledger\n"), "{config}");
    assert!(config.contains("'127.0.0.1:8701'"), "{config}");
    for d in ["fleet", "ledger"] {
        let v: Value =
            serde_json::from_str(&read(&out.join(format!("dashboards/{d}.json")))).unwrap();
        assert!(!v["panels"].as_array().unwrap().is_empty());
    }
    // Only its own files are written.
    assert_eq!(read(&out.join("mine.yml")), "keep me\n");
    assert_eq!(read(&out.join("dashboards/mine.json")), "{}\n");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["alerts.yml", "dashboards", "mine.yml", "prometheus.yml"]
    );

    let test = "monitoring_writes_the_deployed_ports_and_checked_rules_and_touches_nothing_else";
    let Some(promtool) = prometheus_tool("promtool", test) else {
        return;
    };
    let mut check = Command::new(&promtool);
    check
        .args(["check", "config"])
        .arg(out.join("prometheus.yml"));
    let said = run_ok(check);
    assert!(said.contains("1 rule files found"), "{said}");
    let mut check = Command::new(&promtool);
    check.args(["check", "rules"]).arg(out.join("alerts.yml"));
    let said = run_ok(check);
    assert!(said.contains("SUCCESS: 10 rules found"), "{said}");
    // What the rules do, on synthetic series: each fires where its threshold is crossed and
    // only there.
    std::fs::write(out.join("alerts_test.yml"), RULE_TESTS).unwrap();
    let mut test_rules = Command::new(&promtool);
    test_rules
        .args(["test", "rules"])
        .arg(out.join("alerts_test.yml"));
    run_ok(test_rules);
}

/// `promtool test rules` input for the generated `alerts.yml`: a host `h1` over every host
/// threshold and `h2` under them; a service with 0.5% errors (`ok`) and one with 2%
/// (`api`); a target down; a ledger node `n1` stalled, behind, with one peer and view changes,
/// and `n2` healthy, with validator `bb` that no node hears from.
const RULE_TESTS: &str = r#"rule_files:
  - alerts.yml
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'node_cpu_seconds_total{mode="idle", cpu="0", instance="h1", site="s"}'
        values: '0+6x20'
      - series: 'node_cpu_seconds_total{mode="idle", cpu="0", instance="h2", site="s"}'
        values: '0+30x20'
      - series: 'node_memory_MemAvailable_bytes{instance="h1"}'
        values: '10x20'
      - series: 'node_memory_MemTotal_bytes{instance="h1"}'
        values: '100x20'
      - series: 'node_memory_MemAvailable_bytes{instance="h2"}'
        values: '20x20'
      - series: 'node_memory_MemTotal_bytes{instance="h2"}'
        values: '100x20'
      - series: 'node_filesystem_avail_bytes{instance="h1", device="sda1", fstype="ext4", mountpoint="/"}'
        values: '5x20'
      - series: 'node_filesystem_size_bytes{instance="h1", device="sda1", fstype="ext4", mountpoint="/"}'
        values: '100x20'
      - series: 'node_filesystem_readonly{instance="h1", device="sda1", fstype="ext4", mountpoint="/"}'
        values: '0x20'
      - series: 'node_filesystem_avail_bytes{instance="h1", device="tmpfs", fstype="tmpfs", mountpoint="/run"}'
        values: '1x20'
      - series: 'node_filesystem_size_bytes{instance="h1", device="tmpfs", fstype="tmpfs", mountpoint="/run"}'
        values: '100x20'
      - series: 'node_filesystem_readonly{instance="h1", device="tmpfs", fstype="tmpfs", mountpoint="/run"}'
        values: '0x20'
      - series: 'http_requests_total{fleet="f", service="api", instance="api-0", code="200"}'
        values: '0+980x20'
      - series: 'http_requests_total{fleet="f", service="api", instance="api-0", code="500"}'
        values: '0+20x20'
      - series: 'http_requests_total{fleet="f", service="ok", instance="ok-0", code="200"}'
        values: '0+995x20'
      - series: 'http_requests_total{fleet="f", service="ok", instance="ok-0", code="503"}'
        values: '0+5x20'
      - series: 'up{fleet="f", service="api", instance="api-0", site="s"}'
        values: '1x20'
      - series: 'up{fleet="f", service="api", instance="api-1", site="s"}'
        values: '0x20'
      - series: 'phoenix_ledger_finalized_height{instance="n1"}'
        values: '100x20'
      - series: 'phoenix_ledger_network_finalized_height{instance="n1"}'
        values: '120x20'
      - series: 'phoenix_ledger_peers{instance="n1"}'
        values: '1x20'
      - series: 'phoenix_ledger_view_changes_total{instance="n1"}'
        values: '0+10x20'
      - series: 'phoenix_ledger_finalized_height{instance="n2"}'
        values: '0+60x20'
      - series: 'phoenix_ledger_network_finalized_height{instance="n2"}'
        values: '5+60x20'
      - series: 'phoenix_ledger_peers{instance="n2"}'
        values: '3x20'
      - series: 'phoenix_ledger_view_changes_total{instance="n2"}'
        values: '0+1x20'
      - series: 'phoenix_ledger_validator_votes_total{instance="n2", validator="aa", kind="finalize"}'
        values: '0+60x20'
      - series: 'phoenix_ledger_validator_votes_total{instance="n2", validator="bb", kind="finalize"}'
        values: '7x20'
      - series: 'phoenix_ledger_validator_votes_total{instance="n2", validator="bb", kind="nullify"}'
        values: '3x20'
    alert_rule_test:
      - eval_time: 4m
        alertname: HostCpuHigh
        exp_alerts: []
      - eval_time: 12m
        alertname: HostCpuHigh
        exp_alerts:
          - exp_labels: { severity: critical, instance: h1, site: s }
            exp_annotations:
              summary: 'CPU above 80% for 5m on h1'
              description: 'CPU busy 90% (site s).'
      - eval_time: 12m
        alertname: HostMemoryHigh
        exp_alerts:
          - exp_labels: { severity: high, instance: h1 }
            exp_annotations:
              summary: 'Memory above 85% on h1'
              description: 'Memory used 90% (site ).'
      - eval_time: 12m
        alertname: HostDiskSpaceLow
        exp_alerts:
          - exp_labels: { severity: critical, instance: h1, device: sda1, fstype: ext4, mountpoint: / }
            exp_annotations:
              summary: 'Less than 10% disk space left on h1 /'
              description: '5.0% available on / (sda1).'
      - eval_time: 12m
        alertname: ApiErrorRateHigh
        exp_alerts:
          - exp_labels: { severity: high, fleet: f, service: api }
            exp_annotations:
              summary: 'More than 1% of requests to f/api fail'
              description: '2% of requests answered 5xx over 5m.'
      - eval_time: 12m
        alertname: TargetDown
        exp_alerts:
          - exp_labels: { severity: high, fleet: f, service: api, instance: api-1, site: s }
            exp_annotations:
              summary: 'f/api-1 cannot be scraped'
              description: 'Prometheus cannot scrape api instance api-1 on site s: stopped, failing, or not listening where the deploy said.'
      - eval_time: 12m
        alertname: LedgerSyncLag
        exp_alerts:
          - exp_labels: { severity: medium, instance: n1 }
            exp_annotations:
              summary: 'Ledger node n1 is more than 10 blocks behind'
              description: '20 finalized blocks behind the network.'
      - eval_time: 12m
        alertname: LedgerPeersLow
        exp_alerts:
          - exp_labels: { severity: medium, instance: n1 }
            exp_annotations:
              summary: 'Ledger node n1 hears from fewer than 3 peers'
              description: 'Validators heard from in the last 10 s: 1.'
      - eval_time: 12m
        alertname: LedgerFinalityStalled
        exp_alerts:
          - exp_labels: { severity: critical, instance: n1 }
            exp_annotations:
              summary: 'Ledger finality stalled at n1'
              description: 'The finalized height has not advanced for 2m; an idle chain still finalizes an empty block every second.'
      - eval_time: 12m
        alertname: LedgerViewChangesHigh
        exp_alerts:
          - exp_labels: { severity: high, instance: n1 }
            exp_annotations:
              summary: 'Ledger consensus keeps changing views at n1'
              description: '0.17 nullified views per second: leaders time out (a validator down or partitioned).'
      - eval_time: 12m
        alertname: LedgerValidatorNotSigning
        exp_alerts:
          - exp_labels: { severity: high, validator: bb }
            exp_annotations:
              summary: 'Validator bb is not signing'
              description: 'No node saw a vote from validator bb in 5m while blocks were finalized. (A validator removed by governance shows here until the nodes restart.)'
"#;

#[test]
fn monitoring_refuses_a_missing_state_dir_and_a_bad_ledger_url_and_writes_nothing() {
    let f = Fleet::new("monbad");
    let run = |extra: &[&str]| {
        let mut c = f.cmd(&["monitoring", "fleet.yaml", "--out", "out"]);
        c.args(extra);
        c.output().unwrap()
    };
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("check --state-dir"), "{err}");
    assert!(!f.path("s").exists(), "reading created the state dir");
    let out = run(&["--ledger", "127.0.0.1:8700"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("`127.0.0.1:8700` is not an http://"), "{err}");
    assert!(!f.path("out").exists(), "wrote files after an error");
}

/// What the dashboards' variables stand for when their queries are run directly.
fn concrete(expr: &str, fleet: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$fleet", fleet)
        .replace("$service", ".*")
        .replace("$site", ".*")
        .replace("$node", ".*")
}

/// Every `phoenix_ledger_*` name in `text`.
fn ledger_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("phoenix_ledger_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn a_real_prometheus_scrapes_the_deployed_fleet_and_a_ledger_node() {
    let test = "a_real_prometheus_scrapes_the_deployed_fleet_and_a_ledger_node";
    let Some(prometheus) = prometheus_tool("prometheus", test) else {
        return;
    };
    let f = Fleet::new("monlive");
    f.ok(&["apply", "fleet.yaml", "--yes"]);

    // A one-validator ledger on loopback.
    let (api, p2p) = (free_port(), free_port());
    let ledger_dir = f.path("ledger");
    let mut testnet = Command::new(BIN);
    testnet
        .args(["ledger", "testnet", "--validators", "1", "--dir"])
        .arg(&ledger_dir)
        .args(["--api-base-port", &api.to_string()])
        .args(["--p2p-base-port", &p2p.to_string()]);
    run_ok(testnet);
    let mut node = Command::new(BIN);
    node.args(["ledger", "run", "--home"])
        .arg(ledger_dir.join("node-0"));
    let mut node = Started::spawn("the ledger node", node, f.path("ledger.log"));

    let ledger_url = format!("http://127.0.0.1:{api}");
    f.ok(&[
        "monitoring",
        "fleet.yaml",
        "--out",
        "out",
        "--ledger",
        &ledger_url,
    ]);
    let out = f.path("out");

    let web = free_port();
    let mut cmd = Command::new(&prometheus);
    cmd.arg(format!(
        "--config.file={}",
        out.join("prometheus.yml").display()
    ))
    .arg(format!("--storage.tsdb.path={}", f.path("tsdb").display()))
    .arg(format!("--web.listen-address=127.0.0.1:{web}"));
    let mut prom = Started::spawn("prometheus", cmd, f.path("prometheus.log"));

    // Every target up, and every rule evaluated without error: bounded (the first scrape of a
    // target comes within one 15 s scrape interval of the start).
    let expected: Vec<String> = f
        .ports("app", "http")
        .iter()
        .map(|(_, p)| format!("127.0.0.1:{p}"))
        .chain([format!("127.0.0.1:{api}")])
        .collect();
    let end = Instant::now() + Duration::from_secs(40);
    let (targets, rules) = loop {
        prom.assert_running();
        node.assert_running();
        let targets = get_json(web, "/api/v1/targets?state=active");
        let rules = get_json(web, "/api/v1/rules");
        if let (Some(t), Some(r)) = (&targets, &rules) {
            let active = t["data"]["activeTargets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let all_up =
                active.len() == expected.len() && active.iter().all(|a| a["health"] == "up");
            let evaluated = r["data"]["groups"].as_array().is_some_and(|g| {
                g.iter()
                    .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                    .all(|rule| rule["health"] == "ok")
            });
            if all_up && evaluated {
                break (active, r.clone());
            }
        }
        assert!(
            Instant::now() < end,
            "targets not all up or rules not evaluated within 40 s:\n{targets:#?}\n{rules:#?}\nprometheus log:\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let mut addresses: Vec<String> = targets
        .iter()
        .map(|t| {
            t["discoveredLabels"]["__address__"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    addresses.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(addresses, want);
    for t in &targets {
        let labels = &t["labels"];
        assert_eq!(labels["fleet"], "monlive", "{t}");
        if labels["job"] == "ledger" {
            assert_eq!(labels["service"], "ledger", "{t}");
        } else {
            assert_eq!(labels["job"], "monlive/app", "{t}");
            assert!(
                labels["instance"].as_str().unwrap().starts_with("app-"),
                "{t}"
            );
            assert_eq!(labels["site"], "local", "{t}");
        }
    }

    // The ledger metrics the rules and the dashboard name are the ones the node exports.
    let exported: Vec<String> = get_json(web, "/api/v1/label/__name__/values").unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let ledger_dashboard = read(&out.join("dashboards/ledger.json"));
    let used = ledger_names(&format!("{rules}{ledger_dashboard}"));
    assert!(used.len() >= 10, "{used:?}");
    for name in &used {
        assert!(
            exported.contains(name),
            "{name} is not exported by the ledger node: {exported:?}"
        );
    }
    assert!(exported.contains(&"http_requests_total".to_string()));

    // Every dashboard query is valid PromQL, and the fleet's and ledger's headline panels
    // have data.
    for (file, fleet) in [("fleet", "monlive"), ("ledger", "")] {
        let d: Value =
            serde_json::from_str(&read(&out.join(format!("dashboards/{file}.json")))).unwrap();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let expr = concrete(t["expr"].as_str().unwrap(), fleet);
                let path = format!("/api/v1/query?query={}", percent_encode(&expr));
                let v = get_json(web, &path).unwrap_or_default();
                assert_eq!(
                    v["status"], "success",
                    "{file} panel {}: {expr}: {v}",
                    p["title"]
                );
            }
        }
    }
    let up = get_json(
        web,
        &format!(
            "/api/v1/query?query={}",
            percent_encode("sum(up{fleet=\"monlive\"})")
        ),
    )
    .unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "3", "{up}");
    drop(prom);
    drop(node);
}
