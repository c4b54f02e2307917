//! The light client: what it trusts, how it follows validator-set changes, and how it checks a
//! proof against that.

use crate::cert::FinalityCert;
use crate::error::LightError;
use crate::proof::{AuditProof, CheckpointProof, Proof, SetChange, StateProof};
use crate::trust::{Checkpoint, Trust, check_set};
use phoenix_ledger_types::block::BlockHeader;
use phoenix_ledger_types::crypto::Hash;
use phoenix_ledger_types::exec::validators_hash;
use phoenix_ledger_types::mlog::{audit_leaf, verify_inclusion};
use phoenix_ledger_types::state::verify_proof;
use serde::Serialize;

/// The block a proof was certified in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Certified {
    /// Its height.
    pub height: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Its hash.
    pub hash: Hash,
    /// Distinct validators whose signatures verified.
    pub signers: usize,
    /// Size of the epoch's validator set.
    pub validators: usize,
    /// Validator-set changes followed to reach its epoch.
    pub changes_followed: usize,
}

/// An audit record proven to be on the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProvenAudit {
    /// The fleet.
    pub fleet: String,
    /// The record's seq in the fleet's chain.
    pub seq: u64,
    /// The record's hash in the fleet's chain.
    pub hash: Hash,
    /// Its position in the ledger's audit log.
    pub index: u64,
    /// The certified block whose audit root includes it.
    pub block: Certified,
}

/// A state entry (or its absence) proven under a certified state root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProvenState {
    /// The module.
    pub module: String,
    /// The key within the module.
    pub key: String,
    /// The value (canonical JSON as stored), `None` if proven absent.
    pub value: Option<serde_json::Value>,
    /// The certified state root.
    pub state_root: Hash,
    /// The certified block.
    pub block: Certified,
}

/// What a proof proved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Proven {
    /// An audit record.
    Audit(ProvenAudit),
    /// A state entry.
    State(ProvenState),
    /// A certified block, as a checkpoint to trust from now on.
    Checkpoint(Checkpoint),
}

/// A light client: a [`Trust`] it advances as it follows certified validator-set changes.
///
/// # Guarantees
/// Every `verify_*` either proves everything it returns, or fails with the first reason and
/// leaves the trust as it was; on success the trust moves to the newest epoch the proof reached.
#[derive(Debug, Clone)]
pub struct LightClient {
    trust: Trust,
}

impl LightClient {
    /// A client that trusts `trust`.
    pub fn new(trust: Trust) -> Self {
        Self { trust }
    }

    /// What the client trusts now.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Follows one validator-set change: the last block of an epoch, certified by the trusted
    /// set of that epoch, whose `next_validator_set_hash` commits to the next epoch's validators.
    /// A change of an epoch before the trusted one is skipped (a proof from genesis verifies
    /// against a later checkpoint too).
    ///
    /// # Errors
    /// The header is not an epoch's last block ([`LightError::BadHeader`]), names another set
    /// or is not signed by the trusted one ([`LightError::WrongValidatorSet`]), has a bad or
    /// short certificate, or the validator list does not match the committed hash
    /// ([`LightError::TamperedValidatorSet`]).
    pub fn follow(&mut self, change: &SetChange) -> Result<(), LightError> {
        let h = &change.header;
        if h.epoch < self.trust.epoch {
            return Ok(());
        }
        self.check_full_header(h)?;
        let l = self.trust.epoch_length;
        if h.height.checked_add(1).is_none_or(|n| n % l != 0) {
            return Err(LightError::BadHeader(format!(
                "a validator-set change must be the last block of its epoch; height {} is not",
                h.height
            )));
        }
        let hash = h.hash();
        self.check_certificate(h.height, h.epoch, &hash, &change.certificate)?;
        check_set(&change.next_validators, "validator-set change")
            .map_err(LightError::BadHeader)?;
        let got = validators_hash(&change.next_validators);
        if got != h.next_validator_set_hash {
            return Err(LightError::TamperedValidatorSet {
                epoch: h.epoch + 1,
                height: h.height,
                got,
                committed: h.next_validator_set_hash,
            });
        }
        self.trust = Trust {
            epoch: h.epoch + 1,
            height: h.height,
            header_hash: hash,
            validators: change.next_validators.clone(),
            set_hash: got,
            ..self.trust.clone()
        };
        Ok(())
    }

    /// Checks any proof and says what it proved.
    ///
    /// # Errors
    /// As the `verify_*` function of its kind.
    pub fn verify(&mut self, proof: &Proof) -> Result<Proven, LightError> {
        match proof {
            Proof::Audit(p) => self.verify_audit(p).map(Proven::Audit),
            Proof::State(p) => self.verify_state(p).map(Proven::State),
            Proof::Checkpoint(p) => self.verify_checkpoint(p).map(Proven::Checkpoint),
        }
    }

    /// Checks an audit-record proof.
    ///
    /// # Errors
    /// Anything [`Self::follow`] refuses in its changes; then [`LightError::StaleEpoch`],
    /// [`LightError::BadHeader`], a certificate error, or [`LightError::TamperedRecord`].
    pub fn verify_audit(&mut self, p: &AuditProof) -> Result<ProvenAudit, LightError> {
        let mut next = self.clone();
        let followed = next.follow_all(&p.changes)?;
        let h = &p.header;
        next.check_epoch(h.height, h.epoch)?;
        let hash = h.hash();
        next.check_certificate(h.height, h.epoch, &hash, &p.certificate)?;
        let leaf = audit_leaf(&p.fleet, p.seq, &p.hash);
        if !verify_inclusion(p.index, h.audit_size, &leaf, &p.path, &h.audit_root) {
            return Err(LightError::TamperedRecord {
                fleet: p.fleet.clone(),
                seq: p.seq,
                hash: p.hash,
                index: p.index,
                root: h.audit_root,
                size: h.audit_size,
            });
        }
        let block = next.certified(h.height, h.epoch, hash, &p.certificate, followed);
        // A compact header does not name its validator set, so a later epoch is not taken on.
        next.advance(h.height, h.epoch, hash, false);
        *self = next;
        Ok(ProvenAudit {
            fleet: p.fleet.clone(),
            seq: p.seq,
            hash: p.hash,
            index: p.index,
            block,
        })
    }

    /// Checks a state-entry proof.
    ///
    /// # Errors
    /// As [`Self::verify_audit`], with [`LightError::TamperedState`] for the entry.
    pub fn verify_state(&mut self, p: &StateProof) -> Result<ProvenState, LightError> {
        let mut next = self.clone();
        let followed = next.follow_all(&p.changes)?;
        let h = &p.header;
        next.check_full_header(h)?;
        let hash = h.hash();
        next.check_certificate(h.height, h.epoch, &hash, &p.certificate)?;
        let full = format!("{}/{}", p.module, p.key);
        if !verify_proof(&h.state_root, full.as_bytes(), p.value.as_deref(), &p.proof) {
            return Err(LightError::TamperedState {
                key: full,
                what: if p.value.is_some() {
                    "with this value"
                } else {
                    "as absent"
                },
                root: h.state_root,
            });
        }
        let block = next.certified(h.height, h.epoch, hash, &p.certificate, followed);
        next.advance(h.height, h.epoch, hash, true);
        *self = next;
        Ok(ProvenState {
            module: p.module.clone(),
            key: p.key.clone(),
            value: p
                .value
                .as_deref()
                .map(|b| serde_json::from_slice(b).unwrap_or(serde_json::Value::Null)),
            state_root: h.state_root,
            block,
        })
    }

    /// Checks a certified block and returns the checkpoint it makes (the set that certifies
    /// the block after it, so a boundary block hands over to the next epoch's set).
    ///
    /// # Errors
    /// As [`Self::verify_state`], without the entry.
    pub fn verify_checkpoint(&mut self, p: &CheckpointProof) -> Result<Checkpoint, LightError> {
        let mut next = self.clone();
        next.follow_all(&p.changes)?;
        let h = &p.header;
        next.check_full_header(h)?;
        let hash = h.hash();
        next.check_certificate(h.height, h.epoch, &hash, &p.certificate)?;
        if h.next_validator_set_hash != h.validator_set_hash {
            // A boundary before a change: the checkpoint needs the next set, which a change
            // proves; a checkpoint of the block before is as good.
            return Err(LightError::BadHeader(format!(
                "block {} ends epoch {} with a validator-set change; take the checkpoint at \
                 another block",
                h.height, h.epoch
            )));
        }
        next.advance(h.height, h.epoch, hash, true);
        *self = next;
        Ok(self.trust.checkpoint())
    }

    fn follow_all(&mut self, changes: &[SetChange]) -> Result<usize, LightError> {
        if changes
            .windows(2)
            .any(|w| w[0].header.epoch >= w[1].header.epoch)
        {
            return Err(LightError::BadHeader(
                "validator-set changes must be in increasing epoch order".into(),
            ));
        }
        let mut followed = 0;
        for c in changes {
            let before = self.trust.epoch;
            self.follow(c)?;
            if self.trust.epoch != before {
                followed += 1;
            }
        }
        Ok(followed)
    }

    /// The epoch rules a certified block must meet: its epoch is the one its height is in, and
    /// not older than the trusted one.
    fn check_epoch(&self, height: u64, epoch: u64) -> Result<(), LightError> {
        if height / self.trust.epoch_length != epoch {
            return Err(LightError::BadHeader(format!(
                "height {height} is not in epoch {epoch} ({} blocks an epoch)",
                self.trust.epoch_length
            )));
        }
        if epoch < self.trust.epoch {
            return Err(LightError::StaleEpoch {
                proof: epoch,
                trusted: self.trust.epoch,
            });
        }
        Ok(())
    }

    /// What a full header lets the client check beyond [`Self::check_epoch`]: its chain, and
    /// that it names the trusted set as the set of its epoch.
    fn check_full_header(&self, h: &BlockHeader) -> Result<(), LightError> {
        if h.chain_id != self.trust.chain_id {
            return Err(LightError::WrongChain {
                expected: self.trust.chain_id.clone(),
                got: h.chain_id.clone(),
            });
        }
        self.check_epoch(h.height, h.epoch)?;
        if h.validator_set_hash != self.trust.set_hash {
            return Err(LightError::WrongValidatorSet {
                height: h.height,
                epoch: h.epoch,
                detail: format!("names validator set {}", h.validator_set_hash),
                trusted_epoch: self.trust.epoch,
                trusted: self.trust.set_hash,
            });
        }
        Ok(())
    }

    fn check_certificate(
        &self,
        height: u64,
        epoch: u64,
        hash: &Hash,
        cert: &FinalityCert,
    ) -> Result<(), LightError> {
        cert.verify(
            &self.trust.validators,
            self.trust.set_hash,
            epoch,
            height,
            hash,
        )
        .map_err(|e| match e {
            // The set the client trusts is of `trust.epoch`, which may be older than the
            // proof's epoch (no change was carried for the epochs in between).
            LightError::WrongValidatorSet {
                height,
                epoch,
                detail,
                trusted,
                ..
            } => LightError::WrongValidatorSet {
                height,
                epoch,
                detail,
                trusted_epoch: self.trust.epoch,
                trusted,
            },
            e => e,
        })
    }

    fn certified(
        &self,
        height: u64,
        epoch: u64,
        hash: Hash,
        cert: &FinalityCert,
        changes_followed: usize,
    ) -> Certified {
        Certified {
            height,
            epoch,
            hash,
            signers: cert.votes.len(),
            validators: self.trust.validators.len(),
            changes_followed,
        }
    }

    /// Remembers the newest certified block. A block of a later epoch moves the trusted epoch
    /// on only if its header named the trusted set as its epoch's (`set_checked`): otherwise a
    /// change left out of the proof would be skipped by every later proof that carries it.
    fn advance(&mut self, height: u64, epoch: u64, hash: Hash, set_checked: bool) {
        if height <= self.trust.height {
            return;
        }
        if epoch == self.trust.epoch || set_checked {
            self.trust.height = height;
            self.trust.header_hash = hash;
            self.trust.epoch = epoch.max(self.trust.epoch);
        }
    }
}
