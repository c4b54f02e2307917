//! `metrics:` on services (an extension): where each instance serves Prometheus metrics.

use phoenix_spec::{Diagnostic, Metrics, parse_sources};

const BASE: &str = "phoenix: 1\nname: demo\nsites:\n  - name: core-1\n    tier: core\n    capacity: { cpu: 8, memory: 16Gi, storage: 100G }\nservices:\n  - name: web\n    ports: [http, admin]\n";

fn parse(yaml: &str) -> Result<phoenix_spec::Fleet, Vec<Diagnostic>> {
    parse_sources(&[("f.yaml".to_string(), yaml.to_string())], None).map_err(|d| d.items)
}

/// The one diagnostic with `code`, at `line:col`, whose hint contains `hint`.
#[track_caller]
fn expect(extra: &str, code: &str, line: usize, col: usize, hint: &str) -> Diagnostic {
    let all = parse(&format!("{BASE}{extra}")).expect_err("expected errors");
    let found: Vec<&Diagnostic> = all.iter().filter(|d| d.code == code).collect();
    assert_eq!(found.len(), 1, "one `{code}` expected in {all:#?}");
    let d = found[0];
    let loc = d.location.as_ref().expect("located");
    assert_eq!((loc.line, loc.col), (line, col), "{d:#?}");
    let h = d.hint.as_deref().unwrap_or("");
    assert!(h.contains(hint), "hint {h:?} lacks {hint:?}");
    d.clone()
}

#[test]
fn metrics_names_a_port_and_the_path_defaults_to_slash_metrics() {
    let f = parse(&format!("{BASE}    metrics: {{ port: admin }}\n")).unwrap();
    assert_eq!(
        f.services[0].metrics,
        Some(Metrics {
            port: "admin".into(),
            path: "/metrics".into()
        })
    );
    let f = parse(&format!(
        "{BASE}    metrics:\n      port: http\n      path: /internal/prom\n"
    ))
    .unwrap();
    assert_eq!(
        f.services[0].metrics.as_ref().map(|m| m.path.as_str()),
        Some("/internal/prom")
    );
    let f = parse(BASE).unwrap();
    assert_eq!(f.services[0].metrics, None);
}

#[test]
fn an_unknown_port_is_an_error_at_the_value_naming_the_ports() {
    let d = expect(
        "    metrics: { port: metrics }\n",
        "unknown-reference",
        10,
        22,
        "its ports: `http`, `admin`",
    );
    assert!(d.message.contains("unknown port `metrics`"), "{d:?}");
    // A near miss is suggested.
    expect(
        "    metrics: { port: admn }\n",
        "unknown-reference",
        10,
        22,
        "did you mean `admin`?",
    );
    // A substitution instead of the port's name says to write the name.
    expect(
        "    metrics: { port: '${http}' }\n",
        "unknown-reference",
        10,
        22,
        "`port: http`",
    );
}

#[test]
fn a_service_without_ports_is_told_to_declare_one() {
    let yaml = "phoenix: 1\nname: demo\nsites: [{ name: a, tier: core, capacity: { cpu: 1 } }]\nservices:\n  - name: web\n    metrics: { port: port }\n";
    let all = parse(yaml).expect_err("no ports");
    let d = all.iter().find(|d| d.code == "unknown-reference").unwrap();
    assert!(
        d.hint
            .as_deref()
            .unwrap_or("")
            .contains("declares no ports"),
        "{d:?}"
    );
}

#[test]
fn unknown_keys_and_a_missing_port_are_errors() {
    expect(
        "    metrics: { port: http, pth: /m }\n",
        "unknown-field",
        10,
        28,
        "did you mean `path`?",
    );
    expect(
        "    metrics: { path: /m }\n",
        "missing-field",
        10,
        14,
        "its ports: `http`, `admin`",
    );
    expect("    metrics: admin\n", "wrong-type", 10, 14, "");
}

#[test]
fn a_path_must_be_a_plain_absolute_path() {
    for (path, hint) in [
        ("metrics", "write `/metrics`"),
        ("'/m?x=1'", "path alone"),
        ("'/${instance}'", "same for every instance"),
        ("'/a b'", "URL path"),
    ] {
        expect(
            &format!("    metrics: {{ port: http, path: {path} }}\n"),
            "bad-value",
            10,
            34,
            hint,
        );
    }
}

#[test]
fn an_environment_overlay_may_change_the_metrics_and_is_checked() {
    let yaml = format!(
        "{BASE}    metrics: {{ port: http }}\nenvironments:\n  prod:\n    services:\n      web: {{ metrics: {{ port: admin, path: /m }} }}\n  bad:\n    services:\n      web: {{ metrics: {{ port: nope }} }}\n"
    );
    let all = parse(&yaml).expect_err("the `bad` overlay");
    let d = all.iter().find(|d| d.code == "unknown-reference").unwrap();
    assert!(d.message.contains("environment `bad`"), "{d:?}");
    let fixed = yaml.replace("port: nope", "port: http");
    let f = parse_sources(&[("f.yaml".into(), fixed)], Some("prod")).unwrap();
    assert_eq!(
        f.services[0].metrics,
        Some(Metrics {
            port: "admin".into(),
            path: "/m".into()
        })
    );
}

#[test]
fn the_json_schema_describes_metrics() {
    let s = phoenix_spec::schema::json_schema();
    let m = &s["properties"]["services"]["items"]["properties"]["metrics"];
    assert_eq!(m["required"], serde_json::json!(["port"]));
    assert_eq!(m["properties"]["path"]["default"], "/metrics");
}
