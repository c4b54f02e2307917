//! Jobs (`jobs:`) in the plan: placed like an instance, ordered in phases and waves with the
//! services, shown in the JSON, the table and the DOT graph.

use phoenix_spec::parse_sources;

const SPEC: &str = r#"phoenix: 1
name: demo
sites:
  - name: core-1
    tier: core
    capacity: { cpu: 8, memory: 16Gi, storage: 100G }
services:
  - name: db
    command: ["sleep", "60"]
  - name: api
    command: ["sleep", "60"]
    depends_on: [migrate]
jobs:
  - name: migrate
    command: ["true"]
    depends_on: [db]
    resources: { cpu: 500m, memory: 64Mi }
  - name: backup
    command: ["true"]
    retries: 2
    hook: { before: migrate }
  - name: smoke
    command: ["true"]
    hook: { after: api }
"#;

fn plan() -> phoenix_plan::Plan {
    let fleet = parse_sources(&[("f.yaml".into(), SPEC.into())], None).unwrap();
    phoenix_plan::plan(&fleet)
}

#[test]
fn jobs_take_their_place_in_the_waves_both_ways() {
    let p = plan();
    assert_eq!(p.phases.len(), 1);
    assert_eq!(
        p.phases[0].waves,
        [
            vec!["backup".to_string(), "db".to_string()],
            vec!["migrate".to_string()],
            vec!["api".to_string()],
            vec!["smoke".to_string()],
        ]
    );
    assert_eq!(p.services["migrate"].wave, 2);
    assert_eq!(p.services["smoke"].wave, 4);
}

#[test]
fn a_job_is_one_placed_instance_with_its_demand() {
    let p = plan();
    let ids: Vec<&str> = p
        .instances
        .iter()
        .filter(|i| i.service == "migrate")
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(ids, ["migrate-0"]);
    assert_eq!(p.services["migrate"].placed, 1);
    assert_eq!(p.services["migrate"].demand.0.cpu.min, 500);
}

#[test]
fn json_marks_jobs_and_leaves_services_as_they_were() {
    let json = phoenix_plan::to_json(&plan());
    assert_eq!(json["services"]["backup"]["job"]["retries"], 2);
    assert_eq!(json["services"]["backup"]["job"]["hook"]["when"], "before");
    assert_eq!(
        json["services"]["backup"]["job"]["hook"]["service"],
        "migrate"
    );
    assert!(json["services"]["db"].get("job").is_none());
}

#[test]
fn table_and_dot_show_jobs() {
    let p = plan();
    let table = phoenix_plan::render::table(&p);
    assert!(table.contains("wave 2: migrate (job)"), "{table}");
    assert!(table.contains("phase 1: 2 services and 3 jobs"), "{table}");
    let dot = phoenix_plan::render::dot(&p);
    assert!(
        dot.contains("\"backup\" [label=\"backup\\njob · wave 1 · retries 2\\nhook: before migrate\", shape=folder"),
        "{dot}"
    );
    assert!(dot.contains("\"backup\" -> \"migrate\";"), "{dot}");
    assert!(dot.contains("\"api\" -> \"smoke\";"), "{dot}");
}
