//! The `validate`, `plan` and `schema` commands as a user runs them: exit codes, located
//! diagnostics on stderr, every output form of every example, and the JSON contract of
//! `fleet-spec.md` on `five-projects.yaml`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn phoenix(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run phoenix")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn examples() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p.file_name()?.to_str()?.to_string();
            (p.extension()? == "yaml").then(|| format!("examples/{name}"))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_is_valid_and_plans_in_every_form() {
    let files = examples();
    assert!(files.len() >= 5, "{files:?}");
    for f in &files {
        let v = phoenix(&["validate", f]);
        assert!(
            v.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&v.stderr)
        );
        for form in ["table", "json", "markdown", "dot"] {
            let out = phoenix(&["plan", f, "-o", form]);
            assert!(
                out.status.success(),
                "{f} -o {form}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!out.stdout.is_empty(), "{f} -o {form} printed nothing");
        }
    }
}

#[test]
fn five_projects_meets_the_json_contract() {
    let out = phoenix(&["plan", "examples/five-projects.yaml", "-o", "json"]);
    assert!(out.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let q_ok = |q: &serde_json::Value| {
        ["cpu", "memory_bytes", "storage_bytes"].iter().all(|k| {
            let r = &q[k];
            r["min"].is_number() && r["max"].is_number() && r["min"].as_f64() <= r["max"].as_f64()
        })
    };
    let projects = plan["projects"].as_object().expect("projects map");
    for name in ["dbis_core", "loc_az_hci", "smom-dbis-138", "the_order"] {
        assert!(
            q_ok(&projects[name]["demand"]),
            "{name}: {}",
            projects[name]
        );
    }
    // dbis_core adds up to 40-68 cores; the document states 32-68.
    assert_eq!(projects["dbis_core"]["demand"]["cpu"]["min"], 40.0);
    assert_eq!(projects["dbis_core"]["demand"]["cpu"]["max"], 68.0);
    for (name, site) in plan["sites"].as_object().expect("sites map") {
        assert!(q_ok(&site["capacity"]) && q_ok(&site["demand"]), "{name}");
    }
    let findings = plan["findings"].as_array().expect("findings");
    assert!(findings.iter().all(|f| {
        ["error", "warning", "info"].contains(&f["severity"].as_str().unwrap_or(""))
            && f["code"].is_string()
            && f["message"].is_string()
    }));
    let mismatch = |p: &str| {
        findings.iter().any(|f| {
            f["code"] == "budget-mismatch" && f["message"].as_str().unwrap_or("").contains(p)
        })
    };
    assert!(
        mismatch("dbis_core") && mismatch("loc_az_hci"),
        "budget mismatches missing"
    );
}

#[test]
fn invalid_spec_exits_1_with_located_diagnostics() {
    let dir = tempdir();
    let file = dir.join("bad.yaml");
    std::fs::write(&file, "phoenix: 1\nname: demo\nservices:\n  - name: web\n    replica: 2\n    depends_on: [web2]\n").unwrap();
    let file = file.to_str().unwrap();
    for cmd in ["validate", "plan"] {
        let out = phoenix(&[cmd, file]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{file}:5:5")), "{cmd}: {err}");
        assert!(err.contains("did you mean `replicas`?"), "{err}");
        assert!(err.contains(&format!("{file}:6:18")), "{err}");
        assert!(out.stdout.is_empty() || cmd == "validate");
    }
}

#[test]
fn unsafe_validators_and_impossible_placement_are_findings() {
    let dir = tempdir();
    let file = dir.join("unsafe.yaml");
    std::fs::write(
        &file,
        "phoenix: 1\nname: demo\nsites:\n  - { name: a, tier: core, capacity: { cpu: 8, memory: 16Gi } }\n  - { name: b, tier: core, capacity: { cpu: 8, memory: 16Gi } }\nservices:\n  - { name: val, role: validator, replicas: 4, placement: { tier: core, spread: site }, resources: { cpu: 1 } }\n  - { name: big, resources: { cpu: 64 } }\n  - { name: far, placement: { tier: edge } }\n",
    )
    .unwrap();
    let out = phoenix(&["plan", file.to_str().unwrap(), "-o", "json"]);
    assert!(out.status.success(), "plan of an unsafe fleet still plans");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = |code: &str| -> Vec<String> {
        plan["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["code"] == code)
            .map(|f| f["message"].as_str().unwrap().to_string())
            .collect()
    };
    let bft = text("bft-unsafe");
    assert!(
        bft.iter().any(|m| m.contains("val")
            && (m.contains("`a`") || m.contains(" a ") || m.contains("site a"))),
        "{bft:?}"
    );
    let unplaceable = text("unplaceable").join("\n");
    assert!(
        unplaceable.contains("big") && unplaceable.contains("64"),
        "{unplaceable}"
    );
    assert!(
        unplaceable.contains("far") && unplaceable.contains("edge"),
        "{unplaceable}"
    );
    let strict = phoenix(&["plan", file.to_str().unwrap(), "--strict"]);
    assert_eq!(strict.status.code(), Some(3));
}

#[test]
fn environments_change_the_plan() {
    let prod = phoenix(&[
        "plan",
        "examples/xai.yaml",
        "--env",
        "production",
        "-o",
        "json",
    ]);
    let dev = phoenix(&[
        "plan",
        "examples/xai.yaml",
        "--env",
        "development",
        "-o",
        "json",
    ]);
    assert!(prod.status.success() && dev.status.success());
    assert_ne!(prod.stdout, dev.stdout);
    let bad = phoenix(&["plan", "examples/xai.yaml", "--env", "prod"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("did you mean `production`?"));
}

#[test]
fn regression_validate_without_env_reports_broken_overlays() {
    // `phoenix validate` without --env said "valid" for a file whose `environments:` had an
    // unknown service, negative replicas and an unknown field.
    let dir = tempdir();
    let file = dir.join("overlays.yaml");
    std::fs::write(
        &file,
        "phoenix: 1\nname: demo\nenvironments:\n  staging:\n    services:\n      wbe: { replicas: 2 }\n      web: { replicas: -1, replcas: 3 }\nservices:\n  - name: web\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    for args in [
        vec!["validate", file],
        vec!["validate", file, "--env", "staging"],
    ] {
        let out = phoenix(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        for at in [":6:7:", ":7:24:", ":7:28:"] {
            assert!(err.contains(&format!("{file}{at}")), "{args:?} {at}: {err}");
        }
        assert!(err.contains("environment `staging`"), "{err}");
    }
    let ok = phoenix(&["validate", "examples/xai.yaml"]);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        text.contains("environments checked: development, docker-local, production, staging"),
        "{text}"
    );
}

#[test]
fn regression_validate_and_plan_say_1_site_not_1_sites() {
    // Output said "1 instances", "1 sites, 1 hosts" and "phase 1: 6 services, nothing".
    let dir = tempdir();
    let file = dir.join("one.yaml");
    std::fs::write(
        &file,
        "phoenix: 1\nname: one\nsites:\n  - { name: a, tier: core, capacity: {} }\nservices:\n  - name: web\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let v = phoenix(&["validate", file]);
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(
        text.contains("(fleet one: 1 site, 0 projects, 1 service)"),
        "{text}"
    );
    let p = phoenix(&["plan", file]);
    let text = String::from_utf8_lossy(&p.stdout);
    assert!(
        text.contains("1 site, 1 host; 1 service; 1 instance planned, 1 placed"),
        "{text}"
    );
    assert!(
        text.contains("phase 1: 1 service, no resources declared; 1 site online"),
        "{text}"
    );
}

#[test]
fn schema_is_json() {
    let out = phoenix(&["schema"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("schema JSON");
    assert_eq!(v["required"], serde_json::json!(["phoenix", "name"]));
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "phoenix-cli-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
