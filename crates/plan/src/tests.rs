//! Scenario tests of `plan()`, one computation at a time, on fleets built in code.

use crate::testing::{empty, fleet, project, service};
use crate::{Finding, Plan, Severity, code, plan, to_json};
use phoenix_spec::quantity::Range;
use phoenix_spec::{Budget, Fleet, Resources, Role, Spread, Tier};

const GI: u64 = 1 << 30;
const CORE: u64 = 1000;

fn with_code<'p>(p: &'p Plan, c: &str) -> Vec<&'p Finding> {
    p.findings.iter().filter(|f| f.code == c).collect()
}

fn one_with_code<'p>(p: &'p Plan, c: &str) -> &'p Finding {
    let found = with_code(p, c);
    assert_eq!(
        found.len(),
        1,
        "expected one `{c}` finding, got {:#?}",
        p.findings
    );
    found[0]
}

fn counts(p: &Plan, svc: &str) -> Vec<u64> {
    p.services[svc].placement.values().copied().collect()
}

fn big_core_fleet() -> Fleet {
    fleet(&[("core-1", Tier::Core, 4, 64 * CORE, 256 * GI)], &[])
}

// ---- demand -------------------------------------------------------------------------------

#[test]
fn service_demand_is_range_times_range() {
    let mut f = big_core_fleet();
    let mut s = service("db", 2, 0, 0);
    s.replicas = Range::new(2, 4);
    s.resources.cpu = Range::new(CORE, 2 * CORE);
    f.services.push(s);
    let p = plan(&f);
    assert_eq!(
        p.services["db"].demand.0.cpu,
        Range::new(2 * CORE, 8 * CORE)
    );
    assert_eq!(p.totals.demand.0.cpu, Range::new(2 * CORE, 8 * CORE));
    assert_eq!(
        p.totals.deployed.0.cpu,
        Range::new(2 * CORE, 4 * CORE),
        "apply deploys replicas.min"
    );
}

#[test]
fn hosted_on_attributes_transitively_and_counts_once() {
    let mut f = big_core_fleet();
    let mut tenant = project("tenant");
    tenant.hosted_on = Some("platform".into());
    let mut platform = project("platform");
    platform.hosted_on = Some("infra".into());
    f.projects = vec![project("infra"), platform, tenant, project("other")];
    for (name, proj, cpu) in [
        ("hw", "infra", 1),
        ("k8s", "platform", 2),
        ("vm", "tenant", 4),
        ("app", "other", 8),
    ] {
        let mut s = service(name, 1, cpu * CORE, GI);
        s.project = Some(proj.into());
        f.services.push(s);
    }
    f.services.push(service("loose", 1, 16 * CORE, GI));
    let p = plan(&f);
    let cpu = |n: &str| p.projects[n].demand.0.cpu.min / CORE;
    assert_eq!(
        (cpu("infra"), cpu("platform"), cpu("tenant"), cpu("other")),
        (7, 0, 0, 8)
    );
    assert_eq!(p.projects["tenant"].own_demand.0.cpu.min, 4 * CORE);
    assert_eq!(p.projects["tenant"].counted_under, "infra");
    assert_eq!(p.projects["infra"].hosts, ["platform", "tenant"]);
    let loose = p.unassigned.as_ref().unwrap();
    assert_eq!(
        (loose.name.as_str(), loose.demand.0.cpu.min),
        ("(none)", 16 * CORE)
    );
    let sum: u64 =
        p.projects.values().map(|x| x.demand.0.cpu.min).sum::<u64>() + loose.demand.0.cpu.min;
    assert_eq!(
        sum, p.totals.demand.0.cpu.min,
        "every unit counted exactly once"
    );
}

#[test]
fn demand_by_phase_and_tier() {
    let mut f = fleet(
        &[
            ("core-1", Tier::Core, 1, 16 * CORE, 64 * GI),
            ("edge-1", Tier::Edge, 1, 4 * CORE, 8 * GI),
        ],
        &[("a", 2, CORE, GI), ("b", 1, 2 * CORE, GI)],
    );
    f.services[0].placement.tier = Some(Tier::Edge);
    f.services[1].phase = 2;
    f.services[1].placement.tier = Some(Tier::Core);
    let p = plan(&f);
    let phases: Vec<(u32, u64)> = p
        .phases
        .iter()
        .map(|x| (x.phase, x.demand.0.cpu.min / CORE))
        .collect();
    assert_eq!(phases, [(1, 2), (2, 2)]);
    let tiers: Vec<(Tier, u64, u64)> = p
        .tiers
        .iter()
        .map(|t| (t.tier, t.instances, t.demand.0.cpu.min / CORE))
        .collect();
    assert_eq!(tiers, [(Tier::Core, 1, 2), (Tier::Edge, 2, 2)]);
    assert_eq!(p.sites["edge-1"].demand.0.memory, Range::exact(2 * GI));
}

#[test]
fn disabled_services_are_planned_counted_and_flagged() {
    let mut f = fleet(
        &[("core-1", Tier::Core, 1, 16 * CORE, 64 * GI)],
        &[("later", 2, CORE, GI)],
    );
    f.services[0].enabled = false;
    let p = plan(&f);
    assert_eq!(p.services["later"].placed, 2);
    assert!(!p.services["later"].enabled);
    assert_eq!(p.totals.demand.0.cpu.min, 2 * CORE);
    assert_eq!(
        one_with_code(&p, code::SERVICE_DISABLED).severity,
        Severity::Info
    );
}

// ---- placement ----------------------------------------------------------------------------

#[test]
fn instances_are_numbered_from_zero_and_all_listed() {
    let f = fleet(
        &[("core-1", Tier::Core, 1, 16 * CORE, 64 * GI)],
        &[("web", 3, CORE, GI)],
    );
    let p = plan(&f);
    let ids: Vec<&str> = p.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["web-0", "web-1", "web-2"]);
    assert!(
        p.instances
            .iter()
            .all(|i| i.site.as_deref() == Some("core-1") && i.host == Some(0))
    );
}

#[test]
fn packing_fills_one_host_before_the_next() {
    let f = fleet(
        &[("core-1", Tier::Core, 3, 4 * CORE, 16 * GI)],
        &[("web", 5, CORE, 4 * GI)],
    );
    let p = plan(&f);
    let per_host: Vec<u64> = p.sites["core-1"]
        .host_loads
        .iter()
        .map(|h| h.instances)
        .collect();
    assert_eq!(per_host.iter().sum::<u64>(), 5);
    assert_eq!(
        per_host.iter().filter(|&&n| n == 4).count(),
        1,
        "one host full: {per_host:?}"
    );
}

#[test]
fn best_fit_decreasing_places_big_instances_first() {
    // Two hosts of 8 cores. Greedy in file order would put the 2-core service on both hosts
    // and leave no room for two 7-core instances; biggest first fits everything.
    let f = fleet(
        &[("core-1", Tier::Core, 2, 8 * CORE, 64 * GI)],
        &[("small", 2, CORE, GI), ("large", 2, 7 * CORE, GI)],
    );
    let p = plan(&f);
    assert!(
        with_code(&p, code::UNPLACEABLE).is_empty(),
        "{:#?}",
        p.findings
    );
}

#[test]
fn tier_site_list_and_phase_constraints_are_honoured() {
    let mut f = fleet(
        &[
            ("core-1", Tier::Core, 1, 64 * CORE, 64 * GI),
            ("core-2", Tier::Core, 1, 64 * CORE, 64 * GI),
            ("edge-1", Tier::Edge, 1, 64 * CORE, 64 * GI),
        ],
        &[
            ("pinned", 4, CORE, GI),
            ("edgy", 4, CORE, GI),
            ("early", 4, CORE, GI),
        ],
    );
    f.services[0].placement.sites = vec!["core-2".into()];
    f.services[1].placement.tier = Some(Tier::Edge);
    f.sites[0].phase = 2;
    f.sites[2].phase = 2;
    let p = plan(&f);
    assert_eq!(
        p.services["pinned"].placement.keys().collect::<Vec<_>>(),
        ["core-2"]
    );
    assert_eq!(
        p.services["early"].placement.keys().collect::<Vec<_>>(),
        ["core-2"],
        "phase-1 service avoids phase-2 sites"
    );
    let why = &one_with_code(&p, code::UNPLACEABLE).message;
    assert!(
        why.contains("edgy") && why.contains("phase 1") && why.contains("edge-1"),
        "{why}"
    );
}

#[test]
fn spread_by_site_is_even_and_round_robin() {
    let mut f = fleet(
        &[
            ("core-1", Tier::Core, 2, 64 * CORE, 64 * GI),
            ("core-2", Tier::Core, 2, 64 * CORE, 64 * GI),
            ("core-3", Tier::Core, 2, 64 * CORE, 64 * GI),
            ("core-4", Tier::Core, 2, 64 * CORE, 64 * GI),
        ],
        &[("val", 10, CORE, GI)],
    );
    f.services[0].placement.spread = Spread::Site;
    let p = plan(&f);
    assert_eq!(counts(&p, "val"), [3, 3, 2, 2]);
    let first: Vec<&str> = p.instances[..4]
        .iter()
        .map(|i| i.site.as_deref().unwrap())
        .collect();
    assert_eq!(first, ["core-1", "core-2", "core-3", "core-4"]);
}

#[test]
fn spread_by_site_reports_uneven_spread_when_a_site_is_small() {
    let mut f = fleet(
        &[
            ("a", Tier::Core, 1, 64 * CORE, 64 * GI),
            ("b", Tier::Core, 1, 64 * CORE, 64 * GI),
            ("c", Tier::Core, 1, CORE, 64 * GI),
        ],
        &[("val", 9, CORE, GI)],
    );
    f.services[0].placement.spread = Spread::Site;
    let p = plan(&f);
    assert_eq!(counts(&p, "val"), [4, 4, 1]);
    let w = one_with_code(&p, code::SPREAD_UNEVEN);
    assert!(w.message.contains("c (1)"), "{}", w.message);
}

#[test]
fn spread_by_host_takes_host_zero_of_every_site_first() {
    let mut f = fleet(
        &[
            ("a", Tier::Core, 3, 64 * CORE, 64 * GI),
            ("b", Tier::Core, 3, 64 * CORE, 64 * GI),
        ],
        &[("val", 4, CORE, GI)],
    );
    f.services[0].placement.spread = Spread::Host;
    let p = plan(&f);
    let at: Vec<(String, u32)> = p
        .instances
        .iter()
        .map(|i| (i.site.clone().unwrap(), i.host.unwrap()))
        .collect();
    assert_eq!(
        at,
        [
            ("a".into(), 0),
            ("b".into(), 0),
            ("a".into(), 1),
            ("b".into(), 1)
        ]
    );
}

#[test]
fn regression_spread_by_site_on_one_site_is_a_spread_unmet_warning() {
    // `xai.yaml --env staging` placed 3 replicas with `spread: site` on its one site without a
    // finding.
    let mut f = fleet(
        &[("aws-az-1", Tier::Core, 1, 64 * CORE, 64 * GI)],
        &[("redis", 3, CORE, GI)],
    );
    f.services[0].placement.spread = Spread::Site;
    let p = plan(&f);
    let w = one_with_code(&p, code::SPREAD_UNMET);
    assert_eq!(w.severity, Severity::Warning);
    assert_eq!(
        w.message,
        "service `redis`: 3 replicas with spread: site on 1 site (needs 3 sites; 2 instances share a site): aws-az-1 is its only eligible site"
    );
    assert_eq!(
        (w.service.as_deref(), w.site.as_deref()),
        (Some("redis"), Some("aws-az-1"))
    );
    f.services[0].replicas = Range::exact(2);
    let p = plan(&f);
    assert!(
        one_with_code(&p, code::SPREAD_UNMET)
            .message
            .contains("(needs 2 sites; 1 instance shares a site)")
    );
}

#[test]
fn regression_spread_by_host_on_one_host_is_a_spread_unmet_warning() {
    let mut f = fleet(
        &[("a", Tier::Core, 1, 64 * CORE, 64 * GI)],
        &[("db", 2, CORE, GI)],
    );
    f.services[0].placement.spread = Spread::Host;
    let p = plan(&f);
    let w = one_with_code(&p, code::SPREAD_UNMET);
    assert_eq!(
        w.message,
        "service `db`: 2 replicas with spread: host on 1 host (needs 2 hosts; 1 instance shares a host): a/0 is its only eligible host"
    );
    assert_eq!((w.site.as_deref(), w.host), (Some("a"), Some(0)));
}

#[test]
fn spread_unmet_when_the_other_sites_are_full_names_them() {
    let mut f = fleet(
        &[
            ("a", Tier::Core, 1, 64 * CORE, 64 * GI),
            ("b", Tier::Core, 1, CORE / 2, 64 * GI),
            ("c", Tier::Core, 1, CORE / 2, 64 * GI),
        ],
        &[("web", 3, CORE, GI)],
    );
    f.services[0].placement.spread = Spread::Site;
    let p = plan(&f);
    let w = one_with_code(&p, code::SPREAD_UNMET);
    assert!(
        w.message
            .ends_with("all are on a; the other eligible sites had no room: b, c"),
        "{}",
        w.message
    );
}

#[test]
fn spread_that_separates_instances_is_met() {
    // Two sites for three replicas: one site holds two, but losing either keeps an instance.
    let mut f = fleet(
        &[
            ("a", Tier::Core, 1, 64 * CORE, 64 * GI),
            ("b", Tier::Core, 1, 64 * CORE, 64 * GI),
        ],
        &[("web", 3, CORE, GI), ("one", 1, CORE, GI)],
    );
    f.services[0].placement.spread = Spread::Site;
    f.services[1].placement.spread = Spread::Site;
    f.services[1].placement.sites = vec!["a".into()];
    let p = plan(&f);
    assert!(
        with_code(&p, code::SPREAD_UNMET).is_empty(),
        "{:#?}",
        p.findings
    );
}

#[test]
fn unplaceable_names_the_missing_tier() {
    let mut f = fleet(
        &[("core-1", Tier::Core, 1, 64 * CORE, 64 * GI)],
        &[("light", 3, CORE, GI)],
    );
    f.services[0].placement.tier = Some(Tier::Edge);
    let p = plan(&f);
    let m = &one_with_code(&p, code::UNPLACEABLE).message;
    assert!(
        m.contains("no site of tier edge") && m.contains("core sites only"),
        "{m}"
    );
    assert!(p.instances.iter().all(|i| i.site.is_none()));
}

#[test]
fn unplaceable_names_the_host_size() {
    let mut f = fleet(
        &[("core-1", Tier::Core, 4, 8 * CORE, 64 * GI)],
        &[("big", 1, 16 * CORE, GI)],
    );
    f.policy.cpu_overcommit = 1.5;
    let p = plan(&f);
    let m = &one_with_code(&p, code::UNPLACEABLE).message;
    assert!(
        m.contains(
            "largest eligible host has 8 cores (12 cores with the CPU overcommit ratio 1.5)"
        ),
        "{m}"
    );
    assert!(m.contains("needs 16 cores"), "{m}");
}

#[test]
fn unplaceable_names_exhausted_sites_and_the_shortfall() {
    let f = fleet(
        &[
            ("a", Tier::Core, 1, 64 * CORE, 8 * GI),
            ("b", Tier::Core, 1, 64 * CORE, 8 * GI),
        ],
        &[("db", 5, CORE, 4 * GI)],
    );
    let p = plan(&f);
    let m = &one_with_code(&p, code::UNPLACEABLE).message;
    assert!(m.contains("1 of 5 instances cannot be placed"), "{m}");
    assert!(
        m.contains("capacity exhausted at sites a, b")
            && m.contains("(memory)")
            && m.contains("4Gi memory"),
        "{m}"
    );
}

#[test]
fn placement_accounts_upper_bounds_against_lower_capacity() {
    let mut f = fleet(&[("a", Tier::Core, 1, 64 * CORE, 0)], &[("db", 3, CORE, 0)]);
    f.sites[0].capacity.memory = Range::new(8 * GI, 64 * GI);
    f.services[0].resources.memory = Range::new(GI, 3 * GI);
    let p = plan(&f);
    assert_eq!(
        p.services["db"].placed, 2,
        "3 x 3Gi does not fit the 8Gi guaranteed"
    );
}

// ---- capacity -----------------------------------------------------------------------------

#[test]
fn site_capacity_is_per_host_times_hosts() {
    let p = plan(&fleet(&[("a", Tier::Core, 3, 8 * CORE, 16 * GI)], &[]));
    assert_eq!(p.sites["a"].capacity.0.cpu, Range::exact(24 * CORE));
    assert_eq!(p.totals.capacity.0.memory, Range::exact(48 * GI));
}

#[test]
fn cpu_overcommit_within_ratio_is_a_warning_naming_site_and_host() {
    let mut f = fleet(
        &[("a", Tier::Core, 2, 8 * CORE, 64 * GI)],
        &[("cpu-hog", 3, 4 * CORE, GI)],
    );
    f.policy.cpu_overcommit = 2.0;
    let p = plan(&f);
    assert_eq!(p.services["cpu-hog"].placed, 3);
    let w = one_with_code(&p, code::CPU_OVERCOMMIT);
    assert_eq!(
        (w.severity, w.site.as_deref(), w.host),
        (Severity::Warning, Some("a"), Some(0))
    );
    assert!(
        w.message.contains("host 0 carries up to 12 cores"),
        "{}",
        w.message
    );
    assert!(with_code(&p, code::OVER_CAPACITY).is_empty());
}

#[test]
fn fleet_demand_above_capacity_is_an_error_with_the_amount() {
    let mut f = fleet(
        &[("a", Tier::Core, 1, 64 * CORE, 16 * GI)],
        &[("db", 2, CORE, 4 * GI)],
    );
    f.services[0].replicas = Range::new(2, 6);
    let p = plan(&f);
    let e = one_with_code(&p, code::OVER_CAPACITY);
    assert_eq!(e.severity, Severity::Error);
    assert!(
        e.message.starts_with("fleet") && e.message.contains("by up to 8Gi"),
        "{}",
        e.message
    );
}

#[test]
fn utilisation_is_worst_case_percent() {
    let p = plan(&fleet(
        &[("a", Tier::Core, 1, 8 * CORE, 16 * GI)],
        &[("web", 2, CORE, 4 * GI)],
    ));
    let u = p.sites["a"].utilisation;
    assert_eq!((u.cpu, u.memory), (Some(25.0), Some(50.0)));
    assert_eq!(u.storage, Some(0.0));
}

// ---- BFT ----------------------------------------------------------------------------------

fn validators(sites: usize, hosts: u32, n: u64, spread: Spread) -> Fleet {
    let names: Vec<String> = (1..=sites).map(|i| format!("core-{i}")).collect();
    let specs: Vec<(&str, Tier, u32, u64, u64)> = names
        .iter()
        .map(|n| (n.as_str(), Tier::Core, hosts, 64 * CORE, 256 * GI))
        .collect();
    let mut f = fleet(&specs, &[("val", n, 8 * CORE, 32 * GI)]);
    f.services[0].role = Role::Validator;
    f.services[0].placement.spread = spread;
    f
}

#[test]
fn three_validators_tolerate_nothing() {
    let p = plan(&validators(3, 1, 3, Spread::Site));
    let set = &p.validator_sets[0];
    assert_eq!((set.n, set.f, set.quorum, set.safe), (3, 0, 3, false));
    let e = one_with_code(&p, code::BFT_UNSAFE);
    assert!(e.message.contains("at least 4"), "{}", e.message);
}

#[test]
fn losing_one_site_must_not_lose_more_than_f() {
    let p = plan(&validators(2, 1, 4, Spread::Site));
    let set = &p.validator_sets[0];
    assert_eq!(
        (set.n, set.f, set.worst_site.clone()),
        (4, 1, Some(("core-1".into(), 2)))
    );
    let e = one_with_code(&p, code::BFT_UNSAFE);
    assert_eq!(e.site.as_deref(), Some("core-1"));
    assert!(
        e.message
            .contains("losing site core-1 loses 2 validators, more than f=1"),
        "{}",
        e.message
    );
}

#[test]
fn validators_one_per_site_are_safe() {
    let p = plan(&validators(4, 1, 4, Spread::Site));
    assert!(p.validator_sets[0].safe);
    assert!(with_code(&p, code::BFT_UNSAFE).is_empty());
    let p = plan(&validators(7, 1, 7, Spread::Site));
    assert_eq!((p.validator_sets[0].f, p.validator_sets[0].quorum), (2, 5));
}

#[test]
fn spread_by_host_on_one_site_is_still_unsafe_by_site() {
    let p = plan(&validators(1, 4, 4, Spread::Host));
    let set = &p.validator_sets[0];
    assert_eq!(set.worst_host, Some(("core-1/0".into(), 1)));
    let e = one_with_code(&p, code::BFT_UNSAFE);
    assert!(
        e.message.contains("losing site core-1 loses 4"),
        "{}",
        e.message
    );
}

#[test]
fn spread_by_host_checks_hosts_too() {
    // 4 validators, 1 host at each of 2 sites, 2 hosts at another: by-host spread puts two on
    // no host, so this is safe by host but not by site.
    let mut f = validators(4, 1, 4, Spread::Host);
    f.sites[0].hosts = 1;
    let p = plan(&f);
    assert!(p.validator_sets[0].safe, "{:#?}", p.validator_sets);
    // Packed onto one host of a 2-host site by capacity: the host is the problem.
    let mut f = validators(1, 2, 4, Spread::Host);
    f.sites[0].capacity.cpu = Range::exact(32 * CORE);
    f.services[0].resources.cpu = Range::exact(8 * CORE);
    let p = plan(&f);
    let msgs: Vec<&str> = with_code(&p, code::BFT_UNSAFE)
        .iter()
        .map(|f| f.message.as_str())
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains("losing host core-1/0 loses 2")),
        "{msgs:#?}"
    );
}

/// `sites` core sites of one host each, and one validator service per `(name, phase, n,
/// sites it may use)`, all in validator set `chain`.
fn growing_set(sites: usize, services: &[(&str, u32, u64, &[&str])]) -> Fleet {
    let names: Vec<String> = (1..=sites).map(|i| format!("core-{i}")).collect();
    let specs: Vec<(&str, Tier, u32, u64, u64)> = names
        .iter()
        .map(|n| (n.as_str(), Tier::Core, 4, 64 * CORE, 256 * GI))
        .collect();
    let mut f = fleet(&specs, &[]);
    for &(name, phase, n, on) in services {
        let mut s = service(name, n, CORE, GI);
        s.role = Role::Validator;
        s.validator_set = Some("chain".into());
        s.phase = phase;
        s.placement.spread = Spread::Site;
        s.placement.sites = on.iter().map(|x| x.to_string()).collect();
        f.services.push(s);
    }
    f
}

#[test]
fn regression_a_validator_set_grown_by_phase_is_one_set_judged_at_every_phase() {
    // examples/sankofa-global.yaml modelled the one validator network of seed 000 (3
    // validators, then "add validators", then "complete") as three unrelated sets.
    let f = growing_set(
        7,
        &[
            ("val-p1", 1, 3, &["core-1", "core-2", "core-3"]),
            ("val-p2", 2, 4, &["core-4", "core-5"]),
            ("val-p3", 3, 6, &["core-6", "core-7"]),
        ],
    );
    let p = plan(&f);
    assert_eq!(p.validator_sets.len(), 1, "{:#?}", p.validator_sets);
    let set = &p.validator_sets[0];
    assert_eq!(set.name, "chain");
    assert_eq!(set.services, ["val-p1", "val-p2", "val-p3"]);
    let by_phase: Vec<(u32, u64, u64, bool)> = set
        .phases
        .iter()
        .map(|x| (x.phase, x.n, x.f, x.safe))
        .collect();
    // Phase 1: 3 validators, f = 0. Phase 2: 7 on 5 sites, f = 2, at most 2 per site. Phase
    // 3: 13 on 7 sites, f = 4, at most 3 per site.
    assert_eq!(
        by_phase,
        [(1, 3, 0, false), (2, 7, 2, true), (3, 13, 4, true)]
    );
    assert_eq!((set.n, set.f, set.safe), (13, 4, false));
    let e = one_with_code(&p, code::BFT_UNSAFE);
    assert!(
        e.message
            .starts_with("validator set `chain` in phase 1 (n=3, f=0, quorum 3): 3 validators"),
        "{}",
        e.message
    );
    assert_eq!(e.service.as_deref(), Some("val-p1"));
}

#[test]
fn a_set_safe_at_first_can_become_unsafe_in_a_later_phase() {
    let f = growing_set(
        4,
        &[
            ("val-p1", 1, 4, &["core-1", "core-2", "core-3", "core-4"]),
            ("val-p2", 2, 4, &["core-4"]),
        ],
    );
    let p = plan(&f);
    let set = &p.validator_sets[0];
    assert_eq!(
        set.phases.iter().map(|x| x.safe).collect::<Vec<_>>(),
        [true, false]
    );
    let e = one_with_code(&p, code::BFT_UNSAFE);
    assert_eq!(
        (e.service.as_deref(), e.site.as_deref()),
        (Some("val-p2"), Some("core-4"))
    );
    assert!(
        e.message.starts_with(
            "validator set `chain` in phase 2 (n=8, f=2, quorum 6): losing site core-4 loses 5 validators"
        ),
        "{}",
        e.message
    );
}

#[test]
fn validator_services_without_a_set_name_stay_sets_of_their_own() {
    let mut f = growing_set(4, &[("a", 1, 4, &[]), ("b", 2, 4, &[])]);
    for s in &mut f.services {
        s.validator_set = None;
    }
    let p = plan(&f);
    let names: Vec<&str> = p.validator_sets.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(
        p.validator_sets
            .iter()
            .all(|v| v.phases.len() == 1 && v.safe)
    );
}

// ---- dependencies -------------------------------------------------------------------------

#[test]
fn waves_are_topological_levels_within_a_phase() {
    let mut f = fleet(
        &[("a", Tier::Core, 1, 64 * CORE, 64 * GI)],
        &[
            ("db", 1, 0, 0),
            ("api", 1, 0, 0),
            ("web", 1, 0, 0),
            ("cron", 1, 0, 0),
            ("late", 1, 0, 0),
        ],
    );
    f.services[1].depends_on = vec!["db".into()];
    f.services[2].depends_on = vec!["api".into()];
    f.services[4].phase = 2;
    f.services[4].depends_on = vec!["web".into()];
    let p = plan(&f);
    let waves: Vec<(u32, Vec<Vec<String>>)> = p
        .phases
        .iter()
        .map(|x| (x.phase, x.waves.clone()))
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        waves,
        [
            (1, vec![s(&["cron", "db"]), s(&["api"]), s(&["web"])]),
            (2, vec![s(&["late"])])
        ]
    );
    assert_eq!(p.services["web"].wave, 3);
    assert_eq!(
        p.services["late"].wave, 1,
        "a dependency in an earlier phase is met by the phase boundary"
    );
}

#[test]
fn project_dependencies_order_every_service() {
    let mut f = fleet(
        &[("a", Tier::Core, 1, 64 * CORE, 64 * GI)],
        &[
            ("hw", 1, 0, 0),
            ("net", 1, 0, 0),
            ("app", 1, 0, 0),
            ("ui", 1, 0, 0),
        ],
    );
    let mut apps = project("apps");
    apps.depends_on = vec!["infra".into()];
    f.projects = vec![project("infra"), apps];
    for (i, p) in ["infra", "infra", "apps", "apps"].iter().enumerate() {
        f.services[i].project = Some(p.to_string());
    }
    f.services[1].depends_on = vec!["hw".into()];
    let p = plan(&f);
    let w: Vec<usize> = ["hw", "net", "app", "ui"]
        .iter()
        .map(|s| p.services[*s].wave)
        .collect();
    assert_eq!(w, [1, 2, 3, 3]);
    assert!(
        p.dependencies
            .iter()
            .any(|d| d.before == "infra" && d.after == "apps")
    );
}

#[test]
fn a_cycle_built_in_code_is_reported_not_looped_on() {
    let mut f = fleet(&[], &[("a", 1, 0, 0), ("b", 1, 0, 0)]);
    f.services[0].depends_on = vec!["b".into()];
    f.services[1].depends_on = vec!["a".into()];
    let p = plan(&f);
    assert!(
        one_with_code(&p, code::DEPENDENCY_CYCLE)
            .message
            .contains("a, b")
    );
}

// ---- timeline -----------------------------------------------------------------------------

#[test]
fn timeline_min_and_max_separately_with_critical_path() {
    const W: u64 = 168;
    let mut f = empty();
    let mut a = project("a");
    a.duration = Some(Range::new(2 * W, 3 * W));
    let mut b = project("b");
    b.duration = Some(Range::new(W, 2 * W));
    b.depends_on = vec!["a".into()];
    let mut c = project("c");
    c.duration = Some(Range::exact(4 * W));
    f.projects = vec![a, b, c];
    let p = plan(&f);
    let t = p.timeline.as_ref().unwrap();
    assert_eq!(t.length_hours, Range::new(4 * W, 5 * W));
    assert_eq!(t.sequential_hours, Range::new(7 * W, 9 * W));
    assert_eq!(t.critical_path, ["a", "b"]);
    assert_eq!(t.projects["b"].start_hours, Range::new(2 * W, 3 * W));
    let json = to_json(&p);
    assert_eq!(
        json["timeline"]["length_weeks"],
        serde_json::json!({"min": 4.0, "max": 5.0})
    );
}

#[test]
fn no_durations_no_timeline() {
    let mut f = empty();
    f.projects = vec![project("a")];
    assert!(plan(&f).timeline.is_none());
}

// ---- budgets ------------------------------------------------------------------------------

fn budget(cpu: Option<Range>, memory: Option<Range>) -> Budget {
    Budget {
        cpu,
        memory,
        storage: None,
        location: Default::default(),
    }
}

#[test]
fn budget_mismatch_gives_both_numbers_and_the_difference() {
    let mut f = big_core_fleet();
    let mut p = project("bank");
    p.budget = Some(budget(
        Some(Range::new(32 * CORE, 68 * CORE)),
        Some(Range::new(6 * GI, 8 * GI)),
    ));
    f.projects = vec![p];
    let mut s = service("db", 3, 0, 0);
    s.replicas = Range::new(3, 4);
    s.resources = Resources {
        cpu: Range::new(12 * CORE, 17 * CORE),
        memory: Range::exact(2 * GI),
        storage: Range::ZERO,
    };
    s.project = Some("bank".into());
    f.services.push(s);
    let p = plan(&f);
    let m = one_with_code(&p, code::BUDGET_MISMATCH);
    assert_eq!(
        (m.severity, m.project.as_deref()),
        (Severity::Warning, Some("bank"))
    );
    assert!(
        m.message.contains("cpu 32-68 cores")
            && m.message
                .contains("36-68 cores (difference +4 cores / +0 cores)"),
        "{}",
        m.message
    );
}

#[test]
fn budget_within_one_percent_is_accepted() {
    let mut f = big_core_fleet();
    f.budget = Some(budget(Some(Range::exact(101 * CORE)), None));
    f.services.push(service("x", 1, 100 * CORE, 0));
    let p = plan(&f);
    assert!(
        with_code(&p, code::BUDGET_MISMATCH).is_empty(),
        "{:#?}",
        p.findings
    );
    f.budget = Some(budget(Some(Range::exact(103 * CORE)), None));
    assert!(
        one_with_code(&plan(&f), code::BUDGET_MISMATCH)
            .message
            .starts_with("fleet")
    );
}

#[test]
fn hosted_project_budget_is_its_own_size() {
    let mut f = big_core_fleet();
    let mut tenant = project("tenant");
    tenant.hosted_on = Some("infra".into());
    tenant.budget = Some(budget(Some(Range::exact(4 * CORE)), None));
    let mut infra = project("infra");
    infra.budget = Some(budget(Some(Range::exact(6 * CORE)), None));
    f.projects = vec![infra, tenant];
    for (n, proj, cpu) in [("hw", "infra", 2), ("vm", "tenant", 4)] {
        let mut s = service(n, 1, cpu * CORE, 0);
        s.project = Some(proj.into());
        f.services.push(s);
    }
    assert!(with_code(&plan(&f), code::BUDGET_MISMATCH).is_empty());
}

// ---- output -------------------------------------------------------------------------------

#[test]
fn json_has_the_contract_shape() {
    let mut f = fleet(
        &[("core-1", Tier::Core, 2, 16 * CORE, 64 * GI)],
        &[("web", 2, 500, 256 << 20)],
    );
    f.projects = vec![project("platform")];
    f.services[0].project = Some("platform".into());
    let v = to_json(&plan(&f));
    assert_eq!(
        v["projects"]["platform"]["demand"]["cpu"],
        serde_json::json!({"min": 1.0, "max": 1.0})
    );
    assert_eq!(
        v["projects"]["platform"]["demand"]["memory_bytes"]["max"],
        512u64 << 20
    );
    assert_eq!(v["sites"]["core-1"]["capacity"]["cpu"]["min"], 32.0);
    assert_eq!(
        v["sites"]["core-1"]["demand"]["storage_bytes"],
        serde_json::json!({"min": 0, "max": 0})
    );
    assert!(v["findings"].is_array());
}

#[test]
fn findings_have_severity_code_and_message_in_json() {
    let mut f = fleet(
        &[("core-1", Tier::Core, 1, 16 * CORE, 64 * GI)],
        &[("v", 1, CORE, GI)],
    );
    f.services[0].role = Role::Validator;
    let v = to_json(&plan(&f));
    let first = &v["findings"][0];
    assert_eq!(first["severity"], "error");
    assert_eq!(first["code"], "bft-unsafe");
    assert!(first["message"].as_str().unwrap().contains("`v`"));
}

#[test]
fn same_fleet_gives_byte_identical_json() {
    let mut f = validators(5, 3, 13, Spread::Site);
    f.services.push(service("web", 40, 500, GI));
    f.services.push(service("db", 3, 4 * CORE, 16 * GI));
    let a = serde_json::to_string(&to_json(&plan(&f))).unwrap();
    let b = serde_json::to_string(&to_json(&plan(&f.clone()))).unwrap();
    assert_eq!(a, b);
}

#[test]
fn findings_point_at_their_subject_in_the_spec() {
    let mut f = fleet(
        &[("core-1", Tier::Core, 1, 16 * CORE, 64 * GI)],
        &[("v", 1, CORE, GI)],
    );
    f.files = vec!["fleet.yaml".into()];
    f.services[0].role = Role::Validator;
    f.services[0].location.line = 12;
    f.services[0].location.col = 5;
    let mut b = budget(Some(Range::exact(99 * CORE)), None);
    b.location.line = 3;
    b.location.col = 9;
    f.budget = Some(b);
    let p = plan(&f);
    assert_eq!(
        one_with_code(&p, code::BFT_UNSAFE).at.as_deref(),
        Some("fleet.yaml:12:5")
    );
    assert_eq!(
        one_with_code(&p, code::BUDGET_MISMATCH).at.as_deref(),
        Some("fleet.yaml:3:9")
    );
}
