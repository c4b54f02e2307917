//! The health-check kinds beyond `http`, `tcp` and `command` (extensions): `json`, `metrics`
//! and `ledger`, parsed with their defaults, and their mistakes reported where they are.

use phoenix_spec::{Diagnostic, Fleet, HealthCheck, parse_sources};

// Line 7 is `services:`; a service's `health:` in these tests is on line 12.
const BASE: &str = "phoenix: 1\nname: demo\nsites:\n  - name: core-1\n    tier: core\n    capacity: { cpu: 8, memory: 16Gi, storage: 100G }\nservices:\n  - name: node\n    command: [\"sleep\", \"60\"]\n    ports: [api, http]\n    stop_grace: 1s\n    health:\n";

fn parse(health: &str) -> Result<Fleet, Vec<Diagnostic>> {
    let yaml = format!("{BASE}{health}");
    parse_sources(&[("f.yaml".to_string(), yaml)], None).map_err(|d| d.items)
}

fn checks(health: &str) -> Vec<HealthCheck> {
    let f = parse(health).unwrap_or_else(|d| panic!("{d:#?}"));
    f.service("node").unwrap().health.clone().unwrap().checks
}

/// The one error with `code` on `line`, whose message contains `msg`.
#[track_caller]
fn expect(health: &str, code: &str, line: usize, msg: &str) {
    let all = parse(health).expect_err("expected errors");
    let found: Vec<&Diagnostic> = all.iter().filter(|d| d.code == code).collect();
    assert_eq!(found.len(), 1, "one `{code}` expected in {all:#?}");
    let loc = found[0].location.as_ref().expect("located");
    assert_eq!(loc.line, line, "{:#?}", found[0]);
    assert!(
        found[0].message.contains(msg),
        "message {:?} lacks {msg:?}",
        found[0].message
    );
}

#[test]
fn neo_readiness_is_two_json_documents_and_ten_metric_families() {
    let got = checks(
        "      json:\n        - { url: \"http://127.0.0.1:${http}/health\", expect: { status: Healthy } }\n        - { url: \"http://127.0.0.1:${http}/api/info\", expect: { version: \"1.4.2\", build.ok: true } }\n      metrics: { url: \"http://127.0.0.1:${http}/metrics\", min_families: 10 }\n",
    );
    assert_eq!(
        got,
        vec![
            HealthCheck::Json {
                url: "http://127.0.0.1:${http}/health".into(),
                expect: vec![("status".into(), "Healthy".into())],
            },
            HealthCheck::Json {
                url: "http://127.0.0.1:${http}/api/info".into(),
                expect: vec![
                    ("version".into(), "1.4.2".into()),
                    ("build.ok".into(), "true".into())
                ],
            },
            HealthCheck::Metrics {
                url: "http://127.0.0.1:${http}/metrics".into(),
                min_families: 10,
            },
        ]
    );
}

#[test]
fn short_forms_and_ledger_defaults() {
    let got = checks(
        "      json: { url: \"http://127.0.0.1:${http}/\", expect: { ok: true } }\n      metrics: \"http://127.0.0.1:${http}/metrics\"\n      ledger: { api: \"http://127.0.0.1:${api}\" }\n",
    );
    assert_eq!(
        got[1],
        HealthCheck::Metrics {
            url: "http://127.0.0.1:${http}/metrics".into(),
            min_families: 1
        }
    );
    assert_eq!(
        got[2],
        HealthCheck::Ledger {
            api: "http://127.0.0.1:${api}".into(),
            min_peers: 0,
            max_lag: 10,
            advance_within_ms: 3_000,
        }
    );
    let got = checks(
        "      ledger: { api: \"http://127.0.0.1:${api}\", min_peers: 3, max_lag: 2, advance_within: 5s }\n      timeout: 60s\n",
    );
    assert_eq!(
        got,
        vec![HealthCheck::Ledger {
            api: "http://127.0.0.1:${api}".into(),
            min_peers: 3,
            max_lag: 2,
            advance_within_ms: 5_000,
        }]
    );
}

#[test]
fn mistakes_are_named_where_they_are() {
    expect(
        "      ledger: { api: \"http://127.0.0.1:${nope}\" }\n",
        "unknown-substitution",
        13,
        "nope",
    );
    expect(
        "      ledger: { api: \"127.0.0.1:8700\" }\n",
        "bad-value",
        13,
        "not an http:// URL",
    );
    expect(
        "      ledger: { api: \"http://127.0.0.1:${api}\", min_peer: 3 }\n",
        "unknown-field",
        13,
        "min_peer",
    );
    expect(
        "      ledger: { api: \"http://127.0.0.1:${api}\", advance_within: 2m }\n",
        "bad-value",
        13,
        "at most 60s",
    );
    expect(
        "      json: { url: \"http://127.0.0.1:${http}/\", expect: {} }\n",
        "missing-field",
        13,
        "expects nothing",
    );
    expect(
        "      json: { url: \"http://127.0.0.1:${http}/\", expect: { status: [a, b] } }\n",
        "wrong-type",
        13,
        "must be text",
    );
    expect(
        "      json: { url: \"http://127.0.0.1:${http}/\", expect: { \"a..b\": x } }\n",
        "bad-value",
        13,
        "not a path",
    );
    expect(
        "      metrics: { min_families: 3 }\n",
        "missing-field",
        13,
        "`url`",
    );
    expect("      interval: 1s\n", "missing-field", 13, "has no check");
}
