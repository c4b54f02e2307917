//! [`Router`]: one [`Provider`] over every site's providers, so that one apply drives them all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::{
    Health, ProbeOutcome, Provider, ProviderError, Result, Snapshot, UnitSpec, UnitStatus,
};

/// A site's host that could not be reached when the router listed units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// The site.
    pub site: String,
    /// The host index within the site.
    pub host: u32,
    /// Its provider's endpoint.
    pub endpoint: String,
    /// Why.
    pub reason: String,
}

/// Routes each unit to the provider of the site and host the planner placed it on, and lists,
/// probes, stops, snapshots and restores through whichever provider runs the unit.
///
/// Nothing here decides what should run: the router only finds the provider for a unit. It
/// remembers which provider listed or started each unit, so that stop, probe, snapshot and
/// restore go to the same one; a unit it has not seen is asked of every provider of its site.
///
/// # Unreachable hosts
/// By default `list` fails when any provider cannot be reached, naming the site, host and
/// endpoint, so that nothing changes. With [`Router::tolerate_unreachable`] it lists what the
/// others have and remembers the unreachable ones ([`Router::unreachable`]); the caller then
/// leaves the instances placed there alone.
pub struct Router {
    /// (site, host) -> index into `providers`.
    hosts: BTreeMap<(String, u32), usize>,
    providers: Vec<Arc<dyn Provider>>,
    tolerate_unreachable: bool,
    /// unit id -> index of the provider that listed or started it.
    seen: Mutex<BTreeMap<String, usize>>,
    unreachable: Mutex<Vec<Unreachable>>,
    /// Indices of the providers the last `list` could not reach: their endpoints are not
    /// "reached", so their units' records are never taken for gone.
    down: Mutex<BTreeSet<usize>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field(
                "hosts",
                &self
                    .hosts
                    .iter()
                    .map(|((s, h), i)| format!("{s}/{h} -> {}", self.providers[*i].endpoint()))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router with no hosts yet.
    pub fn new() -> Self {
        Router {
            hosts: BTreeMap::new(),
            providers: Vec::new(),
            tolerate_unreachable: false,
            seen: Mutex::new(BTreeMap::new()),
            unreachable: Mutex::new(Vec::new()),
            down: Mutex::new(BTreeSet::new()),
        }
    }

    /// Host `host` of `site` is run by `provider`. Providers with the same endpoint are
    /// shared (one local agent for every local site, say).
    pub fn add(&mut self, site: &str, host: u32, provider: Arc<dyn Provider>) {
        let endpoint = provider.endpoint();
        let index = match self.providers.iter().position(|p| p.endpoint() == endpoint) {
            Some(i) => i,
            None => {
                self.providers.push(provider);
                self.providers.len() - 1
            }
        };
        self.hosts.insert((site.to_owned(), host), index);
    }

    /// List what the reachable providers have instead of failing on an unreachable one.
    #[must_use]
    pub fn tolerate_unreachable(mut self, yes: bool) -> Self {
        self.tolerate_unreachable = yes;
        self
    }

    /// The hosts that could not be reached by the last `list`.
    pub fn unreachable(&self) -> Vec<Unreachable> {
        self.unreachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The distinct providers, in the order they were added.
    pub fn providers(&self) -> &[Arc<dyn Provider>] {
        &self.providers
    }

    /// The provider of `site`'s host `host`.
    pub fn provider_of(&self, site: &str, host: u32) -> Option<&Arc<dyn Provider>> {
        self.hosts
            .get(&(site.to_owned(), host))
            .map(|i| &self.providers[*i])
    }

    /// The sites and hosts a provider runs.
    fn hosts_of(&self, index: usize) -> Vec<(String, u32)> {
        self.hosts
            .iter()
            .filter(|(_, i)| **i == index)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn index_for_spec(&self, spec: &UnitSpec) -> Result<usize> {
        self.hosts
            .get(&(spec.site.clone(), spec.host))
            .copied()
            .ok_or_else(|| ProviderError::InvalidSpec {
                unit: spec.unit_id(),
                problem: format!(
                    "no provider for site `{}` host {} (the sites of the spec and of this run differ)",
                    spec.site, spec.host
                ),
            })
    }

    fn remember(&self, unit: &str, index: usize) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(unit.to_owned(), index);
    }

    /// The providers that may run `unit`: the one that listed or started it, else every one.
    fn candidates(&self, unit: &str) -> Vec<usize> {
        match self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(unit)
        {
            Some(i) => vec![*i],
            None => (0..self.providers.len()).collect(),
        }
    }

    /// The provider that listed or started an instance's units (for snapshots).
    fn index_for_instance(&self, instance: &str) -> Vec<usize> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let prefix = format!("{instance}@");
        let found: BTreeSet<usize> = seen
            .iter()
            .filter(|(u, _)| u.starts_with(&prefix))
            .map(|(_, i)| *i)
            .collect();
        drop(seen);
        if found.is_empty() {
            (0..self.providers.len()).collect()
        } else {
            found.into_iter().collect()
        }
    }
}

impl Router {
    /// `call` on the providers that may hold `instance`'s data, until one succeeds; the last
    /// error otherwise.
    fn first_ok<T>(&self, instance: &str, call: impl Fn(&dyn Provider) -> Result<T>) -> Result<T> {
        let mut last = None;
        for index in self.index_for_instance(instance) {
            match call(&*self.providers[index]) {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ProviderError::Unavailable {
            provider: "router".into(),
            reason: format!("no provider holds instance {instance}"),
        }))
    }
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Provider for Router {
    fn kind(&self) -> &'static str {
        "router"
    }

    fn endpoint(&self) -> String {
        self.providers
            .iter()
            .map(|p| p.endpoint())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn endpoint_of(&self, site: &str, host: u32) -> String {
        self.provider_of(site, host)
            .map_or_else(String::new, |p| p.endpoint())
    }

    fn reaches(&self, endpoint: &str) -> bool {
        let down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        self.providers
            .iter()
            .enumerate()
            .any(|(i, p)| !down.contains(&i) && p.reaches(endpoint))
    }

    fn resolve_image(&self, spec: &UnitSpec) -> Result<Option<String>> {
        self.providers[self.index_for_spec(spec)?].resolve_image(spec)
    }

    fn purge(&self, fleet: &str) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for p in &self.providers {
            removed.extend(p.purge(fleet)?);
        }
        Ok(removed)
    }

    fn start(&self, spec: &UnitSpec) -> Result<UnitStatus> {
        let index = self.index_for_spec(spec)?;
        let status = self.providers[index].start(spec)?;
        self.remember(&status.unit_id, index);
        Ok(status)
    }

    fn start_with_secrets(
        &self,
        spec: &UnitSpec,
        secrets: &crate::secret::SecretValues,
    ) -> Result<UnitStatus> {
        let index = self.index_for_spec(spec)?;
        let status = self.providers[index].start_with_secrets(spec, secrets)?;
        self.remember(&status.unit_id, index);
        Ok(status)
    }

    fn stop(&self, fleet: &str, unit_id: &str, grace: Duration) -> Result<()> {
        for index in self.candidates(unit_id) {
            self.providers[index].stop(fleet, unit_id, grace)?;
        }
        Ok(())
    }

    /// Every provider's units, listed at once (one thread per provider), sorted by unit id.
    fn list(&self, fleet: &str) -> Result<Vec<UnitStatus>> {
        let results: Vec<Result<Vec<UnitStatus>>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .providers
                .iter()
                .map(|p| s.spawn(move || p.list(fleet)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(ProviderError::Unavailable {
                            provider: "router".into(),
                            reason: "a provider panicked while listing".into(),
                        })
                    })
                })
                .collect()
        });
        let mut all = Vec::new();
        let mut unreachable = Vec::new();
        let mut down = BTreeSet::new();
        for (index, result) in results.into_iter().enumerate() {
            match result {
                Ok(units) => {
                    for u in &units {
                        self.remember(&u.unit_id, index);
                    }
                    all.extend(units);
                }
                Err(e) => {
                    down.insert(index);
                    let endpoint = self.providers[index].endpoint();
                    for (site, host) in self.hosts_of(index) {
                        unreachable.push(Unreachable {
                            site,
                            host,
                            endpoint: endpoint.clone(),
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
        *self
            .unreachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = unreachable.clone();
        *self.down.lock().unwrap_or_else(PoisonError::into_inner) = down;
        if !unreachable.is_empty() && !self.tolerate_unreachable {
            return Err(ProviderError::Unavailable {
                provider: "router".into(),
                reason: describe_unreachable(&unreachable),
            });
        }
        all.sort_by(|a, b| a.unit_id.cmp(&b.unit_id));
        Ok(all)
    }

    fn probe(&self, unit: &UnitStatus, health: &Health) -> ProbeOutcome {
        match self.candidates(&unit.unit_id).first() {
            Some(index) => self.providers[*index].probe(unit, health),
            None => ProbeOutcome::unhealthy("no provider runs this unit"),
        }
    }

    fn snapshot(
        &self,
        fleet: &str,
        instance: &str,
        paths: &[String],
        tag: &str,
    ) -> Result<Snapshot> {
        self.first_ok(instance, |p| p.snapshot(fleet, instance, paths, tag))
    }

    fn restore(&self, fleet: &str, instance: &str, tag: &str) -> Result<Snapshot> {
        self.first_ok(instance, |p| p.restore(fleet, instance, tag))
    }

    fn output_tail(&self, unit: &UnitStatus, max_bytes: usize) -> Result<String> {
        match self.candidates(&unit.unit_id).first() {
            Some(index) => self.providers[*index].output_tail(unit, max_bytes),
            None => Ok(String::new()),
        }
    }

    fn log_paths(&self, fleet: &str, selector: &str) -> Result<Vec<PathBuf>> {
        let mut all = Vec::new();
        for p in &self.providers {
            if let Ok(paths) = p.log_paths(fleet, selector) {
                all.extend(paths);
            }
        }
        Ok(all)
    }
}

/// `site core-1 host 0 (docker://...): reason; ...`: every unreachable host, by name.
pub fn describe_unreachable(unreachable: &[Unreachable]) -> String {
    unreachable
        .iter()
        .map(|u| {
            format!(
                "site {} host {} ({}) cannot be reached: {}",
                u.site, u.host, u.endpoint, u.reason
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeProvider;

    #[test]
    fn units_go_to_the_provider_of_their_site_and_host_and_are_listed_together() {
        let a = Arc::new(FakeProvider::at("fake://a"));
        let b = Arc::new(FakeProvider::at("fake://b"));
        let mut r = Router::new();
        r.add("core", 0, a.clone());
        r.add("edge", 0, b.clone());
        r.add("edge-2", 0, b.clone());
        assert_eq!(r.providers().len(), 2, "one provider per endpoint");
        let mut web = UnitSpec::new("f", "web", "web-0", 1).with_command(["sleep", "60"]);
        web.site = "core".into();
        let mut api = UnitSpec::new("f", "api", "api-0", 1).with_command(["sleep", "60"]);
        api.site = "edge".into();
        r.start(&web).unwrap();
        r.start(&api).unwrap();
        assert_eq!(a.list("f").unwrap().len(), 1);
        assert_eq!(b.list("f").unwrap().len(), 1);
        let all = r.list("f").unwrap();
        assert_eq!(
            all.iter().map(|u| u.unit_id.as_str()).collect::<Vec<_>>(),
            ["api-0@r1", "web-0@r1"]
        );
        assert_eq!(r.endpoint_of("edge-2", 0), "fake://b");
        assert!(r.reaches("fake://a") && !r.reaches("fake://c"));
        r.stop("f", "api-0@r1", Duration::from_secs(1)).unwrap();
        assert!(b.list("f").unwrap().iter().all(|u| !u.state.is_running()));
        let mut lost = UnitSpec::new("f", "x", "x-0", 1).with_command(["sleep", "1"]);
        lost.site = "nowhere".into();
        assert!(r.start(&lost).is_err());
    }
}
