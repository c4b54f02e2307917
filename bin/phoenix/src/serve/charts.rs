//! The plan page's charts: the JSON of `phoenix plan -o json` (the same document
//! `GET /api/v1/fleets/{fleet}/plan` answers) drawn as inline SVG, server-side, with no chart
//! library and no script (ADR 007): demand against capacity per tier and per site, each
//! validator set with its BFT margin, and the timeline with its critical path. Every chart has
//! its numbers beside it in a table, for screen readers and for copying, and carries the plan's
//! own numbers in `data-*` attributes, so a test can hold the drawing against the JSON.
//!
//! Pure: plan JSON in, HTML out; every text escaped.

use serde_json::Value;
use std::fmt::Write as _;

/// The sites drawn in the per-site charts at most (a 340-site fleet's table lists them all).
pub(crate) const MAX_SITE_BARS: usize = 60;
/// Width of a chart's drawing area, in SVG units.
const W: f64 = 640.0;
/// Left margin for the row labels.
const LABEL: f64 = 170.0;
/// Height of one row.
const ROW: f64 = 22.0;

/// How an amount of a resource is shown.
type Format = fn(f64) -> String;

/// The three resources, as the plan names them, with how to show their amounts.
const RESOURCES: [(&str, &str, Format); 3] = [
    ("cpu", "CPU", cores),
    ("memory_bytes", "Memory", binary_bytes),
    ("storage_bytes", "Storage", decimal_bytes),
];

fn esc(s: &str) -> String {
    super::portal::esc(s)
}

fn cores(v: f64) -> String {
    format!("{} cores", trim(v))
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn binary_bytes(v: f64) -> String {
    let gib = v / (1024.0 * 1024.0 * 1024.0);
    if gib >= 1024.0 {
        format!("{} TiB", trim(gib / 1024.0))
    } else {
        format!("{} GiB", trim(gib))
    }
}

fn decimal_bytes(v: f64) -> String {
    let gb = v / 1e9;
    if gb >= 1000.0 {
        format!("{} TB", trim(gb / 1000.0))
    } else {
        format!("{} GB", trim(gb))
    }
}

/// A range `{min, max}` as numbers (0 when absent).
fn range(v: &Value) -> (f64, f64) {
    (
        v["min"].as_f64().unwrap_or(0.0),
        v["max"].as_f64().unwrap_or(0.0),
    )
}

fn show_range((lo, hi): (f64, f64), fmt: Format) -> String {
    if (lo - hi).abs() < f64::EPSILON {
        fmt(hi)
    } else {
        let (a, b) = (fmt(lo), fmt(hi));
        // `2–4 cores` rather than `2 cores–4 cores` when both are in one unit.
        match (a.rsplit_once(' '), b.rsplit_once(' ')) {
            (Some((x, u)), Some((y, v))) if u == v => format!("{x}–{y} {u}"),
            _ => format!("{a}–{b}"),
        }
    }
}

/// One row of a demand chart: a label, demand and capacity ranges.
struct Row {
    label: String,
    demand: (f64, f64),
    capacity: (f64, f64),
}

/// A horizontal bar chart of demand against capacity, one row per tier or site: capacity as a
/// grey bar, demand's minimum solid and its range up to the maximum lighter, red where demand
/// may exceed capacity.
fn demand_chart(id: &str, title: &str, rows: &[Row], fmt: Format) -> String {
    let scale_max = rows
        .iter()
        .map(|r| r.demand.1.max(r.capacity.1))
        .fold(0.0f64, f64::max);
    let bar_w = W - LABEL - 10.0;
    let x = |v: f64| {
        if scale_max > 0.0 {
            LABEL + bar_w * (v / scale_max)
        } else {
            LABEL
        }
    };
    let height = ROW * rows.len() as f64 + 28.0;
    let mut svg = format!(
        "<svg id=\"{id}\" class=\"chart\" role=\"img\" aria-labelledby=\"{id}-title\" viewBox=\"0 0 {W} {height}\" width=\"{W}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title id=\"{id}-title\">{}</title>",
        esc(title)
    );
    for (i, r) in rows.iter().enumerate() {
        let y = ROW * i as f64 + 4.0;
        let over = r.demand.1 > r.capacity.0;
        let _ = write!(
            svg,
            "<g class=\"row\" data-label=\"{label}\" data-demand-min=\"{dmin}\" data-demand-max=\"{dmax}\" data-capacity-min=\"{cmin}\" data-capacity-max=\"{cmax}\">\
             <text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\" font-size=\"12\">{label}</text>\
             <rect class=\"capacity\" x=\"{LABEL}\" y=\"{y}\" width=\"{cw:.1}\" height=\"16\" fill=\"#ddd\"><title>capacity {cap}</title></rect>\
             <rect class=\"demand-max\" x=\"{LABEL}\" y=\"{y4:.1}\" width=\"{dwmax:.1}\" height=\"8\" fill=\"{light}\"><title>demand up to {dem}</title></rect>\
             <rect class=\"demand-min\" x=\"{LABEL}\" y=\"{y4:.1}\" width=\"{dwmin:.1}\" height=\"8\" fill=\"{solid}\"></rect></g>",
            label = esc(&r.label),
            dmin = r.demand.0,
            dmax = r.demand.1,
            cmin = r.capacity.0,
            cmax = r.capacity.1,
            tx = LABEL - 6.0,
            ty = y + 12.0,
            cw = x(r.capacity.1) - LABEL,
            cap = esc(&show_range(r.capacity, fmt)),
            y4 = y + 4.0,
            dwmax = x(r.demand.1) - LABEL,
            dwmin = x(r.demand.0) - LABEL,
            dem = esc(&show_range(r.demand, fmt)),
            light = if over { "#e99" } else { "#9c9" },
            solid = if over { "#b00" } else { "#070" },
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{LABEL}\" y=\"{}\" font-size=\"11\" fill=\"#555\">0</text><text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#555\" text-anchor=\"end\">{}</text></svg>",
        height - 6.0,
        W - 10.0,
        height - 6.0,
        esc(&fmt(scale_max))
    );
    svg
}

/// Rows of `groups` (the plan's `tiers` array or `sites` map entries) for one resource.
fn rows_of<'a>(groups: impl Iterator<Item = (String, &'a Value)>, resource: &str) -> Vec<Row> {
    groups
        .map(|(label, g)| Row {
            label,
            demand: range(&g["demand"][resource]),
            capacity: range(&g["capacity"][resource]),
        })
        .collect()
}

/// The numbers of a demand section: one row per group, demand and capacity of each resource.
fn demand_table(id: &str, what: &str, groups: &[(String, &Value)]) -> String {
    let mut t = format!(
        "<table id=\"{id}\" class=\"numbers\"><tr><th>{}</th><th>CPU demand</th><th>CPU capacity</th>\
         <th>Memory demand</th><th>Memory capacity</th><th>Storage demand</th><th>Storage capacity</th></tr>",
        esc(what)
    );
    for (label, g) in groups {
        let _ = write!(
            t,
            "<tr data-label=\"{}\"><td>{}</td>",
            esc(label),
            esc(label)
        );
        for (key, _, fmt) in RESOURCES {
            for side in ["demand", "capacity"] {
                let r = range(&g[side][key]);
                let _ = write!(
                    t,
                    "<td data-{side}-{key}-min=\"{}\" data-{side}-{key}-max=\"{}\">{}</td>",
                    r.0,
                    r.1,
                    esc(&show_range(r, fmt))
                );
            }
        }
        t.push_str("</tr>");
    }
    t.push_str("</table>");
    t
}

/// Demand against capacity per tier and per site: a chart per resource, and the table.
fn demand_sections(plan: &Value) -> String {
    let tiers: Vec<(String, &Value)> = plan["tiers"]
        .as_array()
        .map(|a| a.iter().map(|t| (text(&t["tier"]), t)).collect())
        .unwrap_or_default();
    let sites: Vec<(String, &Value)> = plan["sites"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v)).collect())
        .unwrap_or_default();
    let mut out = String::from(
        "<h2>Demand against capacity per tier</h2><p>Grey: capacity; green: demand (solid its \
         minimum, light up to its maximum), red where demand may exceed capacity.</p>",
    );
    for (key, name, fmt) in RESOURCES {
        let _ = write!(out, "<h3>{name}</h3>");
        out.push_str(&demand_chart(
            &format!("tier-{}", key.trim_end_matches("_bytes")),
            &format!("{name} demand against capacity per tier"),
            &rows_of(tiers.iter().map(|(l, v)| (l.clone(), *v)), key),
            fmt,
        ));
    }
    out.push_str(&demand_table("tier-numbers", "Tier", &tiers));
    let _ = write!(out, "<h2>Demand against capacity per site</h2>");
    if sites.len() > MAX_SITE_BARS {
        let _ = write!(
            out,
            "<p>The charts show the first {MAX_SITE_BARS} of {} sites; the table lists them all.</p>",
            sites.len()
        );
    }
    for (key, name, fmt) in RESOURCES {
        let _ = write!(out, "<h3>{name}</h3>");
        out.push_str(&demand_chart(
            &format!("site-{}", key.trim_end_matches("_bytes")),
            &format!("{name} demand against capacity per site"),
            &rows_of(
                sites
                    .iter()
                    .take(MAX_SITE_BARS)
                    .map(|(l, v)| (l.clone(), *v)),
                key,
            ),
            fmt,
        ));
    }
    out.push_str(&demand_table("site-numbers", "Site", &sites));
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Each validator set: n, f, quorum, what losing its worst site or host costs, and the margin
/// left (f minus the validators on the worst site: negative means losing that site stops it).
fn validator_sections(plan: &Value) -> String {
    let sets = plan["validator_sets"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut out = String::from("<h2>Validator sets</h2>");
    if sets.is_empty() {
        out.push_str("<p id=\"no-validator-sets\">This fleet has no validator set (no service with <code>role: validator</code>).</p>");
        return out;
    }
    out.push_str(
        "<p>Each set's validators by site (one square each); the line marks the quorum \
         (n − f). The margin is f minus the validators on the worst site: how many more \
         validators the set could lose beyond that site and still reach quorum; below zero, \
         losing that one site stops the set.</p>",
    );
    let mut table = String::from(
        "<table id=\"validator-numbers\" class=\"numbers\"><tr><th>Set</th><th>Services</th><th>n</th><th>f</th>\
         <th>Quorum</th><th>Worst site</th><th>Worst host</th><th>Margin (site)</th><th>Margin (host)</th><th>Safe</th></tr>",
    );
    for set in &sets {
        let name = text(&set["name"]);
        let n = set["n"].as_u64().unwrap_or(0);
        let f = set["f"].as_i64().unwrap_or(0);
        let quorum = set["quorum"].as_u64().unwrap_or(0);
        let worst_site = (
            text(&set["worst_site"][0]),
            set["worst_site"][1].as_i64().unwrap_or(0),
        );
        let worst_host = (
            text(&set["worst_host"][0]),
            set["worst_host"][1].as_i64().unwrap_or(0),
        );
        let (site_margin, host_margin) = (f - worst_site.1, f - worst_host.1);
        let safe = set["safe"] == true;
        // One square per validator, grouped by site; bounded by the set's size (the planner
        // bounds instances), drawn at most 200 wide.
        let shown = n.min(200);
        let cell = ((W - 20.0) / shown.max(1) as f64).min(24.0);
        let mut svg = format!(
            "<svg class=\"chart validator-set\" role=\"img\" aria-label=\"{} validators of {} by site, quorum {}\" data-set=\"{}\" data-n=\"{n}\" data-f=\"{f}\" data-quorum=\"{quorum}\" data-margin=\"{site_margin}\" viewBox=\"0 0 {W} 64\" width=\"{W}\" height=\"64\" xmlns=\"http://www.w3.org/2000/svg\">",
            n,
            esc(&name),
            quorum,
            esc(&name)
        );
        let mut i = 0u64;
        let palette = ["#3a7", "#37a", "#a73", "#a3a", "#7a3", "#3aa"];
        if let Some(by_site) = set["by_site"].as_object() {
            for (k, (site, count)) in by_site.iter().enumerate() {
                let count = count.as_u64().unwrap_or(0);
                for _ in 0..count {
                    if i >= shown {
                        break;
                    }
                    let worst = *site == worst_site.0;
                    let _ = write!(
                        svg,
                        "<rect class=\"validator\" data-site=\"{}\" x=\"{:.1}\" y=\"8\" width=\"{:.1}\" height=\"20\" fill=\"{}\" stroke=\"{}\"><title>{}</title></rect>",
                        esc(site),
                        10.0 + cell * i as f64,
                        (cell - 2.0).max(1.0),
                        palette[k % palette.len()],
                        if worst { "#b00" } else { "#fff" },
                        esc(site)
                    );
                    i += 1;
                }
            }
        }
        let qx = 10.0 + cell * quorum.min(shown) as f64 - 1.0;
        let _ = write!(
            svg,
            "<line class=\"quorum\" x1=\"{qx:.1}\" x2=\"{qx:.1}\" y1=\"2\" y2=\"34\" stroke=\"#222\" stroke-width=\"2\"></line>\
             <text x=\"10\" y=\"52\" font-size=\"12\">{}: n {n}, f {f}, quorum {quorum}, margin {site_margin} (worst site {} holds {})</text></svg>",
            esc(&name),
            esc(&worst_site.0),
            worst_site.1
        );
        let _ = write!(out, "<h3>{}</h3>{svg}", esc(&name));
        let services: Vec<String> = set["services"]
            .as_array()
            .map(|a| a.iter().map(text).collect())
            .unwrap_or_default();
        let _ = write!(
            table,
            "<tr data-set=\"{}\"><td>{}</td><td>{}</td><td class=\"n\">{n}</td><td class=\"f\">{f}</td><td class=\"quorum\">{quorum}</td>\
             <td>{} ({})</td><td>{} ({})</td><td class=\"margin {}\">{site_margin}</td><td class=\"{}\">{host_margin}</td><td class=\"{}\">{}</td></tr>",
            esc(&name),
            esc(&name),
            esc(&services.join(", ")),
            esc(&worst_site.0),
            worst_site.1,
            esc(&worst_host.0),
            worst_host.1,
            if site_margin >= 0 { "ok" } else { "bad" },
            if host_margin >= 0 { "ok" } else { "bad" },
            if safe { "ok" } else { "bad" },
            if safe { "safe" } else { "unsafe" },
        );
    }
    table.push_str("</table>");
    out.push_str(&table);
    out
}

/// The timeline: each project from its earliest start to its latest finish (solid to its
/// earliest finish), the critical path in red; then the phases and their waves.
fn timeline_sections(plan: &Value) -> String {
    let mut out = String::from("<h2>Timeline</h2>");
    let timeline = &plan["timeline"];
    match timeline["projects"].as_object() {
        None => out.push_str(
            "<p id=\"no-timeline\">No timeline: no project of this fleet has a <code>duration:</code>.</p>",
        ),
        Some(projects) => {
            let critical: Vec<String> = timeline["critical_path"]
                .as_array()
                .map(|a| a.iter().map(text).collect())
                .unwrap_or_default();
            let mut rows: Vec<(&String, &Value)> = projects.iter().collect();
            rows.sort_by(|a, b| {
                let s = |v: &Value| v["start_hours"]["min"].as_f64().unwrap_or(0.0);
                s(a.1).total_cmp(&s(b.1)).then_with(|| a.0.cmp(b.0))
            });
            let end = range(&timeline["length_hours"]).1.max(
                rows.iter()
                    .map(|(_, p)| range(&p["finish_hours"]).1)
                    .fold(0.0, f64::max),
            );
            let weeks = |h: f64| trim(h / 168.0);
            let _ = write!(
                out,
                "<p>Critical path: <strong id=\"critical-path\">{}</strong>, {} to {} weeks.</p>",
                esc(&critical.join(" → ")),
                weeks(range(&timeline["length_hours"]).0),
                weeks(range(&timeline["length_hours"]).1),
            );
            let bar_w = W - LABEL - 10.0;
            let x = |h: f64| {
                if end > 0.0 {
                    LABEL + bar_w * (h / end)
                } else {
                    LABEL
                }
            };
            let height = ROW * rows.len() as f64 + 28.0;
            let mut svg = format!(
                "<svg id=\"timeline\" class=\"chart\" role=\"img\" aria-labelledby=\"timeline-title\" viewBox=\"0 0 {W} {height}\" width=\"{W}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\"><title id=\"timeline-title\">Projects over time, the critical path in red</title>"
            );
            let mut table = String::from(
                "<table id=\"timeline-numbers\" class=\"numbers\"><tr><th>Project</th><th>Start (weeks)</th><th>Duration (weeks)</th><th>Finish (weeks)</th><th>Critical</th></tr>",
            );
            for (i, (name, p)) in rows.iter().enumerate() {
                let y = ROW * i as f64 + 4.0;
                let (s, f) = (range(&p["start_hours"]), range(&p["finish_hours"]));
                let d = range(&p["duration_hours"]);
                let on_path = critical.iter().any(|c| c == *name);
                let _ = write!(
                    svg,
                    "<g class=\"project{}\" data-project=\"{n}\" data-start-hours=\"{}\" data-finish-hours=\"{}\">\
                     <text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"12\"{}>{n}</text>\
                     <rect class=\"span\" x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"16\" fill=\"{}\"><title>{n}: weeks {}–{}</title></rect>\
                     <rect class=\"sure\" x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"16\" fill=\"{}\"></rect></g>",
                    if on_path { " critical" } else { "" },
                    s.0,
                    f.1,
                    LABEL - 6.0,
                    y + 12.0,
                    if on_path { " font-weight=\"bold\"" } else { "" },
                    x(s.0),
                    (x(f.1) - x(s.0)).max(2.0),
                    if on_path { "#e99" } else { "#acd" },
                    weeks(s.0),
                    weeks(f.1),
                    x(s.1),
                    (x(f.0) - x(s.1)).max(0.0),
                    if on_path { "#b00" } else { "#37a" },
                    n = esc(name),
                );
                let _ = write!(
                    table,
                    "<tr data-project=\"{}\"{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(name),
                    if on_path { " class=\"critical\"" } else { "" },
                    esc(name),
                    esc(&show_range(s, |h| trim(h / 168.0))),
                    esc(&show_range(d, |h| trim(h / 168.0))),
                    esc(&show_range(f, |h| trim(h / 168.0))),
                    if on_path { "yes" } else { "" },
                );
            }
            let _ = write!(
                svg,
                "<text x=\"{LABEL}\" y=\"{}\" font-size=\"11\" fill=\"#555\">week 0</text><text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#555\" text-anchor=\"end\">week {}</text></svg>",
                height - 6.0,
                W - 10.0,
                height - 6.0,
                weeks(end)
            );
            table.push_str("</table>");
            out.push_str(&svg);
            out.push_str(&table);
        }
    }
    out.push_str(
        "<h3>Phases and waves</h3><table id=\"phases\" class=\"numbers\"><tr><th>Phase</th><th>Sites online</th><th>CPU demand</th><th>Waves (in order; each starts when the one before is healthy)</th></tr>",
    );
    for p in plan["phases"].as_array().cloned().unwrap_or_default() {
        let mut waves = String::from("<ol class=\"waves\">");
        for w in p["waves"].as_array().cloned().unwrap_or_default() {
            let names: Vec<String> = w
                .as_array()
                .map(|a| a.iter().map(text).collect())
                .unwrap_or_default();
            let _ = write!(waves, "<li>{}</li>", esc(&names.join(", ")));
        }
        waves.push_str("</ol>");
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{waves}</td></tr>",
            esc(&text(&p["phase"])),
            esc(&text(&p["sites_online"])),
            esc(&show_range(range(&p["demand"]["cpu"]), cores)),
        );
    }
    out.push_str("</table>");
    out
}

/// The plan page's body.
pub(crate) fn plan_body(plan: &Value) -> String {
    let mut out = String::new();
    let findings = plan["findings"].as_array().cloned().unwrap_or_default();
    let errors = findings.iter().filter(|f| f["severity"] == "error").count();
    let _ = write!(
        out,
        "<p>The plan of revision r{} (the JSON: <code>GET /api/v1/fleets/{}/plan</code>, as \
         <code>phoenix plan -o json</code> prints it). {} finding(s), {errors} error(s).</p>",
        esc(&text(&plan["revision"])),
        esc(&text(&plan["fleet"])),
        findings.len(),
    );
    if !findings.is_empty() {
        out.push_str("<details id=\"findings\"><summary>Findings</summary><ul>");
        for f in &findings {
            let _ = write!(
                out,
                "<li class=\"{}\">{}: {}</li>",
                if f["severity"] == "error" { "bad" } else { "" },
                esc(&text(&f["code"])),
                esc(&text(&f["message"]))
            );
        }
        out.push_str("</ul></details>");
    }
    out.push_str(&demand_sections(plan));
    out.push_str(&validator_sections(plan));
    out.push_str(&timeline_sections(plan));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(cpu: (f64, f64), mem: (u64, u64), st: (u64, u64)) -> Value {
        json!({"cpu": {"min": cpu.0, "max": cpu.1}, "memory_bytes": {"min": mem.0, "max": mem.1}, "storage_bytes": {"min": st.0, "max": st.1}})
    }

    fn plan() -> Value {
        json!({
            "fleet": "f<x>",
            "revision": 2,
            "findings": [{"severity": "error", "code": "bft-unsafe", "message": "<b>loss</b>"}],
            "tiers": [{"tier": "core", "demand": q((2.0, 4.0), (1 << 30, 1 << 31), (1_000_000_000, 1_000_000_000)), "capacity": q((8.0, 8.0), (1 << 34, 1 << 34), (1_000_000_000_000, 1_000_000_000_000))}],
            "sites": {"a": {"demand": q((2.0, 4.0), (0, 0), (0, 0)), "capacity": q((3.0, 3.0), (0, 0), (0, 0))}},
            "validator_sets": [{"name": "v", "services": ["v"], "n": 4, "f": 1, "quorum": 3, "safe": false,
                "by_site": {"a": 2, "b": 2}, "worst_site": ["a", 2], "worst_host": ["a/0", 1]}],
            "timeline": {"critical_path": ["p1", "p2"], "length_hours": {"min": 336, "max": 504},
                "projects": {
                    "p1": {"start_hours": {"min": 0, "max": 0}, "duration_hours": {"min": 168, "max": 168}, "finish_hours": {"min": 168, "max": 168}},
                    "p2": {"start_hours": {"min": 168, "max": 168}, "duration_hours": {"min": 168, "max": 336}, "finish_hours": {"min": 336, "max": 504}},
                    "side": {"start_hours": {"min": 0, "max": 0}, "duration_hours": {"min": 24, "max": 24}, "finish_hours": {"min": 24, "max": 24}}}},
            "phases": [{"phase": 1, "sites_online": 1, "demand": q((2.0, 4.0), (0, 0), (0, 0)), "waves": [["db"], ["web", "api"]]}],
        })
    }

    #[test]
    fn charts_carry_the_plans_numbers_and_escape_every_text() {
        let html = plan_body(&plan());
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("&lt;b&gt;loss&lt;/b&gt;"));
        assert!(html.contains("f&lt;x&gt;"));
        for id in [
            "tier-cpu",
            "tier-memory",
            "tier-storage",
            "site-cpu",
            "timeline",
        ] {
            assert!(html.contains(&format!("<svg id=\"{id}\"")), "no chart {id}");
        }
        assert!(html.contains("data-label=\"core\" data-demand-min=\"2\" data-demand-max=\"4\" data-capacity-min=\"8\""));
        // Site a may need more than it has: drawn red.
        assert!(html.contains(
            "data-label=\"a\" data-demand-min=\"2\" data-demand-max=\"4\" data-capacity-min=\"3\""
        ));
        assert!(html.contains("fill=\"#b00\""));
        assert!(html.contains("data-n=\"4\" data-f=\"1\" data-quorum=\"3\" data-margin=\"-1\""));
        assert_eq!(html.matches("class=\"validator\"").count(), 4);
        assert!(html.contains("<g class=\"project critical\" data-project=\"p2\""));
        assert!(html.contains("<g class=\"project\" data-project=\"side\""));
        assert!(html.contains("id=\"critical-path\">p1 → p2</strong>, 2 to 3 weeks"));
        assert!(html.contains("<li>web, api</li>"));
        assert!(html.contains("2–4 cores"));
        assert!(html.contains("1–2 GiB"));
    }

    #[test]
    fn a_plan_without_sets_or_timeline_says_so() {
        let mut p = plan();
        p["validator_sets"] = json!([]);
        p["timeline"] = Value::Null;
        let html = plan_body(&p);
        assert!(html.contains("id=\"no-validator-sets\""));
        assert!(html.contains("id=\"no-timeline\""));
        // Also a document missing everything renders, without a panic.
        let empty = plan_body(&json!({}));
        assert!(empty.contains("Demand against capacity per tier"));
    }
}
