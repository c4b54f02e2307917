//! The [`StateStore`] trait.

use std::time::Duration;

use crate::error::StateError;
use crate::types::{
    ApiToken, AuditAnchor, AuditKey, AuditKeyChange, AuditRow, InstanceRecord, InstanceState,
    Intent, IntentId, IntentOutcome, JobRun, JobRunRecord, Lease, LockGrant, LockHolder,
    LockRequest, NewApiToken, NewIntent, NewRevision, Revision, RevisionNumber, RevisionOutcome,
    UnitId, Write, Written,
};

/// Where the engine keeps what it has done and is about to do, per fleet: revisions, instance
/// records, write-ahead intents and the deploy lock.
///
/// # Guarantees
/// - Every call is one database transaction: it happens entirely or not at all, also when the
///   process is killed during it.
/// - Writes need a [`Lease`] on the fleet's deploy lock and are *fenced*: once another holder
///   has taken the lock over, writes with the old lease fail with [`StateError::LockLost`]
///   and change nothing. A stalled apply therefore cannot corrupt the state of the one that
///   replaced it.
/// - Revision numbers, lock tokens and intent ids only grow and are never reused.
/// - Lease times come from one clock: the database server's for PostgreSQL, the host's for
///   SQLite (which is only shared by processes on one host).
///
/// # Crash safety, in short
/// Record an intent *before* acting, close it (and write what the action produced) *after*:
/// after a `kill -9`, the open intents list exactly the actions that may or may not have
/// happened, and recovery resolves each one against what the provider observes. See the crate
/// documentation for the full protocol.
pub trait StateStore: Send + Sync {
    /// Acquires the deploy lock of `fleet` for `request.ttl`.
    ///
    /// # Errors
    /// [`StateError::LockHeld`] (with the holder) when another lease is live and not named by
    /// [`LockRequest::take_over_token`]; [`StateError::InvalidLeaseDuration`];
    /// [`StateError::AcquireLock`] from the database.
    fn acquire_lock(&self, fleet: &str, request: &LockRequest) -> Result<LockGrant, StateError>;

    /// Extends `lease` to `ttl` from now. An expired lease that nobody took over is revived.
    ///
    /// # Errors
    /// [`StateError::LockLost`] if another holder has taken the lock over (stop writing);
    /// [`StateError::RenewLock`] from the database.
    fn renew_lock(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StateError>;

    /// Releases `lease`. Returns `false` (and changes nothing) if the lock is no longer this
    /// lease's, so releasing twice is harmless.
    ///
    /// # Errors
    /// [`StateError::ReleaseLock`] from the database.
    fn release_lock(&self, lease: &Lease) -> Result<bool, StateError>;

    /// The current holder of `fleet`'s lock, expired or not; `None` if unlocked.
    ///
    /// # Errors
    /// [`StateError::ReadLock`].
    fn lock_holder(&self, fleet: &str) -> Result<Option<LockHolder>, StateError>;

    /// Applies `writes` to the lease's fleet, in order, in one transaction: all or nothing.
    /// Returns one [`Written`] per write, in the same order.
    ///
    /// Use one batch for changes that must not be seen apart, e.g. closing a start intent
    /// together with the instance record that holds the new process's handle.
    ///
    /// # Errors
    /// [`StateError::LockLost`]; [`StateError::RevisionNotFound`],
    /// [`StateError::InvalidRevisionTransition`], [`StateError::IntentNotFound`],
    /// [`StateError::IntentAlreadyClosed`] for bad writes (the whole batch is rolled back);
    /// [`StateError::WriteBatch`] from the database.
    fn write_atomically(
        &self,
        lease: &Lease,
        writes: Vec<Write>,
    ) -> Result<Vec<Written>, StateError>;

    /// Every fleet the store knows, sorted.
    ///
    /// # Errors
    /// [`StateError::ReadFleets`].
    fn list_fleets(&self) -> Result<Vec<String>, StateError>;

    /// A number that changes whenever `fleet`'s revisions or instances change (every
    /// [`StateStore::write_atomically`] that writes either), and only then: a reader that keeps
    /// a view of the fleet reads this instead of the rows to know whether the view is current.
    /// `None` for a fleet the store does not know.
    ///
    /// # Errors
    /// [`StateError::ReadFleets`].
    fn fleet_generation(&self, fleet: &str) -> Result<Option<u64>, StateError>;

    /// One revision.
    ///
    /// # Errors
    /// [`StateError::ReadRevisions`], [`StateError::CorruptRecord`].
    fn get_revision(
        &self,
        fleet: &str,
        number: RevisionNumber,
    ) -> Result<Option<Revision>, StateError>;

    /// All revisions of `fleet`, oldest first.
    ///
    /// # Errors
    /// [`StateError::ReadRevisions`], [`StateError::CorruptRecord`].
    fn list_revisions(&self, fleet: &str) -> Result<Vec<Revision>, StateError>;

    /// The newest revision whose outcome is [`RevisionOutcome::Applied`]: what should be
    /// running, and what an automatic rollback restores.
    ///
    /// # Errors
    /// [`StateError::ReadRevisions`], [`StateError::CorruptRecord`].
    fn latest_applied_revision(&self, fleet: &str) -> Result<Option<Revision>, StateError>;

    /// One instance record.
    ///
    /// # Errors
    /// [`StateError::ReadInstances`], [`StateError::CorruptRecord`].
    fn get_instance(
        &self,
        fleet: &str,
        unit: &UnitId,
    ) -> Result<Option<InstanceRecord>, StateError>;

    /// All instance records of `fleet`, sorted by unit.
    ///
    /// # Errors
    /// [`StateError::ReadInstances`], [`StateError::CorruptRecord`].
    fn list_instances(&self, fleet: &str) -> Result<Vec<InstanceRecord>, StateError>;

    /// One intent.
    ///
    /// # Errors
    /// [`StateError::ReadIntents`], [`StateError::CorruptRecord`].
    fn get_intent(&self, fleet: &str, id: IntentId) -> Result<Option<Intent>, StateError>;

    /// The open intents of `fleet`, oldest first: the actions a crashed apply may or may not
    /// have taken.
    ///
    /// # Errors
    /// [`StateError::ReadIntents`], [`StateError::CorruptRecord`].
    fn open_intents(&self, fleet: &str) -> Result<Vec<Intent>, StateError>;

    /// The head of the old `audit.jsonl` file last anchored (schema version 1, one anchor per
    /// state dir): what an import of that file is checked against.
    ///
    /// # Errors
    /// [`StateError::Audit`].
    fn legacy_audit_anchor(&self) -> Result<Option<AuditAnchor>, StateError>;

    /// The head of `fleet`'s audit chain last anchored with [`StateStore::anchor_audit_head`].
    ///
    /// # Errors
    /// [`StateError::Audit`].
    fn audit_anchor(&self, fleet: &str) -> Result<Option<AuditAnchor>, StateError>;

    /// Anchors the head (`seq`, `head_hash`) of `fleet`'s audit chain, so that a later
    /// verification can tell records written since (unanchored: a crash can leave them) and a
    /// removed tail. Only moves forward: an anchor with a lower `seq` than the stored one is
    /// ignored, so concurrent appenders cannot move it back. Returns the stored anchor.
    ///
    /// # Errors
    /// [`StateError::Audit`].
    fn anchor_audit_head(
        &self,
        fleet: &str,
        seq: u64,
        head_hash: &str,
    ) -> Result<AuditAnchor, StateError>;

    /// The last record of `fleet`'s audit chain; `None` while it is empty.
    ///
    /// # Errors
    /// [`StateError::Audit`].
    fn audit_head(&self, fleet: &str) -> Result<Option<AuditRow>, StateError>;

    /// Every record of `fleet`'s audit chain, by `seq`.
    ///
    /// # Errors
    /// [`StateError::Audit`].
    fn audit_records(&self, fleet: &str) -> Result<Vec<AuditRow>, StateError>;

    /// Every fleet with at least one audit record, sorted.
    ///
    /// # Errors
    /// [`StateError::Audit`].
    fn audit_fleets(&self) -> Result<Vec<String>, StateError>;

    /// Appends `row` to `fleet`'s audit chain and applies `key_change` to its allowed keys, in
    /// one transaction. Not fenced by the deploy lock (records are also written outside an
    /// apply); instead the append is refused unless `row.seq` is the head's + 1 and
    /// `row.prev_hash` its hash, so concurrent appenders can never fork the chain.
    ///
    /// # Errors
    /// [`StateError::AuditChainMoved`] when another record was appended first (build the record
    /// again on the new head); [`StateError::Audit`] from the database.
    fn append_audit_record(
        &self,
        fleet: &str,
        row: &AuditRow,
        key_change: Option<&AuditKeyChange>,
    ) -> Result<(), StateError>;

    /// The keys allowed (and once allowed) to sign `fleet`'s audit chain.
    ///
    /// # Errors
    /// [`StateError::Audit`].
    fn audit_keys(&self, fleet: &str) -> Result<Vec<AuditKey>, StateError>;

    /// Creates an API token of `phoenix serve` (store-wide, not per fleet). A revoked or
    /// expired token of the same name is replaced.
    ///
    /// # Errors
    /// [`StateError::ApiTokenExists`] when a live token has the name; [`StateError::ApiTokens`]
    /// from the database.
    fn create_api_token(&self, token: &NewApiToken) -> Result<ApiToken, StateError>;

    /// Every API token, live or not, sorted by name.
    ///
    /// # Errors
    /// [`StateError::ApiTokens`].
    fn list_api_tokens(&self) -> Result<Vec<ApiToken>, StateError>;

    /// The API token whose secret has this SHA-256 (hex), live or not: the caller checks
    /// [`ApiToken::is_live`].
    ///
    /// # Errors
    /// [`StateError::ApiTokens`].
    fn api_token_by_secret(&self, secret_sha256: &str) -> Result<Option<ApiToken>, StateError>;

    /// Revokes the live token `name`; returns whether there was one (revoking twice is
    /// harmless). The row is kept, with the time it was revoked.
    ///
    /// # Errors
    /// [`StateError::ApiTokens`].
    fn revoke_api_token(&self, name: &str) -> Result<bool, StateError>;

    /// Records how a one-shot job's run at a revision ended (replacing an earlier record of the
    /// same instance and revision), fenced by `lease` like every write. The output is cut to
    /// its last [`MAX_JOB_OUTPUT`](crate::MAX_JOB_OUTPUT) bytes.
    ///
    /// # Errors
    /// [`StateError::LockLost`] when `lease` is not the fleet's current lease;
    /// [`StateError::JobRuns`] from the database.
    fn record_job_run(&self, lease: &Lease, run: &JobRun) -> Result<JobRunRecord, StateError>;

    /// Every recorded job run of `fleet`, by instance, then revision.
    ///
    /// # Errors
    /// [`StateError::JobRuns`], or [`StateError::CorruptRecord`] for a row that does not read.
    fn job_runs(&self, fleet: &str) -> Result<Vec<JobRunRecord>, StateError>;

    /// The stored secrets of `fleet` (sealed; see [`crate::secrets`]), by name.
    ///
    /// # Errors
    /// [`StateError::Secrets`], or [`StateError::CorruptRecord`] for a row that does not read.
    fn secrets(&self, fleet: &str) -> Result<Vec<crate::secrets::SecretRecord>, StateError>;

    /// The earlier values of `fleet`'s secrets kept for rollbacks (sealed), by name and
    /// version: the newest [`crate::secrets::KEPT_VERSIONS`] before the current one of each.
    ///
    /// # Errors
    /// [`StateError::Secrets`] from the database.
    fn secret_history(&self, fleet: &str) -> Result<Vec<crate::secrets::SecretRecord>, StateError>;

    /// Writes every change in `writes` in one transaction, or none: each only if its row still
    /// holds what it expects.
    ///
    /// # Errors
    /// [`StateError::SecretChanged`] naming the first row that changed meanwhile;
    /// [`StateError::Secrets`] from the database.
    fn write_secrets(
        &self,
        fleet: &str,
        writes: &[crate::secrets::SecretWrite],
    ) -> Result<(), StateError>;

    /// Creates the fleet's next revision (outcome `Pending`). A convenience over
    /// [`StateStore::write_atomically`].
    ///
    /// # Errors
    /// As [`StateStore::write_atomically`].
    fn create_revision(
        &self,
        lease: &Lease,
        revision: NewRevision,
    ) -> Result<Revision, StateError> {
        match single(self.write_atomically(lease, vec![Write::CreateRevision(revision)])?) {
            Written::Revision(r) => Ok(r),
            other => unexpected("CreateRevision", &other),
        }
    }

    /// Sets a revision's outcome. A convenience over [`StateStore::write_atomically`].
    ///
    /// # Errors
    /// As [`StateStore::write_atomically`].
    fn set_revision_outcome(
        &self,
        lease: &Lease,
        revision: RevisionNumber,
        outcome: RevisionOutcome,
    ) -> Result<Revision, StateError> {
        match single(
            self.write_atomically(lease, vec![Write::SetRevisionOutcome { revision, outcome }])?,
        ) {
            Written::Revision(r) => Ok(r),
            other => unexpected("SetRevisionOutcome", &other),
        }
    }

    /// Inserts or replaces an instance record. A convenience over
    /// [`StateStore::write_atomically`].
    ///
    /// # Errors
    /// As [`StateStore::write_atomically`].
    fn upsert_instance(
        &self,
        lease: &Lease,
        state: InstanceState,
    ) -> Result<InstanceRecord, StateError> {
        match single(self.write_atomically(lease, vec![Write::UpsertInstance(state)])?) {
            Written::Instance(r) => Ok(r),
            other => unexpected("UpsertInstance", &other),
        }
    }

    /// Deletes an instance record; returns whether there was one. A convenience over
    /// [`StateStore::write_atomically`].
    ///
    /// # Errors
    /// As [`StateStore::write_atomically`].
    fn delete_instance(&self, lease: &Lease, unit: &UnitId) -> Result<bool, StateError> {
        match single(self.write_atomically(lease, vec![Write::DeleteInstance(unit.clone())])?) {
            Written::InstanceDeleted { existed, .. } => Ok(existed),
            other => unexpected("DeleteInstance", &other),
        }
    }

    /// Records an open intent. A convenience over [`StateStore::write_atomically`].
    ///
    /// # Errors
    /// As [`StateStore::write_atomically`].
    fn record_intent(&self, lease: &Lease, intent: NewIntent) -> Result<Intent, StateError> {
        match single(self.write_atomically(lease, vec![Write::RecordIntent(intent)])?) {
            Written::Intent(i) => Ok(i),
            other => unexpected("RecordIntent", &other),
        }
    }

    /// Closes an open intent. A convenience over [`StateStore::write_atomically`].
    ///
    /// # Errors
    /// As [`StateStore::write_atomically`].
    fn close_intent(
        &self,
        lease: &Lease,
        id: IntentId,
        outcome: IntentOutcome,
    ) -> Result<Intent, StateError> {
        match single(self.write_atomically(lease, vec![Write::CloseIntent { id, outcome }])?) {
            Written::Intent(i) => Ok(i),
            other => unexpected("CloseIntent", &other),
        }
    }
}

fn single(mut written: Vec<Written>) -> Written {
    assert_eq!(
        written.len(),
        1,
        "a batch of one write must yield one result"
    );
    written.remove(0)
}

fn unexpected<T>(write: &str, written: &Written) -> T {
    panic!("a {write} write yielded {written:?}: the store broke the Write/Written correspondence")
}
