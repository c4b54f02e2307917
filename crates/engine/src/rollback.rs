//! Which revision `phoenix rollback` returns to, and with what scope. Pure functions over the
//! fleet's revisions and the old revision's document, so that the rule lives in one place
//! (not in the CLI) and is tested without a store.

use crate::desired::{Desired, RevisionDoc, Scope};
use crate::error::EngineError;
use phoenix_state::{Revision, RevisionOutcome};

/// The revision to roll `fleet` back to: `to` if given, else the applied revision before the
/// current (latest applied) one. `revisions` are the fleet's, in any order.
///
/// A revision that was never applied (it failed, was rolled back, or is pending) is refused
/// unless `force`: returning to it would most likely fail the same way, and the message names
/// the revisions that were applied instead.
///
/// # Errors
/// [`EngineError::NoSuchRevision`], [`EngineError::RollbackToUnapplied`],
/// [`EngineError::NoEarlierRevision`].
pub fn rollback_target<'a>(
    fleet: &str,
    revisions: &'a [Revision],
    to: Option<u64>,
    force: bool,
) -> Result<&'a Revision, EngineError> {
    let mut sorted: Vec<&Revision> = revisions.iter().collect();
    sorted.sort_by_key(|r| r.number);
    let applied: Vec<u64> = sorted
        .iter()
        .filter(|r| r.outcome == RevisionOutcome::Applied)
        .map(|r| r.number.0)
        .collect();
    match to {
        Some(n) => {
            let target = sorted.iter().find(|r| r.number.0 == n).ok_or_else(|| {
                EngineError::NoSuchRevision {
                    fleet: fleet.into(),
                    revision: n,
                    known: sorted.iter().map(|r| r.number.0).collect(),
                }
            })?;
            if target.outcome != RevisionOutcome::Applied && !force {
                return Err(EngineError::RollbackToUnapplied {
                    fleet: fleet.into(),
                    revision: n,
                    outcome: outcome_text(&target.outcome),
                    applied,
                });
            }
            Ok(target)
        }
        None => match applied.as_slice() {
            [.., previous, _current] => Ok(sorted
                .iter()
                .find(|r| r.number.0 == *previous)
                .expect("listed as applied")),
            _ => Err(EngineError::NoEarlierRevision {
                fleet: fleet.into(),
                applied,
            }),
        },
    }
}

/// The scope a rollback to `revision` (whose document is `doc`, desired state `desired`)
/// runs in: the `--target`/`--exclude` it was applied with.
///
/// # Errors
/// [`EngineError::RollbackTargetsGone`] naming the services of `--target`/`--exclude` that
/// no longer resolve in that revision's spec: rolling the whole fleet back instead would
/// touch services the revision never changed.
pub fn rollback_scope(
    desired: &Desired,
    doc: &RevisionDoc,
    revision: u64,
) -> Result<Scope, EngineError> {
    let missing: Vec<String> = doc
        .targets
        .iter()
        .chain(&doc.excludes)
        .filter(|s| !desired.services.contains_key(*s))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(EngineError::RollbackTargetsGone { revision, missing });
    }
    Scope::new(desired, &doc.targets, &doc.excludes)
}

/// How a revision ended, in words.
fn outcome_text(o: &RevisionOutcome) -> String {
    match o {
        RevisionOutcome::Pending => "pending (interrupted, or still being applied)".into(),
        RevisionOutcome::Applied => "applied".into(),
        RevisionOutcome::Failed { reason } if reason.is_empty() => "failed".into(),
        RevisionOutcome::Failed { reason } => format!("failed: {reason}"),
        RevisionOutcome::RolledBack { to } => format!("rolled back to {to}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phoenix_state::RevisionNumber;

    fn rev(n: u64, outcome: RevisionOutcome) -> Revision {
        Revision {
            fleet: "demo".into(),
            number: RevisionNumber(n),
            spec_json: "{}".into(),
            placement_json: "[]".into(),
            plan_hash: String::new(),
            actor: "a@h".into(),
            created_at: jiff::Timestamp::UNIX_EPOCH,
            outcome,
            finished_at: None,
        }
    }

    fn history() -> Vec<Revision> {
        vec![
            rev(1, RevisionOutcome::Applied),
            rev(2, RevisionOutcome::Applied),
            rev(
                3,
                RevisionOutcome::RolledBack {
                    to: RevisionNumber(2),
                },
            ),
            rev(
                4,
                RevisionOutcome::Failed {
                    reason: "web-0: health gate failed".into(),
                },
            ),
            rev(5, RevisionOutcome::Applied),
        ]
    }

    #[test]
    fn default_is_the_applied_revision_before_the_current_one() {
        let h = history();
        assert_eq!(
            rollback_target("demo", &h, None, false).unwrap().number.0,
            2
        );
        let only = vec![rev(1, RevisionOutcome::Applied)];
        let err = rollback_target("demo", &only, None, false).unwrap_err();
        assert!(
            matches!(err, EngineError::NoEarlierRevision { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("applied: r1"), "{err}");
    }

    /// Regression: `rollback --to r3` where r3 had been rolled back retried it and failed
    /// again; it is refused, naming r3's outcome and the revisions that were applied.
    #[test]
    fn a_revision_that_was_not_applied_is_refused_unless_forced() {
        let h = history();
        for (n, outcome) in [(3, "rolled back to r2"), (4, "failed: web-0: health gate")] {
            let err = rollback_target("demo", &h, Some(n), false).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, EngineError::RollbackToUnapplied { revision, .. } if revision == n),
                "{text}"
            );
            assert!(text.contains(outcome), "{text}");
            assert!(text.contains("r1, r2, r5"), "{text}");
            assert!(text.contains("--force"), "{text}");
            assert_eq!(
                rollback_target("demo", &h, Some(n), true).unwrap().number.0,
                n
            );
        }
        assert_eq!(
            rollback_target("demo", &h, Some(1), false)
                .unwrap()
                .number
                .0,
            1
        );
    }

    #[test]
    fn an_unknown_revision_names_the_known_ones() {
        let err = rollback_target("demo", &history(), Some(9), false).unwrap_err();
        assert!(matches!(
            err,
            EngineError::NoSuchRevision { revision: 9, .. }
        ));
        assert!(err.to_string().contains("r1 to r5"), "{err}");
    }

    /// Regression: a rollback to a revision applied with `--target` silently widened to the
    /// whole fleet when the targets no longer resolved.
    #[test]
    fn targets_that_no_longer_resolve_are_named_not_widened() {
        let yaml = "phoenix: 1\nname: demo\nsites: [{name: l, tier: core, capacity: {cpu: 8, memory: 8Gi, storage: 10G}}]\n\
                    services: [{name: web, command: [run], health: {command: ['true']}}]\n";
        let fleet = phoenix_spec::parse_sources(&[("t.yaml".into(), yaml.into())], None).unwrap();
        let desired = Desired::new(&fleet, &phoenix_plan::plan(&fleet)).unwrap();
        let mut doc = RevisionDoc::new(crate::RevisionKind::Apply, &desired, vec![], None);
        doc.targets = vec!["web".into()];
        let scope = rollback_scope(&desired, &doc, 3).unwrap();
        assert!(!scope.is_all() && scope.contains("web"));
        doc.targets = vec!["web".into(), "api".into()];
        doc.excludes = vec!["db".into()];
        let err = rollback_scope(&desired, &doc, 3).unwrap_err();
        assert!(
            matches!(&err, EngineError::RollbackTargetsGone { missing, .. } if missing == &["api", "db"]),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("`api`, `db`") && text.contains("r3"),
            "{text}"
        );
    }
}
