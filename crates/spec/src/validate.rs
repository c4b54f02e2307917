//! Cross-reference and graph checks over the whole fleet: unknown sites, projects and services;
//! dependency cycles; dependencies on later phases.

use crate::diag::{Diagnostic, did_you_mean};
use crate::model::*;
use crate::parse::SourceMap;
use std::collections::{BTreeMap, HashMap};

type D = Vec<Diagnostic>;

fn unknown(
    kind: &str,
    name: &str,
    known: &[&str],
    from: &str,
    loc: Option<Location>,
) -> Diagnostic {
    let diag = Diagnostic::error(
        "unknown-reference",
        format!("{from} refers to unknown {kind} `{name}`"),
        loc,
    );
    match did_you_mean(name, known.iter().copied()) {
        Some(m) => diag.with_hint(format!("did you mean `{m}`?")),
        None if known.is_empty() => diag.with_hint(format!("no {kind} is defined")),
        None => {
            let mut list: Vec<&str> = known.to_vec();
            let more = list.len().saturating_sub(12);
            list.truncate(12);
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            diag.with_hint(format!("known {kind}s: {}{tail}", list.join(", ")))
        }
    }
}

/// Every `${secret:NAME}` / `${secret_file:NAME}` of a service names a declared secret.
fn check_secret_refs(fleet: &Fleet, s: &Service, what: &str, d: &mut D) {
    let declared: Vec<&str> = fleet.secrets.iter().map(|x| x.name.as_str()).collect();
    for name in crate::secrets::used_by(s) {
        if !declared.contains(&name.as_str()) {
            d.push(unknown(
                "secret",
                &name,
                &declared,
                what,
                Some(s.location.clone()),
            ));
        }
    }
}

pub(crate) fn validate(mut fleet: Fleet, map: &SourceMap, d: &mut D) -> Option<Fleet> {
    let site_names: Vec<&str> = fleet.sites.iter().map(|s| s.name.as_str()).collect();
    let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for s in &fleet.sites {
        if let Some(g) = &s.group {
            groups.entry(g.as_str()).or_default().push(s.name.clone());
        }
    }
    let project_names: Vec<&str> = fleet.projects.iter().map(|p| p.name.as_str()).collect();
    let service_names: Vec<&str> = fleet.services.iter().map(|s| s.name.as_str()).collect();

    check_addresses(&fleet, map, d);
    let mut expanded_sites: Vec<Option<Vec<String>>> = Vec::new();
    for s in &fleet.services {
        let what = format!("{} `{}`", s.kind(), s.name);
        check_secret_refs(&fleet, s, &what, d);
        if let Some(p) = &s.project
            && !project_names.contains(&p.as_str())
        {
            d.push(unknown(
                "project",
                p,
                &project_names,
                &what,
                map.at(&format!("service:{}:project", s.name)),
            ));
        }
        for (i, dep) in s.depends_on.iter().enumerate() {
            let loc = map.at(&format!("service:{}:depends_on:{i}", s.name));
            if *dep == s.name {
                d.push(
                    Diagnostic::error("cycle", format!("{what} depends on itself"), loc)
                        .with_hint("remove it from its own `depends_on`"),
                );
            } else if !service_names.contains(&dep.as_str()) {
                // Core files (no jobs) keep the core wording.
                let kind = if fleet.services.iter().any(Service::is_job) {
                    "service or job"
                } else {
                    "service"
                };
                d.push(unknown(kind, dep, &service_names, &what, loc));
            }
        }
        // A site group name in `placement.sites` stands for all its sites.
        let mut expanded = Vec::new();
        let mut changed = false;
        for (i, site) in s.placement.sites.iter().enumerate() {
            if site_names.contains(&site.as_str()) {
                expanded.push(site.clone());
            } else if let Some(members) = groups.get(site.as_str()) {
                expanded.extend(members.iter().cloned());
                changed = true;
            } else {
                let mut known: Vec<&str> = groups.keys().copied().collect();
                known.extend(site_names.iter().filter(|n| {
                    !fleet
                        .sites
                        .iter()
                        .any(|s| s.name == **n && s.group.is_some())
                }));
                d.push(unknown(
                    "site",
                    site,
                    &known,
                    &format!("placement of {what}"),
                    map.at(&format!("service:{}:placement.sites:{i}", s.name)),
                ));
            }
        }
        expanded_sites.push(changed.then_some(expanded));
    }
    for p in &fleet.projects {
        let what = format!("project `{}`", p.name);
        for (i, dep) in p.depends_on.iter().enumerate() {
            let loc = map.at(&format!("project:{}:depends_on:{i}", p.name));
            if *dep == p.name {
                d.push(Diagnostic::error(
                    "cycle",
                    format!("{what} depends on itself"),
                    loc,
                ));
            } else if !project_names.contains(&dep.as_str()) {
                d.push(unknown("project", dep, &project_names, &what, loc));
            }
        }
        if let Some(h) = &p.hosted_on {
            let loc = map.at(&format!("project:{}:hosted_on", p.name));
            if *h == p.name {
                d.push(
                    Diagnostic::error("cycle", format!("{what} is hosted on itself"), loc)
                        .with_hint(
                            "`hosted_on` names another project that carries this one's demand",
                        ),
                );
            } else if !project_names.contains(&h.as_str()) {
                d.push(unknown("project", h, &project_names, &what, loc));
            }
        }
    }
    for (s, exp) in fleet.services.iter_mut().zip(expanded_sites) {
        if let Some(e) = exp {
            s.placement.sites = e;
        }
    }

    check_cycles(&fleet, map, d);
    check_phases(&fleet, map, d);
    check_totals(&fleet, d);
    Some(fleet)
}

/// Most hosts one fleet may have, over all its sites: the planner keeps a record per host.
pub const MAX_HOSTS: u64 = 1_000_000;
/// Most instances one fleet may have (`replicas` minimums summed): the planner lists each one.
pub const MAX_INSTANCES: u64 = 1_000_000;

/// The fleet's totals of hosts and instances stay within [`MAX_HOSTS`] and
/// [`MAX_INSTANCES`], so that a small file cannot make the planner build millions of records.
/// `${address:S}` and `${addresses:S}` name a service (not a job: it has no address) with
/// the port asked for, and one the user depends on. Depending is required rather than implied:
/// the address must exist before the unit that uses it starts, and a dependency that only a
/// string inside a command creates would be invisible in the spec's `depends_on` lists.
fn check_addresses(fleet: &Fleet, map: &SourceMap, d: &mut D) {
    let names: Vec<&str> = fleet
        .services
        .iter()
        .filter(|s| !s.is_job())
        .map(|s| s.name.as_str())
        .collect();
    for s in &fleet.services {
        let what = format!("{} `{}`", s.kind(), s.name);
        let mut seen = std::collections::BTreeSet::new();
        for t in s.templates() {
            for r in crate::subst::references(t) {
                let Some(Ok(a)) = crate::subst::address_ref(&r.name) else {
                    continue;
                };
                if !seen.insert(r.name.clone()) {
                    continue;
                }
                let loc = map
                    .at(&format!("service:{}:address:{}", s.name, a.service))
                    .or_else(|| Some(s.location.clone()));
                let Some(target) = fleet.service(a.service).filter(|t| !t.is_job()) else {
                    let from = format!("`${{{}}}` in {what}", r.name);
                    d.push(unknown("service", a.service, &names, &from, loc));
                    continue;
                };
                if target.ports.is_empty() {
                    d.push(
                        Diagnostic::error(
                            "bad-substitution",
                            format!("`${{{}}}` in {what}: service `{}` has no named ports, so no address", r.name, target.name),
                            loc,
                        )
                        .with_hint(format!("declare its port in `ports:` of `{}`", target.name)),
                    );
                    continue;
                }
                if let Some(p) = a.port
                    && !target.ports.iter().any(|x| x == p)
                {
                    let diag = Diagnostic::error(
                        "bad-substitution",
                        format!(
                            "`${{{}}}` in {what}: service `{}` has no port `{p}`",
                            r.name, target.name
                        ),
                        loc,
                    );
                    let hint = match did_you_mean(p, target.ports.iter().map(String::as_str)) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => format!("its ports: {}", target.ports.join(", ")),
                    };
                    d.push(diag.with_hint(hint));
                    continue;
                }
                if target.name == s.name {
                    d.push(
                        Diagnostic::error(
                            "bad-substitution",
                            format!("`${{{}}}` in {what} names the service itself", r.name),
                            loc,
                        )
                        .with_hint("a unit's own ports are `${PORT}`"),
                    );
                    continue;
                }
                if !s.depends_on.iter().any(|x| x == a.service) {
                    d.push(
                        Diagnostic::error(
                            "missing-dependency",
                            format!("{what} uses `${{{}}}` but does not depend on `{}`", r.name, a.service),
                            loc,
                        )
                        .with_hint(format!("add `{}` to its `depends_on`: the address must exist before this starts", a.service)),
                    );
                }
            }
        }
    }
}

fn check_totals(fleet: &Fleet, d: &mut D) {
    let mut hosts = 0u64;
    if let Some(s) = fleet.sites.iter().find(|s| {
        hosts += u64::from(s.hosts);
        hosts > MAX_HOSTS
    }) {
        d.push(
            Diagnostic::error(
                "too-large",
                format!(
                    "with site `{}` the fleet has more than {MAX_HOSTS} hosts",
                    s.name
                ),
                Some(s.location.clone()),
            )
            .with_hint(format!(
                "a fleet has at most {MAX_HOSTS} hosts in all; split it into several fleets"
            )),
        );
    }
    // Demand and capacity totals must fit the planner's 64-bit arithmetic, which fails loudly
    // rather than wrapping: each resource summed at its upper bound, demand as per-instance
    // resources times replicas, capacity as per-host capacity times hosts.
    let totals = |items: &mut dyn Iterator<Item = (Resources, u64, &str, &Location)>| {
        let mut sum = [0u64; 3];
        for (r, k, name, loc) in items {
            let each = [r.cpu.max, r.memory.max, r.storage.max];
            for (i, what) in ["CPU", "memory", "storage"].iter().enumerate() {
                match each[i].checked_mul(k).and_then(|v| v.checked_add(sum[i])) {
                    Some(v) => sum[i] = v,
                    None => return Some((*what, name.to_string(), loc.clone())),
                }
            }
        }
        None
    };
    let demand = totals(
        &mut fleet
            .services
            .iter()
            .map(|s| (s.resources, s.replicas.max, s.name.as_str(), &s.location)),
    );
    let capacity = totals(
        &mut fleet
            .sites
            .iter()
            .map(|s| (s.capacity, u64::from(s.hosts), s.name.as_str(), &s.location)),
    );
    for (over, kind, of) in [
        (demand, "service", "demand"),
        (capacity, "site", "capacity"),
    ] {
        if let Some((what, name, loc)) = over {
            d.push(
                Diagnostic::error(
                    "too-large",
                    format!("with {kind} `{name}` the fleet's total {what} {of} exceeds what Phoenix can add up (2^64 base units)"),
                    Some(loc),
                )
                .with_hint("check the units: a `P` or `Pi` where `T` or `Ti` was meant, or `replicas` far too high"),
            );
        }
    }
    let mut instances = 0u64;
    if let Some(s) = fleet.services.iter().find(|s| {
        instances += s.replicas.min;
        instances > MAX_INSTANCES
    }) {
        d.push(
            Diagnostic::error(
                "too-large",
                format!("with service `{}` the fleet has more than {MAX_INSTANCES} instances", s.name),
                Some(s.location.clone()),
            )
            .with_hint(format!("a fleet has at most {MAX_INSTANCES} instances in all (the minimum of each `replicas`); split it into several fleets")),
        );
    }
}

/// A directed graph over named vertices, with the source location of each edge.
struct Graph {
    names: Vec<String>,
    edges: Vec<Vec<(usize, Option<Location>)>>,
}

impl Graph {
    /// Every elementary cycle found by a depth-first search, at most one per back edge, as
    /// vertex index paths `a, b, c` meaning `a -> b -> c -> a`, each with the location of its
    /// first edge.
    fn cycles(&self) -> Vec<(Vec<usize>, Option<Location>)> {
        #[derive(Clone, Copy, PartialEq)]
        enum Color {
            White,
            Grey,
            Black,
        }
        let n = self.names.len();
        let mut color = vec![Color::White; n];
        let mut found = Vec::new();
        for start in 0..n {
            if color[start] != Color::White {
                continue;
            }
            // Iterative DFS: (vertex, next edge index); `path` mirrors the grey vertices.
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            let mut path: Vec<usize> = vec![start];
            color[start] = Color::Grey;
            while let Some(&mut (v, ref mut i)) = stack.last_mut() {
                if let Some((w, _)) = self.edges[v].get(*i) {
                    let w = *w;
                    *i += 1;
                    match color[w] {
                        Color::White => {
                            color[w] = Color::Grey;
                            stack.push((w, 0));
                            path.push(w);
                        }
                        Color::Grey => {
                            let pos = path.iter().position(|&x| x == w).unwrap_or(0);
                            let cycle: Vec<usize> = path[pos..].to_vec();
                            let loc = self.edges[cycle[0]]
                                .iter()
                                .find(|(t, _)| *t == *cycle.get(1).unwrap_or(&cycle[0]))
                                .and_then(|(_, l)| l.clone());
                            found.push((cycle, loc));
                        }
                        Color::Black => {}
                    }
                } else {
                    color[v] = Color::Black;
                    stack.pop();
                    path.pop();
                }
            }
        }
        found
    }

    fn render(&self, cycle: &[usize]) -> String {
        let mut parts: Vec<&str> = cycle.iter().map(|&i| self.names[i].as_str()).collect();
        parts.push(&self.names[cycle[0]]);
        parts.join(" -> ")
    }
}

fn check_cycles(fleet: &Fleet, map: &SourceMap, d: &mut D) {
    let pidx: HashMap<&str, usize> = fleet
        .projects
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let sidx: HashMap<&str, usize> = fleet
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();

    let projects = Graph {
        names: fleet.projects.iter().map(|p| p.name.clone()).collect(),
        edges: fleet
            .projects
            .iter()
            .map(|p| {
                p.depends_on
                    .iter()
                    .enumerate()
                    .filter_map(|(i, dep)| {
                        Some((
                            *pidx.get(dep.as_str())?,
                            map.at(&format!("project:{}:depends_on:{i}", p.name)),
                        ))
                    })
                    .collect()
            })
            .collect(),
    };
    let hosting = Graph {
        names: projects.names.clone(),
        edges: fleet
            .projects
            .iter()
            .map(|p| {
                p.hosted_on
                    .iter()
                    .filter_map(|h| {
                        Some((
                            *pidx.get(h.as_str())?,
                            map.at(&format!("project:{}:hosted_on", p.name)),
                        ))
                    })
                    .collect()
            })
            .collect(),
    };
    let services = Graph {
        names: fleet.services.iter().map(|s| s.name.clone()).collect(),
        edges: fleet
            .services
            .iter()
            .map(|s| {
                s.depends_on
                    .iter()
                    .enumerate()
                    .filter_map(|(i, dep)| {
                        Some((
                            *sidx.get(dep.as_str())?,
                            map.at(&format!("service:{}:depends_on:{i}", s.name)),
                        ))
                    })
                    .collect()
            })
            .collect(),
    };
    let mut any = false;
    for (g, what) in [
        (&projects, "project dependency"),
        (&hosting, "`hosted_on`"),
        (&services, "service dependency"),
    ] {
        for (cycle, loc) in g.cycles() {
            any = true;
            d.push(
                Diagnostic::error("cycle", format!("{what} cycle: {}", g.render(&cycle)), loc)
                    .with_hint(
                        "nothing in a cycle can ever start; remove one of these dependencies",
                    ),
            );
        }
    }
    if any {
        return;
    }
    // Services and projects together: a service of project P waits for every service of each
    // project P depends on. Project vertices keep this linear in the number of services.
    let ns = fleet.services.len();
    let mut names = services.names.clone();
    names.extend(
        fleet
            .projects
            .iter()
            .map(|p| format!("(every service of project {})", p.name)),
    );
    let mut edges = services.edges;
    edges.extend(fleet.projects.iter().map(|_| Vec::new()));
    for (i, s) in fleet.services.iter().enumerate() {
        if let Some(&pi) = s.project.as_deref().and_then(|p| pidx.get(p)) {
            let proj = &fleet.projects[pi];
            for (k, dep) in proj.depends_on.iter().enumerate() {
                if let Some(&di) = pidx.get(dep.as_str()) {
                    edges[i].push((
                        ns + di,
                        map.at(&format!("project:{}:depends_on:{k}", proj.name)),
                    ));
                }
            }
            edges[ns + pi].push((i, Some(s.location.clone())));
        }
    }
    let combined = Graph { names, edges };
    if let Some((cycle, loc)) = combined.cycles().into_iter().next() {
        d.push(Diagnostic::error("cycle", format!("dependency cycle through projects: {}", combined.render(&cycle)), loc)
            .with_hint("a service depends on a project that (through its own dependencies) waits for that service"));
    }
}

fn check_phases(fleet: &Fleet, map: &SourceMap, d: &mut D) {
    let by_name: HashMap<&str, &Service> = fleet
        .services
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    for s in &fleet.services {
        for (i, dep) in s.depends_on.iter().enumerate() {
            let Some(t) = by_name.get(dep.as_str()) else {
                continue;
            };
            if t.phase > s.phase {
                d.push(
                    Diagnostic::error(
                        "phase-order",
                        format!(
                            "{} `{}` (phase {}) depends on `{}`, which is in the later phase {}",
                            s.kind(),
                            s.name,
                            s.phase,
                            t.name,
                            t.phase
                        ),
                        map.at(&format!("service:{}:depends_on:{i}", s.name)),
                    )
                    .with_hint(format!(
                        "move `{}` to phase {} or later, or `{}` to phase {} or earlier",
                        s.name, t.phase, t.name, s.phase
                    )),
                );
            }
        }
        let Some(p) = s.project.as_deref().and_then(|p| fleet.project(p)) else {
            continue;
        };
        for (k, dep) in p.depends_on.iter().enumerate() {
            if let Some(t) = fleet
                .services
                .iter()
                .filter(|t| t.project.as_deref() == Some(dep.as_str()))
                .find(|t| t.phase > s.phase)
            {
                d.push(Diagnostic::error("phase-order", format!("service `{}` (phase {}) waits for project `{dep}`, whose service `{}` is in the later phase {}", s.name, s.phase, t.name, t.phase), map.at(&format!("project:{}:depends_on:{k}", p.name)).or(Some(s.location.clone())))
                    .with_hint("a phase starts only when every earlier phase is healthy; move one of them"));
            }
        }
    }
}
