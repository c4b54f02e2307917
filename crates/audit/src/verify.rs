//! Verification of a fleet's audit chain as the state store holds it: hashes, links,
//! signatures, who was allowed to sign when, the store's key list, and the anchor. Pure: it
//! reads nothing but its arguments.

use std::collections::BTreeMap;
use std::fmt;

use phoenix_state::{AuditKey, AuditRow};
use serde::Serialize;
use serde_json::Value;

use crate::chain::{GENESIS_HASH, record_hash};
use crate::key::signature_verifies;
use crate::{AuditRecord, ChainHead};

/// The step of a record that allows a key to sign the chain; its `detail.public_key` names
/// the key. The first signed record of every chain is one, signed by the key it allows.
pub const STEP_KEY_ALLOW: &str = "audit.key.allow";
/// The step of a record that revokes a key; its `detail.public_key` names the key.
pub const STEP_KEY_REVOKE: &str = "audit.key.revoke";

/// What verifying one fleet's chain found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// The fleet.
    pub fleet: String,
    /// How many records the chain holds.
    pub records: u64,
    /// Its last record.
    pub head: Option<ChainHead>,
    /// The anchor it was checked against.
    pub anchor: Option<ChainHead>,
    /// Records after the anchor: written, but not yet confirmed by an anchor (a crash or an
    /// interrupted command can leave them). A warning, not a failure.
    pub unanchored: Vec<u64>,
    /// Unsigned records imported from an old `audit.jsonl`, vouched for by the signed record
    /// that follows them. A note, not a failure.
    pub unsigned_imported: Vec<u64>,
    /// Every problem, in chain order. Empty when the chain verifies.
    pub problems: Vec<RecordProblem>,
}

impl ChainReport {
    /// Whether every hash, link and signature verifies and the chain is intact up to its anchor.
    pub fn verified(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One problem, at the record it was found in (`None` for the store's key list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordProblem {
    /// The record's seq.
    pub seq: Option<u64>,
    /// What is wrong, for people.
    pub message: String,
}

impl fmt::Display for RecordProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "record {seq}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

/// Verifies `fleet`'s chain (`rows` by seq, as [`phoenix_state::StateStore::audit_records`]
/// returns them) against the store's key list and the chain's anchor.
///
/// # What it proves
/// Every record is intact (its hash), in its place (seq and link), and signed by a key that a
/// signed record earlier in the chain allowed and had not revoked; the first signed record
/// allows its own key (trust on first use) and vouches for any unsigned records imported
/// before it; the store's key list says what the chain says; the chain reaches its anchor and
/// the anchored record is unchanged.
///
/// # What it cannot prove
/// Who holds a key, nor that the store kept every record after the anchor or the anchor itself:
/// someone who can write the store and holds an allowed key can append signed records; someone
/// who can write the store can remove the tail *together with* the anchor, or a whole chain.
/// Those need an anchor outside the store (the ledger).
pub fn verify_chain(
    fleet: &str,
    rows: &[AuditRow],
    keys: &[AuditKey],
    anchor: Option<&ChainHead>,
) -> ChainReport {
    let mut problems = Vec::new();
    let mut problem = |seq: Option<u64>, message: String| {
        problems.push(RecordProblem { seq, message });
    };
    // key -> the seq that allowed it, as the chain itself says.
    let mut allowed: BTreeMap<String, u64> = BTreeMap::new();
    let mut ever_signed = false;
    let mut imported_prefix: Vec<(u64, String)> = Vec::new();
    let mut unsigned_imported = Vec::new();
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut expected_seq = 1;
    let mut hashes: BTreeMap<u64, String> = BTreeMap::new();
    let mut last: Option<ChainHead> = None;

    for row in rows {
        let here = Some(row.seq);
        if row.seq > expected_seq {
            problem(
                here,
                format!(
                    "records {expected_seq}-{} before it are missing: removed",
                    row.seq - 1
                ),
            );
        } else if row.seq < expected_seq {
            problem(here, "out of order: records were reordered".to_owned());
        }
        expected_seq = row.seq + 1;
        let value: Value = match serde_json::from_str(&row.record_json) {
            Ok(v) => v,
            Err(e) => {
                problem(here, format!("not a JSON record ({e})"));
                continue;
            }
        };
        let record: AuditRecord = match serde_json::from_value(value.clone()) {
            Ok(r) => r,
            Err(e) => {
                problem(here, format!("malformed record ({e})"));
                continue;
            }
        };
        hashes.insert(row.seq, record.hash.clone());
        last = Some(ChainHead {
            seq: row.seq,
            hash: record.hash.clone(),
        });
        if record.seq != row.seq {
            problem(
                here,
                format!("the record says it is record {}: it was moved", record.seq),
            );
        }
        if record.entry.fleet != fleet {
            problem(
                here,
                format!(
                    "the record is of fleet {}, not {fleet}: it was moved here",
                    record.entry.fleet
                ),
            );
        }
        if record.prev_hash != prev_hash {
            problem(
                here,
                format!(
                    "its prev_hash {} is not the previous record's hash {}: a record before it was removed, inserted or replaced",
                    short(&record.prev_hash),
                    short(&prev_hash)
                ),
            );
        }
        let computed = record_hash(&value);
        if computed != record.hash || row.hash != record.hash {
            problem(
                here,
                "edited: its content does not match its hash".to_owned(),
            );
        }
        prev_hash = record.hash.clone();

        match (&record.signer, &record.signature) {
            (None, _) => {
                if record.imported.is_some() && !ever_signed {
                    imported_prefix.push((row.seq, record.hash.clone()));
                    unsigned_imported.push(row.seq);
                } else {
                    problem(
                        here,
                        "unsigned: only records imported from an old audit.jsonl, before the first signed record, may be unsigned".to_owned(),
                    );
                }
            }
            (Some(signer), signature) => {
                let sig_ok = signature
                    .as_deref()
                    .is_some_and(|s| signature_verifies(signer, &record.hash, s));
                if !sig_ok {
                    problem(
                        here,
                        format!(
                            "its signature does not verify with key {}: forged, or edited after signing",
                            short(signer)
                        ),
                    );
                }
                let allows = (record.entry.step == STEP_KEY_ALLOW)
                    .then(|| detail_key(&record.entry.detail))
                    .flatten();
                if !ever_signed {
                    // The first signed record must allow its own key: trust on first use.
                    if allows.as_deref() != Some(signer.as_str()) {
                        problem(
                            here,
                            format!(
                                "signed by key {}, which no earlier record allowed (the chain's first signed record must allow its own key)",
                                short(signer)
                            ),
                        );
                    }
                    check_import(&record, &imported_prefix, &mut problem);
                } else if !allowed.contains_key(signer) {
                    problem(
                        here,
                        format!(
                            "signed by key {}, which is not allowed to sign this chain at this point",
                            short(signer)
                        ),
                    );
                }
                ever_signed = true;
                if sig_ok {
                    if let Some(key) = allows {
                        allowed.insert(key, row.seq);
                    }
                    if record.entry.step == STEP_KEY_REVOKE
                        && let Some(key) = detail_key(&record.entry.detail)
                    {
                        allowed.remove(&key);
                    }
                }
            }
        }
    }

    // The store's key list must say what the chain says.
    let listed: BTreeMap<&str, &AuditKey> = keys
        .iter()
        .filter(|k| k.revoked_seq.is_none())
        .map(|k| (k.public_key.as_str(), k))
        .collect();
    for (key, k) in &listed {
        match allowed.get(*key) {
            Some(seq) if *seq == k.allowed_seq => {}
            _ => problem(
                None,
                format!(
                    "the store allows key {} ({}) from record {}, but no record of the chain allows it there: the key list was edited",
                    short(key),
                    k.name,
                    k.allowed_seq
                ),
            ),
        }
    }
    for (key, seq) in &allowed {
        if !listed.contains_key(key.as_str()) {
            problem(
                None,
                format!(
                    "record {seq} allows key {} but the store does not list it as allowed: the key list was edited",
                    short(key)
                ),
            );
        }
    }

    let mut unanchored = Vec::new();
    match anchor {
        Some(a) => {
            let last_seq = last.as_ref().map_or(0, |h| h.seq);
            if a.seq > last_seq {
                problem(
                    Some(a.seq),
                    format!(
                        "the chain ends at record {last_seq} but record {} was anchored: records were removed from the end",
                        a.seq
                    ),
                );
            } else if let Some(found) = hashes.get(&a.seq)
                && *found != a.hash
            {
                problem(
                    Some(a.seq),
                    format!(
                        "hash {} differs from the anchored {}: the chain was rewritten",
                        short(found),
                        short(&a.hash)
                    ),
                );
            }
            unanchored.extend(rows.iter().map(|r| r.seq).filter(|s| *s > a.seq));
        }
        None => unanchored.extend(rows.iter().map(|r| r.seq)),
    }

    ChainReport {
        fleet: fleet.to_owned(),
        records: rows.len() as u64,
        head: last,
        anchor: anchor.cloned(),
        unanchored,
        unsigned_imported,
        problems,
    }
}

/// The first signed record vouches for the unsigned imported records before it: it names how
/// many there are and the last one's hash.
fn check_import(
    record: &AuditRecord,
    prefix: &[(u64, String)],
    problem: &mut impl FnMut(Option<u64>, String),
) {
    let vouched = record.entry.detail.get("imported");
    let count = vouched
        .and_then(|v| v.get("records"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let head = vouched.and_then(|v| v.get("head")).and_then(Value::as_str);
    let actual_head = prefix.last().map(|(_, h)| h.as_str());
    if count != prefix.len() as u64 || head != actual_head {
        problem(
            Some(record.seq),
            format!(
                "it vouches for {count} imported record(s) ending at {}, but the chain holds {} ending at {}",
                head.map_or("-".into(), short),
                prefix.len(),
                actual_head.map_or("-".into(), short)
            ),
        );
    }
}

fn detail_key(detail: &Value) -> Option<String> {
    detail
        .get("public_key")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn short(hash: &str) -> String {
    hash.chars().take(16).collect()
}
