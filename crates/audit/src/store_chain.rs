//! [`StoreChain`]: each fleet's signed audit chain in the state store, and the import of an
//! old `audit.jsonl` into it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jiff::Timestamp;
use phoenix_state::{AuditKeyChange, AuditRow, StateError, StateStore};
use serde_json::json;

use crate::key::OperatorKey;
use crate::local::verify_file;
use crate::verify::{STEP_KEY_ALLOW, STEP_KEY_REVOKE};
use crate::{AuditEntry, AuditError, AuditOutcome, AuditRecord, ChainHead, LocalLog, Recorder};

/// How often an append is built again on a head that moved under it before giving up. Each
/// retry means another writer appended in between; more than a handful means something spins.
const APPEND_ATTEMPTS: usize = 16;

/// Whether the operator's key may sign a fleet's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// The key is allowed.
    Allowed,
    /// The chain has no allowed key yet: the first record this key writes allows it.
    FirstSigner,
    /// Other keys are allowed, this one is not (or was revoked).
    NotAllowed {
        /// The names of the keys that are allowed, for the message.
        allowed: Vec<String>,
    },
}

/// Records each entry in its fleet's chain in the state store, signed by the operator's key.
///
/// # Guarantees
/// - A record is durable (committed) when [`Recorder::record`] returns `Ok`.
/// - Concurrent writers (several operators sharing a PostgreSQL store) never fork a chain:
///   each append names its predecessor and the store refuses it if another came first; the
///   record is then built again on the new head.
/// - The first record of a chain allows the key that signs it (`audit.key.allow`); a key that
///   a chain does not allow cannot record in it ([`AuditError::KeyNotAllowed`]).
pub struct StoreChain {
    store: Arc<dyn StateStore>,
    key: OperatorKey,
}

impl std::fmt::Debug for StoreChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreChain")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl StoreChain {
    /// Records into `store`, signing with `key`.
    pub fn new(store: Arc<dyn StateStore>, key: OperatorKey) -> Self {
        Self { store, key }
    }

    /// The signing key.
    pub fn key(&self) -> &OperatorKey {
        &self.key
    }

    /// Whether this key may sign `fleet`'s chain. Call it before changing anything, so that an
    /// operator whose key is not allowed is refused up front rather than left with a change that
    /// is not in the history.
    ///
    /// # Errors
    /// [`AuditError::Store`].
    pub fn standing(&self, fleet: &str) -> Result<Standing, AuditError> {
        let keys = self.store.audit_keys(fleet).map_err(store_error)?;
        let live: Vec<_> = keys.iter().filter(|k| k.revoked_seq.is_none()).collect();
        let me = self.key.public_hex();
        Ok(if live.iter().any(|k| k.public_key == me) {
            Standing::Allowed
        } else if live.is_empty() {
            Standing::FirstSigner
        } else {
            Standing::NotAllowed {
                allowed: live
                    .iter()
                    .map(|k| {
                        format!(
                            "{} ({})",
                            k.name,
                            &k.public_key[..k.public_key.len().min(16)]
                        )
                    })
                    .collect(),
            }
        })
    }

    /// Allows `public_key` (named `name`) to sign `fleet`'s chain, by a record signed with this
    /// key (which must be allowed itself, or be the chain's first signer).
    ///
    /// # Errors
    /// [`AuditError::KeyNotAllowed`], [`AuditError::Store`].
    pub fn allow_key(
        &self,
        at: Timestamp,
        actor: &str,
        fleet: &str,
        public_key: &str,
        name: &str,
    ) -> Result<AuditRecord, AuditError> {
        self.ensure_allowed(fleet, at, actor)?;
        let mut entry = AuditEntry::new(at, actor, fleet, STEP_KEY_ALLOW, AuditOutcome::Ok);
        entry.detail = json!({ "public_key": public_key, "name": name });
        self.append(
            entry,
            Some(AuditKeyChange::Allow {
                public_key: public_key.to_owned(),
                name: name.to_owned(),
            }),
        )
    }

    /// Revokes `public_key`: records it signs after this one no longer verify.
    ///
    /// # Errors
    /// [`AuditError::KeyNotAllowed`], [`AuditError::Store`].
    pub fn revoke_key(
        &self,
        at: Timestamp,
        actor: &str,
        fleet: &str,
        public_key: &str,
    ) -> Result<AuditRecord, AuditError> {
        self.ensure_allowed(fleet, at, actor)?;
        let mut entry = AuditEntry::new(at, actor, fleet, STEP_KEY_REVOKE, AuditOutcome::Ok);
        entry.detail = json!({ "public_key": public_key });
        self.append(
            entry,
            Some(AuditKeyChange::Revoke {
                public_key: public_key.to_owned(),
            }),
        )
    }

    /// Makes sure this key may sign `fleet`'s chain, allowing it with the chain's first record
    /// when the chain has no key yet.
    fn ensure_allowed(&self, fleet: &str, at: Timestamp, actor: &str) -> Result<(), AuditError> {
        match self.standing(fleet)? {
            Standing::Allowed => Ok(()),
            Standing::FirstSigner => self.allow_self(fleet, at, actor, None).map(drop),
            Standing::NotAllowed { allowed } => Err(AuditError::KeyNotAllowed {
                fleet: fleet.to_owned(),
                public_key: self.key.public_hex(),
                key_path: self.key.path().to_owned(),
                allowed,
            }),
        }
    }

    /// The first signed record of a chain: this key allows itself, and vouches for the unsigned
    /// records imported before it, if any.
    fn allow_self(
        &self,
        fleet: &str,
        at: Timestamp,
        actor: &str,
        imported: Option<(u64, &str)>,
    ) -> Result<AuditRecord, AuditError> {
        let me = self.key.public_hex();
        let mut entry = AuditEntry::new(at, actor, fleet, STEP_KEY_ALLOW, AuditOutcome::Ok);
        entry.detail = json!({ "public_key": me, "name": actor, "first_signer": true });
        if let Some((records, head)) = imported {
            entry.detail["imported"] = json!({ "records": records, "head": head });
        }
        self.append(
            entry,
            Some(AuditKeyChange::Allow {
                public_key: me,
                name: actor.to_owned(),
            }),
        )
    }

    /// Signs `entry` on the current head of its fleet's chain and appends it, building it
    /// again when another writer appended first.
    fn append(
        &self,
        entry: AuditEntry,
        key_change: Option<AuditKeyChange>,
    ) -> Result<AuditRecord, AuditError> {
        let fleet = entry.fleet.clone();
        for _ in 0..APPEND_ATTEMPTS {
            let head = self
                .store
                .audit_head(&fleet)
                .map_err(store_error)?
                .map(|h| ChainHead {
                    seq: h.seq,
                    hash: h.hash,
                });
            let record = self.sign(head.as_ref(), entry.clone())?;
            match self
                .store
                .append_audit_record(&fleet, &row_of(&record)?, key_change.as_ref())
            {
                Ok(()) => return Ok(record),
                Err(StateError::AuditChainMoved { .. }) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(AuditError::Contended {
            fleet,
            attempts: APPEND_ATTEMPTS,
        })
    }

    fn sign(&self, head: Option<&ChainHead>, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        let mut record = AuditRecord::unsigned(head, entry);
        record.signer = Some(self.key.public_hex());
        record.seal()?;
        record.signature = Some(self.key.sign_hash(&record.hash));
        Ok(record)
    }
}

impl Recorder for StoreChain {
    fn record(&self, entry: AuditEntry) -> Result<AuditRecord, AuditError> {
        self.ensure_allowed(&entry.fleet, entry.at, &entry.actor)?;
        self.append(entry, None)
    }
}

fn row_of(record: &AuditRecord) -> Result<AuditRow, AuditError> {
    Ok(AuditRow {
        seq: record.seq,
        prev_hash: record.prev_hash.clone(),
        hash: record.hash.clone(),
        signer: record.signer.clone(),
        record_json: record.to_json()?.to_string(),
    })
}

fn store_error(source: StateError) -> AuditError {
    AuditError::Store { source }
}

/// Reads `fleet`'s chain from the store, as records.
///
/// # Errors
/// [`AuditError::Store`]; [`AuditError::CorruptRecord`] for a row that is not a record (run
/// [`crate::verify_chain`] to see every problem instead).
pub fn read_chain(store: &dyn StateStore, fleet: &str) -> Result<Vec<AuditRecord>, AuditError> {
    store
        .audit_records(fleet)
        .map_err(store_error)?
        .into_iter()
        .map(|row| {
            serde_json::from_str(&row.record_json).map_err(|e| AuditError::CorruptRecord {
                fleet: fleet.to_owned(),
                seq: row.seq,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// The old log file of a state dir (before the chain moved into the state store).
pub fn legacy_log_path(state_dir: &Path) -> PathBuf {
    state_dir.join(LocalLog::FILE_NAME)
}

/// What [`import_legacy_log`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImportReport {
    /// Records imported per fleet.
    pub imported: BTreeMap<String, u64>,
    /// Where the old file was moved to (kept as evidence), if there was one.
    pub moved_to: Option<PathBuf>,
}

/// Imports the old `STATE_DIR/audit.jsonl` into the fleets' chains in the store: the file must
/// verify (against its anchor in the store); each fleet's records are re-chained in that fleet's
/// chain as unsigned records that carry their old seq and hash, followed by one record signed by
/// `chain`'s key that vouches for them; then the file is renamed `audit.jsonl.imported`.
/// Resumes where a crashed import stopped; does nothing without a file.
///
/// # Errors
/// [`AuditError::LegacyLogDoesNotVerify`] (nothing is imported); [`AuditError::Store`].
pub fn import_legacy_log(
    chain: &StoreChain,
    state_dir: &Path,
    at: Timestamp,
    actor: &str,
) -> Result<ImportReport, AuditError> {
    let path = legacy_log_path(state_dir);
    if !path.exists() {
        return Ok(ImportReport::default());
    }
    let anchor = chain
        .store
        .legacy_audit_anchor()
        .map_err(store_error)?
        .map(|a| ChainHead {
            seq: a.seq,
            hash: a.head_hash,
        });
    verify_file(&path, anchor.as_ref()).map_err(|e| AuditError::LegacyLogDoesNotVerify {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let old = LocalLog::open(&path)?.read_all()?;
    let mut by_fleet: BTreeMap<String, Vec<AuditRecord>> = BTreeMap::new();
    for record in old {
        by_fleet
            .entry(record.entry.fleet.clone())
            .or_default()
            .push(record);
    }
    let mut report = ImportReport::default();
    for (fleet, records) in by_fleet {
        let existing = read_chain(&*chain.store, &fleet)?;
        if existing.iter().any(|r| r.signer.is_some()) {
            // Imported before (or the fleet has a signed chain already): leave it.
            continue;
        }
        // A crashed import left a prefix of unsigned records: go on after it.
        let mut head = existing.last().map(AuditRecord::head);
        for old in records.iter().skip(existing.len()) {
            let mut record = AuditRecord::unsigned(head.as_ref(), old.entry.clone());
            record.imported = Some(json!({
                "from": LocalLog::FILE_NAME, "seq": old.seq, "hash": old.hash,
            }));
            record.seal()?;
            chain
                .store
                .append_audit_record(&fleet, &row_of(&record)?, None)
                .map_err(store_error)?;
            head = Some(record.head());
        }
        let count = records.len() as u64;
        if let Some(h) = &head {
            chain.allow_self(&fleet, at, actor, Some((count, &h.hash)))?;
        }
        if let Some(new_head) = chain.store.audit_head(&fleet).map_err(store_error)? {
            chain
                .store
                .anchor_audit_head(&fleet, new_head.seq, &new_head.hash)
                .map_err(store_error)?;
        }
        report.imported.insert(fleet, count);
    }
    let moved = path.with_extension("jsonl.imported");
    std::fs::rename(&path, &moved).map_err(|source| AuditError::OpenLog {
        path: path.clone(),
        source,
    })?;
    report.moved_to = Some(moved);
    Ok(report)
}
