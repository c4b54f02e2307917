//! The dependency graph: service and project edges, phases, and parallel waves within a phase.
//!
//! A project dependency (every service of A waits for every service of B) would be |A| x |B|
//! service edges; instead each (B, phase) gets one barrier node that its services feed into at
//! no cost and that the dependents wait on, so the graph stays linear in the input.

use crate::finding::{Finding, Severity, code};
use crate::output::{Dependency, DependencyKind};
use phoenix_spec::Fleet;
use std::collections::{BTreeMap, VecDeque};

/// Edges of the graph as written, sorted.
pub(crate) fn edges(fleet: &Fleet) -> Vec<Dependency> {
    let mut out = Vec::new();
    for s in &fleet.services {
        for d in &s.depends_on {
            out.push(Dependency {
                before: d.clone(),
                after: s.name.clone(),
                kind: DependencyKind::Service,
            });
        }
    }
    for p in &fleet.projects {
        for d in &p.depends_on {
            out.push(Dependency {
                before: d.clone(),
                after: p.name.clone(),
                kind: DependencyKind::Project,
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Waves: for each service (fleet order), its wave within its phase, from 0.
pub(crate) struct Waves {
    /// Wave of each service.
    pub(crate) of_service: Vec<usize>,
    /// A `dependency-cycle` finding, if the graph has a cycle.
    pub(crate) findings: Vec<Finding>,
}

/// Computes the wave of every service: 0 when it waits for nothing in its own phase,
/// otherwise one more than the latest wave it waits for (dependencies in earlier phases are
/// met by the phase boundary).
pub(crate) fn waves(fleet: &Fleet) -> Waves {
    let n = fleet.services.len();
    let index: BTreeMap<&str, usize> = fleet
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut members: BTreeMap<(&str, u32), Vec<usize>> = BTreeMap::new();
    for (i, s) in fleet.services.iter().enumerate() {
        if let Some(p) = &s.project {
            members.entry((p.as_str(), s.phase)).or_default().push(i);
        }
    }
    // Nodes 0..n are services; barriers are numbered from n.
    let mut barrier: BTreeMap<(&str, u32), usize> = BTreeMap::new();
    let mut succ: Vec<Vec<(usize, usize)>> = vec![Vec::new(); n];
    for (i, s) in fleet.services.iter().enumerate() {
        for d in &s.depends_on {
            if let Some(&j) = index.get(d.as_str())
                && fleet.services[j].phase == s.phase
            {
                succ[j].push((i, 1));
            }
        }
        let project_deps = s
            .project
            .as_deref()
            .and_then(|p| fleet.project(p))
            .map(|p| p.depends_on.as_slice())
            .unwrap_or(&[]);
        for dep in project_deps {
            let Some(ms) = members.get(&(dep.as_str(), s.phase)) else {
                continue;
            };
            let b = *barrier.entry((dep.as_str(), s.phase)).or_insert_with(|| {
                succ.push(Vec::new());
                let b = succ.len() - 1;
                for &m in ms {
                    succ[m].push((b, 0));
                }
                b
            });
            succ[b].push((i, 1));
        }
    }
    let (level, done) = longest_paths(&succ);
    let mut of_service: Vec<usize> = level[..n].to_vec();
    let mut findings = Vec::new();
    let stuck: Vec<usize> = (0..n).filter(|&i| !done[i]).collect();
    if !stuck.is_empty() {
        let names: Vec<&str> = stuck
            .iter()
            .map(|&i| fleet.services[i].name.as_str())
            .collect();
        let msg = format!(
            "services and project dependencies form a cycle through: {}; they are put in a last wave",
            crate::placement::name_list(names.into_iter())
        );
        findings.push(Finding::new(Severity::Error, code::DEPENDENCY_CYCLE, msg));
        let last = of_service.iter().copied().max().unwrap_or(0) + 1;
        for i in stuck {
            of_service[i] = last;
        }
    }
    Waves {
        of_service,
        findings,
    }
}

/// Longest weighted path to every node of a graph given as successor lists (Kahn's
/// algorithm), and which nodes were reached (the others lie on or behind a cycle).
fn longest_paths(succ: &[Vec<(usize, usize)>]) -> (Vec<usize>, Vec<bool>) {
    let mut indegree = vec![0usize; succ.len()];
    for out in succ {
        for &(t, _) in out {
            indegree[t] += 1;
        }
    }
    let mut level = vec![0usize; succ.len()];
    let mut done = vec![false; succ.len()];
    let mut queue: VecDeque<usize> = (0..succ.len()).filter(|&i| indegree[i] == 0).collect();
    while let Some(u) = queue.pop_front() {
        done[u] = true;
        for &(t, w) in &succ[u] {
            level[t] = level[t].max(level[u] + w);
            indegree[t] -= 1;
            if indegree[t] == 0 {
                queue.push_back(t);
            }
        }
    }
    (level, done)
}

/// Groups services into waves per phase: `phase -> waves -> service names (sorted)`. Empty
/// levels are dropped so wave numbers are consecutive.
pub(crate) fn group(fleet: &Fleet, of_service: &[usize]) -> BTreeMap<u32, Vec<Vec<String>>> {
    let mut by: BTreeMap<u32, BTreeMap<usize, Vec<String>>> = BTreeMap::new();
    for (s, &w) in fleet.services.iter().zip(of_service) {
        by.entry(s.phase)
            .or_default()
            .entry(w)
            .or_default()
            .push(s.name.clone());
    }
    by.into_iter()
        .map(|(p, waves)| {
            let waves = waves
                .into_values()
                .map(|mut names| {
                    names.sort();
                    names
                })
                .collect();
            (p, waves)
        })
        .collect()
}
