//! An in-memory [`Provider`] for engine tests: no processes, deterministic pids and ports,
//! health and failures set by the test, and a log of the calls made.
//!
//! ```
//! use phoenix_provider_api::fake::{Call, FakeProvider};
//! use phoenix_provider_api::{Provider, UnitSpec};
//! let p = FakeProvider::new();
//! let spec = UnitSpec::new("f", "web", "web-0", 1).with_command(["x"]).with_ports(["port"]);
//! let st = p.start(&spec).unwrap();
//! assert_eq!(st.ports["port"], 20000);
//! p.start(&spec).unwrap(); // idempotent: no second Start in the log
//! assert_eq!(p.calls(), [Call::Start("web-0@r1".into())]);
//! ```

use crate::{
    Health, ProbeOutcome, Provider, ProviderError, Result, Snapshot, UnitSpec, UnitState,
    UnitStatus,
};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// A call made to a [`FakeProvider`] that changed something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A unit was started (not logged when it was already running).
    Start(String),
    /// A unit was stopped (not logged when it was not there).
    Stop(String),
    /// A snapshot `(instance, tag)` was taken.
    Snapshot(String, String),
    /// A snapshot `(instance, tag)` was restored.
    Restore(String, String),
}

#[derive(Debug, Default)]
struct State {
    units: BTreeMap<(String, String), UnitStatus>,
    next_pid: u32,
    next_port: u16,
    unhealthy: BTreeSet<(String, String)>,
    failing_starts: BTreeSet<String>,
    snapshots: BTreeMap<(String, String, String), Vec<String>>,
    calls: Vec<Call>,
    unreachable: bool,
    /// Per instance: how its next starts end (`Some(code)`: exited at once; `None`: runs on).
    exits: BTreeMap<String, std::collections::VecDeque<Option<i32>>>,
    /// Per instance: what [`Provider::output_tail`] reports.
    outputs: BTreeMap<String, String>,
    /// Per unit id: the spec its last start was given.
    started: BTreeMap<String, UnitSpec>,
}

/// An in-memory provider. Units are healthy unless [`FakeProvider::set_healthy`] says
/// otherwise; pids count from 1000 and ports from 20000.
#[derive(Debug)]
pub struct FakeProvider {
    state: Mutex<State>,
    endpoint: String,
}

impl Default for FakeProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeProvider {
    /// An empty fake, at endpoint `fake://default`.
    pub fn new() -> Self {
        Self::at("fake://default")
    }

    /// An empty fake that says it is `endpoint` (two fakes with different endpoints stand for
    /// two hosts that cannot see each other's units).
    pub fn at(endpoint: &str) -> Self {
        FakeProvider {
            state: Mutex::new(State {
                next_pid: 1000,
                next_port: 20000,
                ..State::default()
            }),
            endpoint: endpoint.to_owned(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes probes of the unit pass or fail.
    pub fn set_healthy(&self, fleet: &str, unit_id: &str, healthy: bool) {
        let key = (fleet.to_string(), unit_id.to_string());
        let mut s = self.lock();
        if healthy {
            s.unhealthy.remove(&key);
        } else {
            s.unhealthy.insert(key);
        }
    }

    /// Makes every call fail with [`ProviderError::Unavailable`] (a host cut off), or heals it.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.lock().unreachable = unreachable;
    }

    fn check_reachable(&self) -> Result<()> {
        if self.lock().unreachable {
            return Err(ProviderError::Unavailable {
                provider: "fake".into(),
                reason: format!("{} cannot be reached", self.endpoint),
            });
        }
        Ok(())
    }

    /// Makes starts of `unit_id` (in any fleet) fail with [`ProviderError::Spawn`].
    pub fn fail_starts(&self, unit_id: &str, fail: bool) {
        let mut s = self.lock();
        if fail {
            s.failing_starts.insert(unit_id.into());
        } else {
            s.failing_starts.remove(unit_id);
        }
    }

    /// Sets the observed state of a unit, as if its process had exited or crashed.
    pub fn set_state(&self, fleet: &str, unit_id: &str, state: UnitState) {
        if let Some(u) = self
            .lock()
            .units
            .get_mut(&(fleet.to_string(), unit_id.to_string()))
        {
            u.state = state;
            if !state.is_running() {
                u.pid = None;
            }
        }
    }

    /// Forgets a unit without a stop, as if its process had vanished with its supervisor.
    pub fn remove(&self, fleet: &str, unit_id: &str) {
        self.lock()
            .units
            .remove(&(fleet.to_string(), unit_id.to_string()));
    }

    /// Scripts how the next starts of `instance`'s units end, one entry per start: `Some(code)`
    /// makes the unit exit with `code` at once (a one-shot job's run), `None` keeps it
    /// running. Once the script is used up, units run on.
    pub fn script_exits(&self, instance: &str, exits: impl IntoIterator<Item = Option<i32>>) {
        self.lock()
            .exits
            .insert(instance.to_string(), exits.into_iter().collect());
    }

    /// The spec the last start of `unit_id` was given (what a real provider would run).
    pub fn started_spec(&self, unit_id: &str) -> Option<UnitSpec> {
        self.lock().started.get(unit_id).cloned()
    }

    /// Sets what [`Provider::output_tail`] reports for the units of `instance`.
    pub fn set_output(&self, instance: &str, output: &str) {
        self.lock()
            .outputs
            .insert(instance.to_string(), output.to_string());
    }

    /// The calls made so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Clears the call log.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }
}

impl Provider for FakeProvider {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Starts the unit if it was given every secret it uses (the values are not kept).
    fn start_with_secrets(
        &self,
        spec: &UnitSpec,
        secrets: &crate::secret::SecretValues,
    ) -> Result<UnitStatus> {
        secrets.for_spec(spec)?;
        self.start(spec)
    }

    fn start(&self, spec: &UnitSpec) -> Result<UnitStatus> {
        self.check_reachable()?;
        spec.validate()?;
        let id = spec.unit_id();
        let key = (spec.fleet.clone(), id.clone());
        let mut s = self.lock();
        s.started.insert(id.clone(), spec.clone());
        if s.failing_starts.contains(&id) {
            return Err(ProviderError::Spawn {
                unit: id,
                reason: "fake: start fails".into(),
            });
        }
        let pid = s.next_pid;
        let scripted = s
            .exits
            .get_mut(&spec.instance)
            .and_then(std::collections::VecDeque::pop_front)
            .flatten();
        let (state, pid) = match scripted {
            Some(code) => (UnitState::Exited(code), None),
            None => (UnitState::Running, Some(pid)),
        };
        if let Some(u) = s.units.get_mut(&key) {
            if u.state.is_running() {
                return Ok(u.clone());
            }
            u.state = state;
            u.pid = pid;
            let u = u.clone();
            s.next_pid += 1;
            s.calls.push(Call::Start(id));
            return Ok(u);
        }
        let mut ports = BTreeMap::new();
        for name in &spec.ports {
            ports.insert(name.clone(), s.next_port);
            s.next_port += 1;
        }
        s.next_pid += 1;
        let status = UnitStatus {
            unit_id: id.clone(),
            fleet: spec.fleet.clone(),
            service: spec.service.clone(),
            instance: spec.instance.clone(),
            revision: spec.revision,
            site: spec.site.clone(),
            state,
            pid,
            handle: None,
            ports,
            data_dir: PathBuf::from(format!("/fake/{}/{}/data", spec.fleet, spec.instance)),
            restarts: 0,
            logs: Vec::new(),
            detail: None,
        };
        s.units.insert(key, status.clone());
        s.calls.push(Call::Start(id));
        Ok(status)
    }

    fn stop(&self, fleet: &str, unit_id: &str, _grace: Duration) -> Result<()> {
        self.check_reachable()?;
        let mut s = self.lock();
        if s.units
            .remove(&(fleet.to_string(), unit_id.to_string()))
            .is_some()
        {
            s.calls.push(Call::Stop(unit_id.into()));
        }
        Ok(())
    }

    fn list(&self, fleet: &str) -> Result<Vec<UnitStatus>> {
        self.check_reachable()?;
        Ok(self
            .lock()
            .units
            .values()
            .filter(|u| u.fleet == fleet)
            .cloned()
            .collect())
    }

    fn probe(&self, unit: &UnitStatus, _health: &Health) -> ProbeOutcome {
        let s = self.lock();
        let key = (unit.fleet.clone(), unit.unit_id.clone());
        match s.units.get(&key) {
            Some(u) if u.state.is_running() && !s.unhealthy.contains(&key) => {
                ProbeOutcome::healthy("fake: healthy")
            }
            Some(u) if u.state.is_running() => ProbeOutcome::unhealthy("fake: set unhealthy"),
            Some(u) => ProbeOutcome::unhealthy(format!("fake: {}", u.state)),
            None => ProbeOutcome::unhealthy("fake: no such unit"),
        }
    }

    fn snapshot(
        &self,
        fleet: &str,
        instance: &str,
        paths: &[String],
        tag: &str,
    ) -> Result<Snapshot> {
        let mut s = self.lock();
        let key = (fleet.to_string(), instance.to_string(), tag.to_string());
        s.snapshots.insert(key, paths.to_vec());
        s.calls.push(Call::Snapshot(instance.into(), tag.into()));
        Ok(Snapshot {
            fleet: fleet.into(),
            instance: instance.into(),
            tag: tag.into(),
            paths: paths.to_vec(),
            location: "memory".into(),
        })
    }

    fn restore(&self, fleet: &str, instance: &str, tag: &str) -> Result<Snapshot> {
        let mut s = self.lock();
        let key = (fleet.to_string(), instance.to_string(), tag.to_string());
        let Some(paths) = s.snapshots.get(&key).cloned() else {
            return Err(ProviderError::SnapshotNotFound {
                fleet: fleet.into(),
                instance: instance.into(),
                tag: tag.into(),
            });
        };
        s.calls.push(Call::Restore(instance.into(), tag.into()));
        Ok(Snapshot {
            fleet: fleet.into(),
            instance: instance.into(),
            tag: tag.into(),
            paths,
            location: "memory".into(),
        })
    }

    fn log_paths(&self, _fleet: &str, _selector: &str) -> Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }

    fn output_tail(&self, unit: &UnitStatus, max_bytes: usize) -> Result<String> {
        let s = self.lock();
        let text = s.outputs.get(&unit.instance).cloned().unwrap_or_default();
        let mut start = text.len().saturating_sub(max_bytes);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        Ok(text[start..].to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HealthCheck;

    #[test]
    fn fake_follows_the_trait_guarantees() {
        let p = FakeProvider::new();
        let spec = UnitSpec::new("f", "web", "web-0", 1)
            .with_command(["x"])
            .with_ports(["a", "b"]);
        let st = p.start(&spec).unwrap();
        assert_eq!(p.start(&spec).unwrap(), st);
        let h = Health {
            checks: vec![HealthCheck::Tcp {
                address: "x".into(),
            }],
            timeout_ms: 1,
            interval_ms: 1,
        };
        assert!(p.probe(&st, &h).healthy);
        p.set_healthy("f", "web-0@r1", false);
        assert!(!p.probe(&st, &h).healthy);
        p.set_state("f", "web-0@r1", UnitState::Exited(1));
        assert_eq!(p.list("f").unwrap()[0].state, UnitState::Exited(1));
        assert!(p.start(&spec).unwrap().state.is_running());
        p.stop("f", "web-0@r1", Duration::ZERO).unwrap();
        p.stop("f", "web-0@r1", Duration::ZERO).unwrap();
        assert!(p.list("f").unwrap().is_empty());
        p.fail_starts("web-0@r1", true);
        assert!(matches!(p.start(&spec), Err(ProviderError::Spawn { .. })));
        assert!(matches!(
            p.restore("f", "web-0", "t"),
            Err(ProviderError::SnapshotNotFound { .. })
        ));
        assert_eq!(
            p.calls(),
            [
                Call::Start("web-0@r1".into()),
                Call::Start("web-0@r1".into()),
                Call::Stop("web-0@r1".into())
            ]
        );
    }
}
