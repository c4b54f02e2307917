//! What a light client starts from: the network's genesis, or a checkpoint (a validator set, its
//! epoch, and a height and header hash of that epoch).

use crate::error::LightError;
use phoenix_ledger_types::crypto::Hash;
use phoenix_ledger_types::exec::{Genesis, LedgerState, Validator, genesis_block, validators_hash};
use serde::{Deserialize, Serialize};

/// The `format` of a checkpoint file.
pub const CHECKPOINT_FORMAT: &str = "phoenix-ledger-checkpoint/v1";

/// A checkpoint file (`phoenix ledger checkpoint --out FILE`): trust in the validator set of
/// `epoch`, taken from the certified block `header_hash` at `height` (a block of `epoch`, or the
/// last block of the epoch before, which commits to this set as the next one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Always [`CHECKPOINT_FORMAT`].
    pub format: String,
    /// The chain.
    pub chain_id: String,
    /// Blocks per epoch (from the genesis; it never changes).
    pub epoch_length: u64,
    /// The epoch whose validator set is trusted.
    pub epoch: u64,
    /// Height of the checkpoint block.
    pub height: u64,
    /// Hash of the checkpoint block.
    pub header_hash: Hash,
    /// The validator set of `epoch`, sorted by key.
    pub validators: Vec<Validator>,
    /// Hash of `validators` (as headers commit to it); checked when the file is read.
    pub validator_set_hash: Hash,
}

/// What the client trusts now: the validator set of `epoch` of chain `chain_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// The chain.
    pub chain_id: String,
    /// Blocks per epoch.
    pub epoch_length: u64,
    /// The trusted epoch.
    pub epoch: u64,
    /// Height of the latest block known to be certified (the genesis or checkpoint block, or a
    /// boundary block the client followed).
    pub height: u64,
    /// Its hash.
    pub header_hash: Hash,
    /// The epoch's validators, sorted by key.
    pub validators: Vec<Validator>,
    /// Their hash.
    pub set_hash: Hash,
}

/// Checks that a validator list is a set as headers commit to it: non-empty, sorted by key,
/// without a repeated key.
pub(crate) fn check_set(validators: &[Validator], what: &str) -> Result<(), String> {
    if validators.is_empty() {
        return Err(format!("{what}: an empty validator set"));
    }
    if validators.len() > crate::cert::MAX_VALIDATORS {
        return Err(format!(
            "{what}: {} validators is more than {}",
            validators.len(),
            crate::cert::MAX_VALIDATORS
        ));
    }
    if validators.windows(2).any(|w| w[0].key >= w[1].key) {
        return Err(format!(
            "{what}: validators must be sorted by key, each key once"
        ));
    }
    Ok(())
}

impl Trust {
    /// Trust in a network's genesis: epoch 0, its validators, the genesis block.
    ///
    /// # Errors
    /// [`LightError::BadTrust`] if the genesis breaks a chain rule.
    pub fn from_genesis(g: &Genesis) -> Result<Self, LightError> {
        let state = LedgerState::from_genesis(g).map_err(LightError::BadTrust)?;
        let validators = state.validators().validators;
        Ok(Trust {
            chain_id: g.chain_id.clone(),
            epoch_length: g.epoch_length,
            epoch: 0,
            height: 0,
            header_hash: genesis_block(g, &state).hash(),
            set_hash: validators_hash(&validators),
            validators,
        })
    }

    /// Trust in a checkpoint.
    ///
    /// # Errors
    /// [`LightError::BadTrust`] for another format, an epoch that does not hold the height, or a
    /// validator list that is not a set or does not match its hash.
    pub fn from_checkpoint(c: &Checkpoint) -> Result<Self, LightError> {
        if c.format != CHECKPOINT_FORMAT {
            return Err(LightError::BadTrust(format!(
                "format {:?}, expected {CHECKPOINT_FORMAT:?}",
                c.format
            )));
        }
        // The block is in the trusted epoch, or is the previous epoch's last block (whose
        // header commits to this epoch's set as the next one).
        if c.epoch_length < 2
            || (c.height / c.epoch_length != c.epoch && (c.height + 1) / c.epoch_length != c.epoch)
        {
            return Err(LightError::BadTrust(format!(
                "height {} is not in epoch {} of {} blocks, nor its boundary",
                c.height, c.epoch, c.epoch_length
            )));
        }
        check_set(&c.validators, "checkpoint").map_err(LightError::BadTrust)?;
        let set_hash = validators_hash(&c.validators);
        if set_hash != c.validator_set_hash {
            return Err(LightError::BadTrust(format!(
                "the validators hash to {set_hash}, the checkpoint says {}",
                c.validator_set_hash
            )));
        }
        Ok(Trust {
            chain_id: c.chain_id.clone(),
            epoch_length: c.epoch_length,
            epoch: c.epoch,
            height: c.height,
            header_hash: c.header_hash,
            validators: c.validators.clone(),
            set_hash,
        })
    }

    /// Reads a trust file: a genesis (`genesis.json`) or a checkpoint (JSON with
    /// `"format": "phoenix-ledger-checkpoint/v1"`).
    ///
    /// # Errors
    /// [`LightError::BadTrust`] if it is neither, or breaks a rule.
    pub fn from_json(bytes: &[u8]) -> Result<Self, LightError> {
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| LightError::BadTrust(format!("not JSON: {e}")))?;
        if v.get("format").is_some() {
            let c: Checkpoint = serde_json::from_value(v)
                .map_err(|e| LightError::BadTrust(format!("not a checkpoint: {e}")))?;
            return Self::from_checkpoint(&c);
        }
        let g: Genesis = serde_json::from_value(v).map_err(|e| {
            LightError::BadTrust(format!("neither a checkpoint nor a genesis file: {e}"))
        })?;
        Self::from_genesis(&g)
    }

    /// The checkpoint file of what is trusted now.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            format: CHECKPOINT_FORMAT.into(),
            chain_id: self.chain_id.clone(),
            epoch_length: self.epoch_length,
            epoch: self.epoch,
            height: self.height,
            header_hash: self.header_hash,
            validators: self.validators.clone(),
            validator_set_hash: self.set_hash,
        }
    }
}
