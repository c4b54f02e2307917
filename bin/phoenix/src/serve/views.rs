//! The read side's view of each fleet (its summary, instance records and sites by tier), kept so
//! that the API and the portal answer in milliseconds also for a fleet of 100,000 instances.
//!
//! Building a view reads every instance record and the revisions from the store, which takes
//! well under a millisecond for a small fleet and a few hundred for a large one. So a view is
//! built again only when the fleet changed: every request reads the fleet's generation (one row,
//! [`StateStore::fleet_generation`], which every write to its revisions or instances moves) and
//! answers from the view as it is while that matches. When it does not, a view that is cheap to
//! build ([`FRESH_BUDGET`]) is built again at once, so what the CLI does shows at once; an
//! expensive one is served as last built while one rebuild runs on a thread of its own
//! (stale-while-revalidate), at most one every [`MAX_AGE`] or ten times its build time,
//! whichever is longer, so that an apply writing all the time does not keep a core busy
//! rebuilding. Every answer says how far behind the store its view may be
//! (`view_age_seconds`: 0 while it matches the store's generation, else how long ago it was
//! built), and each observation's age is computed when the answer is made. At most one rebuild
//! per fleet runs at a time, so a burst of requests never multiplies the store's work.

use super::api::{self, ApiError};
use phoenix_state::StateStore;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// A view built within this is rebuilt on every request (always fresh).
const FRESH_BUDGET: Duration = Duration::from_millis(20);
/// The niceness of a background rebuild's thread (19 is the lowest priority).
const REBUILD_NICENESS: i32 = 15;
/// How old an expensive view may get before a rebuild starts.
const MAX_AGE: Duration = Duration::from_secs(1);
/// Fleets whose views are kept at most (the least recently built go first).
const MAX_FLEETS: usize = 256;
/// Parsed revisions kept at most (all of them forgotten at once past that: they are parsed
/// again when asked for, and a bound this size is never reached by the revisions one server
/// shows in a day).
const MAX_REVISIONS: usize = 4096;

/// A site as the overview groups it: (tier, region or `-`, name).
pub(crate) type SiteRow = (String, String, String);
/// A revision's spec files (name, text) and its environment overlay.
type Sources = (Vec<(String, String)>, Option<String>);

/// What the views take from a stored revision's document, parsed once per revision: the
/// document of a 100,000-instance fleet holds every unit's spec, and parsing it again on
/// every rebuild was most of a rebuild's time (docs/benchmarks.md). A revision's document
/// never changes once written; the key also holds its creation time, so a revision number a
/// fleet reuses (destroyed, and applied anew from an empty chain) is parsed anew.
pub(crate) struct ParsedRevision {
    /// `apply`, `rollback` or `destroy`; `None` for a document this phoenix cannot read.
    pub(crate) kind: Option<&'static str>,
    /// The revision a rollback returned to.
    pub(crate) rollback_of: Option<u64>,
    /// How many instances it declares.
    pub(crate) instances: Option<usize>,
    /// Its sites as (tier, region, site), when its spec parses (computed when first asked).
    sites: std::sync::OnceLock<Option<Vec<SiteRow>>>,
    /// Its spec files and environment, for `sites`.
    sources: Option<Sources>,
}

impl ParsedRevision {
    /// `r`'s document, parsed now (without the cache).
    pub(crate) fn of(r: &phoenix_state::Revision) -> Self {
        use phoenix_engine::{RevisionDoc, RevisionKind};
        let doc = RevisionDoc::parse(&r.spec_json);
        ParsedRevision {
            kind: doc.as_ref().map(|d| match d.kind {
                RevisionKind::Apply => "apply",
                RevisionKind::Rollback => "rollback",
                RevisionKind::Destroy => "destroy",
            }),
            rollback_of: doc.as_ref().and_then(|d| d.rollback_of),
            instances: doc.as_ref().map(|d| d.units.len()),
            sites: std::sync::OnceLock::new(),
            sources: doc.map(|d| (d.sources, d.environment)),
        }
    }

    /// Its sites as (tier, region or `-`, site), `None` when its spec no longer parses.
    pub(crate) fn sites(&self) -> Option<&[SiteRow]> {
        self.sites
            .get_or_init(|| {
                let (sources, env) = self.sources.as_ref()?;
                let fleet = phoenix_spec::parse_sources(sources, env.as_deref()).ok()?;
                Some(
                    fleet
                        .sites
                        .iter()
                        .map(|s| {
                            (
                                s.tier.as_str().to_string(),
                                s.region.clone().unwrap_or_else(|| "-".into()),
                                s.name.clone(),
                            )
                        })
                        .collect(),
                )
            })
            .as_deref()
    }
}

/// Parsed revisions by (fleet, number, creation time); see [`ParsedRevision`].
#[derive(Default)]
pub(crate) struct Revisions {
    map: Mutex<HashMap<(String, u64, i64), Arc<ParsedRevision>>>,
}

impl Revisions {
    /// Revision `r` of `fleet`, parsed now if it was not yet.
    pub(crate) fn get(&self, fleet: &str, r: &phoenix_state::Revision) -> Arc<ParsedRevision> {
        let key = (fleet.to_owned(), r.number.0, r.created_at.as_millisecond());
        if let Some(p) = self
            .map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return p.clone();
        }
        // Parsed outside the lock: other fleets' requests do not wait for this one.
        let parsed = Arc::new(ParsedRevision::of(r));
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_REVISIONS {
            map.clear();
        }
        map.entry(key).or_insert(parsed).clone()
    }
}

/// One fleet's view.
pub(crate) struct View {
    /// When it was built.
    pub(crate) built_at: Instant,
    /// When it was last found to match the store (its generation read again, unchanged).
    confirmed_at: Mutex<Instant>,
    /// The fleet's generation read before its rows (so the rows are at least that new).
    generation: Option<u64>,
    /// How long building it took.
    pub(crate) cost: Duration,
    /// The fleet's summary ([`api::fleet_summary`] without the lock, which is read fresh),
    /// without observation ages ([`View::summary_now`] gives them as of now).
    pub(crate) summary: Value,
    /// Every instance as the API shows it, in the store's order (by unit), without its age
    /// ([`View::instance_now`] gives it as of now).
    pub(crate) instances: Vec<Value>,
    /// When each instance was observed (Unix milliseconds).
    observed_ms: Vec<i64>,
    /// Each site's oldest observation (Unix milliseconds).
    site_oldest_ms: Vec<(String, i64)>,
    /// Index into `instances` by instance name (the newest unit of each).
    pub(crate) by_instance: HashMap<String, usize>,
    /// Its sites grouped by tier and region, for the overview.
    pub(crate) tiers: Vec<Value>,
}

impl View {
    /// Seconds it may be behind the store: 0 when the last request found it current, else
    /// since it was last found so.
    pub(crate) fn age_seconds(&self) -> f64 {
        let confirmed = *self
            .confirmed_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        (confirmed.elapsed().as_millis() as f64) / 1000.0
    }

    /// Instance `i` with its observation's age as of now.
    pub(crate) fn instance_now(&self, i: usize) -> Value {
        let mut v = self.instances[i].clone();
        if let Some(&at) = self.observed_ms.get(i) {
            v["age_seconds"] = serde_json::json!(api::age_seconds(at, now_ms()));
        }
        v
    }

    /// Every instance with its observation's age as of now.
    pub(crate) fn instances_now(&self) -> Vec<Value> {
        (0..self.instances.len())
            .map(|i| self.instance_now(i))
            .collect()
    }

    /// The health per site, each oldest observation's age as of now.
    pub(crate) fn sites_now(&self) -> Value {
        let mut sites = self.summary["sites"].clone();
        let now = now_ms();
        for (site, at) in &self.site_oldest_ms {
            if let Some(s) = sites.get_mut(site) {
                s["oldest_observation_age_seconds"] = serde_json::json!(api::age_seconds(*at, now));
            }
        }
        sites
    }

    /// The summary, with observation ages as of now.
    pub(crate) fn summary_now(&self) -> Value {
        let mut summary = self.summary.clone();
        summary["sites"] = self.sites_now();
        summary
    }

    fn build(store: &dyn StateStore, fleet: &str, parsed: &Revisions) -> Result<Self, ApiError> {
        let started = Instant::now();
        // Read first: rows read after it are at least this new, so a write that lands between
        // the two makes the next request see a newer generation and build again (never the
        // other way round).
        let generation = store.fleet_generation(fleet)?;
        let api::InstanceViews {
            instances,
            observed_ms,
            sites,
            site_oldest_ms,
        } = api::instance_views(store, fleet)?;
        let revisions = store.list_revisions(fleet)?;
        let summary = api::summary_of(fleet, &revisions, parsed, &instances, sites);
        let tiers = api::sites_by_tier_and_region(fleet, &revisions, parsed, &summary);
        let mut by_instance = HashMap::with_capacity(instances.len());
        for (i, v) in instances.iter().enumerate() {
            if let Some(name) = v["instance"].as_str() {
                by_instance.insert(name.to_owned(), i);
            }
        }
        let built_at = Instant::now();
        Ok(View {
            built_at,
            confirmed_at: Mutex::new(built_at),
            generation,
            cost: started.elapsed(),
            summary,
            instances,
            observed_ms,
            site_oldest_ms,
            by_instance,
            tiers,
        })
    }

    /// Whether it matches the store's `generation` now (and if so, notes that it did).
    fn is_current(&self, generation: Option<u64>) -> bool {
        let current = self.generation.is_some() && self.generation == generation;
        if current {
            *self
                .confirmed_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        }
        current
    }

    /// Whether a background rebuild of it (behind the store) may start now.
    fn may_rebuild(&self) -> bool {
        self.built_at.elapsed() > MAX_AGE.max(self.cost * 10)
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

#[derive(Default)]
struct Slot {
    view: RwLock<Option<Arc<View>>>,
    rebuilding: AtomicBool,
}

/// Every fleet's view (see the module documentation).
#[derive(Default)]
pub(crate) struct Views {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// Each revision's document, parsed once.
    revisions: Arc<Revisions>,
    /// A connection of its own for background rebuilds, so that a rebuild reading 100,000 rows
    /// never holds up the requests' reads on the server's connection (SQLite serializes the
    /// calls of one connection; WAL lets two read at once).
    reader: Option<Arc<dyn StateStore>>,
}

impl Views {
    /// Views whose background rebuilds read through `reader` (else through the store each
    /// request passes).
    pub(crate) fn with_reader(reader: Option<Arc<dyn StateStore>>) -> Self {
        Views {
            slots: Mutex::new(HashMap::new()),
            revisions: Arc::default(),
            reader,
        }
    }

    /// The parsed revisions the views share (for the pages that list revisions).
    pub(crate) fn revisions(&self) -> &Revisions {
        &self.revisions
    }

    /// `fleet`'s view: the one there while it matches the store; else rebuilt now if it is
    /// cheap or there is none, or the one there with a rebuild started in the background.
    ///
    /// # Errors
    /// The store could not be read.
    pub(crate) fn get(
        &self,
        store: &Arc<dyn StateStore>,
        fleet: &str,
    ) -> Result<Arc<View>, ApiError> {
        let slot = self.slot(fleet);
        let generation = store.fleet_generation(fleet)?;
        let current = slot
            .view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match current {
            Some(v) if v.is_current(generation) => Ok(v),
            Some(v) if v.cost > FRESH_BUDGET => {
                if v.may_rebuild() && !slot.rebuilding.swap(true, Ordering::AcqRel) {
                    let store = self.reader.clone().unwrap_or_else(|| store.clone());
                    let (fleet, task) = (fleet.to_owned(), slot.clone());
                    let parsed = self.revisions.clone();
                    let spawned = std::thread::Builder::new()
                        .name("phoenix-view".into())
                        .spawn(move || {
                            // Below the requests: on cores that serve requests, a rebuild
                            // (which reads every instance row) takes only what they leave, so it
                            // is the rebuild that stretches, not the requests' tail. Linux
                            // applies this to the calling thread only; it ends with it.
                            let _ = rustix::process::setpriority_process(
                                Some(rustix::thread::gettid()),
                                REBUILD_NICENESS,
                            );
                            if let Ok(v) = View::build(&*store, &fleet, &parsed) {
                                *task.view.write().unwrap_or_else(PoisonError::into_inner) =
                                    Some(Arc::new(v));
                            }
                            task.rebuilding.store(false, Ordering::Release);
                        });
                    if spawned.is_err() {
                        slot.rebuilding.store(false, Ordering::Release);
                    }
                }
                Ok(v)
            }
            _ => {
                let v = Arc::new(View::build(&**store, fleet, &self.revisions)?);
                *slot.view.write().unwrap_or_else(PoisonError::into_inner) = Some(v.clone());
                Ok(v)
            }
        }
    }

    fn slot(&self, fleet: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if !slots.contains_key(fleet) && slots.len() >= MAX_FLEETS {
            // Bounded: forget the view built longest ago (it is rebuilt when asked for).
            let oldest = slots
                .iter()
                .min_by_key(|(_, s)| {
                    s.view
                        .read()
                        .unwrap_or_else(PoisonError::into_inner)
                        .as_ref()
                        .map(|v| v.built_at)
                })
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                slots.remove(&k);
            }
        }
        slots.entry(fleet.to_owned()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phoenix_state::{Revision, RevisionNumber, RevisionOutcome};

    fn revision(number: u64, at_ms: i64, spec: &str) -> Revision {
        let doc = phoenix_engine::RevisionDoc {
            format: 1,
            sources: vec![("f.yaml".into(), spec.into())],
            ..Default::default()
        };
        Revision {
            fleet: "f".into(),
            number: RevisionNumber(number),
            spec_json: doc.to_json(),
            placement_json: "{}".into(),
            plan_hash: String::new(),
            actor: "t".into(),
            created_at: jiff::Timestamp::from_millisecond(at_ms).unwrap(),
            outcome: RevisionOutcome::Applied,
            finished_at: None,
        }
    }

    #[test]
    fn a_view_is_kept_while_the_fleet_is_unchanged_and_built_again_when_it_changes() {
        use phoenix_state::{InstanceState, LockOwner, LockRequest, NewRevision, UnitId};
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> =
            Arc::new(phoenix_state::SqliteStore::open(dir.path()).unwrap());
        let lease = store
            .acquire_lock(
                "f",
                &LockRequest::new(
                    LockOwner {
                        who: "t@h".into(),
                        pid: 1,
                        operation: "apply".into(),
                    },
                    Duration::from_secs(60),
                ),
            )
            .unwrap()
            .lease;
        let doc = phoenix_engine::RevisionDoc {
            format: 1,
            sources: vec![("f.yaml".into(), SPEC.into())],
            ..Default::default()
        };
        let r = store
            .create_revision(
                &lease,
                NewRevision {
                    spec_json: doc.to_json(),
                    placement_json: "{}".into(),
                    plan_hash: String::new(),
                    actor: "t".into(),
                },
            )
            .unwrap();
        let instance = |name: &str| InstanceState {
            unit: UnitId::new(name, r.number),
            service: "web".into(),
            instance: name.into(),
            revision: r.number,
            site: "a".into(),
            host: "a-0".into(),
            endpoint: "local".into(),
            desired: phoenix_state::DesiredState::Running,
            observed: phoenix_state::ObservedState::Running,
            handle: Value::Null,
            ports: Value::Null,
        };
        store.upsert_instance(&lease, instance("web-0")).unwrap();

        let views = Views::default();
        let first = views.get(&store, "f").unwrap();
        assert_eq!(first.instances.len(), 1);
        assert!(
            Arc::ptr_eq(&first, &views.get(&store, "f").unwrap()),
            "unchanged: the same view"
        );
        assert!(first.age_seconds() < 1.0, "current: not behind the store");

        store.upsert_instance(&lease, instance("web-1")).unwrap();
        let second = views.get(&store, "f").unwrap();
        assert!(!Arc::ptr_eq(&first, &second), "changed: built again");
        assert_eq!(second.instances.len(), 2);
        assert_eq!(second.summary["sites"]["a"]["healthy"], 2);
        // An age is as of the answer, not as of the build.
        std::thread::sleep(Duration::from_millis(30));
        let age = second.instance_now(0)["age_seconds"].as_f64().unwrap();
        assert!(age >= 0.03, "age {age} as of now");
        assert!(
            second.sites_now()["a"]["oldest_observation_age_seconds"]
                .as_f64()
                .unwrap()
                >= 0.03
        );
    }

    const SPEC: &str = "phoenix: 1\nname: f\nsites:\n  - name: a\n    tier: edge\n    region: eu\n    capacity: { cpu: 1, memory: 1Gi, storage: 1G }\nservices: []\n";

    #[test]
    fn a_revision_is_parsed_once_and_a_reused_number_anew() {
        let cache = Revisions::default();
        let r1 = revision(1, 1_000, SPEC);
        let first = cache.get("f", &r1);
        assert!(Arc::ptr_eq(&first, &cache.get("f", &r1)));
        assert_eq!(first.kind, Some("apply"));
        assert_eq!(
            first.sites(),
            Some(&[("edge".to_string(), "eu".to_string(), "a".to_string())][..])
        );
        // The same number written again later (a fleet applied anew): parsed again.
        let again = revision(1, 2_000, "not: [a spec");
        let second = cache.get("f", &again);
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.sites(), None);
        // Another fleet's revision 1 is its own.
        assert!(!Arc::ptr_eq(&first, &cache.get("g", &r1)));
    }
}
