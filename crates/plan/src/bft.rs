//! BFT safety of validator sets: n validators tolerate f = floor((n-1)/3) faults, so losing
//! any one failure domain must not lose more than f of them.
//!
//! A set is the validators of one service, or of every service that names the same
//! `validator_set`. Such a set usually grows by phase (three validators first, more later), so
//! it is judged as it stands at every phase in which it grows: the validators of its services
//! of that phase or earlier. A finding names the phase when the set spans more than one.

use crate::finding::{Finding, Severity, code};
use crate::output::{ValidatorPhase, ValidatorSet};
use crate::placement::Host;
use phoenix_spec::text::{agree, count};
use phoenix_spec::{Fleet, Service, Spread};
use std::collections::{BTreeMap, BTreeSet};

/// Faults tolerated by `n` validators.
pub fn faults_tolerated(n: u64) -> u64 {
    n.saturating_sub(1) / 3
}

/// The analysis and findings of every validator set. `per_service[i]` holds the hosts of
/// the placed instances of service `i`.
pub(crate) fn validator_sets(
    fleet: &Fleet,
    hosts: &[Host],
    per_service: &[Vec<u32>],
) -> (Vec<ValidatorSet>, Vec<Finding>) {
    let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, svc) in fleet.services.iter().enumerate() {
        if let Some(set) = svc.bft_set() {
            members.entry(set).or_default().push(i);
        }
    }
    let mut sets = Vec::new();
    let mut findings = Vec::new();
    for (name, services) in members {
        let (set, f) = judge(fleet, name, &services, hosts, per_service);
        sets.push(set);
        findings.extend(f);
    }
    (sets, findings)
}

/// The set `name` of these services (fleet indices, in fleet order), phase by phase.
fn judge(
    fleet: &Fleet,
    name: &str,
    services: &[usize],
    hosts: &[Host],
    per_service: &[Vec<u32>],
) -> (ValidatorSet, Vec<Finding>) {
    let svc = |i: usize| &fleet.services[i];
    let phase_list: BTreeSet<u32> = services.iter().map(|&i| svc(i).phase).collect();
    let several = phase_list.len() > 1;
    let mut phases = Vec::new();
    let mut findings = Vec::new();
    for &phase in &phase_list {
        let present: Vec<usize> = services
            .iter()
            .copied()
            .filter(|&i| svc(i).phase <= phase)
            .collect();
        let joining: Vec<usize> = present
            .iter()
            .copied()
            .filter(|&i| svc(i).phase == phase)
            .collect();
        let by_host = present
            .iter()
            .any(|&i| svc(i).placement.spread == Spread::Host);
        let placed = present.iter().flat_map(|&i| per_service[i].iter().copied());
        let state = analyse(fleet, hosts, placed, phase, &joining, by_host);
        let planned: u64 = present.iter().map(|&i| svc(i).replicas.min).sum();
        // The subject of a finding is the first service joining in this phase: the one whose
        // arrival leaves the set as it is.
        let subject = svc(joining[0]);
        let head = if several {
            format!("validator set `{name}` in phase {phase}")
        } else {
            format!("validator set `{name}`")
        };
        findings.extend(check(subject, &head, &state, planned, by_host));
        phases.push(state);
    }
    let last = phases
        .last()
        .cloned()
        .expect("a set has at least one service");
    let spread = services
        .iter()
        .map(|&i| svc(i).placement.spread)
        .max_by_key(|s| match s {
            Spread::Host => 2,
            Spread::Site => 1,
            Spread::None => 0,
        })
        .unwrap_or_default();
    let set = ValidatorSet {
        name: name.to_string(),
        services: services.iter().map(|&i| svc(i).name.clone()).collect(),
        n: last.n,
        f: last.f,
        quorum: last.quorum,
        by_site: last.by_site,
        worst_site: last.worst_site,
        worst_host: last.worst_host,
        spread,
        safe: phases.iter().all(|p| p.safe),
        phases,
    };
    (set, findings)
}

fn analyse(
    fleet: &Fleet,
    hosts: &[Host],
    placed: impl Iterator<Item = u32>,
    phase: u32,
    joining: &[usize],
    by_host: bool,
) -> ValidatorPhase {
    let mut by_site: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_host: BTreeMap<String, u64> = BTreeMap::new();
    let mut n = 0u64;
    for h in placed {
        let host = &hosts[h as usize];
        let site = &fleet.sites[host.site as usize].name;
        *by_site.entry(site.clone()).or_default() += 1;
        *per_host
            .entry(format!("{site}/{}", host.index))
            .or_default() += 1;
        n += 1;
    }
    let f = faults_tolerated(n);
    let worst_site = worst(&by_site);
    let worst_host = worst(&per_host);
    let site_ok = worst_site.as_ref().is_none_or(|(_, c)| *c <= f);
    let host_ok = !by_host || worst_host.as_ref().is_none_or(|(_, c)| *c <= f);
    ValidatorPhase {
        phase,
        joining: joining
            .iter()
            .map(|&i| fleet.services[i].name.clone())
            .collect(),
        n,
        f,
        // Votes needed to finalize: n - f. It equals 2f+1 only when n = 3f+1; with n = 5 (f = 1)
        // three votes could finalize two conflicting blocks, so the quorum is four.
        quorum: n - f,
        by_site,
        worst_site,
        worst_host,
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

/// The findings of one set at one phase. `planned` is the validators its services plan
/// (replicas at their minimum), to say when some could not be placed.
fn check(
    svc: &Service,
    head: &str,
    set: &ValidatorPhase,
    planned: u64,
    by_host: bool,
) -> Vec<Finding> {
    let head = format!("{head} (n={}, f={}, quorum {})", set.n, set.f, set.quorum);
    let mut out = Vec::new();
    let finding = |msg: String| {
        let f = Finding::new(Severity::Error, code::BFT_UNSAFE, msg).service(&svc.name);
        match &svc.project {
            Some(p) => f.project(p),
            None => f,
        }
    };
    if set.n < 4 {
        let planned = if set.n < planned {
            format!(" ({planned} planned, the rest unplaceable)")
        } else {
            String::new()
        };
        out.push(finding(format!(
            "{head}: {}{planned} {} no faulty validator; BFT needs at least 4 (3f+1) to tolerate one",
            count(set.n, "validator"),
            agree(set.n, "tolerates", "tolerate")
        )));
        // Below 4 validators f is 0 and any loss is too many: this finding says it all.
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
    if by_host
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
