//! The one health-wait: probe effects and a timer, for gates and canary windows alike.

use super::*;

/// How long a [`HealthWait`] lasts.
#[derive(Debug, Clone, Copy)]
pub(super) enum WaitKind {
    /// A gate: until a probe passes, at most until `deadline`.
    UntilHealthy { deadline: Millis },
    /// A window: every probe must pass until `end`.
    Throughout { end: Millis },
}

/// How a wait ended.
pub(super) enum WaitOut {
    /// The gate passed with this probe.
    Healthy(ProbeOutcome),
    /// The window passed after `probes` probes.
    Passed { probes: u32 },
    /// Unit `unit` (an index) failed: `detail`.
    Unhealthy { unit: usize, detail: String },
    /// The window was cut short by the run stopping.
    Aborted,
}

/// Probes units every interval until healthy or the timeout (a gate), or throughout a window
/// (canary analysis). A unit without a check is looked at once after [`NO_CHECK_DELAY_MS`]
/// (gate) or each interval (window): it passes when it runs.
pub(super) struct HealthWait {
    pub(super) units: Vec<UnitStatus>,
    pub(super) health: Option<Health>,
    pub(super) kind: WaitKind,
    pub(super) interval: Millis,
    pub(super) round_at: Millis,
    pub(super) pending: BTreeMap<EffectId, usize>,
    pub(super) results: Vec<Option<ProbeOutcome>>,
    pub(super) probes: u32,
    pub(super) timer: Option<TimerId>,
}

impl HealthWait {
    /// A health gate of one unit.
    pub(super) fn gate(
        unit: UnitStatus,
        health: Option<Health>,
        task: TaskId,
        cx: &mut Core,
    ) -> Self {
        let now = cx.now;
        let (deadline, interval) = match &health {
            Some(h) => (now.saturating_add(h.timeout_ms), h.interval_ms.max(10)),
            None => (now.saturating_add(NO_CHECK_DELAY_MS), NO_CHECK_DELAY_MS),
        };
        let mut w = HealthWait {
            units: vec![unit],
            health,
            kind: WaitKind::UntilHealthy { deadline },
            interval,
            round_at: now,
            pending: BTreeMap::new(),
            results: vec![None],
            probes: 0,
            timer: None,
        };
        if w.health.is_some() {
            w.round(task, cx);
        } else {
            w.timer = Some(cx.timer(task, deadline));
        }
        w
    }

    /// An analysis window of `ms` over `units`.
    pub(super) fn window(
        units: Vec<UnitStatus>,
        health: Option<Health>,
        ms: u64,
        task: TaskId,
        cx: &mut Core,
    ) -> Self {
        let interval = health.as_ref().map_or(500, |h| h.interval_ms).max(10);
        let n = units.len();
        let mut w = HealthWait {
            units,
            health,
            kind: WaitKind::Throughout {
                end: cx.now.saturating_add(ms),
            },
            interval,
            round_at: cx.now,
            pending: BTreeMap::new(),
            results: vec![None; n],
            probes: 0,
            timer: None,
        };
        w.round(task, cx);
        w
    }

    /// Probes every unit once.
    pub(super) fn round(&mut self, task: TaskId, cx: &mut Core) {
        self.round_at = cx.now;
        self.timer = None;
        for (i, u) in self.units.iter().enumerate() {
            self.results[i] = None;
            let (unit, health) = (u.clone(), self.health.clone());
            let id = cx.ask(task, |id| Effect::Probe { id, unit, health });
            self.pending.insert(id, i);
        }
    }

    pub(super) fn on_timer(
        &mut self,
        timer: TimerId,
        task: TaskId,
        cx: &mut Core,
    ) -> Option<WaitOut> {
        if self.timer == Some(timer) {
            self.round(task, cx);
        }
        None
    }

    pub(super) fn on_probe(
        &mut self,
        id: EffectId,
        outcome: ProbeOutcome,
        task: TaskId,
        cx: &mut Core,
    ) -> Option<WaitOut> {
        let i = self.pending.remove(&id)?;
        self.probes += 1;
        self.results[i] = Some(outcome);
        if !self.pending.is_empty() {
            return None;
        }
        let now = cx.now;
        match self.kind {
            WaitKind::UntilHealthy { deadline } => {
                let o = self.results[0].take()?;
                if o.healthy {
                    return Some(WaitOut::Healthy(o));
                }
                match &self.health {
                    None => Some(WaitOut::Unhealthy {
                        unit: 0,
                        detail: o.detail,
                    }),
                    Some(h) if now >= deadline => Some(WaitOut::Unhealthy {
                        unit: 0,
                        detail: format!("not healthy after {} ms: {}", h.timeout_ms, o.detail),
                    }),
                    Some(_) => {
                        let at = self.round_at.saturating_add(self.interval).min(deadline);
                        self.timer = Some(cx.timer(task, at.max(now)));
                        None
                    }
                }
            }
            WaitKind::Throughout { end } => {
                if let Some((unit, o)) = self
                    .results
                    .iter()
                    .enumerate()
                    .find_map(|(i, o)| o.as_ref().filter(|o| !o.healthy).map(|o| (i, o)))
                {
                    return Some(WaitOut::Unhealthy {
                        unit,
                        detail: o.detail.clone(),
                    });
                }
                if now >= end {
                    return Some(WaitOut::Passed {
                        probes: self.probes,
                    });
                }
                self.timer = Some(cx.timer(task, now.saturating_add(self.interval).min(end)));
                None
            }
        }
    }

    /// A gate runs to its end when the run stops (the unit has been started, and abandoning
    /// its gate left it running unverified while Ctrl-C promised to finish the steps in
    /// flight); a window is cut short.
    pub(super) fn on_stopping(&mut self) -> Option<WaitOut> {
        match self.kind {
            WaitKind::UntilHealthy { .. } => None,
            WaitKind::Throughout { .. } => Some(WaitOut::Aborted),
        }
    }

    pub(super) fn on(
        &mut self,
        ev: Ev,
        task: TaskId,
        cx: &mut Core,
        id: EffectId,
    ) -> Option<WaitOut> {
        match ev {
            Ev::Reply(Reply::Probed(o)) => self.on_probe(id, o, task, cx),
            Ev::Timer(t) => self.on_timer(t, task, cx),
            Ev::Stopping => self.on_stopping(),
            _ => None,
        }
    }
}
