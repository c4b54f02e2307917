//! Snapshots of the JSON plan of every fleet in the repository's `examples/` directory, and of
//! each environment it defines. A new example fails here until its snapshot is reviewed and
//! accepted (`cargo insta review`, or `INSTA_UPDATE=always` and a look at the diff).
//!
//! The snapshots leave out `instances` (one entry per instance) and per-host loads: per-service
//! placement by site and per-site demand are kept, and the property tests cover hosts.

use phoenix_plan::{plan, render, to_json};
use std::path::{Path, PathBuf};

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Loads an example under the name `examples/FILE`, as from the repository root, so that the
/// locations in findings (and so the snapshots) do not depend on where the clone is.
fn load(file: &Path, env: Option<&str>) -> phoenix_spec::Fleet {
    let name = format!(
        "examples/{}",
        file.file_name().expect("a file name").to_string_lossy()
    );
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("cannot read {name}: {e}"));
    phoenix_spec::parse_sources(&[(name.clone(), text)], env).unwrap_or_else(|d| {
        panic!(
            "{name} (environment {env:?}) does not validate:\n{}",
            d.render()
        )
    })
}

/// Every example with no environment, then with each of its environments.
fn cases() -> Vec<(String, PathBuf, Option<String>)> {
    let mut out = Vec::new();
    for file in examples() {
        let stem = file
            .file_stem()
            .expect("a file name")
            .to_string_lossy()
            .to_string();
        let envs = load(&file, None).environments;
        out.push((stem.clone(), file.clone(), None));
        for e in envs {
            out.push((format!("{stem}@{e}"), file.clone(), Some(e)));
        }
    }
    out
}

#[test]
fn examples_exist() {
    assert!(!examples().is_empty(), "no examples/*.yaml found");
}

#[test]
fn json_plan_of_every_example() {
    for (name, file, env) in cases() {
        let p = plan(&load(&file, env.as_deref()));
        let mut v = to_json(&p);
        let obj = v.as_object_mut().expect("a plan is an object");
        obj.remove("instances");
        for site in obj["sites"]
            .as_object_mut()
            .expect("sites map")
            .values_mut()
        {
            site.as_object_mut().expect("a site").remove("host_loads");
        }
        let text = serde_json::to_string_pretty(&v).expect("serialises");
        insta::assert_snapshot!(name.as_str(), text);
    }
}

#[test]
fn every_example_renders_in_every_form_identically_twice() {
    for (name, file, env) in cases() {
        let fleet = load(&file, env.as_deref());
        let (a, b) = (plan(&fleet), plan(&fleet));
        assert_eq!(
            phoenix_plan::to_json_string(&a),
            phoenix_plan::to_json_string(&b),
            "{name}"
        );
        for render in [render::table, render::markdown, render::dot] {
            let text = render(&a);
            assert!(!text.is_empty(), "{name}");
            assert_eq!(text, render(&b), "{name}");
        }
    }
}

#[test]
fn five_projects_meets_the_json_contract() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/five-projects.yaml");
    let v = to_json(&plan(&load(&file, None)));
    let q_ok = |q: &serde_json::Value| {
        ["cpu", "memory_bytes", "storage_bytes"].iter().all(|k| {
            q[k]["min"].is_number()
                && q[k]["max"].is_number()
                && q[k]["min"].as_f64() <= q[k]["max"].as_f64()
        })
    };
    let projects = v["projects"].as_object().expect("projects map");
    assert!(!projects.is_empty());
    assert!(projects.values().all(|p| q_ok(&p["demand"])));
    let sites = v["sites"].as_object().expect("sites map");
    assert!(
        sites
            .values()
            .all(|s| q_ok(&s["capacity"]) && q_ok(&s["demand"]))
    );
    let findings = v["findings"].as_array().expect("findings array");
    assert!(findings.iter().all(|f| {
        ["error", "warning", "info"].contains(&f["severity"].as_str().unwrap_or(""))
            && f["code"].is_string()
            && f["message"].is_string()
    }));
    assert!(
        findings.iter().any(|f| f["code"] == "budget-mismatch"),
        "the documents' totals disagree"
    );
}

#[test]
fn regression_xai_staging_spread_on_one_site_is_a_finding() {
    // `xai.yaml --env staging` has one availability zone: its spread services share it, and
    // the plan said nothing.
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/xai.yaml");
    let p = plan(&load(&file, Some("staging")));
    let unmet: Vec<&str> = p
        .findings
        .iter()
        .filter(|f| f.code == phoenix_plan::code::SPREAD_UNMET)
        .map(|f| f.message.as_str())
        .collect();
    assert!(
        unmet.contains(&"service `redis`: 3 replicas with spread: site on 1 site (needs 3 sites; 2 instances share a site): aws-az-1 is its only eligible site"),
        "{unmet:#?}"
    );
    assert!(
        unmet
            .iter()
            .any(|m| m.starts_with("service `blockchain-node`: 2 replicas"))
    );
    // Production spreads over its three zones: nothing to say.
    let p = plan(&load(&file, None));
    assert!(
        p.findings
            .iter()
            .all(|f| f.code != phoenix_plan::code::SPREAD_UNMET)
    );
}
