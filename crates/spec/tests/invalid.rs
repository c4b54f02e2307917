//! One test per class of invalid input: each must give a located, explained error.

use phoenix_spec::{Diagnostic, parse_sources};

const BASE: &str = "phoenix: 1\nname: demo\nsites:\n  - name: core-1\n    tier: core\n    capacity: { cpu: 8, memory: 16Gi, storage: 100G }\n";

fn errors(yaml: &str) -> Vec<Diagnostic> {
    match parse_sources(&[("f.yaml".to_string(), yaml.to_string())], None) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(d) => d.items,
    }
}

/// Asserts one diagnostic with `code` at `line:col` whose hint contains `hint`.
#[track_caller]
fn expect(yaml: &str, code: &str, line: usize, col: usize, hint: &str) {
    let all = errors(yaml);
    let found = all
        .iter()
        .find(|d| d.code == code)
        .unwrap_or_else(|| panic!("no `{code}` in {all:#?}"));
    let loc = found.location.as_ref().expect("located");
    assert_eq!((loc.line, loc.col), (line, col), "{found:#?}");
    let h = found.hint.as_deref().unwrap_or("");
    assert!(h.contains(hint), "hint {h:?} lacks {hint:?}");
}

#[test]
fn typo_in_field_suggests_the_right_one() {
    expect(
        &format!("{BASE}services:\n  - name: web\n    replica: 2\n"),
        "unknown-field",
        9,
        5,
        "did you mean `replicas`?",
    );
}

#[test]
fn typo_in_top_level_field() {
    expect(
        &format!("{BASE}servces: []\n"),
        "unknown-field",
        7,
        1,
        "`services`",
    );
}

#[test]
fn missing_required_fields() {
    expect(
        "phoenix: 1\nname: demo\nsites:\n  - name: a\n    capacity: {cpu: 1}\n",
        "missing-field",
        4,
        5,
        "",
    );
    expect("name: demo\n", "missing-field", 1, 1, "phoenix: 1");
}

#[test]
fn unsupported_format_version() {
    expect(
        "phoenix: 2\nname: demo\n",
        "unsupported-format",
        1,
        10,
        "phoenix: 1",
    );
}

#[test]
fn bad_quantities() {
    expect(
        &format!("{BASE}services:\n  - name: web\n    resources: {{ memory: 12gb }}\n"),
        "bad-quantity",
        9,
        26,
        "`G`",
    );
    expect(
        &format!("{BASE}services:\n  - name: web\n    resources: {{ cpu: 16-8 }}\n"),
        "bad-quantity",
        9,
        23,
        "8-16",
    );
    expect(
        &format!("{BASE}services:\n  - name: web\n    replicas: two\n"),
        "bad-quantity",
        9,
        15,
        "whole number",
    );
    expect(
        &format!("{BASE}projects:\n  - name: p\n    duration: 3\n"),
        "bad-quantity",
        9,
        15,
        "`w`",
    );
    expect(
        &format!(
            "{BASE}services:\n  - name: web\n    health: {{ tcp: \"127.0.0.1:1\", timeout: 20 }}\n"
        ),
        "bad-quantity",
        9,
        44,
        "20s",
    );
}

#[test]
fn bad_enum_value() {
    expect(
        &format!("{BASE}services:\n  - name: web\n    role: validatr\n"),
        "bad-value",
        9,
        11,
        "did you mean `validator`?",
    );
}

#[test]
fn bad_names() {
    expect("phoenix: 1\nname: My Fleet\n", "bad-name", 2, 7, "my-fleet");
}

#[test]
fn unknown_references_list_the_known_ones() {
    expect(
        &format!("{BASE}services:\n  - name: web\n    placement: {{ sites: [core-9] }}\n"),
        "unknown-reference",
        9,
        26,
        "did you mean `core-1`?",
    );
    expect(
        &format!("{BASE}services:\n  - name: web\n    depends_on: [dbb]\n  - name: db\n"),
        "unknown-reference",
        9,
        18,
        "did you mean `db`?",
    );
    expect(
        &format!("{BASE}services:\n  - name: web\n    project: nope\n"),
        "unknown-reference",
        9,
        14,
        "no project is defined",
    );
    expect(
        &format!("{BASE}projects:\n  - name: a\n    hosted_on: zzz\n  - name: b\n"),
        "unknown-reference",
        9,
        16,
        "known projects: a, b",
    );
}

#[test]
fn cycles_name_the_whole_loop() {
    let y = format!(
        "{BASE}services:\n  - name: a\n    depends_on: [b]\n  - name: b\n    depends_on: [c]\n  - name: c\n    depends_on: [a]\n"
    );
    let all = errors(&y);
    let c = all.iter().find(|d| d.code == "cycle").expect("cycle");
    assert!(c.message.contains("a -> b -> c -> a"), "{}", c.message);
    assert_eq!(c.location.as_ref().unwrap().line, 9);
}

#[test]
fn project_cycles_and_cycles_through_projects() {
    let y = format!(
        "{BASE}projects:\n  - name: p\n    depends_on: [q]\n  - name: q\n    depends_on: [p]\n"
    );
    assert!(
        errors(&y)
            .iter()
            .any(|d| d.code == "cycle" && d.message.contains("p -> q -> p"))
    );
    let y = format!(
        "{BASE}projects:\n  - name: p\n  - name: q\n    depends_on: [p]\nservices:\n  - name: a\n    project: p\n    depends_on: [b]\n  - name: b\n    project: q\n"
    );
    assert!(
        errors(&y)
            .iter()
            .any(|d| d.code == "cycle" && d.message.contains("through projects"))
    );
}

#[test]
fn unknown_substitution() {
    expect(
        &format!(
            "{BASE}services:\n  - name: web\n    ports: [port]\n    command: [serve, \"${{prot}}\"]\n"
        ),
        "unknown-substitution",
        10,
        22,
        "did you mean `${port}`?",
    );
    expect(
        &format!("{BASE}services:\n  - name: web\n    env: {{ A: \"${{http}}\" }}\n"),
        "unknown-substitution",
        9,
        15,
        "declared in `ports:`",
    );
}

#[test]
fn dependency_on_a_later_phase() {
    expect(
        &format!(
            "{BASE}services:\n  - name: web\n    depends_on: [db]\n  - name: db\n    phase: 2\n"
        ),
        "phase-order",
        9,
        18,
        "phase",
    );
}

#[test]
fn duplicates_within_and_across_files() {
    expect(
        &format!("{BASE}services:\n  - name: web\n  - name: web\n"),
        "duplicate-name",
        9,
        5,
        "line 8",
    );
    let second = "phoenix: 1\nservices:\n  - name: web\n".to_string();
    let r = parse_sources(
        &[
            ("a.yaml".into(), format!("{BASE}services:\n  - name: web\n")),
            ("b.yaml".into(), second),
        ],
        None,
    );
    let d = r.unwrap_err();
    let dup = d
        .items
        .iter()
        .find(|x| x.code == "duplicate-name")
        .expect("dup");
    assert_eq!(d.position(dup.location.as_ref().unwrap()), "b.yaml:3:5");
}

#[test]
fn yaml_syntax_error_is_located() {
    let all = errors("phoenix: 1\nname: demo\nsites: [\n");
    assert_eq!(all[0].code, "yaml-syntax");
    assert!(all[0].location.is_some());
}

#[test]
fn wrong_types() {
    expect(
        &format!("{BASE}services:\n  - name: web\n    depends_on: db\n"),
        "wrong-type",
        9,
        17,
        "[db]",
    );
    expect(
        &format!("{BASE}services:\n  - name: web\n    enabled: yes\n"),
        "wrong-type",
        9,
        14,
        "`true` and `false`",
    );
}

#[test]
fn health_needs_a_check() {
    expect(
        &format!("{BASE}services:\n  - name: web\n    health: {{ timeout: 5s }}\n"),
        "missing-field",
        9,
        13,
        "`http`, `tcp`, `command`, `json`, `metrics` or `ledger`",
    );
}

#[test]
fn unknown_environment_and_overlay_target() {
    let y = format!(
        "{BASE}environments:\n  prod:\n    services: {{ wbe: {{ replicas: 3 }} }}\nservices:\n  - name: web\n"
    );
    let r = parse_sources(&[("f.yaml".into(), y.clone())], Some("prod")).unwrap_err();
    let d = r
        .items
        .iter()
        .find(|d| d.code == "unknown-reference")
        .expect("unknown overlay target");
    assert_eq!(d.hint.as_deref(), Some("did you mean `web`?"));
    let r = parse_sources(&[("f.yaml".into(), y)], Some("prdo")).unwrap_err();
    assert!(
        r.items[0]
            .hint
            .as_deref()
            .unwrap()
            .contains("did you mean `prod`?")
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let y = format!(
        "{BASE}services:\n  - name: web\n    replica: 2\n    resources: {{ cpu: lots }}\n    depends_on: [nope]\n"
    );
    let codes: Vec<&str> = errors(&y).iter().map(|d| d.code).collect();
    assert!(
        codes.contains(&"unknown-field")
            && codes.contains(&"bad-quantity")
            && codes.contains(&"unknown-reference"),
        "{codes:?}"
    );
}

// ---- bounds on what one file may make the parser build -------------------------------------

/// A fleet spec whose `env` is nine levels of nine aliases each (9^9 scalars once expanded).
fn alias_bomb() -> String {
    let mut s = String::from(
        "phoenix: 1\nname: laughs\nx:\n  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..=9 {
        let items = vec![format!("*a{}", i - 1); 9].join(", ");
        s.push_str(&format!("  a{i}: &a{i} [{items}]\n"));
    }
    s
}

#[test]
fn regression_alias_bomb_gives_one_located_error_not_15_gb() {
    // `phoenix validate` on a billion-laughs file grew to 15 GB in 20 s.
    let y = alias_bomb();
    let d = parse_sources(&[("bomb.yaml".into(), y)], None).unwrap_err();
    assert_eq!(d.items.len(), 1, "{:#?}", d.items);
    assert_eq!(d.items[0].code, "yaml-too-large");
    let pos = d.position(d.items[0].location.as_ref().unwrap());
    assert!(pos.starts_with("bomb.yaml:"), "{pos}");
    assert!(d.render().len() < 2_000);
}

#[test]
fn regression_deep_nesting_error_shows_a_bounded_excerpt() {
    // A 10,000-deep nesting error repeated the whole 20 KB source line.
    let y = format!(
        "phoenix: 1\nname: deep\nservices:\n  {}x\n",
        "- ".repeat(10_000)
    );
    let d = parse_sources(&[("deep.yaml".into(), y)], None).unwrap_err();
    assert_eq!(d.items.len(), 1, "{:#?}", d.items);
    assert_eq!(d.items[0].code, "yaml-too-deep");
    let rendered = d.render();
    assert!(rendered.len() < 600, "{rendered}");
    assert!(rendered.contains('…'), "{rendered}");
    assert!(rendered.starts_with("deep.yaml:4:"), "{rendered}");
}

#[test]
fn regression_site_group_count_cannot_exhaust_memory() {
    let y = "phoenix: 1\nname: demo\nsites:\n  - { name: edge, tier: edge, count: 4000000000, capacity: {} }\n";
    expect(y, "too-large", 4, 38, "at most 100000 sites");
    let many = format!(
        "phoenix: 1\nname: demo\nsites:\n{}",
        "  - { name: e, tier: edge, count: 60000, capacity: {} }\n".repeat(2)
    );
    let all = errors(&many);
    assert!(all.iter().any(|d| d.code == "too-large"), "{all:#?}");
}

#[test]
fn every_fuzz_seed_parses_or_is_diagnosed_within_bounds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/spec_parse");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz seeds") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("a text seed");
        for env in [None, Some("production")] {
            if let Err(d) = parse_sources(&[("seed.yaml".into(), text.clone())], env) {
                assert!(
                    d.render().len() < 20 * text.len().max(1_000),
                    "{}",
                    path.display()
                );
            }
        }
        seen += 1;
    }
    assert!(seen >= 4, "{seen} seeds");
}

// ---- environment overlays are validated whether or not they are selected -------------------

const OVERLAYS: &str = "environments:\n  staging:\n    services:\n      wbe: { replicas: 2 }\n      web: { replicas: -1, replcas: 3 }\n  production:\n    services:\n      web: { replicas: 4 }\nservices:\n  - name: web\n";

#[test]
fn regression_validate_without_env_checks_every_overlay() {
    // `phoenix validate` without --env said "valid" for a file whose overlays had an unknown
    // service, negative replicas and an unknown field.
    let y = format!("{BASE}{OVERLAYS}");
    let all = errors(&y);
    let staging: Vec<&Diagnostic> = all
        .iter()
        .filter(|d| d.message.contains("environment `staging`"))
        .collect();
    let at = |code: &str| {
        let d = staging
            .iter()
            .find(|d| d.code == code)
            .unwrap_or_else(|| panic!("no `{code}` naming staging in {all:#?}"));
        let l = d.location.as_ref().expect("located");
        (l.line, l.col)
    };
    assert_eq!(
        at("unknown-reference"),
        (10, 7),
        "the unknown service `wbe`"
    );
    assert_eq!(at("bad-quantity"), (11, 24), "replicas: -1");
    assert_eq!(at("unknown-field"), (11, 28), "replcas");
    assert_eq!(all.len(), 3, "each problem once: {all:#?}");
    let hint = staging
        .iter()
        .find(|d| d.code == "unknown-field")
        .and_then(|d| d.hint.as_deref());
    assert_eq!(hint, Some("did you mean `replicas`?"));
}

#[test]
fn regression_selecting_one_environment_still_checks_the_others() {
    let y = format!("{BASE}{OVERLAYS}");
    let d = parse_sources(&[("f.yaml".into(), y)], Some("production")).unwrap_err();
    assert_eq!(d.items.len(), 3, "{:#?}", d.items);
    assert!(
        d.items
            .iter()
            .all(|d| d.message.contains("environment `staging`")),
        "{:#?}",
        d.items
    );
}

#[test]
fn base_problems_are_reported_once_not_once_per_environment() {
    let y = format!(
        "{BASE}environments:\n  a: {{ services: {{ web: {{ replicas: 2 }} }} }}\n  b: {{ services: {{ web: {{ replicas: 3 }} }} }}\nservices:\n  - name: web\n    depends_on: [nope]\n"
    );
    let all = errors(&y);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert!(
        !all[0].message.contains("environment"),
        "{}",
        all[0].message
    );
}

#[test]
fn a_problem_only_an_overlay_causes_names_the_overlay() {
    // The overlay moves `db` to a later phase than `web`, which depends on it: the error is
    // at the base's `depends_on`, but only with the overlay.
    let y = format!(
        "{BASE}environments:\n  late: {{ services: {{ db: {{ phase: 2 }} }} }}\nservices:\n  - name: web\n    depends_on: [db]\n  - name: db\n"
    );
    let all = errors(&y);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].code, "phase-order");
    assert!(
        all[0].message.ends_with("(with environment `late`)"),
        "{}",
        all[0].message
    );
}

// ---- health timing -------------------------------------------------------------------------

fn health(fields: &str) -> String {
    format!("{BASE}services:\n  - name: web\n    health: {{ tcp: \"127.0.0.1:1\", {fields} }}\n")
}

#[test]
fn regression_health_timeout_zero_is_rejected() {
    // `timeout: 0s` was accepted, and every apply then failed "not healthy after 0 ms".
    expect(&health("timeout: 0s"), "bad-value", 9, 44, "timeout: 30s");
    let all = errors(&health("timeout: 0ms"));
    assert_eq!(all.len(), 1, "{all:#?}");
    assert!(
        all[0].message.contains("`timeout: 0`"),
        "{}",
        all[0].message
    );
}

#[test]
fn regression_health_interval_zero_or_longer_than_the_timeout_is_rejected() {
    // A zero interval was silently raised to 10 ms; an interval above the timeout was accepted.
    expect(
        &health("interval: 0s"),
        "bad-value",
        9,
        45,
        "interval: 500ms",
    );
    expect(
        &health("timeout: 2s, interval: 5s"),
        "bad-value",
        9,
        58,
        "`interval: 200ms`",
    );
    let all = errors(&health("timeout: 2s, interval: 5s"));
    assert!(
        all[0]
            .message
            .contains("probes every 5s but gives up after 2s"),
        "{}",
        all[0].message
    );
    // No interval written: the default 500ms is longer than a 100ms timeout.
    expect(
        &health("timeout: 100ms"),
        "bad-value",
        9,
        44,
        "`interval: 10ms`",
    );
}

#[test]
fn health_interval_up_to_the_timeout_is_fine() {
    let y = health("timeout: 2s, interval: 2s");
    let fleet = parse_sources(&[("f.yaml".into(), y)], None).unwrap();
    let h = fleet.services[0].health.as_ref().unwrap();
    assert_eq!((h.timeout_ms, h.interval_ms), (2_000, 2_000));
}

// ---- values too large ----------------------------------------------------------------------

#[test]
fn regression_huge_quantities_say_too_large_and_name_the_largest() {
    // `cpu: 1e308` said "unknown CPU unit `e308`", `memory: 99999999Ti` "is not a valid number".
    let y = format!(
        "{BASE}services:\n  - name: web\n    resources: {{ cpu: 1e308, memory: 99999999Ti }}\n"
    );
    let all = errors(&y);
    let msgs: Vec<(usize, &str)> = all
        .iter()
        .map(|d| (d.location.as_ref().unwrap().col, d.message.as_str()))
        .collect();
    assert_eq!(
        msgs,
        [
            (
                23,
                "resources of service `web` `cpu`: `1e308` is too large: the largest CPU quantity is 1000000000 cores"
            ),
            (
                38,
                "resources of service `web` `memory`: `99999999Ti` is too large: the largest size is 1024Pi (2^60 bytes)"
            ),
        ]
    );
}

#[test]
fn huge_counts_and_fleet_totals_are_too_large() {
    expect(
        "phoenix: 1\nname: demo\nsites:\n  - { name: a, tier: core, hosts: 99999999999, capacity: {} }\n",
        "bad-value",
        4,
        35,
        "",
    );
    let y = format!(
        "{BASE}services:\n{}",
        "  - { name: s, replicas: 600000 }\n  - { name: t, replicas: 600000 }\n"
    );
    let all = errors(&y);
    let d = all
        .iter()
        .find(|d| d.code == "too-large")
        .expect("too-large");
    assert!(d.message.contains("service `t`"), "{}", d.message);
    assert!(d.message.contains("1000000 instances"), "{}", d.message);
}

#[test]
fn totals_beyond_64_bits_are_an_error_not_a_planner_panic() {
    // 1024Pi per instance times a million replicas is 2^80 bytes: the planner's arithmetic
    // fails loudly on it, so the spec refuses it first.
    let y = format!(
        "{BASE}services:\n  - name: web\n    replicas: 1-1000000\n    resources: {{ storage: 1024Pi }}\n"
    );
    let all = errors(&y);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].code, "too-large");
    assert!(
        all[0].message.contains("service `web`") && all[0].message.contains("storage demand"),
        "{}",
        all[0].message
    );
}

// ---- names ---------------------------------------------------------------------------------

#[test]
fn regression_unicode_fleet_name_is_one_error_with_a_useful_hint() {
    // `name: "dém○"` gave a second error "missing required field `name`" and the hint "e.g. ``".
    let all = errors("phoenix: 1\nname: \"dém○\"\n");
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].code, "bad-name");
    assert!(
        all[0].message.contains("`é` and `○` are not allowed"),
        "{}",
        all[0].message
    );
    assert!(
        all[0].hint.as_deref().unwrap().ends_with("e.g. `dem`"),
        "{:?}",
        all[0].hint
    );
    let all = errors("phoenix: 1\nname: \"○○\"\n");
    assert_eq!(all.len(), 1, "{all:#?}");
    assert!(
        all[0].hint.as_deref().unwrap().ends_with("e.g. `my-fleet`"),
        "{:?}",
        all[0].hint
    );
}

#[test]
fn regression_unicode_service_name_is_one_error_and_references_to_it_resolve() {
    let y = format!(
        "{BASE}services:\n  - name: \"wéb○\"\n  - name: api\n    depends_on: [\"wéb○\"]\n  - name: \"○\"\n"
    );
    let all = errors(&y);
    let codes: Vec<&str> = all.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["bad-name", "bad-name"], "{all:#?}");
    assert!(all[0].hint.as_deref().unwrap().ends_with("e.g. `web`"));
    assert!(all[1].hint.as_deref().unwrap().ends_with("e.g. `web`"));
    assert!(
        !all.iter()
            .any(|d| d.hint.as_deref().unwrap_or("").contains("``"))
    );
}

#[test]
fn a_fleet_name_that_is_not_text_is_one_error_and_the_rest_is_still_checked() {
    let y = "phoenix: 1\nname: [a]\nservices:\n  - name: web\n    replica: 2\n";
    let codes: Vec<&str> = errors(y).iter().map(|d| d.code).collect();
    assert_eq!(codes, ["wrong-type", "unknown-field"]);
    let y = "phoenix: 1\nservices:\n  - name: web\n    replica: 2\n";
    let codes: Vec<&str> = errors(y).iter().map(|d| d.code).collect();
    assert_eq!(codes, ["missing-field", "unknown-field"]);
}

#[test]
fn validator_set_applies_to_validators_only() {
    expect(
        &format!("{BASE}services:\n  - name: web\n    validator_set: chain\n"),
        "bad-value",
        9,
        20,
        "role: validator",
    );
    expect(
        &format!("{BASE}services:\n  - name: v\n    role: validator\n    validator_set: Chain\n"),
        "bad-name",
        10,
        20,
        "e.g. `chain`",
    );
}
