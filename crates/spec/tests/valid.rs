//! What valid specs turn into: defaults, site groups, overlays, several files.

use phoenix_spec::*;

fn load(yaml: &str, env: Option<&str>) -> Fleet {
    parse_sources(&[("f.yaml".into(), yaml.into())], env)
        .unwrap_or_else(|d| panic!("{}", d.render()))
}

const FLEET: &str = r#"
phoenix: 1
name: demo
policy: { cpu_overcommit: 2 }
sites:
  - name: core-1
    tier: core
    hosts: 2
    capacity: { cpu: 16-32, memory: 64-128Gi, storage: 2-4T }
  - name: edge
    tier: edge
    count: 3
    phase: 2
    capacity: { cpu: 4, memory: 8GiB, storage: 100G }
projects:
  - name: infra
    duration: 1-2w
  - name: platform
    depends_on: [infra]
    hosted_on: infra
services:
  - name: web
    project: platform
    replicas: 2-4
    placement: { sites: [edge], spread: site }
    resources: { cpu: 500m, memory: 256Mi }
    command: ["python3", "-m", "http.server", "${port}", "--bind", "127.0.0.1"]
    env: { GREETING: "hello ${instance}" }
    ports: [port]
    health:
      http: "http://127.0.0.1:${port}/"
      timeout: 20s
    rollout: { strategy: canary, canary: 1, analysis: 10s }
    backup: ["${data_dir}/db"]
environments:
  production:
    services: { web: { replicas: 6, resources: { memory: 1Gi } } }
    sites: { core-1: { hosts: 3 } }
"#;

#[test]
fn defaults_and_values() {
    let f = load(FLEET, None);
    assert_eq!(f.policy.cpu_overcommit, 2.0);
    let web = f.service("web").unwrap();
    assert_eq!(web.replicas, Range::new(2, 4));
    assert_eq!(web.resources.cpu, Range::exact(500));
    assert_eq!(web.phase, 1);
    assert!(web.enabled);
    assert_eq!(web.health.as_ref().unwrap().timeout_ms, 20_000);
    assert_eq!(
        web.rollout,
        Rollout::Canary {
            canary: 1,
            analysis_ms: 10_000
        }
    );
    assert_eq!(web.stop_grace_ms, 10_000);
    assert_eq!(f.environments, vec!["production".to_string()]);
}

#[test]
fn site_groups_expand_and_placement_can_name_the_group() {
    let f = load(FLEET, None);
    let names: Vec<&str> = f.sites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["core-1", "edge-1", "edge-2", "edge-3"]);
    assert_eq!(f.site("edge-2").unwrap().phase, 2);
    assert_eq!(
        f.site("edge-2").unwrap().capacity.memory,
        Range::exact(8 << 30)
    );
    assert_eq!(
        f.service("web").unwrap().placement.sites,
        ["edge-1", "edge-2", "edge-3"]
    );
}

#[test]
fn environment_overlay_merges_by_name() {
    let f = load(FLEET, Some("production"));
    let web = f.service("web").unwrap();
    assert_eq!(web.replicas, Range::exact(6));
    assert_eq!(web.resources.memory, Range::exact(1 << 30));
    assert_eq!(web.resources.cpu, Range::exact(500), "untouched keys stay");
    assert_eq!(f.site("core-1").unwrap().hosts, 3);
    assert_eq!(f.environment.as_deref(), Some("production"));
}

#[test]
fn later_files_extend_earlier_ones() {
    let a = "phoenix: 1\nname: demo\nsites:\n  - name: s\n    tier: core\n    capacity: {cpu: 1}\n"
        .to_string();
    let b = "phoenix: 1\nservices:\n  - name: web\n".to_string();
    let f = parse_sources(&[("a.yaml".into(), a), ("b.yaml".into(), b)], None).unwrap();
    assert_eq!(f.sites.len(), 1);
    assert_eq!(f.services.len(), 1);
}

#[test]
fn schema_is_valid_json_with_the_core_sections() {
    let s = schema::json_schema();
    for key in ["sites", "projects", "services", "environments"] {
        assert!(s["properties"][key].is_object(), "{key}");
    }
}

#[test]
fn validator_services_name_their_set() {
    let f = load(
        "phoenix: 1\nname: demo\nservices:\n  - { name: v1, role: validator, validator_set: chain }\n  - { name: v2, role: validator, phase: 2, validator_set: chain }\n  - { name: v3, role: validator }\n  - { name: web }\n",
        None,
    );
    let sets: Vec<Option<&str>> = f.services.iter().map(|s| s.bft_set()).collect();
    assert_eq!(sets, [Some("chain"), Some("chain"), Some("v3"), None]);
}

/// `secrets:` becomes the fleet's secrets, each with its source, and a service's uses of
/// them are found in `command`, `env` and `health`.
#[test]
fn secrets_keep_their_sources_and_uses() {
    let f = load(
        r#"
phoenix: 1
name: s
sites:
  - name: l
    tier: core
    capacity: { cpu: 4, memory: 4Gi, storage: 1G }
secrets:
  - name: db
    generate: { length: 12, alphabet: hex }
  - name: api
    from_env: API_TOKEN
  - name: tls
    from_file: tls/key.pem
    description: server key
  - name: plain
    generate: true
services:
  - name: web
    command: [web, --key, "${secret_file:tls}"]
    env: { DB: "postgres://u:${secret:db}@h/d" }
    health: { command: [check, "${secret_file:api}"] }
"#,
        None,
    );
    use phoenix_spec::secrets::{Alphabet, SecretSource, used_by};
    assert_eq!(f.secrets.len(), 4);
    assert_eq!(
        f.secret("db").unwrap().source,
        SecretSource::Generate {
            length: 12,
            alphabet: Alphabet::Hex
        }
    );
    assert_eq!(
        f.secret("api").unwrap().source,
        SecretSource::Env {
            var: "API_TOKEN".into()
        }
    );
    assert!(
        matches!(&f.secret("tls").unwrap().source, SecretSource::File { path, .. } if path == "tls/key.pem")
    );
    assert_eq!(
        f.secret("plain").unwrap().source,
        SecretSource::Generate {
            length: 32,
            alphabet: Alphabet::Alphanumeric
        }
    );
    assert_eq!(used_by(f.service("web").unwrap()), ["api", "db", "tls"]);
}
