//! `phoenix plan -o markdown`: a report an operator pastes into a ticket.

use super::{
    Grid, critical_path_line, demand_cells, names, phase_demand, projects_grid, severity_counts,
    sites_grid, tiers_grid, timeline_grid, totals_line, validators_grid,
};
use crate::amount::Resource;
use crate::output::Plan;
use phoenix_spec::text::count;
use std::fmt::Write as _;

/// Above this many services the services table lists the first ones only.
const SERVICE_ROWS: usize = 200;

/// Renders a plan as a Markdown report: summary, findings by severity, totals, projects,
/// services, tiers, sites, validator sets, rollout phases and waves, and the timeline.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    summary(plan, &mut out);
    findings(plan, &mut out);
    section(&mut out, "Totals", totals(plan));
    section(&mut out, "Projects", projects(plan));
    section(&mut out, "Services", services(plan));
    section(&mut out, "Tiers", tiers_grid(plan).markdown());
    section(&mut out, "Sites", sites(plan));
    if !plan.validator_sets.is_empty() {
        section(&mut out, "Validator sets", validators(plan));
    }
    section(&mut out, "Rollout: phases and waves", phases(plan));
    if let Some(t) = &plan.timeline {
        section(
            &mut out,
            "Timeline",
            format!(
                "{}\n{}.\n",
                timeline_grid(t).markdown(),
                super::capitalised(&critical_path_line(t))
            ),
        );
    }
    out
}

fn section(out: &mut String, title: &str, body: String) {
    let _ = write!(out, "\n## {title}\n\n{body}");
}

fn summary(plan: &Plan, out: &mut String) {
    let t = &plan.totals;
    let _ = writeln!(out, "# Plan: `{}`\n", plan.fleet);
    if let Some(e) = &plan.environment {
        let _ = writeln!(out, "- Environment: `{e}`");
    }
    let _ = writeln!(
        out,
        "- CPU overcommit ratio: {}",
        plan.policy.cpu_overcommit
    );
    let _ = writeln!(out, "- {}", totals_line(t));
    let _ = writeln!(out, "- Declared demand: {}", t.demand.human());
    let _ = writeln!(out, "- Capacity: {}", t.capacity.human());
    let _ = writeln!(out, "- Findings: {}", severity_counts(&plan.findings));
}

fn findings(plan: &Plan, out: &mut String) {
    let _ = write!(out, "\n## Findings\n\n");
    if plan.findings.is_empty() {
        out.push_str("None.\n");
        return;
    }
    let mut g = Grid::new(&[
        ("Severity", false),
        ("Code", false),
        ("Where", false),
        ("Message", false),
    ]);
    for f in &plan.findings {
        let severity = match f.severity {
            crate::Severity::Error => "**error**".to_string(),
            s => s.as_str().to_string(),
        };
        let place: Vec<String> = [
            f.project.as_ref().map(|p| format!("project `{p}`")),
            f.service.as_ref().map(|s| format!("service `{s}`")),
            f.site.as_ref().map(|s| match f.host {
                Some(h) => format!("site `{s}` host {h}"),
                None => format!("site `{s}`"),
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut place = if place.is_empty() {
            "fleet".to_string()
        } else {
            place.join(", ")
        };
        if let Some(at) = &f.at {
            place.push_str(&format!(" (`{at}`)"));
        }
        g.row(vec![
            severity,
            format!("`{}`", f.code),
            place,
            f.message.clone(),
        ]);
    }
    out.push_str(&g.markdown());
}

fn totals(plan: &Plan) -> String {
    let t = &plan.totals;
    let mut g = Grid::new(&[
        ("", false),
        ("CPU", true),
        ("Memory", true),
        ("Storage", true),
    ]);
    for (label, a) in [
        ("Declared demand (replicas as ranges)", &t.demand),
        ("Deployed (replicas at minimum)", &t.deployed),
        ("Placed", &t.placed),
        ("Capacity", &t.capacity),
    ] {
        let [c, m, s] = demand_cells(&a.0);
        g.row(vec![label.to_string(), c, m, s]);
    }
    g.markdown()
}

fn projects(plan: &Plan) -> String {
    let mut out = projects_grid(plan).markdown();
    out.push_str(
        "\nA project's demand includes the projects hosted on it (`hosted_on`); a hosted project \
         shows its own demand under *own cpu* and is counted under its host, so each unit is \
         counted once.\n",
    );
    out
}

fn services(plan: &Plan) -> String {
    let mut g = Grid::new(&[
        ("Service", false),
        ("Project", false),
        ("Phase", true),
        ("Wave", true),
        ("Role", false),
        ("Replicas", true),
        ("Per instance", false),
        ("Demand CPU", true),
        ("Placed", true),
        ("Sites", false),
    ]);
    for (name, s) in plan.services.iter().take(SERVICE_ROWS) {
        let mut label = format!("`{name}`");
        if !s.enabled {
            label.push_str(" (disabled)");
        }
        let sites: Vec<String> = s
            .placement
            .iter()
            .map(|(site, n)| format!("{site} ({n})"))
            .collect();
        let placed = if s.placed < s.instances {
            format!("**{} of {}**", s.placed, s.instances)
        } else {
            s.placed.to_string()
        };
        g.row(vec![
            label,
            s.project.clone().unwrap_or_default(),
            s.phase.to_string(),
            s.wave.to_string(),
            super::role_name(s.role).to_string(),
            s.replicas.to_string(),
            if s.per_instance.0.cpu.max + s.per_instance.0.memory.max + s.per_instance.0.storage.max
                == 0
            {
                "-".to_string()
            } else {
                s.per_instance.human_nonzero()
            },
            Resource::Cpu.fmt(s.demand.0.cpu),
            placed,
            names(&sites),
        ]);
    }
    let mut out = g.markdown();
    if plan.services.len() > SERVICE_ROWS {
        let _ = writeln!(
            out,
            "\n({} more services not listed.)",
            plan.services.len() - SERVICE_ROWS
        );
    }
    out
}

fn sites(plan: &Plan) -> String {
    let mut out = sites_grid(plan).markdown();
    out.push_str(
        "\nDemand is that of the placed instances (replicas at minimum). Percentages are worst \
         case: the upper bound of demand over the lower bound of capacity.\n",
    );
    out
}

fn validators(plan: &Plan) -> String {
    let mut out = validators_grid(plan).markdown();
    out.push_str(
        "\nn validators tolerate f = floor((n-1)/3) faults and need n-f votes; losing one site \
         (or host, when spread by host) must not lose more than f. A set is judged at each phase \
         in which it grows, with the validators of that phase and earlier.\n",
    );
    out
}

fn phases(plan: &Plan) -> String {
    let mut out = String::new();
    for p in &plan.phases {
        let _ = writeln!(
            out,
            "### Phase {}\n\n{}, {}; {} online.\n",
            p.phase,
            super::phase_members(plan, &p.waves),
            phase_demand(&p.demand),
            count(p.sites_online, "site")
        );
        for (i, w) in p.waves.iter().enumerate() {
            let quoted: Vec<String> = w
                .iter()
                .map(
                    |n| match plan.services.get(n).and_then(|s| s.job.as_ref()) {
                        Some(job) => format!("`{n}` {}", super::job_tag(job)),
                        None => format!("`{n}`"),
                    },
                )
                .collect();
            let _ = writeln!(out, "{}. {}", i + 1, names(&quoted));
        }
        out.push('\n');
    }
    out.push_str("Services of one wave start in parallel once every earlier wave is healthy.\n");
    out
}
