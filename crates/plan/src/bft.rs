//! BFT safety of validator sets: n validators tolerate f = floor((n-1)/3) faults, so losing
//! any one failure domain must not lose more than f of them.

use crate::finding::{Finding, Severity, code};
use crate::output::ValidatorSet;
use crate::placement::Host;
use phoenix_spec::text::{agree, count};
use phoenix_spec::{Fleet, Role, Service, Spread};
use std::collections::BTreeMap;

/// Faults tolerated by `n` validators.
pub fn faults_tolerated(n: u64) -> u64 {
    n.saturating_sub(1) / 3
}

/// The analysis and findings of every validator service. `per_service[i]` holds the hosts of
/// the placed instances of service `i`.
pub(crate) fn validator_sets(
    fleet: &Fleet,
    hosts: &[Host],
    per_service: &[Vec<u32>],
) -> (Vec<ValidatorSet>, Vec<Finding>) {
    let mut sets = Vec::new();
    let mut findings = Vec::new();
    for (svc, placed) in fleet.services.iter().zip(per_service) {
        if svc.role != Role::Validator {
            continue;
        }
        let set = analyse(fleet, svc, hosts, placed);
        findings.extend(check(svc, &set));
        sets.push(set);
    }
    sets.sort_by(|a, b| a.service.cmp(&b.service));
    (sets, findings)
}

fn analyse(fleet: &Fleet, svc: &Service, hosts: &[Host], placed: &[u32]) -> ValidatorSet {
    let mut by_site: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_host: BTreeMap<String, u64> = BTreeMap::new();
    for &h in placed {
        let host = &hosts[h as usize];
        let site = &fleet.sites[host.site as usize].name;
        *by_site.entry(site.clone()).or_default() += 1;
        *by_host.entry(format!("{site}/{}", host.index)).or_default() += 1;
    }
    let n = placed.len() as u64;
    let f = faults_tolerated(n);
    let worst_site = worst(&by_site);
    let worst_host = worst(&by_host);
    let site_ok = worst_site.as_ref().is_none_or(|(_, c)| *c <= f);
    let host_ok =
        svc.placement.spread != Spread::Host || worst_host.as_ref().is_none_or(|(_, c)| *c <= f);
    ValidatorSet {
        service: svc.name.clone(),
        n,
        f,
        // Votes needed to finalize: n - f. It equals 2f+1 only when n = 3f+1; with n = 5 (f = 1)
        // three votes could finalize two conflicting blocks, so the quorum is four.
        quorum: n - f,
        by_site,
        worst_site,
        worst_host,
        spread: svc.placement.spread,
        safe: n >= 4 && site_ok && host_ok,
    }
}

/// The domain with the most validators; ties go to the first name.
fn worst(counts: &BTreeMap<String, u64>) -> Option<(String, u64)> {
    let max = *counts.values().max()?;
    counts
        .iter()
        .find(|(_, c)| **c == max)
        .map(|(n, c)| (n.clone(), *c))
}

fn check(svc: &Service, set: &ValidatorSet) -> Vec<Finding> {
    let head = format!(
        "validator set `{}` (n={}, f={}, quorum {})",
        svc.name, set.n, set.f, set.quorum
    );
    let mut out = Vec::new();
    let finding = |msg: String| {
        let f = Finding::new(Severity::Error, code::BFT_UNSAFE, msg).service(&svc.name);
        match &svc.project {
            Some(p) => f.project(p),
            None => f,
        }
    };
    if set.n < 4 {
        let planned = if set.n < svc.replicas.min {
            format!(" ({} planned, the rest unplaceable)", svc.replicas.min)
        } else {
            String::new()
        };
        out.push(finding(format!(
            "{head}: {}{planned} {} no faulty validator; BFT needs at least 4 (3f+1) to tolerate one",
            count(set.n, "validator"),
            agree(set.n, "tolerates", "tolerate")
        )));
    }
    // Below 4 validators f is 0 and any loss is too many: the finding above says it all.
    if set.n < 4 {
        return out;
    }
    if let Some((site, lost)) = &set.worst_site
        && *lost > set.f
    {
        let over: Vec<String> = set
            .by_site
            .iter()
            .filter(|(_, c)| **c > set.f)
            .map(|(s, c)| format!("{s} ({c})"))
            .collect();
        let msg = format!(
            "{head}: losing site {site} loses {}, more than f={}; sites holding more than f: {}",
            count(*lost, "validator"),
            set.f,
            crate::placement::name_list(over.iter().map(String::as_str))
        );
        out.push(finding(msg).site(site));
    }
    if svc.placement.spread == Spread::Host
        && let Some((host, lost)) = &set.worst_host
        && *lost > set.f
    {
        let site = host.rsplit_once('/').map_or(host.as_str(), |(s, _)| s);
        let msg = format!(
            "{head}: losing host {host} loses {}, more than f={}",
            count(*lost, "validator"),
            set.f
        );
        out.push(finding(msg).site(site));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f_is_floor_of_n_minus_one_over_three() {
        let got: Vec<u64> = (0..=10).map(faults_tolerated).collect();
        assert_eq!(got, [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3]);
    }
}
