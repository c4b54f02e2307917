//! The read side's view of each fleet (its summary, instance records and sites by tier), kept so
//! that the API and the portal answer in milliseconds also for a fleet of 100,000 instances.
//!
//! Building a view reads every instance record and the revisions from the store, which takes
//! well under a millisecond for a small fleet and a few hundred for a large one. So a view is
//! rebuilt for every request while building it is cheap ([`FRESH_BUDGET`]): what the CLI does
//! shows at once. A view that is expensive to build is served as last built while one rebuild
//! runs on a thread of its own (stale-while-revalidate), once it is older than [`MAX_AGE`] or
//! ten times its build time, whichever is longer; every answer says how old its view is
//! (`view_age_seconds`), beside the age of each observation. At most one rebuild per fleet runs
//! at a time, so a burst of requests never multiplies the store's work.

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
    /// How long building it took.
    pub(crate) cost: Duration,
    /// The fleet's summary ([`api::fleet_summary`] without the lock, which is read fresh).
    pub(crate) summary: Value,
    /// Every instance as the API shows it, in the store's order (by unit).
    pub(crate) instances: Vec<Value>,
    /// Index into `instances` by instance name (the newest unit of each).
    pub(crate) by_instance: HashMap<String, usize>,
    /// Its sites grouped by tier and region, for the overview.
    pub(crate) tiers: Vec<Value>,
}

impl View {
    /// Seconds since it was built.
    pub(crate) fn age_seconds(&self) -> f64 {
        (self.built_at.elapsed().as_millis() as f64) / 1000.0
    }

    fn build(store: &dyn StateStore, fleet: &str, parsed: &Revisions) -> Result<Self, ApiError> {
        let started = Instant::now();
        let (instances, sites) = api::instance_views(store, fleet)?;
        let revisions = store.list_revisions(fleet)?;
        let summary = api::summary_of(fleet, &revisions, parsed, &instances, sites);
        let tiers = api::sites_by_tier_and_region(fleet, &revisions, parsed, &summary);
        let mut by_instance = HashMap::with_capacity(instances.len());
        for (i, v) in instances.iter().enumerate() {
            if let Some(name) = v["instance"].as_str() {
                by_instance.insert(name.to_owned(), i);
            }
        }
        Ok(View {
            built_at: Instant::now(),
            cost: started.elapsed(),
            summary,
            instances,
            by_instance,
            tiers,
        })
    }

    fn stale(&self) -> bool {
        self.cost > FRESH_BUDGET && self.built_at.elapsed() > MAX_AGE.max(self.cost * 10)
    }
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

    /// `fleet`'s view: rebuilt now if it is cheap or there is none; else the one there, with a
    /// rebuild started in the background when it is stale.
    ///
    /// # Errors
    /// The store could not be read (only when a view had to be built now).
    pub(crate) fn get(
        &self,
        store: &Arc<dyn StateStore>,
        fleet: &str,
    ) -> Result<Arc<View>, ApiError> {
        let slot = self.slot(fleet);
        let current = slot
            .view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match current {
            Some(v) if v.cost > FRESH_BUDGET => {
                if v.stale() && !slot.rebuilding.swap(true, Ordering::AcqRel) {
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
