//! Placement of every instance on a host.
//!
//! Each service gets `replicas.min` instances (what apply deploys). Fitting is conservative:
//! the upper bound of an instance's demand must fit the lower bound of a host's capacity, CPU
//! scaled by the overcommit ratio, so no host can exceed its hard limits whatever the ranges
//! turn out to be.
//!
//! Services are placed one at a time, spread services first, then by decreasing dominant size
//! (best-fit decreasing). Because the instances of one service are identical, a host chosen by
//! best fit stays the best fit until it is full, so a service fills a host in one step instead
//! of one search per instance. Candidate hosts live in ordered sets keyed by free memory, one
//! set per distinct set of eligible sites, so a search costs a logarithm, not a scan of every
//! host.

use crate::amount::Resource;
use crate::finding::{Finding, Severity, code};
use phoenix_spec::quantity::Range;
use phoenix_spec::text::{agree, count, noun};
use phoenix_spec::{Fleet, Resources, Service, Site, Spread, Tier};
use std::collections::{BTreeMap, BTreeSet};

/// Index of each resource in the `[u64; 3]` vectors below.
const CPU: usize = 0;
const MEM: usize = 1;
const STO: usize = 2;

/// CPU (scaled by the overcommit ratio), memory and storage.
type Vector = [u64; 3];

/// What decides a service's eligible sites: tier, site list and phase.
type Constraint<'f> = (Option<Tier>, &'f [String], u32);

/// Ordering key of a host in a candidate set: best fit by free memory, then free CPU.
type Key = (u64, u64, u64, u32);

/// One host and what has been placed on it.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    /// Index of its site in `fleet.sites`.
    pub(crate) site: u32,
    /// Index of the host within its site.
    pub(crate) index: u32,
    /// Sum of the per-instance demand ranges placed here.
    pub(crate) load: Resources,
    /// Instances placed here.
    pub(crate) instances: u64,
    /// Room left, in the conservative accounting (see the module doc).
    free: Vector,
}

/// The result of placement.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Every host of every site, sites in fleet order, hosts in index order.
    pub(crate) hosts: Vec<Host>,
    /// For each service (fleet order): the host of each placed instance, in instance order.
    /// Instances beyond the vector's length are unplaced.
    pub(crate) per_service: Vec<Vec<u32>>,
    /// `unplaceable` and `spread-uneven` findings.
    pub(crate) findings: Vec<Finding>,
}

/// Places `replicas.min` instances of every service of the fleet.
///
/// # Guarantees
/// Deterministic; on every host, the sum of the placed instances' upper bounds is within the
/// host's lower-bound capacity (CPU: times the overcommit ratio).
pub(crate) fn place(fleet: &Fleet) -> Outcome {
    let mut p = Packer::new(fleet);
    let mut per_service = vec![Vec::new(); fleet.services.len()];
    let mut findings = Vec::new();
    for i in p.service_order() {
        let svc = &fleet.services[i];
        let (hosts, mut f) = p.place_service(svc);
        per_service[i] = hosts;
        findings.append(&mut f);
    }
    Outcome {
        hosts: p.hosts,
        per_service,
        findings,
    }
}

/// The CPU a host may carry: its lower-bound capacity times the overcommit ratio.
pub(crate) fn cpu_limit(capacity_min: u64, ratio: f64) -> u64 {
    // Floor so that a fractional millicore never lets an instance in that does not fit.
    (capacity_min as f64 * ratio).floor() as u64
}

/// The overcommit ratio of a fleet, never below 1 (the validator should ensure that already).
pub(crate) fn ratio(fleet: &Fleet) -> f64 {
    let r = fleet.policy.cpu_overcommit;
    if r.is_finite() && r > 1.0 { r } else { 1.0 }
}

fn need(s: &Service) -> Vector {
    [
        s.resources.cpu.max,
        s.resources.memory.max,
        s.resources.storage.max,
    ]
}

fn fits(free: &Vector, need: &Vector) -> bool {
    (0..3).all(|d| free[d] >= need[d])
}

/// How many instances of size `need` fit in `free`; unbounded when `need` is zero.
fn fit_count(free: &Vector, need: &Vector) -> u64 {
    (0..3)
        .filter(|&d| need[d] > 0)
        .map(|d| free[d] / need[d])
        .min()
        .unwrap_or(u64::MAX)
}

fn key(h: &Host, id: u32) -> Key {
    (h.free[MEM], h.free[CPU], h.free[STO], id)
}

/// What a round robin did: the placed hosts, the domains it visited (in order), the count on
/// each and the ones found full.
struct RoundRobin<D> {
    placed: Vec<u32>,
    domains: Vec<D>,
    counts: Vec<usize>,
    full: Vec<usize>,
}

impl<D: Copy> RoundRobin<D> {
    /// Offers one instance to visited domain `i`; on success it stays live for the next round.
    fn offer<P>(
        &mut self,
        p: &mut P,
        i: usize,
        take: &mut impl FnMut(&mut P, D) -> Option<u32>,
        live: &mut Vec<usize>,
    ) {
        match take(p, self.domains[i]) {
            Some(h) => {
                self.placed.push(h);
                self.counts[i] += 1;
                live.push(i);
            }
            // Instances of one service are identical and room only shrinks, so a domain
            // that cannot take one now never will during this service.
            None => self.full.push(i),
        }
    }
}

/// Candidate sets: for each distinct list of eligible sites, the live hosts of those sites.
#[derive(Default)]
struct Classes {
    index: BTreeMap<Vec<u32>, usize>,
    sets: Vec<BTreeSet<Key>>,
    /// For each site, the classes that contain its hosts.
    of_site: Vec<Vec<usize>>,
    /// For each site, the class of that site alone, once created.
    single: Vec<Option<usize>>,
}

struct Packer<'f> {
    fleet: &'f Fleet,
    ratio: f64,
    hosts: Vec<Host>,
    /// Host ids of each site.
    site_hosts: Vec<std::ops::Range<u32>>,
    /// The smallest demand of any instance, per resource: a host with less room than this in
    /// any resource can take nothing more and leaves every candidate set.
    min_need: Vector,
    classes: Classes,
    /// Eligible sites by placement constraint, computed once per distinct constraint.
    eligible: BTreeMap<Constraint<'f>, Result<Vec<u32>, String>>,
}

impl<'f> Packer<'f> {
    fn new(fleet: &'f Fleet) -> Self {
        let ratio = ratio(fleet);
        let mut hosts = Vec::new();
        let mut site_hosts = Vec::with_capacity(fleet.sites.len());
        for (si, site) in fleet.sites.iter().enumerate() {
            let first = hosts.len() as u32;
            let free = limit(site, ratio);
            for index in 0..site.hosts {
                hosts.push(Host {
                    site: si as u32,
                    index,
                    load: Resources::ZERO,
                    instances: 0,
                    free,
                });
            }
            site_hosts.push(first..hosts.len() as u32);
        }
        let mut min_need = [u64::MAX; 3];
        for s in fleet.services.iter().filter(|s| s.replicas.min > 0) {
            for (m, n) in min_need.iter_mut().zip(need(s)) {
                *m = (*m).min(n);
            }
        }
        let classes = Classes {
            of_site: vec![Vec::new(); fleet.sites.len()],
            single: vec![None; fleet.sites.len()],
            ..Classes::default()
        };
        Packer {
            eligible: BTreeMap::new(),
            fleet,
            ratio,
            hosts,
            site_hosts,
            min_need,
            classes,
        }
    }

    /// Spread services first (spreading is the harder constraint to meet late), then by
    /// decreasing dominant share of the largest host, then in fleet order.
    fn service_order(&self) -> Vec<usize> {
        let mut largest = [0u64; 3];
        for h in &self.hosts {
            for (l, f) in largest.iter_mut().zip(h.free) {
                *l = (*l).max(f);
            }
        }
        let share = |s: &Service| {
            let n = need(s);
            (0..3)
                .filter(|&d| largest[d] > 0)
                .map(|d| n[d] as f64 / largest[d] as f64)
                .fold(0.0f64, f64::max)
        };
        let keys: Vec<(bool, f64)> = self
            .fleet
            .services
            .iter()
            .map(|s| (s.placement.spread == Spread::None, share(s)))
            .collect();
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by(|&a, &b| {
            keys[a]
                .0
                .cmp(&keys[b].0)
                .then(keys[b].1.total_cmp(&keys[a].1))
                .then(a.cmp(&b))
        });
        order
    }

    fn alive(&self, free: &Vector) -> bool {
        fits(free, &self.min_need)
    }

    /// The candidate set of one site (cached: spread services ask for it per site).
    fn site_class(&mut self, site: u32) -> usize {
        if let Some(c) = self.classes.single[site as usize] {
            return c;
        }
        let c = self.class(&[site]);
        self.classes.single[site as usize] = Some(c);
        c
    }

    /// The candidate set of these sites, created on first use from the hosts' current room.
    fn class(&mut self, sites: &[u32]) -> usize {
        if let Some(&c) = self.classes.index.get(sites) {
            return c;
        }
        let c = self.classes.sets.len();
        let mut set = BTreeSet::new();
        for &s in sites {
            for h in self.site_hosts[s as usize].clone() {
                let host = &self.hosts[h as usize];
                if self.alive(&host.free) {
                    set.insert(key(host, h));
                }
            }
            self.classes.of_site[s as usize].push(c);
        }
        self.classes.sets.push(set);
        self.classes.index.insert(sites.to_vec(), c);
        c
    }

    fn best_fit(&self, class: usize, need: &Vector) -> Option<u32> {
        self.classes.sets[class]
            .range((need[MEM], 0, 0, 0)..)
            .find(|k| k.1 >= need[CPU] && k.2 >= need[STO])
            .map(|k| k.3)
    }

    /// Puts `k` instances on host `h` and keeps every candidate set in step.
    fn assign(&mut self, h: u32, k: u64, svc: &Service) {
        let need = need(svc);
        let host = &self.hosts[h as usize];
        let (old, was_alive) = (key(host, h), self.alive(&host.free));
        let host = &mut self.hosts[h as usize];
        for (f, n) in host.free.iter_mut().zip(need) {
            *f -= k * n;
        }
        host.load += svc.resources.times(Range::exact(k));
        host.instances += k;
        let new = key(host, h);
        let site = host.site as usize;
        let now_alive = self.alive(&self.hosts[h as usize].free);
        for &c in &self.classes.of_site[site] {
            if was_alive {
                self.classes.sets[c].remove(&old);
            }
            if now_alive {
                self.classes.sets[c].insert(new);
            }
        }
    }

    fn eligible(&mut self, svc: &'f Service) -> Result<Vec<u32>, String> {
        let key = (
            svc.placement.tier,
            svc.placement.sites.as_slice(),
            svc.phase,
        );
        let fleet = self.fleet;
        self.eligible
            .entry(key)
            .or_insert_with(|| eligible_sites(fleet, svc))
            .clone()
    }

    fn place_service(&mut self, svc: &'f Service) -> (Vec<u32>, Vec<Finding>) {
        let n = svc.replicas.min as usize;
        if n == 0 {
            return (Vec::new(), Vec::new());
        }
        let sites = match self.eligible(svc) {
            Ok(s) => s,
            Err(why) => {
                let none = match n {
                    1 => "its instance cannot be placed".to_string(),
                    _ => format!("none of its {n} instances can be placed"),
                };
                let msg = format!("service `{}`: {none}: {why}", svc.name);
                return (Vec::new(), vec![unplaceable(svc, msg)]);
            }
        };
        let mut findings = Vec::new();
        let placed = match svc.placement.spread {
            Spread::None => self.pack(svc, &sites, n),
            Spread::Site => self.spread_sites(svc, &sites, n, &mut findings),
            Spread::Host => self.spread_hosts(svc, &sites, n, &mut findings),
        };
        if placed.len() < n {
            findings.push(unplaceable(svc, self.explain(svc, &sites, n, placed.len())));
        }
        (placed, findings)
    }

    /// Best fit: fill the fullest host that still fits, then the next.
    fn pack(&mut self, svc: &Service, sites: &[u32], n: usize) -> Vec<u32> {
        let need = need(svc);
        let class = self.class(sites);
        let mut placed = Vec::with_capacity(n);
        while placed.len() < n {
            let Some(h) = self.best_fit(class, &need) else {
                break;
            };
            let room = fit_count(&self.hosts[h as usize].free, &need);
            let k = room.min((n - placed.len()) as u64);
            self.assign(h, k, svc);
            placed.extend(std::iter::repeat_n(h, k as usize));
        }
        placed
    }

    /// Round robin over the eligible sites, always to a site with the fewest instances of this
    /// service so far (ties: fleet order), best fit within the site.
    fn spread_sites(
        &mut self,
        svc: &Service,
        sites: &[u32],
        n: usize,
        findings: &mut Vec<Finding>,
    ) -> Vec<u32> {
        let need = need(svc);
        let rr = self.round_robin(n, sites.iter().copied(), |p, site| {
            let class = p.site_class(site);
            let h = p.best_fit(class, &need)?;
            p.assign(h, 1, svc);
            Some(h)
        });
        let name = |i: usize| self.fleet.sites[rr.domains[i] as usize].name.clone();
        if let Some(f) = uneven(svc, "site", name, &rr.counts, &rr.full) {
            findings.push(f);
        }
        if let Some(f) = unmet(svc, "site", &rr, sites.len(), name) {
            findings.push(f);
        }
        rr.placed
    }

    /// Round robin over the hosts of the eligible sites. Ties go to the lowest host index and
    /// then fleet order, so the first round takes host 0 of every site before any site gets a
    /// second instance: spreading by host also spreads by site.
    fn spread_hosts(
        &mut self,
        svc: &Service,
        sites: &[u32],
        n: usize,
        findings: &mut Vec<Finding>,
    ) -> Vec<u32> {
        let need = need(svc);
        let ranges: Vec<std::ops::Range<u32>> = sites
            .iter()
            .map(|&s| self.site_hosts[s as usize].clone())
            .collect();
        let deepest = ranges.iter().map(|r| r.len() as u32).max().unwrap_or(0);
        let in_tie_order = (0..deepest).flat_map(|rank| {
            ranges
                .iter()
                .filter(move |r| rank < r.len() as u32)
                .map(move |r| r.start + rank)
        });
        let rr = self.round_robin(n, in_tie_order, |p, h| {
            if !fits(&p.hosts[h as usize].free, &need) {
                return None;
            }
            p.assign(h, 1, svc);
            Some(h)
        });
        let name = |i: usize| self.host_name(rr.domains[i]);
        if let Some(f) = uneven(svc, "host", name, &rr.counts, &rr.full) {
            findings.push(f);
        }
        let eligible = ranges.iter().map(|r| r.len()).sum();
        if let Some(f) = unmet(svc, "host", &rr, eligible, name) {
            findings.push(f);
        }
        rr.placed
    }

    /// Gives one instance per round to every failure domain that still has room, visiting
    /// domains in the given tie-break order, until `n` are placed or no domain has room.
    /// Every domain in a round holds the same count, so this is exactly "fewest instances
    /// first, ties in order", without a heap; the first round is consumed lazily so a small
    /// service never enumerates every domain.
    fn round_robin<D: Copy>(
        &mut self,
        n: usize,
        in_tie_order: impl Iterator<Item = D>,
        mut take: impl FnMut(&mut Self, D) -> Option<u32>,
    ) -> RoundRobin<D> {
        let mut rr = RoundRobin {
            placed: Vec::with_capacity(n),
            domains: Vec::new(),
            counts: Vec::new(),
            full: Vec::new(),
        };
        let mut live = Vec::new();
        for d in in_tie_order {
            if rr.placed.len() == n {
                break;
            }
            let i = rr.domains.len();
            rr.domains.push(d);
            rr.counts.push(0);
            rr.offer(self, i, &mut take, &mut live);
        }
        while rr.placed.len() < n && !live.is_empty() {
            let round = std::mem::take(&mut live);
            for i in round {
                if rr.placed.len() == n {
                    break;
                }
                rr.offer(self, i, &mut take, &mut live);
            }
        }
        rr
    }

    fn host_name(&self, h: u32) -> String {
        let host = &self.hosts[h as usize];
        format!(
            "{}/{}",
            self.fleet.sites[host.site as usize].name, host.index
        )
    }

    /// Why `n - placed` instances of `svc` found no host on these (non-empty) eligible sites.
    fn explain(&self, svc: &Service, sites: &[u32], n: usize, placed: usize) -> String {
        let need = need(svc);
        let left = n - placed;
        let head = format!(
            "service `{}`: {left} of {} cannot be placed",
            svc.name,
            count(n, "instance")
        );
        let site_list = name_list(
            sites
                .iter()
                .map(|&s| self.fleet.sites[s as usize].name.as_str()),
        );
        let hosts: Vec<&Host> = sites
            .iter()
            .flat_map(|&s| self.site_hosts[s as usize].clone())
            .map(|h| &self.hosts[h as usize])
            .collect();
        if hosts.is_empty() {
            return format!("{head}: its eligible sites ({site_list}) have no hosts");
        }
        // Would one instance fit an empty host of some eligible site?
        let empty: Vec<Vector> = sites
            .iter()
            .map(|&s| limit(&self.fleet.sites[s as usize], self.ratio))
            .collect();
        if !empty.iter().any(|e| fits(e, &need)) {
            return format!("{head}: {}", self.too_big(svc, sites, &empty));
        }
        let short: Vec<&str> = Resource::ALL
            .iter()
            .enumerate()
            .filter(|&(d, _)| !hosts.iter().any(|h| h.free[d] >= need[d]))
            .map(|(_, r)| r.name())
            .collect();
        let why = if short.is_empty() {
            "free room is fragmented: no single host has room in every resource at once".to_string()
        } else {
            format!("no host has room left for one more ({})", short.join(", "))
        };
        let more = svc.resources.times(Range::exact(left as u64));
        format!(
            "{head}: capacity exhausted at {} {site_list}: {why}; the rest need {} more",
            noun(sites.len(), "site"),
            crate::amount::Amount(more).human_nonzero()
        )
    }

    /// The resources in which one instance is bigger than the largest eligible host.
    fn too_big(&self, svc: &Service, sites: &[u32], empty: &[Vector]) -> String {
        let need = need(svc);
        let mut parts = Vec::new();
        for (d, r) in Resource::ALL.iter().enumerate() {
            let largest = empty.iter().map(|e| e[d]).max().unwrap_or(0);
            if largest >= need[d] {
                continue;
            }
            let host_has = if d == CPU && self.ratio > 1.0 {
                let raw = sites
                    .iter()
                    .map(|&s| self.fleet.sites[s as usize].capacity.cpu.min)
                    .max()
                    .unwrap_or(0);
                format!(
                    "{} ({} with the CPU overcommit ratio {})",
                    r.fmt_one(raw),
                    r.fmt_one(largest),
                    self.ratio
                )
            } else {
                r.fmt_one(largest)
            };
            // "8 cores" names its resource; a size needs "of memory".
            let of = if d == CPU {
                String::new()
            } else {
                format!(" of {}", r.name())
            };
            parts.push(format!(
                "the largest eligible host has {host_has}{of} but an instance needs {}",
                r.fmt_one(need[d])
            ));
        }
        if parts.is_empty() {
            format!(
                "no eligible host has {} at once (each falls short in one resource)",
                crate::amount::Amount(per_instance_max(svc)).human_nonzero()
            )
        } else {
            parts.join("; ")
        }
    }
}

/// The per-instance demand at its upper bound, as exact ranges.
fn per_instance_max(svc: &Service) -> Resources {
    let n = need(svc);
    Resources {
        cpu: Range::exact(n[CPU]),
        memory: Range::exact(n[MEM]),
        storage: Range::exact(n[STO]),
    }
}

/// What one host of a site may carry, conservatively.
fn limit(site: &Site, ratio: f64) -> Vector {
    [
        cpu_limit(site.capacity.cpu.min, ratio),
        site.capacity.memory.min,
        site.capacity.storage.min,
    ]
}

fn unplaceable(svc: &Service, message: String) -> Finding {
    let f = Finding::new(Severity::Error, code::UNPLACEABLE, message).service(&svc.name);
    match &svc.project {
        Some(p) => f.project(p),
        None => f,
    }
}

/// `a, b, c` or `a, b, c, d, e, f and 12 more`.
pub(crate) fn name_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    const SHOWN: usize = 6;
    let all: Vec<&str> = names.collect();
    if all.len() <= SHOWN {
        return all.join(", ");
    }
    format!("{} and {} more", all[..SHOWN].join(", "), all.len() - SHOWN)
}

/// A `spread-uneven` finding when counts over the eligible domains differ by more than one.
fn uneven(
    svc: &Service,
    kind: &str,
    name: impl Fn(usize) -> String,
    counts: &[usize],
    full: &[usize],
) -> Option<Finding> {
    let (lo, hi) = (counts.iter().min()?, counts.iter().max()?);
    if hi - lo <= 1 {
        return None;
    }
    let short: Vec<String> = full
        .iter()
        .filter(|&&i| counts[i] + 1 < *hi)
        .map(|&i| format!("{} ({})", name(i), counts[i]))
        .collect();
    let msg = format!(
        "service `{}`: spread by {kind} is uneven ({lo} to {} per {kind}): {} ran out of room",
        svc.name,
        count(*hi, "instance"),
        name_list(short.iter().map(String::as_str))
    );
    Some(Finding::new(Severity::Warning, code::SPREAD_UNEVEN, msg).service(&svc.name))
}

/// A `spread-unmet` finding when two or more instances of a spread service were placed and all
/// of them share one failure domain: the spread protects nothing, since losing that domain
/// loses every instance. `eligible` is the number of domains the service may use.
fn unmet<D>(
    svc: &Service,
    kind: &str,
    rr: &RoundRobin<D>,
    eligible: usize,
    name: impl Fn(usize) -> String,
) -> Option<Finding> {
    let n = rr.placed.len();
    let used: Vec<usize> = (0..rr.counts.len()).filter(|&i| rr.counts[i] > 0).collect();
    let [only] = used.as_slice() else {
        return None;
    };
    if n < 2 {
        return None;
    }
    let domain = name(*only);
    let why = if eligible == 1 {
        format!("{domain} is its only eligible {kind}")
    } else {
        // The domain that took every instance is full now too; the others were full first.
        let full: Vec<String> = rr
            .full
            .iter()
            .filter(|&&i| i != *only)
            .map(|&i| name(i))
            .collect();
        format!(
            "all are on {domain}; the other eligible {} had no room: {}",
            noun(full.len(), kind),
            name_list(full.iter().map(String::as_str))
        )
    };
    let replicas = match svc.replicas.min as usize {
        planned if planned > n => format!("{} (of {planned})", count(n, "placed replica")),
        _ => count(n, "replica"),
    };
    let msg = format!(
        "service `{}`: {replicas} with spread: {kind} on 1 {kind} (needs {}; {} {} a {kind}): {why}",
        svc.name,
        count(n, kind),
        count(n - 1, "instance"),
        agree(n - 1, "shares", "share"),
    );
    let mut f = Finding::new(Severity::Warning, code::SPREAD_UNMET, msg).service(&svc.name);
    f = match domain.split_once('/') {
        Some((site, host)) => match host.parse() {
            Ok(h) => f.site(site).host(h),
            Err(_) => f.site(site),
        },
        None => f.site(&domain),
    };
    Some(match &svc.project {
        Some(p) => f.project(p),
        None => f,
    })
}

/// The sites a service may use, in fleet order, or why there are none.
///
/// # Errors
/// A sentence naming the constraint that left no site: the tier, the site list or the phase.
pub(crate) fn eligible_sites(fleet: &Fleet, svc: &Service) -> Result<Vec<u32>, String> {
    let p = &svc.placement;
    let by_tier: Vec<(u32, &Site)> = fleet
        .sites
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u32, s))
        .filter(|(_, s)| p.tier.is_none_or(|t| s.tier == t))
        .collect();
    if by_tier.is_empty() {
        let t = p.tier.map_or("", |t| t.as_str());
        return Err(if fleet.sites.is_empty() {
            "the fleet has no sites".to_string()
        } else {
            format!(
                "no site of tier {t} (the fleet has {})",
                tiers_present(fleet)
            )
        });
    }
    let by_list: Vec<(u32, &Site)> = by_tier
        .into_iter()
        .filter(|(_, s)| p.sites.is_empty() || p.sites.contains(&s.name))
        .collect();
    if by_list.is_empty() {
        let listed: Vec<String> = p
            .sites
            .iter()
            .map(|n| match fleet.site(n) {
                Some(s) => format!("{n} is {}", s.tier.as_str()),
                None => format!("{n} does not exist"),
            })
            .collect();
        let t = p.tier.map_or("", |t| t.as_str());
        return Err(format!(
            "none of its sites is of tier {t} ({})",
            listed.join(", ")
        ));
    }
    let by_phase: Vec<u32> = by_list
        .iter()
        .filter(|(_, s)| s.phase <= svc.phase)
        .map(|(i, _)| *i)
        .collect();
    if by_phase.is_empty() {
        let earliest = by_list.iter().map(|(_, s)| s.phase).min().unwrap_or(0);
        return Err(format!(
            "it rolls out in phase {} but its eligible sites ({}) come online in phase {earliest} or later",
            svc.phase,
            name_list(by_list.iter().map(|(_, s)| s.name.as_str()))
        ));
    }
    Ok(by_phase)
}

fn tiers_present(fleet: &Fleet) -> String {
    let tiers: BTreeSet<_> = fleet.sites.iter().map(|s| s.tier).collect();
    let names: Vec<&str> = tiers.iter().map(|t| t.as_str()).collect();
    format!("{} sites only", names.join(" and "))
}
