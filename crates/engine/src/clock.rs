//! Time for the executor's driver: the one place that reads a clock or waits. The rollout
//! machine ([`crate::rollout`]) takes `now` as an argument and asks for timers as effects; the
//! driver asks a [`Clock`] what time it is and how long to block for the next timer, so that
//! tests run a rollout on [`VirtualClock`] time without sleeping.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Milliseconds since the clock's origin.
pub type Millis = u64;

/// Where the driver's time comes from.
pub trait Clock: Send + Sync {
    /// Milliseconds since this clock's origin (monotonic).
    fn now_ms(&self) -> Millis;
    /// How long the driver may block for a reply before the timer due `at` (if any) fires.
    /// `busy` says whether provider calls are in flight. `None` means "until a reply comes".
    fn wait_for(&self, at: Option<Millis>, busy: bool) -> Option<Duration>;
    /// Pauses a worker between two attempts of a retried call.
    fn pause(&self, d: Duration);
}

/// The wall clock (monotonic), for the CLI and `phoenix serve`.
#[derive(Debug)]
pub struct RealClock {
    origin: Instant,
}

impl RealClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        RealClock {
            origin: Instant::now(),
        }
    }
}

impl Default for RealClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for RealClock {
    fn now_ms(&self) -> Millis {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn wait_for(&self, at: Option<Millis>, _busy: bool) -> Option<Duration> {
        at.map(|at| Duration::from_millis(at.saturating_sub(self.now_ms())))
    }

    fn pause(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

type Scheduled = (Millis, Box<dyn FnOnce() + Send>);

/// Simulated time: it stands still while provider calls are in flight and jumps to the next
/// timer when the driver has nothing else to wait for, so a 10-minute canary window takes no
/// real time and every run sees the same sequence of instants. Tests can schedule actions at
/// a virtual instant ([`VirtualClock::after`]), e.g. a canary turning unhealthy mid-window.
#[derive(Default)]
pub struct VirtualClock {
    inner: Mutex<VirtualInner>,
}

#[derive(Default)]
struct VirtualInner {
    now: Millis,
    scheduled: Vec<Scheduled>,
}

impl std::fmt::Debug for VirtualClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VirtualClock({} ms)", self.now_ms())
    }
}

impl VirtualClock {
    /// A clock at 0 ms.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` once virtual time has passed `d` from now (when the driver advances past it).
    pub fn after(&self, d: Duration, f: impl FnOnce() + Send + 'static) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let at = inner
            .now
            .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        inner.scheduled.push((at, Box::new(f)));
    }

    /// Moves time forward to `at` (never back), running the actions scheduled up to it in
    /// their order.
    pub fn advance_to(&self, at: Millis) {
        // Bounded: each round removes one scheduled action; the actions run unlocked, since
        // they may touch what the engine is reading.
        loop {
            let next = {
                let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
                let due = inner
                    .scheduled
                    .iter()
                    .enumerate()
                    .filter(|(_, (t, _))| *t <= at)
                    .min_by_key(|(_, (t, _))| *t)
                    .map(|(i, _)| i);
                match due {
                    Some(i) => {
                        let (t, f) = inner.scheduled.remove(i);
                        inner.now = inner.now.max(t);
                        Some(f)
                    }
                    None => {
                        inner.now = inner.now.max(at);
                        None
                    }
                }
            };
            match next {
                Some(f) => f(),
                None => return,
            }
        }
    }
}

impl Clock for VirtualClock {
    fn now_ms(&self) -> Millis {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).now
    }

    fn wait_for(&self, at: Option<Millis>, busy: bool) -> Option<Duration> {
        match at {
            // Time stands still while the provider works: its reply comes first.
            _ if busy => None,
            Some(at) => {
                self.advance_to(at);
                Some(Duration::ZERO)
            }
            None => None,
        }
    }

    fn pause(&self, _d: Duration) {}
}

/// The clock an apply runs on ([`crate::ApplyOptions::clock`]): the real one by default.
#[derive(Clone)]
pub struct ClockRef(pub Arc<dyn Clock>);

impl Default for ClockRef {
    fn default() -> Self {
        ClockRef(Arc::new(RealClock::new()))
    }
}

impl std::fmt::Debug for ClockRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_time_jumps_to_the_timer_only_when_idle_and_runs_scheduled_actions() {
        let c = VirtualClock::new();
        let hit = Arc::new(Mutex::new(Vec::new()));
        let h = hit.clone();
        c.after(Duration::from_millis(30), move || {
            h.lock().unwrap().push(30)
        });
        assert_eq!(c.wait_for(Some(100), true), None);
        assert_eq!(c.now_ms(), 0);
        assert_eq!(c.wait_for(Some(100), false), Some(Duration::ZERO));
        assert_eq!(c.now_ms(), 100);
        assert_eq!(*hit.lock().unwrap(), [30]);
        c.advance_to(50);
        assert_eq!(c.now_ms(), 100, "time never goes back");
    }
}
