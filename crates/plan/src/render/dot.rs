//! `phoenix plan -o dot`: the dependency graph for Graphviz, one cluster per phase and, inside
//! it, one per project.

use crate::output::{DependencyKind, Plan, ServicePlan};
use phoenix_spec::Role;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Renders the dependency graph: services as nodes clustered by phase (and by project within a
/// phase), service dependencies as solid edges, project dependencies as dashed edges between
/// project clusters. Validators, replicas and light clients are coloured; disabled services are
/// dashed; services with unplaced instances have a red border. Jobs (`jobs:`) are drawn as
/// folders labelled `job`, with their retries and hook.
pub fn dot(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(&plan.fleet));
    let _ = writeln!(
        out,
        "  graph [rankdir=LR, compound=true, fontname=\"Helvetica\", label={}, labelloc=t];",
        quote(&format!("{}: dependencies by phase and wave", plan.fleet))
    );
    out.push_str(
        "  node [shape=box, style=\"rounded,filled\", fillcolor=white, fontname=\"Helvetica\"];\n",
    );
    out.push_str("  edge [fontname=\"Helvetica\"];\n");
    let clusters = clusters(plan);
    for (phase, projects) in &clusters {
        let _ = writeln!(
            out,
            "  subgraph {} {{",
            quote(&format!("cluster_phase_{phase}"))
        );
        let _ = writeln!(out, "    label={};", quote(&format!("phase {phase}")));
        for (project, services) in projects {
            let indent = match project {
                Some(p) => {
                    let _ = writeln!(out, "    subgraph {} {{", quote(&cluster_id(*phase, p)));
                    let _ = writeln!(out, "      label={}; style=dashed;", quote(p));
                    "      "
                }
                None => "    ",
            };
            for name in services {
                let _ = writeln!(out, "{indent}{}", node(name, &plan.services[*name]));
            }
            if project.is_some() {
                out.push_str("    }\n");
            }
        }
        out.push_str("  }\n");
    }
    for d in plan
        .dependencies
        .iter()
        .filter(|d| d.kind == DependencyKind::Service)
    {
        let _ = writeln!(out, "  {} -> {};", quote(&d.before), quote(&d.after));
    }
    project_edges(plan, &clusters, &mut out);
    out.push_str("}\n");
    out
}

/// phase -> project (None: no project) -> service names, all sorted.
type Clusters<'p> = BTreeMap<u32, BTreeMap<Option<&'p str>, Vec<&'p str>>>;

fn clusters(plan: &Plan) -> Clusters<'_> {
    let mut c: Clusters<'_> = BTreeMap::new();
    for (name, s) in &plan.services {
        c.entry(s.phase)
            .or_default()
            .entry(s.project.as_deref())
            .or_default()
            .push(name);
    }
    c
}

fn cluster_id(phase: u32, project: &str) -> String {
    format!("cluster_phase_{phase}_{project}")
}

/// One dashed edge per project dependency and pair of phases in which both projects have
/// services, drawn between the clusters (Graphviz needs a node at each end: the first service
/// of each cluster).
fn project_edges(plan: &Plan, clusters: &Clusters<'_>, out: &mut String) {
    for d in plan
        .dependencies
        .iter()
        .filter(|d| d.kind == DependencyKind::Project)
    {
        for (pb, before) in clusters
            .iter()
            .filter_map(|(p, c)| c.get(&Some(d.before.as_str())).map(|s| (p, s)))
        {
            for (pa, after) in clusters
                .iter()
                .filter_map(|(p, c)| c.get(&Some(d.after.as_str())).map(|s| (p, s)))
            {
                let _ = writeln!(
                    out,
                    "  {} -> {} [ltail={}, lhead={}, style=dashed, label=\"project\"];",
                    quote(before[0]),
                    quote(after[0]),
                    quote(&cluster_id(*pb, &d.before)),
                    quote(&cluster_id(*pa, &d.after))
                );
            }
        }
    }
}

fn node(name: &str, s: &ServicePlan) -> String {
    let fill = match s.role {
        Role::Validator => "lightcoral",
        Role::Replica => "lightblue",
        Role::Light => "lightyellow",
        Role::App => "white",
    };
    let style = if s.enabled {
        "rounded,filled"
    } else {
        "rounded,filled,dashed"
    };
    let border = if s.placed < s.instances {
        ", color=red, penwidth=2"
    } else {
        ""
    };
    if let Some(job) = &s.job {
        let mut label = format!("{name}\njob · wave {}", s.wave);
        if job.retries > 0 {
            let _ = write!(label, " · retries {}", job.retries);
        }
        if let Some(h) = &job.hook {
            let when = match h.when {
                phoenix_spec::HookWhen::Before => "before",
                phoenix_spec::HookWhen::After => "after",
                phoenix_spec::HookWhen::Rollback => "on rollback of",
            };
            let _ = write!(label, "\nhook: {when} {}", h.service);
        }
        if let Some(t) = &job.for_each {
            let _ = write!(label, "\nfor each {t}");
        }
        let style = if s.enabled { "filled" } else { "filled,dashed" };
        return format!(
            "{} [label={}, shape=folder, fillcolor=lightgrey, style=\"{style}\"{border}];",
            quote(name),
            quote(&label)
        );
    }
    let label = format!("{name}\nx{} · wave {}", s.replicas, s.wave);
    format!(
        "{} [label={}, fillcolor={fill}, style=\"{style}\"{border}];",
        quote(name),
        quote(&label)
    )
}

/// A Graphviz double-quoted string; `\n` in the text becomes a centred line break.
fn quote(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}
