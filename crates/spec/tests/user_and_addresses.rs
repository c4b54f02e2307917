//! `user:` on services and jobs, and `${address:S}` / `${addresses:S}` substitutions.

use phoenix_spec::{Diagnostic, parse_sources};

const BASE: &str = "phoenix: 1\nname: demo\nsites:\n  - name: core-1\n    tier: core\n    capacity: { cpu: 8, memory: 16Gi, storage: 100G }\nservices:\n  - name: db\n    ports: [pg, admin]\n    command: [postgres, -p, \"${pg}\"]\n";

fn parse(yaml: &str) -> Result<phoenix_spec::Fleet, Vec<Diagnostic>> {
    parse_sources(&[("f.yaml".to_string(), yaml.to_string())], None).map_err(|d| d.items)
}

#[track_caller]
fn one_error(extra: &str, code: &str) -> Diagnostic {
    let all = parse(&format!("{BASE}{extra}")).expect_err("expected errors");
    let found: Vec<&Diagnostic> = all.iter().filter(|d| d.code == code).collect();
    assert_eq!(found.len(), 1, "one `{code}` expected in {all:#?}");
    found[0].clone()
}

#[test]
fn user_is_kept_on_services_and_jobs() {
    let f = parse(&format!(
        "{BASE}    user: postgres\njobs:\n  - name: init\n    command: [initdb]\n    user: _pg-1\n"
    ))
    .unwrap();
    assert_eq!(f.services[0].user.as_deref(), Some("postgres"));
    assert_eq!(f.service("init").unwrap().user.as_deref(), Some("_pg-1"));
    assert_eq!(parse(BASE).unwrap().services[0].user, None);
}

#[test]
fn a_user_that_is_no_user_name_is_an_error_at_the_value() {
    let d = one_error("    user: \"Post gres\"\n", "bad-name");
    assert_eq!(d.location.as_ref().unwrap().line, 11, "{d:?}");
    assert!(
        d.message.contains("`Post gres` is not a user name"),
        "{d:?}"
    );
}

#[test]
fn address_references_parse_and_need_a_dependency() {
    let ok = format!(
        "{BASE}  - name: app\n    depends_on: [db]\n    ports: [http]\n    command: [app, \"${{address:db}}\", \"${{addresses:db:admin}}\"]\n    env: {{ DB: \"${{address:db:pg}}\" }}\n"
    );
    let f = parse(&ok).unwrap();
    assert_eq!(f.services[1].command[1], "${address:db}");

    let d = one_error(
        "  - name: app\n    command: [app, \"${address:db}\"]\n",
        "missing-dependency",
    );
    assert!(d.message.contains("does not depend on `db`"), "{d:?}");
    assert!(d.hint.as_deref().unwrap().contains("depends_on"), "{d:?}");
    // Located at the argument that uses it.
    assert_eq!(d.location.as_ref().unwrap().line, 12, "{d:?}");
}

#[test]
fn address_references_to_what_has_no_address_are_errors() {
    let d = one_error(
        "  - name: app\n    depends_on: [db]\n    command: [app, \"${address:dbb}\"]\n",
        "unknown-reference",
    );
    assert_eq!(d.hint.as_deref(), Some("did you mean `db`?"), "{d:?}");
    let d = one_error(
        "  - name: app\n    depends_on: [db]\n    command: [app, \"${address:db:pgg}\"]\n",
        "bad-substitution",
    );
    assert!(d.message.contains("has no port `pgg`"), "{d:?}");
    let d = one_error(
        "  - name: app\n    depends_on: [noports]\n    command: [app, \"${address:noports}\"]\n  - name: noports\n    command: [x]\n",
        "bad-substitution",
    );
    assert!(d.message.contains("no named ports"), "{d:?}");
    let d = one_error(
        "  - name: app\n    command: [app, \"${address:}\"]\n",
        "bad-substitution",
    );
    assert!(d.message.contains("malformed"), "{d:?}");
}

#[test]
fn the_schema_knows_user() {
    let schema = phoenix_spec::schema::json_schema();
    let svc = &schema["properties"]["services"]["items"]["properties"];
    assert!(svc.get("user").is_some());
    let job = &schema["properties"]["jobs"]["items"]["properties"];
    assert!(job.get("user").is_some());
}
