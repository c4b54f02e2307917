//! Human renderings of a plan: terminal tables, a Markdown report and a Graphviz graph.
//! Each is a pure function of the plan, so the same plan renders to the same text.

mod dot;
mod markdown;
mod table;

pub use dot::dot;
pub use markdown::markdown;
pub use table::table;

use crate::amount::Resource;
use crate::output::{Plan, SitePlan};
use crate::{Finding, Severity};
use phoenix_spec::quantity::Range;
use phoenix_spec::text::count;
use phoenix_spec::{Resources, Tier};

/// Above this many sites, sites expanded from one `count:` group are shown as one row.
const SITE_ROWS: usize = 40;
/// Names shown in a list before "and N more".
const NAMES_SHOWN: usize = 12;

/// Rows of text cells with a header; rendered as aligned text or as a Markdown table.
struct Grid {
    headers: Vec<&'static str>,
    /// Right-align this column (numbers).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Grid {
    fn new(columns: &[(&'static str, bool)]) -> Self {
        Grid {
            headers: columns.iter().map(|c| c.0).collect(),
            right: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len(), "one cell per column");
        self.rows.push(cells);
    }

    /// Aligned columns two spaces apart, indented by two, headers in capitals.
    fn text(&self) -> String {
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain([self.headers[i].len()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..self.headers.len()).map(width).collect();
        let line = |cells: Vec<String>| {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let last = i + 1 == cells.len();
                    match (self.right[i], last) {
                        (true, _) => format!("{c:>w$}", w = widths[i]),
                        (false, true) => c.clone(),
                        (false, false) => format!("{c:<w$}", w = widths[i]),
                    }
                })
                .collect();
            format!("  {}\n", padded.join("  ").trim_end())
        };
        let mut out = line(self.headers.iter().map(|h| h.to_uppercase()).collect());
        for r in &self.rows {
            out.push_str(&line(r.clone()));
        }
        out
    }

    /// A GitHub-flavoured Markdown table; `|` in cells is escaped.
    fn markdown(&self) -> String {
        let esc = |s: &str| s.replace('|', "\\|");
        let headers: Vec<String> = self.headers.iter().map(|h| capitalised(h)).collect();
        let mut out = format!("| {} |\n", headers.join(" | "));
        let rule: Vec<&str> = self
            .right
            .iter()
            .map(|&r| if r { "---:" } else { "---" })
            .collect();
        out.push_str(&format!("|{}|\n", rule.join("|")));
        for r in &self.rows {
            let cells: Vec<String> = r.iter().map(|c| esc(c)).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        out
    }
}

/// `3 services` or `2 services and 1 job`: what the waves of a phase hold.
fn phase_members(plan: &Plan, waves: &[Vec<String>]) -> String {
    let all = waves.iter().flatten();
    let jobs = all
        .clone()
        .filter(|n| plan.services.get(*n).is_some_and(|s| s.job.is_some()))
        .count();
    let services = all.count() - jobs;
    if jobs == 0 {
        count(services, "service")
    } else {
        format!("{} and {}", count(services, "service"), count(jobs, "job"))
    }
}

/// The names of a wave, a job's marked `name (job)` (or `(job, for each S)`, `(job, on
/// rollback of S)`).
fn wave_names(plan: &Plan, wave: &[String]) -> Vec<String> {
    wave.iter()
        .map(
            |n| match plan.services.get(n).and_then(|s| s.job.as_ref()) {
                Some(job) => format!("{n} {}", job_tag(job)),
                None => n.clone(),
            },
        )
        .collect()
}

/// `(job)`, with what makes a job run other than in its wave: `for_each`, a rollback hook.
pub(crate) fn job_tag(job: &phoenix_spec::Job) -> String {
    let mut parts = vec!["job".to_string()];
    if let Some(t) = &job.for_each {
        parts.push(format!("for each {t}"));
    }
    if let Some(h) = job
        .hook
        .as_ref()
        .filter(|h| h.when == phoenix_spec::HookWhen::Rollback)
    {
        parts.push(format!("on rollback of {}", h.service));
    }
    format!("({})", parts.join(", "))
}

/// `a, b, c` or the first few and `and N more`.
fn names(all: &[String]) -> String {
    if all.len() <= NAMES_SHOWN {
        return all.join(", ");
    }
    format!(
        "{}, and {} more",
        all[..NAMES_SHOWN].join(", "),
        all.len() - NAMES_SHOWN
    )
}

/// `12-16 / 32 cores`, `64Gi / 128Gi`: demand over capacity in one cell.
fn of_capacity(r: Resource, demand: &Resources, capacity: &Resources) -> String {
    let unit = |x: Range| match r {
        Resource::Cpu => phoenix_spec::quantity::fmt_cpu(x),
        _ => phoenix_spec::quantity::fmt_bytes(x),
    };
    let suffix = if r == Resource::Cpu { " cores" } else { "" };
    format!("{} / {}{suffix}", unit(r.of(demand)), unit(r.of(capacity)))
}

/// `85.5%`, or `-` when there is no capacity.
fn pct(p: Option<f64>) -> String {
    p.map_or_else(|| "-".to_string(), |p| format!("{p}%"))
}

/// The worst-case utilisation cells of a site: cpu, memory, storage.
fn utilisation_cells(s: &SitePlan) -> [String; 3] {
    [
        pct(s.utilisation.cpu),
        pct(s.utilisation.memory),
        pct(s.utilisation.storage),
    ]
}

/// Counts of findings by severity: `2 errors, 1 warning, 0 info`.
fn severity_counts(findings: &[Finding]) -> String {
    let n = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    format!(
        "{}, {}, {}",
        count(n(Severity::Error), "error"),
        count(n(Severity::Warning), "warning"),
        count(n(Severity::Info), "info")
    )
}

/// The demand of a phase in words: `demand 4 cores, 8Gi memory`, or `no resources declared`
/// (a phase whose services state no resources, as in a fleet sized nowhere).
fn phase_demand(demand: &crate::Amount) -> String {
    if demand.0 == phoenix_spec::Resources::ZERO {
        "no resources declared".to_string()
    } else {
        format!("demand {}", demand.human_nonzero())
    }
}

/// `3 sites, 5 hosts; 7 services (1 disabled); 12 instances planned, 12 placed`.
fn totals_line(t: &crate::Totals) -> String {
    let disabled = if t.disabled_services > 0 {
        format!(" ({} disabled)", t.disabled_services)
    } else {
        String::new()
    };
    format!(
        "{}, {}; {}{disabled}; {} planned, {} placed",
        count(t.sites, "site"),
        count(t.hosts, "host"),
        count(t.services, "service"),
        count(t.instances, "instance"),
        t.placed_instances
    )
}

/// One displayed site row: a single site, or every site of a `count:` group.
struct SiteRow {
    name: String,
    tier: Tier,
    phase: String,
    hosts: u64,
    instances: u64,
    demand: Resources,
    capacity: Resources,
    /// Worst-case utilisation; for a group, the highest among its sites.
    utilisation: [String; 3],
}

/// Site rows in fleet order; groups collapse to one row when the fleet has many sites.
fn site_rows(plan: &Plan) -> Vec<SiteRow> {
    let mut sites: Vec<(&String, &SitePlan)> = plan.sites.iter().collect();
    sites.sort_by_key(|(_, s)| s.index);
    let collapse = sites.len() > SITE_ROWS;
    let mut rows: Vec<SiteRow> = Vec::new();
    let mut members: Vec<&SitePlan> = Vec::new();
    let mut i = 0;
    while i < sites.len() {
        let (name, s) = sites[i];
        let group = s.group.as_ref().filter(|_| collapse);
        let Some(g) = group else {
            rows.push(SiteRow {
                name: name.clone(),
                tier: s.tier,
                phase: s.phase.to_string(),
                hosts: u64::from(s.hosts),
                instances: s.instances,
                demand: s.demand.0,
                capacity: s.capacity.0,
                utilisation: utilisation_cells(s),
            });
            i += 1;
            continue;
        };
        members.clear();
        let first = name;
        let mut last = name;
        while i < sites.len() && sites[i].1.group.as_ref() == Some(g) {
            members.push(sites[i].1);
            last = sites[i].0;
            i += 1;
        }
        rows.push(group_row(g, first, last, &members));
    }
    rows
}

fn group_row(group: &str, first: &str, last: &str, members: &[&SitePlan]) -> SiteRow {
    let worst = |f: fn(&SitePlan) -> Option<f64>| {
        let m = members
            .iter()
            .filter_map(|s| f(s))
            .fold(None, |acc: Option<f64>, p| {
                Some(acc.map_or(p, |a| a.max(p)))
            });
        m.map_or_else(|| "-".to_string(), |p| format!("max {p}%"))
    };
    let phases: Vec<u32> = members.iter().map(|s| s.phase).collect();
    let (lo, hi) = (
        phases.iter().min().copied().unwrap_or(0),
        phases.iter().max().copied().unwrap_or(0),
    );
    SiteRow {
        name: format!(
            "{group}: {first} .. {last} ({})",
            count(members.len(), "site")
        ),
        tier: members[0].tier,
        phase: if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        },
        hosts: members.iter().map(|s| u64::from(s.hosts)).sum(),
        instances: members.iter().map(|s| s.instances).sum(),
        demand: members.iter().map(|s| s.demand.0).sum(),
        capacity: members.iter().map(|s| s.capacity.0).sum(),
        utilisation: [
            worst(|s| s.utilisation.cpu),
            worst(|s| s.utilisation.memory),
            worst(|s| s.utilisation.storage),
        ],
    }
}

/// The sites table shared by the text and Markdown renderers.
fn sites_grid(plan: &Plan) -> Grid {
    let mut g = Grid::new(&[
        ("site", false),
        ("tier", false),
        ("phase", true),
        ("hosts", true),
        ("instances", true),
        ("cpu (demand / capacity)", true),
        ("memory", true),
        ("storage", true),
        ("cpu %", true),
        ("mem %", true),
        ("sto %", true),
    ]);
    for r in site_rows(plan) {
        let [c, m, s] = r.utilisation;
        g.row(vec![
            r.name,
            r.tier.as_str().to_string(),
            r.phase,
            r.hosts.to_string(),
            r.instances.to_string(),
            of_capacity(Resource::Cpu, &r.demand, &r.capacity),
            of_capacity(Resource::Memory, &r.demand, &r.capacity),
            of_capacity(Resource::Storage, &r.demand, &r.capacity),
            c,
            m,
            s,
        ]);
    }
    g
}

/// Demand columns: cpu, memory, storage.
fn demand_cells(r: &Resources) -> [String; 3] {
    [
        Resource::Cpu.fmt(r.cpu),
        Resource::Memory.fmt(r.memory),
        Resource::Storage.fmt(r.storage),
    ]
}

/// Budget as written: `32-68 cores, 104G-224G memory`, or empty.
fn budget_cell(b: Option<&crate::BudgetAmount>) -> String {
    let Some(b) = b else { return String::new() };
    let mut parts = Vec::new();
    if let Some(c) = b.cpu {
        parts.push(Resource::Cpu.fmt(c.0));
    }
    if let Some(m) = b.memory_bytes {
        parts.push(format!("{} memory", Resource::Memory.fmt(m)));
    }
    if let Some(s) = b.storage_bytes {
        parts.push(format!("{} storage", Resource::Storage.fmt(s)));
    }
    parts.join(", ")
}

/// The projects table shared by the text and Markdown renderers; the synthetic group of
/// services without a project comes last.
fn projects_grid(plan: &Plan) -> Grid {
    let mut g = Grid::new(&[
        ("project", false),
        ("cpu", true),
        ("memory", true),
        ("storage", true),
        ("own cpu", true),
        ("counted under", false),
        ("services", true),
        ("budget", false),
    ]);
    for (name, p) in &plan.projects {
        let [c, m, s] = demand_cells(&p.demand.0);
        let under = if p.counted_under == *name {
            String::new()
        } else {
            p.counted_under.clone()
        };
        g.row(vec![
            name.clone(),
            c,
            m,
            s,
            Resource::Cpu.fmt(p.own_demand.0.cpu),
            under,
            p.services.len().to_string(),
            budget_cell(p.budget.as_ref()),
        ]);
    }
    if let Some(u) = &plan.unassigned {
        let [c, m, s] = demand_cells(&u.demand.0);
        g.row(vec![
            u.name.clone(),
            c.clone(),
            m,
            s,
            c,
            String::new(),
            u.services.len().to_string(),
            String::new(),
        ]);
    }
    g
}

/// The tiers table.
fn tiers_grid(plan: &Plan) -> Grid {
    let mut g = Grid::new(&[
        ("tier", false),
        ("sites", true),
        ("hosts", true),
        ("instances", true),
        ("cpu (demand / capacity)", true),
        ("memory", true),
        ("storage", true),
    ]);
    for t in &plan.tiers {
        g.row(vec![
            t.tier.as_str().to_string(),
            t.sites.to_string(),
            t.hosts.to_string(),
            t.instances.to_string(),
            of_capacity(Resource::Cpu, &t.demand.0, &t.capacity.0),
            of_capacity(Resource::Memory, &t.demand.0, &t.capacity.0),
            of_capacity(Resource::Storage, &t.demand.0, &t.capacity.0),
        ]);
    }
    g
}

/// The validator sets table: one row per set and phase in which it grows, the set as it
/// stands then.
fn validators_grid(plan: &Plan) -> Grid {
    let mut g = Grid::new(&[
        ("validator set", false),
        ("phase", true),
        ("n", true),
        ("f", true),
        ("quorum", true),
        ("sites", true),
        ("worst site", false),
        ("worst host", false),
        ("safe", false),
    ]);
    let worst = |w: &Option<(String, u64)>| {
        w.as_ref()
            .map_or_else(String::new, |(n, c)| format!("{n} ({c})"))
    };
    for v in &plan.validator_sets {
        for p in &v.phases {
            g.row(vec![
                v.name.clone(),
                p.phase.to_string(),
                p.n.to_string(),
                p.f.to_string(),
                p.quorum.to_string(),
                p.by_site.len().to_string(),
                worst(&p.worst_site),
                worst(&p.worst_host),
                if p.safe {
                    "yes".to_string()
                } else {
                    "NO".to_string()
                },
            ]);
        }
    }
    g
}

/// The timeline table, projects in order of earliest start.
fn timeline_grid(t: &crate::Timeline) -> Grid {
    use phoenix_spec::quantity::fmt_duration;
    let mut g = Grid::new(&[
        ("project", false),
        ("duration", true),
        ("earliest start", true),
        ("earliest finish", true),
    ]);
    let mut rows: Vec<(&String, &crate::TimelineEntry)> = t.projects.iter().collect();
    rows.sort_by_key(|(n, e)| (e.start_hours.min, e.start_hours.max, e.finish_hours.max, *n));
    for (name, e) in rows {
        let d = if e.duration_hours.is_zero() {
            "-".to_string()
        } else {
            fmt_duration(e.duration_hours)
        };
        g.row(vec![
            name.clone(),
            d,
            week_range(e.start_hours),
            week_range(e.finish_hours),
        ]);
    }
    g
}

/// Hours as `week 3-5`-style offsets (`0` for the start).
fn week_range(r: Range) -> String {
    if r.is_zero() {
        "0".to_string()
    } else {
        phoenix_spec::quantity::fmt_duration(r)
    }
}

/// `a -> b -> c, 4-5w (sequentially 7-9w)`.
fn critical_path_line(t: &crate::Timeline) -> String {
    use phoenix_spec::quantity::fmt_duration;
    format!(
        "critical path: {}; {} (one after another: {})",
        t.critical_path.join(" -> "),
        fmt_duration(t.length_hours),
        fmt_duration(t.sequential_hours)
    )
}

/// The spec's spelling of a role.
fn role_name(r: phoenix_spec::Role) -> &'static str {
    match r {
        phoenix_spec::Role::App => "app",
        phoenix_spec::Role::Validator => "validator",
        phoenix_spec::Role::Replica => "replica",
        phoenix_spec::Role::Light => "light",
    }
}

/// `Cpu (demand / capacity)` from `cpu (demand / capacity)`.
fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use crate::testing::{fleet, project};
    use crate::{plan, render};
    use phoenix_spec::{Role, Tier};

    const GI: u64 = 1 << 30;

    fn sample() -> crate::Plan {
        let mut f = fleet(
            &[
                ("core-1", Tier::Core, 2, 16_000, 64 * GI),
                ("edge-1", Tier::Edge, 1, 4_000, 8 * GI),
            ],
            &[
                ("db", 1, 4_000, 16 * GI),
                ("api", 2, 1_000, 2 * GI),
                ("val", 3, 2_000, 4 * GI),
            ],
        );
        let mut app = project("app");
        app.depends_on = vec!["data".into()];
        f.projects = vec![project("data"), app];
        f.services[0].project = Some("data".into());
        f.services[1].project = Some("app".into());
        f.services[1].depends_on = vec!["db".into()];
        f.services[2].role = Role::Validator;
        f.services[2].enabled = false;
        plan(&f)
    }

    #[test]
    fn table_has_every_section_and_aligned_rows() {
        let t = render::table(&sample());
        for s in [
            "TOTALS",
            "PROJECTS",
            "TIERS",
            "PHASES AND WAVES",
            "SITES",
            "VALIDATOR SETS",
            "FINDINGS",
        ] {
            assert!(t.contains(s), "missing {s}:\n{t}");
        }
        assert!(t.contains("    wave 2: api"), "{t}");
        assert!(t.contains("bft-unsafe"), "{t}");
        assert!(
            !t.lines().any(|l| l.ends_with(' ')),
            "no trailing spaces:\n{t}"
        );
    }

    #[test]
    fn markdown_is_a_report_with_headings_and_tables() {
        let m = render::markdown(&sample());
        assert!(m.starts_with("# Plan: `test`\n"), "{m}");
        for s in [
            "## Findings",
            "| **error** | `bft-unsafe` |",
            "## Projects",
            "| Project | Cpu |",
            "## Rollout: phases and waves",
            "`val` (disabled)",
        ] {
            assert!(m.contains(s), "missing {s}:\n{m}");
        }
    }

    #[test]
    fn dot_clusters_by_phase_and_project_with_both_kinds_of_edges() {
        let d = render::dot(&sample());
        assert!(d.starts_with("digraph \"test\" {"), "{d}");
        assert!(d.contains("subgraph \"cluster_phase_1\""), "{d}");
        assert!(d.contains("subgraph \"cluster_phase_1_data\""), "{d}");
        assert!(d.contains("\"db\" -> \"api\";"), "{d}");
        assert!(d.contains("\"db\" -> \"api\" [ltail=\"cluster_phase_1_data\", lhead=\"cluster_phase_1_app\", style=dashed"), "{d}");
        assert!(
            d.contains("fillcolor=lightcoral, style=\"rounded,filled,dashed\""),
            "disabled validator: {d}"
        );
        assert!(d.trim_end().ends_with('}'));
    }

    #[test]
    fn regression_counts_of_one_are_singular_and_empty_demand_is_worded() {
        // The table said "1 instances", "1 sites, 1 hosts" and "phase 1: 6 services, nothing".
        let mut f = fleet(
            &[("core-1", Tier::Core, 1, 4_000, 8 * GI)],
            &[("web", 1, 0, 0)],
        );
        f.services[0].resources = phoenix_spec::Resources::ZERO;
        let p = plan(&f);
        let t = render::table(&p);
        assert!(
            t.contains("1 site, 1 host; 1 service; 1 instance planned, 1 placed"),
            "{t}"
        );
        assert!(
            t.contains("phase 1: 1 service, no resources declared; 1 site online"),
            "{t}"
        );
        assert!(t.contains("FINDINGS (0 errors, 0 warnings, 0 info)"), "{t}");
        let m = render::markdown(&p);
        assert!(
            m.contains("- 1 site, 1 host; 1 service; 1 instance planned, 1 placed"),
            "{m}"
        );
        assert!(
            m.contains("1 service, no resources declared; 1 site online."),
            "{m}"
        );
        for text in [&t, &m] {
            for wrong in ["1 sites", "1 hosts", "1 services", "1 instances", "nothing"] {
                assert!(!text.contains(wrong), "{wrong}: {text}");
            }
        }
    }

    #[test]
    fn finding_messages_agree_with_their_counts() {
        let mut f = fleet(
            &[("core-1", Tier::Core, 1, 4_000, 8 * GI)],
            &[("val", 1, 1_000, GI), ("big", 1, 64_000, GI)],
        );
        f.services[0].role = Role::Validator;
        f.services[0].enabled = false;
        let msgs: Vec<String> = plan(&f).findings.into_iter().map(|f| f.message).collect();
        let all = msgs.join("\n");
        assert!(
            all.contains("1 validator tolerates no faulty validator"),
            "{all}"
        );
        assert!(all.contains("its 1 instance is planned"), "{all}");
        assert!(
            all.contains("its instance cannot be placed") || all.contains("1 of 1 instance cannot"),
            "{all}"
        );
        assert!(!all.contains("(s)"), "{all}");
    }

    #[test]
    fn large_fleets_collapse_site_groups() {
        let mut f = fleet(&[], &[]);
        for i in 1..=50 {
            let mut s = crate::testing::site(&format!("edge-{i}"), Tier::Edge, 1, 1_000, GI);
            s.group = Some("edge".into());
            f.sites.push(s);
        }
        let t = render::table(&plan(&f));
        assert!(t.contains("edge: edge-1 .. edge-50 (50 sites)"), "{t}");
        assert!(!t.contains("edge-17 "), "{t}");
    }
}
