//! `jobs:` (an extension): one-shot jobs beside services, sharing their namespace and graph.

use phoenix_spec::{Diagnostic, Fleet, HookWhen, parse_sources};

// Line 7 is `services:`, so a job's lines in these tests start at line 11.
const BASE: &str = "phoenix: 1\nname: demo\nsites:\n  - name: core-1\n    tier: core\n    capacity: { cpu: 8, memory: 16Gi, storage: 100G }\nservices:\n  - name: web\n    command: [\"sleep\", \"60\"]\n    phase: 2\n";

fn parse(yaml: &str) -> Result<Fleet, Vec<Diagnostic>> {
    parse_sources(&[("f.yaml".to_string(), yaml.to_string())], None).map_err(|d| d.items)
}

/// The one diagnostic with `code`, at `line:col`, whose message contains `msg`.
#[track_caller]
fn expect(extra: &str, code: &str, line: usize, col: usize, msg: &str) -> Diagnostic {
    let all = parse(&format!("{BASE}{extra}")).expect_err("expected errors");
    let found: Vec<&Diagnostic> = all.iter().filter(|d| d.code == code).collect();
    assert_eq!(found.len(), 1, "one `{code}` expected in {all:#?}");
    let d = found[0];
    let loc = d.location.as_ref().expect("located");
    assert_eq!((loc.line, loc.col), (line, col), "{d:#?}");
    assert!(
        d.message.contains(msg),
        "message {:?} lacks {msg:?}",
        d.message
    );
    d.clone()
}

#[test]
fn a_job_is_one_instance_that_never_restarts_with_defaults() {
    let f = parse(&format!(
        "{BASE}jobs:\n  - name: migrate\n    command: [\"sh\", \"-c\", \"echo ${{instance}} > ${{data_dir}}/x\"]\n    env: {{ SITE: \"${{site}}\" }}\n"
    ))
    .unwrap();
    let job = f.service("migrate").unwrap();
    assert!(job.is_job());
    assert_eq!(f.jobs().count(), 1);
    assert_eq!(job.replicas.min, 1);
    assert_eq!(job.restart, phoenix_spec::RestartPolicy::Never);
    let j = job.job.as_ref().unwrap();
    assert_eq!(j.timeout_ms, phoenix_spec::DEFAULT_JOB_TIMEOUT_MS);
    assert_eq!((j.retries, j.backoff_ms), (0, 1_000));
    assert!(j.hook.is_none());
    assert_eq!(job.phase, 1);
}

#[test]
fn timeout_retries_backoff_and_the_backoff_doubles_with_a_cap() {
    let f = parse(&format!(
        "{BASE}jobs:\n  - name: seed\n    command: [\"true\"]\n    timeout: 2s\n    retries: 3\n    backoff: 200ms\n"
    ))
    .unwrap();
    let j = f.service("seed").unwrap().job.clone().unwrap();
    assert_eq!((j.timeout_ms, j.retries, j.backoff_ms), (2_000, 3, 200));
    assert_eq!(
        (1..=4).map(|a| j.delay_before(a)).collect::<Vec<_>>(),
        [0, 200, 400, 800]
    );
    let mut long = j.clone();
    long.backoff_ms = 60_000;
    assert_eq!(long.delay_before(40), phoenix_spec::MAX_JOB_BACKOFF_MS);
}

#[test]
fn depends_on_works_both_ways_between_jobs_and_services() {
    let f = parse(&format!(
        "{BASE}    depends_on: [migrate]\njobs:\n  - name: migrate\n    command: [\"true\"]\n  - name: smoke\n    command: [\"true\"]\n    phase: 2\n    depends_on: [web]\n"
    ))
    .unwrap();
    assert_eq!(f.service("web").unwrap().depends_on, ["migrate"]);
    assert_eq!(f.service("smoke").unwrap().depends_on, ["web"]);
}

#[test]
fn hooks_become_dependencies_and_take_the_service_phase() {
    let f = parse(&format!(
        "{BASE}jobs:\n  - name: backup\n    command: [\"true\"]\n    hook: {{ before: web }}\n  - name: smoke\n    command: [\"true\"]\n    hook: {{ after: web }}\n"
    ))
    .unwrap();
    let backup = f.service("backup").unwrap();
    assert_eq!(backup.phase, 2, "a hook job takes its service's phase");
    assert_eq!(
        backup.job.as_ref().unwrap().hook.as_ref().unwrap().when,
        HookWhen::Before
    );
    assert_eq!(f.service("web").unwrap().depends_on, ["backup"]);
    assert_eq!(f.service("smoke").unwrap().depends_on, ["web"]);
}

#[test]
fn a_job_with_a_services_name_is_an_error_at_the_job() {
    let d = expect(
        "jobs:\n  - name: web\n    command: [\"true\"]\n",
        "duplicate-name",
        12,
        5,
        "job `web` has the name of a service",
    );
    assert!(d.hint.unwrap().contains("share one namespace"));
}

#[test]
fn unknown_hook_target_is_located_at_the_hook_with_a_suggestion() {
    let d = expect(
        "jobs:\n  - name: backup\n    command: [\"true\"]\n    hook: { before: wbe }\n",
        "unknown-reference",
        14,
        11,
        "unknown service or job `wbe`",
    );
    assert!(d.hint.unwrap().contains("did you mean `web`?"));
}

#[test]
fn unknown_dependency_of_a_job_names_services_and_jobs() {
    expect(
        "jobs:\n  - name: migrate\n    command: [\"true\"]\n    depends_on: [dbb]\n",
        "unknown-reference",
        14,
        18,
        "job `migrate` refers to unknown service or job `dbb`",
    );
}

#[test]
fn service_only_fields_and_bad_values_are_located() {
    expect(
        "jobs:\n  - name: m\n    command: [\"true\"]\n    replicas: 2\n",
        "unknown-field",
        14,
        5,
        "replicas",
    );
    expect(
        "jobs:\n  - name: m\n    command: [\"true\"]\n    timeout: 0s\n",
        "bad-value",
        14,
        14,
        "zero",
    );
    expect(
        "jobs:\n  - name: m\n    command: [\"true\"]\n    retries: 1000\n",
        "too-large",
        14,
        14,
        "at most 100 retries",
    );
    expect("jobs:\n  - name: m\n", "missing-field", 12, 5, "`command`");
    expect(
        "jobs:\n  - name: m\n    command: [\"true\"]\n    hook: { before: web, after: web }\n",
        "bad-value",
        14,
        33,
        "more than one of `before`, `after` and `rollback`",
    );
    expect(
        "jobs:\n  - name: m\n    command: [\"echo\", \"${port}\"]\n",
        "unknown-substitution",
        13,
        23,
        "${port}",
    );
}

#[test]
fn a_cycle_through_a_hook_is_reported_as_the_loop() {
    // web depends on the job through the hook; the job depends on web.
    let all = parse(&format!(
        "{BASE}jobs:\n  - name: backup\n    command: [\"true\"]\n    depends_on: [web]\n    hook: {{ before: web }}\n"
    ))
    .expect_err("a cycle");
    assert!(
        all.iter().any(|d| d.code == "cycle"
            && d.message.contains("backup")
            && d.message.contains("web")),
        "{all:#?}"
    );
}

#[test]
fn environments_may_change_jobs() {
    let f = parse_sources(
        &[(
            "f.yaml".into(),
            format!(
                "{BASE}jobs:\n  - name: m\n    command: [\"true\"]\nenvironments:\n  ci:\n    jobs: {{ m: {{ retries: 2 }} }}\n"
            ),
        )],
        Some("ci"),
    )
    .unwrap();
    assert_eq!(f.service("m").unwrap().job.as_ref().unwrap().retries, 2);
}

/// `for_each: S` (an extension): one run per instance of `S`; without a hook it runs before `S`
/// (S depends on it, located at `for_each`) and takes S's phase.
#[test]
fn for_each_orders_the_job_before_its_target_unless_a_hook_says_otherwise() {
    let f = parse(&format!(
        "{BASE}    replicas: 2\njobs:\n  - name: init\n    command: [\"true\"]\n    for_each: web\n  - name: seed\n    command: [\"true\"]\n    for_each: web\n    hook: {{ after: web }}\n"
    ))
    .unwrap();
    let init = f.service("init").unwrap();
    assert_eq!(init.job.as_ref().unwrap().for_each.as_deref(), Some("web"));
    assert_eq!(init.phase, 2, "a for_each job takes its target's phase");
    assert_eq!(init.replicas.min, 1, "the plan still lists the job once");
    assert_eq!(
        f.service("web").unwrap().depends_on,
        ["init"],
        "seed's hook, not its for_each, orders it (after web)"
    );
    assert_eq!(f.service("seed").unwrap().depends_on, ["web"]);
}

#[test]
fn for_each_problems_are_located_at_the_value() {
    let d = expect(
        "jobs:\n  - name: init\n    command: [\"true\"]\n    for_each: wbe\n",
        "unknown-reference",
        14,
        15,
        "the `for_each` of job `init` refers to unknown service or job `wbe`",
    );
    assert!(d.hint.unwrap().contains("did you mean `web`?"));
    expect(
        "jobs:\n  - name: init\n    command: [\"true\"]\n    for_each: init\n",
        "cycle",
        14,
        15,
        "names itself",
    );
    expect(
        "jobs:\n  - name: a\n    command: [\"true\"]\n    for_each: web\n  - name: b\n    command: [\"true\"]\n    for_each: a\n",
        "bad-value",
        17,
        15,
        "which has a `for_each` of its own",
    );
}

/// `hook: {rollback: S}` adds no dependency: the job runs only when a rollback follows a
/// change of `S`, so it sits in no wave before or after `S`.
#[test]
fn a_rollback_hook_adds_no_dependency() {
    let f = parse(&format!(
        "{BASE}jobs:\n  - name: restore\n    command: [\"true\"]\n    hook: {{ rollback: web }}\n"
    ))
    .unwrap();
    let restore = f.service("restore").unwrap();
    assert!(restore.is_rollback_job());
    assert_eq!(
        restore.job.as_ref().unwrap().hook.as_ref().unwrap().when,
        HookWhen::Rollback
    );
    assert!(f.service("web").unwrap().depends_on.is_empty());
    assert!(restore.depends_on.is_empty());
    assert!(!f.service("web").unwrap().is_rollback_job());
    expect(
        "jobs:\n  - name: r\n    command: [\"true\"]\n    hook: { rollback: wbe }\n",
        "unknown-reference",
        14,
        11,
        "unknown service or job `wbe`",
    );
}
