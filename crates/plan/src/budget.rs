//! `budget-mismatch`: stated totals against computed demand.
//!
//! A project's budget is compared with the demand counted under it (its own plus what is
//! hosted on it) when it is the end of its `hosted_on` chain, and with its own demand when it
//! is hosted elsewhere: a hosted project's document states its own size. The fleet budget is
//! compared with the fleet's total declared demand.

use crate::amount::Resource;
use crate::finding::{Finding, Severity, code};
use crate::output::ProjectPlan;
use phoenix_spec::quantity::Range;
use phoenix_spec::{Budget, Fleet, Resources};
use std::collections::BTreeMap;

/// Relative difference tolerated on each bound, for documents that round their totals.
const TOLERANCE: f64 = 0.01;

/// Every mismatch between a stated budget and the computed demand.
pub(crate) fn mismatches(
    fleet: &Fleet,
    projects: &BTreeMap<String, ProjectPlan>,
    fleet_demand: &Resources,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in &fleet.projects {
        let (Some(budget), Some(plan)) = (&p.budget, projects.get(&p.name)) else {
            continue;
        };
        let hosted_elsewhere = plan.counted_under != p.name;
        let (computed, what) = if hosted_elsewhere {
            (
                plan.own_demand.0,
                format!("its own demand (counted under `{}`)", plan.counted_under),
            )
        } else if plan.hosts.is_empty() {
            (plan.demand.0, "computed".to_string())
        } else {
            (
                plan.demand.0,
                format!("computed, including {}", plan.hosts.join(", ")),
            )
        };
        for (r, stated, got) in differing(budget, &computed) {
            let msg = format!(
                "project `{}`: budget states {} {}, {what} {}",
                p.name,
                r.name(),
                r.fmt(stated),
                describe(r, stated, got)
            );
            out.push(Finding::new(Severity::Warning, code::BUDGET_MISMATCH, msg).project(&p.name));
        }
    }
    if let Some(budget) = &fleet.budget {
        for (r, stated, got) in differing(budget, fleet_demand) {
            let msg = format!(
                "fleet: budget states {} {}, computed {}",
                r.name(),
                r.fmt(stated),
                describe(r, stated, got)
            );
            out.push(Finding::new(Severity::Warning, code::BUDGET_MISMATCH, msg));
        }
    }
    out
}

/// The resources whose stated range differs from the computed one beyond the tolerance.
fn differing(budget: &Budget, computed: &Resources) -> Vec<(Resource, Range, Range)> {
    Resource::ALL
        .iter()
        .filter_map(|&r| {
            let stated = r.of_budget(budget)?;
            let got = r.of(computed);
            (!close(stated.min, got.min) || !close(stated.max, got.max)).then_some((r, stated, got))
        })
        .collect()
}

/// True when `a` and `b` differ by at most the tolerance, relative to the larger.
pub(crate) fn close(a: u64, b: u64) -> bool {
    let diff = a.abs_diff(b) as f64;
    diff <= TOLERANCE * a.max(b) as f64
}

/// `12-24 cores (difference +4 / -2 cores)`: computed minus stated, per bound.
fn describe(r: Resource, stated: Range, got: Range) -> String {
    let signed = |got: u64, stated: u64| {
        let sign = if got >= stated { "+" } else { "-" };
        format!("{sign}{}", r.fmt_one(got.abs_diff(stated)))
    };
    format!(
        "{} (difference {} / {})",
        r.fmt(got),
        signed(got.min, stated.min),
        signed(got.max, stated.max)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerates_one_percent_of_rounding() {
        assert!(close(100, 101));
        assert!(close(0, 0));
        assert!(!close(100, 102));
        assert!(!close(0, 1));
    }

    #[test]
    fn describes_both_numbers_and_signed_differences() {
        let d = describe(
            Resource::Cpu,
            Range::new(32_000, 68_000),
            Range::new(36_000, 66_000),
        );
        assert_eq!(d, "36-66 cores (difference +4 cores / -2 cores)");
    }
}
