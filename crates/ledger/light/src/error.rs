//! Why a proof, a trust file or a validator-set change is refused.

use phoenix_ledger_types::codec::DecodeError;
use phoenix_ledger_types::crypto::Hash;
use thiserror::Error;

/// Why the light client refuses something. Every variant is final: a proof that fails once
/// fails every time (nothing here is retryable; fetch another proof).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LightError {
    /// The trust file is neither a genesis nor a checkpoint, or breaks a rule.
    #[error("bad trust file: {0}")]
    BadTrust(String),
    /// The proof's bytes or JSON do not decode.
    #[error("malformed proof: {0}")]
    Malformed(String),
    /// The proof is for another chain than the trusted one.
    #[error("wrong chain: the proof is for chain {got:?}, the trust is for chain {expected:?}")]
    WrongChain {
        /// The trusted chain.
        expected: String,
        /// The proof's.
        got: String,
    },
    /// The audit record (fleet, seq, hash or its position) or its path does not lead to the
    /// audit root the certified header commits to: the record or the path was altered.
    #[error(
        "tampered record: audit record {seq} of fleet {fleet:?} with hash {hash} is not at index \
         {index} of the audit log the certified block commits to (root {root}, {size} records)"
    )]
    TamperedRecord {
        /// The fleet claimed.
        fleet: String,
        /// The seq claimed.
        seq: u64,
        /// The hash claimed.
        hash: Hash,
        /// The log position claimed.
        index: u64,
        /// The certified log root.
        root: Hash,
        /// The certified log size.
        size: u64,
    },
    /// The state entry (its value or absence) or its trie proof does not lead to the certified
    /// state root.
    #[error(
        "tampered state entry: {key:?} {what} does not match the state root {root} the certified \
         block commits to"
    )]
    TamperedState {
        /// `module/key`.
        key: String,
        /// "with this value" or "as absent".
        what: &'static str,
        /// The certified state root.
        root: Hash,
    },
    /// The certificate was not made by the validator set trusted for its epoch: the header
    /// names another set, or no signature verifies under the trusted keys (a proof of another
    /// network, or a trust file of another network or epoch).
    #[error(
        "wrong validator set: the block at height {height} (epoch {epoch}) {detail}; the trusted \
         set of epoch {trusted_epoch} has hash {trusted}"
    )]
    WrongValidatorSet {
        /// Height of the certified block.
        height: u64,
        /// Its epoch.
        epoch: u64,
        /// What disagrees.
        detail: String,
        /// The epoch of the trusted set.
        trusted_epoch: u64,
        /// The hash of the trusted set.
        trusted: Hash,
    },
    /// The validator list a change carries does not hash to the next-validator-set hash its
    /// certified boundary header commits to.
    #[error(
        "tampered validator-set change: the validators given for epoch {epoch} hash to {got}, but \
         the certified boundary block at height {height} commits to {committed}"
    )]
    TamperedValidatorSet {
        /// The epoch the change starts.
        epoch: u64,
        /// The boundary block's height.
        height: u64,
        /// What the list hashes to.
        got: Hash,
        /// What the header commits to.
        committed: Hash,
    },
    /// Fewer distinct valid signers than a quorum (2f+1) of the epoch's validators.
    #[error(
        "too few signatures: the certificate of the block at height {height} has {got} of the \
         {validators} validators' signatures; a quorum is {need}"
    )]
    TooFewSignatures {
        /// Height of the certified block.
        height: u64,
        /// Distinct signers given.
        got: usize,
        /// Quorum.
        need: usize,
        /// Size of the set.
        validators: usize,
    },
    /// A signature in the certificate does not verify under its signer's trusted key (others
    /// do): the certificate was altered.
    #[error(
        "bad signature: validator {signer} ({key}) did not sign the block at height {height} \
         (epoch {epoch}, view {view}) as the certificate claims"
    )]
    BadSignature {
        /// Height of the certified block.
        height: u64,
        /// Its epoch.
        epoch: u64,
        /// The certificate's view.
        view: u64,
        /// Signer index in the epoch's set.
        signer: u32,
        /// Its key.
        key: String,
    },
    /// A signer index outside the epoch's set, or signers out of order or repeated.
    #[error("bad certificate: {0}")]
    BadCertificate(String),
    /// The proof is certified in an epoch older than the trusted one: the client no longer
    /// trusts that epoch's set (and a proof that old says nothing about today).
    #[error(
        "stale epoch: the proof is certified in epoch {proof}, older than the trusted epoch \
         {trusted} (fetch a fresh proof)"
    )]
    StaleEpoch {
        /// The proof's epoch.
        proof: u64,
        /// The trusted epoch.
        trusted: u64,
    },
    /// A header field breaks a chain rule (an epoch that does not match the height, a change
    /// that is not at an epoch's last block, changes out of order).
    #[error("bad header: {0}")]
    BadHeader(String),
}

impl From<DecodeError> for LightError {
    fn from(e: DecodeError) -> Self {
        LightError::Malformed(e.to_string())
    }
}
