//! What `phoenix monitoring` writes, as a pure function of the fleet spec, the fleet's instance
//! records and the ledger nodes named: the Prometheus scrape configuration, the alert rules and
//! two Grafana dashboards. No I/O, no clock: the same inputs give byte-identical files.

use super::yaml::{self, commented, list, map, s};
use anyhow::bail;
use phoenix_spec::Fleet;
use phoenix_state::{DesiredState, InstanceState};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The scrape configuration, relative to the output directory.
pub(crate) const PROMETHEUS_FILE: &str = "prometheus.yml";
/// The alert rules (named by `rule_files` in the scrape configuration).
pub(crate) const ALERTS_FILE: &str = "alerts.yml";
/// The fleet's Grafana dashboard.
pub(crate) const FLEET_DASHBOARD: &str = "dashboards/fleet.json";
/// The ledger's Grafana dashboard.
pub(crate) const LEDGER_DASHBOARD: &str = "dashboards/ledger.json";

/// Every file this module writes: what the command may overwrite in the output directory, and
/// nothing else.
pub(crate) const FILES: [&str; 4] = [
    PROMETHEUS_FILE,
    ALERTS_FILE,
    FLEET_DASHBOARD,
    LEDGER_DASHBOARD,
];

// The thresholds of the XAI deployment's alert table (seed 003, "Alert Thresholds"), written
// once: the rules and the dashboards' thresholds both use them.
/// CPU used, percent, for [`CPU_FOR`].
const CPU_PERCENT: u32 = 80;
/// How long the CPU must stay above [`CPU_PERCENT`].
const CPU_FOR: &str = "5m";
/// Memory used, percent.
const MEMORY_PERCENT: u32 = 85;
/// Free disk space, percent.
const DISK_FREE_PERCENT: u32 = 10;
/// Share of API requests that fail (5xx).
const API_ERROR_RATIO: f64 = 0.01;
/// Blocks a node's finalized height may trail the network's.
const SYNC_LAG_BLOCKS: u32 = 10;
/// Fewest peers a ledger node should hear from.
const MIN_PEERS: u32 = 3;
// The ledger's own (not in the seed's table).
/// View changes (nullified views) per second that mean consensus keeps timing out: one every
/// 20 s, sustained over 5 minutes. A healthy network with an honest leader has none.
const VIEW_CHANGES_PER_S: f64 = 0.05;
/// Window in which a finalized height that does not change means finality stalled. The ledger
/// finalizes an empty block every second when idle (`--empty-block-ms`, default 1000), so two
/// minutes without one is far outside normal.
const FINALITY_WINDOW: &str = "2m";
/// Window in which a validator with no vote seen by any node, while blocks were finalized,
/// counts as not signing.
const SIGNING_WINDOW: &str = "5m";
/// How long a condition the seed gives no duration for must hold before it fires: long enough
/// that one odd scrape does not page anyone.
const DEFAULT_FOR: &str = "1m";

/// A ledger node named with `--ledger`, as Prometheus scrapes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LedgerNode {
    /// `http` or `https`.
    scheme: &'static str,
    /// `host:port`.
    address: String,
    /// The node's `/metrics`, under the URL's path if it has one.
    metrics_path: String,
}

impl LedgerNode {
    /// `http` or `https`.
    pub(crate) fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// `host:port`.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// The node's `/metrics` path.
    pub(crate) fn metrics_path(&self) -> &str {
        &self.metrics_path
    }
}

/// A ledger node from its API URL (`http://127.0.0.1:8700`, as `--ledger` takes it elsewhere).
///
/// # Errors
/// Not an `http://` or `https://` URL of a host with an optional port and path.
pub(crate) fn ledger_node(url: &str) -> anyhow::Result<LedgerNode> {
    let url = url.trim();
    let (scheme, rest, default_port) = if let Some(r) = url.strip_prefix("http://") {
        ("http", r, 80)
    } else if let Some(r) = url.strip_prefix("https://") {
        ("https", r, 443)
    } else {
        bail!("ledger URL `{url}` is not an http:// or https:// URL (e.g. http://127.0.0.1:8700)");
    };
    if rest.contains(['?', '#']) {
        bail!("ledger URL `{url}` has a query or fragment: give the node's API URL alone");
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        bail!("ledger URL `{url}` carries credentials: the node's API takes none");
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, tail)) => (format!("[{h}]"), tail.strip_prefix(':')),
            None => bail!("ledger URL `{url}` has an unclosed `[` in its host"),
        },
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        },
    };
    if host.is_empty() || host == "[]" {
        bail!("ledger URL `{url}` names no host");
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => bail!("ledger URL `{url}` has `{p}` for a port (1-65535)"),
        },
    };
    let path = path.trim_end_matches('/');
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("ledger URL `{url}` has white space in its path");
    }
    let metrics_path = if path.is_empty() {
        "/metrics".to_string()
    } else {
        format!("/{path}/metrics")
    };
    Ok(LedgerNode {
        scheme,
        address: format!("{host}:{port}"),
        metrics_path,
    })
}

/// One scrape target with its labels, in the order they are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `host:port`.
    pub(crate) address: String,
    /// `fleet`, `service`, `instance`, `site`, `unit`, as far as known.
    pub(crate) labels: Vec<(&'static str, String)>,
}

/// One scrape job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job {
    /// `FLEET/SERVICE`, or `ledger`.
    pub(crate) name: String,
    scheme: &'static str,
    metrics_path: String,
    comment: String,
    /// Its targets.
    pub(crate) targets: Vec<Target>,
}

impl Job {
    /// `http` or `https` (what Prometheus' `__scheme__` is for this job).
    pub(crate) fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The path its targets serve metrics at (Prometheus' `__metrics_path__`).
    pub(crate) fn metrics_path(&self) -> &str {
        &self.metrics_path
    }

    /// Whether it scrapes ledger nodes named with `--ledger` (not a service of the fleet).
    pub(crate) fn is_ledger(&self) -> bool {
        !self.name.contains('/')
    }
}

/// The files, and what the command reports about them.
#[derive(Debug)]
pub(crate) struct Generated {
    /// `(path relative to the output directory, contents)` for each of [`FILES`].
    pub(crate) files: Vec<(&'static str, String)>,
    /// The scrape jobs written, for the summary.
    pub(crate) jobs: Vec<Job>,
    /// Deployed units or ledger nodes left out or merged, each with the reason.
    pub(crate) notes: Vec<String>,
    /// Alert rules written.
    pub(crate) rules: usize,
}

/// Everything `phoenix monitoring` writes for `fleet`, whose units are `records` (the state
/// store's instance records), and the ledger nodes `ledger`.
pub(crate) fn generate(
    fleet: &Fleet,
    records: &[InstanceState],
    ledger: &[LedgerNode],
) -> Generated {
    let (jobs, notes) = scrape_jobs(fleet, records, ledger);
    let groups = rule_groups();
    let rules = groups.iter().map(|g| g.rules.len()).sum();
    let json = |v: &Value| {
        let mut text = serde_json::to_string_pretty(v).expect("a dashboard is plain JSON");
        text.push('\n');
        text
    };
    Generated {
        files: vec![
            (PROMETHEUS_FILE, prometheus_yml(&fleet.name, &jobs)),
            (ALERTS_FILE, alerts_yml(&groups)),
            (FLEET_DASHBOARD, json(&fleet_dashboard(&fleet.name))),
            (LEDGER_DASHBOARD, json(&ledger_dashboard())),
        ],
        jobs,
        notes,
        rules,
    }
}

/// The address Prometheus reaches a unit's ports on, from the endpoint that runs it: a local
/// agent or a local Docker engine publish on loopback; an SSH host or a remote Docker engine
/// is reached at its own name. (A unit on a remote host must listen where Prometheus can
/// reach it; that is the service's command's business.)
fn scrape_host(endpoint: &str) -> String {
    let host_of = |authority: &str| -> String {
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if let Some(v6) = authority.strip_prefix('[') {
            return format!("[{}]", v6.split(']').next().unwrap_or_default());
        }
        authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_string()
    };
    if let Some(rest) = endpoint.strip_prefix("ssh://") {
        return host_of(rest.split('/').next().unwrap_or_default());
    }
    if let Some(rest) = endpoint.strip_prefix("docker://") {
        for scheme in ["tcp://", "http://", "https://"] {
            if let Some(remote) = rest.strip_prefix(scheme) {
                let host = host_of(remote.split('/').next().unwrap_or_default());
                if !host.is_empty() {
                    return host;
                }
            }
        }
    }
    // `local://HOST/STATE_DIR`, a Docker socket, or a record older than endpoints.
    "127.0.0.1".to_string()
}

/// The ports an instance record says were allocated (`{"port": 8080}`); `None` when there are
/// none yet (a unit being started) or the record is not such a map.
fn allocated_ports(record: &InstanceState) -> Option<BTreeMap<String, u16>> {
    serde_json::from_value(record.ports.clone())
        .ok()
        .filter(|p: &BTreeMap<String, u16>| !p.is_empty())
}

fn scrape_jobs(
    fleet: &Fleet,
    records: &[InstanceState],
    ledger: &[LedgerNode],
) -> (Vec<Job>, Vec<String>) {
    let mut notes = Vec::new();
    // Units the fleet runs: those the engine wants running. A record whose unit is being
    // stopped or replaced is desired `stopped`, and is deleted once it is.
    let running: Vec<&InstanceState> = records
        .iter()
        .filter(|r| r.desired == DesiredState::Running)
        .collect();
    let mut jobs = Vec::new();
    for service in &fleet.services {
        let Some(m) = &service.metrics else { continue };
        let mut targets = Vec::new();
        for r in running.iter().filter(|r| r.service == service.name) {
            let port = allocated_ports(r).and_then(|p| p.get(&m.port).copied());
            let Some(port) = port else {
                notes.push(format!(
                    "{}: no port `{}` is recorded for this unit (being started, or deployed \
                     before the port was declared: apply again); left out",
                    r.unit, m.port
                ));
                continue;
            };
            targets.push(Target {
                address: format!("{}:{port}", scrape_host(&r.endpoint)),
                labels: unit_labels(&fleet.name, r),
            });
        }
        if targets.is_empty() {
            notes.push(format!(
                "service {} exposes metrics but has no deployed instance; no job written",
                service.name
            ));
            continue;
        }
        jobs.push(Job {
            name: format!("{}/{}", fleet.name, service.name),
            scheme: "http",
            metrics_path: m.path.clone(),
            comment: format!(
                "Service {}: each deployed unit at its port `{}`.",
                service.name, m.port
            ),
            targets,
        });
    }
    for r in &running {
        if !fleet.services.iter().any(|s| s.name == r.service) {
            notes.push(format!(
                "{}: service {} is not in the spec files given; left out",
                r.unit, r.service
            ));
        }
    }
    // A ledger node the fleet itself runs is labelled as that unit.
    let mut by_address: BTreeMap<String, &InstanceState> = BTreeMap::new();
    for r in &running {
        for port in allocated_ports(r).unwrap_or_default().values() {
            by_address.insert(format!("{}:{port}", scrape_host(&r.endpoint)), r);
        }
    }
    let mut ledger_jobs: Vec<Job> = Vec::new();
    let mut seen = Vec::new();
    for node in ledger {
        let key = (
            node.scheme,
            node.address.as_str(),
            node.metrics_path.as_str(),
        );
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let already = jobs.iter().find(|j| {
            j.scheme == node.scheme
                && j.metrics_path == node.metrics_path
                && j.targets.iter().any(|t| t.address == node.address)
        });
        if let Some(j) = already {
            notes.push(format!(
                "ledger node {} is already scraped by job {}; not repeated",
                node.address, j.name
            ));
            continue;
        }
        let labels = match by_address.get(&node.address) {
            Some(r) => unit_labels(&fleet.name, r),
            None => vec![
                ("fleet", fleet.name.clone()),
                ("service", "ledger".to_string()),
                ("instance", node.address.clone()),
            ],
        };
        let target = Target {
            address: node.address.clone(),
            labels,
        };
        match ledger_jobs
            .iter_mut()
            .find(|j| j.scheme == node.scheme && j.metrics_path == node.metrics_path)
        {
            Some(j) => j.targets.push(target),
            None => {
                let name = match ledger_jobs.len() {
                    0 => "ledger".to_string(),
                    n => format!("ledger-{}", n + 1),
                };
                ledger_jobs.push(Job {
                    name,
                    scheme: node.scheme,
                    metrics_path: node.metrics_path.clone(),
                    comment: "Ledger nodes (--ledger): their API's /metrics.".to_string(),
                    targets: vec![target],
                });
            }
        }
    }
    jobs.extend(ledger_jobs);
    (jobs, notes)
}

fn unit_labels(fleet: &str, r: &InstanceState) -> Vec<(&'static str, String)> {
    vec![
        ("fleet", fleet.to_string()),
        ("service", r.service.clone()),
        ("instance", r.instance.clone()),
        ("site", r.site.clone()),
        ("unit", r.unit.to_string()),
    ]
}

fn prometheus_yml(fleet: &str, jobs: &[Job]) -> String {
    let scrape_configs = jobs.iter().map(|j| {
        let mut entries = vec![("job_name", s(&j.name))];
        if j.scheme != "http" {
            entries.push(("scheme", s(j.scheme)));
        }
        entries.push(("metrics_path", s(&j.metrics_path)));
        entries.push((
            "static_configs",
            list(j.targets.iter().map(|t| {
                map([
                    ("targets", list([s(&t.address)])),
                    ("labels", map(t.labels.iter().map(|(k, v)| (*k, s(v))))),
                ])
            })),
        ));
        commented(&j.comment, map(entries))
    });
    let root = map([
        (
            "global",
            map([
                ("scrape_interval", s("15s")),
                ("evaluation_interval", s("15s")),
            ]),
        ),
        ("rule_files", list([s(ALERTS_FILE)])),
        ("scrape_configs", list(scrape_configs)),
    ]);
    yaml::document(
        &format!(
            "Written by `phoenix monitoring` for fleet {fleet}: every deployed unit of a service with\n\
             `metrics:`, at the port its deploy allocated, and the ledger nodes given with --ledger.\n\
             Ports change when units are replaced: run it again after each apply (this file is\n\
             overwritten; keep your own jobs in another file). `instance` is the Phoenix instance\n\
             (`web-0`), not the address."
        ),
        &root,
    )
}

/// A group of alert rules.
struct Group {
    name: &'static str,
    comment: String,
    rules: Vec<Rule>,
}

/// One alert rule.
struct Rule {
    alert: &'static str,
    expr: String,
    for_: &'static str,
    severity: &'static str,
    summary: String,
    description: String,
}

/// Filesystems that are not disks.
const PSEUDO_FS: &str = r#"fstype!~"tmpfs|devtmpfs|ramfs|overlay|squashfs|nsfs|autofs""#;

fn rule_groups() -> Vec<Group> {
    let fs = PSEUDO_FS;
    vec![
        Group {
            name: "phoenix-hosts",
            comment: "Host metrics, from node_exporter (its standard names: node_cpu_seconds_total,\n\
                      node_memory_MemAvailable_bytes, node_memory_MemTotal_bytes,\n\
                      node_filesystem_avail_bytes, node_filesystem_size_bytes,\n\
                      node_filesystem_readonly). Phoenix does not run node_exporter: deploy it as\n\
                      a service with `metrics:`, or add its job to the scrape configuration."
                .to_string(),
            rules: vec![
                Rule {
                    alert: "HostCpuHigh",
                    expr: format!(
                        r#"100 * (1 - avg without (cpu, mode) (rate(node_cpu_seconds_total{{mode="idle"}}[5m]))) > {CPU_PERCENT}"#
                    ),
                    for_: CPU_FOR,
                    severity: "critical",
                    summary: format!("CPU above {CPU_PERCENT}% for {CPU_FOR} on {{{{ $labels.instance }}}}"),
                    description: "CPU busy {{ $value | printf \"%.0f\" }}% (site {{ $labels.site }})."
                        .to_string(),
                },
                Rule {
                    alert: "HostMemoryHigh",
                    expr: format!(
                        "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes) > {MEMORY_PERCENT}"
                    ),
                    for_: DEFAULT_FOR,
                    severity: "high",
                    summary: format!("Memory above {MEMORY_PERCENT}% on {{{{ $labels.instance }}}}"),
                    description: "Memory used {{ $value | printf \"%.0f\" }}% (site {{ $labels.site }})."
                        .to_string(),
                },
                Rule {
                    alert: "HostDiskSpaceLow",
                    expr: format!(
                        "100 * node_filesystem_avail_bytes{{{fs}}} / node_filesystem_size_bytes{{{fs}}} < {DISK_FREE_PERCENT} and node_filesystem_readonly{{{fs}}} == 0"
                    ),
                    for_: DEFAULT_FOR,
                    severity: "critical",
                    summary: format!(
                        "Less than {DISK_FREE_PERCENT}% disk space left on {{{{ $labels.instance }}}} {{{{ $labels.mountpoint }}}}"
                    ),
                    description: "{{ $value | printf \"%.1f\" }}% available on {{ $labels.mountpoint }} ({{ $labels.device }})."
                        .to_string(),
                },
            ],
        },
        Group {
            name: "phoenix-services",
            comment: "From each service's own metrics (`metrics:`). Expected: http_requests_total, a\n\
                      counter of HTTP requests served with the status code in label `code` (the\n\
                      name and label of Go's promhttp and of most HTTP instrumentation libraries).\n\
                      A service that names them otherwise needs a rule of its own. `up` is\n\
                      Prometheus's own, for every target."
                .to_string(),
            rules: vec![
                Rule {
                    alert: "ApiErrorRateHigh",
                    expr: format!(
                        r#"sum by (fleet, service) (rate(http_requests_total{{code=~"5.."}}[5m])) / sum by (fleet, service) (rate(http_requests_total[5m])) > {API_ERROR_RATIO}"#
                    ),
                    for_: DEFAULT_FOR,
                    severity: "high",
                    summary: format!(
                        "More than {}% of requests to {{{{ $labels.fleet }}}}/{{{{ $labels.service }}}} fail",
                        API_ERROR_RATIO * 100.0
                    ),
                    description: "{{ $value | humanizePercentage }} of requests answered 5xx over 5m."
                        .to_string(),
                },
                Rule {
                    alert: "TargetDown",
                    expr: r#"up{fleet!=""} == 0"#.to_string(),
                    for_: DEFAULT_FOR,
                    severity: "high",
                    summary: "{{ $labels.fleet }}/{{ $labels.instance }} cannot be scraped".to_string(),
                    description: "Prometheus cannot scrape {{ $labels.service }} instance {{ $labels.instance }} on site {{ $labels.site }}: stopped, failing, or not listening where the deploy said."
                        .to_string(),
                },
            ],
        },
        Group {
            name: "phoenix-ledger",
            comment: "From the ledger nodes' /metrics (`phoenix ledger run`), under the names\n\
                      crates/ledger/node/src/api.rs exports: phoenix_ledger_finalized_height,\n\
                      phoenix_ledger_network_finalized_height, phoenix_ledger_peers,\n\
                      phoenix_ledger_view_changes_total, phoenix_ledger_validator_votes_total."
                .to_string(),
            rules: vec![
                Rule {
                    alert: "LedgerSyncLag",
                    expr: format!(
                        "phoenix_ledger_network_finalized_height - phoenix_ledger_finalized_height > {SYNC_LAG_BLOCKS}"
                    ),
                    for_: DEFAULT_FOR,
                    severity: "medium",
                    summary: format!(
                        "Ledger node {{{{ $labels.instance }}}} is more than {SYNC_LAG_BLOCKS} blocks behind"
                    ),
                    description: "{{ $value }} finalized blocks behind the network.".to_string(),
                },
                Rule {
                    alert: "LedgerPeersLow",
                    expr: format!("phoenix_ledger_peers < {MIN_PEERS}"),
                    for_: DEFAULT_FOR,
                    severity: "medium",
                    summary: format!(
                        "Ledger node {{{{ $labels.instance }}}} hears from fewer than {MIN_PEERS} peers"
                    ),
                    description: "Validators heard from in the last 10 s: {{ $value }}.".to_string(),
                },
                Rule {
                    alert: "LedgerFinalityStalled",
                    expr: format!("changes(phoenix_ledger_finalized_height[{FINALITY_WINDOW}]) == 0"),
                    for_: DEFAULT_FOR,
                    severity: "critical",
                    summary: "Ledger finality stalled at {{ $labels.instance }}".to_string(),
                    description: format!(
                        "The finalized height has not advanced for {FINALITY_WINDOW}; an idle chain still finalizes an empty block every second."
                    ),
                },
                Rule {
                    alert: "LedgerViewChangesHigh",
                    expr: format!("rate(phoenix_ledger_view_changes_total[5m]) > {VIEW_CHANGES_PER_S}"),
                    for_: "5m",
                    severity: "high",
                    summary: "Ledger consensus keeps changing views at {{ $labels.instance }}".to_string(),
                    description: "{{ $value | printf \"%.2f\" }} nullified views per second: leaders time out (a validator down or partitioned)."
                        .to_string(),
                },
                Rule {
                    alert: "LedgerValidatorNotSigning",
                    expr: format!(
                        "max by (validator) (increase(phoenix_ledger_validator_votes_total[{SIGNING_WINDOW}])) == 0 and on () (max(changes(phoenix_ledger_finalized_height[{SIGNING_WINDOW}])) > 0)"
                    ),
                    for_: DEFAULT_FOR,
                    severity: "high",
                    summary: "Validator {{ $labels.validator }} is not signing".to_string(),
                    description: format!(
                        "No node saw a vote from validator {{{{ $labels.validator }}}} in {SIGNING_WINDOW} while blocks were finalized. (A validator removed by governance shows here until the nodes restart.)"
                    ),
                },
            ],
        },
    ]
}

fn alerts_yml(groups: &[Group]) -> String {
    let groups = groups.iter().map(|g| {
        commented(
            &g.comment,
            map([
                ("name", s(g.name)),
                (
                    "rules",
                    list(g.rules.iter().map(|r| {
                        map([
                            ("alert", s(r.alert)),
                            ("expr", s(&r.expr)),
                            ("for", s(r.for_)),
                            ("labels", map([("severity", s(r.severity))])),
                            (
                                "annotations",
                                map([
                                    ("summary", s(&r.summary)),
                                    ("description", s(&r.description)),
                                ]),
                            ),
                        ])
                    })),
                ),
            ]),
        )
    });
    yaml::document(
        "Written by `phoenix monitoring`: the alert thresholds of the XAI deployment (CPU > 80% for\n\
         5m, memory > 85%, disk < 10% free, API errors > 1%, sync lag > 10 blocks, peers < 3) and\n\
         the ledger's own. Severities as in its table: critical, high, medium. Overwritten on\n\
         every run.",
        &map([("groups", list(groups))]),
    )
}

/// The data source every panel queries: the dashboard's `datasource` variable.
fn datasource() -> Value {
    json!({ "type": "prometheus", "uid": "${datasource}" })
}

/// Which way a threshold points.
#[derive(Clone, Copy)]
enum Bad {
    Above(f64),
    Below(f64),
}

/// One panel: `kind` is a Grafana panel type (`timeseries`, `stat`), `at` is
/// `(x, y, width, height)` on the 24-column grid, `queries` are `(PromQL, legend)`.
fn panel(
    id: u32,
    title: &str,
    kind: &str,
    at: (u32, u32, u32, u32),
    unit: &str,
    bad: Option<Bad>,
    queries: &[(&str, &str)],
) -> Value {
    let steps = match bad {
        None => json!([{ "color": "green", "value": null }]),
        Some(Bad::Above(v)) => {
            json!([{ "color": "green", "value": null }, { "color": "red", "value": v }])
        }
        Some(Bad::Below(v)) => {
            json!([{ "color": "red", "value": null }, { "color": "green", "value": v }])
        }
    };
    let targets: Vec<Value> = queries
        .iter()
        .zip('A'..='Z')
        .map(|((expr, legend), ref_id)| {
            json!({
                "datasource": datasource(),
                "refId": ref_id.to_string(),
                "expr": expr,
                "legendFormat": legend,
                "range": true,
            })
        })
        .collect();
    let mut custom = json!({});
    if bad.is_some() && kind == "timeseries" {
        custom = json!({ "thresholdsStyle": { "mode": "line" } });
    }
    json!({
        "id": id,
        "type": kind,
        "title": title,
        "datasource": datasource(),
        "gridPos": { "x": at.0, "y": at.1, "w": at.2, "h": at.3 },
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": { "mode": "absolute", "steps": steps },
                "custom": custom,
            },
            "overrides": [],
        },
        "options": {},
        "targets": targets,
    })
}

/// A query variable over label values.
fn variable(name: &str, label: &str, query: &str, all: bool, current: Option<&str>) -> Value {
    let mut v = json!({
        "name": name,
        "label": label,
        "type": "query",
        "datasource": datasource(),
        "query": { "query": query, "refId": format!("{name}-values") },
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": all,
        "includeAll": all,
    });
    if all {
        v["allValue"] = json!(".*");
        v["current"] = json!({ "text": "All", "value": "$__all" });
    }
    if let Some(c) = current {
        v["current"] = json!({ "text": c, "value": c });
    }
    v
}

fn dashboard(uid: String, title: String, variables: Vec<Value>, panels: Vec<Value>) -> Value {
    let mut list = vec![json!({
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
    })];
    list.extend(variables);
    json!({
        "uid": uid,
        "title": title,
        "tags": ["phoenix"],
        "description": "Written by `phoenix monitoring`; overwritten on every run.",
        "editable": true,
        "schemaVersion": 39,
        "version": 1,
        "timezone": "browser",
        "time": { "from": "now-1h", "to": "now" },
        "refresh": "30s",
        "graphTooltip": 1,
        "templating": { "list": list },
        "annotations": { "list": [] },
        "links": [],
        "panels": panels,
    })
}

fn fleet_dashboard(fleet: &str) -> Value {
    let sel = r#"fleet="$fleet", service=~"$service", site=~"$site""#;
    let q = |template: &str| template.replace("SEL", sel);
    let up = q("up{SEL}");
    let down = q("count(up{SEL} == 0) or vector(0)");
    let firing = r#"count(ALERTS{alertstate="firing", fleet="$fleet"}) or vector(0)"#;
    let cpu = q(
        r#"100 * (1 - avg without (cpu, mode) (rate(node_cpu_seconds_total{SEL, mode="idle"}[$__rate_interval])))"#,
    );
    let memory =
        q("100 * (1 - node_memory_MemAvailable_bytes{SEL} / node_memory_MemTotal_bytes{SEL})");
    let fs = format!("{sel}, {PSEUDO_FS}");
    let disk = q(&format!(
        "min without (device, fstype, mountpoint) (100 * node_filesystem_avail_bytes{{{fs}}} / node_filesystem_size_bytes{{{fs}}})"
    ));
    let requests = q("sum by (service) (rate(http_requests_total{SEL}[$__rate_interval]))");
    let errors = q(
        r#"sum by (service) (rate(http_requests_total{SEL, code=~"5.."}[$__rate_interval])) / sum by (service) (rate(http_requests_total{SEL}[$__rate_interval]))"#,
    );
    let duration = q("scrape_duration_seconds{SEL}");
    let samples = q("scrape_samples_scraped{SEL}");
    let who = "{{service}} {{instance}} ({{site}})";
    let panels = vec![
        panel(
            1,
            "Targets up",
            "stat",
            (0, 0, 8, 4),
            "none",
            None,
            &[(&format!("sum({up})"), "up")],
        ),
        panel(
            2,
            "Targets down",
            "stat",
            (8, 0, 8, 4),
            "none",
            Some(Bad::Above(1.0)),
            &[(&down, "down")],
        ),
        panel(
            3,
            "Alerts firing",
            "stat",
            (16, 0, 8, 4),
            "none",
            Some(Bad::Above(1.0)),
            &[(firing, "firing")],
        ),
        panel(
            4,
            "Up, by instance",
            "timeseries",
            (0, 4, 24, 8),
            "none",
            Some(Bad::Below(1.0)),
            &[(&up, who)],
        ),
        panel(
            5,
            "CPU used",
            "timeseries",
            (0, 12, 8, 8),
            "percent",
            Some(Bad::Above(f64::from(CPU_PERCENT))),
            &[(&cpu, who)],
        ),
        panel(
            6,
            "Memory used",
            "timeseries",
            (8, 12, 8, 8),
            "percent",
            Some(Bad::Above(f64::from(MEMORY_PERCENT))),
            &[(&memory, who)],
        ),
        panel(
            7,
            "Disk free (fullest filesystem)",
            "timeseries",
            (16, 12, 8, 8),
            "percent",
            Some(Bad::Below(f64::from(DISK_FREE_PERCENT))),
            &[(&disk, who)],
        ),
        panel(
            8,
            "HTTP requests per second",
            "timeseries",
            (0, 20, 12, 8),
            "reqps",
            None,
            &[(&requests, "{{service}}")],
        ),
        panel(
            9,
            "HTTP 5xx ratio",
            "timeseries",
            (12, 20, 12, 8),
            "percentunit",
            Some(Bad::Above(API_ERROR_RATIO)),
            &[(&errors, "{{service}}")],
        ),
        panel(
            10,
            "Scrape duration",
            "timeseries",
            (0, 28, 12, 8),
            "s",
            None,
            &[(&duration, who)],
        ),
        panel(
            11,
            "Samples per scrape",
            "timeseries",
            (12, 28, 12, 8),
            "none",
            None,
            &[(&samples, who)],
        ),
    ];
    let variables = vec![
        variable(
            "fleet",
            "Fleet",
            r#"label_values(up{fleet!=""}, fleet)"#,
            false,
            Some(fleet),
        ),
        variable(
            "service",
            "Service",
            r#"label_values(up{fleet="$fleet"}, service)"#,
            true,
            None,
        ),
        variable(
            "site",
            "Site",
            r#"label_values(up{fleet="$fleet"}, site)"#,
            true,
            None,
        ),
    ];
    let uid: String = format!("phoenix-fleet-{fleet}").chars().take(40).collect();
    dashboard(uid, format!("Phoenix fleet {fleet}"), variables, panels)
}

fn ledger_dashboard() -> Value {
    let sel = r#"instance=~"$node""#;
    let q = |template: &str| template.replace("SEL", sel);
    let height = q("phoenix_ledger_finalized_height{SEL}");
    let network = q("phoenix_ledger_network_finalized_height{SEL}");
    let lag =
        q("phoenix_ledger_network_finalized_height{SEL} - phoenix_ledger_finalized_height{SEL}");
    let peers = q("phoenix_ledger_peers{SEL}");
    let blocks = q("deriv(phoenix_ledger_finalized_height{SEL}[$__rate_interval])");
    let view_changes = q("rate(phoenix_ledger_view_changes_total{SEL}[$__rate_interval])");
    let view = q("phoenix_ledger_view{SEL}");
    let votes = q(
        r#"sum by (validator) (rate(phoenix_ledger_validator_votes_total{SEL, kind!="nullify"}[$__rate_interval]))"#,
    );
    let behind = q(
        "max(phoenix_ledger_view{SEL}) - on () group_right () max by (validator) (phoenix_ledger_validator_last_vote_view{SEL})",
    );
    let committed = q("rate(phoenix_ledger_tx_committed_total{SEL}[$__rate_interval])");
    let admitted = q("rate(phoenix_ledger_tx_admitted_total{SEL}[$__rate_interval])");
    let refused = q("rate(phoenix_ledger_tx_refused_total{SEL}[$__rate_interval])");
    let mempool = q("phoenix_ledger_mempool_size{SEL}");
    let equivocations = q("increase(phoenix_ledger_equivocations_total{SEL}[$__rate_interval])");
    let invalid = q("increase(phoenix_ledger_blocks_invalid_total{SEL}[$__rate_interval])");
    let node = "{{instance}}";
    let panels = vec![
        panel(
            1,
            "Finalized height",
            "stat",
            (0, 0, 6, 4),
            "none",
            None,
            &[(&format!("max({height})"), "height")],
        ),
        panel(
            2,
            "Sync lag (worst node)",
            "stat",
            (6, 0, 6, 4),
            "none",
            Some(Bad::Above(f64::from(SYNC_LAG_BLOCKS))),
            &[(&format!("max({lag})"), "blocks")],
        ),
        panel(
            3,
            "Peers (fewest)",
            "stat",
            (12, 0, 6, 4),
            "none",
            Some(Bad::Below(f64::from(MIN_PEERS))),
            &[(&format!("min({peers})"), "peers")],
        ),
        panel(
            4,
            "Epoch",
            "stat",
            (18, 0, 6, 4),
            "none",
            None,
            &[(&q("max(phoenix_ledger_epoch{SEL})"), "epoch")],
        ),
        panel(
            5,
            "Finalized height: node and network",
            "timeseries",
            (0, 4, 12, 8),
            "none",
            None,
            &[
                (&height, "{{instance}}"),
                (&network, "{{instance}} network"),
            ],
        ),
        panel(
            6,
            "Blocks finalized per second",
            "timeseries",
            (12, 4, 12, 8),
            "none",
            None,
            &[(&blocks, node)],
        ),
        panel(
            7,
            "Sync lag",
            "timeseries",
            (0, 12, 12, 8),
            "none",
            Some(Bad::Above(f64::from(SYNC_LAG_BLOCKS))),
            &[(&lag, node)],
        ),
        panel(
            8,
            "Peers",
            "timeseries",
            (12, 12, 12, 8),
            "none",
            Some(Bad::Below(f64::from(MIN_PEERS))),
            &[(&peers, node)],
        ),
        panel(
            9,
            "View changes per second",
            "timeseries",
            (0, 20, 12, 8),
            "none",
            Some(Bad::Above(VIEW_CHANGES_PER_S)),
            &[(&view_changes, node)],
        ),
        panel(
            10,
            "Consensus view",
            "timeseries",
            (12, 20, 12, 8),
            "none",
            None,
            &[(&view, node)],
        ),
        panel(
            11,
            "Votes per second, by validator (signing liveness)",
            "timeseries",
            (0, 28, 12, 8),
            "none",
            None,
            &[(&votes, "{{validator}}")],
        ),
        panel(
            12,
            "Views since each validator's last vote",
            "timeseries",
            (12, 28, 12, 8),
            "none",
            None,
            &[(&behind, "{{validator}}")],
        ),
        panel(
            13,
            "Transactions per second",
            "timeseries",
            (0, 36, 12, 8),
            "none",
            None,
            &[
                (&committed, "{{instance}} committed"),
                (&admitted, "{{instance}} admitted"),
                (&refused, "{{instance}} refused"),
            ],
        ),
        panel(
            14,
            "Mempool",
            "timeseries",
            (12, 36, 12, 8),
            "none",
            None,
            &[(&mempool, node)],
        ),
        panel(
            15,
            "Faults: equivocations and invalid blocks",
            "timeseries",
            (0, 44, 24, 8),
            "none",
            Some(Bad::Above(1.0)),
            &[
                (&equivocations, "{{instance}} equivocations"),
                (&invalid, "{{instance}} invalid blocks"),
            ],
        ),
    ];
    let variables = vec![variable(
        "node",
        "Node",
        "label_values(phoenix_ledger_finalized_height, instance)",
        true,
        None,
    )];
    dashboard(
        "phoenix-ledger".to_string(),
        "Phoenix ledger".to_string(),
        variables,
        panels,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use phoenix_state::{ObservedState, RevisionNumber, UnitId};

    fn fleet() -> Fleet {
        let yaml = "phoenix: 1\nname: demo\nsites:\n  - name: local\n    tier: core\n    capacity: { cpu: 8, memory: 16Gi }\n  - name: edge\n    tier: edge\n    provider: ssh\n    ssh: { hosts: [deploy@10.0.0.2] }\n    capacity: { cpu: 8, memory: 16Gi }\nservices:\n  - name: api\n    replicas: 2\n    command: [api, '${http}']\n    ports: [http, admin]\n    metrics: { port: admin }\n  - name: worker\n    command: [worker]\n    ports: [port]\n  - name: chain\n    command: [node, '${api}']\n    ports: [api]\n    metrics: { port: api, path: /prom }\n";
        phoenix_spec::parse_sources(&[("f.yaml".into(), yaml.into())], None).unwrap()
    }

    fn record(unit: &str, site: &str, endpoint: &str, ports: Value) -> InstanceState {
        let (instance, rev) = unit.split_once("@r").unwrap();
        let service = instance.rsplit_once('-').unwrap().0;
        InstanceState {
            unit: UnitId::from_raw(unit),
            service: service.into(),
            instance: instance.into(),
            revision: RevisionNumber(rev.parse().unwrap()),
            site: site.into(),
            host: "0".into(),
            endpoint: endpoint.into(),
            desired: DesiredState::Running,
            observed: ObservedState::Running,
            handle: Value::Null,
            ports,
        }
    }

    fn records() -> Vec<InstanceState> {
        let local = "local://box/tmp/s";
        let mut stopping = record(
            "api-0@r1",
            "local",
            local,
            json!({"http": 40001, "admin": 40002}),
        );
        stopping.desired = DesiredState::Stopped;
        vec![
            stopping,
            record(
                "api-0@r2",
                "local",
                local,
                json!({"http": 40011, "admin": 40012}),
            ),
            record(
                "api-1@r2",
                "edge",
                "ssh://deploy@10.0.0.2:22",
                json!({"http": 40021, "admin": 40022}),
            ),
            record("chain-0@r2", "local", local, json!({"api": 8700})),
            record("old-0@r1", "local", local, json!({"port": 1})),
            record("worker-0@r2", "local", local, json!({"port": 40031})),
        ]
    }

    fn ledger() -> Vec<LedgerNode> {
        [
            "http://127.0.0.1:8701",
            "http://127.0.0.1:8701/",
            "http://127.0.0.1:8700",
        ]
        .iter()
        .map(|u| ledger_node(u).unwrap())
        .collect()
    }

    /// The files as committed under `snapshots/`; `PHOENIX_UPDATE_SNAPSHOTS=1` rewrites them.
    fn snapshot(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/monitoring_cmd/snapshots")
            .join(name);
        if std::env::var_os("PHOENIX_UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with PHOENIX_UPDATE_SNAPSHOTS=1 to write it",
                path.display()
            )
        });
        assert!(
            expected == actual,
            "{} differs (PHOENIX_UPDATE_SNAPSHOTS=1 rewrites it); actual:\n{actual}",
            path.display()
        );
    }

    #[test]
    fn generated_files_match_their_snapshots() {
        let g = generate(&fleet(), &records(), &ledger());
        for (name, text) in &g.files {
            snapshot(&name.replace('/', "-"), text);
        }
    }

    #[test]
    fn targets_are_the_running_units_at_their_allocated_ports() {
        let g = generate(&fleet(), &records(), &ledger());
        let jobs: Vec<(&str, Vec<&str>)> = g
            .jobs
            .iter()
            .map(|j| {
                (
                    j.name.as_str(),
                    j.targets.iter().map(|t| t.address.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            jobs,
            [
                ("demo/api", vec!["127.0.0.1:40012", "10.0.0.2:40022"]),
                ("demo/chain", vec!["127.0.0.1:8700"]),
                // 8701 given twice (with and without a trailing `/`) is one target.
                ("ledger", vec!["127.0.0.1:8701", "127.0.0.1:8700"]),
            ]
        );
        let api1 = &g.jobs[0].targets[1].labels;
        assert_eq!(
            api1,
            &[
                ("fleet", "demo".to_string()),
                ("service", "api".to_string()),
                ("instance", "api-1".to_string()),
                ("site", "edge".to_string()),
                ("unit", "api-1@r2".to_string()),
            ]
        );
        // A node the fleet does not run is labelled by its address.
        assert_eq!(
            g.jobs[2].targets[0].labels[2],
            ("instance", "127.0.0.1:8701".to_string())
        );
        let notes = g.notes.join("\n");
        assert!(
            notes.contains("old-0@r1: service old is not in the spec files"),
            "{notes}"
        );
        assert!(
            !notes.contains("worker"),
            "a service without metrics is not mentioned: {notes}"
        );
    }

    #[test]
    fn a_ledger_node_the_fleet_runs_is_labelled_as_its_unit_and_not_scraped_twice() {
        let mut f = fleet();
        let chain = f.services.iter_mut().find(|s| s.name == "chain").unwrap();
        chain.metrics.as_mut().unwrap().path = "/metrics".into();
        let g = generate(&f, &records(), &ledger());
        // The chain unit's own job scrapes 8700's /metrics already: the ledger job keeps 8701.
        let ledger_job = g.jobs.iter().find(|j| j.name == "ledger").unwrap();
        assert_eq!(ledger_job.targets.len(), 1);
        assert!(
            g.notes
                .iter()
                .any(|n| n.contains("127.0.0.1:8700 is already scraped by job demo/chain"))
        );
        // With the chain's own metrics at /prom, its ledger /metrics is a ledger target,
        // labelled as the unit.
        let g = generate(
            &fleet(),
            &records(),
            &[ledger_node("http://127.0.0.1:8700").unwrap()],
        );
        let t = &g.jobs.last().unwrap().targets[0];
        assert_eq!(t.labels[1], ("service", "chain".to_string()));
        assert_eq!(t.labels[3], ("site", "local".to_string()));
    }

    #[test]
    fn units_without_the_metrics_port_and_services_without_units_are_reported() {
        let mut rs = records();
        rs[1].ports = Value::Null;
        rs.retain(|r| !r.unit.as_str().starts_with("chain"));
        let g = generate(&fleet(), &rs, &[]);
        let notes = g.notes.join("\n");
        assert!(
            notes.contains("api-0@r2: no port `admin` is recorded"),
            "{notes}"
        );
        assert!(
            notes.contains("service chain exposes metrics but has no deployed instance"),
            "{notes}"
        );
        assert_eq!(g.jobs.len(), 1);
        assert!(
            !g.files[0].1.contains("job_name: ledger"),
            "no --ledger, no ledger job"
        );
    }

    #[test]
    fn scrape_hosts_follow_the_endpoint() {
        for (endpoint, host) in [
            ("local://box/var/lib/phoenix", "127.0.0.1"),
            ("", "127.0.0.1"),
            ("docker://unix:///var/run/docker.sock", "127.0.0.1"),
            ("docker://tcp://10.0.0.5:2375", "10.0.0.5"),
            ("ssh://deploy@edge-1.example:22", "edge-1.example"),
            ("ssh://deploy@[fd00::2]:2222", "[fd00::2]"),
        ] {
            assert_eq!(scrape_host(endpoint), host, "{endpoint}");
        }
    }

    #[test]
    fn ledger_urls_are_checked() {
        let n = ledger_node("https://ledger.example/api/").unwrap();
        assert_eq!(
            (n.scheme, n.address.as_str(), n.metrics_path.as_str()),
            ("https", "ledger.example:443", "/api/metrics")
        );
        let n = ledger_node("http://[::1]:8700").unwrap();
        assert_eq!(n.address, "[::1]:8700");
        for (bad, says) in [
            ("127.0.0.1:8700", "not an http://"),
            ("http://:8700", "names no host"),
            ("http://h:0", "for a port"),
            ("http://h:x", "for a port"),
            ("http://u:p@h:1", "credentials"),
            ("http://h:1/?a", "query"),
        ] {
            let e = ledger_node(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn thresholds_are_the_seeds() {
        let rules: BTreeMap<&str, Rule> = rule_groups()
            .into_iter()
            .flat_map(|g| g.rules)
            .map(|r| (r.alert, r))
            .collect();
        let expr = |a: &str| rules[a].expr.as_str();
        assert!(expr("HostCpuHigh").ends_with("> 80") && rules["HostCpuHigh"].for_ == "5m");
        assert!(expr("HostMemoryHigh").ends_with("> 85"));
        assert!(expr("HostDiskSpaceLow").contains("< 10 and"));
        assert!(expr("ApiErrorRateHigh").ends_with("> 0.01"));
        assert!(expr("LedgerSyncLag").ends_with("> 10"));
        assert!(expr("LedgerPeersLow").ends_with("< 3"));
        for ledger in [
            "LedgerFinalityStalled",
            "LedgerViewChangesHigh",
            "LedgerValidatorNotSigning",
        ] {
            assert!(rules.contains_key(ledger));
        }
        assert!(
            rules["ApiErrorRateHigh"].summary.contains("More than 1% "),
            "{}",
            rules["ApiErrorRateHigh"].summary
        );
    }

    #[test]
    fn dashboards_are_grafana_dashboards_with_unique_panels_over_the_datasource_variable() {
        for d in [fleet_dashboard("demo"), ledger_dashboard()] {
            assert!(
                d["uid"]
                    .as_str()
                    .is_some_and(|u| !u.is_empty() && u.len() <= 40)
            );
            assert_eq!(d["templating"]["list"][0]["type"], "datasource");
            let panels = d["panels"].as_array().unwrap();
            let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
            ids.dedup();
            assert_eq!(ids.len(), panels.len());
            for p in panels {
                let g = &p["gridPos"];
                assert!(
                    g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
                    "{p}"
                );
                let targets = p["targets"].as_array().unwrap();
                assert!(!targets.is_empty());
                for t in targets {
                    assert_eq!(t["datasource"]["uid"], "${datasource}");
                    assert!(
                        t["expr"].as_str().is_some_and(|e| !e.contains("SEL")),
                        "{t}"
                    );
                }
            }
        }
    }
}
