//! The project timeline: earliest finish of every project from durations and project
//! dependencies, the critical path, and the sequential sum for comparison.

use crate::finding::{Finding, Severity, code};
use crate::output::{Timeline, TimelineEntry, Weeks};
use phoenix_spec::Fleet;
use phoenix_spec::quantity::Range;
use std::collections::{BTreeMap, VecDeque};

/// The timeline, or `None` when no project has a duration. Min and max bounds are computed
/// separately: the min finish assumes every project takes its shortest duration.
pub(crate) fn timeline(fleet: &Fleet) -> (Option<Timeline>, Vec<Finding>) {
    if fleet.projects.iter().all(|p| p.duration.is_none()) {
        return (None, Vec::new());
    }
    let index: BTreeMap<&str, usize> = fleet
        .projects
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = fleet
        .projects
        .iter()
        .map(|p| {
            p.depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    let duration: Vec<Range> = fleet
        .projects
        .iter()
        .map(|p| p.duration.unwrap_or(Range::ZERO))
        .collect();
    let (order, stuck) = topological(&deps);
    let mut start = vec![Range::ZERO; deps.len()];
    let mut finish = vec![Range::ZERO; deps.len()];
    for &p in &order {
        start[p] = deps[p]
            .iter()
            .fold(Range::ZERO, |acc, &d| acc.max_each(finish[d]));
        finish[p] = start[p] + duration[p];
    }
    let mut findings = Vec::new();
    if !stuck.is_empty() {
        let names: Vec<&str> = stuck
            .iter()
            .map(|&p| fleet.projects[p].name.as_str())
            .collect();
        let msg = format!(
            "project dependencies form a cycle through: {}; they are left out of the timeline",
            names.join(", ")
        );
        findings.push(Finding::new(Severity::Error, code::DEPENDENCY_CYCLE, msg));
    }
    let length = order
        .iter()
        .fold(Range::ZERO, |acc, &p| acc.max_each(finish[p]));
    let sequential: Range = duration.iter().copied().sum();
    let critical_path = critical_path(fleet, &order, &deps, &finish);
    let projects = order
        .iter()
        .map(|&p| {
            let e = TimelineEntry {
                duration_hours: duration[p],
                start_hours: start[p],
                finish_hours: finish[p],
            };
            (fleet.projects[p].name.clone(), e)
        })
        .collect();
    let t = Timeline {
        projects,
        critical_path,
        length_weeks: Weeks(length),
        sequential_weeks: Weeks(sequential),
        length_hours: length,
        sequential_hours: sequential,
    };
    (Some(t), findings)
}

/// Kahn's algorithm over "depends on" lists: an order in which every project comes after its
/// dependencies (ties in fleet order), and the projects left over by a cycle.
fn topological(deps: &[Vec<usize>]) -> (Vec<usize>, Vec<usize>) {
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); deps.len()];
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    for (p, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(p);
        }
    }
    let mut queue: VecDeque<usize> = (0..deps.len()).filter(|&p| waiting[p] == 0).collect();
    let mut order = Vec::with_capacity(deps.len());
    while let Some(p) = queue.pop_front() {
        order.push(p);
        for &q in &dependents[p] {
            waiting[q] -= 1;
            if waiting[q] == 0 {
                queue.push_back(q);
            }
        }
    }
    let stuck = (0..deps.len()).filter(|p| waiting[*p] > 0).collect();
    (order, stuck)
}

/// The chain ending at the latest max-bound finish, walked back through the dependency that
/// finishes last. Ties go to the name that sorts first, so the path is deterministic.
fn critical_path(
    fleet: &Fleet,
    order: &[usize],
    deps: &[Vec<usize>],
    finish: &[Range],
) -> Vec<String> {
    let name = |p: usize| fleet.projects[p].name.as_str();
    let latest = |candidates: &mut dyn Iterator<Item = usize>| {
        candidates.max_by(|&a, &b| {
            finish[a]
                .max
                .cmp(&finish[b].max)
                .then(finish[a].min.cmp(&finish[b].min))
                .then(name(b).cmp(name(a)))
        })
    };
    let mut path = Vec::new();
    let mut at = latest(&mut order.iter().copied());
    while let Some(p) = at {
        path.push(name(p).to_string());
        at = latest(&mut deps[p].iter().copied());
    }
    path.reverse();
    path
}
