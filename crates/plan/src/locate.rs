//! Points findings back at the spec: `FILE:LINE:COL` of what each finding is about.

use crate::finding::{Finding, code};
use phoenix_spec::{Fleet, Location};
use std::collections::BTreeMap;

/// Fills [`Finding::at`] from the finding's subject: a budget mismatch points at the budget,
/// anything about a service at the service, then project, then site. Fleets built in code
/// (no file names) get no locations.
pub(crate) fn locate(fleet: &Fleet, findings: &mut [Finding]) {
    if fleet.files.is_empty() {
        return;
    }
    let at = |l: &Location| {
        let file = fleet.files.get(l.file)?;
        (l.line > 0).then(|| format!("{file}:{}:{}", l.line, l.col))
    };
    // Maps built once: a big fleet has many findings and many services.
    let services: BTreeMap<&str, &Location> = fleet
        .services
        .iter()
        .map(|s| (s.name.as_str(), &s.location))
        .collect();
    let projects: BTreeMap<&str, &phoenix_spec::Project> = fleet
        .projects
        .iter()
        .map(|p| (p.name.as_str(), p))
        .collect();
    let sites: BTreeMap<&str, &Location> = fleet
        .sites
        .iter()
        .map(|s| (s.name.as_str(), &s.location))
        .collect();
    for f in findings.iter_mut() {
        let project = f.project.as_deref().and_then(|p| projects.get(p));
        let loc = if f.code == code::BUDGET_MISMATCH {
            match project {
                Some(p) => p.budget.as_ref().map(|b| &b.location),
                None => fleet.budget.as_ref().map(|b| &b.location),
            }
        } else {
            f.service
                .as_deref()
                .and_then(|s| services.get(s).copied())
                .or_else(|| project.map(|p| &p.location))
                .or_else(|| f.site.as_deref().and_then(|s| sites.get(s).copied()))
        };
        f.at = loc.and_then(at);
    }
}
