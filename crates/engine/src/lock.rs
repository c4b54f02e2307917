//! The deploy lock held for the duration of an apply: acquired (taking over a lease whose holder
//! on this host is dead), renewed from a background thread, released on drop.

use crate::clock::Clock;
use crate::error::EngineError;
use phoenix_state::{Lease, LockOwner, LockRequest, StateError, StateStore, this_host};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Whether the process holding a lease on this host still exists. The engine asks before it
/// takes over a lease (an apply that was killed leaves its lease until the TTL), and reads no
/// process table itself: the caller says how to tell (the CLI passes the local provider's
/// `/proc` check).
pub trait HolderLiveness: Send + Sync {
    /// Whether process `pid` of this host is alive (a zombie counts as gone).
    fn is_alive(&self, pid: u32) -> bool;
}

impl<F: Fn(u32) -> bool + Send + Sync> HolderLiveness for F {
    fn is_alive(&self, pid: u32) -> bool {
        self(pid)
    }
}

/// How an apply tells whether a lease holder is alive ([`HolderLiveness`]). The default knows
/// nothing and counts every holder as alive, so that a lease is never taken from a live apply:
/// a dead holder's lease is then taken only once it expires.
#[derive(Clone)]
pub struct Liveness(pub Arc<dyn HolderLiveness>);

impl Liveness {
    /// Every holder counts as alive.
    pub fn assume_alive() -> Self {
        Liveness(Arc::new(|_pid: u32| true))
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Self::assume_alive()
    }
}

impl std::fmt::Debug for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Liveness")
    }
}

/// A held deploy lock, renewed every third of its TTL until dropped.
pub struct LockGuard {
    store: Arc<dyn StateStore>,
    lease: Arc<Mutex<Lease>>,
    lost: Arc<AtomicBool>,
    lost_reason: Arc<Mutex<Option<String>>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    renewer: Option<JoinHandle<()>>,
    /// The previous holder whose lease was taken over, if any (an apply that died).
    pub took_over: Option<phoenix_state::LockHolder>,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("lease", &self.lease())
            .finish_non_exhaustive()
    }
}

impl LockGuard {
    /// Acquires `fleet`'s lock for `operation`. A live lease held by a process of this host
    /// that no longer exists (killed, as `liveness` tells) is taken over at once; any other
    /// live lease is refused. A store that fails with a retryable error is asked again, at
    /// most five times in all, pausing on `clock` between attempts.
    ///
    /// # Errors
    /// [`EngineError::Locked`] naming the holder; [`EngineError::State`].
    pub fn acquire(
        store: Arc<dyn StateStore>,
        fleet: &str,
        operation: &str,
        ttl: Duration,
        liveness: &dyn HolderLiveness,
        clock: &dyn Clock,
    ) -> Result<Self, EngineError> {
        let mut request = LockRequest::new(LockOwner::this_process(operation), ttl);
        let mut attempts = 0;
        let grant = loop {
            attempts += 1;
            match store.acquire_lock(fleet, &request) {
                Ok(g) => break g,
                Err(StateError::LockHeld { holder, .. })
                    if attempts < 3
                        && holder.owner.host() == this_host()
                        && !liveness.is_alive(holder.owner.pid) =>
                {
                    request.take_over_token = Some(holder.token);
                }
                Err(StateError::LockHeld { fleet, holder }) => {
                    return Err(EngineError::Locked { fleet, holder });
                }
                Err(e) if e.is_retryable() && attempts < 5 => {
                    clock.pause(Duration::from_millis(100));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let lease = Arc::new(Mutex::new(grant.lease));
        let lost = Arc::new(AtomicBool::new(false));
        let lost_reason = Arc::new(Mutex::new(None));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let renewer = {
            let (store, lease, lost, lost_reason, stop) = (
                store.clone(),
                lease.clone(),
                lost.clone(),
                lost_reason.clone(),
                stop.clone(),
            );
            std::thread::Builder::new()
                .name("phoenix-lock-renew".into())
                .spawn(move || {
                    let every = ttl / 3;
                    let (m, cv) = &*stop;
                    let mut stopped = m.lock().unwrap_or_else(|p| p.into_inner());
                    loop {
                        if *stopped {
                            return;
                        }
                        let (s, _) = cv
                            .wait_timeout(stopped, every)
                            .unwrap_or_else(|p| p.into_inner());
                        stopped = s;
                        if *stopped {
                            return;
                        }
                        let current = lease.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        match store.renew_lock(&current, ttl) {
                            Ok(l) => *lease.lock().unwrap_or_else(|p| p.into_inner()) = l,
                            Err(e @ StateError::LockLost { .. }) => {
                                *lost_reason.lock().unwrap_or_else(|p| p.into_inner()) =
                                    Some(e.to_string());
                                lost.store(true, Ordering::SeqCst);
                                return;
                            }
                            // A transient failure: the next renewal may succeed well within
                            // the TTL.
                            Err(_) => {}
                        }
                    }
                })
                .ok()
        };
        Ok(LockGuard {
            store,
            lease,
            lost,
            lost_reason,
            stop,
            renewer,
            took_over: grant.took_over,
        })
    }

    /// The current lease.
    pub fn lease(&self) -> Lease {
        self.lease.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the lock was lost to someone else (stop acting).
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Marks the lock lost (a write was refused).
    pub fn mark_lost(&self, reason: String) {
        *self.lost_reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.lost.store(true, Ordering::SeqCst);
    }

    /// Why the lock was lost.
    pub fn lost_reason(&self) -> Option<String> {
        self.lost_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops renewing and releases the lock.
    pub fn release(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        {
            let (m, cv) = &*self.stop;
            *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
            cv.notify_all();
        }
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
            if !self.is_lost() {
                let _ = self.store.release_lock(&self.lease());
            }
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::RealClock;

    #[test]
    fn second_holder_is_refused_and_dead_holder_taken_over() {
        // The test's own table of the living: this process only.
        let me = std::process::id();
        let liveness = move |pid: u32| pid == me;
        let acquire = |store: Arc<dyn StateStore>| {
            LockGuard::acquire(
                store,
                "f",
                "apply",
                Duration::from_secs(30),
                &liveness,
                &RealClock::new(),
            )
        };
        let store: Arc<dyn StateStore> =
            Arc::new(phoenix_state::SqliteStore::open_in_memory().unwrap());
        let g = acquire(store.clone()).unwrap();
        // Same process, alive: refused.
        let err = acquire(store.clone()).unwrap_err();
        assert!(matches!(err, EngineError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("pid"), "{err}");
        g.release();
        let g2 = acquire(store.clone()).unwrap();
        drop(g2);
        // A holder whose pid is dead is taken over.
        let mut owner = LockOwner::this_process("apply");
        owner.pid = me.wrapping_add(1);
        store
            .acquire_lock("f", &LockRequest::new(owner, Duration::from_secs(30)))
            .unwrap();
        let g3 = acquire(store.clone()).unwrap();
        assert!(g3.took_over.is_some());
        drop(g3);
        // Knowing nothing, a live lease is never taken: the dead holder keeps it until it
        // expires.
        let mut owner = LockOwner::this_process("apply");
        owner.pid = me.wrapping_add(1);
        store
            .acquire_lock("f", &LockRequest::new(owner, Duration::from_secs(30)))
            .unwrap();
        let err = LockGuard::acquire(
            store,
            "f",
            "apply",
            Duration::from_secs(30),
            &*Liveness::default().0,
            &RealClock::new(),
        )
        .unwrap_err();
        assert!(matches!(err, EngineError::Locked { .. }), "{err}");
    }
}
