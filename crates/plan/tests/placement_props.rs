//! Property tests of placement: hard limits, constraints, spread, determinism.

use phoenix_plan::testing::{empty, service, site};
use phoenix_plan::{Plan, code, plan};
use phoenix_spec::quantity::Range;
use phoenix_spec::{Fleet, Service, Spread, Tier};
use proptest::prelude::*;
use std::collections::BTreeMap;

const GI: u64 = 1 << 30;
const TIERS: [Tier; 3] = [Tier::Core, Tier::Regional, Tier::Edge];

fn range(lo: u64, span: u64) -> Range {
    Range::new(lo, lo + span)
}

/// (tier, hosts, cpu min, cpu span, memory GiB min, storage GiB min, phase)
type SiteSpec = (usize, u32, u64, u64, u64, u64, u32);
/// (replicas, cpu min, cpu span, memory MiB, storage GiB, tier?, pinned site?, spread, phase)
type SvcSpec = (
    u64,
    u64,
    u64,
    u64,
    u64,
    Option<usize>,
    Option<usize>,
    usize,
    u32,
);

fn site_spec() -> impl Strategy<Value = SiteSpec> {
    (
        0..3usize,
        1..4u32,
        1_000..32_000u64,
        0..8_000u64,
        1..64u64,
        1..200u64,
        1..3u32,
    )
}

fn svc_spec() -> impl Strategy<Value = SvcSpec> {
    (
        0..12u64,
        0..6_000u64,
        0..2_000u64,
        0..16_384u64,
        0..50u64,
        proptest::option::weighted(0.3, 0..3usize),
        proptest::option::weighted(0.15, 0..8usize),
        0..3usize,
        1..4u32,
    )
}

fn build(sites: &[SiteSpec], svcs: &[SvcSpec], ratio: f64) -> Fleet {
    let mut f = empty();
    f.policy.cpu_overcommit = ratio;
    for (i, &(t, hosts, cpu, span, mem, sto, phase)) in sites.iter().enumerate() {
        let mut s = site(&format!("s{i}"), TIERS[t], hosts, 0, 0);
        s.capacity.cpu = range(cpu, span);
        s.capacity.memory = range(mem * GI, GI);
        s.capacity.storage = Range::exact(sto * GI);
        s.phase = phase;
        f.sites.push(s);
    }
    for (i, &(n, cpu, span, mem, sto, tier, pin, spread, phase)) in svcs.iter().enumerate() {
        let mut s = service(&format!("v{i}"), n, 0, 0);
        s.resources.cpu = range(cpu, span);
        s.resources.memory = range(mem << 20, 1 << 20);
        s.resources.storage = Range::exact(sto * GI);
        s.placement.tier = tier.map(|t| TIERS[t]);
        if let Some(p) = pin.filter(|p| *p < sites.len()) {
            s.placement.sites = vec![format!("s{p}")];
        }
        s.placement.spread = [Spread::None, Spread::Site, Spread::Host][spread];
        s.phase = phase;
        f.services.push(s);
    }
    f
}

fn eligible(f: &Fleet, s: &Service) -> Vec<String> {
    f.sites
        .iter()
        .filter(|x| s.placement.tier.is_none_or(|t| x.tier == t))
        .filter(|x| s.placement.sites.is_empty() || s.placement.sites.contains(&x.name))
        .filter(|x| x.phase <= s.phase)
        .map(|x| x.name.clone())
        .collect()
}

fn fleets() -> impl Strategy<Value = Fleet> {
    (
        proptest::collection::vec(site_spec(), 1..8),
        proptest::collection::vec(svc_spec(), 1..10),
        prop_oneof![Just(1.0), Just(1.5), Just(2.0)],
    )
        .prop_map(|(sites, svcs, ratio)| build(&sites, &svcs, ratio))
}

fn assert_within_hard_limits(f: &Fleet, p: &Plan) -> Result<(), TestCaseError> {
    for s in &f.sites {
        let sp = &p.sites[&s.name];
        let cpu_limit = (s.capacity.cpu.min as f64 * p.policy.cpu_overcommit).floor() as u64;
        for h in &sp.host_loads {
            let d = h.demand.0;
            prop_assert!(
                d.memory.max <= s.capacity.memory.min,
                "{}/{} memory {} > {}",
                s.name,
                h.host,
                d.memory.max,
                s.capacity.memory.min
            );
            prop_assert!(
                d.storage.max <= s.capacity.storage.min,
                "{}/{} storage over",
                s.name,
                h.host
            );
            prop_assert!(
                d.cpu.max <= cpu_limit,
                "{}/{} cpu {} > {}",
                s.name,
                h.host,
                d.cpu.max,
                cpu_limit
            );
        }
    }
    Ok(())
}

/// Instances per eligible site (zeros included) and per eligible host.
fn spread_counts(f: &Fleet, p: &Plan, s: &Service) -> (Vec<u64>, Vec<u64>) {
    let sites = eligible(f, s);
    let mut by_site: BTreeMap<&str, u64> = sites.iter().map(|n| (n.as_str(), 0)).collect();
    let mut by_host: BTreeMap<(String, u32), u64> = BTreeMap::new();
    for n in &sites {
        for h in 0..f.site(n).unwrap().hosts {
            by_host.insert((n.clone(), h), 0);
        }
    }
    for i in p.instances.iter().filter(|i| i.service == s.name) {
        if let (Some(site), Some(host)) = (&i.site, i.host) {
            *by_site.get_mut(site.as_str()).unwrap() += 1;
            *by_host.get_mut(&(site.clone(), host)).unwrap() += 1;
        }
    }
    (
        by_site.into_values().collect(),
        by_host.into_values().collect(),
    )
}

fn spread_of(v: &[u64]) -> u64 {
    v.iter().max().unwrap_or(&0) - v.iter().min().unwrap_or(&0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn no_host_exceeds_its_hard_limits(f in fleets()) {
        let p = plan(&f);
        assert_within_hard_limits(&f, &p)?;
    }

    #[test]
    fn instances_land_only_on_eligible_sites_or_are_reported(f in fleets()) {
        let p = plan(&f);
        for s in &f.services {
            let ok = eligible(&f, s);
            let mine: Vec<_> = p.instances.iter().filter(|i| i.service == s.name).collect();
            prop_assert_eq!(mine.len() as u64, s.replicas.min);
            for i in &mine {
                if let Some(site) = &i.site {
                    prop_assert!(ok.contains(site), "{} on {} but eligible are {:?}", i.id, site, ok);
                }
            }
            let placed = mine.iter().filter(|i| i.site.is_some()).count() as u64;
            prop_assert_eq!(placed, p.services[&s.name].placed);
            if placed < s.replicas.min {
                prop_assert!(
                    p.findings.iter().any(|x| x.code == code::UNPLACEABLE && x.service.as_deref() == Some(s.name.as_str())),
                    "{} has unplaced instances but no unplaceable finding", s.name
                );
            }
        }
    }

    #[test]
    fn spread_is_even_unless_reported(f in fleets()) {
        let p = plan(&f);
        for s in f.services.iter().filter(|s| s.placement.spread != Spread::None) {
            let reported = p.findings.iter().any(|x| x.code == code::SPREAD_UNEVEN && x.service.as_deref() == Some(s.name.as_str()));
            let (sites, hosts) = spread_counts(&f, &p, s);
            let counts = if s.placement.spread == Spread::Site { sites } else { hosts };
            if !reported {
                prop_assert!(spread_of(&counts) <= 1, "{} counts {:?} without a spread-uneven finding", s.name, counts);
            }
        }
    }

    #[test]
    fn spread_is_even_when_capacity_is_ample(
        sites in proptest::collection::vec(site_spec(), 1..8),
        svcs in proptest::collection::vec(svc_spec(), 1..10),
    ) {
        let mut f = build(&sites, &svcs, 1.0);
        for s in &mut f.sites {
            s.capacity.cpu = Range::exact(1 << 40);
            s.capacity.memory = Range::exact(1 << 50);
            s.capacity.storage = Range::exact(1 << 50);
        }
        let p = plan(&f);
        for s in f.services.iter().filter(|s| s.placement.spread != Spread::None) {
            let (sites, hosts) = spread_counts(&f, &p, s);
            if sites.is_empty() {
                continue;
            }
            prop_assert_eq!(p.services[&s.name].placed, s.replicas.min);
            let counts = if s.placement.spread == Spread::Site { &sites } else { &hosts };
            prop_assert!(spread_of(counts) <= 1, "{} spread {:?} counts {:?}", s.name, s.placement.spread, counts);
        }
        prop_assert!(!p.findings.iter().any(|x| x.code == code::SPREAD_UNEVEN));
    }

    #[test]
    fn same_input_gives_the_same_plan(f in fleets()) {
        let a = plan(&f);
        let b = plan(&f.clone());
        prop_assert_eq!(phoenix_plan::to_json_string(&a), phoenix_plan::to_json_string(&b));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn site_demand_is_the_sum_of_its_instances(f in fleets()) {
        let p = plan(&f);
        let mut expect: BTreeMap<&str, Range> = BTreeMap::new();
        for i in &p.instances {
            if let Some(site) = &i.site {
                *expect.entry(site.as_str()).or_default() += f.service(&i.service).unwrap().resources.memory;
            }
        }
        for (name, s) in &p.sites {
            prop_assert_eq!(s.demand.0.memory, expect.get(name.as_str()).copied().unwrap_or_default());
        }
    }
}
