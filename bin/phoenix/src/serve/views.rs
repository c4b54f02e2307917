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
/// How old an expensive view may get before a rebuild starts.
const MAX_AGE: Duration = Duration::from_secs(1);
/// Fleets whose views are kept at most (the least recently built go first).
const MAX_FLEETS: usize = 256;

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

    fn build(store: &dyn StateStore, fleet: &str) -> Result<Self, ApiError> {
        let started = Instant::now();
        let (instances, sites) = api::instance_views(store, fleet)?;
        let summary = api::summary_of(store, fleet, &instances, sites)?;
        let tiers = api::sites_by_tier_and_region(store, fleet, &summary)?;
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
}

impl Views {
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
                    let (store, fleet, task) = (store.clone(), fleet.to_owned(), slot.clone());
                    let spawned = std::thread::Builder::new()
                        .name("phoenix-view".into())
                        .spawn(move || {
                            if let Ok(v) = View::build(&*store, &fleet) {
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
                let v = Arc::new(View::build(&**store, fleet)?);
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
