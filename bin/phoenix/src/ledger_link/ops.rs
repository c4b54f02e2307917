//! What the ledger must be told, computed without I/O: a record of the fleet's audit chain as
//! the ledger's `audit` operation, and the `provisioning` transitions that bring each
//! instance's resource on the ledger to what the state store says of it.

use phoenix_ledger_types::crypto::Hash;
use phoenix_ledger_types::exec::ResourceState;
use phoenix_ledger_types::tx::{self, AuditRecord, Outcome, ProvOp};
use phoenix_state::{DesiredState, InstanceState, ObservedState};
use std::collections::{BTreeMap, BTreeSet};

/// The ledger's form of one record of a fleet's audit chain.
///
/// The local record's hash covers every field of the record, so the ledger's copy is checked
/// against it by hash; the fields the ledger keeps beside it (step, outcome, detail) are for
/// queries and are cut to the ledger's limits.
///
/// # Errors
/// A fleet name the ledger cannot address, or a record hash that is not 32 bytes of hex (a
/// record this version did not write).
pub(crate) fn audit_op(record: &phoenix_audit::AuditRecord) -> Result<AuditRecord, String> {
    let entry = &record.entry;
    if !tx::is_valid_fleet(&entry.fleet) {
        return Err(format!(
            "fleet name `{}` cannot be recorded on the ledger (1 to {} characters of A-Z a-z 0-9 . _ ~ -)",
            entry.fleet,
            tx::MAX_ID
        ));
    }
    let hash = Hash::from_hex(&record.hash).ok_or_else(|| {
        format!(
            "audit record {} of fleet {} has a hash that is not 32 bytes of hex",
            record.seq, entry.fleet
        )
    })?;
    let plan_hash = entry
        .plan_hash
        .as_deref()
        .and_then(Hash::from_hex)
        .unwrap_or(Hash::ZERO);
    let (outcome, reason) = match &entry.outcome {
        phoenix_audit::AuditOutcome::Ok if entry.step.ends_with(".start") => {
            (Outcome::Started, None)
        }
        phoenix_audit::AuditOutcome::Ok if entry.step.starts_with("rollback") => {
            (Outcome::RolledBack, None)
        }
        phoenix_audit::AuditOutcome::Ok => (Outcome::Succeeded, None),
        phoenix_audit::AuditOutcome::Failed { reason } => (Outcome::Failed, Some(reason.clone())),
        // The ledger knows four outcomes; the detail says which of the others it was.
        phoenix_audit::AuditOutcome::Skipped { reason } => {
            (Outcome::Failed, Some(format!("skipped: {reason}")))
        }
        phoenix_audit::AuditOutcome::Cancelled { reason } => {
            (Outcome::Failed, Some(format!("cancelled: {reason}")))
        }
    };
    let mut detail = serde_json::Map::new();
    if let Some(r) = reason {
        detail.insert("reason".into(), r.into());
    }
    if !entry.detail.is_null() {
        detail.insert("detail".into(), entry.detail.clone());
    }
    let detail = if detail.is_empty() {
        String::new()
    } else {
        serde_json::Value::Object(detail).to_string()
    };
    Ok(AuditRecord {
        actor: cut(&entry.actor, tx::MAX_ID),
        fleet: entry.fleet.clone(),
        seq: record.seq,
        hash,
        revision: entry.revision.unwrap_or(0),
        plan_hash,
        step: cut(&entry.step, tx::MAX_ID),
        outcome,
        detail: cut(&detail, tx::MAX_TEXT),
    })
}

/// `s` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The resource id of an instance on the ledger: `<fleet>/<instance>`.
pub(crate) fn resource_id(fleet: &str, instance: &str) -> String {
    format!("{fleet}/{instance}")
}

/// Where an instance's resource should be on the ledger, from the state store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Wanted {
    /// It has units that have not passed their health gate yet.
    Requested,
    /// A unit of it runs and passed its health gate.
    Provisioned,
    /// It is gone.
    Released,
}

/// An instance's resource as the state store describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InstanceView {
    /// What it should be on the ledger.
    pub wanted: Wanted,
    /// Its site.
    pub site: String,
    /// Its service (the resource's kind).
    pub service: String,
    /// Hash of what it runs (service, instance, site, host, revision).
    pub spec_hash: Hash,
}

/// The view of every instance named in `instances` (the fleet's stored units) or in `known`
/// (instances named anywhere in the fleet's audit chain, so that removed ones are released).
pub(crate) fn instance_views(
    instances: &[InstanceState],
    known: &BTreeSet<String>,
) -> BTreeMap<String, InstanceView> {
    let mut views: BTreeMap<String, InstanceView> = BTreeMap::new();
    for unit in instances {
        if unit.desired != DesiredState::Running {
            continue;
        }
        let wanted = if unit.observed == ObservedState::Running {
            Wanted::Provisioned
        } else {
            Wanted::Requested
        };
        let spec = serde_json::json!({
            "service": unit.service, "instance": unit.instance, "site": unit.site,
            "host": unit.host, "revision": unit.revision,
        });
        let view = InstanceView {
            wanted,
            site: unit.site.clone(),
            service: unit.service.clone(),
            spec_hash: Hash::of(&[b"phoenix/instance\n", spec.to_string().as_bytes()]),
        };
        match views.get(&unit.instance) {
            // A replacement in flight: the instance is provisioned while its old unit runs.
            Some(v) if v.wanted >= view.wanted => {}
            _ => {
                views.insert(unit.instance.clone(), view);
            }
        }
    }
    for name in known {
        views.entry(name.clone()).or_insert_with(|| InstanceView {
            wanted: Wanted::Released,
            site: String::new(),
            service: String::new(),
            spec_hash: Hash::ZERO,
        });
    }
    views
}

/// The instance a step of the audit chain names (`unit.start web-0@r3` names `web-0`).
pub(crate) fn instance_of_step(step: &str) -> Option<&str> {
    let unit = step
        .strip_prefix("unit.start ")
        .or_else(|| step.strip_prefix("unit.stop "))?;
    let (instance, _revision) = unit.rsplit_once('@')?;
    (!instance.is_empty()).then_some(instance)
}

/// Who signs a provisioning operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signer {
    /// The `--ledger-key` account (role `provisioner`).
    Provisioner,
    /// The `--ledger-verifier-key` account (role `verifier`).
    Verifier,
}

/// The operations, in order, that take a resource from `on_ledger` to `view.wanted`
/// (and to `verified` as well when `verify`). Going back is never needed: a resource whose
/// instance is being replaced stays provisioned.
pub(crate) fn transitions(
    id: &str,
    fleet: &str,
    view: &InstanceView,
    on_ledger: Option<ResourceState>,
    verify: bool,
) -> Vec<(Signer, ProvOp)> {
    use ResourceState as S;
    let request = || ProvOp::Request {
        id: id.to_owned(),
        tenant: fleet.to_owned(),
        site: view.site.clone(),
        kind: view.service.clone(),
        spec_hash: view.spec_hash,
    };
    let provision = || ProvOp::MarkProvisioned { id: id.to_owned() };
    let check = || ProvOp::Verify { id: id.to_owned() };
    let release = || ProvOp::Release { id: id.to_owned() };
    let p = Signer::Provisioner;
    let v = Signer::Verifier;
    let mut ops = match (on_ledger, view.wanted) {
        (None | Some(S::Released), Wanted::Requested) => vec![(p, request())],
        (None | Some(S::Released), Wanted::Provisioned) => {
            vec![(p, request()), (p, provision())]
        }
        (Some(S::Requested), Wanted::Provisioned) => vec![(p, provision())],
        (Some(S::Requested | S::Provisioned | S::Verified), Wanted::Released) => {
            vec![(p, release())]
        }
        _ => Vec::new(),
    };
    let provisioned_after = matches!(
        (on_ledger, view.wanted),
        (_, Wanted::Provisioned) if on_ledger != Some(S::Verified)
    );
    if verify && provisioned_after {
        ops.push((v, check()));
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use phoenix_audit::{AuditEntry, AuditOutcome};

    fn record(step: &str, outcome: AuditOutcome) -> phoenix_audit::AuditRecord {
        let at: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let mut entry = AuditEntry::new(at, "alice@h", "demo", step, outcome);
        entry.revision = Some(3);
        phoenix_audit::AuditRecord::chain(None, entry).unwrap()
    }

    #[test]
    fn a_record_keeps_its_seq_and_hash_and_says_how_it_went() {
        let r = record("apply.start", AuditOutcome::Ok);
        let op = audit_op(&r).unwrap();
        assert_eq!((op.seq, op.hash.to_hex()), (1, r.hash.clone()));
        assert_eq!((op.revision, op.outcome), (3, Outcome::Started));
        let failed = record(
            "gate web-0@r3",
            AuditOutcome::Failed {
                reason: "timeout".into(),
            },
        );
        let op = audit_op(&failed).unwrap();
        assert_eq!(op.outcome, Outcome::Failed);
        assert!(op.detail.contains("timeout"), "{}", op.detail);
        let skipped = record(
            "wave 2",
            AuditOutcome::Skipped {
                reason: "gate failed".into(),
            },
        );
        assert!(
            audit_op(&skipped)
                .unwrap()
                .detail
                .contains("skipped: gate failed")
        );
    }

    #[test]
    fn a_long_detail_is_cut_to_the_ledgers_limit_at_a_character_boundary() {
        let mut r = record("apply.start", AuditOutcome::Ok);
        r.entry.detail = serde_json::json!("é".repeat(3000));
        let op = audit_op(&r).unwrap();
        assert!(op.detail.len() <= tx::MAX_TEXT);
        assert!(op.detail.ends_with('…'));
    }

    #[test]
    fn a_fleet_the_ledger_cannot_address_is_refused_by_name() {
        let mut r = record("apply.start", AuditOutcome::Ok);
        r.entry.fleet = "a fleet/with spaces".into();
        assert!(audit_op(&r).unwrap_err().contains("a fleet/with spaces"));
    }

    #[test]
    fn steps_name_their_instance() {
        assert_eq!(instance_of_step("unit.start web-0@r3"), Some("web-0"));
        assert_eq!(instance_of_step("unit.stop db-1@r12"), Some("db-1"));
        assert_eq!(instance_of_step("gate web-0@r3"), None);
        assert_eq!(instance_of_step("unit.start @r3"), None);
        assert_eq!(instance_of_step("apply.start"), None);
    }

    fn view(wanted: Wanted) -> InstanceView {
        InstanceView {
            wanted,
            site: "core-1".into(),
            service: "web".into(),
            spec_hash: Hash::ZERO,
        }
    }

    fn names(ops: &[(Signer, ProvOp)]) -> Vec<&'static str> {
        ops.iter()
            .map(|(_, op)| match op {
                ProvOp::Request { .. } => "request",
                ProvOp::MarkProvisioned { .. } => "provisioned",
                ProvOp::Verify { .. } => "verify",
                ProvOp::Release { .. } => "release",
            })
            .collect()
    }

    #[test]
    fn transitions_take_a_resource_to_what_the_store_says_and_no_further() {
        use ResourceState as S;
        let t = |on, wanted, verify| {
            names(&transitions(
                "demo/web-0",
                "demo",
                &view(wanted),
                on,
                verify,
            ))
        };
        assert_eq!(
            t(None, Wanted::Provisioned, false),
            ["request", "provisioned"]
        );
        assert_eq!(t(None, Wanted::Requested, false), ["request"]);
        assert_eq!(t(None, Wanted::Released, false), Vec::<&str>::new());
        assert_eq!(
            t(Some(S::Requested), Wanted::Provisioned, false),
            ["provisioned"]
        );
        assert_eq!(
            t(Some(S::Provisioned), Wanted::Provisioned, false),
            Vec::<&str>::new()
        );
        assert_eq!(
            t(Some(S::Provisioned), Wanted::Requested, false),
            Vec::<&str>::new()
        );
        assert_eq!(
            t(Some(S::Provisioned), Wanted::Released, false),
            ["release"]
        );
        assert_eq!(
            t(Some(S::Released), Wanted::Released, false),
            Vec::<&str>::new()
        );
        assert_eq!(
            t(Some(S::Released), Wanted::Provisioned, false),
            ["request", "provisioned"]
        );
        assert_eq!(
            t(None, Wanted::Provisioned, true),
            ["request", "provisioned", "verify"]
        );
        assert_eq!(
            t(Some(S::Provisioned), Wanted::Provisioned, true),
            ["verify"]
        );
        assert_eq!(
            t(Some(S::Verified), Wanted::Provisioned, true),
            Vec::<&str>::new()
        );
    }
}
