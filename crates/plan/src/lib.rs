//! Pure planning over a validated fleet: demand rollups, capacity against demand, placement of
//! every instance, BFT safety of validator sets, the dependency graph with phases and waves,
//! the project timeline and budget checks.
//!
//! ```
//! use phoenix_spec::quantity::Range;
//! let fleet = phoenix_plan::testing::fleet(
//!     &[("core-1", phoenix_spec::Tier::Core, 2, 8_000, 32 << 30)],
//!     &[("web", 3, 1_000, 1 << 30)],
//! );
//! let plan = phoenix_plan::plan(&fleet);
//! assert_eq!(plan.sites["core-1"].instances, 3);
//! let json = phoenix_plan::to_json(&plan);
//! assert_eq!(json["sites"]["core-1"]["demand"]["cpu"]["max"], 3.0);
//! ```
//!
//! Architecture Invariant: this crate is a function of its input. No clock, no I/O, no
//! randomness, no hash-order iteration: the same fleet gives a byte-identical plan.

pub mod amount;
mod bft;
mod budget;
mod capacity;
mod dag;
mod demand;
pub mod finding;
mod locate;
mod output;
mod placement;
pub mod render;
pub mod testing;
mod timeline;

pub use amount::{Amount, BudgetAmount, Cores, Resource};
pub use bft::faults_tolerated;
pub use finding::{Finding, Severity, code};
pub use output::*;

use phoenix_spec::quantity::Range;
use phoenix_spec::{Fleet, Resources};
use std::collections::BTreeMap;

/// Plans a validated fleet.
///
/// # Guarantees
/// Pure and deterministic: the same fleet gives the same plan, and the same JSON, byte for
/// byte. No host is given more than its lower-bound memory and storage, or more CPU than its
/// lower bound times `policy.cpu_overcommit`, counting every instance at its upper bound.
///
/// # Panics
/// On arithmetic overflow of a total (more than 2^64 bytes or millicores), which the release
/// profile checks rather than wraps.
pub fn plan(fleet: &Fleet) -> Plan {
    let ratio = placement::ratio(fleet);
    let mut findings = Vec::new();

    let (projects, unassigned, mut f) = demand::projects(fleet);
    findings.append(&mut f);
    findings.extend(demand::disabled(fleet));

    let mut placed = placement::place(fleet);
    findings.append(&mut placed.findings);
    let sites = capacity::sites(fleet, &placed.hosts);
    findings.extend(capacity::site_findings(&sites, ratio));

    let (validator_sets, f) = bft::validator_sets(fleet, &placed.hosts, &placed.per_service);
    findings.extend(f);

    let waves = dag::waves(fleet);
    findings.extend(waves.findings.iter().cloned());
    let grouped = dag::group(fleet, &waves.of_service);

    let (timeline, f) = timeline::timeline(fleet);
    findings.extend(f);

    let totals = totals(fleet, &sites);
    findings.extend(capacity::fleet_findings(
        &totals.demand.0,
        &totals.capacity.0,
        ratio,
    ));
    findings.extend(budget::mismatches(fleet, &projects, &totals.demand.0));
    locate::locate(fleet, &mut findings);
    finding::sort(&mut findings);

    Plan {
        fleet: fleet.name.clone(),
        environment: fleet.environment.clone(),
        policy: PlanPolicy {
            cpu_overcommit: ratio,
        },
        services: services(fleet, &placed, &grouped),
        instances: instances(fleet, &placed),
        tiers: capacity::tiers(&sites),
        phases: phases(fleet, grouped),
        dependencies: dag::edges(fleet),
        totals,
        projects,
        unassigned,
        sites,
        validator_sets,
        timeline,
        findings,
    }
}

/// The plan as the JSON of the `plan -o json` contract (`fleet-spec.md`): `projects`,
/// `sites` and `findings` as specified, plus the rest of the analysis.
///
/// # Panics
/// Never in practice: every map key is a string and every number finite.
pub fn to_json(plan: &Plan) -> serde_json::Value {
    serde_json::to_value(plan).expect("a plan always serialises: string keys, finite numbers")
}

/// The plan as pretty-printed JSON text with a final newline, serialised straight from the
/// plan. Same content as [`to_json`], but fields keep their declared order and no
/// intermediate `Value` is built, which matters for plans of 100,000 instances.
///
/// # Panics
/// Never in practice: every map key is a string and every number finite.
pub fn to_json_string(plan: &Plan) -> String {
    let mut s = serde_json::to_string_pretty(plan)
        .expect("a plan always serialises: string keys, finite numbers");
    s.push('\n');
    s
}

fn totals(fleet: &Fleet, sites: &BTreeMap<String, SitePlan>) -> Totals {
    let deployed: Resources = fleet
        .services
        .iter()
        .map(|s| s.resources.times(Range::exact(s.replicas.min)))
        .sum();
    Totals {
        demand: Amount(fleet.services.iter().map(demand::service_demand).sum()),
        deployed: Amount(deployed),
        placed: Amount(sites.values().map(|s| s.demand.0).sum()),
        capacity: Amount(sites.values().map(|s| s.capacity.0).sum()),
        instances: fleet.services.iter().map(|s| s.replicas.min).sum(),
        placed_instances: sites.values().map(|s| s.instances).sum(),
        sites: fleet.sites.len(),
        hosts: fleet.sites.iter().map(|s| u64::from(s.hosts)).sum(),
        services: fleet.services.len(),
        disabled_services: fleet.services.iter().filter(|s| !s.enabled).count(),
    }
}

fn services(
    fleet: &Fleet,
    placed: &placement::Outcome,
    grouped: &BTreeMap<u32, Vec<Vec<String>>>,
) -> BTreeMap<String, ServicePlan> {
    let mut wave_of: BTreeMap<&str, usize> = BTreeMap::new();
    for waves in grouped.values() {
        for (w, names) in waves.iter().enumerate() {
            for n in names {
                wave_of.insert(n, w + 1);
            }
        }
    }
    fleet
        .services
        .iter()
        .zip(&placed.per_service)
        .map(|(s, hosts)| {
            let mut placement: BTreeMap<String, u64> = BTreeMap::new();
            for &h in hosts {
                let site = placed.hosts[h as usize].site as usize;
                *placement.entry(fleet.sites[site].name.clone()).or_default() += 1;
            }
            let plan = ServicePlan {
                project: s.project.clone(),
                phase: s.phase,
                wave: wave_of.get(s.name.as_str()).copied().unwrap_or(1),
                role: s.role,
                enabled: s.enabled,
                replicas: s.replicas,
                per_instance: Amount(s.resources),
                demand: Amount(demand::service_demand(s)),
                tier: s.placement.tier,
                allowed_sites: s.placement.sites.clone(),
                spread: s.placement.spread,
                instances: s.replicas.min,
                placed: hosts.len() as u64,
                placement,
                depends_on: s.depends_on.clone(),
                job: s.job.clone(),
            };
            (s.name.clone(), plan)
        })
        .collect()
}

fn instances(fleet: &Fleet, placed: &placement::Outcome) -> Vec<Instance> {
    let mut out = Vec::with_capacity(fleet.services.iter().map(|s| s.replicas.min as usize).sum());
    for (s, hosts) in fleet.services.iter().zip(&placed.per_service) {
        for i in 0..s.replicas.min {
            let host = hosts.get(i as usize).map(|&h| &placed.hosts[h as usize]);
            out.push(Instance {
                id: format!("{}-{i}", s.name),
                service: s.name.clone(),
                site: host.map(|h| fleet.sites[h.site as usize].name.clone()),
                host: host.map(|h| h.index),
            });
        }
    }
    out
}

fn phases(fleet: &Fleet, grouped: BTreeMap<u32, Vec<Vec<String>>>) -> Vec<PhasePlan> {
    let demand = demand::by_phase(fleet);
    grouped
        .into_iter()
        .map(|(phase, waves)| PhasePlan {
            phase,
            demand: Amount(demand.get(&phase).copied().unwrap_or_default()),
            sites_online: fleet.sites.iter().filter(|s| s.phase <= phase).count(),
            waves,
        })
        .collect()
}

#[cfg(test)]
mod tests;
