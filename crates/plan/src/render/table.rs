//! The default `phoenix plan` output: plain aligned tables for a terminal.

use super::{
    Grid, critical_path_line, demand_cells, names, phase_demand, projects_grid, severity_counts,
    sites_grid, tiers_grid, timeline_grid, totals_line, validators_grid, wave_names,
};
use crate::amount::Amount;
use crate::output::Plan;
use phoenix_spec::text::count;
use std::fmt::Write as _;

/// Renders a plan as readable terminal tables: totals, projects, tiers, phases and waves,
/// sites with utilisation, validator sets, timeline and findings.
pub fn table(plan: &Plan) -> String {
    let mut out = String::new();
    header(plan, &mut out);
    section(&mut out, "TOTALS", totals(plan));
    section(&mut out, "PROJECTS", projects_grid(plan).text());
    section(&mut out, "TIERS", tiers_grid(plan).text());
    section(&mut out, "PHASES AND WAVES", phases(plan));
    section(
        &mut out,
        "SITES (demand of placed instances; % = demand max over capacity min)",
        sites_grid(plan).text(),
    );
    if !plan.validator_sets.is_empty() {
        section(
            &mut out,
            "VALIDATOR SETS (f = floor((n-1)/3), quorum n-f; each phase: validators of that phase and earlier)",
            validators_grid(plan).text(),
        );
    }
    if let Some(t) = &plan.timeline {
        let body = format!("{}  {}\n", timeline_grid(t).text(), critical_path_line(t));
        section(&mut out, "TIMELINE", body);
    }
    section(
        &mut out,
        &format!("FINDINGS ({})", severity_counts(&plan.findings)),
        findings(plan),
    );
    out
}

fn header(plan: &Plan, out: &mut String) {
    let env = plan
        .environment
        .as_ref()
        .map_or(String::new(), |e| format!(", environment {e}"));
    let _ = writeln!(
        out,
        "Plan of fleet {}{env} (CPU overcommit ratio {})",
        plan.fleet, plan.policy.cpu_overcommit
    );
}

fn section(out: &mut String, title: &str, body: String) {
    let _ = write!(out, "\n{title}\n{body}");
}

fn totals(plan: &Plan) -> String {
    let t = &plan.totals;
    let mut g = Grid::new(&[
        ("", false),
        ("cpu", true),
        ("memory", true),
        ("storage", true),
    ]);
    let rows: [(&str, &Amount); 4] = [
        ("declared demand (replicas as ranges)", &t.demand),
        ("deployed (replicas at minimum)", &t.deployed),
        ("placed", &t.placed),
        ("capacity", &t.capacity),
    ];
    for (label, a) in rows {
        let [c, m, s] = demand_cells(&a.0);
        g.row(vec![label.to_string(), c, m, s]);
    }
    format!("{}  {}\n", g.text(), totals_line(t))
}

fn phases(plan: &Plan) -> String {
    let mut out = String::new();
    for p in &plan.phases {
        let _ = writeln!(
            out,
            "  phase {}: {}, {}; {} online",
            p.phase,
            super::phase_members(plan, &p.waves),
            phase_demand(&p.demand),
            count(p.sites_online, "site")
        );
        for (i, w) in p.waves.iter().enumerate() {
            let _ = writeln!(out, "    wave {}: {}", i + 1, names(&wave_names(plan, w)));
        }
    }
    out
}

fn findings(plan: &Plan) -> String {
    if plan.findings.is_empty() {
        return "  none\n".to_string();
    }
    let mut g = Grid::new(&[
        ("severity", false),
        ("code", false),
        ("at", false),
        ("message", false),
    ]);
    for f in &plan.findings {
        g.row(vec![
            f.severity.as_str().to_string(),
            f.code.to_string(),
            f.at.clone().unwrap_or_else(|| "-".to_string()),
            f.message.clone(),
        ]);
    }
    g.text()
}
