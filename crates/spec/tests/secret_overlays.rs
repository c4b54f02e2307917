//! Environment overlays of `secrets:`: an environment may change where a secret comes from (a
//! generated value for development, a file or a variable in production); its source replaces
//! the base's, paths are relative to the file that writes them, and a bad overlay is an error
//! whether or not its environment is selected.

use phoenix_spec::parse_sources;
use phoenix_spec::secrets::SecretSource;

const BASE: &str = "phoenix: 1\nname: demo\nsites:\n  - name: core-1\n    tier: core\n    capacity: { cpu: 8, memory: 16Gi, storage: 100G }\nservices:\n  - name: web\n    env: { DB: '${secret:db}' }\nsecrets:\n  - { name: db, description: database password, generate: { length: 24 } }\n";

fn source_of(files: &[(&str, &str)], env: Option<&str>) -> SecretSource {
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    let fleet = parse_sources(&sources, env).unwrap_or_else(|d| panic!("{}", d.render()));
    let s = fleet.secret("db").expect("secret db");
    assert_eq!(s.description.as_deref(), Some("database password"));
    s.source.clone()
}

#[test]
fn an_environment_replaces_a_secrets_source() {
    let spec = format!(
        "{BASE}environments:\n  production:\n    secrets: {{ db: {{ from_file: ./prod/db.pass }} }}\n  ci:\n    secrets: {{ db: {{ from_env: CI_DB_PASSWORD }} }}\n"
    );
    assert!(matches!(
        source_of(&[("f.yaml", &spec)], None),
        SecretSource::Generate { length: 24, .. }
    ));
    assert!(matches!(
        source_of(&[("f.yaml", &spec)], Some("production")),
        SecretSource::File { ref path, file: 0 } if path == "./prod/db.pass"
    ));
    assert!(matches!(
        source_of(&[("f.yaml", &spec)], Some("ci")),
        SecretSource::Env { ref var } if var == "CI_DB_PASSWORD"
    ));
}

#[test]
fn an_overlay_in_another_file_reads_its_path_relative_to_that_file() {
    let overlay =
        "phoenix: 1\nenvironments:\n  production:\n    secrets: { db: { from_file: db.pass } }\n";
    assert!(matches!(
        source_of(
            &[("f.yaml", BASE), ("prod/overlay.yaml", overlay)],
            Some("production")
        ),
        SecretSource::File { file: 1, .. }
    ));
}

#[test]
fn a_bad_secret_overlay_is_an_error_even_when_not_selected() {
    let cases = [
        // Two sources in one overlay.
        (
            "    secrets: { db: { from_env: X, from_file: y } }\n",
            "conflicting-fields",
        ),
        // A secret the base files do not define.
        (
            "    secrets: { dbb: { from_env: X } }\n",
            "unknown-reference",
        ),
        // A bad variable name.
        ("    secrets: { db: { from_env: 1X } }\n", "bad-value"),
        // Renaming.
        ("    secrets: { db: { name: other } }\n", "bad-value"),
    ];
    for (overlay, code) in cases {
        let spec = format!("{BASE}environments:\n  production:\n{overlay}");
        let d = parse_sources(&[("f.yaml".into(), spec.clone())], None)
            .expect_err(&format!("an error for:\n{spec}"));
        assert!(
            d.items.iter().any(|i| i.code == code),
            "no `{code}` for {overlay}: {:#?}",
            d.items
        );
    }
}
