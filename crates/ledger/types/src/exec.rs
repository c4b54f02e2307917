//! Deterministic execution of transactions and blocks over the authenticated state.
//!
//! Pure functions of `(state, block)`: no clock, no randomness, no I/O. State values are stored
//! as canonical JSON of the record types below under keys `"<module>/<id>"`, which is also how
//! the API addresses them (`GET /v1/state/{module}/{id}`). Audit records are under
//! `audit/{fleet}/{seq}` ([`audit_key`]), and the audit log's [`Frontier`] under `audit/log`.

use crate::block::{Block, BlockHeader, MAX_BLOCK_BYTES, MAX_BLOCK_TXS, tx_root};
use crate::crypto::{Hash, PublicKey};
use crate::mlog::{Frontier, audit_leaf};
use crate::state::AuthMap;
use crate::tx::{
    AuditRecord, GovAction, GovOp, IdentityOp, MAX_CHAIN_ID, Module, Operation, ProvOp, Role,
    Transaction, is_valid_fleet,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use thiserror::Error;

/// Why a transaction cannot execute. The `Display` text is the reason the API reports.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TxError {
    /// Signed for another chain.
    #[error("wrong chain: transaction is for {got:?}, this chain is {expected:?}")]
    WrongChain {
        /// This chain.
        expected: String,
        /// The transaction's.
        got: String,
    },
    /// Nonce already used: a replay or a duplicate.
    #[error("replayed: nonce {got} already used by this account (next is {expected})")]
    Replayed {
        /// Next nonce.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// Nonce ahead of the account's next nonce.
    #[error("nonce gap: account's next nonce is {expected}, transaction has {got}")]
    FutureNonce {
        /// Next nonce.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// The signer lacks the role the operation needs.
    #[error("unauthorised: {op} needs role {role:?}")]
    Unauthorised {
        /// The operation.
        op: &'static str,
        /// The role needed.
        role: Role,
    },
    /// The signing key was rotated away or its identity revoked.
    #[error("unauthorised: signing key is retired (rotated or revoked)")]
    RetiredKey,
    /// The module is under emergency pause.
    #[error("module {0:?} is paused")]
    Paused(Module),
    /// A referenced record does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A record with that id exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// An audit record for a `(fleet, seq)` the ledger holds with another hash: the fleet's
    /// chain and the ledger disagree about that record.
    #[error(
        "conflicts: audit record {seq} of fleet {fleet:?} is recorded with hash {}; this one has \
         hash {}",
        hashes[0],
        hashes[1]
    )]
    AuditConflict {
        /// The fleet.
        fleet: String,
        /// The record's seq.
        seq: u64,
        /// The hash on the ledger, then the hash in the transaction (boxed: every block error
        /// carries a transaction error, and two hashes would double its size).
        hashes: Box<[Hash; 2]>,
    },
    /// The operation is not allowed in the record's current state.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The transaction would leave fewer admins able to sign than the approvals a proposal
    /// needs, so no proposal could ever pass again (a pause could never be lifted).
    #[error(
        "invalid: governance would be locked for good: {admins} admin(s) could sign, but a \
         proposal would need {threshold} approvals"
    )]
    GovernanceLocked {
        /// Admins able to sign afterwards.
        admins: usize,
        /// Approvals a proposal would need afterwards.
        threshold: u32,
    },
}

/// An account: the public key is its id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Next nonce.
    pub nonce: u64,
    /// Roles held, sorted.
    pub roles: Vec<Role>,
    /// The identity this key belongs to, if any.
    pub did: Option<String>,
    /// Rotated away or revoked: may no longer sign.
    pub retired: bool,
}

/// An identity record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Its DID.
    pub did: String,
    /// Current key.
    pub key: PublicKey,
    /// DID document hash.
    pub doc_hash: Hash,
    /// Roles.
    pub roles: Vec<Role>,
    /// Whether revoked.
    pub revoked: bool,
    /// Previous keys, oldest first.
    pub previous_keys: Vec<PublicKey>,
    /// Height of the last change.
    pub updated_height: u64,
}

/// Where a resource is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceState {
    /// Requested.
    Requested,
    /// Provisioned.
    Provisioned,
    /// Verified by an independent verifier.
    Verified,
    /// Released.
    Released,
}

/// A provisioning record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Resource id.
    pub id: String,
    /// Tenant.
    pub tenant: String,
    /// Site.
    pub site: String,
    /// Kind.
    pub kind: String,
    /// Spec hash.
    pub spec_hash: Hash,
    /// Lifecycle state.
    pub state: ResourceState,
    /// Account per transition, with the height: (state, account, height).
    pub history: Vec<(ResourceState, PublicKey, u64)>,
}

/// A stored audit entry, under `audit/{fleet}/{seq}` ([`audit_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the audit log (every fleet's records, in the order recorded), from 0.
    pub index: u64,
    /// Height of the block that recorded it.
    pub height: u64,
    /// The account that signed it.
    pub signer: PublicKey,
    /// The record.
    pub record: AuditRecord,
}

/// A validator.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Validator {
    /// Consensus key.
    pub key: PublicKey,
    /// Peer address `host:port`.
    pub address: String,
}

/// A scheduled validator-set change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingChange {
    /// First epoch it applies to.
    pub effective_epoch: u64,
    /// `Some(address)` to add, `None` to remove.
    pub add: Option<String>,
    /// The validator key.
    pub key: PublicKey,
}

/// The validator set and its scheduled changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorSet {
    /// Active validators, sorted by key.
    pub validators: Vec<Validator>,
    /// Changes waiting for their epoch.
    pub pending: Vec<PendingChange>,
}

/// The hash of a list of active validators (sorted by key, as a [`ValidatorSet`] keeps them), as
/// headers commit to it (`validator_set_hash`, `next_validator_set_hash`).
pub fn validators_hash(validators: &[Validator]) -> Hash {
    let mut w = crate::codec::Writer::new();
    w.fixed(b"phoenix-ledger/validators/v1\n");
    w.u32(u32::try_from(validators.len()).expect("small set"));
    for v in validators {
        w.fixed(&v.key.0);
        w.str(&v.address);
    }
    Hash::of(&[&w.finish()])
}

/// The state key of fleet `fleet`'s audit record `seq`: `audit/{fleet}/{seq}` (decimal seq).
pub fn audit_key(fleet: &str, seq: u64) -> String {
    format!("{fleet}/{seq}")
}

impl ValidatorSet {
    /// Hash committed in every header: over the sorted keys and addresses of the active
    /// validators ([`validators_hash`]).
    pub fn hash(&self) -> Hash {
        validators_hash(&self.validators)
    }

    /// The set once every change effective at or before `epoch` has applied (in epoch order,
    /// and within an epoch in the order scheduled), with the changes still to come. The one
    /// definition of "who validates in epoch `e`": the epoch's first block applies it
    /// (`LedgerState::begin_block`), consensus runs with it (the node's epoch orchestrator), and
    /// governance judges removals against it.
    pub fn at_epoch(&self, epoch: u64) -> ValidatorSet {
        let (mut due, pending): (Vec<_>, Vec<_>) = self
            .pending
            .iter()
            .cloned()
            .partition(|c| c.effective_epoch <= epoch);
        due.sort_by_key(|c| c.effective_epoch); // stable
        let mut validators = self.validators.clone();
        for c in due {
            validators.retain(|v| v.key != c.key);
            if let Some(address) = c.add {
                validators.push(Validator {
                    key: c.key,
                    address,
                });
            }
        }
        validators.sort();
        ValidatorSet {
            validators,
            pending,
        }
    }
}

/// Chain parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Chain id.
    pub chain_id: String,
    /// Blocks per epoch; validator-set changes apply at epoch starts.
    pub epoch_length: u64,
    /// Admin approvals a governance proposal needs (k of n).
    pub admin_threshold: u32,
}

/// A governance proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Id.
    pub id: String,
    /// The change.
    pub action: GovAction,
    /// Approving admins, in order (the proposer first).
    pub approvals: Vec<PublicKey>,
    /// Height at which it executed, once it has.
    pub executed_at: Option<u64>,
}

/// An account in the genesis file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisAccount {
    /// The key.
    pub key: PublicKey,
    /// Its roles.
    pub roles: Vec<Role>,
}

/// The genesis file: initial validators, accounts and roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    /// Chain id (at most 64 bytes).
    pub chain_id: String,
    /// Timestamp of the genesis block.
    pub genesis_time_ms: u64,
    /// Blocks per epoch.
    pub epoch_length: u64,
    /// Admin approvals a proposal needs.
    pub admin_threshold: u32,
    /// Initial validators.
    pub validators: Vec<Validator>,
    /// Initial accounts.
    pub accounts: Vec<GenesisAccount>,
}

/// Why a block is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlockError {
    /// A header field disagrees with the parent or with execution.
    #[error("bad header: {0}")]
    Header(&'static str),
    /// A transaction failed.
    #[error("transaction {index} ({hash}) failed: {error}")]
    Tx {
        /// Position in the block.
        index: usize,
        /// Its hash.
        hash: Hash,
        /// Why.
        error: TxError,
    },
}

/// The chain state: an [`AuthMap`] plus typed accessors. `Clone` is O(1).
///
/// Parameters and the pause list are read by every transaction, so decoded copies are cached
/// beside the map and refreshed whenever those keys are written. The set of admins able to sign
/// is kept the same way (every account write goes through `put_account`), so governance can
/// check "enough admins for the threshold" without scanning every account; it is derived from
/// the map alone, so it is the same on every node. The audit log's [`Frontier`] is kept beside
/// the map too and written to it (`audit/log`) once per block by [`Self::end_block`], not once
/// per record. Accounts written during a block are held decoded beside the map and written to
/// it once per account when the block ends, not once per transaction: a block of 1,500 audit
/// records from 64 accounts writes 64 account values, not 1,500 (the trie's contents, and so
/// the root, are the same either way; the root is a function of the contents alone).
#[derive(Clone, Debug, Default)]
pub struct LedgerState {
    map: AuthMap,
    params: Option<std::sync::Arc<Params>>,
    paused: std::sync::Arc<Vec<Module>>,
    admins: std::sync::Arc<std::collections::BTreeSet<PublicKey>>,
    audit_log: std::sync::Arc<Frontier>,
    /// The frontier changed since it was last written to the map.
    audit_dirty: bool,
    /// Accounts written since the map last received them ([`Self::flush_accounts`]). Read
    /// before the map by [`Self::account`].
    accounts_pending: std::sync::Arc<std::collections::BTreeMap<PublicKey, Account>>,
}

fn key(module: &str, id: &str) -> Vec<u8> {
    format!("{module}/{id}").into_bytes()
}

fn has(roles: &[Role], r: Role) -> bool {
    roles.contains(&r)
}

impl LedgerState {
    /// The state defined by a genesis file.
    ///
    /// # Errors
    /// A genesis that breaks a rule (empty validator set, zero epoch length or threshold, long
    /// chain id, a threshold above the number of admin accounts). A genesis without any admin
    /// is allowed: that chain simply has no governance.
    pub fn from_genesis(g: &Genesis) -> Result<Self, String> {
        if g.validators.is_empty() {
            return Err("genesis needs at least one validator".into());
        }
        if g.epoch_length == 0 || g.admin_threshold == 0 {
            return Err("epoch_length and admin_threshold must be positive".into());
        }
        if g.epoch_length < 2 {
            return Err(format!(
                "epoch_length must be at least 2 (got {}): each epoch's consensus starts from the \
                 previous epoch's last block, so an epoch needs more than the genesis block",
                g.epoch_length
            ));
        }
        if g.chain_id.is_empty() || g.chain_id.len() > MAX_CHAIN_ID {
            return Err(format!("chain_id must be 1..={MAX_CHAIN_ID} bytes"));
        }
        let mut s = LedgerState::default();
        s.put(
            "governance",
            "params",
            &Params {
                chain_id: g.chain_id.clone(),
                epoch_length: g.epoch_length,
                admin_threshold: g.admin_threshold,
            },
        );
        let mut validators = g.validators.clone();
        validators.sort();
        validators.dedup_by(|a, b| a.key == b.key);
        s.put(
            "governance",
            "validators",
            &ValidatorSet {
                validators,
                pending: vec![],
            },
        );
        s.put("governance", "paused", &Vec::<Module>::new());
        for a in &g.accounts {
            let mut roles = a.roles.clone();
            roles.sort();
            roles.dedup();
            s.put_account(
                &a.key,
                &Account {
                    roles,
                    ..Account::default()
                },
            );
        }
        s.flush_accounts();
        let admins = s.admin_count();
        if admins > 0 && g.admin_threshold as usize > admins {
            return Err(format!(
                "admin_threshold {} is more than the {admins} admin account(s): no governance \
                 proposal could ever pass",
                g.admin_threshold
            ));
        }
        Ok(s)
    }

    /// The state root. Blocks end with every account written to the map, so this is the map's
    /// root; in the middle of a block (tests, tools) the pending accounts are written to a copy
    /// first, so the root always commits to everything applied.
    pub fn root(&self) -> Hash {
        if self.accounts_pending.is_empty() {
            return self.map.root_hash();
        }
        let mut copy = self.clone();
        copy.flush_accounts();
        copy.map.root_hash()
    }
    /// The underlying map (for proofs and dumps): the state as of the last block's end, which
    /// is every state a node serves.
    pub fn map(&self) -> &AuthMap {
        debug_assert!(
            self.accounts_pending.is_empty(),
            "the map is read in the middle of a block"
        );
        &self.map
    }
    /// Raw JSON value of `module/id`, as of the last block's end (an account written in an
    /// unfinished block is read with [`Self::account`]).
    pub fn get_raw(&self, module: &str, id: &str) -> Option<&[u8]> {
        self.map.get(&key(module, id))
    }
    /// Typed value of `module/id`.
    pub fn get<T: DeserializeOwned>(&self, module: &str, id: &str) -> Option<T> {
        self.get_raw(module, id)
            .map(|b| serde_json::from_slice(b).expect("state holds values it wrote"))
    }
    fn put<T: Serialize>(&mut self, module: &str, id: &str, v: &T) {
        debug_assert_ne!(
            module, "accounts",
            "accounts are written by put_account, which keeps the admin set"
        );
        self.put_unchecked(module, id, v);
    }
    fn put_unchecked<T: Serialize>(&mut self, module: &str, id: &str, v: &T) {
        let bytes = serde_json::to_vec(v).expect("records serialise");
        self.map.insert(&key(module, id), &bytes);
        match (module, id) {
            ("governance", "params") => {
                self.params = Some(std::sync::Arc::new(
                    serde_json::from_slice(&bytes).expect("just written"),
                ));
            }
            ("governance", "paused") => {
                self.paused =
                    std::sync::Arc::new(serde_json::from_slice(&bytes).expect("just written"));
            }
            _ => {}
        }
    }
    /// Writes an account (to the map when the block ends) and keeps the cached admin set in
    /// line with it.
    fn put_account(&mut self, k: &PublicKey, acct: &Account) {
        std::sync::Arc::make_mut(&mut self.accounts_pending).insert(*k, acct.clone());
        // A retired key cannot sign (`check_common`), so it cannot approve either.
        let admin = has(&acct.roles, Role::Admin) && !acct.retired;
        if admin != self.admins.contains(k) {
            let set = std::sync::Arc::make_mut(&mut self.admins);
            if admin {
                set.insert(*k);
            } else {
                set.remove(k);
            }
        }
    }
    /// Writes the accounts held since the last flush to the map.
    fn flush_accounts(&mut self) {
        if self.accounts_pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.accounts_pending);
        for (k, acct) in pending.iter() {
            self.put_unchecked("accounts", &k.to_hex(), acct);
        }
    }
    /// How many accounts hold the admin role and may still sign (not retired).
    pub fn admin_count(&self) -> usize {
        self.admins.len()
    }
    /// Chain parameters.
    pub fn params(&self) -> std::sync::Arc<Params> {
        self.params.clone().expect("genesis wrote params")
    }
    /// The validator set.
    pub fn validators(&self) -> ValidatorSet {
        self.get("governance", "validators")
            .expect("genesis wrote validators")
    }
    /// An account (default for unknown keys: nonce 0, no roles).
    pub fn account(&self, k: &PublicKey) -> Account {
        if let Some(a) = self.accounts_pending.get(k) {
            return a.clone();
        }
        self.get("accounts", &k.to_hex()).unwrap_or_default()
    }
    /// Paused modules.
    pub fn paused(&self) -> Vec<Module> {
        self.paused.as_ref().clone()
    }
    /// The audit log's compact state (its size and root commit to every record so far).
    pub fn audit_log(&self) -> &Frontier {
        &self.audit_log
    }
    /// Fleet `fleet`'s audit record `seq`, if recorded.
    pub fn audit_entry(&self, fleet: &str, seq: u64) -> Option<AuditEntry> {
        self.get("audit", &audit_key(fleet, seq))
    }

    /// The rules an audit record's fields must meet.
    fn check_audit_fields(rec: &AuditRecord) -> Result<(), TxError> {
        if !is_valid_fleet(&rec.fleet) {
            return Err(TxError::Invalid(format!(
                "fleet {:?} must be 1 to {} characters of A-Z a-z 0-9 . _ ~ -",
                rec.fleet,
                crate::tx::MAX_ID
            )));
        }
        if rec.seq == 0 {
            return Err(TxError::Invalid(
                "audit record seq counts from 1 in the fleet's chain".into(),
            ));
        }
        Ok(())
    }

    fn audit_conflict(rec: &AuditRecord, recorded: &AuditEntry) -> Result<(), TxError> {
        if recorded.record.hash == rec.hash {
            return Ok(());
        }
        Err(TxError::AuditConflict {
            fleet: rec.fleet.clone(),
            seq: rec.seq,
            hashes: Box::new([recorded.record.hash, rec.hash]),
        })
    }

    /// The audit-record checks admission can make: the fields' rules, and that the ledger does
    /// not hold another hash for the record's `(fleet, seq)` ([`TxError::AuditConflict`]).
    /// Execution repeats them. Kept out of [`Self::precheck`] because it costs a state lookup:
    /// a node runs it for the transactions submitted to it, not again for those its peers
    /// gossip (which their own admission checked).
    ///
    /// # Errors
    /// As above; `Ok` for other operations and for a record already recorded with this hash
    /// (it commits as a no-op).
    pub fn precheck_audit(&self, tx: &Transaction) -> Result<(), TxError> {
        let Operation::Audit(rec) = &tx.body.op else {
            return Ok(());
        };
        Self::check_audit_fields(rec)?;
        match self.audit_entry(&rec.fleet, rec.seq) {
            Some(e) => Self::audit_conflict(rec, &e),
            None => Ok(()),
        }
    }

    /// Records `rec` unless its `(fleet, seq, hash)` is already on the ledger (then nothing
    /// changes: a retry records nothing twice); another hash for it is refused.
    fn apply_audit(
        &mut self,
        rec: &AuditRecord,
        signer: PublicKey,
        height: u64,
    ) -> Result<(), TxError> {
        Self::check_audit_fields(rec)?;
        let entry = AuditEntry {
            index: self.audit_log.size,
            height,
            signer,
            record: rec.clone(),
        };
        let bytes = serde_json::to_vec(&entry).expect("records serialise");
        // One walk down the trie for "is it recorded?" and "record it": this runs for every
        // record, and a lookup then an insert cost a measurable share of execution.
        let k = key("audit", &audit_key(&rec.fleet, rec.seq));
        if let Some(existing) = self.map.insert_new(&k, &bytes) {
            let recorded: AuditEntry =
                serde_json::from_slice(&existing).expect("state holds values it wrote");
            return Self::audit_conflict(rec, &recorded);
        }
        std::sync::Arc::make_mut(&mut self.audit_log)
            .push(audit_leaf(&rec.fleet, rec.seq, &rec.hash));
        self.audit_dirty = true;
        Ok(())
    }

    /// Work done at the end of every block, after its transactions: the accounts written in it
    /// and, if records were appended, the audit log's frontier are written to the map.
    pub fn end_block(&mut self) {
        self.flush_accounts();
        if self.audit_dirty {
            let log = self.audit_log.clone();
            self.put("audit", "log", &*log);
            self.audit_dirty = false;
        }
    }

    /// Checks what can be checked before execution (chain, nonce, key status, pause, role) so the
    /// API can reject early. Execution repeats every check.
    ///
    /// # Errors
    /// The first rule the transaction breaks.
    pub fn precheck(&self, tx: &Transaction, allow_future_nonce: bool) -> Result<(), TxError> {
        let p = self.params();
        self.check_common(tx, &p, allow_future_nonce)?;
        // A proposal that can never be valid (threshold 0, a threshold above the admins, ...)
        // is refused at admission too, so the submitter hears why at once. Epoch rules need the
        // block's height and are left to execution.
        if let Operation::Governance(GovOp::Propose { action, .. }) = &tx.body.op {
            self.validate_action(action, None)?;
        }
        Ok(())
    }

    fn check_common(
        &self,
        tx: &Transaction,
        p: &Params,
        allow_future_nonce: bool,
    ) -> Result<Account, TxError> {
        let b = &tx.body;
        if b.chain_id != p.chain_id {
            return Err(TxError::WrongChain {
                expected: p.chain_id.clone(),
                got: b.chain_id.clone(),
            });
        }
        let acct = self.account(&b.signer);
        if b.nonce < acct.nonce {
            return Err(TxError::Replayed {
                expected: acct.nonce,
                got: b.nonce,
            });
        }
        if b.nonce > acct.nonce && !allow_future_nonce {
            return Err(TxError::FutureNonce {
                expected: acct.nonce,
                got: b.nonce,
            });
        }
        if acct.retired {
            return Err(TxError::RetiredKey);
        }
        let m = b.op.module();
        if m != Module::Governance && self.paused.contains(&m) {
            return Err(TxError::Paused(m));
        }
        let (name, role) = required_role(&b.op);
        if let Some(role) = role {
            // Rotating one's own identity key needs no role: the current key signs it.
            let self_rotation = matches!(&b.op, Operation::Identity(IdentityOp::RotateKey { did, .. })
                if acct.did.as_deref() == Some(did.as_str()));
            if !has(&acct.roles, role) && !self_rotation {
                return Err(TxError::Unauthorised { op: name, role });
            }
        }
        Ok(acct)
    }

    /// Applies one transaction at `height`; on error the state is unchanged.
    ///
    /// # Errors
    /// Why the transaction cannot execute.
    pub fn apply_tx(&mut self, tx: &Transaction, height: u64) -> Result<(), TxError> {
        let p = self.params();
        let mut acct = self.check_common(tx, &p, false)?;
        let signer = tx.body.signer;
        // Validate-then-write: each arm checks everything before its first write.
        match &tx.body.op {
            Operation::Governance(g) => {
                let before = self.clone();
                self.apply_gov(g, signer, &p, height)?;
                self.keep_governance_live(before)?;
            }
            Operation::Identity(i) => {
                // Revoking or rotating an admin's identity key takes an admin away too.
                let before = self.clone();
                self.apply_identity(i, signer, height)?;
                self.keep_governance_live(before)?;
            }
            Operation::Provisioning(op) => self.apply_prov(op, signer, height)?,
            Operation::Audit(rec) => self.apply_audit(rec, signer, height)?,
        }
        // Governance and identity operations may change this very account (roles, retirement):
        // re-read it then. Provisioning and audit never touch accounts, and skipping the second
        // decode there is a measurable share of execution at 10,000 audit records a second.
        if matches!(
            tx.body.op,
            Operation::Governance(_) | Operation::Identity(_)
        ) {
            acct = self.account(&signer);
            acct.nonce = tx.body.nonce + 1;
        } else {
            acct.nonce += 1;
        }
        self.put_account(&signer, &acct);
        Ok(())
    }

    /// The one rule that keeps governance able to act: after a transaction, at least as many
    /// admins can sign as a proposal needs approvals. A transaction that breaks it is refused
    /// and `self` is put back to `before` (its state when the transaction started; `Clone` is
    /// O(1)), whatever path broke it (a threshold change, a revoked admin role, a revoked or
    /// rotated identity key). A chain that is already short of admins (a genesis without any)
    /// may carry on, as long as the transaction does not make it worse.
    fn keep_governance_live(&mut self, before: LedgerState) -> Result<(), TxError> {
        let (admins, threshold) = (self.admin_count(), self.params().admin_threshold);
        let (admins_before, threshold_before) =
            (before.admin_count(), before.params().admin_threshold);
        let worse = admins < admins_before || threshold > threshold_before;
        if threshold as usize > admins && worse {
            *self = before;
            return Err(TxError::GovernanceLocked { admins, threshold });
        }
        Ok(())
    }

    fn apply_gov(
        &mut self,
        g: &GovOp,
        signer: PublicKey,
        p: &Params,
        height: u64,
    ) -> Result<(), TxError> {
        let epoch = height / p.epoch_length;
        match g {
            GovOp::Pause { module } => {
                if *module == Module::Governance {
                    return Err(TxError::Invalid("governance cannot be paused".into()));
                }
                let mut paused = self.paused();
                if paused.contains(module) {
                    return Err(TxError::Invalid(format!("{module:?} is already paused")));
                }
                paused.push(*module);
                paused.sort();
                self.put("governance", "paused", &paused);
                Ok(())
            }
            GovOp::Propose { id, action } => {
                let pid = format!("proposal-{id}");
                if self.get_raw("governance", &pid).is_some() {
                    return Err(TxError::AlreadyExists(format!("proposal {id}")));
                }
                self.validate_action(action, Some(epoch))?;
                let mut prop = Proposal {
                    id: id.clone(),
                    action: action.clone(),
                    approvals: vec![signer],
                    executed_at: None,
                };
                if p.admin_threshold <= 1 {
                    self.execute_action(action)?;
                    prop.executed_at = Some(height);
                }
                self.put("governance", &pid, &prop);
                Ok(())
            }
            GovOp::Approve { id } => {
                let pid = format!("proposal-{id}");
                let mut prop: Proposal = self
                    .get("governance", &pid)
                    .ok_or_else(|| TxError::NotFound(format!("proposal {id}")))?;
                if prop.executed_at.is_some() {
                    return Err(TxError::Invalid(format!("proposal {id} already executed")));
                }
                if prop.approvals.contains(&signer) {
                    return Err(TxError::Invalid(format!("already approved proposal {id}")));
                }
                // Approvals of admins who lost the role since no longer count.
                prop.approvals
                    .retain(|a| has(&self.account(a).roles, Role::Admin));
                prop.approvals.push(signer);
                if prop.approvals.len() >= p.admin_threshold as usize {
                    self.validate_action(&prop.action, Some(epoch))?;
                    self.execute_action(&prop.action)?;
                    prop.executed_at = Some(height);
                }
                self.put("governance", &pid, &prop);
                Ok(())
            }
        }
    }

    /// Whether `a` may be proposed (and, again, executed) on this state. `epoch` is the epoch of
    /// the executing block; `None` (admission, before a height is known) skips the rules that
    /// depend on it.
    fn validate_action(&self, a: &GovAction, epoch: Option<u64>) -> Result<(), TxError> {
        let threshold = self.params().admin_threshold;
        match a {
            GovAction::AddValidator {
                effective_epoch, ..
            }
            | GovAction::RemoveValidator {
                effective_epoch, ..
            } if epoch.is_some_and(|epoch| *effective_epoch <= epoch) => {
                Err(TxError::Invalid(format!(
                    "effective_epoch {effective_epoch} must be later than the current epoch {}",
                    epoch.unwrap_or_default()
                )))
            }
            GovAction::RemoveValidator { key, .. } => {
                // Judge against the set once every change already scheduled has applied (in
                // the order `begin_block` applies them), so two removals proposed side by side
                // cannot together empty it.
                let mut set = self.validators().at_epoch(u64::MAX).validators;
                if !set.iter().any(|v| v.key == *key) {
                    return Err(TxError::Invalid(format!(
                        "{key} is not a validator and is not scheduled to become one"
                    )));
                }
                set.retain(|v| v.key != *key);
                if set.is_empty() {
                    return Err(TxError::Invalid(
                        "removing the last validator would halt the chain for good".into(),
                    ));
                }
                Ok(())
            }
            GovAction::SetThreshold { threshold: 0 } => {
                Err(TxError::Invalid("threshold must be at least 1".into()))
            }
            // Judged here as well as after execution (`keep_governance_live`), so a proposal that
            // could only lock governance is refused when proposed, not left open to be approved.
            GovAction::SetThreshold { threshold } if *threshold as usize > self.admin_count() => {
                Err(TxError::GovernanceLocked {
                    admins: self.admin_count(),
                    threshold: *threshold,
                })
            }
            GovAction::RevokeRole {
                account,
                role: Role::Admin,
            } if self.admins.contains(account) && threshold as usize > self.admin_count() - 1 => {
                Err(TxError::GovernanceLocked {
                    admins: self.admin_count() - 1,
                    threshold,
                })
            }
            GovAction::Unpause { module } if !self.paused().contains(module) => {
                Err(TxError::Invalid(format!("{module:?} is not paused")))
            }
            _ => Ok(()),
        }
    }

    fn execute_action(&mut self, a: &GovAction) -> Result<(), TxError> {
        match a {
            GovAction::AddValidator {
                key,
                address,
                effective_epoch,
            } => {
                let mut vs = self.validators();
                vs.pending.push(PendingChange {
                    effective_epoch: *effective_epoch,
                    add: Some(address.clone()),
                    key: *key,
                });
                self.put("governance", "validators", &vs);
            }
            GovAction::RemoveValidator {
                key,
                effective_epoch,
            } => {
                let mut vs = self.validators();
                vs.pending.push(PendingChange {
                    effective_epoch: *effective_epoch,
                    add: None,
                    key: *key,
                });
                self.put("governance", "validators", &vs);
            }
            GovAction::GrantRole { account, role } => {
                let mut acct = self.account(account);
                if !has(&acct.roles, *role) {
                    acct.roles.push(*role);
                    acct.roles.sort();
                }
                self.put_account(account, &acct);
            }
            GovAction::RevokeRole { account, role } => {
                let mut acct = self.account(account);
                acct.roles.retain(|r| r != role);
                self.put_account(account, &acct);
            }
            GovAction::Unpause { module } => {
                let mut paused = self.paused();
                paused.retain(|m| m != module);
                self.put("governance", "paused", &paused);
            }
            GovAction::SetThreshold { threshold } => {
                let mut p = self.params().as_ref().clone();
                p.admin_threshold = *threshold;
                self.put("governance", "params", &p);
            }
        }
        Ok(())
    }

    fn apply_identity(
        &mut self,
        op: &IdentityOp,
        signer: PublicKey,
        height: u64,
    ) -> Result<(), TxError> {
        match op {
            IdentityOp::Register {
                did,
                key,
                doc_hash,
                roles,
            } => {
                if self.get_raw("identity", did).is_some() {
                    return Err(TxError::AlreadyExists(format!("identity {did}")));
                }
                if roles.contains(&Role::Admin) {
                    return Err(TxError::Invalid(
                        "identities cannot be given the admin role; use a governance proposal"
                            .into(),
                    ));
                }
                let mut acct = self.account(key);
                if acct.did.is_some() || acct.retired {
                    return Err(TxError::Invalid(format!(
                        "key {key} already belongs to an identity"
                    )));
                }
                for r in roles {
                    if !has(&acct.roles, *r) {
                        acct.roles.push(*r);
                    }
                }
                acct.roles.sort();
                acct.did = Some(did.clone());
                if *key == signer {
                    // The signer's nonce is bumped by the caller from a fresh read.
                }
                self.put_account(key, &acct);
                self.put(
                    "identity",
                    did,
                    &Identity {
                        did: did.clone(),
                        key: *key,
                        doc_hash: *doc_hash,
                        roles: roles.clone(),
                        revoked: false,
                        previous_keys: vec![],
                        updated_height: height,
                    },
                );
                Ok(())
            }
            IdentityOp::RotateKey { did, new_key } => {
                let mut id: Identity = self
                    .get("identity", did)
                    .ok_or_else(|| TxError::NotFound(format!("identity {did}")))?;
                if id.revoked {
                    return Err(TxError::Invalid(format!("identity {did} is revoked")));
                }
                if *new_key == id.key {
                    return Err(TxError::Invalid("new key equals the current key".into()));
                }
                let new_acct = self.account(new_key);
                if new_acct.did.is_some() || new_acct.retired {
                    return Err(TxError::Invalid(format!(
                        "key {new_key} already belongs to an identity"
                    )));
                }
                let mut old = self.account(&id.key);
                let moved = std::mem::take(&mut old.roles);
                old.retired = true;
                self.put_account(&id.key, &old);
                let mut na = new_acct;
                for r in moved {
                    if !has(&na.roles, r) {
                        na.roles.push(r);
                    }
                }
                na.roles.sort();
                na.did = Some(did.clone());
                self.put_account(new_key, &na);
                id.previous_keys.push(id.key);
                id.key = *new_key;
                id.updated_height = height;
                self.put("identity", did, &id);
                Ok(())
            }
            IdentityOp::Revoke { did } => {
                let mut id: Identity = self
                    .get("identity", did)
                    .ok_or_else(|| TxError::NotFound(format!("identity {did}")))?;
                if id.revoked {
                    return Err(TxError::Invalid(format!("identity {did} already revoked")));
                }
                let mut acct = self.account(&id.key);
                acct.roles.clear();
                acct.retired = true;
                self.put_account(&id.key, &acct);
                id.revoked = true;
                id.updated_height = height;
                self.put("identity", did, &id);
                Ok(())
            }
        }
    }

    fn apply_prov(&mut self, op: &ProvOp, signer: PublicKey, height: u64) -> Result<(), TxError> {
        use ResourceState::*;
        match op {
            ProvOp::Request {
                id,
                tenant,
                site,
                kind,
                spec_hash,
            } => {
                // A released resource may be requested again (an instance removed and later
                // re-created under its name keeps one record); its history is kept.
                let mut history = match self.get::<Resource>("provisioning", id) {
                    Some(r) if r.state == Released => r.history,
                    Some(_) => return Err(TxError::AlreadyExists(format!("resource {id}"))),
                    None => Vec::new(),
                };
                history.push((Requested, signer, height));
                self.put(
                    "provisioning",
                    id,
                    &Resource {
                        id: id.clone(),
                        tenant: tenant.clone(),
                        site: site.clone(),
                        kind: kind.clone(),
                        spec_hash: *spec_hash,
                        state: Requested,
                        history,
                    },
                );
                Ok(())
            }
            ProvOp::MarkProvisioned { id } | ProvOp::Verify { id } | ProvOp::Release { id } => {
                let mut r: Resource = self
                    .get("provisioning", id)
                    .ok_or_else(|| TxError::NotFound(format!("resource {id}")))?;
                let to = match op {
                    ProvOp::MarkProvisioned { .. } => Provisioned,
                    ProvOp::Verify { .. } => Verified,
                    _ => Released,
                };
                let ok = matches!(
                    (r.state, to),
                    (Requested, Provisioned)
                        | (Provisioned, Verified)
                        | (Requested | Provisioned | Verified, Released)
                );
                if !ok {
                    return Err(TxError::Invalid(format!(
                        "resource {id} cannot go from {:?} to {to:?}",
                        r.state
                    )));
                }
                if to == Verified
                    && r.history
                        .iter()
                        .any(|(s, who, _)| *s == Provisioned && *who == signer)
                {
                    return Err(TxError::Invalid(
                        "the provisioner cannot verify its own resource".into(),
                    ));
                }
                r.state = to;
                r.history.push((to, signer, height));
                self.put("provisioning", id, &r);
                Ok(())
            }
        }
    }

    /// Work done at the start of every block: at an epoch start, scheduled validator-set changes
    /// for that epoch take effect.
    pub fn begin_block(&mut self, height: u64) {
        let p = self.params();
        if height == 0 || !height.is_multiple_of(p.epoch_length) {
            return;
        }
        let epoch = height / p.epoch_length;
        let vs = self.validators();
        if vs.pending.iter().any(|c| c.effective_epoch <= epoch) {
            self.put("governance", "validators", &vs.at_epoch(epoch));
        }
    }
}

fn required_role(op: &Operation) -> (&'static str, Option<Role>) {
    match op {
        Operation::Governance(GovOp::Propose { .. }) => ("governance.propose", Some(Role::Admin)),
        Operation::Governance(GovOp::Approve { .. }) => ("governance.approve", Some(Role::Admin)),
        Operation::Governance(GovOp::Pause { .. }) => ("governance.pause", Some(Role::Admin)),
        Operation::Identity(IdentityOp::Register { .. }) => {
            ("identity.register", Some(Role::Identity))
        }
        Operation::Identity(IdentityOp::RotateKey { .. }) => {
            ("identity.rotate_key", Some(Role::Identity))
        }
        Operation::Identity(IdentityOp::Revoke { .. }) => ("identity.revoke", Some(Role::Identity)),
        Operation::Provisioning(ProvOp::Verify { .. }) => {
            ("provisioning.verify", Some(Role::Verifier))
        }
        Operation::Provisioning(_) => ("provisioning", Some(Role::Provisioner)),
        Operation::Audit(_) => ("audit.record", Some(Role::Auditor)),
    }
}

/// The consensus context a block is built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockContext {
    /// Epoch.
    pub epoch: u64,
    /// View.
    pub view: u64,
    /// Parent's view.
    pub parent_view: u64,
    /// Proposer.
    pub proposer: PublicKey,
    /// Timestamp.
    pub timestamp_ms: u64,
}

/// The result of building a block.
#[derive(Debug)]
pub struct Built {
    /// The block.
    pub block: Block,
    /// The post-state.
    pub state: LedgerState,
    /// Candidates left out, with the reason.
    pub rejected: Vec<(Hash, TxError)>,
}

/// The genesis block: height 0, no transactions, committing to the genesis state.
pub fn genesis_block(g: &Genesis, state: &LedgerState) -> Block {
    Block {
        header: BlockHeader {
            chain_id: g.chain_id.clone(),
            height: 0,
            parent_hash: Hash::ZERO,
            epoch: 0,
            view: 0,
            parent_view: 0,
            proposer: PublicKey([0; 32]),
            timestamp_ms: g.genesis_time_ms,
            tx_root: Hash::ZERO,
            state_root: state.root(),
            validator_set_hash: state.validators().hash(),
            next_validator_set_hash: next_validators_hash(state, 0),
            audit_size: state.audit_log().size,
            audit_root: state.audit_log().root(),
            tx_count: 0,
        },
        txs: vec![],
    }
}

/// The hash of the validator set that certifies the block after `height`, seen from the state
/// after `height` (`next_validator_set_hash`): the participants of that block's epoch.
fn next_validators_hash(state: &LedgerState, height: u64) -> Hash {
    let epoch = (height + 1) / state.params().epoch_length;
    validators_hash(&state.validators().at_epoch(epoch).validators)
}

/// Builds a block on `parent` from candidate transactions (signatures already checked), keeping
/// those that execute and stopping at the block limits.
pub fn build_block(
    parent: &BlockHeader,
    parent_state: &LedgerState,
    ctx: BlockContext,
    candidates: impl IntoIterator<Item = Transaction>,
) -> Built {
    let height = parent.height + 1;
    let mut state = parent_state.clone();
    state.begin_block(height);
    let mut txs = Vec::new();
    let mut rejected = Vec::new();
    let mut bytes = 512;
    for tx in candidates {
        if txs.len() >= MAX_BLOCK_TXS {
            break;
        }
        let size = tx.encoded_len() + 4;
        if bytes + size > MAX_BLOCK_BYTES {
            break;
        }
        match state.apply_tx(&tx, height) {
            Ok(()) => {
                bytes += size;
                txs.push(tx);
            }
            Err(e) => rejected.push((tx.hash(), e)),
        }
    }
    state.end_block();
    let hashes: Vec<Hash> = txs.iter().map(Transaction::hash).collect();
    let header = BlockHeader {
        chain_id: parent.chain_id.clone(),
        height,
        parent_hash: parent.hash(),
        epoch: ctx.epoch,
        view: ctx.view,
        parent_view: ctx.parent_view,
        proposer: ctx.proposer,
        timestamp_ms: ctx.timestamp_ms,
        tx_root: tx_root(&hashes),
        state_root: state.root(),
        validator_set_hash: state.validators().hash(),
        next_validator_set_hash: next_validators_hash(&state, height),
        audit_size: state.audit_log().size,
        audit_root: state.audit_log().root(),
        tx_count: u32::try_from(txs.len()).expect("bounded"),
    };
    Built {
        block: Block { header, txs },
        state,
        rejected,
    }
}

/// Re-executes `block` on its parent and checks every header field execution determines.
/// Signatures are the caller's job (it may batch them or remember earlier checks).
///
/// # Errors
/// The first disagreement found.
pub fn execute_block(
    parent: &BlockHeader,
    parent_state: &LedgerState,
    block: &Block,
) -> Result<LedgerState, BlockError> {
    let h = &block.header;
    if h.height != parent.height + 1 {
        return Err(BlockError::Header("height is not parent + 1"));
    }
    if h.parent_hash != parent.hash() {
        return Err(BlockError::Header("parent hash mismatch"));
    }
    if h.chain_id != parent.chain_id {
        return Err(BlockError::Header("chain id mismatch"));
    }
    if h.timestamp_ms <= parent.timestamp_ms {
        return Err(BlockError::Header("timestamp not after parent's"));
    }
    if h.tx_count as usize != block.txs.len() || block.txs.len() > MAX_BLOCK_TXS {
        return Err(BlockError::Header("tx count"));
    }
    let hashes: Vec<Hash> = block.txs.iter().map(Transaction::hash).collect();
    if tx_root(&hashes) != h.tx_root {
        return Err(BlockError::Header("tx root mismatch"));
    }
    let mut state = parent_state.clone();
    state.begin_block(h.height);
    for (index, tx) in block.txs.iter().enumerate() {
        state
            .apply_tx(tx, h.height)
            .map_err(|error| BlockError::Tx {
                index,
                hash: hashes[index],
                error,
            })?;
    }
    state.end_block();
    if state.root() != h.state_root {
        return Err(BlockError::Header("state root mismatch"));
    }
    if state.validators().hash() != h.validator_set_hash {
        return Err(BlockError::Header("validator set hash mismatch"));
    }
    if next_validators_hash(&state, h.height) != h.next_validator_set_hash {
        return Err(BlockError::Header("next validator set hash mismatch"));
    }
    if state.audit_log().size != h.audit_size || state.audit_log().root() != h.audit_root {
        return Err(BlockError::Header("audit log root mismatch"));
    }
    Ok(state)
}
