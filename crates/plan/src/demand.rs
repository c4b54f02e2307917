//! Declared demand: per service, per project (with `hosted_on` attribution) and per phase.

use crate::amount::{Amount, BudgetAmount};
use crate::finding::{Finding, Severity, code};
use crate::output::{GroupPlan, ProjectPlan, UNASSIGNED};
use phoenix_spec::text::{agree, count};
use phoenix_spec::{Fleet, Resources, Service};
use std::collections::BTreeMap;

/// Declared demand of a service: per-instance resources times replicas (range times range).
pub(crate) fn service_demand(s: &Service) -> Resources {
    s.resources.times(s.replicas)
}

/// Projects with attributed demand, the group of services without a project, and any
/// `hosted_on` cycle found.
pub(crate) fn projects(
    fleet: &Fleet,
) -> (
    BTreeMap<String, ProjectPlan>,
    Option<GroupPlan>,
    Vec<Finding>,
) {
    let mut own: BTreeMap<&str, Resources> = BTreeMap::new();
    let mut services: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut loose = GroupPlan {
        name: UNASSIGNED.to_string(),
        demand: Amount::ZERO,
        services: Vec::new(),
    };
    for s in &fleet.services {
        match s.project.as_deref().filter(|p| fleet.project(p).is_some()) {
            Some(p) => {
                *own.entry(p).or_default() += service_demand(s);
                services.entry(p).or_default().push(s.name.clone());
            }
            None => {
                loose.demand += Amount(service_demand(s));
                loose.services.push(s.name.clone());
            }
        }
    }
    let mut findings = Vec::new();
    let roots: BTreeMap<&str, &str> = fleet
        .projects
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                counted_under(fleet, &p.name, &mut findings),
            )
        })
        .collect();
    let mut out = BTreeMap::new();
    for p in &fleet.projects {
        let name = p.name.as_str();
        let hosted: Vec<&str> = fleet
            .projects
            .iter()
            .map(|q| q.name.as_str())
            .filter(|q| *q != name && roots[q] == name)
            .collect();
        let counted_here = roots[name] == name;
        let mut demand = if counted_here {
            own.get(name).copied().unwrap_or_default()
        } else {
            Resources::ZERO
        };
        for q in &hosted {
            demand += own.get(q).copied().unwrap_or_default();
        }
        let mut svcs = services.remove(name).unwrap_or_default();
        svcs.sort();
        let plan = ProjectPlan {
            demand: Amount(demand),
            own_demand: Amount(own.get(name).copied().unwrap_or_default()),
            hosted_on: p.hosted_on.clone(),
            counted_under: roots[name].to_string(),
            hosts: hosted.iter().map(|q| q.to_string()).collect(),
            services: svcs,
            depends_on: p.depends_on.clone(),
            duration_hours: p.duration,
            budget: p.budget.as_ref().map(BudgetAmount::from),
        };
        out.insert(p.name.clone(), plan);
    }
    loose.services.sort();
    let loose = (!loose.services.is_empty()).then_some(loose);
    (out, loose, findings)
}

/// The end of a project's `hosted_on` chain. A cycle (which the validator rejects) leaves the
/// project counted under itself, with a finding.
fn counted_under<'f>(fleet: &'f Fleet, name: &'f str, findings: &mut Vec<Finding>) -> &'f str {
    let mut at = fleet.project(name).map_or(name, |p| p.name.as_str());
    let mut chain = vec![at];
    while let Some(next) = fleet.project(at).and_then(|p| p.hosted_on.as_deref()) {
        let Some(next) = fleet.project(next).map(|p| p.name.as_str()) else {
            break;
        };
        if chain.contains(&next) {
            chain.push(next);
            let msg = format!(
                "`hosted_on` forms a cycle: {}; `{name}` is counted under itself",
                chain.join(" -> ")
            );
            findings.push(Finding::new(Severity::Error, code::HOSTED_ON_CYCLE, msg).project(name));
            return chain[0];
        }
        chain.push(next);
        at = next;
    }
    at
}

/// Declared demand per rollout phase, in increasing phase order.
pub(crate) fn by_phase(fleet: &Fleet) -> BTreeMap<u32, Resources> {
    let mut out: BTreeMap<u32, Resources> = BTreeMap::new();
    for s in &fleet.services {
        *out.entry(s.phase).or_default() += service_demand(s);
    }
    out
}

/// `service-disabled` findings.
pub(crate) fn disabled(fleet: &Fleet) -> Vec<Finding> {
    fleet
        .services
        .iter()
        .filter(|s| !s.enabled)
        .map(|s| {
            let msg = format!(
                "service `{}` is disabled: its {} {} planned, placed and counted, but not deployed",
                s.name,
                count(s.replicas.min, "instance"),
                agree(s.replicas.min, "is", "are")
            );
            let f = Finding::new(Severity::Info, code::SERVICE_DISABLED, msg).service(&s.name);
            match &s.project {
                Some(p) => f.project(p),
                None => f,
            }
        })
        .collect()
}
