//! The one error type of the engine.

use phoenix_provider_api::ProviderError;
use phoenix_state::{LockHolder, StateError};

/// Why an engine operation could not be carried out. A failed health gate is not an error: it
/// is an [`crate::ApplyOutcome`] with a report.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The desired state cannot be deployed as specified.
    #[error("cannot deploy this fleet:\n  {}", problems.join("\n  "))]
    InvalidDesired {
        /// Every problem found.
        problems: Vec<String>,
    },
    /// Another apply holds the fleet's deploy lock.
    #[error("fleet {fleet} is being changed by {holder}; try again when it is done")]
    Locked {
        /// The fleet.
        fleet: String,
        /// Who holds the lock.
        holder: Box<LockHolder>,
    },
    /// The deploy lock was taken over while applying; nothing more was written.
    #[error("lost the deploy lock on fleet {fleet}: {reason}")]
    LockLost {
        /// The fleet.
        fleet: String,
        /// What the store said.
        reason: String,
    },
    /// Units of the fleet run (or may run) on endpoints this engine's provider cannot observe:
    /// another operator's agent sharing the state store, say. Acting would start them a second
    /// time, so nothing was changed.
    #[error(
        "fleet {fleet} has units on {}, which this phoenix cannot observe (it reaches {here}); \
         nothing was changed. Run this command where they run{}, or destroy them from there first",
        elsewhere.iter().map(|(endpoint, units)| format!("{endpoint} ({})", summarise(units))).collect::<Vec<_>>().join(", "),
        local_hint(elsewhere)
    )]
    UnitsElsewhere {
        /// The fleet.
        fleet: String,
        /// The endpoint this engine's provider reaches.
        here: String,
        /// Each other endpoint with the units recorded (or in flight) there.
        elsewhere: Vec<(String, Vec<String>)>,
    },
    /// A state store call failed. Transparent: the store's message names the step and its
    /// `source()` the cause, so that a printed chain states each once (with a prefix here the
    /// chain read "state store: cannot open X: cannot open X: ...").
    #[error(transparent)]
    State(#[from] StateError),
    /// A provider call failed. Transparent for the same reason; the provider's message names
    /// the provider (`local provider unavailable: ...`).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The revision asked for does not exist or cannot be applied again.
    #[error("{0}")]
    Revision(String),
    /// `rollback --to` names a revision the fleet does not have.
    #[error(
        "fleet {fleet} has no revision r{revision} ({}); see `phoenix history`",
        known_text(known)
    )]
    NoSuchRevision {
        /// The fleet.
        fleet: String,
        /// The revision asked for.
        revision: u64,
        /// The revisions it has.
        known: Vec<u64>,
    },
    /// `rollback --to` names a revision that was not applied (it failed, was rolled back, or is
    /// pending): returning to it would most likely fail the same way.
    #[error(
        "revision r{revision} of fleet {fleet} was not applied (its outcome: {outcome}), so \
         rolling back to it would most likely fail the same way; applied revisions: {}. Roll back \
         to one of those, or pass --force to try r{revision} again",
        revision_list(applied)
    )]
    RollbackToUnapplied {
        /// The fleet.
        fleet: String,
        /// The revision asked for.
        revision: u64,
        /// How it ended, in words.
        outcome: String,
        /// The revisions that were applied, oldest first.
        applied: Vec<u64>,
    },
    /// `rollback` without `--to`, and there is no applied revision before the current one.
    #[error(
        "fleet {fleet} has no earlier applied revision to roll back to (applied: {}); see \
         `phoenix history`",
        revision_list(applied)
    )]
    NoEarlierRevision {
        /// The fleet.
        fleet: String,
        /// The revisions that were applied, oldest first.
        applied: Vec<u64>,
    },
    /// The revision rolled back to was applied with `--target`/`--exclude` services that its
    /// spec no longer has; rolling back the whole fleet instead would touch what it never did.
    #[error(
        "revision r{revision} was applied with --target/--exclude {}, which no longer resolve in \
         its spec; refusing to roll the whole fleet back instead. Roll back to another \
         revision, or apply the spec you want",
        missing.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
    )]
    RollbackTargetsGone {
        /// The revision rolled back to.
        revision: u64,
        /// The services that no longer resolve.
        missing: Vec<String>,
    },
}

/// Why one step of a rollout (a provider call or a state write made by the executor's driver)
/// failed. The rollout machine turns it into a failure reason for people; the driver's retry
/// policy asks [`ExecError::is_retryable`] whether trying the same call again may succeed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The provider refused or failed a call. Transparent: its message names the unit.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// A state write or read failed (a lost lease included).
    #[error(transparent)]
    State(#[from] StateError),
    /// Listing the units to fill in a unit's addresses failed.
    #[error("cannot list units to fill in addresses: {source}")]
    ListForAddresses {
        /// The provider's error.
        source: ProviderError,
    },
    /// Listing the units to find one failed.
    #[error("cannot list units: {source}")]
    List {
        /// The provider's error.
        source: ProviderError,
    },
    /// A unit's address references cannot be filled in from the units that run.
    #[error(transparent)]
    Addresses(#[from] crate::address::Unfillable),
    /// The unit to reload no longer exists.
    #[error("the unit to reload is gone")]
    UnitGone {
        /// The unit.
        unit: String,
    },
    /// The store recorded an intent but returned no id for it.
    #[error("no intent id")]
    NoIntentId {
        /// The unit the intent is for.
        unit: String,
    },
}

impl ExecError {
    /// Whether the same call may succeed when tried again: a provider that is unavailable or
    /// busy, a store whose connection failed. A bad spec, a vanished unit, a lost lease are
    /// fatal.
    pub fn is_retryable(&self) -> bool {
        match self {
            ExecError::Provider(e)
            | ExecError::ListForAddresses { source: e }
            | ExecError::List { source: e } => e.is_retryable(),
            ExecError::State(e) => !self.is_lock_lost() && e.is_retryable(),
            ExecError::Addresses(_) | ExecError::UnitGone { .. } | ExecError::NoIntentId { .. } => {
                false
            }
        }
    }

    /// Whether retrying is pointless (the opposite of [`ExecError::is_retryable`]).
    pub fn is_fatal(&self) -> bool {
        !self.is_retryable()
    }

    /// Whether the deploy lock's lease was lost: the run must stop writing.
    pub fn is_lock_lost(&self) -> bool {
        matches!(self, ExecError::State(StateError::LockLost { .. }))
    }

    /// The message with every cause, for failure reasons and audit records.
    pub fn text(&self) -> String {
        chain_text(self)
    }
}

/// `r1, r2, r5`, or `none`.
fn revision_list(revisions: &[u64]) -> String {
    if revisions.is_empty() {
        return "none".into();
    }
    revisions
        .iter()
        .map(|n| format!("r{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `it has r1 to r5`, or `it has no revision`.
fn known_text(known: &[u64]) -> String {
    match (known.iter().min(), known.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => format!("it has r{lo}"),
        (Some(lo), Some(hi)) => format!("it has r{lo} to r{hi}"),
        _ => "it has no revision yet".into(),
    }
}

/// `a, b, c and 7 more`.
fn summarise(units: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut text = units
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if units.len() > SHOWN {
        text.push_str(&format!(" and {} more", units.len() - SHOWN));
    }
    text
}

/// For a local endpoint, how to get there: the host and the state dir.
fn local_hint(elsewhere: &[(String, Vec<String>)]) -> String {
    elsewhere
        .iter()
        .find_map(|(endpoint, _)| {
            let rest = endpoint.strip_prefix("local://")?;
            let (host, dir) = rest.split_once('/')?;
            Some(format!(" (on host {host}: --state-dir /{dir})"))
        })
        .unwrap_or_default()
}

/// `e`'s message followed by each of its sources', joined with `: ` — for the places that
/// keep an error as text (failure reasons, audit records), where `to_string()` alone would
/// drop the cause of an error that reports it through `source()`.
pub(crate) fn chain_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages of `e` and its sources, outermost first.
    fn chain(e: &dyn std::error::Error) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut next = e.source();
        while let Some(cause) = next {
            out.push(cause.to_string());
            next = cause.source();
        }
        out
    }

    /// Regression: "provider: cannot start unit `c-0@r3`: ...: cannot start unit `c-0@r3`:
    /// ..." — a wrapper variant printed its source and also returned it from `source()`.
    #[test]
    fn wrapped_errors_state_each_cause_once() {
        let provider = EngineError::from(ProviderError::Spawn {
            unit: "c-0@r3".into(),
            reason: "`nope`: No such file or directory".into(),
        });
        let state = EngineError::from(StateError::RevisionNotFound {
            fleet: "f".into(),
            revision: phoenix_state::RevisionNumber(3),
        });
        for e in [provider, state] {
            let msgs = chain(&e);
            for pair in msgs.windows(2) {
                assert!(
                    !pair[0].contains(&pair[1]),
                    "`{}` repeats its cause `{}`",
                    pair[0],
                    pair[1]
                );
            }
            let all = msgs.join(": ");
            assert!(all.matches("c-0@r3").count() <= 1, "{all}");
        }
    }
}
