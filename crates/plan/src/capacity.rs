//! Capacity against demand: per host, per site, per tier and for the whole fleet, with the CPU
//! overcommit policy.
//!
//! The comparison is conservative, like placement: the upper bound of demand against the lower
//! bound of capacity. Memory and storage above capacity are errors; CPU above capacity is a
//! warning while it stays within the overcommit ratio, an error beyond it.

use crate::amount::{Amount, Resource};
use crate::finding::{Finding, Severity, code};
use crate::output::{HostLoad, SitePlan, TierPlan, Utilisation};
use crate::placement::{Host, cpu_limit};
use phoenix_spec::quantity::Range;
use phoenix_spec::{Fleet, Resources, Site};
use std::collections::BTreeMap;

/// Capacity of a whole site: per-host capacity times hosts.
pub(crate) fn site_capacity(site: &Site) -> Resources {
    site.capacity.times(Range::exact(u64::from(site.hosts)))
}

/// One resource of `demand` against `capacity`: `None` when it fits, otherwise the severity,
/// code and a sentence saying by how much.
pub(crate) fn compare(
    r: Resource,
    demand: Range,
    capacity: Range,
    ratio: f64,
) -> Option<(Severity, &'static str, String)> {
    if demand.max <= capacity.min {
        return None;
    }
    let fmt = |v: u64| r.fmt_one(v);
    if r == Resource::Cpu {
        let limit = cpu_limit(capacity.min, ratio);
        let pct = percent(demand.max, capacity.min).map_or(String::new(), |p| format!(" ({p}%)"));
        if demand.max <= limit {
            let msg = format!(
                "CPU demand up to {} exceeds the {} of capacity{pct}, within the overcommit ratio {ratio} ({})",
                fmt(demand.max),
                fmt(capacity.min),
                fmt(limit)
            );
            return Some((Severity::Warning, code::CPU_OVERCOMMIT, msg));
        }
        let allowed = if ratio > 1.0 {
            format!(" times the overcommit ratio {ratio} ({})", fmt(limit))
        } else {
            String::new()
        };
        let msg = format!(
            "CPU demand up to {} exceeds the {} of capacity{allowed} by up to {}{}",
            fmt(demand.max),
            fmt(capacity.min),
            fmt(demand.max - limit),
            at_least(r, demand.min, cpu_limit(capacity.max, ratio))
        );
        return Some((Severity::Error, code::OVER_CAPACITY, msg));
    }
    let msg = format!(
        "{} demand up to {} exceeds the {} of capacity by up to {}{}; {} is never overcommitted",
        capitalised(r.name()),
        fmt(demand.max),
        fmt(capacity.min),
        fmt(demand.max - capacity.min),
        at_least(r, demand.min, capacity.max),
        r.name()
    );
    Some((Severity::Error, code::OVER_CAPACITY, msg))
}

/// ", and by at least X even at the low end ..." when the minimum demand exceeds the maximum
/// capacity: then it is over whatever the ranges turn out to be.
fn at_least(r: Resource, demand_min: u64, limit_max: u64) -> String {
    if demand_min > limit_max {
        format!(
            ", and by at least {} even at the low end of demand and the high end of capacity",
            r.fmt_one(demand_min - limit_max)
        )
    } else {
        String::new()
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `part / whole` in percent to one decimal, or `None` when `whole` is zero.
pub(crate) fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64 * 1000.0).round() / 10.0)
}

fn utilisation(demand: &Resources, capacity: &Resources) -> Utilisation {
    let u = |r: Resource| percent(r.of(demand).max, r.of(capacity).min);
    Utilisation {
        cpu: u(Resource::Cpu),
        memory: u(Resource::Memory),
        storage: u(Resource::Storage),
    }
}

/// Site plans from the placement outcome.
pub(crate) fn sites(fleet: &Fleet, hosts: &[Host]) -> BTreeMap<String, SitePlan> {
    let mut loads: Vec<Vec<HostLoad>> = vec![Vec::new(); fleet.sites.len()];
    for h in hosts {
        loads[h.site as usize].push(HostLoad {
            host: h.index,
            demand: Amount(h.load),
            instances: h.instances,
        });
    }
    fleet
        .sites
        .iter()
        .zip(loads)
        .enumerate()
        .map(|(index, (site, host_loads))| {
            let demand: Resources = host_loads.iter().map(|l| l.demand.0).sum();
            let capacity = site_capacity(site);
            let plan = SitePlan {
                index,
                group: site.group.clone(),
                tier: site.tier,
                region: site.region.clone(),
                provider: site.provider,
                phase: site.phase,
                hosts: site.hosts,
                capacity_per_host: Amount(site.capacity),
                capacity: Amount(capacity),
                demand: Amount(demand),
                instances: host_loads.iter().map(|l| l.instances).sum(),
                utilisation: utilisation(&demand, &capacity),
                host_loads,
            };
            (site.name.clone(), plan)
        })
        .collect()
}

/// Per-tier rollup of site plans, tiers in order core, regional, edge.
pub(crate) fn tiers(sites: &BTreeMap<String, SitePlan>) -> Vec<TierPlan> {
    let mut by: BTreeMap<phoenix_spec::Tier, TierPlan> = BTreeMap::new();
    for s in sites.values() {
        let t = by.entry(s.tier).or_insert(TierPlan {
            tier: s.tier,
            sites: 0,
            hosts: 0,
            capacity: Amount::ZERO,
            demand: Amount::ZERO,
            instances: 0,
        });
        t.sites += 1;
        t.hosts += u64::from(s.hosts);
        t.capacity += s.capacity;
        t.demand += s.demand;
        t.instances += s.instances;
    }
    by.into_values().collect()
}

/// Findings for every site: the site's total against its capacity, and each host against its
/// own, one finding per site and resource.
pub(crate) fn site_findings(sites: &BTreeMap<String, SitePlan>, ratio: f64) -> Vec<Finding> {
    let mut out = Vec::new();
    for (name, site) in sites {
        for r in Resource::ALL {
            let whole = compare(r, r.of(&site.demand.0), r.of(&site.capacity.0), ratio);
            let per_host: Vec<(u32, Severity, &'static str, String)> = site
                .host_loads
                .iter()
                .filter_map(|h| {
                    compare(r, r.of(&h.demand.0), r.of(&site.capacity_per_host.0), ratio).map(
                        |(sev, c, _)| {
                            (
                                h.host,
                                sev,
                                c,
                                format!(
                                    "host {} carries up to {}",
                                    h.host,
                                    r.fmt_one(r.of(&h.demand.0).max)
                                ),
                            )
                        },
                    )
                })
                .collect();
            if whole.is_none() && per_host.is_empty() {
                continue;
            }
            let (sev, c) = whole
                .as_ref()
                .map(|(s, c, _)| (*s, *c))
                .into_iter()
                .chain(per_host.iter().map(|(_, s, c, _)| (*s, *c)))
                .min()
                .unwrap_or((Severity::Warning, code::CPU_OVERCOMMIT));
            let lead = match &whole {
                Some((_, _, m)) => format!("site `{name}`: {m}"),
                None => format!(
                    "site `{name}`: some hosts exceed their own {} capacity of {}",
                    r.name(),
                    r.fmt_one(r.of(&site.capacity_per_host.0).min)
                ),
            };
            let hosts: Vec<&str> = per_host.iter().map(|(_, _, _, m)| m.as_str()).collect();
            let msg = if hosts.is_empty() || site.hosts == 1 {
                lead
            } else {
                format!(
                    "{lead}; per host ({} each): {}",
                    r.fmt_one(r.of(&site.capacity_per_host.0).min),
                    crate::placement::name_list(hosts.into_iter())
                )
            };
            let mut f = Finding::new(sev, c, msg).site(name);
            if let [(h, ..)] = per_host.as_slice() {
                f = f.host(*h);
            }
            out.push(f);
        }
    }
    out
}

/// Findings for the whole fleet's declared demand against all capacity.
pub(crate) fn fleet_findings(demand: &Resources, capacity: &Resources, ratio: f64) -> Vec<Finding> {
    Resource::ALL
        .iter()
        .filter_map(|&r| compare(r, r.of(demand), r.of(capacity), ratio))
        .map(|(sev, c, m)| {
            Finding::new(
                sev,
                c,
                format!("fleet (declared demand, replicas at their ranges): {m}"),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    #[test]
    fn fits_when_upper_demand_within_lower_capacity() {
        assert!(
            compare(
                Resource::Memory,
                Range::new(GI, 4 * GI),
                Range::new(4 * GI, 8 * GI),
                1.0
            )
            .is_none()
        );
    }

    #[test]
    fn memory_above_capacity_is_an_error_with_the_amount() {
        let (sev, c, m) = compare(
            Resource::Memory,
            Range::new(2 * GI, 6 * GI),
            Range::new(4 * GI, 8 * GI),
            4.0,
        )
        .unwrap();
        assert_eq!((sev, c), (Severity::Error, code::OVER_CAPACITY));
        assert!(m.contains("by up to 2Gi"), "{m}");
        assert!(!m.contains("at least"), "{m}");
    }

    #[test]
    fn memory_over_even_at_the_low_end_says_so() {
        let (_, _, m) = compare(
            Resource::Memory,
            Range::new(10 * GI, 12 * GI),
            Range::new(4 * GI, 8 * GI),
            1.0,
        )
        .unwrap();
        assert!(m.contains("by at least 2Gi"), "{m}");
    }

    #[test]
    fn cpu_within_ratio_is_a_warning_beyond_is_an_error() {
        let (sev, c, m) = compare(
            Resource::Cpu,
            Range::exact(12_000),
            Range::exact(8_000),
            2.0,
        )
        .unwrap();
        assert_eq!((sev, c), (Severity::Warning, code::CPU_OVERCOMMIT));
        assert!(m.contains("150%"), "{m}");
        let (sev, c, m) = compare(
            Resource::Cpu,
            Range::exact(20_000),
            Range::exact(8_000),
            2.0,
        )
        .unwrap();
        assert_eq!((sev, c), (Severity::Error, code::OVER_CAPACITY));
        assert!(m.contains("by up to 4 cores"), "{m}");
        let (sev, _, _) =
            compare(Resource::Cpu, Range::exact(9_000), Range::exact(8_000), 1.0).unwrap();
        assert_eq!(sev, Severity::Error);
    }

    #[test]
    fn percent_rounds_to_one_decimal_and_guards_zero() {
        assert_eq!(percent(1, 3), Some(33.3));
        assert_eq!(percent(5, 0), None);
    }
}
